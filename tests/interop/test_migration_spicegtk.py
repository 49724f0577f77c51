"""spice-gtk follows a VM from one spiceserver to another: seamless, semi-seamless and switch host.

Two servers in this event loop on two ports show the same framebuffer content (as QEMU migrates the
guest's); gi_client (spice-gtk 0.42) is connected to the source. The source announces the
destination (``migrate_info``: MIGRATE_BEGIN[_SEAMLESS], spice-gtk pre-links every channel to the
destination with the source's connection id) and ends the migration (``migrate_end``). Checked:
the client's channels now talk to the destination (their sockets' peer port), no channel was
closed or opened in a seamless or semi-seamless migration, the destination's session has the
source's connection id, a change on the destination's display reaches the client pixel for pixel,
and keys typed afterwards reach the destination's keyboard. Figures (printed): migrate_info until
the client connected, migrate_end until the first destination frame was shown.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spiceserver.channels.chardev import char_device_pair
from spiceserver.channels.port import PortChannel
from spiceserver.channels.smartcard import SmartcardChannel
from spiceserver.channels.usb_device import RedirectedUsbDevice
from spiceserver.channels.usbredir import UsbRedirChannel, UsbRedirection
from spiceserver.desktop import SyntheticDesktop
from tests.conftest import Running, start_server
from tests.interop.harness import GiClient, controlled_client, format_events, same_picture
from tests.interop.test_display_spicegtk import assert_same
from tests.interop.test_smartcard_spicegtk import SELECT_CAC
from tests.interop.test_usbredir_spicegtk import scsi_in
from tests.support.certs import TestCA
from tests.support.nssdb import certutil_available, make_nss_db

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]

W, H = 640, 480


async def _pair(**src_kw: Any) -> tuple[Running, Running, SyntheticDesktop, np.ndarray, Any, Any]:
    src = await start_server(**src_kw)
    dst = await start_server(seamless_migration=True, incoming_migration=True)
    desktop = SyntheticDesktop(W, H)
    frame = desktop.frame(0.0)
    fbs, fbd = src.server.add_framebuffer_display(W, H), dst.server.add_framebuffer_display(W, H)
    fbs.update(frame)
    fbd.update(frame)
    return src, dst, desktop, frame, fbs, fbd


def _channel_events(client: GiClient, since: int) -> list[dict[str, Any]]:
    return [ev for ev in client.events[since:] if ev.get("event") == "channel-event"]


async def _sockets(client: GiClient) -> list[dict[str, Any]]:
    seen = len(client.events)
    await client.command("sockets")
    ev = await client.expect(lambda e: e.get("event") == "sockets" and any(e is x for x in client.events[seen:]))
    chans: list[dict[str, Any]] = ev["channels"]
    return chans


async def _keys_reach(client: GiClient, r: Running, scancode: int) -> None:
    await client.action({"op": "key_press", "scancode": scancode})
    await client.action({"op": "key_release", "scancode": scancode})
    try:
        await r.devices.wait_for(lambda evs: any(e[0] == "scancodes" and e[1] == bytes([scancode | 0x80]) for e in evs), timeout=20)
    except TimeoutError:
        raise AssertionError(f"keys not received: {r.devices.events}\n{format_events(client.events, client.stderr)}") from None


async def _migrate_and_check(mode: str) -> None:
    src, dst, desktop, frame, _fbs, fbd = await _pair(seamless_migration=mode == "seamless")
    loop = asyncio.get_running_loop()
    try:
        async with controlled_client("--port", str(src.server.port_of()), "--wait-display", "--expect-channels", "4", timeout=120) as client:
            shown = await client.wait_picture(same_picture(frame))
            assert shown is not None, format_events(client.events, client.stderr)
            await _keys_reach(client, src, 0x1E)
            (info,) = src.server.clients()
            before = len(client.events)

            t0 = loop.time()
            connected = await src.server.migrate_info("127.0.0.1", dst.server.port_of())
            t_connect = loop.time() - t0
            assert connected, format_events(client.events, client.stderr)
            await client.expect("migration-started")

            nxt = desktop.frame(1.0)
            fbd.update(nxt)  # the guest runs on the destination now
            t1 = loop.time()
            outcome = await src.server.migrate_end(True)
            assert outcome == {info.session_id: mode}, outcome
            shown = await client.wait_picture(same_picture(nxt), timeout=30)
            t_frame = loop.time() - t1
            assert shown is not None, format_events(client.events, client.stderr)
            assert_same(shown, fbd.snapshot())
            assert_same(shown, nxt)

            # the same session (connection id) now lives on the destination, the source has none
            assert [c.session_id for c in dst.server.clients()] == [info.session_id]
            assert src.server.num_clients == 0
            ports = {c["channel"]: c.get("remote_port") for c in await _sockets(client)}
            assert set(ports.values()) == {dst.server.port_of()}, ports

            await _keys_reach(client, dst, 0x30)
            # a further change is shown too (the destination's encoder and the client's caches agree)
            last = desktop.frame(2.0)
            fbd.update(last)
            shown = await client.wait_picture(same_picture(last), timeout=30)
            assert shown is not None
            assert_same(shown, last)
            assert_same(shown, dst.server.display_snapshot())
            (images,) = [c["images"] for c in dst.server.display_stats()["clients"]]
            assert images["glz"] > 0, images  # GLZ (auto_glz) on the window the client kept (seamless) or reset
            events = _channel_events(client, before)
            assert events == [], events  # no channel closed, opened, switched
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        assert not any(e[0] == "scancodes" and e[1] == b"\x30" for e in src.devices.events)
        print(f"\n{mode}: migrate_info -> client connected {t_connect * 1000:.0f} ms; migrate_end -> first destination frame {t_frame * 1000:.0f} ms")
    finally:
        await src.server.close()
        await dst.server.close()


async def test_seamless_migration() -> None:
    await _migrate_and_check("seamless")


async def test_semi_seamless_migration() -> None:
    await _migrate_and_check("semi-seamless")


async def test_switch_host_fallback() -> None:
    """The client was not connected to the destination in time (here: never asked to): at the end
    it is told to switch host and reconnects every channel to the destination."""
    src, dst, desktop, frame, _fbs, fbd = await _pair()
    loop = asyncio.get_running_loop()
    try:
        async with controlled_client(
            "--port", str(src.server.port_of()), "--wait-display", "--expect-channels", "4", "--tolerate-channel-errors", timeout=120
        ) as client:
            shown = await client.wait_picture(same_picture(frame))
            assert shown is not None, format_events(client.events, client.stderr)
            (info,) = src.server.clients()
            before = len(client.events)
            assert not await src.server.migrate_info("127.0.0.1", dst.server.port_of(), connect=False)
            t1 = time.monotonic()
            t0 = loop.time()
            outcome = await src.server.migrate_end(True)
            assert outcome == {info.session_id: "switch-host"}, outcome
            await client.expect("migration-state", name="switching")
            nxt = desktop.frame(1.0)
            fbd.update(nxt)
            shown = await client.wait_picture(same_picture(nxt), timeout=30)
            assert shown is not None, format_events(client.events, client.stderr)
            assert_same(shown, nxt)
            t_frame = loop.time() - t0
            assert src.server.num_clients == 0 and dst.server.num_clients == 1
            await client.expect(lambda e: e.get("event") == "inputs-open" and any(e is x for x in client.events[before:]))
            await _keys_reach(client, dst, 0x30)
            ports = {c["channel"]: c.get("remote_port") for c in await _sockets(client)}
            assert set(ports.values()) == {dst.server.port_of()}, ports
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        print(f"\nswitch-host: migrate_end -> first destination frame {t_frame * 1000:.0f} ms ({time.monotonic() - t1:.2f} s total)")
    finally:
        await src.server.close()
        await dst.server.close()


async def test_destination_not_expecting_falls_back_to_switch_host() -> None:
    """The destination does not accept a migrating client (no ``incoming_migration``): spice-gtk's
    pre-links with the source's connection id are refused, it answers MIGRATE_CONNECT_ERROR, and
    the completed migration switches it to the destination."""
    src, dst, desktop, frame, _fbs, fbd = await _pair(seamless_migration=True)
    dst.server.accept_migration(False)
    try:
        async with controlled_client(
            "--port", str(src.server.port_of()), "--wait-display", "--expect-channels", "4", "--tolerate-channel-errors", timeout=120
        ) as client:
            shown = await client.wait_picture(same_picture(frame))
            assert shown is not None, format_events(client.events, client.stderr)
            (info,) = src.server.clients()
            before = len(client.events)
            assert not await src.server.migrate_info("127.0.0.1", dst.server.port_of())
            assert [c.session_id for c in src.server.clients()] == [info.session_id]  # the client stays
            assert await src.server.migrate_end(True) == {info.session_id: "switch-host"}
            await client.expect(lambda e: e.get("event") == "inputs-open" and any(e is x for x in client.events[before:]))
            nxt = desktop.frame(1.0)
            fbd.update(nxt)
            shown = await client.wait_picture(same_picture(nxt), timeout=30)
            assert shown is not None, format_events(client.events, client.stderr)
            assert_same(shown, nxt)
            await _keys_reach(client, dst, 0x30)
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
    finally:
        await src.server.close()
        await dst.server.close()


async def test_seamless_port_write_queue() -> None:
    """A port's bytes the source had not handed to its device yet (the guest was not reading) go to
    the destination's device, before what the client writes after the migration."""
    src, dst, _desktop, _frame, _fbs, _fbd = await _pair(seamless_migration=True)
    name = "org.test.migration.0"
    sdev, _send = char_device_pair(opened=True)  # no on_data: the source's writes stay queued
    ddev, dend = char_device_pair(opened=True)
    got = bytearray()
    dend.on_data(got.extend)
    src.server.register_channel(PortChannel, name, sdev, 0)
    dst.server.register_channel(PortChannel, name, ddev, 0)
    try:
        async with controlled_client("--port", str(src.server.port_of()), "--wait-display", "--expect-channels", "5", timeout=120) as client:
            await client.expect("port-opened", name=name, opened=True)
            await client.action({"op": "port_write", "name": name, "text": "before"})
            await client.expect("port-written", name=name)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while sdev.queued < 6 and loop.time() < deadline:  # the source's reader got them
                await asyncio.sleep(0.02)
            assert sdev.queued == 6
            before = len(client.events)
            assert await src.server.migrate_info("127.0.0.1", dst.server.port_of())
            (info,) = src.server.clients()
            assert await src.server.migrate_end(True) == {info.session_id: "seamless"}
            await client.action({"op": "port_write", "name": name, "text": "after"})
            deadline = loop.time() + 20
            while bytes(got) != b"beforeafter" and loop.time() < deadline:
                await asyncio.sleep(0.02)
            assert bytes(got) == b"beforeafter", bytes(got)
            assert _channel_events(client, before) == []
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
    finally:
        await src.server.close()
        await dst.server.close()


