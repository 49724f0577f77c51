"""Hand-written byte vectors for layouts whose exact bytes matter.

Each vector is checked both ways: the message encodes to exactly these bytes and parses back.
Offsets follow spice-common ``spice.proto`` and the pointer order of ``common/marshaller.c``
(targets appended in creation order; image palettes after the sibling images).
"""

from __future__ import annotations

import struct

import pytest

from spiceserver.errors import ProtocolError
from spiceserver.proto.enums import (
    BitmapFlags,
    BitmapFmt,
    BrushType,
    ChannelType,
    ClipType,
    CursorFlags,
    CursorType,
    DataCompressionType,
    ImageType,
    LineFlags,
    PathFlags,
    StringFlags,
    SurfaceFlags,
    SurfaceFmt,
)
from spiceserver.proto.messages import CLIENT, SERVER, Message, parse_body, playback, port, smartcard, spicevmc
from spiceserver.proto.messages import cursor as c
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Point, Point16, PointFix, Rect

OP_PUT = 8
NEAREST = 1
IMAGE_ID = 0x1122334455667788


def check(channel: int, direction: str, msg: Message, expected: bytes) -> None:
    assert msg.encode() == expected
    assert parse_body(channel, direction, msg.TYPE, expected) == msg  # type: ignore[arg-type]


def base_bytes(surface_id: int, box: tuple[int, int, int, int]) -> bytes:
    return struct.pack("<I4iB", surface_id, *box, ClipType.NONE)


def descriptor_bytes(image_id: int, type_: int, width: int, height: int, flags: int = 0) -> bytes:
    return struct.pack("<QBBII", image_id, type_, flags, width, height)


def bitmap_image(
    fmt: int, width: int, height: int, stride: int, data: bytes, palette: d.Palette | None = None
) -> d.Image:
    return d.Image(
        descriptor=d.ImageDescriptor(id=IMAGE_ID, type=ImageType.BITMAP, width=width, height=height),
        bitmap=d.BitmapData(
            format=fmt, flags=BitmapFlags.TOP_DOWN, x=width, y=height, stride=stride, palette=palette, data=data
        ),
    )


def test_draw_copy_image_pointer_is_57() -> None:
    """DisplayBase 21 + src ptr 4 + Rect 16 + rop 2 + scale 1 + QMask 13 = 57 (as in a libspice capture)."""
    pixels = bytes(range(8))
    msg = d.DrawCopy(
        base=d.DisplayBase(surface_id=0, box=Rect(top=0, left=0, bottom=1, right=2)),
        data=d.Copy(
            src_bitmap=bitmap_image(BitmapFmt.BIT32, 2, 1, 8, pixels),
            src_area=Rect(top=0, left=0, bottom=1, right=2),
            rop_descriptor=OP_PUT,
            scale_mode=NEAREST,
        ),
    )
    fixed = (
        base_bytes(0, (0, 0, 1, 2))
        + struct.pack("<I", 57)
        + struct.pack("<4i", 0, 0, 1, 2)
        + struct.pack("<HB", OP_PUT, NEAREST)
        + struct.pack("<BiiI", 0, 0, 0, 0)  # no mask
    )
    assert len(fixed) == 57
    image = descriptor_bytes(IMAGE_ID, ImageType.BITMAP, 2, 1) + struct.pack(
        "<BBIIII",
        BitmapFmt.BIT32,
        BitmapFlags.TOP_DOWN,
        2,
        1,
        8,
        0,  # palette ptr NULL
    )
    check(ChannelType.DISPLAY, SERVER, msg, fixed + image + pixels)


