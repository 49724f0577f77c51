"""Parsed QXL commands: validated copies of what the guest put in device memory.

Counterpart of spice-server ``server/red-parse-qxl.h`` (``RedDrawable``, ``RedUpdateCmd``,
``RedSurfaceCmd``, ``RedMessage``, ``RedCursorCmd``) and of the ``Spice*`` drawing structures of
spice-common ``common/draw.h``. Unlike libspice, the bodies here are the proto wire structures
(:mod:`spiceserver.proto.messages.display`), so the display channel marshals them as they are:
``DrawCopy(base=drawable.display_base(), data=drawable.body)``.

Everything is immutable and owns its bytes (pixels, glyphs, cursor shapes are copied out of guest
memory) -- except a surface's backing store (:attr:`RedSurfaceCmd.data`), which stays a live view of
guest memory because the canvas renders into it and the guest reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..proto.messages import display as d
from ..proto.messages.base import Message, Point, Point16, Rect
from ..proto.messages.cursor import Cursor

__all__ = [
    "QXLCommand",
    "QXLCommandExt",
    "ReleaseInfo",
    "CopyBits",
    "DrawBody",
    "RedDrawable",
    "RedUpdate",
    "RedSurfaceCmd",
    "RedMessage",
    "RedCursorCmd",
    "RedCommand",
    "DRAW_MESSAGES",
    "NO_SURFACE",
]

#: ``surfaces_dest`` entry meaning "no dependency"
NO_SURFACE = -1


@dataclass(frozen=True, slots=True)
class QXLCommand:
    """A ring element: ``data`` is the QXLPHYSICAL of the command, ``type`` a ``CmdType``."""

    data: int
    type: int


@dataclass(frozen=True, slots=True)
class QXLCommandExt:
    """A command as the device hands it to the worker (``QXLCommandExt``).

    ``group_id`` is the memslot group to resolve addresses in; ``flags`` are ``CmdFlags``
    (COMPAT, COMPAT_16BPP) the device sets in qxl-1 compatibility mode.
    """

    cmd: QXLCommand
    group_id: int
    flags: int = 0


@dataclass(frozen=True, slots=True)
class ReleaseInfo:
    """Where a command's ``QXLReleaseInfo`` is: the QXLPHYSICAL of the command and its group.

    Hand it to :meth:`QXLDevice.release_resource <spiceserver.qxl.device.QXLDevice.release_resource>`
    once the server no longer needs the command (``QXLReleaseInfoExt``).
    """

    addr: int
    group_id: int

    @classmethod
    def of(cls, cmd: QXLCommandExt) -> ReleaseInfo:
        """Where the command ``cmd`` keeps its release info (to release a rejected command)."""
        return cls(addr=cmd.cmd.data, group_id=cmd.group_id)


@dataclass(frozen=True, slots=True)
class CopyBits:
    """``QXL_COPY_BITS``: copy the box-sized area at ``src_pos`` of the same surface to the box."""

    src_pos: Point


#: a QXL draw command's body: an op structure, COPY_BITS, or nothing (QXL_DRAW_NOP)
DrawBody = d.DrawOpStruct | CopyBits | None

#: draw body type -> the display message that carries it (COPY_BITS -> ``display.CopyBits``)
DRAW_MESSAGES = d.DRAW_MESSAGES


@dataclass(slots=True)  # not frozen: built once per command, and a frozen __init__ costs twice as much
class RedDrawable:
    """A ``QXL_CMD_DRAW`` (``RedDrawable``).

    Attributes:
        surface_id: target surface (< n_surfaces; existence is the worker's check).
        effect: ``Effect`` (never on the wire; steers the drawable tree).
        type: ``DrawType``.
        bbox: bounding box (not yet checked against the surface size: the worker does that, as
            ``validate_drawable_bbox``).
        clip: proto Clip with the rectangles copied out.
        self_bitmap: the operation reads its own destination (libspice captures ``self_bitmap_area``
            before drawing). Always False for COPY and BLEND, as libspice forces it.
        surface_deps: surfaces read by the operation, -1 = none (``surfaces_dest``).
        surfaces_rects: the areas read from ``surface_deps``.
        body: the operation (proto structure), :class:`CopyBits`, or None for NOP.
    """

    release_info: ReleaseInfo
    surface_id: int
    effect: int
    type: int
    bbox: Rect
    clip: d.Clip
    mm_time: int
    self_bitmap: bool
    self_bitmap_area: Rect
    surface_deps: tuple[int, int, int]
    surfaces_rects: tuple[Rect, Rect, Rect]
    body: DrawBody

    def display_base(self) -> d.DisplayBase:
        """The DisplayBase every draw message starts with."""
        return d.DisplayBase(surface_id=self.surface_id, box=self.bbox, clip=self.clip)

    def to_message(self) -> Message | None:
        """The display message drawing this as-is (None for NOP).

        Images are sent raw as the guest gave them; a display channel normally replaces them
        (compression, cache hits) before marshalling.
        """
        if self.body is None:
            return None
        if isinstance(self.body, CopyBits):
            return d.CopyBits(base=self.display_base(), src_pos=self.body.src_pos)
        return DRAW_MESSAGES[type(self.body)](base=self.display_base(), data=self.body)  # type: ignore[call-arg]


@dataclass(frozen=True, slots=True)
class RedUpdate:
    """``QXL_CMD_UPDATE``: render ``area`` of ``surface_id``, then ``notify_update(update_id)``."""

    release_info: ReleaseInfo
    area: Rect
    update_id: int
    surface_id: int


@dataclass(frozen=True, slots=True)
class RedSurfaceCmd:
    """``QXL_CMD_SURFACE``: create or destroy an off-screen surface.

    For CREATE, ``data`` is a live view of the ``height * abs(stride)`` guest bytes backing the
    surface (validated to lie in one memslot); with a negative ``stride`` the surface is bottom-up:
    line 0 starts at ``(height - 1) * -stride``. For DESTROY the geometry fields are 0 and ``data``
    is None.
    """

    release_info: ReleaseInfo
    surface_id: int
    type: int
    flags: int
    format: int = 0
    width: int = 0
    height: int = 0
    stride: int = 0
    data_phys: int = 0
    data: memoryview | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RedMessage:
    """``QXL_CMD_MESSAGE``: a NUL-terminated debug string from the driver (without the NUL)."""

    release_info: ReleaseInfo
    text: bytes


@dataclass(frozen=True, slots=True)
class RedCursorCmd:
    """``QXL_CMD_CURSOR``.

    Attributes:
        type: ``CursorCmdType`` SET, MOVE, HIDE or TRAIL.
        position: SET and MOVE.
        visible: SET.
        shape: SET: proto Cursor (flags 0, header, pixel data copied out); None otherwise.
        trail_length, trail_frequency: TRAIL.
    """

    release_info: ReleaseInfo
    type: int
    position: Point16 = field(default_factory=lambda: Point16(x=0, y=0))
    visible: bool = False
    shape: Cursor | None = None
    trail_length: int = 0
    trail_frequency: int = 0


RedCommand = RedDrawable | RedUpdate | RedSurfaceCmd | RedMessage | RedCursorCmd