async def test_seamless_agent_session_continues() -> None:
    """The host answers agent duties (clipboard) on both servers: spice-gtk's agent session goes on
    over the destination (MNMD: agent started, tokens) and its clipboard grab reaches the
    destination's host."""
    from spiceserver.channels.host_clipboard import add_clipboard_handler

    src, dst, _desktop, _frame, _fbs, _fbd = await _pair(seamless_migration=True)
    grabs: dict[str, asyncio.Queue[tuple[int, tuple[int, ...]]]] = {"src": asyncio.Queue(), "dst": asyncio.Queue()}
    for key, r in (("src", src), ("dst", dst)):
        add_clipboard_handler(r.server.host_agent, on_grab=lambda sel, types, q=grabs[key]: q.put_nowait((sel, types)))
    try:
        async with controlled_client("--port", str(src.server.port_of()), "--wait-display", "--expect-channels", "4", timeout=120) as client:
            await client.expect(lambda ev: ev["event"] == "agent" and ev["connected"] and ev["caps0"], timeout=15)
            await client.action({"op": "clipboard_grab", "selection": 0, "types": [1], "text": "one"})
            assert await asyncio.wait_for(grabs["src"].get(), 20) == (0, (1,))
            before = len(client.events)
            assert await src.server.migrate_info("127.0.0.1", dst.server.port_of())
            (info,) = src.server.clients()
            assert await src.server.migrate_end(True) == {info.session_id: "seamless"}
            await client.action({"op": "clipboard_grab", "selection": 0, "types": [1], "text": "two"})
            assert await asyncio.wait_for(grabs["dst"].get(), 20) == (0, (1,))
            assert _channel_events(client, before) == []
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        assert "unhandled agent message" not in client.stderr
    finally:
        await src.server.close()
        await dst.server.close()


