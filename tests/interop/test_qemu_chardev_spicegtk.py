"""QEMU 7.2's D-Bus chardevs through the bridge (:mod:`spiceserver.qemu.chardev`), seen by spice-gtk.

A paused TCG QEMU with no disk on a private dbus-daemon (:mod:`tests.support.qemu`):

* ``-chardev dbus,id=hmp0,name=org.qemu.monitor.hmp.0 -mon chardev=hmp0,mode=readline``: the HMP
  monitor becomes a port channel named ``org.qemu.monitor.hmp.0``; spice-gtk's port channel
  (gi_client ``port_write``) sends ``info version`` and QEMU's answer comes back as port data.
* ``-chardev dbus,id=usbredir1,name=org.qemu.usbredir -device qemu-xhci -device usb-redir,...``: a
  usbredir channel passed through to QEMU's usb-redir; spice-gtk's emulated CD (``--usb-cd``,
  ``usb_cd_connect``) shows up on QEMU's USB bus (HMP ``info usb`` over QMP: usb-redir takes the
  device's 480 Mb/s) and leaves it again when the client un-redirects it.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import pytest

from spiceserver.channels.port import PortChannel
from spiceserver.channels.usbredir import UsbRedirPassthroughChannel
from spiceserver.qemu.chardev import attach_chardevs
from spiceserver.qemu.devices import wait_for_qemu
from tests.conftest import start_server
from tests.interop.harness import controlled_client
from tests.support.qemu import QemuVM, require_qemu, start_qemu

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]

HMP = "org.qemu.monitor.hmp.0"


def port_text(client: Any, name: str) -> str:
    evs = [e for e in client.events if e.get("event") == "port-data" and e.get("name") == name]
    return "".join(base64.b64decode(e["b64"]).decode(errors="replace") if "b64" in e else e["text"] for e in evs)


async def wait_for(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def info_usb(vm: QemuVM) -> str:
    """HMP ``info usb`` through QMP: one line per device on QEMU's USB buses."""
    return str(await vm.qmp.execute("human-monitor-command", {"command-line": "info usb"}))


async def test_hmp_monitor_as_a_spice_port(tmp_path: Path) -> None:
    require_qemu()
    async with start_qemu(tmp_path, "-chardev", f"dbus,id=hmp0,name={HMP}", "-mon", "chardev=hmp0,mode=readline") as vm:
        bus = await vm.bus()
        await wait_for_qemu(bus)  # QEMU takes org.qemu after QMP is up
        r = await start_server()
        chardevs = None
        try:
            chardevs = await attach_chardevs(r.server, bus)
            hmp = chardevs.by_name(HMP)
            assert hmp.kind == "port" and isinstance(hmp.channel, PortChannel)
            assert hmp.path == "/org/qemu/Display1/Chardev_hmp0"
            async with controlled_client("--port", str(r.server.port_of()), timeout=40) as client:
                await client.expect("port-opened", name=HMP, opened=True, timeout=15)
                # the monitor's banner arrives on its own (the chardev got a client at Register)
                await wait_for(lambda: "QEMU" in port_text(client, HMP), 15, "the HMP banner")
                await client.action({"op": "port_write", "name": HMP, "text": "info version\n"})
                await client.expect("port-written", name=HMP, timeout=10)
                version = (await vm.qmp.execute("query-version"))["qemu"]
                want = f"{version['major']}.{version['minor']}.{version['micro']}"
                await wait_for(lambda: want in port_text(client, HMP).split("info version", 1)[-1], 15, repr(want))
        finally:
            if chardevs is not None:
                await chardevs.close()
            await r.server.close()


async def test_usbredir_to_qemu_usb_redir(tmp_path: Path) -> None:
    require_qemu()
    image = tmp_path / "cd.iso"
    image.write_bytes(b"hello iso\n".ljust(2048, b"\0") * 512)
    async with start_qemu(
        tmp_path,
        "-chardev",
        "dbus,id=usbredir1,name=org.qemu.usbredir",
        "-device",
        "qemu-xhci,id=xhci",
        "-device",
        "usb-redir,chardev=usbredir1,id=redir1",
    ) as vm:
        bus = await vm.bus()
        await wait_for_qemu(bus)  # QEMU takes org.qemu after QMP is up
        r = await start_server()
        chardevs = None
        try:
            chardevs = await attach_chardevs(r.server, bus)
            redir = chardevs.by_name("org.qemu.usbredir")
            assert redir.kind == "usbredir" and isinstance(redir.channel, UsbRedirPassthroughChannel)
            await vm.qmp.execute("cont")  # usb-redir attaches a device only while the VM runs
            async with controlled_client(
                "--port", str(r.server.port_of()), "--usb-cd", str(image), "--expect-channels", "3", timeout=90
            ) as client:
                await client.expect("usb-cd", ok=True, timeout=15)
                await client.expect("usb-device-added", shared_cd=True, timeout=15)
                # usb-redir sits on QEMU's bus as a 1.5 Mb/s stub until a device is redirected to it
                # (hw/usb/redirect.c); then it takes the device's speed (spice-gtk's CD: 480 Mb/s)
                text = await info_usb(vm)
                assert "ID: redir1" in text and "480 Mb/s" not in text, text
                await client.action({"op": "usb_cd_connect"})
                await client.expect("usb-connected", timeout=30)
                deadline = time.monotonic() + 30
                while "Speed 480 Mb/s, Product USB Redirection Device, ID: redir1" not in (text := await info_usb(vm)):
                    assert time.monotonic() < deadline, f"the CD never reached QEMU's USB bus: {text!r}"
                    await asyncio.sleep(0.05)
                await client.action({"op": "usb_disconnect"})
                await client.expect("usb-disconnected", timeout=30)
                deadline = time.monotonic() + 30
                while "480 Mb/s" in (text := await info_usb(vm)):
                    assert time.monotonic() < deadline, f"the CD never left QEMU's USB bus: {text!r}"
                    await asyncio.sleep(0.05)
        finally:
            if chardevs is not None:
                await chardevs.close()
            await r.server.close()


async def test_chardevs_added_and_removed_at_run_time(tmp_path: Path) -> None:
    """QMP ``chardev-add`` with a ``dbus`` backend exports a new ``Chardev_ID`` (ObjectManager
    ``InterfacesAdded``): the bridge attaches it as a port; ``chardev-remove`` drops it."""
    require_qemu()
    async with start_qemu(tmp_path) as vm:
        bus = await vm.bus()
        await wait_for_qemu(bus)
        r = await start_server()
        chardevs = None
        try:
            chardevs = await attach_chardevs(r.server, bus, names=["org.test.late.0"])
            assert chardevs.chardevs == []
            backend = {"type": "dbus", "data": {"name": "org.test.late.0"}}
            await vm.qmp.execute("chardev-add", {"id": "late0", "backend": backend})
            await wait_for(lambda: [c.name for c in chardevs.chardevs] == ["org.test.late.0"], 10, "the new chardev")
            late = chardevs.chardevs[0]
            assert late.path == "/org/qemu/Display1/Chardev_late0" and isinstance(late.channel, PortChannel)
            backend2 = {"type": "dbus", "data": {"name": "org.test.other"}}
            await vm.qmp.execute("chardev-add", {"id": "other0", "backend": backend2})  # not wanted
            await vm.qmp.execute("chardev-remove", {"id": "late0"})
            await wait_for(lambda: chardevs.chardevs == [], 10, "the chardev to go")
            await wait_for(lambda: late.device.closed, 10, "its device to close")
        finally:
            if chardevs is not None:
                await chardevs.close()
            await r.server.close()
