"""Quic's tables and sequential coders (numba kernels behind :mod:`spiceserver.codecs.quic`).

Counterpart of spice-common ``common/quic.c`` (bit I/O, model set-up, MELCODE runs),
``common/quic_tmpl.c`` (row coders, run prediction, sparse model updates) and
``common/quic_family_tmpl.c`` (Golomb-Rice per family). Quic is SFALIC (Roman Starosolski):

* every channel sample is predicted -- row 0 from the left neighbour, other rows from
  ``(left + above) >> 1`` and column 0 from the sample above -- and the residual is folded to a
  non-negative value by ``xlatU2L`` (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...);
* the folded residual is written with a limited-length Golomb-Rice code whose parameter is the
  *best code* of a bucket chosen by the previous folded residual of the same channel (buckets of
  1, 2, 4, 8, ... contexts); each bucket keeps one cost counter per code;
* the model is updated sparsely: after a pseudo-random number of samples (``tabrand`` masked by a
  wait mask that widens every 2048 pixels up to ``DEFwmimax``), halving the counters once the best
  one passes the ``besttrigtab`` threshold;
* on rows >= 1, where the row above repeats a pixel and the row so far repeats one too, the encoder
  sends a run length with an adaptive MELCODE instead of pixels.

The decoder mirrors every adaptation, so the encoder must be bit-exact. All kernels are plain
Python over numpy arrays and ints, compiled by :func:`~spiceserver._jit.njit` when numba is
present; :func:`~spiceserver._jit.pure` gives the interpreted version.

Image layout seen by the kernels: ``px`` is the flat uint8 image, ``height`` rows of
``width * bpp`` bytes, and ``chans`` lists the byte index within a pixel of each coded channel in
stream order. Channels ``chans[:split]`` form the first group (R, G, B -- one shared adaptive
state, the C ``rgb_state``; or the one GRAY channel) and ``chans[split:]`` the second (the RGBA
alpha plane, with its own state). Each row of the first group is coded before the same row of the
second. Groups have 3 channels or 1.

Speed notes (numba): helper calls are not inlined and each array argument costs reference
counting, so the per-sample paths (bit output, run coding, model update, Golomb decoding) are
written out in place, with the 3- and 1-channel groups unrolled; indices go through :data:`_U`
(unsigned) and samples through :data:`_I` (int64). The C reference is ~1000 lines of macros;
keeping one function per direction keeps its control flow (segments, runs, wait counter) visible.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit, uindex, widen
from .quic_tables import (
    _MASK32,
    DEFWMIMAX,
    DEFWMINEXT,
    DEFWMISTART,
    FAMILY_5BPC,
    FAMILY_8BPC,
    LZEROES,
    MAXNUMCODES,
    MELC_J,
    MELCSTATES,
    TABRAND_CHAOS,
    TABRAND_SEED0,
    WM_TRIGGER,
    Family,
)

__all__ = [
    "Family",
    "FAMILY_8BPC",
    "FAMILY_5BPC",
    "encode_image",
    "decode_image",
    "ERR_TRUNCATED",
    "ERR_BAD_RUN",
]

# A CommonState is one row of an int64 array (one per channel group).
S_WAITCNT, S_SEED, S_TRIGGER, S_WMIDX, S_WMILEFT, S_MELCSTATE, S_MELCLEN, S_MELCORDER = range(8)
N_STATE = 8

ERR_TRUNCATED = -1
ERR_BAD_RUN = -2

_U = uindex  # see ._jit: unsigned indices skip numba's negative-index fix-up
_I = widen

# ----------------------------------------------------------------------------------------------
# Shared helpers.


@njit
def _init_state(st: np.ndarray) -> None:
    """``encoder_reset`` / ``encoder_reset_channels`` + ``encoder_init_rle`` for each group."""
    for g in range(st.shape[0]):
        st[g, S_WAITCNT] = 0
        st[g, S_SEED] = TABRAND_SEED0
        st[g, S_TRIGGER] = WM_TRIGGER[DEFWMISTART]
        st[g, S_WMIDX] = DEFWMISTART
        st[g, S_WMILEFT] = DEFWMINEXT
        st[g, S_MELCSTATE] = 0
        st[g, S_MELCLEN] = MELC_J[0]
        st[g, S_MELCORDER] = 1 << MELC_J[0]


@njit(inline=True)
def _update_model(counters: np.ndarray, base: int, glen: np.ndarray, curval: int, bpc: int, trigger: int) -> int:
    """``update_model`` on the bucket whose counters start at ``base``; returns its new best code.

    Each code's counter grows by the length ``curval`` would have had under it; the cheapest code
    wins (ties keep the larger code); past the trigger every counter is halved.
    """
    g = curval * MAXNUMCODES
    best = bpc - 1
    bestlen = counters[_U(base + best)] + glen[_U(g + best)]
    counters[_U(base + best)] = bestlen
    for code in range(bpc - 2, -1, -1):
        clen = counters[_U(base + code)] + glen[_U(g + code)]
        counters[_U(base + code)] = clen
        if clen < bestlen:
            best = code
            bestlen = clen
    if bestlen > trigger:
        for code in range(bpc):
            counters[_U(base + code)] >>= 1
    return best


@njit(inline=True)
def _update_group(
    corr: np.ndarray, cw: int, i: int, c0: int, c1: int, bucket_of: np.ndarray, nbuckets: int,
    bestcode: np.ndarray, counters: np.ndarray, glen: np.ndarray, bpc: int, trigger: int,
) -> None:
    """``UPDATE_MODEL(i)``: update each channel's bucket of context ``i - 1`` with sample ``i``."""
    for c in range(c0, c1):
        k = c * cw + i
        b = c * nbuckets + bucket_of[_U(corr[_U(k)])]
        bestcode[_U(b)] = _update_model(counters, b * MAXNUMCODES, glen, corr[_U(k + 1)], bpc, trigger)


