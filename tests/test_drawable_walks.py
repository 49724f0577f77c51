"""The walks over draw bodies (issue 10 point 3) visit only the fields their type hints allow to
matter; they must give what a walk over every field gives. Random bodies of every draw op (built
from the wire layouts, images, masks, patterns, glyphs and paths included) are checked against the
plain walks the worker used before: the bytes a body keeps (:func:`retained_size`), its images
(:func:`images_of`), and replacing them (:func:`map_images`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Point
from spiceserver.qxl.commands import CopyBits
from spiceserver.worker.drawable import images_of, map_images
from spiceserver.worker.retain import retained_size
from tests.proto.test_messages_roundtrip import struct_strategy


def plain_retained_size(value: Any) -> int:
    """``retained_size`` as it was: every field of every dataclass."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, tuple):
        return sum(plain_retained_size(v) + 8 for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        total = 64
        for fld in dataclasses.fields(value):
            v = getattr(value, fld.name)
            if v is not None and not isinstance(v, (int, float, str, bool)):
                total += plain_retained_size(v)
        return total
    return 0


def plain_map_images(value: Any, fn: Callable[[d.Image], d.Image]) -> Any:
    """``map_images`` as it was: every field of every dataclass."""
    if isinstance(value, d.Image):
        return fn(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {}
        for fld in dataclasses.fields(value):
            v = getattr(value, fld.name)
            if v is None or isinstance(v, (int, bytes, str, tuple)):
                continue
            nv = plain_map_images(v, fn)
            if nv is not v:
                changes[fld.name] = nv
        return dataclasses.replace(value, **changes) if changes else value
    return value


def plain_images_of(value: Any) -> list[d.Image]:
    out: list[d.Image] = []

    def grab(img: d.Image) -> d.Image:
        out.append(img)
        return img

    plain_map_images(value, grab)
    return out


def _tagged(img: d.Image) -> d.Image:
    return dataclasses.replace(img, descriptor=dataclasses.replace(img.descriptor, id=img.descriptor.id ^ 0x5A5A))


def check(body: Any) -> None:
    assert retained_size(body) == plain_retained_size(body)
    got, want = images_of(body), plain_images_of(body)
    assert len(got) == len(want) and all(a is b for a, b in zip(got, want, strict=True))
    new, old = map_images(body, _tagged), plain_map_images(body, _tagged)
    assert new is old or new == old
    same = map_images(body, lambda img: img)
    assert same is body  # nothing replaced: the very same object back


@pytest.mark.parametrize("cls", list(d.DRAW_MESSAGES), ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_walks_match_the_plain_walks(cls: type, data: st.DataObject) -> None:
    check(data.draw(struct_strategy(cls), label=cls.__name__))


def test_copy_bits_and_other_values() -> None:
    check(CopyBits(src_pos=Point(x=3, y=4)))
    for value in (None, 7, b"abc", (b"ab", Point(x=1, y=2)), np.zeros(5, dtype=np.uint8), "text"):
        check(value)
