"""The README's demo, as a new user runs it: ``python -m spiceserver demo``, then spice-gtk types and
clicks, and every event shows up in the demo's output, one line each."""

from __future__ import annotations

import asyncio
import json
import socket
import sys

import pytest

from tests.interop.harness import format_events, run_gi_client

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_demo(*args: str) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spiceserver", "demo", "--port", str(port), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert b"listening on 127.0.0.1:" in line, line
    return proc, port


async def stop(proc: asyncio.subprocess.Process) -> str:
    proc.terminate()
    out, _err = await asyncio.wait_for(proc.communicate(), 10)
    return out.decode()


@pytest.mark.parametrize("password", [None, "hunter2"])
async def test_demo_prints_client_input(password: str | None) -> None:
    proc, port = await start_demo(*(["--password", password] if password else []))
    try:
        actions = [
            {"op": "key_press", "scancode": 0x1E},
            {"op": "key_release", "scancode": 0x1E},
            {"op": "key_press", "scancode": 0x148},
            {"op": "key_release", "scancode": 0x148},
            {"op": "position", "x": 10, "y": 20, "display": 0, "buttons": 0},
            {"op": "button_press", "button": 1, "buttons": 1},
            {"op": "button_release", "button": 1, "buttons": 0},
            {"op": "wait", "ms": 300},
        ]
        args = ["--port", str(port), "--expect-channels", "2", "--wait-mouse-mode", "client", "--actions", json.dumps(actions)]
        if password:
            args += ["--password", password]
        code, events, err = await run_gi_client(*args, timeout=30)
        assert code == 0, format_events(events, err)
        if password:
            bad, events, err = await run_gi_client("--port", str(port), "--password", "wrong", timeout=20)
            assert bad == 10, format_events(events, err)
    finally:
        out = await stop(proc)
    lines = out.splitlines()
    assert "key down 0x1e (scancode 1e)" in lines
    assert "key up 0x1e (scancode 9e)" in lines
    assert "key down 0xe048 (scancode e0 48)" in lines
    assert "key up 0xe048 (scancode e0 c8)" in lines
    assert "tablet position x=10 y=20 buttons=0x0 display=0" in lines
    assert "tablet buttons=0x1" in lines
    assert lines.index("tablet buttons=0x1") < len(lines) - 1 and "tablet buttons=0x0" in lines


async def test_demo_help_explains_every_option() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spiceserver", "demo", "--help", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    text = out.decode()
    for opt in ("--host", "--port", "--tls-port", "--x509-dir", "--password", "--disable-ticketing", "--unix"):
        assert opt in text


async def test_demo_over_tls_with_password(tmp_path: object) -> None:
    import pathlib

    from tests.support.certs import make_test_ca

    ca = make_test_ca(pathlib.Path(str(tmp_path)) / "x509")
    tls_port = free_port()
    proc, port = await start_demo("--tls-port", str(tls_port), "--x509-dir", str(ca.dir), "--password", "s3cret", "--tls-channel", "default")
    try:
        actions = [{"op": "key_press", "scancode": 0x10}, {"op": "key_release", "scancode": 0x10}, {"op": "wait", "ms": 300}]
        code, events, err = await run_gi_client(
            "--port", str(port), "--tls-port", str(tls_port), "--ca-file", str(ca.ca_cert), "--tls-only",
            "--password", "s3cret", "--expect-channels", "2", "--actions", json.dumps(actions), timeout=30,
        )
        assert code == 0, format_events(events, err)
        assert all(e.get("tls") for e in events if e.get("event") == "channel-event" and e.get("name") == "OPENED")
        bad, events, err = await run_gi_client(
            "--tls-port", str(tls_port), "--ca-file", str(ca.ca_cert), "--tls-only", "--password", "nope", timeout=20
        )
        assert bad == 10, format_events(events, err)
    finally:
        out = await stop(proc)
    assert "key down 0x10 (scancode 10)" in out.splitlines()


@pytest.mark.parametrize("display", ["qxl", "framebuffer"])
async def test_demo_static_scene_equals_screendump(tmp_path: object, display: str) -> None:
    """`demo --scene static`: what spice-gtk shows equals the server's screendump, pixel for pixel."""
    import os
    import pathlib
    import signal

    import numpy as np
    from PIL import Image

    from tests.interop.test_display_spicegtk import assert_same, read_ppm

    tmp = pathlib.Path(str(tmp_path))
    dump = tmp / "dump.png"
    proc, port = await start_demo("--scene", "static", "--display", display, "--screendump", str(dump))
    try:
        shot = tmp / "client.ppm"
        code, events, err = await run_gi_client(
            "--port", str(port), "--wait-display", "--linger-ms", "800", "--screenshot", str(shot), timeout=40
        )
        assert code == 0, format_events(events, err)
        assert proc.stdout is not None
        os.kill(proc.pid, signal.SIGUSR1)
        while True:  # other status lines (e.g. "codec kernels ready") may come first
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert line, "demo exited"
            if b"screendump written" in line:
                break
    finally:
        await stop(proc)
    rgb = np.asarray(Image.open(dump).convert("RGB"), dtype=np.uint32)
    server = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    assert server.shape == (768, 1024)
    assert_same(read_ppm(shot), server)
