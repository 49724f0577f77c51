"""The device: every I/O port against a recording backend, interrupts, releases, client info."""

from __future__ import annotations

import logging
import struct
import threading
import zlib

import pytest

from spiceserver.proto.enums import SurfaceFmt
from spiceserver.proto.messages import display as d
from spiceserver.qxl import layout as L
from spiceserver.qxl.backend import NullBackend, PrimarySurface
from spiceserver.qxl.commands import ReleaseInfo
from spiceserver.qxl.device import MEMSLOT_GROUP_GUEST, Mode, QXLDevice, QXLDeviceConfig
from spiceserver.qxl.guest import GuestDriver
from spiceserver.qxl.layout import CmdFlags, CmdType, Interrupt, IOPort
from tests.qxl.conftest import SMALL, Irq, RecordingBackend, rect

ALL = 0xFF


def pending(guest: GuestDriver) -> int:
    return guest.interrupts()


def test_memslots_set_up_like_the_kernel_driver(device: QXLDevice, guest: GuestDriver) -> None:
    main = device.memslots.slot(MEMSLOT_GROUP_GUEST, 1)
    surf = device.memslots.slot(MEMSLOT_GROUP_GUEST, 2)
    ram, vram = device.memory.bar("ram"), device.memory.bar("vram")
    assert main is not None and (main.start, main.end, main.address_delta) == (
        ram.base, ram.base + device.ram_header_offset, ram.base,
    )  # fmt: skip
    assert surf is not None and (surf.start, surf.end) == (vram.base, vram.end)


@pytest.mark.parametrize("port", [IOPort.NOTIFY_CMD, IOPort.NOTIFY_CURSOR])
def test_notify_wakes_the_worker(device: QXLDevice, backend: RecordingBackend, port: int) -> None:
    device.io_write(port, 0)
    assert backend.calls == [("wakeup",)]


def test_update_area_sync_and_async(device: QXLDevice, guest: GuestDriver, backend: RecordingBackend, irq: Irq) -> None:
    guest.set_int_mask(ALL)
    guest.update_area(3, rect(1, 2, 30, 40))
    assert backend.calls == [("update_area", 3, rect(1, 2, 30, 40), False, None)]
    assert not pending(guest) & Interrupt.IO_CMD
    backend.auto_complete = False
    guest.update_area(0, rect(0, 0, 8, 8), async_io=True)
    (_, sid, area, clear, cookie) = backend.calls[-1]
    assert (sid, area, clear) == (0, rect(0, 0, 8, 8), False) and isinstance(cookie, int)
    assert device.current_async == IOPort.UPDATE_AREA_ASYNC and not irq.level
    device.async_complete(cookie)
    assert pending(guest) & Interrupt.IO_CMD and irq.level and device.current_async is None


def test_update_area_rejections(device: QXLDevice, guest: GuestDriver, backend: RecordingBackend) -> None:
    guest.update_area(0, rect(5, 5, 5, 9), async_io=True)  # empty: old drivers do this; ignored
    assert backend.calls == [] and pending(guest) & Interrupt.IO_CMD and not device.guest_bug
    guest.update_area(0, rect(5, 5, 2, 9))
    assert backend.calls == [] and device.guest_bug and pending(guest) & Interrupt.ERROR
    guest.device.io_write(IOPort.RESET, 0)
    guest.setup_memslots()
    guest.update_area(SMALL.n_surfaces, rect(0, 0, 1, 1))
    assert device.guest_bug and ("update_area" not in backend.names())


def test_update_irq_levels(device: QXLDevice, guest: GuestDriver, irq: Irq) -> None:
    device.send_events(Interrupt.CURSOR)
    assert not irq.level  # masked
    guest.set_int_mask(Interrupt.CURSOR)
    assert irq.level
    assert guest.ack_interrupts() == Interrupt.CURSOR
    assert not irq.level and pending(guest) == 0
    levels = len(irq.levels)
    device.send_events(Interrupt.DISPLAY)  # masked: recorded as pending, line stays low
    assert pending(guest) == Interrupt.DISPLAY and not irq.level
    device.send_events(Interrupt.DISPLAY)  # already pending: no new irq evaluation
    assert len(irq.levels) == levels + 1


