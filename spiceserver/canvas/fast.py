"""Fast paths of the draw operations: slice writes over the destination rectangles, no pixel mask.

Counterpart of spice-common ``common/sw_canvas.c`` where it walks a region's rectangles one by one
(``fill_solid_rects``, ``fill_solid_rects_rop``, ``blit_image`` / ``blit_image_rop``,
``copy_region``) instead of handing pixman a mask.

Taken when the destination region is a set of rectangles known without rasterising anything: the
box clipped to the canvas and, for clip type RECTS, to the clip rects (their banded
:class:`~spiceserver.region.Region`, so the rectangles are disjoint and a non-idempotent rop is
applied once per pixel), and the operation has no QMask. Covered: Fill with a SOLID or NONE brush
(any rop), Blackness, Whiteness, Invers, Copy / Blend and Opaque (solid or NONE brush) without
scaling, and CopyBits. Everything else returns False and the caller runs the general masked path
of :mod:`.draw`; the pixels written are the same (``tests/canvas/test_fast.py`` renders random
operations both ways).

:data:`ENABLED` switches the fast paths off (the tests compare both ways with it).

A solid COPY into a 32-bit canvas is written by a small compiled kernel that keeps the GIL
(:func:`_fill_rect`): numpy releases the GIL for a fill of more than a few hundred pixels, and a
display worker that hands the GIL over for a microsecond's work waits far longer to get it back.
Until the warm-up has compiled it (and without numba) numpy writes the slice.
"""

from __future__ import annotations

import threading

import numpy as np

from .._jit import HAVE_NUMBA, njit, on_warmup
from ..proto.enums import BrushType, ClipType
from ..proto.messages import display as d
from ..proto.messages.base import Rect
from ..region import RectTuple, Region
from .area import src_operand
from .images import ImageResolver, touch_image
from .rop import Rop, RopInput, apply_rop, ropd_to_rop
from .surface import Canvas, Pixmap

__all__ = ["ENABLED", "dest_rects", "fill", "solid", "copy", "opaque", "copy_bits"]

#: When False every operation takes the general masked path.
ENABLED = True

#: Up to this many clipped rectangles are checked pair by pair for overlap before building a Region.
_PAIRWISE_MAX = 8
_MAX = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}


def _disjoint(rects: list[RectTuple]) -> bool:
    for i, (ax1, ay1, ax2, ay2) in enumerate(rects):
        for bx1, by1, bx2, by2 in rects[i + 1 :]:
            if ax1 < bx2 and bx1 < ax2 and ay1 < by2 and by1 < ay2:
                return False
    return True


def dest_rects(canvas: Canvas, base: d.DisplayBase) -> tuple[RectTuple, ...]:
    """The destination region (box, canvas, clip rects) as disjoint ``(left, top, right, bottom)``."""
    box = base.box
    x1, y1 = max(box.left, 0), max(box.top, 0)
    x2, y2 = min(box.right, canvas.width), min(box.bottom, canvas.height)
    if x1 >= x2 or y1 >= y2:
        return ()
    clip = base.clip
    if clip.type != ClipType.RECTS or clip.rects is None:
        return ((x1, y1, x2, y2),)
    out = []
    for r in clip.rects.rects:
        cx1, cy1 = max(x1, r.left), max(y1, r.top)
        cx2, cy2 = min(x2, r.right), min(y2, r.bottom)
        if cx1 < cx2 and cy1 < cy2:
            out.append((cx1, cy1, cx2, cy2))
    if len(out) <= 1 or (len(out) <= _PAIRWISE_MAX and _disjoint(out)):
        return tuple(out)
    return Region(out).rects  # overlapping (or many) rectangles: their banded, disjoint form


@njit(keep_gil=True)
def _fill_rect(pixels: np.ndarray, x1: int, y1: int, x2: int, y2: int, value: int) -> None:  # pragma: no cover - compiled
    """``pixels[y1:y2, x1:x2] = value`` for a C-contiguous uint32 canvas, keeping the GIL."""
    for y in range(y1, y2):
        row = pixels[y]
        for x in range(x1, x2):
            row[x] = value


_kernel_ready = threading.Event()


@on_warmup
def _warm_up() -> None:
    """Compile :func:`_fill_rect` for the one argument type list :func:`_put` uses."""
    if HAVE_NUMBA:
        _fill_rect(np.zeros((2, 2), dtype=np.uint32), 0, 0, 1, 1, 1)
        _kernel_ready.set()


def _put(canvas: Canvas, rects: tuple[RectTuple, ...], value: int, rop: Rop) -> None:
    """Write one value through ``rop`` into each rectangle."""
    pixels = canvas.pixels
    value &= _MAX[pixels.dtype.itemsize]
    if rop == Rop.COPY and pixels.dtype == np.uint32 and pixels.flags.c_contiguous and _kernel_ready.is_set():
        for x1, y1, x2, y2 in rects:
            _fill_rect(pixels, x1, y1, x2, y2, value)
        return
    for x1, y1, x2, y2 in rects:
        sub = pixels[y1:y2, x1:x2]
        sub[...] = value if rop == Rop.COPY else apply_rop(rop, value, sub)


