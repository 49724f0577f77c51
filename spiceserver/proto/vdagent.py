"""The vdagent protocol as it travels on the main channel (sans-IO): messages, reassembly, pieces.

Constants from spice-protocol ``spice/vd_agent.h``; the size rules from spice-common
``common/agent.c`` (``agent_check_message``) and spice ``server/agent-msg-filter.c``
(``agent_msg_filter_process_data``, which libspice runs on every client ``AGENT_DATA``).

On the SPICE wire the agent's byte stream rides in main-channel ``AGENT_DATA`` messages (client 107,
server 109), each at most :data:`MAX_DATA_SIZE` (2048) bytes. The stream is a sequence of
``VDAgentMessage`` = u32 protocol (1), u32 type, u64 opaque, u32 size, then ``size`` bytes. The
``VDIChunkHeader`` (port, size) exists only between the server and the guest agent's virtio port,
never on the SPICE wire (:class:`ChunkReader`, :func:`pack_chunk`, :func:`chunk_message`).

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
    "CHUNK_HEADER",
    "DEFAULT_MAX_CHUNK_SIZE",
    "ChunkPort",
    "ChunkPiece",
    "ChunkReader",
    "pack_chunk",
    "chunk_message",
    "FilterResult",
    "AgentMsgFilter",
    "adjust_agent_caps",
    "adjust_announce_payload",
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

    def pack(self) -> bytes:
        """The payload.

        Raises:
            ValueError: ``id`` or ``result`` outside u32.
        """
        try:
            return struct.pack("<II", self.id, self.result) + self.detail
        except struct.error as exc:
            raise ValueError(f"bad FILE_XFER_STATUS {self.id}, {self.result}") from exc

    def message(self) -> AgentMessage:
        """As a VDAgentMessage."""
        return AgentMessage(AgentMessageType.FILE_XFER_STATUS, self.pack())


# -- the guest agent's virtio port: VDIChunkHeader framing ---------------------------------------

#: VDIChunkHeader: u32 port, u32 size (little endian, packed: 8 bytes)
CHUNK_HEADER = struct.Struct("<II")
#: the largest chunk :class:`ChunkReader` accepts by default. spice-vdagentd writes each message as
#: one chunk (``vdagent_virtio_port_write_start``: chunk size = 20 + message size), so a clipboard
#: of spice-gtk's default 100 MiB limit arrives as one chunk; the reader never buffers more than a
#: piece of it.
DEFAULT_MAX_CHUNK_SIZE = 256 << 20


class ChunkPort(enum.IntEnum):
    """VDP_*_PORT: whom a chunk on the agent's virtio port is from or for."""

    CLIENT = 1  #: VDP_CLIENT_PORT: the client's agent stream
    SERVER = 2  #: VDP_SERVER_PORT: messages between the server itself and the agent


@dataclass(frozen=True)
class ChunkPiece:
    """At most :data:`MAX_DATA_SIZE` bytes of one chunk, cut where libspice cuts it.

    Attributes:
        port: the chunk's :class:`ChunkPort`.
        data: the piece; pieces of a chunk are cut every ``piece_size`` bytes from its start.
        last: this piece ends its chunk.
    """

    port: ChunkPort
    data: bytes
    last: bool


