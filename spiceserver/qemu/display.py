"""One QEMU console's picture and cursor -> a FramebufferDisplay (libspice counterpart: none; QEMU's
own SPICE glue is ui/spice-display.c).

QEMU drives a client-side ``org.qemu.Display1.Listener`` object per console (ui/dbus-display1.xml,
ui/dbus-listener.c in QEMU 7.2):

* ``Scanout(u width, u height, u stride, u pixman_format, ay data)``: a whole new surface;
* ``Update(i x, i y, i width, i height, u stride, u pixman_format, ay data)``: one dirty rectangle;
* ``ScanoutDMABUF(h, u, u, u, u, t, b)`` / ``UpdateDMABUF(i, i, i, i)``: GL only, refused here;
* ``Disable()``: the console has no surface;
* ``MouseSet(i x, i y, i on)`` and ``CursorDefine(i width, i height, i hot_x, i hot_y, ay data)``.

Pixels travel inline; QEMU converts to ``PIXMAN_x8r8g8b8`` (little-endian uint32 0x??RRGGBB), which
is the framebuffer's 0x00RRGGBB once the X byte is masked. Everything QEMU sends is checked like
any peer's input (sizes against the data and the surface); a bad message is logged and dropped.

:class:`ConsoleDisplay` keeps one frame per console, writes each Update into it and flushes the
coalesced dirty rectangles to ``fb.update`` at most every :data:`FLUSH_INTERVAL` seconds (QEMU
refreshes every 30 ms and sends about 33 small Updates/s for a blinking text cursor). An update
that comes after a quiet spell is flushed as soon as the loop has handled the Updates that arrived
with it (one refresh's burst), so a key's answer is not held for the interval.
"""

# No ``from __future__ import annotations`` here: dbus-fast reads the listener's annotations at
# class creation, and a deferred ``-> None`` would evaluate to None instead of "no return value".

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Annotated

import numpy as np
from dbus_fast.annotations import DBusBytes, DBusInt32, DBusSignature, DBusUInt32, DBusUInt64
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method

from ..framebuffer import FramebufferDisplay
from ..worker.cursor_client import CursorShape

__all__ = [
    "FLUSH_INTERVAL",
    "LISTENER_INTERFACE",
    "LISTENER_PATH",
    "MAX_CURSOR_SIDE",
    "MAX_PENDING_BYTES",
    "MAX_SIDE",
    "PIXMAN_A8R8G8B8",
    "PIXMAN_X8R8G8B8",
    "ConsoleDisplay",
    "DirtyRegion",
    "Listener",
    "check_pixels",
    "pixel_view",
]

log = logging.getLogger(__name__)

Rect4 = tuple[int, int, int, int]

PIXMAN_X8R8G8B8 = 0x20020888
"""pixman's x8r8g8b8 (PIXMAN_FORMAT(32, PIXMAN_TYPE_ARGB, 0, 8, 8, 8)): what QEMU 7.2 sends."""
PIXMAN_A8R8G8B8 = 0x20028888
"""a8r8g8b8: the same layout with alpha, accepted (the alpha byte is dropped)."""
FORMATS = frozenset({PIXMAN_X8R8G8B8, PIXMAN_A8R8G8B8})
MAX_SIDE = 16384
"""Largest surface side accepted (QEMU's own limit for a display surface is below this)."""
MAX_CURSOR_SIDE = 512
"""Largest cursor side accepted (QEMU's cursors are at most 64x64 or 256x256)."""
FLUSH_INTERVAL = 0.02
"""Seconds between two ``fb.update`` calls at most (dirty rectangles are coalesced in between)."""
MAX_PENDING_BYTES = 64 << 20
"""Bytes of updates kept while the surface size is being asked for (see :meth:`ConsoleDisplay.update`)."""
MAX_RECTS = 16
"""More dirty rectangles than this between two flushes become their bounding box."""

LISTENER_PATH = "/org/qemu/Display1/Listener"
LISTENER_INTERFACE = "org.qemu.Display1.Listener"


def check_pixels(width: int, height: int, stride: int, fmt: int, size: int) -> str | None:
    """Why a pixel block from QEMU is unusable, or None when it is fine.

    Args:
        width: pixels per row.
        height: rows.
        stride: bytes from one row to the next.
        fmt: the pixman format code.
        size: the length of the data.
    """
    if fmt not in FORMATS:
        return f"pixman format {fmt:#x} is not x8r8g8b8 (0x20020888)"
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        return f"size {width}x{height} out of range"
    if stride < width * 4 or stride % 4:
        return f"stride {stride} does not fit {width} pixels of 4 bytes"
    if size < stride * (height - 1) + width * 4:
        return f"{size} bytes for {width}x{height} with stride {stride}"
    return None


