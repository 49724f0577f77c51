"""DRAW_STROKE: paths drawn as zero-width X11 lines.

Counterpart of spice-common ``common/canvas_base.c`` ``canvas_draw_stroke`` (path walking,
``subdivide_bezier``, ``stroke_fill_spans``) and ``common/lines.c`` ``miZeroLine`` (the X server's
Bresenham, ``CapNotLast``, default zero-line bias), which spice-common always uses: its stroke GC
has ``lineWidth = 0`` whatever the line attributes say.

* Points are fixed 28.4 rounded by ``fix_to_int`` (fraction > 8/16 rounds up).
* A polyline draws every segment from its first point up to, not including, its last point; each
  segment's pixels are filled (with the fore rop) before the next segment, so a rop such as XOR
  applies twice where segments cross. Pixels outside the canvas or the clip region are skipped
  (X11's clipped Bresenham draws exactly the unclipped line's pixels inside the canvas).
* BEGIN starts a new polyline (drawing the pending one), END draws it, END|CLOSE first returns to
  its first point; BEZIER segments are flattened by ``subdivide_bezier``'s integer recursion from
  the previous *integer* point.
* Solid brushes fill with their colour, NONE with 0, PATTERN tiles the pattern image
  (``fill_tiled_rects`` with the pattern position).

Not exact: STYLED (dashed) lines. spice-common draws them with ``miWideDash`` at width 1 (polygon
code); here the dash pattern (style lengths rounded, START_WITH_GAP rotated) switches the zero-width
line on and off per pixel along its major axis. ``back_mode`` is ignored, as in spice-common.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..errors import ProtocolError
from ..proto.enums import BrushType, ImageType, LineFlags, PathFlags
from ..proto.messages.base import PointFix
from ..proto.messages.display import DisplayBase, Stroke
from .area import Area, dest_area, source_pixmap, touch_brush, truncate_color
from .images import ImageResolver
from .rop import Rop, RopInput, apply_rop, ropd_to_rop
from .surface import Canvas, Pixmap

__all__ = ["draw_stroke", "zero_line_pixels", "fix_to_int", "flatten_path"]

# lines.c octant bits and the default zero-line bias (OCTANT2 | OCTANT3 | OCTANT4 | OCTANT5)
_XDECREASING = 4
_YDECREASING = 2
_YMAJOR = 1
_BIAS = (1 << (_YDECREASING | _YMAJOR)) | (1 << (_XDECREASING | _YDECREASING | _YMAJOR))
_BIAS |= (1 << (_XDECREASING | _YDECREASING)) | (1 << _XDECREASING)

_MAX_BEZIER_DEPTH = 64


def fix_to_int(v: int) -> int:
    """canvas_base.c ``fix_to_int``: 28.4 to int, rounding fractions above 8/16 up."""
    return (v >> 4) + (1 if (v & 0x0F) > 8 else 0)


def _cdiv2(v: int) -> int:
    """C ``v / 2`` (truncating toward zero)."""
    return -((-v) // 2) if v < 0 else v // 2


def _dot(x1: int, y1: int, x2: int, y2: int) -> int:
    return (x1 * x2 + y1 * y2) >> 4


def _subdivide_bezier(
    out: list[tuple[int, int]],
    p0: tuple[int, int],
    p1: tuple[int, int],
    p2: tuple[int, int],
    p3: tuple[int, int],
    depth: int = 0,
) -> None:
    if depth > _MAX_BEZIER_DEPTH:
        raise ProtocolError("bezier subdivision does not terminate (the client recurses without end)")
    a2 = _dot(p1[0] - p0[0], p1[1] - p0[1], p1[0] - p0[0], p1[1] - p0[1])
    b2 = _dot(p3[0] - p0[0], p3[1] - p0[1], p3[0] - p0[0], p3[1] - p0[1])
    c2 = _dot(p2[0] - p3[0], p2[1] - p3[1], p2[0] - p3[0], p2[1] - p3[1])
    ab = _dot(p1[0] - p0[0], p1[1] - p0[1], p3[0] - p0[0], p3[1] - p0[1])
    cb = _dot(p2[0] - p3[0], p2[1] - p3[1], p0[0] - p3[0], p0[1] - p3[1])
    h1 = (a2 * b2 - ab * ab) >> 3
    h2 = (c2 * b2 - cb * cb) >> 3
    if h1 < b2 and h2 < b2:
        out.append((fix_to_int(p3[0]), fix_to_int(p3[1])))
        return

    def mid(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
        return _cdiv2(a[0] + b[0]), _cdiv2(a[1] + b[1])

    p01, p12, p23 = mid(p0, p1), mid(p1, p2), mid(p2, p3)
    p012, p123 = mid(p01, p12), mid(p12, p23)
    p0123 = mid(p012, p123)
    _subdivide_bezier(out, p0, p01, p012, p0123, depth + 1)
    _subdivide_bezier(out, p0123, p123, p23, p3, depth + 1)


def flatten_path(stroke: Stroke) -> list[list[tuple[int, int]]]:
    """The integer polylines ``canvas_draw_stroke`` hands to the line code, in drawing order.

    Raises:
        ProtocolError: a malformed path the client would abort or misbehave on.
    """
    polylines: list[list[tuple[int, int]]] = []
    lines: list[tuple[int, int]] = []

    def flush() -> None:
        if lines:
            polylines.append(list(lines))
            lines.clear()

    def fix(p: PointFix) -> tuple[int, int]:
        return fix_to_int(p.x), fix_to_int(p.y)

    for seg in stroke.path.segments:
        points = list(seg.points)
        i = 0
        if seg.flags & PathFlags.BEGIN:
            flush()
            if not points:
                raise ProtocolError("path segment BEGIN without points")
            lines.append(fix(points[0]))
            i = 1
        if seg.flags & PathFlags.BEZIER:
            if (len(points) - i) % 3:
                raise ProtocolError("bezier segment point count is not a multiple of 3 (the client aborts)")
            for k in range(i, len(points) - 2, 3):
                if not lines:
                    raise ProtocolError("bezier segment without a start point")
                last = lines[-1]
                p0 = (last[0] << 4, last[1] << 4)
                c1, c2, end = points[k], points[k + 1], points[k + 2]
                _subdivide_bezier(lines, p0, (c1.x, c1.y), (c2.x, c2.y), (end.x, end.y))
        else:
            lines.extend(fix(p) for p in points[i:])
        if seg.flags & PathFlags.END:
            if seg.flags & PathFlags.CLOSE:
                if not lines:
                    raise ProtocolError("path CLOSE without points")
                lines.append(lines[0])
            flush()
    flush()
    return polylines


def zero_line_pixels(x1: int, y1: int, x2: int, y2: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The pixels ``miZeroLine`` draws for one segment (endpoint excluded) inside a
    ``width`` x ``height`` drawable, in drawing order, as (xs, ys) int64 arrays."""
    adx, ady = abs(x2 - x1), abs(y2 - y1)
    sx = -1 if x2 < x1 else 1
    sy = -1 if y2 < y1 else 1
    octant = (_XDECREASING if x2 < x1 else 0) | (_YDECREASING if y2 < y1 else 0)
    if adx > ady:
        major, minor, smaj, smin, start_maj, start_min, limit = adx, ady, sx, sy, x1, y1, width
    else:
        octant |= _YMAJOR
        major, minor, smaj, smin, start_maj, start_min, limit = ady, adx, sy, sx, y1, x1, height
    if major == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    bias = (_BIAS >> octant) & 1
    # steps k (0 <= k < major) whose major coordinate lies inside the drawable
    if smaj > 0:
        k_lo, k_hi = -start_maj, limit - 1 - start_maj
    else:
        k_lo, k_hi = start_maj - (limit - 1), start_maj
    k_lo, k_hi = max(k_lo, 0), min(k_hi, major - 1)
    if k_lo > k_hi:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = np.arange(k_lo, k_hi + 1, dtype=np.int64)
    # closed form of the Bresenham loop: minor steps taken before pixel k
    n = (2 * k * minor + major - bias) // (2 * major)
    maj = start_maj + smaj * k
    mnr = start_min + smin * n
    xs, ys = (maj, mnr) if not octant & _YMAJOR else (mnr, maj)
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    return xs[inside], ys[inside]