def test_oom_only_when_release_ring_empty(device: QXLDevice, guest: GuestDriver, backend: RecordingBackend) -> None:
    device.io_write(IOPort.NOTIFY_OOM, 0)
    assert backend.calls == [("oom",)]
    guest.release_ring.push(123)  # a release the guest has not collected yet
    device.io_write(IOPort.NOTIFY_OOM, 0)
    assert backend.calls == [("oom",)]


def test_reset(device: QXLDevice, guest: GuestDriver, backend: RecordingBackend, irq: Irq) -> None:
    guest.set_int_mask(ALL)
    device.rom[0:4] = b"JUNK"  # the ROM BAR is guest-writable; reset restores it
    guest.submit(guest.message(b"x"), CmdType.MESSAGE)
    device.send_events(Interrupt.ERROR)
    device.io_write(IOPort.RESET, 0)
    assert backend.calls == [("wakeup",), ("reset",)]
    assert bytes(device.rom[0:4]) == b"QXRO"
    assert device.memslots.slot(MEMSLOT_GROUP_GUEST, 1) is None
    assert guest.cmd_ring.header().outstanding == 0 and guest.cmd_ring.header().prod == 0
    assert pending(guest) == 0 and not irq.level
    assert device.mode == Mode.UNDEFINED


def test_set_mode_compat(device: QXLDevice, guest: GuestDriver, backend: RecordingBackend) -> None:
    guest.use_compat_mode(0)  # 640x480
    assert backend.names() == ["reset", "memslots_changed", "create_primary"]
    surface = backend.calls[2][1]
    assert isinstance(surface, PrimarySurface)
    assert (surface.width, surface.height, surface.stride, surface.format) == (640, 480, -2560, SurfaceFmt.FMT_32_XRGB)
    assert surface.mem == device.memory.bar("ram").base and len(surface.data) == 480 * 2560
    assert device.mode == Mode.COMPAT and L.U32.unpack_from(device.rom, L.ROM_MODE_OFF)[0] == 0
    # qxl-1 guests use plain physical addresses; commands come out flagged COMPAT
    phys = guest.drawable(d.Whiteness(), bbox=rect(0, 0, 4, 4), compat=True)
    assert phys >> 32 == device.memory.bar("ram").base >> 32
    guest.submit(phys, CmdType.DRAW)
    ext = device.get_command()
    assert ext is not None and ext.flags == CmdFlags.COMPAT
    assert device.parse_command(ext).body == d.Whiteness()  # type: ignore[union-attr]
    device.io_write(IOPort.SET_MODE, 999)
    assert device.guest_bug


def test_log(device: QXLDevice, guest: GuestDriver, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "spiceserver.qxl.guest"):
        guest.log("driver says hi\n")
    assert "driver says hi" in caplog.text


def test_memslot_add_and_del(device: QXLDevice, guest: GuestDriver, backend: RecordingBackend) -> None:
    ram = device.memory.bar("ram")
    guest.set_ram(L.RAM_MEM_SLOT_OFF, L.MEM_SLOT.pack(ram.base + 4096, ram.base + 8192))
    device.io_write(IOPort.MEMSLOT_ADD_ASYNC, 5)
    assert backend.names() == ["memslots_changed"] and isinstance(backend.calls[0][1], int)
    assert pending(guest) & Interrupt.IO_CMD
    slot = device.memslots.slot(MEMSLOT_GROUP_GUEST, 5)
    assert slot is not None and (slot.start, slot.end, slot.generation) == (ram.base + 4096, ram.base + 8192, 0)
    assert device.memslots.read(5 << 56, 4, MEMSLOT_GROUP_GUEST) == bytes(ram.view[4096:4100])
    device.io_write(IOPort.MEMSLOT_DEL, 5)
    assert backend.calls[-1] == ("memslots_changed", None)
    assert device.memslots.slot(MEMSLOT_GROUP_GUEST, 5) is None


