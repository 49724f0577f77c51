"""The video encoder of one stream for one client: rate control on the worker, pixels on an encoder thread.

Counterpart of libspice's ``VideoEncoder`` interface (spice-server ``server/video-encoder.h``) and of
the encoder choice and the error rule around it (``server/video-stream.cpp``
``dcc_create_video_encoder``, ``server/gstreamer-encoder.c`` ``encoder->errors``). Two kinds:

* MJPEG: :class:`~spiceserver.worker.mjpeg_rate.MjpegRateControl` +
  :func:`~spiceserver.codecs.mjpeg.encode_mjpeg_frame` (libspice ``mjpeg-encoder.c``);
* VP8, VP9, H.264: :class:`~spiceserver.worker.video_rate.BitRateControl` +
  :class:`~spiceserver.codecs.video.AvFrameEncoder` (libspice ``gstreamer-encoder.c``), when PyAV is
  installed (:func:`~spiceserver.codecs.video.available_codecs`).

Threads. libspice encodes synchronously on the worker thread. Here the work is split so the worker
never waits for a codec: :meth:`StreamEncoder.admit` runs on the worker thread, asks the rate
control whether to encode the frame and, if so, captures the parameters for it (MJPEG quality;
bit rate and keyframe flag) in an :class:`EncodeJob`; :meth:`EncodeJob.run` runs on an encoder
thread and touches only the codec object and those parameters; the worker then reports the
outcome with :meth:`StreamEncoder.frame_encoded`. Rate-control state is only ever touched on the
worker thread.

Call order, per stream encoder: ``admit`` -> ``job.run`` -> ``frame_encoded`` (when ``run`` gave
bytes) before the next ``admit``; at most one job runs at a time. ``client_report``,
``server_drop`` and ``pop_playback_delay_request`` may come at any time on the worker thread.
(Newest frame wins before encoding, libspice ``video-stream.cpp`` ``before_reattach_stream``: the
worker keeps one raw frame per stream and admits it when it is about to encode it.)

Errors. A frame the codec fails on goes as an ordinary image (``run`` returns ``None``; libspice's
``VIDEO_ENCODER_FRAME_UNSUPPORTED``); after three consecutive failures at one frame size, ``run``
returns ``None`` without trying until the size changes.

Keyframes for spice-html5. spice-html5 (``display.js`` ``process_video_stream_data``) wraps each VP8
frame in a WebM SimpleBlock and starts a new cluster, whose first block it flags as a keyframe
whatever it holds, at the first frame and then at the first frame at least 1000 ms of mm-time
(``MAX_CLUSTER_TIME``) after the cluster's first. The VP8 stream encoder follows the same rule and
forces a keyframe on exactly those frames (counting only frames that were sent as stream data), so
each cluster does start on a keyframe.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

import numpy as np

from ..codecs.mjpeg import encode_mjpeg_frame
from ..codecs.video import MAX_BIT_RATE, MIN_BIT_RATE, AvFrameEncoder, available_codecs
from ..errors import VideoCodecUnavailable, VideoEncodeError
from ..proto.enums import VideoCodecType
from .mjpeg_rate import MjpegRateControl, _check_u32, _mm_diff
from .video_rate import BitRateControl

__all__ = [
    "EncodeJob",
    "StreamEncoder",
    "MjpegStreamEncoder",
    "AvStreamEncoder",
    "make_stream_encoder",
    "MAX_CONSECUTIVE_ERRORS",
    "DEFAULT_KEYFRAME_INTERVAL_MS",
]

#: Consecutive failures at one frame size after which frames of that size go as images.
MAX_CONSECUTIVE_ERRORS = 3
#: Forced keyframe spacing per codec, in ms of mm-time (None: the codec's own GOP only).
DEFAULT_KEYFRAME_INTERVAL_MS: dict[VideoCodecType, int | None] = {
    VideoCodecType.VP8: 1000,  # spice-html5's MAX_CLUSTER_TIME
    VideoCodecType.VP9: None,
    VideoCodecType.H264: None,
}


class _ErrorGate:
    """``encoder->errors``: consecutive failures at the current frame size (touched only by ``run``)."""

    def __init__(self) -> None:
        self.size: tuple[int, int] | None = None
        self.errors = 0

    def blocked(self, pixels: Any) -> bool:
        shape = (int(pixels.shape[0]), int(pixels.shape[1])) if isinstance(pixels, np.ndarray) and pixels.ndim == 2 else None
        if shape != self.size:
            self.size = shape
            self.errors = 0
        return self.errors >= MAX_CONSECUTIVE_ERRORS

    def failed(self) -> None:
        self.errors += 1

    def succeeded(self) -> None:
        self.errors = 0


class EncodeJob:
    """One admitted frame's encoding, made by :meth:`StreamEncoder.admit` on the worker thread.

    Attributes:
        mm_time: the frame's mm-time, as given to ``admit``.
        keyframe: whether a keyframe is forced (VP8/VP9/H.264).
        encode_ms: after :meth:`run`, the wall time it took (conversion included), in ms.
    """

    __slots__ = ("encode_ms", "keyframe", "mm_time")

    def __init__(self, mm_time: int, keyframe: bool = False) -> None:
        self.mm_time = mm_time
        self.keyframe = keyframe
        self.encode_ms = 0.0

    def run(self, pixels: np.ndarray) -> bytes | None:
        """Encode the frame (on an encoder thread; the GIL is released while the codec works).

        Args:
            pixels: the frame, an (h, w) ``uint32`` array of 0x00RRGGBB pixels (a strided view is
                fine), top row first; unchanged until this returns.

        Returns:
            The stream data (a JPEG, an Annex-B access unit, a raw VP8/VP9 frame), or ``None``:
            the codec cannot do this frame, send it as an image.
        """
        raise NotImplementedError

    def share_key(self) -> tuple[object, ...] | None:
        """What makes this job's output the same as another client's job on the same frame, or
        None when it cannot be shared (a stateful codec: each client's encoder has its own
        reference frames). Used by :class:`~spiceserver.worker.shared_encode.SharedFrames`."""
        return None


class _MjpegJob(EncodeJob):
    __slots__ = ("_gate", "_quality")

    def __init__(self, mm_time: int, quality: int, gate: _ErrorGate) -> None:
        super().__init__(mm_time)
        self._quality = quality
        self._gate = gate

    def share_key(self) -> tuple[object, ...]:
        """MJPEG frames are independent JPEGs: the same frame at the same quality is the same bytes."""
        return ("mjpeg", self._quality)

    def run(self, pixels: np.ndarray) -> bytes | None:
        t0 = time.perf_counter()
        try:
            if self._gate.blocked(pixels):
                return None
            try:
                data = encode_mjpeg_frame(pixels, self._quality)
            except ValueError:
                self._gate.failed()
                return None
            self._gate.succeeded()
            return data
        finally:
            self.encode_ms = (time.perf_counter() - t0) * 1000.0


class _AvCodec:
    """The codec side of an AV stream: the encoder, its error gate, and a lock against ``close``."""

    def __init__(self, encoder: AvFrameEncoder) -> None:
        self.encoder = encoder
        self.gate = _ErrorGate()
        self.lock = threading.Lock()
        self.closed = False


class _AvJob(EncodeJob):
    __slots__ = ("_bit_rate", "_codec")

    def __init__(self, mm_time: int, bit_rate: int, keyframe: bool, codec: _AvCodec) -> None:
        super().__init__(mm_time, keyframe)
        self._bit_rate = bit_rate
        self._codec = codec

    def run(self, pixels: np.ndarray) -> bytes | None:
        t0 = time.perf_counter()
        codec = self._codec
        try:
            with codec.lock:
                if codec.closed or codec.gate.blocked(pixels):
                    return None
                try:
                    codec.encoder.bit_rate = self._bit_rate
                    data = codec.encoder.encode(pixels, keyframe=self.keyframe)
                except (ValueError, VideoEncodeError):
                    codec.gate.failed()
                    return None
                codec.gate.succeeded()
                return data
        finally:
            self.encode_ms = (time.perf_counter() - t0) * 1000.0


class StreamEncoder:
    """What the worker drives for one stream and one client (libspice ``VideoEncoder``).

    Use :func:`make_stream_encoder`. Every method runs on the worker thread; only
    :meth:`EncodeJob.run` runs elsewhere.
    """

    codec: VideoCodecType

    def __init__(self, codec: VideoCodecType) -> None:
        self.codec = codec
        self._closed = False
        self._admitted: EncodeJob | None = None
        self._frames_encoded = 0
        self._bytes_encoded = 0
        self._encode_ms_total = 0.0

    # --- to implement ------------------------------------------------------------------------------

    def _admit(self, now_ms: float, mm_time: int) -> EncodeJob | None:
        raise NotImplementedError

    def _rate_encoded(self, size: int, now_ms: float, encode_ms: float) -> None:
        raise NotImplementedError

    def _rate(self) -> MjpegRateControl | BitRateControl:
        raise NotImplementedError

    def _rate_stats(self) -> dict[str, int | float]:
        raise NotImplementedError

    def _close_codec(self) -> None:
        pass

    # --- the interface -------------------------------------------------------------------------------

    def admit(self, now_ms: float, mm_time: int) -> EncodeJob | None:
        """Whether to encode this frame; a job to run if so, ``None`` to drop it (rate control).

        Args:
            now_ms: the current monotonic time in milliseconds.
            mm_time: the frame's mm-time (when the worker took it in; the STREAM_DATA stamp).

        Raises:
            ValueError: a bad time or mm-time.
        """
        _check_u32("mm_time", mm_time)
        if self._closed:
            self._admitted = None
            return None
        job = self._admit(now_ms, mm_time)
        self._admitted = job
        return job

    def frame_encoded(self, size: int, now_ms: float, encode_ms: float) -> None:
        """The admitted frame was encoded into ``size`` bytes in ``encode_ms`` ms (and is being sent).

        Raises:
            ValueError: no job was admitted since the last call, a non-positive size or a bad time.
        """
        if self._admitted is None:
            raise ValueError("frame_encoded without an admitted frame")
        self._rate_encoded(size, now_ms, encode_ms)
        self._frame_sent(self._admitted)
        self._admitted = None
        self._frames_encoded += 1
        self._bytes_encoded += size
        self._encode_ms_total += encode_ms

    def _frame_sent(self, job: EncodeJob) -> None:
        pass

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
        """A client STREAM_REPORT for this stream (its ids already checked by the stream).

        The report ``(0, 0xFFFFFFFF)`` (the client cannot decode) is the stream's business: see
        :func:`~spiceserver.worker.mjpeg_rate.report_means_unsupported`.

        Raises:
            ValueError: a field out of its wire range, or a bad time.
        """
        self._rate().client_report(
            num_frames, num_drops, start_frame_mm_time, end_frame_mm_time, end_frame_delay, audio_delay, now_ms
        )

    def server_drop(self, now_ms: float) -> None:
        """A frame of this stream was replaced unsent by a newer one."""
        self._rate().server_drop(now_ms)

    def pop_playback_delay_request(self) -> int | None:
        """The latest client playback delay (ms) the rate control asked for since the last call."""
        return self._rate().pop_playback_delay_request()

    @property
    def source_fps(self) -> int:
        """The stream's input fps estimate (settable; libspice ``get_source_fps``)."""
        return self._rate().source_fps

    @source_fps.setter
    def source_fps(self, value: int) -> None:
        self._rate().source_fps = value

    @property
    def roundtrip_ms(self) -> int:
        """The client's round trip in ms (settable; libspice ``get_roundtrip_ms``)."""
        return self._rate().roundtrip_ms

    @roundtrip_ms.setter
    def roundtrip_ms(self, value: int) -> None:
        self._rate().roundtrip_ms = value

    @property
    def bit_rate(self) -> int:
        """The stream's bit rate in bit/s as libspice's ``get_bit_rate`` reports it: the rate that
        seeds this client's next stream when this one stops (``dcc->streams_max_bit_rate``)."""
        raise NotImplementedError

    def stats(self) -> dict[str, int | float]:
        """Counters and state for metrics: frames, bytes, drops, encode time, rates."""
        out: dict[str, int | float] = {
            "codec": int(self.codec),
            "bit_rate": self.bit_rate,
            "frames_encoded": self._frames_encoded,
            "bytes_encoded": self._bytes_encoded,
            "encode_ms_total": self._encode_ms_total,
            "encode_ms_avg": self._encode_ms_total / self._frames_encoded if self._frames_encoded else 0.0,
        }
        out.update(self._rate_stats())
        return out

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Free the codec (waits for a running job to finish); ``admit`` says no afterwards. Idempotent."""
        if not self._closed:
            self._closed = True
            self._admitted = None
            self._close_codec()


class MjpegStreamEncoder(StreamEncoder):
    """MJPEG: libspice's builtin ``mjpeg-encoder.c`` (quality ladder, fps and byte-rate control)."""

    def __init__(self, *, bit_rate: int, now_ms: float, source_fps: int, roundtrip_ms: int) -> None:
        super().__init__(VideoCodecType.MJPEG)
        self._rc = MjpegRateControl(bit_rate, now_ms, source_fps=source_fps, roundtrip_ms=roundtrip_ms)
        self._gate = _ErrorGate()

    @property
    def rate_control(self) -> MjpegRateControl:
        """The rate control (read its state; drive it through this object)."""
        return self._rc

    def _rate(self) -> MjpegRateControl:
        return self._rc

    def _admit(self, now_ms: float, mm_time: int) -> EncodeJob | None:
        if not self._rc.admit(now_ms, mm_time):
            return None
        return _MjpegJob(mm_time, self._rc.quality(), self._gate)

    def _rate_encoded(self, size: int, now_ms: float, encode_ms: float) -> None:
        self._rc.frame_encoded(size, now_ms)

    @property
    def bit_rate(self) -> int:
        """The byte rate x 8 (``mjpeg_encoder_get_bit_rate``)."""
        return self._rc.bit_rate

    def _rate_stats(self) -> dict[str, int | float]:
        s = self._rc.stats
        return {
            "quality": s.quality,
            "fps": s.fps,
            "frames_admitted": s.frames_admitted,
            "admission_drops": s.admission_drops,
            "server_drops": s.server_drops,
            "bit_rate_decreases": s.bit_rate_decreases,
            "bit_rate_increases": s.bit_rate_increases,
        }


