"""spice-gtk 0.42's emulated shared CD, redirected over our usbredir channel, read with pyusb.

spice-gtk (``src/usb-device-manager.c`` ``create_shared_cd_device``, ``src/usb-backend.c``,
``src/cd-usb-bulk-msd.c`` + ``cd-scsi.c``) emulates a USB CD-ROM ("SPICE CD", 2b23:cdcd, bulk-only
mass storage) over an image file, with no USB hardware; gi_client's ``--usb-cd ISO`` makes it and
the ``usb_cd_connect`` op redirects it to a usbredir channel of the server
(:class:`~spiceserver.channels.usbredir.UsbRedirChannel`). The server fetches its descriptors and
announces it; the host then drives it through the pyusb backend
(:mod:`spiceserver.channels.usb_pyusb`) from a worker thread: device and config descriptors,
SET_CONFIGURATION, INQUIRY and READ(10) over bulk-only transport, one bulk request at a time
(the emulation aborts on an overlapping one), the first UNIT ATTENTION read with REQUEST SENSE.
The blocks must be the image's bytes. Then the client un-redirects the device (``usb_disconnect``)
or leaves, and the host sees the detach. The read runs with the channels offering LZ4 and not
(issue 14 point 5): the same bytes either way; the channels' ``compressed_to_client`` /
``compressed_from_client`` counters show SPICEVMC_COMPRESSED_DATA both ways with it (spice-gtk
compresses the 2 KiB block replies; we compress a 2000-byte control OUT the CD stalls) and none without.

The last test drives the same device through the device's own coroutines
(:class:`~spiceserver.channels.usb_device.RedirectedUsbDevice` on the loop, no pyusb).
"""

from __future__ import annotations

import asyncio
import errno
import struct
from pathlib import Path
from typing import Any

import pytest
import usb.core  # type: ignore[import-untyped]
import usb.util  # type: ignore[import-untyped]

from spiceserver.channels.usb_device import RedirectedUsbDevice
from spiceserver.channels.usbredir import UsbRedirChannel, UsbRedirection
from spiceserver.demo_usb import describe_redirected
from tests.conftest import start_server
from tests.interop.harness import controlled_client
from tests.support import fake_usb as bot

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]

CD_VID, CD_PID = 0x2B23, 0xCDCD


def make_iso(path: Path) -> bytes:
    """A 2 MiB image: a text head, then a recognisable pattern per 2048-byte block."""
    blocks = [b"hello iso\n".ljust(2048, b"\0")]
    blocks += [struct.pack(">I", i) * 512 for i in range(1, 1024)]
    data = b"".join(blocks)
    path.write_bytes(data)
    return data


class Devices:
    """The hub's attach / detach callbacks as futures."""

    def __init__(self, hub: UsbRedirection) -> None:
        loop = asyncio.get_running_loop()
        self.attached: asyncio.Future[RedirectedUsbDevice] = loop.create_future()
        self.detached: asyncio.Future[RedirectedUsbDevice] = loop.create_future()
        hub.on_attach(lambda d: self.attached.done() or self.attached.set_result(d))
        hub.on_detach(lambda d: self.detached.done() or self.detached.set_result(d))


def read_the_cd(backend: Any, image: bytes) -> dict[str, Any]:
    """The host's side, in a worker thread: everything through pyusb."""
    dev = usb.core.find(idVendor=CD_VID, idProduct=CD_PID, backend=backend)
    assert dev is not None
    dev.default_timeout = 10000  # ms (pyusb's default is 1 s): the CD answers from the client, across the network
    out: dict[str, Any] = {"speed": dev.speed, "class": dev.bDeviceClass, "configs": dev.bNumConfigurations}
    cfg = dev[0]
    intf = cfg[(0, 0)]
    out["interface"] = (intf.bInterfaceClass, intf.bInterfaceSubClass, intf.bInterfaceProtocol)
    out["endpoints"] = sorted(
        (e.bEndpointAddress, usb.util.endpoint_type(e.bmAttributes), e.wMaxPacketSize) for e in intf
    )
    out["raw_device"] = bytes(dev.ctrl_transfer(0x80, 6, 0x0100, 0, 18))
    out["raw_config"] = bytes(dev.ctrl_transfer(0x80, 6, 0x0200, 0, cfg.wTotalLength))
    dev.set_configuration()
    out["configuration"] = dev.get_active_configuration().bConfigurationValue
    out["inquiry"] = bot.inquiry(dev, timeout=10000)
    out["senses"] = []
    out["block0"] = bot.read_blocks(dev, 0, senses=out["senses"], timeout=10000)
    out["blocks"] = bot.read_blocks(dev, 700, 2, timeout=10000)
    capacity = bot.scsi(dev, b"\x25" + bytes(9), 8, timeout=10000)
    out["capacity"] = struct.unpack(">II", capacity)
    # 2000 compressible bytes server -> client: a vendor control OUT, which the CD emulation stalls
    # (usb-device-cd.c answers only endpoint and mass-storage class requests)
    try:
        dev.ctrl_transfer(0x40, 0x01, 0, 0, bytes(2000), timeout=10000)
        out["vendor_out"] = "ok"
    except usb.core.USBError as exc:
        out["vendor_out"] = exc.errno
    return out


