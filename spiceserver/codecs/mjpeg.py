"""MJPEG stream frames (``SPICE_VIDEO_CODEC_TYPE_MJPEG``): one baseline JFIF per frame.

Counterpart of the pixel side of spice-server ``server/mjpeg-encoder.c`` (``mjpeg_encoder_start_frame``,
``encode_frame``, ``mjpeg_encoder_end_frame``); the rate control of that file is
:mod:`spiceserver.worker.mjpeg_rate`. The client's decoders are spice-gtk
``channel-display-mjpeg.c`` (libjpeg, ``jpeg_read_header`` on every frame) and spice-html5
``display.js`` ``process_mjpeg_stream_data`` (the browser's image decoder through a ``data:`` URL).

What a frame is, as libspice makes it:

* a complete, standalone JPEG: SOI, JFIF APP0, quantisation and Huffman tables, baseline SOF0, one
  scan, EOI. libspice re-arms its tables with ``jpeg_set_defaults``/``jpeg_set_quality`` before every
  frame, so each frame carries them; both clients need that (they decode every frame on its own);
* 4:2:0 chroma subsampling (libjpeg's default 2x2 for YCbCr), quality from the rate control's
  ladder (``jpeg_set_quality(q, TRUE)``), the fast integer DCT (``JDCT_IFAST``);
* encoded straight from the 32-bit pixels: libspice hands libjpeg-turbo ``JCS_EXT_BGRX`` rows
  (``JCS_EXT_XRGB`` on a big-endian host). Our canvas pixels are native ``uint32`` 0x00RRGGBB, i.e.
  B, G, R, X bytes in memory on a little-endian host, so the rows go to libjpeg-turbo as they are,
  without a channel split or a copy in Python.

The encoder is ``simplejpeg`` (libjpeg-turbo's TurboJPEG API); it releases the GIL while it
compresses, so a worker may encode while the asyncio loop and other workers run.

Orientation is the caller's business: the rows are encoded in the order given (row 0 first). The
stream sets ``SPICE_STREAM_FLAGS_TOP_DOWN`` in STREAM_CREATE when row 0 is the top row -- always, for
our canvases -- or clients flip the picture; libspice itself reads bottom-up bitmaps backwards
(``encode_frame``'s ``skip_lines``) and so always produces top-down JPEGs as well.
"""

from __future__ import annotations

import sys

import numpy as np
import simplejpeg  # type: ignore[import-untyped]

__all__ = ["encode_mjpeg_frame", "MIN_QUALITY", "MAX_QUALITY", "MAX_DIMENSION"]

MIN_QUALITY = 1
MAX_QUALITY = 100
#: JPEG's own limit on either dimension (libjpeg ``JPEG_MAX_DIMENSION``).
MAX_DIMENSION = 65500

# libspice's JCS_EXT_LE_BGRX: the byte order of a native uint32 0x00RRGGBB pixel in memory.
_COLORSPACE = "BGRX" if sys.byteorder == "little" else "XRGB"


def encode_mjpeg_frame(pixels: np.ndarray, quality: int) -> bytes:
    """Encode one stream frame as a standalone baseline JFIF (4:2:0, fast DCT, tables included).

    Counterpart of ``mjpeg_encoder_encode_frame`` in spice-server ``server/mjpeg-encoder.c`` without
    the rate control (the caller asks :class:`~spiceserver.worker.mjpeg_rate.MjpegRateControl` first).

    Args:
        pixels: an (h, w) ``uint32`` array of 0x00RRGGBB pixels (the top byte is ignored). Rows may
            be a strided view of a larger canvas (``canvas[y0:y1, x0:x1]``) and are read in place;
            any other layout (a negative row step, a column step) is copied to contiguous first.
            Row 0 is encoded first: the caller decides what top-down means (see the module notes).
        quality: the JPEG quality, 1..100 (the rate control's ladder is 20..80).

    Returns:
        The JPEG bytes, SOI to EOI.

    Raises:
        ValueError: not a 2-D ``uint32`` array, an empty or oversized frame, or a quality out of
            range.
    """
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 2 or pixels.dtype != np.uint32:
        raise ValueError("pixels must be an (h, w) uint32 array")
    h, w = pixels.shape
    if not (0 < h <= MAX_DIMENSION and 0 < w <= MAX_DIMENSION):
        raise ValueError(f"cannot encode a {w}x{h} JPEG frame")
    if isinstance(quality, bool) or not isinstance(quality, int | np.integer) or not MIN_QUALITY <= quality <= MAX_QUALITY:
        raise ValueError(f"JPEG quality {quality!r} is not in {MIN_QUALITY}..{MAX_QUALITY}")
    # TurboJPEG takes a row pitch but wants the pixels of a row packed and rows going forwards.
    if pixels.strides[1] != 4 or pixels.strides[0] < 4 * w:
        pixels = np.ascontiguousarray(pixels)
    # (h, w, 4) bytes over the same memory: a view, no copy.
    planes = pixels[:, :, None].view(np.uint8)
    data: bytes = simplejpeg.encode_jpeg(
        planes, quality=int(quality), colorspace=_COLORSPACE, colorsubsampling="420", fastdct=True
    )
    return data
