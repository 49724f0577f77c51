"""Guest writes (guest.py) -> device rings -> parse: the parsed proto structures equal what was written.

One case per command type and per draw type, with data direct, in one chunk and split into many
small chunks; the qxl-1 compat layouts; every parsed drawable marshals as its display message and
parses back the same (the display channel can send it as it is).
"""

from __future__ import annotations

import pytest

from spiceserver.proto.enums import BitmapFmt, BrushType, ClipType, CompositeFlags, LineFlags, PathFlags, StringFlags
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Point, Point16, PointFix, Transform, parse_body
from spiceserver.proto.messages.cursor import Cursor, CursorHeader
from spiceserver.qxl.commands import (
    CopyBits,
    DrawBody,
    QXLCommand,
    QXLCommandExt,
    RedCursorCmd,
    RedDrawable,
    RedMessage,
    RedSurfaceCmd,
    RedUpdate,
    ReleaseInfo,
)
from spiceserver.qxl.device import MEMSLOT_GROUP_GUEST, QXLDevice
from spiceserver.qxl.guest import DRAW_TYPES, GuestDriver
from spiceserver.qxl.layout import CmdFlags, CmdType, CursorCmdType, DrawType, SurfaceCmdType
from spiceserver.qxl.parse import color_16_to_32, parse_command
from tests.qxl.conftest import PALETTE, bitmap, mask_image, quic, rect, surface_image

SOLID = d.Brush(type=BrushType.SOLID, color=0x00FF8040)
PATTERN = d.Brush(type=BrushType.PATTERN, pattern=d.Pattern(pat=bitmap(8, 8, seed=5), pos=Point(x=3, y=-2)))
MASK = d.QMask(flags=1, pos=Point(x=1, y=2), bitmap=mask_image())
AREA = rect(0, 0, 4, 3)
TRANSFORM = Transform(t00=1 << 16, t01=0, t02=5, t10=0, t11=1 << 16, t12=7)
GLYPHS_A1 = (
    d.RasterGlyphA1(
        render_pos=Point(x=10, y=20), glyph_origin=Point(x=0, y=-9), width=9, height=3, data=bytes(range(6))
    ),
    d.RasterGlyphA1(render_pos=Point(x=19, y=20), glyph_origin=Point(x=1, y=-9), width=3, height=2, data=b"\x80\x40"),
)
GLYPHS_A8 = (
    d.RasterGlyphA8(render_pos=Point(x=1, y=2), glyph_origin=Point(x=0, y=0), width=3, height=2, data=bytes(range(6))),
)
PATH = d.Path(
    segments=(
        d.PathSegment(flags=PathFlags.BEGIN, points=(PointFix(x=0, y=0), PointFix(x=160, y=16))),
        d.PathSegment(flags=PathFlags.BEZIER | PathFlags.END | PathFlags.CLOSE, points=tuple(
            PointFix(x=i * 16, y=-i * 16) for i in range(3))),
    )
)  # fmt: skip

