"""Two spice-gtk clients on one server (issue 16): an owner and a viewer.

Both clients show the server's picture pixel for pixel; the viewer's keys never reach the host
keyboard while the owner's do; spice-gtk is offered, and links, only the channels its role allows
(the viewer never sees record; linking it anyway gets ERROR_AUTH on that channel alone: spice-gtk
keeps the session, which goes on showing pictures) and both hear the playback byte for byte; ``max_clients`` 1 keeps libspice's "a new client replaces the old
one"; a link presenting the owner's connection id with the viewer's password is refused while the
owner's spice-gtk goes on; ``set_role`` changes both clients at once.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

import numpy as np
import pytest

from spiceserver import FramebufferDisplay, PlaybackChannel, Role
from spiceserver.desktop import SyntheticDesktop
from spiceserver.proto.enums import ChannelType, LinkErr, MouseMode
from tests.conftest import Running, start_server
from tests.interop.harness import GiClient, controlled_client, format_events, same_picture, tone_sequence, write_paced
from tests.support.client import LinkFailed, link_channel

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]

OWNER_KEY = 0x30  # B
VIEWER_KEY = 0x1E  # A


async def _until(pred: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for a server-side state (checked every 20 ms; the deadline is for a real failure only)."""

    async def loop() -> None:
        while not pred():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(loop(), timeout)


def _assert_same(shown: np.ndarray | None, want: np.ndarray, client: GiClient) -> None:
    assert shown is not None, format_events(client.events, client.stderr)
    assert shown.shape == want.shape
    bad = np.argwhere(shown != (want & 0xFFFFFF))
    assert bad.size == 0, f"{len(bad)} pixels differ, first at (y, x) {tuple(bad[0])}"


def _scancodes(r: Running) -> list[bytes]:
    return [e[1] for e in r.devices.events if e[0] == "scancodes"]


def _session(r: Running, role: Role) -> int:
    return next(s.id for s in r.server.sessions() if s.role is role)


def _opened(client: GiClient) -> set[int]:
    return {int(e["type"]) for e in client.events if e.get("event") == "channel-event" and e.get("name") == "OPENED"}


async def _roles_server() -> tuple[Running, FramebufferDisplay, np.ndarray, SyntheticDesktop, PlaybackChannel]:
    r = await start_server(password="own", viewer_password="view", max_clients=2, playback_compression=False)
    desktop = SyntheticDesktop(640, 480)
    fb = r.server.add_framebuffer_display(640, 480)
    frame = desktop.frame(0.0)
    fb.update(frame)
    speaker = r.server.add_playback()
    r.server.add_record(lambda pcm: None)
    return r, fb, frame, desktop, speaker


async def test_owner_and_viewer_same_picture_viewer_keys_dropped() -> None:
    r, fb, frame, desktop, speaker = await _roles_server()
    port = str(r.server.port_of())
    try:
        async with (
            controlled_client("--port", port, "--password", "own", "--wait-display", "--enable-audio", timeout=90) as owner,
            controlled_client(
                "--port", port, "--password", "view", "--wait-display", "--enable-audio", "--extra-channels", "record:0",
                "--tolerate-channel-errors", "--tolerate-channel-auth-errors", timeout=90,
            ) as viewer,  # fmt: skip
        ):
            assert [s.role for s in r.server.sessions()] == [Role.OWNER, Role.VIEWER]
            for client in (owner, viewer):
                _assert_same(await client.wait_picture(same_picture(frame), timeout=30), r.server.display_snapshot(), client)
            # a viewer linking record anyway (not offered): refused, spice-gtk keeps the session
            await viewer.expect("channel-event", name="ERROR_AUTH", type=ChannelType.RECORD, timeout=30)
            frame2 = desktop.frame(1.0)
            fb.update(frame2)
            for client in (owner, viewer):
                _assert_same(await client.wait_picture(same_picture(frame2), timeout=30), r.server.display_snapshot(), client)
            # roles as spice-gtk sees them: the viewer was never offered record, nor an agent
            await owner.expect("inputs-open")
            await viewer.expect("inputs-open")
            assert ChannelType.RECORD not in _opened(viewer) and ChannelType.PLAYBACK in _opened(viewer), format_events(viewer.events)
            await _until(lambda: ChannelType.RECORD in _opened(owner))
            # keys: the viewer's first (dropped, counted), then the owner's (delivered)
            await viewer.action({"op": "key_press_and_release", "scancode": VIEWER_KEY})
            viewer_sid = _session(r, Role.VIEWER)
            await _until(lambda: any(s.id == viewer_sid and s.inputs_dropped >= 2 for s in r.server.sessions()))  # KEY_MODIFIERS + the key
            await owner.action({"op": "key_press_and_release", "scancode": OWNER_KEY})
            await r.devices.wait_for(lambda ev: ("scancodes", bytes([OWNER_KEY, OWNER_KEY | 0x80])) in ev, timeout=30)
            assert bytes([VIEWER_KEY, VIEWER_KEY | 0x80]) not in _scancodes(r)
            assert r.server.mouse_mode == MouseMode.CLIENT  # the owner's request
            m = await r.server.metrics()
            assert m.sessions_by_role == {"owner": 1, "viewer": 1}
            # both sessions hear the playback, byte for byte (raw)
            pcm = tone_sequence([(440.0, 0.5, 0.3)])
            for client in (owner, viewer):
                await client.expect("channel-event", name="OPENED", type=ChannelType.PLAYBACK)
            speaker.start()
            await asyncio.to_thread(write_paced, speaker.write, pcm)
            for client in (owner, viewer):
                await client.expect(lambda ev: ev.get("event") == "playback-data" and ev["total"] >= len(pcm), timeout=30)
            speaker.stop()
            for client in (owner, viewer):
                stop = await client.expect("playback-stop", timeout=30)
                assert stop["sha256"] == hashlib.sha256(pcm).hexdigest(), format_events(client.events)
        assert owner.proc.returncode == 0, format_events(owner.events, owner.stderr)
        assert viewer.proc.returncode == 0, format_events(viewer.events, viewer.stderr)
    finally:
        await r.server.close()


