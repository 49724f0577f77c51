"""The channels a server offers, by (type, id).

Counterpart of the channel list of spice ``server/reds.cpp`` (``reds_register_channel``,
``reds_find_channel``, ``reds_fill_channels``). Adding a channel tells the subscribers (the main
channel announces it to connected clients with a one-entry CHANNELS_LIST, as libspice does for a
channel registered after the client attached).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..proto.enums import ChannelType

if TYPE_CHECKING:
    from .base import Channel

__all__ = ["ChannelRegistry"]


class ChannelRegistry:
    """(type, id) -> channel, in registration order.

    Args:
        run_on_loop: how subscribers are called: on the server's event loop (from any thread).
    """

    def __init__(self, run_on_loop: Callable[[Callable[[], None]], None] = lambda fn: fn()) -> None:
        self._channels: dict[tuple[int, int], Channel] = {}
        self._subscribers: list[Callable[[Channel], None]] = []
        self._run_on_loop = run_on_loop

    def add(self, channel: Channel) -> None:
        """Offer ``channel`` (any thread); the subscribers hear of it on the event loop.

        Raises:
            ConfigError: a channel with that type and id is registered already.
        """
        key = (channel.type, channel.id)
        if key in self._channels:
            raise ConfigError(f"channel {key} already registered")
        self._channels[key] = channel

        def announce() -> None:
            for callback in list(self._subscribers):
                callback(channel)

        self._run_on_loop(announce)

    def subscribe(self, callback: Callable[[Channel], None]) -> None:
        """Call ``callback(channel)`` for every channel added from now on."""
        self._subscribers.append(callback)

    def get(self, channel_type: int, channel_id: int) -> Channel | None:
        """The channel registered as (type, id), if any."""
        return self._channels.get((int(channel_type), channel_id))

    def ids(self) -> list[tuple[int, int]]:
        """Every channel but main, as (type, id): what CHANNELS_LIST lists."""
        return [key for key in self._channels if key[0] != ChannelType.MAIN]

    def count(self, channel_type: int) -> int:
        """How many channels of that type are offered."""
        return sum(1 for t, _ in self._channels if t == channel_type)

    def __iter__(self) -> Iterator[Channel]:
        return iter(list(self._channels.values()))
