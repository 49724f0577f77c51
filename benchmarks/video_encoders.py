"""Video stream encoders: ms per frame, bytes per frame, PSNR, and what the GIL leaves a Python thread.

Run: ``python benchmarks/video_encoders.py [--frames N] [--bit-rate BPS] [--threads N] [--sizes
640x360,1920x1080] [--codecs mjpeg,vp8,vp9,h264]``. Needs PyAV (``spiceserver[video]``) for VP8, VP9 and
H.264; without it only MJPEG is measured.

The scene is issue 11's (``benchmarks/video.py`` ``Scene``): a crop of ``../shared/images/photo_1080.png``
panning 8 pixels a frame, every pixel changing; at 640x360 the frames are strided views of the photo
(rows of a larger canvas, as the worker hands them over), at 1920x1080 the whole photo rolled.

For each codec and size, two passes over the same frames:

1. alone: wall ms per frame of the whole call (for VP8/VP9/H.264 :meth:`AvFrameEncoder.encode`: BGRX ->
   yuv420p conversion + encode; for MJPEG :func:`encode_mjpeg_frame`, which takes BGRX directly; the
   median after the first 5 frames, then the mean of all), the process's CPU ms per frame (codec
   threads included), the mean frame size, the bit rate at 25 fps, and the mean PSNR of
   what FFmpeg's decoders (Pillow for JPEG) reconstruct against the source frames;
2. a fresh encoder in a thread encoding those frames back to back (the first 12, cycled) while the main
   thread runs a pure-Python loop: the share of the time that loop could run, "Python %" (100 %: the
   encoder never holds the GIL, the asyncio loop would keep its pace; 50 %: a thread of pure Python).
   On Linux it is measured as 100 % less the time the loop slept (blocked on the GIL: neither on a CPU
   nor waiting for one, from ``/proc/thread-self/schedstat``), so that other load on a shared machine
   does not count as GIL; a thread of pure Python is measured first for reference (ideally 50 %; on a
   loaded machine a thread woken for the GIL also waits in the run queue, which is not counted, so it
   reads higher).

VP8/VP9/H.264 run at the bit rate a lone new stream gets from the rate control (libspice: 0.8 x 10
Mbit/s, the encoder told 4/3 of it: 10.7 Mbit/s) unless ``--bit-rate`` says otherwise; MJPEG at q50
(where the rate control starts) and q80 (the top of its ladder).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from video import Scene  # noqa: E402  # benchmarks/video.py: issue 11's scene

from spiceserver.codecs.jpeg import decode_jpeg  # noqa: E402
from spiceserver.codecs.mjpeg import encode_mjpeg_frame  # noqa: E402
from spiceserver.codecs.video import AvFrameEncoder, available_codecs  # noqa: E402
from spiceserver.proto.enums import VideoCodecType  # noqa: E402
from spiceserver.worker.mjpeg_rate import starting_bit_rate  # noqa: E402
from spiceserver.worker.video_rate import BitRateControl  # noqa: E402

DECODERS = {VideoCodecType.VP8: "vp8", VideoCodecType.VP9: "vp9", VideoCodecType.H264: "h264"}


def channels(px: np.ndarray) -> np.ndarray:
    return ((px[..., None] >> np.array([16, 8, 0], dtype=np.uint32)) & 255).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((channels(a) - channels(b)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def schedstat() -> tuple[int, int] | None:
    """This thread's (ns on a CPU, ns waiting for one) from Linux ``/proc/thread-self/schedstat``."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            run, wait, _ = (int(v) for v in f.read().split())
    except (OSError, ValueError):
        return None
    return run, wait


def python_loop(seconds: float) -> tuple[float, float]:
    """Run a pure-Python loop for ``seconds``: (its iterations per second, the share of the time it
    was neither running nor waiting for a CPU, i.e. blocked on the GIL)."""
    n = 0
    s0, t0 = schedstat(), time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        n += 1
    s1, wall = schedstat(), time.perf_counter() - t0
    blocked = float("nan")
    if s0 is not None and s1 is not None:
        blocked = max(0.0, wall * 1e9 - (s1[0] - s0[0]) - (s1[1] - s0[1])) / (wall * 1e9)
    return n / wall, blocked


def gil_share(encode: Callable[[np.ndarray], bytes], frames: list[np.ndarray], seconds: float = 1.5) -> float:
    """% of the time a Python loop can run while another thread encodes ``frames`` in a loop.

    On Linux: 100 % less the share of the loop's wall time spent neither on a CPU nor in the run
    queue (the time it slept on the GIL), so other load on the machine does not count. Elsewhere:
    the loop's rate against its rate alone.
    """
    stop = threading.Event()

    def work() -> None:
        k = 0
        while not stop.is_set():
            encode(frames[k % len(frames)])
            k += 1

    idle_rate, _ = python_loop(0.5)
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    time.sleep(0.05)
    busy_rate, blocked = python_loop(seconds)
    stop.set()
    thread.join()
    if blocked == blocked:  # not NaN
        return 100.0 * (1.0 - blocked)
    idle_rate = (idle_rate + python_loop(0.5)[0]) / 2
    return 100.0 * busy_rate / idle_rate


