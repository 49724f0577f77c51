"""MJPEG stream frames: standalone baseline 4:2:0 JFIF straight from our uint32 canvas pixels."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from spiceserver.codecs.jpeg import decode_jpeg  # Pillow, as the tests' independent decoder
from spiceserver.codecs.mjpeg import encode_mjpeg_frame
from spiceserver.worker.mjpeg_rate import QUALITY_LADDER


def channels(px: np.ndarray) -> np.ndarray:
    return ((px[..., None] >> np.array([16, 8, 0], dtype=np.uint32)) & 255).astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((channels(a) - channels(b)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def random_frame(h: int = 120, w: int = 160, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1 << 24, (h, w), dtype=np.uint32)


def smooth_frame(h: int = 120, w: int = 160) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    r = (128 + 100 * np.sin(x / 13)).astype(np.uint32)
    g = (128 + 100 * np.cos(y / 17)).astype(np.uint32)
    b = ((x + y) % 256).astype(np.uint32)
    out: np.ndarray = (r << 16) | (g << 8) | b
    return out


def markers(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, segment payload) up to SOS, then EOI; enough to check the frame's structure."""
    assert data[:2] == b"\xff\xd8"
    out: list[tuple[int, bytes]] = [(0xD8, b"")]
    pos = 2
    while True:
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        out.append((marker, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
        if marker == 0xDA:  # SOS: entropy-coded data follows up to EOI
            break
    assert data[-2:] == b"\xff\xd9"
    out.append((0xD9, b""))
    return out


# PSNR floors per quality. Uniform noise over the full range is the worst case for 4:2:0 (an
# unrelated noise frame would score ~7.7 dB); the smooth frame is video-like.
RANDOM_FLOOR = {20: 10.5, 50: 11.3, 80: 12.0}
SMOOTH_FLOOR = {20: 30.0, 50: 33.5, 80: 36.0}


@pytest.mark.parametrize("quality", sorted(RANDOM_FLOOR))
def test_random_frame_decodes_within_bound(quality: int) -> None:
    px = random_frame()
    out = decode_jpeg(encode_mjpeg_frame(px, quality), 160, 120)
    assert psnr(px, out) > RANDOM_FLOOR[quality]


@pytest.mark.parametrize("quality", sorted(SMOOTH_FLOOR))
def test_smooth_frame_decodes_within_bound(quality: int) -> None:
    px = smooth_frame()
    out = decode_jpeg(encode_mjpeg_frame(px, quality), 160, 120)
    assert psnr(px, out) > SMOOTH_FLOOR[quality]


def test_quality_ladder_trades_size_for_fidelity() -> None:
    px = smooth_frame()
    frames = [encode_mjpeg_frame(px, q) for q in QUALITY_LADDER]
    sizes = [len(f) for f in frames]
    scores = [psnr(px, decode_jpeg(f)) for f in frames]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert scores == sorted(scores)


def test_frame_is_a_standalone_baseline_420_jfif() -> None:
    data = encode_mjpeg_frame(smooth_frame(17, 33), 50)
    segs = markers(data)
    kinds = [m for m, _ in segs]
    assert kinds[1] == 0xE0 and segs[1][1].startswith(b"JFIF\0")  # APP0 JFIF
    assert 0xDB in kinds and 0xC4 in kinds  # quantisation and Huffman tables in the frame itself
    assert 0xC0 in kinds and not {0xC1, 0xC2, 0xC3} & set(kinds)  # baseline DCT only
    sof = next(p for m, p in segs if m == 0xC0)
    precision, h, w, ncomp = struct.unpack(">BHHB", sof[:6])
    assert (precision, h, w, ncomp) == (8, 17, 33, 3)
    sampling = [sof[6 + 3 * i + 1] for i in range(3)]
    assert sampling == [0x22, 0x11, 0x11]  # 4:2:0


def test_channels_keep_their_place() -> None:
    for rgb in (0xFF0000, 0x00FF00, 0x0000FF, 0x808080):
        px = np.full((16, 16), rgb, dtype=np.uint32)
        out = decode_jpeg(encode_mjpeg_frame(px, 80))
        assert np.abs(channels(out) - channels(px)).max() <= 4, hex(rgb)


def test_top_byte_is_ignored() -> None:
    px = smooth_frame()
    assert encode_mjpeg_frame(px | np.uint32(0xFF000000), 50) == encode_mjpeg_frame(px, 50)


def test_rows_are_encoded_in_the_order_given() -> None:
    px = np.zeros((32, 16), dtype=np.uint32)
    px[:16] = 0xFFFFFF
    out = decode_jpeg(encode_mjpeg_frame(px, 80))
    assert channels(out)[:12].min() > 200 and channels(out)[20:].max() < 50


def test_strided_view_equals_contiguous() -> None:
    canvas = random_frame(400, 800, seed=7)
    view = canvas[10:370, 20:660]
    assert not view.flags.c_contiguous
    assert encode_mjpeg_frame(view, 50) == encode_mjpeg_frame(np.ascontiguousarray(view), 50)


@pytest.mark.parametrize("make", [lambda c: c[::-1][5:90, 3:70], lambda c: c[:, ::2], lambda c: c.T[:50, :40]])
def test_other_layouts_equal_contiguous(make: object) -> None:
    canvas = random_frame(100, 120, seed=3)
    view = make(canvas)  # type: ignore[operator]
    assert encode_mjpeg_frame(view, 30) == encode_mjpeg_frame(np.ascontiguousarray(view), 30)


def test_encoding_is_deterministic_and_leaves_input_alone() -> None:
    px = random_frame()
    before = px.copy()
    assert encode_mjpeg_frame(px, 70) == encode_mjpeg_frame(px, 70)
    assert np.array_equal(px, before)


@pytest.mark.parametrize(
    ("pixels", "quality"),
    [
        (np.zeros((4, 4), dtype=np.int32), 50),
        (np.zeros((4, 4, 4), dtype=np.uint8), 50),
        (np.zeros(16, dtype=np.uint32), 50),
        (np.zeros((0, 4), dtype=np.uint32), 50),
        (np.zeros((4, 0), dtype=np.uint32), 50),
        (np.zeros((4, 4), dtype=np.uint32), 0),
        (np.zeros((4, 4), dtype=np.uint32), 101),
        (np.zeros((4, 4), dtype=np.uint32), 50.0),
        (np.zeros((4, 4), dtype=np.uint32), True),
    ],
)
def test_bad_input_raises_value_error(pixels: np.ndarray, quality: int) -> None:
    with pytest.raises(ValueError):
        encode_mjpeg_frame(pixels, quality)


def test_odd_and_tiny_sizes() -> None:
    for h, w in ((1, 1), (1, 7), (9, 1), (15, 17)):
        px = smooth_frame(h, w)
        out = decode_jpeg(encode_mjpeg_frame(px, 80), w, h)
        assert out.shape == (h, w)
