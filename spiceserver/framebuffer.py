"""The framebuffer path: a host without a QXL guest driver hands numpy frames, the library does the rest.

Counterpart of QEMU ``ui/spice-display.c`` (``qemu_spice_create_update``: dirty areas of a guest
framebuffer become QXL drawables for spice-server). Here the host calls :meth:`FramebufferDisplay.update`
with a frame and, optionally, the rectangles it knows changed; otherwise the library finds the dirty
tiles itself by comparing with the previous frame (numpy, 64x64 tiles). Each dirty area becomes a
DRAW_COPY of a bitmap on the primary surface, identified by a 64-bit hash of its pixels (xxh3) so that
content a client has seen before can come from its pixmap cache.

Thread-safe: ``update`` may be called from the host's emulation thread; the work happens on the
display worker thread. Frames reach it as typed messages, handled by this display's command source
(:class:`FramebufferSource`, attached to the worker once), which turns their tiles into draws.
By default ``update`` copies what it keeps; with ``copy=False`` the host
promises never to write into that frame again and nothing is copied on the host's side.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import xxhash

from .proto.enums import BitmapFlags, BitmapFmt, ClipType, ImageType
from .proto.messages import display as d
from .proto.messages.base import Point, Rect
from .worker.drawable import make_drawable
from .worker.image_encoder import QXL_IMAGE_CACHE
from .worker.messages import FramebufferFrame, FramebufferSurface
from .worker.ops import Draw, HideCursor, MoveCursor, SetCursor
from .worker.stream_detect import MIN_SIZE, BoxNormaliser, union_box
from .worker.worker import CommandSource

if TYPE_CHECKING:
    from .worker.cursor_client import CursorShape
    from .worker.worker import DisplayWorker

__all__ = ["FramebufferDisplay", "FramebufferSource", "TILE", "as_bgrx", "changed_tiles", "dirty_tiles", "owned_copy", "tile_bytes", "tile_id", "tile_runs", "video_boxes"]

TILE = 64


Rect4 = tuple[int, int, int, int]


def as_bgrx(frame: np.ndarray) -> np.ndarray:
    """Accept (h, w) uint32 0x00RRGGBB or (h, w, 4) uint8 B,G,R,X; return (h, w) uint32.

    A view of ``frame`` whenever its pixels are laid out as 4 bytes each (rows may have any stride);
    a copy only for other layouts of the uint8 form.
    """
    if frame.dtype == np.uint32 and frame.ndim == 2:
        return frame
    if frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 4:
        if frame.strides[2] != 1 or frame.strides[1] != 4:
            frame = np.ascontiguousarray(frame)
        return frame.view("<u4")[:, :, 0]
    raise ValueError(f"frame must be (h, w) uint32 or (h, w, 4) uint8, not {frame.dtype} {frame.shape}")


def changed_tiles(old: np.ndarray, new: np.ndarray, tile: int = TILE) -> np.ndarray:
    """(tiles high, tiles wide) bool: which ``tile`` x ``tile`` tiles differ between two same-shape frames.

    One vectorised pass: pixels compared two at a time as 64-bit words where the layout allows
    (even width and tile, pixels 4 bytes apart), then OR-reduced over each band of ``tile`` rows
    (contiguous) and over each tile's columns.
    """
    h, w = new.shape
    th, tw = -(-h // tile), -(-w // tile)
    a, b, per = old, new, tile
    if tile % 2 == 0 and w % 2 == 0 and old.strides[1] == 4 and new.strides[1] == 4:
        a, b, per = old.view(np.uint64), new.view(np.uint64), tile // 2
    diff = a != b
    bands = np.zeros((th, tw * per), dtype=bool)
    full = h // tile
    if full:
        np.logical_or.reduce(diff[: full * tile].reshape(full, tile, -1), axis=1, out=bands[:full, : diff.shape[1]])
    if h % tile:
        np.logical_or.reduce(diff[full * tile :], axis=0, out=bands[full, : diff.shape[1]])
    return np.asarray(bands.reshape(th, tw, per).any(axis=2))


def tile_runs(changed: np.ndarray, width: int, height: int, tile: int = TILE) -> list[Rect4]:
    """Disjoint rectangles (l, t, r, b) covering exactly the ``True`` tiles.

    The tiles of a row are merged into runs, and a run continues the rectangle above it when that
    one spans the same columns, so a changed block of tiles is one rectangle (one drawable).
    """
    th, tw = changed.shape
    edges = np.zeros((th, tw + 1), dtype=np.int8)
    edges[:, :tw] = changed
    edges[:, 1:] -= changed  # +1 where a run starts, -1 just after it ends
    ys, xs = np.nonzero(edges)
    done: list[Rect4] = []
    open_: dict[tuple[int, int], Rect4] = {}  # (start, stop) columns -> rectangle reaching the row above
    grown: dict[tuple[int, int], Rect4] = {}
    row = -1
    for i in range(0, len(ys), 2):  # starts and stops alternate along each row
        ty, start, stop = int(ys[i]), int(xs[i]), int(xs[i + 1])
        if ty != row:
            if ty != row + 1:
                done.extend(grown.values())
                grown = {}
            done.extend(open_.values())
            open_, grown, row = grown, {}, ty
        above = open_.pop((start, stop), None)
        top = above[1] if above else ty * tile
        grown[(start, stop)] = (start * tile, top, min(stop * tile, width), min((ty + 1) * tile, height))
    done.extend(open_.values())
    done.extend(grown.values())
    return sorted(done, key=lambda r: (r[1], r[0]))


def dirty_tiles(old: np.ndarray | None, new: np.ndarray, tile: int = TILE) -> list[Rect4]:
    """Rectangles (l, t, r, b) covering every changed tile; tiles of a row are merged into runs."""
    h, w = new.shape
    if old is None or old.shape != new.shape:
        return [(0, 0, w, h)]
    if old.ctypes.data == new.ctypes.data and old.strides == new.strides:
        return []  # the same memory: nothing can differ
    return tile_runs(changed_tiles(old, new, tile), w, h, tile)


def video_boxes(rects: list[Rect4], boxes: BoxNormaliser, now_ms: float, width: int, height: int) -> list[Rect4]:
    """Dirty rectangles with each large, dense group of touching ones drawn as one stable box.

    A region repainted at video rate comes as a run of tiles (or host rectangles) whose extents
    jitter from frame to frame; stream detection needs the same box every time. Rectangles that
    touch are grouped; a group whose bounding box is at least :data:`MIN_SIZE` pixels and at least
    half covered becomes one rectangle, its box normalised by ``boxes``
    (:class:`~spiceserver.worker.stream_detect.BoxNormaliser`: the box it returns contains the
    group, so nothing changed is left out). Smaller or sparse groups stay as they are.
    """
    groups: list[list[Rect4]] = []
    for r in rects:
        touching = [g for g in groups if any(_touch(r, o) for o in g)]
        merged = [r]
        for g in touching:
            merged.extend(g)
            groups.remove(g)
        groups.append(merged)
    out: list[Rect4] = []
    for g in groups:
        box = union_box(g)
        if box is None:
            continue
        area = (box[2] - box[0]) * (box[3] - box[1])
        if area < MIN_SIZE or 2 * sum((r[2] - r[0]) * (r[3] - r[1]) for r in g) < area:
            out.extend(g)
            continue
        x0, y0, x1, y1 = boxes.normalise(box, now_ms)
        out.append((max(0, x0), max(0, y0), min(width, x1), min(height, y1)))
    return out


def _touch(a: Rect4, b: Rect4) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def tile_id(data: bytes | memoryview, width: int) -> int:
    """The 64-bit image id of a tile's pixels: xxh3 of its bytes, seeded with its width.

    Same pixels, same id (so content seen before is a pixmap-cache hit); the width in the seed keeps
    two tiles of equal bytes but different shapes apart. ``data`` is the tile's bytes, row after row
    (``memoryview(array)`` of a C-contiguous array hashes it in place, without a copy).
    """
    return xxhash.xxh3_64_intdigest(data, seed=width)


def owned_copy(area: np.ndarray) -> np.ndarray:
    """A copy of ``area`` as a read-only C-contiguous array over a ``bytes`` object (see :func:`tile_bytes`)."""
    return np.ndarray(area.shape, np.uint32, buffer=area.tobytes())


def tile_bytes(pixels: np.ndarray) -> bytes:
    """The tile's pixels as bytes, row after row: the bytes under an :func:`owned_copy` as they are."""
    base: object = pixels.base  # numpy types it as an array; an array over a buffer keeps the buffer
    if type(base) is bytes and pixels.flags.c_contiguous and pixels.nbytes == len(base):
        return base
    return pixels.tobytes()


