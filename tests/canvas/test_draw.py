"""Draw operations on small canvases against hand-computed pixels (spice-common canvas semantics)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.canvas import Canvas, render, render_op
from spiceserver.canvas.rop import Ropd
from spiceserver.errors import ProtocolError
from spiceserver.proto.enums import BitmapFmt, ImageType, SurfaceFmt
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Point, Point16, Transform

from .helpers import NO_BRUSH, Resolver, base, bitmap32, mask_image, pattern, qmask, rect, solid, surface_image

PUT = Ropd.OP_PUT


def canvas_with(values: np.ndarray, fmt: int = SurfaceFmt.FMT_32_XRGB) -> Canvas:
    c = Canvas(values.shape[1], values.shape[0], fmt)
    c.pixels[...] = values
    return c


def ramp(h: int, w: int, base_value: int = 0) -> np.ndarray:
    return (np.arange(h * w, dtype=np.uint32).reshape(h, w) + base_value).astype(np.uint32)


# --- fill ------------------------------------------------------------------------------------


def test_fill_solid_box_and_clip() -> None:
    c = Canvas(10, 8)
    clip = [(0, 0, 4, 4), (6, 5, 20, 20)]
    render_op(c, base(2, 1, 8, 7, clip), d.Fill(brush=solid(0xFF00AA), rop_descriptor=PUT), Resolver())
    expected = np.zeros((8, 10), np.uint32)
    expected[1:4, 2:4] = 0xFF00AA
    expected[5:7, 6:8] = 0xFF00AA
    assert (c.pixels == expected).all()


def test_fill_box_outside_canvas_and_inverted_box() -> None:
    c = Canvas(4, 4)
    render_op(c, base(-3, -3, 2, 2), d.Fill(brush=solid(0x010203), rop_descriptor=PUT), Resolver())
    assert c.pixels[:2, :2].tolist() == [[0x010203] * 2] * 2 and c.pixels.sum() == 4 * 0x010203
    render_op(c, base(3, 3, 1, 1), d.Fill(brush=solid(0xFFFFFF), rop_descriptor=PUT), Resolver())  # empty
    assert c.pixels.sum() == 4 * 0x010203


@pytest.mark.parametrize(
    ("desc", "fn"),
    [
        (Ropd.OP_OR, lambda b, dv: b | dv),
        (Ropd.OP_AND, lambda b, dv: b & dv),
        (Ropd.OP_XOR, lambda b, dv: b ^ dv),
        (Ropd.OP_XOR | Ropd.INVERS_BRUSH, lambda b, dv: ~b ^ dv),
        (Ropd.OP_AND | Ropd.INVERS_DEST, lambda b, dv: b & ~dv),
        (Ropd.OP_OR | Ropd.INVERS_RES, lambda b, dv: ~(b | dv)),
        (Ropd.OP_PUT | Ropd.INVERS_BRUSH, lambda b, dv: ~b),
        (Ropd.OP_PUT | Ropd.INVERS_SRC, lambda b, dv: b),  # Fill has no SRC operand
        (Ropd.OP_BLACKNESS, lambda b, dv: 0),
        (Ropd.OP_WHITENESS, lambda b, dv: 0xFFFFFFFF),
        (Ropd.OP_INVERS, lambda b, dv: ~dv),
    ],
)
def test_fill_rop_descriptors(desc: int, fn: object) -> None:
    start = ramp(3, 4, 0x12345600)
    c = canvas_with(start)
    color = 0x00F0F0F0
    render_op(c, base(0, 0, 4, 3), d.Fill(brush=solid(color), rop_descriptor=desc), Resolver())
    expected = np.array([[fn(color, int(v)) & 0xFFFFFFFF for v in row] for row in start], np.uint32)  # type: ignore[operator]
    assert (c.pixels == expected).all()


def test_fill_none_brush_uses_colour_zero() -> None:
    c = canvas_with(ramp(2, 2, 5))
    render_op(c, base(0, 0, 2, 2), d.Fill(brush=NO_BRUSH, rop_descriptor=Ropd.OP_INVERS), Resolver())
    assert (c.pixels == ~ramp(2, 2, 5)).all()
    render_op(c, base(0, 0, 2, 2), d.Fill(brush=NO_BRUSH, rop_descriptor=PUT), Resolver())
    assert (c.pixels == 0).all()


def test_fill_pattern_tiles_from_pattern_position() -> None:
    tile = np.array([[1, 2, 3], [4, 5, 6]], np.uint32)
    c = Canvas(7, 5)
    render_op(c, base(1, 1, 7, 5), d.Fill(brush=pattern(bitmap32(tile), 2, 3), rop_descriptor=PUT), Resolver())
    for y in range(5):
        for x in range(7):
            want = tile[(y - 3) % 2, (x - 2) % 3] if x >= 1 and y >= 1 else 0
            assert c.pixels[y, x] == want, (x, y)
    # a pattern from another surface, through XOR
    src = canvas_with(tile)
    c2 = canvas_with(np.full((2, 3), 0xF, np.uint32))
    render_op(
        c2, base(0, 0, 3, 2), d.Fill(brush=pattern(surface_image(9)), rop_descriptor=Ropd.OP_XOR), Resolver({9: src})
    )
    assert (c2.pixels == (tile ^ 0xF)).all()


def test_fill_on_16bit_canvas_truncates_the_colour() -> None:
    c = Canvas(3, 1, SurfaceFmt.FMT_16_555)
    render_op(c, base(0, 0, 2, 1), d.Fill(brush=solid(0x12347C1F), rop_descriptor=PUT), Resolver())
    assert c.pixels.tolist() == [[0x7C1F, 0x7C1F, 0]]
    a8 = Canvas(2, 1, SurfaceFmt.FMT_8_A)
    render_op(a8, base(0, 0, 2, 1), d.Fill(brush=solid(0x123480), rop_descriptor=PUT), Resolver())
    assert a8.pixels.tolist() == [[0x80, 0x80]]


MASK = np.array(
    [
        [1, 0, 0, 1],
        [0, 1, 1, 0],
        [1, 1, 0, 0],
    ],
    np.uint8,
)


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("top_down", [False, True])
@pytest.mark.parametrize("invers", [False, True])
def test_fill_through_qmask(big_endian: bool, top_down: bool, invers: bool) -> None:
    c = Canvas(8, 6)
    m = qmask(mask_image(MASK, top_down=top_down, big_endian=big_endian), x=1, y=1, invers=invers)
    # box at (2, 2); dest (x, y) reads mask (x - 2 + 1, y - 2 + 1)
    render_op(c, base(2, 2, 8, 6), d.Fill(brush=solid(0xAB), rop_descriptor=PUT, mask=m), Resolver())
    expected = np.zeros((6, 8), np.uint32)
    for y in range(2, 6):
        for x in range(2, 8):
            mx, my = x - 1, y - 1
            if 0 <= mx < 4 and 0 <= my < 3 and bool(MASK[my, mx]) != invers:
                expected[y, x] = 0xAB
    assert (c.pixels == expected).all()


def test_blackness_whiteness_invers_with_mask() -> None:
    start = ramp(3, 4, 0x00808000)
    m = qmask(mask_image(MASK))
    for op, fn in (
        (d.Blackness(mask=m), lambda v: 0),
        (d.Whiteness(mask=m), lambda v: 0xFFFFFFFF),
        (d.Invers(mask=m), lambda v: ~v & 0xFFFFFFFF),
    ):
        c = canvas_with(start)
        render_op(c, base(0, 0, 4, 3), op, Resolver())  # type: ignore[arg-type]
        expected = np.where(MASK == 1, np.vectorize(fn, otypes=[np.uint32])(start), start)
        assert (c.pixels == expected).all()


# --- copy / blend / opaque -------------------------------------------------------------------

SRC = np.array([[0x11, 0x22, 0x33], [0x44, 0x55, 0x66]], np.uint32) | np.uint32(0x00AA0000)


def test_copy_same_size_with_src_area_and_source_clipping() -> None:
    c = Canvas(6, 4)
    c.pixels[...] = 0x99
    # src_area starts at (1, 0) and runs 3 wide: the last column falls outside the 3-wide image
    render_op(
        c,
        base(2, 1, 5, 3),
        d.Copy(src_bitmap=bitmap32(SRC), src_area=rect(1, 0, 4, 2), rop_descriptor=PUT, scale_mode=1),
        Resolver(),
    )
    expected = np.full((4, 6), 0x99, np.uint32)
    expected[1:3, 2:4] = SRC[:, 1:3]
    assert (c.pixels == expected).all()


@pytest.mark.parametrize("msg_type", [d.DrawCopy, d.DrawBlend])
def test_copy_and_blend_rops(msg_type: type) -> None:
    start = np.full((2, 3), 0x0F0F0F0F, np.uint32)
    for desc, fn in (
        (PUT | Ropd.INVERS_SRC, lambda s, v: ~s),
        (Ropd.OP_XOR, lambda s, v: s ^ v),
        (Ropd.OP_AND | Ropd.INVERS_DEST, lambda s, v: s & ~v),
        (Ropd.OP_OR | Ropd.INVERS_BRUSH, lambda s, v: s | v),  # INVERS_BRUSH means nothing to a copy
    ):
        c = canvas_with(start)
        body = (d.Copy if msg_type is d.DrawCopy else d.Blend)(
            src_bitmap=bitmap32(SRC), src_area=rect(0, 0, 3, 2), rop_descriptor=desc, scale_mode=1
        )
        render(c, msg_type(base=base(0, 0, 3, 2), data=body), Resolver())
        assert (c.pixels == (fn(SRC, start) & 0xFFFFFFFF)).all()  # type: ignore[no-untyped-call]


def test_copy_scaled_nearest() -> None:
    src = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.uint32)
    up = Canvas(8, 4)
    render_op(
        up,
        base(0, 0, 8, 4),
        d.Copy(src_bitmap=bitmap32(src), src_area=rect(0, 0, 4, 2), rop_descriptor=PUT, scale_mode=1),
        Resolver(),
    )
    assert (up.pixels == np.repeat(np.repeat(src, 2, 0), 2, 1)).all()
    down = Canvas(2, 1)
    # 4x2 -> 2x1: samples at source x = 1.0 - e and 3.0 - e -> pixels 0 and 2; y = 1.0 - e -> row 0
    render_op(
        down,
        base(0, 0, 2, 1),
        d.Copy(src_bitmap=bitmap32(src), src_area=rect(0, 0, 4, 2), rop_descriptor=PUT, scale_mode=1),
        Resolver(),
    )
    assert down.pixels.tolist() == [[1, 3]]
    # a scaled copy writes transparent black where it samples outside the image
    out = Canvas(4, 1)
    out.pixels[...] = 9
    render_op(
        out,
        base(0, 0, 4, 1),
        d.Copy(src_bitmap=bitmap32(src), src_area=rect(2, 0, 6, 2), rop_descriptor=PUT, scale_mode=1),
        Resolver(),
    )
    assert out.pixels.tolist() == [[3, 4, 0, 0]]


def test_copy_scaled_interpolate_is_pixman_bilinear() -> None:
    src = np.array([[0x00000000, 0x00C80064]], np.uint32)  # R, B channels: 0 then 200 / 100
    c = Canvas(4, 1)
    render_op(
        c,
        base(0, 0, 4, 1),
        d.Copy(src_bitmap=bitmap32(src), src_area=rect(0, 0, 2, 1), rop_descriptor=PUT, scale_mode=0),
        Resolver(),
    )

    # sample x = 0.25, 0.75, 1.25, 1.75; minus 1/2 -> left pixel, weight of the right one in 1/128:
    # -0.25 -> (-1, 96); 0.25 -> (0, 32); 0.75 -> (0, 96); 1.25 -> (1, 32) (right pixel outside: 0)
    # vertically the single row gets weight 128 (y = 0.5 - 0.5 = 0)
    def channel(left: int, right: int, w: int) -> int:
        return (left * (128 - w) * 128 + right * w * 128) >> 14

    expect = []
    for lpix, rpix, w in ((0, 0, 96), (0, 1, 32), (0, 1, 96), (1, None, 32)):
        lv = int(src[0, lpix]) if lpix is not None else 0
        rv = int(src[0, rpix]) if rpix is not None else 0
        px = 0
        for shift in (0, 8, 16, 24):
            px |= channel((lv >> shift) & 0xFF, (rv >> shift) & 0xFF, w) << shift
        expect.append(px)
    assert c.pixels.tolist() == [expect]


def test_copy_scaled_with_rop_and_clip() -> None:
    src = np.array([[0xF0, 0x0F]], np.uint32)
    c = canvas_with(np.full((1, 4), 0xFF, np.uint32))
    render_op(
        c,
        base(0, 0, 4, 1, [(1, 0, 3, 1)]),
        d.Copy(src_bitmap=bitmap32(src), src_area=rect(0, 0, 2, 1), rop_descriptor=Ropd.OP_XOR, scale_mode=1),
        Resolver(),
    )
    assert c.pixels.tolist() == [[0xFF, 0xFF ^ 0xF0, 0xFF ^ 0x0F, 0xFF]]


def test_copy_from_surface_and_masked_copy() -> None:
    other = canvas_with(ramp(3, 3, 100))
    c = Canvas(3, 3)
    m = qmask(mask_image(np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], np.uint8)))
    render_op(
        c,
        base(0, 0, 3, 3),
        d.Copy(src_bitmap=surface_image(1), src_area=rect(0, 0, 3, 3), rop_descriptor=PUT, scale_mode=1, mask=m),
        Resolver({1: other}),
    )
    assert (c.pixels == np.where(np.eye(3) + np.fliplr(np.eye(3)) > 0, ramp(3, 3, 100), 0)).all()


def test_opaque_draws_image_then_brush_with_rop() -> None:
    c = Canvas(3, 2)
    # Opaque: the brush plays "src", the image "dest": OP_AND | INVERS_SRC inverts the image
    op = d.Opaque(
        src_bitmap=bitmap32(SRC),
        src_area=rect(0, 0, 3, 2),
        brush=solid(0x00FF00FF),
        rop_descriptor=Ropd.OP_AND | Ropd.INVERS_SRC,
        scale_mode=1,
    )
    render_op(c, base(0, 0, 3, 2), op, Resolver())
    assert (c.pixels == (0x00FF00FF & ~SRC)).all()
    op = d.Opaque(
        src_bitmap=bitmap32(SRC),
        src_area=rect(0, 0, 3, 2),
        brush=solid(0x00FF00FF),
        rop_descriptor=Ropd.OP_OR | Ropd.INVERS_BRUSH,
        scale_mode=1,
    )
    render_op(c, base(0, 0, 3, 2), op, Resolver())
    assert (c.pixels == ((~np.uint32(0x00FF00FF)) | SRC)).all()


# --- rop3 ------------------------------------------------------------------------------------


def test_rop3_with_colour_and_pattern() -> None:
    start = np.full((2, 3), 0x0000FFFF, np.uint32)
    c = canvas_with(start)
    # 0xCA = DPSDxax = ((d ^ s) & p) ^ d: take src where the pattern bit is 1
    op = d.Rop3(src_bitmap=bitmap32(SRC), src_area=rect(0, 0, 3, 2), brush=solid(0x00FF00FF), rop3=0xCA, scale_mode=1)
    render_op(c, base(0, 0, 3, 2), op, Resolver())
    assert (c.pixels == ((SRC & 0x00FF00FF) | (start & ~np.uint32(0x00FF00FF)))).all()
    # pattern brush: pattern pixel at ((x - pos.x) mod w, (y - pos.y) mod h); 0xF0 = copy pattern (not
    # registered by rop3.c), so use 0xFC = P | S
    tile = np.array([[0x100, 0x200]], np.uint32)
    c = Canvas(4, 2)
    op = d.Rop3(
        src_bitmap=bitmap32(ramp(2, 4)),
        src_area=rect(0, 0, 4, 2),
        brush=pattern(bitmap32(tile), 1, 0),
        rop3=0xFC,
        scale_mode=1,
    )
    with pytest.raises(ProtocolError):
        render_op(c, base(0, 0, 4, 2), op, Resolver())
    op = d.Rop3(
        src_bitmap=bitmap32(ramp(2, 4)),
        src_area=rect(0, 0, 4, 2),
        brush=pattern(bitmap32(tile), 1, 0),
        rop3=0xFE,
        scale_mode=1,
    )
    render_op(c, base(0, 0, 4, 2), op, Resolver())
    pat = np.array([[tile[0, (x - 1) % 2] for x in range(4)]] * 2, np.uint32)
    assert (c.pixels == (pat | ramp(2, 4))).all()


def test_rop3_scaled_and_masked_and_errors() -> None:
    src = np.array([[1, 2], [3, 4]], np.uint32)
    c = Canvas(4, 4)
    m = qmask(mask_image(np.tril(np.ones((4, 4), np.uint8))))
    op = d.Rop3(
        src_bitmap=bitmap32(src), src_area=rect(0, 0, 2, 2), brush=solid(0), rop3=0xEE, scale_mode=1, mask=m
    )  # 0xEE = S | D, not registered
    with pytest.raises(ProtocolError):
        render_op(c, base(0, 0, 4, 4), op, Resolver())
    op = d.Rop3(src_bitmap=bitmap32(src), src_area=rect(0, 0, 2, 2), brush=solid(0), rop3=0xFE, scale_mode=1, mask=m)
    render_op(c, base(0, 0, 4, 4), op, Resolver())
    assert (c.pixels == np.where(np.tril(np.ones((4, 4))) > 0, np.repeat(np.repeat(src, 2, 0), 2, 1), 0)).all()
    too_far = d.Rop3(src_bitmap=bitmap32(src), src_area=rect(1, 0, 3, 2), brush=solid(0), rop3=0xFE, scale_mode=1)
    with pytest.raises(ProtocolError):
        render_op(c, base(0, 0, 2, 2), too_far, Resolver())


# --- transparent, alpha blend, composite ------------------------------------------------------


def test_transparent_skips_the_key_colour_ignoring_x() -> None:
    src = np.array([[0xFF123456, 0x00ABCDEF, 0x77123456]], np.uint32)
    c = canvas_with(np.full((1, 3), 7, np.uint32))
    op = d.Transparent(src_bitmap=bitmap32(src), src_area=rect(0, 0, 3, 1), src_color=0, true_color=0x00123456)
    render_op(c, base(0, 0, 3, 1), op, Resolver())
    assert c.pixels.tolist() == [[7, 0x00ABCDEF, 7]]
    # scaled (always nearest): 3 -> 6
    c = canvas_with(np.full((1, 6), 7, np.uint32))
    op = d.Transparent(src_bitmap=bitmap32(src), src_area=rect(0, 0, 3, 1), src_color=0, true_color=0x00ABCDEF)
    render_op(c, base(0, 0, 6, 1), op, Resolver())
    assert c.pixels.tolist() == [[0xFF123456, 0xFF123456, 7, 7, 0x77123456, 0x77123456]]
    # 16-bit canvas: the key is converted to 555
    c16 = Canvas(2, 1, SurfaceFmt.FMT_16_555)
    img16 = d.Image(
        descriptor=d.ImageDescriptor(id=0, type=ImageType.BITMAP, width=2, height=1),
        bitmap=d.BitmapData(
            format=BitmapFmt.BIT16, flags=4, x=2, y=1, stride=4, data=np.array([0x7C00, 0x001F], np.uint16).tobytes()
        ),
    )
    render_op(
        c16,
        base(0, 0, 2, 1),
        d.Transparent(src_bitmap=img16, src_area=rect(0, 0, 2, 1), src_color=0, true_color=0xFF0000),
        Resolver(),
    )
    assert c16.pixels.tolist() == [[0, 0x001F]]


def mul(a: int, b: int) -> int:
    t = a * b + 0x80
    return (t + (t >> 8)) >> 8


def over(s: int, dv: int, m: int = 255) -> int:
    out = 0
    sa = mul(s >> 24, m)
    for shift in (0, 8, 16, 24):
        sc = mul((s >> shift) & 0xFF, m)
        out |= min(255, sc + mul((dv >> shift) & 0xFF, 255 - sa)) << shift
    return out


def test_alpha_blend_rgba_over_xrgb() -> None:
    src = np.array([[0x80402010, 0xFF112233]], np.uint32)
    start = np.array([[0x00FFFFFF, 0x00445566]], np.uint32)
    for alpha in (255, 128):
        c = canvas_with(start)
        op = d.AlphaBlend(
            alpha_flags=0, alpha=alpha, src_bitmap=bitmap32(src, fmt=BitmapFmt.RGBA), src_area=rect(0, 0, 2, 1)
        )
        render_op(c, base(0, 0, 2, 1), op, Resolver())
        expected = [over(int(s), int(v), alpha) for s, v in zip(src[0], start[0], strict=True)]
        # the first pixel's computed alpha is not 0xff, so clear_dest_alpha leaves the X bytes alone
        assert c.pixels.tolist() == [expected]
    c = canvas_with(start)
    render_op(
        c,
        base(0, 0, 2, 1),
        d.AlphaBlend(alpha_flags=0, alpha=0, src_bitmap=bitmap32(src, fmt=BitmapFmt.RGBA), src_area=rect(0, 0, 2, 1)),
        Resolver(),
    )
    assert (c.pixels == start).all()


def test_alpha_blend_clear_dest_alpha_and_flags() -> None:
    src = np.array([[0xFF010203, 0x80000000]], np.uint32)
    c = canvas_with(np.array([[0x00FFFFFF, 0x00FFFFFF]], np.uint32))
    render_op(
        c,
        base(0, 0, 2, 1),
        d.AlphaBlend(alpha_flags=0, alpha=255, src_bitmap=bitmap32(src, fmt=BitmapFmt.RGBA), src_area=rect(0, 0, 2, 1)),
        Resolver(),
    )
    # first pixel ends with alpha 0xff -> the whole box gets its X byte cleared
    assert c.pixels.tolist() == [[0x00010203, over(0x80000000, 0x00FFFFFF) & 0xFFFFFF]]
    # DEST_HAS_ALPHA: the canvas is treated as ARGB and keeps the computed alpha
    c = canvas_with(np.array([[0x00FFFFFF, 0x00FFFFFF]], np.uint32))
    render_op(
        c,
        base(0, 0, 2, 1),
        d.AlphaBlend(alpha_flags=1, alpha=255, src_bitmap=bitmap32(src, fmt=BitmapFmt.RGBA), src_area=rect(0, 0, 2, 1)),
        Resolver(),
    )
    assert c.pixels.tolist() == [[0xFF010203, over(0x80000000, 0x00FFFFFF)]]
    # SRC_SURFACE_HAS_ALPHA: an xRGB surface's X bytes act as alpha
    other = canvas_with(np.array([[0x00102030, 0xFF405060]], np.uint32))
    c = canvas_with(np.array([[0x00AAAAAA, 0x00AAAAAA]], np.uint32))
    render_op(
        c,
        base(0, 0, 2, 1),
        d.AlphaBlend(alpha_flags=2, alpha=255, src_bitmap=surface_image(3), src_area=rect(0, 0, 2, 1)),
        Resolver({3: other}),
    )
    assert c.pixels.tolist() == [[over(0x00102030, 0x00AAAAAA), over(0xFF405060, 0x00AAAAAA)]]


def test_alpha_blend_scaled_is_nearest() -> None:
    src = np.array([[0xFF0000FF, 0xFF00FF00]], np.uint32)
    c = Canvas(4, 1)
    render_op(
        c,
        base(0, 0, 4, 1),
        d.AlphaBlend(alpha_flags=1, alpha=255, src_bitmap=bitmap32(src, fmt=BitmapFmt.RGBA), src_area=rect(0, 0, 2, 1)),
        Resolver(),
    )
    assert c.pixels.tolist() == [[0xFF0000FF, 0xFF0000FF, 0xFF00FF00, 0xFF00FF00]]


def test_composite_over_src_add_with_transform_and_repeat() -> None:
    argb = Canvas(4, 2, SurfaceFmt.FMT_32_ARGB)
    argb.pixels[...] = 0x80808080
    src = np.array([[0xFF0000FF, 0x00000000]], np.uint32)
    img = bitmap32(src, fmt=BitmapFmt.RGBA)
    # OVER, identity, REPEAT_NORMAL (bits 14-15 = 1), src origin (1, 0)
    flags = 3 | (1 << 14)
    render_op(
        argb,
        base(0, 0, 4, 2),
        d.Composite(flags=flags, src_bitmap=img, src_origin=Point16(x=1, y=0), mask_origin=Point16(x=0, y=0)),
        Resolver(),
    )
    row = [0x80808080, 0xFF0000FF, 0x80808080, 0xFF0000FF]
    assert argb.pixels.tolist() == [row, row]
    # SRC with a translate transform (integer, so exact), REPEAT_NONE: outside the source is cleared
    t = Transform(t00=1 << 16, t01=0, t02=-(1 << 16) & 0xFFFFFFFF, t10=0, t11=1 << 16, t12=0)
    flags = 1 | (1 << 20)
    argb.pixels[...] = 0x80808080
    render_op(
        argb,
        base(0, 0, 4, 1),
        d.Composite(
            flags=flags, src_bitmap=img, src_transform=t, src_origin=Point16(x=0, y=0), mask_origin=Point16(x=0, y=0)
        ),
        Resolver(),
    )
    assert argb.pixels[0].tolist() == [0, 0xFF0000FF, 0, 0]
    # ADD through an a8 mask from a surface
    mask_surface = Canvas(4, 1, SurfaceFmt.FMT_8_A)
    mask_surface.pixels[...] = [[0, 255, 128, 64]]
    argb.pixels[...] = 0x10101010
    solid_img = bitmap32(np.array([[0x40404040]], np.uint32), fmt=BitmapFmt.RGBA)
    flags = 0x0C | (1 << 14) | (1 << 19)
    render_op(
        argb,
        base(0, 0, 4, 1),
        d.Composite(
            flags=flags,
            src_bitmap=solid_img,
            mask_bitmap=surface_image(4),
            src_origin=Point16(x=0, y=0),
            mask_origin=Point16(x=0, y=0),
        ),
        Resolver({4: mask_surface}),
    )
    assert argb.pixels[0].tolist() == [0x10101010 + mul(0x40, m) * 0x01010101 for m in (0, 255, 128, 64)]


# --- copy bits -------------------------------------------------------------------------------


@pytest.mark.parametrize(("dx", "dy"), [(1, 0), (-1, 0), (0, 1), (0, -1), (2, 1), (-2, -1), (1, -2), (-1, 2)])
def test_copy_bits_overlapping_both_directions(dx: int, dy: int) -> None:
    start = ramp(6, 7, 1)
    c = canvas_with(start)
    box = (1, 1, 6, 5)
    clip = [(0, 0, 7, 3), (3, 3, 7, 6)]
    render(c, d.CopyBits(base=base(*box, clip), src_pos=Point(x=box[0] - dx, y=box[1] - dy)), Resolver())
    expected = start.copy()
    for y in range(box[1], box[3]):
        for x in range(box[0], box[2]):
            inside_clip = any(cx1 <= x < cx2 and cy1 <= y < cy2 for cx1, cy1, cx2, cy2 in clip)
            sx, sy = x - dx, y - dy
            if inside_clip and 0 <= sx < 7 and 0 <= sy < 6:
                expected[y, x] = start[sy, sx]
    assert (c.pixels == expected).all()


def test_copy_bits_from_outside_the_canvas_is_skipped() -> None:
    start = ramp(3, 3, 1)
    c = canvas_with(start)
    render(c, d.CopyBits(base=base(0, 0, 3, 3), src_pos=Point(x=-1, y=0)), Resolver())
    expected = start.copy()
    expected[:, 1:] = start[:, :2]
    assert (c.pixels == expected).all()


# --- text ------------------------------------------------------------------------------------


def glyph_a1(rows_top_first: list[str], x: int, y: int, ox: int = 0, oy: int = 0) -> d.RasterGlyphA1:
    h, w = len(rows_top_first), len(rows_top_first[0])
    bits = np.array([[c == "#" for c in r] for r in rows_top_first], np.uint8)[::-1]  # stored bottom-up
    data = np.packbits(bits, axis=1, bitorder="big").tobytes()
    return d.RasterGlyphA1(render_pos=Point(x=x, y=y), glyph_origin=Point(x=ox, y=oy), width=w, height=h, data=data)


def text(glyphs: tuple[d.RasterGlyph, ...], flags: int, fore: d.Brush, back: d.Brush = NO_BRUSH,
         back_area: tuple[int, int, int, int] = (0, 0, 0, 0), fore_mode: int = PUT) -> d.Text:  # fmt: skip
    return d.Text(
        str=d.String(flags=flags, glyphs=glyphs), back_area=rect(*back_area), fore_brush=fore, back_brush=back,
        fore_mode=fore_mode, back_mode=PUT,
    )  # fmt: skip


def test_text_a1_glyphs_with_back_area() -> None:
    c = Canvas(10, 6)
    g1 = glyph_a1(["#..", "#..", "###"], 1, 1)
    g2 = glyph_a1(["##", "#."], 4, 3, ox=1, oy=-1)  # box at (5, 2)
    op = text((g1, g2), 1, solid(0x00FF0000), solid(0x000000FF), back_area=(0, 0, 8, 5))
    render_op(c, base(0, 0, 10, 6), op, Resolver())
    expected = np.zeros((6, 10), np.uint32)
    expected[0:5, 0:8] = 0xFF
    for y, row in enumerate(["#..", "#..", "###"]):
        for x, ch in enumerate(row):
            if ch == "#":
                expected[1 + y, 1 + x] = 0xFFFF0000
    for y, row in enumerate(["##", "#."]):
        for x, ch in enumerate(row):
            if ch == "#":
                expected[2 + y, 5 + x] = 0xFFFF0000
    # clear_dest_alpha: the mask's first pixel (1, 1) got alpha 0xff, so the mask box loses its X bytes
    expected[1:4, 1:7] &= 0x00FFFFFF
    assert (c.pixels == expected).all()


def test_text_a4_and_a8_blend_and_clip() -> None:
    c = Canvas(4, 2)
    c.pixels[...] = 0x00000000
    a4 = d.RasterGlyphA4(
        render_pos=Point(x=0, y=0), glyph_origin=Point(x=0, y=0), width=3, height=1, data=bytes([0xF8, 0x10])
    )
    render_op(c, base(0, 0, 4, 2), text((a4,), 2, solid(0x00FFFFFF)), Resolver())
    # nibbles 15, 8, 1 -> alpha 240, 128, 16 (n << 4), composited OVER black
    assert [v & 0xFFFFFF for v in c.pixels[0, :3]] == [0xF0F0F0, 0x808080, 0x101010]
    c = Canvas(4, 1)
    a8 = d.RasterGlyphA8(
        render_pos=Point(x=0, y=0), glyph_origin=Point(x=0, y=0), width=4, height=1, data=bytes([255, 0, 128, 255])
    )
    render_op(c, base(0, 0, 4, 1, [(0, 0, 3, 1)]), text((a8,), 4, solid(0x00102030)), Resolver())
    assert [v & 0xFFFFFF for v in c.pixels[0]] == [0x102030, 0, over(0xFF102030, 0, 128) & 0xFFFFFF, 0]
    with pytest.raises(ProtocolError):
        render_op(
            c, base(0, 0, 4, 1), text((a8,), 4, solid(1), back_area=(0, 0, 1, 1), fore_mode=Ropd.OP_XOR), Resolver()
        )
    with pytest.raises(ProtocolError):
        render_op(c, base(0, 0, 4, 1), text((), 4, solid(1)), Resolver())


# --- stroke ----------------------------------------------------------------------------------


def path(*polylines: list[tuple[float, float]], close: bool = False) -> d.Path:
    segs = []
    for pts in polylines:
        flags = 1 | 2 | (8 if close else 0)
        segs.append(d.PathSegment(flags=flags, points=tuple(d.PointFix(x=int(x * 16), y=int(y * 16)) for x, y in pts)))
    return d.Path(segments=tuple(segs))


def stroke(p: d.Path, brush: d.Brush, mode: int = PUT) -> d.Stroke:
    return d.Stroke(path=p, attr=d.LineAttr(flags=0), brush=brush, fore_mode=mode, back_mode=PUT)


def reference_zero_line(x1: int, y1: int, x2: int, y2: int) -> list[tuple[int, int]]:
    """miZeroLine's loop for one unclipped segment (endpoint not drawn)."""
    bias = (1 << 3) | (1 << 7) | (1 << 6) | (1 << 4)
    adx, ady = abs(x2 - x1), abs(y2 - y1)
    sx = -1 if x2 < x1 else 1
    sy = -1 if y2 < y1 else 1
    octant = (4 if x2 < x1 else 0) | (2 if y2 < y1 else 0)
    out = []
    x, y = x1, y1
    if adx > ady:
        e1, e2 = ady << 1, (ady << 1) - (adx << 1)
        e = e1 - adx - ((bias >> octant) & 1)
        e3, e = e2 - e1, e - e1
        for _ in range(adx):
            out.append((x, y))
            e += e1
            if e >= 0:
                y += sy
                e += e3
            x += sx
    else:
        octant |= 1
        e1, e2 = adx << 1, (adx << 1) - (ady << 1)
        e = e1 - ady - ((bias >> octant) & 1)
        e3, e = e2 - e1, e - e1
        for _ in range(ady):
            out.append((x, y))
            e += e1
            if e >= 0:
                x += sx
                e += e3
            y += sy
    return out


