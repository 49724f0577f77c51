"""The pyusb backend over redirected USB devices (spiceserver/channels/usb_pyusb.py).

pyusb runs in a worker thread (``asyncio.to_thread``) while the device coroutines run on the test's
loop, as a host would use it: against :class:`tests.support.fake_usb.FakeUsbDevice` (a bulk-only
mass-storage CD plus interrupt and iso endpoints) for descriptors, bulk-only INQUIRY / READ(10),
control, interrupt, iso, alt settings, clear halt, reset and the error mapping; then against the
real usbredir channel and its scripted usb-host (tests/support/usbredir_host.py). The descriptor
parser gets table cases and a hypothesis fuzz (parse or ProtocolError, nothing else).
"""

from __future__ import annotations

import asyncio
import errno
import struct
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import usb.core  # type: ignore[import-untyped]
import usb.util  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spiceserver.channels.usb_device import UsbDeviceGone, UsbTransferError
from spiceserver.channels.usb_pyusb import (
    UsbRedirBackend,
    parse_config_descriptor,
    parse_device_descriptor,
    usb_error,
)
from spiceserver.channels.usbredir import UsbRedirChannel, UsbRedirection
from spiceserver.demo_usb import describe_device, print_attached, watch_usb
from spiceserver.errors import ProtocolError
from spiceserver.proto.enums import ChannelType
from tests.conftest import Running
from tests.support import fake_usb as fu
from tests.support.client import connect
from tests.support.fake_usb import FakeHub, FakeUsbDevice
from tests.support.usbredir_host import BULK_IN, BULK_OUT, INTR_IN, FakeUsbHost

T = TypeVar("T")

ISO = b"hello iso\n" + bytes(range(256)) * 40  # 10250 bytes: 5 blocks and a bit (padded to 6)


async def in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


async def wait_until(pred: Callable[[], object], timeout: float = 10.0) -> None:
    async def loop() -> None:
        while not pred():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(loop(), timeout)


def setup() -> tuple[FakeUsbDevice, UsbRedirBackend]:
    fake = FakeUsbDevice(asyncio.get_running_loop(), ISO, channel_id=3)
    return fake, UsbRedirBackend(FakeHub(fake))


async def test_find_and_descriptors() -> None:
    fake, backend = setup()

    def host() -> dict[str, Any]:
        dev = usb.core.find(idVendor=fu.VID, backend=backend)
        assert dev is not None
        assert usb.core.find(idVendor=0x1234, backend=backend) is None
        assert usb.core.find(find_all=True, backend=backend) is not None
        cfg = dev[0]
        return {
            "ids": (dev.idVendor, dev.idProduct, dev.bcdDevice, dev.bcdUSB, dev.bMaxPacketSize0),
            "where": (dev.bus, dev.address, dev.port_number, dev.speed),
            "strings": (dev.manufacturer, dev.product, dev.serial_number),
            "cfg": (cfg.bConfigurationValue, cfg.bNumInterfaces, cfg.wTotalLength, cfg.bMaxPower),
            "intfs": [(i.bInterfaceNumber, i.bAlternateSetting, i.bInterfaceClass) for i in cfg],
            "eps": [[(e.bEndpointAddress, usb.util.endpoint_type(e.bmAttributes)) for e in i] for i in cfg],
            "extra": bytes(cfg[(1, 0)].extra_descriptors),
            "mps": cfg[(0, 0)][1].wMaxPacketSize,
            "text": str(dev),
        }

    got = await in_thread(host)
    assert got["ids"] == (fu.VID, fu.PID, 0x0100, 0x0200, 64)
    assert got["where"] == (3, 1, None, usb.util.SPEED_HIGH)
    assert got["strings"] == ("spiceserver tests", "Fake CD", "0001")
    assert got["cfg"] == (1, 2, len(fu.config_descriptor()), 50)
    assert got["intfs"] == [(0, 0, 8), (1, 0, 0xFF), (1, 1, 0xFF)]
    assert got["eps"] == [[(0x02, 2), (0x81, 2)], [(0x83, 3), (0x04, 3)], [(0x83, 3), (0x04, 3), (0x05, 1), (0x86, 1)]]
    assert got["extra"] == fu.CLASS_SPECIFIC
    assert got["mps"] == 512
    assert "Fake CD" in got["text"] and "ENDPOINT 0x81: Bulk IN" in got["text"]
    assert backend.device_id(fake) is backend.device_id(fake)  # one id per device


