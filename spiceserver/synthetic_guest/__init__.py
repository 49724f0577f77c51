"""A synthetic guest: a fake QXL driver that draws a desktop with real QXL commands.

Where :mod:`spiceserver.desktop` paints numpy frames for the framebuffer path, this module plays the
guest side of an emulated QXL device (:class:`~spiceserver.qxl.device.QXLDevice`) the way the Linux
and Windows QXL drivers do: memslots and the primary surface are set up through the I/O ports
(``MEMSLOT_ADD``, ``CREATE_PRIMARY`` with ``ram.create_surface`` filled in), every drawing is a
``QXLDrawable`` written into guest memory and pushed on the command ring, cursor shapes go through the
cursor ring, released commands come back through the release ring and their memory is reused. Nothing
takes a shortcut into the worker.

What it draws:

* a wallpaper (a solid fill and a gradient bitmap in 64-row bands, sent with the QXL image cache flag);
* windows: fills, borders as strokes, title bars with text as glyph strings (a small font rasterized
  with Pillow into ``RasterGlyphA4`` / ``RasterGlyphA1`` glyphs), buttons as fills through a 1-bit mask;
* a photo viewer with smooth 32- and 24-bit photos (cache flag: every redraw is a client cache hit);
* an editor whose text pane scrolls with ``COPY_BITS``;
* a chart drawn into an off-screen surface, then copied to the screen with a ``SURFACE`` image;
* a window moving along the bottom (the wallpaper under it repaired from the cached bands);
* a hardware cursor (cursor ring: ``SET`` with an ``ALPHA`` shape, then ``MOVE``).

:meth:`SyntheticGuest.draw_static` paints the still desktop, :meth:`SyntheticGuest.step` one
animation frame, :meth:`SyntheticGuest.resize` switches modes, and the ``scene_*`` methods each
exercise one kind of drawing operation on a small (at least 320x240) primary for the tests.

The guest code runs on the caller's thread, which plays the guest vCPU: synchronous I/O writes block
until the device's worker is done, and a full ring or exhausted memory is waited out (the guest polls
the release ring and sends ``NOTIFY_OOM``, as the kernel driver does).
"""

from __future__ import annotations

from .driver import SyntheticDriver
from .glyphs import GlyphFont
from .guest import DesktopGuest
from .helpers import ROPD_AND, ROPD_OR, ROPD_PUT, ROPD_XOR, bitmap_image, rgb, surface_image, xywh
from .scenes import SCENES, SyntheticGuest

__all__ = [
    "SyntheticGuest",
    "DesktopGuest",
    "SyntheticDriver",
    "GlyphFont",
    "SCENES",
    "bitmap_image",
    "surface_image",
    "rgb",
    "xywh",
    "ROPD_PUT",
    "ROPD_OR",
    "ROPD_AND",
    "ROPD_XOR",
]
