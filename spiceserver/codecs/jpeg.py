"""JPEG images (SPICE_IMAGE_TYPE_JPEG): baseline JFIF through Pillow (libjpeg-turbo, in C).

Counterpart of spice ``server/jpeg-encoder.c`` (RGB input, ``jpeg_set_quality(q, TRUE)``, quality 85
in ``dcc.cpp``) and spice-gtk ``decode-jpeg.c``. Lossy: used only where lossy images are allowed
(``jpeg-wan-compression``), instead of Quic for photo-like images.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ..errors import ProtocolError

__all__ = ["encode_jpeg", "decode_jpeg", "DEFAULT_QUALITY", "MAX_PIXELS"]

DEFAULT_QUALITY = 85
MAX_PIXELS = 1 << 26


def encode_jpeg(pixels: np.ndarray, quality: int = DEFAULT_QUALITY) -> bytes:
    """Encode an (h, w) uint32 0x00RRGGBB image (alpha ignored) as baseline JFIF, top-down."""
    px = np.ascontiguousarray(pixels, dtype=np.uint32)
    rgb = np.empty((*px.shape, 3), dtype=np.uint8)
    rgb[..., 0] = (px >> 16) & 0xFF
    rgb[..., 1] = (px >> 8) & 0xFF
    rgb[..., 2] = px & 0xFF
    out = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(out, "JPEG", quality=quality, optimize=False, progressive=False)
    return out.getvalue()


def decode_jpeg(data: bytes, width: int | None = None, height: int | None = None) -> np.ndarray:
    """Decode to (h, w) uint32 0x00RRGGBB; raises ProtocolError on a bad stream or size mismatch."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG":
                raise ProtocolError("not a JPEG stream")
            if im.width * im.height > MAX_PIXELS:
                raise ProtocolError(f"JPEG of {im.width}x{im.height} is too large")
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint32)
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"bad JPEG data: {exc}") from None
    if (width is not None and rgb.shape[1] != width) or (height is not None and rgb.shape[0] != height):
        raise ProtocolError(f"JPEG is {rgb.shape[1]}x{rgb.shape[0]}, expected {width}x{height}")
    out: np.ndarray = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return out
