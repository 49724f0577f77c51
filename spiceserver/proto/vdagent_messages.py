"""vdagent message bodies and the agent mouse (sans-IO).

Layouts from spice-protocol ``spice/vd_agent.h`` (packed, little endian); size rules from
spice-common ``common/agent.c`` (``agent_check_message``, ``agent_prepare_filexfer_status``); the
monitors-config bound from spice ``server/reds.cpp`` (``reds_on_main_agent_monitors_config``); the
agent mouse from spice ``server/inputs-channel.cpp``. libspice's agent message filter is
:class:`spiceserver.proto.vdagent.AgentMsgFilter`.

Theory of operation
-------------------

*Bodies.* Each message type the server reads or builds has a frozen dataclass with ``parse(data)``
and ``pack()``. ``parse`` applies ``agent_check_message``'s rule for its type: an *exact* size
(MOUSE_STATE, REPLY, DISPLAY_CONFIG, CLIPBOARD_REQUEST, CLIPBOARD_RELEASE, MAX_CLIPBOARD,
CLIENT_DISCONNECTED) or a *minimum* (the rest, whose tails are variable), plus the structural
checks (monitor count against the size, GRAPHICS_DEVICE_INFO entries); a violation is a
:class:`~spiceserver.errors.ProtocolError`. The clipboard messages carry a ``u8 selection`` and
three reserved bytes in front when the *receiver* announced ``CLIPBOARD_SELECTION`` (spice-gtk and
spice-vdagentd both test the peer's capability), and CLIPBOARD_GRAB a ``u32 serial`` after that
with ``CLIPBOARD_GRAB_SERIAL``: those prefixes are ``selection=None`` / ``serial=None`` when
absent. :func:`parse_body` dispatches on the type with the deciding capabilities.

*Mouse.* In client mouse mode with an agent, libspice sends the agent ``MOUSE_STATE`` on the
server port: the position and the SPICE button mask shifted left once (agent masks are off by
one), with the wheel as an UBUTTON/DBUTTON bit set on the press and cleared on the release.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import ClassVar

from ..errors import ProtocolError
from .enums import MouseButton
from .vdagent import (
    AgentCap,
    AgentMessage,
    AgentMessageType,
    AnnounceCapabilities,
    AudioVolumeSync,
    FileXferStatus,
    FileXferStatusMessage,
)

__all__ = [
    "MONITORS_CONFIG_MAX_MONITORS",
    "MONITORS_CONFIG_MAX_SIZE",
    "MonitorsFlag",
    "ClipboardType",
    "ClipboardSelection",
    "ReplyError",
    "DisplayConfigFlag",
    "AgentButton",
    "size_rule",
    "check_size",
    "MouseState",
    "MonitorConfig",
    "MonitorsConfig",
    "Reply",
    "Clipboard",
    "DisplayConfig",
    "ClipboardGrab",
    "ClipboardRequest",
    "ClipboardRelease",
    "FileXferStart",
    "FileXferData",
    "FileXferStatusError",
    "prepare_file_xfer_status",
    "ClientDisconnected",
    "MaxClipboard",
    "DeviceDisplayInfo",
    "GraphicsDeviceInfo",
    "AgentBody",
    "parse_body",
    "agent_buttons",
    "mouse_position_state",
    "mouse_press_state",
    "mouse_release_state",
    "wheel_states",
]

_U32 = struct.Struct("<I")
_SEL = struct.Struct("<B3x")  # u8 selection, 3 reserved bytes


class MonitorsFlag(enum.IntFlag):
    """VD_AGENT_CONFIG_MONITORS_FLAG_*."""

    USE_POS = 1
    PHYSICAL_SIZE = 2


class ClipboardType(enum.IntEnum):
    """VD_AGENT_CLIPBOARD_* data types."""

    NONE = 0
    UTF8_TEXT = 1
    IMAGE_PNG = 2
    IMAGE_BMP = 3
    IMAGE_TIFF = 4
    IMAGE_JPG = 5
    FILE_LIST = 6


class ClipboardSelection(enum.IntEnum):
    """VD_AGENT_CLIPBOARD_SELECTION_*."""

    CLIPBOARD = 0
    PRIMARY = 1
    SECONDARY = 2


class ReplyError(enum.IntEnum):
    """VDAgentReply.error."""

    SUCCESS = 1
    ERROR = 2


class DisplayConfigFlag(enum.IntFlag):
    """VD_AGENT_DISPLAY_CONFIG_FLAG_*."""

    DISABLE_WALLPAPER = 1
    DISABLE_FONT_SMOOTH = 2
    DISABLE_ANIMATION = 4
    SET_COLOR_DEPTH = 8


class AgentButton(enum.IntFlag):
    """VD_AGENT_*BUTTON_MASK: the SPICE ``MouseButtonMask`` bits, one higher."""

    LEFT = 1 << 1
    MIDDLE = 1 << 2
    RIGHT = 1 << 3
    UP = 1 << 4
    DOWN = 1 << 5
    SIDE = 1 << 6
    EXTRA = 1 << 7


# -- size rules (agent_check_message) -------------------------------------------------------------

#: type -> (fixed part, exact): the C structs' sizes without the optional prefixes
_SIZES: dict[int, tuple[int, bool]] = {
    AgentMessageType.MOUSE_STATE: (13, True),
    AgentMessageType.MONITORS_CONFIG: (8, False),
    AgentMessageType.REPLY: (8, True),
    AgentMessageType.CLIPBOARD: (4, False),
    AgentMessageType.DISPLAY_CONFIG: (8, True),
    AgentMessageType.ANNOUNCE_CAPABILITIES: (4, False),
    AgentMessageType.CLIPBOARD_GRAB: (0, False),
    AgentMessageType.CLIPBOARD_REQUEST: (4, True),
    AgentMessageType.CLIPBOARD_RELEASE: (0, True),
    AgentMessageType.FILE_XFER_START: (4, False),
    AgentMessageType.FILE_XFER_STATUS: (8, False),
    AgentMessageType.FILE_XFER_DATA: (12, False),
    AgentMessageType.CLIENT_DISCONNECTED: (0, True),
    AgentMessageType.MAX_CLIPBOARD: (4, True),
    AgentMessageType.AUDIO_VOLUME_SYNC: (3, False),
    AgentMessageType.GRAPHICS_DEVICE_INFO: (4, False),
}
_CLIPBOARD_TYPES = frozenset(
    {
        AgentMessageType.CLIPBOARD,
        AgentMessageType.CLIPBOARD_GRAB,
        AgentMessageType.CLIPBOARD_REQUEST,
        AgentMessageType.CLIPBOARD_RELEASE,
    }
)


def size_rule(mtype: int, caps: Iterable[int] = ()) -> tuple[int, bool] | None:
    """``agent_check_message``'s size rule for ``mtype``: ``(size, exact)``, or None for a type
    it does not know.

    Args:
        mtype: the message type.
        caps: the capabilities deciding the optional prefixes (``CLIPBOARD_SELECTION`` adds 4 to
            the clipboard messages, ``CLIPBOARD_GRAB_SERIAL`` 4 more to CLIPBOARD_GRAB).
    """
    rule = _SIZES.get(mtype)
    if rule is None:
        return None
    size, exact = rule
    caps = frozenset(caps)
    if mtype in _CLIPBOARD_TYPES and AgentCap.CLIPBOARD_SELECTION in caps:
        size += 4
    if mtype == AgentMessageType.CLIPBOARD_GRAB and AgentCap.CLIPBOARD_GRAB_SERIAL in caps:
        size += 4
    return size, exact


def check_size(mtype: int, size: int, caps: Iterable[int] = ()) -> None:
    """Check a message's size against :func:`size_rule`.

    Raises:
        ProtocolError: an unknown type, or a size breaking the rule.
    """
    rule = size_rule(mtype, caps)
    if rule is None:
        raise ProtocolError(f"unknown agent message type {mtype}")
    want, exact = rule
    if size != want if exact else size < want:
        name = AgentMessageType(mtype).name
        raise ProtocolError(f"{name} of {size} bytes ({'exactly' if exact else 'at least'} {want})")


def _check(mtype: AgentMessageType, data: bytes, *, selection: bool = False, serial: bool = False) -> None:
    caps = {AgentCap.CLIPBOARD_SELECTION} if selection else set()
    if serial:
        caps.add(AgentCap.CLIPBOARD_GRAB_SERIAL)
    check_size(mtype, len(data), caps)


def _pack(fmt: str, *values: int) -> bytes:
    try:
        return struct.pack(fmt, *values)
    except struct.error as exc:
        raise ValueError(f"value out of range for {fmt}: {values}") from exc


def _selection_prefix(selection: int | None) -> bytes:
    return b"" if selection is None else _pack("<B3x", selection)


# -- message bodies --------------------------------------------------------------------------------


class _Body:
    """A message body: its type, and the message that carries it."""

    TYPE: ClassVar[AgentMessageType]

    def pack(self) -> bytes:
        raise NotImplementedError

    def message(self) -> AgentMessage:
        """As a VDAgentMessage."""
        return AgentMessage(self.TYPE, self.pack())


@dataclass(frozen=True)
class MouseState(_Body):
    """VDAgentMouseState (13 bytes): u32 x, u32 y, u32 buttons (:class:`AgentButton`), u8 display_id."""

    TYPE: ClassVar[AgentMessageType] = AgentMessageType.MOUSE_STATE
    _S: ClassVar[struct.Struct] = struct.Struct("<IIIB")

    x: int
    y: int
    buttons: int = 0
    display_id: int = 0

    @classmethod
    def parse(cls, data: bytes) -> MouseState:
        """Raises:
        ProtocolError: not exactly 13 bytes."""
        _check(cls.TYPE, data)
        return cls(*cls._S.unpack(data))

    def pack(self) -> bytes:
        """Raises:
        ValueError: a field out of range."""
        return _pack("<IIIB", self.x, self.y, self.buttons, self.display_id)


@dataclass(frozen=True)
class MonitorConfig:
    """VDAgentMonConfig (u32 height, u32 width, u32 depth, i32 x, i32 y), and the VDAgentMonitorMM
    (u16 height, u16 width, in millimetres) that follows all monitors with ``PHYSICAL_SIZE``.

    A width and height of 0 is a disabled monitor (agents with ``SPARSE_MONITORS_CONFIG``)."""

    width: int
    height: int
    depth: int = 32
    x: int = 0
    y: int = 0
    mm_width: int = 0
    mm_height: int = 0

    @property
    def enabled(self) -> bool:
        """Not the sparse config's "disabled" entry (0 x 0)."""
        return bool(self.width or self.height)


