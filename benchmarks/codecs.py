"""All image codecs in one run: MPix/s and compressed size per codec on the shared benchmark images.

Run: ``python benchmarks/codecs.py`` (numba mode; the interpreted "pure" mode is measured by
``codecs_quic.py`` and ``codecs_lz.py`` on the 256x256 images). For each of desktop-like and photo-like 1920x1080 and 256x256 images from
``../shared/images/`` (loaded as BGRX), it times Quic, LZ, GLZ (empty dictionary), LZ4 and JPEG, and
prints median milliseconds, MPix/s and bytes. The detailed per-format benchmarks, with C reference
timings when a harness is given, are ``codecs_quic.py`` and ``codecs_lz.py``; docs/performance.md
records the figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spiceserver.codecs import warmup
from spiceserver.codecs.glz import GlzDictionary, encode_glz
from spiceserver.codecs.jpeg import encode_jpeg
from spiceserver.codecs.lz import LzImageType, encode_lz
from spiceserver.codecs.lz4 import encode_lz4
from spiceserver.codecs.quic import encode_quic
from spiceserver.proto.enums import BitmapFmt

IMAGES = Path(__file__).resolve().parent.parent.parent / "shared" / "images"


def load(name: str) -> np.ndarray:
    rgb = np.asarray(Image.open(IMAGES / f"{name}.png").convert("RGB"), dtype=np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def timed(fn: Callable[[int], bytes], reps: int) -> tuple[float, int]:
    """Median seconds and output size of ``fn(rep)`` over ``reps`` calls."""
    times, size = [], 0
    for rep in range(reps):
        t = time.perf_counter()
        size = len(fn(rep))
        times.append(time.perf_counter() - t)
    return statistics.median(times), size


def codecs_for(px: np.ndarray, reps: int) -> dict[str, Callable[[int], bytes]]:
    h, w = px.shape
    raw = px.astype("<u4").tobytes()
    dictionaries = [GlzDictionary(1 << 22) for _ in range(reps)]  # empty, made (and mapped) outside the timing
    for dictionary in dictionaries:
        dictionary.reserve(w * h)
    return {
        "quic": lambda _rep: encode_quic(px, "rgb32"),
        "lz": lambda _rep: encode_lz(raw, LzImageType.RGB32, width=w, height=h, stride=w * 4),
        "glz": lambda rep: encode_glz(dictionaries[rep], raw, LzImageType.RGB32, w, h, w * 4),
        "lz4": lambda _rep: encode_lz4(raw, w, h, BitmapFmt.BIT32, w * 4),
        "jpeg": lambda _rep: encode_jpeg(px),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    if not IMAGES.is_dir():
        sys.exit(f"benchmark images not found at {IMAGES}")
    t = time.perf_counter()
    warmup.wait()
    print(f"numba kernels ready in {time.perf_counter() - t:.2f} s")
    print(f"{'image':14} {'codec':6} {'ms':>9} {'MPix/s':>8} {'bytes':>10}")
    for name in ("desktop_1080", "photo_1080", "desktop_256", "photo_256"):
        px = load(name)
        h, w = px.shape
        for codec, fn in codecs_for(px, args.reps).items():
            sec, size = timed(fn, args.reps)
            print(f"{name:14} {codec:6} {sec * 1000:9.2f} {w * h / sec / 1e6:8.1f} {size:10d}")


if __name__ == "__main__":
    main()