# ----------------------------------------------------------------------------------------------
# Encoder. Bits collect in ``acc`` (the last ``nacc`` < 32 bits are pending) and leave as 32-bit
# words, most significant bit first -- the same stream as quic.c's ``encode``.


@njit(inline=True)
def _put(out: np.ndarray, acc: int, nacc: int, pos: int, code: int, length: int) -> tuple[int, int, int]:
    """``encode``: append the ``length`` (1..31) low bits of ``code``."""
    acc = (acc << length) | code
    nacc += length
    if nacc >= 32:
        nacc -= 32
        out[_U(pos)] = (acc >> nacc) & _MASK32
        acc &= (1 << nacc) - 1
        pos += 1
    return acc, nacc, pos


@njit
def encode_image(
    px: np.ndarray, pw: np.ndarray, height: int, width: int, bpp: int, chans: np.ndarray, split: int,
    out: np.ndarray, pos0: int, xlat: np.ndarray, gtab: np.ndarray, glen: np.ndarray, bucket_of: np.ndarray,
    nbuckets: int, bpc: int,
) -> int:
    """Code an image after ``pos0`` header words of ``out``; return the stream length in words.

    ``px`` is the flat uint8 image (``height`` rows of ``width * bpp`` bytes); when ``bpp`` is 4,
    ``pw`` is the same memory as little-endian uint32 words (pixel equality tests then compare
    masked words), else it is ignored. ``out`` must hold the worst case
    (:func:`spiceserver.codecs.quic.max_words`). The stream ends as ``flush`` ends it: the
    partial word, then one zero word for the decoder's read-ahead.
    """
    nch = chans.shape[0]
    groups = 1 if split >= nch else 2
    mask = (1 << bpc) - 1
    stride = width * bpp
    cw = width + 1  # corr slot 0 is the C code's correlate_row[-1]
    corr = np.zeros(nch * cw, np.int64)
    counters = np.zeros(nch * nbuckets * MAXNUMCODES, np.int64)
    bestcode = np.full(nch * nbuckets, bpc - 1, np.int64)
    st = np.zeros((groups, N_STATE), np.int64)
    _init_state(st)
    acc = 0
    nacc = 0
    pos = pos0
    for y in range(height):
        rc = y * stride
        rp = rc - stride if y else rc
        row0 = y == 0
        for g in range(groups):
            c0 = 0 if g == 0 else split
            c1 = split if g == 0 else nch
            three = c1 - c0 == 3
            ch0 = chans[c0]
            ch1 = chans[c0 + 1] if three else ch0
            ch2 = chans[c0 + 2] if three else ch0
            k0 = c0 * cw
            k1 = k0 + cw if three else k0
            k2 = k0 + 2 * cw if three else k0
            b0 = c0 * nbuckets
            b1 = b0 + nbuckets if three else b0
            b2 = b0 + 2 * nbuckets if three else b0
            # Pixel equality over the group's bytes, as one masked 32-bit compare when bpp is 4
            # (``pw`` holds little-endian words: byte k of a pixel is bits 8k..8k+7).
            words = bpp == 4 and pw.shape[0] == height * width
            wmask = 0
            for c in range(c0, c1):
                wmask |= 0xFF << (8 * chans[c])
            wc = y * width
            wp = wc - width if y else wc
            waitcnt = st[g, S_WAITCNT]
            seed = st[g, S_SEED]
            trigger = st[g, S_TRIGGER]
            wmidx = st[g, S_WMIDX]
            wmileft = st[g, S_WMILEFT]
            melcstate = st[g, S_MELCSTATE]
            melclen = st[g, S_MELCLEN]
            melcorder = st[g, S_MELCORDER]
            for c in range(c0, c1):
                corr[_U(c * cw)] = 0 if row0 else corr[_U(c * cw + 1)]

            # compress_row: segments end where the wait mask index grows (every DEFwminext pixels).
            x = 0
            while x < width:
                grow = wmidx < DEFWMIMAX and wmileft <= width - x
                end = x + wmileft if grow else width
                waitmask = (1 << wmidx) - 1
                i = x
                if i == 0 and end > 0:
                    # First pixel: predicted from above (row 0: from 0).
                    for c in range(c0, c1):
                        ch = chans[c]
                        above = 0 if row0 else _I(px[_U(rp + ch)])
                        u = xlat[_U((_I(px[_U(rc + ch)]) - above) & mask)]
                        k = c * cw
                        corr[_U(k + 1)] = u
                        t = gtab[_U(u * MAXNUMCODES + bestcode[_U(c * nbuckets + bucket_of[_U(corr[_U(k)])])])]
                        acc, nacc, pos = _put(out, acc, nacc, pos, t >> 8, t & 0xFF)
                    if waitcnt:
                        waitcnt -= 1
                    else:
                        seed += 1
                        waitcnt = TABRAND_CHAOS[seed & 0xFF] & waitmask
                        _update_group(corr, cw, 0, c0, c1, bucket_of, nbuckets, bestcode, counters, glen, bpc, trigger)
                    i = 1
                run_index = 0
                while i < end:
                    oc = rc + i * bpp
                    if not row0 and i > 2 and run_index != i:
                        # RLE_PRED_IMP: above repeats its left pixel and so does the row so far.
                        op = rp + i * bpp
                        if words:
                            same = ((_I(pw[_U(wp + i - 1)]) ^ _I(pw[_U(wp + i)])) & wmask) == 0 and (
                                (_I(pw[_U(wc + i - 1)]) ^ _I(pw[_U(wc + i - 2)])) & wmask
                            ) == 0
                        elif three:
                            same = (
                                px[_U(op - bpp + ch0)] == px[_U(op + ch0)]
                                and px[_U(op - bpp + ch1)] == px[_U(op + ch1)]
                                and px[_U(op - bpp + ch2)] == px[_U(op + ch2)]
                                and px[_U(oc - bpp + ch0)] == px[_U(oc - 2 * bpp + ch0)]
                                and px[_U(oc - bpp + ch1)] == px[_U(oc - 2 * bpp + ch1)]
                                and px[_U(oc - bpp + ch2)] == px[_U(oc - 2 * bpp + ch2)]
                            )
                        else:
                            same = (
                                px[_U(op - bpp + ch0)] == px[_U(op + ch0)]
                                and px[_U(oc - bpp + ch0)] == px[_U(oc - 2 * bpp + ch0)]
                            )
                        if same:
                            run_index = i
                            runlen = 0
                            if words:
                                while ((_I(pw[_U(wc + i)]) ^ _I(pw[_U(wc + i - 1)])) & wmask) == 0:
                                    runlen += 1
                                    i += 1
                                    if i == end:
                                        break
                            elif three:
                                while (
                                    px[_U(oc + ch0)] == px[_U(oc - bpp + ch0)]
                                    and px[_U(oc + ch1)] == px[_U(oc - bpp + ch1)]
                                    and px[_U(oc + ch2)] == px[_U(oc - bpp + ch2)]
                                ):
                                    runlen += 1
                                    i += 1
                                    oc += bpp
                                    if i == end:
                                        break
                            else:
                                while px[_U(oc + ch0)] == px[_U(oc - bpp + ch0)]:
                                    runlen += 1
                                    i += 1
                                    oc += bpp
                                    if i == end:
                                        break
                            # encode_state_run (inline: a call per run costs as much as the run)
                            hits = 0
                            while runlen >= melcorder:
                                hits += 1
                                runlen -= melcorder
                                if melcstate < MELCSTATES - 1:
                                    melcstate += 1
                                    melclen = MELC_J[melcstate]
                                    melcorder = 1 << melclen
                            length = melclen + 1
                            while True:
                                if hits >= 16:  # a whole chunk of ones
                                    code = 0xFFFF
                                    clen = 16
                                    hits -= 16
                                elif hits:  # the last ones, then the 0 and the remainder
                                    code = (((1 << hits) - 1) << length) | runlen
                                    clen = hits + length
                                    hits = -1
                                else:
                                    code = runlen
                                    clen = length
                                    hits = -1
                                acc = (acc << clen) | code
                                nacc += clen
                                if nacc >= 32:
                                    nacc -= 32
                                    out[_U(pos)] = (acc >> nacc) & _MASK32
                                    acc &= (1 << nacc) - 1
                                    pos += 1
                                if hits < 0:
                                    break
                            if melcstate:
                                melcstate -= 1
                                melclen = MELC_J[melcstate]
                                melcorder = 1 << melclen
                            continue

                    if three:
                        a0 = _I(px[_U(oc - bpp + ch0)])
                        a1 = _I(px[_U(oc - bpp + ch1)])
                        a2 = _I(px[_U(oc - bpp + ch2)])
                        if not row0:
                            op = rp + i * bpp
                            a0 = (a0 + _I(px[_U(op + ch0)])) >> 1
                            a1 = (a1 + _I(px[_U(op + ch1)])) >> 1
                            a2 = (a2 + _I(px[_U(op + ch2)])) >> 1
                        u0 = xlat[_U((_I(px[_U(oc + ch0)]) - a0) & mask)]
                        u1 = xlat[_U((_I(px[_U(oc + ch1)]) - a1) & mask)]
                        u2 = xlat[_U((_I(px[_U(oc + ch2)]) - a2) & mask)]
                        t = gtab[_U(u0 * MAXNUMCODES + bestcode[_U(b0 + bucket_of[_U(corr[_U(k0 + i)])])])]
                        length = t & 0xFF
                        acc = (acc << length) | (t >> 8)
                        nacc += length
                        if nacc >= 32:
                            nacc -= 32
                            out[_U(pos)] = (acc >> nacc) & _MASK32
                            acc &= (1 << nacc) - 1
                            pos += 1
                        t = gtab[_U(u1 * MAXNUMCODES + bestcode[_U(b1 + bucket_of[_U(corr[_U(k1 + i)])])])]
                        length = t & 0xFF
                        acc = (acc << length) | (t >> 8)
                        nacc += length
                        if nacc >= 32:
                            nacc -= 32
                            out[_U(pos)] = (acc >> nacc) & _MASK32
                            acc &= (1 << nacc) - 1
                            pos += 1
                        t = gtab[_U(u2 * MAXNUMCODES + bestcode[_U(b2 + bucket_of[_U(corr[_U(k2 + i)])])])]
                        length = t & 0xFF
                        acc = (acc << length) | (t >> 8)
                        nacc += length
                        if nacc >= 32:
                            nacc -= 32
                            out[_U(pos)] = (acc >> nacc) & _MASK32
                            acc &= (1 << nacc) - 1
                            pos += 1
                        corr[_U(k0 + i + 1)] = u0
                        corr[_U(k1 + i + 1)] = u1
                        corr[_U(k2 + i + 1)] = u2
                    else:
                        a0 = _I(px[_U(oc - bpp + ch0)])
                        if not row0:
                            a0 = (a0 + _I(px[_U(rp + i * bpp + ch0)])) >> 1
                        u0 = xlat[_U((_I(px[_U(oc + ch0)]) - a0) & mask)]
                        t = gtab[_U(u0 * MAXNUMCODES + bestcode[_U(b0 + bucket_of[_U(corr[_U(k0 + i)])])])]
                        length = t & 0xFF
                        acc = (acc << length) | (t >> 8)
                        nacc += length
                        if nacc >= 32:
                            nacc -= 32
                            out[_U(pos)] = (acc >> nacc) & _MASK32
                            acc &= (1 << nacc) - 1
                            pos += 1
                        corr[_U(k0 + i + 1)] = u0
                    # Sparse model update: after `waitcnt` more coded pixels (runs don't count).
                    if waitcnt:
                        waitcnt -= 1
                    else:
                        # update_model for each channel (inline, see _update_model)
                        for c in range(c0, c1):
                            k = c * cw + i
                            b = c * nbuckets + bucket_of[_U(corr[_U(k)])]
                            base = b * MAXNUMCODES
                            gl = corr[_U(k + 1)] * MAXNUMCODES
                            best = bpc - 1
                            bestlen = counters[_U(base + best)] + glen[_U(gl + best)]
                            counters[_U(base + best)] = bestlen
                            for code in range(bpc - 2, -1, -1):
                                clen = counters[_U(base + code)] + glen[_U(gl + code)]
                                counters[_U(base + code)] = clen
                                if clen < bestlen:
                                    best = code
                                    bestlen = clen
                            bestcode[_U(b)] = best
                            if bestlen > trigger:
                                for code in range(bpc):
                                    counters[_U(base + code)] >>= 1
                        seed += 1
                        waitcnt = TABRAND_CHAOS[seed & 0xFF] & waitmask
                    i += 1
                if grow:
                    wmidx += 1
                    trigger = WM_TRIGGER[min(wmidx, 10)]
                    wmileft = DEFWMINEXT
                elif wmidx < DEFWMIMAX:
                    wmileft -= end - x
                x = end

            st[g, S_WAITCNT] = waitcnt
            st[g, S_SEED] = seed & 0xFF
            st[g, S_TRIGGER] = trigger
            st[g, S_WMIDX] = wmidx
            st[g, S_WMILEFT] = wmileft
            st[g, S_MELCSTATE] = melcstate
            st[g, S_MELCLEN] = melclen
            st[g, S_MELCORDER] = melcorder
    if nacc:
        out[_U(pos)] = (acc << (32 - nacc)) & _MASK32
        pos += 1
    out[_U(pos)] = 0
    return pos + 1


