"""Region: set operations against a numpy boolean-mask reference, and pixman's canonical form."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.proto.messages.base import Rect
from spiceserver.region import Region, _combine, _op_subtract

N = 24  # reference canvas size; rectangles may poke outside it (the mask is offset)
OFF = 4

coord = st.integers(min_value=-OFF, max_value=N - OFF)
rect = st.tuples(coord, coord, coord, coord)  # may be empty or inverted: ignored
rects = st.lists(rect, max_size=8)


def mask_of_rects(rs: list[tuple[int, int, int, int]] | tuple[tuple[int, int, int, int], ...]) -> np.ndarray:
    m = np.zeros((N + 2 * OFF, N + 2 * OFF), bool)
    for left, t, r, b in rs:
        if left < r and t < b:
            m[t + OFF : b + OFF, left + OFF : r + OFF] = True
    return m


def check_canonical(region: Region) -> None:
    """Bands sorted, disjoint, coalesced; spans sorted, disjoint, non-touching; rects consistent."""
    prev_y2 = None
    prev_spans = None
    for y1, y2, spans in region.bands:
        assert y1 < y2
        assert spans
        if prev_y2 is not None:
            assert y1 >= prev_y2
            if y1 == prev_y2:
                assert spans != prev_spans, "touching bands with equal spans must be coalesced"
        for (_a1, a2), (b1, _b2) in itertools.pairwise(spans):
            assert a2 < b1, "spans in a band must be disjoint and not touch"
        for x1, x2 in spans:
            assert x1 < x2
        prev_y2, prev_spans = y2, spans
    # rects are the bands flattened, and pairwise disjoint
    flat = [(x1, y1, x2, y2) for y1, y2, spans in region.bands for x1, x2 in spans]
    assert list(region.rects) == flat
    m = np.zeros((N + 2 * OFF + 40, N + 2 * OFF + 40), np.int32)
    for left, t, r, b in region.rects:
        m[t + OFF + 20 : b + OFF + 20, left + OFF + 20 : r + OFF + 20] += 1
    assert m.max(initial=0) <= 1


def mask_of(region: Region) -> np.ndarray:
    return mask_of_rects(region.rects)


@given(rects)
def test_construction_matches_mask(rs: list[tuple[int, int, int, int]]) -> None:
    region = Region(rs)
    check_canonical(region)
    assert (mask_of(region) == mask_of_rects(rs)).all()
    assert region.area() == int(mask_of_rects(rs).sum())
    assert bool(region) == bool(mask_of_rects(rs).any()) == (not region.is_empty())


@settings(max_examples=300)
@given(rects, rects)
def test_set_operations_match_masks(ra: list[tuple[int, int, int, int]], rb: list[tuple[int, int, int, int]]) -> None:
    a, b = Region(ra), Region(rb)
    ma, mb = mask_of_rects(ra), mask_of_rects(rb)
    for result, expected in (
        (a | b, ma | mb),
        (a & b, ma & mb),
        (a - b, ma & ~mb),
        (a ^ b, ma ^ mb),
        (a.union(b), ma | mb),
        (a.intersect(b), ma & mb),
        (a.subtract(b), ma & ~mb),
        (a.xor(b), ma ^ mb),
    ):
        check_canonical(result)
        assert (mask_of(result) == expected).all()
    assert a.intersects(b) == bool((ma & mb).any())
    box = b.bbox()
    if box is not None:
        assert a.contains_rect(box) == bool(ma[mask_of_rects([box])].all())
    for r in rb:
        assert a.contains_rect(r) == bool(ma[mask_of_rects([r])].all())


@settings(max_examples=300)
@given(rects, coord, coord, coord, coord)
def test_subtract_one_rect_and_intersects(rs: list[tuple[int, int, int, int]], x0: int, y0: int, x1: int, y1: int) -> None:
    """The one-rectangle fast paths (what the drawable tree does for each opaque draw)."""
    a, r = Region(rs), (min(x0, x1), min(y0, y1), max(x0, x1) + 1, max(y0, y1) + 1)
    b = Region([r])
    ma, mb = mask_of_rects(rs), mask_of_rects([r])
    result = a - b
    check_canonical(result)
    assert (mask_of(result) == (ma & ~mb)).all()
    assert result._bands == _combine(a._bands, b._bands, _op_subtract)  # the general sweep agrees
    assert a.intersects(b) == b.intersects(a) == bool((ma & mb).any())


@given(rects, st.integers(-5, 5), st.integers(-5, 5))
def test_translate(rs: list[tuple[int, int, int, int]], dx: int, dy: int) -> None:
    region = Region(rs).translate(dx, dy)
    check_canonical(region)
    moved = [(left + dx, t + dy, r + dx, b + dy) for left, t, r, b in rs]
    assert region == Region(moved)


@given(rects, rects)
def test_canonical_form_is_unique(ra: list[tuple[int, int, int, int]], rb: list[tuple[int, int, int, int]]) -> None:
    a, b = Region(ra), Region(rb)
    same = (mask_of_rects(ra) == mask_of_rects(rb)).all()
    assert (a == b) == same
    if same:
        assert a.rects == b.rects
        assert hash(a) == hash(b)
    # the same pixels built another way (one rect per covered pixel row run) give the same rects
    m = mask_of_rects(ra)
    pixel_rects = [(x - OFF, y - OFF, x - OFF + 1, y - OFF + 1) for y, x in zip(*np.nonzero(m), strict=True)]
    assert Region(pixel_rects).rects == a.rects


@given(rects, coord, coord)
def test_contains_point(rs: list[tuple[int, int, int, int]], x: int, y: int) -> None:
    assert Region(rs).contains_point(x, y) == bool(mask_of_rects(rs)[y + OFF, x + OFF])


def test_pixman_examples() -> None:
    # two overlapping rectangles: three bands, the middle one a single merged span
    r = Region([(0, 0, 10, 10), (5, 5, 15, 15)])
    assert r.rects == ((0, 0, 10, 5), (0, 5, 15, 10), (5, 10, 15, 15))
    # side by side touching rectangles merge into one
    assert Region([(0, 0, 5, 5), (5, 0, 10, 5)]).rects == ((0, 0, 10, 5),)
    # vertically touching equal bands coalesce
    assert Region([(0, 0, 5, 5), (0, 5, 5, 9)]).rects == ((0, 0, 5, 9),)
    # a hole
    hole = Region.from_rect(0, 0, 9, 9) - Region.from_rect(3, 3, 6, 6)
    assert hole.rects == ((0, 0, 9, 3), (0, 3, 3, 6), (6, 3, 9, 6), (0, 6, 9, 9))
    assert hole.bbox() == (0, 0, 9, 9)
    assert hole.area() == 81 - 9
    assert len(hole) == 4
    assert not hole.contains_rect((2, 2, 5, 5))
    assert hole.contains_rect((0, 0, 9, 3))
    assert Region().bbox() is None
    assert Region([(5, 5, 1, 1), (0, 0, 0, 4)]).is_empty()
    assert repr(Region.from_rect(0, 0, 1, 1)) == "Region([(0, 0, 1, 1)])"


def test_proto_conversions() -> None:
    r = Region.from_proto_rect(Rect(top=1, left=2, bottom=5, right=7))
    assert r.rects == ((2, 1, 7, 5),)
    assert r.to_proto_rects() == (Rect(top=1, left=2, bottom=5, right=7),)
    assert Region.from_proto_rect(Rect(top=5, left=2, bottom=1, right=7)).is_empty()


def test_many_rects_is_fast_enough() -> None:
    rng = np.random.default_rng(1)
    rs = [tuple(int(v) for v in (x, y, x + w, y + h)) for x, y, w, h in rng.integers(0, 400, (400, 4))]
    a = Region(rs)  # type: ignore[arg-type]
    b = Region([(r[0] + 3, r[1] + 2, r[2] + 3, r[3] + 2) for r in rs])  # type: ignore[index]
    for _ in range(5):
        (a | b) - (a & b)
    check = a ^ b
    assert check.area() > 0
