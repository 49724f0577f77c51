"""The record channel end to end with the test client: init order, host controls from a thread, raw
and Opus PCM to sync and async callbacks, events, bad input closing only that channel client,
overflow and floods bounded by the ring (libspice ``server/sound.cpp`` record half)."""

from __future__ import annotations

import asyncio
import logging
import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from spiceserver.channels import record as record_module
from spiceserver.channels.record import RecordChannel, RecordEvent
from spiceserver.channels.record_ring import RECORD_SAMPLES_SIZE
from spiceserver.codecs.opus import FRAME_BYTES, OpusEncoder, opus_available
from spiceserver.metrics import SoundMetrics
from spiceserver.proto.enums import AudioDataMode, AudioFmt, ChannelType, RecordCap
from spiceserver.proto.link import has_cap
from spiceserver.proto.messages import main as mm
from spiceserver.proto.messages import record as rm
from spiceserver.proto.wire import frame
from tests.conftest import Running, start_server
from tests.support.client import ClientChannel, Session, connect

needs_opus = pytest.mark.skipif(not opus_available(), reason="PyAV with libopus is not installed")

VOLUME_CAPS = (RecordCap.VOLUME,)
ALL_CAPS = (RecordCap.VOLUME, RecordCap.OPUS)


def samples(start: int, n: int) -> bytes:
    """n distinct stereo samples numbered from start (u32 each, little endian)."""
    return b"".join(((start + i) & 0xFFFFFFFF).to_bytes(4, "little") for i in range(n))


class Host:
    """Sync callbacks recording what the channel hands the host, in order."""

    def __init__(self) -> None:
        self.pcm = bytearray()
        self.events: list[RecordEvent] = []
        self.order: list[tuple[str, Any]] = []
        self.changed = asyncio.Event()

    def on_data(self, pcm: bytes) -> None:
        assert isinstance(pcm, bytes) and len(pcm) % 4 == 0
        self.pcm += pcm
        self.order.append(("data", len(pcm)))
        self.changed.set()

    def on_event(self, ev: RecordEvent) -> None:
        self.events.append(ev)
        self.order.append(("event", ev.kind))
        self.changed.set()

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 5.0) -> None:
        async def loop() -> None:
            while not pred():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)


