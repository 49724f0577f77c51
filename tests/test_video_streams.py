"""Video streams end to end with the test client: a region repainted at video rate becomes a stream
(STREAM_CREATE, STREAM_DATA), other draws over it clip it, and when it stops the client gets an
empty clip, a lossless picture of the area and STREAM_DESTROY, ending pixel-exact."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from spiceserver.proto.messages import display as d
from tests.conftest import start_server
from tests.support.client import connect
from tests.support.display import link_display, pump_until

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


async def play(fb: object, frames: range, fps: float = 25.0) -> None:
    x0, y0, x1, y1 = BOX
    screen = np.full((H, W), 0x203040, np.uint32)
    for i in frames:
        screen[y0:y1, x0:x1] = video_frame(i)
        fb.update(screen, [BOX])  # type: ignore[attr-defined]
        await asyncio.sleep(1 / fps)


async def test_a_region_repainted_at_video_rate_is_streamed_and_ends_lossless() -> None:
    r = await start_server(streaming_video="filter")
    fb = r.server.add_framebuffer_display(W, H)
    try:
        fb.update(np.full((H, W), 0x203040, np.uint32))
        s = await connect(r.ep)
        ch, state = await link_display(s)
        await pump_until(ch, state, lambda st: st.marks == 1)
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
    finally:
        await r.server.close()


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
    r = await start_server(streaming_video="filter")
    fb = r.server.add_framebuffer_display(W, H)
    try:
        fb.update(np.full((H, W), 0x203040, np.uint32))
        s = await connect(r.ep)
        ch, state = await link_display(s)
        await pump_until(ch, state, lambda st: st.marks == 1)
        player = asyncio.ensure_future(play_jittering(fb, range(40), tile_diff=tile_diff))
        await pump_until(ch, state, lambda st: st.stream_frames >= 5, timeout=20)
        await player
        create = next(m for m in state.messages if isinstance(m, d.StreamCreate))
        dest = (create.dest.left, create.dest.top, create.dest.right, create.dest.bottom)
        assert dest[0] <= BOX[0] and dest[1] <= BOX[1] and dest[2] >= BOX[2] and dest[3] >= BOX[3]
        await pump_until(ch, state, lambda st: any(isinstance(m, d.StreamDestroy) for m in st.messages), timeout=10)
        want = fb.snapshot() & 0xFFFFFF
        await pump_until(ch, state, lambda st: np.array_equal(st.surfaces[0].pixels & 0xFFFFFF, want), timeout=5)
    finally:
        await r.server.close()


async def test_streaming_video_off_sends_images_only() -> None:
    r = await start_server(streaming_video="off")
    fb = r.server.add_framebuffer_display(W, H)
    try:
        fb.update(np.full((H, W), 0x203040, np.uint32))
        s = await connect(r.ep)
        ch, state = await link_display(s)
        await pump_until(ch, state, lambda st: st.marks == 1)
        await play(fb, range(30))
        want = fb.snapshot() & 0xFFFFFF
        await pump_until(ch, state, lambda st: np.array_equal(st.surfaces[0].pixels & 0xFFFFFF, want), timeout=5)
        assert not any(isinstance(m, d.StreamCreate) for m in state.messages)
        assert r.server.display_stats()["stream_stats"]["streams"] == 0
    finally:
        await r.server.close()
