"""StreamEncoder: rate control on the worker thread, EncodeJob.run on an encoder thread.

MJPEG tests run everywhere; VP8 / VP9 / H.264 need PyAV (``pytest.importorskip("av")``).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.codecs import video
from spiceserver.errors import VideoCodecUnavailable
from spiceserver.proto.enums import VideoCodecType
from spiceserver.worker import stream_encoder as se_mod
from spiceserver.worker.mjpeg_rate import QUALITY_LADDER
from spiceserver.worker.stream_encoder import (
    MAX_CONSECUTIVE_ERRORS,
    AvStreamEncoder,
    EncodeJob,
    MjpegStreamEncoder,
    StreamEncoder,
    make_stream_encoder,
)
from tests.codecs.test_video import Scene, decode_one, decoder, vp8_is_keyframe

U32 = 0xFFFFFFFF
AV_CODECS = (VideoCodecType.VP8, VideoCodecType.VP9, VideoCodecType.H264)
W, H = 160, 96


def make(codec: VideoCodecType, **kw: Any) -> StreamEncoder:
    # 1 Mbit/s: below the cap of a 160x96 stream (160 x 96 x 32 bpp x 25 fps / 10 = 1.23 Mbit/s)
    args: dict[str, Any] = {"bit_rate": 1_000_000, "now_ms": 0, "source_fps": 25, "roundtrip_ms": 10}
    args.update(kw)
    return make_stream_encoder(codec, W, H, **args)


class Worker:
    """Drives a stream encoder as the worker does: admit, run (here or on a thread), report."""

    def __init__(self, se: StreamEncoder, *, dt: int = 40, mm: int = 50_000) -> None:
        self.se = se
        self.t = 0
        self.mm = mm
        self.dt = dt
        self.scene = Scene(W, H)
        self.k = 0
        self.sent: list[tuple[int, bytes, EncodeJob]] = []  # (mm, data, job)
        self.as_images = 0
        self.dropped = 0

    def frame(self, pixels: np.ndarray | None = None, pool: ThreadPoolExecutor | None = None) -> bytes | None:
        if pixels is None:
            pixels = self.scene.frame(self.k)
        self.k += 1
        out = None
        job = self.se.admit(self.t, self.mm)
        if job is None:
            self.dropped += 1
        else:
            data = pool.submit(job.run, pixels).result() if pool else job.run(pixels)
            if data is None:
                self.as_images += 1
            else:
                self.se.frame_encoded(len(data), self.t, job.encode_ms)
                self.sent.append((self.mm, data, job))
                out = data
        self.t += self.dt
        self.mm = (self.mm + self.dt) & U32
        return out


# --- MJPEG (always) --------------------------------------------------------------------------------


def test_mjpeg_stream_encoder_drives_the_mjpeg_rate_control() -> None:
    se = make(VideoCodecType.MJPEG)
    assert isinstance(se, MjpegStreamEncoder) and se.codec == VideoCodecType.MJPEG
    w = Worker(se)
    for _ in range(50):
        w.frame()
    assert w.sent and w.as_images == 0
    for _mm, data, job in w.sent:
        assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
        assert job.encode_ms > 0 and not job.keyframe
    rc = se.rate_control
    assert rc.quality() in QUALITY_LADDER
    stats = se.stats()
    assert stats["codec"] == VideoCodecType.MJPEG
    assert stats["frames_encoded"] == len(w.sent) == rc.stats.frames_encoded
    assert stats["bytes_encoded"] == sum(len(d) for _, d, _ in w.sent)
    assert stats["admission_drops"] == w.dropped
    assert se.bit_rate == rc.bit_rate
    se.source_fps = 12
    se.roundtrip_ms = 40
    assert (rc.source_fps, rc.roundtrip_ms) == (12, 40)


def test_reports_and_server_drops_reach_the_rate_control() -> None:
    se = make(VideoCodecType.MJPEG)
    w = Worker(se)
    for _ in range(120):  # past MJPEG's 3 s warm-up
        w.frame()
    before = se.bit_rate
    se.client_report(5, 3, w.sent[-5][0], w.sent[-1][0], -100, U32, w.t)
    assert se.bit_rate < before
    se.server_drop(w.t)
    assert se.stats()["server_drops"] == 1
    assert isinstance(se.pop_playback_delay_request(), int | type(None))
    with pytest.raises(ValueError):
        se.client_report(5, 0, 0, 0, 1 << 31, U32, w.t)


def test_mjpeg_odd_and_tiny_frames_encode() -> None:
    se = make(VideoCodecType.MJPEG)
    for shape in ((1, 1), (97, 161), (3, 2000)):
        job = se.admit(0, 1000)
        assert job is not None
        data = job.run(np.zeros(shape, np.uint32))
        assert data is not None and data[:2] == b"\xff\xd8"
        se.frame_encoded(len(data), 0, 0.5)


def test_three_failures_at_a_size_send_that_size_as_images(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing(pixels: np.ndarray, quality: int) -> bytes:
        calls.append(pixels.shape)
        if pixels.shape == (8, 8):
            raise ValueError("cannot")
        return b"\xff\xd8\xff\xd9"

    monkeypatch.setattr(se_mod, "encode_mjpeg_frame", failing)
    se = make(VideoCodecType.MJPEG, bit_rate=100_000_000)
    w = Worker(se, dt=1000)
    small, big = np.zeros((8, 8), np.uint32), np.zeros((16, 16), np.uint32)
    for _ in range(MAX_CONSECUTIVE_ERRORS + 2):
        assert w.frame(small) is None
    assert calls == [(8, 8)] * MAX_CONSECUTIVE_ERRORS  # then not even tried
    assert w.frame(big) is not None  # another size: tried again
    assert w.frame(small) is None and len(calls) == MAX_CONSECUTIVE_ERRORS + 2
    assert w.as_images == MAX_CONSECUTIVE_ERRORS + 3


def test_frame_encoded_needs_an_admitted_frame() -> None:
    se = make(VideoCodecType.MJPEG)
    with pytest.raises(ValueError):
        se.frame_encoded(100, 0, 1.0)
    job = se.admit(0, 1000)
    assert job is not None
    se.frame_encoded(100, 0, 1.0)
    with pytest.raises(ValueError):
        se.frame_encoded(100, 0, 1.0)
    with pytest.raises(ValueError):
        se.admit(0, -1)


def test_unavailable_codecs(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(VideoCodecUnavailable):
        make(VideoCodecType.H265)
    with pytest.raises(ValueError):
        make(99)  # type: ignore[arg-type]
    monkeypatch.setattr(se_mod, "available_codecs", lambda: frozenset({VideoCodecType.MJPEG}))
    for codec in AV_CODECS:
        with pytest.raises(VideoCodecUnavailable):
            make(codec)
    assert make(VideoCodecType.MJPEG).codec == VideoCodecType.MJPEG


def test_close() -> None:
    se = make(VideoCodecType.MJPEG)
    job = se.admit(0, 1000)
    se.close()
    se.close()
    assert se.closed and se.admit(40, 1040) is None
    assert job is not None and job.run(np.zeros((8, 8), np.uint32)) is not None  # a running MJPEG job finishes


# --- VP8 / VP9 / H.264 (PyAV) ---------------------------------------------------------------------


@pytest.fixture
def av() -> Any:
    return pytest.importorskip("av")


@pytest.mark.parametrize("codec", AV_CODECS, ids=lambda c: c.name)
def test_av_stream_encoder_on_an_encoder_thread(av: Any, codec: VideoCodecType) -> None:
    se = make(codec)
    assert isinstance(se, AvStreamEncoder) and se.codec == codec
    w = Worker(se)
    dec = decoder(av, codec)
    with ThreadPoolExecutor(1) as pool:
        for _ in range(60):
            w.frame(pool=pool)
    assert len(w.sent) >= 50 and w.as_images == 0  # the slow start drops a frame or two
    for _mm, data, _job in w.sent:
        decode_one(av, dec, data)
    stats = se.stats()
    assert stats["frames_encoded"] == len(w.sent)
    assert stats["encoder_bit_rate"] == se.rate_control.bit_rate
    assert stats["target_bit_rate"] == se.rate_control.target_bit_rate == 1_000_000
    assert stats["encode_ms_avg"] > 0
    assert se.bit_rate == se.rate_control.effective_bit_rate > 0
    se.close()
    assert se.admit(w.t, w.mm) is None


def html5_clusters(sent: list[tuple[int, bytes, EncodeJob]]) -> list[int]:
    """Indices of the frames spice-html5 starts a WebM cluster with (display.js
    ``process_video_stream_data``): the first, then each one >= 1000 ms of mm-time after the
    cluster's first."""
    starts = [0]
    for i, (mm, _, _) in enumerate(sent):
        if mm - sent[starts[-1]][0] >= 1000:
            starts.append(i)
    return starts


