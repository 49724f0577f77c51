"""Record a display device's command stream to a file, and replay it through a worker with no client.

Counterpart of spice ``server/red-record-qxl.cpp`` (recording) and ``red-replay-qxl.cpp`` /
``server/tests/replay.c`` (replaying). libspice records the raw QXL structures in a text dump; we record
what the worker receives *after* the QXL layer has copied out and validated a command -- surface
creation and destruction, every draw as its wire message, cursor commands, monitor layouts -- so a
recording is deterministic, compact, independent of guest memory layout, and safe to load (it is
parsed by the same hostile-input-safe proto layer, never unpickled).

How it hooks in: the recorder is the worker's one :class:`~spiceserver.worker.ops.DisplayObserver`,
told of every display operation (:mod:`spiceserver.worker.ops`) after the worker applied it. Not the
dispatcher's universal hook: QXL ring commands never cross the dispatcher (the worker pulls them), a
host frame becomes draws only on the worker, and a raw device message (guest memory addresses) is
neither validated nor replayable -- the operations are both, and they are exactly what the file holds.
A replay turns records back into the same operations and applies them through the worker's
dispatcher (:class:`~spiceserver.worker.messages.ApplyOps`).

File format (optionally gzip-compressed as a whole): the 16-byte magic ``SPICESERVER-REC\\x01``, then records ``{u8 kind, u64 time_ns, u16
message type, u32 length, body}`` (little-endian); the body is a display- or cursor-channel message
body exactly as on the wire.
"""

from __future__ import annotations

import gzip
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import ProtocolError
from ..proto.enums import ChannelType, CursorFlags
from ..proto.messages import cursor as cm
from ..proto.messages import display as d
from ..proto.messages.base import SERVER, Message, Point16, parse_body
from ..qxl.commands import CopyBits
from .cursor_client import CursorShape
from .drawable import make_drawable
from .messages import ApplyOps
from .ops import (
    CreateSurface,
    DestroySurface,
    DisplayOp,
    Draw,
    HideCursor,
    MoveCursor,
    ResetCursor,
    SetCursor,
    SetCursorTrail,
    SetMonitors,
)

if TYPE_CHECKING:
    from .worker import DisplayWorker

__all__ = ["Recorder", "read_records", "replay", "record_of", "op_of", "MAGIC"]

MAGIC = b"SPICESERVER-REC\x01"
_REC = struct.Struct("<BQHI")
KIND_DISPLAY = 1
KIND_CURSOR = 2
MAX_RECORD = 256 << 20
#: the largest recording loaded (decompressed), bytes
MAX_RECORDING = 4 << 30


class Recorder:
    """Appends records to ``out`` (a path or a binary file); a path ending in ``.gz`` is written
    gzip-compressed (level 1: pictures and text compress well, and the worker thread pays for it)."""

    def __init__(self, out: str | Path | IO[bytes]) -> None:
        if isinstance(out, (str, Path)):
            self._fh: IO[bytes] | gzip.GzipFile
            if str(out).endswith(".gz"):
                self._fh = gzip.open(out, "wb", compresslevel=1)  # noqa: SIM115 - closed by close()
            else:
                self._fh = open(out, "wb")  # noqa: SIM115 - closed by close()
            self._own = True
        else:
            self._fh = out
            self._own = False
        self._fh.write(MAGIC)
        self.count = 0

    def _write(self, kind: int, msg: Message) -> None:
        body = msg.encode()
        self._fh.write(_REC.pack(kind, time.monotonic_ns(), msg.TYPE, len(body)) + body)
        self.count += 1

    def display(self, msg: Message) -> None:
        """Record a display-channel message."""
        self._write(KIND_DISPLAY, msg)

    def cursor(self, msg: Message) -> None:
        """Record a cursor-channel message."""
        self._write(KIND_CURSOR, msg)

    def observe(self, op: DisplayOp) -> None:
        """Record a display operation the worker applied (a DisplayObserver)."""
        rec = record_of(op)
        if rec is not None:
            self._write(*rec)

    def flush(self) -> None:
        """Flush the file."""
        self._fh.flush()

    def close(self) -> None:
        """Flush, and close the file if the recorder opened it."""
        self._fh.flush()
        if self._own:
            self._fh.close()


def _gunzip(data: bytes) -> bytes:
    """Decompress a gzip recording, refusing more than MAX_RECORDING bytes (a bomb is an error)."""
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(data, MAX_RECORDING + 1)
    except zlib.error as exc:
        raise ProtocolError(f"damaged gzip recording: {exc}") from None
    if len(out) > MAX_RECORDING:
        raise ProtocolError("recording larger than allowed once decompressed")
    return out


