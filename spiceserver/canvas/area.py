"""Shared machinery of the draw operations: destination areas, masks, brushes, compositing.

Counterpart of the helpers at the heart of spice-common ``common/canvas_base.c``
(``canvas_clip_pixman``, ``canvas_mask_pixman``, ``draw_brush``) and ``common/sw_canvas.c``
(``fill_solid_rects*``, ``fill_tiled_rects*``, ``clear_dest_alpha``, ``canvas_get_as_surface``).

An :class:`Area` is the destination region of one operation as a boolean mask over its bounding
box: the client's ``pixman_region32_t`` after clipping to the box, the canvas, the clip rects and
the operation's QMask. Every pixel write goes through it, so nothing outside the region changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ProtocolError
from ..proto.enums import BrushType, ClipType, ImageType
from ..proto.messages.display import Brush, DisplayBase, Image, QMask
from ..region import Region
from .images import ImageResolver, decode_image, decode_mask, touch_image
from .pixman import Filter, Op, Repeat, combine, from_8888, sample, to_8888, transform_points
from .rop import Rop, apply_rop
from .surface import DTYPES, Canvas, PixFmt, Pixmap

__all__ = [
    "Area",
    "dest_area",
    "apply_qmask",
    "draw_brush",
    "touch_brush",
    "source_pixmap",
    "src_operand",
    "write",
    "clear_dest_alpha",
    "composite_into",
    "truncate_color",
]


@dataclass
class Area:
    """A destination region: ``mask`` (bool, rows x columns) placed at ``(left, top)``."""

    left: int
    top: int
    mask: np.ndarray

    @property
    def right(self) -> int:
        """Canvas column just past the mask's last column."""
        return self.left + int(self.mask.shape[1])

    @property
    def bottom(self) -> int:
        """Canvas row just past the mask's last row."""
        return self.top + int(self.mask.shape[0])

    def is_empty(self) -> bool:
        """True when no pixel of the mask is set."""
        return not bool(self.mask.any())

    def ys(self) -> np.ndarray:
        """Canvas row of each mask row, shape (h, 1)."""
        return np.arange(self.top, self.bottom, dtype=np.int64)[:, None]

    def xs(self) -> np.ndarray:
        """Canvas column of each mask column, shape (1, w)."""
        return np.arange(self.left, self.right, dtype=np.int64)[None, :]

    def intersect(self, region: Region) -> Area:
        """The same area with only the pixels that also lie inside ``region``."""
        return Area(self.left, self.top, self.mask & region_mask(region, self.left, self.top, *self.mask.shape))


def region_mask(region: Region, left: int, top: int, height: int, width: int) -> np.ndarray:
    """Rasterise ``region`` into a bool array covering ``[left, left+width) x [top, top+height)``."""
    out = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in region.rects:
        x1, x2 = max(x1 - left, 0), min(x2 - left, width)
        y1, y2 = max(y1 - top, 0), min(y2 - top, height)
        if x1 < x2 and y1 < y2:
            out[y1:y2, x1:x2] = True
    return out


def dest_region(canvas: Canvas, base: DisplayBase) -> Region:
    """``pixman_region32_init_rect(box)`` then ``canvas_clip_pixman``: box, canvas and clip rects."""
    box = base.box
    region = Region.from_rect(box.left, box.top, box.right, box.bottom) & Region.from_rect(
        0, 0, canvas.width, canvas.height
    )
    if base.clip.type == ClipType.RECTS and base.clip.rects is not None:
        region = region & Region([(r.left, r.top, r.right, r.bottom) for r in base.clip.rects.rects])
    return region


def dest_area(canvas: Canvas, base: DisplayBase) -> Area:
    """The destination region of a draw as an :class:`Area` (possibly empty)."""
    region = dest_region(canvas, base)
    bbox = region.bbox()
    if bbox is None:
        return Area(0, 0, np.zeros((0, 0), bool))
    left, top, right, bottom = bbox
    return Area(left, top, region_mask(region, left, top, bottom - top, right - left))


# --- masks -----------------------------------------------------------------------------------