class AsyncHost(Host):
    """Async callbacks; ``gate`` holds on_data while cleared (a slow host)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls = 0

    async def on_data(self, pcm: bytes) -> None:  # type: ignore[override]
        self.calls += 1
        await asyncio.sleep(0)
        await self.gate.wait()
        super().on_data(pcm)

    async def on_event(self, ev: RecordEvent) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        super().on_event(ev)


async def open_record(
    running: Running, host: Host, caps: tuple[int, ...] = VOLUME_CAPS, s: Session | None = None
) -> tuple[RecordChannel, Session, ClientChannel]:
    mic = running.server.register_channel(RecordChannel, host.on_data, host.on_event)
    s = s or await connect(running.ep)
    rec = await s.link(ChannelType.RECORD, channel_caps=caps)
    return mic, s, rec


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    async def loop() -> None:
        while not pred():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(loop(), timeout)


async def main_still_works(s: Session) -> None:
    await s.main.send(mm.AttachChannels())
    lst = await s.main.expect(mm.ChannelsList, skip=(mm.MouseMode, mm.Name, mm.Uuid))
    assert (ChannelType.RECORD, 0) in [(c.type, c.id) for c in lst.channels]


# --- link, init order, host controls ---------------------------------------------------------------


async def test_server_caps_and_init_order(running: Running) -> None:
    host = Host()
    mic = running.server.register_channel(RecordChannel, host.on_data, host.on_event)
    mic.set_volume((1000, 2000))
    mic.set_mute(True)
    mic.start()
    assert mic.recording and mic.volume == (1000, 2000) and mic.mute
    s = await connect(running.ep)
    rec = await s.link(ChannelType.RECORD, channel_caps=ALL_CAPS)
    assert has_cap(rec.reply.channel_caps, RecordCap.VOLUME)
    assert has_cap(rec.reply.channel_caps, RecordCap.OPUS) == opus_available()
    # RecordChannelClient::init: VOLUME, MUTE (a volume was set), then START (active)
    assert await rec.expect(rm.RecordVolume) == rm.RecordVolume(volume=(1000, 2000))
    assert await rec.expect(rm.RecordMute) == rm.RecordMute(mute=1)
    assert await rec.expect(rm.RecordStart) == rm.RecordStart(channels=2, format=AudioFmt.S16, frequency=48000)
    # a client without the VOLUME cap gets START only (snd_send_volume tests the remote cap)
    s2 = await connect(running.ep)
    rec2 = await s2.link(ChannelType.RECORD)
    assert isinstance(await rec2.recv(), rm.RecordStart)


async def test_mute_alone_is_not_sent_on_connect_and_idle_gets_nothing(running: Running) -> None:
    host = Host()
    mic, s, rec = await open_record(running, host)
    mic.set_mute(True)  # sent to the connected client at once
    assert await rec.expect(rm.RecordMute) == rm.RecordMute(mute=1)
    await rec.close()
    await until(lambda: not mic.clients)
    rec = await s.link(ChannelType.RECORD, channel_caps=VOLUME_CAPS)
    mic.set_volume((7, 7))  # the first message the new client sees: no mute, no start before it
    assert await rec.recv() == rm.RecordVolume(volume=(7, 7))


async def test_start_stop_volume_mute_from_a_host_thread(running: Running) -> None:
    host = Host()
    mic, _s, rec = await open_record(running, host)
    await asyncio.to_thread(mic.start)
    assert await rec.recv() == rm.RecordStart(channels=2, format=AudioFmt.S16, frequency=48000)
    await asyncio.to_thread(mic.start)  # idempotent: nothing more
    await asyncio.to_thread(mic.set_volume, (0x1234, 0xFFFF))
    assert await rec.recv() == rm.RecordVolume(volume=(0x1234, 0xFFFF))
    await asyncio.to_thread(mic.set_mute, True)
    assert await rec.recv() == rm.RecordMute(mute=1)
    await asyncio.to_thread(mic.set_mute, False)
    assert await rec.recv() == rm.RecordMute(mute=0)
    await asyncio.to_thread(mic.stop)
    assert await rec.recv() == rm.RecordStop()
    assert not mic.recording
    with pytest.raises(ValueError):
        mic.set_volume(())
    with pytest.raises(ValueError):
        mic.set_volume((70000, 0))


# --- PCM to the host ----------------------------------------------------------------------------


@pytest.mark.parametrize("host_class", [Host, AsyncHost], ids=["sync", "async"])
async def test_raw_pcm_byte_exact_with_events(running: Running, host_class: type[Host]) -> None:
    host = host_class()
    mic, s, rec = await open_record(running, host)
    mic.start()
    await rec.expect(rm.RecordStart)
    data = samples(0, 3000)
    await rec.send(rm.RecordMode(time=5, mode=AudioDataMode.RAW))
    await rec.send(rm.RecordStartMark(time=6))
    pos = 0
    for size in (1, 3, 1919, 2, 4000, 7, 1920, 1920):  # partial samples stay aligned
        await rec.send(rm.RecordData(time=7, data=data[pos : pos + size]))
        pos += size
    await rec.send(rm.RecordData(time=8, data=data[pos:]))
    await host.wait_for(lambda: len(host.pcm) == len(data))
    assert bytes(host.pcm) == data
    await asyncio.to_thread(mic.stop)
    await host.wait_for(lambda: len(host.events) == 2)
    sid = s.session_id
    assert host.events == [RecordEvent("start", "raw", sid), RecordEvent("stop", "raw", sid)]
    assert host.order[0] == ("event", "start") and host.order[-1] == ("event", "stop")
    assert await rec.expect(rm.RecordStop) == rm.RecordStop()
    # DATA after the host stopped is dropped (libspice resets its ring at the next start)
    await rec.send(rm.RecordData(time=9, data=samples(0, 480)))
    await rec.send(rm.RecordMode(time=9, mode=AudioDataMode.RAW))
    st = await until_stats(mic, lambda m: m.bytes == len(data) + 1920)
    assert len(host.pcm) == len(data) and len(host.events) == 2
    assert st == SoundMetrics("record", 0, (len(data) + 1920) // FRAME_BYTES, 0, len(data) + 1920, ("raw",))
    metrics = await running.server.metrics()
    assert st in metrics.sound
    assert 'spiceserver_sound_clients{channel="record",id="0",mode="raw"} 1' in metrics.prometheus()


async def until_stats(mic: RecordChannel, pred: Callable[[SoundMetrics], bool]) -> SoundMetrics:
    await until(lambda: pred(mic.sound_metrics()))
    return mic.sound_metrics()


async def test_data_before_mode_is_raw_and_a_leaving_client_stops_after_its_data(running: Running) -> None:
    host = AsyncHost()
    mic, s, rec = await open_record(running, host)
    mic.start()
    await rec.expect(rm.RecordStart)
    await rec.send(rm.RecordData(time=1, data=samples(0, 480)))  # no MODE: libspice's default RAW
    await rec.send(rm.RecordData(time=2, data=samples(480, 480)))
    await rec.close()
    await host.wait_for(lambda: len(host.events) == 2)
    assert bytes(host.pcm) == samples(0, 960)
    assert [e.kind for e in host.events] == ["start", "stop"]
    assert host.order[0] == ("event", "start") and host.order[-1] == ("event", "stop")
    # a new client of the same session starts a new stream; host stop and start again
    rec = await s.link(ChannelType.RECORD, channel_caps=VOLUME_CAPS)
    assert isinstance(await rec.recv(), rm.RecordStart)
    mic.stop()
    assert isinstance(await rec.recv(), rm.RecordStop)
    mic.start()
    assert isinstance(await rec.recv(), rm.RecordStart)
    await rec.send(rm.RecordMode(time=3, mode=AudioDataMode.RAW))
    await host.wait_for(lambda: len(host.events) == 3)
    assert host.events[2].kind == "start"


def tone(freq: float, nframes: int) -> bytes:
    t = np.arange(nframes * 480) / 48000.0
    mono = (8000 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    return np.repeat(mono, 2).tobytes()


@needs_opus
@pytest.mark.parametrize("host_class", [Host, AsyncHost], ids=["sync", "async"])
async def test_opus_packets_decode_to_the_tone(running: Running, host_class: type[Host]) -> None:
    host = host_class()
    mic, s, rec = await open_record(running, host, ALL_CAPS)
    mic.start()
    await rec.expect(rm.RecordStart)
    pcm = tone(1000.0, 50)
    enc = OpusEncoder()
    packets = [enc.encode(pcm[i : i + FRAME_BYTES]) for i in range(0, len(pcm), FRAME_BYTES)]
    await rec.send(rm.RecordMode(time=1, mode=AudioDataMode.OPUS))
    for i, p in enumerate(packets, 1):  # 100 ms at a time: an async host gets each burst in time
        await rec.send(rm.RecordData(time=2, data=p))
        if i % 10 == 0:
            await host.wait_for(lambda i=i: len(host.pcm) == i * FRAME_BYTES)  # type: ignore[misc]
    left = np.frombuffer(bytes(host.pcm), "<i2")[0::2].astype(float)[2400:]  # skip the look-ahead
    spectrum = np.abs(np.fft.rfft(left * np.hanning(len(left))))
    peak = np.argmax(spectrum) * 48000 / len(left)
    assert abs(peak - 1000.0) < 48000 / len(left) * 1.5
    assert host.events == [RecordEvent("start", "opus", s.session_id)]
    st = mic.sound_metrics()
    assert st.frames == 50 and st.bytes == sum(map(len, packets)) and st.clients == ("opus",)


# --- bad input: only that channel client closes ---------------------------------------------------


async def assert_closed_then_recovers(
    running: Running, mic: RecordChannel, host: Host, s: Session, rec: ClientChannel, caplog: pytest.LogCaptureFixture, reason: str
) -> None:
    assert await rec.closed()
    assert "protocol error" in caplog.text and reason in caplog.text
    await main_still_works(s)
    rec = await s.link(ChannelType.RECORD, channel_caps=VOLUME_CAPS)
    mic.start()
    await rec.expect(rm.RecordStart)
    before = len(host.pcm)
    await rec.send(rm.RecordData(time=1, data=samples(0, 480)))
    await host.wait_for(lambda: len(host.pcm) == before + 1920)


@pytest.mark.parametrize("mode", [0, 2, 4, 0xFFFF])
async def test_bad_mode_closes_only_that_client(running: Running, caplog: pytest.LogCaptureFixture, mode: int) -> None:
    caplog.set_level(logging.INFO, "spiceserver")
    host = Host()
    mic, s, rec = await open_record(running, host)
    await rec.send(rm.RecordMode(time=0, mode=mode))
    await assert_closed_then_recovers(running, mic, host, s, rec, caplog, "unsupported record mode")


async def test_opus_refused_when_not_offered(running: Running, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, "spiceserver")
    monkeypatch.setattr(record_module, "opus_available", lambda: False)
    host = Host()
    mic, s, rec = await open_record(running, host, ALL_CAPS)
    assert not has_cap(rec.reply.channel_caps, RecordCap.OPUS)
    await rec.send(rm.RecordMode(time=0, mode=AudioDataMode.OPUS))
    await assert_closed_then_recovers(running, mic, host, s, rec, caplog, "does not offer")


@needs_opus
async def test_undecodable_opus_packet_closes_only_that_client(running: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "spiceserver")
    host = Host()
    mic, s, rec = await open_record(running, host, ALL_CAPS)
    mic.start()
    await rec.expect(rm.RecordStart)
    await rec.send(rm.RecordMode(time=0, mode=AudioDataMode.OPUS))
    await rec.send(rm.RecordData(time=1, data=b"\x03"))  # code 3 without its frame count
    await assert_closed_then_recovers(running, mic, host, s, rec, caplog, "invalid Opus packet")
    assert [e.kind for e in host.events[:2]] == ["start", "stop"]  # its stream ended when it left


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (frame(rm.RecordData.TYPE, b"\x01\x02", mini=True), ""),  # no room for the time
        (frame(rm.RecordMode.TYPE, b"\x01\x02\x03\x04\x01", mini=True), ""),  # half a mode
        (struct.pack("<HI", rm.RecordData.TYPE, RecordChannel.MAX_MESSAGE_SIZE + 1), ""),  # larger than the ring
        (frame(9999, b"", mini=True), "unknown message type 9999"),
    ],
    ids=["short-data", "short-mode", "oversized-data", "unknown-type"],
)
async def test_wrong_sizes_close_only_that_client(running: Running, caplog: pytest.LogCaptureFixture, wire: bytes, reason: str) -> None:
    caplog.set_level(logging.INFO, "spiceserver")
    host = Host()
    mic, s, rec = await open_record(running, host)
    rec.writer.write(wire)
    await assert_closed_then_recovers(running, mic, host, s, rec, caplog, reason)


async def test_a_callback_error_is_logged_and_delivery_goes_on(running: Running, caplog: pytest.LogCaptureFixture) -> None:
    got: list[bytes] = []

    def on_data(pcm: bytes) -> None:
        got.append(pcm)
        if len(got) == 1:
            raise RuntimeError("host bug")

    mic = running.server.register_channel(RecordChannel, on_data)
    mic.start()
    s = await connect(running.ep)
    rec = await s.link(ChannelType.RECORD)
    await rec.expect(rm.RecordStart)
    await rec.send(rm.RecordData(time=1, data=samples(0, 4)))
    await rec.send(rm.RecordData(time=1, data=samples(4, 4)))
    await until(lambda: len(got) == 2)
    assert got == [samples(0, 4), samples(4, 4)]
    assert "host bug" in caplog.text


# --- real time: overflow and floods -----------------------------------------------------------------


async def test_slow_async_callback_overflows_the_ring_logged_once_per_episode(running: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "spiceserver")
    host = AsyncHost()
    mic, s, rec = await open_record(running, host)
    mic.start()
    await rec.expect(rm.RecordStart)
    await rec.send(rm.RecordMode(time=0, mode=AudioDataMode.RAW))
    data = samples(0, 100 * 480)  # 1 s of sound
    host.gate.clear()  # the host stalls in its first on_data
    for i in range(100):
        await rec.send(rm.RecordData(time=i, data=data[i * 1920 : (i + 1) * 1920]))
    await until_stats(mic, lambda m: m.bytes == len(data))
    assert host.calls == 1  # the read loop went on while the callback hung
    await main_still_works(s)
    host.gate.set()
    await until(lambda: "caught up" in caplog.text)
    # what the stalled call held, then the newest ring-full: in order, the samples between lost
    pcm = bytes(host.pcm)
    numbers = np.frombuffer(pcm, "<u4")
    assert pcm.endswith(data[-RECORD_SAMPLES_SIZE * 4 :]) and bool(np.all(np.diff(numbers) > 0))
    assert mic.lost_samples * 4 + len(pcm) == len(data) and mic.sound_metrics().dropped == mic.lost_samples // 480 > 0
    assert caplog.text.count("slower than real time") == 1
    # a second episode is logged again
    host.gate.clear()
    for i in range(40):
        await rec.send(rm.RecordData(time=i, data=data[i * 1920 : (i + 1) * 1920]))
    await until_stats(mic, lambda m: m.bytes == len(data) + 40 * 1920)
    host.gate.set()
    await until(lambda: caplog.text.count("caught up") == 2)
    assert caplog.text.count("slower than real time") == 2


async def test_a_flood_faster_than_real_time_keeps_memory_bounded(running: Running) -> None:
    host = AsyncHost()
    mic, _s, rec = await open_record(running, host)
    mic.start()
    await rec.expect(rm.RecordStart)
    host.gate.clear()  # a host that never keeps up
    chunk = bytes(range(256)) * 128  # 32 KiB: the largest DATA
    await rec.send(rm.RecordData(time=0, data=chunk))
    await until(lambda: host.calls == 1)
    n = 512  # 16 MiB, about 87 s of sound, sent as fast as the socket goes
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            rec.conn.send(rm.RecordData(time=i, data=chunk))
            await rec.flush()
        await until(lambda: mic.sound_metrics().bytes == (n + 1) * len(chunk), timeout=60)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"memory grew by {peak} bytes for a {n * len(chunk)}-byte flood"
    assert mic.lost_samples >= n * len(chunk) // 4 - RECORD_SAMPLES_SIZE
    host.gate.set()
    await until(lambda: len(host.pcm) + mic.lost_samples * 4 == (n + 1) * len(chunk))
    assert bytes(host.pcm).endswith((chunk * 2)[-RECORD_SAMPLES_SIZE * 4 :])


async def test_server_close_cancels_a_stalled_delivery(running: Running) -> None:
    host = AsyncHost()
    mic, _s, rec = await open_record(running, host)
    mic.start()
    await rec.expect(rm.RecordStart)
    host.gate.clear()
    await rec.send(rm.RecordData(time=0, data=samples(0, 480)))
    await until(lambda: host.calls == 1)
    await running.server.close()
    assert not [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "") == "RecordChannel._deliver"]


async def test_garbage_after_good_data_loses_neither_the_buffered_pcm_nor_the_playback(running: Running, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 12 point 8: a record client that sends good DATA and then garbage is closed, but the PCM it
    sent before (still in the ring behind a slow async callback) reaches the host, and the session's
    playback stream goes on untouched."""
    caplog.set_level(logging.INFO, "spiceserver")
    host = AsyncHost()
    host.gate.clear()  # the host is slow: what arrives waits in the ring
    speaker = running.server.add_playback()
    mic = running.server.register_channel(RecordChannel, host.on_data, host.on_event)
    s = await connect(running.ep)
    play = await s.link(ChannelType.PLAYBACK, channel_caps=(1, 2))
    rec = await s.link(ChannelType.RECORD, channel_caps=VOLUME_CAPS)
    speaker.start()
    mic.start()
    await rec.expect(rm.RecordStart)
    good = samples(0, 480 * 5)
    await rec.send(rm.RecordData(time=1, data=good))
    await until(lambda: host.calls >= 1)  # the delivery task holds the first chunk, the rest is in the ring
    rec.writer.write(frame(rm.RecordMode.TYPE, b"\x01\x02\x03", mini=True))  # garbage: half a MODE
    assert await rec.closed()
    assert "protocol error" in caplog.text
    host.gate.set()
    await host.wait_for(lambda: bytes(host.pcm) == good)
    from spiceserver.proto.messages import playback as pm

    await play.expect(pm.PlaybackStart, skip=(pm.PlaybackMode,))
    speaker.write(b"\x05" * 1920)
    assert (await play.expect(pm.PlaybackData)).data == b"\x05" * 1920
    await main_still_works(s)


