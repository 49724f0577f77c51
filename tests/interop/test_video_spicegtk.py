"""spice-gtk decodes our video streams (server side: spice ``server/video-stream.cpp``, ``dcc.cpp``).

Covered with the real client: MJPEG, VP8, VP9 and H.264 streams shown decoded (PSNR floor);
STREAM_REPORTs (and none from a client without the cap); a client whose GStreamer decoder fails
falls back to images; a client without GStreamer gets MJPEG from a vp8-only server; every channel
over TLS; the client's codec preference; two streams at once; clients linking mid-stream; the area
growing (STREAM_DATA_SIZED); a QXL guest's video clipped around a menu (STREAM_CLIP); a resize
mid-stream; an animation too short for a stream (lossy frames, then the area lossless); the lossless end pixel for pixel; and Wireshark's dissector on a streaming session.

The host plays a photo-like animation (:func:`video_frame`) into a framebuffer display at video rate;
from the 21st frame on (later if a gap restarts the chain) the region is a stream
(``streaming_video="filter"``). Each frame carries its
index in a strip of 16x16 black/white blocks that survives any of the codecs, so a screenshot of the
client says which frame it shows (:func:`frame_index`), and its PSNR is measured against that very
frame. When the host stops, the server ends the stream a second later (empty clip, lossless picture,
STREAM_DESTROY), after which spice-gtk must show ``server.display_snapshot()`` pixel for pixel.

The client that cannot decode is REAL spice-gtk: ``GST_PLUGIN_FEATURE_RANK`` puts every GStreamer
decoder of the codec at rank NONE in the client's process. ``gstvideo_has_codec`` lists decoders of
any rank, so spice-gtk still announces the codec (DISPLAY_CAP_CODEC_*), but playbin autoplugs only
ranked elements: the first frame makes uridecodebin post "missing a plug-in", the pipeline is freed,
the next frame fails ``queue_frame`` and spice-gtk sends STREAM_REPORT(0 frames, 0xFFFFFFFF drops)
(spice-gtk ``channel-display-gst.c`` ``handle_pipeline_message``, ``spice_gst_decoder_queue_frame``;
``channel-display.c`` ``display_handle_stream_data``, ``report_invalid_stream``).

Nothing here sleeps a guessed time: the tests poll ``display_stats()`` and take screenshots until what
they wait for is there, under generous deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spiceserver.config import ServerConfig
from spiceserver.errors import ConfigError
from spiceserver.proto.enums import BitmapFmt
from spiceserver.proto.messages.base import Rect
from spiceserver.synthetic_guest import SyntheticGuest, bitmap_image
from tests.conftest import Running, start_server
from tests.interop.capture import TSHARK, loopback_capture
from tests.interop.harness import SYSTEM_PYTHON, GiClient, client_env, controlled_client, format_events, same_picture
from tests.support.certs import TestCA

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]

Box = tuple[int, int, int, int]

W, H = 480, 320
#: the video area, 256x192, 16-aligned (JPEG blocks, macroblocks); its left and right edges are more
#: than 64 px from the screen's, so the framebuffer's box normaliser (``video_boxes``, tolerance 64 px)
#: never merges it with a full-screen update made just before (the stream would cover the screen)
BOX: Box = (112, 64, 368, 256)
BACKGROUND = 0x203040
#: frame indexes are 8 bits in the strip
MAX_FRAMES = 256
#: distinct stream frames a test wants to see decoded by the client
WANT_SHOWN = 6

#: PSNR floors in dB (all 3 channels, the video area) for what spice-gtk shows vs. the source frame.
#: Measured here (2 cores, 256x192 at 25 fps, the server's rate control from its starting bit rate;
#: 5 runs, 6 shown frames each, idle and with two busy loops on the cores): MJPEG 35.0-36.1,
#: VP8 34.9-35.1, VP9 33.5-35.6, H.264 36.4-36.9. 30 dB leaves 3.5 dB below the worst (VP9); a
#: neighbouring frame (off by one) is 21.7 dB, a garbled one far below.
PSNR_FLOOR = {"mjpeg": 30.0, "vp8": 30.0, "vp9": 30.0, "h264": 30.0}

#: SPICE_VIDEO_CODEC_TYPE_* (spice-protocol ``enums.h``)
CODEC_TYPES = {"mjpeg": 1, "vp8": 2, "h264": 3, "vp9": 4}

#: GStreamer caps spice-gtk's decoders take (spice-gtk ``channel-display-priv.h`` ``gst_opts``)
GST_CAPS = {"vp8": "video/x-vp8", "vp9": "video/x-vp9", "h264": "video/x-h264"}

_GST_PROBE = """
import json, sys
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
kind = Gst.ELEMENT_FACTORY_TYPE_DECODER | Gst.ELEMENT_FACTORY_TYPE_MEDIA_VIDEO | Gst.ELEMENT_FACTORY_TYPE_MEDIA_IMAGE
found = Gst.ElementFactory.list_get_elements(kind, Gst.Rank.NONE)
out = {}
for caps in sys.argv[1:]:
    ok = Gst.ElementFactory.list_filter(found, Gst.Caps.from_string(caps), Gst.PadDirection.SINK, False)
    out[caps] = [f.get_name() for f in ok if f.get_rank() > Gst.Rank.NONE]
