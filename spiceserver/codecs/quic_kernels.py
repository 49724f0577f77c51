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
Python over numpy arrays and ints, compiled by :func:`~spiceserver.codecs._jit.njit` when numba is
present; :func:`~spiceserver.codecs._jit.pure` gives the interpreted version.

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

from collections.abc import Callable
from typing import Any

import numpy as np

from ._jit import HAVE_NUMBA, njit

__all__ = [
    "Family",
    "FAMILY_8BPC",
    "FAMILY_5BPC",
    "encode_image",
    "decode_image",
    "ERR_TRUNCATED",
    "ERR_BAD_RUN",
]

# ----------------------------------------------------------------------------------------------
# Constants of quic.c (values fixed by the bitstream: both ends must agree).

#: Maximum number of Golomb codes in a family (one per parameter l < bpc).
MAXNUMCODES = 8
#: Model evolution: buckets of 1, 2, 4, 8, ... contexts.
DEFEVOL = 3
#: First and last wait mask index (the wait mask is ``2**wmidx - 1``).
DEFWMISTART = 0
DEFWMIMAX = 6
#: Pixels coded before the wait mask index grows.
DEFWMINEXT = 2048
#: Longest Golomb codeword.
DEFMAXCLEN = 26
#: Number of MELCODE states.
MELCSTATES = 32

#: Initial value of the tabrand seed (``TABRAND_SEEDMASK``): the first draw uses entry 0.
TABRAND_SEED0 = 0xFF

#: The 256 pseudo-random words drawn (masked by the wait mask) to space the model updates.
TABRAND_CHAOS = np.array(
    [
        0x02C57542, 0x35427717, 0x2F5A2153, 0x9244F155, 0x7BD26D07, 0x354C6052, 0x57329B28, 0x2993868E,
        0x6CD8808C, 0x147B46E0, 0x99DB66AF, 0xE32B4CAC, 0x1B671264, 0x9D433486, 0x62A4C192, 0x06089A4B,
        0x9E3DCE44, 0xDAABEE13, 0x222425EA, 0xA46F331D, 0xCD589250, 0x8BB81D7F, 0xC8B736B9, 0x35948D33,
        0xD7AC7FD0, 0x5FBE2803, 0x2CFBC105, 0x013DBC4E, 0x7A37820F, 0x39F88E9E, 0xEDD58794, 0xC5076689,
        0xFCADA5A4, 0x64C2F46D, 0xB3BA3243, 0x8974B4F9, 0x5A05AEBD, 0x20AFCD00, 0x39E2B008, 0x88A18A45,
        0x600BDE29, 0xF3971ACE, 0xF37B0A6B, 0x7041495B, 0x70B707AB, 0x06BEFFBB, 0x4206051F, 0xE13C4EE3,
        0xC1A78327, 0x91AA067C, 0x8295F72A, 0x732917A6, 0x1D871B4D, 0x4048F136, 0xF1840E7E, 0x6A6048C1,
        0x696CB71A, 0x7FF501C3, 0x0FC6310B, 0x57E0F83D, 0x8CC26E74, 0x11A525A2, 0x946934C7, 0x7CD888F0,
        0x8F9D8604, 0x4F86E73B, 0x04520316, 0xDEEEA20C, 0xF1DEF496, 0x67687288, 0xF540C5B2, 0x22401484,
        0x3478658A, 0xC2385746, 0x01979C2C, 0x5DAD73C8, 0x0321F58B, 0xF0FEDBEE, 0x92826DDF, 0x284BEC73,
        0x5B1A1975, 0x03DF1E11, 0x20963E01, 0xA17CF12B, 0x740D776E, 0xA7A6BF3C, 0x01B5CCE4, 0x1118AA76,
        0xFC6FAC0A, 0xCE927E9B, 0x00BF2567, 0x806F216C, 0xBCA69056, 0x795BD3E9, 0xC9DC4557, 0x8929B6C2,
        0x789D52EC, 0x3F3FBF40, 0xB9197368, 0xA38C15B5, 0xC3B44FA8, 0xCA8333B0, 0xB7E8D590, 0xBE807FEB,
        0xBF5F8360, 0xD99E2F5C, 0x372928E1, 0x7C757C4C, 0x0DB5B154, 0xC01EDE02, 0x1FC86E78, 0x1F3985BE,
        0xB4805C77, 0x00C880FA, 0x974C1B12, 0x35AB0214, 0xB2DC840D, 0x5B00AE37, 0xD313B026, 0xB260969D,
        0x7F4C8879, 0x1734C4D3, 0x49068631, 0xB9F6A021, 0x6B863E6F, 0xCEE5DEBF, 0x29F8C9FB, 0x53DD6880,
        0x72B61223, 0x1F67A9FD, 0x0A0F6993, 0x13E59119, 0x11CCA12E, 0xFE6B6766, 0x16B6EFFC, 0x97918FC4,
        0xC2B8A563, 0x94F2F741, 0x0BFA8C9A, 0xD1537AE8, 0xC1DA349C, 0x873C60CA, 0x95005B85, 0x9B5C080E,
        0xBC8ABBD9, 0xE1EAB1D2, 0x6DAC9070, 0x4EA9EBF1, 0xE0CF30D4, 0x1EF5BD7B, 0xD161043E, 0x5D2FA2E2,
        0xFF5D3CAE, 0x86ED9F87, 0x2AA1DAA1, 0xBD731A34, 0x9E8F4B22, 0xB1C2C67A, 0xC21758C9, 0xA182215D,
        0xCCB01948, 0x8D168DF7, 0x04238CFE, 0x368C3DBC, 0x0AEADCA5, 0xBAD21C24, 0x0A71FEE5, 0x9FC5D872,
        0x54C152C6, 0xFC329483, 0x6783384A, 0xEDDB3E1C, 0x65F90E30, 0x884AD098, 0xCE81675A, 0x4B372F7D,
        0x68BF9A39, 0x43445F1E, 0x40F8D8CB, 0x90D5ACB6, 0x4CD07282, 0x349EEB06, 0x0C9D5332, 0x520B24EF,
        0x80020447, 0x67976491, 0x2F931CA3, 0xFE9B0535, 0xFCD30220, 0x61A9E6CC, 0xA487D8D7, 0x3F7C5DD1,
        0x7D0127C5, 0x48F51D15, 0x60DEA871, 0xC9A91CB7, 0x58B53BB3, 0x9D5E0B2D, 0x624A78B4, 0x30DBEE1B,
        0x9BDF22E7, 0x1DF5C299, 0x2D5643A7, 0xF4DD35FF, 0x03CA8FD6, 0x53B47ED8, 0x6F2C19AA, 0xFEB0C1F4,
        0x49E54438, 0x2F2577E6, 0xBF876969, 0x72440EA9, 0xFA0BAFB8, 0x74F5B3A0, 0x7DD357CD, 0x89CE1358,
        0x6EF2CDDA, 0x1E7767F3, 0xA6BE9FDB, 0x4F5F88F8, 0xBA994A3A, 0x08CA6B65, 0xE0893818, 0x9E00A16A,
        0xF42BFC8F, 0x9972EEDC, 0x749C8B51, 0x32C05F5E, 0xD706805F, 0x6BFBB7CF, 0xD9210A10, 0x31A1DB97,
        0x923A9559, 0x37A7A1F6, 0x059F8861, 0xCA493E62, 0x65157E81, 0x8F6467DD, 0xAB85FF9F, 0x9331AFF2,
        0x8616B9F5, 0xEDBD5695, 0xEE7E29B1, 0x313AC44F, 0xB903112F, 0x432EF649, 0xDC0A36C0, 0x61CF2BBA,
        0x81474925, 0xA8B6C7AD, 0xEE5931DE, 0xB2F8158D, 0x59FB7409, 0x2E3DFAED, 0x9AF25A3F, 0xE1FED4D5,
    ],
    dtype=np.int64,
)

