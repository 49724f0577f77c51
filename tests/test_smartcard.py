"""The smartcard channel with a scripted SPICE client: ReaderAdd acknowledged with the reader id,
ATR / CardRemove / ReaderRemove acknowledged and reported, transmit and its answers, ten slots,
a foreign reader id closing that client, the client leaving, one client at a time, the
ccid-card-passthru slot over a char device pair (network byte order), and a fuzz of client messages.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spiceserver.channels.base import Link, ServerContext
from spiceserver.channels.chardev import char_device_pair
from spiceserver.channels.session import Session
from spiceserver.channels.smartcard import (
    MAX_READERS,
    CcidPassthruReader,
    SmartcardChannel,
    SmartcardChannelClient,
    SmartcardError,
    SmartcardReader,
)
from spiceserver.config import ServerConfig
from spiceserver.errors import ConfigError, ProtocolError
from spiceserver.events import ConnLog
from spiceserver.proto.channel import ChannelConnection
from spiceserver.proto.enums import ChannelType
from spiceserver.proto.link import LinkMess
from spiceserver.proto.messages import smartcard as scm
from spiceserver.proto.messages.base import CLIENT, SERVER
from spiceserver.proto.vsc import (
    LITTLE,
    NETWORK,
    UNDEFINED_READER_ID,
    VscApdu,
    VscAtr,
    VscCardRemove,
    VscError,
    VscErrorCode,
    VscInit,
    VscMessage,
    VscReader,
    VscReaderAdd,
    VscReaderRemove,
    decode,
    pack,
    type_of,
)
from tests.conftest import Running
from tests.support.client import ClientChannel, connect

NAME = b"Spice Software Smartcard"
ATR = bytes.fromhex("3b7a18000073667465206364313434")
SELECT = bytes.fromhex("00A4040007A0000000790100")


async def send(ch: ClientChannel, msg: VscMessage) -> None:
    await ch.send(scm.ClientSmartcardData(type=type_of(msg), reader_id=msg.reader_id, data=msg.payload(LITTLE)))


async def recv(ch: ClientChannel, timeout: float = 5.0) -> VscMessage:
    msg = await ch.expect(scm.SmartcardData, timeout)
    return decode(msg.type, msg.reader_id, msg.data, LITTLE)


class Events:
    """A reader's callbacks, recorded."""

    def __init__(self, reader: SmartcardReader) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.changed = asyncio.Event()
        reader.on_reader_added(lambda name: self._rec("added", name))
        reader.on_card_inserted(lambda atr: self._rec("inserted", atr))
        reader.on_card_removed(lambda: self._rec("removed"))
        reader.on_reader_removed(lambda: self._rec("reader-removed"))

    def _rec(self, *ev: Any) -> None:
        self.log.append(ev)
        self.changed.set()

    async def wait(self, n: int, timeout: float = 5.0) -> list[tuple[Any, ...]]:
        async def loop() -> None:
            while len(self.log) < n:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)
        return self.log


async def open_channel(
    running: Running, readers: int = 1
) -> tuple[SmartcardChannel, list[SmartcardReader], ClientChannel, Any]:
    channel = running.server.register_channel(SmartcardChannel)
    slots = [channel.add_reader() for _ in range(readers)]
    s = await connect(running.ep)
    ch = await s.link(ChannelType.SMARTCARD, 0)
    return channel, slots, ch, s


async def add_reader(ch: ClientChannel, name: bytes = NAME) -> int:
    await send(ch, VscReaderAdd(UNDEFINED_READER_ID, name))
    ack = await recv(ch)
    assert isinstance(ack, VscError) and ack.code == VscErrorCode.SUCCESS, ack
    return ack.reader_id


