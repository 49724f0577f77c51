"""spice-gtk shows exactly what the server drew: framebuffer path, pixel for pixel.

The client (gi_client.py, SpiceClientGLib) writes its display-0 primary surface as PPM when asked;
the test asks until the picture is the one it waits for (or a deadline passes) and compares it with
the server's canvas and with the frame the host gave. spicy-screenshot (spice-client-gtk) is checked
the same way.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from spiceserver.desktop import SyntheticDesktop
from spiceserver.worker.cursor_client import CursorShape
from tests.conftest import start_server
from tests.interop.harness import controlled_client, format_events, read_ppm, same_picture

__all__ = ["assert_same", "read_ppm"]  # shared with test_qxl_spicegtk and test_demo

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]


def assert_same(shown: np.ndarray, want: np.ndarray) -> None:
    assert shown.shape == want.shape, (shown.shape, want.shape)
    bad = np.argwhere(shown != (want & 0xFFFFFF))
    assert bad.size == 0, f"{len(bad)} pixels differ, first at (y, x) {tuple(bad[0])}: {shown[tuple(bad[0])]:#08x} != {want[tuple(bad[0])]:#08x}"


async def test_static_desktop_pixel_for_pixel(tmp_path: Path) -> None:
    r = await start_server()
    desktop = SyntheticDesktop(640, 480)
    fb = r.server.add_framebuffer_display(640, 480)
    frame = desktop.frame(0.0)
    fb.update(frame)
    try:
        async with controlled_client("--port", str(r.server.port_of()), "--wait-display") as client:
            shown = await client.wait_picture(same_picture(frame))
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        assert shown is not None, format_events(client.events, client.stderr)
        assert_same(shown, fb.snapshot())
        assert_same(shown, frame)
    finally:
        await r.server.close()


async def test_updates_cache_hits_and_resize(tmp_path: Path) -> None:
    r = await start_server()
    desktop = SyntheticDesktop(640, 480)
    fb = r.server.add_framebuffer_display(640, 480)
    fb.update(desktop.frame(0.0))
    try:
        async with controlled_client("--port", str(r.server.port_of()), "--wait-display", timeout=60) as client:
            # animation frames, then back to earlier content (pixmap cache hits), then the final frame;
            # each one shown by the client before the next (so none is merged into the next)
            for t in (0.5, 1.0, 1.5, 0.5, 1.0, 2.0):
                frame = desktop.frame(t)
                fb.update(frame)
                shown = await client.wait_picture(same_picture(frame))
                assert shown is not None, format_events(client.events, client.stderr)
                assert_same(shown, frame)
            stats = [c["images"] for c in r.server.display_stats()["clients"]]
            assert len(stats) == 1 and stats[0]["from_cache"] > 0, stats
            assert stats[0]["glz"] + stats[0]["quic"] > 0, stats  # auto_glz, the default
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)

        # a resolution change: the client follows the new primary surface
        fb.resize(800, 600)
        big = SyntheticDesktop(800, 600).frame(0.0)
        fb.update(big)
        async with controlled_client("--port", str(r.server.port_of()), "--wait-display") as client:
            shown = await client.wait_picture(same_picture(big))
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        assert shown is not None
        assert_same(shown, big)
    finally:
        await r.server.close()


async def test_cursor_shape_and_position() -> None:
    r = await start_server()
    r.server.remove_tablet()  # server mouse mode, so the server's MOVE messages are shown
    fb = r.server.add_framebuffer_display(320, 240)
    fb.update(np.zeros((240, 320), dtype=np.uint32))
    # a 4x3 ARGB cursor with distinct pixels
    px = np.array([[0xFF102030 + i * 0x010101 for i in range(4 * r_, 4 * r_ + 4)] for r_ in range(3)], dtype=np.uint32)
    fb.set_cursor(CursorShape(unique=42, type=0, width=4, height=3, hot_x=1, hot_y=2, data=px.tobytes()), 100, 50)
    try:
        async with controlled_client("--port", str(r.server.port_of()), "--expect-channels", "4", "--wait-display") as client:
            cset = await client.expect("cursor-set")
            fb.move_cursor(120, 70)
            await client.expect("cursor-move", x=120, y=70)
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        assert (cset["width"], cset["height"], cset["hot_x"], cset["hot_y"]) == (4, 3, 1, 2)
        rgba = bytes.fromhex(cset["rgba"])
        argb = px.reshape(-1)
        want = b"".join(bytes([(v >> 16) & 255, (v >> 8) & 255, v & 255, v >> 24]) for v in argb.tolist())
        assert rgba == want
    finally:
        await r.server.close()


@pytest.mark.skipif(shutil.which("spicy-screenshot") is None, reason="spicy-screenshot not installed (Debian spice-client-gtk)")
async def test_spicy_screenshot(tmp_path: Path) -> None:
    r = await start_server()
    fb = r.server.add_framebuffer_display(640, 480)
    frame = SyntheticDesktop(640, 480).frame(0.0)
    fb.update(frame)
    try:
        out = tmp_path / "spicy.ppm"
        proc = await asyncio.create_subprocess_exec(
            "spicy-screenshot", "-h", "127.0.0.1", "-p", str(r.server.port_of()), "-o", str(out),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        so, se = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, (so, se)
        assert_same(read_ppm(out), frame)
    finally:
        await r.server.close()



#: what each --image-compression value must put on the wire for spice-gtk (it has the LZ4 cap and a
#: GLZ window); BITMAP may appear for images too small to compress.
MODES = {
    "off": {"bitmap"},
    "auto_glz": {"glz", "quic"},
    "auto_lz": {"lz", "quic"},
    "quic": {"quic"},
    "glz": {"glz"},
    "lz": {"lz"},
    "lz4": {"lz4"},
}


@pytest.mark.parametrize("mode", list(MODES))
async def test_each_image_compression_pixel_for_pixel(tmp_path: Path, mode: str) -> None:
    """Desktop-like and photo-like content through each image-compression mode: spice-gtk shows the
    server's canvas exactly (lossless modes), and the codecs used are the ones the mode asks for."""
    r = await start_server(image_compression=mode, jpeg_wan_compression="never")
    fb = r.server.add_framebuffer_display(640, 480)
    desktop = SyntheticDesktop(640, 480)
    fb.update(desktop.frame(0.0))
    try:
        async with controlled_client("--port", str(r.server.port_of()), "--wait-display", timeout=40) as client:
            for t in (0.7, 1.4):  # animation frames: text, the photo window and a sliding window
                fb.update(desktop.frame(t))
            shown = await client.wait_picture(same_picture(desktop.frame(1.4)))
            stats = r.server.display_stats()["clients"][0]["images"]  # all sent: the client shows it
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        assert shown is not None, format_events(client.events, client.stderr)
        assert_same(shown, desktop.frame(1.4))
        used = {k for k in ("bitmap", "quic", "lz", "glz", "lz4", "zlib_glz", "jpeg") if stats[k]}
        assert used - {"bitmap"} <= MODES[mode] and (used & MODES[mode]), (mode, stats)
    finally:
        await r.server.close()


