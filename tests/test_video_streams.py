"""Video streams end to end with the test client: a region repainted at video rate becomes a stream
(STREAM_CREATE, STREAM_DATA), other draws over it clip it, and when it stops the client gets an
empty clip, a lossless picture of the area and STREAM_DESTROY, ending pixel-exact."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.proto.enums import DisplayCap, ImageType
from spiceserver.proto.messages import display as d
from tests.conftest import start_server
from tests.support.client import connect
from tests.support.display import DEFAULT_DISPLAY_CAPS, link_display, pump_until

W, H = 320, 240
BOX = (64, 64, 224, 184)  # 160x120, tile aligned


def video_frame(i: int) -> np.ndarray:
    """A photo-like frame (smooth gradients and mild noise) that changes everywhere each time."""
    x0, y0, x1, y1 = BOX
    h, w = y1 - y0, x1 - x0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin((xx + 3 * i) / 17.0)
    g = 128 + 100 * np.cos((yy - 2 * i) / 23.0)
    b = 128 + 60 * np.sin((xx + yy + 5 * i) / 31.0)
    noise = np.random.default_rng(i).integers(-6, 7, size=(h, w))
    px = [np.clip(c + noise, 0, 255).astype(np.uint32) for c in (r, g, b)]
    return (px[0] << 16) | (px[1] << 8) | px[2]


@contextlib.asynccontextmanager
async def streaming_session(mode: str) -> AsyncIterator[tuple[Any, Any, Any, Any]]:
    """A server with a framebuffer display in ``mode``, and a test client linked to it, its first
    picture shown: (running server, display, display channel, client state)."""
    r = await start_server(streaming_video=mode)
    fb = r.server.add_framebuffer_display(W, H)
    try:
        fb.update(np.full((H, W), 0x203040, np.uint32))
        s = await connect(r.ep)
        ch, state = await link_display(s)
        await pump_until(ch, state, lambda st: st.marks == 1)
        yield r, fb, ch, state
    finally:
        await r.server.close()


async def play(fb: object, frames: range, fps: float = 25.0) -> None:
    x0, y0, x1, y1 = BOX
    screen = np.full((H, W), 0x203040, np.uint32)
    for i in frames:
        screen[y0:y1, x0:x1] = video_frame(i)
        fb.update(screen, [BOX])  # type: ignore[attr-defined]
        await asyncio.sleep(1 / fps)


async def test_a_region_repainted_at_video_rate_is_streamed_and_ends_lossless() -> None:
    async with streaming_session("filter") as (r, fb, ch, state):
        player = asyncio.ensure_future(play(fb, range(40)))
        await pump_until(ch, state, lambda st: st.stream_frames >= 5, timeout=20)
        await player
        await pump_until(ch, state, lambda st: any(isinstance(m, d.StreamDestroy) for m in st.messages), timeout=10)
        kinds = [type(m).__name__ for m in state.messages]
        create = next(m for m in state.messages if isinstance(m, d.StreamCreate))
        assert create.codec_type == 1 and create.flags & 1
        assert (create.dest.left, create.dest.top, create.dest.right, create.dest.bottom) == BOX
        assert (create.src_width, create.src_height) == (BOX[2] - BOX[0], BOX[3] - BOX[1])
        end = kinds.index("StreamDestroy")
        clip = state.messages[kinds.index("StreamClip", kinds.index("StreamCreate"))]
        # the end: an empty clip, the lossless picture, the destroy
        tail = [k for k in kinds[:end + 1] if k.startswith("Stream") or k == "DrawCopy"][-3:]
        assert tail == ["StreamClip", "DrawCopy", "StreamDestroy"], kinds[-10:]
        assert clip is not None
        want = fb.snapshot() & 0xFFFFFF
        await pump_until(ch, state, lambda st: np.array_equal(st.surfaces[0].pixels & 0xFFFFFF, want), timeout=5)
        assert state.streams == {}
        metrics = await r.server.metrics()
        disp = metrics.displays[0]
        assert disp.streams == 0 and disp.streams_started == 1
        assert disp.video["mjpeg"]["frames"] == state.stream_frames and disp.video["mjpeg"]["bytes"] > 0
        assert disp.encode_ms is not None and disp.encode_ms > 0
        text = metrics.prometheus()
        assert 'spiceserver_video_frames_total{display="0",codec="mjpeg"}' in text
        assert "spiceserver_video_encode_seconds_total" in text


async def play_jittering(fb: object, frames: range, *, tile_diff: bool) -> None:
    """The video area repainted with dirty rectangles that wander by a few pixels (or found by the tile diff)."""
    x0, y0, x1, y1 = BOX
    screen = np.full((H, W), 0x203040, np.uint32)
    for i in frames:
        screen[y0:y1, x0:x1] = video_frame(i)
        j = (i * 7) % 5 - 2
        fb.update(screen, None if tile_diff else [(x0 + j, y0 - j, x1 - j, y1 + j)])  # type: ignore[attr-defined]
        await asyncio.sleep(1 / 25)


@pytest.mark.parametrize("tile_diff", [False, True], ids=["jittering-rects", "tile-diff"])
async def test_the_framebuffer_path_streams_despite_jittering_dirty_rectangles(tile_diff: bool) -> None:
    async with streaming_session("filter") as (_r, fb, ch, state):
        player = asyncio.ensure_future(play_jittering(fb, range(40), tile_diff=tile_diff))
        await pump_until(ch, state, lambda st: st.stream_frames >= 5, timeout=20)
        await player
        create = next(m for m in state.messages if isinstance(m, d.StreamCreate))
        dest = (create.dest.left, create.dest.top, create.dest.right, create.dest.bottom)
        assert dest[0] <= BOX[0] and dest[1] <= BOX[1] and dest[2] >= BOX[2] and dest[3] >= BOX[3]
        await pump_until(ch, state, lambda st: any(isinstance(m, d.StreamDestroy) for m in st.messages), timeout=10)
        want = fb.snapshot() & 0xFFFFFF
        await pump_until(ch, state, lambda st: np.array_equal(st.surfaces[0].pixels & 0xFFFFFF, want), timeout=5)


async def test_streaming_video_off_sends_images_only() -> None:
    async with streaming_session("off") as (r, fb, ch, state):
        await play(fb, range(30))
        want = fb.snapshot() & 0xFFFFFF
        await pump_until(ch, state, lambda st: np.array_equal(st.surfaces[0].pixels & 0xFFFFFF, want), timeout=5)
        assert not any(isinstance(m, d.StreamCreate) for m in state.messages)
        assert r.server.display_stats()["stream_stats"]["streams"] == 0


async def stream_running(fb: object, ch: object, state: object) -> asyncio.Future[None]:
    """Start the player (60 frames, 2.4 s) and return once the client has a live stream."""
    player = asyncio.ensure_future(play(fb, range(60)))
    await pump_until(ch, state, lambda st: st.stream_frames >= 2, timeout=20)  # type: ignore[arg-type]
    return player


async def test_an_opaque_draw_over_the_stream_clips_it_and_a_blended_one_gets_the_area_lossless_first() -> None:
    from spiceserver.proto.messages.base import Rect
    from spiceserver.worker.drawable import make_drawable
    from spiceserver.worker.messages import ApplyOps
    from spiceserver.worker.ops import Draw

    async with streaming_session("filter") as (r, fb, ch, state):
        worker = r.server._display(0).worker
        player = await stream_running(fb, ch, state)
        # an opaque solid fill over the stream's top-left corner: the clip loses that corner
        box = Rect(top=BOX[1], left=BOX[0], bottom=BOX[1] + 20, right=BOX[0] + 30)
        fill = d.Fill(brush=d.Brush(type=1, color=0xFF0000), rop_descriptor=8, mask=d.QMask())
        worker.request(ApplyOps((Draw(make_drawable(0, d.DisplayBase(surface_id=0, box=box, clip=d.Clip()), fill)),)))
        await pump_until(ch, state, lambda st: isinstance(st.messages[-1], d.DrawFill), timeout=5)
        clip = next(m for m in reversed(state.messages) if isinstance(m, d.StreamClip))
        rects = [(c.left, c.top, c.right, c.bottom) for c in clip.clip.rects.rects]
        assert (BOX[0], BOX[1], BOX[0] + 30, BOX[1] + 20) not in rects and rects, rects
        assert all(not (x0 < BOX[0] + 30 and y0 < BOX[1] + 20) for x0, y0, _x1, _y1 in rects)
        # a blended (XOR) fill over it: an empty clip and a lossless picture of the area come first
        n = len(state.messages)
        xor = d.Fill(brush=d.Brush(type=1, color=0x00FF00), rop_descriptor=0x20, mask=d.QMask())
        box2 = Rect(top=BOX[1] + 40, left=BOX[0] + 40, bottom=BOX[1] + 60, right=BOX[0] + 60)
        worker.request(ApplyOps((Draw(make_drawable(0, d.DisplayBase(surface_id=0, box=box2, clip=d.Clip()), xor)),)))
        await pump_until(ch, state, lambda st: any(isinstance(m, d.DrawFill) for m in st.messages[n:]), timeout=5)
        kinds = [type(m).__name__ for m in state.messages[n:]]
        i = kinds.index("DrawFill")
        assert kinds[i - 2 : i] == ["StreamClip", "DrawCopy"], kinds
        await player
        await pump_until(ch, state, lambda st: any(isinstance(m, d.StreamDestroy) for m in st.messages), timeout=10)
        want = fb.snapshot() & 0xFFFFFF
        await pump_until(ch, state, lambda st: np.array_equal(st.surfaces[0].pixels & 0xFFFFFF, want), timeout=5)


async def test_a_client_arriving_during_a_stream_gets_it_and_one_that_cannot_decode_gets_images() -> None:
    async with streaming_session("filter") as (r, fb, ch, state):
        player = await stream_running(fb, ch, state)
        s2 = await connect(r.ep)
        ch2, state2 = await link_display(s2, caps=(*DEFAULT_DISPLAY_CAPS, DisplayCap.STREAM_REPORT))
        await pump_until(ch2, state2, lambda st: st.stream_frames >= 1, timeout=10)
        kinds = [type(m).__name__ for m in state2.messages]
        assert kinds.index("DisplayMark") < kinds.index("StreamCreate") < kinds.index("StreamActivateReport") < kinds.index("StreamData")
        create = next(m for m in state2.messages if isinstance(m, d.StreamCreate))
        # the second client says it cannot decode: from then on it gets images, and nothing about the stream
        await ch2.send(d.StreamReport(stream_id=create.id, unique_id=0, start_frame_mm_time=0, end_frame_mm_time=0, num_frames=0, num_drops=0xFFFFFFFF, last_frame_delay=0, audio_delay=0))
        await pump_until(ch2, state2, lambda st: _after(st, d.StreamData, d.DrawCopy, 3), timeout=10)
        n = len(state2.messages)
        await player
        assert await ch.closed()  # one client at a time (libspice): the new session replaced the first
        deadline = asyncio.get_running_loop().time() + 10
        while r.server.display_stats()["streams"]:  # the stream ends (this client gets nothing about it)
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        want = fb.snapshot() & 0xFFFFFF
        await pump_until(ch2, state2, lambda st: np.array_equal(st.surfaces[0].pixels & 0xFFFFFF, want), timeout=5)
        later = [type(m).__name__ for m in state2.messages[n:]]
        assert not [k for k in later if k.startswith("Stream")], later
        assert state2.streams == {create.id: state2.streams[create.id]}  # the test client keeps what it was never told to drop
        video = r.server.display_stats()["clients"][0]["video"]
        assert video["unsupported"] == 1 and video["reports"] == 1


def _after(state: object, first: type, then: type, count: int) -> bool:
    """Whether ``count`` ``then`` messages arrived after the last ``first``."""
    msgs = state.messages  # type: ignore[attr-defined]
    idx = max((i for i, m in enumerate(msgs) if isinstance(m, first)), default=None)
    return idx is not None and sum(isinstance(m, then) for m in msgs[idx:]) >= count


async def test_a_report_for_a_stream_id_out_of_range_closes_the_channel() -> None:
    r = await start_server()
    r.server.add_framebuffer_display(W, H)
    try:
        s = await connect(r.ep)
        ch, state = await link_display(s)
        await pump_until(ch, state, lambda st: st.marks == 1)
        await ch.send(d.StreamReport(stream_id=50, unique_id=0, start_frame_mm_time=0, end_frame_mm_time=0, num_frames=1, num_drops=0, last_frame_delay=0, audio_delay=0))
        assert await ch.closed()
    finally:
        await r.server.close()


def test_codec_order_follows_caps_server_list_and_client_preference() -> None:
    from spiceserver.proto.enums import VideoCodecType as V
    from spiceserver.worker.client_streams import ClientStreams

    def order(caps: set[int], server: tuple[V, ...], pref: tuple[int, ...] | None = None) -> list[V]:
        cs = ClientStreams("t", caps.__contains__, lambda item: None, lambda dr: None, server)
        cs.preferred = pref
        return cs.codec_order()

    all_codecs = (V.MJPEG, V.H264, V.VP8, V.VP9)
    # an old client (no MULTI_CODEC) gets MJPEG whatever the list says
    assert order(set(), (V.H264, V.VP8)) == [V.MJPEG]
    multi = {DisplayCap.MULTI_CODEC, DisplayCap.CODEC_MJPEG, DisplayCap.CODEC_VP8}
    assert order(multi, all_codecs) == [V.MJPEG, V.VP8]
    assert order(multi, (V.VP8, V.MJPEG)) == [V.VP8, V.MJPEG]
    assert order(multi, all_codecs, (int(V.VP8), int(V.MJPEG))) == [V.VP8, V.MJPEG]
    # MJPEG is the fallback for a client that takes it, never forced on one that does not
    assert order(multi, (V.H264,)) == [V.MJPEG]
    assert order({DisplayCap.MULTI_CODEC, DisplayCap.CODEC_H264}, (V.MJPEG,)) == []


async def test_a_client_that_does_not_keep_up_gets_the_newest_frame_not_every_frame() -> None:
    async with streaming_session("filter") as (r, fb, ch, state):
        player = await stream_running(fb, ch, state)
        # the client stops reading: its ack window closes, and each frame replaces the unsent one
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            stats = r.server.display_stats()["clients"][0]
            if stats["video"]["live"] and stats["video"]["live"][0]["replaced"] >= 3:
                break
            assert asyncio.get_running_loop().time() < deadline, stats
            await asyncio.sleep(0.05)
        assert stats["pipe"] <= 3, stats  # one frame waits, not every one
        await player
        await pump_until(ch, state, lambda st: any(isinstance(m, d.StreamDestroy) for m in st.messages), timeout=10)
        want = fb.snapshot() & 0xFFFFFF
        await pump_until(ch, state, lambda st: np.array_equal(st.surfaces[0].pixels & 0xFFFFFF, want), timeout=5)


async def test_a_preferred_codec_message_restarts_the_streams() -> None:
    async with streaming_session("filter") as (_r, fb, ch, state):
        player = await stream_running(fb, ch, state)
        await ch.send(d.PreferredVideoCodecType(codecs=(1,)))
        await pump_until(ch, state, lambda st: any(isinstance(m, d.StreamDestroy) for m in st.messages), timeout=10)
        await pump_until(ch, state, lambda st: sum(isinstance(m, d.StreamCreate) for m in st.messages) == 2, timeout=10)
        await player


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 60), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(-(2**31), 2**31 - 1), st.integers(0, 2**32 - 1),
)  # fmt: skip
def test_any_stream_report_is_taken_or_refused_with_value_error(sid: int, uid: int, t0: int, t1: int, n: int, drops: int, delay: int, audio: int) -> None:
    from spiceserver.proto.enums import VideoCodecType
    from spiceserver.worker.client_streams import ClientStreams
    from spiceserver.worker.video_streams import LiveStream

    cs = ClientStreams("t", lambda cap: False, lambda item: None, lambda dr: None, (VideoCodecType.MJPEG,))
    from spiceserver.region import Region

    agent = cs.create(LiveStream(0, 0, (0, 0, 160, 120), 160, 120, 25), Region.from_rect(0, 0, 160, 120), 160 * 120)
    if uid % 2:
        uid = agent.report_id
    msg = d.StreamReport(stream_id=sid, unique_id=uid, start_frame_mm_time=t0, end_frame_mm_time=t1, num_frames=n, num_drops=drops, last_frame_delay=delay, audio_delay=audio)
    if sid >= 50:
        with pytest.raises(ValueError):
            cs.report(msg, None)
    else:
        cs.report(msg, None)


async def test_frames_of_a_chain_go_lossy_and_the_area_lossless_when_it_ends_without_a_stream() -> None:
    async with streaming_session("filter") as (r, fb, ch, state):
        n = len(state.messages)
        await play(fb, range(12))  # 12 frames: a chain, never a stream (that takes 21)
        want = fb.snapshot() & 0xFFFFFF
        await pump_until(ch, state, lambda st: np.array_equal(st.surfaces[0].pixels & 0xFFFFFF, want), timeout=10)
        images = [m.data.src_bitmap.descriptor.type for m in state.messages[n:] if isinstance(m, d.DrawCopy)]
        assert images.count(ImageType.JPEG) >= 5, images  # the frames after the fifth went lossy
        assert images[-1] != ImageType.JPEG  # the last word: the area lossless
        assert not any(isinstance(m, d.StreamCreate) for m in state.messages)
        stats = r.server.display_stats()["stream_stats"]
        assert stats["lossy_frames"] >= 5 and stats["lossless_after_chain"] == 1
