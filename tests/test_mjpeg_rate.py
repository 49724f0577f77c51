"""MJPEG rate control on scripted frame sequences, as libspice's mjpeg-encoder.c behaves.

Time is an argument: every scenario is a script of (now_ms, mm-time, frame size) steps, so the
results are exact and nothing depends on the machine's speed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.errors import ProtocolError
from spiceserver.worker.mjpeg_rate import (
    DEFAULT_HIGH_START_BIT_RATE,
    DEFAULT_LOW_START_BIT_RATE,
    MAX_CLIENT_PLAYBACK_DELAY_MS,
    MJPEG_MAX_FPS,
    MJPEG_MIN_FPS,
    QUALITY_LADDER,
    MjpegRateControl,
    report_means_unsupported,
    starting_bit_rate,
)

U32 = 0xFFFFFFFF
NO_AUDIO = U32
BYTE_RATE = 1_000_000
BIT_RATE = BYTE_RATE * 8
# bytes per frame at each quality: at 1 MB/s, q70 gives exactly 10 fps and q80 only 5
SIZES = {20: 10_000, 30: 14_000, 40: 20_000, 50: 25_000, 60: 50_000, 70: 100_000, 80: 200_000}
MM0 = 100_000


@dataclass
class Script:
    """Feeds frames every ``dt`` ms; a frame that is admitted is "encoded" at its quality's size."""

    rc: MjpegRateControl
    sizes: dict[int, int] = field(default_factory=lambda: dict(SIZES))
    t: int = 0
    mm: int = MM0
    dt: int = 40
    encoded: list[tuple[int, int, int]] = field(default_factory=list)  # (t, mm, quality)

    def frame(self) -> int | None:
        quality = None
        if self.rc.admit(self.t, self.mm):
            quality = self.rc.quality()
            self.rc.frame_encoded(self.sizes[quality], self.t)
            self.encoded.append((self.t, self.mm, quality))
        self.t += self.dt
        self.mm = (self.mm + self.dt) & U32
        return quality

    def until(self, t: int) -> None:
        while self.t < t:
            self.frame()

    def report(self, *, start: int, end: int, delay: int, drops: int = 0, frames: int = 5, audio: int = NO_AUDIO) -> None:
        self.rc.client_report(frames, drops, start & U32, end & U32, delay, audio, self.t)


