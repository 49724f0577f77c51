"""Issue 9 point 6, replay: a hostile recording is bounded like a hostile guest -- streamed, never
inflated whole; surfaces checked for id, size and total bytes; zero-size surfaces and draws on
missing surfaces are ProtocolErrors; ``--realtime`` pauses capped. Memory measured, never time."""

from __future__ import annotations

import gzip
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import pytest

from spiceserver.errors import ProtocolError
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Message, Rect
from spiceserver.worker import record
from spiceserver.worker.record import _REC, KIND_DISPLAY, MAGIC, MAX_REPLAY_GAP, read_records, replay
from spiceserver.worker.worker import DisplayWorker

MiB = 1 << 20


def rec(msg: Message, t: int = 0) -> bytes:
    body = msg.encode()
    return _REC.pack(KIND_DISPLAY, t, msg.TYPE, len(body)) + body


def create(sid: int, w: int, h: int, t: int = 0) -> bytes:
    return rec(d.SurfaceCreate(surface_id=sid, width=w, height=h, format=32, flags=1 if sid == 0 else 0), t)


def fill(sid: int, t: int = 0) -> bytes:
    box = Rect(top=0, left=0, bottom=4, right=4)
    body = d.Fill(brush=d.Brush(type=1, color=0xFF0000), rop_descriptor=8, mask=d.QMask())
    return rec(d.DrawFill(base=d.DisplayBase(surface_id=sid, box=box, clip=d.Clip()), data=body), t)


def gzip_bomb(prefix: bytes, zeros: int) -> bytes:
    """``prefix`` then ``zeros`` zero bytes (a multiple of 64 MiB), gzip-compressed as members
    (a gzip file may hold several; they inflate to their concatenation)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = c.compress(bytes(64 * MiB)) + c.flush()
    return gzip.compress(prefix) + block * (zeros // (64 * MiB))


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """About 1 MB of gzip inflating to 1 GiB: the magic, then zeros."""
    return gzip_bomb(MAGIC, 1 << 30)


def test_a_gzip_bomb_is_refused_without_inflating_it(bomb: bytes) -> None:
    assert len(bomb) < 2 * MiB
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="unknown record kind 0"):
            list(read_records(bomb))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB, peak  # was 2.27 GB


def test_the_replay_command_refuses_the_bomb_within_a_bounded_rss(bomb: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bomb.rec.gz"
    path.write_bytes(bomb)
    code = (
        "import resource, sys\n"
        "from spiceserver.codecs import warmup\n"
        "from spiceserver.__main__ import replay_main\n"
        "warmup.start()\n"
        "warmup.wait(600)\n"  # the codec kernels compiled first: their memory is not the replay's
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "rc = replay_main(sys.argv[1:])\n"
        "print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "unknown record kind" in proc.stderr, proc.stderr
    base, peak = (int(v) for v in proc.stdout.split()[-2:])
    assert peak - base < 64 * 1024, (base, peak)  # KiB: the replay's own peak growth (was 2.27 GB)


def test_decompressed_size_and_record_size_are_bounded() -> None:
    many = MAGIC + create(0, 8, 8) + fill(0) * 1000
    big = gzip.compress(many)
    assert len(list(read_records(big))) == 1001
    header = _REC.pack(KIND_DISPLAY, 0, d.DrawFill.TYPE, record.MAX_RECORD + 1)
    oversized = gzip_bomb(MAGIC + header, 256 * MiB)
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="larger than allowed"):
            list(read_records(big, max_bytes=len(many) - 1))
        with pytest.raises(ProtocolError, match="oversized record"):
            list(read_records(oversized))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB, peak


def test_huge_surfaces_with_wild_ids_are_refused_early() -> None:
    """The issue's 744-byte recording: 8192x8192 surfaces with ids 0xFFFF000x."""
    data = MAGIC + b"".join(create(0xFFFF0000 + i, 8192, 8192) for i in range(8))
    worker = DisplayWorker("replay-bounds")  # never started: applies on this thread
    with pytest.raises(ProtocolError, match="surface id 4294901760 out of range"):
        replay(data, worker)
    assert worker.surfaces == {}


def test_total_canvas_bytes_of_a_replay_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record, "REPLAY_CANVAS_BYTES", 8 * MiB)
    data = MAGIC + b"".join(create(i, 1024, 1024) for i in range(8))  # 4 MiB each
    worker = DisplayWorker("replay-bounds")
    with pytest.raises(ProtocolError, match="canvas bytes"):
        replay(data, worker)
    assert sum(s.canvas.pixels.nbytes for s in worker.surfaces.values()) <= 8 * MiB
    assert len(worker.surfaces) == 2
    # replacing a surface does not count it twice
    worker = DisplayWorker("replay-bounds")
    assert replay(MAGIC + create(0, 1024, 1024) + create(1, 1024, 1024) + create(1, 1024, 1024), worker) == 3


@pytest.mark.parametrize(("w", "h"), [(0, 10), (10, 0), (0, 0), (8193, 8192)])
def test_zero_or_oversized_surfaces_are_protocol_errors(w: int, h: int) -> None:
    with pytest.raises(ProtocolError, match="out of range"):
        replay(MAGIC + create(0, w, h), DisplayWorker("replay-bounds"))


def test_a_draw_on_a_missing_surface_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="never created"):
        replay(MAGIC + create(0, 8, 8) + fill(3), DisplayWorker("replay-bounds"))


def test_realtime_caps_every_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records an hour apart (and one going back in time): no pause longer than MAX_REPLAY_GAP."""
    slept: list[float] = []

    class Clock:  # time as the replay sees it: sleeping advances it, nothing else does
        now = 0

        @classmethod
        def monotonic_ns(cls) -> int:
            return cls.now

        @classmethod
        def sleep(cls, seconds: float) -> None:
            slept.append(seconds)
            cls.now += int(seconds * 1e9)

    monkeypatch.setattr(record, "time", Clock)
    hour = 3600 * 10**9
    data = MAGIC + create(0, 8, 8, 0) + fill(0, hour) + fill(0, 2 * hour) + fill(0, hour) + fill(0, 3 * hour)
    assert replay(data, DisplayWorker("replay-bounds"), realtime=True) == 5
    assert slept and max(slept) <= MAX_REPLAY_GAP
    assert sum(slept) <= 3 * MAX_REPLAY_GAP  # three forward gaps, each capped; the backward one is none
