"""Surfaces: the primary (what the client shows) and offscreen ones, each with a software canvas.

Counterpart of spice ``server/display-channel.cpp`` (``display_channel_create_surface``,
``RedSurface``) and the canvases of spice-common ``sw_canvas.c``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..canvas.surface import Canvas
from ..proto.enums import SurfaceFmt
from ..qxl.reader import MAX_SURFACE_PIXELS
from .tree import DrawableTree

__all__ = ["Surface", "MAX_SURFACE_PIXELS"]


@dataclass(eq=False)
class Surface:
    """A surface and its canvas.

    For QXL surfaces, ``guest_view`` is the guest memory that backs the surface (a live view, written
    on UPDATE_AREA and when the surface goes away), ``guest_stride`` its stride in bytes (negative =
    bottom-up), and ``create_cmd`` the guest command to release when the surface is destroyed.
    """

    id: int
    width: int
    height: int
    format: int = SurfaceFmt.FMT_32_XRGB
    primary: bool = False
    guest_view: memoryview | None = None
    guest_stride: int = 0
    create_cmd: Any = None
    canvas: Canvas = field(init=False)
    tree: DrawableTree = field(default_factory=DrawableTree)

    def __post_init__(self) -> None:
        # the device (``validate_surface``) and a replay refuse such surfaces before they get here
        if self.width <= 0 or self.height <= 0 or self.width * self.height > MAX_SURFACE_PIXELS:
            raise ValueError(f"surface size {self.width}x{self.height} out of range")
        self.canvas = Canvas(self.width, self.height, self.format)
