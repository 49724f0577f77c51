"""What every server-side channel client shares above the wire: ack window, bytes in flight, dispatch.

Counterpart of spice ``server/red-channel-client.cpp`` (``red_channel_client_init`` sending SET_ACK,
``red_channel_client_handle_message`` with the per-channel ``handle_message``, the pipe's flow
control) seen from above :class:`~spiceserver.proto.channel.ChannelConnection`. Sans-IO like the rest
of ``proto``: no sockets, no threads, no event loop. The loop-side clients (``channels/``, async) and
the worker-side display and cursor clients (``worker/``, synchronous) both build on it.

Contract:

* **Flow control.** ``ChannelClientBase(conn, ack_window=20, high_water=2 << 20)`` starts the ack
  window (SET_ACK goes out first, as libspice does on every channel that handles acks). Producers
  marshal while :meth:`~ChannelClientBase.may_send` is true -- the ack window is open and the bytes
  handed to the transport but not yet written (:attr:`~ChannelClientBase.inflight`, plus what is
  marshalled and not yet taken) stay under ``high_water`` (None: no byte limit) -- then take the bytes
  with :meth:`~ChannelClientBase.take_output`, which counts them in flight. Whoever writes them to
  the socket reports it with :meth:`~ChannelClientBase.written`.
* **Dispatch.** A client is in one state at a time (:attr:`~ChannelClientBase.state`, any hashable);
  :attr:`~ChannelClientBase.tables` maps each state to a :class:`StateTable`: message class -> bound
  handler, plus what to do with a message of the channel that the state does not list (``ignore``,
  or ``error`` to raise :class:`~spiceserver.errors.ProtocolError`, which closes the channel).
  Common messages (ACK, ACK_SYNC, PONG, DISCONNECTING...: class ``CHANNEL == BASE``, and events
  such as ``PongReceived``) are never unexpected: the connection already did their bookkeeping, and
  they reach a handler only if the table lists them. :meth:`~ChannelClientBase.dispatch` returns
  what the handler returned; an async client awaits it (this module never imports asyncio).

Example (a client that accepts nothing but INIT until it has seen one)::

    class Display(ChannelClientBase):
        def __init__(self, conn):
            super().__init__(conn, ack_window=20)
            self.state = "wait_init"
            self.tables = {
                "wait_init": StateTable({d.DisplayInit: self._on_init}, unexpected="error"),
                "ready": StateTable({d.PreferredCompression: self._on_preferred}),
            }

        def on_data(self, data):
            for ev in self.conn.receive_data(data):
                self.dispatch(ev)          # an async client: await maybe_await(self.dispatch(ev, now))
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ProtocolError
from .channel import ChannelConnection, Event
from .messages.base import BASE, Message

__all__ = ["ChannelClientBase", "StateTable", "Handler", "ACK_WINDOW", "HIGH_WATER"]

#: libspice CLIENT_ACK_WINDOW (the narrow one: the window a client acknowledges in)
ACK_WINDOW = 20
#: bytes handed to the transport and not yet written, above which a producer waits
HIGH_WATER = 2 << 20

Handler = Callable[..., object]


@dataclass(frozen=True)
class StateTable:
    """The messages one state accepts: class -> handler, and what to do with any other message."""

    handlers: Mapping[type, Handler] = field(default_factory=dict)
    unexpected: Literal["ignore", "error"] = "ignore"


def is_common(event: Event) -> bool:
    """Whether ``event`` belongs to every channel (base messages, connection events)."""
    return not isinstance(event, Message) or type(event).CHANNEL == BASE


class ChannelClientBase:
    """Flow control and per-state dispatch of one client's channel connection (see the module doc).

    Args:
        conn: the connection's data phase.
        ack_window: messages per ACK; None for a channel without ack flow control.
        high_water: bytes in flight above which :meth:`may_send` is false; None for no byte limit.
    """

    def __init__(self, conn: ChannelConnection, *, ack_window: int | None = ACK_WINDOW, high_water: int | None = HIGH_WATER) -> None:
        self.conn = conn
        self.high_water = high_water
        #: bytes taken by :meth:`take_output` and not yet reported :meth:`written`
        self.inflight = 0
        self.state: Hashable = None
        self.tables: Mapping[Hashable, StateTable] = {None: StateTable()}
        if ack_window:
            conn.set_ack_window(ack_window)

    # --- output --------------------------------------------------------------------------------

    def may_send(self) -> bool:
        """Whether another message may be marshalled now (ack window open, bytes under high water)."""
        if not self.conn.can_send:
            return False
        return self.high_water is None or self.inflight + self.conn.pending_output < self.high_water

    def take_output(self) -> bytes:
        """The marshalled bytes for the transport; they count as in flight until :meth:`written`."""
        data = self.conn.data_to_send()
        self.inflight += len(data)
        return data

    def written(self, nbytes: int) -> None:
        """The transport wrote ``nbytes`` of what :meth:`take_output` gave."""
        self.inflight = max(0, self.inflight - nbytes)

    # --- input ---------------------------------------------------------------------------------

    def dispatch(self, event: Event, *args: Any) -> object:
        """Run the handler the current state has for ``event`` with ``(event, *args)``; returns its
        result (None when ignored).

        Raises:
            ProtocolError: the state does not accept this channel message and says ``error``.
        """
        table = self.tables[self.state]
        handler = table.handlers.get(type(event))
        if handler is not None:
            return handler(event, *args)
        if table.unexpected == "error" and not is_common(event):
            raise ProtocolError(f"{type(event).__name__} not expected in state {self.state}")
        return self.unhandled(event)

    def unhandled(self, event: Event) -> object:
        """An event the state has no handler for and accepts (override to log; default: nothing)."""
        return None
