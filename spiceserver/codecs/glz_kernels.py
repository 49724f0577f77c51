"""The sequential loops of GLZ: the cross-image match finder/encoder and the client's decoder.

Counterpart of spice-server ``server/glz-encode.tmpl.c`` (``compress``, ``compress_seg``,
``do_match``), ``server/glz-encode-match.tmpl.c`` (``encode_match``, ``get_encode_ref_size``) and
spice-gtk ``src/decode-glz-tmpl.c`` (``decode``). Plain Python over numpy arrays, compiled by
:func:`~spiceserver._jit.njit` when numba is present.

Pixels are the ``uint32`` arrays of :mod:`.lz_kernels` with the same ``kind`` values (RGB, RGB16,
ALPHA). The dictionary is a set of arrays owned by :class:`~spiceserver.codecs.glz.GlzDictionary`:

- ``ring``: every pixel that went through the window, at ``ring[pos & ring_mask]`` where ``pos`` is
  its global position (libspice's ``pixels_so_far``);
- ``htab``: 2**20 hash slots of (segment index, pixel index in the segment) at ``[2h]``, ``[2h+1]``,
  shared by every image, as libspice's ``SharedDictionary.htab``;
- per segment (one segment = one image here): ``seg_alive``, ``seg_type`` (LzImageType),
  ``seg_id`` (image id), ``seg_pos`` (global position of its first pixel), ``seg_n`` (pixels).

A slot is a usable reference when it names the current image's segment, or a live segment of the
same image type that lies between the encoder's window head (``head_pos``) and the current image
(``REF_SEG_IS_VALID``). The first pixels of a match are compared before it is taken and the coded
length never exceeds what was compared, so a stale slot can only cost compression, never
correctness.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit, prefetch
from .lz_kernels import ERR_BAD_REF, ERR_OVERRUN, ERR_TRUNCATED, _copy_pixels, _emit, _key, _read_literals, _u

__all__ = [
    "GLZ_HASH_SIZE",
    "glz_compress",
    "glz_compress_rgb",
    "glz_decompress",
    "ERR_MISSING_IMAGE",
]

GLZ_HASH_LOG = 20
GLZ_HASH_SIZE = 1 << GLZ_HASH_LOG
GLZ_HASH_MASK = GLZ_HASH_SIZE - 1
MAX_COPY = 32
MAX_PIXEL_SHORT_DISTANCE = 4096
MAX_PIXEL_MEDIUM_DISTANCE = 131072
MAX_PIXEL_LONG_DISTANCE = 33554432
MAX_IMAGE_DIST = 16777215
DJB2_START = 5381
#: How many positions ahead of the coder the hash-table slots are prefetched while it emits
#: literals (photo-like content): each lookup in the 8 MiB table is a cache miss otherwise.
PREFETCH_AHEAD = 16
_HQ_MASK = 31  # the ring of hashes computed ahead (> PREFETCH_AHEAD entries)
_FILL_BLOCK = 4096  # pixels copied into the window ring at a time, behind the coder

ERR_MISSING_IMAGE = -4


@njit(inline=True)
def _ghash(px: np.ndarray, i: int, kind: int) -> int:
    """DJB2 over three pixels' bytes (same byte order as LZ), masked to 20 bits."""
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
    return h & GLZ_HASH_MASK


@njit(inline=True)
def _fill_ring(px: np.ndarray, a: int, b: int, ring: np.ndarray, ring_mask: int, pos0: int) -> None:
    """Copy ``px[a:b]`` into the window ring at global positions ``pos0 + a ...``."""
    while a < b:
        r = (pos0 + a) & ring_mask
        k = min(b - a, ring_mask + 1 - r)
        for j in range(k):
            ring[_u(r + j)] = px[_u(a + j)]
        a += k


@njit(inline=True)
def _ref_size(image_dist: int, pix_dist: int) -> int:
    """Bytes of a match code without its length continuation (``get_encode_ref_size``)."""
    if pix_dist < MAX_PIXEL_SHORT_DISTANCE:
        if image_dist < 64:
            return 3
        if image_dist < 16384:
            return 4
        if image_dist < 4194304:
            return 5
        return 6
    if image_dist == 0:
        size = 3
    elif image_dist < 256:
        size = 4
    elif image_dist < 65536:
        size = 5
    else:
        size = 6
    if pix_dist >= MAX_PIXEL_MEDIUM_DISTANCE:
        size += 1
    return size


