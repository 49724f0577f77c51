"""PcmFramer: any chunking of PCM gives the same 1920-byte frames, stamped when their last byte arrived."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.channels.audio_frames import FRAME_BYTES, FRAME_SAMPLES, PcmFramer


def pcm(nbytes: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(nbytes))


def test_frame_is_10ms_stereo_s16() -> None:
    assert FRAME_SAMPLES == 480 and FRAME_BYTES == 1920


def test_exact_frames_and_stamps() -> None:
    f = PcmFramer()
    data = pcm(3 * FRAME_BYTES)
    out = f.write(data, 1000)
    assert [t for _, t in out] == [1000, 1000, 1000]
    assert b"".join(fr for fr, _ in out) == data
    assert f.pending == 0 and f.flush() == []


def test_stamp_is_when_the_last_byte_arrived() -> None:
    f = PcmFramer()
    data = pcm(2 * FRAME_BYTES)
    assert f.write(data[:1000], 10) == []
    assert f.write(data[1000:FRAME_BYTES], 20) == [(data[:FRAME_BYTES], 20)]
    assert f.write(data[FRAME_BYTES:-1], 30) == []
    assert f.write(data[-1:], 40) == [(data[FRAME_BYTES:], 40)]


def test_odd_lengths_are_kept_until_completed() -> None:
    f = PcmFramer()
    data = pcm(FRAME_BYTES + 6)
    out = []
    for i in range(0, len(data), 3):  # 3-byte pieces: never whole stereo samples
        out += f.write(memoryview(data)[i : i + 3], i)
    assert len(out) == 1 and out[0][0] == data[:FRAME_BYTES]
    assert f.pending == 6


def test_flush_pads_with_silence_and_keeps_the_last_stamp() -> None:
    f = PcmFramer()
    f.write(pcm(FRAME_BYTES + 10), 5)
    f.write(pcm(3, seed=1), 9)  # a partial sample too
    [(frame, t)] = f.flush()
    assert t == 9 and len(frame) == FRAME_BYTES
    assert frame[:13] == pcm(FRAME_BYTES + 10)[FRAME_BYTES:] + pcm(3, seed=1)
    assert frame[13:] == bytes(FRAME_BYTES - 13)
    assert f.pending == 0 and f.flush() == []


def test_reset_forgets_the_tail() -> None:
    f = PcmFramer()
    f.write(pcm(100), 1)
    f.reset()
    assert f.pending == 0 and f.flush() == []


def test_a_long_write_keeps_the_newest_frames() -> None:
    f = PcmFramer(max_frames=4)
    f.write(pcm(100), 1)
    data = pcm(10 * FRAME_BYTES, seed=3)
    out = f.write(data, 2)
    assert len(out) == 4 and f.dropped == 6
    whole = pcm(100) + data
    assert [fr for fr, _ in out] == [whole[k * FRAME_BYTES : (k + 1) * FRAME_BYTES] for k in range(6, 10)]
    assert f.pending == 100  # the tail is still exact
    assert f.flush()[0][0][:100] == whole[-100:]


def test_bad_bound() -> None:
    with pytest.raises(ValueError):
        PcmFramer(max_frames=0)


@settings(max_examples=300, deadline=None)
@given(total=st.integers(0, 5 * FRAME_BYTES + 77), cuts=st.lists(st.integers(0, 5 * FRAME_BYTES + 77), max_size=30))
def test_any_chunking_gives_the_same_frames(total: int, cuts: list[int]) -> None:
    data = pcm(total, seed=total)
    bounds = sorted({0, total, *(c for c in cuts if c <= total)})
    f = PcmFramer()
    frames: list[tuple[bytes, int]] = []
    for i, (a, b) in enumerate(pairwise(bounds)):
        frames += f.write(data[a:b], i)
        assert f.pending < FRAME_BYTES
        assert f.pending == b % FRAME_BYTES
    whole = total // FRAME_BYTES
    assert [fr for fr, _ in frames] == [data[k * FRAME_BYTES : (k + 1) * FRAME_BYTES] for k in range(whole)]
    # each frame is stamped by the write that brought its last byte
    for k, (_, t) in enumerate(frames):
        end = (k + 1) * FRAME_BYTES
        assert t == next(i for i, b in enumerate(bounds[1:]) if b >= end)
    tail = f.flush()
    if total % FRAME_BYTES:
        assert tail[0][0] == data[whole * FRAME_BYTES :] + bytes(FRAME_BYTES - total % FRAME_BYTES)
    else:
        assert tail == []
    assert f.dropped == 0
