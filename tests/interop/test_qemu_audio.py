"""The QEMU audio bridge (:mod:`spiceserver.qemu.audio`) against QEMU 7.2's D-Bus audio backend.

A paused TCG QEMU with ``-audiodev dbus`` and an HDA codec (``intel-hda`` + ``hda-duplex``), no
guest: registering the out and in listeners makes QEMU announce its voices (``Init`` with the
audiodev's format, ``SetEnabled`` false) on each peer-to-peer connection, which shows the whole
handshake (``RegisterOutListener(h)``/``RegisterInListener(h)``, authentication, our object
answering QEMU's proxy).

Guest sound end to end: the PC speaker (``-machine pcspk-audiodev=snd0``) and a 22-byte boot
sector that programs PIT channel 2 for 1 kHz (1193182 / 1193 Hz) and turns the speaker on:
QEMU's mixer sends the square wave through ``Write``, the bridge plays it on the playback
channel, and spice-gtk (``--enable-audio --playback-out``) decodes a 1 kHz tone. The client's
microphone: spice-gtk's ``--record-in`` tone fills the ring QEMU's ``Read`` answers from, once the
test makes QEMU's ``SetEnabled`` call itself (no guest opens its microphone here). A guest that
really plays through HDA or records (the Debian installer's speech, ``speakup.synth=soft``:
research §5) is for later; ``Read``'s conversions are covered with a fake caller in
``tests/test_qemu_audio.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from dbus_fast import DBusError

from spiceserver.qemu.audio import AUDIO_IFACE, AUDIO_PATH, PcmFormat, attach_audio
from spiceserver.qemu.bus import QmpClient, call
from spiceserver.qemu.devices import wait_for_qemu
from tests.conftest import start_server
from tests.interop.harness import controlled_client
from tests.support.qemu import QemuVM, qemu_argv, require_qemu, start_dbus_daemon

pytestmark = [pytest.mark.interop]

SPICE_BYTES_PER_SECOND = 48000 * 4


@contextlib.asynccontextmanager
async def qemu_with_audio(directory: Path, audiodev: str, *devices: str) -> AsyncIterator[QemuVM]:
    """Like :func:`tests.support.qemu.start_qemu`, with ``audiodev=snd0`` on ``-display dbus``
    (QEMU 7.2 exports ``/org/qemu/Display1/Audio`` only then: research gotcha 8)."""
    require_qemu()
    async with start_dbus_daemon(directory) as address:
        qmp_path = directory / "qmp.sock"
        argv = qemu_argv(
            f"dbus,addr={address},audiodev=snd0",
            qmp_path,
            "-audiodev",
            audiodev,
            *(devices or ("-device", "intel-hda", "-device", "hda-duplex,audiodev=snd0")),
        )
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
        vm: QemuVM | None = None
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.returncode is None, f"QEMU exited with {proc.returncode}"
                if qmp_path.exists():
                    with contextlib.suppress(ConnectionRefusedError, FileNotFoundError):
                        qmp = await QmpClient.connect(str(qmp_path))
                        break
                assert time.monotonic() < deadline, "QEMU's QMP socket did not come up"
                await asyncio.sleep(0.02)  # polling for the socket itself
            vm = QemuVM(proc, qmp, address, directory)
            yield vm
        finally:
            if vm is not None:
                await vm.stop()
            elif proc.returncode is None:
                proc.kill()
                await proc.wait()


async def wait_for(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_listeners_register_and_hear_the_voices_at_48k(tmp_path: Path) -> None:
    async with qemu_with_audio(tmp_path, "dbus,id=snd0,out.frequency=48000,in.frequency=48000") as vm:
        bus = await vm.bus()
        await wait_for_qemu(bus)  # QEMU takes org.qemu after QMP is up
        r = await start_server()
        audio = None
        try:
            audio = await attach_audio(r.server, bus)
            assert audio.inp is not None
            await wait_for(lambda: audio.out.streams and audio.inp.streams, 10, "QEMU's Init calls")
            want = PcmFormat(16, True, False, 48000, 2, 4)
            assert [s.fmt for s in audio.out.streams.values()] == [want]
            assert [s.fmt for s in audio.inp.streams.values()] == [want]
            assert all(s.resampler is None for s in audio.out.streams.values())  # no conversion needed
            assert not any(s.enabled for s in audio.out.streams.values())  # paused: nothing plays
            assert not audio.playback.playing
            # one listener per bus connection
            with pytest.raises(DBusError, match="already registered"):
                await call(bus, AUDIO_PATH, AUDIO_IFACE, "RegisterOutListener", "h", [0], [0])
        finally:
            if audio is not None:
                audio.close()
            await r.server.close()


async def test_default_44100_is_resampled(tmp_path: Path) -> None:
    async with qemu_with_audio(tmp_path, "dbus,id=snd0") as vm:
        bus = await vm.bus()
        await wait_for_qemu(bus)  # QEMU takes org.qemu after QMP is up
        r = await start_server()
        audio = None
        try:
            audio = await attach_audio(r.server, bus, record=False)
            await wait_for(lambda: audio.out.streams, 10, "QEMU's Init call")
            (stream,) = audio.out.streams.values()
            assert stream.fmt == PcmFormat(16, True, False, 44100, 2, 4)
            assert stream.resampler is not None
        finally:
            if audio is not None:
                audio.close()
            await r.server.close()


#: mov al,0xb6; out 0x43,al (PIT channel 2, square wave); mov ax,1193; out 0x42,al; mov al,ah;
#: out 0x42,al (1000.15 Hz); in al,0x61; or al,3; out 0x61,al (gate and speaker on); jmp $
BEEP = bytes.fromhex("b0b6e643b8a904e64288e0e642e4610c03e661ebfe")


@pytest.mark.usefixtures("gi_client")
async def test_a_guest_beep_reaches_spicegtk(tmp_path: Path) -> None:
    disk = tmp_path / "beep.img"
    disk.write_bytes(BEEP.ljust(510, b"\0") + b"\x55\xaa")
    pcm_out = tmp_path / "playback.raw"
    pc_speaker = ("-machine", "pcspk-audiodev=snd0", "-drive", f"file={disk},format=raw,if=ide")
    async with qemu_with_audio(tmp_path, "dbus,id=snd0,out.frequency=48000", *pc_speaker) as vm:
        bus = await vm.bus()
        await wait_for_qemu(bus)  # QEMU takes org.qemu after QMP is up
        r = await start_server()
        audio = None
        try:
            audio = await attach_audio(r.server, bus, record=False)
            argv = ("--port", str(r.server.port_of()), "--enable-audio", "--playback-out", str(pcm_out))
            async with controlled_client(*argv, timeout=60) as client:
                await client.expect("channel-event", channel="playback", name="OPENED", timeout=15)
                await vm.qmp.execute("cont")
                await client.expect("playback-start", timeout=20)
                half_second = SPICE_BYTES_PER_SECOND // 2
                await client.expect(lambda ev: ev.get("event") == "playback-data" and ev["total"] >= half_second, timeout=30)
            assert audio.out.written >= half_second
        finally:
            if audio is not None:
                audio.close()
            await r.server.close()
    pcm = np.frombuffer(pcm_out.read_bytes(), "<i2").reshape(-1, 2).astype(np.float64)
    assert len(pcm) >= 24000
    left = pcm[-24000:, 0]  # the last half second: the tone is steady by then
    assert (pcm[-24000:, 0] == pcm[-24000:, 1]).all()  # the mono speaker on both channels
    assert np.abs(left).max() > 1000, "silence"
    spectrum = np.abs(np.fft.rfft(left - left.mean()))
    peak_hz = np.argmax(spectrum) * 48000 / len(left)
    assert math.isclose(peak_hz, 1000, abs_tol=4), peak_hz


@pytest.mark.usefixtures("gi_client")
async def test_client_microphone_fills_what_qemu_reads(tmp_path: Path) -> None:
    """spice-gtk's microphone (``--record-in``: a 440 Hz tone) reaches the ring QEMU's ``Read``
    answers from. No guest opens its microphone here, so the test makes the call QEMU makes when one
    does (``SetEnabled(id, true)`` on the in listener: the record channel starts, spice-gtk gets
    RECORD_START), then reads as QEMU's ``Read`` would."""
    tone = np.sin(2 * np.pi * 440 * np.arange(24000) / 48000) * 12000
    mic = tmp_path / "mic.raw"
    mic.write_bytes(np.repeat(tone.astype("<i2")[:, None], 2, axis=1).tobytes())  # 0.5 s stereo
    async with qemu_with_audio(tmp_path, "dbus,id=snd0,out.frequency=48000,in.frequency=48000") as vm:
        bus = await vm.bus()
        await wait_for_qemu(bus)
        r = await start_server()
        audio = None
        try:
            audio = await attach_audio(r.server, bus)
            inp = audio.inp
            assert inp is not None
            await wait_for(lambda: inp.streams, 10, "QEMU's Init")
            (stream_id,) = inp.streams
            argv = ("--port", str(r.server.port_of()), "--enable-audio", "--record-in", str(mic))
            async with controlled_client(*argv, timeout=60) as client:
                await client.expect("channel-event", channel="record", name="OPENED", timeout=15)
                inp.SetEnabled(stream_id, True)  # what QEMU calls when the guest opens its microphone
                await client.expect("record-start", timeout=15)
                await client.expect("record-sent", timeout=30)
                await wait_for(lambda: len(inp.ring) >= 20000 * 4, 15, "the client's samples")
            got = np.frombuffer(inp.read(stream_id, 20000 * 4), "<i2").reshape(-1, 2)[:, 0].astype(np.float64)
        finally:
            if audio is not None:
                audio.close()
            await r.server.close()
    assert np.abs(got).max() > 3000
    spectrum = np.abs(np.fft.rfft(got - got.mean()))
    assert math.isclose(np.argmax(spectrum) * 48000 / len(got), 440, abs_tol=5)


