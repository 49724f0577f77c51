"""A USB device a SPICE client redirected: its descriptors, and async transfers over usbredir.

The usb-guest half of QEMU ``hw/usb/redirect.c`` (``usbredir_handle_data``, ``usbredir_handle_control``,
``usbredir_configuration_status``, ``usbredir_interrupt_packet``, ``usbredir_reject_device``), on
the messages of :mod:`spiceserver.proto.usbredir`. The channel
(:mod:`spiceserver.channels.usbredir`) builds one :class:`RedirectedUsbDevice` per device_connect,
fetches its descriptors (:meth:`RedirectedUsbDevice.prepare`) and only then announces it to the
host's ``on_attach`` callbacks.

Transfers (every coroutine runs on the server's loop, :attr:`RedirectedUsbDevice.loop`):

* **One request id per transfer**; the client's reply carries the same id and completes it. The
  ids count up per channel connection (64-bit once both peers have ``64bits_ids``, else they wrap
  at 2**32).
* **Status.** A reply with a status other than success raises :class:`UsbTransferError` (its
  ``status`` is the usbredir status: 1 cancelled, 2 inval, 3 ioerror, 4 stall, 5 timeout, 6 babble).
* **Timeouts.** ``timeout`` seconds (``None``: no limit). On expiry a data transfer is cancelled
  (cancel_data_packet with its id; the late reply is dropped) and :class:`UsbTransferError` with
  status 5 (timeout) is raised. A caller cancelling the coroutine cancels the transfer the same way.
  Every call waiting for the client takes a timeout; without one it still ends when the device
  or its client leaves (below): no call waits forever on a device that never answers.
* **Replies nobody waits for** (a late reply after a timeout, an id never used) are dropped with a
  debug log and counted by the channel; nothing is kept for them. usbredirhost answers a cancelled
  transfer with a "cancelled" reply, so such replies are normal and do not close the client.
* **Detach.** device_disconnect, :meth:`~RedirectedUsbDevice.reject` or the client leaving fail
  every pending transfer with :class:`UsbDeviceGone` (status -1); later calls raise it at once.
* **Control.** The standard requests QEMU turns into usbredir messages are mapped the same way:
  SET_CONFIGURATION, GET_CONFIGURATION, SET_INTERFACE and GET_INTERFACE become
  set/get_configuration and set/get_alt_setting (their results come back as the control transfer's).
* **Interrupt IN** starts interrupt receiving on the endpoint at first use; the client then sends
  the endpoint's packets unasked and they wait in a buffer of at most :data:`IN_BUFFER_PACKETS`
  packets and :data:`IN_BUFFER_BYTES` bytes (older ones are dropped, counted in
  ``dropped_in_packets``). ``interrupt_in`` takes the oldest packet (at most ``length`` bytes of
  it). IN packets for an endpoint where nothing was started are dropped and counted the same way
  (QEMU ``usbredir_interrupt_packet`` ignores them too), so a client flooding them holds no memory.
* **Bulk receiving** (usbredir cap ``bulk_receiving``; QEMU ``usbredir_handle_buffered_bulk_in_data``
  for high-rate bulk IN such as serial adapters): :meth:`~RedirectedUsbDevice.start_bulk_receiving`
  asks the client to keep ``transfers`` bulk IN transfers of ``bytes_per_transfer`` bytes running on
  an endpoint and waits for its bulk_receiving_status; the client then streams buffered_bulk_packet
  data unasked, kept in a buffer of at most :data:`BULK_IN_BUFFER_PACKETS` packets and
  :data:`BULK_IN_BUFFER_BYTES` bytes (older ones dropped, counted in ``dropped_in_packets``).
  While receiving runs, ``bulk_in(endpoint, length)`` is served from that buffer: it waits for data,
  then returns at most ``length`` bytes joined from as many buffered packets as there are (QEMU's
  raw mode); a packet read in part keeps its rest for the next read, a zero-length packet ends a
  read, and a packet with a failed status raises :class:`UsbTransferError` for the read that reaches
  it. A failed bulk_receiving_status ends receiving and fails the waiting readers; what is
  buffered can still be read, then ``bulk_in`` sends plain bulk_packet requests again, as it does
  after :meth:`~RedirectedUsbDevice.stop_bulk_receiving` (which drops the buffer and fails waiting
  readers with status cancelled). A client without the cap gets no such request:
  ``start_bulk_receiving`` raises :class:`UsbTransferError` with status inval.
* **Iso** is best effort: the first use starts an iso stream on the endpoint
  (``pkts_per_urb`` :data:`ISO_PKTS_PER_URB`, ``no_urbs`` :data:`ISO_NO_URBS`); ``iso_out`` queues the
  data and returns its length (usbredir sends no status for iso OUT); ``iso_in`` serves packets from
  the same kind of buffer as interrupt IN.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..proto import usbredir_messages as m
from ..proto.usbredir import MAX_BULK_TRANSFER
from .usb_in_stream import BULK_IN_BUFFER_BYTES, BULK_IN_BUFFER_PACKETS, IN_BUFFER_BYTES, IN_BUFFER_PACKETS, InStream

__all__ = [
    "UsbTransferError",
    "UsbDeviceGone",
    "UsbInterfaceInfo",
    "UsbEndpointInfo",
    "RedirectedUsbDevice",
    "DeviceLink",
    "IN_BUFFER_PACKETS",
    "IN_BUFFER_BYTES",
    "BULK_IN_BUFFER_PACKETS",
    "BULK_IN_BUFFER_BYTES",
    "BULK_RECEIVING_TRANSFERS",
    "ISO_PKTS_PER_URB",
    "ISO_NO_URBS",
    "PREPARE_TIMEOUT",
]

log = logging.getLogger("spiceserver")

#: start_bulk_receiving's transfer count by default (QEMU's no_transfers)
BULK_RECEIVING_TRANSFERS = 5
#: the most transfers usbredirhost accepts for a stream (its MAX_TRANSFER_COUNT)
_MAX_TRANSFERS = 16
#: start_iso_stream parameters (QEMU picks per speed; these suit full and high speed)
ISO_PKTS_PER_URB = 8
ISO_NO_URBS = 3
#: seconds for each request of the descriptor fetch before a device is announced
PREPARE_TIMEOUT = 10.0
#: the largest config descriptor fetched (wTotalLength is u16 anyway)
_MAX_CONFIG = 0xFFFF

T = TypeVar("T")


class UsbTransferError(Exception):
    """A transfer ended with a usbredir status other than success.

    Args:
        status: the usbredir status (1 cancelled, 2 inval, 3 ioerror, 4 stall, 5 timeout,
            6 babble; -1: the device is gone).
        message: what failed.
    """

    def __init__(self, status: int, message: str = "") -> None:
        self.status = int(status)
        super().__init__(message or f"usb transfer failed with status {self.status}")


class UsbDeviceGone(UsbTransferError):
    """The device was detached, rejected, or its client left (status -1)."""

    def __init__(self, message: str = "the redirected device is gone") -> None:
        super().__init__(-1, message)


@dataclass(frozen=True)
class UsbInterfaceInfo:
    """One interface of the current configuration, as the client announced it (interface_info)."""

    number: int
    interface_class: int
    interface_subclass: int
    interface_protocol: int


@dataclass(frozen=True)
class UsbEndpointInfo:
    """One endpoint, as the client announced it (ep_info). ``type``: 0 control, 1 iso, 2 bulk, 3 interrupt."""

    address: int
    type: int
    interval: int
    interface: int
    max_packet_size: int
    max_streams: int


class DeviceLink(Protocol):
    """What a device needs of its channel's connection (the channel implements it)."""

    def send_usbredir(self, msg: m.UsbRedirMessage, id: int = 0) -> None:
        """Queue ``msg`` with ``id`` toward the client (ValueError: the message does not fit the caps)."""
        ...

    def new_id(self) -> int:
        """A fresh request id."""
        ...

    def peer_has_cap(self, cap: int) -> bool:
        """The client announced ``cap`` in its hello."""
        ...

    def reject_device(self, device: RedirectedUsbDevice) -> None:
        """Send filter_reject for ``device`` and detach it."""
        ...


