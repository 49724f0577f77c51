"""The host-answered agent: the server plays the guest agent for the duties the host registered.

No SPICE server offers this; libspice only forwards the client's agent stream to the guest's
``vdagent`` char device (spice ``server/reds.cpp``: ``reds_on_main_agent_data``,
``reds_on_main_agent_start``). What the client expects of an agent comes from spice-gtk
``src/channel-main.c`` (``agent_start``, ``main_agent_handle_msg``, ``agent_sync_audio_playback``,
``main_agent_handle_xfer_status``); the wire from spice-protocol ``spice/vd_agent.h``
(:mod:`spiceserver.proto.vdagent`).

Theory of operation
-------------------

*Duties.* An :class:`AgentDuty` is one thing the host answers in the agent's place: the
capabilities it makes the agent announce, the message types it takes, the largest message it
accepts. :class:`HostAgent` (one per server, ``ServerContext.host_agent``) holds the duties; it is
*active* while at least one duty is, and the client then sees an agent whose capabilities are
exactly the active duties' (plus ``FILE_XFER_DISABLED`` while no duty takes file transfers, so
spice-gtk refuses a file copy at once instead of waiting for an agent that never answers). The
first duty is :class:`VolumeSyncDuty`: spice-gtk sends one ``AUDIO_VOLUME_SYNC`` per agent
connection for playback and one for record, with its audio backend's volume and mute, once the
agent announced ``AUDIO_VOLUME_SYNC``; the host hears it as a :class:`ClientVolume`. Issue 13 adds
clipboard and monitors-config duties beside it, with the same interface
(:mod:`spiceserver.channels.host_clipboard`, :mod:`spiceserver.channels.host_monitors`).

*Per client.* The main channel gives each session's agent stream to a :class:`HostAgentClient`
(after the client's ``AGENT_START``): it reassembles the messages
(:class:`~spiceserver.proto.vdagent.AgentStreamReader`, libspice's strict piece rules; a broken
stream is a :class:`~spiceserver.errors.ProtocolError`, which closes the main channel and so the
session, as libspice's ``mcc->shutdown()``), answers ``ANNOUNCE_CAPABILITIES`` (request=1 gets ours
with request=0), refuses ``FILE_XFER_START`` with a ``FILE_XFER_STATUS`` (``DISABLED`` to clients
announcing ``FILE_XFER_DETAILED_ERRORS``, which know it, else ``CANCELLED``: spice-gtk completes the
transfer with an error either way), hands the duties their types and logs the rest at debug level.
What it sends back is collected as messages for the main channel to cut into ``AGENT_DATA`` and
send within the client's tokens.

*Pushing.* The real agent also starts conversations (a guest clipboard grab, a request for the
client's clipboard). :meth:`HostAgentClient.push` sends a message to one client outside any answer
(event loop), through the ``push`` sink the main channel gave (its AGENT_DATA path: within the
client's tokens, held while it gives none); :meth:`HostAgent.push` builds one message per started
client (their capabilities decide the shape) and sends it, from any thread. The clients the host
agent serves are :attr:`HostAgent.clients`, from ``AGENT_START`` until the agent goes for that
client or it disconnects (:meth:`HostAgentClient.close`; duties hear it in
:meth:`AgentDuty.client_gone`). Duties hear a client's capabilities in
:meth:`AgentDuty.client_announced` (after the host agent's answer went out).

*Guest agent.* While a guest agent is attached the main channel sends the client's stream there
(issue 13) and the host agent is off; the client is told the agent went and came back
(``AGENT_DISCONNECTED`` + ``AGENT_CONNECTED_TOKENS``) when one replaces the other, so it starts over
with the new agent's capabilities. Issue 13 decides whether duties may also answer beside a guest
agent (for example, a host clipboard while the guest agent does monitors).

*Threads.* Handlers are registered from any thread; the duty set and every message are handled on
the event loop, handlers awaited in order (sync or async; an exception is logged and dropped).
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ..proto.vdagent import (
    AgentCap,
    AgentMessage,
    AgentMessageType,
    AgentStreamReader,
    AnnounceCapabilities,
    AudioVolumeSync,
    FileXferStatus,
    FileXferStatusMessage,
    parse_file_xfer_id,
)

__all__ = [
    "AgentDuty",
    "ClientVolume",
    "ClientVolumeHandler",
    "HostAgent",
    "HostAgentClient",
    "VolumeSyncDuty",
    "add_client_volume_handler",
]

log = logging.getLogger("spiceserver")

#: the largest message the host agent buffers when no duty asks for more
BASE_MAX_MESSAGE = 4096

DutyT = TypeVar("DutyT", bound="AgentDuty")


async def _maybe_await(result: Any) -> None:
    if inspect.isawaitable(result):
        await result


class AgentDuty:
    """One agent duty the host answers. Subclasses set :attr:`CAPS` and :attr:`TYPES` and implement
    :meth:`on_message`; :attr:`active` says whether the client should see the duty now.

    A duty calls :meth:`changed` when its :attr:`active` may have changed (any thread).
    """

    #: the capabilities the agent announces while the duty is active
    CAPS: ClassVar[tuple[AgentCap, ...]] = ()
    #: the message types the duty takes from the client
    TYPES: ClassVar[tuple[AgentMessageType, ...]] = ()
    #: the largest message payload the duty accepts (the host agent's bound is the largest)
    MAX_MESSAGE_SIZE: ClassVar[int] = BASE_MAX_MESSAGE

    def __init__(self) -> None:
        self.agent: HostAgent | None = None

    @property
    def active(self) -> bool:
        """The duty is offered to clients."""
        return True

    @property
    def max_message_size(self) -> int:
        """The largest message payload the duty accepts now (:attr:`MAX_MESSAGE_SIZE` unless the
        duty makes it configurable)."""
        return self.MAX_MESSAGE_SIZE

    def changed(self) -> None:
        """Tell the host agent :attr:`active` may have changed (any thread)."""
        if self.agent is not None:
            self.agent.changed()

    async def on_message(self, msg: AgentMessage, client: HostAgentClient) -> None:
        """One message of one of :attr:`TYPES` from ``client`` (event loop).

        Raises:
            ProtocolError: the message is malformed (the session is closed).
        """

    def client_announced(self, client: HostAgentClient) -> None:
        """``client`` announced its capabilities (:attr:`HostAgentClient.client_caps`; event loop)."""

    def client_gone(self, client: HostAgentClient) -> None:
        """``client`` no longer talks to the host agent (event loop)."""


@dataclass(frozen=True)
class ClientVolume:
    """The client's audio volume, as its agent message says.

    spice-gtk 0.42 reads it from its GStreamer backend (``spice-gstaudio.c``): playback from the
    element named ``audiosink``, record from ``autoaudiosrc``, as GStreamer's *cubic* volume (the
    cube root of the linear gain) times 65535, truncated, per channel: a linear gain of 0.125 is
    32767, 0.5 is 52015. Where the record source has no volume (headless, no sound server) spice-gtk
    still sends a record sync, with meaningless values.

    Attributes:
        playback: True for the client's speakers (the guest's playback), False for its microphone.
        volume: u16 per channel (spice-gtk: 0..65535).
        mute: the client muted it.
    """

    playback: bool
    volume: tuple[int, ...]
    mute: bool


ClientVolumeHandler = Callable[[ClientVolume], "Awaitable[None] | None"]


class VolumeSyncDuty(AgentDuty):
    """``AUDIO_VOLUME_SYNC``: the client's volume and mute reach the host's handlers (playback ones
    for a playback sync, record ones for a record sync). Active while any handler is registered."""

    CAPS = (AgentCap.AUDIO_VOLUME_SYNC,)
    TYPES = (AgentMessageType.AUDIO_VOLUME_SYNC,)
    MAX_MESSAGE_SIZE = 3 + 2 * 255

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._handlers: dict[bool, list[ClientVolumeHandler]] = {True: [], False: []}

    @property
    def active(self) -> bool:
        """A handler is registered."""
        with self._lock:
            return bool(self._handlers[True] or self._handlers[False])

    def add_handler(self, playback: bool, handler: ClientVolumeHandler) -> Callable[[], None]:
        """Call ``handler(ClientVolume)`` for the client's playback (or record) volume (any thread).
        Returns a function that removes it."""
        with self._lock:
            self._handlers[playback].append(handler)
        self.changed()

        def remove() -> None:
            with self._lock:
                if handler in self._handlers[playback]:
                    self._handlers[playback].remove(handler)
            self.changed()

        return remove

    async def on_message(self, msg: AgentMessage, client: HostAgentClient) -> None:
        """Deliver the sync to the handlers, in registration order."""
        sync = AudioVolumeSync.parse(msg.data)
        vol = ClientVolume(sync.is_playback, sync.volume, sync.mute)
        client.log.info(
            "client %s volume %s%s", "playback" if vol.playback else "record", vol.volume, " (muted)" if vol.mute else ""
        )
        with self._lock:
            handlers = list(self._handlers[vol.playback])
        if not handlers:
            client.log.debug("no %s volume handler", "playback" if vol.playback else "record")
        for handler in handlers:
            try:
                await _maybe_await(handler(vol))
            except Exception:
                client.log.exception("client volume handler %r failed", handler)


class HostAgent:
    """The server's host-answered agent: its duties, its capabilities, who listens to its presence.

    Args:
        run_on_loop: runs a function on the event loop (the server's ``LoopGate.run``).
    """

    def __init__(self, run_on_loop: Callable[[Callable[[], None]], None]) -> None:
        self._run = run_on_loop
        self._lock = threading.Lock()
        self._duties: list[AgentDuty] = []
        self._listeners: list[Callable[[frozenset[int] | None], None]] = []
        self._caps: frozenset[int] | None = None  # as last told to the listeners
        self._clients: list[HostAgentClient] = []  # started, not closed (event loop)

    def add(self, duty: DutyT) -> DutyT:
        """Add ``duty`` (any thread); returns it.

        Raises:
            ValueError: a duty of its class, or one taking one of its message types, is there already.
        """
        with self._lock:
            for d in self._duties:
                if type(d) is type(duty) or set(d.TYPES) & set(duty.TYPES):
                    raise ValueError(f"{type(duty).__name__} clashes with {type(d).__name__}")
            duty.agent = self
            self._duties.append(duty)
        self.changed()
        return duty

    def duty(self, cls: type[DutyT]) -> DutyT:
        """The duty of class ``cls``, added (built with no arguments) if not there yet (any thread).

        Raises:
            ValueError: another duty takes one of its message types.
        """
        for attempt in range(2):
            with self._lock:
                for d in self._duties:
                    if type(d) is cls:
                        return d
            if attempt:
                break
            try:
                return self.add(cls())
            except ValueError:  # another thread added it meanwhile, or a clash: look again
                pass
        raise ValueError(f"{cls.__name__} clashes with a registered duty")

    @property
    def duties(self) -> tuple[AgentDuty, ...]:
        """The registered duties, active or not."""
        with self._lock:
            return tuple(self._duties)

    def active_duties(self) -> list[AgentDuty]:
        """The duties the client sees now."""
        return [d for d in self.duties if d.active]

    @property
    def active(self) -> bool:
        """At least one duty is active (as last seen on the event loop)."""
        return self._caps is not None

    @property
    def announced_caps(self) -> frozenset[int] | None:
        """The capabilities as last told to the listeners (event loop); None while inactive."""
        return self._caps

    @property
    def caps(self) -> frozenset[int]:
        """What the host agent announces: the active duties' capabilities, and ``FILE_XFER_DISABLED``
        while none of them takes ``FILE_XFER_START``."""
        duties = self.active_duties()
        caps = {int(c) for d in duties for c in d.CAPS}
        if not any(AgentMessageType.FILE_XFER_START in d.TYPES for d in duties):
            caps.add(AgentCap.FILE_XFER_DISABLED)
        return frozenset(caps)

    @property
    def max_message_size(self) -> int:
        """The largest message payload any active duty accepts."""
        return max([BASE_MAX_MESSAGE, *(d.max_message_size for d in self.active_duties())])

    def handler_for(self, mtype: int) -> AgentDuty | None:
        """The active duty taking messages of type ``mtype``."""
        for d in self.active_duties():
            if mtype in d.TYPES:
                return d
        return None

    def subscribe(self, listener: Callable[[frozenset[int] | None], None]) -> None:
        """Call ``listener(caps)`` on the event loop when the host agent's announced capabilities
        change (None: it became inactive)."""
        self._listeners.append(listener)

    def changed(self) -> None:
        """A duty changed (any thread): re-evaluate on the loop and tell the listeners."""
        self._run(self._update)

    def _update(self) -> None:
        caps = self.caps if any(d.active for d in self.duties) else None
        if caps == self._caps:
            return
        self._caps = caps
        log.info("host agent %s", f"active, caps {sorted(caps)}" if caps is not None else "inactive")
        for listener in list(self._listeners):
            listener(caps)

    def run(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the event loop (now when called there)."""
        self._run(fn)

    def client(
        self, logger: logging.Logger | logging.LoggerAdapter[Any], push: Callable[[list[AgentMessage]], None] | None = None
    ) -> HostAgentClient:
        """A new per-client endpoint (after the client's AGENT_START; event loop).

        Args:
            logger: logs with the client's context.
            push: sends messages to the client outside an answer (the main channel's AGENT_DATA
                path, which flushes); without it pushed messages wait for the next answer.
        """
        client = HostAgentClient(self, logger, push)
        self._clients.append(client)
        return client

    @property
    def clients(self) -> tuple[HostAgentClient, ...]:
        """The clients talking to the host agent now (event loop)."""
        return tuple(self._clients)

    def push(self, build: Callable[[HostAgentClient], AgentMessage | None]) -> None:
        """Send ``build(client)`` to every client talking to the host agent (any thread: it runs on the
        event loop); None skips that client."""

        def run() -> None:
            for client in self.clients:
                msg = build(client)
                if msg is not None:
                    client.push(msg)

        self._run(run)

    def _client_closed(self, client: HostAgentClient) -> None:
        if client in self._clients:
            self._clients.remove(client)
        for duty in self.duties:
            try:
                duty.client_gone(client)
            except Exception:
                client.log.exception("%s failed on a client leaving", type(duty).__name__)


class HostAgentClient:
    """One client's conversation with the host agent (event loop).

    Feed it the client's AGENT_DATA payloads with :meth:`feed`; take what to send back with
    :meth:`take_messages` (whole messages: the main channel cuts them into AGENT_DATA pieces).

    Args:
        agent: the server's host agent.
        logger: logs with the client's context.
        push: sends messages to the client outside an answer (see :meth:`HostAgent.client`).
    """

    def __init__(
        self,
        agent: HostAgent,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        push: Callable[[list[AgentMessage]], None] | None = None,
    ) -> None:
        self.agent = agent
        self.log = logger
        self.closed = False
        self._push = push
        self.reader = AgentStreamReader(agent.max_message_size)
        #: the capabilities the client announced
        self.client_caps: frozenset[int] = frozenset()
        self.messages = 0
        self._out: list[AgentMessage] = []

    def send(self, msg: AgentMessage) -> None:
        """Queue ``msg`` for the client (duties answer through this)."""
        self._out.append(msg)

    def take_messages(self) -> list[AgentMessage]:
        """The messages queued for the client since the last call."""
        out, self._out = self._out, []
        return out

    def push(self, msg: AgentMessage) -> None:
        """Send ``msg`` to the client now, outside an answer (event loop); dropped once closed.

        Messages queued with :meth:`send` go first, so the order holds."""
        if self.closed:
            return
        self._out.append(msg)
        if self._push is not None:
            self._push(self.take_messages())

    def close(self) -> None:
        """The client no longer talks to the host agent (the agent went for it, or it disconnected;
        event loop). Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._out.clear()
        self.agent._client_closed(self)

    async def feed(self, piece: bytes) -> None:
        """One AGENT_DATA payload from the client: handle the messages it completes.

        Raises:
            ProtocolError: the stream or a message is malformed.
        """
        self.reader.max_message_size = self.agent.max_message_size
        for msg in self.reader.feed(piece):
            self.messages += 1
            await self.handle(msg)

    async def handle(self, msg: AgentMessage) -> None:
        """Act on one whole message."""
        if msg.type == AgentMessageType.ANNOUNCE_CAPABILITIES:
            self._on_announce(msg)
        elif msg.type == AgentMessageType.FILE_XFER_START and self.agent.handler_for(msg.type) is None:
            self._refuse_file_xfer(msg)
        else:
            duty = self.agent.handler_for(msg.type)
            if duty is not None:
                await duty.on_message(msg, self)
            else:
                self.log.debug("host agent ignores agent message type %s (%d bytes)", _type_name(msg.type), len(msg.data))

    def adopt_caps(self, caps: frozenset[int]) -> None:
        """The capabilities the client announced to another server's host agent (a migration
        brought it here): the duties act as on an announcement, which needs no answer."""
        self.client_caps = frozenset(caps)
        for duty in self.agent.active_duties():
            duty.client_announced(self)

    def _on_announce(self, msg: AgentMessage) -> None:
        ann = AnnounceCapabilities.parse(msg.data)
        self.client_caps = ann.caps
        self.log.debug("client agent caps %s%s", sorted(ann.caps), " (request)" if ann.request else "")
        if ann.request:
            self.send(AnnounceCapabilities(False, self.agent.caps).message())
        for duty in self.agent.active_duties():
            duty.client_announced(self)

    def _refuse_file_xfer(self, msg: AgentMessage) -> None:
        task = parse_file_xfer_id(msg.data)
        detailed = AgentCap.FILE_XFER_DETAILED_ERRORS in self.client_caps
        result = FileXferStatus.DISABLED if detailed else FileXferStatus.CANCELLED
        self.log.info("file transfer %d refused (no agent takes files): %s", task, result.name)
        self.send(FileXferStatusMessage(task, result).message())


def _type_name(mtype: int) -> str:
    try:
        return AgentMessageType(mtype).name
    except ValueError:
        return str(mtype)


def add_client_volume_handler(agent: HostAgent, playback: bool, handler: ClientVolumeHandler) -> Callable[[], None]:
    """Register ``handler`` for the client's playback (or record) volume on ``agent`` (any thread);
    the host agent becomes active. Returns a function that removes the handler.

    The playback channel's ``on_client_volume`` is this with ``playback=True``; the record channel's
    is ``add_client_volume_handler(self.ctx.host_agent, False, callback)``.
    """
    return agent.duty(VolumeSyncDuty).add_handler(playback, handler)
