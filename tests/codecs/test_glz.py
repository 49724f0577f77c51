"""GLZ: the shared window dictionary against our mirror of spice-gtk's decoder window.

Golden digests are spice-server's ``glz_encode`` (glz-encoder.c, 2021-06, one chunk per image)
on the same inputs and dictionary, compiled in a scratch harness; our dictionary recycles its
segment slots in the same order, so whole sequences agree byte for byte.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.codecs import glz_kernels, lz_kernels
from spiceserver.codecs.glz import (
    GLZ_HEADER_SIZE,
    GLZ_TYPES,
    GlzDecoderWindow,
    GlzDictionary,
    decode_glz,
    encode_glz,
)
from spiceserver.codecs.lz import LzImageType
from spiceserver.errors import ProtocolError
from tests.codecs.test_lz import as_type, expected, load_bgrx, purify, synthetic

T = LzImageType
TYPES = sorted(GLZ_TYPES)


def glz_codes(data: bytes) -> list[tuple[int, int, int]]:
    """Every match of a GLZ stream as (image distance, pixel offset, length); walks all passes."""
    t = data[8] & 15
    w, h = struct.unpack_from(">II", data, 9)
    n = w * h
    bias = {T.RGB16: 1}.get(t, 0)
    lit = 2 if t == T.RGB16 else 3
    pos, codes = GLZ_HEADER_SIZE, []
    for pass_ in range(2 if t == T.RGBA else 1):
        if pass_ == 1:
            bias, lit = 2, 1
        op = 0
        while op < n:
            c = data[pos]
            pos += 1
            if c < 32:
                op += c + 1
                pos += (c + 1) * lit
                continue
            length, long_ofs, ofs = c >> 5, (c >> 4) & 1, c & 15
            if length == 7:
                while True:
                    length += data[pos]
                    pos += 1
                    if data[pos - 1] != 255:
                        break
            ofs += data[pos] << 4
            code = data[pos + 1]
            pos += 2
            extra, dist = code >> 6, 0
            if not long_ofs:
                dist = code & 63
                for i in range(extra):
                    dist += data[pos + i] << (6 + 8 * i)
            else:
                ofs += (code & 31) << 12
                for i in range(extra):
                    dist += data[pos + i] << (8 * i)
            pos += extra
            if long_ofs and code & 32:
                ofs += data[pos] << 17
                pos += 1
            codes.append((dist, ofs, length + bias))
            op += length + bias
    assert pos == len(data)
    return codes


def header(data: bytes) -> tuple[Any, ...]:
    return struct.unpack_from(">IIBIIIQI", data)


def rows_for(t: int, px: np.ndarray) -> tuple[np.ndarray, int, int]:
    if t == T.RGBA:
        px = px | ((((px >> 8) & 255) ^ ((px >> 3) & 0xF0)) << 24)
    return as_type(px, t)


# -- single images ---------------------------------------------------------------------------


@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("content", ["random", "flat", "runs", "gradient", "text"])
def test_round_trip_single_images(t: LzImageType, content: str) -> None:
    d, win = GlzDictionary(1 << 20), GlzDecoderWindow()
    for i, (w, h) in enumerate([(1, 1), (2, 1), (1, 3), (3, 2), (5, 1), (7, 3), (17, 9), (33, 5), (64, 40), (255, 3)]):
        rows, width, stride = rows_for(t, synthetic(content, h, w, i))
        top_down = bool(i % 2)
        data = encode_glz(d, rows, t, width, h, stride, top_down)
        assert header(data) == (
            0x20205A4C,
            0x00010001,
            t | (0x10 if top_down else 0),
            w,
            h,
            stride,
            i,
            i,
        )  # nothing evicted: the head is image 0
        img = decode_glz(win, data)
        assert (img.lz_type, img.width, img.height, img.top_down, img.image_id) == (t, w, h, top_down, i)
        np.testing.assert_array_equal(img.pixels, expected(rows, t, width))


def test_desktop_256_and_1080_match_spice_server() -> None:
    for name, size, digest in (
        ("desktop_256", 12755, "9a6563d3115fdadc"),
        ("desktop_1080", 229117, "a2b60c49b0b5206c"),
    ):
        px = load_bgrx(name)
        h, w = px.shape
        data = encode_glz(GlzDictionary(1 << 24), px, T.RGB32, w, h, w * 4)
        assert (len(data), hashlib.sha256(data).hexdigest()[:16]) == (size, digest)
        np.testing.assert_array_equal(decode_glz(GlzDecoderWindow(), data).pixels, px)


# -- sequences through one window ------------------------------------------------------------

# (window pixels, [(type, crop y, crop x, h, w)]) -> spice-server's stream sizes and digest of all
SEQUENCE = (
    20000,
    [(8, 0, 0, 60, 100), (8, 3, 0, 60, 100), (7, 0, 7, 50, 90), (8, 10, 20, 70, 110), (9, 0, 0, 40, 64),
     (9, 2, 1, 40, 64), (6, 5, 5, 33, 77), (6, 5, 6, 33, 77), (8, 1, 0, 60, 100), (8, 100, 100, 120, 150),
     (8, 101, 100, 120, 150), (8, 0, 0, 60, 100)],
)  # fmt: skip
SEQUENCE_C = ([2103, 274, 1482, 2447, 2071, 683, 893, 207, 2142, 3847, 3824, 2119], "8679acfa362ab2fc")


def sequence_streams(dictionary: GlzDictionary) -> tuple[list[bytes], list[np.ndarray]]:
    px = load_bgrx("desktop_256")
    streams, wants = [], []
    for t, y, x, h, w in SEQUENCE[1]:
        rows, width, stride = rows_for(t, np.ascontiguousarray(px[y : y + h, x : x + w]))
        streams.append(encode_glz(dictionary, rows, t, width, h, stride))
        wants.append(expected(rows, t, width))
    return streams, wants


def test_sequence_matches_spice_server_and_decodes() -> None:
    d = GlzDictionary(SEQUENCE[0])
    streams, wants = sequence_streams(d)
    assert [len(s) for s in streams] == SEQUENCE_C[0]
    assert hashlib.sha256(b"".join(streams)).hexdigest()[:16] == SEQUENCE_C[1]
    win = GlzDecoderWindow()
    cross, referenced = 0, set()
    for i, (s, want) in enumerate(zip(streams, wants, strict=True)):
        _, _, _, _, _, _, image_id, head_dist = header(s)
        assert image_id == i
        # the server refers only to images the client still holds, within its announced window
        refs = {image_id - dist for dist, _, _ in glz_codes(s) if dist}
        assert refs <= set(win.images), (i, refs, sorted(win.images))
        assert all(r >= image_id - head_dist for r in refs)
        cross += sum(1 for dist, _, _ in glz_codes(s) if dist)
        referenced |= refs
        np.testing.assert_array_equal(decode_glz(win, s).pixels, want)
        # after each image the client keeps exactly the images of the server's window
        assert min(win.images) == image_id - head_dist
    assert cross >= 50 and len(referenced) >= 4  # the sequence really uses earlier images


def test_eviction_follows_the_window_size() -> None:
    d, win = GlzDictionary(10000), GlzDecoderWindow()
    for i in range(30):
        w, h = [(40, 30), (100, 50), (9, 9), (99, 1)][i % 4]
        rows = synthetic("text", h, w, i % 3)
        s = encode_glz(d, rows, T.RGB32, w, h, w * 4)
        head_dist = header(s)[7]
        ids = d.images_in_window
        assert ids[-1] == i and ids[0] == i - head_dist
        assert d.window_pixels <= 10000
        decode_glz(win, s)
        assert sorted(win.images) == ids


def test_images_must_fit_the_window() -> None:
    d = GlzDictionary(100)
    assert d.fits(9, 11) and not d.fits(10, 10)
    with pytest.raises(ValueError):
        encode_glz(d, np.zeros((10, 10), np.uint32), T.RGB32, 10, 10, 40)
    assert d.images_in_window == [] and d.last_image_id == 0
    with pytest.raises(ValueError):
        encode_glz(d, np.zeros((3, 3), np.uint32), T.PLT8, 3, 3, 3)
    with pytest.raises(ValueError):
        GlzDictionary((1 << 25) + 1)


def test_reconnect_starts_a_fresh_dictionary() -> None:
    px = synthetic("text", 30, 40)
    d = GlzDictionary(1 << 16)
    first = [encode_glz(d, px, T.RGB32, 40, 30, 160) for _ in range(3)]
    again = GlzDictionary(1 << 16)  # a reconnecting client: new dictionary, new client window
    assert encode_glz(again, px, T.RGB32, 40, 30, 160) == first[0]
    assert header(first[2])[6] == 2
    win = GlzDecoderWindow()
    np.testing.assert_array_equal(decode_glz(win, first[0]).pixels, px & 0xFFFFFF)


def test_missing_reference_is_an_error_not_a_hang() -> None:
    d = GlzDictionary(1 << 16)
    px = synthetic("text", 30, 40)
    first = encode_glz(d, px, T.RGB32, 40, 30, 160)
    second = encode_glz(d, px, T.RGB32, 40, 30, 160)
    assert any(dist for dist, _, _ in glz_codes(second))
    with pytest.raises(ProtocolError):
        decode_glz(GlzDecoderWindow(), second)  # the client never got image 0
    win = GlzDecoderWindow()
    decode_glz(win, first)
    np.testing.assert_array_equal(decode_glz(win, second).pixels, px & 0xFFFFFF)


# -- numba == pure ---------------------------------------------------------------------------


def test_numba_and_pure_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    def run() -> list[Any]:
        d, win = GlzDictionary(4000), GlzDecoderWindow()
        out: list[Any] = []
        for i in range(8):
            t = TYPES[i % len(TYPES)]
            rows, width, stride = rows_for(t, synthetic(["text", "runs", "gradient"][i % 3], 21, 37, i % 2))
            s = encode_glz(d, rows, t, width, 21, stride)
            out += [s, decode_glz(win, s).pixels]
        return out

    compiled = run()
    purify(monkeypatch, lz_kernels, glz_kernels)
    assert not hasattr(glz_kernels.glz_compress_rgb, "py_func")
    pure = run()
    for a, b in zip(compiled, pure, strict=True):
        if isinstance(a, bytes):
            assert a == b
        else:
            np.testing.assert_array_equal(a, b)


def test_large_images_fill_the_ring_and_are_referenced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Images past the kernel's copy block (the window ring is filled behind the coder) and a
    window small enough that the ring wraps: later images still refer to earlier ones correctly,
    compiled and interpreted alike."""
    desk = load_bgrx("desktop_1080")

    def run() -> list[bytes]:
        d, win, out = GlzDictionary(3 * 160 * 120 + 1), GlzDecoderWindow(), []
        for i in range(6):
            t = (T.RGB32, T.RGBA, T.RGB16)[i // 2]  # references need the same type
            crop = np.ascontiguousarray(desk[200 + 3 * i : 320 + 3 * i, 300 : 300 + 160])
            rows, width, stride = rows_for(t, crop)
            s = encode_glz(d, rows, t, width, 120, stride)
            np.testing.assert_array_equal(decode_glz(win, s).pixels, expected(rows, t, width))
            out.append(s)
        return out

    compiled = run()
    assert all(sum(1 for dist, _, _ in glz_codes(s) if dist) >= 5 for s in compiled[1::2])
    purify(monkeypatch, lz_kernels, glz_kernels)
    assert run() == compiled


# -- hostile input ---------------------------------------------------------------------------


def _glz_header(t: int, w: int, h: int, image_id: int = 0, dist: int = 0) -> bytes:
    bpp = {6: 2, 7: 3}.get(t, 4)
    return struct.pack(">IIBIIIQI", 0x20205A4C, 0x00010001, t | 0x10, w, h, w * bpp, image_id, dist)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TYPES), st.integers(1, 20), st.integers(1, 10), st.integers(0, 3), st.binary(max_size=300))
