"""The spicevmc channels: a char device's bytes to and from one client (port, WebDAV; next smartcard, usbredir).

Counterpart of spice ``server/spicevmc.cpp`` (``RedVmcChannel``, ``VmcChannelClient``,
``RedCharDeviceSpiceVmc``). The device is a char device (:mod:`spiceserver.channels.chardev`: a
Unix socket, a pty, or a Python device model); this module moves its bytes:

* **One client at a time.** A second link while one client is connected is refused: its stream
  is closed with no message, and the client in place goes on (libspice ``RedVmcChannel::on_connect``,
  "refusing second connection").
* **No ack window.** No SET_ACK is sent (libspice ``ack_zero_messages_window``); back-pressure is
  the byte limits below.
* **Client to device.** Each SPICEVMC_DATA's payload goes to ``device.write`` in pieces of at most
  :data:`WRITE_CHUNK` bytes. While the device refuses a piece (its write queue is full), the
  channel stops reading the client's connection and waits for ``device_writable``, then goes on
  with the same piece: libspice blocks reading (``block_read``) when no device write buffer is
  free and unblocks when the device frees one (``on_free_self_token``). Nothing is dropped, and
  TCP flow control holds the client back.
* **Device to client.** Each chunk the device gives (``device_data``) goes out as SPICEVMC_DATA
  messages of at most :data:`BUF_SIZE` bytes. While more than :data:`QUEUED_DATA_LIMIT` bytes wait
  to be sent to the client, the device's reading is paused, and resumed once the client took them
  (libspice stops ``read_one_msg_from_device`` at ``QUEUED_DATA_LIMIT`` and wakes the device when the
  queue falls below it). Without a client the device is not read either (libspice reads only with a
  client); a chunk that still arrives then waits (up to the same limit) for the next client.
* **LZ4.** The channel offers ``SPICEVMC_CAP_DATA_COMPRESS_LZ4`` (libspice built with LZ4). Device
  data goes out as SPICEVMC_COMPRESSED_DATA when the client has the cap, the piece is over 1000
  bytes, the client is not on a Unix socket and LZ4 makes it smaller (libspice ``try_compress_lz4``;
  :func:`~spiceserver.channels.spicevmc_lz4.compress_vmc`). A client's COMPRESSED_DATA is decompressed
  with its announced size checked first (:func:`~spiceserver.channels.spicevmc_lz4.decompress_vmc`);
  anything but a valid LZ4 block of that size closes the client (libspice ``handle_compressed_msg``).
  ``compressed_to_client`` / ``compressed_from_client`` count the COMPRESSED_DATA messages each way
  (in :meth:`SpiceVmcChannel.stats`). A channel created with ``caps=()`` does not offer the cap:
  its client sends and gets plain DATA only, and a COMPRESSED_DATA from it closes it.
* **Client state.** The device hears when a client connects (its start) and when it leaves
  (``device.client_state``; libspice calls ``SpiceCharDeviceInterface.state`` with 1 and 0).
* **Open state and events.** The device's ``device_opened`` and ``device_event`` reach
  :meth:`SpiceVmcChannel.on_device_opened` / :meth:`~SpiceVmcChannel.on_device_event`, which the port
  channel (:mod:`spiceserver.channels.port`) turns into PORT_EVENT messages.

The channel is the device's listener (``device_data``, ``device_opened``, ``device_event``,
``device_writable``): it attaches to the device when the server's event loop starts and detaches
when the server closes (the device itself stays the host's to close).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from ..errors import ProtocolError
from ..metrics import DeviceMetrics
from ..proto.channel import ChannelConnection
from ..proto.channel_client import StateTable
from ..proto.enums import SpicevmcCap
from ..proto.messages import spicevmc as vm
from ..transport import unsent_bytes
from .base import ChannelClient, Link, ServerContext, SingleClientChannel
from .session import Session
from .spicevmc_lz4 import compress_vmc, decompress_vmc

__all__ = ["SpiceVmcChannel", "SpiceVmcClient", "VmcDevice", "QUEUED_DATA_LIMIT", "BUF_SIZE", "WRITE_CHUNK"]

log = logging.getLogger("spiceserver")

#: bytes queued toward the client above which the device is not read (libspice QUEUED_DATA_LIMIT)
QUEUED_DATA_LIMIT = 1 << 20
#: the largest SPICEVMC_DATA payload sent (libspice reads 64 KiB per pipe item; BUF_SIZE there adds 32)
BUF_SIZE = 64 << 10
#: the largest piece of a client's DATA handed to one ``device.write``
WRITE_CHUNK = 64 << 10
#: how often a client blocked on a full device checks whether its connection is closing (seconds)
_BLOCKED_POLL = 0.25


class VmcDevice(Protocol):
    """What a spicevmc channel uses of its char device (:class:`~spiceserver.channels.chardev.CharDevice`)."""

    @property
    def opened(self) -> bool:
        """The device end is open (the guest opened its port)."""
        ...

    def attach(self, listener: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Start delivering to ``listener`` on ``loop``."""
        ...

    def detach(self) -> None:
        """Stop delivering."""
        ...

    def write(self, data: bytes) -> bool:
        """Queue ``data`` toward the device; False: not accepted now (wait for ``device_writable``)."""
        ...

    def pause_reading(self) -> None:
        """Deliver no more ``device_data`` until :meth:`resume_reading`."""
        ...

    def resume_reading(self) -> None:
        """Deliver ``device_data`` again."""
        ...

    def send_event(self, event: int) -> None:
        """A port event toward the device (the client's PORT_EVENT)."""
        ...

    def client_state(self, connected: bool) -> None:
        """A client connected to the channel or left."""
        ...


