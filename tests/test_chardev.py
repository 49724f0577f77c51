"""Char devices (channels/chardev*.py) with real peers, and the spicevmc LZ4 helpers.

Each adapter moves bytes both ways: the Unix socket with a socket client, the pty with its slave
opened here, the in-process pair with its device end driven from another thread. Every wait is for
an observed condition (a listener call, bytes read by the peer), under a timeout.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spiceserver.channels.chardev import (
    READ_CHUNK,
    WRITE_LIMIT,
    CharDevice,
    PtyCharDevice,
    UnixSocketCharDevice,
    char_device_pair,
)
from spiceserver.channels.spicevmc_lz4 import COMPRESS_THRESHOLD, MAX_UNCOMPRESSED, compress_vmc, decompress_vmc
from spiceserver.errors import ProtocolError
from spiceserver.proto.enums import ChannelType, DataCompressionType
from spiceserver.proto.messages.base import CLIENT, parse_body
from spiceserver.proto.messages.spicevmc import ClientSpicevmcCompressedData, SpicevmcCompressedData, SpicevmcData

TIMEOUT = 10.0


class Listener:
    """A CharDeviceListener that records every call and lets the test wait for a condition."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.changed = asyncio.Event()

    def _rec(self, *call: Any) -> None:
        self.calls.append(call)
        self.changed.set()

    def device_data(self, data: bytes) -> None:
        self._rec("data", data)

    def device_opened(self, opened: bool) -> None:
        self._rec("opened", opened)

    def device_event(self, event: int) -> None:
        self._rec("event", event)

    def device_writable(self) -> None:
        self._rec("writable")

    @property
    def data(self) -> bytes:
        return b"".join(c[1] for c in self.calls if c[0] == "data")

    @property
    def states(self) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] != "data"]

    async def until(self, pred: Callable[[], bool]) -> None:
        async def loop() -> None:
            while not pred():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), TIMEOUT)


async def until(pred: Callable[[], bool]) -> None:
    """Wait for a condition that no listener reports (a peer's state), checking every loop turn."""

    async def loop() -> None:
        while not pred():
            await asyncio.sleep(0)

    await asyncio.wait_for(loop(), TIMEOUT)


