"""Bit-rate control of the VP8 / VP9 / H.264 stream encoders, as libspice does it (sans-IO).

Counterpart of the rate-control half of spice-server ``server/gstreamer-encoder.c`` (the pixel half
is :mod:`spiceserver.codecs.video`). Same shape as :mod:`spiceserver.worker.mjpeg_rate`: no I/O, no
threads, no clock; every call that needs the time takes ``now_ms``, frame and report times are the
32-bit mm-times of the wire, and the method names mean what they mean there (:meth:`admit`,
:meth:`frame_encoded`, :meth:`client_report`, :meth:`server_drop`, :meth:`pop_playback_delay_request`).

Theory of operation
-------------------
One :class:`BitRateControl` per stream and client (libspice: one ``SpiceGstEncoder`` per
``VideoStreamAgent``). Codec encoders do not follow a target bit rate closely, so the control keeps
two rates:

* the **network bit rate** (:attr:`BitRateControl.target_bit_rate`, libspice ``bit_rate``): what the
  stream may send. It is enforced by a **virtual buffer** of 300 ms of data: each encoded frame refills
  it by ``rate x (time since the previous frame)`` (never above its size) and spends its own size.
  While the buffer is negative, frames whose mm-time comes before ``next_frame_mm_time`` are dropped
  before encoding (``update_next_frame_mm_time``: as many source periods as it takes to pay the debt,
  plus half a period). The buffer starts empty ("slow start"). If paying the debt would take more
  than 1/3 s (below 3 fps), the encoder's rate is lowered instead;
* the **encoder bit rate** (:attr:`BitRateControl.bit_rate`, libspice ``video_bit_rate``): what the
  codec is told, normally 4/3 of the network rate (``SPICE_GST_BITRATE_MARGIN``) so it need not be
  changed often. The codecs here cannot change it on the fly (see :mod:`spiceserver.codecs.video`),
  so, as libspice does for such encoders, it only moves when the change exceeds 5 %.

The network rate moves by **AIMD** between ``min_bit_rate`` (the last rate that let the stream
recover from congestion) and ``max_bit_rate`` (just below the last rate that caused it, at first the
**cap**: ``width x height x 32 bpp x source fps / 10``, a 10x compression). It rises by a step of a
tenth of the spread (128 kbit/s .. 1 Mbit/s) at most every ``increase_interval`` (2 s; once the spread
is narrower than 4/3 the rate settles at the minimum, STABLE, and rises again only after 2 min with
client reports, 4 h without); at the maximum for 30 s it probes the cap again. It never goes below
128 kbit/s.

* *Client reports* (``spice_gst_encoder_client_stream_report``) are scored from the video margin
  (how early the last frame arrived): 4 with drops; 0 when the margin is not shrinking; else 3 below
  0.3 of the minimum margin (a source period plus a tenth of the one-way latency) or of the largest
  margin seen, 2 below the minimum margin or half the largest, 1 below 3/4 of the largest; a margin
  falling fast (by more than 0.2 / 0.15 of the largest) adds 2 / 1. Above 3 the rate is cut in two,
  at 3 divided by 4/3, at 2 lowered by a step; an audio margin that halved while video is 1.25x ahead
  also lowers it by a step; a 1 while increasing, with the window's measured rate within the target,
  lowers it by a step; a 0 after ``increase_interval`` raises it. Reports about frames sent before
  the last decrease are ignored.
* *Server drops* (``handle_server_drops``: a frame replaced unsent by a newer one, counted by the
  stream through :meth:`BitRateControl.server_drop`): at the next frame the buffer is taken as full,
  a zero-byte frame is recorded (the frame is dropped), and the rate is cut in two when a second's
  worth of frames (``source_fps``) was dropped, else divided by 4/3.
* *Without client reports* the rate rises every ``increase_interval`` while the server drops nothing.
* *Playback delay* (``get_min_playback_delay``): the time to send the largest and an average frame
  at the network rate, plus 1.1 x the one-way latency, plus the average encoding time. It is requested
  (:meth:`BitRateControl.pop_playback_delay_request`) whenever the buffer makes frames drop.

The statistics (frame sizes, encoding times, the effective rate) cover the last 21 frames since the
last rate change, from a 60-frame history (``SPICE_GST_FRAME_STATISTICS_COUNT``, ``HISTORY_SIZE``).

Where this differs from the C, on purpose: mm-times are compared with wrap-around (signed 32-bit
differences; the C subtracts unsigned, so a report about a frame older than the last change counts
as ~49 days later); "not set" is ``None`` rather than 0; lowering the rate by a step when it is
not larger than the step gives the 128 kbit/s floor (the C's unsigned subtraction gives 0, read as
"the 8 Mbit/s default", or wraps around to the cap); a zero-length measuring window gives a rate of 0 instead of a division by zero; times
given out of order are taken as the latest time seen; the stream's first frame, not the first
``encode_frame`` call, anchors the history (the control is made knowing the size).

As for MJPEG, the stream (not this class) handles the report ``(0, 0xFFFFFFFF)`` (see
:func:`~spiceserver.worker.mjpeg_rate.report_means_unsupported`) and the three-failures rule
(``encoder->errors``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import Enum

from .mjpeg_rate import _check_u32, _mm_diff

__all__ = [
    "BitRateControl",
    "BitRateStats",
    "BitRateStatus",
    "DEFAULT_FPS",
    "MIN_BIT_RATE",
    "DEFAULT_BIT_RATE",
    "BITRATE_MAX_STEP",
    "VBUFFER_MS",
    "MAX_PERIOD_NS",
    "UP_INTERVAL_MS",
    "UP_CLIENT_STABLE_MS",
    "UP_SERVER_STABLE_MS",
    "UP_RESET_MAX_MS",
    "HISTORY_SIZE",
    "FRAME_STATISTICS_COUNT",
    "bit_rate_cap",
]

log = logging.getLogger("spiceserver.worker")

# --- gstreamer-encoder.c constants ---------------------------------------------------------------
DEFAULT_FPS = 30  # SPICE_GST_DEFAULT_FPS
MIN_BIT_RATE = 128 * 1024  # SPICE_GST_MIN_BITRATE, also the smallest step
DEFAULT_BIT_RATE = 8 * 1024 * 1024  # SPICE_GST_DEFAULT_BITRATE
VBUFFER_MS = 300  # SPICE_GST_VBUFFER_SIZE
_NS_PER_S = 1_000_000_000
_NS_PER_MS = 1_000_000
MAX_PERIOD_NS = _NS_PER_S // 3  # SPICE_GST_MAX_PERIOD: at least 3 fps
LATENCY_MARGIN = 0.1
BITRATE_CUT = 2
BITRATE_REDUCE = 4.0 / 3.0
BITRATE_MARGIN = BITRATE_REDUCE
BITRATE_MAX_STEP = 1024 * 1024
UP_INTERVAL_MS = 2_000
UP_CLIENT_STABLE_MS = 2 * 60_000
UP_SERVER_STABLE_MS = 4 * 3_600_000
UP_RESET_MAX_MS = 30_000
HISTORY_SIZE = 60
FRAME_STATISTICS_COUNT = 21
VIDEO_MARGIN_GOOD = 0.75
VIDEO_MARGIN_AVERAGE = 0.5
VIDEO_MARGIN_BAD = 0.3
VIDEO_DELTA_BAD = 0.2
VIDEO_DELTA_AVERAGE = 0.15
AUDIO_MARGIN_BAD = 0.5
AUDIO_VIDEO_RATIO = 1.25
VIDEO_BITRATE_MARGIN = 0.05  # SPICE_GST_VIDEO_BITRATE_MARGIN: don't reconfigure for less
BPP = 32  # the frames are 32-bit BGRX (format_map: SPICE_BITMAP_FMT_32BIT)


class BitRateStatus(Enum):
    """``SpiceGstBitRateStatus``: where the AIMD search is going."""

    DECREASING = "decreasing"
    INCREASING = "increasing"
    STABLE = "stable"


def bit_rate_cap(width: int, height: int, fps: int) -> int:
    """``get_bit_rate_cap``: the most a stream may use, a 10x compression of its 32-bit frames."""
    return width * height * BPP * fps // 10


@dataclass(frozen=True)
class BitRateStats:
    """A snapshot of a bit-rate control (``spice_gst_encoder_get_stats`` plus counters for metrics)."""

    starting_bit_rate: int
    bit_rate: int
    target_bit_rate: int
    effective_bit_rate: int
    min_bit_rate: int
    max_bit_rate: int
    status: str
    avg_quality: float
    vbuffer_free: int
    vbuffer_size: int
    avg_encode_ms: float
    frames_admitted: int
    frames_encoded: int
    bytes_encoded: int
    admission_drops: int
    server_drops: int
    bit_rate_decreases: int
    bit_rate_increases: int
    encoder_bit_rate_changes: int


class BitRateControl:
    """Network and encoder bit rates of one VP8/VP9/H.264 stream for one client (``SpiceGstEncoder``).

    Per frame the stream calls :meth:`admit`; when it says yes, it encodes at :attr:`bit_rate` and
    reports the size and encoding time with :meth:`frame_encoded`. Client STREAM_REPORTs go to
    :meth:`client_report`, frames the server replaced before encoding to :meth:`server_drop`.

    Args:
        bit_rate: the starting (network) bit rate in bit/s (see
            :func:`~spiceserver.worker.mjpeg_rate.starting_bit_rate`); 0 or ``None`` takes libspice's
            ``SPICE_GST_DEFAULT_BITRATE`` (8 Mbit/s). Capped at :func:`bit_rate_cap`.
        now_ms: the current monotonic time in milliseconds.
        width: the stream's frame width (for the cap).
        height: its frame height.
        source_fps: the stream's input frame rate estimate (``get_source_fps``); update it with
            :attr:`source_fps`.
        roundtrip_ms: the client's round trip (``get_roundtrip_ms``); update it with :attr:`roundtrip_ms`.
        encoder_rate_is_dynamic: whether the codec applies a new bit rate on the fly
            (``gstenc_bitrate_is_dynamic``); when not (PyAV's codecs), :attr:`bit_rate` only moves by
            more than 5 % at a time, since each move costs a codec restart and a keyframe.

    Raises:
        ValueError: a negative bit rate, a bad size or time, or a bad ``source_fps``/``roundtrip_ms``.
    """

    def __init__(
        self,
        bit_rate: int | None,
        now_ms: float,
        *,
        width: int,
        height: int,
        source_fps: int = DEFAULT_FPS,
        roundtrip_ms: int = 0,
        encoder_rate_is_dynamic: bool = False,
    ) -> None:
        if bit_rate is None:
            bit_rate = 0
        if isinstance(bit_rate, bool) or not isinstance(bit_rate, int) or bit_rate < 0:
            raise ValueError(f"starting bit rate {bit_rate!r} is not a non-negative integer")
        for name, value in (("width", width), ("height", height)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 65535:
                raise ValueError(f"{name}={value!r} is not in 1..65535")
        self._now = self._time(now_ms)
        self._width = width
        self._height = height
        self._source_fps = DEFAULT_FPS
        self._roundtrip_ms = 0
        self.source_fps = source_fps
        self.roundtrip_ms = roundtrip_ms
        self._dynamic = bool(encoder_rate_is_dynamic)
        self._starting_bit_rate = bit_rate

        # frame history: a ring of [mm_time, encode duration in ns, size]
        self._history: list[list[int]] = [[0, 0, 0] for _ in range(HISTORY_SIZE)]
        self._history_first = 0
        self._history_last = 0
        self._stat_first = 0
        self._stat_duration_sum = 0
        self._stat_size_sum = 0
        self._stat_size_max = 0
        self._anchored = False  # the first frame's mm-time is in history[0]

        self._bit_rate = 0
        self._video_bit_rate = 0
        self._vbuffer_size = 0
        self._vbuffer_free = 0
        self._next_frame_mm_time: int | None = None
        self._last_change = 0
        self._status = BitRateStatus.DECREASING
        self._max_bit_rate = bit_rate_cap(width, height, self._source_fps)
        self._min_bit_rate = MIN_BIT_RATE
        self._bit_rate_step = 0
        self._increase_interval = UP_INTERVAL_MS
        self._has_client_reports = False
        self._last_video_margin = 0
        self._max_video_margin = 0
        self._max_audio_margin = 0
        self._pending_server_drops = 0
        self._admitted_mm_time: int | None = None
        self._playback_delay_request: int | None = None
        self._warned_slow = False
        # stats
        self._frames_admitted = 0
        self._frames_encoded = 0
        self._bytes_encoded = 0
        self._admission_drops = 0
        self._server_drops = 0
        self._decreases = 0
        self._increases = 0
        self._video_changes = 0

        # spice_gst_encoder_encode_frame's first-frame set-up (bit_rate == 0)
        self._set_bit_rate(self._starting_bit_rate)
        self._vbuffer_free = 0  # slow start
        self._video_changes = 0

    # --- inputs ----------------------------------------------------------------------------------

    @property
    def source_fps(self) -> int:
        """The stream's input fps (``get_source_fps``)."""
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
        """Whether to encode a frame now or drop it (the rate checks of ``spice_gst_encoder_encode_frame``).

        Server drops counted since the last frame are handled first (and drop this frame); then a
        frame earlier than ``next_frame_mm_time`` is dropped to keep within the network rate. A yes
        means the caller encodes at :attr:`bit_rate` and calls :meth:`frame_encoded` (or nothing, if
        the encoding failed).

        Args:
            now_ms: the current monotonic time in milliseconds.
            frame_mm_time: the frame's mm-time (when the worker took it in).

        Raises:
            ValueError: a bad time or an mm-time that is not a u32.
        """
        self._advance(now_ms)
        _check_u32("frame_mm_time", frame_mm_time)
        if not self._anchored:
            self._anchored = True
            self._history[0][0] = frame_mm_time
            self._last_change = frame_mm_time
            self._next_frame_mm_time = frame_mm_time
        if self._handle_server_drops(frame_mm_time) or (
            self._next_frame_mm_time is not None and _mm_diff(frame_mm_time, self._next_frame_mm_time) < 0
        ):
            self._admission_drops += 1
            self._admitted_mm_time = None
            return False
        self._admitted_mm_time = frame_mm_time
        self._frames_admitted += 1
        return True

    def frame_encoded(self, size: int, now_ms: float, encode_ms: float = 0.0) -> None:
        """Record the frame just encoded (the end of ``spice_gst_encoder_encode_frame``).

        Args:
            size: its size in bytes (positive).
            now_ms: the current monotonic time in milliseconds.
            encode_ms: how long the conversion and encoding took, in ms (libspice times the push
                into and the pull out of its pipeline).

        Raises:
            ValueError: no frame was admitted since the last call, a non-positive size, a negative
                or non-finite encoding time, or a bad time.
        """
        self._advance(now_ms)
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"encoded size {size!r} is not a positive integer")
        if isinstance(encode_ms, bool) or not isinstance(encode_ms, int | float) or not 0 <= encode_ms < 1e9:
            raise ValueError(f"encode_ms={encode_ms!r} is not a duration")
        mm = self._admitted_mm_time
        if mm is None:
            raise ValueError("frame_encoded without an admitted frame")
        self._admitted_mm_time = None
        last_mm = self._last_frame_mm_time()
        self._add_frame(mm, int(encode_ms * _NS_PER_MS), size)
        refill = self._bit_rate * max(0, _mm_diff(mm, last_mm)) // 1000 // 8
        self._vbuffer_free = min(self._vbuffer_free + refill, self._vbuffer_size) - size
        self._frames_encoded += 1
        self._bytes_encoded += size
        # server_increase_bit_rate: without client reports, raise the rate now and then
        if (
            not self._has_client_reports
            and self._pending_server_drops == 0
            and _mm_diff(mm, self._last_change) >= self._increase_interval
        ):
            self._increase_bit_rate()
        self._update_next_frame_mm_time()

    def server_drop(self, now_ms: float) -> None:
        """A frame of this stream was replaced unsent by a newer one (``notify_server_frame_drop``).

        It is accounted for when the next frame comes to :meth:`admit`.

        Raises:
            ValueError: a bad time.
        """
        self._advance(now_ms)
        self._pending_server_drops += 1
        self._server_drops += 1

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
        """React to a client STREAM_REPORT (``spice_gst_encoder_client_stream_report``).

        Args:
            num_frames: frames the client received in the report's window.
            num_drops: of those, frames it dropped (late or undecodable).
            start_frame_mm_time: mm-time of the window's first frame.
            end_frame_mm_time: mm-time of its last frame.
            end_frame_delay: ``last_frame_delay``, the video margin: how long before its display time
                the last frame arrived, in ms (negative: late), an i32.
            audio_delay: the audio margin (playback latency) in ms, 0xFFFFFFFF without audio.
            now_ms: the current monotonic time in milliseconds.

        Raises:
            ValueError: a field out of its wire range, or a bad time.
        """
        self._advance(now_ms)
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
        video_margin = end_frame_delay
        audio_margin = audio_delay
        self._has_client_reports = True
        self._max_video_margin = max(self._max_video_margin, video_margin)
        self._max_audio_margin = max(self._max_audio_margin, audio_margin)
        margin_delta = video_margin - self._last_video_margin
        self._last_video_margin = video_margin
        period_bit_rate = self._period_bit_rate(start_frame_mm_time, end_frame_mm_time)
        if self._status == BitRateStatus.DECREASING and _mm_diff(start_frame_mm_time, self._last_change) < 0:
            return  # about frames from before the last decrease

        # even the largest frames should arrive a bit over one period before they are shown
        min_margin = int(1000 // self._source_fps + self._latency() * LATENCY_MARGIN)
        max_margin = self._max_video_margin
        if num_drops:
            score = 4
        elif margin_delta >= 0:
            score = 0  # bad, perhaps, but improving
        elif video_margin < min_margin * VIDEO_MARGIN_BAD or video_margin < max_margin * VIDEO_MARGIN_BAD:
            score = 3
        elif video_margin < min_margin or video_margin < max_margin * VIDEO_MARGIN_AVERAGE:
            score = 2
        elif video_margin < max_margin * VIDEO_MARGIN_GOOD:
            score = 1
        else:
            score = 0
        # a fast falling margin makes it worse
        if margin_delta < -abs(max_margin) * VIDEO_DELTA_BAD:
            score += 2
        elif margin_delta < -abs(max_margin) * VIDEO_DELTA_AVERAGE:
            score += 1

        if score > 3:
            self._set_bit_rate(self._lowered(BITRATE_CUT))
        elif score == 3:
            self._set_bit_rate(self._lowered(BITRATE_REDUCE))
        elif score == 2:
            self._set_bit_rate(self._stepped_down())
        elif audio_margin < self._max_audio_margin * AUDIO_MARGIN_BAD and audio_margin * AUDIO_VIDEO_RATIO < video_margin:
            # the audio margin fell a lot while video kept ahead: video may starve audio
            self._set_bit_rate(self._stepped_down())
        elif score == 1 and period_bit_rate <= self._bit_rate and self._status == BitRateStatus.INCREASING:
            # worse since the last increase, and not from a passing peak
            self._set_bit_rate(self._stepped_down())
        elif score == 0 and _mm_diff(self._last_frame_mm_time(), self._last_change) >= self._increase_interval:
            self._increase_bit_rate()

    # --- outputs ---------------------------------------------------------------------------------

    @property
    def bit_rate(self) -> int:
        """The bit rate the encoder should use now, in bit/s (libspice ``video_bit_rate``)."""
        return self._video_bit_rate

    @property
    def target_bit_rate(self) -> int:
        """The network bit rate the stream is held to, in bit/s (libspice ``bit_rate``)."""
        return self._bit_rate

    @property
    def effective_bit_rate(self) -> int:
        """The bit rate of the recent frames, in bit/s (``get_effective_bit_rate``; libspice's
        ``get_bit_rate``, which seeds the client's next stream when this one stops)."""
        next_mm = self._next_frame_mm_time
        if next_mm is None:
            next_mm = (self._last_frame_mm_time() + 1000 // self._source_fps) & 0xFFFFFFFF
        elapsed = _mm_diff(next_mm, self._history[self._stat_first][0])
        return self._stat_size_sum * 8 * 1000 // elapsed if elapsed > 0 else 0

    @property
    def status(self) -> BitRateStatus:
        """Whether the network rate is being lowered, raised, or has settled."""
        return self._status

    def min_playback_delay(self) -> int:
        """The client playback delay the recent frames need, in ms (``get_min_playback_delay``)."""
        size = self._maximum_frame_size() + self._average_frame_size()
        send_time = 1000 * 8 * size // self._bit_rate
        net_latency = int(self._latency() * (1.0 + LATENCY_MARGIN))
        return send_time + net_latency + self._average_encoding_time() // _NS_PER_MS

    def pop_playback_delay_request(self) -> int | None:
        """The latest playback delay (ms) the control asked for since the last call, if any.

        libspice's ``update_client_playback_delay``, called whenever the virtual buffer makes frames
        drop; the stream raises the mm-time latency to the largest request.
        """
        request, self._playback_delay_request = self._playback_delay_request, None
        return request

    @property
    def stats(self) -> BitRateStats:
        """A snapshot of the state and counters."""
        effective = self.effective_bit_rate
        raw = self._width * self._height * BPP * self._source_fps
        return BitRateStats(
            starting_bit_rate=self._starting_bit_rate,
            bit_rate=self._video_bit_rate,
            target_bit_rate=self._bit_rate,
            effective_bit_rate=effective,
            min_bit_rate=self._min_bit_rate,
            max_bit_rate=self._max_bit_rate,
            status=self._status.value,
            # the compression level as a proxy for the quality, as libspice reports it
            avg_quality=max(0.0, 100.0 - raw // effective) if effective else 0.0,
            vbuffer_free=self._vbuffer_free,
            vbuffer_size=self._vbuffer_size,
            avg_encode_ms=self._average_encoding_time() / _NS_PER_MS,
            frames_admitted=self._frames_admitted,
            frames_encoded=self._frames_encoded,
            bytes_encoded=self._bytes_encoded,
            admission_drops=self._admission_drops,
            server_drops=self._server_drops,
            bit_rate_decreases=self._decreases,
            bit_rate_increases=self._increases,
            encoder_bit_rate_changes=self._video_changes,
        )

    # --- internals: time -------------------------------------------------------------------------

    @staticmethod
    def _time(now_ms: float) -> float:
        if isinstance(now_ms, bool) or not isinstance(now_ms, int | float) or not math.isfinite(now_ms):
            raise ValueError(f"now_ms={now_ms!r} is not a finite number")
        return float(now_ms)

    def _advance(self, now_ms: float) -> float:
        self._now = max(self._now, self._time(now_ms))
        return self._now

    def _latency(self) -> int:
        """``get_network_latency``: half the round trip."""
        return self._roundtrip_ms // 2

    # --- internals: frame statistics -------------------------------------------------------------

    def _last_frame_mm_time(self) -> int:
        return self._history[self._history_last][0]

    def _stat_count(self) -> int:
        last, first = self._history_last, self._stat_first
        return last + (HISTORY_SIZE if last < first else 0) - first + 1

    def _average_encoding_time(self) -> int:
        return self._stat_duration_sum // self._stat_count()

    def _average_frame_size(self) -> int:
        return self._stat_size_sum // self._stat_count()

    def _maximum_frame_size(self) -> int:
        """``get_maximum_frame_size``: recomputed only when the largest frame left the statistics."""
        if self._stat_size_max == 0:
            index = self._history_last
            while True:
                self._stat_size_max = max(self._stat_size_max, self._history[index][2])
                if index == self._stat_first:
                    break
                index = (index or HISTORY_SIZE) - 1
        return self._stat_size_max

    def _period_bit_rate(self, start: int, end: int) -> int:
        """``get_period_bit_rate``: the bit rate of the frames from mm-time ``start`` to ``end``.

        The last frame of the period is left out (nothing says how long it took to send) unless the
        history has the frame after it. 0 when the period is not in the history.
        """
        total = 0
        last_mm: int | None = None
        index = self._history_last
        while True:
            mm, _, size = self._history[index]
            if mm == end:
                if last_mm is None:
                    total, last_mm = 1, end
                else:
                    total = size + 1
            elif mm == start:
                total += size
                elapsed = _mm_diff(last_mm, start) if last_mm is not None else 0
                return (total - 1) * 8 * 1000 // elapsed if elapsed > 0 else 0
            elif total > 0:
                total += size
            else:
                last_mm = mm
            if index == self._history_first:
                return 0  # outside the recorded history
            index = (index or HISTORY_SIZE) - 1

    def _add_frame(self, mm_time: int, duration_ns: int, size: int) -> None:
        """``add_frame``: slide the statistics window and append to the history."""
        if self._stat_count() == FRAME_STATISTICS_COUNT:
            oldest = self._history[self._stat_first]
            self._stat_duration_sum -= oldest[1]
            self._stat_size_sum -= oldest[2]
            if self._stat_size_max == oldest[2]:
                self._stat_size_max = 0
            self._stat_first = (self._stat_first + 1) % HISTORY_SIZE
        self._stat_duration_sum += duration_ns
        self._stat_size_sum += size
        if self._stat_size_max > 0 and size > self._stat_size_max:
            self._stat_size_max = size
        self._history_last = (self._history_last + 1) % HISTORY_SIZE
        if self._history_last == self._history_first:
            self._history_first = (self._history_first + 1) % HISTORY_SIZE
        self._history[self._history_last] = [mm_time, duration_ns, size]

    # --- internals: encoder bit rate ---------------------------------------------------------------

    def _set_video_bit_rate(self, bit_rate: int) -> None:
        """``set_video_bit_rate``: a dynamic encoder follows every change, others only > 5 % ones."""
        bit_rate = int(bit_rate)
        if (self._dynamic and bit_rate != self._video_bit_rate) or abs(bit_rate - self._video_bit_rate) > (
            self._video_bit_rate * VIDEO_BITRATE_MARGIN
        ):
            self._video_bit_rate = bit_rate
            self._video_changes += 1

    def _update_next_frame_mm_time(self) -> None:
        """``update_next_frame_mm_time``: when the next frame may come, given the virtual buffer."""
        period_ns = _NS_PER_S // self._source_fps
        min_delay_ns = self._average_encoding_time()
        if min_delay_ns > period_ns and not self._warned_slow:
            self._warned_slow = True
            log.warning(
                "encoding %dx%d@%d video takes %.1f ms a frame: too slow for real time",
                self._width,
                self._height,
                self._source_fps,
                min_delay_ns / _NS_PER_MS,
            )
        min_delay_ns = min(min_delay_ns, MAX_PERIOD_NS)
        last = self._last_frame_mm_time()
        if self._vbuffer_free >= 0:
            self._next_frame_mm_time = (last + min_delay_ns // _NS_PER_MS) & 0xFFFFFFFF
            return
        # how many frames to drop to stay within the bit rate
        delay_ns = -self._vbuffer_free * 8 * _NS_PER_S // self._bit_rate
        drops = -(-delay_ns // period_ns)
        delay_ns = drops * period_ns + period_ns // 2
        if delay_ns > MAX_PERIOD_NS:
            # rather than dropping so many frames, have the encoder make smaller ones
            if self._video_bit_rate > self._bit_rate * BITRATE_MARGIN:
                self._set_video_bit_rate(int(self._bit_rate * BITRATE_MARGIN))
            else:
                self._set_video_bit_rate(self._bit_rate)
            delay_ns = MAX_PERIOD_NS
        self._next_frame_mm_time = (last + max(delay_ns, min_delay_ns) // _NS_PER_MS) & 0xFFFFFFFF
        # dropped frames mean a longer wait between frames: the client needs a longer delay
        self._playback_delay_request = self.min_playback_delay()

    # --- internals: network bit rate ---------------------------------------------------------------

    def _stepped_down(self) -> int:
        """The rate one step lower, 128 kbit/s at least (the C's unsigned subtraction can reach 0,
        which ``set_bit_rate`` reads as "the default", or wrap around to the cap)."""
        return max(MIN_BIT_RATE, self._bit_rate - self._bit_rate_step)

    def _lowered(self, divisor: float) -> int:
        """The rate divided by ``divisor``, but not below the known-good minimum unless already there."""
        lowered = int(self._bit_rate / divisor)
        return lowered if self._bit_rate == self._min_bit_rate else max(self._min_bit_rate, lowered)

    def _set_bit_rate(self, bit_rate: int) -> None:
        """``set_bit_rate``: move the network rate and the AIMD bounds; restart the statistics."""
        if bit_rate == 0:
            bit_rate = DEFAULT_BIT_RATE
        if bit_rate == self._bit_rate:
            return
        if bit_rate < MIN_BIT_RATE:
            bit_rate = MIN_BIT_RATE  # not too low
        elif bit_rate > self._bit_rate:
            bit_rate = min(bit_rate, bit_rate_cap(self._width, self._height, self._source_fps))  # nor too high
        old = self._bit_rate
        if bit_rate < self._min_bit_rate:
            self._min_bit_rate = bit_rate
            self._bit_rate_step = 0
        elif self._status == BitRateStatus.DECREASING and bit_rate > self._bit_rate:
            self._min_bit_rate = self._bit_rate
            self._bit_rate_step = 0
        elif self._status != BitRateStatus.DECREASING and bit_rate < self._bit_rate:
            self._max_bit_rate = self._bit_rate - MIN_BIT_RATE
            self._bit_rate_step = 0
        self._increase_interval = UP_INTERVAL_MS

        if self._bit_rate_step == 0:
            spread = self._max_bit_rate - self._min_bit_rate
            self._bit_rate_step = max(MIN_BIT_RATE, min(BITRATE_MAX_STEP, spread // 10))
            self._status = BitRateStatus.DECREASING if bit_rate < self._bit_rate else BitRateStatus.INCREASING
            if self._max_bit_rate / BITRATE_MARGIN < self._min_bit_rate:
                # the range is narrow enough: settle at its safe end and stop rocking the boat
                bit_rate = self._min_bit_rate
                self._status = BitRateStatus.STABLE
                self._increase_interval = UP_CLIENT_STABLE_MS if self._has_client_reports else UP_SERVER_STABLE_MS
                self._set_video_bit_rate(bit_rate)

        self._last_change = self._last_frame_mm_time()
        self._bit_rate = bit_rate
        if old and bit_rate < old:
            self._decreases += 1
        elif old and bit_rate > old:
            self._increases += 1
        # resize the virtual buffer without ever adding free space (no sudden bursts)
        new_size = bit_rate * VBUFFER_MS // 1000 // 8
        if new_size < self._vbuffer_size and self._vbuffer_free > 0:
            self._vbuffer_free = max(0, self._vbuffer_free + new_size - self._vbuffer_size)
        self._vbuffer_size = new_size
        self._update_next_frame_mm_time()

        # frames from before the change say nothing about the new situation
        last = self._history[self._history_last]
        self._stat_first = self._history_last
        self._stat_duration_sum = last[1]
        self._stat_size_sum = self._stat_size_max = last[2]

        if bit_rate > self._video_bit_rate:
            self._set_video_bit_rate(int(bit_rate * BITRATE_MARGIN))

    def _increase_bit_rate(self) -> None:
        """``increase_bit_rate``: one step up, if the stream uses what it has."""
        if self.effective_bit_rate < self._bit_rate:
            return  # the encoder does not even use the current rate
        if (
            self._bit_rate == self._max_bit_rate
            and _mm_diff(self._last_frame_mm_time(), self._last_change) > UP_RESET_MAX_MS
        ):
            # the maximum held for a long while: it was probably too low, probe again
            self._max_bit_rate = bit_rate_cap(self._width, self._height, self._source_fps)
            self._status = BitRateStatus.INCREASING
        self._set_bit_rate(min(self._bit_rate + self._bit_rate_step, self._max_bit_rate))

    def _handle_server_drops(self, frame_mm_time: int) -> bool:
        """``handle_server_drops``: frames replaced unsent mean the link is full; drop this one too."""
        if self._pending_server_drops == 0:
            return False
        self._vbuffer_free = min(self._vbuffer_free, 0)  # the buffer is clearly full
        # a zero-byte frame, so the time spent dropping is not counted as refilling the buffer
        self._add_frame(frame_mm_time, 0, 0)
        divisor = BITRATE_CUT if self._pending_server_drops >= self._source_fps else BITRATE_REDUCE
        self._set_bit_rate(self._lowered(divisor))
        self._pending_server_drops = 0
        return True