out["playbin"] = Gst.ElementFactory.find("playbin") is not None
print(json.dumps(out))
"""


# --------------------------------------------------------------------------- the animation


def video_frame(i: int, box: Box = BOX) -> np.ndarray:
    """Frame ``i`` of a video area: smooth moving gradients with mild noise (photo-like, so the
    filter streams it), its index in the top-left strip of eight 16x16 blocks (bit k white or black)."""
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin((xx + 3 * i) / 17.0)
    g = 128 + 100 * np.cos((yy - 2 * i) / 23.0)
    b = 128 + 60 * np.sin((xx + yy + 5 * i) / 31.0)
    noise = np.random.default_rng(i).integers(-6, 7, size=(h, w))
    px = [np.clip(c + noise, 0, 255).astype(np.uint32) for c in (r, g, b)]
    out: np.ndarray = (px[0] << 16) | (px[1] << 8) | px[2]
    for bit in range(8):
        out[0:16, bit * 16 : (bit + 1) * 16] = 0xFFFFFF if (i >> bit) & 1 else 0
    return out


def frame_index(area: np.ndarray) -> int | None:
    """The index in a shown video area's strip (block centres), None if a block is neither black nor white."""
    green = (area >> 8) & 255
    value = 0
    for bit in range(8):
        level = float(green[4:12, bit * 16 + 4 : bit * 16 + 12].mean())
        if 64 < level < 192:
            return None
        if level >= 192:
            value |= 1 << bit
    return value


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two 0x00RRGGBB pictures over all three channels (inf when equal)."""
    ca = np.stack([(a >> s) & 255 for s in (16, 8, 0)], -1).astype(np.float64)
    cb = np.stack([(b >> s) & 255 for s in (16, 8, 0)], -1).astype(np.float64)
    mse = float(((ca - cb) ** 2).mean())
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


def video_area(picture: np.ndarray, box: Box = BOX) -> np.ndarray:
    x0, y0, x1, y1 = box
    return picture[y0:y1, x0:x1]


class Player:
    """The host side: ``fb.update(screen, boxes)`` with frame 0, 1, 2... at ``fps`` until :meth:`stop`;
    the k-th box shows frame ``i + k * 128`` (so each box has its own frames).

    ``stream_from`` is the first frame played after the server was seen to have a live stream: that
    frame and every later one are stream frames. (The stream starts on the 21st frame of a chain, but
    a gap over 200 ms on a loaded machine restarts the chain, so the first stream frame is not known
    in advance; the frames before it go as lossless images.)
    """

    def __init__(self, r: Running, fb: Any, *, boxes: tuple[Box, ...] = (BOX,), size: tuple[int, int] = (W, H), fps: float = 25.0) -> None:
        self.r = r
        self.fb = fb
        self.fps = fps
        self.boxes = boxes
        self.offsets = [128 * k for k in range(len(boxes))]
        self.screen = np.full((size[1], size[0]), BACKGROUND, np.uint32)
        self.played = 0  # frames given to the server so far
        self.stream_from: int | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Future[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        period = 1.0 / self.fps
        next_at = time.monotonic()
        while not self._stop.is_set() and self.played + self.offsets[-1] < MAX_FRAMES:
            if self.stream_from is None and len(self.r.server.display_stats()["streams"]) == len(self.boxes):
                self.stream_from = self.played
            await self.draw(self.played)
            self.played += 1
            next_at += period
            with contextlib.suppress(TimeoutError):  # the frame clock, not a wait for anything
                await asyncio.wait_for(self._stop.wait(), max(0.0, next_at - time.monotonic()))

    async def draw(self, i: int) -> None:
        """Frame ``i`` (the framebuffer: one ``fb.update`` with every box dirty)."""
        for box, offset in zip(self.boxes, self.offsets, strict=True):
            x0, y0, x1, y1 = box
            self.screen[y0:y1, x0:x1] = video_frame(i + offset, box)
        self.fb.update(self.screen, list(self.boxes))

    async def stop(self) -> int:
        """Stop playing; return the index of the last frame played."""
        self._stop.set()
        if self._task is not None:
            await self._task
        return self.played - 1

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()


class QxlPlayer(Player):
    """The same animation drawn by a QXL guest (:class:`~spiceserver.synthetic_guest.SyntheticGuest`,
    the QEMU path): one DRAW_COPY of a fresh 32-bit bitmap per frame, bottom-up unless ``top_down``
    (the framebuffer's are top-down; the server flips bottom-up frames before encoding and always
    sends TOP_DOWN streams), the guest driven from one thread at a time (``asyncio.to_thread`` per
    frame). :meth:`open_menu` fills a rectangle over the video, and the next frames are clipped around
    it (QXL clip rects), as a video player under a menu draws; :meth:`close_menu` ends that."""

    def __init__(self, r: Running, guest: SyntheticGuest, *, top_down: bool = False, fps: float = 25.0) -> None:
        super().__init__(r, None, fps=fps)
        self.guest = guest
        self.top_down = top_down
        self.menu: tuple[Box, int] | None = None
        self._fill: tuple[Box, int] | None = None
        self._ids = itertools.count(1)

    def open_menu(self, box: Box, color: int) -> None:
        self.menu = self._fill = (box, color)

    def close_menu(self) -> None:
        self.menu = None

    async def draw(self, i: int) -> None:
        fill, self._fill = self._fill, None
        await asyncio.to_thread(self._draw, i, fill, self.menu)

    def _draw(self, i: int, fill: tuple[Box, int] | None, menu: tuple[Box, int] | None) -> None:
        if fill is not None:
            self.guest.fill(qxl_rect(fill[0]), fill[1])
        px = video_frame(i)
        rows = np.ascontiguousarray(px.astype("<u4")).view(np.uint8).reshape(px.shape[0], px.shape[1] * 4)
        img = bitmap_image((0xF00D << 32) | next(self._ids), BitmapFmt.BIT32, px.shape[1], rows, top_down=self.top_down)
        clip = None
        if menu is not None:
            (mx0, my0, mx1, my1), (x0, y0, x1, y1) = menu[0], BOX
            assert (mx1, my1) == (x1, y1), "a menu in the video's bottom-right corner"
            clip = [qxl_rect((x0, y0, x1, my0)), qxl_rect((x0, my0, mx0, y1))]
        self.guest.copy(img, qxl_rect(BOX), clip=clip)


def qxl_rect(box: Box) -> Rect:
    return Rect(left=box[0], top=box[1], right=box[2], bottom=box[3])


# --------------------------------------------------------------------------- helpers


@functools.cache
def gst_probe() -> dict[str, Any]:
    """The client machine's GStreamer: ranked decoders per caps of :data:`GST_CAPS`, playbin present."""
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-c", _GST_PROBE, *GST_CAPS.values()],
        capture_output=True, text=True, timeout=60, env=client_env(), check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def client_decoders(codec: str) -> list[str]:
    """The GStreamer decoders spice-gtk's playbin could use for ``codec`` here (empty: none, or no GStreamer)."""
    probe = gst_probe()
    if "error" in probe or not probe.get("playbin"):
        return []
    found: list[str] = probe.get(GST_CAPS[codec], [])
    return found


