"""Decoding SPICE images into pixmaps in the canvas's pixel format.

Counterpart of spice-common ``common/canvas_base.c`` (``canvas_get_image_internal``,
``canvas_get_bits``, ``canvas_get_lz4``, ``canvas_get_palette``, ``canvas_get_bitmap_mask``,
``canvas_get_target_format``) and ``common/pixman_utils.c`` (``spice_bitmap_to_pixman``,
``spice_bitmap_format_to_pixman``, ``spice_bitmap_convert_to_pixman``), as built into spice-gtk
(with ``SW_CANVAS_CACHE``).

How an image becomes pixels, as the client does it:

1. Decode to the image's *original* pixman format: 24/32BIT and LZ4 32BIT -> x8r8g8b8 (the X byte
   is the bitmap's 4th byte, 0 for 24BIT), RGBA -> a8r8g8b8, 16BIT -> x1r5g5b5, 8BIT_A -> a8,
   palette formats -> the canvas's own format (palette entries are taken as canvas pixels), LZ4
   24BIT -> r8g8b8 (represented here directly as x8r8g8b8 with X = 0xff, what converting it gives).
   Bitmaps are bottom-up unless TOP_DOWN; rows are ``stride`` bytes apart.
2. ``HIGH_BITS_SET`` (not for FROM_CACHE*): if the result is x8r8g8b8, OR 0xff000000 into it.
3. ``CACHE_ME`` / ``CACHE_REPLACE_ME``: hand the original to :meth:`ImageResolver.cache_image`.
4. Unless the caller wants the original, convert to the canvas's target format: x8r8g8b8 for 32-bit
   canvases (a8r8g8b8 when the image has alpha), the 16-bit format, a8, a1.

Deviations: 1BIT_LE and 4BIT_LE source bitmaps are decoded here (bit 0 / low nibble first) but
spice-common cannot convert them (``spice_bitmap_to_pixman`` aborts): never send them. Palette
indices beyond the palette read 0 here (undefined memory in the client). QUIC, LZ, GLZ, JPEG and
JPEG_ALPHA raise :class:`~spiceserver.errors.NotSupportedError` for now.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np

from ..codecs.glz import GlzDecoderWindow, decode_glz
from ..codecs.jpeg import decode_jpeg
from ..codecs.lz import LzImageType, decode_lz
from ..codecs.lz4 import decode_lz4
from ..codecs.quic import QuicType, decode_quic
from ..codecs.zlib_glz import decode_zlib_glz
from ..errors import NotSupportedError, ProtocolError
from ..proto.enums import BitmapFlags, BitmapFmt, ImageFlags, ImageType
from ..proto.messages.display import BitmapData, Image, Palette
from .pixman import convert
from .surface import DTYPES, Canvas, PixFmt, Pixmap

__all__ = [
    "ImageResolver",
    "NullResolver",
    "decode_image",
    "decode_bitmap",
    "decode_mask",
    "target_format",
    "touch_image",
    "MAX_IMAGE_PIXELS",
]

#: Largest image decoded (pixels); guards against hostile descriptors.
MAX_IMAGE_PIXELS = 1 << 26

_CODEC_NAMES = {
    ImageType.QUIC: "QUIC",
    ImageType.LZ_PLT: "LZ_PLT",
    ImageType.LZ_RGB: "LZ_RGB",
    ImageType.GLZ_RGB: "GLZ_RGB",
    ImageType.ZLIB_GLZ_RGB: "ZLIB_GLZ_RGB",
    ImageType.JPEG: "JPEG",
    ImageType.JPEG_ALPHA: "JPEG_ALPHA",
}


class ImageResolver(Protocol):
    """What the canvas needs from its owner to resolve images that name other state."""

    def surface(self, surface_id: int) -> Canvas:
        """The canvas of surface ``surface_id`` (SURFACE images, surface masks and patterns)."""
        ...

    def cached_image(self, image_id: int) -> Pixmap:
        """The pixmap cached under ``image_id`` (FROM_CACHE, FROM_CACHE_LOSSLESS)."""
        ...

    def cached_palette(self, palette_id: int) -> Palette:
        """The palette cached under ``palette_id`` (bitmap flag PAL_FROM_CACHE)."""
        ...

    def cache_image(self, image_id: int, pixmap: Pixmap) -> None:
        """Called for images with CACHE_ME or CACHE_REPLACE_ME, with their *original* pixmap."""
        ...

    def cache_palette(self, palette: Palette) -> None:
        """Called for palettes with PAL_CACHE_ME (keyed by ``palette.unique``)."""
        ...

    def glz_window(self) -> GlzDecoderWindow:
        """The client's GLZ decoder window (GLZ_RGB, ZLIB_GLZ_RGB images)."""
        ...


