"""Framebuffer path costs: what ``FramebufferDisplay.update`` costs the host per call, what the display
worker then spends on the frame (tile ids + drawables + rendering into the server's canvas), and the CPU
seconds a 25 fps host uses per 10 s of frames.

Run: ``python benchmarks/framebuffer.py`` (no client), ``--client`` (the pure-Python test client linked
and draining the display channel; its parsing then shares the process, and as the frames repeat
-- 3 full frames, 16 region clips -- most reach it from its pixmap cache), ``--seconds N`` for the
length of the paced 25 fps runs (default 10). docs/performance.md records the figures.

Cases, on a real :class:`~spiceserver.SpiceServer` with one 1920x1080 framebuffer display:

- ``full``: every pixel of a 1080p frame changes (noise), no dirty rectangles given;
- ``region``: a 640x360 area inside the 1080p frame changes each frame (a video playing in a window),
  with the rectangle given (``dirty=[...]``) and without (the library diffs);
- ``static``: the same frame again, no rectangles (the diff finds nothing);
- each of these with ``copy=False`` too when this version of ``update`` has it (the host promises not
  to write into the frames it hands over).

The host in the ``region`` case paints into one buffer it keeps (what an emulator's VGA model does),
except with ``copy=False``, where it hands over frames painted beforehand and never written again
(a decoder's output), as that contract requires. Timings are wall-clock medians; the machine may be
shared, so compare runs made back to back (``git stash`` the change, run, unstash, run).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import inspect
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spiceserver import ServerConfig, SpiceServer
from spiceserver.framebuffer import FramebufferDisplay
from spiceserver.worker.messages import FramebufferFrame

W, H = 1920, 1080
RW, RH = 640, 360
RX, RY = 640, 360
FPS = 25

Frames = Callable[[int], tuple[np.ndarray, list[tuple[int, int, int, int]] | None]]


def desktop() -> np.ndarray:
    """A 1080p desktop-like background (gradients), 0x00RRGGBB."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.uint32)
    return ((xx * 255 // W) << 16) | ((yy * 255 // H) << 8) | 0x40


def video_frames(n: int) -> list[np.ndarray]:
    """``n`` distinct 640x360 frames: a moving pattern over noise (changes every tile, every frame)."""
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 1 << 24, size=(RH, RW), dtype=np.uint32)
    yy, xx = np.mgrid[0:RH, 0:RW].astype(np.uint32)
    return [noise ^ (((xx + 9 * i) * 3 & 0xFF) << 16) ^ ((yy + 5 * i) & 0xFF) for i in range(n)]


def has_copy_flag() -> bool:
    return "copy" in inspect.signature(FramebufferDisplay.update).parameters


def cases() -> Iterator[tuple[str, Frames, dict[str, Any]]]:
    """(name, frame source, extra update kwargs); the source gives (frame, dirty) for frame i."""
    rng = np.random.default_rng(1)
    fulls = [rng.integers(0, 1 << 24, size=(H, W), dtype=np.uint32) for _ in range(3)]
    base = desktop()
    clips = video_frames(16)
    buf = base.copy()
    rect = [(RX, RY, RX + RW, RY + RH)]

    def full(i: int) -> tuple[np.ndarray, None]:
        return fulls[i % len(fulls)], None

    def region_in_place(dirty: bool) -> Frames:
        def get(i: int) -> tuple[np.ndarray, list[tuple[int, int, int, int]] | None]:
            buf[RY : RY + RH, RX : RX + RW] = clips[i % len(clips)]
            return buf, rect if dirty else None

        return get

    fresh: list[np.ndarray] = []

    def region_fresh(dirty: bool) -> Frames:
        if not fresh:  # frames painted beforehand (a decoder's output), never written again
            for clip in clips:
                fresh.append(base.copy())
                fresh[-1][RY : RY + RH, RX : RX + RW] = clip

        def get(i: int) -> tuple[np.ndarray, list[tuple[int, int, int, int]] | None]:
            return fresh[i % len(fresh)], rect if dirty else None

        return get

    def static(i: int) -> tuple[np.ndarray, None]:
        return base, None

    yield "full 1080p, no rects", full, {}
    yield "region 640x360, rect given", region_in_place(True), {}
    yield "region 640x360, no rects (diff)", region_in_place(False), {}
    yield "static 1080p, no rects (diff)", static, {}
    if has_copy_flag():
        yield "full 1080p, no rects, copy=False", full, {"copy": False}
        yield "region 640x360, rect given, copy=False", region_fresh(True), {"copy": False}
        yield "region 640x360, no rects, copy=False", region_fresh(False), {"copy": False}


def time_worker_handler(fb: FramebufferDisplay) -> list[float]:
    """Wrap the worker's handler of framebuffer frames; the list gets its time per frame (seconds)."""
    handlers = fb.worker.ep._handlers
    inner = handlers[FramebufferFrame]
    spent: list[float] = []

    def timed(msg: Any) -> None:
        t = time.perf_counter()
        inner(msg)
        spent.append(time.perf_counter() - t)

    handlers[FramebufferFrame] = timed
    return spent


def per_call(server: SpiceServer, fb: FramebufferDisplay, frames: Frames, kw: dict[str, Any], n: int, spent: list[float]) -> tuple[list[float], list[float], list[float]]:
    """Per frame (seconds): host time inside ``update``; the worker's time in its frame handler (tile
    ids, drawables, rendering into the server's canvas, handing to clients); ``update`` start -> idle.

    Building the frame (the host's painting) is outside all three."""
    host, total = [], []
    spent.clear()
    for i in range(n):
        frame, dirty = frames(i)
        t0 = time.perf_counter()
        fb.update(frame, dirty, **kw)
        t1 = time.perf_counter()
        server.wait_idle(timeout=60)
        t2 = time.perf_counter()
        host.append(t1 - t0)
        total.append(t2 - t0)
    return host, list(spent) or [0.0], total


def paced(server: SpiceServer, fb: FramebufferDisplay, frames: Frames, kw: dict[str, Any], seconds: float) -> tuple[float, float]:
    """Run at 25 fps for ``seconds``: (process CPU seconds per 10 s of frames, wall seconds taken)."""
    n = int(seconds * FPS)
    server.wait_idle(timeout=60)
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(n):
        frame, dirty = frames(i)
        fb.update(frame, dirty, **kw)
        delay = t0 + (i + 1) / FPS - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    server.wait_idle(timeout=60)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return cpu * 10 / (n / FPS), wall


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:7.2f} ms (min {min(xs) * 1000:6.2f})"