class ChunkReader:
    """Splits the guest agent's device byte stream into chunk pieces (sans-IO).

    libspice (``server/reds.cpp``, ``RedCharDeviceVDIPort::read_one_msg_from_device``) reads the
    8-byte chunk header, then the chunk's data in buffers of at most 2048 bytes, each handed on
    when full (or when the chunk ends): a port-1 piece goes through the agent message filter to
    the client as one ``AGENT_DATA``, a port-2 piece is dropped (``vdi_port_read_buf_process``),
    any other port is a protocol error that detaches the agent. This reader cuts the same pieces;
    it buffers at most one piece, so memory stays bounded whatever the chunk size says.

    Unlike libspice it bounds the chunk size (``max_chunk_size``) and accepts an empty chunk
    (libspice's reader stalls on one; it yields nothing here).

    Args:
        max_chunk_size: the largest chunk ``size`` accepted (checked on the header).
        piece_size: where pieces are cut (VD_AGENT_MAX_DATA_SIZE).
    """

    def __init__(self, *, max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE, piece_size: int = MAX_DATA_SIZE) -> None:
        if piece_size < 1:
            raise ValueError("piece_size must be positive")
        self.max_chunk_size = max_chunk_size
        self.piece_size = piece_size
        self._head = bytearray()
        self._port = ChunkPort.CLIENT
        self._left: int | None = None  # bytes of the current chunk not yet read, once its header is
        self._piece = bytearray()

    @property
    def in_chunk(self) -> bool:
        """Part of a chunk (or of its header) was read, not all of it."""
        return self._left is not None or bool(self._head)

    def feed(self, data: bytes | bytearray | memoryview) -> list[ChunkPiece]:
        """Feed device bytes; returns the pieces they complete.

        Raises:
            ProtocolError: a chunk header names a port other than 1 or 2, or a size above
                ``max_chunk_size``; the reader is unusable afterwards.
        """
        view = memoryview(data).cast("B")
        out: list[ChunkPiece] = []
        pos, n = 0, len(view)
        while pos < n:
            if self._left is None:
                need = CHUNK_HEADER.size - len(self._head)
                self._head += view[pos : pos + need]
                pos += min(need, n - pos)
                if len(self._head) < CHUNK_HEADER.size:
                    break
                self._start(bytes(self._head))
                self._head.clear()
                if self._left == 0:
                    self._left = None
                    continue
            assert self._left is not None
            want = min(self.piece_size - len(self._piece), self._left - len(self._piece))
            take = min(want, n - pos)
            self._piece += view[pos : pos + take]
            pos += take
            if take == want:
                self._left -= len(self._piece)
                last = self._left == 0
                out.append(ChunkPiece(self._port, bytes(self._piece), last))
                self._piece.clear()
                if last:
                    self._left = None
        return out

    def _start(self, header: bytes) -> None:
        port, size = CHUNK_HEADER.unpack(header)
        if port not in (ChunkPort.CLIENT, ChunkPort.SERVER):
            raise ProtocolError(f"agent chunk for port {port} (1 or 2)")
        if size > self.max_chunk_size:
            raise ProtocolError(f"agent chunk of {size} bytes (at most {self.max_chunk_size})")
        self._port, self._left = ChunkPort(port), size


def pack_chunk(port: int, data: bytes, *, max_chunk_size: int = MAX_DATA_SIZE) -> bytes:
    """One chunk: the VDIChunkHeader and ``data``.

    spice-vdagentd refuses a chunk larger than VD_AGENT_MAX_DATA_SIZE (``virtio-port.c``
    ``conn_handle_header``), hence the default bound.

    Raises:
        ValueError: ``port`` is not 1 or 2, or ``data`` is larger than ``max_chunk_size``.
    """
    if port not in (ChunkPort.CLIENT, ChunkPort.SERVER):
        raise ValueError(f"chunk port {port} (1 or 2)")
    if len(data) > max_chunk_size:
        raise ValueError(f"chunk of {len(data)} bytes (at most {max_chunk_size})")
    return CHUNK_HEADER.pack(port, len(data)) + data


def chunk_message(port: int, msg: AgentMessage, *, max_chunk_size: int = MAX_DATA_SIZE) -> list[bytes]:
    """``msg`` as chunks for the agent's device, each at most ``max_chunk_size`` bytes of data
    (libspice writes a server message as one chunk, ``vdagent_new_write_buffer``; spice-vdagentd
    reassembles a message across chunks of one port, ``vdagent_virtio_port_do_chunk``).

    Raises:
        ValueError: a bad port, or ``max_chunk_size`` below 1.
    """
    if max_chunk_size < 1:
        raise ValueError("max_chunk_size must be positive")
    raw = msg.pack()
    return [
        pack_chunk(port, raw[i : i + max_chunk_size], max_chunk_size=max_chunk_size)
        for i in range(0, len(raw), max_chunk_size)
    ]


# -- the agent message filter (agent-msg-filter.c) -------------------------------------------------


