"""The host-answered agent through the main channel, with the test client playing spice-gtk's part:
the agent appears with the host's duties, capabilities are exchanged, the client's volume reaches the
host, tokens flow both ways, a broken agent stream ends the session, a guest agent takes over."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest

from spiceserver.channels.host_agent import ClientVolume, HostAgent, VolumeSyncDuty, add_client_volume_handler
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
    AudioVolumeSync,
    FileXferStatus,
    FileXferStatusMessage,
    split_message,
)
from tests.conftest import Running
from tests.support.client import ClientChannel, Session, connect

SKIP = (mm.ChannelsList, mm.MouseMode, mm.MultiMediaTime, mm.Name, mm.Uuid)
#: what spice-gtk 0.42 announces (channel-main.c agent_announce_caps)
GTK_CAPS = frozenset(
    {
        AgentCap.MOUSE_STATE,
        AgentCap.MONITORS_CONFIG,
        AgentCap.REPLY,
        AgentCap.DISPLAY_CONFIG,
        AgentCap.CLIPBOARD_BY_DEMAND,
        AgentCap.CLIPBOARD_SELECTION,
        AgentCap.MONITORS_CONFIG_POSITION,
        AgentCap.FILE_XFER_DETAILED_ERRORS,
        AgentCap.CLIPBOARD_NO_RELEASE_ON_REGRAB,
        AgentCap.CLIPBOARD_GRAB_SERIAL,
    }
)


async def send_agent(ch: ClientChannel, msg: AgentMessage) -> None:
    for piece in split_message(msg):
        ch.conn.send(mm.ClientAgentData(data=piece))
    await ch.flush()


async def recv_agent(ch: ClientChannel, reader: AgentStreamReader) -> AgentMessage:
    while True:
        data = await ch.expect(mm.AgentData, skip=(*SKIP, mm.AgentToken))
        msgs = reader.feed(data.data)
        if msgs:
            (msg,) = msgs
            return msg


async def start_agent(s: Session, caps: frozenset[int] = GTK_CAPS, tokens: int = 0xFFFFFFFF) -> AgentStreamReader:
    """AGENT_START and ANNOUNCE_CAPABILITIES(request=1), as spice-gtk's ``agent_start``."""
    await s.main.send(mm.AgentStart(num_tokens=tokens))
    await send_agent(s.main, AnnounceCapabilities(True, caps).message())
    return AgentStreamReader(1 << 20)


def volume_sync(playback: bool, volume: tuple[int, ...], mute: bool) -> AgentMessage:
    return AudioVolumeSync(playback, mute, volume).message()


async def wait_until(pred: object, timeout: float = 5.0) -> None:
    async def loop() -> None:
        while not pred():  # type: ignore[operator]
            await asyncio.sleep(0.01)

    await asyncio.wait_for(loop(), timeout)


async def test_no_duty_no_agent(running: Running) -> None:
    s = await connect(running.ep)
    assert s.init.agent_connected == 0


async def test_the_clients_playback_volume_reaches_the_speakers_callback(running: Running) -> None:
    speaker = running.server.add_playback()
    got: list[ClientVolume] = []

    async def on_volume(v: ClientVolume) -> None:
        await asyncio.sleep(0)
        got.append(v)

    speaker.on_client_volume(on_volume)
    s = await connect(running.ep)
    assert s.init.agent_connected == 1 and s.init.agent_tokens == AGENT_TOKENS
    reader = await start_agent(s)
    reply = await recv_agent(s.main, reader)
    assert reply.type == AgentMessageType.ANNOUNCE_CAPABILITIES
    # exactly the duty's capability, and file transfer refused up front
    assert AnnounceCapabilities.parse(reply.data) == AnnounceCapabilities(
        False, frozenset({AgentCap.AUDIO_VOLUME_SYNC, AgentCap.FILE_XFER_DISABLED})
    )
    await send_agent(s.main, volume_sync(True, (32767, 32767), True))
    await send_agent(s.main, volume_sync(False, (65535, 65535), False))  # no record handler: ignored
    await wait_until(lambda: got)
    assert got == [ClientVolume(playback=True, volume=(32767, 32767), mute=True)]
    # the announce answer to request=0 is nothing
    await send_agent(s.main, AnnounceCapabilities(False, GTK_CAPS).message())
    await send_agent(s.main, volume_sync(True, (1, 2), False))
    await wait_until(lambda: len(got) == 2)
    assert got[1] == ClientVolume(True, (1, 2), False) and not s.main.received


