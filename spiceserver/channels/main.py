"""Main channel: session start, channel list, mouse mode, pings and the network test.

Counterpart of spice ``server/main-channel.cpp`` and ``main-channel-client.cpp`` (INIT, channels list,
mouse mode, ``start_net_test`` / ``handle_pong``, name and uuid, notify) and the glue in ``reds.cpp``.
The agent data path (AGENT_DATA, tokens) arrives with the char-device work; here the agent's presence
is announced (AGENT_CONNECTED[_TOKENS] / AGENT_DISCONNECTED, INIT's agent_connected), AGENT_START and
AGENT_TOKEN are accounted, and AGENT_DATA is dropped with a debug log.
"""

from __future__ import annotations

import enum
import logging
import time
from typing import ClassVar

from ..proto.channel import ChannelConnection, PongReceived
from ..proto.enums import MainCap, MouseMode, NotifySeverity, NotifyVisibility
from ..proto.link import LinkMess
from ..proto.messages import main as m
from ..proto.messages.base import Notify
from .base import ChannelClient, ServerCore

__all__ = ["MainChannelClient", "NetTest", "AGENT_TOKENS", "NET_TEST_BYTES"]

AGENT_TOKENS = 10  # REDS_AGENT_WINDOW_SIZE
NET_TEST_BYTES = 250 * 1024
LOW_BANDWIDTH_BPS = 10 * 1024 * 1024  # below this the client is "low bandwidth"
MM_TIME_DELTA_MS = 400


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
        return self.stage is NetStage.COMPLETE

    @property
    def low_bandwidth(self) -> bool:
        return self.bitrate is not None and self.bitrate < LOW_BANDWIDTH_BPS


class MainChannelClient(ChannelClient):
    """The main channel of one client session."""

    HANDLERS: ClassVar[dict[type, str]] = {
        m.AttachChannels: "_on_attach_channels",
        m.MouseModeRequest: "_on_mouse_mode_request",
        m.AgentStart: "_on_agent_start",
        m.ClientAgentData: "_on_agent_data",
        m.ClientAgentToken: "_on_agent_token",
        m.ClientInfo: "_on_client_info",
        PongReceived: "_on_pong",
    }

    def __init__(
        self,
        core: ServerCore,
        conn: ChannelConnection,
        link: LinkMess,
        *,
        secure: bool,
        log: logging.LoggerAdapter[logging.Logger],
        session_id: int,
        unix: bool = False,
    ) -> None:
        super().__init__(core, conn, link, secure=secure, log=log)
        self.session_id = session_id
        self.unix = unix
        self.net_test = NetTest()
        self.attached = False
        self.agent_started = False
        self.agent_tokens = 0
        self._next_ping: float | None = None

    async def start(self, now: float) -> None:
        cfg = self.core.config
        self.conn.send(
            m.Init(
                session_id=self.session_id,
                display_channels_hint=self.core.display_count(),
                supported_mouse_modes=self.core.supported_mouse_modes,
                current_mouse_mode=self.core.mouse_mode,
                agent_connected=int(self.core.agent_attached),
                agent_tokens=AGENT_TOKENS,
                multi_media_time=(self.core.mm_time() - MM_TIME_DELTA_MS) & 0xFFFFFFFF,
                ram_hint=0,
            )
        )
        if self.has_channel_cap(MainCap.NAME_AND_UUID):
            if cfg.name is not None:
                self.conn.send(m.Name(name=cfg.name.encode() + b"\0"))
            if cfg.uuid is not None:
                self.conn.send(m.Uuid(uuid=cfg.uuid.bytes))
        if cfg.net_test and not self.unix:
            self.net_test.start(self.conn, now)
        if cfg.ping_interval > 0:
            self._next_ping = now + cfg.ping_interval

    def _on_attach_channels(self, msg: m.AttachChannels, now: float) -> None:
        self.attached = True
        self.send_channels_list(self.core.channel_ids())

    def send_channels_list(self, channels: list[tuple[int, int]]) -> None:
        self.conn.send(m.ChannelsList(channels=tuple(m.ChannelId(type=t, id=i) for t, i in channels)))

    def _on_mouse_mode_request(self, msg: m.MouseModeRequest, now: float) -> None:
        if msg.mode not in (MouseMode.SERVER, MouseMode.CLIENT):
            self.log.warning("unsupported mouse mode %d requested", msg.mode)
            return
        self.core.request_mouse_mode(msg.mode)

    def send_mouse_mode(self) -> None:
        self.conn.send(m.MouseMode(supported_modes=self.core.supported_mouse_modes, current_mode=self.core.mouse_mode))

    def send_agent_state(self, attached: bool) -> None:
        """Tell the client the agent came or went (libspice ``main_channel_push_agent_*``)."""
        if not attached:
            self.conn.send(m.AgentDisconnected(error_code=0))
            self.agent_started = False  # the client must send AGENT_START again
        elif self.has_channel_cap(MainCap.AGENT_CONNECTED_TOKENS):
            self.conn.send(m.AgentConnectedTokens(num_tokens=AGENT_TOKENS))
        else:
            self.conn.send(m.AgentConnected())

    def _on_agent_start(self, msg: m.AgentStart, now: float) -> None:
        self.agent_started = True
        self.agent_tokens = msg.num_tokens

    def _on_agent_data(self, msg: m.ClientAgentData, now: float) -> None:
        self.log.debug("agent data (%d bytes) dropped: no agent is connected", len(msg.data))

    def _on_agent_token(self, msg: m.ClientAgentToken, now: float) -> None:
        self.agent_tokens = min(self.agent_tokens + msg.num_tokens, 0xFFFFFFFF)

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
        self.conn.send(
            Notify(
                time_stamp=int(time.time() * 1000),
                severity=severity,
                visibility=visibility,
                what=0,
                message=text.encode(),
            )
        )

    def next_timer(self) -> float | None:
        return self._next_ping

    async def on_timer(self, now: float) -> None:
        if self._next_ping is not None and now >= self._next_ping:
            self.conn.send_ping(now, 0)
            self._next_ping = now + self.core.config.ping_interval
