"""The emulated QXL PCI device: BARs, ROM, RAM header, I/O ports, interrupts, rings.

Counterpart of QEMU ``hw/display/qxl.c`` (``init_qxl_rom``, ``init_qxl_ram``, ``ioport_write``,
``interface_get_command``, ``interface_release_resource``, ``qxl_push_free_res``,
``qxl_send_events``) and of the ``QXLInterface`` callbacks of spice-server ``server/spice-qxl.h``,
which here are plain methods the display worker calls.

Memory layout (as QEMU): BAR 0 "ram" = ``[surface0 area | pages | QXLRam header]`` with the
header in the last ``ALIGN(sizeof(QXLRam), 4096)`` bytes (``rom.ram_header_offset``); BAR 1 "vram"
holds off-screen surfaces; BAR 2 "rom" = ``QXLRom`` followed by ``QXLModes``. The device never
trusts what the guest may write: ROM values are restored from a shadow copy on reset, and ring
indexes, ``int_pending`` and every RAM-header field are read once and validated.

Threading contract:

* :meth:`QXLDevice.io_write` runs on the guest's vCPU thread (one at a time per device). Backend
  calls with ``cookie=None`` block it until the worker is done.
* ``get_command``, ``req_cmd_notification``, ``get_cursor_command``, ``req_cursor_notification``,
  ``release_resource``, ``flush_resources``, ``async_complete``, ``update_area_complete`` and
  ``guest_error`` run on the worker thread.
* ``set_client_capabilities``, ``client_monitors_config``, ``set_mm_time`` and
  ``set_compression_level`` may run on any thread.
* One lock guards ``int_pending``, the release-ring state, the async-I/O state and the mode. The
  backend is never called with it held; the host's ``irq`` callback is (so interrupt levels are
  delivered in order) and must therefore not call back into the device.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import struct
import threading
import zlib
from collections.abc import Callable, Sequence

from ..errors import GuestError
from ..proto.enums import SurfaceFmt
from ..proto.messages.base import Rect
from . import layout as L
from .backend import DevInitInfo, NullBackend, PrimarySurface, QXLBackend
from .commands import QXLCommandExt, RedCommand, ReleaseInfo
from .errlog import RateLimitedLog
from .layout import ASYNC_PORTS, CmdFlags, Interrupt, IOPort
from .memory import Bar, Buffer, MemSlots, PhysicalMemory
from .parse import parse_command, parse_monitors_config, validate_surface
from .ring import CommandRing, ReleaseRing
from .rom import (
    DEFAULT_MODES,
    MEMSLOT_GENERATION_BITS,
    MEMSLOT_GROUP_GUEST,
    MEMSLOT_GROUP_HOST,
    MEMSLOT_SLOT_BITS,
    NUM_MEMSLOTS,
    NUM_MEMSLOTS_GROUPS,
    QXLDeviceConfig,
    RomLayout,
    build_rom,
)

__all__ = ["QXLDevice", "QXLDeviceConfig", "Mode", "DEFAULT_MODES", "MEMSLOT_GROUP_HOST", "MEMSLOT_GROUP_GUEST"]

log = logging.getLogger("spiceserver.qxl")
guest_log = logging.getLogger("spiceserver.qxl.guest")

FREE_BUNCH_SIZE = 32  # releases collected before the release ring is pushed (QXL_FREE_BUNCH_SIZE)
_UPDATE_AREA = struct.Struct("<4iI")  # QXLRam.update_area + update_surface
_PENDING_AND_MASK = struct.Struct("<II")  # QXLRam.int_pending, int_mask
_U64 = L.U64


class Mode:
    """What drives the display (QEMU ``qxl_mode``); the device has no VGA mode of its own."""

    UNDEFINED = "undefined"
    COMPAT = "compat"  # qxl-1 driver after SET_MODE
    NATIVE = "native"  # after CREATE_PRIMARY


_Handler = Callable[["QXLDevice", int, "int | None"], bool]


class QXLDevice:
    """One QXL device.

    Args:
        backend: the display worker; None uses a :class:`NullBackend` that completes async I/O.
        config: sizes and placement.
        ram, vram, rom: host buffers for the BARs (allocated if None).
        irq: ``irq(level)`` sets the PCI interrupt line (level = pending & mask != 0).
        on_update_area: called with ``(surface_id, rects)`` when the worker reports rendered areas.
    """

    def __init__(
        self,
        backend: QXLBackend | None = None,
        config: QXLDeviceConfig | None = None,
        *,
        ram: Buffer | None = None,
        vram: Buffer | None = None,
        rom: Buffer | None = None,
        irq: Callable[[bool], None] | None = None,
        on_update_area: Callable[[int, Sequence[Rect]], None] | None = None,
    ) -> None:
        cfg = self.config = config or QXLDeviceConfig()
        self.backend: QXLBackend = backend if backend is not None else NullBackend(self)
        self.irq = irq
        self.on_update_area = on_update_area
        self.memory = PhysicalMemory(
            [
                Bar("ram", cfg.ram_base, ram if ram is not None else bytearray(cfg.ram_size)),
                Bar("vram", cfg.vram_base, vram if vram is not None else bytearray(cfg.vram_size)),
                Bar("rom", cfg.rom_base, rom if rom is not None else bytearray(cfg.rom_size)),
            ]
        )
        self.ram = self.memory.bar("ram").view
        self.vram = self.memory.bar("vram").view
        self.rom = self.memory.bar("rom").view
        self.memslots = MemSlots(
            self.memory, num_groups=NUM_MEMSLOTS_GROUPS, num_slots=NUM_MEMSLOTS,
            gen_bits=MEMSLOT_GENERATION_BITS, id_bits=MEMSLOT_SLOT_BITS,
        )  # fmt: skip
        self.n_surfaces = cfg.n_surfaces
        self.parse_limits = dataclasses.replace(cfg.limits, n_surfaces=cfg.n_surfaces)
        rom_layout = RomLayout.of(cfg, len(self.ram))
        self.surface0_area_size = rom_layout.surface0_area_size
        self.ram_header_offset = rom_layout.ram_header_offset
        self.num_pages = rom_layout.num_pages
        self.modes = rom_layout.modes
        self.cmd_ring = CommandRing(self.ram, self.ram_header_offset + L.RAM_CMD_RING_OFF, L.COMMAND_RING_SIZE, "cmd")
        self.cursor_ring = CommandRing(
            self.ram, self.ram_header_offset + L.RAM_CURSOR_RING_OFF, L.CURSOR_RING_SIZE, "cursor"
        )
        self.release_ring = ReleaseRing(
            self.ram, self.ram_header_offset + L.RAM_RELEASE_RING_OFF, L.RELEASE_RING_SIZE, "release"
        )
        self._lock = threading.RLock()
        self._cookies = itertools.count(1)
        self._pending_async: dict[int, int] = {}  # cookie -> the async port that started it
        self.mode = Mode.UNDEFINED
        self.cmdflags = 0
        self.guest_bug = False
        self.current_async: int | None = None
        self._num_free_res = 0
        self._last_release: ReleaseInfo | None = None
        self._oom_running = False
        #: guest errors so far, and their log (a guest failing every command costs a few lines)
        self.errors = 0
        self._error_log = RateLimitedLog(log)
        self._shadow_rom = build_rom(cfg, rom_layout)
        if len(self._shadow_rom) > len(self.rom):
            raise ValueError("ROM BAR too small for the mode list")
        self._reset_state()

    # --- ROM and RAM ---------------------------------------------------------------------------

    def _init_ram(self) -> None:
        """``init_qxl_ram``: magic, no interrupts, empty rings, empty release list."""
        off = self.ram_header_offset
        self.ram[off : off + L.RAM_SIZE] = bytes(L.RAM_SIZE)
        L.U32.pack_into(self.ram, off + L.RAM_MAGIC_OFF, L.QXL_RAM_MAGIC)
        for ring in (self.cmd_ring, self.cursor_ring, self.release_ring):
            ring.init()
        self.release_ring.set_prod_item(0)

    def _ram_read(self, field_off: int, size: int) -> bytes:
        off = self.ram_header_offset + field_off
        return bytes(self.ram[off : off + size])

    def _reset_state(self) -> None:
        """``qxl_reset_state`` + ``qxl_soft_reset`` (called with no backend work pending)."""
        with self._lock:
            self.rom[: len(self._shadow_rom)] = self._shadow_rom
            self.rom[len(self._shadow_rom) :] = bytes(len(self.rom) - len(self._shadow_rom))
            self._init_ram()
            self._num_free_res = 0
            self._last_release = None
            self._pending_async.clear()
            self.current_async = None
            self.guest_bug = False
            self.mode = Mode.UNDEFINED
            self.cmdflags = 0
            self._update_irq()

    def set_bar_base(self, name: str, base: int) -> None:
        """The guest moved BAR ``name`` ("ram", "vram", "rom") to ``base``."""
        self.memory.set_base(name, base)

    def init_info(self) -> DevInitInfo:
        """``QXLInterface.get_init_info``."""
        return DevInitInfo(
            num_memslots_groups=NUM_MEMSLOTS_GROUPS, num_memslots=NUM_MEMSLOTS,
            memslot_gen_bits=MEMSLOT_GENERATION_BITS, memslot_id_bits=MEMSLOT_SLOT_BITS,
            qxl_ram_size=self.num_pages * L.QXL_PAGE_SIZE, internal_groupslot_id=0, n_surfaces=self.n_surfaces,
        )  # fmt: skip

    # --- interrupts ----------------------------------------------------------------------------

    def _update_irq(self) -> None:
        pending, mask = _PENDING_AND_MASK.unpack(self._ram_read(L.RAM_INT_PENDING_OFF, 8))
        if self.irq is not None:
            self.irq(bool(pending & mask))

    def send_events(self, events: int) -> None:
        """Set ``events`` in ``int_pending`` and raise the line if they are unmasked (``qxl_send_events``)."""
        with self._lock:
            off = self.ram_header_offset + L.RAM_INT_PENDING_OFF
            (old,) = L.U32.unpack_from(self.ram, off)
            if old & events == events:
                return
            L.U32.pack_into(self.ram, off, old | events)
            self._update_irq()

    def guest_error(self, reason: str) -> None:
        """The worker rejected a guest command: log why (rate-limited) and raise ``QXL_INTERRUPT_ERROR``."""
        self.errors += 1
        self._error_log.warning("qxl-%d: guest error: %s", self.config.device_id, reason)
        self.send_events(Interrupt.ERROR)

    def _bug(self, reason: str) -> None:
        """``qxl_set_guest_bug``: error interrupt; I/O is ignored until RESET."""
        with self._lock:
            self.guest_bug = True
        self.guest_error(reason)

    # --- I/O ports -----------------------------------------------------------------------------

    def io_write(self, port: int, value: int) -> None:
        """The guest wrote ``value`` to I/O port ``port`` (offset in the I/O BAR).

        Never raises: whatever goes wrong (a bad request, a backend call failing or timing out)
        completes the I/O as failed and raises ``QXL_INTERRUPT_ERROR``, as libspice does.
        """
        value &= 0xFFFF_FFFF_FFFF_FFFF
        with self._lock:
            if self.guest_bug and port != IOPort.RESET:
                return
        if self.config.revision <= L.REVISION_V10 and port > IOPort.FLUSH_RELEASE:
            self._bug(f"unsupported io {port} for revision {self.config.revision}")
            return
        cookie: int | None = None
        if port in ASYNC_PORTS:
            with self._lock:
                busy = self.current_async
                if busy is None:
                    self.current_async = port
                    cookie = next(self._cookies)
                    self._pending_async[cookie] = port
            if busy is not None:
                self._bug(f"async io {port} started before io {busy} completed")
                return
        handler = _HANDLERS.get(ASYNC_PORTS.get(port, port))
        if handler is None:
            self._bug(f"unexpected io port {port}")
            return
        try:
            done = handler(self, value, cookie)
        except Exception as exc:
            done = False
            self.guest_error(f"io {port} failed: {type(exc).__name__}: {exc}")
        if not done and cookie is not None:
            self._cancel_async(cookie)

    def io_read(self, port: int) -> int:
        """The guest read an I/O port: nothing is readable (QEMU answers 0xff)."""
        return 0xFF

    def _cancel_async(self, cookie: int) -> None:
        """An async I/O that did nothing completes at once (QEMU ``cancel_async``)."""
        with self._lock:
            self._pending_async.pop(cookie, None)
            self.current_async = None
        self.send_events(Interrupt.IO_CMD)

    def _io_notify(self, value: int, cookie: int | None) -> bool:
        self.backend.wakeup()
        return True

    def _io_update_area(self, value: int, cookie: int | None) -> bool:
        top, left, bottom, right, surface_id = _UPDATE_AREA.unpack(self._ram_read(L.RAM_UPDATE_AREA_OFF, 20))
        if surface_id >= self.n_surfaces:
            self._bug(f"UPDATE_AREA: invalid surface id {surface_id}")
            return False
        if left >= right or top >= bottom or left < 0 or top < 0:
            if left == right or top == bottom:  # old drivers send empty areas: ignore
                return False
            self._bug(f"UPDATE_AREA: invalid area ({left},{top})-({right},{bottom})")
            return False
        area = Rect(top=top, left=left, bottom=bottom, right=right)
        self.backend.update_area(surface_id, area, False, cookie)
        return True

    def _io_update_irq(self, value: int, cookie: int | None) -> bool:
        with self._lock:
            self._update_irq()
        return True

    def _io_oom(self, value: int, cookie: int | None) -> bool:
        if self.release_ring.header().outstanding != 0:
            return True
        with self._lock:
            self._oom_running = True
        try:
            self.backend.oom()
        finally:
            with self._lock:
                self._oom_running = False
        return True

    def _io_reset(self, value: int, cookie: int | None) -> bool:
        self.backend.reset()
        self.memslots.reset()
        self._reset_state()
        return True

    def _io_set_mode(self, value: int, cookie: int | None) -> bool:
        """qxl-1: reset, map all of RAM as slot 0 with guest-physical addresses, make a primary."""
        if value >= len(self.modes):
            self._bug(f"SET_MODE: mode {value} out of range (< {len(self.modes)})")
            return False
        _id, x, y, stride = self.modes[value]
        self._io_reset(0, None)
        ram = self.memory.bar("ram")
        self.memslots.add_slot(MEMSLOT_GROUP_GUEST, 0, ram.base, ram.end, 0, address_delta=0)
        self.backend.memslots_changed(None)
        surface = PrimarySurface(
            width=x, height=y, stride=-stride, format=SurfaceFmt.FMT_32_XRGB, position=0, mouse_mode=True,
            flags=0, type=L.SURF_TYPE_PRIMARY, mem=ram.base, group_id=MEMSLOT_GROUP_GUEST,
            data=self.memslots.view(ram.base, y * stride, MEMSLOT_GROUP_GUEST),
        )  # fmt: skip
        self.backend.create_primary(surface, None)
        with self._lock:
            self.mode = Mode.COMPAT
            self.cmdflags = CmdFlags.COMPAT  # every mode is 32 bpp: never COMPAT_16BPP
            L.U32.pack_into(self.rom, L.ROM_MODE_OFF, value)
        return True

    def _io_log(self, value: int, cookie: int | None) -> bool:
        text = self._ram_read(L.RAM_LOG_BUF_OFF, L.LOG_BUF_SIZE).split(b"\0", 1)[0]
        guest_log.info("qxl-%d: %s", self.config.device_id, text.decode("utf-8", "replace").rstrip())
        return True

    def _io_memslot_add(self, value: int, cookie: int | None) -> bool:
        if value >= NUM_MEMSLOTS:
            self._bug(f"MEMSLOT_ADD: slot {value} out of range (< {NUM_MEMSLOTS})")
            return False
        if self.memslots.slot(MEMSLOT_GROUP_GUEST, value) is not None:
            self._bug(f"MEMSLOT_ADD: slot {value} already active")
            return False
        start, end = L.MEM_SLOT.unpack(self._ram_read(L.RAM_MEM_SLOT_OFF, 16))
        if start > end:
            self._bug(f"MEMSLOT_ADD: start {start:#x} > end {end:#x}")
            return False
        for name in ("ram", "vram"):
            bar = self.memory.bar(name)
            if bar.base <= start <= bar.end and end <= bar.end:
                break
        else:
            self._bug(f"MEMSLOT_ADD: {start:#x}..{end:#x} is not inside the RAM or VRAM BAR")
            return False
        self.memslots.add_slot(MEMSLOT_GROUP_GUEST, value, start, end, 0)  # QEMU: generation always 0
        L.U8.pack_into(self.rom, L.ROM_SLOT_GENERATION_OFF, 0)
        self.backend.memslots_changed(cookie)
        return True

    def _io_memslot_del(self, value: int, cookie: int | None) -> bool:
        if value >= NUM_MEMSLOTS:
            self._bug(f"MEMSLOT_DEL: slot {value} out of range (< {NUM_MEMSLOTS})")
            return False
        self.memslots.del_slot(MEMSLOT_GROUP_GUEST, value)
        self.backend.memslots_changed(None)
        return True

    def _io_create_primary(self, value: int, cookie: int | None) -> bool:
        if value != 0:
            self._bug(f"CREATE_PRIMARY: value {value} != 0")
            return False
        w, h, stride, fmt, position, _mouse, flags, type_, mem = L.SURFACE_CREATE.unpack(
            self._ram_read(L.RAM_CREATE_SURFACE_OFF, L.SURFACE_CREATE.size)
        )
        if stride == -(1 << 31) or abs(stride) * h > self.surface0_area_size:
            self._bug(f"CREATE_PRIMARY: {abs(stride)} x {h} larger than the {self.surface0_area_size} B framebuffer")
            return False
        if self.mode == Mode.NATIVE:
            self._bug("CREATE_PRIMARY: a primary surface already exists")
        try:
            size = validate_surface(w, h, stride, fmt, self.parse_limits, "CREATE_PRIMARY")
            data = self.memslots.view(mem, size, MEMSLOT_GROUP_GUEST)
        except GuestError as exc:
            self._bug(str(exc))
            return False
        surface = PrimarySurface(
            width=w, height=h, stride=stride, format=fmt, position=position, mouse_mode=True, flags=flags,
            type=type_, mem=mem, group_id=MEMSLOT_GROUP_GUEST, data=data,
        )  # fmt: skip
        with self._lock:
            old_mode, self.mode = self.mode, Mode.NATIVE
            self.cmdflags = 0
        try:
            self.backend.create_primary(surface, cookie)
        except Exception:
            with self._lock:  # no primary was made: not left in native mode
                self.mode = old_mode if old_mode != Mode.NATIVE else Mode.UNDEFINED
            raise
        return True

    def _io_destroy_primary(self, value: int, cookie: int | None) -> bool:
        if value != 0:
            self._bug(f"DESTROY_PRIMARY: value {value} != 0")
            return False
        with self._lock:
            if self.mode == Mode.UNDEFINED:
                return False
            self.mode = Mode.UNDEFINED
        self.backend.destroy_primary(cookie)
        return True

    def _io_destroy_surface(self, value: int, cookie: int | None) -> bool:
        if value >= self.n_surfaces:
            self._bug(f"DESTROY_SURFACE: surface {value} out of range (< {self.n_surfaces})")
            return False
        self.backend.destroy_surface(value, cookie)
        return True

    def _io_destroy_all_surfaces(self, value: int, cookie: int | None) -> bool:
        with self._lock:
            self.mode = Mode.UNDEFINED
        self.backend.destroy_all_surfaces(cookie)
        return True

    def _io_flush_surfaces(self, value: int, cookie: int | None) -> bool:
        assert cookie is not None
        self.backend.flush_surfaces(cookie)
        return True

    def _io_flush_release(self, value: int, cookie: int | None) -> bool:
        with self._lock:
            self._push_free_res(flush=True)
        return True

    def _io_monitors_config(self, value: int, cookie: int | None) -> bool:
        assert cookie is not None
        (phys,) = L.U64.unpack(self._ram_read(L.RAM_MONITORS_CONFIG_OFF, 8))
        try:
            config = parse_monitors_config(
                self.memslots, phys, MEMSLOT_GROUP_GUEST, self.parse_limits, self.config.max_monitors
            )
        except GuestError as exc:
            self.guest_error(str(exc))
            return False
        self.backend.monitors_config(config, cookie)
        return True

    # --- what the worker calls (QXLInterface) ---------------------------------------------------

    def _pop(self, ring: CommandRing, event: int) -> QXLCommandExt | None:
        with self._lock:
            if self.guest_bug:
                return None
            try:
                got = ring.pop()
            except GuestError as exc:
                self._bug(str(exc))
                return None
            if got is None:
                return None
            cmd, notify = got
            if notify:
                self.send_events(event)
            return QXLCommandExt(cmd=cmd, group_id=MEMSLOT_GROUP_GUEST, flags=self.cmdflags)

    def _request(self, ring: CommandRing) -> bool:
        with self._lock:
            try:
                return ring.request_notification()
            except GuestError as exc:
                self._bug(str(exc))
                return True

    def get_command(self) -> QXLCommandExt | None:
        """The next display command, or None (``interface_get_command``)."""
        return self._pop(self.cmd_ring, Interrupt.DISPLAY)

    def req_cmd_notification(self) -> bool:
        """Arm a wakeup for the next command. True: the ring is empty, sleep until ``wakeup``;
        False: commands are waiting, keep calling :meth:`get_command`."""
        return self._request(self.cmd_ring)

    def get_cursor_command(self) -> QXLCommandExt | None:
        """The next cursor command from the cursor ring, or None (QXLInterface ``get_cursor_command``)."""
        return self._pop(self.cursor_ring, Interrupt.CURSOR)

    def req_cursor_notification(self) -> bool:
        """Ask for NOTIFY_CURSOR when the ring gets a command; True if it is empty now."""
        return self._request(self.cursor_ring)

    def parse_command(self, cmd: QXLCommandExt) -> RedCommand:
        """:func:`~spiceserver.qxl.parse.parse_command` with this device's memslots and limits."""
        return parse_command(self.memslots, cmd, self.parse_limits)

    def release_resource(self, info: ReleaseInfo) -> None:
        """The server is done with a command: chain it onto the release list (``interface_release_resource``).

        Release every command popped, parsed or rejected; an address that cannot be resolved any
        more (slot deleted) is logged and skipped.
        """
        if info.group_id != MEMSLOT_GROUP_GUEST:
            return
        with self._lock:
            try:
                # the command's QXLReleaseInfo: its id is read, then ``next`` cleared, at one
                # resolved place (as QEMU's host pointer); the previous one's ``next`` gets the id
                bar, off = self.memslots.resolve(info.addr, 8, info.group_id)
                (id_,) = _U64.unpack_from(bar.view, off)
                last = self._last_release
                if last is None:
                    self.release_ring.set_prod_item(id_)
                else:
                    lbar, loff = self.memslots.resolve(last.addr, 8, last.group_id)
                    _U64.pack_into(lbar.view, loff, id_)
                _U64.pack_into(bar.view, off, 0)  # release_info.next = 0
            except GuestError as exc:
                log.warning("qxl-%d: cannot release %#x: %s", self.config.device_id, info.addr, exc)
                return
            self._last_release = info
            self._num_free_res += 1
            if self._num_free_res >= FREE_BUNCH_SIZE and not self._oom_running:
                self._push_free_res(flush=False)

    def _push_free_res(self, flush: bool) -> None:
        """``qxl_push_free_res``: publish the release list being built, if it is time and there is room."""
        if self._num_free_res == 0 or (not flush and (self._oom_running or self._num_free_res < FREE_BUNCH_SIZE)):
            return
        h = self.release_ring.header()
        if h.num_items != self.release_ring.capacity or h.outstanding + 1 >= self.release_ring.capacity:
            return  # full (one element is always the list under construction)
        if self.release_ring.publish():
            self.send_events(Interrupt.DISPLAY)
        self.release_ring.set_prod_item(0)
        self._num_free_res = 0
        self._last_release = None

    def flush_resources(self) -> int:
        """Publish pending releases now; returns how many there were (``interface_flush_resources``)."""
        with self._lock:
            n = self._num_free_res
            if n:
                self._push_free_res(flush=True)
            return n

    def async_complete(self, cookie: int) -> None:
        """The worker finished the async I/O that got ``cookie``: ``QXL_INTERRUPT_IO_CMD``."""
        with self._lock:
            port = self._pending_async.pop(cookie, None)
            if port is None:
                log.warning("qxl-%d: async_complete for unknown cookie %d", self.config.device_id, cookie)
                return
            if self.current_async != port:
                log.warning(
                    "qxl-%d: async %s completed while %s current", self.config.device_id, port, self.current_async
                )
            self.current_async = None
        self.send_events(Interrupt.IO_CMD)

    def update_area_complete(self, surface_id: int, rects: Sequence[Rect]) -> None:
        """The worker rendered ``rects`` of ``surface_id`` into guest memory (for a host display)."""
        if self.on_update_area is not None:
            self.on_update_area(surface_id, rects)

    def notify_update(self, update_id: int) -> None:
        """A ``QXL_CMD_UPDATE`` was processed (deprecated upstream; nothing to do)."""

    # --- what the server (any thread) calls ------------------------------------------------------

    def set_client_capabilities(self, client_present: bool, caps: bytes) -> None:
        """A client (dis)connected: its display caps go to the ROM, ``QXL_INTERRUPT_CLIENT``."""
        if self.config.revision < L.REVISION_V12:
            return
        caps = bytes(caps[: L.CAPABILITIES_SIZE]).ljust(L.CAPABILITIES_SIZE, b"\0")
        with self._lock:
            self.rom[L.ROM_CLIENT_PRESENT_OFF] = int(client_present)
            o = L.ROM_CLIENT_CAPABILITIES_OFF
            self.rom[o : o + L.CAPABILITIES_SIZE] = caps
            self._shadow_rom = bytes(self.rom[: len(self._shadow_rom)])
        self.send_events(Interrupt.CLIENT)

    def client_monitors_config(self, monitors: Sequence[tuple[int, int, int, int]] | None) -> bool:
        """Offer the client's monitor layout ``(x, y, width, height)`` to the guest.

        Returns False if the device or driver cannot take it (revision < 4, or the driver does not
        unmask ``QXL_INTERRUPT_CLIENT_MONITORS_CONFIG``); with ``monitors`` None only asks.
        """
        if self.config.revision < L.REVISION_V12:
            return False
        (mask,) = L.U32.unpack(self._ram_read(L.RAM_INT_MASK_OFF, 4))
        if mask in (0, 0xFFFFFFFF) or not mask & Interrupt.CLIENT_MONITORS_CONFIG:
            return False
        if monitors is None:
            return True
        heads = list(monitors)[: L.MAX_CLIENT_MONITORS]
        blob = bytearray(L.ROM_CLIENT_MONITORS_CONFIG_SIZE)
        L.U16.pack_into(blob, 0, len(heads))
        for i, (x, y, w, h) in enumerate(heads):
            m = 0xFFFFFFFF
            L.URECT.pack_into(blob, 4 + 16 * i, y & m, x & m, (y + h) & m, (x + w) & m)
        crc = zlib.crc32(bytes(blob), 0xFFFFFFFF) ^ 0xFFFFFFFF  # Linux crc32 convention, as QEMU
        with self._lock:
            o = L.ROM_CLIENT_MONITORS_CONFIG_OFF
            self.rom[o : o + len(blob)] = blob
            L.U32.pack_into(self.rom, L.ROM_CLIENT_MONITORS_CONFIG_CRC_OFF, crc)
        self.send_events(Interrupt.CLIENT_MONITORS_CONFIG)
        return True

    def set_mm_time(self, mm_time: int) -> None:
        """The multimedia clock, as the device's ROM publishes it to the guest (ms)."""
        with self._lock:
            L.U32.pack_into(self.rom, L.ROM_MM_CLOCK_OFF, mm_time & 0xFFFFFFFF)

    def set_compression_level(self, level: int) -> None:
        """The compression level the device's ROM publishes to the guest."""
        with self._lock:
            L.U32.pack_into(self.rom, L.ROM_COMPRESSION_LEVEL_OFF, level & 0xFFFFFFFF)


