"""Hostile network input: every bad connection gets the right link error or is closed, with the
reason logged, and the server keeps serving real clients."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import struct

import pytest

from spiceserver.proto.enums import MAGIC, ChannelType, LinkErr
from spiceserver.proto.link import LinkMess
from spiceserver.proto.messages import inputs as im
from spiceserver.proto.messages import main as mm
from spiceserver.proto.wire import frame
from tests.conftest import Running, start_server
from tests.support.client import connect


async def raw_exchange(r: Running, data: bytes, *, timeout: float = 5.0, half_close: bool = True) -> bytes:
    """Send ``data``, optionally shut down our write side, and read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", r.server.port_of())
    writer.write(data)
    await writer.drain()
    if half_close:
        writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def error_reply(code: int) -> bytes:
    return MAGIC + struct.pack("<III", 2, 2, 178) + struct.pack("<I", code) + bytes(174)


def link_header(size: int) -> bytes:
    return MAGIC + struct.pack("<III", 2, 2, size)


async def assert_still_serving(r: Running) -> None:
    s = await connect(r.ep)
    inp = await s.link(ChannelType.INPUTS)
    await inp.expect(im.InputsInit)
    await inp.send(im.KeyDown(code=0x39))
    await r.devices.wait_for(lambda e: ("key", 0x39, True) in e)
    await s.main.close()
    await inp.close()


async def test_wrong_magic(running: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "spiceserver")
    assert await raw_exchange(running, b"HELO world, this is not spice") == error_reply(LinkErr.INVALID_MAGIC)
    assert "bad magic" in caplog.text
    await assert_still_serving(running)


async def test_oversized_and_undersized_link_messages(running: Running) -> None:
    # The header's size is checked before any of the body is read or buffered.
    assert await raw_exchange(running, link_header(1 << 30)) == error_reply(LinkErr.INVALID_DATA)
    assert await raw_exchange(running, link_header(10)) == error_reply(LinkErr.INVALID_DATA)
    await assert_still_serving(running)


async def test_ten_thousand_word_caps_list(running: Running) -> None:
    words = tuple(range(10_000))
    body = LinkMess(0, ChannelType.MAIN, 0, words, ()).encode()
    # too big for the 4096-byte limit: refused from the header alone
    assert await raw_exchange(running, link_header(len(body)) + body) == error_reply(LinkErr.INVALID_DATA)
    # a caps count that claims 10^4 words inside a small message
    small = struct.pack("<IBBIII", 0, 1, 0, 10_000, 0, 18) + bytes(64)
    assert await raw_exchange(running, link_header(len(small)) + small) == error_reply(LinkErr.INVALID_DATA)
    await assert_still_serving(running)


async def test_version_mismatch(running: Running) -> None:
    data = MAGIC + struct.pack("<III", 3, 0, 18) + LinkMess(0, 1, 0).encode()
    assert await raw_exchange(running, data) == error_reply(LinkErr.VERSION_MISMATCH)


@pytest.mark.parametrize("cut", [2, 4, 10, 16, 20, 33])
async def test_truncated_link_then_eof(running: Running, cut: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "spiceserver")
    mess = LinkMess(0, ChannelType.MAIN, 0, (0xB,), ()).encode()
    data = (link_header(len(mess)) + mess)[:cut]
    assert await raw_exchange(running, data) == b""  # closed without a reply: nothing to answer yet
    await asyncio.sleep(0.05)
    assert "closed the connection during the link" in caplog.text


async def test_half_open_and_slow_drip_time_out(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "spiceserver")
    r = await start_server(link_timeout=0.5)
    try:
        # half-open: connect, send nothing, keep our side open
        reader, writer = await asyncio.open_connection("127.0.0.1", r.server.port_of())
        assert await asyncio.wait_for(reader.read(), 3) == b""
        writer.close()
        # slow drip: a valid link one byte every 50 ms never completes in time
        mess = LinkMess(0, ChannelType.MAIN, 0, (0xB,), ()).encode()
        data = link_header(len(mess)) + mess
        reader, writer = await asyncio.open_connection("127.0.0.1", r.server.port_of())

        async def drip() -> None:
            for b in data:
                writer.write(bytes([b]))
                await asyncio.sleep(0.05)

        dripper = asyncio.create_task(drip())
        assert await asyncio.wait_for(reader.read(), 3) == b""
        dripper.cancel()
        writer.close()
        assert caplog.text.count("link not completed within") == 2
        await assert_still_serving(r)
    finally:
        await r.server.close()


async def test_garbage_after_link_closes_only_that_channel(running: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "spiceserver")
    s = await connect(running.ep)
    inp = await s.link(ChannelType.INPUTS)
    await inp.expect(im.InputsInit)
    inp.writer.write(frame(9999, b"", mini=True))  # unknown message type
    assert await inp.closed()
    assert "protocol error" in caplog.text and "unknown message type 9999" in caplog.text
    # the main channel of the same session is untouched, and a new inputs channel links
    await s.main.send(mm.AttachChannels())
    await s.main.expect(mm.ChannelsList, skip=(mm.Name, mm.Uuid))
    inp2 = await s.link(ChannelType.INPUTS)
    await inp2.expect(im.InputsInit)


async def test_short_and_oversized_messages_close_the_channel(running: Running) -> None:
    s = await connect(running.ep)
    inp = await s.link(ChannelType.INPUTS)
    inp.writer.write(frame(im.MousePosition.TYPE, b"\x01\x02\x03", mini=True))
    assert await inp.closed()
    inp = await s.link(ChannelType.INPUTS)
    inp.writer.write(struct.pack("<HI", im.KeyScancode.TYPE, 64 << 20))  # claims 64 MiB
    assert await inp.closed()
    await s.main.send(mm.AttachChannels())
    await s.main.expect(mm.ChannelsList)


async def test_a_thousand_garbage_connections(running: Running) -> None:
    rng = random.Random(1234)
    kinds = ["random", "magic-only", "bad-size", "truncated", "silent-close", "huge-caps"]

    async def one(i: int) -> None:
        kind = kinds[i % len(kinds)]
        if kind == "random":
            data = os.urandom(rng.randint(1, 300))
        elif kind == "magic-only":
            data = MAGIC
        elif kind == "bad-size":
            data = link_header(rng.choice([0, 17, 5000, 2**32 - 1]))
        elif kind == "truncated":
            mess = LinkMess(0, 1, 0, (0xB,), ()).encode()
            data = (link_header(len(mess)) + mess)[: rng.randint(1, 30)]
        elif kind == "huge-caps":
            data = link_header(4096) + struct.pack("<IBBIII", 0, 1, 0, 1024, 1024, 18) + bytes(4078)
        else:
            data = b""
        try:
            await raw_exchange(running, data, timeout=10)
        except (ConnectionError, OSError):
            pass

    sem = asyncio.Semaphore(50)

    async def limited(i: int) -> None:
        async with sem:
            await one(i)

    await asyncio.gather(*(limited(i) for i in range(1000)))
    assert running.server.stats["connections"] >= 1000
    await assert_still_serving(running)
    for _ in range(100):  # the session ends once the server sees the main channel close
        if running.server.num_clients == 0:
            break
        await asyncio.sleep(0.02)
    assert running.server.num_clients == 0
