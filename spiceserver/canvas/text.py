"""DRAW_TEXT: raster glyph strings drawn through a glyph mask.

Counterpart of spice-common ``common/sw_canvas.c`` ``canvas_draw_text`` and of
``common/canvas_base.c`` ``canvas_get_str_mask`` / ``canvas_put_glyph_bits`` /
``canvas_get_pixman_brush``:

1. the destination region is the box clipped by the canvas and the clip rects (no QMask);
2. a non-empty ``back_area`` is filled with the back brush (COPY) inside that region; this requires
   ``fore_mode == OP_PUT`` (anything else makes the client abort);
3. the glyphs of the first raster depth flag (A1, else A4, else A8) are merged into one mask covering
   the union of their boxes (``render_pos + glyph_origin``, ``width`` x ``height``): A1 glyph bits
   (bit 7 = leftmost) are OR-ed into an a1 mask, A4 nibbles (high first) and A8 bytes are merged
   with MAX into an a8 mask, a nibble ``n`` counting as ``n << 4``. Glyph rows are stored
   **bottom-up** (``RASTER_TOP_DOWN`` is ignored by spice-common);
4. the fore brush is composited OVER through that mask, then ``clear_dest_alpha`` runs on xRGB
   canvases. A pattern fore brush is sampled relative to the mask's top-left corner (shifted by
   the pattern position), as spice-common's transform does. ``back_mode`` is not used.

A solid fore brush on a 32-bit canvas takes the compiled fast path of :mod:`.fast_text` (same
pixels); this module draws everything else.
"""

from __future__ import annotations

import numpy as np

from ..errors import ProtocolError
from ..proto.enums import BrushType, StringFlags
from ..proto.messages.display import Brush, DisplayBase, RasterGlyph, Text
from ..region import Region
from .area import Area, clear_dest_alpha, composite_into, dest_area, draw_brush, source_pixmap, touch_brush
from .images import ImageResolver
from .pixman import Filter, Op, Repeat
from .rop import Rop, Ropd
from .surface import Canvas, PixFmt, Pixmap

__all__ = ["draw_text", "glyph_mask"]


def _glyph_box(g: RasterGlyph) -> tuple[int, int, int, int]:
    top = g.render_pos.y + g.glyph_origin.y
    left = g.render_pos.x + g.glyph_origin.x
    return left, top, left + g.width, top + g.height


def glyph_mask(glyphs: tuple[RasterGlyph, ...], depth: int) -> tuple[int, int, np.ndarray]:
    """``canvas_get_str_mask``: ``(left, top, alpha)`` with alpha uint8 0..255 (A1: 0 or 255).

    Raises:
        ProtocolError: no glyphs (the client aborts).
    """
    if not glyphs:
        raise ProtocolError("text string without glyphs (the client aborts)")
    boxes = [_glyph_box(g) for g in glyphs]
    left = min(b[0] for b in boxes)
    top = min(b[1] for b in boxes)
    right = max(b[2] for b in boxes)
    bottom = max(b[3] for b in boxes)
    if (right - left) * (bottom - top) > 1 << 26:
        raise ProtocolError("text mask too large")
    mask = np.zeros((max(bottom - top, 0), max(right - left, 0)), np.uint8)
    for g, (gl, gt, gr, gb) in zip(glyphs, boxes, strict=True):
        w, h = gr - gl, gb - gt
        if w <= 0 or h <= 0:
            continue
        data = np.frombuffer(g.data, np.uint8)
        if depth == 1:
            stride = (w + 7) // 8
            rows = data[: stride * h].reshape(h, stride)
            values = np.unpackbits(rows, axis=1, bitorder="big")[:, :w] * np.uint8(255)
        elif depth == 4:
            stride = (w + 1) // 2
            rows = data[: stride * h].reshape(h, stride)
            values = np.stack((rows & 0xF0, (rows << 4) & 0xF0), axis=2).reshape(h, -1)[:, :w].astype(np.uint8)
        else:
            values = data[: w * h].reshape(h, w)
        values = values[::-1]  # glyph rows are bottom-up
        dest = mask[gt - top : gb - top, gl - left : gr - left]
        np.maximum(dest, values, out=dest)  # OR for 0/255 bits, MAX for A4/A8
    return left, top, mask


