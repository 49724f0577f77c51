"""The framebuffer path: a host without a QXL guest driver hands numpy frames, the library does the rest.

Counterpart of QEMU ``ui/spice-display.c`` (``qemu_spice_create_update``: dirty areas of a guest
framebuffer become QXL drawables for spice-server). Here the host calls :meth:`FramebufferDisplay.update`
with a frame and, optionally, the rectangles it knows changed; otherwise the library finds the dirty
tiles itself by comparing with the previous frame (numpy, 64x64 tiles). Each dirty area becomes a
DRAW_COPY of a bitmap on the primary surface, identified by a hash of its pixels so that content a
client has seen before can come from its pixmap cache.

Thread-safe: ``update`` may be called from the host's emulation thread; the work happens on the
display worker thread. Frames reach it as typed messages, handled by this display's command source
(:class:`FramebufferSource`, attached to the worker once), which turns their tiles into draws.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from .proto.enums import BitmapFlags, BitmapFmt, ClipType, ImageType
from .proto.messages import display as d
from .proto.messages.base import Point, Rect
from .worker.drawable import make_drawable
from .worker.image_encoder import QXL_IMAGE_CACHE
from .worker.messages import FramebufferFrame, FramebufferSurface
from .worker.ops import Draw, HideCursor, MoveCursor, SetCursor
from .worker.worker import CommandSource

if TYPE_CHECKING:
    from .worker.cursor_client import CursorShape
    from .worker.worker import DisplayWorker

__all__ = ["FramebufferDisplay", "FramebufferSource", "TILE", "as_bgrx"]

TILE = 64


def as_bgrx(frame: np.ndarray) -> np.ndarray:
    """Accept (h, w) uint32 0x00RRGGBB or (h, w, 4) uint8 B,G,R,X; return (h, w) uint32."""
    if frame.dtype == np.uint32 and frame.ndim == 2:
        return frame
    if frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 4:
        return np.ascontiguousarray(frame).view("<u4")[:, :, 0]
    raise ValueError(f"frame must be (h, w) uint32 or (h, w, 4) uint8, not {frame.dtype} {frame.shape}")


def dirty_tiles(old: np.ndarray | None, new: np.ndarray, tile: int = TILE) -> list[tuple[int, int, int, int]]:
    """Rectangles (l, t, r, b) covering every changed tile; tiles of a row are merged into runs."""
    h, w = new.shape
    if old is None or old.shape != new.shape:
        return [(0, 0, w, h)]
    th, tw = -(-h // tile), -(-w // tile)
    diff = old != new
    pad = np.zeros((th * tile, tw * tile), dtype=bool)
    pad[:h, :w] = diff
    changed: np.ndarray = np.asarray(pad.reshape(th, tile, tw, tile).any(axis=(1, 3)))
    rects = []
    for ty in range(th):
        row = changed[ty]
        tx = 0
        while tx < tw:
            if row[tx]:
                start = tx
                while tx < tw and row[tx]:
                    tx += 1
                rects.append((start * tile, ty * tile, min(tx * tile, w), min((ty + 1) * tile, h)))
            else:
                tx += 1
    return rects


class FramebufferDisplay:
    """A display fed by host frames; get one with ``SpiceServer.add_framebuffer_display``."""

    def __init__(self, worker: DisplayWorker, width: int, height: int) -> None:
        self.worker = worker
        self.width = width
        self.height = height
        self._last: np.ndarray | None = None
        worker.attach_source(FramebufferSource(worker))
        worker.request(FramebufferSurface(width, height))

    # --- host side (any thread) ------------------------------------------------------------------

    def update(self, frame: np.ndarray, dirty: Iterable[tuple[int, int, int, int]] | None = None) -> int:
        """Show ``frame``; ``dirty`` rectangles are (left, top, right, bottom). Returns areas sent."""
        px = as_bgrx(frame)
        if px.shape != (self.height, self.width):
            raise ValueError(f"frame is {px.shape[1]}x{px.shape[0]}, display is {self.width}x{self.height}")
        if dirty is None:
            rects = dirty_tiles(self._last, px)
        else:
            rects = []
            for left, top, right, bottom in dirty:
                left, top = max(0, left), max(0, top)
                right, bottom = min(self.width, right), min(self.height, bottom)
                if right > left and bottom > top:
                    rects.append((left, top, right, bottom))
        self._last = px.copy()
        if rects:
            tiles = [(x0, y0, np.ascontiguousarray(px[y0:y1, x0:x1])) for x0, y0, x1, y1 in rects]
            self.worker.post(FramebufferFrame(tiles))
        return len(rects)

    def resize(self, width: int, height: int) -> None:
        """Change the display size (a new primary surface; clients follow)."""
        self.width, self.height = width, height
        self._last = None
        self.worker.request(FramebufferSurface(width, height))

    def set_cursor(self, shape: CursorShape | None, x: int, y: int, visible: bool = True) -> None:
        self.worker.post(SetCursor(shape, x, y, visible))

    def move_cursor(self, x: int, y: int) -> None:
        self.worker.post(MoveCursor(x, y))

    def hide_cursor(self) -> None:
        self.worker.post(HideCursor())

    def screendump(self, path: str | os.PathLike[str] | IO[bytes]) -> None:
        """Write the server's current picture as PNG (QEMU ``screendump``)."""
        self.worker.screendump(path)

    def snapshot(self) -> np.ndarray:
        """A copy of the server's canvas of the primary surface."""
        return self.worker.snapshot()


class FramebufferSource(CommandSource):
    """The framebuffer display's side on the worker thread: frames become draws of the primary."""

    def __init__(self, worker: DisplayWorker) -> None:
        self.worker = worker

    def handlers(self) -> Mapping[type, Callable[[Any], object]]:
        return {FramebufferFrame: self._apply}

    def _apply(self, msg: FramebufferFrame) -> None:
        w = self.worker
        if 0 not in w.surfaces:
            return
        for left, top, pixels in msg.tiles:
            h, wd = pixels.shape
            if left + wd > w.surfaces[0].width or top + h > w.surfaces[0].height:
                continue  # a frame from before a resize
            data = pixels.tobytes()
            image_id = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
            image = d.Image(
                descriptor=d.ImageDescriptor(id=image_id, type=ImageType.BITMAP, flags=QXL_IMAGE_CACHE, width=wd, height=h),
                bitmap=d.BitmapData(format=BitmapFmt.BIT32, flags=BitmapFlags.TOP_DOWN, x=wd, y=h, stride=wd * 4, palette=None, data=data),
            )
            base = d.DisplayBase(surface_id=0, box=Rect(top=top, left=left, bottom=top + h, right=left + wd), clip=d.Clip(type=ClipType.NONE))
            op = d.Copy(src_bitmap=image, src_area=Rect(top=0, left=0, bottom=h, right=wd), rop_descriptor=8, scale_mode=1, mask=d.QMask(flags=0, pos=Point(x=0, y=0), bitmap=None))
            w.apply(Draw(make_drawable(0, base, op)))
