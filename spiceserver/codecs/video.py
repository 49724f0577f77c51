"""TEMPORARY shim (replaced by the encoders branch)."""

from __future__ import annotations

from ..proto.enums import VideoCodecType


def available_codecs() -> frozenset[VideoCodecType]:
    return frozenset({VideoCodecType.MJPEG})
