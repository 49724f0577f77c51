"""spice-html5 (in headless Chromium) plays the server's video streams: MJPEG and VP8.

A framebuffer region repainted at 25 fps with photo-like frames becomes a stream (spice
``server/video-stream.cpp``; ``filter`` mode). spice-html5 0.3.0 (``display.js``) draws MJPEG
frames on its canvas as they load (``process_mjpeg_stream_data``: a ``data:`` URL, no clip, no
scaling) and plays VP8 in a ``<video>`` element over the canvas fed with WebM clusters through
MediaSource (``process_video_stream_data``, ``webm.js``). Every frame carries its index as a strip of
16x16 black/white blocks (and their complement), which survives JPEG and VP8, so a picture read
back from the browser is compared with the very frame it shows.

While the stream runs: the shown frame's index advances, its PSNR against the source frame is
above a floor, the picture is lossy (so it came from the stream, not from an image), and
STREAM_REPORTs arrive (spice-html5 sends one on the 6th frame of each window); for VP8, every
WebM cluster spice-html5 builds starts on a real VP8 keyframe (it flags the first block of each
cluster as one, so the server forces a keyframe on exactly those frames). After the last frame
the stream ends (a second later: empty clip, lossless DRAW_COPY, STREAM_DESTROY, one per stream as
spice-html5 ignores DESTROY_ALL): the canvas equals ``server.display_snapshot()`` exactly and
spice-html5 has no stream left (``display.streams``, no ``<video>`` in the page).

Each test runs through websockify and over the server's own WebSocket (``transport``). The VP8
test needs the ``spiceserver[video]`` extra (skipped without it) and tells Chromium to autoplay
(see :data:`AUTOPLAY`); Chromium shows VP8 with the BT.709 matrix (see :func:`as_bt709`).

The display channel is reached from the page as ``canvas.sc.display`` (spice-html5's
``hook_events`` puts the main connection on the primary canvas). Skipped without Chromium or
spice-html5, like the rest of the html5 tier (see ``tests/interop/html5.py``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pytest

from spiceserver import ServerConfig
from spiceserver.desktop import SyntheticDesktop
from spiceserver.errors import ConfigError
from tests.conftest import Running, start_server
from tests.interop.html5 import Html5Page, describe_diff, html5_client, require_html5, rgba_to_xrgb

pytestmark = [pytest.mark.interop]

T = TypeVar("T")

W, H = 640, 480
BOX = (96, 64, 352, 256)  # 256x192 at a 16-pixel aligned place: JPEG blocks line up with the index strip
BW, BH = BOX[2] - BOX[0], BOX[3] - BOX[1]
BLOCK = 16
BITS = BW // BLOCK  # 16 bits of frame index in the top row of blocks, their complement in the second
FPS = 25.0

#: Lowest PSNR (dB) accepted between a picture spice-html5 shows and the source frame it carries.
#: A wrong frame gives under 20 dB (the next frame: 19.3 dB; the right picture with the wrong index
#: strip: 19.8 dB). Measured (Chromium 156, 256x192 frames at 25 fps, five runs):
#:
#: * MJPEG: min 35.5, mean 36.9 dB at the rate control's starting quality; its lowest quality (20)
#:   gives 33.2 dB on these frames (Pillow decoding).
#: * VP8 in the <video> (drawn into a scratch canvas): min 36.0, mean 36.3 dB against
#:   :func:`as_bt709` (28.7 dB against the source itself); PyAV decoding the encoder's output at the
#:   rate control's lowest bit rate (128 kbit/s) gives min 31.9 dB.
MJPEG_MIN_PSNR = 30.0
VP8_MIN_PSNR = 29.0

# --------------------------------------------------------------------------- the frames


@functools.lru_cache(maxsize=256)
def video_frame(i: int) -> np.ndarray:
    """Frame ``i`` of the video: smooth moving gradients with mild noise (photo-like, so ``filter``
    mode streams it) and ``i`` in two rows of blocks at the top. (BH, BW) uint32 0x00RRGGBB."""
    yy, xx = np.mgrid[0:BH, 0:BW].astype(np.float64)
    r = 128 + 100 * np.sin((xx + 3 * i) / 17.0)
    g = 128 + 100 * np.cos((yy - 2 * i) / 23.0)
    b = 128 + 60 * np.sin((xx + yy + 5 * i) / 31.0)
    noise = np.random.default_rng(i).integers(-6, 7, size=(BH, BW))
    px = [np.clip(c + noise, 0, 255).astype(np.uint32) for c in (r, g, b)]
    frame: np.ndarray = (px[0] << 16) | (px[1] << 8) | px[2]
    for bit in range(BITS):
        on = (i >> bit) & 1
        x = bit * BLOCK
        frame[0:BLOCK, x : x + BLOCK] = 0xFFFFFF if on else 0
        frame[BLOCK : 2 * BLOCK, x : x + BLOCK] = 0 if on else 0xFFFFFF
    frame.setflags(write=False)
    return frame


def frame_index(px: np.ndarray) -> int | None:
    """The index a (BH, BW) picture carries, or None if its strip is not a clean one (no frame of
    ours, or two frames blended)."""
    luma = ((px >> 16) & 0xFF) * 0.299 + ((px >> 8) & 0xFF) * 0.587 + (px & 0xFF) * 0.114
    index = 0
    for bit in range(BITS):
        x = bit * BLOCK + BLOCK // 4
        top = float(luma[BLOCK // 4 : BLOCK * 3 // 4, x : x + BLOCK // 2].mean())
        low = float(luma[BLOCK + BLOCK // 4 : BLOCK + BLOCK * 3 // 4, x : x + BLOCK // 2].mean())
        if top > 170 and low < 85:
            index |= 1 << bit
        elif not (top < 85 and low > 170):
            return None
    return index


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB over the R, G, B bytes of two 0x00RRGGBB pictures (inf when equal)."""
    sa = np.stack([(a >> s) & 0xFF for s in (16, 8, 0)]).astype(np.float64)
    sb = np.stack([(b >> s) & 0xFF for s in (16, 8, 0)]).astype(np.float64)
    mse = float(np.mean((sa - sb) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


#: Luma coefficients (Kr, Kb) of the two colour matrices in play (ITU-R BT.601, BT.709).
BT601 = (0.299, 0.114)
BT709 = (0.2126, 0.0722)


@functools.lru_cache(maxsize=256)
def as_bt709(i: int) -> np.ndarray:
    """Frame ``i`` as Chromium shows it from VP8: the encoder turns RGB into YUV with BT.601's matrix
    (VP8's own, RFC 6386 section 9.2), and Chromium turns a VP8 WebM track without a Colour element
    (spice-html5 writes none) back into RGB with BT.709's, which shifts greens by up to ~15 %
    (measured: a picture is 28.7 dB from its source frame and 36.0 to 36.6 dB from this view of
    it, about what PyAV decoding the same stream gives against the source: 36.7 dB)."""
    src = video_frame(i)
    r, g, b = (((src >> s) & 0xFF).astype(np.float64) for s in (16, 8, 0))
    kr, kb = BT601
    y = kr * r + (1 - kr - kb) * g + kb * b
    u, v = (b - y) / (2 * (1 - kb)), (r - y) / (2 * (1 - kr))
    kr, kb = BT709
    r, b = y + 2 * (1 - kr) * v, y + 2 * (1 - kb) * u
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    r8, g8, b8 = (np.clip(np.rint(c), 0, 255).astype(np.uint32) for c in (r, g, b))
    out: np.ndarray = (r8 << 16) | (g8 << 8) | b8
    out.setflags(write=False)
    return out


class Player:
    """The host side: repaints BOX with the next frame FPS times a second until stopped."""

    def __init__(self, fb: Any, background: np.ndarray) -> None:
        self.fb = fb
        self.screen = background.copy()
        self.next = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def show(self, i: int) -> None:
        x0, y0, x1, y1 = BOX
        self.screen[y0:y1, x0:x1] = video_frame(i)
        self.fb.update(self.screen, [BOX])

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while not self._stop.is_set():
            self.show(self.next)
            self.next += 1
            # paced against the start, so a slow loop does not slow the video down
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, t0 + self.next / FPS - loop.time()))

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