async def test_handlers_in_order_sync_or_async_and_a_failing_one_is_logged(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    speaker = running.server.add_playback()
    order: list[str] = []

    def broken(v: ClientVolume) -> None:
        order.append("broken")
        raise RuntimeError("host bug")

    async def second(v: ClientVolume) -> None:
        order.append("second")

    speaker.on_client_volume(broken)
    speaker.on_client_volume(second)
    remove_record = add_client_volume_handler(speaker.ctx.host_agent, False, lambda v: order.append("record"))
    s = await connect(running.ep)
    await start_agent(s)
    with caplog.at_level(logging.ERROR, logger="spiceserver"):
        await send_agent(s.main, volume_sync(True, (5,), False))
        await send_agent(s.main, volume_sync(False, (6,), True))
        await wait_until(lambda: len(order) == 3)
    assert order == ["broken", "second", "record"]
    assert "client volume handler" in caplog.text
    remove_record()


async def test_the_agent_appears_and_goes_with_the_first_and_last_handler(running: Running) -> None:
    speaker = running.server.add_playback()
    s = await connect(running.ep)
    assert s.init.agent_connected == 0
    remove = speaker.on_client_volume(lambda v: None)
    assert await s.main.expect(mm.AgentConnectedTokens, skip=SKIP) == mm.AgentConnectedTokens(num_tokens=AGENT_TOKENS)
    remove()
    assert await s.main.expect(mm.AgentDisconnected, skip=SKIP) == mm.AgentDisconnected(error_code=0)


async def test_tokens_go_back_in_batches_of_five(running: Running) -> None:
    running.server.add_playback().on_client_volume(lambda v: None)
    s = await connect(running.ep)
    reader = await start_agent(s)
    await recv_agent(s.main, reader)
    for _ in range(9):  # with the announce, ten pieces: two batches
        await send_agent(s.main, volume_sync(False, (1,), False))
    assert await s.main.expect(mm.AgentToken, skip=SKIP) == mm.AgentToken(num_tokens=5)
    assert await s.main.expect(mm.AgentToken, skip=SKIP) == mm.AgentToken(num_tokens=5)
    await send_agent(s.main, AgentMessage(AgentMessageType.CLIPBOARD_RELEASE, bytes(4)))  # not ours: ignored
    await send_agent(s.main, AgentMessage(999, b"x"))  # unknown: ignored
    assert await still_answers(s)


async def still_answers(s: Session) -> bool:
    """The host agent still answers on this main channel (an ANNOUNCE request gets its reply)."""
    reader = AgentStreamReader(1 << 20)
    await send_agent(s.main, AnnounceCapabilities(True, GTK_CAPS).message())
    return (await recv_agent(s.main, reader)).type == AgentMessageType.ANNOUNCE_CAPABILITIES


async def test_server_pieces_wait_for_the_clients_tokens(running: Running) -> None:
    running.server.add_playback().on_client_volume(lambda v: None)
    s = await connect(running.ep)
    reader = await start_agent(s, tokens=0)
    await s.main.send(mm.ClientAgentToken(num_tokens=1))
    reply = await recv_agent(s.main, reader)  # only now
    assert reply.type == AgentMessageType.ANNOUNCE_CAPABILITIES


async def test_held_reply_is_not_sent_without_tokens(running: Running) -> None:
    running.server.add_playback().on_client_volume(lambda v: None)
    s = await connect(running.ep)
    await start_agent(s, tokens=0)
    with pytest.raises(TimeoutError):
        await s.main.expect(mm.AgentData, timeout=0.3, skip=SKIP)


async def test_file_transfer_is_refused_with_a_status(running: Running) -> None:
    running.server.add_playback().on_client_volume(lambda v: None)
    start = AgentMessage(AgentMessageType.FILE_XFER_START, struct.pack("<I", 3) + b"[vdagent-file-xfer]\nname=a\nsize=1\n\0")
    # spice-gtk knows DISABLED (it announces FILE_XFER_DETAILED_ERRORS)
    s = await connect(running.ep)
    reader = await start_agent(s)
    await recv_agent(s.main, reader)
    await send_agent(s.main, start)
    status = await recv_agent(s.main, reader)
    assert FileXferStatusMessage.parse(status.data) == FileXferStatusMessage(3, FileXferStatus.DISABLED)
    # an older client gets CANCELLED
    s2 = await connect(running.ep)
    reader = await start_agent(s2, caps=frozenset())
    await recv_agent(s2.main, reader)
    await send_agent(s2.main, start)
    status = await recv_agent(s2.main, reader)
    assert FileXferStatusMessage.parse(status.data) == FileXferStatusMessage(3, FileXferStatus.CANCELLED)


async def test_agent_data_before_agent_start_is_dropped(running: Running) -> None:
    got: list[ClientVolume] = []
    running.server.add_playback().on_client_volume(got.append)
    s = await connect(running.ep)
    for _ in range(AGENT_TOKENS + 2):  # not counted against the tokens either
        await send_agent(s.main, volume_sync(True, (1,), False))
    reader = await start_agent(s)
    await recv_agent(s.main, reader)
    await send_agent(s.main, volume_sync(True, (2,), False))
    await wait_until(lambda: got)
    assert got == [ClientVolume(True, (2,), False)]


@pytest.mark.parametrize(
    "piece",
    [
        struct.pack("<IIQI", 2, 6, 0, 0),  # protocol 2
        b"\x01\x00\x00\x00",  # no whole header
        bytes(2049),  # a piece over 2048 bytes
        struct.pack("<IIQI", 1, 15, 0, 2) + b"\x01\x00",  # AUDIO_VOLUME_SYNC too short
        struct.pack("<IIQI", 1, 15, 0, 1 << 30),  # a 1 GiB message
    ],
)
async def test_a_broken_agent_stream_ends_the_session(running: Running, piece: bytes) -> None:
    """libspice: ``AGENT_MSG_FILTER_PROTO_ERROR`` -> ``mcc->shutdown()``: the main channel, hence the
    whole client, goes."""
    running.server.add_playback().on_client_volume(lambda v: None)
    s = await connect(running.ep)
    inp = await s.link(ChannelType.INPUTS)
    await inp.expect(im.InputsInit)
    await start_agent(s)
    s.main.conn.send(mm.ClientAgentData(data=piece))
    await s.main.flush()
    assert await s.main.closed() and await inp.closed()
    assert running.server.stats["protocol_errors"] >= 1


async def test_a_guest_agent_takes_over_and_hands_back(running: Running) -> None:
    got: list[ClientVolume] = []
    running.server.add_playback().on_client_volume(got.append)
    running.server.remove_tablet()
    s = await connect(running.ep)
    reader = await start_agent(s)
    await recv_agent(s.main, reader)
    running.server.set_agent_attached(True)
    # the client starts its agent session over, now with the guest agent; agent mouse is possible
    assert await s.main.expect(mm.AgentDisconnected, skip=SKIP) == mm.AgentDisconnected(error_code=0)
    assert await s.main.expect(mm.AgentConnectedTokens, skip=SKIP) == mm.AgentConnectedTokens(num_tokens=AGENT_TOKENS)
    mode = await s.main.expect(mm.MouseMode, skip=SKIP)
    assert mode.supported_modes == MouseMode.SERVER | MouseMode.CLIENT
    await start_agent(s)
    await send_agent(s.main, volume_sync(True, (9,), False))  # the guest's (dropped for now), not the host's
    with pytest.raises(TimeoutError):
        await s.main.expect(mm.AgentData, timeout=0.3, skip=SKIP)
    assert not got
    running.server.set_agent_attached(False)
    assert await s.main.expect(mm.AgentDisconnected, skip=SKIP) == mm.AgentDisconnected(error_code=0)
    assert await s.main.expect(mm.AgentConnectedTokens, skip=SKIP) == mm.AgentConnectedTokens(num_tokens=AGENT_TOKENS)
    mode = await s.main.expect(mm.MouseMode, skip=SKIP)
    assert mode.supported_modes == MouseMode.SERVER  # the host agent gives no agent mouse
    reader = await start_agent(s)
    await recv_agent(s.main, reader)
    await send_agent(s.main, volume_sync(True, (10,), False))
    await wait_until(lambda: got)
    assert got == [ClientVolume(True, (10,), False)]


async def test_host_agent_caps_and_bound_follow_the_duties() -> None:
    ran: list[object] = []
    agent = HostAgent(lambda fn: fn())
    agent.subscribe(ran.append)
    duty = agent.duty(VolumeSyncDuty)
    assert agent.duty(VolumeSyncDuty) is duty and not agent.active and ran == []
    remove = duty.add_handler(True, lambda v: None)
    assert agent.active and ran == [frozenset({AgentCap.AUDIO_VOLUME_SYNC, AgentCap.FILE_XFER_DISABLED})]
    assert agent.max_message_size == 4096
    remove()
    assert not agent.active and ran[-1] is None


async def test_duties_may_not_share_message_types() -> None:
    class Other(VolumeSyncDuty):
        pass

    agent = HostAgent(lambda fn: fn())
    agent.add(VolumeSyncDuty())
    with pytest.raises(ValueError, match="clashes"):
        agent.add(Other())
    with pytest.raises(ValueError, match="clashes"):
        agent.duty(Other)
    assert len(agent.duties) == 1