def test_vp8_keyframes_start_every_spice_html5_cluster(av: Any) -> None:
    se = make(VideoCodecType.VP8)
    w = Worker(se, dt=33)
    for _ in range(200):
        w.frame()
    clusters = html5_clusters(w.sent)
    assert len(clusters) >= 6
    keys = [i for i, (_, data, _) in enumerate(w.sent) if vp8_is_keyframe(data)]
    assert keys == clusters  # a keyframe exactly where a cluster starts, nowhere else
    assert se.stats()["forced_keyframes"] == len(clusters)


def test_a_frame_sent_as_an_image_does_not_count_as_the_cluster_start(av: Any) -> None:
    """The keyframe due at a cluster start goes as an image (odd size): the next stream frame is
    the cluster's first for the client, and it is the forced keyframe."""
    se = make(VideoCodecType.VP8)
    w = Worker(se)
    for _ in range(25):  # frames 0..24: mm-times up to 960 ms after the first
        w.frame()
    # no VP8 failure to provoke: drop the job from outside (what the worker does when run gives None)
    job = se.admit(w.t, w.mm)
    assert job is not None and job.keyframe  # 1000 ms after the cluster's first frame
    w.t += 40
    w.mm += 40
    data = w.frame()
    assert data is not None and w.sent[-1][2].keyframe and vp8_is_keyframe(data)