async def test_reader_add_atr_transmit_remove(running: Running) -> None:
    channel, (reader,), ch, _s = await open_channel(running)
    ev = Events(reader)
    assert (reader.name, reader.atr, reader.present, reader.attached) == (None, None, False, False)
    assert await add_reader(ch) == 0
    assert await ev.wait(1) == [("added", "Spice Software Smartcard")]
    assert reader.name == "Spice Software Smartcard" and reader.attached
    await send(ch, VscAtr(0, ATR))
    assert await recv(ch) == VscError(0, VscErrorCode.SUCCESS)
    await ev.wait(2)
    assert ev.log[1] == ("inserted", ATR) and reader.atr == ATR and reader.present
    await send(ch, VscAtr(0, ATR))  # spice-gtk sends it twice: acknowledged, not reported again
    assert await recv(ch) == VscError(0, VscErrorCode.SUCCESS)

    task = asyncio.create_task(reader.transmit(SELECT))
    assert await recv(ch) == VscApdu(0, SELECT)
    await send(ch, VscApdu(0, b"\x61\x0d"))
    assert await task == b"\x61\x0d"

    task = asyncio.create_task(reader.transmit(b"\x80\xca\x9f\x7f\x00"))
    assert await recv(ch) == VscApdu(0, b"\x80\xca\x9f\x7f\x00")
    await send(ch, VscError(0, 5))  # the client's reader failed (a VReaderStatus)
    with pytest.raises(SmartcardError) as info:
        await task
    assert info.value.code == 5

    await send(ch, VscCardRemove(0))
    assert await recv(ch) == VscError(0, VscErrorCode.SUCCESS)
    assert (await ev.wait(3))[2] == ("removed",) and not reader.present
    with pytest.raises(SmartcardError, match="no card"):
        await reader.transmit(SELECT)
    await send(ch, VscAtr(0, ATR))
    assert await recv(ch) == VscError(0, VscErrorCode.SUCCESS)
    assert (await ev.wait(4))[3] == ("inserted", ATR)
    await send(ch, VscReaderRemove(0))
    assert await recv(ch) == VscError(0, VscErrorCode.SUCCESS)
    assert (await ev.wait(6))[4:] == [("removed",), ("reader-removed",)]
    assert not reader.attached and reader.name is None
    assert channel.client is not None
    assert await add_reader(ch, b"again") == 0  # the slot is free again


async def test_transmits_queue_one_in_flight_and_fail_when_the_card_goes(running: Running) -> None:
    _, (reader,), ch, _s = await open_channel(running)
    await add_reader(ch)
    await send(ch, VscAtr(0, ATR))
    await recv(ch)
    t1 = asyncio.create_task(reader.transmit(b"\x01"))
    t2 = asyncio.create_task(reader.transmit(b"\x02"))
    assert await recv(ch) == VscApdu(0, b"\x01")
    await send(ch, VscAtr(0, ATR))  # a barrier: its ack comes before any APDU sent after the first
    assert await recv(ch) == VscError(0, 0)  # so the second APDU waits for the first answer
    await send(ch, VscApdu(0, b"\x90\x00"))
    assert await t1 == b"\x90\x00"
    assert await recv(ch) == VscApdu(0, b"\x02")
    await send(ch, VscCardRemove(0))
    with pytest.raises(SmartcardError, match="card removed"):
        await t2
    assert await recv(ch) == VscError(0, 0)


async def test_a_timed_out_transmit_drops_its_late_answer(running: Running) -> None:
    _, (reader,), ch, _s = await open_channel(running)
    await add_reader(ch)
    await send(ch, VscAtr(0, ATR))
    await recv(ch)
    with pytest.raises(TimeoutError):
        await reader.transmit(b"\x01", timeout=0.05)
    assert await recv(ch) == VscApdu(0, b"\x01")
    t2 = asyncio.create_task(reader.transmit(b"\x02"))
    assert await recv(ch) == VscApdu(0, b"\x02")
    await send(ch, VscApdu(0, b"late"))
    await send(ch, VscApdu(0, b"mine"))
    assert await t2 == b"mine"


async def test_ten_slots_then_cannot_add_more_readers(running: Running) -> None:
    channel, readers, ch, _s = await open_channel(running, MAX_READERS)
    with pytest.raises(ConfigError):
        channel.add_reader()
    ids = [await add_reader(ch, f"r{i}".encode()) for i in range(MAX_READERS)]
    assert ids == list(range(MAX_READERS))
    assert [r.name for r in readers] == [f"r{i}" for i in range(MAX_READERS)]
    await send(ch, VscReaderAdd(UNDEFINED_READER_ID, b"eleventh"))
    assert await recv(ch) == VscError(UNDEFINED_READER_ID, VscErrorCode.CANNOT_ADD_MORE_READERS)
    await send(ch, VscAtr(9, ATR))  # the channel still works
    assert await recv(ch) == VscError(9, 0)
    assert readers[9].atr == ATR