def read_records(data: bytes) -> Iterator[tuple[int, int, Message]]:
    """Yield (kind, time_ns, message) from a recording (plain or gzip); raises ProtocolError on a
    damaged file."""
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data)
    if not data.startswith(MAGIC):
        raise ProtocolError("not a spiceserver recording (bad magic)")
    pos = len(MAGIC)
    while pos < len(data):
        if pos + _REC.size > len(data):
            raise ProtocolError("truncated record header")
        kind, t, type_, size = _REC.unpack_from(data, pos)
        pos += _REC.size
        if size > MAX_RECORD or pos + size > len(data):
            raise ProtocolError("truncated or oversized record")
        channel = {KIND_DISPLAY: ChannelType.DISPLAY, KIND_CURSOR: ChannelType.CURSOR}.get(kind)
        if channel is None:
            raise ProtocolError(f"unknown record kind {kind}")
        yield kind, t, parse_body(channel, SERVER, type_, data[pos : pos + size])
        pos += size


def _cursor_message(op: SetCursor) -> cm.CursorSet:
    shape = op.shape
    if shape is None:
        cur = cm.Cursor(flags=CursorFlags.NONE)
    else:
        header = cm.CursorHeader(unique=shape.unique, type=shape.type, width=shape.width, height=shape.height, hot_spot_x=shape.hot_x, hot_spot_y=shape.hot_y)
        cur = cm.Cursor(flags=0, header=header, data=shape.data)
    return cm.CursorSet(position=Point16(x=op.x, y=op.y), visible=int(op.visible), cursor=cur)


def record_of(op: DisplayOp) -> tuple[int, Message] | None:
    """The record of a display operation: (kind, wire message); None for what is not recorded."""
    if isinstance(op, CreateSurface):
        return KIND_DISPLAY, d.SurfaceCreate(surface_id=op.surface_id, width=op.width, height=op.height, format=op.format, flags=int(op.primary))
    if isinstance(op, DestroySurface):
        return KIND_DISPLAY, d.SurfaceDestroy(surface_id=op.surface_id)
    if isinstance(op, SetMonitors):
        return KIND_DISPLAY, op.heads
    if isinstance(op, Draw):
        return KIND_DISPLAY, op.drawable.message()
    if isinstance(op, SetCursor):
        return KIND_CURSOR, _cursor_message(op)
    if isinstance(op, MoveCursor):
        return KIND_CURSOR, cm.CursorMove(position=Point16(x=op.x, y=op.y))
    if isinstance(op, HideCursor):
        return KIND_CURSOR, cm.CursorHide()
    if isinstance(op, SetCursorTrail):
        return KIND_CURSOR, cm.CursorTrail(length=op.length, frequency=op.frequency)
    assert isinstance(op, ResetCursor)
    return None


def op_of(kind: int, msg: Message) -> DisplayOp:
    """The display operation a record stands for; raises ProtocolError for one that has none."""
    if kind == KIND_DISPLAY:
        if isinstance(msg, d.SurfaceCreate):
            return CreateSurface(msg.surface_id, msg.width, msg.height, msg.format, primary=bool(msg.flags & 1))
        if isinstance(msg, d.SurfaceDestroy):
            return DestroySurface(msg.surface_id)
        if isinstance(msg, d.MonitorsConfig):
            return SetMonitors(msg)
        if isinstance(msg, d.CopyBits):
            return Draw(make_drawable(msg.base.surface_id, msg.base, CopyBits(msg.src_pos)))
        if hasattr(msg, "base") and hasattr(msg, "data"):
            base: Any = msg.base
            return Draw(make_drawable(base.surface_id, base, msg.data))
    else:
        if isinstance(msg, cm.CursorSet):
            c = msg.cursor
            shape = None
            if c.header is not None:
                h = c.header
                shape = CursorShape(h.unique, h.type, h.width, h.height, h.hot_spot_x, h.hot_spot_y, c.data)
            return SetCursor(shape, msg.position.x, msg.position.y, bool(msg.visible))
        if isinstance(msg, cm.CursorMove):
            return MoveCursor(msg.position.x, msg.position.y)
        if isinstance(msg, cm.CursorHide):
            return HideCursor()
        if isinstance(msg, cm.CursorTrail):
            return SetCursorTrail(msg.length, msg.frequency)
    raise ProtocolError(f"{type(msg).__name__} cannot be replayed")


#: operations applied per request when replaying as fast as possible
REPLAY_BATCH = 64


def replay(data: bytes, worker: DisplayWorker, *, realtime: bool = False, timeout: float | None = 3600.0) -> int:
    """Apply a recording to ``worker`` through its dispatcher (from any thread but the worker's; a
    worker never started applies it on the caller's thread). Returns the number of records.

    Raises:
        ProtocolError: the file is damaged or holds a record that cannot be replayed.
        ValueError: a draw on a surface the recording never created.
    """
    n = 0
    first: int | None = None
    start = time.monotonic_ns()
    batch: list[DisplayOp] = []

    def flush() -> int:
        done: int = worker.request(ApplyOps(tuple(batch)), timeout) if batch else 0
        batch.clear()
        return done

    try:
        for kind, t, msg in read_records(data):
            if realtime:
                first = t if first is None else first
                delay = (t - first) - (time.monotonic_ns() - start)
                if delay > 0:
                    n += flush()
                    time.sleep(delay / 1e9)
            batch.append(op_of(kind, msg))
            if len(batch) >= REPLAY_BATCH:
                n += flush()
    except ProtocolError:
        flush()  # what came before the damage is shown, as it would have been
        raise
    return n + flush()
