"""Sound, ours against libspice: server CPU to play 48 kHz stereo to one spice-gtk client, raw and Opus.

Two servers, each in its own process, each playing the same sound in real time to one spice-gtk
client (``tests/interop/gi_client.py --enable-audio``: spice-gtk's playback channel decodes every
packet, no audio backend) that connects through a TCP relay in this process:

* ours: ``python -m spiceserver demo --display framebuffer --scene static`` (a still picture, so
  the display is quiet once the client has it) with ``--playback-compression on|off``; its speaker
  plays the demo's tone loop (:func:`spiceserver.demo_sound.tone_loop`) in 10 ms frames from a
  thread of the server process. The window starts once the demo printed "codec kernels ready" (the
  numba compile in the background is over) and the client has decoded playback data. The idle
  baseline is the same demo with ``--no-audio`` (no playback or record channel), the client linked.
* Xspice (Debian ``xserver-xspice``: Xorg + the spiceqxl driver linked with libspice-server): the
  same tone loop written by a thread of this process into a FIFO of ``XSPICE_PLAYBACK_FIFO_DIR``
  (``XSPICE_PLAYBACK_COMPRESSION`` 1 for Opus, 0 for raw), one 10 ms chunk at a time, each when a
  monotonic clock reaches its start time. The driver (xf86-video-qxl ``src/spiceqxl_audio.c``)
  reads the FIFO and hands the samples to libspice (spice ``server/sound.cpp``). The idle baseline
  is the same Xorg with the client linked and no FIFO, measured just before.

Measured over ``--seconds`` (default 20) of each window: the server process's CPU seconds (utime +
stime of all its threads, ``/proc/PID/stat``), as % of one core; what the client decoded
(``playback-data`` events: packets and PCM bytes); and what went on the wire to it, counted by the
relay on the playback channel (server to client, headers included, and the DATA messages framed
with :class:`spiceserver.proto.wire.Framer`). The figure that compares the servers is playback
minus idle (the sound's cost, not the process's background).

Measured (2026-12-07, x86_64, 2 CPUs shared with other jobs (load 1.6-4.4), Python 3.11.7, Debian 12
Xspice and spice-gtk 0.42; three runs of 20 s, median): raw 5.7 % of a core ours against 1.15 %
Xspice; Opus 7.95 % ours against 2.35 % Xspice. Both idle baselines are below the clock tick
(0.00 % over 20 s). On the wire both send the same: raw 1930 bytes per 10 ms packet (193 kB/s),
Opus ~138 bytes per packet (13.8 kB/s), headers included. Ours includes the demo's tone
generation (~0.4 % of a core, printed at the end); the client and the relay are not counted.

Run: ``python benchmarks/sound_xspice.py [--seconds 20] [--runs 1] [--modes raw,opus]
[--servers ours,xspice]``. Skips (exit status 0, a message) when Xspice or spice-gtk's GObject
bindings are absent (ours alone runs with ``--servers ours``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spiceserver.demo_sound import FRAME_BYTES, FRAME_SAMPLES, tone_loop  # noqa: E402
from spiceserver.errors import SpiceError  # noqa: E402
from spiceserver.proto.enums import ChannelType, CommonCap  # noqa: E402
from spiceserver.proto.link import HEADER, LinkMess, LinkReply, has_cap  # noqa: E402
from spiceserver.proto.messages.playback import PlaybackData  # noqa: E402
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

CHANNEL_PLAYBACK = int(ChannelType.PLAYBACK)


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), from /proc/PID/stat (proc(5) fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- the relay


@dataclass
class Direction:
    """One direction of one relayed connection: link, then (after the ticket) framed messages."""

    from_client: bool
    buf: bytearray = field(default_factory=bytearray)
    stage: str = "link"  # link -> (client: wait-reply) -> auth -> data; broken: relayed, not parsed
    auth_left: int = 0
    framer: Framer | None = None


class Connection:
    """A relayed channel connection: learns its channel type from the client's link message, then
    counts the server's bytes (all of them, link included) and its data messages by type."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.channel_type: int | None = None
        self.client_caps: tuple[int, ...] = ()
        self.server_caps: tuple[int, ...] = ()
        self.c2s = Direction(True)
        self.s2c = Direction(False)

    def _both(self, cap: int) -> bool:
        return has_cap(self.client_caps, cap) and has_cap(self.server_caps, cap)

    def feed(self, way: Direction, data: bytes) -> None:
        if not way.from_client and self.channel_type is not None:
            self.relay.s2c_bytes[self.channel_type] += len(data)
        way.buf += data
        while way.buf:
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
                    self.channel_type, self.client_caps = int(mess.channel_type), tuple(mess.common_caps)
                    way.stage = "wait-reply"
                else:
                    reply = LinkReply.parse(body)
                    self.server_caps = tuple(reply.common_caps)
                    if self.channel_type is not None:  # the reply's bytes: the server's, on this channel
                        self.relay.s2c_bytes[self.channel_type] += HEADER.size + size
                    way.stage, way.auth_left = "auth", 4  # the link result (u32)
                    self.c2s.stage = "auth"  # an auth mechanism word when both select, then the ticket
                    self.c2s.auth_left = 128 + (4 if self._both(CommonCap.PROTOCOL_AUTH_SELECTION) else 0)
            elif way.stage in ("wait-reply", "broken"):
                if way.stage == "broken":
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
                msgs = way.framer.feed(bytes(way.buf))
                way.buf.clear()
                if not way.from_client and self.channel_type is not None:
                    for m in msgs:
                        self.relay.s2c_messages[(self.channel_type, m.type)] += 1
                return