class NullResolver:
    """A resolver with no surfaces and no caches: every lookup is a ProtocolError. Subclass it."""

    def surface(self, surface_id: int) -> Canvas:
        """Raise ProtocolError: there are no surfaces."""
        raise ProtocolError(f"no surface {surface_id}")

    def cached_image(self, image_id: int) -> Pixmap:
        """Raise ProtocolError: nothing is cached."""
        raise ProtocolError(f"image {image_id:#x} is not cached")

    def cached_palette(self, palette_id: int) -> Palette:
        """Raise ProtocolError: nothing is cached."""
        raise ProtocolError(f"palette {palette_id:#x} is not cached")

    def cache_image(self, image_id: int, pixmap: Pixmap) -> None:
        """Do nothing: this resolver keeps no image cache."""
        pass

    def cache_palette(self, palette: Palette) -> None:
        """Do nothing: this resolver keeps no palette cache."""
        pass

    def glz_window(self) -> GlzDecoderWindow:
        """Raise ProtocolError: there is no GLZ window."""
        raise ProtocolError("GLZ image without a GLZ window")


def target_format(canvas_fmt: PixFmt, has_alpha: bool) -> PixFmt:
    """``canvas_get_target_format``: xRGB/ARGB canvases take x8r8g8b8, or a8r8g8b8 for sources
    with alpha; other canvases take their own format."""
    if canvas_fmt in (PixFmt.X8R8G8B8, PixFmt.A8R8G8B8):
        return PixFmt.A8R8G8B8 if has_alpha else PixFmt.X8R8G8B8
    return canvas_fmt


# --- bitmaps ---------------------------------------------------------------------------------

_BITS = {
    BitmapFmt.BIT1_LE: 1,
    BitmapFmt.BIT1_BE: 1,
    BitmapFmt.BIT4_LE: 4,
    BitmapFmt.BIT4_BE: 4,
    BitmapFmt.BIT8: 8,
    BitmapFmt.BIT16: 16,
    BitmapFmt.BIT24: 24,
    BitmapFmt.BIT32: 32,
    BitmapFmt.RGBA: 32,
    BitmapFmt.BIT8_A: 8,
}
_PALETTED = {BitmapFmt.BIT1_LE, BitmapFmt.BIT1_BE, BitmapFmt.BIT4_LE, BitmapFmt.BIT4_BE, BitmapFmt.BIT8}


def _rows(data: bytes, width: int, height: int, stride: int, bits: int, top_down: bool) -> np.ndarray:
    """The (height, row bytes) uint8 rows of a bitmap, top row first."""
    row = (width * bits + 7) // 8
    if width < 0 or height < 0 or width * height > MAX_IMAGE_PIXELS:
        raise ProtocolError(f"bitmap size {width}x{height} out of range")
    if height and (stride < row or len(data) < stride * (height - 1) + row):
        raise ProtocolError(f"bitmap stride {stride} / {len(data)} bytes too small for {width}x{height}")
    if height == 0 or row == 0:
        return np.zeros((height, row), np.uint8)
    buf = np.frombuffer(data, np.uint8, count=stride * (height - 1) + row)
    rows = np.lib.stride_tricks.as_strided(buf, (height, row), (stride, 1))
    return rows if top_down else rows[::-1]


