"""Image decoding: every bitmap format, orientation, stride, palettes, caches, LZ4, the target format."""

from __future__ import annotations

import numpy as np
import pytest

from spiceserver.canvas.images import decode_image, decode_mask, touch_image
from spiceserver.canvas.surface import Canvas, PixFmt, Pixmap
from spiceserver.codecs.lz4 import encode_lz4
from spiceserver.errors import NotSupportedError, ProtocolError
from spiceserver.proto.enums import BitmapFlags, BitmapFmt, ImageFlags, ImageType, SurfaceFmt
from spiceserver.proto.messages import display as d

from .helpers import Resolver, bitmap32, mask_image, raw_bitmap, surface_image

X = PixFmt.X8R8G8B8


def test_bitmap_32bit_keeps_x_byte_and_orientation() -> None:
    px = np.array([[0x11223344, 0x55667788, 0x99AABBCC], [0x01020304, 0x05060708, 0x090A0B0C]], np.uint32)
    for top_down in (True, False):
        pm = decode_image(bitmap32(px, top_down=top_down), X, Resolver())
        assert pm.format == X
        assert (pm.pixels == px).all()
    rgba = decode_image(bitmap32(px, fmt=BitmapFmt.RGBA), X, Resolver())
    assert rgba.format == PixFmt.A8R8G8B8  # images with alpha stay ARGB on an xRGB canvas
    assert (rgba.pixels == px).all()


def test_bitmap_stride_padding_and_bottom_up_rows() -> None:
    # 2x3 24-bit bitmap, stride 8 (2 padding bytes), bottom-up: the first row in memory is the bottom
    rows = [
        bytes([1, 2, 3, 4, 5, 6]) + b"\xee\xee",
        bytes([7, 8, 9, 10, 11, 12]) + b"\xee\xee",
        bytes(range(13, 19)) + b"\xee\xee",
    ]
    img = raw_bitmap(b"".join(rows), BitmapFmt.BIT24, 2, 3, 8, top_down=False)
    pm = decode_image(img, X, Resolver())
    assert pm.pixels.tolist() == [[0x0F0E0D, 0x121110], [0x090807, 0x0C0B0A], [0x030201, 0x060504]]


def test_high_bits_set() -> None:
    img = raw_bitmap(bytes([1, 2, 3]), BitmapFmt.BIT24, 1, 1, 3, flags=0)
    img = d.Image(
        descriptor=d.ImageDescriptor(id=0, type=ImageType.BITMAP, flags=ImageFlags.HIGH_BITS_SET, width=1, height=1),
        bitmap=img.bitmap,
    )
    assert decode_image(img, X, Resolver()).pixels.tolist() == [[0xFF030201]]
    # not applied to images with alpha
    rgba = bitmap32(np.array([[0x12345678]], np.uint32), fmt=BitmapFmt.RGBA, flags=ImageFlags.HIGH_BITS_SET)
    assert decode_image(rgba, X, Resolver()).pixels.tolist() == [[0x12345678]]


def test_16bit_bitmap_expands_like_pixman() -> None:
    values = np.array([[0x7C00, 0x03E0, 0x001F, 0x5555, 0x7FFF, 0x0000]], np.uint16)
    img = raw_bitmap(values.tobytes(), BitmapFmt.BIT16, 6, 1, 12)
    pm = decode_image(img, X, Resolver())
    assert [hex(v) for v in pm.pixels[0]] == [
        "0xffff0000",
        "0xff00ff00",
        "0xff0000ff",
        "0xffad52ad",
        "0xffffffff",
        "0xff000000",
    ]
    # on a 16_555 canvas it is used as it is
    assert (decode_image(img, PixFmt.X1R5G5B5, Resolver()).pixels == values).all()
    # a 32-bit bitmap on a 16-bit canvas is truncated
    img32 = bitmap32(np.array([[0x12345678, 0x00FFFFFF]], np.uint32))
    assert decode_image(img32, PixFmt.X1R5G5B5, Resolver()).pixels.tolist() == [[0x194F, 0x7FFF]]
    assert decode_image(img32, PixFmt.R5G6B5, Resolver()).pixels.tolist() == [[0x32AF, 0xFFFF]]


