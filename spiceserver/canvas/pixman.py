"""The parts of pixman that spice-common's canvas relies on, vectorised with numpy.

spice-common's ``common/canvas_base.c`` and ``common/sw_canvas.c`` hand scaling, alpha blending,
text and Render-style composites to pixman (``pixman_image_composite32``). This module reproduces
the arithmetic pixman 0.42 performs on x86-64 for those cases, checked bit for bit against the
system's ``libpixman-1`` in ``tests/canvas``:

* **formats** -- fetching a pixel gives premultiplied a8r8g8b8: x8r8g8b8 and the 16-bit formats
  get alpha 0xff, 5/6-bit channels expand by bit replication (``c << 3 | c >> 2``), a8 gives
  ``a << 24``; storing truncates (``c >> 3``) and keeps the alpha byte in an x8r8g8b8 pixel.
* **transforms** -- the sample point of destination pixel ``(x, y)`` is
  ``M . (x + 1/2, y + 1/2, 1)`` in 16.16 fixed point, rounded as ``pixman_transform_point_3d``
  does; NEAREST takes pixel ``(v - 1) >> 16``; BILINEAR (also what FILTER_GOOD and FILTER_BEST
  select for these transforms) blends the 2x2 pixels around ``v - 1/2`` with 7-bit weights and
  truncates ``sum >> 14``.
* **repeat** -- NONE (outside is transparent black), NORMAL, PAD, REFLECT.
* **combiners** -- the Porter-Duff operators of ``pixman-combine32.c``, unified and component
  alpha (an a8 mask with component alpha has zero colour channels, as in pixman), with ``MUL_UN8``
  rounding and saturating adds; SATURATE, which pixman 0.42 runs through its float combiners, in
  float32 with ``pixman_float_to_unorm`` rounding. Not reproduced: the PDF blend modes and the
  disjoint/conjoint operators (NotSupportedError), and the float *bilinear* fetch pixman uses for
  SATURATE's operands (8-bit bilinear here; may differ by one).

The X byte of an x8r8g8b8 destination depends on which pixman fast path runs; callers choose
"raw" fetches where pixman's x86-64 fast paths copy that byte unchanged (documented at each use).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import numpy as np

from ..errors import NotSupportedError
from .surface import DTYPES, PixFmt, Pixmap

__all__ = [
    "Filter",
    "Repeat",
    "Op",
    "to_8888",
    "from_8888",
    "convert",
    "sample",
    "sample_points",
    "transform_points",
    "combine",
    "mul_un8",
]


class Filter(IntEnum):
    """``pixman_filter_t``."""

    FAST = 0
    GOOD = 1
    BEST = 2
    NEAREST = 3
    BILINEAR = 4
    CONVOLUTION = 5
    SEPARABLE_CONVOLUTION = 6


class Repeat(IntEnum):
    """``pixman_repeat_t``."""

    NONE = 0
    NORMAL = 1
    PAD = 2
    REFLECT = 3


class Op(IntEnum):
    """The Porter-Duff subset of ``pixman_op_t`` this module implements."""

    CLEAR = 0x00
    SRC = 0x01
    DST = 0x02
    OVER = 0x03
    OVER_REVERSE = 0x04
    IN = 0x05
    IN_REVERSE = 0x06
    OUT = 0x07
    OUT_REVERSE = 0x08
    ATOP = 0x09
    ATOP_REVERSE = 0x0A
    XOR = 0x0B
    ADD = 0x0C
    SATURATE = 0x0D


# --- formats ---------------------------------------------------------------------------------


def _expand5(c: np.ndarray) -> np.ndarray:
    return (c << 3) | (c >> 2)


def _expand6(c: np.ndarray) -> np.ndarray:
    return (c << 2) | (c >> 4)


def to_8888(pm: Pixmap, *, raw: bool = False) -> np.ndarray:
    """Fetch a whole pixmap as premultiplied a8r8g8b8 uint32 (what pixman's fetchers return).

    Args:
        pm: the pixmap.
        raw: keep the X byte of x8r8g8b8 pixels instead of forcing alpha 0xff (what pixman's
            same-format fast paths effectively do).
    """
    p = pm.pixels
    fmt = pm.format
    if fmt == PixFmt.A8R8G8B8:
        return p.astype(np.uint32, copy=False)
    if fmt == PixFmt.X8R8G8B8:
        return p.astype(np.uint32, copy=False) if raw else (p | np.uint32(0xFF000000)).astype(np.uint32)
    if fmt == PixFmt.A8:
        return p.astype(np.uint32) << np.uint32(24)
    if fmt == PixFmt.A1:
        return (p.astype(np.uint32) & np.uint32(1)) * np.uint32(0xFF000000)
    v = p.astype(np.uint32)
    if fmt == PixFmt.X1R5G5B5:
        r, g, b = _expand5((v >> 10) & 0x1F), _expand5((v >> 5) & 0x1F), _expand5(v & 0x1F)
    else:
        r, g, b = _expand5((v >> 11) & 0x1F), _expand6((v >> 5) & 0x3F), _expand5(v & 0x1F)
    out: np.ndarray = (np.uint32(0xFF000000) | (r << 16) | (g << 8) | b).astype(np.uint32)
    return out


def from_8888(v: np.ndarray, fmt: PixFmt) -> np.ndarray:
    """Store a8r8g8b8 values in ``fmt`` (pixman's store functions; x8r8g8b8 keeps the alpha byte)."""
    v = v.astype(np.uint32, copy=False)
    if fmt in (PixFmt.A8R8G8B8, PixFmt.X8R8G8B8):
        return v
    if fmt == PixFmt.A8:
        return (v >> 24).astype(np.uint8)
    if fmt == PixFmt.A1:
        return (v >> 31).astype(np.uint8)
    r, g, b = (v >> 16) & 0xFF, (v >> 8) & 0xFF, v & 0xFF
    if fmt == PixFmt.X1R5G5B5:
        return (((r >> 3) << 10) | ((g >> 3) << 5) | (b >> 3)).astype(np.uint16)
    return (((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3)).astype(np.uint16)


def convert(pm: Pixmap, fmt: PixFmt) -> Pixmap:
    """``pixman_image_composite32(PIXMAN_OP_SRC, pm, NULL, new image of fmt)``, or the same pixmap
    when no conversion is needed. Like spice-common (``pixman_format_compatible``) an a8r8g8b8
    image is used as x8r8g8b8 as it is."""
    if pm.format == fmt:
        return pm
    if pm.format == PixFmt.A8R8G8B8 and fmt == PixFmt.X8R8G8B8:
        return Pixmap(pm.pixels, fmt)
    return Pixmap(from_8888(to_8888(pm), fmt).astype(DTYPES[fmt], copy=False), fmt)


# --- arithmetic ------------------------------------------------------------------------------


def mul_un8(a: np.ndarray, b: np.ndarray | np.unsignedinteger[Any]) -> np.ndarray:
    """pixman's ``MUL_UN8``: ``a * b / 255`` correctly rounded (fits uint16 arithmetic)."""
    t: np.ndarray = a * b + 0x80
    out: np.ndarray = (t + (t >> 8)) >> 8
    return out


def _split16(v: np.ndarray) -> np.ndarray:
    """uint32 a8r8g8b8 (...) -> uint16 channels (..., 4), B, G, R, A."""
    return np.ascontiguousarray(v, np.uint32).view(np.uint8).reshape(*v.shape, 4).astype(np.uint16)


def _alpha(c: np.ndarray) -> np.ndarray:
    """The alpha channel broadcast over the 4 channels (a full-shape view: fast to combine with)."""
    return np.broadcast_to(c[..., 3:4], c.shape)


def _split(v: np.ndarray) -> np.ndarray:
    """uint32 a8r8g8b8 (...) -> int32 channels (..., 4) in memory order B, G, R, A."""
    return np.ascontiguousarray(v, np.uint32).view(np.uint8).reshape(*v.shape, 4).astype(np.int32)


def _join(c: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(c.astype(np.uint8)).view(np.uint32).reshape(c.shape[:-1])


# --- transforms and sampling -----------------------------------------------------------------


def transform_points(
    matrix: tuple[tuple[int, int, int], tuple[int, int, int]] | None, xs: np.ndarray, ys: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """16.16 sample points of the pixel centres ``(xs + 1/2, ys + 1/2)`` (int64, broadcast).

    ``matrix`` holds the first two rows of an affine pixman transform in 16.16 fixed point (the
    third row being 0, 0, 1); None is the identity. Rounds as ``pixman_transform_point_31_16``.
    """
    xs = xs.astype(np.int64)
    ys = ys.astype(np.int64)
    if matrix is None:
        return (xs << 16) + 0x8000, (ys << 16) + 0x8000
    (m00, m01, m02), (m10, m11, m12) = matrix
    vx = m00 * xs + m02 + (((m00 + m01) * 0x8000 + 0x8000) >> 16)
    vy = m11 * ys + m12 + (((m10 + m11) * 0x8000 + 0x8000) >> 16)
    if m01:  # keep scale transforms separable (x from columns, y from rows)
        vx = vx + m01 * ys
    if m10:
        vy = vy + m10 * xs
    return vx, vy


def _wrap(i: np.ndarray, n: int, repeat: Repeat) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply a repeat mode to integer coordinates; returns (index, in-bounds mask or None)."""
    if repeat == Repeat.NORMAL:
        return i % n, None
    if repeat == Repeat.PAD:
        return np.clip(i, 0, n - 1), None
    if repeat == Repeat.REFLECT:
        j = i % (2 * n)
        return np.where(j >= n, 2 * n - j - 1, j), None
    inside = (i >= 0) & (i < n)
    return np.clip(i, 0, n - 1), inside


def _fetch(values: np.ndarray, ix: np.ndarray, iy: np.ndarray, repeat: Repeat) -> np.ndarray:
    h, w = values.shape
    if h == 0 or w == 0:
        return np.zeros(np.broadcast_shapes(ix.shape, iy.shape), np.uint32)
    x, xin = _wrap(ix, w, repeat)
    y, yin = _wrap(iy, h, repeat)
    out = values[y, x]
    if xin is not None and yin is not None:
        out = np.where(xin & yin, out, np.uint32(0))
    return np.asarray(out, np.uint32)


def sample_points(values: np.ndarray, vx: np.ndarray, vy: np.ndarray, filt: Filter, repeat: Repeat) -> np.ndarray:
    """Sample a8r8g8b8 ``values`` at 16.16 points ``(vx, vy)`` (broadcast together).

    Raises:
        NotSupportedError: a convolution filter.
    """
    if filt in (Filter.FAST, Filter.NEAREST):
        return _fetch(values, (vx - 1) >> 16, (vy - 1) >> 16, repeat)
    if filt not in (Filter.GOOD, Filter.BEST, Filter.BILINEAR):
        raise NotSupportedError(f"pixman filter {int(filt)} is not implemented")
    x1 = vx - 0x8000
    y1 = vy - 0x8000
    wx = ((x1 >> 9) & 0x7F).astype(np.int32)
    wy = ((y1 >> 9) & 0x7F).astype(np.int32)
    x0 = x1 >> 16
    y0 = y1 >> 16
    if vx.ndim == 2 and vy.ndim == 2 and vx.shape[0] == 1 and vy.shape[1] == 1 and values.size:
        return _bilinear_separable(values, x0[0], wx[0], y0[:, 0], wy[:, 0], repeat)
    shape = np.broadcast_shapes(vx.shape, vy.shape)
    wx = np.broadcast_to(wx, shape)[..., None]
    wy = np.broadcast_to(wy, shape)[..., None]
    tl = _split(_fetch(values, x0, y0, repeat))
    tr = _split(_fetch(values, x0 + 1, y0, repeat))
    bl = _split(_fetch(values, x0, y0 + 1, repeat))
    br = _split(_fetch(values, x0 + 1, y0 + 1, repeat))
    top: np.ndarray = tl * (128 - wx) + tr * wx
    bottom: np.ndarray = bl * (128 - wx) + br * wx
    total: np.ndarray = top * (128 - wy) + bottom * wy
    return _join(total >> 14)


def _bilinear_separable(
    values: np.ndarray, x0: np.ndarray, wx: np.ndarray, y0: np.ndarray, wy: np.ndarray, repeat: Repeat
) -> np.ndarray:
    """Bilinear sampling when x depends on the column only and y on the row only (scale transforms):
    rows first, then columns; the integer sums are the same as tap by tap."""
    h, w = values.shape
    if repeat == Repeat.NONE:
        # only the part of the image the taps touch, with a transparent border for everything outside
        ylo, yhi = max(int(y0.min()), 0), min(int(y0.max()) + 1, h - 1) + 1
        xlo, xhi = max(int(x0.min()), 0), min(int(x0.max()) + 1, w - 1) + 1
        crop = values[ylo:yhi, xlo:xhi] if ylo < yhi and xlo < xhi else values[:0, :0]
        ch, cw = crop.shape
        chans = np.pad(_split(crop), ((1, 1), (1, 1), (0, 0)))
        iy0 = np.clip(y0 - ylo + 1, 0, ch + 1)
        iy1 = np.clip(y0 - ylo + 2, 0, ch + 1)
        ix0 = np.clip(x0 - xlo + 1, 0, cw + 1)
        ix1 = np.clip(x0 - xlo + 2, 0, cw + 1)
    else:
        chans = _split(values)
        iy0, iy1 = _wrap(y0, h, repeat)[0], _wrap(y0 + 1, h, repeat)[0]
        ix0, ix1 = _wrap(x0, w, repeat)[0], _wrap(x0 + 1, w, repeat)[0]
    wy3 = wy[:, None, None]
    rows: np.ndarray = chans[iy0] * (128 - wy3) + chans[iy1] * wy3
    wx3 = wx[None, :, None]
    total: np.ndarray = rows[:, ix0] * (128 - wx3) + rows[:, ix1] * wx3
    return _join(total >> 14)


def sample(
    pm: Pixmap,
    xs: np.ndarray,
    ys: np.ndarray,
    *,
    matrix: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None,
    filt: Filter = Filter.NEAREST,
    repeat: Repeat = Repeat.NONE,
    raw: bool = False,
) -> np.ndarray:
    """a8r8g8b8 samples of ``pm`` for source-space pixel coordinates ``(xs, ys)`` (broadcast).

    Args:
        pm: the source image.
        xs: x of each destination pixel in the source's coordinate space (before the transform).
        ys: likewise y.
        matrix: the image transform (see :func:`transform_points`).
        filt: the image filter.
        repeat: the image repeat mode.
        raw: keep x8r8g8b8 X bytes (see :func:`to_8888`).
    """
    vx, vy = transform_points(matrix, xs, ys)
    return sample_points(to_8888(pm, raw=raw), vx, vy, filt, repeat)


# --- combiners -------------------------------------------------------------------------------

_ZERO = "0"
_ONE = "1"
_SA = "sa"
_ISA = "1-sa"
_DA = "da"
_IDA = "1-da"

# (factor applied to the source, factor applied to the destination), as pixman-combine32.c
_PD: dict[Op, tuple[str, str]] = {
    Op.CLEAR: (_ZERO, _ZERO),
    Op.SRC: (_ONE, _ZERO),
    Op.DST: (_ZERO, _ONE),
    Op.OVER: (_ONE, _ISA),
    Op.OVER_REVERSE: (_IDA, _ONE),
    Op.IN: (_DA, _ZERO),
    Op.IN_REVERSE: (_ZERO, _SA),
    Op.OUT: (_IDA, _ZERO),
    Op.OUT_REVERSE: (_ZERO, _ISA),
    Op.ATOP: (_DA, _ISA),
    Op.ATOP_REVERSE: (_IDA, _SA),
    Op.XOR: (_IDA, _ISA),
    Op.ADD: (_ONE, _ONE),
}


def combine(
    op: int, src: np.ndarray, mask: np.ndarray | None, dest: np.ndarray, *, component_alpha: bool = False
) -> np.ndarray:
    """``dest = (src IN mask) op dest`` on premultiplied a8r8g8b8 uint32 arrays (same shape).

    Args:
        op: a Porter-Duff :class:`Op`.
        src: source pixels.
        mask: mask pixels (only alpha is used unless ``component_alpha``), or None.
        dest: destination pixels (alpha as given: callers decide what an x8r8g8b8 X byte is).
        component_alpha: per-channel mask (``pixman_image_set_component_alpha``).

    Raises:
        NotSupportedError: an operator outside the Porter-Duff set.
    """
    try:
        pd_op = Op(op)
    except ValueError:
        raise NotSupportedError(f"pixman operator {op:#x} is not implemented") from None
    if pd_op == Op.SATURATE:
        return _saturate(src, mask, dest, component_alpha)
    s = _split16(src)
    d = _split16(dest)
    if mask is None:
        sa = _alpha(s)
    elif component_alpha:
        m = _split16(mask)
        sa = mul_un8(m, _alpha(s))
        s = mul_un8(s, m)
    else:
        s = mul_un8(s, _alpha(_split16(mask)))
        sa = _alpha(s)
    da = _alpha(d)
    full = np.uint16(255)
    fa, fb = _PD[pd_op]
    factors = {_ZERO: None, _ONE: full, _SA: sa, _ISA: full - sa, _DA: da, _IDA: full - da}
    a, b = factors[fa], factors[fb]
    total = np.zeros_like(d)
    if a is not None:
        total = total + (s if a is full else mul_un8(s, a))
    if b is not None:
        total = total + (d if b is full else mul_un8(d, b))
    return _join(np.minimum(total, full))


def _to_float(v: np.ndarray) -> np.ndarray:
    """``pixman_expand_to_float`` for a8r8g8b8: channel * (1/255) in float32 (B, G, R, A last axis)."""
    return _split(v).astype(np.float32) * np.float32(1.0 / 255)


def _from_float(f: np.ndarray) -> np.ndarray:
    """``pixman_contract_from_float``: clamp, ``u = f * 256`` truncated, ``u -= u >> 8``."""
    u = (np.clip(f, np.float32(0), np.float32(1)) * np.float32(256)).astype(np.int32)
    return _join(u - (u >> 8))


def _saturate(src: np.ndarray, mask: np.ndarray | None, dest: np.ndarray, component_alpha: bool) -> np.ndarray:
    """SATURATE, which pixman 0.42 runs through its float combiners (``pixman-combine-float.c``):
    ``min(1, s * min(1, (1 - da) / sa) + d)`` per channel, computed in float32."""
    s = _to_float(src)
    d = _to_float(dest)
    if mask is not None:
        m = _to_float(mask)
        if component_alpha:
            sa = m * s[..., 3:4]
            s = s * m
        else:
            s = s * m[..., 3:4]
            sa = np.broadcast_to(s[..., 3:4], s.shape)
    else:
        sa = np.broadcast_to(s[..., 3:4], s.shape)
    da = d[..., 3:4]
    with np.errstate(divide="ignore", invalid="ignore"):
        fa = np.where(sa == 0, np.float32(1), np.minimum(np.float32(1), (np.float32(1) - da) / sa))
    out = np.minimum(np.float32(1), s * fa.astype(np.float32) + d)
    return _from_float(out.astype(np.float32))