def _brush_value(brush: d.Brush) -> int | None:
    """The colour a SOLID or NONE brush fills with; None for any other brush."""
    if brush.type == BrushType.SOLID:
        return int(brush.color or 0)
    if brush.type == BrushType.NONE:
        return 0
    return None


def fill(canvas: Canvas, base: d.DisplayBase, op: d.Fill) -> bool:
    """Fill with a solid (or NONE) brush and no mask; False when the general path must run."""
    value = _brush_value(op.brush)
    if value is None or op.mask.bitmap is not None:
        return False
    _put(canvas, dest_rects(canvas, base), value, ropd_to_rop(op.rop_descriptor, RopInput.BRUSH, RopInput.DEST))
    return True


def solid(canvas: Canvas, base: d.DisplayBase, op: d.Blackness | d.Whiteness | d.Invers, value: int, rop: Rop) -> bool:
    """Blackness / Whiteness / Invers without a mask; False when the general path must run."""
    if op.mask.bitmap is not None:
        return False
    _put(canvas, dest_rects(canvas, base), value, rop)
    return True


def _same_size(box: Rect, src: Rect) -> bool:
    return box.right - box.left == src.right - src.left and box.bottom - box.top == src.bottom - src.top


def _blit(canvas: Canvas, rects: tuple[RectTuple, ...], src: Pixmap, box: Rect, src_area: Rect, rop: Rop) -> None:
    """Raw pixels from ``src`` at ``x - box.left + src_area.left`` into each rectangle; pixels whose
    source lies outside the image stay. All sources are read before the first write when ``src``
    is the canvas itself."""
    ox, oy = src_area.left - box.left, src_area.top - box.top
    pixels = canvas.pixels
    shared = np.may_share_memory(src.pixels, pixels)
    moves = []
    for x1, y1, x2, y2 in rects:
        x1, x2 = max(x1, -ox), min(x2, src.width - ox)
        y1, y2 = max(y1, -oy), min(y2, src.height - oy)
        if x1 < x2 and y1 < y2:
            block = src.pixels[y1 + oy : y2 + oy, x1 + ox : x2 + ox]
            moves.append((x1, y1, x2, y2, block.copy() if shared else block))
    for x1, y1, x2, y2, block in moves:
        sub = pixels[y1:y2, x1:x2]
        sub[...] = block if rop == Rop.COPY else apply_rop(rop, block, sub)


def _rects_and_source(
    canvas: Canvas, base: d.DisplayBase, op: d.Copy | d.Blend | d.Opaque, resolver: ImageResolver
) -> tuple[tuple[RectTuple, ...], Pixmap] | None:
    """The destination rectangles of an unscaled blit and its source operand; None when nothing is
    drawn (the source image is still checked, as the general path does)."""
    rects = dest_rects(canvas, base)
    if not rects:
        touch_image(op.src_bitmap, canvas.pixfmt, resolver)
        return None
    return rects, src_operand(canvas, op.src_bitmap, resolver)


def copy(canvas: Canvas, base: d.DisplayBase, op: d.Copy | d.Blend, resolver: ImageResolver) -> bool:
    """Copy / Blend without mask or scaling; False when the general path must run."""
    if op.mask.bitmap is not None or not _same_size(base.box, op.src_area):
        return False
    blit = _rects_and_source(canvas, base, op, resolver)
    if blit is not None:
        rects, src = blit
        _blit(canvas, rects, src, base.box, op.src_area, ropd_to_rop(op.rop_descriptor, RopInput.SRC, RopInput.DEST))
    return True


def opaque(canvas: Canvas, base: d.DisplayBase, op: d.Opaque, resolver: ImageResolver) -> bool:
    """Opaque with a solid (or NONE) brush, without mask or scaling; False for the general path."""
    value = _brush_value(op.brush)
    if value is None or op.mask.bitmap is not None or not _same_size(base.box, op.src_area):
        return False
    blit = _rects_and_source(canvas, base, op, resolver)
    if blit is None:
        return True
    rects, src = blit
    _blit(canvas, rects, src, base.box, op.src_area, Rop.COPY)
    _put(canvas, rects, value, ropd_to_rop(op.rop_descriptor, RopInput.BRUSH, RopInput.SRC))
    return True


def copy_bits(canvas: Canvas, base: d.DisplayBase, op: d.CopyBits) -> bool:
    """CopyBits: every source rectangle is read before the first write (as ``copy_region``)."""
    box = base.box
    dx, dy = box.left - op.src_pos.x, box.top - op.src_pos.y
    if dx == 0 and dy == 0:
        return True
    pixels = canvas.pixels
    moves = []
    for x1, y1, x2, y2 in dest_rects(canvas, base):
        # the source must lie in the canvas too
        x1, y1 = max(x1, dx), max(y1, dy)
        x2, y2 = min(x2, dx + canvas.width), min(y2, dy + canvas.height)
        if x1 < x2 and y1 < y2:
            moves.append((x1, y1, x2, y2, pixels[y1 - dy : y2 - dy, x1 - dx : x2 - dx].copy()))
    for x1, y1, x2, y2, block in moves:
        pixels[y1:y2, x1:x2] = block
    return True