@pytest.mark.parametrize(
    ("slot", "start_off", "end_off", "why"),
    [
        (8, 0, 16, "out of range"),
        (1, 0, 16, "already active"),
        (5, 16, 0, "> end"),
        (5, 0, 1 << 40, "not inside"),
        (5, -(1 << 20), 16, "not inside"),
    ],
)
def test_memslot_add_rejections(
    device: QXLDevice, guest: GuestDriver, slot: int, start_off: int, end_off: int, why: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    base = device.memory.bar("ram").base
    guest.set_ram(L.RAM_MEM_SLOT_OFF, L.MEM_SLOT.pack(base + start_off, base + end_off))
    device.io_write(IOPort.MEMSLOT_ADD, slot)
    assert device.guest_bug and why in caplog.text and pending(guest) & Interrupt.ERROR


def test_memslot_del_out_of_range(device: QXLDevice) -> None:
    device.io_write(IOPort.MEMSLOT_DEL, 8)
    assert device.guest_bug


@pytest.mark.parametrize("async_io", [False, True])
def test_create_and_destroy_primary(
    device: QXLDevice, guest: GuestDriver, backend: RecordingBackend, async_io: bool
) -> None:
    mem = guest.create_primary(320, 200, stride=-1280, async_io=async_io)
    name, surface, cookie = backend.calls[-1]
    assert name == "create_primary" and (cookie is not None) == async_io
    assert surface == PrimarySurface(
        width=320, height=200, stride=-1280, format=SurfaceFmt.FMT_32_XRGB, position=0, mouse_mode=True, flags=0,
        type=0, mem=mem, group_id=MEMSLOT_GROUP_GUEST, data=memoryview(b""),
    )  # fmt: skip
    assert len(surface.data) == 256000 and device.mode == Mode.NATIVE
    assert bool(pending(guest) & Interrupt.IO_CMD) == async_io
    guest.ack_interrupts()
    guest.destroy_primary(async_io=async_io)
    assert backend.calls[-1][0] == "destroy_primary" and device.mode == Mode.UNDEFINED
    backend.calls.clear()
    guest.destroy_primary(async_io=async_io)  # nothing to destroy: ignored, async still completes
    assert backend.calls == [] and bool(pending(guest) & Interrupt.IO_CMD) == async_io and not device.guest_bug


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        (8, 7, "bad surface format"),
        (8 + 12, 0, ""),  # type: primary (not checked)
        (0, 100000, "too small|exceeds|larger"),
        (4, 1 << 20, "larger than"),
        (32, 0, "NULL|not active|outside"),
    ],
)
def test_create_primary_rejections(
    device: QXLDevice, guest: GuestDriver, backend: RecordingBackend, field: int, value: int, why: str
) -> None:
    assert guest.main is not None
    create = L.SURFACE_CREATE.pack(64, 64, 256, SurfaceFmt.FMT_32_XRGB, 0, 1, 0, 0, guest.main.phys(0))
    raw = bytearray(create)
    raw[field : field + (8 if field == 32 else 4)] = value.to_bytes(8 if field == 32 else 4, "little")
    guest.set_ram(L.RAM_CREATE_SURFACE_OFF, bytes(raw))
    device.io_write(IOPort.CREATE_PRIMARY, 0)
    if not why:
        assert backend.names() == ["create_primary"]
        return
    assert device.guest_bug and backend.names() == []


def test_create_primary_value_must_be_zero(device: QXLDevice, guest: GuestDriver) -> None:
    device.io_write(IOPort.CREATE_PRIMARY_ASYNC, 1)
    assert device.guest_bug and pending(guest) & Interrupt.IO_CMD