def _palette_lookup(palette: Palette | None, index: np.ndarray, dtype: type[np.unsignedinteger]) -> np.ndarray:
    if palette is None:
        raise ProtocolError("palette bitmap without a palette")
    ents = np.zeros(256, np.uint32)
    n = min(len(palette.ents), 256)
    ents[:n] = np.asarray(palette.ents[:n], np.uint32)
    out: np.ndarray = ents.astype(dtype)[index]
    return out


def decode_bitmap(bitmap: BitmapData, canvas_fmt: PixFmt, palette: Palette | None) -> Pixmap:
    """A BITMAP image in its original pixman format (step 1 of the module docstring).

    Raises:
        ProtocolError: unknown format, short data, a palette format without palette or on a canvas
            whose format spice-common cannot expand palettes to.
    """
    try:
        fmt = BitmapFmt(bitmap.format)
        bits = _BITS[fmt]
    except (ValueError, KeyError):
        raise ProtocolError(f"unknown bitmap format {bitmap.format}") from None
    width, height = bitmap.x, bitmap.y
    rows = _rows(bitmap.data, width, height, bitmap.stride, bits, bool(bitmap.flags & BitmapFlags.TOP_DOWN))
    if fmt in (BitmapFmt.BIT32, BitmapFmt.RGBA):
        px = np.ascontiguousarray(rows).view("<u4")[:, :width].astype(np.uint32, copy=False)  # read-only view when it can be
        return Pixmap(px, PixFmt.A8R8G8B8 if fmt == BitmapFmt.RGBA else PixFmt.X8R8G8B8)
    if fmt == BitmapFmt.BIT24:
        c = rows.reshape(height, width, 3).astype(np.uint32)
        return Pixmap((c[..., 2] << 16) | (c[..., 1] << 8) | c[..., 0], PixFmt.X8R8G8B8)
    if fmt == BitmapFmt.BIT16:
        return Pixmap(np.ascontiguousarray(rows).view("<u2")[:, :width].astype(np.uint16), PixFmt.X1R5G5B5)
    if fmt == BitmapFmt.BIT8_A:
        return Pixmap(np.array(rows[:, :width], np.uint8), PixFmt.A8)
    # palette formats expand to the canvas format; spice-common handles 32-bit and 16_555 canvases
    if canvas_fmt not in (PixFmt.X8R8G8B8, PixFmt.A8R8G8B8, PixFmt.X1R5G5B5):
        raise ProtocolError(f"palette bitmaps cannot be drawn on a {canvas_fmt.name} canvas")
    if fmt == BitmapFmt.BIT8:
        index = rows[:, :width]
    elif fmt in (BitmapFmt.BIT4_BE, BitmapFmt.BIT4_LE):
        hi, lo = rows >> 4, rows & 0x0F
        pair = (hi, lo) if fmt == BitmapFmt.BIT4_BE else (lo, hi)
        index = np.stack(pair, axis=2).reshape(height, -1)[:, :width]
    else:
        order: Literal["big", "little"] = "big" if fmt == BitmapFmt.BIT1_BE else "little"
        index = np.unpackbits(np.asarray(rows, np.uint8), axis=1, bitorder=order)[:, :width]
    return Pixmap(_palette_lookup(palette, index, DTYPES[canvas_fmt]), canvas_fmt)


def _lz4(image: Image) -> Pixmap:
    assert image.lz4 is not None
    width, height = image.descriptor.width, image.descriptor.height
    if width * height > MAX_IMAGE_PIXELS:
        raise ProtocolError(f"LZ4 image size {width}x{height} out of range")
    fmt, top_down, data = decode_lz4(image.lz4.data, width, height)
    raw = np.frombuffer(data, np.uint8)
    if fmt == BitmapFmt.BIT16:
        px = raw.view("<u2").reshape(height, width).astype(np.uint16)
        out = Pixmap(px, PixFmt.X1R5G5B5)
    elif fmt == BitmapFmt.BIT24:
        c = raw.reshape(height, width, 3).astype(np.uint32)
        out = Pixmap(np.uint32(0xFF000000) | (c[..., 2] << 16) | (c[..., 1] << 8) | c[..., 0], PixFmt.X8R8G8B8)
    else:
        px = raw.view("<u4").reshape(height, width).astype(np.uint32)
        out = Pixmap(px, PixFmt.A8R8G8B8 if fmt == BitmapFmt.RGBA else PixFmt.X8R8G8B8)
    if not top_down:
        out.pixels = out.pixels[::-1]
    return out


