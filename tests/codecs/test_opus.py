"""Opus for the sound channels: tones through encode -> decode, packet sizes and counts, a fuzzed
decoder, FFmpeg's native Opus decoder as a second peer, and spiceserver without PyAV.

Measured (PyAV 18.1, FFmpeg's libopus, default 102 kbit/s, constrained VBR): a 440 Hz tone at
-10 dBFS, a chord or full-scale white noise all give packets of 128 bytes on average and at most
~205 bytes, as the system libopus does at libspice's settings; the decoded tone lags by
312 samples (the encoder's look-ahead). RMS over frames 2.. within 0.04 dB of the input's (tone and
chord); each 10 ms of input against its delayed output: within 0.14 dB (tone), 0.58 dB (chord).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.codecs import opus
from spiceserver.codecs.opus import (
    FRAME_BYTES,
    FRAME_SAMPLES,
    MAX_PACKET_BYTES,
    OpusDecoder,
    OpusEncoder,
    opus_available,
)
from spiceserver.errors import OpusDecodeError, OpusUnavailable, ProtocolError, SpiceError

needs_opus = pytest.mark.skipif(not opus_available(), reason="PyAV with libopus is not installed")
RATE = 48000
LOOKAHEAD = 312  # samples: libopus' delay at 48 kHz (2.5 ms + 4 ms), FFmpeg's initial_padding


def tone(freqs: tuple[float, ...], seconds: float, amplitude: float = 10000.0) -> np.ndarray:
    """Stereo S16 samples, shape (n, 2): the sum of sines, left and right alike."""
    t = np.arange(int(RATE * seconds)) / RATE
    mono = np.zeros_like(t)
    for f in freqs:
        mono += np.sin(2 * np.pi * f * t) * (amplitude / len(freqs))
    return np.repeat(mono.astype("<i2")[:, None], 2, axis=1)


def frames(pcm: np.ndarray) -> Iterator[bytes]:
    data = pcm.astype("<i2").tobytes()
    for i in range(0, len(data), FRAME_BYTES):
        yield data[i : i + FRAME_BYTES]


def roundtrip(pcm: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    enc, dec = OpusEncoder(), OpusDecoder()
    packets = [enc.encode(f) for f in frames(pcm)]
    out = b"".join(dec.decode(p) for p in packets)
    enc.close()
    dec.close()
    return packets, np.frombuffer(out, "<i2").reshape(-1, 2)


def rms_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2))))


def peaks(x: np.ndarray, count: int) -> list[int]:
    """The ``count`` strongest frequencies (Hz) of a mono signal, 1 Hz bins when it lasts 1 s."""
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64)))
    hz_per_bin = RATE / len(x)
    return sorted(round(int(i) * hz_per_bin) for i in np.argsort(spectrum)[-count:])


@needs_opus
@pytest.mark.parametrize("freqs", [(440.0,), (440.0, 1000.0)], ids=["440Hz", "chord"])
def test_tone_roundtrip(freqs: tuple[float, ...]) -> None:
    src = tone(freqs, 1.02)
    packets, out = roundtrip(src)
    assert len(packets) == len(src) // FRAME_SAMPLES == 102
    assert all(0 < len(p) <= MAX_PACKET_BYTES for p in packets)
    assert out.shape == src.shape
    # The first frame is mostly the look-ahead's silence; after it the signal is the input, delayed.
    assert not out[: LOOKAHEAD - 8].any() or rms_db(out[: LOOKAHEAD - 8]) < rms_db(src) - 30
    steady_in, steady_out = src[:RATE, 0], out[LOOKAHEAD : LOOKAHEAD + RATE, 0]
    assert peaks(steady_out, len(freqs)) == peaks(steady_in, len(freqs)) == [int(f) for f in freqs]
    assert abs(rms_db(out[2 * FRAME_SAMPLES :]) - rms_db(src[2 * FRAME_SAMPLES :])) < 1.0
    for i in range(1, len(packets) - 1):  # each 10 ms of input against its delayed output
        got = out[LOOKAHEAD + i * FRAME_SAMPLES : LOOKAHEAD + (i + 1) * FRAME_SAMPLES]
        want = src[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
        assert abs(rms_db(got) - rms_db(want)) < 1.0, i
    # left == right in, so (nearly) left == right out
    assert np.max(np.abs(out[:, 0].astype(int) - out[:, 1])) < 200


@needs_opus
def test_one_packet_per_frame_and_worst_case_size() -> None:
    """Full-scale white noise is the costliest input: still one packet per frame, <= 480 bytes."""
    enc = OpusEncoder()
    rng = np.random.default_rng(12)
    sizes = [len(enc.encode(rng.integers(-32768, 32768, FRAME_SAMPLES * 2, dtype="<i2").tobytes())) for _ in range(100)]
    assert len(sizes) == 100
    assert max(sizes) <= MAX_PACKET_BYTES
    silence = [len(enc.encode(bytes(FRAME_BYTES))) for _ in range(50)]
    assert all(0 < n <= 10 for n in silence[-10:]), silence  # DTX off, but silence costs a few bytes
    enc.close()
    enc.close()
    with pytest.raises(ValueError, match="closed"):
        enc.encode(bytes(FRAME_BYTES))


@needs_opus
@pytest.mark.parametrize("size", [0, 1, 4, 960, 1916, 1919, 1921, 1924, 3840])
def test_encoder_takes_exactly_one_frame(size: int) -> None:
    enc = OpusEncoder()
    with pytest.raises(ValueError, match="1920"):
        enc.encode(bytes(size))
    assert enc.encode(bytearray(FRAME_BYTES))  # any bytes-like
    assert enc.encode(memoryview(bytes(FRAME_BYTES)))


@needs_opus
def test_bit_rate_is_libopus_default() -> None:
    assert opus.DEFAULT_BIT_RATE == 102000
    src = tone((440.0,), 1.0)
    enc = OpusEncoder(bit_rate=32000)
    low = sum(len(enc.encode(f)) for f in frames(src))
    packets, _ = roundtrip(src)
    default = sum(len(p) for p in packets)
    # bits in one second (constrained VBR keeps close to the target)
    assert low * 8 < 40000
    assert 95000 < default * 8 < 110000


def _av_packets(frame_duration: str, layout: str, seconds: float) -> list[bytes]:
    """Packets of another shape, from FFmpeg's libopus directly."""
    import av  # type: ignore[import-not-found, unused-ignore]

    ctx: Any = av.CodecContext.create("libopus", "w")
    ctx.sample_rate, ctx.layout, ctx.format = RATE, layout, "s16"
    ctx.options = {"frame_duration": frame_duration}
    ctx.open()
    channels = 2 if layout == "stereo" else 1
    src = tone((440.0,), seconds)[:, :channels].copy()
    out: list[bytes] = []
    for i in range(0, len(src), ctx.frame_size):
        frame = av.AudioFrame(format="s16", layout=layout, samples=ctx.frame_size)
        frame.sample_rate, frame.pts = RATE, i
        frame.planes[0].update(src[i : i + ctx.frame_size].tobytes())
        out.extend(bytes(p) for p in ctx.encode(frame))
    return out


