"""The typed messages that cross the dispatcher (see :mod:`spiceserver.worker.dispatcher`).

Counterpart of spice ``server/red-worker.h`` (``RED_WORKER_MESSAGE_*``) and the channel-client
messages ``red-channel.cpp`` sends to the worker thread. Bulk payloads (frames, output bytes) are
passed by reference.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ClientConnected",
    "ClientData",
    "ClientWritten",
    "ClientDisconnected",
    "ClientOutput",
    "ClientClose",
    "DisplayInfo",
    "FramebufferFrame",
    "FramebufferResize",
    "Call",
    "Stop",
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
    cc_id: int


@dataclass(frozen=True, slots=True)
class FramebufferFrame:
    """Host framebuffer path: new pixels for some rectangles of the primary surface.

    ``tiles`` are (left, top, pixels) with pixels an (h, w) uint32 BGRX array the worker may keep and
    nobody writes to: a copy, or with ``update(copy=False)`` a view of the host's frame (then not
    necessarily contiguous; the worker reads it once, into the bitmap's bytes).
    """

    tiles: list[tuple[int, int, np.ndarray]]


@dataclass(frozen=True, slots=True)
class FramebufferResize:
    width: int
    height: int


@dataclass(slots=True)
class Call:
    """Run ``fn(worker)`` on the worker thread; a caller may wait for ``done`` and read ``result``."""

    fn: Any
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Stop:
    pass


# --- worker -> reds ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientOutput:
    """Marshalled bytes to write to the client's transport, in order."""

    cc_id: int
    data: bytes


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