def test_draw_copy_palette_after_mask() -> None:
    """The source image's palette is placed after the mask image, as libspice's fill_bits does."""
    palette = d.Palette(unique=7, ents=(0x00FF0000, 0x0000FF00))
    msg = d.DrawCopy(
        base=d.DisplayBase(surface_id=1, box=Rect(top=0, left=0, bottom=1, right=4)),
        data=d.Copy(
            src_bitmap=bitmap_image(BitmapFmt.BIT8, 4, 1, 4, b"\x00\x01\x01\x00", palette),
            src_area=Rect(top=0, left=0, bottom=1, right=4),
            rop_descriptor=OP_PUT,
            scale_mode=0,
            mask=d.QMask(flags=1, pos=Point(x=3, y=4), bitmap=bitmap_image(BitmapFmt.BIT1_LE, 4, 1, 1, b"\xf0")),
        ),
    )
    src_at, mask_at = 57, 57 + 18 + 18 + 4
    palette_at = mask_at + 18 + 18 + 1
    fixed = (
        base_bytes(1, (0, 0, 1, 4))
        + struct.pack("<I4iHB", src_at, 0, 0, 1, 4, OP_PUT, 0)
        + struct.pack("<BiiI", 1, 3, 4, mask_at)
    )
    src = (
        descriptor_bytes(IMAGE_ID, ImageType.BITMAP, 4, 1)
        + struct.pack("<BBIIII", BitmapFmt.BIT8, BitmapFlags.TOP_DOWN, 4, 1, 4, palette_at)
        + b"\x00\x01\x01\x00"
    )
    mask = (
        descriptor_bytes(IMAGE_ID, ImageType.BITMAP, 4, 1)
        + struct.pack("<BBIIII", BitmapFmt.BIT1_LE, BitmapFlags.TOP_DOWN, 4, 1, 1, 0)
        + b"\xf0"
    )
    pal = struct.pack("<QH2I", 7, 2, 0x00FF0000, 0x0000FF00)
    assert len(fixed + src) == mask_at and len(fixed + src + mask) == palette_at
    check(ChannelType.DISPLAY, SERVER, msg, fixed + src + mask + pal)


def test_bitmap_palette_from_cache_and_lz_plt() -> None:
    cached = d.BitmapData(
        format=BitmapFmt.BIT8, flags=BitmapFlags.PAL_FROM_CACHE, x=1, y=1, stride=1, palette_id=9, data=b"\x05"
    )
    image = d.Image(descriptor=d.ImageDescriptor(id=1, type=ImageType.BITMAP, width=1, height=1), bitmap=cached)
    msg = d.DrawCopy(
        base=d.DisplayBase(surface_id=0, box=Rect(top=0, left=0, bottom=1, right=1)),
        data=d.Copy(
            src_bitmap=image, src_area=Rect(top=0, left=0, bottom=1, right=1), rop_descriptor=OP_PUT, scale_mode=0
        ),
    )
    body = msg.encode()
    assert body[57 + 18 :] == struct.pack("<BBIIIQ", BitmapFmt.BIT8, BitmapFlags.PAL_FROM_CACHE, 1, 1, 1, 9) + b"\x05"
    assert parse_body(ChannelType.DISPLAY, SERVER, 304, body) == msg

    lz = d.LZPLTData(flags=0, palette=d.Palette(unique=3, ents=(1,)), data=b"lz")
    pattern_image = d.Image(descriptor=d.ImageDescriptor(id=2, type=ImageType.LZ_PLT, width=1, height=1), lz_plt=lz)
    fill = d.DrawFill(
        base=d.DisplayBase(surface_id=0, box=Rect(top=0, left=0, bottom=1, right=1)),
        data=d.Fill(
            brush=d.Brush(type=BrushType.PATTERN, pattern=d.Pattern(pat=pattern_image, pos=Point(x=0, y=0))),
            rop_descriptor=OP_PUT,
        ),
    )
    # base 21 + brush (type 1, pat ptr 4, pos 8) + rop 2 + mask 13 = 49
    image_at, palette_at = 49, 49 + 18 + 1 + 4 + 4 + 2
    expected = (
        base_bytes(0, (0, 0, 1, 1))
        + struct.pack("<BIiiH", BrushType.PATTERN, image_at, 0, 0, OP_PUT)
        + struct.pack("<BiiI", 0, 0, 0, 0)
        + descriptor_bytes(2, ImageType.LZ_PLT, 1, 1)
        + struct.pack("<BII", 0, 2, palette_at)
        + b"lz"
        + struct.pack("<QHI", 3, 1, 1)
    )
    check(ChannelType.DISPLAY, SERVER, fill, expected)

    no_palette = d.Image(descriptor=pattern_image.descriptor, lz_plt=d.LZPLTData(flags=0, data=b""))
    brush = d.Brush(type=BrushType.PATTERN, pattern=d.Pattern(pat=no_palette, pos=Point(x=0, y=0)))
    with pytest.raises(ValueError):  # LZ_PLT's palette pointer may not be NULL
        d.DrawFill(base=fill.base, data=d.Fill(brush=brush, rop_descriptor=0)).encode()
    bad = bytearray(expected)
    struct.pack_into("<I", bad, 49 + 18 + 5, 0)
    with pytest.raises(ProtocolError):
        parse_body(ChannelType.DISPLAY, SERVER, 302, bytes(bad))


