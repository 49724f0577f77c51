"""Channels as objects: a channel, its clients, and the server services they share.

Counterpart of spice ``server/red-channel.cpp`` (a channel offered to clients: its type, id, caps
and connected clients), ``red-channel-client.cpp`` (one client's connection to it: message
dispatch, a bad message closes only this client) and the parts of ``reds.cpp`` every channel uses
(the client list; the multimedia clock itself is :mod:`spiceserver.mmtime`).

The server links a connection (:mod:`spiceserver.reds`) and hands the result, a :class:`Link`, to
the channel registered for the requested (type, id); from then on the channel serves it:

* :class:`LoopChannel` serves clients on the event loop (main, inputs, and next playback, record,
  the char-device channels): one task per client reads, feeds the sans-IO
  :class:`~spiceserver.proto.channel.ChannelConnection`, and hands each message to the
  :class:`ChannelClient`, awaiting device callbacks in order.
* display and cursor channels hand their clients to a display worker thread
  (:mod:`spiceserver.channels.worker_link`).

A channel holds its shared state (the inputs channel: devices and lock keys; main: the mouse mode
and the agent) and its clients; every channel client writes through a
:class:`~spiceserver.transport.Transport`, whose ``post`` is safe from any thread.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..config import ChannelSecurity, ServerConfig
from ..errors import ProtocolError
from ..events import ChannelListeners, ConnLog
from ..metrics import DeviceMetrics, SoundMetrics
from ..mmtime import MediaClock
from ..proto.channel import ChannelConnection, Event
from ..proto.channel_client import ChannelClientBase
from ..proto.enums import CHANNEL_NAMES, ChannelType, CommonCap, LinkErr
from ..proto.link import LinkMess, caps_to_words, has_cap
from ..proto.messages import base as basemsg
from ..proto.messages.base import SERVER, Message
from ..roles import OWNER_ONLY_CHANNELS, Role, RolePolicy
from ..transport import READ_CHUNK, LoopGate, MessageCuts, Reader, Transport, Writer
from .host_agent import HostAgent
from .registry import ChannelRegistry
from .session import Session, SessionTable

__all__ = ["ServerContext", "Link", "Channel", "LoopChannel", "SingleClientChannel", "ChannelClient", "maybe_await"]

log = logging.getLogger("spiceserver")

#: messages of one read handled before a loop channel's pump lets other tasks run
FEED_BATCH = 64

async def maybe_await(result: Any) -> None:
    """Await ``result`` if a device callback returned an awaitable."""
    if inspect.isawaitable(result):
        await result


@dataclass(eq=False)
class ServerContext:
    """The server services every channel may use (not the server object: no channel sees it).

    Attributes:
        config: the server's configuration.
        gate: runs functions on the event loop from any thread.
        sessions: the connected clients.
        listeners: the application's channel listeners.
        registry: the offered channels.
        stats: server counters (connections, links, protocol errors, ...), for the metrics.
        traffic: bytes per (channel name, ``"in"`` | ``"out"``).
        open_channels: connected channel clients per channel name.
        start_time: the monotonic time the server was created at.
        clock: the multimedia clock (counts from ``start_time``).
        host_agent: the agent duties the host answers itself (:mod:`spiceserver.channels.host_agent`).
        client_monitors_config: the display devices' take on a client's monitor layout, heads
            ``(x, y, width, height)`` (:meth:`~spiceserver.channels.display.Displays.client_monitors_config`,
            which sets it; None: no displays).
        role_policy: the host's say on a new session's role (:mod:`spiceserver.roles`).
    """

    config: ServerConfig
    gate: LoopGate = field(default_factory=LoopGate)
    sessions: SessionTable = field(default_factory=lambda: SessionTable(log))
    listeners: ChannelListeners = field(default_factory=lambda: ChannelListeners(log))
    registry: ChannelRegistry = field(init=False)
    stats: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("connections", "links_ok", "links_failed", "protocol_errors", "websocket_links", "http_requests", "sasl_ok", "sasl_failed"), 0
        )
    )
    traffic: Counter[tuple[str, str]] = field(default_factory=Counter)
    open_channels: Counter[str] = field(default_factory=Counter)
    start_time: float = field(default_factory=time.monotonic)
    clock: MediaClock = field(init=False)
    host_agent: HostAgent = field(init=False)
    client_monitors_config: Callable[[Sequence[tuple[int, int, int, int]] | None], bool] | None = None
    role_policy: RolePolicy | None = None

    def __post_init__(self) -> None:
        self.sessions.max_clients = self.config.max_clients
        self.registry = ChannelRegistry(self.gate.run)
        self.clock = MediaClock(time.monotonic, self.start_time)
        self.host_agent = HostAgent(self.gate.run)

    def mm_time(self) -> int:
        """The multimedia clock in ms (libspice ``reds_get_mm_time``): ``clock.now()``."""
        return self.clock.now()


@dataclass(eq=False)
class Link:
    """A connection that completed the link for one channel, handed to that channel.

    Attributes:
        reader, writer: the stream (TCP, TLS, Unix or a WebSocket tunnel).
        mess: the client's link message (channel, connection id, caps).
        leftover: bytes the client sent after its ticket (the first messages).
        secure: the connection is TLS.
        unix: the connection came over a Unix socket (no network test).
        log: logs with the connection's context.
        kind: ``"tcp"``, ``"tls"``, ``"unix"``, ``"ws"`` or ``"wss"``.
        peer: the client's address.
        role: the session role the link was granted (:mod:`spiceserver.channels.link_rules`).
        ticket_role: the role of the password its ticket matched (None without ticketing).
    """

    reader: Reader
    writer: Writer
    mess: LinkMess
    leftover: bytes
    secure: bool
    unix: bool
    log: ConnLog
    kind: str = "tcp"
    peer: str = ""
    role: Role | None = None
    ticket_role: Role | None = None

    @property
    def mini_header(self) -> bool:
        """The client asked for the mini header."""
        return has_cap(self.mess.common_caps, CommonCap.MINI_HEADER)

    def message_cuts(self) -> MessageCuts | None:
        """For a TLS connection (not a WebSocket one), the :class:`~spiceserver.transport.MessageCuts`
        its writes go through (spice-gtk needs TLS records to end at message ends)."""
        return MessageCuts(self.mini_header) if self.kind == "tls" else None


class Channel:
    """One channel offered to clients: its type, id, caps, shared state and clients.

    Subclasses set ``TYPE`` and implement :meth:`serve`. Register one with
    ``SpiceServer.register_channel`` (or let a ``SpiceServer.add_*`` call do it); the registry
    announces it to connected clients.
    """

    TYPE: ClassVar[ChannelType]
    #: the largest message body a client may send on this channel (libspice's per-channel receive
    #: buffer); None: only the server's ``max_message_size`` applies. A larger one closes the channel.
    MAX_MESSAGE_SIZE: ClassVar[int | None] = None

    def __init__(self, ctx: ServerContext, channel_id: int = 0, caps: tuple[int, ...] = ()) -> None:
        self.ctx = ctx
        self.id = channel_id
        self.caps = tuple(caps)

    @property
    def type(self) -> int:
        """The channel type (SPICE_CHANNEL_*)."""
        return int(self.TYPE)

    @property
    def name(self) -> str:
        """``"main"``, ``"display"``, ``"inputs"``, ..."""
        return CHANNEL_NAMES.get(self.TYPE, str(int(self.TYPE)))

    def caps_words(self) -> tuple[int, ...]:
        """The channel caps for the link reply."""
        return caps_to_words(set(self.caps))

    def security_refusal(self, secure: bool) -> int | None:
        """The link error for a client on a TLS (``secure``) or plain connection, if the
        configuration refuses that (libspice ``reds_security_check``), else None."""
        allowed = self.ctx.config.channel_security(self.name)
        if secure and not allowed & ChannelSecurity.SSL:
            return LinkErr.NEED_UNSECURED
        if not secure and not allowed & ChannelSecurity.NONE:
            return LinkErr.NEED_SECURED
        return None

    async def serve(self, link: Link) -> None:
        """Serve one linked connection until it ends (the caller closes the stream)."""
        raise NotImplementedError

    def on_loop_start(self, loop: asyncio.AbstractEventLoop) -> None:
        """The server started on ``loop`` (channels with threads hook their wake-ups here)."""

    async def close(self) -> None:
        """The server is closing (clients were disconnected already)."""

    def sound_metrics(self) -> SoundMetrics | None:
        """A sound channel's counters for the server's metrics; None for other channels."""
        return None

    def device_metrics(self) -> DeviceMetrics | None:
        """A char-device channel's counters (the main channel: its guest agent's); None for others."""
        return None

    @property
    def max_message_size(self) -> int:
        """The largest message body accepted from this channel's clients."""
        limit = self.ctx.config.max_message_size
        return limit if self.MAX_MESSAGE_SIZE is None else min(limit, self.MAX_MESSAGE_SIZE)

    def join(self, link: Link) -> Session | None:
        """The session a link belongs to, now holding this channel; None (logged) when the session
        went away during the link or already has this channel: as libspice, the new connection is
        refused and the one in place stays."""
        session = self.ctx.sessions.get(link.mess.connection_id)
        if session is None:
            link.log.info("session or channel went away during the link")
            return None
        if session.role is not Role.OWNER and self.type in OWNER_ONLY_CHANNELS:  # demoted during the link
            link.log.info("session %#x is a %s now; closing the %s connection", session.id, session.role, self.name)
            return None
        key = (self.type, self.id)
        if key in session.linked:
            self.ctx.stats["protocol_errors"] += 1
            link.log.warning("duplicate channel %s:%d in session %#x; closing the new connection", self.name, self.id, session.id)
            return None
        session.linked.add(key)
        return session

    def leave(self, session: Session) -> None:
        """The channel's connection in ``session`` ended: the session may link it again."""
        session.linked.discard((self.type, self.id))


