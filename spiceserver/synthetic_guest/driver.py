"""SyntheticDriver: a GuestDriver that reuses guest memory once the device releases it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..proto.messages import display as d
from ..qxl import layout as L
from ..qxl.commands import QXLCommand
from ..qxl.device import QXLDevice
from ..qxl.guest import GuestDriver
from ..qxl.layout import CmdType, Interrupt, IOPort
from .helpers import _payload_size

# --- the driver: memory management over GuestDriver -------------------------------------------------


class _Arena:
    """A bump-allocated slice of the guest's RAM pages, reusable once its commands came back."""

    __slots__ = ("end", "next", "outstanding", "start")

    def __init__(self, start: int, end: int) -> None:
        self.start = self.next = start
        self.end = end
        self.outstanding = 0  # commands allocated here and not yet released

    @property
    def free(self) -> int:
        return self.end - self.next

    @property
    def capacity(self) -> int:
        return self.end - self.start

    def alloc(self, size: int, align: int) -> int | None:
        pos = (self.next + align - 1) & ~(align - 1)
        if pos + size > self.end:
            return None
        self.next = pos + size
        return pos

    def rewind(self) -> None:
        self.next = self.start


class SyntheticDriver(GuestDriver):
    """A :class:`~spiceserver.qxl.guest.GuestDriver` whose memory is recycled as commands are released.

    The RAM pages (memslot ``slots_start``) are split into a *resident* arena, for images drawn again
    and again (written once; drawables point at the same ``QXLImage``, as drivers with an image
    cache do), and :attr:`FRAME_ARENAS` arenas used in turn for commands. Everything one command
    needs is taken from one arena (:meth:`reserve` first), so an arena is free again when every
    command allocated in it has come back through the release ring. Off-screen surfaces take VRAM,
    rewound when no off-screen surface is left.

    Args:
        device: the QXL device.
        timeout: how long to wait for ring space or released memory before giving up.
        kick_after: while a ring stays full, notify the device again after this many seconds
            (None: rely on the consumer alone, as the kernel driver does).
    """

    FRAME_ARENAS = 6
    RESIDENT_SHARE = 0.4

    def __init__(self, device: QXLDevice, *, timeout: float = 10.0, kick_after: float | None = None) -> None:
        super().__init__(device, setup=False)
        self.timeout = timeout
        self.kick_after = kick_after
        self.arenas: list[_Arena] = []
        self.resident: _Arena | None = None
        self.current: _Arena | None = None
        self._use_resident = False
        self._resident_images: dict[int, tuple[d.Image, int]] = {}
        #: QXLPHYSICAL -> command type of every command pushed and not yet released
        self.outstanding: dict[int, int] = {}
        #: CREATE commands of live off-screen surfaces (the server keeps them until DESTROY)
        self.held: dict[int, int] = {}
        self.submitted = 0
        self.released = 0
        self.errors_seen = 0
        self._batching = 0
        self.arena_switches = 0

    # --- memory ----------------------------------------------------------------------------------

    def setup_memslots(self) -> None:
        """``MEMSLOT_ADD`` for RAM and VRAM, then carve the RAM pages into arenas."""
        super().setup_memslots()
        assert self.main is not None
        start, end = self.main.start, self.main.end
        split = start + int((end - start) * self.RESIDENT_SHARE) // 4096 * 4096
        self.resident = _Arena(start, split)
        size = (end - split) // self.FRAME_ARENAS // 4096 * 4096
        self.arenas = [_Arena(split + i * size, split + (i + 1) * size) for i in range(self.FRAME_ARENAS)]
        self.current = self.arenas[0]
        self._resident_images.clear()

    def alloc(self, size: int, *, vram: bool = False, align: int = 8) -> int:
        """Guest memory from the current arena (or VRAM); returns its QXLPHYSICAL."""
        if vram:
            return super().alloc(size, vram=True, align=align)
        arena = self.resident if self._use_resident else self.current
        if arena is None or self.main is None:
            raise RuntimeError("memslots are not set up")
        off = arena.alloc(max(size, 1), align)
        if off is None:
            raise MemoryError(f"guest arena exhausted ({size} bytes wanted, {arena.free} free): reserve() more first")
        return self.main.phys(off)

    def _arena_of(self, phys: int) -> _Arena | None:
        if self.main is None:
            return None
        off = phys - self.main.high_bits + self.main.slot_base
        for arena in self.arenas:
            if arena.start <= off < arena.end:
                return arena
        if self.resident is not None and self.resident.start <= off < self.resident.end:
            return self.resident
        return None

    def reserve(self, need: int) -> None:
        """Make sure the current arena has ``need`` bytes: switch to a free arena if not."""
        current = self.current
        if current is None:
            raise RuntimeError("memslots are not set up")
        if current.free >= need:
            return
        if need > current.capacity:
            raise MemoryError(f"a command needing {need} bytes does not fit a {current.capacity}-byte arena")
        deadline = time.monotonic() + self.timeout
        start = self.arenas.index(current)
        while True:
            self.collect()
            for i in range(1, len(self.arenas) + 1):
                arena = self.arenas[(start + i) % len(self.arenas)]
                if arena.outstanding == 0:
                    arena.rewind()
                    self.current = arena
                    self.arena_switches += 1
                    return
            if time.monotonic() > deadline:
                busy = [a.outstanding for a in self.arenas]
                raise MemoryError(f"no guest memory released within {self.timeout} s (commands out per arena: {busy})")
            self.device.io_write(IOPort.NOTIFY_OOM, 0)
            time.sleep(0.001)

    def make_resident(self, img: d.Image) -> bool:
        """Write ``img`` into the resident arena once; drawables using it then point at that copy.

        Returns False (and nothing changes) when it does not fit.
        """
        key = img.descriptor.id
        if key in self._resident_images:
            return self._resident_images[key][0] is img
        if self.resident is None or self.resident.free < _payload_size(img) + 4096:
            return False
        self._use_resident = True
        try:
            phys = super().image(img)
        finally:
            self._use_resident = False
        self._resident_images[key] = (img, phys)
        return True

    def rewind_resident(self) -> None:
        """Forget every resident image (only when no command pointing at one is outstanding)."""
        if self.resident is not None:
            self.resident.rewind()
        self._resident_images.clear()

    def rewind_vram(self) -> None:
        """Reuse VRAM from the start (only when no off-screen surface is alive)."""
        if self.surf is not None:
            self.surf.next = self.surf.start

    def image(self, img: d.Image | None, chunk_size: int | None = None, *, unstable: bool = False) -> int:
        """A resident image's address, or a new QXLImage in the current arena."""
        if img is not None:
            hit = self._resident_images.get(img.descriptor.id)
            if hit is not None and hit[0] is img:
                return hit[1]
        return super().image(img, chunk_size, unstable=unstable)

    # --- rings and releases ------------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Queue commands without notifying the device, then notify once at the end (a driver
        handing over a whole frame). A ring that fills up meanwhile is handed over at once."""
        self._batching += 1
        try:
            yield
        finally:
            self._batching -= 1
            if not self._batching:
                self.device.io_write(IOPort.NOTIFY_CMD, 0)
                self.device.io_write(IOPort.NOTIFY_CURSOR, 0)

    def submit(self, phys: int, type_: int) -> bool:
        """Push a command on its ring, notifying the device if the ring asks for it (not while
        batching); False if the ring is full."""
        if self._batching:
            ring = self.cursor_ring if type_ == CmdType.CURSOR else self.cmd_ring
            ok = ring.push(QXLCommand(data=phys, type=type_)) is not None
        else:
            ok = super().submit(phys, type_)
        if ok:
            arena = self._arena_of(phys)
            if arena is not None:
                arena.outstanding += 1
            self.outstanding[phys] = type_
            self.submitted += 1
        return ok

    def push(self, phys: int, type_: int) -> None:
        """Push a command, waiting while its ring is full.

        While waiting, the device is notified again every :attr:`kick_after` seconds (None: never):
        a notification is idempotent, and it keeps a consumer that went to sleep with the ring full
        from stalling the guest.
        """
        start = time.monotonic()
        kicked = start
        port = IOPort.NOTIFY_CURSOR if type_ == CmdType.CURSOR else IOPort.NOTIFY_CMD
        if self.submit(phys, type_):
            return
        if self._batching:
            self.device.io_write(port, 0)  # hand the full ring over
        while not self.submit(phys, type_):
            now = time.monotonic()
            if now - start > self.timeout:
                raise TimeoutError(f"the {'cursor' if type_ == CmdType.CURSOR else 'command'} ring stayed full")
            if self.kick_after is not None and now - kicked > self.kick_after:
                self.device.io_write(port, 0)
                kicked = now
            self.collect()
            time.sleep(0.0005)

    def collect(self) -> list[int]:
        """Take back released commands (``FLUSH_RELEASE`` first) and free their arenas' share."""
        ids = self.collect_releases(flush=True)
        for rid in ids:
            if self.outstanding.pop(rid, None) is None:
                continue
            self.released += 1
            arena = self._arena_of(rid)
            if arena is not None and arena.outstanding > 0:
                arena.outstanding -= 1
        self.poll_errors()
        return ids

    def unreleased(self) -> dict[int, int]:
        """Commands still out, except the CREATE commands of live off-screen surfaces."""
        held = set(self.held.values())
        return {p: t for p, t in self.outstanding.items() if p not in held}

    def wait_released(self, timeout: float | None = None) -> bool:
        """Collect releases until every command but the held surface CREATEs is back."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            self.collect()
            if not self.unreleased():
                return True
            if time.monotonic() > deadline:
                return False
            self.device.io_write(IOPort.NOTIFY_OOM, 0)
            time.sleep(0.001)

    # --- interrupts --------------------------------------------------------------------------------

    def poll_errors(self) -> bool:
        """Whether the device raised ``QXL_INTERRUPT_ERROR`` (counted in :attr:`errors_seen`)."""
        if self.interrupts() & Interrupt.ERROR:
            self.errors_seen += 1
            self._clear(Interrupt.ERROR)
            return True
        return False

    def _clear(self, bits: int) -> None:
        off = self.ram_header_offset + L.RAM_INT_PENDING_OFF
        (pending,) = L.U32.unpack_from(self.ram, off)
        L.U32.pack_into(self.ram, off, pending & ~bits)
        self.device.io_write(IOPort.UPDATE_IRQ, 0)

    def async_io(self, start: Callable[[], object]) -> None:
        """Run an ``*_ASYNC`` I/O and wait for its ``QXL_INTERRUPT_IO_CMD``."""
        self._clear(Interrupt.IO_CMD)
        start()
        deadline = time.monotonic() + self.timeout
        while not self.interrupts() & Interrupt.IO_CMD:
            if time.monotonic() > deadline:
                raise TimeoutError("async I/O did not complete")
            time.sleep(0.0005)
        self._clear(Interrupt.IO_CMD)
        self.poll_errors()
