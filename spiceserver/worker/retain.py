"""What a drawable keeps alive: its source images cropped to what the draw reads, and a byte budget.

Counterpart of the memory side of spice ``server/display-channel.cpp`` / ``red-worker.cpp``: libspice
bounds what drawables hold by their count (``NUM_DRAWABLES``) and frees them when the guest runs
out of memory (``red_process_display`` + ``free_one_drawable``). spiceserver copies every image out
of guest memory, so the amount kept is bounded here instead, in bytes:

* :func:`crop_sources` cuts a drawable's uncompressed bitmaps (source, mask) down to the pixels the
  draw can read -- a 1x1 copy from a huge bitmap keeps one pixel, not the bitmap;
* :class:`RetainedBytes` counts the bytes of every drawable the worker keeps (in a surface's tree
  or a client's pipe); each drawable gives its share back when it is freed, so the count is exact.
  The worker sheds everything (pipes collapsed into canvas pictures, trees forgotten) when the
  count passes its budget: the canvases already hold the rendered result.
"""

from __future__ import annotations

import dataclasses
import threading
import types
import typing
from dataclasses import replace
from typing import Any

import numpy as np

from ..proto.enums import BitmapFlags, BitmapFmt, ImageFlags, ImageType
from ..proto.messages import display as d
from ..proto.messages.base import Point, Rect

__all__ = ["crop_sources", "retained_size", "sized_fields", "image_fields", "RetainedBytes", "CROP_MIN_SAVING", "CROP_CACHEABLE_MIN", "DEFAULT_RETAINED_BUDGET"]

#: a bitmap is cropped only if that saves at least this many bytes
CROP_MIN_SAVING = 64 << 10
#: an image the guest lets clients cache (a wallpaper band, an icon sheet: drawn again and again
#: from its pixmap-cache id) is cropped only from this size on -- a cropped image is never cached,
#: and a client's pixmap cache has no room for larger ones anyway; below it the retained budget
#: bounds what such images keep
CROP_CACHEABLE_MIN = 16 << 20
#: the default budget on what one display's drawables retain (``ServerConfig.max_retained_draw_bytes``)
DEFAULT_RETAINED_BUDGET = 256 << 20
#: pixels kept around a scaled source area (the filter may read neighbours)
_SCALE_MARGIN = 2
_BYTES_PER_PIXEL = {
    BitmapFmt.BIT8: 1, BitmapFmt.BIT16: 2, BitmapFmt.BIT24: 3, BitmapFmt.BIT32: 4, BitmapFmt.RGBA: 4, BitmapFmt.BIT8_A: 1,
}  # fmt: skip
_OBJECT_BYTES = 64  # what a small Python object (a point, a glyph header) is counted as


def _crop_bitmap(img: d.Image, top: int, left: int, bottom: int, right: int) -> d.Image:
    """``img`` (an uncompressed bitmap) cut to rows ``[top, bottom)`` and, for formats of whole
    bytes per pixel, columns ``[left, right)``; uncacheable (its id names the whole image)."""
    bm = img.bitmap
    assert bm is not None
    bpp = _BYTES_PER_PIXEL.get(BitmapFmt(bm.format)) if bm.format in BitmapFmt._value2member_map_ else None
    if bpp is None:  # 1 and 4 bpp: rows only
        left, right = 0, bm.x
    rows = np.frombuffer(bm.data, dtype=np.uint8, count=bm.stride * bm.y).reshape(bm.y, bm.stride)
    r0, r1 = (top, bottom) if bm.flags & BitmapFlags.TOP_DOWN else (bm.y - bottom, bm.y - top)
    if bpp is None:
        stride, cut = bm.stride, rows[r0:r1]
    else:
        stride, cut = (right - left) * bpp, rows[r0:r1, left * bpp : right * bpp]
    w, h = right - left, bottom - top
    bitmap = replace(bm, x=w, y=h, stride=stride, data=np.ascontiguousarray(cut).tobytes())
    desc = replace(img.descriptor, width=w, height=h, flags=img.descriptor.flags & ~int(ImageFlags.CACHE_ME))
    return replace(img, descriptor=desc, bitmap=bitmap)