async def redirect_and_read(tmp_path: Path, leave: bool, lz4: bool = True) -> None:
    image_path = tmp_path / "cd.iso"
    image = make_iso(image_path)
    r = await start_server()
    hub = UsbRedirection()
    channels = [r.server.register_channel(UsbRedirChannel, hub, i, lz4=lz4) for i in (0, 1)]
    devices = Devices(hub)
    backend = hub.pyusb_backend()
    try:
        async with controlled_client(
            "--port", str(r.server.port_of()), "--usb-cd", str(image_path), "--expect-channels", "3", timeout=90
        ) as client:
            await client.expect("usb-cd", ok=True, timeout=10)
            await client.expect("usb-device-added", shared_cd=True, timeout=10)
            await client.action({"op": "usb_cd_connect"})
            ev = await client.expect("usb-connected", timeout=30)
            assert ev["ok"], ev
            device = await asyncio.wait_for(devices.attached, 30)
            assert (device.vendor_id, device.product_id) == (CD_VID, CD_PID)
            assert hub.devices == [device]
            out = await asyncio.to_thread(read_the_cd, backend, image)
            text = await asyncio.to_thread(describe_redirected, backend, device)  # the demo's view
            assert text.splitlines()[0].endswith("ID 2b23:cdcd Red Hat Spice CD"), text
            assert "    Interface 0 alt 0: class 08/06/50 (Mass Storage)" in text.splitlines(), text
            assert out["speed"] == device.speed + 1 and out["configs"] == 1
            assert out["interface"] == (8, 6, 0x50)
            assert [(a, t) for a, t, _ in out["endpoints"]] == [(0x02, 2), (0x81, 2)]
            assert out["raw_device"] == device.device_descriptor
            assert out["raw_config"] == device.config_descriptors[0]
            assert out["configuration"] == 1
            kind, vendor, product = out["inquiry"]
            assert kind == 5 and (vendor, product) == ("Red Hat", "SPICE CD"), out["inquiry"]
            assert out["senses"] == [(6, 0x28, 0)]  # UNIT ATTENTION, medium may have changed: then the read
            assert out["block0"] == image[:2048] and out["block0"].startswith(b"hello iso\n")
            assert out["blocks"] == image[700 * 2048 : 702 * 2048]
            assert out["capacity"] == (len(image) // 2048 - 1, 2048)
            assert out["vendor_out"] == errno.EPIPE
            # LZ4 (issue 14 point 5): on, spice-gtk compresses the 2 KiB block replies (client ->
            # server) and we compress the 2000-byte control OUT (server -> client); off, plain DATA
            stats = [ch.stats() for ch in channels]
            to_client = sum(st["compressed_to_client"] for st in stats)
            from_client = sum(st["compressed_from_client"] for st in stats)
            if lz4:
                assert to_client > 0 and from_client >= 2, stats  # the reads of block 0 and of blocks 700-701
            else:
                assert (to_client, from_client) == (0, 0), stats
            if leave:
                await client.finish(timeout=30)
            else:
                await client.action({"op": "usb_disconnect"})
                ev = await client.expect("usb-disconnected", timeout=30)
                assert ev["ok"], ev
            assert await asyncio.wait_for(devices.detached, 30) is device
            assert device.gone and hub.devices == []
            gone = await asyncio.to_thread(lambda: usb.core.find(idVendor=CD_VID, backend=backend))
            assert gone is None
    finally:
        await r.server.close()


@pytest.mark.parametrize("lz4", [True, False], ids=["lz4", "no-lz4"])
async def test_spicegtk_shared_cd_read_through_pyusb_then_unredirected(tmp_path: Path, lz4: bool) -> None:
    await redirect_and_read(tmp_path, leave=False, lz4=lz4)


async def test_spicegtk_shared_cd_detached_when_the_client_leaves(tmp_path: Path) -> None:
    await redirect_and_read(tmp_path, leave=True)


# --- the same device through RedirectedUsbDevice's async API (from the usb branch) -----------------------


def cbw(tag: int, length: int, data_in: bool, cdb: bytes) -> bytes:
    """A bulk-only Command Block Wrapper (31 bytes)."""
    return struct.pack("<IIIBBB", 0x43425355, tag, length, 0x80 if data_in else 0, 0, len(cdb)) + cdb.ljust(16, b"\0")


async def scsi_in(dev: RedirectedUsbDevice, tag: int, cdb: bytes, length: int) -> tuple[bytes, int]:
    """One data-in SCSI command: CBW out, data in, CSW in (sequentially); (data, CSW status)."""
    assert await dev.bulk_out(0x02, cbw(tag, length, True, cdb), timeout=10) == 31
    data = await dev.bulk_in(0x81, length, timeout=10) if length else b""
    csw = await dev.bulk_in(0x81, 13, timeout=10)
    sig, got_tag, _residue, status = struct.unpack("<IIIB", csw)
    assert (sig, got_tag) == (0x53425355, tag)
    return data, status


async def test_spicegtk_shared_cd_attaches_with_descriptors_and_reads(tmp_path: Path) -> None:
    iso = tmp_path / "cd.iso"
    iso.write_bytes(b"hello iso\n" + bytes(2 * 1024 * 1024 - 10))
    r = await start_server()
    hub = UsbRedirection()
    r.server.register_channel(UsbRedirChannel, hub, 0)
    r.server.register_channel(UsbRedirChannel, hub, 1)
    attached: asyncio.Queue[RedirectedUsbDevice] = asyncio.Queue()
    detached: asyncio.Queue[RedirectedUsbDevice] = asyncio.Queue()
    hub.on_attach(attached.put_nowait)
    hub.on_detach(detached.put_nowait)
    try:
        async with controlled_client(
            "--port", str(r.server.port_of()), "--usb-cd", str(iso), "--expect-channels", "3", timeout=60
        ) as client:
            ev = await client.expect("usb-cd", timeout=10)
            assert ev["ok"], ev
            await client.expect("ready", timeout=15)
            await client.action({"op": "usb_cd_connect"})
            dev = await asyncio.wait_for(attached.get(), 20)
            ev = await client.expect("usb-connected", timeout=10)
            assert ev["ok"], ev
            assert (dev.vendor_id, dev.product_id) == (0x2B23, 0xCDCD)
            assert hub.devices == [dev]
            dd = dev.device_descriptor
            assert len(dd) == 18 and dd[1] == 1 and struct.unpack_from("<HH", dd, 8) == (0x2B23, 0xCDCD)
            assert len(dev.config_descriptors) == dd[17] >= 1
            config = dev.config_descriptors[0]
            assert struct.unpack_from("<H", config, 2)[0] == len(config)
            assert [(i.interface_class, i.interface_subclass, i.interface_protocol) for i in dev.interfaces] == [
                (8, 6, 0x50)
            ]
            assert dev.endpoints[0x02].type == 2 and dev.endpoints[0x81].type == 2
            if dev.configuration != 1:
                await dev.set_configuration(1, timeout=10)
            inquiry, status = await scsi_in(dev, 1, bytes([0x12, 0, 0, 0, 36, 0]), 36)
            assert status == 0 and b"SPICE" in inquiry[8:36], inquiry
            block = b""
            for tag in range(2, 8):  # the first READ may report unit attention (medium changed)
                block, status = await scsi_in(dev, tag, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), 2048)
                if status == 0:
                    break
                _sense, _ = await scsi_in(dev, tag + 100, bytes([0x03, 0, 0, 0, 18, 0]), 18)
            assert status == 0 and block.startswith(b"hello iso\n")
            await client.action({"op": "usb_disconnect"})
            gone = await asyncio.wait_for(detached.get(), 20)
            assert gone is dev and dev.gone and hub.devices == []
    finally:
        await r.server.close()
