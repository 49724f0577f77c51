"""Main channel: session start, channel list, mouse mode, agent state, pings and the network test.

Counterpart of spice ``server/main-channel.cpp`` and ``main-channel-client.cpp`` (INIT, channels list,
mouse mode, ``start_net_test`` / ``handle_pong``, name and uuid, notify) and the glue in ``reds.cpp``
(``reds_update_mouse_mode``, ``reds_set_client_mouse_allowed``, the agent's presence).

The channel object owns the server-wide state a client session starts from: the mouse mode (server
or client; client mode needs a tablet with a single display, or the guest agent) and whether a guest
agent is attached. A main link opens a new session (replacing the current client, as libspice);
when the main channel of a session closes, every channel of the session is closed.
The client sees an agent (AGENT_CONNECTED[_TOKENS] / AGENT_DISCONNECTED, INIT's agent_connected) when a
guest agent is attached or, failing that, when the host answers agent duties itself
(:mod:`spiceserver.channels.host_agent`); when one replaces the other, or the host agent's capabilities
change, the client is told the agent went and came back, so it starts over with the new one. Agent mouse
mode still needs a guest agent. The client's AGENT_DATA costs one of the tokens the server granted
(``AGENT_TOKENS`` in INIT / AGENT_CONNECTED_TOKENS; AGENT_DATA beyond them is a protocol error, as
libspice's "token violation") and they go back in AGENT_TOKEN batches of ``AGENT_TOKENS_BATCH`` once
consumed (libspice ``REDS_TOKENS_TO_SEND``); pieces sent before AGENT_START are dropped uncounted. With
the host agent the pieces feed the session's :class:`~spiceserver.channels.host_agent.HostAgentClient`
(a malformed stream closes the main channel, hence the session, as libspice's ``mcc->shutdown()``); its
answers go out as AGENT_DATA within the tokens the client gave (AGENT_START, AGENT_TOKEN). The guest
agent's data path is :mod:`spiceserver.channels.guest_agent` (the agent on a char device).
The channel listens to the multimedia clock (:mod:`spiceserver.mmtime`): when a stream raises its
latency every client gets MULTI_MEDIA_TIME (``reds_send_mm_time``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from typing import Protocol, runtime_checkable

from ..errors import ConfigError, ProtocolError
from ..metrics import DeviceMetrics
from ..mmtime import ClockUpdate
from ..proto.channel import ChannelConnection, PongReceived
from ..proto.channel_client import StateTable
from ..proto.enums import ChannelType, MainCap, MouseMode, NotifySeverity, NotifyVisibility
from ..proto.messages import main as m
from ..proto.messages.base import Notify
from ..proto.vdagent import AgentMessage, split_message
from ..roles import Role
from .base import Channel, ChannelClient, Link, LoopChannel, ServerContext
from .chardev import CharDevice
from .guest_agent import GuestAgent
from .host_agent import HostAgentClient
from .inputs import InputsChannel
from .migration import Migration
from .role_enforce import agent_allowed, visible_channels
from .session import Session

__all__ = ["MainChannel", "MainChannelClient", "MouseModeFollower", "NetTest", "AGENT_TOKENS", "AGENT_TOKENS_BATCH", "NET_TEST_BYTES"]

log = logging.getLogger("spiceserver")

AGENT_TOKENS = 10  # REDS_AGENT_WINDOW_SIZE
AGENT_TOKENS_BATCH = 5  # REDS_TOKENS_TO_SEND
#: server -> client agent pieces held while the client gives no tokens; more are dropped (logged)
MAX_PENDING_AGENT_PIECES = 256
NET_TEST_BYTES = 250 * 1024
LOW_BANDWIDTH_BPS = 10 * 1024 * 1024  # below this the client is "low bandwidth"


class NetStage(enum.Enum):
    IDLE = 0
    WARMUP = 1
    LATENCY = 2
    RATE = 3
    COMPLETE = 4
    INVALID = 5


class NetTest:
    """Latency and bandwidth from three pings, as libspice measures them.

    PING(0) warms up, PING(0) measures latency (the smaller round trip of the two), PING(250 KiB)
    measures the rate: bits / (its round trip - latency).
    """

    def __init__(self) -> None:
        self.stage = NetStage.IDLE
        self.first_id = 0
        self.latency: float | None = None  # seconds
        self.bitrate: float | None = None  # bits per second

    def start(self, conn: ChannelConnection, now: float) -> None:
        """Send the three pings."""
        self.stage = NetStage.WARMUP
        self.first_id = conn.send_ping(now, 0)
        conn.send_ping(now, 0)
        conn.send_ping(now, NET_TEST_BYTES)

    def on_pong(self, pong: PongReceived) -> bool:
        """Feed a pong; True when it belonged to the test."""
        offset = pong.id - self.first_id
        if self.stage not in (NetStage.WARMUP, NetStage.LATENCY, NetStage.RATE) or not 0 <= offset <= 2:
            return False
        if offset == 0:
            self.latency = pong.rtt
            self.stage = NetStage.LATENCY
        elif offset == 1:
            self.latency = min(self.latency if self.latency is not None else pong.rtt, pong.rtt)
            self.stage = NetStage.RATE
        else:
            latency = self.latency or 0.0
            if pong.rtt <= latency:
                self.stage = NetStage.INVALID
                self.latency = None
            else:
                self.bitrate = NET_TEST_BYTES * 8 / (pong.rtt - latency)
                self.stage = NetStage.COMPLETE
        return True

    @property
    def complete(self) -> bool:
        """Latency and bitrate are known."""
        return self.stage is NetStage.COMPLETE

    @property
    def low_bandwidth(self) -> bool:
        """The measured bitrate is below 10 Mbps."""
        return self.bitrate is not None and self.bitrate < LOW_BANDWIDTH_BPS


@runtime_checkable
class MouseModeFollower(Protocol):
    """A channel that acts on the mouse mode (the inputs channel routes motion by it; a display's
    cursor channel stops sending MOVE in client mode)."""

    def on_mouse_mode(self, mode: MouseMode) -> None:
        """The mouse mode is now ``mode`` (event loop)."""


class MainChannel(LoopChannel):
    """The main channel: sessions, mouse mode arbitration and the guest agent's presence.

    Args:
        ctx: the server's shared services.
        inputs: the inputs channel (its tablet decides whether client mouse mode is possible).
    """

    TYPE = ChannelType.MAIN
    #: libspice ``MAIN_CHANNEL_RECEIVE_BUF_SIZE``: 4096 bytes plus eleven agent messages of 2048
    MAX_MESSAGE_SIZE = 4096 + 11 * 2048

    def __init__(self, ctx: ServerContext, inputs: InputsChannel) -> None:
        caps = (MainCap.NAME_AND_UUID, MainCap.AGENT_CONNECTED_TOKENS, MainCap.SEMI_SEAMLESS_MIGRATE)
        super().__init__(ctx, 0, caps + ((MainCap.SEAMLESS_MIGRATE,) if ctx.config.seamless_migration else ()))
        self.inputs = inputs
        self._mode = MouseMode.SERVER
        self._agent_attached = False
        #: the guest agent's char device, once the host added one (:meth:`add_guest_agent`)
        self.guest_agent: GuestAgent | None = None
        # the agent the clients see: None, "guest", or the host agent's announced caps
        self._agent: object = ctx.host_agent.announced_caps
        inputs.on_pointer_change.append(self.update_mouse_mode)
        ctx.host_agent.subscribe(lambda caps: self._agent_changed())
        ctx.registry.subscribe(self._channel_added)
        ctx.clock.add_listener(self._clock_changed)
        #: both sides of a live migration (:mod:`spiceserver.channels.migration`)
        self.migration = Migration(self)

    # --- sessions ------------------------------------------------------------------------------

    def join(self, link: Link) -> Session | None:
        """A main link starts a new session with the role its link was granted (ending the sessions
        it replaces, :class:`~spiceserver.channels.session.SessionTable`); a migrating client's
        keeps its source's id. None when there is no room for it any more."""
        cid = link.mess.connection_id
        target = self.migration.target_state_for(cid)
        session = self.ctx.sessions.open(link.role or Role.OWNER, link.peer, link.ticket_role, None if target is None else (cid, target))
        if session is not None:
            link.log.info("%s session %#x started (mini header: %s)", session.role, session.id, link.mini_header)
        return session

    def create_client(self, conn: ChannelConnection, link: Link, session: Session) -> MainChannelClient:
        """The session's main channel client."""
        cc = MainChannelClient(self, conn, link, session)
        session.main = cc
        return cc

    def client_gone(self, cc: ChannelClient) -> None:
        """The main channel closed: so does the whole session."""
        if cc.session.main is cc:
            cc.log.info("main channel closed: ending session %#x", cc.session.id)
            self.ctx.sessions.close(cc.session)

    def _channel_added(self, channel: Channel) -> None:
        if isinstance(channel, MouseModeFollower):
            channel.on_mouse_mode(self._mode)
        key = (channel.type, channel.id)
        if channel.type != ChannelType.MAIN:
            self.broadcast(lambda cc: cc.send_channels_list(visible_channels(cc.session.role, [key])) if cc.attached else None)
        if channel.type == ChannelType.DISPLAY:  # client mouse mode needs a single display
            self.update_mouse_mode()

    # --- mouse mode ----------------------------------------------------------------------------

    @property
    def mouse_mode(self) -> MouseMode:
        """The current mouse mode."""
        return self._mode

    @property
    def client_mouse_allowed(self) -> bool:
        """libspice ``reds_update_mouse_mode``: agent mouse, or a tablet with a single display."""
        if self.ctx.config.agent_mouse and self._agent_attached:
            return True
        return self.inputs.tablet is not None and self.ctx.registry.count(ChannelType.DISPLAY) <= 1

    @property
    def supported_mouse_modes(self) -> int:
        """The mouse modes a client may ask for (a MouseMode mask)."""
        return int(MouseMode.SERVER | (MouseMode.CLIENT if self.client_mouse_allowed else 0))

    def request_mouse_mode(self, mode: int) -> None:
        """A client (or the host) asks for a mouse mode; refused quietly when not possible."""
        if mode == MouseMode.CLIENT and not self.client_mouse_allowed:
            log.info("client mouse mode requested but not available (no tablet)")
            return
        self._set_mouse_mode(MouseMode(mode))

    def _set_mouse_mode(self, mode: MouseMode) -> None:
        if mode == self._mode:
            return
        self._mode = mode
        for channel in self.ctx.registry:
            if isinstance(channel, MouseModeFollower):
                channel.on_mouse_mode(mode)
        self.broadcast(lambda cc: cc.send_mouse_mode())

    def update_mouse_mode(self) -> None:
        """Re-evaluate the modes after a device change, and tell the clients."""
        if self._mode == MouseMode.CLIENT and not self.client_mouse_allowed:
            self._set_mouse_mode(MouseMode.SERVER)
        else:
            self.broadcast(lambda cc: cc.send_mouse_mode())

    # --- multimedia clock ----------------------------------------------------------------------

    def _clock_changed(self, update: ClockUpdate) -> None:
        """The mm-time latency changed (any thread): every client gets MULTI_MEDIA_TIME with the
        update's ``now - latency`` (libspice ``reds_send_mm_time``)."""
        log.debug("mm-time latency now %d ms (%s)", update.latency, update.reason)
        self.broadcast(lambda cc: cc.send_multi_media_time(update.time))

    # --- agent ---------------------------------------------------------------------------------

    @property
    def agent_attached(self) -> bool:
        """A guest agent is present."""
        return self._agent_attached

    @property
    def agent_present(self) -> bool:
        """The clients see an agent: a guest agent, or the host agent with at least one duty."""
        return self._agent is not None

    @property
    def host_agent_serving(self) -> bool:
        """The clients' agent streams go to the host agent (it is active and no guest agent is attached)."""
        return self._agent is not None and self._agent != "guest"

    def device_metrics(self) -> DeviceMetrics | None:
        """The guest agent's counters (None without one)."""
        return None if self.guest_agent is None else self.guest_agent.device_metrics()

    def add_guest_agent(self, device: CharDevice) -> GuestAgent:
        """Relay the guest agent on ``device`` (any thread before the loop runs, else the loop): it is
        attached while the device is open (:mod:`spiceserver.channels.guest_agent`)."""
        if self.guest_agent is not None:
            raise ConfigError("a guest agent device is registered already")
        agent = GuestAgent(self.ctx, device, self.set_agent_attached)
        self.guest_agent = agent
        loop = self.ctx.gate.loop
        if loop is not None:
            self.ctx.gate.run(lambda: agent.start(loop))
        return agent

    def on_loop_start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start reading the guest agent's device."""
        if self.guest_agent is not None:
            self.guest_agent.start(loop)

    async def close(self) -> None:
        """Close the guest agent's device."""
        if self.guest_agent is not None:
            await self.guest_agent.close()

    def set_agent_attached(self, attached: bool) -> None:
        """The guest agent came or went (event loop): tell the clients, re-evaluate the mouse modes."""
        if attached == self._agent_attached:
            return
        self._agent_attached = attached
        guest = self.guest_agent
        if attached and guest is not None and self.ctx.config.agent_mouse:
            self.inputs.agent_mouse = lambda st: guest.mouse_state(st.pack())
        else:
            self.inputs.agent_mouse = None
        self._agent_changed()
        self.update_mouse_mode()

    def _agent_changed(self) -> None:
        """The agent the clients should see (event loop): when it is another one, the clients are
        told the old one went and the new one came (the client starts its agent session over)."""
        new: object = "guest" if self._agent_attached else self.ctx.host_agent.announced_caps
        old, self._agent = self._agent, new
        if new == old:
            return

        def tell(cc: MainChannelClient) -> None:
            if not agent_allowed(cc.session.role):
                return
            if old is not None:
                cc.send_agent_state(False)
            if new is not None:
                cc.send_agent_state(True)

        self.broadcast(tell)


