"""Issue 9 points 1 and 5 at the device: overlapping chunk chains, surfaces past the pixel limit,
monitors configs past the head limit -- all refused as guest errors, and nothing raises into the
host's vCPU thread, whatever the backend does."""

from __future__ import annotations

import logging
import struct
import tracemalloc

import pytest

from spiceserver.proto.enums import BitmapFlags, BitmapFmt, ImageType, SurfaceFmt
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Rect
from spiceserver.qxl import layout as L
from spiceserver.qxl.device import QXLDevice, QXLDeviceConfig
from spiceserver.qxl.errlog import LOG_BURST
from spiceserver.qxl.guest import GuestDriver
from spiceserver.qxl.layout import Interrupt, IOPort
from spiceserver.qxl.parse import MAX_HEAD_COORD
from spiceserver.qxl.reader import MAX_SURFACE_PIXELS
from tests.qxl.conftest import Irq, RecordingBackend, bitmap, rect
from tests.qxl.test_parse_hostile import copy_of, drawable, rejects, src_image_phys

U64 = struct.Struct("<Q")


def test_chunk_chain_whose_data_overlaps_the_next_headers_is_refused(guest: GuestDriver, device: QXLDevice) -> None:
    """Headers 20 bytes apart, each claiming 4 KiB over the next ones: 8 MiB from 40 KB of guest
    memory. Refused at the second chunk; the parse allocates less than 64 KiB on the way."""
    phys = drawable(guest, copy_of(bitmap(4, 3)), chunk_size=16)
    img = src_image_phys(guest, phys)
    n, size = 2048, 4096
    chain = guest.alloc(n * L.DATA_CHUNK.size + size)
    for i in range(n):
        here = chain + i * L.DATA_CHUNK.size
        guest.write(here, L.DATA_CHUNK.pack(size, 0, here + L.DATA_CHUNK.size if i + 1 < n else 0))
    off = L.IMAGE_UNION_OFF
    guest.write(img + off, struct.pack("<BBIII", BitmapFmt.BIT32, BitmapFlags.TOP_DOWN, 1024, n, 4096))  # 1024 x 2048: 8 MiB
    guest.write(img + off + 22, U64.pack(chain))
    guest.write(img + 10, struct.pack("<II", 1024, n))  # descriptor width, height
    tracemalloc.start()
    try:
        rejects(device, phys, "overlaps another chunk")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 10, peak


def test_chunks_next_to_each_other_are_accepted(guest: GuestDriver, device: QXLDevice) -> None:
    from tests.qxl.test_parse_hostile import parse

    img = bitmap(16, 16)
    phys = drawable(guest, copy_of(img, rect(0, 0, 16, 16)), chunk_size=64)  # 16 chunks, allocated back to back
    got = parse(device, phys)
    assert got.body.src_bitmap.bitmap.data == img.bitmap.data  # type: ignore[union-attr]


def big_device(backend: RecordingBackend | None = None, irq: Irq | None = None) -> tuple[QXLDevice, GuestDriver]:
    dev = QXLDevice(backend or RecordingBackend(), QXLDeviceConfig(ram_size=40 << 20, vgamem_size=17 << 20, vram_size=1 << 20), irq=irq)
    if isinstance(dev.backend, RecordingBackend):
        dev.backend.device = dev
    return dev, GuestDriver(dev)


def test_1bpp_primary_past_the_pixel_limit_is_refused_by_the_device(caplog: pytest.LogCaptureFixture) -> None:
    """65536x2048 at 1 bpp fits the 16 MiB framebuffer but not the canvas: the device refuses it
    (one limit, MAX_SURFACE_PIXELS), the backend is never asked, the guest gets ERROR."""
    backend, irq = RecordingBackend(), Irq()
    dev, guest = big_device(backend, irq)
    guest.set_int_mask(0xFFFFFFFF)
    backend.calls.clear()
    assert MAX_SURFACE_PIXELS < 65536 * 2048
    guest.create_primary(65536, 2048, stride=8192, format=SurfaceFmt.FMT_1_A)
    assert "create_primary" not in backend.names()
    assert guest.interrupts() & Interrupt.ERROR and dev.errors == 1 and dev.mode != "native"
    assert "exceeds" in caplog.text and "pixels" in caplog.text


class RaisingBackend(RecordingBackend):
    """A backend whose calls fail: a worker that timed out, or a bug."""

    def update_area(self, surface_id: int, area: Rect, clear_dirty_region: bool, cookie: int | None) -> None:
        raise TimeoutError("worker display0 did not answer within 30 s")

    def create_primary(self, surface: object, cookie: int | None) -> None:
        raise ValueError("surface size out of range")


