"""The guest agent on a char device, relayed to the client's main channel (libspice reds.cpp's agent
half): attach and detach with the device, chunks both ways, the message filter and the capability
rewrite, tokens and back-pressure, CLIENT_DISCONNECTED and agent mouse on the server port."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from spiceserver.channels.chardev import DeviceEnd, char_device_pair
from spiceserver.channels.main import AGENT_TOKENS
from spiceserver.proto.enums import ChannelType, MouseMode
from spiceserver.proto.messages import inputs as im
from spiceserver.proto.messages import main as mm
from spiceserver.proto.vdagent import (
    AgentCap,
    AgentMessage,
    AgentMessageType,
    AgentStreamReader,
    AnnounceCapabilities,
    ChunkPort,
    ChunkReader,
    pack_chunk,
)
from spiceserver.proto.vdagent_messages import MouseState
from tests.conftest import Running, start_server
from tests.support.client import Session, connect
from tests.test_host_agent import SKIP, recv_agent, send_agent

GUEST_CAPS = frozenset({AgentCap.MOUSE_STATE, AgentCap.MONITORS_CONFIG, AgentCap.CLIPBOARD_BY_DEMAND, AgentCap.CLIPBOARD_SELECTION})


class Guest:
    """The agent's end of the device: whole messages per port, as spice-vdagentd would see them."""

    def __init__(self, end: DeviceEnd) -> None:
        self.end = end
        self.chunks = ChunkReader()
        self.readers = {port: AgentStreamReader(0xFFFFFFFF, aligned=False) for port in (ChunkPort.CLIENT, ChunkPort.SERVER)}
        self.got: list[tuple[int, AgentMessage]] = []
        self.bytes = 0
        self.changed = asyncio.Event()
        end.on_data(self._data)

    def _data(self, data: bytes) -> None:
        self.bytes += len(data)
        for piece in self.chunks.feed(data):
            for msg in self.readers[ChunkPort(piece.port)].feed(piece.data):
                self.got.append((piece.port, msg))
        self.changed.set()

    def send(self, port: int, msg: AgentMessage) -> None:
        self.end.write(pack_chunk(port, msg.pack()))

    async def wait(self, pred: Any, timeout: float = 5.0) -> None:
        async def loop() -> None:
            while not pred():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)


async def agent_session(running: Running, opened: bool = True) -> tuple[Guest, Session]:
    device, end = char_device_pair(opened=opened)
    running.server.add_agent(device)
    guest = Guest(end)
    s = await connect(running.ep)
    return guest, s


async def started(s: Session) -> AgentStreamReader:
    await s.main.send(mm.AgentStart(num_tokens=0xFFFFFFFF))
    return AgentStreamReader(1 << 20)


async def test_client_and_agent_talk_through_the_device(running: Running) -> None:
    guest, s = await agent_session(running)
    assert s.init.agent_connected == 1 and s.init.agent_tokens == AGENT_TOKENS
    reader = await started(s)
    await send_agent(s.main, AnnounceCapabilities(True, frozenset({AgentCap.MOUSE_STATE})).message())
    await guest.wait(lambda: guest.got)
    port, msg = guest.got[0]
    assert port == ChunkPort.CLIENT and msg.type == AgentMessageType.ANNOUNCE_CAPABILITIES
    guest.send(ChunkPort.CLIENT, AnnounceCapabilities(False, GUEST_CAPS).message())
    guest.send(ChunkPort.SERVER, AnnounceCapabilities(False, GUEST_CAPS).message())  # for the server: dropped
    got = await recv_agent(s.main, reader)
    assert AnnounceCapabilities.parse(got.data).caps == GUEST_CAPS


async def test_tokens_go_back_as_the_device_takes_the_pieces(running: Running) -> None:
    guest, s = await agent_session(running)
    await started(s)
    for _ in range(AGENT_TOKENS):
        await send_agent(s.main, AgentMessage(AgentMessageType.CLIPBOARD_RELEASE, bytes(4)))
    tok = await s.main.expect(mm.AgentToken, skip=SKIP)
    assert tok.num_tokens == 5
    await guest.wait(lambda: len(guest.got) == AGENT_TOKENS)


