"""Port and WebDAV channels: a named char device (a guest's virtio-serial port) for one client.

Counterpart of the port half of spice ``server/spicevmc.cpp`` (``spicevmc_port_send_init``,
``spicevmc_port_send_event``, ``RedCharDeviceSpiceVmc::port_event``, SPICE_MSGC_PORT_EVENT in
``VmcChannelClient::handle_message``) and of ``spice_server_port_event``; the client side is
spice-gtk ``src/channel-port.c`` and ``src/channel-webdav.c``. The bytes move as in every spicevmc
channel (:mod:`spiceserver.channels.spicevmc`).

Server to client: PORT_INIT first on connect (the port's name with its NUL, and whether the guest
has the port open), then PORT_EVENT when the guest side opens (OPENED) or closes (CLOSED) the port
or sends another event (BREAK ...): the device's ``device_opened`` and ``device_event``. OPENED and
CLOSED are sent on a change of the open state only (a device that reports a change both ways gives
one event; spice-gtk's WebDAV channel restarts its demultiplexer on every OPENED).

Client to server: PORT_EVENT goes to the device (``device.send_event``) and to the host's
callbacks (:meth:`PortChannel.on_client_event`; libspice ``SpiceCharDeviceInterface.event``).

A WebDAV channel (:class:`WebDavChannel`) is a port named ``org.spice-space.webdav.0`` on channel
type WEBDAV: spice-gtk serves the client's shared folder through it (phodav), multiplexed as
:mod:`spiceserver.channels.webdav_mux` describes.

Host API::

    port = server.register_channel(PortChannel, "org.example.port.0", device, 0)
    remove = port.on_client_event(lambda event: print("client event", event))
    webdav = server.register_channel(WebDavChannel, device_end_for_webdav)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..proto.channel import ChannelConnection
from ..proto.enums import ChannelType
from ..proto.enums import PortEvent as PortEventKind
from ..proto.messages import port as pm
from .base import Link, ServerContext, maybe_await
from .session import Session
from .spicevmc import SpiceVmcChannel, SpiceVmcClient, VmcDevice

__all__ = ["PortChannel", "PortChannelClient", "WebDavChannel", "WEBDAV_PORT_NAME", "ClientEventCallback"]

log = logging.getLogger("spiceserver")

#: the WebDAV channel's port name (spice-server creates a WEBDAV channel for a port of this name)
WEBDAV_PORT_NAME = "org.spice-space.webdav.0"
#: the longest port name accepted (bytes, without the NUL)
MAX_NAME = 255

ClientEventCallback = Callable[[int], "Awaitable[None] | None"]


class PortChannel(SpiceVmcChannel):
    """A named port channel backed by a char device.

    Args:
        ctx: the server services.
        name: the port's name (``org.qemu.monitor.qmp.0``, ...): non-empty UTF-8, no NUL.
        device: the char device (the guest's end of the port).
        channel_id: the channel id.

    Raises:
        ValueError: an empty name, a NUL in it, or a name over 255 bytes.
    """

    TYPE = ChannelType.PORT

    def __init__(self, ctx: ServerContext, name: str, device: VmcDevice, channel_id: int = 0) -> None:
        encoded = name.encode("utf-8")
        if not encoded or b"\0" in encoded or len(encoded) > MAX_NAME:
            raise ValueError(f"bad port name {name!r}: 1 to {MAX_NAME} UTF-8 bytes, no NUL")
        super().__init__(ctx, device, channel_id)
        self.port_name = name
        self._opened = False
        self._event_callbacks: list[ClientEventCallback] = []

    @property
    def metrics_name(self) -> str:
        """The port's name, for the metrics."""
        return self.port_name

    @property
    def opened(self) -> bool:
        """The guest has the port open (as the client was or will be told)."""
        return self._opened

    def on_client_event(self, callback: ClientEventCallback) -> Callable[[], None]:
        """Call ``callback(event)`` (sync, or async: awaited before the client's next message is
        read) on the event loop for each PORT_EVENT a client sends. Returns a function that removes it."""
        self._event_callbacks.append(callback)

        def remove() -> None:
            if callback in self._event_callbacks:
                self._event_callbacks.remove(callback)

        return remove

    async def client_event(self, event: int) -> None:
        """A client's PORT_EVENT: to the device, then to the host's callbacks (event loop)."""
        self.device.send_event(event)
        for callback in list(self._event_callbacks):
            try:
                await maybe_await(callback(event))
            except Exception:
                log.exception("port %s: error in the host's on_client_event callback", self.port_name)

    def create_client(self, conn: ChannelConnection, link: Link, session: Session) -> PortChannelClient:
        """The port's client."""
        link.log.info("port %s linked to session %#x", self.port_name, session.id)
        return PortChannelClient(self, conn, link, session)

    # --- the device's state (event loop) ----------------------------------------------------------

    def device_attached(self) -> None:
        """Take the device's open state."""
        self._opened = bool(self.device.opened)

    def on_device_opened(self, opened: bool) -> None:
        """The guest opened or closed the port: PORT_EVENT OPENED or CLOSED on a change."""
        if opened != self._opened:
            self._opened = opened
            self._send_event(PortEventKind.OPENED if opened else PortEventKind.CLOSED)

    def on_device_event(self, event: int) -> None:
        """A guest-side port event: OPENED / CLOSED update the state (sent on a change), others go as they are."""
        if event in (PortEventKind.OPENED, PortEventKind.CLOSED):
            self.on_device_opened(event == PortEventKind.OPENED)
        else:
            self._send_event(event)

    def _send_event(self, event: int) -> None:
        cc = self.client
        if cc is not None and cc.started and not cc.closed:
            cc.push(pm.PortEvent(event=event))


class PortChannelClient(SpiceVmcClient):
    """A port's client: PORT_INIT first, PORT_EVENT both ways."""

    channel: PortChannel

    def __init__(self, channel: PortChannel, conn: ChannelConnection, link: Link, session: Session) -> None:
        super().__init__(channel, conn, link, session)

    def handlers(self) -> dict[type, Any]:
        """DATA, COMPRESSED_DATA and PORT_EVENT."""
        return {**super().handlers(), pm.ClientPortEvent: self._on_port_event}

    async def start(self, now: float) -> None:
        """PORT_INIT (name with NUL, open state), then the spicevmc start."""
        ch = self.channel
        ch.device_attached()  # the device's state now (its queued open/close events may still follow)
        self.conn.send(pm.PortInit(name=ch.port_name.encode("utf-8") + b"\0", opened=int(ch.opened)))
        await super().start(now)

    async def _on_port_event(self, msg: pm.ClientPortEvent, now: float) -> None:
        await self.channel.client_event(msg.event)


class WebDavChannel(PortChannel):
    """The WebDAV channel: the port ``org.spice-space.webdav.0`` on channel type WEBDAV.

    Args:
        ctx: the server services.
        device: the char device whose other end speaks the WebDAV mux protocol
            (:class:`~spiceserver.channels.webdav_mux.WebDavMux`, or a guest's spice-webdavd).
        channel_id: the channel id.
    """

    TYPE = ChannelType.WEBDAV

    def __init__(self, ctx: ServerContext, device: VmcDevice, channel_id: int = 0) -> None:
        super().__init__(ctx, WEBDAV_PORT_NAME, device, channel_id)

