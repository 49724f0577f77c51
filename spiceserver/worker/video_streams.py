"""The worker's video streams: which draws are frames, and what every client is told about them.

Counterpart of the display-channel half of spice ``server/video-stream.cpp`` (``video_stream_timeout``,
``video_stream_trace_update`` / ``video_stream_maintenance`` callers, ``display_channel_create_stream``,
``video_stream_stop``, ``stop_streams``, ``video_stream_detach_behind``,
``streams_update_visible_region``) and of the stream parts of ``display-channel.cpp``
(``display_channel_add_drawable``: the frame's mm-time stamp, ``drawable_can_stream``).

For each draw the worker calls :meth:`VideoStreams.take` *before* rendering it:

1. A draw that may be a frame (an opaque copy of a fresh bitmap on the primary surface) goes to the
   :class:`~spiceserver.worker.stream_detect.StreamDetector`, stamped with the multimedia clock; the
   answer is the :class:`Taken` result: a new stream, or a frame of a live one, or nothing.
2. Any other draw that meets a stream's visible area on some client: an opaque one shrinks that
   client's clip (STREAM_CLIP), so late frames do not paint over it; one that reads the pixels under
   it first gets the area sent lossless (the frames there are lossy).

After the draw is rendered and entered into the tree, :meth:`VideoStreams.push` queues it: as a
stream's frame for clients that stream it, as an ordinary draw otherwise. :meth:`tick` ends streams
that had no frame for a second (empty clip, lossless upgrade, STREAM_DESTROY).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..codecs.graduality import Graduality, graduality_level
from ..mmtime import MediaClock
from ..proto.messages import display as d
from ..region import Region
from .drawable import Drawable
from .stream_detect import STREAM_DETECTION_MAX_DELTA_MS, FrameForStream, StreamDetector, StreamStart, frame_of
from .stream_items import frame_pixels

if TYPE_CHECKING:
    from .display_client import DisplayChannelClient
    from .surface import Surface

__all__ = ["LiveStream", "Taken", "VideoStreams", "LOSSY_CHAIN_FRAMES"]

#: frames a chain must have continued before its frames go lossy (JPEG) ahead of the stream
LOSSY_CHAIN_FRAMES = 5

log = logging.getLogger("spiceserver.streams")


@dataclass(slots=True)
class LiveStream:
    """A stream as the worker keeps it (libspice ``VideoStream``)."""

    stream_id: int
    surface_id: int
    dest: tuple[int, int, int, int]
    src_width: int
    src_height: int
    input_fps: int
    #: the last frame's drawable (a client arriving later starts with its region visible)
    current: Drawable | None = None


@dataclass(slots=True)
class Taken:
    """What :meth:`VideoStreams.take` made of a draw that is a stream's frame."""

    event: StreamStart | FrameForStream
    mm_time: int


