"""RecordRing: libspice's 8192-sample ring, half-full before the first read, oldest lost on overflow."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.channels.record_ring import RECORD_SAMPLES_SIZE, SAMPLE_BYTES, RecordRing


def samples(start: int, n: int) -> bytes:
    """n distinct stereo samples numbered from start (u32 each, little endian)."""
    return b"".join(((start + i) & 0xFFFFFFFF).to_bytes(4, "little") for i in range(n))


def test_size_is_libspice() -> None:
    assert RECORD_SAMPLES_SIZE == 8192 and RecordRing().size == 8192


def test_nothing_until_half_full() -> None:
    r = RecordRing()
    r.put(samples(0, 4095))
    assert r.read(10_000) == b""
    r.put(samples(4095, 1))
    assert r.read(10) == samples(0, 10)
    assert r.read(10_000) == samples(10, 4086)
    assert r.read(10) == b""
    r.put(samples(4096, 3))  # once primed, short bursts come out
    assert r.read(10) == samples(4096, 3)


def test_overflow_loses_the_oldest_and_reports_once() -> None:
    r = RecordRing(size=16)
    assert r.put(samples(0, 10)) == 0
    assert r.put(samples(10, 10)) == 4
    assert r.overflowed and r.take_overflow() and not r.take_overflow()
    assert r.put(samples(20, 3)) == 3
    assert not r.overflowed  # reported already
    assert r.lost == 7
    assert r.read(100) == samples(7, 16)
    r.reset()
    r.put(samples(0, 17))
    assert r.take_overflow()  # reported again after a reset


def test_a_put_larger_than_the_ring_keeps_the_newest() -> None:
    r = RecordRing(size=8)
    assert r.put(samples(0, 20)) == 12
    assert r.read(100) == samples(12, 8)


def test_partial_samples_are_kept_until_completed() -> None:
    r = RecordRing(size=4)
    data = samples(0, 3)
    r.put(data[:1])
    r.put(data[1:6])
    assert r.available == 1
    r.put(data[6:])
    assert r.available == 3
    assert r.read(3) == data


def test_bad_size_and_zero_reads() -> None:
    with pytest.raises(ValueError):
        RecordRing(size=1)
    r = RecordRing(size=4)
    r.put(samples(0, 4))
    assert r.read(0) == b""


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(2, 64),
    ops=st.lists(st.one_of(st.integers(0, 300).map(lambda n: ("put", n)), st.integers(0, 80).map(lambda n: ("read", n))), max_size=40),
    odd=st.integers(0, 3),
)
def test_ring_is_a_bounded_fifo(size: int, ops: list[tuple[str, int]], odd: int) -> None:
    """Against a model: what comes out is in order, the newest `size` of what was unread, nothing else."""
    r = RecordRing(size=size)
    model: list[int] = []  # unread sample numbers
    nxt = 0
    lost = 0
    reports = 0
    for op, n in ops:
        if op == "put":
            data = samples(nxt, n)
            # split at a byte that is not a sample boundary to exercise the partial path
            cut = min(len(data), odd)
            got = r.put(data[:cut]) + r.put(data[cut:])
            model += range(nxt, nxt + n)
            nxt += n
            drop = max(0, len(model) - size)
            assert got == drop
            lost += drop
            del model[:drop]
            reports += r.take_overflow()
        else:
            out = r.read(n)
            if nxt < size // 2:
                assert out == b""
            else:
                k = min(n, len(model))
                assert out == b"".join(i.to_bytes(4, "little") for i in model[:k])
                del model[:k]
        assert r.available == len(model) <= size
        assert len(r._buf) == size * SAMPLE_BYTES
    assert r.lost == lost
    assert reports == (1 if lost else 0)


def test_unprimed_ring_hands_out_at_once() -> None:
    r = RecordRing(size=16, prime=False)
    assert r.read(10) == b""
    r.put(samples(0, 1))
    assert r.read(10) == samples(0, 1)
    r.put(samples(1, 20))
    assert r.lost == 4 and r.read(100) == samples(5, 16)
