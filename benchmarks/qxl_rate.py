"""QXL command rate: a stream of small QXL draw commands (solid fills, or fills + glyph runs + small
copies) through the real QXL device rings, with no client, with the test client or with spice-gtk
linked to display 0.

The guest side plays the driver's part of ``qxl_cmd.c`` / ``qxl_draw.c`` (Linux ``drivers/gpu/drm/qxl``):
each command is written into guest RAM, pushed on the command ring, and NOTIFY_CMD is written when the
ring asks for it; the server side is what libspice-server's ``red-worker.c`` / ``display-channel.c``
do with it (ring pull, parse, tree, canvas, pipe, marshal).

Reported: commands/s (wall clock, guest submit to worker idle), the worker thread's CPU per command
(its own CPU clock, ``pthread_getcpuclockid``), the guest driver's CPU per command (by default the
guest runs in a forked child sharing the device's memory, as a vCPU runs beside the device model,
its port writes relayed to the parent, so it does not take the worker's GIL budget; ``--guest
thread`` runs it in a thread of this process instead, its CPU measured on its own clock so it can be
subtracted), and the
share of commands that left the server as their own draw message (the display client's ``drawables``
counter; the test client also counts the draw messages it receives). ``--profile`` runs cProfile
on the worker thread (its own CPU time) and prints the top entries by cumulative time.

Run: ``python benchmarks/qxl_rate.py [--seconds 10] [--client none|test|spicegtk] [--mix fills|mixed]
[--guest thread|process] [--profile]``
(docs/performance.md records the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import mmap
import os
import platform
import pstats
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _tasks import in_background  # benchmarks/_tasks.py (this script's folder is on sys.path)

from spiceserver import ServerConfig, SpiceServer
from spiceserver.codecs import warmup
from spiceserver.proto.enums import BrushType
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Point, Rect
from spiceserver.qxl.commands import CopyBits, DrawBody
from spiceserver.qxl.device import QXLDevice
from spiceserver.qxl.layout import CmdType, IOPort
from spiceserver.qxl.rom import QXLDeviceConfig
from spiceserver.synthetic_guest.driver import SyntheticDriver
from spiceserver.synthetic_guest.glyphs import GlyphFont
from spiceserver.synthetic_guest.helpers import ROPD_PUT
from spiceserver.worker.dispatcher import Request
from spiceserver.worker.worker import DisplayWorker

W, H = 1024, 768
DISTINCT = 4096  # distinct fills, cycled (the guest's per-command work stays small)


@dataclass(frozen=True, slots=True)
class _Profile(Request):
    """Start (``on``) or stop cProfile on the worker thread; stopping replies with the stats text."""

    on: bool
    top: int = 25


def stream(n: int, mix: str) -> list[tuple[DrawBody, Rect]]:
    """``fills``: random solid fills of 8..64 px sides at random places of the primary, random
    colours. ``mixed``: a third each of such fills, glyph runs (DRAW_TEXT of 4..12 characters in a
    13 px 4-bit font) and small screen-to-screen copies (COPY_BITS of 8..64 px, up to 64 px away)."""
    rng = np.random.default_rng(1)
    font = GlyphFont()
    letters = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    out: list[tuple[DrawBody, Rect]] = []
    while len(out) < n:
        x, y = int(rng.integers(64, W - 256)), int(rng.integers(64, H - 64))
        w, h = int(rng.integers(8, 65)), int(rng.integers(8, 65))
        box = Rect(top=y, left=x, bottom=y + h, right=x + w)
        kind = int(rng.integers(0, 3)) if mix == "mixed" else 0
        if kind == 0:
            brush = d.Brush(type=BrushType.SOLID, color=int(rng.integers(0, 1 << 24)))
            out.append((d.Fill(brush=brush, rop_descriptor=8, mask=d.QMask()), box))
        elif kind == 1:
            text = "".join(letters[int(i)] for i in rng.integers(0, len(letters), int(rng.integers(4, 13))))
            got = font.string(text, x, y)
            if got is None:
                continue
            string, bbox = got
            fore = d.Brush(type=BrushType.SOLID, color=int(rng.integers(0, 1 << 24)))
            body = d.Text(str=string, back_area=Rect(top=0, left=0, bottom=0, right=0), fore_brush=fore,
                          back_brush=d.Brush(type=BrushType.NONE), fore_mode=ROPD_PUT, back_mode=ROPD_PUT)  # fmt: skip
            out.append((body, bbox))
        else:
            src = Point(x=x + int(rng.integers(-64, 65)), y=y + int(rng.integers(-64, 65)))
            out.append((CopyBits(src_pos=src), box))
    return out


def worker_of(server: SpiceServer) -> DisplayWorker:
    worker: DisplayWorker = server._display(0).worker
    return worker


def install_profiler(worker: DisplayWorker) -> None:
    prof = cProfile.Profile(time.thread_time)  # the worker thread's own CPU, not wall time (other threads hold the GIL part of the time)

    def handle(msg: _Profile) -> str:
        if msg.on:
            prof.enable()  # profiles the calling thread: the worker's
            return ""
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats(os.environ.get("QXL_RATE_SORT", "cumulative")).print_stats(msg.top)
        return out.getvalue()

    worker.ep.register_handler(_Profile, handle)


_END = 0xFFFF_FFFF  # "port" of the child's last message: commands sent, CPU seconds
_NO_REPLY = 0x8000_0000  # flag on a relayed port write the child does not wait for
#: port writes a vCPU does not wait on: the doorbells (with KVM they are ioeventfds, so the vCPU never
#: even exits) and FLUSH_RELEASE (the guest reads the release ring later anyway). Waiting for them
#: would make the guest wait for this process's GIL, held by the worker, up to the switch interval.
_POSTED = frozenset((IOPort.NOTIFY_CMD, IOPort.NOTIFY_CURSOR, IOPort.FLUSH_RELEASE))


class _PortRelay:
    """The device as the child process sees it: memory shared, port writes sent to the parent,
    which does them and answers (the guest waits, as a vCPU does on an I/O exit)."""

    def __init__(self, device: QXLDevice, sock: socket.socket) -> None:
        self._device = device
        self._sock = sock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._device, name)

    def io_write(self, port: int, value: int) -> None:
        if port in _POSTED:  # nothing to wait for: the vCPU goes on (KVM's ioeventfd)
            self._sock.sendall(struct.pack("<II", port | _NO_REPLY, value))
            return
        self._sock.sendall(struct.pack("<II", port, value))
        if not self._sock.recv(1):
            os._exit(1)


class Guest:
    """The guest driver: pushes commands for ``seconds``, measuring its own CPU, in a thread of this
    process or (:meth:`run_in_process`) in a forked child sharing the device's memory."""

    def __init__(self, driver: SyntheticDriver, seconds: float, mix: str) -> None:
        self.driver = driver
        self.seconds = seconds
        self.stream = stream(DISTINCT, mix)
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
                    drv.reserve(8192)
                    drv.push(drv.drawable(body, bbox=box), CmdType.DRAW)
                    i += 1
                drv.collect()
            self.sent = i
            self.cpu = time.thread_time() - cpu0
        except BaseException as e:  # reported by the caller
            self.error = e

    def run_in_process(self) -> None:
        """Fork a child that runs :meth:`run`; relay its port writes to the device until it ends.

        The device's BARs must be shared mappings (``mmap(-1, size)``) so the child's writes land
        in the server's memory."""
        device = self.driver.device
        here, there = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the guest: no server thread exists here, only its memory
            status = 1
            try:
                here.close()
                self.driver.device = cast(QXLDevice, _PortRelay(device, there))
                self.run()
                ok = self.error is None
                if self.error is not None:
                    traceback.print_exception(self.error)
                there.sendall(struct.pack("<IIqd", _END, 0, self.sent if ok else -1, self.cpu))
                status = 0 if ok else 1
            finally:
                os._exit(status)
        there.close()
        reader = here.makefile("rb")
        try:
            while len(head := reader.read(8)) == 8:
                port, value = struct.unpack("<II", head)
                if port == _END:
                    self.sent, self.cpu = struct.unpack("<qd", reader.read(16))
                    break
                device.io_write(port & ~_NO_REPLY, value)
                if not port & _NO_REPLY:
                    here.sendall(b"\0")
            else:
                raise RuntimeError("the guest process died")
            if self.sent < 0:
                raise RuntimeError("the guest process failed (its traceback is above)")
        except BaseException as e:
            self.error = e
        finally:
            reader.close()
            here.close()
            os.waitpid(pid, 0)


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
                if isinstance(msg, d.DrawFill | d.DrawText | d.CopyBits):
                    seen["fills"] += 1

        async with in_background(read()):
            yield seen
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


