"""The sequential loops of SPICE LZ: the match finder/encoder and the decoders.

Counterpart of spice-common ``common/lz_compress_tmpl.c`` (``compress``, ``compress_seg``) and
``common/lz_decompress_tmpl.c`` (``decompress``). Every kernel is plain Python over numpy arrays,
compiled by :func:`~spiceserver._jit.njit` when numba is present; ``pure(kernel)`` runs the
same code uncompiled, and both produce identical bytes.

Pixels reach the encoder as one ``uint32`` array whatever the image type; ``kind`` says how to read
them:

=============  ==========================  ===========================  ==========================
kind           compared value (the key)    literal bytes                min. match (length bias)
=============  ==========================  ===========================  ==========================
``KIND_RGB``   ``px & 0xFFFFFF`` (R,G,B)   B, G, R                      1 pixel
``KIND_RGB16`` ``px & 0x7FFF`` (x555)      high byte, low byte of px    2 pixels
``KIND_ALPHA`` ``px >> 24``                the alpha byte               3 pixels
``KIND_BYTE``  ``px & 0xFF``               the byte                     3 pixels
=============  ==========================  ===========================  ==========================

The match finder is libspice's: a DJB2 hash of the next three pixels' bytes indexes a table of
2**13 last positions (no chains); a run of four equal pixels is coded as a distance-1 match; a
candidate is accepted after 1/2/3 equal pixels (RGB/RGB16/bytes), plus one (RGB, RGB16) or two
(bytes) when it is 8191 or more pixels back; a match is extended up to two pixels before the end; and the table is refreshed at the two
positions before the end of each match. Only the pixels' keys matter, so identical input gives
output byte-identical to lz.c's for an image handed over as one segment.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit, uindex

__all__ = [
    "KIND_RGB",
    "KIND_RGB16",
    "KIND_ALPHA",
    "KIND_BYTE",
    "lz_compress",
    "lz_compress_rgb",
    "lz_decompress32",
    "lz_decompress8",
    "ERR_TRUNCATED",
    "ERR_OVERRUN",
    "ERR_BAD_REF",
]

KIND_RGB = 0
KIND_RGB16 = 1
KIND_ALPHA = 2
KIND_BYTE = 3

HASH_LOG = 13
HASH_SIZE = 1 << HASH_LOG
HASH_MASK = HASH_SIZE - 1
MAX_COPY = 32
MAX_DISTANCE = 8191
MAX_FARDISTANCE = 65535 + MAX_DISTANCE - 1
DJB2_START = 5381

# Decoder error codes (negative return values).
ERR_TRUNCATED = -1
ERR_OVERRUN = -2
ERR_BAD_REF = -3


_u = uindex  # encoders only: their indices are their own, never read from input


@njit(inline=True)
def _key(px: np.ndarray, i: int, kind: int) -> int:
    v = int(px[_u(i)])
    if kind == 0:
        return v & 0xFFFFFF
    if kind == 1:
        return v & 0x7FFF
    if kind == 2:
        return (v >> 24) & 0xFF
    return v & 0xFF


@njit(inline=True)
def _hash(px: np.ndarray, i: int, kind: int) -> int:
    """DJB2 (xor variant) over the bytes of three pixels, masked to the table size.

    The C code hashes in a wrapping ``int``; only the low 13 bits are kept and those do not depend on
    the wrap, and the largest intermediate (nine steps) stays below 2**63.
    """
    h = DJB2_START
    if kind == 0:
        for j in range(3):
            k = _key(px, i + j, kind)
            h = ((h << 5) + h) ^ ((k >> 16) & 0xFF)
            h = ((h << 5) + h) ^ ((k >> 8) & 0xFF)
            h = ((h << 5) + h) ^ (k & 0xFF)
    elif kind == 1:
        for j in range(3):
            k = _key(px, i + j, kind)
            h = ((h << 5) + h) ^ (k & 0xFF)
            h = ((h << 5) + h) ^ ((k >> 8) & 0x7F)
    else:
        for j in range(3):
            h = ((h << 5) + h) ^ _key(px, i + j, kind)
    return h & HASH_MASK


@njit(inline=True)
def _emit(px: np.ndarray, i: int, kind: int, out: np.ndarray, op: int) -> int:
    """Write pixel ``i`` as a literal; returns the new output position."""
    v = int(px[_u(i)])
    if kind == 0:
        out[_u(op)] = v & 0xFF
        out[_u(op + 1)] = (v >> 8) & 0xFF
        out[_u(op + 2)] = (v >> 16) & 0xFF
        return op + 3
    if kind == 1:
        out[_u(op)] = (v >> 8) & 0xFF
        out[_u(op + 1)] = v & 0xFF
        return op + 2
    if kind == 2:
        out[_u(op)] = (v >> 24) & 0xFF
        return op + 1
    out[_u(op)] = v & 0xFF
    return op + 1


@njit
def lz_compress(kind: int, px: np.ndarray, n: int, out: np.ndarray, op: int) -> int:
    """Compress ``px[:n]`` as one image segment into ``out`` from ``op``; returns the end position.

    ``out`` must hold at least ``n * (bytes per literal + 1) + 64`` bytes past ``op`` (the coder
    never needs more: a literal run costs one control byte per 32 pixels and a match never costs
    more than the literals it replaces plus the next run's control byte).
    """
    if n <= 0:
        return op
    if n < 4:  # too small for the match finder: one literal run
        out[op] = n - 1
        op += 1
        for i in range(n):
            op = _emit(px, i, kind, out, op)
        return op

    # Match-length bias: 3 pixels of bytes, 2 of RGB16, 1 of RGB are implied by the code.
    if kind == 0:
        min_match = 1
        len_adjust = 2
    elif kind == 1:
        min_match = 2
        len_adjust = 1
    else:
        min_match = 3
        len_adjust = 0
    rgb = kind <= 1

    htab = np.zeros(HASH_SIZE, np.int64)  # every slot starts at pixel 0, as in lz.c
    last_copy = op
    out[op] = MAX_COPY - 1
    op += 1
    op = _emit(px, 0, kind, out, op)
    op = _emit(px, 1, kind, out, op)
    ip = 2
    copy = 2
    ip_bound = n - 2
    ip_limit = n - 6

    while ip < ip_limit:
        anchor = ip
        is_match = False
        distance = 0
        k0 = _key(px, ip, kind)
        if _key(px, ip - 1, kind) == k0 and _key(px, ip + 1, kind) == k0 and _key(px, ip + 2, kind) == k0:
            # a run: distance 1, extended while the pixel before ip repeats
            ip += 3
            ref = anchor + 2
            while ip < ip_bound and ref < n:
                if _key(px, ref, kind) != k0:
                    ref += 1
                    break
                ref += 1
                ip += 1
            distance = 0
            is_match = True
        else:
            hval = _hash(px, ip, kind)
            ref = htab[hval]
            distance = anchor - ref
            htab[hval] = anchor
            if distance != 0 and distance < MAX_FARDISTANCE:
                ok = True
                for _ in range(min_match):
                    if _key(px, ref, kind) != _key(px, ip, kind):
                        ok = False
                        break
                    ref += 1
                    ip += 1
                if ok and distance >= MAX_DISTANCE:
                    # far matches need more equal pixels to pay for the longer code
                    if kind >= 2:
                        ok = ref < n - 1
                        extra = 2
                    else:
                        ok = ref <= n - 1
                        extra = 1
                    if ok:
                        for _ in range(extra):
                            if _key(px, ref, kind) != _key(px, ip, kind):
                                ok = False
                                break
                            ref += 1
                            ip += 1
                if ok:
                    distance -= 1
                    while ip < ip_bound and ref < n:
                        if _key(px, ref, kind) != _key(px, ip, kind):
                            ref += 1
                            ip += 1
                            break
                        ref += 1
                        ip += 1
                    is_match = True

        if not is_match:
            op = _emit(px, anchor, kind, out, op)
            ip = anchor + 1
            copy += 1
            if copy == MAX_COPY:
                copy = 0
                last_copy = op
                out[op] = MAX_COPY - 1
                op += 1
            continue

        # close the pending literal run (or drop its unused control byte)
        if copy:
            out[last_copy] = copy - 1
        else:
            op -= 1
        copy = 0

        ip -= 3
        length = ip - anchor + len_adjust
        if distance < MAX_DISTANCE:
            if length < 7:
                out[op] = (length << 5) + (distance >> 8)
                op += 1
            else:
                out[op] = (7 << 5) + (distance >> 8)
                op += 1
                length -= 7
                while length >= 255:
                    out[op] = 255
                    op += 1
                    length -= 255
                out[op] = length
                op += 1
            out[op] = distance & 0xFF
            op += 1
        else:
            distance -= MAX_DISTANCE
            if length < 7:
                out[op] = (length << 5) + 31
                op += 1
            else:
                out[op] = (7 << 5) + 31
                op += 1
                length -= 7
                while length >= 255:
                    out[op] = 255
                    op += 1
                    length -= 255
                out[op] = length
                op += 1
            out[op] = 255
            out[op + 1] = (distance >> 8) & 0xFF
            out[op + 2] = distance & 0xFF
            op += 3

        # refresh the table at the match boundary
        if not rgb or ip > anchor:
            htab[_hash(px, ip, kind)] = ip
        ip += 1
        if kind != 0 or ip > anchor:
            htab[_hash(px, ip, kind)] = ip
        ip += 1
        last_copy = op
        out[op] = MAX_COPY - 1
        op += 1

    # the tail as literals
    while ip <= ip_bound + 1:
        op = _emit(px, ip, kind, out, op)
        ip += 1
        copy += 1
        if copy == MAX_COPY:
            copy = 0
            last_copy = op
            out[op] = MAX_COPY - 1
            op += 1
    if copy:
        out[last_copy] = copy - 1
    else:
        op -= 1
    return op


@njit
def lz_compress_rgb(px: np.ndarray, n: int, out: np.ndarray, op: int) -> int:
    """:func:`lz_compress` for ``KIND_RGB``: the constant kind lets the compiler specialise the loop."""
    return lz_compress(KIND_RGB, px, n, out, op)


@njit(inline=True)
def _read_match(data: np.ndarray, pos: int, end: int, ctrl: int) -> tuple[int, int, int]:
    """Decode the length field and offset after control byte ``ctrl``.

    Returns ``(pos, length, distance)``: ``length`` = ``(ctrl >> 5) - 1`` + continuation bytes, to
    which the caller adds the type's bias; ``distance`` = the 13-bit offset (or the far form) + 1.
    ``pos`` is negative when the data ends early.
    """
    length = (ctrl >> 5) - 1
    ofs = (ctrl & 31) << 8
    if length == 6:
        while True:
            if pos >= end:
                return ERR_TRUNCATED, 0, 0
            code = int(data[pos])
            pos += 1
            length += code
            if code != 255:
                break
    if pos >= end:
        return ERR_TRUNCATED, 0, 0
    code = int(data[pos])
    pos += 1
    ofs += code
    if code == 255 and ofs - code == (31 << 8):
        if pos + 2 > end:
            return ERR_TRUNCATED, 0, 0
        ofs = (int(data[pos]) << 8) + int(data[pos + 1]) + MAX_DISTANCE
        pos += 2
    return pos, length, ofs + 1


@njit(inline=True)
def _copy_pixels(out: np.ndarray, op: int, src: np.ndarray, ref: int, length: int, kind: int) -> int:
    """A match: ``length`` pixels from ``src[ref:]`` to ``out[op:]`` one by one (they may overlap,
    as runs do); the alpha pass copies only the alpha byte. Returns the new ``op``. Decoders only:
    the caller has checked both ranges."""
    if kind == 2:
        for _ in range(length):
            out[op] = (out[op] & 0x00FFFFFF) | (src[ref] & 0xFF000000)
            op += 1
            ref += 1
    else:
        for _ in range(length):
            out[op] = src[ref]
            op += 1
            ref += 1
    return op


@njit(inline=True)
def _read_literals(data: np.ndarray, pos: int, end: int, out: np.ndarray, op: int, count: int, kind: int) -> int:
    """A literal run of ``count`` pixels into ``out[op:]`` (room checked by the caller): B,G,R bytes
    (RGB), big-endian x555 expanded as the client does (RGB16) or alpha bytes (ALPHA). Returns the
    position after it, or ERR_TRUNCATED when ``data`` ends first."""
    if kind == 0:
        if pos + 3 * count > end:
            return ERR_TRUNCATED
        for _ in range(count):
            b = int(data[pos])
            g = int(data[pos + 1])
            r = int(data[pos + 2])
            out[op] = (r << 16) | (g << 8) | b
            pos += 3
            op += 1
    elif kind == 1:
        if pos + 2 * count > end:
            return ERR_TRUNCATED
        for _ in range(count):
            hi = int(data[pos])
            lo = int(data[pos + 1])
            g = (((hi << 6) | (lo >> 2)) & 0xF8) & 0xFF
            g |= g >> 5
            r = (((hi << 1) & 0xF8) | ((hi >> 4) & 0x07)) & 0xFF
            b = ((lo << 3) | ((lo >> 2) & 0x07)) & 0xFF
            out[op] = (r << 16) | (g << 8) | b
            pos += 2
            op += 1
    else:
        if pos + count > end:
            return ERR_TRUNCATED
        for _ in range(count):
            out[op] = (out[op] & 0x00FFFFFF) | (int(data[pos]) << 24)
            pos += 1
            op += 1
    return pos


@njit
def lz_decompress32(kind: int, data: np.ndarray, pos: int, out: np.ndarray, n: int) -> int:
    """Decode one LZ pass into ``out[:n]`` (``uint32`` 0xAARRGGBB) from ``data[pos:]``.

    ``kind``: ``KIND_RGB`` (RGB32/RGB24 stream, alpha byte set to 0), ``KIND_RGB16`` (expanded to
    8 bits per channel as the client does) or ``KIND_ALPHA`` (only the alpha byte is written).
    Returns the position after the pass, or a negative ``ERR_*`` code. ``n`` must be >= 1.
    """
    end = data.shape[0]
    op = 0
    if kind == 0:
        bias = 1
    elif kind == 1:
        bias = 2
    else:
        bias = 3
    while True:
        if pos >= end:
            return ERR_TRUNCATED
        ctrl = int(data[pos])
        pos += 1
        if ctrl >= MAX_COPY:
            pos, length, ofs = _read_match(data, pos, end, ctrl)
            if pos < 0:
                return pos
            length += bias
            if op + length > n:
                return ERR_OVERRUN
            ref = op - ofs
            if ref < 0:
                return ERR_BAD_REF
            op = _copy_pixels(out, op, out, ref, length, kind)
        else:
            count = ctrl + 1
            if op + count > n:
                return ERR_OVERRUN
            pos = _read_literals(data, pos, end, out, op, count, kind)
            if pos < 0:
                return pos
            op += count
        if op >= n:
            return pos


@njit
def lz_decompress8(data: np.ndarray, pos: int, out: np.ndarray, n: int) -> int:
    """Decode one byte-pixel LZ pass (PLT bytes, A8, XXXA alpha) into ``out[:n]`` (``uint8``).

    Returns the position after the pass or a negative ``ERR_*`` code. ``n`` must be >= 1.
    """
    end = data.shape[0]
    op = 0
    while True:
        if pos >= end:
            return ERR_TRUNCATED
        ctrl = int(data[pos])
        pos += 1
        if ctrl >= MAX_COPY:
            pos, length, ofs = _read_match(data, pos, end, ctrl)
            if pos < 0:
                return pos
            length += 3
            if op + length > n:
                return ERR_OVERRUN
            ref = op - ofs
            if ref < 0:
                return ERR_BAD_REF
            for _ in range(length):
                out[op] = out[ref]
                op += 1
                ref += 1
        else:
            count = ctrl + 1
            if op + count > n:
                return ERR_OVERRUN
            if pos + count > end:
                return ERR_TRUNCATED
            for _ in range(count):
                out[op] = data[pos]
                pos += 1
                op += 1
        if op >= n:
            return pos
