"""A synthetic desktop painted with numpy and Pillow: what the demo and the examples show.

Deterministic for a given time ``t`` (the static scene is ``t = 0``): a gradient wallpaper, a task
bar, windows with title bars and text, a "photo" (smooth colour field), and moving parts (a window
that slides, a clock, a scrolling text pane).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["SyntheticDesktop", "ARROW_CURSOR", "video_picture", "av_picture"]


def _rgb(r: int, g: int, b: int) -> int:
    return (r << 16) | (g << 8) | b


def _arrow() -> tuple[int, int, np.ndarray]:
    """A 16x24 ARGB arrow cursor (hot spot 0, 0)."""
    rows = [
        "X...............",
        "XX..............",
        "XWX.............",
        "XWWX............",
        "XWWWX...........",
        "XWWWWX..........",
        "XWWWWWX.........",
        "XWWWWWWX........",
        "XWWWWWWWX.......",
        "XWWWWWWWWX......",
        "XWWWWWWWWWX.....",
        "XWWWWWWXXXXX....",
        "XWWWXWWX........",
        "XWWXXWWX........",
        "XWX..XWWX.......",
        "XX...XWWX.......",
        "X.....XWWX......",
        "......XWWX......",
        ".......XWWX.....",
        ".......XWWX.....",
        "........XX......",
        "................",
        "................",
        "................",
    ]
    px = np.zeros((24, 16), dtype=np.uint32)
    for y, row in enumerate(rows):
        for x, c in enumerate(row):
            if c == "X":
                px[y, x] = 0xFF000000
            elif c == "W":
                px[y, x] = 0xFFFFFFFF
    return 16, 24, px


ARROW_CURSOR = _arrow()


class SyntheticDesktop:
    """Paints frames of a fake desktop of ``width`` x ``height``."""

    def __init__(self, width: int = 1024, height: int = 768) -> None:
        self.width = width
        self.height = height
        self.font = ImageFont.load_default()
        yy, xx = np.mgrid[0:height, 0:width]
        r = (40 + 60 * xx / max(width - 1, 1)).astype(np.uint32)
        g = (70 + 50 * yy / max(height - 1, 1)).astype(np.uint32)
        b = (120 + 80 * (xx + yy) / max(width + height - 2, 1)).astype(np.uint32)
        self.wallpaper = (r << 16) | (g << 8) | b
        self.photo = self._photo(256, 160)
        #: the current frame of the video region (``--scene video``), pasted into every desktop frame
        self.video: np.ndarray | None = None
        self.lines = [f"{i:04d}  the quick brown fox jumps over the lazy dog  #{i * 7919 % 10007:05d}" for i in range(200)]

    @staticmethod
    def _photo(w: int, h: int) -> np.ndarray:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        r = 128 + 100 * np.sin(xx / 23.0) * np.cos(yy / 17.0)
        g = 128 + 90 * np.sin((xx + yy) / 31.0)
        b = 128 + 100 * np.cos(np.hypot(xx - w / 2, yy - h / 2) / 13.0)
        rgb = [np.clip(c, 0, 255).astype(np.uint32) for c in (r, g, b)]
        out: np.ndarray = (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
        return out

    def _window(self, img: ImageDraw.ImageDraw, x: int, y: int, w: int, h: int, title: str) -> None:
        img.rectangle([x + 4, y + 4, x + w + 4, y + h + 4], fill=(20, 20, 30))  # shadow
        img.rectangle([x, y, x + w, y + h], fill=(236, 236, 236), outline=(90, 90, 110))
        img.rectangle([x, y, x + w, y + 22], fill=(52, 101, 164))
        img.text((x + 8, y + 5), title, fill=(255, 255, 255), font=self.font)
        for i, c in enumerate([(204, 0, 0), (196, 160, 0), (78, 154, 6)]):
            img.ellipse([x + w - 18 - 18 * i, y + 5, x + w - 6 - 18 * i, y + 17], fill=c)

    def frame(self, t: float = 0.0) -> np.ndarray:
        """The desktop at time ``t`` seconds as (height, width) uint32 0x00RRGGBB."""
        w, h = self.width, self.height
        rgb = np.empty((h, w, 3), dtype=np.uint8)
        wp = self.wallpaper
        rgb[..., 0] = (wp >> 16) & 0xFF
        rgb[..., 1] = (wp >> 8) & 0xFF
        rgb[..., 2] = wp & 0xFF
        pil = Image.fromarray(rgb, "RGB")
        draw = ImageDraw.Draw(pil)
        # task bar with a clock
        draw.rectangle([0, h - 32, w, h], fill=(46, 52, 54))
        draw.rectangle([6, h - 27, 90, h - 6], fill=(85, 87, 83))
        draw.text((18, h - 22), "spiceserver", fill=(238, 238, 236), font=self.font)
        secs = int(t)
        draw.text((w - 70, h - 22), f"{12 + secs // 3600 % 12:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}", fill=(238, 238, 236), font=self.font)
        # a text editor window whose content scrolls
        ex, ey, ew, eh = 40, 40, min(520, w - 80), min(300, h - 120)
        self._window(draw, ex, ey, ew, eh, "notes.txt - editor")
        first = int(t * 4) % len(self.lines)
        for i in range((eh - 30) // 12):
            draw.text((ex + 8, ey + 28 + 12 * i), self.lines[(first + i) % len(self.lines)], fill=(20, 20, 20), font=self.font)
        # an image viewer window with the photo
        px_, py_ = min(ex + ew + 30, w - 300), 60
        self._window(draw, px_, py_, 272, 200, "photo.png")
        # a sliding window
        sx = int((w - 260) * (0.5 + 0.5 * math.sin(t * 0.8)))
        sy = h - 220
        self._window(draw, sx, sy, 240, 140, "moving window")
        draw.rectangle([sx + 20, sy + 40, sx + 220, sy + 120], fill=(int(127 + 120 * math.sin(t)), 120, 200))
        out = np.asarray(pil, dtype=np.uint32)
        frame = (out[..., 0] << 16) | (out[..., 1] << 8) | out[..., 2]
        ph, pw = self.photo.shape
        y0, x0 = py_ + 30, px_ + 8
        if y0 + ph <= h and x0 + pw <= w:
            frame[y0 : y0 + ph, x0 : x0 + pw] = self.photo
        return frame


def video_picture(width: int, height: int, t: float) -> np.ndarray:
    """Frame ``t`` seconds into a synthetic video (``--scene video``): a photo-like picture that pans
    and a bright disc that moves, so that every pixel changes from one frame to the next; a flash
    (the whole frame brighter) once a second. (height, width) uint32 0x00RRGGBB."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    x = xx + 40.0 * t
    y = yy + 15.0 * math.sin(t)
    r = 128 + 100 * np.sin(x / 23.0) * np.cos(y / 17.0)
    g = 128 + 90 * np.sin((x + y) / 31.0)
    b = 128 + 100 * np.cos(np.hypot(x - width / 2, y - height / 2) / 13.0)
    cx = width * (0.5 + 0.35 * math.cos(t * 1.7))
    cy = height * (0.5 + 0.35 * math.sin(t * 2.3))
    disc = np.clip(1.0 - np.hypot(xx - cx, yy - cy) / (min(width, height) / 6), 0, 1) * 150
    flash = 60.0 if (t % 1.0) < 0.08 else 0.0
    rgb = [np.clip(c + disc + flash, 0, 255).astype(np.uint32) for c in (r, g, b)]
    out: np.ndarray = (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
    return out



def av_picture(width: int, height: int, t: float, flash: bool) -> np.ndarray:
    """Frame ``t`` seconds into the A/V scene's video (``--scene av``): a photo-like picture that pans,
    no brighter than 200 in any channel, or, for a ``flash``, white (245..255, a faint texture that
    pans too, so that consecutive flash frames differ). (height, width) uint32 0x00RRGGBB."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    x = xx + 40.0 * t
    y = yy + 15.0 * math.sin(t)
    if flash:
        v = np.clip(250 + 5 * np.sin(x / 9.0) * np.cos(y / 7.0), 0, 255).astype(np.uint32)
        white: np.ndarray = (v << 16) | (v << 8) | v
        return white
    r = 100 + 80 * np.sin(x / 23.0) * np.cos(y / 17.0)
    g = 100 + 70 * np.sin((x + y) / 31.0)
    b = 110 + 80 * np.cos(np.hypot(x - width / 2, y - height / 2) / 13.0)
    rgb = [np.clip(c, 0, 200).astype(np.uint32) for c in (r, g, b)]
    out: np.ndarray = (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
    return out
