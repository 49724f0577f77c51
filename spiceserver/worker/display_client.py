"""One client's display channel, inside the worker: its pipe, caches and connection state.

Counterpart of spice ``server/dcc.cpp`` (``dcc_start``, ``dcc_handle_init``, pipe item handling),
``dcc-send.cpp`` (marshalling each pipe item) and ``red-channel-client.cpp`` (ack window, pipe).

Sending order after the link, as libspice's ``dcc_start``: SET_ACK, then nothing until the client's
DISPLAY_INIT arrives (spice-gtk sends it at once); then INVAL_ALL_PALETTES, for every surface a
SURFACE_CREATE followed by its current picture (one full-surface DRAW_COPY of the canvas, which is
what libspice's tree walk amounts to for a new client), MONITORS_CONFIG if the client has the cap,
and MARK. Afterwards every drawable of every surface is queued as it arrives. A client that migrated
here seamlessly sends no DISPLAY_INIT: the source's MIGRATE_DATA (:mod:`spiceserver.proto.migration_data`)
takes its place, after an INVAL_ALL_PIXMAPS (libspice ``dcc_handle_migrate_data``).

Incoming messages go through a table per state (:mod:`spiceserver.proto.channel_client`): the
five display messages a client may send are accepted in both states (a second DISPLAY_INIT is
ignored); before DISPLAY_INIT any other display message is a protocol error.

Slow clients: a pipe item (:mod:`spiceserver.worker.pipe_items`) is produced only while the ack
window and the bytes in flight allow; an item still waiting when a later opaque draw hides it is
dropped (unless something queued between them reads its pixels), and a pipe that grows past
``MAX_PIPE`` is collapsed into one picture of each affected surface -- the canvas already holds
their combined result.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..codecs.glz import LZ_MAX_WINDOW_SIZE, GlzDictionary
from ..errors import ProtocolError
from ..proto import migration_data as md
from ..proto.channel import ChannelConnection
from ..proto.channel_client import ACK_WINDOW, HIGH_WATER, ChannelClientBase, StateTable
from ..proto.enums import ChannelType, DisplayCap, ImageCompression, MigrateFlags, SurfaceFlags
from ..proto.link import has_cap
from ..proto.messages import display as d
from ..proto.messages.base import SERVER, ClientMigrateData, Message, Migrate, MigrateData
from .client_streams import ClientStreams
from .compression import ClientCompression, DisplaySettings
from .drawable import Drawable
from .image_encoder import ImageEncoder, PixmapCache
from .messages import ClientConnected
from .pipe_items import DrawableItem, Marshaller, MessageItem, PictureItem, PipeItem
from .session_caches import SessionCaches
from .shared_encode import SharedEncodes
from .stream_items import StreamDataItem

if TYPE_CHECKING:
    from .stream_encoder import EncodeJob
    from .surface import Surface


class StreamHost(Protocol):
    """What a display client needs from its worker for video streams."""

    def submit_encode(self, item: StreamDataItem, job: EncodeJob) -> None:
        """Run ``item``'s encode job on an encoder thread; wake the worker when it is done."""

    def raise_latency(self, ms: int) -> None:
        """An encoder asks for at least ``ms`` of multimedia-clock latency."""

    def client_ready(self, dcc: DisplayChannelClient) -> None:
        """The client finished its init (it gets the live streams)."""

    def restart_streams(self, reason: str) -> None:
        """End every stream (they restart with the next frames)."""

    def frame_sent(self, dcc: DisplayChannelClient, item: StreamDataItem, data: bytes) -> None:
        """An encoded frame goes to ``dcc`` (for a frame tap)."""

__all__ = ["DisplayChannelClient", "ACK_WINDOW", "MAX_PIPE", "HIGH_WATER"]

log = logging.getLogger("spiceserver.display")

MAX_PIPE = 400  # live items before the pipe is collapsed into pictures


class DisplayState(enum.Enum):
    """Where a display client is (the key of its dispatch tables)."""

    WAIT_INIT = "wait_init"  # linked, SET_ACK sent; waiting for the client's DISPLAY_INIT
    WAIT_MIGRATE_DATA = "wait_migrate_data"  # migrated here seamlessly: the source's MIGRATE_DATA instead
    READY = "ready"


@dataclass
class DisplayInitInfo:
    pixmap_cache_id: int = 0
    pixmap_cache_size: int = 0
    glz_dictionary_id: int = 0
    glz_window: int = 0