@contextlib.asynccontextmanager
async def playing(fb: Any, background: np.ndarray) -> AsyncIterator[Player]:
    player = Player(fb, background)
    player.start()
    try:
        yield player
    finally:
        await player.stop()


# --------------------------------------------------------------------------- the page

# a rectangle of the display canvas as base64 RGBA
_READ_RECT_JS = """((x, y, w, h) => {
  const c = document.querySelector('#spice-screen canvas');
  if (!c) return null;
  const d = c.getContext('2d').getImageData(x, y, w, h).data;
  let s = '';
  for (let i = 0; i < d.length; i += 0x8000) s += String.fromCharCode.apply(null, d.subarray(i, i + 0x8000));
  return btoa(s);
})"""

# spice-html5's streams (display.streams: an Array, destroyed entries set to undefined) and <video>s
_STREAMS_JS = """(() => {
  const c = document.querySelector('#spice-screen canvas');
  const d = c && c.sc && c.sc.display;
  const out = [];
  if (d && d.streams)
    for (const k in d.streams) {
      const s = d.streams[k];
      if (s) out.push({id: +k, codec: s.codec_type, video: !!s.video,
                       report: s.report ? {frames: s.report.num_frames, drops: s.report.num_drops} : null});
    }
  return {connected: !!d, streams: out, videos: document.querySelectorAll('video').length};
})()"""

