"""Display pipeline figures: commands per second through parse + render + tree, and the time from a
guest's full-screen update to its message leaving the server (and reaching a client on loopback).

Run: ``python benchmarks/display_pipeline.py`` (prints the figures; docs/performance.md records them).
"""

from __future__ import annotations

import asyncio
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spiceserver import ServerConfig, SpiceServer
from spiceserver.codecs import warmup
from spiceserver.proto.enums import BitmapFlags, BitmapFmt, BrushType, ImageType
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Rect
from spiceserver.qxl.guest import GuestDriver
from spiceserver.worker.drawable import make_drawable
from spiceserver.worker.messages import ApplyOps
from spiceserver.worker.ops import CreateSurface, Draw
from spiceserver.worker.worker import DisplayWorker
from tests.support.client import Endpoint, connect
from tests.support.display import link_display

W, H = 1024, 768


def fill(color: int, box: Rect) -> d.Fill:
    return d.Fill(brush=d.Brush(type=BrushType.SOLID, color=color), rop_descriptor=8, mask=d.QMask())


def bitmap(px: np.ndarray, image_id: int = 0) -> d.Image:
    h, w = px.shape
    return d.Image(
        descriptor=d.ImageDescriptor(id=image_id, type=ImageType.BITMAP, flags=0, width=w, height=h),
        bitmap=d.BitmapData(format=BitmapFmt.BIT32, flags=BitmapFlags.TOP_DOWN, x=w, y=h, stride=w * 4, palette=None, data=px.astype("<u4").tobytes()),
    )


def small_boxes(n: int) -> list[Rect]:
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        x, y = int(rng.integers(0, W - 64)), int(rng.integers(0, H - 64))
        out.append(Rect(top=y, left=x, bottom=y + int(rng.integers(8, 64)), right=x + int(rng.integers(8, 64))))
    return out


def bench_tree(n: int = 20000) -> float:
    """Drawables per second into a worker (render + tree + no client), fills of 8..64 px squares."""
    worker = DisplayWorker("bench")
    worker.start()
    try:
        worker.request(ApplyOps((CreateSurface(0, W, H, primary=True),)))
        boxes = small_boxes(n)
        drawables = [make_drawable(0, d.DisplayBase(surface_id=0, box=b, clip=d.Clip()), fill(i * 2654435761 % (1 << 24), b)) for i, b in enumerate(boxes)]

        ops = tuple(Draw(dr) for dr in drawables)
        t = time.perf_counter()
        worker.request(ApplyOps(ops), timeout=600)  # applied in one go on the worker thread
        return n / (time.perf_counter() - t)
    finally:
        worker.stop()


async def bench_qxl(n: int = 5000) -> float:
    """QXL commands per second: guest writes + ring + parse + render + tree (no client)."""
    server = SpiceServer(ServerConfig(port=0, disable_ticketing=True))
    device = server.add_qxl_device()
    guest = GuestDriver(device)
    guest.create_primary(W, H)
    boxes = small_boxes(n)
    try:
        t = time.perf_counter()
        for i, b in enumerate(boxes):
            phys = guest.drawable(fill(i, b), bbox=b)
            while not guest.submit(phys, 1):
                server.wait_idle()
                guest.collect_releases()
            if i % 512 == 511:
                guest.collect_releases()
        server.wait_idle()
        return n / (time.perf_counter() - t)
    finally:
        await server.close()


async def bench_latency(rounds: int = 15, websocket: bool = False) -> tuple[list[float], list[float], Counter[str]]:
    """Full-screen 1024x768 bitmap DRAW_COPY: guest submit -> worker done, and -> client has it.

    Kernels are warmed first, so the images go out in the codec the default ``auto_glz`` picks
    (returned: image type -> count).
    """
    warmup.start()
    warmup.wait()
    server = SpiceServer(ServerConfig(port=0, disable_ticketing=True, net_test=False))
    device = server.add_qxl_device()
    guest = GuestDriver(device)
    guest.create_primary(W, H)
    await server.start()
    try:
        s = await connect(Endpoint(port=server.port_of(), websocket=websocket))
        ch, state = await link_display(s)
        while state.marks == 0:
            state.apply(await ch.recv())
        rng = np.random.default_rng(2)
        to_server, to_client = [], []
        kinds: Counter[str] = Counter()
        for i in range(rounds):
            px = rng.integers(0, 1 << 24, size=(H, W), dtype=np.uint32) if i % 2 else np.full((H, W), i * 1234567 % (1 << 24), dtype=np.uint32)
            body = d.Copy(src_bitmap=bitmap(px), src_area=Rect(top=0, left=0, bottom=H, right=W), rop_descriptor=8, scale_mode=1, mask=d.QMask())
            phys = guest.drawable(body, bbox=Rect(top=0, left=0, bottom=H, right=W))
            t = time.perf_counter()
            guest.submit(phys, 1)
            await asyncio.to_thread(server.wait_idle)
            to_server.append(time.perf_counter() - t)
            while True:
                msg = await ch.recv(30)
                state.apply(msg)
                if isinstance(msg, d.DrawCopy):
                    kinds[ImageType(msg.data.src_bitmap.descriptor.type).name] += 1
                    break
            to_client.append(time.perf_counter() - t)
            guest.collect_releases()
            guest.reset_allocator()
        return to_server, to_client, kinds
    finally:
        await server.close()


def main() -> None:
    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()} {platform.release()}, Python {platform.python_version()}")
    print(f"date: {time.strftime('%Y-%m-%d')}")
    rate = bench_tree()
    print(f"tree+render, 20000 small fills, no client: {rate:,.0f} drawables/s")
    qrate = asyncio.run(bench_qxl())
    print(f"QXL guest->ring->parse->render->tree, 5000 small fills: {qrate:,.0f} commands/s")
    srv, cli, kinds = asyncio.run(bench_latency())
    print(f"full-screen 1024x768 DRAW_COPY, guest submit -> worker done: median {statistics.median(srv) * 1000:.1f} ms (min {min(srv) * 1000:.1f})")
    print(f"full-screen 1024x768 DRAW_COPY, guest submit -> test client decoded it (loopback; {dict(kinds)}): median {statistics.median(cli) * 1000:.1f} ms (min {min(cli) * 1000:.1f})")
    srv, cli, kinds = asyncio.run(bench_latency(websocket=True))
    print(f"same through a WebSocket on the same port: median {statistics.median(cli) * 1000:.1f} ms (min {min(cli) * 1000:.1f})")


if __name__ == "__main__":
    main()