#: reds_on_main_agent_monitors_config: the most monitors libspice reassembles for the display
MONITORS_CONFIG_MAX_MONITORS = 256
#: and the largest MONITORS_CONFIG payload it takes (8 + 256 * (20 + 4))
MONITORS_CONFIG_MAX_SIZE = 8 + MONITORS_CONFIG_MAX_MONITORS * (20 + 4)


@dataclass(frozen=True)
class MonitorsConfig(_Body):
    """VDAgentMonitorsConfig: u32 num_of_monitors, u32 flags (:class:`MonitorsFlag`), the
    monitors, then their physical sizes if ``flags`` has ``PHYSICAL_SIZE``."""

    TYPE: ClassVar[AgentMessageType] = AgentMessageType.MONITORS_CONFIG
    _MON: ClassVar[struct.Struct] = struct.Struct("<IIIii")
    _MM: ClassVar[struct.Struct] = struct.Struct("<HH")

    monitors: tuple[MonitorConfig, ...]
    flags: int = 0

    @classmethod
    def parse(cls, data: bytes) -> MonitorsConfig:
        """Unknown flag bits are dropped and trailing bytes ignored (as ``agent.c``).

        Raises:
            ProtocolError: shorter than 8 bytes, or than its monitors need.
        """
        _check(cls.TYPE, data)
        count, flags = struct.unpack_from("<II", data)
        flags &= MonitorsFlag.USE_POS | MonitorsFlag.PHYSICAL_SIZE
        mm = bool(flags & MonitorsFlag.PHYSICAL_SIZE)
        if count > (len(data) - 8) // (cls._MON.size + (cls._MM.size if mm else 0)):
            raise ProtocolError(f"MONITORS_CONFIG of {count} monitors in {len(data)} bytes")
        mons = []
        mm_off = 8 + count * cls._MON.size
        for i in range(count):
            height, width, depth, x, y = cls._MON.unpack_from(data, 8 + i * cls._MON.size)
            mm_h, mm_w = cls._MM.unpack_from(data, mm_off + i * cls._MM.size) if mm else (0, 0)
            mons.append(MonitorConfig(width, height, depth, x, y, mm_w, mm_h))
        return cls(tuple(mons), flags)

    def pack(self) -> bytes:
        """Raises:
        ValueError: a field out of range."""
        out = [_pack("<II", len(self.monitors), self.flags)]
        out += [_pack("<IIIii", m.height, m.width, m.depth, m.x, m.y) for m in self.monitors]
        if self.flags & MonitorsFlag.PHYSICAL_SIZE:
            out += [_pack("<HH", m.mm_height, m.mm_width) for m in self.monitors]
        return b"".join(out)


