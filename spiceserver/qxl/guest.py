"""A small guest-side QXL driver: writes commands into device memory the way real drivers do.

Used by the tests and the example guest. It plays the Linux ``qxl`` kernel driver's part
(``drivers/gpu/drm/qxl``: ``qxl_kms.c`` memslot setup, ``qxl_cmd.c`` rings and I/O,
``qxl_image.c`` chunked images, ``qxl_draw.c``) and the X11 driver's (``xf86-video-qxl``: release
ids are the addresses of the released structures):

* slot ``slots_start`` maps BAR 0 up to the RAM header, slot ``slots_start + 1`` all of BAR 1;
  a QXLPHYSICAL is ``high_bits | offset in the slot``;
* commands, images and everything they point at are bump-allocated in BAR 0 after the surface0
  area; off-screen surfaces in BAR 1; the primary surface is the surface0 area at BAR 0 offset 0;
* each command's ``release_info.id`` is its own QXLPHYSICAL, so :meth:`GuestDriver.collect_releases`
  follows the ``next`` links the device writes.

Drawing structures are given as the proto structures a parse produces (``display.Fill`` ...), so a
test checks ``parse(guest.drawable(x)).body == x``. Pixel and chunk data go wherever ``chunk_size``
says: None writes bitmaps ``DIRECT`` and other data in one chunk; an integer splits data into
chunks of that many bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from ..proto.enums import BitmapFlags, BrushType, ClipType, ImageFlags, ImageType, LineFlags, SurfaceFmt
from ..proto.messages import display as d
from ..proto.messages.base import Point16, Rect, Transform
from ..proto.messages.cursor import Cursor
from . import layout as L
from .commands import CopyBits, DrawBody, QXLCommand
from .device import QXLDevice
from .layout import CmdType, CursorCmdType, DrawType, Effect, IOPort, QXLBitmapFlags, QXLImageFlags
from .parse import surface_format_bpp
from .ring import CommandRing, ReleaseRing

__all__ = ["GuestDriver", "DRAW_TYPES"]

#: proto draw body class -> QXL draw type
DRAW_TYPES: dict[type, int] = {
    d.Fill: DrawType.FILL,
    d.Opaque: DrawType.OPAQUE,
    d.Copy: DrawType.COPY,
    d.Blend: DrawType.BLEND,
    d.Blackness: DrawType.BLACKNESS,
    d.Whiteness: DrawType.WHITENESS,
    d.Invers: DrawType.INVERS,
    d.Rop3: DrawType.ROP3,
    d.Stroke: DrawType.STROKE,
    d.Text: DrawType.TEXT,
    d.Transparent: DrawType.TRANSPARENT,
    d.AlphaBlend: DrawType.ALPHA_BLEND,
    d.Composite: DrawType.COMPOSITE,
    CopyBits: DrawType.COPY_BITS,
}

_NO_RECT = Rect(top=0, left=0, bottom=0, right=0)


def _rect(r: Rect) -> bytes:
    return L.RECT.pack(r.top, r.left, r.bottom, r.right)


class _Region:
    """A bump allocator over ``[start, end)`` of a BAR, mapped by one memslot."""

    def __init__(self, bar_base: int, start: int, end: int, high_bits: int, slot_base: int) -> None:
        self.bar_base = bar_base
        self.start = self.next = start
        self.end = end
        self.high_bits = high_bits
        self.slot_base = slot_base  # BAR offset that slot offset 0 maps to

    def alloc(self, size: int, align: int) -> int:
        pos = (self.next + align - 1) & ~(align - 1)
        if pos + size > self.end:
            raise MemoryError(f"guest allocator exhausted ({size} bytes wanted)")
        self.next = pos + size
        return pos

    def phys(self, bar_off: int) -> int:
        return self.high_bits + (bar_off - self.slot_base)


class GuestDriver:
    """Drives ``device`` as a guest would: memory, commands, rings, I/O.

    Args:
        device: the device (its BAR buffers are the guest's view of the hardware).
        setup: add the two memslots now (``MEMSLOT_ADD``), as the driver does at load.
    """

    def __init__(self, device: QXLDevice, *, setup: bool = True) -> None:
        self.device = device
        rom = L.ROM_HEAD.unpack_from(device.rom)
        (self.magic, _id, _upd, _cl, _ll, _mode, self.modes_offset, self.num_pages, self.pages_offset,
         _dao, self.surface0_area_size, self.ram_header_offset, _mm, self.n_surfaces, _fl,
         self.slots_start, self.slots_end, self.slot_gen_bits, self.slot_id_bits) = rom[:19]  # fmt: skip
        self.ram = device.ram
        self.cmd_ring = CommandRing(self.ram, self.ram_header_offset + L.RAM_CMD_RING_OFF, L.COMMAND_RING_SIZE, "cmd")
        self.cursor_ring = CommandRing(
            self.ram, self.ram_header_offset + L.RAM_CURSOR_RING_OFF, L.CURSOR_RING_SIZE, "cursor"
        )
        self.release_ring = ReleaseRing(
            self.ram, self.ram_header_offset + L.RAM_RELEASE_RING_OFF, L.RELEASE_RING_SIZE, "release"
        )
        self.main: _Region | None = None
        self.surf: _Region | None = None
        if setup:
            self.setup_memslots()

    # --- memory --------------------------------------------------------------------------------

    def _add_slot(self, index: int, bar_name: str, size: int) -> int:
        bar = self.device.memory.bar(bar_name)
        slot_id = self.slots_start + index
        self.set_ram(L.RAM_MEM_SLOT_OFF, L.MEM_SLOT.pack(bar.base, bar.base + size))
        self.device.io_write(IOPort.MEMSLOT_ADD, slot_id)
        generation = self.device.rom[L.ROM_SLOT_GENERATION_OFF]
        high = ((slot_id << self.slot_gen_bits) | generation) << (64 - self.slot_gen_bits - self.slot_id_bits)
        return int(high)

    def setup_memslots(self) -> None:
        """``qxl_kms.c setup_slot``: main slot (RAM up to the header) and surfaces slot (VRAM)."""
        main_bits = self._add_slot(0, "ram", self.ram_header_offset)
        surf_bits = self._add_slot(1, "vram", len(self.device.vram))
        self.main = _Region(self.device.memory.bar("ram").base, self.pages_offset, self.ram_header_offset, main_bits, 0)
        self.surf = _Region(self.device.memory.bar("vram").base, 0, len(self.device.vram), surf_bits, 0)

    def use_compat_mode(self, mode_index: int) -> None:
        """qxl-1: ``SET_MODE``; from now on QXLPHYSICALs are plain guest-physical addresses (slot 0)."""
        self.device.io_write(IOPort.SET_MODE, mode_index)
        ram_base = self.device.memory.bar("ram").base
        self.main = _Region(ram_base, self.pages_offset, self.ram_header_offset, ram_base, 0)

    def alloc(self, size: int, *, vram: bool = False, align: int = 8) -> int:
        """``size`` bytes of guest memory (RAM pages, or VRAM); returns its QXLPHYSICAL."""
        region = self.surf if vram else self.main
        if region is None:
            raise RuntimeError("memslots are not set up")
        return region.phys(region.alloc(max(size, 1), align))

    def _locate(self, phys: int) -> tuple[memoryview, int]:
        for region, view in ((self.main, self.device.ram), (self.surf, self.device.vram)):
            if region is None:
                continue
            off = phys - region.high_bits + region.slot_base
            if 0 <= off < len(view):
                return view, off
        raise ValueError(f"{phys:#x} is not guest memory this driver allocated")

    def write(self, phys: int, data: bytes) -> None:
        """Write ``data`` at QXLPHYSICAL ``phys`` (memory this driver allocated)."""
        view, off = self._locate(phys)
        view[off : off + len(data)] = data

    def read(self, phys: int, size: int) -> bytes:
        """The ``size`` bytes at QXLPHYSICAL ``phys`` (memory this driver allocated)."""
        view, off = self._locate(phys)
        return bytes(view[off : off + size])

    def put(self, data: bytes, *, vram: bool = False, align: int = 8) -> int:
        """Allocate and fill; returns the QXLPHYSICAL."""
        phys = self.alloc(len(data), vram=vram, align=align)
        self.write(phys, data)
        return phys

    def set_ram(self, field_off: int, data: bytes) -> None:
        """Write a QXLRam header field."""
        off = self.ram_header_offset + field_off
        self.ram[off : off + len(data)] = data

    def reset_allocator(self) -> None:
        """Forget every allocation: the next ones start again at the start of each region."""
        for region in (self.main, self.surf):
            if region is not None:
                region.next = region.start

    # --- chunks, images, palettes ----------------------------------------------------------------

    def _parts(self, data: bytes, chunk_size: int | None) -> list[bytes]:
        if chunk_size is None or not data:
            return [data]
        return [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]

    def _chain(self, head_phys: int, parts: list[bytes]) -> None:
        """Write chunks 2.. of a chain whose first chunk header is at ``head_phys``; link them."""
        prev = head_phys
        for part in parts[1:]:
            phys = self.put(L.DATA_CHUNK.pack(len(part), prev, 0) + part)
            self.write(prev + 12, L.U64.pack(phys))  # prev.next_chunk
            prev = phys

    def with_chunks(self, prefix: bytes, data: bytes, chunk_size: int | None = None, *, min_size: int = 0) -> int:
        """A structure ``prefix`` ending in an inline QXLDataChunk carrying ``data``; returns its address."""
        parts = self._parts(data, chunk_size)
        blob = prefix + L.DATA_CHUNK.pack(len(parts[0]), 0, 0) + parts[0]
        phys = self.put(blob.ljust(min_size, b"\0"))
        self._chain(phys + len(prefix), parts)
        return phys

    def chunks(self, data: bytes, chunk_size: int | None = None) -> int:
        """A standalone QXLDataChunk chain; returns the first chunk's address."""
        return self.with_chunks(b"", data, chunk_size)

    def palette(self, palette: d.Palette) -> int:
        """Write a QXLPalette; returns its QXLPHYSICAL."""
        return self.put(
            L.PALETTE.pack(palette.unique, len(palette.ents)) + struct.pack(f"<{len(palette.ents)}I", *palette.ents)
        )

    def image(self, img: d.Image | None, chunk_size: int | None = None, *, unstable: bool = False) -> int:
        """Write an image (BITMAP, QUIC or SURFACE) as a QXLImage; 0 for None."""
        if img is None:
            return 0
        desc = img.descriptor
        qflags = (QXLImageFlags.CACHE if desc.flags & ImageFlags.CACHE_ME else 0) | (
            QXLImageFlags.HIGH_BITS_SET if desc.flags & ImageFlags.HIGH_BITS_SET else 0
        )
        head = L.IMAGE_DESCRIPTOR.pack(desc.id, desc.type, qflags, desc.width, desc.height)
        if desc.type == ImageType.BITMAP and img.bitmap is not None:
            bm = img.bitmap
            pal = self.palette(bm.palette) if bm.palette is not None else 0
            bflags = QXLBitmapFlags.TOP_DOWN if bm.flags & BitmapFlags.TOP_DOWN else 0
            if unstable:
                bflags |= QXLBitmapFlags.UNSTABLE
            if chunk_size is None:
                data = self.put(bm.data)
                bflags |= QXLBitmapFlags.DIRECT
            else:
                data = self.chunks(bm.data, chunk_size)
            body = L.BITMAP.pack(bm.format, bflags, bm.x, bm.y, bm.stride, pal, data)
            return self.put(head + body)
        if desc.type == ImageType.QUIC and img.quic is not None:
            quic = img.quic.data
            return self.with_chunks(head + L.QUIC_DATA.pack(len(quic)), quic, chunk_size, min_size=L.IMAGE_SIZE)
        if desc.type == ImageType.SURFACE and img.surface is not None:
            return self.put((head + L.SURFACE_ID.pack(img.surface.surface_id)).ljust(L.IMAGE_SIZE, b"\0"))
        raise ValueError(f"a guest cannot send image type {desc.type}")

    # --- drawing structures ----------------------------------------------------------------------

    def brush(self, brush: d.Brush, chunk_size: int | None = None) -> bytes:
        """The inline QXLBrush bytes for ``brush`` (a PATTERN's image is written first)."""
        if brush.type == BrushType.SOLID:
            return L.U32.pack(brush.type) + L.U32.pack(brush.color or 0) + bytes(12)
        if brush.type == BrushType.PATTERN and brush.pattern is not None:
            pat = self.image(brush.pattern.pat, chunk_size)
            return L.BRUSH.pack(brush.type, pat, brush.pattern.pos.x, brush.pattern.pos.y)
        return L.BRUSH.pack(brush.type, 0, 0, 0)

    def qmask(self, mask: d.QMask, chunk_size: int | None = None) -> bytes:
        """The inline QXLQMask bytes for ``mask`` (its bitmap is written first)."""
        return L.QMASK.pack(mask.flags, mask.pos.x, mask.pos.y, self.image(mask.bitmap, chunk_size))

    def clip(self, clip: d.Clip, chunk_size: int | None = None) -> bytes:
        """A QXLClip (12 B) and, for RECTS, the QXLClipRects it points at."""
        if clip.type != ClipType.RECTS or clip.rects is None:
            return L.CLIP.pack(clip.type, 0)
        rects = clip.rects.rects
        data = b"".join(_rect(r) for r in rects)
        return L.CLIP.pack(ClipType.RECTS, self.with_chunks(L.CLIP_RECTS.pack(len(rects)), data, chunk_size))

    def path(self, path: d.Path, chunk_size: int | None = None) -> int:
        """Write a QXLPath with its segments in chunks; returns its QXLPHYSICAL."""
        data = b"".join(
            L.PATH_SEG.pack(seg.flags, len(seg.points)) + b"".join(L.POINT_FIX.pack(p.x, p.y) for p in seg.points)
            for seg in path.segments
        )
        return self.with_chunks(L.PATH.pack(len(data)), data, chunk_size)

    def string(self, s: d.String, chunk_size: int | None = None) -> int:
        """Write a QXLString with its raster glyphs in chunks; returns its QXLPHYSICAL."""
        glyphs = s.glyphs or ()
        data = b"".join(
            L.RASTER_GLYPH.pack(g.render_pos.x, g.render_pos.y, g.glyph_origin.x, g.glyph_origin.y, g.width, g.height)
            + g.data
            for g in glyphs
        )
        return self.with_chunks(L.STRING.pack(len(data), len(glyphs), s.flags), data, chunk_size)

    def transform(self, t: Transform | None) -> int:
        """Write a QXLTransform; returns its QXLPHYSICAL, 0 for None."""
        if t is None:
            return 0
        return self.put(L.TRANSFORM.pack(t.t00, t.t01, t.t02, t.t10, t.t11, t.t12))

    def draw_body(self, body: DrawBody, *, compat: bool = False, chunk_size: int | None = None) -> bytes:
        """The union part of a QXLDrawable for ``body``."""
        c = chunk_size
        if body is None:
            return b""
        if isinstance(body, CopyBits):
            return L.POINT.pack(body.src_pos.x, body.src_pos.y)
        if isinstance(body, d.Fill):
            return self.brush(body.brush, c) + L.U16.pack(body.rop_descriptor) + self.qmask(body.mask, c)
        if isinstance(body, (d.Copy, d.Blend)):
            a = body.src_area
            head = L.COPY.pack(
                self.image(body.src_bitmap, c), a.top, a.left, a.bottom, a.right, body.rop_descriptor, body.scale_mode
            )
            return head + self.qmask(body.mask, c)
        if isinstance(body, d.Opaque):
            head = L.SRC_AND_AREA.pack(self.image(body.src_bitmap, c), *_area(body.src_area))
            tail = L.U16.pack(body.rop_descriptor) + L.U8.pack(body.scale_mode) + self.qmask(body.mask, c)
            return head + self.brush(body.brush, c) + tail
        if isinstance(body, d.Rop3):
            head = L.SRC_AND_AREA.pack(self.image(body.src_bitmap, c), *_area(body.src_area))
            tail = L.U8.pack(body.rop3) + L.U8.pack(body.scale_mode) + self.qmask(body.mask, c)
            return head + self.brush(body.brush, c) + tail
        if isinstance(body, (d.Blackness, d.Whiteness, d.Invers)):
            return self.qmask(body.mask, c)
        if isinstance(body, d.Transparent):
            src = self.image(body.src_bitmap, c)
            return L.TRANSPARENT.pack(src, *_area(body.src_area), body.src_color, body.true_color)
        if isinstance(body, d.AlphaBlend):
            src = self.image(body.src_bitmap, c)
            if compat:
                return L.COMPAT_ALPHA_BLEND.pack(body.alpha, src, *_area(body.src_area))
            return L.ALPHA_BLEND.pack(body.alpha_flags, body.alpha, src, *_area(body.src_area))
        if isinstance(body, d.Stroke):
            attr = body.attr
            style = attr.style or ()
            style_phys = self.put(struct.pack(f"<{len(style)}i", *style)) if attr.flags & LineFlags.STYLED else 0
            line = L.LINE_ATTR.pack(attr.flags, 0, 0, len(style), 1 << 4, 0, style_phys)
            path = L.U64.pack(self.path(body.path, c))
            return path + line + self.brush(body.brush, c) + L.MODES.pack(body.fore_mode, body.back_mode)
        if isinstance(body, d.Text):
            head = L.U64.pack(self.string(body.str, c)) + _rect(body.back_area)
            brushes = self.brush(body.fore_brush, c) + self.brush(body.back_brush, c)
            return head + brushes + L.MODES.pack(body.fore_mode, body.back_mode)
        if isinstance(body, d.Composite):
            return L.COMPOSITE.pack(
                body.flags, self.image(body.src_bitmap, c), self.transform(body.src_transform),
                self.image(body.mask_bitmap, c), self.transform(body.mask_transform),
                body.src_origin.x, body.src_origin.y, body.mask_origin.x, body.mask_origin.y,
            )  # fmt: skip
        raise TypeError(f"not a draw body: {body!r}")

    # --- commands --------------------------------------------------------------------------------

    def drawable(
        self,
        body: DrawBody,
        *,
        bbox: Rect,
        surface_id: int = 0,
        clip: d.Clip | None = None,
        effect: int = Effect.OPAQUE,
        mm_time: int = 0,
        self_bitmap: bool = False,
        self_bitmap_area: Rect = _NO_RECT,
        surfaces_dest: Sequence[int] = (-1, -1, -1),
        surfaces_rects: Sequence[Rect] = (_NO_RECT, _NO_RECT, _NO_RECT),
        compat: bool = False,
        chunk_size: int | None = None,
        type_: int | None = None,
    ) -> int:
        """Write a QXLDrawable (or QXLCompatDrawable); returns its QXLPHYSICAL (= release id)."""
        dtype = type_ if type_ is not None else (DrawType.NOP if body is None else DRAW_TYPES[type(body)])
        union = self.draw_body(body, compat=compat, chunk_size=chunk_size).ljust(L.DRAW_UNION_SIZE, b"\0")
        qclip = self.clip(clip or d.Clip(), chunk_size)
        size = L.COMPAT_DRAWABLE_SIZE if compat else L.DRAWABLE_SIZE
        phys = self.alloc(size)
        if compat:
            head = (
                L.U64.pack(phys) + struct.pack("<BBH", effect, dtype, 1 if self_bitmap else 0) + _rect(self_bitmap_area)
                + _rect(bbox) + qclip + L.U32.pack(mm_time)
            )  # fmt: skip
        else:
            head = (
                L.U64.pack(phys) + struct.pack("<IBBB", surface_id, effect, dtype, int(self_bitmap))
                + _rect(self_bitmap_area) + _rect(bbox) + qclip + L.U32.pack(mm_time)
                + struct.pack("<3i", *surfaces_dest) + b"".join(_rect(r) for r in surfaces_rects)
            )  # fmt: skip
        self.write(phys, head + union)
        return phys

    def surface_create(
        self, surface_id: int, width: int, height: int, *, format: int = SurfaceFmt.FMT_32_XRGB,
        stride: int | None = None, flags: int = 0,
    ) -> tuple[int, int]:  # fmt: skip
        """A QXL_SURFACE_CMD_CREATE with its pixels in VRAM: ``(command, pixels)`` addresses.

        ``stride`` defaults to the packed row size rounded to 4; a negative one makes the
        surface bottom-up.
        """
        row = ((width * surface_format_bpp(format) + 7) // 8 + 3) & ~3
        stride = row if stride is None else stride
        data = self.alloc(abs(stride) * height, vram=True, align=4096)
        phys = self.alloc(L.SURFACE_CMD.size)
        self.write(phys, L.SURFACE_CMD.pack(phys, surface_id, 0, flags, format, width, height, stride, data))
        return phys, data

    def surface_destroy(self, surface_id: int) -> int:
        """A QXL_SURFACE_CMD_DESTROY for ``surface_id``; returns its QXLPHYSICAL (= release id)."""
        phys = self.alloc(L.SURFACE_CMD.size)
        self.write(phys, L.SURFACE_CMD.pack(phys, surface_id, 1, 0, 0, 0, 0, 0, 0))
        return phys

    def update(self, area: Rect, update_id: int, surface_id: int = 0, *, compat: bool = False) -> int:
        """A QXLUpdateCmd (or QXLCompatUpdateCmd); returns its QXLPHYSICAL (= release id)."""
        phys = self.alloc(L.UPDATE_CMD.size)
        if compat:
            self.write(phys, L.COMPAT_UPDATE_CMD.pack(phys, *_area(area), update_id))
        else:
            self.write(phys, L.UPDATE_CMD.pack(phys, *_area(area), update_id, surface_id))
        return phys

    def message(self, text: bytes) -> int:
        """A QXLMessage carrying ``text`` NUL-terminated; returns its QXLPHYSICAL (= release id)."""
        phys = self.alloc(L.MESSAGE.size + len(text) + 1)
        self.write(phys, L.U64.pack(phys) + text + b"\0")
        return phys

    def _cursor_cmd(self, type_: int, union: bytes) -> int:
        phys = self.alloc(L.CURSOR_CMD_SIZE)
        self.write(phys, (L.CURSOR_CMD_HEAD.pack(phys, type_) + union).ljust(L.CURSOR_CMD_SIZE, b"\0"))
        return phys

    def cursor_set(self, position: Point16, visible: bool, shape: Cursor, chunk_size: int | None = None) -> int:
        """A QXL_CURSOR_SET with its QXLCursor shape in chunks; returns the command's QXLPHYSICAL."""
        h = shape.header
        if h is None:
            raise ValueError("a guest cursor shape needs a header")
        head = L.CURSOR.pack(h.unique, h.type, h.width, h.height, h.hot_spot_x, h.hot_spot_y, len(shape.data))
        shape_phys = self.with_chunks(head, shape.data, chunk_size)
        return self._cursor_cmd(CursorCmdType.SET, L.CURSOR_SET.pack(position.x, position.y, int(visible), shape_phys))

    def cursor_move(self, position: Point16) -> int:
        """A QXL_CURSOR_MOVE; returns the command's QXLPHYSICAL."""
        return self._cursor_cmd(CursorCmdType.MOVE, L.CURSOR_MOVE.pack(position.x, position.y))

    def cursor_hide(self) -> int:
        """A QXL_CURSOR_HIDE; returns the command's QXLPHYSICAL."""
        return self._cursor_cmd(CursorCmdType.HIDE, b"")

    def cursor_trail(self, length: int, frequency: int) -> int:
        """A QXL_CURSOR_TRAIL; returns the command's QXLPHYSICAL."""
        return self._cursor_cmd(CursorCmdType.TRAIL, L.CURSOR_TRAIL.pack(length, frequency))

    # --- rings and I/O ---------------------------------------------------------------------------

    def submit(self, phys: int, type_: int) -> bool:
        """Push a command on its ring (cursor commands on the cursor ring) and notify if asked.

        Returns False if the ring is full (a DISPLAY/CURSOR interrupt will say when there is room).
        """
        cursor = type_ == CmdType.CURSOR
        ring = self.cursor_ring if cursor else self.cmd_ring
        notify = ring.push(QXLCommand(data=phys, type=type_))
        if notify is None:
            return False
        if notify:
            self.device.io_write(IOPort.NOTIFY_CURSOR if cursor else IOPort.NOTIFY_CMD, 0)
        return True

    def collect_releases(self, *, flush: bool = True) -> list[int]:
        """Release ids the device gave back (``qxl_garbage_collect``), following ``next`` links."""
        if flush:
            self.device.io_write(IOPort.FLUSH_RELEASE, 0)
        out: list[int] = []
        while (got := self.release_ring.pop()) is not None:
            rid = got[0]
            while rid:
                out.append(rid)
                (rid,) = L.U64.unpack(self.read(rid, 8))
        return out

    def create_primary(
        self, width: int, height: int, *, stride: int | None = None, format: int = SurfaceFmt.FMT_32_XRGB,
        flags: int = 0, async_io: bool = False,
    ) -> int:  # fmt: skip
        """``QXL_IO_CREATE_PRIMARY`` over the surface0 area; returns the surface's QXLPHYSICAL."""
        if self.main is None:
            raise RuntimeError("memslots are not set up")
        stride = width * 4 if stride is None else stride
        mem = self.main.phys(0)
        self.set_ram(
            L.RAM_CREATE_SURFACE_OFF, L.SURFACE_CREATE.pack(width, height, stride, format, 0, 1, flags, 0, mem)
        )
        self.device.io_write(IOPort.CREATE_PRIMARY_ASYNC if async_io else IOPort.CREATE_PRIMARY, 0)
        return mem

    def destroy_primary(self, *, async_io: bool = False) -> None:
        """``QXL_IO_DESTROY_PRIMARY`` (or its async variant)."""
        self.device.io_write(IOPort.DESTROY_PRIMARY_ASYNC if async_io else IOPort.DESTROY_PRIMARY, 0)

    def update_area(self, surface_id: int, area: Rect, *, async_io: bool = False) -> None:
        """Put ``area`` and ``surface_id`` in the RAM header and write ``QXL_IO_UPDATE_AREA`` (or its async variant)."""
        self.set_ram(L.RAM_UPDATE_AREA_OFF, _rect(area) + L.U32.pack(surface_id))
        self.device.io_write(IOPort.UPDATE_AREA_ASYNC if async_io else IOPort.UPDATE_AREA, 0)

    def monitors_config(self, heads: Sequence[d.Head], max_allowed: int) -> int:
        """Write a QXLMonitorsConfig, point ``ram.monitors_config`` at it, ``MONITORS_CONFIG_ASYNC``."""
        blob = L.MONITORS_CONFIG.pack(len(heads), max_allowed) + b"".join(
            L.HEAD.pack(h.monitor_id, h.surface_id, h.width, h.height, h.x, h.y, h.flags) for h in heads
        )
        phys = self.put(blob)
        self.set_ram(L.RAM_MONITORS_CONFIG_OFF, L.U64.pack(phys))
        self.device.io_write(IOPort.MONITORS_CONFIG_ASYNC, 0)
        return phys

    def log(self, text: str) -> None:
        """Put ``text`` in the RAM header's log buffer and write ``QXL_IO_LOG``."""
        self.set_ram(L.RAM_LOG_BUF_OFF, text.encode()[: L.LOG_BUF_SIZE - 1] + b"\0")
        self.device.io_write(IOPort.LOG, 0)

    def set_int_mask(self, mask: int) -> None:
        """Set the RAM header's ``int_mask`` and write ``QXL_IO_UPDATE_IRQ``."""
        self.set_ram(L.RAM_INT_MASK_OFF, L.U32.pack(mask))
        self.device.io_write(IOPort.UPDATE_IRQ, 0)

    def interrupts(self) -> int:
        """``int_pending`` as the guest sees it."""
        return L.U32.unpack_from(self.ram, self.ram_header_offset + L.RAM_INT_PENDING_OFF)[0]  # type: ignore[no-any-return]

    def ack_interrupts(self) -> int:
        """The interrupt handler: read and clear ``int_pending``, then ``UPDATE_IRQ``."""
        pending = self.interrupts()
        self.set_ram(L.RAM_INT_PENDING_OFF, L.U32.pack(0))
        self.device.io_write(IOPort.UPDATE_IRQ, 0)
        return pending


def _area(r: Rect) -> tuple[int, int, int, int]:
    return r.top, r.left, r.bottom, r.right
