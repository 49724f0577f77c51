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
"""

from __future__ import annotations

import numpy as np

from ..region import Region
from .drawable import Drawable

__all__ = ["DrawableTree", "MAX_TREE_ITEMS"]

MAX_TREE_ITEMS = 2000


class DrawableTree:
    """The visible drawables of one surface, oldest first."""

    def __init__(self) -> None:
        self.items: list[Drawable] = []
        self.visible: dict[Drawable, Region] = {}
        # bounding boxes of the visible regions, row i for items[i]: (left, top, right, bottom),
        # so a new draw tests overlap against every item in one vectorised comparison; rows past
        # len(items) are spare capacity
        self._boxes = np.zeros((64, 4), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, drawable: Drawable) -> list[Drawable]:
        """Insert ``drawable`` on top; return the drawables it hides completely (now removed)."""
        hidden: list[Drawable] = []
        box = drawable.region.bbox()
        if box is None:
            return hidden
        n = len(self.items)
        if drawable.opaque and n:
            b = self._boxes[:n]
            x0, y0, x1, y1 = box
            hits = np.flatnonzero((b[:, 0] < x1) & (b[:, 2] > x0) & (b[:, 1] < y1) & (b[:, 3] > y0))
            gone: list[int] = []
            for i in hits.tolist():
                item = self.items[i]
                vis = self.visible[item].subtract(drawable.region)
                if vis.is_empty():
                    hidden.append(item)
                    del self.visible[item]
                    gone.append(i)
                else:
                    self.visible[item] = vis
                    vbox = vis.bbox()
                    assert vbox is not None
                    b[i] = vbox
            if gone:
                keep = np.ones(n, dtype=bool)
                keep[gone] = False
                for i in reversed(gone):
                    del self.items[i]
                n = len(self.items)
                self._boxes[:n] = b[keep]
        if n == self._boxes.shape[0]:
            grown = np.zeros((2 * n, 4), dtype=np.int64)
            grown[:n] = self._boxes[:n]
            self._boxes = grown
        self.items.append(drawable)
        self.visible[drawable] = drawable.region
        self._boxes[n] = box
        if len(self.items) > MAX_TREE_ITEMS:
            # Forgetting old items only costs pruning opportunities: they are already rendered.
            drop = len(self.items) - MAX_TREE_ITEMS
            for item in self.items[:drop]:
                del self.visible[item]
            del self.items[:drop]
            self._boxes[:MAX_TREE_ITEMS] = self._boxes[drop : drop + MAX_TREE_ITEMS].copy()
        return hidden

    def clear(self) -> None:
        """Forget every draw."""
        self.items.clear()
        self.visible.clear()
