"""Guest memory as the QXL device sees it: host buffers at guest-physical addresses, and memslots.

Counterpart of spice-server ``server/memslot.c`` / ``memslot.h`` (``memslot_get_virt``,
``memslot_validate_virt``, ``memslot_info_add_slot``) and of the BAR bookkeeping in QEMU
``hw/display/qxl.c`` (``qxl_add_memslot``, ``qxl_phys2virt``).

Two layers:

* :class:`PhysicalMemory` -- the device's BARs (RAM, VRAM, ROM): host buffers (``bytearray``,
  ``mmap``, writable ``memoryview``) placed at guest-physical base addresses. Every access must fall
  entirely inside one BAR; nothing else of the guest is reachable from here.
* :class:`MemSlots` -- the slot table the guest driver sets up. A ``QXLPHYSICAL`` (u64) is
  ``[slot id: top slot_id_bits][generation: next slot_gen_bits][offset: the rest]``; the offset plus
  the slot's ``address_delta`` is a guest-physical address that must lie in the slot's
  ``[start, end)`` range and inside one BAR.

Guest memory is hostile and concurrently mutable: :meth:`MemSlots.read` returns one ``bytes`` copy
that callers decode and validate; nothing is ever read twice. Every rejection raises
:class:`~spiceserver.errors.GuestError` naming what was wrong.

Threading: slot entries are immutable tuples replaced whole, so a reader on the worker thread always
sees a consistent slot while the vCPU thread adds or deletes slots.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

from ..errors import GuestError

__all__ = ["Buffer", "Bar", "PhysicalMemory", "MemSlot", "MemSlots", "as_view"]

Buffer = bytearray | memoryview | mmap.mmap

_U64 = (1 << 64) - 1


def as_view(buf: Buffer) -> memoryview:
    """A writable, flat byte view of ``buf``."""
    view = memoryview(buf)
    if view.readonly:
        raise ValueError("device memory must be writable")
    if not view.contiguous:
        raise ValueError("device memory must be contiguous")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


class Bar:
    """One memory BAR: ``view`` mapped at guest-physical ``base``."""

    __slots__ = ("base", "name", "size", "view")

    def __init__(self, name: str, base: int, buf: Buffer) -> None:
        self.name = name
        self.view = as_view(buf)
        self.size = len(self.view)
        self.base = base

    @property
    def end(self) -> int:
        """Guest-physical address just past the BAR."""
        return self.base + self.size

    def __repr__(self) -> str:
        return f"Bar({self.name!r}, {self.base:#x}+{self.size:#x})"


class PhysicalMemory:
    """The guest-physical ranges the device owns (its BARs)."""

    def __init__(self, bars: list[Bar]) -> None:
        self.bars = bars

    def bar(self, name: str) -> Bar:
        """The BAR called ``name``; KeyError if there is none."""
        for b in self.bars:
            if b.name == name:
                return b
        raise KeyError(name)

    def set_base(self, name: str, base: int) -> None:
        """The guest (firmware) moved a BAR. Memslots added before keep their old addresses."""
        self.bar(name).base = base

    def locate(self, addr: int, size: int) -> tuple[Bar, int]:
        """The BAR holding ``[addr, addr + size)`` and the offset of ``addr`` in it."""
        if size < 0:
            raise GuestError(f"negative size {size}")
        for b in self.bars:
            if b.base <= addr and addr + size <= b.base + b.size:
                return b, addr - b.base
        raise GuestError(f"guest range {addr:#x}+{size:#x} is not inside one device BAR")

    def read(self, addr: int, size: int) -> bytes:
        """A copy of ``[addr, addr + size)``; GuestError unless it lies inside one BAR."""
        b, off = self.locate(addr, size)
        return bytes(b.view[off : off + size])

    def write(self, addr: int, data: bytes) -> None:
        """Write ``data`` at ``addr``; GuestError unless it lies inside one BAR."""
        b, off = self.locate(addr, len(data))
        b.view[off : off + len(data)] = data

    def view(self, addr: int, size: int) -> memoryview:
        """A live view of ``[addr, addr + size)``; GuestError unless it lies inside one BAR."""
        b, off = self.locate(addr, size)
        return b.view[off : off + size]


@dataclass(frozen=True, slots=True)
class MemSlot:
    """One slot: guest-physical ``[start, end)``; offset + ``address_delta`` = guest-physical address."""

    start: int
    end: int
    address_delta: int
    generation: int


class MemSlots:
    """The memslot table of one device: ``num_groups`` groups of ``num_slots`` slots.

    Args:
        memory: the BARs every translated range must fall in.
        num_groups: slot groups (QEMU: 0 = host, 1 = guest).
        num_slots: slots per group (QEMU ``NUM_MEMSLOTS`` 8).
        gen_bits: generation bits in a QXLPHYSICAL (QEMU ``MEMSLOT_GENERATION_BITS`` 8).
        id_bits: slot id bits in a QXLPHYSICAL (QEMU ``MEMSLOT_SLOT_BITS`` 8).
    """

    def __init__(
        self, memory: PhysicalMemory, *, num_groups: int = 2, num_slots: int = 8, gen_bits: int = 8, id_bits: int = 8
    ) -> None:
        if num_groups <= 0 or num_slots <= 0:
            raise ValueError("need at least one group and one slot")
        if id_bits <= 0 or gen_bits < 0 or id_bits + gen_bits >= 64:
            raise ValueError("bad slot id / generation bit counts")
        if num_slots > 1 << id_bits:
            raise ValueError("more slots than slot id bits can name")
        self.memory = memory
        self.num_groups = num_groups
        self.num_slots = num_slots
        self.gen_bits = gen_bits
        self.id_bits = id_bits
        self.id_shift = 64 - id_bits
        self.gen_shift = 64 - id_bits - gen_bits
        self.gen_mask = (1 << gen_bits) - 1
        self.offset_mask = (1 << self.gen_shift) - 1
        self._slots: list[list[MemSlot | None]] = [[None] * num_slots for _ in range(num_groups)]

    # --- table ---------------------------------------------------------------------------------

    def add_slot(
        self,
        group_id: int,
        slot_id: int,
        start: int,
        end: int,
        generation: int = 0,
        *,
        address_delta: int | None = None,
    ) -> None:
        """Add (or replace) a slot covering guest-physical ``[start, end)``.

        Args:
            address_delta: added to a QXLPHYSICAL's offset bits to get the guest-physical address;
                default ``start`` (offsets count from the slot start, as for ``QXL_IO_MEMSLOT_ADD``).
        """
        self._check_ids(group_id, slot_id)
        if not 0 <= start <= end <= _U64:
            raise ValueError(f"bad slot range {start:#x}..{end:#x}")
        if not 0 <= generation <= self.gen_mask:
            raise ValueError(f"generation {generation} does not fit in {self.gen_bits} bits")
        delta = start if address_delta is None else address_delta
        self._slots[group_id][slot_id] = MemSlot(start, end, delta, generation)

    def del_slot(self, group_id: int, slot_id: int) -> None:
        """Delete a slot (``memslot_info_del_slot``); ValueError for ids out of range."""
        self._check_ids(group_id, slot_id)
        self._slots[group_id][slot_id] = None

    def reset(self) -> None:
        """Delete every slot of every group (``memslot_info_reset``)."""
        for group in self._slots:
            for i in range(len(group)):
                group[i] = None

    def slot(self, group_id: int, slot_id: int) -> MemSlot | None:
        """The slot at ``(group_id, slot_id)``, None if empty; ValueError for ids out of range."""
        self._check_ids(group_id, slot_id)
        return self._slots[group_id][slot_id]

    def _check_ids(self, group_id: int, slot_id: int) -> None:
        if not 0 <= group_id < self.num_groups:
            raise ValueError(f"group {group_id} out of range")
        if not 0 <= slot_id < self.num_slots:
            raise ValueError(f"slot {slot_id} out of range")

    # --- QXLPHYSICAL ---------------------------------------------------------------------------

    def decode(self, phys: int) -> tuple[int, int, int]:
        """``(slot_id, generation, offset)`` of a QXLPHYSICAL."""
        phys &= _U64
        return phys >> self.id_shift, (phys >> self.gen_shift) & self.gen_mask, phys & self.offset_mask

    def encode(self, slot_id: int, generation: int, offset: int) -> int:
        """The QXLPHYSICAL a guest driver builds for ``offset`` in a slot (its ``high_bits | offset``)."""
        if not 0 <= offset <= self.offset_mask:
            raise ValueError(f"offset {offset:#x} does not fit")
        return (slot_id << self.id_shift) | ((generation & self.gen_mask) << self.gen_shift) | offset

    def translate(self, phys: int, size: int, group_id: int) -> int:
        """The guest-physical address of ``[phys, phys + size)``, validated against its slot and a BAR.

        Raises:
            GuestError: bad group, slot id, inactive slot, stale generation, range outside the slot,
                address overflow, or not inside one device BAR.
        """
        bar, off = self.resolve(phys, size, group_id)
        return bar.base + off

    def resolve(self, phys: int, size: int, group_id: int) -> tuple[Bar, int]:
        """:meth:`translate`, but the BAR holding the range and the range's offset in it (the checks
        are the same; callers that read or write at once skip locating the BAR a second time).

        Raises:
            GuestError: as :meth:`translate`.
        """
        if not 0 <= group_id < self.num_groups:
            raise GuestError(f"memslot group {group_id} out of range (< {self.num_groups})")
        if size < 0:
            raise GuestError(f"negative size {size} at {phys:#x}")
        if not 0 <= phys <= _U64:
            raise GuestError(f"address {phys:#x} overflows 64 bits")
        slot_id = phys >> self.id_shift
        if slot_id >= self.num_slots:
            raise GuestError(f"address {phys:#x}: slot id {slot_id} too big (< {self.num_slots})")
        slot = self._slots[group_id][slot_id]
        if slot is None:
            raise GuestError(f"address {phys:#x}: slot {slot_id} of group {group_id} is not active")
        generation = (phys >> self.gen_shift) & self.gen_mask
        if generation != slot.generation:
            raise GuestError(
                f"address {phys:#x}: generation {generation} != slot {slot_id} generation {slot.generation}"
            )
        addr = (phys & self.offset_mask) + slot.address_delta
        end = addr + size
        if end > _U64:
            raise GuestError(f"address {phys:#x}+{size:#x} overflows")
        if addr < slot.start or end > slot.end:
            raise GuestError(
                f"address {phys:#x}+{size:#x} -> {addr:#x} outside slot {slot_id} [{slot.start:#x}, {slot.end:#x})"
            )
        for b in self.memory.bars:  # PhysicalMemory.locate, inline (one call less per guest access)
            if b.base <= addr and end <= b.base + b.size:
                return b, addr - b.base
        raise GuestError(f"guest range {addr:#x}+{size:#x} is not inside one device BAR")

    def max_size(self, phys: int, group_id: int) -> int:
        """Bytes from ``phys`` to the end of its slot (``memslot_max_size_virt``), BAR-clamped."""
        addr = self.translate(phys, 0, group_id)
        slot = self._slots[group_id][phys >> self.id_shift]
        if slot is None:  # deleted since translate: treat as empty
            return 0
        bar, off = self.memory.locate(addr, 0)
        return max(0, min(slot.end - addr, bar.size - off))

    def read(self, phys: int, size: int, group_id: int) -> bytes:
        """One copy of ``size`` guest bytes at QXLPHYSICAL ``phys`` (validated, see :meth:`translate`)."""
        bar, off = self.resolve(phys, size, group_id)
        return bytes(bar.view[off : off + size])

    def write(self, phys: int, data: bytes, group_id: int) -> None:
        """Write guest memory (the device writes release-info ``next`` links and nothing else)."""
        bar, off = self.resolve(phys, len(data), group_id)
        bar.view[off : off + len(data)] = data

    def view(self, phys: int, size: int, group_id: int) -> memoryview:
        """A live, writable view of guest memory, for surface backing stores only.

        The guest may change these bytes at any time; use it for pixels the canvas renders into and
        the guest reads back (as libspice does with ``line_0``), never for structures to validate.
        """
        bar, off = self.resolve(phys, size, group_id)
        return bar.view[off : off + size]