def test_bitmap_data_length_is_stride_times_height() -> None:
    msg = d.DrawCopy(
        base=d.DisplayBase(surface_id=0, box=Rect(top=0, left=0, bottom=0, right=0)),
        data=d.Copy(
            src_bitmap=bitmap_image(BitmapFmt.BIT32, 2, 2, 8, b"\0" * 8),  # needs 16 bytes
            src_area=Rect(top=0, left=0, bottom=0, right=0),
            rop_descriptor=0,
            scale_mode=0,
        ),
    )
    with pytest.raises(ValueError):
        msg.encode()


def test_copy_bits_with_clip_rects_inline() -> None:
    clip = d.Clip(type=ClipType.RECTS, rects=d.ClipRects(rects=(Rect(top=1, left=2, bottom=3, right=4),)))
    msg = d.CopyBits(
        base=d.DisplayBase(surface_id=0, box=Rect(top=0, left=0, bottom=5, right=5), clip=clip),
        src_pos=Point(x=-1, y=2),
    )
    expected = struct.pack("<I4iBI4i2i", 0, 0, 0, 5, 5, ClipType.RECTS, 1, 1, 2, 3, 4, -1, 2)
    check(ChannelType.DISPLAY, SERVER, msg, expected)


def test_stroke_path_then_style() -> None:
    path = d.Path(segments=(d.PathSegment(flags=PathFlags.BEGIN | PathFlags.END, points=(PointFix(x=16, y=32),)),))
    msg = d.DrawStroke(
        base=d.DisplayBase(surface_id=0, box=Rect(top=0, left=0, bottom=9, right=9)),
        data=d.Stroke(
            path=path,
            attr=d.LineAttr(flags=LineFlags.STYLED, style=(48, 16)),
            brush=d.Brush(type=BrushType.SOLID, color=0xFF00FF),
            fore_mode=OP_PUT,
            back_mode=0,
        ),
    )
    # base 21, path ptr 4, attr (flags 1, nseg 1, style ptr 4), brush 5, modes 4 -> 40
    path_at, style_at = 40, 40 + 4 + 13
    expected = (
        base_bytes(0, (0, 0, 9, 9))
        + struct.pack("<IBBI", path_at, LineFlags.STYLED, 2, style_at)
        + struct.pack("<BIHH", BrushType.SOLID, 0xFF00FF, OP_PUT, 0)
        + struct.pack("<IBIii", 1, PathFlags.BEGIN | PathFlags.END, 1, 16, 32)
        + struct.pack("<2i", 48, 16)
    )
    check(ChannelType.DISPLAY, SERVER, msg, expected)