def _worth(img: d.Image | None, top: int, left: int, bottom: int, right: int) -> bool:
    """Whether cutting ``img`` to that area is possible and saves :data:`CROP_MIN_SAVING` bytes."""
    if img is None or img.descriptor.type != ImageType.BITMAP or img.bitmap is None:
        return False
    bm = img.bitmap
    if not (0 <= left < right <= bm.x and 0 <= top < bottom <= bm.y) or len(bm.data) < bm.stride * bm.y:
        return False
    if img.descriptor.flags & ImageFlags.CACHE_ME and bm.stride * bm.y < CROP_CACHEABLE_MIN:
        return False
    bpp = _BYTES_PER_PIXEL.get(BitmapFmt(bm.format)) if bm.format in BitmapFmt._value2member_map_ else None
    stride = bm.stride if bpp is None else (right - left) * bpp
    return bm.stride * bm.y - stride * (bottom - top) >= CROP_MIN_SAVING


def _crop_src(op: Any, box: Rect) -> Any:
    img: d.Image | None = op.src_bitmap
    area: Rect = op.src_area
    scaled = area.right - area.left != box.right - box.left or area.bottom - area.top != box.bottom - box.top
    m = _SCALE_MARGIN if scaled else 0
    if img is None or img.bitmap is None:
        return op
    top, left = max(0, area.top - m), max(0, area.left - m)
    bottom, right = min(img.bitmap.y, area.bottom + m), min(img.bitmap.x, area.right + m)
    if not _worth(img, top, left, bottom, right):
        return op
    cropped = _crop_bitmap(img, top, left, bottom, right)
    assert cropped.bitmap is not None
    left = 0 if cropped.bitmap.x == img.bitmap.x else left  # 1/4 bpp: columns kept
    moved = Rect(top=area.top - top, left=area.left - left, bottom=area.bottom - top, right=area.right - left)
    return replace(op, src_bitmap=cropped, src_area=moved)


def _crop_mask(op: Any, box: Rect) -> Any:
    mask: d.QMask | None = getattr(op, "mask", None)
    if mask is None or mask.bitmap is None or mask.bitmap.bitmap is None:
        return op
    h = box.bottom - box.top
    top = max(0, mask.pos.y)
    bottom = min(mask.bitmap.bitmap.y, mask.pos.y + h)
    if not _worth(mask.bitmap, top, 0, bottom, mask.bitmap.bitmap.x):
        return op
    cropped = _crop_bitmap(mask.bitmap, top, 0, bottom, mask.bitmap.bitmap.x)
    return replace(op, mask=replace(mask, bitmap=cropped, pos=Point(x=mask.pos.x, y=mask.pos.y - top)))


def crop_sources(op: Any, box: Rect) -> Any:
    """``op`` with its uncompressed source bitmap cut to ``src_area`` (plus a margin when the draw
    scales) and its mask bitmap to the rows the box reads, where that saves :data:`CROP_MIN_SAVING`
    bytes or more (and a cacheable image is :data:`CROP_CACHEABLE_MIN` bytes or more). Brush
    patterns are tiled and kept whole (they count in the retained budget)."""
    if hasattr(op, "src_bitmap") and hasattr(op, "src_area"):
        op = _crop_src(op, box)
    return _crop_mask(op, box)


def retained_size(value: Any) -> int:
    """About how many bytes ``value`` (a draw body) keeps alive: its pixel and text data, and a
    fixed share per point, segment or glyph."""
    names = _SIZED_FIELDS.get(type(value))
    if names is None:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return len(value)
        if isinstance(value, np.ndarray):
            return int(value.nbytes)
        if isinstance(value, tuple):
            total = 0
            for v in value:
                total += retained_size(v) + 8
            return total
        if not dataclasses.is_dataclass(value) or isinstance(value, type):
            return 0
        names = sized_fields(type(value))
    total = _OBJECT_BYTES
    for name in names:
        v = getattr(value, name)
        if v is None:
            continue
        if type(v) is bytes:
            total += len(v)
        elif _SIZED_FIELDS.get(type(v)) == ():  # a dataclass of numbers only (a point, a rect)
            total += _OBJECT_BYTES
        elif not isinstance(v, (int, float, str, bool)):
            total += retained_size(v)
    return total