#: Counter-halving thresholds by wait mask index (0..10) for each model evolution (1, 3, 5).
BESTTRIGTAB = np.array(
    [
        [550, 900, 800, 700, 500, 350, 300, 200, 180, 180, 160],
        [110, 550, 900, 800, 550, 400, 350, 250, 140, 160, 140],
        [100, 120, 550, 900, 700, 500, 400, 300, 220, 250, 160],
    ],
    dtype=np.int64,
)
#: ``wm_trigger`` by wait mask index for DEFevol (``set_wm_trigger``; indexes past 10 use 10).
WM_TRIGGER = BESTTRIGTAB[DEFEVOL // 2].copy()

#: MELCODE: the expected run length in state s is ``2**J[s]``.
MELC_J = np.array(
    [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    dtype=np.int64,
)

#: Number of leading zero bits of a byte (``lzeroes``).
LZEROES = np.array([8 - int(b).bit_length() for b in range(256)], dtype=np.int64)

_MASK32 = 0xFFFFFFFF


def _bppmask(n: int) -> int:
    return (1 << n) - 1


def _ceil_log_2(val: int) -> int:
    if val == 1:
        return 0
    result = 1
    val -= 1
    while val >> 1:
        val >>= 1
        result += 1
    return result


class Family:
    """The Golomb family and model layout for one sample depth (``family_init``, ``find_model_params``).

    Attributes:
        bpc: bits per channel sample (8, or 5 for RGB16).
        gcode, glen: ``(256, 8)`` codeword and codeword length of value ``n`` under code ``l``.
        ngr, cwlen, prefixmask, suffixlen: per code ``l``: number of plain Golomb-Rice codewords,
            length of the escape ("not-GR") codeword, the mask telling the two apart when decoding
            and the escape suffix length.
        xlat_u2l, xlat_l2u: residual folding and unfolding.
        bucket_of: context (previous folded residual) -> bucket number.
        nbuckets: number of buckets per channel.
        gtab: ``gcode << 8 | glen`` flattened to index ``n * 8 + l`` (what the encoder reads).
        glen_flat: ``glen`` flattened the same way (the model updates read it).
    """

    def __init__(self, bpc: int, limit: int = DEFMAXCLEN) -> None:
        self.bpc = bpc
        levels = 1 << bpc
        self.gcode = np.zeros((256, MAXNUMCODES), np.int64)
        self.glen = np.zeros((256, MAXNUMCODES), np.int64)
        self.ngr = np.zeros(MAXNUMCODES, np.int64)
        self.cwlen = np.zeros(MAXNUMCODES, np.int64)
        self.prefixmask = np.zeros(MAXNUMCODES, np.int64)
        self.suffixlen = np.zeros(MAXNUMCODES, np.int64)
        for code in range(bpc):
            altprefixlen = min(limit - bpc, _bppmask(bpc - code))
            altcodewords = levels - (altprefixlen << code)
            ngr = altprefixlen << code
            self.ngr[code] = ngr
            self.suffixlen[code] = _ceil_log_2(altcodewords)
            self.cwlen[code] = altprefixlen + self.suffixlen[code]
            self.prefixmask[code] = _bppmask(32 - altprefixlen)
            for n in range(256):
                if n < ngr:  # unary (n >> l) zeros, a one, then the low l bits
                    self.gcode[n, code] = (1 << code) | (n & _bppmask(code))
                    self.glen[n, code] = (n >> code) + code + 1
                else:  # escape: altprefixlen zeros then n - ngr in suffixlen bits
                    self.gcode[n, code] = n - ngr
                    self.glen[n, code] = self.cwlen[code]
        mask = levels - 1
        half = mask >> 1
        self.xlat_u2l = np.zeros(256, np.int64)
        self.xlat_l2u = np.zeros(256, np.int64)
        for s in range(levels):
            self.xlat_u2l[s] = s << 1 if s <= half else ((mask - s) << 1) + 1
            self.xlat_l2u[s] = mask - (s >> 1) if s & 1 else s >> 1
        self.bucket_of, self.nbuckets = _bucket_layout(levels)
        self.gtab = ((self.gcode << 8) | self.glen).reshape(-1).copy()
        self.glen_flat = self.glen.reshape(-1).copy()


def _bucket_layout(levels: int) -> tuple[np.ndarray, int]:
    """Map each context to its bucket as ``fill_model_structures`` does for DEFevol 3.

    The table has 256 entries whatever the depth: ``find_bucket`` masks the context to the
    family's levels, so entry ``v`` is the bucket of ``v & (levels - 1)``.
    """
    repfirst, firstsize, repnext, mulsize = 1, 1, 1, 2  # DEFevol 3: 1 2 4 8 16 ...
    bucket_of = np.zeros(256, np.int64)
    repcntr = repfirst + 1
    bsize = firstsize
    bend = 0
    nbuckets = 0
    while True:
        bstart = bend + 1 if nbuckets else 0
        repcntr -= 1
        if not repcntr:
            repcntr = repnext
            bsize *= mulsize
        bend = bstart + bsize - 1
        if bend + bsize >= levels:
            bend = levels - 1
        bucket_of[bstart : bend + 1] = nbuckets
        nbuckets += 1
        if bend >= levels - 1:
            break
    return bucket_of[np.arange(256) & (levels - 1)], nbuckets


FAMILY_8BPC = Family(8)
FAMILY_5BPC = Family(5)

# A CommonState is one row of an int64 array (one per channel group).
S_WAITCNT, S_SEED, S_TRIGGER, S_WMIDX, S_WMILEFT, S_MELCSTATE, S_MELCLEN, S_MELCORDER = range(8)
N_STATE = 8

ERR_TRUNCATED = -1
ERR_BAD_RUN = -2

_U: Callable[[Any], int]
_I: Callable[[Any], int]
if HAVE_NUMBA:
    #: Array indices are made unsigned before use: numba then skips the negative-index fix-up
    #: on every access (all indices here are >= 0), which matters in the per-sample loops.
    _U = np.uint64  # type: ignore[assignment]
    #: Array elements are widened with this before arithmetic: numba's ``int()`` keeps uint8
    #: and uint32, and unsigned-signed mixes would turn into floats.
    _I = np.int64  # type: ignore[assignment]
else:  # pragma: no cover - interpreted kernels run about 3x faster on plain ints
    _U = _I = int

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


@njit
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


@njit
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


@njit
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


@njit
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


@njit
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
