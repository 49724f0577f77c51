"""Channel events for the embedding application, and the per-connection logging context (no I/O here).

Counterpart of libspice's ``channel_event`` callback (``reds.cpp``), which QEMU turns into its
SPICE_CONNECTED / SPICE_DISCONNECTED / SPICE_INITIALIZED QMP events, and of the connection details
libspice logs with each stream (``red-stream.cpp``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

from .proto.enums import CHANNEL_NAMES, ChannelType

__all__ = ["ConnLog", "channel_label", "ChannelInfo", "ChannelEvent", "ClientInfo", "ChannelListeners"]


class ConnLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every record with the connection's context: ``[#12 127.0.0.1:40000 inputs:0]``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        """Prefix ``msg`` with the connection's context."""
        extra = self.extra or {}
        ctx = f"#{extra.get('conn')} {extra.get('peer')}"
        if extra.get("channel"):
            ctx += f" {extra['channel']}"
        return f"[{ctx}] {msg}", kwargs


def channel_label(channel_type: int, channel_id: int) -> str:
    """``"display:0"``: a channel's name and id for logs."""
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
        role: the session's role when the channel linked, ``"owner"`` or ``"viewer"``
            (:mod:`spiceserver.roles`; the host may change it later, see ``SpiceServer.sessions``).
    """

    session_id: int
    channel: str
    channel_id: int
    transport: str
    peer: str
    connected_at: float
    role: str = "owner"


@dataclass(frozen=True)
class ChannelEvent:
    """A channel linked (``"connected"``) or went away (``"disconnected"``); QEMU turns libspice's
    equivalents (``channel_event``) into its SPICE_CONNECTED / SPICE_DISCONNECTED QMP events. The
    host changed its session's role (``"role-changed"``, one event per channel of the session;
    ``info.role`` is the new role; not in libspice)."""

    kind: Literal["connected", "disconnected", "role-changed"]
    info: ChannelInfo


@dataclass(frozen=True)
class ClientInfo:
    """One connected client, its channels and its role, ``"owner"`` or ``"viewer"`` (:meth:`SpiceServer.clients`)."""

    session_id: int
    channels: tuple[ChannelInfo, ...]
    role: str = "owner"


class ChannelListeners:
    """The application's channel listeners: builds each :class:`ChannelInfo`, keeps it on its
    session while the channel lives, and tells every listener (a coroutine is run as a task; an
    exception is logged, never raised into the server). Runs on the event loop."""

    def __init__(self, log: logging.Logger) -> None:
        self._callbacks: list[Callable[[ChannelEvent], object]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._log = log

    def add(self, callback: Callable[[ChannelEvent], object]) -> None:
        """Call ``callback`` for every event from now on."""
        self._callbacks.append(callback)

    def remove(self, callback: Callable[[ChannelEvent], object]) -> None:
        """Stop calling ``callback`` (no error if it was not added)."""
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def connected(
        self, infos: list[ChannelInfo], session_id: int, channel_type: int, channel_id: int, transport: str, peer: str, role: str = "owner"
    ) -> ChannelInfo:
        """A channel of a session linked: record it in the session's ``infos`` and tell the listeners."""
        name = CHANNEL_NAMES.get(ChannelType(channel_type), str(channel_type))
        info = ChannelInfo(session_id, name, channel_id, transport, peer, time.time(), role)
        infos.append(info)
        self._emit(ChannelEvent("connected", info))
        return info

    def gone(self, infos: list[ChannelInfo], info: ChannelInfo) -> None:
        """That channel went away (``info`` as :meth:`connected` returned it; its role may have
        changed since: the event carries the current one)."""
        for i, current in enumerate(infos):
            if dataclasses.replace(current, role=info.role) == info:
                info = infos.pop(i)
                break
        self._emit(ChannelEvent("disconnected", info))

    def role_changed(self, infos: list[ChannelInfo], role: str) -> None:
        """The host changed the role of the session whose channels are ``infos`` (updated in place)."""
        for i, info in enumerate(infos):
            infos[i] = dataclasses.replace(info, role=role)
            self._emit(ChannelEvent("role-changed", infos[i]))

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
