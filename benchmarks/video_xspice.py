"""Video, reference figures: what libspice (Xspice) sends for the video scene of ``video.py``, PSNR included.

The scene of issue 11 (``benchmarks/video.py`` :class:`Scene`): a 640x360 region in the middle of a
1920x1080 screen (``--size 1920x1080``: the whole screen) repainted at 25 fps for ``--seconds`` with a
panning crop of ``../shared/images/photo_1080.png``, the rest the static desktop picture. Here the
server is Xspice (Debian ``xserver-xspice``: Xorg + the spiceqxl driver linked with libspice-server,
``--streaming-video filter`` by default), the screen 1920x1080, and the painter an X11 client in a
thread of this process (libX11 through ctypes: the desktop, then frame ``k`` at ``t0 + k / 25``). The
qxl driver turns each X request that draws into an opaque DRAW_COPY of a fresh bitmap
(xf86-video-qxl ``src/qxl_surface.c`` / ``qxl_image.c``), which libspice's stream detection sees
(spice ``server/video-stream.cpp``). ``--put put`` (default) paints with ``XPutImage``, which libX11
(``PutImage.c``) cuts into requests of at most 256 KiB even with BIG-REQUESTS: a 640x360 frame reaches
the server as three bands of 102 rows and one of 54, so libspice sees four regions and makes four
streams (a 1920x1080 frame: 32 bands, 34 rows high but the last 26). ``--put shm`` paints with ``XShmPutImage``
(MIT-SHM, one request, as a video player without Xv or GL output draws): one DRAW_COPY of the whole
region per frame, one stream, as ``video.py``'s QXL path sends it to spiceserver.

The client is spice-gtk (``tests/interop/gi_client.py``), so flow control and STREAM_REPORTs are
real. It connects through a TCP relay in this process that parses both directions of every channel
with :mod:`spiceserver.proto` (link, then the data messages) and keeps the display channel's
messages with their arrival times: STREAM_CREATE / STREAM_DATA / STREAM_DATA_SIZED / STREAM_CLIP /
STREAM_DESTROY, the image draws, and the client's STREAM_REPORTs.

Reported: source frames streamed per second (their STREAM_DATA messages: one per band) and shown by
spice-gtk (the invalidated area inside the region over the region's area, as ``video.py`` counts
it), display channel bytes server->client, mean bitrate and steady bitrate (from 1 s after the
stream started to the last frame), the CPU seconds of the Xorg process (``/proc/PID/stat`` utime +
stime over the run: the X server, the driver and libspice's worker together), the JPEG quality of
the frames (each frame's luminance DQT table matched against libjpeg's ``jpeg_set_quality`` scaling
of the standard table), the PSNR on RGB (mean and min over frames) of each frame decoded as spice-
gtk decodes it (libjpeg ``JDCT_IFAST``, no fancy upsampling: ``channel-display-mjpeg.c``; and with
libjpeg's defaults) against its source frame (the frame ``k`` found by best match near the stream's
previous one; a frame cut in bands is measured over all of them), and what libspice did before the
stream started: the image draws by codec and bytes, the video frames sent as images, and the time
from the first frame painted to STREAM_CREATE.

Run: ``python benchmarks/video_xspice.py [--seconds 10] [--size 640x360|1920x1080] [--put put|shm]
[--streaming-video filter|all|off]``. Skips (exit status 0, a message) when Xspice or spice-gtk's
GObject bindings are absent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import math
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import simplejpeg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from video import FPS, SH, SW, Scene  # noqa: E402  # benchmarks/video.py (this script's folder is on sys.path)

from spiceserver.errors import ProtocolError, SpiceError  # noqa: E402
from spiceserver.proto.enums import ChannelType, CommonCap, ImageType  # noqa: E402
from spiceserver.proto.link import HEADER, LinkMess, LinkReply, has_cap  # noqa: E402
from spiceserver.proto.messages import display as d  # noqa: E402
from spiceserver.proto.messages.base import CLIENT, SERVER, Message, parse_body  # noqa: E402
from spiceserver.proto.wire import Framer  # noqa: E402
from tests.interop.harness import GiClient, gi_client_skip_reason  # noqa: E402
from tests.interop.test_harness_xspice import (  # noqa: E402
    XSPICE,
    XSPICE_DEADLINE,
    XspiceExited,
    _children,
    _free_display,
    _free_port,
    _stop_xspice,
    _wait_port,
    _xspice_skip_reason,
)
from tests.support.xspice import XORG_CONF  # noqa: E402

# ----------------------------------------------------------------------------- Xspice


def xorg_conf() -> str:
    """tests/support/xspice.py's configuration with a 1920x1080 screen (depth 24)."""
    device = '    Device     "XSPICE"\n'
    assert device in XORG_CONF
    display = (
        f"{device}    DefaultDepth 24\n"
        '    SubSection "Display"\n'
        "        Depth 24\n"
        f"        Virtual {SW} {SH}\n"
        f'        Modes "{SW}x{SH}"\n'
        "    EndSubSection\n"
    )
    return XORG_CONF.replace(device, display)


