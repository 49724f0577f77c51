"""Quic encoder figures: MPix/s and compressed size on the shared benchmark images.

Run: ``python benchmarks/codecs_quic.py [--formats rgb32,rgba] [--c-harness libqh.so]``.

Modes: ``numba`` (the compiled kernels; compile time is reported separately, cold or from
numba's on-disk cache) and ``pure`` (the same kernels interpreted, as they run where numba is
missing; 256x256 images only, 1080p would take minutes). ``--c-harness`` optionally names a
shared library built from spice-common ``common/quic.c`` exporting::

    int h_encode(int type, int width, int height, const uint8_t *lines, int stride,
                 uint32_t *out, int out_words, int reps, double *seconds_per_rep);

to time the C encoder on the same input (RGB24 is fed packed, as spice-server feeds it).
"""

from __future__ import annotations

import argparse
import ctypes
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spiceserver.codecs import quic_kernels
from spiceserver.codecs.quic import QuicType, encode_quic

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "images"
NAMES = ("desktop_1080", "photo_1080", "desktop_256", "photo_256")
TYPES = {"rgb32": QuicType.RGB32, "rgb24": QuicType.RGB24, "rgba": QuicType.RGBA, "gray": QuicType.GRAY}


def load(name: str) -> np.ndarray:
    """A benchmark image as (h, w) uint32 B,G,R,A (alpha from the PNG, 255 where it has none)."""
    rgba = np.asarray(Image.open(IMAGES / f"{name}.png").convert("RGBA"))
    return np.ascontiguousarray(rgba[:, :, [2, 1, 0, 3]]).view("<u4")[:, :, 0].copy()


def with_alpha(px: np.ndarray) -> np.ndarray:
    """Give an opaque picture a non-trivial alpha plane (a ramp with a flat window)."""
    h, w = px.shape
    y, x = np.mgrid[0:h, 0:w]
    alpha = ((x * 255 // max(w - 1, 1)) ^ (y & 0x30)).astype(np.uint32) & 0xFF
    alpha[h // 3 : h // 2, w // 3 : w // 2] = 255
    return (px & np.uint32(0xFFFFFF)) | (alpha << 24)


def as_format(px: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "gray":
        return (px & 0xFF).astype(np.uint8)
    if fmt == "rgba":
        return with_alpha(px)
    return px


def timed(fn: Callable[[], object], reps: int) -> float:
    """Median seconds per call over ``reps`` calls."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@contextmanager
def interpreted() -> Iterator[None]:
    """Run the kernels as plain Python, as they run without numba."""
    saved = dict(vars(quic_kernels))
    try:
        for name, obj in saved.items():
            if hasattr(obj, "py_func"):
                setattr(quic_kernels, name, obj.py_func)
        quic_kernels._U = quic_kernels._I = int
        yield
    finally:
        for name in ("_U", "_I", *[n for n, o in saved.items() if hasattr(o, "py_func")]):
            setattr(quic_kernels, name, saved[name])


class CHarness:
    """spice-common's ``quic_encode`` through a small ctypes harness."""

    def __init__(self, path: str) -> None:
        self.lib = ctypes.CDLL(path)
        self.lib.h_encode.restype = ctypes.c_int
        self.lib.h_encode.argtypes = [ctypes.c_int] * 3 + [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p] + [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_double),
        ]

    def encode(self, arr: np.ndarray, fmt: str, reps: int) -> tuple[bytes, float]:
        if fmt == "rgb24":
            arr = np.ascontiguousarray(arr.view(np.uint8).reshape(*arr.shape, 4)[:, :, :3])
        arr = np.ascontiguousarray(arr)
        h, w = arr.shape[:2]
        out = np.zeros(h * w * 20 + 1024, np.uint32)
        secs = ctypes.c_double()
        times = []
        n = 0
        for _ in range(reps):
            n = self.lib.h_encode(TYPES[fmt], w, h, arr.ctypes.data, arr.strides[0], out.ctypes.data, out.size, 1, ctypes.byref(secs))
            times.append(secs.value)
        if n < 0:
            raise RuntimeError("C encoder failed")
        return out[:n].tobytes(), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", default="rgb32", help="comma-separated: rgb32,rgb24,rgba,gray")
    parser.add_argument("--c-harness", help="shared library wrapping spice-common quic.c (see module doc)")
    parser.add_argument("--no-pure", action="store_true", help="skip the interpreted runs")
    args = parser.parse_args()
    formats = args.formats.split(",")
    c = CHarness(args.c_harness) if args.c_harness else None

    print(f"# Quic encoder -- {platform.processor() or platform.machine()}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    t0 = time.perf_counter()
    encode_quic(np.zeros((2, 2), np.uint32), "rgb32")
    print(f"numba kernels ready in {time.perf_counter() - t0:.2f} s (cold compile, or load from numba's cache)")
    header = f"{'image':14} {'fmt':5} {'mode':6} {'ms':>9} {'MPix/s':>8} {'bytes':>9} {'bpp':>6}"
    if c:
        header += f" {'C ms':>8} {'C MPix/s':>8} {'same bytes':>10}"
    print(header)
    for name in NAMES:
        px = load(name)
        h, w = px.shape
        mpix = w * h / 1e6
        for fmt in formats:
            arr = as_format(px, fmt)
            reps = 10 if w * h > 1e6 else 30
            data = encode_quic(arr, fmt)
            secs = timed(lambda arr=arr, fmt=fmt: encode_quic(arr, fmt), reps)
            line = f"{name:14} {fmt:5} {'numba':6} {secs * 1e3:9.2f} {mpix / secs:8.1f} {len(data):9d} {len(data) * 8 / (w * h):6.2f}"
            if c:
                cdata, csecs = c.encode(arr, fmt, reps)
                line += f" {csecs * 1e3:8.2f} {mpix / csecs:8.1f} {cdata == data!s:>10}"
            print(line, flush=True)
            if not args.no_pure and w * h <= 256 * 256:
                with interpreted():
                    secs = timed(lambda arr=arr, fmt=fmt: encode_quic(arr, fmt), 1)
                    pure = encode_quic(arr, fmt)
                print(f"{name:14} {fmt:5} {'pure':6} {secs * 1e3:9.0f} {mpix / secs:8.3f} {len(pure):9d} {len(pure) * 8 / (w * h):6.2f}", flush=True)


if __name__ == "__main__":
    main()
