"""The demo's sound generators: chunking does not matter, the loop's notes and levels, real-time
pacing, and the A/V scene's click in the same 10 ms frame as its flash."""

from __future__ import annotations

import math
import random
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.demo import RecordMeter, run_av_scene
from spiceserver.demo_sound import (
    CLICK_HZ,
    CLICK_LEVEL_DBFS,
    FRAME_BYTES,
    FRAME_SAMPLES,
    FRAME_SECONDS,
    HUM_LEVEL_DBFS,
    LOOP_LEVEL_DBFS,
    LOOP_NOTES,
    LOOP_SAMPLES,
    NOTE_SECONDS,
    RATE,
    AvScene,
    FramePacer,
    LevelMeter,
    click_track,
    dbfs_amplitude,
    peak,
    rms_dbfs,
    tone_loop,
)
from spiceserver.desktop import SyntheticDesktop


def left(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").reshape(-1, 2)[:, 0].astype(np.float64)


def dominant_hz(mono: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.argmax(spec)) * RATE / len(mono)


@settings(max_examples=30, deadline=None)
@given(start=st.integers(0, 3 * LOOP_SAMPLES), cuts=st.lists(st.integers(0, 3000), max_size=6))
def test_generators_do_not_depend_on_chunking(start: int, cuts: list[int]) -> None:
    total = sum(cuts) + 100
    for gen in (tone_loop, click_track):
        whole = gen(start, total)
        parts, pos = [], start
        for n in [*cuts, 100]:
            parts.append(gen(pos, n))
            pos += n
        assert b"".join(parts) == whole
        assert len(whole) == 4 * total


def test_tone_loop_plays_its_notes_softly_and_repeats() -> None:
    pcm = tone_loop(0, LOOP_SAMPLES)
    mono = left(pcm)
    assert np.array_equal(mono, left(pcm)[: len(mono)])
    # stereo: both channels the same
    both = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2)
    assert np.array_equal(both[:, 0], both[:, 1])
    note = int(NOTE_SECONDS * RATE)
    for k, hz in enumerate(LOOP_NOTES):
        window = mono[k * note + 2400 : k * note + 2400 + 4800]  # 100 ms inside the note
        assert abs(dominant_hz(window) - hz) <= RATE / len(window), (k, hz)
    assert abs(20 * math.log10(peak(pcm) / 32767) - LOOP_LEVEL_DBFS) < 0.1
    # the loop repeats and starts and ends each note at silence (no clicks between notes)
    assert tone_loop(LOOP_SAMPLES, 1000) == tone_loop(0, 1000)
    for k in range(len(LOOP_NOTES)):
        assert abs(mono[k * note]) < 1.0
        assert abs(mono[k * note + note - 1]) < 60.0


def test_click_track_clicks_once_a_second_on_a_frame_boundary() -> None:
    pcm = click_track(0, 3 * RATE)
    frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
    loud = [i for i, f in enumerate(frames) if peak(f) > dbfs_amplitude(-10)]
    assert loud == [0, 100, 200]
    click = left(frames[100])
    assert abs(dominant_hz(np.tile(click, 10)) - CLICK_HZ) <= RATE / (10 * FRAME_SAMPLES)
    assert abs(20 * math.log10(peak(frames[100]) / 32767) - CLICK_LEVEL_DBFS) < 0.1
    assert abs(click[0]) < 1 and abs(click[-1] + click[1]) <= 1  # whole cycles: the next sample would be 0
    quiet = max(peak(f) for i, f in enumerate(frames) if i not in loud)
    assert abs(20 * math.log10(quiet / 32767) - HUM_LEVEL_DBFS) < 0.5
    # an offset moves every click
    late = click_track(0, 3 * RATE, offset=20 * FRAME_SAMPLES)
    frames = [late[i : i + FRAME_BYTES] for i in range(0, len(late), FRAME_BYTES)]
    assert [i for i, f in enumerate(frames) if peak(f) > dbfs_amplitude(-10)] == [20, 120, 220]


