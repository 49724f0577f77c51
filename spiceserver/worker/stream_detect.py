"""Video stream detection, as libspice does it (sans-IO): which draws are the frames of a video.

Counterpart of spice ``server/video-stream.cpp`` (``is_next_stream_frame``, ``video_stream_add_frame``,
``is_stream_start``, ``update_copy_graduality``, ``video_stream_trace_update``,
``video_stream_maintenance``, ``video_stream_trace_add_drawable``, ``display_channel_create_stream``,
``attach_stream``, ``video_stream_timeout``) and ``server/display-channel.cpp``
(``drawable_can_stream``, ``stop_streams``). No I/O, no threads, no clock: every call that needs the
time takes it in milliseconds (monotonic, int or float). Nothing here is wired to the worker yet.

Theory of operation
-------------------
The worker describes each opaque draw that could be a video frame as a :class:`Frame` (surface, box,
source size, time, whether it is *streamable*, and in ``filter`` mode how photo-like its bitmap is)
and hands it to :meth:`StreamDetector.frame`. The detector answers with at most one event:

* :class:`FrameForStream` -- the frame belongs to a live stream (libspice ``attach_stream``): its box
  *contains* the stream's destination box, is at most twice its area, comes at most
  :data:`STREAM_CONTINUOUS_MAX_DELTA_MS` after the stream's last frame and has the same row order.
  ``sized`` is set when its box or source size differs from the stream's (STREAM_DATA_SIZED for
  clients with SIZED_STREAM, an ordinary image otherwise). Live streams are tried newest first.
* :class:`StreamStart` -- the frame completes a chain of same-geometry frames (libspice
  ``video_stream_add_frame`` / ``is_stream_start``): a free id in 0..49 was taken for the new stream
  and the frame is its first.
* ``None`` -- anything else: the frame is only remembered as a candidate.

A *chain* is a run of frames with an identical box and source size, each at most
:data:`STREAM_DETECTION_MAX_DELTA_MS` after the previous one. As in libspice, a chain's
``frames_count`` is the number of frames that *continued* it (its first frame counts 0), so the
stream starts on the frame that brings ``frames_count`` to :data:`FRAMES_START_CONDITION` -- the
21st same-geometry draw -- provided at least :data:`GRADUAL_FRAMES_START_CONDITION` of the counted
frames were gradual. In ``all`` mode every frame counts as gradual (libspice sets
``BITMAP_GRADUAL_INVALID``, which is not LOW). In ``filter`` mode a frame is gradual unless its
bitmap's graduality level is LOW (text / UI-like, :mod:`spiceserver.codecs.graduality`); a frame
whose graduality is not available (``gradual=None``) counts as gradual, as libspice's NOT_AVAIL
does. A gradual frame more than :data:`FRAMES_RESET_CONDITION` frames after the chain's last gradual
one resets the chain's counts to 1. Graduality is computed (a callable is called) only for frames
that continue a chain, as libspice computes it only in ``video_stream_add_frame``.

A frame stamped earlier than the frame it would follow matches nothing (libspice subtracts unsigned
nanoseconds, so a negative gap is a huge one); the worker should stamp frames with a monotonic clock.

A frame that continues a chain while all :data:`NUM_STREAMS` ids are taken keeps the chain going:
the next frame tries again, so a stream starts as soon as an id is free (libspice does the same: a
failed ``display_channel_create_stream`` leaves the counts on the drawable).

:meth:`StreamDetector.tick` stops every stream whose last frame is :data:`STREAM_TIMEOUT_MS` old
(:class:`StreamTimeout`); :meth:`StreamDetector.next_timeout` is when the worker should next call it
(libspice ``display_channel_get_streams_timeout``). :meth:`StreamDetector.surface_destroyed` and
:meth:`StreamDetector.stop_all` stop streams for other reasons (:class:`StreamStop`). An id is free
again as soon as its stop event is returned: the worker must send STREAM_DESTROY before acting on a
later :class:`StreamStart`, which it does by handling events in order.

How the candidate trace stands in for libspice's tree
------------------------------------------------------
libspice matches a new streamable drawable against the drawable of the same region it replaces in
its tree (``current_add_equal`` / ``__exclude_region`` -> ``video_stream_maintenance``), and against
a ring of the last 8 streamable drawables removed from the tree (``items_trace``,
``video_stream_trace_update``), so a frame whose predecessor was covered and dropped still continues
the count. spiceserver's tree (:mod:`spiceserver.worker.tree`) renders eagerly and is not consulted:
instead each surface keeps its own bounded trace, the chains' newest frames, at most one per exact
geometry (box and source size) and at most ``trace_size`` of them (default :data:`NUM_TRACE_ITEMS`,
libspice's ring size); a frame that continues a chain replaces its entry, a new geometry evicts the
entry with the oldest frame. Since only a chain's newest frame can ever be matched (times only move
forward, and a match must be within 200 ms of it), this gives the same answers as the tree plus
ring, with one difference: libspice also keeps matching any number of areas whose drawables stay
visible in its tree, while here more than ``trace_size`` distinct geometries drawn within one
frame interval push the oldest out. The video's chain is refreshed at every frame, so it is the
last to go. Frames attached to a stream never enter the trace (libspice skips drawables with a
stream), nor does a chain's frame once it started a stream.

The framebuffer path
--------------------
A host that repaints a video region gives dirty rectangles that may jitter by a few pixels from one
frame to the next; an exact-geometry chain would never form. :class:`BoxNormaliser` maps each dirty
box to a stable one (rule in its docstring); the framebuffer source draws the normalised box (the
pixels are all in the host's frame) and hands that box to the detector. A region the host reports
as several rectangles (or that the tile differ splits into runs) is one box first: the caller joins
the rectangles that touch (:func:`union_box`) before normalising.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from ..codecs.graduality import Graduality, graduality_level
from ..proto.enums import BitmapFlags, ImageType
from ..proto.messages import display as d
from .drawable import ROP_PUT, Drawable, is_opaque

__all__ = [
    "Box",
    "BoxNormaliser",
    "FRAMES_RESET_CONDITION",
    "FRAMES_START_CONDITION",
    "Frame",
    "FrameForStream",
    "GRADUAL_FRAMES_START_CONDITION",
    "MAX_FPS",
    "MIN_SIZE",
    "NUM_STREAMS",
    "NUM_TRACE_ITEMS",
    "STREAM_CONTINUOUS_MAX_DELTA_MS",
    "STREAM_DETECTION_MAX_DELTA_MS",
    "STREAM_TIMEOUT_MS",
    "Stream",
    "StreamDetector",
    "StreamEvent",
    "StreamStart",
    "StreamStop",
    "StreamTimeout",
    "StreamingVideo",
    "bitmap_is_gradual",
    "can_stream",
    "frame_of",
    "union_box",
]

#: ``streaming-video``: QEMU's option values (libspice SPICE_STREAM_VIDEO_OFF / ALL / FILTER)
StreamingVideo = Literal["off", "all", "filter"]

STREAM_DETECTION_MAX_DELTA_MS = 200  # RED_STREAM_DETECTION_MAX_DELTA: gap within a chain
STREAM_CONTINUOUS_MAX_DELTA_MS = 1000  # RED_STREAM_CONTINUOUS_MAX_DELTA: gap within a stream
STREAM_TIMEOUT_MS = 1000  # RED_STREAM_TIMEOUT
FRAMES_START_CONDITION = 20  # RED_STREAM_FRAMES_START_CONDITION
GRADUAL_FRAMES_START_CONDITION = 0.2  # RED_STREAM_GRADUAL_FRAMES_START_CONDITION
FRAMES_RESET_CONDITION = 100  # RED_STREAM_FRAMES_RESET_CONDITION
MIN_SIZE = 96 * 96  # RED_STREAM_MIN_SIZE (source area, filter mode)
INPUT_FPS_TIMEOUT_MS = 5000  # RED_STREAM_INPUT_FPS_TIMEOUT
MAX_FPS = 30  # cap of the input-fps estimate
NUM_STREAMS = 50  # display-limits.h
NUM_TRACE_ITEMS = 8  # display-channel-private.h: the ring of removed drawables

#: (left, top, right, bottom), right and bottom exclusive
Box = tuple[int, int, int, int]


def _area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def _contains(outer: Box, inner: Box) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]


def union_box(boxes: Iterable[Box]) -> Box | None:
    """The bounding box of ``boxes`` (an iterable of :data:`Box`), empty ones ignored; None if none."""
    out: Box | None = None
    for b in boxes:
        if b[2] <= b[0] or b[3] <= b[1]:
            continue
        out = b if out is None else (min(out[0], b[0]), min(out[1], b[1]), max(out[2], b[2]), max(out[3], b[3]))
    return out


# --- input ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """One candidate frame: an opaque draw the worker took in at ``time_ms``.

    Args:
        surface_id: the surface drawn on.
        box: the draw's bounding box (libspice ``red_drawable->bbox``).
        src_width, src_height: the size of the source area (``u.copy.src_area``).
        time_ms: when the worker took the draw in (``creation_time``), monotonic milliseconds.
        streamable: libspice ``drawable_can_stream`` (see :func:`can_stream`); a frame that is not
            streamable never matches anything.
        gradual: in ``filter`` mode, whether the bitmap is photo-like (graduality level not LOW); None
            when not available (counts as gradual); or a callable computing it, called at most once
            and only when the frame continues a chain. Ignored in ``all`` mode.
        top_down: the bitmap's TOP_DOWN flag; a stream only takes frames with its own row order.
        payload: anything the caller wants back in the events (its Drawable, say).
    """

    surface_id: int
    box: Box
    src_width: int
    src_height: int
    time_ms: float
    streamable: bool = True
    gradual: bool | Callable[[], bool | None] | None = None
    top_down: bool = True
    payload: Any = field(default=None, compare=False)

    @property
    def src_area(self) -> int:
        """The source's pixel count (what filter mode's 96x96 minimum applies to)."""
        return max(0, self.src_width) * max(0, self.src_height)


def can_stream(op: Any, *, primary: bool, mode: str) -> bool:
    """libspice ``drawable_can_stream`` on a proto draw body (``d.Copy`` etc.).

    True for an opaque DRAW_COPY (ROP PUT, no mask) of a fresh bitmap (image type BITMAP, not from
    the cache nor already compressed) on the primary surface; in ``filter`` mode its source area must
    also be at least 96x96 (:data:`MIN_SIZE`). Always False in ``off`` mode. (A COPY_BITS has no
    ``d.Copy`` body, so it is never streamable, as libspice's shadowed drawables are not.)
    """
    if mode == "off" or not primary or not isinstance(op, d.Copy):
        return False
    if op.rop_descriptor != ROP_PUT or not is_opaque(op):
        return False
    img = op.src_bitmap
    if img is None or img.descriptor.type != ImageType.BITMAP:
        return False
    if mode == "filter":
        a = op.src_area
        if max(0, a.right - a.left) * max(0, a.bottom - a.top) < MIN_SIZE:
            return False
    return True


def bitmap_is_gradual(pixels: np.ndarray, *, rgb16: bool = False) -> bool:
    """Whether a bitmap counts as a gradual (video-like) frame: its graduality level is not LOW.

    ``pixels`` as :func:`spiceserver.codecs.graduality.graduality_level` takes them ((h, w) uint32
    0x00RRGGBB, or uint16 x555 with ``rgb16``).
    """
    return graduality_level(pixels, rgb16=rgb16) != Graduality.LOW


def frame_of(
    drawable: Drawable,
    *,
    time_ms: float,
    primary: bool,
    mode: str,
    gradual: bool | Callable[[], bool | None] | None = None,
) -> Frame:
    """The :class:`Frame` for a worker :class:`~spiceserver.worker.drawable.Drawable`.

    ``streamable`` comes from :func:`can_stream`; the box from the drawable's base, the source size
    from its copy's ``src_area`` (0x0 for other ops), ``top_down`` from the bitmap's flags.
    """
    op = drawable.op
    b = drawable.base.box
    w = h = 0
    top_down = True
    if isinstance(op, d.Copy):
        w, h = op.src_area.right - op.src_area.left, op.src_area.bottom - op.src_area.top
        img = op.src_bitmap
        if img is not None and img.bitmap is not None:
            top_down = bool(img.bitmap.flags & BitmapFlags.TOP_DOWN)
    return Frame(
        surface_id=drawable.surface_id,
        box=(b.left, b.top, b.right, b.bottom),
        src_width=w,
        src_height=h,
        time_ms=time_ms,
        streamable=can_stream(op, primary=primary, mode=mode),
        gradual=gradual,
        top_down=top_down,
        payload=drawable,
    )


# --- output --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamStart:
    """A new stream: send STREAM_CREATE (``src`` size, ``dest`` box, TOP_DOWN), then ``frame``."""

    stream_id: int
    surface_id: int
    dest: Box
    src_width: int
    src_height: int
    top_down: bool
    input_fps: int  # estimated from the chain that started it, at most MAX_FPS
    frame: Frame


@dataclass(frozen=True, slots=True)
class FrameForStream:
    """``frame`` is the stream's next frame; ``sized`` when its box or source size is not the stream's."""

    stream_id: int
    frame: Frame
    sized: bool


@dataclass(frozen=True, slots=True)
class StreamTimeout:
    """No frame for STREAM_TIMEOUT_MS: end the stream (empty clip, lossless upgrade, STREAM_DESTROY)."""

    stream_id: int
    surface_id: int


@dataclass(frozen=True, slots=True)
class StreamStop:
    """The stream ends for ``reason`` ("surface destroyed", "stopped"); ended as on a timeout."""

    stream_id: int
    surface_id: int
    reason: str


StreamEvent = StreamStart | FrameForStream | StreamTimeout | StreamStop


# --- state ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Stream:
    """A live stream (libspice ``VideoStream``): its geometry and its last frame's time."""

    stream_id: int
    surface_id: int
    dest: Box
    src_width: int
    src_height: int
    top_down: bool
    last_time: float
    input_fps: int
    num_input_frames: int = 0
    input_fps_start_time: float = 0.0
    frames: int = 1  # frames attached so far, the first included


@dataclass(slots=True)
class _Chain:
    """The newest frame of a chain (libspice's drawable counts, or an ``ItemTrace`` entry)."""

    box: Box
    src_width: int
    src_height: int
    time: float
    first_frame_time: float
    frames_count: int = 0
    gradual_frames_count: int = 0
    last_gradual_frame: int = 0


def _gradual(frame: Frame) -> bool:
    g = frame.gradual
    if callable(g):
        g = g()
    return g is None or bool(g)


class StreamDetector:
    """Stream detection for one display channel (libspice keeps it per ``DisplayChannel``).

    Args:
        mode: ``"off"``, ``"all"`` or ``"filter"`` (ServerConfig ``streaming_video``).
        trace_size: how many chain heads each surface keeps (see the module docstring).

    Raises:
        ValueError: an unknown mode, or a trace size below 1.
    """

    def __init__(self, mode: str = "filter", *, trace_size: int = NUM_TRACE_ITEMS) -> None:
        self.mode = mode  # validated by the setter
        if trace_size < 1:
            raise ValueError(f"trace_size must be at least 1, not {trace_size}")
        self._trace_size = trace_size
        self._streams: dict[int, Stream] = {}  # insertion order: oldest first
        #: after :meth:`frame` returned None: how many frames continued the chain it joined (0: it
        #: started one or was not streamable) and how many of those were gradual
        self.last_chain: tuple[int, int] = (0, 0)
        self._traces: dict[int, dict[tuple[Box, int, int], _Chain]] = {}

    @property
    def mode(self) -> str:
        """The ``streaming-video`` mode; changing it affects only later frames (live streams stay)."""
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in get_args(StreamingVideo):
            raise ValueError(f"streaming video mode must be one of {get_args(StreamingVideo)}, not {mode!r}")
        self._mode = mode

    @property
    def streams(self) -> dict[int, Stream]:
        """The live streams by id (a copy)."""
        return dict(self._streams)

    def trace(self, surface_id: int) -> list[tuple[Box, int, float]]:
        """``(box, frames_count, time)`` of each chain head kept for ``surface_id``, oldest first."""
        return [(c.box, c.frames_count, c.time) for c in self._traces.get(surface_id, {}).values()]

    # -- frames --

    def _streamable(self, frame: Frame) -> bool:
        if self._mode == "off" or not frame.streamable:
            return False
        return self._mode != "filter" or frame.src_area >= MIN_SIZE

    def frame(self, frame: Frame) -> StreamStart | FrameForStream | None:
        """Take in one candidate frame; say whether it joins a stream or starts one.

        libspice ``video_stream_trace_update`` / ``video_stream_maintenance``: live streams first
        (newest first, container match), then the surface's chain of the same geometry.
        """
        self.last_chain = (0, 0)
        if not self._streamable(frame):
            return None
        now = frame.time_ms
        for stream in reversed(list(self._streams.values())):
            if stream.surface_id == frame.surface_id and self._continues_stream(frame, stream):
                return self._attach(stream, frame)
        trace = self._traces.setdefault(frame.surface_id, {})
        key = (frame.box, frame.src_width, frame.src_height)
        prev = trace.pop(key, None)
        if prev is not None and 0 <= now - prev.time <= STREAM_DETECTION_MAX_DELTA_MS:
            chain = self._add_frame(prev, frame)
            if chain.frames_count >= FRAMES_START_CONDITION and (
                chain.gradual_frames_count >= GRADUAL_FRAMES_START_CONDITION * chain.frames_count
            ):
                start = self._create_stream(chain, frame)
                if start is not None:
                    return start  # the frame belongs to the stream: it leaves the trace
        else:
            chain = _Chain(frame.box, frame.src_width, frame.src_height, now, now)
        trace[key] = chain
        self.last_chain = (chain.frames_count, chain.gradual_frames_count)
        while len(trace) > self._trace_size:
            oldest = min(trace, key=lambda k: trace[k].time)
            del trace[oldest]
        return None

    def _continues_stream(self, frame: Frame, stream: Stream) -> bool:
        """``is_next_stream_frame`` in container mode."""
        if not 0 <= frame.time_ms - stream.last_time <= STREAM_CONTINUOUS_MAX_DELTA_MS:
            return False  # libspice's unsigned difference: an earlier time never matches
        if not _contains(frame.box, stream.dest):
            return False
        if _area(frame.box) > 2 * _area(stream.dest):
            return False
        return frame.top_down == stream.top_down

    def _add_frame(self, prev: _Chain, frame: Frame) -> _Chain:
        """``video_stream_add_frame``: the counts of ``prev``'s chain, continued by ``frame``."""
        count = prev.frames_count + 1
        gradual_count = prev.gradual_frames_count
        last_gradual = prev.last_gradual_frame
        if self._mode != "filter" or _gradual(frame):
            if count - last_gradual > FRAMES_RESET_CONDITION:
                count = gradual_count = 1
            else:
                gradual_count += 1
            last_gradual = count
        return _Chain(
            frame.box, frame.src_width, frame.src_height, frame.time_ms, prev.first_frame_time,
            count, gradual_count, last_gradual,
        )  # fmt: skip

    def _create_stream(self, chain: _Chain, frame: Frame) -> StreamStart | None:
        """``display_channel_create_stream``: the lowest free id, or None when all 50 are taken."""
        if len(self._streams) >= NUM_STREAMS:
            return None
        sid = next(i for i in range(NUM_STREAMS) if i not in self._streams)
        duration = frame.time_ms - chain.first_frame_time
        if duration > 1000 * chain.frames_count / MAX_FPS:
            fps = max(1, int((1000 * chain.frames_count + duration / 2) // duration))
        else:
            fps = MAX_FPS
        self._streams[sid] = Stream(
            sid, frame.surface_id, frame.box, frame.src_width, frame.src_height, frame.top_down,
            frame.time_ms, fps, input_fps_start_time=frame.time_ms,
        )  # fmt: skip
        return StreamStart(
            sid, frame.surface_id, frame.box, frame.src_width, frame.src_height, frame.top_down, fps, frame
        )

    def _attach(self, stream: Stream, frame: Frame) -> FrameForStream:
        """``attach_stream``: the stream's last time, and its input fps re-estimated every 5 s."""
        now = frame.time_ms
        stream.last_time = now
        stream.frames += 1
        duration = now - stream.input_fps_start_time
        if duration >= INPUT_FPS_TIMEOUT_MS:
            stream.input_fps = max(1, int((stream.num_input_frames * 1000 + duration / 2) // duration))
            stream.num_input_frames = 0
            stream.input_fps_start_time = now
        else:
            stream.num_input_frames += 1
        sized = frame.box != stream.dest or (frame.src_width, frame.src_height) != (stream.src_width, stream.src_height)
        return FrameForStream(stream.stream_id, frame, sized)

    # -- time and stops --

    def next_timeout(self) -> float | None:
        """When :meth:`tick` next has a stream to time out (ms), or None without streams."""
        if not self._streams:
            return None
        return min(s.last_time for s in self._streams.values()) + STREAM_TIMEOUT_MS

    def tick(self, now_ms: float) -> list[StreamTimeout]:
        """``video_stream_timeout``: stop every stream whose last frame is 1 s old or older."""
        out = []
        for sid, s in list(self._streams.items()):
            if now_ms >= s.last_time + STREAM_TIMEOUT_MS:
                del self._streams[sid]
                out.append(StreamTimeout(sid, s.surface_id))
        return out

    def surface_destroyed(self, surface_id: int) -> list[StreamStop]:
        """``stop_streams``: the surface's streams stop and its trace is forgotten."""
        self._traces.pop(surface_id, None)
        return self._stop(lambda s: s.surface_id == surface_id, "surface destroyed")

    def stop_all(self, reason: str = "stopped") -> list[StreamStop]:
        """``video_stream_detach_and_stop``: every stream stops (codec change, migration...)."""
        return self._stop(lambda s: True, reason)

    def _stop(self, which: Callable[[Stream], bool], reason: str) -> list[StreamStop]:
        out = []
        for sid, s in list(self._streams.items()):
            if which(s):
                del self._streams[sid]
                out.append(StreamStop(sid, s.surface_id, reason))
        return out


# --- the framebuffer path ------------------------------------------------------------------------


@dataclass(slots=True)
class _Family:
    box: Box
    time: float


class BoxNormaliser:
    """Stable boxes for a framebuffer's jittering dirty rectangles (one per surface).

    Rule: the normaliser keeps up to ``size`` *families*, each a box (the union of its members) and
    the time of its last member. A dirty box joins a family, seen within ``max_gap_ms``, when every
    one of its four edges is within ``tolerance`` pixels of the family box's edge (so each contains
    the other grown by ``tolerance``); the family box becomes the union of the two and is returned.
    The newest such family wins. ``tolerance`` is the jitter's *range*: edges that wander within
    ``tolerance`` pixels (say left edges between x and x + tolerance) always join.
    Otherwise the box starts a new family (evicting the stalest one) and is returned as it is.

    So a region repainted with rectangles that move by at most ``tolerance`` px gives the same box
    once the family has grown to cover the jitter (a few frames), and a stream forms. The returned
    box always contains the dirty box: the caller draws it from the host's frame, and nothing
    changed is lost. A region that keeps moving one way (a dragged window) does not grow a family
    without end: once its edge is more than ``tolerance`` from the family's, it starts a new one.
    A box that is small (area under ``min_area``) is returned unchanged and not remembered.

    Args:
        tolerance: the largest spread of an edge's positions, in pixels.
        max_gap_ms: a family not seen for longer is not joined (the chain rule's 200 ms).
        size: how many families are kept.
        min_area: smaller boxes are left alone (they cannot be filter-mode streams anyway).
    """

    def __init__(
        self,
        *,
        tolerance: int = 16,
        max_gap_ms: float = STREAM_DETECTION_MAX_DELTA_MS,
        size: int = NUM_TRACE_ITEMS,
        min_area: int = 0,
    ) -> None:
        if tolerance < 0 or size < 1:
            raise ValueError("tolerance must be >= 0 and size >= 1")
        self.tolerance = tolerance
        self.max_gap_ms = max_gap_ms
        self.size = size
        self.min_area = min_area
        self._families: list[_Family] = []

    def __iter__(self) -> Iterator[Box]:
        return (f.box for f in self._families)

    def normalise(self, box: Box, now_ms: float) -> Box:
        """The box to draw (and detect on) for dirty ``box`` at ``now_ms``; contains ``box``."""
        if box[2] <= box[0] or box[3] <= box[1] or _area(box) < self.min_area:
            return box
        t = self.tolerance
        best: _Family | None = None
        for fam in self._families:
            if now_ms - fam.time > self.max_gap_ms:
                continue
            near = all(abs(a - b) <= t for a, b in zip(box, fam.box, strict=True))
            if near and (best is None or fam.time > best.time):
                best = fam
        if best is not None:
            fb = best.box
            best.box = (min(fb[0], box[0]), min(fb[1], box[1]), max(fb[2], box[2]), max(fb[3], box[3]))
            best.time = now_ms
            return best.box
        self._families.append(_Family(box, now_ms))
        if len(self._families) > self.size:
            self._families.remove(min(self._families, key=lambda f: f.time))
        return box