class VideoStreams:
    """Stream detection and the streams' life cycle for one display worker.

    Args:
        mode: ``"off"``, ``"all"`` or ``"filter"`` (``ServerConfig.streaming_video``).
        clock: the multimedia clock frames are stamped with.
    """

    def __init__(self, mode: str, clock: MediaClock) -> None:
        self.detector = StreamDetector(mode)
        self.clock = clock
        self.streams: dict[int, LiveStream] = {}
        #: chains whose frames went lossy: (surface, box) -> time of the last frame (ms)
        self.lossy_chains: dict[tuple[int, tuple[int, int, int, int]], float] = {}
        self.stats = {"streams": 0, "frames": 0, "lossy_frames": 0, "lossless_after_chain": 0}

    # --- draws ----------------------------------------------------------------------------------

    def take(self, surface: Surface, drawable: Drawable, clients: Iterable[DisplayChannelClient]) -> Taken | None:
        """Before ``drawable`` is rendered: is it a frame; otherwise, does it touch a stream."""
        op = drawable.op
        if (
            isinstance(op, d.Copy) and drawable.opaque and surface.primary and self.detector.mode != "off"
        ):
            now = time.monotonic() * 1000.0
            gradual = None if self.detector.mode != "filter" else (lambda: _gradual(op))
            frame = frame_of(drawable, time_ms=now, primary=True, mode=self.detector.mode, gradual=gradual)
            event = self.detector.frame(frame)
            if event is not None:
                return Taken(event, self.clock.stamp())
            count, gradual_count = self.detector.last_chain
            if count >= LOSSY_CHAIN_FRAMES and gradual_count * 5 >= count:
                # a video about to become a stream: its frames go lossy meanwhile (beyond libspice,
                # which sends them lossless, as much as the next ten seconds of stream); the area is
                # sent lossless when the chain ends without a stream (:meth:`tick`)
                drawable.lossy_frame = True
                self.lossy_chains[(surface.id, frame.box)] = now
                self.stats["lossy_frames"] += 1
        if self.streams and surface.primary:
            region = drawable.region
            for dcc in clients:
                streams = dcc.streams
                if streams.agents:
                    if drawable.opaque:
                        streams.draw_over(region)
                    else:
                        streams.detach_behind(region | drawable.reads, surface)
        return None

    def push(self, drawable: Drawable, taken: Taken, clients: Iterable[DisplayChannelClient], generation: int) -> None:
        """After the frame is rendered: queue it for every client (a new stream is created first)."""
        event = taken.event
        sid = event.stream_id
        if isinstance(event, StreamStart):
            stream = LiveStream(sid, event.surface_id, event.dest, event.src_width, event.src_height, event.input_fps)
            # the stream takes over the chain's area (its end sends the area lossless)
            self.lossy_chains.pop((event.surface_id, event.dest), None)
            clients = list(clients)
            for dcc in clients:
                dcc.lossy_areas.discard((event.surface_id, event.dest))
            self.streams[sid] = stream
            self.stats["streams"] += 1
            log.info("stream %d: %dx%d at %s, %d fps", sid, event.src_width, event.src_height, event.dest, event.input_fps)
            total = self.area_total()
            for dcc in clients:
                if dcc.can_stream(stream.surface_id):
                    dcc.streams.create(stream, drawable.region, total)
            sized = False
        else:
            stream = self.streams[sid]
            sized = event.sized
        stream.current = drawable
        self.stats["frames"] += 1
        for dcc in clients:
            if dcc.can_stream(stream.surface_id):
                dcc.streams.frame(sid, drawable, taken.mm_time, sized, generation)
            else:
                dcc.push_drawable(drawable)

    def area_total(self) -> int:
        """The source area of all live streams (each stream's share of the starting bit rate)."""
        return sum(s.src_width * s.src_height for s in self.streams.values())

    # --- clients --------------------------------------------------------------------------------

    def client_ready(self, dcc: DisplayChannelClient) -> None:
        """A client finished its init: it gets every live stream (``dcc_create_all_streams``)."""
        total = self.area_total()
        for stream in self.streams.values():
            if dcc.can_stream(stream.surface_id):
                cur = stream.current
                dcc.streams.create(stream, cur.region if cur is not None else Region.from_rect(*stream.dest), total)

    # --- ends -----------------------------------------------------------------------------------

    def next_timeout(self) -> float | None:
        """Monotonic seconds at which :meth:`tick` has a stream to end or a lossy chain to follow up,
        None without either."""
        times = [t + STREAM_DETECTION_MAX_DELTA_MS for t in self.lossy_chains.values()]
        t = self.detector.next_timeout()
        if t is not None:
            times.append(t)
        return min(times) / 1000.0 if times else None

    def tick(self, surfaces: dict[int, Surface], clients: Iterable[DisplayChannelClient]) -> None:
        """End the streams that had no frame for a second (``video_stream_timeout``); send the area
        of a lossy chain that ended without a stream lossless."""
        if not self.streams and not self.lossy_chains:
            return
        now = time.monotonic() * 1000.0
        clients = list(clients)
        for key, t in list(self.lossy_chains.items()):
            if now - t > STREAM_DETECTION_MAX_DELTA_MS:
                del self.lossy_chains[key]
                surface = surfaces.get(key[0])
                for dcc in clients:
                    if key in dcc.lossy_areas:
                        dcc.lossy_areas.discard(key)
                        if surface is not None:
                            dcc.upgrade_area(surface, key[1])
                            self.stats["lossless_after_chain"] += 1
        if self.streams:
            for ev in self.detector.tick(now):
                self._end(ev.stream_id, surfaces.get(ev.surface_id), clients, "timeout")

    def surface_destroyed(self, surface_id: int, clients: Iterable[DisplayChannelClient]) -> None:
        """The surface goes: its streams end without an upgrade (``stop_streams``)."""
        clients = list(clients)
        for key in [k for k in self.lossy_chains if k[0] == surface_id]:
            del self.lossy_chains[key]
        for dcc in clients:
            dcc.lossy_areas = {k for k in dcc.lossy_areas if k[0] != surface_id}
        for ev in self.detector.surface_destroyed(surface_id):
            self._end(ev.stream_id, None, clients, "surface destroyed")

    def stop_all(self, surfaces: dict[int, Surface], clients: Iterable[DisplayChannelClient], reason: str) -> None:
        """Every stream ends (``video_stream_detach_and_stop``): codec preference changed..."""
        clients = list(clients)
        for ev in self.detector.stop_all(reason):
            self._end(ev.stream_id, surfaces.get(ev.surface_id), clients, reason)

    def _end(self, stream_id: int, surface: Surface | None, clients: Iterable[DisplayChannelClient], reason: str) -> None:
        self.streams.pop(stream_id, None)
        log.info("stream %d ends (%s)", stream_id, reason)
        for dcc in clients:
            dcc.streams.end_stream(stream_id, surface)


def _gradual(op: d.Copy) -> bool | None:
    """Whether a frame's bitmap is photo-like (filter mode); None when it cannot tell."""
    try:
        return graduality_level(frame_pixels(op)) != Graduality.LOW
    except Exception:
        return None