def _server_has(codec: str) -> bool:
    """Whether the server can encode ``codec`` (``ServerConfig`` refuses a codec PyAV does not have)."""
    try:
        ServerConfig(port=0, video_codecs=(codec,))
    except ConfigError:
        return False
    return True


def require_codec(codec: str) -> None:
    """Skip unless the server can encode ``codec`` (PyAV) and spice-gtk can decode it (GStreamer)."""
    if not _server_has(codec):
        pytest.skip(f"the server cannot encode {codec}: install the spiceserver[video] extra (PyAV)")
    if codec != "mjpeg" and not client_decoders(codec):
        probe = gst_probe()
        pytest.skip(
            f"spice-gtk has no GStreamer decoder for {codec} here ({GST_CAPS[codec]}; probe: {probe}); "
            "install gstreamer1.0-plugins-good (vp8/vp9), -libav and -bad (h264)"
        )


def video_stats(r: Running) -> dict[str, Any]:
    """The (only) client's ``video`` entry of ``display_stats``."""
    clients = r.server.display_stats()["clients"]
    assert len(clients) == 1, clients
    video: dict[str, Any] = clients[0]["video"]
    return video


async def until(what: str, cond: Callable[[], bool], timeout: float = 20.0, client: GiClient | None = None) -> None:
    """Poll ``cond`` until it holds; fail with ``what`` (and the client's log) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            log = format_events(client.events, client.stderr) if client is not None else ""
            raise AssertionError(f"timed out waiting for {what}\n{log}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def streaming_session(
    codec: str, *, env: dict[str, str] | None = None, **server_kw: Any
) -> AsyncIterator[tuple[Running, Any, GiClient]]:
    """A server streaming with ``video_codecs=(codec,)``, a W x H framebuffer display and a linked
    spice-gtk (``--control``); yields ``(running, fb, client)`` and checks the client's exit status."""
    r = await start_server(streaming_video="filter", video_codecs=(codec,), **server_kw)
    fb = r.server.add_framebuffer_display(W, H)
    fb.update(np.full((H, W), BACKGROUND, np.uint32))
    try:
        async with controlled_client("--port", str(r.server.port_of()), "--wait-display", timeout=60, env=env) as client:
            yield r, fb, client
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
    finally:
        await r.server.close()


async def collect_decoded(client: GiClient, player: Player, codec: str, want: int = WANT_SHOWN) -> dict[int, float]:
    """Screenshots while the stream plays until ``want`` distinct stream frames were seen; returns
    frame index -> PSNR of the shown video area against that frame (:func:`collect_decoded_boxes`)."""
    return (await collect_decoded_boxes(client, player, codec, want))[0]