@settings(max_examples=300, deadline=None)
@given(st.integers(-8, 30), st.integers(-8, 30), st.integers(-8, 30), st.integers(-8, 30))
def test_zero_line_matches_mi_bresenham(x1: int, y1: int, x2: int, y2: int) -> None:
    from spiceserver.canvas.stroke import zero_line_pixels

    xs, ys = zero_line_pixels(x1, y1, x2, y2, 20, 16)
    want = [(x, y) for x, y in reference_zero_line(x1, y1, x2, y2) if 0 <= x < 20 and 0 <= y < 16]
    assert list(zip(xs.tolist(), ys.tolist(), strict=True)) == want


def test_stroke_polyline_solid_and_xor() -> None:
    c = Canvas(8, 6)
    render_op(c, base(0, 0, 8, 6), stroke(path([(0, 0), (5, 0), (5, 3)]), solid(0x123456)), Resolver())
    expected = np.zeros((6, 8), np.uint32)
    expected[0, 0:5] = 0x123456
    expected[0:3, 5] = 0x123456  # (5, 0) starts the second segment; (5, 3), the last point, is not drawn
    assert (c.pixels == expected).all()
    # XOR: a pixel two segments share is flipped twice
    c = Canvas(8, 6)
    render_op(c, base(0, 0, 8, 6), stroke(path([(0, 2), (6, 2), (3, 2), (3, 5)]), solid(0xFF), Ropd.OP_XOR), Resolver())
    row = c.pixels[2].tolist()
    # segment 1 draws x 0..5, segment 2 x 6, 5, 4, segment 3 starts at (3, 2): x 3..5 flip twice
    assert row == [0xFF, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0]
    assert c.pixels[3:5, 3].tolist() == [0xFF, 0xFF]


