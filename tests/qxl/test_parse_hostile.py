"""Hostile guest memory: every malformed command raises GuestError with a reason naming the field."""

from __future__ import annotations

import struct

import pytest

from spiceserver.errors import GuestError
from spiceserver.proto.enums import BitmapFmt, BrushType, ClipType, LineFlags, StringFlags
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Point, Point16, PointFix, Rect
from spiceserver.proto.messages.cursor import Cursor, CursorHeader
from spiceserver.qxl import layout as L
from spiceserver.qxl.commands import CopyBits, DrawBody, QXLCommand, QXLCommandExt
from spiceserver.qxl.device import MEMSLOT_GROUP_GUEST, QXLDevice
from spiceserver.qxl.guest import GuestDriver
from spiceserver.qxl.layout import CmdFlags, CmdType
from spiceserver.qxl.parse import ParseLimits, parse_command
from tests.qxl.conftest import PALETTE, bitmap, quic, rect, surface_image

AREA = rect(0, 0, 4, 3)
U32, U64 = struct.Struct("<I"), struct.Struct("<Q")


def parse(device: QXLDevice, phys: int, type_: int = CmdType.DRAW, flags: int = 0, limits: ParseLimits | None = None):  # type: ignore[no-untyped-def]
    ext = QXLCommandExt(cmd=QXLCommand(data=phys, type=type_), group_id=MEMSLOT_GROUP_GUEST, flags=flags)
    return parse_command(device.memslots, ext, limits or device.parse_limits)


def rejects(device: QXLDevice, phys: int, reason: str, type_: int = CmdType.DRAW, **kw: object) -> None:
    with pytest.raises(GuestError, match=reason):
        parse(device, phys, type_, **kw)  # type: ignore[arg-type]


def copy_of(img: d.Image, area: Rect = AREA) -> d.Copy:
    return d.Copy(src_bitmap=img, src_area=area, rop_descriptor=8, scale_mode=0)


def drawable(guest: GuestDriver, body: DrawBody, **kw: object) -> int:
    return guest.drawable(body, bbox=rect(0, 0, 10, 10), **kw)  # type: ignore[arg-type]


def src_image_phys(guest: GuestDriver, phys: int) -> int:
    """The src_bitmap pointer of the drawable at ``phys`` (first union field)."""
    return U64.unpack(guest.read(phys + L.DRAWABLE_HEAD.size, 8))[0]  # type: ignore[no-any-return]


def bitmap_field(guest: GuestDriver, img: int, fmt: str, off: int, value: int) -> None:
    guest.write(img + L.IMAGE_UNION_OFF + off, struct.pack("<" + fmt, value))


# --- chunk chains ----------------------------------------------------------------------------------


def test_chunk_loop_of_empty_chunks(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, copy_of(bitmap(4, 3)), chunk_size=16)
    img = src_image_phys(guest, phys)
    first = U64.unpack(guest.read(img + L.IMAGE_UNION_OFF + 22, 8))[0]
    a = guest.put(L.DATA_CHUNK.pack(0, 0, 0))
    b = guest.put(L.DATA_CHUNK.pack(0, a, a))  # b -> a
    guest.write(a + 12, U64.pack(b))  # a -> b: a loop that adds no data
    guest.write(first + 12, U64.pack(a))
    rejects(device, phys, "chunk loop")


def test_chunk_loop_back_to_the_first_chunk(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, copy_of(bitmap(4, 3)), chunk_size=48)  # one chunk holding everything
    img = src_image_phys(guest, phys)
    first = U64.unpack(guest.read(img + L.IMAGE_UNION_OFF + 22, 8))[0]
    guest.write(first, U32.pack(0))  # empty...
    guest.write(first + 12, U64.pack(first))  # ...and pointing at itself
    rejects(device, phys, "chunk loop")


def test_chunks_holding_more_than_claimed(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, copy_of(bitmap(4, 3)), chunk_size=16)
    img = src_image_phys(guest, phys)
    bitmap_field(guest, img, "I", 6, 2)  # y: 3 -> 2 rows, the chunks still hold 3
    rejects(device, phys, "hold more than 32 bytes")


