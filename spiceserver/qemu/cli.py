"""``python -m spiceserver qemu``: run a QEMU VM and serve its display over SPICE (libspice
counterpart: none; this is QEMU's ``-spice`` turned inside out).

Two modes:

* ``python -m spiceserver qemu [options] -- qemu-system-x86_64 ARGS...`` starts QEMU paused with
  ``-display dbus,p2p=yes`` and a private QMP socket added to ``ARGS``, connects to the display
  through QMP ``add_client`` (no bus daemon needed), serves it, then lets QEMU run (``cont``,
  unless ``ARGS`` has ``-S``). SIGINT/SIGTERM stop QEMU (QMP ``quit``, then signals); QEMU
  exiting ends the command.
* ``python -m spiceserver qemu [options] --attach ADDRESS`` serves a QEMU already running with
  ``-display dbus,addr=ADDRESS`` on that bus until QEMU or the command goes away.

It prints ``QEMU pid N`` (launch mode) and ``SPICE on ADDR:PORT`` once clients can connect, then
``web client: http://ADDR:PORT/`` when it serves a web client (spice-html5) on the same port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Protocol, cast

from ..config import DEFAULT_WEB_ROOT, ServerConfig, installed_web_root
from ..errors import SpiceError
from ..server_devices import ServerDevices
from .bridge import attach
from .bus import QmpClient, connect_bus, connect_p2p, wait_for_qemu
from .devices import attach_devices

__all__ = ["build_parser", "main", "qemu_argv", "run"]

log = logging.getLogger(__name__)

QMP_TIMEOUT = 30.0
QUIT_TIMEOUT = 10.0


def build_parser() -> argparse.ArgumentParser:
    """The ``qemu`` command's options (everything after ``--`` is the QEMU command line)."""
    p = argparse.ArgumentParser(
        prog="python -m spiceserver qemu",
        description="Serve a QEMU VM's display (-display dbus) over SPICE.",
        epilog="example: python -m spiceserver qemu --port 5930 -- qemu-system-x86_64 -accel tcg -m 512 -vga std",
    )
    p.add_argument("--addr", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5900, help="plain TCP port (default 5900; 0 = any free port)")
    p.add_argument("--tls-port", type=int, default=None, help="TLS port; needs --x509-dir")
    p.add_argument("--x509-dir", default=None, help="directory with ca-cert.pem, server-cert.pem, server-key.pem")
    p.add_argument("--password", default=None, help="require this password (ticket); none: no password")
    p.add_argument("--viewer-password", default=None,
                   help="with --password: a second password whose clients only watch (display, cursor, sound)")  # fmt: skip
    p.add_argument("--max-clients", type=int, default=1, metavar="N",
                   help="clients connected at once (default 1: a new client replaces the old one)")  # fmt: skip
    p.add_argument("--name", default=None, help="VM name shown by clients (default: from QEMU's -name, or 'qemu')")
    p.add_argument("--attach", default=None, metavar="ADDRESS",
                   help="serve a running QEMU started with -display dbus,addr=ADDRESS (no QEMU command line)")  # fmt: skip
    p.add_argument("--web-root", default=installed_web_root(), metavar="DIR",
                   help="serve this web client over HTTP on the same port (default: Debian's spice-html5 at "
                        f"{DEFAULT_WEB_ROOT} when installed; 'none' to serve nothing)")  # fmt: skip
    p.add_argument("--no-monitors-config", action="store_true", help="do not pass client monitor layouts to QEMU (SetUIInfo)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    p.add_argument("qemu", nargs=argparse.REMAINDER, help="-- QEMU command line")
    return p


#: the audiodev the command adds when the QEMU command line defines none (SPICE's rate: no resampling)
AUDIODEV_ID = "spiceserver"
_OUR_AUDIODEV = f"dbus,id={AUDIODEV_ID},out.frequency=48000,in.frequency=48000"


def qemu_argv(command: Sequence[str], qmp_path: str | Path, bus_address: str | None = None) -> tuple[list[str], bool]:
    """The QEMU command line to run: ``command`` plus the D-Bus display (on the private bus at
    ``bus_address``, else peer to peer), a QMP socket and ``-S``. Returns it and whether we added
    ``-S`` (then we ``cont`` once served).

    Sound (on a private bus only: QEMU 7.2 drops a peer-to-peer connection that registers an
    audio listener): a command line with no ``-audiodev`` gets a D-Bus one at 48 kHz (QEMU 7.2
    gives it to sound devices that name none), and a ``-audiodev dbus,...`` of its own is used as
    it is; the display then exports the audio object (``-display dbus,...,audiodev=ID``). Another
    audio backend is left alone: the guest's sound goes there, not to SPICE.
    """
    argv = list(command)
    audiodevs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-audiodev"]
    display = "dbus,p2p=yes" if bus_address is None else f"dbus,addr={bus_address}"
    if bus_address is None:
        log.info("peer-to-peer display: no sound through SPICE")
    elif not audiodevs:
        argv = [argv[0], "-audiodev", _OUR_AUDIODEV, *argv[1:]]
        display += f",audiodev={AUDIODEV_ID}"
    else:
        ours = [d for d in audiodevs if d.split(",")[0] in ("dbus", "driver=dbus")]
        ids = [o.split("=", 1)[1] for d in ours for o in d.split(",") if o.startswith("id=")]
        if ids:
            display += f",audiodev={ids[0]}"
        else:
            log.info("the QEMU command line has its own audio backend: no sound through SPICE")
    paused_by_us = "-S" not in argv
    argv += ["-display", display, "-qmp", f"unix:{qmp_path},server=on,wait=off"]
    if paused_by_us:
        argv.append("-S")
    return argv, paused_by_us


class ServedServer(Protocol):
    """What the command runs of the server it is given, beside the devices (a ``SpiceServer``)."""

    @property
    def config(self) -> ServerConfig:
        """The server's configuration."""
        ...

    async def start(self) -> None:
        """Open the listeners."""
        ...

    async def close(self) -> None:
        """Close everything."""
        ...

    def port_of(self, secure: bool = False) -> int:
        """The port a listener got."""
        ...


#: builds the server from its configuration: the package face passes ``SpiceServer`` (the
#: bridge itself sees only :class:`~spiceserver.server_devices.ServerDevices`, so that imports run
#: one way, reds -> channels)
ServerFactory = Callable[[ServerConfig], ServerDevices]


def served(server: ServerDevices) -> ServedServer:
    """The server's lifecycle side (``SpiceServer`` has both; the factory promises it)."""
    return cast(ServedServer, server)


def _config(args: argparse.Namespace, name: str) -> ServerConfig:
    return ServerConfig(
        addr=args.addr,
        port=args.port,
        tls_port=args.tls_port,
        x509_dir=args.x509_dir,
        password=args.password,
        viewer_password=args.viewer_password,
        max_clients=args.max_clients,
        disable_ticketing=args.password is None,
        name=args.name or name,
        web_root=None if args.web_root in (None, "none") else args.web_root,
    )


def _name_of(command: Sequence[str]) -> str:
    for i, arg in enumerate(command[:-1]):
        if arg == "-name":
            return command[i + 1].split(",")[0].removeprefix("guest=")
    return "qemu"


@contextlib.asynccontextmanager
async def _private_bus(directory: Path) -> AsyncIterator[str | None]:
    """A private ``dbus-daemon`` listening in ``directory`` (its address), or None without one
    installed (the display then goes peer to peer, without sound)."""
    if shutil.which("dbus-daemon") is None:
        log.warning("dbus-daemon is not installed: QEMU's display goes peer to peer, without sound")
        yield None
        return
    path = directory / "bus.sock"
    proc = await asyncio.create_subprocess_exec(
        "dbus-daemon", "--session", f"--address=unix:path={path}", "--nofork", "--nopidfile", "--print-address=1",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), QMP_TIMEOUT)  # printed once it listens
        if not line.startswith(b"unix:"):
            raise SpiceError(f"dbus-daemon did not start (it printed {line!r})")
        yield f"unix:path={path}"  # QEMU's addr= takes no guid=
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def _qmp_connect(path: Path, proc: asyncio.subprocess.Process) -> QmpClient:
    deadline = time.monotonic() + QMP_TIMEOUT
    while True:
        if proc.returncode is not None:
            raise SpiceError(f"QEMU exited ({proc.returncode}) before its QMP socket came up")
        if path.exists():
            with contextlib.suppress(ConnectionRefusedError, FileNotFoundError):
                return await QmpClient.connect(str(path))
        if time.monotonic() > deadline:
            raise SpiceError("QEMU's QMP socket did not come up")
        await asyncio.sleep(0.02)  # the socket appears once QEMU has parsed its options


