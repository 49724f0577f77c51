"""The numba shim, re-exported: it moved to :mod:`spiceserver._jit` so that kernels outside the
codecs (the region kernels of the drawable tree) share it. Kept for the tests and tools that import
it from here."""

from __future__ import annotations

from .._jit import HAVE_NUMBA, kernel_input, kernels, njit, prefetch, pure, uindex, widen

__all__ = ["njit", "pure", "prefetch", "kernel_input", "kernels", "uindex", "widen", "HAVE_NUMBA"]