def pattern(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def fill(dev: CharDevice, chunk: int = READ_CHUNK) -> bytes:
    """Write until the device refuses; returns what it accepted. Checks the bound on the way."""
    accepted = bytearray()
    for i in range(10_000):
        data = pattern(chunk, i)
        if not dev.write(data):
            assert dev.queued + len(data) > dev.write_limit
            return bytes(accepted)
        accepted += data
        assert dev.queued <= dev.write_limit
    raise AssertionError("the device never refused a write")


# -- the in-process pair ------------------------------------------------------------------------


async def test_pair_moves_bytes_both_ways_from_another_thread() -> None:
    a, b = char_device_pair()
    got: list[bytes] = []
    threads: list[str] = []

    def on_data(data: bytes) -> None:
        threads.append(threading.current_thread().name)
        got.append(data)

    b.on_data(on_data)  # before attach: waits for it
    lis = Listener()
    a.attach(lis, asyncio.get_running_loop())
    big = pattern(3 * READ_CHUNK + 5)

    def device_model() -> None:
        b.write(b"hello ")
        b.write(b"server")
        b.write(big)

    t = threading.Thread(target=device_model, name="device-model")
    t.start()
    t.join()
    await lis.until(lambda: len(lis.data) == 12 + len(big))
    assert lis.data == b"hello server" + big
    assert max(len(c[1]) for c in lis.calls if c[0] == "data") <= READ_CHUNK
    assert a.write(b"to the device") and a.write(b"!")
    await until(lambda: len(got) == 2)
    assert got == [b"to the device", b"!"]
    assert set(threads) == {threading.current_thread().name}  # on_data runs on the loop
    await a.close()


async def test_pair_open_close_and_events_in_order() -> None:
    a, b = char_device_pair(opened=False)
    lis = Listener()
    a.attach(lis, asyncio.get_running_loop())
    assert not a.opened
    assert a.write(b"dropped")  # nobody there: dropped, not queued
    assert a.queued == 0
    events: list[int] = []
    b.on_event(events.append)

    def guest() -> None:
        b.set_open(True)
        b.write(b"first")
        b.send_event(2)
        b.set_open(False)
        b.set_open(True)

    threading.Thread(target=guest).start()
    await lis.until(lambda: len(lis.calls) == 5)
    assert lis.calls == [("opened", True), ("data", b"first"), ("event", 2), ("opened", False), ("opened", True)]
    assert a.opened and b.opened
    a.send_event(0)
    await until(lambda: events == [0])
    await a.close()


async def test_pair_back_pressure_and_writable() -> None:
    a, b = char_device_pair()
    lis = Listener()
    a.attach(lis, asyncio.get_running_loop())
    accepted = fill(a)  # no on_data yet: a device that does not read
    assert WRITE_LIMIT - READ_CHUNK < len(accepted) <= WRITE_LIMIT
    got: list[bytes] = []
    b.on_data(got.append)
    await lis.until(lambda: ("writable",) in lis.calls)
    await until(lambda: sum(map(len, got)) == len(accepted))
    assert b"".join(got) == accepted
    assert lis.calls.count(("writable",)) == 1
    assert a.write(b"more")
    await a.close()


async def test_single_write_over_the_bound_goes_through_alone() -> None:
    a, b = char_device_pair(write_limit=100)
    a.attach(Listener(), asyncio.get_running_loop())
    assert a.write(bytes(500))  # empty queue: accepted
    assert not a.write(b"x")
    got: list[bytes] = []
    b.on_data(got.append)
    await until(lambda: len(got) == 1)
    assert a.write(b"x")
    await a.close()


async def test_pair_pause_and_resume() -> None:
    a, b = char_device_pair()
    lis = Listener()
    a.attach(lis, asyncio.get_running_loop())
    a.pause_reading()
    b.write(b"held")
    b.send_event(1)
    await until(lambda: a.pending == 4)
    assert lis.calls == []
    a.resume_reading()
    await lis.until(lambda: len(lis.calls) == 2)
    assert lis.calls == [("data", b"held"), ("event", 1)]
    assert a.pending == 0
    a.detach()
    b.write(b"later")
    await until(lambda: a.pending == 5)
    lis2 = Listener()
    a.attach(lis2, asyncio.get_running_loop())
    await lis2.until(lambda: lis2.data == b"later")
    assert lis.data == b"held"
    await a.close()


async def test_a_failing_listener_does_not_stop_delivery() -> None:
    a, b = char_device_pair()
    lis = Listener()
    original = lis.device_data
    calls = 0

    def flaky(data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("listener bug")
        original(data)

    lis_any: Any = lis
    lis_any.device_data = flaky
    a.attach(lis, asyncio.get_running_loop())
    b.write(b"lost")
    b.write(b"kept")
    await lis.until(lambda: lis.calls == [("data", b"kept")])
    await a.close()


async def test_closed_device_takes_nothing() -> None:
    a, b = char_device_pair()
    lis = Listener()
    a.attach(lis, asyncio.get_running_loop())
    await a.close()
    assert a.closed and not a.opened
    assert a.write(b"x") and a.queued == 0
    b.write(b"y")
    with pytest.raises(RuntimeError):
        a.attach(lis, asyncio.get_running_loop())
    await a.close()  # twice is fine


# -- the Unix socket ----------------------------------------------------------------------------


@pytest.fixture
def sock_path(tmp_path: Path) -> str:
    return str(tmp_path / "virtio.sock")


async def open_unix_device(path: str, **kw: Any) -> tuple[UnixSocketCharDevice, Listener]:
    dev = UnixSocketCharDevice(path, **kw)
    lis = Listener()
    dev.attach(lis, asyncio.get_running_loop())
    await dev.listening()
    return dev, lis


async def read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), TIMEOUT)


async def test_unix_socket_moves_bytes_and_follows_the_peer(sock_path: str) -> None:
    dev, lis = await open_unix_device(sock_path, mode=0o600)
    assert not dev.opened
    assert os.stat(sock_path).st_mode & 0o777 == 0o600
    assert dev.write(b"nobody there") and dev.queued == 0  # dropped: the next peer starts a new stream
    dev.send_event(0)  # no event path on a socket: dropped
    reader, writer = await asyncio.open_unix_connection(sock_path)
    await lis.until(lambda: ("opened", True) in lis.calls)
    assert dev.opened
    big = pattern(200_000)
    writer.write(big)
    await lis.until(lambda: len(lis.data) == len(big))
    assert lis.data == big
    assert max(len(c[1]) for c in lis.calls if c[0] == "data") <= READ_CHUNK
    assert dev.write(b"to the agent")
    assert await read_exactly(reader, 12) == b"to the agent"
    writer.write(b"bye")
    writer.close()  # EOF: the device closes
    await lis.until(lambda: ("opened", False) in lis.calls)
    assert lis.data.endswith(b"bye")
    assert not dev.opened
    assert lis.states == [("opened", True), ("opened", False)]
    await dev.close()
    assert not os.path.exists(sock_path)


