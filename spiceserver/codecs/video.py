"""VP8, VP9 and H.264 stream frames through PyAV (FFmpeg's libvpx and libx264), one packet per frame.

Counterpart of the pixel side of spice-server ``server/gstreamer-encoder.c`` (``create_pipeline``,
``push_raw_frame``, ``pull_compressed_buffer``); its rate control is
:mod:`spiceserver.worker.video_rate`. The clients' decoders are spice-gtk ``channel-display-gst.c``
(``vp8dec``, ``vp9dec``, ``h264parse ! avdec_h264``) and spice-html5 ``webm.js`` (VP8 in a WebM
SimpleBlock per frame, fed to the browser's MediaSource).

PyAV is optional (``pip install spiceserver[video]``): its wheel bundles GPL x264, so it is not a
dependency of this LGPL package. Nothing here imports :mod:`av` until an encoder is asked for;
:func:`available_codecs` says what this machine can encode (MJPEG always, through
:mod:`spiceserver.codecs.mjpeg`).

What a frame is, as libspice's pipelines make it (``appsrc ! videoconvert ! <enc> ! appsink``,
encoding synchronously, so every setting is a zero-latency one):

* **H.264** (``x264enc byte-stream=true aud=true tune=zerolatency speed-preset=ultrafast``): one
  Annex-B access unit per frame, starting with an access unit delimiter (``00 00 00 01 09``); no
  B-frames, no lookahead; every IDR carries its SPS and PPS in band (FFmpeg's libx264 repeats the
  headers when the stream has no global header). Quantisers 15..35 as libspice's ``qp-min``/``qp-max``:
  below 15 the bits are wasted, above 35 the picture is mush and the rate control had better drop
  frames.
* **VP8 / VP9** (``vp8enc``/``vp9enc deadline=1 lag-in-frames=0 error-resilient cpu-used``): one raw
  frame per packet (no IVF or WebM framing: spice-html5 wraps it itself), realtime deadline, no
  lag, error resilient, minimum quantiser 10 as libspice's ``min-quantizer``. With a positive
  ``cpu-used`` in realtime mode libvpx's VP8 encoder picks its speed from how long frames take
  against their duration (``vp8_auto_select_speed``), so its output depends on the machine's load.
* Keyframes: the first frame and every forced one (``keyframe=True``: an IDR for H.264); otherwise
  one every :data:`KEYFRAME_MAX_FRAMES` frames at most (the GStreamer elements' own defaults are 250
  for x264 and 128 for libvpx; FFmpeg's default GOP of 12 would spend most of the bit rate on
  keyframes). spice-html5 flags the first block of each 1 s WebM cluster as a keyframe whatever it
  holds, so a VP8 stream for it needs a real keyframe at each cluster start: the stream forces
  them there (:mod:`spiceserver.worker.stream_encoder`).

Bit rate changes. libspice changes the encoder's ``bitrate`` property on the fly where GStreamer
allows it (``GST_PARAM_MUTABLE_PLAYING``) and otherwise restarts the pipeline when the rate moved by
more than 5 %. With PyAV, setting ``CodecContext.bit_rate`` after ``open()`` changes nothing: measured
with PyAV 18.1 (FFmpeg 8) on a panning 640x360 photo, a libx264 stream opened at 4 Mbit/s kept its
~7.5 KB frames after a switch to 300 kbit/s (a fresh one at 300 kbit/s makes 0.8 KB frames), and the
same for libvpx and libvpx-vp9 in both directions, also with VBV (``maxrate``/``bufsize``) set. So
:class:`AvFrameEncoder` reopens the codec for a new bit rate and the next frame is a keyframe.

Colour conversion. The pixels (``uint32`` 0x00RRGGBB, BGRX bytes in memory) are handed to swscale
without a copy (``VideoFrame.from_numpy_buffer(format="bgra")`` over the caller's rows, row stride
and all; ``from_ndarray`` would copy the frame while holding the GIL) and converted to yuv420p by
``reformat(..., threads=1)`` (the default ``threads=None`` sets up a thread pool per call and costs
more than the conversion at 640x360). swscale and the encoders release the GIL. The matrix is
BT.601, limited range, and the stream says so (H.264 VUI, VP9 colour config; VP8 is BT.601 by
definition): left unsaid, decoders such as GStreamer's assume BT.709 for HD sizes and shift colours.

Orientation: rows are encoded in the order given (row 0 first), so the stream is top-down (STREAM_CREATE
sets ``SPICE_STREAM_FLAGS_TOP_DOWN``). Dimensions: H.264 in 4:2:0 needs even widths and heights
(x264 refuses odd ones): such a frame fails with :class:`~spiceserver.errors.VideoEncodeError`, and
the stream sends it as an image (libspice: ``encoder->errors``). libvpx takes any size.
"""