async def test_a_device_that_does_not_read_holds_the_tokens() -> None:
    r = await start_server()
    try:
        device, end = char_device_pair(write_limit=64)
        r.server.add_agent(device)
        s = await connect(r.ep)
        await started(s)
        for _ in range(6):  # 6 x (8 + 20 + 4) bytes: past the 64-byte bound, nobody reads
            await send_agent(s.main, AgentMessage(AgentMessageType.CLIPBOARD_RELEASE, bytes(4)))
        await s.main.send(mm.AttachChannels())
        await s.main.expect(mm.ChannelsList, skip=(mm.MouseMode, mm.MultiMediaTime))
        assert device.queued <= 64 + 32
        guest = Guest(end)  # the agent starts reading: the held pieces go, the tokens come back
        assert (await s.main.expect(mm.AgentToken, skip=SKIP)).num_tokens == 5
        await guest.wait(lambda: len(guest.got) == 6)
    finally:
        await r.server.close()


async def test_copy_paste_off_hides_the_clipboard_and_drops_its_messages() -> None:
    r = await start_server(agent_copypaste=False, agent_file_xfer=False)
    try:
        guest, s = await agent_session(r)
        reader = await started(s)
        await send_agent(s.main, AnnounceCapabilities(True, frozenset({AgentCap.MOUSE_STATE})).message())
        await guest.wait(lambda: guest.got)  # the client's AGENT_START was handled: the agent may answer
        guest.got.clear()
        guest.send(ChunkPort.CLIENT, AnnounceCapabilities(False, GUEST_CAPS).message())
        caps = AnnounceCapabilities.parse((await recv_agent(s.main, reader)).data).caps
        assert AgentCap.CLIPBOARD_BY_DEMAND not in caps and AgentCap.CLIPBOARD_SELECTION not in caps
        assert AgentCap.FILE_XFER_DISABLED in caps and AgentCap.MOUSE_STATE in caps
        await send_agent(s.main, AgentMessage(AgentMessageType.CLIPBOARD_RELEASE, bytes(4)))
        await send_agent(s.main, AgentMessage(AgentMessageType.MAX_CLIPBOARD, bytes(4)))
        await guest.wait(lambda: guest.got)
        assert [m.type for _, m in guest.got] == [AgentMessageType.MAX_CLIPBOARD]
    finally:
        await r.server.close()


async def test_the_agent_comes_and_goes_with_its_device(running: Running) -> None:
    guest, s = await agent_session(running, opened=False)
    assert s.init.agent_connected == 0
    guest.end.set_open(True)
    assert await s.main.expect(mm.AgentConnectedTokens, skip=SKIP) == mm.AgentConnectedTokens(num_tokens=AGENT_TOKENS)
    guest.end.set_open(False)
    assert await s.main.expect(mm.AgentDisconnected, skip=SKIP) == mm.AgentDisconnected(error_code=0)


async def test_garbage_from_the_agent_detaches_it_and_the_session_goes_on(running: Running) -> None:
    guest, s = await agent_session(running)
    await started(s)
    guest.end.write(pack_chunk(ChunkPort.CLIENT, b"\x07" * 20))  # protocol 0x07070707: not an agent message
    assert await s.main.expect(mm.AgentDisconnected, skip=SKIP) == mm.AgentDisconnected(error_code=0)
    await s.main.send(mm.AttachChannels())
    await s.main.expect(mm.ChannelsList, skip=(mm.MouseMode, mm.MultiMediaTime))


async def test_an_agent_announcing_a_huge_message_is_detached(running: Running) -> None:
    """An agent message announcing more than ``agent_max_message_size``: spice-gtk would allocate it."""
    guest, s = await agent_session(running)
    await started(s)
    huge = AgentMessage(AgentMessageType.CLIPBOARD, b"").pack()[:-4] + (300 << 20).to_bytes(4, "little")
    guest.end.write(pack_chunk(ChunkPort.CLIENT, huge + bytes(100)))
    assert await s.main.expect(mm.AgentDisconnected, skip=SKIP) == mm.AgentDisconnected(error_code=0)
    assert not any(isinstance(m, mm.AgentData) for m in s.main.received)


