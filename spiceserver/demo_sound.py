"""The demo's sound: a tone loop for the speaker, the A/V scene's clicks and flashes, a level meter.

Pure generators (numpy, no I/O, no clock: times are arguments). :mod:`spiceserver.demo` runs them in
real time against ``server.add_playback()`` / ``server.add_record()``. Counterpart of what a guest's
sound card feeds libspice through QEMU ``audio/spiceaudio.c`` (``line_out_run``: 10 ms frames of
``spice_server_playback_get_buffer`` size, put with ``spice_server_playback_put_samples``, which
stamps each with ``reds_get_mm_time``; spice ``server/sound.cpp``). PCM is S16LE interleaved stereo
at 48 kHz, cut into 480-sample (10 ms) frames as spice-common ``common/snd_codec.h`` does.

Theory of operation
-------------------
*Sample positions, not chunks.* Every generator is a function of the absolute sample index, so the
PCM does not depend on how the writer chunks it: ``tone_loop(0, 960)`` equals
``tone_loop(0, 480) + tone_loop(480, 480)``.

*Real time.* :class:`FramePacer` says which 10 ms frames are due at a monotonic time: frame ``i`` is
due ``i * 10 ms`` after the start. A writer that writes the due frames whenever it wakes neither
drifts (the count is tied to the clock, not to the number of wake-ups) nor bursts: after a stall
longer than ``max_behind`` frames the older ones are skipped (counted), as the playback channel
would drop them as late anyway.

*The A/V scene.* :class:`AvScene` drives a video region at 25 frames per second and the audio from
one clock. Every ``period`` frames of audio (1 s) a click -- 10 ms of 1 kHz at -3 dBFS starting at a
frame boundary -- sits in one audio frame, and the video frame due at the same time is white (the
flash, for ``flash_frames`` frames). Video frame ``j`` and audio frame ``4 j`` fall due at the same
instant, so the step that writes the click's frame is the step that paints the flash: the host hands
both to the server in one loop iteration, and any offset a client shows comes from the transport.
``click_offset_frames`` moves the clicks away from the flashes (a control for the measurement).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "RATE",
    "FRAME_SAMPLES",
    "FRAME_BYTES",
    "FRAME_SECONDS",
    "LOOP_NOTES",
    "NOTE_SECONDS",
    "LOOP_SAMPLES",
    "LOOP_LEVEL_DBFS",
    "CLICK_HZ",
    "CLICK_LEVEL_DBFS",
    "HUM_HZ",
    "HUM_LEVEL_DBFS",
    "AV_FPS",
    "tone_loop",
    "click_track",
    "rms_dbfs",
    "peak",
    "FramePacer",
    "AvStep",
    "AvScene",
    "LevelMeter",
    "dbfs_amplitude",
]

#: the playback rate (``SND_CODEC_OPUS_PLAYBACK_FREQ``)
RATE = 48000
#: samples per channel in one 10 ms frame (``SND_CODEC_OPUS_FRAME_SIZE``)
FRAME_SAMPLES = 480
#: bytes of one frame: 480 stereo S16 samples
FRAME_BYTES = FRAME_SAMPLES * 4
#: seconds of one frame
FRAME_SECONDS = FRAME_SAMPLES / RATE
#: the loop's notes in Hz: C5, E5, G5, C6 (an arpeggio), one after the other
LOOP_NOTES = (523.25, 659.26, 783.99, 1046.50)
#: how long each note lasts, s
NOTE_SECONDS = 0.5
#: samples per channel of one pass of the loop (2 s)
LOOP_SAMPLES = round(len(LOOP_NOTES) * NOTE_SECONDS * RATE)
#: the loop's peak level, dBFS (soft)
LOOP_LEVEL_DBFS = -18.0
#: the click of the A/V scene: 10 ms (one frame) of this frequency ...
CLICK_HZ = 1000.0
#: ... at this peak level, dBFS
CLICK_LEVEL_DBFS = -3.0
#: between clicks, a very soft hum of this frequency ...
HUM_HZ = 220.0
#: ... at this peak level, dBFS
HUM_LEVEL_DBFS = -50.0
#: video frames per second of the A/V scene (a video frame falls due with every 4th audio frame)
AV_FPS = 25

_FULL_SCALE = 32767.0
_ATTACK_S = 0.015
_RELEASE_S = 0.040


def dbfs_amplitude(dbfs: float) -> float:
    """The sample amplitude (of 32767) of a peak level in dBFS."""
    return float(_FULL_SCALE * 10.0 ** (dbfs / 20.0))


def _stereo(mono: np.ndarray) -> bytes:
    s = np.clip(np.rint(mono), -32768, 32767).astype("<i2")
    return np.repeat(s, 2).tobytes()


def _check(start: int, count: int) -> None:
    if start < 0 or count < 0:
        raise ValueError(f"sample range {start}+{count} is negative")


def tone_loop(start: int, count: int) -> bytes:
    """Samples ``start`` .. ``start + count`` (per channel) of the demo's sound loop, S16LE stereo.

    The loop is :data:`LOOP_NOTES`, :data:`NOTE_SECONDS` each, peak :data:`LOOP_LEVEL_DBFS`, with a
    short attack and release per note (no clicks between notes), the same in both channels; it
    repeats every :data:`LOOP_SAMPLES` samples.

    Raises:
        ValueError: a negative ``start`` or ``count``.
    """
    _check(start, count)
    n = np.arange(start, start + count, dtype=np.int64) % LOOP_SAMPLES
    note_len = LOOP_SAMPLES // len(LOOP_NOTES)
    which = n // note_len
    t = (n - which * note_len) / RATE  # seconds into the note
    freq = np.asarray(LOOP_NOTES)[which]
    env = np.minimum(1.0, np.minimum(t / _ATTACK_S, (NOTE_SECONDS - t) / _RELEASE_S))
    env = np.clip(env, 0.0, 1.0)
    mono = dbfs_amplitude(LOOP_LEVEL_DBFS) * env * np.sin(2.0 * math.pi * freq * t)
    return _stereo(mono)


def click_track(start: int, count: int, *, period: int = RATE, offset: int = 0) -> bytes:
    """Samples ``start`` .. ``start + count`` of the A/V scene's audio, S16LE stereo.

    A click -- one frame (10 ms) of :data:`CLICK_HZ` at :data:`CLICK_LEVEL_DBFS`, whole cycles, so it
    starts and ends at zero -- begins at every sample ``k * period + offset`` (k >= 0), a soft hum
    (:data:`HUM_HZ` at :data:`HUM_LEVEL_DBFS`) fills the rest.

    Args:
        start, count: the sample range (per channel).
        period: samples from one click to the next (default 1 s).
        offset: the first click's sample (0 <= offset < period).

    Raises:
        ValueError: a negative range, a period shorter than a click, or an offset outside the period.
    """
    _check(start, count)
    if period < FRAME_SAMPLES:
        raise ValueError(f"click period {period} is shorter than a click ({FRAME_SAMPLES} samples)")
    if not 0 <= offset < period:
        raise ValueError(f"click offset {offset} is not in [0, {period})")
    n = np.arange(start, start + count, dtype=np.int64)
    into = n - offset
    in_click = (into >= 0) & (into % period < FRAME_SAMPLES)
    t = n / RATE
    hum = dbfs_amplitude(HUM_LEVEL_DBFS) * np.sin(2.0 * math.pi * HUM_HZ * t)
    click = dbfs_amplitude(CLICK_LEVEL_DBFS) * np.sin(2.0 * math.pi * CLICK_HZ * (into % period) / RATE)
    return _stereo(np.where(in_click, click, hum))


def _samples(pcm: bytes | bytearray | memoryview) -> np.ndarray:
    data = memoryview(pcm).cast("B")
    usable = len(data) - len(data) % 2
    return np.frombuffer(data[:usable], dtype="<i2").astype(np.float64)


def rms_dbfs(pcm: bytes | bytearray | memoryview) -> float:
    """The RMS level of S16LE PCM (all channels together) in dBFS; ``-inf`` for silence or nothing.

    A full-scale sine reads about -3 dBFS (RMS relative to a full-scale square wave).
    """
    s = _samples(pcm)
    if not s.size:
        return -math.inf
    ms = float(np.mean(s * s))
    return 10.0 * math.log10(ms / (_FULL_SCALE * _FULL_SCALE)) if ms > 0 else -math.inf


def peak(pcm: bytes | bytearray | memoryview) -> int:
    """The largest ``|sample|`` of S16LE PCM (0 for nothing)."""
    s = _samples(pcm)
    return int(np.max(np.abs(s))) if s.size else 0


class FramePacer:
    """Which 10 ms frames a real-time writer must write at a monotonic time.

    Frame ``i`` falls due at ``start + i * FRAME_SECONDS``. :meth:`due` returns the frames due and
    not yet handed out; after a stall, frames more than ``max_behind`` behind are skipped
    (:attr:`skipped`) instead of written in a burst.

    Args:
        start: the monotonic time (s) of frame 0.
        max_behind: the most frames one call hands out.
    """

    def __init__(self, start: float, max_behind: int = 5) -> None:
        if max_behind < 1:
            raise ValueError("max_behind must be at least 1")
        self.start = start
        self.max_behind = max_behind
        #: the next frame to hand out
        self.next = 0
        #: frames skipped after stalls
        self.skipped = 0

    def due(self, now: float) -> range:
        """The frames to write at ``now`` (possibly none), oldest first."""
        end = math.floor((now - self.start) / FRAME_SECONDS + 1e-9) + 1  # frames 0 .. end-1 are due
        if end <= self.next:
            return range(self.next, self.next)
        first = max(self.next, end - self.max_behind)
        self.skipped += first - self.next
        self.next = end
        return range(first, end)

    def wake_at(self) -> float:
        """When the next frame falls due (monotonic s)."""
        return self.start + self.next * FRAME_SECONDS


@dataclass(frozen=True)
class AvStep:
    """What the A/V scene hands the server in one loop iteration.

    Attributes:
        frames: the audio frames in ``pcm`` (indices from the scene's start).
        pcm: their PCM, S16LE stereo (empty when no frame is due).
        video_frame: the video frame to paint now, or None (its time is ``video_frame / fps``).
        flash: that video frame is a flash (white).
        clicks: the audio frames in ``pcm`` that hold a click.
    """

    frames: range
    pcm: bytes
    video_frame: int | None
    flash: bool
    clicks: tuple[int, ...]


class AvScene:
    """The flash-and-click scene: audio frames and video frames from one clock (see the module doc).

    Args:
        period_s: seconds from one flash to the next (a whole number of video frames).
        fps: video frames per second (a divisor of 100, so video frames fall on audio frames).
        flash_frames: video frames the flash lasts.
        click_offset_frames: audio frames the click comes after its flash (0: together; negative:
            before); the control for the measurement.
        max_behind: as :class:`FramePacer`; at most the audio frames the flash lasts, so that the
            step that writes a click always paints a flash frame, however late it wakes.
    """

    def __init__(
        self,
        *,
        period_s: float = 1.0,
        fps: int = AV_FPS,
        flash_frames: int = 3,
        click_offset_frames: int = 0,
        max_behind: int = 5,
    ) -> None:
        frames_per_s = round(1.0 / FRAME_SECONDS)
        if fps <= 0 or frames_per_s % fps:
            raise ValueError(f"fps {fps} does not divide {frames_per_s}")
        self.fps = fps
        self.audio_per_video = frames_per_s // fps
        self.period_video = round(period_s * fps)
        if self.period_video < 1 or abs(self.period_video - period_s * fps) > 1e-6:
            raise ValueError(f"period {period_s} s is not a whole number of video frames at {fps} fps")
        if not 1 <= flash_frames < self.period_video:
            raise ValueError(f"flash_frames {flash_frames} out of range")
        if not 1 <= max_behind <= flash_frames * self.audio_per_video:
            # a step ends at most max_behind - 1 frames after the click's: its video frame is white
            raise ValueError(f"max_behind {max_behind} is not in [1, {flash_frames * self.audio_per_video}]: a late "
                             "step could paint the frame after the flash with the click")
        self.period_audio = self.period_video * self.audio_per_video
        self.flash_frames = flash_frames
        self.click_offset = click_offset_frames % self.period_audio
        self.max_behind = max_behind
        self._pacer: FramePacer | None = None
        self._last_video = -1

    def is_flash(self, video_frame: int) -> bool:
        """Whether video frame ``video_frame`` is white."""
        return video_frame % self.period_video < self.flash_frames

    def is_click(self, audio_frame: int) -> bool:
        """Whether audio frame ``audio_frame`` holds a click."""
        return audio_frame % self.period_audio == self.click_offset

    def audio(self, frames: range) -> bytes:
        """The PCM of audio frames ``frames`` (consecutive)."""
        return click_track(
            frames.start * FRAME_SAMPLES, len(frames) * FRAME_SAMPLES,
            period=self.period_audio * FRAME_SAMPLES, offset=self.click_offset * FRAME_SAMPLES,
        )  # fmt: skip

    def start(self, now: float) -> None:
        """Frame 0 of both falls due at ``now`` (monotonic s)."""
        self._pacer = FramePacer(now, self.max_behind)
        self._last_video = -1

    def wake_at(self) -> float:
        """When the next audio frame falls due (monotonic s)."""
        if self._pacer is None:
            raise RuntimeError("start() the scene first")
        return self._pacer.wake_at()

    @property
    def skipped(self) -> int:
        """Audio frames skipped after stalls (see :class:`FramePacer`)."""
        return 0 if self._pacer is None else self._pacer.skipped

    @property
    def next_audio_frame(self) -> int:
        """The audio frame that falls due next (0 before :meth:`start`)."""
        return 0 if self._pacer is None else self._pacer.next

    def step(self, now: float) -> AvStep:
        """What is due at ``now``: the audio frames, and the newest video frame if one fell due.

        A video frame falls due with audio frame ``video_frame * audio_per_video``; when a stall let
        several fall due, only the newest is painted.

        Raises:
            RuntimeError: :meth:`start` was not called.
        """
        if self._pacer is None:
            raise RuntimeError("start() the scene first")
        frames = self._pacer.due(now)
        if not frames:
            return AvStep(frames, b"", None, False, ())
        newest_video = (frames.stop - 1) // self.audio_per_video
        video: int | None = None
        if newest_video > self._last_video:
            video = self._last_video = newest_video
        clicks = tuple(i for i in frames if self.is_click(i))
        return AvStep(frames, self.audio(frames), video, video is not None and self.is_flash(video), clicks)


class LevelMeter:
    """The RMS level of recorded PCM, one figure per ``interval`` samples (per channel) received.

    Args:
        interval: samples per channel per figure (default 1 s at 48 kHz).
    """

    def __init__(self, interval: int = RATE) -> None:
        if interval < 1:
            raise ValueError("interval must be at least 1")
        self.interval = interval
        self._sum = 0.0
        self._count = 0  # samples per channel so far in this interval
        self._odd = b""

    def feed(self, pcm: bytes | bytearray | memoryview) -> list[float]:
        """Add S16LE stereo PCM; return the level (dBFS, ``-inf`` for silence) of each interval it
        completed, oldest first."""
        data = self._odd + bytes(pcm)
        usable = len(data) - len(data) % 4
        self._odd = data[usable:]
        s = np.frombuffer(data[:usable], dtype="<i2").astype(np.float64).reshape(-1, 2)
        out: list[float] = []
        pos = 0
        while pos < len(s):
            take = min(len(s) - pos, self.interval - self._count)
            chunk = s[pos : pos + take]
            self._sum += float(np.sum(chunk * chunk))
            self._count += take
            pos += take
            if self._count == self.interval:
                ms = self._sum / (2 * self.interval)
                out.append(10.0 * math.log10(ms / (_FULL_SCALE * _FULL_SCALE)) if ms > 0 else -math.inf)
                self._sum, self._count = 0.0, 0
        return out

    def reset(self) -> None:
        """Forget a partial interval (a recording stopped)."""
        self._sum, self._count, self._odd = 0.0, 0, b""