class DisplayChannelClient(ChannelClientBase):
    """The worker-side state of one display channel connection.

    Args:
        info: the link (caps, mini header, bandwidth) as reds passed it.
        surfaces: the worker's surfaces (read when the client needs their pictures).
        monitors: returns the worker's current monitors layout, if any.
        settings: the server's image options.
        caches: the server's table of session GLZ window owners (:mod:`.session_caches`): only the
            session's first display channel codes GLZ.
        shared: the display's codec results shared by its clients (:mod:`.shared_encode`); None:
            this client encodes for itself.
    """

    def __init__(
        self,
        info: ClientConnected,
        surfaces: dict[int, Surface],
        monitors: Callable[[], d.MonitorsConfig | None],
        settings: DisplaySettings | None = None,
        host: StreamHost | None = None,
        caches: SessionCaches | None = None,
        shared: SharedEncodes | None = None,
    ) -> None:
        super().__init__(ChannelConnection(ChannelType.DISPLAY, SERVER, mini_header=info.mini_header, max_message_size=info.max_message_size), ack_window=ACK_WINDOW, high_water=HIGH_WATER)
        self.info = info
        self.cc_id = info.cc_id
        self.surfaces = surfaces
        self.monitors = monitors
        self.init = DisplayInitInfo()
        self.pipe: deque[PipeItem] = deque()
        self.live = 0
        self.by_drawable: dict[Drawable, DrawableItem] = {}
        self.settings = settings or DisplaySettings()
        self.caches = caches if caches is not None else SessionCaches()
        self.encoder = ImageEncoder(policy=self._policy(0), cache=None, shared=shared)
        self.sent_surfaces: set[int] = set()
        #: (surface, box) of frames queued that may go lossy before a stream (the area is sent
        #: lossless when their chain ends: :meth:`upgrade_area`)
        self.lossy_areas: set[tuple[int, tuple[int, int, int, int]]] = set()
        #: bytes_sent: marshalled bytes handed to the transport (every message of this client)
        self.stats = {"drawables": 0, "pruned": 0, "collapsed": 0, "stream_frames": 0, "bytes_sent": 0}
        self.host = host
        self.streams = ClientStreams(
            info.label, self.has_cap, self._queue, self.push_drawable, self.settings.video_codecs,
            upgrade_area=self.upgrade_area, low_bandwidth=info.low_bandwidth,
        )  # fmt: skip
        ignored: dict[type, Callable[[Any], object]] = {
            d.StreamReport: self._on_stream_report,
            d.PreferredVideoCodecType: self._on_preferred_video_codec,
            d.GlDrawDone: self._ignore,
        }
        self.state = DisplayState.WAIT_MIGRATE_DATA if info.migrated else DisplayState.WAIT_INIT
        self.tables = {
            DisplayState.WAIT_MIGRATE_DATA: StateTable(
                {ClientMigrateData: self._on_migrate_data, d.PreferredCompression: self._on_preferred_compression, **ignored}, unexpected="error"
            ),
            DisplayState.WAIT_INIT: StateTable(
                {d.DisplayInit: self._on_init, d.PreferredCompression: self._on_preferred_compression, **ignored}, unexpected="error"
            ),
            DisplayState.READY: StateTable(
                {d.DisplayInit: self._on_second_init, d.PreferredCompression: self._on_preferred_compression, **ignored}
            ),
        }

    @property
    def pipe_size(self) -> int:
        """Items queued and not yet marshalled (what holds the ring back: :mod:`.ring_gate`)."""
        return self.live

    def can_stream(self, surface_id: int) -> bool:
        """Whether the client may be told of streams on ``surface_id`` (initialized and it knows the surface)."""
        return self.state is DisplayState.READY and surface_id in self.sent_surfaces

    @property
    def initialized(self) -> bool:
        """Whether the client's DISPLAY_INIT arrived (nothing but SET_ACK is sent before)."""
        return self.state is DisplayState.READY

    def has_cap(self, cap: int) -> bool:
        """Whether the client announced display capability ``cap``."""
        return has_cap(self.info.channel_caps, cap)

    def _policy(self, glz_window: int, preferred: ImageCompression | None = None) -> ClientCompression:
        return self.settings.client_policy(
            lz4_cap=self.has_cap(DisplayCap.LZ4_COMPRESSION), glz_window=glz_window, low_bandwidth=self.info.low_bandwidth, preferred=preferred
        )

    # --- input ---------------------------------------------------------------------------------

    def on_data(self, data: bytes) -> None:
        """Bytes from the client; raises ProtocolError if they are bad."""
        for ev in self.conn.receive_data(data):
            self.dispatch(ev)

    def _ignore(self, msg: Message) -> None:
        pass

    def _on_second_init(self, msg: d.DisplayInit) -> None:
        log.debug("second DISPLAY_INIT ignored")

    def _on_init(self, msg: d.DisplayInit) -> None:
        self._begin(DisplayInitInfo(msg.pixmap_cache_id, msg.pixmap_cache_size, msg.glz_dictionary_id, msg.glz_dictionary_window_size))

    def _on_migrate_data(self, msg: ClientMigrateData) -> None:
        """A seamless migration's DCMD (:mod:`spiceserver.proto.migration_data`): the client keeps its
        caches' sizes and its GLZ window; its pixmap cache is emptied (INVAL_ALL_PIXMAPS) and a
        fresh GLZ dictionary continues the source's image ids, then the surfaces are sent as to a
        new client (spice-gtk keeps a same-size primary: ``create_canvas``)."""
        data = md.parse(md.DisplayMigrationData, msg.data)
        self._queue(MessageItem(d.InvalAllPixmaps(wait_list=())))
        self._begin(DisplayInitInfo(data.pixmap_cache_id, data.pixmap_cache_size, data.glz_dictionary_id, data.glz_window), data.glz_next_id)
        log.info("[%s] migration data applied (GLZ window %d, next image %d)", self.info.label, data.glz_window, data.glz_next_id)

    def migrate(self) -> None:
        """The session migrates (libspice ``dcc_handle_migrate_data``'s source side): MIGRATE and the
        DCMD blob, built when the pipe reaches them (the GLZ id is then the client's next one)."""
        self._queue(MigrateItem(self))

    def migration_messages(self) -> list[Message]:
        """SPICE_MSG_MIGRATE {NEED_DATA_TRANSFER} and MIGRATE_DATA with this client's state now."""
        if not self.initialized:
            return [Migrate(flags=0)]
        glz = self.encoder.glz
        blob = md.pack(
            md.DisplayMigrationData(
                pixmap_cache_id=self.init.pixmap_cache_id,
                pixmap_cache_size=self.init.pixmap_cache_size,
                glz_dictionary_id=self.init.glz_dictionary_id,
                glz_window=self.init.glz_window if glz is not None else 0,
                glz_next_id=glz.last_image_id if glz is not None else 0,
                low_bandwidth=self.info.low_bandwidth,
            )
        )
        return [Migrate(flags=MigrateFlags.NEED_DATA_TRANSFER), MigrateData(data=blob)]

    def _begin(self, init: DisplayInitInfo, glz_next_id: int = 0) -> None:
        self.state = DisplayState.READY
        self.init = init
        self.encoder.cache = PixmapCache(min(init.pixmap_cache_size, 1 << 31))
        window = init.glz_window
        # spice-gtk's GLZ window is per session: only its owner (the session's first display
        # channel) codes GLZ, the others LZ (:mod:`.session_caches`)
        if window > 0 and self.caches.join_glz(self.info.session_id, init.glz_dictionary_id, self):
            # a fresh dictionary per session: a reconnecting client starts with an empty window
            self.encoder.glz = GlzDictionary(min(window, LZ_MAX_WINDOW_SIZE))
            self.encoder.glz.last_image_id = glz_next_id
        self.encoder.policy = self._policy(window if self.encoder.glz is not None else 0, self.encoder.policy.preferred)
        self._queue(MessageItem(d.InvalAllPalettes()))
        for surface in sorted(self.surfaces.values(), key=lambda s: (not s.primary, s.id)):
            self.push_surface_create(surface, with_picture=True)
        self.push_monitors_config()
        self._queue(MessageItem(d.DisplayMark()))
        if self.host is not None:
            self.host.client_ready(self)

    def _on_stream_report(self, msg: d.StreamReport) -> None:
        """STREAM_REPORT: the stream's rate control, or images for a client that cannot decode it."""
        try:
            self.streams.report(msg, self.surfaces.get(0))
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None

    def _on_preferred_video_codec(self, msg: d.PreferredVideoCodecType) -> None:
        """PREFERRED_VIDEO_CODEC_TYPE: streams restart with the client's order (libspice stops them all)."""
        self.streams.set_preferred(tuple(msg.codecs))
        if self.streams.agents and self.host is not None:
            self.host.restart_streams(f"[{self.info.label}] preferred video codecs {list(msg.codecs)}")

    def _on_preferred_compression(self, msg: d.PreferredCompression) -> None:
        """SPICE_MSGC_DISPLAY_PREFERRED_COMPRESSION (libspice ``dcc_handle_preferred_compression``)."""
        try:
            pref = ImageCompression(msg.image_compression)
        except ValueError:
            pref = ImageCompression.INVALID
        if pref == ImageCompression.INVALID:
            log.warning("[%s] unknown preferred compression %d ignored", self.info.label, msg.image_compression)
            return
        glz = self.encoder.glz.window_size if self.encoder.glz is not None else 0
        self.encoder.policy = self._policy(glz, pref)

    # --- queueing ------------------------------------------------------------------------------

    def _queue(self, item: PipeItem) -> None:
        self.pipe.append(item)
        self.live += 1

    def push_surface_create(self, surface: Surface, *, with_picture: bool) -> None:
        """Queue a SURFACE_CREATE (once the client is initialized), and the surface's picture if ``with_picture``."""
        if not self.initialized:
            return
        flags = SurfaceFlags.PRIMARY if surface.primary else 0
        self._queue(MessageItem(d.SurfaceCreate(surface_id=surface.id, width=surface.width, height=surface.height, format=surface.format, flags=flags)))
        self.sent_surfaces.add(surface.id)
        if with_picture:
            self._queue_picture(surface, 0, 0, surface.width, surface.height)

    def _queue_picture(self, surface: Surface, left: int, top: int, right: int, bottom: int, *, lossless: bool = False) -> None:
        """Queue the canvas's pixels of the box (cut to the surface) as a picture."""
        left, top, right, bottom = max(left, 0), max(top, 0), min(right, surface.width), min(bottom, surface.height)
        if right <= left or bottom <= top:
            return
        pixels = surface.canvas.pixels[top:bottom, left:right].copy()
        self._queue(PictureItem(surface.id, left, top, pixels, surface.canvas.pixfmt, lossless=lossless))

    def push_surface_destroy(self, surface_id: int) -> None:
        """Queue a SURFACE_DESTROY if the client was told of the surface."""
        if not self.initialized or surface_id not in self.sent_surfaces:
            return
        # Draws still queued on the surface stay: a later queued draw may read it (SURFACE image).
        self.sent_surfaces.discard(surface_id)
        self._queue(MessageItem(d.SurfaceDestroy(surface_id=surface_id)))

    def push_monitors_config(self) -> None:
        """Queue the current MONITORS_CONFIG if the client has the capability and there is one."""
        if not self.initialized or not self.has_cap(DisplayCap.MONITORS_CONFIG):
            return
        heads = self.monitors()
        if heads is None:
            return
        self._queue(MessageItem(heads))

    @property
    def lossy_frames_ok(self) -> bool:
        """Whether frames before a stream may go lossy to this client. Not to spice-html5, recognised
        by its empty GLZ window: its JPEG-image path reads its stream table, which exists only once a
        stream was created (display.js ``handle_draw_jpeg_onload``), and throws before that."""
        return self.encoder.glz is not None

    def upgrade_area(self, surface: Surface, box: tuple[int, int, int, int]) -> None:
        """Queue the canvas's picture of ``box`` on ``surface``, never lossy (after lossy frames)."""
        if self.initialized and surface.id in self.sent_surfaces:
            self._queue_picture(surface, *box, lossless=True)

    def push_message(self, msg: Message) -> None:
        """Queue a prebuilt message once the client is initialized."""
        if self.initialized:
            self._queue(MessageItem(msg))

    def push_drawable(self, drawable: Drawable) -> None:
        """Queue a draw for a surface the client knows; collapse the pipe when it grows too long."""
        if not self.initialized or drawable.surface_id not in self.sent_surfaces:
            return
        item = DrawableItem(drawable)
        self._queue(item)
        self.by_drawable[drawable] = item
        if drawable.lossy_frame and self.lossy_frames_ok:
            b = drawable.base.box
            self.lossy_areas.add((drawable.surface_id, (b.left, b.top, b.right, b.bottom)))
        if self.live > MAX_PIPE:
            self.collapse()

    def _kill(self, item: PipeItem) -> None:
        if not item.dead:
            item.dead = True
            self.live -= 1
            if isinstance(item, DrawableItem):
                self.by_drawable.pop(item.drawable, None)

    def prune(self, hidden: Drawable) -> bool:
        """Drop ``hidden`` if it was not sent yet and nothing queued after it reads its pixels."""
        item = self.by_drawable.get(hidden)
        if item is None or item.dead:
            return False
        seen = False
        for e in self.pipe:
            if e is item:
                seen = True
                continue
            if seen and not e.dead and e.reads(hidden):
                return False
        self._kill(item)
        self.stats["pruned"] += 1
        return True

    def collapse(self) -> None:
        """Replace every queued drawable with one picture per affected surface (slow client)."""
        boxes: dict[int, tuple[int, int, int, int]] = {}
        for e in self.pipe:
            area = None if e.dead else e.collapse_area()
            if area is None:
                continue
            sid, bbox = area
            self._kill(e)
            if bbox is None:
                continue
            x0, y0, x1, y1 = bbox
            if sid in boxes:
                bx0, by0, bx1, by1 = boxes[sid]
                x0, y0, x1, y1 = min(x0, bx0), min(y0, by0), max(x1, bx1), max(y1, by1)
            boxes[sid] = (x0, y0, x1, y1)
        self.pipe = deque(e for e in self.pipe if not e.dead)
        for sid, (x0, y0, x1, y1) in boxes.items():
            surface = self.surfaces.get(sid)
            if surface is not None:
                self._queue_picture(surface, x0, y0, x1, y1)
        self.stats["collapsed"] += 1

    # --- output --------------------------------------------------------------------------------

    def produce(self) -> bytes:
        """Marshal pipe items while flow control allows; returns the bytes for reds."""
        while self.pipe and self.may_send():
            item = self.pipe[0]
            if isinstance(item, StreamDataItem) and not item.dead and not item.ready:
                break  # its frame is being encoded: the pipe waits (the worker is woken when done)
            if isinstance(item, StreamDataItem) and not item.dead and not item.started and item.agent.streaming:
                if not item.start(self):
                    self._kill(item)  # the rate control dropped the frame
                elif not item.ready:
                    break
            item = self.pipe.popleft()
            if item.dead:
                continue
            self.live -= 1
            if isinstance(item, DrawableItem):
                self.by_drawable.pop(item.drawable, None)
            item.marshal(self)
            if item.STAT is not None:
                self.stats[item.STAT] += 1
        out = self.take_output()
        self.stats["bytes_sent"] += len(out)
        return out

    # Marshaller (for the pipe items)

    def submit_encode(self, item: StreamDataItem, job: EncodeJob) -> None:
        """Run a frame's encode job (on the worker's encoder threads)."""
        if self.host is None:
            raise RuntimeError("no stream host to encode on")
        self.host.submit_encode(item, job)

    def playback_delay(self, ms: int) -> None:
        """An encoder wants more multimedia-clock latency."""
        if self.host is not None:
            self.host.raise_latency(ms)

    def frame_sent(self, item: StreamDataItem, data: bytes) -> None:
        """An encoded frame goes out: the host's frame tap, if any, sees it."""
        if self.host is not None:
            self.host.frame_sent(self, item, data)

    def send(self, msg: Message) -> None:
        """Send ``msg`` on this client's connection."""
        self.conn.send(msg)

    def send_raw(self, type_: int, body: bytes) -> None:
        """Send a marshalled body of display message ``type_`` (shared by every client)."""
        self.conn.send_raw(type_, body)

    def encode(self, img: d.Image, lossy_ok: bool = False, force_lossy: bool = False, share: bool = True) -> d.Image:
        """Encode ``img`` for this client; send the cache invalidations and messages the encoder needs first.

        ``share``: False for an image no other client sends (its codec results are not kept)."""
        out, evicted = self.encoder.encode(img, lossy_ok=lossy_ok, force_lossy=force_lossy and self.lossy_frames_ok, share=share)
        if evicted:
            self.conn.send(d.InvalList(resources=tuple(d.ResourceID(type=1, id=i) for i in evicted)))
        for msg in self.encoder.pending:
            self.conn.send(msg)
        self.encoder.pending.clear()
        return out


class MigrateItem(PipeItem):
    """SPICE_MSG_MIGRATE and the display's MIGRATE_DATA, built when marshalled (never dropped)."""

    __slots__ = ("dcc",)

    def __init__(self, dcc: DisplayChannelClient) -> None:
        super().__init__()
        self.dcc = dcc

    def marshal(self, out: Marshaller) -> None:
        """Send MIGRATE and (for an initialized client) its data."""
        for msg in self.dcc.migration_messages():
            out.send(msg)
