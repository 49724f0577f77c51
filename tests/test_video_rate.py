"""VP8/VP9/H.264 bit-rate control on scripted frame sequences, as libspice's gstreamer-encoder.c behaves.

Time is an argument: every scenario is a script of (now_ms, mm-time, frame size) steps, so the
results are exact and nothing depends on the machine's speed. The numbers in the comments are
worked out from the C (``set_bit_rate``, ``update_next_frame_mm_time``, the report scoring).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.worker.video_rate import (
    BITRATE_MAX_STEP,
    DEFAULT_BIT_RATE,
    MIN_BIT_RATE,
    UP_INTERVAL_MS,
    BitRateControl,
    BitRateStatus,
    bit_rate_cap,
)

U32 = 0xFFFFFFFF
NO_AUDIO = U32
W, H, FPS = 640, 360, 25
CAP = bit_rate_cap(W, H, FPS)  # 18_432_000
START = 4_000_000
MM0 = 100_000


def new(bit_rate: int | None = START, **kw: int | bool) -> BitRateControl:
    args: dict[str, int | bool] = {"width": W, "height": H, "source_fps": FPS}
    args.update(kw)
    return BitRateControl(bit_rate, 0, **args)  # type: ignore[arg-type]


@dataclass
class Script:
    """Offers a frame every ``dt`` ms; an admitted one is "encoded" at ``size(rc)`` bytes."""

    rc: BitRateControl
    size: Callable[[BitRateControl], int] = lambda rc: rc.target_bit_rate // 8 // FPS
    t: int = 0
    mm: int = MM0
    dt: int = 40
    encode_ms: float = 0.0
    sent: list[tuple[int, int]] = field(default_factory=list)  # (mm, size)
    offered: int = 0

    def frame(self, size: int | None = None) -> int | None:
        self.offered += 1
        out = None
        if self.rc.admit(self.t, self.mm):
            out = self.size(self.rc) if size is None else size
            self.rc.frame_encoded(out, self.t, self.encode_ms)
            self.sent.append((self.mm, out))
        self.t += self.dt
        self.mm = (self.mm + self.dt) & U32
        return out

    def run(self, ms: int) -> None:
        end = self.t + ms
        while self.t < end:
            self.frame()

    def report(self, *, delay: int, drops: int = 0, frames: int = 5, audio: int = NO_AUDIO, window: int = 5) -> None:
        start = self.sent[-window][0] if len(self.sent) >= window else self.sent[0][0]
        self.rc.client_report(frames, drops, start, self.sent[-1][0], delay, audio, self.t)


def check_valid(rc: BitRateControl, w: int = W, h: int = H) -> None:
    # the cap moves with the source fps
    assert min(MIN_BIT_RATE, bit_rate_cap(w, h, 1)) <= rc.target_bit_rate <= max(MIN_BIT_RATE, bit_rate_cap(w, h, 1000))
    assert rc.bit_rate > 0
    assert rc.effective_bit_rate >= 0
    assert rc.min_playback_delay() >= 0
    s = rc.stats
    assert 0 <= s.frames_encoded <= s.frames_admitted
    assert s.vbuffer_free <= s.vbuffer_size
    assert min(s.admission_drops, s.server_drops, s.bit_rate_decreases, s.bit_rate_increases, s.bytes_encoded) >= 0


# --- start ---------------------------------------------------------------------------------------


def test_a_new_stream_starts_at_its_rate_with_the_encoder_a_third_above() -> None:
    rc = new()
    assert rc.target_bit_rate == START
    assert rc.bit_rate == int(START * 4 / 3)  # SPICE_GST_BITRATE_MARGIN
    assert rc.status == BitRateStatus.INCREASING
    s = rc.stats
    # the search range is [0, cap] (the C's first set_bit_rate sets min to the old rate, 0) and the
    # step a tenth of it, at most 1 Mbit/s
    assert (s.min_bit_rate, s.max_bit_rate) == (0, CAP)
    assert rc._bit_rate_step == BITRATE_MAX_STEP
    assert s.vbuffer_size == START * 300 // 1000 // 8 and s.vbuffer_free == 0
    assert (s.bit_rate_decreases, s.bit_rate_increases, s.encoder_bit_rate_changes) == (0, 0, 0)
    assert rc.pop_playback_delay_request() is None
    check_valid(rc)


def test_the_start_is_capped_and_defaults_to_8_mbits() -> None:
    assert new(None).target_bit_rate == DEFAULT_BIT_RATE
    assert new(0).target_bit_rate == DEFAULT_BIT_RATE
    small = BitRateControl(50_000_000, 0, width=64, height=64, source_fps=30)
    assert small.target_bit_rate == 64 * 64 * 32 * 30 // 10
    assert new(1000).target_bit_rate == MIN_BIT_RATE


# --- the virtual buffer ----------------------------------------------------------------------------


def test_slow_start_drops_frames_until_the_first_one_is_paid_for() -> None:
    s = Script(new())
    assert s.frame(60_000) == 60_000
    # the buffer starts empty: 60 KB at 4 Mbit/s take 120 ms = 3 periods, plus half a period
    assert s.rc.stats.vbuffer_free == -60_000
    # the playback delay: the largest + the average frame (60 KB + 30 KB, the anchor counting as
    # an empty frame) at 4 Mbit/s = 180 ms
    assert s.rc.pop_playback_delay_request() == 180
    assert s.rc.pop_playback_delay_request() is None
    assert [s.frame(20_000) for _ in range(5)] == [None, None, None, 20_000, 20_000]
    assert s.sent[1][0] == MM0 + 160
    # refilled by 160 ms x 4 Mbit/s = 80 KB, less the 20 KB frame: even
    assert s.rc.stats.admission_drops == 3
    check_valid(s.rc)


def test_frames_within_the_budget_are_never_dropped() -> None:
    s = Script(new(), size=lambda rc: 15_000)  # 3 Mbit/s at 25 fps, under the 4 Mbit/s target
    s.frame(10_000)
    s.run(10_000)
    assert s.rc.stats.admission_drops <= 1  # the slow start's
    assert s.rc.stats.vbuffer_free > 0
    assert s.rc.target_bit_rate == START  # uses less than it has: no increase
    check_valid(s.rc)


def test_a_huge_frame_lowers_the_encoder_rate_instead_of_dropping_for_long() -> None:
    s = Script(new())
    s.run(1_000)
    assert s.rc.bit_rate == int(START * 4 / 3)
    s.frame(300_000)  # 600 ms of data at 4 Mbit/s: more than the 1/3 s of drops allowed
    assert s.rc.bit_rate == START  # the encoder is brought down to the network rate
    assert s.rc.stats.encoder_bit_rate_changes == 1
    assert s.rc.pop_playback_delay_request() is not None
    first = len(s.sent) - 1
    s.run(1_500)
    # the 600 ms debt is paid in gaps of at most a third of a second (then the next 40 ms frame)
    gaps = [b[0] - a[0] for a, b in zip(s.sent[first:], s.sent[first + 1 :], strict=False)]
    assert max(gaps) == 360 and gaps[0] == 360
    assert gaps[-5:] == [40] * 5  # paid off


def test_a_slow_encoder_delays_the_next_frame_and_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    s = Script(new(), size=lambda rc: 10_000, encode_ms=70.0)
    with caplog.at_level("WARNING", logger="spiceserver.worker"):
        s.run(2_000)
    assert "too slow" in caplog.text
    gaps = {b[0] - a[0] for a, b in zip(s.sent[5:], s.sent[6:], strict=False)}
    assert min(gaps) >= 40 and s.rc.stats.admission_drops > 10
    assert 60 <= s.rc.stats.avg_encode_ms <= 70


# --- server drops ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("drops", "expected"), [(1, 3_000_000), (24, 3_000_000), (25, 2_000_000), (60, 2_000_000)])
def test_server_drops_reduce_or_cut_the_rate_at_the_next_frame(drops: int, expected: int) -> None:
    s = Script(new())
    s.run(1_000)
    for _ in range(drops):
        s.rc.server_drop(s.t)
    assert s.rc.target_bit_rate == START  # nothing yet
    assert s.frame() is None  # the frame after the drops is dropped too
    # at least a second's worth of drops (source fps): cut in two, else divided by 4/3
    assert s.rc.target_bit_rate == expected
    assert s.rc.status == BitRateStatus.DECREASING
    # the rate that was too high bounds the search from above now
    assert s.rc.stats.max_bit_rate == START - MIN_BIT_RATE
    assert s.rc.stats.server_drops == drops and s.rc.stats.bit_rate_decreases == 1
    assert s.frame() is not None or s.frame() is not None
    check_valid(s.rc)


# --- increases -------------------------------------------------------------------------------------


def test_without_client_reports_the_rate_rises_every_2_s_when_used() -> None:
    s = Script(new())
    s.frame()
    s.run(UP_INTERVAL_MS - 80)
    assert s.rc.target_bit_rate == START
    s.run(200)
    assert s.rc.target_bit_rate == START + BITRATE_MAX_STEP
    assert s.rc.stats.bit_rate_increases == 1
    s.run(2_100)
    assert s.rc.target_bit_rate == START + 2 * BITRATE_MAX_STEP
    # the encoder follows once the network rate overtakes its margin
    assert s.rc.bit_rate == int((START + 2 * BITRATE_MAX_STEP) * 4 / 3)
    check_valid(s.rc)


def test_with_client_reports_only_good_reports_raise_the_rate() -> None:
    s = Script(new())
    s.run(3_000)
    s.report(delay=400)  # the first report: from now on, the client drives increases
    assert s.rc.target_bit_rate == START + BITRATE_MAX_STEP  # a good margin after 2 s: up
    s.run(3_000)
    assert s.rc.target_bit_rate == START + BITRATE_MAX_STEP  # no report, no increase
    s.report(delay=400)
    assert s.rc.target_bit_rate == START + 2 * BITRATE_MAX_STEP


# --- client reports --------------------------------------------------------------------------------


def reported(first: int, second: int, **kw: int) -> BitRateControl:
    s = Script(new(**kw))
    s.run(1_000)
    s.report(delay=first)
    s.run(200)
    s.report(delay=second)
    return s.rc


STEP_DOWN = START - BITRATE_MAX_STEP


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (400, 400, START),  # steady: score 0 (no increase before 2 s)
        (400, 390, START),  # a small dip: score 0
        (400, 330, STEP_DOWN),  # < 3/4 of the max falling by > 15 %: 0 + 1, while increasing
        (400, 290, 3_000_000),  # < 3/4 of the max (1) falling by > 20 % (+2): reduce by 4/3
        (400, 190, 2_000_000),  # < half the max (2) + falling fast (2): cut in two
        (400, 110, 2_000_000),  # < 0.3 of the max (3) + falling fast: cut
        (50, 10, 2_000_000),  # < 0.3 x the 40 ms minimum margin (3) + falling: cut
        (30, 35, START),  # improving: score 0 whatever the margin
        (-100, -120, 1_000_000),  # late: both reports cut (the max margin is still 0)
    ],
)
def test_report_scores(first: int, second: int, expected: int) -> None:
    assert reported(first, second).target_bit_rate == expected


def test_a_report_with_drops_cuts_and_older_reports_are_then_ignored() -> None:
    s = Script(new())
    s.run(1_000)
    old_window = s.sent[-3][0]
    s.report(delay=400, drops=2)
    assert s.rc.target_bit_rate == 2_000_000 and s.rc.status == BitRateStatus.DECREASING
    # a report about frames sent before that decrease says nothing new
    s.rc.client_report(5, 5, old_window, s.sent[-1][0], -50, NO_AUDIO, s.t)
    assert s.rc.target_bit_rate == 2_000_000
    s.run(400)
    s.report(delay=400, drops=1)
    assert s.rc.target_bit_rate == 1_000_000


def test_audio_starved_by_video_steps_the_rate_down() -> None:
    s = Script(new())
    s.run(1_000)
    s.report(delay=400, audio=300)
    s.run(200)
    s.report(delay=400, audio=100)  # audio margin < half its max, and 1.25 x 100 < 400
    assert s.rc.target_bit_rate == STEP_DOWN


def link(capacity: int, seconds: int, start: int = 8_000_000) -> tuple[Script, list[int], list[str]]:
    """A link of ``capacity`` bit/s: each second the client reports late frames and drops when the
    target is above it, a good margin otherwise."""
    s = Script(new(start))
    targets, states = [], []
    for _second in range(seconds):
        s.run(1_000)
        over = s.rc.target_bit_rate > capacity
        s.report(delay=-20 if over else 400, drops=2 if over else 0)
        targets.append(s.rc.target_bit_rate)
        states.append(s.rc.status.value)
        check_valid(s.rc)
    return s, targets, states


def test_aimd_settles_below_the_link_capacity() -> None:
    """2.6 Mbit/s: 8 -> 4 -> 2 Mbit/s, one probe up to 2.79, back to 2 (the last good rate, now the
    minimum); the range [2, 2.79 - 0.125] is then narrower than 4/3: STABLE at 2 Mbit/s for the
    2 minutes of UP_CLIENT_STABLE, then a probe in 128 kbit/s steps every 2 s until 2.66 fails."""
    s, targets, states = link(2_600_000, 140)
    assert targets[:4] == [4_000_000, 2_000_000, 2_000_000, 2_786_892]
    assert states[4] == "stable"
    assert set(targets[4:124]) == {2_000_000}
    assert targets[124:133] == [2_131_072, 2_131_072, 2_262_144, 2_262_144, 2_393_216, 2_393_216, 2_524_288, 2_524_288, 2_655_360]
    assert targets[133] == 2_000_000 and states[133] == "stable"
    assert s.rc.stats.max_bit_rate == 2_655_360 - MIN_BIT_RATE


def test_aimd_oscillates_when_the_cut_lands_on_the_minimum() -> None:
    """3 Mbit/s: every cut is bounded below by the last good rate (2 Mbit/s) and the failing rate
    less 128 kbit/s stays above 4/3 of it, so, as in the C, the rate keeps probing between 2 Mbit/s
    and the first step above the link; it stays below the link most of the time."""
    _s, targets, states = link(3_000_000, 120)
    assert "stable" not in states
    assert min(targets[6:]) == 2_000_000 and max(targets[6:]) <= 3_000_000 + MIN_BIT_RATE
    over = sum(t > 3_000_000 for t in targets[6:])
    assert over <= len(targets) // 10


# --- inputs ----------------------------------------------------------------------------------------


def test_heavy_dropping_brings_the_encoder_rate_down_in_two_moves() -> None:
    s = Script(new())
    s.run(1_000)
    s.report(delay=400)
    s.run(200)
    s.report(delay=330)  # one step down: 4 -> 2.95 Mbit/s; the encoder stays at 5.33
    assert s.rc.target_bit_rate == STEP_DOWN
    # set_bit_rate only raises the encoder's rate; a lower one comes from heavy dropping
    assert s.rc.bit_rate == int(START * 4 / 3) and s.rc.stats.encoder_bit_rate_changes == 0
    s.frame(400_000)  # more than 1/3 s of debt: first down to 4/3 of the network rate
    assert s.rc.bit_rate == int(STEP_DOWN * 4 / 3)
    s.run(2_000)
    s.frame(400_000)  # again: now down to the network rate itself
    assert s.rc.bit_rate == STEP_DOWN
    assert s.rc.stats.encoder_bit_rate_changes == 2


@pytest.mark.parametrize(("dynamic", "changes"), [(False, [False, True]), (True, [True, True])])
def test_the_encoder_rate_moves_only_by_more_than_5_percent_unless_dynamic(dynamic: bool, changes: list[bool]) -> None:
    """``set_video_bit_rate``: codecs that cannot change their rate on the fly (PyAV's) are
    reopened only for a change above 5 % (a private hook: no public path makes a change this small
    on purpose)."""
    rc = new(encoder_rate_is_dynamic=dynamic)
    got = []
    for factor in (1.04, 1.2):
        before = rc.bit_rate
        rc._set_video_bit_rate(int(before * factor))
        got.append(rc.bit_rate != before)
    assert got == changes


def test_source_fps_and_round_trip_feed_the_minimum_delay() -> None:
    s = Script(new(roundtrip_ms=100), size=lambda rc: 20_000)
    s.run(1_000)
    base = s.rc.min_playback_delay()
    # send time of (max + average frame) = 40 KB at 4 Mbit/s = 80 ms, + 1.1 x 50 ms of latency
    assert base == 80 + 55
    s.rc.roundtrip_ms = 300
    assert s.rc.min_playback_delay() == 80 + 165
    s.rc.source_fps = 10
    assert s.rc.source_fps == 10


@pytest.mark.parametrize(
    "call",
    [
        lambda rc: rc.admit(float("nan"), 0),
        lambda rc: rc.admit(0, -1),
        lambda rc: rc.admit(0, 1 << 32),
        lambda rc: rc.frame_encoded(100, 0),  # nothing admitted
        lambda rc: rc.server_drop(float("inf")),
        lambda rc: rc.client_report(-1, 0, 0, 0, 0, NO_AUDIO, 0),
        lambda rc: rc.client_report(0, 1 << 32, 0, 0, 0, NO_AUDIO, 0),
        lambda rc: rc.client_report(0, 0, 0, 0, 1 << 31, NO_AUDIO, 0),
        lambda rc: rc.client_report(0, 0, 0, 0, 0, -1, 0),
        lambda rc: setattr(rc, "source_fps", 0),
        lambda rc: setattr(rc, "roundtrip_ms", -1),
    ],
)
def test_bad_inputs_are_value_errors(call: Callable[[BitRateControl], object]) -> None:
    with pytest.raises(ValueError):
        call(new())


@pytest.mark.parametrize("kw", [{"width": 0}, {"height": 70_000}, {"source_fps": 0}, {"roundtrip_ms": -1}])
def test_bad_construction(kw: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        new(**kw)
    with pytest.raises(ValueError):
        new(-1)


def test_frame_encoded_checks_its_arguments() -> None:
    rc = new()
    assert rc.admit(0, MM0)
    for size, ms in ((0, 0.0), (-1, 0.0), (100, -1.0), (100, float("nan"))):
        with pytest.raises(ValueError):
            rc.frame_encoded(size, 0, ms)
    rc.frame_encoded(100, 0, 1.0)
    with pytest.raises(ValueError):
        rc.frame_encoded(100, 0, 1.0)  # one admit, one frame


@settings(max_examples=30, deadline=None)
@given(offset=st.integers(0, U32))
def test_mm_time_wraps_around(offset: int) -> None:
    """The same script with the mm-clock started anywhere, across the 2^32 wrap included, admits the
    same frames and ends at the same rates."""

    def play(mm0: int) -> tuple[list[int], int, int]:
        s = Script(new(), mm=mm0, size=lambda rc: rc.bit_rate // 8 // FPS)
        s.frame(60_000)
        s.run(3_000)
        s.report(delay=400)
        s.run(1_000)
        s.rc.server_drop(s.t)
        s.run(3_000)
        s.report(delay=100, drops=0)
        return [(mm - mm0) & U32 for mm, _ in s.sent], s.rc.target_bit_rate, s.rc.bit_rate

    assert play(offset) == play(MM0)
    assert play(U32 - 1_000) == play(MM0)


OPS = st.one_of(
    st.tuples(st.just("frame"), st.integers(1, 400_000), st.integers(0, 100)),
    st.tuples(st.just("skip"), st.integers(1, 500), st.just(0)),
    st.tuples(st.just("drop"), st.integers(1, 40), st.just(0)),
    st.tuples(st.just("report"), st.integers(-(1 << 31), (1 << 31) - 1), st.integers(0, 3)),
    st.tuples(st.just("fps"), st.integers(1, 60), st.just(0)),
    st.tuples(st.just("rtt"), st.integers(0, 5_000), st.just(0)),
)


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(OPS, max_size=120), start=st.integers(0, 60_000_000), w=st.integers(1, 4096), h=st.integers(1, 2160))
def test_any_sequence_keeps_the_state_valid(ops: list[tuple[str, int, int]], start: int, w: int, h: int) -> None:
    s = Script(BitRateControl(start, 0, width=w, height=h))
    for op, a, b in ops:
        if op == "frame":
            s.encode_ms = b
            s.frame(a)
        elif op == "skip":
            s.t += a
            s.mm = (s.mm + a) & U32
        elif op == "drop":
            for _ in range(a):
                s.rc.server_drop(s.t)
        elif op == "report" and s.sent:
            start_mm = s.sent[max(0, len(s.sent) - 5)][0]
            audio = NO_AUDIO if b == 0 else b * 100
            s.rc.client_report(5, b, start_mm, s.sent[-1][0], a, audio, s.t)
        elif op == "fps":
            s.rc.source_fps = a
        elif op == "rtt":
            s.rc.roundtrip_ms = a
        check_valid(s.rc, w, h)
        s.rc.pop_playback_delay_request()
