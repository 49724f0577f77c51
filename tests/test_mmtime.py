"""The multimedia clock (spiceserver.mmtime): time, only-raising latency, ownership, listeners
from any thread; and a raised latency reaching a linked client as MAIN_MULTI_MEDIA_TIME."""

from __future__ import annotations

import threading

import pytest

from spiceserver.mmtime import MM_TIME_DELTA_MS, MM_TIME_MASK, ClockBusyError, ClockUpdate, MediaClock, mm_diff
from spiceserver.proto.messages import main as mm
from tests.conftest import Running
from tests.support.client import connect


class FakeTime:
    """A settable monotonic source, in seconds."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Owner:
    """A recording clock owner (the playback channel's part)."""

    def __init__(self) -> None:
        self.requests: list[tuple[int, str]] = []

    def on_latency_request(self, ms: int, reason: str) -> None:
        self.requests.append((ms, reason))


def recording(clock: MediaClock) -> list[ClockUpdate]:
    got: list[ClockUpdate] = []
    clock.add_listener(got.append)
    return got


# --- time ---------------------------------------------------------------------------------------


def test_now_counts_ms_from_the_epoch() -> None:
    t = FakeTime(100.0)
    clock = MediaClock(t)
    assert clock.now() == 0
    t.t = 101.2345
    assert clock.now() == 1234
    assert MediaClock(t, epoch=1.0).now() == 100234


def test_now_wraps_at_32_bits_and_differences_survive_the_wrap() -> None:
    t = FakeTime(0.0)
    clock = MediaClock(t, epoch=0.0)
    t.t = 4294967.25  # binary-exact seconds: 46 ms before the wrap
    before = clock.now()
    assert before == MM_TIME_MASK - 45
    t.t = 4294967.3125
    after = clock.now()
    assert after == 16  # wrapped
    assert mm_diff(after, before) == 62
    assert mm_diff(before, after) == -62
    assert mm_diff(5, 5) == 0


def test_stamp_is_now_but_never_zero() -> None:
    t = FakeTime(0.0)
    clock = MediaClock(t, epoch=0.0)
    assert clock.now() == 0
    assert clock.stamp() == 1  # 0 means "not stamped" to the stream marshaller and spice-gtk
    t.t = 2.5
    assert clock.stamp() == clock.now() == 2500
    t.t = (MM_TIME_MASK + 1) / 1000  # exactly at the wrap
    assert clock.now() == 0 and clock.stamp() == 1


def test_init_time_uses_the_constant_delta_and_client_time_the_latency() -> None:
    t = FakeTime(0.0)
    clock = MediaClock(t, epoch=0.0)
    t.t = 0.1  # 100 ms: now - 400 wraps below zero
    assert clock.init_time() == (100 - MM_TIME_DELTA_MS) & MM_TIME_MASK
    assert clock.client_time() == clock.init_time()
    clock.raise_latency(1000, "test")
    assert clock.init_time() == (100 - 400) & MM_TIME_MASK  # INIT keeps libspice's 400
    assert clock.client_time() == (100 - 1000) & MM_TIME_MASK


def test_real_clock_is_monotonic() -> None:
    clock = MediaClock()
    a = clock.now()
    b = clock.now()
    assert mm_diff(b, a) >= 0


# --- latency ------------------------------------------------------------------------------------


def test_latency_starts_at_400_and_only_rises() -> None:
    t = FakeTime(0.0)
    clock = MediaClock(t, epoch=0.0)
    got = recording(clock)
    assert clock.latency == MM_TIME_DELTA_MS == 400
    assert not clock.raise_latency(300, "lower")
    assert not clock.raise_latency(400, "equal")
    assert got == []
    t.t = 5.0
    assert clock.raise_latency(650, "stream 1")
    assert clock.latency == 650
    assert got == [ClockUpdate(time=5000 - 650, latency=650, reason="stream 1")]
    assert not clock.raise_latency(500, "stream 2")
    assert clock.latency == 650 and len(got) == 1
    with pytest.raises(ValueError):
        clock.raise_latency(-1)
    with pytest.raises(ValueError):
        clock.raise_latency(1 << 32)


def test_a_failing_listener_does_not_stop_the_others() -> None:
    clock = MediaClock(FakeTime(), epoch=0.0)

    def bad(update: ClockUpdate) -> None:
        raise RuntimeError("boom")

    clock.add_listener(bad)
    got = recording(clock)
    assert clock.raise_latency(500)
    assert [u.latency for u in got] == [500]


def test_removed_listener_is_not_called() -> None:
    clock = MediaClock(FakeTime(), epoch=0.0)
    got: list[ClockUpdate] = []
    remove = clock.add_listener(got.append)
    remove()
    remove()  # twice is harmless
    clock.raise_latency(500)
    assert got == []


def test_listeners_called_from_any_thread_in_order() -> None:
    clock = MediaClock()
    calls: list[tuple[int, int]] = []  # (latency, thread id)

    def listener(update: ClockUpdate) -> None:
        calls.append((update.latency, threading.get_ident()))

    clock.add_listener(listener)
    n_threads, per_thread = 8, 200
    start = threading.Barrier(n_threads)

    def work(k: int) -> None:
        start.wait()
        for i in range(per_thread):
            clock.raise_latency(401 + i * n_threads + k, f"thread {k}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    latencies = [lat for lat, _ in calls]
    assert latencies == sorted(latencies) and len(set(latencies)) == len(latencies)  # every update a rise, in order
    assert latencies[-1] == clock.latency == 400 + n_threads * per_thread
    assert {tid for _, tid in calls} <= {th.ident for th in threads}  # called on the raising threads


# --- ownership ----------------------------------------------------------------------------------


def test_owner_takes_requests_and_hand_back_resets_to_400() -> None:
    t = FakeTime(0.0)
    clock = MediaClock(t, epoch=0.0)
    got = recording(clock)
    clock.raise_latency(600, "before sound")
    assert clock.owner is None
    owner = Owner()
    clock.take(owner)
    clock.take(owner)  # again: nothing changes
    assert clock.owner is owner
    t.t = 1.0
    # while owned: no listener calls, the latency stays, every request (even a lower one) goes to the owner
    assert clock.raise_latency(900, "stream a")
    assert clock.raise_latency(100, "stream b")
    assert owner.requests == [(900, "stream a"), (100, "stream b")]
    assert clock.latency == 600
    assert [u.reason for u in got] == ["before sound"]
    assert clock.now() == 1000 and clock.stamp() == 1000  # the time base does not change
    # hand back: latency back to 400, listeners told now - 400
    t.t = 2.0
    assert clock.release(owner, "playback stopped")
    assert clock.owner is None and clock.latency == 400
    assert got[-1] == ClockUpdate(time=2000 - 400, latency=400, reason="playback stopped")
    assert not clock.release(owner)  # a second hand-back does nothing
    assert len(got) == 2
    assert clock.raise_latency(450, "after") and got[-1].latency == 450


def test_only_one_owner_and_a_stranger_cannot_release() -> None:
    clock = MediaClock(FakeTime(), epoch=0.0)
    a, b = Owner(), Owner()
    clock.take(a)
    with pytest.raises(ClockBusyError):
        clock.take(b)
    assert not clock.release(b)
    assert clock.owner is a
    assert clock.release(a)
    clock.take(b)
    assert clock.owner is b


def test_hand_over_between_threads() -> None:
    clock = MediaClock()
    got = recording(clock)
    owner = Owner()
    taken = threading.Event()

    def playback() -> None:
        clock.take(owner)
        taken.set()

    th = threading.Thread(target=playback)
    th.start()
    th.join()
    assert taken.is_set() and clock.owner is owner
    clock.raise_latency(700, "main thread")
    assert owner.requests == [(700, "main thread")]
    th = threading.Thread(target=lambda: clock.release(owner))
    th.start()
    th.join()
    assert clock.owner is None and [u.latency for u in got] == [400]


# --- through the server -------------------------------------------------------------------------


async def test_raised_latency_reaches_a_linked_client(running: Running) -> None:
    clock = running.server._ctx.clock
    s = await connect(running.ep)
    lo = clock.now()
    assert mm_diff(lo - MM_TIME_DELTA_MS, s.init.multi_media_time) >= 0  # INIT: now - 400
    public = running.server.mm_time()
    assert 0 <= mm_diff(clock.now(), public) < 1000  # the public call reads the same clock
    # raised from another thread, as a worker's encoder would
    before = clock.now()
    th = threading.Thread(target=clock.raise_latency, args=(1500, "test stream"))
    th.start()
    th.join()
    after = clock.now()
    msg = await s.main.expect(mm.MultiMediaTime, skip=(mm.Name, mm.Uuid))
    assert 0 <= mm_diff(msg.time, before - 1500) <= mm_diff(after, before)
    # a lower request sends nothing; the next raise does
    clock.raise_latency(1000, "lower")
    clock.raise_latency(1600, "higher")
    msg = await s.main.expect(mm.MultiMediaTime)
    assert mm_diff(clock.now() - 1600, msg.time) >= 0
    assert mm_diff(msg.time, before - 1600) >= 0
    await s.main.close()
