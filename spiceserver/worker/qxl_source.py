"""The QXL device as seen from the display worker: its rings feed drawables, its I/O calls reach us.

Counterpart of spice ``server/red-worker.cpp`` (``red_process_display``, ``red_process_cursor``,
``handle_dev_*``), ``red-qxl.cpp`` (device calls forwarded to the worker, sync or async with a
cookie) and ``display-channel.cpp`` (``display_channel_process_draw``, ``validate_drawable_bbox``,
``handle_self_bitmap``, surface create/destroy and ``UPDATE_AREA``).

Commands are parsed (copied out of guest memory, then validated) by :mod:`spiceserver.qxl.parse`; a
rejected command is logged, the guest gets the ERROR interrupt, and the worker goes on. Every command
is released back to the guest as soon as it has been handled -- nothing keeps pointing into guest
memory -- except an offscreen surface's CREATE command, which is held until the surface is destroyed
because the guest driver reuses the surface memory once that command comes back (as libspice does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import GuestError, NotSupportedError, ProtocolError
from ..proto.enums import BitmapFlags, BitmapFmt, CursorFlags, ImageType, SurfaceFmt, surface_fmt_bits
from ..proto.messages import display as d
from ..proto.messages.base import Rect
from ..qxl import (
    CursorCmdType,
    PrimarySurface,
    QXLCommandExt,
    QXLDevice,
    RedCommand,
    RedCursorCmd,
    RedDrawable,
    RedMessage,
    RedSurfaceCmd,
    RedUpdate,
    ReleaseInfo,
    SurfaceCmdType,
)
from ..qxl.errlog import RateLimitedLog
from .cursor_client import CursorShape
from .drawable import make_drawable
from .messages import (
    QXLCreatePrimary,
    QXLDestroyAllSurfaces,
    QXLDestroyPrimary,
    QXLDestroySurface,
    QXLFlushSurfaces,
    QXLMemslotsChanged,
    QXLMonitorsConfig,
    QXLOom,
    QXLReset,
    QXLUpdateArea,
    QXLWakeup,
)
from .ops import (
    CreateSurface,
    DestroySurface,
    Draw,
    HideCursor,
    MoveCursor,
    ResetCursor,
    SetCursor,
    SetCursorTrail,
    SetMonitors,
)
from .surface import Surface
from .worker import CommandSource

if TYPE_CHECKING:
    from .dispatcher import Request
    from .worker import DisplayWorker

__all__ = ["QXLCommandSource", "QXLWorkerBackend", "SURFACE_MEMORY_FACTOR", "SYNC_IO_TIMEOUT"]

log = logging.getLogger("spiceserver.qxl")

#: seconds a synchronous QXL I/O (UPDATE_AREA, CREATE_PRIMARY, ...) waits for the worker; then the
#: I/O fails with the guest's error interrupt instead of blocking the vCPU longer
SYNC_IO_TIMEOUT = 30.0

#: the canvases of a device's offscreen surfaces may take this many times the guest memory the
#: host gave the device (a 16-bit surface takes twice its guest bytes as a 32-bit canvas)
SURFACE_MEMORY_FACTOR = 2



def write_back(surface: Surface, area: Rect | None = None) -> None:
    """Copy the canvas (or ``area`` of it) into the guest memory backing the surface."""
    view = surface.guest_view
    if view is None:
        return
    bpp = surface_fmt_bits(surface.format) // 8
    if not bpp:  # A1: no byte-aligned write-back
        return
    top, left = (0, 0) if area is None else (max(0, area.top), max(0, area.left))
    bottom = surface.height if area is None else min(surface.height, area.bottom)
    right = surface.width if area is None else min(surface.width, area.right)
    if right <= left or bottom <= top:
        return
    stride = surface.guest_stride
    pixels = surface.canvas.pixels
    for y in range(top, bottom):
        row = y if stride > 0 else surface.height - 1 - y
        off = row * abs(stride) + left * bpp
        view[off : off + (right - left) * bpp] = pixels[y, left:right].tobytes()


def guest_pixels(view: memoryview | None, stride: int, width: int, height: int, fmt: int) -> np.ndarray | None:
    """The guest's current pixels of a new 32-bit surface (libspice shows guest memory at once)."""
    if view is None or fmt not in (SurfaceFmt.FMT_32_XRGB, SurfaceFmt.FMT_32_ARGB):
        return None
    step = abs(stride)
    if step < width * 4 or len(view) < step * height:
        return None
    rows = np.frombuffer(view, dtype=np.uint8, count=step * height).reshape(height, step)
    px: np.ndarray = rows[:, : width * 4].copy().view("<u4")
    return px[::-1] if stride < 0 else px


