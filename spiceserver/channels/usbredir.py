"""The usbredir channels: USB devices a SPICE client redirects, parsed here or passed through.

Counterpart of the usbredir half of spice ``server/spicevmc.cpp`` (a spicevmc channel of type
USBREDIR) together with the usb-guest QEMU puts behind it (``hw/usb/redirect.c``); the client side
is spice-gtk ``src/channel-usbredir.c`` with ``usbredirhost``. Two modes:

* **Parsed** (:class:`UsbRedirChannel`): the server itself is the usb-guest. The channel is a
  :class:`~spiceserver.channels.spicevmc.SpiceVmcChannel` (one client, LZ4 both ways, flow control)
  whose "char device" is an in-process usbredir endpoint, :class:`UsbRedirEndpoint`: client bytes
  go to the sans-IO parser (:mod:`spiceserver.proto.usbredir`), our packets go back as device data.
  Each client connection is a fresh usbredir session: our hello first, then (when the host set a
  filter and the client has cap ``filter``) our filter_filter. The client announces a device with
  interface_info, ep_info and device_connect (in any order; spice-gtk sends them in that one); a
  device the filter refuses gets filter_reject. Otherwise a
  :class:`~spiceserver.channels.usb_device.RedirectedUsbDevice` is built and its descriptors are
  fetched (GET_DESCRIPTOR device, each config descriptor 9 bytes then wTotalLength,
  get_configuration) before the hub's ``on_attach`` callbacks run. device_disconnect is acked
  (cap ``device_disconnect_ack``), fails the device's pending transfers with ``UsbDeviceGone`` and
  runs ``on_detach``; the client leaving does the same. A new interface_info the filter no longer
  allows rejects the device (QEMU ``usbredir_check_filter``). A malformed packet closes this
  client only (:class:`~spiceserver.errors.ProtocolError` from the parser).
* **Passthrough** (:class:`UsbRedirPassthroughChannel`): the spicevmc channel of type USBREDIR over
  a char device, bytes unparsed: a QEMU-style usb-redir on the other end parses usbredir itself.

The hub, :class:`UsbRedirection`, is what the host holds: every parsed channel registers with it,
and it runs the ``on_attach`` / ``on_detach`` callbacks (sync or async, awaited one after the
other in event order, on the event loop)::

    hub = UsbRedirection(filter="0x08,-1,-1,-1,1|-1,-1,-1,-1,0")   # mass storage only
    server.register_channel(UsbRedirChannel, hub, 0)
    server.register_channel(UsbRedirChannel, hub, 1)
    hub.on_attach(lambda dev: print("attached", hex(dev.vendor_id), dev.config_descriptors))
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..proto import usbredir_messages as m
from ..proto.channel import ChannelConnection
from ..proto.enums import ChannelType, SpicevmcCap
from ..proto.usbredir import GUEST, FilterRule, UsbRedirConnection, check_filter, filter_to_string, parse_filter
from ..proto.usbredir_messages import Cap
from .base import Link, ServerContext, maybe_await
from .session import Session
from .spicevmc import SpiceVmcChannel, SpiceVmcClient, VmcDevice
from .usb_device import RedirectedUsbDevice, UsbDeviceGone, UsbTransferError
from .usb_pyusb import UsbRedirBackend

__all__ = [
    "UsbRedirection",
    "UsbRedirChannel",
    "UsbRedirClient",
    "UsbRedirEndpoint",
    "UsbRedirPassthroughChannel",
    "DeviceCallback",
    "USBREDIR_VERSION",
]

log = logging.getLogger("spiceserver")

#: our hello's version string
USBREDIR_VERSION = "spiceserver usbredir"

DeviceCallback = Callable[[RedirectedUsbDevice], object]


class UsbRedirection:
    """Every parsed usbredir channel of a server, and the host's callbacks (see the module docstring).

    Args:
        filter: a usbredirfilter string (``class,vendor,product,version,allow`` rules separated by
            ``|``), sent to clients as filter_filter and checked on every device; None: no filter.

    Raises:
        ValueError: a malformed filter.
    """

    def __init__(self, filter: str | None = None) -> None:
        self._attach: list[DeviceCallback] = []
        self._detach: list[DeviceCallback] = []
        self.channels: list[UsbRedirChannel] = []
        self._rules: tuple[FilterRule, ...] | None = None
        self._filter_text: str | None = None
        self._tail: asyncio.Future[None] | None = None
        if filter is not None:
            self.set_filter(filter)

    # --- the host's API -------------------------------------------------------------------------

    def on_attach(self, cb: DeviceCallback) -> Callable[[], None]:
        """Call ``cb(device)`` (sync or async) when a device is attached and its descriptors fetched.

        Returns a function that removes the callback.
        """
        return self._add(self._attach, cb)

    def on_detach(self, cb: DeviceCallback) -> Callable[[], None]:
        """Call ``cb(device)`` (sync or async) when an attached device goes (disconnect, reject, client gone)."""
        return self._add(self._detach, cb)

    @staticmethod
    def _add(lst: list[DeviceCallback], cb: DeviceCallback) -> Callable[[], None]:
        lst.append(cb)

        def remove() -> None:
            if cb in lst:
                lst.remove(cb)

        return remove

    @property
    def devices(self) -> list[RedirectedUsbDevice]:
        """The attached devices, by channel."""
        out = []
        for ch in self.channels:
            dev = ch.endpoint.device
            if dev is not None and dev.attached and not dev.gone:
                out.append(dev)
        return out

    def set_filter(self, rules: str) -> None:
        """Set the usbredirfilter rules (``""`` clears them): sent to connected and later clients as
        filter_filter, and checked against later devices.

        Raises:
            ValueError: malformed rules.
        """
        parsed = parse_filter(rules)
        self._rules = parsed if parsed else None
        self._filter_text = filter_to_string(parsed) if parsed else None
        for ch in self.channels:
            ch.endpoint.send_filter()

    @property
    def filter_rules(self) -> tuple[FilterRule, ...] | None:
        """The rules in force, or None."""
        return self._rules

    @property
    def filter_string(self) -> str | None:
        """The rules as sent in filter_filter, or None."""
        return self._filter_text

    def pyusb_backend(self) -> UsbRedirBackend:
        """A pyusb ``usb.backend.IBackend`` over the redirected devices (:mod:`.usb_pyusb`): host
        code calls pyusb with it from a thread other than the event loop's."""
        return UsbRedirBackend(self)

    # --- used by the channels (event loop) --------------------------------------------------------

    def allows(self, dev_class: int, interfaces: list[tuple[int, int, int]], vid: int, pid: int, bcd: int) -> bool:
        """The filter (if any) lets this device through (no rule matching a pass refuses it, as usbredir)."""
        if self._rules is None:
            return True
        return check_filter(self._rules, dev_class, interfaces, vid, pid, bcd) == 0

    def notify(self, attached: bool, device: RedirectedUsbDevice) -> None:
        """Run the attach or detach callbacks for ``device``, after the ones already scheduled."""
        callbacks = list(self._attach if attached else self._detach)
        prev = self._tail
        self._tail = asyncio.ensure_future(self._run(prev, callbacks, device, attached))

    async def _run(
        self,
        prev: asyncio.Future[None] | None,
        callbacks: list[DeviceCallback],
        device: RedirectedUsbDevice,
        attached: bool,
    ) -> None:
        if prev is not None and not prev.done():
            try:
                await asyncio.shield(prev)
            except BaseException:  # its errors were logged by itself
                pass
        for cb in callbacks:
            try:
                await maybe_await(cb(device))
            except Exception:
                log.exception("usbredir: error in the host's on_%s callback", "attach" if attached else "detach")


