"""Fast path of DRAW_TEXT: a solid colour through raster glyphs, in one compiled kernel.

Counterpart of spice-common ``common/sw_canvas.c`` ``canvas_draw_text`` with
``common/canvas_base.c`` ``canvas_get_str_mask`` / ``canvas_put_glyph_bits`` for the glyph mask
and pixman's ``fast_composite_over_n_8_8888`` (``pixman-fast-path.c``, the ``combine_over_u``
arithmetic of ``pixman-combine32.c``) for the composite; the general path is :mod:`.text`.

Taken when the fore brush is SOLID, the back brush SOLID or NONE, the canvas 32-bit (xRGB or ARGB,
C-contiguous), the string holds raster glyphs (A1, A4 or A8) with their full data, and the
destination is rectangles known without rasterising (:func:`.fast.dest_rects`). A back area is
filled first (:func:`.fast._put`, COPY). Then :func:`_draw_glyphs` merges the glyphs into a scratch
mask exactly as :func:`.text.glyph_mask` does (A1 bits OR-ed, A4 nibbles ``n << 4`` and A8 bytes
MAX-ed, rows bottom-up), composites the colour OVER that mask inside each destination rectangle
with the arithmetic of :func:`.pixman.combine` (``MUL_UN8``, saturating add; an xRGB canvas's X
byte taken as it is), and runs ``clear_dest_alpha`` on xRGB canvases. The pixels are those of the
general path (``tests/canvas/test_fast_text.py`` renders random glyph runs both ways, compiled and
plain).

Everything else, and every case the general path rejects (no glyphs, a mask too large, short glyph
data, a back area with a fore mode other than PUT), returns False: the caller runs :mod:`.text`.
So does every call until the warm-up has compiled the kernel, and every call without numba (no
per-pixel Python loop on the draw path). :data:`.fast.ENABLED` switches this path off with the
others (the caller checks it).
"""

from __future__ import annotations

import threading

import numpy as np

from .._jit import HAVE_NUMBA, kernel_input, njit, on_warmup, uindex, widen
from ..proto.enums import BrushType, StringFlags
from ..proto.messages import display as d
from .fast import _brush_value, _put, dest_rects
from .rop import Rop, Ropd
from .surface import Canvas, PixFmt

__all__ = ["draw_text"]

#: The largest glyph mask (pixels) the general path accepts (:func:`.text.glyph_mask`).
_MAX_MASK = 1 << 26


@njit(inline=True)
def _mul_un8(a: int, b: int) -> int:  # pragma: no cover - inlined
    """pixman's ``MUL_UN8``: ``a * b / 255`` correctly rounded."""
    t = a * b + 0x80
    return (t + (t >> 8)) >> 8


#: Layout of the kernel's parameter array: a header, 5 values per glyph, then 4 per rectangle.
_DEPTH, _LEFT, _TOP, _MASK_W, _MASK_H, _COLOR, _XRGB, _N_GLYPHS, _HEADER = range(9)


@njit(keep_gil=True)
def _draw_glyphs(pixels: np.ndarray, data: np.ndarray, params: np.ndarray) -> None:  # pragma: no cover - compiled
    """Glyphs into a mask, a solid colour OVER it into ``pixels`` inside each rectangle, clear_dest_alpha.

    Args:
        pixels: the canvas, uint32 (rows, columns), C-contiguous.
        data: every glyph's bytes, concatenated (uint8).
        params: int64, one call's values (scalars in one array: a kernel call costs per argument):
            ``depth`` (1, 4 or 8 bits per glyph pixel), ``left, top`` (the mask's top-left corner
            on the canvas), ``mask_w, mask_h`` (> 0), ``color`` (a8r8g8b8, alpha 0xff), ``xrgb``
            (1: run ``clear_dest_alpha`` over the mask's box afterwards), ``n`` (glyphs); then
            ``x, y, width, height, offset`` of each glyph of positive size (its top-left corner on
            the canvas, inside the mask; its bytes from ``offset`` in ``data``, all inside); then
            ``left, top, right, bottom`` of each destination rectangle (disjoint, inside the canvas).
    """
    depth, left, top = params[_DEPTH], params[_LEFT], params[_TOP]
    mask_w, mask_h, color = params[_MASK_W], params[_MASK_H], params[_COLOR]
    n = params[_N_GLYPHS]
    mask = np.zeros((mask_h, mask_w), np.uint8)
    for i in range(n):
        j = uindex(_HEADER + 5 * i)
        gx, gy, gw, gh, off = params[j] - left, params[j + 1] - top, params[j + 2], params[j + 3], params[j + 4]
        stride = (gw * depth + 7) >> 3
        for r in range(gh):
            row = mask[uindex(gy + r)]
            src = off + (gh - 1 - r) * stride  # rows are stored bottom-up
            for c in range(gw):
                if depth == 1:
                    v = 255 if (widen(data[uindex(src + (c >> 3))]) >> (7 - (c & 7))) & 1 else 0
                elif depth == 4:
                    b = widen(data[uindex(src + (c >> 1))])
                    v = b & 0xF0 if c & 1 == 0 else (b << 4) & 0xF0
                else:
                    v = widen(data[uindex(src + c)])
                if v > widen(row[uindex(gx + c)]):
                    row[uindex(gx + c)] = v
    cb, cg, cr = color & 0xFF, (color >> 8) & 0xFF, (color >> 16) & 0xFF
    opaque = color | 0xFF000000
    right, bottom = left + mask_w, top + mask_h
    for k in range(_HEADER + 5 * n, params.shape[0], 4):
        x1, y1 = max(params[uindex(k)], left), max(params[uindex(k + 1)], top)
        x2, y2 = min(params[uindex(k + 2)], right), min(params[uindex(k + 3)], bottom)
        for y in range(y1, y2):
            prow = pixels[uindex(y)]
            mrow = mask[uindex(y - top)]
            for x in range(x1, x2):
                m = widen(mrow[uindex(x - left)])
                if m == 0:
                    continue  # OVER through alpha 0 leaves the pixel as it is
                if m == 255:
                    prow[uindex(x)] = opaque
                    continue
                dv = widen(prow[uindex(x)])
                sa = _mul_un8(255, m)
                ia = 255 - sa
                nb = min(_mul_un8(cb, m) + _mul_un8(dv & 0xFF, ia), 255)
                ng = min(_mul_un8(cg, m) + _mul_un8((dv >> 8) & 0xFF, ia), 255)
                nr = min(_mul_un8(cr, m) + _mul_un8((dv >> 16) & 0xFF, ia), 255)
                na = min(sa + _mul_un8((dv >> 24) & 0xFF, ia), 255)
                prow[uindex(x)] = (na << 24) | (nr << 16) | (ng << 8) | nb
    if params[_XRGB]:
        # clear_dest_alpha: the mask's box clipped to the canvas, whatever the clip region
        cx1, cy1 = max(left, 0), max(top, 0)
        cx2, cy2 = min(right, pixels.shape[1]), min(bottom, pixels.shape[0])
        if cx1 < cx2 and cy1 < cy2 and widen(pixels[uindex(cy1), uindex(cx1)]) >> 24 == 0xFF:
            for y in range(cy1, cy2):
                prow = pixels[uindex(y)]
                for x in range(cx1, cx2):
                    prow[uindex(x)] = widen(prow[uindex(x)]) & 0x00FFFFFF