# the VP8 stream's <video>: playback state, and its current picture drawn into a scratch canvas
_VIDEO_JS = """((picture) => {
  const v = document.querySelector('#spice-screen video');
  if (!v) return null;
  const q = v.getVideoPlaybackQuality();
  const out = {t: v.currentTime, frames: q.totalVideoFrames, dropped: q.droppedVideoFrames,
               ready: v.readyState, paused: v.paused, w: v.videoWidth, h: v.videoHeight,
               error: v.error ? v.error.code + ' ' + v.error.message : null, style: v.getAttribute('style'),
               buffered: v.buffered.length ? [v.buffered.start(0), v.buffered.end(v.buffered.length - 1)] : null};
  if (picture && v.readyState >= 2 && v.videoWidth) {
    const c = document.createElement('canvas');
    c.width = v.videoWidth; c.height = v.videoHeight;
    const x = c.getContext('2d');
    x.drawImage(v, 0, 0);
    const d = x.getImageData(0, 0, c.width, c.height).data;
    let s = '';
    for (let i = 0; i < d.length; i += 0x8000) s += String.fromCharCode.apply(null, d.subarray(i, i + 0x8000));
    out.data = btoa(s);
  }
  return out;
})"""


# Watch what spice-html5 appends to the VP8 stream's SourceBuffer: its SimpleBlocks (webm.js: 0xA3,
# an 8-byte size, track 0x81, a 16-bit timecode, the flags byte, then the frame) whose flags say
# keyframe (0x80: the first block of each cluster, whatever it holds) and whether the VP8 frame is
# one (frame tag bit 0 clear, RFC 6386 section 9.1).
_WATCH_BLOCKS_JS = """(() => {
  if (window.spiceserver_blocks) return true;
  const b = window.spiceserver_blocks = {blocks: 0, flagged: 0, flagged_key: 0, unflagged_key: 0};
  const append = SourceBuffer.prototype.appendBuffer;
  SourceBuffer.prototype.appendBuffer = function (data) {
    const u8 = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data);
    if (u8.length > 13 && u8[0] === 0xA3) {
      const key = (u8[13] & 1) === 0;
      b.blocks++;
      if (u8[12] & 0x80) { b.flagged++; if (key) b.flagged_key++; } else if (key) b.unflagged_key++;
    }
    return append.call(this, data);
  };
  return true;
})()"""


async def read_box(page: Html5Page) -> np.ndarray | None:
    """BOX of the display canvas as (BH, BW) uint32 0x00RRGGBB."""
    data = await page.evaluate(f"{_READ_RECT_JS}({BOX[0]}, {BOX[1]}, {BW}, {BH})")
    if data is None:
        return None
    return rgba_to_xrgb(np.frombuffer(base64.b64decode(data), np.uint8).reshape(BH, BW, 4))


async def html5_streams(page: Html5Page) -> dict[str, Any]:
    res: dict[str, Any] = await page.evaluate(_STREAMS_JS)
    return res


async def read_video(page: Html5Page, picture: bool) -> dict[str, Any] | None:
    """The <video>'s state; with ``picture``, ``px``: its current frame as (h, w) uint32 0x00RRGGBB."""
    res: dict[str, Any] | None = await page.evaluate(f"{_VIDEO_JS}({'true' if picture else 'false'})")
    if res is not None and "data" in res:
        rgba = np.frombuffer(base64.b64decode(res.pop("data")), np.uint8).reshape(res["h"], res["w"], 4)
        res["px"] = rgba_to_xrgb(rgba)
    return res


