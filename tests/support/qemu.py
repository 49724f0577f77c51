"""Test support: a paused QEMU (TCG) with ``-display dbus`` on a private bus (or p2p) and QMP.

Usage::

    async with start_qemu(tmp_path, "-vga", "std") as vm:
        bus = await vm.bus()              # connected to the private dbus-daemon (or p2p via QMP)
        ...                               # register listeners while paused
        await vm.qmp.execute("cont")
        picture = await vm.screendump()   # (h, w) uint32 0x00RRGGBB

Everything started here (QEMU, dbus-daemon, sockets) is stopped when the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from dbus_fast.aio import MessageBus

from spiceserver.qemu.bus import QmpClient, connect_bus, connect_p2p

__all__ = [
    "QemuVM", "drain_output", "launch_qemu_command", "qemu_command", "qemu_skip_reason", "read_ppm", "require_qemu",
    "start_dbus_daemon", "start_qemu",
]  # fmt: skip

QEMU = "qemu-system-x86_64"


def qemu_skip_reason() -> str | None:
    """Why QEMU D-Bus tests cannot run here, or None."""
    for exe in (QEMU, "dbus-daemon"):
        if shutil.which(exe) is None:
            return f"{exe} not installed"
    try:
        import dbus_fast  # noqa: F401
    except ImportError:
        return "dbus-fast not installed (the qemu extra)"
    return None


def require_qemu() -> None:
    """Skip the calling test unless QEMU, dbus-daemon and dbus-fast are here."""
    reason = qemu_skip_reason()
    if reason:
        pytest.skip(reason)


def read_ppm(path: str | os.PathLike[str]) -> np.ndarray:
    """A binary P6 PPM (QMP ``screendump``) as (h, w) uint32 0x00RRGGBB."""
    data = Path(path).read_bytes()
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        while data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end : end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    pos += 1
    assert fields[0] == b"P6" and fields[3] == b"255", fields
    w, h = int(fields[1]), int(fields[2])
    rgb = np.frombuffer(data, np.uint8, w * h * 3, pos).reshape(h, w, 3).astype(np.uint32)
    out: np.ndarray = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return out


async def _stop(proc: asyncio.subprocess.Process, timeout: float = 10.0) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def start_dbus_daemon(directory: Path) -> AsyncIterator[str]:
    """A private ``dbus-daemon --session`` listening in ``directory``; yields its address."""
    proc = await asyncio.create_subprocess_exec(
        "dbus-daemon",
        "--session",
        f"--address=unix:path={directory / 'bus'}",
        "--nofork",
        "--nopidfile",
        "--print-address=1",
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        address = line.decode().strip()
        assert address.startswith("unix:"), f"dbus-daemon printed {line!r}"
        yield f"unix:path={directory / 'bus'}"  # QEMU's addr= takes no guid=
    finally:
        await _stop(proc)


class QemuVM:
    """A running QEMU: :attr:`proc`, :attr:`qmp`, :attr:`address` (None with p2p), :attr:`started`."""

    def __init__(self, proc: asyncio.subprocess.Process, qmp: QmpClient, address: str | None, directory: Path) -> None:
        self.proc = proc
        self.qmp = qmp
        self.address = address
        self.directory = directory
        self.started = time.monotonic()
        """When QEMU was launched (time.monotonic())."""
        self._buses: list[MessageBus] = []
        self._dumps = 0

    async def bus(self) -> MessageBus:
        """A new connection to QEMU's display: the private bus, or p2p through QMP ``add_client``."""
        bus = await (connect_bus(self.address) if self.address else connect_p2p(self.qmp, f"dbus{len(self._buses)}"))
        self._buses.append(bus)
        return bus

    async def screendump(self, device: str | None = None, head: int | None = None) -> np.ndarray:
        """QMP ``screendump`` of console 0 (or of ``device``'s ``head``) as (h, w) uint32 0x00RRGGBB."""
        self._dumps += 1
        path = self.directory / f"screendump-{self._dumps}.ppm"
        args: dict[str, object] = {"filename": str(path)}
        if device is not None:
            args["device"] = device
        if head is not None:
            args["head"] = head
        await self.qmp.execute("screendump", args)
        try:
            return read_ppm(path)
        finally:
            path.unlink(missing_ok=True)

    async def vga_text(self) -> str:
        """The 80x25 VGA text screen (guest memory at 0xB8000, read with HMP ``xp``), rows joined by newlines."""
        out = await self.qmp.execute("human-monitor-command", {"command-line": "xp /2000hx 0xb8000"})
        cells = [int(w, 16) for line in str(out).splitlines() for w in line.split(":", 1)[-1].split()]
        chars = "".join(chr(c & 0xFF) if 32 <= (c & 0xFF) < 127 else " " for c in cells)
        return "\n".join(chars[i : i + 80] for i in range(0, len(chars), 80))

    async def stop(self) -> None:
        """Stop QEMU (QMP ``quit``, then SIGTERM/SIGKILL) and drop our connections."""
        for bus in self._buses:
            bus.disconnect()
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.qmp.execute("quit"), 5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 5)
        await _stop(self.proc)
        self.qmp.close()


