"""The vdagent protocol as it travels on the main channel (sans-IO): messages, reassembly, pieces.

Constants from spice-protocol ``spice/vd_agent.h``; the size rules from spice-common
``common/agent.c`` (``agent_check_message``) and spice ``server/agent-msg-filter.c``
(``agent_msg_filter_process_data``, which libspice runs on every client ``AGENT_DATA``).

On the SPICE wire the agent's byte stream rides in main-channel ``AGENT_DATA`` messages (client 107,
server 109), each at most :data:`MAX_DATA_SIZE` (2048) bytes. The stream is a sequence of
``VDAgentMessage`` = u32 protocol (1), u32 type, u64 opaque, u32 size, then ``size`` bytes. The
``VDIChunkHeader`` (port, size) exists only between the server and the guest agent's virtio port,
never on the SPICE wire.

libspice's reading of the client's stream is strict (``agent_msg_filter_process_data``): a piece
larger than 2048 bytes, a message header not whole at the start of a piece, a wrong protocol, or a
piece that runs past the end of the message it continues, are protocol errors (the main channel,
hence the session, is closed). spice-gtk (``channel-main.c:agent_msg_queue_many``) always starts a
message in a new piece. :class:`AgentStreamReader` checks the same in its default ``aligned`` mode
and, before it buffers anything of a message, its protocol and its size against a bound; in
``aligned=False`` mode it reassembles a plain byte stream (what a char device delivers).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import ProtocolError

__all__ = [
    "PROTOCOL",
    "MAX_DATA_SIZE",
    "HEADER",
    "AgentMessageType",
    "AgentCap",
    "FileXferStatus",
    "AgentMessage",
    "AgentStreamReader",
    "AnnounceCapabilities",
    "AudioVolumeSync",
    "FileXferStatusMessage",
    "caps_to_words",
    "words_to_caps",
    "split_message",
    "parse_file_xfer_id",
]

#: VD_AGENT_PROTOCOL
PROTOCOL = 1
#: VD_AGENT_MAX_DATA_SIZE: the largest AGENT_DATA payload, both directions
MAX_DATA_SIZE = 2048
#: VDAgentMessage: protocol, type, opaque, size (little endian, packed: 20 bytes)
HEADER = struct.Struct("<IIQI")


class AgentMessageType(enum.IntEnum):
    """VD_AGENT_* message types."""

    MOUSE_STATE = 1
    MONITORS_CONFIG = 2
    REPLY = 3
    CLIPBOARD = 4
    DISPLAY_CONFIG = 5
    ANNOUNCE_CAPABILITIES = 6
    CLIPBOARD_GRAB = 7
    CLIPBOARD_REQUEST = 8
    CLIPBOARD_RELEASE = 9
    FILE_XFER_START = 10
    FILE_XFER_STATUS = 11
    FILE_XFER_DATA = 12
    CLIENT_DISCONNECTED = 13
    MAX_CLIPBOARD = 14
    AUDIO_VOLUME_SYNC = 15
    GRAPHICS_DEVICE_INFO = 16


class AgentCap(enum.IntEnum):
    """VD_AGENT_CAP_* capability bits (ANNOUNCE_CAPABILITIES)."""

    MOUSE_STATE = 0
    MONITORS_CONFIG = 1
    REPLY = 2
    CLIPBOARD = 3
    DISPLAY_CONFIG = 4
    CLIPBOARD_BY_DEMAND = 5
    CLIPBOARD_SELECTION = 6
    SPARSE_MONITORS_CONFIG = 7
    GUEST_LINEEND_LF = 8
    GUEST_LINEEND_CRLF = 9
    MAX_CLIPBOARD = 10
    AUDIO_VOLUME_SYNC = 11
    MONITORS_CONFIG_POSITION = 12
    FILE_XFER_DISABLED = 13
    FILE_XFER_DETAILED_ERRORS = 14
    GRAPHICS_DEVICE_INFO = 15
    CLIPBOARD_NO_RELEASE_ON_REGRAB = 16
    CLIPBOARD_GRAB_SERIAL = 17


#: VD_AGENT_END_CAP: how many capability bits are defined
END_CAP = 18


class FileXferStatus(enum.IntEnum):
    """VD_AGENT_FILE_XFER_STATUS_* results."""

    CAN_SEND_DATA = 0
    CANCELLED = 1
    ERROR = 2
    SUCCESS = 3
    NOT_ENOUGH_SPACE = 4
    SESSION_LOCKED = 5
    VDAGENT_NOT_CONNECTED = 6
    DISABLED = 7


@dataclass(frozen=True)
class AgentMessage:
    """One VDAgentMessage: its type (any u32: unknown types are the reader's caller's business),
    the opaque word, and the payload."""

    type: int
    data: bytes = b""
    opaque: int = 0

    def pack(self) -> bytes:
        """The header and the payload."""
        return HEADER.pack(PROTOCOL, self.type, self.opaque, len(self.data)) + self.data


def split_message(msg: AgentMessage, piece: int = MAX_DATA_SIZE) -> list[bytes]:
    """``msg`` as AGENT_DATA payloads of at most ``piece`` bytes, the header in the first
    (spice-gtk ``agent_msg_queue_many``, libspice's 2048-byte read buffers).

    Raises:
        ValueError: ``piece`` cannot hold the header.
    """
    if piece < HEADER.size:
        raise ValueError("an AGENT_DATA piece must hold the 20-byte message header")
    raw = msg.pack()
    return [raw[i : i + piece] for i in range(0, len(raw), piece)]


class AgentStreamReader:
    """Reassembles VDAgentMessages from AGENT_DATA payloads (or any byte stream).

    Args:
        max_message_size: the largest payload (``size``) accepted; a larger one is refused from
            its header, before any of it is buffered.
        aligned: libspice's rules for the client's stream: each piece at most ``max_piece``
            bytes, a message header whole at the start of a piece, no piece running past the end
            of the message it continues. False: a plain byte stream (headers may be cut anywhere).
        max_piece: the largest piece in ``aligned`` mode (VD_AGENT_MAX_DATA_SIZE).
    """

    def __init__(self, max_message_size: int, *, aligned: bool = True, max_piece: int = MAX_DATA_SIZE) -> None:
        self.max_message_size = max_message_size
        self.aligned = aligned
        self.max_piece = max_piece
        self._head = bytearray()  # a partial header (byte-stream mode only)
        self._type = 0
        self._opaque = 0
        self._size: int | None = None  # the current message's payload size, once its header is read
        self._body = bytearray()

    @property
    def in_message(self) -> bool:
        """Part of a message was read (its header, or part of it), not all of it."""
        return self._size is not None or bool(self._head)

    def feed(self, data: bytes | bytearray | memoryview) -> list[AgentMessage]:
        """Feed one piece; returns the messages it completes.

        Raises:
            ProtocolError: the stream breaks the rules above; the reader is unusable afterwards.
        """
        view = memoryview(data).cast("B")
        if self.aligned:
            if len(view) > self.max_piece:
                raise ProtocolError(f"agent data piece of {len(view)} bytes (at most {self.max_piece})")
            if self._size is None and len(view) < HEADER.size:
                raise ProtocolError("agent data piece starts a message but holds no whole header")
        return list(self._consume(view))

    def _consume(self, view: memoryview) -> Iterator[AgentMessage]:
        pos = 0
        n = len(view)
        while pos < n:
            if self._size is None:
                if self.aligned and pos:
                    raise ProtocolError("agent data piece runs past the end of its message")
                need = HEADER.size - len(self._head)
                self._head += view[pos : pos + need]
                pos += min(need, n - pos)
                if len(self._head) < HEADER.size:
                    return
                self._start(bytes(self._head))
                self._head.clear()
            assert self._size is not None
            take = min(self._size - len(self._body), n - pos)
            self._body += view[pos : pos + take]
            pos += take
            if len(self._body) == self._size:
                yield AgentMessage(self._type, bytes(self._body), self._opaque)
                self._body = bytearray()
                self._size = None
            elif pos == n:
                return

    def _start(self, header: bytes) -> None:
        protocol, mtype, opaque, size = HEADER.unpack(header)
        if protocol != PROTOCOL:
            raise ProtocolError(f"agent message with protocol {protocol} (expected {PROTOCOL})")
        if size > self.max_message_size:
            raise ProtocolError(f"agent message type {mtype} of {size} bytes (at most {self.max_message_size})")
        self._type, self._opaque, self._size = mtype, opaque, size


def caps_to_words(caps: Iterable[int]) -> tuple[int, ...]:
    """Capability bits as u32 words (at least one word)."""
    bits = list(caps)
    words = [0] * max(1, (max(bits, default=0) // 32) + 1)
    for b in bits:
        words[b // 32] |= 1 << (b % 32)
    return tuple(words)


def words_to_caps(words: Iterable[int]) -> frozenset[int]:
    """The capability bits set in u32 ``words``."""
    return frozenset(i * 32 + b for i, w in enumerate(words) for b in range(32) if w >> b & 1)


@dataclass(frozen=True)
class AnnounceCapabilities:
    """VDAgentAnnounceCapabilities: u32 request (the peer should announce back), u32 caps words."""

    request: bool
    caps: frozenset[int]

    @classmethod
    def parse(cls, data: bytes) -> AnnounceCapabilities:
        """At least the request word; a partial trailing word is ignored (as spice-gtk,
        ``VD_AGENT_CAPS_SIZE_FROM_MSG_SIZE``).

        Raises:
            ProtocolError: shorter than 4 bytes.
        """
        if len(data) < 4:
            raise ProtocolError(f"ANNOUNCE_CAPABILITIES of {len(data)} bytes (at least 4)")
        nwords = (len(data) - 4) // 4
        request, *words = struct.unpack_from(f"<I{nwords}I", data)
        return cls(bool(request), words_to_caps(words))

    def pack(self) -> bytes:
        """The payload (one caps word at least, as many as the highest bit needs)."""
        words = caps_to_words(self.caps)
        return struct.pack(f"<I{len(words)}I", int(self.request), *words)

    def message(self) -> AgentMessage:
        """As a VDAgentMessage."""
        return AgentMessage(AgentMessageType.ANNOUNCE_CAPABILITIES, self.pack())


@dataclass(frozen=True)
class AudioVolumeSync:
    """VDAgentAudioVolumeSync: u8 is_playback, u8 mute, u8 nchannels, u16 volume[nchannels]."""

    is_playback: bool
    mute: bool
    volume: tuple[int, ...]

    @classmethod
    def parse(cls, data: bytes) -> AudioVolumeSync:
        """The three bytes and ``nchannels`` volumes; trailing bytes are ignored (as
        ``agent_check_message``).

        Raises:
            ProtocolError: shorter than 3 bytes, or than its ``nchannels`` volumes need.
        """
        if len(data) < 3:
            raise ProtocolError(f"AUDIO_VOLUME_SYNC of {len(data)} bytes (at least 3)")
        is_playback, mute, nch = data[0], data[1], data[2]
        if len(data) < 3 + 2 * nch:
            raise ProtocolError(f"AUDIO_VOLUME_SYNC with {nch} channels in {len(data)} bytes")
        return cls(bool(is_playback), bool(mute), struct.unpack_from(f"<{nch}H", data, 3))

    def pack(self) -> bytes:
        """The payload.

        Raises:
            ValueError: more than 255 channels, or a volume outside u16.
        """
        if len(self.volume) > 255:
            raise ValueError("at most 255 channels")
        n = len(self.volume)
        try:
            return struct.pack(f"<BBB{n}H", int(self.is_playback), int(self.mute), n, *self.volume)
        except struct.error as exc:
            raise ValueError(f"bad volume {self.volume}") from exc

    def message(self) -> AgentMessage:
        """As a VDAgentMessage."""
        return AgentMessage(AgentMessageType.AUDIO_VOLUME_SYNC, self.pack())


def parse_file_xfer_id(data: bytes) -> int:
    """The task id leading FILE_XFER_START / _DATA / _STATUS.

    Raises:
        ProtocolError: shorter than 4 bytes.
    """
    if len(data) < 4:
        raise ProtocolError(f"file transfer message of {len(data)} bytes (at least 4)")
    return int.from_bytes(data[:4], "little")


@dataclass(frozen=True)
class FileXferStatusMessage:
    """VDAgentFileXferStatusMessage: u32 id, u32 result (a :class:`FileXferStatus`), detail bytes."""

    id: int
    result: int
    detail: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> FileXferStatusMessage:
        """Raises:
        ProtocolError: shorter than 8 bytes."""
        if len(data) < 8:
            raise ProtocolError(f"FILE_XFER_STATUS of {len(data)} bytes (at least 8)")
        tid, result = struct.unpack_from("<II", data)
        return cls(tid, result, bytes(data[8:]))

    def message(self) -> AgentMessage:
        """As a VDAgentMessage."""
        return AgentMessage(AgentMessageType.FILE_XFER_STATUS, struct.pack("<II", self.id, self.result) + self.detail)
