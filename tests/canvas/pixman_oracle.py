"""A ctypes handle on the system's libpixman-1 (the library spice-gtk renders with), as a test oracle.

Only what the canvas tests compare against: images over numpy buffers, transforms, filters,
repeat modes, solid fills, clip regions and ``pixman_image_composite32``. ``LIB`` is None when the
library cannot be loaded; tests using it are skipped then.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

import numpy as np

from spiceserver.canvas.surface import PixFmt, Pixmap


def _load() -> Any:
    for name in ("libpixman-1.so.0", ctypes.util.find_library("pixman-1")):
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


LIB = _load()


def _fmt(bpp: int, t: int, a: int, r: int, g: int, b: int) -> int:
    return (bpp << 24) | (t << 16) | (a << 12) | (r << 8) | (g << 4) | b


CODES = {
    PixFmt.A8R8G8B8: _fmt(32, 2, 8, 8, 8, 8),
    PixFmt.X8R8G8B8: _fmt(32, 2, 0, 8, 8, 8),
    PixFmt.X1R5G5B5: _fmt(16, 2, 0, 5, 5, 5),
    PixFmt.R5G6B5: _fmt(16, 2, 0, 5, 6, 5),
    PixFmt.A8: _fmt(8, 1, 8, 0, 0, 0),
    PixFmt.A1: _fmt(1, 1, 1, 0, 0, 0),
}


class _Color(ctypes.Structure):
    _fields_ = [
        ("red", ctypes.c_uint16),
        ("green", ctypes.c_uint16),
        ("blue", ctypes.c_uint16),
        ("alpha", ctypes.c_uint16),
    ]


class _Transform(ctypes.Structure):
    _fields_ = [("m", (ctypes.c_int32 * 3) * 3)]


class _Box(ctypes.Structure):
    _fields_ = [("x1", ctypes.c_int32), ("y1", ctypes.c_int32), ("x2", ctypes.c_int32), ("y2", ctypes.c_int32)]


class _Region(ctypes.Structure):
    _fields_ = [("extents", _Box), ("data", ctypes.c_void_p)]


if LIB is not None:
    LIB.pixman_image_create_bits.restype = ctypes.c_void_p
    LIB.pixman_image_create_bits.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    LIB.pixman_image_create_solid_fill.restype = ctypes.c_void_p
    LIB.pixman_image_create_solid_fill.argtypes = [ctypes.POINTER(_Color)]
    LIB.pixman_image_set_transform.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Transform)]
    LIB.pixman_image_set_filter.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    LIB.pixman_image_set_repeat.argtypes = [ctypes.c_void_p, ctypes.c_int]
    LIB.pixman_image_set_component_alpha.argtypes = [ctypes.c_void_p, ctypes.c_int]
    LIB.pixman_image_set_clip_region32.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Region)]
    LIB.pixman_image_composite32.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p] + [
        ctypes.c_int32
    ] * 8
    LIB.pixman_image_unref.argtypes = [ctypes.c_void_p]
    LIB.pixman_region32_init_rects.argtypes = [ctypes.POINTER(_Region), ctypes.POINTER(_Box), ctypes.c_int]
    LIB.pixman_region32_fini.argtypes = [ctypes.POINTER(_Region)]


class Image:
    """A pixman image over a padded copy of a pixmap's pixels; read back with :meth:`pixels`."""

    def __init__(self, pm: Pixmap) -> None:
        self.format = pm.format
        self.width, self.height = pm.width, pm.height
        bpp = pm.format.bpp
        self.stride = ((self.width * bpp + 31) // 32) * 4
        self.buf = np.zeros((max(self.height, 1), self.stride), np.uint8)
        if pm.format == PixFmt.A1:
            bits = np.packbits(pm.pixels.astype(np.uint8) & 1, axis=1, bitorder="little")
            self.buf[: self.height, : bits.shape[1]] = bits
        else:
            raw = np.ascontiguousarray(pm.pixels).view(np.uint8).reshape(self.height, -1)
            self.buf[: self.height, : raw.shape[1]] = raw
        self.ptr = LIB.pixman_image_create_bits(
            CODES[pm.format], self.width, self.height, self.buf.ctypes.data, self.stride
        )

    def __del__(self) -> None:
        if getattr(self, "ptr", None):
            LIB.pixman_image_unref(self.ptr)

    def pixels(self) -> np.ndarray:
        if self.format == PixFmt.A1:
            return np.unpackbits(self.buf[: self.height], axis=1, bitorder="little")[:, : self.width]
        dt = {32: np.uint32, 16: np.uint16, 8: np.uint8}[self.format.bpp]
        return self.buf[: self.height].view(dt)[:, : self.width].copy()

    def set_transform(self, matrix: tuple[tuple[int, int, int], tuple[int, int, int]]) -> None:
        t = _Transform()
        rows = (*matrix, (0, 0, 1 << 16))
        for i in range(3):
            for j in range(3):
                t.m[i][j] = rows[i][j]
        LIB.pixman_image_set_transform(self.ptr, ctypes.byref(t))

    def set_filter(self, f: int) -> None:
        LIB.pixman_image_set_filter(self.ptr, f, None, 0)

    def set_repeat(self, r: int) -> None:
        LIB.pixman_image_set_repeat(self.ptr, r)

    def set_component_alpha(self, on: bool) -> None:
        LIB.pixman_image_set_component_alpha(self.ptr, 1 if on else 0)

    def set_clip(self, rects: list[tuple[int, int, int, int]]) -> None:
        boxes = (_Box * max(len(rects), 1))(*[_Box(*r) for r in rects])
        region = _Region()
        LIB.pixman_region32_init_rects(ctypes.byref(region), boxes, len(rects))
        LIB.pixman_image_set_clip_region32(self.ptr, ctypes.byref(region))
        LIB.pixman_region32_fini(ctypes.byref(region))


class Solid:
    def __init__(self, argb: int) -> None:
        c = _Color(
            ((argb >> 16) & 0xFF) * 0x101, ((argb >> 8) & 0xFF) * 0x101, (argb & 0xFF) * 0x101, (argb >> 24) * 0x101
        )
        self.ptr = LIB.pixman_image_create_solid_fill(ctypes.byref(c))

    def __del__(self) -> None:
        if getattr(self, "ptr", None):
            LIB.pixman_image_unref(self.ptr)


def composite(
    op: int,
    src: Image | Solid,
    mask: Image | Solid | None,
    dest: Image,
    src_xy: tuple[int, int],
    mask_xy: tuple[int, int],
    dest_xy: tuple[int, int],
    size: tuple[int, int],
) -> None:
    LIB.pixman_image_composite32(
        op, src.ptr, mask.ptr if mask is not None else None, dest.ptr, *src_xy, *mask_xy, *dest_xy, *size
    )
