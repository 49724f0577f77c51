"""A capture of a real spice-gtk session with our server decodes in Wireshark's SPICE dissector with
no malformed message (tshark, loopback only)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import start_server
from tests.interop.capture import TSHARK, LoopbackCapture, loopback_capture
from tests.interop.harness import controlled_client, format_events, run_gi_client, same_picture

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]


async def capture_session(pcap: Path, display: str, **server_kw: object) -> LoopbackCapture:
    r = await start_server(**server_kw)
    from spiceserver.desktop import SyntheticDesktop
    from spiceserver.synthetic_guest import SyntheticGuest

    if display == "framebuffer":
        fb = r.server.add_framebuffer_display(320, 240)
        fb.update(SyntheticDesktop(320, 240).frame(0.0))
        later = lambda: fb.update(SyntheticDesktop(320, 240).frame(1.0))  # noqa: E731
    else:
        guest = SyntheticGuest(r.server.add_qxl_device(), 640, 480)
        guest.setup()
        guest.draw_static()

        def later() -> None:
            guest.step(1.0)
            for name in ("scene_blend", "scene_rop3", "scene_transparent", "scene_alpha_blend", "scene_composite", "scene_offscreen"):
                getattr(guest, name)()

    port = r.server.port_of()
    try:
        async with loopback_capture(pcap, port) as cap:
            actions = [
                {"op": "key_press_and_release", "scancode": 0x1E},
                {"op": "key_press", "scancode": 0x148},
                {"op": "key_release", "scancode": 0x148},
                {"op": "position", "x": 5, "y": 6, "display": 0, "buttons": 0},
                {"op": "button_press", "button": 1, "buttons": 1},
                {"op": "button_release", "button": 1, "buttons": 0},
                {"op": "wait", "ms": 300},
            ]
            async with controlled_client(
                "--port", str(port), "--expect-channels", "4", "--wait-display", "--wait-mouse-mode", "client",
                "--actions", json.dumps(actions), timeout=60,
            ) as client:  # fmt: skip
                await client.expect("actions-done")
                # more drawing while the client watches: the dissector sees those messages too
                await asyncio.to_thread(later)
                await asyncio.to_thread(r.server.wait_idle)
                want = r.server.display_snapshot()
                shown = await client.wait_picture(same_picture(want))
                assert shown is not None and same_picture(want)(shown), format_events(client.events, client.stderr)
            assert client.proc.returncode == 0, format_events(client.events, client.stderr)
    finally:
        await r.server.close()
    return cap


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (Debian package tshark)")
@pytest.mark.parametrize("display", ["framebuffer", "qxl"])
async def test_capture_has_no_malformed_spice_message(tmp_path: Path, display: str) -> None:
    pcap = tmp_path / "session.pcap"
    cap = await capture_session(pcap, display, net_test=True)
    fields = subprocess.run(
        [TSHARK or "tshark", "-r", str(pcap), "-Y", "spice", "-T", "fields", "-e", "frame.number", "-e", "_ws.col.Info"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert fields.count("\n") >= 10, (cap.report(), fields)
    for needle in ("Client link message", "Server link message", "Client ticket", "Server INIT", "KEY_SCANCODE", "SURFACE_CREATE", "DRAW_COPY", "MARK"):
        assert needle in fields, (needle, cap.report(), fields[:3000])
    malformed = subprocess.run(
        [TSHARK or "tshark", "-r", str(pcap), "-Y", "_ws.malformed || _ws.expert.severity >= error"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert malformed.strip() == "", (cap.report(), malformed)


#: the SPICE image types each --image-compression value may put on the wire (spice-gtk client);
#: BITMAP (0) is allowed everywhere for images too small to compress.
DEMO_TYPES = {
    "off": {0},
    "auto_glz": {0, 1, 102},
    "auto_lz": {0, 1, 101},
    "quic": {0, 1},
    "glz": {0, 102},
    "lz": {0, 101},
    "lz4": {0, 109},
}


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (Debian package tshark)")
@pytest.mark.parametrize("mode", list(DEMO_TYPES))
async def test_demo_capture_shows_the_image_types_of_each_mode(tmp_path: Path, mode: str) -> None:
    """`python -m spiceserver demo --image-compression MODE`: the capture (decoded by Wireshark's
    dissector, no malformed message) carries only the image types that mode asks for."""
    from tests.interop.test_demo import start_demo, stop

    # a small framebuffer desktop keeps the raw-bitmap capture small (a 3 MB burst on loopback can
    # overrun dumpcap on a loaded machine); the image choice does not depend on the display path
    proc, port = await start_demo(
        "--scene", "static", "--display", "framebuffer", "--size", "320x240",
        "--image-compression", mode, "--jpeg-wan-compression", "never",
    )
    assert proc.stdout is not None
    while True:  # the demo sends LZ4 / raw until its codec kernels are compiled: wait for them
        line = await asyncio.wait_for(proc.stdout.readline(), 300)
        assert line, "demo exited"
        if b"codec kernels ready" in line:
            break
    pcap = tmp_path / "demo.pcap"
    try:
        async with loopback_capture(pcap, port) as cap:
            code, events, err = await run_gi_client("--port", str(port), "--wait-display", "--linger-ms", "800", timeout=40)
            assert code == 0, format_events(events, err)
    finally:
        await stop(proc)
    out = subprocess.run(
        [TSHARK or "tshark", "-r", str(pcap), "-d", f"tcp.port=={port},spice", "-Y", "spice.image_type", "-T", "fields", "-e", "spice.image_type"],
        capture_output=True, text=True, check=True,
    ).stdout
    types = {int(v) for line in out.split() for v in line.split(",") if v}
    assert types, f"no image in the capture: {cap.report()}"
    assert types <= DEMO_TYPES[mode] and types - {0} if mode != "off" else types == {0}, (mode, types, cap.report())
    malformed = subprocess.run(
        [TSHARK or "tshark", "-r", str(pcap), "-d", f"tcp.port=={port},spice", "-Y", "_ws.malformed"], capture_output=True, text=True, check=True
    ).stdout
    assert malformed.strip() == "", (cap.report(), malformed)


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (Debian package tshark)")
async def test_sound_capture_decodes(tmp_path: Path) -> None:
    """Two spice-gtk sessions in one capture -- Opus (playback and record) and SPICE_DISABLE_OPUS
    (raw both ways) -- with volume and mute: Wireshark decodes MODE/START/VOLUME/MUTE fields and
    finds no malformed message."""
    from spiceserver.codecs.opus import opus_available
    from tests.interop.harness import tone_sequence, write_paced
    from tests.interop.test_sound_spicegtk import HostMic

    if not opus_available():
        pytest.skip("Opus needs PyAV")
    pcm = tone_sequence([(440.0, 0.5, 0.2), (1000.0, 0.25, 0.1)])
    src = tmp_path / "mic.raw"
    src.write_bytes(pcm)
    r = await start_server(playback_compression=True)
    speaker = r.server.add_playback()
    host = HostMic()
    mic = r.server.add_record(host.on_data)
    speaker.set_volume((1000, 2000))
    speaker.set_mute(True)
    mic.set_volume((3000, 4000))
    port = r.server.port_of()
    pcap = tmp_path / "sound.pcap"
    try:
        async with loopback_capture(pcap, port) as cap:
            for env in ({}, {"SPICE_DISABLE_OPUS": "1"}):
                host.data.clear()
                async with controlled_client("--port", str(port), "--enable-audio", "--record-in", str(src), timeout=60, env=env) as client:
                    await client.expect("channel-event", name="OPENED", type=5)
                    await client.expect("channel-event", name="OPENED", type=6)
                    await client.expect("playback-mute", mute=True)
                    speaker.start()
                    await asyncio.to_thread(write_paced, speaker.write, pcm)
                    speaker.stop()
                    await client.expect("playback-stop")
                    mic.start()
                    await client.expect("record-sent", bytes=len(pcm), timeout=30)
                    await host.wait_bytes(len(pcm))
                    mic.stop()
                    await client.expect("record-stop")
                assert client.proc.returncode == 0, format_events(client.events, client.stderr)
                assert len(host.data) == len(pcm), (env, len(host.data))
    finally:
        await r.server.close()

    def fields(*names: str) -> list[list[str]]:
        argv = [TSHARK or "tshark", "-r", str(pcap), "-d", f"tcp.port=={port},spice", "-Y", "spice", "-T", "fields"]
        for name in names:
            argv += ["-e", name]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        return [line.split("\t") for line in out.splitlines()]

    rows = fields("spice.audio_mode", "spice.audio_frequency", "spice.audio_channels", "spice.audio_volume", "spice.audio_mute")

    def values(col: int) -> set[int]:
        return {int(v) for row in rows for v in row[col].split(",") if v}

    modes, freqs, channels, volumes, mutes = (values(i) for i in range(5))
    assert modes == {1, 3}, (modes, cap.report())  # RAW and OPUS (playback MODE and record MODE)
    assert freqs == {48000} and channels == {2}, (freqs, channels, cap.report())
    # playback MUTE 1; record MUTE 0 goes with its VOLUME (libspice sends MUTE once a volume was set)
    assert {1000, 2000, 3000, 4000} <= volumes and mutes == {0, 1}, (volumes, mutes, cap.report())
    info = [row[0] for row in fields("_ws.col.Info")]
    frames = len(pcm) // 1920
    assert sum(line.count("Server DATA") for line in info) == 2 * frames, (cap.report(), info)
    malformed = subprocess.run(
        [TSHARK or "tshark", "-r", str(pcap), "-d", f"tcp.port=={port},spice", "-Y", "_ws.malformed || _ws.expert.severity >= error"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    # Wireshark 4.0's dissector opens an 8-byte subtree for the client's RECORD MODE, which is 6 bytes
    # (u32 time, u16 mode, no data: spice-gtk and libspice agree), so spice-gtk's MODE is "malformed"
    # and its reassembly loses the client's record DATA that follow; the server's messages are fine
    wireshark_bug = [line for line in malformed if "Client MODE[Malformed Packet]" in line]
    assert len(wireshark_bug) <= 2 and len(malformed) == len(wireshark_bug), (cap.report(), malformed)
