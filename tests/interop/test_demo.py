"""The README's demo, as a new user runs it: ``python -m spiceserver demo``, then spice-gtk types and
clicks, and every event shows up in the demo's output, one line each."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.interop.harness import controlled_client, format_events, run_gi_client, same_picture

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: how long the demo may take to listen, or to print what a test waits for (a cold machine, imports
#: and kernel compiles competing for the CPU): generous, only a hung demo hits it
DEMO_DEADLINE = 120.0


async def _launch(args: list[str]) -> tuple[asyncio.subprocess.Process, bytes, bytes]:
    """Start the demo; return it with its first stdout line, or b"" and its stderr so far when it
    failed to bind a port (it prints the error but does not exit: it is killed here)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spiceserver", "demo", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    err = bytearray()

    async def bind_error() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            err.extend(raw)
            if b"address already in use" in raw:
                return

    first = asyncio.ensure_future(proc.stdout.readline())
    watch = asyncio.ensure_future(bind_error())
    await asyncio.wait({first, watch}, timeout=DEMO_DEADLINE, return_when=asyncio.FIRST_COMPLETED)
    watch.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watch
    if first.done() and first.result():
        return proc, first.result(), bytes(err)
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()
    return proc, b"", bytes(err)


async def start_demo_ports(*args: str, tls: bool = False) -> tuple[asyncio.subprocess.Process, int, int | None]:
    """``python -m spiceserver demo`` on a free port (and a free TLS port with ``tls``), once it is
    listening; ports found taken by then (another process got them first) are chosen again."""
    for _attempt in range(3):
        port = free_port()
        tls_port = free_port() if tls else None
        argv = ["--port", str(port), *(["--tls-port", str(tls_port)] if tls_port else []), *args]
        proc, line, err = await _launch(argv)
        if b"listening on 127.0.0.1:" in line:
            return proc, port, tls_port
        if b"address already in use" not in err:
            break
    raise AssertionError(f"the demo did not start: {line!r}\n{err.decode(errors='replace')[-3000:]}")


async def start_demo(*args: str) -> tuple[asyncio.subprocess.Process, int]:
    proc, port, _ = await start_demo_ports(*args)
    return proc, port


async def read_until(proc: asyncio.subprocess.Process, lines: list[str], want: Callable[[list[str]], bool]) -> None:
    """Read the demo's output lines into ``lines`` until ``want(lines)`` holds."""
    assert proc.stdout is not None
    stdout = proc.stdout

    async def loop() -> None:
        while not want(lines):
            raw = await stdout.readline()
            assert raw, f"the demo exited; it printed {lines}"
            lines.append(raw.decode().rstrip("\n"))

    try:
        await asyncio.wait_for(loop(), DEMO_DEADLINE)
    except TimeoutError:
        raise AssertionError(f"the demo printed only {lines}") from None


async def stop(proc: asyncio.subprocess.Process) -> str:
    proc.terminate()
    out, _err = await asyncio.wait_for(proc.communicate(), 10)
    return out.decode()


@pytest.mark.parametrize("password", [None, "hunter2"])
async def test_demo_prints_client_input(password: str | None) -> None:
    proc, port = await start_demo(*(["--password", password] if password else []))
    lines: list[str] = []
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
        # the client sent them all; wait until the demo has printed them (the last one is the release)
        await read_until(proc, lines, lambda seen: "tablet buttons=0x0" in seen)
    finally:
        lines += (await stop(proc)).splitlines()
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
    proc, port, tls_port = await start_demo_ports(
        "--x509-dir", str(ca.dir), "--password", "s3cret", "--tls-channel", "default", tls=True
    )
    assert tls_port is not None
    lines: list[str] = []
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
        await read_until(proc, lines, lambda seen: "key up 0x10 (scancode 90)" in seen)
    finally:
        lines += (await stop(proc)).splitlines()
    assert "key down 0x10 (scancode 10)" in lines