class Codec:
    """One encoder under test: ``encode(pixels) -> bytes`` and ``decode(bytes) -> pixels``."""

    def __init__(self, label: str, encode: Callable[[np.ndarray], bytes], decode: Callable[[bytes], np.ndarray]) -> None:
        self.label = label
        self.encode = encode
        self.decode = decode


def mjpeg(quality: int) -> Callable[[int, int], Codec]:
    def make(w: int, h: int) -> Codec:
        return Codec(f"MJPEG q{quality}", lambda px: encode_mjpeg_frame(px, quality), decode_jpeg)

    return make


def av_codec(codec: VideoCodecType, bit_rate: int | None, threads: int) -> Callable[[int, int], Codec]:
    import av  # optional: spiceserver[video]

    def make(w: int, h: int) -> Codec:
        rate = bit_rate or BitRateControl(starting_bit_rate(), 0, width=w, height=h, source_fps=25).bit_rate
        enc = AvFrameEncoder(codec, w, h, bit_rate=rate, fps=25, threads=threads)
        dec = av.CodecContext.create(DECODERS[codec], "r")
        dec.thread_count = 1

        def decode(data: bytes) -> np.ndarray:
            (frame,) = dec.decode(av.Packet(data))
            bgra = frame.to_ndarray(format="bgra")
            out: np.ndarray = bgra.view(np.uint32)[..., 0] & 0xFFFFFF
            return out

        label = f"{codec.name} {rate / 1e6:.1f}M" + (f" {threads}T" if threads > 1 else "")
        return Codec(label, enc.encode, decode)

    return make


def measure(make: Callable[[int, int], Codec], scene: Scene, frames: int) -> dict[str, Any]:
    w, h = scene.w, scene.h
    codec = make(w, h)
    walls, cpus, sizes, scores = [], [], [], []
    for k in range(frames):
        px = scene.frame(k)
        t0, c0 = time.perf_counter(), time.process_time()
        data = codec.encode(px)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)  # the codec's own threads included
        sizes.append(len(data))
        scores.append(psnr(codec.decode(data), px))
    # pass 2: a fresh encoder in a thread, encoding the first frames over and over, while this
    # thread runs a pure-Python loop
    cached = [np.ascontiguousarray(scene.frame(k)) if w == 1920 else scene.frame(k) for k in range(min(frames, 12))]
    gil = gil_share(make(w, h).encode, cached)
    steady = walls[5:] or walls  # the first frames include opening the codec and a keyframe
    return {
        "label": codec.label,
        "size": f"{w}x{h}",
        "ms": statistics.median(steady) * 1000,
        "ms_mean": statistics.mean(walls) * 1000,
        "cpu_ms": statistics.mean(cpus[5:] or cpus) * 1000,
        "kib": statistics.mean(sizes) / 1024,
        "mbps": statistics.mean(sizes) * 8 * 25 / 1e6,
        "psnr": statistics.mean(scores),
        "gil": gil,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frames", type=int, default=100, help="frames per codec and size (default 100)")
    parser.add_argument("--bit-rate", type=int, default=None, help="VP8/VP9/H.264 bit rate in bit/s")
    parser.add_argument("--threads", type=int, default=1, help="codec threads for VP8/VP9/H.264")
    parser.add_argument("--sizes", default="640x360,1920x1080")
    parser.add_argument("--codecs", default="mjpeg,vp8,vp9,h264")
    args = parser.parse_args()

    have = available_codecs()
    makers: list[Callable[[int, int], Codec]] = []
    for name in args.codecs.split(","):
        if name == "mjpeg":
            makers += [mjpeg(50), mjpeg(80)]
            continue
        codec = VideoCodecType[name.upper()]
        if codec not in have:
            print(f"{name}: not available (PyAV missing?)", file=sys.stderr)
            continue
        makers.append(av_codec(codec, args.bit_rate, args.threads))

    print(f"{platform.processor() or platform.machine()}, {platform.python_implementation()} {platform.python_version()}, {args.frames} frames")
    head = f"{'codec':<18} {'size':>9} {'ms/frame':>9} {'(mean)':>7} {'CPU ms':>7} {'KiB/fr':>7} {'Mbit/s@25':>9} {'PSNR dB':>8} {'Python %':>8}"
    print(head)
    print("-" * len(head))
    busy_python = gil_share(lambda px: bytes(sum(range(2000)) & 1), [np.zeros((1, 1), np.uint32)])
    print(f"(reference: a thread of pure Python leaves the loop {busy_python:.0f} %)")
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        scene = Scene(w, h)
        for make in makers:
            r = measure(make, scene, args.frames)
            print(
                f"{r['label']:<18} {r['size']:>9} {r['ms']:9.2f} {r['ms_mean']:7.2f} {r['cpu_ms']:7.2f} {r['kib']:7.1f} "
                f"{r['mbps']:9.2f} {r['psnr']:8.2f} {r['gil']:8.0f}"
            )


if __name__ == "__main__":
    main()
