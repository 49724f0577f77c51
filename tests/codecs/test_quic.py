"""Quic: golden vectors from spice-common's C encoder, round trips, numba == pure, hostile input.

The golden ``.bin`` files under ``quic_vectors/`` were written by spice-common ``common/quic.c``
(``quic_encode``) from the inputs :func:`golden_input` builds; Quic's model adapts the same way on
both ends, so our encoder must reproduce them byte for byte.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver._jit import pure
from spiceserver.codecs import quic_kernels
from spiceserver.codecs.quic import MAX_PIXELS, QuicType, decode_quic, encode_quic
from spiceserver.errors import ProtocolError

VECTORS = Path(__file__).parent / "quic_vectors"
IMAGES = Path(__file__).resolve().parents[3] / "shared" / "images"
FORMATS = ("rgb32", "rgb24", "rgba", "gray", "rgb16")
TYPE_OF = {
    "gray": QuicType.GRAY,
    "rgb16": QuicType.RGB16,
    "rgb24": QuicType.RGB24,
    "rgb32": QuicType.RGB32,
    "rgba": QuicType.RGBA,
}

#: (format, width, height, content) of each stored vector: ``quic_vectors/{fmt}_{w}x{h}_{content}.bin``.
GOLDEN = [
    ("rgb32", 8, 8, "mixed"),
    ("rgb32", 17, 5, "mixed"),
    ("rgb32", 40, 30, "text"),
    ("rgb24", 17, 5, "mixed"),
    ("rgba", 8, 8, "mixed"),
    ("rgba", 17, 5, "text"),
    ("gray", 8, 8, "mixed"),
    ("gray", 17, 5, "text"),
    ("rgb16", 13, 7, "mixed"),
    ("rgb32", 1, 1, "mixed"),
    ("rgb32", 3000, 2, "text"),
]


def _hash(y: np.ndarray, x: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic pseudo-noise (no RNG, so the vectors never depend on numpy's generators)."""
    v = (
        x.astype(np.uint64) * np.uint64(2654435761) + y.astype(np.uint64) * np.uint64(40503) + np.uint64(salt)
    ) & np.uint64(0xFFFFFFFF)
    v ^= v >> np.uint64(13)
    v = (v * np.uint64(0x5BD1E995)) & np.uint64(0xFFFFFFFF)
    return (v ^ (v >> np.uint64(15))).astype(np.uint32)


