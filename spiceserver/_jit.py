"""The numba shim: sequential kernels (codecs, region arithmetic) are plain Python compiled with ``@njit`` when numba exists.

One source of truth: a kernel is written once as a plain Python function over numpy arrays and
decorated with :func:`njit`. With numba importable it is compiled (``cache=True, nogil=True``: the
machine code is cached on disk and the GIL is released while it runs, so the asyncio loop stays
responsive); without numba the decorator returns the function unchanged and the same code runs,
slowly. ``pure(kernel)`` gives the plain Python version in both cases, so tests can check that both
modes produce identical bytes.

numba compiles one specialization per distinct tuple of argument types, and an array's type includes
its dtype, dimensions, layout (C-contiguous or not), alignment and whether it is read-only (arrays
over ``bytes`` are). The codec wrappers therefore pass every input array through
:func:`kernel_input` (C-contiguous, aligned, read-only) and allocate every output array themselves,
so each kernel has exactly the specializations that :mod:`.codecs.warmup` compiles and none is added while
clients are served. :func:`kernels` lists the compiled kernels, for tests that check this. Kernels outside the codecs
register a function that calls each of them once with :func:`on_warmup`; the warm-up thread runs
those first (:func:`warmups`).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, TypeVar
from typing import overload as overload_type

import numpy as np

__all__ = [
    "njit",
    "pure",
    "pure_deep",
    "prefetch",
    "kernel_input",
    "kernels",
    "on_warmup",
    "warmups",
    "uindex",
    "widen",
    "HAVE_NUMBA",
]

F = TypeVar("F", bound=Callable[..., Any])

_kernels: dict[str, Any] = {}
_warmups: list[Callable[[], None]] = []

_numba: Any
try:  # pragma: no cover - depends on the environment
    import numba as _numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    _numba = None
    HAVE_NUMBA = False

uindex: Callable[[Any], int]
widen: Callable[[Any], int]
if HAVE_NUMBA:
    #: Kernels make array indices unsigned before use (``a[uindex(i)]``, only where ``i >= 0`` by
    #: construction, never on an index read from input): numba then skips its negative-index
    #: fix-up on every access, which costs more than the work in the per-pixel loops.
    uindex = np.uint64  # type: ignore[assignment]
    #: Array elements are widened with this before arithmetic: numba's ``int()`` keeps uint8
    #: and uint32, and unsigned-signed mixes would turn into floats.
    widen = np.int64  # type: ignore[assignment]
else:  # pragma: no cover - interpreted kernels run faster on plain ints
    uindex = widen = int


@overload_type
def njit(fn: F) -> F: ...
@overload_type
def njit(*, inline: bool = ..., helper: bool = ..., keep_gil: bool = ...) -> Callable[[F], F]: ...


def njit(fn: Any = None, *, inline: bool = False, helper: bool = False, keep_gil: bool = False) -> Any:
    """Compile ``fn`` with numba (nopython, cached, GIL released) if available, else return it.

    ``@njit(inline=True)`` marks a small helper to be inlined into every kernel that calls it
    (numba ``inline="always"``, done on numba's IR). Without it a helper is a real call, and one
    that takes an array pays a reference-count increment and decrement per call: in a per-pixel
    loop that costs more than the work itself.

    ``@njit(helper=True)`` marks a large function that only kernels call (a real call, once per
    region rather than per pixel): it is compiled once per argument types its callers give, not
    inlined into each of them (which multiplies compile time), and it is not listed by
    :func:`kernels`, since its callers fix its specializations (numba's cache loads them with the
    callers without registering them on the helper).

    ``@njit(keep_gil=True)`` keeps the GIL while a kernel runs: for a kernel of a few microseconds
    run once per command (the drawable tree), releasing the GIL hands it to another thread, and
    getting it back costs more than the kernel (the worker waits until that thread lets go).
    """
    if fn is None:
        return lambda f: njit_impl(f, inline, helper, keep_gil)
    return njit_impl(fn, inline, helper, keep_gil)


def njit_impl(fn: F, inline: bool, helper: bool = False, keep_gil: bool = False) -> F:
    if _numba is None:
        return fn
    opts: dict[str, Any] = {"cache": True, "nogil": not keep_gil}
    if inline:
        opts["inline"] = "always"
    compiled: Any = _numba.njit(**opts)(fn)
    if not inline and not helper:  # helpers are compiled with their callers, never on their own
        _kernels[f"{fn.__module__}.{fn.__qualname__}"] = compiled
    return compiled  # type: ignore[no-any-return]


def kernels() -> dict[str, Any]:
    """Every compiled kernel (numba dispatcher) by qualified name; empty without numba.

    A dispatcher's ``signatures`` lists the specializations it holds (compiled, or loaded from
    numba's on-disk cache).
    """
    return dict(_kernels)


def on_warmup(fn: Callable[[], None]) -> Callable[[], None]:
    """Register ``fn`` (no arguments) to be run by the warm-up thread before the codec kernels.

    ``fn`` calls every kernel of its module once with the argument types its callers use, so that
    none compiles later. Registration happens at import: the modules that use kernels are imported
    before the warm-up starts (the worker starts it).
    """
    if fn not in _warmups:
        _warmups.append(fn)
    return fn


def warmups() -> list[Callable[[], None]]:
    """The registered warm-up functions, in registration order."""
    return list(_warmups)


def kernel_input(arr: np.ndarray) -> np.ndarray:
    """``arr`` as the one array type the kernels are compiled for: C-contiguous, aligned, read-only.

    A view when ``arr`` already is C-contiguous and aligned (the common case: no copy), else a copy.
    Kernels never write their input arrays, and arrays over ``bytes`` are read-only anyway, so this
    is the type every caller can give without copying.
    """
    out = np.require(arr, requirements=("C", "A"))
    if out.flags.writeable:
        out = out.view()
        out.flags.writeable = False
    return out


def pure(kernel: F) -> F:
    """The plain Python function behind ``kernel`` (itself when numba is absent)."""
    py: F = getattr(kernel, "py_func", kernel)
    return py


_pure_globals: dict[tuple[str, tuple[tuple[str, int], ...]], dict[str, Any]] = {}


def pure_deep(kernel: F, replace: dict[str, Any] | None = None) -> F:
    """The plain Python function behind ``kernel``, calling plain Python helpers all the way down.

    :func:`pure` gives the kernel's own code, but the helpers it calls are still numba dispatchers,
    and calling one from Python compiles it for Python argument types. This one runs its module's
    code with every kernel and helper of the module replaced by its plain function (sharing one
    copy of the module's globals, built on first use, in which ``uindex`` and ``widen`` are plain
    ``int``): nothing compiles, so it can stand in for a kernel that is not compiled yet.
    ``replace`` swaps given helpers by name (e.g. a numpy version of a loop that only pays
    compiled).
    """
    fn: Any = getattr(kernel, "py_func", kernel)
    module = fn.__module__
    swaps = replace or {}
    key = (module, tuple(sorted((name, id(value)) for name, value in swaps.items())))
    g = _pure_globals.get(key)
    if g is None:
        g = dict(fn.__globals__)
        for name, value in list(g.items()):
            py: Any = getattr(value, "py_func", None)
            if py is not None and py.__module__ == module:
                g[name] = types.FunctionType(py.__code__, g, py.__name__, py.__defaults__, py.__closure__)
            elif value is uindex or value is widen:
                g[name] = int
        g.update(swaps)
        _pure_globals[key] = g
    if fn is kernel:  # no numba: the module's functions are plain already; rebind this one to g
        if not swaps:
            return kernel
        rebound: F = types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)  # type: ignore[assignment]
        return rebound
    plain: F = g[fn.__name__]
    return plain


def prefetch(arr: Any, index: int) -> None:
    """Ask the CPU to start loading ``arr[index]`` into cache; no effect on results.

    Compiled kernels get a ``prefetcht0`` instruction (LLVM ``llvm.prefetch``): GLZ uses it to
    overlap its random hash-table reads. In plain Python it does nothing. ``index`` must lie
    inside ``arr`` (no wraparound is applied).
    """


if _numba is not None:  # pragma: no branch - depends on the environment
    import importlib

    _ir: Any = importlib.import_module("llvmlite.ir")
    _cgutils: Any = importlib.import_module("numba.core.cgutils")
    _extending: Any = importlib.import_module("numba.extending")

    def _prefetch_typer(typingctx: Any, arr: Any, index: Any) -> Any:
        sig = _numba.types.void(arr, index)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            ptr = _cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
            i8p = _ir.IntType(8).as_pointer()
            i32 = _ir.IntType(32)
            fnty = _ir.FunctionType(_ir.VoidType(), [i8p, i32, i32, i32])
            fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)  # llvmlite mangles the name
            # read access, high temporal locality, data cache
            builder.call(
                fn, [builder.bitcast(ptr, i8p), _ir.Constant(i32, 0), _ir.Constant(i32, 3), _ir.Constant(i32, 1)]
            )
            return context.get_dummy_value()

        return sig, codegen

    _prefetch_intrinsic: Any = _extending.intrinsic(_prefetch_typer)

    def _prefetch_impl(arr: Any, index: Any) -> Any:
        def impl(arr: Any, index: Any) -> None:  # pragma: no cover - compiled
            _prefetch_intrinsic(arr, index)

        return impl

    _extending.overload(prefetch)(_prefetch_impl)