async def test_no_slot_at_all_refuses_the_reader(running: Running) -> None:
    _, _, ch, _s = await open_channel(running, 0)
    await send(ch, VscReaderAdd(UNDEFINED_READER_ID, NAME))
    assert await recv(ch) == VscError(UNDEFINED_READER_ID, VscErrorCode.CANNOT_ADD_MORE_READERS)


@pytest.mark.parametrize(
    "msg", [VscAtr(2, ATR), VscApdu(3, b"\x90\x00"), VscCardRemove(UNDEFINED_READER_ID), VscReaderRemove(7)]
)
async def test_a_reader_the_client_did_not_add_closes_that_client(
    running: Running, msg: VscMessage, caplog: pytest.LogCaptureFixture
) -> None:
    channel, readers, ch, s = await open_channel(running, 2)
    await add_reader(ch)
    before = running.server._ctx.stats["protocol_errors"]
    with caplog.at_level(logging.WARNING, "spiceserver"):
        await send(ch, msg)
        assert await ch.closed()
    assert "which this client did not add" in caplog.text
    assert running.server._ctx.stats["protocol_errors"] == before + 1
    # the reader it had is removed; the main channel and a new smartcard link go on
    await asyncio.wait_for(_until(lambda: channel.client is None and not readers[0].attached), 5)
    ch2 = await s.link(ChannelType.SMARTCARD, 0)
    assert await add_reader(ch2) == 0


async def test_a_reader_added_on_an_earlier_connection_resumes_its_free_slot(running: Running) -> None:
    """spice-gtk keeps its reader ids across a reconnection (a migration's switch host) and sends
    the ATR with no ReaderAdd: a free slot of that id takes it silently, and the ATR is acknowledged."""
    _channel, readers, ch, _s = await open_channel(running, 2)
    heard: list[object] = []
    readers[1].on_reader_added(heard.append)
    readers[1].on_card_inserted(heard.append)
    await send(ch, VscAtr(1, ATR))
    assert await recv(ch) == VscError(1, 0)
    assert readers[1].attached and readers[1].atr == ATR and not readers[0].attached
    assert heard == ["reader 1 (reconnected)", ATR]


async def _until(pred: Any) -> None:
    while not pred():
        await asyncio.sleep(0.005)


async def test_the_client_leaving_removes_its_readers(running: Running) -> None:
    channel, (r0, r1), ch, s = await open_channel(running, 2)
    e0, e1 = Events(r0), Events(r1)
    await add_reader(ch, b"a")
    await add_reader(ch, b"b")
    await send(ch, VscAtr(1, ATR))
    await recv(ch)
    pending = asyncio.create_task(r1.transmit(SELECT))
    assert await recv(ch) == VscApdu(1, SELECT)
    await ch.close()
    with pytest.raises(SmartcardError):
        await asyncio.wait_for(pending, 5)
    assert (await e0.wait(2))[1:] == [("reader-removed",)]
    assert (await e1.wait(4))[2:] == [("removed",), ("reader-removed",)]
    await asyncio.wait_for(_until(lambda: channel.client is None), 5)
    ch2 = await s.link(ChannelType.SMARTCARD, 0)
    assert await add_reader(ch2, b"c") == 0


async def test_a_second_client_is_refused(running: Running) -> None:
    channel, _, ch, s = await open_channel(running)
    other = await s.link(ChannelType.SMARTCARD, 0)
    assert await other.closed()
    assert channel.refused_links == 1
    assert await add_reader(ch) == 0


async def test_async_callbacks_may_transmit(running: Running) -> None:
    _, (reader,), ch, _s = await open_channel(running)
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    async def inserted(atr: bytes) -> None:
        await answers.put(await reader.transmit(SELECT))

    reader.on_card_inserted(inserted)
    await add_reader(ch)
    await send(ch, VscAtr(0, ATR))
    assert await recv(ch) == VscError(0, 0)
    assert await recv(ch) == VscApdu(0, SELECT)
    await send(ch, VscApdu(0, b"\x61\x0d"))
    assert await asyncio.wait_for(answers.get(), 5) == b"\x61\x0d"


# --- ccid-card-passthru ---------------------------------------------------------------------------