PALETTE = (0x00000000, 0x00FF0000, 0x0000FF00, 0x000000FF, 0x00FFFFFF, *(0x10101 * i for i in range(5, 16)))


def test_8bit_palette_and_out_of_range_indices() -> None:
    data = bytes([0, 1, 2, 3, 4, 200])
    img = raw_bitmap(data, BitmapFmt.BIT8, 3, 2, 3, palette=PALETTE)
    pm = decode_image(img, X, Resolver())
    assert pm.pixels.tolist() == [[0, 0xFF0000, 0xFF00], [0xFF, 0xFFFFFF, 0]]


@pytest.mark.parametrize(("fmt", "first"), [(BitmapFmt.BIT4_BE, "high"), (BitmapFmt.BIT4_LE, "low")])
def test_4bit_palettes(fmt: int, first: str) -> None:
    data = bytes([0x12, 0x34, 0x50, 0x00, 0xAB, 0xCD, 0xE0, 0x00])  # width 5, stride 4
    pm = decode_image(raw_bitmap(data, fmt, 5, 2, 4, palette=PALETTE), X, Resolver())
    nibbles = [[1, 2, 3, 4, 5], [10, 11, 12, 13, 14]] if first == "high" else [[2, 1, 4, 3, 0], [11, 10, 13, 12, 0]]
    assert pm.pixels.tolist() == [[PALETTE[i] for i in row] for row in nibbles]


@pytest.mark.parametrize(("fmt", "order"), [(BitmapFmt.BIT1_BE, "big"), (BitmapFmt.BIT1_LE, "little")])
def test_1bit_palettes(fmt: int, order: str) -> None:
    bits = np.array([[1, 0, 1, 1, 0, 0, 0, 1, 1, 0], [0, 1, 0, 0, 1, 1, 1, 0, 0, 1]], np.uint8)
    packed = np.packbits(bits, axis=1, bitorder=order)  # type: ignore[arg-type]
    img = raw_bitmap(packed.tobytes(), fmt, 10, 2, packed.shape[1], palette=(0x111111, 0x222222), top_down=True)
    pm = decode_image(img, X, Resolver())
    assert (pm.pixels == np.where(bits == 1, 0x222222, 0x111111)).all()


def test_8bit_alpha() -> None:
    img = raw_bitmap(bytes([0, 0x80, 0xFF, 0x12]), BitmapFmt.BIT8_A, 2, 2, 2)
    assert decode_image(img, PixFmt.A8, Resolver()).pixels.tolist() == [[0, 0x80], [0xFF, 0x12]]
    # on a 32-bit canvas an a8 image becomes black with the alpha in the top byte
    assert decode_image(img, X, Resolver()).pixels.tolist() == [[0, 0x80000000], [0xFF000000, 0x12000000]]


def test_palettes_on_a_16bit_canvas_and_unsupported_canvases() -> None:
    img = raw_bitmap(bytes([0, 1]), BitmapFmt.BIT8, 2, 1, 2, palette=(0x12347FFF, 0x001F))
    assert decode_image(img, PixFmt.X1R5G5B5, Resolver()).pixels.tolist() == [[0x7FFF, 0x001F]]
    for fmt in (PixFmt.R5G6B5, PixFmt.A8):
        with pytest.raises(ProtocolError):
            decode_image(img, fmt, Resolver())
    with pytest.raises(ProtocolError):
        decode_image(raw_bitmap(bytes([0, 1]), BitmapFmt.BIT8, 2, 1, 2, palette=None), X, Resolver())