async def collect_decoded_boxes(client: GiClient, player: Player, codec: str, want: int = WANT_SHOWN) -> list[dict[int, float]]:
    """Screenshots while the streams play until each box showed ``want`` distinct stream frames;
    per box, frame index -> PSNR of the shown area against that frame. Every shot must show the
    background outside the video areas and, in each, nothing yet or a readable index played."""
    shown: list[dict[int, float]] = [{} for _ in player.boxes]
    deadline = time.monotonic() + 30
    while min(len(s) for s in shown) < want:
        assert player.running and time.monotonic() < deadline, (
            f"{codec}: only {[sorted(s) for s in shown]} shown of {player.played} frames played\n"
            + format_events(client.events, client.stderr)
        )  # fmt: skip
        shot = await client.screenshot()
        assert shot is not None and shot.shape == player.screen.shape, format_events(client.events, client.stderr)
        outside = shot.copy()
        for x0, y0, x1, y1 in player.boxes:
            outside[y0:y1, x0:x1] = BACKGROUND
        ys, xs = np.nonzero(outside != BACKGROUND)
        assert ys.size == 0, f"{codec}: the picture changed outside the video areas, in x {xs.min()}-{xs.max()} y {ys.min()}-{ys.max()}"
        for box, offset, seen in zip(player.boxes, player.offsets, shown, strict=True):
            area = video_area(shot, box)
            if np.all(area == BACKGROUND):
                continue  # its first frame is not shown yet
            idx = frame_index(area)
            assert idx is not None and 0 <= idx - offset < player.played, f"{codec}: unreadable frame index {idx} in {box} (played {player.played})"
            if player.stream_from is not None and idx - offset >= player.stream_from:
                seen[idx - offset] = psnr(area, video_frame(idx, box))
        await asyncio.sleep(0.03)  # screenshot pacing (a few per frame), not a wait for something
    return shown


async def end_and_compare(r: Running, client: GiClient, player: Player) -> None:
    """Stop the host, wait for the stream to end on the server and for the client to show the
    server's canvas; it must then be pixel for pixel equal (the lossless upgrade)."""
    last = await player.stop()
    await until("the stream to end (display_stats streams empty)", lambda: not r.server.display_stats()["streams"], 20, client)
    want = r.server.display_snapshot()
    for box, offset in zip(player.boxes, player.offsets, strict=True):
        assert np.array_equal(video_area(want, box) & 0xFFFFFF, video_frame(last + offset, box)), "server canvas is not the last frame"
    shot = await client.wait_picture(same_picture(want), timeout=20)
    assert shot is not None and np.array_equal(shot, want & 0xFFFFFF), (
        "spice-gtk's picture after the stream ended differs from display_snapshot() in "
        f"{0 if shot is None else int(np.count_nonzero(shot != (want & 0xFFFFFF)))} pixels\n"
        + format_events(client.events, client.stderr)
    )  # fmt: skip


async def check_codec_stream(codec: str, *, adaptive: bool = True) -> dict[int, float]:
    """spice-gtk shows the stream of ``codec`` (PSNR floor, lossy), STREAM_REPORTs arrive (none if
    not ``adaptive``: ``SPICE_DISABLE_ADAPTIVE_STREAMING`` drops the client's STREAM_REPORT cap), the
    live stream uses ``codec``, and the end is lossless. Returns the measured PSNRs."""
    env = None if adaptive else {"SPICE_DISABLE_ADAPTIVE_STREAMING": "1"}
    async with streaming_session(codec, env=env) as (r, fb, client):
        player = Player(r, fb)
        player.start()
        await until(f"a live {codec} stream", lambda: bool(video_stats(r)["live"]), 30, client)
        shown = await collect_decoded(client, player, codec)
        # every stream frame shown was decoded (lossy), none was sent as an image
        assert all(v != float("inf") for v in shown.values()), f"{codec}: a stream frame was shown lossless: {shown}; {video_stats(r)}"
        if adaptive:
            await until("STREAM_REPORTs from spice-gtk", lambda: video_stats(r)["reports"] > 0, 20, client)
        video = video_stats(r)
        assert (video["reports"] > 0) == adaptive, video
        live = video["live"]
        assert [a["codec"] for a in live] == [codec], video
        assert live[0]["frames"] > 0 and video["unsupported"] == 0, video
        await end_and_compare(r, client, player)
        video = video_stats(r)
        assert video["live"] == [] and video["by_codec"][codec]["frames"] > 0, video
    worst = min(shown.values())
    assert worst >= PSNR_FLOOR[codec], f"{codec}: PSNR per shown frame {shown}"
    return shown


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("adaptive", [True, False], ids=["reports", "no-reports"])
async def test_mjpeg_stream_shown_then_lossless(adaptive: bool) -> None:
    check = await check_codec_stream("mjpeg", adaptive=adaptive)
    assert len(check) >= WANT_SHOWN


@pytest.mark.parametrize("codec", ["vp8", "vp9", "h264"])
async def test_gstreamer_codec_stream_shown_then_lossless(codec: str) -> None:
    require_codec(codec)
    check = await check_codec_stream(codec)
    assert len(check) >= WANT_SHOWN