def test_stroke_closed_path_clip_fixed_point_rounding() -> None:
    c = Canvas(6, 6)
    # 28.4 coordinates: 1 + 9/16 rounds up to 2, 1 + 8/16 stays 1
    p = d.Path(
        segments=(
            d.PathSegment(
                flags=1 | 2 | 8,
                points=(d.PointFix(x=16 + 9, y=16 + 8), d.PointFix(x=4 * 16, y=16 + 8), d.PointFix(x=4 * 16, y=4 * 16)),
            ),
        )
    )
    render_op(c, base(0, 0, 6, 6, [(0, 0, 6, 3)]), stroke(p, solid(1)), Resolver())
    pts = reference_zero_line(2, 1, 4, 1) + reference_zero_line(4, 1, 4, 4) + reference_zero_line(4, 4, 2, 1)
    expected = np.zeros((6, 6), np.uint32)
    for x, y in pts:
        if y < 3:
            expected[y, x] = 1
    assert (c.pixels == expected).all()


def test_stroke_bezier_and_pattern() -> None:
    c = Canvas(12, 12)
    seg = d.PathSegment(
        flags=1 | 2 | 16, points=tuple(d.PointFix(x=x * 16, y=y * 16) for x, y in ((1, 1), (1, 10), (10, 10), (10, 1)))
    )
    render_op(c, base(0, 0, 12, 12), stroke(d.Path(segments=(seg,)), solid(1)), Resolver())
    drawn = set(zip(*np.nonzero(c.pixels), strict=True))
    assert (1, 1) in {(int(x), int(y)) for y, x in drawn}
    assert c.pixels[10:, :].sum() == 0 and c.pixels.sum() > 10  # the curve stays above its control points
    tile = np.array([[7, 9]], np.uint32)
    c = Canvas(6, 1)
    render_op(c, base(0, 0, 6, 1), stroke(path([(0, 0), (6, 0)]), pattern(bitmap32(tile), 1, 0)), Resolver())
    assert c.pixels[0].tolist() == [tile[0, (x - 1) % 2] for x in range(6)]