class FilterResult(enum.IntEnum):
    """AGENT_MSG_FILTER_*: what to do with a piece."""

    OK = 0  #: forward it
    DISCARD = 1  #: drop it
    PROTO_ERROR = 2  #: the stream is broken: close the session (client) or detach the agent
    #: a MONITORS_CONFIG for the display device, not the agent: gather its pieces (an
    #: :class:`AgentStreamReader` bounded by ``vdagent_messages.MONITORS_CONFIG_MAX_SIZE``, as
    #: ``reds_on_main_agent_monitors_config``) and parse it (``MonitorsConfig.parse``)
    MONITORS_CONFIG = 3


_CLIPBOARD_TYPES = frozenset(
    {
        AgentMessageType.CLIPBOARD,
        AgentMessageType.CLIPBOARD_GRAB,
        AgentMessageType.CLIPBOARD_REQUEST,
        AgentMessageType.CLIPBOARD_RELEASE,
    }
)
_FILE_XFER_TYPES = frozenset(
    {AgentMessageType.FILE_XFER_START, AgentMessageType.FILE_XFER_STATUS, AgentMessageType.FILE_XFER_DATA}
)
_CLIPBOARD_CAPS = (AgentCap.CLIPBOARD, AgentCap.CLIPBOARD_BY_DEMAND, AgentCap.CLIPBOARD_SELECTION)


def adjust_agent_caps(caps: Iterable[int], *, copy_paste: bool, file_xfer: bool) -> frozenset[int]:
    """The agent's capabilities as the client may see them (``reds_adjust_agent_capabilities``)."""
    out = set(caps)
    if not copy_paste:
        out.difference_update(_CLIPBOARD_CAPS)
    if not file_xfer:
        out.add(AgentCap.FILE_XFER_DISABLED)
    return frozenset(out)


def _caps_masks(copy_paste: bool, file_xfer: bool) -> tuple[int, int]:
    clear = 0 if copy_paste else sum(1 << c for c in _CLIPBOARD_CAPS)
    return clear, 0 if file_xfer else 1 << AgentCap.FILE_XFER_DISABLED


def adjust_announce_payload(payload: bytes, *, copy_paste: bool, file_xfer: bool) -> bytes:
    """An ANNOUNCE_CAPABILITIES payload with :func:`adjust_agent_caps` applied, same size (an
    announce with no caps word stays as it is: libspice never grows the message)."""
    return _adjust_bytes(payload, 0, *_caps_masks(copy_paste, file_xfer))


def _adjust_bytes(data: bytes, offset: int, clear: int, setbits: int) -> bytes:
    """Apply the masks to the bytes of the payload's first caps word (payload bytes 4..7) that
    ``data`` holds, ``data`` being the payload from ``offset`` on."""
    if not (clear or setbits) or offset >= 8 or offset + len(data) <= 4:
        return data
    out = bytearray(data)
    for k in range(4):
        i = 4 + k - offset
        if 0 <= i < len(out):
            out[i] = (out[i] & ~(clear >> 8 * k) | setbits >> 8 * k) & 0xFF
    return bytes(out)