@njit(inline=True)
def _encode_match(out: np.ndarray, op: int, image_dist: int, pix_dist: int, length: int) -> int:
    """Write one match code (``encode_match``); returns the new output position."""
    flag = 16 if pix_dist >= MAX_PIXEL_SHORT_DISTANCE else 0
    if length < 7:
        out[op] = (length << 5) + flag + (pix_dist & 0x0F)
        op += 1
    else:
        out[op] = (7 << 5) + flag + (pix_dist & 0x0F)
        op += 1
        length -= 7
        while length >= 255:
            out[op] = 255
            op += 1
            length -= 255
        out[op] = length
        op += 1
    out[op] = (pix_dist >> 4) & 0xFF
    op += 1
    if pix_dist < MAX_PIXEL_SHORT_DISTANCE:
        if image_dist < 64:
            out[op] = image_dist & 0x3F
            op += 1
        elif image_dist < 16384:
            out[op] = (1 << 6) + (image_dist & 0x3F)
            out[op + 1] = (image_dist >> 6) & 0xFF
            op += 2
        elif image_dist < 4194304:
            out[op] = (1 << 7) + (image_dist & 0x3F)
            out[op + 1] = (image_dist >> 6) & 0xFF
            out[op + 2] = (image_dist >> 14) & 0xFF
            op += 3
        else:
            out[op] = (3 << 6) + (image_dist & 0x3F)
            out[op + 1] = (image_dist >> 6) & 0xFF
            out[op + 2] = (image_dist >> 14) & 0xFF
            out[op + 3] = (image_dist >> 22) & 0xFF
            op += 4
    else:
        long_flag = 0 if pix_dist < MAX_PIXEL_MEDIUM_DISTANCE else 32
        hi = (pix_dist >> 12) & 31
        if image_dist == 0:
            out[op] = long_flag + hi
            op += 1
        elif image_dist < 256:
            out[op] = long_flag + (1 << 6) + hi
            out[op + 1] = image_dist & 0xFF
            op += 2
        elif image_dist < 65536:
            out[op] = long_flag + (1 << 7) + hi
            out[op + 1] = image_dist & 0xFF
            out[op + 2] = (image_dist >> 8) & 0xFF
            op += 3
        else:
            out[op] = long_flag + (3 << 6) + hi
            out[op + 1] = image_dist & 0xFF
            out[op + 2] = (image_dist >> 8) & 0xFF
            out[op + 3] = (image_dist >> 16) & 0xFF
            op += 4
        if long_flag:
            out[op] = (pix_dist >> 17) & 0xFF
            op += 1
    return op


