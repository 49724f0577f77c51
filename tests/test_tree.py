"""The drawable tree: opaque draws hide what they cover; hidden draws leave pipes that have not sent
them unless something queued after them reads their pixels."""

from __future__ import annotations

from spiceserver.proto.enums import BrushType, ClipType
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Point, Rect
from spiceserver.qxl.commands import CopyBits
from spiceserver.worker.display_client import DisplayChannelClient, DisplayState
from spiceserver.worker.drawable import Drawable, make_drawable
from spiceserver.worker.messages import ClientConnected
from spiceserver.worker.pipe_items import DrawableItem, PictureItem
from spiceserver.worker.surface import Surface
from spiceserver.worker.tree import DrawableTree


def fill(l: int, t: int, r: int, b: int, *, rop: int = 8, clip: tuple[Rect, ...] = ()) -> Drawable:  # noqa: E741
    base = d.DisplayBase(
        surface_id=0,
        box=Rect(top=t, left=l, bottom=b, right=r),
        clip=d.Clip(type=ClipType.RECTS, rects=d.ClipRects(rects=clip)) if clip else d.Clip(),
    )
    return make_drawable(0, base, d.Fill(brush=d.Brush(type=BrushType.SOLID, color=1), rop_descriptor=rop, mask=d.QMask()))


def test_opaque_cover_hides_and_partial_cover_shrinks() -> None:
    tree = DrawableTree()
    a, b = fill(0, 0, 10, 10), fill(20, 0, 30, 10)
    assert tree.add(a) == [] and tree.add(b) == []
    big = fill(0, 0, 15, 10)  # covers a completely, b not at all
    assert tree.add(big) == [a]
    assert tree.items == [b, big]
    half = fill(20, 0, 25, 10)
    assert tree.add(half) == []
    assert tree.visible[b].rects == ((25, 0, 30, 10),)
    assert tree.add(fill(25, 0, 30, 10)) == [b]


def test_non_opaque_and_clipped_draws() -> None:
    tree = DrawableTree()
    a = fill(0, 0, 10, 10)
    tree.add(a)
    xor = fill(0, 0, 10, 10, rop=64)  # reads the destination: hides nothing
    assert not xor.opaque and tree.add(xor) == []
    # clipped to two strips: only those pixels are covered
    strips = fill(0, 0, 10, 10, clip=(Rect(top=0, left=0, bottom=5, right=10),))
    assert strips.region.rects == ((0, 0, 10, 5),)
    assert tree.add(strips) == []
    assert tree.visible[a].rects == ((0, 5, 10, 10),)
    assert tree.add(fill(0, 5, 10, 10)) == [a, xor]  # what is left of both is now covered


def test_copy_bits_reads_its_source() -> None:
    base = d.DisplayBase(surface_id=0, box=Rect(top=0, left=100, bottom=10, right=110), clip=d.Clip())
    cb = make_drawable(0, base, CopyBits(Point(x=0, y=50)))
    assert not cb.opaque
    assert cb.reads.rects == ((0, 50, 10, 60),)


def dcc() -> DisplayChannelClient:
    info = ClientConnected(1, 2, 0, True, (), (), 1, "test")
    surfaces = {0: Surface(0, 200, 100, primary=True)}
    c = DisplayChannelClient(info, surfaces, lambda: None)
    c.state = DisplayState.READY
    c.sent_surfaces.add(0)
    return c


def test_pipe_prune_respects_readers_in_between() -> None:
    c = dcc()
    a = fill(0, 0, 10, 10)
    c.push_drawable(a)
    c.push_drawable(fill(0, 0, 10, 10))
    assert c.prune(a)  # nothing between reads a's pixels
    b = fill(0, 50, 10, 60)
    c.push_drawable(b)
    base = d.DisplayBase(surface_id=0, box=Rect(top=0, left=100, bottom=10, right=110), clip=d.Clip())
    c.push_drawable(make_drawable(0, base, CopyBits(Point(x=0, y=50))))  # reads b's area
    c.push_drawable(fill(0, 50, 10, 60))
    assert not c.prune(b)  # the copy_bits still needs b
    assert b in [e.drawable for e in c.pipe if isinstance(e, DrawableItem) and not e.dead]


def test_pipe_collapse_keeps_the_picture() -> None:
    c = dcc()
    c.surfaces[0].canvas.pixels[:] = 0x123456
    for i in range(50):
        c.push_drawable(fill(i, 0, i + 1, 1))
    c.collapse()
    live = [e for e in c.pipe if not e.dead]
    assert len(live) == 1 and isinstance(live[0], PictureItem)
    sid, left, top, px = live[0].surface_id, live[0].left, live[0].top, live[0].pixels
    assert (sid, left, top, px.shape) == (0, 0, 0, (1, 50)) and (px == 0x123456).all()