def interfaces_of(info: m.InterfaceInfo) -> tuple[UsbInterfaceInfo, ...]:
    """interface_info as :class:`UsbInterfaceInfo` entries."""
    return tuple(
        UsbInterfaceInfo(
            info.interface[i], info.interface_class[i], info.interface_subclass[i], info.interface_protocol[i]
        )
        for i in range(len(info.interface))
    )


def endpoints_of(info: m.EpInfo) -> dict[int, UsbEndpointInfo]:
    """ep_info as :class:`UsbEndpointInfo` by endpoint address (type 255 entries left out)."""
    out: dict[int, UsbEndpointInfo] = {}
    for idx in range(32):
        if info.type[idx] == m.EpType.INVALID:
            continue
        address = ((idx & 0x10) << 3) | (idx & 0x0F)
        out[address] = UsbEndpointInfo(
            address,
            info.type[idx],
            info.interval[idx],
            info.interface[idx],
            info.max_packet_size[idx],
            info.max_streams[idx],
        )
    return out


class RedirectedUsbDevice:
    """One device a client redirected on one usbredir channel (see the module docstring).

    Built by the channel on device_connect; the attributes describe the device as the client
    announced it and as :meth:`prepare` fetched it.

    Args:
        channel_id: the usbredir channel's id.
        loop: the server's event loop.
        link: the channel's connection to the client.
        connect: the client's device_connect.
        interfaces: its interface_info (None: none came).
        endpoints: its ep_info (None: none came).
    """

    def __init__(
        self,
        channel_id: int,
        loop: asyncio.AbstractEventLoop,
        link: DeviceLink,
        connect: m.DeviceConnect,
        interfaces: m.InterfaceInfo | None = None,
        endpoints: m.EpInfo | None = None,
    ) -> None:
        self.channel_id = channel_id
        self.loop = loop
        self._link = link
        self.speed = connect.speed
        self.vendor_id = connect.vendor_id
        self.product_id = connect.product_id
        self.device_version_bcd = connect.device_version_bcd
        self.device_class = connect.device_class
        self.device_subclass = connect.device_subclass
        self.device_protocol = connect.device_protocol
        self.interfaces: tuple[UsbInterfaceInfo, ...] = interfaces_of(interfaces) if interfaces else ()
        self.endpoints: dict[int, UsbEndpointInfo] = endpoints_of(endpoints) if endpoints else {}
        self.device_descriptor = b""
        self.config_descriptors: tuple[bytes, ...] = ()
        self.configuration = 0
        #: announced to the host (on_attach ran) and not detached since
        self.attached = False
        #: detached, rejected or its client left: every call raises UsbDeviceGone
        self.gone = False
        #: interrupt / iso / buffered bulk IN packets dropped: nobody read them in time, or they
        #: came for an endpoint where nothing was started
        self.dropped_in_packets = 0
        self._pending: dict[int, tuple[asyncio.Future[m.UsbRedirMessage], type[m.UsbRedirMessage]]] = {}
        self._in: dict[int, InStream] = {}
        self._bulk: dict[int, InStream] = {}

    def __repr__(self) -> str:
        return f"<RedirectedUsbDevice {self.vendor_id:04x}:{self.product_id:04x} channel {self.channel_id}{' gone' if self.gone else ''}>"

    # --- called by the channel (event loop) --------------------------------------------------------

    def update_interfaces(self, info: m.InterfaceInfo) -> None:
        """A new interface_info (after set_configuration, say)."""
        self.interfaces = interfaces_of(info)

    def update_endpoints(self, info: m.EpInfo) -> None:
        """A new ep_info."""
        self.endpoints = endpoints_of(info)

    def handle_reply(self, id: int, msg: m.UsbRedirMessage) -> bool:
        """A reply from the client: complete the transfer waiting for ``id``; False: nobody waits for it."""
        entry = self._pending.get(id)
        if entry is None or not isinstance(msg, entry[1]):
            return False
        del self._pending[id]
        fut = entry[0]
        if not fut.done():
            fut.set_result(msg)
        return True

    def handle_in_packet(self, endpoint: int, status: int, data: bytes) -> None:
        """An interrupt or iso IN packet the client sent unasked (receiving was started)."""
        stream = self._in.get(endpoint)
        if stream is None or not stream.started:
            self.dropped_in_packets += 1
            log.debug("usbredir: %r: IN packet for %#04x where nothing was started: dropped", self, endpoint)
            return
        self.dropped_in_packets += stream.put(status, data)

    def handle_buffered_bulk(self, endpoint: int, status: int, data: bytes) -> None:
        """A buffered_bulk_packet: data of a bulk receiving endpoint."""
        stream = self._bulk.get(endpoint)
        if stream is None or not stream.started:
            self.dropped_in_packets += 1
            log.debug("usbredir: %r: buffered bulk data for %#04x, not receiving: dropped", self, endpoint)
            return
        self.dropped_in_packets += stream.put(status, data)

    def handle_stream_status(self, endpoint: int, status: int) -> None:
        """interrupt_receiving_status / iso_stream_status: a failure ends the stream and fails its readers."""
        if status == m.Status.SUCCESS:
            return
        stream = self._in.get(endpoint)
        if stream is not None:
            stream.started = False
            stream.fail(UsbTransferError(status, f"receiving on endpoint {endpoint:#04x} stopped with status {status}"))

    def handle_bulk_receiving_status(self, id: int, endpoint: int, status: int) -> None:
        """bulk_receiving_status: the answer to our start (same id), or a failure that ends receiving."""
        stream = self._bulk.get(endpoint)
        if stream is None:
            return
        if stream.starting is not None and id == stream.start_id:
            fut, stream.starting, stream.start_id = stream.starting, None, None
            if not fut.done():
                fut.set_result(status)
            if status == m.Status.SUCCESS:
                return
        elif status == m.Status.SUCCESS:
            return  # the answer to a stop, or a late one
        stream.started = False
        stream.fail(UsbTransferError(status, f"bulk receiving on {endpoint:#04x} stopped with status {status}"))

    def mark_gone(self) -> None:
        """The device left (device_disconnect, reject, the client left): fail everything pending."""
        if self.gone:
            return
        self.gone = True
        pending, self._pending = self._pending, {}
        for fut, _ in pending.values():
            if not fut.done():
                fut.set_exception(UsbDeviceGone())
        for stream in (*self._in.values(), *self._bulk.values()):
            stream.fail(UsbDeviceGone())

    async def prepare(self, timeout: float = PREPARE_TIMEOUT) -> None:
        """Fetch the device descriptor, every config descriptor (9 bytes, then wTotalLength) and the
        current configuration, as a guest enumerating the device does.

        Raises:
            UsbTransferError: a request failed, or a descriptor is malformed (status 2, inval).
        """
        dd = await self.control(0x80, 6, 0x0100, 0, 18, timeout)
        assert isinstance(dd, bytes)
        if len(dd) < 18 or dd[1] != 1:
            raise UsbTransferError(m.Status.INVAL, f"bad device descriptor ({len(dd)} bytes)")
        self.device_descriptor = dd[:18]
        configs = []
        for index in range(dd[17]):
            head = await self.control(0x80, 6, 0x0200 | index, 0, 9, timeout)
            assert isinstance(head, bytes)
            if len(head) < 9 or head[1] != 2:
                raise UsbTransferError(m.Status.INVAL, f"bad config descriptor {index} header ({len(head)} bytes)")
            total = struct.unpack_from("<H", head, 2)[0]
            if total < 9:
                raise UsbTransferError(m.Status.INVAL, f"config descriptor {index}: wTotalLength {total}")
            full = await self.control(0x80, 6, 0x0200 | index, 0, min(total, _MAX_CONFIG), timeout)
            assert isinstance(full, bytes)
            configs.append(full)
        self.config_descriptors = tuple(configs)
        self.configuration = await self.get_configuration()

    # --- the host's API (event loop) --------------------------------------------------------------

    def _check(self) -> None:
        if self.gone:
            raise UsbDeviceGone()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self.loop:
            raise RuntimeError(
                "RedirectedUsbDevice transfers run on the server's event loop (use asyncio.run_coroutine_threadsafe)"
            )

    async def _request(
        self, msg: m.UsbRedirMessage, reply: type[m.UsbRedirMessage], timeout: float | None, cancellable: bool
    ) -> m.UsbRedirMessage:
        self._check()
        id = self._link.new_id()
        fut: asyncio.Future[m.UsbRedirMessage] = self.loop.create_future()
        self._pending[id] = (fut, reply)
        try:
            self._link.send_usbredir(msg, id)
        except BaseException:
            self._pending.pop(id, None)
            raise
        try:
            if timeout is None:
                return await fut
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            self._abandon(id, cancellable)
            raise UsbTransferError(m.Status.TIMEOUT, f"{type(msg).__name__} timed out after {timeout} s") from None
        except asyncio.CancelledError:
            self._abandon(id, cancellable)
            raise

    def _abandon(self, id: int, cancellable: bool) -> None:
        entry = self._pending.pop(id, None)
        if entry is not None:
            entry[0].cancel()
            if cancellable and not self.gone:
                try:
                    self._link.send_usbredir(m.CancelDataPacket(), id)
                except Exception:  # the connection is gone
                    log.debug("usbredir: cancel_data_packet not sent", exc_info=True)

    @staticmethod
    def _ok(status: int, what: str) -> None:
        if status != m.Status.SUCCESS:
            raise UsbTransferError(status, f"{what}: status {status}")

    async def control(
        self,
        request_type: int,
        request: int,
        value: int,
        index: int,
        data_or_length: bytes | int,
        timeout: float | None = None,
    ) -> bytes | int:
        """A control transfer on endpoint 0.

        Args:
            request_type: bmRequestType (bit 7: IN).
            request: bRequest.
            value: wValue.
            index: wIndex.
            data_or_length: IN: the number of bytes to read; OUT: the bytes to write.
            timeout: seconds, or None.

        Returns:
            IN: the bytes read; OUT: the number of bytes written.

        Raises:
            UsbTransferError: a failed status or the timeout; UsbDeviceGone: the device left.
            ValueError: ``data_or_length`` of the wrong kind for the direction, or out of range.
        """
        self._check()
        is_in = bool(request_type & 0x80)
        if is_in != isinstance(data_or_length, int) or isinstance(data_or_length, bool):
            raise ValueError("control: IN takes a length (int), OUT takes bytes")
        length = data_or_length if isinstance(data_or_length, int) else len(data_or_length)
        if not 0 <= length <= 0xFFFF:
            raise ValueError(f"control: length {length} out of 0..65535")
        mapped = await self._standard_request(request_type, request, value, index, timeout)
        if mapped is not None:
            return mapped[:length] if isinstance(mapped, bytes) else mapped
        msg = m.ControlPacket(
            0x80 if is_in else 0x00,
            request,
            request_type,
            0,
            value,
            index,
            length,
            b"" if isinstance(data_or_length, int) else bytes(data_or_length),
        )
        reply = await self._request(msg, m.ControlPacket, timeout, True)
        assert isinstance(reply, m.ControlPacket)
        self._ok(reply.status, f"control {request_type:#04x}/{request:#04x}")
        return reply.data if is_in else reply.length

    async def _standard_request(
        self, request_type: int, request: int, value: int, index: int, timeout: float | None
    ) -> bytes | int | None:
        # the requests QEMU's usbredir_handle_control maps onto usbredir messages
        if request_type == 0x00 and request == 9:  # SET_CONFIGURATION
            await self.set_configuration(value & 0xFF, timeout)
            return 0
        if request_type == 0x80 and request == 8:  # GET_CONFIGURATION
            return bytes([await self.get_configuration(timeout)])
        if request_type == 0x01 and request == 11:  # SET_INTERFACE
            await self.set_alt_setting(index & 0xFF, value & 0xFF, timeout)
            return 0
        if request_type == 0x81 and request == 10:  # GET_INTERFACE
            return bytes([await self.get_alt_setting(index & 0xFF, timeout)])
        return None

    async def bulk_out(self, endpoint: int, data: bytes, timeout: float | None = None) -> int:
        """Write ``data`` to bulk OUT ``endpoint``; returns the bytes written."""
        if endpoint & 0x80:
            raise ValueError(f"bulk_out on IN endpoint {endpoint:#04x}")
        reply = await self._request(m.BulkPacket(endpoint, 0, len(data), 0, bytes(data)), m.BulkPacket, timeout, True)
        assert isinstance(reply, m.BulkPacket)
        self._ok(reply.status, f"bulk OUT {endpoint:#04x}")
        return reply.length

    async def bulk_in(self, endpoint: int, length: int, timeout: float | None = None) -> bytes:
        """Read at most ``length`` bytes from bulk IN ``endpoint`` (from the buffered data while bulk
        receiving runs on it, see the module docstring)."""
        endpoint |= 0x80
        stream = self._bulk.get(endpoint)
        if stream is not None and (stream.started or stream.packets):
            return await self._buffered_bulk_read(stream, endpoint, length, timeout)
        reply = await self._request(m.BulkPacket(endpoint, 0, length, 0), m.BulkPacket, timeout, True)
        assert isinstance(reply, m.BulkPacket)
        self._ok(reply.status, f"bulk IN {endpoint:#04x}")
        return reply.data

    async def _buffered_bulk_read(self, stream: InStream, endpoint: int, length: int, timeout: float | None) -> bytes:
        self._check()
        try:
            await stream.wait(self.loop, timeout)
        except TimeoutError:
            raise UsbTransferError(m.Status.TIMEOUT, f"no bulk data on {endpoint:#04x} within {timeout} s") from None
        out = bytearray()
        while stream.packets and len(out) < length:
            status, data = stream.popleft()
            if status != m.Status.SUCCESS:
                if out:  # this read ends before the failed packet; the next one raises
                    stream.pushleft(status, data)
                    break
                stream.wake()
                raise UsbTransferError(status, f"bulk IN {endpoint:#04x}: status {status}")
            if not data:  # a zero-length packet ends a read
                break
            take = length - len(out)
            out += data[:take]
            if len(data) > take:
                stream.pushleft(status, data[take:])
        stream.wake()
        return bytes(out)

    @property
    def can_bulk_receive(self) -> bool:
        """The client announced cap bulk_receiving (:meth:`start_bulk_receiving` may be used)."""
        return self._link.peer_has_cap(m.Cap.BULK_RECEIVING)

    def bulk_receiving(self, endpoint: int) -> bool:
        """Bulk receiving runs on IN ``endpoint`` (started and not stopped or failed)."""
        stream = self._bulk.get(endpoint | 0x80)
        return stream is not None and stream.started

    async def start_bulk_receiving(
        self,
        endpoint: int,
        bytes_per_transfer: int | None = None,
        transfers: int = BULK_RECEIVING_TRANSFERS,
        timeout: float | None = None,
    ) -> None:
        """Start bulk receiving on bulk IN ``endpoint``: the client keeps ``transfers`` reads of
        ``bytes_per_transfer`` bytes running and streams their data; ``bulk_in`` then reads it.

        Args:
            endpoint: a bulk IN endpoint of the device (bit 7 is set for you).
            bytes_per_transfer: a multiple of the endpoint's max packet size (usbredirhost refuses
                others), at most 128 MiB; None: 512 rounded up to one, as QEMU asks.
            transfers: transfers the client keeps running, 1..16 (usbredirhost's limit).
            timeout: seconds to wait for the client's bulk_receiving_status, or None.

        Raises:
            UsbTransferError: the client has no cap bulk_receiving (status inval), answered a
                failed status, or the timeout; UsbDeviceGone: the device left.
            ValueError: not a bulk IN endpoint, or parameters out of range.
        """
        self._check()
        endpoint |= 0x80
        info = self.endpoints.get(endpoint)
        if info is None or info.type != m.EpType.BULK:
            raise ValueError(f"start_bulk_receiving: {endpoint:#04x} is not a bulk IN endpoint of the device")
        if not self.can_bulk_receive:
            raise UsbTransferError(m.Status.INVAL, "the client does not support bulk receiving (no cap bulk_receiving)")
        mps = info.max_packet_size or 512
        if bytes_per_transfer is None:
            bytes_per_transfer = -(-512 // mps) * mps
        if not 0 < bytes_per_transfer <= MAX_BULK_TRANSFER or bytes_per_transfer % mps:
            raise ValueError(
                f"start_bulk_receiving: bytes_per_transfer {bytes_per_transfer}: not a multiple of {mps} up to"
                f" {MAX_BULK_TRANSFER}"
            )
        if not 1 <= transfers <= _MAX_TRANSFERS:
            raise ValueError(f"start_bulk_receiving: transfers {transfers} out of 1..{_MAX_TRANSFERS}")
        stream = self._bulk.get(endpoint)
        if stream is None:
            stream = self._bulk[endpoint] = InStream(BULK_IN_BUFFER_PACKETS, BULK_IN_BUFFER_BYTES)
        if stream.started:
            return
        if stream.starting is not None:
            raise RuntimeError(f"start_bulk_receiving on {endpoint:#04x} already in progress")
        id = self._link.new_id()
        fut: asyncio.Future[int] = self.loop.create_future()
        stream.starting, stream.start_id = fut, id
        stream.started = True  # buffered data may come before the status
        stream.clear()
        try:
            self._link.send_usbredir(m.StartBulkReceiving(0, bytes_per_transfer, endpoint, transfers), id)
            status = await (fut if timeout is None else asyncio.wait_for(asyncio.shield(fut), timeout))
        except BaseException as exc:
            if stream.start_id == id:
                stream.starting = stream.start_id = None
                stream.started = False
                if not self.gone:
                    self._send_stop(endpoint)
            if isinstance(exc, TimeoutError):
                raise UsbTransferError(m.Status.TIMEOUT, f"start_bulk_receiving timed out after {timeout} s") from None
            raise
        self._ok(status, f"start_bulk_receiving {endpoint:#04x}")

    async def stop_bulk_receiving(self, endpoint: int) -> None:
        """Stop bulk receiving on ``endpoint``: stop_bulk_receiving is sent, the buffered data is
        dropped and waiting readers fail with status cancelled; ``bulk_in`` goes back to plain bulk
        requests. Nothing is waited for (the client's status answer is ignored). Does nothing when
        receiving does not run there."""
        self._check()
        endpoint |= 0x80
        stream = self._bulk.get(endpoint)
        if stream is None or not (stream.started or stream.packets):
            return
        was_started = stream.started
        stream.started = False
        stream.clear()
        stream.fail(UsbTransferError(m.Status.CANCELLED, f"bulk receiving on {endpoint:#04x} stopped"))
        if was_started:
            self._send_stop(endpoint)

    def _send_stop(self, endpoint: int) -> None:
        try:
            self._link.send_usbredir(m.StopBulkReceiving(0, endpoint), self._link.new_id())
        except Exception:  # the connection is gone
            log.debug("usbredir: stop_bulk_receiving not sent", exc_info=True)

    async def interrupt_out(self, endpoint: int, data: bytes, timeout: float | None = None) -> int:
        """Write ``data`` to interrupt OUT ``endpoint``; returns the bytes written."""
        if endpoint & 0x80:
            raise ValueError(f"interrupt_out on IN endpoint {endpoint:#04x}")
        reply = await self._request(
            m.InterruptPacket(endpoint, 0, len(data), bytes(data)), m.InterruptPacket, timeout, True
        )
        assert isinstance(reply, m.InterruptPacket)
        self._ok(reply.status, f"interrupt OUT {endpoint:#04x}")
        return reply.length

    async def _stream_read(
        self, endpoint: int, length: int, timeout: float | None, start: Callable[[], m.UsbRedirMessage]
    ) -> bytes:
        self._check()
        stream = self._in.setdefault(endpoint, InStream())
        if not stream.started:
            stream.started = True
            self._link.send_usbredir(start(), self._link.new_id())
        try:
            await stream.wait(self.loop, timeout)
        except TimeoutError:
            raise UsbTransferError(m.Status.TIMEOUT, f"no packet on {endpoint:#04x} within {timeout} s") from None
        status, data = stream.popleft()
        stream.wake()
        self._ok(status, f"IN {endpoint:#04x}")
        return data[:length]

    async def interrupt_in(self, endpoint: int, length: int, timeout: float | None = None) -> bytes:
        """The next packet of interrupt IN ``endpoint`` (at most ``length`` bytes); receiving starts at first use."""
        endpoint |= 0x80
        return await self._stream_read(endpoint, length, timeout, lambda: m.StartInterruptReceiving(endpoint))

    async def iso_out(self, endpoint: int, data: bytes, timeout: float | None = None) -> int:
        """Queue ``data`` on iso OUT ``endpoint`` (best effort: no status comes back); returns its length."""
        self._check()
        if endpoint & 0x80:
            raise ValueError(f"iso_out on IN endpoint {endpoint:#04x}")
        stream = self._in.setdefault(endpoint, InStream())
        if not stream.started:
            stream.started = True
            self._link.send_usbredir(m.StartIsoStream(endpoint, ISO_PKTS_PER_URB, ISO_NO_URBS), self._link.new_id())
        self._link.send_usbredir(m.IsoPacket(endpoint, 0, len(data), bytes(data)), self._link.new_id())
        return len(data)

    async def iso_in(self, endpoint: int, length: int, timeout: float | None = None) -> bytes:
        """The next packet of iso IN ``endpoint`` (at most ``length`` bytes); the stream starts at first use."""
        endpoint |= 0x80
        return await self._stream_read(
            endpoint, length, timeout, lambda: m.StartIsoStream(endpoint, ISO_PKTS_PER_URB, ISO_NO_URBS)
        )

    async def set_configuration(self, value: int, timeout: float | None = None) -> None:
        """set_configuration, waiting for its configuration_status."""
        reply = await self._request(m.SetConfiguration(value), m.ConfigurationStatus, timeout, False)
        assert isinstance(reply, m.ConfigurationStatus)
        self._ok(reply.status, f"set_configuration({value})")
        self.configuration = reply.configuration

    async def get_configuration(self, timeout: float | None = None) -> int:
        """get_configuration: the current bConfigurationValue."""
        reply = await self._request(m.GetConfiguration(), m.ConfigurationStatus, timeout, False)
        assert isinstance(reply, m.ConfigurationStatus)
        self._ok(reply.status, "get_configuration")
        self.configuration = reply.configuration
        return reply.configuration

    async def set_alt_setting(self, interface: int, alt: int, timeout: float | None = None) -> None:
        """set_alt_setting, waiting for its alt_setting_status."""
        reply = await self._request(m.SetAltSetting(interface, alt), m.AltSettingStatus, timeout, False)
        assert isinstance(reply, m.AltSettingStatus)
        self._ok(reply.status, f"set_alt_setting({interface}, {alt})")

    async def get_alt_setting(self, interface: int, timeout: float | None = None) -> int:
        """get_alt_setting: the interface's current alternate setting."""
        reply = await self._request(m.GetAltSetting(interface), m.AltSettingStatus, timeout, False)
        assert isinstance(reply, m.AltSettingStatus)
        self._ok(reply.status, f"get_alt_setting({interface})")
        return reply.alt

    async def reset(self) -> None:
        """Reset the device (usbredir sends no answer)."""
        self._check()
        self._link.send_usbredir(m.Reset(), 0)

    def reject(self) -> None:
        """Refuse the device (filter_reject): the client un-redirects it; it counts as detached at once.

        Event loop only. Does nothing when the device is gone already.
        """
        if not self.gone:
            self._link.reject_device(self)
