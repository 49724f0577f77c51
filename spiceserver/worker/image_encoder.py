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

Every codec run but GLZ goes through the display's :class:`~spiceserver.worker.shared_encode.SharedEncodes`
(beyond libspice, which encodes per client): a bitmap that two clients both send as Quic, LZ, LZ4 or
JPEG is encoded once. The graduality test is shared the same way.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

import numpy as np

from ..codecs import warmup
from ..codecs.glz import GlzDictionary, encode_glz
from ..codecs.graduality import Graduality, graduality_level
from ..codecs.jpeg import DEFAULT_QUALITY, encode_jpeg
from ..codecs.lz import LzImageType, encode_lz
from ..codecs.lz4 import LZ4_FORMATS, encode_lz4
from ..codecs.quic import encode_quic
from ..codecs.zlib_glz import encode_zlib_glz
from ..proto.enums import BITMAP_FMT_BYTES, BitmapFlags, BitmapFmt, ImageCompression, ImageFlags, ImageType
from ..proto.messages import display as d
from .compression import ClientCompression, choose, needs_graduality
from .shared_encode import SharedEncodes

__all__ = ["PixmapCache", "PaletteCache", "ImageEncoder", "QXL_IMAGE_CACHE", "PALETTE_CACHE_SIZE"]

QXL_IMAGE_CACHE = 1  # descriptor flag from the guest: the image may be cached by its id
PALETTE_CACHE_SIZE = 128  # libspice CLIENT_PALETTE_CACHE_SIZE
_T = TypeVar("_T", bytes, bool)

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
        shared: the display's shared codec results (:mod:`.shared_encode`); None: a private
            one that keeps nothing (every image encoded for this client alone, still counted).
    """

    def __init__(
        self, *, policy: ClientCompression, cache: PixmapCache | None, glz: GlzDictionary | None = None, shared: SharedEncodes | None = None
    ) -> None:
        self.policy = policy
        self.cache = cache
        self.glz = glz
        self.shared = shared if shared is not None else SharedEncodes(max_entries=0)
        self.palettes = PaletteCache()
        self.stats: dict[str, int] = {k: 0 for k in ("bitmap", "lz4", "quic", "lz", "lz_plt", "glz", "zlib_glz", "jpeg", "jpeg_alpha", "from_cache", "surface", "other", "palette_from_cache")}
        #: messages that must precede the image being encoded (INVAL_PALETTE for an evicted palette)
        self.pending: list[d.InvalPalette] = []

    def encode(self, img: d.Image, *, lossy_ok: bool = False, force_lossy: bool = False, share: bool = True) -> tuple[d.Image, list[int]]:
        """The image as this client receives it, and the cache ids evicted to make room for it.

        ``lossy_ok``: a photo-like image may go as JPEG where the WAN policy allows; ``force_lossy``:
        whatever the policy (a video frame before its stream starts); ``share``: False for an image
        made for this client only (a canvas picture), whose codec results are not kept."""
        desc = img.descriptor
        if desc.type == ImageType.SURFACE:
            self.stats["surface"] += 1
            return img, []
        cacheable = bool(desc.flags & QXL_IMAGE_CACHE) and self.cache is not None
        if cacheable and self.cache is not None and self.cache.lookup(desc.id):
            self.stats["from_cache"] += 1
            return d.Image(descriptor=replace(desc, type=ImageType.FROM_CACHE, flags=0)), []
        if desc.type == ImageType.BITMAP and img.bitmap is not None:
            out, lossy = self._bitmap(img, img.bitmap, lossy_ok, force_lossy, share)
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

    def _bitmap(self, img: d.Image, bm: d.BitmapData, lossy_ok: bool, force_lossy: bool = False, share: bool = True) -> tuple[d.Image, bool]:
        """The image as the chosen codec codes it; True with it when lossy."""
        desc = replace(img.descriptor, flags=0)
        fmt, w, h, stride = bm.format, bm.x, bm.y, bm.stride
        policy = self.policy
        if force_lossy and not policy.jpeg:
            policy = replace(policy, jpeg=True)
        photo: bool | None = None
        shared, size = self.shared, len(bm.data)
        has_px = fmt in _QUIC_FORMATS and len(bm.data) >= stride * h  # bitmap_pixels(bm) is not None

        def once(key: tuple[object, ...], encode: Callable[[], _T]) -> _T:
            return shared.get(bm, size, key, encode, keep=share)

        converted: list[np.ndarray] = []  # the pixels as an array, converted once if a codec runs

        def pixels() -> np.ndarray:
            if not converted:
                px = bitmap_pixels(bm)
                assert px is not None  # has_px
                converted.append(px)
            return converted[0]

        if warmup.ready() and needs_graduality(fmt, w, h, stride, policy):
            photo = has_px and once(("graduality",), lambda: graduality_level(pixels(), rgb16=fmt == BitmapFmt.BIT16) == Graduality.HIGH)
        raw_size = stride * h
        if not warmup.ready():
            # the numba kernels are still compiling: LZ4 where the client can take it, else raw
            choice = ImageCompression.LZ4 if policy.lz4_cap and policy.preferred != ImageCompression.OFF else ImageCompression.OFF
        else:
            choice = choose(fmt, w, h, stride, policy, high_graduality=photo)
        top_down = bool(bm.flags & BitmapFlags.TOP_DOWN)
        if choice == ImageCompression.QUIC:
            if has_px and lossy_ok and policy.jpeg and fmt == BitmapFmt.RGBA:
                # JPEG_ALPHA: the colour as JPEG, the alpha as an LZ XXXA stream, both top-down
                jpeg = once(("jpeg", DEFAULT_QUALITY), lambda: encode_jpeg(pixels()))
                alpha = once(("lz_xxxa",), lambda: encode_lz(pixels().astype("<u4").tobytes(), LzImageType.XXXA, width=w, height=h, stride=w * 4, top_down=True))
                if len(jpeg) + len(alpha) < raw_size:
                    self.stats["jpeg_alpha"] += 1
                    ja = d.JPEGAlphaData(flags=1, jpeg_size=len(jpeg), data=jpeg + alpha)  # 1 = TOP_DOWN
                    return d.Image(descriptor=replace(desc, type=ImageType.JPEG_ALPHA), jpeg_alpha=ja), True
            if has_px and lossy_ok and policy.jpeg and fmt not in (BitmapFmt.RGBA, BitmapFmt.BIT16):
                data = once(("jpeg", DEFAULT_QUALITY), lambda: encode_jpeg(pixels()))
                if len(data) < raw_size:
                    self.stats["jpeg"] += 1
                    return d.Image(descriptor=replace(desc, type=ImageType.JPEG), jpeg=d.BinaryData(data=data)), True
            if has_px:
                quic_fmt = _QUIC_FORMATS[BitmapFmt(fmt)]
                data = once(("quic", quic_fmt), lambda: encode_quic(pixels(), quic_fmt))
                if len(data) < raw_size:
                    self.stats["quic"] += 1
                    return d.Image(descriptor=replace(desc, type=ImageType.QUIC), quic=d.BinaryData(data=data)), False
            choice = ImageCompression.LZ if fmt in LZ_TYPES else ImageCompression.OFF
        if choice == ImageCompression.GLZ and self.glz is not None and self.glz.fits(w, h):
            glz = encode_glz(self.glz, bm.data, LZ_TYPES[BitmapFmt(fmt)], w, h, stride, top_down)
            shared.count(len(glz))  # the client's own window: never shared
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
            data = once(("lz4",), lambda: encode_lz4(bm.data, w, h, fmt, stride, top_down=top_down))
            if len(data) < raw_size:
                self.stats["lz4"] += 1
                return d.Image(descriptor=replace(desc, type=ImageType.LZ4), lz4=d.BinaryData(data=data)), False
        elif choice == ImageCompression.LZ and fmt in LZ_TYPES:
            data = once(("lz",), lambda: encode_lz(bm.data, LZ_TYPES[BitmapFmt(fmt)], width=w, height=h, stride=stride, top_down=top_down))
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