def test_chunks_holding_less_than_needed(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, copy_of(bitmap(4, 3)), chunk_size=16)
    img = src_image_phys(guest, phys)
    bitmap_field(guest, img, "I", 6, 4)  # y: 3 -> 4
    rejects(device, phys, "needs 64 bytes but chunks hold 48")


def test_chunk_length_past_the_slot(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, copy_of(bitmap(4, 3)), chunk_size=16)
    img = src_image_phys(guest, phys)
    first = U64.unpack(guest.read(img + L.IMAGE_UNION_OFF + 22, 8))[0]
    bitmap_field(guest, img, "I", 2, 1024)  # a 1024x1024 bitmap: 4 MiB, within the image budget
    bitmap_field(guest, img, "I", 6, 1024)
    bitmap_field(guest, img, "I", 10, 4096)
    guest.write(first, U32.pack(4 << 20))  # one chunk claiming all of it: past the end of the slot
    rejects(device, phys, "bitmap chunk 1 data: .*outside slot")


def test_chunk_data_past_the_slot_end(guest: GuestDriver, device: QXLDevice) -> None:
    # a clip-rects chunk chain whose second chunk sits at the very end of the main slot
    clip = d.Clip(type=ClipType.RECTS, rects=d.ClipRects(rects=(rect(0, 0, 1, 1), rect(1, 1, 2, 2))))
    phys = drawable(guest, None, clip=clip, chunk_size=16)
    clip_rects = U64.unpack(guest.read(phys + 47 + 4, 8))[0]
    second = U64.unpack(guest.read(clip_rects + 4 + 12, 8))[0]
    assert guest.main is not None
    end = guest.main.phys(device.ram_header_offset)
    guest.write(clip_rects + 4 + 12, U64.pack(end - 20))  # header fits, data does not
    guest.write(end - 20, guest.read(second, 20))
    rejects(device, phys, "clip rects chunk 2 data: .*outside slot")


def test_too_many_chunks(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, copy_of(bitmap(4, 3)), chunk_size=1)  # 48 chunks
    rejects(device, phys, "more than 16 data chunks", limits=ParseLimits(max_chunks=16))
    assert parse(device, phys, limits=ParseLimits(max_chunks=48)).body == copy_of(bitmap(4, 3))


def test_chunk_pointer_outside_memory(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, copy_of(bitmap(4, 3)), chunk_size=16)
    img = src_image_phys(guest, phys)
    first = U64.unpack(guest.read(img + L.IMAGE_UNION_OFF + 22, 8))[0]
    guest.write(first + 12, U64.pack((5 << 56) | 0x10))  # slot 5 is not active
    rejects(device, phys, "bitmap chunk 2: .*slot 5 of group 1 is not active")


# --- images ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("off", "fmt", "value", "reason"),
    [
        (0, "B", 0, "bad bitmap format 0"),
        (0, "B", 11, "bad bitmap format 11"),
        (2, "I", 0, "zero-area bitmap"),
        (2, "I", 70000, "size 70000x3 exceeds 65536"),
        (6, "I", 1 << 20, "exceeds"),
        (10, "I", 15, "bitmap stride 15 < 16 bytes for 4 px at 32 bpp"),
        (10, "I", 0xFFFFFFFF, "exceeds"),
        (22, "Q", 0, "bitmap data: NULL pointer"),
    ],
)
def test_bad_bitmaps(guest: GuestDriver, device: QXLDevice, off: int, fmt: str, value: int, reason: str) -> None:
    phys = drawable(guest, copy_of(bitmap(4, 3)))
    bitmap_field(guest, src_image_phys(guest, phys), fmt, off, value)
    rejects(device, phys, reason)


def test_huge_descriptor_dimensions(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, copy_of(bitmap(4, 3)))
    img = src_image_phys(guest, phys)
    guest.write(img + 10, struct.pack("<II", 60000, 60000))
    rejects(device, phys, "copy src_bitmap: 60000x60000 exceeds")


def test_configurable_image_budget(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, copy_of(bitmap(4, 3)))
    rejects(device, phys, "exceeds 32 bytes", limits=ParseLimits(max_image_bytes=32))