@pytest.mark.parametrize("display", ["qxl", "framebuffer"])
async def test_demo_static_scene_equals_screendump(tmp_path: object, display: str) -> None:
    """`demo --scene static`: what spice-gtk shows equals the server's screendump, pixel for pixel."""
    import os
    import pathlib
    import signal

    import numpy as np
    from PIL import Image

    from tests.interop.test_display_spicegtk import assert_same

    tmp = pathlib.Path(str(tmp_path))
    dump = tmp / "dump.png"
    proc, port = await start_demo("--scene", "static", "--display", display, "--screendump", str(dump))
    try:
        async with controlled_client("--port", str(port), "--wait-display", timeout=60) as client:
            os.kill(proc.pid, signal.SIGUSR1)  # the scene is static: the dump is what the client must show
            # other status lines (e.g. "codec kernels ready") may come first
            await read_until(proc, [], lambda seen: bool(seen) and "screendump written" in seen[-1])
            rgb = np.asarray(Image.open(dump).convert("RGB"), dtype=np.uint32)
            server = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
            shown = await client.wait_picture(same_picture(server))
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
    finally:
        await stop(proc)
    assert server.shape == (768, 1024)
    assert shown is not None
    assert_same(shown, server)


@pytest.mark.parametrize("codec", ["mjpeg", "h264"])
async def test_demo_video_scene_is_streamed_to_spice_gtk(tmp_path: Path, codec: str) -> None:
    """``demo --scene video --streaming-video filter``: the QXL guest's video window reaches spice-gtk
    as a stream in the configured codec (the metrics page counts its frames), and a capture of the
    session holds STREAM_CREATE with that codec, STREAM_DATA, and no malformed message."""
    from tests.interop.capture import loopback_capture
    from tests.interop.test_video_spicegtk import CODEC_TYPES, TSHARK, require_codec, tshark_fields

    require_codec(codec)
    if TSHARK is None:
        pytest.skip("tshark is not installed (Debian package tshark)")
    proc, port = await start_demo("--scene", "video", "--streaming-video", "filter", "--video-codec", codec, "--metrics-path", "/metrics")
    pcap = tmp_path / "demo.pcap"

    def frames_sent() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            page = resp.read().decode()
        wanted = f'spiceserver_video_frames_total{{display="0",codec="{codec}"}} '
        return sum(int(float(line.split()[-1])) for line in page.splitlines() if line.startswith(wanted))

    try:
        async with loopback_capture(pcap, port), controlled_client("--port", str(port), "--wait-display", timeout=90) as client:
            deadline = asyncio.get_running_loop().time() + DEMO_DEADLINE
            while await asyncio.to_thread(frames_sent) < 25:
                assert asyncio.get_running_loop().time() < deadline, format_events(client.events, client.stderr)
                await asyncio.sleep(0.2)
    finally:
        await stop(proc)
    create = tshark_fields(pcap, port, "spice.display_stream_codec_type", "spice.display_stream_codec_type")
    assert create and {row[0] for row in create} == {str(CODEC_TYPES[codec])}, create
    data = tshark_fields(pcap, port, "spice.display_stream_data_size", "spice.display_stream_data_size")
    assert len(data) >= 10, data
    malformed = tshark_fields(pcap, port, "_ws.malformed || _ws.expert.severity >= error", "frame.number", "_ws.col.Info")
    assert malformed == [], malformed


def _dominant(window: np.ndarray) -> float:
    """The strongest frequency of a 48 kHz window, to 1 Hz (zero-padded to 1 s)."""
    spec = np.abs(np.fft.rfft(window * np.hanning(len(window)), n=48000))
    return float(np.argmax(spec))


