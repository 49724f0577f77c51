"""Display channel messages and the drawing structures they carry.

Counterpart of spice-common ``spice.proto`` (``channel DisplayChannel`` and the structs before it:
``Clip``, ``Image``, ``Brush``, ``QMask``, ``Path``, ``String``, ...), of the ``SpiceMsgDisplay*``
types in ``common/messages.h`` and of the generated display (de)marshallers that spice-server's
``server/dcc-send.cpp`` drives.

Layout notes (all checked against the generated C demarshaller):

* Unions (spice.proto ``switch``) are modelled as one optional field per named arm, present only
  when the discriminator selects it; fields of arms that are not on the wire are None. A switch on
  a *flags* value tests ``flags & CASE``; the first matching case wins.
* ``@to_ptr`` / ``@ptr_array`` are C-side conveniences: on the wire the clip rectangles, path
  segments and glyphs are inline.
* ``@chunk @nomarshal`` data (pixels, compressed images) follows its structure inline, inside the
  image's own pointer target; the palette, if any, is a separate pointer target placed after it.
* A pointer to an empty value is written as NULL, so use None rather than ``()`` / ``b""`` there.
"""

from __future__ import annotations

from collections.abc import Callable

from ..enums import BitmapFlags, BrushType, ChannelType, ClipType, CompositeFlags, ImageType, LineFlags, StringFlags
from ..marshal import I32, I64, U8, U16, U32, U64, Array, Bytes, Ctx, Ptr, Switch, WireType, count, f, layout_of, struct
from .base import (
    CLIENT,
    SERVER,
    ChannelWait,
    Message,
    Point,
    Point16,
    PointFix,
    Rect,
    Transform,
    _struct_array,
    message,
)

DISPLAY = ChannelType.DISPLAY

Cond = Callable[[Ctx], bool]


def _is(field: str, *values: int) -> Cond:
    return lambda c: c[field] in values


def _has(field: str, flag: int) -> Cond:
    return lambda c: bool(c[field] & flag)


def _lacks(field: str, flag: int) -> Cond:
    return lambda c: not c[field] & flag