def check_valid(rc: MjpegRateControl) -> None:
    assert rc.quality() in QUALITY_LADDER
    assert MJPEG_MIN_FPS <= rc.fps <= MJPEG_MAX_FPS
    assert rc.fps - 1e-9 <= rc.adjusted_fps <= 2 * rc.fps + 1e-9
    assert rc.bit_rate >= 0 and rc.bit_rate % 8 == 0
    assert 0 <= rc.min_playback_delay() <= max(MAX_CLIENT_PLAYBACK_DELAY_MS, rc.roundtrip_ms // 2)
    s = rc.stats
    assert 0 <= s.frames_encoded <= s.frames_admitted
    assert min(s.admission_drops, s.server_drops, s.bit_rate_decreases, s.bit_rate_increases, s.bytes_encoded) >= 0
    assert s.frames_admitted == 0 or min(QUALITY_LADDER) <= s.avg_quality <= max(QUALITY_LADDER)


def converged(**kw: int) -> Script:
    """A stream at 1 MB/s whose first evaluation has settled on q70 at 10 fps (frames at 25 fps)."""
    s = Script(MjpegRateControl(BIT_RATE, 0, **kw))
    for _ in range(5):
        s.frame()
    assert [q for _, _, q in s.encoded] == [50, 60, 70, 80, 70]
    assert not s.rc.evaluating
    return s


# --- the first evaluation ---------------------------------------------------------------------------


def test_a_new_stream_starts_evaluating_at_q50_and_5_fps() -> None:
    rc = MjpegRateControl(BIT_RATE, 0)
    assert (rc.quality(), rc.fps, rc.adjusted_fps, rc.bit_rate, rc.evaluating) == (50, 5, 7.5, BIT_RATE, True)
    assert rc.pop_playback_delay_request() is None
    check_valid(rc)


def test_constant_sizes_converge_to_the_best_quality_with_10_fps() -> None:
    s = converged()
    # q80 gives 5 fps (< 10 above the median): back to q70, already known good, at 10 fps
    assert (s.rc.quality(), s.rc.fps, s.rc.adjusted_fps) == (70, 10, 15.0)
    # two frames' send time at the byte rate (100 KB at 1 MB/s) plus half a zero round trip
    assert s.rc.pop_playback_delay_request() == 200
    assert s.rc.pop_playback_delay_request() is None
    check_valid(s.rc)


def test_no_frame_is_dropped_during_the_first_evaluation() -> None:
    s = Script(MjpegRateControl(BIT_RATE, 0), dt=1)
    assert [s.frame() for _ in range(5)] == [50, 60, 70, 80, 70]
    assert s.frame() is None  # settled: 1 ms is far below 1 / adjusted fps


def flat(size: int) -> dict[int, int]:
    return dict.fromkeys(QUALITY_LADDER, size)


@pytest.mark.parametrize(
    ("sizes", "source_fps", "qualities", "final"),
    [
        # cheap frames: up to the top quality; fps capped at 25
        (flat(1_000), 25, [50, 60, 70, 80, 80], (80, 25)),
        # too few fps at any quality: down the ladder to q20, the best rate
        ({20: 250_000, 30: 300_000, 40: 400_000, 50: 500_000, 60: 600_000, 70: 700_000, 80: 800_000}, 25, [50, 40, 30, 20, 20], (20, 4)),
        # ... but when going down gains nothing, the best quality among the best rates wins
        (flat(500_000), 25, [50, 40, 30, 20, 50], (50, 2)),
        # 8 fps: fine for the median quality, too few to go above it
        (flat(125_000), 25, [50, 50], (50, 8)),
        # ... unless 8 fps is all the source has: then up to q80
        (flat(125_000), 8, [50, 60, 70, 80, 80], (80, 8)),
    ],
)
def test_evaluation_walks_the_ladder(sizes: dict[int, int], source_fps: int, qualities: list[int], final: tuple[int, int]) -> None:
    """``qualities``: one frame per quality tried, then the first frame at the settled quality."""
    s = Script(MjpegRateControl(BIT_RATE, 0, source_fps=source_fps), sizes=sizes)
    while s.rc.evaluating:
        s.frame()
    assert [q for _, _, q in s.encoded] == qualities
    assert (s.rc.quality(), s.rc.fps) == final


def test_ladder_is_libspices() -> None:
    assert QUALITY_LADDER == (20, 30, 40, 50, 60, 70, 80)


# --- admission --------------------------------------------------------------------------------------


def test_admission_drops_frames_faster_than_adjusted_fps_and_tracks_the_target() -> None:
    s = converged()
    start = len(s.encoded)
    s.until(20_000)
    times = [t for t, _, _ in s.encoded[start:]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 1000 / (2 * s.rc.fps)  # never above 2 x fps
    assert s.rc.stats.admission_drops > 0
    # ~500 frames offered at 25 fps over ~19.8 s; the encoded ones average close to 10 fps
    rate = len(times) * 1000 / (times[-1] - times[0])
    assert 9 <= rate <= 12.5
    check_valid(s.rc)


def test_adjusted_fps_is_corrected_after_500_ms() -> None:
    s = converged()
    assert s.rc.adjusted_fps == 15.0
    s.until(s.t + 480)
    assert s.rc.adjusted_fps == 15.0  # not yet
    s.until(s.t + 200)
    # 1 frame in 2 of a 25 fps source (12.5 fps) is more than 10.5: brought down, not below fps
    assert 10 <= s.rc.adjusted_fps < 15


def test_a_slower_source_loses_no_frame() -> None:
    s = converged()
    s.dt = 200  # 5 fps, half the target
    s.frame()  # (this one may come too soon after the last 25 fps frame)
    before = s.rc.stats.admission_drops
    for _ in range(50):
        assert s.frame() is not None
    assert s.rc.stats.admission_drops == before


# --- client reports ---------------------------------------------------------------------------------


def past_warmup() -> Script:
    s = converged()
    s.until(4_000)
    return s


def test_a_late_report_lowers_the_byte_rate_and_then_the_quality() -> None:
    s = past_warmup()
    s.report(start=s.mm - 200, end=s.mm - 40, delay=-40, drops=3)
    # min(rate, measured) less one average frame (100 KB)
    assert s.rc.bit_rate <= (BYTE_RATE - 100_000) * 8
    assert s.rc.stats.bit_rate_decreases == 1 and s.rc.evaluating
    s.until(s.t + 400)
    assert not s.rc.evaluating
    # at 900 KB/s q70 gives 9 fps: q60 (18 fps) it is
    assert (s.rc.quality(), s.rc.fps) == (60, 18)
    check_valid(s.rc)


def test_reports_are_ignored_while_the_downgrade_is_evaluated() -> None:
    s = past_warmup()
    s.report(start=s.mm - 200, end=s.mm - 40, delay=-40)
    rate = s.rc.bit_rate
    s.report(start=s.mm - 200, end=s.mm - 40, delay=-400)
    assert s.rc.bit_rate == rate and s.rc.stats.bit_rate_decreases == 1


def test_a_report_about_frames_before_the_last_decrease_is_ignored() -> None:
    s = past_warmup()
    old = s.mm - 40
    s.report(start=s.mm - 200, end=old, delay=-40)
    s.until(s.t + 2_000)
    rate = s.rc.bit_rate
    s.report(start=old - 160, end=old, delay=-40)
    assert s.rc.bit_rate == rate and s.rc.stats.bit_rate_decreases == 1
    s.report(start=s.mm - 200, end=s.mm - 40, delay=-40)
    assert s.rc.bit_rate < rate and s.rc.stats.bit_rate_decreases == 2


def test_decreases_wait_for_the_warmup() -> None:
    s = converged()
    s.until(2_000)
    s.report(start=s.mm - 200, end=s.mm - 40, delay=-500)
    assert s.rc.bit_rate == BIT_RATE and s.rc.stats.bit_rate_decreases == 0


def test_drops_with_a_good_delay_change_nothing() -> None:
    s = converged()
    start_mm = s.encoded[-1][1]
    s.until(6_000)
    s.report(start=start_mm + 5_000, end=start_mm + 5_160, delay=400, drops=2)
    assert s.rc.bit_rate == BIT_RATE and not s.rc.evaluating


def test_a_good_report_raises_the_byte_rate_after_2_s_of_stability() -> None:
    s = converged()
    change_mm = s.encoded[-1][1]  # the first frame after the evaluation opened the measuring window
    s.until(3_000)
    s.report(start=change_mm + 1_999, end=change_mm + 2_159, delay=400)
    assert s.rc.bit_rate == BIT_RATE and s.rc.stats.bit_rate_increases == 0
    s.report(start=change_mm + 2_000, end=change_mm + 2_160, delay=400)
    assert s.rc.bit_rate > BIT_RATE and s.rc.stats.bit_rate_increases == 1
    assert s.rc.evaluating  # an upgrade evaluation, never below q70
    s.until(s.t + 400)
    assert s.rc.quality() >= 70
    check_valid(s.rc)


def test_a_good_report_waits_3_s_at_a_high_rate_and_quality() -> None:
    s = converged(source_fps=10)  # q70 at 10 fps meets the source: the strict timeout applies
    change_mm = s.encoded[-1][1]
    s.until(4_000)
    s.report(start=change_mm + 2_999, end=change_mm + 3_159, delay=400)
    assert s.rc.stats.bit_rate_increases == 0
    s.report(start=change_mm + 3_000, end=change_mm + 3_160, delay=400)
    assert s.rc.stats.bit_rate_increases == 1


def test_reports_compare_mm_times_across_the_wrap() -> None:
    s = Script(MjpegRateControl(BIT_RATE, 0), mm=U32 - 1_000)
    for _ in range(5):
        s.frame()
    change_mm = s.encoded[-1][1]
    s.until(3_000)
    assert s.mm < change_mm  # wrapped
    s.report(start=change_mm + 2_000, end=change_mm + 2_160, delay=400)
    assert s.rc.stats.bit_rate_increases == 1


def test_a_short_delay_asks_for_a_longer_playback_delay() -> None:
    s = converged()
    s.rc.pop_playback_delay_request()
    s.rc.roundtrip_ms = 60
    s.report(start=s.mm - 200, end=s.mm - 40, delay=100)
    assert s.rc.pop_playback_delay_request() == 2 * 100 + 30 == s.rc.min_playback_delay()


def test_audio_delay_collapse_while_video_lags_lowers_the_rate() -> None:
    s = past_warmup()
    s.report(start=s.mm - 200, end=s.mm - 40, delay=400, audio=400, drops=1)
    assert s.rc.stats.bit_rate_decreases == 0
    s.report(start=s.mm - 200, end=s.mm - 40, delay=400, audio=150, drops=1)
    assert s.rc.stats.bit_rate_decreases == 1


def test_a_collapsing_video_delay_lowers_the_rate() -> None:
    s = past_warmup()
    s.report(start=s.mm - 200, end=s.mm - 40, delay=800, drops=1)
    s.report(start=s.mm - 200, end=s.mm - 40, delay=250, drops=1)
    assert s.rc.stats.bit_rate_decreases == 0
    s.report(start=s.mm - 200, end=s.mm - 40, delay=150, drops=1)  # below a quarter of 800
    assert s.rc.stats.bit_rate_decreases == 1


def test_unsupported_report_is_recognised() -> None:
    assert report_means_unsupported(0, U32)
    assert not report_means_unsupported(1, U32) and not report_means_unsupported(0, 0)


# --- server-side drops ------------------------------------------------------------------------------


def test_many_server_drops_lower_the_byte_rate() -> None:
    s = past_warmup()
    for _ in range(30):
        if s.frame() is not None:
            s.rc.server_drop(s.t)
    assert s.rc.stats.bit_rate_decreases == 1 and s.rc.bit_rate < BIT_RATE
    assert s.rc.stats.server_drops > 0


def test_few_server_drops_change_nothing() -> None:
    s = past_warmup()
    for i in range(400):
        if s.frame() is not None and i % 40 == 0:
            s.rc.server_drop(s.t)
    assert s.rc.stats.server_drops > 0
    assert s.rc.stats.bit_rate_decreases == 0 and s.rc.bit_rate == BIT_RATE


# --- starting bit rate and stats --------------------------------------------------------------------


def test_starting_bit_rate_is_get_initial_bit_rate() -> None:
    assert starting_bit_rate() == int(0.8 * DEFAULT_HIGH_START_BIT_RATE) == 8_388_608
    assert starting_bit_rate(low_bandwidth=True) == int(0.8 * DEFAULT_LOW_START_BIT_RATE)
    assert starting_bit_rate(net_test_bit_rate=20_000_000, max_stream_bit_rate=30_000_000) == 24_000_000
    assert starting_bit_rate(override_mbps=4, net_test_bit_rate=20_000_000) == int(0.8 * 4 * 1024 * 1024)
    assert starting_bit_rate(stream_area=100, streams_area_total=400) == int(0.8 * DEFAULT_HIGH_START_BIT_RATE / 4)
    assert MjpegRateControl(None, 0).bit_rate == 8_388_608
    for bad in ({"override_mbps": 0}, {"override_mbps": -1.0}, {"stream_area": 0}, {"stream_area": 5, "streams_area_total": 4}):
        with pytest.raises(ValueError):
            starting_bit_rate(**bad)  # type: ignore[arg-type]


def test_stats() -> None:
    s = converged()
    s.until(2_000)
    st_ = s.rc.stats
    assert st_.starting_bit_rate == BIT_RATE and st_.bit_rate == BIT_RATE
    assert st_.frames_admitted == st_.frames_encoded == len(s.encoded)
    assert st_.bytes_encoded == sum(SIZES[q] for _, _, q in s.encoded)
    assert st_.avg_quality == sum(q for _, _, q in s.encoded) / len(s.encoded)
    assert st_.frames_admitted + st_.admission_drops == 2_000 // 40
    assert (st_.quality, st_.fps) == (70, 10)


@pytest.mark.parametrize(
    "call",
    [
        lambda: MjpegRateControl(0, 0),
        lambda: MjpegRateControl(-8, 0),
        lambda: MjpegRateControl(BIT_RATE, float("nan")),
        lambda: MjpegRateControl(BIT_RATE, 0, source_fps=0),
        lambda: MjpegRateControl(BIT_RATE, 0, roundtrip_ms=-1),
        lambda: MjpegRateControl(BIT_RATE, 0).admit(0, -1),
        lambda: MjpegRateControl(BIT_RATE, 0).admit(0, 1 << 32),
        lambda: MjpegRateControl(BIT_RATE, 0).admit(float("inf"), 0),
        lambda: MjpegRateControl(BIT_RATE, 0).frame_encoded(0, 0),
        lambda: MjpegRateControl(BIT_RATE, 0).client_report(1, 0, 0, 0, 1 << 31, 0, 0),
        lambda: MjpegRateControl(BIT_RATE, 0).client_report(1 << 32, 0, 0, 0, 0, 0, 0),
    ],
)
def test_bad_arguments_raise_value_error(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


def test_time_going_backwards_is_taken_as_now() -> None:
    s = converged()
    s.until(1_000)
    s.t += 200
    assert s.rc.admit(s.t, s.mm)
    s.rc.frame_encoded(SIZES[s.rc.quality()], s.t)
    assert s.rc.admit(10, s.mm) is False  # as if at the latest time seen: too soon after that frame
    check_valid(s.rc)


# --- fuzz: any wire values ------------------------------------------------------------------------

u32 = st.integers(0, U32)
ops = st.one_of(
    st.tuples(st.just("frame"), st.integers(0, 400), st.integers(1, 2_000_000)),
    st.tuples(st.just("report"), st.tuples(u32, u32, u32, u32, st.integers(-(1 << 31), U32), u32)),
    st.tuples(st.just("drop"), st.integers(0, 100)),
    st.tuples(st.just("rtt"), u32),
    st.tuples(st.just("src"), st.integers(1, 60)),
)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 1 << 40), st.lists(ops, max_size=80))
def test_fuzz_reports_and_frames_keep_the_state_valid(bit_rate: int, script: list[tuple[object, ...]]) -> None:
    rc = MjpegRateControl(bit_rate, 0)
    t, mm = 0, 0
    for op in script:
        kind = op[0]
        if kind == "frame":
            t += op[1]  # type: ignore[operator]
            mm = (mm + op[1]) & U32  # type: ignore[operator]
            if rc.admit(t, mm):
                rc.frame_encoded(op[2], t)  # type: ignore[arg-type]
        elif kind == "report":
            num_frames, num_drops, start, end, delay, audio = op[1]  # type: ignore[misc]
            try:
                rc.client_report(num_frames, num_drops, start, end, delay, audio, t)
            except (ValueError, ProtocolError):
                assert delay >= 1 << 31
        elif kind == "drop":
            t += op[1]  # type: ignore[operator]
            rc.server_drop(t)
        elif kind == "rtt":
            rc.roundtrip_ms = op[1]  # type: ignore[assignment]
        else:
            rc.source_fps = op[1]  # type: ignore[assignment]
        check_valid(rc)
        request = rc.pop_playback_delay_request()
        assert request is None or 0 <= request <= max(MAX_CLIENT_PLAYBACK_DELAY_MS, rc.roundtrip_ms // 2)