class Relay:
    """127.0.0.1:``port`` forwarded to 127.0.0.1:``target``; counts what the server sends per
    channel type (``s2c_bytes``) and per (channel type, message type) (``s2c_messages``)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.s2c_bytes: Counter[int] = Counter()
        self.s2c_messages: Counter[tuple[int, int]] = Counter()
        self.last_s2c = 0.0  # monotonic time of the server's last bytes, any channel
        self.errors: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def playback(self) -> tuple[int, int]:
        """(bytes, DATA messages) the server has sent on playback channels so far."""
        return self.s2c_bytes[CHANNEL_PLAYBACK], self.s2c_messages[(CHANNEL_PLAYBACK, PlaybackData.TYPE)]

    async def quiet(self, for_s: float, timeout: float) -> None:
        """Until the server has sent nothing on any channel for ``for_s`` (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and time.monotonic() - self.last_s2c < for_s:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
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
                if not way.from_client:
                    self.last_s2c = time.monotonic()
                try:
                    conn.feed(way, data)
                except SpiceError as exc:  # keep relaying; the counts of this connection stop
                    self.errors.append(f"channel {conn.channel_type}: {exc}")
                    way.stage, way.framer = "broken", None
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                w.write_eof()


# ----------------------------------------------------------------------------- measuring


@dataclass
class Window:
    """One measured window of a server process with the client linked."""

    seconds: float  # wall time of the window
    cpu: float  # the server process's CPU seconds in it
    packets: int = 0  # playback-data packets spice-gtk decoded in it
    pcm_bytes: int = 0  # their PCM bytes
    wire_bytes: int = 0  # playback channel bytes server->client in it (the relay's count)
    data_msgs: int = 0  # playback DATA messages in it (the relay's count)

    @property
    def share(self) -> float:
        """CPU as a fraction of one core."""
        return self.cpu / self.seconds


def played(client: GiClient) -> tuple[int, int]:
    """(packets, PCM bytes) spice-gtk has decoded so far (its latest ``playback-data`` event)."""
    for ev in reversed(client.events):
        if ev.get("event") == "playback-data":
            return int(ev["packets"]), int(ev["total"])
    return 0, 0


async def measure(pid: int, client: GiClient, relay: Relay, seconds: float) -> Window:
    """``seconds`` of the server process ``pid`` with ``client`` linked through ``relay``."""
    packets0, pcm0 = played(client)
    wire0, msgs0 = relay.playback()
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    packets1, pcm1 = played(client)
    wire1, msgs1 = relay.playback()
    return Window(t1 - t0, cpu1 - cpu0, packets1 - packets0, pcm1 - pcm0, wire1 - wire0, msgs1 - msgs0)


async def start_client(port: int, seconds: float) -> GiClient:
    client = await GiClient.start(
        "--port", str(port), "--enable-audio", "--control", timeout=seconds * 3 + 120
    )  # fmt: skip
    await client.expect("ready", timeout=60)
    return client


async def stop_client(client: GiClient) -> None:
    with contextlib.suppress(Exception):
        await client.finish(timeout=10)
    client.kill()
    await client.wait(10)


def playing(seen: int) -> Any:
    """A client event predicate: playback data decoded after the first ``seen`` events."""

    def pick(ev: dict[str, Any]) -> bool:
        return ev.get("event") == "playback-data" and ev.get("packets", 0) > seen

    return pick


# ----------------------------------------------------------------------------- ours


class Demo:
    """``python -m spiceserver demo`` in its own process; its stdout lines are kept."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, port: int, *args: str) -> Demo:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "spiceserver", "demo", "--port", str(port), "--display", "framebuffer",
            "--scene", "static", "--web-root", "none", "--metrics-path", "none", *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=env, cwd=str(ROOT),
        )  # fmt: skip
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            async with self._changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def expect(self, prefix: str, timeout: float) -> str:
        """The first stdout line starting with ``prefix`` (waits for it)."""

        async def waiter() -> str:
            async with self._changed:
                while True:
                    for line in self.lines:
                        if line.startswith(prefix):
                            return line
                    if self.proc.returncode is not None or self._reader.done():
                        raise RuntimeError(f"the demo exited without {prefix!r}:\n" + "\n".join(self.lines))
                    await self._changed.wait()

        return await asyncio.wait_for(waiter(), timeout)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        await asyncio.gather(self._reader, return_exceptions=True)


async def ours_window(mode: str, seconds: float, audio: bool) -> tuple[Window, str]:
    """One demo process, one client: a window while it plays (``audio``) or with ``--no-audio``.
    Returns the window and the demo's codec warm-up line."""
    port = _free_port()
    args = ["--playback-compression", "on" if mode == "opus" else "off"] + ([] if audio else ["--no-audio"])
    demo = await Demo.start(port, *args)
    try:
        await demo.expect("spiceserver demo listening", 60)
        ready = await demo.expect("codec kernels ready", 600)
        assert demo.proc.pid is not None
        relay = Relay(port)
        await relay.start()
        client = await start_client(relay.port, seconds)
        try:
            if audio:
                await client.expect("playback-start", timeout=30)
                await client.expect(playing(0), timeout=30)
            await relay.quiet(1.0, 30)  # the display's first picture is out
            if audio:  # and the sound still flows
                await client.expect(playing(played(client)[0]), timeout=10)
            w = await measure(demo.proc.pid, client, relay, seconds)
        finally:
            await stop_client(client)
            await relay.close()
        if relay.errors:
            print(f"  relay: {relay.errors}", flush=True)
        return w, ready
    finally:
        await demo.stop()


# ----------------------------------------------------------------------------- Xspice


@dataclass
class Xspice:
    proc: subprocess.Popen[bytes]
    display: int
    port: int
    xorg_pid: int
    fifos: Path


@contextlib.contextmanager
def xspice(work: Path, compression: bool) -> Any:
    """An Xspice (no ticket, 127.0.0.1) with a playback FIFO directory; stopped by PID at the end."""
    conf = work / "xorg.conf"
    conf.write_text(XORG_CONF)
    fifos = work / "fifo"
    fifos.mkdir()
    log = work / "xorg.log"
    env = {
        **os.environ,
        "XSPICE_PLAYBACK_FIFO_DIR": str(fifos),
        "XSPICE_PLAYBACK_COMPRESSION": "1" if compression else "0",
    }
    for attempt in range(3):  # display and port are free when chosen, not necessarily when Xspice binds
        port, display = _free_port(), _free_display()
        argv = [
            XSPICE,
            "--config",
            str(conf),
            "--port",
            str(port),
            "--disable-ticketing",
            "-logfile",
            str(log),
            f":{display}",
        ]
        out = open(work / "xspice.out", "wb")  # noqa: SIM115 - closed in finally
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
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
        yield Xspice(proc, display, port, xorg[0], fifos)
    finally:
        _stop_xspice(proc, display)
        out.close()


class FifoFeeder(threading.Thread):
    """Creates ``path`` (after Xorg started: the driver only notices new FIFOs), opens it once the
    driver reads it, then writes the tone loop in real time until :meth:`stop`: 10 ms chunk ``k``
    when a monotonic clock reaches ``t0 + k * 10 ms`` (a late wake-up writes every chunk due)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.written = 0
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(10)

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def _run(self) -> None:
        os.mkfifo(self.path)
        deadline = time.monotonic() + 30
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO or time.monotonic() > deadline or self._halt.is_set():
                    raise
                time.sleep(0.02)
        try:
            os.set_blocking(fd, True)
            t0 = time.monotonic()
            k = 0
            while not self._halt.is_set():
                due = int((time.monotonic() - t0) / 0.01) + 1
                if due > k:
                    pcm = tone_loop(k * FRAME_SAMPLES, (due - k) * FRAME_SAMPLES)
                    view = memoryview(pcm)
                    while view:
                        view = view[os.write(fd, view) :]
                    self.written += len(pcm)
                    k = due
                self._halt.wait(max(0.0, t0 + k * 0.01 - time.monotonic()))
        finally:
            os.close(fd)


async def xspice_windows(mode: str, seconds: float) -> tuple[Window, Window]:
    """One Xspice, one client: the idle window (no FIFO), then the window while a FIFO plays."""
    with tempfile.TemporaryDirectory(prefix="sound-xspice-") as tmp, xspice(Path(tmp), mode == "opus") as xs:
        relay = Relay(xs.port)
        await relay.start()
        client = await start_client(relay.port, seconds)
        feeder = FifoFeeder(xs.fifos / "tone.fifo")
        try:
            await client.expect("channel-event", name="OPENED", type=CHANNEL_PLAYBACK, timeout=30)
            await relay.quiet(1.0, 30)
            idle = await measure(xs.xorg_pid, client, relay, seconds)
            feeder.start()
            await client.expect("playback-start", timeout=30)
            await client.expect(playing(0), timeout=30)
            await asyncio.sleep(0.5)  # past START and the first packets
            await client.expect(playing(played(client)[0]), timeout=10)
            play = await measure(xs.xorg_pid, client, relay, seconds)
        finally:
            await asyncio.to_thread(feeder.stop)
            await stop_client(client)
            await relay.close()
        if feeder.error is not None:
            raise RuntimeError(f"FIFO feeder: {feeder.error!r}")
        if relay.errors:
            print(f"  relay: {relay.errors}", flush=True)
        return idle, play


# ----------------------------------------------------------------------------- the table


@dataclass
class Row:
    server: str
    mode: str
    idle: Window
    play: Window


def tone_cost(seconds: float) -> float:
    """CPU share of one core that generating the tone loop in 10 ms frames costs (numpy, this
    process): part of ours' figure (the demo's speaker thread makes it), not of Xspice's."""
    n = int(seconds * 100)
    c0 = time.process_time()
    for k in range(n):
        tone_loop(k * FRAME_SAMPLES, FRAME_SAMPLES)
    return (time.process_time() - c0) / seconds


