"""DesktopGuest: the synthetic desktop (setup, static picture, animation frames, resize)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..desktop import ARROW_CURSOR, video_picture
from ..proto.enums import (
    BitmapFmt,
    BrushType,
    ClipType,
    CursorType,
    ImageType,
    PathFlags,
)
from ..proto.messages import display as d
from ..proto.messages.base import Point, Point16, PointFix, Rect
from ..proto.messages.cursor import Cursor, CursorHeader
from ..qxl import layout as L
from ..qxl.commands import CopyBits, DrawBody
from ..qxl.device import QXLDevice
from ..qxl.layout import CmdType, Effect
from .driver import SyntheticDriver
from .glyphs import GlyphFont
from .helpers import (
    _EFFECTS,
    _NO_DEPS,
    _NO_RECT,
    INTERRUPT_MASK,
    ROPD_PUT,
    SCALE_NEAREST,
    _disc,
    _payload_size,
    _photo_pixels,
    _rect_and,
    _rect_minus,
    _rows1be,
    _rows24,
    _rows32,
    _shift,
    bitmap_image,
    rgb,
    surface_image,
    xywh,
)

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


class DesktopGuest:
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
        """Where the desktop's parts go, computed once; ValueError below 640x480."""
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

    #: the video player window of ``--scene video``: client area size
    VIDEO_SIZE = (320, 180)

    def video_frame(self, t: float) -> None:
        """One frame of a video playing in a window (``--scene video``): a DRAW_COPY of a fresh,
        uncached bitmap of the same size at the same place, as a guest's video player draws; the
        window is drawn before the first frame. The server makes a stream of it."""
        w, h = self.VIDEO_SIZE
        win = xywh(max(0, self.width // 2 - w // 2 - 8), max(0, self.height // 2 - h // 2 - 40), w + 16, h + _TITLE_H + 14)
        if getattr(self, "_video_win", None) != win:
            self._video_win = win
            self.window(win, "video.mp4")
        client = self._client_of(win)
        px = video_picture(w, h, t)
        img = bitmap_image(self._new_id(), BitmapFmt.BIT32, w, px.view(np.uint8).reshape(h, w * 4))
        self.driver.reserve(w * h * 4 + 16384)
        self.copy(img, xywh(client.left + 7, client.top + 6, w, h))

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