class AvStreamEncoder(StreamEncoder):
    """VP8, VP9 or H.264: libspice's ``gstreamer-encoder.c`` (AIMD bit rate, virtual buffer)."""

    def __init__(
        self,
        codec: VideoCodecType,
        width: int,
        height: int,
        *,
        bit_rate: int,
        now_ms: float,
        source_fps: int,
        roundtrip_ms: int,
        keyframe_interval_ms: int | None,
        threads: int = 1,
    ) -> None:
        super().__init__(codec)
        if keyframe_interval_ms is not None and (
            isinstance(keyframe_interval_ms, bool) or not isinstance(keyframe_interval_ms, int) or keyframe_interval_ms <= 0
        ):
            raise ValueError(f"keyframe_interval_ms={keyframe_interval_ms!r} is not positive")
        self._rc = BitRateControl(
            bit_rate, now_ms, width=width, height=height, source_fps=source_fps, roundtrip_ms=roundtrip_ms
        )
        encoder = AvFrameEncoder(
            codec, width, height, bit_rate=self._codec_bit_rate(), fps=source_fps, threads=threads
        )
        self._codec = _AvCodec(encoder)
        self._keyframe_interval_ms = keyframe_interval_ms
        self._cluster_mm: int | None = None  # mm-time of the last keyframe sent (html5's cluster start)
        self._forced_keyframes = 0

    @property
    def rate_control(self) -> BitRateControl:
        """The rate control (read its state; drive it through this object)."""
        return self._rc

    def _rate(self) -> BitRateControl:
        return self._rc

    def _admit(self, now_ms: float, mm_time: int) -> EncodeJob | None:
        if not self._rc.admit(now_ms, mm_time):
            return None
        interval = self._keyframe_interval_ms
        keyframe = interval is not None and (self._cluster_mm is None or _mm_diff(mm_time, self._cluster_mm) >= interval)
        return _AvJob(mm_time, self._codec_bit_rate(), keyframe, self._codec)

    def _codec_bit_rate(self) -> int:
        """The rate control's encoder rate, within what the codec takes (tiny streams have tiny caps)."""
        return max(MIN_BIT_RATE, min(self._rc.bit_rate, MAX_BIT_RATE))

    def _rate_encoded(self, size: int, now_ms: float, encode_ms: float) -> None:
        self._rc.frame_encoded(size, now_ms, encode_ms)

    def _frame_sent(self, job: EncodeJob) -> None:
        if job.keyframe:
            self._cluster_mm = job.mm_time
            self._forced_keyframes += 1

    @property
    def bit_rate(self) -> int:
        """The recent frames' bit rate (``get_effective_bit_rate``); the codec's target is
        ``rate_control.bit_rate``."""
        return self._rc.effective_bit_rate

    def _rate_stats(self) -> dict[str, int | float]:
        s = self._rc.stats
        return {
            "encoder_bit_rate": s.bit_rate,
            "target_bit_rate": s.target_bit_rate,
            "frames_admitted": s.frames_admitted,
            "admission_drops": s.admission_drops,
            "server_drops": s.server_drops,
            "bit_rate_decreases": s.bit_rate_decreases,
            "bit_rate_increases": s.bit_rate_increases,
            "forced_keyframes": self._forced_keyframes,
            "reopens": self._codec.encoder.reopens,
        }

    def _close_codec(self) -> None:
        codec = self._codec
        with codec.lock:
            codec.closed = True
            codec.encoder.close()