def hash_figures() -> None:
    """The tile id alone, for a 1080p tile: blake2b over a bytes copy vs xxh3_64 over the array."""
    px = np.random.default_rng(3).integers(0, 1 << 24, size=(H, W), dtype=np.uint32)
    ways: list[tuple[str, Callable[[], object]]] = [("blake2b-64 of tobytes()", lambda: hashlib.blake2b(px.tobytes(), digest_size=8).digest())]
    try:
        import xxhash

        ways.append(("xxh3_64 of the array", lambda: xxhash.xxh3_64_intdigest(px)))
    except ImportError:
        pass
    ways.append(("tobytes() alone", lambda: px.tobytes()))
    for name, fn in ways:
        ts = []
        for _ in range(20):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        print(f"  1080p tile id, {name:28}: {ms(ts)}")


async def drain_client(server: SpiceServer, stop: threading.Event) -> None:
    """Link the test client's display channel and throw away what arrives until ``stop``."""
    from tests.support.client import Endpoint, connect
    from tests.support.display import link_display

    s = await connect(Endpoint(port=server.port_of()))
    ch, _ = await link_display(s)
    while not stop.is_set():
        try:
            await ch.recv(0.2)
        except TimeoutError:
            pass
    await ch.close()


def run(server: SpiceServer, fb: FramebufferDisplay, seconds: float) -> None:
    spent = time_worker_handler(fb)
    for name, frames, kw in cases():
        n = 20 if name.startswith("full") else 100
        for i in range(3):  # warm: first frame after a case switch diffs against another picture
            fb.update(*frames(i), **kw)
        server.wait_idle(timeout=60)
        host, worker, total = per_call(server, fb, frames, kw, n, spent)
        print(f"{name}:")
        print(f"  update() on the host        : {ms(host)}")
        print(f"  worker's frame handler      : {ms(worker)}")
        print(f"  update() start -> idle      : {ms(total)}")
        if seconds > 0:
            cpu, wall = paced(server, fb, frames, kw, seconds)
            late = " (could not keep 25 fps)" if wall > seconds * 1.05 else ""
            print(f"  25 fps for {seconds:g} s: {cpu:5.2f} CPU s per 10 s{late}")


async def amain(args: argparse.Namespace) -> None:
    from spiceserver.codecs import warmup

    warmup.start()
    warmup.wait()
    server = SpiceServer(ServerConfig(port=0, disable_ticketing=True, net_test=False))
    fb = server.add_framebuffer_display(W, H)
    await server.start()
    stop = threading.Event()
    client = asyncio.create_task(drain_client(server, stop)) if args.client else None
    try:
        fb.update(desktop())
        await asyncio.to_thread(run, server, fb, args.seconds)
    finally:
        stop.set()
        if client is not None:
            await client
        await server.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--client", action="store_true", help="link the test client and drain the display channel")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each paced 25 fps run (0: skip)")
    args = p.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()} {platform.release()}, Python {platform.python_version()}, numpy {np.__version__}")
    print(f"date: {time.strftime('%Y-%m-%d')}; client: {'test client' if args.client else 'none'}; update(copy=...) available: {has_copy_flag()}")
    hash_figures()
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