class SpiceVmcChannel(SingleClientChannel):
    """A channel backed by a char device, serving one client at a time (see the module docstring).

    Subclasses set ``TYPE`` and may override :meth:`create_client` (with a :class:`SpiceVmcClient`
    subclass), :meth:`on_device_opened` and :meth:`on_device_event`.

    Args:
        ctx: the server services.
        device: the char device.
        channel_id: the channel id.
        caps: the channel caps (default: LZ4).
    """

    def __init__(
        self,
        ctx: ServerContext,
        device: VmcDevice,
        channel_id: int = 0,
        caps: tuple[int, ...] = (SpicevmcCap.DATA_COMPRESS_LZ4,),
    ) -> None:
        super().__init__(ctx, channel_id, caps)
        self.device = device
        #: the connected client, if any
        self.client: SpiceVmcClient | None = None
        self._attached = False
        self._reading = True  # as last asked of the device
        self._pending = bytearray()  # device data that arrived with no client to take it
        #: bytes written to the device (client DATA payloads)
        self.bytes_to_device = 0
        #: bytes sent to the client (device data)
        self.bytes_to_client = 0
        #: device bytes dropped: they arrived with no client and more than QUEUED_DATA_LIMIT waiting
        self.dropped_bytes = 0
        #: SPICEVMC_COMPRESSED_DATA messages sent to the client (LZ4 made the piece smaller)
        self.compressed_to_client = 0
        #: SPICEVMC_COMPRESSED_DATA messages received from the client (and decompressed)
        self.compressed_from_client = 0

    # --- server hooks ----------------------------------------------------------------------------

    def on_loop_start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the device: from now on its data and events reach this channel."""
        if not self._attached:
            self._attached = True
            self.device.attach(self, loop)
            self.device_attached()
            self.update_reading()

    def device_attached(self) -> None:
        """The channel just attached to its device (subclasses read its state here)."""

    async def close(self) -> None:
        """The server is closing: detach from the device (the host closes the device)."""
        if self._attached:
            self._attached = False
            self.device.detach()

    def create_client(self, conn: ChannelConnection, link: Link, session: Session) -> SpiceVmcClient:
        """The channel's client (subclasses return their own :class:`SpiceVmcClient` subclass)."""
        return SpiceVmcClient(self, conn, link, session)

    def client_gone(self, cc: ChannelClient) -> None:
        """The client left: the device is not read until the next one."""
        if cc is self.client:
            self.client = None
            self.update_reading()
            if self._attached:
                self.device.client_state(False)

    # --- flow control (event loop) ------------------------------------------------------------

    def update_reading(self) -> None:
        """Pause or resume the device's reading: read while a started client is under the limit."""
        if not self._attached:
            return
        cc = self.client
        want = cc is not None and cc.started and not cc.over_limit
        if want != self._reading:
            self._reading = want
            if want:
                self.device.resume_reading()
            else:
                self.device.pause_reading()

    @property
    def attached(self) -> bool:
        """The channel is attached to its device (the server's loop started, not closed)."""
        return self._attached

    @property
    def reading(self) -> bool:
        """The channel lets the device deliver data now."""
        return self._reading

    def take_pending(self) -> bytes:
        """Device data that waited for a client (a new client's first bytes)."""
        data = bytes(self._pending)
        self._pending.clear()
        return data

    # --- the device's listener (event loop) -------------------------------------------------------

    def device_data(self, data: bytes) -> None:
        """Device -> client bytes: SPICEVMC_DATA to the client, or kept until one comes."""
        cc = self.client
        if cc is not None and cc.started and not cc.closed:
            cc.send_device_data(data)
            return
        room = QUEUED_DATA_LIMIT - len(self._pending)
        if len(data) > room:
            self.dropped_bytes += len(data) - max(room, 0)
            log.warning(
                "%s:%d: device data with no client and %d bytes waiting; dropping %d bytes",
                self.name,
                self.id,
                len(self._pending),
                len(data) - max(room, 0),
            )
            data = data[: max(room, 0)]
        self._pending += data

    def device_opened(self, opened: bool) -> None:
        """The guest opened or closed its end."""
        self.on_device_opened(bool(opened))

    def device_event(self, event: int) -> None:
        """A port event from the guest side."""
        self.on_device_event(int(event))

    def device_writable(self) -> None:
        """The device has room again: a client blocked on it goes on."""
        cc = self.client
        if cc is not None:
            cc.writable.set()

    def on_device_opened(self, opened: bool) -> None:
        """The guest opened or closed its end (base: nothing)."""

    def on_device_event(self, event: int) -> None:
        """A port event from the guest side (base: nothing)."""

    # --- counters --------------------------------------------------------------------------------

    def device_metrics(self) -> DeviceMetrics:
        """The byte counters, refused links and states, for the server's metrics."""
        cc = self.client
        return DeviceMetrics(
            channel=self.name,
            id=self.id,
            name=self.metrics_name,
            bytes_to_device=self.bytes_to_device,
            bytes_to_client=self.bytes_to_client,
            dropped_bytes=self.dropped_bytes,
            refused_links=self.refused_links,
            device_open=bool(self.device.opened),
            client=cc is not None and not cc.closed,
        )

    @property
    def metrics_name(self) -> str:
        """The name in the metrics' ``name`` label (a port's name; base: none)."""
        return ""

    def stats(self) -> dict[str, int]:
        """The channel's byte counters, refused links and compressed message counts."""
        return {
            "bytes_to_device": self.bytes_to_device,
            "bytes_to_client": self.bytes_to_client,
            "dropped_bytes": self.dropped_bytes,
            "refused_links": self.refused_links,
            "compressed_to_client": self.compressed_to_client,
            "compressed_from_client": self.compressed_from_client,
        }


