"""The typed messages that cross the dispatcher (see :mod:`spiceserver.worker.dispatcher`).

Counterpart of spice ``server/red-worker.h`` (``RED_WORKER_MESSAGE_*``) and the channel-client
messages ``red-channel.cpp`` sends to the worker thread. Bulk payloads (frames, output bytes) are
passed by reference. Nothing that crosses is a closure: each message is data, handled by a
registered handler on the receiving side (device-specific ones by the attached command source).
The display operations themselves (draw, surfaces, cursor) are in :mod:`spiceserver.worker.ops`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

import numpy as np

from ..proto.messages import display as d
from ..proto.messages.base import Rect
from .dispatcher import Request

if TYPE_CHECKING:
    from ..qxl import PrimarySurface
    from .ops import DisplayObserver, DisplayOp
    from .worker import CommandSource

__all__ = [
    "EncodeDone",
    "ClientConnected",
    "ClientData",
    "ClientMigrate",
    "ClientWritten",
    "ClientDisconnected",
    "ClientOutput",
    "ClientConsumed",
    "ClientClose",
    "DisplayInfo",
    "Stop",
    "SetClientMouseMode",
    "Snapshot",
    "Screendump",
    "BeginRecording",
    "EndRecording",
    "WaitIdle",
    "CollectStats",
    "CollectMetrics",
    "AttachSource",
    "ApplyOps",
    "FramebufferSurface",
    "FramebufferFrame",
    "QXLWakeup",
    "QXLOom",
    "QXLUpdateArea",
    "QXLMemslotsChanged",
    "QXLCreatePrimary",
    "QXLDestroyPrimary",
    "QXLDestroySurface",
    "QXLDestroyAllSurfaces",
    "QXLFlushSurfaces",
    "QXLMonitorsConfig",
    "QXLReset",
]

# --- reds -> worker ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientConnected:
    """A display or cursor channel linked; the worker now owns its protocol state."""

    cc_id: int
    channel_type: int
    channel_id: int
    mini_header: bool
    common_caps: tuple[int, ...]
    channel_caps: tuple[int, ...]
    session_id: int
    label: str  # for logs: "#12 127.0.0.1:40000 display:0"
    low_bandwidth: bool = False  # the main channel's network test found < 10 Mbps
    max_message_size: int = 1024  # the largest message body the client may send (the channel's limit)
    migrated: bool = False  # a client migrating here seamlessly: MIGRATE_DATA comes instead of DISPLAY_INIT


@dataclass(frozen=True, slots=True)
class ClientMigrate:
    """The session migrates: send SPICE_MSG_MIGRATE (the display: and its MIGRATE_DATA)."""

    cc_id: int


@dataclass(frozen=True, slots=True)
class ClientData:
    """Bytes the client sent (any framing; the worker's ChannelConnection reassembles)."""

    cc_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ClientWritten:
    """reds wrote ``nbytes`` of this client's output to the kernel (flow-control feedback)."""

    cc_id: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class ClientDisconnected:
    """reds dropped this client (its connection is gone)."""

    cc_id: int


# --- host / reds -> worker: queries and controls (requests: the sender may wait for the reply) --


@dataclass(frozen=True, slots=True)
class Stop:
    """End the worker loop (a recording in progress is closed complete)."""


@dataclass(frozen=True, slots=True)
class SetClientMouseMode:
    """Client mouse mode on or off: in client mode the cursor's MOVE is not sent."""

    client: bool


@dataclass(frozen=True, slots=True)
class Snapshot(Request):
    """Reply: a copy of the surface's canvas pixels (``KeyError`` if there is no such surface)."""

    surface_id: int = 0


@dataclass(frozen=True, slots=True)
class Screendump(Request):
    """Write the surface's picture as PNG to ``path`` (a path or a binary file)."""

    path: str | os.PathLike[str] | IO[bytes]
    surface_id: int = 0


@dataclass(frozen=True, slots=True)
class BeginRecording(Request):
    """Record to ``recorder`` from now on, starting with the present state (ends any other)."""

    recorder: DisplayObserver


@dataclass(frozen=True, slots=True)
class EndRecording(Request):
    """Stop recording; reply: how many records the file holds (0 if none was in progress)."""


@dataclass(frozen=True, slots=True)
class WaitIdle(Request):
    """Reply once every command queued on the device so far was handled."""


@dataclass(frozen=True, slots=True)
class CollectStats(Request):
    """Reply: the display's live counters (``SpiceServer.display_stats``)."""


@dataclass(frozen=True, slots=True)
class CollectMetrics(Request):
    """Reply: the display's :class:`~spiceserver.metrics.DisplayMetrics`."""

    display_id: int


@dataclass(frozen=True, slots=True)
class AttachSource(Request):
    """The device glue the worker pulls commands from and whose typed messages it handles."""

    source: CommandSource


@dataclass(frozen=True, slots=True)
class ApplyOps(Request):
    """Apply display operations in order (a replay); reply: how many."""

    ops: tuple[DisplayOp, ...]


# --- host -> worker: the framebuffer path --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FramebufferSurface(Request):
    """The framebuffer display's primary surface, (re)created at this size (clients follow)."""

    width: int
    height: int


@dataclass(frozen=True, slots=True)
class FramebufferFrame:
    """Host framebuffer path: new pixels for some rectangles of the primary surface.

    ``tiles`` are (left, top, pixels) with pixels an (h, w) uint32 BGRX array the worker may keep and
    nobody writes to: a copy, or with ``update(copy=False)`` a view of the host's frame (then not
    necessarily contiguous; the worker reads it once, into the bitmap's bytes).
    """

    tiles: list[tuple[int, int, np.ndarray]]


# --- the QXL device's I/O calls (red-qxl.cpp): ``cookie`` None = synchronous (the device waits for
# the reply), else asynchronous (completed with ``async_complete(cookie)``) -------------------------


@dataclass(frozen=True, slots=True)
class QXLWakeup:
    """The guest pushed commands (QXL_IO_NOTIFY_CMD / NOTIFY_CURSOR)."""


@dataclass(frozen=True, slots=True)
class QXLOom(Request):
    """The guest is out of memory: release everything the worker still holds."""


@dataclass(frozen=True, slots=True)
class QXLUpdateArea(Request):
    """QXL_IO_UPDATE_AREA: render ``area`` of the surface into guest memory."""

    surface_id: int
    area: Rect
    clear_dirty_region: bool
    cookie: int | None


@dataclass(frozen=True, slots=True)
class QXLMemslotsChanged(Request):
    """QXL_IO_MEMSLOT_ADD / MEMSLOT_DEL: the device's memslots changed."""

    cookie: int | None


@dataclass(frozen=True, slots=True)
class QXLCreatePrimary(Request):
    """QXL_IO_CREATE_PRIMARY: create surface 0 over guest memory."""

    surface: PrimarySurface
    cookie: int | None


@dataclass(frozen=True, slots=True)
class QXLDestroyPrimary(Request):
    """QXL_IO_DESTROY_PRIMARY: flush, destroy surface 0 and reset the cursor."""

    cookie: int | None


@dataclass(frozen=True, slots=True)
class QXLDestroySurface(Request):
    """QXL_IO_DESTROY_SURFACE_WAIT: render the surface into guest memory, then drop it."""

    surface_id: int
    cookie: int | None


@dataclass(frozen=True, slots=True)
class QXLDestroyAllSurfaces(Request):
    """QXL_IO_DESTROY_ALL_SURFACES: flush and destroy every surface, reset the cursor (as libspice)."""

    cookie: int | None


@dataclass(frozen=True, slots=True)
class QXLFlushSurfaces(Request):
    """QXL_IO_FLUSH_SURFACES_ASYNC: render every surface into guest memory."""

    cookie: int | None


@dataclass(frozen=True, slots=True)
class QXLMonitorsConfig(Request):
    """QXL_IO_MONITORS_CONFIG_ASYNC: the driver's monitors layout."""

    config: d.MonitorsConfig
    cookie: int | None


@dataclass(frozen=True, slots=True)
class QXLReset(Request):
    """QXL_IO_RESET: every surface and the cursor go."""


# --- worker -> reds ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientOutput:
    """Marshalled bytes to write to the client's transport, in order."""

    cc_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ClientConsumed:
    """The worker handled ``nbytes`` more of this client's ClientData (the loop's input back-pressure)."""

    cc_id: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class ClientClose:
    """The worker dropped this client (e.g. a protocol error); reds closes the transport."""

    cc_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class DisplayInfo:
    """The primary surface changed size (reds updates the tablet's logical size)."""

    width: int
    height: int


@dataclass(frozen=True, slots=True)
class EncodeDone:
    """A stream frame's encode job ended on an encoder thread: the worker wakes and flushes its clients."""

