"""Rop descriptors, the binary rops and the ternary rops against spice-common's formulas."""

from __future__ import annotations

import numpy as np
import pytest

from spiceserver.canvas.rop import ROP3_SUPPORTED, Rop, Ropd, RopInput, apply_rop, apply_rop3, ropd_to_rop
from spiceserver.errors import ProtocolError

INV_SRC, INV_BRUSH, INV_DEST, INV_RES = 1, 2, 4, 1024
PUT, OR, AND, XOR, BLACK, WHITE, INVERS = 8, 16, 32, 64, 128, 256, 512


def reference_ropd(desc: int, src_input: int, dest_input: int) -> Rop:
    """canvas_base.c ropd_descriptor_to_rop, transcribed case by case."""
    masks = [INV_SRC, INV_BRUSH, INV_DEST]
    old = desc
    desc &= ~(INV_SRC | INV_DEST)
    if old & masks[src_input]:
        desc |= INV_SRC
    if old & masks[dest_input]:
        desc |= INV_DEST
    s, d, r = bool(desc & INV_SRC), bool(desc & INV_DEST), bool(desc & INV_RES)
    if desc & PUT:
        return Rop.COPY if s == r else Rop.COPY_INVERTED
    if desc & OR:
        if r:
            return {(True, True): Rop.AND, (True, False): Rop.AND_REVERSE, (False, True): Rop.AND_INVERTED,
                    (False, False): Rop.NOR}[(s, d)]  # fmt: skip
        return {(True, True): Rop.NAND, (True, False): Rop.OR_INVERTED, (False, True): Rop.OR_REVERSE,
                (False, False): Rop.OR}[(s, d)]  # fmt: skip
    if desc & AND:
        if r:
            return {(True, True): Rop.OR, (True, False): Rop.OR_REVERSE, (False, True): Rop.OR_INVERTED,
                    (False, False): Rop.NAND}[(s, d)]  # fmt: skip
        return {(True, True): Rop.NOR, (True, False): Rop.AND_INVERTED, (False, True): Rop.AND_REVERSE,
                (False, False): Rop.AND}[(s, d)]  # fmt: skip
    if desc & XOR:
        if r:
            return {(True, True): Rop.EQUIV, (True, False): Rop.XOR, (False, True): Rop.XOR,
                    (False, False): Rop.EQUIV}[(s, d)]  # fmt: skip
        return {(True, True): Rop.XOR, (True, False): Rop.EQUIV, (False, True): Rop.EQUIV,
                (False, False): Rop.XOR}[(s, d)]  # fmt: skip
    if desc & BLACK:
        return Rop.CLEAR
    if desc & WHITE:
        return Rop.SET
    if desc & INVERS:
        return Rop.INVERT
    return Rop.COPY


@pytest.mark.parametrize(
    ("src_input", "dest_input"),
    [(RopInput.BRUSH, RopInput.DEST), (RopInput.SRC, RopInput.DEST), (RopInput.BRUSH, RopInput.SRC)],
)
def test_every_descriptor_matches_canvas_base(src_input: RopInput, dest_input: RopInput) -> None:
    for desc in range(0x800):
        assert ropd_to_rop(desc, src_input, dest_input) == reference_ropd(desc, src_input, dest_input), hex(desc)


def test_descriptor_examples() -> None:
    assert ropd_to_rop(Ropd.OP_PUT, RopInput.SRC, RopInput.DEST) == Rop.COPY
    assert ropd_to_rop(Ropd.OP_PUT | Ropd.INVERS_SRC, RopInput.SRC, RopInput.DEST) == Rop.COPY_INVERTED
    # Fill ignores INVERS_SRC: the brush is its "src"
    assert ropd_to_rop(Ropd.OP_PUT | Ropd.INVERS_SRC, RopInput.BRUSH, RopInput.DEST) == Rop.COPY
    assert ropd_to_rop(Ropd.OP_XOR | Ropd.INVERS_DEST, RopInput.BRUSH, RopInput.DEST) == Rop.EQUIV
    assert ropd_to_rop(Ropd.OP_AND | Ropd.INVERS_RES, RopInput.SRC, RopInput.DEST) == Rop.NAND
    assert ropd_to_rop(0, RopInput.SRC, RopInput.DEST) == Rop.COPY


