"""The software canvas: one surface's pixels as a numpy array, in the client's memory layout.

Counterpart of spice-common ``common/sw_canvas.c`` (``canvas_create_for_data``: a pixman image
over the surface memory) and of the formats of ``common/pixman_utils.c``
(``spice_surface_format_to_pixman``). Like spice-gtk's ``display_surface``, a new canvas is all
zeros.

Pixels are stored exactly as pixman stores them on a little-endian host, one array element per
pixel:

========================  ============  =====================================================
SurfaceFmt                pixman        ``Canvas.pixels``
========================  ============  =====================================================
FMT_32_XRGB               x8r8g8b8      uint32 ``0xXXRRGGBB`` (bytes B, G, R, X in memory)
FMT_32_ARGB               a8r8g8b8      uint32 ``0xAARRGGBB``, premultiplied alpha
FMT_16_555                x1r5g5b5      uint16 ``0b0rrrrrgggggbbbbb``
FMT_16_565                r5g6b5        uint16 ``0brrrrrggggggbbbbb``
FMT_8_A                   a8            uint8 alpha
FMT_1_A                   a1            uint8, 0 or 1 (unpacked; pixman packs LSB first)
========================  ============  =====================================================

The X byte of FMT_32_XRGB is kept, not cleared: the client's raw blits copy it and a few
operations read it as alpha (see :mod:`spiceserver.canvas.draw`), while displays ignore it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
from PIL import Image as PILImage

from ..errors import NotSupportedError
from ..proto.enums import SurfaceFmt

if TYPE_CHECKING:
    from ..proto.messages.base import Rect

__all__ = ["Canvas", "Pixmap", "PixFmt", "pixfmt_of_surface", "DTYPES", "MAX_CANVAS_PIXELS"]

#: Largest surface the canvas accepts (pixels); spice-server's own limit is far below.
MAX_CANVAS_PIXELS = 1 << 28


class PixFmt(IntEnum):
    """The pixman formats spice-common's canvas uses for surfaces and decoded images."""

    A1 = 1
    A8 = 8
    X1R5G5B5 = 15
    R5G6B5 = 16
    X8R8G8B8 = 24
    A8R8G8B8 = 32

    @property
    def bpp(self) -> int:
        """Bits per pixel of this format in memory (24-bit RGB takes 32)."""
        return {1: 1, 8: 8, 15: 16, 16: 16, 24: 32, 32: 32}[int(self)]

    @property
    def has_alpha(self) -> bool:
        """True for the formats with an alpha channel (A1, A8, A8R8G8B8)."""
        return self in (PixFmt.A1, PixFmt.A8, PixFmt.A8R8G8B8)


#: numpy dtype of one pixel of each format.
DTYPES: dict[PixFmt, type[np.unsignedinteger]] = {
    PixFmt.A1: np.uint8,
    PixFmt.A8: np.uint8,
    PixFmt.X1R5G5B5: np.uint16,
    PixFmt.R5G6B5: np.uint16,
    PixFmt.X8R8G8B8: np.uint32,
    PixFmt.A8R8G8B8: np.uint32,
}

_SURFACE_PIXFMT = {
    SurfaceFmt.FMT_1_A: PixFmt.A1,
    SurfaceFmt.FMT_8_A: PixFmt.A8,
    SurfaceFmt.FMT_16_555: PixFmt.X1R5G5B5,
    SurfaceFmt.FMT_16_565: PixFmt.R5G6B5,
    SurfaceFmt.FMT_32_XRGB: PixFmt.X8R8G8B8,
    SurfaceFmt.FMT_32_ARGB: PixFmt.A8R8G8B8,
}


def pixfmt_of_surface(fmt: int) -> PixFmt:
    """The pixman format of a SurfaceFmt (``spice_surface_format_to_pixman``).

    Raises:
        NotSupportedError: not a surface format.
    """
    try:
        return _SURFACE_PIXFMT[SurfaceFmt(fmt)]
    except (ValueError, KeyError):
        raise NotSupportedError(f"surface format {fmt} is not supported") from None