async def test_unix_socket_peer_reconnects_and_second_peer_is_refused(sock_path: str) -> None:
    dev, lis = await open_unix_device(sock_path)
    _r1, w1 = await asyncio.open_unix_connection(sock_path)
    await lis.until(lambda: dev.opened)
    r2, w2 = await asyncio.open_unix_connection(sock_path)  # a second peer: closed at once
    assert await asyncio.wait_for(r2.read(), TIMEOUT) == b""
    w2.close()
    assert dev.opened
    w1.close()
    await lis.until(lambda: not dev.opened)
    r3, w3 = await asyncio.open_unix_connection(sock_path)  # the agent comes back
    await lis.until(lambda: dev.opened)
    assert lis.states == [("opened", True), ("opened", False), ("opened", True)]
    assert dev.write(b"again")
    assert await read_exactly(r3, 5) == b"again"
    w3.write(b"back")
    await lis.until(lambda: lis.data == b"back")
    await dev.close()
    assert await asyncio.wait_for(r3.read(), TIMEOUT) == b""
    w3.close()


async def test_unix_socket_back_pressure(sock_path: str) -> None:
    dev, lis = await open_unix_device(sock_path)
    reader, writer = await asyncio.open_unix_connection(sock_path)
    await lis.until(lambda: dev.opened)
    accepted = fill(dev)  # the peer does not read
    assert ("writable",) not in lis.calls
    got = await read_exactly(reader, len(accepted))
    assert got == accepted
    await lis.until(lambda: ("writable",) in lis.calls)
    assert dev.write(b"more")
    assert await read_exactly(reader, 4) == b"more"
    writer.close()
    await dev.close()


async def test_unix_socket_pause_and_resume(sock_path: str) -> None:
    dev, lis = await open_unix_device(sock_path)
    reader, writer = await asyncio.open_unix_connection(sock_path)
    await lis.until(lambda: dev.opened)
    dev.pause_reading()
    writer.write(b"wait for it")
    await writer.drain()
    # a round trip through the loop and the peer while paused: still nothing delivered
    assert dev.write(b"ping")
    assert await read_exactly(reader, 4) == b"ping"
    assert lis.data == b""
    dev.resume_reading()
    await lis.until(lambda: lis.data == b"wait for it")
    writer.close()
    await dev.close()


async def test_unix_socket_replaces_a_stale_socket_but_not_a_file(tmp_path: Path) -> None:
    stale = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()  # the file stays, nobody listens
    dev, lis = await open_unix_device(stale)
    _, writer = await asyncio.open_unix_connection(stale)
    await lis.until(lambda: dev.opened)
    writer.close()
    await dev.close()

    plain = tmp_path / "plain"
    plain.write_text("keep me")
    dev2 = UnixSocketCharDevice(plain)
    dev2.attach(Listener(), asyncio.get_running_loop())
    with pytest.raises(FileExistsError):
        await dev2.listening()
    await dev2.close()
    assert plain.read_text() == "keep me"


async def test_unix_socket_does_not_steal_a_live_socket(sock_path: str) -> None:
    dev, lis = await open_unix_device(sock_path)
    thief = UnixSocketCharDevice(sock_path)
    thief.attach(Listener(), asyncio.get_running_loop())
    with pytest.raises(OSError) as err:
        await thief.listening()
    assert err.value.errno == errno.EADDRINUSE
    await thief.close()
    await lis.until(lambda: lis.states == [("opened", True), ("opened", False)])  # the probe came and went
    _, writer = await asyncio.open_unix_connection(sock_path)  # still the first device's
    await lis.until(lambda: dev.opened)
    writer.close()
    await dev.close()


async def test_unix_socket_close_keeps_a_replacement(sock_path: str) -> None:
    dev, _ = await open_unix_device(sock_path)
    os.unlink(sock_path)
    Path(sock_path).write_text("someone else's")
    await dev.close()
    assert Path(sock_path).read_text() == "someone else's"


# -- the pty ----------------------------------------------------------------------------------


