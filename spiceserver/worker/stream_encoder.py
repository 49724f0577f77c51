"""TEMPORARY shim (replaced by the encoders branch): MJPEG-only StreamEncoder."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..codecs.mjpeg import encode_mjpeg_frame
from ..proto.enums import VideoCodecType
from .mjpeg_rate import MjpegRateControl


class EncodeJob:
    def __init__(self, quality: int) -> None:
        self.quality = quality

    def run(self, pixels: np.ndarray) -> bytes | None:
        return encode_mjpeg_frame(pixels, self.quality)


class StreamEncoder:
    codec = VideoCodecType.MJPEG

    def __init__(self, width: int, height: int, *, bit_rate: int, now_ms: float, source_fps: int, roundtrip_ms: int) -> None:
        self.rate = MjpegRateControl(bit_rate, now_ms, source_fps=source_fps, roundtrip_ms=roundtrip_ms)

    def admit(self, now_ms: float, mm_time: int) -> EncodeJob | None:
        if not self.rate.admit(now_ms, mm_time):
            return None
        return EncodeJob(self.rate.quality())

    def frame_encoded(self, size: int, now_ms: float, encode_ms: float) -> None:
        self.rate.frame_encoded(size, now_ms)

    def client_report(self, *args: Any) -> None:
        self.rate.client_report(*args)

    def server_drop(self, now_ms: float) -> None:
        self.rate.server_drop(now_ms)

    def pop_playback_delay_request(self) -> int | None:
        return self.rate.pop_playback_delay_request()

    @property
    def bit_rate(self) -> int:
        return self.rate.bit_rate

    def stats(self) -> dict[str, int | float]:
        return {}

    def close(self) -> None:
        pass


def make_stream_encoder(codec: VideoCodecType, width: int, height: int, *, bit_rate: int, now_ms: float, source_fps: int, roundtrip_ms: int) -> StreamEncoder:
    if codec != VideoCodecType.MJPEG:
        raise ValueError("shim: MJPEG only")
    return StreamEncoder(width, height, bit_rate=bit_rate, now_ms=now_ms, source_fps=source_fps, roundtrip_ms=roundtrip_ms)