@njit
def glz_compress(
    kind: int,
    px: np.ndarray,
    n: int,
    cur_seg: int,
    cur_type: int,
    head_pos: int,
    ring: np.ndarray,
    ring_mask: int,
    htab: np.ndarray,
    seg_alive: np.ndarray,
    seg_type: np.ndarray,
    seg_id: np.ndarray,
    seg_pos: np.ndarray,
    seg_n: np.ndarray,
    out: np.ndarray,
    op: int,
    fill: bool,
) -> int:
    """One GLZ pass over the current image ``px[:n]`` (entered in the window as ``cur_seg``).

    Writes from ``out[op]`` and returns the end position; ``out`` must hold ``n * (bytes per
    literal + 1) + 64`` bytes past ``op``. Updates ``htab``. With ``fill`` it also copies the
    image into its slot of ``ring`` (block by block behind the coder, while the pixels are still
    in cache); the pass reads only other images from the ring.
    """
    if n <= 0:
        return op
    cur_base = seg_pos[cur_seg]
    if fill and n < 4 * _FILL_BLOCK:  # small: copy it all now
        _fill_ring(px, 0, n, ring, ring_mask, cur_base)
        fill = False
    if n < 4:
        out[op] = n - 1
        op += 1
        for i in range(n):
            op = _emit(px, i, kind, out, op)
        return op

    if kind == 0:
        min_ref = 2
        max_ref = 2
        len_adjust = 0
        kmask = 0xFFFFFF
    elif kind == 1:
        min_ref = 2
        max_ref = 3
        len_adjust = 1
        kmask = 0x7FFF
    else:
        min_ref = 4
        max_ref = 7
        len_adjust = 2
        kmask = 0xFF000000
    # pixels p, q are "the same" for this pass when (p ^ q) & kmask == 0
    cur_id = seg_id[cur_seg]
    cur_pos = seg_pos[cur_seg]

    last_copy = op
    out[op] = MAX_COPY - 1
    op += 1
    hval = _ghash(px, 0, kind)
    htab[2 * hval] = cur_seg
    htab[2 * hval + 1] = 0
    op = _emit(px, 0, kind, out, op)
    op = _emit(px, 1, kind, out, op)
    ip = 2
    copy = 2
    ip_bound = n - 2
    ip_limit = n - 6
    # hashes of positions [hq_from, hq_to) computed ahead, at hq[pos & _HQ_MASK]
    hq = np.empty(_HQ_MASK + 1, np.int64)
    hq_from = 0
    hq_to = 0
    literals = True

    filled = 0
    while ip < ip_limit:
        if fill and ip - filled >= _FILL_BLOCK:
            _fill_ring(px, filled, ip, ring, ring_mask, cur_base)
            filled = ip
        anchor = ip
        length = 0
        pix_dist = 0
        image_dist = 0
        k0 = int(px[_u(ip)]) & kmask
        if (
            (int(px[_u(ip - 1)]) & kmask) == k0
            and (int(px[_u(ip + 1)]) & kmask) == k0
            and (int(px[_u(ip + 2)]) & kmask) == k0
        ):
            pix_dist = 1
            ip += 3
            length = 3
            while ip < ip_bound:
                if (int(px[_u(ip)]) & kmask) != k0:
                    ip += 1
                    break
                ip += 1
                length += 1
        else:
            if hq_from <= ip < hq_to:
                hval = int(hq[_u(ip & _HQ_MASK)])
            else:
                hval = _ghash(px, ip, kind)
                hq_to = ip + 1
            hq_from = ip
            if literals:  # likely more literals: hash ahead and start loading their slots
                while hq_to < ip + PREFETCH_AHEAD and hq_to < ip_limit:
                    h = _ghash(px, hq_to, kind)
                    hq[_u(hq_to & _HQ_MASK)] = h
                    prefetch(htab, 2 * h)
                    hq_to += 1
            s = int(htab[_u(2 * hval)])
            rp = int(htab[_u(2 * hval + 1)])
            same = s == cur_seg
            if same or (
                seg_alive[s] != 0 and seg_type[s] == cur_type and seg_pos[s] <= cur_pos and head_pos <= seg_pos[s]
            ):
                # do_match: compare (and extend) from pixel rp of segment s
                rn = seg_n[s]
                if rp <= rn - min_ref:
                    lim = min(ip_bound - ip, rn - rp)  # >= min_ref: ip < ip_limit
                    e = 0
                    if same:
                        while e < lim and ((int(px[_u(rp + e)]) ^ int(px[_u(ip + e)])) & kmask) == 0:
                            e += 1
                    else:
                        base = seg_pos[s] + rp
                        while e < lim and ((int(ring[_u((base + e) & ring_mask)]) ^ int(px[_u(ip + e)])) & kmask) == 0:
                            e += 1
                    if e >= min_ref:
                        image_dist = cur_id - seg_id[s]
                        pix_dist = ip - rp if image_dist == 0 else rp
                        if pix_dist > 0 and pix_dist < MAX_PIXEL_LONG_DISTANCE and image_dist <= MAX_IMAGE_DIST:
                            length = e
                            if length <= max_ref:
                                need = _ref_size(image_dist, pix_dist)
                                if kind == 0:
                                    need //= 3
                                elif kind == 1:
                                    need //= 2
                                if length < need + 1:
                                    length = 0
            htab[_u(2 * hval)] = cur_seg
            htab[_u(2 * hval + 1)] = anchor

        if length == 0:
            literals = True
            op = _emit(px, anchor, kind, out, op)
            ip = anchor + 1
            copy += 1
            if copy == MAX_COPY:
                copy = 0
                last_copy = op
                out[op] = MAX_COPY - 1
                op += 1
            continue

        literals = False
        if image_dist == 0:
            pix_dist -= 1
        if copy:
            out[last_copy] = copy - 1
        else:
            op -= 1
        copy = 0
        ip = anchor + length - 2
        op = _encode_match(out, op, image_dist, pix_dist, length - len_adjust)

        if kind == 2 or ip > anchor:
            hval = _ghash(px, ip, kind)
            htab[2 * hval] = cur_seg
            htab[2 * hval + 1] = ip
        ip += 1
        if kind != 0 or ip > anchor:
            hval = _ghash(px, ip, kind)
            htab[2 * hval] = cur_seg
            htab[2 * hval + 1] = ip
        ip += 1
        last_copy = op
        out[op] = MAX_COPY - 1
        op += 1

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
    if fill:
        _fill_ring(px, filled, n, ring, ring_mask, cur_base)
    return op


