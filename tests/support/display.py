"""A display-channel client for tests: links display (and cursor), renders what the server sends
into its own canvases with spiceserver's canvas code, keeps the pixmap cache as a client does."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from spiceserver.canvas.draw import render_op
from spiceserver.canvas.images import NullResolver
from spiceserver.canvas.surface import Canvas
from spiceserver.codecs.glz import GlzDecoderWindow
from spiceserver.proto.enums import ChannelType, DisplayCap
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Message
from tests.support.client import ClientChannel, Session


@dataclass
class DisplayState(NullResolver):
    """What a client knows: surfaces, caches, monitors, marks."""

    surfaces: dict[int, Canvas] = field(default_factory=dict)
    images: dict[int, Any] = field(default_factory=dict)
    palettes: dict[int, Any] = field(default_factory=dict)
    monitors: d.MonitorsConfig | None = None
    marks: int = 0
    messages: list[Message] = field(default_factory=list)
    glz: GlzDecoderWindow = field(default_factory=GlzDecoderWindow)
    #: live streams: id -> [create message, clip rects (left, top, right, bottom) or None for none]
    streams: dict[int, list[Any]] = field(default_factory=dict)
    stream_frames: int = 0

    # ImageResolver protocol
    def surface(self, surface_id: int) -> Canvas:
        return self.surfaces[surface_id]

    def cached_image(self, image_id: int) -> Any:
        return self.images[image_id]

    def cached_palette(self, palette_id: int) -> Any:
        return self.palettes[palette_id]

    def cache_image(self, image_id: int, pixmap: Any) -> None:
        self.images[image_id] = pixmap

    def cache_palette(self, palette: Any) -> None:
        self.palettes[palette.unique] = palette

    def glz_window(self) -> GlzDecoderWindow:
        return self.glz

    def apply(self, msg: Message) -> None:
        self.messages.append(msg)
        if isinstance(msg, d.SurfaceCreate):
            self.surfaces[msg.surface_id] = Canvas(msg.width, msg.height, msg.format)
        elif isinstance(msg, d.SurfaceDestroy):
            self.surfaces.pop(msg.surface_id, None)
        elif isinstance(msg, d.InvalList):
            for r in msg.resources:
                self.images.pop(r.id, None)
        elif isinstance(msg, d.InvalAllPixmaps):
            self.images.clear()
        elif isinstance(msg, d.MonitorsConfig):
            self.monitors = msg
        elif isinstance(msg, d.DisplayMark):
            self.marks += 1
        elif isinstance(msg, d.StreamCreate):
            assert msg.id not in self.streams, f"stream {msg.id} created twice"
            self.streams[msg.id] = [msg, _clip_rects(msg.clip)]
        elif isinstance(msg, d.StreamClip):
            self.streams[msg.id][1] = _clip_rects(msg.clip)
        elif isinstance(msg, d.StreamDestroy):
            del self.streams[msg.id]
        elif isinstance(msg, d.StreamDestroyAll):
            self.streams.clear()
        elif isinstance(msg, (d.StreamData, d.StreamDataSized)):
            self._stream_frame(msg)
        elif isinstance(msg, d.CopyBits):
            render_op(self.surfaces[msg.base.surface_id], msg.base, msg, self)
        elif hasattr(msg, "base") and hasattr(msg, "data") and isinstance(msg.base, d.DisplayBase):
            render_op(self.surfaces[msg.base.surface_id], msg.base, msg.data, self)

    def _stream_frame(self, msg: d.StreamData | d.StreamDataSized) -> None:
        """Show an MJPEG frame at once (a real client waits for its mm-time), clipped, scaled to dest."""
        create, clip = self.streams[msg.base.id]
        assert create.codec_type == 1, "the test client decodes MJPEG only"
        dest = msg.dest if isinstance(msg, d.StreamDataSized) else create.dest
        rgb = np.asarray(Image.open(io.BytesIO(msg.data)).convert("RGB"), np.uint32)
        px = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        if not create.flags & 1:
            px = px[::-1]
        w, h = dest.right - dest.left, dest.bottom - dest.top
        if px.shape != (h, w):  # nearest neighbour, as spice-common's put_image
            px = px[(np.arange(h) * px.shape[0]) // h][:, (np.arange(w) * px.shape[1]) // w]
        canvas = self.surfaces[create.surface_id].pixels
        region = [(dest.left, dest.top, dest.right, dest.bottom)] if clip is None else clip
        for x0, y0, x1, y1 in region:
            x0, y0, x1, y1 = max(x0, dest.left), max(y0, dest.top), min(x1, dest.right), min(y1, dest.bottom)
            if x1 > x0 and y1 > y0:
                canvas[y0:y1, x0:x1] = px[y0 - dest.top : y1 - dest.top, x0 - dest.left : x1 - dest.left]
        self.stream_frames += 1


def _clip_rects(clip: d.Clip) -> list[tuple[int, int, int, int]] | None:
    if clip.type == 0 or clip.rects is None:
        return None
    return [(r.left, r.top, r.right, r.bottom) for r in clip.rects.rects]


DEFAULT_DISPLAY_CAPS = (DisplayCap.MONITORS_CONFIG, DisplayCap.LZ4_COMPRESSION)


async def link_display(
    session: Session,
    channel_id: int = 0,
    *,
    caps: tuple[int, ...] = DEFAULT_DISPLAY_CAPS,
    cache_size: int = 20 * 1024 * 1024,
    glz_window: int = 1 << 22,
) -> tuple[ClientChannel, DisplayState]:
    ch = await session.link(ChannelType.DISPLAY, channel_id, channel_caps=caps)
    await ch.send(d.DisplayInit(pixmap_cache_id=1, pixmap_cache_size=cache_size, glz_dictionary_id=1, glz_dictionary_window_size=glz_window))
    return ch, DisplayState()


async def pump_until(ch: ClientChannel, state: DisplayState, pred: Any, timeout: float = 10.0) -> None:
    """Receive and apply messages until ``pred(state)`` holds."""

    async def run() -> None:
        while not pred(state):
            state.apply(await ch.recv(timeout))

    await asyncio.wait_for(run(), timeout)