async def wait_for(probe: Callable[[], Awaitable[T | None]], what: str, page: Html5Page, timeout: float = 15.0) -> T:
    """Poll ``probe`` until it returns something (not None / False); fail with the page's log."""
    deadline = time.monotonic() + timeout
    while True:
        got = await probe()
        if got is not None and got is not False:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{page.log_text()}")
        await asyncio.sleep(0.05)


def video_stats(r: Running) -> dict[str, Any]:
    """The first display client's ``video`` entry of ``display_stats`` (streams, reports, live agents)."""
    stats: dict[str, Any] = r.server.display_stats()["clients"][0]["video"]
    return stats


def assert_clean(page: Html5Page) -> None:
    """No error in the page, nothing spice-html5 calls unknown or unhandled."""
    bad = page.errors() + [
        line
        for line in page.console
        if "FIXME" in line
        or "Unknown message type" in line
        or "Unhandled stream codec" in line
        or "no stream for data" in line
    ]
    assert not bad, "spice-html5 complained:\n" + "\n".join(bad) + "\n" + page.log_text()


@dataclass
class Samples:
    """Pictures read back while the stream plays: (frame index, PSNR against that frame).

    ``views``: what a picture of frame ``i`` may rightly look like (the source frame, and for VP8
    also :func:`as_bt709`); its PSNR is against the closest. ``raw``: PSNR against the source frame.
    """

    views: tuple[Callable[[int], np.ndarray], ...] = (video_frame,)
    seen: list[tuple[int, float]] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    closest: dict[str, int] = field(default_factory=dict)
    unreadable: int = 0

    def add(self, px: np.ndarray | None) -> None:
        i = None if px is None else frame_index(px)
        if i is None or px is None:
            self.unreadable += 1
            return
        best, view = max((psnr(px, v(i)), v.__name__) for v in self.views)
        self.seen.append((i, best))
        self.raw.append(psnr(px, video_frame(i)))
        self.closest[view] = self.closest.get(view, 0) + 1

    @property
    def distinct(self) -> int:
        return len({i for i, _ in self.seen})

    def summary(self) -> str:
        p = [v for _, v in self.seen]
        if not p:
            return f"no readable picture ({self.unreadable} unreadable)"

        def stats(vals: list[float]) -> str:
            finite = [v for v in vals if v != float("inf")] or [0.0]
            return f"min {min(vals):.1f} mean {float(np.mean(finite)):.1f} dB"

        return (
            f"{len(p)} pictures of {self.distinct} frames ({self.unreadable} unreadable), PSNR {stats(p)} "
            f"(closest to {self.closest}; against the source frame {stats(self.raw)}), "
            f"indices {[i for i, _ in self.seen][:40]}"
        )


async def end_and_check(r: Running, page: Html5Page, player: Player) -> None:
    """Stop the video; the stream ends (the server's timeout), spice-html5 drops it, and the canvas
    becomes the server's picture exactly."""
    await player.stop()
    last = video_frame(player.next - 1)

    async def no_streams() -> bool:
        html5 = await html5_streams(page)
        return not r.server.display_stats()["streams"] and not html5["streams"] and html5["videos"] == 0

    await wait_for(no_streams, "the stream to end on the server and in spice-html5", page, timeout=15.0)
    snap = r.server.display_snapshot()
    x0, y0, x1, y1 = BOX
    assert np.array_equal(snap[y0:y1, x0:x1] & 0xFFFFFF, last), "the server's picture is not the last frame"
    shown = await page.wait_picture(r.server.display_snapshot, timeout=10.0)
    assert shown is not None and np.array_equal(shown, snap & 0xFFFFFF), (
        "after the stream: " + describe_diff(shown, snap) + f"\n{video_stats(r)}\n{page.log_text()}"
    )


async def start(**config: Any) -> tuple[Running, Any, np.ndarray]:
    r = await start_server(streaming_video="filter", websocket_origins=("*",), **config)
    fb = r.server.add_framebuffer_display(W, H)
    background = SyntheticDesktop(W, H).frame(0.0)
    fb.update(background)
    return r, fb, background


@pytest.fixture(params=["websockify", "direct"])
def transport(request: pytest.FixtureRequest) -> str:
    """How the browser reaches the server: through websockify to the SPICE port (as libspice
    deployments do), or ``direct``: the server's own WebSocket on that port (its framing of the
    stream messages is then under test too)."""
    param: str = request.param
    return param