async def test_cancelled_migration_stays_on_the_source() -> None:
    """``migrate_end(completed=False)`` after the client connected: MIGRATE_CANCEL, spice-gtk drops
    its links to the destination and goes on with the source (keys, pictures), no channel event."""
    src, dst, desktop, frame, fbs, _fbd = await _pair(seamless_migration=True)
    try:
        async with controlled_client("--port", str(src.server.port_of()), "--wait-display", "--expect-channels", "4", timeout=120) as client:
            shown = await client.wait_picture(same_picture(frame))
            assert shown is not None, format_events(client.events, client.stderr)
            (info,) = src.server.clients()
            before = len(client.events)
            assert await src.server.migrate_info("127.0.0.1", dst.server.port_of())
            assert [c.session_id for c in dst.server.clients()] == [info.session_id]  # pre-linked
            assert await src.server.migrate_end(False) == {info.session_id: "cancel"}
            await client.expect(lambda e: e.get("event") == "migration-state" and e["name"] == "none" and any(e is x for x in client.events[before:]))
            nxt = desktop.frame(1.0)
            fbs.update(nxt)
            shown = await client.wait_picture(same_picture(nxt), timeout=30)
            assert shown is not None
            assert_same(shown, nxt)
            await _keys_reach(client, src, 0x30)
            ports = {c["channel"]: c.get("remote_port") for c in await _sockets(client)}
            assert set(ports.values()) == {src.server.port_of()}, ports
            assert _channel_events(client, before) == []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while dst.server.num_clients and loop.time() < deadline:  # spice-gtk closed its pre-links
                await asyncio.sleep(0.02)
            assert dst.server.num_clients == 0
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        assert not any(e[0] == "scancodes" for e in dst.devices.events)
    finally:
        await src.server.close()
        await dst.server.close()