@dataclass(eq=False)
class Pixmap:
    """A decoded image or a view of a surface: ``pixels`` (height, width) in ``format``."""

    pixels: np.ndarray
    format: PixFmt

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(self.pixels.shape[0])


RectLike = tuple[int, int, int, int]


class Canvas:
    """A surface's pixels (see the module docstring for the layout of :attr:`pixels`).

    Args:
        width: pixels per row (> 0).
        height: rows (> 0).
        fmt: a :class:`~spiceserver.proto.enums.SurfaceFmt`.

    Raises:
        NotSupportedError: unknown format.
        ValueError: empty or oversized surface.
    """

    def __init__(self, width: int, height: int, fmt: int = SurfaceFmt.FMT_32_XRGB) -> None:
        if width <= 0 or height <= 0 or width * height > MAX_CANVAS_PIXELS:
            raise ValueError(f"canvas size {width}x{height} out of range")
        self.pixfmt = pixfmt_of_surface(fmt)
        self.format = SurfaceFmt(fmt)
        self.width = width
        self.height = height
        self.pixels: np.ndarray = np.zeros((height, width), DTYPES[self.pixfmt])

    def __repr__(self) -> str:
        return f"Canvas({self.width}x{self.height}, {self.pixfmt.name})"

    def pixmap(self, *, with_alpha: bool = False, force_opaque: bool = False) -> Pixmap:
        """A view of the pixels as a pixman image, as the client's canvas hands them out.

        Args:
            with_alpha: view an xRGB surface as ARGB (``canvas_get_as_surface(..., with_alpha)``).
            force_opaque: view an ARGB surface as xRGB (``get_image(..., force_opaque)``).
        """
        fmt = self.pixfmt
        if with_alpha and fmt == PixFmt.X8R8G8B8:
            fmt = PixFmt.A8R8G8B8
        elif force_opaque and fmt == PixFmt.A8R8G8B8:
            fmt = PixFmt.X8R8G8B8
        return Pixmap(self.pixels, fmt)

    def read(self, rect: Rect | RectLike | None = None) -> np.ndarray:
        """A copy of the pixels of ``rect`` (a wire Rect or ``(left, top, right, bottom)``), clipped
        to the surface; the whole surface when None (``canvas_read_bits``)."""
        if rect is None:
            return self.pixels.copy()
        if isinstance(rect, tuple):
            left, top, right, bottom = rect
        else:
            left, top, right, bottom = rect.left, rect.top, rect.right, rect.bottom
        left, top = max(0, left), max(0, top)
        right, bottom = min(self.width, right), min(self.height, bottom)
        if left >= right or top >= bottom:
            return np.zeros((0, 0), self.pixels.dtype)
        return self.pixels[top:bottom, left:right].copy()

    def rgb(self) -> np.ndarray:
        """(height, width, 3) uint8 R, G, B as a viewer shows them (X byte ignored, 16-bit expanded)."""
        from .pixman import to_8888

        argb = to_8888(self.pixmap())
        out = np.empty((self.height, self.width, 3), np.uint8)
        out[..., 0] = (argb >> 16) & 0xFF
        out[..., 1] = (argb >> 8) & 0xFF
        out[..., 2] = argb & 0xFF
        return out

    def to_png(self, path_or_file: str | Path | IO[bytes]) -> None:
        """Save as PNG: RGB (RGBA for FMT_32_ARGB, premultiplied values as stored; greyscale alpha for
        the A8/A1 formats)."""
        if self.pixfmt in (PixFmt.A8, PixFmt.A1):
            values = self.pixels if self.pixfmt == PixFmt.A8 else self.pixels * np.uint8(255)
            img = PILImage.fromarray(np.ascontiguousarray(values, np.uint8), "L")
        elif self.pixfmt == PixFmt.A8R8G8B8:
            rgba = np.empty((self.height, self.width, 4), np.uint8)
            rgba[..., :3] = self.rgb()
            rgba[..., 3] = (self.pixels >> 24).astype(np.uint8)
            img = PILImage.fromarray(rgba, "RGBA")
        else:
            img = PILImage.fromarray(self.rgb(), "RGB")
        img.save(path_or_file, format="PNG")
