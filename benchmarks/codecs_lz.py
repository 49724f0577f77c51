"""LZ and GLZ encoder figures: MPix/s and compressed size on the shared benchmark images.

Run: ``python benchmarks/codecs_lz.py [--repeat N] [--no-compile]``. Images are
``../shared/images/{desktop,photo}_{1080,640x360,256}.png`` loaded as 32-bit BGRX (the QXL
primary format) and coded as LZ_IMAGE_TYPE_RGB32; GLZ starts from an empty dictionary each time
(created untimed, with its pixel ring reserved, as in a server where the client's dictionary lives on).
Numba mode on every image, pure-Python mode on the 256x256 ones, then the numba compile time of
every LZ/GLZ kernel cold (empty cache directory) and from numba's on-disk cache.

The C reference figures (same images, 2-core box, medians) come from ``../shared/images/README.md``;
the C sizes are spice-common ``lz_encode`` / spice-server ``glz_encode`` output, which ours match
byte for byte.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spiceserver.codecs import glz_kernels, lz_kernels
from spiceserver.codecs.glz import GlzDictionary, encode_glz
from spiceserver.codecs.lz import LzImageType, encode_lz

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "images"
NAMES = ["desktop_1080", "photo_1080", "desktop_640x360", "photo_640x360", "desktop_256", "photo_256"]
C_MS = {("lz", "desktop_1080"): 3.6, ("lz", "photo_1080"): 18.5, ("glz", "desktop_1080"): 4.1}
C_SIZE = {
    ("lz", "desktop_1080"): 243936, ("lz", "photo_1080"): 5688876, ("lz", "desktop_640x360"): 43447,
    ("lz", "photo_640x360"): 683804, ("lz", "desktop_256"): 10770, ("lz", "photo_256"): 197290,
    ("glz", "desktop_1080"): 229117, ("glz", "photo_1080"): 5659043, ("glz", "desktop_640x360"): 45661,
    ("glz", "photo_640x360"): 682086, ("glz", "desktop_256"): 12755, ("glz", "photo_256"): 197332,
}  # fmt: skip


def load(name: str) -> np.ndarray:
    from PIL import Image

    rgb = np.asarray(Image.open(IMAGES / f"{name}.png").convert("RGB")).astype(np.uint32)
    return np.ascontiguousarray((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])


def timed(fn: Callable[[], bytes], repeat: int, setup: Callable[[], object] | None = None) -> tuple[float, float, int]:
    """Median and best seconds of ``fn`` and its output size (``setup`` runs untimed before each call)."""
    times, size = [], 0
    for _ in range(repeat):
        if setup is not None:
            setup()
        t = time.perf_counter()
        size = len(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), size


def bench(px: np.ndarray, codec: str, repeat: int) -> tuple[float, float, int]:
    h, w = px.shape
    if codec == "lz":
        return timed(lambda: encode_lz(px, LzImageType.RGB32, width=w, height=h, stride=w * 4), repeat)
    box: list[GlzDictionary] = []

    def fresh() -> None:  # untimed, as the C figure excludes glz_enc_dictionary_create
        d = GlzDictionary(1 << 24)  # spice-gtk's largest window: 64 MiB / 4
        d.reserve(h * w)  # a long-lived dictionary has its ring mapped already
        box[:] = [d]

    return timed(lambda: encode_glz(box[0], px, LzImageType.RGB32, w, h, w * 4), repeat, fresh)


class pure_mode:
    """Run the kernels as plain Python (what happens without numba)."""

    def __enter__(self) -> None:
        self.saved = []
        for mod in (lz_kernels, glz_kernels):
            for name, obj in list(vars(mod).items()):
                if hasattr(obj, "py_func"):
                    self.saved.append((mod, name, obj))
                    setattr(mod, name, obj.py_func)

    def __exit__(self, *exc: object) -> None:
        for mod, name, obj in self.saved:
            setattr(mod, name, obj)


_WARM = """
import time, numpy as np
t0 = time.perf_counter()
from spiceserver.codecs.lz import LzImageType as T, encode_lz, decode_lz
from spiceserver.codecs.glz import GlzDictionary, GlzDecoderWindow, encode_glz, decode_glz
t1 = time.perf_counter()
px = (np.arange(256, dtype=np.uint32) * 2654435761 >> 8).astype(np.uint32).reshape(16, 16)
marks = [("import", t1 - t0)]
def step(label, fn):
    t = time.perf_counter(); fn(); marks.append((label, time.perf_counter() - t))