class ChannelClient(ChannelClientBase):
    """One client's connection to one loop channel, above the wire.

    Dispatch is :class:`~spiceserver.proto.channel_client.ChannelClientBase`'s, shared with the
    worker-side display and cursor clients: a subclass sets ``self.tables`` (state -> message class
    -> bound handler; one state, ``None``, unless the channel has phases). Messages without a
    handler are ignored after the base-channel bookkeeping the connection already did. Handlers
    may be coroutines: :meth:`handle` awaits them, in order. The transport is set before
    :meth:`start`; use :meth:`push` to send from outside the client's own message handling (it
    writes at once).
    """

    def __init__(self, conn: ChannelConnection, link: Link, session: Session) -> None:
        super().__init__(conn, ack_window=None, high_water=None)
        self.mess = link.mess
        self.secure = link.secure
        self.log = link.log
        self.session = session
        self.transport: Transport | None = None
        self.closed = False

    def has_channel_cap(self, cap: int) -> bool:
        """The client announced this channel cap."""
        return has_cap(self.mess.channel_caps, cap)

    def has_common_cap(self, cap: int) -> bool:
        """The client announced this common cap."""
        return has_cap(self.mess.common_caps, cap)

    def push(self, msg: Message) -> None:
        """Send ``msg`` now (event loop only)."""
        if self.closed:
            return
        self.conn.send(msg)
        if self.transport is not None:
            self.transport.flush()

    async def start(self, now: float) -> None:
        """Queue what the channel sends right after the link."""

    async def handle(self, event: Event, now: float) -> None:
        """Act on one message or event from the client (its handler gets ``(event, now)``)."""
        await maybe_await(self.dispatch(event, now))

    def unhandled(self, event: Event) -> None:
        """A message without a handler: only a client's DISCONNECTING is worth a log line."""
        if isinstance(event, basemsg.ClientDisconnecting):
            self.log.info("client is disconnecting (reason %d)", event.reason)

    def next_timer(self) -> float | None:
        """When :meth:`on_timer` wants to run next (monotonic seconds), or None."""
        return None

    async def on_timer(self, now: float) -> None:
        """Timer callback (pings, timeouts)."""

    async def on_close(self) -> None:
        """The connection is gone: release whatever the channel holds."""