def test_palette_cache() -> None:
    r = Resolver()
    bm = d.BitmapData(
        format=BitmapFmt.BIT8, flags=BitmapFlags.TOP_DOWN | BitmapFlags.PAL_CACHE_ME, x=1, y=1, stride=1,
        palette=d.Palette(unique=77, ents=(0xABCDEF,)), data=b"\x00",
    )  # fmt: skip
    desc = d.ImageDescriptor(id=1, type=ImageType.BITMAP, width=1, height=1)
    assert decode_image(d.Image(descriptor=desc, bitmap=bm), X, r).pixels.tolist() == [[0xABCDEF]]
    assert 77 in r.palettes
    bm2 = d.BitmapData(
        format=BitmapFmt.BIT8, flags=BitmapFlags.TOP_DOWN | BitmapFlags.PAL_FROM_CACHE, x=1, y=1, stride=1,
        palette_id=77, data=b"\x00",
    )  # fmt: skip
    assert decode_image(d.Image(descriptor=desc, bitmap=bm2), X, r).pixels.tolist() == [[0xABCDEF]]


def test_image_cache_keeps_the_original_and_converts_on_use() -> None:
    r = Resolver()
    values = np.array([[0x7C00, 0x001F]], np.uint16)
    img = raw_bitmap(values.tobytes(), BitmapFmt.BIT16, 2, 1, 4, image_id=42)
    img = d.Image(
        descriptor=d.ImageDescriptor(id=42, type=ImageType.BITMAP, flags=ImageFlags.CACHE_ME, width=2, height=1),
        bitmap=img.bitmap,
    )
    assert decode_image(img, X, r).pixels.tolist() == [[0xFFFF0000, 0xFF0000FF]]
    assert r.images[42].format == PixFmt.X1R5G5B5
    cached = d.Image(descriptor=d.ImageDescriptor(id=42, type=ImageType.FROM_CACHE, width=2, height=1))
    assert decode_image(cached, X, r).pixels.tolist() == [[0xFFFF0000, 0xFF0000FF]]
    assert decode_image(cached, PixFmt.X1R5G5B5, r).pixels.tolist() == [[0x7C00, 0x001F]]
    lossless = d.Image(descriptor=d.ImageDescriptor(id=42, type=ImageType.FROM_CACHE_LOSSLESS, width=2, height=1))
    assert decode_image(lossless, X, r).pixels.tolist() == [[0xFFFF0000, 0xFF0000FF]]
    with pytest.raises(ProtocolError):
        decode_image(d.Image(descriptor=d.ImageDescriptor(id=5, type=ImageType.FROM_CACHE, width=1, height=1)), X, r)
    # an operation that draws nothing still feeds the cache ("touch")
    img2 = bitmap32(np.array([[1]], np.uint32), image_id=43, flags=ImageFlags.CACHE_ME)
    touch_image(img2, X, r)
    assert 43 in r.images


@pytest.mark.parametrize("fmt", [BitmapFmt.BIT16, BitmapFmt.BIT24, BitmapFmt.BIT32, BitmapFmt.RGBA])
@pytest.mark.parametrize("top_down", [True, False])
def test_lz4_images(fmt: int, top_down: bool) -> None:
    rng = np.random.default_rng(fmt)
    bpp = {BitmapFmt.BIT16: 2, BitmapFmt.BIT24: 3, BitmapFmt.BIT32: 4, BitmapFmt.RGBA: 4}[fmt]
    w, h = 7, 5
    raw = rng.integers(0, 256, (h, w * bpp), dtype=np.uint8)
    if fmt == BitmapFmt.BIT16:
        raw[:, 1::2] &= 0x7F
    stream = encode_lz4(raw, w, h, fmt, w * bpp, top_down=top_down)
    lz4 = d.Image(
        descriptor=d.ImageDescriptor(id=0, type=ImageType.LZ4, width=w, height=h), lz4=d.BinaryData(data=stream)
    )
    bitmap = raw_bitmap(raw.tobytes(), fmt, w, h, w * bpp, top_down=top_down)
    got = decode_image(lz4, X, Resolver())
    want = decode_image(bitmap, X, Resolver())
    if fmt == BitmapFmt.BIT24:
        assert (got.pixels == (want.pixels | 0xFF000000)).all()  # r8g8b8 converts with alpha 0xff
    else:
        assert (got.pixels == want.pixels).all()
        assert got.format == want.format