@needs_opus
@pytest.mark.parametrize(("duration", "samples"), [("2.5", 120), ("5", 240), ("20", 960), ("60", 2880)])
def test_other_durations_decode_to_their_length(duration: str, samples: int) -> None:
    dec = OpusDecoder()
    for packet in _av_packets(duration, "stereo", 0.12):
        assert len(dec.decode(packet)) == samples * 4


@needs_opus
def test_mono_packets_are_upmixed() -> None:
    dec = OpusDecoder()
    out = np.frombuffer(b"".join(dec.decode(p) for p in _av_packets("10", "mono", 0.2)), "<i2").reshape(-1, 2)
    assert len(out) == 0.2 * RATE
    assert np.array_equal(out[:, 0], out[:, 1])
    assert peaks(out[LOOKAHEAD : LOOKAHEAD + 4800, 0], 1) == [440]


@needs_opus
def test_decoder_small_packets() -> None:
    dec = OpusDecoder()
    assert dec.decode(b"") == bytes(FRAME_BYTES)  # a lost frame: 10 ms of silence
    assert len(dec.decode(b"\x00")) == FRAME_BYTES  # a TOC byte alone: a 10 ms SILK frame, no data
    assert len(dec.decode(b"\xfc")) == 2 * FRAME_BYTES  # TOC of a 20 ms CELT frame
    for bad in (b"\x03", b"\x03\xff", b"\xff\xff\xff"):  # code 3 with no/too many frames
        with pytest.raises(OpusDecodeError) as info:
            dec.decode(bad)
        assert isinstance(info.value, ProtocolError)
        assert "invalid Opus packet" in info.value.reason
    assert len(dec.decode(b"\x00")) == FRAME_BYTES  # still usable
    dec.close()
    with pytest.raises(ValueError, match="closed"):
        dec.decode(b"\x00")