_kernel_ready = threading.Event()


@on_warmup
def _warm_up() -> None:
    """Compile :func:`_draw_glyphs` for the one argument type list :func:`draw_text` uses."""
    if HAVE_NUMBA:
        _draw_glyphs(
            np.zeros((2, 2), np.uint32),
            kernel_input(np.frombuffer(b"\x80", np.uint8)),
            np.array([1, 0, 0, 1, 1, 0xFF000000, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1], np.int64),
        )
        _kernel_ready.set()


_A1, _A4, _A8 = int(StringFlags.RASTER_A1), int(StringFlags.RASTER_A4), int(StringFlags.RASTER_A8)


def draw_text(canvas: Canvas, base: d.DisplayBase, op: d.Text) -> bool:
    """DRAW_TEXT with a solid fore brush on a 32-bit canvas; False when the general path must run."""
    if not _kernel_ready.is_set() or op.fore_brush.type != BrushType.SOLID:
        return False
    back_value = _brush_value(op.back_brush)
    pixels = canvas.pixels
    if back_value is None or canvas.pixfmt not in (PixFmt.X8R8G8B8, PixFmt.A8R8G8B8):
        return False
    if not (pixels.flags.c_contiguous and pixels.flags.aligned and pixels.flags.writeable):
        return False
    back = op.back_area
    with_back = back.top != back.bottom and back.left != back.right
    if with_back and op.fore_mode != Ropd.OP_PUT:
        return False  # the general path raises
    string = op.str
    flags = int(string.flags)
    depth = 1 if flags & _A1 else 4 if flags & _A4 else 8 if flags & _A8 else 0
    glyphs = string.glyphs
    if not depth or not glyphs:
        return False  # vector glyphs, or no glyphs (the general path raises)
    # one pass: the mask's box (the union of the glyph boxes) and the kernel's table
    left = top = 1 << 62
    right = bottom = -(1 << 62)
    params = [depth, 0, 0, 0, 0, 0, 0, 0]  # the header is filled in below
    chunks = []
    offset = 0
    for g in glyphs:
        pos, origin, w, h, data = g.render_pos, g.glyph_origin, g.width, g.height, g.data
        x, y = pos.x + origin.x, pos.y + origin.y
        if x < left:
            left = x
        if y < top:
            top = y
        if x + w > right:
            right = x + w
        if y + h > bottom:
            bottom = y + h
        if w > 0 and h > 0:
            if len(data) < ((w * depth + 7) >> 3) * h:
                return False  # not from the wire: let the general path decide
            params += (x, y, w, h, offset)
            chunks.append(data)
            offset += len(data)
        elif w < 0 or h < 0:
            return False
    mask_w, mask_h = right - left, bottom - top
    if mask_w * mask_h > _MAX_MASK:
        return False  # the general path raises
    rects = dest_rects(canvas, base)
    if not rects:
        return True  # nothing to draw, and no pattern to decode
    if with_back:
        bx1, by1, bx2, by2 = back.left, back.top, back.right, back.bottom
        clipped = []
        for x1, y1, x2, y2 in rects:
            x1, y1, x2, y2 = max(x1, bx1), max(y1, by1), min(x2, bx2), min(y2, by2)
            if x1 < x2 and y1 < y2:
                clipped.append((x1, y1, x2, y2))
        _put(canvas, tuple(clipped), back_value, Rop.COPY)
    if mask_w <= 0 or mask_h <= 0:
        return True
    color = 0xFF000000 | (int(op.fore_brush.color or 0) & 0xFFFFFF)  # text._solid_brush_8888 at 8 bits
    params[_LEFT:_HEADER] = (left, top, mask_w, mask_h, color, int(canvas.pixfmt == PixFmt.X8R8G8B8), len(chunks))
    for r in rects:
        params += r
    # an array over bytes is read-only, C-contiguous and aligned: the type kernel_input gives the warm-up
    _draw_glyphs(pixels, np.frombuffer(b"".join(chunks), np.uint8), np.array(params, np.int64))
    return True
