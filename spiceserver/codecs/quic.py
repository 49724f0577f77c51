"""Quic, SPICE's lossless photo codec (``SPICE_IMAGE_TYPE_QUIC``).

Encoder counterpart of spice-common ``common/quic.c`` ``quic_encode`` as spice-server's
``image_encoders_compress_quic`` drives it; decoder counterpart of ``quic_decode_begin`` /
``quic_decode`` as the client's ``canvas_get_quic`` (spice-gtk) and spice-html5's ``quic.js`` run
them. The sequential coders live in :mod:`spiceserver.codecs.quic_kernels`.

Stream layout: 32-bit words stored little-endian, bits packed most significant first::

    u32 magic     0x43495551 ("QUIC" in memory)
    u32 version   0
    u32 type      1 GRAY, 2 RGB16, 3 RGB24, 4 RGB32, 5 RGBA
    u32 width
    u32 height
    ...           the rows, top-down; per pixel the R, G and B samples (GRAY: one sample),
                  RGBA: each row's alpha plane right after the row's RGB
    u32 0         read-ahead word written by ``flush``

RGB24 and RGB32 code exactly the same samples (the fourth byte of an RGB32 pixel is ignored), so
the two streams differ only in the type word. RGBA codes the alpha bytes as a separate plane with
its own adaptive state. RGB16 (x555) uses the 5-bit family. spice-gtk draws RGB32, RGB24, RGBA and
RGB16 streams and refuses GRAY; spice-html5 draws RGB32, RGB24 and RGBA only. GRAY is here for
completeness (the library codes it; only decoders like this one read it back).

The output is byte for byte what spice-common's encoder writes for the same pixels, checked
against ``quic.c`` in ``tests/codecs/test_quic.py`` (golden vectors) and by decoding with the C
and JavaScript decoders.
"""

from __future__ import annotations

import struct
import sys

import numpy as np

from .._jit import kernel_input
from ..errors import ProtocolError
from . import quic_kernels as _k
from .quic_tables import DEFMAXCLEN

__all__ = [
    "QuicType",
    "QUIC_MAGIC",
    "QUIC_VERSION",
    "MAX_PIXELS",
    "encode_quic",
    "decode_quic",
    "max_words",
]

QUIC_MAGIC = 0x43495551
QUIC_VERSION = 0
#: Default bound on ``width * height`` accepted by :func:`decode_quic`.
MAX_PIXELS = 1 << 28
#: spice-common's own bound (``SPICE_MAX_IMAGE_SIZE``), which the encoder respects.
_SPICE_MAX_IMAGE_SIZE = 512 * 1024 * 1024 - 1


class QuicType:
    """``QuicImageType`` values (the third header word)."""

    INVALID = 0
    GRAY = 1
    RGB16 = 2
    RGB24 = 3
    RGB32 = 4
    RGBA = 5


_FORMATS: dict[str, int] = {
    "gray": QuicType.GRAY,
    "rgb16": QuicType.RGB16,
    "rgb24": QuicType.RGB24,
    "rgb32": QuicType.RGB32,
    "rgba": QuicType.RGBA,
}

_HEADER = struct.Struct("<5I")
_HEADER_WORDS = 5

#: Byte index of each coded channel within a pixel of the ``(h, w, bpp)`` working array, in
#: stream order (R, G, B then A), and where the second (alpha) group starts.
_RGB_CHANS = np.array([2, 1, 0], np.int64)
_RGBA_CHANS = np.array([2, 1, 0, 3], np.int64)
_GRAY_CHANS = np.array([0], np.int64)
_NO_WORDS = kernel_input(np.zeros(1, np.uint32))


def _channels(qtype: int) -> tuple[np.ndarray, int, _k.Family]:
    if qtype == QuicType.GRAY:
        return _GRAY_CHANS, 1, _k.FAMILY_8BPC
    if qtype == QuicType.RGBA:
        return _RGBA_CHANS, 3, _k.FAMILY_8BPC
    if qtype == QuicType.RGB16:
        return _RGB_CHANS, 3, _k.FAMILY_5BPC
    return _RGB_CHANS, 3, _k.FAMILY_8BPC


def max_words(width: int, height: int, nch: int, groups: int) -> int:
    """An upper bound on the words :func:`encode_quic` writes.

    Every coded sample takes at most ``DEFmaxclen`` (26) bits; before a pixel a group may send one
    run, which costs at most one bit per pixel it covers plus 16, and pixels inside a run send no
    samples at all.
    """
    bits = width * height * (nch * DEFMAXCLEN + groups * 17)
    return _HEADER_WORDS + bits // 32 + 4


def _working_array(pixels: np.ndarray, fmt: str) -> np.ndarray:
    """The ``(h, w, bpp)`` uint8 view (or copy) of ``pixels`` the kernels read."""
    if fmt == "gray":
        if pixels.dtype != np.uint8 or pixels.ndim != 2:
            raise ValueError("gray pixels must be a (height, width) uint8 array")
        return np.ascontiguousarray(pixels)[:, :, None]
    if fmt == "rgb16":
        if pixels.dtype != np.uint16 or pixels.ndim != 2:
            raise ValueError("rgb16 pixels must be a (height, width) uint16 x555 array")
        p = pixels.astype(np.int64)
        planes = np.empty((*pixels.shape, 3), np.uint8)
        planes[:, :, 0] = p & 0x1F
        planes[:, :, 1] = (p >> 5) & 0x1F
        planes[:, :, 2] = (p >> 10) & 0x1F
        return planes
    if fmt == "rgb24" and pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3:
        return np.ascontiguousarray(pixels)  # packed B, G, R bytes, as a 24BIT bitmap holds them
    if pixels.dtype.kind != "u" or pixels.dtype.itemsize != 4 or pixels.ndim != 2:
        raise ValueError(f"{fmt} pixels must be a (height, width) uint32 B,G,R,X/A array")
    h, w = pixels.shape
    return np.require(pixels, dtype="<u4", requirements=("C", "A")).view(np.uint8).reshape(h, w, 4)


