"""No codec kernel gains a specialization after the warm-up: every path by which the server hands
pixels to a kernel passes the argument types the warm-up compiled (``spiceserver/_jit.py``
``kernel_input``), so no client ever waits for numba to compile on the worker thread.

The paths run in a fresh interpreter (``late_compile_paths.py``): in this process earlier tests may
already have compiled specializations of their own, which would hide a missing one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from spiceserver import _jit
from spiceserver.codecs.lz import LzImageType, encode_lz
from spiceserver.codecs.quic import encode_quic
from tests.support.subprocess_report import run_module_report


def test_every_encoder_path_uses_only_the_warmed_up_specializations() -> None:
    pytest.importorskip("numba")
    report = run_module_report("tests.codecs.late_compile_paths")
    assert report["paths"] > 1000
    codecs = ("QUIC", "LZ_RGB", "LZ_PLT", "GLZ_RGB", "ZLIB_GLZ_RGB", "LZ4", "JPEG", "JPEG_ALPHA")
    stats = ("quic", "lz", "lz_plt", "glz", "zlib_glz", "lz4", "jpeg", "jpeg_alpha")
    want = {f"wire:{c}" for c in codecs} | {f"encoder:{c}" for c in stats}
    assert want <= set(report["seen"]), f"paths not reached: {sorted(want - set(report['seen']))}"
    assert all(n >= 1 for name, n in report["warmup"].items() if not name.endswith("._init_state")), report["warmup"]
    assert report["new"] == {}, "kernels specialized after the warm-up:\n" + json.dumps(report["new"], indent=1)


def test_kernel_input_is_a_read_only_c_contiguous_view_without_copy_when_possible() -> None:
    a = np.arange(12, dtype=np.uint32).reshape(3, 4)
    v = _jit.kernel_input(a)
    assert np.shares_memory(v, a) and not v.flags.writeable and a.flags.writeable
    flipped = _jit.kernel_input(a[::-1])
    assert flipped.flags.c_contiguous and not flipped.flags.writeable
    assert np.array_equal(flipped, a[::-1])
    ro = np.frombuffer(a.tobytes(), np.uint32)
    assert np.shares_memory(_jit.kernel_input(ro), ro)


@pytest.mark.parametrize("make", [
    lambda b: b,
    lambda b: bytearray(b),
    lambda b: memoryview(b),
    lambda b: np.frombuffer(b, np.uint32).reshape(8, 16).copy(),
    lambda b: np.frombuffer(b, np.uint32).reshape(8, 16)[::-1][::-1],
])  # fmt: skip
def test_every_input_kind_gives_the_same_stream(make: object) -> None:
    rng = np.random.default_rng(3)
    px = rng.integers(0, 1 << 24, (8, 16), dtype=np.uint32)
    raw = px.astype("<u4").tobytes()
    want = encode_lz(raw, LzImageType.RGB32, width=16, height=8, stride=64)
    assert encode_lz(make(raw), LzImageType.RGB32, width=16, height=8, stride=64) == want  # type: ignore[operator]
    assert encode_quic(np.frombuffer(raw, np.uint32).reshape(8, 16), "rgb32") == encode_quic(px, "rgb32")