@dataclass
class Xspice:
    proc: subprocess.Popen[bytes]
    display: int
    port: int
    xorg_pid: int
    log: Path


@contextlib.contextmanager
def xspice(work: Path, streaming_video: str) -> Any:
    """An Xspice listening on 127.0.0.1 (no ticket), stopped by PID at the end."""
    conf = work / "xorg.conf"
    conf.write_text(xorg_conf())
    log = work / "xorg.log"
    for attempt in range(3):  # display and port are free when chosen, not necessarily when Xspice binds
        port, display = _free_port(), _free_display()
        argv = [
            XSPICE, "--config", str(conf), "--port", str(port), "--disable-ticketing",
            "--streaming-video", streaming_video, "-logfile", str(log), f":{display}",
        ]  # fmt: skip
        out = open(work / "xspice.out", "wb")  # noqa: SIM115 - closed in finally
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            _wait_port(proc, port, XSPICE_DEADLINE, log)
            break
        except XspiceExited:
            _stop_xspice(proc, display)
            out.close()
            if attempt == 2:
                raise
        except BaseException:
            _stop_xspice(proc, display)
            out.close()
            raise
    try:
        xorg = _children(proc.pid)
        if len(xorg) != 1:
            raise RuntimeError(f"expected one Xorg child of the Xspice wrapper, found {xorg}")
        yield Xspice(proc, display, port, xorg[0], log)
    finally:
        _stop_xspice(proc, display)
        out.close()


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), from /proc/PID/stat (proc(5) fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- the X11 painter

ZPIXMAP = 2
IPC_PRIVATE, IPC_CREAT, IPC_RMID = 0, 0o1000, 0


class ShmSegmentInfo(ctypes.Structure):
    """``XShmSegmentInfo`` (X11/extensions/XShm.h)."""

    _fields_ = [
        ("shmseg", ctypes.c_ulong),
        ("shmid", ctypes.c_int),
        ("shmaddr", ctypes.c_void_p),
        ("readOnly", ctypes.c_int),
    ]


def _lib(name: str) -> ctypes.CDLL:
    path = ctypes.util.find_library(name)
    if path is None:
        raise RuntimeError(f"lib{name} not found")
    return ctypes.CDLL(path, use_errno=True)


def _sig(lib: ctypes.CDLL, fn: str, restype: Any, *argtypes: Any) -> None:
    getattr(lib, fn).restype = restype
    getattr(lib, fn).argtypes = list(argtypes)


P, INT, UINT, ULONG = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint, ctypes.c_ulong


class Painter:
    """An X11 client (libX11 through ctypes) that puts 0x00RRGGBB pictures on the root window.

    ``put``: an ``XPutImage`` per picture (libX11 cuts it into requests of at most 256 KiB, each a
    DRAW_COPY). ``shm``: one ``XShmPutImage`` (MIT-SHM) per picture, one request, one DRAW_COPY.
    Each put ends with an ``XSync`` (the server has read the pixels).
    """

    def __init__(self, display: int, mode: str) -> None:
        x = self.x = _lib("X11")
        _sig(x, "XOpenDisplay", P, ctypes.c_char_p)
        for fn in ("XDefaultScreen",):
            _sig(x, fn, INT, P)
        for fn in ("XDisplayWidth", "XDisplayHeight", "XDefaultDepth"):
            _sig(x, fn, INT, P, INT)
        _sig(x, "XRootWindow", ULONG, P, INT)
        _sig(x, "XDefaultVisual", P, P, INT)
        _sig(x, "XDefaultGC", P, P, INT)
        _sig(x, "XCreateImage", P, P, P, UINT, INT, INT, P, UINT, UINT, INT, INT)
        _sig(x, "XPutImage", INT, P, ULONG, P, P, INT, INT, INT, INT, UINT, UINT)
        _sig(x, "XSync", INT, P, INT)
        _sig(x, "XCloseDisplay", INT, P)
        self.mode = mode
        self.dpy = x.XOpenDisplay(f":{display}".encode())
        if not self.dpy:
            raise RuntimeError(f"cannot open X display :{display}")
        scr = x.XDefaultScreen(self.dpy)
        self.size = (x.XDisplayWidth(self.dpy, scr), x.XDisplayHeight(self.dpy, scr))
        self.depth = x.XDefaultDepth(self.dpy, scr)
        self.root = x.XRootWindow(self.dpy, scr)
        self.visual = x.XDefaultVisual(self.dpy, scr)
        self.gc = x.XDefaultGC(self.dpy, scr)
        if mode == "shm":
            xext, libc = self.xext, self.libc = _lib("Xext"), _lib("c")
            _sig(xext, "XShmQueryExtension", INT, P)
            _sig(xext, "XShmCreateImage", P, P, P, UINT, INT, P, ctypes.POINTER(ShmSegmentInfo), UINT, UINT)
            _sig(xext, "XShmAttach", INT, P, ctypes.POINTER(ShmSegmentInfo))
            _sig(xext, "XShmDetach", INT, P, ctypes.POINTER(ShmSegmentInfo))
            _sig(xext, "XShmPutImage", INT, P, ULONG, P, P, INT, INT, INT, INT, UINT, UINT, INT)
            _sig(libc, "shmget", INT, INT, ctypes.c_size_t, INT)
            _sig(libc, "shmat", P, INT, P, INT)
            _sig(libc, "shmdt", INT, P)
            _sig(libc, "shmctl", INT, INT, INT, P)
            if not xext.XShmQueryExtension(self.dpy):
                raise RuntimeError("the X server has no MIT-SHM")
        # one XImage per size over a buffer of ours (never XDestroyImage'd: it would free the buffer)
        self._images: dict[tuple[int, int], tuple[int, np.ndarray, ShmSegmentInfo | None]] = {}

    def _image(self, w: int, h: int) -> tuple[int, np.ndarray, ShmSegmentInfo | None]:
        if (w, h) in self._images:
            return self._images[(w, h)]
        if self.mode == "put":
            buf = np.zeros((h, w), dtype=np.uint32)
            img = self.x.XCreateImage(self.dpy, self.visual, self.depth, ZPIXMAP, 0, buf.ctypes.data, w, h, 32, w * 4)
            info = None
        else:
            info = ShmSegmentInfo()
            info.shmid = self.libc.shmget(IPC_PRIVATE, w * h * 4, IPC_CREAT | 0o600)
            if info.shmid < 0:
                raise OSError(ctypes.get_errno(), "shmget")
            info.shmaddr = self.libc.shmat(info.shmid, None, 0)
            if info.shmaddr in (None, ctypes.c_void_p(-1).value):
                raise OSError(ctypes.get_errno(), "shmat")
            info.readOnly = 1
            img = self.xext.XShmCreateImage(
                self.dpy, self.visual, self.depth, ZPIXMAP, info.shmaddr, ctypes.byref(info), w, h
            )
            if not self.xext.XShmAttach(self.dpy, ctypes.byref(info)):
                raise RuntimeError("XShmAttach failed")
            self.x.XSync(self.dpy, 0)
            self.libc.shmctl(info.shmid, IPC_RMID, None)  # gone once both sides detach
            buf = np.ctypeslib.as_array((ctypes.c_uint32 * (w * h)).from_address(info.shmaddr)).reshape(h, w)
        if not img:
            raise RuntimeError("could not create an XImage")
        self._images[(w, h)] = (img, buf, info)
        return img, buf, info

    def put(self, px: np.ndarray, x: int, y: int) -> None:
        h, w = px.shape
        img, buf, info = self._image(w, h)
        buf[:] = px
        if info is None:
            self.x.XPutImage(self.dpy, self.root, self.gc, img, 0, 0, x, y, w, h)
        else:
            self.xext.XShmPutImage(self.dpy, self.root, self.gc, img, 0, 0, x, y, w, h, 0)
        self.x.XSync(self.dpy, 0)

    def close(self) -> None:
        for _img, _buf, info in self._images.values():
            if info is not None:
                self.xext.XShmDetach(self.dpy, ctypes.byref(info))
        self.x.XSync(self.dpy, 0)
        for _img, _buf, info in self._images.values():
            if info is not None:
                self.libc.shmdt(info.shmaddr)
        self._images.clear()
        self.x.XCloseDisplay(self.dpy)


def play(painter: Painter, scene: Scene, n: int, t0: float, put_times: list[float]) -> None:
    """Frames 0..n-1 of the scene at ``t0 + k / FPS`` (a late frame is put at once, none skipped)."""
    for k in range(n):
        time.sleep(max(0.0, t0 + k / FPS - time.perf_counter()))
        painter.put(np.ascontiguousarray(scene.frame(k)), scene.x, scene.y)
        put_times.append(time.perf_counter())


# ----------------------------------------------------------------------------- the relay


@dataclass
class Record:
    """One data message of the display channel with its arrival time at the relay."""

    t: float
    type: int
    body: bytes


@dataclass
class Direction:
    """One direction of one relayed connection: link, then (after the ticket) framed messages."""

    from_client: bool
    buf: bytearray = field(default_factory=bytearray)
    stage: str = "link"  # link -> auth (client: mechanism + ticket; server: link result) -> data
    auth_left: int = 0
    framer: Framer | None = None


class Connection:
    """A relayed channel connection. Parses the link messages, then frames the data messages of both
    directions; those of the display channel are kept, with their arrival times, in the relay."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.channel_type: int | None = None
        self.client_caps: tuple[int, ...] = ()
        self.server_caps: tuple[int, ...] = ()
        self.c2s = Direction(True)
        self.s2c = Direction(False)

    def _both(self, cap: int) -> bool:
        return has_cap(self.client_caps, cap) and has_cap(self.server_caps, cap)

    def feed(self, way: Direction, data: bytes, now: float) -> None:
        if self.channel_type == ChannelType.DISPLAY and not way.from_client:
            self.relay.display_bytes.append((now, len(data)))
        way.buf += data
        while True:
            if way.stage == "link":
                if len(way.buf) < HEADER.size:
                    return
                size = HEADER.unpack_from(way.buf)[3]
                if len(way.buf) < HEADER.size + size:
                    return
                body = bytes(way.buf[HEADER.size : HEADER.size + size])
                del way.buf[: HEADER.size + size]
                if way.from_client:
                    mess = LinkMess.parse(body)
                    self.channel_type = mess.channel_type
                    self.client_caps = mess.common_caps
                    way.stage = "wait-reply"
                else:
                    reply = LinkReply.parse(body)
                    self.server_caps = reply.common_caps
                    way.stage, way.auth_left = "auth", 4  # the link result (u32)
                    # the client's answer: an auth mechanism word when both select, then the ticket
                    other = self.c2s
                    other.stage = "auth"
                    other.auth_left = 128 + (4 if self._both(CommonCap.PROTOCOL_AUTH_SELECTION) else 0)
            elif way.stage == "wait-reply":
                return
            elif way.stage == "broken":  # relayed, no longer parsed
                way.buf.clear()
                return
            elif way.stage == "auth":
                take = min(way.auth_left, len(way.buf))
                del way.buf[:take]
                way.auth_left -= take
                if way.auth_left:
                    return
                way.stage = "data"
                way.framer = Framer(self._both(CommonCap.MINI_HEADER), max_size=1 << 28)
            else:
                assert way.framer is not None
                if self.channel_type == ChannelType.DISPLAY:
                    out = self.relay.display_c2s if way.from_client else self.relay.display_s2c
                    out.extend(Record(now, m.type, m.body) for m in way.framer.feed(bytes(way.buf)))
                way.buf.clear()
                return


class Relay:
    """127.0.0.1:``port`` forwarded to ``target``; see :class:`Connection` for what is kept."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.display_s2c: list[Record] = []
        self.display_c2s: list[Record] = []
        self.display_bytes: list[tuple[float, int]] = []  # (arrival, bytes) server->client
        self.errors: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening, close every relayed connection and wait for their pumps to end."""
        if self._server is not None:
            self._server.close()
        for w in self._writers:
            w.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(cw)
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            cw.close()
            return
        self._writers.add(sw)
        conn = Connection(self)
        try:
            await asyncio.gather(self._pump(cr, sw, conn, conn.c2s), self._pump(sr, cw, conn, conn.s2c))
        finally:
            for w in (cw, sw):
                w.close()
                self._writers.discard(w)
            self._tasks.discard(task)

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, conn: Connection, way: Direction) -> None:
        try:
            while data := await r.read(1 << 16):
                try:
                    conn.feed(way, data, time.perf_counter())
                except SpiceError as exc:  # keep relaying; the figures will say what is missing
                    self.errors.append(f"channel {conn.channel_type}: {exc}")
                    way.stage, way.framer = "broken", None
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                w.write_eof()


# ----------------------------------------------------------------------------- analysis

# libjpeg jcparam.c: the standard luminance table (ITU T.81 Annex K), natural order
STD_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
     14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
)  # fmt: skip
ZIGZAG = np.array(
    [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6,
     7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31,
     39, 46, 53, 60, 61, 54, 47, 55, 62, 63],
)  # fmt: skip


def quality_tables() -> dict[int, np.ndarray]:
    """Quality 1..100 -> the luminance table ``jpeg_set_quality(q, force_baseline=TRUE)`` writes, zigzag order."""
    out = {}
    for q in range(1, 101):
        scale = 5000 // q if q < 50 else 200 - 2 * q
        table = np.minimum(np.maximum((STD_LUMA * scale + 50) // 100, 1), 255)
        out[q] = table[ZIGZAG]
    return out


QUALITY_TABLES = quality_tables()


def jpeg_quality(jpeg: bytes) -> int | None:
    """The libjpeg quality whose luminance table (DQT id 0) this JPEG carries (nearest if none exactly)."""
    at = 2
    while at + 4 <= len(jpeg) and jpeg[at] == 0xFF:
        marker, length = jpeg[at + 1], struct.unpack_from(">H", jpeg, at + 2)[0]
        if marker == 0xDA:  # start of scan: no DQT after it in a baseline frame
            return None
        if marker == 0xDB:
            p = at + 4
            while p < at + 2 + length:
                pq, tq = jpeg[p] >> 4, jpeg[p] & 15
                n = 128 if pq else 64
                values = (
                    np.frombuffer(jpeg, ">u2", 64, p + 1) if pq else np.frombuffer(jpeg, np.uint8, 64, p + 1)
                ).astype(np.int64)
                if tq == 0:
                    return min(QUALITY_TABLES, key=lambda q: int(np.abs(QUALITY_TABLES[q] - values).sum()))
                p += 1 + n
        at += 2 + length
    return None


def rgb(px: np.ndarray) -> np.ndarray:
    """(h, w) 0x00RRGGBB -> (h, w, 3) uint8."""
    return np.stack([(px >> 16) & 255, (px >> 8) & 255, px & 255], axis=-1).astype(np.uint8)


def db(mse: float) -> float:
    """PSNR in dB of 8-bit samples with this mean squared error (99 for identical pictures)."""
    return 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


class Sources:
    """The source pixels of frame ``k`` inside a screen rectangle (the desktop around the region)."""

    def __init__(self, scene: Scene, n: int) -> None:
        self.scene, self.n = scene, n
        self._small: dict[tuple[int, tuple[int, int, int, int]], np.ndarray] = {}

    def crop(self, k: int, box: tuple[int, int, int, int]) -> np.ndarray:
        s = self.scene
        left, top, right, bottom = box
        if s.x <= left and s.y <= top and right <= s.x + s.w and bottom <= s.y + s.h:
            px = s.frame(k)[top - s.y : bottom - s.y, left - s.x : right - s.x]
        else:
            screen = s.desktop.copy()
            screen[s.y : s.y + s.h, s.x : s.x + s.w] = s.frame(k)
            px = screen[top:bottom, left:right]
        return rgb(px)

    def small(self, k: int, box: tuple[int, int, int, int]) -> np.ndarray:
        key = (k, box)
        if key not in self._small:
            self._small[key] = self.crop(k, box)[::4, ::4].astype(np.float32)
        return self._small[key]

    def best(self, picture: np.ndarray, box: tuple[int, int, int, int], around: int | None) -> int:
        """The frame index whose pixels in ``box`` are nearest ``picture`` (searched near ``around``)."""
        candidates = range(self.n) if around is None else range(max(0, around - 2), min(self.n, around + 40))
        small = picture[::4, ::4].astype(np.float32)
        return min(candidates, key=lambda k: float(np.mean((self.small(k, box) - small) ** 2)))

    def forget(self, before: int) -> None:
        """Drop the cached candidates of frames before ``before`` (no stream goes back to them)."""
        for key in [key for key in self._small if key[0] < before]:
            del self._small[key]


@dataclass
class StreamFrame:
    t: float
    stream: int
    mm_time: int
    box: tuple[int, int, int, int]
    jpeg: bytes
    size: int  # the message body


def analyse(
    relay: Relay, scene: Scene, n: int, t0: float, t_last: float, t_end: float, seconds: float
) -> dict[str, Any]:
    """Everything the display channel carried from ``t0`` (the first frame painted) to ``t_end``
    (``t_last``: the last frame painted)."""
    creates: dict[int, d.StreamCreate] = {}
    frames: list[StreamFrame] = []
    kinds: Counter[str] = Counter()
    images: Counter[str] = Counter()
    image_bytes: Counter[str] = Counter()
    before: Counter[str] = Counter()  # image draws before the first STREAM_CREATE
    before_bytes = 0
    draws: list[tuple[float, str]] = []
    create_at: float | None = None
    stream_bytes = 0
    undecoded = 0
    for rec in relay.display_s2c:
        if not t0 <= rec.t <= t_end:
            continue
        try:
            msg: Message = parse_body(ChannelType.DISPLAY, SERVER, rec.type, rec.body)
        except ProtocolError:
            kinds[f"unparsed {rec.type}"] += 1
            undecoded += 1
            continue
        name = type(msg).__name__
        kinds[name] += 1
        if isinstance(msg, d.StreamCreate):
            creates[msg.id] = msg
            create_at = rec.t if create_at is None else create_at
        elif isinstance(msg, d.StreamData | d.StreamDataSized):
            stream_bytes += len(rec.body) + 6
            c = creates.get(msg.base.id)
            if isinstance(msg, d.StreamDataSized):
                box = (msg.dest.left, msg.dest.top, msg.dest.right, msg.dest.bottom)
            elif c is not None:
                box = (c.dest.left, c.dest.top, c.dest.right, c.dest.bottom)
            else:
                continue
            frames.append(StreamFrame(rec.t, msg.base.id, msg.base.multi_media_time, box, msg.data, len(rec.body)))
        elif name.startswith("Draw"):
            src = getattr(getattr(msg, "data", None), "src_bitmap", None)
            desc = getattr(src, "descriptor", None)
            codec = ImageType(desc.type).name if desc is not None and desc.type in ImageType._value2member_map_ else "-"
            key = f"{name}/{codec}"
            images[key] += 1
            image_bytes[key] += len(rec.body) + 6
            draws.append((rec.t, key))
            if create_at is None:
                before[key] += 1
                before_bytes += len(rec.body) + 6

    # decode as spice-gtk does, match each frame with its source; a source frame may come as several
    # streams (the driver cuts a large XPutImage into bands): its PSNR is over all of its bands
    sources = Sources(scene, n)
    psnrs: list[float] = []  # per stream message
    ks: list[int] = []
    err: dict[int, list[float]] = {}  # k -> [squared error sum, samples, pixels, same with libjpeg's defaults]
    qualities: Counter[int] = Counter()
    last: dict[int, int] = {}  # stream id -> the source frame of its previous message
    for fr in frames:
        q = jpeg_quality(fr.jpeg)
        if q is not None:
            qualities[q] += 1
        try:
            picture = simplejpeg.decode_jpeg(fr.jpeg, colorspace="RGB", fastdct=True, fastupsample=True)
        except ValueError:
            undecoded += 1
            continue
        c = creates.get(fr.stream)
        if c is not None and not c.flags & 1:  # not TOP_DOWN: the client flips the picture
            picture = picture[::-1]
        left, top, right, bottom = fr.box
        if picture.shape[:2] != (bottom - top, right - left):
            undecoded += 1  # a scaled stream: not compared
            continue
        k = sources.best(picture, fr.box, last.get(fr.stream, min(last.values(), default=None)))
        last[fr.stream] = k
        sources.forget(min(last.values()) - 2)
        ks.append(k)
        diff = picture.astype(np.float32) - sources.crop(k, fr.box).astype(np.float32)
        se = float(np.sum(diff * diff))
        psnrs.append(db(se / diff.size))
        # libjpeg's defaults (JDCT_ISLOW, fancy upsampling), for decoders other than spice-gtk's
        exact = simplejpeg.decode_jpeg(fr.jpeg, colorspace="RGB")
        exact = exact[::-1] if c is not None and not c.flags & 1 else exact
        diff = exact.astype(np.float32) - sources.crop(k, fr.box).astype(np.float32)
        acc = err.setdefault(k, [0.0, 0.0, 0.0, 0.0])
        acc[0] += se
        acc[1] += diff.size
        acc[2] += picture.shape[0] * picture.shape[1]
        acc[3] += float(np.sum(diff * diff))
    region = scene.w * scene.h
    frame_psnr = {k: db(acc[0] / acc[1]) for k, acc in err.items()}
    whole = {k: v for k, v in frame_psnr.items() if err[k][2] >= region}
    exact_psnr = {k: db(acc[3] / acc[1]) for k, acc in err.items() if k in whole or not whole}

    # bytes and bitrates
    total = sum(b for t, b in relay.display_bytes if t0 <= t <= t_end)
    first_frame = frames[0].t if frames else None
    last_frame = frames[-1].t if frames else None
    # steady: from 1 s after the first stream frame (no stream: after the first frame painted) to the
    # last stream frame (no stream: the last frame painted)
    a, b = (first_frame if first_frame is not None else t0) + 1.0, last_frame if last_frame is not None else t_last
    steady_bps = sum(n for t, n in relay.display_bytes if a <= t <= b) * 8 / (b - a) if b - a > 0.5 else 0.0
    # after the last stream frame: what libspice sends when the stream ends (a lossless upgrade)
    after = Counter(key for t, key in draws if last_frame is not None and t > last_frame)
    reports = []
    for rec in relay.display_c2s:
        if rec.type == d.StreamReport.TYPE and t0 <= rec.t <= t_end + 5:
            with contextlib.suppress(ProtocolError):
                msg = parse_body(ChannelType.DISPLAY, CLIENT, rec.type, rec.body)
                reports.append(msg)
    return {
        "kinds": kinds,
        "creates": list(creates.values()),
        "create_after": None if create_at is None else create_at - t0,
        "streamed": len(frames),
        "stream_bytes": stream_bytes,
        "images": images,
        "image_bytes": image_bytes,
        "before": before,
        "before_bytes": before_bytes,
        "bytes": total,
        "mean_bps": total * 8 / seconds,
        "steady_bps": steady_bps,
        "psnr": psnrs,
        "frame_psnr": frame_psnr,
        "whole_psnr": whole,
        "exact_psnr": exact_psnr,
        "ks": ks,
        "streams": Counter(fr.stream for fr in frames),
        "qualities": qualities,
        "undecoded": undecoded,
        "reports": reports,
        "frame_sizes": [fr.size for fr in frames],
        "first_frame_at": first_frame or 0.0,
        "last_frame_at": last_frame or 0.0,
        "after": after,
    }


# ----------------------------------------------------------------------------- the run


def region_area(events: list[dict[str, Any]], box: tuple[int, int, int, int]) -> int:
    area = 0
    for ev in events:
        if ev.get("event") == "display-invalidate":
            w = min(ev["x"] + ev["w"], box[2]) - max(ev["x"], box[0])
            h = min(ev["y"] + ev["h"], box[3]) - max(ev["y"], box[1])
            area += max(0, w) * max(0, h)
    return area


async def quiet(relay: Relay, for_s: float, timeout: float) -> None:
    """Until the display channel has carried nothing server->client for ``for_s`` (or ``timeout``)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        last = relay.display_bytes[-1][0] if relay.display_bytes else 0.0
        if time.perf_counter() - last >= for_s:
            return
        await asyncio.sleep(0.05)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    scene = Scene(args.width, args.height)
    box = (scene.x, scene.y, scene.x + scene.w, scene.y + scene.h)
    n = int(args.seconds * FPS)
    with tempfile.TemporaryDirectory(prefix="video-xspice-") as tmp, xspice(Path(tmp), args.streaming_video) as xs:
        relay = Relay(xs.port)
        await relay.start()
        painter = await asyncio.to_thread(Painter, xs.display, args.put)
        if painter.size != (SW, SH) or painter.depth != 24:
            raise RuntimeError(f"Xspice screen is {painter.size} depth {painter.depth}, want {SW}x{SH} depth 24")
        client = await GiClient.start(
            "--port", str(relay.port), "--wait-display", "--max-invalidates", "100000000",
            "--linger-ms", "600000", "--timeout", "3600",
        )  # fmt: skip
        try:
            await client.expect("ready", timeout=60)
            # the desktop, then the client has shown all of it
            start = len(client.events)
            await asyncio.to_thread(painter.put, scene.desktop, 0, 0)
            deadline = time.perf_counter() + 60
            while region_area(client.events[start:], (0, 0, SW, SH)) < SW * SH:
                if time.perf_counter() > deadline:
                    raise TimeoutError("the desktop did not reach spice-gtk")
                await asyncio.sleep(0.02)
            await quiet(relay, 1.0, 30)
            start = len(client.events)
            put_times: list[float] = []
            cpu0 = cpu_seconds(xs.xorg_pid)
            t0 = time.perf_counter()
            await asyncio.to_thread(play, painter, scene, n, t0, put_times)
            t_last = time.perf_counter()
            cpu_play = cpu_seconds(xs.xorg_pid) - cpu0
            await asyncio.sleep(max(0.0, t0 + n / FPS - time.perf_counter()) + 0.3)
            t_play = time.perf_counter()  # the frames painted, the last ones delivered
            cpu_play_end = cpu_seconds(xs.xorg_pid) - cpu0
            bytes_play = sum(b for t, b in relay.display_bytes if t0 <= t <= t_play)
            # the stream times out (1 s without frames) and libspice sends the area losslessly
            await asyncio.sleep(1.5)
            await quiet(relay, 0.5, 10)
            t_end = time.perf_counter()
            cpu_all = cpu_seconds(xs.xorg_pid) - cpu0
            events = client.events[start:]
        finally:
            client.kill()
            await client.wait(10)
            painter.close()
            await relay.close()
    shown_area = region_area([ev for ev in events if ev.get("t", 0) >= 0], box)
    result = analyse(relay, scene, n, t0, t_last, t_end, args.seconds)
    result.update(
        args=args,
        frames=n,
        paint_s=t_last - t0,
        late_puts=sum(1 for k, t in enumerate(put_times) if t - (t0 + k / FPS) > 1 / FPS),
        cpu_play=cpu_play,
        cpu_play_end=cpu_play_end,
        cpu_all=cpu_all,
        bytes_play=bytes_play,
        tail_s=t_end - t_play,
        fps_shown=shown_area / (scene.w * scene.h) / args.seconds,
        relay_errors=relay.errors,
    )
    return result


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def show(r: dict[str, Any]) -> None:
    a = r["args"]
    s = a.seconds
    print(
        f"scene: {a.width}x{a.height} region of a {SW}x{SH} screen at {FPS} fps for {s:g} s ({r['frames']} frames), "
        f"Xspice streaming-video={a.streaming_video}, {'XShmPutImage' if a.put == 'shm' else 'XPutImage'}, client spice-gtk"
    )
    print(f"  painting: {r['paint_s']:.2f} s for {r['frames']} puts (each + XSync), {r['late_puts']} over a frame late")
    creates = r["creates"]
    for i, c in enumerate(creates):
        if i == 2 and len(creates) > 4:
            print(f"  ... {len(creates) - 3} more STREAM_CREATEs ...")
        if 2 <= i < len(creates) - 1 and len(creates) > 4:
            continue
        codec = {1: "MJPEG", 2: "VP8", 3: "H264", 4: "VP9", 5: "H265"}.get(c.codec_type, str(c.codec_type))
        print(
            f"  STREAM_CREATE id {c.id}: {codec}, src {c.src_width}x{c.src_height}, dest "
            f"({c.dest.left},{c.dest.top})-({c.dest.right},{c.dest.bottom}), flags {c.flags} "
            f"({'top-down' if c.flags & 1 else 'bottom-up'})"
        )
    after = r["create_after"]
    print(
        f"  detection: STREAM_CREATE {after:.3f} s after the first frame was painted; before it: "
        f"{dict(r['before'])} ({mb(r['before_bytes'])})"
        if after is not None
        else "  detection: no stream"
    )
    ks = r["ks"]
    whole = r["whole_psnr"]
    if ks:
        first, last = min(ks), max(ks)
        missing = sorted(set(range(first, last + 1)) - set(ks))
        span = r["last_frame_at"] - r["first_frame_at"]
        print(f"  first streamed frame: k={first} (frames 0..{first - 1} came before the stream); last k={last}")
        print(
            f"  frames streamed: {len(set(ks))} source frames ({len(set(ks)) / s:.1f} /s over the run, "
            f"{(len(set(ks)) - 1) / span if span > 0 else 0:.1f} /s from the first stream frame to the last; "
            f"{len(whole)} with every pixel of the region), in {r['streamed']} stream messages over "
            f"{len(r['streams'])} stream(s) {dict(r['streams'])}; not streamed between k={first} and k={last}: "
            f"{len(missing)}"
        )
    print(f"  frames shown by spice-gtk: {r['fps_shown']:.1f} /s (invalidated area in the region / its area / {s:g} s)")
    print(
        f"  display bytes server->client: {mb(r['bytes_play'])} while playing (to the last frame + 0.3 s, "
        f"{r['bytes_play'] * 8 / s / 1e6:.1f} Mbit/s over {s:g} s); {mb(r['bytes'])} with the end "
        f"(stream timeout and what follows, {r['tail_s']:.1f} s more)"
    )
    print(
        f"  of which stream data {mb(r['stream_bytes'])} (mean frame {np.mean(r['frame_sizes']) / 1e3 if r['frame_sizes'] else 0:.1f} kB); "
        f"steady bitrate (1 s after the first stream frame to the last; no stream: the frames painted) "
        f"{r['steady_bps'] / 1e6:.1f} Mbit/s"
    )
    print(
        f"  Xorg CPU: {r['cpu_play']:.2f} s painting, {r['cpu_play_end']:.2f} s to the last frame + 0.3 s, "
        f"{r['cpu_all']:.2f} s with the end"
    )
    q = r["qualities"]
    if q:
        print(f"  JPEG quality (luma DQT): {min(q)}..{max(q)}; frames by quality {dict(sorted(q.items()))}")
    p = r["psnr"]
    if p:
        w = list(whole.values()) or list(r["frame_psnr"].values())
        print(
            f"  PSNR (RGB, decoded as spice-gtk decodes, vs the source frame): per frame (all its bands) mean "
            f"{np.mean(w):.2f} dB, min {min(w):.2f} dB, median {np.median(w):.2f} dB over {len(w)} frames; "
            f"per stream message mean {np.mean(p):.2f} dB, min {min(p):.2f} dB"
        )
        e = list(r["exact_psnr"].values())
        print(
            f"    decoded with libjpeg's defaults (ISLOW, fancy upsampling): mean {np.mean(e):.2f} dB, min {min(e):.2f} dB"
        )
    if r["undecoded"]:
        print(f"  frames/messages not compared or not parsed: {r['undecoded']}")
    print(f"  image draws during the run: {dict(r['images'])} ({mb(sum(r['image_bytes'].values()))})")
    print(f"  display messages: {dict(r['kinds'])}")
    print(f"  image draws after the last stream frame: {dict(r['after']) or 'none'}")
    reps = r["reports"]
    if reps:
        last = reps[-1]
        print(
            f"  client STREAM_REPORTs: {len(reps)}, {sum(m.num_frames for m in reps)} frames and "
            f"{sum(m.num_drops for m in reps)} drops reported; the last: {last.num_frames} frames, "
            f"{last.num_drops} drops, last frame delay {last.last_frame_delay} ms"
        )
    else:
        print("  client STREAM_REPORTs: none")
    if r["relay_errors"]:
        print(f"  relay parse errors: {r['relay_errors']}")


def skip_reason() -> str | None:
    return _xspice_skip_reason() or gi_client_skip_reason()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--size", default="640x360", choices=("640x360", "1920x1080"), help="the video region")
    p.add_argument("--streaming-video", choices=("filter", "all", "off"), default="filter")
    p.add_argument(
        "--put",
        choices=("put", "shm"),
        default="put",
        help="XShmPutImage (one request per frame) or XPutImage (libX11 cuts it into 256 KiB bands)",
    )
    args = p.parse_args()
    args.width, args.height = (int(v) for v in args.size.split("x"))
    reason = skip_reason()
    if reason is not None:
        print(f"skipped: {reason}")
        return
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )
    print(f"date: {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; load {os.getloadavg()[0]:.1f}")
    show(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
