"""spice-gtk (SpiceClientGLib through PyGObject) against OUR server: link, auth, TLS, inputs.

Every test runs our asyncio server in the test's loop and the real client as a subprocess
(``gi_client.py`` under /usr/bin/python3), then checks what reached the host's device callbacks:
the exact scancodes, buttons and positions the client was told to send.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from spiceserver.proto.enums import MouseMode
from tests.conftest import Running, start_server
from tests.interop.harness import find_events, first_event, format_events, run_gi_client
from tests.support.certs import TestCA

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]

KEY_ACTIONS: list[dict[str, Any]] = [
    {"op": "key_press", "scancode": 0x1E},  # A
    {"op": "key_release", "scancode": 0x1E},
    {"op": "key_press", "scancode": 0x148},  # Up arrow: 0x100 | code means an E0 prefix
    {"op": "key_release", "scancode": 0x148},
    {"op": "key_press_and_release", "scancode": 0x39},  # space, as one KEY_SCANCODE message
]
EXPECTED_KEYS = [(0x1E, True), (0x1E, False), (0xE048, True), (0xE048, False), (0x39, True), (0x39, False)]
EXPECTED_RAW = [b"\x1e", b"\x9e", b"\xe0\x48", b"\xe0\xc8", b"\x39\xb9"]


def keys(r: Running) -> list[tuple[int, bool]]:
    return [(e[1], e[2]) for e in r.devices.events if e[0] == "key"]


async def test_plain_link_channels_and_inputs_client_mode() -> None:
    """Tablet present: spice-gtk asks for client mouse mode and sends absolute positions."""
    r = await start_server(name="interop-vm")
    try:
        actions = [
            *KEY_ACTIONS,
            {"op": "position", "x": 100, "y": 200, "display": 0, "buttons": 0},
            {"op": "button_press", "button": 1, "buttons": 1},
            {"op": "position", "x": 300, "y": 40, "display": 0, "buttons": 1},
            {"op": "button_release", "button": 1, "buttons": 0},
            {"op": "button_press", "button": 5, "buttons": 0},  # wheel down
            {"op": "button_release", "button": 5, "buttons": 0},
            {"op": "wait", "ms": 300},
        ]
        code, events, err = await run_gi_client(
            "--port", str(r.server.port_of()), "--expect-channels", "2", "--wait-mouse-mode", "client",
            "--actions", json.dumps(actions), "--linger-ms", "200", timeout=30,
        )
        assert code == 0, format_events(events, err)
        ready = first_event(events, "ready")
        assert ready is not None and sorted(ready["open_channels"]) == [[1, 0], [3, 0]], format_events(events, err)
        assert len(find_events(events, "channel-event", name="OPENED")) == 2
        assert first_event(events, "inputs-open") is not None
        # every key and pointer event handled (the pointer ones come last)
        await r.devices.wait_for(lambda ev: len([e for e in ev if e[0] in ("key", "position", "buttons", "wheel")]) >= 12)
        assert keys(r) == EXPECTED_KEYS
        assert [e[1] for e in r.devices.events if e[0] == "scancodes"] == EXPECTED_RAW
        pointer = [e for e in r.devices.events if e[0] in ("position", "buttons", "wheel")]
        assert pointer == [
            ("position", 100, 200, 0, 0),
            ("buttons", 1),
            ("position", 300, 40, 1, 0),
            ("buttons", 0),
            ("wheel", 1, 0),
            ("buttons", 0),
        ]
        assert r.server.mouse_mode == MouseMode.CLIENT
    finally:
        await r.server.close()


async def test_server_mouse_mode_motion_and_buttons() -> None:
    """No tablet: server mouse mode, relative motion reaches the mouse."""
    r = await start_server()
    r.server.remove_tablet()
    try:
        actions = [
            {"op": "motion", "dx": 5, "dy": -3, "buttons": 0},
            {"op": "button_press", "button": 3, "buttons": 4},
            {"op": "motion", "dx": -7, "dy": 2, "buttons": 4},
            {"op": "button_release", "button": 3, "buttons": 0},
            {"op": "button_press", "button": 4, "buttons": 0},  # wheel up
            {"op": "wait", "ms": 300},
        ]
        code, events, err = await run_gi_client(
            "--port", str(r.server.port_of()), "--expect-channels", "2", "--actions", json.dumps(actions),
            "--linger-ms", "200", timeout=30,
        )
        assert code == 0, format_events(events, err)
        await r.devices.wait_for(lambda ev: len(ev) >= 5)
        assert r.devices.events[:5] == [
            ("motion", 5, -3, 0, 0),
            ("motion", 0, 0, 0, 4),
            ("motion", -7, 2, 0, 4),
            ("buttons", 0),
            ("motion", 0, 0, -1, 0),
        ]
        assert r.server.mouse_mode == MouseMode.SERVER
    finally:
        await r.server.close()


async def test_password_right_and_wrong() -> None:
    r = await start_server(password="s3cret")
    try:
        code, events, err = await run_gi_client(
            "--port", str(r.server.port_of()), "--password", "wrong", timeout=20,
        )
        assert code == 10, format_events(events, err)  # gi_client: 10 = ERROR_AUTH
        assert any(e.get("event") == "channel-event" and "AUTH" in json.dumps(e) for e in events), format_events(events, err)
        code, events, err = await run_gi_client(
            "--port", str(r.server.port_of()), "--password", "s3cret", "--expect-channels", "2",
            "--actions", json.dumps(KEY_ACTIONS[:2]), "--linger-ms", "200", timeout=20,
        )
        assert code == 0, format_events(events, err)
        await r.devices.wait_for(lambda ev: len([e for e in ev if e[0] == "key"]) >= 2)
        assert keys(r) == EXPECTED_KEYS[:2]
    finally:
        await r.server.close()


async def test_tls_with_password(test_ca: TestCA) -> None:
    r = await start_server(port=None, tls_port=0, x509_dir=str(test_ca.dir), password="s3cret")
    try:
        code, events, err = await run_gi_client(
            "--tls-port", str(r.server.port_of(secure=True)), "--ca-file", str(test_ca.ca_cert), "--tls-only",
            "--password", "s3cret", "--expect-channels", "2", "--actions", json.dumps(KEY_ACTIONS),
            "--linger-ms", "200", timeout=30,
        )
        assert code == 0, format_events(events, err)
        tls_flags = [e.get("tls") for e in events if e.get("event") == "channel-event" and e.get("tls") is not None]
        assert tls_flags and all(tls_flags), format_events(events, err)
        await r.devices.wait_for(lambda ev: len([e for e in ev if e[0] == "key"]) >= 6)
        assert keys(r) == EXPECTED_KEYS
        code, events, err = await run_gi_client(
            "--tls-port", str(r.server.port_of(secure=True)), "--ca-file", str(test_ca.ca_cert), "--tls-only",
            "--password", "nope", timeout=20,
        )
        assert code == 10, format_events(events, err)
    finally:
        await r.server.close()


async def test_need_secured_makes_spicegtk_retry_over_tls(test_ca: TestCA) -> None:
    """inputs must be encrypted: spice-gtk links it over plain TCP, gets NEED_SECURED, retries on TLS."""
    r = await start_server(port=0, tls_port=0, x509_dir=str(test_ca.dir), tls_channels=("inputs",))
    try:
        code, events, err = await run_gi_client(
            "--port", str(r.server.port_of()), "--tls-port", str(r.server.port_of(secure=True)),
            "--ca-file", str(test_ca.ca_cert), "--expect-channels", "2",
            "--actions", json.dumps(KEY_ACTIONS[:2]), "--linger-ms", "200", timeout=30,
        )
        assert code == 0, format_events(events, err)
        await r.devices.wait_for(lambda ev: len([e for e in ev if e[0] == "key"]) >= 2)
        assert keys(r) == EXPECTED_KEYS[:2]
    finally:
        await r.server.close()


async def test_spicegtk_links_after_a_thousand_garbage_connections() -> None:
    import asyncio
    import os

    r = await start_server()

    async def garbage(i: int) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", r.server.port_of())
            writer.write(os.urandom(1 + i % 200) if i % 3 else b"REDQ\x02\0\0\0\x02\0\0\0\xff\xff\xff\xff")
            await writer.drain()
            writer.write_eof()
            await asyncio.wait_for(reader.read(), 10)
            writer.close()
        except (ConnectionError, OSError):
            pass

    sem = asyncio.Semaphore(50)

    async def limited(i: int) -> None:
        async with sem:
            await garbage(i)

    try:
        await asyncio.gather(*(limited(i) for i in range(1000)))
        assert r.server.stats["links_failed"] >= 1000
        code, events, err = await run_gi_client(
            "--port", str(r.server.port_of()), "--expect-channels", "2", "--actions", json.dumps(KEY_ACTIONS[:2]), timeout=30
        )
        assert code == 0, format_events(events, err)
        await r.devices.wait_for(lambda ev: len([e for e in ev if e[0] == "key"]) >= 2)
    finally:
        await r.server.close()
