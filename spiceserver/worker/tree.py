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

from ..region import Region
from .drawable import Drawable

__all__ = ["DrawableTree", "MAX_TREE_ITEMS"]

MAX_TREE_ITEMS = 2000


class DrawableTree:
    """The visible drawables of one surface, oldest first."""

    def __init__(self) -> None:
        self.items: list[Drawable] = []
        self.visible: dict[Drawable, Region] = {}

    def __len__(self) -> int:
        return len(self.items)

    def add(self, drawable: Drawable) -> list[Drawable]:
        """Insert ``drawable`` on top; return the drawables it hides completely (now removed)."""
        hidden: list[Drawable] = []
        if drawable.opaque and not drawable.region.is_empty():
            keep: list[Drawable] = []
            for item in self.items:
                vis = self.visible[item]
                if vis.intersects(drawable.region):
                    vis = vis - drawable.region
                    if vis.is_empty():
                        hidden.append(item)
                        del self.visible[item]
                        continue
                    self.visible[item] = vis
                keep.append(item)
            self.items = keep
        if not drawable.region.is_empty():
            self.items.append(drawable)
            self.visible[drawable] = drawable.region
        if len(self.items) > MAX_TREE_ITEMS:
            # Forgetting old items only costs pruning opportunities: they are already rendered.
            for item in self.items[: len(self.items) - MAX_TREE_ITEMS]:
                del self.visible[item]
            self.items = self.items[len(self.items) - MAX_TREE_ITEMS :]
        return hidden

    def clear(self) -> None:
        self.items.clear()
        self.visible.clear()
