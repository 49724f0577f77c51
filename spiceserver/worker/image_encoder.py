"""Choosing how each image goes to a client: pixmap cache, LZ4 or raw bitmap.

Counterpart of spice ``server/dcc.cpp`` (``dcc_compress_image``, ``dcc_pixmap_cache_unlocked_add``)
and ``server/pixmap-cache.cpp``. The server mirrors each client's pixmap cache exactly -- a pixel
budget with least-recently-used eviction -- because spice-gtk blocks on a FROM_CACHE id it does not
hold. Evicted ids are sent as INVAL_LIST *before* the drawable that needed the room.

The image codecs issue adds Quic, LZ, GLZ and JPEG; today an image goes as LZ4 (client cap
LZ4_COMPRESSION, and only when that is smaller) or as a raw BITMAP.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

from ..codecs.lz4 import encode_lz4
from ..proto.enums import BitmapFlags, BitmapFmt, ImageFlags, ImageType
from ..proto.messages import display as d

__all__ = ["PixmapCache", "PaletteCache", "ImageEncoder", "QXL_IMAGE_CACHE", "MIN_COMPRESS_BYTES", "PALETTE_CACHE_SIZE"]

QXL_IMAGE_CACHE = 1  # descriptor flag from the guest: the image may be cached by its id
MIN_COMPRESS_BYTES = 54  # libspice: smaller images always go raw
_LZ4_FORMATS = {BitmapFmt.BIT16, BitmapFmt.BIT24, BitmapFmt.BIT32, BitmapFmt.RGBA}
_BPP = {BitmapFmt.BIT16: 2, BitmapFmt.BIT24: 3, BitmapFmt.BIT32: 4, BitmapFmt.RGBA: 4}
PALETTE_CACHE_SIZE = 128  # libspice CLIENT_PALETTE_CACHE_SIZE


class PixmapCache:
    """The server's mirror of one client's pixmap cache (ids -> pixel counts, LRU order)."""

    def __init__(self, size_pixels: int) -> None:
        self.size = max(0, size_pixels)
        self.used = 0
        self.items: OrderedDict[int, int] = OrderedDict()
        self.hits = 0

    def lookup(self, image_id: int) -> bool:
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
        self.items.clear()


class ImageEncoder:
    """Per-client image policy; ``encode`` returns the wire Image and the ids to invalidate first."""

    def __init__(self, *, lz4: bool, cache: PixmapCache | None) -> None:
        self.lz4 = lz4
        self.cache = cache
        self.palettes = PaletteCache()
        self.stats = {"bitmap": 0, "lz4": 0, "from_cache": 0, "surface": 0, "other": 0, "palette_from_cache": 0}
        #: messages that must precede the image being encoded (INVAL_PALETTE for an evicted palette)
        self.pending: list[d.InvalPalette] = []

    def encode(self, img: d.Image) -> tuple[d.Image, list[int]]:
        desc = img.descriptor
        if desc.type == ImageType.SURFACE:
            self.stats["surface"] += 1
            return img, []
        cacheable = bool(desc.flags & QXL_IMAGE_CACHE) and self.cache is not None
        if cacheable and self.cache is not None and self.cache.lookup(desc.id):
            self.stats["from_cache"] += 1
            return d.Image(descriptor=replace(desc, type=ImageType.FROM_CACHE, flags=0)), []
        evicted: list[int] = []
        flags = 0
        if cacheable and self.cache is not None:
            ev = self.cache.add(desc.id, desc.width * desc.height)
            if ev is not None:
                evicted = ev
                flags |= ImageFlags.CACHE_ME
        if desc.type == ImageType.BITMAP and img.bitmap is not None:
            return self._bitmap(img, img.bitmap, flags), evicted
        self.stats["other"] += 1
        return replace(img, descriptor=replace(desc, flags=flags)), evicted

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

    def _bitmap(self, img: d.Image, bm: d.BitmapData, flags: int) -> d.Image:
        desc = img.descriptor
        bm = self._palette(bm)
        fmt = bm.format
        bpp = _BPP.get(BitmapFmt(fmt)) if fmt in BitmapFmt._value2member_map_ else None
        if (
            self.lz4
            and fmt in _LZ4_FORMATS
            and bpp is not None
            and bm.palette is None
            and len(bm.data) >= MIN_COMPRESS_BYTES
            and bm.stride >= bm.x * bpp
        ):
            top_down = bool(bm.flags & BitmapFlags.TOP_DOWN)
            data = encode_lz4(bm.data, bm.x, bm.y, fmt, bm.stride, top_down=top_down)
            if len(data) < len(bm.data):
                self.stats["lz4"] += 1
                return d.Image(
                    descriptor=replace(desc, type=ImageType.LZ4, flags=flags),
                    lz4=d.BinaryData(data=data),
                )
        self.stats["bitmap"] += 1
        return d.Image(descriptor=replace(desc, flags=flags), bitmap=bm)
