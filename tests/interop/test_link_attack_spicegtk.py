"""spice-gtk still links over TLS and draws while hundreds of half-open handshakes hold the link phase.

Issue 9, point 3: before, TLS handshakes were not counted, and a few hundred silent connections
locked every new client out. Here 300 half-open TLS connections (from 20 other loopback addresses,
over the global bound of 256) and 40 silent ones from the client's own address (over the per-peer
bound of 32) are open when the client starts; the bound is checked as counts.
"""

from __future__ import annotations

import asyncio

import pytest

from spiceserver.desktop import SyntheticDesktop
from tests.conftest import start_server
from tests.interop.harness import controlled_client, format_events, same_picture
from tests.support.certs import TestCA
from tests.test_link_admission import PARTIAL_CLIENT_HELLO, close_all, open_idle, until

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]


async def test_spicegtk_links_over_tls_and_draws_during_a_half_open_flood(test_ca: TestCA) -> None:
    r = await start_server(port=None, tls_port=0, x509_dir=str(test_ca.dir))
    frame = SyntheticDesktop(320, 240).frame(0.0)
    r.server.add_framebuffer_display(320, 240).update(frame)
    attackers: list[asyncio.StreamWriter] = []
    try:
        port = r.server.port_of(secure=True)
        attackers = await open_idle(port, 300, [f"127.0.0.{i}" for i in range(2, 22)], PARTIAL_CLIENT_HELLO)
        attackers += await open_idle(port, 40, ["127.0.0.1"], PARTIAL_CLIENT_HELLO)
        await until(lambda: r.server.stats["connections"] == 340)
        admission = r.server._admission
        assert len(admission) <= r.server.config.max_pending_links and admission.count("127.0.0.1") <= 32
        args = ("--tls-port", str(port), "--ca-file", str(test_ca.ca_cert), "--tls-only", "--wait-display")
        async with controlled_client(*args) as client:
            shown = await client.wait_picture(same_picture(frame))
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        assert shown is not None, format_events(client.events, client.stderr)
        assert admission.refused == 0
    finally:
        close_all(attackers)
        await r.server.close()