# ----------------------------------------------------------------------------------------------
# Decoder: quic.c's 32-bit window -- ``word`` holds the next 32 bits of the stream, ``nxt`` the
# last word read, of which the low ``avail`` bits are not yet in ``word``.


@njit(inline=True)
def _eat(data: np.ndarray, word: int, nxt: int, avail: int, now: int, length: int) -> tuple[int, int, int, int]:
    """``decode_eatbits``: drop ``length`` (1..31) bits from the window.

    Past the end of ``data`` the next word reads as 0 and ``now`` moves past ``len(data)``: the
    client's ``more_space`` fails there, so callers check ``now`` and stop.
    """
    word = (word << length) & _MASK32
    delta = avail - length
    if delta >= 0:
        return word | (nxt >> delta), nxt, delta, now
    delta = -delta
    word |= (nxt << delta) & _MASK32
    nxt = _I(data[_U(now)]) if now < data.shape[0] else 0
    avail = 32 - delta
    return word | (nxt >> avail), nxt, avail, now + 1


@njit(inline=True)
def _golomb_decode(
    word: int, code: int, ngr: np.ndarray, cwlen: np.ndarray, prefixmask: np.ndarray, suffixlen: np.ndarray,
) -> tuple[int, int]:
    """``golomb_decoding``: (value, codeword length) of the codeword at the top of ``word``."""
    if word > prefixmask[_U(code)]:
        # Plain Golomb-Rice: the leading zeros (fewer than 24 here) are the quotient.
        if word >> 24:
            zeros = LZEROES[_U(word >> 24)]
        elif word >> 16:
            zeros = 8 + LZEROES[_U(word >> 16)]
        else:
            zeros = 16 + LZEROES[_U(word >> 8)]
        cwl = zeros + 1 + code
        return ((zeros << code) | ((word >> (32 - cwl)) & ((1 << code) - 1))) & 0xFF, cwl
    cwl = cwlen[_U(code)]
    return (ngr[_U(code)] + ((word >> (32 - cwl)) & ((1 << suffixlen[_U(code)]) - 1))) & 0xFF, cwl