@pytest.mark.parametrize("when", ["mid-stream"])  # "at-link" works too (~3 s more)
async def test_client_preferred_codec_wins(when: str) -> None:
    """The server lists vp8 before h264; spice-gtk asks for h264 first (DISPLAY
    PREFERRED_VIDEO_CODEC_TYPE, ``spice_display_channel_change_preferred_video_codec_types``), right
    after linking ("at-link") or while a vp8 stream runs (the server then stops its streams, as
    libspice does, and the next one follows the client's order): the stream goes out as h264 and
    spice-gtk shows it decoded."""
    require_codec("vp8")
    require_codec("h264")
    r = await start_server(streaming_video="filter", video_codecs=("vp8", "h264"))
    fb = r.server.add_framebuffer_display(W, H)
    fb.update(np.full((H, W), BACKGROUND, np.uint32))
    prefer = {"op": "preferred_video_codecs", "codecs": [CODEC_TYPES["h264"], CODEC_TYPES["vp8"]]}
    try:
        async with controlled_client("--port", str(r.server.port_of()), "--wait-display", timeout=60) as client:
            player = Player(r, fb)
            if when == "at-link":
                ev = await client.action(prefer)
                assert "error" not in ev, ev
            player.start()
            if when == "mid-stream":
                before = await collect_decoded(client, player, "vp8", want=3)
                assert [a["codec"] for a in video_stats(r)["live"]] == ["vp8"] and min(before.values()) >= PSNR_FLOOR["vp8"]
                ev = await client.action(prefer)
                assert "error" not in ev, ev
            await until("a live h264 stream", lambda: [a["codec"] for a in video_stats(r)["live"]] == ["h264"], 30, client)
            player.stream_from = player.played  # from here on, frames of the h264 stream
            shown = await collect_decoded(client, player, "h264", want=4)
            await end_and_compare(r, client, player)
            video = video_stats(r)
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
    finally:
        await r.server.close()
    assert all(v != float("inf") for v in shown.values()) and min(shown.values()) >= PSNR_FLOOR["h264"], shown
    assert set(video["by_codec"]) == ({"h264"} if when == "at-link" else {"vp8", "h264"}), video


async def test_clients_linking_while_the_stream_runs() -> None:
    """spice-gtk links while a stream is live: it gets STREAM_CREATE for it (``client_ready``) and shows
    its frames decoded; it leaves mid-stream, another one links, gets the stream too, and ends
    pixel-exact."""
    r = await start_server(streaming_video="filter", video_codecs=("mjpeg",))
    fb = r.server.add_framebuffer_display(W, H)
    fb.update(np.full((H, W), BACKGROUND, np.uint32))
    player = Player(r, fb)
    player.start()
    try:
        await until("a live stream", lambda: bool(r.server.display_stats()["streams"]), 30)
        decoded: list[dict[int, float]] = []
        for second in (False, True):
            async with controlled_client("--port", str(r.server.port_of()), "--wait-display", timeout=60) as client:
                shown = await collect_decoded(client, player, "mjpeg", want=4)
                video = video_stats(r)
                assert [a["codec"] for a in video["live"]] == ["mjpeg"] and video["streams"] == 1, video
                if second:
                    await end_and_compare(r, client, player)
            assert client.proc.returncode == 0, format_events(client.events, client.stderr)
            # the first picture may be the canvas sent lossless at link time; the stream's frames are lossy
            decoded.append({k: v for k, v in shown.items() if v != float("inf")})
            await until("the client gone", lambda: r.server.num_clients == 0, 20)
    finally:
        await player.stop()
        await r.server.close()
    for d in decoded:
        assert len(d) >= 3 and min(d.values()) >= PSNR_FLOOR["mjpeg"], decoded


@pytest.mark.parametrize("codec", ["vp8"])
async def test_video_area_grows_while_streaming(codec: str) -> None:
    """The video area grows by 32 px right and down mid-stream: the frames of the same stream go as
    STREAM_DATA_SIZED with the new dest (the client has SIZED_STREAM), the encoder reopens at the new
    size, and spice-gtk shows them in the grown area, then ends pixel-exact. (MJPEG's sized frames
    are in ``test_stream_capture_decodes_in_wireshark``.)"""
    require_codec(codec)
    async with streaming_session(codec) as (r, fb, client):
        player = Player(r, fb)
        player.start()
        await collect_decoded(client, player, codec, want=3)
        grown: Box = (BOX[0], BOX[1], BOX[2] + 32, BOX[3] + 32)
        player.boxes, player.stream_from = (grown,), player.played  # no await between: frames from here on are grown
        shown = await collect_decoded(client, player, codec, want=4)
        video = video_stats(r)
        assert video["streams"] == 1 and [a["codec"] for a in video["live"]] == [codec], video  # the same stream
        await end_and_compare(r, client, player)
    assert all(v != float("inf") for v in shown.values()) and min(shown.values()) >= PSNR_FLOOR[codec], shown


