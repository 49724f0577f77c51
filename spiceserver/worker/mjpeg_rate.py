"""Rate control of the builtin MJPEG stream encoder, as libspice does it (sans-IO).

Counterpart of the rate-control half of spice-server ``server/mjpeg-encoder.c`` (the pixel half is
:mod:`spiceserver.codecs.mjpeg`) and of ``get_initial_bit_rate`` in ``server/video-stream.cpp``.
No I/O, no threads, no clock: every call that needs the time takes ``now_ms`` (monotonic
milliseconds, float or int), and frame / report times are the 32-bit mm-times of the wire.

Theory of operation
-------------------
One :class:`MjpegRateControl` per stream and client (libspice: one encoder per ``VideoStreamAgent``).
It owns a **byte rate** (the share of the link the stream may use) and derives from it a JPEG
**quality** from the ladder :data:`QUALITY_LADDER` and a target **fps** (1..25).

* *Quality evaluation* (``mjpeg_encoder_eval_quality``). While an evaluation runs, successive frames
  are encoded at successive qualities; for each, ``fps = byte_rate // frame_size``. Above the median
  quality a quality must give at least 10 fps (or the source fps); at or below it, more than 5 fps and
  at least 2/3 of the evaluation's lower bound (or the source fps). The walk moves up while a quality
  passes and down while it fails, and stops at the highest quality that passed; the stream's fps is
  then that quality's fps, clamped to [1, 25]. A new stream starts with a *set* evaluation at q50;
  a byte-rate change starts an *upgrade* (never below the current quality) or *downgrade* (never
  above it) evaluation; so does a change of the average size of the last 3 frames that moves the
  achievable fps across the current one (``mjpeg_encoder_adjust_params_to_bit_rate``).
* *Admission* (``mjpeg_encoder_start_frame``, ``mjpeg_encoder_adjust_fps``). A frame that comes less
  than ``1 / adjusted_fps`` after the last admitted one is dropped before encoding. ``adjusted_fps``
  starts at 1.5 x fps and is corrected every > 500 ms so that the measured rate of encoded frames
  tracks the target fps, clamped to [fps, 2 fps]. During an evaluation started by a byte-rate change
  (the first one included) no frame is dropped.
* *Byte rate.* It starts at ``bit_rate / 8``. A client STREAM_REPORT
  (``mjpeg_encoder_client_stream_report``) is negative when the last frame arrived more than 15 ms
  late, when the playback delay fell below half (with the delay already too small) or a quarter of
  the largest seen since the last decrease, or when the audio delay halved while video runs 1.25x
  behind it: then the rate drops to ``min(rate, measured) - average frame size``
  (``mjpeg_encoder_decrease_bit_rate``; ignored for the first 3 s of the stream, and for a report
  about frames older than the last change). A report without drops, with a good delay, whose first
  frame is at least 2 s (3 s at a high rate and quality) after the last change is positive: the rate
  rises to ``min(rate, measured) + average frame size`` (``mjpeg_encoder_increase_bit_rate``). More
  than 10 % of the frames dropped by the server (newest frame wins, counted by the stream through
  :meth:`MjpegRateControl.server_drop`) over at least a second of frames also lowers it
  (``mjpeg_encoder_process_server_drops``).
* *Playback delay* (``get_min_required_playback_delay``): the client's jitter buffer should hold
  twice a frame's send time plus half the round trip, at most 5 s. Requests are queued for the stream
  (:meth:`MjpegRateControl.pop_playback_delay_request`), which raises the mm-time latency with them
  (libspice's ``update_client_playback_delay`` callback).

Where this differs from the C, on purpose (each only where the C is undefined or plainly not what
it means): mm-times are compared with wrap-around (signed 32-bit differences) everywhere; "not yet
set" is ``None`` rather than 0, so a time or mm-time of 0 is an ordinary value; a zero-length
measuring window leaves the byte rate unmeasured instead of dividing by zero; a negative
``end_frame_delay`` is compared as a signed number with the minimum playback delay (the C compares
it unsigned, which makes its own ``end_frame_delay < 0`` test dead); times given out of order are
taken as the latest time seen.

The stream (not this class) handles the report ``(num_frames=0, num_drops=0xFFFFFFFF)`` -- the
client cannot decode; fall back to images (``dcc.cpp:dcc_handle_stream_report``); see
:func:`report_means_unsupported` -- and checks the report's stream and unique ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

__all__ = [
    "MjpegRateControl",
    "MjpegRateStats",
    "starting_bit_rate",
    "report_means_unsupported",
    "QUALITY_LADDER",
    "MJPEG_MAX_FPS",
    "MJPEG_MIN_FPS",
    "DEFAULT_HIGH_START_BIT_RATE",
    "DEFAULT_LOW_START_BIT_RATE",
    "STREAM_CHANNEL_CAPACITY",
    "MAX_CLIENT_PLAYBACK_DELAY_MS",
    "WARMUP_TIME_MS",
]

# --- mjpeg-encoder.c constants -------------------------------------------------------------------
MJPEG_MAX_FPS = 25
MJPEG_MIN_FPS = 1
#: ``mjpeg_quality_samples``: the JPEG qualities the rate control chooses from.
QUALITY_LADDER: tuple[int, ...] = (20, 30, 40, 50, 60, 70, 80)
_MID = len(QUALITY_LADDER) // 2  # index 3, q50
_TOP = len(QUALITY_LADDER) - 1
IMPROVE_QUALITY_FPS_STRICT_TH = 10
IMPROVE_QUALITY_FPS_PERMISSIVE_TH = 5
AVERAGE_SIZE_WINDOW = 3
BIT_RATE_EVAL_MIN_NUM_FRAMES = 3
SERVER_STATUS_EVAL_FPS_INTERVAL = 1
SERVER_STATUS_DOWNGRADE_DROP_FACTOR_TH = 0.1
CLIENT_POSITIVE_REPORT_TIMEOUT_MS = 2000
CLIENT_POSITIVE_REPORT_STRICT_TIMEOUT_MS = 3000
ADJUST_FPS_TIMEOUT_MS = 500
MAX_CLIENT_PLAYBACK_DELAY_MS = 5000
WARMUP_TIME_MS = 3000
PLAYBACK_LATENCY_DECREASE_FACTOR = 0.5
VIDEO_VS_AUDIO_LATENCY_FACTOR = 1.25
VIDEO_DELAY_TH_MS = -15

# --- video-stream.h constants (get_initial_bit_rate) ---------------------------------------------
DEFAULT_HIGH_START_BIT_RATE = 10 * 1024 * 1024
DEFAULT_LOW_START_BIT_RATE = int(2.5 * 1024 * 1024)
#: share of the display channel's bandwidth given to video (the rest is for other messages)
STREAM_CHANNEL_CAPACITY = 0.8

_U32 = 0xFFFFFFFF


def _check_u32(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U32:
        raise ValueError(f"{name}={value!r} is not a u32")
    return value


def _mm_diff(a: int, b: int) -> int:
    """``a - b`` for 32-bit mm-times that wrap (spice-gtk ``spice_mmtime_diff``)."""
    d = (a - b) & _U32
    return d - (1 << 32) if d & 0x80000000 else d


def report_means_unsupported(num_frames: int, num_drops: int) -> bool:
    """Whether a STREAM_REPORT says the client cannot decode the stream (``dcc_handle_stream_report``)."""
    return num_frames == 0 and num_drops == _U32


def starting_bit_rate(
    *,
    override_mbps: float | None = None,
    max_stream_bit_rate: int = 0,
    net_test_bit_rate: int = 0,
    low_bandwidth: bool = False,
    stream_area: int = 1,
    streams_area_total: int = 1,
) -> int:
    """The bit rate a new stream's encoder starts with: ``get_initial_bit_rate`` (video-stream.cpp).

    The first of: the override (libspice reads ``SPICE_BIT_RATE``, in Mbit/s, from the environment;
    here it is an argument), the larger of the best final rate of this client's earlier streams and
    the main channel's net-test rate, or 10 Mbit/s (2.5 Mbit/s on a low-bandwidth link). The result
    is this stream's share: 0.8 x the rate x its area / the area of all live streams.

    Args:
        override_mbps: a positive rate in Mbit/s (Mi = 1024 * 1024) that wins over everything.
        max_stream_bit_rate: the largest final bit rate of this client's stopped streams, or 0.
        net_test_bit_rate: the main channel's measured bit rate, or 0 when not measured.
        low_bandwidth: the main channel's low-bandwidth verdict.
        stream_area: width x height of this stream.
        streams_area_total: width x height summed over all live streams, this one included.

    Raises:
        ValueError: a non-positive override or area, or an area larger than the total.
    """
    if override_mbps is not None and not (override_mbps > 0 and math.isfinite(override_mbps)):
        raise ValueError(f"bit rate override {override_mbps!r} Mbit/s is not positive")
    if stream_area <= 0 or streams_area_total < stream_area:
        raise ValueError(f"stream area {stream_area} of {streams_area_total} total")
    if max_stream_bit_rate < 0 or net_test_bit_rate < 0:
        raise ValueError("negative bit rate")
    if override_mbps is not None:
        bit_rate = int(override_mbps * 1024 * 1024)
    else:
        bit_rate = max(max_stream_bit_rate, net_test_bit_rate)
        if bit_rate == 0:
            bit_rate = DEFAULT_LOW_START_BIT_RATE if low_bandwidth else DEFAULT_HIGH_START_BIT_RATE
    return int(STREAM_CHANNEL_CAPACITY * bit_rate * stream_area / streams_area_total)


class _EvalType(IntEnum):
    SET = 0
    UPGRADE = 1
    DOWNGRADE = 2


class _EvalReason(IntEnum):
    SIZE_CHANGE = 0
    RATE_CHANGE = 1


@dataclass
class _QualityEval:
    """``MJpegEncoderQualityEval``; a fresh one is what ``mjpeg_encoder_reset_quality`` leaves."""

    type: _EvalType = _EvalType.SET
    reason: _EvalReason = _EvalReason.SIZE_CHANGE
    size_by_quality: list[int] = field(default_factory=lambda: [0] * len(QUALITY_LADDER))
    min_quality_id: int = 0
    min_quality_fps: int = 0
    max_quality_id: int = _TOP
    max_quality_fps: int = MJPEG_MAX_FPS
    max_sampled_fps: int = 0
    max_sampled_fps_quality_id: int = 0


@dataclass
class _BitRateInfo:
    """``MJpegEncoderBitRateInfo``: the frames encoded since the last byte-rate change."""

    change_start_time: float | None = None
    last_frame_time: float | None = None
    change_start_mm_time: int | None = None
    was_upgraded: bool = False
    num_enc_frames: int = 0
    sum_enc_size: int = 0


@dataclass(frozen=True)
class MjpegRateStats:
    """A snapshot of a rate control (``mjpeg_encoder_get_stats`` plus counters for metrics)."""

    starting_bit_rate: int
    bit_rate: int
    quality: int
    fps: int
    adjusted_fps: float
    avg_quality: float
    frames_admitted: int
    frames_encoded: int
    bytes_encoded: int
    admission_drops: int
    server_drops: int
    bit_rate_decreases: int
    bit_rate_increases: int


class MjpegRateControl:
    """Quality, frame rate and byte rate of one MJPEG stream for one client (``MJpegEncoderRateControl``).

    Per frame the stream calls :meth:`admit`; when it says yes, it encodes at :meth:`quality` and
    reports the size with :meth:`frame_encoded`. Client STREAM_REPORTs go to :meth:`client_report`,
    frames the server replaced before encoding to :meth:`server_drop`.

    Args:
        bit_rate: the starting bit rate in bit/s (see :func:`starting_bit_rate`); ``None`` takes
            libspice's default for a lone stream on an unmeasured link (0.8 x 10 Mbit/s).
        now_ms: the current monotonic time in milliseconds (starts the 3 s warm-up).
        source_fps: the stream's input frame rate estimate (libspice's ``get_source_fps`` callback,
            the stream's ``input_fps``); update it with :attr:`source_fps`.
        roundtrip_ms: the client's round trip (``get_roundtrip_ms``); update it with
            :attr:`roundtrip_ms`.

    Raises:
        ValueError: a non-positive bit rate, a bad time, or a bad ``source_fps``/``roundtrip_ms``.
    """

    def __init__(
        self, bit_rate: int | None, now_ms: float, *, source_fps: int = MJPEG_MAX_FPS, roundtrip_ms: int = 0
    ) -> None:
        if bit_rate is None:
            bit_rate = starting_bit_rate()
        if isinstance(bit_rate, bool) or not isinstance(bit_rate, int) or bit_rate <= 0:
            raise ValueError(f"starting bit rate {bit_rate!r} is not a positive integer")
        self._now = self._time(now_ms)
        self._starting_bit_rate = bit_rate
        self._byte_rate = bit_rate // 8
        self._source_fps = MJPEG_MAX_FPS
        self._roundtrip_ms = 0
        self.source_fps = source_fps
        self.roundtrip_ms = roundtrip_ms

        self._during_eval = False
        self._eval = _QualityEval()
        self._bri = _BitRateInfo()
        self._max_video_latency = 0
        self._max_audio_latency = 0
        self._server_encoded = 0
        self._server_dropped = 0
        self._quality_id = 0
        self._fps = 0
        self._adjusted_fps = 0.0
        self._adjusted_fps_start: float | None = None
        self._adjusted_fps_frames = 0
        self._base_enc_size = 0
        self._last_enc_size = 0
        self._sum_recent = 0
        self._num_recent = 0
        self._warmup_start: float | None = self._now
        self._playback_delay_request: int | None = None
        # stats
        self._quality_sum = 0
        self._frames_admitted = 0
        self._frames_encoded = 0
        self._bytes_encoded = 0
        self._admission_drops = 0
        self._server_drops = 0
        self._decreases = 0
        self._increases = 0

        # mjpeg_encoder_new: q50 at 5 fps, then a "set" evaluation started as by a rate change
        self._reset_quality(_MID, 5, 0)
        self._during_eval = True
        self._eval.type = _EvalType.SET
        self._eval.reason = _EvalReason.RATE_CHANGE

    # --- inputs ----------------------------------------------------------------------------------

    @property
    def source_fps(self) -> int:
        """The stream's input fps (``get_source_fps``): 1..30 (``MAX_FPS`` of video-stream.h) or more."""
        return self._source_fps

    @source_fps.setter
    def source_fps(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
            raise ValueError(f"source fps {value!r} is not in 1..1000")
        self._source_fps = value

    @property
    def roundtrip_ms(self) -> int:
        """The client's round-trip time in ms (``get_roundtrip_ms``); half of it is the latency."""
        return self._roundtrip_ms

    @roundtrip_ms.setter
    def roundtrip_ms(self, value: int) -> None:
        self._roundtrip_ms = _check_u32("roundtrip_ms", value)

    def admit(self, now_ms: float, frame_mm_time: int) -> bool:
        """Whether to encode a frame now or drop it (``mjpeg_encoder_start_frame``).

        A yes also settles the quality for this frame (:meth:`quality`) from the size of the
        previous one, and the caller must then encode and call :meth:`frame_encoded`.

        Args:
            now_ms: the current monotonic time in milliseconds.
            frame_mm_time: the frame's mm-time (when the worker took it in).

        Raises:
            ValueError: a bad time or an mm-time that is not a u32.
        """
        now = self._advance(now_ms)
        _check_u32("frame_mm_time", frame_mm_time)
        if self._adjusted_fps_start is None:
            self._adjusted_fps_start = now
        self._adjust_fps(now)
        last = self._bri.last_frame_time
        if last is not None and now - last < 1000.0 / self._adjusted_fps:
            self._admission_drops += 1
            return False
        self._adjust_params_to_bit_rate(now)
        if not self._during_eval or self._eval.reason == _EvalReason.SIZE_CHANGE:
            if self._bri.change_start_time is None:
                self._bri.change_start_time = now
                self._bri.change_start_mm_time = frame_mm_time
            self._bri.last_frame_time = now
        self._frames_admitted += 1
        self._quality_sum += self.quality()
        return True

    def frame_encoded(self, size: int, now_ms: float) -> None:
        """Record the size of the frame just encoded (``mjpeg_encoder_end_frame``).

        Args:
            size: the JPEG's size in bytes (positive).
            now_ms: the current monotonic time in milliseconds.

        Raises:
            ValueError: a non-positive size or a bad time.
        """
        self._advance(now_ms)
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"encoded size {size!r} is not a positive integer")
        self._last_enc_size = size
        self._server_encoded += 1
        self._frames_encoded += 1
        self._bytes_encoded += size
        if not self._during_eval or self._eval.reason == _EvalReason.SIZE_CHANGE:
            if not self._during_eval:
                if self._num_recent >= AVERAGE_SIZE_WINDOW:
                    self._num_recent = 0
                    self._sum_recent = 0
                self._sum_recent += size
                self._num_recent += 1
                self._adjusted_fps_frames += 1
            self._bri.sum_enc_size += size
            self._bri.num_enc_frames += 1

    def server_drop(self, now_ms: float) -> None:
        """A frame of this stream was replaced unsent by a newer one (``mjpeg_encoder_notify_server_frame_drop``).

        Raises:
            ValueError: a bad time.
        """
        now = self._advance(now_ms)
        self._server_dropped += 1
        self._server_drops += 1
        self._process_server_drops(now)

    def client_report(
        self,
        num_frames: int,
        num_drops: int,
        start_frame_mm_time: int,
        end_frame_mm_time: int,
        end_frame_delay: int,
        audio_delay: int,
        now_ms: float,
    ) -> None:
        """React to a client STREAM_REPORT (``mjpeg_encoder_client_stream_report``).

        Args:
            num_frames: frames the client received in the report's window.
            num_drops: of those, frames it dropped (late or undecodable).
            start_frame_mm_time: mm-time of the window's first frame.
            end_frame_mm_time: mm-time of its last frame.
            end_frame_delay: ``last_frame_delay``: how long before its display time the last frame
                arrived, in ms (negative: late), an i32.
            audio_delay: the playback latency in ms, 0xFFFFFFFF without audio.
            now_ms: the current monotonic time in milliseconds.

        Raises:
            ValueError: a field out of its wire range, or a bad time.
        """
        now = self._advance(now_ms)
        for name, value in (
            ("num_frames", num_frames),
            ("num_drops", num_drops),
            ("start_frame_mm_time", start_frame_mm_time),
            ("end_frame_mm_time", end_frame_mm_time),
            ("audio_delay", audio_delay),
        ):
            _check_u32(name, value)
        if isinstance(end_frame_delay, bool) or not isinstance(end_frame_delay, int) or not -(1 << 31) <= end_frame_delay < 1 << 31:
            raise ValueError(f"end_frame_delay={end_frame_delay!r} is not an i32")

        if self._during_eval and self._eval.type == _EvalType.DOWNGRADE and self._eval.reason == _EvalReason.RATE_CHANGE:
            return  # the downgrade is still being evaluated
        avg_enc_size = self._sum_recent // self._num_recent if self._num_recent else 0
        min_delay = self._min_playback_delay(avg_enc_size)
        is_video_delay_small = False
        # (at the highest quality and rate the link's real capacity, and so the delay, is unknown)
        if min_delay > end_frame_delay and (
            self._quality_id != _TOP or self._fps < min(self._source_fps, MJPEG_MAX_FPS) or end_frame_delay < 0
        ):
            is_video_delay_small = True
            self._playback_delay_request = min_delay

        # audio latency dropped well below its maximum while video lags it: slow the video down
        if (
            end_frame_delay > 0
            and audio_delay < PLAYBACK_LATENCY_DECREASE_FACTOR * self._max_audio_latency
            and end_frame_delay > VIDEO_VS_AUDIO_LATENCY_FACTOR * audio_delay
        ):
            self._negative_report(end_frame_mm_time, now)
            return
        if end_frame_delay < VIDEO_DELAY_TH_MS:
            self._negative_report(end_frame_mm_time, now)
            return
        self._max_video_latency = max(end_frame_delay, self._max_video_latency)
        self._max_audio_latency = max(audio_delay, self._max_audio_latency)
        medium = self._max_video_latency * PLAYBACK_LATENCY_DECREASE_FACTOR
        major = medium * PLAYBACK_LATENCY_DECREASE_FACTOR
        if (end_frame_delay < medium and is_video_delay_small) or end_frame_delay < major:
            self._negative_report(end_frame_mm_time, now)
        elif not num_drops:
            self._positive_report(start_frame_mm_time)

    # --- outputs ---------------------------------------------------------------------------------

    def quality(self) -> int:
        """The JPEG quality to encode the admitted frame with (a :data:`QUALITY_LADDER` value)."""
        return QUALITY_LADDER[self._quality_id]

    @property
    def fps(self) -> int:
        """The target frame rate (1..25)."""
        return self._fps

    @property
    def adjusted_fps(self) -> float:
        """The admission rate: frames closer than ``1 / adjusted_fps`` are dropped (fps..2 fps)."""
        return self._adjusted_fps

    @property
    def bit_rate(self) -> int:
        """The current bit rate in bit/s (``mjpeg_encoder_get_bit_rate``).

        When a stream stops, libspice keeps the largest of these per client as the next stream's
        start (``dcc->streams_max_bit_rate``; see :func:`starting_bit_rate`).
        """
        return self._byte_rate * 8

    @property
    def evaluating(self) -> bool:
        """Whether a quality evaluation is running (successive frames try successive qualities)."""
        return self._during_eval

    def min_playback_delay(self) -> int:
        """The client playback delay the recent frames need, in ms (``get_min_required_playback_delay``)."""
        avg = self._sum_recent // self._num_recent if self._num_recent else 0
        return self._min_playback_delay(avg)

    def pop_playback_delay_request(self) -> int | None:
        """The latest playback delay (ms) the rate control asked for since the last call, if any.

        libspice's ``update_client_playback_delay``: the stream keeps the request per client and
        raises the mm-time latency to the largest one (it only ever grows).
        """
        request, self._playback_delay_request = self._playback_delay_request, None
        return request

    @property
    def stats(self) -> MjpegRateStats:
        """A snapshot of the state and counters."""
        return MjpegRateStats(
            starting_bit_rate=self._starting_bit_rate,
            bit_rate=self.bit_rate,
            quality=self.quality(),
            fps=self._fps,
            adjusted_fps=self._adjusted_fps,
            avg_quality=self._quality_sum / self._frames_admitted if self._frames_admitted else 0.0,
            frames_admitted=self._frames_admitted,
            frames_encoded=self._frames_encoded,
            bytes_encoded=self._bytes_encoded,
            admission_drops=self._admission_drops,
            server_drops=self._server_drops,
            bit_rate_decreases=self._decreases,
            bit_rate_increases=self._increases,
        )

    # --- internals -------------------------------------------------------------------------------

    @staticmethod
    def _time(now_ms: float) -> float:
        if isinstance(now_ms, bool) or not isinstance(now_ms, int | float) or not math.isfinite(now_ms):
            raise ValueError(f"now_ms={now_ms!r} is not a finite number")
        return float(now_ms)

    def _advance(self, now_ms: float) -> float:
        self._now = max(self._now, self._time(now_ms))
        return self._now

    def _max_fps(self, frame_size: int) -> int:
        """``get_max_fps``: frames per second the byte rate carries at this frame size."""
        return self._byte_rate // frame_size if frame_size else MJPEG_MAX_FPS

    def _min_playback_delay(self, frame_size: int) -> int:
        """``get_min_required_playback_delay``: two frames' send time plus the one-way latency."""
        latency = self._roundtrip_ms // 2
        if not frame_size or not self._byte_rate:
            return latency
        one_frame_ms = frame_size * 1000 // self._byte_rate
        return min(one_frame_ms * 2 + latency, MAX_CLIENT_PLAYBACK_DELAY_MS)

    def _reset_quality(self, quality_id: int, fps: int, frame_size: int) -> None:
        """``mjpeg_encoder_reset_quality``: settle on a quality and fps; keep the admission ratio."""
        self._during_eval = False
        if self._quality_id != quality_id:
            self._last_enc_size = 0
        if self._eval.reason == _EvalReason.RATE_CHANGE:
            self._server_encoded = self._server_dropped = 0
        self._quality_id = quality_id
        self._eval = _QualityEval()
        ratio = self._adjusted_fps / self._fps if self._adjusted_fps else 1.5
        self._fps = min(MJPEG_MAX_FPS, max(MJPEG_MIN_FPS, fps))
        self._adjusted_fps = self._fps * ratio
        self._adjusted_fps_start = None
        self._adjusted_fps_frames = 0
        self._base_enc_size = frame_size
        self._sum_recent = 0
        self._num_recent = 0

    def _evaluated(self, quality_id: int) -> bool:
        return self._eval.size_by_quality[quality_id] != 0

    def _eval_quality(self) -> None:
        """``mjpeg_encoder_eval_quality``: judge the last sampled quality; go on, or settle."""
        ev = self._eval
        q = self._quality_id
        enc_size = ev.size_by_quality[q]
        if enc_size == 0:
            return
        src_fps = self._source_fps
        fps = self._max_fps(enc_size)
        if fps > ev.max_sampled_fps or ((fps == ev.max_sampled_fps or fps >= src_fps) and q > ev.max_sampled_fps_quality_id):
            ev.max_sampled_fps = fps
            ev.max_sampled_fps_quality_id = q

        complete = False
        if q > _MID and fps < IMPROVE_QUALITY_FPS_STRICT_TH and fps < src_fps:
            # above the median quality a reasonable frame rate comes first
            complete = self._evaluated(q - 1)
            q -= 1
        elif (fps > IMPROVE_QUALITY_FPS_PERMISSIVE_TH and fps >= 0.66 * ev.min_quality_fps) or fps >= src_fps:
            # settle at the top, below a known failure, or at the median if above it is too slow
            complete = (
                q == _TOP
                or q >= ev.max_quality_id
                or self._evaluated(q + 1)
                or (q == _MID and fps < IMPROVE_QUALITY_FPS_STRICT_TH and fps < src_fps)
            )
            if not complete:
                q += 1
        elif q == 0 or q <= ev.min_quality_id:
            complete = True
        else:  # too few fps: try a worse quality
            complete = self._evaluated(q - 1)
            q -= 1
        self._quality_id = q
        if not complete:
            return

        final_id = max(q, ev.max_sampled_fps_quality_id) if ev.max_sampled_fps else q
        final_size = ev.size_by_quality[final_id]
        final_fps = self._max_fps(final_size)
        if final_id == ev.min_quality_id:
            final_fps = max(final_fps, ev.min_quality_fps)
        if final_id == ev.max_quality_id:
            final_fps = min(final_fps, ev.max_quality_fps)
        self._reset_quality(final_id, final_fps, final_size)
        self._sum_recent = final_size
        self._num_recent = 1
        self._playback_delay_request = self._min_playback_delay(final_size)

    def _set_upgrade(self, reason: _EvalReason, min_quality_id: int, min_quality_fps: int) -> None:
        """``mjpeg_encoder_quality_eval_set_upgrade``: evaluate, never below the current quality."""
        self._during_eval = True
        self._eval.type = _EvalType.UPGRADE
        self._eval.reason = reason
        self._eval.min_quality_id = min_quality_id
        self._eval.min_quality_fps = min_quality_fps

    def _set_downgrade(self, reason: _EvalReason, max_quality_id: int, max_quality_fps: int) -> None:
        """``mjpeg_encoder_quality_eval_set_downgrade``: evaluate, never above the current quality."""
        self._during_eval = True
        self._eval.type = _EvalType.DOWNGRADE
        self._eval.reason = reason
        self._eval.max_quality_id = max_quality_id
        self._eval.max_quality_fps = max_quality_fps

    def _adjust_params_to_bit_rate(self, now: float) -> None:
        """``mjpeg_encoder_adjust_params_to_bit_rate``: feed the evaluation, or watch the frame sizes."""
        if not self._last_enc_size:
            return
        if self._during_eval:
            self._eval.size_by_quality[self._quality_id] = self._last_enc_size
            self._eval_quality()
            return
        if not self._num_recent:
            return
        new_avg = 0
        if not (self._num_recent < AVERAGE_SIZE_WINDOW and self._num_recent < self._fps):
            new_avg = self._sum_recent // self._num_recent
            new_fps = self._max_fps(new_avg)
            src_fps = self._source_fps
            if new_fps > self._fps and (self._fps < src_fps or self._quality_id < _TOP):
                # frames got cheaper: try better, never worse than now
                self._set_upgrade(_EvalReason.SIZE_CHANGE, self._quality_id, self._fps)
            elif new_fps < self._fps and new_fps < src_fps:
                self._set_downgrade(_EvalReason.SIZE_CHANGE, self._quality_id, self._fps)
        if self._during_eval:
            self._eval.size_by_quality[self._quality_id] = new_avg
            self._eval_quality()
        else:
            self._process_server_drops(now)

    def _adjust_fps(self, now: float) -> None:
        """``mjpeg_encoder_adjust_fps``: steer ``adjusted_fps`` so encoded frames average ``fps``."""
        assert self._adjusted_fps_start is not None
        passed = now - self._adjusted_fps_start
        if self._during_eval or passed <= ADJUST_FPS_TIMEOUT_MS or passed <= 1000.0 / self._adjusted_fps:
            return
        avg_fps = self._adjusted_fps_frames * 1000.0 / passed
        fps_ratio = avg_fps / self._fps
        if avg_fps + 0.5 < self._fps and self._source_fps > avg_fps:
            new = self._adjusted_fps / fps_ratio if avg_fps else self._adjusted_fps * 2
            self._adjusted_fps = min(self._fps * 2.0, new)
        elif self._fps + 0.5 < avg_fps:
            self._adjusted_fps = max(float(self._fps), self._adjusted_fps / fps_ratio)
        self._adjusted_fps_start = now
        self._adjusted_fps_frames = 0

    def _quality_eval_stop(self) -> None:
        """``mjpeg_encoder_quality_eval_stop``: abandon an evaluation at its safe end."""
        if not self._during_eval:
            return
        ev = self._eval
        if ev.type == _EvalType.UPGRADE:
            quality_id, fps = ev.min_quality_id, ev.min_quality_fps
        elif ev.type == _EvalType.DOWNGRADE:
            quality_id, fps = ev.max_quality_id, ev.max_quality_fps
        else:
            quality_id, fps = _MID, MJPEG_MAX_FPS // 2
        self._reset_quality(quality_id, fps, 0)

    def _measured_byte_rate(self) -> int | None:
        """Bytes per second encoded since the last change, or None when the window has no length."""
        bri = self._bri
        if bri.change_start_time is None or bri.last_frame_time is None or bri.last_frame_time <= bri.change_start_time:
            return None
        return int(bri.sum_enc_size * 1000.0 / (bri.last_frame_time - bri.change_start_time))

    def _enough_frames(self) -> bool:
        n = self._bri.num_enc_frames
        return n > BIT_RATE_EVAL_MIN_NUM_FRAMES or n > self._fps

    def _restart_bit_rate_info(self, upgraded: bool) -> None:
        self._bri = _BitRateInfo(was_upgraded=upgraded)

    def _decrease_bit_rate(self, now: float) -> None:
        """``mjpeg_encoder_decrease_bit_rate``: ``min(rate, measured)`` less one average frame."""
        self._quality_eval_stop()
        self._max_video_latency = 0
        self._max_audio_latency = 0
        if self._warmup_start is not None:
            if now - self._warmup_start < WARMUP_TIME_MS:
                return  # the stream is still settling after its lossless start
            self._warmup_start = None
        if self._enough_frames():
            measured = self._measured_byte_rate()
            decrease = self._bri.sum_enc_size // self._bri.num_enc_frames
            measured_rate = self._byte_rate if measured is None else min(self._byte_rate, measured)
        else:
            measured_rate = self._byte_rate
            decrease = measured_rate // self._fps
        if decrease >= measured_rate:
            decrease = measured_rate // 2
        self._byte_rate = measured_rate - decrease
        self._decreases += 1
        self._restart_bit_rate_info(upgraded=False)
        self._set_downgrade(_EvalReason.RATE_CHANGE, self._quality_id, self._fps)

    def _increase_bit_rate(self) -> None:
        """``mjpeg_encoder_increase_bit_rate``: ``min(rate, measured)`` plus one average frame."""
        if not self._enough_frames():
            return  # not enough samples to measure the rate
        measured = self._measured_byte_rate()
        increase = self._bri.sum_enc_size // self._bri.num_enc_frames
        self._quality_eval_stop()
        if measured is None or measured + increase >= self._byte_rate:
            self._byte_rate = (self._byte_rate if measured is None else min(measured, self._byte_rate)) + increase
            self._increases += 1
        # else the stream uses far less than it may: only re-evaluate
        self._restart_bit_rate_info(upgraded=True)
        self._set_upgrade(_EvalReason.RATE_CHANGE, self._quality_id, self._fps)

    def _negative_report(self, end_frame_mm_time: int, now: float) -> None:
        """``mjpeg_encoder_handle_negative_client_stream_report``."""
        start_mm = self._bri.change_start_mm_time
        if (start_mm is None or _mm_diff(start_mm, end_frame_mm_time) > 0) and not self._bri.was_upgraded:
            return  # about frames from before the last decrease
        self._decrease_bit_rate(now)

    def _positive_report(self, start_frame_mm_time: int) -> None:
        """``mjpeg_encoder_handle_positive_client_stream_report``: raise after a stable while."""
        if self._during_eval and self._eval.reason == _EvalReason.RATE_CHANGE:
            return
        strict = (self._fps > IMPROVE_QUALITY_FPS_STRICT_TH or self._fps >= self._source_fps) and self._quality_id > _MID
        timeout = CLIENT_POSITIVE_REPORT_STRICT_TIMEOUT_MS if strict else CLIENT_POSITIVE_REPORT_TIMEOUT_MS
        start_mm = self._bri.change_start_mm_time
        if start_mm is None or _mm_diff(start_frame_mm_time, start_mm) < timeout:
            return  # not stable for long enough since the last change
        self._increase_bit_rate()

    def _process_server_drops(self, now: float) -> None:
        """``mjpeg_encoder_process_server_drops``: over a second of frames, > 10 % dropped lowers the rate."""
        fps = min(self._fps, self._source_fps)
        if self._server_encoded < fps * SERVER_STATUS_EVAL_FPS_INTERVAL:
            return
        total = self._server_dropped + self._server_encoded
        if self._server_dropped / total > SERVER_STATUS_DOWNGRADE_DROP_FACTOR_TH:
            self._decrease_bit_rate(now)
        self._server_encoded = 0
        self._server_dropped = 0
