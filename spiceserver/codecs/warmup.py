"""Compile the numba codec kernels in the background so they never delay a client.

The first call of a numba kernel compiles it (about a second per kernel cold, a third of that from
numba's on-disk cache). :func:`start` runs every codec once on a tiny image in a daemon thread; until
:func:`ready` is true the image encoder sends LZ4 or raw bitmaps instead of Quic / LZ / GLZ, so a
server accepts and serves clients at once.

Covering a kernel once is enough: the codec wrappers hand every kernel one array type per argument
(:func:`~spiceserver._jit.kernel_input`), so the specializations compiled here are the only
ones the server ever uses (``tests/codecs/test_no_late_compile.py`` checks every encoder path).

Kernels outside the codecs (the drawable tree's region kernels, :mod:`spiceserver.region_kernels`)
register their own warm-up with :func:`~spiceserver._jit.on_warmup`; those run first, as the tree
is on every draw's path (it uses the uncompiled kernels until its own are ready).
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from .._jit import warmups

__all__ = ["start", "ready", "wait", "seconds"]

log = logging.getLogger("spiceserver.codecs")

_done = threading.Event()
_lock = threading.Lock()
_thread: threading.Thread | None = None
_elapsed: float | None = None


def _run() -> None:
    global _elapsed
    t0 = time.perf_counter()
    for fn in warmups():
        try:
            fn()
        except Exception:  # never fatal: those kernels' users keep the uncompiled versions
            log.exception("kernel warm-up %s failed", getattr(fn, "__qualname__", fn))
    try:
        from .glz import GlzDecoderWindow, GlzDictionary, decode_glz, encode_glz
        from .graduality import graduality_level
        from .lz import LzImageType, decode_lz, encode_lz
        from .quic import decode_quic, encode_quic

        rng = np.random.default_rng(0)
        px = (rng.integers(0, 1 << 24, (16, 16), dtype=np.uint32) & 0xF0F0F0) | 0x0F
        rgba = px | (rng.integers(0, 256, (16, 16), dtype=np.uint32) << 24)
        graduality_level(px)
        rgb16 = (px & 0x7FFF).astype(np.uint16)
        for fmt, img in (("rgb32", px), ("rgba", rgba), ("rgb24", px), ("rgb16", rgb16)):
            decode_quic(encode_quic(img, fmt))
        raw = px.astype("<u4").tobytes()
        raw16 = rgb16.astype("<u2").tobytes()
        for lz_type, data, stride in (
            (LzImageType.RGB32, raw, 64),
            (LzImageType.RGBA, rgba.astype("<u4").tobytes(), 64),
            (LzImageType.RGB16, raw16, 32),
            (LzImageType.PLT8, bytes(range(256)), 16),
            (LzImageType.XXXA, rgba.astype("<u4").tobytes(), 64),
        ):
            decode_lz(encode_lz(data, lz_type, width=16, height=16, stride=stride), palette=np.arange(256, dtype=np.uint32))
        # every GLZ kernel: the RGB one, and the generic one the RGB16 and alpha passes use
        dictionary = GlzDictionary(1 << 16)
        window = GlzDecoderWindow()
        for lz_type, data, stride in (
            (LzImageType.RGB32, raw, 64),
            (LzImageType.RGB32, raw, 64),
            (LzImageType.RGBA, rgba.astype("<u4").tobytes(), 64),
            (LzImageType.RGB16, raw16, 32),
        ):
            decode_glz(window, encode_glz(dictionary, data, lz_type, 16, 16, stride))
    except Exception:  # never fatal: the encoder keeps using LZ4 / raw
        log.exception("codec warm-up failed; Quic/LZ/GLZ stay off")
        return
    _elapsed = time.perf_counter() - t0
    log.info("codec kernels ready in %.2f s", _elapsed)
    _done.set()


def start() -> None:
    """Start the warm-up once per process (idempotent, returns at once)."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_run, name="spice-codec-warmup", daemon=True)
            _thread.start()


def ready() -> bool:
    """True once the codec kernels are compiled (never blocks)."""
    return _done.is_set()


def wait(timeout: float | None = None) -> bool:
    """Start if needed and wait until the kernels are compiled (tests, benchmarks)."""
    start()
    return _done.wait(timeout)


def seconds() -> float | None:
    """How long the warm-up took (None until done)."""
    return _elapsed
