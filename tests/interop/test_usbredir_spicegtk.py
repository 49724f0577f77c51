"""spice-gtk 0.42 redirecting its emulated shared CD (``UsbDeviceManager.create_shared_cd_device``, no
USB hardware needed) to the parsed usbredir channel: the hub announces the device 2b23:cdcd with its
descriptors fetched, bulk-only mass storage works (INQUIRY, READ(10) of the image's first block,
one bulk request at a time as spice-gtk's CD emulation wants), and the client leaving detaches it.

Not tested here: gi_client's ``usb_disconnect`` (spice-gtk un-redirecting). spice-gtk 0.42 often dies of
SIGBUS in a GTask pool thread of libspice-client-glib when ``disconnect_device_async`` follows the
connect closely (about 1 run in 3 here; never with ``SPICE_DEBUG=1`` or a second later), so the
detach a device_disconnect causes is tested with the scripted host (tests/test_usbredir_channel.py).

gi_client's ``--usb-cd ISO`` and ``usb_cd_connect`` / ``usb_disconnect`` drive spice-gtk's
``src/usb-device-manager.c``; spice-gtk's usbredirhost is the usb-host, the server the usb-guest.
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from spiceserver.channels.usb_device import RedirectedUsbDevice
from spiceserver.channels.usbredir import UsbRedirChannel, UsbRedirection
from tests.conftest import start_server
from tests.interop.harness import controlled_client

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]


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
                await scsi_in(dev, tag + 100, bytes([0x03, 0, 0, 0, 18, 0]), 18)  # REQUEST SENSE
            assert status == 0 and block.startswith(b"hello iso\n")
        assert client.proc.returncode == 0, client.stderr[-2000:]
        # the client left: the device is detached
        assert await asyncio.wait_for(detached.get(), 20) is dev
        assert dev.gone and hub.devices == []
    finally:
        await r.server.close()