@pytest.mark.parametrize("bad", [{"period": 100}, {"offset": -1}, {"offset": RATE}])
def test_click_track_rejects_bad_arguments(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        click_track(0, 10, **bad)


def test_levels() -> None:
    n = np.arange(RATE)
    full = np.repeat(np.rint(32767 * np.sin(2 * math.pi * 1000 * n / RATE)).astype("<i2"), 2).tobytes()
    assert abs(rms_dbfs(full) - (-3.01)) < 0.05
    assert rms_dbfs(b"") == -math.inf and rms_dbfs(bytes(400)) == -math.inf
    assert peak(b"") == 0
    # the loop: peak -18 dBFS, RMS of a sine 3 dB below, the envelopes take a little
    assert -21.5 < rms_dbfs(tone_loop(0, LOOP_SAMPLES)) < -21.0


def test_level_meter_reports_once_per_interval_whatever_the_chunks() -> None:
    pcm = tone_loop(0, 2 * RATE + 100)
    whole = LevelMeter().feed(pcm)
    assert len(whole) == 2
    assert whole[0] == pytest.approx(rms_dbfs(pcm[: 4 * RATE]), abs=1e-9)
    meter, got = LevelMeter(), []
    rng = random.Random(1)
    pos = 0
    while pos < len(pcm):
        n = rng.randrange(1, 9000)
        got += meter.feed(pcm[pos : pos + n])
        pos += n
    assert got == pytest.approx(whole)
    silent = LevelMeter(interval=480).feed(bytes(1920))
    assert silent == [-math.inf]


def test_pacer_keeps_to_the_clock_and_skips_after_a_stall() -> None:
    p = FramePacer(100.0)
    assert list(p.due(99.0)) == []
    assert list(p.due(100.0)) == [0]
    assert list(p.due(100.005)) == []
    assert list(p.due(100.0101)) == [1]
    assert p.wake_at() == pytest.approx(100.02)
    # jittery wake-ups: every frame exactly once, none early, never more than the bound at once
    rng = random.Random(2)
    q = FramePacer(0.0, max_behind=5)
    now, seen, last = 0.0, [], 0.0
    while now < 10.0:
        got = q.due(now)
        assert len(got) <= 5
        assert all(i * FRAME_SECONDS <= now + 1e-9 for i in got)
        seen += list(got)
        last = now
        now += rng.uniform(0.0, 0.035)
    # no drift: after 10 s of wake-ups, exactly the frames due by the last one
    assert seen == list(range(math.floor(last / FRAME_SECONDS + 1e-9) + 1)) and q.skipped == 0
    # a stall of a second: the older frames are skipped, not burst
    got = q.due(now + 1.0)
    assert len(got) == 5 and q.skipped > 90


def test_av_scene_click_and_flash_in_the_same_iteration_and_frame() -> None:
    """Under any wake-up jitter, the step that writes a click's audio frame paints a flash whose
    time is that audio frame's time (the same 10 ms frame), and every flash onset has its click."""
    scene = AvScene()
    rng = random.Random(3)
    scene.start(50.0)
    now = 49.99
    clicks, onsets, written = [], [], []
    while now < 50.0 + 20.0:
        step = scene.step(now)
        written += list(step.frames)
        assert len(step.pcm) == len(step.frames) * FRAME_BYTES
        for c in step.clicks:
            assert step.video_frame is not None and step.flash
            # the flash frame's time equals the click's frame time (same 10 ms frame)
            assert step.video_frame / scene.fps == pytest.approx(c * FRAME_SECONDS)
            # and the click really is in the PCM handed over now
            k = step.frames.index(c)
            assert peak(step.pcm[k * FRAME_BYTES : (k + 1) * FRAME_BYTES]) > dbfs_amplitude(-10)
            clicks.append(c)
        if step.video_frame is not None and step.video_frame % scene.period_video == 0:
            onsets.append(step.video_frame)
        now = max(now, scene.wake_at()) + rng.uniform(0.0, 0.008)
    assert written == list(range(len(written)))
    assert clicks == [4 * v for v in onsets] == list(range(0, 2000, 100))


def test_av_scene_control_moves_the_click_only() -> None:
    scene = AvScene(click_offset_frames=20)
    scene.start(0.0)
    flashes, clicks = [], []
    for i in range(300):
        step = scene.step(i * FRAME_SECONDS)
        clicks += list(step.clicks)
        if step.flash and step.video_frame is not None and step.video_frame % scene.period_video == 0:
            flashes.append(i)
    assert flashes == [0, 100, 200]
    assert clicks == [20, 120, 220]
    assert AvScene(click_offset_frames=-5).click_offset == 95


def test_av_scene_flash_pattern_and_bad_arguments() -> None:
    scene = AvScene(flash_frames=3)
    assert [v for v in range(60) if scene.is_flash(v)] == [0, 1, 2, 25, 26, 27, 50, 51, 52]
    with pytest.raises(ValueError):
        AvScene(fps=30)
    with pytest.raises(ValueError):
        AvScene(period_s=1.01)
    with pytest.raises(ValueError):
        AvScene(flash_frames=25)
    with pytest.raises(ValueError):
        AvScene(flash_frames=1)  # 4 audio frames of flash, 5 frames per late step
    with pytest.raises(RuntimeError):
        AvScene().step(0.0)


def test_demo_av_thread_hands_each_click_over_with_its_flash() -> None:
    """``run_av_scene`` (the demo's thread): the write that carries a click is followed at once by
    the framebuffer update that shows the flash -- nothing in between."""
    calls: list[tuple[str, bool]] = []
    desktop = SyntheticDesktop(640, 480)

    def write(pcm: bytes) -> None:
        frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
        calls.append(("audio", any(peak(f) > dbfs_amplitude(-10) for f in frames)))

    def update(frame: np.ndarray, dirty: list[tuple[int, int, int, int]]) -> None:
        (x0, y0, x1, y1), = dirty
        centre = int(frame[(y0 + y1) // 2, (x0 + x1) // 2])
        calls.append(("video", min(centre >> 16, (centre >> 8) & 0xFF, centre & 0xFF) > 225))

    stop = threading.Event()
    scene = AvScene(period_s=0.2, flash_frames=2)  # white: video frames 5k, 5k + 1
    fb, speaker = SimpleNamespace(update=update), SimpleNamespace(write=write)
    worker = threading.Thread(target=run_av_scene, args=(fb, desktop, scene, speaker, stop))
    worker.start()
    try:
        deadline = time.monotonic() + 30.0  # a generous bound: four clicks take 0.8 s
        while sum(1 for kind, loud in calls if kind == "audio" and loud) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(10)
    clicks = [i for i, (kind, loud) in enumerate(calls) if kind == "audio" and loud]
    assert len(clicks) >= 4, calls
    for i in clicks:
        assert calls[i + 1] == ("video", True), calls[i - 2 : i + 3]


def test_demo_record_meter_prints_level_and_start_stop(capsys: pytest.CaptureFixture[str]) -> None:
    meter = RecordMeter()
    meter.on_event(SimpleNamespace(kind="start", mode="opus"))
    pcm = tone_loop(0, RATE + 480)
    meter.on_data(pcm[: len(pcm) // 2])
    meter.on_data(pcm[len(pcm) // 2 :])
    meter.on_event(SimpleNamespace(kind="stop", mode="opus"))
    out = capsys.readouterr().out.splitlines()
    assert out == ["record start (opus)", f"record level {rms_dbfs(pcm[: 4 * RATE]):.1f} dBFS", "record stop"]


def test_av_scene_a_late_step_still_paints_a_flash_with_its_click() -> None:
    """Wake-ups up to 80 ms late (frames skipped, several written at once): every step that writes
    a click paints a white frame."""
    scene = AvScene()
    rng = random.Random(4)
    scene.start(0.0)
    now, clicks = 0.0, 0
    while now < 30.0:
        step = scene.step(now)
        if step.clicks:
            clicks += 1
            assert step.video_frame is not None and step.flash, step
        now = max(now, scene.wake_at()) + rng.choice([0.0, 0.002, 0.015, 0.03, 0.045, 0.08])
    assert scene.skipped > 0 and clicks >= 20
