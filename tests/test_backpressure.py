"""Back-pressure and receive limits (issue 9, point 4): a peer that floods or never reads costs a
bounded amount of server memory and closes only its own connection.

Every bound is measured as bytes or counts (unsent bytes of a connection, client bytes waiting in a
display worker's queue, keyboard calls), never as a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from spiceserver.channels.base import FEED_BATCH
from spiceserver.channels.inputs import InputsChannel
from spiceserver.channels.main import MainChannel
from spiceserver.channels.worker_link import MAX_UNPROCESSED_INPUT, WorkerChannel
from spiceserver.proto.enums import ChannelType
from spiceserver.proto.messages import base as bm
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages import inputs as im
from spiceserver.proto.messages.base import Rect
from spiceserver.proto.wire import frame
from spiceserver.qxl import Interrupt
from spiceserver.qxl.guest import GuestDriver
from spiceserver.transport import (
    MAX_WRITE_BUFFER,
    READ_CHUNK,
    WRITE_PAUSE_BYTES,
    LoopGate,
    Transport,
    WebSocketStream,
    unsent_bytes,
)
from tests.conftest import Running, start_server
from tests.support.client import ClientChannel, Endpoint, connect, open_stream
from tests.support.display import link_display, pump_until

MiB = 1 << 20


async def until(pred: Any, what: str, *, limit: int = 100_000) -> None:
    """Let the loop run until ``pred()`` holds (a hang guard counts loop turns, it is no time bound)."""
    for _ in range(limit):
        if pred():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never happened: {what}")


# --- WebSocket: PINGs from a peer that never reads ------------------------------------------------


def ping_frames(count: int) -> bytes:
    """``count`` masked client PING frames with the largest control payload (125 bytes)."""
    payload = os.urandom(125)
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return (b"\x89" + bytes([0x80 | 125]) + mask + masked) * count


def spy_websocket_streams(monkeypatch: pytest.MonkeyPatch) -> list[WebSocketStream]:
    """Every WebSocketStream the server makes from now on (for the test's bounds)."""
    streams: list[WebSocketStream] = []
    original = WebSocketStream.__init__

    def spy(self: WebSocketStream, *args: Any) -> None:
        original(self, *args)
        streams.append(self)

    monkeypatch.setattr(WebSocketStream, "__init__", spy)
    return streams


async def test_websocket_pings_from_a_peer_that_never_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each PING queues a PONG; before the fix the server read on and queued PONGs without limit
    # (+313 MB in 20 s). Now it reads no more while more than WRITE_PAUSE_BYTES are unsent.
    streams = spy_websocket_streams(monkeypatch)
    r = await start_server()
    try:
        ep = Endpoint(port=r.server.port_of(), websocket=True)
        client, _ = await open_stream(ep)  # upgraded; the link never starts
        writer: asyncio.StreamWriter = client.writer  # type: ignore[attr-defined]
        await until(lambda: len(streams) == 1, "the server's WebSocket stream")
        server_ws = streams[0]
        chunk = ping_frames(READ_CHUNK // 131)
        # Phase 1: write until the server has more than the pause mark unsent (it stops reading).
        sent = 0
        while unsent_bytes(server_ws) <= WRITE_PAUSE_BYTES:
            writer.write(chunk)
            sent += len(chunk)
            assert sent < 256 * MiB, "the server never had PONGs pile up"
            await asyncio.sleep(0)
        # Phase 2: 32 MiB more PINGs; the server must not read them.
        for _ in range(32 * MiB // len(chunk)):
            writer.write(chunk)
            await asyncio.sleep(0)
        # everything the server may still hold: the pause mark plus the PONGs of one read
        bound = WRITE_PAUSE_BYTES + READ_CHUNK
        assert unsent_bytes(server_ws) <= bound
        assert not server_ws.is_closing()  # paused, not dropped: the peer may still read
        # the server stopped reading, so the client's own buffer holds what it could not send
        assert writer.transport.get_write_buffer_size() > 8 * MiB
        writer.transport.abort()
        # another client is served meanwhile
        s = await connect(r.ep)
        inp = await s.link(ChannelType.INPUTS)
        await inp.expect(im.InputsInit)
        await s.main.close()
        await inp.close()
    finally:
        await r.server.close()


async def test_a_write_onto_a_full_buffer_drops_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    # Any channel client's Transport: host-driven output (LEDs, agent data...) to a peer that never
    # reads is dropped once MAX_WRITE_BUFFER bytes are unsent, instead of growing without limit.
    caplog.set_level(logging.WARNING, "spiceserver")
    accepted: asyncio.Future[asyncio.StreamWriter] = asyncio.get_running_loop().create_future()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(writer)

    srv = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    _reader, peer = await asyncio.open_connection("127.0.0.1", port)  # never reads
    peer.transport.pause_reading()
    writer = await accepted
    transport = Transport(writer, LoopGate())
    block = bytes(MiB)
    writes = 0
    while not transport.is_closing:
        transport.write(block)
        writes += 1
        assert writes < 1024, "the connection was never dropped"
        assert unsent_bytes(writer) <= MAX_WRITE_BUFFER + len(block)
    assert writes >= MAX_WRITE_BUFFER // len(block)  # the cap, not something smaller, was reached
    assert "peer is not reading" in caplog.text
    peer.close()
    srv.close()
    await srv.wait_closed()


# --- display / cursor input: read only as fast as the worker handles it ---------------------------


@dataclass(frozen=True)
class Block:
    """A test message that keeps the worker thread busy until ``release`` is set."""

    entered: threading.Event
    release: threading.Event


def block_worker(r: Running) -> Block:
    worker = r.server._display(0).worker
    block = Block(threading.Event(), threading.Event())

    def handler(msg: Block) -> None:
        msg.entered.set()
        msg.release.wait(60)

    worker.ep.register_handler(Block, handler)
    worker.post(block)
    assert block.entered.wait(10)
    return block


async def test_ack_flood_waits_for_the_worker() -> None:
    # Before the fix every ACK went to the worker's unbounded queue as fast as it arrived
    # (+853 MB in 10 s). Now reds reads a display client only while at most MAX_UNPROCESSED_INPUT
    # of its bytes wait for the worker.
    r = await start_server()
    try:
        fb = r.server.add_framebuffer_display(64, 48)
        s = await connect(r.ep)
        ch, state = await link_display(s)
        await pump_until(ch, state, lambda st: st.marks == 1)
        bridge = r.server._display(0).bridge
        (cc_id,) = bridge.unprocessed_input()
        block = block_worker(r)
        ack = frame(bm.Ack.TYPE, b"", mini=True)
        flood = ack * (2 * MiB // len(ack))
        traffic = r.server._ctx.traffic
        read_before = traffic["display", "in"]
        ch.writer.write(flood)
        # the loop stops reading once the worker holds more than the bound (unfixed: reads it all)
        await until(
            lambda: (
                bridge.unprocessed_input()[cc_id][0] > MAX_UNPROCESSED_INPUT
                or traffic["display", "in"] - read_before >= len(flood)
            ),
            "reading paused or done",
        )
        for _ in range(100):
            await asyncio.sleep(0)
        waiting, peak = bridge.unprocessed_input()[cc_id]
        assert waiting <= MAX_UNPROCESSED_INPUT + READ_CHUNK and peak <= MAX_UNPROCESSED_INPUT + READ_CHUNK
        block.release.set()
        # the worker catches up, reading resumes, the whole flood is handled within the bound
        await until(
            lambda: traffic["display", "in"] - read_before >= len(flood) and bridge.unprocessed_input()[cc_id][0] == 0,
            "flood handled",
        )
        assert bridge.unprocessed_input()[cc_id][1] <= MAX_UNPROCESSED_INPUT + READ_CHUNK
        # and the channel still works
        frame_px = np.full((48, 64), 0x00FF00, dtype=np.uint32)
        fb.update(frame_px)
        await pump_until(ch, state, lambda st: st.surfaces[0].pixels[0, 0] == 0x00FF00)
        await s.main.close()
        await ch.close()
    finally:
        await r.server.close()


async def test_sync_update_area_with_a_busy_worker_fails_as_a_guest_error() -> None:
    # A synchronous UPDATE_AREA waits for the worker; a worker kept busy used to block the vCPU
    # 30 s and then raise TimeoutError into the host. Now the I/O fails with the error interrupt.
    r = await start_server()
    try:
        device = r.server.add_qxl_device()
        guest = GuestDriver(device)
        guest.create_primary(64, 48)
        backend = device.backend
        backend.sync_timeout = 0.05  # type: ignore[attr-defined]
        block = block_worker(r)
        try:
            guest.set_int_mask(0xFF)
            await asyncio.to_thread(
                guest.update_area, 0, Rect(top=0, left=0, bottom=8, right=8)
            )  # returns, no exception
            assert guest.interrupts() & Interrupt.ERROR
        finally:
            block.release.set()
        r.server.wait_idle()
        assert r.server.display_snapshot().shape == (48, 64)  # the worker goes on
    finally:
        await r.server.close()


# --- per-channel receive limits -------------------------------------------------------------------


def test_receive_limits_follow_libspice() -> None:
    # inputs-channel-client.h RECEIVE_BUF_SIZE, main-channel-client.cpp MAIN_CHANNEL_RECEIVE_BUF_SIZE,
    # common-graphics-channel.h CHANNEL_RECEIVE_BUF_SIZE
    assert InputsChannel.MAX_MESSAGE_SIZE == 2048
    assert MainChannel.MAX_MESSAGE_SIZE == 4096 + 11 * 2048
    assert WorkerChannel.MAX_MESSAGE_SIZE == 1024


async def test_huge_key_scancode_closes_only_the_inputs_channel(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    # One 1 MiB KEY_SCANCODE used to be read whole and pushed byte by byte (2 s of loop time).
    caplog.set_level(logging.WARNING, "spiceserver")
    s = await connect(running.ep)
    inp = await s.link(ChannelType.INPUTS)
    await inp.expect(im.InputsInit)
    before = len(running.devices.events)
    inp.writer.write(frame(im.KeyScancode.TYPE, bytes([0x1E, 0x9E]) * (MiB // 2), mini=True))
    assert await inp.closed()
    assert len(running.devices.events) == before  # not one keyboard call
    assert "exceeds the 2048-byte limit" in caplog.text
    # the largest message libspice accepts still works, and the session lives on
    inp2 = await s.link(ChannelType.INPUTS)
    await inp2.expect(im.InputsInit)
    body = bytes([0x1E, 0x9E]) * 1024
    assert len(im.KeyScancode(data=body).encode()) == InputsChannel.MAX_MESSAGE_SIZE
    await inp2.send(im.KeyScancode(data=body))
    await running.devices.wait_for(lambda e: len(e) > before)
    assert running.devices.events[before] == ("scancodes", body)
    assert not s.main.writer.is_closing()
    await inp2.close()
    await s.main.close()


async def test_one_read_of_many_messages_is_handled_in_bounded_turns(running: Running) -> None:
    # A read may hold thousands of small messages; the pump lets other tasks run every FEED_BATCH
    # messages, so one client's burst does not hold the loop for the whole read.
    s = await connect(running.ep)
    inp = await s.link(ChannelType.INPUTS)
    await inp.expect(im.InputsInit)
    turns = 0
    at_turn: list[int] = []

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.get_running_loop().create_task(count_turns())
    original = running.devices.on_key
    running.devices.on_key = lambda event: (at_turn.append(turns), original(event))[1]  # type: ignore[method-assign]
    try:
        burst = 640
        for _ in range(burst):
            inp.conn.send(im.KeyDown(code=0x1E))
        await inp.flush()
        await until(lambda: len(at_turn) == burst, "every key handled")
    finally:
        counter.cancel()
    per_turn = max(at_turn.count(t) for t in set(at_turn))
    assert per_turn <= FEED_BATCH
    await inp.close()
    await s.main.close()


async def test_display_message_over_the_graphics_limit_closes_the_display_channel() -> None:
    r = await start_server()
    try:
        r.server.add_framebuffer_display(32, 32)
        s = await connect(r.ep)
        ch, state = await link_display(s)
        await pump_until(ch, state, lambda st: st.marks == 1)
        ch.writer.write(frame(d.PreferredCompression.TYPE, bytes(1025), mini=True))
        assert await ch.closed()
        ch2, state2 = await link_display(s)  # the session may link it again
        await pump_until(ch2, state2, lambda st: st.marks == 1)
        await ch2.close()
        await s.main.close()
    finally:
        await r.server.close()


# --- one connection per (type, id) and session ----------------------------------------------------


async def test_duplicate_channel_link_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    # As libspice's RedClient::add_channel: the new connection is closed, the first one stays.
    caplog.set_level(logging.WARNING, "spiceserver")
    r = await start_server()
    try:
        r.server.add_framebuffer_display(32, 32)
        s = await connect(r.ep)
        first, state = await link_display(s)
        await pump_until(first, state, lambda st: st.marks == 1)
        dups: list[ClientChannel] = [await s.link(ChannelType.DISPLAY) for _ in range(8)]
        for dup in dups:
            assert await dup.closed()
        assert caplog.text.count("duplicate channel display:0") == 8
        stats = r.server.display_stats()
        assert len(stats["clients"]) == 1  # one display client on the worker
        assert r.server._ctx.open_channels["display"] == 1
        inp = await s.link(ChannelType.INPUTS)
        await inp.expect(im.InputsInit)
        dup_inp = await s.link(ChannelType.INPUTS)
        assert await dup_inp.closed()
        await inp.send(im.KeyDown(code=0x39))  # the first inputs channel still works
        await r.devices.wait_for(lambda e: ("key", 0x39, True) in e)
        # once the first one is gone, the session may link the channel again
        await first.close()
        await until(lambda: r.server._ctx.open_channels["display"] == 0, "first display gone")
        again, state2 = await link_display(s)
        await pump_until(again, state2, lambda st: st.marks == 1)
        await again.close()
        await inp.close()
        await s.main.close()
    finally:
        await r.server.close()


async def test_duplicate_link_of_a_new_session_is_not_a_duplicate() -> None:
    r = await start_server()
    try:
        s1 = await connect(r.ep)
        i1 = await s1.link(ChannelType.INPUTS)
        await i1.expect(im.InputsInit)
        s2 = await connect(r.ep)  # replaces the first client (libspice): its channels close
        assert await i1.closed()
        i2 = await s2.link(ChannelType.INPUTS)
        await i2.expect(im.InputsInit)
        await i2.close()
        await s2.main.close()
    finally:
        await r.server.close()
