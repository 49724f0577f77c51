"""The client's VD_AGENT_MONITORS_CONFIG goes to the QXL devices instead of the guest agent when
their drivers ask for it (libspice reds.cpp ``reds_on_main_agent_monitors_config``,
``reds_use_client_monitors_config``; QEMU qxl.c ``interface_client_monitors_config``)."""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Sequence

import pytest

from spiceserver.channels.base import ServerContext
from spiceserver.channels.chardev import char_device_pair
from spiceserver.channels.guest_agent import GuestAgent
from spiceserver.channels.main import AGENT_TOKENS
from spiceserver.config import ServerConfig
from spiceserver.errors import ProtocolError
from spiceserver.proto.messages import main as mm
from spiceserver.proto.vdagent import AgentMessage, AgentMessageType, ChunkPort, split_message
from spiceserver.proto.vdagent_messages import MonitorConfig, MonitorsConfig, MonitorsFlag
from spiceserver.qxl import QXLDevice
from spiceserver.qxl import layout as L
from spiceserver.qxl.guest import GuestDriver
from spiceserver.qxl.layout import Interrupt
from tests.conftest import Running, start_server
from tests.support.client import Session, connect
from tests.test_guest_agent import Guest, started
from tests.test_host_agent import SKIP, send_agent

Heads = Sequence[tuple[int, int, int, int]]

LAYOUT = MonitorsConfig((MonitorConfig(1024, 768), MonitorConfig(800, 600, x=1024, y=16)), MonitorsFlag.USE_POS)


def rom_heads(device: QXLDevice) -> list[tuple[int, ...]]:
    """(left, top, right, bottom) of each head in the ROM, after checking its crc as the driver does."""
    o = L.ROM_CLIENT_MONITORS_CONFIG_OFF
    blob = bytes(device.rom[o : o + L.ROM_CLIENT_MONITORS_CONFIG_SIZE])
    crc = L.U32.unpack_from(device.rom, L.ROM_CLIENT_MONITORS_CONFIG_CRC_OFF)[0]
    assert crc == zlib.crc32(blob, 0xFFFFFFFF) ^ 0xFFFFFFFF
    (count,) = struct.unpack_from("<H", blob)
    heads = [L.URECT.unpack_from(blob, 4 + 16 * i) for i in range(count)]
    return [(left, top, right, bottom) for top, left, bottom, right in heads]


async def until(pred: object, timeout: float = 5.0) -> None:
    async def loop() -> None:
        while not pred():  # type: ignore[operator]
            await asyncio.sleep(0.005)

    await asyncio.wait_for(loop(), timeout)


async def qxl_agent_session(r: Running, mask: int) -> tuple[QXLDevice, GuestDriver, Guest, Session]:
    device = r.server.add_qxl_device()
    driver = GuestDriver(device, setup=False)
    driver.set_int_mask(mask)
    chardev, end = char_device_pair()
    r.server.add_agent(chardev)
    guest = Guest(end)
    s = await connect(r.ep)
    await started(s)
    return device, driver, guest, s


async def test_a_driver_that_asks_gets_the_heads_in_rom_and_the_agent_nothing(running: Running) -> None:
    device, driver, guest, s = await qxl_agent_session(running, Interrupt.DISPLAY | Interrupt.CLIENT_MONITORS_CONFIG)
    await send_agent(s.main, LAYOUT.message())
    await until(lambda: driver.interrupts() & Interrupt.CLIENT_MONITORS_CONFIG)
    assert rom_heads(device) == [(0, 0, 1024, 768), (1024, 16, 1824, 616)]
    await send_agent(s.main, AgentMessage(AgentMessageType.CLIPBOARD_RELEASE, bytes(4)))
    await guest.wait(lambda: guest.got)
    assert [m.type for _, m in guest.got] == [AgentMessageType.CLIPBOARD_RELEASE]


