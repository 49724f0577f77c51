"""``python -m spiceserver demo``: a synthetic desktop, plus a keyboard, mouse and tablet that print events.

The display is an emulated QXL device driven by a fake guest driver
(:class:`~spiceserver.synthetic_guest.SyntheticGuest`, on its own thread like a vCPU) that draws a
desktop with real QXL commands -- windows, glyph text, a photo, COPY_BITS scrolling, an offscreen
surface -- and moves a hardware cursor; ``--display framebuffer`` shows the numpy-painted
:class:`~spiceserver.desktop.SyntheticDesktop` through the framebuffer path instead. ``--scene static``
gives a deterministic still picture; ``--screendump PATH`` makes the process write the server's
picture there as PNG whenever it gets SIGUSR1. Every input event the devices receive is
printed on its own line, flushed at once, e.g.::

    key down 0x1e (scancode 1e)
    mouse motion dx=3 dy=-1 dz=0 buttons=0x0
    tablet position x=120 y=48 buttons=0x1 display=0

Sound (``--no-audio`` turns it off): the speaker (``server.add_playback()``) plays a soft 2 s tone
loop, written in real time in 10 ms frames from a thread (:mod:`spiceserver.demo_sound`); the
microphone (``server.add_record()``) is opened, and what a client records is metered::

    record start (raw)
    record level -23.4 dBFS
    record stop

``--agent SOCKET`` serves the guest agent's char device as a listening Unix socket: a real
``spice-vdagentd -s SOCKET`` (with ``spice-vdagent`` on an X display) then gives clients clipboard,
file transfer, monitors config and agent mouse with that X session.

``--smartcard`` adds a card reader slot (:mod:`spiceserver.demo_smartcard`): when a client inserts
a card (spice-gtk ``--spice-smartcard``) the demo prints its ATR and its answer to a SELECT of the
CAC applet.

``--usbredir N`` offers N usbredir channels (:mod:`spiceserver.demo_usb`): each USB device a client
redirects is printed with its descriptors, read through the pyusb backend.

``--scene av`` is the lip-sync check: a video region on the framebuffer display flashes white
once a second, and the audio frame written in the same loop iteration holds a click (10 ms of
1 kHz at -3 dBFS, a soft hum otherwise); a client in sync shows the flash as it plays the click.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .channels.chardev import UnixSocketCharDevice
from .channels.host_clipboard import add_clipboard_handler
from .channels.host_monitors import add_monitors_config_handler
from .codecs import warmup
from .config import (
    DEFAULT_WEB_ROOT,
    IMAGE_COMPRESSIONS,
    STREAMING_VIDEO_MODES,
    WAN_COMPRESSIONS,
    ServerConfig,
    installed_web_root,
)
from .demo_smartcard import attach_demo_reader
from .demo_sound import FRAME_SAMPLES, AvScene, FramePacer, LevelMeter, tone_loop
from .demo_usb import watch_usb
from .desktop import ARROW_CURSOR, SyntheticDesktop, av_picture, video_picture
from .errors import ConfigError
from .framebuffer import FramebufferDisplay
from .interfaces import Keyboard, KeyEvent, Mouse, Tablet
from .proto.vdagent_messages import ClipboardSelection, ClipboardType
from .reds import SpiceServer
from .synthetic_guest import SyntheticGuest
from .worker.cursor_client import CursorShape

if TYPE_CHECKING:
    from .framebuffer import FramebufferDisplay

__all__ = ["main", "build_parser", "PrintingKeyboard", "PrintingMouse", "PrintingTablet", "RecordMeter", "play_tone_loop", "run_av_scene"]

log = logging.getLogger("spiceserver.demo")

#: Debian's spice-html5 files (package ``spice-html5``)


def _out(line: str) -> None:
    print(line, flush=True)


class PrintingKeyboard(Keyboard):
    """A keyboard that prints every key event."""

    def on_key(self, event: KeyEvent) -> None:
        """Print the key event."""
        _out(f"key {'down' if event.down else 'up'} {event.keycode:#04x} (scancode {event.scancode.hex(' ')})")


class PrintingMouse(Mouse):
    """A relative mouse that prints its motion and buttons."""

    def on_motion(self, dx: int, dy: int, dz: int, buttons: int) -> None:
        """Print the relative motion."""
        _out(f"mouse motion dx={dx} dy={dy} dz={dz} buttons={buttons:#x}")

    def on_buttons(self, buttons: int) -> None:
        """Print the new button state."""
        _out(f"mouse buttons={buttons:#x}")


class PrintingTablet(Tablet):
    """An absolute pointer that prints its position, wheel and buttons."""

    def on_position(self, x: int, y: int, buttons: int, display_id: int) -> None:
        """Print the absolute position."""
        _out(f"tablet position x={x} y={y} buttons={buttons:#x} display={display_id}")

    def on_wheel(self, dz: int, buttons: int) -> None:
        """Print the wheel motion."""
        _out(f"tablet wheel dz={dz} buttons={buttons:#x}")

    def on_buttons(self, buttons: int) -> None:
        """Print the new button state."""
        _out(f"tablet buttons={buttons:#x}")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m spiceserver demo`` argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m spiceserver demo",
        description="Serve a demo SPICE session on this machine. Connect with "
        "`remote-viewer spice://127.0.0.1:5900`; typed keys and mouse actions are printed here.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5900, help="plain TCP port (default 5900; 0 = no plain listener)")
    p.add_argument("--tls-port", type=int, default=None, help="TLS port; needs --x509-dir")
    p.add_argument("--x509-dir", default=None, help="directory with ca-cert.pem, server-cert.pem, server-key.pem")
    p.add_argument("--unix", default=None, metavar="PATH", help="also listen on this Unix socket")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--password", default=None, help="require this password (ticket)")
    auth.add_argument("--disable-ticketing", action="store_true", help="no password (the default when --password is absent)")
    p.add_argument("--viewer-password", default=None,
                   help="with --password: a second password whose clients only watch (display, cursor, sound)")
    p.add_argument("--max-clients", type=int, default=1, metavar="N",
                   help="clients connected at once (default 1: a new client replaces the old one)")
    p.add_argument("--tls-channel", action="append", default=[], metavar="NAME",
                   help="channel that must use TLS (main, inputs, ...; 'default' = all); repeatable")
    p.add_argument("--name", default="spiceserver demo", help="VM name shown by clients")
    p.add_argument("--image-compression", choices=IMAGE_COMPRESSIONS, default="auto_glz",
                   help="image codec policy, as QEMU's image-compression (default auto_glz)")
    p.add_argument("--jpeg-wan-compression", choices=WAN_COMPRESSIONS, default="auto",
                   help="JPEG for photo-like images: auto (low-bandwidth clients), never, always")
    p.add_argument("--zlib-glz-wan-compression", choices=WAN_COMPRESSIONS, default="auto",
                   help="deflate GLZ images: auto (low-bandwidth clients), never, always")
    p.add_argument("--web-root", default=installed_web_root(), metavar="DIR",
                   help="serve this web client over HTTP on the same port(s) (default: Debian's spice-html5 "
                        f"at {DEFAULT_WEB_ROOT} when installed; 'none' to serve nothing)")
    p.add_argument("--no-websocket", action="store_true", help="refuse WebSocket (browser) connections")
    p.add_argument("--server-name", action="append", default=[], metavar="NAME",
                   help="a host name browsers reach the server by (besides localhost and the listen address); "
                        "repeatable; '*' accepts any (see docs/security.md)")
    p.add_argument("--metrics-path", default="/metrics", metavar="PATH",
                   help="serve live metrics (Prometheus text) at this HTTP path on the same port(s) "
                        "(default /metrics; 'none' to serve none)")
    p.add_argument("--size", default="1024x768", metavar="WxH", help="display size (default 1024x768)")
    p.add_argument("--display", choices=["qxl", "framebuffer"], default=None,
                   help="qxl: an emulated QXL device and a synthetic guest driver (default, except for "
                   "--scene av); framebuffer: host-painted numpy frames")
    p.add_argument("--streaming-video", choices=STREAMING_VIDEO_MODES, default="filter",
                   help="which draws may become video streams (QEMU streaming-video; default filter)")
    p.add_argument("--video-codec", default=None, metavar="LIST",
                   help="video codecs for streams, most preferred first, QEMU's spelling "
                        "(e.g. 'spice:mjpeg;gstreamer:h264'); default: every installed one")
    p.add_argument("--scene", choices=["animated", "static", "video", "av"], default="animated",
                   help="animated desktop (default), a deterministic still one, a video window, or 'av': "
                   "a video region that flashes white once a second with a click in the sound "
                   "(framebuffer display)")
    p.add_argument("--no-audio", action="store_true",
                   help="no sound: no speaker (tone loop, clicks) and no microphone channel")
    p.add_argument("--playback-compression", choices=["on", "off"], default="on",
                   help="Opus sound for clients that can decode it (on, the default) or raw always, "
                   "as QEMU's playback-compression")
    p.add_argument("--av-click-offset-ms", type=int, default=0, metavar="MS",
                   help="--scene av: write each click MS after its flash (a multiple of 10; negative: before); "
                   "0 (default) writes them together")
    p.add_argument("--agent", default=None, metavar="SOCKET",
                   help="the guest agent's char device as a listening Unix socket: run spice-vdagentd -s SOCKET "
                        "(and spice-vdagent on an X display) against it")
    p.add_argument("--smartcard", action="store_true",
                   help="a card reader slot: print the ATR of a card a client inserts and its answer to a SELECT")
    p.add_argument("--usbredir", type=int, default=0, metavar="N",
                   help="N usbredir channels: print each USB device a client redirects, with its descriptors (pyusb)")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second of the animated scene (default 10)")
    p.add_argument("--screendump", default=None, metavar="PATH",
                   help="on SIGUSR1, write the server's current picture to PATH as PNG")
    p.add_argument("--record", default=None, metavar="PATH",
                   help="record the display to PATH, gzip-compressed if it ends in .gz "
                        "(replay: python -m spiceserver replay PATH --screendump out.png)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    return p


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        addr=args.host,
        port=args.port or None,
        tls_port=args.tls_port,
        x509_dir=args.x509_dir,
        unix_path=args.unix,
        password=args.password,
        disable_ticketing=args.password is None,
        viewer_password=args.viewer_password,
        max_clients=args.max_clients,
        tls_channels=tuple(args.tls_channel),
        name=args.name,
        image_compression=args.image_compression,
        jpeg_wan_compression=args.jpeg_wan_compression,
        zlib_glz_wan_compression=args.zlib_glz_wan_compression,
        websocket=not args.no_websocket,
        web_root=None if args.no_websocket or args.web_root in (None, "none") else args.web_root,
        metrics_path=None if args.no_websocket or args.metrics_path == "none" else args.metrics_path,
        server_names=tuple(args.server_name),
        streaming_video=args.streaming_video,
        video_codecs=args.video_codec,
        playback_compression=args.playback_compression == "on",
    )


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"bad --size {text!r}, expected WxH") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise ConfigError(f"--size {text} out of range")
    return w, h


def display_of(args: argparse.Namespace) -> str:
    """The display the arguments ask for (``--scene av`` draws on the framebuffer display)."""
    if args.scene == "av":
        if args.display == "qxl":
            raise ConfigError("--scene av needs --display framebuffer")
        return "framebuffer"
    return str(args.display or "qxl")


def check_args(args: argparse.Namespace) -> None:
    """Reject option combinations the parser cannot.

    Raises:
        ConfigError: with the message to print.
    """
    parse_size(args.size)
    display_of(args)
    if args.av_click_offset_ms % 10:
        raise ConfigError(f"--av-click-offset-ms {args.av_click_offset_ms} is not a multiple of 10")
    if not 0 <= args.usbredir <= 16:
        raise ConfigError(f"--usbredir {args.usbredir}: 0 to 16 channels")
    if args.viewer_password is not None and args.password is None:
        raise ConfigError("--viewer-password needs --password (the owner's)")


async def run(config: ServerConfig, args: argparse.Namespace | None = None) -> None:
    args = args or build_parser().parse_args([])
    check_args(args)
    display = display_of(args)
    server = SpiceServer(config)
    server.add_keyboard(PrintingKeyboard())
    server.add_mouse(PrintingMouse())
    server.add_tablet(PrintingTablet())
    width, height = parse_size(args.size)
    loop = asyncio.get_running_loop()
    speaker = None if args.no_audio else server.add_playback()
    meter = RecordMeter()
    microphone = None if args.no_audio else server.add_record(meter.on_data, meter.on_event)
    if args.screendump:
        path = args.screendump

        def dump() -> None:
            server.screendump(path)
            _out(f"screendump written to {path}")

        loop.add_signal_handler(signal.SIGUSR1, lambda: loop.run_in_executor(None, dump))
    stop = threading.Event()
    wanted = DesktopSize()
    fb: FramebufferDisplay | None = None
    if display == "framebuffer":
        fb = server.add_framebuffer_display(width, height)
        desktop = SyntheticDesktop(width, height)
        fb.update(desktop.frame(0.0))
        cw, ch, cpx = ARROW_CURSOR
        fb.set_cursor(CursorShape(unique=1, type=0, width=cw, height=ch, hot_x=0, hot_y=0, data=cpx.tobytes()), width // 2, height // 2)
        if args.scene == "av":
            scene = AvScene(click_offset_frames=args.av_click_offset_ms // 10)
            animation: Any = lambda: asyncio.to_thread(run_av_scene, fb, desktop, scene, speaker, stop)  # noqa: E731
        elif args.scene != "static":
            animation = lambda: _animate(fb, desktop, args.fps, video=args.scene == "video", size=wanted)  # noqa: E731
        else:
            animation = None
    else:
        guest = SyntheticGuest(server.add_qxl_device(), width, height)
        guest.setup()
        guest.draw_static()
        video = args.scene == "video"
        animation = (lambda: asyncio.to_thread(_run_guest, guest, args.fps, stop, video)) if args.scene != "static" else None
    if args.agent:
        server.add_agent(UnixSocketCharDevice(args.agent))
    else:
        answer_agent_duties(server, fb if display == "framebuffer" else None, wanted, static=args.scene == "static")
    if args.smartcard:
        attach_demo_reader(server.add_smartcard_reader(), _out)
    if args.usbredir:
        watch_usb(server.add_usbredir(args.usbredir), _out)
    if args.record:
        server.start_recording(args.record)
        _out(f"recording the display to {args.record}")
    try:
        await server.start()
    except OSError:
        await server.close()  # stops the display workers; the caller reports the error
        raise
    for addr in server.addresses:
        _out(f"spiceserver demo listening on {addr}")
    for secure, scheme in ((False, "http"), (True, "https")):
        with contextlib.suppress(ConfigError):
            port = server.port_of(secure=secure)
            if server.config.web_root is not None:
                _out(f"web client: {scheme}://{args.host}:{port}/ (spice-html5 from {server.config.web_root})")
            if server.config.metrics_path is not None:
                _out(f"metrics: {scheme}://{args.host}:{port}{server.config.metrics_path}")
    if args.scene == "av":
        x0, y0, x1, y1 = _video_box(desktop)
        _out(f"av scene: video region {x0},{y0}-{x1},{y1} flashes white once a second"
             + ("" if speaker is None else f", a click written with each flash ({args.av_click_offset_ms:+d} ms)"))
    if speaker is not None:
        speaker.start()
        if args.scene != "av":
            _out("sound: a 2 s tone loop (C5 E5 G5 C6) plays on the speaker; --no-audio turns it off")
    if args.agent:
        _out(f"guest agent: listening on {args.agent} (spice-vdagentd -s {args.agent})")
    if args.usbredir:
        _out(f"usbredir: {args.usbredir} channel(s); a device a client redirects is printed with its descriptors")
    if args.smartcard:
        _out("smartcard: a reader slot is offered; a card a client inserts is printed and asked to SELECT the CAC applet")
    if microphone is not None:
        microphone.start()
        _out("microphone: open; the level a client records is printed once a second")
    sound = (
        loop.create_task(asyncio.to_thread(play_tone_loop, speaker, stop))
        if speaker is not None and args.scene != "av" else None
    )  # fmt: skip

    async def announce_codecs() -> None:
        # until the numba kernels are compiled, images go as LZ4 or raw (codecs/warmup.py)
        if await asyncio.to_thread(warmup.wait, 600):
            _out(f"codec kernels ready ({warmup.seconds() or 0.0:.1f} s)")

    codecs_task = loop.create_task(announce_codecs())
    task = loop.create_task(animation()) if animation is not None else None
    try:
        await server.serve_forever()
    finally:
        stop.set()  # the guest stops first: its I/O writes need the device's worker; so do the sound threads
        codecs_task.cancel()
        writers = [t for t in (sound, task if args.scene == "av" else None) if t is not None]
        if writers:  # the sound threads see ``stop`` within 10 ms: their last frames go before STOP
            await asyncio.wait(writers, timeout=2.0)
        for t in (task, sound):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        if speaker is not None:
            speaker.stop()
        if microphone is not None:
            microphone.stop()


class PcmSink(Protocol):
    """Where the demo writes its sound (``server.add_playback()``, a PlaybackChannel)."""

    def write(self, pcm: bytes) -> None:
        """S16LE stereo 48 kHz PCM, any length."""


class RecordEventLike(Protocol):
    """What :class:`RecordMeter` reads of a record event (``spiceserver.channels.record.RecordEvent``)."""

    @property
    def kind(self) -> str: ...

    @property
    def mode(self) -> str: ...


class RecordMeter:
    """Prints what a client records: a line when it starts and stops, and its level once a second."""

    def __init__(self) -> None:
        self.meter = LevelMeter()

    def on_data(self, pcm: bytes) -> None:
        """Meter the client's PCM (S16LE stereo 48 kHz)."""
        for level in self.meter.feed(pcm):
            _out(f"record level {level:.1f} dBFS")

    def on_event(self, event: RecordEventLike) -> None:
        """A client started (``event.kind == "start"``, with its ``mode``) or stopped recording."""
        if event.kind == "start":
            self.meter.reset()
            _out(f"record start ({event.mode})")
        else:
            _out("record stop")


