"""Read and validate the drawing structures of a QXL command from hostile guest memory.

Counterpart of the structure readers of spice-server ``server/red-parse-qxl.cpp``
(``red_get_data_chunks_ptr``, ``red_get_image``, ``bitmap_consistent``, ``red_get_brush_ptr``,
``red_get_qmask_ptr``, ``red_get_clip_rects``, ``red_get_path``, ``red_get_string``, and the
``red_get_*_ptr`` of every draw type). :mod:`spiceserver.qxl.parse` builds whole commands on it.

Rules:

* Every guest structure is read once (one ``bytes`` copy through
  :meth:`~spiceserver.qxl.memory.MemSlots.read`), then decoded and validated; nothing is re-read,
  so a guest changing memory under us cannot make a checked value differ from the used one.
* Data chunk chains are walked with a byte budget (the size the structure claims, or
  :attr:`ParseLimits.max_data_bytes`) and a chunk-count limit; each chunk must lie in its memslot,
  and no chunk (header + data) may overlap another of its chain -- so a chain never assembles more
  bytes than the guest memory it spans, and a loop is an overlap (libspice checks loops only).
* Every count is checked against the bytes actually present before anything is built from it.
* Anything wrong raises :class:`~spiceserver.errors.GuestError` whose message names the field
  (``"drawable copy src_bitmap: bitmap stride 4 < 8 bytes for 2 px at 32 bpp"``).

Where libspice silently degrades (a pattern brush whose image fails to parse becomes NULL) this
reader rejects the whole command instead.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import GuestError
from ..proto.enums import BitmapFlags, BrushType, ClipType, CompositeFlags, ImageFlags, ImageType, LineFlags
from ..proto.enums import StringFlags as SF
from ..proto.messages import display as d
from ..proto.messages.base import Point, Point16, PointFix, Rect, Transform
from . import layout as L
from .commands import CopyBits, DrawBody
from .layout import CmdFlags, DrawType, QXLBitmapFlags, QXLImageFlags
from .memory import MemSlots

__all__ = ["ParseLimits", "DEFAULT_LIMITS", "GuestReader", "MAX_DATA_CHUNK", "MAX_SURFACE_PIXELS", "color_16_to_32", "rect_of"]

MAX_DATA_CHUNK = 0x7FFFFFFF
#: the largest surface (width * height), whatever its format: the worker's canvases refuse more,
#: so the device refuses it first (one limit, checked when the guest asks)
MAX_SURFACE_PIXELS = 8192 * 8192
_NO_MASK = d.QMask()
_NO_BRUSH = d.Brush(type=int(BrushType.NONE))
_NO_CLIP = d.Clip()


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds on what a guest command may make the server allocate.

    Attributes:
        n_surfaces: surface ids must be below this (ROM ``n_surfaces``).
        max_image_dim: largest image / surface width or height.
        max_image_bytes: largest image (``width * height * 4`` and ``stride * height``) or surface.
        max_surface_pixels: largest surface, ``width * height`` (:data:`MAX_SURFACE_PIXELS`).
        max_data_bytes: largest chunked data (clip rects, path, string, cursor, QUIC stream).
        max_chunks: most data chunks in one chain.
        max_clip_rects, max_path_points, max_glyphs: object counts.
        max_palette_entries: palettes index at most 8 bits.
        max_message_len: QXL_CMD_MESSAGE text (libspice scans 100000 bytes).
    """

    n_surfaces: int = 1024
    max_image_dim: int = 1 << 16
    max_image_bytes: int = 256 << 20
    max_surface_pixels: int = MAX_SURFACE_PIXELS
    max_data_bytes: int = 64 << 20
    max_chunks: int = 1 << 16
    max_clip_rects: int = 1 << 16
    max_path_points: int = 1 << 20
    max_glyphs: int = 1 << 16
    max_palette_entries: int = 256
    max_message_len: int = 100_000


DEFAULT_LIMITS = ParseLimits()