def _palette_of(bitmap: BitmapData, resolver: ImageResolver) -> Palette | None:
    """``canvas_get_palette``: from the cache, or the bitmap's own (cached if PAL_CACHE_ME)."""
    if bitmap.flags & BitmapFlags.PAL_FROM_CACHE:
        assert bitmap.palette_id is not None
        return resolver.cached_palette(bitmap.palette_id)
    if bitmap.palette is not None and bitmap.flags & BitmapFlags.PAL_CACHE_ME:
        resolver.cache_palette(bitmap.palette)
    return bitmap.palette


def _original(image: Image, canvas_fmt: PixFmt, resolver: ImageResolver) -> Pixmap:
    desc = image.descriptor
    t = desc.type
    if t == ImageType.BITMAP:
        assert image.bitmap is not None
        return decode_bitmap(image.bitmap, canvas_fmt, _palette_of(image.bitmap, resolver))
    if t == ImageType.LZ4:
        return _lz4(image)
    if t in (ImageType.FROM_CACHE, ImageType.FROM_CACHE_LOSSLESS):
        try:
            return resolver.cached_image(desc.id)
        except KeyError:
            raise ProtocolError(f"image {desc.id:#x} is not in the cache") from None
    if t == ImageType.SURFACE:
        assert image.surface is not None
        return _surface(image.surface.surface_id, resolver).pixmap()
    if t in _CODEC_NAMES:
        return _codec(image, canvas_fmt, resolver)
    raise ProtocolError(f"unknown image type {t}")


def _flip(pm: Pixmap, top_down: bool) -> Pixmap:
    if not top_down:
        pm.pixels = np.ascontiguousarray(pm.pixels[::-1])
    return pm


def _check_size(image: Image, width: int, height: int, what: str) -> None:
    desc = image.descriptor
    if (width, height) != (desc.width, desc.height):
        raise ProtocolError(f"{what} image is {width}x{height}, its descriptor says {desc.width}x{desc.height}")


def _lz_pixmap(t: int, px: np.ndarray) -> Pixmap:
    """An LZ/GLZ decoder's output as the client's pixman image (canvas_get_lz / glz)."""
    if t == LzImageType.RGBA:
        return Pixmap(px.astype(np.uint32), PixFmt.A8R8G8B8)
    if t in (LzImageType.RGB32, LzImageType.RGB24, LzImageType.RGB16):
        return Pixmap(px.astype(np.uint32), PixFmt.X8R8G8B8)
    if t == LzImageType.A8:
        return Pixmap(px.astype(np.uint8), PixFmt.A8)
    raise ProtocolError(f"LZ image type {t} cannot be drawn")