async def test_mass_storage_inquiry_and_read() -> None:
    fake, backend = setup()

    def host() -> tuple[Any, ...]:
        dev = usb.core.find(idVendor=fu.VID, backend=backend)
        dev.set_configuration()
        kind, vendor, product = fu.inquiry(dev)
        status, _ = fu.bot_command(dev, b"\x25" + bytes(9), 8)  # READ CAPACITY: unit attention
        sense = fu.request_sense(dev)
        capacity = fu.scsi(dev, b"\x25" + bytes(9), 8)
        first = fu.read_blocks(dev, 0)
        two = fu.read_blocks(dev, 4, 2)
        with pytest.raises(fu.CommandFailed) as err:
            fu.read_blocks(dev, 100)
        return (
            kind,
            vendor,
            product,
            status,
            sense,
            capacity,
            first,
            two,
            err.value.sense,
            dev.get_active_configuration(),
        )

    kind, vendor, product, status, sense, capacity, first, two, bad, cfg = await in_thread(host)
    assert (kind, vendor, product) == (5, "spicesrv", "Fake CD")
    assert status == 1 and sense == (6, 0x28, 0)
    assert struct.unpack(">II", capacity) == (5, 2048)
    padded = ISO + bytes(-len(ISO) % 2048)
    assert first == padded[:2048] and first.startswith(b"hello iso\n")
    assert two == padded[4 * 2048 : 6 * 2048]
    assert bad == (5, 0x21, 0)
    assert fake.configuration == 1 and cfg.bConfigurationValue == 1
    assert fake.commands[:3] == [0x12, 0x25, 0x03] and fake.overlaps == fake.too_long == 0


async def test_control_interrupt_iso_halt_reset() -> None:
    fake, backend = setup()

    def host() -> dict[str, Any]:
        dev = usb.core.find(idVendor=fu.VID, backend=backend)
        dev.set_configuration(1)
        out: dict[str, Any] = {}
        out["vendor"] = bytes(dev.ctrl_transfer(0xC0, 1, 0, 0, 16))
        out["vendor_out"] = dev.ctrl_transfer(0x40, 2, 0, 0, b"abc")
        out["status"] = bytes(dev.ctrl_transfer(0x80, 0, 0, 0, 2))
        with pytest.raises(usb.core.USBError) as err:
            dev.ctrl_transfer(0xC0, 0x55, 0, 0, 4)
        out["stall"] = (err.value.errno, err.value.backend_error_code)
        out["intr_out"] = dev.write(fu.INTR_OUT, b"led")
        out["intr_in"] = bytes(dev.read(fu.INTR_IN, 8, 5000))
        with pytest.raises(ValueError):  # pyusb: no iso endpoint in the current alt setting (0)
            dev.write(fu.ISO_OUT, b"x")
        dev.set_interface_altsetting(interface=1, alternate_setting=1)
        out["iso_out"] = dev.write(fu.ISO_OUT, b"iso!")
        out["iso_in"] = bytes(dev.read(fu.ISO_IN, 192, 5000))
        buf = usb.util.create_buffer(4)
        out["into"] = (dev.ctrl_transfer(0xC0, 1, 0, 0, buf), bytes(buf))
        dev.clear_halt(fu.BULK_IN)
        dev.reset()
        return out

    fake.push_interrupt(b"\x01\x02\x03")
    out = await in_thread(host)
    assert out["vendor"] == b"vendor" and out["vendor_out"] == 3 and fake.vendor_out == [b"abc"]
    assert out["status"] == b"\0\0"
    assert out["stall"] == (errno.EPIPE, -9)
    assert out["intr_out"] == 3 and fake.interrupt_out_data == [b"led"]
    assert out["intr_in"] == b"\x01\x02\x03"
    assert out["iso_out"] == 4 and out["iso_in"] == b"iso!" and fake.alt[1] == 1
    assert out["into"] == (4, b"vend")
    assert fake.cleared_halts == [fu.BULK_IN] and fake.resets == 1


