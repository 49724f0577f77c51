"""A guest driver writing real QXL commands into the emulated device; the worker turns them into the
server's picture and a client's picture, which must agree pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest

from spiceserver.proto.enums import BitmapFlags, BitmapFmt, BrushType, ClipType, ImageType, SurfaceFmt
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Point, Rect
from spiceserver.qxl import Interrupt
from spiceserver.qxl.guest import GuestDriver
from tests.conftest import start_server
from tests.support.client import connect
from tests.support.display import link_display, pump_until


def solid(color: int) -> d.Brush:
    return d.Brush(type=BrushType.SOLID, color=color)


def bitmap(px: np.ndarray, image_id: int = 0, flags: int = 0) -> d.Image:
    h, w = px.shape
    return d.Image(
        descriptor=d.ImageDescriptor(id=image_id, type=ImageType.BITMAP, flags=flags, width=w, height=h),
        bitmap=d.BitmapData(format=BitmapFmt.BIT32, flags=BitmapFlags.TOP_DOWN, x=w, y=h, stride=w * 4, palette=None, data=px.astype("<u4").tobytes()),
    )


def no_clip() -> d.Clip:
    return d.Clip(type=ClipType.NONE)


async def test_guest_draws_reach_server_and_client_canvas() -> None:
    r = await start_server()
    device = r.server.add_qxl_device()
    guest = GuestDriver(device)
    try:
        guest.create_primary(320, 200)
        # a fill, a bitmap copy (cacheable), a clipped fill, copy_bits, an offscreen surface drawn back
        ops: list[tuple[object, Rect, d.Clip | None]] = [
            (d.Fill(brush=solid(0x203040), rop_descriptor=8, mask=d.QMask()), Rect(top=0, left=0, bottom=200, right=320), None),
        ]
        photo = (np.arange(64 * 48, dtype=np.uint32) * 2654435761 % (1 << 24)).reshape(48, 64)
        ops.append((d.Copy(src_bitmap=bitmap(photo, 0x1234, flags=1), src_area=Rect(top=0, left=0, bottom=48, right=64), rop_descriptor=8, scale_mode=1, mask=d.QMask()), Rect(top=10, left=10, bottom=58, right=74), None))
        clip = d.Clip(type=ClipType.RECTS, rects=d.ClipRects(rects=(Rect(top=100, left=100, bottom=120, right=300), Rect(top=150, left=0, bottom=160, right=50))))
        ops.append((d.Fill(brush=solid(0xFF8800), rop_descriptor=8, mask=d.QMask()), Rect(top=90, left=0, bottom=170, right=320), clip))
        for body, box, cl in ops:
            guest.submit(guest.drawable(body, bbox=box, clip=cl), 1)
        from spiceserver.qxl.commands import CopyBits

        guest.submit(guest.drawable(CopyBits(src_pos=Point(x=10, y=10)), bbox=Rect(top=120, left=200, bottom=168, right=264)), 1)
        r.server.wait_idle()
        server_px = r.server.display_snapshot()
        want = np.full((200, 320), 0x203040, dtype=np.uint32)
        want[10:58, 10:74] = photo
        want[100:120, 100:300] = 0xFF8800
        want[150:160, 0:50] = 0xFF8800
        want[120:168, 200:264] = want[10:58, 10:74]
        assert np.array_equal(server_px, want)
        # a client linking now sees the same picture
        s = await connect(r.ep)
        ch, state = await link_display(s)
        await pump_until(ch, state, lambda st: st.marks == 1)
        assert np.array_equal(state.surfaces[0].pixels, want)
        # live: a new draw arrives on the stream
        guest.submit(guest.drawable(d.Fill(brush=solid(0x00FF00), rop_descriptor=8, mask=d.QMask()), bbox=Rect(top=0, left=0, bottom=5, right=5)), 1)
        want[0:5, 0:5] = 0x00FF00
        await pump_until(ch, state, lambda st: np.array_equal(st.surfaces[0].pixels, want))
        # every command came back to the guest
        released = guest.collect_releases()
        assert len(released) == 5  # three draws, the copy_bits and the live fill
        assert not guest.interrupts() & Interrupt.ERROR
    finally:
        await r.server.close()


async def test_update_area_writes_guest_memory() -> None:
    from spiceserver.qxl import IOPort

    r = await start_server()
    device = r.server.add_qxl_device()
    guest = GuestDriver(device)
    try:
        mem = guest.create_primary(64, 32)
        guest.submit(guest.drawable(d.Fill(brush=solid(0xABCDEF), rop_descriptor=8, mask=d.QMask()), bbox=Rect(top=4, left=4, bottom=8, right=8)), 1)
        guest.update_area(0, Rect(top=0, left=0, bottom=32, right=64))
        raw = np.frombuffer(guest.read(mem, 64 * 32 * 4), dtype="<u4").reshape(32, 64)
        assert (raw[4:8, 4:8] == 0xABCDEF).all() and raw[0, 0] == 0
        assert IOPort.UPDATE_AREA == 2
    finally:
        await r.server.close()


async def test_hostile_command_gets_error_interrupt_and_server_keeps_going() -> None:
    r = await start_server()
    irqs: list[bool] = []
    device = r.server.add_qxl_device(irq=irqs.append)
    guest = GuestDriver(device)
    try:
        guest.create_primary(64, 64)
        guest.set_int_mask(0xFFFFFFFF)
        # a draw whose bbox leaves the surface, and a draw on a surface that does not exist
        guest.submit(guest.drawable(d.Fill(brush=solid(1), rop_descriptor=8, mask=d.QMask()), bbox=Rect(top=0, left=0, bottom=100, right=10)), 1)
        guest.submit(guest.drawable(d.Fill(brush=solid(1), rop_descriptor=8, mask=d.QMask()), bbox=Rect(top=0, left=0, bottom=1, right=1), surface_id=5), 1)
        # a pointer to nowhere as a command
        guest.submit(0xDEAD_BEEF_0000, 1)
        guest.submit(guest.drawable(d.Fill(brush=solid(0x777777), rop_descriptor=8, mask=d.QMask()), bbox=Rect(top=0, left=0, bottom=64, right=64)), 1)
        r.server.wait_idle()
        assert guest.interrupts() & Interrupt.ERROR
        assert True in irqs
        assert (r.server.display_snapshot() == 0x777777).all()  # the good command after them was drawn
    finally:
        await r.server.close()


async def test_palette_bitmaps_use_the_palette_cache() -> None:
    from spiceserver.proto.enums import BitmapFlags as BF
    from spiceserver.worker.drawable import images_of

    r = await start_server()
    device = r.server.add_qxl_device()
    guest = GuestDriver(device)
    try:
        guest.create_primary(64, 32)
        s = await connect(r.ep)
        ch, state = await link_display(s)
        await pump_until(ch, state, lambda st: st.marks == 1)
        ents = tuple((i * 0x010203) & 0xFFFFFF for i in range(16))
        idx = (np.arange(16 * 8) % 16).astype(np.uint8).reshape(8, 16)
        img = d.Image(
            descriptor=d.ImageDescriptor(id=0, type=ImageType.BITMAP, flags=0, width=16, height=8),
            bitmap=d.BitmapData(format=BitmapFmt.BIT8, flags=BF.TOP_DOWN, x=16, y=8, stride=16, palette=d.Palette(unique=77, ents=ents), data=idx.tobytes()),
        )
        want = np.zeros((32, 64), dtype=np.uint32)
        for left in (0, 20, 40):
            body = d.Copy(src_bitmap=img, src_area=Rect(top=0, left=0, bottom=8, right=16), rop_descriptor=8, scale_mode=1, mask=d.QMask())
            guest.submit(guest.drawable(body, bbox=Rect(top=4, left=left, bottom=12, right=left + 16)), 1)
            want[4:12, left : left + 16] = np.array(ents, dtype=np.uint32)[idx]
        await pump_until(ch, state, lambda st: np.array_equal(st.surfaces[0].pixels & 0xFFFFFF, want))
        images = [i for m in state.messages if isinstance(m, d.DrawCopy) for i in images_of(m.data)]
        # palette images go LZ_PLT-compressed by default, raw BITMAP otherwise: both name palettes
        flags = [(i.lz_plt or i.bitmap).flags & (BF.PAL_CACHE_ME | BF.PAL_FROM_CACHE) for i in images if i.lz_plt is not None or (i.bitmap is not None and i.bitmap.format == BitmapFmt.BIT8)]  # type: ignore[union-attr]
        assert flags == [BF.PAL_CACHE_ME, BF.PAL_FROM_CACHE, BF.PAL_FROM_CACHE]
    finally:
        await r.server.close()


async def test_draw_the_canvas_refuses_is_rejected_not_sent() -> None:
    """A text draw with no glyphs would crash spice-gtk: the guest gets an error, clients get nothing."""
    from spiceserver.proto.enums import StringFlags

    r = await start_server()
    device = r.server.add_qxl_device()
    guest = GuestDriver(device)
    try:
        guest.create_primary(64, 32)
        text = d.Text(
            str=d.String(flags=StringFlags.RASTER_A1, glyphs=()),
            back_area=Rect(top=0, left=0, bottom=0, right=0),
            fore_brush=solid(0xFFFFFF), back_brush=d.Brush(type=BrushType.NONE), fore_mode=8, back_mode=8,
        )
        guest.set_int_mask(0xFFFFFFFF)
        guest.submit(guest.drawable(text, bbox=Rect(top=0, left=0, bottom=10, right=10)), 1)
        r.server.wait_idle()
        assert guest.interrupts() & Interrupt.ERROR
        assert r.server.display_stats()["drawables"] == 0
    finally:
        await r.server.close()


@pytest.mark.parametrize("fmt", [SurfaceFmt.FMT_16_565, SurfaceFmt.FMT_16_555, SurfaceFmt.FMT_32_ARGB])
async def test_late_client_sees_a_non_xrgb_primary(fmt: int) -> None:
    """A client that links after the guest drew gets the current picture in a form the canvas of
    that format takes exactly (16-bit surfaces, ARGB with its alpha)."""
    r = await start_server()
    device = r.server.add_qxl_device()
    guest = GuestDriver(device)
    try:
        bpp = 2 if fmt in (SurfaceFmt.FMT_16_565, SurfaceFmt.FMT_16_555) else 4
        guest.create_primary(64, 40, stride=64 * bpp, format=fmt)
        photo = ((np.arange(24 * 32, dtype=np.uint64) * 2654435761) % (1 << 32)).astype(np.uint32).reshape(24, 32)
        body = d.Copy(src_bitmap=bitmap(photo & 0xFFFFFF), src_area=Rect(top=0, left=0, bottom=24, right=32), rop_descriptor=8, scale_mode=1, mask=d.QMask())
        guest.submit(guest.drawable(d.Fill(brush=solid(0x12345678), rop_descriptor=8, mask=d.QMask()), bbox=Rect(top=0, left=0, bottom=40, right=64)), 1)
        guest.submit(guest.drawable(body, bbox=Rect(top=5, left=7, bottom=29, right=39)), 1)
        r.server.wait_idle()
        server_px = r.server.display_snapshot()
        s = await connect(r.ep)
        ch, state = await link_display(s)
        await pump_until(ch, state, lambda st: st.marks == 1)
        assert state.surfaces[0].pixels.dtype == server_px.dtype
        assert np.array_equal(state.surfaces[0].pixels, server_px)
    finally:
        await r.server.close()