@needs_opus
@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=600), min_size=1, max_size=4))
def test_decoder_never_crashes(packets: list[bytes]) -> None:
    """Arbitrary bytes: PCM of a legal length (2.5 .. 120 ms, whole stereo samples) or OpusDecodeError."""
    dec = OpusDecoder()
    for packet in packets:
        try:
            out = dec.decode(packet)
        except OpusDecodeError:
            continue
        assert len(out) % 4 == 0
        assert 120 * 4 <= len(out) <= 5760 * 4
    assert len(dec.decode(b"\x00")) == FRAME_BYTES


@needs_opus
def test_ffmpeg_native_decoder_reads_our_packets() -> None:
    """A second peer: FFmpeg's own Opus decoder (not libopus) hears the same tone."""
    import av

    src = tone((440.0, 1000.0), 1.02)
    packets, ours = roundtrip(src)
    ctx: Any = av.CodecContext.create("opus", "r")
    ctx.sample_rate, ctx.layout = RATE, "stereo"
    chunks = []
    for p in packets:
        for frame in ctx.decode(av.Packet(p)):
            assert frame.samples == FRAME_SAMPLES
            chunks.append(
                frame.to_ndarray().reshape(2, -1).T if frame.format.is_planar else frame.to_ndarray().reshape(-1, 2)
            )
    theirs = np.concatenate(chunks).astype(np.float64)
    if np.max(np.abs(theirs)) <= 1.0:  # float samples
        theirs *= 32768
    assert theirs.shape == ours.shape
    steady = slice(LOOKAHEAD, LOOKAHEAD + RATE)
    assert peaks(theirs[steady, 0], 2) == [440, 1000]
    assert abs(rms_db(theirs[2 * FRAME_SAMPLES :]) - rms_db(ours[2 * FRAME_SAMPLES :])) < 0.5
    corr = np.corrcoef(theirs[steady, 0], ours[steady, 0].astype(np.float64))[0, 1]
    assert corr > 0.99


def test_errors_are_spice_errors() -> None:
    assert issubclass(OpusUnavailable, SpiceError)
    assert issubclass(OpusDecodeError, ProtocolError)