def print_table(rows: list[Row]) -> None:
    print(
        f"{'server':<7} {'mode':<5} {'CPU % net':>9} {'idle %':>7} {'play %':>7} {'packets':>8} "
        f"{'DATA msgs':>9} {'PCM kB/s':>9} {'wire kB/s':>9} {'wire B/pkt':>10}"
    )
    for r in rows:
        p = r.play
        print(
            f"{r.server:<7} {r.mode:<5} {(p.share - r.idle.share) * 100:>9.2f} {r.idle.share * 100:>7.2f} "
            f"{p.share * 100:>7.2f} {p.packets:>8} {p.data_msgs:>9} {p.pcm_bytes / p.seconds / 1e3:>9.1f} "
            f"{p.wire_bytes / p.seconds / 1e3:>9.2f} {p.wire_bytes / max(1, p.data_msgs):>10.1f}"
        )


def summary(rows: list[Row]) -> None:
    """Median over runs of the net CPU % per (server, mode)."""
    keys = list(dict.fromkeys((r.server, r.mode) for r in rows))
    print("median over runs (CPU % of one core, playback minus idle; wire kB/s):")
    for server, mode in keys:
        mine = [r for r in rows if (r.server, r.mode) == (server, mode)]
        net = [(r.play.share - r.idle.share) * 100 for r in mine]
        wire = [r.play.wire_bytes / r.play.seconds / 1e3 for r in mine]
        print(
            f"  {server:<7} {mode:<5} {statistics.median(net):6.2f} %  (runs: {', '.join(f'{v:.2f}' for v in net)}), "
            f"{statistics.median(wire):.2f} kB/s"
        )