@pytest.mark.parametrize("mode", ["raw", "opus"])
async def test_demo_plays_its_tone_loop_to_spice_gtk(tmp_path: Path, mode: str) -> None:
    """The demo's speaker reaches spice-gtk: 3 s of ``playback-data`` whose 100 ms windows each have
    one of the loop's notes as their strongest frequency (within 5 Hz), every note several times, at the loop's level (RMS of a -18 dBFS sine, -21 dBFS, within 1.5 dB)."""
    from spiceserver.demo_sound import LOOP_LEVEL_DBFS, LOOP_NOTES, rms_dbfs

    out = tmp_path / "playback.raw"
    # raw: the server's --playback-compression off (spice-gtk still has the OPUS cap)
    proc, port = await start_demo("--scene", "static", "--playback-compression", "off" if mode == "raw" else "on")
    lines: list[str] = []
    want = 3 * 48000 * 4
    try:
        await read_until(proc, lines, lambda seen: any(s.startswith("sound: ") for s in seen))
        args = ["--port", str(port), "--enable-audio", "--playback-out", str(out), "--expect-channels", "5"]
        async with controlled_client(*args, timeout=DEMO_DEADLINE) as client:
            started = await client.expect("playback-start", timeout=DEMO_DEADLINE)
            await client.expect(lambda ev: ev.get("event") == "playback-data" and int(ev["total"]) >= want, timeout=DEMO_DEADLINE)
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
    finally:
        await stop(proc)
    assert (started["channels"], started["rate"]) == (2, 48000)
    opened = [e for e in client.events if e.get("event") == "channel-event" and e.get("name") == "OPENED" and e.get("type") == 5]
    assert opened, format_events(client.events)
    pcm = out.read_bytes()[:want]
    left = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2)[:, 0].astype(np.float64)
    seen: dict[float, int] = {}
    worst = 0.0
    for k in range(0, len(left) - 4800 + 1, 4800):
        window = left[k : k + 4800]
        hz = _dominant(window)
        note = min(LOOP_NOTES, key=lambda n: abs(n - hz))
        assert abs(note - hz) <= 5.0, (k, hz)
        worst = max(worst, abs(note - hz))
        seen[note] = seen.get(note, 0) + 1
    level = rms_dbfs(pcm)
    print(f"demo tone loop, {mode}: windows per note {seen}, largest deviation {worst:.1f} Hz, level {level:.2f} dBFS")
    assert all(seen.get(n, 0) >= 3 for n in LOOP_NOTES), seen
    assert abs(level - (LOOP_LEVEL_DBFS - 3.0)) <= 1.5, (mode, level)


async def test_demo_no_audio_offers_no_sound_channel() -> None:
    """``demo --no-audio``: spice-gtk, with audio enabled, gets neither a playback nor a record
    channel in the list (the demo without it offers playback: the test above)."""
    proc, port = await start_demo("--no-audio", "--scene", "static")
    try:
        code, events, err = await run_gi_client("--port", str(port), "--enable-audio", "--expect-channels", "4", timeout=30)
    finally:
        out = await stop(proc)
    assert code == 0, format_events(events, err)
    types = {e["type"] for e in events if e.get("event") == "channel-new"}
    assert {1, 2, 3, 4} <= types and not types & {5, 6}, types
    assert "sound:" not in out and "microphone:" not in out


@pytest.mark.parametrize("mode", ["raw", "opus"])
async def test_demo_prints_the_level_a_client_records(tmp_path: Path, mode: str) -> None:
    """spice-gtk records 2.5 s of a 440 Hz tone at -12 dBFS peak (RMS -15.05 dBFS) into the demo's
    microphone: the demo prints the start (with the client's mode), a level per second of it
    (within 0.5 dB raw, 1.5 dB Opus), and the stop when the client leaves."""
    n = np.arange(int(2.5 * 48000))
    mono = np.rint(32767 * 10 ** (-12 / 20) * np.sin(2 * np.pi * 440 * n / 48000)).astype("<i2")
    tone = tmp_path / "tone.raw"
    tone.write_bytes(np.repeat(mono, 2).tobytes())
    proc, port = await start_demo("--scene", "static")
    lines: list[str] = []
    env = {"SPICE_DISABLE_OPUS": "1"} if mode == "raw" else {}
    try:
        await read_until(proc, lines, lambda seen: any(s.startswith("microphone: ") for s in seen))
        args = ["--port", str(port), "--enable-audio", "--record-in", str(tone), "--expect-channels", "6"]
        async with controlled_client(*args, timeout=DEMO_DEADLINE, env=env) as client:
            await client.expect("record-sent", timeout=DEMO_DEADLINE)
            await read_until(proc, lines, lambda seen: sum(s.startswith("record level ") for s in seen) >= 2)
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        await read_until(proc, lines, lambda seen: "record stop" in seen)
    finally:
        lines += (await stop(proc)).splitlines()
    assert f"record start ({mode})" in lines, lines
    levels = [float(s.split()[2]) for s in lines if s.startswith("record level ")]
    print(f"demo record level, {mode}: {levels} dBFS")
    assert len(levels) == 2, lines
    assert all(abs(v - (-15.05)) <= (0.5 if mode == "raw" else 1.5) for v in levels), levels
    assert lines.index(f"record start ({mode})") < lines.index("record stop")


