"""Drive every path by which the server hands pixels to a codec kernel, after the warm-up, and report
the kernel specializations that appeared meanwhile (run by ``test_no_late_compile.py`` in a fresh
interpreter, so that no earlier test has added specializations of its own).

Prints one JSON object: ``{"warmup": {kernel: n}, "new": {kernel: [signature, ...]}, "paths": n,
"seen": [image kinds]}`` (``encoder:quic``... from the encoders' stats, ``wire:QUIC``... as the test
client received them, so the test can check that every codec was really reached).

The paths: :class:`ImageEncoder` on every bitmap format, both orientations, packed and padded rows,
photo-like and flat pixels, in every compression mode; and through a running server with the test
client: framebuffer frames (a late client's picture, full frames, a dirty region), and a QXL guest
drawing bitmaps of every format top-down and bottom-up on primaries of each surface format and on
off-screen surfaces of every format (a late client gets a picture of each: the surface readback).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from typing import Any

import numpy as np

from spiceserver import _jit
from spiceserver.canvas.surface import PixFmt
from spiceserver.codecs import warmup
from spiceserver.codecs.glz import GlzDictionary
from spiceserver.proto.enums import (
    BitmapFlags,
    BitmapFmt,
    BrushType,
    ClipType,
    ImageCompression,
    ImageType,
    StringFlags,
    SurfaceFmt,
)
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Point, Rect
from spiceserver.qxl import Interrupt
from spiceserver.qxl.guest import GuestDriver
from spiceserver.qxl.layout import CmdType
from spiceserver.worker.compression import ClientCompression
from spiceserver.worker.drawable import images_of
from spiceserver.worker.image_encoder import ImageEncoder, PixmapCache
from spiceserver.worker.picture import picture_image
from tests.conftest import start_server
from tests.support.client import connect
from tests.support.display import DisplayState, link_display, pump_until

_BITS = {
    BitmapFmt.BIT1_LE: 1, BitmapFmt.BIT1_BE: 1, BitmapFmt.BIT4_LE: 4, BitmapFmt.BIT4_BE: 4, BitmapFmt.BIT8: 8,
    BitmapFmt.BIT16: 16, BitmapFmt.BIT24: 24, BitmapFmt.BIT32: 32, BitmapFmt.RGBA: 32, BitmapFmt.BIT8_A: 8,
}  # fmt: skip
_PALETTED = (BitmapFmt.BIT1_LE, BitmapFmt.BIT1_BE, BitmapFmt.BIT4_LE, BitmapFmt.BIT4_BE, BitmapFmt.BIT8)
#: (image_compression, jpeg_wan_compression, zlib_glz_wan_compression): every codec the encoder has
MODES = (
    ("auto_glz", "never", "never"),
    ("auto_lz", "never", "never"),
    ("quic", "never", "never"),
    ("lz", "never", "never"),
    ("glz", "never", "always"),
    ("lz4", "never", "never"),
    ("auto_glz", "always", "always"),
)
#: off-screen surfaces a late client reads back through the server (A8 and A1 pictures go as BIT8_A,
#: which the test client's canvas does not take as LZ: :func:`encoder_paths` covers those)
_SURFACE_FORMATS = (SurfaceFmt.FMT_32_XRGB, SurfaceFmt.FMT_32_ARGB, SurfaceFmt.FMT_16_555, SurfaceFmt.FMT_16_565)
_rng = np.random.default_rng(7)
_next_id = itertools.count(1)


def _bytes(fmt: int, w: int, h: int, stride: int, content: str) -> bytes:
    """Rows of a bitmap: ``photo`` (smooth ramps with a little noise: high graduality, so the auto
    modes pick Quic or JPEG), ``noise`` (random bytes) or ``flat`` (long runs: LZ / GLZ)."""
    if content == "noise":
        return _rng.integers(0, 256, stride * h, dtype=np.uint8).tobytes()
    if content == "flat":
        return (np.arange(stride * h) // 97 % 7).astype(np.uint8).tobytes()
    y, x = np.mgrid[0:h, 0:stride]
    if fmt == BitmapFmt.BIT16:  # x1r5g5b5 ramps
        p = (x // 2 + y) % 32
        v = (p | (p << 5) | ((y % 32) << 10)).astype("<u2")
        return np.ascontiguousarray(v.view(np.uint8)[:, :stride]).tobytes()
    bpp = max(1, _BITS[BitmapFmt(fmt)] // 8)
    ramp = (x // bpp) * 3 + y * 2 + (x % bpp) * 50 + _rng.integers(0, 3, (h, stride))
    return (ramp % 256).astype(np.uint8).tobytes()


def bitmap(fmt: int, w: int, h: int, *, content: str, top_down: bool, pad: int = 0) -> d.Image:
    """A bitmap image as a guest or a host makes one (bytes of ``stride * h``, palette where needed)."""
    stride = (w * _BITS[BitmapFmt(fmt)] + 7) // 8 + pad
    pal = None
    if fmt in _PALETTED:
        n = {1: 2, 4: 16, 8: 256}[_BITS[BitmapFmt(fmt)]]
        pal = d.Palette(unique=next(_next_id), ents=tuple(int(x) for x in _rng.integers(0, 1 << 24, n)))
    return d.Image(
        descriptor=d.ImageDescriptor(id=next(_next_id), type=ImageType.BITMAP, flags=1, width=w, height=h),
        bitmap=d.BitmapData(
            format=fmt, flags=BitmapFlags.TOP_DOWN if top_down else 0, x=w, y=h, stride=stride, palette=pal,
            data=_bytes(fmt, w, h, stride, content),
        ),
    )  # fmt: skip


def all_bitmaps(w: int, h: int, formats: tuple[int, ...] = tuple(_BITS)) -> list[d.Image]:
    return [
        bitmap(fmt, w, h, content=content, top_down=td, pad=pad)
        for fmt in formats
        for content, td, pad in itertools.product(("photo", "noise", "flat"), (True, False), (0, 4))
    ]


def photo_frame(w: int, h: int) -> np.ndarray:
    """A photo-like (h, w) uint32 frame: smooth colour ramps with a little noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.uint32)
    noise = _rng.integers(0, 3, (h, w), dtype=np.uint32)
    return (((x + noise) % 256) << 16) | (((y * 2 + noise) % 256) << 8) | ((x + y) % 256)