def _surface_mask_bits(surface: Canvas) -> np.ndarray:
    """A surface used as a mask: its memory read as a1 rows (``pixman_image_create_bits(PIXMAN_a1,
    ..., surface data, surface stride)``), ``width`` bits of each row."""
    pm = surface.pixmap()
    if pm.format == PixFmt.A1:
        return pm.pixels.astype(bool)
    row_bytes = {8: (surface.width + 3) & ~3, 16: (surface.width * 2 + 3) & ~3, 32: surface.width * 4}[pm.format.bpp]
    raw = np.ascontiguousarray(pm.pixels).view(np.uint8).reshape(surface.height, -1)
    if raw.shape[1] < row_bytes:
        raw = np.pad(raw, ((0, 0), (0, row_bytes - raw.shape[1])))
    bits = np.unpackbits(raw, axis=1, bitorder="little")[:, : surface.width]
    return bits.astype(bool)


def apply_qmask(area: Area, qmask: QMask, box_left: int, box_top: int, resolver: ImageResolver) -> Area:
    """``canvas_mask_pixman``: keep the pixels whose mask bit is set (after INVERS).

    Destination pixel ``(x, y)`` reads mask pixel ``(x - box.left + pos.x, y - box.top + pos.y)``;
    pixels outside the mask image are dropped, inverted or not.
    """
    image = qmask.bitmap
    if image is None:
        return area  # decoded even for an empty region: a CACHE_ME mask still enters the cache
    invers = bool(qmask.flags & 1)
    if image.descriptor.type == ImageType.SURFACE:
        assert image.surface is not None
        bits = _surface_mask_bits(resolver.surface(image.surface.surface_id))
        if invers:
            bits = ~bits
    else:
        bits = decode_mask(image, invers, resolver)
    mh, mw = bits.shape
    mx = area.xs() - box_left + qmask.pos.x
    my = area.ys() - box_top + qmask.pos.y
    inside = (mx >= 0) & (mx < mw) & (my >= 0) & (my < mh)
    if mh == 0 or mw == 0:
        return Area(area.left, area.top, np.zeros_like(area.mask))
    picked = bits[np.clip(my, 0, mh - 1), np.clip(mx, 0, mw - 1)]
    return Area(area.left, area.top, area.mask & inside & picked)


# --- pixel writes ----------------------------------------------------------------------------


def write(canvas: Canvas, area: Area, values: np.ndarray | int, rop: Rop = Rop.COPY) -> None:
    """Apply ``rop`` with ``values`` (per pixel of the area's box, or one value) inside the area."""
    if area.is_empty():
        return
    sub = canvas.pixels[area.top : area.bottom, area.left : area.right]
    dt = sub.dtype
    src: np.ndarray | int = (
        values.astype(dt, copy=False) if isinstance(values, np.ndarray) else int(values) & int(np.iinfo(dt).max)
    )
    result = apply_rop(rop, src, sub) if rop != Rop.COPY else np.broadcast_to(np.asarray(src, dt), sub.shape)
    np.copyto(sub, result, where=area.mask)


def truncate_color(canvas: Canvas, color: int) -> int:
    """A 32-bit brush colour as the canvas's fill functions store it (cut to the pixel size)."""
    return int(color) & int(np.iinfo(canvas.pixels.dtype).max)


def source_pixmap(canvas: Canvas, image: Image, resolver: ImageResolver) -> Pixmap:
    """An image operand: a surface's own pixels (``canvas_get_surface``) or the decoded image in
    the canvas's target format (``canvas_get_image(..., FALSE)``)."""
    if image.descriptor.type == ImageType.SURFACE:
        assert image.surface is not None
        try:
            return resolver.surface(image.surface.surface_id).pixmap()
        except KeyError:
            raise ProtocolError(f"missing surface {image.surface.surface_id}") from None
    return decode_image(image, canvas.pixfmt, resolver)


def src_operand(canvas: Canvas, image: Image | None, resolver: ImageResolver) -> Pixmap:
    """The source image of a blit: :func:`source_pixmap`, which must have the canvas's depth."""
    if image is None:
        raise ProtocolError("draw operation without a source image")
    pm = source_pixmap(canvas, image, resolver)
    if pm.format.bpp != canvas.pixfmt.bpp:
        raise ProtocolError(f"source of {pm.format.bpp} bpp on a {canvas.pixfmt.bpp} bpp canvas (the client aborts)")
    return pm


