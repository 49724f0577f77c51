"""The host-answered clipboard and monitors config, with the test client playing spice-gtk's part:
grabs, requests, data and releases both ways, selections and grab serials, sync and async host
handlers, the client's max clipboard, pushes held for tokens, malformed bodies ending the session."""

from __future__ import annotations

import asyncio
import logging
import struct
import threading

import pytest

from spiceserver.channels.host_agent import HostAgent
from spiceserver.channels.host_clipboard import (
    ClipboardDuty,
    ClipboardUnavailable,
    HostClipboard,
    add_clipboard_handler,
)
from spiceserver.channels.host_monitors import add_monitors_config_handler
from spiceserver.proto.enums import ChannelType
from spiceserver.proto.messages import inputs as im
from spiceserver.proto.messages import main as mm
from spiceserver.proto.vdagent import AgentCap, AgentMessage, AgentMessageType, AgentStreamReader, AnnounceCapabilities
from spiceserver.proto.vdagent_messages import (
    Clipboard,
    ClipboardGrab,
    ClipboardRelease,
    ClipboardRequest,
    ClipboardSelection,
    ClipboardType,
    MaxClipboard,
    MonitorConfig,
    MonitorsConfig,
    MonitorsFlag,
    Reply,
    ReplyError,
)
from tests.conftest import Running
from tests.support.client import Session, connect
from tests.test_host_agent import GTK_CAPS, SKIP, recv_agent, send_agent, start_agent, wait_until

CB = ClipboardSelection.CLIPBOARD
PRIMARY = ClipboardSelection.PRIMARY
TEXT = ClipboardType.UTF8_TEXT
PNG = ClipboardType.IMAGE_PNG


def host_agent(running: Running) -> HostAgent:
    # the server has no public accessor yet (the lead adds one to reds.py)
    return running.server.host_agent


