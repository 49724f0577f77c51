"""MJPEG stream frames: encode milliseconds and bytes per frame at the rate control's qualities.

Run: ``python benchmarks/mjpeg.py [--reps N]``. For the shared photo-like and desktop-like images at
640x360 and 1920x1080 (``../shared/images/``, loaded as our uint32 0x00RRGGBB canvas), it encodes with
:func:`spiceserver.codecs.mjpeg.encode_mjpeg_frame` at q20, q50 and q80 -- from a contiguous frame
and from a strided view of a larger canvas, as the stream will -- and prints the median ms per frame
and the frame size. The 640x360 crop is what issue 11's video scene streams; the Pillow path of
``codecs/jpeg.py`` is printed alongside for comparison.
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

from spiceserver.codecs.jpeg import encode_jpeg
from spiceserver.codecs.mjpeg import encode_mjpeg_frame

IMAGES = Path(__file__).resolve().parent.parent.parent / "shared" / "images"
QUALITIES = (20, 50, 80)


def load(name: str) -> np.ndarray:
    rgb = np.asarray(Image.open(IMAGES / f"{name}.png").convert("RGB"), dtype=np.uint32)
    out: np.ndarray = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return out


def timed(fn: Callable[[], bytes], reps: int) -> tuple[float, int]:
    fn()  # warm up
    times, size = [], 0
    for _ in range(reps):
        t = time.perf_counter()
        size = len(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    print(f"{'image':<24} {'layout':<10} " + " ".join(f"{'q' + str(q) + ' ms':>8} {'KiB':>6}" for q in QUALITIES))
    for name in ("photo_640x360", "desktop_640x360", "photo_1080", "desktop_1080"):
        px = load(name)
        h, w = px.shape
        canvas = np.zeros((h + 64, w + 64), dtype=np.uint32)
        canvas[32 : 32 + h, 32 : 32 + w] = px
        view = canvas[32 : 32 + h, 32 : 32 + w]  # rows of a larger canvas, not contiguous
        layouts: dict[str, Callable[[int], Callable[[], bytes]]] = {
            "contig": lambda q, px=px: lambda: encode_mjpeg_frame(px, q),
            "strided": lambda q, view=view: lambda: encode_mjpeg_frame(view, q),
            "pillow": lambda q, px=px: lambda: encode_jpeg(px, q),
        }
        for layout, make in layouts.items():
            cells = []
            for q in QUALITIES:
                ms, size = timed(make(q), args.reps)
                cells.append(f"{ms:8.2f} {size / 1024:6.1f}")
            print(f"{name + f' {w}x{h}':<24} {layout:<10} " + " ".join(cells))


if __name__ == "__main__":
    main()