def play_tone_loop(speaker: PcmSink, stop: threading.Event) -> None:
    """The speaker's thread until ``stop``: the tone loop in real time, 10 ms frames as they fall due."""
    pacer = FramePacer(time.monotonic())
    while not stop.is_set():
        frames = pacer.due(time.monotonic())
        if frames:
            speaker.write(tone_loop(frames.start * FRAME_SAMPLES, len(frames) * FRAME_SAMPLES))
        stop.wait(max(0.0, pacer.wake_at() - time.monotonic()))
    log.info("speaker: %d frames written, %d skipped after stalls", pacer.next - pacer.skipped, pacer.skipped)


def run_av_scene(
    fb: FramebufferDisplay, desktop: SyntheticDesktop, scene: AvScene, speaker: PcmSink | None, stop: threading.Event
) -> None:
    """The A/V scene's thread until ``stop``: each 10 ms, the audio frames due to ``speaker`` (None:
    no sound) and, every 40 ms, the video frame due to ``fb``, one right after the other (the
    click's frame and the flash frame go in the same iteration). The next picture is painted ahead,
    while waiting."""
    x0, y0, x1, y1 = _video_box(desktop)
    screen = desktop.frame(0.0)

    def picture(v: int) -> Any:
        return av_picture(x1 - x0, y1 - y0, v / scene.fps, scene.is_flash(v))

    ahead: tuple[int, Any] | None = None
    scene.start(time.monotonic())
    while not stop.is_set():
        step = scene.step(time.monotonic())
        px = None
        if step.video_frame is not None:
            px = ahead[1] if ahead is not None and ahead[0] == step.video_frame else picture(step.video_frame)
        # the hand-over: audio and video of this instant, back to back
        if step.pcm and speaker is not None:
            speaker.write(step.pcm)
        if px is not None:
            screen[y0:y1, x0:x1] = px
            fb.update(screen, [(x0, y0, x1, y1)])
        following = scene.wake_at()
        upcoming = _next_video(scene)
        if upcoming is not None and (ahead is None or ahead[0] != upcoming):
            ahead = (upcoming, picture(upcoming))
        stop.wait(max(0.0, following - time.monotonic()))
    log.info("av scene: %d audio frames written, %d skipped after stalls", scene.next_audio_frame - scene.skipped, scene.skipped)


