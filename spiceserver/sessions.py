"""Sessions, the channel registry's entries and per-connection logging context (no I/O here).

Counterpart of spice ``server/red-client.cpp`` (a client and its channels) and the client list of
``reds.cpp`` (``reds_handle_main_link`` replaces the previous client); the channels open and end
sessions, :mod:`spiceserver.reds` checks connection ids against them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .proto.enums import CHANNEL_NAMES, ChannelType

if TYPE_CHECKING:
    from .channels.main import MainChannelClient

__all__ = ["ConnLog", "channel_label", "Session", "SessionTable", "ChannelInfo", "ChannelEvent", "ClientInfo", "ChannelListeners"]


class ConnLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every record with the connection's context: ``[#12 127.0.0.1:40000 inputs:0]``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        ctx = f"#{extra.get('conn')} {extra.get('peer')}"
        if extra.get("channel"):
            ctx += f" {extra['channel']}"
        return f"[{ctx}] {msg}", kwargs


def channel_label(channel_type: int, channel_id: int) -> str:
    try:
        name = CHANNEL_NAMES[ChannelType(channel_type)]
    except ValueError:
        name = f"type{channel_type}"
    return f"{name}:{channel_id}"


@dataclass(frozen=True)
class ChannelInfo:
    """One connected channel, as the embedding application sees it.

    Attributes:
        session_id: the client (its main channel's connection id; shared by all its channels).
        channel: ``"main"``, ``"display"``, ``"inputs"``, ``"cursor"``, ...
        channel_id: the channel's id (the display number for display and cursor).
        transport: ``"tcp"``, ``"tls"``, ``"unix"``, ``"ws"`` or ``"wss"`` (WebSocket, plain or TLS).
        peer: the client's address ``"host:port"`` (``"unix"`` on a Unix socket).
        connected_at: when the link completed (``time.time()``).
    """

    session_id: int
    channel: str
    channel_id: int
    transport: str
    peer: str
    connected_at: float


@dataclass(frozen=True)
class ChannelEvent:
    """A channel linked (``"connected"``) or went away (``"disconnected"``); QEMU turns libspice's
    equivalents (``channel_event``) into its SPICE_CONNECTED / SPICE_DISCONNECTED QMP events."""

    kind: Literal["connected", "disconnected"]
    info: ChannelInfo


@dataclass(frozen=True)
class ClientInfo:
    """One connected client and its channels (:meth:`SpiceServer.clients`)."""

    session_id: int
    channels: tuple[ChannelInfo, ...]


@dataclass(eq=False)
class Session:
    """One client: its main channel and every other channel it linked with the same id."""

    id: int
    main: MainChannelClient | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)
    infos: list[ChannelInfo] = field(default_factory=list)

    @property
    def low_bandwidth(self) -> bool:
        """The main channel's network test found this client below 10 Mbps."""
        return self.main is not None and self.main.net_test.low_bandwidth


class SessionTable:
    """The connected clients by session id (event loop only).

    As libspice (``reds_handle_main_link``), a new main link replaces the current client: every
    channel of the previous sessions is closed.
    """

    def __init__(self, log: logging.Logger) -> None:
        self._by_id: dict[int, Session] = {}
        self._log = log

    def open(self) -> Session:
        """End the current sessions and start a new one with a fresh random non-zero id."""
        for old in list(self._by_id.values()):
            self._log.info("new client: disconnecting session %#x", old.id)
            self.close(old)
        while True:
            sid = secrets.randbits(32)
            if sid and sid not in self._by_id:
                break
        session = Session(sid)
        self._by_id[sid] = session
        return session

    def get(self, session_id: int) -> Session | None:
        """The live session with that id, if any."""
        return self._by_id.get(session_id)

    def close(self, session: Session) -> None:
        """Forget ``session`` and close every channel it has."""
        self._by_id.pop(session.id, None)
        for close in list(session.closers):
            close()

    def close_all(self) -> None:
        """Close every session (libspice ``reds_disconnect``)."""
        for s in list(self._by_id.values()):
            self.close(s)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._by_id

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)


class ChannelListeners:
    """The application's channel listeners: builds each :class:`ChannelInfo`, keeps it on its
    session while the channel lives, and tells every listener (a coroutine is run as a task; an
    exception is logged, never raised into the server). Runs on the event loop."""

    def __init__(self, log: logging.Logger) -> None:
        self._callbacks: list[Callable[[ChannelEvent], object]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._log = log

    def add(self, callback: Callable[[ChannelEvent], object]) -> None:
        self._callbacks.append(callback)

    def remove(self, callback: Callable[[ChannelEvent], object]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def connected(self, session: Session, channel_type: int, channel_id: int, transport: str, peer: str) -> ChannelInfo:
        """A channel of ``session`` linked: record it and tell the listeners."""
        name = CHANNEL_NAMES.get(ChannelType(channel_type), str(channel_type))
        info = ChannelInfo(session.id, name, channel_id, transport, peer, time.time())
        session.infos.append(info)
        self._emit(ChannelEvent("connected", info))
        return info

    def gone(self, session: Session, info: ChannelInfo) -> None:
        """That channel went away."""
        if info in session.infos:
            session.infos.remove(info)
        self._emit(ChannelEvent("disconnected", info))

    def _emit(self, event: ChannelEvent) -> None:
        for callback in list(self._callbacks):
            try:
                result = callback(event)
                if asyncio.iscoroutine(result):
                    task = asyncio.get_running_loop().create_task(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._task_done)
            except Exception:
                self._log.exception("channel listener %r failed", callback)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("channel listener failed", exc_info=task.exception())
