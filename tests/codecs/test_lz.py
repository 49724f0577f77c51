"""SPICE LZ: round trips for every type, byte-exactness against lz.c, numba == pure, hostile input.

The golden digests below are the output of spice-common's ``lz_encode`` (lz.c, 2021-06) on the
same inputs, compiled in a scratch harness: our encoder ports its match finder, so the bytes agree.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.codecs import lz_kernels
from spiceserver.codecs.lz import (
    LZ_HEADER_SIZE,
    LzImageType,
    bytes_per_pixel,
    decode_lz,
    encode_lz,
    plt_pixels_per_byte,
    rgb16_to_rgb32,
    unpack_plt,
)
from spiceserver.errors import ProtocolError

T = LzImageType
ALL_TYPES = [t for t in T if t != T.INVALID]
IMAGES = Path(__file__).resolve().parents[3] / "shared" / "images"


# -- helpers shared with test_glz.py ----------------------------------------------------------


def load_bgrx(name: str) -> np.ndarray:
    """A shared benchmark image as (h, w) uint32 0x00RRGGBB (BGRX in memory); skips if absent."""
    path = IMAGES / f"{name}.png"
    if not path.exists():
        pytest.skip(f"{path} not available")
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.uint32)
    return np.ascontiguousarray((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])


def purify(monkeypatch: pytest.MonkeyPatch, *modules: ModuleType) -> None:
    """Swap every compiled kernel of ``modules`` for its plain Python function (call compiled first)."""
    for mod in modules:
        for name, obj in list(vars(mod).items()):
            if hasattr(obj, "py_func"):
                monkeypatch.setattr(mod, name, obj.py_func)


def synthetic(kind: str, h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w) uint32 test pictures: random, flat, runs of few colours, gradient, text-like."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.integers(0, 1 << 32, (h, w), dtype=np.uint64).astype(np.uint32)
    if kind == "flat":
        return np.full((h, w), 0x80402010, np.uint32)
    if kind == "runs":
        colours = rng.integers(0, 1 << 32, 5, dtype=np.uint64).astype(np.uint32)
        runs = rng.integers(1, 30, h * w)
        return np.repeat(colours[rng.integers(0, 5, runs.size)], runs)[: h * w].reshape(h, w)
    if kind == "gradient":
        y, x = np.mgrid[0:h, 0:w].astype(np.uint32)
        return ((x * 7) & 255) | (((y * 3) & 255) << 8) | (((x + y) & 255) << 16) | (((x ^ y) & 255) << 24)
    assert kind == "text"
    base = np.full((h, w), 0x00F0F0F0, np.uint32)
    glyphs = rng.integers(0, 2, (7, 5)).astype(bool)
    for y0 in range(1, h - 7, 9):
        for x0 in range(1, w - 5, 6):
            if rng.random() < 0.8:
                base[y0 : y0 + 7, x0 : x0 + 5][glyphs] = 0x00202020
    return base


def as_type(px: np.ndarray, t: int) -> tuple[np.ndarray, int, int]:
    """Raw rows of type ``t`` derived deterministically from (h, w) uint32 pixels: (rows, width, stride)."""
    h, w = px.shape
    b, g, r, a = ((px >> s) & 255 for s in (0, 8, 16, 24))
    if t in (T.RGB32, T.RGBA, T.XXXA):
        return px.copy(), w, 4 * w
    if t == T.RGB24:
        return np.stack([b, g, r], -1).astype(np.uint8), w, 3 * w
    if t == T.RGB16:
        return (((r >> 3) << 10) | ((g >> 3) << 5) | (b >> 3) | ((a & 1) << 15)).astype("<u2"), w, 2 * w
    if t == T.A8:
        return g.astype(np.uint8), w, w
    if t == T.PLT8:
        return (((r >> 5) << 5) | ((g >> 5) << 2) | (b >> 6)).astype(np.uint8), w, w
    ppb = plt_pixels_per_byte(t)
    width = w - 1 if w > 1 else w  # odd widths exercise the partly used last byte
    idx = (g[:, :width] >> 4).astype(np.uint8) if ppb == 2 else (g[:, :width] > 127).astype(np.uint8)
    stride = -(-width // ppb)
    pad = np.zeros((h, stride * ppb), np.uint8)
    pad[:, :width] = idx
    if ppb == 2:
        hi, lo = (pad[:, 0::2], pad[:, 1::2]) if t == T.PLT4_BE else (pad[:, 1::2], pad[:, 0::2])
        packed = (hi << 4) | lo
    else:
        packed = np.packbits(pad, axis=1, bitorder="big" if t == T.PLT1_BE else "little")
    return packed.astype(np.uint8), width, stride


def expected(rows: np.ndarray, t: int, width: int) -> np.ndarray:
    """What decode_lz returns (no palette) for rows made by :func:`as_type`."""
    h = rows.shape[0]
    if t == T.RGB32:
        return rows & 0xFFFFFF
    if t == T.RGBA:
        return rows
    if t == T.XXXA:
        return (rows >> 24).astype(np.uint8)
    if t == T.RGB24:
        v = rows.astype(np.uint32)
        return v[..., 0] | (v[..., 1] << 8) | (v[..., 2] << 16)
    if t == T.RGB16:
        return rgb16_to_rgb32(rows & 0x7FFF)
    if plt_pixels_per_byte(t):
        return unpack_plt(rows.reshape(h, -1), t, width)
    return rows


# -- round trips -----------------------------------------------------------------------------

SIZES = [(1, 1), (2, 1), (1, 3), (3, 2), (5, 1), (7, 3), (17, 9), (33, 5), (64, 40), (255, 3)]


@pytest.mark.parametrize("t", ALL_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("content", ["random", "flat", "runs", "gradient", "text"])
def test_round_trip_every_type(t: LzImageType, content: str) -> None:
    for i, (w, h) in enumerate(SIZES):
        rows, width, stride = as_type(synthetic(content, h, w + 1 if plt_pixels_per_byte(t) > 1 else w, i), t)
        for top_down in (True, False):
            data = encode_lz(rows, t, width=width, height=h, stride=stride, top_down=top_down)
            got = decode_lz(data)
            assert got[:4] == (t, width, h, top_down)
            np.testing.assert_array_equal(got[4], expected(rows, t, width))


def test_header_layout() -> None:
    data = encode_lz(np.zeros((2, 3), np.uint32), T.RGB32, width=3, height=2, stride=12, top_down=False)
    assert struct.unpack_from(">7I", data) == (0x20205A4C, 0x00010001, 8, 3, 2, 12, 0)
    assert data[:4] == b"  ZL"


def test_padded_rows_are_compacted() -> None:
    px = synthetic("text", 20, 30)
    padded = np.zeros((20, 33), np.uint32)
    padded[:, :30] = px
    data = encode_lz(padded, T.RGB32, width=30, height=20, stride=33 * 4)
    assert data == encode_lz(px, T.RGB32, width=30, height=20, stride=120)
    assert struct.unpack_from(">I", data, 20)[0] == 120


def test_rgba_is_rgb32_stream_then_alpha_stream() -> None:
    px = synthetic("gradient", 30, 40)
    rgba = encode_lz(px, T.RGBA, width=40, height=30, stride=160)
    rgb = encode_lz(px, T.RGB32, width=40, height=30, stride=160)
    alpha = encode_lz(px, T.XXXA, width=40, height=30, stride=160)
    assert rgba[LZ_HEADER_SIZE:] == rgb[LZ_HEADER_SIZE:] + alpha[LZ_HEADER_SIZE:]


def test_far_offsets_and_long_lengths() -> None:
    rng = np.random.default_rng(5)
    block = rng.integers(0, 1 << 24, 9000, dtype=np.uint32)
    px = np.concatenate([block, np.full(3000, 7, np.uint32), block]).reshape(1, -1)  # repeat 12000 px back
    data = encode_lz(px, T.RGB32, width=px.shape[1], height=1, stride=px.shape[1] * 4)
    assert len(data) < 9000 * 3 + 2000
    assert bytes([0xFF, 0xFF, 0xFF]) in data  # length continuation bytes of the long run/match
    np.testing.assert_array_equal(decode_lz(data)[4], px & 0xFFFFFF)


def test_palette_conversion_as_the_client() -> None:
    rows, width, stride = as_type(synthetic("gradient", 9, 12), T.PLT4_LE)
    data = encode_lz(rows, T.PLT4_LE, width=width, height=9, stride=stride)
    idx = decode_lz(data)[4]
    pal = np.array([0xFF000000 | (i * 0x10101) for i in range(5)], np.uint32)
    rgb = decode_lz(data, palette=pal)[4]
    np.testing.assert_array_equal(rgb, (pal & 0xFFFFFF)[idx % 5])  # lz.c wraps PLT4 indices
    rows8, w8, s8 = as_type(synthetic("random", 4, 9), T.PLT8)
    data8 = encode_lz(rows8, T.PLT8, width=w8, height=4, stride=s8)
    with pytest.raises(ProtocolError):
        decode_lz(data8, palette=[1, 2, 3])
    rows1, w1, s1 = as_type(synthetic("text", 5, 17), T.PLT1_BE)
    data1 = encode_lz(rows1, T.PLT1_BE, width=w1, height=5, stride=s1)
    np.testing.assert_array_equal(
        decode_lz(data1, palette=[0x111111, 0x222222, 9])[4], np.where(decode_lz(data1)[4] == 1, 0x222222, 0x111111)
    )
    with pytest.raises(ProtocolError):
        decode_lz(data1, palette=[1])


def test_encoder_rejects_bad_arguments() -> None:
    px = np.zeros((4, 4), np.uint32)
    with pytest.raises(ValueError):
        encode_lz(px, T.RGB32, width=4, height=4, stride=12)  # stride < width * 4
    with pytest.raises(ValueError):
        encode_lz(px, T.RGB32, width=5, height=4, stride=20)  # too few bytes
    with pytest.raises(ValueError):
        encode_lz(px, T.INVALID, width=4, height=4, stride=16)
    with pytest.raises(ValueError):
        encode_lz(b"\0" * 8, T.PLT1_LE, width=8, height=2, stride=2)  # stride > needed with width % 8 == 0
    with pytest.raises(ValueError):
        encode_lz(px, T.RGB32, width=0, height=4, stride=0)


# -- byte-exact against lz.c -----------------------------------------------------------------

# Size and sha256[:16] of lz_encode() output for desktop_256 turned into each type by as_type().
C_GOLDEN: dict[str, tuple[int, str]] = {
    "PLT1_LE": (3051, "ac7353d9dfa7c2d6"),
    "PLT1_BE": (3067, "16469aa4e38000de"),
    "PLT4_LE": (6440, "ce134ba2a58d4512"),
    "PLT4_BE": (6458, "5deb1ad6b0685767"),
    "PLT8": (9001, "909cb6932c77c223"),
    "RGB16": (9438, "0ac00a612ba31233"),
    "RGB24": (10770, "b1ed8dc91f8ff9eb"),
    "RGB32": (10770, "646327e743a120fe"),
    "RGBA": (19545, "bc88bff86dcdcaa9"),
    "XXXA": (8803, "fa35f18e60539334"),
    "A8": (8714, "dc97fbb2aa1f9e3a"),
}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@pytest.mark.parametrize("t", ALL_TYPES, ids=lambda t: t.name)
def test_byte_identical_to_lz_c(t: LzImageType) -> None:
    px = load_bgrx("desktop_256")
    if t in (T.RGBA, T.XXXA):
        px = px | ((((px >> 8) & 255) ^ ((px >> 3) & 0xF0)) << 24)
    rows, width, stride = as_type(px, t)
    data = encode_lz(rows, t, width=width, height=px.shape[0], stride=stride)
    assert (len(data), _digest(data)) == C_GOLDEN[t.name]


def test_1080p_matches_lz_c() -> None:
    px = load_bgrx("desktop_1080")
    data = encode_lz(px, T.RGB32, width=1920, height=1080, stride=7680)
    assert (len(data), _digest(data)) == (243936, "986db8fc9464a1bc")
    np.testing.assert_array_equal(decode_lz(data)[4], px)


# -- numba == pure ---------------------------------------------------------------------------


def test_numba_and_pure_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    cases: list[tuple[Any, ...]] = []
    for t in ALL_TYPES:
        for content in ("runs", "gradient", "text", "random"):
            rows, width, stride = as_type(synthetic(content, 23, 41, 3), t)
            data = encode_lz(rows, t, width=width, height=23, stride=stride)
            cases.append((t, rows, width, stride, data, decode_lz(data)[4]))
    purify(monkeypatch, lz_kernels)
    assert not hasattr(lz_kernels.lz_compress_rgb, "py_func")
    for t, rows, width, stride, data, out in cases:
        assert encode_lz(rows, t, width=width, height=23, stride=stride) == data, t
        np.testing.assert_array_equal(decode_lz(data)[4], out)


# -- hostile input ---------------------------------------------------------------------------


def _header(t: int, w: int, h: int, stride: int | None = None) -> bytes:
    if stride is None:
        ppb = plt_pixels_per_byte(t)
        stride = -(-w // ppb) if ppb else w * bytes_per_pixel(t)
    return struct.pack(">7I", 0x20205A4C, 0x00010001, t, w, h, stride, 1)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL_TYPES), st.integers(1, 24), st.integers(1, 12), st.binary(max_size=400))
def test_random_payload_decodes_or_raises_protocol_error(t: int, w: int, h: int, payload: bytes) -> None:
    try:
        decode_lz(_header(t, w, h) + payload, palette=list(range(256)))
    except ProtocolError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_lz(data)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ALL_TYPES), st.sampled_from(["runs", "text", "random"]), st.data())
def test_truncated_and_mutated_streams(t: int, content: str, data: st.DataObject) -> None:
    rows, width, stride = as_type(synthetic(content, 9, 14, 1), t)
    good = encode_lz(rows, t, width=width, height=9, stride=stride)
    cut = data.draw(st.integers(0, len(good) - 1))
    with pytest.raises(ProtocolError):
        decode_lz(good[:cut])
    with pytest.raises(ProtocolError):
        decode_lz(good + b"\0")  # lz.c insists on consuming exactly the data
    pos = data.draw(st.integers(0, len(good) - 1))
    bad = bytearray(good)
    bad[pos] ^= data.draw(st.integers(1, 255))
    try:
        decode_lz(bytes(bad), palette=list(range(256)))
    except ProtocolError:
        pass


@pytest.mark.parametrize(
    "header",
    [
        _header(8, 0xFFFF, 0xFFFF),  # far more pixels than the data could hold
        _header(8, 0x80000000, 1, 0),  # width beyond lz.c's int
        _header(8, 4, 4, 15),  # stride != width * 4
        _header(1, 16, 4, 3),  # PLT1 stride too large
        _header(12, 4, 4, 16),  # unknown type
        _header(8, 0, 4, 0),  # empty image: lz.c cannot decode it either
        struct.pack(">7I", 0x20205A4D, 0x00010001, 8, 1, 1, 4, 1),
        struct.pack(">7I", 0x20205A4C, 0x00010002, 8, 1, 1, 4, 1),
    ],
)
def test_bad_headers(header: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_lz(header + b"\x00" * 16)


def test_size_limit() -> None:
    data = encode_lz(np.zeros((64, 64), np.uint32), T.RGB32, width=64, height=64, stride=256)
    with pytest.raises(ProtocolError):
        decode_lz(data, max_pixels=64 * 64 - 1)
