"""The items of a display client's pipe, each knowing how it is marshalled and whether it may be dropped.

Counterpart of spice ``server/red-pipe-item.h`` / ``dcc.h`` (``RedPipeItem`` and its display
subclasses: ``RedDrawablePipeItem``, ``RedImageItem``, the message items) and ``dcc-send.cpp`` (how
each is marshalled). Video streaming adds its stream create / data / clip / destroy / upgrade items
here, as further subclasses.

The client asks an item three things, never which kind it is:

* :meth:`PipeItem.marshal` -- send it (through a :class:`Marshaller`: queue a message, encode an
  image for this client);
* :meth:`PipeItem.reads` -- whether it depends on the pixels a later draw hides (then the hidden
  draw must still be sent: it cannot be pruned);
* :meth:`PipeItem.collapse_area` -- for a slow client, whether it may be replaced by a picture of
  the canvas, and of which area.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

from ..canvas.surface import PixFmt
from ..proto.enums import ClipType
from ..proto.messages import display as d
from ..proto.messages.base import Message, Rect
from .drawable import ROP_PUT, Drawable, map_images
from .picture import picture_image

if TYPE_CHECKING:
    from .stream_encoder import EncodeJob
    from .stream_items import StreamDataItem

__all__ = ["PipeItem", "MessageItem", "DrawableItem", "PictureItem", "Marshaller"]


class Marshaller(Protocol):
    """What an item needs from its client to go on the wire."""

    def send(self, msg: Message) -> None:
        """Queue a message (after any message the image encoder had to emit first)."""

    def send_raw(self, type_: int, body: bytes) -> None:
        """Queue an already marshalled message body of type ``type_``."""

    def encode(self, img: d.Image, lossy_ok: bool = False, force_lossy: bool = False, share: bool = True) -> d.Image:
        """The image as this client receives it (cache hit, codec chosen for it); ``share``: its
        codec results may serve the display's other clients (:mod:`.shared_encode`)."""
        ...

    # what video stream items need (:mod:`.stream_items`)

    def has_cap(self, cap: int) -> bool:
        """Whether the client announced display capability ``cap``."""
        ...

    def submit_encode(self, item: StreamDataItem, job: EncodeJob) -> None:
        """Run ``item``'s encode job on an encoder thread; the client is woken when it is done."""

    def playback_delay(self, ms: int) -> None:
        """An encoder wants the client to show video at least ``ms`` late (mm-time latency)."""

    def frame_sent(self, item: StreamDataItem, data: bytes) -> None:
        """An encoded frame goes to the client (the worker's ``frame_tap`` sees it)."""


class PipeItem:
    """One pipe entry; ``dead`` once pruned or collapsed (skipped when its turn comes)."""

    __slots__ = ("dead",)

    #: the client's counter this item adds one to when sent, if any
    STAT: ClassVar[str | None] = None

    def __init__(self) -> None:
        self.dead = False

    def marshal(self, out: Marshaller) -> None:
        """Send this item through ``out`` (its client)."""
        raise NotImplementedError

    def reads(self, hidden: Drawable) -> bool:
        """Whether this item, queued after ``hidden``, needs ``hidden``'s pixels on the client."""
        return False

    def collapse_area(self) -> tuple[int, tuple[int, int, int, int] | None] | None:
        """For collapsing: (surface id, bbox or None) if a canvas picture may replace this item."""
        return None


class MessageItem(PipeItem):
    """A prebuilt message (SURFACE_CREATE, MONITORS_CONFIG, MARK...): reads no pixels."""

    __slots__ = ("msg",)

    def __init__(self, msg: Message) -> None:
        super().__init__()
        self.msg = msg

    def marshal(self, out: Marshaller) -> None:
        """Send the message."""
        out.send(self.msg)


class DrawableItem(PipeItem):
    """A draw of the tree, its images encoded for the client when sent (libspice ``RedDrawablePipeItem``)."""

    __slots__ = ("drawable",)
    STAT = "drawables"

    def __init__(self, drawable: Drawable) -> None:
        super().__init__()
        self.drawable = drawable

    def marshal(self, out: Marshaller) -> None:
        """Send the draw, its images encoded for the client (a plain copy's source may go lossy)."""
        drawable = self.drawable
        if not drawable.has_images:  # nothing to encode per client: the same bytes for all
            out.send_raw(*drawable.wire())
            return
        op = drawable.op
        if isinstance(op, (d.Copy, d.Opaque)) and op.src_bitmap is not None and op.rop_descriptor == ROP_PUT:
            # the source of a plain copy may go lossy (JPEG) where allowed; masks and brushes never
            src = out.encode(op.src_bitmap, True, drawable.lossy_frame)
            op = replace(map_images(replace(op, src_bitmap=None), out.encode), src_bitmap=src)
        else:
            op = map_images(op, out.encode)
        out.send(drawable.message(op))

    def reads(self, hidden: Drawable) -> bool:
        """Whether this draw reads ``hidden``'s surface through an image, or pixels of ``hidden`` on the same surface."""
        other = self.drawable
        if hidden.surface_id in other.surface_deps:
            return True
        return other.surface_id == hidden.surface_id and other.reads.intersects(hidden.region)

    def collapse_area(self) -> tuple[int, tuple[int, int, int, int] | None]:
        """The draw's surface and bounding box."""
        return self.drawable.surface_id, self.drawable.region.bbox()


class PictureItem(PipeItem):
    """Pixels taken from a canvas (a new client's first picture, a collapsed pipe), sent as one
    full-area DRAW_COPY; they were copied when queued, so they read nothing later."""

    __slots__ = ("left", "lossless", "pixels", "pixfmt", "surface_id", "top")

    def __init__(self, surface_id: int, left: int, top: int, pixels: np.ndarray, pixfmt: PixFmt, *, lossless: bool = False) -> None:
        super().__init__()
        self.surface_id, self.left, self.top, self.pixels, self.pixfmt = surface_id, left, top, pixels, pixfmt
        #: never lossy (a video stream's upgrade)
        self.lossless = lossless

    def marshal(self, out: Marshaller) -> None:
        """Send the pixels as one DRAW_COPY (may go lossy where allowed, unless ``lossless``)."""
        h, w = self.pixels.shape
        # this client's own copy of the canvas: nobody else sends this object, so nothing is kept
        image = out.encode(picture_image(self.pixels, self.pixfmt), not self.lossless, share=False)
        box = Rect(top=self.top, left=self.left, bottom=self.top + h, right=self.left + w)
        base = d.DisplayBase(surface_id=self.surface_id, box=box, clip=d.Clip(type=ClipType.NONE))
        op = d.Copy(
            src_bitmap=image,
            src_area=Rect(top=0, left=0, bottom=h, right=w),
            rop_descriptor=8,
            scale_mode=1,
            mask=d.QMask(),
        )
        out.send(d.DrawCopy(base=base, data=op))