def pixel_view(data: bytes, width: int, height: int, stride: int) -> np.ndarray:
    """A (height, width) little-endian uint32 view of checked pixel data (no copy)."""
    return np.ndarray((height, width), dtype="<u4", buffer=data, strides=(stride, 4))


def _touch(a: Rect4, b: Rect4) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


class DirtyRegion:
    """Dirty rectangles (left, top, right, bottom) between two flushes, coalesced.

    Rectangles that overlap or touch are merged into their bounding box; past :data:`MAX_RECTS`
    everything becomes one bounding box (QEMU's Updates are few and mostly disjoint).
    """

    def __init__(self) -> None:
        self.rects: list[Rect4] = []

    def __bool__(self) -> bool:
        return bool(self.rects)

    def add(self, rect: Rect4) -> None:
        """Add a rectangle (an empty one is ignored)."""
        if rect[2] <= rect[0] or rect[3] <= rect[1]:
            return
        merged = True
        while merged:
            merged = False
            for i, r in enumerate(self.rects):
                if _touch(r, rect):
                    rect = (min(r[0], rect[0]), min(r[1], rect[1]), max(r[2], rect[2]), max(r[3], rect[3]))
                    del self.rects[i]
                    merged = True
                    break
        self.rects.append(rect)
        if len(self.rects) > MAX_RECTS:
            rs = self.rects
            self.rects = [(min(r[0] for r in rs), min(r[1] for r in rs), max(r[2] for r in rs), max(r[3] for r in rs))]

    def take(self) -> list[Rect4]:
        """The rectangles so far; the region is empty afterwards."""
        rects, self.rects = self.rects, []
        return rects


