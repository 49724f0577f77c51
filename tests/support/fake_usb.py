"""A fake redirected USB device of the contract's shape, and a host-side bulk-only mass-storage client.

:class:`FakeUsbDevice` has the attributes and coroutines of
:class:`spiceserver.channels.usb_device.RedirectedUsbDevice` (transfers on its loop only, usbredir
status errors, :class:`~spiceserver.channels.usb_device.UsbDeviceGone` after :meth:`FakeUsbDevice.detach`)
and models a small device:

* interface 0: a bulk-only mass-storage CD-ROM (class 08/06/50) on bulk OUT 0x02 / IN 0x81 (512
  bytes), answering TEST UNIT READY, REQUEST SENSE, INQUIRY, READ CAPACITY(10) and READ(10) of an
  in-memory "ISO" (2048-byte blocks). Like spice-gtk's emulated CD (``cd-scsi.c``) the first
  command that needs the medium fails with CHECK CONDITION, sense UNIT ATTENTION / 0x28 (medium
  may have changed). It keeps one
  bulk request at a time, as spice-gtk's ``cd-usb-bulk-msd.c`` does: an overlapping one fails the
  test (:attr:`FakeUsbDevice.overlaps`); so does a data read longer than the CBW's length or a CSW
  read shorter than 13 bytes (:attr:`FakeUsbDevice.too_long`, spice-gtk ``cd-usb-bulk-msd.c`` asserts
  or fails). A failed command's data stage is a zero-length packet, then the CSW.
* interface 1: vendor class; alt 0 has interrupt IN 0x83 (packets queued with
  :meth:`FakeUsbDevice.push_interrupt`) and interrupt OUT 0x04; alt 1 adds iso OUT 0x05 and iso IN
  0x86 (an echo). A class-specific descriptor follows the interface (``extra_descriptors``).
* control: GET_DESCRIPTOR device / config / string (langid 0x0409, manufacturer, product, serial),
  GET_STATUS, CLEAR_FEATURE(ENDPOINT_HALT) (counted), vendor IN 0xC0/0x01 (``b"vendor"``),
  vendor OUT 0x40/0x02 (kept); everything else stalls. SET/GET_CONFIGURATION and SET/GET_INTERFACE
  go through the dedicated coroutines as the real device maps them.

The host-side helpers (:func:`bot_command`, :func:`inquiry`, :func:`read_blocks`) drive any pyusb
``usb.core.Device`` over bulk-only transport (USB Mass Storage Class BOT 1.0: CBW 31 bytes, CSW 13
bytes), one request at a time.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from typing import Any

from spiceserver.channels.usb_device import UsbDeviceGone, UsbEndpointInfo, UsbInterfaceInfo, UsbTransferError

BLOCK = 2048
BULK_OUT, BULK_IN, INTR_IN, INTR_OUT, ISO_OUT, ISO_IN = 0x02, 0x81, 0x83, 0x04, 0x05, 0x86
VID, PID = 0x2B23, 0xCDCD
STRINGS = {1: "spiceserver tests", 2: "Fake CD", 3: "0001"}
STALL, TIMEOUT = 4, 5
CLASS_SPECIFIC = bytes([5, 0x24, 0x01, 0x10, 0x01])  # a class-specific descriptor (extra bytes)


def device_descriptor() -> bytes:
    """USB 2.0, 64-byte EP0, strings 1/2/3, one configuration."""
    return struct.pack("<BBHBBBBHHHBBBB", 18, 1, 0x0200, 0, 0, 0, 64, VID, PID, 0x0100, 1, 2, 3, 1)


def config_descriptor() -> bytes:
    """Configuration 1: interface 0 (mass storage, bulk 0x02/0x81), interface 1 alt 0 (interrupt
    0x83/0x04) and alt 1 (the same plus iso 0x05/0x86)."""

    def ep(addr: int, attrs: int, size: int, interval: int) -> bytes:
        return struct.pack("<BBBBHB", 7, 5, addr, attrs, size, interval)

    body = struct.pack("<9B", 9, 4, 0, 0, 2, 0x08, 0x06, 0x50, 0) + ep(BULK_OUT, 2, 512, 0) + ep(BULK_IN, 2, 512, 0)
    body += struct.pack("<9B", 9, 4, 1, 0, 2, 0xFF, 0, 0, 0) + CLASS_SPECIFIC
    body += ep(INTR_IN, 3, 8, 4) + ep(INTR_OUT, 3, 8, 4)
    body += struct.pack("<9B", 9, 4, 1, 1, 4, 0xFF, 0, 0, 0)
    body += ep(INTR_IN, 3, 8, 4) + ep(INTR_OUT, 3, 8, 4) + ep(ISO_OUT, 1, 192, 1) + ep(ISO_IN, 1, 192, 1)
    return struct.pack("<BBHBBBBB", 9, 2, 9 + len(body), 2, 1, 0, 0x80, 50) + body


def string_descriptor(text: str) -> bytes:
    data = text.encode("utf-16-le")
    return bytes([2 + len(data), 3]) + data


class FakeUsbDevice:
    """A fake redirected device (see the module docstring).

    Args:
        loop: the loop every coroutine must run on.
        iso: the medium's bytes (padded to whole blocks).
        channel_id: the usbredir channel id it pretends to come from.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, iso: bytes = b"", channel_id: int = 0) -> None:
        self.loop = loop
        self.channel_id = channel_id
        self.speed = 2
        self.vendor_id, self.product_id, self.device_version_bcd = VID, PID, 0x0100
        self.device_class = self.device_subclass = self.device_protocol = 0
        self.interfaces = (UsbInterfaceInfo(0, 8, 6, 0x50), UsbInterfaceInfo(1, 0xFF, 0, 0))
        self.endpoints = {
            e.address: e
            for e in (
                UsbEndpointInfo(BULK_OUT, 2, 0, 0, 512, 0),
                UsbEndpointInfo(BULK_IN, 2, 0, 0, 512, 0),
                UsbEndpointInfo(INTR_IN, 3, 4, 1, 8, 0),
                UsbEndpointInfo(INTR_OUT, 3, 4, 1, 8, 0),
            )
        }
        self.device_descriptor = device_descriptor()
        self.config_descriptors = (config_descriptor(),)
        self.configuration = 0
        self.attached = True
        self.gone = False
        pad = -len(iso) % BLOCK
        self.iso = iso + bytes(pad)
        self.alt = {0: 0, 1: 0}
        self.unit_attention = True
        self.sense = (0, 0, 0)
        self.reply: deque[bytes] = deque()  # bulk IN answers queued by the last CBW
        self.busy = False  # a bulk request is outstanding
        self.overlaps = 0
        self.expected = 0  # the last CBW's data-in length
        self.too_long = 0  # bulk IN requests spice-gtk's emulated CD would abort on
        self.commands: list[int] = []  # SCSI opcodes seen
        self.cleared_halts: list[int] = []
        self.resets = 0
        self.rejected = False
        self.vendor_out: list[bytes] = []
        self.interrupt_out_data: list[bytes] = []
        self.interrupts: asyncio.Queue[bytes] = asyncio.Queue()
        self.iso_loop: asyncio.Queue[bytes] = asyncio.Queue()
        self._gone_event = asyncio.Event()

    def __repr__(self) -> str:
        return f"<FakeUsbDevice {self.vendor_id:04x}:{self.product_id:04x}>"

    # --- the test's handles ---------------------------------------------------------------------

    def detach(self) -> None:
        """The device leaves: pending and later transfers raise UsbDeviceGone."""
        self.gone = True
        self.attached = False
        self._gone_event.set()

    def push_interrupt(self, data: bytes) -> None:
        """Queue an interrupt IN packet on 0x83 (loop thread)."""
        self.interrupts.put_nowait(data)

    # --- helpers --------------------------------------------------------------------------------

    def _check(self) -> None:
        if self.gone:
            raise UsbDeviceGone()
        if asyncio.get_running_loop() is not self.loop:
            raise RuntimeError("FakeUsbDevice transfers run on its loop")

    async def _wait(self, aw: Any, timeout: float | None) -> Any:
        """``aw`` unless the device goes (UsbDeviceGone) or ``timeout`` passes (status 5)."""
        task = asyncio.ensure_future(aw)
        gone = asyncio.ensure_future(self._gone_event.wait())
        try:
            done, _ = await asyncio.wait({task, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                return task.result()
            if gone in done:
                raise UsbDeviceGone()
            raise UsbTransferError(TIMEOUT, f"timed out after {timeout} s")
        finally:
            for t in (task, gone):
                if not t.done():
                    t.cancel()

    # --- control --------------------------------------------------------------------------------

    async def control(
        self,
        request_type: int,
        request: int,
        value: int,
        index: int,
        data_or_length: bytes | int,
        timeout: float | None = None,
    ) -> bytes | int:
        self._check()
        await asyncio.sleep(0)
        if request_type == 0x00 and request == 9:
            await self.set_configuration(value & 0xFF)
            return 0
        if request_type == 0x80 and request == 8:
            return bytes([await self.get_configuration()])
        if request_type == 0x01 and request == 11:
            await self.set_alt_setting(index, value)
            return 0
        if request_type == 0x81 and request == 10:
            return bytes([await self.get_alt_setting(index)])
        if request_type & 0x80:
            assert isinstance(data_or_length, int)
            return self._control_in(request_type, request, value, index)[:data_or_length]
        assert isinstance(data_or_length, bytes | bytearray)
        if request_type == 0x02 and request == 1 and value == 0:  # CLEAR_FEATURE(ENDPOINT_HALT)
            self.cleared_halts.append(index)
            return 0
        if request_type == 0x40 and request == 2:
            self.vendor_out.append(bytes(data_or_length))
            return len(data_or_length)
        raise UsbTransferError(STALL, "stall")

    def _control_in(self, request_type: int, request: int, value: int, index: int) -> bytes:
        if request_type == 0x80 and request == 6:  # GET_DESCRIPTOR
            kind, idx = value >> 8, value & 0xFF
            if kind == 1:
                return self.device_descriptor
            if kind == 2 and idx < len(self.config_descriptors):
                return self.config_descriptors[idx]
            if kind == 3 and idx == 0:
                return bytes([4, 3, 0x09, 0x04])
            if kind == 3 and idx in STRINGS and index == 0x0409:
                return string_descriptor(STRINGS[idx])
        if request_type == 0x80 and request == 0:  # GET_STATUS
            return b"\x00\x00"
        if request_type == 0xC0 and request == 1:
            return b"vendor"
        raise UsbTransferError(STALL, "stall")

    # --- configuration --------------------------------------------------------------------------

    async def set_configuration(self, value: int, timeout: float | None = None) -> None:
        self._check()
        await asyncio.sleep(0)
        if value not in (0, 1):
            raise UsbTransferError(STALL, f"no configuration {value}")
        self.configuration = value
        self.alt = {0: 0, 1: 0}

    async def get_configuration(self, timeout: float | None = None) -> int:
        self._check()
        await asyncio.sleep(0)
        return self.configuration

    async def set_alt_setting(self, interface: int, alt: int, timeout: float | None = None) -> None:
        self._check()
        await asyncio.sleep(0)
        if (interface, alt) not in ((0, 0), (1, 0), (1, 1)):
            raise UsbTransferError(STALL, f"no alt setting {interface}/{alt}")
        self.alt[interface] = alt

    async def get_alt_setting(self, interface: int, timeout: float | None = None) -> int:
        self._check()
        await asyncio.sleep(0)
        if interface not in self.alt:
            raise UsbTransferError(2, f"no interface {interface}")
        return self.alt[interface]

    async def reset(self) -> None:
        self._check()
        self.resets += 1
        self.unit_attention = True
        self.reply.clear()

    def reject(self) -> None:
        self.rejected = True
        self.detach()

    # --- bulk: bulk-only transport --------------------------------------------------------------

    async def bulk_out(self, endpoint: int, data: bytes, timeout: float | None = None) -> int:
        self._check()
        if endpoint != BULK_OUT:
            raise UsbTransferError(STALL, f"no bulk OUT {endpoint:#x}")
        async with self._one_at_a_time():
            await asyncio.sleep(0)
            self._command(bytes(data))
            return len(data)

    async def bulk_in(self, endpoint: int, length: int, timeout: float | None = None) -> bytes:
        self._check()
        if endpoint != BULK_IN:
            raise UsbTransferError(STALL, f"no bulk IN {endpoint:#x}")
        async with self._one_at_a_time():
            if not self.reply:
                await self._wait(asyncio.Event().wait(), timeout)  # nothing to answer: only a timeout ends it
            if len(self.reply) > 1 and length > self.expected:  # spice-gtk asserts max_len <= usb_req_len
                self.too_long += 1
                raise UsbTransferError(3, f"bulk IN of {length} bytes for a command expecting {self.expected}")
            if len(self.reply) == 1 and length < 13:  # ... and a CSW read of 13 bytes at least
                self.too_long += 1
                raise UsbTransferError(3, f"CSW read of {length} bytes")
            chunk = self.reply.popleft()
            if len(chunk) > length:
                self.reply.appendleft(chunk[length:])
                chunk = chunk[:length]
            return chunk

    def _one_at_a_time(self) -> _Busy:
        return _Busy(self)

    def _command(self, cbw: bytes) -> None:
        if len(cbw) != 31 or cbw[:4] != b"USBC":
            raise UsbTransferError(STALL, "not a CBW")
        tag, expected, flags, _lun, cb_len = struct.unpack_from("<IIBBB", cbw, 4)
        cdb = cbw[15 : 15 + cb_len]
        op = cdb[0]
        self.commands.append(op)
        data, status = b"", 0
        if op == 0x03:  # REQUEST SENSE
            key, asc, ascq = self.sense
            data = bytes([0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0])
            self.sense = (0, 0, 0)
        elif op == 0x12:  # INQUIRY
            data = bytes([5, 0x80, 5, 2, 31, 0, 0, 0]) + b"spicesrv" + b"Fake CD".ljust(16) + b"0.1 "
        elif op in (0x00, 0x25, 0x28) and self.unit_attention:
            self.unit_attention = False
            self.sense = (6, 0x28, 0)
            status = 1
        elif op == 0x00:  # TEST UNIT READY
            pass
        elif op == 0x25:  # READ CAPACITY(10)
            data = struct.pack(">II", len(self.iso) // BLOCK - 1, BLOCK)
        elif op == 0x28:  # READ(10)
            lba, count = struct.unpack_from(">IxH", cdb, 2)
            if (lba + count) * BLOCK > len(self.iso):
                self.sense = (5, 0x21, 0)  # ILLEGAL REQUEST, LBA out of range
                status = 1
            else:
                data = self.iso[lba * BLOCK : (lba + count) * BLOCK]
        else:
            self.sense = (5, 0x20, 0)  # ILLEGAL REQUEST, invalid command
            status = 1
        self.expected = expected if flags & 0x80 else 0
        if status == 0 and flags & 0x80:
            data = data[:expected]
            if data:
                self.reply.append(data)
            residue = expected - len(data)
        else:
            residue = expected
            if flags & 0x80 and expected:
                self.reply.append(b"")  # a failed command's data stage: a zero-length packet
        self.reply.append(b"USBS" + struct.pack("<IIB", tag, residue, status))

    # --- interrupt and iso ------------------------------------------------------------------------

    async def interrupt_out(self, endpoint: int, data: bytes, timeout: float | None = None) -> int:
        self._check()
        if endpoint != INTR_OUT:
            raise UsbTransferError(STALL, f"no interrupt OUT {endpoint:#x}")
        await asyncio.sleep(0)
        self.interrupt_out_data.append(bytes(data))
        return len(data)

    async def interrupt_in(self, endpoint: int, length: int, timeout: float | None = None) -> bytes:
        self._check()
        if endpoint | 0x80 != INTR_IN:
            raise UsbTransferError(STALL, f"no interrupt IN {endpoint:#x}")
        data: bytes = await self._wait(self.interrupts.get(), timeout)
        return data[:length]

    async def iso_out(self, endpoint: int, data: bytes, timeout: float | None = None) -> int:
        self._check()
        if endpoint != ISO_OUT or self.alt[1] != 1:
            raise UsbTransferError(STALL, f"no iso OUT {endpoint:#x} in alt {self.alt[1]}")
        self.iso_loop.put_nowait(bytes(data))
        return len(data)

    async def iso_in(self, endpoint: int, length: int, timeout: float | None = None) -> bytes:
        self._check()
        if endpoint | 0x80 != ISO_IN or self.alt[1] != 1:
            raise UsbTransferError(STALL, f"no iso IN {endpoint:#x} in alt {self.alt[1]}")
        data: bytes = await self._wait(self.iso_loop.get(), timeout)
        return data[:length]


class _Busy:
    """One bulk request at a time, as spice-gtk's emulated CD requires (overlaps are counted)."""

    def __init__(self, dev: FakeUsbDevice) -> None:
        self.dev = dev

    async def __aenter__(self) -> None:
        if self.dev.busy:
            self.dev.overlaps += 1
            raise UsbTransferError(3, "a bulk request is already outstanding")
        self.dev.busy = True

    async def __aexit__(self, *exc: object) -> None:
        self.dev.busy = False


class FakeHub:
    """The hub's ``devices`` for the backend: a plain list the test fills."""

    def __init__(self, *devices: Any) -> None:
        self.devices: list[Any] = list(devices)


# --- host side: bulk-only transport over pyusb -------------------------------------------------------


class CommandFailed(Exception):
    """A SCSI command ended with a CSW status other than 0 (``status``, and the sense it left)."""

    def __init__(self, op: int, status: int, sense: tuple[int, int, int] | None = None) -> None:
        super().__init__(f"SCSI {op:#04x}: CSW status {status}, sense {sense}")
        self.op, self.status, self.sense = op, status, sense


_tags = iter(range(1, 1 << 32))


def bot_command(
    dev: Any, cdb: bytes, data_in: int = 0, out_ep: int = BULK_OUT, in_ep: int = BULK_IN, timeout: int = 5000
) -> tuple[int, bytes]:
    """One bulk-only command (no data or data IN): write the CBW, read the data, read the CSW.

    Returns:
        (the CSW status, the data read). A device that skips the data stage after a failure (its
        CSW comes in the place of the data) is handled.
    """
    tag = next(_tags)
    cbw = b"USBC" + struct.pack("<IIBBB", tag, data_in, 0x80 if data_in else 0, 0, len(cdb)) + cdb.ljust(16, b"\0")
    assert dev.write(out_ep, cbw, timeout) == 31
    data = b""
    csw = None
    if data_in:
        got = bytes(dev.read(in_ep, data_in, timeout))
        if len(got) == 13 and got[:4] == b"USBS" and struct.unpack_from("<I", got, 4)[0] == tag:
            csw = got
        else:
            data = got
    if csw is None:
        csw = bytes(dev.read(in_ep, 13, timeout))
    sig, got_tag, _residue, status = struct.unpack("<4sIIB", csw[:13])
    assert sig == b"USBS" and got_tag == tag, csw
    return status, data


def request_sense(dev: Any, **kw: Any) -> tuple[int, int, int]:
    """REQUEST SENSE: (sense key, ASC, ASCQ)."""
    status, data = bot_command(dev, bytes([0x03, 0, 0, 0, 18, 0]), 18, **kw)
    assert status == 0 and len(data) >= 14, (status, data)
    return data[2] & 0x0F, data[12], data[13]


def scsi(dev: Any, cdb: bytes, data_in: int = 0, senses: list[tuple[int, int, int]] | None = None, **kw: Any) -> bytes:
    """A command, retried once after a UNIT ATTENTION (read with REQUEST SENSE; appended to ``senses``).

    Raises:
        CommandFailed: it failed otherwise.
    """
    for attempt in range(2):
        status, data = bot_command(dev, cdb, data_in, **kw)
        if status == 0:
            return data
        sense = request_sense(dev, **kw)
        if senses is not None:
            senses.append(sense)
        if sense[0] != 6 or attempt:
            raise CommandFailed(cdb[0], status, sense)
    raise AssertionError("unreachable")


def inquiry(dev: Any, **kw: Any) -> tuple[int, str, str]:
    """INQUIRY: (peripheral device type, vendor, product)."""
    data = scsi(dev, bytes([0x12, 0, 0, 0, 36, 0]), 36, **kw)
    return data[0] & 0x1F, data[8:16].decode("ascii").strip(), data[16:32].decode("ascii").strip()


def read_blocks(dev: Any, lba: int, count: int = 1, block: int = BLOCK, **kw: Any) -> bytes:
    """READ(10) of ``count`` blocks at ``lba``."""
    cdb = struct.pack(">BBIBHB", 0x28, 0, lba, 0, count, 0)
    return scsi(dev, cdb, count * block, **kw)