def image_size(bpp: int, width: int, height: int) -> int:
    """Bytes of a packed ``bpp``-bit raster with rows padded to whole bytes (spice.proto ``image_size``)."""
    return ((bpp * width + 7) // 8) * height


_POINT = layout_of(Point)
_RECT = layout_of(Rect)

# --- clipping, base, small records ------------------------------------------------------------


@struct
class ClipRects:
    _num_rects = count(U32, "rects")
    rects: tuple[Rect, ...] = f(_struct_array(Rect, "_num_rects"))


@struct
class Clip:
    """``type`` (ClipType); the rectangles follow inline when it is RECTS."""

    type: int = f(U8, default=ClipType.NONE)
    rects: ClipRects | None = f(layout_of(ClipRects), when=_is("type", ClipType.RECTS), default=None)


@struct
class DisplayBase:
    """The header of every drawing message: target surface, bounding box, clip (21 B unclipped)."""

    surface_id: int = f(U32)
    box: Rect = f(_RECT)
    clip: Clip = f(layout_of(Clip), default=Clip())


@struct
class ResourceID:
    type: int = f(U8)  # 1 = pixmap (spice.proto resource_type)
    id: int = f(U64)


@struct
class Head:
    monitor_id: int = f(U32)
    surface_id: int = f(U32)
    width: int = f(U32)
    height: int = f(U32)
    x: int = f(U32)
    y: int = f(U32)
    flags: int = f(U32)


@struct
class StreamDataHeader:
    id: int = f(U32)
    multi_media_time: int = f(U32)


# --- images -----------------------------------------------------------------------------------


@struct
class Palette:
    unique: int = f(U64)
    _num_ents = count(U16, "ents")
    ents: tuple[int, ...] = f(Array(U32, "_num_ents"))


@struct
class BitmapData:
    """An uncompressed bitmap; ``data`` is ``stride * y`` bytes.

    With ``PAL_FROM_CACHE`` in ``flags`` the palette is named by ``palette_id``; otherwise
    ``palette`` points at one (None for formats without a palette).
    """

    format: int = f(U8)
    flags: int = f(U8)
    x: int = f(U32)
    y: int = f(U32)
    stride: int = f(U32)
    palette_id: int | None = f(U64, when=_has("flags", BitmapFlags.PAL_FROM_CACHE), default=None)
    palette: Palette | None = f(Ptr(layout_of(Palette)), when=_lacks("flags", BitmapFlags.PAL_FROM_CACHE), default=None)
    data: bytes = f(Bytes(lambda c: c["stride"] * c["y"]))


@struct
class BinaryData:
    """A compressed image stream (QUIC, LZ_RGB, GLZ_RGB, JPEG, LZ4)."""

    _data_size = count(U32, "data")
    data: bytes = f(Bytes("_data_size"))


@struct
class LZPLTData:
    """LZ-compressed palettized image; unlike a bitmap, the palette pointer may not be NULL."""

    flags: int = f(U8)
    _data_size = count(U32, "data")
    palette_id: int | None = f(U64, when=_has("flags", BitmapFlags.PAL_FROM_CACHE), default=None)
    palette: Palette | None = f(
        Ptr(layout_of(Palette), nonnull=True), when=_lacks("flags", BitmapFlags.PAL_FROM_CACHE), default=None
    )
    data: bytes = f(Bytes("_data_size"))


@struct
class ZlibGlzRGBData:
    glz_data_size: int = f(U32)  # size of the GLZ stream once inflated
    _data_size = count(U32, "data")
    data: bytes = f(Bytes("_data_size"))


@struct
class JPEGAlphaData:
    """A JPEG of the colour channels followed by an LZ stream of the alpha channel."""

    flags: int = f(U8)  # 1 = TOP_DOWN
    jpeg_size: int = f(U32)  # the first jpeg_size bytes of data are the JPEG
    _data_size = count(U32, "data")
    data: bytes = f(Bytes("_data_size"))


@struct
class Surface:
    surface_id: int = f(U32)


@struct
class ImageDescriptor:
    id: int = f(U64)
    type: int = f(U8)
    flags: int = f(U8, default=0)
    width: int = f(U32)
    height: int = f(U32)


def _image(*types: int) -> Cond:
    return lambda c: c["descriptor"].type in types


_BINARY = layout_of(BinaryData)


@struct
class Image:
    """An 18-byte descriptor, then the arm that ``descriptor.type`` selects.

    FROM_CACHE and FROM_CACHE_LOSSLESS (and unknown types) have no arm: every arm is None.
    """

    descriptor: ImageDescriptor = f(layout_of(ImageDescriptor))
    bitmap: BitmapData | None = f(layout_of(BitmapData), when=_image(ImageType.BITMAP), default=None)
    quic: BinaryData | None = f(_BINARY, when=_image(ImageType.QUIC), default=None)
    lz_rgb: BinaryData | None = f(_BINARY, when=_image(ImageType.LZ_RGB, ImageType.GLZ_RGB), default=None)
    jpeg: BinaryData | None = f(_BINARY, when=_image(ImageType.JPEG), default=None)
    lz4: BinaryData | None = f(_BINARY, when=_image(ImageType.LZ4), default=None)
    lz_plt: LZPLTData | None = f(layout_of(LZPLTData), when=_image(ImageType.LZ_PLT), default=None)
    zlib_glz: ZlibGlzRGBData | None = f(layout_of(ZlibGlzRGBData), when=_image(ImageType.ZLIB_GLZ_RGB), default=None)
    jpeg_alpha: JPEGAlphaData | None = f(layout_of(JPEGAlphaData), when=_image(ImageType.JPEG_ALPHA), default=None)
    surface: Surface | None = f(layout_of(Surface), when=_image(ImageType.SURFACE), default=None)


_IMAGE_PTR = Ptr(layout_of(Image))

# --- brushes, masks, lines, text --------------------------------------------------------------


@struct
class Pattern:
    pat: Image = f(Ptr(layout_of(Image), nonnull=True))
    pos: Point = f(_POINT)


@struct
class Brush:
    type: int = f(U8)
    color: int | None = f(U32, when=_is("type", BrushType.SOLID), default=None)
    pattern: Pattern | None = f(layout_of(Pattern), when=_is("type", BrushType.PATTERN), default=None)


@struct
class QMask:
    """An optional 1-bit mask image (13 B on the wire); the default is no mask."""

    flags: int = f(U8, default=0)  # 1 = INVERS
    pos: Point = f(_POINT, default=Point(x=0, y=0))
    bitmap: Image | None = f(_IMAGE_PTR, default=None)


@struct
class LineAttr:
    """Line flags; when STYLED, a dash pattern of fixed28_4 lengths behind a pointer."""

    flags: int = f(U8)
    _style_nseg = count(U8, "style", when=_has("flags", LineFlags.STYLED))
    style: tuple[int, ...] | None = f(
        Ptr(Array(I32, "_style_nseg")), when=_has("flags", LineFlags.STYLED), default=None
    )


@struct
class PathSegment:
    flags: int = f(U8)  # PathFlags
    _count = count(U32, "points")
    points: tuple[PointFix, ...] = f(_struct_array(PointFix, "_count"))


@struct
class Path:
    _num_segments = count(U32, "segments")
    segments: tuple[PathSegment, ...] = f(_struct_array(PathSegment, "_num_segments"))


def _glyph_data(bpp: int) -> Callable[[Ctx], int]:
    return lambda c: image_size(bpp, c["width"], c["height"])


@struct
class RasterGlyphA1:
    render_pos: Point = f(_POINT)
    glyph_origin: Point = f(_POINT)
    width: int = f(U16)
    height: int = f(U16)
    data: bytes = f(Bytes(_glyph_data(1)))


@struct
class RasterGlyphA4:
    render_pos: Point = f(_POINT)
    glyph_origin: Point = f(_POINT)
    width: int = f(U16)
    height: int = f(U16)
    data: bytes = f(Bytes(_glyph_data(4)))


@struct
class RasterGlyphA8:
    render_pos: Point = f(_POINT)
    glyph_origin: Point = f(_POINT)
    width: int = f(U16)
    height: int = f(U16)
    data: bytes = f(Bytes(_glyph_data(8)))


RasterGlyph = RasterGlyphA1 | RasterGlyphA4 | RasterGlyphA8

_GLYPH_ARMS: tuple[tuple[int, WireType], ...] = (
    (StringFlags.RASTER_A1, _struct_array(RasterGlyphA1, "_length")),
    (StringFlags.RASTER_A4, _struct_array(RasterGlyphA4, "_length")),
    (StringFlags.RASTER_A8, _struct_array(RasterGlyphA8, "_length")),
)


def _glyph_arm(c: Ctx) -> WireType | None:
    for flag, wtype in _GLYPH_ARMS:
        if c["flags"] & flag:
            return wtype
    return None


@struct
class String:
    """Glyphs of the depth its first RASTER_A1/A4/A8 flag names (in that order); with none of
    those flags there are no glyphs and ``glyphs`` is None."""

    _length = count(U16, "glyphs")
    flags: int = f(U8)
    glyphs: tuple[RasterGlyph, ...] | None = f(Switch(_glyph_arm), default=None)


# --- drawing operation bodies ----------------------------------------------------------------

_BRUSH = layout_of(Brush)
_QMASK = layout_of(QMask)


@struct
class Fill:
    brush: Brush = f(_BRUSH)
    rop_descriptor: int = f(U16)
    mask: QMask = f(_QMASK, default=QMask())


@struct
class Opaque:
    src_bitmap: Image | None = f(_IMAGE_PTR)
    src_area: Rect = f(_RECT)
    brush: Brush = f(_BRUSH)
    rop_descriptor: int = f(U16)
    scale_mode: int = f(U8)
    mask: QMask = f(_QMASK, default=QMask())


@struct
class Copy:
    src_bitmap: Image | None = f(_IMAGE_PTR)
    src_area: Rect = f(_RECT)
    rop_descriptor: int = f(U16)
    scale_mode: int = f(U8)  # 0 interpolate, 1 nearest
    mask: QMask = f(_QMASK, default=QMask())


@struct
class Blend:
    src_bitmap: Image | None = f(_IMAGE_PTR)
    src_area: Rect = f(_RECT)
    rop_descriptor: int = f(U16)
    scale_mode: int = f(U8)
    mask: QMask = f(_QMASK, default=QMask())


@struct
class Blackness:
    mask: QMask = f(_QMASK, default=QMask())


@struct
class Whiteness:
    mask: QMask = f(_QMASK, default=QMask())


@struct
class Invers:
    mask: QMask = f(_QMASK, default=QMask())


@struct
class Rop3:
    src_bitmap: Image | None = f(_IMAGE_PTR)
    src_area: Rect = f(_RECT)
    brush: Brush = f(_BRUSH)
    rop3: int = f(U8)
    scale_mode: int = f(U8)
    mask: QMask = f(_QMASK, default=QMask())


@struct
class Stroke:
    path: Path = f(Ptr(layout_of(Path), nonnull=True))
    attr: LineAttr = f(layout_of(LineAttr))
    brush: Brush = f(_BRUSH)
    fore_mode: int = f(U16)
    back_mode: int = f(U16)


@struct
class Text:
    str: String = f(Ptr(layout_of(String), nonnull=True))
    back_area: Rect = f(_RECT)
    fore_brush: Brush = f(_BRUSH)
    back_brush: Brush = f(_BRUSH)
    fore_mode: int = f(U16)
    back_mode: int = f(U16)


@struct
class Transparent:
    src_bitmap: Image | None = f(_IMAGE_PTR)
    src_area: Rect = f(_RECT)
    src_color: int = f(U32)
    true_color: int = f(U32)


@struct
class AlphaBlend:
    alpha_flags: int = f(U8)  # 1 DEST_HAS_ALPHA, 2 SRC_SURFACE_HAS_ALPHA
    alpha: int = f(U8)
    src_bitmap: Image | None = f(_IMAGE_PTR)
    src_area: Rect = f(_RECT)


_TRANSFORM = layout_of(Transform)


@struct
class Composite:
    """Render-style composite; ``flags`` (CompositeFlags) also says which optional parts follow."""

    flags: int = f(U32)
    src_bitmap: Image | None = f(_IMAGE_PTR)
    mask_bitmap: Image | None = f(_IMAGE_PTR, when=_has("flags", CompositeFlags.HAS_MASK), default=None)
    src_transform: Transform | None = f(_TRANSFORM, when=_has("flags", CompositeFlags.HAS_SRC_TRANSFORM), default=None)
    mask_transform: Transform | None = f(
        _TRANSFORM, when=_has("flags", CompositeFlags.HAS_MASK_TRANSFORM), default=None
    )
    src_origin: Point16 = f(layout_of(Point16))
    mask_origin: Point16 = f(layout_of(Point16))


_BASE = layout_of(DisplayBase)
_CLIP = layout_of(Clip)

# --- server to client -------------------------------------------------------------------------


@message(DISPLAY, SERVER, 101)
@struct
class DisplayMode(Message):
    """Legacy mode set; modern servers use SURFACE_CREATE."""

    x_res: int = f(U32)
    y_res: int = f(U32)
    bits: int = f(U32)


@message(DISPLAY, SERVER, 102)
@struct
class DisplayMark(Message):
    """The first complete frame has been sent."""


@message(DISPLAY, SERVER, 103)
@struct
class DisplayReset(Message):
    pass


@message(DISPLAY, SERVER, 104)
@struct
class CopyBits(Message):
    base: DisplayBase = f(_BASE)
    src_pos: Point = f(_POINT)


@message(DISPLAY, SERVER, 105)
@struct
class InvalList(Message):
    _count = count(U16, "resources")
    resources: tuple[ResourceID, ...] = f(_struct_array(ResourceID, "_count"))


@message(DISPLAY, SERVER, 106)
@struct
class InvalAllPixmaps(Message):
    _wait_count = count(U8, "wait_list")
    wait_list: tuple[ChannelWait, ...] = f(_struct_array(ChannelWait, "_wait_count"))


@message(DISPLAY, SERVER, 107)
@struct
class InvalPalette(Message):
    id: int = f(U64)


@message(DISPLAY, SERVER, 108)
@struct
class InvalAllPalettes(Message):
    pass


@message(DISPLAY, SERVER, 122)
@struct
class StreamCreate(Message):
    surface_id: int = f(U32)
    id: int = f(U32)
    flags: int = f(U8)  # 1 = TOP_DOWN
    codec_type: int = f(U8)  # VideoCodecType
    stamp: int = f(U64)
    stream_width: int = f(U32)
    stream_height: int = f(U32)
    src_width: int = f(U32)
    src_height: int = f(U32)
    dest: Rect = f(_RECT)
    clip: Clip = f(_CLIP, default=Clip())


@message(DISPLAY, SERVER, 123)
@struct
class StreamData(Message):
    base: StreamDataHeader = f(layout_of(StreamDataHeader))
    _data_size = count(U32, "data")
    data: bytes = f(Bytes("_data_size"))


@message(DISPLAY, SERVER, 124)
@struct
class StreamClip(Message):
    id: int = f(U32)
    clip: Clip = f(_CLIP)


@message(DISPLAY, SERVER, 125)
@struct
class StreamDestroy(Message):
    id: int = f(U32)


@message(DISPLAY, SERVER, 126)
@struct
class StreamDestroyAll(Message):
    pass


@message(DISPLAY, SERVER, 302)
@struct
class DrawFill(Message):
    base: DisplayBase = f(_BASE)
    data: Fill = f(layout_of(Fill))


@message(DISPLAY, SERVER, 303)
@struct
class DrawOpaque(Message):
    base: DisplayBase = f(_BASE)
    data: Opaque = f(layout_of(Opaque))


@message(DISPLAY, SERVER, 304)
@struct
class DrawCopy(Message):
    base: DisplayBase = f(_BASE)
    data: Copy = f(layout_of(Copy))


@message(DISPLAY, SERVER, 305)
@struct
class DrawBlend(Message):
    base: DisplayBase = f(_BASE)
    data: Blend = f(layout_of(Blend))


@message(DISPLAY, SERVER, 306)
@struct
class DrawBlackness(Message):
    base: DisplayBase = f(_BASE)
    data: Blackness = f(layout_of(Blackness), default=Blackness())


@message(DISPLAY, SERVER, 307)
@struct
class DrawWhiteness(Message):
    base: DisplayBase = f(_BASE)
    data: Whiteness = f(layout_of(Whiteness), default=Whiteness())


@message(DISPLAY, SERVER, 308)
@struct
class DrawInvers(Message):
    base: DisplayBase = f(_BASE)
    data: Invers = f(layout_of(Invers), default=Invers())


@message(DISPLAY, SERVER, 309)
@struct
class DrawRop3(Message):
    base: DisplayBase = f(_BASE)
    data: Rop3 = f(layout_of(Rop3))


@message(DISPLAY, SERVER, 310)
@struct
class DrawStroke(Message):
    base: DisplayBase = f(_BASE)
    data: Stroke = f(layout_of(Stroke))


@message(DISPLAY, SERVER, 311)
@struct
class DrawText(Message):
    base: DisplayBase = f(_BASE)
    data: Text = f(layout_of(Text))


@message(DISPLAY, SERVER, 312)
@struct
class DrawTransparent(Message):
    base: DisplayBase = f(_BASE)
    data: Transparent = f(layout_of(Transparent))


@message(DISPLAY, SERVER, 313)
@struct
class DrawAlphaBlend(Message):
    base: DisplayBase = f(_BASE)
    data: AlphaBlend = f(layout_of(AlphaBlend))


@message(DISPLAY, SERVER, 314)
@struct
class SurfaceCreate(Message):
    surface_id: int = f(U32)
    width: int = f(U32)
    height: int = f(U32)
    format: int = f(U32)  # SurfaceFmt
    flags: int = f(U32, default=0)  # SurfaceFlags


@message(DISPLAY, SERVER, 315)
@struct
class SurfaceDestroy(Message):
    surface_id: int = f(U32)


@message(DISPLAY, SERVER, 316)
@struct
class StreamDataSized(Message):
    base: StreamDataHeader = f(layout_of(StreamDataHeader))
    width: int = f(U32)
    height: int = f(U32)
    dest: Rect = f(_RECT)
    _data_size = count(U32, "data")
    data: bytes = f(Bytes("_data_size"))


@message(DISPLAY, SERVER, 317)
@struct
class MonitorsConfig(Message):
    _count = count(U16, "heads")
    max_allowed: int = f(U16)
    heads: tuple[Head, ...] = f(_struct_array(Head, "_count"))


@message(DISPLAY, SERVER, 318)
@struct
class DrawComposite(Message):
    base: DisplayBase = f(_BASE)
    data: Composite = f(layout_of(Composite))


@message(DISPLAY, SERVER, 319)
@struct
class StreamActivateReport(Message):
    stream_id: int = f(U32)
    unique_id: int = f(U32)
    max_window_size: int = f(U32)
    timeout_ms: int = f(U32)


@message(DISPLAY, SERVER, 320)
@struct
class GlScanoutUnix(Message):
    """A dma-buf scanout for a client on a local unix socket.

    spice.proto's first field, ``unix_fd drm_dma_buf_fd``, takes no bytes in the body: the file
    descriptor travels out of band (SCM_RIGHTS ancillary data on the socket). It is not modelled
    here and this server does not send the message.
    """

    width: int = f(U32)
    height: int = f(U32)
    stride: int = f(U32)
    drm_fourcc_format: int = f(U32)
    flags: int = f(U32)  # 1 = Y0TOP


@message(DISPLAY, SERVER, 321)
@struct
class GlDraw(Message):
    x: int = f(U32)
    y: int = f(U32)
    w: int = f(U32)
    h: int = f(U32)


@message(DISPLAY, SERVER, 322)
@struct
class DisplayQualityIndicator(Message):
    data: bytes = f(Bytes())


# --- client to server -------------------------------------------------------------------------


@message(DISPLAY, CLIENT, 101)
@struct
class DisplayInit(Message):
    """Cache sizes the client offers; pixel counts, not bytes (14 B)."""

    pixmap_cache_id: int = f(U8)
    pixmap_cache_size: int = f(I64)
    glz_dictionary_id: int = f(U8)
    glz_dictionary_window_size: int = f(I32)


@message(DISPLAY, CLIENT, 102)
@struct
class StreamReport(Message):
    """Client playback statistics; ``num_frames == 0`` with ``num_drops == 0xFFFFFFFF`` means the
    client cannot decode the stream; ``audio_delay == 0xFFFFFFFF`` means no audio is playing."""

    stream_id: int = f(U32)
    unique_id: int = f(U32)
    start_frame_mm_time: int = f(U32)
    end_frame_mm_time: int = f(U32)
    num_frames: int = f(U32)
    num_drops: int = f(U32)
    last_frame_delay: int = f(I32)
    audio_delay: int = f(U32)


@message(DISPLAY, CLIENT, 103)
@struct
class PreferredCompression(Message):
    image_compression: int = f(U8)  # ImageCompression


@message(DISPLAY, CLIENT, 104)
@struct
class GlDrawDone(Message):
    pass


@message(DISPLAY, CLIENT, 105)
@struct
class PreferredVideoCodecType(Message):
    _num_of_codecs = count(U8, "codecs")
    codecs: tuple[int, ...] = f(Array(U8, "_num_of_codecs"))  # VideoCodecType, most preferred first


#: a draw's op structure -> the message that carries it (COPY_BITS carries no op structure)
DRAW_MESSAGES: dict[type, type[Message]] = {
    Fill: DrawFill,
    Opaque: DrawOpaque,
    Copy: DrawCopy,
    Blend: DrawBlend,
    Blackness: DrawBlackness,
    Whiteness: DrawWhiteness,
    Invers: DrawInvers,
    Rop3: DrawRop3,
    Stroke: DrawStroke,
    Text: DrawText,
    Transparent: DrawTransparent,
    AlphaBlend: DrawAlphaBlend,
    Composite: DrawComposite,
}

#: the op structures of the draw messages (what QXL draw commands and the canvas take)
DrawOpStruct = Fill | Opaque | Copy | Blend | Blackness | Whiteness | Invers | Rop3 | Stroke | Text | Transparent | AlphaBlend | Composite