@pytest.mark.parametrize("async_io", [False, True])
def test_destroy_surfaces(device: QXLDevice, guest: GuestDriver, backend: RecordingBackend, async_io: bool) -> None:
    device.io_write(IOPort.DESTROY_SURFACE_ASYNC if async_io else IOPort.DESTROY_SURFACE_WAIT, 7)
    assert backend.calls[-1][:2] == ("destroy_surface", 7)
    device.io_write(IOPort.DESTROY_ALL_SURFACES_ASYNC if async_io else IOPort.DESTROY_ALL_SURFACES, 0)
    assert backend.calls[-1][0] == "destroy_all_surfaces"
    assert all((c[-1] is not None) == async_io for c in backend.calls)
    device.io_write(IOPort.DESTROY_SURFACE_WAIT, SMALL.n_surfaces)
    assert device.guest_bug


def test_flush_surfaces(device: QXLDevice, guest: GuestDriver, backend: RecordingBackend) -> None:
    device.io_write(IOPort.FLUSH_SURFACES_ASYNC, 0)
    assert backend.calls[0][0] == "flush_surfaces" and pending(guest) & Interrupt.IO_CMD


def test_monitors_config(device: QXLDevice, guest: GuestDriver, backend: RecordingBackend) -> None:
    heads = [d.Head(monitor_id=i, surface_id=0, width=640, height=480, x=640 * i, y=0, flags=0) for i in range(2)]
    guest.monitors_config(heads, 4)
    assert backend.calls[0][:2] == ("monitors_config", d.MonitorsConfig(max_allowed=4, heads=tuple(heads)))
    assert pending(guest) & Interrupt.IO_CMD
    guest.ack_interrupts()
    guest.monitors_config(heads, 1)  # count > max_allowed: rejected, the async I/O still completes
    assert len(backend.calls) == 1 and pending(guest) == Interrupt.IO_CMD | Interrupt.ERROR
    assert not device.guest_bug


def test_second_async_before_completion_is_a_guest_bug(
    device: QXLDevice, guest: GuestDriver, backend: RecordingBackend
) -> None:
    backend.auto_complete = False
    device.io_write(IOPort.FLUSH_SURFACES_ASYNC, 0)
    device.io_write(IOPort.FLUSH_SURFACES_ASYNC, 0)
    assert device.guest_bug and len(backend.calls) == 1


def test_guest_bug_latches_until_reset(device: QXLDevice, guest: GuestDriver, backend: RecordingBackend) -> None:
    device.io_write(IOPort.DETACH_PRIMARY, 0)  # gone since qxl-3: unexpected
    assert device.guest_bug
    device.io_write(IOPort.NOTIFY_CMD, 0)
    guest.submit(guest.message(b"x"), CmdType.MESSAGE)
    assert backend.calls == [] and device.get_command() is None
    device.io_write(IOPort.RESET, 0)
    assert not device.guest_bug
    device.io_write(IOPort.NOTIFY_CMD, 0)
    assert backend.names() == ["reset", "wakeup"]


@pytest.mark.parametrize("port", [IOPort.ATTACH_PRIMARY, 25, 200])
def test_unknown_ports(device: QXLDevice, port: int) -> None:
    device.io_write(port, 0)
    assert device.guest_bug


def test_revision_3_has_no_monitors_config() -> None:
    dev = QXLDevice(config=QXLDeviceConfig(ram_size=4 << 20, vram_size=1 << 20, vgamem_size=2 << 20, revision=3))
    dev.io_write(IOPort.MONITORS_CONFIG_ASYNC, 0)
    assert dev.guest_bug
    assert not dev.client_monitors_config(None)


def test_corrupt_command_ring_is_a_guest_bug(device: QXLDevice, guest: GuestDriver, irq: Irq) -> None:
    guest.set_int_mask(ALL)
    guest.set_ram(L.RAM_CMD_RING_OFF + L.RING_PROD_OFF, L.U32.pack(1000))
    assert device.get_command() is None
    assert device.guest_bug and pending(guest) & Interrupt.ERROR and irq.level