@pytest.mark.parametrize("t", [ImageType.QUIC, ImageType.LZ_RGB, ImageType.GLZ_RGB, ImageType.JPEG])
def test_malformed_codec_payloads_raise_protocol_error(t: int) -> None:
    img = d.Image(
        descriptor=d.ImageDescriptor(id=0, type=t, width=1, height=1),
        quic=d.BinaryData(data=b"x") if t == ImageType.QUIC else None,
        lz_rgb=d.BinaryData(data=b"x") if t in (ImageType.LZ_RGB, ImageType.GLZ_RGB) else None,
        jpeg=d.BinaryData(data=b"x") if t == ImageType.JPEG else None,
    )
    with pytest.raises(ProtocolError):
        decode_image(img, X, Resolver())


def test_codec_images_decode_like_the_client() -> None:
    """QUIC, LZ_RGB, LZ_PLT, GLZ_RGB and JPEG images give the pixels they were made from."""
    from spiceserver.codecs.glz import GlzDecoderWindow, GlzDictionary, encode_glz
    from spiceserver.codecs.jpeg import encode_jpeg
    from spiceserver.codecs.lz import LzImageType, encode_lz
    from spiceserver.codecs.quic import encode_quic

    rng = np.random.default_rng(5)
    px = (rng.integers(0, 1 << 24, (9, 13), dtype=np.uint32) & 0xF0F0F0).astype(np.uint32)
    raw = px.astype("<u4").tobytes()

    class R(Resolver):  # type: ignore[misc]
        window = GlzDecoderWindow()

        def glz_window(self) -> GlzDecoderWindow:
            return self.window

    def desc(t: int) -> d.ImageDescriptor:
        return d.ImageDescriptor(id=0, type=t, width=13, height=9)

    cases = [
        d.Image(descriptor=desc(ImageType.QUIC), quic=d.BinaryData(data=encode_quic(px, "rgb32"))),
        d.Image(descriptor=desc(ImageType.LZ_RGB), lz_rgb=d.BinaryData(data=encode_lz(raw, LzImageType.RGB32, width=13, height=9, stride=52))),
        d.Image(descriptor=desc(ImageType.GLZ_RGB), lz_rgb=d.BinaryData(data=encode_glz(GlzDictionary(1 << 16), raw, LzImageType.RGB32, 13, 9, 52))),
    ]
    r = R()
    for img in cases:
        got = decode_image(img, X, r)
        assert (got.pixels & 0xFFFFFF == px).all(), img.descriptor.type
    idx = (np.arange(13 * 9) % 4).astype(np.uint8).reshape(9, 13)
    ents = (0x112233, 0x445566, 0x778899, 0xAABBCC)
    plt = d.Image(
        descriptor=desc(ImageType.LZ_PLT),
        lz_plt=d.LZPLTData(flags=BitmapFlags.TOP_DOWN, palette=d.Palette(unique=0, ents=ents), data=encode_lz(idx.tobytes(), LzImageType.PLT8, width=13, height=9, stride=13)),
    )
    assert (decode_image(plt, X, r).pixels & 0xFFFFFF == np.array(ents, np.uint32)[idx]).all()
    jpeg = decode_image(d.Image(descriptor=desc(ImageType.JPEG), jpeg=d.BinaryData(data=encode_jpeg(px))), X, r)
    assert jpeg.pixels.shape == (9, 13)
    # an 8-bit alpha bitmap goes LZ_RGB with the LZ type A8 (libspice; spice-common canvas_get_lz takes it)
    alpha = (px & 0xFF).astype(np.uint8)
    a8 = d.Image(descriptor=desc(ImageType.LZ_RGB), lz_rgb=d.BinaryData(data=encode_lz(alpha.tobytes(), LzImageType.A8, width=13, height=9, stride=13)))
    assert (decode_image(a8, PixFmt.A8, r).pixels == alpha).all()


