"""spice-html5 (in headless Chromium) shows exactly what the server drew, pixel for pixel.

The browser's display canvas is read back (``getImageData``) and compared with the server's own
picture (``server.display_snapshot()``) and with the frame the host gave. The comparison is on pixels,
not on image types: today the framebuffer path reaches spice-html5 as raw BITMAP (spice-html5 has no
LZ4 and we have no Quic/LZ yet) plus FROM_CACHE; the same tests must keep passing once the server
sends QUIC / LZ_RGB, and the ``image_compression`` parametrization runs them per codec as soon as
``ServerConfig`` accepts the value (until then: skipped, "codec not available yet").

Most tests put websockify between the browser and the SPICE port, as libspice deployments do; the
``direct`` and ``page_and_session`` tests use the server's own WebSocket support and web root
instead. See ``tests/interop/html5.py`` and the README's html5 section. The browser gets a ticket.js with its
leading-zero RSA bug fixed (else ~1 link in 150 fails at random); ``test_short_ticket_from_html5``
checks the server side of that bug deterministically, without a browser.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spiceserver import ServerConfig
from spiceserver.desktop import SyntheticDesktop
from spiceserver.errors import NotSupportedError
from spiceserver.ticket import LinkKey, encrypt_ticket
from spiceserver.worker.cursor_client import CursorShape
from tests.conftest import Running, start_server
from tests.interop.html5 import HTML5_DIR, Html5Page, describe_diff, html5_client
from tests.support.certs import make_test_ca

pytestmark = [pytest.mark.interop]

W, H = 640, 480
COMPRESSIONS = ("off", "auto_lz", "quic", "lz")


@pytest.fixture(params=[None, *COMPRESSIONS], ids=lambda v: f"compression-{v or 'default'}")
def image_compression(request: pytest.FixtureRequest) -> dict[str, Any]:
    """``start_server`` kwargs for one ``image_compression`` value; skipped while the codec is missing."""
    value = request.param
    if value is None:
        return {}
    try:
        ServerConfig(port=0, image_compression=value)
    except NotSupportedError as exc:
        pytest.skip(f"codec not available yet: image_compression={value!r} ({exc})")
    except TypeError:
        pytest.skip("codec not available yet: ServerConfig has no image_compression")
    return {"image_compression": value}


def encoder_stats(r: Running) -> list[dict[str, int]]:
    """What the server sent to each display client (image types), for failure messages only."""
    try:
        stats: list[dict[str, int]] = [c["images"] for c in r.server.display_stats()["clients"]]
    except Exception as exc:  # internal API; informative only
        return [{"unavailable": 0, str(exc): 0}]
    return stats


def assert_clean(page: Html5Page) -> None:
    """spice-html5 reported no error and met nothing it cannot handle (its FIXME / unknown-message warnings).
    ``known_unimplemented`` notices (MARK, INVAL_ALL_PALETTES, MULTI_MEDIA_TIME, ...) are fine."""
    bad = page.errors() + [w for w in page.warnings() if "FIXME" in w or "Unknown message type" in w]
    assert not bad, "spice-html5 complained:\n" + "\n".join(bad) + "\n" + page.log_text()


async def assert_shows(page: Html5Page, r: Running, want: np.ndarray | None = None, timeout: float = 8.0) -> None:
    """The canvas becomes the server's picture (and ``want``, the host's frame, when given)."""
    target = (lambda: r.server.display_snapshot()) if want is None else want
    shown = await page.wait_picture(target, timeout=timeout)
    snap = r.server.display_snapshot()
    ctx = f"\nserver sent: {encoder_stats(r)}\n{page.log_text()}"
    assert shown is not None and shown.shape == snap.shape, describe_diff(shown, snap) + ctx
    assert np.array_equal(shown, snap & 0xFFFFFF), "vs server snapshot: " + describe_diff(shown, snap) + ctx
    if want is not None:
        assert np.array_equal(shown, want & 0xFFFFFF), "vs host frame: " + describe_diff(shown, want) + ctx


async def test_static_desktop_pixel_for_pixel(image_compression: dict[str, Any]) -> None:
    r = await start_server(**image_compression)
    fb = r.server.add_framebuffer_display(W, H)
    frame = SyntheticDesktop(W, H).frame(0.0)
    fb.update(frame)
    try:
        async with html5_client(r.server.port_of()) as page:
            info = await page.wait_canvas()
            assert (info["w"], info["h"], info["id"]) == (W, H, "spice_surface_0"), info
            await assert_shows(page, r, frame)
            assert_clean(page)
    finally:
        await r.server.close()


@pytest.mark.parametrize("compression", ["quic", "lz"])
async def test_direct_websocket_pixel_for_pixel(compression: str) -> None:
    """No websockify: the browser's WebSocket goes straight to the server's SPICE port. The page
    comes from another origin (the harness's static server), which must be allowed."""
    r = await start_server(image_compression=compression, websocket_origins=("*",))
    fb = r.server.add_framebuffer_display(W, H)
    frame = SyntheticDesktop(W, H).frame(2.0)
    fb.update(frame)
    try:
        async with html5_client(websocket_port=r.server.port_of(), path="") as page:
            await page.wait_canvas()
            await assert_shows(page, r, frame)
            assert_clean(page)
            assert r.server.stats["websocket_links"] >= 3  # main, display, inputs (+ cursor)
            frame2 = SyntheticDesktop(W, H).frame(5.0)
            fb.update(frame2)
            await assert_shows(page, r, frame2)
    finally:
        await r.server.close()


async def test_page_and_session_from_the_server_port() -> None:
    """What a user does: open http://host:port/ of the SPICE server itself. The server serves
    Debian's spice-html5 from its web root, and the page connects back over WebSocket."""
    password = "pw 1"
    r = await start_server(password=password, web_root=str(HTML5_DIR))
    fb = r.server.add_framebuffer_display(W, H)
    frame = SyntheticDesktop(W, H).frame(3.0)
    fb.update(frame)
    try:
        async with html5_client(websocket_port=r.server.port_of(), password=password, own_page=True) as page:
            await page.wait_canvas()
            await assert_shows(page, r, frame)
            assert_clean(page)
            assert r.server.stats["http_requests"] >= 5  # the page and its modules
    finally:
        await r.server.close()


async def test_https_page_and_wss_session_from_the_tls_port(tmp_path: Path) -> None:
    """The same over TLS: https://host:tls-port/ serves the page, which connects with wss://."""
    make_test_ca(tmp_path)
    r = await start_server(port=None, tls_port=0, x509_dir=str(tmp_path), web_root=str(HTML5_DIR))
    fb = r.server.add_framebuffer_display(W, H)
    frame = SyntheticDesktop(W, H).frame(4.0)
    fb.update(frame)
    try:
        async with html5_client(websocket_port=r.server.port_of(secure=True), own_page=True, https=True) as page:
            await page.wait_canvas()
            await assert_shows(page, r, frame)
            assert_clean(page)
            assert r.server.stats["websocket_links"] >= 3
    finally:
        await r.server.close()


async def test_password() -> None:
    password = "s3cret +&%"  # spice_auto.html decodes '+' as ' ': the helper must percent-encode
    r = await start_server(password=password)
    fb = r.server.add_framebuffer_display(W, H)
    frame = SyntheticDesktop(W, H).frame(1.0)
    fb.update(frame)
    try:
        async with html5_client(r.server.port_of(), password=password) as page:
            await page.wait_canvas()
            await assert_shows(page, r, frame)
            assert_clean(page)
    finally:
        await r.server.close()


async def test_wrong_password_is_permission_denied() -> None:
    r = await start_server(password="s3cret")
    fb = r.server.add_framebuffer_display(W, H)
    fb.update(SyntheticDesktop(W, H).frame(0.0))
    try:
        async with html5_client(r.server.port_of(), password="wrong") as page:
            # the main channel's link result is SPICE_LINK_ERR_PERMISSION_DENIED -> "Permission denied."
            # -> spice_auto.html prompt()s for a password (left open: dismissing it reconnects forever)
            dialog = await page.wait_event(lambda p: p.dialogs[0] if p.dialogs else None, 8.0, "the password prompt")
            assert dialog["type"] == "prompt" and dialog["message"] == "Password", dialog
            assert any("Permission denied." in line for line in page.console), page.log_text()
    finally:
        await r.server.close()


async def test_live_updates_and_cache_hits() -> None:
    r = await start_server()
    desktop = SyntheticDesktop(W, H)
    fb = r.server.add_framebuffer_display(W, H)
    fb.update(desktop.frame(0.0))
    try:
        async with html5_client(r.server.port_of()) as page:
            await page.wait_canvas()
            await assert_shows(page, r, desktop.frame(0.0))
            # animation frames after the browser connected, then earlier content again (pixmap cache
            # hits: FROM_CACHE of images spice-html5 stored because of CACHE_ME)
            for t in (0.5, 1.0, 1.5, 0.5, 1.0, 2.0):
                frame = desktop.frame(t)
                fb.update(frame)
                await assert_shows(page, r, frame)
            stats = encoder_stats(r)
            if stats and "from_cache" in stats[0]:  # internal counters; only while they exist
                assert stats[0]["from_cache"] > 0, stats
            # a burst with no waiting in between: only the end state matters
            for t in (2.5, 3.0, 3.5, 4.0):
                fb.update(desktop.frame(t))
                await asyncio.sleep(0.02)
            await assert_shows(page, r, desktop.frame(4.0))
            # explicit dirty rectangles, including one at an odd offset and size
            frame = desktop.frame(4.0).copy()
            frame[101:163, 77:300] = 0x00FF8000
            fb.update(frame, dirty=[(77, 101, 300, 163)])
            await assert_shows(page, r, frame)
            assert_clean(page)
    finally:
        await r.server.close()


async def test_resize_while_connected() -> None:
    r = await start_server()
    fb = r.server.add_framebuffer_display(320, 240)
    fb.update(SyntheticDesktop(320, 240).frame(0.0))
    try:
        async with html5_client(r.server.port_of()) as page:
            await page.wait_canvas()
            await assert_shows(page, r)
            fb.resize(W, H)  # SURFACE_DESTROY + SURFACE_CREATE: spice-html5 replaces its canvas
            big = SyntheticDesktop(W, H).frame(0.5)
            fb.update(big)
            await assert_shows(page, r, big)
            assert_clean(page)
    finally:
        await r.server.close()


async def test_cursor_shape() -> None:
    """CURSOR_SET (type ALPHA) becomes a CSS cursor on #spice-screen: a PNG data URL plus the hot spot.

    spice-html5 ignores the shape carried by CURSOR_INIT, so a cursor set before the browser linked
    is not shown; the shape is (re)set while connected until a CURSOR_SET has reached the page. The PNG
    is decoded here, not by the browser (spice-html5 writes a malformed zlib stream, see html5.py)."""
    r = await start_server()
    fb = r.server.add_framebuffer_display(320, 240)
    fb.update(np.zeros((240, 320), dtype=np.uint32))
    px = np.array(
        [[0xFF102030 + i * 0x010101 for i in range(4 * row, 4 * row + 4)] for row in range(3)], dtype=np.uint32
    )
    # not cacheable: spice-html5 has no cursor cache, a FROM_CACHE CURSOR_SET would show an empty PNG
    shape = CursorShape(unique=42, type=0, width=4, height=3, hot_x=1, hot_y=2, data=px.tobytes(), cacheable=False)
    fb.set_cursor(shape, 100, 50)
    try:
        async with html5_client(r.server.port_of()) as page:
            await page.wait_canvas()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 8.0
            cursor = None
            while cursor is None and loop.time() < deadline:
                fb.set_cursor(shape, 100, 50)  # a CURSOR_SET once the cursor channel is linked
                await asyncio.sleep(0.1)
                cursor = await page.read_cursor()
            assert cursor is not None, f"no image cursor on #spice-screen\n{page.log_text()}"
            assert (cursor["w"], cursor["h"], cursor["hot_x"], cursor["hot_y"]) == (4, 3, 1, 2), cursor
            # spice-html5 0.3.0 copies the cursor's B,G,R,A bytes into an RGBA PNG as they are: red and blue
            # come out swapped (spice-gtk shows them right, see test_display_spicegtk). Its quirk, not ours.
            html5_view = (px & 0xFF00FF00) | ((px >> 16) & 0xFF) | ((px & 0xFF) << 16)
            got = cursor["argb"]
            assert np.array_equal(got, html5_view), [f"{v:#010x}" for v in got.ravel().tolist()]
            assert_clean(page)
    finally:
        await r.server.close()


async def test_keyboard_and_mouse() -> None:
    """Browser input events reach the server's devices through spice-html5's inputs channel."""
    r = await start_server()  # with a tablet: client mouse mode, spice-html5 sends MOUSE_POSITION
    fb = r.server.add_framebuffer_display(W, H)
    fb.update(SyntheticDesktop(W, H).frame(0.0))
    try:
        async with html5_client(r.server.port_of()) as page:
            await page.wait_canvas()
            await assert_shows(page, r)  # every channel linked by now, inputs included
            ev = r.devices

            def has(*want: tuple[Any, ...]) -> Callable[[list[tuple[Any, ...]]], bool]:
                return lambda events: all(w in events for w in want)

            await page.key("a", "KeyA", 65)  # spice-html5 maps keyCode 65 to scancode 0x1e
            await ev.wait_for(has(("key", 30, True), ("key", 30, False)))
            await page.mouse("mouseMoved", 100, 50)
            await ev.wait_for(has(("position", 100, 50, 0, 0)))
            await page.mouse("mousePressed", 100, 50, button="left", buttons=1)
            await page.mouse("mouseReleased", 100, 50, button="left", buttons=0)
            await ev.wait_for(has(("buttons", 1), ("buttons", 0)))
            assert ev.events.index(("buttons", 1)) < ev.events.index(("buttons", 0)), ev.events
            assert_clean(page)
    finally:
        await r.server.close()


def test_short_ticket_from_html5() -> None:
    """spice-html5 0.3.0 drops the RSA ciphertext's leading zero bytes and pads at the end instead
    (``BigInteger.toString(16)`` in ticket.js), about 1 link in 150 (checked in Node: 20 of 3000).
    libspice-server fails those links too (PERMISSION_DENIED; spice_auto.html then prompts for a
    password). A server that wants the stock client to link every time retries a failed OAEP decrypt
    with the ciphertext shifted right by k = 1.. (its count of trailing zero bytes) and k zeros in
    front; OAEP's check rejects wrong shifts. No browser needed: the bug is reproduced here."""
    key = LinkKey()
    for _ in range(20000):  # ~1 in 256 ciphertexts starts with a zero byte
        ct = encrypt_ticket(key.public_der, "s3cret")
        if ct[0] == 0:
            break
    else:  # pragma: no cover - odds about e**-78
        pytest.fail("no ciphertext with a leading zero byte")
    assert key.decrypt(ct) == b"s3cret"
    html5_ct = ct[1:] + b"\0"  # what spice-html5 sends for it
    assert key.decrypt(html5_ct) == b"s3cret"