BODIES: dict[str, DrawBody] = {
    "nop": None,
    "fill_solid": d.Fill(brush=SOLID, rop_descriptor=8),
    "fill_pattern_mask": d.Fill(brush=PATTERN, rop_descriptor=0x10, mask=MASK),
    "fill_no_brush": d.Fill(brush=d.Brush(type=BrushType.NONE), rop_descriptor=8),
    "opaque": d.Opaque(src_bitmap=bitmap(), src_area=AREA, brush=SOLID, rop_descriptor=8, scale_mode=1, mask=MASK),
    "copy": d.Copy(src_bitmap=bitmap(top_down=False), src_area=AREA, rop_descriptor=8, scale_mode=0),
    "copy_palette": d.Copy(
        src_bitmap=bitmap(5, 3, BitmapFmt.BIT8, stride=8, palette=PALETTE), src_area=rect(1, 1, 5, 3),
        rop_descriptor=8, scale_mode=1, mask=MASK,
    ),
    "copy_4bit": d.Copy(src_bitmap=bitmap(7, 2, BitmapFmt.BIT4_LE, palette=PALETTE), src_area=rect(0, 0, 7, 2),
                        rop_descriptor=8, scale_mode=0),
    "copy_quic_cached": d.Copy(src_bitmap=quic(), src_area=rect(0, 0, 8, 8), rop_descriptor=8, scale_mode=0),
    "copy_surface": d.Copy(src_bitmap=surface_image(3), src_area=rect(0, 0, 16, 16), rop_descriptor=8, scale_mode=0),
    "blend": d.Blend(src_bitmap=bitmap(fmt=BitmapFmt.RGBA), src_area=AREA, rop_descriptor=0x40, scale_mode=1),
    "blackness": d.Blackness(mask=MASK),
    "whiteness": d.Whiteness(),
    "invers": d.Invers(mask=MASK),
    "rop3": d.Rop3(src_bitmap=bitmap(fmt=BitmapFmt.BIT24), src_area=AREA, brush=PATTERN, rop3=0xCA, scale_mode=1),
    "stroke": d.Stroke(path=PATH, attr=d.LineAttr(flags=0), brush=SOLID, fore_mode=8, back_mode=0),
    "stroke_styled": d.Stroke(
        path=PATH, attr=d.LineAttr(flags=LineFlags.STYLED | LineFlags.START_WITH_GAP, style=(16, 32, 48)),
        brush=PATTERN, fore_mode=8, back_mode=1,
    ),
    "text_a1": d.Text(
        str=d.String(flags=StringFlags.RASTER_A1 | StringFlags.RASTER_TOP_DOWN, glyphs=GLYPHS_A1),
        back_area=rect(0, 0, 30, 20), fore_brush=SOLID, back_brush=d.Brush(type=BrushType.NONE), fore_mode=8,
        back_mode=0,
    ),
    "text_a8": d.Text(
        str=d.String(flags=StringFlags.RASTER_A8, glyphs=GLYPHS_A8), back_area=rect(0, 0, 3, 2),
        fore_brush=PATTERN, back_brush=SOLID, fore_mode=8, back_mode=8,
    ),
    "transparent": d.Transparent(src_bitmap=bitmap(fmt=BitmapFmt.BIT16), src_area=AREA, src_color=0x1F, true_color=0xFF),
    "alpha_blend": d.AlphaBlend(alpha_flags=2, alpha=0x80, src_bitmap=bitmap(fmt=BitmapFmt.RGBA), src_area=AREA),
    "composite": d.Composite(
        flags=0x03 | (1 << 8) | CompositeFlags.HAS_MASK | CompositeFlags.HAS_SRC_TRANSFORM
        | CompositeFlags.HAS_MASK_TRANSFORM,
        src_bitmap=bitmap(fmt=BitmapFmt.RGBA), mask_bitmap=bitmap(fmt=BitmapFmt.BIT8_A, seed=3),
        src_transform=TRANSFORM, mask_transform=TRANSFORM, src_origin=Point16(x=-1, y=2), mask_origin=Point16(x=3, y=4),
    ),
    "composite_plain": d.Composite(
        flags=0x0C, src_bitmap=surface_image(2), src_origin=Point16(x=0, y=0), mask_origin=Point16(x=0, y=0)
    ),
    "copy_bits": CopyBits(src_pos=Point(x=5, y=7)),
}  # fmt: skip

CHUNKINGS = {"direct": None, "chunk1": 1, "chunk7": 7, "chunk64": 64}


def draw(guest: GuestDriver, device: QXLDevice, body: DrawBody, flags: int = 0, **kw: object) -> RedDrawable:
    """Write, submit, pop and parse one drawable."""
    phys = guest.drawable(body, bbox=rect(0, 0, 64, 48), **kw)  # type: ignore[arg-type]
    assert guest.submit(phys, CmdType.DRAW)
    ext = device.get_command()
    assert ext is not None and ext.cmd == QXLCommand(data=phys, type=CmdType.DRAW)
    cmd = parse_command(device.memslots, QXLCommandExt(ext.cmd, ext.group_id, flags), device.parse_limits)
    assert isinstance(cmd, RedDrawable)
    assert cmd.release_info.addr == phys and cmd.release_info.group_id == MEMSLOT_GROUP_GUEST
    return cmd


