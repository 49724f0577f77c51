"""A small font rasterized with Pillow into SPICE raster glyphs (A1 / A4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from ..proto.enums import (
    StringFlags,
)
from ..proto.messages import display as d
from ..proto.messages.base import Point, Rect
from .helpers import _rows1be, _rows4be

# --- glyphs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Glyph:
    left: int  # glyph_origin: from the pen position on the baseline to the glyph's top-left corner
    top: int
    width: int
    height: int
    data: bytes  # rows bottom-up (spice-common reads raster glyphs bottom-up), packed at the depth
    advance: float


class GlyphFont:
    """A font rasterized with Pillow into SPICE raster glyphs (1 or 4 bits of coverage per pixel).

    Args:
        size: pixel size (Pillow's built-in scalable font).
        depth: 1 (``RASTER_A1``, no anti-aliasing) or 4 (``RASTER_A4``).
    """

    def __init__(self, size: int = 13, depth: int = 4) -> None:
        if depth not in (1, 4):
            raise ValueError("glyph depth must be 1 or 4")
        font = ImageFont.load_default(size=size)
        if not isinstance(font, ImageFont.FreeTypeFont):
            raise RuntimeError("Pillow was built without FreeType: no scalable font to rasterize")
        self.font = font
        self.size = size
        self.depth = depth
        ascent, descent = font.getmetrics()
        self.ascent = ascent
        self.descent = descent
        self.line_height = ascent + descent + 1
        self._glyphs: dict[str, _Glyph] = {}

    def glyph(self, ch: str) -> _Glyph:
        """The rasterized glyph of one character (cached)."""
        g = self._glyphs.get(ch)
        if g is None:
            g = self._glyphs[ch] = self._rasterize(ch)
        return g

    def _rasterize(self, ch: str) -> _Glyph:
        left, top, right, bottom = (int(v) for v in self.font.getbbox(ch, anchor="ls"))
        advance = float(self.font.getlength(ch))
        w, h = right - left, bottom - top
        if w <= 0 or h <= 0:
            return _Glyph(0, 0, 0, 0, b"", advance)
        im = PILImage.new("L", (w, h), 0)
        draw = ImageDraw.Draw(im)
        draw.fontmode = "1" if self.depth == 1 else "L"
        draw.text((-left, -top), ch, font=self.font, fill=255, anchor="ls")
        cov = np.asarray(im, dtype=np.uint8)[::-1]  # bottom-up
        if not cov.any():
            return _Glyph(0, 0, 0, 0, b"", advance)
        packed = _rows1be(cov >= 128) if self.depth == 1 else _rows4be(cov >> 4)
        return _Glyph(left, top, w, h, packed.tobytes(), advance)

    def measure(self, text: str) -> int:
        """The advance of ``text`` in pixels."""
        return int(sum(self.glyph(ch).advance for ch in text) + 0.5)

    def string(self, text: str, x: int, y: int) -> tuple[d.String, Rect] | None:
        """Glyphs of ``text`` with the pen starting at ``(x, y)`` on the baseline, and their bounding
        box; None if nothing is visible (blanks only)."""
        pen = float(x)
        glyphs: list[d.RasterGlyph] = []
        left = top = 1 << 30
        right = bottom = -(1 << 30)
        cls = d.RasterGlyphA1 if self.depth == 1 else d.RasterGlyphA4
        for ch in text:
            g = self.glyph(ch)
            if g.width:
                px = int(pen + 0.5)
                glyphs.append(
                    cls(
                        render_pos=Point(x=px, y=y),
                        glyph_origin=Point(x=g.left, y=g.top),
                        width=g.width,
                        height=g.height,
                        data=g.data,
                    )
                )
                left, top = min(left, px + g.left), min(top, y + g.top)
                right, bottom = max(right, px + g.left + g.width), max(bottom, y + g.top + g.height)
            pen += g.advance
        if not glyphs:
            return None
        flags = StringFlags.RASTER_A1 if self.depth == 1 else StringFlags.RASTER_A4
        return d.String(flags=int(flags), glyphs=tuple(glyphs)), Rect(top=top, left=left, bottom=bottom, right=right)
