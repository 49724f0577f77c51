"""SPICE LZ4 image streams: round trips, the block layout the client expects, hostile input."""

from __future__ import annotations

import struct

import lz4.block
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.codecs.lz4 import BLOCK_BYTES, LZ4_FORMATS, decode_lz4, encode_lz4
from spiceserver.errors import ProtocolError
from spiceserver.proto.enums import BitmapFmt

FORMATS = [BitmapFmt.BIT16, BitmapFmt.BIT24, BitmapFmt.BIT32, BitmapFmt.RGBA]


def blocks_of(stream: bytes) -> list[bytes]:
    pos, out = 2, []
    while pos < len(stream):
        (n,) = struct.unpack_from(">I", stream, pos)
        out.append(stream[pos + 4 : pos + 4 + n])
        pos += 4 + n
    assert pos == len(stream)
    return out


def client_decode(stream: bytes, width: int, height: int) -> bytes:
    """What LZ4_decompress_safe_continue into one buffer yields: each block with all prior output as prefix."""
    out = b""
    for blk in blocks_of(stream):
        out += lz4.block.decompress(blk, uncompressed_size=width * height * 4, dict=out[-65536:])
    return out


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("width", "height"), [(1, 1), (3, 5), (17, 2), (255, 3), (1, 300)])
@pytest.mark.parametrize("top_down", [True, False])
def test_round_trip_small(fmt: int, width: int, height: int, top_down: bool) -> None:
    bpp = LZ4_FORMATS[fmt]
    rng = np.random.default_rng(width * 1000 + height)
    stride = width * bpp + 3  # padded rows: padding must be dropped
    raw = rng.integers(0, 256, stride * height, dtype=np.uint8).tobytes()
    stream = encode_lz4(raw, width, height, fmt, stride, top_down=top_down)
    assert stream[0] == (1 if top_down else 0)
    assert stream[1] == fmt
    got_fmt, got_td, rows = decode_lz4(stream, width, height)
    assert (got_fmt, got_td) == (fmt, top_down)
    expected = b"".join(raw[r * stride : r * stride + width * bpp] for r in range(height))
    assert rows == expected
    assert client_decode(stream, width, height) == expected


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("content", ["random", "flat", "gradient"])
def test_round_trip_1080p(fmt: int, content: str) -> None:
    width, height = 1920, 1080
    bpp = LZ4_FORMATS[fmt]
    rng = np.random.default_rng(7)
    if content == "random":
        raw = rng.integers(0, 256, (height, width * bpp), dtype=np.uint8)
    elif content == "flat":
        raw = np.full((height, width * bpp), 0x5A, np.uint8)
    else:
        raw = (np.arange(width * bpp, dtype=np.uint32)[None, :] + np.arange(height)[:, None]).astype(np.uint8)
    stream = encode_lz4(raw, width, height, fmt, width * bpp)
    if content != "random":
        assert len(stream) < raw.nbytes // 50
    blocks = blocks_of(stream)
    assert len(blocks) > 1  # several blocks of whole rows
    assert all(len(b) > 0 for b in blocks)
    _, _, rows = decode_lz4(stream, width, height)
    assert rows == raw.tobytes()
    assert client_decode(stream, width, height) == raw.tobytes()