async def test_client_disconnect_and_agent_mouse_reach_the_server_port(running: Running) -> None:
    guest, s = await agent_session(running)
    running.server.remove_tablet()
    await started(s)
    await s.main.send(mm.MouseModeRequest(mode=MouseMode.CLIENT))
    mode = await s.main.expect(mm.MouseMode, skip=(mm.ChannelsList, mm.MultiMediaTime, mm.Name, mm.Uuid))
    while mode.current_mode != MouseMode.CLIENT:
        mode = await s.main.expect(mm.MouseMode, skip=(mm.ChannelsList, mm.MultiMediaTime, mm.Name, mm.Uuid))
    inputs = await s.link(ChannelType.INPUTS)
    await inputs.expect(im.InputsInit)
    await inputs.send(im.MousePosition(x=100, y=200, buttons_state=1, display_id=0))
    await guest.wait(lambda: any(m.type == AgentMessageType.MOUSE_STATE for _, m in guest.got))
    port, msg = next((p, m) for p, m in guest.got if m.type == AgentMessageType.MOUSE_STATE)
    assert port == ChunkPort.SERVER
    assert MouseState.parse(msg.data) == MouseState(100, 200, 2, 0)  # SPICE left (1) -> agent left (2)
    await s.main.close()
    await guest.wait(lambda: any(m.type == AgentMessageType.CLIENT_DISCONNECTED for _, m in guest.got))
    assert [p for p, m in guest.got if m.type == AgentMessageType.CLIENT_DISCONNECTED] == [ChunkPort.SERVER]


async def test_a_client_piece_over_2048_bytes_cuts_off_its_main_channel(running: Running) -> None:
    """libspice ``agent_msg_filter_process_data``: a piece above VD_AGENT_MAX_DATA_SIZE is a protocol
    error; the main channel (hence the session) closes, the agent stays attached for the next client."""
    _guest, s = await agent_session(running)
    await started(s)
    header = AgentMessage(AgentMessageType.CLIPBOARD, bytes(4000)).pack()
    s.main.conn.send(mm.ClientAgentData(data=header[:2049]))
    await s.main.flush()
    assert await s.main.closed()
    s2 = await connect(running.ep)
    assert s2.init.agent_connected == 1


async def test_an_announced_4_gib_message_cuts_off_the_client_and_the_agent_stays(running: Running, caplog: pytest.LogCaptureFixture) -> None:
    """``agent_max_message_size``: spice-vdagentd allocates a message as announced, so a client
    announcing 4 GiB is cut off before anything of it reaches the agent (libspice relays it)."""
    guest, s = await agent_session(running)
    await started(s)
    huge = AgentMessage(AgentMessageType.CLIPBOARD, b"").pack()[:-4] + (0xFFFFFFFF).to_bytes(4, "little")
    with caplog.at_level(logging.INFO, logger="spiceserver"):
        s.main.conn.send(mm.ClientAgentData(data=huge + bytes(100)))
        await s.main.flush()
        assert await s.main.closed()
    assert "4294967295 bytes announced" in caplog.text
    await guest.wait(lambda: guest.got)  # the agent hears the client went, and nothing else
    assert [(port, msg.type) for port, msg in guest.got] == [(ChunkPort.SERVER, AgentMessageType.CLIENT_DISCONNECTED)]
    assert guest.bytes == 8 + 20
    s2 = await connect(running.ep)
    assert s2.init.agent_connected == 1


