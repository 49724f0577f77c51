"""The playback channel end to end with the test client: libspice's message order, frames from host
threads, Opus for clients with the cap, the multimedia clock hand-over, latency, metrics."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from spiceserver.channels.playback import PlaybackChannel
from spiceserver.codecs.opus import OpusDecoder, opus_available
from spiceserver.proto.enums import AudioDataMode, ChannelType, PlaybackCap
from spiceserver.proto.messages import main as mm
from spiceserver.proto.messages import playback as pm
from tests.conftest import Running, start_server
from tests.support.client import ClientChannel, Session, connect

CAPS = (PlaybackCap.VOLUME, PlaybackCap.LATENCY)


def tone(freq: float, frames: int, start: int = 0, amp: float = 0.3) -> bytes:
    """``frames`` 10 ms frames of a stereo S16LE sine."""
    n = np.arange(start * 480, (start + frames) * 480)
    s = (np.sin(2 * math.pi * freq * n / 48000) * amp * 32767).astype("<i2")
    return np.repeat(s, 2).tobytes()


async def play_client(running: Running, caps: tuple[int, ...] = CAPS) -> tuple[Session, ClientChannel]:
    s = await connect(running.ep)
    ch = await s.link(ChannelType.PLAYBACK, channel_caps=caps)
    return s, ch


async def data_frames(ch: ClientChannel, n: int) -> list[pm.PlaybackData]:
    return [await ch.expect(pm.PlaybackData) for _ in range(n)]


async def test_a_client_gets_mode_first_then_start_and_the_host_pcm_byte_for_byte(running: Running) -> None:
    speaker = running.server.add_playback()
    assert (ChannelType.PLAYBACK, 0) in running.server.channel_ids()
    _, ch = await play_client(running)
    mode = await ch.expect(pm.PlaybackMode)
    assert mode.mode == AudioDataMode.RAW  # the client did not offer OPUS
    pcm = tone(440, 30)
    await asyncio.to_thread(speaker.start)
    start = await ch.expect(pm.PlaybackStart)
    assert (start.channels, start.format, start.frequency) == (2, 1, 48000)
    for i in range(0, len(pcm), 1000):  # odd chunks from a host thread: the channel frames them
        await asyncio.to_thread(speaker.write, pcm[i : i + 1000])
    got = await data_frames(ch, 30)
    assert b"".join(d.data for d in got) == pcm
    assert all(len(d.data) == 1920 for d in got)
    times = [d.time for d in got]
    assert times == sorted(times)
    await asyncio.to_thread(speaker.stop)
    await ch.expect(pm.PlaybackStop)
    m = next(m for m in (await running.server.metrics()).sound if m.channel == "playback")
    assert (m.frames, m.bytes, m.clients) == (30, 30 * 1920, ("raw",))


async def test_stop_sends_the_partial_frame_padded_with_silence(running: Running) -> None:
    speaker = running.server.add_playback()
    _, ch = await play_client(running)
    await ch.expect(pm.PlaybackMode)
    speaker.start()
    speaker.write(b"\x01\x02\x03\x04" * 100)
    speaker.stop()
    await ch.expect(pm.PlaybackStart)
    (last,) = await data_frames(ch, 1)
    assert last.data == b"\x01\x02\x03\x04" * 100 + bytes(1920 - 400)
    await ch.expect(pm.PlaybackStop)
    speaker.write(b"\0" * 1920)  # ignored while stopped
    assert speaker.sound_metrics().frames == 1


async def test_a_late_client_joins_the_playing_stream_with_volume_and_mute(running: Running) -> None:
    speaker = running.server.add_playback()
    speaker.set_volume((1000, 2000))
    speaker.set_mute(True)
    speaker.start()
    speaker.write(tone(440, 5))  # nobody listens: nothing held
    _, ch = await play_client(running)
    msgs = [await ch.recv() for _ in range(4)]
    # libspice drains its command bits in a fixed order: MODE, (DATA,) START, VOLUME, MUTE
    assert [type(m) for m in msgs] == [pm.PlaybackMode, pm.PlaybackStart, pm.PlaybackVolume, pm.PlaybackMute]
    assert isinstance(msgs[2], pm.PlaybackVolume) and msgs[2].volume == (1000, 2000)
    assert isinstance(msgs[3], pm.PlaybackMute) and msgs[3].mute == 1
    speaker.write(tone(440, 1))
    assert len((await ch.expect(pm.PlaybackData)).data) == 1920
    await asyncio.to_thread(speaker.set_volume, (7, 8))
    assert (await ch.expect(pm.PlaybackVolume)).volume == (7, 8)
    await asyncio.to_thread(speaker.set_mute, False)
    assert (await ch.expect(pm.PlaybackMute)).mute == 0


async def test_volume_and_mute_skip_a_client_without_the_volume_cap(running: Running) -> None:
    speaker = running.server.add_playback()
    speaker.set_volume((1, 1))
    _, ch = await play_client(running, caps=())
    await ch.expect(pm.PlaybackMode)
    speaker.set_mute(True)
    speaker.start()
    assert type(await ch.recv()) is pm.PlaybackStart


def test_volume_is_checked() -> None:
    from spiceserver.channels.base import ServerContext
    from spiceserver.config import ServerConfig

    speaker = PlaybackChannel(ServerContext(ServerConfig(port=0, disable_ticketing=True)))
    with pytest.raises(ValueError):
        speaker.set_volume((70000,))


@pytest.mark.skipif(not opus_available(), reason="Opus needs PyAV (spiceserver[video])")
async def test_opus_goes_to_clients_with_the_cap_one_packet_per_frame(running: Running) -> None:
    speaker = running.server.add_playback()
    _, opus = await play_client(running, caps=(*CAPS, PlaybackCap.OPUS))
    assert (await opus.expect(pm.PlaybackMode)).mode == AudioDataMode.OPUS
    speaker.start()
    await opus.expect(pm.PlaybackStart)
    for k in range(50):
        speaker.write(tone(1000, 1, start=k))
    packets = await data_frames(opus, 50)
    assert all(len(p.data) <= 480 for p in packets)
    dec = OpusDecoder()
    pcm = np.frombuffer(b"".join(dec.decode(p.data) for p in packets), "<i2")[::2].astype(float)
    spectrum = np.abs(np.fft.rfft(pcm[4800:]))
    assert abs(np.argmax(spectrum) * 48000 / len(pcm[4800:]) - 1000) < 25
    m = speaker.sound_metrics()
    assert m.clients == ("opus",) and m.frames == 50 and m.bytes < 50 * 480


@pytest.mark.skipif(not opus_available(), reason="Opus needs PyAV (spiceserver[video])")
async def test_compression_off_plays_raw_and_a_runtime_change_sends_mode_again() -> None:
    r = await start_server(playback_compression=False)
    try:
        speaker = r.server.add_playback()
        _, ch = await play_client(r, caps=(*CAPS, PlaybackCap.OPUS))
        assert (await ch.expect(pm.PlaybackMode)).mode == AudioDataMode.RAW
        speaker.set_compression(True)
        assert (await ch.expect(pm.PlaybackMode)).mode == AudioDataMode.OPUS
    finally:
        await r.server.close()


async def test_playback_owns_the_clock_while_it_plays_to_a_client(running: Running) -> None:
    clock = running.server._ctx.clock
    speaker = running.server.add_playback()
    speaker.start()
    assert clock.owner is None  # playing to nobody: the main channel keeps the clients' time
    s, ch = await play_client(running)
    await ch.expect(pm.PlaybackStart, skip=(pm.PlaybackMode,))
    assert clock.owner is speaker
    # a video stream's latency request goes to LATENCY-cap clients instead of MAIN_MULTI_MEDIA_TIME
    await asyncio.to_thread(clock.raise_latency, 650, "test stream")
    assert (await ch.expect(pm.PlaybackLatency)).latency_ms == 650
    assert clock.latency == 400
    speaker.stop()
    await ch.expect(pm.PlaybackStop)
    assert clock.owner is None
    mt = await s.main.expect(mm.MultiMediaTime, skip=(mm.ChannelsList, mm.MouseMode, mm.AgentDisconnected))
    assert mt is not None
    speaker.start()
    await ch.expect(pm.PlaybackStart)
    assert clock.owner is speaker
    await ch.close()
    for _ in range(100):
        if clock.owner is None:
            break
        await asyncio.sleep(0.02)
    assert clock.owner is None  # the last playing client left


async def test_a_burst_is_not_queued_without_bound(running: Running) -> None:
    """Frames are real time: a 100 s burst written at once while the client does not read never
    holds more than three frames for that client: the rest go as the socket takes them (loopback
    buffers take megabytes), then are dropped as late."""
    speaker = running.server.add_playback()
    _, ch = await play_client(running)
    await ch.expect(pm.PlaybackMode)
    speaker.start()
    second = tone(440, 100)
    for _ in range(100):
        speaker.write(second)
    (cc,) = speaker.clients
    assert cc.audio.queued + cc.audio.in_flight <= 3  # type: ignore[attr-defined]
    m = speaker.sound_metrics()
    assert m.frames + m.dropped == 10000 and m.dropped > 0
    print(f"burst of 10000 frames: {m.frames} sent, {m.dropped} dropped")
    await ch.expect(pm.PlaybackStart)
