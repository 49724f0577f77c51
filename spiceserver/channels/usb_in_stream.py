"""The IN data a client streams for one endpoint of a redirected USB device, bounded.

Interrupt receiving, iso streams and bulk receiving (usbredir ``start_interrupt_receiving``,
``start_iso_stream``, ``start_bulk_receiving``) make the client send an endpoint's IN packets
unasked. QEMU's ``hw/usb/redirect.c`` keeps them in a per-endpoint packet queue (``bufp_alloc``,
``bufpq_target_size``); :class:`InStream` is that queue for
:class:`~spiceserver.channels.usb_device.RedirectedUsbDevice`: bounded in packets and bytes (the
oldest are dropped), with the readers waiting for data served in arrival order.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["BULK_IN_BUFFER_BYTES", "BULK_IN_BUFFER_PACKETS", "IN_BUFFER_BYTES", "IN_BUFFER_PACKETS", "InStream"]

#: interrupt / iso IN packets kept per endpoint until read (older ones are dropped)
IN_BUFFER_PACKETS = 64
#: interrupt / iso IN bytes kept per endpoint until read (older packets are dropped)
IN_BUFFER_BYTES = 1 << 20
#: buffered bulk packets kept per bulk receiving endpoint (QEMU's bufpq_target_size for bulk)
BULK_IN_BUFFER_PACKETS = 5000
#: buffered bulk bytes kept per bulk receiving endpoint (older packets are dropped)
BULK_IN_BUFFER_BYTES = 4 << 20


class InStream:
    """IN packets of one endpoint the client streams (interrupt, iso or bulk receiving), bounded,
    and the readers waiting for them (served in arrival order)."""

    def __init__(self, max_packets: int = IN_BUFFER_PACKETS, max_bytes: int = IN_BUFFER_BYTES) -> None:
        self.packets: deque[tuple[int, bytes]] = deque()
        self.size = 0
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.started = False
        #: bulk receiving: the start request's id and its caller, until bulk_receiving_status comes
        self.start_id: int | None = None
        self.starting: asyncio.Future[int] | None = None

    def put(self, status: int, data: bytes) -> int:
        """Buffer a packet and wake the first reader; returns how many old packets were dropped."""
        self.packets.append((status, data))
        self.size += len(data)
        dropped = 0
        while len(self.packets) > self.max_packets or (self.size > self.max_bytes and len(self.packets) > 1):
            self.size -= len(self.packets.popleft()[1])
            dropped += 1
        self.wake()
        return dropped

    def popleft(self) -> tuple[int, bytes]:
        """The oldest packet."""
        status, data = self.packets.popleft()
        self.size -= len(data)
        return status, data

    def pushleft(self, status: int, data: bytes) -> None:
        """Put back the rest of a packet read in part."""
        self.packets.appendleft((status, data))
        self.size += len(data)

    def clear(self) -> None:
        """Drop what is buffered."""
        self.packets.clear()
        self.size = 0

    def _prune(self) -> bool:
        """Forget readers that gave up; True: a live one waits."""
        while self.waiters and self.waiters[0].done():
            self.waiters.popleft()
        return bool(self.waiters)

    def wake(self) -> None:
        """Wake the first live reader when there is something to read."""
        if self.packets and self._prune():
            self.waiters.popleft().set_result(None)

    async def wait(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        """Return once a packet is there for this reader (earlier readers first).

        Raises:
            TimeoutError: nothing within ``timeout`` seconds.
        """
        deadline = None if timeout is None else loop.time() + timeout
        first = True
        while not self.packets or (first and self._prune()):
            fut: asyncio.Future[None] = loop.create_future()
            if first:
                self.waiters.append(fut)
            else:  # woken but beaten to the data: keep our turn
                self.waiters.appendleft(fut)
            first = False
            try:
                if deadline is None:
                    await fut
                else:
                    await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
            except BaseException:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    self.wake()  # we were woken for data we will not take: pass it on
                raise

    def fail(self, exc: BaseException) -> None:
        """Fail every waiter (and a pending bulk receiving start)."""
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)
        starting, self.starting, self.start_id = self.starting, None, None
        if starting is not None and not starting.done():
            starting.set_exception(exc)
