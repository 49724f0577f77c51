"""The display sink: the typed operations that change what a worker shows.

Counterpart of the entry points of spice ``server/display-channel.cpp``
(``display_channel_create_surface``, ``display_channel_destroy_surface``, ``display_channel_add_drawable``,
``display_channel_update_monitors_config``) and ``cursor-channel.cpp`` (``cursor_channel_process_cmd``).

Every source of pictures ends here: the QXL rings (:mod:`spiceserver.worker.qxl_source`), the device's
I/O calls, a host's framebuffer frames and cursor calls, a replayed recording. Each reaches the worker as
one of these operations, applied by :meth:`DisplayWorker.apply` -- the one place where the display
changes, and so the one place an observer (the recorder) watches. An operation is applied on the worker
thread; cursor operations may also be posted through the dispatcher as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..proto.enums import SurfaceFmt
from ..proto.messages import display as d
from .cursor_client import CursorShape
from .drawable import Drawable

__all__ = [
    "DisplayOp",
    "DisplayObserver",
    "CreateSurface",
    "DestroySurface",
    "SetMonitors",
    "Draw",
    "SetCursor",
    "MoveCursor",
    "HideCursor",
    "SetCursorTrail",
    "ResetCursor",
]


@dataclass(frozen=True, slots=True, eq=False)
class CreateSurface:
    """A new surface (replacing one with the same id); ``initial`` pixels are its first picture.

    ``guest_view`` / ``guest_stride`` / ``create_cmd``: the guest memory behind a QXL surface (see
    :class:`~spiceserver.worker.surface.Surface`).
    """

    surface_id: int
    width: int
    height: int
    format: int = SurfaceFmt.FMT_32_XRGB
    primary: bool = False
    initial: np.ndarray | None = None
    guest_view: memoryview | None = None
    guest_stride: int = 0
    create_cmd: Any = None


@dataclass(frozen=True, slots=True)
class DestroySurface:
    """Surface ``surface_id`` goes; clients that were told of it get SURFACE_DESTROY."""

    surface_id: int


@dataclass(frozen=True, slots=True)
class SetMonitors:
    """The device's monitors layout (QXL MONITORS_CONFIG)."""

    heads: d.MonitorsConfig


@dataclass(frozen=True, slots=True, eq=False)
class Draw:
    """A validated draw on an existing surface: rendered, entered into the tree, queued for clients."""

    drawable: Drawable


@dataclass(frozen=True, slots=True)
class SetCursor:
    """The cursor shape (None: no shape), position and visibility."""

    shape: CursorShape | None
    x: int
    y: int
    visible: bool = True


@dataclass(frozen=True, slots=True)
class MoveCursor:
    """The cursor moved to ``(x, y)``."""

    x: int
    y: int


@dataclass(frozen=True, slots=True)
class HideCursor:
    """The cursor is hidden."""


@dataclass(frozen=True, slots=True)
class SetCursorTrail:
    """The cursor trail (QXL_CURSOR_TRAIL): ``length`` and ``frequency``."""

    length: int
    frequency: int


@dataclass(frozen=True, slots=True)
class ResetCursor:
    """The device reset its cursor (primary destroyed, device reset): clients drop their caches."""


DisplayOp = CreateSurface | DestroySurface | SetMonitors | Draw | SetCursor | MoveCursor | HideCursor | SetCursorTrail | ResetCursor


class DisplayObserver(Protocol):
    """What watches a worker's display (the recorder): told of every operation that took effect,
    after it did (a draw that failed validation or rendering is not seen)."""

    #: how many operations it kept
    count: int

    def observe(self, op: DisplayOp) -> None:
        """Note an operation that took effect."""
        ...

    def close(self) -> None:
        """No more operations will come (the worker stopped watching)."""
