"""Colours, rectangles, images and rop constants shared by the synthetic guest."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Final

import numpy as np

from ..proto.enums import (
    BitmapFlags,
    ImageFlags,
    ImageType,
)
from ..proto.messages import display as d
from ..proto.messages.base import Rect
from ..qxl.commands import CopyBits
from ..qxl.layout import Effect, Interrupt

# --- rop descriptors (SpiceRopd) and other wire constants ---------------------------------------

ROPD_INVERS_SRC: Final = 1 << 0
ROPD_INVERS_BRUSH: Final = 1 << 1
ROPD_INVERS_DEST: Final = 1 << 2
ROPD_PUT: Final = 1 << 3
ROPD_OR: Final = 1 << 4
ROPD_AND: Final = 1 << 5
ROPD_XOR: Final = 1 << 6
ROPD_BLACKNESS: Final = 1 << 7
ROPD_WHITENESS: Final = 1 << 8
ROPD_INVERS: Final = 1 << 9
ROPD_INVERS_RES: Final = 1 << 10

SCALE_INTERPOLATE: Final = 0
SCALE_NEAREST: Final = 1

#: pixman operators and filters used in DRAW_COMPOSITE flags
PIXMAN_OP_SRC: Final = 0x01
PIXMAN_OP_OVER: Final = 0x03
PIXMAN_OP_ADD: Final = 0x0C
PIXMAN_FILTER_NEAREST: Final = 3
PIXMAN_REPEAT_NONE: Final = 0
PIXMAN_REPEAT_NORMAL: Final = 1
_COMPOSITE_SRC_FILTER_SHIFT: Final = 8
_COMPOSITE_MASK_FILTER_SHIFT: Final = 11
_COMPOSITE_SRC_REPEAT_SHIFT: Final = 14

FIXED_ONE: Final = 1 << 16  # pixman_fixed_t 1.0 (QXLTransform entries)

#: every interrupt the kernel driver unmasks (``QXL_INTERRUPT_MASK``)
INTERRUPT_MASK: Final = (
    Interrupt.DISPLAY
    | Interrupt.CURSOR
    | Interrupt.IO_CMD
    | Interrupt.ERROR
    | Interrupt.CLIENT
    | Interrupt.CLIENT_MONITORS_CONFIG
)

_NO_RECT: Final = Rect(top=0, left=0, bottom=0, right=0)
_NO_DEPS: Final = (-1, -1, -1)

#: the draw effect a driver would give each kind of operation (steers the server's drawable tree)
_EFFECTS: dict[type, int] = {
    d.Fill: Effect.OPAQUE,
    d.Copy: Effect.OPAQUE,
    d.Opaque: Effect.OPAQUE,
    d.Blackness: Effect.BLACKNESS_ON_DUP,
    d.Whiteness: Effect.WHITENESS_ON_DUP,
    d.Invers: Effect.REVERT_ON_DUP,
    CopyBits: Effect.OPAQUE,
}


def rgb(r: int, g: int, b: int) -> int:
    """``0x00RRGGBB``."""
    return (r << 16) | (g << 8) | b


def xywh(x: int, y: int, w: int, h: int) -> Rect:
    """A Rect from position and size."""
    return Rect(top=y, left=x, bottom=y + h, right=x + w)


def _rect_and(a: Rect, b: Rect) -> Rect | None:
    r = Rect(
        top=max(a.top, b.top), left=max(a.left, b.left), bottom=min(a.bottom, b.bottom), right=min(a.right, b.right)
    )
    return r if r.left < r.right and r.top < r.bottom else None


def _rect_minus(a: Rect, b: Rect) -> list[Rect]:
    """``a`` without ``b`` as up to four rectangles."""
    inter = _rect_and(a, b)
    if inter is None:
        return [a]
    out = []
    if a.top < inter.top:
        out.append(Rect(top=a.top, left=a.left, bottom=inter.top, right=a.right))
    if inter.bottom < a.bottom:
        out.append(Rect(top=inter.bottom, left=a.left, bottom=a.bottom, right=a.right))
    if a.left < inter.left:
        out.append(Rect(top=inter.top, left=a.left, bottom=inter.bottom, right=inter.left))
    if inter.right < a.right:
        out.append(Rect(top=inter.top, left=inter.right, bottom=inter.bottom, right=a.right))
    return out


def _shift(r: Rect, dx: int, dy: int) -> Rect:
    return Rect(top=r.top + dy, left=r.left + dx, bottom=r.bottom + dy, right=r.right + dx)


def _payload_size(value: object) -> int:
    """A generous estimate of the guest bytes a drawing structure takes (for arena reservations)."""
    if isinstance(value, bytes | bytearray):
        return len(value) + 64
    if isinstance(value, tuple):
        return 16 * len(value) + sum(_payload_size(v) for v in value if not isinstance(v, int))
    if is_dataclass(value) and not isinstance(value, type):
        return 96 + sum(_payload_size(getattr(value, f.name)) for f in fields(value))
    return 0


# --- images ---------------------------------------------------------------------------------------


def bitmap_image(
    image_id: int,
    fmt: int,
    width: int,
    rows: np.ndarray,
    *,
    palette: d.Palette | None = None,
    cache: bool = False,
    top_down: bool = True,
) -> d.Image:
    """A BITMAP image from ``rows`` ((height, bytes per row) uint8, top row first).

    Rows are padded to a 4-byte stride; a bottom-up bitmap (``top_down`` False) stores the last row
    first. ``cache`` sets the QXL image cache flag: the server may then keep the image in the
    client's pixmap cache under ``image_id`` (so equal ids must mean equal pixels).
    """
    height, nbytes = rows.shape
    stride = (nbytes + 3) & ~3
    buf = np.zeros((height, stride), np.uint8)
    buf[:, :nbytes] = rows
    if not top_down:
        buf = buf[::-1]
    return d.Image(
        descriptor=d.ImageDescriptor(
            id=image_id,
            type=ImageType.BITMAP,
            flags=int(ImageFlags.CACHE_ME) if cache else 0,
            width=width,
            height=height,
        ),
        bitmap=d.BitmapData(
            format=fmt,
            flags=int(BitmapFlags.TOP_DOWN) if top_down else 0,
            x=width,
            y=height,
            stride=stride,
            palette=palette,
            data=buf.tobytes(),
        ),
    )


def surface_image(surface_id: int, width: int, height: int) -> d.Image:
    """A SURFACE image: the pixels of another surface."""
    return d.Image(
        descriptor=d.ImageDescriptor(id=0, type=ImageType.SURFACE, flags=0, width=width, height=height),
        surface=d.Surface(surface_id=surface_id),
    )


def _rows32(px: np.ndarray) -> np.ndarray:
    """(h, w) uint32 pixels as (h, 4w) bytes B, G, R, X/A."""
    h, w = px.shape
    return np.ascontiguousarray(px.astype("<u4")).view(np.uint8).reshape(h, w * 4)


def _rows24(px: np.ndarray) -> np.ndarray:
    h, w = px.shape
    out = np.empty((h, w, 3), np.uint8)
    out[..., 0] = px & 0xFF
    out[..., 1] = (px >> 8) & 0xFF
    out[..., 2] = (px >> 16) & 0xFF
    return out.reshape(h, w * 3)


def _rows16(px: np.ndarray) -> np.ndarray:
    """x1r5g5b5, little-endian."""
    h, w = px.shape
    v = (((px >> 19) & 0x1F) << 10) | (((px >> 11) & 0x1F) << 5) | ((px >> 3) & 0x1F)
    return np.ascontiguousarray(v.astype("<u2")).view(np.uint8).reshape(h, w * 2)


def _rows4be(idx: np.ndarray) -> np.ndarray:
    h, w = idx.shape
    if w % 2:
        idx = np.concatenate([idx, np.zeros((h, 1), idx.dtype)], axis=1)
    out: np.ndarray = ((idx[:, 0::2] << 4) | idx[:, 1::2]).astype(np.uint8)
    return out


def _rows1be(bits: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.packbits(bits.astype(bool), axis=1, bitorder="big")
    return out


def _photo_pixels(w: int, h: int, phase: float = 0.0) -> np.ndarray:
    """A smooth colour field (0x00RRGGBB), like :class:`~spiceserver.desktop.SyntheticDesktop`'s photo."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(xx / 23.0 + phase) * np.cos(yy / 17.0)
    g = 128 + 90 * np.sin((xx + yy) / 31.0 + 2 * phase)
    b = 128 + 100 * np.cos(np.hypot(xx - w / 2, yy - h / 2) / 13.0 - phase)
    c = [np.clip(v, 0, 255).astype(np.uint32) for v in (r, g, b)]
    out: np.ndarray = (c[0] << 16) | (c[1] << 8) | c[2]
    return out


def _disc(size: int) -> np.ndarray:
    """A filled circle as a (size, size) bool mask."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    c = size / 2
    out: np.ndarray = (xx - c) ** 2 + (yy - c) ** 2 <= c * c
    return out


def _premultiplied(px: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """ARGB with colour channels multiplied by alpha (what pixman's OVER expects)."""
    a = alpha.astype(np.uint32)
    r = ((px >> 16) & 0xFF) * a // 255
    g = ((px >> 8) & 0xFF) * a // 255
    b = (px & 0xFF) * a // 255
    out: np.ndarray = (a << 24) | (r << 16) | (g << 8) | b
    return out
