"""Raster operations: SPICE rop descriptors, the 16 binary rops, the 256 ternary rops.

Counterparts: spice-common ``common/canvas_base.c`` ``ropd_descriptor_to_rop`` (descriptor ->
binary rop, given which operand plays "src"), ``common/pixman_utils.c`` (``SpiceROP`` and the
``solid_rop_*`` / ``tiled_rop_*`` / ``copy_rop_*`` equations) and ``common/rop3.c`` (ternary rops;
only the codes it registers are drawable -- the others make the client abort).
"""

from __future__ import annotations

import functools
import operator
from enum import IntEnum, IntFlag

import numpy as np

from ..errors import ProtocolError

__all__ = [
    "Ropd",
    "Rop",
    "RopInput",
    "ropd_to_rop",
    "apply_rop",
    "apply_rop3",
    "ROP3_SUPPORTED",
]


class Ropd(IntFlag):
    """``SpiceRopd``: the rop descriptor of Fill/Copy/Opaque/Blend and stroke/text modes."""

    INVERS_SRC = 1 << 0
    INVERS_BRUSH = 1 << 1
    INVERS_DEST = 1 << 2
    OP_PUT = 1 << 3
    OP_OR = 1 << 4
    OP_AND = 1 << 5
    OP_XOR = 1 << 6
    OP_BLACKNESS = 1 << 7
    OP_WHITENESS = 1 << 8
    OP_INVERS = 1 << 9
    INVERS_RES = 1 << 10


class Rop(IntEnum):
    """``SpiceROP`` (X11 GX order): the binary raster operations of ``pixman_utils.c``."""

    CLEAR = 0
    AND = 1
    AND_REVERSE = 2
    COPY = 3
    AND_INVERTED = 4
    NOOP = 5
    XOR = 6
    OR = 7
    NOR = 8
    EQUIV = 9
    INVERT = 10
    OR_REVERSE = 11
    COPY_INVERTED = 12
    OR_INVERTED = 13
    NAND = 14
    SET = 15


class RopInput(IntEnum):
    """``ROPInput`` of ``canvas_base.c``: the operands a rop descriptor's src and dest may stand for (see :func:`ropd_to_rop`)."""

    SRC = 0
    BRUSH = 1
    DEST = 2


_INVERT_MASKS = (Ropd.INVERS_SRC, Ropd.INVERS_BRUSH, Ropd.INVERS_DEST)

# (op, invert result, invert src, invert dest) -> rop, derived from the boolean identities the
# C code spells out case by case.
_TABLE: dict[tuple[int, bool, bool, bool], Rop] = {}
for _res in (False, True):
    for _s in (False, True):
        for _d in (False, True):
            _TABLE[(Ropd.OP_PUT, _res, _s, _d)] = Rop.COPY if _s == _res else Rop.COPY_INVERTED
for _op, _fn in ((Ropd.OP_OR, operator.or_), (Ropd.OP_AND, operator.and_), (Ropd.OP_XOR, operator.xor)):
    for _res in (False, True):
        for _s in (False, True):
            for _d in (False, True):
                # truth table over (src, dest) bits 0b1100 / 0b1010, as X11 GX codes are built
                _src, _dst = 0b1100, 0b1010
                _v = _fn(_src ^ (0b1111 if _s else 0), _dst ^ (0b1111 if _d else 0))
                if _res:
                    _v ^= 0b1111
                _code = {0b0000: 0, 0b1000: 1, 0b0100: 2, 0b1100: 3, 0b0010: 4, 0b1010: 5, 0b0110: 6, 0b1110: 7,
                         0b0001: 8, 0b1001: 9, 0b0101: 10, 0b1101: 11, 0b0011: 12, 0b1011: 13, 0b0111: 14,
                         0b1111: 15}[_v]  # fmt: skip
                _TABLE[(_op, _res, _s, _d)] = Rop(_code)