class Device:
    """The device model's end of a char device pair, speaking VSC in network order."""

    def __init__(self, end: Any) -> None:
        self.end = end
        self.reader = VscReader(NETWORK)
        self.got: list[VscMessage] = []
        self.raw = bytearray()
        self.changed = asyncio.Event()
        end.on_data(self._data)

    def _data(self, data: bytes) -> None:
        self.raw += data
        self.got += self.reader.feed(data)
        self.changed.set()

    def send(self, msg: VscMessage) -> None:
        self.end.write(pack(msg, NETWORK))

    async def wait(self, n: int) -> list[VscMessage]:
        async def loop() -> None:
            while len(self.got) < n:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), 5)
        return self.got


async def test_passthru_reader_speaks_network_order_with_patched_ids(running: Running) -> None:
    channel = running.server.register_channel(SmartcardChannel)
    host_reader = channel.add_reader()
    dev, end = char_device_pair(opened=True)
    try:
        passthru = channel.add_passthru_reader(dev)
        assert passthru.id == 1
        device = Device(end)
        device.send(VscInit())  # QEMU's first message: swallowed
        s = await connect(running.ep)
        ch = await s.link(ChannelType.SMARTCARD, 0)
        assert await add_reader(ch, b"first") == 0
        assert host_reader.attached
        await send(ch, VscReaderAdd(UNDEFINED_READER_ID, NAME))
        assert await device.wait(1) == [VscReaderAdd(1, b"")]
        device.send(VscError(0, VscErrorCode.SUCCESS))  # QEMU answers with its own id 0
        assert await recv(ch) == VscError(1, VscErrorCode.SUCCESS)
        assert passthru.name == "Spice Software Smartcard"
        await send(ch, VscAtr(1, ATR))
        assert (await device.wait(2))[1] == VscAtr(1, ATR)
        device.send(VscError(0, 0))
        assert await recv(ch) == VscError(1, 0)
        device.send(VscApdu(0, SELECT))  # the guest's APDU
        assert await recv(ch) == VscApdu(1, SELECT)
        await send(ch, VscApdu(1, b"\x61\x0d"))
        assert (await device.wait(3))[2] == VscApdu(1, b"\x61\x0d")
        # network byte order on the device: ReaderAdd(1), ATR(1, ...), APDU(1, 61 0d)
        assert device.raw[:12] == struct.pack(">III", 3, 1, 0)
        assert device.raw[12:24] == struct.pack(">III", 5, 1, len(ATR))
        assert device.raw[-14:] == struct.pack(">III", 7, 1, 2) + b"\x61\x0d"
        await send(ch, VscReaderRemove(1))
        assert (await device.wait(4))[3] == VscReaderRemove(1)
        device.send(VscError(0, 0))
        assert await recv(ch) == VscError(1, 0)
        assert not passthru.attached
        # taken again, then the client leaves: the device hears ReaderRemove
        await send(ch, VscReaderAdd(UNDEFINED_READER_ID, NAME))
        assert (await device.wait(5))[4] == VscReaderAdd(1, b"")
        device.send(VscError(0, 0))
        assert await recv(ch) == VscError(1, 0)
        await ch.close()
        assert (await device.wait(6))[5] == VscReaderRemove(1)
    finally:
        await running.server.close()
        await dev.close()


async def test_passthru_without_an_open_device_acknowledges_and_replays_on_open(running: Running) -> None:
    channel = running.server.register_channel(SmartcardChannel)
    dev, end = char_device_pair(opened=False)
    try:
        channel.add_passthru_reader(dev)
        device = Device(end)
        s = await connect(running.ep)
        ch = await s.link(ChannelType.SMARTCARD, 0)
        assert await add_reader(ch) == 0  # acknowledged by the slot: the client does not stall
        await send(ch, VscAtr(0, ATR))
        assert await recv(ch) == VscError(0, 0)
        end.set_open(True)
        assert await device.wait(2) == [VscReaderAdd(0, b""), VscAtr(0, ATR)]
        device.send(VscError(0, 0))  # their acknowledgements are swallowed
        device.send(VscError(0, 0))
        device.send(VscApdu(0, b"\x00\xb0"))
        assert await recv(ch) == VscApdu(0, b"\x00\xb0")
    finally:
        await running.server.close()
        await dev.close()