async def test_seamless_over_tls_with_cert_subject(test_ca: TestCA) -> None:
    """TLS-only servers: the destination is announced by its TLS port and certificate subject, which
    spice-gtk's migration session verifies (``SPICE_SESSION_VERIFY_SUBJECT``)."""
    tls = {"port": None, "tls_port": 0, "x509_dir": str(test_ca.dir), "seamless_migration": True}
    src = await start_server(**tls)
    dst = await start_server(**tls, incoming_migration=True)
    desktop = SyntheticDesktop(W, H)
    frame = desktop.frame(0.0)
    for r in (src, dst):
        r.server.add_framebuffer_display(W, H).update(frame)
    try:
        args = ("--tls-port", str(src.server.port_of(secure=True)), "--ca-file", str(test_ca.ca_cert), "--tls-only")
        async with controlled_client(*args, "--wait-display", "--expect-channels", "4", timeout=120) as client:
            shown = await client.wait_picture(same_picture(frame))
            assert shown is not None, format_events(client.events, client.stderr)
            (info,) = src.server.clients()
            before = len(client.events)
            dport = dst.server.port_of(secure=True)
            assert not await src.server.migrate_info("127.0.0.1", None, dport, "O=spiceserver test,CN=elsewhere")  # refused
            assert await src.server.migrate_info("127.0.0.1", None, dport, "O=spiceserver test,CN=localhost"), format_events(client.events, client.stderr)
            assert await src.server.migrate_end(True) == {info.session_id: "seamless"}
            ports = {c["channel"]: c.get("remote_port") for c in await _sockets(client)}
            assert set(ports.values()) == {dport}, ports
            await _keys_reach(client, dst, 0x30)
            assert _channel_events(client, before) == []
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
    finally:
        await src.server.close()
        await dst.server.close()


