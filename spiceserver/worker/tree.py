"""The drawable tree of one surface: what is still visible, and what a new opaque draw hides.

Counterpart of spice ``server/tree.cpp`` and ``display-channel.cpp`` (``current_add``,
``exclude_region``, ``current_remove``). libspice renders lazily, so its tree is also the list of
draws not yet applied to the canvas; spiceserver renders every draw into the canvas when it arrives,
so the tree's job is the rest: knowing which draws are no longer visible at all, so that clients that
have not been sent them yet never will be (and a new client never needs them).

Differences, on purpose: no containers (a flat z-ordered list is enough without lazy rendering) and
no shadow items -- a COPY_BITS that still has to be sent to a client protects what it reads in that
client's pipe (:meth:`DisplayChannelClient.prune`), which is what libspice's shadows are for. Guest
resources are not held by the tree: the QXL layer copies every command out of guest memory and
releases it at once.

The items' bounding boxes and visible regions live in arrays (:class:`~spiceserver.region_kernels.
TreeArrays`) and one kernel call per :meth:`DrawableTree.add` does the whole occlusion pass
(:func:`~spiceserver.region_kernels.tree_exclude`); until the warm-up has compiled it, the same
kernel runs uncompiled. The results are those of :class:`~spiceserver.region.Region` arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from .. import region_kernels as rk
from ..region import Region
from .drawable import Drawable

__all__ = ["DrawableTree", "MAX_TREE_ITEMS"]

MAX_TREE_ITEMS = 2000


class DrawableTree:
    """The visible drawables of one surface, oldest first.

    Args:
        jit: run the compiled kernel (True), the uncompiled one (False), or the compiled one once
            the warm-up has compiled it (None, the default).
        pool: the rectangle pool's initial size (it grows when the visible regions need more).
    """

    def __init__(self, *, jit: bool | None = None, pool: int = 1024) -> None:
        self._jit = jit
        # live drawables by id; insertion order is the tree's order (oldest first), as the kernel
        # keeps it: removed ids are deleted, the new one is added last
        self._live: dict[int, Drawable] = {}
        self._next_id = 0
        self._arrays = rk.TreeArrays(16, pool)

    def __len__(self) -> int:
        return len(self._live)

    @property
    def items(self) -> list[Drawable]:
        """The visible drawables, oldest first (a new list)."""
        return list(self._live.values())

    @property
    def visible(self) -> Mapping[Drawable, Region]:
        """Each item's visible region (built from the arrays on access: for tests and tools)."""
        return _VisibleView(self)

    def visible_region(self, drawable: Drawable) -> Region:
        """The part of ``drawable`` still visible; KeyError if it is not in the tree."""
        key = next((k for k, item in self._live.items() if item is drawable), None)
        if key is None:
            raise KeyError(drawable)
        t = self._arrays
        meta = t.live_rows()[1]
        row = meta[meta[:, rk.IT_ID] == key][0]
        s, n = int(row[rk.IT_OFF]), int(row[rk.IT_CNT])
        rows = t.pool[s : s + n].tolist()
        return Region(tuple(r) for r in rows)  # canonical already: the union rebuilds the same bands

    def add(self, drawable: Drawable) -> list[Drawable]:
        """Insert ``drawable`` on top; return the drawables it hides completely (now removed)."""
        region = drawable.region
        box = region.bbox()
        if box is None:
            return []
        t = self._arrays
        if region.is_rect():
            nrects = 1
        else:
            rects = region.rects
            nrects = len(rects)
            if nrects > t.rects.shape[0]:
                t.rects = np.zeros((max(nrects, 2 * t.rects.shape[0]), 4), dtype=rk.COORD)
            t.rects[:nrects] = rects
        key = self._next_id
        self._next_id = (key + 1) & 0x7FFFFFFF  # ids are int32 in the kernel's rows
        jit = self._jit
        if jit is None:
            jit = rk.ready()
        live = self._live
        n = len(live)
        # Over MAX_TREE_ITEMS the kernel forgets the oldest items: they are already rendered, so
        # only pruning opportunities go.
        nh = t.add(nrects, box, drawable.opaque, key, n, MAX_TREE_ITEMS, jit=jit)
        nd = n - nh + 1 - MAX_TREE_ITEMS
        hidden = []
        if nh or nd > 0:
            ids = t.hidden
            hidden = [live.pop(ids.item(i)) for i in range(nh)]
            for i in range(nh, nh + nd):
                del live[ids.item(i)]
        live[key] = drawable
        return hidden

    def clear(self) -> None:
        """Forget every draw."""
        self._live.clear()
        self._arrays.clear()


class _VisibleView(Mapping[Drawable, Region]):
    """``tree.visible``: the live drawables' visible regions, computed on access."""

    def __init__(self, tree: DrawableTree) -> None:
        self._tree = tree

    def __getitem__(self, drawable: Drawable) -> Region:
        return self._tree.visible_region(drawable)

    def __iter__(self) -> Iterator[Drawable]:
        return iter(self._tree.items)

    def __len__(self) -> int:
        return len(self._tree)