def test_random_payload_decodes_or_raises_protocol_error(t: int, w: int, h: int, image_id: int, payload: bytes) -> None:
    win = GlzDecoderWindow()
    win.add(0, np.arange(50, dtype=np.uint32), 0)
    try:
        decode_glz(win, _glz_header(t, w, h, image_id) + payload)
    except ProtocolError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_glz(GlzDecoderWindow(), data)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(TYPES), st.data())
def test_truncated_and_mutated_streams(t: int, data: st.DataObject) -> None:
    rows, width, stride = rows_for(t, synthetic("runs", 9, 14, 1))
    good = encode_glz(GlzDictionary(1000), rows, t, width, 9, stride)
    cut = data.draw(st.integers(0, len(good) - 1))
    with pytest.raises(ProtocolError):
        decode_glz(GlzDecoderWindow(), good[:cut])
    with pytest.raises(ProtocolError):
        decode_glz(GlzDecoderWindow(), good + b"\0")
    bad = bytearray(good)
    bad[data.draw(st.integers(0, len(good) - 1))] ^= data.draw(st.integers(1, 255))
    try:
        decode_glz(GlzDecoderWindow(), bytes(bad))
    except ProtocolError:
        pass


@pytest.mark.parametrize(
    "hdr",
    [
        _glz_header(8, 0xFFFF, 0xFFFF),
        _glz_header(5, 4, 4),  # palette GLZ: spice-server never sends it
        _glz_header(11, 4, 4),
        _glz_header(8, 0, 4),
        _glz_header(8, 4, 4, 1 << 63),
        struct.pack(">IIBIIIQI", 0x20205A4C, 0x00010001, 8, 4, 4, 15, 0, 0),
    ],
)
def test_bad_headers(hdr: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_glz(GlzDecoderWindow(), hdr + b"\0" * 16)
