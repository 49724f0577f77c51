"""One display client's video streams: codec choice, agents, clips, reports.

Counterpart of the per-client half of spice ``server/video-stream.cpp`` (``dcc_create_stream``,
``dcc_create_video_encoder``, ``attach_stream``'s per-client part, ``dcc_stream_agent_clip``,
``streams_update_visible_region``, ``dcc_detach_stream_gracefully``, ``video_stream_agent_stop``)
and of ``server/dcc.cpp`` (``dcc_handle_stream_report``, ``dcc_handle_preferred_video_codec_type``,
``sort_video_codecs_by_client_preference``).

The worker (:mod:`spiceserver.worker.video_streams`) decides what is a stream; this module decides
what each client gets of it. The codec: the server's list (``ServerConfig.video_codecs``),
re-ordered by the client's PREFERRED_VIDEO_CODEC_TYPE if it sent one; a client without the
MULTI_CODEC cap may only get MJPEG, one with it only the codecs whose CODEC_* cap it announced; if
none of the list fits, MJPEG when the client can take it, else no encoder: that client gets the
stream's frames as ordinary images (so does a client that reports it cannot decode the stream).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import SpiceError
from ..proto.enums import DisplayCap, VideoCodecType
from ..proto.messages import display as d
from ..region import Region
from .mjpeg_rate import report_means_unsupported, starting_bit_rate
from .pipe_items import PipeItem
from .stream_encoder import StreamEncoder, make_stream_encoder
from .stream_items import StreamAgent, StreamClipItem, StreamCreateItem, StreamDataItem, StreamDestroyItem

if TYPE_CHECKING:
    from .drawable import Drawable
    from .surface import Surface
    from .video_streams import LiveStream

__all__ = ["ClientStreams", "CODEC_CAPS"]

log = logging.getLogger("spiceserver.streams")

#: the client cap that says it decodes each codec
CODEC_CAPS = {
    VideoCodecType.MJPEG: DisplayCap.CODEC_MJPEG,
    VideoCodecType.VP8: DisplayCap.CODEC_VP8,
    VideoCodecType.H264: DisplayCap.CODEC_H264,
    VideoCodecType.VP9: DisplayCap.CODEC_VP9,
    VideoCodecType.H265: DisplayCap.CODEC_H265,
}


class ClientStreams:
    """The streams of one display client.

    Args:
        label: for logs.
        has_cap: whether the client announced a display cap.
        queue: appends an item to the client's pipe.
        push_drawable: queues a draw as an ordinary drawable (frames of a client without encoder).
        upgrade_area: queues a lossless picture of a box of a surface (the end of a stream).
        server_codecs: the server's codec list, most preferred first.
        low_bandwidth: the main channel's verdict on this client's link (starting bit rate).
    """

    def __init__(
        self,
        label: str,
        has_cap: Callable[[int], bool],
        queue: Callable[[PipeItem], None],
        push_drawable: Callable[[Drawable], None],
        server_codecs: tuple[VideoCodecType, ...],
        *,
        upgrade_area: Callable[[Surface, tuple[int, int, int, int]], None] | None = None,
        low_bandwidth: bool = False,
    ) -> None:
        self.label = label
        self.has_cap = has_cap
        self._queue = queue
        self._push_drawable = push_drawable
        self._upgrade_area = upgrade_area
        self.server_codecs = server_codecs
        self.low_bandwidth = low_bandwidth
        self.preferred: tuple[int, ...] | None = None
        self.agents: dict[int, StreamAgent] = {}
        #: the best final bit rate of this client's ended streams (seeds the next one)
        self.max_bit_rate = 0
        self.stats = {"streams": 0, "unsupported": 0, "reports": 0}
        #: per codec name: frames and bytes sent, encode ms, frames dropped (kept after streams end)
        self.by_codec: dict[str, dict[str, float]] = {}

    # --- codec choice ---------------------------------------------------------------------------

    def codec_order(self) -> list[VideoCodecType]:
        """The codecs to try for this client, best first (``dcc_create_video_encoder``)."""
        order = list(self.server_codecs)
        if self.preferred is not None:
            rank = {c: i for i, c in enumerate(self.preferred)}
            order.sort(key=lambda c: rank.get(int(c), len(rank)))
        multi = self.has_cap(DisplayCap.MULTI_CODEC)
        out = [c for c in order if (c == VideoCodecType.MJPEG if not multi else self.has_cap(CODEC_CAPS[c]))]
        if VideoCodecType.MJPEG not in out and (not multi or self.has_cap(DisplayCap.CODEC_MJPEG)):
            out.append(VideoCodecType.MJPEG)  # libspice's fallback: the builtin MJPEG encoder
        return out

    def _encoder(self, stream: LiveStream, areas_total: int) -> StreamEncoder | None:
        area = stream.src_width * stream.src_height
        bit_rate = starting_bit_rate(
            max_stream_bit_rate=self.max_bit_rate, low_bandwidth=self.low_bandwidth,
            stream_area=max(1, area), streams_area_total=max(1, area, areas_total),
        )  # fmt: skip
        for codec in self.codec_order():
            try:
                return make_stream_encoder(
                    codec, stream.src_width, stream.src_height, bit_rate=bit_rate,
                    now_ms=time.monotonic() * 1000.0, source_fps=stream.input_fps, roundtrip_ms=0,
                )  # fmt: skip
            except (SpiceError, ValueError) as exc:
                log.info("[%s] stream %d: no %s encoder: %s", self.label, stream.stream_id, codec.name, exc)
        return None

    # --- the stream life cycle ------------------------------------------------------------------

    def create(self, stream: LiveStream, region: Region, areas_total: int) -> StreamAgent:
        """A stream starts (or this client arrives while it runs): STREAM_CREATE with ``region`` as
        its clip and visible area (``dcc_create_stream``)."""
        old = self.agents.pop(stream.stream_id, None)
        if old is not None:  # never happens: an id is destroyed before reuse
            self.end(old, None)
        encoder = self._encoder(stream, areas_total)
        agent = StreamAgent(stream.stream_id, stream.dest, stream.src_width, stream.src_height, encoder)
        self.agents[stream.stream_id] = agent
        if encoder is not None:
            agent.vis_region = agent.clip = region
            self._queue(StreamCreateItem(agent, region))
            self.stats["streams"] += 1
        return agent

    def frame(self, stream_id: int, drawable: Drawable, mm_time: int, sized: bool, generation: int) -> None:
        """The stream's next frame (``attach_stream`` + ``dcc_add_drawable``): newest wins."""
        agent = self.agents.get(stream_id)
        if agent is None or not agent.streaming or (sized and not self.has_cap(DisplayCap.SIZED_STREAM)):
            if agent is not None and agent.streaming:  # an image among stream frames (may be JPEG): upgraded at the end
                agent.vis_region = agent.vis_region | drawable.region
            self._push_drawable(drawable)
            return
        region = drawable.region
        agent.vis_region = agent.vis_region | region
        if agent.clip != region:
            agent.clip = region
            self._queue(StreamClipItem(agent, region))
        pending = agent.pending
        if pending is not None and not pending.dead and not pending.started:
            # A server drop for the rate control (libspice ``before_reattach_stream``) when the frame
            # waited for the client, not when it waited for this stream's previous frame to be
            # encoded: libspice encodes on the worker thread, so frames that arrive meanwhile come
            # in one batch, and a frame replaced within its batch is not counted.
            if pending.generation != generation and not agent.encoding and agent.encoder is not None:
                agent.encoder.server_drop(time.monotonic() * 1000.0)
            pending.replace(drawable, mm_time, sized)
            pending.generation = generation
            agent.stats["replaced"] += 1
            return
        item = StreamDataItem(agent, drawable, mm_time, sized, generation)
        agent.pending = item
        self._queue(item)

    def draw_over(self, region: Region) -> None:
        """A non-stream opaque draw covers ``region``: shrink the streams' clips (``streams_update_visible_region``)."""
        for agent in self.agents.values():
            if agent.vis_region.intersects(region):
                agent.vis_region = agent.vis_region - region
                clip = agent.clip - region
                if clip != agent.clip:
                    agent.clip = clip
                    self._queue(StreamClipItem(agent, clip))

    def detach_behind(self, region: Region, surface: Surface) -> None:
        """A draw that reads what is under it meets a stream's visible area: the client gets that area
        lossless first (``video_stream_detach_behind`` -> ``dcc_detach_stream_gracefully``); the
        stream goes on."""
        for agent in self.agents.values():
            if agent.vis_region.intersects(region):
                self._upgrade(agent, surface)

    def _upgrade(self, agent: StreamAgent, surface: Surface | None) -> None:
        """Empty clip, then a lossless picture of the visible area (libspice's upgrade by screenshot:
        the canvas holds every draw so far)."""
        pending = agent.pending
        if pending is not None and not pending.started:
            pending.dead = True  # the picture below shows it (and anything newer)
            agent.pending = None
        if agent.created:
            self._queue(StreamClipItem(agent, Region()))
        agent.clip = Region()
        box = agent.vis_region.bbox()
        agent.vis_region = Region()
        if box is not None and surface is not None and self._upgrade_area is not None:
            self._upgrade_area(surface, box)

    def end(self, agent: StreamAgent, surface: Surface | None) -> None:
        """The stream ends for this client: empty clip, lossless upgrade of what it showed,
        STREAM_DESTROY (``dcc_detach_stream_gracefully`` + ``video_stream_stop``). ``surface``
        None: the surface is gone, nothing to upgrade."""
        self.agents.pop(agent.stream_id, None)
        if agent.encoder is not None:
            self.max_bit_rate = max(self.max_bit_rate, agent.encoder.bit_rate)
            self._account(agent)
        self._upgrade(agent, surface)
        self._queue(StreamDestroyItem(agent))

    def end_stream(self, stream_id: int, surface: Surface | None) -> None:
        """End stream ``stream_id`` for this client if it has it."""
        agent = self.agents.get(stream_id)
        if agent is not None:
            self.end(agent, surface)

    def _account(self, agent: StreamAgent, into: dict[str, dict[str, float]] | None = None) -> None:
        """Add an agent's counts to its codec's totals (``by_codec`` unless ``into``)."""
        if agent.encoder is None:
            return
        totals = self.by_codec if into is None else into
        c = totals.setdefault(agent.encoder.codec.name.lower(), {"frames": 0, "bytes": 0, "encode_ms": 0.0, "dropped": 0})
        c["frames"] += agent.stats["frames"]
        c["bytes"] += agent.stats["bytes"]
        c["encode_ms"] += agent.stats["encode_ms"]
        c["dropped"] += agent.stats["dropped"] + agent.stats["replaced"]

    def codec_stats(self) -> dict[str, dict[str, float]]:
        """Per codec: frames and bytes sent, encode ms, frames dropped; live streams included."""
        out = {k: dict(v) for k, v in self.by_codec.items()}
        for agent in self.agents.values():
            self._account(agent, out)
        return out

    # --- client messages ------------------------------------------------------------------------

    def report(self, msg: d.StreamReport, surface: Surface | None) -> None:
        """A STREAM_REPORT (``dcc_handle_stream_report``): feed the rate control, or fall back to
        images when the client says it cannot decode the stream.

        Raises:
            ValueError: a stream id out of range (the caller makes it a protocol error).
        """
        if msg.stream_id >= 50:
            raise ValueError(f"stream report for stream {msg.stream_id}")
        self.stats["reports"] += 1
        agent = self.agents.get(msg.stream_id)
        if agent is None or agent.encoder is None:
            return
        if report_means_unsupported(msg.num_frames, msg.num_drops):
            log.warning("[%s] stream %d: the client cannot decode %s: sending images", self.label, msg.stream_id, agent.encoder.codec.name)
            self.stats["unsupported"] += 1
            self._account(agent)
            agent.created = False  # the client has no such stream: send it nothing more about it
            agent.retire_encoder()
            self._upgrade(agent, surface)
            return
        if msg.unique_id != agent.report_id:
            return  # a report of an earlier stream with the same id
        try:
            agent.encoder.client_report(
                msg.num_frames, msg.num_drops, msg.start_frame_mm_time, msg.end_frame_mm_time,
                msg.last_frame_delay, msg.audio_delay, time.monotonic() * 1000.0,
            )  # fmt: skip
        except ValueError as exc:
            log.debug("[%s] stream report ignored: %s", self.label, exc)

    def describe(self) -> dict[str, object]:
        """For ``display_stats``: counts, live streams (id, codec or "images", bit rate), per codec totals."""
        live = [
            {
                "id": a.stream_id,
                "codec": a.encoder.codec.name.lower() if a.encoder else "images",
                "bit_rate": a.encoder.bit_rate if a.encoder else 0,
                **a.stats,
                "encoder": a.encoder.stats() if a.encoder else {},
            }
            for a in self.agents.values()
        ]
        return {**self.stats, "live": live, "by_codec": self.codec_stats()}

    def set_preferred(self, codecs: tuple[int, ...]) -> None:
        """PREFERRED_VIDEO_CODEC_TYPE: the client's order for streams created from now on."""
        self.preferred = codecs