def client(r: Running, transport: str, chromium_flags: tuple[str, ...] = ()) -> Any:
    """:func:`html5_client` on the server's port over ``transport``."""
    if transport == "direct":
        return html5_client(websocket_port=r.server.port_of(), path="", chromium_flags=chromium_flags)
    return html5_client(r.server.port_of(), chromium_flags=chromium_flags)


# --------------------------------------------------------------------------- tests


async def test_mjpeg_stream_plays_and_ends_exact(transport: str) -> None:
    require_html5(proxy=transport == "websockify")
    r, fb, background = await start(video_codecs=("mjpeg",))
    try:
        async with client(r, transport) as page:
            await page.wait_canvas()
            shown = await page.wait_picture(background, timeout=10.0)
            assert shown is not None and np.array_equal(shown, background & 0xFFFFFF), describe_diff(shown, background)
            async with playing(fb, background) as player:

                async def html5_stream() -> dict[str, Any] | None:
                    s = (await html5_streams(page))["streams"]
                    return s[0] if s else None

                stream = await wait_for(html5_stream, "spice-html5 to get a stream", page)
                assert stream["codec"] == 1 and not stream["video"], stream  # SPICE_VIDEO_CODEC_TYPE_MJPEG
                samples = Samples()
                deadline = time.monotonic() + 15.0
                while samples.distinct < 12 or video_stats(r)["reports"] == 0:
                    assert time.monotonic() < deadline, f"{samples.summary()}\n{video_stats(r)}\n{page.log_text()}"
                    samples.add(await read_box(page))
                    await asyncio.sleep(1 / (2 * FPS))
                indices = [i for i, _ in samples.seen]
                assert indices[-1] > indices[0], f"the picture does not advance: {samples.summary()}"
                worst = min(p for _, p in samples.seen)
                assert worst >= MJPEG_MIN_PSNR, samples.summary()
                # lossy: the pictures came through the stream (an image would be exact)
                assert sum(p != float("inf") for _, p in samples.seen) >= len(samples.seen) // 2, samples.summary()
                stats = video_stats(r)
                assert stats["streams"] >= 1 and stats["reports"] > 0, stats
                assert stats["by_codec"]["mjpeg"]["frames"] >= 12, stats
                print(f"mjpeg: {samples.summary()}; server: {stats}")
                await end_and_check(r, page, player)
            assert_clean(page)
    finally:
        await r.server.close()


def require_vp8_encoder() -> None:
    """Skip unless the server can encode VP8 (the ``spiceserver[video]`` extra, PyAV)."""
    try:
        ServerConfig(port=0, video_codecs=("vp8",))
    except ConfigError as exc:
        pytest.skip(f"no VP8 encoder: {exc}")


# spice-html5 sets the <video>'s ``muted`` *attribute* after creating it, which does not mute it, so
# Chromium's autoplay policy refuses its play() ("the user didn't interact with the document") until
# the user has clicked or typed into the page. A user always has; the headless browser is told so.
AUTOPLAY = ("--autoplay-policy=no-user-gesture-required",)


