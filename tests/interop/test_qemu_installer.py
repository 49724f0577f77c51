"""The Debian 12 installer in QEMU (TCG, 1 GiB), served by ``python -m spiceserver qemu``, shown by
the three clients users run: remote-viewer (virt-viewer), spice-html5 in a browser on the same
port, and spice-gtk -- each time pixel for pixel what QEMU's own ``screendump`` shows.

* The text installer (netboot kernel and initrd, framebuffer console): its language menu in
  remote-viewer (found unscaled in the X screen), then in spice-html5 (headless Chromium loading
  the page from the command's own port), then in spice-gtk, which drives it: the USB tablet makes
  QEMU's mouse absolute (client mouse mode), Caps Lock lights the LED, and arrows and Enter move
  it to its next screen.
* The graphical installer with speech synthesis (``speakup.synth=soft``, as the boot menu's
  speech entry; an HDA codec on the command's D-Bus audiodev) on virtio-vga: espeakup's voice
  reaches spice-gtk's playback, and X's hardware cursor reaches spice-gtk's cursor channel.

Both boots are slow (about a minute or two under TCG) and marked ``slow``; CI runs them. Printed:
the time from the command's start to the first picture in each client.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from tests.interop.harness import controlled_client, format_events
from tests.interop.html5 import html5_client
from tests.support.qemu import QemuVM, qemu_command
from tests.support.remote_viewer import remote_viewer

pytestmark = [pytest.mark.interop, pytest.mark.slow, pytest.mark.usefixtures("gi_client")]

IMAGES = Path("/usr/lib/debian-installer/images/12/amd64")
TEXT = IMAGES / "text/debian-installer/amd64"
GTK = IMAGES / "gtk/debian-installer/amd64"
DOWN = 0x150  # spice-gtk scancodes: E0-prefixed keys are 0x100 | code
ENTER = 0x1C
CAPS_LOCK = 0x3A
CAPS_LED = 4


def share(picture: np.ndarray, colour: int) -> float:
    """The share of ``colour`` in a picture."""
    return float(np.count_nonzero(picture == colour)) / picture.size


def newt_menu(picture: np.ndarray) -> bool:
    """A newt list dialog of the installer: blue screen, grey dialog, the red selection bar (800x600
    before bochs-drm takes over, 1280x800 after)."""
    return share(picture, 0x0000AA) >= 0.05 and share(picture, 0xAAAAAA) >= 0.2 and share(picture, 0xAA0000) >= 0.001


def installer(kind: Path) -> tuple[str, ...]:
    """``-kernel``/``-initrd`` of the netboot installer, or skip."""
    if not (kind / "linux").exists():
        pytest.skip("debian-installer-12-netboot-amd64 not installed")
    return "-kernel", str(kind / "linux"), "-initrd", str(kind / "initrd.gz")


async def wait_screen(vm: QemuVM, check: object, what: str, timeout: float = 240.0) -> np.ndarray:
    """Poll QEMU's screendump until ``check(picture)``."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check(picture := await vm.screendump()):
        if time.monotonic() > deadline:
            colours, counts = np.unique(picture, return_counts=True)
            top = sorted(zip(counts.tolist(), colours.tolist(), strict=True), reverse=True)[:4]
            raise AssertionError(f"no {what}: screen {picture.shape}, top colours {top}, {await vm.qmp.execute('query-status')}")
        await asyncio.sleep(0.5)
    return picture