def test_command_rings_and_notifications(device: QXLDevice, guest: GuestDriver, backend: RecordingBackend) -> None:
    guest.set_int_mask(ALL)
    assert device.get_command() is None
    assert device.req_cmd_notification() is True  # empty: sleep until woken
    assert guest.submit(guest.message(b"a"), CmdType.MESSAGE)
    assert backend.names() == ["wakeup"]  # the guest notified because the worker asked
    assert device.req_cmd_notification() is False  # a command is waiting
    assert guest.submit(guest.message(b"b"), CmdType.MESSAGE)
    assert backend.names() == ["wakeup"]  # no notification asked for: none sent
    ext = device.get_command()
    assert ext is not None and ext.group_id == MEMSLOT_GROUP_GUEST and ext.flags == 0
    assert device.get_command() is not None and device.get_command() is None
    # cursor ring likewise
    assert device.req_cursor_notification() is True
    guest.submit(guest.cursor_hide(), CmdType.CURSOR)
    assert backend.names()[-1] == "wakeup"
    ext = device.get_cursor_command()
    assert ext is not None and ext.cmd.type == CmdType.CURSOR and device.get_cursor_command() is None


def test_full_ring_producer_gets_a_display_interrupt(device: QXLDevice, guest: GuestDriver, irq: Irq) -> None:
    guest.set_int_mask(Interrupt.DISPLAY)
    msg = guest.message(b"m")
    for _ in range(32):
        assert guest.submit(msg, CmdType.MESSAGE)
    assert not guest.submit(msg, CmdType.MESSAGE)  # full: notify_on_cons armed
    assert not irq.level
    device.get_command()
    assert irq.level and pending(guest) & Interrupt.DISPLAY


def test_releases_are_chained_and_bunched(device: QXLDevice, guest: GuestDriver, irq: Irq) -> None:
    guest.set_int_mask(ALL)
    ids = [guest.message(b"%d" % i) for i in range(40)]
    assert guest.release_ring.request_notification() is True  # the guest waits for releases
    for phys in ids[:31]:
        device.release_resource(ReleaseInfo(addr=phys, group_id=MEMSLOT_GROUP_GUEST))
    assert guest.collect_releases(flush=False) == [] and not irq.level
    device.release_resource(ReleaseInfo(addr=ids[31], group_id=MEMSLOT_GROUP_GUEST))  # the 32nd: pushed
    assert irq.level and pending(guest) & Interrupt.DISPLAY
    assert guest.collect_releases(flush=False) == ids[:32]
    for phys in ids[32:]:
        device.release_resource(ReleaseInfo(addr=phys, group_id=MEMSLOT_GROUP_GUEST))
    assert device.flush_resources() == 8
    assert device.flush_resources() == 0
    assert guest.collect_releases(flush=False) == ids[32:]


def test_flush_release_port_and_full_release_ring(device: QXLDevice, guest: GuestDriver) -> None:
    ids = [guest.message(b"x") for _ in range(10)]
    for phys in ids[:8]:  # 8 single-release batches: the ring holds 7 + the one being built
        device.release_resource(ReleaseInfo(addr=phys, group_id=MEMSLOT_GROUP_GUEST))
        device.io_write(IOPort.FLUSH_RELEASE, 0)
    assert guest.release_ring.header().outstanding == 7
    device.release_resource(ReleaseInfo(addr=ids[8], group_id=MEMSLOT_GROUP_GUEST))
    assert guest.collect_releases() == ids[:7]  # the flush found the ring full: the guest drains it...
    assert guest.collect_releases() == ids[7:9]  # ...and the next flush pushes the list being built