async def test_passthru_device_garbage_is_ignored_until_it_reopens(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    channel = running.server.register_channel(SmartcardChannel)
    dev, end = char_device_pair(opened=True)
    try:
        channel.add_passthru_reader(dev)
        device = Device(end)
        s = await connect(running.ep)
        ch = await s.link(ChannelType.SMARTCARD, 0)
        await send(ch, VscReaderAdd(UNDEFINED_READER_ID, NAME))
        await device.wait(1)
        with caplog.at_level(logging.WARNING, "spiceserver"):
            end.write(struct.pack(">III", 7, 0, 1 << 20))  # 1 MiB announced
            device.send(VscError(0, 0))  # ignored: the stream broke
            end.set_open(False)
            end.set_open(True)
            assert (await device.wait(2))[1] == VscReaderAdd(0, b"")
            device.send(VscError(0, 0))  # the replayed ReaderAdd's ack: swallowed
            device.send(VscApdu(0, b"\x01"))
            assert await recv(ch) == VscApdu(0, b"\x01")
        assert "bad data from the passthru device" in caplog.text
    finally:
        await running.server.close()
        await dev.close()


# --- fuzz -----------------------------------------------------------------------------------------

FAST = settings(deadline=None, database=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])


def make_client(readers: int) -> tuple[SmartcardChannel, SmartcardChannelClient]:
    ctx = ServerContext(ServerConfig(port=0))
    channel = SmartcardChannel(ctx)
    for _ in range(readers):
        channel.add_reader()
    mess = LinkMess(7, ChannelType.SMARTCARD, 0, (), ())
    link = Link(
        cast(Any, None), cast(Any, None), mess, b"", False, False, ConnLog(logging.getLogger("spiceserver"), {})
    )
    conn = ChannelConnection(ChannelType.SMARTCARD, SERVER, mini_header=True, max_message_size=channel.max_message_size)
    return channel, channel.create_client(conn, link, Session(7))


vsc_items = st.tuples(
    st.integers(0, 11),
    st.sampled_from([0, 1, 2, 9, 10, UNDEFINED_READER_ID]) | st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=40),
)


@FAST
@given(st.lists(vsc_items, max_size=12), st.integers(0, 3))
def test_fuzz_client_messages_are_handled_or_close_with_protocol_error(
    items: list[tuple[int, int, bytes]], readers: int
) -> None:
    async def go() -> None:
        channel, cc = make_client(readers)
        client = ChannelConnection(ChannelType.SMARTCARD, CLIENT, mini_header=True, max_message_size=1 << 20)
        try:
            for msg_type, reader_id, data in items:
                client.send(scm.ClientSmartcardData(type=msg_type, reader_id=reader_id, data=data))
                for ev in cc.conn.receive_data(client.data_to_send(), 0.0):
                    await cc.handle(ev, 0.0)
        except ProtocolError as exc:
            assert exc.reason
        cc.closed = True
        await cc.on_close()
        channel.client_gone(cc)
        assert all(not r.attached and not r.present for r in channel.readers)
        for ev in client.receive_data(cc.take_output()):
            if isinstance(ev, scm.SmartcardData):
                decode(ev.type, ev.reader_id, ev.data, LITTLE)

    asyncio.run(go())


class Sink:
    """A client stand-in for a slot: records what the slot sends it."""

    def __init__(self) -> None:
        self.closed = False
        self.sent: list[VscMessage] = []

    def send_vsc(self, msg: VscMessage) -> None:
        self.sent.append(msg)


@FAST
@given(
    st.lists(
        st.binary(max_size=60)
        | st.sampled_from(
            [pack(VscInit(), NETWORK), pack(VscError(0, 0), NETWORK), pack(VscApdu(0, b"\x90\x00"), NETWORK)]
        ),
        max_size=10,
    )
)
def test_fuzz_passthru_device_bytes_never_raise(chunks: list[bytes]) -> None:
    async def go() -> None:
        dev, _end = char_device_pair(opened=True)
        slot = CcidPassthruReader(4, dev)
        sink = Sink()
        await slot.reader_added(sink, VscReaderAdd(UNDEFINED_READER_ID, NAME))
        for chunk in chunks:
            slot.device_data(chunk)  # garbage is logged and ignored, never raised
        assert all(m.reader_id == 4 and not isinstance(m, VscInit) for m in sink.sent)
        slot.client_gone()
        await dev.close()

    asyncio.run(go())