async def _stop_qemu(proc: asyncio.subprocess.Process, qmp: QmpClient | None) -> None:
    if proc.returncode is None and qmp is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(qmp.execute("quit"), QUIT_TIMEOUT)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.returncode is not None:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), QUIT_TIMEOUT)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
    await proc.wait()


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve(server: ServedServer, waiters: list[asyncio.Future[object]]) -> None:
    cfg = server.config
    print(f"SPICE on {cfg.addr}:{server.port_of()}", flush=True)
    if cfg.web_root is not None:
        print(f"web client: http://{cfg.addr}:{server.port_of()}/ (from {cfg.web_root})", flush=True)
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _run_attached(args: argparse.Namespace, stop: asyncio.Event, make_server: ServerFactory) -> int:
    bus = await connect_bus(args.attach)
    server = make_server(_config(args, "qemu"))
    try:
        await served(server).start()
        bridge = await attach(server, bus, monitors_config=not args.no_monitors_config)
        devices = await attach_devices(server, bus)
        try:
            await _serve(served(server), [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(bridge.closed())])
        finally:
            await devices.close()
            await bridge.close()
    finally:
        await served(server).close()
        bus.disconnect()
    return 0


async def run(args: argparse.Namespace, make_server: ServerFactory) -> int:
    """Run the command with parsed ``args``; returns the exit status."""
    stop = _stop_event()
    if args.attach:
        return await _run_attached(args, stop, make_server)
    command = [a for a in args.qemu if a != "--"] if args.qemu[:1] == ["--"] else list(args.qemu)
    if not command:
        print("error: no QEMU command line (after --)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="spiceserver-qemu-"))
    try:
        async with _private_bus(tmp) as address:
            return await _run_launched(args, stop, command, tmp, address, make_server)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _run_launched(
    args: argparse.Namespace, stop: asyncio.Event, command: list[str], tmp: Path, address: str | None, make_server: ServerFactory
) -> int:
    argv, paused_by_us = qemu_argv(command, tmp / "qmp.sock", address)
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
    print(f"QEMU pid {proc.pid}", flush=True)
    qmp: QmpClient | None = None
    server: ServerDevices | None = None
    try:
        qmp = await _qmp_connect(tmp / "qmp.sock", proc)
        bus = await (connect_p2p(qmp) if address is None else connect_bus(address))
        await wait_for_qemu(bus)
        server = make_server(_config(args, _name_of(command)))
        await served(server).start()
        bridge = await attach(server, bus, monitors_config=not args.no_monitors_config)
        devices = await attach_devices(server, bus)
        try:
            if paused_by_us:
                await qmp.execute("cont")
            waiters: list[asyncio.Future[object]] = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(bridge.closed()),
                asyncio.ensure_future(proc.wait()),
            ]
            await _serve(served(server), waiters)
            if stop.is_set():
                log.info("stopping QEMU")
        finally:
            await devices.close()
            await bridge.close()
            bus.disconnect()
    finally:
        await _stop_qemu(proc, qmp)
        if qmp is not None:
            qmp.close()
        if server is not None:
            await served(server).close()
    if proc.returncode and not stop.is_set():
        log.warning("QEMU exited with status %s", proc.returncode)
    return 0


def main(argv: Sequence[str] | None, make_server: ServerFactory) -> int:
    """``python -m spiceserver qemu ...``; returns the exit status."""
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if bool(args.attach) == bool([a for a in args.qemu if a != "--"]):
        print("error: give either --attach ADDRESS or -- QEMU COMMAND LINE", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run(args, make_server))
    except KeyboardInterrupt:
        return 0
    except (SpiceError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