class MainChannelClient(ChannelClient):
    """The main channel of one client session."""

    def __init__(self, main: MainChannel, conn: ChannelConnection, link: Link, session: Session) -> None:
        super().__init__(conn, link, session)
        self.main = main
        self.config = main.ctx.config
        self.tables = {
            None: StateTable(
                {
                    m.AttachChannels: self._on_attach_channels,
                    m.MouseModeRequest: self._on_mouse_mode_request,
                    m.AgentStart: self._on_agent_start,
                    m.ClientAgentData: self._on_agent_data,
                    m.ClientAgentToken: self._on_agent_token,
                    m.ClientInfo: self._on_client_info,
                    PongReceived: self._on_pong,
                    **main.migration.handlers(self),
                }
            )
        }
        self.session_id = session.id
        self.unix = link.unix
        self.net_test = NetTest()
        self.attached = False
        self.agent_started = False
        self.agent_tokens = 0  # AGENT_DATA the client lets the server send (AGENT_START, AGENT_TOKEN)
        self.client_tokens = AGENT_TOKENS  # AGENT_DATA the client may still send
        self._tokens_consumed = 0  # consumed pieces not yet given back
        self.host_agent: HostAgentClient | None = None
        self._agent_out: list[bytes] = []  # pieces waiting for the client's tokens
        self._next_ping: float | None = None
        self._init_sent = False

    async def start(self, now: float) -> None:
        """INIT, NAME and UUID; the network test; the first ping. A migrating client gets nothing
        yet (:mod:`spiceserver.channels.migration` goes on)."""
        if self.session.migration is None:
            await self.welcome(now)

    async def welcome(self, now: float, net_test: bool = True) -> None:
        """INIT, NAME and UUID; the network test (if ``net_test``); the first ping."""
        cfg = self.config
        main = self.main
        self.conn.send(
            m.Init(
                session_id=self.session_id,
                display_channels_hint=main.ctx.registry.count(ChannelType.DISPLAY),
                supported_mouse_modes=main.supported_mouse_modes,
                current_mouse_mode=main.mouse_mode,
                agent_connected=int(main.agent_present and agent_allowed(self.session.role)),
                agent_tokens=AGENT_TOKENS,
                multi_media_time=main.ctx.clock.init_time(),
                ram_hint=0,
            )
        )
        self._init_sent = True
        if self.has_channel_cap(MainCap.NAME_AND_UUID):
            if cfg.name is not None:
                self.conn.send(m.Name(name=cfg.name.encode() + b"\0"))
            if cfg.uuid is not None:
                self.conn.send(m.Uuid(uuid=cfg.uuid.bytes))
        if cfg.net_test and net_test and not self.unix:
            self.net_test.start(self.conn, now)
        self.start_pings(now)

    def start_pings(self, now: float) -> None:
        """Send a liveness ping every ``ping_interval`` from now on."""
        if self.config.ping_interval > 0:
            self._next_ping = now + self.config.ping_interval

    def pending_agent_pieces(self) -> list[bytes]:
        """Agent pieces waiting for the client's tokens."""
        return list(self._agent_out)

    def send_multi_media_time(self, mm_time: int) -> None:
        """SPICE_MSG_MAIN_MULTI_MEDIA_TIME (after INIT only)."""
        if self._init_sent:
            self.conn.send(m.MultiMediaTime(time=mm_time))

    def _on_attach_channels(self, msg: m.AttachChannels, now: float) -> None:
        self.attached = True
        self.send_channels_list(visible_channels(self.session.role, self.main.ctx.registry.ids()))

    def send_channels_list(self, channels: list[tuple[int, int]]) -> None:
        """SPICE_MSG_MAIN_CHANNELS_LIST with ``channels`` (type, id)."""
        self.conn.send(m.ChannelsList(channels=tuple(m.ChannelId(type=t, id=i) for t, i in channels)))

    def _on_mouse_mode_request(self, msg: m.MouseModeRequest, now: float) -> None:
        if msg.mode not in (MouseMode.SERVER, MouseMode.CLIENT):
            self.log.warning("unsupported mouse mode %d requested", msg.mode)
            return
        if not agent_allowed(self.session.role):
            self.log.debug("mouse mode request from a %s session ignored", self.session.role)
            return
        self.main.request_mouse_mode(msg.mode)

    def send_mouse_mode(self) -> None:
        """SPICE_MSG_MAIN_MOUSE_MODE with the current modes."""
        self.conn.send(m.MouseMode(supported_modes=self.main.supported_mouse_modes, current_mode=self.main.mouse_mode))

    def send_agent_state(self, attached: bool) -> None:
        """Tell the client the agent came or went (libspice ``main_channel_push_agent_*``)."""
        if not attached:
            self.conn.send(m.AgentDisconnected(error_code=0))
            self.agent_started = False  # the client must send AGENT_START again
            self._drop_host_agent()
            self._agent_out.clear()
        elif self.has_channel_cap(MainCap.AGENT_CONNECTED_TOKENS):
            self.conn.send(m.AgentConnectedTokens(num_tokens=AGENT_TOKENS))
            self.client_tokens, self._tokens_consumed = AGENT_TOKENS, 0  # the client's count restarts too
        else:
            self.conn.send(m.AgentConnected())

    def _on_agent_start(self, msg: m.AgentStart, now: float) -> None:
        if not agent_allowed(self.session.role):  # it was never told of an agent
            self.log.info("AGENT_START from a %s session ignored", self.session.role)
            return
        self.agent_started = True
        self.agent_tokens = msg.num_tokens
        guest = self.main.guest_agent
        self._drop_host_agent()
        if self.main.host_agent_serving:
            self.host_agent = self.main.ctx.host_agent.client(self.log, self.push_agent_messages)
        elif guest is not None and guest.attached:
            guest.client_started(self)

    async def _on_agent_data(self, msg: m.ClientAgentData, now: float) -> None:
        if not self.agent_started:  # sent before the client heard the agent went: dropped, as libspice
            self.log.debug("agent data (%d bytes) dropped: the agent session is not started", len(msg.data))
            return
        if self.client_tokens == 0:
            raise ProtocolError("agent data beyond the granted tokens")
        self.client_tokens -= 1
        done = True
        try:
            guest = self.main.guest_agent
            if self.host_agent is not None:
                await self.host_agent.feed(msg.data)
                self.send_agent_messages(self.host_agent.take_messages())
            elif guest is not None:
                done = guest.from_client(self, msg.data)
            else:
                self.log.debug("agent data (%d bytes) dropped: no agent", len(msg.data))
        finally:
            if done:
                self._piece_consumed()

    def _piece_consumed(self) -> None:
        """One of the client's pieces was used up: its token goes back, in batches (libspice
        ``REDS_TOKENS_TO_SEND``)."""
        self._tokens_consumed += 1
        if self._tokens_consumed >= AGENT_TOKENS_BATCH:
            self.conn.send(m.AgentToken(num_tokens=self._tokens_consumed))
            self.client_tokens += self._tokens_consumed
            self._tokens_consumed = 0

    def agent_piece_done(self) -> None:
        """The guest agent took a piece it had to hold (event loop, outside message handling)."""
        self._piece_consumed()
        if self.transport is not None:
            self.transport.flush()

    def agent_backlog(self) -> int:
        """Bytes of agent data not yet taken by the client's socket, or waiting for its tokens."""
        unsent = self.transport.unsent if self.transport is not None else 0
        return unsent + sum(map(len, self._agent_out))

    def send_agent_pieces(self, pieces: list[bytes]) -> None:
        """AGENT_DATA pieces from the guest agent, within the client's tokens (event loop)."""
        if len(self._agent_out) + len(pieces) > MAX_PENDING_AGENT_PIECES:
            self.log.warning("%d agent pieces dropped: the client gives no agent tokens", len(pieces))
            return
        self._agent_out.extend(pieces)
        self._flush_agent_out()
        if self.transport is not None:
            self.transport.flush()

    def send_agent_messages(self, msgs: list[AgentMessage]) -> None:
        """Send agent messages to the client as AGENT_DATA pieces, within the tokens it gave."""
        for msg in msgs:
            pieces = split_message(msg)  # what the tokens let out at once is not held
            if len(self._agent_out) + len(pieces) - self.agent_tokens > MAX_PENDING_AGENT_PIECES:
                self.log.warning("agent message type %d dropped: the client gives no agent tokens", msg.type)
                continue
            self._agent_out.extend(pieces)
        self._flush_agent_out()

    def push_agent_messages(self, msgs: list[AgentMessage]) -> None:
        """Send agent messages outside message handling (the host agent's own messages; event loop)."""
        if not self.closed:
            self.send_agent_messages(msgs)
            if self.transport is not None:
                self.transport.flush()

    def _drop_host_agent(self) -> None:
        if self.host_agent is not None:
            self.host_agent.close()
            self.host_agent = None

    def _flush_agent_out(self) -> None:
        n = min(len(self._agent_out), self.agent_tokens)
        for piece in self._agent_out[:n]:
            self.conn.send(m.AgentData(data=piece))
        del self._agent_out[:n]
        self.agent_tokens -= n

    def _on_agent_token(self, msg: m.ClientAgentToken, now: float) -> None:
        self.agent_tokens = min(self.agent_tokens + msg.num_tokens, 0xFFFFFFFF)
        self._flush_agent_out()

    async def on_close(self) -> None:
        """The guest agent hears the client went (VD_AGENT_CLIENT_DISCONNECTED); the host agent forgets it."""
        self._drop_host_agent()
        if self.main.guest_agent is not None:
            self.main.guest_agent.client_gone(self)

    def _on_client_info(self, msg: m.ClientInfo, now: float) -> None:
        self.log.debug("client cache size %d", msg.cache_size)

    def _on_pong(self, pong: PongReceived, now: float) -> None:
        if self.net_test.on_pong(pong):
            if self.net_test.complete:
                assert self.net_test.latency is not None and self.net_test.bitrate is not None
                self.log.info(
                    "net test: latency %.3f ms, bitrate %.1f Mbps%s",
                    self.net_test.latency * 1000,
                    self.net_test.bitrate / 1e6,
                    " (low bandwidth)" if self.net_test.low_bandwidth else "",
                )
            elif self.net_test.stage is NetStage.INVALID:
                self.log.info("net test: invalid round trips, bandwidth unknown")

    def notify(self, text: str, severity: int = NotifySeverity.WARN, visibility: int = NotifyVisibility.HIGH) -> None:
        """SPICE_MSG_NOTIFY with ``text`` (followed by a NUL that the length does not count, as libspice)."""
        self.push(
            Notify(
                time_stamp=int(time.time() * 1000),
                severity=severity,
                visibility=visibility,
                what=0,
                message=text.encode(),
            )
        )

    def next_timer(self) -> float | None:
        """The next liveness ping."""
        return self._next_ping

    async def on_timer(self, now: float) -> None:
        """Send the liveness ping when due."""
        if self._next_ping is not None and now >= self._next_ping:
            self.conn.send_ping(now, 0)
            self._next_ping = now + self.config.ping_interval
