"""SPICE rings in device RAM: the command and cursor rings, and the release ring.

Counterpart of spice-protocol ``spice/ipc_ring.h`` (``SPICE_RING_*`` macros) and of the ring use in
QEMU ``hw/display/qxl.c`` (``interface_get_command``, ``interface_req_cmd_notification``,
``qxl_push_free_res``).

A ring is a header ``{num_items, prod, notify_on_prod, cons, notify_on_cons}`` (u32 each) followed
by ``num_items`` elements. ``prod`` and ``cons`` are free-running u32 counters; an element's index is
the counter modulo ``num_items`` (a power of two). The notify protocol avoids interrupts and
wake-ups while both sides are busy:

* A consumer that finds the ring empty and wants to sleep sets ``notify_on_prod = prod + 1`` and
  checks again (``SPICE_RING_CONS_WAIT``); the producer, after bumping ``prod``, notifies only if
  ``prod == notify_on_prod`` (``SPICE_RING_PUSH``).
* Symmetrically a producer that finds the ring full sets ``notify_on_cons = cons + 1``
  (``SPICE_RING_PROD_WAIT``); the consumer notifies if ``cons == notify_on_cons`` after a pop.

For the device the command and cursor rings are consumed and the release ring produced; the guest
does the opposite. :class:`Ring` offers both sides (the guest side drives tests and example guest
drivers). The header lives in guest memory, so the device never trusts it: ``num_items`` must stay
what the device initialised, and more than ``num_items`` outstanding elements is corruption
(:class:`~spiceserver.errors.GuestError`).

The guest writes the header while the device reads it, truly at the same time when the guest runs in
another process or in a vCPU that does not hold the GIL. Each header field is therefore read and
written with one aligned 32-bit access (through a ``uint32`` view of the header), as the C
``SPICE_RING_*`` macros do: ``struct.pack_into`` writes byte by byte, and a reader could see half of
a counter update.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, NoReturn, TypeVar

import numpy as np

from ..errors import GuestError
from . import layout as L
from .commands import QXLCommand

__all__ = ["RingHeader", "Ring", "CommandRing", "ReleaseRing"]

T = TypeVar("T")
_M32 = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class RingHeader:
    """A ring's header fields as read once from guest memory (``ipc_ring.h``)."""

    num_items: int
    prod: int
    notify_on_prod: int
    cons: int
    notify_on_cons: int

    @property
    def outstanding(self) -> int:
        """Number of elements produced and not consumed yet."""
        return (self.prod - self.cons) & _M32


