"""The guest agent (vdagent) behind a char device, relayed to the clients' main channels.

Counterpart of the agent half of spice ``server/reds.cpp``: ``RedCharDeviceVDIPort`` (the device's
read loop: ``read_one_msg_from_vdi_port``, ``vdi_port_read_buf_process`` with the agent-to-client
message filter and ``reds_adjust_agent_capabilities``), ``reds_on_main_agent_start`` /
``_data`` / ``_tokens`` (the client-to-agent write path with its message filter),
``attach_to_red_agent`` / ``reds_agent_remove`` (the agent comes and goes with the device) and
``reds_client_disconnect`` (VD_AGENT_CLIENT_DISCONNECTED on the server port).

The device carries the guest's virtio port stream: ``VDIChunkHeader`` (port, size) chunks
(:class:`~spiceserver.proto.vdagent.ChunkReader`) whose payloads are the VDAgentMessage stream.
Chunks for port 1 (the client) are cut into pieces of at most 2048 bytes, filtered
(:class:`~spiceserver.proto.vdagent.AgentMsgFilter`: copy/paste and file transfer switches, the
capability rewrite on the agent's ANNOUNCE) and sent to the session's main channel as AGENT_DATA;
chunks for port 2 (the server) are dropped, as libspice does. The client's AGENT_DATA pieces go
through the client-to-agent filter and are written to the device as port-1 chunks; the token the
piece cost is given back once the device took it (:meth:`GuestAgent.from_client` tells the main
channel when). The server's own messages (VD_AGENT_CLIENT_DISCONNECTED, VD_AGENT_MOUSE_STATE for
agent mouse mode) go to port 2.

The agent is *attached* while the device is open: the main channel then tells the clients
(AGENT_CONNECTED_TOKENS / AGENT_DISCONNECTED) and agent mouse mode becomes possible. While it is,
it replaces the host agent (:mod:`spiceserver.channels.host_agent`) for the clients.
A malformed stream from the agent detaches it (libspice ``reds_agent_remove``) until the device
reopens.

Client monitors configs (``reds_on_main_agent_monitors_config``, ``reds_use_client_monitors_config``,
``reds_client_monitors_config``): when the display devices take them (every display is a QXL device
whose driver unmasked ``QXL_INTERRUPT_CLIENT_MONITORS_CONFIG``; ``ServerContext.client_monitors_config``
answers), the client's VD_AGENT_MONITORS_CONFIG is not forwarded: its pieces are gathered (at most
:data:`~spiceserver.proto.vdagent_messages.MONITORS_CONFIG_MAX_SIZE`), parsed, and the heads handed
to the devices, which write them into their ROM and interrupt the guest. A message too large or
malformed drops the client, as libspice. Unlike libspice, which decides when the client starts, the
devices are asked at each MONITORS_CONFIG header (a driver loaded later is seen), and if every device
declines the gathered message (the driver masked the interrupt meanwhile) goes to the agent instead
of being dropped. The intercepted pieces' tokens go back at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from ..errors import ProtocolError
from ..metrics import DeviceMetrics
from ..proto.vdagent import (
    AgentMessage,
    AgentMessageType,
    AgentMsgFilter,
    AgentStreamReader,
    ChunkPort,
    ChunkReader,
    FilterResult,
    pack_chunk,
    split_message,
)
from ..proto.vdagent_messages import MONITORS_CONFIG_MAX_SIZE, MonitorsConfig, MonitorsFlag
from .chardev import CharDevice

if TYPE_CHECKING:
    from .base import ServerContext

__all__ = ["GuestAgent", "AgentClient"]

log = logging.getLogger("spiceserver")

#: agent bytes a client may have unsent before the device is no longer read
MAX_BACKLOG = 64 * 1024
#: how often a throttled device checks whether its client caught up, seconds
BACKLOG_POLL = 0.02


class AgentClient(Protocol):
    """What the guest agent needs from a client's main channel (``MainChannelClient``)."""

    def send_agent_pieces(self, pieces: list[bytes]) -> None:
        """Send AGENT_DATA pieces to the client within its tokens (event loop)."""

    def agent_piece_done(self) -> None:
        """A piece the client sent was taken by the agent: its token may go back."""

    def agent_backlog(self) -> int:
        """Bytes sent toward the client that its socket has not taken yet."""


