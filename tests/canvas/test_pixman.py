"""The canvas's pixman arithmetic against the system libpixman-1 (what spice-gtk renders with)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.canvas.area import Area, composite_into
from spiceserver.canvas.pixman import Filter, Op, Repeat, combine, convert, sample, to_8888
from spiceserver.canvas.surface import Canvas, PixFmt, Pixmap

from . import pixman_oracle as px

pytestmark = pytest.mark.skipif(px.LIB is None, reason="libpixman-1 not available")

rng = np.random.default_rng(1234)

FORMAT_VALUES = {
    PixFmt.A8R8G8B8: lambda shape: rng.integers(0, 2**32, shape, dtype=np.uint32),
    PixFmt.X8R8G8B8: lambda shape: rng.integers(0, 2**32, shape, dtype=np.uint32),
    PixFmt.X1R5G5B5: lambda shape: rng.integers(0, 2**15, shape, dtype=np.uint16),
    PixFmt.R5G6B5: lambda shape: rng.integers(0, 2**16, shape, dtype=np.uint16),
    PixFmt.A8: lambda shape: rng.integers(0, 256, shape, dtype=np.uint8),
    PixFmt.A1: lambda shape: rng.integers(0, 2, shape, dtype=np.uint8),
}


def premultiplied(shape: tuple[int, int]) -> np.ndarray:
    """Random valid premultiplied a8r8g8b8 (channels <= alpha)."""
    a = rng.integers(0, 256, shape, dtype=np.uint32)
    c = [(rng.integers(0, 256, shape, dtype=np.uint32) * a) // 255 for _ in range(3)]
    return (a << 24) | (c[0] << 16) | (c[1] << 8) | c[2]


def random_pixmap(fmt: PixFmt, shape: tuple[int, int]) -> Pixmap:
    if fmt == PixFmt.A8R8G8B8:
        return Pixmap(premultiplied(shape), fmt)
    return Pixmap(FORMAT_VALUES[fmt](shape), fmt)


@pytest.mark.parametrize("src_fmt", list(PixFmt))
@pytest.mark.parametrize("dst_fmt", [f for f in PixFmt if f != PixFmt.A1])
def test_format_conversion(src_fmt: PixFmt, dst_fmt: PixFmt) -> None:
    src = random_pixmap(src_fmt, (5, 37))
    dest = px.Image(Pixmap(np.zeros((5, 37), {32: np.uint32, 16: np.uint16, 8: np.uint8}[dst_fmt.bpp]), dst_fmt))
    px.composite(Op.SRC, px.Image(src), None, dest, (0, 0), (0, 0), (0, 0), (37, 5))
    got = convert(src, dst_fmt).pixels
    if src_fmt == PixFmt.A8R8G8B8 and dst_fmt == PixFmt.X8R8G8B8:
        return  # spice-common uses such images as they are (pixman_format_compatible), no conversion
    assert (got == dest.pixels()).all()


def scale_case(
    sw: int, sh: int, dw: int, dh: int, sx: int, sy: int
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    fsx = (sw << 16) // dw
    fsy = (sh << 16) // dh
    return (fsx, 0, sx << 16), (0, fsy, sy << 16)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 30),
    st.integers(1, 40),
    st.integers(1, 30),
    st.integers(-3, 5),
    st.integers(-3, 5),
    st.sampled_from([Filter.NEAREST, Filter.GOOD, Filter.BILINEAR, Filter.BEST]),
    st.sampled_from([PixFmt.X8R8G8B8, PixFmt.A8R8G8B8, PixFmt.X1R5G5B5]),
    st.sampled_from([Repeat.NONE, Repeat.NORMAL, Repeat.PAD, Repeat.REFLECT]),
)
def test_scaled_src_matches_pixman(
    sw: int, sh: int, dw: int, dh: int, sx: int, sy: int, filt: Filter, fmt: PixFmt, repeat: Repeat
) -> None:
    """SRC with a scale+translate transform into the same format: RGB exact, X byte as pixman."""
    src = random_pixmap(fmt, (sh, sw))
    matrix = scale_case(sw, sh, dw, dh, sx, sy)
    ref_src = px.Image(src)
    ref_src.set_transform(matrix)
    ref_src.set_filter(filt)
    ref_src.set_repeat(repeat)
    zeros = np.zeros((dh, dw), src.pixels.dtype)
    dest = px.Image(Pixmap(zeros, fmt))
    px.composite(Op.SRC, ref_src, None, dest, (0, 0), (0, 0), (0, 0), (dw, dh))
    canvas = Canvas(dw, dh, {PixFmt.X8R8G8B8: 32, PixFmt.A8R8G8B8: 96, PixFmt.X1R5G5B5: 16}[fmt])
    xs = np.arange(dw)[None, :]
    ys = np.arange(dh)[:, None]
    area = Area(0, 0, np.ones((dh, dw), bool))
    composite_into(canvas, area, Op.SRC, src, xs, ys, matrix=matrix, filt=filt, repeat=repeat)
    rgb = 0xFFFFFF if fmt != PixFmt.X1R5G5B5 else 0x7FFF
    assert (canvas.pixels & rgb == dest.pixels() & rgb).all()  # colours: exact
    if repeat != Repeat.REFLECT:  # which REFLECT paths keep an xRGB X byte is not modelled
        assert (canvas.pixels == dest.pixels()).all()  # and the X byte too


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 9),
    st.integers(1, 9),
    st.integers(-4, 4),
    st.integers(-4, 4),
    st.sampled_from([Op.SRC, Op.OVER]),
    st.sampled_from([Repeat.NONE, Repeat.NORMAL, Repeat.PAD]),
)
def test_untransformed_copy_matches_pixman(sw: int, sh: int, ox: int, oy: int, op: Op, repeat: Repeat) -> None:
    src = random_pixmap(PixFmt.X8R8G8B8, (sh, sw))
    ref_src = px.Image(src)
    ref_src.set_repeat(repeat)
    start = random_pixmap(PixFmt.X8R8G8B8, (7, 8))
    dest = px.Image(start)
    px.composite(op, ref_src, None, dest, (ox, oy), (0, 0), (0, 0), (8, 7))
    canvas = Canvas(8, 7)
    canvas.pixels[...] = start.pixels
    area = Area(0, 0, np.ones((7, 8), bool))
    composite_into(canvas, area, op, src, np.arange(8)[None, :] + ox, np.arange(7)[:, None] + oy, repeat=repeat)
    assert (canvas.pixels & 0xFFFFFF == dest.pixels() & 0xFFFFFF).all()
    assert (canvas.pixels == dest.pixels()).all()


@pytest.mark.parametrize("filt", [Filter.NEAREST, Filter.BILINEAR])
def test_affine_transforms(filt: Filter) -> None:
    src = random_pixmap(PixFmt.A8R8G8B8, (13, 17))
    for matrix in [
        ((0, -(1 << 16), 15 << 16), (1 << 16, 0, 2 << 16)),  # 90 degree rotation
        ((46341, -46341, 9 << 16), (46341, 46341, -3 << 16)),  # 45 degrees
        ((70000, 12345, -20000), (-5000, 50000, 33333)),
        ((-(1 << 16), 0, 17 << 16), (0, 1 << 16, 0)),  # mirror
    ]:
        ref = px.Image(src)
        ref.set_transform(matrix)
        ref.set_filter(filt)
        ref.set_repeat(Repeat.NONE)
        dest = px.Image(Pixmap(np.zeros((20, 21), np.uint32), PixFmt.A8R8G8B8))
        px.composite(Op.SRC, ref, None, dest, (1, -2), (0, 0), (0, 0), (21, 20))
        got = sample(src, np.arange(21)[None, :] + 1, np.arange(20)[:, None] - 2, matrix=matrix, filt=filt)
        assert (got == dest.pixels()).all()


OPS = list(Op)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("mask_kind", ["none", "a8", "solid", "ca"])
def test_combiners_match_pixman(op: Op, mask_kind: str) -> None:
    shape = (7, 29)
    src = Pixmap(premultiplied(shape), PixFmt.A8R8G8B8)
    dst = Pixmap(premultiplied(shape), PixFmt.A8R8G8B8)
    mask: Pixmap | None = None
    ref_mask: px.Image | px.Solid | None = None
    mask_values = None
    ca = mask_kind == "ca"
    if mask_kind == "a8":
        mask = random_pixmap(PixFmt.A8, shape)
    elif mask_kind == "ca":
        mask = Pixmap(premultiplied(shape), PixFmt.A8R8G8B8)
    if mask is not None:
        ref_mask = px.Image(mask)
        if ca:
            ref_mask.set_component_alpha(True)
        mask_values = to_8888(mask)
    if mask_kind == "solid":
        ref_mask = px.Solid(0x80000000)
        mask_values = np.full(shape, 0x80000000, np.uint32)
    dest = px.Image(dst)
    px.composite(op, px.Image(src), ref_mask, dest, (0, 0), (0, 0), (0, 0), (shape[1], shape[0]))
    got = combine(op, src.pixels, mask_values, dst.pixels, component_alpha=ca)
    assert (got == dest.pixels()).all()


@pytest.mark.parametrize("src_fmt", [PixFmt.X8R8G8B8, PixFmt.A8R8G8B8, PixFmt.X1R5G5B5, PixFmt.A8])
@pytest.mark.parametrize("dst_fmt", [PixFmt.X8R8G8B8, PixFmt.A8R8G8B8, PixFmt.R5G6B5])
@pytest.mark.parametrize("alpha", [None, 0x80])
def test_over_through_canvas_matches_pixman(src_fmt: PixFmt, dst_fmt: PixFmt, alpha: int | None) -> None:
    """OVER as alpha blending uses it, including the X byte of xRGB destinations."""
    shape = (6, 19)
    src = random_pixmap(src_fmt, shape)
    start = random_pixmap(dst_fmt, shape)
    dest = px.Image(start)
    mask = px.Solid(alpha << 24) if alpha is not None else None
    px.composite(Op.OVER, px.Image(src), mask, dest, (0, 0), (0, 0), (0, 0), (shape[1], shape[0]))
    fmt = {PixFmt.X8R8G8B8: 32, PixFmt.A8R8G8B8: 96, PixFmt.R5G6B5: 80}[dst_fmt]
    canvas = Canvas(shape[1], shape[0], fmt)
    canvas.pixels[...] = start.pixels
    area = Area(0, 0, np.ones(shape, bool))
    composite_into(
        canvas, area, Op.OVER, src, np.arange(shape[1])[None, :], np.arange(shape[0])[:, None], mask_alpha=alpha
    )
    assert (canvas.pixels == dest.pixels()).all()


def test_solid_through_glyph_masks_matches_pixman() -> None:
    shape = (9, 33)
    for mask_fmt in (PixFmt.A1, PixFmt.A8):
        for dst_fmt, surface in ((PixFmt.X8R8G8B8, 32), (PixFmt.A8R8G8B8, 96), (PixFmt.X1R5G5B5, 16)):
            m = random_pixmap(mask_fmt, shape)
            start = random_pixmap(dst_fmt, shape)
            dest = px.Image(start)
            px.composite(Op.OVER, px.Solid(0xFF123456), px.Image(m), dest, (0, 0), (0, 0), (0, 0), (33, 9))
            canvas = Canvas(33, 9, surface)
            canvas.pixels[...] = start.pixels
            alpha = to_8888(m)
            solid = Pixmap(np.array([[0xFF123456]], np.uint32), PixFmt.A8R8G8B8)
            composite_into(
                canvas,
                Area(0, 0, np.ones(shape, bool)),
                Op.OVER,
                solid,
                np.zeros((1, 33), np.int64),
                np.zeros((9, 1), np.int64),
                mask=alpha,
                repeat=Repeat.NORMAL,
            )
            assert (canvas.pixels == dest.pixels()).all(), (mask_fmt, dst_fmt)


@pytest.mark.parametrize("op", [Op.OVER, Op.SRC, Op.IN, Op.ADD, Op.ATOP_REVERSE, Op.SATURATE])
@pytest.mark.parametrize("with_mask", [False, True])
def test_draw_composite_matches_pixman(op: Op, with_mask: bool) -> None:
    """DrawComposite end to end: box copy, source/mask transforms, filters, repeats, origins, clip."""
    from spiceserver.canvas import render_op
    from spiceserver.proto.enums import BitmapFmt, SurfaceFmt
    from spiceserver.proto.messages import display as d
    from spiceserver.proto.messages.base import Point16, Transform

    from .helpers import Resolver, base, bitmap32, surface_image

    w, h = 12, 9
    start = premultiplied((h, w))
    canvas = Canvas(w, h, SurfaceFmt.FMT_32_ARGB)
    canvas.pixels[...] = start
    src = premultiplied((5, 7))
    mask_surface = Canvas(6, 4, SurfaceFmt.FMT_8_A)
    mask_surface.pixels[...] = random_pixmap(PixFmt.A8, (4, 6)).pixels
    src_matrix = ((46341, -46341, 3 << 16), (46341, 46341, -(1 << 15)))  # 45 degrees
    mask_matrix = ((1 << 15, 0, 0), (0, 1 << 15, 0))  # 2x up

    def tr(m: tuple[tuple[int, int, int], tuple[int, int, int]]) -> Transform:
        (a, b, c), (e, f, g) = m
        return Transform(
            t00=a & 0xFFFFFFFF,
            t01=b & 0xFFFFFFFF,
            t02=c & 0xFFFFFFFF,
            t10=e & 0xFFFFFFFF,
            t11=f & 0xFFFFFFFF,
            t12=g & 0xFFFFFFFF,
        )

    src_filter = Filter.NEAREST if op == Op.SATURATE else Filter.BILINEAR  # see combine: wide path
    flags = int(op) | (src_filter << 8) | (Repeat.NORMAL << 14) | (1 << 20)
    if with_mask:
        flags |= (1 << 19) | (1 << 21) | (Filter.NEAREST << 11) | (Repeat.PAD << 16)
    body = d.Composite(
        flags=flags,
        src_bitmap=bitmap32(src, fmt=BitmapFmt.RGBA),
        mask_bitmap=surface_image(2) if with_mask else None,
        src_transform=tr(src_matrix),
        mask_transform=tr(mask_matrix) if with_mask else None,
        src_origin=Point16(x=-2, y=1),
        mask_origin=Point16(x=1, y=-1),
    )
    clip = [(0, 0, 12, 4), (5, 4, 12, 9)]
    render_op(canvas, base(2, 1, 11, 8, clip), body, Resolver({2: mask_surface}))

    box_w, box_h = 9, 7
    tmp = px.Image(Pixmap(start[1:8, 2:11].copy(), PixFmt.A8R8G8B8))
    s = px.Image(Pixmap(src, PixFmt.A8R8G8B8))
    s.set_transform(src_matrix)
    s.set_filter(src_filter)
    s.set_repeat(Repeat.NORMAL)
    m = None
    if with_mask:
        m = px.Image(mask_surface.pixmap())
        m.set_transform(mask_matrix)
        m.set_filter(Filter.NEAREST)
        m.set_repeat(Repeat.PAD)
    px.composite(op, s, m, tmp, (-2, 1), (1, -1), (0, 0), (box_w, box_h))
    expected = start.copy()
    result = tmp.pixels()
    for y in range(1, 8):
        for x in range(2, 11):
            if any(x1 <= x < x2 and y1 <= y < y2 for x1, y1, x2, y2 in clip):
                expected[y, x] = result[y - 1, x - 2]
    assert (canvas.pixels == expected).all()