def test_release_of_unresolvable_address_is_skipped(device: QXLDevice, guest: GuestDriver) -> None:
    device.release_resource(ReleaseInfo(addr=(6 << 56), group_id=MEMSLOT_GROUP_GUEST))
    device.release_resource(ReleaseInfo(addr=0x10, group_id=0))  # host group: nothing to give back
    assert device.flush_resources() == 0


def test_client_capabilities(device: QXLDevice, guest: GuestDriver) -> None:
    device.set_client_capabilities(True, b"\x07\x01")
    assert device.rom[L.ROM_CLIENT_PRESENT_OFF] == 1
    o = L.ROM_CLIENT_CAPABILITIES_OFF
    assert bytes(device.rom[o : o + 3]) == b"\x07\x01\x00"
    assert pending(guest) & Interrupt.CLIENT


def test_client_monitors_config(device: QXLDevice, guest: GuestDriver) -> None:
    assert not device.client_monitors_config(None)  # the driver masks everything
    guest.set_int_mask(Interrupt.DISPLAY | Interrupt.CLIENT_MONITORS_CONFIG)
    assert device.client_monitors_config(None)
    assert device.client_monitors_config([(0, 0, 1024, 768), (1024, 0, 800, 600)])
    o = L.ROM_CLIENT_MONITORS_CONFIG_OFF
    blob = bytes(device.rom[o : o + L.ROM_CLIENT_MONITORS_CONFIG_SIZE])
    assert struct.unpack_from("<H", blob)[0] == 2
    assert L.URECT.unpack_from(blob, 4 + 16) == (0, 1024, 600, 1824)  # top, left, bottom, right
    crc = L.U32.unpack_from(device.rom, L.ROM_CLIENT_MONITORS_CONFIG_CRC_OFF)[0]
    assert crc == zlib.crc32(blob, 0xFFFFFFFF) ^ 0xFFFFFFFF
    assert pending(guest) & Interrupt.CLIENT_MONITORS_CONFIG



