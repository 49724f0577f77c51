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

A recording is as hostile as a guest: it is streamed (never inflated whole), and a replay checks
its surfaces as a device checks a guest's (:func:`replay`).

File format (optionally gzip-compressed as a whole): the 16-byte magic ``SPICESERVER-REC\\x01``, then records ``{u8 kind, u64 time_ns, u16
message type, u32 length, body}`` (little-endian); the body is a display- or cursor-channel message
body exactly as on the wire.
"""

from __future__ import annotations

import gzip
import io
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
from ..qxl.reader import MAX_SURFACE_PIXELS
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
#: the largest record (one message body), bytes
MAX_RECORD = 64 << 20
#: the most bytes a recording may hold (decompressed); records are streamed, so this bounds the
#: work a replay does, not its memory (``replay --max-size``)
MAX_RECORDING = 1 << 30
#: surface ids a replay accepts (as a QXL device's default ``n_surfaces``)
REPLAY_SURFACES = 1024
#: canvas bytes the surfaces of a replay may take together
REPLAY_CANVAS_BYTES = 1 << 30
#: the longest pause ``--realtime`` keeps between two records, seconds
MAX_REPLAY_GAP = 1.0


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


class _Reader:
    """Exact reads from a (possibly gzip) stream, counting the bytes against a limit."""

    def __init__(self, fh: IO[bytes], limit: int) -> None:
        self.fh, self.limit, self.total = fh, limit, 0

    def read(self, n: int, what: str) -> bytes:
        """``n`` bytes, b"" at a clean end of file; ProtocolError if fewer, damaged, or past the limit."""
        if self.total + n > self.limit:
            raise ProtocolError("recording larger than allowed once decompressed")
        try:
            out = self.fh.read(n)
        except (OSError, EOFError, zlib.error) as exc:
            raise ProtocolError(f"damaged gzip recording: {exc}") from None
        self.total += len(out)
        if out and len(out) < n:
            raise ProtocolError(f"truncated {what}")
        return out


def _open(source: bytes | IO[bytes]) -> IO[bytes]:
    """A binary stream of the decompressed recording (``source`` plain or gzip: bytes, or a file
    that can peek or seek)."""
    fh: IO[bytes] = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    peek = getattr(fh, "peek", None)
    if peek is not None:
        start = bytes(peek(2)[:2])
    else:
        start = fh.read(2)
        fh.seek(-len(start), io.SEEK_CUR)
    if start == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    return fh


def read_records(source: bytes | IO[bytes], max_bytes: int | None = None) -> Iterator[tuple[int, int, Message]]:
    """Yield (kind, time_ns, message) from a recording (plain or gzip, bytes or a binary file),
    streamed: memory stays within one record (:data:`MAX_RECORD`) whatever the file's size.

    Raises:
        ProtocolError: a damaged file, or more than ``max_bytes`` (default :data:`MAX_RECORDING`)
            once decompressed.
    """
    r = _Reader(_open(source), MAX_RECORDING if max_bytes is None else max_bytes)
    if r.read(len(MAGIC), "magic") != MAGIC:
        raise ProtocolError("not a spiceserver recording (bad magic)")
    while head := r.read(_REC.size, "record header"):
        kind, t, type_, size = _REC.unpack(head)
        if size > MAX_RECORD:
            raise ProtocolError(f"oversized record ({size} bytes > {MAX_RECORD})")
        channel = {KIND_DISPLAY: ChannelType.DISPLAY, KIND_CURSOR: ChannelType.CURSOR}.get(kind)
        if channel is None:
            raise ProtocolError(f"unknown record kind {kind}")
        body = r.read(size, "record") if size else b""
        if len(body) != size:
            raise ProtocolError("truncated record")
        yield kind, t, parse_body(channel, SERVER, type_, body)


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


class _Surfaces:
    """The surfaces a replay created, checked as a device checks a guest's: id, size, total bytes."""

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}

    def check(self, op: DisplayOp) -> None:
        """ProtocolError if ``op`` creates a surface out of bounds or draws on a missing one."""
        if isinstance(op, CreateSurface):
            w, h, sid = op.width, op.height, op.surface_id
            if not 0 <= sid < REPLAY_SURFACES:
                raise ProtocolError(f"surface id {sid} out of range (< {REPLAY_SURFACES})")
            if w <= 0 or h <= 0 or w * h > MAX_SURFACE_PIXELS:
                raise ProtocolError(f"surface {sid} of {w}x{h} out of range (1..{MAX_SURFACE_PIXELS} pixels)")
            others = sum(v for k, v in self.sizes.items() if k != sid)
            if others + w * h * 4 > REPLAY_CANVAS_BYTES:
                raise ProtocolError(f"surface {sid} of {w}x{h} passes the {REPLAY_CANVAS_BYTES} canvas bytes of a replay")
            self.sizes[sid] = w * h * 4
        elif isinstance(op, DestroySurface):
            self.sizes.pop(op.surface_id, None)
        elif isinstance(op, Draw):
            for sid in (op.drawable.surface_id, *op.drawable.surface_deps):
                if sid not in self.sizes:
                    raise ProtocolError(f"draw on (or from) surface {sid}, which the recording never created")


def replay(
    data: bytes | IO[bytes], worker: DisplayWorker, *, realtime: bool = False, timeout: float | None = 3600.0,
    max_bytes: int | None = None, max_gap: float = MAX_REPLAY_GAP,
) -> int:  # fmt: skip
    """Apply a recording to ``worker`` through its dispatcher (from any thread but the worker's; a
    worker never started applies it on the caller's thread). Returns the number of records.

    ``data`` is the recording (bytes or a binary file, streamed); ``max_bytes`` bounds its size
    once decompressed (:func:`read_records`); with ``realtime`` the recorded pauses are kept, each
    at most ``max_gap`` seconds. Surfaces are checked as a device checks a guest's: ids below
    :data:`REPLAY_SURFACES`, at most ``MAX_SURFACE_PIXELS`` pixels each, :data:`REPLAY_CANVAS_BYTES`
    in all. The worker is expected to start with no surfaces.

    Raises:
        ProtocolError: the file is damaged, out of those bounds, or holds a record that cannot be
            replayed (a draw on a surface the recording never created included).
    """
    n = 0
    prev: int | None = None
    virtual = 0  # ns of recorded time so far, each gap capped
    start = time.monotonic_ns()
    batch: list[DisplayOp] = []
    surfaces = _Surfaces()
    cap = int(max_gap * 1e9)

    def flush() -> int:
        done: int = worker.request(ApplyOps(tuple(batch)), timeout) if batch else 0
        batch.clear()
        return done

    try:
        for kind, t, msg in read_records(data, max_bytes):
            if realtime:
                virtual += 0 if prev is None else min(max(t - prev, 0), cap)
                prev = t
                delay = virtual - (time.monotonic_ns() - start)
                if delay > 0:
                    n += flush()
                    time.sleep(delay / 1e9)
            op = op_of(kind, msg)
            surfaces.check(op)
            batch.append(op)
            if len(batch) >= REPLAY_BATCH:
                n += flush()
    except ProtocolError:
        flush()  # what came before the damage is shown, as it would have been
        raise
    return n + flush()