async def run(seconds: float, client: str, profile: bool, mix: str, where: str) -> dict[str, Any]:
    server = SpiceServer(ServerConfig(port=0, disable_ticketing=True, net_test=False))
    cfg = QXLDeviceConfig()
    bars = [mmap.mmap(-1, size) for size in (cfg.ram_size, cfg.vram_size, cfg.rom_size)]  # shared on fork
    device = server.add_qxl_device(cfg, ram=bars[0], vram=bars[1], rom=bars[2])
    driver = SyntheticDriver(device, timeout=600, kick_after=0.05)
    driver.setup_memslots()
    driver.create_primary(W, H)
    await server.start()
    # measure the steady state: the worker's kernels (the tree's, the codecs') compiled first
    await asyncio.to_thread(warmup.wait, 600)
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
            guest = Guest(driver, seconds, mix)
            body = guest.run_in_process if where == "process" else guest.run
            thread = threading.Thread(target=body, name="qxl-rate-guest")
            cpu0 = time.clock_gettime(clock)
            proc0 = time.process_time()
            t0 = time.perf_counter()
            thread.start()
            await asyncio.to_thread(thread.join)
            if guest.error is not None:
                raise guest.error
            await settle(server)
            wall = time.perf_counter() - t0
            cpu = time.clock_gettime(clock) - cpu0
            proc = time.process_time() - proc0
            report = worker.request(_Profile(False)) if profile else ""
            after = server.display_stats()
            fills_seen = seen["fills"]
        n = guest.sent
        result: dict[str, Any] = {
            "client": client,
            "mix": mix,
            "commands": n,
            "wall": wall,
            "rate": n / wall,
            "worker_us": cpu / n * 1e6,
            "worker_busy": cpu / wall,
            "others_us": (proc - cpu - (guest.cpu if where == "thread" else 0.0)) / n * 1e6,
            "guest_us": guest.cpu / n * 1e6,
            "guest": where,
            "hidden": after["hidden"] - before["hidden"],
            "ring_held": after["ring_held"] - before["ring_held"],
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
    print(f"client={r['client']}: {r['commands']:,} commands ({r['mix']}) in {r['wall']:.2f} s = {r['rate']:,.0f} commands/s")
    print(f"  worker CPU {r['worker_us']:.0f} us/command (busy {r['worker_busy'] * 100:.0f} % of the time; worker-bound rate {1e6 / r['worker_us']:,.0f}/s); guest driver CPU {r['guest_us']:.0f} us/command ({'another process' if r['guest'] == 'process' else 'same process, other thread'})")
    print(f"  rest of the server process (asyncio loop, port relay): {r['others_us']:.0f} us/command")
    print(f"  hidden in the tree: {r['hidden']:,}; worker rounds with the ring held back by a full pipe: {r['ring_held']:,}")
    if "sent_as_fills" in r:
        print(f"  sent as their own draw message: {r['sent_as_fills'] * 100:.1f} % (collapses {r['collapsed']}, pruned {r['pruned']:,}, images {r['pictures']})")
    if "client_fills" in r:
        print(f"  draw messages (DRAW_FILL/TEXT, COPY_BITS) received by the test client: {r['client_fills'] * 100:.1f} %")
    if r["profile"]:
        print(r["profile"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="how long the guest submits fills")
    p.add_argument("--client", choices=("none", "test", "spicegtk"), default="none")
    p.add_argument("--mix", choices=("fills", "mixed"), default="fills", help="fills only, or fills + glyph runs + small copies")
    p.add_argument(
        "--guest", choices=("thread", "process"), default="process",
        help="where the guest driver runs: a forked child (default) or a thread sharing the GIL",
    )  # fmt: skip
    p.add_argument("--profile", action="store_true", help="cProfile the worker thread (slows it down)")
    args = p.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()} {platform.release()}, Python {platform.python_version()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M')}")
    show(asyncio.run(run(args.seconds, args.client, args.profile, args.mix, args.guest)))


if __name__ == "__main__":
    main()
