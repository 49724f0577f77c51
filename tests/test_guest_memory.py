"""Issue 9 point 1 through the real worker: a hostile guest cannot make the server keep more than
a bounded number of bytes -- sources cropped to what a draw reads, a budget on what drawables keep
(tree + every client's pipe), a canvas budget per device. Memory is measured (the worker's exact
count of retained bytes, canvas bytes), never time."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np
import pytest

from spiceserver.proto.channel import ChannelConnection
from spiceserver.proto.enums import BitmapFlags, BitmapFmt, ChannelType, DisplayCap, ImageType, SurfaceFmt
from spiceserver.proto.link import caps_to_words
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import CLIENT, Rect
from spiceserver.qxl import layout as L
from spiceserver.qxl.device import QXLDevice, QXLDeviceConfig
from spiceserver.qxl.guest import GuestDriver
from spiceserver.qxl.layout import CmdType, Interrupt, QXLBitmapFlags
from spiceserver.worker.compression import DisplaySettings
from spiceserver.worker.display_client import DisplayChannelClient
from spiceserver.worker.messages import ClientConnected
from spiceserver.worker.qxl_source import SURFACE_MEMORY_FACTOR, QXLWorkerBackend
from spiceserver.worker.retain import CROP_MIN_SAVING
from spiceserver.worker.worker import DisplayWorker

MiB = 1 << 20


def rect(left: int, top: int, right: int, bottom: int) -> Rect:
    return Rect(top=top, left=left, bottom=bottom, right=right)


class Rig:
    """A QXL device on a worker that was never started (everything runs on the test's thread),
    with one display client whose pipe is never drained (the slowest client there is)."""

    def __init__(self, cfg: QXLDeviceConfig, settings: DisplaySettings | None = None) -> None:
        self.worker = DisplayWorker("hostile", settings=settings)
        backend = QXLWorkerBackend(self.worker)
        self.device = QXLDevice(backend, cfg)
        self.source = backend.attach(self.device)
        self.guest = GuestDriver(self.device)
        self.guest.set_int_mask(0xFFFFFFFF)

    def link_client(self) -> DisplayChannelClient:
        info = ClientConnected(1, ChannelType.DISPLAY, 0, True, (), caps_to_words({DisplayCap.LZ4_COMPRESSION}), 1, "slow")
        dcc = DisplayChannelClient(info, self.worker.surfaces, self.worker.monitors_config, self.worker.settings)
        self.worker.dccs[1] = dcc
        client = ChannelConnection(ChannelType.DISPLAY, CLIENT, mini_header=True)
        client.send(d.DisplayInit(pixmap_cache_id=1, pixmap_cache_size=1 << 20, glz_dictionary_id=1, glz_dictionary_window_size=0))
        dcc.on_data(client.data_to_send())
        return dcc

    def run(self, *phys: int) -> None:
        for p in phys:
            self.guest.submit(p, CmdType.DRAW)
            self.worker.wait_idle()
            self.guest.collect_releases()


def huge_bitmap(guest: GuestDriver, w: int, h: int) -> int:
    """A w x h 32-bit bitmap QXLImage, pixels in one direct block; returns the image's address."""
    data = guest.alloc(w * h * 4, align=4096)
    guest.write(data, (np.arange(w * h, dtype="<u4") * 2654435761).tobytes())
    img = guest.alloc(L.IMAGE_SIZE)
    desc = struct.pack("<QBBII", 0x77, ImageType.BITMAP, 0, w, h)
    bm = struct.pack("<BBIIIQQ", BitmapFmt.BIT32, QXLBitmapFlags.DIRECT | QXLBitmapFlags.TOP_DOWN, w, h, w * 4, 0, data)
    guest.write(img, (desc + bm).ljust(L.IMAGE_SIZE, b"\0"))
    return img


def copy_from(guest: GuestDriver, img: int, src: Rect, dst: Rect) -> int:
    """A DRAW_COPY of ``src`` of the image at ``img`` to ``dst`` (written by hand: the image is
    already in guest memory, used by every draw)."""
    body = d.Copy(src_bitmap=None, src_area=src, rop_descriptor=8, scale_mode=0)
    phys = guest.drawable(body, bbox=dst)
    guest.write(phys + L.DRAWABLE_HEAD.size, struct.pack("<Q", img))
    return phys


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig(QXLDeviceConfig(ram_size=96 * MiB, vram_size=1 * MiB, vgamem_size=4 * MiB))
    r.guest.create_primary(640, 400)
    yield r


def test_eight_1x1_copies_of_one_huge_bitmap_keep_eight_pixels(rig: Rig) -> None:
    """The issue's case at 64 MiB: 8 one-pixel copies of one 4096x4096 bitmap, all still visible
    and all queued for a client that reads nothing. Each keeps its pixel, not the bitmap."""
    dcc = rig.link_client()
    img = huge_bitmap(rig.guest, 4096, 4096)
    rig.run(*(copy_from(rig.guest, img, rect(100 * i, 7, 100 * i + 1, 8), rect(10 * i, 5, 10 * i + 1, 6)) for i in range(8)))
    assert rig.worker.stats["drawables"] == 8 and len(rig.worker.surfaces[0].tree) == 8
    assert len(dcc.by_drawable) == 8  # all still in the client's pipe
    assert rig.worker.retained.bytes < 8 * 1024, rig.worker.retained.bytes  # was 8 x 64 MiB
    assert rig.worker.retained.peak < 8 * 1024
    want = (np.arange(4096 * 4096, dtype="<u4") * 2654435761).reshape(4096, 4096)
    px = rig.worker.snapshot()
    for i in range(8):
        assert px[5, 10 * i] == want[7, 100 * i]
    assert not rig.guest.interrupts() & Interrupt.ERROR


def test_a_scaled_copy_is_cropped_with_a_margin_and_draws_the_same(rig: Rig) -> None:
    """A 64x64 -> 128x128 scaled copy from the middle of a 1024x1024 bitmap: the kept source is the
    area plus a 2-pixel margin, and the canvas equals a draw from the uncropped image."""
    img = huge_bitmap(rig.guest, 1024, 1024)
    rig.run(copy_from(rig.guest, img, rect(500, 500, 564, 564), rect(0, 0, 128, 128)))
    (item,) = rig.worker.surfaces[0].tree.items
    bm = item.op.src_bitmap.bitmap
    assert (bm.x, bm.y) == (68, 68) and item.op.src_area == rect(2, 2, 66, 66)
    assert not item.op.src_bitmap.descriptor.flags & 1  # a cropped image is never cached by id
    assert CROP_MIN_SAVING <= 1024 * 1024 * 4 - 68 * 68 * 4


def test_the_retained_budget_collapses_pipes_and_clears_trees() -> None:
    """Copies that read their whole 1024x1024 source (scaled down to 1 pixel: nothing to crop)
    pass an 8 MiB budget; the worker sheds, and what is kept stays within the budget plus one draw."""
    r = Rig(QXLDeviceConfig(ram_size=40 * MiB, vram_size=1 * MiB, vgamem_size=4 * MiB), DisplaySettings(max_retained_bytes=8 * MiB))
    r.guest.create_primary(640, 400)
    dcc = r.link_client()
    img = huge_bitmap(r.guest, 1024, 1024)  # 4 MiB
    peak_kept = 0
    for i in range(12):
        r.run(copy_from(r.guest, img, rect(0, 0, 1024, 1024), rect(i, 0, i + 1, 1)))
        peak_kept = max(peak_kept, r.worker.retained.bytes)
    assert r.worker.stats["shed"] >= 1
    assert r.worker.retained.peak <= 8 * MiB + 4 * MiB + (64 << 10)  # the budget + the draw that passed it
    assert peak_kept <= 8 * MiB
    assert dcc.stats["collapsed"] >= 1
    assert not r.guest.interrupts() & Interrupt.ERROR


def test_48_surfaces_on_the_same_vram_are_bounded_by_the_device_memory() -> None:
    """48 SURFACE_CREATEs of 2048x2048 all over the same 16 MiB of VRAM: the canvases may take
    SURFACE_MEMORY_FACTOR x (RAM + VRAM) bytes; the rest are guest errors, logged a few times."""
    cfg = QXLDeviceConfig(ram_size=16 * MiB, vram_size=16 * MiB, vgamem_size=4 * MiB)
    r = Rig(cfg)
    g = r.guest
    budget = SURFACE_MEMORY_FACTOR * (cfg.ram_size + cfg.vram_size)
    assert r.source.canvas_budget == budget
    data = g.alloc(2048 * 2048 * 4, vram=True, align=4096)
    for sid in range(1, 49):
        phys = g.alloc(L.SURFACE_CMD.size)
        g.write(phys, L.SURFACE_CMD.pack(phys, sid, 0, 0, SurfaceFmt.FMT_32_XRGB, 2048, 2048, 2048 * 4, data))
        g.submit(phys, CmdType.SURFACE)
        r.worker.wait_idle()
    offscreen = [s for s in r.worker.surfaces.values() if not s.primary]
    canvas = sum(s.canvas.pixels.nbytes for s in offscreen)
    assert canvas <= budget and len(offscreen) == budget // (16 * MiB)  # 4 of 48
    assert r.device.errors == 48 - len(offscreen)
    assert g.interrupts() & Interrupt.ERROR


def bitmap_image(w: int, h: int, fmt: int, bpp_bits: int, *, top_down: bool, seed: int) -> d.Image:
    stride = (w * bpp_bits + 7) // 8
    data = (np.arange(stride * h, dtype=np.uint64) * (2654435761 + seed) >> 7).astype(np.uint8).tobytes()
    return d.Image(
        descriptor=d.ImageDescriptor(id=seed, type=ImageType.BITMAP, flags=0, width=w, height=h),
        bitmap=d.BitmapData(format=fmt, flags=BitmapFlags.TOP_DOWN if top_down else 0, x=w, y=h, stride=stride, palette=None, data=data),
    )


@pytest.mark.parametrize("scale_mode", [0, 1])
@pytest.mark.parametrize("top_down", [True, False])
def test_cropped_sources_render_exactly_as_the_whole_images(scale_mode: int, top_down: bool) -> None:
    """Plain, scaled, and masked copies out of 1024x1024 bitmaps: the cropped draw renders the
    same pixels as the draw it came from, bottom-up bitmaps and 1-bit masks included."""
    from spiceserver.canvas.draw import render_op
    from spiceserver.canvas.images import NullResolver
    from spiceserver.canvas.surface import Canvas
    from spiceserver.worker.retain import crop_sources

    src = bitmap_image(1024, 1024, BitmapFmt.BIT32, 32, top_down=top_down, seed=3)
    mask = d.QMask(flags=0, pos=d.Point(x=3, y=500), bitmap=bitmap_image(1024, 1024, BitmapFmt.BIT1_LE, 1, top_down=top_down, seed=5))
    cases = [
        (rect(500, 500, 564, 564), rect(10, 10, 74, 74), d.QMask()),  # plain
        (rect(500, 500, 564, 564), rect(0, 0, 150, 110), d.QMask()),  # scaled up
        (rect(0, 300, 1024, 700), rect(0, 0, 100, 40), d.QMask()),  # scaled down
        (rect(500, 500, 564, 564), rect(10, 10, 74, 74), mask),  # masked
    ]
    for area, box, m in cases:
        op = d.Copy(src_bitmap=src, src_area=area, rop_descriptor=8, scale_mode=scale_mode, mask=m)
        cropped = crop_sources(op, box)
        assert cropped.src_bitmap.bitmap.y < 1024  # it was cut
        if m.bitmap is not None:
            assert cropped.mask.bitmap.bitmap.y == box.bottom - box.top
        base = d.DisplayBase(surface_id=0, box=box, clip=d.Clip())
        a, b = Canvas(160, 120), Canvas(160, 120)
        render_op(a, base, op, NullResolver())
        render_op(b, base, cropped, NullResolver())
        assert np.array_equal(a.pixels, b.pixels), (area, box)


def test_the_retained_budget_is_configured_and_validated() -> None:
    from spiceserver.config import ServerConfig
    from spiceserver.errors import ConfigError

    cfg = ServerConfig(port=0, max_retained_draw_bytes=32 * MiB)
    assert DisplaySettings.from_config(cfg).max_retained_bytes == 32 * MiB
    assert DisplayWorker("w", settings=DisplaySettings.from_config(cfg)).retained.budget == 32 * MiB
    with pytest.raises(ConfigError, match="max_retained_draw_bytes"):
        ServerConfig(port=0, max_retained_draw_bytes=1000)


def test_cacheable_images_are_cropped_only_when_huge() -> None:
    """A wallpaper band the guest lets clients cache stays whole (its sub-area copies stay cache
    hits); a cacheable image of CROP_CACHEABLE_MIN bytes or more is cut like any other."""
    from spiceserver.worker.retain import CROP_CACHEABLE_MIN, crop_sources

    def copy(img: d.Image) -> d.Copy:
        return d.Copy(src_bitmap=img, src_area=rect(10, 10, 20, 20), rop_descriptor=8, scale_mode=1, mask=d.QMask())

    band = bitmap_image(640, 64, BitmapFmt.BIT32, 32, top_down=True, seed=1)
    band = d.Image(descriptor=d.ImageDescriptor(id=9, type=ImageType.BITMAP, flags=1, width=640, height=64), bitmap=band.bitmap)
    assert crop_sources(copy(band), rect(0, 0, 10, 10)).src_bitmap is band
    huge = bitmap_image(2048, 2048, BitmapFmt.BIT32, 32, top_down=True, seed=2)
    assert len(huge.bitmap.data) >= CROP_CACHEABLE_MIN  # type: ignore[union-attr]
    huge = d.Image(descriptor=d.ImageDescriptor(id=10, type=ImageType.BITMAP, flags=1, width=2048, height=2048), bitmap=huge.bitmap)
    cut = crop_sources(copy(huge), rect(0, 0, 10, 10)).src_bitmap
    assert (cut.bitmap.x, cut.bitmap.y) == (10, 10) and not cut.descriptor.flags & 1