def _dashes(stroke: Stroke) -> tuple[list[int], int] | None:
    attr = stroke.attr
    if not attr.flags & LineFlags.STYLED:
        return None
    style = [fix_to_int(s) & 0xFF for s in (attr.style or ())]  # lineGC dash entries are unsigned char
    if not style:
        return None
    if attr.flags & LineFlags.START_WITH_GAP:
        style = style[1:] + style[:1]
        return style, style[0]
    return style, 0


def draw_stroke(canvas: Canvas, base: DisplayBase, stroke: Stroke, resolver: ImageResolver) -> None:
    """Draw a STROKE (``canvas_draw_stroke``): each segment as a zero-width line, dashed if styled, brush through ``fore_mode``."""
    area = dest_area(canvas, base)
    if area.is_empty():
        touch_brush(canvas, stroke.brush, resolver)
        return
    rop = ropd_to_rop(stroke.fore_mode, RopInput.BRUSH, RopInput.DEST)
    brush = stroke.brush
    color = 0
    tile: Pixmap | None = None
    tile_pos = (0, 0)
    if brush.type == BrushType.SOLID:
        color = truncate_color(canvas, brush.color or 0)
    elif brush.type == BrushType.PATTERN:
        assert brush.pattern is not None
        if brush.pattern.pat.descriptor.type == ImageType.SURFACE:
            raise ProtocolError("a surface pattern in a zero-width stroke crashes the client")
        tile = source_pixmap(canvas, brush.pattern.pat, resolver)
        tile_pos = (brush.pattern.pos.x, brush.pattern.pos.y)
        if tile.width == 0 or tile.height == 0:
            raise ProtocolError("empty pattern image")
        if tile.format.bpp != canvas.pixfmt.bpp:
            raise ProtocolError("stroke pattern depth differs from the canvas (the client aborts)")
    elif brush.type != BrushType.NONE:
        raise ProtocolError(f"unknown brush type {brush.type}")
    dashes = _dashes(stroke)
    for polyline in flatten_path(stroke):
        dash_pos = dashes[1] if dashes else 0
        for (x1, y1), (x2, y2) in itertools.pairwise(polyline):
            xs, ys = zero_line_pixels(x1, y1, x2, y2, canvas.width, canvas.height)
            length = max(abs(x2 - x1), abs(y2 - y1))
            if dashes is not None:
                xs, ys, dash_pos = _apply_dashes(x1, y1, x2, y2, xs, ys, dashes[0], dash_pos, length)
            _fill_pixels(canvas, area, xs, ys, rop, color, tile, tile_pos)