@njit
def decode_image(
    px: np.ndarray, height: int, width: int, bpp: int, chans: np.ndarray, split: int, data: np.ndarray, pos0: int,
    l2u: np.ndarray, glen: np.ndarray, ngr: np.ndarray, cwlen: np.ndarray, prefixmask: np.ndarray,
    suffixlen: np.ndarray, bucket_of: np.ndarray, nbuckets: int, bpc: int,
) -> int:
    """Decode the rows after ``pos0`` header words of ``data`` (uint32 words) into the flat ``px``.

    Returns 0, :data:`ERR_TRUNCATED` when the stream would be read past its end, or
    :data:`ERR_BAD_RUN` for a run longer than the rest of its segment (``"wrong RLE"``).
    Bytes of ``px`` that are not coded channels are left alone.
    """
    nch = chans.shape[0]
    groups = 1 if split >= nch else 2
    mask = (1 << bpc) - 1
    stride = width * bpp
    cw = width + 1
    nwords = data.shape[0]
    corr = np.zeros(nch * cw, np.int64)
    counters = np.zeros(nch * nbuckets * MAXNUMCODES, np.int64)
    bestcode = np.full(nch * nbuckets, bpc - 1, np.int64)
    st = np.zeros((groups, N_STATE), np.int64)
    _init_state(st)
    # init_decode_io: the window starts at the first word after the header, nothing consumed yet.
    if pos0 >= nwords:
        return ERR_TRUNCATED
    word = _I(data[_U(pos0)])
    nxt = word
    avail = 0
    now = pos0 + 1
    for y in range(height):
        rc = y * stride
        rp = rc - stride if y else rc
        row0 = y == 0
        for g in range(groups):
            c0 = 0 if g == 0 else split
            c1 = split if g == 0 else nch
            waitcnt = st[g, S_WAITCNT]
            seed = st[g, S_SEED]
            trigger = st[g, S_TRIGGER]
            wmidx = st[g, S_WMIDX]
            wmileft = st[g, S_WMILEFT]
            melcstate = st[g, S_MELCSTATE]
            melclen = st[g, S_MELCLEN]
            melcorder = st[g, S_MELCORDER]
            for c in range(c0, c1):
                corr[_U(c * cw)] = 0 if row0 else corr[_U(c * cw + 1)]

            x = 0
            while x < width:
                grow = wmidx < DEFWMIMAX and wmileft <= width - x
                end = x + wmileft if grow else width
                waitmask = (1 << wmidx) - 1
                i = x
                if i == 0 and end > 0:
                    for c in range(c0, c1):
                        ch = chans[c]
                        k = c * cw
                        code = bestcode[_U(c * nbuckets + bucket_of[_U(corr[_U(k)])])]
                        u, cwl = _golomb_decode(word, code, ngr, cwlen, prefixmask, suffixlen)
                        corr[_U(k + 1)] = u
                        above = 0 if row0 else _I(px[_U(rp + ch)])
                        px[_U(rc + ch)] = (l2u[_U(u)] + above) & mask
                        word, nxt, avail, now = _eat(data, word, nxt, avail, now, cwl)
                    if now > nwords:
                        return ERR_TRUNCATED
                    if waitcnt:
                        waitcnt -= 1
                    else:
                        seed += 1
                        waitcnt = TABRAND_CHAOS[seed & 0xFF] & waitmask
                        _update_group(corr, cw, 0, c0, c1, bucket_of, nbuckets, bestcode, counters, glen, bpc, trigger)
                    i = 1
                run_index = 0
                while i < end:
                    oc = rc + i * bpp
                    op = rp + i * bpp
                    if not row0 and i > 2 and run_index != i:
                        same = True
                        for c in range(c0, c1):
                            ch = chans[c]
                            if (
                                px[_U(op - bpp + ch)] != px[_U(op + ch)]
                                or px[_U(oc - bpp + ch)] != px[_U(oc - 2 * bpp + ch)]
                            ):
                                same = False
                                break
                        if same:
                            # decode_state_run
                            run_index = i
                            runlen = 0
                            while True:
                                ones = LZEROES[_U((~(word >> 24)) & 0xFF)]
                                for _ in range(ones):
                                    runlen += melcorder
                                    if melcstate < MELCSTATES - 1:
                                        melcstate += 1
                                        melclen = MELC_J[melcstate]
                                        melcorder = 1 << melclen
                                if ones != 8:
                                    word, nxt, avail, now = _eat(data, word, nxt, avail, now, ones + 1)
                                    break
                                word, nxt, avail, now = _eat(data, word, nxt, avail, now, 8)
                                if now > nwords or runlen > end - i:
                                    break
                            if melclen:
                                runlen += word >> (32 - melclen)
                                word, nxt, avail, now = _eat(data, word, nxt, avail, now, melclen)
                            if melcstate:
                                melcstate -= 1
                                melclen = MELC_J[melcstate]
                                melcorder = 1 << melclen
                            if now > nwords:
                                return ERR_TRUNCATED
                            if runlen > end - i:
                                return ERR_BAD_RUN
                            for _ in range(runlen):
                                for c in range(c0, c1):
                                    ch = chans[c]
                                    px[_U(oc + ch)] = px[_U(oc - bpp + ch)]
                                oc += bpp
                            i += runlen
                            continue

                    for c in range(c0, c1):
                        ch = chans[c]
                        k = c * cw + i
                        code = bestcode[_U(c * nbuckets + bucket_of[_U(corr[_U(k)])])]
                        # _golomb_decode and _eat, inline (per-sample calls are costly in numba)
                        if word > prefixmask[_U(code)]:
                            if word >> 24:
                                zeros = LZEROES[_U(word >> 24)]
                            elif word >> 16:
                                zeros = 8 + LZEROES[_U(word >> 16)]
                            else:
                                zeros = 16 + LZEROES[_U(word >> 8)]
                            cwl = zeros + 1 + code
                            u = ((zeros << code) | ((word >> (32 - cwl)) & ((1 << code) - 1))) & 0xFF
                        else:
                            cwl = cwlen[_U(code)]
                            u = (ngr[_U(code)] + ((word >> (32 - cwl)) & ((1 << suffixlen[_U(code)]) - 1))) & 0xFF
                        corr[_U(k + 1)] = u
                        a = _I(px[_U(oc - bpp + ch)])
                        if not row0:
                            a = (a + _I(px[_U(op + ch)])) >> 1
                        px[_U(oc + ch)] = (l2u[_U(u)] + a) & mask
                        word = (word << cwl) & _MASK32
                        delta = avail - cwl
                        if delta >= 0:
                            word |= nxt >> delta
                            avail = delta
                        else:
                            delta = -delta
                            word |= (nxt << delta) & _MASK32
                            nxt = _I(data[_U(now)]) if now < nwords else 0
                            avail = 32 - delta
                            word |= nxt >> avail
                            now += 1
                    if now > nwords:
                        return ERR_TRUNCATED
                    if waitcnt:
                        waitcnt -= 1
                    else:
                        _update_group(corr, cw, i, c0, c1, bucket_of, nbuckets, bestcode, counters, glen, bpc, trigger)
                        seed += 1
                        waitcnt = TABRAND_CHAOS[seed & 0xFF] & waitmask
                    i += 1
                if grow:
                    wmidx += 1
                    trigger = WM_TRIGGER[min(wmidx, 10)]
                    wmileft = DEFWMINEXT
                elif wmidx < DEFWMIMAX:
                    wmileft -= end - x
                x = end

            st[g, S_WAITCNT] = waitcnt
            st[g, S_SEED] = seed & 0xFF
            st[g, S_TRIGGER] = trigger
            st[g, S_WMIDX] = wmidx
            st[g, S_WMILEFT] = wmileft
            st[g, S_MELCSTATE] = melcstate
            st[g, S_MELCLEN] = melclen
            st[g, S_MELCORDER] = melcorder
    return 0
