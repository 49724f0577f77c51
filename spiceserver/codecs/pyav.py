"""PyAV (``av``, the optional ``spiceserver[video]`` extra), imported once for the codecs that use it.

The video-stream encoders (:mod:`spiceserver.codecs.video`: VP8, VP9, H.264 through FFmpeg) and Opus
(:mod:`spiceserver.codecs.opus`: libopus, which PyAV's wheels carry) both need it; without it they
report themselves unavailable instead of failing at import.
"""

from __future__ import annotations

import functools
from types import ModuleType

__all__ = ["load_av"]


@functools.cache
def load_av() -> ModuleType | None:
    """The ``av`` module, or None when PyAV is not installed (cached)."""
    try:
        import av  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    module: ModuleType = av
    return module
