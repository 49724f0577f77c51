"""A synthetic guest: a fake QXL driver that draws a desktop with real QXL commands.

Where :mod:`spiceserver.desktop` paints numpy frames for the framebuffer path, this module plays the
guest side of an emulated QXL device (:class:`~spiceserver.qxl.device.QXLDevice`) the way the Linux
and Windows QXL drivers do: memslots and the primary surface are set up through the I/O ports
(``MEMSLOT_ADD``, ``CREATE_PRIMARY`` with ``ram.create_surface`` filled in), every drawing is a
``QXLDrawable`` written into guest memory and pushed on the command ring, cursor shapes go through the
cursor ring, released commands come back through the release ring and their memory is reused. Nothing
takes a shortcut into the worker.

What it draws:

* a wallpaper (a solid fill and a gradient bitmap in 64-row bands, sent with the QXL image cache flag);
* windows: fills, borders as strokes, title bars with text as glyph strings (a small font rasterized
  with Pillow into ``RasterGlyphA4`` / ``RasterGlyphA1`` glyphs), buttons as fills through a 1-bit mask;
* a photo viewer with smooth 32- and 24-bit photos (cache flag: every redraw is a client cache hit);
* an editor whose text pane scrolls with ``COPY_BITS``;
* a chart drawn into an off-screen surface, then copied to the screen with a ``SURFACE`` image;
* a window moving along the bottom (the wallpaper under it repaired from the cached bands);
* a hardware cursor (cursor ring: ``SET`` with an ``ALPHA`` shape, then ``MOVE``).

:meth:`SyntheticGuest.draw_static` paints the still desktop, :meth:`SyntheticGuest.step` one
animation frame, :meth:`SyntheticGuest.resize` switches modes, and the ``scene_*`` methods each
exercise one kind of drawing operation on a small (at least 320x240) primary for the tests.

The guest code runs on the caller's thread, which plays the guest vCPU: synchronous I/O writes block
until the device's worker is done, and a full ring or exhausted memory is waited out (the guest polls
the release ring and sends ``NOTIFY_OOM``, as the kernel driver does).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, is_dataclass
from typing import Final

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from .desktop import ARROW_CURSOR
from .proto.enums import (
    BitmapFlags,
    BitmapFmt,
    BrushType,
    ClipType,
    CompositeFlags,
    CursorType,
    ImageFlags,
    ImageType,
    LineFlags,
    PathFlags,
    StringFlags,
)
from .proto.messages import display as d
from .proto.messages.base import Point, Point16, PointFix, Rect, Transform
from .proto.messages.cursor import Cursor, CursorHeader
from .qxl import layout as L
from .qxl.commands import CopyBits, DrawBody, QXLCommand
from .qxl.device import QXLDevice
from .qxl.guest import GuestDriver
from .qxl.layout import CmdType, Effect, Interrupt, IOPort

__all__ = [
    "SyntheticGuest",
    "SyntheticDriver",
    "GlyphFont",
    "SCENES",
    "bitmap_image",
    "surface_image",
    "rgb",
    "xywh",
    "ROPD_PUT",
    "ROPD_OR",
    "ROPD_AND",
    "ROPD_XOR",
]

# --- rop descriptors (SpiceRopd) and other wire constants ---------------------------------------

ROPD_INVERS_SRC: Final = 1 << 0
ROPD_INVERS_BRUSH: Final = 1 << 1
ROPD_INVERS_DEST: Final = 1 << 2
ROPD_PUT: Final = 1 << 3
ROPD_OR: Final = 1 << 4
ROPD_AND: Final = 1 << 5
ROPD_XOR: Final = 1 << 6
ROPD_BLACKNESS: Final = 1 << 7
ROPD_WHITENESS: Final = 1 << 8
ROPD_INVERS: Final = 1 << 9
ROPD_INVERS_RES: Final = 1 << 10

SCALE_INTERPOLATE: Final = 0
SCALE_NEAREST: Final = 1

#: pixman operators and filters used in DRAW_COMPOSITE flags
PIXMAN_OP_SRC: Final = 0x01
PIXMAN_OP_OVER: Final = 0x03
PIXMAN_OP_ADD: Final = 0x0C
PIXMAN_FILTER_NEAREST: Final = 3
PIXMAN_REPEAT_NONE: Final = 0
PIXMAN_REPEAT_NORMAL: Final = 1
_COMPOSITE_SRC_FILTER_SHIFT: Final = 8
_COMPOSITE_MASK_FILTER_SHIFT: Final = 11
_COMPOSITE_SRC_REPEAT_SHIFT: Final = 14

FIXED_ONE: Final = 1 << 16  # pixman_fixed_t 1.0 (QXLTransform entries)

#: every interrupt the kernel driver unmasks (``QXL_INTERRUPT_MASK``)
INTERRUPT_MASK: Final = (
    Interrupt.DISPLAY
    | Interrupt.CURSOR
    | Interrupt.IO_CMD
    | Interrupt.ERROR
    | Interrupt.CLIENT
    | Interrupt.CLIENT_MONITORS_CONFIG
)

_NO_RECT: Final = Rect(top=0, left=0, bottom=0, right=0)
_NO_DEPS: Final = (-1, -1, -1)

#: the draw effect a driver would give each kind of operation (steers the server's drawable tree)
_EFFECTS: dict[type, int] = {
    d.Fill: Effect.OPAQUE,
    d.Copy: Effect.OPAQUE,
    d.Opaque: Effect.OPAQUE,
    d.Blackness: Effect.BLACKNESS_ON_DUP,
    d.Whiteness: Effect.WHITENESS_ON_DUP,
    d.Invers: Effect.REVERT_ON_DUP,
    CopyBits: Effect.OPAQUE,
}


def rgb(r: int, g: int, b: int) -> int:
    """``0x00RRGGBB``."""
    return (r << 16) | (g << 8) | b


def xywh(x: int, y: int, w: int, h: int) -> Rect:
    """A Rect from position and size."""
    return Rect(top=y, left=x, bottom=y + h, right=x + w)


def _rect_and(a: Rect, b: Rect) -> Rect | None:
    r = Rect(
        top=max(a.top, b.top), left=max(a.left, b.left), bottom=min(a.bottom, b.bottom), right=min(a.right, b.right)
    )
    return r if r.left < r.right and r.top < r.bottom else None


def _rect_minus(a: Rect, b: Rect) -> list[Rect]:
    """``a`` without ``b`` as up to four rectangles."""
    inter = _rect_and(a, b)
    if inter is None:
        return [a]
    out = []
    if a.top < inter.top:
        out.append(Rect(top=a.top, left=a.left, bottom=inter.top, right=a.right))
    if inter.bottom < a.bottom:
        out.append(Rect(top=inter.bottom, left=a.left, bottom=a.bottom, right=a.right))
    if a.left < inter.left:
        out.append(Rect(top=inter.top, left=a.left, bottom=inter.bottom, right=inter.left))
    if inter.right < a.right:
        out.append(Rect(top=inter.top, left=inter.right, bottom=inter.bottom, right=a.right))
    return out


def _shift(r: Rect, dx: int, dy: int) -> Rect:
    return Rect(top=r.top + dy, left=r.left + dx, bottom=r.bottom + dy, right=r.right + dx)


def _payload_size(value: object) -> int:
    """A generous estimate of the guest bytes a drawing structure takes (for arena reservations)."""
    if isinstance(value, bytes | bytearray):
        return len(value) + 64
    if isinstance(value, tuple):
        return 16 * len(value) + sum(_payload_size(v) for v in value if not isinstance(v, int))
    if is_dataclass(value) and not isinstance(value, type):
        return 96 + sum(_payload_size(getattr(value, f.name)) for f in fields(value))
    return 0


# --- images ---------------------------------------------------------------------------------------


def bitmap_image(
    image_id: int,
    fmt: int,
    width: int,
    rows: np.ndarray,
    *,
    palette: d.Palette | None = None,
    cache: bool = False,
    top_down: bool = True,
) -> d.Image:
    """A BITMAP image from ``rows`` ((height, bytes per row) uint8, top row first).

    Rows are padded to a 4-byte stride; a bottom-up bitmap (``top_down`` False) stores the last row
    first. ``cache`` sets the QXL image cache flag: the server may then keep the image in the
    client's pixmap cache under ``image_id`` (so equal ids must mean equal pixels).
    """
    height, nbytes = rows.shape
    stride = (nbytes + 3) & ~3
    buf = np.zeros((height, stride), np.uint8)
    buf[:, :nbytes] = rows
    if not top_down:
        buf = buf[::-1]
    return d.Image(
        descriptor=d.ImageDescriptor(
            id=image_id,
            type=ImageType.BITMAP,
            flags=int(ImageFlags.CACHE_ME) if cache else 0,
            width=width,
            height=height,
        ),
        bitmap=d.BitmapData(
            format=fmt,
            flags=int(BitmapFlags.TOP_DOWN) if top_down else 0,
            x=width,
            y=height,
            stride=stride,
            palette=palette,
            data=buf.tobytes(),
        ),
    )


def surface_image(surface_id: int, width: int, height: int) -> d.Image:
    """A SURFACE image: the pixels of another surface."""
    return d.Image(
        descriptor=d.ImageDescriptor(id=0, type=ImageType.SURFACE, flags=0, width=width, height=height),
        surface=d.Surface(surface_id=surface_id),
    )


def _rows32(px: np.ndarray) -> np.ndarray:
    """(h, w) uint32 pixels as (h, 4w) bytes B, G, R, X/A."""
    h, w = px.shape
    return np.ascontiguousarray(px.astype("<u4")).view(np.uint8).reshape(h, w * 4)


def _rows24(px: np.ndarray) -> np.ndarray:
    h, w = px.shape
    out = np.empty((h, w, 3), np.uint8)
    out[..., 0] = px & 0xFF
    out[..., 1] = (px >> 8) & 0xFF
    out[..., 2] = (px >> 16) & 0xFF
    return out.reshape(h, w * 3)


def _rows16(px: np.ndarray) -> np.ndarray:
    """x1r5g5b5, little-endian."""
    h, w = px.shape
    v = (((px >> 19) & 0x1F) << 10) | (((px >> 11) & 0x1F) << 5) | ((px >> 3) & 0x1F)
    return np.ascontiguousarray(v.astype("<u2")).view(np.uint8).reshape(h, w * 2)


def _rows4be(idx: np.ndarray) -> np.ndarray:
    h, w = idx.shape
    if w % 2:
        idx = np.concatenate([idx, np.zeros((h, 1), idx.dtype)], axis=1)
    out: np.ndarray = ((idx[:, 0::2] << 4) | idx[:, 1::2]).astype(np.uint8)
    return out


def _rows1be(bits: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.packbits(bits.astype(bool), axis=1, bitorder="big")
    return out


def _photo_pixels(w: int, h: int, phase: float = 0.0) -> np.ndarray:
    """A smooth colour field (0x00RRGGBB), like :class:`~spiceserver.desktop.SyntheticDesktop`'s photo."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(xx / 23.0 + phase) * np.cos(yy / 17.0)
    g = 128 + 90 * np.sin((xx + yy) / 31.0 + 2 * phase)
    b = 128 + 100 * np.cos(np.hypot(xx - w / 2, yy - h / 2) / 13.0 - phase)
    c = [np.clip(v, 0, 255).astype(np.uint32) for v in (r, g, b)]
    out: np.ndarray = (c[0] << 16) | (c[1] << 8) | c[2]
    return out


