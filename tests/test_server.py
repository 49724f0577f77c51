"""End-to-end through real sockets with the pure-Python test client: link, auth, main, inputs."""

from __future__ import annotations

import asyncio

import pytest

from spiceserver.proto.enums import ChannelType, KeyboardModifiers, LinkErr, MouseButton, MouseButtonMask, MouseMode
from spiceserver.proto.messages import base as bm
from spiceserver.proto.messages import inputs as im
from spiceserver.proto.messages import main as mm
from tests.conftest import Running, start_server
from tests.support.client import Endpoint, LinkFailed, connect, link_channel


async def test_main_init_and_channels_list(running: Running) -> None:
    s = await connect(running.ep)
    assert s.init.session_id != 0
    assert s.init.agent_tokens == 10
    assert s.init.supported_mouse_modes == MouseMode.SERVER | MouseMode.CLIENT
    assert s.init.current_mouse_mode == MouseMode.SERVER
    await s.main.send(mm.AttachChannels())
    lst = await s.main.expect(mm.ChannelsList, skip=(mm.Name, mm.Uuid))
    assert [(c.type, c.id) for c in lst.channels] == [(ChannelType.INPUTS, 0)]
    await s.main.close()


async def test_name_and_uuid_sent_when_client_asks() -> None:
    import uuid

    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    r = await start_server(name="vm1", uuid=u)
    try:
        s = await connect(r.ep)
        assert (await s.main.recv()) == mm.Name(name=b"vm1\0")
        assert (await s.main.recv()) == mm.Uuid(uuid=u.bytes)
    finally:
        await r.server.close()


async def test_mouse_mode_request_switches_and_answers(running: Running) -> None:
    s = await connect(running.ep)
    await s.main.send(mm.MouseModeRequest(mode=MouseMode.CLIENT))
    mode = await s.main.expect(mm.MouseMode)
    assert mode.current_mode == MouseMode.CLIENT
    assert mode.supported_modes == MouseMode.SERVER | MouseMode.CLIENT
    assert running.server.mouse_mode == MouseMode.CLIENT


async def test_client_mouse_mode_refused_without_tablet() -> None:
    r = await start_server()
    r.server.remove_tablet()
    try:
        s = await connect(r.ep)
        assert s.init.supported_mouse_modes == MouseMode.SERVER
        await s.main.send(mm.MouseModeRequest(mode=MouseMode.CLIENT))
        await s.main.send(mm.AttachChannels())
        await s.main.expect(mm.ChannelsList)  # no MOUSE_MODE in between
        assert r.server.mouse_mode == MouseMode.SERVER
    finally:
        await r.server.close()


async def test_inputs_keys_reach_the_keyboard(running: Running) -> None:
    s = await connect(running.ep)
    inp = await s.link(ChannelType.INPUTS)
    assert await inp.expect(im.InputsInit) == im.InputsInit(keyboard_modifiers=0)
    await inp.send(im.KeyDown(code=0x1E))
    await inp.send(im.KeyUp(code=0x9E))
    await inp.send(im.KeyDown(code=0x48E0))  # E0 48: Up arrow, low byte first
    await inp.send(im.KeyUp(code=0xC8E0))
    await inp.send(im.KeyScancode(data=bytes([0x2A, 0xAA])))
    ev = await running.devices.wait_for(lambda e: len([x for x in e if x[0] == "key"]) >= 6)
    keys = [x[1:] for x in ev if x[0] == "key"]
    assert keys == [(0x1E, True), (0x1E, False), (0xE048, True), (0xE048, False), (0x2A, True), (0x2A, False)]
    raw = [x[1] for x in ev if x[0] == "scancodes"]
    assert raw[:4] == [b"\x1e", b"\x9e", b"\xe0\x48", b"\xe0\xc8"]


async def test_keys_left_down_are_released_on_disconnect(running: Running) -> None:
    s = await connect(running.ep)
    inp = await s.link(ChannelType.INPUTS)
    await inp.send(im.KeyDown(code=0x1D))  # left ctrl, never released
    await running.devices.wait_for(lambda e: ("key", 0x1D, True) in e)
    await inp.close()
    await running.devices.wait_for(lambda e: ("key", 0x1D, False) in e)


