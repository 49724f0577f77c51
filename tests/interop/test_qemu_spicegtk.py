"""A real QEMU (TCG, ``-display dbus``) served through spiceserver.qemu and shown by spice-gtk.

Each test starts its own QEMU on a private dbus-daemon (or p2p through QMP) in a temp dir and stops
everything at the end. Pictures are compared pixel for pixel: QEMU's own QMP ``screendump`` against
the primary surface spice-gtk shows. Printed: the time from QEMU's start to the first picture in the
client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from spiceserver.config import ServerConfig
from spiceserver.qemu.bridge import QemuBridge, attach
from spiceserver.reds import SpiceServer
from tests.interop.harness import GiClient, controlled_client, format_events
from tests.support.qemu import QemuVM, drain_output, launch_qemu_command, start_qemu

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]

MEMTEST = Path("/usr/lib/memtest86+/memtest86+x64.iso")
ESC = 1


@contextlib.asynccontextmanager
async def served(vm: QemuVM) -> AsyncIterator[tuple[SpiceServer, QemuBridge]]:
    """A SpiceServer on an ephemeral port serving ``vm`` (still paused), then ``cont``."""
    from spiceserver.codecs import warmup

    assert warmup.wait(300), "codec kernels failed to compile"
    server = SpiceServer(ServerConfig(port=0, disable_ticketing=True, net_test=False))
    await server.start()
    try:
        bus = await vm.bus()
        bridge = await attach(server, bus)
        try:
            await vm.qmp.execute("cont")
            yield server, bridge
        finally:
            await bridge.close()
    finally:
        await server.close()


async def same_as_qemu(vm: QemuVM, client: GiClient, timeout: float = 30.0) -> tuple[np.ndarray, np.ndarray | None]:
    """Wait until the client shows what QEMU's screendump shows; return (screendump, shown)."""
    deadline = time.monotonic() + timeout
    while True:
        want = await vm.screendump()
        shown = await client.screenshot()
        if shown is not None and shown.shape == want.shape and np.array_equal(shown, want):
            return want, shown
        if time.monotonic() > deadline:
            return want, shown
        await asyncio.sleep(0.1)


def assert_same(shown: np.ndarray | None, want: np.ndarray, client: GiClient) -> None:
    assert shown is not None, format_events(client.events, client.stderr)
    assert shown.shape == want.shape, (shown.shape, want.shape)
    bad = np.argwhere(shown != want)
    assert bad.size == 0, f"{len(bad)} pixels differ, first at (y, x) {tuple(bad[0])}"


async def test_seabios_picture_and_esc_boot_menu(tmp_path: Path) -> None:
    async with start_qemu(tmp_path, "-vga", "std", "-boot", "menu=on,splash-time=5000") as vm, served(vm) as (server, bridge):
        port = str(server.port_of())
        async with controlled_client("--port", port, "--expect-channels", "4", "--wait-display", timeout=60) as client:
            want, shown = await same_as_qemu(vm, client)
            print(f"\nSeaBIOS: QEMU start -> first picture in spice-gtk {time.monotonic() - vm.started:.2f} s")
            assert_same(shown, want, client)
            # ESC typed in spice-gtk opens SeaBIOS' boot menu
            await client.action({"op": "key_press_and_release", "scancode": ESC})
            deadline = time.monotonic() + 20
            while "Select boot device" not in (text := await vm.vga_text()):
                assert time.monotonic() < deadline, f"no boot menu; screen:\n{text}"
                await asyncio.sleep(0.1)
            want2, shown2 = await same_as_qemu(vm, client)
            assert not np.array_equal(want, want2)
            assert_same(shown2, want2, client)
            assert bridge.consoles[0].display.dropped == 0
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)


async def test_memtest_p2p_picture(tmp_path: Path) -> None:
    if not MEMTEST.exists():
        pytest.skip(f"{MEMTEST} not installed (memtest86+)")
    async with start_qemu(tmp_path, "-vga", "std", "-cdrom", str(MEMTEST), p2p=True) as vm, served(vm) as (server, bridge):
        async with controlled_client("--port", str(server.port_of()), "--wait-display", timeout=60) as client:
            # wait for memtest's test screen (not the BIOS), then pause the VM: its counters and
            # progress bars change all the time, a stopped VM's screen does not
            deadline = time.monotonic() + 40
            while "Status: Testing" not in (text := await vm.vga_text()):
                assert time.monotonic() < deadline, f"memtest86+ did not start testing; screen:\n{text}"
                await asyncio.sleep(0.1)
            await vm.qmp.execute("stop")
            want, shown = await same_as_qemu(vm, client, timeout=30)
            print(f"\nmemtest86+: QEMU start -> its test screen in spice-gtk {time.monotonic() - vm.started:.2f} s")
            assert "Memtest86+" in await vm.vga_text()
            assert_same(shown, want, client)
            assert bridge.consoles[0].display.dropped == 0
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)


