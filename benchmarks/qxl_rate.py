"""QXL command rate: a stream of small solid fills through the real QXL device rings, with no
client, with the test client or with spice-gtk linked to display 0.

The guest side plays the driver's part of ``qxl_cmd.c`` / ``qxl_draw.c`` (Linux ``drivers/gpu/drm/qxl``):
each fill is written into guest RAM, pushed on the command ring, and NOTIFY_CMD is written when the
ring asks for it; the server side is what libspice-server's ``red-worker.c`` / ``display-channel.c``
do with it (ring pull, parse, tree, canvas, pipe, marshal).

Reported: commands/s (wall clock, guest submit to worker idle), the worker thread's CPU per command
(its own CPU clock, ``pthread_getcpuclockid``), the guest driver's CPU per command (the guest runs in
a thread of this process because the device's rings and I/O port are Python objects here; its CPU is
measured on its own clock and reported so it can be subtracted from the shared GIL budget), and the
share of fills that left the server as their own DRAW_FILL (the display client's ``drawables``
counter; the test client also counts the DRAW_FILL messages it receives). ``--profile`` runs cProfile
on the worker thread and prints the top entries by cumulative time.

Run: ``python benchmarks/qxl_rate.py [--seconds 10] [--client none|test|spicegtk] [--profile]``
(docs/performance.md records the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import platform
import pstats
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spiceserver import ServerConfig, SpiceServer
from spiceserver.proto.enums import BrushType
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Rect
from spiceserver.qxl.layout import CmdType
from spiceserver.synthetic_guest.driver import SyntheticDriver
from spiceserver.worker.dispatcher import Request
from spiceserver.worker.worker import DisplayWorker

W, H = 1024, 768
DISTINCT = 4096  # distinct fills, cycled (the guest's per-command work stays small)


@dataclass(frozen=True, slots=True)
class _Profile(Request):
    """Start (``on``) or stop cProfile on the worker thread; stopping replies with the stats text."""

    on: bool
    top: int = 25


def fills(n: int) -> list[tuple[d.Fill, Rect]]:
    """Random solid fills of 8..64 px sides at random places of the primary, random colours."""
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        x, y = int(rng.integers(0, W - 64)), int(rng.integers(0, H - 64))
        box = Rect(top=y, left=x, bottom=y + int(rng.integers(8, 65)), right=x + int(rng.integers(8, 65)))
        body = d.Fill(brush=d.Brush(type=BrushType.SOLID, color=int(rng.integers(0, 1 << 24))), rop_descriptor=8, mask=d.QMask())
        out.append((body, box))
    return out


def worker_of(server: SpiceServer) -> DisplayWorker:
    worker: DisplayWorker = server._display(0).worker
    return worker


def install_profiler(worker: DisplayWorker) -> None:
    prof = cProfile.Profile()

    def handle(msg: _Profile) -> str:
        if msg.on:
            prof.enable()  # profiles the calling thread: the worker's
            return ""
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(msg.top)
        return out.getvalue()

    worker.ep.register_handler(_Profile, handle)


class Guest:
    """The guest driver, in its own thread: pushes fills for ``seconds``, measuring its own CPU."""

    def __init__(self, driver: SyntheticDriver, seconds: float) -> None:
        self.driver = driver
        self.seconds = seconds
        self.stream = fills(DISTINCT)
        self.sent = 0
        self.cpu = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            cpu0 = time.thread_time()
            end = time.perf_counter() + self.seconds
            drv, stream = self.driver, self.stream
            i = 0
            while time.perf_counter() < end:
                for _ in range(64):
                    body, box = stream[i % DISTINCT]
                    drv.reserve(1024)
                    drv.push(drv.drawable(body, bbox=box), CmdType.DRAW)
                    i += 1
                drv.collect()
            self.sent = i
            self.cpu = time.thread_time() - cpu0
        except BaseException as e:  # reported by the caller
            self.error = e


@contextlib.asynccontextmanager
async def linked(server: SpiceServer, kind: str) -> AsyncIterator[dict[str, Any]]:
    """A client of ``kind`` linked to display 0 for the body; yields what it counted."""
    seen: dict[str, Any] = {"fills": 0, "messages": 0}
    if kind == "none":
        yield seen
        return
    if kind == "test":
        from tests.support.client import Endpoint, connect
        from tests.support.display import link_display

        session = await connect(Endpoint(port=server.port_of()))
        ch, state = await link_display(session)
        while state.marks == 0:
            state.apply(await ch.recv())

        async def read() -> None:
            while True:
                msg = await ch.recv(3600)
                seen["messages"] += 1
                if isinstance(msg, d.DrawFill):
                    seen["fills"] += 1

        task = asyncio.create_task(read())
        try:
            yield seen
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, EOFError):
                await task
        return
    from tests.interop.harness import controlled_client, require_gi_client

    require_gi_client()
    async with controlled_client("--port", str(server.port_of()), "--wait-display", timeout=3600):
        yield seen


async def settle(server: SpiceServer) -> None:
    """Until the worker handled every queued command and every display client's pipe is empty."""
    await asyncio.to_thread(server.wait_idle, 0, 600)
    while any(c["pipe"] for c in server.display_stats()["clients"]):
        await asyncio.sleep(0.01)