@njit
def glz_compress_rgb(
    px: np.ndarray,
    n: int,
    cur_seg: int,
    cur_type: int,
    head_pos: int,
    ring: np.ndarray,
    ring_mask: int,
    htab: np.ndarray,
    seg_alive: np.ndarray,
    seg_type: np.ndarray,
    seg_id: np.ndarray,
    seg_pos: np.ndarray,
    seg_n: np.ndarray,
    out: np.ndarray,
    op: int,
    fill: bool,
) -> int:
    """:func:`glz_compress` for ``KIND_RGB``: the constant kind lets the compiler specialise the loop."""
    return glz_compress(
        0, px, n, cur_seg, cur_type, head_pos, ring, ring_mask, htab,
        seg_alive, seg_type, seg_id, seg_pos, seg_n, out, op, fill,
    )  # fmt: skip


@njit
def glz_decompress(
    kind: int,
    data: np.ndarray,
    pos: int,
    out: np.ndarray,
    n: int,
    image_id: int,
    win: np.ndarray,
    win_ids: np.ndarray,
    win_off: np.ndarray,
    win_n: np.ndarray,
) -> int:
    """Decode one GLZ pass into ``out[:n]`` (``uint32`` 0xAARRGGBB), as spice-gtk's ``decode``.

    ``kind``: RGB (RGB32/RGB24 codes; alpha byte 0), RGB16 (expanded as the client does) or ALPHA
    (alpha byte only). References to other images read ``win[win_off[k] : win_off[k] + win_n[k]]``
    where ``win_ids[k] == image_id - distance``. Returns the position after the pass or a negative
    error code (``ERR_MISSING_IMAGE`` when the referenced image is not in the window: the real
    client would wait for it forever). ``n`` must be >= 1.
    """
    end = data.shape[0]
    op = 0
    if kind == 0:
        bias = 0
    elif kind == 1:
        bias = 1
    else:
        bias = 2
    nwin = win_ids.shape[0]
    while True:
        if pos >= end:
            return ERR_TRUNCATED
        ctrl = int(data[pos])
        pos += 1
        if ctrl >= MAX_COPY:
            length = ctrl >> 5
            pixel_flag = (ctrl >> 4) & 1
            pixel_ofs = ctrl & 0x0F
            if length == 7:
                while True:
                    if pos >= end:
                        return ERR_TRUNCATED
                    code = int(data[pos])
                    pos += 1
                    length += code
                    if code != 255:
                        break
            if pos + 2 > end:
                return ERR_TRUNCATED
            pixel_ofs += int(data[pos]) << 4
            code = int(data[pos + 1])
            pos += 2
            image_flag = (code >> 6) & 3
            if pos + image_flag > end:
                return ERR_TRUNCATED
            if pixel_flag == 0:
                image_dist = code & 0x3F
                for i in range(image_flag):
                    image_dist += int(data[pos]) << (6 + 8 * i)
                    pos += 1
            else:
                very_long = (code >> 5) & 1
                pixel_ofs += (code & 0x1F) << 12
                image_dist = 0
                for i in range(image_flag):
                    image_dist += int(data[pos]) << (8 * i)
                    pos += 1
                if very_long:
                    if pos >= end:
                        return ERR_TRUNCATED
                    pixel_ofs += int(data[pos]) << 17
                    pos += 1
            length += bias
            if op + length > n:
                return ERR_OVERRUN
            if image_dist == 0:
                ref = op - (pixel_ofs + 1)
                if ref < 0:
                    return ERR_BAD_REF
                op = _copy_pixels(out, op, out, ref, length, kind)
            else:
                want = image_id - image_dist
                k = -1
                for j in range(nwin):
                    if win_ids[j] == want:
                        k = j
                        break
                if k < 0:
                    return ERR_MISSING_IMAGE
                if pixel_ofs + length > win_n[k]:
                    return ERR_BAD_REF
                op = _copy_pixels(out, op, win, win_off[k] + pixel_ofs, length, kind)
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