def test_missing_palette(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, copy_of(bitmap(4, 3, BitmapFmt.BIT8, palette=PALETTE)))
    bitmap_field(guest, src_image_phys(guest, phys), "Q", 14, 0)
    rejects(device, phys, "bitmap format 5 without a palette")


def test_palette_too_big(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, copy_of(bitmap(4, 3, BitmapFmt.BIT8, palette=PALETTE)))
    pal = U64.unpack(guest.read(src_image_phys(guest, phys) + L.IMAGE_UNION_OFF + 14, 8))[0]
    guest.write(pal + 8, struct.pack("<H", 1000))
    rejects(device, phys, "palette: 1000 entries exceed 256")


def test_palette_entries_past_the_slot(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, copy_of(bitmap(4, 3, BitmapFmt.BIT8, palette=PALETTE)))
    assert guest.main is not None
    end = guest.main.phys(device.ram_header_offset)
    guest.write(end - 12, struct.pack("<QH", 1, 200) + b"\0\0")
    bitmap_field(guest, src_image_phys(guest, phys), "Q", 14, end - 12)
    rejects(device, phys, "palette entries: .*outside slot")


def test_unknown_image_type(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, copy_of(bitmap(4, 3)))
    guest.write(src_image_phys(guest, phys) + 8, b"\x69")  # LZ4: not something a guest may send
    rejects(device, phys, "unsupported image type 105")


def test_quic_size_mismatch(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, copy_of(quic(), rect(0, 0, 8, 8)))
    guest.write(src_image_phys(guest, phys) + 18, U32.pack(10))
    rejects(device, phys, "hold more than 10 bytes")


def test_bad_surface_ids(guest: GuestDriver, device: QXLDevice) -> None:
    rejects(device, drawable(guest, None, surface_id=64), "drawable: surface id 64 out of range")
    rejects(device, drawable(guest, None, surfaces_dest=(0, 1000, -1)), r"surfaces_dest\[1\]: surface id 1000")
    rejects(device, drawable(guest, None, surfaces_dest=(-2, -1, -1)), r"surfaces_dest\[0\]")
    body = copy_of(surface_image(99), rect(0, 0, 1, 1))
    rejects(device, drawable(guest, body), "src_bitmap: surface id 99 out of range")
    rejects(device, guest.update(rect(0, 0, 1, 1), 1, surface_id=1 << 20), "update: surface id", CmdType.UPDATE)
    rejects(device, guest.surface_destroy(64), "surface cmd: surface id 64", CmdType.SURFACE)


def test_copy_src_area_outside_the_bitmap(guest: GuestDriver, device: QXLDevice) -> None:
    rejects(device, drawable(guest, copy_of(bitmap(4, 3), rect(0, 0, 5, 3))), "outside the 4x3 bitmap")
    rejects(device, drawable(guest, copy_of(bitmap(4, 3), rect(3, 0, 2, 3))), "bad src_area")
    rejects(device, drawable(guest, copy_of(bitmap(4, 3), rect(-1, 0, 2, 3))), "bad src_area")
    body = d.Blend(src_bitmap=bitmap(4, 3), src_area=rect(0, 2, 4, 1), rop_descriptor=8, scale_mode=0)
    rejects(device, drawable(guest, body), "blend: bad src_area")


def test_copy_without_source(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, copy_of(bitmap(4, 3)))
    guest.write(phys + L.DRAWABLE_HEAD.size, U64.pack(0))
    rejects(device, phys, "copy: NULL src_bitmap")


# --- clips, brushes, paths, strings ------------------------------------------------------------------


def test_clip_count_lying(guest: GuestDriver, device: QXLDevice) -> None:
    clip = d.Clip(type=ClipType.RECTS, rects=d.ClipRects(rects=(rect(0, 0, 1, 1),)))
    phys = drawable(guest, None, clip=clip)
    clip_rects = U64.unpack(guest.read(phys + 51, 8))[0]
    guest.write(clip_rects, U32.pack(10))
    rejects(device, phys, "drawable clip: num_rects 10 needs 160 bytes but chunks hold 16")
    guest.write(clip_rects, U32.pack(0x1000_0000))
    rejects(device, phys, "clip rects exceed")


