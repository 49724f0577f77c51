"""A piece of a surface's canvas as a SPICE bitmap image that a client's canvas takes back exactly.

Used where the server sends (or records) pixels it holds instead of a guest's draw: the picture a
client gets after SURFACE_CREATE, the pictures a slow client's pipe collapses into, and the first
frame of a recording. Counterpart of what spice ``server/display-channel.cpp``
(``display_channel_push_surface_image`` / ``red_push_surface_image``) sends: an image in the
surface's own format where SPICE has one.
"""

from __future__ import annotations

import numpy as np

from ..canvas.pixman import to_8888
from ..canvas.surface import PixFmt, Pixmap
from ..proto.enums import BitmapFlags, BitmapFmt, ImageType
from ..proto.messages import display as d

__all__ = ["picture_image"]


def picture_image(pixels: np.ndarray, pixfmt: PixFmt) -> d.Image:
    """``pixels`` (an (h, w) array of a canvas in ``pixfmt``) as an uncompressed BITMAP image:
    x8r8g8b8 as BIT32, a8r8g8b8 as RGBA, x1r5g5b5 as BIT16, a8 as BIT8_A, and r5g6b5 / a1 (which
    SPICE bitmaps cannot carry) widened to BIT32 / BIT8_A, which the client stores back bit-exactly."""
    if pixfmt in (PixFmt.X8R8G8B8, PixFmt.A8R8G8B8):
        fmt, data, bpp = (BitmapFmt.BIT32 if pixfmt == PixFmt.X8R8G8B8 else BitmapFmt.RGBA), pixels.astype("<u4"), 4
    elif pixfmt == PixFmt.X1R5G5B5:
        fmt, data, bpp = BitmapFmt.BIT16, pixels.astype("<u2"), 2
    elif pixfmt == PixFmt.R5G6B5:
        fmt, data, bpp = BitmapFmt.BIT32, to_8888(Pixmap(pixels, pixfmt)).astype("<u4"), 4
    elif pixfmt == PixFmt.A8:
        fmt, data, bpp = BitmapFmt.BIT8_A, pixels.astype(np.uint8), 1
    else:  # A1: one byte per pixel, 0 or 255
        fmt, data, bpp = BitmapFmt.BIT8_A, (pixels.astype(np.uint8) & 1) * np.uint8(255), 1
    h, w = pixels.shape
    return d.Image(
        descriptor=d.ImageDescriptor(id=0, type=ImageType.BITMAP, flags=0, width=w, height=h),
        bitmap=d.BitmapData(
            format=fmt, flags=BitmapFlags.TOP_DOWN, x=w, y=h, stride=w * bpp, palette=None,
            data=np.ascontiguousarray(data).tobytes(),
        ),
    )  # fmt: skip