class UsbRedirEndpoint:
    """The usb-guest end of a parsed usbredir channel, in the place of its char device.

    It implements the channel's :class:`~spiceserver.channels.spicevmc.VmcDevice` (client bytes in
    through :meth:`write`, our packets out through the listener's ``device_data``) and the
    device's :class:`~spiceserver.channels.usb_device.DeviceLink`.

    Args:
        hub: the hub.
        channel_id: the channel's id.
    """

    def __init__(self, hub: UsbRedirection, channel_id: int) -> None:
        self.hub = hub
        self.channel_id = channel_id
        self.listener: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.conn: UsbRedirConnection | None = None
        #: the current device (announced or being prepared), if any
        self.device: RedirectedUsbDevice | None = None
        self._paused = True
        self._out = bytearray()
        self._next_id = 0
        self._connect: m.DeviceConnect | None = None
        self._interfaces: m.InterfaceInfo | None = None
        self._endpoints: m.EpInfo | None = None
        self._prepare: asyncio.Task[None] | None = None
        #: devices refused by the filter (filter_reject sent)
        self.rejected = 0
        #: replies (control, bulk, interrupt OUT, configuration / alt setting status) whose id no
        #: transfer waits for: dropped with a debug log
        self.ignored_replies = 0

    # --- VmcDevice ----------------------------------------------------------------------------------

    @property
    def opened(self) -> bool:
        """Always open (there is no guest to open it)."""
        return True

    def attach(self, listener: Any, loop: asyncio.AbstractEventLoop) -> None:
        """The channel listens from now on."""
        self.listener, self.loop = listener, loop

    def detach(self) -> None:
        """The server is closing."""
        self.end_session()
        self.listener = None

    def write(self, data: bytes) -> bool:
        """Client bytes: parse them and act (ProtocolError closes the client). Always accepted."""
        if self.conn is None:
            return True
        for packet in self.conn.receive_data(data):
            self._dispatch(packet.id, packet.msg)
        self._flush()
        return True

    def pause_reading(self) -> None:
        """Hold our packets (the client's queue is full, or there is no client)."""
        self._paused = True

    def resume_reading(self) -> None:
        """Deliver our packets again."""
        self._paused = False
        self._flush()

    def send_event(self, event: int) -> None:
        """Port events do not exist on usbredir channels."""

    def client_state(self, connected: bool) -> None:
        """Nothing to do: the channel's client starts and ends the usbredir session itself."""

    # --- sessions ---------------------------------------------------------------------------------

    def start_session(self) -> None:
        """A client linked: a fresh usbredir connection (our hello queued)."""
        self.end_session()
        self.conn = UsbRedirConnection(GUEST, USBREDIR_VERSION)
        self._next_id = 0
        self._out += self.conn.data_to_send()

    def end_session(self) -> None:
        """The client left: its device is detached, our unsent packets dropped."""
        self._device_gone("client left")
        self._connect = self._interfaces = self._endpoints = None
        self.conn = None
        self._out.clear()

    def _flush(self) -> None:
        if self.conn is not None:
            self._out += self.conn.data_to_send()
        if self._out and not self._paused and self.listener is not None:
            data = bytes(self._out)
            self._out.clear()
            self.listener.device_data(data)

    # --- DeviceLink ---------------------------------------------------------------------------------

    def send_usbredir(self, msg: m.UsbRedirMessage, id: int = 0) -> None:
        """Queue a packet toward the client and deliver it (ValueError: it does not fit the caps)."""
        if self.conn is None:
            raise UsbDeviceGone("no client")
        self.conn.send(msg, id)
        self._flush()

    def new_id(self) -> int:
        """The next request id (wrapping at 2**32 without 64-bit ids)."""
        self._next_id += 1
        if self.conn is not None and not self.conn.ids_64bit:
            self._next_id &= 0xFFFFFFFF
        return self._next_id

    def peer_has_cap(self, cap: int) -> bool:
        """The client announced ``cap``."""
        return self.conn is not None and self.conn.peer_has_cap(cap)

    def reject_device(self, device: RedirectedUsbDevice) -> None:
        """filter_reject (when the client has cap filter), then the device counts as detached."""
        if device is not self.device:
            return
        self.rejected += 1
        if self.peer_has_cap(Cap.FILTER):
            self.send_usbredir(m.FilterReject())
        self._device_gone("rejected")

    def send_filter(self) -> None:
        """Send the hub's filter (if any) to a client that has cap filter."""
        text = self.hub.filter_string
        if text is not None and self.conn is not None and self.conn.have_peer_caps and self.peer_has_cap(Cap.FILTER):
            self.send_usbredir(m.FilterFilter(text))

    # --- packets from the client --------------------------------------------------------------------

    def _dispatch(self, id: int, msg: m.UsbRedirMessage) -> None:
        dev = self.device
        if isinstance(msg, m.Hello):
            log.info("usbredir:%d: client %r, caps %#x", self.channel_id, msg.version, msg.caps)
            self.send_filter()
        elif isinstance(msg, m.InterfaceInfo):
            self._interfaces = msg
            if dev is not None:
                dev.update_interfaces(msg)
                if not self._filter_allows():
                    log.info("usbredir:%d: new interfaces of %r fail the filter: rejecting it", self.channel_id, dev)
                    self.reject_device(dev)
                    return
            self._maybe_create()
        elif isinstance(msg, m.EpInfo):
            self._endpoints = msg
            if dev is not None:
                dev.update_endpoints(msg)
            self._maybe_create()
        elif isinstance(msg, m.DeviceConnect):
            if dev is not None:
                log.warning("usbredir:%d: device_connect while %r is connected: replacing it", self.channel_id, dev)
                self._device_gone("replaced")
            self._connect = msg
            self._maybe_create()
        elif isinstance(msg, m.DeviceDisconnect):
            if self.peer_has_cap(Cap.DEVICE_DISCONNECT_ACK):
                self.send_usbredir(m.DeviceDisconnectAck())
            self._device_gone("device_disconnect")
            self._connect = self._interfaces = self._endpoints = None
        elif isinstance(msg, (m.InterruptPacket, m.IsoPacket)) and msg.endpoint & 0x80:
            if dev is not None:
                dev.handle_in_packet(msg.endpoint, msg.status, msg.data)
        elif isinstance(msg, (m.InterruptReceivingStatus, m.IsoStreamStatus)):
            if dev is not None:
                dev.handle_stream_status(msg.endpoint, msg.status)
        elif isinstance(msg, m.BufferedBulkPacket):
            if dev is not None:
                dev.handle_buffered_bulk(msg.endpoint, msg.status, msg.data)
        elif isinstance(msg, m.BulkReceivingStatus):
            if dev is not None:
                dev.handle_bulk_receiving_status(id, msg.endpoint, msg.status)
        elif isinstance(
            msg, (m.ControlPacket, m.BulkPacket, m.InterruptPacket, m.ConfigurationStatus, m.AltSettingStatus)
        ):
            if dev is None or not dev.handle_reply(id, msg):
                # a late reply to a transfer that timed out or was cancelled (usbredirhost answers
                # cancel_data_packet with one), or a bogus id: nothing is kept for it
                self.ignored_replies += 1
                log.debug("usbredir:%d: %s id %d answers nothing pending", self.channel_id, type(msg).__name__, id)
        else:  # filter_filter from the client, bulk streams status
            log.debug("usbredir:%d: %s ignored", self.channel_id, type(msg).__name__)

    def _filter_allows(self) -> bool:
        c, i = self._connect, self._interfaces
        if c is None:
            return True
        ifaces = (
            [] if i is None else list(zip(i.interface_class, i.interface_subclass, i.interface_protocol, strict=True))
        )
        return self.hub.allows(c.device_class, ifaces, c.vendor_id, c.product_id, c.device_version_bcd)

    def _maybe_create(self) -> None:
        c = self._connect
        if self.device is not None or c is None or self._interfaces is None or self._endpoints is None:
            return
        assert self.loop is not None
        dev = RedirectedUsbDevice(self.channel_id, self.loop, self, c, self._interfaces, self._endpoints)
        self.device = dev
        if not self._filter_allows():
            log.info("usbredir:%d: %r refused by the filter", self.channel_id, dev)
            self.reject_device(dev)
            return
        self._prepare = self.loop.create_task(self._prepare_device(dev))

    async def _prepare_device(self, dev: RedirectedUsbDevice) -> None:
        try:
            await dev.prepare()
        except UsbTransferError as exc:
            if not dev.gone:
                log.warning(
                    "usbredir:%d: fetching the descriptors of %r failed (%s): rejecting it", self.channel_id, dev, exc
                )
                self.reject_device(dev)
            return
        if dev.gone or dev is not self.device:
            return
        dev.attached = True
        log.info("usbredir:%d: %r attached", self.channel_id, dev)
        self.hub.notify(True, dev)

    def _device_gone(self, why: str) -> None:
        dev, self.device = self.device, None
        task, self._prepare = self._prepare, None
        if task is not None and not task.done():
            task.cancel()
        if dev is None:
            return
        was_attached = dev.attached
        dev.mark_gone()
        dev.attached = False
        if was_attached:
            log.info("usbredir:%d: %r detached (%s)", self.channel_id, dev, why)
            self.hub.notify(False, dev)


