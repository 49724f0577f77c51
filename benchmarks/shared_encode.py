"""Encode once: the display worker's CPU and the bytes it encodes for 1, 2 and 4 clients of one display.

Each run starts a server (``max_clients`` = the number of clients, video streaming off), links that
many raw display clients over loopback TCP (each its own session, reading and ACKing everything,
counting the bytes), and draws the same frames into a 1024x768 framebuffer display: a desktop whose
text scrolls and whose window slides (LZ/GLZ content), with a changing 400x300 photo-like region
(Quic). Every frame is delivered to every client before the next is drawn, so no frame is pruned
and each client gets every image. Two client kinds: with a GLZ window (as spice-gtk: GLZ images
are coded per client, Quic shared) and without one (as spice-html5: LZ and Quic both shared).

For comparison, ``per-client`` runs the same with the shared cache turned off (every client
encodes for itself: what libspice does). Figures: the worker thread's CPU seconds (from
/proc/self/task), the display's encode counters (``DisplayMetrics.images_encoded`` /
``images_shared`` / ``bytes_encoded``) and the bytes sent per client.

Run: ``python benchmarks/shared_encode.py [--frames N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import spiceserver.worker.worker as worker_module
from spiceserver import ServerConfig, SpiceServer
from spiceserver.codecs import warmup
from spiceserver.desktop import SyntheticDesktop
from spiceserver.worker.shared_encode import SharedEncodes
from tests.support.client import ClientChannel, Endpoint, connect
from tests.support.display import link_display

W, H = 1024, 768
PHOTO = (560, 400, 960, 700)  # left, top, right, bottom of the changing photo-like region


def frames(n: int) -> list[np.ndarray]:
    """``n`` frames: the desktop at 0.25 s steps, with a photo-like region that changes each time."""
    desk = SyntheticDesktop(W, H)
    x0, y0, x1, y1 = PHOTO
    yy, xx = np.mgrid[y0:y1, x0:x1]
    out = []
    for k in range(n):
        f = desk.frame(k * 0.25)
        rng = np.random.default_rng(k)
        grad = ((xx + 3 * k) % 256) << 16 | ((yy + 5 * k) % 256) << 8 | ((xx + yy + k) % 256)
        f[y0:y1, x0:x1] = (grad + rng.integers(0, 3, size=grad.shape)).astype(np.uint32) & 0xFFFFFF
        out.append(f)
    return out


def thread_cpu(name_prefix: str) -> float:
    """CPU seconds (user + system) of the live threads whose name starts with ``name_prefix``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for t in threading.enumerate():
        if t.name.startswith(name_prefix) and t.native_id is not None:
            try:
                fields = Path(f"/proc/self/task/{t.native_id}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14, 15)
    return total


class Reader:
    """A display client that reads and ACKs everything and counts the bytes."""

    def __init__(self, ch: ClientChannel, session_id: int) -> None:
        self.ch, self.session_id, self.nbytes = ch, session_id, 0
        self.session: object = None

    async def run(self) -> None:
        while True:
            data = await self.ch.reader.read(1 << 20)
            if not data:
                return
            self.nbytes += len(data)
            self.ch.conn.receive_data(data)
            await self.ch.flush()  # ACKs


async def run(n_clients: int, glz: bool, shared: bool, pictures: list[np.ndarray]) -> dict[str, Any]:
    """One run; returns its figures."""
    if not shared:
        worker_module.SharedEncodes = functools.partial(SharedEncodes, max_entries=0)  # type: ignore[misc]
    try:
        server = SpiceServer(ServerConfig(port=0, disable_ticketing=True, net_test=False, max_clients=n_clients, streaming_video="off"))
        fb = server.add_framebuffer_display(W, H)
        await server.start()
    finally:
        worker_module.SharedEncodes = SharedEncodes  # type: ignore[misc]
    fb.update(pictures[0])
    tasks = []
    readers = []
    try:
        ep = Endpoint(port=server.port_of())
        for _ in range(n_clients):
            s = await connect(ep)
            ch, _ = await link_display(s, glz_window=(1 << 22) if glz else 0)
            reader = Reader(ch, s.session_id)
            reader.session = s  # keeps its main channel open (a collected stream closes)
            readers.append(reader)
            tasks.append(asyncio.create_task(reader.run()))

        async def delivered(drawables: int = 0) -> int:
            """Wait until the worker took ``drawables`` draws in all and every client read all it was sent."""
            while True:
                stats = server.display_stats()
                sent = {c["session"]: c["bytes_sent"] for c in stats["clients"]}
                if (
                    stats["drawables"] >= drawables and len(sent) == n_clients and all(c["pipe"] == 0 for c in stats["clients"])
                    and all(sent.get(r.session_id) == r.nbytes for r in readers)
                ):  # fmt: skip
                    return int(stats["drawables"])
                await asyncio.sleep(0.002)

        drawn = await delivered()  # every client has its first picture
        m0 = (await server.metrics()).displays[0]
        cpu0, wall0 = thread_cpu("spice-worker-"), time.perf_counter()
        for picture in pictures[1:]:
            drawn = await delivered(drawn + fb.update(picture))
        cpu, wall = thread_cpu("spice-worker-") - cpu0, time.perf_counter() - wall0
        m1 = (await server.metrics()).displays[0]
        sent = [r.nbytes for r in readers]
        return {
            "clients": n_clients, "glz": glz, "shared": shared, "worker_cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
            "encodes": m1.images_encoded - m0.images_encoded, "shared_results": m1.images_shared - m0.images_shared,
            "bytes_encoded": m1.bytes_encoded - m0.bytes_encoded, "bytes_sent_per_client": int(np.mean(sent)),
        }  # fmt: skip
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40)
    args = ap.parse_args()
    assert warmup.wait(600)
    pictures = frames(args.frames + 1)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}; {args.frames} frames of {W}x{H}")
    print(f"{'clients':>7} {'client':>10} {'mode':>10} {'worker CPU s':>12} {'wall s':>7} {'encodes':>8} {'shared':>7} {'MB encoded':>10} {'MB sent/client':>14}")
    for glz in (True, False):
        for n in (1, 2, 4):
            for shared in (True, False) if n > 1 else (True,):
                r = await run(n, glz, shared, pictures)
                print(
                    f"{r['clients']:>7} {'GLZ' if glz else 'no GLZ':>10} {'shared' if shared else 'per-client':>10} {r['worker_cpu_s']:>12.2f} {r['wall_s']:>7.2f} "
                    f"{r['encodes']:>8} {r['shared_results']:>7} {r['bytes_encoded'] / 1e6:>10.2f} {r['bytes_sent_per_client'] / 1e6:>14.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    asyncio.run(main())
