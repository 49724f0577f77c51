"""The QEMU D-Bus bridge: time to the first picture, CPU per second of a busy screen, key latency.

Each run starts ``python -m spiceserver qemu --port 0 -- qemu-system-x86_64 -accel tcg ...`` (its
own private dbus-daemon, QEMU paused until the bridge is attached) and one spice-gtk client
(``tests/interop/gi_client.py --control``: spice-gtk decodes everything, no window):

* **first picture**: from launching the command to the first screenshot of the client that is not
  all black (memtest86+'s screen);
* **busy screen**: memtest86+ repaints its counters and progress bars all the time. Over
  ``--seconds`` the command's CPU (utime + stime of all its threads, ``/proc/PID/stat``: the bridge
  and the SPICE server, one process) and QEMU's, as % of one core, and the display invalidations
  spice-gtk reported per second;
* **key latency**: SeaBIOS with its boot menu offered (its prompt read from QEMU's VGA text memory
  through QMP first); ESC typed in spice-gtk (the client's ``action`` event) to the first display
  invalidation spice-gtk reports that is bigger than one 9x16 text cell (the blinking cursor is
  one). Both times are the client's clock. This includes QEMU's own refresh (30 ms) and SeaBIOS
  reading the key.

Each figure is measured for the command and for the reference, the same QEMU with its built-in
SPICE server (``-spice``, libspice-server), runs interleaved. For the reference the server's CPU is
libspice's ``SPICE Worker`` thread only (its I/O runs in QEMU's main thread, counted under QEMU).

Measured (2026-12-07, 2 shared CPUs with load 4 to 5, QEMU 7.2 TCG, spice-gtk 0.42; median of 3):
first picture 3.20 s (libspice 0.41 s), the command 3.8 % of a core on memtest86+'s busy screen
(libspice's worker 0.4 %), ESC to boot menu 14.8 ms (libspice 11.7 ms) (docs/performance.md).

Run: ``python benchmarks/qemu_bridge.py [--seconds 10] [--runs 3]``. Skips (exit 0, a message)
without QEMU, memtest86+ or spice-gtk's GObject bindings. Results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spiceserver.qemu.bus import QmpClient
from tests.interop.harness import controlled_client, gi_client_available
from tests.support.qemu import QemuVM

MEMTEST = "/usr/lib/memtest86+/memtest86+x64.iso"
TICK = os.sysconf("SC_CLK_TCK")
#: one 9x16 VGA text cell: the blinking cursor changes at most that (QEMU's own SPICE display sends
#: only the pixels that changed, in small rectangles; the bridge sends whole dirty rectangles)
CELL_AREA = 9 * 16
#: starts a served QEMU with these extra arguments
Launcher = Callable[..., Awaitable["Launched"]]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (QEMU's ``-spice port=`` takes no 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spice_threads_cpu(pid: int) -> float:
    """CPU seconds of libspice's own threads in a QEMU process (named ``SPICE Worker`` by
    libspice's red-worker.cpp; the main loop's share of SPICE I/O is in QEMU's main thread)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().startswith("SPICE"):
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / TICK
        except OSError:
            continue
    return total


QMP_DIR = Path(tempfile.mkdtemp(prefix="qemu-bench-"))


def new_qmp_path() -> Path:
    """A fresh QMP socket path for one run."""
    return QMP_DIR / f"qmp-{time.monotonic_ns()}.sock"


class Launched:
    """A served QEMU: ``proc`` (what to stop), ``port``, ``qemu_pid``, ``started``, and which CPU is the
    SPICE server's: the whole command (ours), or libspice's threads in QEMU (the reference)."""

    def __init__(
        self, proc: asyncio.subprocess.Process, port: int, qemu_pid: int, started: float, reference: bool, qmp: Path
    ) -> None:
        self.proc, self.port, self.qemu_pid, self.started, self.reference, self.qmp = proc, port, qemu_pid, started, reference, qmp

    async def vga_text(self) -> str:
        """QEMU's VGA text screen (through its QMP socket)."""
        qmp = await QmpClient.connect(str(self.qmp))
        try:
            return await QemuVM(self.proc, qmp, None, QMP_DIR).vga_text()
        finally:
            qmp.close()

    def server_cpu(self) -> float:
        return spice_threads_cpu(self.qemu_pid) if self.reference else cpu_seconds(self.proc.pid)

    def qemu_cpu(self) -> float:
        """QEMU's CPU beside the SPICE server's."""
        return cpu_seconds(self.qemu_pid) - (spice_threads_cpu(self.qemu_pid) if self.reference else 0.0)


async def start_command(*qemu_args: str) -> Launched:
    """The ``qemu`` command serving ``qemu_args``."""
    started = time.monotonic()
    qmp = new_qmp_path()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spiceserver", "qemu", "--port", "0", "--",
        "qemu-system-x86_64", "-accel", "tcg", "-m", "64", "-nodefaults", "-vga", "std", "-qmp", f"unix:{qmp},server=on,wait=off", *qemu_args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    qemu_pid = port = 0
    while not port:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        if not line:
            raise RuntimeError("the qemu command exited")
        if line.startswith("QEMU pid "):
            qemu_pid = int(line.split()[-1])
        elif line.startswith("SPICE on "):
            port = int(line.rsplit(":", 1)[1])
    return Launched(proc, port, qemu_pid, started, reference=False, qmp=qmp)


