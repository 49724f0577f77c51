"""Memslots: QXLPHYSICAL decoding and every way an address is rejected (spice memslot.c)."""

from __future__ import annotations

import pytest

from spiceserver.errors import GuestError
from spiceserver.qxl.memory import Bar, MemSlots, PhysicalMemory

RAM_BASE = 0x1000_0000
VRAM_BASE = 0x2000_0000


@pytest.fixture
def mem() -> MemSlots:
    ram = bytearray(range(256)) * 256  # 64 KiB
    vram = bytearray(64 << 10)
    slots = MemSlots(PhysicalMemory([Bar("ram", RAM_BASE, ram), Bar("vram", VRAM_BASE, vram)]))
    slots.add_slot(1, 1, RAM_BASE, RAM_BASE + len(ram), generation=3)
    slots.add_slot(1, 2, VRAM_BASE + 0x1000, VRAM_BASE + 0x2000, generation=0)
    return slots


def test_decode_and_encode_roundtrip(mem: MemSlots) -> None:
    phys = mem.encode(1, 3, 0x1234)
    assert phys == (1 << 56) | (3 << 48) | 0x1234
    assert mem.decode(phys) == (1, 3, 0x1234)


def test_read_translates_offsets_from_the_slot_start(mem: MemSlots) -> None:
    assert mem.read(mem.encode(1, 3, 0x10), 4, 1) == bytes([0x10, 0x11, 0x12, 0x13])
    assert mem.translate(mem.encode(2, 0, 0x10), 4, 1) == VRAM_BASE + 0x1010


def test_read_is_a_copy(mem: MemSlots) -> None:
    phys = mem.encode(2, 0, 0)
    before = mem.read(phys, 4, 1)
    mem.write(phys, b"\xff\xff\xff\xff", 1)
    assert before == bytes(4) and mem.read(phys, 4, 1) == b"\xff" * 4


def test_address_delta_for_plain_physical_addresses(mem: MemSlots) -> None:
    # qxl-1 SET_MODE: slot 0 maps QXLPHYSICAL == guest-physical address
    mem.add_slot(1, 0, RAM_BASE, RAM_BASE + 0x100, address_delta=0)
    assert mem.read(RAM_BASE + 5, 1, 1) == b"\x05"


@pytest.mark.parametrize(
    ("phys", "size", "group", "reason"),
    [
        ((1 << 56) | (3 << 48), 4, 2, "group 2 out of range"),
        ((9 << 56) | (3 << 48), 4, 1, "slot id 9 too big"),
        ((3 << 56), 4, 1, "slot 3 of group 1 is not active"),
        ((1 << 56) | (4 << 48), 4, 1, "generation 4 != slot 1 generation 3"),
        ((1 << 56) | (3 << 48) | 0x10000, 1, 1, "outside slot 1"),  # just past the end
        ((1 << 56) | (3 << 48) | 0xFFFE, 4, 1, "outside slot 1"),  # crosses the end
        ((2 << 56), 0x1001, 1, "outside slot 2"),
        ((1 << 56) | (3 << 48) | 0xFFFF_FFFF_FFFF, 8, 1, "outside slot 1"),
    ],
)
def test_rejections(mem: MemSlots, phys: int, size: int, group: int, reason: str) -> None:
    with pytest.raises(GuestError, match=reason):
        mem.read(phys, size, group)


def test_below_slot_start_rejected(mem: MemSlots) -> None:
    mem.add_slot(1, 3, RAM_BASE + 0x100, RAM_BASE + 0x200, address_delta=RAM_BASE)  # offsets are guest-physical
    with pytest.raises(GuestError, match="outside slot 3"):
        mem.read((3 << 56) | 0xFF, 1, 1)


def test_overflow_rejected(mem: MemSlots) -> None:
    mem.add_slot(1, 4, 0, (1 << 64) - 1, address_delta=(1 << 64) - 16)
    with pytest.raises(GuestError, match="overflows"):
        mem.read((4 << 56) | 0x100, 16, 1)


def test_slot_larger_than_the_bar_still_bounded_by_the_bar(mem: MemSlots) -> None:
    mem.add_slot(1, 5, RAM_BASE, RAM_BASE + (1 << 30))  # a slot past the BAR end
    with pytest.raises(GuestError, match="not inside one device BAR"):
        mem.read((5 << 56) | (64 << 10) - 2, 4, 1)


def test_range_spanning_two_bars_rejected() -> None:
    a, b = bytearray(16), bytearray(16)
    slots = MemSlots(PhysicalMemory([Bar("ram", 0x1000, a), Bar("vram", 0x1010, b)]))
    slots.add_slot(0, 1, 0x1000, 0x1020)
    with pytest.raises(GuestError, match="not inside one device BAR"):
        slots.read((1 << 56) | 12, 8, 0)


def test_delete_and_reset(mem: MemSlots) -> None:
    phys = mem.encode(2, 0, 0)
    mem.del_slot(1, 2)
    with pytest.raises(GuestError, match="not active"):
        mem.read(phys, 1, 1)
    mem.reset()
    with pytest.raises(GuestError, match="not active"):
        mem.read(mem.encode(1, 3, 0), 1, 1)


def test_max_size(mem: MemSlots) -> None:
    assert mem.max_size(mem.encode(2, 0, 0xFF0), 1) == 0x10
    assert mem.max_size(mem.encode(2, 0, 0x1000), 1) == 0


def test_view_is_live(mem: MemSlots) -> None:
    v = mem.view(mem.encode(2, 0, 8), 4, 1)
    v[:] = b"abcd"
    assert mem.read(mem.encode(2, 0, 8), 4, 1) == b"abcd"


def test_negative_size_and_bad_config() -> None:
    slots = MemSlots(PhysicalMemory([Bar("ram", 0, bytearray(16))]))
    slots.add_slot(0, 0, 0, 16)
    with pytest.raises(GuestError, match="negative"):
        slots.read(0, -1, 0)
    with pytest.raises(ValueError):
        MemSlots(PhysicalMemory([]), num_slots=300, id_bits=8)
    with pytest.raises(ValueError):
        slots.add_slot(0, 0, 0, 16, generation=256)
    with pytest.raises(ValueError, match="writable"):
        Bar("rom", 0, memoryview(b"readonly"))