async def read_fd(fd: int, n: int) -> bytes:
    """Read exactly ``n`` bytes from a non-blocking fd, waiting on the loop."""
    loop = asyncio.get_running_loop()
    out = bytearray()
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    try:

        async def go() -> None:
            while len(out) < n:
                try:
                    out.extend(os.read(fd, n - len(out)))
                except BlockingIOError:
                    ready.clear()
                    await ready.wait()

        await asyncio.wait_for(go(), TIMEOUT)
    finally:
        loop.remove_reader(fd)
    return bytes(out)


def open_slave(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    os.set_blocking(fd, False)
    return fd


async def test_pty_moves_bytes_both_ways() -> None:
    dev = PtyCharDevice()
    assert dev.path.startswith("/dev/")
    assert dev.opened  # a pty is always open
    lis = Listener()
    dev.attach(lis, asyncio.get_running_loop())
    fd = open_slave(dev.path)
    try:
        raw = bytes(range(256)) * 4 + b"\r\n\x03\x04"  # raw mode: nothing translated or echoed
        os.write(fd, raw)
        await lis.until(lambda: len(lis.data) == len(raw))
        assert lis.data == raw
        assert dev.write(raw)
        assert await read_fd(fd, len(raw)) == raw
        assert lis.data == raw  # no echo came back
        assert lis.states == []
    finally:
        os.close(fd)
        await dev.close()


async def test_pty_back_pressure_and_pause() -> None:
    dev = PtyCharDevice(write_limit=64 * 1024)
    lis = Listener()
    dev.attach(lis, asyncio.get_running_loop())
    fd = open_slave(dev.path)
    try:
        accepted = fill(dev, 4096)  # the slave does not read
        assert await read_fd(fd, len(accepted)) == accepted
        await lis.until(lambda: ("writable",) in lis.calls)
        dev.pause_reading()
        os.write(fd, b"paused")
        assert dev.write(b"ping")
        assert await read_fd(fd, 4) == b"ping"
        assert lis.data == b""
        dev.resume_reading()
        await lis.until(lambda: lis.data == b"paused")
    finally:
        os.close(fd)
        await dev.close()


# -- spicevmc LZ4 -------------------------------------------------------------------------------


def test_lz4_round_trip_and_libspice_rules() -> None:
    text = b"usbredir bulk packet " * 200
    msg = compress_vmc(text, client_has_lz4=True, unix_socket=False)
    assert isinstance(msg, SpicevmcCompressedData)
    assert msg.type == DataCompressionType.LZ4 and msg.uncompressed_size == len(text)
    assert len(msg.compressed_data) < len(text)
    assert decompress_vmc(msg) == text
    # the client's message, as it arrives on the wire
    wire = msg.encode()
    client = parse_body(ChannelType.USBREDIR, CLIENT, 102, wire)
    assert isinstance(client, ClientSpicevmcCompressedData)
    assert decompress_vmc(client) == text

    assert isinstance(compress_vmc(text, client_has_lz4=False, unix_socket=False), SpicevmcData)
    assert isinstance(compress_vmc(text, client_has_lz4=True, unix_socket=True), SpicevmcData)
    small = b"a" * COMPRESS_THRESHOLD
    assert compress_vmc(small, True, False) == SpicevmcData(data=small)
    assert isinstance(compress_vmc(b"a" * (COMPRESS_THRESHOLD + 1), True, False), SpicevmcCompressedData)
    noise = os.urandom(5000)  # does not get smaller
    assert compress_vmc(noise, True, False) == SpicevmcData(data=noise)


def lz4_msg(size: int | None, data: bytes, type_: int = DataCompressionType.LZ4) -> ClientSpicevmcCompressedData:
    return ClientSpicevmcCompressedData(type=type_, uncompressed_size=size, compressed_data=data)


def test_lz4_hostile_sizes() -> None:
    good = compress_vmc(bytes(4000), True, False)
    assert isinstance(good, SpicevmcCompressedData)
    packed = good.compressed_data
    assert decompress_vmc(lz4_msg(4000, packed)) == bytes(4000)
    bad = [
        lz4_msg(None, b"abc", DataCompressionType.NONE),  # libspice takes only LZ4
        lz4_msg(3, b"abc", 7),
        lz4_msg(0, packed),
        lz4_msg(3999, packed),  # not the announced size
        lz4_msg(4001, packed),
        lz4_msg(MAX_UNCOMPRESSED + 1, packed * 1000),  # over the bound
        lz4_msg(0xFFFFFFFF, b"\x1f\x00"),  # a 5-byte message announcing 4 GiB: refused before allocating
        lz4_msg(100_000, b"\x1f\x00"),  # more than 2 bytes can expand to
        lz4_msg(100, b"\xff" * 50),  # corrupt
    ]
    for msg in bad:
        with pytest.raises(ProtocolError):
            decompress_vmc(msg)
    assert decompress_vmc(lz4_msg(40_000, compress_vmc(bytes(40_000), True, False).compressed_data), max_size=40_000)  # type: ignore[union-attr]
    with pytest.raises(ProtocolError):
        decompress_vmc(lz4_msg(40_000, b"x"), max_size=39_999)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_decompress_fuzz_wire(body: bytes) -> None:
    """Any client COMPRESSED_DATA body: parses and decompresses, or ProtocolError."""
    try:
        msg = parse_body(ChannelType.PORT, CLIENT, 102, body)
        assert isinstance(msg, ClientSpicevmcCompressedData)
        out = decompress_vmc(msg)
    except ProtocolError:
        return
    assert len(out) == msg.uncompressed_size


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 0xFFFFFFFF), st.binary(max_size=200), st.integers(0, 255))
def test_decompress_fuzz_fields(size: int, data: bytes, type_: int) -> None:
    """Any type, announced size and payload: the announced bytes, or ProtocolError."""
    try:
        out = decompress_vmc(lz4_msg(size, data, type_))
    except ProtocolError:
        return
    assert len(out) == size <= MAX_UNCOMPRESSED


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=5000))
def test_compress_round_trip(data: bytes) -> None:
    msg = compress_vmc(data, True, False)
    if isinstance(msg, SpicevmcData):
        assert msg.data == data
    else:
        assert len(msg.compressed_data) < len(data) and decompress_vmc(msg) == data