async def test_jpeg_within_error_bound(tmp_path: Path) -> None:
    """jpeg-wan-compression=always: photo-like images go as JPEG; spice-gtk's picture stays within
    a mean error of 3 levels per channel (max 96) of the server's lossless canvas."""
    r = await start_server(jpeg_wan_compression="always")
    fb = r.server.add_framebuffer_display(512, 320)
    photo = np.tile(SyntheticDesktop._photo(256, 160), (2, 2))
    fb.update(photo)
    def chans(a: np.ndarray) -> np.ndarray:
        return np.stack([(a >> s) & 255 for s in (16, 8, 0)], -1).astype(int)

    def error(shown: np.ndarray) -> np.ndarray:
        return np.abs(chans(shown) - chans(photo & 0xFFFFFF)) if shown.shape == photo.shape else np.full(1, 255)

    try:
        async with controlled_client("--port", str(r.server.port_of()), "--wait-display") as client:
            # the whole photo shown: within the bound (a part not drawn yet is far outside it)
            shown = await client.wait_picture(lambda p: bool(error(p).mean() < 3 and error(p).max() <= 96))
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        assert shown is not None, format_events(client.events, client.stderr)
        err_px = error(shown)
        assert err_px.mean() < 3 and err_px.max() <= 96, (err_px.mean(), err_px.max())
        assert not np.array_equal(shown, photo & 0xFFFFFF)  # it really was lossy
    finally:
        await r.server.close()



