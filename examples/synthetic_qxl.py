"""An emulated QXL device driven by a fake guest driver: the whole display path a VM would use.

Run ``python examples/synthetic_qxl.py`` and connect with ``remote-viewer spice://127.0.0.1:5931``
(or ``spicy -h 127.0.0.1 -p 5931``). Options: ``--scene static`` for a still picture, ``--size WxH``,
``--fps N``, ``--modes`` to cycle through a few resolutions every 10 s, ``--port``.

The host side is three lines: ``device = server.add_qxl_device()`` creates the device and its display
worker; the guest's I/O port writes go to ``device.io_write(port, value)``; the guest's memory is the
device's BAR buffers. The guest side is :class:`spiceserver.synthetic_guest.SyntheticGuest`, which
plays a QXL driver on its own thread (a vCPU): it sets up memslots and the primary surface through
the I/O ports, then draws a desktop with QXL commands on the rings -- fills, strokes, glyph text, a
cached photo, an off-screen surface, COPY_BITS scrolling -- and moves a hardware cursor through the
cursor ring. The server parses, renders and forwards them to every connected client.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
import traceback

from spiceserver import ServerConfig, SpiceServer
from spiceserver.synthetic_guest import SyntheticGuest

MODES = ((1024, 768), (800, 600), (1280, 720))


def guest_vcpu(guest: SyntheticGuest, fps: float, animated: bool, cycle_modes: bool, stop: threading.Event) -> None:
    """The guest's side, on its own thread: set up, draw, animate."""
    try:
        run_guest(guest, fps, animated, cycle_modes, stop)
    except Exception:
        traceback.print_exc()


def run_guest(guest: SyntheticGuest, fps: float, animated: bool, cycle_modes: bool, stop: threading.Event) -> None:
    guest.setup()
    guest.draw_static()
    if not animated:
        return
    start = last_switch = time.monotonic()
    mode = 0
    period = 1.0 / max(fps, 0.1)
    while not stop.is_set():
        now = time.monotonic()
        if cycle_modes and now - last_switch > 10.0:
            mode = (mode + 1) % len(MODES)
            guest.resize(*MODES[mode])
            guest.draw_static()
            last_switch = now
        guest.step(now - start)
        stop.wait(max(0.0, period - (time.monotonic() - now)))


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=5931)
    p.add_argument("--size", default="1024x768", metavar="WxH", help="primary surface size (at least 640x480)")
    p.add_argument("--scene", choices=["animated", "static"], default="animated")
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--modes", action="store_true", help="switch resolution every 10 s")
    args = p.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    server = SpiceServer(
        ServerConfig(addr="127.0.0.1", port=args.port, disable_ticketing=True, name="synthetic QXL guest")
    )
    device = server.add_qxl_device()
    guest = SyntheticGuest(device, width, height)
    await server.start()
    print("serving on", ", ".join(server.addresses), f"- connect with: remote-viewer spice://127.0.0.1:{args.port}")
    stop = threading.Event()
    vcpu = asyncio.create_task(
        asyncio.to_thread(guest_vcpu, guest, args.fps, args.scene == "animated", args.modes, stop)
    )
    try:
        await asyncio.Event().wait()  # serve until Ctrl-C
    finally:
        stop.set()  # the guest stops first: its I/O writes need the device's worker
        await vcpu
        await server.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
