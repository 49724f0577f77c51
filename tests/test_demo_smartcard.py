"""The demo's smartcard reader (spiceserver.demo_smartcard) with a scripted client: the lines it
prints for a reader, a card and its answer to SELECT, and the status word readings."""

from __future__ import annotations

import asyncio

from spiceserver.channels.smartcard import SmartcardChannel
from spiceserver.demo_smartcard import SELECT_CAC_PKI, attach_demo_reader, describe_status
from spiceserver.proto.enums import ChannelType
from spiceserver.proto.vsc import UNDEFINED_READER_ID, VscApdu, VscAtr, VscCardRemove, VscError, VscReaderAdd
from tests.conftest import Running
from tests.support.client import connect
from tests.test_smartcard import recv, send

ATR = bytes.fromhex("3b7a18000073667465206364313434")


def test_describe_status() -> None:
    assert describe_status(b"\x90\x00") == "success"
    assert describe_status(b"\x01\x61\x0d") == "success, 13 bytes to fetch with GET RESPONSE"
    assert describe_status(b"\x6a\x82") == "applet not found"
    assert describe_status(b"\x6d\x00") == "instruction not supported"
    assert describe_status(b"\x63\xc2") == "status 63 C2"
    assert describe_status(b"") == "no status word"


async def test_the_demo_prints_the_card_and_its_answer(running: Running) -> None:
    channel = running.server.register_channel(SmartcardChannel)
    reader = channel.add_reader()
    lines: list[str] = []
    changed = asyncio.Event()

    def out(line: str) -> None:
        lines.append(line)
        changed.set()

    async def wait_lines(n: int) -> None:
        while len(lines) < n:
            changed.clear()
            await asyncio.wait_for(changed.wait(), 5)

    detach = attach_demo_reader(reader, out)
    s = await connect(running.ep)
    ch = await s.link(ChannelType.SMARTCARD, 0)
    await send(ch, VscReaderAdd(UNDEFINED_READER_ID, b"Spice Software Smartcard"))
    assert await recv(ch) == VscError(0, 0)
    await send(ch, VscAtr(0, ATR))
    assert await recv(ch) == VscError(0, 0)
    assert await recv(ch) == VscApdu(0, SELECT_CAC_PKI)
    await send(ch, VscApdu(0, b"\x61\x0d"))
    await wait_lines(3)
    await send(ch, VscCardRemove(0))
    assert await recv(ch) == VscError(0, 0)
    await wait_lines(4)
    assert lines == [
        "smartcard 0: reader 'Spice Software Smartcard' added",
        "smartcard 0: card inserted, ATR 3b 7a 18 00 00 73 66 74 65 20 63 64 31 34 34",
        "smartcard 0: SELECT CAC applet -> 61 0d (success, 13 bytes to fetch with GET RESPONSE)",
        "smartcard 0: card removed",
    ]
    detach()
    await send(ch, VscAtr(0, ATR))  # detached: acknowledged, nothing printed
    assert await recv(ch) == VscError(0, 0)
    assert len(lines) == 4
