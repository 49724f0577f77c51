"""The region kernels (``spiceserver/region_kernels.py``) against the pure :class:`Region`: the
same rectangles for every operation, compiled and uncompiled, and a tree on arrays that hides
exactly what a tree of pure regions hides."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spiceserver import region_kernels as rk
from spiceserver.proto.enums import BrushType, ClipType
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Rect
from spiceserver.region import RectTuple, Region
from spiceserver.worker import tree as tree_module
from spiceserver.worker.drawable import Drawable, make_drawable
from spiceserver.worker.tree import DrawableTree

coord = st.integers(-8, 48)
rect = st.tuples(coord, coord, st.integers(0, 24), st.integers(0, 24)).map(lambda r: (r[0], r[1], r[0] + r[2], r[1] + r[3]))
regions = st.lists(rect, max_size=6).map(Region)
OPS = {
    rk.OP_UNION: Region.union,
    rk.OP_INTERSECT: Region.intersect,
    rk.OP_SUBTRACT: Region.subtract,
    rk.OP_XOR: Region.xor,
}
JIT = pytest.mark.parametrize("jit", [True, False], ids=["compiled", "pure"])


def rows(arr: object) -> tuple[RectTuple, ...]:
    return tuple(tuple(r) for r in arr.tolist())  # type: ignore[attr-defined, misc]


@JIT
@settings(max_examples=300, deadline=None)
@given(a=regions, b=regions)
def test_combine_gives_the_rects_of_region(jit: bool, a: Region, b: Region) -> None:
    for op, pure_op in OPS.items():
        assert rows(rk.combine(op, a.rects, b.rects, jit=jit)) == pure_op(a, b).rects


@JIT
@settings(max_examples=300, deadline=None)
@given(a=regions, r=rect)
def test_rect_fast_paths_agree_with_region(jit: bool, a: Region, r: RectTuple) -> None:
    one = Region.from_rect(*r)
    assert rows(rk.minus_rect(a.rects, r, jit=jit)) == a.subtract(one).rects
    assert rk.intersects_rect(a.rects, r, jit=jit) == a.intersects(one)
    assert rk.contains_rect(a.rects, r, jit=jit) == a.contains_rect(r)


def test_output_too_small_reports_and_writes_nothing_past_the_end() -> None:
    import numpy as np

    a = rk.as_rects(Region([(0, 0, 10, 10), (20, 0, 30, 10)]).rects)
    b = rk.as_rects([(2, 2, 4, 4)])
    out = np.full((2, 4), -7, dtype=rk.COORD)
    assert rk.region_op(rk.OP_SUBTRACT, a, len(a), b, len(b), out) == -1
    assert rk.region_minus_rect(a, len(a), 2, 2, 4, 4, out) == -1


class ReferenceTree:
    """The tree as it was on pure regions: subtract from every visible item, drop the emptied."""

    def __init__(self) -> None:
        self.items: list[Drawable] = []
        self.visible: dict[Drawable, Region] = {}

    def add(self, drawable: Drawable) -> list[Drawable]:
        hidden: list[Drawable] = []
        if drawable.region.is_empty():
            return hidden
        if drawable.opaque:
            for item in list(self.items):
                vis = self.visible[item].subtract(drawable.region)
                if vis.is_empty():
                    hidden.append(item)
                    del self.visible[item]
                    self.items.remove(item)
                else:
                    self.visible[item] = vis
        self.items.append(drawable)
        self.visible[drawable] = drawable.region
        drop = len(self.items) - tree_module.MAX_TREE_ITEMS
        for item in self.items[: max(drop, 0)]:
            del self.visible[item]
        del self.items[: max(drop, 0)]
        return hidden


def fill(box: RectTuple, clip: list[RectTuple], opaque: bool) -> Drawable:
    left, top, right, bottom = box
    rects = tuple(Rect(top=t, left=lf, bottom=b, right=r) for lf, t, r, b in clip)
    base = d.DisplayBase(
        surface_id=0,
        box=Rect(top=top, left=left, bottom=bottom, right=right),
        clip=d.Clip(type=ClipType.RECTS, rects=d.ClipRects(rects=rects)) if clip else d.Clip(),
    )
    rop = 8 if opaque else 64  # PUT, or XOR (reads the destination)
    return make_drawable(0, base, d.Fill(brush=d.Brush(type=BrushType.SOLID, color=1), rop_descriptor=rop, mask=d.QMask()))


draws = st.lists(
    st.tuples(rect, st.lists(rect, max_size=4), st.sampled_from([True, True, True, False])),  # mostly opaque
    min_size=1,
    max_size=60,
)


def check_same(tree: DrawableTree, ref: ReferenceTree, seq: list[tuple[RectTuple, list[RectTuple], bool]]) -> None:
    for box, clip, opaque in seq:
        dr = fill(box, clip, opaque)
        assert tree.add(dr) == ref.add(dr)
        assert tree.items == ref.items and len(tree) == len(ref.items)
    for item in ref.items:
        assert tree.visible[item] == ref.visible[item]
        assert tree.visible[item].rects == ref.visible[item].rects


@JIT
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=draws)
def test_tree_hides_what_the_reference_hides(jit: bool, seq: list[tuple[RectTuple, list[RectTuple], bool]]) -> None:
    check_same(DrawableTree(jit=jit), ReferenceTree(), seq)


@JIT
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(seq=draws)
def test_tree_with_a_tiny_pool_and_item_limit(
    jit: bool, seq: list[tuple[RectTuple, list[RectTuple], bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the pool compacts and grows mid-call, the item arrays slide and grow, old items are dropped
    monkeypatch.setattr(tree_module, "MAX_TREE_ITEMS", 7)
    check_same(DrawableTree(jit=jit, pool=2), ReferenceTree(), seq)


def test_clear_forgets_everything() -> None:
    tree = DrawableTree(jit=False)
    a = fill((0, 0, 10, 10), [], True)
    tree.add(a)
    tree.clear()
    assert len(tree) == 0 and tree.items == [] and dict(tree.visible) == {}
    b = fill((0, 0, 10, 10), [], True)
    assert tree.add(b) == [] and tree.items == [b]


def test_uncompiled_tree_with_the_kernels_own_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    # the uncompiled tree uses a numpy scan; the kernel's own scan loop, uncompiled, agrees too
    import random

    from spiceserver._jit import pure_deep

    monkeypatch.setattr(rk, "_tree_exclude_py", pure_deep(rk.tree_exclude))
    rng = random.Random(4)

    def r() -> RectTuple:
        left, top = rng.randint(-8, 48), rng.randint(-8, 48)
        return (left, top, left + rng.randint(0, 24), top + rng.randint(0, 24))

    seq = [(r(), [r() for _ in range(rng.randint(0, 3))], rng.random() < 0.75) for _ in range(200)]
    check_same(DrawableTree(jit=False, pool=4), ReferenceTree(), seq)