async def test_max_clients_one_replaces_and_refuses_a_viewer_over_the_owner() -> None:
    r = await start_server(password="own", viewer_password="view")  # max_clients 1, as libspice
    r.server.add_framebuffer_display(320, 200).update(SyntheticDesktop(320, 200).frame(0.0))
    port = str(r.server.port_of())
    try:
        first = await GiClient.start("--port", port, "--password", "own", "--wait-display", "--control", timeout=60)
        await first.expect("ready", timeout=30)
        # a viewer may not replace the owner: spice-gtk reports an auth error on main
        refused = await GiClient.start("--port", port, "--password", "view", timeout=30)
        assert await refused.wait(timeout=30) == 10, format_events(refused.events, refused.stderr)
        async with controlled_client("--port", port, "--password", "own", "--wait-display", timeout=60) as second:
            code = await first.wait(timeout=30)  # replaced: the server closed its channels
            assert code == 15, format_events(first.events, first.stderr)
            assert len(r.server.sessions()) == 1 and r.server.sessions()[0].role is Role.OWNER
        assert second.proc.returncode == 0, format_events(second.events, second.stderr)
    finally:
        await r.server.close()


async def test_viewer_ticket_cannot_join_the_owner_session_and_set_role_live() -> None:
    r, fb, _frame, desktop, _speaker = await _roles_server()
    port = str(r.server.port_of())
    try:
        async with (
            # (a channel the server closes ends a gi_client session unless told to tolerate it)
            controlled_client("--port", port, "--password", "own", "--wait-display", "--enable-audio", "--tolerate-channel-errors", timeout=120) as owner,
            controlled_client("--port", port, "--password", "view", "--wait-display", "--enable-audio", "--tolerate-channel-errors", timeout=120) as viewer,
        ):
            await owner.expect("inputs-open")
            await viewer.expect("inputs-open")
            owner_sid, viewer_sid = _session(r, Role.OWNER), _session(r, Role.VIEWER)
            # a hostile link: the owner's connection id with the viewer's password
            for ctype in (ChannelType.INPUTS, ChannelType.DISPLAY):
                with pytest.raises(LinkFailed) as e:
                    await link_channel(r.ep, ctype, connection_id=owner_sid, password="view")
                assert e.value.code == LinkErr.BAD_CONNECTION_ID
            # the owner's spice-gtk goes on: keys and pictures
            await owner.action({"op": "key_press_and_release", "scancode": OWNER_KEY})
            await r.devices.wait_for(lambda ev: ("scancodes", bytes([OWNER_KEY, OWNER_KEY | 0x80])) in ev, timeout=30)
            frame2 = desktop.frame(2.0)
            fb.update(frame2)
            _assert_same(await owner.wait_picture(same_picture(frame2), timeout=30), frame2, owner)
            await _until(lambda: ChannelType.RECORD in _opened(owner))

            # swap the roles live
            r.server.set_role(owner_sid, Role.VIEWER)
            r.server.set_role(viewer_sid, Role.OWNER)
            await owner.expect(lambda ev: ev.get("event") == "channel-event" and ev.get("name") == "CLOSED" and ev.get("type") == ChannelType.RECORD)
            await _until(lambda: ChannelType.RECORD in _opened(viewer))  # offered at once, spice-gtk links it
            before = sum(s.inputs_dropped for s in r.server.sessions() if s.id == owner_sid)
            await owner.action({"op": "key_press_and_release", "scancode": VIEWER_KEY})
            await _until(lambda: any(s.id == owner_sid and s.inputs_dropped > before for s in r.server.sessions()))
            await viewer.action({"op": "key_press_and_release", "scancode": 0x2E})
            await r.devices.wait_for(lambda ev: ("scancodes", b"\x2e\xae") in ev, timeout=30)
            assert bytes([VIEWER_KEY, VIEWER_KEY | 0x80]) not in _scancodes(r)
            _assert_same(await viewer.wait_picture(same_picture(frame2), timeout=30), frame2, viewer)
            assert {s.id: s.role for s in r.server.sessions()} == {owner_sid: Role.VIEWER, viewer_sid: Role.OWNER}
            r.server.disconnect(owner_sid)
            assert await owner.wait(timeout=30) == 15, format_events(owner.events, owner.stderr)
    finally:
        await r.server.close()