async def test_timeout_gone_and_loop_thread() -> None:
    fake, backend = setup()
    dev = await in_thread(lambda: usb.core.find(idVendor=fu.VID, backend=backend))

    def timed_out() -> BaseException:
        dev.set_configuration()
        with pytest.raises(usb.core.USBTimeoutError) as err:
            dev.read(fu.BULK_IN, 512, 50)  # nothing to answer
        return err.value

    err = await in_thread(timed_out)
    assert err.errno == errno.ETIMEDOUT and err.backend_error_code == -7

    # on the loop's own thread a blocking call would deadlock: refused at once
    with pytest.raises(RuntimeError, match="worker thread"):
        dev.read(fu.BULK_IN, 512, 1000)
    with pytest.raises(RuntimeError, match="worker thread"):
        dev.ctrl_transfer(0xC0, 1, 0, 0, 16)

    def blocked() -> BaseException:
        with pytest.raises(usb.core.USBError) as err:
            dev.read(fu.BULK_IN, 512, 0)  # 0: no timeout
        return err.value

    reader = asyncio.ensure_future(in_thread(blocked))
    await wait_until(lambda: fake.busy)  # the read is pending on the device
    fake.detach()
    err = await reader
    assert err.errno == errno.ENODEV and err.backend_error_code == -4
    with pytest.raises(usb.core.USBError) as gone:
        await in_thread(lambda: dev.ctrl_transfer(0xC0, 1, 0, 0, 16))
    assert gone.value.errno == errno.ENODEV


def test_error_mapping() -> None:
    cases = {1: errno.EINTR, 2: errno.EINVAL, 3: errno.EIO, 4: errno.EPIPE, 5: errno.ETIMEDOUT, 6: errno.EOVERFLOW}
    for status, err in cases.items():
        e = usb_error(UsbTransferError(status))
        assert isinstance(e, usb.core.USBError) and e.errno == err
        assert isinstance(e, usb.core.USBTimeoutError) == (status == 5)
    assert usb_error(UsbDeviceGone()).errno == errno.ENODEV
    assert usb_error(UsbTransferError(99)).errno == errno.EIO


async def test_malformed_descriptors() -> None:
    fake, backend = setup()
    bad = FakeUsbDevice(asyncio.get_running_loop(), ISO)
    bad.device_descriptor = b"\x12\x01"
    backend.source.devices.append(bad)  # type: ignore[attr-defined]
    overrun = bytearray(fu.config_descriptor() + b"\x09\x24")  # a 9-byte descriptor with 2 bytes left
    struct.pack_into("<H", overrun, 2, len(overrun))
    fake.config_descriptors = (bytes(overrun),)

    def host() -> tuple[int, int | None]:
        found = list(usb.core.find(find_all=True, backend=backend))  # the bad device is left out
        with pytest.raises(usb.core.USBError) as err:
            found[0][0]
        return len(found), err.value.errno

    assert await in_thread(host) == (1, errno.EIO)


def test_parse_descriptors_table() -> None:
    dd = parse_device_descriptor(fu.device_descriptor())
    assert (dd.idVendor, dd.idProduct, dd.iProduct, dd.bNumConfigurations) == (fu.VID, fu.PID, 2, 1)
    cfg = parse_config_descriptor(fu.config_descriptor() + b"trailing")
    assert [len(g) for g in cfg.interfaces] == [1, 2]
    assert cfg.interfaces[1][0].extra_descriptors == fu.CLASS_SPECIFIC
    # an audio endpoint (9 bytes) and an SS companion (extra of its endpoint); an IAD before the interface
    body = bytes([8, 0x0B, 0, 1, 1, 1, 0, 0])
    body += (
        bytes([9, 4, 0, 0, 1, 1, 2, 0, 0])
        + bytes([9, 5, 0x81, 0x05, 0xC0, 0, 1, 7, 0x82])
        + bytes([6, 0x30, 0, 0, 0, 0])
    )
    raw = struct.pack("<BBHBBBBB", 9, 2, 9 + len(body), 1, 1, 0, 0x80, 1) + body
    cfg = parse_config_descriptor(raw)
    ep = cfg.interfaces[0][0].endpoints[0]
    assert (ep.bEndpointAddress, ep.wMaxPacketSize, ep.bRefresh, ep.bSynchAddress) == (0x81, 0xC0, 7, 0x82)
    assert ep.extra_descriptors == bytes([6, 0x30, 0, 0, 0, 0])
    assert cfg.extra_descriptors == bytes([8, 0x0B, 0, 1, 1, 1, 0, 0])
    for bad in (
        b"",
        fu.device_descriptor(),  # not a config descriptor
        struct.pack("<BBHBBBBB", 9, 2, 5, 1, 1, 0, 0x80, 1),  # wTotalLength < bLength
        struct.pack("<BBHBBBBB", 9, 2, 16, 1, 1, 0, 0x80, 1) + bytes([7, 5, 0x81, 2, 0, 2, 0]),  # endpoint first
        struct.pack("<BBHBBBBB", 9, 2, 14, 1, 1, 0, 0x80, 1) + bytes([5, 4, 0, 0, 0]),  # short interface
        struct.pack("<BBHBBBBB", 9, 2, 11, 1, 1, 0, 0x80, 1) + bytes([0, 0x24]),  # zero-length descriptor
    ):
        with pytest.raises(ProtocolError):
            parse_config_descriptor(bad)
    for bad in (b"", fu.device_descriptor()[:17], b"\x12\x02" + bytes(16)):
        with pytest.raises(ProtocolError):
            parse_device_descriptor(bad)


