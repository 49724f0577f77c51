"""spice-gtk gets a photo right after "codec kernels ready" and no codec kernel compiles for it.

The server runs in a fresh interpreter (``late_compile_spicegtk.py``): the check is that no numba
dispatcher gained a specialization after the warm-up while spice-gtk was served a desktop, a
photo (Quic) and a photo region. A kernel compiled there would hold the display for seconds on a
machine with an empty numba cache (docs/performance.md, "Cold start").
"""

from __future__ import annotations

import json

import pytest

from tests.support.subprocess_report import run_module_report

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]

def test_photo_to_spicegtk_after_ready_compiles_no_kernel() -> None:
    pytest.importorskip("numba")
    report = run_module_report("tests.interop.late_compile_spicegtk")
    assert report["images"].get("quic", 0) >= 1, report["images"]  # the photo went as Quic
    assert report["new"] == {}, "kernels specialized after the warm-up:\n" + json.dumps(report["new"], indent=1)