def _codec(image: Image, canvas_fmt: PixFmt, resolver: ImageResolver) -> Pixmap:
    """QUIC, LZ_RGB, LZ_PLT, GLZ_RGB, ZLIB_GLZ_RGB, JPEG, JPEG_ALPHA (spice-common canvas_get_*)."""
    t = image.descriptor.type
    if t == ImageType.QUIC:
        assert image.quic is not None
        qtype, w, h, px = decode_quic(image.quic.data, MAX_IMAGE_PIXELS)
        _check_size(image, w, h, "QUIC")
        if qtype == QuicType.RGBA:
            return Pixmap(px.astype(np.uint32), PixFmt.A8R8G8B8)
        if qtype in (QuicType.RGB32, QuicType.RGB24):
            return Pixmap(px.astype(np.uint32), PixFmt.X8R8G8B8)
        if qtype == QuicType.RGB16:
            return Pixmap(px.astype(np.uint16), PixFmt.X1R5G5B5)
        raise ProtocolError(f"QUIC image type {qtype} cannot be drawn")
    if t == ImageType.LZ_RGB:
        assert image.lz_rgb is not None
        lt, w, h, top_down, px = decode_lz(image.lz_rgb.data, max_pixels=MAX_IMAGE_PIXELS)
        _check_size(image, w, h, "LZ_RGB")
        if lt not in (LzImageType.RGB32, LzImageType.RGB24, LzImageType.RGB16, LzImageType.RGBA, LzImageType.A8):
            raise ProtocolError(f"LZ_RGB image with LZ type {lt}")  # (libspice sends A8 bitmaps as LZ_RGB too)
        return _flip(_lz_pixmap(lt, px), top_down)
    if t == ImageType.LZ_PLT:
        plt = image.lz_plt
        assert plt is not None
        if canvas_fmt not in (PixFmt.X8R8G8B8, PixFmt.A8R8G8B8):
            raise ProtocolError(f"LZ_PLT images cannot be drawn on a {canvas_fmt.name} canvas")
        if plt.flags & BitmapFlags.PAL_FROM_CACHE:
            assert plt.palette_id is not None
            palette = resolver.cached_palette(plt.palette_id)
        else:
            assert plt.palette is not None
            palette = plt.palette
            if plt.flags & BitmapFlags.PAL_CACHE_ME:
                resolver.cache_palette(palette)
        lt, w, h, top_down, px = decode_lz(plt.data, palette=np.asarray(palette.ents, np.uint32), max_pixels=MAX_IMAGE_PIXELS)
        _check_size(image, w, h, "LZ_PLT")
        if lt not in (LzImageType.PLT1_LE, LzImageType.PLT1_BE, LzImageType.PLT4_LE, LzImageType.PLT4_BE, LzImageType.PLT8):
            raise ProtocolError(f"LZ_PLT image with LZ type {lt}")
        return _flip(Pixmap(px.astype(np.uint32), PixFmt.X8R8G8B8), top_down)
    if t in (ImageType.GLZ_RGB, ImageType.ZLIB_GLZ_RGB):
        window = resolver.glz_window()
        if t == ImageType.GLZ_RGB:
            assert image.lz_rgb is not None
            g = decode_glz(window, image.lz_rgb.data, max_pixels=MAX_IMAGE_PIXELS)
        else:
            assert image.zlib_glz is not None
            g = decode_zlib_glz(window, image.zlib_glz.data, image.zlib_glz.glz_data_size)
        _check_size(image, g.width, g.height, "GLZ")
        return _flip(_lz_pixmap(g.lz_type, g.pixels), g.top_down)
    if t == ImageType.JPEG:
        assert image.jpeg is not None
        desc = image.descriptor
        return Pixmap(decode_jpeg(image.jpeg.data, desc.width, desc.height), PixFmt.X8R8G8B8)
    if t == ImageType.JPEG_ALPHA:
        ja = image.jpeg_alpha
        assert ja is not None
        desc = image.descriptor
        if ja.jpeg_size > len(ja.data):
            raise ProtocolError("JPEG_ALPHA jpeg_size past its data")
        rgb = decode_jpeg(ja.data[: ja.jpeg_size], desc.width, desc.height)
        lt, w, h, top_down, alpha = decode_lz(ja.data[ja.jpeg_size :], max_pixels=MAX_IMAGE_PIXELS)
        if lt != LzImageType.XXXA or (w, h) != (desc.width, desc.height):
            raise ProtocolError("JPEG_ALPHA alpha stream is not an XXXA image of the same size")
        if not top_down:
            alpha = alpha[::-1]
        return Pixmap(rgb | (alpha.astype(np.uint32) << 24), PixFmt.A8R8G8B8)
    raise NotSupportedError(f"codec {_CODEC_NAMES[ImageType(t)]} decoding not available")


def _surface(surface_id: int, resolver: ImageResolver) -> Canvas:
    try:
        return resolver.surface(surface_id)
    except KeyError:
        raise ProtocolError(f"image names missing surface {surface_id}") from None