FUZZ = settings(deadline=None, database=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_config_descriptor_parse_or_protocol_error(raw: bytes) -> None:
    try:
        cfg = parse_config_descriptor(raw)
    except ProtocolError:
        return
    for group in cfg.interfaces:
        assert group and all(i.bInterfaceNumber == group[0].bInterfaceNumber for i in group)


@FUZZ
@given(st.lists(st.binary(min_size=0, max_size=12), max_size=12), st.integers(0, 0xFFFF))
def test_fuzz_descriptor_chains(chunks: list[bytes], total: int) -> None:
    """Descriptor-shaped bytes (length-prefixed pieces of types 4, 5 and others) behind a valid header."""
    body = b"".join(bytes([len(c) + 2, (c[:1] or b"\x24")[0] % 8]) + c for c in chunks)
    raw = struct.pack("<BBHBBBBB", 9, 2, total, 1, 1, 0, 0x80, 1) + body
    try:
        cfg = parse_config_descriptor(raw)
    except ProtocolError:
        return
    assert cfg.wTotalLength == total


@FUZZ
@given(st.binary(max_size=40))
def test_fuzz_device_descriptor(raw: bytes) -> None:
    try:
        dd = parse_device_descriptor(raw)
    except ProtocolError:
        return
    assert dd.bDescriptorType == 1


# --- over the real usbredir channel and its scripted usb-host ----------------------------------------


async def test_over_the_usbredir_channel(running: Running) -> None:
    hub = UsbRedirection()
    running.server.register_channel(UsbRedirChannel, hub, 0)
    attached: asyncio.Queue[Any] = asyncio.Queue()
    detached: asyncio.Queue[Any] = asyncio.Queue()
    hub.on_attach(attached.put_nowait)
    hub.on_detach(detached.put_nowait)
    session = await connect(running.ep)
    host = FakeUsbHost(await session.link(ChannelType.USBREDIR, 0))
    await host.start()
    await host.wait_for(lambda: host.conn.have_peer_caps)
    await host.connect_device()
    device = await asyncio.wait_for(attached.get(), 10)
    backend = hub.pyusb_backend()
    assert isinstance(backend, UsbRedirBackend)

    def talk() -> dict[str, Any]:
        dev = usb.core.find(idVendor=0x1234, idProduct=0x5678, backend=backend)
        out: dict[str, Any] = {"speed": dev.speed, "bus": dev.bus}
        dev.set_configuration()
        out["written"] = dev.write(BULK_OUT, b"ping" * 300)
        out["read"] = bytes(dev.read(BULK_IN, 2048))
        out["vendor"] = bytes(dev.ctrl_transfer(0xC0, 2, 0, 0, 64))
        with pytest.raises(usb.core.USBError) as err:
            dev.ctrl_transfer(0xC0, 99, 0, 0, 8)
        out["stall"] = err.value.errno
        out["intr"] = bytes(dev.read(INTR_IN, 8, 5000))
        return out

    reader = asyncio.ensure_future(in_thread(talk))
    await host.wait_for(lambda: INTR_IN in host.interrupt_started or reader.done())
    await host.interrupt(b"\x07\x08")
    out = await reader
    assert out == {
        "speed": usb.util.SPEED_HIGH,
        "bus": 0,
        "written": 1200,
        "read": b"ping" * 300,
        "vendor": b"vendor",
        "stall": errno.EPIPE,
        "intr": b"\x07\x08",
    }

    # the device leaves while a transfer waits: ENODEV, and the backend lists it no more
    host.hold_bulk_in = True
    dev = await in_thread(lambda: usb.core.find(idVendor=0x1234, backend=backend))

    def blocked() -> int | None:
        with pytest.raises(usb.core.USBError) as err:
            dev.read(BULK_IN, 512, 0)
        return err.value.errno  # type: ignore[no-any-return]

    waiting = asyncio.ensure_future(in_thread(blocked))
    await host.wait_for(lambda: host.held)
    await host.disconnect_device()
    assert await waiting == errno.ENODEV
    assert await asyncio.wait_for(detached.get(), 10) is device
    assert await in_thread(lambda: usb.core.find(idVendor=0x1234, backend=backend)) is None


def test_hub_backend_is_ours() -> None:
    assert isinstance(UsbRedirection().pyusb_backend(), UsbRedirBackend)


# --- the demo helper ----------------------------------------------------------------------------------


async def test_demo_describes_devices() -> None:
    fake, backend = setup()
    text = await in_thread(lambda: describe_device(usb.core.find(idVendor=fu.VID, backend=backend)))
    lines = text.splitlines()
    assert lines[0] == "Bus 003 Device 001: ID 2b23:cdcd spiceserver tests Fake CD"
    assert "high speed" in lines[1] and "serial 0001" in lines[1]
    assert "  Configuration 1: 2 interface(s), 100 mA" in lines
    assert "    Interface 0 alt 0: class 08/06/50 (Mass Storage)" in lines
    assert "      Endpoint 0x81 IN bulk, 512 bytes" in lines
    assert "      Endpoint 0x86 IN isochronous, 192 bytes, interval 1" in lines
    written: list[str] = []
    assert await print_attached(FakeHub(fake), written.append) == written == [text]
    fake.detach()
    gone = await print_attached(FakeHub(fake), written.append)
    assert gone[0].startswith("Bus 003 Device 001: ID 2b23:cdcd (no name)\n")  # cached descriptors, no strings


async def test_demo_watches_the_hub() -> None:
    class Hub(FakeHub):
        def __init__(self) -> None:
            super().__init__()
            self.attach: list[Callable[[Any], object]] = []
            self.detach: list[Callable[[Any], object]] = []

        def on_attach(self, cb: Callable[[Any], object]) -> Callable[[], None]:
            self.attach.append(cb)
            return lambda: self.attach.remove(cb)

        def on_detach(self, cb: Callable[[Any], object]) -> Callable[[], None]:
            self.detach.append(cb)
            return lambda: self.detach.remove(cb)

    hub = Hub()
    fake = FakeUsbDevice(asyncio.get_running_loop(), ISO)
    written: list[str] = []
    stop = watch_usb(hub, written.append)
    hub.devices.append(fake)
    for cb in hub.attach:
        cb(fake)
    await wait_until(lambda: written)
    assert written[0].startswith("Bus 000 Device 001: ID 2b23:cdcd spiceserver tests Fake CD")
    for cb in hub.detach:
        cb(fake)
    assert written[1] == "USB 2b23:cdcd left usbredir channel 0"
    stop()
    assert hub.attach == hub.detach == []


async def test_a_stuck_or_closed_loop() -> None:
    """The thread gives up (ETIMEDOUT) when the loop does not answer within timeout + margin, and a
    closed loop means the device is gone (ENODEV)."""
    fake, _ = setup()
    backend = UsbRedirBackend(FakeHub(fake), margin=0.05)
    release = asyncio.Event()

    async def stuck(*_args: Any) -> bytes:
        await release.wait()  # ignores its timeout, as a loop too busy to run it would
        return b""

    fake.bulk_in = stuck  # type: ignore[method-assign]
    dev = await in_thread(lambda: usb.core.find(idVendor=fu.VID, backend=backend))

    def timed_out() -> BaseException:
        dev.set_configuration()
        with pytest.raises(usb.core.USBTimeoutError) as err:
            dev.read(fu.BULK_IN, 512, 50)
        return err.value

    assert (await in_thread(timed_out)).errno == errno.ETIMEDOUT
    release.set()

    other = asyncio.new_event_loop()
    other.close()
    fake.loop = other
    with pytest.raises(usb.core.USBError) as gone:
        await in_thread(lambda: dev.read(fu.BULK_IN, 512, 50))
    assert gone.value.errno == errno.ENODEV