def _scene(seed: int, w: int = 320, h: int = 200) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.uint32)
    return ((xx * 255 // w) << 16) | ((yy * 255 // h) << 8) | (seed * 40 % 256)


def _blocks(seed: int, shift: int = 0, w: int = 320, h: int = 200) -> np.ndarray:
    """Desktop-like content (8x8 blocks of a few colours: GLZ, not Quic), rolled ``shift`` pixels right."""
    rng = np.random.default_rng(seed)
    small = rng.choice(np.array([0x202020, 0xE0E0E0, 0x3060C0, 0xC04020, 0x20A040], np.uint32), size=(h // 8, w // 8))
    return np.roll(np.repeat(np.repeat(small, 8, 0), 8, 1), shift, axis=1)


async def _two_display_steps(steps: list[tuple[int, np.ndarray]], *client_args: str) -> list[dict[str, int]]:
    """Two framebuffer displays, one spice-gtk session: show each (display, frame) in turn, each one
    on screen (display N's primary in spice-gtk) before the next; return each display's image stats."""
    r = await start_server()
    fbs = [r.server.add_framebuffer_display(320, 200) for _ in range(2)]
    for fb in fbs:
        fb.update(_scene(9))
    try:
        async with controlled_client(
            "--port", str(r.server.port_of()), "--expect-channels", "3", "--wait-display", *client_args, timeout=90
        ) as client:  # fmt: skip
            for display in (0, 1):
                assert await client.wait_picture(same_picture(_scene(9)), display=display) is not None
            for i, (display, want) in enumerate(steps):
                fbs[display].update(want)
                shown = await client.wait_picture(same_picture(want), timeout=10, display=display)
                assert shown is not None and np.array_equal(shown, want), (i, display, format_events(client.events, client.stderr))
            stats: list[dict[str, int]] = [r.server.display_stats(i)["clients"][0]["images"] for i in range(2)]
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        return stats
    finally:
        await r.server.close()


async def test_two_displays_one_session_glz_window(tmp_path: Path) -> None:
    """spice-gtk decodes every display channel's GLZ images into one window per session, by image id
    (``decode-glz.c``). Display 1's images must not take the ids of display 0's: display 0's
    scrolled picture refers to its previous one in the window (before the fix: display 1's pixels)."""
    steps = [(0, _blocks(1)), *((1, _blocks(seed)) for seed in range(2, 8)), (0, _blocks(1, shift=8))]
    stats = await _two_display_steps(steps)
    glz = [s["glz"] + s["zlib_glz"] for s in stats]
    assert sorted(glz)[0] == 0 and sorted(glz)[1] > 0, stats  # one display owns the session's window


async def test_two_displays_one_session_pixmap_cache(tmp_path: Path) -> None:
    """spice-gtk keeps one pixmap cache per session, reference counted per CACHE_ME. Content repeated
    across two displays with a cache of two frames: display 1 evicting scene 1 (its INVAL_LIST) leaves
    display 0's reference, so display 0 may still name it FROM_CACHE (else spice-gtk waits for ever)."""
    steps = [(n, _scene(seed)) for n, seed in ((0, 1), (1, 1), (1, 2), (1, 3), (1, 2), (0, 2), (0, 1))]
    stats = await _two_display_steps(steps, "--cache-size", str(2 * 320 * 200 * 4))
    assert all(s["from_cache"] > 0 for s in stats), stats
