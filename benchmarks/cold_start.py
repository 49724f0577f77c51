"""Cold start: codec warm-up time, then how long a 1080p photo takes to reach spice-gtk right after it.

Run: ``python benchmarks/cold_start.py [--cache-dir DIR] [--size 1920x1080] [--video SECONDS]``.

Without ``--cache-dir`` numba's cache is a fresh empty directory (a cold start, as on a new machine);
run it again with the same ``--cache-dir`` for the warm figure. The script serves a
:class:`~spiceserver.FramebufferDisplay` (a desktop-like first frame), waits until the codec kernels
are ready, connects spice-gtk (``tests/interop/gi_client.py`` under ``/usr/bin/python3``), waits for
the first picture, then calls ``update()`` with the photo (``../shared/images/photo_1080.png``) and
times until spice-gtk has invalidated the whole screen. It lists the numba cache files at "ready"
and at the end: a file that appears after "ready" is a kernel compiled while serving clients.

``--video SECONDS`` plays photo-like frames instead of the photo (``photo_640x360.png`` scrolled,
resized to ``--size``) at 25 fps for that long and reports the frames per second spice-gtk showed:
the area it invalidated during the run divided by the frame area and the duration.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
IMAGES = ROOT.parent / "shared" / "images"


def cache_files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


def load_bgrx(name: str, w: int, h: int) -> np.ndarray:
    img = Image.open(IMAGES / name).convert("RGB").resize((w, h))
    rgb = np.asarray(img, dtype=np.uint32)
    return np.ascontiguousarray((rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2])


async def screen_covered(client: object, since: int, area: int, timeout: float) -> float:
    """Poll the client's events until invalidates after index ``since`` cover ``area`` pixels."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        events = client.events  # type: ignore[attr-defined]
        got = sum(ev["w"] * ev["h"] for ev in events[since:] if ev.get("event") == "display-invalidate")
        if got >= area:
            return time.perf_counter()
        if events and events[-1].get("event") == "done":
            raise RuntimeError(f"client ended: {events[-1]}")
        await asyncio.sleep(0.002)
    raise TimeoutError("the picture did not reach the client")


async def play_video(fb: object, client: object, w: int, h: int, seconds: float) -> float:
    """Update at 25 fps; return the frames per second the client invalidated meanwhile."""
    base = load_bgrx("photo_640x360.png", w, h)
    frames = [np.roll(base, 8 * k, axis=1) for k in range(25)]
    mark = len(client.events)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    n = int(seconds * 25)
    for k in range(n):
        await asyncio.sleep(max(0.0, t0 + k / 25 - time.perf_counter()))
        fb.update(frames[k % 25])  # type: ignore[attr-defined]
    await asyncio.sleep(max(0.0, t0 + n / 25 - time.perf_counter()))
    events = client.events[mark:]  # type: ignore[attr-defined]
    area = sum(ev["w"] * ev["h"] for ev in events if ev.get("event") == "display-invalidate")
    return area / (w * h) / seconds


async def run(args: argparse.Namespace, cache: Path) -> None:
    from spiceserver import ServerConfig, SpiceServer
    from spiceserver.codecs import warmup
    from tests.interop.harness import GiClient, require_gi_client

    require_gi_client()
    w, h = args.width, args.height
    before = cache_files(cache)
    t0 = time.perf_counter()
    server = SpiceServer(ServerConfig(port=0, disable_ticketing=True, net_test=False))
    await server.start()
    fb = server.add_framebuffer_display(w, h)
    desktop = load_bgrx("desktop_1080.png", w, h)
    photo = load_bgrx("photo_1080.png", w, h)
    fb.update(desktop)
    while not warmup.ready():
        await asyncio.sleep(0.01)
    t_ready = time.perf_counter()
    at_ready = cache_files(cache)
    client = await GiClient.start(
        "--port", str(server.port_of()), "--wait-display", "--max-invalidates", "1000000",
        "--linger-ms", "600000", "--timeout", "600",
    )  # fmt: skip
    try:
        await screen_covered(client, 0, w * h, 120)
        t_first = time.perf_counter()
        if args.video:
            fps = await play_video(fb, client, w, h, args.video)
        else:
            mark = len(client.events)
            t_update = time.perf_counter()
            fb.update(photo)
            t_done = await screen_covered(client, mark, w * h, 120)
    finally:
        client.kill()
        await client.wait(10)
        await server.close()
    after = cache_files(cache)
    print(f"numba cache {cache}: {len(before)} files before start, {len(at_ready)} at ready, {len(after)} at the end")
    print(f"codec kernels ready after {t_ready - t0:.2f} s (warm-up reported {warmup.seconds():.2f} s)")
    print(f"first picture ({w}x{h} desktop) on spice-gtk {t_first - t_ready:.2f} s after ready (includes client start-up)")
    if args.video:
        print(f"{w}x{h} video at 25 fps for {args.video:g} s: spice-gtk showed {fps:.1f} frames/s")
    else:
        print(f"{w}x{h} photo: update() to spice-gtk covering the screen: {(t_done - t_update) * 1000:.0f} ms")
    late = sorted(after - at_ready)
    print("cache files written after ready:", late if late else "none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", help="numba cache directory (default: a fresh empty one)")
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--video", type=float, default=0.0, help="play 25 fps video for SECONDS instead of the photo")
    args = parser.parse_args()
    args.width, args.height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="numba-cold-") as tmp:
        cache = Path(args.cache_dir) if args.cache_dir else Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(cache)  # before numba is imported
        asyncio.run(run(args, cache))


if __name__ == "__main__":
    main()