async def test_seamless_with_sound_channels() -> None:
    """Playback and record migrate too (SPICE_MSG_MIGRATE with no data, as libspice's sound
    channels): no channel event, and PCM the destination plays after the migration is heard."""
    src, dst, _desktop, frame, _fbs, _fbd = await _pair(seamless_migration=True)
    plays = {}
    for key, r in (("src", src), ("dst", dst)):
        plays[key] = r.server.add_playback()
        r.server.add_record(lambda pcm: None)
    try:
        async with controlled_client(
            "--port", str(src.server.port_of()), "--enable-audio", "--wait-display", "--expect-channels", "6", timeout=120
        ) as client:
            shown = await client.wait_picture(same_picture(frame))
            assert shown is not None, format_events(client.events, client.stderr)
            plays["src"].start()
            plays["src"].write(bytes(1920 * 5))
            await client.expect("playback-data")
            (info,) = src.server.clients()
            before = len(client.events)
            assert await src.server.migrate_info("127.0.0.1", dst.server.port_of())
            assert await src.server.migrate_end(True) == {info.session_id: "seamless"}
            plays["dst"].start()
            plays["dst"].write(bytes(range(256)) * 30)
            await client.expect(lambda e: e.get("event") == "playback-data" and any(e is x for x in client.events[before:]) and e["peak"] > 0)
            assert _channel_events(client, before) == []
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
    finally:
        await src.server.close()
        await dst.server.close()


async def test_owner_and_viewer_migrate_together() -> None:
    """Two sessions on one VM (issue 16's roles) follow one seamless migration: each spice-gtk
    client pre-links with its own password, so each keeps its role on the destination; both show
    the destination's picture, the owner's keys reach the destination and the viewer's do not."""
    roles = {"password": "own", "viewer_password": "view", "max_clients": 2}
    src = await start_server(seamless_migration=True, **roles)
    dst = await start_server(seamless_migration=True, incoming_migration=True, **roles)
    desktop = SyntheticDesktop(W, H)
    frame = desktop.frame(0.0)
    src.server.add_framebuffer_display(W, H).update(frame)
    fbd = dst.server.add_framebuffer_display(W, H)
    fbd.update(frame)
    port = str(src.server.port_of())
    try:
        async with (
            controlled_client("--port", port, "--password", "own", "--wait-display", "--expect-channels", "4", timeout=120) as owner,
            controlled_client("--port", port, "--password", "view", "--wait-display", "--expect-channels", "4", timeout=120) as viewer,
        ):
            for client in (owner, viewer):
                assert await client.wait_picture(same_picture(frame)) is not None, format_events(client.events, client.stderr)
            before = {id(c): len(c.events) for c in (owner, viewer)}
            roles_before = {s.id: s.role for s in src.server.sessions()}
            assert sorted(str(r) for r in roles_before.values()) == ["owner", "viewer"]
            assert await src.server.migrate_info("127.0.0.1", dst.server.port_of())
            nxt = desktop.frame(1.0)
            fbd.update(nxt)
            outcome = await src.server.migrate_end(True)
            assert outcome == dict.fromkeys(roles_before, "seamless"), outcome
            for client in (owner, viewer):
                shown = await client.wait_picture(same_picture(nxt), timeout=30)
                assert shown is not None, format_events(client.events, client.stderr)
                assert _channel_events(client, before[id(client)]) == []  # nothing closed or reopened
            assert {s.id: s.role for s in dst.server.sessions()} == roles_before  # same ids, same roles
            assert src.server.num_clients == 0
            await viewer.action({"op": "key_press_and_release", "scancode": 0x2C})
            await _keys_reach(owner, dst, 0x30)
            deadline = time.monotonic() + 20
            while not any(s.inputs_dropped for s in dst.server.sessions() if str(s.role) == "viewer"):
                assert time.monotonic() < deadline, "the viewer's key was not seen (and dropped) on the destination"
                await asyncio.sleep(0.05)
        assert not any(e[0] == "scancodes" and e[1][:1] in (b"\x2c", b"\xac") for e in dst.devices.events), dst.devices.events
    finally:
        await src.server.close()
        await dst.server.close()


