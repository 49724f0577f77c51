"""Migration data blobs: what a source channel hands its destination through the client.

Counterpart of spice ``server/migration-protocol.h`` (``SpiceMigrateDataHeader`` {magic, version},
``SpiceMigrateDataMain`` "MNMD", ``SpiceMigrateDataDisplay`` "DCMD", ``SpiceMigrateDataInputs`` "ICMD").
In a seamless migration each source channel sends SPICE_MSG_MIGRATE_DATA with one blob; the client
(spice-gtk ``channel-base.c:spice_channel_handle_migrate``) relays it unchanged to the same channel of
the destination as SPICE_MSGC_MIGRATE_DATA. Both ends are spiceserver, so the bodies are our own,
but every blob starts with libspice's 8-byte header: the magic (four ASCII letters read as a
little-endian u32, ``SPICE_MAGIC_CONST``) and :data:`MIGRATION_VERSION`.

The destination parses what a client sent: hostile input. :func:`parse` checks the header (magic of
the channel, a version it knows), every size before reading, and bounds on counts and lengths; any
fault raises :class:`~spiceserver.errors.ProtocolError` (the channel closes, nothing else).

Bodies (little endian), version 1:

* main "MNMD": u8 agent_connected, u8 agent_started, u32 client_tokens (AGENT_DATA the client may
  still send), u32 server_tokens (AGENT_DATA the client lets the server send), u32 mouse_mode,
  u32 n, then n agent pieces for the client ({u32 size, bytes}), at most :data:`MAX_AGENT_PIECES`
  of at most :data:`MAX_AGENT_PIECE` bytes each; then u32 k and k u32 capability numbers the
  client's agent announced to the host agent (at most :data:`MAX_AGENT_CAPS`, each below 4096).
* inputs "ICMD": u16 motion_count (motions since the last MOUSE_MOTION_ACK), u32 modifiers (LEDs).
* display "DCMD": u8 pixmap_cache_id, u64 pixmap_cache_size (pixels), u8 glz_dictionary_id,
  u32 glz_window (pixels; 0 = no GLZ), u64 glz_next_id (the id the client's GLZ window expects next),
  u8 low_bandwidth. The destination starts a fresh GLZ dictionary whose ids continue from
  ``glz_next_id``: its first image has ``win_head_dist`` 0, so spice-gtk's window releases every
  older image (``decode-glz.c:glz_decoder_window_release``) and the two encoders never share an id.
* spicevmc "SVMD" (a char device's channel: usbredir, smartcard, port, webdav): u32 size, then the
  bytes the client sent that the source had not handed to the device yet (its write queue; the
  destination writes them to its device first), at most :data:`MAX_VMC_QUEUE`. libspice's
  ``SpiceMigrateDataCharDevice`` also carries tokens; spicevmc channels run without them (only
  the agent has tokens, in MNMD).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TypeVar

from ..errors import ProtocolError

__all__ = [
    "MIGRATION_VERSION",
    "MAX_AGENT_PIECES",
    "MAX_AGENT_PIECE",
    "MainMigrationData",
    "InputsMigrationData",
    "DisplayMigrationData",
    "VmcMigrationData",
    "MAX_VMC_QUEUE",
    "MigrationData",
    "parse",
    "pack",
    "magic_const",
]

#: libspice ``SPICE_MIGRATION_PROTOCOL_VERSION`` (the version BEGIN_SEAMLESS / DST_DO_SEAMLESS carry)
MIGRATION_VERSION = 1
#: server -> client agent pieces carried over (the main channel holds at most 256)
MAX_AGENT_PIECES = 256
#: one agent piece (VD_AGENT_MAX_DATA_SIZE)
MAX_AGENT_PIECE = 2048
#: capabilities of the client's agent carried over
MAX_AGENT_CAPS = 256
#: a char device's write queue carried over (under the 1 MiB message limit with the header)
MAX_VMC_QUEUE = (1 << 20) - 64

_HEADER = struct.Struct("<II")


def magic_const(name: bytes) -> int:
    """libspice ``SPICE_MAGIC_CONST``: four ASCII letters as a little-endian u32."""
    if len(name) != 4:
        raise ValueError("a magic is four bytes")
    return int.from_bytes(name, "little")


@dataclass(frozen=True)
class MainMigrationData:
    """The main channel's state ("MNMD")."""

    MAGIC = b"MNMD"
    _FIXED = struct.Struct("<BBIII")

    agent_connected: bool = False
    agent_started: bool = False
    client_tokens: int = 0
    server_tokens: int = 0
    mouse_mode: int = 1
    agent_pieces: tuple[bytes, ...] = ()
    agent_caps: frozenset[int] = frozenset()

    def body(self) -> bytes:
        """The body after the header."""
        if len(self.agent_pieces) > MAX_AGENT_PIECES or any(len(p) > MAX_AGENT_PIECE for p in self.agent_pieces):
            raise ValueError("too much agent data to migrate")
        out = [self._FIXED.pack(int(self.agent_connected), int(self.agent_started), self.client_tokens, self.server_tokens, self.mouse_mode)]
        out.append(struct.pack("<I", len(self.agent_pieces)))
        for piece in self.agent_pieces:
            out.append(struct.pack("<I", len(piece)) + piece)
        caps = sorted(self.agent_caps)
        if len(caps) > MAX_AGENT_CAPS or any(not 0 <= c < 4096 for c in caps):
            raise ValueError("bad agent capabilities to migrate")
        out.append(struct.pack(f"<I{len(caps)}I", len(caps), *caps))
        return b"".join(out)

    @classmethod
    def from_body(cls, body: memoryview) -> MainMigrationData:
        """Parse the body; raises ProtocolError."""
        fixed = _take(body, 0, cls._FIXED.size, "main")
        connected, started, client_tokens, server_tokens, mouse_mode = cls._FIXED.unpack(fixed)
        pos = cls._FIXED.size
        (n,) = struct.unpack("<I", _take(body, pos, 4, "main"))
        pos += 4
        if n > MAX_AGENT_PIECES:
            raise ProtocolError(f"migration data: {n} agent pieces (at most {MAX_AGENT_PIECES})")
        pieces = []
        for _ in range(n):
            (size,) = struct.unpack("<I", _take(body, pos, 4, "main"))
            pos += 4
            if size > MAX_AGENT_PIECE:
                raise ProtocolError(f"migration data: agent piece of {size} bytes")
            pieces.append(bytes(_take(body, pos, size, "main")))
            pos += size
        (k,) = struct.unpack("<I", _take(body, pos, 4, "main"))
        pos += 4
        if k > MAX_AGENT_CAPS:
            raise ProtocolError(f"migration data: {k} agent capabilities (at most {MAX_AGENT_CAPS})")
        caps = struct.unpack(f"<{k}I", _take(body, pos, 4 * k, "main"))
        if any(c >= 4096 for c in caps):
            raise ProtocolError("migration data: agent capability out of range")
        if connected > 1 or started > 1:
            raise ProtocolError("migration data: bad main flags")
        return cls(bool(connected), bool(started), client_tokens, server_tokens, mouse_mode, tuple(pieces), frozenset(caps))


