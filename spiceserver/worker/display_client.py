"""One client's display channel, inside the worker: its pipe, caches and connection state.

Counterpart of spice ``server/dcc.cpp`` (``dcc_start``, ``dcc_handle_init``, pipe item handling),
``dcc-send.cpp`` (marshalling each pipe item) and ``red-channel-client.cpp`` (ack window, pipe).

Sending order after the link, as libspice's ``dcc_start``: SET_ACK, then nothing until the client's
DISPLAY_INIT arrives (spice-gtk sends it at once); then INVAL_ALL_PALETTES, for every surface a
SURFACE_CREATE followed by its current picture (one full-surface DRAW_COPY of the canvas, which is
what libspice's tree walk amounts to for a new client), MONITORS_CONFIG if the client has the cap,
and MARK. Afterwards every drawable of every surface is queued as it arrives.

Slow clients: a pipe entry is produced only while the ack window and the bytes in flight allow; an
entry still waiting when a later opaque draw hides it is dropped (unless something queued between
them reads its pixels), and a pipe that grows past ``MAX_PIPE`` is collapsed into one picture of
each affected surface -- the canvas already holds their combined result.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..canvas.surface import PixFmt
from ..codecs.glz import LZ_MAX_WINDOW_SIZE, GlzDictionary
from ..errors import ProtocolError
from ..proto.channel import ChannelConnection
from ..proto.enums import ChannelType, ClipType, DisplayCap, ImageCompression, SurfaceFlags
from ..proto.link import has_cap
from ..proto.messages import display as d
from ..proto.messages.base import SERVER, Message, Rect
from .compression import ClientCompression
from .drawable import ROP_PUT, Drawable, map_images
from .image_encoder import ImageEncoder, PixmapCache
from .messages import ClientConnected
from .picture import picture_image

if TYPE_CHECKING:
    from .surface import Surface

__all__ = ["DisplayChannelClient", "ACK_WINDOW", "MAX_PIPE", "HIGH_WATER"]

log = logging.getLogger("spiceserver.display")

ACK_WINDOW = 20  # libspice CLIENT_ACK_WINDOW (narrow)
MAX_PIPE = 400  # live entries before the pipe is collapsed into pictures
HIGH_WATER = 2 << 20  # bytes handed to reds and not yet written before we stop producing


@dataclass(eq=False)
class Entry:
    """A pipe entry: a prebuilt message, a drawable, or a picture of part of a surface."""

    msg: Message | None = None
    drawable: Drawable | None = None
    picture: tuple[int, int, int, np.ndarray, PixFmt] | None = None  # surface, left, top, pixels, their format
    dead: bool = False


@dataclass(frozen=True)
class ImageSettings:
    """The server's image options (from ServerConfig), shared by a worker's display clients."""

    image_compression: ImageCompression = ImageCompression.AUTO_GLZ
    jpeg_wan: str = "auto"
    zlib_glz_wan: str = "auto"


@dataclass
class DisplayInitInfo:
    pixmap_cache_id: int = 0
    pixmap_cache_size: int = 0
    glz_dictionary_id: int = 0
    glz_window: int = 0


class DisplayChannelClient:
    """The worker-side state of one display channel connection."""

    def __init__(self, info: ClientConnected, surfaces: dict[int, Surface], monitors: Any, settings: Any = None) -> None:
        self.info = info
        self.cc_id = info.cc_id
        self.conn = ChannelConnection(ChannelType.DISPLAY, SERVER, mini_header=info.mini_header)
        self.conn.set_ack_window(ACK_WINDOW)
        self.surfaces = surfaces
        self.monitors = monitors
        self.initialized = False
        self.init = DisplayInitInfo()
        self.pipe: deque[Entry] = deque()
        self.live = 0
        self.by_drawable: dict[Drawable, Entry] = {}
        self.inflight = 0
        self.closed = False
        self.settings = settings or ImageSettings()
        self.encoder = ImageEncoder(policy=self._policy(0), cache=None)
        self.sent_surfaces: set[int] = set()
        self.stats = {"drawables": 0, "pruned": 0, "collapsed": 0}

    def has_cap(self, cap: int) -> bool:
        return has_cap(self.info.channel_caps, cap)

    def _policy(self, glz_window: int, preferred: ImageCompression | None = None) -> ClientCompression:
        st = self.settings
        low = self.info.low_bandwidth
        return ClientCompression(
            preferred=preferred if preferred is not None else st.image_compression,
            lz4_cap=self.has_cap(DisplayCap.LZ4_COMPRESSION),
            glz_window=glz_window,
            jpeg=st.jpeg_wan == "always" or (st.jpeg_wan == "auto" and low),
            zlib_glz=st.zlib_glz_wan == "always" or (st.zlib_glz_wan == "auto" and low),
        )

    # --- input ---------------------------------------------------------------------------------

    def on_data(self, data: bytes) -> None:
        """Bytes from the client; raises ProtocolError if they are bad."""
        for ev in self.conn.receive_data(data):
            if isinstance(ev, d.DisplayInit):
                self._on_init(ev)
            elif isinstance(ev, d.PreferredCompression):
                self._on_preferred_compression(ev)
            elif isinstance(ev, d.StreamReport | d.PreferredVideoCodecType | d.GlDrawDone):
                pass
            elif not self.initialized and type(ev).__module__.endswith("display"):
                raise ProtocolError(f"{type(ev).__name__} before DISPLAY_INIT")

    def _on_init(self, msg: d.DisplayInit) -> None:
        if self.initialized:
            log.debug("second DISPLAY_INIT ignored")
            return
        self.initialized = True
        self.init = DisplayInitInfo(msg.pixmap_cache_id, msg.pixmap_cache_size, msg.glz_dictionary_id, msg.glz_dictionary_window_size)
        self.encoder.cache = PixmapCache(min(msg.pixmap_cache_size, 1 << 31))
        window = msg.glz_dictionary_window_size
        if window > 0:
            # a fresh dictionary per connection: a reconnecting client starts with an empty window
            self.encoder.glz = GlzDictionary(min(window, LZ_MAX_WINDOW_SIZE))
        self.encoder.policy = self._policy(window if self.encoder.glz is not None else 0, self.encoder.policy.preferred)
        self._queue(Entry(msg=d.InvalAllPalettes()))
        for surface in sorted(self.surfaces.values(), key=lambda s: (not s.primary, s.id)):
            self.push_surface_create(surface, with_picture=True)
        self.push_monitors_config()
        self._queue(Entry(msg=d.DisplayMark()))

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

    def _queue(self, entry: Entry) -> None:
        self.pipe.append(entry)
        self.live += 1
        if entry.drawable is not None:
            self.by_drawable[entry.drawable] = entry

    def push_surface_create(self, surface: Surface, *, with_picture: bool) -> None:
        if not self.initialized:
            return
        flags = SurfaceFlags.PRIMARY if surface.primary else 0
        self._queue(Entry(msg=d.SurfaceCreate(surface_id=surface.id, width=surface.width, height=surface.height, format=surface.format, flags=flags)))
        self.sent_surfaces.add(surface.id)
        if with_picture:
            self._queue_picture(surface, 0, 0, surface.width, surface.height)

    def _queue_picture(self, surface: Surface, left: int, top: int, right: int, bottom: int) -> None:
        if right <= left or bottom <= top:
            return
        pixels = surface.canvas.pixels[top:bottom, left:right].copy()
        self._queue(Entry(picture=(surface.id, left, top, pixels, surface.canvas.pixfmt)))

    def push_surface_destroy(self, surface_id: int) -> None:
        if not self.initialized or surface_id not in self.sent_surfaces:
            return
        # Draws still queued on the surface stay: a later queued draw may read it (SURFACE image).
        self.sent_surfaces.discard(surface_id)
        self._queue(Entry(msg=d.SurfaceDestroy(surface_id=surface_id)))

    def push_monitors_config(self) -> None:
        if not self.initialized or not self.has_cap(DisplayCap.MONITORS_CONFIG):
            return
        heads = self.monitors()
        if heads is None:
            return
        self._queue(Entry(msg=heads))

    def push_message(self, msg: Message) -> None:
        if self.initialized:
            self._queue(Entry(msg=msg))

    def push_drawable(self, drawable: Drawable) -> None:
        if not self.initialized or drawable.surface_id not in self.sent_surfaces:
            return
        self._queue(Entry(drawable=drawable))
        if self.live > MAX_PIPE:
            self.collapse()

    def _kill(self, entry: Entry) -> None:
        if not entry.dead:
            entry.dead = True
            self.live -= 1
            if entry.drawable is not None:
                self.by_drawable.pop(entry.drawable, None)

    def prune(self, hidden: Drawable) -> bool:
        """Drop ``hidden`` if it was not sent yet and nothing queued after it reads its pixels."""
        entry = self.by_drawable.get(hidden)
        if entry is None or entry.dead:
            return False
        seen = False
        for e in self.pipe:
            if e is entry:
                seen = True
                continue
            if not seen or e.dead:
                continue
            if e.picture is not None or e.msg is not None:
                continue  # pictures were taken from the canvas already; messages read nothing
            other = e.drawable
            assert other is not None
            if hidden.surface_id in other.surface_deps:
                return False
            if other.surface_id == hidden.surface_id and other.reads.intersects(hidden.region):
                return False
        self._kill(entry)
        self.stats["pruned"] += 1
        return True

    def collapse(self) -> None:
        """Replace every queued drawable with one picture per affected surface (slow client)."""
        boxes: dict[int, tuple[int, int, int, int]] = {}
        for e in self.pipe:
            if e.dead or e.drawable is None:
                continue
            bbox = e.drawable.region.bbox()
            self._kill(e)
            if bbox is None:
                continue
            x0, y0, x1, y1 = bbox
            if e.drawable.surface_id in boxes:
                bx0, by0, bx1, by1 = boxes[e.drawable.surface_id]
                x0, y0, x1, y1 = min(x0, bx0), min(y0, by0), max(x1, bx1), max(y1, by1)
            boxes[e.drawable.surface_id] = (x0, y0, x1, y1)
        self.pipe = deque(e for e in self.pipe if not e.dead)
        for sid, (x0, y0, x1, y1) in boxes.items():
            surface = self.surfaces.get(sid)
            if surface is not None:
                self._queue_picture(surface, max(x0, 0), max(y0, 0), min(x1, surface.width), min(y1, surface.height))
        self.stats["collapsed"] += 1

    # --- output --------------------------------------------------------------------------------

    @property
    def can_produce(self) -> bool:
        return self.conn.can_send and self.inflight < HIGH_WATER

    def produce(self) -> bytes:
        """Marshal pipe entries while flow control allows; returns the bytes for reds."""
        while self.pipe and self.conn.can_send and self.inflight + self.conn.pending_output < HIGH_WATER:
            entry = self.pipe.popleft()
            if entry.dead:
                continue
            self.live -= 1
            if entry.drawable is not None:
                self.by_drawable.pop(entry.drawable, None)
                self._send_drawable(entry.drawable)
            elif entry.picture is not None:
                self._send_picture(*entry.picture)
            elif entry.msg is not None:
                self.conn.send(entry.msg)
        data = self.conn.data_to_send()
        self.inflight += len(data)
        return data

    def _encode(self, img: d.Image, lossy_ok: bool = False) -> d.Image:
        out, evicted = self.encoder.encode(img, lossy_ok=lossy_ok)
        if evicted:
            self.conn.send(d.InvalList(resources=tuple(d.ResourceID(type=1, id=i) for i in evicted)))
        for msg in self.encoder.pending:
            self.conn.send(msg)
        self.encoder.pending.clear()
        return out

    def _send_drawable(self, drawable: Drawable) -> None:
        op = drawable.op
        if isinstance(op, (d.Copy, d.Opaque)) and op.src_bitmap is not None and op.rop_descriptor == ROP_PUT:
            # the source of a plain copy may go lossy (JPEG) where allowed; masks and brushes never
            src = self._encode(op.src_bitmap, lossy_ok=True)
            op = replace(map_images(replace(op, src_bitmap=None), self._encode), src_bitmap=src)
        else:
            op = map_images(op, self._encode)
        self.conn.send(drawable.message(op))
        self.stats["drawables"] += 1

    def _send_picture(self, surface_id: int, left: int, top: int, pixels: np.ndarray, pixfmt: PixFmt) -> None:
        h, w = pixels.shape
        image = self._encode(picture_image(pixels, pixfmt), lossy_ok=True)  # a plain copy: may go lossy where allowed
        box = Rect(top=top, left=left, bottom=top + h, right=left + w)
        base = d.DisplayBase(surface_id=surface_id, box=box, clip=d.Clip(type=ClipType.NONE))
        op = d.Copy(
            src_bitmap=image,
            src_area=Rect(top=0, left=0, bottom=h, right=w),
            rop_descriptor=8,
            scale_mode=1,
            mask=d.QMask(),
        )
        self.conn.send(d.DrawCopy(base=base, data=op))

    def written(self, nbytes: int) -> None:
        self.inflight = max(0, self.inflight - nbytes)

