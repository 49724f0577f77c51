"""Rendering display-channel draw operations onto a :class:`~spiceserver.canvas.surface.Canvas`.

Counterpart of spice-common ``common/canvas_base.c`` (``canvas_draw_fill``, ``_copy``,
``_opaque``, ``_blackness``, ``_whiteness``, ``_invers``, ``_rop3``, ``_transparent``,
``_alpha_blend``, ``_composite``, ``canvas_copy_bits``, ``canvas_scale_surface``) on top of
``common/sw_canvas.c`` (``__blit_image*``, ``__scale_image*``, ``__blend_*``, ``__colorkey_*``,
``copy_region``) and ``common/pixman_utils.c``, which is what spice-gtk draws every message with.
DRAW_TEXT lives in :mod:`.text` (a solid colour through glyphs on a 32-bit canvas: :mod:`.fast_text`),
DRAW_STROKE in :mod:`.stroke`, the pixman arithmetic in :mod:`.pixman`; the rectangle fast paths in
:mod:`.fast`.

Entry points: :func:`render` takes a display message (``DrawFill`` ... ``DrawComposite``,
``CopyBits``); :func:`render_op` takes the ``DisplayBase`` and the operation body (``Fill`` ...
``Composite``, or a ``CopyBits`` message for copy-bits).

Common rules (as the client): the destination region is the box clipped to the canvas and to the
clip rects, then (Fill, Opaque, Copy, Blend, Blackness, Whiteness, Invers, Rop3) to the QMask. An
operation whose region is empty still decodes images that must enter a cache. Same-size copies
leave pixels whose source falls outside the source image untouched; scaled ones (``src_area``
size != box size) sample the whole source image with pixman's REPEAT_NONE, writing transparent
black outside it. ``scale_mode`` 1 is NEAREST, 0 (interpolate) pixman's GOOD = bilinear.

Conditions under which spice-common aborts the client (unregistered rop3 codes, pattern or image
depth mismatches, a Rop3 source smaller than the box, text with a back area and a fore mode other
than PUT, ...) raise :class:`~spiceserver.errors.ProtocolError` here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import NotSupportedError, ProtocolError
from ..proto.enums import BrushType, CompositeFlags, ImageType
from ..proto.messages import display as d
from ..proto.messages.base import Rect, Transform
from ..region import Region
from . import fast, fast_text
from .area import (
    Area,
    apply_qmask,
    clear_dest_alpha,
    composite_into,
    dest_area,
    dest_region,
    draw_brush,
    region_mask,
    source_pixmap,
    src_operand,
    touch_brush,
    truncate_color,
    write,
)
from .images import ImageResolver, decode_image, touch_image
from .pixman import Filter, Op, Repeat, combine, from_8888, sample, to_8888
from .rop import Rop, RopInput, apply_rop3, ropd_to_rop
from .stroke import draw_stroke
from .surface import DTYPES, Canvas, PixFmt, Pixmap
from .text import draw_text

__all__ = ["render", "render_op", "DrawOp"]

DrawOp = d.DrawOpStruct | d.CopyBits

SCALE_INTERPOLATE = 0
SCALE_NEAREST = 1
ALPHA_DEST_HAS_ALPHA = 1
ALPHA_SRC_SURFACE_HAS_ALPHA = 2


def _same_size(box: Rect, src: Rect) -> bool:
    return box.right - box.left == src.right - src.left and box.bottom - box.top == src.bottom - src.top


def _fixed32(v: int) -> int:
    """Wrap to a signed 32-bit ``pixman_fixed_t``."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _scale_filter(scale_mode: int) -> Filter:
    if scale_mode == SCALE_NEAREST:
        return Filter.NEAREST
    if scale_mode == SCALE_INTERPOLATE:
        return Filter.BILINEAR
    raise ProtocolError(f"unknown scale mode {scale_mode} (the client aborts)")