async def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    for run_no in range(1, args.runs + 1):
        for mode in args.modes:
            if "ours" in args.servers:
                idle, _ = await ours_window(mode, args.seconds, audio=False)
                play, ready = await ours_window(mode, args.seconds, audio=True)
                print(f"  [run {run_no}] ours {mode}: done ({ready})", flush=True)
                rows.append(Row("ours", mode, idle, play))
            if "xspice" in args.servers:
                idle, play = await xspice_windows(mode, args.seconds)
                print(f"  [run {run_no}] xspice {mode}: done", flush=True)
                rows.append(Row("xspice", mode, idle, play))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="length of each measured window (default 20)")
    p.add_argument("--runs", type=int, default=1, help="repeat everything this many times (default 1)")
    p.add_argument("--modes", default="raw,opus", help="comma-separated: raw, opus (default both)")
    p.add_argument("--servers", default="ours,xspice", help="comma-separated: ours, xspice (default both)")
    args = p.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    args.servers = [s for s in args.servers.split(",") if s]
    if set(args.modes) - {"raw", "opus"} or set(args.servers) - {"ours", "xspice"}:
        p.error("--modes takes raw,opus and --servers ours,xspice")
    reason = gi_client_skip_reason() or (_xspice_skip_reason() if "xspice" in args.servers else None)
    if reason is not None:
        print(f"skipped: {reason}")
        return
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )
    print(f"date: {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; load {os.getloadavg()[0]:.1f}")
    print(
        f"sound: the demo's tone loop, 48 kHz S16 stereo ({FRAME_BYTES} bytes per 10 ms), to one spice-gtk client; "
        f"windows of {args.seconds:g} s"
    )
    rows = asyncio.run(run(args))
    print(f"load after: {os.getloadavg()[0]:.1f}")
    print_table(rows)
    if args.runs > 1:
        summary(rows)
    if "ours" in args.servers:
        print(
            f"(of ours: generating the tone loop itself costs {tone_cost(min(args.seconds, 5.0)) * 100:.2f} % of a core here)"
        )


if __name__ == "__main__":
    main()
