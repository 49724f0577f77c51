"""The QEMU audio bridge (:mod:`spiceserver.qemu.audio`) against QEMU 7.2's D-Bus audio backend.

A paused TCG QEMU with ``-audiodev dbus`` and an HDA codec (``intel-hda`` + ``hda-duplex``), no
guest: registering the out and in listeners makes QEMU announce its voices (``Init`` with the
audiodev's format, ``SetEnabled`` false) on each peer-to-peer connection, which shows the whole
handshake (``RegisterOutListener(h)``/``RegisterInListener(h)``, authentication, our object
answering QEMU's proxy). PCM itself needs a guest that plays or records (the Debian installer's
speech synthesis, ``speakup.synth=soft``: research §5); that test is for later, and the listeners'
handling of ``Write``/``Read`` is covered with a fake caller in ``tests/test_qemu_audio.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dbus_fast import DBusError

from spiceserver.qemu.audio import AUDIO_IFACE, AUDIO_PATH, PcmFormat, attach_audio
from spiceserver.qemu.bus import QmpClient, call
from tests.conftest import start_server
from tests.support.qemu import QemuVM, qemu_argv, require_qemu, start_dbus_daemon

pytestmark = [pytest.mark.interop]


@contextlib.asynccontextmanager
async def qemu_with_audio(directory: Path, audiodev: str) -> AsyncIterator[QemuVM]:
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
            "-device",
            "intel-hda",
            "-device",
            "hda-duplex,audiodev=snd0",
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
