"""A scripted usbredir usb-host (the part spice-gtk's usbredirhost plays) over the SPICE test client.

:class:`FakeUsbHost` speaks usbredir through :class:`spiceserver.proto.usbredir.UsbRedirConnection`
in the HOST role, inside SPICEVMC_DATA messages of a linked USBREDIR channel
(:class:`tests.support.client.ClientChannel`), and emulates one small device:

* vendor/product ``vid:pid`` (default 1234:5678), one configuration with one vendor-class interface
  and three endpoints: bulk OUT 0x02, bulk IN 0x81 (512 bytes), interrupt IN 0x83 (8 bytes);
* control: GET_DESCRIPTOR (device, config), a vendor OUT request (0x40/0x01) stored in
  :attr:`FakeUsbHost.control_out`, a vendor IN request (0xc0/0x02) answering ``b"vendor"``;
  anything else stalls;
* bulk: what is written to 0x02 is read back from 0x81 (an empty store answers 0 bytes) unless
  :attr:`FakeUsbHost.hold_bulk_in` is set: then IN requests wait, and a cancel_data_packet answers
  them with status cancelled;
* interrupt IN 0x83: after start_interrupt_receiving, :meth:`FakeUsbHost.interrupt` sends packets;
* bulk receiving on 0x81: start_bulk_receiving is answered with bulk_receiving_status
  (:attr:`FakeUsbHost.bulk_receiving_answer`: success, another status, or None for no answer) and
  recorded in :attr:`FakeUsbHost.bulk_receiving`; :meth:`FakeUsbHost.buffered_bulk` then streams
  buffered_bulk_packet data; stop_bulk_receiving is answered with success (as usbredirhost does);
* :attr:`FakeUsbHost.mute`: answer nothing at all (a device that never answers);
* set/get configuration and alt setting answered from its state.

Every packet the guest (the server) sends is kept in :attr:`FakeUsbHost.packets`; tests wait on
them with :meth:`FakeUsbHost.wait_for`.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

from spiceserver.channels.spicevmc_lz4 import decompress_vmc
from spiceserver.proto import usbredir_messages as m
from spiceserver.proto.messages import spicevmc as vm
from spiceserver.proto.usbredir import HOST, HOST_CAPS, Packet, UsbRedirConnection
from tests.support.client import ClientChannel

BULK_OUT, BULK_IN, INTR_IN = 0x02, 0x81, 0x83
CHUNK = 32 << 10


def device_descriptor(vid: int, pid: int, bcd: int = 0x0100, configs: int = 1) -> bytes:
    """An 18-byte USB 2.0 device descriptor."""
    return struct.pack("<BBHBBBBHHHBBBB", 18, 1, 0x0200, 0, 0, 0, 64, vid, pid, bcd, 0, 0, 0, configs)


def config_descriptor(value: int = 1) -> bytes:
    """A config descriptor: one vendor interface, bulk 0x02 / 0x81 and interrupt 0x83."""
    iface = struct.pack("<BBBBBBBBB", 9, 4, 0, 0, 3, 0xFF, 0x00, 0x00, 0)
    eps = struct.pack("<BBBBHB", 7, 5, BULK_OUT, 2, 512, 0)
    eps += struct.pack("<BBBBHB", 7, 5, BULK_IN, 2, 512, 0)
    eps += struct.pack("<BBBBHB", 7, 5, INTR_IN, 3, 8, 10)
    body = iface + eps
    return struct.pack("<BBHBBBBB", 9, 2, 9 + len(body), 1, value, 0, 0x80, 50) + body


def ep_info(extra_bulk_in: tuple[int, ...] = ()) -> m.EpInfo:
    """ep_info of the emulated device (plus bulk IN endpoints ``extra_bulk_in``, in ep_info only)."""
    types = [255] * 32
    interval = [0] * 32
    iface = [0] * 32
    mps = [0] * 32
    for ep, kind, size, ival in (
        (0x00, 0, 64, 0),
        (0x80, 0, 64, 0),
        (BULK_OUT, 2, 512, 0),
        (BULK_IN, 2, 512, 0),
        (INTR_IN, 3, 8, 10),
        *((ep, 2, 512, 0) for ep in extra_bulk_in),
    ):
        i = m.ep_index(ep)
        types[i], mps[i], interval[i] = kind, size, ival
    return m.EpInfo(tuple(types), tuple(interval), tuple(iface), tuple(mps), (0,) * 32)


class FakeUsbHost:
    """The usb-host end of a usbredir channel, with one emulated device (see the module docstring).

    Args:
        ch: the linked USBREDIR channel of the test client.
        vid: the device's vendor id.
        pid: the device's product id.
        device_class: bDeviceClass in device_connect.
        interface_class: the interface's class in interface_info.
        caps: the host's usbredir caps.
        lz4: send client data above 1000 bytes as SPICEVMC_COMPRESSED_DATA.
        extra_bulk_in: more bulk IN endpoints announced in ep_info (nothing answers on them).
    """

    def __init__(
        self,
        ch: ClientChannel,
        vid: int = 0x1234,
        pid: int = 0x5678,
        device_class: int = 0,
        interface_class: int = 0xFF,
        caps: int = HOST_CAPS,
        lz4: bool = False,
        extra_bulk_in: tuple[int, ...] = (),
    ) -> None:
        self.ch = ch
        self.vid, self.pid = vid, pid
        self.device_class = device_class
        self.interface_class = interface_class
        self.lz4 = lz4
        self.extra_bulk_in = extra_bulk_in
        self.conn = UsbRedirConnection(HOST, "fake usb host", caps)
        self.packets: list[Packet] = []
        self.bulk_store = bytearray()
        self.control_out: list[bytes] = []
        self.hold_bulk_in = False
        self.held: dict[int, m.BulkPacket] = {}
        self.configuration = 1
        self.alt: dict[int, int] = {0: 0}
        self.interrupt_started: set[int] = set()
        self.iso_started: set[int] = set()
        self.iso_out = bytearray()
        self.closed = False
        self.compressed_received = 0
        self.mute = False
        #: endpoint -> the start_bulk_receiving in force
        self.bulk_receiving: dict[int, m.StartBulkReceiving] = {}
        self.bulk_receiving_answer: int | None = 0
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- running ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Send our hello and start answering the server."""
        await self._flush()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop answering."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _run(self) -> None:
        try:
            while True:
                msg = await self.ch.recv(timeout=3600)
                if isinstance(msg, vm.SpicevmcCompressedData):
                    self.compressed_received += 1
                    data = decompress_vmc(msg)
                elif isinstance(msg, vm.SpicevmcData):
                    data = msg.data
                else:
                    continue
                for packet in self.conn.receive_data(data):
                    self.packets.append(packet)
                    self._answer(packet.id, packet.msg)
                await self._flush()
                self.changed.set()
        except (EOFError, ConnectionError, OSError):
            self.closed = True
            self.changed.set()

    async def _flush(self) -> None:
        data = self.conn.data_to_send()
        for i in range(0, len(data), CHUNK):
            piece = data[i : i + CHUNK]
            if self.lz4 and len(piece) > 1000:
                import lz4.block  # type: ignore[import-untyped]

                packed = lz4.block.compress(piece, store_size=False)
                await self.ch.send(
                    vm.ClientSpicevmcCompressedData(type=1, uncompressed_size=len(piece), compressed_data=packed)
                )
            else:
                await self.ch.send(vm.ClientSpicevmcData(data=piece))

    async def send(self, msg: m.UsbRedirMessage, id: int = 0) -> None:
        """Send one packet to the server."""
        self.conn.send(msg, id)
        await self._flush()

    async def send_many(self, msgs: list[m.UsbRedirMessage]) -> None:
        """Several packets (id 0) at once: up to 32 KiB of them go in one SPICEVMC message, parsed in one go."""
        for msg in msgs:
            self.conn.send(msg, 0)
        await self._flush()

    async def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (bad input tests)."""
        await self.ch.send(vm.ClientSpicevmcData(data=data))

    async def wait_for(self, pred: Callable[[], Any], timeout: float = 10.0) -> None:
        """Wait until ``pred()`` holds (re-checked on every packet from the server)."""

        async def loop() -> None:
            while not pred():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)

    def of(self, cls: type[m.UsbRedirMessage]) -> list[Packet]:
        """The packets of one type the server sent."""
        return [p for p in self.packets if isinstance(p.msg, cls)]

    # --- the device -----------------------------------------------------------------------------------

    async def connect_device(self) -> None:
        """interface_info, ep_info, device_connect (spice-gtk's order)."""
        self.conn.send(m.InterfaceInfo((0,), (self.interface_class,), (0,), (0,)))
        self.conn.send(ep_info(self.extra_bulk_in))
        self.conn.send(m.DeviceConnect(m.Speed.HIGH, self.device_class, 0, 0, self.vid, self.pid, 0x0100))
        await self._flush()

    async def disconnect_device(self) -> None:
        """device_disconnect."""
        await self.send(m.DeviceDisconnect())

    async def interrupt(self, data: bytes, endpoint: int = INTR_IN, status: int = 0) -> None:
        """An interrupt IN packet (receiving must have been started)."""
        await self.send(m.InterruptPacket(endpoint, status, len(data), data))

    async def iso(self, data: bytes, endpoint: int = 0x85, status: int = 0) -> None:
        """An iso IN packet (the stream must have been started)."""
        await self.send(m.IsoPacket(endpoint, status, len(data), data))

    async def buffered_bulk(self, data: bytes, endpoint: int = BULK_IN, status: int = 0) -> None:
        """A buffered_bulk_packet (bulk receiving must have been started)."""
        await self.send(m.BufferedBulkPacket(0, len(data), endpoint, status, data))

    def _answer(self, id: int, msg: m.UsbRedirMessage) -> None:
        send = self.conn.send
        if self.mute:
            return
        if isinstance(msg, m.ControlPacket):
            send(self._control(msg), id)
        elif isinstance(msg, m.GetConfiguration):
            send(m.ConfigurationStatus(0, self.configuration), id)
        elif isinstance(msg, m.SetConfiguration):
            self.configuration = msg.configuration
            send(m.ConfigurationStatus(0, self.configuration), id)
        elif isinstance(msg, m.SetAltSetting):
            ok = msg.interface in self.alt
            if ok:
                self.alt[msg.interface] = msg.alt
            send(m.AltSettingStatus(0 if ok else m.Status.INVAL, msg.interface, msg.alt), id)
        elif isinstance(msg, m.GetAltSetting):
            ok = msg.interface in self.alt
            send(m.AltSettingStatus(0 if ok else m.Status.INVAL, msg.interface, self.alt.get(msg.interface, 0)), id)
        elif isinstance(msg, m.BulkPacket):
            if msg.endpoint & 0x80:
                if self.hold_bulk_in:
                    self.held[id] = msg
                    return
                data = bytes(self.bulk_store[: msg.length])
                del self.bulk_store[: len(data)]
                send(m.BulkPacket(msg.endpoint, 0, len(data), msg.stream_id, data), id)
            else:
                self.bulk_store += msg.data
                send(m.BulkPacket(msg.endpoint, 0, len(msg.data), msg.stream_id), id)
        elif isinstance(msg, m.InterruptPacket):  # OUT
            send(m.InterruptPacket(msg.endpoint, 0, len(msg.data)), id)
        elif isinstance(msg, m.StartInterruptReceiving):
            self.interrupt_started.add(msg.endpoint)
            send(m.InterruptReceivingStatus(0, msg.endpoint), id)
        elif isinstance(msg, m.StartIsoStream):
            self.iso_started.add(msg.endpoint)
            send(m.IsoStreamStatus(0, msg.endpoint), id)
        elif isinstance(msg, m.StartBulkReceiving):
            if self.bulk_receiving_answer == 0:
                self.bulk_receiving[msg.endpoint] = msg
            if self.bulk_receiving_answer is not None:
                send(m.BulkReceivingStatus(0, msg.endpoint, self.bulk_receiving_answer), id)
        elif isinstance(msg, m.StopBulkReceiving):
            self.bulk_receiving.pop(msg.endpoint, None)
            send(m.BulkReceivingStatus(0, msg.endpoint, 0), id)
        elif isinstance(msg, m.IsoPacket):  # OUT: no answer in usbredir
            self.iso_out += msg.data
        elif isinstance(msg, m.CancelDataPacket):
            held = self.held.pop(id, None)
            if held is not None:
                send(m.BulkPacket(held.endpoint, m.Status.CANCELLED, 0, held.stream_id), id)

    def _control(self, msg: m.ControlPacket) -> m.ControlPacket:
        def reply(status: int, data: bytes = b"", length: int | None = None) -> m.ControlPacket:
            n = len(data) if length is None else length
            return m.ControlPacket(msg.endpoint, msg.request, msg.requesttype, status, msg.value, msg.index, n, data)

        if msg.requesttype == 0x80 and msg.request == 6:
            kind, index = msg.value >> 8, msg.value & 0xFF
            if kind == 1:
                return reply(0, device_descriptor(self.vid, self.pid)[: msg.length])
            if kind == 2 and index == 0:
                return reply(0, config_descriptor()[: msg.length])
        if msg.requesttype == 0x40 and msg.request == 1:
            self.control_out.append(msg.data)
            return reply(0, length=len(msg.data))
        if msg.requesttype == 0xC0 and msg.request == 2:
            return reply(0, b"vendor"[: msg.length])
        return reply(m.Status.STALL, length=0)