class Ring(ABC, Generic[T]):
    """One ring at ``offset`` in ``buf`` (the RAM BAR) with ``capacity`` elements.

    Subclasses say how an element is encoded (:meth:`_decode`, :meth:`_encode`).
    """

    item_size = 8

    def __init__(self, buf: memoryview, offset: int, capacity: int, name: str) -> None:
        if capacity <= 0 or capacity & (capacity - 1):
            raise ValueError("ring capacity must be a power of two")
        if offset < 0 or offset + L.RING_ITEMS_OFF + capacity * self.item_size > len(buf):
            raise ValueError("ring does not fit in the buffer")
        if offset % 4:
            raise ValueError("ring header must be 4-byte aligned")
        self.buf = buf
        # the five header fields, each accessed with one aligned 32-bit load or store
        self._head = np.frombuffer(buf, dtype=np.uint32, count=5, offset=offset)
        self.offset = offset
        self.capacity = capacity
        self.name = name

    # --- raw header access ---------------------------------------------------------------------

    def _get(self, field_off: int) -> int:
        return int(self._head[field_off >> 2])

    def _set(self, field_off: int, value: int) -> None:
        self._head[field_off >> 2] = value & _M32

    def header(self) -> RingHeader:
        """One snapshot of the header (each field read once, atomically)."""
        return RingHeader(*self._head.tolist())

    def init(self) -> None:
        """``SPICE_RING_INIT``: empty, consumer wants a notification on the first element."""
        self._head[:] = (self.capacity, 0, 1, 0, 0)

    def _checked(self) -> RingHeader:
        h = self.header()
        if h.num_items != self.capacity or h.outstanding > self.capacity:
            self._corrupt(h.num_items, h.prod, h.cons)
        return h

    def _corrupt(self, num_items: int, prod: int, cons: int) -> NoReturn:
        """Raise the GuestError for a header with these values (``num_items`` or ``prod - cons`` wrong)."""
        if num_items != self.capacity:
            raise GuestError(f"{self.name} ring: num_items {num_items} != {self.capacity}")
        raise GuestError(
            f"{self.name} ring corrupt: prod {prod} - cons {cons} = {(prod - cons) & _M32} > {self.capacity} items"
        )

    def _item_off(self, counter: int) -> int:
        return self.offset + L.RING_ITEMS_OFF + (counter & (self.capacity - 1)) * self.item_size

    @abstractmethod
    def _decode(self, raw: bytes) -> T:
        """One ring item's bytes -> the item (per ring type)."""

    @abstractmethod
    def _encode(self, item: T) -> bytes:
        """The item -> one ring item's bytes."""

    # --- consumer side -------------------------------------------------------------------------

    def is_empty(self) -> bool:
        """True when the consumer has caught up with the producer."""
        return self._checked().outstanding == 0

    def pop(self) -> tuple[T, bool] | None:
        """Take the next element: ``(item, notify_producer)``, or None if the ring is empty.

        ``notify_producer`` is ``SPICE_RING_POP``'s flag: the producer asked to be told when there
        is room (``cons == notify_on_cons``).

        Raises:
            GuestError: the header is corrupt.
        """
        # :meth:`_checked` on one read of the header, without building a RingHeader
        num_items, prod, _nprod, cons, _ncons = self._head.tolist()
        outstanding = (prod - cons) & _M32
        if num_items != self.capacity or outstanding > self.capacity:
            self._corrupt(num_items, prod, cons)
        if outstanding == 0:
            return None
        item = self._decode_at(self.offset + L.RING_ITEMS_OFF + (cons & (self.capacity - 1)) * self.item_size)
        cons = (cons + 1) & _M32
        head = self._head
        head[3] = cons  # RING_CONS_OFF
        return item, cons == int(head[4])  # RING_NOTIFY_ON_CONS_OFF

    def _decode_at(self, off: int) -> T:
        """The element at ``off`` in the buffer, read once."""
        return self._decode(bytes(self.buf[off : off + self.item_size]))

    def request_notification(self) -> bool:
        """``SPICE_RING_CONS_WAIT``: arm a producer notification if empty.

        Returns:
            True if the ring is (still) empty after arming, so the consumer may sleep until
            notified; False if elements are waiting (keep consuming). This is the return value of
            ``QXLInterface.req_cmd_notification``.

        Raises:
            GuestError: the header is corrupt.
        """
        h = self._checked()
        if h.outstanding:
            return False
        self._set(L.RING_NOTIFY_ON_PROD_OFF, h.prod + 1)
        return self._checked().outstanding == 0

    # --- producer side -------------------------------------------------------------------------

    def free_slots(self) -> int:
        """How many more elements fit before the ring is full."""
        return self.capacity - self._checked().outstanding

    def push(self, item: T) -> bool | None:
        """Append ``item``: the consumer-notify flag, or None if full (a notification is armed).

        Raises:
            GuestError: the header is corrupt.
        """
        h = self._checked()
        if h.outstanding == self.capacity:
            # SPICE_RING_PROD_WAIT: ask the consumer to notify on the next pop, then look again
            self._set(L.RING_NOTIFY_ON_CONS_OFF, h.cons + 1)
            h = self._checked()
            if h.outstanding == self.capacity:
                return None
        off = self._item_off(h.prod)
        self.buf[off : off + self.item_size] = self._encode(item)
        prod = (h.prod + 1) & _M32
        self._set(L.RING_PROD_OFF, prod)
        return prod == self._get(L.RING_NOTIFY_ON_PROD_OFF)

    # QEMU's release ring builds the element at ``prod`` in place, then publishes it.

    def prod_item(self) -> T:
        """The element at ``prod`` (not yet published)."""
        off = self._item_off(self._get(L.RING_PROD_OFF))
        return self._decode(bytes(self.buf[off : off + self.item_size]))

    def set_prod_item(self, item: T) -> None:
        """Overwrite the element at ``prod`` (not yet published)."""
        off = self._item_off(self._get(L.RING_PROD_OFF))
        self.buf[off : off + self.item_size] = self._encode(item)

    def publish(self) -> bool:
        """Publish the element at ``prod`` (``SPICE_RING_PUSH``); returns the notify flag."""
        prod = (self._get(L.RING_PROD_OFF) + 1) & _M32
        self._set(L.RING_PROD_OFF, prod)
        return prod == self._get(L.RING_NOTIFY_ON_PROD_OFF)


class CommandRing(Ring[QXLCommand]):
    """The command or cursor ring: elements are QXLCommand ``{data, type, padding}`` (16 B)."""

    item_size = 16

    def _decode(self, raw: bytes) -> QXLCommand:
        data, type_, _pad = L.COMMAND.unpack(raw)
        return QXLCommand(data=data, type=type_)

    def _decode_at(self, off: int) -> QXLCommand:
        data, type_, _pad = L.COMMAND.unpack_from(self.buf, off)  # one read of the 16 bytes
        return QXLCommand(data=data, type=type_)

    def _encode(self, item: QXLCommand) -> bytes:
        return L.COMMAND.pack(item.data, item.type, 0)


class ReleaseRing(Ring[int]):
    """The release ring: elements are u64 release ids (heads of ``next``-linked lists)."""

    item_size = 8

    def _decode(self, raw: bytes) -> int:
        return struct.unpack("<Q", raw)[0]  # type: ignore[no-any-return]

    def _encode(self, item: int) -> bytes:
        return struct.pack("<Q", item)