async def test_qxl_video_under_a_menu() -> None:
    """A QXL guest plays the video (the QEMU path, bottom-up bitmaps: shown the right way up); a menu
    is filled over the video's corner and the next frames come clipped around it: the stream's clip
    shrinks (STREAM_CLIP), and spice-gtk never paints a frame over the menu, not even the frames sent
    before it that it shows ~400 ms late. When the menu closes, the frames cover the corner again;
    the end is pixel-exact."""
    menu: Box = (BOX[2] - 80, BOX[3] - 64, BOX[2], BOX[3])
    color = 0xE0E0E0
    mx0, my0, mx1, my1 = menu

    def menu_area(p: np.ndarray) -> np.ndarray:
        return p[my0:my1, mx0:mx1]

    outside = np.ones((BOX[3] - BOX[1], BOX[2] - BOX[0]), bool)
    outside[my0 - BOX[1] :, mx0 - BOX[0] :] = False
    r = await start_server(streaming_video="filter", video_codecs=("mjpeg",))
    guest = SyntheticGuest(r.server.add_qxl_device(), W, H)
    await asyncio.to_thread(guest.setup)
    await asyncio.to_thread(guest.fill, guest.full, BACKGROUND)
    try:
        async with controlled_client("--port", str(r.server.port_of()), "--wait-display", timeout=60) as client:
            player = QxlPlayer(r, guest)
            player.start()
            await collect_decoded(client, player, "mjpeg", want=3)
            player.open_menu(menu, color)
            opened = player.played
            shot = await client.wait_picture(lambda p: bool(np.all(menu_area(p) == color)), timeout=20)
            assert shot is not None and np.all(menu_area(shot) == color), format_events(client.events, client.stderr)
            clipped: dict[int, float] = {}
            while len(clipped) < 4:  # frames play around the menu; it stays exact in every shot
                assert player.running, clipped
                shot = await client.screenshot()
                assert shot is not None and np.all(menu_area(shot) == color), f"a frame painted over the menu (frames {sorted(clipped)})"
                area = video_area(shot)
                idx = frame_index(area)
                assert idx is not None and idx < player.played
                if idx >= opened:
                    clipped[idx] = psnr(area[outside], video_frame(idx)[outside])
                await asyncio.sleep(0.03)  # screenshot pacing
            player.close_menu()
            closed = player.played

            def covered(p: np.ndarray) -> bool:
                idx = frame_index(video_area(p))
                return idx is not None and idx >= closed and psnr(video_area(p), video_frame(idx)) >= PSNR_FLOOR["mjpeg"]

            shot = await client.wait_picture(covered, timeout=20)
            assert shot is not None and covered(shot), "the frames do not cover the corner after the menu closed"
            video = video_stats(r)
            assert video["streams"] == 1 and [a["codec"] for a in video["live"]] == ["mjpeg"], video
            await end_and_compare(r, client, player)
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        assert not guest.error_seen
    finally:
        await r.server.close()
    assert min(clipped.values()) >= PSNR_FLOOR["mjpeg"] and float("inf") not in clipped.values(), clipped


async def test_animation_too_short_for_a_stream_ends_exact() -> None:
    """12 frames: a chain that never becomes a stream. Its frames from the fifth on go lossy (JPEG, as
    a stream's would) and, once the chain has ended, the area is sent lossless: spice-gtk ends up
    showing the server's canvas pixel for pixel, and no stream was ever created."""
    async with streaming_session("mjpeg") as (r, fb, client):
        player = Player(r, fb)
        player.start()
        await until("12 frames played", lambda: player.played >= 12, 20, client)
        last = await player.stop()
        want = r.server.display_snapshot()
        assert np.array_equal(video_area(want) & 0xFFFFFF, video_frame(last))
        shot = await client.wait_picture(same_picture(want), timeout=20)
        assert shot is not None and same_picture(want)(shot), format_events(client.events, client.stderr)
        stats = r.server.display_stats()
        assert stats["stream_stats"]["streams"] == 0 and video_stats(r)["streams"] == 0, stats
        assert stats["clients"][0]["images"]["jpeg"] > 0, stats  # the lossy part happened


async def test_resize_while_streaming() -> None:
    """The surface changes size while a stream is live: the stream ends with it (no upgrade of a
    surface that is gone) and spice-gtk shows the new surface pixel for pixel."""
    async with streaming_session("mjpeg") as (r, fb, client):
        player = Player(r, fb)
        player.start()
        await collect_decoded(client, player, "mjpeg", want=3)
        await player.stop()
        assert r.server.display_stats()["streams"], "the stream ended before the resize"
        fb.resize(W + 64, H + 48)
        bigger = np.full((H + 48, W + 64), 0x405060, np.uint32)
        bigger[BOX[1] : BOX[3], BOX[0] : BOX[2]] = video_frame(7)
        fb.update(bigger)
        shot = await client.wait_picture(same_picture(bigger), timeout=20)
        assert shot is not None and same_picture(bigger)(shot), format_events(client.events, client.stderr)
        await until("no stream", lambda: not r.server.display_stats()["streams"] and not video_stats(r)["live"], 20, client)
        assert np.array_equal(r.server.display_snapshot() & 0xFFFFFF, bigger)