BIN = {  # pixman_utils.c RASTER_OP equations
    Rop.CLEAR: lambda s, d: 0,
    Rop.AND: lambda s, d: s & d,
    Rop.AND_REVERSE: lambda s, d: s & ~d,
    Rop.COPY: lambda s, d: s,
    Rop.AND_INVERTED: lambda s, d: ~s & d,
    Rop.NOOP: lambda s, d: d,
    Rop.XOR: lambda s, d: s ^ d,
    Rop.OR: lambda s, d: s | d,
    Rop.NOR: lambda s, d: ~s & ~d,
    Rop.EQUIV: lambda s, d: ~s ^ d,
    Rop.INVERT: lambda s, d: ~d,
    Rop.OR_REVERSE: lambda s, d: s | ~d,
    Rop.COPY_INVERTED: lambda s, d: ~s,
    Rop.OR_INVERTED: lambda s, d: ~s | d,
    Rop.NAND: lambda s, d: ~s | ~d,
    Rop.SET: lambda s, d: 0xFFFFFFFF,
}


@pytest.mark.parametrize("dtype", [np.uint32, np.uint16, np.uint8])
@pytest.mark.parametrize("rop", list(Rop))
def test_binary_rops(rop: Rop, dtype: type) -> None:
    rng = np.random.default_rng(int(rop))
    bits = np.iinfo(dtype).max
    s = rng.integers(0, bits, 64, dtype=np.uint64).astype(dtype)
    d = rng.integers(0, bits, 64, dtype=np.uint64).astype(dtype)
    expected = np.array([BIN[rop](int(a), int(b)) & bits for a, b in zip(s, d, strict=True)], dtype)
    assert (apply_rop(rop, s, d) == expected).all()
    # a solid colour is cut to the pixel size
    assert (
        apply_rop(rop, 0x12345678 & bits, d) == np.array([BIN[rop](0x12345678 & bits, int(b)) & bits for b in d], dtype)
    ).all()


ROP3_FORMULAS = {  # a sample of rop3.c's handler formulas (p = pattern, s = source, d = dest)
    0x01: lambda p, s, d: ~(p | s | d),
    0x1A: lambda p, s, d: ((p & s) | d) ^ p,
    0x2D: lambda p, s, d: (~d | s) ^ p,
    0x96: lambda p, s, d: p ^ s ^ d,
    0xB8: lambda p, s, d: ((p ^ d) & s) ^ p,
    0xE2: lambda p, s, d: ((d ^ p) & s) ^ d,
    0xFE: lambda p, s, d: s | p | d,
    0x6A: lambda p, s, d: (p & s) ^ d,
    0xCA: lambda p, s, d: ((d ^ s) & p) ^ d,
}


def test_rop3_matches_handler_formulas_and_truth_table() -> None:
    rng = np.random.default_rng(3)
    p = rng.integers(0, 2**32, 100, dtype=np.uint64).astype(np.uint32)
    s = rng.integers(0, 2**32, 100, dtype=np.uint64).astype(np.uint32)
    d = rng.integers(0, 2**32, 100, dtype=np.uint64).astype(np.uint32)
    for code, fn in ROP3_FORMULAS.items():
        expected = fn(p, s, d)
        assert (apply_rop3(code, p, s, d) == expected.astype(np.uint32)).all(), hex(code)
    # the self-test of rop3.c: with p=0xf0, s=0xcc, d=0xaa every handler yields its own code
    for code in ROP3_SUPPORTED:
        got = apply_rop3(code, np.uint8(0xF0), np.array([0xCC], np.uint8), np.array([0xAA], np.uint8))
        assert int(got[0]) == code
    # a solid colour pattern works on 16-bit pixels too
    d16 = np.array([0x1234, 0xFFFF], np.uint16)
    assert (
        apply_rop3(0x96, 0x00FF, np.array([0x0F0F, 0], np.uint16), d16) == (0x00FF ^ np.array([0x0F0F, 0]) ^ d16)
    ).all()


def test_unregistered_rop3_codes_are_refused() -> None:
    assert len(ROP3_SUPPORTED) == 218
    for code in (0x00, 0xFF, 0xCC, 0x33, 0x55, 0xAA, 0xF0, 0x0F, 0x66, 0x5A):
        assert code not in ROP3_SUPPORTED
        with pytest.raises(ProtocolError):
            apply_rop3(code, 0, np.zeros(1, np.uint32), np.zeros(1, np.uint32))
