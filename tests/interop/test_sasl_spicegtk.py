"""spice-gtk logs in with SASL (cyrus, libsasl2-modules) over TLS to OUR server.

What libspice does with ``spice_server_set_sasl(1)`` (``red-stream.cpp`` ``red_sasl_*``) and what
spice-gtk answers (``spice-channel.c`` ``spice_channel_perform_auth_sasl``): every channel's link
offers AUTH_SASL, the client picks the best mechanism of our list (SCRAM-SHA-256) and logs in
with the session's username and password. A wrong password ends in ERROR_AUTH on main; the
plain port never offers SASL, so there spice-gtk sends the RSA ticket as usual (decided: the
ticket password applies there, and without one the link is refused).
"""

from __future__ import annotations

import glob

import pytest

from spiceserver.auth import SaslVerifiers
from spiceserver.desktop import SyntheticDesktop
from tests.conftest import Running, start_server
from tests.interop.harness import (
    controlled_client,
    find_events,
    first_event,
    format_events,
    run_gi_client,
    same_picture,
)
from tests.support.certs import TestCA

#: cyrus's SCRAM and PLAIN client plugins, which spice-gtk loads (Debian libsasl2-modules)
SASL_PLUGINS = sorted(glob.glob("/usr/lib/*/sasl2/libscram.so*") + glob.glob("/usr/lib/sasl2/libscram.so*"))

pytestmark = [
    pytest.mark.interop,
    pytest.mark.usefixtures("gi_client"),
    pytest.mark.skipif(not SASL_PLUGINS, reason="cyrus SCRAM plugin not installed (Debian libsasl2-modules)"),
]


async def sasl_server(test_ca: TestCA, **kw: object) -> Running:
    kw.setdefault("port", None)
    r = await start_server(tls_port=0, x509_dir=str(test_ca.dir), sasl=True, **kw)
    verifiers = SaslVerifiers()
    verifiers.add("alice", "secret")
    r.server.set_sasl_credentials(verifiers=verifiers)
    return r


def tls_args(r: Running, test_ca: TestCA) -> list[str]:
    return ["--tls-port", str(r.server.port_of(secure=True)), "--ca-file", str(test_ca.ca_cert), "--tls-only"]


async def test_scram_sha256_login_opens_every_channel_with_a_picture(test_ca: TestCA, caplog: pytest.LogCaptureFixture) -> None:
    r = await sasl_server(test_ca)
    desktop = SyntheticDesktop(320, 240)
    fb = r.server.add_framebuffer_display(320, 240)
    frame = desktop.frame(0.0)
    fb.update(frame)
    caplog.set_level("DEBUG", logger="spiceserver")
    try:
        async with controlled_client(
            *tls_args(r, test_ca), "--username", "alice", "--password", "secret", "--expect-channels", "4", "--wait-display",
        ) as client:
            shown = await client.wait_picture(same_picture(frame))
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        assert shown is not None, format_events(client.events, client.stderr)
        opened = find_events(client.events, "channel-event", name="OPENED")
        assert {e["channel"] for e in opened} >= {"main", "display", "inputs", "cursor"}, format_events(client.events)
        assert all(e["tls"] for e in opened)
        assert all(2 in e["common_caps"] and 1 not in e["common_caps"] for e in opened), opened  # AUTH_SASL, no AUTH_SPICE
        m = await r.server.metrics()
        assert m.sasl_ok >= 4 and m.sasl_failed == 0, m
        assert "SASL mechanism SCRAM-SHA-256" in caplog.text
    finally:
        await r.server.close()


async def test_wrong_password_is_an_auth_error(test_ca: TestCA) -> None:
    r = await sasl_server(test_ca)
    try:
        for user, password in (("alice", "wrong"), ("mallory", "secret")):
            code, events, err = await run_gi_client(*tls_args(r, test_ca), "--username", user, "--password", password, timeout=30)
            assert code == 10, format_events(events, err)  # ERROR_AUTH
            ev = first_event(events, "channel-event", name="ERROR_AUTH")
            assert ev is not None and ev["channel"] == "main", format_events(events, err)
            assert ev["error"]["message"] == "Authentication failed", ev
            assert ev["error"]["code"] == 5, ev  # SPICE_CLIENT_ERROR_AUTH_NEEDS_PASSWORD_AND_USERNAME
            assert not find_events(events, "channel-event", name="OPENED")
        # no username: cyrus cannot start, spice-gtk closes after the mechanism list, same event
        code, events, err = await run_gi_client(*tls_args(r, test_ca), "--password", "secret", timeout=30)
        assert code == 10, format_events(events, err)
        assert (await r.server.metrics()).sasl_failed == 3
    finally:
        await r.server.close()


async def test_plain_only_server(test_ca: TestCA) -> None:
    r = await start_server(port=None, tls_port=0, x509_dir=str(test_ca.dir), sasl=True, sasl_mechanisms=("PLAIN",))
    seen: list[tuple[str, str]] = []

    def check(user: str, password: str) -> bool:
        seen.append((user, password))
        return (user, password) == ("bob", "hunter2")

    r.server.set_sasl_credentials(check=check)
    try:
        code, events, err = await run_gi_client(*tls_args(r, test_ca), "--username", "bob", "--password", "hunter2", "--expect-channels", "2", timeout=30)
        assert code == 0, format_events(events, err)
        assert len(find_events(events, "channel-event", name="OPENED")) >= 2
        assert seen and all(s == ("bob", "hunter2") for s in seen)
        code, events, err = await run_gi_client(*tls_args(r, test_ca), "--username", "bob", "--password", "nope", timeout=30)
        assert code == 10, format_events(events, err)
    finally:
        await r.server.close()


async def test_plain_port_keeps_the_ticket(test_ca: TestCA) -> None:
    """sasl=True with a plain port too: there the link offers AUTH_SPICE only (never SASL, which
    would need DIGEST-MD5's security layer), so spice-gtk sends its password as the RSA ticket."""
    r = await sasl_server(test_ca, port=0, password="ticket1")
    try:
        code, events, err = await run_gi_client("--port", str(r.server.port_of()), "--username", "alice", "--password", "secret", timeout=30)
        assert code == 10, format_events(events, err)  # not the ticket password: PERMISSION_DENIED
        ev = first_event(events, "channel-event", name="ERROR_AUTH")
        assert ev is not None and "wrong password" in ev["error"]["message"], format_events(events, err)
        code, events, err = await run_gi_client("--port", str(r.server.port_of()), "--password", "ticket1", "--expect-channels", "2", timeout=30)
        assert code == 0, format_events(events, err)
        opened = find_events(events, "channel-event", name="OPENED")
        assert opened and all(1 in e["common_caps"] and 2 not in e["common_caps"] for e in opened), opened
        assert (await r.server.metrics()).sasl_ok == 0
    finally:
        await r.server.close()


async def test_lockout_after_wrong_passwords(test_ca: TestCA) -> None:
    """A failed SASL login counts like a wrong ticket: after ticket_max_failures the right
    password is refused too."""
    r = await sasl_server(test_ca, ticket_max_failures=2, ticket_lockout=600)
    try:
        for _ in range(2):
            code, events, err = await run_gi_client(*tls_args(r, test_ca), "--username", "alice", "--password", "bad", timeout=30)
            assert code == 10, format_events(events, err)
        code, events, err = await run_gi_client(*tls_args(r, test_ca), "--username", "alice", "--password", "secret", timeout=30)
        assert code == 10, format_events(events, err)
        assert (await r.server.metrics()).sasl_ok == 0
    finally:
        await r.server.close()