# --- property: PUT through random clips equals a numpy reference ------------------------------

rects = st.lists(
    st.tuples(st.integers(-3, 14), st.integers(-3, 12), st.integers(-3, 14), st.integers(-3, 12)), max_size=5
)


def clip_mask(
    box: tuple[int, int, int, int], clip: list[tuple[int, int, int, int]] | None, w: int, h: int
) -> np.ndarray:
    m = np.zeros((h, w), bool)
    bl, bt, br, bb = box
    m[max(bt, 0) : max(bb, 0), max(bl, 0) : max(br, 0)] = True
    if clip is not None:
        cm = np.zeros((h, w), bool)
        for x1, y1, x2, y2 in clip:
            if x1 < x2 and y1 < y2:
                cm[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = True
        m &= cm
    return m


@settings(max_examples=150, deadline=None)
@given(
    st.tuples(st.integers(-3, 14), st.integers(-3, 12), st.integers(-3, 14), st.integers(-3, 12)),
    st.one_of(st.none(), rects),
    st.integers(0, 2**32 - 1),
)
def test_fill_put_through_random_clips(
    box: tuple[int, int, int, int], clip: list[tuple[int, int, int, int]] | None, color: int
) -> None:
    w, h = 12, 10
    start = ramp(h, w, 1000)
    c = canvas_with(start)
    render_op(c, base(*box, clip), d.Fill(brush=solid(color), rop_descriptor=PUT), Resolver())
    assert (c.pixels == np.where(clip_mask(box, clip, w, h), np.uint32(color), start)).all()


@settings(max_examples=150, deadline=None)
@given(
    st.tuples(st.integers(-3, 14), st.integers(-3, 12), st.integers(-3, 14), st.integers(-3, 12)),
    st.one_of(st.none(), rects),
    st.integers(-4, 4),
    st.integers(-4, 4),
)
def test_copy_put_through_random_clips(
    box: tuple[int, int, int, int], clip: list[tuple[int, int, int, int]] | None, ox: int, oy: int
) -> None:
    w, h = 12, 10
    start = ramp(h, w, 5000)
    src = ramp(7, 9, 1 << 20)
    c = canvas_with(start)
    left, top, right, bottom = box
    src_area = rect(left + ox, top + oy, right + ox, bottom + oy)
    render_op(
        c,
        base(*box, clip),
        d.Copy(src_bitmap=bitmap32(src), src_area=src_area, rop_descriptor=PUT, scale_mode=1),
        Resolver(),
    )
    expected = start.copy()
    m = clip_mask(box, clip, w, h)
    for y, x in zip(*np.nonzero(m), strict=True):
        sx, sy = x + ox, y + oy
        if 0 <= sx < 9 and 0 <= sy < 7:
            expected[y, x] = src[sy, sx]
    assert (c.pixels == expected).all()


def test_masks_enter_the_cache_even_when_nothing_is_drawn() -> None:
    from spiceserver.proto.enums import ImageFlags

    r = Resolver()
    m = mask_image(MASK)
    m = d.Image(
        descriptor=d.ImageDescriptor(id=7, type=m.descriptor.type, flags=ImageFlags.CACHE_ME, width=4, height=3),
        bitmap=m.bitmap,
    )
    c = Canvas(4, 4)
    render_op(c, base(10, 10, 12, 12), d.Blackness(mask=qmask(m)), r)
    assert 7 in r.images and r.images[7].pixels.tolist() == MASK.tolist()
    # and a later FROM_CACHE mask uses it
    cached = d.Image(descriptor=d.ImageDescriptor(id=7, type=ImageType.FROM_CACHE, width=4, height=3))
    render_op(c, base(0, 0, 4, 3), d.Whiteness(mask=qmask(cached)), r)
    assert (c.pixels[:3] == np.where(MASK == 1, 0xFFFFFFFF, 0)).all()


def test_one_bit_surfaces_only_take_composites() -> None:
    c = Canvas(4, 4, SurfaceFmt.FMT_1_A)
    with pytest.raises(ProtocolError):
        render_op(c, base(0, 0, 4, 4), d.Fill(brush=solid(1), rop_descriptor=PUT), Resolver())
    render(c, d.CopyBits(base=base(0, 0, 4, 4), src_pos=Point(x=1, y=0)), Resolver())  # a no-op, as in the client
    assert c.pixels.sum() == 0
