"""Builders for draw messages and a dictionary-backed ImageResolver, for the canvas tests."""

from __future__ import annotations

import numpy as np

from spiceserver.canvas.images import NullResolver
from spiceserver.canvas.surface import Canvas, Pixmap
from spiceserver.errors import ProtocolError
from spiceserver.proto.enums import BitmapFlags, BitmapFmt, BrushType, ClipType, ImageType
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Point, Rect


def rect(left: int, top: int, right: int, bottom: int) -> Rect:
    return Rect(top=top, left=left, bottom=bottom, right=right)


def base(
    left: int, top: int, right: int, bottom: int, clip: list[tuple[int, int, int, int]] | None = None
) -> d.DisplayBase:
    c = d.Clip()
    if clip is not None:
        c = d.Clip(type=ClipType.RECTS, rects=d.ClipRects(rects=tuple(rect(*r) for r in clip)))
    return d.DisplayBase(surface_id=0, box=rect(left, top, right, bottom), clip=c)


def solid(color: int) -> d.Brush:
    return d.Brush(type=BrushType.SOLID, color=color)


NO_BRUSH = d.Brush(type=BrushType.NONE)


def pattern(image: d.Image, x: int = 0, y: int = 0) -> d.Brush:
    return d.Brush(type=BrushType.PATTERN, pattern=d.Pattern(pat=image, pos=Point(x=x, y=y)))


def bitmap32(
    pixels: np.ndarray, *, fmt: int = BitmapFmt.BIT32, top_down: bool = True, image_id: int = 0, flags: int = 0
) -> d.Image:
    """A 32-bit (BIT32 / RGBA) bitmap image from a (h, w) uint32 array (top row first)."""
    h, w = pixels.shape
    rows = pixels if top_down else pixels[::-1]
    bm = d.BitmapData(
        format=fmt,
        flags=BitmapFlags.TOP_DOWN if top_down else 0,
        x=w,
        y=h,
        stride=w * 4,
        data=np.ascontiguousarray(rows, np.uint32).tobytes(),
    )
    return d.Image(
        descriptor=d.ImageDescriptor(id=image_id, type=ImageType.BITMAP, flags=flags, width=w, height=h), bitmap=bm
    )


def raw_bitmap(
    data: bytes,
    fmt: int,
    width: int,
    height: int,
    stride: int,
    *,
    top_down: bool = True,
    palette: tuple[int, ...] | None = None,
    flags: int = 0,
    image_id: int = 0,
) -> d.Image:
    bm = d.BitmapData(
        format=fmt,
        flags=BitmapFlags.TOP_DOWN if top_down else 0,
        x=width,
        y=height,
        stride=stride,
        palette=d.Palette(unique=1, ents=palette) if palette is not None else None,
        data=data,
    )
    return d.Image(
        descriptor=d.ImageDescriptor(id=image_id, type=ImageType.BITMAP, flags=flags, width=width, height=height),
        bitmap=bm,
    )


def mask_image(bits: np.ndarray, *, top_down: bool = True, big_endian: bool = False) -> d.Image:
    """A 1-bit mask bitmap from a (h, w) array of 0/1 (top row first)."""
    h, w = bits.shape
    rows = bits if top_down else bits[::-1]
    packed = np.packbits(rows.astype(np.uint8), axis=1, bitorder="big" if big_endian else "little")
    return raw_bitmap(
        packed.tobytes(),
        BitmapFmt.BIT1_BE if big_endian else BitmapFmt.BIT1_LE,
        w,
        h,
        packed.shape[1],
        top_down=top_down,
    )


def qmask(image: d.Image | None, x: int = 0, y: int = 0, invers: bool = False) -> d.QMask:
    return d.QMask(flags=1 if invers else 0, pos=Point(x=x, y=y), bitmap=image)


def surface_image(surface_id: int) -> d.Image:
    return d.Image(
        descriptor=d.ImageDescriptor(id=0, type=ImageType.SURFACE, width=0, height=0),
        surface=d.Surface(surface_id=surface_id),
    )


class Resolver(NullResolver):
    def __init__(self, surfaces: dict[int, Canvas] | None = None) -> None:
        self.surfaces = surfaces or {}
        self.images: dict[int, Pixmap] = {}
        self.palettes: dict[int, d.Palette] = {}

    def surface(self, surface_id: int) -> Canvas:
        if surface_id not in self.surfaces:
            raise ProtocolError(f"no surface {surface_id}")
        return self.surfaces[surface_id]

    def cached_image(self, image_id: int) -> Pixmap:
        return self.images[image_id]

    def cached_palette(self, palette_id: int) -> d.Palette:
        return self.palettes[palette_id]

    def cache_image(self, image_id: int, pixmap: Pixmap) -> None:
        self.images[image_id] = pixmap

    def cache_palette(self, palette: d.Palette) -> None:
        self.palettes[palette.unique] = palette