class ConsoleDisplay:
    """The picture and cursor of one console, kept in one frame and flushed to ``fb``.

    Call the methods from the event loop (the listener does); flushing is scheduled on it.

    Args:
        fb: the framebuffer display this console feeds.
        console_id: for log messages.
        flush_interval: see :data:`FLUSH_INTERVAL`.
    """

    _uniques = itertools.count(0x5E000000)

    def __init__(self, fb: FramebufferDisplay, console_id: int = 0, flush_interval: float = FLUSH_INTERVAL) -> None:
        self.fb = fb
        self.console_id = console_id
        self.flush_interval = flush_interval
        self.frame = np.zeros((fb.height, fb.width), np.uint32)
        self.dirty = DirtyRegion()
        self.scanouts = 0
        """Scanouts taken so far."""
        self.updates = 0
        """Updates taken so far."""
        self.dropped = 0
        """Messages dropped as invalid."""
        self._timer: asyncio.Handle | None = None
        self._last_flush = -FLUSH_INTERVAL
        self._cursor: CursorShape | None = None
        self._cursor_pos = (0, 0)
        self._cursor_visible = False
        self._first_picture = asyncio.get_running_loop().create_future()
        self._pending: list[tuple[int, int, int, int, int, bytes]] = []
        self._pending_bytes = 0
        self.size_probe: Callable[[], None] | None = None
        """Called when an update does not fit the surface: the owner should call :meth:`resize`."""

    def _drop(self, what: str, reason: str) -> None:
        self.dropped += 1
        if self.dropped <= 10 or self.dropped % 1000 == 0:
            log.warning("console %d: %s dropped: %s (%d dropped so far)", self.console_id, what, reason, self.dropped)

    @property
    def has_pending(self) -> bool:
        """Updates are waiting for the surface size (see :meth:`update`)."""
        return bool(self._pending)

    async def first_picture(self) -> None:
        """Wait until the first Scanout has been flushed to the framebuffer."""
        await asyncio.shield(self._first_picture)

    # --- pixels -----------------------------------------------------------------------------------

    def scanout(self, width: int, height: int, stride: int, fmt: int, data: bytes) -> bool:
        """A new surface; returns whether it was taken."""
        reason = check_pixels(width, height, stride, fmt, len(data))
        if reason:
            self._drop("Scanout", reason)
            return False
        self._pending.clear()
        self._pending_bytes = 0
        if (height, width) != self.frame.shape:
            self.dirty.take()
            self.fb.resize(width, height)
            self.frame = np.empty((height, width), np.uint32)
        np.bitwise_and(pixel_view(data, width, height, stride), 0xFFFFFF, out=self.frame)
        self.scanouts += 1
        self.dirty.take()
        self.dirty.add((0, 0, width, height))
        self.flush()  # a new surface shows at once
        if not self._first_picture.done():
            self._first_picture.set_result(None)
        return True

    def update(self, x: int, y: int, width: int, height: int, stride: int, fmt: int, data: bytes) -> bool:
        """One dirty rectangle; returns whether it was applied now.

        QEMU switches surfaces without a Scanout unless the first update covers the whole new
        surface (ui/dbus-listener.c: ``dbus_gfx_switch`` only records it, ``dbus_gfx_update``
        sends Scanout for a full-surface update), e.g. VGA text mode's 720x16 rows. An update
        outside the current surface is therefore kept (up to :data:`MAX_PENDING_BYTES`), with
        every update after it so that they apply in order, and :attr:`size_probe` is called;
        :meth:`resize` with the console's new size applies or drops what was kept.
        """
        reason = check_pixels(width, height, stride, fmt, len(data))
        if reason is None and (x < 0 or y < 0 or x + width > MAX_SIDE or y + height > MAX_SIDE):
            reason = f"rectangle {width}x{height}+{x}+{y} out of range"
        if reason:
            self._drop("Update", reason)
            return False
        fh, fw = self.frame.shape
        if self._pending or x + width > fw or y + height > fh:  # (once some wait, all wait: order matters)
            if self._pending_bytes + len(data) > MAX_PENDING_BYTES:
                self._drop("Update", f"rectangle {width}x{height}+{x}+{y} outside the {fw}x{fh} surface")
                return False
            self._pending.append((x, y, width, height, stride, data))
            self._pending_bytes += len(data)
            if self.size_probe is not None and len(self._pending) == 1:
                self.size_probe()
            return False
        self._apply(x, y, width, height, stride, data)
        return True

    def _apply(self, x: int, y: int, width: int, height: int, stride: int, data: bytes) -> None:
        np.bitwise_and(pixel_view(data, width, height, stride), 0xFFFFFF, out=self.frame[y : y + height, x : x + width])
        self.updates += 1
        self.dirty.add((x, y, x + width, y + height))
        self._schedule()

    def resize(self, width: int, height: int) -> None:
        """The console's surface is ``width`` x ``height`` (its Width/Height properties).

        What overlaps the old surface is kept (its updates may have come first); updates kept
        by :meth:`update` are applied when they fit now, dropped otherwise.
        """
        if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
            self._drop("resize", f"size {width}x{height} out of range")
            return
        if (height, width) != self.frame.shape:
            old = self.frame
            self.frame = np.zeros((height, width), np.uint32)
            h, w = min(height, old.shape[0]), min(width, old.shape[1])
            self.frame[:h, :w] = old[:h, :w]
            self.dirty.take()
            self.fb.resize(width, height)
            self.dirty.add((0, 0, width, height))
            self._schedule()
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        for x, y, w, h, stride, data in pending:
            if x + w <= width and y + h <= height:
                self._apply(x, y, w, h, stride, data)
            else:
                self._drop("Update", f"rectangle {w}x{h}+{x}+{y} outside the {width}x{height} surface")

    def disable(self) -> None:
        """The console lost its surface: show black."""
        self.frame[:] = 0
        h, w = self.frame.shape
        self.dirty.add((0, 0, w, h))
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is None:
            loop = asyncio.get_running_loop()
            wait = self._last_flush + self.flush_interval - loop.time()
            # after a quiet spell: once the loop has taken this read's Updates; else at the interval
            self._timer = loop.call_later(wait, self.flush) if wait > 0 else loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send the dirty rectangles to the framebuffer now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        rects = self.dirty.take()
        if rects:
            self._last_flush = asyncio.get_running_loop().time()
            self.fb.update(self.frame, rects)

    def close(self) -> None:
        """Stop the flush timer (pending changes are flushed)."""
        self.flush()

    # --- cursor -----------------------------------------------------------------------------------

    def cursor_define(self, width: int, height: int, hot_x: int, hot_y: int, data: bytes) -> bool:
        """A new cursor image (ARGB, 4 bytes a pixel, premultiplied as QEMU keeps it)."""
        if not (0 < width <= MAX_CURSOR_SIDE and 0 < height <= MAX_CURSOR_SIDE):
            self._drop("CursorDefine", f"size {width}x{height} out of range")
            return False
        if len(data) < width * height * 4:
            self._drop("CursorDefine", f"{len(data)} bytes for {width}x{height}")
            return False
        hot_x = min(max(hot_x, 0), width - 1)
        hot_y = min(max(hot_y, 0), height - 1)
        self._cursor = CursorShape(
            unique=next(self._uniques),
            type=0,  # SPICE_CURSOR_TYPE_ALPHA
            width=width,
            height=height,
            hot_x=hot_x,
            hot_y=hot_y,
            data=bytes(data[: width * height * 4]),
        )
        x, y = self._cursor_pos
        self.fb.set_cursor(self._cursor, x, y, self._cursor_visible)
        return True

    def mouse_set(self, x: int, y: int, on: int) -> None:
        """The guest moved (or showed/hid) its cursor."""
        self._cursor_pos = (x, y)
        visible = bool(on)
        if not visible:
            if self._cursor_visible:
                self.fb.hide_cursor()
        elif not self._cursor_visible and self._cursor is not None:
            self.fb.set_cursor(self._cursor, x, y, True)
        else:
            self.fb.move_cursor(x, y)
        self._cursor_visible = visible