async def test_motion_in_server_mode_and_motion_ack(running: Running) -> None:
    s = await connect(running.ep)
    inp = await s.link(ChannelType.INPUTS)
    await inp.expect(im.InputsInit)
    for i in range(8):
        await inp.send(im.MouseMotion(dx=i, dy=-i, buttons_state=0))
    await inp.expect(im.MouseMotionAck)
    await inp.expect(im.MouseMotionAck)
    await inp.send(im.MousePress(button=MouseButton.LEFT, buttons_state=MouseButtonMask.LEFT))
    await inp.send(im.MouseRelease(button=MouseButton.LEFT, buttons_state=0))
    await inp.send(im.MousePress(button=MouseButton.UP, buttons_state=0))
    ev = await running.devices.wait_for(lambda e: len(e) >= 11)
    assert ev[:8] == [("motion", i, -i, 0, 0) for i in range(8)]
    assert ev[8:11] == [("motion", 0, 0, 0, 1), ("buttons", 0), ("motion", 0, 0, -1, 0)]


async def test_position_in_client_mode(running: Running) -> None:
    s = await connect(running.ep)
    await s.main.send(mm.MouseModeRequest(mode=MouseMode.CLIENT))
    await s.main.expect(mm.MouseMode)
    inp = await s.link(ChannelType.INPUTS)
    await inp.send(im.MouseMotion(dx=5, dy=5, buttons_state=0))  # ignored in client mode
    await inp.send(im.MousePosition(x=100, y=200, buttons_state=MouseButtonMask.RIGHT, display_id=0))
    await inp.send(im.MousePress(button=MouseButton.DOWN, buttons_state=0))
    await inp.send(im.MouseRelease(button=MouseButton.RIGHT, buttons_state=0))
    ev = await running.devices.wait_for(lambda e: len(e) >= 3)
    assert ev == [("position", 100, 200, 4, 0), ("wheel", 1, 0), ("buttons", 0)]


async def test_leds_both_ways(running: Running) -> None:
    running.devices.leds = KeyboardModifiers.NUM_LOCK
    running.server.kbd_leds(KeyboardModifiers.NUM_LOCK)
    s = await connect(running.ep)
    inp = await s.link(ChannelType.INPUTS)
    assert (await inp.expect(im.InputsInit)).keyboard_modifiers == KeyboardModifiers.NUM_LOCK
    running.server.kbd_leds(KeyboardModifiers.CAPS_LOCK)
    assert (await inp.expect(im.KeyModifiers)).modifiers == KeyboardModifiers.CAPS_LOCK
    # The client says num lock is on and caps lock off: the server toggles both guest locks,
    # as libspice does (compared with its own lock state, not asked from the keyboard).
    await inp.send(im.ClientKeyModifiers(modifiers=KeyboardModifiers.NUM_LOCK))
    ev = await running.devices.wait_for(lambda e: len([x for x in e if x[0] == "scancodes"]) >= 2)
    assert [x[1] for x in ev if x[0] == "scancodes"] == [b"\x45\xc5", b"\x3a\xba"]
    assert running.server.kbd_modifiers == KeyboardModifiers.NUM_LOCK
    # two seconds after a lock change the server states the locks back (libspice KEY_MODIFIERS_TTL)
    assert (await inp.expect(im.KeyModifiers, timeout=4)).modifiers == KeyboardModifiers.NUM_LOCK
    # a caps lock key press flips the tracked state too
    await inp.send(im.KeyDown(code=0x3A))
    await inp.send(im.KeyUp(code=0xBA))
    assert (await inp.expect(im.KeyModifiers, timeout=4)).modifiers == KeyboardModifiers.NUM_LOCK | KeyboardModifiers.CAPS_LOCK


async def test_password_accepted_and_refused() -> None:
    r = await start_server(password="s3cret")
    try:
        s = await connect(r.ep, password="s3cret")
        assert s.session_id
        with pytest.raises(LinkFailed) as e:
            await connect(r.ep, password="wrong")
        assert e.value.code == LinkErr.PERMISSION_DENIED and e.value.stage == "result"
    finally:
        await r.server.close()


async def test_no_password_set_refuses_everyone() -> None:
    r = await start_server(disable_ticketing=False)
    try:
        with pytest.raises(LinkFailed) as e:
            await connect(r.ep, password="")
        assert e.value.code == LinkErr.PERMISSION_DENIED
        r.server.set_ticket("later")
        assert (await connect(r.ep, password="later")).session_id
    finally:
        await r.server.close()