def test_bad_clip_and_brush_types(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, d.Fill(brush=d.Brush(type=BrushType.SOLID, color=1), rop_descriptor=8))
    guest.write(phys + 47, U32.pack(2))
    rejects(device, phys, "drawable clip: bad clip type 2")
    guest.write(phys + 47, U32.pack(0))
    guest.write(phys + L.DRAWABLE_HEAD.size, U32.pack(3))
    rejects(device, phys, "fill brush: bad brush type 3")
    guest.write(phys + L.DRAWABLE_HEAD.size, U32.pack(BrushType.PATTERN) + U64.pack(0))
    rejects(device, phys, "pattern brush without an image")


def test_unknown_draw_and_command_types(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, None)
    guest.write(phys + 13, b"\x0f")
    rejects(device, phys, "unknown draw type 15")
    guest.write(phys + 13, bytes([14]))  # COMPOSITE has no compat layout
    rejects(device, drawable(guest, None, compat=True, type_=14), "unknown draw type 14", flags=CmdFlags.COMPAT)
    rejects(device, phys, "unknown command type 0", type_=CmdType.NOP)
    rejects(device, phys, "unknown command type 9", type_=9)
    rejects(device, 0, "drawable: NULL pointer")


PATH = d.Path(segments=(d.PathSegment(flags=1, points=(PointFix(x=0, y=0), PointFix(x=16, y=16))),))


def stroke(style: tuple[int, ...] | None = None) -> d.Stroke:
    flags = LineFlags.STYLED if style is not None else 0
    return d.Stroke(
        path=PATH, attr=d.LineAttr(flags=flags, style=style), brush=d.Brush(type=BrushType.SOLID, color=1),
        fore_mode=8, back_mode=8,
    )  # fmt: skip


def test_path_segment_count_lying(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, stroke())
    path = U64.unpack(guest.read(phys + L.DRAWABLE_HEAD.size, 8))[0]
    guest.write(path + 24 + 4, U32.pack(3))  # count 3, but 2 points of data
    rejects(device, phys, "stroke path: segment 0 claims 3 points past the data")
    guest.write(path + 24 + 4, U32.pack(2))
    rejects(device, phys, "more than 1 points", limits=ParseLimits(max_path_points=1))
    guest.write(phys + L.DRAWABLE_HEAD.size, U64.pack(0))
    rejects(device, phys, "stroke path: NULL pointer")


def test_styled_stroke_checks(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, stroke((16, 16)))
    guest.write(phys + L.DRAWABLE_HEAD.size + 8 + 12, U64.pack(0))
    rejects(device, phys, "stroke style: NULL pointer")
    guest.write(phys + L.DRAWABLE_HEAD.size + 8 + 3, b"\0")
    rejects(device, phys, "styled line with no style segments")


GLYPH = d.RasterGlyphA1(render_pos=Point(x=0, y=0), glyph_origin=Point(x=0, y=0), width=8, height=2, data=b"\xff\x00")


def text(n: int = 2) -> d.Text:
    return d.Text(
        str=d.String(flags=StringFlags.RASTER_A1, glyphs=(GLYPH,) * n), back_area=rect(0, 0, 1, 1),
        fore_brush=d.Brush(type=BrushType.SOLID, color=1), back_brush=d.Brush(type=BrushType.NONE),
        fore_mode=8, back_mode=8,
    )  # fmt: skip


