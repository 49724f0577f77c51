"""Opus for the sound channels: encode and decode microseconds per 10 ms frame, and packet bytes.

Run: ``python benchmarks/opus.py [--seconds S]``. For a 440 Hz tone, a two-tone chord, full-scale
white noise and silence (48 kHz stereo S16LE, cut into 1920-byte frames), it encodes every frame
with :class:`spiceserver.codecs.opus.OpusEncoder` and decodes every packet with
:class:`spiceserver.codecs.opus.OpusDecoder`, and prints the median and 99th-percentile microseconds
per frame each way, the mean and largest packet, and the bit rate. A 10 ms frame is the real-time
budget: one playback client costs encode/10 ms of a core.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spiceserver.codecs.opus import FRAME_BYTES, OpusDecoder, OpusEncoder, opus_available

RATE = 48000


def signal(kind: str, seconds: float) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    if kind == "tone 440 Hz":
        mono = 10000 * np.sin(2 * np.pi * 440 * t)
    elif kind == "chord 440+1000":
        mono = 5000 * (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 1000 * t))
    elif kind == "white noise":
        return np.random.default_rng(1).integers(-32768, 32768, len(t) * 2, dtype="<i2").tobytes()
    else:
        mono = np.zeros_like(t)
    return np.repeat(mono.astype("<i2")[:, None], 2, axis=1).tobytes()


def percentile(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if not opus_available():
        sys.exit("PyAV with libopus is not installed (pip install spiceserver[video])")
    print(f"{'signal':<16} {'enc us':>7} {'p99':>6} {'dec us':>7} {'p99':>6} {'bytes':>6} {'max':>5} {'kbit/s':>7}")
    for kind in ("tone 440 Hz", "chord 440+1000", "white noise", "silence"):
        pcm = signal(kind, args.seconds)
        frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
        enc, dec = OpusEncoder(), OpusDecoder()
        packets, enc_us, dec_us = [], [], []
        for frame in frames:
            t = time.perf_counter()
            packets.append(enc.encode(frame))
            enc_us.append((time.perf_counter() - t) * 1e6)
        for packet in packets:
            t = time.perf_counter()
            dec.decode(packet)
            dec_us.append((time.perf_counter() - t) * 1e6)
        sizes = [len(p) for p in packets]
        kbps = sum(sizes) * 8 / args.seconds / 1000
        print(
            f"{kind:<16} {statistics.median(enc_us):7.1f} {percentile(enc_us, 0.99):6.1f}"
            f" {statistics.median(dec_us):7.1f} {percentile(dec_us, 0.99):6.1f}"
            f" {statistics.mean(sizes):6.1f} {max(sizes):5d} {kbps:7.1f}"
        )


if __name__ == "__main__":
    main()