@pytest.mark.parametrize("chunking", CHUNKINGS.values(), ids=list(CHUNKINGS))
@pytest.mark.parametrize("name", list(BODIES))
def test_every_draw_type(guest: GuestDriver, device: QXLDevice, name: str, chunking: int | None) -> None:
    body = BODIES[name]
    clip = d.Clip(type=ClipType.RECTS, rects=d.ClipRects(rects=(rect(0, 0, 10, 10), rect(20, 5, 30, 40))))
    cmd = draw(
        guest, device, body, chunk_size=chunking, clip=clip, surface_id=2, effect=3, mm_time=1234,
        self_bitmap=True, self_bitmap_area=rect(1, 2, 3, 4), surfaces_dest=(1, -1, 2),
        surfaces_rects=(rect(0, 0, 1, 1), rect(0, 0, 0, 0), rect(5, 5, 9, 9)),
    )  # fmt: skip
    assert cmd.body == body
    assert cmd.type == (DrawType.NOP if body is None else DRAW_TYPES[type(body)])
    assert cmd.clip == clip and cmd.bbox == rect(0, 0, 64, 48)
    assert (cmd.surface_id, cmd.effect, cmd.mm_time) == (2, 3, 1234)
    assert cmd.self_bitmap == (not isinstance(body, (d.Copy, d.Blend)))  # libspice forces it off for these
    assert cmd.self_bitmap_area == rect(1, 2, 3, 4)
    assert cmd.surface_deps == (1, -1, 2)
    assert cmd.surfaces_rects == (rect(0, 0, 1, 1), rect(0, 0, 0, 0), rect(5, 5, 9, 9))


@pytest.mark.parametrize("name", [n for n in BODIES if n != "nop"])
def test_parsed_drawable_marshals_as_its_message(guest: GuestDriver, device: QXLDevice, name: str) -> None:
    cmd = draw(guest, device, BODIES[name])
    msg = cmd.to_message()
    assert msg is not None
    assert parse_body(msg.CHANNEL, msg.DIRECTION, msg.TYPE, msg.encode()) == msg


def test_nop_has_no_message(guest: GuestDriver, device: QXLDevice) -> None:
    assert draw(guest, device, None).to_message() is None


COMPAT_BODIES = {n: b for n, b in BODIES.items() if not isinstance(b, d.Composite)}


@pytest.mark.parametrize("name", list(COMPAT_BODIES))
def test_compat_drawables(guest: GuestDriver, device: QXLDevice, name: str) -> None:
    body = COMPAT_BODIES[name]
    cmd = draw(guest, device, body, CmdFlags.COMPAT, compat=True, chunk_size=3, self_bitmap=True)
    if isinstance(body, d.AlphaBlend):
        body = d.AlphaBlend(alpha_flags=0, alpha=body.alpha, src_bitmap=body.src_bitmap, src_area=body.src_area)
    assert cmd.body == body
    assert cmd.surface_id == 0
    assert cmd.self_bitmap == (not isinstance(body, (d.Copy, d.Blend)))
    if isinstance(body, CopyBits):
        assert cmd.surface_deps == (0, -1, -1)
        assert cmd.surfaces_rects[0] == rect(5, 7, 5 + 64, 7 + 48)
    else:
        assert cmd.surface_deps == (-1, -1, -1)


def test_compat_16bpp_widens_solid_colours_and_palettes(guest: GuestDriver, device: QXLDevice) -> None:
    pal = d.Palette(unique=1, ents=(0x7FFF, 0x001F, 0x03E0))
    body = d.Opaque(
        src_bitmap=bitmap(2, 2, BitmapFmt.BIT8, stride=4, palette=pal), src_area=rect(0, 0, 2, 2),
        brush=d.Brush(type=BrushType.SOLID, color=0x7C00), rop_descriptor=8, scale_mode=0,
    )  # fmt: skip
    cmd = draw(guest, device, body, CmdFlags.COMPAT | CmdFlags.COMPAT_16BPP, compat=True)
    assert isinstance(cmd.body, d.Opaque)
    assert cmd.body.brush.color == color_16_to_32(0x7C00) == 0xFF0000
    assert cmd.body.src_bitmap is not None and cmd.body.src_bitmap.bitmap is not None
    assert cmd.body.src_bitmap.bitmap.palette == d.Palette(unique=1, ents=(0xFFFFFF, 0x0000FF, 0x00FF00))


def test_image_flags_mapped(guest: GuestDriver, device: QXLDevice) -> None:
    img = bitmap(flags=3)  # CACHE_ME | HIGH_BITS_SET <- QXL_IMAGE_CACHE | QXL_IMAGE_HIGH_BITS_SET
    cmd = draw(guest, device, d.Copy(src_bitmap=img, src_area=AREA, rop_descriptor=8, scale_mode=0))
    assert isinstance(cmd.body, d.Copy) and cmd.body.src_bitmap == img