def decode_image(image: Image, canvas_fmt: PixFmt, resolver: ImageResolver, *, want_original: bool = False) -> Pixmap:
    """``canvas_get_image``: decode, apply HIGH_BITS_SET, feed the cache, convert to target format.

    Args:
        image: the image (any type; SURFACE gives a view of that surface's pixels).
        canvas_fmt: the pixel format of the canvas it will be drawn on.
        resolver: surfaces and caches.
        want_original: keep the original format (alpha blending does) instead of converting.

    Raises:
        ProtocolError: malformed image or unresolvable reference.
        NotSupportedError: a codec not implemented yet.
    """
    desc = image.descriptor
    cache = bool(desc.flags & (ImageFlags.CACHE_ME | ImageFlags.CACHE_REPLACE_ME))
    from_cache = desc.type in (ImageType.FROM_CACHE, ImageType.FROM_CACHE_LOSSLESS)
    pm = _original(image, canvas_fmt, resolver)
    if desc.type == ImageType.SURFACE:
        return pm
    if desc.flags & ImageFlags.HIGH_BITS_SET and not from_cache and pm.format == PixFmt.X8R8G8B8:
        pm = Pixmap(pm.pixels | np.uint32(0xFF000000), pm.format)
    if cache and not from_cache:
        resolver.cache_image(desc.id, pm)
    if want_original:
        return pm
    return convert(pm, target_format(canvas_fmt, pm.format == PixFmt.A8R8G8B8))


def touch_image(image: Image | None, canvas_fmt: PixFmt, resolver: ImageResolver) -> None:
    """``canvas_touch_image``: an op that draws nothing still decodes images the caches need."""
    if image is None:
        return
    desc = image.descriptor
    pal = False
    if desc.type == ImageType.BITMAP and image.bitmap is not None:
        pal = image.bitmap.palette is not None and bool(image.bitmap.flags & BitmapFlags.PAL_CACHE_ME)
    if (
        desc.flags & (ImageFlags.CACHE_ME | ImageFlags.CACHE_REPLACE_ME)
        or pal
        or desc.type
        in (
            ImageType.GLZ_RGB,
            ImageType.ZLIB_GLZ_RGB,
        )
    ):
        decode_image(image, canvas_fmt, resolver, want_original=True)


def decode_mask(image: Image, invers: bool, resolver: ImageResolver) -> np.ndarray:
    """``canvas_get_mask``: a 1-bit mask image as a bool array (True = draw), INVERS applied.

    Bitmaps must be 1BIT_LE (bit 0 = leftmost pixel) or 1BIT_BE (bit 7 = leftmost), bottom-up
    unless TOP_DOWN. FROM_CACHE masks come from :meth:`ImageResolver.cached_image` (an A1 pixmap);
    a bitmap mask with CACHE_ME is cached as such.

    Raises:
        ProtocolError: another image type or bitmap format (the client aborts on those).
    """
    desc = image.descriptor
    if desc.type == ImageType.BITMAP:
        bm = image.bitmap
        assert bm is not None
        if bm.format not in (BitmapFmt.BIT1_LE, BitmapFmt.BIT1_BE):
            raise ProtocolError(f"mask bitmap format {bm.format} is not 1-bit")
        rows = _rows(bm.data, bm.x, bm.y, bm.stride, 1, bool(bm.flags & BitmapFlags.TOP_DOWN))
        order: Literal["big", "little"] = "big" if bm.format == BitmapFmt.BIT1_BE else "little"
        bits = np.unpackbits(np.asarray(rows, np.uint8), axis=1, bitorder=order)[:, : bm.x].astype(np.uint8)
        if desc.flags & ImageFlags.CACHE_ME:
            resolver.cache_image(desc.id, Pixmap(bits, PixFmt.A1))
    elif desc.type in (ImageType.FROM_CACHE, ImageType.FROM_CACHE_LOSSLESS):
        try:
            cached = resolver.cached_image(desc.id)
        except KeyError:
            raise ProtocolError(f"mask {desc.id:#x} is not in the cache") from None
        if cached.format != PixFmt.A1:
            raise ProtocolError(f"cached mask {desc.id:#x} is not 1-bit")
        bits = cached.pixels
    else:
        raise ProtocolError(f"mask image type {desc.type} is not supported")
    mask: np.ndarray = bits.astype(bool)
    return ~mask if invers else mask