async def test_a_message_up_to_the_limit_is_relayed_piece_by_piece_never_buffered(running: Running) -> None:
    """Below the limit the filter passes a message's pieces as they come: an announced 100 MiB costs
    nothing but the pieces actually sent."""
    guest, s = await agent_session(running)
    await started(s)
    big = AgentMessage(AgentMessageType.CLIPBOARD, b"").pack()[:-4] + (100 << 20).to_bytes(4, "little")
    s.main.conn.send(mm.ClientAgentData(data=big + bytes(100)))
    await s.main.flush()
    await guest.wait(lambda: guest.bytes >= 8 + 20 + 100)
    assert guest.bytes == 8 + 20 + 100, guest.bytes  # one chunk: its header, the message header, 100 bytes
    assert not guest.got  # an incomplete message: nothing was gathered on the way


async def test_a_client_that_ignores_its_tokens_is_cut_off(running: Running) -> None:
    """The client may send as many AGENT_DATA as its tokens (10, given back in fives): an 11th with
    none given back closes its main channel; the agent stays for the next client."""
    device, _end = char_device_pair(write_limit=1)  # no on_data: the device takes one piece, then holds the tokens
    running.server.add_agent(device)
    s = await connect(running.ep)
    await started(s)
    for _ in range(AGENT_TOKENS + 1):
        s.main.conn.send(mm.ClientAgentData(data=AgentMessage(AgentMessageType.CLIPBOARD_RELEASE, bytes(4)).pack()))
    await s.main.flush()
    assert await s.main.closed()
    assert not any(isinstance(m, mm.AgentToken) for m in s.main.received)
    s2 = await connect(running.ep)
    assert s2.init.agent_connected == 1
    await device.close()


async def test_a_flooding_agent_waits_for_a_client_that_does_not_read(running: Running) -> None:
    """The agent writes 8 MiB of clipboard data at once while the client reads nothing: the server
    stops reading the device once 64 KiB wait for the client (libspice bounds its agent send queue),
    nothing is dropped, and all of it arrives when the client reads again."""
    import spiceserver.channels.guest_agent as ga

    guest, s = await agent_session(running)
    await started(s)
    await send_agent(s.main, AnnounceCapabilities(True, frozenset({AgentCap.MOUSE_STATE})).message())
    await guest.wait(lambda: guest.got)
    size = 8 << 20
    msg = AgentMessage(AgentMessageType.CLIPBOARD, bytes(size)).pack()
    for i in range(0, len(msg), 1 << 20):
        guest.end.write(pack_chunk(ChunkPort.CLIENT, msg[i : i + (1 << 20)], max_chunk_size=1 << 20))
    device = guest.end.device

    async def throttled() -> None:
        while not device.paused:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(throttled(), 10)
    (cc,) = [c for c in running.server._main.clients]  # type: ignore[attr-defined]
    assert cc.agent_backlog() < ga.MAX_BACKLOG + 64 * 1024 + 4 * 1024 * 1024  # kernel buffers hold the rest
    got = 0
    while got < len(msg):
        got += len((await s.main.expect(mm.AgentData, skip=(*SKIP, mm.AgentToken))).data)
    assert got == len(msg)


async def test_the_agent_gets_the_monitors_config_without_physical_sizes(running: Running) -> None:
    """spice-gtk appends the monitors' physical sizes, which spice-vdagentd refuses by size: with no
    display taking the config, the agent gets it without them (monitors unchanged)."""
    from spiceserver.proto.vdagent_messages import MonitorConfig, MonitorsConfig, MonitorsFlag

    guest, s = await agent_session(running)
    await started(s)
    sent = MonitorsConfig((MonitorConfig(800, 600, 32, 0, 0, 300, 200), MonitorConfig(0, 0)), MonitorsFlag.USE_POS | MonitorsFlag.PHYSICAL_SIZE)
    await send_agent(s.main, sent.message())
    await guest.wait(lambda: guest.got)
    ((port, msg),) = guest.got
    assert port == ChunkPort.CLIENT and msg.type == AgentMessageType.MONITORS_CONFIG
    assert len(msg.data) == 8 + 2 * 20
    got = MonitorsConfig.parse(msg.data)
    assert got.flags == MonitorsFlag.USE_POS
    assert [(m.width, m.height, m.x, m.y) for m in got.monitors] == [(800, 600, 0, 0), (0, 0, 0, 0)]