def _apply_dashes(
    x1: int, y1: int, x2: int, y2: int, xs: np.ndarray, ys: np.ndarray, style: list[int], pos: int, length: int
) -> tuple[np.ndarray, np.ndarray, int]:
    period = sum(style)
    if period == 0:
        return xs, ys, pos
    # index along the segment of each pixel (its major-axis distance from the start)
    k = np.abs(xs - x1) if abs(x2 - x1) > abs(y2 - y1) else np.abs(ys - y1)
    bounds = np.cumsum(style)
    phase = (pos + k) % period
    on = (np.searchsorted(bounds, phase, side="right") % 2) == 0
    return xs[on], ys[on], (pos + length) % period


def _fill_pixels(
    canvas: Canvas,
    area: Area,
    xs: np.ndarray,
    ys: np.ndarray,
    rop: Rop,
    color: int,
    tile: Pixmap | None,
    tile_pos: tuple[int, int],
) -> None:
    if xs.size == 0:
        return
    inside = (xs >= area.left) & (xs < area.right) & (ys >= area.top) & (ys < area.bottom)
    xs, ys = xs[inside], ys[inside]
    keep = area.mask[ys - area.top, xs - area.left]
    xs, ys = xs[keep], ys[keep]
    if xs.size == 0:
        return
    dst = canvas.pixels[ys, xs]
    if tile is None:
        src: np.ndarray | int = color
    else:
        src = tile.pixels[(ys - tile_pos[1]) % tile.height, (xs - tile_pos[0]) % tile.width]
    canvas.pixels[ys, xs] = apply_rop(rop, src, dst)