def test_malformed_bitmaps() -> None:
    with pytest.raises(ProtocolError):
        decode_image(raw_bitmap(b"\0" * 7, BitmapFmt.BIT32, 2, 1, 8), X, Resolver())
    with pytest.raises(ProtocolError):
        decode_image(raw_bitmap(b"\0" * 8, BitmapFmt.BIT32, 2, 1, 4), X, Resolver())  # stride < row
    with pytest.raises(ProtocolError):
        decode_image(raw_bitmap(b"\0" * 8, 99, 2, 1, 8), X, Resolver())
    with pytest.raises(ProtocolError):
        decode_image(d.Image(descriptor=d.ImageDescriptor(id=0, type=77, width=1, height=1)), X, Resolver())


def test_surface_images_and_masks() -> None:
    c = Canvas(3, 2)
    c.pixels[...] = 7
    r = Resolver({5: c})
    assert (decode_image(surface_image(5), X, r).pixels == 7).all()
    with pytest.raises(ProtocolError):
        decode_image(surface_image(6), X, r)
    bits = np.array([[1, 0, 1, 1, 0, 0, 0, 0, 1], [0, 1, 1, 0, 0, 1, 0, 1, 0]], np.uint8)
    for big in (False, True):
        for top_down in (True, False):
            m = decode_mask(mask_image(bits, top_down=top_down, big_endian=big), False, r)
            assert (m == bits.astype(bool)).all()
            assert (
                decode_mask(mask_image(bits, top_down=top_down, big_endian=big), True, r) == ~bits.astype(bool)
            ).all()
    with pytest.raises(ProtocolError):
        decode_mask(bitmap32(np.zeros((1, 1), np.uint32)), False, r)


def test_canvas_formats_and_png(tmp_path: object) -> None:
    import io

    from PIL import Image as PILImage

    for fmt, dtype in ((SurfaceFmt.FMT_32_XRGB, np.uint32), (SurfaceFmt.FMT_32_ARGB, np.uint32), (SurfaceFmt.FMT_16_555, np.uint16),
                       (SurfaceFmt.FMT_16_565, np.uint16), (SurfaceFmt.FMT_8_A, np.uint8), (SurfaceFmt.FMT_1_A, np.uint8)):  # fmt: skip
        c = Canvas(4, 3, fmt)
        assert c.pixels.dtype == dtype and c.pixels.shape == (3, 4)
        buf = io.BytesIO()
        c.to_png(buf)
        assert PILImage.open(io.BytesIO(buf.getvalue())).size == (4, 3)
    c = Canvas(4, 3)
    c.pixels[1, 2] = 0xAB123456
    buf = io.BytesIO()
    c.to_png(buf)
    img = PILImage.open(io.BytesIO(buf.getvalue()))
    assert img.mode == "RGB" and img.getpixel((2, 1)) == (0x12, 0x34, 0x56)
    argb = Canvas(2, 2, SurfaceFmt.FMT_32_ARGB)
    argb.pixels[0, 0] = 0x80402010
    buf = io.BytesIO()
    argb.to_png(buf)
    assert PILImage.open(io.BytesIO(buf.getvalue())).getpixel((0, 0)) == (0x40, 0x20, 0x10, 0x80)
    assert c.read((1, 0, 3, 2)).tolist() == [[0, 0], [0, 0xAB123456]]
    assert c.read((-5, -5, 100, 100)).shape == (3, 4)
    with pytest.raises(ValueError):
        Canvas(0, 3)
    with pytest.raises(NotSupportedError):
        Canvas(2, 2, 55)
    assert Pixmap(np.zeros((2, 3), np.uint32), X).width == 3