@dataclass(frozen=True)
class Reply(_Body):
    """VDAgentReply (8 bytes): u32 type (the message answered), u32 error (:class:`ReplyError`)."""

    TYPE: ClassVar[AgentMessageType] = AgentMessageType.REPLY

    type: int
    error: int = ReplyError.SUCCESS

    @classmethod
    def parse(cls, data: bytes) -> Reply:
        """Raises:
        ProtocolError: not exactly 8 bytes."""
        _check(cls.TYPE, data)
        return cls(*struct.unpack("<II", data))

    def pack(self) -> bytes:
        """Raises:
        ValueError: a field out of range."""
        return _pack("<II", self.type, self.error)


@dataclass(frozen=True)
class DisplayConfig(_Body):
    """VDAgentDisplayConfig (8 bytes): u32 flags (:class:`DisplayConfigFlag`), u32 depth."""

    TYPE: ClassVar[AgentMessageType] = AgentMessageType.DISPLAY_CONFIG

    flags: int
    depth: int = 0

    @classmethod
    def parse(cls, data: bytes) -> DisplayConfig:
        """Raises:
        ProtocolError: not exactly 8 bytes."""
        _check(cls.TYPE, data)
        return cls(*struct.unpack("<II", data))

    def pack(self) -> bytes:
        """Raises:
        ValueError: a field out of range."""
        return _pack("<II", self.flags, self.depth)