from __future__ import annotations

import functools
import sys
from fractions import Fraction
from typing import Any

import numpy as np

from ..errors import VideoCodecUnavailable, VideoEncodeError
from ..proto.enums import VideoCodecType
from .pyav import load_av as _load_av

__all__ = [
    "available_codecs",
    "AvFrameEncoder",
    "AV_ENCODER_NAMES",
    "KEYFRAME_MAX_FRAMES",
    "MAX_DIMENSION",
    "MIN_BIT_RATE",
    "MAX_BIT_RATE",
]

#: The FFmpeg encoder behind each codec.
AV_ENCODER_NAMES: dict[VideoCodecType, str] = {
    VideoCodecType.VP8: "libvpx",
    VideoCodecType.H264: "libx264",
    VideoCodecType.VP9: "libvpx-vp9",
}
#: The longest run of frames between two keyframes the encoder makes on its own (per codec).
KEYFRAME_MAX_FRAMES: dict[VideoCodecType, int] = {VideoCodecType.VP8: 128, VideoCodecType.H264: 250, VideoCodecType.VP9: 128}
#: Larger frames are refused (H.264 level limits aside, libvpx stops at 16383).
MAX_DIMENSION = 16383
#: The bit rates FFmpeg's wrappers take (x264 and libvpx count kbit/s in an int; 0 kbit/s fails).
MIN_BIT_RATE = 1000
MAX_BIT_RATE = (1 << 31) - 1

# The byte order of a native uint32 0x00RRGGBB pixel in memory, as FFmpeg names it (libspice's
# SPICE_BITMAP_FMT_32BIT -> GStreamer "BGRx").
_PIXEL_FORMAT = "bgra" if sys.byteorder == "little" else "argb"
_SMPTE170M = 6  # AVCOL_SPC_SMPTE170M = AVCOL_PRI_SMPTE170M = AVCOL_TRC_SMPTE170M: BT.601 (525)
_RANGE_MPEG = 1  # AVCOL_RANGE_MPEG: limited (16..235)


@functools.cache
def available_codecs() -> frozenset[VideoCodecType]:
    """The video codecs this process can encode, as ``VideoCodecType`` values (cached).

    MJPEG always (simplejpeg, :mod:`spiceserver.codecs.mjpeg`); VP8, VP9 and H.264 when PyAV imports
    and its FFmpeg has ``libvpx``, ``libvpx-vp9`` and ``libx264`` (the PyPI wheels do).
    """
    found = {VideoCodecType.MJPEG}
    av = _load_av()
    if av is not None:
        names = av.codecs_available
        found.update(codec for codec, name in AV_ENCODER_NAMES.items() if name in names)
    return frozenset(found)


def _check_pixels(pixels: np.ndarray) -> np.ndarray:
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 2 or pixels.dtype != np.uint32:
        raise ValueError("pixels must be an (h, w) uint32 array")
    h, w = pixels.shape
    if not (0 < h <= MAX_DIMENSION and 0 < w <= MAX_DIMENSION):
        raise ValueError(f"cannot encode a {w}x{h} video frame")
    # swscale takes a row pitch but wants each row's pixels packed and rows going forwards
    if pixels.strides[1] != 4 or pixels.strides[0] < 4 * w:
        pixels = np.ascontiguousarray(pixels)
    return pixels