def test_unavailable_without_libopus(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoOpus:
        codecs_available = frozenset({"mjpeg"})

    monkeypatch.setattr(opus, "_load_av", lambda: NoOpus)
    for make in (OpusEncoder, OpusDecoder):
        with pytest.raises(OpusUnavailable, match="libopus"):
            make()


def test_spiceserver_works_without_pyav() -> None:
    """In an interpreter where ``import av`` fails: the package and this module import, Opus is
    unavailable, and making a codec raises OpusUnavailable."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["av"] = None  # import av -> ImportError
        import spiceserver
        from spiceserver.codecs.opus import OpusDecoder, OpusEncoder, opus_available
        from spiceserver.errors import OpusUnavailable
        assert opus_available() is False
        for make in (OpusEncoder, OpusDecoder):
            try:
                make()
            except OpusUnavailable as exc:
                assert "PyAV" in str(exc), exc
            else:
                raise AssertionError("no OpusUnavailable")
        assert "av" not in [m for m in sys.modules if sys.modules[m] is not None]
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


class SystemOpus:
    """The system's libopus through ctypes, called as spice-common ``snd_codec.c`` calls it (what
    libspice and spice-gtk run): 48 kHz stereo, ``OPUS_APPLICATION_AUDIO``, default bit rate,
    480-byte packet buffer, 480-sample decode buffer."""

    APPLICATION_AUDIO = 2049

    def __init__(self) -> None:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("opus")
        if name is None:
            pytest.skip("the system has no libopus")
        lib = ctypes.CDLL(name)
        lib.opus_encoder_create.restype = ctypes.c_void_p
        lib.opus_encoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.opus_decoder_create.restype = ctypes.c_void_p
        lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.opus_encode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int32]
        lib.opus_decode.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int32,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_int,
        ]
        lib.opus_encoder_destroy.argtypes = lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        err = ctypes.c_int(0)
        self._ctypes = ctypes
        self._lib = lib
        self._enc = lib.opus_encoder_create(RATE, 2, self.APPLICATION_AUDIO, ctypes.byref(err))
        self._dec = lib.opus_decoder_create(RATE, 2, ctypes.byref(err))
        assert self._enc and self._dec and err.value == 0

    def encode(self, frame: bytes) -> bytes:
        out = self._ctypes.create_string_buffer(MAX_PACKET_BYTES)
        n = self._lib.opus_encode(self._enc, frame, FRAME_SAMPLES, out, MAX_PACKET_BYTES)
        assert n > 0, n
        return out.raw[:n]

    def decode(self, packet: bytes) -> bytes:
        out = self._ctypes.create_string_buffer(FRAME_BYTES)
        n = self._lib.opus_decode(self._dec, packet, len(packet), out, FRAME_SAMPLES, 0)
        assert n == FRAME_SAMPLES, n
        return out.raw

    def close(self) -> None:
        self._lib.opus_encoder_destroy(self._enc)
        self._lib.opus_decoder_destroy(self._dec)


@needs_opus
def test_system_libopus_both_ways() -> None:
    """Our packets through the system libopus' decoder (spice-gtk's playback path, 480-sample
    buffer), and the system encoder's packets (spice-gtk's record path) through ours."""
    system = SystemOpus()
    src = tone((440.0, 1000.0), 1.02)
    enc, dec = OpusEncoder(), OpusDecoder()
    ours = [enc.encode(f) for f in frames(src)]
    theirs = [system.encode(f) for f in frames(src)]
    heard_by_them = np.frombuffer(b"".join(system.decode(p) for p in ours), "<i2").reshape(-1, 2)
    heard_by_us = np.frombuffer(b"".join(dec.decode(p) for p in theirs), "<i2").reshape(-1, 2)
    system.close()
    # the same settings (PyAV's wheel bundles its own libopus build, so the bytes differ slightly):
    # packets as large on average (the default bit rate), as many, and the same mode (TOC byte)
    assert len(ours) == len(theirs)
    assert abs(np.mean([len(p) for p in ours]) / np.mean([len(p) for p in theirs]) - 1) < 0.1
    assert {p[0] for p in ours} == {p[0] for p in theirs}
    for out in (heard_by_them, heard_by_us):
        assert out.shape == src.shape
        assert peaks(out[LOOKAHEAD : LOOKAHEAD + RATE, 0], 2) == [440, 1000]
        assert abs(rms_db(out[2 * FRAME_SAMPLES :]) - rms_db(src[2 * FRAME_SAMPLES :])) < 1.0
