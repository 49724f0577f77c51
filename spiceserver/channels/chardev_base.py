"""The char-device base: a byte pipe between the server and a device, with bounded writes.

Counterpart of libspice's ``SpiceCharDeviceInterface`` (spice ``server/spice.h``: ``state``,
``write``, ``read``, ``event``) and of ``RedCharDevice`` (spice ``server/char-device.cpp``: the
write buffers queued toward the device, the read loop that stops while its consumer cannot take
more). Import the public names from :mod:`spiceserver.channels.chardev`.

Theory of operation
-------------------

*Toward the device.* :meth:`CharDevice.write` queues the bytes and returns at once. The queue is
bounded by ``write_limit`` (1 MiB, libspice ``QUEUED_DATA_LIMIT`` in ``spicevmc.cpp``): a write
that would take it past the bound is refused (False) and nothing of it is queued, unless the queue
is empty (so a single write larger than the bound still goes through, alone). A refusal arms one
``device_writable`` call, made on the loop once the queue has drained to half the bound (or was
dropped). Bytes written while the device is not open are dropped and the write counts as done
(the peer that opens it next starts a new stream; a guest port that is closed takes nothing
either); the device closing drops what is queued toward it.

*From the device.* The adapter reads at most :data:`READ_CHUNK` (64 KiB, libspice ``BUF_SIZE``)
at a time; what it reads, and its open/close and port events, go through one ordered queue to
the listener, so the listener sees the old peer's last bytes, then ``device_opened(False)``, then
``device_opened(True)`` and the new peer's bytes. :meth:`~CharDevice.pause_reading` stops the
deliveries (and the adapter's reading) until :meth:`~CharDevice.resume_reading`; what was read
already waits in the queue. Nothing is delivered while no listener is attached.

*Client state.* :meth:`CharDevice.client_state` tells the device that a client connected to its
channel or left (libspice ``SpiceCharDeviceInterface.state``, which QEMU turns into the chardev's
OPENED / CLOSED events toward the guest-facing device); :attr:`CharDevice.client_connected` holds
the last value. The in-process pair hands it to the device model; the socket and pty adapters
have no way to say it and keep only the attribute.

*Threads.* Everything here runs on the event loop given to :meth:`~CharDevice.attach`. The
listener is never called from inside :meth:`~CharDevice.write`, :meth:`~CharDevice.attach` or
:meth:`~CharDevice.resume_reading`; those schedule the call on the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol

__all__ = ["READ_CHUNK", "WRITE_LIMIT", "CharDevice", "CharDeviceListener"]

log = logging.getLogger("spiceserver")

#: the largest piece delivered to ``device_data`` (libspice ``BUF_SIZE``, 64 KiB)
READ_CHUNK = 64 * 1024
#: the default bound of the bytes queued toward a device (libspice ``QUEUED_DATA_LIMIT``, 1 MiB)
WRITE_LIMIT = 1024 * 1024

_DATA, _OPENED, _EVENT = 0, 1, 2


class CharDeviceListener(Protocol):
    """The server side that consumes a char device (a channel, the agent). Called on the loop."""

    def device_data(self, data: bytes) -> None:
        """Device -> server bytes, in order, at most :data:`READ_CHUNK` at a time."""

    def device_opened(self, opened: bool) -> None:
        """The device end was opened (a peer connected, the guest opened its port) or closed."""

    def device_event(self, event: int) -> None:
        """A port event from the device side (``PortEvent``: 0 OPENED, 1 CLOSED, 2 BREAK)."""

    def device_writable(self) -> None:
        """There is room again after :meth:`CharDevice.write` refused bytes."""


class CharDevice:
    """Base class of the char devices; the adapters subclass it.

    Subclasses start their I/O in :meth:`_start_io` (first attach), read only while
    :meth:`_set_reading` says so and hand what they read to :meth:`_feed`, report open and
    close with :meth:`_set_opened`, and send what :meth:`_kick_write` asks for by taking bytes with
    :meth:`_peek` and :meth:`_consume`.

    Args:
        write_limit: the bound, in bytes, of what is queued toward the device.

    Attributes:
        opened: the device end is open (a peer is connected, the guest opened its port).
        client_connected: a client is connected to the device's channel (:meth:`client_state`).
        listener: the attached listener, or None.
        loop: the event loop given to :meth:`attach` (None before).
    """

    def __init__(self, *, write_limit: int = WRITE_LIMIT) -> None:
        if write_limit < 1:
            raise ValueError("write_limit must be positive")
        self.opened = False
        self.client_connected = False
        self.write_limit = write_limit
        self.listener: CharDeviceListener | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._in: deque[tuple[int, bytes | int | bool]] = deque()
        self._in_bytes = 0
        self._paused = False
        self._reading = False
        self._want_writable = False
        self._pump_scheduled = False
        self._started = False
        self.closed = False

    # -- the server's side -------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Bytes queued toward the device and not yet handed to it."""
        return self._out_bytes

    @property
    def pending(self) -> int:
        """Bytes read from the device and not delivered yet (reading paused, or no listener)."""
        return self._in_bytes

    @property
    def paused(self) -> bool:
        """The server paused the device's reads (:meth:`pause_reading`)."""
        return self._paused

    def attach(self, listener: CharDeviceListener, loop: asyncio.AbstractEventLoop) -> None:
        """Start delivering the device's data and events to ``listener`` on ``loop``.

        The listener is not told the current state: it reads :attr:`opened`.

        Raises:
            RuntimeError: the device is closed, already attached, or was attached to another loop.
        """
        if self.closed:
            raise RuntimeError("char device is closed")
        if self.listener is not None:
            raise RuntimeError("char device already attached")
        if self.loop is not None and self.loop is not loop:
            raise RuntimeError("char device was attached to another event loop")
        self.listener = listener
        self.loop = loop
        if not self._started:
            self._started = True
            self._start_io()
        self._update_reading()
        self._schedule_pump()
        if self._out:
            self._kick_write()

    def detach(self) -> None:
        """Stop delivering to the listener; the device keeps its peer, reads stop meanwhile."""
        self.listener = None
        self._update_reading()

    def write(self, data: bytes) -> bool:
        """Queue ``data`` toward the device (server -> device); never blocks. Event loop only.

        Returns:
            False when the bytes were not accepted (the queue bound): call again after
            ``device_writable``. True when they were queued, or dropped because the device is not
            open (or is closed).
        """
        n = len(data)
        if not n or self.closed or not self.opened:
            return True
        if self._out_bytes and self._out_bytes + n > self.write_limit:
            self._want_writable = True
            return False
        self._out.append(bytes(data))
        self._out_bytes += n
        if self.loop is not None:
            self._kick_write()
        return True

    def take_queued(self) -> bytes:
        """Remove and return the bytes queued toward the device (a migration hands them to the
        destination server, which writes them to its device). Event loop only."""
        data = b"".join(self._out)
        self._discard_output()
        return data

    def pause_reading(self) -> None:
        """Stop delivering ``device_data`` (and events after it) until :meth:`resume_reading`."""
        self._paused = True
        self._update_reading()

    def resume_reading(self) -> None:
        """Deliver again what was read, and read on."""
        self._paused = False
        self._update_reading()
        self._schedule_pump()

    def send_event(self, event: int) -> None:
        """A port event toward the device (the client's ``PORT_EVENT``); adapters without an
        event path log and drop it."""
        if not self.closed:
            self._device_event(event)

    def client_state(self, connected: bool) -> None:
        """A client connected to the device's channel (True) or left (False); event loop."""
        if not self.closed and connected != self.client_connected:
            self.client_connected = connected
            self._client_state(connected)

    async def close(self) -> None:
        """Stop the I/O, drop what is queued either way and release the device's resources."""
        if self.closed:
            return
        self.closed = True
        self.listener = None
        self._discard_output()
        self._in.clear()
        self._in_bytes = 0
        self.opened = False
        await self._close_io()

    # -- for the adapters -----------------------------------------------------------------------

    def _start_io(self) -> None:
        """Begin the I/O (first :meth:`attach`; :attr:`loop` is set)."""

    def _set_reading(self, reading: bool) -> None:
        """Read from the device, or stop reading."""

    def _kick_write(self) -> None:
        """There are bytes in the queue: send what the device takes (with :meth:`_peek` /
        :meth:`_consume`) and arrange to send the rest later."""

    def _device_event(self, event: int) -> None:
        log.debug("%s has no event path; port event %d dropped", type(self).__name__, event)

    def _client_state(self, connected: bool) -> None:
        """Tell the device that a client connected or left (base: nothing to tell it through)."""

    async def _close_io(self) -> None:
        """Release the adapter's resources."""

    def _peek(self) -> bytes | None:
        """The next queued bytes (one write, or what is left of it), or None."""
        return self._out[0] if self._out else None

    def _consume(self, n: int) -> None:
        """``n`` bytes of :meth:`_peek` went to the device."""
        head = self._out[0]
        if n >= len(head):
            self._out.popleft()
            n = len(head)
        else:
            self._out[0] = head[n:]
        self._out_bytes -= n
        if self._want_writable and self._out_bytes <= self.write_limit // 2:
            self._want_writable = False
            self._call_listener(_notify_writable)

    def _discard_output(self) -> None:
        dropped = self._out_bytes
        self._out.clear()
        self._out_bytes = 0
        if dropped:
            log.debug("%s: %d queued bytes dropped", type(self).__name__, dropped)
        if self._want_writable:
            self._want_writable = False
            self._call_listener(_notify_writable)

    def _feed(self, data: bytes) -> None:
        """Bytes read from the device (any size; delivered in :data:`READ_CHUNK` pieces)."""
        if self.closed or not data:
            return
        for i in range(0, len(data), READ_CHUNK):
            piece = data[i : i + READ_CHUNK]
            self._in.append((_DATA, piece))
            self._in_bytes += len(piece)
        self._pump()
        self._update_reading()

    def _set_opened(self, opened: bool) -> None:
        """The device end opened or closed; a close drops what is queued toward it."""
        if self.closed or opened == self.opened:
            return
        self.opened = opened
        if not opened:
            self._discard_output()
        self._in.append((_OPENED, opened))
        self._pump()

    def _feed_event(self, event: int) -> None:
        """A port event from the device side."""
        if self.closed:
            return
        self._in.append((_EVENT, event))
        self._pump()

    # -- internals ---------------------------------------------------------------------------

    def _update_reading(self) -> None:
        want = self.listener is not None and not self._paused and not self.closed and self._in_bytes < READ_CHUNK
        if want != self._reading and self._started and not self.closed:
            self._reading = want
            self._set_reading(want)

    def _schedule_pump(self) -> None:
        if self.loop is not None and not self._pump_scheduled and self._in:
            self._pump_scheduled = True
            self.loop.call_soon(self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._pump_scheduled = False
        self._pump()
        self._update_reading()

    def _pump(self) -> None:
        while self._in and not self._paused and self.listener is not None:
            kind, value = self._in.popleft()
            listener = self.listener
            try:
                if kind == _DATA:
                    assert isinstance(value, bytes)
                    self._in_bytes -= len(value)
                    listener.device_data(value)
                elif kind == _OPENED:
                    listener.device_opened(bool(value))
                else:
                    assert isinstance(value, int)
                    listener.device_event(value)
            except Exception:
                log.exception("char device listener %r failed", listener)

    def _call_listener(self, fn: _ListenerCall) -> None:
        if self.loop is None:
            return

        def call() -> None:
            listener = self.listener
            if listener is not None and not self.closed:
                try:
                    fn(listener)
                except Exception:
                    log.exception("char device listener %r failed", listener)

        self.loop.call_soon(call)


class _ListenerCall(Protocol):
    def __call__(self, listener: CharDeviceListener, /) -> None: ...


def _notify_writable(listener: CharDeviceListener) -> None:
    listener.device_writable()