def test_text_glyph_sizes() -> None:
    """A1 glyph 9 px wide needs 2 bytes per row; A1 wins over A4 when both flags are set."""
    glyph = d.RasterGlyphA1(
        render_pos=Point(x=1, y=2), glyph_origin=Point(x=0, y=-1), width=9, height=2, data=b"\xff\x80\x01\x00"
    )
    text = d.String(flags=StringFlags.RASTER_A1 | StringFlags.RASTER_A4, glyphs=(glyph,))
    msg = d.DrawText(
        base=d.DisplayBase(surface_id=0, box=Rect(top=0, left=0, bottom=9, right=9)),
        data=d.Text(
            str=text,
            back_area=Rect(top=0, left=0, bottom=0, right=0),
            fore_brush=d.Brush(type=BrushType.SOLID, color=1),
            back_brush=d.Brush(type=BrushType.NONE),
            fore_mode=OP_PUT,
            back_mode=0,
        ),
    )
    expected = (
        base_bytes(0, (0, 0, 9, 9))
        + struct.pack("<I4iBIBHH", 51, 0, 0, 0, 0, BrushType.SOLID, 1, BrushType.NONE, OP_PUT, 0)
        + struct.pack("<HB", 1, StringFlags.RASTER_A1 | StringFlags.RASTER_A4)
        + struct.pack("<4iHH", 1, 2, 0, -1, 9, 2)
        + b"\xff\x80\x01\x00"
    )
    check(ChannelType.DISPLAY, SERVER, msg, expected)
    assert d.image_size(4, 3, 2) == 4 and d.image_size(8, 3, 2) == 6 and d.image_size(1, 8, 1) == 1


def test_surface_create_and_monitors_config_from_capture() -> None:
    """Bodies libspice-server 0.15.1 sent for a 1024x768 primary surface."""
    create = bytes.fromhex("0000000000040000000300002000000001000000")
    msg = d.SurfaceCreate(
        surface_id=0, width=1024, height=768, format=SurfaceFmt.FMT_32_XRGB, flags=SurfaceFlags.PRIMARY
    )
    check(ChannelType.DISPLAY, SERVER, msg, create)
    monitors = bytes.fromhex("0100010000000000000000000004000000030000" + "00000000" * 3)
    head = d.Head(monitor_id=0, surface_id=0, width=1024, height=768, x=0, y=0, flags=0)
    check(ChannelType.DISPLAY, SERVER, d.MonitorsConfig(max_allowed=1, heads=(head,)), monitors)


def test_display_client_messages() -> None:
    init = bytes.fromhex("0100004001000000000100fcdf00")  # spice-gtk 0.42
    msg = d.DisplayInit(
        pixmap_cache_id=1, pixmap_cache_size=20971520, glz_dictionary_id=1, glz_dictionary_window_size=14679040
    )
    check(ChannelType.DISPLAY, CLIENT, msg, init)
    codecs = d.PreferredVideoCodecType(codecs=(3, 1))
    check(ChannelType.DISPLAY, CLIENT, codecs, b"\x02\x03\x01")
    report = d.StreamReport(
        stream_id=1,
        unique_id=2,
        start_frame_mm_time=3,
        end_frame_mm_time=4,
        num_frames=0,
        num_drops=0xFFFFFFFF,
        last_frame_delay=-5,
        audio_delay=0xFFFFFFFF,
    )
    check(ChannelType.DISPLAY, CLIENT, report, struct.pack("<6IiI", 1, 2, 3, 4, 0, 0xFFFFFFFF, -5, 0xFFFFFFFF))


def test_stream_messages_and_gl_scanout() -> None:
    data = d.StreamData(base=d.StreamDataHeader(id=3, multi_media_time=1000), data=b"jpeg")
    check(ChannelType.DISPLAY, SERVER, data, struct.pack("<III", 3, 1000, 4) + b"jpeg")
    sized = d.StreamDataSized(
        base=d.StreamDataHeader(id=3, multi_media_time=1),
        width=2,
        height=3,
        dest=Rect(top=0, left=0, bottom=3, right=2),
        data=b"x",
    )
    check(ChannelType.DISPLAY, SERVER, sized, struct.pack("<IIII4iI", 3, 1, 2, 3, 0, 0, 3, 2, 1) + b"x")
    # the dma-buf fd is ancillary data, not body bytes
    scanout = d.GlScanoutUnix(width=1, height=2, stride=4, drm_fourcc_format=0x34325258, flags=1)
    check(ChannelType.DISPLAY, SERVER, scanout, struct.pack("<5I", 1, 2, 4, 0x34325258, 1))