@functools.lru_cache(maxsize=512)
def ropd_to_rop(desc: int, src_input: RopInput, dest_input: RopInput) -> Rop:
    """``ropd_descriptor_to_rop``: the binary rop a descriptor means for the given operands.

    ``src_input`` names the operand used as "src" (whose INVERS_* bit inverts it) and
    ``dest_input`` the one used as "dest": Fill and Stroke use (BRUSH, DEST), Copy and Blend
    (SRC, DEST), Opaque (BRUSH, SRC). The first of PUT, OR, AND, XOR, BLACKNESS, WHITENESS,
    INVERS set decides; none of them means COPY.
    """
    inv_src = bool(desc & _INVERT_MASKS[src_input])
    inv_dest = bool(desc & _INVERT_MASKS[dest_input])
    inv_res = bool(desc & Ropd.INVERS_RES)
    for op in (Ropd.OP_PUT, Ropd.OP_OR, Ropd.OP_AND, Ropd.OP_XOR):
        if desc & op:
            return _TABLE[(op, inv_res, inv_src, inv_dest)]
    if desc & Ropd.OP_BLACKNESS:
        return Rop.CLEAR
    if desc & Ropd.OP_WHITENESS:
        return Rop.SET
    if desc & Ropd.OP_INVERS:
        return Rop.INVERT
    return Rop.COPY


def apply_rop(rop: Rop, src: np.ndarray | int, dst: np.ndarray) -> np.ndarray:
    """The result of binary ``rop`` on ``src`` (array or value of dst's dtype) and ``dst``."""
    dt = dst.dtype
    full = np.array(np.iinfo(dt).max, dt)
    s = np.asarray(src, dt) if not isinstance(src, np.ndarray) else src.astype(dt, copy=False)
    if rop == Rop.CLEAR:
        out = np.zeros_like(dst)
    elif rop == Rop.AND:
        out = s & dst
    elif rop == Rop.AND_REVERSE:
        out = s & ~dst
    elif rop == Rop.COPY:
        out = np.broadcast_to(s, dst.shape)
    elif rop == Rop.AND_INVERTED:
        out = ~s & dst
    elif rop == Rop.NOOP:
        out = dst
    elif rop == Rop.XOR:
        out = s ^ dst
    elif rop == Rop.OR:
        out = s | dst
    elif rop == Rop.NOR:
        out = ~s & ~dst
    elif rop == Rop.EQUIV:
        out = ~s ^ dst
    elif rop == Rop.INVERT:
        out = ~dst
    elif rop == Rop.OR_REVERSE:
        out = s | ~dst
    elif rop == Rop.COPY_INVERTED:
        out = np.broadcast_to(~s, dst.shape)
    elif rop == Rop.OR_INVERTED:
        out = ~s | dst
    elif rop == Rop.NAND:
        out = ~s | ~dst
    else:
        out = np.broadcast_to(full, dst.shape)
    return np.asarray(out, dt)


#: The ternary rop codes ``rop3.c`` registers handlers for; any other code makes the client abort
#: (the missing ones are those that ignore an operand, plus 0x00 and 0xff).
ROP3_SUPPORTED: frozenset[int] = frozenset(range(256)) - frozenset(
    (0x00, 0x03, 0x05, 0x0A, 0x0C, 0x0F, 0x11, 0x22, 0x30, 0x33, 0x3C, 0x3F, 0x44, 0x50, 0x55, 0x5A, 0x5F,
     0x66, 0x77, 0x88, 0x99, 0xA0, 0xA5, 0xAA, 0xAF, 0xBB, 0xC0, 0xC3, 0xCC, 0xCF, 0xDD, 0xEE, 0xF0, 0xF3,
     0xF5, 0xFA, 0xFC, 0xFF)
)  # fmt: skip


def apply_rop3(rop3: int, pat: np.ndarray | int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Ternary raster operation ``rop3`` bit by bit: result bit = bit ``(p << 2) | (s << 1) | d``
    of the code, as every handler of ``rop3.c`` computes (its self-test: p=0xf0, s=0xcc, d=0xaa).

    Raises:
        ProtocolError: a code ``rop3.c`` does not implement (the client would abort).
    """
    if rop3 not in ROP3_SUPPORTED:
        raise ProtocolError(f"rop3 {rop3:#04x} is not implemented by spice-common (the client aborts)")
    dt = dst.dtype
    p = np.asarray(pat, dt) if not isinstance(pat, np.ndarray) else pat.astype(dt, copy=False)
    s = src.astype(dt, copy=False)
    out = np.zeros(np.broadcast_shapes(np.shape(p), s.shape, dst.shape), dt)
    for minterm in range(8):
        if not rop3 >> minterm & 1:
            continue
        term = (p if minterm & 4 else ~p) & (s if minterm & 2 else ~s) & (dst if minterm & 1 else ~dst)
        out |= term
    return out