class SpiceVmcClient(ChannelClient):
    """The client of a spicevmc channel: DATA to the device (blocking while it is full), device
    data to the client (pausing the device over the limit)."""

    def __init__(self, channel: SpiceVmcChannel, conn: ChannelConnection, link: Link, session: Session) -> None:
        super().__init__(conn, link, session)  # no ack window: no SET_ACK (ack_zero_messages_window)
        self.channel = channel
        self.writer = link.writer
        self.unix = link.unix
        self.tables = {None: StateTable(self.handlers())}
        #: set by the device's ``device_writable``
        self.writable = asyncio.Event()
        #: waiting for room in the device (the client's connection is not read meanwhile)
        self.blocked = False
        #: more than QUEUED_DATA_LIMIT bytes wait to be sent: the device is paused
        self.over_limit = False
        #: :meth:`start` ran: the client may be sent device data
        self.started = False
        self._drain_task: asyncio.Task[None] | None = None
        channel.client = self

    def handlers(self) -> dict[type, Any]:
        """Message class -> handler (subclasses add theirs)."""
        return {vm.ClientSpicevmcData: self._on_data, vm.ClientSpicevmcCompressedData: self._on_compressed}

    async def start(self, now: float) -> None:
        """Deliver device data that waited, then let the device be read."""
        self.started = True
        if self.channel.attached:
            self.channel.device.client_state(True)
        pending = self.channel.take_pending()
        if pending:
            self.send_device_data(pending)
        self.channel.update_reading()

    # --- device -> client -----------------------------------------------------------------------

    def queued(self) -> int:
        """Bytes waiting to be sent to the client (marshalled, or in the socket's buffer)."""
        try:
            return unsent_bytes(self.writer) + self.conn.pending_output
        except (AttributeError, RuntimeError):  # no transport any more: the connection is gone
            return self.conn.pending_output

    def send_device_data(self, data: bytes) -> None:
        """Send ``data`` as SPICEVMC_DATA messages; over the limit, pause the device until the
        client took it (event loop)."""
        if self.closed:
            return
        lz4 = SpicevmcCap.DATA_COMPRESS_LZ4 in self.channel.caps and self.has_channel_cap(SpicevmcCap.DATA_COMPRESS_LZ4)
        view = memoryview(data)
        for start in range(0, len(view), BUF_SIZE):
            msg = compress_vmc(bytes(view[start : start + BUF_SIZE]), lz4, self.unix)
            if isinstance(msg, vm.SpicevmcCompressedData):
                self.channel.compressed_to_client += 1
            self.conn.send(msg)
        self.channel.bytes_to_client += len(data)
        if self.transport is not None:
            self.transport.flush()
        if not self.over_limit and self.queued() >= QUEUED_DATA_LIMIT:
            self.over_limit = True
            self.channel.update_reading()
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while not self.closed and self.transport is not None and not self.transport.is_closing:
                await self.transport.drain()
                if self.queued() < QUEUED_DATA_LIMIT:
                    break
                await asyncio.sleep(0.01)  # drain() returned above our limit (a tunnel's own buffering)
        except (ConnectionError, OSError):
            pass
        finally:
            self.over_limit = False
            self._drain_task = None
            self.channel.update_reading()

    # --- client -> device ------------------------------------------------------------------------

    async def write_device(self, data: bytes) -> None:
        """Hand ``data`` to the device in pieces; while it refuses, wait (not reading the client)."""
        device = self.channel.device
        view = memoryview(data)
        for start in range(0, len(view), WRITE_CHUNK):
            piece = bytes(view[start : start + WRITE_CHUNK])
            self.writable.clear()
            while not device.write(piece):
                if not await self._wait_writable():
                    return  # the connection is closing: the rest is dropped with it
                self.writable.clear()
            self.channel.bytes_to_device += len(piece)

    async def _wait_writable(self) -> bool:
        self.blocked = True
        try:
            while True:
                try:
                    await asyncio.wait_for(self.writable.wait(), _BLOCKED_POLL)
                    return True
                except TimeoutError:
                    if self.closed or self.transport is None or self.transport.is_closing:
                        return False
        finally:
            self.blocked = False

    async def _on_data(self, msg: vm.ClientSpicevmcData, now: float) -> None:
        await self.write_device(msg.data)

    async def _on_compressed(self, msg: vm.ClientSpicevmcCompressedData, now: float) -> None:
        if SpicevmcCap.DATA_COMPRESS_LZ4 not in self.channel.caps:
            raise ProtocolError(f"SPICEVMC_COMPRESSED_DATA (type {msg.type}) but no compression was offered")
        data = decompress_vmc(msg)
        self.channel.compressed_from_client += 1
        await self.write_device(data)

    async def on_close(self) -> None:
        """The client left: stop waiting for its queue to drain."""
        task = self._drain_task
        if task is not None:
            task.cancel()
        self.writable.set()
