"""Video: a region of the screen repainted at 25 fps with a panning photo, as a guest playing a video.

The scene of issue 11: a 640x360 region in the middle of a 1920x1080 screen (``--size 1920x1080``:
the whole screen) repainted at 25 fps for ``--seconds`` (default 10) with a panning crop of
``../shared/images/photo_1080.png`` (every pixel changes each frame), the rest of the screen the
static desktop picture (``desktop_1080.png``). Two ways in:

- ``--path framebuffer``: :meth:`~spiceserver.FramebufferDisplay.update` of the whole frame with the
  region as the dirty rectangle (a host repainting a video window);
- ``--path qxl``: a QXL guest driver (``SyntheticDriver``, the driver's part of Linux
  ``drivers/gpu/drm/qxl/qxl_draw.c``) pushing one opaque DRAW_COPY of a fresh 32-bit bitmap of the
  region per frame through the device rings. The guest runs in a thread of this process (not the
  forked child of ``qxl_rate.py``: its work per frame is one numpy copy into guest RAM); its own CPU
  is measured on its thread clock and left out of the server's figure.

The client is spice-gtk (``tests/interop/gi_client.py``, default) or the test client
(``tests/support/client.py``). What the server does with the frames is whatever it does today:
lossless images now, streams (libspice ``video-stream.cpp``) once they are wired, with no change here.

Reported: frames per second the client showed (spice-gtk: the invalidated area inside the region
divided by the region's area, as ``cold_start.py --video`` counts it; test client: the area of the
draw and stream messages it received), display channel bytes server->client (the server's traffic
counters), the mean bitrate over the steady part (from 1 s after the first frame to the last frame),
the server process's CPU seconds (guest thread excluded; it does include the host painting the
framebuffer path's frames, and with ``--client test`` the test client, which runs in this process)
and the display worker thread's (its own clock, ``pthread_getcpuclockid``), encode ms
per frame when the server reports it (worker CPU per frame otherwise), the images sent by codec and
the stream messages. PSNR: n/a for lossless images; once streams exist, of the decoded frames.

Run: ``python benchmarks/video.py [--seconds 10] [--size 640x360|1920x1080] [--path framebuffer|qxl]
[--client spicegtk|test]`` (docs/performance.md records the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import mmap
import platform
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
IMAGES = ROOT.parent / "shared" / "images"

from _tasks import in_background  # noqa: E402  # benchmarks/_tasks.py (this script's folder is on sys.path)

from spiceserver import ServerConfig, SpiceServer  # noqa: E402
from spiceserver.codecs import warmup  # noqa: E402
from spiceserver.proto.enums import BitmapFmt, VideoCodecType  # noqa: E402
from spiceserver.proto.messages import display as d  # noqa: E402
from spiceserver.proto.messages.base import Rect  # noqa: E402
from spiceserver.qxl.layout import CmdType  # noqa: E402
from spiceserver.qxl.rom import QXLDeviceConfig  # noqa: E402
from spiceserver.synthetic_guest.driver import SyntheticDriver  # noqa: E402
from spiceserver.synthetic_guest.helpers import ROPD_PUT, bitmap_image  # noqa: E402

SW, SH = 1920, 1080  # the screen
FPS = 25  # the default frame rate (--fps)
STEP = 8  # pixels the crop pans per frame


def load_bgrx(name: str, w: int, h: int) -> np.ndarray:
    img = Image.open(IMAGES / name).convert("RGB").resize((w, h))
    rgb = np.asarray(img, dtype=np.uint32)
    return np.ascontiguousarray((rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2])


class Scene:
    """The static desktop and the video frames of a ``w`` x ``h`` region centred on the screen."""

    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h
        self.x, self.y = (SW - w) // 2 // 8 * 8, (SH - h) // 2 // 8 * 8
        self.desktop = load_bgrx("desktop_1080.png", SW, SH)
        self.photo = load_bgrx("photo_1080.png", SW, SH)
        self.screen = self.desktop.copy()

    def frame(self, k: int) -> np.ndarray:
        """Frame ``k``: a crop of the photo panning right, then left ``STEP`` lower, and so on down
        and back up (the whole photo rolled the same way when the region is the whole screen). No
        two frames of a run are equal, so none can come from the client's image cache."""
        if self.w == SW:
            return np.roll(self.photo, (STEP * ((k + 1) // (SW // STEP)), STEP * (k + 1)), axis=(0, 1))
        span_x, span_y = (SW - self.w) // STEP, max(1, (SH - self.h) // STEP)
        sweep, pos = divmod(k, span_x)  # one way per sweep, alternately
        x = pos if sweep % 2 == 0 else span_x - pos
        row = sweep % (2 * span_y)
        y = row if row < span_y else 2 * span_y - row
        return self.photo[y * STEP : y * STEP + self.h, x * STEP : x * STEP + self.w]

    def dirty(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.x + self.w, self.y + self.h)


class Traffic:
    """Display channel bytes server->client, sampled (time, bytes) while the video plays."""

    def __init__(self, server: SpiceServer) -> None:
        self._traffic = server._ctx.traffic
        self.samples: list[tuple[float, int]] = []

    def now(self) -> int:
        return sum(n for (name, way), n in list(self._traffic.items()) if way == "out" and name.startswith("display"))

    def sample(self) -> None:
        self.samples.append((time.perf_counter(), self.now()))

    def steady_bitrate(self, t_from: float, t_to: float) -> float:
        """Bits per second between the samples nearest ``t_from`` and ``t_to``."""
        a = min(self.samples, key=lambda s: abs(s[0] - t_from))
        b = min(self.samples, key=lambda s: abs(s[0] - t_to))
        return (b[1] - a[1]) * 8 / (b[0] - a[0]) if b[0] > a[0] else 0.0


@contextlib.asynccontextmanager
async def linked(server: SpiceServer, kind: str, scene: Scene) -> AsyncIterator[Callable[[], dict[str, Any]]]:
    """A client of ``kind`` linked to display 0, its first picture shown; yields a function that
    starts (first call) and reads (second call) what it showed: region area and message kinds."""
    region = (scene.x, scene.y, scene.x + scene.w, scene.y + scene.h)

    def inside(left: int, top: int, right: int, bottom: int) -> int:
        w = min(right, region[2]) - max(left, region[0])
        h = min(bottom, region[3]) - max(top, region[1])
        return max(0, w) * max(0, h)

    if kind == "test":
        from tests.support.client import Endpoint, connect
        from tests.support.display import link_display

        session = await connect(Endpoint(port=server.port_of()))
        ch, state = await link_display(session)
        while state.marks == 0:
            state.apply(await ch.recv())
        seen: dict[str, Any] = {"area": 0, "kinds": Counter()}

        async def read() -> None:
            while True:
                msg = await ch.recv(3600)
                seen["kinds"][type(msg).__name__] += 1
                box = getattr(getattr(msg, "base", None), "box", None)
                if box is not None and type(msg).__name__.startswith("Draw"):
                    seen["area"] += inside(box.left, box.top, box.right, box.bottom)
                elif isinstance(msg, d.StreamData | d.StreamDataSized):
                    seen["area"] += scene.w * scene.h  # a stream frame: the region (sized: its own box)

        marks: list[dict[str, Any]] = []

        def mark() -> dict[str, Any]:
            marks.append({"area": seen["area"], "kinds": Counter(seen["kinds"])})
            if len(marks) == 1:
                return marks[0]
            return {"area": seen["area"] - marks[0]["area"], "kinds": seen["kinds"] - marks[0]["kinds"]}

        async with in_background(read()):
            yield mark
        return
    from tests.interop.harness import GiClient, require_gi_client

    require_gi_client()
    client = await GiClient.start(
        "--port", str(server.port_of()), "--wait-display", "--max-invalidates", "100000000",
        "--linger-ms", "600000", "--timeout", "3600",
    )  # fmt: skip
    starts: list[int] = []

    def gtk_mark() -> dict[str, Any]:
        events = client.events
        if not starts:
            starts.append(len(events))
            return {}
        inv = [ev for ev in events[starts[0] :] if ev.get("event") == "display-invalidate"]
        area = sum(inside(ev["x"], ev["y"], ev["x"] + ev["w"], ev["y"] + ev["h"]) for ev in inv)
        return {"area": area, "kinds": Counter({"display-invalidate": len(inv)})}

    try:
        # the desktop reached spice-gtk: the whole screen invalidated once
        deadline = time.perf_counter() + 120
        while sum(ev["w"] * ev["h"] for ev in client.events if ev.get("event") == "display-invalidate") < SW * SH:
            if client.events and client.events[-1].get("event") == "done":
                raise RuntimeError(f"client ended: {client.events[-1]}")
            if time.perf_counter() > deadline:
                raise TimeoutError("the desktop did not reach spice-gtk")
            await asyncio.sleep(0.01)
        yield gtk_mark
    finally:
        client.kill()
        await client.wait(10)


async def settle(server: SpiceServer, timeout: float = 120) -> None:
    """Until the worker is idle and every display client's pipe is empty."""
    await asyncio.to_thread(server.wait_idle, 0, timeout)
    deadline = time.perf_counter() + timeout
    while any(c["pipe"] for c in server.display_stats()["clients"]) and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)


class QxlGuest:
    """The guest: a DRAW_COPY of a fresh bitmap of the region per frame, paced at ``fps``."""

    def __init__(self, driver: SyntheticDriver, scene: Scene, fps: float = FPS) -> None:
        self.fps = fps
        self.driver = driver
        self.scene = scene
        self.cpu = 0.0
        self.next_id = 1 << 20

    def draw(self, px: np.ndarray, x: int, y: int) -> None:
        h, w = px.shape
        self.next_id += 1  # never cached: a video frame is never drawn twice
        img = bitmap_image(self.next_id, BitmapFmt.BIT32, w, np.ascontiguousarray(px).view(np.uint8).reshape(h, w * 4))
        drv = self.driver
        drv.reserve(w * h * 4 + 16384)
        body = d.Copy(
            src_bitmap=img,
            src_area=Rect(top=0, left=0, bottom=h, right=w),
            rop_descriptor=ROPD_PUT,
            scale_mode=0,
            mask=d.QMask(),
        )
        drv.push(drv.drawable(body, bbox=Rect(top=y, left=x, bottom=y + h, right=x + w)), CmdType.DRAW)
        drv.collect()

    def play(self, n: int, t0: float, on_frame: Callable[[], None]) -> None:
        cpu0 = time.thread_time()
        s = self.scene
        for k in range(n):
            time.sleep(max(0.0, t0 + k / self.fps - time.perf_counter()))
            self.draw(s.frame(k), s.x, s.y)
            on_frame()
        self.cpu = time.thread_time() - cpu0


async def run(args: argparse.Namespace) -> dict[str, Any]:
    scene = Scene(args.width, args.height)
    server = SpiceServer(
        ServerConfig(
            port=0, disable_ticketing=True, net_test=False, streaming_video=args.streaming_video,
            video_codecs=args.codec,
        )
    )  # fmt: skip
    guest: QxlGuest | None = None
    fb = None
    if args.path == "qxl":
        cfg = QXLDeviceConfig(ram_size=160 << 20)
        device = server.add_qxl_device(cfg, ram=mmap.mmap(-1, cfg.ram_size))
        driver = SyntheticDriver(device, timeout=600, kick_after=0.05)
        driver.setup_memslots()
        driver.create_primary(SW, SH)
        guest = QxlGuest(driver, scene, args.fps)
        guest.draw(scene.desktop, 0, 0)
    else:
        fb = server.add_framebuffer_display(SW, SH)
        fb.update(scene.desktop)
    await server.start()
    await asyncio.to_thread(warmup.wait, 600)  # the steady state: codec kernels compiled first
    worker = server._display(0).worker
    clock = time.pthread_getcpuclockid(worker._thread.ident or 0)
    tap = FrameTap(every=args.psnr_every)
    worker.frame_tap = tap
    traffic = Traffic(server)
    n = int(args.seconds * args.fps)
    try:
        async with linked(server, args.client, scene) as mark:
            await settle(server)
            before = server.display_stats()
            mark()
            bytes0 = traffic.now()
            cpu0 = time.clock_gettime(clock)
            proc0 = time.process_time()
            t0 = time.perf_counter()
            traffic.sample()
            if guest is not None:
                g = guest
                await asyncio.to_thread(g.play, n, t0, traffic.sample)
            else:
                assert fb is not None
                screen = scene.screen
                x, y, w, h = scene.x, scene.y, scene.w, scene.h
                for k in range(n):
                    await asyncio.sleep(max(0.0, t0 + k / args.fps - time.perf_counter()))
                    screen[y : y + h, x : x + w] = scene.frame(k)
                    fb.update(screen, [scene.dirty()])
                    traffic.sample()
            t_last = time.perf_counter()
            live_streams = server.display_stats()["clients"][0]["video"]["live"] if server.display_stats()["clients"] else []
            await asyncio.sleep(max(0.0, t0 + n / args.fps - time.perf_counter()))
            await settle(server)
            await asyncio.sleep(0.3)  # the last frames reach the client
            traffic.sample()
            t_end = time.perf_counter()
            cpu = time.clock_gettime(clock) - cpu0
            proc = time.process_time() - proc0 - (guest.cpu if guest is not None else 0.0)
            shown = mark()
            after = server.display_stats()
            metrics = await server.metrics()
    finally:
        await server.close()
    result: dict[str, Any] = {
        "args": args,
        "frames": n,
        "fps_shown": shown["area"] / (scene.w * scene.h) / args.seconds,
        "kinds": shown["kinds"],
        "bytes": traffic.now() - bytes0,
        "steady_bps": traffic.steady_bitrate(t0 + 1.0, t_last),
        "wall": t_end - t0,
        "server_cpu": proc,
        "worker_cpu": cpu,
        "guest_cpu": guest.cpu if guest is not None else None,
        "displays": metrics.displays,
        "psnr": tap.psnr(),
        "live_streams": live_streams,
        "codecs": sorted(tap.codecs),
    }
    if after["clients"] and before["clients"]:
        a, b = after["clients"][0], before["clients"][0]
        result["images"] = {k: v - b["images"].get(k, 0) for k, v in a["images"].items() if v - b["images"].get(k, 0)}
        result["streams"] = {k: v - b.get(k, 0) for k, v in a.items() if "stream" in k and isinstance(v, int)}
        result["drawables"] = a.get("drawables", 0) - b.get("drawables", 0)
        result["replaced"] = {k: a.get(k, 0) - b.get(k, 0) for k in ("collapsed", "pruned")}
    return result


class FrameTap:
    """Keeps every encoded stream frame and, for one in ``every``, its source pixels (the worker's
    ``frame_tap``); :meth:`psnr` decodes the stream as a client does and compares."""

    def __init__(self, every: int = 5) -> None:
        self.every = every
        self.frames: list[tuple[int, bytes, np.ndarray | None]] = []
        self.codecs: set[str] = set()

    def __call__(self, cc_id: int, stream_id: int, codec: int, mm_time: int, data: bytes, pixels: np.ndarray) -> None:
        keep = pixels.copy() if len(self.frames) % self.every == 0 else None
        self.frames.append((codec, data, keep))
        self.codecs.add(VideoCodecType(codec).name.lower())

    def psnr(self) -> tuple[float, float, int] | None:
        """(mean, min, frames compared) in dB over RGB, or None without stream frames."""
        values: list[float] = []
        decoder: Any = None
        for codec, data, source in self.frames:
            if codec == VideoCodecType.MJPEG:
                # as spice-gtk decodes (fast DCT, no smooth chroma upsampling), as video_xspice.py measures
                rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True)
            else:
                import av

                if decoder is None:
                    decoder = av.CodecContext.create({2: "vp8", 3: "h264", 4: "vp9"}[codec], "r")
                out = decoder.decode(av.Packet(data))
                if not out:
                    continue
                rgb = out[-1].to_ndarray(format="rgb24")
            if source is None or rgb.shape[:2] != source.shape:
                continue
            src = np.stack([(source >> 16) & 255, (source >> 8) & 255, source & 255], axis=-1).astype(np.float64)
            mse = float(np.mean((src - rgb.astype(np.float64)) ** 2))
            values.append(99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse))
        if not values:
            return None
        return float(np.mean(values)), float(np.min(values)), len(values)