class UsbRedirChannel(SpiceVmcChannel):
    """A parsed usbredir channel: the server is the usb-guest (see the module docstring).

    Args:
        ctx: the server services.
        hub: the :class:`UsbRedirection` the channel reports its devices to.
        channel_id: the channel id.
        lz4: offer SPICEVMC_CAP_DATA_COMPRESS_LZ4 (libspice built with LZ4 does); False: the client
            sends and gets plain SPICEVMC_DATA only.
    """

    TYPE = ChannelType.USBREDIR

    def __init__(self, ctx: ServerContext, hub: UsbRedirection, channel_id: int = 0, lz4: bool = True) -> None:
        self.endpoint = UsbRedirEndpoint(hub, channel_id)
        super().__init__(ctx, self.endpoint, channel_id, (SpicevmcCap.DATA_COMPRESS_LZ4,) if lz4 else ())
        self.hub = hub
        hub.channels.append(self)

    @property
    def usb_device(self) -> RedirectedUsbDevice | None:
        """The attached device, if any."""
        dev = self.endpoint.device
        return dev if dev is not None and dev.attached else None

    def create_client(self, conn: ChannelConnection, link: Link, session: Session) -> UsbRedirClient:
        """The channel's client: a fresh usbredir session."""
        return UsbRedirClient(self, conn, link, session)

    def client_gone(self, cc: Any) -> None:
        """The client left: its device is detached."""
        if cc is self.client:
            self.endpoint.end_session()
        super().client_gone(cc)

    async def close(self) -> None:
        """The server is closing: the device is detached."""
        await super().close()
        if self in self.hub.channels:
            self.hub.channels.remove(self)


class UsbRedirClient(SpiceVmcClient):
    """The client of a parsed usbredir channel: our hello first, then the spicevmc start."""

    channel: UsbRedirChannel

    async def start(self, now: float) -> None:
        """Start a usbredir session, then let its packets flow."""
        self.channel.endpoint.start_session()
        self.channel.take_pending()  # nothing from an earlier session goes to this client
        await super().start(now)


class UsbRedirPassthroughChannel(SpiceVmcChannel):
    """The usbredir channel over a char device, unparsed (QEMU's usb-redir parses usbredir itself).

    Args:
        ctx: the server services.
        device: the char device.
        channel_id: the channel id.
    """

    TYPE = ChannelType.USBREDIR

    def __init__(self, ctx: ServerContext, device: VmcDevice, channel_id: int = 0) -> None:
        super().__init__(ctx, device, channel_id)