class _Spans:
    """Disjoint half-open address ranges, sorted: the chunks of one chain seen so far."""

    __slots__ = ("ends", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, start: int, end: int) -> bool:
        """Add ``[start, end)``; False (and nothing added) if it overlaps a range already there."""
        i = bisect.bisect_right(self.starts, start)
        if i and self.ends[i - 1] > start:
            return False
        if i < len(self.starts) and self.starts[i] < end:
            return False
        self.starts.insert(i, start)
        self.ends.insert(i, end)
        return True


def color_16_to_32(color: int) -> int:
    """An x555 colour widened to x888, low bits replicated (qxl-1 16 bpp compat mode)."""
    c = ((color & 0x001F) << 3) | ((color & 0x001C) >> 2)
    c |= ((color & 0x03E0) << 6) | ((color & 0x0380) << 1)
    c |= ((color & 0x7C00) << 9) | ((color & 0x7000) << 4)
    return c


def rect_of(vals: tuple[int, ...], i: int = 0) -> Rect:
    """The Rect of four values (top, left, bottom, right) at ``vals[i:i + 4]``."""
    return Rect(top=vals[i], left=vals[i + 1], bottom=vals[i + 2], right=vals[i + 3])


class GuestReader:
    """Reads and validates the structures of one command: where to read, its flags, the limits.

    Every method raises GuestError naming ``what`` (the field path) on bad input.
    """

    __slots__ = ("compat16", "group", "limits", "mem")

    def __init__(self, mem: MemSlots, group_id: int, flags: int, limits: ParseLimits) -> None:
        self.mem = mem
        self.group = group_id
        self.compat16 = bool(flags & _COMPAT_16BPP)
        self.limits = limits

    # --- memory ----------------------------------------------------------------------------------

    def read(self, phys: int, size: int, what: str) -> bytes:
        """``size`` bytes at QXLPHYSICAL ``phys`` through the memslots; GuestError for NULL or a bad address."""
        if phys == 0:
            raise GuestError(f"{what}: NULL pointer")
        try:
            return self.mem.read(phys, size, self.group)
        except GuestError as exc:
            raise GuestError(f"{what}: {exc}") from None

    def chunks(self, first: bytes, phys: int, limit: int, what: str) -> bytes:
        """The data of a QXLDataChunk chain whose first header (``first``, 20 B) is at ``phys``.

        Raises GuestError if the data exceeds ``limit`` bytes, the chain is longer than
        ``max_chunks``, a chunk or its data is outside its memslot, or a chunk (header and data)
        overlaps another chunk of the chain -- which also catches loops. Without the overlap check
        headers 20 bytes apart, each claiming the next 4 KiB, would assemble hundreds of MiB from
        a few MiB of guest memory; with it the assembled bytes never exceed the guest bytes spanned.
        """
        parts: list[bytes] = []
        total = 0
        size, _prev, nxt = L.DATA_CHUNK.unpack(first)
        try:
            addr = self.mem.translate(phys, L.DATA_CHUNK.size, self.group)
        except GuestError as exc:
            raise GuestError(f"{what} chunk 1: {exc}") from None
        spans = _Spans()
        n = 1
        while True:
            if size > limit - total:
                raise GuestError(f"{what}: data chunks hold more than {limit} bytes")
            if not spans.add(addr, addr + L.DATA_CHUNK.size + size):
                if addr in spans.starts:
                    raise GuestError(f"{what}: data chunk loop at {phys:#x}")
                raise GuestError(f"{what}: data chunk {n} at {phys:#x} overlaps another chunk of the chain")
            if size:
                parts.append(self.read(phys + L.DATA_CHUNK.size, size, f"{what} chunk {n} data"))
                total += size
            if nxt == 0:
                break
            n += 1
            if n > self.limits.max_chunks:
                raise GuestError(f"{what}: more than {self.limits.max_chunks} data chunks")
            try:
                addr = self.mem.translate(nxt, L.DATA_CHUNK.size, self.group)
            except GuestError as exc:
                raise GuestError(f"{what} chunk {n}: {exc}") from None
            phys = nxt
            size, _prev, nxt = L.DATA_CHUNK.unpack(self.mem.memory.read(addr, L.DATA_CHUNK.size))
        return b"".join(parts)

    def surface_id(self, sid: int, what: str) -> int:
        """``sid`` if it is a valid surface id, else GuestError."""
        if not 0 <= sid < self.limits.n_surfaces:
            raise GuestError(f"{what}: surface id {sid} out of range (< {self.limits.n_surfaces})")
        return sid

    def dims(self, width: int, height: int, what: str) -> None:
        """GuestError if a ``width`` x ``height`` image exceeds the limits."""
        lim = self.limits
        if width > lim.max_image_dim or height > lim.max_image_dim:
            raise GuestError(f"{what}: size {width}x{height} exceeds {lim.max_image_dim}")
        if width * height * 4 > lim.max_image_bytes:
            raise GuestError(f"{what}: {width}x{height} exceeds {lim.max_image_bytes} bytes")

    # --- images ----------------------------------------------------------------------------------

    def image(self, phys: int, what: str, *, is_mask: bool = False) -> d.Image | None:
        """``red_get_image``: None for a NULL pointer."""
        if phys == 0:
            return None
        raw = self.read(phys, L.IMAGE_SIZE, what)
        id_, type_, qflags, width, height = L.IMAGE_DESCRIPTOR.unpack_from(raw)
        self.dims(width, height, what)
        flags = 0
        if qflags & _HIGH_BITS_SET:
            flags |= int(ImageFlags.HIGH_BITS_SET)
        if qflags & _CACHE:
            flags |= int(ImageFlags.CACHE_ME)
        desc = d.ImageDescriptor(id=id_, type=type_, flags=flags, width=width, height=height)
        if type_ == ImageType.BITMAP:
            return d.Image(descriptor=desc, bitmap=self.bitmap(raw, phys, what, is_mask))
        if type_ == ImageType.QUIC:
            (size,) = L.QUIC_DATA.unpack_from(raw, L.IMAGE_UNION_OFF)
            if size > self.limits.max_image_bytes:
                raise GuestError(f"{what}: QUIC data_size {size} exceeds {self.limits.max_image_bytes}")
            off = L.QUIC_CHUNK_OFF
            data = self.chunks(raw[off : off + L.DATA_CHUNK.size], phys + off, size, f"{what} QUIC")
            if len(data) != size:
                raise GuestError(f"{what}: QUIC data_size {size} but chunks hold {len(data)} bytes")
            return d.Image(descriptor=desc, quic=d.BinaryData(data=data))
        if type_ == ImageType.SURFACE:
            (sid,) = L.SURFACE_ID.unpack_from(raw, L.IMAGE_UNION_OFF)
            return d.Image(descriptor=desc, surface=d.Surface(surface_id=self.surface_id(sid, what)))
        raise GuestError(f"{what}: unsupported image type {type_}")

    def bitmap(self, raw: bytes, phys: int, what: str, is_mask: bool) -> d.BitmapData:
        """The BITMAP arm of the QXLImage ``raw`` at ``phys``: format, stride, palette and pixel data checked."""
        fmt, qflags, x, y, stride, pal_phys, data_phys = L.BITMAP.unpack_from(raw, L.IMAGE_UNION_OFF)
        if not 0 < fmt < len(L.BITMAP_FMT_BPP):
            raise GuestError(f"{what}: bad bitmap format {fmt}")
        if not L.BITMAP_FMT_IS_RGB[fmt] and pal_phys == 0 and not is_mask:
            raise GuestError(f"{what}: bitmap format {fmt} without a palette")
        if x == 0 or y == 0:
            raise GuestError(f"{what}: zero-area bitmap {x}x{y}")
        self.dims(x, y, f"{what} bitmap")
        bpp = L.BITMAP_FMT_BPP[fmt]
        if stride < (x * bpp + 7) // 8:
            raise GuestError(f"{what}: bitmap stride {stride} < {(x * bpp + 7) // 8} bytes for {x} px at {bpp} bpp")
        size = stride * y
        if size > self.limits.max_image_bytes:
            raise GuestError(f"{what}: bitmap of {size} bytes exceeds {self.limits.max_image_bytes}")
        palette = self.palette(pal_phys, f"{what} palette") if pal_phys else None
        if qflags & _DIRECT:
            data = self.read(data_phys, size, f"{what} bitmap data")
        else:
            first = self.read(data_phys, L.DATA_CHUNK.size, f"{what} bitmap data")
            data = self.chunks(first, data_phys, size, f"{what} bitmap")
            if len(data) != size:
                raise GuestError(f"{what}: bitmap needs {size} bytes but chunks hold {len(data)}")
        flags = int(BitmapFlags.TOP_DOWN) if qflags & _TOP_DOWN else 0
        return d.BitmapData(format=fmt, flags=flags, x=x, y=y, stride=stride, palette=palette, data=data)

    def palette(self, phys: int, what: str) -> d.Palette:
        """A QXLPalette, entries widened in 16 bpp compat mode; GuestError if too many."""
        unique, n = L.PALETTE.unpack(self.read(phys, L.PALETTE.size, what))
        if n > self.limits.max_palette_entries:
            raise GuestError(f"{what}: {n} entries exceed {self.limits.max_palette_entries}")
        ents = struct.unpack(f"<{n}I", self.read(phys + L.PALETTE.size, 4 * n, f"{what} entries")) if n else ()
        if self.compat16:
            ents = tuple(color_16_to_32(e) for e in ents)
        return d.Palette(unique=unique, ents=ents)

    # --- brushes, masks, clips -------------------------------------------------------------------

    def brush(self, raw: bytes, off: int, what: str) -> d.Brush:
        """``red_get_brush_ptr``: the QXLBrush at ``raw[off:]``."""
        type_, pat, x, y = L.BRUSH.unpack_from(raw, off)
        if type_ == BrushType.NONE:
            return _NO_BRUSH
        if type_ == BrushType.SOLID:
            (color,) = L.U32.unpack_from(raw, off + 4)
            return d.Brush(type=int(BrushType.SOLID), color=color_16_to_32(color) if self.compat16 else color)
        if type_ == BrushType.PATTERN:
            img = self.image(pat, f"{what} pattern")
            if img is None:
                raise GuestError(f"{what}: pattern brush without an image")
            return d.Brush(type=int(BrushType.PATTERN), pattern=d.Pattern(pat=img, pos=Point(x=x, y=y)))
        raise GuestError(f"{what}: bad brush type {type_}")

    def qmask(self, raw: bytes, off: int, what: str) -> d.QMask:
        """``red_get_qmask_ptr``: the QXLQMask at ``raw[off:]`` (no bitmap: an empty mask)."""
        flags, x, y, bitmap = L.QMASK.unpack_from(raw, off)
        img = self.image(bitmap, f"{what} mask", is_mask=True)
        if img is None:
            return _NO_MASK
        return d.QMask(flags=flags, pos=Point(x=x, y=y), bitmap=img)

    def clip(self, type_: int, phys: int, what: str) -> d.Clip:
        """A clip: NONE, or ``red_get_clip_rects`` of the QXLClipRects at ``phys``."""
        if type_ == ClipType.NONE:
            return _NO_CLIP
        if type_ != ClipType.RECTS:
            raise GuestError(f"{what}: bad clip type {type_}")
        raw = self.read(phys, L.CLIP_RECTS_SIZE, f"{what} rects")
        (n,) = L.CLIP_RECTS.unpack_from(raw)
        if n > self.limits.max_clip_rects:
            raise GuestError(f"{what}: {n} clip rects exceed {self.limits.max_clip_rects}")
        data = self.chunks(raw[4:], phys + 4, n * 16, f"{what} rects")
        if len(data) != n * 16:
            raise GuestError(f"{what}: num_rects {n} needs {n * 16} bytes but chunks hold {len(data)}")
        rects = tuple(Rect(top=t, left=le, bottom=b, right=r) for t, le, b, r in L.RECT.iter_unpack(data))
        return d.Clip(type=int(ClipType.RECTS), rects=d.ClipRects(rects=rects))

    def src_area(self, img: d.Image, area: Rect, what: str) -> None:
        """libspice ``red_get_copy_ptr``: the source area lies inside the source bitmap."""
        if area.left < 0 or area.left > area.right or area.top < 0 or area.top > area.bottom:
            raise GuestError(f"{what}: bad src_area {area}")
        bm = img.bitmap
        if bm is not None and (area.right > bm.x or area.bottom > bm.y):
            raise GuestError(f"{what}: src_area {area} outside the {bm.x}x{bm.y} bitmap")

    # --- paths and strings -----------------------------------------------------------------------

    def path(self, phys: int, what: str) -> d.Path:
        """``red_get_path``: the segments of the QXLPath at ``phys``, within the point limit."""
        raw = self.read(phys, L.PATH_SIZE, what)
        data = self.chunks(raw[4:], phys + 4, self.limits.max_data_bytes, what)
        segments: list[d.PathSegment] = []
        pos, end, total = 0, len(data), 0
        # as libspice: a segment header needs more than its 8 bytes left (``start + 1 < end``)
        while pos + L.PATH_SEG.size < end:
            flags, count = L.PATH_SEG.unpack_from(data, pos)
            pos += L.PATH_SEG.size
            if count * 8 > end - pos:
                raise GuestError(f"{what}: segment {len(segments)} claims {count} points past the data")
            total += count
            if total > self.limits.max_path_points:
                raise GuestError(f"{what}: more than {self.limits.max_path_points} points")
            pts = tuple(PointFix(x=px, y=py) for px, py in L.POINT_FIX.iter_unpack(data[pos : pos + count * 8]))
            segments.append(d.PathSegment(flags=flags & 0xFF, points=pts))
            pos += count * 8
        return d.Path(segments=tuple(segments))

    def string(self, phys: int, what: str) -> d.String:
        """``red_get_string``: the raster glyphs of the QXLString at ``phys``."""
        raw = self.read(phys, L.STRING_SIZE, what)
        size, length, flags = L.STRING.unpack_from(raw)
        if size > self.limits.max_data_bytes:
            raise GuestError(f"{what}: data_size {size} exceeds {self.limits.max_data_bytes}")
        if length > self.limits.max_glyphs:
            raise GuestError(f"{what}: {length} glyphs exceed {self.limits.max_glyphs}")
        data = self.chunks(raw[8:], phys + 8, size, what)
        if len(data) != size:
            raise GuestError(f"{what}: data_size {size} but chunks hold {len(data)} bytes")
        glyph_cls: type[d.RasterGlyphA1] | type[d.RasterGlyphA4] | type[d.RasterGlyphA8]
        if flags & _RASTER_A1:
            bpp, glyph_cls = 1, d.RasterGlyphA1
        elif flags & _RASTER_A4:
            bpp, glyph_cls = 4, d.RasterGlyphA4
        elif flags & _RASTER_A8:
            bpp, glyph_cls = 8, d.RasterGlyphA8
        else:
            raise GuestError(f"{what}: flags {flags:#x} name no glyph depth")
        glyphs: list[d.RasterGlyph] = []
        pos = 0
        head = L.RASTER_GLYPH
        hsize = head.size
        points = _POINTS
        if len(points) >= _MAX_POINTS:
            points.clear()
        while pos < size:
            if len(glyphs) == length:
                raise GuestError(f"{what}: more glyph data than length {length}")
            if hsize > size - pos:
                raise GuestError(f"{what}: glyph {len(glyphs)} header past the data")
            rx, ry, ox, oy, w, h = head.unpack_from(data, pos)
            pos += hsize
            n = h * ((w * bpp + 7) // 8)
            if n > size - pos:
                raise GuestError(f"{what}: glyph {len(glyphs)} ({w}x{h}) data past the end")
            # points are immutable: the same origin (and often position) is shared between glyphs
            render_pos = points.get((rx, ry))
            if render_pos is None:
                render_pos = Point(x=rx, y=ry)
                if len(points) < _MAX_POINTS:
                    points[rx, ry] = render_pos
            origin = points.get((ox, oy))
            if origin is None:
                origin = Point(x=ox, y=oy)
                if len(points) < _MAX_POINTS:
                    points[ox, oy] = origin
            glyphs.append(glyph_cls(render_pos=render_pos, glyph_origin=origin, width=w, height=h, data=data[pos : pos + n]))
            pos += n
        if len(glyphs) != length:
            raise GuestError(f"{what}: length {length} but the data holds {len(glyphs)} glyphs")
        return d.String(flags=flags & 0xFF, glyphs=tuple(glyphs))

    # --- draw bodies -----------------------------------------------------------------------------

    def body(self, type_: int, raw: bytes, o: int, compat: bool, what: str) -> DrawBody:
        """The drawable's union arm for ``type_`` at ``raw[o:]`` (None for NOP); GuestError for an unknown type."""
        arm = _BODIES.get(type_)
        if arm is None or (compat and type_ == _COMPOSITE):
            raise GuestError(f"{what}: unknown draw type {type_}")
        return arm(self, type_, raw, o, compat, what)

    def _nop(self, type_: int, raw: bytes, o: int, compat: bool, what: str) -> DrawBody:
        return None

    def _fill(self, type_: int, raw: bytes, o: int, compat: bool, what: str) -> DrawBody:
        # brush, rop and mask in one unpack; a solid brush and an absent mask (what nearly every
        # fill has) are built here, anything else as :meth:`brush` / :meth:`qmask` do
        btype, pat, _x, _y, rop, _mflags, _mx, _my, mbitmap = L.FILL.unpack_from(raw, o)
        if btype == _SOLID:
            color = pat & 0xFFFFFFFF  # the union's u32 colour: the low half of ``pat``
            brush = d.Brush(type=_SOLID, color=color_16_to_32(color) if self.compat16 else color)
        else:
            brush = self.brush(raw, o, f"{what} brush")
        mask = _NO_MASK if mbitmap == 0 else self.qmask(raw, o + L.FILL_MASK_OFF, what)
        return d.Fill(brush=brush, rop_descriptor=rop, mask=mask)

    def _copy(self, type_: int, raw: bytes, o: int, compat: bool, what: str) -> DrawBody:
        src, t, le, b, r, rop, scale = L.COPY.unpack_from(raw, o)
        area = Rect(top=t, left=le, bottom=b, right=r)
        img = self.image(src, f"{what} src_bitmap")
        if img is None:
            raise GuestError(f"{what}: NULL src_bitmap")
        self.src_area(img, area, what)
        cls = d.Copy if type_ == DrawType.COPY else d.Blend
        mask = self.qmask(raw, o + L.COPY_MASK_OFF, what)
        return cls(src_bitmap=img, src_area=area, rop_descriptor=rop, scale_mode=scale, mask=mask)

    def _opaque(self, type_: int, raw: bytes, o: int, compat: bool, what: str) -> DrawBody:
        src, *src_area = L.SRC_AND_AREA.unpack_from(raw, o)
        return d.Opaque(
            src_bitmap=self.image(src, f"{what} src_bitmap"),
            src_area=rect_of(tuple(src_area)),
            brush=self.brush(raw, o + 24, f"{what} brush"),
            rop_descriptor=L.U16.unpack_from(raw, o + 44)[0],
            scale_mode=raw[o + 46],
            mask=self.qmask(raw, o + 47, what),
        )

    def _rop3(self, type_: int, raw: bytes, o: int, compat: bool, what: str) -> DrawBody:
        src, *src_area = L.SRC_AND_AREA.unpack_from(raw, o)
        return d.Rop3(
            src_bitmap=self.image(src, f"{what} src_bitmap"),
            src_area=rect_of(tuple(src_area)),
            brush=self.brush(raw, o + 24, f"{what} brush"),
            rop3=raw[o + 44],
            scale_mode=raw[o + 45],
            mask=self.qmask(raw, o + 46, what),
        )

    def _masked(self, type_: int, raw: bytes, o: int, compat: bool, what: str) -> DrawBody:
        mask = self.qmask(raw, o, what)
        if type_ == DrawType.BLACKNESS:
            return d.Blackness(mask=mask)
        return d.Whiteness(mask=mask) if type_ == DrawType.WHITENESS else d.Invers(mask=mask)

    def _copy_bits(self, type_: int, raw: bytes, o: int, compat: bool, what: str) -> DrawBody:
        x, y = L.POINT.unpack_from(raw, o)
        return CopyBits(src_pos=Point(x=x, y=y))

    def _transparent(self, type_: int, raw: bytes, o: int, compat: bool, what: str) -> DrawBody:
        src, t, le, b, r, src_color, true_color = L.TRANSPARENT.unpack_from(raw, o)
        return d.Transparent(
            src_bitmap=self.image(src, f"{what} src_bitmap"),
            src_area=Rect(top=t, left=le, bottom=b, right=r),
            src_color=src_color,
            true_color=true_color,
        )

    def _alpha_blend(self, type_: int, raw: bytes, o: int, compat: bool, what: str) -> DrawBody:
        if compat:
            alpha, src, t, le, b, r = L.COMPAT_ALPHA_BLEND.unpack_from(raw, o)
            alpha_flags = 0
        else:
            alpha_flags, alpha, src, t, le, b, r = L.ALPHA_BLEND.unpack_from(raw, o)
        return d.AlphaBlend(
            alpha_flags=alpha_flags & 0xFF,
            alpha=alpha,
            src_bitmap=self.image(src, f"{what} src_bitmap"),
            src_area=Rect(top=t, left=le, bottom=b, right=r),
        )

    def _stroke(self, type_: int, raw: bytes, o: int, compat: bool, what: str) -> DrawBody:
        return self.stroke(raw, o, what)

    def _text(self, type_: int, raw: bytes, o: int, compat: bool, what: str) -> DrawBody:
        str_phys, t, le, b, r = L.TEXT_HEAD.unpack_from(raw, o)
        fore, back = L.MODES.unpack_from(raw, o + 64)
        return d.Text(
            str=self.string(str_phys, f"{what} str"),
            back_area=Rect(top=t, left=le, bottom=b, right=r),
            fore_brush=self.brush(raw, o + 24, f"{what} fore_brush"),
            back_brush=self.brush(raw, o + 44, f"{what} back_brush"),
            fore_mode=fore,
            back_mode=back,
        )

    def _composite(self, type_: int, raw: bytes, o: int, compat: bool, what: str) -> DrawBody:
        return self.composite(raw, o, what)

    def stroke(self, raw: bytes, o: int, what: str) -> d.Stroke:
        """``red_get_stroke_ptr``: the QXLStroke at ``raw[o:]`` with its path and line style."""
        (path_phys,) = L.U64.unpack_from(raw, o)
        flags, _join, _end, nseg, _width, _miter, style_phys = L.LINE_ATTR.unpack_from(raw, o + 8)
        path = self.path(path_phys, f"{what} path")
        style: tuple[int, ...] | None = None
        if flags & LineFlags.STYLED:
            if nseg == 0:
                raise GuestError(f"{what}: styled line with no style segments")
            style = struct.unpack(f"<{nseg}i", self.read(style_phys, 4 * nseg, f"{what} style"))
        fore, back = L.MODES.unpack_from(raw, o + 48)
        return d.Stroke(
            path=path,
            attr=d.LineAttr(flags=flags, style=style),
            brush=self.brush(raw, o + 28, f"{what} brush"),
            fore_mode=fore,
            back_mode=back,
        )

    def composite(self, raw: bytes, o: int, what: str) -> d.Composite:
        """``red_get_composite_ptr``: the QXLComposite at ``raw[o:]`` with its images and transforms."""
        flags, src, src_t, mask, mask_t, sx, sy, mx, my = L.COMPOSITE.unpack_from(raw, o)
        has = int(CompositeFlags.HAS_MASK | CompositeFlags.HAS_SRC_TRANSFORM | CompositeFlags.HAS_MASK_TRANSFORM)
        flags &= ~has
        src_transform = self.transform(src_t, f"{what} src_transform")
        mask_img = mask_transform = None
        if src_transform is not None:
            flags |= int(CompositeFlags.HAS_SRC_TRANSFORM)
        if mask:
            mask_img = self.image(mask, f"{what} mask")
            flags |= int(CompositeFlags.HAS_MASK)
            mask_transform = self.transform(mask_t, f"{what} mask_transform")
            if mask_transform is not None:
                flags |= int(CompositeFlags.HAS_MASK_TRANSFORM)
        return d.Composite(
            flags=flags,
            src_bitmap=self.image(src, f"{what} src"),
            mask_bitmap=mask_img,
            src_transform=src_transform,
            mask_transform=mask_transform,
            src_origin=Point16(x=sx, y=sy),
            mask_origin=Point16(x=mx, y=my),
        )

    def transform(self, phys: int, what: str) -> Transform | None:
        """``red_get_transform``: the QXLTransform at ``phys``, None for NULL."""
        if phys == 0:
            return None
        t = L.TRANSFORM.unpack(self.read(phys, L.TRANSFORM.size, what))
        return Transform(t00=t[0], t01=t[1], t02=t[2], t10=t[3], t11=t[4], t12=t[5])


_SOLID = int(BrushType.SOLID)
_COMPOSITE = int(DrawType.COMPOSITE)
_COMPAT_16BPP = int(CmdFlags.COMPAT_16BPP)
# flag tests against plain ints (``int & IntFlag`` goes through enum's slow ``__rand__``)
_RASTER_A1, _RASTER_A4, _RASTER_A8 = int(SF.RASTER_A1), int(SF.RASTER_A4), int(SF.RASTER_A8)
_HIGH_BITS_SET, _CACHE = int(QXLImageFlags.HIGH_BITS_SET), int(QXLImageFlags.CACHE)
_DIRECT, _TOP_DOWN = int(QXLBitmapFlags.DIRECT), int(QXLBitmapFlags.TOP_DOWN)
#: glyph points seen lately, shared (immutable); cleared when it reaches :data:`_MAX_POINTS`
_POINTS: dict[tuple[int, int], Point] = {}
_MAX_POINTS = 4096

#: ``QXL_DRAW_*`` -> the reader of that union arm (COMPOSITE has no arm in the qxl-1 layout)
_BODIES: dict[int, Callable[[GuestReader, int, bytes, int, bool, str], DrawBody]] = {
    DrawType.NOP: GuestReader._nop,
    DrawType.FILL: GuestReader._fill,
    DrawType.OPAQUE: GuestReader._opaque,
    DrawType.COPY: GuestReader._copy,
    DrawType.COPY_BITS: GuestReader._copy_bits,
    DrawType.BLEND: GuestReader._copy,
    DrawType.BLACKNESS: GuestReader._masked,
    DrawType.WHITENESS: GuestReader._masked,
    DrawType.INVERS: GuestReader._masked,
    DrawType.ROP3: GuestReader._rop3,
    DrawType.STROKE: GuestReader._stroke,
    DrawType.TEXT: GuestReader._text,
    DrawType.TRANSPARENT: GuestReader._transparent,
    DrawType.ALPHA_BLEND: GuestReader._alpha_blend,
    DrawType.COMPOSITE: GuestReader._composite,
}