class AvFrameEncoder:
    """One VP8, VP9 or H.264 stream: BGRX frames in, one compressed frame out per call.

    Not thread-safe: one thread at a time (the stream's encoder thread). Pure: no threads or clock
    of its own; libspice's ``SpiceGstEncoder`` pipeline with the rate control taken out.

    Args:
        codec: ``VideoCodecType.VP8``, ``VP9`` or ``H264``.
        width: the expected frame width (the codec opens at the first frame's size, and a frame of
            another size reopens it).
        height: their height.
        bit_rate: the target bit rate in bit/s (:data:`MIN_BIT_RATE` .. :data:`MAX_BIT_RATE`).
        fps: the nominal frame rate (time base and rate control of the codec; frames may come at
            any pace).
        threads: codec threads (1: the caller's thread only; more use sliced threads, still one
            packet per frame).

    Raises:
        VideoCodecUnavailable: PyAV is absent, its FFmpeg lacks the encoder, or ``codec`` is not
            one of these three.
        ValueError: a bad size, bit rate, fps or thread count.
    """

    def __init__(self, codec: VideoCodecType, width: int, height: int, *, bit_rate: int, fps: int = 30, threads: int = 1) -> None:
        name = AV_ENCODER_NAMES.get(codec) if codec in VideoCodecType._value2member_map_ else None
        if name is None:
            raise VideoCodecUnavailable(int(codec), "not encoded through PyAV (VP8, VP9 and H.264 are)")
        av = _load_av()
        if av is None:
            raise VideoCodecUnavailable(int(codec), "PyAV is not installed (pip install 'spiceserver[video]')")
        if name not in av.codecs_available:
            raise VideoCodecUnavailable(int(codec), f"this FFmpeg has no {name} encoder")
        for what, value, top in (("width", width, MAX_DIMENSION), ("height", height, MAX_DIMENSION), ("fps", fps, 1000), ("threads", threads, 64)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= top:
                raise ValueError(f"{what}={value!r} is not in 1..{top}")
        self._av = av
        self._codec = VideoCodecType(codec)
        self._name = name
        self._fps = fps
        self._threads = threads
        self._bit_rate = self._check_bit_rate(bit_rate)
        self._width = width
        self._height = height
        self._ctx: Any = None
        self._ctx_bit_rate = 0
        self._pts = 0
        self._reopens = 0
        self._frames = 0
        self._last_keyframe = False
        self._closed = False

    # --- properties ------------------------------------------------------------------------------

    @property
    def codec(self) -> VideoCodecType:
        """The ``VideoCodecType`` value."""
        return self._codec

    @property
    def width(self) -> int:
        """The frame width the encoder is open for."""
        return self._width

    @property
    def height(self) -> int:
        """The frame height the encoder is open for."""
        return self._height

    @property
    def bit_rate(self) -> int:
        """The target bit rate in bit/s. Setting a new one takes effect at the next frame, which
        then is a keyframe (the codec is reopened: FFmpeg's wrappers ignore a changed rate)."""
        return self._bit_rate

    @bit_rate.setter
    def bit_rate(self, value: int) -> None:
        self._bit_rate = self._check_bit_rate(value)

    @property
    def reopens(self) -> int:
        """How many times the codec was reopened (new bit rate or frame size)."""
        return self._reopens

    @property
    def frames(self) -> int:
        """Frames encoded so far."""
        return self._frames

    @property
    def last_was_keyframe(self) -> bool:
        """Whether the last frame :meth:`encode` returned is a keyframe (an IDR for H.264)."""
        return self._last_keyframe

    # --- encoding --------------------------------------------------------------------------------

    def encode(self, pixels: np.ndarray, *, keyframe: bool = False) -> bytes:
        """Encode one frame: BGRX -> yuv420p -> exactly one compressed frame.

        Args:
            pixels: an (h, w) ``uint32`` array of 0x00RRGGBB pixels, possibly a strided view of a
                larger canvas (read in place; not modified; the caller keeps it unchanged until
                this returns). Row 0 is the top row. Another size than the last reopens the codec.
            keyframe: force a keyframe (an IDR with SPS/PPS for H.264).

        Returns:
            The frame: an Annex-B access unit (H.264) or a raw VP8/VP9 frame.

        Raises:
            ValueError: not an (h, w) ``uint32`` array, or an empty or oversized one.
            VideoEncodeError: the encoder failed, refused the size, or did not return exactly one
                packet; the encoder is closed and reopens on the next frame.
            VideoCodecUnavailable: :meth:`close` was called.
        """
        if self._closed:
            raise VideoCodecUnavailable(self._codec, "the encoder is closed")
        pixels = _check_pixels(pixels)
        h, w = pixels.shape
        if self._ctx is None or (w, h) != (self._width, self._height) or self._bit_rate != self._ctx_bit_rate:
            if self._frames:
                self._reopens += 1
            self._width, self._height = w, h
            self._open()
            keyframe = True
        av = self._av
        try:
            src = av.VideoFrame.from_numpy_buffer(pixels[:, :, None].view(np.uint8), format=_PIXEL_FORMAT)
            frame = src.reformat(format="yuv420p", dst_colorspace="ITU601", dst_color_range="MPEG", threads=1)
            frame.pts = self._pts
            if keyframe:
                frame.pict_type = av.video.frame.PictureType.I  # FFmpeg: an IDR with forced-idr
            packets = self._ctx.encode(frame)
        except av.FFmpegError as exc:
            self._ctx = None
            raise VideoEncodeError(f"{self._name} failed on a {w}x{h} frame: {exc}") from exc
        self._pts += 1
        if len(packets) != 1:
            self._ctx = None
            raise VideoEncodeError(f"{self._name} returned {len(packets)} packets for one {w}x{h} frame")
        packet = packets[0]
        self._frames += 1
        self._last_keyframe = bool(packet.is_keyframe)
        data: bytes = bytes(packet)
        return data

    def close(self) -> None:
        """Free the codec; :meth:`encode` raises afterwards. Idempotent."""
        self._ctx = None
        self._closed = True

    def __enter__(self) -> AvFrameEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals -------------------------------------------------------------------------------

    @staticmethod
    def _check_bit_rate(value: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not MIN_BIT_RATE <= value <= MAX_BIT_RATE:
            raise ValueError(f"bit_rate={value!r} is not in {MIN_BIT_RATE}..{MAX_BIT_RATE}")
        return int(value)

    def _open(self) -> None:
        """(Re)open the codec at the current size and bit rate (``create_pipeline`` + ``configure_pipeline``)."""
        self._ctx = None
        av = self._av
        ctx = av.CodecContext.create(self._name, "w")
        ctx.width = self._width
        ctx.height = self._height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, self._fps)
        ctx.framerate = Fraction(self._fps, 1)
        ctx.bit_rate = self._bit_rate
        ctx.thread_count = self._threads
        ctx.max_b_frames = 0
        ctx.gop_size = KEYFRAME_MAX_FRAMES[self._codec]
        # BT.601 limited range, as swscale converts, said in the stream (VUI / VP9 colour config):
        # unsaid, decoders guess BT.709 for HD sizes and shift the colours. (VP8 is always BT.601.)
        ctx.colorspace = _SMPTE170M
        ctx.color_primaries = _SMPTE170M
        ctx.color_trc = _SMPTE170M
        ctx.color_range = _RANGE_MPEG
        if self._codec == VideoCodecType.H264:
            ctx.qmin, ctx.qmax = 15, 35
            ctx.options = {
                "preset": "ultrafast",
                "tune": "zerolatency",
                "forced-idr": "1",
                "x264-params": "aud=1:intra-refresh=1",  # as libspice: no periodic IDR spikes
            }
        else:  # VP8, VP9
            ctx.qmin = 10
            ctx.options = {
                "deadline": "realtime",
                "cpu-used": "8",
                "lag-in-frames": "0",
                "error-resilient": "1",
                "drop-threshold": "0",  # never skip a frame: the rate control drops before encoding
            }
        try:
            ctx.open()
        except (av.FFmpegError, ValueError) as exc:
            raise VideoEncodeError(f"{self._name} cannot encode {self._width}x{self._height} frames: {exc}") from exc
        self._ctx = ctx
        self._ctx_bit_rate = self._bit_rate
        self._pts = 0
