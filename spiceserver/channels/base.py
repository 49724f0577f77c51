"""What every channel client shares: the server-core view it needs and message dispatch.

Counterpart of spice ``server/red-channel-client.cpp`` (``handle_message`` per channel, common
messages) seen from above the transport.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Protocol

from ..config import ServerConfig
from ..interfaces import Keyboard, Mouse, Tablet
from ..proto.channel import ChannelConnection, Event
from ..proto.link import LinkMess, has_cap
from ..proto.messages import base as basemsg
from ..proto.messages.base import Message

__all__ = ["ServerCore", "ChannelClient", "maybe_await"]


class ServerCore(Protocol):
    """The part of the server that channel clients may use (implemented by reds)."""

    config: ServerConfig
    keyboard: Keyboard | None
    kbd_modifiers: int  # the guest's lock state as the server tracks it (libspice ``modifiers``)
    mouse: Mouse | None
    tablet: Tablet | None

    @property
    def mouse_mode(self) -> int: ...

    @property
    def supported_mouse_modes(self) -> int: ...

    def request_mouse_mode(self, mode: int) -> None: ...

    @property
    def agent_attached(self) -> bool: ...

    def channel_ids(self) -> list[tuple[int, int]]: ...

    def display_count(self) -> int: ...

    def mm_time(self) -> int: ...


async def maybe_await(result: Any) -> None:
    """Await ``result`` if a device callback returned an awaitable."""
    if inspect.isawaitable(result):
        await result


Handler = Callable[[Any, Message, float], Awaitable[None] | None]


class ChannelClient:
    """One client's connection to one channel, above the wire.

    Subclasses fill ``HANDLERS`` (message class -> method) -- a dispatch table, not an if-chain
    (asyncssh ``_packet_handlers``). Messages without a handler are ignored after the base-channel
    bookkeeping :class:`~spiceserver.proto.channel.ChannelConnection` already did.
    """

    HANDLERS: ClassVar[dict[type, str]] = {}

    def __init__(self, core: ServerCore, conn: ChannelConnection, link: LinkMess, *, secure: bool, log: logging.LoggerAdapter[logging.Logger]) -> None:
        self.core = core
        self.conn = conn
        self.link = link
        self.secure = secure
        self.log = log
        self.closed = False

    def has_channel_cap(self, cap: int) -> bool:
        return has_cap(self.link.channel_caps, cap)

    def has_common_cap(self, cap: int) -> bool:
        return has_cap(self.link.common_caps, cap)

    async def start(self, now: float) -> None:
        """Queue what the channel sends right after the link."""

    async def handle(self, event: Event, now: float) -> None:
        """Act on one message or event from the client."""
        name = self.HANDLERS.get(type(event))
        if name is None:
            if isinstance(event, basemsg.ClientDisconnecting):
                self.log.info("client is disconnecting (reason %d)", event.reason)
            return
        await maybe_await(getattr(self, name)(event, now))

    def next_timer(self) -> float | None:
        """When :meth:`on_timer` wants to run next (monotonic seconds), or None."""
        return None

    async def on_timer(self, now: float) -> None:
        """Timer callback (pings, timeouts)."""

    async def on_close(self) -> None:
        """The connection is gone: release whatever the channel holds."""
