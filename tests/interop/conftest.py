"""pytest glue for the interop tier: the ``interop`` marker and fixtures over :mod:`.harness`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.interop.harness import require_gi_client, run_gi_client
from tests.support.certs import TestCA, make_test_ca


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "interop: runs a real SPICE client (spice-gtk via PyGObject) or server (Xspice); "
        "skipped when the peer is not installed",
    )


@pytest.fixture
def gi_client() -> Iterator[Callable[..., Any]]:
    """Skip unless the GI client can run; yield :func:`~tests.interop.harness.run_gi_client`."""
    require_gi_client()
    yield run_gi_client


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """One throwaway CA + server cert for the whole session (see ``make_test_ca``)."""
    return make_test_ca(tmp_path_factory.mktemp("x509"))