# --- what to look at in a draw body, per dataclass type ------------------------------------------
#
# The walks over a draw body (the bytes it keeps, the images in it) run for every command; asking
# ``dataclasses.fields`` each time cost more than the rest of the walk. The fields worth visiting
# are worked out once per type from its type hints: a field that can only hold numbers, strings or
# None adds nothing to either walk. When the hints cannot be resolved every field is visited.

_SIZED_FIELDS: dict[type, tuple[str, ...]] = {}
_IMAGE_FIELDS: dict[type, tuple[str, ...]] = {}
_SCALARS = (int, float, str, bool, type(None))
_UNSIZED = frozenset(_SCALARS)


def _hints(cls: type) -> dict[str, Any] | None:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an unresolvable forward reference: visit every field
        return None


def _arms(hint: Any) -> tuple[Any, ...]:
    """The alternatives of a ``X | Y`` / ``Optional`` hint, else the hint alone."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def sized_fields(cls: type) -> tuple[str, ...]:
    """The fields of dataclass ``cls`` that may hold more than a number, a string or None (what
    :func:`retained_size` must visit), in field order."""
    names = _SIZED_FIELDS.get(cls)
    if names is None:
        hints = _hints(cls)
        names = tuple(
            f.name for f in dataclasses.fields(cls)
            if hints is None or f.name not in hints or not all(a in _UNSIZED for a in _arms(hints[f.name]))
        )  # fmt: skip
        _SIZED_FIELDS[cls] = names
    return names


def image_fields(cls: type) -> tuple[str, ...]:
    """The fields of ``cls`` (a dataclass; () for anything else) through which an Image may be
    reached, not looking into tuples -- what a walk over a draw body's images must visit, in
    field order."""
    names = _IMAGE_FIELDS.get(cls)
    if names is None:
        if not dataclasses.is_dataclass(cls) or not isinstance(cls, type):
            names = ()
        else:
            _IMAGE_FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))  # while recursing: all
            hints = _hints(cls)
            names = tuple(
                f.name for f in dataclasses.fields(cls)
                if hints is None or f.name not in hints or any(_may_hold_image(a) for a in _arms(hints[f.name]))
            )  # fmt: skip
        _IMAGE_FIELDS[cls] = names
    return names


def _may_hold_image(hint: Any) -> bool:
    if hint is d.Image:
        return True
    if hint in _UNSIZED or hint in (bytes, bytearray, memoryview, np.ndarray):
        return False
    if typing.get_origin(hint) is tuple or hint is tuple:
        return False  # the image walks do not look into tuples
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return bool(image_fields(hint))
    return True  # Any, a protocol, an unknown class: look at the value


class RetainedBytes:
    """The bytes a worker's drawables keep (tree + pipes), told by each drawable when it is freed."""

    __slots__ = ("_lock", "budget", "bytes", "peak")

    def __init__(self, budget: int = DEFAULT_RETAINED_BUDGET) -> None:
        self.budget = budget
        self.bytes = 0
        self.peak = 0
        self._lock = threading.Lock()  # the last reference to a drawable may go on another thread

    def charge(self, n: int) -> None:
        """A drawable of ``n`` bytes is kept."""
        with self._lock:
            self.bytes += n
            self.peak = max(self.peak, self.bytes)

    def release(self, n: int) -> None:
        """A kept drawable of ``n`` bytes was freed."""
        with self._lock:
            self.bytes -= n

    @property
    def exceeded(self) -> bool:
        """Whether the kept bytes passed the budget."""
        return self.bytes > self.budget
