""":func:`spiceserver.qemu.devices.attach_devices` on QEMU 7.2: audio, clipboard and chardevs in one
call, and what it leaves out when QEMU has no ``Audio`` object."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from spiceserver.qemu.devices import attach_devices
from tests.conftest import start_server
from tests.interop.test_qemu_audio import qemu_with_audio, wait_for
from tests.support.qemu import start_qemu

pytestmark = [pytest.mark.interop]

HMP = ("-chardev", "dbus,id=hmp0,name=org.qemu.monitor.hmp.0", "-mon", "chardev=hmp0,mode=readline")


async def test_everything_qemu_exports(tmp_path: Path) -> None:
    devices = ("-device", "intel-hda", "-device", "hda-duplex,audiodev=snd0", *HMP)
    async with qemu_with_audio(tmp_path, "dbus,id=snd0,out.frequency=48000,in.frequency=48000", *devices) as vm:
        bus = await vm.bus()
        r = await start_server()
        try:
            got = await attach_devices(r.server, bus)
            try:
                assert got.audio is not None and got.audio.inp is not None
                assert got.clipboard is not None
                await got.clipboard.wait_registered(10)
                assert got.chardevs is not None
                assert [(c.name, c.kind) for c in got.chardevs.chardevs] == [("org.qemu.monitor.hmp.0", "port")]
                await wait_for(lambda: got.audio is not None and got.audio.out.streams, 10, "QEMU's Init")
            finally:
                await got.close()
        finally:
            await r.server.close()


async def test_no_audio_object(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with start_qemu(tmp_path, *HMP) as vm:
        bus = await vm.bus()
        r = await start_server()
        try:
            with caplog.at_level(logging.INFO, "spiceserver.qemu"):
                got = await attach_devices(r.server, bus, clipboard=False, chardev_names=["nothing.here"])
            try:
                assert got.audio is None and got.clipboard is None
                assert got.chardevs is not None and got.chardevs.chardevs == []
                assert "add audiodev= to -display dbus" in caplog.text
            finally:
                await got.close()
        finally:
            await r.server.close()


async def test_peer_to_peer(tmp_path: Path) -> None:
    """The same over ``-display dbus,p2p=yes`` (QMP ``add_client``; no bus daemon, no AddMatch):
    the clipboard registers and is called back, the chardev is attached and talks."""
    async with start_qemu(tmp_path, *HMP, p2p=True) as vm:
        bus = await vm.bus()
        r = await start_server()
        try:
            got = await attach_devices(r.server, bus)
            try:
                assert got.audio is None
                assert got.clipboard is not None
                await got.clipboard.wait_registered(10)
                assert got.chardevs is not None
                (hmp,) = got.chardevs.chardevs
                assert hmp.name == "org.qemu.monitor.hmp.0"
                await wait_for(lambda: hmp.device.opened, 10, "the monitor's chardev to open")
            finally:
                await got.close()
        finally:
            await r.server.close()


async def test_vdagent_port_waits_for_the_guest(tmp_path: Path) -> None:
    """``org.spice-space.vdagent.0`` on a virtio-serial port becomes the server's guest agent device;
    its front end stays closed (``FEOpened`` false) until a guest's spice-vdagent opens the port, so
    the guest agent is not attached and the host agent keeps answering."""
    vdagent = (
        "-chardev", "dbus,id=vdagent0,name=org.spice-space.vdagent.0",
        "-device", "virtio-serial-pci",
        "-device", "virtserialport,chardev=vdagent0,name=com.redhat.spice.0",
    )  # fmt: skip
    async with start_qemu(tmp_path, *vdagent) as vm:
        bus = await vm.bus()
        r = await start_server()
        try:
            got = await attach_devices(r.server, bus, clipboard=False)
            try:
                assert got.chardevs is not None
                (agent,) = got.chardevs.chardevs
                assert (agent.kind, agent.path) == ("agent", "/org/qemu/Display1/Chardev_vdagent0")
                assert not agent.device.opened and not r.server.agent_attached
            finally:
                await got.close()
        finally:
            await r.server.close()