# -- the pair's ordering, under random interleavings ----------------------------------------------

_device_ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.binary(min_size=1, max_size=3 * READ_CHUNK // 2)),
        st.tuples(st.just("open"), st.booleans()),
        st.tuples(st.just("event"), st.integers(0, 2)),
        st.tuples(st.just("pause"), st.booleans()),
        st.tuples(st.just("turn"), st.none()),
    ),
    max_size=25,
)
_server_ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(1, 3000)),
        st.tuples(st.just("reader"), st.booleans()),
        st.tuples(st.just("turn"), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(_device_ops, _server_ops)
def test_pair_keeps_order_and_bounds_under_random_interleavings(
    device_ops: list[tuple[str, Any]], server_ops: list[tuple[str, Any]]
) -> None:
    """The listener sees the device's bytes, open changes and events exactly in the device's
    order whatever the pauses; the device gets every accepted server write, in order."""

    async def run() -> None:
        a, b = char_device_pair(write_limit=4096)
        lis = Listener()
        a.attach(lis, asyncio.get_running_loop())
        expected: list[tuple[Any, ...]] = []
        opened = True
        for op, arg in device_ops:
            if op == "write":
                b.write(arg)
                expected.append(("data", arg))
            elif op == "open":
                b.set_open(arg)
                if arg != opened:
                    expected.append(("opened", arg))
                    opened = arg
            elif op == "event":
                b.send_event(arg)
                expected.append(("event", arg))
            elif op == "pause":
                (a.pause_reading if arg else a.resume_reading)()
            else:
                await asyncio.sleep(0)
        a.resume_reading()
        b.set_open(True)  # the server half below needs the device open
        if not opened:
            expected.append(("opened", True))

        def merged(calls: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
            out: list[tuple[Any, ...]] = []
            for c in calls:
                if c[0] == "data" and out and out[-1][0] == "data":
                    out[-1] = ("data", out[-1][1] + c[1])
                elif c[0] != "writable":
                    out.append(c)
            return out

        await lis.until(lambda: merged(lis.calls) == merged(expected))
        assert all(len(c[1]) <= READ_CHUNK for c in lis.calls if c[0] == "data")
        await until(lambda: a.opened)

        got = bytearray()
        accepted = bytearray()
        refused = False
        for i, (op, arg) in enumerate(server_ops):
            if op == "write":
                data = pattern(arg, i)
                if a.write(data):
                    accepted += data
                else:
                    refused = True
                assert a.queued <= max(a.write_limit, arg)
            elif op == "reader":
                b.on_data(got.extend if arg else None)
            else:
                await asyncio.sleep(0)
        b.on_data(got.extend)
        await until(lambda: len(got) == len(accepted))
        assert bytes(got) == bytes(accepted)
        if refused:
            await lis.until(lambda: ("writable",) in lis.calls)
        await a.close()

    asyncio.run(run())