def test_h264_and_vp9_force_no_keyframes_by_default_but_can(av: Any) -> None:
    for codec in (VideoCodecType.H264, VideoCodecType.VP9):
        w = Worker(make(codec))
        for _ in range(80):
            w.frame()
        assert [i for i, (_, _, job) in enumerate(w.sent) if job.keyframe] == []
        w = Worker(make(codec, keyframe_interval_ms=500))
        for _ in range(80):
            w.frame()
        assert [job.keyframe for _, _, job in w.sent].count(True) >= 5
    with pytest.raises(ValueError):
        make(VideoCodecType.VP8, keyframe_interval_ms=0)


def test_h264_odd_sizes_fail_three_times_then_go_as_images_without_trying(av: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    tries = []
    real = video.AvFrameEncoder.encode

    def counting(self: video.AvFrameEncoder, pixels: np.ndarray, *, keyframe: bool = False) -> bytes:
        tries.append(pixels.shape)
        return real(self, pixels, keyframe=keyframe)

    monkeypatch.setattr(video.AvFrameEncoder, "encode", counting)
    se = make(VideoCodecType.H264, bit_rate=50_000_000)
    w = Worker(se, dt=500)
    odd = Scene(W + 1, H + 1).frame(0)
    for _ in range(MAX_CONSECUTIVE_ERRORS + 3):
        assert w.frame(odd) is None
    assert len(tries) == MAX_CONSECUTIVE_ERRORS
    data = w.frame()  # the stream's own size works again
    assert data is not None and data.startswith(b"\x00\x00\x00\x01\x09")
    assert w.as_images == MAX_CONSECUTIVE_ERRORS + 3


def test_the_job_carries_the_bit_rate_of_its_admission(av: Any) -> None:
    se = make(VideoCodecType.VP8)
    assert isinstance(se, AvStreamEncoder)
    w = Worker(se)
    for _ in range(20):
        w.frame()
    encoder = se._codec.encoder
    assert encoder.bit_rate == se.rate_control.bit_rate == 1_000_000 * 4 // 3 and encoder.reopens == 0
    # a frame reported as huge (800 ms of data): the rate control brings the encoder's rate down
    job = se.admit(w.t, w.mm)
    assert job is not None and job.run(w.scene.frame(50)) is not None
    se.frame_encoded(100_000, w.t, 1.0)
    assert se.rate_control.bit_rate == 1_000_000
    assert encoder.bit_rate == 1_000_000 * 4 // 3  # the codec is the job's business
    w.t += 2_000
    w.mm += 2_000
    job = se.admit(w.t, w.mm)
    assert job is not None
    data = job.run(w.scene.frame(51))
    assert data is not None and vp8_is_keyframe(data)
    assert encoder.bit_rate == 1_000_000 and encoder.reopens == 1


def test_a_tiny_stream_gets_a_bit_rate_its_codec_takes(av: Any) -> None:
    """8x8 at 1 fps: a cap of 204 bit/s, below what x264 and libvpx take (1 kbit/s)."""
    se = make_stream_encoder(VideoCodecType.H264, 8, 8, bit_rate=10_000_000, now_ms=0, source_fps=1, roundtrip_ms=0)
    assert isinstance(se, AvStreamEncoder) and se.rate_control.bit_rate < video.MIN_BIT_RATE
    job = se.admit(0, 1000)
    assert job is not None
    data = job.run(np.zeros((8, 8), np.uint32))
    assert data is not None and data.startswith(b"\x00\x00\x00\x01\x09")


def test_close_waits_for_a_running_job(av: Any) -> None:
    se = make(VideoCodecType.VP9)
    job = se.admit(0, 1000)
    assert job is not None
    assert isinstance(se, AvStreamEncoder)
    started, release = threading.Event(), threading.Event()
    real = se._codec.encoder.encode

    def slow(pixels: np.ndarray, *, keyframe: bool = False) -> bytes:
        started.set()
        release.wait(5)
        return real(pixels, keyframe=keyframe)

    se._codec.encoder.encode = slow  # type: ignore[method-assign]
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(job.run, Scene(W, H).frame(0))
        assert started.wait(5)
        closer = threading.Thread(target=se.close)
        closer.start()
        closer.join(0.2)
        assert closer.is_alive()  # waiting for the job
        release.set()
        closer.join(5)
        assert fut.result() is not None
    assert job.run(Scene(W, H).frame(1)) is None  # the codec is gone


@settings(max_examples=40, deadline=None)
@given(
    codec=st.sampled_from([VideoCodecType.MJPEG, VideoCodecType.VP8]),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("frame"), st.integers(1, 200), st.sampled_from([(96, 160), (64, 64), (1, 1), (97, 33)])),
            st.tuples(st.just("report"), st.integers(-500, 500), st.just((0, 0))),
            st.tuples(st.just("drop"), st.integers(1, 5), st.just((0, 0))),
        ),
        max_size=40,
    ),
)
def test_any_sequence_of_worker_calls(codec: VideoCodecType, ops: list[tuple[str, int, tuple[int, int]]]) -> None:
    if codec != VideoCodecType.MJPEG and codec not in video.available_codecs():
        return
    se = make(codec)
    w = Worker(se)
    for op, a, shape in ops:
        if op == "frame":
            w.dt = a
            w.frame(np.full(shape, a * 0x010101, np.uint32))
        elif op == "report" and w.sent:
            se.client_report(5, int(a < 0), w.sent[0][0], w.sent[-1][0], a, U32, w.t)
        elif op == "drop":
            for _ in range(a):
                se.server_drop(w.t)
        se.pop_playback_delay_request()
        stats = se.stats()
        assert stats["frames_encoded"] == len(w.sent)
    se.close()
