"""How each image goes to a client: pixmap and palette caches, then the codec libspice would pick.

Counterpart of spice ``server/dcc.cpp`` (``dcc_compress_image``, ``dcc_pixmap_cache_unlocked_add``,
``dcc_palette_cache_palette``), ``server/pixmap-cache.cpp`` and ``image-encoders.cpp``. The server
mirrors each client's pixmap cache exactly -- a pixel budget with least-recently-used eviction --
because spice-gtk blocks on a FROM_CACHE id it does not hold. Evicted ids are sent as INVAL_LIST
*before* the drawable that needed the room.

The codec comes from :func:`spiceserver.worker.compression.choose` (libspice's rules): Quic for
photo-like images, GLZ (the client's shared window dictionary) or LZ otherwise, LZ4 if configured and
the client has the cap, JPEG instead of Quic where lossy images are allowed, ZLIB_GLZ on
low-bandwidth clients; a result that is not smaller than the raw bitmap is sent raw. Lossy images are
never entered into the client's pixmap cache, so a cache hit is always lossless.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

import numpy as np

from ..codecs import warmup
from ..codecs.glz import GlzDictionary, encode_glz
from ..codecs.graduality import Graduality, graduality_level
from ..codecs.jpeg import encode_jpeg
from ..codecs.lz import LzImageType, encode_lz
from ..codecs.lz4 import LZ4_FORMATS, encode_lz4
from ..codecs.quic import encode_quic
from ..codecs.zlib_glz import encode_zlib_glz
from ..proto.enums import BITMAP_FMT_BYTES, BitmapFlags, BitmapFmt, ImageCompression, ImageFlags, ImageType
from ..proto.messages import display as d
from .compression import ClientCompression, choose, needs_graduality

__all__ = ["PixmapCache", "PaletteCache", "ImageEncoder", "QXL_IMAGE_CACHE", "PALETTE_CACHE_SIZE"]

QXL_IMAGE_CACHE = 1  # descriptor flag from the guest: the image may be cached by its id
PALETTE_CACHE_SIZE = 128  # libspice CLIENT_PALETTE_CACHE_SIZE

#: bitmap format -> LZ image type
LZ_TYPES = {
    BitmapFmt.BIT1_LE: LzImageType.PLT1_LE,
    BitmapFmt.BIT1_BE: LzImageType.PLT1_BE,
    BitmapFmt.BIT4_LE: LzImageType.PLT4_LE,
    BitmapFmt.BIT4_BE: LzImageType.PLT4_BE,
    BitmapFmt.BIT8: LzImageType.PLT8,
    BitmapFmt.BIT16: LzImageType.RGB16,
    BitmapFmt.BIT24: LzImageType.RGB24,
    BitmapFmt.BIT32: LzImageType.RGB32,
    BitmapFmt.RGBA: LzImageType.RGBA,
    BitmapFmt.BIT8_A: LzImageType.A8,
}
_QUIC_FORMATS = {BitmapFmt.BIT32: "rgb32", BitmapFmt.RGBA: "rgba", BitmapFmt.BIT24: "rgb24", BitmapFmt.BIT16: "rgb16"}


def bitmap_pixels(bm: d.BitmapData) -> np.ndarray | None:
    """An RGB bitmap's pixels, top row first: (h, w) uint32 0x00RRGGBB / 0xAARRGGBB, or uint16
    x555 for 16-bit bitmaps."""
    fmt, w, h, stride = bm.format, bm.x, bm.y, bm.stride
    if fmt not in (BitmapFmt.BIT32, BitmapFmt.RGBA, BitmapFmt.BIT24, BitmapFmt.BIT16) or len(bm.data) < stride * h:
        return None
    rows = np.frombuffer(bm.data, np.uint8, count=stride * h).reshape(h, stride)
    if fmt == BitmapFmt.BIT16:
        px = np.ascontiguousarray(rows[:, : w * 2]).view("<u2").reshape(h, w)
    elif fmt == BitmapFmt.BIT24:
        c = rows[:, : w * 3].reshape(h, w, 3).astype(np.uint32)
        px = (c[..., 2] << 16) | (c[..., 1] << 8) | c[..., 0]
    else:
        px = np.ascontiguousarray(rows[:, : w * 4]).view("<u4").reshape(h, w)
    if not bm.flags & BitmapFlags.TOP_DOWN:
        px = px[::-1]
    return np.ascontiguousarray(px)


class PixmapCache:
    """The server's mirror of one client's pixmap cache (ids -> pixel counts, LRU order)."""

    def __init__(self, size_pixels: int) -> None:
        self.size = max(0, size_pixels)
        self.used = 0
        self.items: OrderedDict[int, int] = OrderedDict()
        self.hits = 0

    def lookup(self, image_id: int) -> bool:
        """True (and most recently used) if the client caches ``image_id``."""
        if image_id in self.items:
            self.items.move_to_end(image_id)
            self.hits += 1
            return True
        return False

    def add(self, image_id: int, pixels: int) -> list[int] | None:
        """Make room and add; returns the evicted ids, or None if the image cannot be cached."""
        if pixels > self.size or pixels <= 0:
            return None
        evicted = []
        while self.used + pixels > self.size:
            old, n = self.items.popitem(last=False)
            self.used -= n
            evicted.append(old)
        self.items[image_id] = pixels
        self.used += pixels
        return evicted

    def reset(self, size_pixels: int | None = None) -> None:
        """Forget every entry; resize to ``size_pixels`` if given."""
        if size_pixels is not None:
            self.size = max(0, size_pixels)
        self.items.clear()
        self.used = 0


class PaletteCache:
    """The server's mirror of a client's palette cache (``cache-item.tmpl.cpp``): 128 entries, LRU."""

    def __init__(self, size: int = PALETTE_CACHE_SIZE) -> None:
        self.size = size
        self.items: OrderedDict[int, None] = OrderedDict()

    def lookup(self, unique: int) -> bool:
        """True (and most recently used) if the client caches palette ``unique``."""
        if unique in self.items:
            self.items.move_to_end(unique)
            return True
        return False

    def add(self, unique: int) -> int | None:
        """Add ``unique``; returns the evicted id, if any."""
        evicted = None
        if len(self.items) >= self.size:
            evicted, _ = self.items.popitem(last=False)
        self.items[unique] = None
        return evicted

    def reset(self) -> None:
        """Forget every entry."""
        self.items.clear()


class ImageEncoder:
    """Per-client image policy; ``encode`` returns the wire Image and the pixmap ids to invalidate first.

    Args:
        policy: what the client may receive (caps, GLZ window, wan options, preferred codec).
        cache: the client's pixmap cache mirror (None until DISPLAY_INIT).
        glz: the client's GLZ dictionary (None when the client has no GLZ window).
    """

    def __init__(self, *, policy: ClientCompression, cache: PixmapCache | None, glz: GlzDictionary | None = None) -> None:
        self.policy = policy
        self.cache = cache
        self.glz = glz
        self.palettes = PaletteCache()
        self.stats: dict[str, int] = {k: 0 for k in ("bitmap", "lz4", "quic", "lz", "lz_plt", "glz", "zlib_glz", "jpeg", "jpeg_alpha", "from_cache", "surface", "other", "palette_from_cache")}
        #: messages that must precede the image being encoded (INVAL_PALETTE for an evicted palette)
        self.pending: list[d.InvalPalette] = []

    def encode(self, img: d.Image, *, lossy_ok: bool = False, force_lossy: bool = False) -> tuple[d.Image, list[int]]:
        """The image as this client receives it, and the cache ids evicted to make room for it.

        ``lossy_ok``: a photo-like image may go as JPEG where the WAN policy allows; ``force_lossy``:
        whatever the policy (a video frame before its stream starts)."""
        desc = img.descriptor
        if desc.type == ImageType.SURFACE:
            self.stats["surface"] += 1
            return img, []
        cacheable = bool(desc.flags & QXL_IMAGE_CACHE) and self.cache is not None
        if cacheable and self.cache is not None and self.cache.lookup(desc.id):
            self.stats["from_cache"] += 1
            return d.Image(descriptor=replace(desc, type=ImageType.FROM_CACHE, flags=0)), []
        if desc.type == ImageType.BITMAP and img.bitmap is not None:
            out, lossy = self._bitmap(img, img.bitmap, lossy_ok, force_lossy)
        else:
            self.stats["other"] += 1
            out, lossy = replace(img, descriptor=replace(desc, flags=0)), False
        evicted: list[int] = []
        if cacheable and not lossy and self.cache is not None:
            ev = self.cache.add(desc.id, desc.width * desc.height)
            if ev is not None:
                evicted = ev
                out = replace(out, descriptor=replace(out.descriptor, flags=out.descriptor.flags | ImageFlags.CACHE_ME))
        return out, evicted

    def _palette(self, bm: d.BitmapData) -> d.BitmapData:
        """Send a palette once, then name it from the client's palette cache."""
        pal = bm.palette
        if pal is None or pal.unique == 0 or bm.flags & (BitmapFlags.PAL_FROM_CACHE | BitmapFlags.PAL_CACHE_ME):
            return bm
        if self.palettes.lookup(pal.unique):
            self.stats["palette_from_cache"] += 1
            return replace(bm, flags=bm.flags | BitmapFlags.PAL_FROM_CACHE, palette_id=pal.unique, palette=None)
        evicted = self.palettes.add(pal.unique)
        if evicted is not None:
            self.pending.append(d.InvalPalette(id=evicted))
        return replace(bm, flags=bm.flags | BitmapFlags.PAL_CACHE_ME)

    def _bitmap(self, img: d.Image, bm: d.BitmapData, lossy_ok: bool, force_lossy: bool = False) -> tuple[d.Image, bool]:
        """The image as the chosen codec codes it; True with it when lossy."""
        desc = replace(img.descriptor, flags=0)
        fmt, w, h, stride = bm.format, bm.x, bm.y, bm.stride
        policy = self.policy
        if force_lossy and not policy.jpeg:
            policy = replace(policy, jpeg=True)
        photo: bool | None = None
        px: np.ndarray | None = None  # the pixels as an array, converted once when a codec needs them
        if warmup.ready() and needs_graduality(fmt, w, h, stride, policy):
            px = bitmap_pixels(bm)
            photo = px is not None and graduality_level(px, rgb16=fmt == BitmapFmt.BIT16) == Graduality.HIGH
        raw_size = stride * h
        if not warmup.ready():
            # the numba kernels are still compiling: LZ4 where the client can take it, else raw
            choice = ImageCompression.LZ4 if policy.lz4_cap and policy.preferred != ImageCompression.OFF else ImageCompression.OFF
        else:
            choice = choose(fmt, w, h, stride, policy, high_graduality=photo)
        top_down = bool(bm.flags & BitmapFlags.TOP_DOWN)
        if choice == ImageCompression.QUIC:
            if px is None:
                px = bitmap_pixels(bm)
            if px is not None and lossy_ok and policy.jpeg and fmt == BitmapFmt.RGBA:
                # JPEG_ALPHA: the colour as JPEG, the alpha as an LZ XXXA stream, both top-down
                jpeg = encode_jpeg(px)
                alpha = encode_lz(px.astype("<u4").tobytes(), LzImageType.XXXA, width=w, height=h, stride=w * 4, top_down=True)
                if len(jpeg) + len(alpha) < raw_size:
                    self.stats["jpeg_alpha"] += 1
                    ja = d.JPEGAlphaData(flags=1, jpeg_size=len(jpeg), data=jpeg + alpha)  # 1 = TOP_DOWN
                    return d.Image(descriptor=replace(desc, type=ImageType.JPEG_ALPHA), jpeg_alpha=ja), True
            if px is not None and lossy_ok and policy.jpeg and fmt not in (BitmapFmt.RGBA, BitmapFmt.BIT16):
                data = encode_jpeg(px)
                if len(data) < raw_size:
                    self.stats["jpeg"] += 1
                    return d.Image(descriptor=replace(desc, type=ImageType.JPEG), jpeg=d.BinaryData(data=data)), True
            if px is not None and fmt in _QUIC_FORMATS:
                data = encode_quic(px, _QUIC_FORMATS[BitmapFmt(fmt)])
                if len(data) < raw_size:
                    self.stats["quic"] += 1
                    return d.Image(descriptor=replace(desc, type=ImageType.QUIC), quic=d.BinaryData(data=data)), False
            choice = ImageCompression.LZ if fmt in LZ_TYPES else ImageCompression.OFF
        if choice == ImageCompression.GLZ and self.glz is not None and self.glz.fits(w, h):
            glz = encode_glz(self.glz, bm.data, LZ_TYPES[BitmapFmt(fmt)], w, h, stride, top_down)
            if policy.zlib_glz:
                z = encode_zlib_glz(glz)
                if z is not None and len(z) < raw_size:
                    self.stats["zlib_glz"] += 1
                    return d.Image(descriptor=replace(desc, type=ImageType.ZLIB_GLZ_RGB), zlib_glz=d.ZlibGlzRGBData(glz_data_size=len(glz), data=z)), False
            # sent even if larger than raw: the client's window must see every GLZ image we coded
            self.stats["glz"] += 1
            return d.Image(descriptor=replace(desc, type=ImageType.GLZ_RGB), lz_rgb=d.BinaryData(data=glz)), False
        if choice == ImageCompression.GLZ:
            choice = ImageCompression.LZ
        if choice == ImageCompression.LZ4 and fmt in LZ4_FORMATS and bm.palette is None:
            data = encode_lz4(bm.data, w, h, fmt, stride, top_down=top_down)
            if len(data) < raw_size:
                self.stats["lz4"] += 1
                return d.Image(descriptor=replace(desc, type=ImageType.LZ4), lz4=d.BinaryData(data=data)), False
        elif choice == ImageCompression.LZ and fmt in LZ_TYPES:
            data = encode_lz(bm.data, LZ_TYPES[BitmapFmt(fmt)], width=w, height=h, stride=stride, top_down=top_down)
            if len(data) < raw_size:
                if fmt in BITMAP_FMT_BYTES:
                    self.stats["lz"] += 1
                    return d.Image(descriptor=replace(desc, type=ImageType.LZ_RGB), lz_rgb=d.BinaryData(data=data)), False
                if bm.palette is not None or bm.flags & BitmapFlags.PAL_FROM_CACHE:
                    plt = self._palette(bm)
                    self.stats["lz_plt"] += 1
                    return (
                        d.Image(
                            descriptor=replace(desc, type=ImageType.LZ_PLT),
                            lz_plt=d.LZPLTData(flags=plt.flags & (BitmapFlags.TOP_DOWN | BitmapFlags.PAL_CACHE_ME | BitmapFlags.PAL_FROM_CACHE), palette_id=plt.palette_id, palette=plt.palette, data=data),
                        ),
                        False,
                    )
        self.stats["bitmap"] += 1
        return d.Image(descriptor=desc, bitmap=self._palette(bm)), False
