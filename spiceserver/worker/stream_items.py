"""A client's side of a video stream: its agent, and the stream items of its pipe.

Counterpart of spice ``server/video-stream.h`` / ``video-stream.cpp`` (``VideoStreamAgent``,
``dcc_create_stream``, ``dcc_stream_agent_clip``, ``dcc_detach_stream_gracefully``) and
``server/dcc-send.cpp`` (``marshall_stream_start``, ``marshall_stream_clip``,
``marshall_stream_end``, ``red_marshall_stream_data``, ``marshall_stream_activate_report``).

One :class:`StreamAgent` per (stream, client): the client's encoder for the stream (None: the
client gets the frames as ordinary images), the area where the client shows video
(``vis_region``), and the clip it was last sent. The items:

* :class:`StreamCreateItem` -- STREAM_CREATE (always TOP_DOWN: frames are encoded top row first)
  and, for clients with the STREAM_REPORT cap, STREAM_ACTIVATE_REPORT;
* :class:`StreamDataItem` -- one frame. It is encoded only when its turn comes (while it waits a
  newer frame of the stream replaces it: newest frame wins), on the worker's encoder threads; the
  client's pipe waits for it meanwhile, other clients do not. Once encoding started it is never
  dropped (an inter-frame codec's chain must not break). The result goes as STREAM_DATA, or
  STREAM_DATA_SIZED when the frame's size or place is not the stream's; an encoder that cannot do
  the frame sends it as the draw it is;
* :class:`StreamClipItem` -- STREAM_CLIP (always a rectangle list; empty hides every later frame);
* :class:`StreamDestroyItem` -- STREAM_DESTROY, and the encoder is closed.
"""

from __future__ import annotations

import logging
import random
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..canvas.images import decode_bitmap
from ..canvas.pixman import convert
from ..canvas.surface import PixFmt
from ..proto.enums import BitmapFlags, BitmapFmt, ClipType, DisplayCap
from ..proto.messages import display as d
from ..proto.messages.base import Rect
from ..region import Region
from .drawable import Drawable
from .pipe_items import DrawableItem, Marshaller, PipeItem

if TYPE_CHECKING:
    from .stream_encoder import StreamEncoder

__all__ = [
    "StreamAgent",
    "StreamClipItem",
    "StreamCreateItem",
    "StreamDataItem",
    "StreamDestroyItem",
    "frame_pixels",
    "REPORT_WINDOW",
    "REPORT_TIMEOUT_MS",
]

log = logging.getLogger("spiceserver.streams")

STREAM_TOP_DOWN = 1  # SPICE_STREAM_FLAGS_TOP_DOWN
REPORT_WINDOW = 5  # RED_STREAM_CLIENT_REPORT_WINDOW: frames per client report
REPORT_TIMEOUT_MS = 1000  # RED_STREAM_CLIENT_REPORT_TIMEOUT


