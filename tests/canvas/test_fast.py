"""The fast paths of spiceserver.canvas.fast write the same pixels as the general masked path."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.canvas import Canvas, fast, render_op
from spiceserver.canvas.rop import Ropd
from spiceserver.proto.enums import BrushType, SurfaceFmt
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Point

from .helpers import NO_BRUSH, Resolver, base, bitmap32, mask_image, qmask, rect, solid, surface_image

W, H = 24, 18
FORMATS = [SurfaceFmt.FMT_32_XRGB, SurfaceFmt.FMT_32_ARGB, SurfaceFmt.FMT_16_565, SurfaceFmt.FMT_16_555]
ROPDS = [
    Ropd.OP_PUT,
    Ropd.OP_PUT | Ropd.INVERS_SRC,
    Ropd.OP_PUT | Ropd.INVERS_RES,
    Ropd.OP_OR,
    Ropd.OP_AND | Ropd.INVERS_DEST,
    Ropd.OP_XOR,
    Ropd.OP_XOR | Ropd.INVERS_BRUSH,
    Ropd.OP_BLACKNESS,
    Ropd.OP_WHITENESS,
    Ropd.OP_INVERS,
    0,
]

coords = st.integers(-6, 30)
rects = st.tuples(coords, coords, coords, coords)
clips = st.none() | st.lists(rects, max_size=5)


def _filled(fmt: int, seed: int) -> Canvas:
    c = Canvas(W, H, fmt)
    rng = np.random.default_rng(seed)
    c.pixels[...] = rng.integers(0, np.iinfo(c.pixels.dtype).max, c.pixels.shape, dtype=np.uint64, endpoint=True)
    return c


def _both_ways(fmt: int, seed: int, b: d.DisplayBase, op: Any, with_source: bool = True) -> None:
    """Render ``op`` with and without the fast paths (surface 0 = the canvas itself, 1 = another)."""
    outs = []
    for enabled in (True, False):
        c, other = _filled(fmt, seed), _filled(fmt, seed + 1)
        saved = fast.ENABLED
        fast.ENABLED = enabled
        try:
            render_op(c, b, op, Resolver({0: c, 1: other}))
        finally:
            fast.ENABLED = saved
        outs.append(c.pixels)
    assert np.array_equal(outs[0], outs[1])


@settings(max_examples=150, deadline=None)
@given(
    fmt=st.sampled_from(FORMATS),
    seed=st.integers(0, 1000),
    box=rects,
    clip=clips,
    color=st.integers(0, 0xFFFFFFFF),
    ropd=st.sampled_from(ROPDS),
    none_brush=st.booleans(),
)
def test_fill_fast_equals_general(
    fmt: int, seed: int, box: tuple[int, int, int, int], clip: list[Any] | None, color: int, ropd: int, none_brush: bool
) -> None:
    brush = NO_BRUSH if none_brush else solid(color)
    _both_ways(fmt, seed, base(*box, clip=clip), d.Fill(brush=brush, rop_descriptor=ropd))


@settings(max_examples=60, deadline=None)
@given(
    fmt=st.sampled_from(FORMATS),
    seed=st.integers(0, 1000),
    box=rects,
    clip=clips,
    kind=st.sampled_from([d.Blackness, d.Whiteness, d.Invers]),
)
def test_solid_ops_fast_equal_general(
    fmt: int, seed: int, box: tuple[int, int, int, int], clip: list[Any] | None, kind: type
) -> None:
    _both_ways(fmt, seed, base(*box, clip=clip), kind())


@settings(max_examples=150, deadline=None)
@given(
    fmt=st.sampled_from(FORMATS),
    seed=st.integers(0, 1000),
    box=rects,
    clip=clips,
    src_xy=st.tuples(st.integers(-8, 30), st.integers(-8, 30)),
    source=st.sampled_from(["self", "other", "bitmap"]),
    ropd=st.sampled_from(ROPDS),
    kind=st.sampled_from([d.Copy, d.Blend, d.Opaque]),
    color=st.integers(0, 0xFFFFFFFF),
)
def test_copy_fast_equals_general(
    fmt: int,
    seed: int,
    box: tuple[int, int, int, int],
    clip: list[Any] | None,
    src_xy: tuple[int, int],
    source: str,
    ropd: int,
    kind: type,
    color: int,
) -> None:
    if source == "bitmap" and fmt not in (SurfaceFmt.FMT_32_XRGB, SurfaceFmt.FMT_32_ARGB):
        source = "other"
    if source == "bitmap":
        rng = np.random.default_rng(seed + 2)
        image = bitmap32(rng.integers(0, 1 << 32, (11, 13), dtype=np.uint64).astype(np.uint32))
    else:
        image = surface_image(0 if source == "self" else 1)
    left, top, right, bottom = box
    sx, sy = src_xy
    src_area = rect(sx, sy, sx + right - left, sy + bottom - top)
    fields: dict[str, Any] = {"src_bitmap": image, "src_area": src_area, "rop_descriptor": ropd, "scale_mode": 1}
    if kind is d.Opaque:
        fields["brush"] = solid(color)
    _both_ways(fmt, seed, base(*box, clip=clip), kind(**fields))


@settings(max_examples=150, deadline=None)
@given(
    fmt=st.sampled_from(FORMATS),
    seed=st.integers(0, 1000),
    box=rects,
    clip=clips,
    src_xy=st.tuples(st.integers(-8, 30), st.integers(-8, 30)),
)
def test_copy_bits_fast_equals_general(
    fmt: int, seed: int, box: tuple[int, int, int, int], clip: list[Any] | None, src_xy: tuple[int, int]
) -> None:
    b = base(*box, clip=clip)
    _both_ways(fmt, seed, b, d.CopyBits(base=b, src_pos=Point(x=src_xy[0], y=src_xy[1])))


@pytest.mark.parametrize("ropd", [Ropd.OP_PUT, Ropd.OP_XOR])
def test_masked_and_pattern_ops_take_the_general_path(ropd: int) -> None:
    """Operations the fast paths do not cover decline, so the general path draws them."""
    c = Canvas(4, 4)
    b = base(0, 0, 4, 4)
    m = qmask(mask_image(np.eye(4, dtype=np.uint8)))
    assert not fast.fill(c, b, d.Fill(brush=solid(1), rop_descriptor=ropd, mask=m))
    pat = d.Fill(brush=d.Brush(type=BrushType.PATTERN, pattern=None), rop_descriptor=ropd)
    assert not fast.fill(c, b, pat)
    scaled = d.Copy(src_bitmap=surface_image(0), src_area=rect(0, 0, 2, 2), rop_descriptor=ropd, scale_mode=1)
    assert not fast.copy(c, b, scaled, Resolver({0: c}))
    _both_ways(SurfaceFmt.FMT_32_XRGB, 1, b, d.Fill(brush=solid(0x123456), rop_descriptor=ropd, mask=m))


def test_overlapping_clip_rects_apply_a_xor_once() -> None:
    c = Canvas(6, 1)
    op = d.Fill(brush=solid(0xFF), rop_descriptor=Ropd.OP_XOR)
    render_op(c, base(0, 0, 6, 1, clip=[(0, 0, 4, 1), (2, 0, 6, 1)]), op, Resolver())
    assert c.pixels.tolist() == [[0xFF] * 6]


@pytest.mark.parametrize("clip", [[(1, 0, 3, 1), (3, 0, 6, 1)], [(3, 0, 6, 1), (1, 0, 3, 1)]])
def test_copy_bits_reads_every_source_before_writing(clip: list[tuple[int, int, int, int]]) -> None:
    c = Canvas(6, 1)
    c.pixels[0] = np.arange(6)
    b = base(1, 0, 6, 1, clip=clip)
    render_op(c, b, d.CopyBits(base=b, src_pos=Point(x=0, y=0)), Resolver())
    assert c.pixels.tolist() == [[0, 0, 1, 2, 3, 4]]


@pytest.mark.parametrize("clip", [[(1, 0, 3, 1), (3, 0, 6, 1)], [(3, 0, 6, 1), (1, 0, 3, 1)]])
def test_self_copy_reads_every_source_before_writing(clip: list[tuple[int, int, int, int]]) -> None:
    c = Canvas(6, 1)
    c.pixels[0] = np.arange(6)
    op = d.Copy(src_bitmap=surface_image(0), src_area=rect(0, 0, 5, 1), rop_descriptor=Ropd.OP_PUT, scale_mode=1)
    render_op(c, base(1, 0, 6, 1, clip=clip), op, Resolver({0: c}))
    assert c.pixels.tolist() == [[0, 0, 1, 2, 3, 4]]