async def test_text_installer_in_remote_viewer_html5_and_spicegtk(tmp_path: Path) -> None:
    args = ("-vga", "std", *installer(TEXT), "-append", "vga=788 --- quiet", "-device", "qemu-xhci", "-device", "usb-tablet")
    async with qemu_command(tmp_path, *args, memory="1024") as (vm, port, lines):
        await wait_screen(vm, newt_menu, "language menu")
        await vm.qmp.execute("stop")  # a stopped VM's screen stays put while each client looks
        want = await vm.screendump()
        assert newt_menu(want)

        async with remote_viewer(f"spice://127.0.0.1:{port}", tmp_path / "remote-viewer") as rv:
            where = await rv.wait_for(want, timeout=90)
            assert where is not None, f"remote-viewer never showed QEMU's picture\n{rv.log()}\n" + "\n".join(lines[-20:])
            print(f"\nDebian installer: command start -> language menu in remote-viewer {time.monotonic() - vm.started:.1f} s "
                  f"(at {where} on its X screen)")  # fmt: skip

        assert any(line.startswith("web client: http://") for line in lines), lines
        async with html5_client(websocket_port=port, own_page=True, workdir=tmp_path / "html5", timeout=30) as page:
            shown = await page.wait_picture(want, timeout=90)
            assert shown is not None and np.array_equal(shown, want), f"spice-html5 shows {None if shown is None else shown.shape}\n{page.log_text()}"
            print(f"Debian installer: the same in spice-html5 {time.monotonic() - vm.started:.1f} s")

        async with controlled_client("--port", str(port), "--wait-display", "--wait-mouse-mode", "client", timeout=240) as client:
            shown = await client.wait_picture(lambda p: np.array_equal(p, want), timeout=60)
            assert shown is not None and np.array_equal(shown, want), format_events(client.events, client.stderr)
            await vm.qmp.execute("cont")
            # the USB tablet: QEMU's mouse is absolute, the server offers client mouse mode
            await client.expect("mouse-mode", mode=2, timeout=60)
            # Caps Lock typed in spice-gtk: Linux lights the LED, QEMU's Modifiers says so, spice-gtk hears it
            await client.action({"op": "key_press_and_release", "scancode": CAPS_LOCK})
            await client.expect(lambda ev: ev.get("event") == "inputs-modifiers" and ev.get("modifiers", 0) & CAPS_LED, timeout=20)
            after = len(client.events)
            await client.action({"op": "key_press_and_release", "scancode": CAPS_LOCK})
            await client.expect(
                lambda ev: ev.get("event") == "inputs-modifiers"
                and not ev["modifiers"] & CAPS_LED
                and any(e is ev for e in client.events[after:]),
                timeout=20,
            )
            for code in (DOWN, DOWN, DOWN, ENTER):
                await client.action({"op": "key_press_and_release", "scancode": code})
            await wait_screen(vm, lambda p: newt_menu(p) and not np.array_equal(p, want), "next screen", timeout=90)
            await vm.qmp.execute("stop")
            want2 = await vm.screendump()
            shown2 = await client.wait_picture(lambda p: np.array_equal(p, want2), timeout=60)
            assert shown2 is not None and np.array_equal(shown2, want2), format_events(client.events, client.stderr)
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)