async def test_two_owners_one_microphone_the_first_until_it_leaves() -> None:
    """Several owners on one VM (max_clients > 1): the host hears one microphone, the first
    client's; the others' PCM is dropped (counted) until it leaves, then the next one is heard."""
    r = await start_server(password="own", max_clients=2)
    host = Host()
    try:
        mic = r.server.register_channel(RecordChannel, host.on_data, host.on_event)
        a = await connect(r.ep, password="own")
        b = await connect(r.ep, password="own")
        ra = await a.link(ChannelType.RECORD, channel_caps=VOLUME_CAPS)
        rb = await b.link(ChannelType.RECORD, channel_caps=VOLUME_CAPS)
        mic.start()
        await ra.expect(rm.RecordStart)
        await rb.expect(rm.RecordStart)
        await rb.send(rm.RecordData(time=1, data=samples(10000, 480)))  # not the speaker: unheard
        await until(lambda: mic.unheard_bytes == 1920)
        await ra.send(rm.RecordData(time=1, data=samples(0, 480)))
        await host.wait_for(lambda: len(host.pcm) == 1920)
        assert bytes(host.pcm) == samples(0, 480)
        await ra.close()
        await host.wait_for(lambda: len(host.events) == 2)
        await rb.send(rm.RecordData(time=2, data=samples(480, 480)))
        await host.wait_for(lambda: len(host.pcm) == 3840)
        assert bytes(host.pcm) == samples(0, 960)
        assert [(e.kind, e.session) for e in host.events] == [("start", a.session_id), ("stop", a.session_id), ("start", b.session_id)]
    finally:
        await r.server.close()