@dataclass(frozen=True)
class InputsMigrationData:
    """The inputs channel's state ("ICMD")."""

    MAGIC = b"ICMD"
    _FIXED = struct.Struct("<HI")

    motion_count: int = 0
    modifiers: int = 0

    def body(self) -> bytes:
        """The body after the header."""
        return self._FIXED.pack(self.motion_count, self.modifiers)

    @classmethod
    def from_body(cls, body: memoryview) -> InputsMigrationData:
        """Parse the body; raises ProtocolError."""
        return cls(*cls._FIXED.unpack(_take(body, 0, cls._FIXED.size, "inputs")))


@dataclass(frozen=True)
class DisplayMigrationData:
    """A display channel client's state ("DCMD")."""

    MAGIC = b"DCMD"
    _FIXED = struct.Struct("<BQBIQB")

    pixmap_cache_id: int = 0
    pixmap_cache_size: int = 0
    glz_dictionary_id: int = 0
    glz_window: int = 0
    glz_next_id: int = 0
    low_bandwidth: bool = False

    def body(self) -> bytes:
        """The body after the header."""
        return self._FIXED.pack(
            self.pixmap_cache_id, self.pixmap_cache_size, self.glz_dictionary_id, self.glz_window, self.glz_next_id, int(self.low_bandwidth)
        )

    @classmethod
    def from_body(cls, body: memoryview) -> DisplayMigrationData:
        """Parse the body; raises ProtocolError."""
        cache_id, cache_size, dict_id, window, next_id, low = cls._FIXED.unpack(_take(body, 0, cls._FIXED.size, "display"))
        if low > 1:
            raise ProtocolError("migration data: bad display flags")
        if next_id >= 1 << 62:
            raise ProtocolError("migration data: GLZ image id out of range")
        return cls(cache_id, cache_size, dict_id, window, next_id, bool(low))


@dataclass(frozen=True)
class VmcMigrationData:
    """A spicevmc channel's state ("SVMD"): the bytes still queued toward the device."""

    MAGIC = b"SVMD"

    queued: bytes = b""

    def body(self) -> bytes:
        """The body after the header."""
        if len(self.queued) > MAX_VMC_QUEUE:
            raise ValueError("char device queue too large to migrate")
        return struct.pack("<I", len(self.queued)) + self.queued

    @classmethod
    def from_body(cls, body: memoryview) -> VmcMigrationData:
        """Parse the body; raises ProtocolError."""
        (n,) = struct.unpack("<I", _take(body, 0, 4, "spicevmc"))
        if n > MAX_VMC_QUEUE:
            raise ProtocolError(f"migration data: char device queue of {n} bytes")
        return cls(bytes(_take(body, 4, n, "spicevmc")))


MigrationData = MainMigrationData | InputsMigrationData | DisplayMigrationData | VmcMigrationData
_D = TypeVar("_D", MainMigrationData, InputsMigrationData, DisplayMigrationData, VmcMigrationData)


def _take(body: memoryview, pos: int, n: int, what: str) -> memoryview:
    if pos + n > len(body):
        raise ProtocolError(f"migration data ({what}): {len(body)} bytes, need {pos + n}")
    return body[pos : pos + n]


def pack(data: MigrationData) -> bytes:
    """The blob: header then body."""
    return _HEADER.pack(magic_const(data.MAGIC), MIGRATION_VERSION) + data.body()


def parse(kind: type[_D], blob: bytes) -> _D:
    """Parse a blob a client relayed for a channel expecting ``kind``.

    Args:
        kind: the class the receiving channel expects (its magic is checked).
        blob: the MSGC_MIGRATE_DATA body.

    Raises:
        ProtocolError: short, another channel's magic, an unknown version, or a bad body.
    """
    view = memoryview(blob)
    if len(view) < _HEADER.size:
        raise ProtocolError(f"migration data: {len(view)} bytes, shorter than its header")
    magic, version = _HEADER.unpack(view[: _HEADER.size])
    if magic != magic_const(kind.MAGIC):
        raise ProtocolError(f"migration data: magic {magic:#010x}, expected {kind.MAGIC.decode()}")
    if version != MIGRATION_VERSION:
        raise ProtocolError(f"migration data: version {version}, this server knows {MIGRATION_VERSION}")
    return kind.from_body(view[_HEADER.size :])