def _disc(size: int) -> np.ndarray:
    """A filled circle as a (size, size) bool mask."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    c = size / 2
    out: np.ndarray = (xx - c) ** 2 + (yy - c) ** 2 <= c * c
    return out


def _premultiplied(px: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """ARGB with colour channels multiplied by alpha (what pixman's OVER expects)."""
    a = alpha.astype(np.uint32)
    r = ((px >> 16) & 0xFF) * a // 255
    g = ((px >> 8) & 0xFF) * a // 255
    b = (px & 0xFF) * a // 255
    out: np.ndarray = (a << 24) | (r << 16) | (g << 8) | b
    return out


# --- glyphs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Glyph:
    left: int  # glyph_origin: from the pen position on the baseline to the glyph's top-left corner
    top: int
    width: int
    height: int
    data: bytes  # rows bottom-up (spice-common reads raster glyphs bottom-up), packed at the depth
    advance: float


class GlyphFont:
    """A font rasterized with Pillow into SPICE raster glyphs (1 or 4 bits of coverage per pixel).

    Args:
        size: pixel size (Pillow's built-in scalable font).
        depth: 1 (``RASTER_A1``, no anti-aliasing) or 4 (``RASTER_A4``).
    """

    def __init__(self, size: int = 13, depth: int = 4) -> None:
        if depth not in (1, 4):
            raise ValueError("glyph depth must be 1 or 4")
        font = ImageFont.load_default(size=size)
        if not isinstance(font, ImageFont.FreeTypeFont):
            raise RuntimeError("Pillow was built without FreeType: no scalable font to rasterize")
        self.font = font
        self.size = size
        self.depth = depth
        ascent, descent = font.getmetrics()
        self.ascent = ascent
        self.descent = descent
        self.line_height = ascent + descent + 1
        self._glyphs: dict[str, _Glyph] = {}

    def glyph(self, ch: str) -> _Glyph:
        """The rasterized glyph of one character (cached)."""
        g = self._glyphs.get(ch)
        if g is None:
            g = self._glyphs[ch] = self._rasterize(ch)
        return g

    def _rasterize(self, ch: str) -> _Glyph:
        left, top, right, bottom = (int(v) for v in self.font.getbbox(ch, anchor="ls"))
        advance = float(self.font.getlength(ch))
        w, h = right - left, bottom - top
        if w <= 0 or h <= 0:
            return _Glyph(0, 0, 0, 0, b"", advance)
        im = PILImage.new("L", (w, h), 0)
        draw = ImageDraw.Draw(im)
        draw.fontmode = "1" if self.depth == 1 else "L"
        draw.text((-left, -top), ch, font=self.font, fill=255, anchor="ls")
        cov = np.asarray(im, dtype=np.uint8)[::-1]  # bottom-up
        if not cov.any():
            return _Glyph(0, 0, 0, 0, b"", advance)
        packed = _rows1be(cov >= 128) if self.depth == 1 else _rows4be(cov >> 4)
        return _Glyph(left, top, w, h, packed.tobytes(), advance)

    def measure(self, text: str) -> int:
        """The advance of ``text`` in pixels."""
        return int(sum(self.glyph(ch).advance for ch in text) + 0.5)

    def string(self, text: str, x: int, y: int) -> tuple[d.String, Rect] | None:
        """Glyphs of ``text`` with the pen starting at ``(x, y)`` on the baseline, and their bounding
        box; None if nothing is visible (blanks only)."""
        pen = float(x)
        glyphs: list[d.RasterGlyph] = []
        left = top = 1 << 30
        right = bottom = -(1 << 30)
        cls = d.RasterGlyphA1 if self.depth == 1 else d.RasterGlyphA4
        for ch in text:
            g = self.glyph(ch)
            if g.width:
                px = int(pen + 0.5)
                glyphs.append(
                    cls(
                        render_pos=Point(x=px, y=y),
                        glyph_origin=Point(x=g.left, y=g.top),
                        width=g.width,
                        height=g.height,
                        data=g.data,
                    )
                )
                left, top = min(left, px + g.left), min(top, y + g.top)
                right, bottom = max(right, px + g.left + g.width), max(bottom, y + g.top + g.height)
            pen += g.advance
        if not glyphs:
            return None
        flags = StringFlags.RASTER_A1 if self.depth == 1 else StringFlags.RASTER_A4
        return d.String(flags=int(flags), glyphs=tuple(glyphs)), Rect(top=top, left=left, bottom=bottom, right=right)


# --- the driver: memory management over GuestDriver -------------------------------------------------


class _Arena:
    """A bump-allocated slice of the guest's RAM pages, reusable once its commands came back."""

    __slots__ = ("end", "next", "outstanding", "start")

    def __init__(self, start: int, end: int) -> None:
        self.start = self.next = start
        self.end = end
        self.outstanding = 0  # commands allocated here and not yet released

    @property
    def free(self) -> int:
        return self.end - self.next

    @property
    def capacity(self) -> int:
        return self.end - self.start

    def alloc(self, size: int, align: int) -> int | None:
        pos = (self.next + align - 1) & ~(align - 1)
        if pos + size > self.end:
            return None
        self.next = pos + size
        return pos

    def rewind(self) -> None:
        self.next = self.start


class SyntheticDriver(GuestDriver):
    """A :class:`~spiceserver.qxl.guest.GuestDriver` whose memory is recycled as commands are released.

    The RAM pages (memslot ``slots_start``) are split into a *resident* arena, for images drawn again
    and again (written once; drawables point at the same ``QXLImage``, as drivers with an image
    cache do), and :attr:`FRAME_ARENAS` arenas used in turn for commands. Everything one command
    needs is taken from one arena (:meth:`reserve` first), so an arena is free again when every
    command allocated in it has come back through the release ring. Off-screen surfaces take VRAM,
    rewound when no off-screen surface is left.

    Args:
        device: the QXL device.
        timeout: how long to wait for ring space or released memory before giving up.
        kick_after: while a ring stays full, notify the device again after this many seconds
            (None: rely on the consumer alone, as the kernel driver does).
    """

    FRAME_ARENAS = 6
    RESIDENT_SHARE = 0.4

    def __init__(self, device: QXLDevice, *, timeout: float = 10.0, kick_after: float | None = None) -> None:
        super().__init__(device, setup=False)
        self.timeout = timeout
        self.kick_after = kick_after
        self.arenas: list[_Arena] = []
        self.resident: _Arena | None = None
        self.current: _Arena | None = None
        self._use_resident = False
        self._resident_images: dict[int, tuple[d.Image, int]] = {}
        #: QXLPHYSICAL -> command type of every command pushed and not yet released
        self.outstanding: dict[int, int] = {}
        #: CREATE commands of live off-screen surfaces (the server keeps them until DESTROY)
        self.held: dict[int, int] = {}
        self.submitted = 0
        self.released = 0
        self.errors_seen = 0
        self._batching = 0
        self.arena_switches = 0

    # --- memory ----------------------------------------------------------------------------------

    def setup_memslots(self) -> None:
        """``MEMSLOT_ADD`` for RAM and VRAM, then carve the RAM pages into arenas."""
        super().setup_memslots()
        assert self.main is not None
        start, end = self.main.start, self.main.end
        split = start + int((end - start) * self.RESIDENT_SHARE) // 4096 * 4096
        self.resident = _Arena(start, split)
        size = (end - split) // self.FRAME_ARENAS // 4096 * 4096
        self.arenas = [_Arena(split + i * size, split + (i + 1) * size) for i in range(self.FRAME_ARENAS)]
        self.current = self.arenas[0]
        self._resident_images.clear()

    def alloc(self, size: int, *, vram: bool = False, align: int = 8) -> int:
        """Guest memory from the current arena (or VRAM); returns its QXLPHYSICAL."""
        if vram:
            return super().alloc(size, vram=True, align=align)
        arena = self.resident if self._use_resident else self.current
        if arena is None or self.main is None:
            raise RuntimeError("memslots are not set up")
        off = arena.alloc(max(size, 1), align)
        if off is None:
            raise MemoryError(f"guest arena exhausted ({size} bytes wanted, {arena.free} free): reserve() more first")
        return self.main.phys(off)

    def _arena_of(self, phys: int) -> _Arena | None:
        if self.main is None:
            return None
        off = phys - self.main.high_bits + self.main.slot_base
        for arena in self.arenas:
            if arena.start <= off < arena.end:
                return arena
        if self.resident is not None and self.resident.start <= off < self.resident.end:
            return self.resident
        return None

    def reserve(self, need: int) -> None:
        """Make sure the current arena has ``need`` bytes: switch to a free arena if not."""
        current = self.current
        if current is None:
            raise RuntimeError("memslots are not set up")
        if current.free >= need:
            return
        if need > current.capacity:
            raise MemoryError(f"a command needing {need} bytes does not fit a {current.capacity}-byte arena")
        deadline = time.monotonic() + self.timeout
        start = self.arenas.index(current)
        while True:
            self.collect()
            for i in range(1, len(self.arenas) + 1):
                arena = self.arenas[(start + i) % len(self.arenas)]
                if arena.outstanding == 0:
                    arena.rewind()
                    self.current = arena
                    self.arena_switches += 1
                    return
            if time.monotonic() > deadline:
                busy = [a.outstanding for a in self.arenas]
                raise MemoryError(f"no guest memory released within {self.timeout} s (commands out per arena: {busy})")
            self.device.io_write(IOPort.NOTIFY_OOM, 0)
            time.sleep(0.001)

    def make_resident(self, img: d.Image) -> bool:
        """Write ``img`` into the resident arena once; drawables using it then point at that copy.

        Returns False (and nothing changes) when it does not fit.
        """
        key = img.descriptor.id
        if key in self._resident_images:
            return self._resident_images[key][0] is img
        if self.resident is None or self.resident.free < _payload_size(img) + 4096:
            return False
        self._use_resident = True
        try:
            phys = super().image(img)
        finally:
            self._use_resident = False
        self._resident_images[key] = (img, phys)
        return True

    def rewind_resident(self) -> None:
        """Forget every resident image (only when no command pointing at one is outstanding)."""
        if self.resident is not None:
            self.resident.rewind()
        self._resident_images.clear()

    def rewind_vram(self) -> None:
        """Reuse VRAM from the start (only when no off-screen surface is alive)."""
        if self.surf is not None:
            self.surf.next = self.surf.start

    def image(self, img: d.Image | None, chunk_size: int | None = None, *, unstable: bool = False) -> int:
        """A resident image's address, or a new QXLImage in the current arena."""
        if img is not None:
            hit = self._resident_images.get(img.descriptor.id)
            if hit is not None and hit[0] is img:
                return hit[1]
        return super().image(img, chunk_size, unstable=unstable)

    # --- rings and releases ------------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Queue commands without notifying the device, then notify once at the end (a driver
        handing over a whole frame). A ring that fills up meanwhile is handed over at once."""
        self._batching += 1
        try:
            yield
        finally:
            self._batching -= 1
            if not self._batching:
                self.device.io_write(IOPort.NOTIFY_CMD, 0)
                self.device.io_write(IOPort.NOTIFY_CURSOR, 0)

    def submit(self, phys: int, type_: int) -> bool:
        """Push a command on its ring, notifying the device if the ring asks for it (not while
        batching); False if the ring is full."""
        if self._batching:
            ring = self.cursor_ring if type_ == CmdType.CURSOR else self.cmd_ring
            ok = ring.push(QXLCommand(data=phys, type=type_)) is not None
        else:
            ok = super().submit(phys, type_)
        if ok:
            arena = self._arena_of(phys)
            if arena is not None:
                arena.outstanding += 1
            self.outstanding[phys] = type_
            self.submitted += 1
        return ok

    def push(self, phys: int, type_: int) -> None:
        """Push a command, waiting while its ring is full.

        While waiting, the device is notified again every :attr:`kick_after` seconds (None: never):
        a notification is idempotent, and it keeps a consumer that went to sleep with the ring full
        from stalling the guest.
        """
        start = time.monotonic()
        kicked = start
        port = IOPort.NOTIFY_CURSOR if type_ == CmdType.CURSOR else IOPort.NOTIFY_CMD
        if self.submit(phys, type_):
            return
        if self._batching:
            self.device.io_write(port, 0)  # hand the full ring over
        while not self.submit(phys, type_):
            now = time.monotonic()
            if now - start > self.timeout:
                raise TimeoutError(f"the {'cursor' if type_ == CmdType.CURSOR else 'command'} ring stayed full")
            if self.kick_after is not None and now - kicked > self.kick_after:
                self.device.io_write(port, 0)
                kicked = now
            self.collect()
            time.sleep(0.0005)

    def collect(self) -> list[int]:
        """Take back released commands (``FLUSH_RELEASE`` first) and free their arenas' share."""
        ids = self.collect_releases(flush=True)
        for rid in ids:
            if self.outstanding.pop(rid, None) is None:
                continue
            self.released += 1
            arena = self._arena_of(rid)
            if arena is not None and arena.outstanding > 0:
                arena.outstanding -= 1
        self.poll_errors()
        return ids

    def unreleased(self) -> dict[int, int]:
        """Commands still out, except the CREATE commands of live off-screen surfaces."""
        held = set(self.held.values())
        return {p: t for p, t in self.outstanding.items() if p not in held}

    def wait_released(self, timeout: float | None = None) -> bool:
        """Collect releases until every command but the held surface CREATEs is back."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            self.collect()
            if not self.unreleased():
                return True
            if time.monotonic() > deadline:
                return False
            self.device.io_write(IOPort.NOTIFY_OOM, 0)
            time.sleep(0.001)

    # --- interrupts --------------------------------------------------------------------------------

    def poll_errors(self) -> bool:
        """Whether the device raised ``QXL_INTERRUPT_ERROR`` (counted in :attr:`errors_seen`)."""
        if self.interrupts() & Interrupt.ERROR:
            self.errors_seen += 1
            self._clear(Interrupt.ERROR)
            return True
        return False

    def _clear(self, bits: int) -> None:
        off = self.ram_header_offset + L.RAM_INT_PENDING_OFF
        (pending,) = L.U32.unpack_from(self.ram, off)
        L.U32.pack_into(self.ram, off, pending & ~bits)
        self.device.io_write(IOPort.UPDATE_IRQ, 0)

    def async_io(self, start: Callable[[], object]) -> None:
        """Run an ``*_ASYNC`` I/O and wait for its ``QXL_INTERRUPT_IO_CMD``."""
        self._clear(Interrupt.IO_CMD)
        start()
        deadline = time.monotonic() + self.timeout
        while not self.interrupts() & Interrupt.IO_CMD:
            if time.monotonic() > deadline:
                raise TimeoutError("async I/O did not complete")
            time.sleep(0.0005)
        self._clear(Interrupt.IO_CMD)
        self.poll_errors()


# --- the guest ------------------------------------------------------------------------------------

_TASKBAR = rgb(46, 52, 54)
_TASKBAR_TEXT = rgb(238, 238, 236)
_WINDOW = rgb(236, 236, 236)
_BORDER = rgb(90, 90, 110)
_TITLE = rgb(52, 101, 164)
_SHADOW = rgb(20, 20, 30)
_PANE = rgb(255, 255, 255)
_INK = rgb(20, 20, 20)
_DESK = rgb(40, 70, 120)
_BUTTONS = (rgb(204, 0, 0), rgb(196, 160, 0), rgb(78, 154, 6))

_BAND = 64  # wallpaper band height
_TITLE_H = 22
_PHOTO_W, _PHOTO_H = 224, 140
_CHART_W, _CHART_H = 224, 72
_MOVER_W, _MOVER_H = 240, 120
_CHART_SURFACE = 1

_LINES = tuple(f"{i:04d}  the quick brown fox jumps over the lazy dog  #{i * 7919 % 10007:05d}" for i in range(200))


@dataclass(frozen=True, slots=True)
class _Layout:
    taskbar: Rect
    start_button: Rect
    clock: Rect
    editor: Rect
    pane: Rect  # the part of the editor that scrolls (a whole number of lines)
    photo_win: Rect
    chart_win: Rect
    mover_y: int
    mover_range: tuple[int, int]

    @classmethod
    def of(cls, w: int, h: int, line_height: int) -> _Layout:
        taskbar = Rect(top=h - 32, left=0, bottom=h, right=w)
        mover_y = h - 32 - 12 - _MOVER_H
        col_w = _PHOTO_W + 16
        col_x = w - col_w - 16
        photo_win = xywh(col_x, 16, col_w, _TITLE_H + _PHOTO_H + 14)
        chart_win = xywh(col_x, photo_win.bottom + 10, col_w, _TITLE_H + _CHART_H + 10)
        editor = Rect(top=16, left=16, bottom=mover_y - 12, right=min(col_x - 20, 16 + 600))
        top = editor.top + _TITLE_H + 4
        nlines = (editor.bottom - 4 - top) // line_height
        pane = Rect(top=top, left=editor.left + 4, bottom=top + nlines * line_height, right=editor.right - 4)
        return cls(
            taskbar=taskbar,
            start_button=Rect(top=h - 27, left=6, bottom=h - 6, right=100),
            clock=Rect(top=h - 27, left=w - 86, bottom=h - 6, right=w - 6),
            editor=editor,
            pane=pane,
            photo_win=photo_win,
            chart_win=chart_win,
            mover_y=mover_y,
            mover_range=(8, w - _MOVER_W - 16),
        )


class SyntheticGuest:
    """A fake guest driving ``device``: memslots, a ``width`` x ``height`` primary, and drawing.

    Call :meth:`setup` first. Every method runs on the calling thread (the guest's vCPU).

    Args:
        device: the QXL device (e.g. from ``SpiceServer.add_qxl_device()``).
        width, height: the primary surface's size.
        bottom_up: create primaries with a negative stride (bottom-up, as the qxl-1 ``SET_MODE`` path makes them).
    """

    def __init__(self, device: QXLDevice, width: int = 1024, height: int = 768, *, bottom_up: bool = False) -> None:
        self.device = device
        self.driver = SyntheticDriver(device)
        self.width = width
        self.height = height
        self.bottom_up = bottom_up
        self.font = GlyphFont(13, 4)
        self.font_a1 = GlyphFont(12, 1)
        self.font_big = GlyphFont(22, 4)
        self.surfaces: dict[int, tuple[int, int]] = {}  # live off-screen surfaces: id -> size
        self.cursor_shape: Cursor | None = None
        self.cursor_position: tuple[int, int] | None = None
        self._ids = itertools.count(1)
        self._cached: dict[str, d.Image] = {}
        self._reset_animation()

    # --- setup, surfaces, modes --------------------------------------------------------------------

    def setup(self) -> None:
        """What a driver does at load: memslots, interrupt mask, the primary surface."""
        self.driver.setup_memslots()
        self.driver.set_int_mask(INTERRUPT_MASK)
        self._create_primary()

    def _create_primary(self) -> None:
        stride = self.width * 4
        self.driver.create_primary(self.width, self.height, stride=-stride if self.bottom_up else stride)
        self.driver.poll_errors()

    @property
    def modes(self) -> list[tuple[int, int]]:
        """The resolutions the device's ROM offers."""
        rom = self.device.rom
        (n,) = L.MODES_HEAD.unpack_from(rom, self.driver.modes_offset)
        base = self.driver.modes_offset + L.MODES_HEAD.size
        out = []
        for i in range(n):
            _id, x, y, *_rest = L.MODE.unpack_from(rom, base + i * L.MODE.size)
            out.append((int(x), int(y)))
        return out

    @property
    def full(self) -> Rect:
        """The whole primary surface."""
        return Rect(top=0, left=0, bottom=self.height, right=self.width)

    def resize(self, width: int, height: int) -> None:
        """A mode switch: destroy the primary surface and create one of ``width`` x ``height``.

        Off-screen surfaces are destroyed first; resident images (the wallpaper) are dropped once
        every command using them is back. The caller draws the new picture (e.g. :meth:`draw_static`).
        """
        self.destroy_surfaces()
        self.flush()  # every queued command reaches the old surface before it goes away
        self.driver.destroy_primary()
        self.driver.poll_errors()
        if self.driver.wait_released(timeout=2.0):
            self.driver.rewind_resident()
            self._cached = {k: v for k, v in self._cached.items() if not k.startswith("band")}
        self.width, self.height = width, height
        self._create_primary()
        self._reset_animation()

    def create_surface(self, surface_id: int, width: int, height: int) -> None:
        """``QXL_SURFACE_CMD_CREATE`` of a 32-bit off-screen surface in VRAM."""
        self.driver.reserve(256)
        phys, _data = self.driver.surface_create(surface_id, width, height)
        self.driver.push(phys, CmdType.SURFACE)
        self.driver.held[surface_id] = phys
        self.surfaces[surface_id] = (width, height)

    def destroy_surface(self, surface_id: int) -> None:
        """``QXL_SURFACE_CMD_DESTROY``; its CREATE command comes back once the server is done."""
        self.driver.reserve(256)
        self.driver.push(self.driver.surface_destroy(surface_id), CmdType.SURFACE)
        self.driver.held.pop(surface_id, None)
        self.surfaces.pop(surface_id, None)
        if not self.surfaces:
            self.flush()
            if self.driver.wait_released(timeout=2.0):
                self.driver.rewind_vram()

    def destroy_surfaces(self) -> None:
        """Destroy every off-screen surface."""
        for sid in sorted(self.surfaces, reverse=True):
            self.destroy_surface(sid)

    def flush(self, surface_id: int = 0) -> None:
        """``UPDATE_AREA`` (synchronous) of a whole surface: every queued command is processed and the
        picture is in guest memory when this returns."""
        if surface_id == 0:
            area = self.full
        else:
            w, h = self.surfaces[surface_id]
            area = Rect(top=0, left=0, bottom=h, right=w)
        self.driver.update_area(surface_id, area)
        self.driver.collect()

    def primary_pixels(self) -> np.ndarray:
        """The primary surface as guest memory holds it ((h, w) uint32 0x00RRGGBB); call :meth:`flush` first."""
        stride = self.width * 4
        raw = np.frombuffer(self.device.ram, np.uint8, count=stride * self.height).reshape(self.height, stride)
        px: np.ndarray = raw.copy().view("<u4") & 0xFFFFFF
        return px[::-1] if self.bottom_up else px

    def set_monitors(self, heads: Sequence[tuple[int, int, int, int]]) -> None:
        """``MONITORS_CONFIG_ASYNC`` with one head per ``(x, y, width, height)`` on the primary."""
        self.driver.reserve(4096)
        qheads = [
            d.Head(monitor_id=i, surface_id=0, width=w, height=h, x=x, y=y, flags=0)
            for i, (x, y, w, h) in enumerate(heads)
        ]
        self.driver.async_io(lambda: self.driver.monitors_config(qheads, max_allowed=max(len(qheads), 1)))

    @property
    def error_seen(self) -> bool:
        """Whether the device ever raised the ERROR interrupt (or stopped on a guest bug)."""
        self.driver.poll_errors()
        return self.driver.errors_seen > 0 or self.device.guest_bug

    def _new_id(self) -> int:
        """A fresh image id (``QXL_IMAGE_GROUP_DRIVER``: unique in the high 32 bits)."""
        return next(self._ids) << 32

    # --- drawing primitives ------------------------------------------------------------------------

    def draw(
        self,
        body: DrawBody,
        bbox: Rect,
        *,
        surface_id: int = 0,
        clip: Sequence[Rect] | None = None,
        effect: int | None = None,
        surfaces_dest: tuple[int, int, int] = _NO_DEPS,
        surfaces_rects: tuple[Rect, Rect, Rect] = (_NO_RECT, _NO_RECT, _NO_RECT),
        chunk_size: int | None = None,
    ) -> int:
        """Write a QXLDrawable and push it on the command ring; returns its address."""
        qclip = d.Clip(type=ClipType.RECTS, rects=d.ClipRects(rects=tuple(clip))) if clip is not None else None
        if effect is None:
            effect = _EFFECTS.get(type(body), Effect.BLEND)
            mask = getattr(body, "mask", None)
            if effect == Effect.OPAQUE and isinstance(mask, d.QMask) and mask.bitmap is not None:
                effect = Effect.BLEND  # a masked operation does not cover its whole box
        n_chunks = 0 if chunk_size is None else _payload_size(body) // max(chunk_size, 1) + 1
        self.driver.reserve(_payload_size(body) + _payload_size(qclip) + 64 * n_chunks + 4096)
        phys = self.driver.drawable(
            body,
            bbox=bbox,
            surface_id=surface_id,
            clip=qclip,
            effect=effect,
            surfaces_dest=surfaces_dest,
            surfaces_rects=surfaces_rects,
            chunk_size=chunk_size,
        )
        self.driver.push(phys, CmdType.DRAW)
        return phys

    def fill(
        self,
        r: Rect,
        color: int,
        *,
        rop: int = ROPD_PUT,
        surface_id: int = 0,
        clip: Sequence[Rect] | None = None,
        mask: d.QMask | None = None,
        brush: d.Brush | None = None,
    ) -> None:
        """DRAW_FILL of ``r`` with a solid colour (or ``brush``)."""
        body = d.Fill(
            brush=brush or d.Brush(type=BrushType.SOLID, color=color), rop_descriptor=rop, mask=mask or d.QMask()
        )
        plain = rop == ROPD_PUT and mask is None
        self.draw(body, r, surface_id=surface_id, clip=clip, effect=Effect.OPAQUE if plain else Effect.BLEND)

    def copy(
        self,
        img: d.Image,
        dest: Rect,
        *,
        src: Rect | None = None,
        rop: int = ROPD_PUT,
        scale_mode: int = SCALE_NEAREST,
        surface_id: int = 0,
        clip: Sequence[Rect] | None = None,
        mask: d.QMask | None = None,
        chunk_size: int | None = None,
    ) -> None:
        """DRAW_COPY of ``src`` of ``img`` (all of it by default) to ``dest``."""
        desc = img.descriptor
        src = src or Rect(top=0, left=0, bottom=desc.height, right=desc.width)
        body = d.Copy(src_bitmap=img, src_area=src, rop_descriptor=rop, scale_mode=scale_mode, mask=mask or d.QMask())
        deps, rects = self._deps(img, src)
        plain = rop == ROPD_PUT and mask is None
        self.draw(
            body,
            dest,
            surface_id=surface_id,
            clip=clip,
            effect=Effect.OPAQUE if plain else Effect.BLEND,
            surfaces_dest=deps,
            surfaces_rects=rects,
            chunk_size=chunk_size,
        )

    @staticmethod
    def _deps(img: d.Image | None, src: Rect) -> tuple[tuple[int, int, int], tuple[Rect, Rect, Rect]]:
        """``surfaces_dest`` / ``surfaces_rects`` for a drawable reading ``img``."""
        if img is not None and img.descriptor.type == ImageType.SURFACE and img.surface is not None:
            return (img.surface.surface_id, -1, -1), (src, _NO_RECT, _NO_RECT)
        return _NO_DEPS, (_NO_RECT, _NO_RECT, _NO_RECT)

    def text(
        self,
        x: int,
        y: int,
        text: str,
        color: int,
        *,
        font: GlyphFont | None = None,
        surface_id: int = 0,
        within: Rect | None = None,
        back: tuple[Rect, int] | None = None,
        fore: d.Brush | None = None,
        clip: Sequence[Rect] | None = None,
    ) -> Rect | None:
        """DRAW_TEXT of ``text`` with the pen at ``(x, y)`` on the baseline.

        ``within`` clips the bounding box; ``back`` = (area, colour) fills a background behind the
        glyphs; ``fore`` replaces the solid fore brush. Returns the box drawn (None if empty).
        """
        got = (font or self.font).string(text, x, y)
        if got is None:
            return None
        string, bbox = got
        if back is not None:
            joined = Rect(
                top=min(bbox.top, back[0].top),
                left=min(bbox.left, back[0].left),
                bottom=max(bbox.bottom, back[0].bottom),
                right=max(bbox.right, back[0].right),
            )
            bbox = joined
        if within is not None:
            box = _rect_and(bbox, within)
            if box is None:
                return None
            bbox = box
        body = d.Text(
            str=string,
            back_area=back[0] if back is not None else _NO_RECT,
            fore_brush=fore or d.Brush(type=BrushType.SOLID, color=color),
            back_brush=d.Brush(type=BrushType.SOLID, color=back[1])
            if back is not None
            else d.Brush(type=BrushType.NONE),
            fore_mode=ROPD_PUT,
            back_mode=ROPD_PUT,
        )
        self.draw(body, bbox, surface_id=surface_id, clip=clip)
        return bbox

    def stroke(
        self,
        points: Sequence[tuple[int, int]],
        color: int,
        *,
        closed: bool = False,
        rop: int = ROPD_PUT,
        surface_id: int = 0,
        clip: Sequence[Rect] | None = None,
        brush: d.Brush | None = None,
        segments: Sequence[d.PathSegment] | None = None,
        attr: d.LineAttr | None = None,
    ) -> None:
        """DRAW_STROKE of a polyline through ``points`` (or of explicit path ``segments``)."""
        if segments is None:
            flags = PathFlags.BEGIN | PathFlags.END | (PathFlags.CLOSE if closed else 0)
            segments = (d.PathSegment(flags=int(flags), points=tuple(PointFix(x=x << 4, y=y << 4) for x, y in points)),)
        xs = [p.x >> 4 for s in segments for p in s.points]
        ys = [p.y >> 4 for s in segments for p in s.points]
        limit = Rect(top=0, left=0, bottom=self._height_of(surface_id), right=self._width_of(surface_id))
        box = _rect_and(Rect(top=min(ys), left=min(xs), bottom=max(ys) + 2, right=max(xs) + 2), limit)
        if box is None:
            return
        body = d.Stroke(
            path=d.Path(segments=tuple(segments)),
            attr=attr or d.LineAttr(flags=0),
            brush=brush or d.Brush(type=BrushType.SOLID, color=color),
            fore_mode=rop,
            back_mode=ROPD_PUT,
        )
        self.draw(body, box, surface_id=surface_id, clip=clip)

    def stroke_rect(self, r: Rect, color: int, *, surface_id: int = 0) -> None:
        """A one-pixel border just inside ``r``."""
        pts = [(r.left, r.top), (r.right - 1, r.top), (r.right - 1, r.bottom - 1), (r.left, r.bottom - 1)]
        self.stroke(pts, color, closed=True, surface_id=surface_id)

    def copy_bits(self, dest: Rect, src_x: int, src_y: int, *, surface_id: int = 0) -> None:
        """QXL_COPY_BITS: move the ``dest``-sized area at ``(src_x, src_y)`` to ``dest``."""
        self.draw(CopyBits(src_pos=Point(x=src_x, y=src_y)), dest, surface_id=surface_id)

    def _width_of(self, surface_id: int) -> int:
        return self.width if surface_id == 0 else self.surfaces[surface_id][0]

    def _height_of(self, surface_id: int) -> int:
        return self.height if surface_id == 0 else self.surfaces[surface_id][1]

    # --- cursor --------------------------------------------------------------------------------------

    def arrow_cursor(self) -> Cursor:
        """The 16x24 ALPHA arrow of :mod:`spiceserver.desktop` as a cursor shape (hot spot 0, 0)."""
        w, h, px = ARROW_CURSOR
        header = CursorHeader(
            unique=0x5359_4E54_0000_0001, type=CursorType.ALPHA, width=w, height=h, hot_spot_x=0, hot_spot_y=0
        )
        return Cursor(flags=0, header=header, data=np.ascontiguousarray(px.astype("<u4")).tobytes())

    def set_cursor(self, x: int, y: int, shape: Cursor | None = None, *, visible: bool = True) -> None:
        """``QXL_CURSOR_SET`` on the cursor ring."""
        shape = shape or self.arrow_cursor()
        self.driver.reserve(len(shape.data) + 4096)
        phys = self.driver.cursor_set(Point16(x=x, y=y), visible, shape)
        self.driver.push(phys, CmdType.CURSOR)
        self.cursor_shape = shape
        self.cursor_position = (x, y)

    def move_cursor(self, x: int, y: int) -> None:
        """``QXL_CURSOR_MOVE``."""
        self.driver.reserve(1024)
        self.driver.push(self.driver.cursor_move(Point16(x=x, y=y)), CmdType.CURSOR)
        self.cursor_position = (x, y)

    def hide_cursor(self) -> None:
        """``QXL_CURSOR_HIDE``."""
        self.driver.reserve(1024)
        self.driver.push(self.driver.cursor_hide(), CmdType.CURSOR)

    # --- images the desktop reuses --------------------------------------------------------------------

    def _image(self, key: str, make: Callable[[int], d.Image], *, resident: bool = False) -> d.Image:
        img = self._cached.get(key)
        if img is None:
            img = self._cached[key] = make(self._new_id())
        if resident:
            self.driver.make_resident(img)
        return img

    def photo(self, which: int = 0) -> d.Image:
        """Photo 0 (32-bit) or 1 (24-bit, bottom-up), both with the QXL cache flag."""
        if which == 0:
            return self._image(
                "photo0",
                lambda i: bitmap_image(
                    i, BitmapFmt.BIT32, _PHOTO_W, _rows32(_photo_pixels(_PHOTO_W, _PHOTO_H)), cache=True
                ),
                resident=True,
            )
        return self._image(
            "photo1",
            lambda i: bitmap_image(
                i,
                BitmapFmt.BIT24,
                _PHOTO_W,
                _rows24(_photo_pixels(_PHOTO_W, _PHOTO_H, 1.7)),
                cache=True,
                top_down=False,
            ),
            resident=True,
        )

    def _band(self, k: int) -> d.Image:
        """Wallpaper band ``k`` (64 rows of the gradient, full width, cached by id)."""
        w, desk_h = self.width, self.height - 32

        def make(image_id: int) -> d.Image:
            y0, y1 = k * _BAND, min((k + 1) * _BAND, desk_h)
            yy, xx = np.mgrid[y0:y1, 0:w]
            r = (40 + 60 * xx / max(w - 1, 1)).astype(np.uint32)
            g = (70 + 50 * yy / max(self.height - 1, 1)).astype(np.uint32)
            b = (120 + 80 * (xx + yy) / max(w + self.height - 2, 1)).astype(np.uint32)
            return bitmap_image(image_id, BitmapFmt.BIT32, w, _rows32((r << 16) | (g << 8) | b), cache=True)

        return self._image(f"band{k}", make, resident=True)

    def _button_mask(self) -> d.Image:
        return self._image("button-mask", lambda i: bitmap_image(i, BitmapFmt.BIT1_BE, 12, _rows1be(_disc(12))))

    # --- the desktop --------------------------------------------------------------------------------------

    def _reset_animation(self) -> None:
        self._first_line = 0
        self._mover: Rect | None = None
        self._clock_text = ""
        self._photo_shown = -1
        self._layout: _Layout | None = None

    @property
    def layout(self) -> _Layout:
        if self._layout is None:
            if self.width < 640 or self.height < 480:
                raise ValueError(f"the desktop needs at least 640x480 (primary is {self.width}x{self.height})")
            self._layout = _Layout.of(self.width, self.height, self.font.line_height)
        return self._layout

    def wallpaper(self, area: Rect | None = None) -> None:
        """Paint the wallpaper over ``area`` (the whole desktop above the task bar by default)."""
        desk = Rect(top=0, left=0, bottom=self.height - 32, right=self.width)
        area = _rect_and(area or desk, desk)
        if area is None:
            return
        for k in range(area.top // _BAND, (area.bottom - 1) // _BAND + 1):
            band = Rect(top=k * _BAND, left=0, bottom=min((k + 1) * _BAND, desk.bottom), right=self.width)
            part = _rect_and(area, band)
            if part is not None:
                self.copy(self._band(k), part, src=_shift(part, 0, -band.top))

    def window(self, r: Rect, title: str, *, shadow: bool = True) -> Rect:
        """A window frame: shadow, body, title bar with text and buttons, border. Returns its client area."""
        if shadow:
            self.fill(_shift(r, 4, 4), _SHADOW)
        self.fill(r, _WINDOW)
        bar = Rect(top=r.top, left=r.left, bottom=r.top + _TITLE_H, right=r.right)
        self.fill(bar, _TITLE)
        self.text(r.left + 8, r.top + 16, title, rgb(255, 255, 255), within=bar)
        mask = self._button_mask()
        for i, color in enumerate(_BUTTONS):
            b = xywh(r.right - 20 - 18 * i, r.top + 5, 12, 12)
            self.fill(b, color, mask=d.QMask(flags=0, pos=Point(x=0, y=0), bitmap=mask))
        self.stroke_rect(r, _BORDER)
        return Rect(top=bar.bottom, left=r.left + 1, bottom=r.bottom - 1, right=r.right - 1)

    def draw_static(self) -> None:
        """The still desktop (``--scene static``): deterministic for a given size."""
        lay = self.layout
        self._reset_animation()
        self.fill(self.full, _DESK)
        self.wallpaper()
        self._taskbar()
        self._editor()
        photo = self.window(lay.photo_win, "photo.png")
        self._photo_at(photo, 0)
        chart = self.window(lay.chart_win, "load (off-screen surface)")
        self._chart(chart, 0.0)
        self._move_window(0.0)
        self.set_cursor(self.width // 2, self.height // 2)

    def _taskbar(self) -> None:
        lay = self.layout
        self.fill(lay.taskbar, _TASKBAR)
        self.fill(lay.start_button, rgb(85, 87, 83))
        self.text(
            lay.start_button.left + 10, lay.start_button.bottom - 6, "spiceserver", _TASKBAR_TEXT, font=self.font_a1
        )
        self._clock_text = ""
        self._clock(0.0)

    def _clock(self, t: float) -> None:
        secs = int(t)
        text = f"{12 + secs // 3600 % 12:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
        if text == self._clock_text:
            return
        self._clock_text = text
        lay = self.layout
        self.fill(lay.clock, _TASKBAR)
        self.text(lay.clock.left + 8, lay.clock.bottom - 6, text, _TASKBAR_TEXT, font=self.font_a1, within=lay.clock)

    def _editor(self) -> None:
        lay = self.layout
        self.window(lay.editor, "notes.txt - editor")
        self.fill(Rect(top=lay.pane.top, left=lay.pane.left, bottom=lay.editor.bottom - 4, right=lay.pane.right), _PANE)
        for i in range(self._pane_lines):
            self._pane_line(i, (self._first_line + i) % len(_LINES))

    @property
    def _pane_lines(self) -> int:
        lay = self.layout
        return (lay.pane.bottom - lay.pane.top) // self.font.line_height

    def _pane_line(self, row: int, index: int) -> None:
        lay = self.layout
        lh = self.font.line_height
        top = lay.pane.top + row * lh
        self.text(lay.pane.left + 6, top + self.font.ascent, _LINES[index], _INK, within=lay.pane)

    def _scroll_to(self, first: int) -> None:
        """Scroll the editor pane so line ``first`` is at the top (COPY_BITS, then the new lines)."""
        steps = (first - self._first_line) % len(_LINES)
        if steps == 0:
            return
        lay = self.layout
        n = self._pane_lines
        lh = self.font.line_height
        self._first_line = first
        if steps >= n:
            self.fill(lay.pane, _PANE)
            for i in range(n):
                self._pane_line(i, (first + i) % len(_LINES))
            return
        dy = steps * lh
        self.copy_bits(
            Rect(top=lay.pane.top, left=lay.pane.left, bottom=lay.pane.bottom - dy, right=lay.pane.right),
            lay.pane.left,
            lay.pane.top + dy,
        )
        self.fill(
            Rect(top=lay.pane.bottom - dy, left=lay.pane.left, bottom=lay.pane.bottom, right=lay.pane.right), _PANE
        )
        for i in range(n - steps, n):
            self._pane_line(i, (first + i) % len(_LINES))

    def _photo_at(self, client: Rect, which: int) -> None:
        self._photo_shown = which
        self.copy(self.photo(which), xywh(client.left + 7, client.top + 6, _PHOTO_W, _PHOTO_H))

    def _chart(self, client: Rect, t: float) -> None:
        """Draw the chart into the off-screen surface, then copy it to ``client``."""
        sid = _CHART_SURFACE
        if sid not in self.surfaces:
            self.create_surface(sid, _CHART_W, _CHART_H)
        self.fill(Rect(top=0, left=0, bottom=_CHART_H, right=_CHART_W), rgb(250, 250, 245), surface_id=sid)
        for y in range(12, _CHART_H, 15):
            self.fill(Rect(top=y, left=0, bottom=y + 1, right=_CHART_W), rgb(220, 220, 230), surface_id=sid)
        tops = []
        for i in range(10):
            v = 0.5 + 0.45 * math.sin(t * 1.3 + i * 0.7)
            hgt = int(8 + v * (_CHART_H - 22))
            x = 8 + i * 21
            self.fill(
                Rect(top=_CHART_H - 4 - hgt, left=x, bottom=_CHART_H - 4, right=x + 14),
                rgb(52, 101, 164),
                surface_id=sid,
            )
            tops.append((x + 7, _CHART_H - 4 - hgt))
        self.stroke(tops, rgb(204, 0, 0), surface_id=sid)
        self.text(4, 12, "load", rgb(60, 60, 60), font=self.font_a1, surface_id=sid)
        dest = xywh(client.left + 7, client.top + 5, _CHART_W, _CHART_H)
        self.copy(surface_image(sid, _CHART_W, _CHART_H), dest)

    def _mover_rect(self, t: float) -> Rect:
        lay = self.layout
        lo, hi = lay.mover_range
        x = lo + int((hi - lo) * (0.5 + 0.5 * math.sin(t * 0.8)))
        return xywh(x, lay.mover_y, _MOVER_W, _MOVER_H)

    def _move_window(self, t: float) -> None:
        r = self._mover_rect(t)
        old = self._mover
        if old is not None:
            if old == r:
                self._mover_content(self._client_of(r), t)
                return
            for part in _rect_minus(Rect(top=old.top, left=old.left, bottom=old.bottom + 4, right=old.right + 4), r):
                self.wallpaper(part)
        self._mover = r
        self._mover_content(self.window(r, "moving window"), t)

    @staticmethod
    def _client_of(r: Rect) -> Rect:
        return Rect(top=r.top + _TITLE_H, left=r.left + 1, bottom=r.bottom - 1, right=r.right - 1)

    def _mover_content(self, client: Rect, t: float) -> None:
        inner = Rect(top=client.top + 12, left=client.left + 19, bottom=client.bottom - 12, right=client.right - 19)
        self.fill(inner, rgb(int(127 + 120 * math.sin(t)), 120, 200))
        self.text(inner.left + 8, inner.top + 20, f"t = {t:6.2f} s", rgb(255, 255, 255), within=inner)

    def step(self, t: float) -> None:
        """One animation frame at time ``t`` seconds (after :meth:`draw_static`)."""
        lay = self.layout
        self._clock(t)
        self._scroll_to(int(t * 4) % len(_LINES))
        self._move_window(t)
        self._chart(self._client_of(lay.chart_win), t)
        which = int(t / 2) % 2
        if which != self._photo_shown:
            self._photo_at(self._client_of(lay.photo_win), which)
        x = int(self.width / 2 + self.width / 3 * math.cos(t))
        y = int(self.height / 2 + self.height / 3 * math.sin(t * 1.3))
        self.move_cursor(x, y)

    # --- per-operation scenes (at least 320x240) -----------------------------------------------------------

    def _scene_bg(self, color: int = rgb(32, 48, 64)) -> None:
        if self.width < 320 or self.height < 240:
            raise ValueError(f"scenes need at least 320x240 (primary is {self.width}x{self.height})")
        self.fill(self.full, color)

    def _stripes(
        self, r: Rect, colors: Sequence[int] = (rgb(192, 128, 64), rgb(64, 128, 192), rgb(40, 200, 90))
    ) -> None:
        """Vertical stripes (background for operations that read the destination)."""
        w = 6
        for i, x in enumerate(range(r.left, r.right, w)):
            self.fill(Rect(top=r.top, left=x, bottom=r.bottom, right=min(x + w, r.right)), colors[i % len(colors)])

    def _small_photo(self, w: int = 64, h: int = 48, phase: float = 0.3) -> np.ndarray:
        return _photo_pixels(w, h, phase)

    def _pattern(self) -> d.Image:
        """An 8x8 32-bit brush pattern."""
        yy, xx = np.mgrid[0:8, 0:8]
        px = np.where((xx + yy) % 4 < 2, rgb(250, 200, 40), rgb(120, 30, 160)).astype(np.uint32)
        return bitmap_image(self._new_id(), BitmapFmt.BIT32, 8, _rows32(px))

    def _mask(self, size: int, *, ring: bool = False) -> d.Image:
        m = _disc(size)
        if ring:
            inner = np.zeros_like(m)
            k = size // 4
            inner[k : size - k, k : size - k] = _disc(size - 2 * k)
            m = m & ~inner
        return bitmap_image(self._new_id(), BitmapFmt.BIT1_BE, size, _rows1be(m))

    def scene_fill(self) -> None:
        """DRAW_FILL: solid colours, every rop descriptor family, clip rects, a pattern brush, 1-bit masks."""
        self._scene_bg()
        colors = [
            rgb(255, 0, 0),
            rgb(0, 255, 0),
            rgb(0, 0, 255),
            rgb(255, 255, 0),
            rgb(0, 255, 255),
            rgb(255, 0, 255),
            rgb(255, 255, 255),
            rgb(1, 2, 3),
        ]
        for i, c in enumerate(colors):
            self.fill(xywh(8 + i * 38, 8, 32, 24), c)
        self._stripes(xywh(8, 40, 304, 48))
        rops = [
            ROPD_XOR,
            ROPD_OR,
            ROPD_AND,
            ROPD_PUT | ROPD_INVERS_BRUSH,
            ROPD_AND | ROPD_INVERS_RES,
            ROPD_XOR | ROPD_INVERS_DEST,
            ROPD_OR | ROPD_INVERS_DEST,
            ROPD_INVERS,
        ]
        for i, rop in enumerate(rops):
            self.fill(xywh(10 + i * 38, 44, 32, 40), rgb(90, 156, 63), rop=rop)
        clip = [xywh(12, 100, 40, 20), xywh(60, 110, 50, 40), xywh(20, 140, 30, 12)]
        self.fill(xywh(8, 96, 140, 60), rgb(230, 120, 20), clip=clip)
        pattern = d.Brush(type=BrushType.PATTERN, pattern=d.Pattern(pat=self._pattern(), pos=Point(x=3, y=5)))
        self.fill(xywh(160, 96, 150, 28), 0, brush=pattern)
        self._stripes(xywh(160, 128, 150, 28))
        self.fill(xywh(160, 128, 150, 28), 0, brush=pattern, rop=ROPD_XOR)
        mask = self._mask(40)
        self.fill(xywh(10, 170, 40, 40), rgb(250, 250, 250), mask=d.QMask(flags=0, pos=Point(x=0, y=0), bitmap=mask))
        self.fill(xywh(60, 170, 40, 40), rgb(250, 250, 250), mask=d.QMask(flags=1, pos=Point(x=0, y=0), bitmap=mask))
        ring = self._mask(48, ring=True)
        self.fill(xywh(110, 166, 60, 48), 0, brush=pattern, mask=d.QMask(flags=0, pos=Point(x=6, y=0), bitmap=ring))

    def scene_copy(self) -> None:
        """DRAW_COPY of every bitmap format a guest sends, sub-areas, rops, nearest scaling, clips,
        masks, and pixel data split in chunks."""
        self._scene_bg()
        px = self._small_photo()
        nid = self._new_id
        self.copy(bitmap_image(nid(), BitmapFmt.BIT32, 64, _rows32(px)), xywh(8, 8, 64, 48))
        self.copy(bitmap_image(nid(), BitmapFmt.BIT24, 64, _rows24(px), top_down=False), xywh(80, 8, 64, 48))
        self.copy(bitmap_image(nid(), BitmapFmt.BIT16, 64, _rows16(px)), xywh(152, 8, 64, 48))
        idx = ((np.mgrid[0:48, 0:64][1] * 4 + np.mgrid[0:48, 0:64][0] * 2) % 256).astype(np.uint8)
        pal8 = d.Palette(unique=0x5059_0008, ents=tuple(rgb(i, 255 - i, (i * 3) & 255) for i in range(256)))
        self.copy(bitmap_image(nid(), BitmapFmt.BIT8, 64, idx, palette=pal8), xywh(224, 8, 64, 48))
        idx4 = (idx >> 4).astype(np.uint8)
        pal4 = d.Palette(unique=0x5059_0004, ents=tuple(rgb(i * 16, 128, 255 - i * 16) for i in range(16)))
        self.copy(
            bitmap_image(nid(), BitmapFmt.BIT4_BE, 64, _rows4be(idx4), palette=pal4, top_down=False),
            xywh(8, 64, 64, 48),
        )
        bits = ((np.mgrid[0:48, 0:64][1] // 4 + np.mgrid[0:48, 0:64][0] // 4) % 2).astype(bool)
        pal1 = d.Palette(unique=0x5059_0001, ents=(rgb(250, 240, 200), rgb(40, 40, 90)))
        self.copy(bitmap_image(nid(), BitmapFmt.BIT1_BE, 64, _rows1be(bits), palette=pal1), xywh(80, 64, 64, 48))
        alpha = (np.mgrid[0:48, 0:64][1] * 4).clip(0, 255)
        self.copy(bitmap_image(nid(), BitmapFmt.RGBA, 64, _rows32(_premultiplied(px, alpha))), xywh(152, 64, 64, 48))
        big = bitmap_image(nid(), BitmapFmt.BIT32, 128, _rows32(_photo_pixels(128, 96, 0.9)))
        self.copy(big, xywh(224, 64, 64, 48), src=xywh(40, 30, 64, 48))
        self._stripes(xywh(8, 120, 64, 48))
        self.copy(bitmap_image(nid(), BitmapFmt.BIT32, 64, _rows32(px)), xywh(8, 120, 64, 48), rop=ROPD_XOR)
        small = bitmap_image(nid(), BitmapFmt.BIT32, 32, _rows32(self._small_photo(32, 24, 2.0)))
        self.copy(small, xywh(80, 120, 64, 48), scale_mode=SCALE_NEAREST)
        self.copy(
            bitmap_image(nid(), BitmapFmt.BIT32, 64, _rows32(px)),
            xywh(152, 120, 64, 48),
            clip=[xywh(152, 120, 20, 48), xywh(180, 130, 36, 20)],
        )
        mask = self._mask(48)
        self.copy(
            bitmap_image(nid(), BitmapFmt.BIT32, 64, _rows32(px)),
            xywh(224, 120, 64, 48),
            mask=d.QMask(flags=0, pos=Point(x=8, y=0), bitmap=mask),
        )
        chunky = bitmap_image(nid(), BitmapFmt.BIT32, 96, _rows32(_photo_pixels(96, 56, 1.3)))
        self.copy(chunky, xywh(8, 176, 96, 56), chunk_size=777)
        self.copy(chunky, xywh(112, 176, 48, 28), src=xywh(0, 0, 96, 56), scale_mode=SCALE_NEAREST)

    def scene_copy_scaled(self) -> None:
        """DRAW_COPY scaled with interpolation (pixman's GOOD filter) up and down."""
        self._scene_bg()
        src = bitmap_image(self._new_id(), BitmapFmt.BIT32, 64, _rows32(self._small_photo(64, 48, 0.5)))
        self.copy(src, xywh(8, 8, 150, 110), scale_mode=SCALE_INTERPOLATE)
        self.copy(src, xywh(170, 8, 40, 30), scale_mode=SCALE_INTERPOLATE)
        self.copy(src, xywh(220, 8, 96, 100), src=xywh(10, 10, 40, 30), scale_mode=SCALE_INTERPOLATE)

    def scene_opaque(self) -> None:
        """DRAW_OPAQUE: a source image combined with a brush (solid and pattern) by rop."""
        self._scene_bg()
        px = self._small_photo()
        img = bitmap_image(self._new_id(), BitmapFmt.BIT32, 64, _rows32(px))
        solid = d.Brush(type=BrushType.SOLID, color=rgb(200, 40, 90))
        pattern = d.Brush(type=BrushType.PATTERN, pattern=d.Pattern(pat=self._pattern(), pos=Point(x=0, y=0)))
        src = Rect(top=0, left=0, bottom=48, right=64)
        cases = [
            (solid, ROPD_XOR),
            (solid, ROPD_AND),
            (pattern, ROPD_OR),
            (pattern, ROPD_XOR | ROPD_INVERS_SRC),
            (solid, ROPD_PUT | ROPD_INVERS_BRUSH),
            (pattern, ROPD_AND | ROPD_INVERS_RES),
        ]
        for i, (brush, rop) in enumerate(cases):
            dest = xywh(8 + (i % 4) * 76, 8 + (i // 4) * 60, 64, 48)
            body = d.Opaque(src_bitmap=img, src_area=src, brush=brush, rop_descriptor=rop, scale_mode=SCALE_NEAREST)
            self.draw(body, dest)
        mask = self._mask(48)
        body = d.Opaque(
            src_bitmap=img,
            src_area=src,
            brush=solid,
            rop_descriptor=ROPD_OR,
            scale_mode=SCALE_NEAREST,
            mask=d.QMask(flags=0, pos=Point(x=0, y=0), bitmap=mask),
        )
        self.draw(body, xywh(8, 128, 64, 48))
        body = d.Opaque(
            src_bitmap=img,
            src_area=Rect(top=8, left=8, bottom=40, right=40),
            brush=solid,
            rop_descriptor=ROPD_XOR,
            scale_mode=SCALE_NEAREST,
        )
        self.draw(body, xywh(90, 128, 64, 64))

    def scene_blend(self) -> None:
        """DRAW_BLEND: a source image combined with the destination by rop."""
        self._scene_bg()
        self._stripes(xywh(0, 0, 320, 200))
        img = bitmap_image(self._new_id(), BitmapFmt.BIT32, 64, _rows32(self._small_photo()))
        src = Rect(top=0, left=0, bottom=48, right=64)
        rops = [
            ROPD_AND,
            ROPD_OR,
            ROPD_XOR,
            ROPD_PUT | ROPD_INVERS_SRC,
            ROPD_AND | ROPD_INVERS_DEST,
            ROPD_OR | ROPD_INVERS_RES,
            ROPD_XOR | ROPD_INVERS_SRC | ROPD_INVERS_DEST,
            ROPD_WHITENESS,
        ]
        for i, rop in enumerate(rops):
            dest = xywh(8 + (i % 4) * 76, 8 + (i // 4) * 60, 64, 48)
            self.draw(d.Blend(src_bitmap=img, src_area=src, rop_descriptor=rop, scale_mode=SCALE_NEAREST), dest)
        self.draw(
            d.Blend(src_bitmap=img, src_area=src, rop_descriptor=ROPD_XOR, scale_mode=SCALE_NEAREST),
            xywh(8, 130, 128, 96),
        )

    def scene_blackness_whiteness_invers(self) -> None:
        """DRAW_BLACKNESS, DRAW_WHITENESS, DRAW_INVERS, plain and through masks and clips."""
        self._scene_bg()
        self._stripes(xywh(0, 0, 320, 240))
        self.draw(d.Blackness(), xywh(8, 8, 90, 60))
        self.draw(d.Whiteness(), xywh(110, 8, 90, 60))
        self.draw(d.Invers(), xywh(212, 8, 90, 60))
        mask = self._mask(48)
        qm = d.QMask(flags=0, pos=Point(x=0, y=0), bitmap=mask)
        self.draw(d.Blackness(mask=qm), xywh(8, 80, 48, 48))
        self.draw(d.Whiteness(mask=d.QMask(flags=1, pos=Point(x=0, y=0), bitmap=mask)), xywh(70, 80, 48, 48))
        self.draw(d.Invers(mask=d.QMask(flags=0, pos=Point(x=4, y=4), bitmap=mask)), xywh(132, 80, 48, 48))
        self.draw(d.Invers(), xywh(200, 80, 100, 100), clip=[xywh(200, 80, 30, 30), xywh(240, 120, 50, 50)])
        self.draw(d.Whiteness(), xywh(8, 150, 150, 20), clip=[xywh(20, 150, 30, 20), xywh(80, 155, 40, 10)])

    def scene_rop3(self) -> None:
        """DRAW_ROP3: ternary rops of pattern/solid brush, source and destination."""
        self._scene_bg()
        self._stripes(xywh(0, 0, 320, 240))
        img = bitmap_image(self._new_id(), BitmapFmt.BIT32, 64, _rows32(self._small_photo()))
        src = Rect(top=0, left=0, bottom=48, right=64)
        solid = d.Brush(type=BrushType.SOLID, color=rgb(30, 200, 220))
        pattern = d.Brush(type=BrushType.PATTERN, pattern=d.Pattern(pat=self._pattern(), pos=Point(x=2, y=1)))
        codes = [0xB8, 0xE2, 0x96, 0x1E, 0x6C, 0x8E, 0x4A, 0xCA]
        for i, code in enumerate(codes):
            dest = xywh(8 + (i % 4) * 76, 8 + (i // 4) * 60, 64, 48)
            brush = pattern if i % 2 else solid
            self.draw(d.Rop3(src_bitmap=img, src_area=src, brush=brush, rop3=code, scale_mode=SCALE_NEAREST), dest)
        mask = self._mask(48)
        body = d.Rop3(
            src_bitmap=img,
            src_area=src,
            brush=pattern,
            rop3=0xB8,
            scale_mode=SCALE_NEAREST,
            mask=d.QMask(flags=0, pos=Point(x=0, y=0), bitmap=mask),
        )
        self.draw(body, xywh(8, 130, 64, 48))

    def scene_stroke(self) -> None:
        """DRAW_STROKE: rectangles, lines in every octant, polylines, a Bezier curve, XOR and
        pattern-brush lines, a clipped line."""
        self._scene_bg(rgb(245, 245, 240))
        self.stroke_rect(xywh(4, 4, 312, 232), rgb(0, 0, 0))
        self.stroke_rect(xywh(10, 10, 60, 40), rgb(200, 0, 0))
        cx, cy = 120, 70
        for i in range(16):
            a = i * math.pi / 8
            self.stroke(
                [(cx, cy), (cx + int(50 * math.cos(a)), cy + int(50 * math.sin(a)))], rgb(16 * i, 80, 255 - 16 * i)
            )
        self.stroke([(190, 20), (230, 60), (250, 25), (300, 110), (200, 110)], rgb(0, 120, 0))
        self.stroke([(190, 120), (310, 120), (250, 200)], rgb(0, 0, 160), closed=True)
        curve = d.PathSegment(
            flags=int(PathFlags.BEGIN | PathFlags.BEZIER | PathFlags.END),
            points=tuple(PointFix(x=x << 4, y=y << 4) for x, y in ((20, 200), (60, 120), (120, 260), (170, 170))),
        )
        self.stroke([], rgb(160, 0, 160), segments=[curve])
        self.fill(xywh(20, 140, 100, 20), rgb(40, 90, 200))
        self.stroke([(10, 150), (140, 150)], rgb(255, 255, 0), rop=ROPD_XOR)
        self.stroke([(10, 160), (140, 130)], rgb(255, 255, 0), rop=ROPD_XOR)
        pattern = d.Brush(type=BrushType.PATTERN, pattern=d.Pattern(pat=self._pattern(), pos=Point(x=0, y=0)))
        self.stroke([(10, 225), (300, 215)], 0, brush=pattern)
        self.stroke([(180, 230), (310, 130)], rgb(255, 0, 0), clip=[xywh(200, 140, 60, 60)])
        two = (
            d.PathSegment(
                flags=int(PathFlags.BEGIN), points=(PointFix(x=80 << 4, y=20 << 4), PointFix(x=100 << 4, y=40 << 4))
            ),
            d.PathSegment(flags=int(PathFlags.END), points=(PointFix(x=80 << 4, y=40 << 4),)),
        )
        self.stroke([], rgb(0, 0, 0), segments=two)

    def scene_stroke_styled(self, *, dashed: bool = True) -> None:
        """DRAW_STROKE with dashed (STYLED) lines, with and without START_WITH_GAP (``dashed`` False:
        the same lines solid, as a reference)."""
        self._scene_bg(rgb(245, 245, 240))

        def attr(style: tuple[int, ...], gap: bool = False) -> d.LineAttr:
            if not dashed:
                return d.LineAttr(flags=0)
            return d.LineAttr(flags=int(LineFlags.STYLED | (LineFlags.START_WITH_GAP if gap else 0)), style=style)

        dashes = [(4 << 4, 2 << 4), (8 << 4, 3 << 4, 2 << 4, 3 << 4), (1 << 4, 1 << 4)]
        for i, style in enumerate(dashes):
            for gap in (False, True):
                y = 20 + (2 * i + int(gap)) * 30
                self.stroke([(10, y), (300, y + 20)], rgb(0, 0, 0), attr=attr(style, gap))
        self.stroke([(40, 200), (160, 120), (280, 200)], rgb(200, 0, 0), closed=True, attr=attr((6 << 4, 4 << 4)))

    def scene_text(self) -> None:
        """DRAW_TEXT: A4 and A1 glyph strings, a background area, a pattern fore brush, clipping."""
        self._scene_bg(rgb(240, 240, 235))
        self.text(8, 20, "The quick brown fox (A4)", rgb(0, 0, 0))
        self.text(8, 40, "jumps over the lazy dog (A1)", rgb(200, 0, 0), font=self.font_a1)
        self.text(8, 62, "on a background", rgb(255, 255, 255), back=(xywh(4, 48, 150, 20), rgb(52, 101, 164)))
        pattern = d.Brush(type=BrushType.PATTERN, pattern=d.Pattern(pat=self._pattern(), pos=Point(x=0, y=0)))
        self.text(8, 100, "PATTERN", 0, font=self.font_big, fore=pattern)
        self.text(
            8, 130, "clipped text clipped text", rgb(0, 90, 0), clip=[xywh(8, 115, 60, 20), xywh(100, 115, 60, 20)]
        )
        self.fill(xywh(170, 8, 140, 120), rgb(30, 30, 30))
        for i, c in enumerate((rgb(255, 255, 255), rgb(255, 200, 0), rgb(0, 255, 160), rgb(120, 160, 255))):
            self.text(
                176,
                28 + i * 26,
                f"line {i}: 0123456789",
                c,
                font=self.font if i % 2 else self.font_a1,
                within=xywh(170, 8, 140, 120),
            )
        self.text(8, 180, "Big A4 glyphs", rgb(120, 0, 120), font=self.font_big)
        self.text(8, 220, "#$%&@ ()[]{} <>?!", rgb(0, 0, 0), font=self.font_a1)

    def scene_transparent(self) -> None:
        """DRAW_TRANSPARENT: a colour-keyed image, at size and scaled (nearest)."""
        self._scene_bg()
        self._stripes(xywh(0, 0, 320, 240))
        key = rgb(255, 0, 255)
        px = self._small_photo()
        yy, xx = np.mgrid[0:48, 0:64]
        px = np.where(((xx - 32) ** 2 + (yy - 24) ** 2 > 20**2) | ((xx // 8 + yy // 8) % 3 == 0), key, px).astype(
            np.uint32
        )
        img = bitmap_image(self._new_id(), BitmapFmt.BIT32, 64, _rows32(px))
        src = Rect(top=0, left=0, bottom=48, right=64)
        self.draw(d.Transparent(src_bitmap=img, src_area=src, src_color=key, true_color=key), xywh(8, 8, 64, 48))
        self.draw(d.Transparent(src_bitmap=img, src_area=src, src_color=key, true_color=key), xywh(90, 8, 128, 96))
        img24 = bitmap_image(self._new_id(), BitmapFmt.BIT24, 64, _rows24(px), top_down=False)
        self.draw(
            d.Transparent(
                src_bitmap=img24, src_area=Rect(top=8, left=8, bottom=40, right=56), src_color=key, true_color=key
            ),
            xywh(230, 8, 48, 32),
        )

    def scene_alpha_blend(self) -> None:
        """DRAW_ALPHA_BLEND: per-pixel alpha (premultiplied RGBA), a global alpha, both, scaled."""
        self._scene_bg()
        self._stripes(xywh(0, 0, 320, 240))
        px = self._small_photo()
        yy, xx = np.mgrid[0:48, 0:64]
        alpha = np.clip(255 - np.hypot(xx - 32, yy - 24) * 8, 0, 255).astype(np.uint32)
        rgba = bitmap_image(self._new_id(), BitmapFmt.RGBA, 64, _rows32(_premultiplied(px, alpha)))
        opaque = bitmap_image(self._new_id(), BitmapFmt.BIT32, 64, _rows32(px))
        src = Rect(top=0, left=0, bottom=48, right=64)
        self.draw(d.AlphaBlend(alpha_flags=0, alpha=255, src_bitmap=rgba, src_area=src), xywh(8, 8, 64, 48))
        self.draw(d.AlphaBlend(alpha_flags=0, alpha=128, src_bitmap=opaque, src_area=src), xywh(84, 8, 64, 48))
        self.draw(d.AlphaBlend(alpha_flags=0, alpha=100, src_bitmap=rgba, src_area=src), xywh(160, 8, 64, 48))
        self.draw(d.AlphaBlend(alpha_flags=0, alpha=200, src_bitmap=rgba, src_area=src), xywh(8, 70, 128, 96))
        self.draw(
            d.AlphaBlend(alpha_flags=0, alpha=255, src_bitmap=rgba, src_area=Rect(top=8, left=16, bottom=40, right=48)),
            xywh(160, 70, 32, 32),
        )

    def scene_composite(self) -> None:
        """DRAW_COMPOSITE: OVER and ADD with an RGBA source, an A8 mask, a scaling transform, a
        repeating source."""
        self._scene_bg()
        self._stripes(xywh(0, 0, 320, 240))
        px = self._small_photo()
        yy, xx = np.mgrid[0:48, 0:64]
        alpha = np.clip(255 - np.hypot(xx - 32, yy - 24) * 7, 0, 255).astype(np.uint32)
        rgba = bitmap_image(self._new_id(), BitmapFmt.RGBA, 64, _rows32(_premultiplied(px, alpha)))
        opaque = bitmap_image(self._new_id(), BitmapFmt.BIT32, 64, _rows32(px))
        a8 = bitmap_image(self._new_id(), BitmapFmt.BIT8_A, 64, (xx * 4).astype(np.uint8))
        nearest = PIXMAN_FILTER_NEAREST << _COMPOSITE_SRC_FILTER_SHIFT
        origin = Point16(x=0, y=0)

        def comp(
            flags: int,
            src: d.Image,
            dest: Rect,
            *,
            mask: d.Image | None = None,
            transform: Transform | None = None,
            src_origin: Point16 = origin,
        ) -> None:
            if mask is not None:
                flags |= int(CompositeFlags.HAS_MASK) | (PIXMAN_FILTER_NEAREST << _COMPOSITE_MASK_FILTER_SHIFT)
            if transform is not None:
                flags |= int(CompositeFlags.HAS_SRC_TRANSFORM)
            body = d.Composite(
                flags=flags,
                src_bitmap=src,
                mask_bitmap=mask,
                src_transform=transform,
                mask_transform=None,
                src_origin=src_origin,
                mask_origin=origin,
            )
            self.draw(body, dest)

        comp(PIXMAN_OP_OVER | nearest, rgba, xywh(8, 8, 64, 48))
        comp(PIXMAN_OP_ADD | nearest, rgba, xywh(84, 8, 64, 48))
        comp(PIXMAN_OP_SRC | nearest, opaque, xywh(160, 8, 64, 48), mask=a8)
        comp(PIXMAN_OP_OVER | nearest, opaque, xywh(236, 8, 64, 48), mask=a8)
        half = FIXED_ONE // 2
        comp(
            PIXMAN_OP_OVER | nearest,
            rgba,
            xywh(8, 70, 128, 96),
            transform=Transform(t00=half, t01=0, t02=0, t10=0, t11=half, t12=0),
        )
        comp(
            PIXMAN_OP_OVER | nearest | (PIXMAN_REPEAT_NORMAL << _COMPOSITE_SRC_REPEAT_SHIFT),
            rgba,
            xywh(150, 70, 160, 100),
            src_origin=Point16(x=10, y=5),
        )

    def scene_copy_bits(self, scrolls: int = 12) -> None:
        """COPY_BITS: a text pane scrolled up line by line, then overlapping moves down, left, right."""
        self._scene_bg(rgb(250, 250, 250))
        pane = xywh(8, 8, 200, 180)
        lh = self.font.line_height
        n = (pane.bottom - pane.top) // lh
        pane = xywh(8, 8, 200, n * lh)
        self.fill(pane, rgb(255, 255, 240))
        for i in range(n):
            self.text(pane.left + 4, pane.top + i * lh + self.font.ascent, _LINES[i], rgb(0, 0, 0), within=pane)
        for k in range(scrolls):
            self.copy_bits(
                Rect(top=pane.top, left=pane.left, bottom=pane.bottom - lh, right=pane.right), pane.left, pane.top + lh
            )
            last = Rect(top=pane.bottom - lh, left=pane.left, bottom=pane.bottom, right=pane.right)
            self.fill(last, rgb(255, 255, 240))
            self.text(pane.left + 4, last.top + self.font.ascent, _LINES[n + k], rgb(0, 0, 160), within=pane)
        self._stripes(xywh(220, 8, 90, 60))
        self.text(224, 40, "move", rgb(0, 0, 0), font=self.font_big)
        self.copy_bits(xywh(220, 20, 90, 60), 220, 8)  # down, overlapping
        self.copy_bits(xywh(230, 90, 80, 60), 220, 20)  # down and right
        self.copy_bits(xywh(214, 160, 90, 60), 220, 90)  # down and left
        self.copy_bits(xywh(2, 196, 150, 40), 12, 196)  # left, overlapping

    def scene_offscreen(self) -> None:
        """Off-screen surfaces: draw into them, DRAW_COPY / ALPHA_BLEND / COMPOSITE from a SURFACE
        image, destroy one."""
        self._scene_bg()
        self.create_surface(1, 120, 80)
        self.fill(Rect(top=0, left=0, bottom=80, right=120), rgb(250, 250, 210), surface_id=1)
        self.fill(xywh(10, 10, 40, 30), rgb(200, 40, 40), surface_id=1)
        self.stroke([(0, 79), (60, 20), (119, 60)], rgb(0, 0, 200), surface_id=1)
        self.text(8, 70, "off-screen", rgb(0, 80, 0), surface_id=1)
        self.copy(
            bitmap_image(self._new_id(), BitmapFmt.BIT32, 48, _rows32(self._small_photo(48, 32))),
            xywh(66, 4, 48, 32),
            surface_id=1,
        )
        self.create_surface(2, 64, 64)
        self._stripes_on(2, 64, 64)
        self.copy(surface_image(1, 120, 80), xywh(8, 8, 120, 80))
        self.copy(surface_image(1, 120, 80), xywh(140, 8, 60, 40), src=xywh(0, 0, 60, 40))
        self.copy(surface_image(1, 120, 80), xywh(140, 60, 120, 80), src=xywh(60, 40, 60, 40), scale_mode=SCALE_NEAREST)
        self.draw(
            d.AlphaBlend(
                alpha_flags=0,
                alpha=140,
                src_bitmap=surface_image(2, 64, 64),
                src_area=Rect(top=0, left=0, bottom=64, right=64),
            ),
            xywh(8, 100, 64, 64),
            surfaces_dest=(2, -1, -1),
            surfaces_rects=(Rect(top=0, left=0, bottom=64, right=64), _NO_RECT, _NO_RECT),
        )
        body = d.Composite(
            flags=PIXMAN_OP_SRC | (PIXMAN_FILTER_NEAREST << _COMPOSITE_SRC_FILTER_SHIFT),
            src_bitmap=surface_image(1, 120, 80),
            src_origin=Point16(x=20, y=10),
            mask_origin=Point16(x=0, y=0),
        )
        self.draw(
            body,
            xywh(90, 150, 80, 60),
            surfaces_dest=(1, -1, -1),
            surfaces_rects=(xywh(20, 10, 80, 60), _NO_RECT, _NO_RECT),
        )
        self.destroy_surface(2)
        self.fill(xywh(190, 160, 100, 50), rgb(40, 160, 40))
        self.copy(surface_image(1, 120, 80), xywh(200, 170, 80, 30), src=xywh(0, 0, 80, 30))

    def _stripes_on(self, surface_id: int, w: int, h: int) -> None:
        for i, x in enumerate(range(0, w, 8)):
            self.fill(
                Rect(top=0, left=x, bottom=h, right=min(x + 8, w)),
                (rgb(250, 60, 60), rgb(60, 60, 250))[i % 2],
                surface_id=surface_id,
            )

    def scene_cache_hits(self, repeats: int = 6) -> None:
        """The same cached photo drawn again and again (the client gets it once, then FROM_CACHE)."""
        self._scene_bg()
        photo = bitmap_image(self._new_id(), BitmapFmt.BIT32, 64, _rows32(self._small_photo()), cache=True)
        other = bitmap_image(self._new_id(), BitmapFmt.BIT24, 48, _rows24(self._small_photo(48, 40, 2.2)), cache=True)
        for i in range(repeats):
            self.copy(photo, xywh(8 + (i % 4) * 76, 8 + (i // 4) * 56, 64, 48))
        for i in range(3):
            self.copy(other, xywh(8 + i * 60, 130, 48, 40))
        self.copy(photo, xywh(200, 130, 32, 24), src=xywh(16, 12, 32, 24))

    def scene_two_monitors(self, head_width: int = 320, head_height: int = 240) -> None:
        """A primary two heads wide, a different picture on each, MONITORS_CONFIG_ASYNC with two heads."""
        if (self.width, self.height) != (2 * head_width, head_height):
            self.resize(2 * head_width, head_height)
        for i, color in enumerate((rgb(30, 60, 140), rgb(30, 120, 50))):
            head = xywh(i * head_width, 0, head_width, head_height)
            self.fill(head, color)
            self.text(head.left + 20, 40, f"monitor {i}", rgb(255, 255, 255), font=self.font_big)
            self.stroke_rect(head, rgb(255, 255, 0))
            self.copy(
                bitmap_image(self._new_id(), BitmapFmt.BIT32, 64, _rows32(self._small_photo(64, 48, i))),
                xywh(head.left + 20, 80, 64, 48),
            )
        self.set_monitors([(0, 0, head_width, head_height), (head_width, 0, head_width, head_height)])

    def scene_cursor(self) -> None:
        """A cursor SET (the ALPHA arrow), then a MOVE."""
        self.set_cursor(40, 30)
        self.move_cursor(100, 80)


#: scene name -> method, for tests and the example
SCENES: dict[str, Callable[[SyntheticGuest], None]] = {
    "fill": SyntheticGuest.scene_fill,
    "copy": SyntheticGuest.scene_copy,
    "copy_scaled": SyntheticGuest.scene_copy_scaled,
    "opaque": SyntheticGuest.scene_opaque,
    "blend": SyntheticGuest.scene_blend,
    "blackness_whiteness_invers": SyntheticGuest.scene_blackness_whiteness_invers,
    "rop3": SyntheticGuest.scene_rop3,
    "stroke": SyntheticGuest.scene_stroke,
    "stroke_styled": SyntheticGuest.scene_stroke_styled,
    "text": SyntheticGuest.scene_text,
    "transparent": SyntheticGuest.scene_transparent,
    "alpha_blend": SyntheticGuest.scene_alpha_blend,
    "composite": SyntheticGuest.scene_composite,
    "copy_bits": SyntheticGuest.scene_copy_bits,
    "offscreen": SyntheticGuest.scene_offscreen,
    "cache_hits": SyntheticGuest.scene_cache_hits,
    "two_monitors": SyntheticGuest.scene_two_monitors,
    "cursor": SyntheticGuest.scene_cursor,
}
