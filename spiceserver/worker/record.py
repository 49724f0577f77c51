"""Record a display device's command stream to a file, and replay it through a worker with no client.

Counterpart of spice ``server/red-record-qxl.cpp`` (recording) and ``red-replay-qxl.cpp`` /
``server/tests/replay.c`` (replaying). libspice records the raw QXL structures in a text dump; we record
what the worker receives *after* the QXL layer has copied out and validated a command -- surface
creation and destruction, every draw as its wire message, cursor commands, monitor layouts -- so a
recording is deterministic, compact, independent of guest memory layout, and safe to load (it is
parsed by the same hostile-input-safe proto layer, never unpickled).

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
from ..proto.enums import ChannelType
from ..proto.messages import cursor as cm
from ..proto.messages import display as d
from ..proto.messages.base import SERVER, Message, parse_body
from .cursor_client import CursorShape
from .drawable import CopyBitsOp, Drawable, make_drawable

if TYPE_CHECKING:
    from .worker import DisplayWorker

__all__ = ["Recorder", "read_records", "replay", "MAGIC"]

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
        self._write(KIND_DISPLAY, msg)

    def cursor(self, msg: Message) -> None:
        self._write(KIND_CURSOR, msg)

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
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


def drawable_message(drawable: Drawable) -> Message:
    return drawable.message()


def _apply_display(worker: DisplayWorker, msg: Message) -> None:
    if isinstance(msg, d.SurfaceCreate):
        worker.create_surface(msg.surface_id, msg.width, msg.height, msg.format, primary=bool(msg.flags & 1))
    elif isinstance(msg, d.SurfaceDestroy):
        worker.destroy_surface(msg.surface_id)
    elif isinstance(msg, d.MonitorsConfig):
        worker.set_monitors(msg)
    elif isinstance(msg, d.CopyBits):
        worker.add_drawable(make_drawable(msg.base.surface_id, msg.base, CopyBitsOp(msg.src_pos)))
    elif isinstance(msg.__class__, type) and hasattr(msg, "base") and hasattr(msg, "data"):
        base: Any = msg.base
        worker.add_drawable(make_drawable(base.surface_id, base, msg.data))
    else:
        raise ProtocolError(f"{type(msg).__name__} cannot be replayed")


def _apply_cursor(worker: DisplayWorker, msg: Message) -> None:
    if isinstance(msg, cm.CursorSet):
        c = msg.cursor
        shape = None
        if c.header is not None:
            h = c.header
            shape = CursorShape(h.unique, h.type, h.width, h.height, h.hot_spot_x, h.hot_spot_y, c.data)
        worker.cursor_set(shape, msg.position.x, msg.position.y, bool(msg.visible))
    elif isinstance(msg, cm.CursorMove):
        worker.cursor_move(msg.position.x, msg.position.y)
    elif isinstance(msg, cm.CursorHide):
        worker.cursor_hide()
    elif isinstance(msg, cm.CursorTrail):
        worker.cursor_trail(msg.length, msg.frequency)
    else:
        raise ProtocolError(f"{type(msg).__name__} cannot be replayed")


def replay(data: bytes, worker: DisplayWorker, *, realtime: bool = False) -> int:
    """Apply a recording to ``worker`` (run on the worker thread, e.g. via ``worker.call``)."""
    n = 0
    first: int | None = None
    start = time.monotonic_ns()
    for kind, t, msg in read_records(data):
        if realtime:
            first = t if first is None else first
            delay = (t - first) - (time.monotonic_ns() - start)
            if delay > 0:
                time.sleep(delay / 1e9)
        if kind == KIND_DISPLAY:
            _apply_display(worker, msg)
        else:
            _apply_cursor(worker, msg)
        n += 1
    return n