def make_stream_encoder(
    codec: VideoCodecType,
    width: int,
    height: int,
    *,
    bit_rate: int,
    now_ms: float,
    source_fps: int,
    roundtrip_ms: int,
    keyframe_interval_ms: int | Literal["default"] | None = "default",
    threads: int = 1,
) -> StreamEncoder:
    """The encoder of a new stream for one client (``dcc_create_video_encoder``'s constructor call).

    Args:
        codec: the codec chosen for the client (the choice by caps and preferences is the caller's).
        width: the stream's frame width.
        height: its frame height.
        bit_rate: the starting bit rate in bit/s
            (:func:`~spiceserver.worker.mjpeg_rate.starting_bit_rate`).
        now_ms: the current monotonic time in milliseconds.
        source_fps: the stream's input fps estimate.
        roundtrip_ms: the client's round trip in ms.
        keyframe_interval_ms: VP8/VP9/H.264: force a keyframe on the first frame and then on the
            first frame at least this many ms of mm-time after the last forced one; ``None``: only
            the codec's own; default :data:`DEFAULT_KEYFRAME_INTERVAL_MS` (1000 for VP8, for
            spice-html5). Ignored for MJPEG (every frame stands alone).
        threads: codec threads for VP8/VP9/H.264 (1: the encoder thread only).

    Raises:
        VideoCodecUnavailable: the codec cannot be encoded here (H.265, or PyAV or its encoder
            missing: see :func:`~spiceserver.codecs.video.available_codecs`).
        ValueError: a bad size, bit rate, time, fps or round trip.
    """
    codec = VideoCodecType(codec)
    if codec not in available_codecs():
        raise VideoCodecUnavailable(codec, "not available here (VP8, VP9 and H.264 need PyAV: spiceserver[video])")
    if codec == VideoCodecType.MJPEG:
        return MjpegStreamEncoder(bit_rate=bit_rate, now_ms=now_ms, source_fps=source_fps, roundtrip_ms=roundtrip_ms)
    interval = DEFAULT_KEYFRAME_INTERVAL_MS.get(codec) if keyframe_interval_ms == "default" else keyframe_interval_ms
    return AvStreamEncoder(
        codec,
        width,
        height,
        bit_rate=bit_rate,
        now_ms=now_ms,
        source_fps=source_fps,
        roundtrip_ms=roundtrip_ms,
        keyframe_interval_ms=interval,
        threads=threads,
    )
