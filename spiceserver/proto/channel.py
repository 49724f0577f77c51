"""The data phase of one channel connection, sans-IO: framing, ack window, ping, in both roles.

Counterpart of spice ``server/red-channel-client.cpp`` (serials, ``handle_incoming``, ack window,
latency pings) and spice-gtk ``src/spice-channel.c`` / ``channel-base.c`` (ACK_SYNC, ACK, PONG).

The object never blocks and never touches a socket: feed it bytes with :meth:`receive_data`, take
parsed messages back, queue messages with :meth:`send`, and write :meth:`data_to_send` to the
transport. Time is an argument (``now``, seconds as a float) so tests control it (aioquic pattern).

Ack window (server role, channels that handle acks: display, cursor): :meth:`set_ack_window` sends
SET_ACK(generation, window); the client answers ACK_SYNC(generation) then one ACK per ``window``
messages it received. The server may have at most ``2 * window`` unacknowledged messages in flight:
:attr:`can_send` tells the producer when to stop, exactly as ``RedChannelClient`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from .messages import base
from .messages.base import CLIENT, SERVER, Direction, Message, parse_body
from .wire import DEFAULT_MAX_MESSAGE, Framer, frame

__all__ = ["ChannelConnection", "PongReceived", "Event"]


@dataclass(frozen=True, slots=True)
class PongReceived:
    """A PONG answered one of our PINGs; ``rtt`` in seconds (server clock)."""

    id: int
    rtt: float
    size: int  # padding bytes of the PING it answers


Event = Message | PongReceived


class ChannelConnection:
    """One channel's data phase.

    Args:
        channel_type: the ChannelType (selects the message table).
        role: ``"server"`` (we send SPICE_MSG_*, parse SPICE_MSGC_*) or ``"client"``.
        mini_header: whether both sides agreed on the mini header.
        max_message_size: largest incoming body accepted.
    """

    def __init__(
        self,
        channel_type: int,
        role: Direction,
        *,
        mini_header: bool,
        max_message_size: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        self.channel_type = int(channel_type)
        self.role = role
        self.peer: Direction = CLIENT if role == SERVER else SERVER
        self.mini_header = mini_header
        self._framer = Framer(mini_header, max_message_size)
        self._out = bytearray()
        self.send_serial = 0
        self.recv_serial = 0
        self.messages_sent = 0
        self.bytes_sent = 0
        # server-role ack window
        self.ack_generation = 0
        self.ack_window = 0  # 0 = no flow control
        self.ack_synced = True
        self.unacked = 0
        # client-role ack accounting
        self._client_ack_window = 0
        self._client_ack_count = 0
        # pings
        self._ping_id = 0
        self._pings: dict[int, tuple[float, int]] = {}
        self.last_rtt: float | None = None
        self.closed = False

    # --- output --------------------------------------------------------------------------------

    def send(self, msg: Message) -> int:
        """Queue ``msg``; returns its serial."""
        if self.role != msg.DIRECTION:
            raise ValueError(f"{type(msg).__name__} is not a {self.role} message")
        return self.send_raw(msg.TYPE, msg.encode())

    def send_raw(self, type_: int, body: bytes) -> int:
        """Queue an already-marshalled body of message ``type_``; returns its serial."""
        self.send_serial += 1
        data = frame(type_, body, mini=self.mini_header, serial=self.send_serial)
        self._out += data
        self.messages_sent += 1
        self.bytes_sent += len(data)
        if self.ack_window and self.role == SERVER:
            self.unacked += 1
        return self.send_serial

    def data_to_send(self) -> bytes:
        """Take the bytes queued for the peer; the buffer is empty afterwards."""
        data = bytes(self._out)
        self._out.clear()
        return data

    @property
    def pending_output(self) -> int:
        """Number of bytes queued and not yet taken by :meth:`data_to_send`."""
        return len(self._out)

    # --- ack window (server role) --------------------------------------------------------------

    def set_ack_window(self, window: int) -> None:
        """Start (or restart) ack flow control with ``window`` messages."""
        self.ack_generation += 1
        self.ack_window = window
        self.ack_synced = False
        self.send(base.SetAck(generation=self.ack_generation, window=window))
        self.unacked = 0

    @property
    def can_send(self) -> bool:
        """False while more than twice the window is unacknowledged (the producer should wait)."""
        return not self.ack_window or self.unacked <= 2 * self.ack_window

    # --- pings ---------------------------------------------------------------------------------

    def send_ping(self, now: float, size: int = 0) -> int:
        """Send a PING padded with ``size`` zero bytes; the PONG comes back as PongReceived."""
        self._ping_id += 1
        self._pings[self._ping_id] = (now, size)
        if len(self._pings) > 64:  # a peer that never answers must not grow this without bound
            del self._pings[min(self._pings)]
        self.send(base.Ping(id=self._ping_id, timestamp=int(now * 1_000_000), data=bytes(size)))
        return self._ping_id

    # --- input ---------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview, now: float = 0.0) -> list[Event]:
        """Feed bytes from the peer; returns the messages and events they complete.

        Ack, ack-sync and ping/pong bookkeeping is handled here; those messages are still returned
        (except PONGs to our own pings, returned as PongReceived) so the caller may observe them.

        Raises:
            ProtocolError: the bytes are not a valid message stream (unknown type, short body,
                oversized message). The caller should close this channel connection.
        """
        events: list[Event] = []
        for raw in self._framer.feed(data):
            self.recv_serial += 1
            msg = parse_body(self.channel_type, self.peer, raw.type, raw.body)
            if self.role == CLIENT and self._client_ack_window:
                # Counted before handling, as spice-gtk does: SET_ACK itself is not counted.
                self._client_ack_count += 1
                if self._client_ack_count >= self._client_ack_window:
                    self._client_ack_count = 0
                    self.send(base.Ack())
            ev = self._handle_builtin(msg, now)
            if ev is not None:
                events.append(ev)
        return events

    def _handle_builtin(self, msg: Message, now: float) -> Event | None:
        if self.role == SERVER:
            if isinstance(msg, base.AckSync):
                if msg.generation == self.ack_generation:
                    self.ack_synced = True
            elif isinstance(msg, base.Ack):
                if self.ack_synced:
                    self.unacked = max(0, self.unacked - self.ack_window)
            elif isinstance(msg, base.Pong):
                sent = self._pings.pop(msg.id, None)
                if sent is None:
                    return msg
                rtt = max(0.0, now - sent[0])
                self.last_rtt = rtt
                return PongReceived(msg.id, rtt, sent[1])
            return msg
        # client role
        if isinstance(msg, base.SetAck):
            self._client_ack_window = msg.window
            self._client_ack_count = 0
            self.send(base.AckSync(generation=msg.generation))
        elif isinstance(msg, base.Ping):
            self.send(base.Pong(id=msg.id, timestamp=msg.timestamp))
        return msg