def test_blocks_hold_whole_rows_and_reference_history() -> None:
    width, height, bpp = 700, 400, 4
    row = np.random.default_rng(3).integers(0, 256, width * bpp, dtype=np.uint8)
    raw = np.tile(row, (height, 1))  # every row repeats the previous: later blocks refer back
    stream = encode_lz4(raw, width, height, BitmapFmt.BIT32, width * bpp)
    rows_per_block = BLOCK_BYTES // (width * bpp)
    blocks = blocks_of(stream)
    assert len(blocks) == -(-height // rows_per_block)
    # the second block cannot be decoded without the first block's output as dictionary
    with pytest.raises(lz4.block.LZ4BlockError):
        lz4.block.decompress(blocks[1], uncompressed_size=BLOCK_BYTES)
    assert decode_lz4(stream, width, height)[2] == raw.tobytes()


def test_decoder_accepts_streaming_and_independent_blocks() -> None:
    width, height = 64, 64
    raw = np.random.default_rng(5).integers(0, 4, width * height * 4, dtype=np.uint8).tobytes()
    # independent blocks of arbitrary (not row aligned) sizes are valid for the client's decoder
    parts = [raw[:1000], raw[1000:9000], raw[9000:]]
    stream = bytes((1, BitmapFmt.RGBA)) + b"".join(
        struct.pack(">I", len(c)) + c for c in (lz4.block.compress(p, store_size=False) for p in parts)
    )
    assert decode_lz4(stream, width, height) == (BitmapFmt.RGBA, True, raw)


def test_ndarray_input_uses_its_memory() -> None:
    arr = np.arange(6 * 4, dtype=np.uint32).reshape(4, 6)
    stream = encode_lz4(arr, 6, 4, BitmapFmt.BIT32, 24)
    assert decode_lz4(stream, 6, 4)[2] == arr.tobytes()
    view = np.arange(10 * 4, dtype=np.uint32).reshape(4, 10)[:, 2:8]  # non-contiguous
    stream = encode_lz4(view, 6, 4, BitmapFmt.BIT32, 24)
    assert decode_lz4(stream, 6, 4)[2] == np.ascontiguousarray(view).tobytes()


def test_encoder_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        encode_lz4(b"\0" * 16, 2, 2, BitmapFmt.BIT8, 4)
    with pytest.raises(ValueError):
        encode_lz4(b"", 0, 2, BitmapFmt.BIT32, 0)
    with pytest.raises(ValueError):
        encode_lz4(b"\0" * 16, 2, 2, BitmapFmt.BIT32, 4)
    with pytest.raises(ValueError):
        encode_lz4(b"\0" * 15, 2, 2, BitmapFmt.BIT32, 8)


GOOD = encode_lz4(bytes(range(256)) * 4, 16, 16, BitmapFmt.BIT32, 64)


@pytest.mark.parametrize(
    ("data", "width", "height"),
    [
        (b"", 16, 16),
        (b"\x01", 16, 16),
        (b"\x01\x08", 16, 16),  # no block at all
        (b"\x01\x07\x00\x00", 16, 16),  # short block header
        (b"\x01\x05" + GOOD[2:], 16, 16),  # 8BIT is not an LZ4 format
        (b"\x01\x08\x00\x00\x10\x00" + b"\x00" * 8, 16, 16),  # block size beyond the data
        (b"\x01\x08\x00\x00\x00\x01\x00", 16, 16),  # empty block
        (b"\x01\x08\x00\x00\x00\x00", 16, 16),  # zero-size block
        (b"\x01\x08\x00\x00\x00\x02\xff\xff", 16, 16),  # corrupt block
        (GOOD, 16, 15),  # more output than the image holds
        (GOOD, 16, 17),  # less output than the image needs
        (GOOD + b"\x00\x00", 16, 16),  # trailing garbage
        (GOOD, 0, 16),
        (GOOD, 100000, 100000),  # too large
    ],
)
def test_hostile_streams_raise_protocol_error(data: bytes, width: int, height: int) -> None:
    with pytest.raises(ProtocolError):
        decode_lz4(data, width, height)


@settings(max_examples=300)
@given(st.binary(max_size=200), st.integers(1, 40), st.integers(1, 40))
def test_fuzz_decode_raises_only_protocol_error(data: bytes, width: int, height: int) -> None:
    try:
        decode_lz4(data, width, height)
    except ProtocolError:
        pass


@settings(max_examples=100)
@given(st.binary(min_size=0, max_size=64), st.integers(0, 60))
def test_fuzz_mutated_valid_stream(noise: bytes, where: int) -> None:
    data = bytearray(GOOD)
    for i, b in enumerate(noise):
        data[(where + i * 7) % len(data)] ^= b
    try:
        fmt, _, rows = decode_lz4(bytes(data), 16, 16)
    except ProtocolError:
        return
    assert len(rows) == 16 * 16 * LZ4_FORMATS[fmt]
