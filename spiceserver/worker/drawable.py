"""Drawables: a draw operation on a surface, with the regions it writes and reads.

Counterpart of spice ``server/display-channel.cpp`` / ``red-parse-qxl.h`` (``RedDrawable``,
``Drawable``) and the opacity rules of ``display-channel.cpp`` (``is_opaque_item``). The operation
itself is the proto wire structure (``Fill``, ``Copy``, ...), as libspice keeps ``SpiceCopy`` etc.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..proto.enums import ClipType, ImageType
from ..proto.messages import display as d
from ..proto.messages.base import Message, Rect
from ..qxl.commands import CopyBits
from ..region import Region
from .retain import RetainedBytes, crop_sources, image_fields, retained_size

__all__ = ["Drawable", "map_images", "images_of", "region_of", "make_drawable", "ROP_PUT"]

ROP_PUT = 8  # SPICE_ROPD_OP_PUT

_serials = itertools.count(1)


def map_images(value: Any, fn: Callable[[d.Image], d.Image]) -> Any:
    """A copy of ``value`` with every Image inside it (src, brush pattern, mask...) replaced by ``fn``."""
    if isinstance(value, d.Image):
        return fn(value)
    changes: dict[str, Any] | None = None
    for name in image_fields(type(value)):  # () for a non-dataclass or an image-free type
        v = getattr(value, name)
        if v is None or isinstance(v, (int, bytes, str, tuple)):
            continue
        nv = map_images(v, fn)
        if nv is not v:
            if changes is None:
                changes = {}
            changes[name] = nv
    return dataclasses.replace(value, **changes) if changes else value


def images_of(value: Any) -> list[d.Image]:
    """Every image inside ``value`` (a draw body), in field order."""
    out: list[d.Image] = []
    _collect_images(value, out)
    return out


def _collect_images(value: Any, out: list[d.Image]) -> None:
    if isinstance(value, d.Image):
        out.append(value)
        return
    for name in image_fields(type(value)):
        v = getattr(value, name)
        if v is not None and not isinstance(v, (int, bytes, str, tuple)):
            _collect_images(v, out)


def region_of(base: d.DisplayBase) -> Region:
    """The pixels a draw may touch: its box, intersected with its clip rectangles."""
    b = base.box
    region = Region.from_rect(b.left, b.top, b.right, b.bottom)
    if base.clip.type == ClipType.RECTS and base.clip.rects is not None:
        clip = Region([(r.left, r.top, r.right, r.bottom) for r in base.clip.rects.rects])
        region = region & clip
    return region


def _no_mask(op: Any) -> bool:
    mask = getattr(op, "mask", None)
    return mask is None or mask.bitmap is None


def is_opaque(op: Any) -> bool:
    """Whether ``op`` overwrites every pixel of its region without reading the destination."""
    if isinstance(op, d.Fill):
        return op.rop_descriptor == ROP_PUT and op.brush.type != 0 and _no_mask(op)
    if isinstance(op, (d.Copy, d.Opaque)):
        return op.rop_descriptor == ROP_PUT and _no_mask(op) and op.src_bitmap is not None
    if isinstance(op, (d.Blackness, d.Whiteness)):
        return _no_mask(op)
    return False


@dataclass(eq=False, slots=True)
class Drawable:
    """One draw on one surface, shared by every client's pipe (encoded per client when sent)."""

    surface_id: int
    base: d.DisplayBase
    op: Any
    region: Region
    opaque: bool
    reads: Region  # pixels of this surface the result depends on (dest or copy source)
    surface_deps: frozenset[int]  # other surfaces read through SURFACE images
    serial: int = dataclasses.field(default_factory=lambda: next(_serials))
    #: whether the op holds images (then each client encodes them its own way)
    has_images: bool = True
    #: bytes this drawable keeps alive, charged to ``budget`` while the worker keeps it (0: not known yet)
    nbytes: int = 0
    budget: RetainedBytes | None = dataclasses.field(default=None, repr=False)
    #: a frame of a chain about to become a video stream: its source may go lossy (JPEG) to any
    #: client, which then gets the area lossless once the chain ends (:mod:`.video_streams`)
    lossy_frame: bool = False
    #: the marshalled message (type, body) of an op without images: the same bytes for every client
    _wire: tuple[int, bytes] | None = dataclasses.field(default=None, repr=False)

    def charge(self, budget: RetainedBytes) -> None:
        """Count this drawable's bytes in ``budget`` until it is freed."""
        if self.budget is None:
            if not self.nbytes:
                self.nbytes = retained_size(self.op)
            self.budget = budget
            budget.charge(self.nbytes)

    def wire(self) -> tuple[int, bytes]:
        """``(message type, body)`` of an op without images, marshalled once for every client."""
        wire = self._wire
        if wire is None:
            msg = self.message()
            wire = self._wire = (msg.TYPE, msg.encode())
        return wire

    def __del__(self) -> None:
        if self.budget is not None:
            self.budget.release(self.nbytes)

    def message(self, op: Any | None = None) -> Message:
        """The wire message for this drawable, with ``op`` (images already encoded) if given."""
        op = self.op if op is None else op
        if isinstance(op, CopyBits):
            return d.CopyBits(base=self.base, src_pos=op.src_pos)
        cls: Any = d.DRAW_MESSAGES[type(op)]
        msg: Message = cls(base=self.base, data=op)
        return msg

    def __repr__(self) -> str:
        return f"<Drawable #{self.serial} {type(self.op).__name__} surface {self.surface_id} {self.base.box}>"


def make_drawable(surface_id: int, base: d.DisplayBase, op: Any) -> Drawable:
    """A :class:`Drawable` for ``op`` on ``surface_id``: its region, opacity, the pixels it reads and the
    surfaces it depends on; its source bitmaps are cut to what it reads (:func:`crop_sources`)."""
    region = region_of(base)
    if isinstance(op, CopyBits):
        b = base.box
        reads = region.translate(op.src_pos.x - b.left, op.src_pos.y - b.top)
        return Drawable(surface_id, base, op, region, False, reads, _NO_DEPS)
    images = images_of(op)
    deps = _NO_DEPS
    if images:  # an op without images (a solid fill, a glyph run) has nothing to crop or depend on
        op = crop_sources(op, base.box)  # cuts bitmaps only: the surfaces read stay the same
        deps = frozenset(
            img.surface.surface_id for img in images if img.descriptor.type == ImageType.SURFACE and img.surface
        )
    opaque = is_opaque(op)
    reads = _NO_REGION if opaque else region
    if surface_id in deps:  # reads its own surface through an image: anything may matter
        reads = reads | Region.from_rect(-(2**31), -(2**31), 2**31 - 1, 2**31 - 1)
        deps = deps - {surface_id}
    nbytes = 0
    if not images and type(op) in _FIXED_WITHOUT_IMAGES:
        nbytes = _fixed_sizes.get(type(op), 0)
        if not nbytes:
            nbytes = _fixed_sizes[type(op)] = retained_size(op)
    return Drawable(surface_id, base, op, region, opaque, reads, deps, has_images=bool(images), nbytes=nbytes)


_NO_DEPS: frozenset[int] = frozenset()
_NO_REGION = Region()
#: ops whose retained size is the same for every instance without images (numbers and absent
#: images only: no text, no paths), measured once per type
_FIXED_WITHOUT_IMAGES = frozenset((d.Fill, d.Blackness, d.Whiteness, d.Invers))
_fixed_sizes: dict[type, int] = {}


def full_rect(width: int, height: int) -> Rect:
    return Rect(top=0, left=0, bottom=height, right=width)