def touch_brush(canvas: Canvas, brush: Brush, resolver: ImageResolver) -> None:
    """Decode a PATTERN brush's image for its cache side effects only (nothing is drawn)."""
    if brush.type == BrushType.PATTERN and brush.pattern is not None:
        touch_image(brush.pattern.pat, canvas.pixfmt, resolver)


def tile_values(tile: Pixmap, area: Area, offset_x: int, offset_y: int) -> np.ndarray:
    """``spice_pixman_tile_rect``: tile pixel ``((x - offset_x) mod w, (y - offset_y) mod h)``."""
    if tile.width == 0 or tile.height == 0:
        raise ProtocolError("empty pattern image")
    ix = (area.xs() - offset_x) % tile.width
    iy = (area.ys() - offset_y) % tile.height
    out: np.ndarray = tile.pixels[iy, ix]
    return out


def _check_depth(canvas: Canvas, pm: Pixmap, what: str) -> None:
    if pm.format.bpp != canvas.pixfmt.bpp:
        raise ProtocolError(f"{what} of {pm.format.bpp} bpp on a {canvas.pixfmt.bpp} bpp canvas (the client aborts)")


def draw_brush(canvas: Canvas, area: Area, brush: Brush, rop: Rop, resolver: ImageResolver) -> None:
    """``draw_brush``: solid colour, tiled pattern, or (NONE) colour 0, through ``rop``."""
    if area.is_empty():
        return
    if brush.type == BrushType.SOLID:
        write(canvas, area, truncate_color(canvas, brush.color or 0), rop)
    elif brush.type == BrushType.PATTERN:
        assert brush.pattern is not None
        tile = source_pixmap(canvas, brush.pattern.pat, resolver)
        _check_depth(canvas, tile, "pattern")
        write(canvas, area, tile_values(tile, area, brush.pattern.pos.x, brush.pattern.pos.y), rop)
    elif brush.type == BrushType.NONE:
        write(canvas, area, 0, rop)
    else:
        raise ProtocolError(f"unknown brush type {brush.type}")


def clear_dest_alpha(canvas: Canvas, x: int, y: int, width: int, height: int) -> None:
    """``clear_dest_alpha`` (sw_canvas.c): after an OVER on an xRGB canvas, if the first pixel of the
    rectangle (clipped to the canvas) has X byte 0xff, clear the X byte of the whole rectangle --
    regardless of the clip region."""
    if canvas.pixfmt != PixFmt.X8R8G8B8:
        return
    w, h = canvas.width, canvas.height
    if x + width <= 0 or x >= w or y + height <= 0 or y >= h or width == 0 or height == 0:
        return
    if x < 0:
        width += x
        x = 0
    width = min(width, w - x)
    if y < 0:
        height += y
        y = 0
    height = min(height, h - y)
    if int(canvas.pixels[y, x]) & 0xFF000000 == 0xFF000000:
        canvas.pixels[y : y + height, x : x + width] &= np.uint32(0x00FFFFFF)