def test_string_checks(guest: GuestDriver, device: QXLDevice) -> None:
    phys = drawable(guest, text())
    s = U64.unpack(guest.read(phys + L.DRAWABLE_HEAD.size, 8))[0]
    guest.write(s + 4, struct.pack("<H", 3))
    rejects(device, phys, "text str: length 3 but the data holds 2 glyphs")
    guest.write(s + 4, struct.pack("<H", 1))
    rejects(device, phys, "more glyph data than length 1")
    guest.write(s + 4, struct.pack("<HH", 2, StringFlags.RASTER_TOP_DOWN))
    rejects(device, phys, "name no glyph depth")
    guest.write(s + 4, struct.pack("<HH", 2, StringFlags.RASTER_A1))
    guest.write(s + 28 + 16, struct.pack("<HH", 8, 100))  # first glyph claims 100 rows
    rejects(device, phys, r"glyph 0 \(8x100\) data past the end")
    guest.write(s + 28 + 16, struct.pack("<HH", 8, 2))
    guest.write(s, U32.pack(40))  # data_size larger than the chunk holds
    rejects(device, phys, "data_size 40 but chunks hold 44|hold more than 40")
    guest.write(s, U32.pack(30))  # a glyph header cut short
    guest.write(s + 8, U32.pack(30))
    rejects(device, phys, "glyph 1 header past the data")


# --- other commands ----------------------------------------------------------------------------------


def test_surface_cmd_checks(guest: GuestDriver, device: QXLDevice) -> None:
    phys, _ = guest.surface_create(1, 16, 16)
    for off, fmt, value, reason in [
        (13 + 4, "I", 33, "bad surface format 33"),
        (13 + 8, "I", 0, "zero-area surface"),
        (13 + 16, "i", 60, "stride 60 too small for 16 px at 32 bpp"),
        (13 + 16, "i", -(1 << 31), "stride -2147483648 too small"),
        (13 + 16, "i", 66, "not a multiple of 4"),
        (13 + 12, "I", 100000, "exceeds 65536"),
        (13 + 20, "Q", 0, "surface cmd data: .*slot 0 of group 1 is not active"),
        (12, "B", 7, "surface cmd: bad type 7"),
    ]:
        good = guest.read(phys, L.SURFACE_CMD.size)
        guest.write(phys + off, struct.pack("<" + fmt, value))
        rejects(device, phys, reason, CmdType.SURFACE)
        guest.write(phys, good)
    guest.write(phys + 13 + 12, U32.pack(60000))  # height: the pixels run past the VRAM slot
    rejects(device, phys, "surface cmd data: .*outside slot", CmdType.SURFACE)


def test_message_without_nul(guest: GuestDriver, device: QXLDevice) -> None:
    assert guest.main is not None
    end = guest.main.phys(device.ram_header_offset)
    guest.write(end - 16, U64.pack(0) + b"no nul!!")
    rejects(device, end - 16, "message: no NUL within 8 bytes", CmdType.MESSAGE)
    rejects(device, end - 8, "message text: .*outside slot|no NUL within 0", CmdType.MESSAGE)
    phys = guest.message(b"x" * 50)
    rejects(device, phys, "no NUL within 20", CmdType.MESSAGE, limits=ParseLimits(max_message_len=20))


def test_cursor_checks(guest: GuestDriver, device: QXLDevice) -> None:
    shape = Cursor(flags=0, header=CursorHeader(unique=1, type=1, width=8, height=8, hot_spot_x=0, hot_spot_y=0),
                   data=bytes(16))  # fmt: skip
    phys = guest.cursor_set(Point16(x=0, y=0), True, shape)
    shape_phys = U64.unpack(guest.read(phys + 14, 8))[0]
    guest.write(shape_phys + 8, struct.pack("<H", 7))
    rejects(device, phys, "cursor shape: bad type 7", CmdType.CURSOR)
    guest.write(phys + 14, U64.pack(0))
    rejects(device, phys, "cursor shape: NULL pointer", CmdType.CURSOR)
    guest.write(phys + 8, b"\x04")
    rejects(device, phys, "cursor cmd: bad type 4", CmdType.CURSOR)


def test_copy_bits_has_no_pointers(guest: GuestDriver, device: QXLDevice) -> None:
    assert parse(device, drawable(guest, CopyBits(src_pos=Point(x=-5, y=1 << 30)))).body == CopyBits(
        src_pos=Point(x=-5, y=1 << 30)
    )


def test_drawable_straddling_the_slot_end(guest: GuestDriver, device: QXLDevice) -> None:
    assert guest.main is not None
    end = guest.main.phys(device.ram_header_offset)
    rejects(device, end - 100, "drawable: .*outside slot")
