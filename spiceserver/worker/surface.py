"""Surfaces: the primary (what the client shows) and offscreen ones, each with a software canvas.

Counterpart of spice ``server/display-channel.cpp`` (``display_channel_create_surface``,
``RedSurface``) and the canvases of spice-common ``sw_canvas.c``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..canvas.surface import Canvas
from ..proto.enums import SurfaceFmt
from .tree import DrawableTree

__all__ = ["Surface", "GuestSurfaceMemory", "MAX_SURFACE_PIXELS"]

MAX_SURFACE_PIXELS = 8192 * 8192


@dataclass(frozen=True)
class GuestSurfaceMemory:
    """Where the guest wants the surface's pixels written back on UPDATE_AREA."""

    phys: int  # QXLPHYSICAL of line 0
    stride: int  # bytes; negative = bottom-up
    group_id: int = 0


@dataclass(eq=False)
class Surface:
    id: int
    width: int
    height: int
    format: int = SurfaceFmt.FMT_32_XRGB
    primary: bool = False
    guest: GuestSurfaceMemory | None = None
    canvas: Canvas = field(init=False)
    tree: DrawableTree = field(default_factory=DrawableTree)

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or self.width * self.height > MAX_SURFACE_PIXELS:
            raise ValueError(f"surface size {self.width}x{self.height} out of range")
        self.canvas = Canvas(self.width, self.height, self.format)
