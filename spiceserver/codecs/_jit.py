"""The numba shim: sequential codec kernels are plain Python compiled with ``@njit`` when numba exists.

One source of truth: a kernel is written once as a plain Python function over numpy arrays and
decorated with :func:`njit`. With numba importable it is compiled (``cache=True, nogil=True``: the
machine code is cached on disk and the GIL is released while it runs, so the asyncio loop stays
responsive); without numba the decorator returns the function unchanged and the same code runs,
slowly. ``pure(kernel)`` gives the plain Python version in both cases, so tests can check that both
modes produce identical bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["njit", "pure", "HAVE_NUMBA"]

F = TypeVar("F", bound=Callable[..., Any])

_numba: Any
try:  # pragma: no cover - depends on the environment
    import numba as _numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    _numba = None
    HAVE_NUMBA = False


def njit(fn: F) -> F:
    """Compile ``fn`` with numba (nopython, cached, GIL released) if available, else return it."""
    if _numba is None:
        return fn
    compiled: Any = _numba.njit(cache=True, nogil=True)(fn)
    return compiled  # type: ignore[no-any-return]


def pure(kernel: F) -> F:
    """The plain Python function behind ``kernel`` (itself when numba is absent)."""
    py: F = getattr(kernel, "py_func", kernel)
    return py