async def test_ticket_expiry() -> None:
    r = await start_server(disable_ticketing=False)
    try:
        r.server.set_ticket("pw", lifetime=0.3)
        await connect(r.ep, password="pw")
        await asyncio.sleep(0.4)
        with pytest.raises(LinkFailed) as e:
            await connect(r.ep, password="pw")
        assert e.value.code == LinkErr.PERMISSION_DENIED
    finally:
        await r.server.close()


async def test_bad_connection_id(running: Running) -> None:
    await connect(running.ep)
    with pytest.raises(LinkFailed) as e:
        await link_channel(running.ep, ChannelType.INPUTS, connection_id=0x1234)
    assert e.value.code == LinkErr.BAD_CONNECTION_ID and e.value.stage == "result"


async def test_channel_not_available(running: Running) -> None:
    s = await connect(running.ep)
    for ctype, cid in ((ChannelType.SMARTCARD, 0), (ChannelType.INPUTS, 3), (200, 0)):
        with pytest.raises(LinkFailed) as e:
            await link_channel(running.ep, ctype, cid, connection_id=s.session_id)
        assert e.value.code == LinkErr.CHANNEL_NOT_AVAILABLE and e.value.stage == "reply"


async def test_new_main_link_disconnects_previous_client(running: Running) -> None:
    s1 = await connect(running.ep)
    inp1 = await s1.link(ChannelType.INPUTS)
    s2 = await connect(running.ep)
    assert s2.session_id != s1.session_id
    assert await s1.main.closed()
    assert await inp1.closed()
    assert running.server.num_clients == 1


async def test_full_header_client(running: Running) -> None:
    from spiceserver.proto.enums import CommonCap

    caps = (CommonCap.PROTOCOL_AUTH_SELECTION, CommonCap.AUTH_SPICE)
    main = await link_channel(running.ep, ChannelType.MAIN, common_caps=caps)
    assert not main.conn.mini_header
    init = await main.expect(mm.Init)
    inp = await link_channel(running.ep, ChannelType.INPUTS, connection_id=init.session_id, common_caps=caps)
    await inp.expect(im.InputsInit)
    await inp.send(im.KeyDown(code=0x10))
    await running.devices.wait_for(lambda e: ("key", 0x10, True) in e)


async def test_client_without_auth_selection(running: Running) -> None:
    """Old clients skip the auth-mechanism word and send the ticket straight away."""
    main = await link_channel(running.ep, ChannelType.MAIN, common_caps=())
    await main.expect(mm.Init)


async def test_ping_is_answered_and_net_test_runs() -> None:
    r = await start_server(net_test=True)
    try:
        s = await connect(r.ep)
        sizes = []
        for _ in range(3):
            ping = await s.main.expect(bm.Ping)
            sizes.append(len(ping.data))
        assert sizes == [0, 0, 250 * 1024]
    finally:
        await r.server.close()


async def test_unix_socket(tmp_path: object) -> None:
    import pathlib

    from tests.support.client import Endpoint

    path = str(pathlib.Path(str(tmp_path)) / "spice.sock")
    r = await start_server(port=None, unix_path=path)
    try:
        s = await connect(Endpoint(unix=path))
        inp = await s.link(ChannelType.INPUTS)
        await inp.expect(im.InputsInit)
    finally:
        await r.server.close()


async def test_agent_attach_detach_plumbing(running: Running) -> None:
    running.server.remove_tablet()
    s = await connect(running.ep)  # main caps 1, 2: NAME_AND_UUID, AGENT_CONNECTED_TOKENS
    assert s.init.agent_connected == 0 and s.init.supported_mouse_modes == MouseMode.SERVER
    old = await connect(running.ep, main_caps=(1,))  # a client without AGENT_CONNECTED_TOKENS
    assert await s.main.closed()  # (it replaced the first client)
    running.server.set_agent_attached(True)
    assert await old.main.expect(mm.AgentConnected) == mm.AgentConnected()
    mode = await old.main.expect(mm.MouseMode)  # agent mouse makes client mode available
    assert mode.supported_modes == MouseMode.SERVER | MouseMode.CLIENT
    s2 = await connect(running.ep)
    assert s2.init.agent_connected == 1
    running.server.set_agent_attached(False)
    assert await s2.main.expect(mm.AgentDisconnected) == mm.AgentDisconnected(error_code=0)
    assert (await s2.main.expect(mm.MouseMode)).supported_modes == MouseMode.SERVER
    running.server.set_agent_attached(True)
    assert await s2.main.expect(mm.AgentConnectedTokens) == mm.AgentConnectedTokens(num_tokens=10)


