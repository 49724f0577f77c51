"""PlaybackClientState: libspice's playback command order, real-time frames, mode choice; and the
playback / record message layouts against spice-common ``spice.proto``."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.channels.audio_frames import FRAME_BYTES
from spiceserver.channels.playback_state import NUM_AUDIO_FRAMES, PlaybackClientState, desired_mode
from spiceserver.proto.enums import AudioDataMode, ChannelType, PlaybackCap
from spiceserver.proto.messages import CLIENT, SERVER, Message, parse_body, playback, record
from spiceserver.proto.messages.base import Migrate

ALL = {PlaybackCap.VOLUME, PlaybackCap.LATENCY, PlaybackCap.OPUS}  # what spice-gtk advertises
P = playback


def frame(n: int) -> bytes:
    return bytes([n & 0xFF]) * FRAME_BYTES


def drain(s: PlaybackClientState, now: int = 0) -> list[Message]:
    out = []
    while (m := s.next_message(now)) is not None:
        out.append(m)
    return out


def kinds(msgs: list[Message]) -> list[str]:
    return [type(m).__name__.removeprefix("Playback") for m in msgs]


# --- spice.proto layouts ---------------------------------------------------------------------------


def check(channel: int, direction: str, msg: Message, expected: bytes) -> None:
    assert msg.encode() == expected
    assert parse_body(channel, direction, msg.TYPE, expected) == msg  # type: ignore[arg-type]


def test_playback_layouts() -> None:
    pb = ChannelType.PLAYBACK
    check(pb, SERVER, P.PlaybackData(time=0x01020304, data=b"xy"), b"\x04\x03\x02\x01xy")
    check(pb, SERVER, P.PlaybackMode(time=9, mode=3), struct.pack("<IH", 9, 3))
    check(pb, SERVER, P.PlaybackStart(channels=2, format=1, frequency=48000, time=7), struct.pack("<IHII", 2, 1, 48000, 7))
    check(pb, SERVER, P.PlaybackStop(), b"")
    check(pb, SERVER, P.PlaybackVolume(volume=(1, 2)), b"\x02\x01\x00\x02\x00")
    check(pb, SERVER, P.PlaybackMute(mute=1), b"\x01")
    check(pb, SERVER, P.PlaybackLatency(latency_ms=200), struct.pack("<I", 200))
    assert [m.TYPE for m in (P.PlaybackData, P.PlaybackMode, P.PlaybackStart, P.PlaybackStop)] == [101, 102, 103, 104]
    assert [m.TYPE for m in (P.PlaybackVolume, P.PlaybackMute, P.PlaybackLatency)] == [105, 106, 107]


def test_record_layouts() -> None:
    rc = ChannelType.RECORD
    check(rc, SERVER, record.RecordStart(channels=2, format=1, frequency=48000), struct.pack("<IHI", 2, 1, 48000))
    check(rc, SERVER, record.RecordStop(), b"")
    check(rc, SERVER, record.RecordVolume(volume=(0xFFFF,)), b"\x01\xff\xff")
    check(rc, SERVER, record.RecordMute(mute=0), b"\x00")
    check(rc, CLIENT, record.RecordData(time=5, data=b"abcd"), struct.pack("<I", 5) + b"abcd")
    check(rc, CLIENT, record.RecordMode(time=5, mode=1), struct.pack("<IH", 5, 1))
    check(rc, CLIENT, record.RecordStartMark(time=6), struct.pack("<I", 6))
    assert [m.TYPE for m in (record.RecordStart, record.RecordStop, record.RecordVolume, record.RecordMute)] == [101, 102, 103, 104]
    assert [m.TYPE for m in (record.RecordData, record.RecordMode, record.RecordStartMark)] == [101, 102, 103]


# --- connect ---------------------------------------------------------------------------------------


def test_connect_idle_sends_mode_only() -> None:
    s = PlaybackClientState(ALL)
    assert drain(s, 42) == [P.PlaybackMode(time=42, mode=AudioDataMode.RAW)]  # no encoder: raw


def test_late_client_joins_an_active_stream() -> None:
    s = PlaybackClientState(ALL, active=True, volume=(100, 200), mute=True, encode=lambda b: b"op")
    msgs = drain(s, 7)
    assert msgs == [
        P.PlaybackMode(time=7, mode=AudioDataMode.OPUS),
        P.PlaybackStart(channels=2, format=1, frequency=48000, time=7),
        P.PlaybackVolume(volume=(100, 200)),
        P.PlaybackMute(mute=1),
    ]
    assert s.client_active


def test_mute_alone_reaches_a_late_client() -> None:
    assert kinds(drain(PlaybackClientState(ALL, mute=False))) == ["Mode", "Mute"]


def test_no_volume_cap_no_volume_or_mute() -> None:
    s = PlaybackClientState({PlaybackCap.OPUS}, volume=(1, 1), mute=True)
    s.set_volume((2, 2))
    assert kinds(drain(s)) == ["Mode"]
    s.set_mute(False)
    assert not s.pending() and drain(s) == []


# --- mode ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compression", "opus_cap", "encoder", "mode"),
    [
        (True, True, True, AudioDataMode.OPUS),
        (False, True, True, AudioDataMode.RAW),
        (True, False, True, AudioDataMode.RAW),
        (True, True, False, AudioDataMode.RAW),
    ],
)
def test_mode_choice(compression: bool, opus_cap: bool, encoder: bool, mode: AudioDataMode) -> None:
    caps = {PlaybackCap.VOLUME} | ({PlaybackCap.OPUS} if opus_cap else set())
    s = PlaybackClientState(caps, compression=compression, encode=(lambda b: b"") if encoder else None)
    assert s.mode == mode
    assert desired_mode(compression, opus_cap, encoder) == mode
    assert desired_mode(True, True, True, frequency=44100) == AudioDataMode.RAW


def test_data_carries_the_frame_or_the_encoded_packet() -> None:
    encoded: list[bytes] = []

    def enc(pcm: bytes) -> bytes:
        encoded.append(pcm)
        return b"opus%d" % len(encoded)

    s = PlaybackClientState(ALL, encode=enc, active=True)
    drain(s)
    s.frame(frame(1), 100)
    assert s.next_message(0) == P.PlaybackData(time=100, data=b"opus1")
    assert encoded == [frame(1)]
    s.set_compression(False)  # mid-stream: STOP, MODE, START, then raw frames
    s.frame(frame(2), 110)
    assert s.next_message(5) == P.PlaybackStop()
    assert s.next_message(5) == P.PlaybackMode(time=5, mode=AudioDataMode.RAW)
    assert s.next_message(5) == P.PlaybackStart(channels=2, format=1, frequency=48000, time=5)
    assert s.next_message(5) == P.PlaybackData(time=110, data=frame(2))
    s.set_compression(False)
    assert not s.pending()


def test_frame_size_is_checked() -> None:
    with pytest.raises(ValueError):
        PlaybackClientState(ALL, active=True).frame(b"\x00" * 100, 0)


# --- start / stop ----------------------------------------------------------------------------------


def test_start_stop_coalesce_before_start_went_out() -> None:
    s = PlaybackClientState(ALL)
    s.start()
    s.frame(frame(1), 1)
    s.stop()  # START never went out: no START, no DATA, no STOP
    assert kinds(drain(s)) == ["Mode"]
    assert s.queued == 0


def test_data_never_precedes_its_start() -> None:
    s = PlaybackClientState(ALL)
    s.start()
    s.frame(frame(1), 1)
    assert kinds(drain(s)) == ["Mode", "Start", "Data"]


def test_frames_queued_before_stop_go_out_before_stop() -> None:
    s = PlaybackClientState(ALL, active=True)
    drain(s)
    s.frame(frame(1), 1)
    s.frame(frame(2), 2)
    s.stop()
    s.frame(frame(3), 3)  # stopped: ignored
    assert kinds(drain(s)) == ["Data", "Data", "Stop"]
    s.stop()
    assert not s.pending()


def test_stop_then_start_before_stop_went_out_sends_nothing() -> None:
    s = PlaybackClientState(ALL, active=True)
    drain(s)
    s.stop()
    s.start()
    assert drain(s) == []
    s.frame(frame(1), 1)
    assert kinds(drain(s)) == ["Data"]


def test_fixed_order_of_pending_commands() -> None:
    s = PlaybackClientState(ALL, active=True, encode=lambda b: b"o")
    drain(s)
    s.set_latency(300)
    s.migrate()
    s.set_mute(True)
    s.set_volume((5, 6))
    s.stop()
    s.frame(frame(1), 1)  # stopped: ignored
    s.set_compression(False)
    assert kinds(drain(s)) == ["Mode", "Stop", "Volume", "Mute", "Migrate", "Latency"]


def test_latency_only_with_the_cap() -> None:
    s = PlaybackClientState({PlaybackCap.VOLUME})
    drain(s)
    assert not s.set_latency(400) and not s.pending()
    s = PlaybackClientState(ALL)
    drain(s)
    assert s.set_latency(400)
    s.set_latency(500)  # coalesced: the latest value
    assert drain(s) == [P.PlaybackLatency(latency_ms=500)]


def test_migrate_message() -> None:
    s = PlaybackClientState(ALL)
    drain(s)
    s.migrate()
    assert drain(s) == [Migrate(flags=0)]


# --- real-time frames ------------------------------------------------------------------------------


def test_full_pipe_drops_the_oldest_unsent_frame() -> None:
    s = PlaybackClientState(ALL, active=True)
    drain(s)
    for i in range(5):
        s.frame(frame(i), i)
    assert s.queued == NUM_AUDIO_FRAMES and s.dropped == 2
    assert [m.time for m in drain(s) if isinstance(m, P.PlaybackData)] == [2, 3, 4]


def test_late_frame_dropped_while_all_in_flight_then_written() -> None:
    s = PlaybackClientState(ALL, active=True)
    drain(s)
    s.taken(30)  # MODE and START on the wire
    for i in range(3):
        s.frame(frame(i), i)
    assert len(drain(s)) == 3 and s.in_flight == 3
    s.frame(frame(9), 9)  # all three on their way: this one is late
    assert s.dropped == 1 and s.queued == 0
    s.taken(3 * 1930)
    s.written(30 + 2 * 1930)  # the three DATA were taken together: each ends where that take ends
    assert s.in_flight == 3
    s.written(1930)
    assert s.in_flight == 0
    s.frame(frame(10), 10)
    assert s.queued == 1 and s.dropped == 1


def test_frames_are_gone_when_their_take_is_written() -> None:
    s = PlaybackClientState(ALL, active=True)
    drain(s)
    s.frame(frame(1), 1)
    drain(s)
    s.taken(2000)  # MODE, START, DATA 1
    s.frame(frame(2), 2)
    drain(s)
    s.taken(1930)  # DATA 2
    s.written(1999)
    assert s.in_flight == 2
    s.written(1)
    assert s.in_flight == 1
    s.written(10_000)  # more than taken: clamped
    assert s.in_flight == 0
    s.frame(frame(3), 3)
    drain(s)
    s.taken(1930)
    s.written(1929)
    assert s.in_flight == 1


def test_disconnect_forgets_everything_in_flight() -> None:
    s = PlaybackClientState(ALL, active=True)
    drain(s)
    s.frame(frame(1), 1)
    drain(s)
    s.frame(frame(2), 2)
    s.disconnect()
    assert s.in_flight == 0 and s.queued == 0


def test_times_wrap_to_u32() -> None:
    s = PlaybackClientState(ALL, active=True)
    assert drain(s, 2**32 + 5)[0] == P.PlaybackMode(time=5, mode=AudioDataMode.RAW)
    s.frame(frame(1), 2**32 + 9)
    assert drain(s) == [P.PlaybackData(time=9, data=frame(1))]


# --- any sequence of calls -------------------------------------------------------------------------

OPS = st.sampled_from(["start", "stop", "frame", "volume", "mute", "latency", "compress", "migrate", "next", "next", "next", "take", "write"])


@settings(max_examples=400, deadline=None)
@given(
    ops=st.lists(OPS, max_size=60),
    caps=st.sets(st.sampled_from(list(PlaybackCap))),
    active=st.booleans(),
    encoder=st.booleans(),
)
def test_invariants_under_any_sequence(ops: list[str], caps: set[PlaybackCap], active: bool, encoder: bool) -> None:
    s = PlaybackClientState(caps, active=active, encode=(lambda b: b"o") if encoder else None)
    sent: list[Message] = []
    for n, op in enumerate(ops, 1):
        if op == "start":
            s.start()
        elif op == "stop":
            s.stop()
        elif op == "frame":
            s.frame(frame(n), n)
        elif op == "volume":
            s.set_volume((n, n))
        elif op == "mute":
            s.set_mute(bool(n & 1))
        elif op == "latency":
            s.set_latency(n)
        elif op == "compress":
            s.set_compression(bool(n & 2))
        elif op == "migrate":
            s.migrate()
        elif op == "next":
            m = s.next_message(n)
            if m is not None:
                sent.append(m)
        elif op == "take":
            s.taken(n)
        else:
            s.written(n)
        assert s.queued + s.in_flight <= NUM_AUDIO_FRAMES
    sent += drain(s)
    assert s.queued == 0 and not s.pending()
    assert isinstance(sent[0], P.PlaybackMode)  # MODE first, always
    # the stream as the client sees it: DATA only between START and STOP, START/STOP alternate
    playing = False
    for m in sent:
        if isinstance(m, P.PlaybackStart):
            assert not playing
            playing = True
        elif isinstance(m, P.PlaybackStop):
            assert playing
            playing = False
        elif isinstance(m, P.PlaybackData):
            assert playing
        elif isinstance(m, (P.PlaybackVolume, P.PlaybackMute)):
            assert PlaybackCap.VOLUME in caps
        elif isinstance(m, P.PlaybackLatency):
            assert PlaybackCap.LATENCY in caps
    assert playing == s.active == s.client_active
    # stamps of DATA never go backwards (frames are sent in order)
    times = [m.time for m in sent if isinstance(m, P.PlaybackData)]
    assert times == sorted(times)


def test_a_stop_while_a_mode_restart_is_pending_drops_what_is_queued() -> None:
    """Found by the invariant test: compression changes mid-stream, then the host stops before the
    restart went out; the queued frame (old mode) must not stay queued forever."""
    s = PlaybackClientState(ALL, encode=lambda b: b"o")
    s.start()
    drain(s)
    s.frame(frame(1), 1)
    s.set_compression(False)
    s.stop()
    assert kinds(drain(s)) == ["Stop", "Mode"]
    assert s.queued == 0 and not s.pending()