@dataclass(frozen=True)
class Clipboard(_Body):
    """VDAgentClipboard: [u8 selection, 3 reserved], u32 type (:class:`ClipboardType`), the data."""

    TYPE: ClassVar[AgentMessageType] = AgentMessageType.CLIPBOARD

    type: int
    data: bytes = b""
    selection: int | None = None

    @classmethod
    def parse(cls, data: bytes, *, selection: bool = False) -> Clipboard:
        """Args:
            selection: the message has the selection prefix (``CLIPBOARD_SELECTION``).

        Raises:
            ProtocolError: shorter than the prefix and the type."""
        _check(cls.TYPE, data, selection=selection)
        off = 4 if selection else 0
        return cls(_U32.unpack_from(data, off)[0], bytes(data[off + 4 :]), data[0] if selection else None)

    def pack(self) -> bytes:
        """Raises:
        ValueError: a field out of range."""
        return _selection_prefix(self.selection) + _pack("<I", self.type) + self.data


@dataclass(frozen=True)
class ClipboardGrab(_Body):
    """VDAgentClipboardGrab: [u8 selection, 3 reserved], [u32 serial], u32 types[]."""

    TYPE: ClassVar[AgentMessageType] = AgentMessageType.CLIPBOARD_GRAB

    types: tuple[int, ...]
    selection: int | None = None
    serial: int | None = None

    @classmethod
    def parse(cls, data: bytes, *, selection: bool = False, serial: bool = False) -> ClipboardGrab:
        """A partial trailing type word is ignored (as ``agent.c``).

        Args:
            selection: the message has the selection prefix (``CLIPBOARD_SELECTION``).
            serial: the message has the serial (``CLIPBOARD_GRAB_SERIAL``).

        Raises:
            ProtocolError: shorter than its prefixes."""
        _check(cls.TYPE, data, selection=selection, serial=serial)
        off = 4 if selection else 0
        ser = None
        if serial:
            ser = _U32.unpack_from(data, off)[0]
            off += 4
        n = (len(data) - off) // 4
        return cls(struct.unpack_from(f"<{n}I", data, off), data[0] if selection else None, ser)

    def pack(self) -> bytes:
        """Raises:
        ValueError: a field out of range."""
        serial = b"" if self.serial is None else _pack("<I", self.serial)
        return _selection_prefix(self.selection) + serial + _pack(f"<{len(self.types)}I", *self.types)


