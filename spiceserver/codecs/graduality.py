"""How "photographic" a bitmap is: libspice's graduality score, which picks Quic over LZ/GLZ.

Counterpart of spice ``server/spice-bitmap-utils.c`` / ``spice-bitmap-utils.tmpl.c``
(``bitmap_get_graduality_level``). Every 15th pixel of the image (taken as one run of pixels) is
compared with its right, lower and lower-right neighbours; equal pairs score 0.5, contrasting pairs
(a channel differs by 60 or more, 8 for 16-bit) 1.0, other differences -0.25; squares whose pixels
are all equal are ignored. A mean below -0.03 (0 for 16-bit) is HIGH graduality (photo-like, Quic),
below 0.002 MEDIUM, else LOW.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from .._jit import kernel_input, njit

__all__ = ["Graduality", "graduality_level", "graduality_score"]

SAMPLE_JUMP = 15
HIGH_RGB24_TH = -0.03
HIGH_RGB16_TH = 0.0
MEDIUM_SCORE_TH = 0.002


class Graduality(IntEnum):
    """A bitmap's graduality level; HIGH is photo-like (Quic's kind of image)."""

    INVALID = 0
    HIGH = 1
    MEDIUM = 2
    LOW = 3


@njit
def _score_kernel(r: np.ndarray, g: np.ndarray, b: np.ndarray, width: int, num_lines: int, contrast: int) -> tuple[float, int]:
    """Sum of square scores and sample count over channel planes flattened to one run of pixels."""
    if width <= 1 or num_lines <= 1:
        return 1.0, 1
    jump = SAMPLE_JUMP if SAMPLE_JUMP % width else SAMPLE_JUMP - 1
    cur = width // 2
    last_line = (num_lines - 1) * width
    total = 0.0
    samples = 0
    while cur < last_line:
        if (cur + 1) % width == 0:
            cur -= 1
        bottom = cur + width
        ret = 0.0
        any_diff = 0
        for other in (cur + 1, bottom, bottom + 1):
            dr = r[cur] - r[other]  # int32 planes: signed differences in both modes
            dg = g[cur] - g[other]
            db = b[cur] - b[other]
            if dr <= -contrast or dr >= contrast or dg <= -contrast or dg >= contrast or db <= -contrast or db >= contrast:
                ret += 1.0
                any_diff = 1
            elif dr != 0 or dg != 0 or db != 0:
                ret += -0.25
                any_diff = 1
            else:
                ret += 0.5
        if any_diff == 0:
            ret = 0.0
        total += ret
        samples += 1
        cur += jump
    return total, samples * 3


def graduality_score(pixels: np.ndarray, *, rgb16: bool = False) -> float:
    """The mean score of an (h, w) image: uint32 0x00RRGGBB, or uint16 x555 with ``rgb16``."""
    h, w = pixels.shape
    flat = np.ascontiguousarray(pixels).reshape(-1)
    if rgb16:
        r = ((flat >> 10) & 0x1F).astype(np.int32)
        g = ((flat >> 5) & 0x1F).astype(np.int32)
        b = (flat & 0x1F).astype(np.int32)
        contrast = 8
    else:
        r = ((flat >> 16) & 0xFF).astype(np.int32)
        g = ((flat >> 8) & 0xFF).astype(np.int32)
        b = (flat & 0xFF).astype(np.int32)
        contrast = 60
    total, samples = _score_kernel(kernel_input(r), kernel_input(g), kernel_input(b), w, h, contrast)
    return float(total) / int(samples)


def graduality_level(pixels: np.ndarray, *, rgb16: bool = False) -> Graduality:
    """Classify ``pixels`` as HIGH, MEDIUM or LOW graduality from :func:`graduality_score`."""
    score = graduality_score(pixels, rgb16=rgb16)
    if score < (HIGH_RGB16_TH if rgb16 else HIGH_RGB24_TH):
        return Graduality.HIGH
    if score < MEDIUM_SCORE_TH:
        return Graduality.MEDIUM
    return Graduality.LOW
