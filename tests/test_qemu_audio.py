"""The QEMU audio bridge's pure parts: PCM conversion to and from SPICE's format, and the
listeners driven by a fake caller (what QEMU's ``audio/dbusaudio.c`` calls), with no D-Bus."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

pytest.importorskip("dbus_fast")

from spiceserver.qemu.audio import (
    SPICE_RATE,
    AudioInListener,
    AudioOutListener,
    PcmFormat,
    Resampler,
    UnsupportedFormat,
    from_spice_pcm,
    to_spice_pcm,
)

S16_48K = PcmFormat(16, True, False, 48000, 2, 4)


class FakeSound:
    """Records what the listeners do to a playback or record channel."""

    def __init__(self) -> None:
        self.playing = False
        self.pcm = bytearray()
        self.calls: list[Any] = []

    def start(self) -> None:
        self.playing = True
        self.calls.append("start")

    def stop(self) -> None:
        self.playing = False
        self.calls.append("stop")

    def write(self, pcm: bytes) -> None:
        if self.playing:
            self.pcm += pcm

    def set_volume(self, volume: list[int]) -> None:
        self.calls.append(("volume", list(volume)))

    def set_mute(self, mute: bool) -> None:
        self.calls.append(("mute", mute))


def stereo(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return np.stack([left, right], axis=1)


def test_spice_format_passes_through_unchanged() -> None:
    data = np.arange(-500, 500, dtype="<i2").tobytes()
    assert to_spice_pcm(S16_48K, data) == data
    assert to_spice_pcm(S16_48K, data + b"\x01\x02") == data  # a partial frame is the caller's
    assert from_spice_pcm(S16_48K, data) == data


@pytest.mark.parametrize(
    ("fmt", "encode"),
    [
        (PcmFormat(16, True, False, 48000, 1, 2), lambda v: (v * 32768).astype("<i2").tobytes()),
        (PcmFormat(16, True, False, 48000, 1, 2, big_endian=True), lambda v: (v * 32768).astype(">i2").tobytes()),
        (PcmFormat(8, False, False, 48000, 1, 1), lambda v: (v * 128 + 128).astype("u1").tobytes()),
        (PcmFormat(32, True, False, 48000, 1, 4), lambda v: (v * 2**31).astype("<i4").tobytes()),
        (PcmFormat(32, True, True, 48000, 1, 4), lambda v: v.astype("<f4").tobytes()),
        (PcmFormat(16, False, False, 48000, 1, 2), lambda v: (v * 32768 + 32768).astype("<u2").tobytes()),
    ],
)
def test_sample_formats_and_mono(fmt: PcmFormat, encode: Any) -> None:
    v = np.array([0.0, 0.5, -0.5, 0.25, -1.0], dtype=np.float64)
    out = np.frombuffer(to_spice_pcm(fmt, encode(v)), "<i2").reshape(-1, 2)
    assert out.shape == (5, 2)
    assert (out[:, 0] == out[:, 1]).all()  # mono doubled
    np.testing.assert_allclose(out[:, 0] / 32768, v, atol=2 / 256 if fmt.bits == 8 else 1e-4)
    back = from_spice_pcm(fmt, out.astype("<i2").tobytes())
    assert len(back) == 5 * fmt.bytes_per_frame


def test_stereo_to_mono_averages() -> None:
    pcm = stereo(np.array([1000, -2000], "<i2"), np.array([3000, 2000], "<i2")).astype("<i2").tobytes()
    mono = np.frombuffer(from_spice_pcm(PcmFormat(16, True, False, 48000, 1, 2), pcm), "<i2")
    assert mono.tolist() == [2000, 0]


def test_float_nan_and_overflow_are_clamped() -> None:
    fmt = PcmFormat(32, True, True, 48000, 2, 8)
    data = np.array([np.nan, 5.0, -5.0, np.inf], "<f4").tobytes()
    out = np.frombuffer(to_spice_pcm(fmt, data), "<i2")
    assert out.tolist() == [0, 32767, -32768, 32767]


@pytest.mark.parametrize(
    "fmt",
    [
        PcmFormat(24, True, False, 48000, 2, 6),
        PcmFormat(16, True, True, 48000, 2, 4),
        PcmFormat(16, True, False, 48000, 6, 12),
        PcmFormat(16, True, False, 4000, 2, 4),
        PcmFormat(16, True, False, 48000, 2, 5),
    ],
)
def test_unsupported_formats_are_refused(fmt: PcmFormat) -> None:
    with pytest.raises(UnsupportedFormat):
        to_spice_pcm(fmt, b"\0" * 64)


def test_a_rate_change_needs_a_resampler() -> None:
    with pytest.raises(UnsupportedFormat):
        to_spice_pcm(PcmFormat(16, True, False, 44100, 2, 4), b"\0" * 64)


def test_resampling_44100_keeps_length_and_pitch_across_chunks() -> None:
    fmt = PcmFormat(16, True, False, 44100, 2, 4)
    rs = Resampler(44100, SPICE_RATE, 2)
    t = np.arange(44100) / 44100
    tone = (np.sin(2 * np.pi * 1000 * t) * 16000).astype("<i2")
    data = stereo(tone, tone).astype("<i2").tobytes()
    out = b"".join(to_spice_pcm(fmt, data[i : i + 1764], rs) for i in range(0, len(data), 1764))  # 441-frame Writes
    frames = np.frombuffer(out, "<i2").reshape(-1, 2)[:, 0].astype(np.float64)
    assert abs(len(frames) - SPICE_RATE) <= 1
    spectrum = np.abs(np.fft.rfft(frames))
    peak_hz = np.argmax(spectrum) * SPICE_RATE / len(frames)
    assert abs(peak_hz - 1000) < 2


def test_out_listener_plays_while_enabled(caplog: pytest.LogCaptureFixture) -> None:
    pb = FakeSound()
    out = AudioOutListener(pb)  # type: ignore[arg-type]
    out.Init(7, 16, True, False, 48000, 2, 4, 192000, False)
    assert not pb.playing
    out.SetEnabled(7, True)
    assert pb.playing
    out.Write(7, b"\1\0\2\0\3")  # one frame and a byte
    out.Write(7, b"\0\4\0\5\0\6\0")  # the rest of the second frame, and a third
    assert bytes(pb.pcm) == b"\1\0\2\0\3\0\4\0\5\0\6\0"
    out.SetVolume(7, True, b"\xff\x80")
    assert pb.calls[-2:] == [("volume", [65535, 128 * 257]), ("mute", True)]
    out.SetEnabled(7, False)
    assert not pb.playing
    out.Fini(7)
    assert out.streams == {}


def test_out_listener_drops_what_it_cannot_take(caplog: pytest.LogCaptureFixture) -> None:
    pb = FakeSound()
    out = AudioOutListener(pb)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, "spiceserver.qemu"):
        out.Write(1, b"\0" * 8)  # no Init
        out.SetEnabled(1, True)
        out.Init(2, 24, True, False, 48000, 2, 6, 0, False)  # refused
        out.SetEnabled(2, True)
        out.Write(2, b"\0" * 12)
        out.Write(2, b"\0" * 12)
        out.Init(3, 16, True, False, 48000, 2, 4, 0, False)
        out.SetEnabled(3, True)
        out.Write(3, b"\0" * (2 << 20))  # larger than any real Write
        out.SetVolume(3, False, b"")
    assert pb.pcm == b"" and pb.playing
    assert "unsupported format" in caplog.text and "48000" in caplog.text
    assert caplog.text.count("refused stream") == 1  # logged once per stream


def test_out_listener_converts_44100() -> None:
    pb = FakeSound()
    out = AudioOutListener(pb)  # type: ignore[arg-type]
    out.Init(1, 16, True, False, 44100, 2, 4, 176400, False)
    out.SetEnabled(1, True)
    for _ in range(100):
        out.Write(1, b"\0\1" * 2 * 441)  # 10 ms
    assert abs(len(pb.pcm) // 4 - SPICE_RATE) <= 1


def test_in_listener_answers_from_the_ring_then_silence() -> None:
    rec = FakeSound()
    inp = AudioInListener(rec)  # type: ignore[arg-type]
    inp.Init(5, 16, True, False, 48000, 2, 4, 192000, False)
    inp.SetEnabled(5, True)
    assert rec.playing  # record.start()
    assert inp.read(5, 16) == bytes(16)  # nothing from the client yet: silence
    inp.feed(b"\1\0\2\0\3\0\4\0")
    assert inp.read(5, 16) == b"\1\0\2\0\3\0\4\0" + bytes(8)
    assert inp.read(5, 3) == b""  # less than a frame
    assert len(inp.read(5, 1 << 30)) == 48000 * 4  # capped at a second
    assert inp.read(99, 16) == b""  # unknown stream
    inp.SetEnabled(5, False)
    assert not rec.playing


def test_in_listener_ring_is_bounded() -> None:
    inp = AudioInListener(ring_size=64)
    inp.Init(1, 16, True, False, 48000, 2, 4, 0, False)
    inp.feed(bytes(range(100)))
    assert len(inp.ring) == 64 and inp.overflow == 36
    assert inp.ring[:4] == bytes(range(36, 40))  # the oldest bytes went, whole frames


def test_in_listener_converts_to_the_guest_format() -> None:
    inp = AudioInListener()
    inp.Init(1, 16, True, False, 44100, 1, 2, 88200, False)
    inp.feed(np.full(4800 * 2, 1000, "<i2").tobytes())  # 100 ms of stereo
    got = np.frombuffer(inp.read(1, 441 * 2), "<i2")
    assert len(got) == 441
    assert abs(int(np.median(got)) - 1000) <= 1


def test_hostile_calls_never_raise() -> None:
    """Whatever QEMU sends (any format, ids, sizes), the listeners log and drop; nothing raises."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    valid = st.sampled_from(
        [(16, True, False, 44100, 2, 4, False), (8, False, False, 8000, 1, 1, False), (32, True, True, 192000, 2, 8, True), (16, True, False, 48000, 2, 4, False)]
    )  # fmt: skip
    fmt = valid | st.tuples(
        st.integers(0, 255), st.booleans(), st.booleans(), st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 2**32 - 1), st.booleans()
    )  # fmt: skip
    calls = st.lists(
        st.one_of(
            st.tuples(st.just("Init"), st.integers(0, 3), fmt),
            st.tuples(st.just("SetEnabled"), st.integers(0, 3), st.booleans()),
            st.tuples(st.just("SetVolume"), st.integers(0, 3), st.booleans(), st.binary(max_size=300)),
            st.tuples(st.just("Write"), st.integers(0, 3), st.binary(max_size=4000)),
            st.tuples(st.just("Read"), st.integers(0, 3), st.integers(0, 2**64 - 1)),
            st.tuples(st.just("Fini"), st.integers(0, 3)),
        ),
        max_size=30,
    )

    @settings(max_examples=300, deadline=None)
    @given(calls)
    def run(seq: list[Any]) -> None:
        pb, rec = FakeSound(), FakeSound()
        out = AudioOutListener(pb)  # type: ignore[arg-type]
        inp = AudioInListener(rec)  # type: ignore[arg-type]
        inp.feed(b"\1\2\3\4" * 100)
        for name, id, *args in seq:
            for lst in (out, inp):
                if name == "Init":
                    lst.Init(id, *args[0][:5], args[0][5], 0, args[0][6])
                elif name == "Read":
                    got = inp.read(id, args[0])
                    assert len(got) <= args[0]
                elif name == "Write":
                    out.Write(id, *args)
                else:
                    getattr(lst, name)(id, *args)

    run()
