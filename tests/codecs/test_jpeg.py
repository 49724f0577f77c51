from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.codecs.jpeg import decode_jpeg, encode_jpeg
from spiceserver.desktop import SyntheticDesktop
from spiceserver.errors import ProtocolError


@pytest.mark.parametrize(("w", "h"), [(1, 1), (17, 5), (256, 160)])
def test_round_trip_within_bound(w: int, h: int) -> None:
    px = SyntheticDesktop._photo(256, 160)[:h, :w]
    out = decode_jpeg(encode_jpeg(px), w, h)
    err = np.abs(((out[..., None] >> np.array([16, 8, 0])) & 255).astype(int) - ((px[..., None] >> np.array([16, 8, 0])) & 255).astype(int))
    assert out.shape == (h, w) and err.mean() < 4 and err.max() < 64


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_jpeg(data)