class GuestAgent:
    """The guest's vdagent on ``device`` (a :class:`~spiceserver.channels.chardev.CharDevice`).

    Args:
        ctx: the server services (configuration: ``agent_copypaste``, ``agent_file_xfer``).
        device: the agent's char device (a listening Unix socket for ``spice-vdagentd -s``, a pty,
            or an in-process pair).
        on_attached: told when the agent comes (device opened) or goes (event loop).
    """

    def __init__(self, ctx: ServerContext, device: CharDevice, on_attached: Callable[[bool], None]) -> None:
        self.ctx = ctx
        self.device = device
        self._on_attached = on_attached
        cfg = ctx.config
        self._to_client, self._from_client = (
            AgentMsgFilter(
                copy_paste=cfg.agent_copypaste,
                file_xfer=cfg.agent_file_xfer,
                max_message_size=cfg.agent_max_message_size,
                discard_all=True,
            )
            for _ in range(2)
        )
        self._reader = ChunkReader()
        self.attached = False
        self.client: AgentClient | None = None
        #: client pieces the device refused for now, with the client owed the token (None: none is)
        self._held: deque[tuple[AgentClient | None, bytes]] = deque()
        self._monitors = AgentStreamReader(MONITORS_CONFIG_MAX_SIZE)  # an intercepted MONITORS_CONFIG
        self._mouse: bytes | None = None  # the latest MOUSE_STATE the device had no room for
        self._loop: asyncio.AbstractEventLoop | None = None
        self._throttled = False  # device reads paused while the client's backlog is high
        #: client message bytes written to the agent (chunk headers not counted)
        self.bytes_to_device = 0
        #: agent message bytes sent to the client
        self.bytes_to_client = 0
        #: message bytes the filter discarded either way (copy-paste or file transfer off)
        self.dropped_bytes = 0

    def device_metrics(self) -> DeviceMetrics:
        """The agent's counters for the server's metrics (channel ``agent``)."""
        return DeviceMetrics(
            channel="agent",
            id=0,
            bytes_to_device=self.bytes_to_device,
            bytes_to_client=self.bytes_to_client,
            dropped_bytes=self.dropped_bytes,
            device_open=self.attached,
            client=self.client is not None,
        )

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start reading the device (the server's loop)."""
        self._loop = loop
        self.device.attach(self, loop)
        if self.device.opened:
            loop.call_soon(self.device_opened, True)

    async def close(self) -> None:
        """The server closes."""
        await self.device.close()

    # --- sessions --------------------------------------------------------------------------------

    def client_started(self, client: AgentClient) -> None:
        """The client sent AGENT_START: its messages and the agent's now flow (``reds_on_main_agent_start``)."""
        self.client = client
        self._to_client.reset(discard_all=False)
        self._from_client.reset(discard_all=False)
        self._monitors = AgentStreamReader(MONITORS_CONFIG_MAX_SIZE)

    def client_gone(self, client: AgentClient) -> None:
        """The client's main channel closed: the agent is told on the server port
        (``reds_client_disconnect``: VD_AGENT_CLIENT_DISCONNECTED) and stops talking to it."""
        if self.client is not client:
            return
        self.client = None
        self._held = deque(h for h in self._held if h[0] is not client)
        self._to_client.reset(discard_all=True)
        self._from_client.reset(discard_all=True)
        self._monitors = AgentStreamReader(MONITORS_CONFIG_MAX_SIZE)
        self._throttle()  # no client: reads go on (and are dropped)
        if self.attached:
            self._to_server_port(AgentMessage(AgentMessageType.CLIENT_DISCONNECTED, b"").pack())

    # --- client -> agent -------------------------------------------------------------------------

    def from_client(self, client: AgentClient, piece: bytes) -> bool:
        """One AGENT_DATA piece from ``client``. Returns True if it is done with (its token may go
        back now), False if it waits for room in the device (``agent_piece_done`` follows).

        Raises:
            ProtocolError: the piece breaks the agent protocol (the caller drops the client).
        """
        if not self.attached or client is not self.client:
            return True  # no agent, or a client that has not (re)started: dropped, as libspice
        f = self._from_client
        if not f.in_message and _message_type(piece) == AgentMessageType.MONITORS_CONFIG:
            # always gathered: it goes to the displays if they take it, else to the agent rewritten
            # (see _monitors_config_piece)
            f.configure(copy_paste=f.copy_paste, file_xfer=f.file_xfer, use_client_monitors_config=True)
        result = f.process(piece)
        if result is FilterResult.PROTO_ERROR:
            raise ProtocolError(f"agent data: {f.error or 'bad message'}")
        if result is FilterResult.MONITORS_CONFIG:
            self._monitors_config_piece(piece)
            return True
        if result is not FilterResult.OK:
            self.dropped_bytes += len(piece)
            return True  # DISCARD: copy/paste or file transfer off
        return self._write_client_piece(client, piece)

    def _write_client_piece(self, client: AgentClient | None, piece: bytes) -> bool:
        self.bytes_to_device += len(piece)
        if self._held or not self.device.write(pack_chunk(ChunkPort.CLIENT, piece)):
            self._held.append((client, piece))
            return False
        return True

    def _monitors_config_piece(self, piece: bytes) -> None:
        """A piece of an intercepted MONITORS_CONFIG: once whole, its heads go to the displays.

        Raises:
            ProtocolError: larger than libspice takes, or malformed (``agent_check_message``).
        """
        for msg in self._monitors.feed(piece):
            config = MonitorsConfig.parse(msg.data)
            heads = [(m.x, m.y, m.width, m.height) for m in config.monitors]
            take = self.ctx.client_monitors_config
            if take is not None and take(None) and take(heads):
                continue
            log.debug("agent: no display took the client's monitors config; it goes to the agent")
            if config.flags & MonitorsFlag.PHYSICAL_SIZE:
                # spice-gtk always appends the monitors' physical sizes; spice-vdagentd (0.22 and
                # later) wants exactly the monitors and drops the message ("invalid message size"),
                # so the guest would never resize. Without the sizes every agent takes it.
                body = replace(config, flags=config.flags & ~MonitorsFlag.PHYSICAL_SIZE).pack()
                msg = AgentMessage(AgentMessageType.MONITORS_CONFIG, body, msg.opaque)
            for p in split_message(msg):
                self._write_client_piece(None, p)

    def device_writable(self) -> None:
        """Room again in the device: held client pieces, then a held mouse state, go on."""
        while self._held:
            client, piece = self._held[0]
            if not self.device.write(pack_chunk(ChunkPort.CLIENT, piece)):
                return
            self._held.popleft()
            if client is not None:
                client.agent_piece_done()
        if self._mouse is not None and self.device.write(self._mouse):
            self._mouse = None

    def mouse_state(self, body: bytes) -> None:
        """A VD_AGENT_MOUSE_STATE body for the agent (agent mouse mode). Without room in the
        device it is kept, newest wins, and sent when room comes (libspice ``pending_mouse_event``)."""
        if not self.attached:
            return
        chunk = pack_chunk(ChunkPort.SERVER, AgentMessage(AgentMessageType.MOUSE_STATE, body).pack())
        if self._held or self._mouse is not None or not self.device.write(chunk):
            self._mouse = chunk

    def _to_server_port(self, data: bytes) -> None:
        self.device.write(pack_chunk(ChunkPort.SERVER, data))

    # --- agent -> client (CharDeviceListener) ----------------------------------------------------

    def device_data(self, data: bytes) -> None:
        """Chunks from the agent: port-1 pieces filtered to the client, port-2 ones dropped."""
        if not self.attached:
            return
        try:
            pieces = self._reader.feed(data)
        except ProtocolError as exc:  # a broken stream detaches the agent
            log.warning("agent: bad data from the guest agent (%s); detaching it until its device reopens", exc)
            self._detach()
            return
        out: list[bytes] = []
        for p in pieces:
            if p.port != ChunkPort.CLIENT:
                continue  # messages to the server itself: libspice drops them too
            result = self._to_client.process(p.data)
            if result is FilterResult.PROTO_ERROR:
                log.warning("agent: bad message from the guest agent (%s); detaching it", self._to_client.error)
                self._detach()
                return
            if result is FilterResult.OK and self.client is not None:
                out.append(self._to_client.adjust_capabilities(bytes(p.data)))
            elif result is FilterResult.DISCARD:
                self.dropped_bytes += len(p.data)
        if out and self.client is not None:
            self.bytes_to_client += sum(map(len, out))
            self.client.send_agent_pieces(out)
            self._throttle()

    def _throttle(self) -> None:
        """While the client has more than :data:`MAX_BACKLOG` of agent data unsent, the device is not
        read (libspice bounds a client's agent send queue to a few 2 KiB buffers): a flooding agent
        waits instead of filling the server's memory or the client's link."""
        client = self.client
        if client is None or self._loop is None:
            if self._throttled:
                self._throttled = False
                self.device.resume_reading()
            return
        backlog = client.agent_backlog() > MAX_BACKLOG
        if backlog and not self._throttled:
            self._throttled = True
            self.device.pause_reading()
        elif not backlog and self._throttled:
            self._throttled = False
            self.device.resume_reading()
        if self._throttled:
            self._loop.call_later(BACKLOG_POLL, self._throttle)

    def device_opened(self, opened: bool) -> None:
        """The agent's port opened (the agent is attached) or closed (it went)."""
        if opened == self.attached:
            return
        self.attached = opened
        self._reader = ChunkReader()
        self._held.clear()
        self._mouse = None
        self._to_client.reset(discard_all=True)
        self._from_client.reset(discard_all=True)
        self._monitors = AgentStreamReader(MONITORS_CONFIG_MAX_SIZE)
        self.client = None
        self._throttle()
        log.info("guest agent %s", "attached" if opened else "detached")
        self._on_attached(opened)

    def device_event(self, event: int) -> None:
        """Port events mean nothing for the agent's port."""

    def _detach(self) -> None:
        self.device_opened(False)


def _message_type(piece: bytes) -> int | None:
    """The type in the VDAgentMessage header a piece starts with (None: too short for one)."""
    return int.from_bytes(piece[4:8], "little") if len(piece) >= 20 else None