def test_cursor_none_has_no_header() -> None:
    msg = c.CursorSet(position=Point16(x=5, y=-6), visible=1, cursor=c.Cursor(flags=CursorFlags.NONE))
    check(ChannelType.CURSOR, SERVER, msg, struct.pack("<hhBH", 5, -6, 1, CursorFlags.NONE))


def test_cursor_init_with_alpha_cursor() -> None:
    header = c.CursorHeader(unique=42, type=CursorType.ALPHA, width=1, height=1, hot_spot_x=0, hot_spot_y=0)
    cursor = c.Cursor(flags=CursorFlags.CACHE_ME, header=header, data=b"\x01\x02\x03\xff")
    msg = c.CursorInit(position=Point16(x=1, y=2), trail_length=0, trail_frequency=0, visible=1, cursor=cursor)
    expected = (
        struct.pack("<hhHHBH", 1, 2, 0, 0, 1, CursorFlags.CACHE_ME)
        + struct.pack("<QBHHHH", 42, 0, 1, 1, 0, 0)
        + b"\x01\x02\x03\xff"
    )
    check(ChannelType.CURSOR, SERVER, msg, expected)
    # FROM_CACHE: header, no pixels
    cached = c.CursorSet(
        position=Point16(x=0, y=0), visible=1, cursor=c.Cursor(flags=CursorFlags.FROM_CACHE, header=header)
    )
    check(
        ChannelType.CURSOR,
        SERVER,
        cached,
        struct.pack("<hhBH", 0, 0, 1, CursorFlags.FROM_CACHE) + struct.pack("<QBHHHH", 42, 0, 1, 1, 0, 0),
    )


def test_port_init_name_pointer() -> None:
    msg = port.PortInit(name=b"org.spice-space.webdav.0\0", opened=1)
    expected = struct.pack("<IIB", 25, 9, 1) + b"org.spice-space.webdav.0\0"
    for channel in (ChannelType.PORT, ChannelType.WEBDAV):
        check(channel, SERVER, msg, expected)
    with pytest.raises(ProtocolError):  # NULL name
        parse_body(ChannelType.PORT, SERVER, 201, struct.pack("<IIB", 0, 0, 1))
    check(ChannelType.PORT, CLIENT, port.ClientPortEvent(event=2), b"\x02")


@pytest.mark.parametrize("channel", [ChannelType.USBREDIR, ChannelType.PORT, ChannelType.WEBDAV])
def test_compressed_data_none_vs_lz4(channel: ChannelType) -> None:
    plain = spicevmc.SpicevmcCompressedData(type=DataCompressionType.NONE, compressed_data=b"abc")
    check(channel, SERVER, plain, b"\x00abc")
    lz4 = spicevmc.ClientSpicevmcCompressedData(
        type=DataCompressionType.LZ4, uncompressed_size=1000, compressed_data=b"\x1f\x00"
    )
    check(channel, CLIENT, lz4, b"\x01" + struct.pack("<I", 1000) + b"\x1f\x00")
    with pytest.raises(ValueError):  # NONE carries no uncompressed size
        spicevmc.SpicevmcCompressedData(
            type=DataCompressionType.NONE, uncompressed_size=3, compressed_data=b""
        ).encode()
    with pytest.raises(ProtocolError):
        parse_body(channel, SERVER, 102, b"\x01\x00\x00")


def test_audio_and_smartcard() -> None:
    check(ChannelType.PLAYBACK, SERVER, playback.PlaybackVolume(volume=(0x1000, 0xFFFF)), b"\x02\x00\x10\xff\xff")
    check(
        ChannelType.PLAYBACK,
        SERVER,
        playback.PlaybackStart(channels=2, format=1, frequency=48000, time=7),
        struct.pack("<IHII", 2, 1, 48000, 7),
    )
    apdu = smartcard.ClientSmartcardData(type=7, reader_id=0, data=b"\x00\xa4")
    check(ChannelType.SMARTCARD, CLIENT, apdu, struct.pack("<III", 7, 0, 2) + b"\x00\xa4")
    with pytest.raises(ProtocolError):  # length beyond the body
        parse_body(ChannelType.SMARTCARD, CLIENT, 101, struct.pack("<III", 7, 0, 3) + b"\x00\xa4")