def _solid_brush_8888(canvas: Canvas, color: int) -> int:
    """``canvas_get_pixman_brush`` for a solid colour: channels of ``color_shift`` bits scaled to 16
    bits, then pixman keeps the top 8 bits; alpha 0xff."""
    if canvas.pixfmt in (PixFmt.X1R5G5B5, PixFmt.R5G6B5):
        shift, cmask = 5, 0x1F
    else:
        shift, cmask = 8, 0xFF
    out = 0xFF000000
    for i, channel_shift in enumerate((0, 8, 16)):
        c = (color >> (shift * i)) & cmask
        out |= (((c * 0xFFFF) // cmask) >> 8) << channel_shift
    return out


def draw_text(canvas: Canvas, base: DisplayBase, text: Text, resolver: ImageResolver) -> None:
    """Draw a TEXT (``canvas_draw_text``): the back area with the back brush, then the raster glyph mask with the fore brush."""
    area = dest_area(canvas, base)
    if area.is_empty():
        touch_brush(canvas, text.fore_brush, resolver)
        touch_brush(canvas, text.back_brush, resolver)
        return
    back = text.back_area
    if back.top != back.bottom and back.left != back.right:
        if text.fore_mode != Ropd.OP_PUT:
            raise ProtocolError(f"text with a back area needs fore_mode PUT, not {text.fore_mode:#x} (client aborts)")
        back_area = area.intersect(Region.from_rect(back.left, back.top, back.right, back.bottom))
        draw_brush(canvas, back_area, text.back_brush, Rop.COPY, resolver)
    string = text.str
    if string.flags & StringFlags.RASTER_A1:
        depth = 1
    elif string.flags & StringFlags.RASTER_A4:
        depth = 4
    elif string.flags & StringFlags.RASTER_A8:
        depth = 8
    else:
        return  # vector glyphs: spice-common warns and draws nothing more
    left, top, alpha = glyph_mask(string.glyphs or (), depth)
    _draw_fore(canvas, area, text.fore_brush, left, top, alpha, resolver)


def _draw_fore(
    canvas: Canvas, area: Area, brush: Brush, left: int, top: int, alpha: np.ndarray, resolver: ImageResolver
) -> None:
    if brush.type not in (BrushType.SOLID, BrushType.PATTERN):
        return  # NONE: no brush, nothing drawn
    h, w = alpha.shape
    if h == 0 or w == 0:
        return
    # the composite covers the mask rectangle, clipped by the destination region
    x1, y1 = max(left, area.left), max(top, area.top)
    x2, y2 = min(left + w, area.right), min(top + h, area.bottom)
    if x1 < x2 and y1 < y2:
        sub = Area(x1, y1, area.mask[y1 - area.top : y2 - area.top, x1 - area.left : x2 - area.left])
        m = alpha[y1 - top : y2 - top, x1 - left : x2 - left].astype(np.uint32) << np.uint32(24)
        xs = np.arange(x1 - left, x2 - left, dtype=np.int64)[None, :]
        ys = np.arange(y1 - top, y2 - top, dtype=np.int64)[:, None]
        if brush.type == BrushType.SOLID:
            color = _solid_brush_8888(canvas, brush.color or 0)
            src = Pixmap(np.array([[color]], np.uint32), PixFmt.A8R8G8B8)
            composite_into(canvas, sub, Op.OVER, src, xs * 0, ys * 0, mask=m, repeat=Repeat.NORMAL)
        else:
            assert brush.pattern is not None
            pat = source_pixmap(canvas, brush.pattern.pat, resolver)
            px, py = brush.pattern.pos.x, brush.pattern.pos.y
            composite_into(
                canvas, sub, Op.OVER, pat, xs - px, ys - py, mask=m, filt=Filter.NEAREST, repeat=Repeat.NORMAL
            )
    clear_dest_alpha(canvas, left, top, w, h)