@pytest.mark.parametrize("async_io", [False, True])
def test_a_failing_backend_never_raises_into_the_vcpu(async_io: bool) -> None:
    backend, irq = RaisingBackend(), Irq()
    dev = QXLDevice(backend, QXLDeviceConfig(ram_size=4 << 20, vram_size=1 << 20, vgamem_size=2 << 20), irq=irq)
    backend.device = dev
    guest = GuestDriver(dev)
    guest.set_int_mask(0xFFFFFFFF)
    guest.create_primary(64, 64, async_io=async_io)  # ValueError inside: no exception here
    assert dev.mode == "undefined"  # no primary was made: not left in native mode
    guest.update_area(0, rect(0, 0, 8, 8), async_io=async_io)  # TimeoutError inside
    assert dev.errors == 2
    pending = guest.interrupts()
    assert pending & Interrupt.ERROR
    if async_io:
        assert pending & Interrupt.IO_CMD  # both async I/Os completed (as failed)
        assert dev.current_async is None
        guest.update_area(0, rect(0, 0, 8, 8), async_io=True)  # so the next one is accepted
        assert dev.errors == 3 and not dev.guest_bug


def test_monitors_config_is_clamped_and_each_head_checked(device: QXLDevice, guest: GuestDriver, backend: RecordingBackend) -> None:
    limit = device.config.max_monitors
    heads = [d.Head(monitor_id=i, surface_id=0, width=64, height=48, x=64 * i, y=0, flags=0) for i in range(1000)]
    guest.monitors_config(heads, 65535)
    (call,) = [c for c in backend.calls if c[0] == "monitors_config"]
    assert len(call[1].heads) == limit and call[1].max_allowed == limit
    backend.calls.clear()
    huge = d.Head(monitor_id=0, surface_id=0, width=0xFFFFFFFF, height=0xFFFFFFFF, x=0, y=0, flags=0)
    guest.monitors_config([huge], 1)
    assert not [c for c in backend.calls if c[0] == "monitors_config"]
    bad_surface = d.Head(monitor_id=0, surface_id=0xFFFF, width=64, height=48, x=0, y=0, flags=0)
    guest.monitors_config([bad_surface], 1)
    assert not [c for c in backend.calls if c[0] == "monitors_config"]
    assert device.errors == 2
    edge = d.Head(monitor_id=0, surface_id=0, width=MAX_HEAD_COORD, height=MAX_HEAD_COORD, x=0, y=0, flags=0)
    guest.monitors_config([edge], 1)
    assert [c for c in backend.calls if c[0] == "monitors_config"]


def test_guest_errors_are_logged_rate_limited(device: QXLDevice, guest: GuestDriver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "spiceserver.qxl")
    for _ in range(500):
        device.io_write(IOPort.MONITORS_CONFIG_ASYNC, 0)  # NULL monitors config: a guest error each time
    assert device.errors == 500
    lines = [r for r in caplog.records if "guest error" in r.getMessage()]
    assert len(lines) == LOG_BURST
    assert not any(r.exc_info for r in caplog.records)


def test_surface_image_of_a_missing_surface_is_a_single_line(caplog: pytest.LogCaptureFixture) -> None:
    """A draw whose source image names a surface that does not exist: a guest error, one log line
    (no traceback), rate-limited -- with the real worker behind the device."""
    from spiceserver.worker.qxl_source import QXLWorkerBackend
    from spiceserver.worker.worker import DisplayWorker

    worker = DisplayWorker("missing-surface")  # never started: runs on this thread
    backend = QXLWorkerBackend(worker)
    dev = QXLDevice(backend, QXLDeviceConfig(ram_size=4 << 20, vram_size=1 << 20, vgamem_size=2 << 20))
    backend.attach(dev)
    guest = GuestDriver(dev)
    guest.create_primary(64, 64)
    caplog.set_level(logging.WARNING)
    img = d.Image(descriptor=d.ImageDescriptor(id=0, type=ImageType.SURFACE, flags=0, width=8, height=8), surface=d.Surface(surface_id=5))
    for _ in range(40):
        guest.submit(guest.drawable(copy_of(img, rect(0, 0, 8, 8)), bbox=rect(0, 0, 8, 8)), 1)
        worker.wait_idle()
        guest.collect_releases()
    assert dev.errors == 40
    assert len([r for r in caplog.records if "surface 5 does not exist" in r.getMessage()]) == LOG_BURST
    assert not any(r.exc_info for r in caplog.records)


def test_rate_limited_log_counts_what_it_leaves_out(caplog: pytest.LogCaptureFixture) -> None:
    from spiceserver.qxl.errlog import RateLimitedLog

    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("t.errlog"), burst=3, window=60.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, "t.errlog")
    assert [rl.warning("e %d", i) for i in range(10)] == [True] * 3 + [False] * 7
    now[0] = 61.0
    assert rl.warning("later")
    assert [r.getMessage() for r in caplog.records] == ["e 0", "e 1", "e 2", "7 similar messages suppressed", "later"]