class AgentMsgFilter:
    """libspice's agent message filter, one per direction (sans-IO).

    Feed it every piece with :meth:`process`, in order. A piece is at most 2048 bytes; one that
    starts a message holds the whole 20-byte header; no piece runs past the end of its message.

    Args:
        copy_paste: clipboard messages pass (``agent_copypaste``).
        file_xfer: file transfer messages pass (``agent_file_xfer``).
        use_client_monitors_config: MONITORS_CONFIG goes to the display device (libspice: a QXL
            with ``client_monitors_config``; only meaningful toward the agent).
        discard_all: every message is dropped (no agent, or no client, yet).
        max_message_size: a message announcing a larger payload is a protocol error (None: any
            size, as libspice).
    """

    def __init__(
        self,
        *,
        copy_paste: bool = True,
        file_xfer: bool = True,
        use_client_monitors_config: bool = False,
        discard_all: bool = False,
        max_message_size: int | None = None,
    ) -> None:
        self.max_message_size = max_message_size
        self.configure(
            copy_paste=copy_paste, file_xfer=file_xfer, use_client_monitors_config=use_client_monitors_config
        )
        self.discard_all = discard_all
        #: the current message's decision (its follow-on pieces get it too)
        self.result = FilterResult.OK
        #: why the last PROTO_ERROR was returned (for the log)
        self.error: str | None = None
        self._to_read = 0  # bytes of the current message's payload still to come
        self._type: int | None = None  # the current message's type
        self._payload_off = 0  # payload bytes before the last piece's payload bytes
        self._piece_start = 0  # where the payload starts in the last piece (20 in a header piece)
        self._consumed = 0  # payload bytes of the current message seen so far

    def configure(self, *, copy_paste: bool, file_xfer: bool, use_client_monitors_config: bool) -> None:
        """Change the switches (``agent_msg_filter_config``); a message under way keeps its decision."""
        self.copy_paste = copy_paste
        self.file_xfer = file_xfer
        self.use_client_monitors_config = use_client_monitors_config

    def reset(self, *, discard_all: bool = True) -> None:
        """Forget any message under way (``agent_msg_filter_init``: an agent or client came or went)."""
        self.discard_all = discard_all
        self.result = FilterResult.OK
        self.error = None
        self._to_read = 0
        self._type = None

    def discard_current(self) -> None:
        """Drop the rest of the message under way (libspice sets ``result = DISCARD`` so pieces
        meant for a previous agent or client are thrown away)."""
        self.result = FilterResult.DISCARD

    @property
    def in_message(self) -> bool:
        """A message's header was seen and some of its payload is still to come."""
        return self._to_read > 0

    def process(self, piece: bytes | bytearray | memoryview) -> FilterResult:
        """Decide one piece (``agent_msg_filter_process_data``). After a ``PROTO_ERROR`` every
        piece is one, until :meth:`reset`."""
        if self.error is not None:
            return FilterResult.PROTO_ERROR
        n = len(piece)
        if n > MAX_DATA_SIZE:
            return self._fail(f"agent data piece of {n} bytes (at most {MAX_DATA_SIZE})")
        if self._to_read:
            if n > self._to_read:
                return self._fail("agent data piece runs past the end of its message")
            self._payload_off, self._piece_start = self._consumed, 0
            self._consumed += n
            self._to_read -= n
            return self.result
        if n < HEADER.size:
            return self._fail("agent data piece starts a message but holds no whole header")
        protocol, mtype, _opaque, size = HEADER.unpack_from(bytes(piece[: HEADER.size]))
        if protocol != PROTOCOL:
            return self._fail(f"agent message with protocol {protocol} (expected {PROTOCOL})")
        if self.max_message_size is not None and size > self.max_message_size:
            return self._fail(f"agent message of {size} bytes announced (at most {self.max_message_size})")
        self.result = self._decide(mtype)
        self._type, self._to_read = mtype, size
        self._payload_off, self._piece_start, self._consumed = 0, HEADER.size, n - HEADER.size
        if n - HEADER.size > size:
            return self._fail("agent data piece runs past the end of its message")
        self._to_read -= n - HEADER.size
        return self.result

    def _decide(self, mtype: int) -> FilterResult:
        if self.discard_all:
            return FilterResult.DISCARD
        if mtype in _CLIPBOARD_TYPES and not self.copy_paste:
            return FilterResult.DISCARD
        if mtype in _FILE_XFER_TYPES and not self.file_xfer:
            return FilterResult.DISCARD
        if mtype == AgentMessageType.MONITORS_CONFIG and self.use_client_monitors_config:
            return FilterResult.MONITORS_CONFIG
        return FilterResult.OK

    def _fail(self, reason: str) -> FilterResult:
        self.error = reason
        return FilterResult.PROTO_ERROR

    def adjust_capabilities(self, piece: bytes) -> bytes:
        """The piece just processed, with :func:`adjust_agent_caps` applied if it belongs to an
        ANNOUNCE_CAPABILITIES (on the agent-to-client filter, for pieces answered ``OK``)."""
        if self._type != AgentMessageType.ANNOUNCE_CAPABILITIES:
            return piece
        clear, setbits = _caps_masks(self.copy_paste, self.file_xfer)
        start = self._piece_start
        return piece[:start] + _adjust_bytes(piece[start:], self._payload_off, clear, setbits)
