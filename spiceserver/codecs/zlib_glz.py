"""ZLIB_GLZ_RGB: a GLZ stream deflated once more with zlib (``SPICE_IMAGE_TYPE_ZLIB_GLZ_RGB``, 107).

Counterpart of spice-server ``server/zlib-encoder.c`` (``zlib_encode``: ``deflateInit`` at level
``ZLIB_DEFAULT_COMPRESSION_LEVEL`` = 3, zlib wrapper, default window and memory level, one
``Z_FINISH`` stream per image) as used by ``image_encoders_compress_glz``; and of spice-gtk
``src/decode-zlib.c`` (``inflate`` into a buffer of ``glz_data_size`` bytes, then the GLZ decoder).

The image body on the wire is ``{u32 glz_data_size, u32 data_size, data}`` (little-endian, like
every SPICE message field): ``glz_data_size`` is the inflated size, i.e. the GLZ stream's length.
spice-server wraps only when the WAN option is on, the GLZ stream is at least
:data:`MIN_GLZ_SIZE_FOR_ZLIB` bytes and deflate makes it smaller; otherwise it sends the GLZ stream
as ``GLZ_RGB``. Either way the GLZ image has entered the client's dictionary window and must be sent.
"""

from __future__ import annotations

import zlib

from ..errors import ProtocolError
from .glz import GlzDecoderWindow, GlzImage, decode_glz

__all__ = [
    "ZLIB_DEFAULT_COMPRESSION_LEVEL",
    "MIN_GLZ_SIZE_FOR_ZLIB",
    "MAX_GLZ_DATA_SIZE",
    "deflate_glz",
    "encode_zlib_glz",
    "inflate_glz",
    "decode_zlib_glz",
]

ZLIB_DEFAULT_COMPRESSION_LEVEL = 3
MIN_GLZ_SIZE_FOR_ZLIB = 100
#: Default bound on ``glz_data_size`` accepted by the decoder (bytes).
MAX_GLZ_DATA_SIZE = 1 << 28


def deflate_glz(glz_data: bytes | bytearray | memoryview, level: int = ZLIB_DEFAULT_COMPRESSION_LEVEL) -> bytes:
    """Deflate a GLZ stream with the zlib wrapper, as ``zlib_encode`` does (releases the GIL)."""
    return zlib.compress(bytes(glz_data), level)


def encode_zlib_glz(
    glz_data: bytes | bytearray | memoryview, level: int = ZLIB_DEFAULT_COMPRESSION_LEVEL
) -> bytes | None:
    """The ZLIB_GLZ_RGB ``data`` for a GLZ stream, or None when spice-server would send plain GLZ.

    None means: the stream is shorter than :data:`MIN_GLZ_SIZE_FOR_ZLIB` or deflate did not make it
    smaller. Otherwise send ``{glz_data_size = len(glz_data), data_size = len(result), result}``.
    """
    if len(glz_data) < MIN_GLZ_SIZE_FOR_ZLIB:
        return None
    packed = deflate_glz(glz_data, level)
    return packed if len(packed) < len(glz_data) else None


def inflate_glz(
    data: bytes | bytearray | memoryview, glz_data_size: int, *, max_size: int = MAX_GLZ_DATA_SIZE
) -> bytes:
    """Inflate ZLIB_GLZ_RGB data back to the GLZ stream of exactly ``glz_data_size`` bytes.

    Raises:
        ProtocolError: a size out of bounds, a broken or unfinished zlib stream, trailing bytes,
            or an inflated size other than ``glz_data_size``.
    """
    if not 0 < glz_data_size <= max_size:
        raise ProtocolError("bad ZLIB_GLZ glz_data_size")
    d = zlib.decompressobj()
    try:
        out = d.decompress(bytes(data), glz_data_size)
    except zlib.error as exc:
        raise ProtocolError(f"bad ZLIB_GLZ data: {exc}") from None
    if not d.eof:
        raise ProtocolError("ZLIB_GLZ data does not inflate to glz_data_size bytes")
    if d.unused_data or d.unconsumed_tail:
        raise ProtocolError("trailing bytes after the ZLIB_GLZ data")
    if len(out) != glz_data_size:
        raise ProtocolError("ZLIB_GLZ data inflates to the wrong size")
    return out


def decode_zlib_glz(window: GlzDecoderWindow, data: bytes | bytearray | memoryview, glz_data_size: int) -> GlzImage:
    """Inflate and GLZ-decode one ZLIB_GLZ_RGB image against the client's window.

    Raises:
        ProtocolError: see :func:`inflate_glz` and :func:`~spiceserver.codecs.glz.decode_glz`.
    """
    return decode_glz(window, inflate_glz(data, glz_data_size))