async def test_vp8_stream_plays_in_a_video_element_and_ends_exact(transport: str) -> None:
    require_html5(proxy=transport == "websockify")
    require_vp8_encoder()
    r, fb, background = await start(video_codecs=("vp8",))
    try:
        async with client(r, transport, AUTOPLAY) as page:
            await page.wait_canvas()
            if not await page.evaluate(
                """'MediaSource' in window && MediaSource.isTypeSupported('video/webm; codecs="vp8"')"""
            ):
                pytest.skip("this Chromium's MediaSource cannot play VP8 in WebM (spice-html5 then lacks CODEC_VP8)")
            shown = await page.wait_picture(background, timeout=10.0)
            assert shown is not None and np.array_equal(shown, background & 0xFFFFFF), describe_diff(shown, background)
            await page.evaluate(_WATCH_BLOCKS_JS)
            async with playing(fb, background) as player:

                async def html5_stream() -> dict[str, Any] | None:
                    s = (await html5_streams(page))["streams"]
                    return s[0] if s else None

                stream = await wait_for(html5_stream, "spice-html5 to get a stream", page)
                assert stream["codec"] == 2 and stream["video"], stream  # SPICE_VIDEO_CODEC_TYPE_VP8, a <video>
                live = video_stats(r)["live"]
                assert [a["codec"] for a in live] == ["vp8"], live

                # the <video> sits over the stream's place on the canvas
                place = await page.evaluate(
                    "(() => { const c = document.querySelector('#spice-screen canvas').getBoundingClientRect();"
                    " const v = document.querySelector('#spice-screen video').getBoundingClientRect();"
                    " return [v.left - c.left, v.top - c.top, v.width, v.height]; })()"
                )
                assert [round(v) for v in place] == [BOX[0], BOX[1], BW, BH], place

                samples = Samples(views=(video_frame, as_bt709))
                blocks: dict[str, int] = {}
                first: dict[str, Any] | None = None
                state: dict[str, Any] | None = None
                deadline = time.monotonic() + 20.0
                while True:
                    state = await read_video(page, picture=True)
                    assert state is not None and state["error"] is None, f"{state}\n{page.log_text()}"
                    if "px" in state:
                        samples.add(state.pop("px"))
                        if first is None:
                            first = state
                    advanced = (
                        first is not None and state["frames"] - first["frames"] >= 25 and state["t"] > first["t"] + 0.5
                    )
                    blocks = await page.evaluate("window.spiceserver_blocks")
                    # two clusters at least: the second starts a second of mm-time after the first
                    if advanced and samples.distinct >= 12 and video_stats(r)["reports"] > 0 and blocks["flagged"] >= 2:
                        break
                    assert time.monotonic() < deadline, (
                        f"{samples.summary()}\nfirst {first}\nnow {state}\n{video_stats(r)}\n{page.log_text()}"
                    )
                    await asyncio.sleep(1 / (2 * FPS))
                assert first is not None and state is not None
                worst = min(p for _, p in samples.seen)
                assert worst >= VP8_MIN_PSNR, samples.summary()
                # every cluster starts on a real keyframe (the server's keyframe rule for spice-html5)
                assert blocks["flagged_key"] == blocks["flagged"], blocks
                stats = video_stats(r)
                assert stats["by_codec"]["vp8"]["frames"] >= 25 and stats["reports"] > 0, stats
                print(f"vp8: {samples.summary()}; blocks {blocks}; video {first} -> {state}; server: {stats}")
                await end_and_check(r, page, player)
            assert_clean(page)
    finally:
        await r.server.close()


@pytest.mark.parametrize("codec", ["mjpeg", "vp8"])
async def test_a_browser_arriving_mid_stream_gets_the_stream(codec: str) -> None:
    """Late clients get the live streams (libspice ``dcc_create_all_streams``): spice-html5 linking
    while a stream runs is sent STREAM_CREATE during its display init and plays the rest of the
    stream (an encoder of its own: its first VP8 frame is a keyframe, or the <video> could not
    decode anything), and ends exact."""
    require_html5()
    if codec == "vp8":
        require_vp8_encoder()
    r, fb, background = await start(video_codecs=(codec,))
    try:
        async with playing(fb, background) as player:
            deadline = time.monotonic() + 15.0
            while not r.server.display_stats()["streams"]:
                assert time.monotonic() < deadline, f"no stream on the server: {r.server.display_stats()}"
                await asyncio.sleep(0.05)
            async with html5_client(r.server.port_of(), chromium_flags=AUTOPLAY) as page:
                await page.wait_canvas()

                async def html5_stream() -> dict[str, Any] | None:
                    s = (await html5_streams(page))["streams"]
                    return s[0] if s else None

                stream = await wait_for(html5_stream, "spice-html5 to get the running stream", page)
                vp8 = codec == "vp8"
                assert stream["codec"] == (2 if vp8 else 1) and stream["video"] == vp8, stream
                samples = Samples(views=(video_frame, as_bt709) if vp8 else (video_frame,))
                deadline = time.monotonic() + 15.0
                while samples.distinct < 8:
                    assert time.monotonic() < deadline, f"{samples.summary()}\n{video_stats(r)}\n{page.log_text()}"
                    if vp8:
                        state = await read_video(page, picture=True)
                        if state is not None and "px" in state:
                            samples.add(state["px"])
                    else:
                        samples.add(await read_box(page))
                    await asyncio.sleep(1 / (2 * FPS))
                assert min(p for _, p in samples.seen) >= (VP8_MIN_PSNR if vp8 else MJPEG_MIN_PSNR), samples.summary()
                await end_and_check(r, page, player)
                assert_clean(page)
    finally:
        await r.server.close()