@dataclass(frozen=True)
class ClipboardRequest(_Body):
    """VDAgentClipboardRequest: [u8 selection, 3 reserved], u32 type (exact size)."""

    TYPE: ClassVar[AgentMessageType] = AgentMessageType.CLIPBOARD_REQUEST

    type: int
    selection: int | None = None

    @classmethod
    def parse(cls, data: bytes, *, selection: bool = False) -> ClipboardRequest:
        """Raises:
        ProtocolError: not exactly 4 bytes (8 with the selection prefix)."""
        _check(cls.TYPE, data, selection=selection)
        return cls(_U32.unpack_from(data, 4 if selection else 0)[0], data[0] if selection else None)

    def pack(self) -> bytes:
        """Raises:
        ValueError: a field out of range."""
        return _selection_prefix(self.selection) + _pack("<I", self.type)


@dataclass(frozen=True)
class ClipboardRelease(_Body):
    """VDAgentClipboardRelease: [u8 selection, 3 reserved] (exact size: 0 or 4)."""

    TYPE: ClassVar[AgentMessageType] = AgentMessageType.CLIPBOARD_RELEASE

    selection: int | None = None

    @classmethod
    def parse(cls, data: bytes, *, selection: bool = False) -> ClipboardRelease:
        """Raises:
        ProtocolError: not exactly 0 bytes (4 with the selection prefix)."""
        _check(cls.TYPE, data, selection=selection)
        return cls(data[0] if selection else None)

    def pack(self) -> bytes:
        """Raises:
        ValueError: a selection out of range."""
        return _selection_prefix(self.selection)


@dataclass(frozen=True)
class FileXferStart(_Body):
    """VDAgentFileXferStartMessage: u32 id, then a GKeyFile text (spice-gtk writes group
    ``vdagent-file-xfer`` with ``name`` and ``size``)."""

    TYPE: ClassVar[AgentMessageType] = AgentMessageType.FILE_XFER_START

    id: int
    data: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> FileXferStart:
        """Raises:
        ProtocolError: shorter than 4 bytes."""
        _check(cls.TYPE, data)
        return cls(_U32.unpack_from(data)[0], bytes(data[4:]))

    def pack(self) -> bytes:
        """Raises:
        ValueError: an id out of range."""
        return _pack("<I", self.id) + self.data


