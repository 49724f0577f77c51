"""SPICE's LZ4 image format (``SPICE_IMAGE_TYPE_LZ4``).

Encoder counterpart of spice-server ``server/lz4-encoder.c`` (``lz4_encode``); decoder counterpart
of spice-common ``common/canvas_base.c`` ``canvas_get_lz4``, which spice-gtk runs.

Stream layout::

    u8  top_down        1 = first row is the top row, 0 = first row is the bottom row
    u8  format          SpiceBitmapFmt: 16BIT (x555), 24BIT (B,G,R), 32BIT (B,G,R,X) or RGBA (B,G,R,A)
    repeat until the end of the data (at least once):
        u32 BE  size    compressed size of the block that follows
        size bytes      one raw LZ4 block

The client decompresses every block with ``LZ4_decompress_safe_continue`` into one contiguous
buffer, so a block may refer back (up to 64 KiB) into the output of the blocks before it, and the
concatenated output is the image's rows **without padding** (``width * bytes_per_pixel`` each) in
stream order. A block that decodes to nothing is an error for the client. The client then spreads
the rows to its own 4-byte aligned stride; 24BIT stays 3 bytes per pixel (``PIXMAN_r8g8b8``) until
the canvas converts it.

The encoder emits blocks of whole rows (up to :data:`BLOCK_BYTES` of input each), compressing each
with the previous 64 KiB of input as dictionary -- what ``LZ4_compress_fast_continue`` does -- so
the client's streaming decoder accepts it. ``lz4.block`` releases the GIL while it works.
"""

from __future__ import annotations

import struct

import lz4.block  # type: ignore[import-untyped]
import numpy as np

from ..errors import ProtocolError

__all__ = ["encode_lz4", "decode_lz4", "LZ4_FORMATS", "BLOCK_BYTES", "MAX_IMAGE_BYTES"]

#: Bytes per pixel of the bitmap formats SPICE allows in an LZ4 stream.
# SpiceBitmapFmt values (spice-protocol ``spice/enums.h``; codecs stay below proto, and a test checks
# these against :class:`~spiceserver.proto.enums.BitmapFmt`)
FMT_16BIT, FMT_24BIT, FMT_32BIT, FMT_RGBA = 6, 7, 8, 9
LZ4_FORMATS: dict[int, int] = {FMT_16BIT: 2, FMT_24BIT: 3, FMT_32BIT: 4, FMT_RGBA: 4}

#: Target input size of one block (whole rows; at least one row per block).
BLOCK_BYTES = 256 * 1024
#: LZ4's match window: the dictionary handed to the next block.
_WINDOW = 64 * 1024
#: Largest decoded image :func:`decode_lz4` accepts by default (bytes of unpadded rows).
MAX_IMAGE_BYTES = 256 * 1024 * 1024

_U32BE = struct.Struct(">I")


def _as_bytes(pixels: bytes | bytearray | memoryview | np.ndarray) -> memoryview:
    if isinstance(pixels, np.ndarray):
        return memoryview(np.ascontiguousarray(pixels).reshape(-1).view(np.uint8).data)
    return memoryview(pixels).cast("B")


