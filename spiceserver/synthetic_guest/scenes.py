"""SyntheticGuest: the desktop guest plus one ``scene_*`` method per drawing operation."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..proto.enums import (
    BitmapFmt,
    BrushType,
    CompositeFlags,
    LineFlags,
    PathFlags,
)
from ..proto.messages import display as d
from ..proto.messages.base import Point, Point16, PointFix, Rect, Transform
from .guest import _LINES, DesktopGuest
from .helpers import (
    _COMPOSITE_MASK_FILTER_SHIFT,
    _COMPOSITE_SRC_FILTER_SHIFT,
    _COMPOSITE_SRC_REPEAT_SHIFT,
    _NO_RECT,
    FIXED_ONE,
    PIXMAN_FILTER_NEAREST,
    PIXMAN_OP_ADD,
    PIXMAN_OP_OVER,
    PIXMAN_OP_SRC,
    PIXMAN_REPEAT_NORMAL,
    ROPD_AND,
    ROPD_INVERS,
    ROPD_INVERS_BRUSH,
    ROPD_INVERS_DEST,
    ROPD_INVERS_RES,
    ROPD_INVERS_SRC,
    ROPD_OR,
    ROPD_PUT,
    ROPD_WHITENESS,
    ROPD_XOR,
    SCALE_INTERPOLATE,
    SCALE_NEAREST,
    _photo_pixels,
    _premultiplied,
    _rows1be,
    _rows4be,
    _rows16,
    _rows24,
    _rows32,
    bitmap_image,
    rgb,
    surface_image,
    xywh,
)


class SyntheticGuest(DesktopGuest):
    """The desktop guest plus one scene per drawing operation (for the tests and the demo)."""

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