def cmd_of(guest: GuestDriver, device: QXLDevice, phys: int, type_: int, flags: int = 0) -> object:
    assert guest.submit(phys, type_)
    pop = device.get_cursor_command if type_ == CmdType.CURSOR else device.get_command
    ext = pop()
    assert ext is not None
    return parse_command(device.memslots, QXLCommandExt(ext.cmd, ext.group_id, flags), device.parse_limits)


def test_update(guest: GuestDriver, device: QXLDevice) -> None:
    phys = guest.update(rect(1, 2, 30, 40), update_id=77, surface_id=5)
    assert cmd_of(guest, device, phys, CmdType.UPDATE) == RedUpdate(
        release_info=ReleaseInfo(addr=phys, group_id=MEMSLOT_GROUP_GUEST),
        area=rect(1, 2, 30, 40),
        update_id=77,
        surface_id=5,
    )
    phys = guest.update(rect(1, 2, 30, 40), update_id=78, compat=True)
    got = cmd_of(guest, device, phys, CmdType.UPDATE, CmdFlags.COMPAT)
    assert isinstance(got, RedUpdate) and (got.update_id, got.surface_id) == (78, 0)


@pytest.mark.parametrize("stride_sign", [1, -1])
def test_surface_create_and_destroy(guest: GuestDriver, device: QXLDevice, stride_sign: int) -> None:
    phys, data = guest.surface_create(7, 30, 20, stride=stride_sign * 128)
    got = cmd_of(guest, device, phys, CmdType.SURFACE)
    assert isinstance(got, RedSurfaceCmd)
    assert (got.surface_id, got.type, got.format, got.width, got.height, got.stride, got.data_phys) == (
        7, SurfaceCmdType.CREATE, 32, 30, 20, stride_sign * 128, data,
    )  # fmt: skip
    assert got.data is not None and len(got.data) == 128 * 20
    got.data[0:4] = b"\x01\x02\x03\x04"  # live view of guest memory
    assert guest.read(data, 4) == b"\x01\x02\x03\x04"
    got = cmd_of(guest, device, guest.surface_destroy(7), CmdType.SURFACE)
    assert isinstance(got, RedSurfaceCmd) and (got.type, got.surface_id, got.data) == (SurfaceCmdType.DESTROY, 7, None)


def test_message(guest: GuestDriver, device: QXLDevice) -> None:
    got = cmd_of(guest, device, guest.message(b"hello from the driver"), CmdType.MESSAGE)
    assert isinstance(got, RedMessage) and got.text == b"hello from the driver"


SHAPE = Cursor(
    flags=0,
    header=CursorHeader(unique=0xC0FFEE, type=0, width=4, height=4, hot_spot_x=1, hot_spot_y=2),
    data=bytes(range(64)),
)


@pytest.mark.parametrize("chunking", [None, 5])
def test_cursor_commands(guest: GuestDriver, device: QXLDevice, chunking: int | None) -> None:
    got = cmd_of(guest, device, guest.cursor_set(Point16(x=-3, y=9), True, SHAPE, chunking), CmdType.CURSOR)
    assert isinstance(got, RedCursorCmd)
    assert (got.type, got.position, got.visible, got.shape) == (CursorCmdType.SET, Point16(x=-3, y=9), True, SHAPE)
    got = cmd_of(guest, device, guest.cursor_move(Point16(x=100, y=200)), CmdType.CURSOR)
    assert isinstance(got, RedCursorCmd) and (got.type, got.position) == (CursorCmdType.MOVE, Point16(x=100, y=200))
    got = cmd_of(guest, device, guest.cursor_hide(), CmdType.CURSOR)
    assert isinstance(got, RedCursorCmd) and got.type == CursorCmdType.HIDE
    got = cmd_of(guest, device, guest.cursor_trail(5, 30), CmdType.CURSOR)
    assert isinstance(got, RedCursorCmd) and (got.trail_length, got.trail_frequency) == (5, 30)


def test_cursor_data_size_truncates_chunk_data(guest: GuestDriver, device: QXLDevice) -> None:
    phys = guest.cursor_set(Point16(x=0, y=0), False, SHAPE)
    shape_phys = int.from_bytes(guest.read(phys + 14, 8), "little")
    guest.write(shape_phys + 18, (10).to_bytes(4, "little"))  # data_size < what the chunk holds
    got = cmd_of(guest, device, phys, CmdType.CURSOR)
    assert isinstance(got, RedCursorCmd) and got.shape is not None and got.shape.data == bytes(range(10))