async def test_disconnect_clients(running: Running) -> None:
    s = await connect(running.ep)
    inp = await s.link(ChannelType.INPUTS)
    running.server.disconnect_clients()
    assert await s.main.closed() and await inp.closed()
    assert running.server.num_clients == 0


async def test_channel_events_and_clients_list() -> None:
    """What a hypervisor hears (QEMU's SPICE_CONNECTED / SPICE_DISCONNECTED) and can list."""
    from spiceserver import ChannelEvent

    r = await start_server()
    events: list[ChannelEvent] = []
    seen_async: list[str] = []

    async def async_listener(ev: ChannelEvent) -> None:
        seen_async.append(f"{ev.kind} {ev.info.channel}")

    def broken(ev: ChannelEvent) -> None:
        raise RuntimeError("a listener bug must not hurt the server")

    r.server.add_channel_listener(events.append)
    r.server.add_channel_listener(async_listener)
    r.server.add_channel_listener(broken)
    try:
        s = await connect(r.ep)
        inp = await s.link(ChannelType.INPUTS)
        await inp.expect(im.InputsInit)
        (client,) = r.server.clients()
        assert client.session_id == s.session_id
        assert [(c.channel, c.channel_id, c.transport) for c in client.channels] == [("main", 0, "tcp"), ("inputs", 0, "tcp")]
        assert all(c.peer.startswith("127.0.0.1:") and c.session_id == s.session_id for c in client.channels)
        assert [(e.kind, e.info.channel) for e in events] == [("connected", "main"), ("connected", "inputs")]

        await inp.close()
        await s.main.close()
        for _ in range(100):
            if len(events) >= 4:
                break
            await asyncio.sleep(0.02)
        assert [(e.kind, e.info.channel) for e in events[2:]] == [("disconnected", "inputs"), ("disconnected", "main")]
        assert events[2].info == events[1].info  # the same channel, described the same way
        assert r.server.clients() == []
        assert seen_async[:2] == ["connected main", "connected inputs"]

        ws = await connect(Endpoint(port=r.server.port_of(), websocket=True))
        assert [(c.session_id, c.transport) for c in r.server.clients()[0].channels] == [(ws.session_id, "ws")]
        r.server.remove_channel_listener(events.append)
        await ws.main.close()
        await asyncio.sleep(0.1)
        assert len(events) == 5 and r.server.clients() == []
    finally:
        await r.server.close()


async def test_host_calls_from_another_thread(running: Running) -> None:
    """A host's emulation thread may call the device methods: the work happens on the event loop
    (no asyncio transport is touched off its loop) and the clients hear it in call order."""
    import threading

    loop_thread = threading.get_ident()
    written_on: set[int] = set()
    s = await connect(running.ep)
    inp = await s.link(ChannelType.INPUTS)
    await inp.expect(im.InputsInit)
    for cc in running.server._inputs.clients:  # spy on the transport: which thread writes
        assert cc.transport is not None
        original = cc.transport.write

        def spy(data: bytes, original: object = original) -> None:
            written_on.add(threading.get_ident())
            original(data)  # type: ignore[operator]

        cc.transport.write = spy  # type: ignore[method-assign]

    def host() -> None:
        running.server.kbd_leds(KeyboardModifiers.CAPS_LOCK)
        running.server.set_agent_attached(True)
        running.server.kbd_leds(KeyboardModifiers.NUM_LOCK)

    await asyncio.to_thread(host)
    assert (await inp.expect(im.KeyModifiers)).modifiers == KeyboardModifiers.CAPS_LOCK
    assert (await inp.expect(im.KeyModifiers)).modifiers == KeyboardModifiers.NUM_LOCK
    assert await s.main.expect(mm.AgentConnectedTokens) == mm.AgentConnectedTokens(num_tokens=10)
    assert written_on == {loop_thread}
    assert running.server.kbd_modifiers == KeyboardModifiers.NUM_LOCK and running.server.agent_attached