def encode_quic(pixels: np.ndarray, fmt: str) -> bytes:
    """Compress an image into a Quic stream, bit for bit what spice-common's ``quic_encode`` writes.

    Args:
        pixels: ``(height, width)`` uint32 pixels whose little-endian bytes are B, G, R, X
            (``"rgb32"``, ``"rgb24"``) or B, G, R, A (``"rgba"``); for ``"rgb24"`` also a
            ``(height, width, 3)`` uint8 array of packed B, G, R; ``(height, width)`` uint8 for
            ``"gray"``; ``(height, width)`` uint16 x1r5g5b5 for ``"rgb16"``. Rows top-down.
        fmt: ``"rgb32"``, ``"rgb24"``, ``"rgba"``, ``"gray"`` or ``"rgb16"``.

    Returns:
        The stream (a whole number of 32-bit words).

    Raises:
        ValueError: unknown format, wrong array type, or an empty or oversized image.
    """
    qtype = _FORMATS.get(fmt)
    if qtype is None:
        raise ValueError(f"unknown Quic format {fmt!r}")
    img = _working_array(pixels, fmt)
    height, width = img.shape[:2]
    if width < 1 or height < 1 or width * height > _SPICE_MAX_IMAGE_SIZE:
        raise ValueError(f"bad Quic image size {width}x{height}")
    chans, split, fam = _channels(qtype)
    groups = 2 if split < len(chans) else 1
    out = np.empty(max_words(width, height, len(chans), groups), np.uint32)
    out[:_HEADER_WORDS] = (QUIC_MAGIC, QUIC_VERSION, qtype, width, height)
    flat = kernel_input(img.reshape(-1))
    words = kernel_input(flat.view(np.uint32)) if img.shape[2] == 4 and sys.byteorder == "little" else _NO_WORDS
    n = _k.encode_image(
        flat, words, height, width, img.shape[2], chans, split, out, _HEADER_WORDS,
        fam.xlat_u2l, fam.gtab, fam.glen_flat, fam.bucket_of, fam.nbuckets, fam.bpc,
    )
    return out[:n].astype("<u4", copy=False).tobytes()


def decode_quic(data: bytes | bytearray | memoryview, max_pixels: int = MAX_PIXELS) -> tuple[int, int, int, np.ndarray]:
    """Decompress a Quic stream (``quic_decode_begin`` + ``quic_decode``).

    Args:
        data: the stream; trailing bytes that are not a whole word are ignored, as the client's
            ``len >> 2`` does.
        max_pixels: largest ``width * height`` accepted.

    Returns:
        ``(type, width, height, pixels)`` where ``pixels`` is ``(height, width)`` uint32 B,G,R,0
        for RGB32 and RGB24, uint32 B,G,R,A for RGBA, uint8 for GRAY and uint16 x555 for RGB16.

    Raises:
        ProtocolError: bad magic, version, type or size, a stream too short for its image, a run
            past the end of a row, or any read past the end of the data.
    """
    buf = memoryview(data).cast("B")
    nwords = len(buf) // 4
    if nwords < _HEADER_WORDS + 1:
        raise ProtocolError("Quic stream shorter than its header")
    magic, version, qtype, width, height = _HEADER.unpack_from(buf)
    if magic != QUIC_MAGIC:
        raise ProtocolError("bad Quic magic")
    if version != QUIC_VERSION:
        raise ProtocolError(f"unsupported Quic version {version:#x}")
    if qtype not in _FORMATS.values():
        raise ProtocolError(f"bad Quic image type {qtype}")
    if not (0 < width < 1 << 31 and 0 < height < 1 << 31):
        raise ProtocolError(f"bad Quic image size {width}x{height}")
    if width * height > min(max_pixels, _SPICE_MAX_IMAGE_SIZE):
        raise ProtocolError(f"Quic image too large: {width}x{height}")
    chans, split, fam = _channels(qtype)
    # Row 0 codes every sample and rows below code at least their first three pixels, each sample
    # taking at least one bit: a stream shorter than that cannot hold the image.
    min_bits = len(chans) * (width + (height - 1) * min(width, 3))
    if (nwords - _HEADER_WORDS) * 32 < min_bits:
        raise ProtocolError("Quic stream too short for its image size")
    words = kernel_input(np.frombuffer(buf[: nwords * 4], dtype="<u4").astype(np.uint32, copy=False))
    bpp = 1 if qtype == QuicType.GRAY else (3 if qtype == QuicType.RGB16 else 4)
    img = np.zeros((height, width, bpp), np.uint8)
    err = _k.decode_image(
        img.reshape(-1), height, width, bpp, chans, split, words, _HEADER_WORDS, fam.xlat_l2u, fam.glen_flat,
        fam.ngr, fam.cwlen, fam.prefixmask, fam.suffixlen, fam.bucket_of, fam.nbuckets, fam.bpc,
    )
    if err == _k.ERR_TRUNCATED:
        raise ProtocolError("truncated Quic stream")
    if err:
        raise ProtocolError("bad run length in Quic stream")
    if qtype == QuicType.GRAY:
        return qtype, width, height, img[:, :, 0]
    if qtype == QuicType.RGB16:
        p = img.astype(np.uint16)
        return qtype, width, height, (p[:, :, 2] << 10) | (p[:, :, 1] << 5) | p[:, :, 0]
    return qtype, width, height, img.view("<u4")[:, :, 0]