async def test_qemu_command_sigterm_stops_qemu(tmp_path: Path) -> None:
    started = time.monotonic()
    proc, port, lines = await launch_qemu_command(tmp_path, "-vga", "std")
    drain = asyncio.ensure_future(drain_output(proc, lines))
    try:
        async with controlled_client("--port", str(port), "--wait-display", timeout=60) as client:
            shown = await client.wait_picture(lambda p: bool(p.any()), timeout=30)
            print(f"\nqemu command: start -> first picture in spice-gtk {time.monotonic() - started:.2f} s")
            assert shown is not None and shown.any(), format_events(client.events, client.stderr)
        qemu_pid = next(int(x.split()[-1]) for x in lines if x.startswith("QEMU pid "))
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, "\n".join(lines)
        with pytest.raises(ProcessLookupError):
            os.kill(qemu_pid, 0)  # QEMU is gone (reaped by the command)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await drain


async def test_qemu_quit_closes_the_command(tmp_path: Path) -> None:
    from spiceserver.qemu.bus import QmpClient

    proc, _port, lines = await launch_qemu_command(tmp_path, "-vga", "std")
    drain = asyncio.ensure_future(drain_output(proc, lines))
    try:
        qmp = await QmpClient.connect(str(tmp_path / "user-qmp.sock"))
        try:
            await qmp.execute("quit")
        finally:
            qmp.close()
        assert await asyncio.wait_for(proc.wait(), 30) == 0, "\n".join(lines)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await drain


async def test_qemu_command_attach(tmp_path: Path) -> None:
    """``--attach ADDRESS`` serves a QEMU on a bus daemon; QEMU quitting ends the command."""
    async with start_qemu(tmp_path, "-vga", "std") as vm:
        assert vm.address is not None
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "spiceserver", "qemu", "--port", "0", "--attach", vm.address,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        lines: list[str] = []
        drain: asyncio.Future[None] | None = None
        try:
            assert proc.stdout is not None
            while not (line := (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()).startswith("SPICE on "):
                assert line, "qemu --attach exited:\n" + "".join(lines)
                lines.append(line)
            port = int(line.rsplit(":", 1)[1])
            drain = asyncio.ensure_future(drain_output(proc, lines))
            await vm.qmp.execute("cont")
            async with controlled_client("--port", str(port), "--wait-display", timeout=60) as client:
                want, shown = await same_as_qemu(vm, client)
                assert_same(shown, want, client)
            await vm.qmp.execute("quit")
            assert await asyncio.wait_for(proc.wait(), 30) == 0, "\n".join(lines)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            if drain is not None:
                await drain


async def test_two_consoles_two_displays(tmp_path: Path) -> None:
    """Each QEMU console is a display of its own (console order = display order), and spice-gtk,
    whose display channels share one GLZ window and one image cache per session, shows both."""
    async with start_qemu(tmp_path, "-vga", "std", "-device", "secondary-vga,id=second") as vm, served(vm) as (server, bridge):
        assert [c.id for c in bridge.consoles] == [0, 1] and server.display_count() == 2
        for console in bridge.consoles:
            await asyncio.wait_for(console.display.first_picture(), 20)
        async with controlled_client("--port", str(server.port_of()), "--expect-channels", "3", "--wait-display", timeout=90) as client:
            deadline = time.monotonic() + 20
            while "SeaBIOS" not in await vm.vga_text():  # console 0 is past QEMU's placeholder
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            await vm.qmp.execute("stop")
            shown = await client.wait_picture(lambda p: p.shape == (400, 720), timeout=20)
            assert shown is not None and shown.shape == (400, 720), format_events(client.events, client.stderr)
            wants = []
            for display_id, device in enumerate((None, "second")):
                deadline = time.monotonic() + 20
                while True:  # the VGA text cursor blinks on even while the VM is stopped
                    want = await vm.screendump(device=device)
                    got = await asyncio.to_thread(server.display_snapshot, display_id)
                    shown = await client.screenshot(display=display_id)
                    if np.array_equal(got, want) and shown is not None and np.array_equal(shown, want):
                        break
                    assert time.monotonic() < deadline, (display_id, got.shape, want.shape, None if shown is None else shown.shape)
                    await asyncio.sleep(0.1)
                wants.append(want)
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        assert wants[0].shape != wants[1].shape or not np.array_equal(*wants)