async def test_a_layout_in_many_pieces_is_gathered_and_its_tokens_come_back(running: Running) -> None:
    device, driver, guest, s = await qxl_agent_session(running, Interrupt.CLIENT_MONITORS_CONFIG)
    big = MonitorsConfig(tuple(MonitorConfig(640, 480, x=640 * i) for i in range(250)), MonitorsFlag.USE_POS)
    pieces = split_message(big.message())
    assert len(pieces) == 3
    for _ in range(-(-AGENT_TOKENS // 3)):  # every token the client has, at least
        await send_agent(s.main, big.message())
    assert (await s.main.expect(mm.AgentToken, skip=SKIP)).num_tokens > 0
    await until(lambda: driver.interrupts() & Interrupt.CLIENT_MONITORS_CONFIG)
    heads = rom_heads(device)
    assert len(heads) == L.MAX_CLIENT_MONITORS and heads[63] == (640 * 63, 0, 640 * 64, 480)
    assert not guest.got


async def test_a_driver_that_does_not_ask_leaves_the_layout_to_the_agent(running: Running) -> None:
    device, driver, guest, s = await qxl_agent_session(running, Interrupt.DISPLAY)
    before = bytes(device.rom)
    await send_agent(s.main, LAYOUT.message())
    await guest.wait(lambda: guest.got)
    ((port, msg),) = guest.got
    assert port == ChunkPort.CLIENT and MonitorsConfig.parse(msg.data) == LAYOUT
    assert bytes(device.rom) == before and not driver.interrupts() & Interrupt.CLIENT_MONITORS_CONFIG


async def test_with_a_framebuffer_display_too_the_layout_goes_to_the_agent() -> None:
    r = await start_server()
    try:
        r.server.add_framebuffer_display(64, 64)
        _device, driver, guest, s = await qxl_agent_session(r, Interrupt.CLIENT_MONITORS_CONFIG)
        await send_agent(s.main, LAYOUT.message())
        await guest.wait(lambda: guest.got)
        assert guest.got[0][1].type == AgentMessageType.MONITORS_CONFIG
        assert not driver.interrupts() & Interrupt.CLIENT_MONITORS_CONFIG
    finally:
        await r.server.close()


class Client:
    """A main channel client as the guest agent sees it."""

    def __init__(self) -> None:
        self.done = 0

    def send_agent_pieces(self, pieces: list[bytes]) -> None:
        pass

    def agent_piece_done(self) -> None:
        self.done += 1

    def agent_backlog(self) -> int:
        return 0


class Displays:
    """The displays' answer: ``ask`` to the question, ``take`` to the heads."""

    def __init__(self, ask: bool, take: bool) -> None:
        self.ask, self.take = ask, take
        self.got: list[list[tuple[int, int, int, int]]] = []

    def __call__(self, heads: Heads | None) -> bool:
        if heads is None:
            return self.ask
        self.got.append(list(heads))
        return self.take


async def agent_with(displays: Displays) -> tuple[GuestAgent, Guest, Client]:
    ctx = ServerContext(ServerConfig(port=0))
    ctx.client_monitors_config = displays
    chardev, end = char_device_pair()
    agent = GuestAgent(ctx, chardev, lambda _attached: None)
    agent.start(asyncio.get_running_loop())
    await until(lambda: agent.attached)
    client = Client()
    agent.client_started(client)
    return agent, Guest(end), client


async def test_when_every_device_declines_the_gathered_message_goes_to_the_agent() -> None:
    # libspice only logs a device's refusal; here the devices are asked at the header, and one that
    # turns the layout down afterwards (its driver masked the interrupt) leaves it to the agent
    displays = Displays(ask=True, take=False)
    agent, guest, client = await agent_with(displays)
    msg = MonitorsConfig(tuple(MonitorConfig(100 + i, 50) for i in range(120))).message()
    pieces = split_message(msg)
    assert all(agent.from_client(client, p) for p in pieces)  # consumed: the tokens go back at once
    await guest.wait(lambda: guest.got)
    assert guest.got == [(ChunkPort.CLIENT, msg)]
    assert displays.got == [[(0, 0, 100 + i, 50) for i in range(120)]] and client.done == 0


async def test_a_taken_layout_never_reaches_the_agent_and_the_next_message_does() -> None:
    displays = Displays(ask=True, take=True)
    agent, guest, client = await agent_with(displays)
    for p in split_message(LAYOUT.message()):
        assert agent.from_client(client, p)
    assert displays.got == [[(0, 0, 1024, 768), (1024, 16, 800, 600)]]
    release = AgentMessage(AgentMessageType.CLIPBOARD_RELEASE, bytes(4))
    assert agent.from_client(client, release.pack())
    await guest.wait(lambda: guest.got)
    assert guest.got == [(ChunkPort.CLIENT, release)]


async def test_a_layout_over_libspices_bound_or_malformed_drops_the_client() -> None:
    agent, _guest, client = await agent_with(Displays(ask=True, take=True))
    too_big = MonitorsConfig(tuple(MonitorConfig(1, 1) for _ in range(310))).message()
    with pytest.raises(ProtocolError):
        agent.from_client(client, split_message(too_big)[0])
    agent, _guest, client = await agent_with(Displays(ask=True, take=True))
    short = AgentMessage(AgentMessageType.MONITORS_CONFIG, struct.pack("<II", 3, 0))  # 3 monitors, none there
    with pytest.raises(ProtocolError):
        agent.from_client(client, short.pack())


async def test_a_half_gathered_layout_is_forgotten_when_its_client_goes() -> None:
    displays = Displays(ask=True, take=True)
    agent, _guest, client = await agent_with(displays)
    first = split_message(MonitorsConfig(tuple(MonitorConfig(8, 8) for _ in range(150))).message())[0]
    assert agent.from_client(client, first)
    agent.client_gone(client)
    again = Client()
    agent.client_started(again)
    for p in split_message(LAYOUT.message()):
        assert agent.from_client(again, p)
    assert displays.got == [[(0, 0, 1024, 768), (1024, 16, 800, 600)]]
