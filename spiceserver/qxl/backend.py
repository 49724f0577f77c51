"""What the QXL device asks of the display worker, and what it hands it.

Counterpart of the device -> server half of spice-server ``server/spice-qxl.h`` / ``red-qxl.cpp``
(``spice_qxl_wakeup``, ``spice_qxl_update_area[_async]``, ``spice_qxl_create_primary_surface``,
``QXLDevSurfaceCreate``, ``QXLDevInitInfo`` ...). The other half -- what the worker asks of the
device (``get_command``, ``req_cmd_notification``, ``release_resource``, ``async_complete`` ...) --
is the public API of :class:`~spiceserver.qxl.device.QXLDevice`.

Calling convention (the dispatcher contract of ``red-qxl.cpp``): every method taking a ``cookie`` is
*synchronous* when ``cookie`` is None -- it returns only once the worker has done the work, as the
guest's I/O write must not complete before (``UPDATE_AREA`` must have rendered into guest memory) --
and *asynchronous* otherwise: it returns at once and the worker later calls
``device.async_complete(cookie)``, which raises ``QXL_INTERRUPT_IO_CMD`` for the guest. The device
calls these from the thread of the guest's I/O write (a vCPU thread) and never holds its lock while
doing so, so the worker may call back into the device freely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..proto.messages.base import Rect
from ..proto.messages.display import MonitorsConfig

if TYPE_CHECKING:
    from .device import QXLDevice

__all__ = ["PrimarySurface", "DevInitInfo", "QXLBackend", "NullBackend"]


@dataclass(frozen=True, slots=True)
class PrimarySurface:
    """The primary surface the guest asked for (``QXLDevSurfaceCreate``), validated.

    ``data`` is a live view of the ``height * abs(stride)`` guest bytes at ``mem``; with a negative
    ``stride`` the image is bottom-up and line 0 starts at ``(height - 1) * -stride``.
    ``flags & SURF_FLAG_KEEP_DATA`` asks to keep the current pixels (after migration).
    """

    width: int
    height: int
    stride: int
    format: int
    position: int
    mouse_mode: bool
    flags: int
    type: int
    mem: int
    group_id: int
    data: memoryview = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class DevInitInfo:
    """``QXLDevInitInfo``: how to size the worker's tables."""

    num_memslots_groups: int
    num_memslots: int
    memslot_gen_bits: int
    memslot_id_bits: int
    qxl_ram_size: int
    internal_groupslot_id: int
    n_surfaces: int


class QXLBackend(Protocol):
    """The display worker, as the device sees it. See the module docstring for ``cookie``."""

    def wakeup(self) -> None:
        """Commands or cursor commands may be waiting (``NOTIFY_CMD`` / ``NOTIFY_CURSOR``). Never blocks."""

    def oom(self) -> None:
        """The guest is out of memory: render and release what can be released, then call
        ``device.flush_resources()``. Synchronous."""

    def update_area(self, surface_id: int, area: Rect, clear_dirty_region: bool, cookie: int | None) -> None:
        """Process pending commands and render ``area`` of the surface into guest memory; report
        what changed with ``device.update_area_complete(surface_id, rects)``."""

    def memslots_changed(self, cookie: int | None) -> None:
        """``device.memslots`` gained or lost a slot (MEMSLOT_ADD / MEMSLOT_DEL)."""

    def create_primary(self, surface: PrimarySurface, cookie: int | None) -> None:
        """Create surface 0 over ``surface.data``; send it to clients (SURFACE_CREATE, MARK)."""

    def destroy_primary(self, cookie: int | None) -> None:
        """Flush, destroy surface 0 and reset the cursor channel."""

    def destroy_surface(self, surface_id: int, cookie: int | None) -> None:
        """Flush commands and render into the surface's memory, then drop the surface
        (``DESTROY_SURFACE_WAIT``): the guest reuses the memory once this completes."""

    def destroy_all_surfaces(self, cookie: int | None) -> None:
        """Flush and destroy every surface; reset the cursor channel."""

    def flush_surfaces(self, cookie: int) -> None:
        """Render every surface into guest memory (``FLUSH_SURFACES_ASYNC``, before suspend)."""

    def monitors_config(self, config: MonitorsConfig, cookie: int) -> None:
        """The driver's monitors layout (``MONITORS_CONFIG_ASYNC``); clamp to what is supported."""

    def reset(self) -> None:
        """Device reset: destroy all surfaces, reset cursor and image caches (synchronous).
        Releases made during it still reach the guest; memslots are cleared afterwards."""


class NullBackend:
    """A backend that does nothing (no worker): async calls complete at once.

    Args:
        device: completes async calls on it; None leaves them pending.
    """

    def __init__(self, device: QXLDevice | None = None) -> None:
        self.device = device

    def _done(self, cookie: int | None) -> None:
        if cookie is not None and self.device is not None:
            self.device.async_complete(cookie)

    def wakeup(self) -> None:
        """Do nothing."""
        pass

    def oom(self) -> None:
        """Do nothing."""
        pass

    def update_area(self, surface_id: int, area: Rect, clear_dirty_region: bool, cookie: int | None) -> None:
        """Render nothing; complete ``cookie`` at once."""
        self._done(cookie)

    def memslots_changed(self, cookie: int | None) -> None:
        """Complete ``cookie`` at once."""
        self._done(cookie)

    def create_primary(self, surface: PrimarySurface, cookie: int | None) -> None:
        """Create nothing; complete ``cookie`` at once."""
        self._done(cookie)

    def destroy_primary(self, cookie: int | None) -> None:
        """Complete ``cookie`` at once."""
        self._done(cookie)

    def destroy_surface(self, surface_id: int, cookie: int | None) -> None:
        """Complete ``cookie`` at once."""
        self._done(cookie)

    def destroy_all_surfaces(self, cookie: int | None) -> None:
        """Complete ``cookie`` at once."""
        self._done(cookie)

    def flush_surfaces(self, cookie: int) -> None:
        """Complete ``cookie`` at once."""
        self._done(cookie)

    def monitors_config(self, config: MonitorsConfig, cookie: int) -> None:
        """Ignore the layout; complete ``cookie`` at once."""
        self._done(cookie)

    def reset(self) -> None:
        """Do nothing."""
        pass