async def run(seconds: float, client: str, profile: bool) -> dict[str, Any]:
    server = SpiceServer(ServerConfig(port=0, disable_ticketing=True, net_test=False))
    device = server.add_qxl_device()
    driver = SyntheticDriver(device, timeout=600, kick_after=0.05)
    driver.setup_memslots()
    driver.create_primary(W, H)
    await server.start()
    worker = worker_of(server)
    clock = time.pthread_getcpuclockid(worker._thread.ident or 0)
    if profile:
        install_profiler(worker)
    try:
        async with linked(server, client) as seen:
            if client == "spicegtk":
                # the first primary draw reached spice-gtk: its display is linked
                while not server.display_stats()["clients"]:
                    await asyncio.sleep(0.05)
            await settle(server)
            before = server.display_stats()
            if profile:
                worker.request(_Profile(True))
            guest = Guest(driver, seconds)
            thread = threading.Thread(target=guest.run, name="qxl-rate-guest")
            cpu0 = time.clock_gettime(clock)
            t0 = time.perf_counter()
            thread.start()
            await asyncio.to_thread(thread.join)
            if guest.error is not None:
                raise guest.error
            await settle(server)
            wall = time.perf_counter() - t0
            cpu = time.clock_gettime(clock) - cpu0
            report = worker.request(_Profile(False)) if profile else ""
            after = server.display_stats()
            fills_seen = seen["fills"]
        n = guest.sent
        result: dict[str, Any] = {
            "client": client,
            "commands": n,
            "wall": wall,
            "rate": n / wall,
            "worker_us": cpu / n * 1e6,
            "guest_us": guest.cpu / n * 1e6,
            "hidden": after["hidden"] - before["hidden"],
            "profile": report,
        }
        if after["clients"]:
            a, b = after["clients"][0], before["clients"][0]
            result["sent_as_fills"] = (a["drawables"] - b["drawables"]) / n
            result["collapsed"] = a["collapsed"] - b["collapsed"]
            result["pruned"] = a["pruned"] - b["pruned"]
            result["pictures"] = {k: v - b["images"].get(k, 0) for k, v in a["images"].items() if v - b["images"].get(k, 0)}
        if client == "test":
            result["client_fills"] = fills_seen / n
        return result
    finally:
        await server.close()


def show(r: dict[str, Any]) -> None:
    print(f"client={r['client']}: {r['commands']:,} fills in {r['wall']:.2f} s = {r['rate']:,.0f} commands/s")
    print(f"  worker CPU {r['worker_us']:.0f} us/command (worker-bound rate {1e6 / r['worker_us']:,.0f}/s); guest driver CPU {r['guest_us']:.0f} us/command (same process, other thread)")
    print(f"  hidden in the tree: {r['hidden']:,}")
    if "sent_as_fills" in r:
        print(f"  sent as DRAW_FILL: {r['sent_as_fills'] * 100:.1f} % (collapses {r['collapsed']}, pruned {r['pruned']:,}, images {r['pictures']})")
    if "client_fills" in r:
        print(f"  DRAW_FILL received by the test client: {r['client_fills'] * 100:.1f} %")
    if r["profile"]:
        print(r["profile"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="how long the guest submits fills")
    p.add_argument("--client", choices=("none", "test", "spicegtk"), default="none")
    p.add_argument("--profile", action="store_true", help="cProfile the worker thread (slows it down)")
    args = p.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()} {platform.release()}, Python {platform.python_version()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M')}")
    show(asyncio.run(run(args.seconds, args.client, args.profile)))


if __name__ == "__main__":
    main()