def voiced_seconds(pcm: bytes, rate: int = 48000, threshold: float = 500.0) -> list[np.ndarray]:
    """The one-second pieces of S16LE stereo ``pcm`` louder than ``threshold`` RMS, as mono floats."""
    samples = np.frombuffer(pcm[: len(pcm) // 4 * 4], "<i2").reshape(-1, 2).astype(np.float64).mean(axis=1)
    pieces = [samples[i : i + rate] for i in range(0, len(samples) - rate + 1, rate)]
    return [p for p in pieces if np.sqrt(np.mean(p**2)) > threshold]


def speech_like(piece: np.ndarray, rate: int = 48000) -> tuple[float, float]:
    """(share of the energy between 80 Hz and 4 kHz, variation of the 50 ms loudness): a voice has
    nearly all its energy in that band and a loudness that comes and goes with the syllables."""
    power = np.abs(np.fft.rfft(piece)) ** 2
    freqs = np.fft.rfftfreq(len(piece), 1 / rate)
    band = float(power[(freqs >= 80) & (freqs <= 4000)].sum() / power[freqs > 20].sum())
    loudness = np.sqrt(np.mean(piece[: len(piece) // 2400 * 2400].reshape(-1, 2400) ** 2, axis=1))
    return band, float(loudness.std() / loudness.mean())


async def test_speech_installer_voice_reaches_spicegtk(tmp_path: Path) -> None:
    """The installer's speech synthesis (espeakup, through an HDA codec on the command's D-Bus
    audiodev) is heard by spice-gtk: seconds of loud audio with a voice's spectrum and rhythm."""
    args = ("-vga", "std", *installer(GTK), "-append", "vga=788 speakup.synth=soft --- quiet")
    args += ("-device", "intel-hda", "-device", "hda-duplex,audiodev=spiceserver")
    pcm = tmp_path / "playback.raw"
    async with (
        qemu_command(tmp_path, *args, memory="1024") as (vm, port, _lines),
        controlled_client("--port", str(port), "--enable-audio", "--playback-out", str(pcm), "--wait-display", timeout=600) as client,
    ):
        await client.expect("playback-start", timeout=480)  # about 80 s on an idle machine, 230 s with load 7
        print(f"\nspeech installer: command start -> the voice starts in spice-gtk {time.monotonic() - vm.started:.1f} s")
        deadline = time.monotonic() + 120
        while len(voiced := voiced_seconds(pcm.read_bytes() if pcm.exists() else b"")) < 3:
            assert time.monotonic() < deadline, f"{pcm.stat().st_size if pcm.exists() else 0} bytes, {len(voiced)} voiced seconds"
            await asyncio.sleep(0.5)
        shapes = [speech_like(p) for p in voiced]
        print("voiced seconds: energy in 80 Hz-4 kHz, loudness variation: " + ", ".join(f"{b:.2f}/{v:.2f}" for b, v in shapes))
        assert all(band > 0.8 for band, _ in shapes), shapes
        assert np.median([v for _, v in shapes]) > 0.2, shapes


def rendered(picture: np.ndarray) -> bool:
    """A GTK screen (antialiased text and a logo), not a console or a blank X screen."""
    return len(np.unique(picture)) >= 64


async def test_graphical_installer_cursor_and_relative_mouse(tmp_path: Path) -> None:
    """The graphical installer on virtio-vga with no tablet: X's hardware cursor reaches spice-gtk
    (CursorDefine -> cursor-set); QEMU's mouse is relative, so the server stays in server mouse mode,
    and spice-gtk's relative motion moves X's cursor, which comes back as cursor moves (MouseSet)."""
    args = ("-vga", "none", "-device", "virtio-vga", *installer(GTK), "-append", "--- quiet")
    async with (
        qemu_command(tmp_path, *args, memory="1024") as (vm, port, _lines),
        controlled_client("--port", str(port), "--wait-display", timeout=400) as client,
    ):
        shape = await client.expect("cursor-set", timeout=300)
        print(f"\ngraphical installer: command start -> X's cursor in spice-gtk {time.monotonic() - vm.started:.1f} s")
        assert (shape["width"], shape["height"]) == (64, 64), shape
        await wait_screen(vm, rendered, "graphical installer", timeout=120)
        await vm.qmp.execute("stop")
        want = await vm.screendump()  # (the hardware cursor is not in it, nor in the primary surface)
        shown = await client.wait_picture(lambda p: np.array_equal(p, want), timeout=60)
        assert shown is not None and np.array_equal(shown, want), format_events(client.events, client.stderr)
        print(f"graphical installer: the same picture in spice-gtk {time.monotonic() - vm.started:.1f} s")
        await vm.qmp.execute("cont")
        modes = [ev["mode"] for ev in client.events if ev.get("event") == "mouse-mode"]
        assert modes[-1:] == [1], modes  # server mode: no tablet, QEMU's mouse is relative

        async def move(dx: int, dy: int) -> tuple[int, int]:
            """Relative motion in spice-gtk; where X's cursor went (the next cursor move)."""
            before = len(client.events)
            await client.action({"op": "motion", "dx": dx, "dy": dy, "buttons": 0})
            ev = await client.expect(lambda ev: ev.get("event") == "cursor-move" and any(e is ev for e in client.events[before:]), timeout=60)
            return ev["x"], ev["y"]

        first = await move(-40, -30)
        second = await move(120, 80)
        print(f"relative motion (+120, +80): X's cursor moved from {first} to {second}")
        assert second[0] > first[0] and second[1] > first[1], (first, second)
