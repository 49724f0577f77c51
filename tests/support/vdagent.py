"""The real guest agent on the host: spice-vdagentd + spice-vdagent on an X display, against a char-device
socket that the server side listens on.

This is how Xspice runs the agent (spice-vdagent ``vdagentd/virtio-port.c``: ``-s PATH`` is first opened
as a file and then, failing that, *connected to as a Unix stream socket*), so the same environment serves
Xspice (libspice-server listens on ``XSPICE_VDAGENT_VIRTIO_PATH``) and spiceserver (a listening
``UnixSocketCharDevice``). Research: /work/shared/research/devices.md section B, "Real guest agent on the
host".

* :func:`agent_env` -- an async context manager yielding an :class:`AgentEnv`: Xvfb on a free display
  (or the caller's display, e.g. Xspice's own), ``spice-vdagentd -x -f -X -d -s SOCKET -u UINPUT -S UDCS``
  and ``spice-vdagent -x -d -s SOCKET -S UDCS -f SAVE_DIR -o 0``, all in a temporary directory, all
  stopped by PID on exit.
* Waiting is on things, not on time: :meth:`AgentEnv.wait_connected` (the daemon's connection shows up in
  ``/proc/net/unix`` as a CONNECTED socket bound to the server's path; no probe connection is made, the
  server would take it for the agent), :meth:`AgentEnv.wait_log` (a line of the daemon's or the session
  agent's log), :meth:`AgentEnv.wait_screen_size`, :meth:`AgentEnv.wait_input_events`,
  :meth:`AgentEnv.wait_file`.
* :meth:`AgentEnv.kill_daemon` / :meth:`AgentEnv.start_daemon` / :meth:`AgentEnv.restart_daemon`: the
  session agent exits with its daemon, so a restart starts both again.
* :meth:`AgentEnv.input_events`: the fake uinput file's ``struct input_event`` records (24 bytes on
  64-bit Linux: ``timeval``, ``u16 type``, ``u16 code``, ``s32 value``).
* X tools on the display: :meth:`AgentEnv.set_clipboard` (``xclip -i -quiet`` serves it until the
  selection is taken), :meth:`AgentEnv.get_clipboard` (``xclip -o``), :meth:`AgentEnv.screen_size`
  (``xrandr``).
* :func:`agent_env_skip_reason`: why this cannot run here (a binary is missing), or None.

Facts (spice-vdagent 0.22.1):

* The daemon opens the char device only once a session agent has told it the X resolution; its
  ANNOUNCE_CAPABILITIES (request=1) follows at once. It exits with status 1 when the socket reaches EOF
  and cannot be reopened ("AIIEEE lost spice client connection").
* ``-X`` (no logind) leaves one session agent; ``-f`` writes the input events to the ``-u`` file, a
  regular file here (Xspice's own ``XSPICE_VDAGENT_UINPUT_PATH`` is a FIFO its pointer driver reads:
  point it elsewhere to read the records).
* spice-gtk 0.42 appends ``VDAgentMonitorMM`` to MONITORS_CONFIG (flag PHYSICAL_SIZE) and vdagentd 0.22.1
  wants the exact size without it: it logs "invalid message size for VDAgentMonitorsConfig" and drops
  the message (:data:`MONITORS_CONFIG_REJECTED`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "EV_ABS",
    "EV_KEY",
    "EV_SYN",
    "INPUT_EVENT",
    "MONITORS_CONFIG_REJECTED",
    "AgentEnv",
    "InputEvent",
    "agent_env",
    "agent_env_skip_reason",
    "ChildProcess",
    "start_xvfb",
]

VDAGENTD = "spice-vdagentd"
VDAGENT = "spice-vdagent"
XVFB = "Xvfb"
XCLIP = "xclip"
XRANDR = "xrandr"

#: Debian packages providing the binaries above
PACKAGES = {
    VDAGENTD: "spice-vdagent",
    VDAGENT: "spice-vdagent",
    XVFB: "xvfb",
    XCLIP: "xclip",
    XRANDR: "x11-xserver-utils",
}

#: struct input_event on 64-bit Linux: struct timeval (2 x long), u16 type, u16 code, s32 value
INPUT_EVENT = struct.Struct("<qqHHi")
EV_SYN, EV_KEY, EV_ABS = 0, 1, 3
ABS_X, ABS_Y = 0, 1

#: what vdagentd 0.22.1 logs when it drops spice-gtk 0.42's MONITORS_CONFIG (see module docstring)
MONITORS_CONFIG_REJECTED = "invalid message size for VDAgentMonitorsConfig"

#: /proc/net/unix state of an established stream socket (SS_CONNECTED)
_SS_CONNECTED = "03"


def agent_env_skip_reason(need_xvfb: bool = True) -> str | None:
    """Why the real agent cannot run here (a missing binary and its Debian package), or None."""
    for binary, package in PACKAGES.items():
        if binary == XVFB and not need_xvfb:
            continue
        if shutil.which(binary) is None and not Path("/usr/sbin", binary).exists():
            return f"{binary} not installed (Debian package {package})"
    return None


def _which(binary: str) -> str:
    return shutil.which(binary) or str(Path("/usr/sbin", binary))


def free_display(start: int = 150, stop: int = 250) -> int:
    """An X display number with no lock file and no socket."""
    for n in range(start, stop):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError(f"no free X display number in :{start}-:{stop - 1}")


@dataclass(frozen=True)
class InputEvent:
    """One fake-uinput record (``linux/input.h``)."""

    type: int
    code: int
    value: int


def connected_sockets(path: Path) -> list[int]:
    """Inodes of CONNECTED Unix sockets bound to ``path`` (the server's side of accepted connections)."""
    out: list[int] = []
    want = str(path)
    with contextlib.suppress(OSError), open("/proc/net/unix") as fh:
        next(fh, None)
        for line in fh:
            parts = line.split()
            if len(parts) >= 8 and parts[7] == want and parts[5] == _SS_CONNECTED:
                out.append(int(parts[6]))
    return out


class ChildProcess:
    """A child process whose output goes to a log file, stopped by PID (its own session)."""

    def __init__(self, argv: Sequence[str], log: Path, env: dict[str, str]) -> None:
        self.argv = list(argv)
        self.log = log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)
            try:
                await asyncio.to_thread(self.popen.wait, timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                await asyncio.to_thread(self.popen.wait, timeout)
        return int(self.popen.returncode)


async def _poll(check: Callable[[], object], timeout: float, what: str, interval: float = 0.02) -> object:
    """Call ``check`` until it returns something true; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class AgentEnv:
    """A running guest agent; see :func:`agent_env`."""

    work: Path
    socket_path: Path
    display: int
    uinput: Path
    save_dir: Path
    udcs: Path
    env: dict[str, str]
    xvfb: ChildProcess | None = None
    daemon: ChildProcess | None = None
    session: ChildProcess | None = None
    daemon_logs: list[Path] = field(default_factory=list)
    session_logs: list[Path] = field(default_factory=list)
    helpers: list[ChildProcess] = field(default_factory=list)

    # ---------------------------------------------------------------- processes
    async def start_daemon(self, timeout: float = 20.0) -> None:
        """Start spice-vdagentd, then (once its udcs socket exists) the session agent, which connects to
        it. The server must listen already."""
        self.udcs.unlink(missing_ok=True)
        log = self.work / f"vdagentd-{len(self.daemon_logs)}.log"
        self.daemon_logs.append(log)
        argv = [_which(VDAGENTD), "-x", "-f", "-X", "-d", "-s", str(self.socket_path)]
        argv += ["-u", str(self.uinput), "-S", str(self.udcs)]
        self.daemon = ChildProcess(argv, log, self.env)
        daemon = self.daemon
        await _poll(lambda: self.udcs.exists() or not daemon.running, timeout, f"{self.udcs}")
        if not daemon.running:
            raise RuntimeError(f"spice-vdagentd exited ({daemon.popen.returncode}):\n{self.diagnostics()}")
        self.start_session()

    def start_session(self) -> None:
        """Start the session agent (spice-vdagent) on the display (the daemon's udcs socket exists)."""
        log = self.work / f"vdagent-{len(self.session_logs)}.log"
        self.session_logs.append(log)
        argv = [_which(VDAGENT), "-x", "-d", "-s", str(self.socket_path), "-S", str(self.udcs)]
        argv += ["-f", str(self.save_dir), "-o", "0"]
        self.session = ChildProcess(argv, log, self.env)

    async def kill_daemon(self, sig: int = signal.SIGKILL, wait_server: bool = True) -> int:
        """Stop spice-vdagentd (SIGKILL by default: the guest agent dies) and the session agent, which
        exits with it. With ``wait_server``, wait until the server closed its side of the connection (it
        saw EOF). Returns the daemon's status."""
        assert self.daemon is not None
        code = await self.daemon.stop(sig)
        if self.session is not None:
            await self.session.stop()
        if wait_server:
            await _poll(lambda: not connected_sockets(self.socket_path), 30.0, "the server to close the agent socket")
        return code

    async def restart_daemon(self, timeout: float = 20.0) -> None:
        """:meth:`kill_daemon` if running, then start both again and :meth:`wait_connected`."""
        if self.daemon is not None and self.daemon.running:
            await self.kill_daemon()
        await self.start_daemon(timeout)
        await self.wait_connected(timeout)

    async def wait_connected(self, timeout: float = 20.0) -> None:
        """Wait until the daemon opened the char device: the session agent is up (it reported the X
        resolution, so the daemon connected and sent its ANNOUNCE) and the server accepted the socket."""
        await self.wait_log("opening vdagent virtio channel", timeout=timeout)
        await _poll(lambda: connected_sockets(self.socket_path), timeout, f"a connection on {self.socket_path}")

    def log_text(self, which: str = "daemon", all_runs: bool = False) -> str:
        """The current (or every) run's log of the ``daemon`` or the ``session`` agent."""
        logs = self.daemon_logs if which == "daemon" else self.session_logs
        chosen = logs if all_runs else logs[-1:]
        return "".join(p.read_text(errors="replace") for p in chosen if p.exists())

    async def wait_log(self, pattern: str, which: str = "daemon", timeout: float = 20.0) -> re.Match[str]:
        """Wait for ``pattern`` (a regular expression) in the current run's log of ``which``."""
        rx = re.compile(pattern)

        def check() -> re.Match[str] | None:
            found = rx.search(self.log_text(which))
            if found is None and which == "daemon" and self.daemon is not None and not self.daemon.running:
                raise RuntimeError(f"spice-vdagentd exited ({self.daemon.popen.returncode}):\n{self.diagnostics()}")
            return found

        try:
            got = await _poll(check, timeout, f"{pattern!r} in the {which} log")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.diagnostics()}") from None
        assert isinstance(got, re.Match)
        return got

    def diagnostics(self) -> str:
        """The last lines of every log, for assertion messages."""
        parts = []
        for p in [*self.daemon_logs, *self.session_logs]:
            if p.exists():
                parts.append(f"--- {p.name} ---\n" + p.read_text(errors="replace")[-2000:])
        return "\n".join(parts)

    # ------------------------------------------------------------------- uinput
    def input_events(self) -> list[InputEvent]:
        """Every complete record in the fake uinput file so far."""
        data = self.uinput.read_bytes() if self.uinput.exists() else b""
        size = INPUT_EVENT.size
        out = []
        for off in range(0, len(data) - size + 1, size):
            _sec, _usec, etype, code, value = INPUT_EVENT.unpack_from(data, off)
            out.append(InputEvent(etype, code, value))
        return out

    async def wait_input_events(
        self, done: Callable[[list[InputEvent]], bool], timeout: float = 10.0
    ) -> list[InputEvent]:
        """Read the records until ``done(records)`` holds; return them."""

        def check() -> list[InputEvent] | None:
            events = self.input_events()
            return events if done(events) else None

        got = await _poll(check, timeout, "input events")
        assert isinstance(got, list)
        return got

    @staticmethod
    def positions(events: Sequence[InputEvent]) -> list[tuple[int, int]]:
        """The absolute pointer positions the records describe (one per EV_SYN after an EV_ABS)."""
        x = y = None
        out: list[tuple[int, int]] = []
        moved = False
        for ev in events:
            if ev.type == EV_ABS and ev.code == ABS_X:
                x, moved = ev.value, True
            elif ev.type == EV_ABS and ev.code == ABS_Y:
                y, moved = ev.value, True
            elif ev.type == EV_SYN and moved and x is not None and y is not None:
                out.append((x, y))
                moved = False
        return out

    # ------------------------------------------------------------------ X tools
    async def run_x(self, *argv: str, stdin: bytes | None = None, timeout: float = 10.0) -> bytes:
        """Run an X client on the display; its stdout (CalledProcessError on failure)."""
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(int(proc.returncode or 0), list(argv), out, err)
        return out

    def set_clipboard(self, data: bytes, selection: str = "clipboard", target: str | None = None) -> None:
        """Own ``selection`` on the display with ``data`` (``xclip -i -quiet`` keeps serving it until
        another client, e.g. the agent for a client grab, takes the selection; stopped on exit)."""
        src = self.work / f"clip-{len(self.helpers)}"
        src.write_bytes(data)
        argv = [_which(XCLIP), "-selection", selection, "-quiet", "-i", str(src)]
        if target:
            argv[3:3] = ["-t", target]
        self.helpers.append(ChildProcess(argv, self.work / "xclip.log", self.env))

    async def get_clipboard(self, selection: str = "clipboard", timeout: float = 10.0) -> bytes:
        """``xclip -o``: the selection's content (if the agent owns it, it asks the client first)."""
        return await self.run_x(_which(XCLIP), "-selection", selection, "-o", timeout=timeout)

    async def screen_size(self) -> tuple[int, int]:
        """Screen 0's current size from ``xrandr``."""
        out = (await self.run_x(_which(XRANDR), "--current")).decode(errors="replace")
        found = re.search(r"current (\d+) x (\d+)", out)
        if found is None:
            raise RuntimeError(f"xrandr: no current size in {out!r}")
        return int(found.group(1)), int(found.group(2))

    async def wait_screen_size(self, size: tuple[int, int], timeout: float = 10.0) -> tuple[int, int]:
        """Poll ``xrandr`` until the screen has ``size``; return the last size seen (the caller asserts)."""
        deadline = time.monotonic() + timeout
        while True:
            got = await self.screen_size()
            if got == size or time.monotonic() > deadline:
                return got
            await asyncio.sleep(0.05)

    async def wait_file(self, name: str, content: bytes | None = None, timeout: float = 10.0) -> Path:
        """Wait for ``SAVE_DIR/name`` (with ``content`` if given: the agent writes it in pieces)."""
        path = self.save_dir / name

        def check() -> bool:
            try:
                return content is None or path.read_bytes() == content
            except OSError:
                return False

        await _poll(check, timeout, f"{path}")
        return path

    # ------------------------------------------------------------------ teardown
    async def close(self) -> None:
        for proc in [*self.helpers, self.session, self.daemon]:
            if proc is not None:
                await proc.stop()
        if self.xvfb is not None:
            await self.xvfb.stop()


async def start_xvfb(work: Path, env: dict[str, str], size: str = "1024x768") -> tuple[ChildProcess, int]:
    """Xvfb on a free display with one ``size`` x 24 screen, logging to ``work/xvfb.log``; returns (process, display)."""
    for attempt in range(3):  # the display is free when chosen, not necessarily when Xvfb binds it
        display = free_display()
        argv = [_which(XVFB), f":{display}", "-screen", "0", f"{size}x24", "-nolisten", "tcp", "-noreset"]
        proc = ChildProcess(argv, work / "xvfb.log", env)
        sock = Path(f"/tmp/.X11-unix/X{display}")
        try:
            await _poll(lambda: sock.exists() or not proc.running, 30.0, f"Xvfb on :{display}")  # noqa: B023
        except TimeoutError:
            await proc.stop()
            raise
        if proc.running:
            return proc, display
        if attempt == 2:
            raise RuntimeError(f"Xvfb exited: {(work / 'xvfb.log').read_text(errors='replace')[-2000:]}")
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def agent_env(
    socket_path: str | os.PathLike[str],
    display: int | None = None,
    work: Path | None = None,
    wait: bool = True,
    timeout: float = 20.0,
) -> AsyncIterator[AgentEnv]:
    """Run the real guest agent against ``socket_path`` (the server listens there first).

    Args:
        socket_path: the char device: a Unix stream socket the server side listens on.
        display: an X display to run the session agent on (e.g. Xspice's); None starts Xvfb on a free one.
        work: directory for the uinput file, SAVE_DIR (``save``), the udcs socket and the logs; a
            temporary one (removed afterwards) when None.
        wait: wait until the agent is connected (:meth:`AgentEnv.wait_connected`) before yielding.
        timeout: bound for that wait.

    Raises:
        RuntimeError: a binary is missing (see :func:`agent_env_skip_reason`; tests skip on it first).
    """
    reason = agent_env_skip_reason(need_xvfb=display is None)
    if reason is not None:
        raise RuntimeError(reason)
    tmp = None
    if work is None:
        tmp = tempfile.mkdtemp(prefix="vdagent-")
        work = Path(tmp)
    save_dir = work / "save"
    save_dir.mkdir(exist_ok=True)
    uinput = work / "uinput"
    uinput.write_bytes(b"")  # a regular file: vdagentd -f appends input_event records
    env = {k: v for k, v in os.environ.items() if k not in ("DBUS_SESSION_BUS_ADDRESS", "XAUTHORITY")}
    agent = AgentEnv(
        work=work,
        socket_path=Path(socket_path),
        display=display if display is not None else -1,
        uinput=uinput,
        save_dir=save_dir,
        udcs=work / "udcs.sock",
        env=env,
    )
    try:
        if display is None:
            agent.xvfb, agent.display = await start_xvfb(work, env)
        env["DISPLAY"] = f":{agent.display}"
        await agent.start_daemon(timeout)
        if wait:
            await agent.wait_connected(timeout)
        yield agent
    finally:
        await agent.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