async def test_two_streams_at_once() -> None:
    """Two video areas played together become two streams (ids 0 and 1, each its own encoder and
    share of the bit rate); spice-gtk shows each decoded in its place and ends pixel-exact."""
    size = (640, 400)
    boxes: tuple[Box, ...] = ((96, 64, 256, 192), (352, 208, 512, 336))  # 160x128 each, far apart
    r = await start_server(streaming_video="filter", video_codecs=("mjpeg",))
    fb = r.server.add_framebuffer_display(*size)
    fb.update(np.full((size[1], size[0]), BACKGROUND, np.uint32))
    try:
        async with controlled_client("--port", str(r.server.port_of()), "--wait-display", timeout=60) as client:
            player = Player(r, fb, boxes=boxes, size=size)
            player.start()
            shown = await collect_decoded_boxes(client, player, "mjpeg", want=4)
            streams = r.server.display_stats()["streams"]
            assert sorted(tuple(s["dest"]) for s in streams.values()) == sorted(boxes), streams
            video = video_stats(r)
            assert [a["codec"] for a in video["live"]] == ["mjpeg", "mjpeg"] and video["streams"] == 2, video
            await end_and_compare(r, client, player)
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
    finally:
        await r.server.close()
    for seen in shown:
        assert all(v != float("inf") for v in seen.values()) and min(seen.values()) >= PSNR_FLOOR["mjpeg"], shown


async def test_client_without_gstreamer_gets_mjpeg(tmp_path: Path) -> None:
    """spice-gtk with no GStreamer plugin at all (an empty plugin path and registry) announces only
    its builtin MJPEG decoder; a server configured for vp8 (or h264, vp9) alone streams MJPEG to it
    (libspice's fallback to its builtin MJPEG encoder), and spice-gtk shows it."""
    codec = next((c for c in ("vp8", "h264", "vp9") if _server_has(c)), None)
    if codec is None:
        pytest.skip("the server has no codec but MJPEG (PyAV)")
    env = {"GST_PLUGIN_SYSTEM_PATH_1_0": str(tmp_path), "GST_PLUGIN_PATH_1_0": str(tmp_path), "GST_REGISTRY_1_0": str(tmp_path / "registry.bin")}
    async with streaming_session(codec, env=env) as (r, fb, client):
        player = Player(r, fb)
        player.start()
        shown = await collect_decoded(client, player, "mjpeg")
        video = video_stats(r)
        assert [a["codec"] for a in video["live"]] == ["mjpeg"] and video["unsupported"] == 0, video
        await end_and_compare(r, client, player)
    assert float("inf") not in shown.values() and min(shown.values()) >= PSNR_FLOOR["mjpeg"], shown


async def test_stream_over_tls(test_ca: TestCA) -> None:
    """Every channel over TLS (``--tls-only``): spice-gtk shows the picture and an H.264 (or MJPEG)
    stream decoded, and ends pixel-exact. (spice-gtk reads a TLS channel one message at a time and
    then only while the socket is readable: the server must end its TLS records at message ends,
    ``transport.MessageCuts``; before that the display never showed its first picture.)"""
    codec = "h264" if _server_has("h264") and client_decoders("h264") else "mjpeg"
    r = await start_server(port=None, tls_port=0, x509_dir=str(test_ca.dir), streaming_video="filter", video_codecs=(codec,))
    fb = r.server.add_framebuffer_display(W, H)
    fb.update(np.full((H, W), BACKGROUND, np.uint32))
    args = ("--tls-port", str(r.server.port_of(secure=True)), "--ca-file", str(test_ca.ca_cert), "--tls-only", "--wait-display")
    try:
        async with controlled_client(*args, timeout=60) as client:
            opened = [e for e in client.events if e.get("event") == "channel-event" and e.get("name") == "OPENED"]
            assert opened and all(e.get("tls") for e in opened), opened
            player = Player(r, fb)
            player.start()
            shown = await collect_decoded(client, player, codec)
            assert [a["codec"] for a in video_stats(r)["live"]] == [codec]
            await end_and_compare(r, client, player)
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
    finally:
        await r.server.close()
    assert float("inf") not in shown.values() and min(shown.values()) >= PSNR_FLOOR[codec], shown


def fallback_codec() -> tuple[str, list[str]]:
    """A codec both sides have (so spice-gtk announces it), and the client decoders to disable."""
    for codec in ("h264", "vp8", "vp9"):
        if not _server_has(codec):
            continue
        decoders = client_decoders(codec)
        if decoders:
            return codec, decoders
    pytest.skip(f"no codec other than MJPEG that both the server (PyAV) and spice-gtk (GStreamer) have: {gst_probe()}")