async def start_reference(*qemu_args: str) -> Launched:
    """The same QEMU with its built-in SPICE server (libspice-server, ``-spice``), the reference."""
    port = free_port()
    qmp = new_qmp_path()
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        "qemu-system-x86_64", "-accel", "tcg", "-m", "64", "-nodefaults", "-vga", "std",
        "-display", "none", "-spice", f"port={port},addr=127.0.0.1,disable-ticketing=on", "-qmp", f"unix:{qmp},server=on,wait=off", *qemu_args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:  # wait for the SPICE port itself
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        except OSError:
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError("QEMU's SPICE server did not come up") from None
            await asyncio.sleep(0.02)
    return Launched(proc, port, proc.pid, started, reference=True, qmp=qmp)


async def stop_command(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


async def busy_run(launch: Launcher, seconds: float) -> dict[str, float]:
    """memtest86+: first picture, then the CPU over ``seconds`` of its busy screen."""
    vm = await launch("-cdrom", MEMTEST)
    try:
        args = ("--port", str(vm.port), "--max-invalidates", "1000000")
        async with controlled_client(*args, timeout=seconds + 120) as client:
            await client.wait_picture(lambda p: bool(p.any()), timeout=60, interval=0.02)
            first = time.monotonic() - vm.started
            await asyncio.sleep(5)  # memtest is testing by then; the client has the whole screen
            n0 = sum(ev.get("event") == "display-invalidate" for ev in client.events)
            c0, q0, t0 = vm.server_cpu(), vm.qemu_cpu(), time.monotonic()
            await asyncio.sleep(seconds)
            c1, q1, t1 = vm.server_cpu(), vm.qemu_cpu(), time.monotonic()
            n1 = sum(ev.get("event") == "display-invalidate" for ev in client.events)
    finally:
        await stop_command(vm.proc)
    wall = t1 - t0
    return {
        "first_picture_s": first,
        "server_cpu_pct": 100 * (c1 - c0) / wall,
        "qemu_cpu_pct": 100 * (q1 - q0) / wall,
        "invalidates_per_s": (n1 - n0) / wall,
    }


async def key_run(launch: Launcher) -> float:
    """SeaBIOS: ESC in spice-gtk to the boot menu being drawn, in ms (the client's clock)."""
    vm = await launch("-boot", "menu=on,splash-time=20000")
    try:
        async with controlled_client("--port", str(vm.port), "--max-invalidates", "1000000", timeout=60) as client:
            await client.wait_picture(lambda p: bool(p.any()), timeout=30, interval=0.02)
            while "Press ESC" not in await vm.vga_text():  # SeaBIOS offers its menu (waits 20 s)
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # the client has the prompt; the screen is quiet but for the cursor
            act = await client.action({"op": "key_press_and_release", "scancode": 1})

            def menu_drawn(ev: dict[str, Any]) -> bool:
                # the first change after ESC bigger than a text cell (the blinking cursor is one)
                return ev.get("event") == "display-invalidate" and ev["t"] > act["t"] and ev["w"] * ev["h"] > CELL_AREA

            drawn = await client.wait_for(menu_drawn, timeout=10)
            return float(1000 * (drawn["t"] - act["t"]))
    finally:
        await stop_command(vm.proc)


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="busy window per run (default 10)")
    p.add_argument("--runs", type=int, default=3, help="runs of each measurement (default 3)")
    args = p.parse_args()
    if not (shutil.which("qemu-system-x86_64") and shutil.which("dbus-daemon") and Path(MEMTEST).exists()):
        print("skipped: needs qemu-system-x86, dbus-daemon and memtest86+")
        return 0
    if not gi_client_available():
        print("skipped: spice-gtk's GObject bindings are not installed")
        return 0
    launchers = {"spiceserver qemu (D-Bus bridge)": start_command, "QEMU -spice (libspice-server)": start_reference}
    busy: dict[str, list[dict[str, float]]] = {name: [] for name in launchers}
    keys: dict[str, list[float]] = {name: [] for name in launchers}
    for _ in range(args.runs):  # interleaved, so that both see the same machine
        for name, launch in launchers.items():
            busy[name].append(await busy_run(launch, args.seconds))
            keys[name].append(await key_run(launch))
    for name in launchers:
        print(name)
        for key in busy[name][0]:
            values = [b[key] for b in busy[name]]
            print(f"  {key:20} median {statistics.median(values):8.2f}   runs {', '.join(f'{v:.2f}' for v in values)}")
        print(f"  {'key_to_menu_ms':20} median {statistics.median(keys[name]):8.1f}   runs {', '.join(f'{v:.1f}' for v in keys[name])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