async def test_demo_smartcard_prints_the_card_and_its_answer(tmp_path: Path) -> None:
    """``demo --smartcard`` with spice-gtk's libcacard software card (an NSS database of three
    certificates): the demo prints the reader, the card's ATR and its answer to a SELECT of the CAC
    applet; removing the card is printed too."""
    from tests.support.nssdb import certutil_available, make_nss_db

    if not certutil_available():
        pytest.skip("certutil (libnss3-tools) is not installed")
    db = make_nss_db(tmp_path / "nss")
    proc, port = await start_demo("--smartcard", "--no-audio", "--scene", "static")
    lines: list[str] = []
    try:
        await read_until(proc, lines, lambda seen: any(s.startswith("smartcard: ") for s in seen))
        async with controlled_client("--port", str(port), "--smartcard-db", str(db), timeout=DEMO_DEADLINE) as client:
            await read_until(proc, lines, lambda seen: any("SELECT CAC applet" in s for s in seen))
            ev = await client.action({"op": "card_remove"})
            assert ev.get("ok") is True, ev
            await read_until(proc, lines, lambda seen: any("card removed" in s for s in seen))
    finally:
        lines += (await stop(proc)).splitlines()
    print("\n".join(s for s in lines if s.startswith("smartcard")))
    assert "smartcard 0: reader 'Spice Software Smartcard' added" in lines, lines
    assert any(s.startswith("smartcard 0: card inserted, ATR 3b") for s in lines), lines
    (answer,) = [s for s in lines if "SELECT CAC applet" in s]
    assert "success" in answer, answer


async def test_demo_usbredir_prints_a_redirected_device(tmp_path: Path) -> None:
    """``demo --usbredir 2`` with spice-gtk's emulated shared CD redirected: the demo prints the
    device with its descriptors (read through the pyusb backend), then its leaving."""
    iso = tmp_path / "cd.iso"
    iso.write_bytes(b"hello iso\n".ljust(2 * 1024 * 1024, b"\0"))
    proc, port = await start_demo("--usbredir", "2", "--no-audio", "--scene", "static")
    lines: list[str] = []
    try:
        await read_until(proc, lines, lambda seen: any(s.startswith("usbredir: ") for s in seen))
        args = ["--port", str(port), "--usb-cd", str(iso), "--expect-channels", "4"]
        async with controlled_client(*args, timeout=DEMO_DEADLINE) as client:
            await client.expect("usb-device-added", shared_cd=True, timeout=30)
            await client.action({"op": "usb_cd_connect"})
            ev = await client.expect("usb-connected", timeout=30)
            assert ev["ok"], ev
            await read_until(proc, lines, lambda seen: any("Mass Storage" in s for s in seen))
        await read_until(proc, lines, lambda seen: any("left usbredir channel" in s for s in seen))
    finally:
        lines += (await stop(proc)).splitlines()
    text = "\n".join(lines)
    print(text)
    assert "ID 2b23:cdcd" in text and "Interface 0 alt 0: class 08/06/50 (Mass Storage)" in text, text
    assert "USB 2b23:cdcd left usbredir channel" in text, text