class FramebufferDisplay:
    """A display fed by host frames; get one with ``SpiceServer.add_framebuffer_display``."""

    def __init__(self, worker: DisplayWorker, width: int, height: int) -> None:
        self.worker = worker
        self.width = width
        self.height = height
        self._last: np.ndarray | None = None
        #: stable boxes for a region repainted at video rate, so that it can become a stream
        self._boxes = BoxNormaliser(tolerance=TILE, min_area=MIN_SIZE) if worker.settings.streaming_video != "off" else None
        worker.attach_source(FramebufferSource(worker))
        worker.request(FramebufferSurface(width, height))

    # --- host side (any thread) ------------------------------------------------------------------

    def update(self, frame: np.ndarray, dirty: Iterable[Rect4] | None = None, *, copy: bool = True) -> int:
        """Show ``frame``; ``dirty`` rectangles are (left, top, right, bottom). Returns areas sent.

        Without ``dirty`` the library diffs against the previous frame, 64x64 tiles at a time; with
        it, nothing is diffed and only those areas are sent (they must cover every change).

        ``copy=False`` is the host's promise never to write into ``frame`` (or the array it views)
        again: the server then keeps references instead of copies (the areas it has still to draw,
        and the frame as the base of the next diff). The default ``copy=True`` lets the host paint
        into the same buffer again as soon as ``update`` returns.
        """
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
        if self._boxes is not None and rects:
            rects = video_boxes(rects, self._boxes, time.monotonic() * 1000.0, self.width, self.height)
        if copy:  # one copy each, as the bytes the worker's bitmap needs (C-contiguous, read-only)
            tiles = [(x0, y0, owned_copy(px[y0:y1, x0:x1])) for x0, y0, x1, y1 in rects]
        else:  # views of the host's frame
            tiles = [(x0, y0, px[y0:y1, x0:x1]) for x0, y0, x1, y1 in rects]
        self._keep(px, tiles, copy)
        if tiles:
            self.worker.post(FramebufferFrame(tiles))
        return len(tiles)

    #: whether ``_last`` is the display's own array (``update(copy=True)`` may write into it)
    _owns_last = False

    def _keep(self, px: np.ndarray, tiles: list[tuple[int, int, np.ndarray]], copy: bool) -> None:
        """Keep what the display now shows as the base of the next diff, copying as little as possible."""
        last = self._last
        if not copy:
            self._last, self._owns_last = px, False  # the host's promise covers it
        elif len(tiles) == 1 and tiles[0][2].shape == px.shape:
            self._last, self._owns_last = tiles[0][2], False  # the whole frame: share the worker's copy
        elif last is None or last.shape != px.shape:
            self._last, self._owns_last = px.copy(), True
        else:
            if not self._owns_last:
                last = last.copy()
                self._last, self._owns_last = last, True
            for x0, y0, pixels in tiles:
                h, w = pixels.shape
                last[y0 : y0 + h, x0 : x0 + w] = pixels

    def resize(self, width: int, height: int) -> None:
        """Change the display size (a new primary surface; clients follow)."""
        self.width, self.height = width, height
        self._last = None
        self.worker.request(FramebufferSurface(width, height))

    def set_cursor(self, shape: CursorShape | None, x: int, y: int, visible: bool = True) -> None:
        """Set the cursor to ``shape`` (None: no shape) at ``(x, y)``, shown when ``visible``; clients follow."""
        self.worker.post(SetCursor(shape, x, y, visible))

    def move_cursor(self, x: int, y: int) -> None:
        """Move the cursor to ``(x, y)``."""
        self.worker.post(MoveCursor(x, y))

    def hide_cursor(self) -> None:
        """Hide the cursor."""
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
        """Frames are this source's only message."""
        return {FramebufferFrame: self._apply}

    def _apply(self, msg: FramebufferFrame) -> None:
        w = self.worker
        if 0 not in w.surfaces:
            return
        for left, top, pixels in msg.tiles:
            h, wd = pixels.shape
            if left + wd > w.surfaces[0].width or top + h > w.surfaces[0].height:
                continue  # a frame from before a resize
            data = tile_bytes(pixels)
            image_id = tile_id(data, wd)
            image = d.Image(
                descriptor=d.ImageDescriptor(id=image_id, type=ImageType.BITMAP, flags=QXL_IMAGE_CACHE, width=wd, height=h),
                bitmap=d.BitmapData(format=BitmapFmt.BIT32, flags=BitmapFlags.TOP_DOWN, x=wd, y=h, stride=wd * 4, palette=None, data=data),
            )
            base = d.DisplayBase(surface_id=0, box=Rect(top=top, left=left, bottom=top + h, right=left + wd), clip=d.Clip(type=ClipType.NONE))
            op = d.Copy(src_bitmap=image, src_area=Rect(top=0, left=0, bottom=h, right=wd), rop_descriptor=8, scale_mode=1, mask=d.QMask(flags=0, pos=Point(x=0, y=0), bitmap=None))
            w.apply(Draw(make_drawable(0, base, op)))