def encode_lz4(
    pixels: bytes | bytearray | memoryview | np.ndarray,
    width: int,
    height: int,
    fmt: int,
    stride: int,
    top_down: bool = True,
) -> bytes:
    """Compress a bitmap into a SPICE LZ4 stream.

    Rows are taken in memory order (row ``k`` starts at byte ``k * stride``) and written in that
    order; ``top_down`` says whether that first row is the top (1) or the bottom (0) of the image,
    exactly as the bitmap's ``TOP_DOWN`` flag does. Padding beyond ``width * bpp`` is dropped.

    Args:
        pixels: the bitmap bytes (or an array whose memory holds them).
        width: pixels per row (>= 1).
        height: rows (>= 1).
        fmt: a :class:`~spiceserver.proto.enums.BitmapFmt` in :data:`LZ4_FORMATS`.
        stride: bytes from one row to the next (>= ``width * bpp``).
        top_down: the orientation flag written to the stream.

    Raises:
        ValueError: unsupported format, bad size, or too few bytes.
    """
    bpp = LZ4_FORMATS.get(fmt)
    if bpp is None:
        raise ValueError(f"bitmap format {fmt} cannot be sent as LZ4")
    if width <= 0 or height <= 0:
        raise ValueError(f"LZ4 image size {width}x{height} is empty")
    row = width * bpp
    if stride < row:
        raise ValueError(f"stride {stride} < row size {row}")
    buf = _as_bytes(pixels)
    if len(buf) < stride * (height - 1) + row:
        raise ValueError(f"{len(buf)} bytes do not hold {height} rows of stride {stride}")
    if stride == row:
        data = bytes(buf[: row * height])
    else:
        rows = np.frombuffer(buf, np.uint8, count=stride * (height - 1) + row)
        data = np.lib.stride_tricks.as_strided(rows, (height, row), (stride, 1)).tobytes()

    rows_per_block = max(1, BLOCK_BYTES // row)
    block = rows_per_block * row
    out = [bytes((1 if top_down else 0, fmt))]
    for start in range(0, len(data), block):
        chunk = data[start : start + block]
        if start:
            comp = lz4.block.compress(chunk, store_size=False, dict=data[max(0, start - _WINDOW) : start])
        else:
            comp = lz4.block.compress(chunk, store_size=False)
        out.append(_U32BE.pack(len(comp)))
        out.append(comp)
    return b"".join(out)


def decode_lz4(
    data: bytes | bytearray | memoryview, width: int, height: int, *, max_bytes: int = MAX_IMAGE_BYTES
) -> tuple[int, bool, bytes]:
    """Decompress a SPICE LZ4 stream as the client does, with every length checked.

    Args:
        data: the stream (the LZ4 image's ``data``).
        width: the image descriptor's width.
        height: the image descriptor's height.
        max_bytes: refuse images whose unpadded rows would exceed this many bytes.

    Returns:
        ``(fmt, top_down, rows)``: the BitmapFmt, the orientation flag, and ``height`` unpadded
        rows of ``width * bpp`` bytes each, in stream order (bottom row first unless top_down).

    Raises:
        ProtocolError: missing header, unknown format, a truncated or corrupt block, a block that
            decodes to nothing, or output that is not exactly ``height`` rows.
    """
    buf = memoryview(data).cast("B")
    if len(buf) < 2:
        raise ProtocolError("LZ4 image: missing header")
    top_down = buf[0] != 0
    fmt = buf[1]
    bpp = LZ4_FORMATS.get(fmt)
    if bpp is None:
        raise ProtocolError(f"LZ4 image: unsupported bitmap format {fmt}")
    if width <= 0 or height <= 0:
        raise ProtocolError(f"LZ4 image: empty size {width}x{height}")
    total = width * height * bpp
    if total > max_bytes:
        raise ProtocolError(f"LZ4 image: {width}x{height} exceeds {max_bytes} bytes")
    out = bytearray()
    pos = 2
    end = len(buf)
    while True:  # the client reads at least one block
        if end - pos < 4:
            raise ProtocolError("LZ4 image: truncated block header")
        (size,) = _U32BE.unpack_from(buf, pos)
        pos += 4
        if size > end - pos:
            raise ProtocolError(f"LZ4 image: block of {size} bytes overruns the data")
        available = total - len(out)
        if available <= 0:
            raise ProtocolError("LZ4 image: data beyond the last row")
        try:
            if out:
                dec = lz4.block.decompress(
                    buf[pos : pos + size], uncompressed_size=available, dict=bytes(out[-_WINDOW:])
                )
            else:
                dec = lz4.block.decompress(buf[pos : pos + size], uncompressed_size=available)
        except lz4.block.LZ4BlockError as exc:
            raise ProtocolError(f"LZ4 image: corrupt block ({exc})") from None
        if not dec:
            raise ProtocolError("LZ4 image: empty block")
        out += dec
        pos += size
        if pos >= end:
            break
    if len(out) != total:
        raise ProtocolError(f"LZ4 image: {len(out)} bytes decoded, {total} expected")
    return fmt, top_down, bytes(out)
