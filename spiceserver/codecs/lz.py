"""SPICE LZ image streams (``SPICE_IMAGE_TYPE_LZ_RGB`` / ``LZ_PLT``, and the alpha plane of JPEG_ALPHA).

Counterpart of spice-common ``common/lz.c`` (``lz_encode``, ``lz_decode_begin``, ``lz_decode``) with
``lz_compress_tmpl.c`` / ``lz_decompress_tmpl.c``; the server side is spice-server
``image_encoders_compress_lz``, the client side spice-common ``canvas_base.c`` (``canvas_get_lz``),
which spice-gtk runs, and spice-html5 ``lz.js`` (RGB32, RGBA and XXXA only).

Stream layout (every header word **big-endian**)::

    u32 magic 0x20205A4C ("  ZL")   u32 version 0x00010001   u32 type (LzImageType)
    u32 width   u32 height   u32 stride (bytes)   u32 top_down
    data: one LZ pass; RGBA = an RGB32 pass directly followed by an alpha pass

A pass is a sequence of control bytes. ``c < 32``: ``c + 1`` literal pixels follow (RGB32/RGB24:
B, G, R; RGB16: high then low byte of the x555 value; alpha, A8 and palette bytes: one byte).
Otherwise a back reference: length field ``c >> 5`` (7 = continue with bytes while they are 255,
then the last), offset = ``(c & 31) << 8`` + next byte, where offset byte 255 with high part 31
escapes to a BE u16 + 8191; length = field - 1 + continuation + bias (1 RGB24/32, 2 RGB16,
3 bytes), distance = offset + 1 pixels back (overlapping copies allowed). Palette images are
coded as their packed bytes (``stride * height`` of them, padding included).

The sequential coder lives in :mod:`.lz_kernels` (numba-compiled when available).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from enum import IntEnum

import numpy as np

from .._jit import kernel_input
from ..errors import ProtocolError
from . import lz_kernels as K

__all__ = [
    "LzImageType",
    "LZ_MAGIC",
    "LZ_VERSION",
    "LZ_HEADER_SIZE",
    "LZ_TYPE_OF_BITMAP_FMT",
    "MAX_DECODE_PIXELS",
    "encode_lz",
    "decode_lz",
    "decode_lz_header",
    "input_pixels",
    "rgb16_to_rgb32",
    "unpack_plt",
    "bytes_per_pixel",
    "plt_pixels_per_byte",
]

LZ_MAGIC = 0x20205A4C
LZ_VERSION = 0x00010001
LZ_HEADER_SIZE = 28
#: lz.c's ``SPICE_MAX_IMAGE_SIZE``: largest ``stride * height`` a header may announce.
SPICE_MAX_IMAGE_SIZE = 1024 * 1024 * 1024 - 1
#: Default bound on the pixels :func:`decode_lz` will allocate (64 Mpx = 256 MiB of uint32).
MAX_DECODE_PIXELS = 1 << 26

_HEADER = struct.Struct(">7I")


class LzImageType(IntEnum):
    """``LzImageType`` of ``common/lz_common.h`` (the stream's ``type`` word)."""

    INVALID = 0
    PLT1_LE = 1
    PLT1_BE = 2
    PLT4_LE = 3
    PLT4_BE = 4
    PLT8 = 5
    RGB16 = 6
    RGB24 = 7
    RGB32 = 8
    RGBA = 9
    XXXA = 10
    A8 = 11


#: spice-server's ``bitmap_fmt_to_lz_image_type``: SpiceBitmapFmt value -> LzImageType.
LZ_TYPE_OF_BITMAP_FMT: dict[int, LzImageType] = {
    1: LzImageType.PLT1_LE,
    2: LzImageType.PLT1_BE,
    3: LzImageType.PLT4_LE,
    4: LzImageType.PLT4_BE,
    5: LzImageType.PLT8,
    6: LzImageType.RGB16,
    7: LzImageType.RGB24,
    8: LzImageType.RGB32,
    9: LzImageType.RGBA,
    10: LzImageType.A8,
}

_PLT_PPB = {1: 8, 2: 8, 3: 2, 4: 2, 5: 1}
_RGB_BPP = {6: 2, 7: 3, 8: 4, 9: 4, 10: 4, 11: 1}


def plt_pixels_per_byte(lz_type: int) -> int:
    """Pixels packed in one byte for a palette type (0 for the others)."""
    return _PLT_PPB.get(int(lz_type), 0)


def bytes_per_pixel(lz_type: int) -> int:
    """Bytes per input pixel of a non-palette type (``RGB_BYTES_PER_PIXEL``; 0 for palette types)."""
    return _RGB_BPP.get(int(lz_type), 0)


def _check_plt_stride(ppb: int, width: int, stride: int) -> bool:
    """lz.c's ``lz_set_sizes`` rule, plus: the rows must hold ``width`` pixels."""
    if stride > width // ppb and (width % ppb == 0 or stride - width // ppb > 1):
        return False
    return stride * ppb >= width


def _flat_u8(pixels: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    if isinstance(pixels, np.ndarray):
        return np.ascontiguousarray(pixels).reshape(-1).view(np.uint8)
    return np.frombuffer(memoryview(pixels).cast("B"), np.uint8)


def _rows(buf: np.ndarray, height: int, stride: int, row_bytes: int) -> np.ndarray:
    """The ``height`` rows of ``row_bytes`` each, as a C-contiguous uint8 array (copy only if padded)."""
    need = stride * (height - 1) + row_bytes
    if buf.shape[0] < need:
        raise ValueError(f"pixel buffer too short: {buf.shape[0]} bytes, need {need}")
    if stride == row_bytes:
        return buf[: row_bytes * height]
    out = np.empty((height, row_bytes), np.uint8)
    for r in range(height):  # rows may be ragged at the end of the buffer
        out[r] = buf[r * stride : r * stride + row_bytes]
    return out.reshape(-1)


def _as_u32(flat: np.ndarray) -> np.ndarray:
    view = flat.view("<u4")
    if not view.flags.aligned or not view.flags.c_contiguous or view.dtype != np.uint32:
        view = np.ascontiguousarray(view, dtype=np.uint32)
    return view


def input_pixels(
    pixels: bytes | bytearray | memoryview | np.ndarray, lz_type: int, width: int, height: int, stride: int
) -> tuple[np.ndarray, int]:
    """Validate sizes and turn raw rows into the ``uint32`` array the kernels read.

    Returns ``(px, header_stride)``, ``px`` read-only and C-contiguous (:func:`._jit.kernel_input`):
    for RGB types it holds ``width * height`` pixels (B,G,R[,X/A]
    as 0xAARRGGBB, RGB16 as its 16-bit value) and the header stride is ``width * bpp`` (padding is
    dropped, as the stream requires unpadded rows); for palette types ``px`` holds the
    ``stride * height`` packed bytes and the stride is kept.

    Raises:
        ValueError: bad type, size or stride, or too few bytes.
    """
    px, hstride = _pixels(pixels, lz_type, width, height, stride)
    return kernel_input(px), hstride  # the one array type the kernels are compiled for


def _pixels(
    pixels: bytes | bytearray | memoryview | np.ndarray, lz_type: int, width: int, height: int, stride: int
) -> tuple[np.ndarray, int]:
    if width < 1 or height < 1 or width > 0x7FFFFFFF or height > 0x7FFFFFFF:
        raise ValueError(f"bad LZ image size {width}x{height}")
    buf = _flat_u8(pixels)
    ppb = plt_pixels_per_byte(lz_type)
    if ppb:
        if not _check_plt_stride(ppb, width, stride):
            raise ValueError(f"bad palette stride {stride} for width {width} ({ppb} pixels per byte)")
        if stride * height > SPICE_MAX_IMAGE_SIZE:
            raise ValueError("image too large")
        return _rows(buf, height, stride, stride).astype(np.uint32), stride
    bpp = bytes_per_pixel(lz_type)
    if not bpp:
        raise ValueError(f"bad LZ image type {lz_type}")
    row = width * bpp
    if stride < row:
        raise ValueError(f"stride {stride} < width * {bpp}")
    if row * height > SPICE_MAX_IMAGE_SIZE:
        raise ValueError("image too large")
    flat = _rows(buf, height, stride, row)
    if bpp == 4:
        return _as_u32(flat), row
    if bpp == 3:
        t = flat.reshape(-1, 3).astype(np.uint32)
        return t[:, 0] | (t[:, 1] << 8) | (t[:, 2] << 16), row
    if bpp == 2:
        return flat.view("<u2").astype(np.uint32), row
    return flat.astype(np.uint32), row


_scratch_local = threading.local()
#: Output buffers up to this size are kept per thread for the next call (no page faults then).
SCRATCH_KEEP_BYTES = 64 * 1024 * 1024


def scratch(size: int) -> np.ndarray:
    """A per-thread uint8 work buffer of at least ``size`` bytes (contents undefined).

    The coders write into it and return a copy of the used part, so reusing it between calls saves
    mapping and faulting in fresh pages for every image.
    """
    buf: np.ndarray | None = getattr(_scratch_local, "buf", None)
    if buf is not None and buf.shape[0] >= size:
        return buf
    buf = np.empty(size, np.uint8)
    if size <= SCRATCH_KEEP_BYTES:
        _scratch_local.buf = buf
    return buf


def _literal_bytes(kind: int) -> int:
    return {K.KIND_RGB: 3, K.KIND_RGB16: 2}.get(kind, 1)


def _passes(lz_type: int) -> tuple[int, ...]:
    t = int(lz_type)
    if t == LzImageType.RGBA:
        return (K.KIND_RGB, K.KIND_ALPHA)
    if t == LzImageType.XXXA:
        return (K.KIND_ALPHA,)
    if t in (LzImageType.RGB32, LzImageType.RGB24):
        return (K.KIND_RGB,)
    if t == LzImageType.RGB16:
        return (K.KIND_RGB16,)
    return (K.KIND_BYTE,)


def encode_lz(
    pixels: bytes | bytearray | memoryview | np.ndarray,
    lz_type: int,
    *,
    width: int,
    height: int,
    stride: int,
    top_down: bool = True,
) -> bytes:
    """Compress a bitmap into a SPICE LZ stream (header included).

    Rows are taken in memory order (row ``k`` at byte ``k * stride``) and coded in that order;
    ``top_down`` is only the header flag saying whether that first row is the top of the image,
    as the bitmap's ``TOP_DOWN`` flag does (spice-server passes it through the same way).

    Args:
        pixels: the raw rows, or an array whose memory holds them (taken in C order; a
            non-contiguous view is compacted first, so ``stride`` then describes the compact rows):
            RGB32 B,G,R,X / RGBA and XXXA
            B,G,R,A (e.g. ``uint32`` 0xAARRGGBB), RGB24 B,G,R, RGB16 little-endian x555, A8 one
            byte, palette types the packed index bytes (PLT1_LE: bit 0 first; PLT4_LE: low nibble
            first; the _BE types the other way round).
        lz_type: an :class:`LzImageType` other than ``INVALID``.
        width: pixels per row (>= 1).
        height: rows (>= 1).
        stride: bytes from one row to the next. RGB types: >= ``width * bpp`` (padding is dropped;
            the header says ``width * bpp``). Palette types: the packed row size, which lz.c allows
            to exceed ``width / ppb`` by at most one partially used byte.
        top_down: the header's orientation flag.

    Raises:
        ValueError: bad type, size or stride, or too few bytes.
    """
    px, hstride = input_pixels(pixels, lz_type, width, height, stride)
    n = int(px.shape[0])
    passes = _passes(lz_type)
    cap = LZ_HEADER_SIZE + sum(n * (_literal_bytes(k) + 1) + 64 for k in passes)
    out = scratch(cap)
    out[:LZ_HEADER_SIZE] = np.frombuffer(
        _HEADER.pack(LZ_MAGIC, LZ_VERSION, int(lz_type), width, height, hstride, 1 if top_down else 0), np.uint8
    )
    op = LZ_HEADER_SIZE
    for kind in passes:
        op = int(K.lz_compress_rgb(px, n, out, op)) if kind == K.KIND_RGB else int(K.lz_compress(kind, px, n, out, op))
    return out[:op].tobytes()


_DECODE_ERRORS = {
    K.ERR_TRUNCATED: "LZ data truncated",
    K.ERR_OVERRUN: "LZ code runs past the end of the image",
    K.ERR_BAD_REF: "LZ reference before the start of the image",
}


def _check(pos: int) -> int:
    if pos < 0:
        raise ProtocolError(_DECODE_ERRORS.get(pos, "bad LZ data"))
    return pos


def rgb16_to_rgb32(px: np.ndarray) -> np.ndarray:
    """Expand x555 values to 0x00RRGGBB exactly as the client's ``lz_rgb16_to_rgb32`` does."""
    p = px.astype(np.uint32)
    r5, g5, b5 = (p >> 10) & 31, (p >> 5) & 31, p & 31
    r = (r5 << 3) | (r5 >> 2)
    g = (g5 << 3) | (g5 >> 2)
    b = (b5 << 3) | (b5 >> 2)
    return ((r << 16) | (g << 8) | b).astype(np.uint32)


def unpack_plt(packed: np.ndarray, lz_type: int, width: int) -> np.ndarray:
    """Packed palette rows ``(h, stride)`` -> ``(h, width)`` uint8 indices, in the client's pixel order."""
    ppb = plt_pixels_per_byte(lz_type)
    t = int(lz_type)
    if ppb == 1:
        return np.ascontiguousarray(packed[:, :width])
    if ppb == 2:
        hi, lo = packed >> 4, packed & 15
        pair = (hi, lo) if t == LzImageType.PLT4_BE else (lo, hi)
        idx = np.stack(pair, axis=-1)
    else:
        idx = np.unpackbits(packed[..., None], axis=-1, bitorder="big" if t == LzImageType.PLT1_BE else "little")
    return np.ascontiguousarray(idx.reshape(packed.shape[0], -1)[:, :width].astype(np.uint8))


def _apply_palette(idx: np.ndarray, lz_type: int, palette: Sequence[int] | np.ndarray) -> np.ndarray:
    """Palette lookup as lz.c's ``*_to_rgb32`` decoders do (PLT4 wraps, PLT1 uses entries 0 and 1)."""
    ents = (np.asarray(palette, dtype=np.int64).reshape(-1) & 0xFFFFFF).astype(np.uint32)
    num = int(ents.shape[0])
    wide = idx.astype(np.int64)
    ppb = plt_pixels_per_byte(lz_type)
    if ppb == 8:
        if num < 2:
            raise ProtocolError("a 1-bit palette image needs two palette entries")
        return ents[:2][wide]
    if num == 0:
        raise ProtocolError("empty palette")
    if ppb == 2:
        return ents[wide % num]
    if int(wide.max(initial=0)) >= num:
        raise ProtocolError("palette index out of range")
    return ents[wide]


def decode_lz_header(data: bytes | bytearray | memoryview) -> tuple[LzImageType, int, int, int, bool]:
    """Parse and validate an LZ header: ``(type, width, height, stride, top_down)``.

    Raises:
        ProtocolError: short header, bad magic/version/type, or sizes lz.c's ``lz_set_sizes`` rejects.
    """
    if len(data) < LZ_HEADER_SIZE:
        raise ProtocolError("LZ header truncated")
    magic, version, t, width, height, stride, top_down = _HEADER.unpack_from(data, 0)
    if magic != LZ_MAGIC:
        raise ProtocolError("bad LZ magic")
    if version != LZ_VERSION:
        raise ProtocolError("bad LZ version")
    if not LzImageType.PLT1_LE <= t <= LzImageType.A8:
        raise ProtocolError(f"bad LZ image type {t}")
    if width > 0x7FFFFFFF or height > 0x7FFFFFFF or stride > 0x7FFFFFFF:
        raise ProtocolError("bad LZ image size")
    if width == 0 or height == 0:
        raise ProtocolError("empty LZ image")
    ppb = plt_pixels_per_byte(t)
    if ppb:
        if not _check_plt_stride(ppb, width, stride):
            raise ProtocolError("bad LZ palette stride")
    elif stride != width * bytes_per_pixel(t):
        raise ProtocolError("LZ stride != width * bytes per pixel")
    if stride * height > SPICE_MAX_IMAGE_SIZE:
        raise ProtocolError("LZ image too large")
    return LzImageType(t), width, height, stride, bool(top_down)


def decode_lz(
    data: bytes | bytearray | memoryview,
    *,
    palette: Sequence[int] | np.ndarray | None = None,
    max_pixels: int = MAX_DECODE_PIXELS,
) -> tuple[LzImageType, int, int, bool, np.ndarray]:
    """Decode a whole SPICE LZ stream (header included), as the client does.

    Returns ``(lz_type, width, height, top_down, out)``; ``out`` has shape ``(height, width)`` in
    stream row order (flip it yourself when ``top_down`` is false):

    - RGB32, RGB24: ``uint32`` 0x00RRGGBB; RGBA: 0xAARRGGBB; RGB16: expanded to 0x00RRGGBB as
      the client does (:func:`rgb16_to_rgb32`);
    - XXXA: ``uint8`` alpha; A8: ``uint8`` values;
    - palette types: ``uint8`` indices, or with ``palette`` the client's ``uint32`` 0x00RRGGBB
      conversion.

    Every length is bounded by the header and the data; the whole input must be consumed (lz.c
    asserts that too).

    Raises:
        ProtocolError: anything malformed, or more than ``max_pixels`` pixels.
    """
    t, width, height, stride, top_down = decode_lz_header(data)
    ppb = plt_pixels_per_byte(t)
    units = stride * height if ppb else width * height  # bytes for palette types, else pixels
    payload = len(data) - LZ_HEADER_SIZE
    if units > max_pixels or (stride * ppb * height if ppb else units) > max_pixels:
        raise ProtocolError("LZ image larger than allowed")
    if units > payload * 256:  # no code yields more than 256 pixels per byte
        raise ProtocolError("LZ data too short for its image size")
    buf = kernel_input(np.frombuffer(memoryview(data).cast("B"), np.uint8))
    pos = LZ_HEADER_SIZE
    out: np.ndarray
    if t in (LzImageType.RGB32, LzImageType.RGB24, LzImageType.RGBA, LzImageType.RGB16):
        out = np.zeros(units, np.uint32)
        kind = K.KIND_RGB16 if t == LzImageType.RGB16 else K.KIND_RGB
        pos = _check(int(K.lz_decompress32(kind, buf, pos, out, units)))
        if t == LzImageType.RGBA:
            pos = _check(int(K.lz_decompress32(K.KIND_ALPHA, buf, pos, out, units)))
        out = out.reshape(height, width)
    else:
        out = np.zeros(units, np.uint8)
        pos = _check(int(K.lz_decompress8(buf, pos, out, units)))
        if ppb:
            out = unpack_plt(out.reshape(height, stride), t, width)
            if palette is not None:
                out = _apply_palette(out, t, palette)
        else:
            out = out.reshape(height, width)
    if pos != len(buf):
        raise ProtocolError("trailing bytes after the LZ data")
    return t, width, height, top_down, out
