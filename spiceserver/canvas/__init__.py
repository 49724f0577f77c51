"""The server's software canvas: its copy of what each client shows, drawn as spice-gtk draws it.

Counterpart of spice-common ``common/canvas_base.c``, ``common/sw_canvas.c``,
``common/pixman_utils.c``, ``common/rop3.c`` and ``common/lines.c`` (the code spice-gtk renders
every display message with), over numpy arrays instead of pixman images.
"""

from __future__ import annotations

from .draw import render, render_op
from .images import ImageResolver, NullResolver, decode_image
from .surface import Canvas, PixFmt, Pixmap

__all__ = ["Canvas", "Pixmap", "PixFmt", "ImageResolver", "NullResolver", "decode_image", "render", "render_op"]