def picture(kind: str, h: int, w: int) -> np.ndarray:
    """(h, w) uint32 B,G,R,A test pictures built from arithmetic only.

    ``mixed``: gradient top-left, noise top-right, flat band and a repeated stripe at the bottom;
    ``text``: flat background with dark glyph-like dots and a few repeated rows (runs).
    """
    y, x = np.mgrid[0:h, 0:w].astype(np.uint32)
    if kind == "mixed":
        grad = (x * 9) & 255 | ((y * 5) & 255) << 8 | ((x + 2 * y) & 255) << 16 | ((x * y) & 255) << 24
        out = np.where(x * 2 < w, grad, _hash(y, x, 1))
        out = np.where(y * 3 >= 2 * h, np.uint32(0x80C0E0FF) ^ ((x // 4 % 2) * np.uint32(0x00FF0000)), out)
        return out.astype(np.uint32)
    assert kind == "text"
    dots = (_hash(y // 2, x // 2, 7) & 7) == 0
    out = np.where(dots, np.uint32(0x20202080), np.uint32(0xFFF0F0F0 - 0x01000000 * ((x // 8) % 4)))
    return out.astype(np.uint32)


def as_format(px: np.ndarray, fmt: str) -> np.ndarray:
    """The encoder input of ``fmt`` from a B,G,R,A picture."""
    if fmt == "gray":
        return (px & 0xFF).astype(np.uint8)
    if fmt == "rgb16":
        return (((px >> 19) & 0x1F) << 10 | ((px >> 11) & 0x1F) << 5 | ((px >> 3) & 0x1F)).astype(np.uint16)
    return px


def expected(arr: np.ndarray, fmt: str) -> np.ndarray:
    """What :func:`decode_quic` gives back for ``arr`` encoded as ``fmt``."""
    if fmt in ("rgb32", "rgb24"):
        return arr & np.uint32(0xFFFFFF)
    if fmt == "rgb16":
        return arr & np.uint16(0x7FFF)
    return arr


def golden_input(fmt: str, w: int, h: int, kind: str) -> np.ndarray:
    return as_format(picture(kind, h, w), fmt)


def _vector_path(fmt: str, w: int, h: int, kind: str) -> Path:
    return VECTORS / f"{fmt}_{w}x{h}_{kind}.bin"


# -- golden vectors ---------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "w", "h", "kind"), GOLDEN)
def test_encoder_reproduces_c_vectors(fmt: str, w: int, h: int, kind: str) -> None:
    assert encode_quic(golden_input(fmt, w, h, kind), fmt) == _vector_path(fmt, w, h, kind).read_bytes()


@pytest.mark.parametrize(("fmt", "w", "h", "kind"), GOLDEN)
def test_decoder_reads_c_vectors(fmt: str, w: int, h: int, kind: str) -> None:
    qtype, width, height, pixels = decode_quic(_vector_path(fmt, w, h, kind).read_bytes())
    assert (qtype, width, height) == (TYPE_OF[fmt], w, h)
    np.testing.assert_array_equal(pixels, expected(golden_input(fmt, w, h, kind), fmt))


def test_header_layout() -> None:
    data = encode_quic(picture("mixed", 3, 5), "rgba")
    assert data[:4] == b"QUIC"
    assert struct.unpack_from("<5I", data) == (0x43495551, 0, QuicType.RGBA, 5, 3)
    assert len(data) % 4 == 0
    assert data[-4:] == bytes(4)  # flush's read-ahead word


# -- round trips ------------------------------------------------------------------------------

SIZES = [(1, 1), (1, 7), (7, 1), (2, 2), (3, 3), (5, 4), (31, 3), (64, 17), (129, 9), (2049, 3), (4100, 2)]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("w", "h"), SIZES)
def test_round_trip_sizes(fmt: str, w: int, h: int) -> None:
    for kind in ("mixed", "text"):
        arr = as_format(picture(kind, h, w), fmt)
        qtype, width, height, pixels = decode_quic(encode_quic(arr, fmt))
        assert (qtype, width, height) == (TYPE_OF[fmt], w, h)
        np.testing.assert_array_equal(pixels, expected(arr, fmt))


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_contents(fmt: str) -> None:
    rng = np.random.default_rng(4)
    h, w = 37, 53
    colours = rng.integers(0, 1 << 32, 4, dtype=np.uint64).astype(np.uint32)
    runs = rng.integers(1, 40, h * w)
    pictures = [
        rng.integers(0, 1 << 32, (h, w), dtype=np.uint64).astype(np.uint32),  # noise
        np.full((h, w), 0x12345678, np.uint32),  # flat
        np.repeat(colours[rng.integers(0, 4, runs.size)], runs)[: h * w].reshape(h, w),  # runs
        np.repeat(rng.integers(0, 1 << 32, (1, w), dtype=np.uint64).astype(np.uint32), h, 0),  # repeated row
        (np.arange(h * w, dtype=np.uint32) * 0x01010101).reshape(h, w),  # ramps
    ]
    for px in pictures:
        arr = as_format(px, fmt)
        np.testing.assert_array_equal(decode_quic(encode_quic(arr, fmt))[3], expected(arr, fmt))


def test_rgb24_packed_input_and_pad_byte_ignored() -> None:
    px = picture("mixed", 9, 11)
    data = encode_quic(px, "rgb24")
    packed = px.view(np.uint8).reshape(9, 11, 4)[:, :, :3]
    assert encode_quic(packed, "rgb24") == data
    # RGB32 differs from RGB24 only in the type word, and ignores the fourth byte.
    rgb32 = encode_quic(px ^ np.uint32(0xFF000000), "rgb32")
    assert rgb32[:8] + struct.pack("<I", QuicType.RGB24) + rgb32[12:] == data


def test_round_trip_images_1080p() -> None:
    Image = pytest.importorskip("PIL.Image")
    path = IMAGES / "desktop_1080.png"
    if not path.exists():
        pytest.skip("benchmark images not available")
    rgba = np.asarray(Image.open(path).convert("RGBA"))
    px = np.ascontiguousarray(rgba[:, :, [2, 1, 0, 3]]).view("<u4")[:, :, 0]
    for fmt in ("rgb32", "rgba"):
        qtype, width, height, pixels = decode_quic(encode_quic(px, fmt))
        assert (qtype, width, height) == (TYPE_OF[fmt], 1920, 1080)
        np.testing.assert_array_equal(pixels, expected(px, fmt))


def test_encoder_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        encode_quic(np.zeros((2, 2), np.uint32), "jpeg")
    with pytest.raises(ValueError):
        encode_quic(np.zeros((2, 2), np.uint8), "rgb32")
    with pytest.raises(ValueError):
        encode_quic(np.zeros((2, 2), np.uint32), "gray")
    with pytest.raises(ValueError):
        encode_quic(np.zeros((0, 2), np.uint32), "rgb32")


# -- numba == pure ----------------------------------------------------------------------------


@pytest.mark.parametrize("plain_ints", [False, True])
def test_numba_and_pure_identical(monkeypatch: pytest.MonkeyPatch, plain_ints: bool) -> None:
    """The interpreted kernels give the same bytes (with numpy scalars, and with the plain ints
    they use when numba is missing)."""
    cases = []
    for fmt in FORMATS:
        for kind, (w, h) in (("mixed", (13, 6)), ("text", (21, 5))):
            arr = as_format(picture(kind, h, w), fmt)
            data = encode_quic(arr, fmt)
            cases.append((fmt, arr, data))
    for name, obj in list(vars(quic_kernels).items()):
        if hasattr(obj, "py_func"):  # every compiled kernel, helpers included
            monkeypatch.setattr(quic_kernels, name, pure(obj))
    if plain_ints:
        monkeypatch.setattr(quic_kernels, "_U", int)
        monkeypatch.setattr(quic_kernels, "_I", int)
    for fmt, arr, data in cases:
        assert encode_quic(arr, fmt) == data, fmt
        np.testing.assert_array_equal(decode_quic(data)[3], expected(arr, fmt))


# -- hostile input ----------------------------------------------------------------------------


def _header(qtype: int = QuicType.RGB32, w: int = 4, h: int = 4, magic: int = 0x43495551, version: int = 0) -> bytes:
    return struct.pack("<5I", magic, version, qtype, w, h)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"QUIC",
        _header(),  # header only: nothing to read ahead
        _header(magic=0x43495552) + bytes(64),
        _header(version=0x10000) + bytes(64),
        _header(qtype=0) + bytes(64),
        _header(qtype=6) + bytes(64),
        _header(qtype=0xFFFFFFFF) + bytes(64),
        _header(w=0) + bytes(64),
        _header(h=0) + bytes(64),
        _header(w=0x80000000, h=1) + bytes(64),
        _header(w=65535, h=65535) + bytes(64),  # over MAX_PIXELS
        _header(w=16384, h=16384) + bytes(64),  # allowed size, far too little data for it
    ],
)
def test_bad_headers_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_quic(data)


def test_max_pixels_is_honoured() -> None:
    data = encode_quic(picture("mixed", 10, 10), "rgb32")
    with pytest.raises(ProtocolError):
        decode_quic(data, max_pixels=99)
    assert decode_quic(data, max_pixels=100)[1:3] == (10, 10)
    assert MAX_PIXELS >= 1920 * 1080


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_truncation_raises_protocol_error(fmt: str) -> None:
    data = encode_quic(as_format(picture("text", 6, 23), fmt), fmt)
    for n in range(len(data)):
        with pytest.raises(ProtocolError):
            decode_quic(data[:n])


def test_trailing_bytes_are_ignored() -> None:
    px = picture("mixed", 7, 9)
    data = encode_quic(px, "rgb32")
    np.testing.assert_array_equal(decode_quic(data + b"\x01\x02\x03")[3], expected(px, "rgb32"))
    np.testing.assert_array_equal(decode_quic(data + bytes(40))[3], expected(px, "rgb32"))


def test_run_past_row_end_is_rejected() -> None:
    """Some one-bit corruption of a stream with runs makes a run overflow its row ("wrong RLE")."""
    px = np.full((3, 40), 0x00102030, np.uint32)
    px[:, ::9] = 0x00FFFFFF
    data = encode_quic(px, "rgb32")
    reasons = set()
    for bit in range(20 * 8, len(data) * 8):
        bad = bytearray(data)
        bad[bit // 8] ^= 0x80 >> (bit % 8)
        try:
            decode_quic(bytes(bad))
        except ProtocolError as exc:
            reasons.add(exc.reason)
    assert any("run" in r for r in reasons), reasons


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([1, 2, 3, 4, 5]), st.integers(1, 40), st.integers(1, 12), st.binary(max_size=300))
def test_random_payload_decodes_or_raises_protocol_error(qtype: int, w: int, h: int, payload: bytes) -> None:
    try:
        _, width, height, pixels = decode_quic(_header(qtype, w, h) + payload)
    except ProtocolError:
        return
    assert pixels.shape == (height, width) == (h, w)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_quic(data)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(FORMATS), st.sampled_from(["mixed", "text"]), st.data())
def test_mutated_streams_decode_or_raise_protocol_error(fmt: str, kind: str, data: st.DataObject) -> None:
    stream = bytearray(encode_quic(as_format(picture(kind, 7, 19), fmt), fmt))
    for _ in range(data.draw(st.integers(1, 4))):
        k = data.draw(st.integers(20, len(stream) - 1))
        stream[k] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(20, len(stream)))
    try:
        decode_quic(bytes(stream[:cut]))
    except ProtocolError:
        pass