class Listener(ServiceInterface):
    """``org.qemu.Display1.Listener`` (QEMU 7.2) served to QEMU on a p2p connection, feeding ``display``."""

    def __init__(self, display: ConsoleDisplay) -> None:
        super().__init__(LISTENER_INTERFACE)
        self.display = display
        self._dmabuf_refused = False

    @dbus_method()
    def Scanout(self, width: DBusUInt32, height: DBusUInt32, stride: DBusUInt32, pixman_format: DBusUInt32, data: DBusBytes) -> None:
        """A new surface (ui/dbus-listener.c ``dbus_gfx_switch``)."""
        self._guard("Scanout", self.display.scanout, width, height, stride, pixman_format, data)

    @dbus_method()
    def Update(
        self,
        x: DBusInt32,
        y: DBusInt32,
        width: DBusInt32,
        height: DBusInt32,
        stride: DBusUInt32,
        pixman_format: DBusUInt32,
        data: DBusBytes,
    ) -> None:
        """A dirty rectangle (ui/dbus-listener.c ``dbus_gfx_update``)."""
        self._guard("Update", self.display.update, x, y, width, height, stride, pixman_format, data)

    @dbus_method()
    def ScanoutDMABUF(
        self,
        dmabuf: Annotated[int, DBusSignature("h")],
        width: DBusUInt32,
        height: DBusUInt32,
        stride: DBusUInt32,
        fourcc: DBusUInt32,
        modifier: DBusUInt64,
        y0_top: Annotated[bool, DBusSignature("b")],
    ) -> None:
        """GL scanouts are not supported: run QEMU with ``-display dbus,gl=off`` (the default)."""
        self._refuse_dmabuf()

    @dbus_method()
    def UpdateDMABUF(self, x: DBusInt32, y: DBusInt32, width: DBusInt32, height: DBusInt32) -> None:
        """Refused like :meth:`ScanoutDMABUF`."""
        self._refuse_dmabuf()

    @dbus_method()
    def Disable(self) -> None:
        """The console has no surface (ui/dbus-listener.c ``dbus_gfx_switch`` with none)."""
        self._guard("Disable", self.display.disable)

    @dbus_method()
    def MouseSet(self, x: DBusInt32, y: DBusInt32, on: DBusInt32) -> None:
        """The guest cursor's position and visibility (ui/dbus-listener.c ``dbus_mouse_set``)."""
        self._guard("MouseSet", self.display.mouse_set, x, y, on)

    @dbus_method()
    def CursorDefine(self, width: DBusInt32, height: DBusInt32, hot_x: DBusInt32, hot_y: DBusInt32, data: DBusBytes) -> None:
        """A new cursor image (ui/dbus-listener.c ``dbus_cursor_define``)."""
        self._guard("CursorDefine", self.display.cursor_define, width, height, hot_x, hot_y, data)

    def _refuse_dmabuf(self) -> None:
        if not self._dmabuf_refused:
            self._dmabuf_refused = True
            log.error("console %d: QEMU sends DMABUF scanouts (gl=on); only -display dbus,gl=off is supported", self.display.console_id)
        raise DBusError("org.qemu.Display1.Error.Unsupported", "DMABUF scanouts are not supported; use -display dbus,gl=off")

    def _guard(self, what: str, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except Exception as exc:  # a bad message must not take the bridge down
            self.display._drop(what, repr(exc))