class QXLCommandSource(CommandSource):
    """Pulls the device's command and cursor rings for the worker loop, and handles the device's
    I/O calls (the QXL* messages) on the worker thread."""

    def __init__(self, device: QXLDevice, worker: DisplayWorker) -> None:
        self.device = device
        self.worker = worker
        self.guest_errors = 0
        self.commands = 0
        self._client_present = False
        self._bug_log = RateLimitedLog(log)  # a guest that finds a bug of ours must not flood the log

    # --- the loop ----------------------------------------------------------------------------------

    def process(self, worker: DisplayWorker, budget: int, cursor_budget: int | None = None) -> bool:
        """Pull up to ``budget`` commands from the command ring, then up to ``cursor_budget`` (None:
        ``budget``) from the cursor ring; True if either has more. A ring whose budget is 0 is not
        touched (its notification stays off: the loop pulls again once the pipes have room)."""
        more = self._pull(worker, budget, cursor=False)
        more_cursor = self._pull(worker, budget if cursor_budget is None else cursor_budget, cursor=True)
        return more or more_cursor

    def _pull(self, worker: DisplayWorker, budget: int, *, cursor: bool) -> bool:
        if budget <= 0:
            return False
        dev = self.device
        for _ in range(budget):
            ext = dev.get_cursor_command() if cursor else dev.get_command()
            if ext is None:
                # Arm the notification; if commands slipped in meanwhile, keep going next round.
                empty = dev.req_cursor_notification() if cursor else dev.req_cmd_notification()
                return not empty
            self.commands += 1
            self._handle(worker, ext)
        return True

    def _handle(self, worker: DisplayWorker, ext: QXLCommandExt) -> None:
        cmd: RedCommand | None = None
        keep = False  # the command stays with us (an offscreen surface's CREATE): not released
        try:
            cmd = self.device.parse_command(ext)
            if isinstance(cmd, RedDrawable):
                self._draw(worker, cmd)
            elif isinstance(cmd, RedSurfaceCmd):
                keep = self._surface_cmd(worker, cmd)
            elif isinstance(cmd, RedCursorCmd):
                self._cursor(worker, cmd)
            elif isinstance(cmd, RedUpdate):
                surface = self._surface(worker, cmd.surface_id)
                write_back(surface, cmd.area)
            elif isinstance(cmd, RedMessage):
                log.info("guest message: %s", cmd.text)
        except (GuestError, ProtocolError, NotSupportedError) as exc:
            # ProtocolError / NotSupportedError come from the canvas: the guest asked for a draw
            # the client would refuse (or crash on) or one we cannot render; it is not sent.
            self.guest_errors += 1
            self.device.guest_error(f"command type {ext.cmd.type} rejected: {exc}")
        except Exception as exc:  # a bug of ours: never take the worker down for it
            self.guest_errors += 1
            self._bug_log.warning("internal error handling QXL command type %d", ext.cmd.type, exc_info=True)
            self.device.guest_error(f"internal error: {type(exc).__name__}")
        finally:
            if not keep:
                self.device.release_resource(cmd.release_info if cmd is not None else ReleaseInfo.of(ext))

    # --- commands ----------------------------------------------------------------------------------

    @staticmethod
    def _surface(worker: DisplayWorker, surface_id: int) -> Surface:
        surface = worker.surfaces.get(surface_id)
        if surface is None:
            raise GuestError(f"surface {surface_id} does not exist")
        return surface

    def _draw(self, worker: DisplayWorker, cmd: RedDrawable) -> None:
        surface = self._surface(worker, cmd.surface_id)
        b = cmd.bbox
        if not (0 <= b.left <= b.right <= surface.width and 0 <= b.top <= b.bottom <= surface.height):
            raise GuestError(f"bbox {b} outside surface {cmd.surface_id} ({surface.width}x{surface.height})")
        for dep in cmd.surface_deps:
            if dep != -1:
                self._surface(worker, dep)
        body = cmd.body
        if body is None:
            return
        if cmd.self_bitmap and getattr(body, "src_bitmap", "absent") is None:
            body = replace(body, src_bitmap=self._self_bitmap(surface, cmd.self_bitmap_area))  # type: ignore[arg-type]
        op: Any = body
        drawable = make_drawable(cmd.surface_id, cmd.display_base(), op)
        for dep in drawable.surface_deps:
            self._surface(worker, dep)  # an image naming a missing surface is the guest's error
        worker.apply(Draw(drawable))

    @staticmethod
    def _self_bitmap(surface: Surface, area: Rect) -> d.Image:
        """libspice ``handle_self_bitmap``: the op's source is its destination area before the draw."""
        top, left = max(0, area.top), max(0, area.left)
        bottom, right = min(surface.height, area.bottom), min(surface.width, area.right)
        if right <= left or bottom <= top:
            raise GuestError(f"empty self_bitmap_area {area}")
        px = surface.canvas.pixels[top:bottom, left:right]
        h, w = px.shape
        return d.Image(
            descriptor=d.ImageDescriptor(id=0, type=ImageType.BITMAP, flags=0, width=w, height=h),
            bitmap=d.BitmapData(format=BitmapFmt.BIT32, flags=BitmapFlags.TOP_DOWN, x=w, y=h, stride=w * 4, palette=None, data=np.ascontiguousarray(px).tobytes()),
        )

    def _surface_cmd(self, worker: DisplayWorker, cmd: RedSurfaceCmd) -> bool:
        """Returns True when the command is kept (an offscreen surface's CREATE)."""
        if cmd.type == SurfaceCmdType.CREATE:
            if cmd.surface_id == 0:
                raise GuestError("surface 0 is the primary surface: create it with CREATE_PRIMARY")
            if cmd.surface_id in worker.surfaces:
                raise GuestError(f"surface {cmd.surface_id} already exists")
            self._check_canvas_budget(worker, cmd.width * cmd.height * 4)
            initial = guest_pixels(cmd.data, cmd.stride, cmd.width, cmd.height, cmd.format)
            worker.apply(CreateSurface(
                cmd.surface_id, cmd.width, cmd.height, cmd.format, initial=initial,
                guest_view=cmd.data, guest_stride=cmd.stride, create_cmd=cmd.release_info,
            ))
            return True
        surface = worker.surfaces.get(cmd.surface_id)
        if surface is None:
            raise GuestError(f"destroy of missing surface {cmd.surface_id}")
        self.destroy(worker, cmd.surface_id)
        return False

    @property
    def canvas_budget(self) -> int:
        """Canvas bytes this device's offscreen surfaces may take together: the guest memory the
        host gave the device (RAM + VRAM BARs) times :data:`SURFACE_MEMORY_FACTOR`."""
        return SURFACE_MEMORY_FACTOR * (len(self.device.ram) + len(self.device.vram))

    def _check_canvas_budget(self, worker: DisplayWorker, nbytes: int) -> None:
        """GuestError if a new offscreen canvas of ``nbytes`` would pass :attr:`canvas_budget`
        (the primary is not counted: CREATE_PRIMARY bounds it by the surface0 area)."""
        used = sum(s.canvas.pixels.nbytes for s in worker.surfaces.values() if not s.primary)
        if used + nbytes > self.canvas_budget:
            raise GuestError(
                f"surface of {nbytes} canvas bytes refused: offscreen surfaces already hold {used} of the "
                f"{self.canvas_budget} bytes allowed for this device's {len(self.device.ram) + len(self.device.vram)} bytes of guest memory"
            )

    def destroy(self, worker: DisplayWorker, surface_id: int) -> None:
        """Destroy a surface, writing its pixels back and releasing its CREATE command."""
        surface = worker.surfaces.get(surface_id)
        if surface is None:
            return
        write_back(surface)
        worker.apply(DestroySurface(surface_id))
        if isinstance(surface.create_cmd, ReleaseInfo):
            self.device.release_resource(surface.create_cmd)

    def _cursor(self, worker: DisplayWorker, cmd: RedCursorCmd) -> None:
        if cmd.type == CursorCmdType.SET:
            shape = None
            c = cmd.shape
            if c is not None and c.header is not None and not c.flags & CursorFlags.NONE:
                h = c.header
                shape = CursorShape(h.unique, h.type, h.width, h.height, h.hot_spot_x, h.hot_spot_y, c.data)
            worker.apply(SetCursor(shape, cmd.position.x, cmd.position.y, bool(cmd.visible)))
        elif cmd.type == CursorCmdType.MOVE:
            worker.apply(MoveCursor(cmd.position.x, cmd.position.y))
        elif cmd.type == CursorCmdType.HIDE:
            worker.apply(HideCursor())
        elif cmd.type == CursorCmdType.TRAIL:
            worker.apply(SetCursorTrail(cmd.trail_length, cmd.trail_frequency))

    def client_attached(self, worker: DisplayWorker) -> None:
        """On the first client, tell the guest a client is present (``set_client_capabilities``)."""
        if not self._client_present:
            self._client_present = True
            self.device.set_client_capabilities(True, bytes(58))

    # --- the device's I/O calls (worker thread) ----------------------------------------------------

    def handlers(self) -> Mapping[type, Callable[[Any], object]]:
        """The device's QXL* messages and their handlers."""
        return {
            QXLWakeup: self._on_wakeup,
            QXLOom: self._on_oom,
            QXLUpdateArea: self._on_update_area,
            QXLMemslotsChanged: self._on_memslots_changed,
            QXLCreatePrimary: self._on_create_primary,
            QXLDestroyPrimary: self._on_destroy_primary,
            QXLDestroySurface: self._on_destroy_surface,
            QXLDestroyAllSurfaces: self._on_destroy_all_surfaces,
            QXLFlushSurfaces: self._on_flush_surfaces,
            QXLMonitorsConfig: self._on_monitors_config,
            QXLReset: self._on_reset,
        }

    @contextmanager
    def _io(self, cookie: int | None, *, flush_commands: bool = False) -> Iterator[None]:
        """An I/O call: an async one completes with its cookie whatever happens."""
        try:
            if flush_commands:
                # libspice handles every command already on the ring before a destroy
                # (``flush_all_qxl_commands``): they were issued before the I/O.
                while self.process(self.worker, 10_000):
                    pass
            yield
        finally:
            if cookie is not None:
                self.device.async_complete(cookie)

    def _on_wakeup(self, msg: QXLWakeup) -> None:
        pass  # the loop pulls the rings after handling its messages

    def _on_oom(self, msg: QXLOom) -> None:
        self.device.flush_resources()

    def _on_update_area(self, msg: QXLUpdateArea) -> None:
        with self._io(msg.cookie):
            self.process(self.worker, 10_000)  # libspice renders everything queued first
            surface = self.worker.surfaces.get(msg.surface_id)
            if surface is None:
                self.device.guest_error(f"UPDATE_AREA of missing surface {msg.surface_id}")
                return
            write_back(surface, msg.area)
            self.device.update_area_complete(msg.surface_id, [msg.area])

    def _on_memslots_changed(self, msg: QXLMemslotsChanged) -> None:
        with self._io(msg.cookie):
            pass

    def _on_create_primary(self, msg: QXLCreatePrimary) -> None:
        with self._io(msg.cookie):
            if 0 in self.worker.surfaces:
                self.destroy(self.worker, 0)
            p = msg.surface
            initial = guest_pixels(p.data, p.stride, p.width, p.height, p.format)
            self.worker.apply(CreateSurface(0, p.width, p.height, p.format, primary=True, initial=initial, guest_view=p.data, guest_stride=p.stride))

    def _on_destroy_primary(self, msg: QXLDestroyPrimary) -> None:
        with self._io(msg.cookie, flush_commands=True):
            self.destroy(self.worker, 0)
            self.worker.apply(ResetCursor())

    def _on_destroy_surface(self, msg: QXLDestroySurface) -> None:
        with self._io(msg.cookie, flush_commands=True):
            self.destroy(self.worker, msg.surface_id)

    def _on_destroy_all_surfaces(self, msg: QXLDestroyAllSurfaces) -> None:
        with self._io(msg.cookie, flush_commands=True):
            for sid in sorted(self.worker.surfaces, reverse=True):
                self.destroy(self.worker, sid)
            self.worker.apply(ResetCursor())  # libspice handle_dev_destroy_surfaces resets the cursor too

    def _on_flush_surfaces(self, msg: QXLFlushSurfaces) -> None:
        with self._io(msg.cookie, flush_commands=True):
            for s in self.worker.surfaces.values():
                write_back(s)

    def _on_monitors_config(self, msg: QXLMonitorsConfig) -> None:
        with self._io(msg.cookie):
            self.worker.apply(SetMonitors(msg.config))

    def _on_reset(self, msg: QXLReset) -> None:
        with self._io(None):
            for sid in sorted(self.worker.surfaces, reverse=True):
                self.destroy(self.worker, sid)
            self.worker.apply(ResetCursor())