@dataclass(frozen=True)
class FileXferData(_Body):
    """VDAgentFileXferDataMessage: u32 id, u64 size, then ``size`` bytes of the file."""

    TYPE: ClassVar[AgentMessageType] = AgentMessageType.FILE_XFER_DATA

    id: int
    data: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> FileXferData:
        """Bytes after the declared ``size`` are ignored.

        Raises:
            ProtocolError: shorter than 12 bytes, or than its ``size``."""
        _check(cls.TYPE, data)
        tid, size = struct.unpack_from("<IQ", data)
        if size > len(data) - 12:
            raise ProtocolError(f"FILE_XFER_DATA of {size} bytes in {len(data) - 12}")
        return cls(tid, bytes(data[12 : 12 + size]))

    def pack(self) -> bytes:
        """Raises:
        ValueError: an id out of range."""
        return _pack("<IQ", self.id, len(self.data)) + self.data


@dataclass(frozen=True)
class FileXferStatusError:
    """VDAgentFileXferStatusError (5 bytes): u8 error_type (0: a GIO error), u32 error_code, the
    detail of a ``FILE_XFER_STATUS`` ``ERROR`` for clients with ``FILE_XFER_DETAILED_ERRORS``."""

    error_type: int
    error_code: int

    @classmethod
    def parse(cls, detail: bytes) -> FileXferStatusError | None:
        """The detail, or None when it is too short to hold one (a generic error)."""
        return cls(*struct.unpack_from("<BI", detail)) if len(detail) >= 5 else None

    def pack(self) -> bytes:
        """Raises:
        ValueError: a field out of range."""
        return _pack("<BI", self.error_type, self.error_code)


def prepare_file_xfer_status(status: FileXferStatusMessage, caps: Iterable[int]) -> FileXferStatusMessage:
    """The status as a peer with ``caps`` may see it (``agent_prepare_filexfer_status``): without
    ``FILE_XFER_DETAILED_ERRORS`` the detail is dropped and the results from ``NOT_ENOUGH_SPACE``
    on become ``ERROR``."""
    if AgentCap.FILE_XFER_DETAILED_ERRORS in frozenset(caps):
        return status
    result = FileXferStatus.ERROR if status.result >= FileXferStatus.NOT_ENOUGH_SPACE else status.result
    return replace(status, result=result, detail=b"")


@dataclass(frozen=True)
class ClientDisconnected(_Body):
    """VD_AGENT_CLIENT_DISCONNECTED: no payload (the server tells the agent, on the server port)."""

    TYPE: ClassVar[AgentMessageType] = AgentMessageType.CLIENT_DISCONNECTED

    @classmethod
    def parse(cls, data: bytes) -> ClientDisconnected:
        """Raises:
        ProtocolError: not empty."""
        _check(cls.TYPE, data)
        return cls()

    def pack(self) -> bytes:
        """The empty payload."""
        return b""


@dataclass(frozen=True)
class MaxClipboard(_Body):
    """VDAgentMaxClipboard (4 bytes): i32 max (the largest clipboard the client takes; -1: no limit)."""

    TYPE: ClassVar[AgentMessageType] = AgentMessageType.MAX_CLIPBOARD

    max: int

    @classmethod
    def parse(cls, data: bytes) -> MaxClipboard:
        """Raises:
        ProtocolError: not exactly 4 bytes."""
        _check(cls.TYPE, data)
        return cls(struct.unpack("<i", data)[0])

    def pack(self) -> bytes:
        """Raises:
        ValueError: outside i32."""
        return _pack("<i", self.max)


@dataclass(frozen=True)
class DeviceDisplayInfo:
    """VDAgentDeviceDisplayInfo: u32 channel_id, u32 monitor_id, u32 device_display_id, u32
    device_address_len, then the address, NUL-terminated (the length counts the NUL)."""

    channel_id: int
    monitor_id: int
    device_display_id: int
    device_address: str