@pytest.mark.usefixtures("gi_client")
async def test_the_qemu_command_plays_the_guest_beep(tmp_path: Path) -> None:
    """``python -m spiceserver qemu -- qemu-system-x86_64 ...`` with no ``-audiodev`` of its own:
    the command adds a 48 kHz D-Bus audiodev named ``spiceserver`` and bridges it, so the PC
    speaker given that audiodev reaches spice-gtk as a 1 kHz tone."""
    from spiceserver.qemu.cli import AUDIODEV_ID
    from tests.support.qemu import drain_output, launch_qemu_command

    disk = tmp_path / "beep.img"
    disk.write_bytes(BEEP.ljust(510, b"\0") + b"\x55\xaa")
    pcm_out = tmp_path / "playback.raw"
    pc_speaker = ("-machine", f"pcspk-audiodev={AUDIODEV_ID}", "-drive", f"file={disk},format=raw,if=ide")
    proc, port, lines = await launch_qemu_command(tmp_path, "-vga", "std", *pc_speaker)
    drain = asyncio.ensure_future(drain_output(proc, lines))
    try:
        argv = ("--port", str(port), "--enable-audio", "--playback-out", str(pcm_out))
        async with controlled_client(*argv, timeout=60) as client:
            await client.expect("playback-start", timeout=30)
            half_second = SPICE_BYTES_PER_SECOND // 2
            await client.expect(lambda ev: ev.get("event") == "playback-data" and ev["total"] >= half_second, timeout=30)
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
        await drain
    left = np.frombuffer(pcm_out.read_bytes(), "<i2").reshape(-1, 2).astype(np.float64)[-24000:, 0]
    assert np.abs(left).max() > 1000, "silence:\n" + "\n".join(lines)
    peak_hz = np.argmax(np.abs(np.fft.rfft(left - left.mean()))) * 48000 / len(left)
    assert math.isclose(peak_hz, 1000, abs_tol=4), peak_hz
