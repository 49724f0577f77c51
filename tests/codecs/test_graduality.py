"""libspice's graduality heuristic (photo-like -> Quic): levels, and numba == pure Python."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver._jit import pure
from spiceserver.codecs.graduality import Graduality, _score_kernel, graduality_level
from spiceserver.desktop import SyntheticDesktop


def test_levels() -> None:
    assert graduality_level(SyntheticDesktop._photo(256, 160)) == Graduality.HIGH  # smooth colour field
    assert graduality_level(np.full((40, 40), 0x123456, np.uint32)) == Graduality.MEDIUM  # all equal: score 0
    desk = SyntheticDesktop(320, 240).frame(0.0)[30:130, 30:280]  # a window with text
    assert graduality_level(desk) == Graduality.LOW
    rgb16 = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 32).astype(np.uint16)
    assert graduality_level(rgb16, rgb16=True) in set(Graduality)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_numba_and_pure_agree(w: int, h: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    px = (rng.integers(0, 1 << 24, (h, w), dtype=np.uint32) & rng.choice([0xFFFFFF, 0xF0F0F0, 0x0F0F0F])).ravel()
    planes = [((px >> s) & 0xFF).astype(np.int32) for s in (16, 8, 0)]
    assert _score_kernel(*planes, w, h, 60) == pure(_score_kernel)(*planes, w, h, 60)