step("LZ RGB32 encode", lambda: encode_lz(px, T.RGB32, width=16, height=16, stride=64))
step("LZ RGBA encode (+alpha kernel)", lambda: encode_lz(px, T.RGBA, width=16, height=16, stride=64))
step("LZ RGB32/RGBA decode", lambda: decode_lz(encode_lz(px, T.RGBA, width=16, height=16, stride=64)))
step("LZ A8 decode", lambda: decode_lz(encode_lz(px.astype(np.uint8), T.A8, width=16, height=16, stride=16)))
d = GlzDictionary(1 << 16)
step("GLZ RGB32 encode", lambda: encode_glz(d, px, T.RGB32, 16, 16, 64))
step("GLZ RGBA encode (+alpha kernel)", lambda: encode_glz(d, px, T.RGBA, 16, 16, 64))
step("GLZ decode", lambda: decode_glz(GlzDecoderWindow(), encode_glz(GlzDictionary(1 << 16), px, T.RGB32, 16, 16, 64)))
print(repr(marks))
"""


def compile_times() -> None:
    root = str(Path(__file__).resolve().parent.parent)
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=root)
        runs = []
        for _ in range(2):  # cold (empty cache), then from the cache
            out = subprocess.run([sys.executable, "-c", _WARM], env=env, capture_output=True, text=True, check=True)
            runs.append(dict(eval(out.stdout.strip().splitlines()[-1])))
    print("\nnumba compile time per step (first call in a fresh process):")
    print(f"{'step':34s} {'cold':>8s} {'cached':>8s}")
    for label in runs[0]:
        print(f"{label:34s} {runs[0][label]:7.2f}s {runs[1][label]:7.2f}s")
    print(f"{'total':34s} {sum(runs[0].values()):7.2f}s {sum(runs[1].values()):7.2f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--no-compile", action="store_true", help="skip the compile-time measurement")
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, Python {platform.python_version()}, numpy {np.__version__}"
    )
    images = {n: load(n) for n in NAMES}
    # warm the kernels (compile or load from cache) before timing
    small = images["desktop_256"]
    encode_lz(small, LzImageType.RGB32, width=256, height=256, stride=1024)
    encode_glz(GlzDictionary(1 << 20), small, LzImageType.RGB32, 256, 256, 1024)
    print(
        f"\n{'mode':6s} {'codec':4s} {'image':16s} {'med ms':>8s} {'min ms':>8s} {'MPix/s':>8s} {'bytes':>9s} {'C bytes':>9s} {'C ms':>6s} {'C/ours':>6s}"
    )
    rows: list[tuple[str, str, str, int]] = [("numba", c, n, args.repeat) for n in NAMES for c in ("lz", "glz")]
    rows += [("pure", c, n, 1) for n in ("desktop_256", "photo_256") for c in ("lz", "glz")]
    for mode, codec, name, repeat in rows:
        px = images[name]
        if mode == "pure":
            with pure_mode():
                sec, best, size = bench(px, codec, repeat)
        else:
            sec, best, size = bench(px, codec, repeat)
        c_ms = C_MS.get((codec, name))
        speed = f"{c_ms / (sec * 1e3):6.2f}" if c_ms else ""
        print(
            f"{mode:6s} {codec:4s} {name:16s} {sec * 1e3:8.2f} {best * 1e3:8.2f} {px.size / sec / 1e6:8.1f} {size:9d} "
            f"{C_SIZE[(codec, name)]:9d} {c_ms or '':>6} {speed:>6s}"
        )
    if not args.no_compile:
        compile_times()


if __name__ == "__main__":
    main()