@pytest.mark.skipif(not certutil_available(), reason="certutil (libnss3-tools) is not installed")
async def test_a_smartcard_session_migrates_by_switch_host(tmp_path: Path) -> None:
    """A reader's state (its reader id, the card, an APDU in flight) lives in the source server, so
    a session with a smartcard channel is not asked to pre-connect and is switched to the
    destination at the end: spice-gtk reconnects, adds its reader and inserts its card there, and
    the destination's host talks to the card."""
    db = make_nss_db(tmp_path / "nss")
    src, dst, _desktop, frame, _fbs, _fbd = await _pair(seamless_migration=True)
    readers = [r.server.register_channel(SmartcardChannel).add_reader() for r in (src, dst)]
    try:
        async with controlled_client(
            "--port", str(src.server.port_of()), "--wait-display", "--smartcard-db", str(db), "--tolerate-channel-errors", timeout=120
        ) as client:
            assert await client.wait_picture(same_picture(frame)) is not None
            await _until(lambda: readers[0].present, "the card on the source")
            (info,) = src.server.clients()
            assert not await src.server.migrate_info("127.0.0.1", dst.server.port_of())  # not asked to connect
            assert await src.server.migrate_end(True) == {info.session_id: "switch-host"}
            await client.expect("migration-state", name="switching")
            await _until(lambda: readers[1].present, "the card on the destination", timeout=60)
            answer = await readers[1].transmit(SELECT_CAC, timeout=15)
            assert answer[-2:-1] in (b"\x61", b"\x90"), answer.hex()
            assert src.server.num_clients == 0 and dst.server.num_clients == 1
    finally:
        await src.server.close()
        await dst.server.close()


async def _until(pred: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_a_redirected_usb_device_follows_by_switch_host(tmp_path: Path) -> None:
    """A USB device redirected to this server's own usbredir parser (its hello, the device's
    descriptors and transfers in flight live in the source) makes the session switch host: spice-gtk
    makes a new usbredir channel to the destination, where the device, redirected again (spice-gtk
    does not redirect it by itself after a switch host, with libspice either), attaches, readable."""
    iso = tmp_path / "cd.iso"
    iso.write_bytes(b"hello iso\n" + bytes(2 * 1024 * 1024 - 10))
    src, dst, _desktop, frame, _fbs, _fbd = await _pair(seamless_migration=True)
    hubs = []
    attached: list[asyncio.Queue[RedirectedUsbDevice]] = []
    for r in (src, dst):
        hub = UsbRedirection()
        r.server.register_channel(UsbRedirChannel, hub, 0)
        queue: asyncio.Queue[RedirectedUsbDevice] = asyncio.Queue()
        hub.on_attach(queue.put_nowait)
        hubs.append(hub)
        attached.append(queue)
    try:
        async with controlled_client(
            "--port", str(src.server.port_of()), "--wait-display", "--usb-cd", str(iso), "--tolerate-channel-errors", timeout=120
        ) as client:
            assert await client.wait_picture(same_picture(frame)) is not None
            assert (await client.expect("usb-cd", timeout=10))["ok"]
            await client.expect("ready", timeout=15)
            await client.action({"op": "usb_cd_connect"})
            dev = await asyncio.wait_for(attached[0].get(), 20)
            assert (await client.expect("usb-connected", timeout=10))["ok"]
            assert (dev.vendor_id, dev.product_id) == (0x2B23, 0xCDCD)
            (info,) = src.server.clients()
            assert not await src.server.migrate_info("127.0.0.1", dst.server.port_of())  # not asked to connect
            assert await src.server.migrate_end(True) == {info.session_id: "switch-host"}
            await client.expect(lambda e: e.get("event") == "channel-event" and e.get("channel") == "usbredir" and e.get("remote_port") == dst.server.port_of())
            assert dev.gone and hubs[0].devices == []
            await client.action({"op": "usb_cd_connect"})
            try:
                moved = await asyncio.wait_for(attached[1].get(), 60)
            except TimeoutError:
                raise AssertionError(format_events(client.events, client.stderr)) from None
            assert (moved.vendor_id, moved.product_id) == (0x2B23, 0xCDCD) and hubs[1].devices == [moved]
            if moved.configuration != 1:
                await moved.set_configuration(1, timeout=10)
            inquiry, status = await scsi_in(moved, 1, bytes([0x12, 0, 0, 0, 36, 0]), 36)
            assert status == 0 and b"SPICE" in inquiry[8:36], inquiry
            assert src.server.num_clients == 0 and dst.server.num_clients == 1
    finally:
        await src.server.close()
        await dst.server.close()