def frame_pixels(op: d.Copy) -> np.ndarray:
    """The source area of a stream frame's bitmap as (h, w) uint32 0x00RRGGBB, top row first.

    A 32-bit bitmap is viewed in place (rows may be strided or go backwards); other formats are
    converted. Runs on an encoder thread.
    """
    image = op.src_bitmap
    assert image is not None and image.bitmap is not None
    bm = image.bitmap
    a = op.src_area
    if bm.format in (BitmapFmt.BIT32, BitmapFmt.RGBA) and bm.stride % 4 == 0 and bm.stride >= 4 * bm.x:
        rows = np.frombuffer(bm.data, np.uint32, count=(bm.stride // 4) * (bm.y - 1) + bm.x)
        px = np.lib.stride_tricks.as_strided(rows, (bm.y, bm.x), (bm.stride, 4), writeable=False)
        if not bm.flags & BitmapFlags.TOP_DOWN:
            px = px[::-1]
    else:
        pm = decode_bitmap(bm, PixFmt.X8R8G8B8, bm.palette)
        px = convert(pm, PixFmt.X8R8G8B8).pixels
    return px[a.top : a.bottom, a.left : a.right]


def _rects(region: Region) -> d.Clip:
    return d.Clip(type=ClipType.RECTS, rects=d.ClipRects(rects=region.to_proto_rects()))


class StreamAgent:
    """One stream as one client sees it (libspice ``VideoStreamAgent``).

    Args:
        stream_id, dest, width, height: the stream's id, destination box and source size.
        encoder: the client's encoder, or None: the frames go to this client as images and no
            stream message is sent.
    """

    def __init__(self, stream_id: int, dest: tuple[int, int, int, int], width: int, height: int, encoder: StreamEncoder | None) -> None:
        self.stream_id = stream_id
        self.dest = dest
        self.width, self.height = width, height
        self.encoder = encoder
        #: whether the client was sent STREAM_CREATE (and must get STREAM_DESTROY)
        self.created = False
        #: where the client shows this stream's frames, and the clip it was last sent
        self.vis_region = Region()
        self.clip = Region()
        self.report_id = random.getrandbits(32)
        #: the newest frame item not yet started (a newer frame replaces its frame)
        self.pending: StreamDataItem | None = None
        #: an encode job is running (the encoder is closed only after it)
        self.encoding = False
        self.close_after_job = False
        self.stats = {"frames": 0, "bytes": 0, "dropped": 0, "replaced": 0, "as_images": 0, "encode_ms": 0.0}

    @property
    def streaming(self) -> bool:
        """Whether this client gets the frames as stream data."""
        return self.encoder is not None and not self.close_after_job

    def retire_encoder(self) -> None:
        """Stop streaming to this client (it cannot decode, or the stream ends): close the encoder
        now, or once its running job is done."""
        if self.encoder is None:
            return
        if self.encoding:
            self.close_after_job = True  # job_done closes it
        else:
            self.encoder.close()
            self.encoder = None
        self.pending = None

    def job_done(self) -> None:
        """The running encode job ended (worker thread)."""
        self.encoding = False
        if self.close_after_job and self.encoder is not None:
            self.encoder.close()
            self.encoder = None
            self.close_after_job = False


class StreamCreateItem(PipeItem):
    """STREAM_CREATE, then STREAM_ACTIVATE_REPORT for a client that reports."""

    __slots__ = ("agent", "clip")

    def __init__(self, agent: StreamAgent, clip: Region) -> None:
        super().__init__()
        self.agent, self.clip = agent, clip

    def marshal(self, out: Marshaller) -> None:
        """Send the create (and activate-report) messages if the client still streams."""
        agent = self.agent
        if agent.encoder is None or agent.close_after_job:
            return
        left, top, right, bottom = agent.dest
        out.send(
            d.StreamCreate(
                surface_id=0, id=agent.stream_id, flags=STREAM_TOP_DOWN, codec_type=int(agent.encoder.codec), stamp=0,
                stream_width=agent.width, stream_height=agent.height, src_width=agent.width, src_height=agent.height,
                dest=Rect(top=top, left=left, bottom=bottom, right=right), clip=_rects(self.clip),
            )
        )  # fmt: skip
        agent.created = True
        if out.has_cap(DisplayCap.STREAM_REPORT):
            out.send(d.StreamActivateReport(stream_id=agent.stream_id, unique_id=agent.report_id, max_window_size=REPORT_WINDOW, timeout_ms=REPORT_TIMEOUT_MS))


class StreamClipItem(PipeItem):
    """STREAM_CLIP with the region's rectangles (none: the client shows no further frame)."""

    __slots__ = ("agent", "region")

    def __init__(self, agent: StreamAgent, region: Region) -> None:
        super().__init__()
        self.agent, self.region = agent, region

    def marshal(self, out: Marshaller) -> None:
        """Send the clip if the client was told of the stream."""
        if self.agent.created:
            out.send(d.StreamClip(id=self.agent.stream_id, clip=_rects(self.region)))


class StreamDestroyItem(PipeItem):
    """STREAM_DESTROY; the client's encoder for the stream is closed."""

    __slots__ = ("agent",)

    def __init__(self, agent: StreamAgent) -> None:
        super().__init__()
        self.agent = agent

    def marshal(self, out: Marshaller) -> None:
        """Send the destroy if the client was told of the stream; close the encoder."""
        if self.agent.created:
            out.send(d.StreamDestroy(id=self.agent.stream_id))
            self.agent.created = False
        self.agent.retire_encoder()


class StreamDataItem(PipeItem):
    """One frame of a stream for one client, encoded when its turn comes."""

    __slots__ = ("agent", "drawable", "future", "generation", "mm_time", "shared_encode", "sized", "started_at")
    STAT: ClassVar[str | None] = "stream_frames"

    def __init__(self, agent: StreamAgent, drawable: Drawable, mm_time: int, sized: bool, generation: int) -> None:
        super().__init__()
        self.agent, self.drawable, self.mm_time, self.sized, self.generation = agent, drawable, mm_time, sized, generation
        self.future: Future[tuple[bytes | None, float]] | None = None
        self.started_at = 0.0
        #: its future is another client's encode of the same frame (its time is counted there)
        self.shared_encode = False

    @property
    def started(self) -> bool:
        """Whether its encode job was submitted (it can no longer be replaced or dropped)."""
        return self.future is not None

    def replace(self, drawable: Drawable, mm_time: int, sized: bool) -> None:
        """A newer frame takes this unsent one's place (newest frame wins)."""
        self.drawable, self.mm_time, self.sized = drawable, mm_time, sized

    def start(self, out: Marshaller) -> bool:
        """Ask the rate control, then submit the encode job; False: the frame is dropped."""
        agent = self.agent
        if agent.pending is self:
            agent.pending = None
        if agent.encoder is None or agent.close_after_job:
            return True  # goes as an image
        job = agent.encoder.admit(time.monotonic() * 1000.0, self.mm_time)
        if job is None:
            agent.stats["dropped"] += 1
            return False
        agent.encoding = True
        self.started_at = time.monotonic()
        out.submit_encode(self, job)
        return True

    @property
    def ready(self) -> bool:
        """Whether it can be marshalled now (not started: goes as an image; or its job is done)."""
        return self.future is None or self.future.done()

    def marshal(self, out: Marshaller) -> None:
        """Send the encoded frame (STREAM_DATA / _SIZED), or the draw if it could not be encoded."""
        agent = self.agent
        data: bytes | None = None
        if self.future is not None:
            try:
                data, encode_ms = self.future.result()
            except Exception:
                log.exception("stream %d: encoding a frame failed", agent.stream_id)
                data, encode_ms = None, 0.0
            encoder = agent.encoder
            agent.job_done()
            if data and encoder is not None:
                encoder.frame_encoded(len(data), time.monotonic() * 1000.0, encode_ms)
                agent.stats["encode_ms"] += 0.0 if self.shared_encode else encode_ms
                delay = encoder.pop_playback_delay_request()
                if delay is not None:
                    out.playback_delay(delay)
        if not data or not agent.created:
            agent.stats["as_images"] += 1
            DrawableItem(self.drawable).marshal(out)
            return
        agent.stats["frames"] += 1
        agent.stats["bytes"] += len(data)
        out.frame_sent(self, data)
        b = self.drawable.base.box
        if self.sized:
            a = self.drawable.op.src_area
            out.send(
                d.StreamDataSized(
                    base=d.StreamDataHeader(id=agent.stream_id, multi_media_time=self.mm_time), width=a.right - a.left, height=a.bottom - a.top,
                    dest=Rect(top=b.top, left=b.left, bottom=b.bottom, right=b.right), data=data,
                )
            )  # fmt: skip
        else:
            out.send(d.StreamData(base=d.StreamDataHeader(id=agent.stream_id, multi_media_time=self.mm_time), data=data))

    def collapse_area(self) -> tuple[int, tuple[int, int, int, int] | None] | None:
        """A frame not started may give way to a picture of the canvas (slow client); a started one may not."""
        if self.started:
            return None
        return self.drawable.surface_id, self.drawable.region.bbox()