def encode_ms(r: dict[str, Any]) -> str:
    """Per-frame encode ms if the server's metrics carry it (streams, once wired), else n/a."""
    for disp in r["displays"]:
        ms = getattr(disp, "encode_ms", None)
        if ms is not None:
            return f"{ms:.2f} ms"
    return f"n/a (not reported; worker CPU per frame {r['worker_cpu'] / r['frames'] * 1000:.1f} ms)"


def show(r: dict[str, Any]) -> None:
    a = r["args"]
    print(
        f"scene: {a.width}x{a.height} region of a {SW}x{SH} screen at {a.fps:g} fps for {a.seconds:g} s ({r['frames']} frames), path={a.path}, client={a.client}"
    )
    print(f"  frames shown by the client: {r['fps_shown']:.1f} /s")
    print(
        f"  display bytes server->client: {r['bytes'] / 1e6:.1f} MB ({r['bytes'] * 8 / a.seconds / 1e6:.1f} Mbit/s over {a.seconds:g} s); steady mean bitrate {r['steady_bps'] / 1e6:.1f} Mbit/s"
    )
    guest = f"; guest driver thread {r['guest_cpu']:.2f} s (excluded)" if r["guest_cpu"] is not None else ""
    print(
        f"  server CPU {r['server_cpu']:.2f} s (worker thread {r['worker_cpu']:.2f} s){guest}; run {r['wall']:.1f} s wall"
    )
    print(f"  encode per frame: {encode_ms(r)}")
    for disp in r["displays"]:
        for codec, v in disp.video.items():
            print(f"  {codec}: {int(v['frames'])} frames sent, {int(v['dropped'])} dropped before encoding, {v['bytes'] / 1e6:.1f} MB")
    print(
        f"  images by codec: {r.get('images', {})}; drawables sent: {r.get('drawables', 'n/a')}; not sent (newer frame won): {r.get('replaced', 'n/a')}"
    )
    streams = {k: v for k, v in r.get("streams", {}).items() if v}
    kinds = {k: v for k, v in r["kinds"].items() if k.startswith("Stream")}
    print(f"  stream messages: {streams or kinds or 'none (streams not wired)'}")
    print(f"  client saw: {dict(r['kinds'])}")
    for s in r.get("live_streams", []):
        enc = s.get("encoder", {})
        keys = ("bit_rate", "encoder_bit_rate", "target_bit_rate", "reopens", "forced_keyframes", "encode_ms_avg", "avg_quality", "fps")
        print(
            f"  stream {s['id']} ({s['codec']}) at the last frame: " + ", ".join(f"{k} {enc[k]:.4g}" for k in keys if k in enc)
            + f"; rate-control drops {s['dropped']}, replaced unsent by a newer frame {s['replaced']}"
        )
    psnr = r["psnr"]
    if psnr is None:
        print("  PSNR: n/a (no stream frames: lossless images)")
    else:
        print(f"  stream codec {', '.join(r['codecs'])}: PSNR of the decoded frames mean {psnr[0]:.1f} dB, min {psnr[1]:.1f} dB ({psnr[2]} frames compared)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--size", default="640x360", help="the video region (1920x1080: the whole screen)")
    p.add_argument("--path", choices=("framebuffer", "qxl"), default="framebuffer")
    p.add_argument("--client", choices=("spicegtk", "test"), default="spicegtk")
    p.add_argument("--streaming-video", choices=("off", "all", "filter"), default="filter")
    p.add_argument("--codec", default=None, help="video_codecs, e.g. mjpeg or h264 (default: every installed one, libspice's order)")
    p.add_argument("--fps", type=float, default=FPS, help="frames per second the scene is painted at")
    p.add_argument("--psnr-every", type=int, default=5, help="compare one stream frame in N with its source")
    args = p.parse_args()
    args.width, args.height = (int(v) for v in args.size.split("x"))
    if not (0 < args.width <= SW and 0 < args.height <= SH):
        p.error(f"--size must fit {SW}x{SH}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )
    print(f"date: {time.strftime('%Y-%m-%d %H:%M')}")
    show(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