_HANDLERS: dict[int, _Handler] = {
    IOPort.NOTIFY_CMD: QXLDevice._io_notify,
    IOPort.NOTIFY_CURSOR: QXLDevice._io_notify,
    IOPort.UPDATE_AREA: QXLDevice._io_update_area,
    IOPort.UPDATE_IRQ: QXLDevice._io_update_irq,
    IOPort.NOTIFY_OOM: QXLDevice._io_oom,
    IOPort.RESET: QXLDevice._io_reset,
    IOPort.SET_MODE: QXLDevice._io_set_mode,
    IOPort.LOG: QXLDevice._io_log,
    IOPort.MEMSLOT_ADD: QXLDevice._io_memslot_add,
    IOPort.MEMSLOT_DEL: QXLDevice._io_memslot_del,
    IOPort.CREATE_PRIMARY: QXLDevice._io_create_primary,
    IOPort.DESTROY_PRIMARY: QXLDevice._io_destroy_primary,
    IOPort.DESTROY_SURFACE_WAIT: QXLDevice._io_destroy_surface,
    IOPort.DESTROY_ALL_SURFACES: QXLDevice._io_destroy_all_surfaces,
    IOPort.FLUSH_SURFACES_ASYNC: QXLDevice._io_flush_surfaces,
    IOPort.FLUSH_RELEASE: QXLDevice._io_flush_release,
    IOPort.MONITORS_CONFIG_ASYNC: QXLDevice._io_monitors_config,
}
