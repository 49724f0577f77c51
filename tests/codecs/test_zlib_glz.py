"""ZLIB_GLZ_RGB: GLZ through zlib deflate (spice-server zlib-encoder.c), inflated as spice-gtk does."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.codecs.glz import GlzDecoderWindow, GlzDictionary, encode_glz
from spiceserver.codecs.lz import LzImageType
from spiceserver.codecs.zlib_glz import (
    MIN_GLZ_SIZE_FOR_ZLIB,
    ZLIB_DEFAULT_COMPRESSION_LEVEL,
    decode_zlib_glz,
    deflate_glz,
    encode_zlib_glz,
    inflate_glz,
)
from spiceserver.errors import ProtocolError
from tests.codecs.test_lz import synthetic


def test_round_trip_through_the_window() -> None:
    d, win = GlzDictionary(1 << 16), GlzDecoderWindow()
    for i in range(4):
        px = synthetic("text", 40 + i, 60, i % 2)
        glz = encode_glz(d, px, LzImageType.RGB32, 60, 40 + i, 240)
        packed = encode_zlib_glz(glz)
        assert packed is not None and len(packed) < len(glz)
        assert packed[:1] == b"\x78"  # zlib wrapper, as deflateInit
        assert packed == zlib.compress(glz, ZLIB_DEFAULT_COMPRESSION_LEVEL)
        img = decode_zlib_glz(win, packed, len(glz))
        np.testing.assert_array_equal(img.pixels, px & 0xFFFFFF)
        assert img.image_id == i


def test_plain_glz_when_small_or_incompressible() -> None:
    assert encode_zlib_glz(b"\0" * (MIN_GLZ_SIZE_FOR_ZLIB - 1)) is None
    assert encode_zlib_glz(b"\0" * MIN_GLZ_SIZE_FOR_ZLIB) is not None
    noise = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    assert encode_zlib_glz(noise) is None
    assert inflate_glz(deflate_glz(noise), len(noise)) == noise


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (zlib.compress(b"abc" * 50), 149),  # inflates to more than glz_data_size
        (zlib.compress(b"abc" * 50), 151),  # to less
        (zlib.compress(b"abc" * 50)[:-3], 150),  # unfinished
        (zlib.compress(b"abc" * 50) + b"x", 150),  # trailing bytes
        (b"\x78\x9c garbage", 10),
        (zlib.compress(b"abc"), 0),
        (zlib.compress(b"abc"), 1 << 40),
    ],
)
def test_bad_zlib_data(data: bytes, size: int) -> None:
    with pytest.raises(ProtocolError):
        inflate_glz(data, size)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 5000))
def test_random_input_raises_protocol_error_only(data: bytes, size: int) -> None:
    try:
        decode_zlib_glz(GlzDecoderWindow(), data, size)
    except ProtocolError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_deflated_garbage_glz_raises_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_zlib_glz(GlzDecoderWindow(), zlib.compress(payload, 3), len(payload))
