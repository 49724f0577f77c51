"""Cursor channel: one per display; its clients live on the display's worker.

Counterpart of spice ``server/cursor-channel.cpp`` as seen from the channel registry: the cursor
channel of a display device. The protocol state of each client (INIT, SET/MOVE/HIDE/TRAIL, the
cursor cache) is :mod:`spiceserver.worker.cursor_client`, on the worker thread.
"""

from __future__ import annotations

from ..proto.enums import ChannelType
from .base import ServerContext
from .worker_link import WorkerBridge, WorkerChannel

__all__ = ["CursorChannel"]


class CursorChannel(WorkerChannel):
    """The cursor channel of one display (same id as the display channel)."""

    TYPE = ChannelType.CURSOR

    def __init__(self, ctx: ServerContext, bridge: WorkerBridge, channel_id: int) -> None:
        super().__init__(ctx, bridge, channel_id)