def _next_video(scene: AvScene) -> int | None:
    """The video frame that falls due with the scene's next audio frame, if one does."""
    nxt = scene.next_audio_frame
    return nxt // scene.audio_per_video if nxt % scene.audio_per_video == 0 else None


#: frames per second of the video in ``--scene video``
VIDEO_FPS = 25


def _video_box(desktop: SyntheticDesktop) -> tuple[int, int, int, int]:
    w, h = SyntheticGuest.VIDEO_SIZE
    x0, y0 = max(0, desktop.width // 2 - w // 2), max(0, desktop.height // 2 - h // 2)
    return x0, y0, min(desktop.width, x0 + w), min(desktop.height, y0 + h)


async def _play_video(fb: object, desktop: SyntheticDesktop) -> None:
    """The video region of the framebuffer scene, repainted 25 times a second (its own dirty box)."""
    from .framebuffer import FramebufferDisplay

    assert isinstance(fb, FramebufferDisplay)
    x0, y0, x1, y1 = _video_box(desktop)
    screen = desktop.frame(0.0)
    start = time.monotonic()
    k = 0
    while True:
        t = time.monotonic() - start
        desktop.video = await asyncio.to_thread(video_picture, x1 - x0, y1 - y0, t)
        screen[y0:y1, x0:x1] = desktop.video
        fb.update(screen, [(x0, y0, x1, y1)])
        k += 1
        await asyncio.sleep(max(0.0, start + k / VIDEO_FPS - time.monotonic()))


def _run_guest(guest: SyntheticGuest, fps: float, stop: threading.Event, video: bool = False) -> None:
    """The guest's vCPU thread: one animation step per frame until stopped (and, with ``video``,
    a video frame 25 times a second besides)."""
    start = time.monotonic()
    period = 1.0 / max(fps, 0.1)
    next_step = next_video = start
    while not stop.is_set():
        now = time.monotonic()
        try:
            if now >= next_step:
                guest.step(now - start)
                next_step += period
            if video and now >= next_video:
                guest.video_frame(now - start)
                next_video += 1.0 / VIDEO_FPS
        except Exception:
            log.exception("synthetic guest failed")
            return
        wake = min(next_step, next_video) if video else next_step
        stop.wait(max(0.0, wake - time.monotonic()))


#: what the demo puts on the clipboard when a client pastes from it
DEMO_CLIPBOARD_TEXT = "Hello from the spiceserver demo!"


def answer_agent_duties(server: SpiceServer, fb: FramebufferDisplay | None, wanted: DesktopSize, *, static: bool) -> None:
    """Without a guest agent the demo answers the client's clipboard and monitors config itself
    (the host agent): what the client copies is printed, pasting in the client gives
    :data:`DEMO_CLIPBOARD_TEXT`, and a monitors config resizes the framebuffer desktop."""
    clip: Any = None

    async def print_copy(selection: int, types: Sequence[int]) -> None:
        if ClipboardType.UTF8_TEXT in types:
            with contextlib.suppress(Exception):
                text = await clip.request(selection, ClipboardType.UTF8_TEXT)
                _out(f"clipboard: the client copied {text.decode(errors='replace')!r}")

    def paste(selection: int, type_: int) -> bytes | None:
        return DEMO_CLIPBOARD_TEXT.encode() if type_ == ClipboardType.UTF8_TEXT else None

    clip = add_clipboard_handler(server.host_agent, on_grab=print_copy, on_request=paste)
    clip.grab(ClipboardSelection.CLIPBOARD, [ClipboardType.UTF8_TEXT])

    def monitors(config: Sequence[Any]) -> None:
        heads = [m for m in config if m.enabled]
        _out("monitors config: " + ", ".join(f"{m.width}x{m.height}+{m.x}+{m.y}" for m in heads))
        if fb is None or not heads:
            return
        w, h = max(64, heads[0].width & ~3), max(64, heads[0].height)
        if static:
            fb.resize(w, h)
            fb.update(SyntheticDesktop(w, h).frame(0.0))
        else:
            wanted.pending = (w, h)

    add_monitors_config_handler(server.host_agent, monitors)


class DesktopSize:
    """A size the client asked for (its monitors config), applied by the animation between frames."""

    def __init__(self) -> None:
        self.pending: tuple[int, int] | None = None


async def _animate(fb: object, desktop: SyntheticDesktop, fps: float, *, video: bool = False, size: DesktopSize | None = None) -> None:
    from .framebuffer import FramebufferDisplay

    assert isinstance(fb, FramebufferDisplay)
    if video:
        asyncio.get_running_loop().create_task(_play_video(fb, desktop))
    start = time.monotonic()
    period = 1.0 / max(fps, 0.1)
    while True:
        if size is not None and size.pending is not None and not video:
            (w, h), size.pending = size.pending, None
            desktop = SyntheticDesktop(w, h)
            fb.resize(w, h)
        t = time.monotonic() - start
        frame = await asyncio.to_thread(desktop.frame, t)
        if video and desktop.video is not None:
            x0, y0, x1, y1 = _video_box(desktop)
            frame[y0:y1, x0:x1] = desktop.video
        fb.update(frame)
        x = int(desktop.width / 2 + desktop.width / 3 * math.cos(t))
        y = int(desktop.height / 2 + desktop.height / 3 * math.sin(t * 1.3))
        fb.move_cursor(x, y)
        await asyncio.sleep(max(0.0, period - (time.monotonic() - start - t)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo server with ``argv`` until interrupted; returns the exit status."""
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        check_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run(config, args))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # e.g. the port is taken
        print(f"error: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0