class QXLWorkerBackend:
    """What the device calls (on the host's vCPU thread): each call is a typed message to the worker.

    Synchronous calls (``cookie`` None) wait for the worker's reply, at most :attr:`sync_timeout`
    seconds: then the guest gets ``QXL_INTERRUPT_ERROR`` and the call returns (nothing is raised into
    the vCPU thread); asynchronous ones return at once and complete with
    ``device.async_complete(cookie)``, which raises the IO_CMD interrupt.
    """

    def __init__(self, worker: DisplayWorker) -> None:
        self.worker = worker
        self.device: QXLDevice | None = None
        self.source: QXLCommandSource | None = None
        #: longest a synchronous call waits for the worker before it fails as a guest error
        self.sync_timeout = SYNC_IO_TIMEOUT

    def attach(self, device: QXLDevice) -> QXLCommandSource:
        """Serve ``device``: make its command source and attach it to the worker."""
        self.device = device
        self.source = QXLCommandSource(device, self.worker)
        self.worker.attach_source(self.source)
        return self.source

    def _send(self, msg: Request, cookie: int | None) -> None:
        assert self.device is not None
        if cookie is not None:
            self.worker.post(msg)
            return
        try:
            self.worker.request(msg, self.sync_timeout)
        except TimeoutError:
            # the vCPU must not stay blocked nor get an exception: the I/O completes as failed, the
            # guest gets its error interrupt (the worker still handles the request when it can)
            self.device.guest_error(f"{type(msg).__name__}: the display worker did not answer within {self.sync_timeout} s")

    # QXLBackend

    def wakeup(self) -> None:
        """Tell the worker to look at the rings (never blocks)."""
        self.worker.post(QXLWakeup())

    def oom(self) -> None:
        """``QXLBackend.oom``: send QXLOom to the worker and wait for it."""
        self._send(QXLOom(), None)

    def update_area(self, surface_id: int, area: Rect, clear_dirty_region: bool, cookie: int | None) -> None:
        """``QXLBackend.update_area``: send QXLUpdateArea to the worker; wait for it when ``cookie`` is None."""
        self._send(QXLUpdateArea(surface_id, area, clear_dirty_region, cookie), cookie)

    def memslots_changed(self, cookie: int | None) -> None:
        """``QXLBackend.memslots_changed``: send QXLMemslotsChanged to the worker; wait for it when ``cookie`` is None."""
        self._send(QXLMemslotsChanged(cookie), cookie)

    def create_primary(self, surface: PrimarySurface, cookie: int | None) -> None:
        """``QXLBackend.create_primary``: send QXLCreatePrimary to the worker; wait for it when ``cookie`` is None."""
        self._send(QXLCreatePrimary(surface, cookie), cookie)

    def destroy_primary(self, cookie: int | None) -> None:
        """``QXLBackend.destroy_primary``: send QXLDestroyPrimary to the worker; wait for it when ``cookie`` is None."""
        self._send(QXLDestroyPrimary(cookie), cookie)

    def destroy_surface(self, surface_id: int, cookie: int | None) -> None:
        """``QXLBackend.destroy_surface``: send QXLDestroySurface to the worker; wait for it when ``cookie`` is None."""
        self._send(QXLDestroySurface(surface_id, cookie), cookie)

    def destroy_all_surfaces(self, cookie: int | None) -> None:
        """``QXLBackend.destroy_all_surfaces``: send QXLDestroyAllSurfaces to the worker; wait for it when ``cookie`` is None."""
        self._send(QXLDestroyAllSurfaces(cookie), cookie)

    def flush_surfaces(self, cookie: int) -> None:
        """``QXLBackend.flush_surfaces``: send QXLFlushSurfaces to the worker; wait for it when ``cookie`` is None."""
        self._send(QXLFlushSurfaces(cookie), cookie)

    def monitors_config(self, config: d.MonitorsConfig, cookie: int) -> None:
        """``QXLBackend.monitors_config``: send QXLMonitorsConfig to the worker; wait for it when ``cookie`` is None."""
        self._send(QXLMonitorsConfig(config, cookie), cookie)

    def reset(self) -> None:
        """``QXLBackend.reset``: send QXLReset to the worker and wait for it."""
        self._send(QXLReset(), None)
