"""The server's software canvas: its copy of what each client shows, drawn as spice-gtk draws it.

Counterpart of spice-common ``common/canvas_base.c``, ``common/sw_canvas.c``,
``common/pixman_utils.c``, ``common/rop3.c`` and ``common/lines.c`` (the code spice-gtk renders
every display message with), over numpy arrays instead of pixman images.

Fidelity (checked against spice-common's source and, for the pixman arithmetic, against the
system's libpixman-1 in ``tests/canvas``):

* exact: clipping (box, canvas, clip rects) and QMasks; Fill, Blackness, Whiteness, Invers, Copy,
  Blend, Opaque with every rop descriptor; Rop3 (the 218 codes rop3.c implements); Transparent;
  CopyBits; solid, pattern and NONE brushes; bitmaps in the formats spice-common converts;
  NEAREST and INTERPOLATE (pixman bilinear) scaling; AlphaBlend; Composite with the Porter-Duff
  operators, affine transforms, all repeat modes, NEAREST/BILINEAR filters and component alpha;
  Text (A1/A4/A8 glyph masks, back area, ``clear_dest_alpha``); solid zero-width strokes with
  lines and beziers.
* the X byte of FMT_32_XRGB pixels after pixman compositing follows pixman 0.42's x86-64 paths for
  the cases tested (SRC/OVER copies, scaling, OVER with masks); displays ignore it.
* not exact: dashed (STYLED) strokes (spice-common uses the X server's wide-line dash code; here
  the dash pattern gates the zero-width line per pixel); SATURATE with a bilinear-filtered operand
  (pixman interpolates in float there); pattern offsets that make rop3.c's C remainder negative
  (undefined in spice-common; a true modulo here); a self-overlapping Copy from the same surface
  (reads a snapshot here).
* refused with ProtocolError where spice-common aborts the client; QUIC/LZ/GLZ/JPEG images and
  PDF blend / disjoint / conjoint composite operators raise NotSupportedError for now.
"""

from __future__ import annotations

from .draw import render, render_op
from .images import ImageResolver, NullResolver, decode_image
from .surface import Canvas, PixFmt, Pixmap

__all__ = ["Canvas", "ImageResolver", "NullResolver", "PixFmt", "Pixmap", "decode_image", "render", "render_op"]