class Recorder:
    """A host clipboard recording what the client does; answers requests from ``offer``."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []
        self.offer: dict[tuple[int, int], bytes | None] = {}

    async def on_grab(self, sel: int, types: tuple[int, ...]) -> None:
        await asyncio.sleep(0)
        self.events.append(("grab", sel, types))

    def on_release(self, sel: int) -> None:
        self.events.append(("release", sel))

    def on_data(self, sel: int, ctype: int, data: bytes) -> None:
        self.events.append(("data", sel, ctype, data))

    def on_request(self, sel: int, ctype: int) -> bytes | None:
        self.events.append(("request", sel, ctype))
        return self.offer.get((sel, ctype))

    def register(self, running: Running) -> HostClipboard:
        return add_clipboard_handler(host_agent(running), self.on_grab, self.on_data, self.on_request, self.on_release)


async def started(
    running: Running, caps: frozenset[int] = GTK_CAPS, tokens: int = 0xFFFFFFFF
) -> tuple[Session, AgentStreamReader]:
    s = await connect(running.ep)
    assert s.init.agent_connected == 1
    reader = await start_agent(s, caps, tokens)
    ann = await recv_agent(s.main, reader)
    assert ann.type == AgentMessageType.ANNOUNCE_CAPABILITIES
    return s, reader


async def test_caps_and_a_host_grab_offered_on_announce(running: Running) -> None:
    clip = Recorder().register(running)
    clip.grab(CB, [TEXT, PNG])
    s = await connect(running.ep)
    reader = await start_agent(s)
    ann = AnnounceCapabilities.parse((await recv_agent(s.main, reader)).data)
    assert ann.caps == {
        AgentCap.CLIPBOARD_BY_DEMAND,
        AgentCap.CLIPBOARD_SELECTION,
        AgentCap.CLIPBOARD_GRAB_SERIAL,
        AgentCap.CLIPBOARD_NO_RELEASE_ON_REGRAB,
        AgentCap.MAX_CLIPBOARD,
        AgentCap.FILE_XFER_DISABLED,
    }
    grab = await recv_agent(s.main, reader)
    assert ClipboardGrab.parse(grab.data, selection=True, serial=True) == ClipboardGrab((TEXT, PNG), CB, 0)
    clip.close()
    assert await s.main.expect(mm.AgentDisconnected, skip=(*SKIP, mm.AgentData)) == mm.AgentDisconnected(error_code=0)


async def test_client_grab_then_host_request_gets_the_data(running: Running) -> None:
    rec = Recorder()
    clip = rec.register(running)
    s, reader = await started(running)
    await send_agent(s.main, ClipboardGrab((TEXT,), CB, 0).message())
    await wait_until(lambda: rec.events)
    assert rec.events == [("grab", CB, (TEXT,))] and clip.client_grabs == {CB: (TEXT,)}
    task = asyncio.ensure_future(clip.request(CB, TEXT))
    req = await recv_agent(s.main, reader)
    assert ClipboardRequest.parse(req.data, selection=True) == ClipboardRequest(TEXT, CB)
    await send_agent(s.main, Clipboard(TEXT, "héllo".encode(), CB).message())
    assert await task == "héllo".encode()
    assert rec.events[-1] == ("data", CB, TEXT, "héllo".encode())
    # a type the client did not offer, a selection it does not own
    with pytest.raises(ClipboardUnavailable):
        await clip.request(CB, PNG)
    with pytest.raises(ClipboardUnavailable):
        await clip.request(PRIMARY, TEXT)
    # "nothing" from the client fails the request
    task = asyncio.ensure_future(clip.request(CB, TEXT))
    await recv_agent(s.main, reader)
    await send_agent(s.main, Clipboard(ClipboardType.NONE, b"", CB).message())
    with pytest.raises(ClipboardUnavailable):
        await task


async def test_a_request_from_another_thread(running: Running) -> None:
    clip = Recorder().register(running)
    s, reader = await started(running)
    await send_agent(s.main, ClipboardGrab((TEXT,), PRIMARY, 0).message())
    await wait_until(lambda: clip.client_grabs)
    box: list[bytes] = []
    t = threading.Thread(target=lambda: box.append(clip.request_future(PRIMARY, TEXT).result(5)))
    t.start()
    req = await recv_agent(s.main, reader)
    assert ClipboardRequest.parse(req.data, selection=True) == ClipboardRequest(TEXT, PRIMARY)
    await send_agent(s.main, Clipboard(TEXT, b"primary", PRIMARY).message())
    await asyncio.get_running_loop().run_in_executor(None, t.join)
    assert box == [b"primary"]


async def test_client_release_and_disconnect_fail_requests_and_tell_the_host(running: Running) -> None:
    rec = Recorder()
    clip = rec.register(running)
    s, reader = await started(running)
    await send_agent(s.main, ClipboardGrab((TEXT,), CB, 0).message())
    await send_agent(s.main, ClipboardGrab((PNG,), PRIMARY, 0).message())
    await wait_until(lambda: len(clip.client_grabs) == 2)
    task = asyncio.ensure_future(clip.request(CB, TEXT))
    await recv_agent(s.main, reader)
    await send_agent(s.main, ClipboardRelease(CB).message())
    with pytest.raises(ClipboardUnavailable, match="released"):
        await task
    assert ("release", CB) in rec.events and clip.client_grabs == {PRIMARY: (PNG,)}
    task = asyncio.ensure_future(clip.request(PRIMARY, PNG))
    await recv_agent(s.main, reader)
    await s.main.close()
    with pytest.raises(ClipboardUnavailable, match="went away"):
        await task
    await wait_until(lambda: ("release", PRIMARY) in rec.events)
    assert clip.client_grabs == {}


async def test_host_grab_client_requests_sync_and_async(running: Running) -> None:
    rec = Recorder()
    rec.offer[(CB, TEXT)] = b"from the host"
    clip = rec.register(running)
    s, reader = await started(running)
    clip.grab(CB, [TEXT])
    grab = await recv_agent(s.main, reader)
    assert ClipboardGrab.parse(grab.data, selection=True, serial=True) == ClipboardGrab((TEXT,), CB, 0)
    await send_agent(s.main, ClipboardRequest(TEXT, CB).message())
    data = await recv_agent(s.main, reader)
    assert Clipboard.parse(data.data, selection=True) == Clipboard(TEXT, b"from the host", CB)
    # a type not grabbed, and a handler with nothing: NONE
    await send_agent(s.main, ClipboardRequest(PNG, CB).message())
    assert Clipboard.parse((await recv_agent(s.main, reader)).data, selection=True) == Clipboard(
        ClipboardType.NONE, b"", CB
    )
    # an async handler on PRIMARY, answering after a while (the session goes on meanwhile)
    gate = asyncio.Event()

    async def slow(sel: int, ctype: int) -> bytes:
        await gate.wait()
        return b"\x89PNG" + bytes(5000)

    other = add_clipboard_handler(host_agent(running), on_request=slow)
    other.grab(PRIMARY, [PNG])
    grab = await recv_agent(s.main, reader)
    assert ClipboardGrab.parse(grab.data, selection=True, serial=True) == ClipboardGrab((PNG,), PRIMARY, 0)
    await send_agent(s.main, ClipboardRequest(PNG, PRIMARY).message())
    await send_agent(s.main, ClipboardRequest(TEXT, CB).message())  # answered first
    assert Clipboard.parse((await recv_agent(s.main, reader)).data, selection=True).data == b"from the host"
    gate.set()
    big = Clipboard.parse((await recv_agent(s.main, reader)).data, selection=True)
    assert big == Clipboard(PNG, b"\x89PNG" + bytes(5000), PRIMARY)
    # release goes out; a second grab needs no release (NO_RELEASE_ON_REGRAB) and counts the serial
    clip.release(CB)
    assert ClipboardRelease.parse((await recv_agent(s.main, reader)).data, selection=True) == ClipboardRelease(CB)
    clip.grab(CB, [TEXT])
    clip.grab(CB, [TEXT, PNG])
    serials = [
        ClipboardGrab.parse((await recv_agent(s.main, reader)).data, selection=True, serial=True).serial
        for _ in range(2)
    ]
    assert serials == [1, 2]
    # the client's grab with serial 7 wins; the host's next grab follows it
    await send_agent(s.main, ClipboardGrab((TEXT,), CB, 7).message())
    await wait_until(lambda: clip.client_grabs.get(CB) == (TEXT,))
    await send_agent(s.main, ClipboardRequest(TEXT, CB).message())  # the host no longer owns it
    assert Clipboard.parse((await recv_agent(s.main, reader)).data, selection=True).type == ClipboardType.NONE
    clip.grab(CB, [TEXT])
    grab = await recv_agent(s.main, reader)
    assert ClipboardGrab.parse(grab.data, selection=True, serial=True).serial == 8
    assert clip.client_grabs == {}
    other.close()


async def test_a_client_without_selections_or_serials(running: Running) -> None:
    rec = Recorder()
    rec.offer[(CB, TEXT)] = b"x"
    clip = rec.register(running)
    s, reader = await started(running, caps=frozenset({AgentCap.CLIPBOARD_BY_DEMAND}))
    clip.grab(PRIMARY, [TEXT])  # not for this client
    clip.grab(CB, [TEXT])
    grab = await recv_agent(s.main, reader)
    assert grab.data == struct.pack("<I", TEXT)
    await send_agent(s.main, ClipboardRequest(TEXT).message())
    assert (await recv_agent(s.main, reader)).data == struct.pack("<I", TEXT) + b"x"
    await send_agent(s.main, ClipboardGrab((PNG,)).message())
    await wait_until(lambda: clip.client_grabs == {CB: (PNG,)})


async def test_the_clients_max_clipboard_bounds_host_data(running: Running) -> None:
    rec = Recorder()
    rec.offer[(CB, TEXT)] = b"0123456789"
    clip = rec.register(running)
    s, reader = await started(running)
    await send_agent(s.main, MaxClipboard(9).message())
    clip.grab(CB, [TEXT])
    await recv_agent(s.main, reader)
    await send_agent(s.main, ClipboardRequest(TEXT, CB).message())
    assert Clipboard.parse((await recv_agent(s.main, reader)).data, selection=True).type == ClipboardType.NONE
    await send_agent(s.main, MaxClipboard(10).message())
    await send_agent(s.main, ClipboardRequest(TEXT, CB).message())
    assert Clipboard.parse((await recv_agent(s.main, reader)).data, selection=True).data == b"0123456789"


async def test_a_client_clipboard_over_the_hosts_bound_ends_the_session(running: Running) -> None:
    Recorder().register(running)
    host_agent(running).duty(ClipboardDuty).max_size = 3000
    s, reader = await started(running)
    await send_agent(s.main, Clipboard(TEXT, bytes(3000), CB).message())  # at the bound: fine
    await send_agent(s.main, AnnounceCapabilities(True, GTK_CAPS).message())
    assert (await recv_agent(s.main, reader)).type == AgentMessageType.ANNOUNCE_CAPABILITIES
    await send_agent(s.main, Clipboard(TEXT, bytes(3001), CB).message())
    assert await s.main.closed()


async def test_a_host_push_waits_for_tokens(running: Running) -> None:
    clip = Recorder().register(running)
    s, reader = await started(running, tokens=1)  # the announce answer takes it
    clip.grab(CB, [TEXT])
    with pytest.raises(TimeoutError):
        await s.main.expect(mm.AgentData, timeout=0.3, skip=SKIP)
    await s.main.send(mm.ClientAgentToken(num_tokens=1))
    grab = await recv_agent(s.main, reader)
    assert ClipboardGrab.parse(grab.data, selection=True, serial=True).types == (TEXT,)


@pytest.mark.parametrize(
    "msg",
    [
        AgentMessage(AgentMessageType.CLIPBOARD_REQUEST, bytes(5)),  # 8 with the selection
        AgentMessage(AgentMessageType.CLIPBOARD_RELEASE, b""),  # 4 with the selection
        AgentMessage(AgentMessageType.CLIPBOARD_GRAB, bytes(7)),  # selection + serial
        AgentMessage(AgentMessageType.CLIPBOARD, bytes(7)),
        AgentMessage(AgentMessageType.MAX_CLIPBOARD, bytes(5)),
        AgentMessage(AgentMessageType.MONITORS_CONFIG, struct.pack("<II", 2, 0) + bytes(20)),
    ],
)
async def test_a_malformed_body_ends_the_session(running: Running, msg: AgentMessage) -> None:
    Recorder().register(running)
    add_monitors_config_handler(host_agent(running), lambda mons: None)
    s, _ = await started(running)
    inp = await s.link(ChannelType.INPUTS)
    await inp.expect(im.InputsInit)
    await send_agent(s.main, msg)
    assert await s.main.closed() and await inp.closed()
    assert running.server.stats["protocol_errors"] >= 1


async def test_an_unknown_selection_is_ignored(running: Running, caplog: pytest.LogCaptureFixture) -> None:
    clip = Recorder().register(running)
    s, reader = await started(running)
    with caplog.at_level(logging.WARNING, logger="spiceserver"):
        await send_agent(s.main, ClipboardGrab((TEXT,), 9, 0).message())
        await send_agent(s.main, AnnounceCapabilities(True, GTK_CAPS).message())
        assert (await recv_agent(s.main, reader)).type == AgentMessageType.ANNOUNCE_CAPABILITIES
    assert "unknown selection 9" in caplog.text and clip.client_grabs == {}
    with pytest.raises(ValueError):
        clip.grab(9, [TEXT])
    with pytest.raises(ValueError):
        clip.grab(CB, [])


async def test_monitors_config_reaches_the_host_and_is_answered(running: Running) -> None:
    got: list[tuple[MonitorConfig, ...]] = []

    async def on_config(mons: tuple[MonitorConfig, ...]) -> None:
        got.append(mons)

    remove = add_monitors_config_handler(host_agent(running), on_config)
    s, reader = await started(running)
    ann = await send_and_announce(s, reader)
    assert {AgentCap.MONITORS_CONFIG, AgentCap.SPARSE_MONITORS_CONFIG, AgentCap.MONITORS_CONFIG_POSITION} <= ann.caps
    mons = (
        MonitorConfig(1024, 768, 32, 0, 0, 270, 200),
        MonitorConfig(0, 0, 32),
        MonitorConfig(800, 600, 32, 1024, 0, 210, 160),
    )
    await send_agent(s.main, MonitorsConfig(mons, MonitorsFlag.USE_POS | MonitorsFlag.PHYSICAL_SIZE).message())
    reply = await recv_agent(s.main, reader)
    assert Reply.parse(reply.data) == Reply(AgentMessageType.MONITORS_CONFIG, ReplyError.SUCCESS)
    assert got == [mons] and not got[0][1].enabled

    def broken(mons: tuple[MonitorConfig, ...]) -> None:
        raise RuntimeError("host bug")

    add_monitors_config_handler(host_agent(running), broken)
    await send_agent(s.main, MonitorsConfig(mons[:1]).message())
    reply = await recv_agent(s.main, reader)
    assert Reply.parse(reply.data) == Reply(AgentMessageType.MONITORS_CONFIG, ReplyError.ERROR)
    assert len(got) == 2 and got[1] == (MonitorConfig(1024, 768, 32, 0, 0),)
    remove()


async def send_and_announce(s: Session, reader: AgentStreamReader) -> AnnounceCapabilities:
    await send_agent(s.main, AnnounceCapabilities(True, GTK_CAPS).message())
    return AnnounceCapabilities.parse((await recv_agent(s.main, reader)).data)


async def test_pushes_reach_only_started_clients() -> None:
    ran: list[object] = []
    agent = HostAgent(lambda fn: fn())
    log = logging.getLogger("test")
    a = agent.client(log, ran.append)
    b = agent.client(log)  # no sink: held for its next answer
    agent.push(lambda c: AgentMessage(99, b"x") if c is a else None)
    assert ran == [[AgentMessage(99, b"x")]] and b.take_messages() == []
    agent.push(lambda c: AgentMessage(98))
    assert b.take_messages() == [AgentMessage(98)]
    a.close()
    a.close()
    agent.push(lambda c: AgentMessage(97))
    assert agent.clients == (b,) and len(ran) == 2


async def test_failing_request_handlers_answer_nothing(running: Running, caplog: pytest.LogCaptureFixture) -> None:
    def broken(sel: int, ctype: int) -> bytes:
        raise RuntimeError("host bug")

    async def broken_later(sel: int, ctype: int) -> bytes:
        raise RuntimeError("host bug later")

    def not_bytes(sel: int, ctype: int) -> bytes:
        return "text"  # type: ignore[return-value]

    Recorder().register(running)  # the agent is there from the start
    s, reader = await started(running)
    none = Clipboard(ClipboardType.NONE, b"", CB)
    with caplog.at_level(logging.ERROR, logger="spiceserver"):
        for handler in (broken, broken_later, not_bytes):
            clip = add_clipboard_handler(host_agent(running), on_request=handler)
            clip.grab(CB, [TEXT])
            await recv_agent(s.main, reader)
            await send_agent(s.main, ClipboardRequest(TEXT, CB).message())
            assert Clipboard.parse((await recv_agent(s.main, reader)).data, selection=True) == none
    assert "host bug later" in caplog.text and "not bytes" in caplog.text


async def test_a_large_host_clipboard_goes_out_at_once_with_tokens(running: Running) -> None:
    """700 KiB: 350 pieces, more than the main channel holds for a client without tokens."""
    rec = Recorder()
    rec.offer[(CB, TEXT)] = data = bytes(range(256)) * (700 << 2)
    clip = rec.register(running)
    s, reader = await started(running)
    clip.grab(CB, [TEXT])
    await recv_agent(s.main, reader)
    await send_agent(s.main, ClipboardRequest(TEXT, CB).message())
    assert Clipboard.parse((await recv_agent(s.main, reader)).data, selection=True).data == data