async def _connect_qmp(path: Path, proc: asyncio.subprocess.Process, timeout: float = 30.0) -> QmpClient:
    deadline = time.monotonic() + timeout
    while True:
        if proc.returncode is not None:
            raise RuntimeError(f"QEMU exited with {proc.returncode} before QMP came up")
        if path.exists():
            with contextlib.suppress(ConnectionRefusedError, FileNotFoundError):
                return await QmpClient.connect(str(path))
        if time.monotonic() > deadline:
            raise TimeoutError("QEMU's QMP socket did not come up")
        await asyncio.sleep(0.02)  # polling for the socket itself, not a guessed delay


def qemu_argv(display: str, qmp_path: Path, *args: str, memory: str = "64") -> list[str]:
    """The QEMU command line the tests use: TCG, paused, no defaults that touch the host."""
    return [
        QEMU,
        "-accel",
        "tcg",
        "-m",
        memory,
        "-S",
        "-nodefaults",
        "-no-user-config",
        "-display",
        display,
        "-qmp",
        f"unix:{qmp_path},server=on,wait=off",
        *args,
    ]


@contextlib.asynccontextmanager
async def start_qemu(directory: Path, *args: str, p2p: bool = False, memory: str = "64") -> AsyncIterator[QemuVM]:
    """Start a paused QEMU with ``args`` and ``-display dbus`` (private bus, or ``p2p=yes``).

    Args:
        directory: a per-test temporary directory for the sockets.
        args: extra QEMU arguments (``-vga std``, ``-cdrom ...``).
        p2p: no bus daemon; :meth:`QemuVM.bus` connects through QMP ``add_client``.
        memory: ``-m``.
    """
    require_qemu()
    async with contextlib.AsyncExitStack() as stack:
        address: str | None = None
        if p2p:
            display = "dbus,p2p=yes"
        else:
            address = await stack.enter_async_context(start_dbus_daemon(directory))
            display = f"dbus,addr={address}"
        qmp_path = directory / "qmp.sock"
        proc = await asyncio.create_subprocess_exec(
            *qemu_argv(display, qmp_path, *args, memory=memory),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
        )
        started = time.monotonic()
        try:
            qmp = await _connect_qmp(qmp_path, proc)
        except BaseException:
            await _stop(proc)
            raise
        vm = QemuVM(proc, qmp, address, directory)
        vm.started = started
        try:
            yield vm
        finally:
            await vm.stop()


async def launch_qemu_command(
    directory: Path, *qemu_args: str, memory: str = "64", options: tuple[str, ...] = ()
) -> tuple[asyncio.subprocess.Process, int, list[str]]:
    """Start ``python -m spiceserver qemu --port 0 OPTIONS -- qemu-system-x86_64 -accel tcg -m MEMORY
    -nodefaults -qmp unix:DIRECTORY/user-qmp.sock ARGS`` and read the port it prints.

    Returns the command's process (stdout and stderr merged into its ``stdout`` pipe), the SPICE
    port and the lines read so far; keep reading them (:func:`drain_output`).
    """
    require_qemu()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spiceserver", "qemu", "--port", "0", *options, "--",
        QEMU, "-accel", "tcg", "-m", memory, "-nodefaults", "-qmp", f"unix:{directory / 'user-qmp.sock'},server=on,wait=off",
        *qemu_args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    try:
        while True:
            raw = await asyncio.wait_for(proc.stdout.readline(), max(1.0, deadline - time.monotonic()))
            if not raw:
                raise AssertionError("qemu command exited:\n" + "\n".join(lines))
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            if line.startswith("SPICE on "):
                return proc, int(line.rsplit(":", 1)[1]), lines
    except BaseException:
        await _stop(proc)
        raise


async def drain_output(proc: asyncio.subprocess.Process, lines: list[str]) -> None:
    """Append the command's output lines to ``lines`` until it closes its output."""
    assert proc.stdout is not None
    async for raw in proc.stdout:
        lines.append(raw.decode(errors="replace").rstrip())


@contextlib.asynccontextmanager
async def qemu_command(
    directory: Path, *qemu_args: str, memory: str = "64", options: tuple[str, ...] = ()
) -> AsyncIterator[tuple[QemuVM, int, list[str]]]:
    """:func:`launch_qemu_command`, with a :class:`QemuVM` on the user's QMP socket (``proc`` is the
    command; :meth:`QemuVM.stop` quits QEMU, which ends the command). Yields (vm, port, lines)."""
    started = time.monotonic()
    proc, port, lines = await launch_qemu_command(directory, *qemu_args, memory=memory, options=options)
    drain = asyncio.ensure_future(drain_output(proc, lines))
    try:
        qmp = await _connect_qmp(directory / "user-qmp.sock", proc)
        vm = QemuVM(proc, qmp, None, directory)
        vm.started = started
        try:
            yield vm, port, lines
        finally:
            await vm.stop()
    finally:
        await _stop(proc)
        await drain