def linux_crc32_le(data: bytes) -> int:
    """The guest driver's check (Linux ``crc32_le(0, ...)``: reflected, seed 0, no final xor), bit by bit."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (L.CLIENT_MONITORS_CONFIG_CRC32_POLY if crc & 1 else 0)
    return crc


def rom_monitors(device: QXLDevice) -> tuple[int, list[tuple[int, ...]], bytes]:
    o = L.ROM_CLIENT_MONITORS_CONFIG_OFF
    blob = bytes(device.rom[o : o + L.ROM_CLIENT_MONITORS_CONFIG_SIZE])
    count = struct.unpack_from("<H", blob)[0]
    return count, [L.URECT.unpack_from(blob, 4 + 16 * i) for i in range(count)], blob


def test_client_monitors_config_crc_is_what_the_linux_driver_checks(device: QXLDevice, guest: GuestDriver) -> None:
    guest.set_int_mask(Interrupt.CLIENT_MONITORS_CONFIG)
    assert device.client_monitors_config([(10, 20, 300, 400)])
    count, heads, blob = rom_monitors(device)
    assert (count, heads) == (1, [(20, 10, 420, 310)])
    assert L.U32.unpack_from(device.rom, L.ROM_CLIENT_MONITORS_CONFIG_CRC_OFF)[0] == linux_crc32_le(blob)


def test_client_monitors_config_caps_heads_and_clears_old_ones(device: QXLDevice, guest: GuestDriver) -> None:
    guest.set_int_mask(Interrupt.CLIENT_MONITORS_CONFIG)
    assert device.client_monitors_config([(i, 0, 8, 8) for i in range(100)])
    count, heads, _ = rom_monitors(device)
    assert count == L.MAX_CLIENT_MONITORS and heads[-1] == (0, 63, 8, 71)
    guest.set_ram(L.RAM_INT_PENDING_OFF, L.U32.pack(0))  # the driver acknowledged it
    assert device.client_monitors_config([(-1, 0, 1, 1)])  # x = -1 wraps as QEMU's u32 does
    count, heads, blob = rom_monitors(device)
    assert (count, heads) == (1, [(0, 0xFFFFFFFF, 1, 0)]) and blob[20:] == bytes(len(blob) - 20)
    assert pending(guest) & Interrupt.CLIENT_MONITORS_CONFIG


@pytest.mark.parametrize("mask", [0, 0xFFFFFFFF, Interrupt.DISPLAY | Interrupt.CLIENT])
def test_client_monitors_config_declined_by_the_driver(device: QXLDevice, guest: GuestDriver, mask: int) -> None:
    # QEMU: int_mask 0 or ~0 is an old Windows driver; without the bit the driver does not want it
    guest.set_int_mask(mask)
    before = bytes(device.rom)
    assert not device.client_monitors_config(None)
    assert not device.client_monitors_config([(0, 0, 640, 480)])
    assert bytes(device.rom) == before and not pending(guest) & Interrupt.CLIENT_MONITORS_CONFIG


def test_client_monitors_config_declined_before_revision_4() -> None:
    cfg = QXLDeviceConfig(ram_size=4 << 20, vram_size=1 << 20, vgamem_size=2 << 20, revision=L.REVISION_V10)
    dev = QXLDevice(config=cfg)
    GuestDriver(dev, setup=False).set_int_mask(Interrupt.CLIENT_MONITORS_CONFIG)
    assert not dev.client_monitors_config([(0, 0, 640, 480)])


def test_mm_time_and_init_info(device: QXLDevice) -> None:
    device.set_mm_time(12345)
    assert L.U32.unpack_from(device.rom, L.ROM_MM_CLOCK_OFF)[0] == 12345
    info = device.init_info()
    assert (info.num_memslots_groups, info.num_memslots, info.memslot_gen_bits, info.memslot_id_bits) == (2, 8, 8, 8)
    assert info.n_surfaces == SMALL.n_surfaces and info.qxl_ram_size == device.num_pages * 4096


def test_null_backend_completes_async_io() -> None:
    dev = QXLDevice(config=SMALL)
    assert isinstance(dev.backend, NullBackend)
    guest = GuestDriver(dev)
    guest.create_primary(64, 64, async_io=True)
    assert guest.interrupts() & Interrupt.IO_CMD and dev.current_async is None


def test_worker_and_vcpu_threads(device: QXLDevice, guest: GuestDriver, backend: RecordingBackend) -> None:
    """A worker thread pops, parses and releases while the guest thread keeps the ring full."""
    n = 300
    msgs = [guest.message(b"msg %d" % i) for i in range(n)]
    done = threading.Event()
    texts: list[bytes] = []

    def worker() -> None:
        while len(texts) < n:
            ext = device.get_command()
            if ext is None:
                continue
            cmd = device.parse_command(ext)
            texts.append(cmd.text)  # type: ignore[union-attr]
            device.release_resource(cmd.release_info)
        device.flush_resources()
        done.set()

    t = threading.Thread(target=worker)
    t.start()
    released: list[int] = []
    for phys in msgs:
        while not guest.submit(phys, CmdType.MESSAGE):
            released += guest.collect_releases(flush=False)
    assert done.wait(20)
    t.join()
    released += guest.collect_releases(flush=False)
    assert texts == [b"msg %d" % i for i in range(n)]
    assert sorted(released) == sorted(msgs)


def test_hostile_io_values_and_reads(device: QXLDevice, guest: GuestDriver) -> None:
    assert device.io_read(IOPort.NOTIFY_CMD) == 0xFF
    device.io_write(IOPort.MEMSLOT_ADD, -1)  # the host passes whatever the guest wrote
    assert device.guest_bug


def test_release_info_of_a_rejected_command(device: QXLDevice, guest: GuestDriver) -> None:
    guest.submit(guest.message(b"x"), CmdType.MESSAGE)
    ext = device.get_command()
    assert ext is not None
    device.release_resource(ReleaseInfo.of(ext))
    assert guest.collect_releases() == [ext.cmd.data]