@dataclass(frozen=True)
class GraphicsDeviceInfo(_Body):
    """VDAgentGraphicsDeviceInfo: u32 count, then ``count`` :class:`DeviceDisplayInfo` (the server
    tells the agent which guest device and output each display channel and monitor is)."""

    TYPE: ClassVar[AgentMessageType] = AgentMessageType.GRAPHICS_DEVICE_INFO
    _S: ClassVar[struct.Struct] = struct.Struct("<IIII")

    displays: tuple[DeviceDisplayInfo, ...] = field(default=())

    @classmethod
    def parse(cls, data: bytes) -> GraphicsDeviceInfo:
        """The address ends at its first NUL (``agent.c`` forces the last byte to NUL).

        Raises:
            ProtocolError: shorter than 4 bytes, an entry truncated, an address of length 0 or
                not UTF-8."""
        _check(cls.TYPE, data)
        (count,) = _U32.unpack_from(data)
        pos, out = 4, []
        for _ in range(count):  # each entry takes at least 17 bytes, so count is bounded by the size
            if len(data) - pos < cls._S.size:
                raise ProtocolError("GRAPHICS_DEVICE_INFO truncated")
            channel_id, monitor_id, display_id, alen = cls._S.unpack_from(data, pos)
            pos += cls._S.size
            if alen == 0:
                raise ProtocolError("GRAPHICS_DEVICE_INFO with an empty device address")
            if len(data) - pos < alen:
                raise ProtocolError("GRAPHICS_DEVICE_INFO truncated")
            raw = bytes(data[pos : pos + alen - 1]).split(b"\0", 1)[0]
            pos += alen
            try:
                address = raw.decode()
            except UnicodeDecodeError as exc:
                raise ProtocolError("GRAPHICS_DEVICE_INFO device address is not UTF-8") from exc
            out.append(DeviceDisplayInfo(channel_id, monitor_id, display_id, address))
        return cls(tuple(out))

    def pack(self) -> bytes:
        """Raises:
        ValueError: a field out of range, or an address holding NUL."""
        out = [_pack("<I", len(self.displays))]
        for d in self.displays:
            addr = d.device_address.encode() + b"\0"
            if b"\0" in addr[:-1]:
                raise ValueError("a device address cannot hold NUL")
            out.append(_pack("<IIII", d.channel_id, d.monitor_id, d.device_display_id, len(addr)) + addr)
        return b"".join(out)


AgentBody = (
    MouseState
    | MonitorsConfig
    | Reply
    | Clipboard
    | DisplayConfig
    | AnnounceCapabilities
    | ClipboardGrab
    | ClipboardRequest
    | ClipboardRelease
    | FileXferStart
    | FileXferStatusMessage
    | FileXferData
    | ClientDisconnected
    | MaxClipboard
    | AudioVolumeSync
    | GraphicsDeviceInfo
)


def _status(data: bytes) -> FileXferStatusMessage:
    _check(AgentMessageType.FILE_XFER_STATUS, data)
    return FileXferStatusMessage.parse(data)


def _volume(data: bytes) -> AudioVolumeSync:
    return AudioVolumeSync.parse(data)