class LoopChannel(Channel):
    """A channel whose clients are served on the event loop.

    Subclasses implement :meth:`create_client`; :meth:`serve` is the generic pump (websockets'
    ``data_received`` over its sans-IO protocol): read with the client's next timer as the
    deadline, feed the connection, hand each message to the client, write what it queued. A
    :class:`~spiceserver.errors.ProtocolError` closes this client only, with the reason logged;
    an exception from a device callback is logged and the message dropped.
    """

    def __init__(self, ctx: ServerContext, channel_id: int = 0, caps: tuple[int, ...] = ()) -> None:
        super().__init__(ctx, channel_id, caps)
        self.clients: list[ChannelClient] = []

    def create_client(self, conn: ChannelConnection, link: Link, session: Session) -> ChannelClient:
        """A new client of this channel."""
        raise NotImplementedError

    def client_gone(self, cc: ChannelClient) -> None:
        """``cc``'s connection ended (after its ``on_close``)."""

    def broadcast(self, fn: Callable[[Any], None]) -> None:
        """From any thread: run ``fn(client)`` for every client on the event loop and write."""

        def run() -> None:
            for cc in list(self.clients):
                if not cc.closed and cc.transport is not None:
                    fn(cc)
                    cc.transport.flush()

        self.ctx.gate.run(run)

    async def serve(self, link: Link) -> None:
        """Serve one client until it goes (see the class docstring)."""
        ctx = self.ctx
        session = self.join(link)
        if session is None:
            return
        target = session.migration  # a migrating client's links wait for the mode (channels.migration)
        if target is not None and session.main is not None and not await target.wait_linkable():
            return self.leave(session)
        conn = ChannelConnection(self.TYPE, SERVER, mini_header=link.mini_header, max_message_size=self.max_message_size)
        cc = self.create_client(conn, link, session)
        if target is not None and session.main is not None:
            target.adopt(cc)
        info = ctx.listeners.connected(session.infos, session.id, self.type, self.id, link.kind, link.peer, str(session.role))
        name = info.channel

        def count_out(n: int) -> None:
            ctx.traffic[name, "out"] += n

        transport = Transport(link.writer, ctx.gate, cc.take_output, count_out, link.log, link.message_cuts())
        cc.transport = transport
        self.clients.append(cc)
        ctx.open_channels[name] += 1
        session.closers.append(transport.close)
        clog = link.log
        loop = asyncio.get_running_loop()
        try:
            await cc.start(loop.time())
            await self._feed(cc, link.leftover, name)
            transport.flush()
            await transport.drain()
            while not cc.closed and not transport.is_closing:
                deadline = cc.next_timer()
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    data = await asyncio.wait_for(link.reader.read(READ_CHUNK), timeout)
                except TimeoutError:
                    await cc.on_timer(loop.time())
                    transport.flush()
                    await transport.drain()
                    continue
                if not data:
                    clog.info("client closed the channel")
                    break
                await self._feed(cc, data, name)
                transport.flush()
                await transport.drain()
        except ProtocolError as exc:
            ctx.stats["protocol_errors"] += 1
            clog.warning("protocol error, closing the channel: %s", exc.reason)
        except OSError as exc:  # ConnectionError, ssl.SSLError
            clog.info("connection lost: %s", exc)
        finally:
            cc.closed = True
            transport.closed = True
            self.leave(session)
            ctx.open_channels[name] -= 1
            ctx.listeners.gone(session.infos, info)
            if cc in self.clients:
                self.clients.remove(cc)
            if transport.close in session.closers:
                session.closers.remove(transport.close)
            try:
                await cc.on_close()
            except Exception:
                clog.exception("error closing the channel")
            self.client_gone(cc)

    async def _feed(self, cc: ChannelClient, data: bytes, name: str) -> None:
        if not data:
            return
        self.ctx.traffic[name, "in"] += len(data)
        now = asyncio.get_running_loop().time()
        for i, ev in enumerate(cc.conn.receive_data(data, now)):
            if i and not i % FEED_BATCH:
                await asyncio.sleep(0)  # one read may hold thousands of messages: let others run
                if cc.closed:
                    return
            try:
                await cc.handle(ev, now)
            except ProtocolError:
                raise
            except Exception:
                cc.log.exception("error handling %s; message dropped", type(ev).__name__)


class SingleClientChannel(LoopChannel):
    """A :class:`LoopChannel` serving one client at a time, as libspice's char-device channels
    (``RedVmcChannel::on_connect``: "refusing second connection"; the smartcard channel): a second
    link while a client is connected is closed with no message, counted in :attr:`refused_links`,
    and the client in place goes on."""

    def __init__(self, ctx: ServerContext, channel_id: int = 0, caps: tuple[int, ...] = ()) -> None:
        super().__init__(ctx, channel_id, caps)
        #: links refused because a client was connected already
        self.refused_links = 0

    async def serve(self, link: Link) -> None:
        """Serve one client; refuse the link while another client is connected."""
        if self.clients:
            self.refused_links += 1
            link.log.warning("%s:%d already has a client; refusing the second connection", self.name, self.id)
            return
        await super().serve(link)