def _scale_matrix(src: Rect, box: Rect) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """sw_canvas.c ``__scale_image``: scale ``src size / box size`` (16.16, truncated) then
    translate by the source area's origin."""
    dw, dh = box.right - box.left, box.bottom - box.top
    fsx = _fixed32(((src.right - src.left) << 16) // dw)
    fsy = _fixed32(((src.bottom - src.top) << 16) // dh)
    return (fsx, 0, _fixed32(src.left << 16)), (0, fsy, _fixed32(src.top << 16))


def _box_coords(area: Area, box: Rect) -> tuple[np.ndarray, np.ndarray]:
    """Source-space coordinates of the area's columns/rows when compositing at the box origin."""
    return area.xs() - box.left, area.ys() - box.top


# --- image blits -----------------------------------------------------------------------------


def _blit(canvas: Canvas, area: Area, src: Pixmap, box: Rect, src_area: Rect, rop: Rop) -> None:
    """``blit_image(_rop)``: raw pixels from ``src`` at ``x - box.left + src_area.left``; pixels
    whose source is outside the image are left alone."""
    ox, oy = src_area.left - box.left, src_area.top - box.top
    # the source image covers canvas columns [-ox, width - ox) and rows [-oy, height - oy)
    x1, x2 = max(area.left, -ox), min(area.right, src.width - ox)
    y1, y2 = max(area.top, -oy), min(area.bottom, src.height - oy)
    if x1 >= x2 or y1 >= y2:
        return
    sub = Area(x1, y1, area.mask[y1 - area.top : y2 - area.top, x1 - area.left : x2 - area.left])
    write(canvas, sub, src.pixels[y1 + oy : y2 + oy, x1 + ox : x2 + ox], rop)


def _scale(canvas: Canvas, area: Area, src: Pixmap, box: Rect, src_area: Rect, scale_mode: int, rop: Rop) -> None:
    """``scale_image(_rop)``: pixman SRC with a scale transform, REPEAT_NONE."""
    matrix = _scale_matrix(src_area, box)
    xs, ys = _box_coords(area, box)
    filt = _scale_filter(scale_mode)
    if rop == Rop.COPY:
        composite_into(canvas, area, Op.SRC, src, xs, ys, matrix=matrix, filt=filt)
        return
    # scaled into a temporary image of the source's format, then blitted with the rop
    values = sample(src, xs, ys, matrix=matrix, filt=filt, raw=True)
    write(canvas, area, from_8888(values, src.format).astype(DTYPES[src.format], copy=False), rop)


def _draw_image(
    canvas: Canvas,
    area: Area,
    image: d.Image | None,
    box: Rect,
    src_area: Rect,
    scale_mode: int,
    rop: Rop,
    resolver: ImageResolver,
) -> None:
    src = src_operand(canvas, image, resolver)
    if _same_size(box, src_area):
        _blit(canvas, area, src, box, src_area, rop)
    else:
        _scale(canvas, area, src, box, src_area, scale_mode, rop)


# --- operations ------------------------------------------------------------------------------


def _fill(canvas: Canvas, base: d.DisplayBase, op: d.Fill, resolver: ImageResolver) -> None:
    if fast.ENABLED and fast.fill(canvas, base, op):
        return
    area = apply_qmask(dest_area(canvas, base), op.mask, base.box.left, base.box.top, resolver)
    rop = ropd_to_rop(op.rop_descriptor, RopInput.BRUSH, RopInput.DEST)
    if area.is_empty():
        touch_brush(canvas, op.brush, resolver)
        return
    draw_brush(canvas, area, op.brush, rop, resolver)


def _copy(canvas: Canvas, base: d.DisplayBase, op: d.Copy | d.Blend, resolver: ImageResolver) -> None:
    if fast.ENABLED and fast.copy(canvas, base, op, resolver):
        return
    area = apply_qmask(dest_area(canvas, base), op.mask, base.box.left, base.box.top, resolver)
    rop = ropd_to_rop(op.rop_descriptor, RopInput.SRC, RopInput.DEST)
    if area.is_empty():
        touch_image(op.src_bitmap, canvas.pixfmt, resolver)
        return
    _draw_image(canvas, area, op.src_bitmap, base.box, op.src_area, op.scale_mode, rop, resolver)


def _opaque(canvas: Canvas, base: d.DisplayBase, op: d.Opaque, resolver: ImageResolver) -> None:
    if fast.ENABLED and fast.opaque(canvas, base, op, resolver):
        return
    area = apply_qmask(dest_area(canvas, base), op.mask, base.box.left, base.box.top, resolver)
    rop = ropd_to_rop(op.rop_descriptor, RopInput.BRUSH, RopInput.SRC)
    if area.is_empty():
        touch_image(op.src_bitmap, canvas.pixfmt, resolver)
        touch_brush(canvas, op.brush, resolver)
        return
    _draw_image(canvas, area, op.src_bitmap, base.box, op.src_area, op.scale_mode, Rop.COPY, resolver)
    draw_brush(canvas, area, op.brush, rop, resolver)


def _solid(value: int, rop: Rop) -> Callable[[Canvas, d.DisplayBase, Any, ImageResolver], None]:
    def draw(canvas: Canvas, base: d.DisplayBase, op: Any, resolver: ImageResolver) -> None:
        if fast.ENABLED and fast.solid(canvas, base, op, value, rop):
            return
        area = apply_qmask(dest_area(canvas, base), op.mask, base.box.left, base.box.top, resolver)
        write(canvas, area, value, rop)

    return draw


def _rop3(canvas: Canvas, base: d.DisplayBase, op: d.Rop3, resolver: ImageResolver) -> None:
    if canvas.pixfmt.bpp not in (16, 32):
        raise ProtocolError(f"rop3 on a {canvas.pixfmt.bpp} bpp canvas is not implemented by spice-common")
    area = apply_qmask(dest_area(canvas, base), op.mask, base.box.left, base.box.top, resolver)
    box = base.box
    width, height = box.right - box.left, box.bottom - box.top
    if width <= 0 or height <= 0:
        return
    # d: a copy of the whole box of the canvas (canvas_get_image_from_self)
    dst = np.zeros((height, width), canvas.pixels.dtype)
    x1, y1 = max(box.left, 0), max(box.top, 0)
    x2, y2 = min(box.right, canvas.width), min(box.bottom, canvas.height)
    if x1 < x2 and y1 < y2:
        dst[y1 - box.top : y2 - box.top, x1 - box.left : x2 - box.left] = canvas.pixels[y1:y2, x1:x2]
    src = src_operand(canvas, op.src_bitmap, resolver)
    sa = op.src_area
    if not _same_size(box, sa):
        # canvas_scale_surface: double scale factors, source origin rounded in scaled space
        sx = (sa.right - sa.left) / width
        sy = (sa.bottom - sa.top) / height
        matrix = ((_fixed32(int(sx * 65536.0)), 0, 0), (0, _fixed32(int(sy * 65536.0)), 0))
        ox = int(np.floor(sa.left / sx + 0.5)) if sx else 0
        oy = int(np.floor(sa.top / sy + 0.5)) if sy else 0
        xs = np.arange(width, dtype=np.int64)[None, :] + ox
        ys = np.arange(height, dtype=np.int64)[:, None] + oy
        values = sample(src, xs, ys, matrix=matrix, filt=_scale_filter(op.scale_mode), raw=True)
        src = Pixmap(from_8888(values, src.format).astype(DTYPES[src.format], copy=False), src.format)
        px, py = 0, 0
    else:
        px, py = sa.left, sa.top
    if px < 0 or py < 0 or src.width - px < width or src.height - py < height:
        raise ProtocolError("rop3 source smaller than the box (the client aborts)")
    s = src.pixels[py : py + height, px : px + width]
    if op.brush.type == BrushType.PATTERN:
        assert op.brush.pattern is not None
        pat = source_pixmap(canvas, op.brush.pattern.pat, resolver)
        if pat.format.bpp != canvas.pixfmt.bpp or pat.width == 0 or pat.height == 0:
            raise ProtocolError("rop3 pattern depth differs from the canvas (the client aborts)")
        ox = (box.left - op.brush.pattern.pos.x) % pat.width
        oy = (box.top - op.brush.pattern.pos.y) % pat.height
        iy = (np.arange(height)[:, None] + oy) % pat.height
        ix = (np.arange(width)[None, :] + ox) % pat.width
        p: np.ndarray | int = pat.pixels[iy, ix]
    else:
        p = truncate_color(canvas, op.brush.color or 0)
    result = apply_rop3(op.rop3, p, s, dst)
    if area.is_empty():
        return
    write(
        canvas, area, result[area.top - box.top : area.bottom - box.top, area.left - box.left : area.right - box.left]
    )


def _transparent(canvas: Canvas, base: d.DisplayBase, op: d.Transparent, resolver: ImageResolver) -> None:
    area = dest_area(canvas, base)
    if area.is_empty():
        touch_image(op.src_bitmap, canvas.pixfmt, resolver)
        return
    fmt = canvas.pixfmt
    if fmt in (PixFmt.X8R8G8B8, PixFmt.A8R8G8B8):
        key, keymask = op.true_color & 0xFFFFFF, 0xFFFFFF
    elif fmt == PixFmt.X1R5G5B5:
        c = op.true_color
        key, keymask = ((c >> 3) & 0x1F) | ((c >> 6) & 0x3E0) | ((c >> 9) & 0x7C00), 0xFFFF
    elif fmt == PixFmt.R5G6B5:
        c = op.true_color
        key, keymask = ((c >> 3) & 0x1F) | ((c >> 5) & 0x7E0) | ((c >> 8) & 0xF800), 0xFFFF
    else:
        key, keymask = 0, 0xFF
    src = src_operand(canvas, op.src_bitmap, resolver)
    box, sa = base.box, op.src_area
    if _same_size(box, sa):
        sx = area.xs() - box.left + sa.left
        sy = area.ys() - box.top + sa.top
        valid = (sx >= 0) & (sx < src.width) & (sy >= 0) & (sy < src.height)
        if src.width == 0 or src.height == 0:
            return
        values = src.pixels[np.clip(sy, 0, src.height - 1), np.clip(sx, 0, src.width - 1)]
        mask = area.mask & valid
    else:
        xs, ys = _box_coords(area, box)
        raw = sample(src, xs, ys, matrix=_scale_matrix(sa, box), filt=Filter.NEAREST, raw=True)
        values = from_8888(raw, src.format).astype(DTYPES[src.format], copy=False)
        mask = area.mask
    keep = (values.astype(np.uint32) & keymask) != key
    write(canvas, Area(area.left, area.top, mask & keep), values)


def _alpha_blend(canvas: Canvas, base: d.DisplayBase, op: d.AlphaBlend, resolver: ImageResolver) -> None:
    area = dest_area(canvas, base)
    if op.alpha == 0 or area.is_empty():
        touch_image(op.src_bitmap, canvas.pixfmt, resolver)
        return
    image = op.src_bitmap
    if image is None:
        raise ProtocolError("alpha blend without a source image")
    if image.descriptor.type == ImageType.SURFACE:
        assert image.surface is not None
        surf = resolver.surface(image.surface.surface_id)
        src = surf.pixmap(with_alpha=bool(op.alpha_flags & ALPHA_SRC_SURFACE_HAS_ALPHA))
    else:
        src = decode_image(image, canvas.pixfmt, resolver, want_original=True)
    dest_has_alpha = bool(op.alpha_flags & ALPHA_DEST_HAS_ALPHA)
    dest_fmt = PixFmt.A8R8G8B8 if dest_has_alpha and canvas.pixfmt == PixFmt.X8R8G8B8 else canvas.pixfmt
    box, sa = base.box, op.src_area
    mask_alpha = None if op.alpha == 0xFF else op.alpha
    xs, ys = _box_coords(area, box)
    if _same_size(box, sa):
        composite_into(
            canvas, area, Op.OVER, src, xs + sa.left, ys + sa.top, mask_alpha=mask_alpha, dest_format=dest_fmt
        )
    else:
        composite_into(
            canvas,
            area,
            Op.OVER,
            src,
            xs,
            ys,
            matrix=_scale_matrix(sa, box),
            filt=Filter.NEAREST,
            mask_alpha=mask_alpha,
            dest_format=dest_fmt,
        )
    if canvas.pixfmt == PixFmt.X8R8G8B8 and not dest_has_alpha:
        clear_dest_alpha(canvas, box.left, box.top, box.right - box.left, box.bottom - box.top)


def _matrix_of(t: Transform) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    return (_fixed32(t.t00), _fixed32(t.t01), _fixed32(t.t02)), (_fixed32(t.t10), _fixed32(t.t11), _fixed32(t.t12))


def _composite(canvas: Canvas, base: d.DisplayBase, op: d.Composite, resolver: ImageResolver) -> None:
    flags = op.flags
    pd_op = flags & 0xFF
    if pd_op > Op.SATURATE:
        raise NotSupportedError(f"composite operator {pd_op:#x} is not implemented")
    area = dest_area(canvas, base)
    box = base.box
    width, height = box.right - box.left, box.bottom - box.top
    if width <= 0 or height <= 0:
        return
    if op.src_bitmap is None:
        raise ProtocolError("composite without a source image")
    # d: a copy of the box (canvas_get_image_from_self; its DEST_OPAQUE handling has no effect)
    dst = np.zeros((height, width), canvas.pixels.dtype)
    x1, y1 = max(box.left, 0), max(box.top, 0)
    x2, y2 = min(box.right, canvas.width), min(box.bottom, canvas.height)
    if x1 < x2 and y1 < y2:
        dst[y1 - box.top : y2 - box.top, x1 - box.left : x2 - box.left] = canvas.pixels[y1:y2, x1:x2]
    src = _composite_operand(canvas, op.src_bitmap, resolver, bool(flags & (1 << 22)))
    src_matrix = _matrix_of(op.src_transform) if flags & CompositeFlags.HAS_SRC_TRANSFORM and op.src_transform else None
    src_filter = Filter((flags >> 8) & 7) if (flags >> 8) & 7 <= 6 else Filter.CONVOLUTION
    src_repeat = Repeat((flags >> 14) & 3)
    xs = np.arange(width, dtype=np.int64)[None, :]
    ys = np.arange(height, dtype=np.int64)[:, None]
    full = Area(0, 0, np.ones((height, width), bool))
    mask_values = None
    component_alpha = False
    if flags & CompositeFlags.HAS_MASK:
        if op.mask_bitmap is None:
            raise ProtocolError("composite HAS_MASK without a mask image")
        mpm = _composite_operand(canvas, op.mask_bitmap, resolver, False)
        m_matrix = (
            _matrix_of(op.mask_transform) if flags & CompositeFlags.HAS_MASK_TRANSFORM and op.mask_transform else None
        )
        m_filter = Filter((flags >> 11) & 7) if (flags >> 11) & 7 <= 6 else Filter.CONVOLUTION
        m_repeat = Repeat((flags >> 16) & 3)
        component_alpha = bool(flags & (1 << 18))
        mask_values = sample(
            mpm, xs + op.mask_origin.x, ys + op.mask_origin.y, matrix=m_matrix, filt=m_filter, repeat=m_repeat
        )
    if mask_values is None and not component_alpha:
        composite_into(
            canvas,
            full,
            Op(pd_op),
            src,
            xs + op.src_origin.x,
            ys + op.src_origin.y,
            matrix=src_matrix,
            filt=src_filter,
            repeat=src_repeat,
            target=dst,
        )
    else:
        s = sample(
            src, xs + op.src_origin.x, ys + op.src_origin.y, matrix=src_matrix, filt=src_filter, repeat=src_repeat
        )
        dv = to_8888(Pixmap(dst, canvas.pixfmt), raw=True)
        out = combine(pd_op, np.broadcast_to(s, dv.shape), mask_values, dv, component_alpha=component_alpha)
        dst = from_8888(out, canvas.pixfmt).astype(canvas.pixels.dtype, copy=False)
    if area.is_empty():
        return
    write(canvas, area, dst[area.top - box.top : area.bottom - box.top, area.left - box.left : area.right - box.left])


def _composite_operand(canvas: Canvas, image: d.Image, resolver: ImageResolver, force_opaque: bool) -> Pixmap:
    if image.descriptor.type == ImageType.SURFACE:
        assert image.surface is not None
        return resolver.surface(image.surface.surface_id).pixmap(force_opaque=force_opaque)
    return decode_image(image, canvas.pixfmt, resolver)


def _copy_bits(canvas: Canvas, base: d.DisplayBase, op: d.CopyBits, resolver: ImageResolver) -> None:
    """``canvas_copy_bits``: move pixels by ``box.origin - src_pos`` within the surface; the result
    is as if the source were read before any write (``copy_region`` orders its rectangles so)."""
    if fast.ENABLED:
        fast.copy_bits(canvas, base, op)
        return
    box = base.box
    dx, dy = box.left - op.src_pos.x, box.top - op.src_pos.y
    if dx == 0 and dy == 0:
        return
    region = dest_region(canvas, base) & Region.from_rect(dx, dy, dx + canvas.width, dy + canvas.height)
    bbox = region.bbox()
    if bbox is None:
        return
    left, top, right, bottom = bbox
    mask = region_mask(region, left, top, bottom - top, right - left)
    src = canvas.pixels[top - dy : bottom - dy, left - dx : right - dx].copy()
    sub = canvas.pixels[top:bottom, left:right]
    np.copyto(sub, src, where=mask)


def _text(canvas: Canvas, base: d.DisplayBase, op: d.Text, resolver: ImageResolver) -> None:
    if fast.ENABLED and fast_text.draw_text(canvas, base, op):
        return
    draw_text(canvas, base, op, resolver)


def _stroke(canvas: Canvas, base: d.DisplayBase, op: d.Stroke, resolver: ImageResolver) -> None:
    draw_stroke(canvas, base, op, resolver)


_OPS: dict[type, Callable[[Canvas, d.DisplayBase, Any, ImageResolver], None]] = {
    d.Fill: _fill,
    d.Opaque: _opaque,
    d.Copy: _copy,
    d.Blend: _copy,  # spice-common: "copy and blend are the same"
    d.Blackness: _solid(0x00000000, Rop.COPY),
    d.Whiteness: _solid(0xFFFFFFFF, Rop.COPY),
    d.Invers: _solid(0, Rop.INVERT),
    d.Rop3: _rop3,
    d.Stroke: _stroke,
    d.Text: _text,
    d.Transparent: _transparent,
    d.AlphaBlend: _alpha_blend,
    d.Composite: _composite,
    d.CopyBits: _copy_bits,
}

_MESSAGES: tuple[type, ...] = (
    d.DrawFill,
    d.DrawOpaque,
    d.DrawCopy,
    d.DrawBlend,
    d.DrawBlackness,
    d.DrawWhiteness,
    d.DrawInvers,
    d.DrawRop3,
    d.DrawStroke,
    d.DrawText,
    d.DrawTransparent,
    d.DrawAlphaBlend,
    d.DrawComposite,
)


def render_op(canvas: Canvas, base: d.DisplayBase, op: DrawOp, resolver: ImageResolver) -> None:
    """Draw one operation body onto ``canvas`` as spice-gtk's canvas would.

    Args:
        canvas: the target surface (``base.surface_id`` is not looked at).
        base: the DisplayBase (box and clip).
        op: the operation body (``Fill`` ... ``Composite``), or a ``CopyBits`` message.
        resolver: surfaces and caches for images that reference them.

    Raises:
        ProtocolError: the operation is malformed or would make the client abort.
        NotSupportedError: an image codec or composite feature not implemented yet.
    """
    fn = _OPS.get(type(op))
    if fn is None:
        raise TypeError(f"not a draw operation: {type(op).__name__}")
    if canvas.pixfmt == PixFmt.A1 and not isinstance(op, d.Composite):
        if isinstance(op, d.CopyBits):
            return  # spice_pixman_copy_rect copies width * (1 / 8) bytes per row: nothing
        raise ProtocolError("spice-common cannot draw on a 1-bit surface (the client aborts)")
    fn(canvas, base, op, resolver)


def render(canvas: Canvas, msg: Any, resolver: ImageResolver) -> None:
    """Draw a display message (``DrawFill`` ... ``DrawComposite`` or ``CopyBits``) onto ``canvas``.

    Raises:
        TypeError: not a draw message.
        ProtocolError, NotSupportedError: see :func:`render_op`.
    """
    if isinstance(msg, d.CopyBits):
        render_op(canvas, msg.base, msg, resolver)
    elif isinstance(msg, _MESSAGES):
        base: d.DisplayBase = getattr(msg, "base")  # noqa: B009 - every Draw* message has base + data
        render_op(canvas, base, getattr(msg, "data"), resolver)  # noqa: B009
    else:
        raise TypeError(f"not a draw message: {type(msg).__name__}")