def _canvas(pixfmt: PixFmt, w: int, h: int, *, photo: bool) -> np.ndarray:
    """Canvas pixels of ``pixfmt`` as the worker's surfaces hold them (what a picture reads back)."""
    dtype = {PixFmt.A1: np.uint8, PixFmt.A8: np.uint8, PixFmt.X1R5G5B5: np.uint16, PixFmt.R5G6B5: np.uint16}.get(pixfmt, np.uint32)
    top = 2 if pixfmt == PixFmt.A1 else np.iinfo(dtype).max
    if photo:
        y, x = np.mgrid[0:h, 0:w]
        return ((x + y + _rng.integers(0, 2, (h, w))) % (top + 1)).astype(dtype)
    return (np.arange(h * w).reshape(h, w) // 97 % 2 * (top - 1)).astype(dtype)


#: image types seen: ImageEncoder stats keys, and the wire image types the test client received
SEEN: set[str] = set()


def _note_images(state: DisplayState) -> None:
    for m in state.messages:
        data = getattr(m, "data", None)
        if data is not None and not isinstance(data, bytes):
            SEEN.update(f"wire:{ImageType(img.descriptor.type).name}" for img in images_of(data))


def encoder_paths() -> int:
    """Every format x orientation x stride x content through ImageEncoder, in every policy, and the
    picture of a canvas of every format (the surface readback)."""
    n = 0
    for pref in (
        ImageCompression.AUTO_GLZ, ImageCompression.AUTO_LZ, ImageCompression.QUIC, ImageCompression.LZ,
        ImageCompression.GLZ, ImageCompression.LZ4, ImageCompression.OFF,
    ):  # fmt: skip
        for jpeg, window in ((False, 1 << 20), (True, 1 << 20), (False, 0)):
            policy = ClientCompression(preferred=pref, lz4_cap=True, glz_window=window, jpeg=jpeg, zlib_glz=jpeg)
            enc = ImageEncoder(policy=policy, cache=PixmapCache(1 << 20), glz=GlzDictionary(1 << 20) if window else None)
            for img in all_bitmaps(37, 23):
                enc.encode(img, lossy_ok=jpeg)
                n += 1
            for pixfmt, photo in itertools.product(PixFmt, (True, False)):
                enc.encode(picture_image(_canvas(pixfmt, 37, 23, photo=photo), pixfmt), lossy_ok=True)
                n += 1
            SEEN.update(f"encoder:{k}" for k, v in enc.stats.items() if v)
    return n


def _solid(color: int) -> d.Brush:
    return d.Brush(type=BrushType.SOLID, color=color)


async def _until_marker(ch: Any, state: DisplayState, surface_id: int, color: int) -> None:
    """Everything sent before the marker (a solid area in the top-left corner) was encoded and received."""
    await pump_until(
        ch, state, lambda st: surface_id in st.surfaces and int(st.surfaces[surface_id].pixels[0, 0]) & 0xFFFFFF == color,
        timeout=60.0,
    )


async def framebuffer_paths(mode: tuple[str, str, str]) -> int:
    """Frames through FramebufferDisplay.update: a late client's picture, full frames, a dirty region."""
    compression, jpeg, zlib = mode
    w, h = 160, 96
    r = await start_server(image_compression=compression, jpeg_wan_compression=jpeg, zlib_glz_wan_compression=zlib)
    try:
        fb = r.server.add_framebuffer_display(w, h)
        fb.update(photo_frame(w, h))
        session = await connect(r.ep)  # kept: its main channel holds the session open
        ch, state = await link_display(session)
        await pump_until(ch, state, lambda st: st.marks == 1, timeout=60.0)
        fb.update(_rng.integers(0, 1 << 24, (h, w), dtype=np.uint32))  # noise, as uint32
        fb.update(photo_frame(w, h))
        bgrx = np.zeros((h, w, 4), np.uint8)
        bgrx[:, :, :3] = (np.arange(w)[None, :, None] // 16 * 40) % 256  # flat bands, as (h, w, 4) bytes
        fb.update(bgrx)
        frame = bgrx.view("<u4")[:, :, 0].copy()
        frame[10:50, 20:100] = photo_frame(80, 40)
        fb.update(frame, dirty=[(20, 10, 100, 50)])
        marker = 0x123456
        frame[0:8, 0:8] = marker
        fb.update(frame, dirty=[(0, 0, 8, 8)])
        await _until_marker(ch, state, 0, marker)
        _note_images(state)
        return 7
    finally:
        await r.server.close()


def glyph_runs() -> list[tuple[d.Text, Rect, d.Clip | None]]:
    """DRAW_TEXT bodies of A1, A4 and A8 glyphs (random coverage), without and with clip rects."""
    out: list[tuple[d.Text, Rect, d.Clip | None]] = []
    clip = d.Clip(type=ClipType.RECTS, rects=d.ClipRects(rects=(Rect(top=0, left=0, bottom=20, right=30),)))
    for flag, cls, bpp in (
        (StringFlags.RASTER_A1, d.RasterGlyphA1, 1),
        (StringFlags.RASTER_A4, d.RasterGlyphA4, 4),
        (StringFlags.RASTER_A8, d.RasterGlyphA8, 8),
    ):
        glyphs = tuple(
            cls(render_pos=Point(x=10 + 8 * i, y=20), glyph_origin=Point(x=0, y=-9), width=7, height=9,
                data=_rng.integers(0, 256, 9 * ((7 * bpp + 7) // 8), dtype=np.uint8).tobytes())
            for i in range(4)
        )  # fmt: skip
        text = d.Text(
            str=d.String(flags=flag, glyphs=glyphs), back_area=Rect(top=0, left=0, bottom=0, right=0),
            fore_brush=_solid(0x336699), back_brush=d.Brush(type=BrushType.NONE), fore_mode=8, back_mode=8,
        )  # fmt: skip
        bbox = Rect(top=11, left=10, bottom=20, right=10 + 8 * 4)
        out += [(text, bbox, None), (text, bbox, clip)]
    return out


async def qxl_paths(mode: tuple[str, str, str], primary_fmt: int) -> int:
    """A guest drawing bitmaps of every format, both orientations, on a primary of ``primary_fmt``
    and on off-screen surfaces of every format; a late client reads every surface back."""
    compression, jpeg, zlib = mode
    w, h = 128, 96
    r = await start_server(image_compression=compression, jpeg_wan_compression=jpeg, zlib_glz_wan_compression=zlib)
    n = 0
    try:
        guest = GuestDriver(r.server.add_qxl_device())
        bpp = 2 if primary_fmt in (SurfaceFmt.FMT_16_555, SurfaceFmt.FMT_16_565) else 4
        guest.create_primary(w, h, stride=w * bpp, format=primary_fmt)

        def draw(images: list[d.Image], surface_id: int = 0) -> None:
            for img in images:
                bw, bh = img.descriptor.width, img.descriptor.height
                body = d.Copy(src_bitmap=img, src_area=Rect(top=0, left=0, bottom=bh, right=bw), rop_descriptor=8, scale_mode=1, mask=d.QMask())
                guest.submit(guest.drawable(body, bbox=Rect(top=4, left=4, bottom=4 + bh, right=4 + bw), surface_id=surface_id), CmdType.DRAW)
                r.server.wait_idle()
                guest.collect_releases()

        # the picture a late client gets: the primary, and off-screen surfaces of every format
        # (one of them bottom-up), each with photo-like content
        draw([bitmap(BitmapFmt.BIT32, 64, 48, content="photo", top_down=True)])
        for sid, fmt in enumerate(_SURFACE_FORMATS, start=1):
            row = 40 * (2 if fmt in (SurfaceFmt.FMT_16_555, SurfaceFmt.FMT_16_565) else 4)
            phys, _ = guest.surface_create(sid, 40, 30, format=fmt, stride=-row if sid == 1 else row)
            guest.submit(phys, CmdType.SURFACE)
            draw([bitmap(BitmapFmt.BIT32, 32, 20, content="photo", top_down=False)], surface_id=sid)
        r.server.wait_idle()
        session = await connect(r.ep)  # kept: its main channel holds the session open
        ch, state = await link_display(session)
        await pump_until(ch, state, lambda st: st.marks == 1, timeout=60.0)
        n += 1 + len(_SURFACE_FORMATS)
        # live draws: every bitmap kind
        kinds = tuple(f for f in _BITS if f != BitmapFmt.BIT8_A and (bpp == 4 or f not in _PALETTED))
        images = all_bitmaps(40, 30, kinds)  # (the test client draws no palette image on a 16-bit canvas)
        draw(images)
        n += len(images)
        # glyph runs of every depth (the canvas's DRAW_TEXT kernel), unclipped and clipped
        for text, bbox, clip in glyph_runs():
            guest.submit(guest.drawable(text, bbox=bbox, clip=clip), CmdType.DRAW)
            r.server.wait_idle()
            guest.collect_releases()
            n += 1
        marker = 0x654321
        fill = d.Fill(brush=_solid(marker), rop_descriptor=8, mask=d.QMask())
        guest.submit(guest.drawable(fill, bbox=Rect(top=0, left=0, bottom=2, right=2)), CmdType.DRAW)
        if primary_fmt in (SurfaceFmt.FMT_32_XRGB, SurfaceFmt.FMT_32_ARGB):
            await _until_marker(ch, state, 0, marker)
        else:  # a 16-bit canvas does not hold 0x654321: wait for the marker as that canvas stores it
            r.server.wait_idle()
            want = int(r.server.display_snapshot()[0, 0])
            await pump_until(ch, state, lambda st: int(st.surfaces[0].pixels[0, 0]) == want and st.surfaces[0].pixels[0, 0] != 0, timeout=60.0)
        _note_images(state)
        if guest.interrupts() & Interrupt.ERROR:
            raise AssertionError(f"the guest's commands were refused ({mode}, primary {primary_fmt})")
        return n
    finally:
        await r.server.close()


async def server_paths() -> int:
    n = 0
    for mode in MODES:
        n += await framebuffer_paths(mode)
        for fmt in (SurfaceFmt.FMT_32_XRGB, SurfaceFmt.FMT_32_ARGB, SurfaceFmt.FMT_16_555, SurfaceFmt.FMT_16_565):
            n += await qxl_paths(mode, fmt)
    return n


def main() -> int:
    if not _jit.HAVE_NUMBA:
        print(json.dumps({"skip": "numba is not installed"}))
        return 0
    assert warmup.wait(600), "codec warm-up failed"
    kernels = _jit.kernels()
    before = {name: len(k.signatures) for name, k in kernels.items()}
    paths = encoder_paths()
    paths += asyncio.run(server_paths())
    new = {
        name: [str(sig) for sig in k.signatures[before[name] :]]
        for name, k in kernels.items()
        if len(k.signatures) != before[name]
    }
    print(json.dumps({"warmup": before, "new": new, "paths": paths, "seen": sorted(SEEN)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
