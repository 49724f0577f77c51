"""Port and WebDAV channels over a char device: PORT_INIT, data and events both ways, back-pressure
both ways, one client at a time, bad input closing only that client, and a fuzz of client messages.

The device is :class:`FakeDevice`, a small char device that follows the contract of
``spiceserver.channels.chardev`` (attach / write / pause / resume / send_event, and the listener's
``device_data`` / ``device_opened`` / ``device_event`` / ``device_writable``), with a device-side
API for the test: :meth:`FakeDevice.feed` (the guest sends), :meth:`FakeDevice.set_open`, and a
write queue the test fills or frees.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spiceserver.channels.base import Link, ServerContext
from spiceserver.channels.chardev import UnixSocketCharDevice, char_device_pair
from spiceserver.channels.port import PortChannel, PortChannelClient, WebDavChannel
from spiceserver.channels.session import Session
from spiceserver.channels.spicevmc import BUF_SIZE, QUEUED_DATA_LIMIT
from spiceserver.channels.spicevmc_lz4 import decompress_vmc
from spiceserver.config import ServerConfig
from spiceserver.errors import ProtocolError
from spiceserver.events import ConnLog
from spiceserver.proto.channel import ChannelConnection
from spiceserver.proto.enums import ChannelType, PortEvent, SpicevmcCap
from spiceserver.proto.link import LinkMess
from spiceserver.proto.messages import base as basemsg
from spiceserver.proto.messages import main as mm
from spiceserver.proto.messages import port as pm
from spiceserver.proto.messages import spicevmc as vm
from spiceserver.proto.messages.base import CLIENT, SERVER
from spiceserver.proto.wire import frame
from tests.conftest import Running
from tests.support.client import ClientChannel, connect

CHUNK = 64 << 10


class FakeDevice:
    """A char device (the contract of ``channels/chardev.py``) driven by the test.

    Device -> server: :meth:`feed` queues bytes; they are delivered in chunks of at most 64 KiB
    while reading is not paused. Server -> device: :meth:`write` appends to :attr:`written` unless
    :attr:`full`; :meth:`free` clears ``full`` and calls ``device_writable``.
    """

    def __init__(self, opened: bool = False) -> None:
        self.opened = opened
        self.listener: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.written = bytearray()
        self.full = False
        self.refused = 0
        self.paused = False
        self.ever_paused = False
        self.events: list[int] = []
        self.client_states: list[bool] = []
        self.outgoing: deque[bytes] = deque()
        self.delivered = 0
        self.changed = asyncio.Event()

    # the contract
    def attach(self, listener: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.listener, self.loop = listener, loop

    def detach(self) -> None:
        self.listener = None

    def write(self, data: bytes) -> bool:
        assert isinstance(data, bytes) and 0 < len(data) <= CHUNK
        if self.full:
            self.refused += 1
            self._changed()
            return False
        self.written += data
        self._changed()
        return True

    def pause_reading(self) -> None:
        self.paused = self.ever_paused = True
        self._changed()

    def resume_reading(self) -> None:
        self.paused = False
        self._changed()
        if self.loop is not None:
            self.loop.call_soon(self._pump)

    def send_event(self, event: int) -> None:
        self.events.append(event)
        self._changed()

    def client_state(self, connected: bool) -> None:
        self.client_states.append(connected)
        self._changed()

    async def close(self) -> None:
        self.detach()

    # the device side
    def feed(self, data: bytes) -> None:
        for i in range(0, len(data), CHUNK):
            self.outgoing.append(data[i : i + CHUNK])
        self._pump()

    def _pump(self) -> None:
        while self.outgoing and not self.paused and self.listener is not None:
            chunk = self.outgoing.popleft()
            self.delivered += len(chunk)
            self.listener.device_data(chunk)
        self._changed()

    def set_open(self, opened: bool) -> None:
        self.opened = opened
        if self.listener is not None:
            self.listener.device_opened(opened)

    def guest_event(self, event: int) -> None:
        if self.listener is not None:
            self.listener.device_event(event)

    def free(self) -> None:
        self.full = False
        if self.listener is not None:
            self.listener.device_writable()

    def _changed(self) -> None:
        self.changed.set()

    async def wait_for(self, pred: Any, timeout: float = 10.0) -> None:
        async def loop() -> None:
            while not pred():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)


async def wait_until(pred: Any, timeout: float = 10.0) -> None:
    async def loop() -> None:
        while not pred():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(loop(), timeout)


async def open_port(running: Running, device: FakeDevice, name: str = "org.test.port.0", channel_id: int = 0) -> tuple[PortChannel, ClientChannel, Any]:
    port = running.server.register_channel(PortChannel, name, device, channel_id)
    s = await connect(running.ep)
    ch = await s.link(ChannelType.PORT, channel_id)
    return port, ch, s


async def read_data(ch: ClientChannel, n: int, timeout: float = 10.0) -> bytes:
    out = bytearray()
    while len(out) < n:
        msg = await ch.recv(timeout)
        assert isinstance(msg, vm.SpicevmcData), msg
        assert 0 < len(msg.data) <= BUF_SIZE
        out += msg.data
    return bytes(out)


# --- link, PORT_INIT, data, events --------------------------------------------------------------


async def test_port_init_first_then_data_both_ways(running: Running) -> None:
    dev = FakeDevice(opened=True)
    port, ch, _s = await open_port(running, dev)
    assert await ch.recv() == pm.PortInit(name=b"org.test.port.0\0", opened=1)
    await ch.send(vm.ClientSpicevmcData(data=b"hello device"))
    await dev.wait_for(lambda: bytes(dev.written) == b"hello device")
    dev.feed(b"hello client")
    assert (await ch.expect(vm.SpicevmcData)).data == b"hello client"
    big = bytes(range(256)) * 1000  # 256000 bytes: split in 64 KiB messages both ways
    dev.feed(big)
    assert await read_data(ch, len(big)) == big
    await ch.send(vm.ClientSpicevmcData(data=big))
    await dev.wait_for(lambda: len(dev.written) == 12 + len(big))
    assert bytes(dev.written[12:]) == big
    assert port.stats()["bytes_to_device"] == 12 + len(big)
    assert port.stats()["bytes_to_client"] == 12 + len(big)


async def test_no_set_ack_on_a_vmc_channel(running: Running) -> None:
    dev = FakeDevice()
    _, ch, _s = await open_port(running, dev)
    first = await ch.recv()
    assert isinstance(first, pm.PortInit) and first.opened == 0
    dev.feed(b"x")
    assert isinstance(await ch.recv(), vm.SpicevmcData)
    assert not any(isinstance(m, basemsg.SetAck) for m in ch.received)


async def test_guest_events_reach_the_client(running: Running) -> None:
    dev = FakeDevice()
    port, ch, _s = await open_port(running, dev)
    assert (await ch.expect(pm.PortInit)).opened == 0
    dev.set_open(True)
    assert (await ch.expect(pm.PortEvent)).event == PortEvent.OPENED
    assert port.opened
    dev.guest_event(PortEvent.OPENED)  # no change: not sent again
    dev.guest_event(PortEvent.BREAK)
    assert (await ch.expect(pm.PortEvent)).event == PortEvent.BREAK
    dev.guest_event(PortEvent.CLOSED)
    assert (await ch.expect(pm.PortEvent)).event == PortEvent.CLOSED
    dev.set_open(False)  # no change
    dev.set_open(True)
    assert (await ch.expect(pm.PortEvent)).event == PortEvent.OPENED
    # a client linking later is told the state in PORT_INIT
    await ch.close()
    await wait_until(lambda: port.client is None)
    s = await connect(running.ep)
    ch2 = await s.link(ChannelType.PORT, 0)
    assert (await ch2.expect(pm.PortInit)).opened == 1


async def test_client_events_reach_the_device_and_the_host(running: Running) -> None:
    dev = FakeDevice(opened=True)
    port, ch, _s = await open_port(running, dev)
    seen: list[int] = []
    seen_async: list[int] = []

    async def later(event: int) -> None:
        await asyncio.sleep(0)
        seen_async.append(event)

    remove = port.on_client_event(seen.append)
    port.on_client_event(later)
    await ch.expect(pm.PortInit)
    await ch.send(pm.ClientPortEvent(event=PortEvent.BREAK))
    await ch.send(pm.ClientPortEvent(event=7))
    await dev.wait_for(lambda: dev.events == [PortEvent.BREAK, 7])
    await wait_until(lambda: seen_async == [PortEvent.BREAK, 7])
    assert seen == [PortEvent.BREAK, 7]
    remove()
    await ch.send(pm.ClientPortEvent(event=2))
    await wait_until(lambda: seen_async == [PortEvent.BREAK, 7, 2])
    assert seen == [PortEvent.BREAK, 7]


async def test_device_data_before_any_client_waits_for_it(running: Running) -> None:
    dev = FakeDevice(opened=True)
    port = running.server.register_channel(PortChannel, "org.test.early", dev, 5)
    assert dev.paused  # no client: the device is not read
    dev.feed(b"early bytes")
    assert dev.delivered == 0
    s = await connect(running.ep)
    ch = await s.link(ChannelType.PORT, 5)
    await ch.expect(pm.PortInit)
    assert (await ch.expect(vm.SpicevmcData)).data == b"early bytes"
    assert not dev.paused and port.client is not None
    await ch.close()
    await dev.wait_for(lambda: dev.paused)  # the client left: not read again


async def test_webdav_channel_is_a_named_port_on_its_own_type(running: Running) -> None:
    dev = FakeDevice(opened=True)
    running.server.register_channel(WebDavChannel, dev)
    s = await connect(running.ep)
    ch = await s.link(ChannelType.WEBDAV, 0)
    assert await ch.recv() == pm.PortInit(name=b"org.spice-space.webdav.0\0", opened=1)
    await ch.send(vm.ClientSpicevmcData(data=b"\x01" + bytes(7) + b"\x02\x00hi"))
    await dev.wait_for(lambda: len(dev.written) == 12)
    dev.feed(b"reply")
    assert (await ch.expect(vm.SpicevmcData)).data == b"reply"


def test_bad_port_names_are_refused() -> None:
    ctx = ServerContext(ServerConfig(port=0))
    for name in ("", "a\0b", "x" * 256):
        with pytest.raises(ValueError):
            PortChannel(ctx, name, FakeDevice())
    assert PortChannel(ctx, "é" * 100, FakeDevice()).port_name == "é" * 100


async def test_lz4_both_ways_for_a_client_with_the_cap(running: Running) -> None:
    import lz4.block  # type: ignore[import-untyped]

    dev = FakeDevice(opened=True)
    port = running.server.register_channel(PortChannel, "org.test.lz4", dev, 2)
    assert SpicevmcCap.DATA_COMPRESS_LZ4 in port.caps
    s = await connect(running.ep)
    ch = await s.link(ChannelType.PORT, 2, channel_caps=(SpicevmcCap.DATA_COMPRESS_LZ4,))
    await ch.expect(pm.PortInit)
    text = b"a compressible line of text\n" * 400
    dev.feed(text)
    msg = await ch.expect(vm.SpicevmcCompressedData)
    assert msg.uncompressed_size == len(text) and len(msg.compressed_data) < len(text)
    assert decompress_vmc(msg) == text
    dev.feed(b"short")  # under 1000 bytes: plain
    assert (await ch.expect(vm.SpicevmcData)).data == b"short"
    packed = lz4.block.compress(text, store_size=False)
    await ch.send(vm.ClientSpicevmcCompressedData(type=1, uncompressed_size=len(text), compressed_data=packed))
    await dev.wait_for(lambda: bytes(dev.written) == text)
    # a lying size closes the client
    await ch.send(vm.ClientSpicevmcCompressedData(type=1, uncompressed_size=len(text) + 1, compressed_data=packed))
    assert await ch.closed()


async def test_with_the_char_device_pair(running: Running) -> None:
    """The real in-process char device: bytes and events both ways, and its bounded write queue
    holding the client back while the device model does not take the bytes."""
    dev, end = char_device_pair(opened=False, write_limit=100_000)
    port = running.server.register_channel(PortChannel, "org.test.pair", dev, 3)
    got = bytearray()
    events: list[int] = []
    end.on_event(events.append)
    s = await connect(running.ep)
    ch = await s.link(ChannelType.PORT, 3)
    assert (await ch.expect(pm.PortInit)).opened == 0
    end.set_open(True)
    assert (await ch.expect(pm.PortEvent)).event == PortEvent.OPENED
    end.write(b"from the model")
    assert (await ch.expect(vm.SpicevmcData)).data == b"from the model"
    end.send_event(PortEvent.BREAK)
    assert (await ch.expect(pm.PortEvent)).event == PortEvent.BREAK
    await ch.send(pm.ClientPortEvent(event=PortEvent.BREAK))
    await wait_until(lambda: events == [PortEvent.BREAK])
    # no on_data callback yet: the server's writes queue in the device up to its bound, then the
    # client is held back (nothing lost)
    payload = bytes(range(256)) * 2000  # 512000 bytes > write_limit
    await ch.send(vm.ClientSpicevmcData(data=payload))
    cc = port.client
    assert cc is not None
    await wait_until(lambda: cc.blocked)
    end.on_data(got.extend)
    await wait_until(lambda: len(got) == len(payload))
    assert bytes(got) == payload and not cc.blocked
    end.set_open(False)
    assert (await ch.expect(pm.PortEvent)).event == PortEvent.CLOSED
    await dev.close()


async def test_the_device_hears_clients_come_and_go(running: Running) -> None:
    """libspice ``SpiceCharDeviceInterface.state``: 1 when a client connects, 0 when it leaves."""
    dev, end = char_device_pair()
    running.server.register_channel(PortChannel, "org.test.state", dev, 6)
    states: list[bool] = []
    end.on_client(states.append)
    for _ in range(2):
        s = await connect(running.ep)
        ch = await s.link(ChannelType.PORT, 6)
        await ch.expect(pm.PortInit)
        await wait_until(lambda: states[-1:] == [True] and end.client_connected)
        await ch.close()
        await wait_until(lambda: states[-1:] == [False] and not end.client_connected)
    assert states == [True, False, True, False]
    late: list[bool] = []
    s = await connect(running.ep)
    ch = await s.link(ChannelType.PORT, 6)
    await ch.expect(pm.PortInit)
    await wait_until(lambda: end.client_connected)
    end.on_client(late.append)  # a callback set while a client is connected hears it at once
    await wait_until(lambda: late == [True])
    await ch.close()
    await dev.close()


async def test_with_a_unix_socket_char_device(running: Running, tmp_path: Any) -> None:
    """A guest program on the device's Unix socket: its connection opens the port, its bytes go to
    the client and back, a guest that does not read holds the client back, its leaving closes the port."""
    dev = UnixSocketCharDevice(tmp_path / "port.sock", write_limit=64 << 10)
    port = running.server.register_channel(PortChannel, "org.test.unix", dev, 4)
    await dev.listening()
    s = await connect(running.ep)
    ch = await s.link(ChannelType.PORT, 4)
    assert (await ch.expect(pm.PortInit)).opened == 0
    reader, writer = await asyncio.open_unix_connection(str(tmp_path / "port.sock"))
    assert (await ch.expect(pm.PortEvent)).event == PortEvent.OPENED
    writer.write(b"from the guest")
    assert (await ch.expect(vm.SpicevmcData)).data == b"from the guest"
    await ch.send(vm.ClientSpicevmcData(data=b"to the guest"))
    assert await asyncio.wait_for(reader.readexactly(12), 5) == b"to the guest"
    # the guest stops reading: the socket buffers fill, then the device's queue, then the client waits
    payload = bytes(range(256)) * 40_000  # 10 MB
    sender = asyncio.create_task(_send_all(ch, [payload[i : i + 60_000] for i in range(0, len(payload), 60_000)]))
    cc = port.client
    assert cc is not None
    await wait_until(lambda: cc.blocked, timeout=20)
    got = await asyncio.wait_for(reader.readexactly(len(payload)), 30)
    await sender
    assert got == payload
    writer.close()
    assert (await ch.expect(pm.PortEvent)).event == PortEvent.CLOSED
    await dev.close()


# --- back-pressure --------------------------------------------------------------------------------


async def test_a_full_device_stops_the_client_reads_and_nothing_is_lost(running: Running) -> None:
    dev = FakeDevice(opened=True)
    port, ch, _s = await open_port(running, dev)
    await ch.expect(pm.PortInit)
    dev.full = True
    payloads = [bytes([i]) * 50_000 for i in range(40)]  # 2 MB, in order
    for p in payloads[:3]:
        await ch.send(vm.ClientSpicevmcData(data=p))
    cc = port.client
    assert cc is not None
    await wait_until(lambda: cc.blocked)
    assert dev.written == b""
    # the client goes on sending; the server does not read while blocked
    writer_task = asyncio.create_task(_send_all(ch, payloads[3:]))
    await asyncio.sleep(0.05)
    assert dev.written == b"" and cc.blocked
    dev.free()
    await writer_task
    await dev.wait_for(lambda: len(dev.written) == sum(map(len, payloads)))
    assert bytes(dev.written) == b"".join(payloads)
    assert not cc.blocked
    # a device that refuses again and again is retried on each device_writable
    dev.full = True
    await ch.send(vm.ClientSpicevmcData(data=b"tail"))
    await wait_until(lambda: cc.blocked)
    dev.listener.device_writable()  # a spurious wake-up: still full, still blocked
    await dev.wait_for(lambda: dev.refused >= 2)
    assert cc.blocked
    dev.free()
    await dev.wait_for(lambda: bytes(dev.written).endswith(b"tail"))


async def _send_all(ch: ClientChannel, payloads: list[bytes]) -> None:
    for p in payloads:
        await ch.send(vm.ClientSpicevmcData(data=p))


async def test_a_client_leaving_while_blocked_ends_its_connection(running: Running) -> None:
    dev = FakeDevice(opened=True)
    port, ch, _s = await open_port(running, dev)
    await ch.expect(pm.PortInit)
    dev.full = True
    await ch.send(vm.ClientSpicevmcData(data=b"stuck"))
    cc = port.client
    assert cc is not None
    await wait_until(lambda: cc.blocked)
    s2 = await connect(running.ep)  # a new main link closes the old session's channels
    await wait_until(lambda: port.client is None)
    ch2 = await s2.link(ChannelType.PORT, 0)
    await ch2.expect(pm.PortInit)
    assert port.client is not None and port.client is not cc


async def test_a_client_that_does_not_read_pauses_the_device(running: Running) -> None:
    dev = FakeDevice(opened=True)
    port, ch, _s = await open_port(running, dev)
    await ch.expect(pm.PortInit)
    total = 48 << 20
    block = bytes(range(256)) * (CHUNK // 256)
    dev.outgoing.extend([block] * (total // CHUNK))
    dev.resume_reading()
    await dev.wait_for(lambda: dev.paused, timeout=30)
    assert dev.delivered < total  # paused before the device was read dry
    cc = port.client
    assert cc is not None and cc.over_limit
    assert cc.queued() < QUEUED_DATA_LIMIT + 2 * CHUNK
    got = await read_data(ch, total, timeout=30)
    assert len(got) == total and got[: len(block)] == block and got[-len(block) :] == block
    assert dev.ever_paused and not dev.paused and dev.delivered == total


# --- one client, bad input --------------------------------------------------------------------------


async def test_a_second_client_is_refused_and_the_first_goes_on(running: Running) -> None:
    dev = FakeDevice(opened=True)
    port, ch, s = await open_port(running, dev)
    await ch.expect(pm.PortInit)
    second = await s.link(ChannelType.PORT, 0)
    assert await second.closed()
    assert port.refused_links == 1
    dev.feed(b"still here")
    assert (await ch.expect(vm.SpicevmcData)).data == b"still here"
    await ch.send(vm.ClientSpicevmcData(data=b"me too"))
    await dev.wait_for(lambda: dev.written == b"me too")


@pytest.mark.parametrize(
    "bad",
    [
        frame(vm.ClientSpicevmcCompressedData.TYPE, b"\x01\x10\x00\x00\x00abc", mini=True),  # LZ4 not offered
        frame(vm.ClientSpicevmcCompressedData.TYPE, b"\x00abc", mini=True),  # not even type NONE
        frame(pm.ClientPortEvent.TYPE, b"", mini=True),  # short
        frame(vm.ClientSpicevmcData.TYPE, b"", mini=True)[:4] + b"\xff\xff\xff\x7f",  # huge size
    ],
)
async def test_bad_input_closes_only_that_client(running: Running, bad: bytes, caplog: pytest.LogCaptureFixture) -> None:
    dev = FakeDevice(opened=True)
    port, ch, s = await open_port(running, dev)
    await ch.expect(pm.PortInit)
    ch.writer.write(bad)
    await ch.writer.drain()
    assert await ch.closed()
    await wait_until(lambda: port.client is None)
    # the session and the port are fine: main answers, the port links again
    await s.main.send(mm.AttachChannels())
    await s.main.expect(mm.ChannelsList, skip=(mm.MouseMode,))
    ch2 = await s.link(ChannelType.PORT, 0)
    await ch2.expect(pm.PortInit)
    await ch2.send(vm.ClientSpicevmcData(data=b"ok"))
    await dev.wait_for(lambda: dev.written == b"ok")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- fuzz -------------------------------------------------------------------------------------------

FAST = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

client_messages = st.one_of(
    st.builds(vm.ClientSpicevmcData, data=st.binary(max_size=300)),
    st.builds(pm.ClientPortEvent, event=st.integers(0, 255)),
    st.builds(vm.ClientSpicevmcCompressedData, type=st.just(0), compressed_data=st.binary(max_size=40)),
    st.builds(vm.ClientSpicevmcCompressedData, type=st.integers(1, 255), uncompressed_size=st.integers(0, (1 << 32) - 1),
              compressed_data=st.binary(max_size=40)),
    # any other type, any body (DATA 101, COMPRESSED_DATA 102 and PORT_EVENT 201 come well-formed from
    # the builders above, whose effects the run records)
    st.tuples(st.integers(0, 0xFFFF).filter(lambda t: t not in (101, 102, 201)), st.binary(max_size=64)),
    st.sampled_from(["free", "open", "close", "break", "feed"]),  # the device meanwhile
)


def make_client(dev: FakeDevice) -> tuple[PortChannel, PortChannelClient]:
    ctx = ServerContext(ServerConfig(port=0))
    port = PortChannel(ctx, "org.fuzz.0", dev)
    port.on_loop_start(asyncio.get_running_loop())
    mess = LinkMess(7, ChannelType.PORT, 0, (), ())
    link = Link(cast(Any, None), cast(Any, None), mess, b"", False, False, ConnLog(logging.getLogger("spiceserver"), {}))
    conn = ChannelConnection(ChannelType.PORT, SERVER, mini_header=True, max_message_size=port.max_message_size)
    return port, port.create_client(conn, link, Session(7))


async def fuzz_run(items: list[Any], chop: int) -> None:
    dev = FakeDevice(opened=True)
    port, cc = make_client(dev)
    client = ChannelConnection(ChannelType.PORT, CLIENT, mini_header=True, max_message_size=1 << 20)
    await cc.start(0.0)
    sent = bytearray()
    events: list[int] = []
    for item in items:
        if isinstance(item, str):
            if item == "full":
                dev.full = True
            elif item == "free":
                dev.free()
            elif item == "feed":
                dev.feed(b"guest")
            elif item == "break":
                dev.guest_event(PortEvent.BREAK)
            else:
                dev.set_open(item == "open")
            continue
        if isinstance(item, tuple):
            data = frame(item[0], item[1], mini=True)
        else:
            client.send(item)
            data = client.data_to_send()
            if isinstance(item, vm.ClientSpicevmcData):
                sent += item.data
            elif isinstance(item, pm.ClientPortEvent):
                events.append(item.event)
        dev.full = False  # a blocked write would wait for the connection (there is none here)
        try:
            for i in range(0, len(data), chop):
                for ev in cc.conn.receive_data(data[i : i + chop], 0.0):
                    await cc.handle(ev, 0.0)
        except ProtocolError as exc:
            assert isinstance(exc.reason, str) and exc.reason
            break
    # whatever was accepted reached the device in order; events too
    assert bytes(dev.written) == bytes(sent)[: len(dev.written)]
    assert dev.events == events[: len(dev.events)]
    out = ChannelConnection(ChannelType.PORT, CLIENT, mini_header=True, max_message_size=1 << 20)
    msgs = out.receive_data(cc.conn.data_to_send())
    assert isinstance(msgs[0], pm.PortInit)
    cc.closed = True
    await cc.on_close()
    port.client_gone(cc)
    await port.close()


@settings(FAST, max_examples=200)
@given(items=st.lists(client_messages, max_size=12), chop=st.sampled_from([1, 7, 1 << 16]))
def test_any_client_message_sequence_is_handled_or_a_protocol_error(items: list[Any], chop: int) -> None:
    asyncio.run(fuzz_run(items, chop))


@settings(FAST, max_examples=200)
@given(blob=st.binary(max_size=400))
def test_any_bytes_are_handled_or_a_protocol_error(blob: bytes) -> None:
    async def go() -> None:
        dev = FakeDevice(opened=True)
        _port, cc = make_client(dev)
        await cc.start(0.0)
        try:
            for ev in cc.conn.receive_data(blob, 0.0):
                await cc.handle(ev, 0.0)
        except ProtocolError:
            pass
        await cc.on_close()

    asyncio.run(go())


async def test_the_server_api_numbers_ports_and_names_webdav(running: Running) -> None:
    """``server.add_port(name, device)`` takes the next port id; ``add_webdav(device)`` is the
    WEBDAV channel named as spice-gtk expects."""
    a, end_a = char_device_pair()
    b, _ = char_device_pair()
    w, _ = char_device_pair()
    pa = running.server.add_port("org.qemu.console.serial.0", a)
    pb = running.server.add_port("org.example.other", b)
    dav = running.server.add_webdav(w)
    assert (pa.id, pb.id, dav.type) == (0, 1, ChannelType.WEBDAV)
    s = await connect(running.ep)
    ch = await s.link(ChannelType.PORT, 0)
    init = await ch.expect(pm.PortInit)
    assert init.name == b"org.qemu.console.serial.0\0" and init.opened == 1
    got: list[bytes] = []
    end_a.on_data(got.append)
    await ch.send(vm.ClientSpicevmcData(data=b"ls\n"))
    end_a.write(b"bin etc\n")
    assert (await ch.expect(vm.SpicevmcData)).data == b"bin etc\n"

    async def arrived() -> None:
        while b"".join(got) != b"ls\n":
            await asyncio.sleep(0.01)

    await asyncio.wait_for(arrived(), 5)
    dch = await s.link(ChannelType.WEBDAV, 0)
    assert (await dch.expect(pm.PortInit)).name == b"org.spice-space.webdav.0\0"