def composite_into(
    canvas: Canvas,
    area: Area,
    op: Op,
    src: Pixmap,
    xs: np.ndarray,
    ys: np.ndarray,
    *,
    matrix: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None,
    filt: int = 3,
    repeat: int = 0,
    mask_alpha: int | None = None,
    mask: np.ndarray | None = None,
    dest_format: PixFmt | None = None,
    target: np.ndarray | None = None,
) -> None:
    """``pixman_image_composite32(op, src, mask, canvas)`` clipped to ``area``.

    ``xs``/``ys`` are the source-space coordinates of the area's columns/rows (before ``matrix``).
    ``mask_alpha`` is a solid mask; ``mask`` per-pixel a8r8g8b8 mask values. ``dest_format`` views
    the canvas in another format of the same depth (``canvas_get_as_surface``). ``target`` writes
    into that array (the area's box) instead of the canvas.

    The X byte of an xRGB destination: pixman copies it from an xRGB source unchanged when the
    operation reduces to a copy (SRC, or OVER without mask) and either the samples cover the area or
    it is a SRC through a scale/translate transform (its SSE2 scaling paths) -- not for a repeating
    1x1 source (a solid fill), rotations, or REFLECT unless NEAREST samples cover the area. Otherwise
    the stored byte is the computed alpha (an xRGB source counting as opaque).
    """
    if area.is_empty():
        return
    dfmt = dest_format or canvas.pixfmt
    sub = target if target is not None else canvas.pixels[area.top : area.bottom, area.left : area.right]
    flt, rep = Filter(filt), Repeat(repeat)
    copy_like = mask is None and mask_alpha is None and op in (Op.SRC, Op.OVER)
    solid = rep != Repeat.NONE and src.width == 1 and src.height == 1  # pixman makes it a solid fill
    xrgb = src.format == PixFmt.X8R8G8B8 and dfmt == PixFmt.X8R8G8B8
    if copy_like and not solid and xrgb and _raw_copy(src, xs, ys, matrix, flt, rep, op):
        values = sample(src, xs, ys, matrix=matrix, filt=flt, repeat=rep, raw=True)
        np.copyto(sub, values.astype(sub.dtype, copy=False), where=area.mask)
        return
    s = sample(src, xs, ys, matrix=matrix, filt=flt, repeat=rep)
    d = to_8888(Pixmap(sub, dfmt), raw=True)
    s = np.broadcast_to(s, d.shape)
    m: np.ndarray | None = None
    if mask is not None:
        m = np.broadcast_to(mask, d.shape)
    elif mask_alpha is not None:
        m = np.full(d.shape, (mask_alpha & 0xFF) << 24, np.uint32)
    out = combine(op, s, m, d)
    np.copyto(sub, from_8888(out, dfmt).astype(DTYPES[dfmt], copy=False), where=area.mask)


def _raw_copy(
    src: Pixmap,
    xs: np.ndarray,
    ys: np.ndarray,
    matrix: tuple[tuple[int, int, int], tuple[int, int, int]] | None,
    flt: Filter,
    rep: Repeat,
    op: Op,
) -> bool:
    """Whether pixman 0.42 (x86-64) runs an xRGB-to-xRGB SRC/OVER as a raw copy (see composite_into)."""
    if matrix is not None and (matrix[0][1] != 0 or matrix[1][0] != 0):
        return False  # rotations and shears: general path
    if rep == Repeat.REFLECT:
        nearest = flt in (Filter.FAST, Filter.NEAREST) or matrix is None or _bilinear_is_nearest(matrix)
        return nearest and _covers(src, xs, ys, matrix, flt)
    if matrix is None:
        return rep == Repeat.NORMAL or _covers(src, xs, ys, matrix, flt)
    return rep != Repeat.NONE or op == Op.SRC or _covers(src, xs, ys, matrix, flt)


def _bilinear_is_nearest(matrix: tuple[tuple[int, int, int], tuple[int, int, int]]) -> bool:
    """Whether BILINEAR sampling reduces to NEAREST: pixman's test (integer coefficients with an odd
    ``t00 + t01`` and ``t10 + t11`` put every sample on a pixel centre)."""
    (m00, m01, m02), (m10, m11, m12) = matrix
    if any(v & 0xFFFF for v in (m00, m01, m02, m10, m11, m12)):
        return False
    return bool(((m00 + m01) >> 16) & 1) and bool(((m10 + m11) >> 16) & 1)


def _covers(
    src: Pixmap,
    xs: np.ndarray,
    ys: np.ndarray,
    matrix: tuple[tuple[int, int, int], tuple[int, int, int]] | None,
    flt: int,
) -> bool:
    """Whether every sample of the area's bounding box falls inside ``src`` (pixman's COVER test)."""
    vx, vy = transform_points(matrix, xs, ys)
    vx, vy = np.broadcast_arrays(vx, vy)
    # pixman treats BILINEAR as NEAREST when the transform maps pixel centres onto pixel centres
    if flt in (Filter.FAST, Filter.NEAREST) or matrix is None or _bilinear_is_nearest(matrix):
        ix, iy = (vx - 1) >> 16, (vy - 1) >> 16
        lo_x, hi_x, lo_y, hi_y = ix, ix, iy, iy
    else:
        lo_x, lo_y = (vx - 0x8000) >> 16, (vy - 0x8000) >> 16
        hi_x, hi_y = lo_x + 1, lo_y + 1
    return bool(
        (lo_x.min(initial=0) >= 0)
        and (hi_x.max(initial=0) < src.width)
        and (lo_y.min(initial=0) >= 0)
        and (hi_y.max(initial=0) < src.height)
    )