#: type -> parser(data, selection, serial)
_PARSERS: dict[int, Callable[[bytes, bool, bool], AgentBody]] = {
    AgentMessageType.MOUSE_STATE: lambda d, s, g: MouseState.parse(d),
    AgentMessageType.MONITORS_CONFIG: lambda d, s, g: MonitorsConfig.parse(d),
    AgentMessageType.REPLY: lambda d, s, g: Reply.parse(d),
    AgentMessageType.CLIPBOARD: lambda d, s, g: Clipboard.parse(d, selection=s),
    AgentMessageType.DISPLAY_CONFIG: lambda d, s, g: DisplayConfig.parse(d),
    AgentMessageType.ANNOUNCE_CAPABILITIES: lambda d, s, g: AnnounceCapabilities.parse(d),
    AgentMessageType.CLIPBOARD_GRAB: lambda d, s, g: ClipboardGrab.parse(d, selection=s, serial=g),
    AgentMessageType.CLIPBOARD_REQUEST: lambda d, s, g: ClipboardRequest.parse(d, selection=s),
    AgentMessageType.CLIPBOARD_RELEASE: lambda d, s, g: ClipboardRelease.parse(d, selection=s),
    AgentMessageType.FILE_XFER_START: lambda d, s, g: FileXferStart.parse(d),
    AgentMessageType.FILE_XFER_STATUS: lambda d, s, g: _status(d),
    AgentMessageType.FILE_XFER_DATA: lambda d, s, g: FileXferData.parse(d),
    AgentMessageType.CLIENT_DISCONNECTED: lambda d, s, g: ClientDisconnected.parse(d),
    AgentMessageType.MAX_CLIPBOARD: lambda d, s, g: MaxClipboard.parse(d),
    AgentMessageType.AUDIO_VOLUME_SYNC: lambda d, s, g: _volume(d),
    AgentMessageType.GRAPHICS_DEVICE_INFO: lambda d, s, g: GraphicsDeviceInfo.parse(d),
}


def parse_body(msg: AgentMessage, caps: Iterable[int] = ()) -> AgentBody:
    """The body of ``msg``, checked as ``agent_check_message`` does.

    Args:
        msg: the message.
        caps: the capabilities deciding the clipboard prefixes: the receiver's (for a message from
            the client, the agent's announced capabilities; from the agent, the client's).

    Raises:
        ProtocolError: an unknown type, or a body breaking its type's rules.
    """
    parser = _PARSERS.get(msg.type)
    if parser is None:
        raise ProtocolError(f"unknown agent message type {msg.type}")
    caps = frozenset(caps)
    return parser(msg.data, AgentCap.CLIPBOARD_SELECTION in caps, AgentCap.CLIPBOARD_GRAB_SERIAL in caps)


# -- agent mouse (inputs-channel.cpp) --------------------------------------------------------------


def agent_buttons(buttons_state: int) -> int:
    """A SPICE ``MouseButtonMask`` as agent buttons (``RED_MOUSE_BUTTON_STATE_TO_AGENT``: one bit up)."""
    return (buttons_state << 1) & 0xFFFFFFFF


def mouse_position_state(x: int, y: int, buttons_state: int, display_id: int) -> MouseState:
    """The MOUSE_STATE for a client ``MOUSE_POSITION`` (client mouse mode, agent attached)."""
    return MouseState(x, y, agent_buttons(buttons_state), display_id)


def mouse_press_state(last: MouseState, button: int, buttons_state: int) -> MouseState:
    """The MOUSE_STATE for a client ``MOUSE_PRESS``: the last position, the held buttons, and the
    wheel as UBUTTON (``button`` UP) or DBUTTON (DOWN)."""
    wheel = AgentButton.UP if button == MouseButton.UP else AgentButton.DOWN if button == MouseButton.DOWN else 0
    return replace(last, buttons=agent_buttons(buttons_state) | wheel)


def mouse_release_state(last: MouseState, buttons_state: int) -> MouseState:
    """The MOUSE_STATE for a client ``MOUSE_RELEASE``: the last position, the buttons still held."""
    return replace(last, buttons=agent_buttons(buttons_state))


def wheel_states(last: MouseState, dz: int) -> tuple[MouseState, ...]:
    """A wheel step as the agent sees it: UBUTTON (``dz`` < 0) or DBUTTON (``dz`` > 0) pressed,
    then released, the other buttons of ``last`` kept; nothing for ``dz`` 0."""
    if not dz:
        return ()
    held = last.buttons & ~(AgentButton.UP | AgentButton.DOWN)
    bit = AgentButton.UP if dz < 0 else AgentButton.DOWN
    return (replace(last, buttons=held | bit), replace(last, buttons=held))