async def test_client_whose_decoder_fails_gets_images_and_ends_exact() -> None:
    codec, decoders = fallback_codec()
    ranks = ",".join(f"{name}:NONE" for name in decoders)
    async with streaming_session(codec, env={"GST_PLUGIN_FEATURE_RANK": ranks}) as (r, fb, client):
        player = Player(r, fb)
        player.start()
        await until(f"spice-gtk's report that it cannot decode {codec}", lambda: video_stats(r)["unsupported"] == 1, 30, client)
        video = video_stats(r)
        encoded = video["by_codec"][codec]["frames"]
        assert encoded >= 1, video  # the stream was created with the codec
        assert [a["codec"] for a in video["live"]] == ["images"], video
        # the frames after the report go as ordinary images: lossless, so the client shows them exactly
        drawables = r.server.display_stats()["clients"][0]["drawables"]
        after = player.played
        exact: set[int] = set()
        deadline = time.monotonic() + 30
        while len(exact) < 3:
            assert player.running and time.monotonic() < deadline, f"exact frames {sorted(exact)}\n{format_events(client.events, client.stderr)}"
            shot = await client.screenshot()
            assert shot is not None
            area = video_area(shot)
            idx = frame_index(area)
            if idx is not None and idx > after and np.array_equal(area, video_frame(idx)):
                exact.add(idx)
            await asyncio.sleep(0.03)  # screenshot pacing
        assert r.server.display_stats()["clients"][0]["drawables"] >= drawables + len(exact)
        video = video_stats(r)
        assert video["unsupported"] == 1 and video["by_codec"][codec]["frames"] == encoded, video  # no more encoding
        await end_and_compare(r, client, player)
    assert "does not exist" in client.stderr, client.stderr[-2000:]  # spice-gtk's report_invalid_stream warning


def tshark_fields(pcap: Path, port: int, display_filter: str, *fields: str) -> list[list[str]]:
    """One row per matching frame, a field's values in a frame (several PDUs) comma-joined."""
    cmd = [TSHARK or "tshark", "-r", str(pcap), "-d", f"tcp.port=={port},spice", "-Y", display_filter, "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (Debian package tshark)")
@pytest.mark.parametrize("codec", ["mjpeg", "h264"])
async def test_stream_capture_decodes_in_wireshark(tmp_path: Path, codec: str) -> None:
    """A capture of a streaming session: Wireshark's SPICE dissector finds STREAM_CREATE (codec, size),
    every STREAM_DATA and STREAM_DATA_SIZED (the area grows mid-stream) the server counted (same
    payload bytes), the clip, the destroy, spice-gtk's STREAM_REPORTs, and no malformed message."""
    require_codec(codec)
    pcap = tmp_path / "stream.pcap"
    r = await start_server(streaming_video="filter", video_codecs=(codec,))
    fb = r.server.add_framebuffer_display(W, H)
    fb.update(np.full((H, W), BACKGROUND, np.uint32))
    port = r.server.port_of()
    try:
        async with loopback_capture(pcap, port) as cap:
            async with controlled_client("--port", str(port), "--wait-display", timeout=60) as client:
                player = Player(r, fb)
                player.start()
                await until("5 stream frames", lambda: sum(a["frames"] for a in video_stats(r)["live"]) >= 5, 30, client)
                await until("STREAM_REPORTs", lambda: video_stats(r)["reports"] > 0, 20, client)
                assert [a["codec"] for a in video_stats(r)["live"]] == [codec]
                # the area grows: the next frames go as STREAM_DATA_SIZED
                sent = video_stats(r)["live"][0]["frames"]
                player.boxes = ((BOX[0], BOX[1], BOX[2] + 32, BOX[3] + 32),)
                await until("sized frames", lambda: video_stats(r)["live"][0]["frames"] >= sent + 3, 30, client)
                await end_and_compare(r, client, player)
                video = video_stats(r)
            assert client.proc.returncode == 0, format_events(client.events, client.stderr)
    finally:
        await r.server.close()
    info = "\n".join(row[0] for row in tshark_fields(pcap, port, "spice", "_ws.col.Info"))
    for needle in ("STREAM_CREATE", "STREAM_ACTIVATE_REPORT", "STREAM_DATA", "STREAM_DATA_SIZED", "STREAM_CLIP", "STREAM_DESTROY", "Client STREAM_REPORT"):
        assert needle in info, (needle, cap.report(), info[:3000])
    create = tshark_fields(pcap, port, "spice.display_stream_codec_type", "spice.display_stream_codec_type", "spice.stream_src_width", "spice.stream_src_height")
    assert create == [[str(CODEC_TYPES[codec]), str(BOX[2] - BOX[0]), str(BOX[3] - BOX[1])]], create
    sizes = [int(v) for row in tshark_fields(pcap, port, "spice.display_stream_data_size", "spice.display_stream_data_size") for v in row[0].split(",")]
    sent = video["by_codec"][codec]
    assert (len(sizes), sum(sizes)) == (sent["frames"], sent["bytes"]), (cap.report(), sizes, video)
    malformed = tshark_fields(pcap, port, "_ws.malformed || _ws.expert.severity >= error", "frame.number", "_ws.col.Info")
    assert malformed == [], (cap.report(), malformed)
