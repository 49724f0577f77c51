"""Record channel client handlers under hostile input: any bytes, any message sequence, interleaved
with the host's start/stop, end in "handled" or our ProtocolError, never another exception.

h11's ``fuzz/afl-server.py`` invariant, applied one layer up from the message parser
(``tests/proto/test_fuzz_messages.py``): the sans-IO connection parses, the channel client's
handlers (mode, Opus decoding, the ring, the host callbacks) act. Also checked: the host only ever
gets whole stereo samples, "start" and "stop" alternate, and the ring's bound holds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spiceserver.channels.base import Link, ServerContext
from spiceserver.channels.record import RecordChannel, RecordChannelClient, RecordEvent
from spiceserver.channels.record_ring import RECORD_SAMPLES_SIZE
from spiceserver.channels.session import Session
from spiceserver.codecs.opus import FRAME_BYTES, OpusEncoder, opus_available
from spiceserver.config import ServerConfig
from spiceserver.errors import ProtocolError
from spiceserver.events import ConnLog
from spiceserver.proto.channel import ChannelConnection
from spiceserver.proto.enums import AudioDataMode, ChannelType, RecordCap
from spiceserver.proto.link import LinkMess, caps_to_words
from spiceserver.proto.messages import record as rm
from spiceserver.proto.messages.base import CLIENT, SERVER, Message
from spiceserver.proto.wire import frame

FAST = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

_PACKETS: list[bytes] = []


def opus_packets() -> list[bytes]:
    """A few real Opus packets of a tone (empty without PyAV)."""
    if not _PACKETS and opus_available():
        enc = OpusEncoder()
        for i in range(4):
            pcm = bytes((i * 37 + j) & 0xFF for j in range(FRAME_BYTES))
            _PACKETS.append(enc.encode(pcm))
    return _PACKETS


class Host:
    def __init__(self) -> None:
        self.pcm = 0
        self.events: list[RecordEvent] = []

    def on_data(self, pcm: bytes) -> None:
        assert isinstance(pcm, bytes) and pcm and len(pcm) % 4 == 0
        self.pcm += len(pcm)

    def on_event(self, ev: RecordEvent) -> None:
        self.events.append(ev)


def make_client(host: Host) -> tuple[RecordChannel, RecordChannelClient]:
    ctx = ServerContext(ServerConfig(port=0))
    mic = RecordChannel(ctx, host.on_data, host.on_event)
    mess = LinkMess(7, ChannelType.RECORD, 0, (), caps_to_words({RecordCap.VOLUME, RecordCap.OPUS}))
    link = Link(cast(Any, None), cast(Any, None), mess, b"", False, False, ConnLog(logging.getLogger("spiceserver"), {}))
    conn = ChannelConnection(ChannelType.RECORD, SERVER, mini_header=True, max_message_size=mic.max_message_size)
    cc = mic.create_client(conn, link, Session(7))
    mic.clients.append(cc)  # as LoopChannel.serve does: the one client is the speaker
    return mic, cc


modes = st.sampled_from([0, 1, 2, 3, 4, 0xFFFF]) | st.integers(0, 0xFFFF)
payloads = st.binary(max_size=2100) | st.sampled_from([b"", b"\x00", b"\x03", b"\xfc", b"\xff\xff\xff"])
messages = st.one_of(
    st.builds(rm.RecordMode, time=st.integers(0, 0xFFFFFFFF), mode=modes, data=st.binary(max_size=8)),
    st.builds(rm.RecordStartMark, time=st.integers(0, 0xFFFFFFFF)),
    st.builds(rm.RecordData, time=st.integers(0, 0xFFFFFFFF), data=payloads),
    st.integers(0, 3).map(lambda i: ("opus", i)),  # a real Opus packet
    st.sampled_from(["start", "stop", "close"]),  # the host, or the connection ending
    st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=64)),  # any type, any body
)


def wire(conn: ChannelConnection, item: Any) -> bytes:
    if isinstance(item, Message):
        conn.send(item)
        return conn.data_to_send()
    if isinstance(item, tuple) and item[0] == "opus":
        packets = opus_packets()
        conn.send(rm.RecordData(time=0, data=packets[item[1]] if packets else b"\x00"))
        return conn.data_to_send()
    type_, body = item
    return frame(type_, body, mini=True)


async def run(items: list[Any], chop: int) -> tuple[Host, RecordChannel]:
    host = Host()
    mic, cc = make_client(host)
    client = ChannelConnection(ChannelType.RECORD, CLIENT, mini_header=True, max_message_size=1 << 20)
    await cc.start(0.0)
    closed = False
    for item in items:
        if item == "start":
            mic.start()
            continue
        if item == "stop":
            mic.stop()
            continue
        if item == "close" or closed:
            break
        data = wire(client, item)
        try:  # the pump of LoopChannel._feed, in pieces of ``chop`` bytes
            for i in range(0, len(data), chop):
                for ev in cc.conn.receive_data(data[i : i + chop], 0.0):
                    await cc.handle(ev, 0.0)
        except ProtocolError as exc:
            assert isinstance(exc.reason, str) and exc.reason
            closed = True
    cc.closed = True
    await cc.on_close()
    mic.stop()
    await mic.close()
    return host, mic


def check(host: Host, mic: RecordChannel) -> None:
    kinds = [e.kind for e in host.events]
    assert kinds == ["start", "stop"] * (len(kinds) // 2), kinds  # alternate, and every stream ended
    st_ = mic.sound_metrics()
    assert host.pcm + mic.lost_samples * 4 <= st_.frames * FRAME_BYTES + FRAME_BYTES
    assert st_.dropped == mic.lost_samples // 480
    assert mic._ring.available <= RECORD_SAMPLES_SIZE


@settings(FAST, max_examples=300)
@given(items=st.lists(messages, max_size=12), chop=st.sampled_from([1, 5, 64, 1 << 16]))
def test_any_message_sequence_is_handled_or_a_protocol_error(items: list[Any], chop: int) -> None:
    host, mic = asyncio.run(run(["start", *items], chop))
    check(host, mic)


@settings(FAST, max_examples=200)
@given(blob=st.binary(max_size=600))
def test_any_bytes_are_handled_or_a_protocol_error(blob: bytes) -> None:
    async def go() -> None:
        host = Host()
        mic, cc = make_client(host)
        mic.start()
        try:
            for ev in cc.conn.receive_data(blob, 0.0):
                await cc.handle(ev, 0.0)
        except ProtocolError:
            pass
        await cc.on_close()
        check(host, mic)

    asyncio.run(go())


@pytest.mark.skipif(not opus_available(), reason="PyAV with libopus is not installed")
def test_opus_mode_then_garbage_is_a_protocol_error() -> None:
    async def go() -> None:
        host = Host()
        mic, cc = make_client(host)
        mic.start()
        await cc.handle(rm.RecordMode(time=0, mode=AudioDataMode.OPUS), 0.0)
        await cc.handle(rm.RecordData(time=0, data=opus_packets()[0]), 0.0)
        assert host.pcm == FRAME_BYTES and cc.mode_name == "opus"
        with pytest.raises(ProtocolError, match="invalid Opus packet"):
            await cc.handle(rm.RecordData(time=0, data=b"\x03"), 0.0)
        await cc.on_close()
        assert [e.kind for e in host.events] == ["start", "stop"]

    asyncio.run(go())
