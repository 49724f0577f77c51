"""Validate the interop harness (gi_client.py + conftest helpers) against the REAL server.

Xspice = Xorg + the spiceqxl driver linked with libspice-server (Debian ``xserver-xspice``).
If our harness sees the right things from libspice-server, it can be trusted to judge
``spiceserver``.  One Xspice instance (plain port + TLS port, password) serves the module;
it listens on 127.0.0.1 only and is stopped by PID in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interop.harness import (
    GiClient,
    find_events,
    first_event,
    format_events,
    require_gi_client,
    run_gi_client,
)
from tests.support.certs import TestCA
from tests.support.xspice import XORG_CONF

pytestmark = pytest.mark.interop

XSPICE = shutil.which("Xspice") or "/usr/bin/Xspice"
XORG = "/usr/lib/xorg/Xorg"
SPICEQXL = "/usr/lib/xorg/modules/drivers/spiceqxl_drv.so"
PASSWORD = "s3cret"



@dataclass(frozen=True)
class XspiceServer:
    port: int
    tls_port: int
    password: str
    ca: TestCA
    log: Path


def _xspice_skip_reason() -> str | None:
    for path, what in ((XSPICE, "Xspice"), (XORG, "Xorg"), (SPICEQXL, "spiceqxl driver")):
        if not Path(path).exists():
            return f"{what} not installed ({path}; Debian package xserver-xspice)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_display() -> int:
    for n in range(150, 250):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError("no free X display number in :150-:249")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(x) for x in (task / "children").read_text().split()]
    return out


class XspiceExited(RuntimeError):
    """Xspice stopped before listening (e.g. another X server took the display or a port first)."""


#: how long Xspice may take to listen (a cold start loads Xorg's modules): only a hung one hits it
XSPICE_DEADLINE = 60.0


def _wait_port(proc: subprocess.Popen[bytes], port: int, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise XspiceExited(f"Xspice exited early ({proc.returncode}):\n{_tail(log)}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"Xspice did not listen on {port} within {timeout}s:\n{_tail(log)}")


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def _stop_xspice(proc: subprocess.Popen[bytes], display: int) -> None:
    """Stop Xspice by PID.

    The Xspice wrapper deadlocks on SIGTERM (its handler calls Popen.wait() while the main
    thread is inside Popen.wait()), so terminate its Xorg child instead: Xorg exits cleanly
    (removing its lock and socket), the wrapper's wait returns and it exits.  Fall back to
    SIGKILL of the process group we created (start_new_session) and remove the stale lock.
    """
    if proc.poll() is None:
        xorg = _children(proc.pid)
        for pid in xorg:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
            lock = Path(f"/tmp/.X{display}-lock")
            with contextlib.suppress(OSError):
                if int(lock.read_text().strip()) in xorg:
                    lock.unlink()
                    Path(f"/tmp/.X11-unix/X{display}").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def xspice(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[XspiceServer]:
    reason = _xspice_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    require_gi_client()
    work = tmp_path_factory.mktemp("xspice")
    conf = work / "xorg.conf"
    conf.write_text(XORG_CONF)
    log = work / "xorg.log"
    for attempt in range(3):  # display and ports are free when chosen, not necessarily when Xspice binds
        port, tls_port, display = _free_port(), _free_port(), _free_display()
        argv = [
            XSPICE,
            "--config", str(conf),
            "--port", str(port),
            "--tls-port", str(tls_port),
            "--x509-dir", str(test_ca.dir),
            "--password", PASSWORD,
            "-logfile", str(log),
            f":{display}",
        ]  # fmt: skip
        out = open(work / "xspice.out", "wb")  # noqa: SIM115 - closed in finally
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            _wait_port(proc, port, XSPICE_DEADLINE, log)
            _wait_port(proc, tls_port, XSPICE_DEADLINE, log)
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
        yield XspiceServer(port=port, tls_port=tls_port, password=PASSWORD, ca=test_ca, log=log)
    finally:
        _stop_xspice(proc, display)
        out.close()


# Scancodes: 30 = 'A' (set 1); 0x148 = Up arrow, E0-prefixed (spice-gtk: 0x100 | code).
ACTIONS = (
    '[{"op":"key_press","scancode":30},{"op":"key_release","scancode":30},'
    '{"op":"key_press","scancode":328},{"op":"key_release","scancode":328},'
    '{"op":"motion","dx":5,"dy":-3,"buttons":0},'
    '{"op":"position","x":100,"y":200,"display":0,"buttons":0},'
    '{"op":"button_press","button":1,"buttons":0},'
    '{"op":"button_release","button":1,"buttons":1},'
    '{"op":"wait","ms":50}]'
)


def test_links_opens_inputs_and_performs_actions(xspice: XspiceServer) -> None:
    code, events, stderr = asyncio.run(
        run_gi_client(
            "--port", str(xspice.port),
            "--password", xspice.password,
            "--expect-channels", "4",
            "--actions", ACTIONS,
            "--linger-ms", "100",
            timeout=10,
        )
    )  # fmt: skip
    dump = format_events(events, stderr)
    assert code == 0, dump
    done = events[-1]
    assert done["event"] == "done" and done["reason"] == "ok", dump

    opened = {(e["type"], e["id"]) for e in find_events(events, "channel-event", name="OPENED")}
    # libspice-server with one QXL head: main, display 0, inputs, cursor
    assert {(1, 0), (2, 0), (3, 0), (4, 0)} <= opened, dump
    main = first_event(events, "channel-event", name="OPENED", type=1)
    assert main is not None and main["tls"] is False, dump
    assert 3 in main["common_caps"] and 1 in main["caps"], dump  # MINI_HEADER, NAME_AND_UUID
    inputs = first_event(events, "channel-event", name="OPENED", type=3)
    assert inputs is not None and inputs["caps"] == [0], dump  # KEY_SCANCODE

    assert first_event(events, "inputs-open") is not None, dump
    actions = find_events(events, "action")
    assert [a["op"] for a in actions][:4] == ["key_press", "key_release", "key_press", "key_release"]
    assert all("error" not in a for a in actions), dump
    assert first_event(events, "actions-done", count=9) is not None, dump
    # Xspice supports client mouse mode (tablet + one head) and spice-gtk asks for it
    modes = [e["mode"] for e in find_events(events, "mouse-mode")]
    assert modes and modes[-1] == 2, dump
    # ends with our disconnect: main CLOSED, not an error
    assert first_event(events, "channel-event", name="CLOSED", type=1) is not None, dump
    assert not [e for e in find_events(events, "channel-event") if e["name"].startswith("ERROR")], dump


def test_wrong_password_is_refused(xspice: XspiceServer) -> None:
    code, events, stderr = asyncio.run(run_gi_client("--port", str(xspice.port), "--password", "wrong", timeout=10))
    dump = format_events(events, stderr)
    assert code == 10, dump
    err = first_event(events, "channel-event", name="ERROR_AUTH", type=1)
    assert err is not None, dump
    assert "wrong password" in err["error"]["message"], dump
    assert events[-1]["event"] == "done" and events[-1]["reason"] == "error-auth", dump
    assert first_event(events, "channel-event", name="OPENED") is None, dump


def test_tls_with_test_ca(xspice: XspiceServer) -> None:
    code, events, stderr = asyncio.run(
        run_gi_client(
            "--host", "localhost",
            "--port", str(xspice.port),
            "--tls-port", str(xspice.tls_port),
            "--tls-only",
            "--ca-file", str(xspice.ca.ca_cert),
            "--cert-subject", xspice.ca.subject,
            "--password", xspice.password,
            "--expect-channels", "4",
            "--linger-ms", "0",
            timeout=10,
        )
    )  # fmt: skip
    dump = format_events(events, stderr)
    assert code == 0, dump
    opened = find_events(events, "channel-event", name="OPENED")
    assert len(opened) >= 4, dump
    assert all(e["tls"] and e["remote_port"] == xspice.tls_port for e in opened), dump


def test_tls_without_ca_fails_verification(xspice: XspiceServer) -> None:
    code, events, stderr = asyncio.run(
        run_gi_client("--tls-port", str(xspice.tls_port), "--password", xspice.password, timeout=10)
    )
    dump = format_events(events, stderr)
    assert code == 13, dump
    assert first_event(events, "channel-event", name="ERROR_TLS", type=1) is not None, dump


def test_streaming_client_sees_events_while_running(xspice: XspiceServer) -> None:
    """GiClient lets a test act between client events (here: just observe, then end it)."""

    async def scenario() -> tuple[int, GiClient]:
        client = await GiClient.start(
            "--port", str(xspice.port),
            "--password", xspice.password,
            "--expect-channels", "4",
            "--linger-ms", "60000",
            timeout=60,
        )  # fmt: skip
        try:
            # generous deadlines: only a hung client reaches them (a loaded CI machine takes seconds)
            opened = await client.wait_for("inputs-open", timeout=45)
            assert opened["id"] == 0
            await client.wait_for("actions-done", timeout=30)
            # the client is still linked (lingering): end it with SIGTERM -> reason "signal"
            client.proc.terminate()
            return await client.wait(timeout=30), client
        finally:
            client.kill()
            await client.wait(timeout=30)  # reaped on this loop, not garbage-collected after it closed

    code, client = asyncio.run(scenario())
    dump = format_events(client.events, client.stderr)
    assert code == 18, dump
    assert client.done is not None and client.done["reason"] == "signal", dump
