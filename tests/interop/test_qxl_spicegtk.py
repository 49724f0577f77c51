"""spice-gtk shows exactly what a QXL guest drew: real QXL commands through the worker, pixel for pixel.

A :class:`~spiceserver.synthetic_guest.SyntheticGuest` drives an emulated QXL device of our server
through its rings and I/O ports; spice-gtk (gi_client.py) writes its primary surface as PPM when
asked, until the picture is the one expected (or a deadline passes), and the test compares it with
``server.display_snapshot()``.

Most tests connect the client *before* the guest draws, so spice-gtk receives and renders the draw
commands themselves (fills, copies, rops, strokes, text, composites, COPY_BITS ...): a client that
joins afterwards only gets one DRAW_COPY of the server's finished picture, which says nothing about
how each operation is drawn (that path is checked once, with the static desktop). The scene runs
inside ``driver.batch()`` -- queued on the ring, one notification at the end -- so the worker handles
it in a single pass and what reaches the client does not depend on thread timing.

Known rendering difference (tested with a tolerance): dashed (STYLED) strokes. spice-common draws
them with the X server's ``miWideDash`` polygon code; the server's canvas switches a zero-width
Bresenham line on and off along its major axis (``spiceserver/canvas/stroke.py``). Interpolated
scaling, A4 text, alpha blending and composites are pixel-exact.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spiceserver.desktop import ARROW_CURSOR
from spiceserver.synthetic_guest import SCENES, SyntheticGuest
from tests.conftest import Running, start_server
from tests.interop.harness import Event, GiClient, controlled_client, find_events, format_events, same_picture
from tests.interop.test_display_spicegtk import assert_same

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]

SIZES = {"two_monitors": (640, 240)}

PIXEL_EXACT = [
    name
    for name in SCENES
    if name not in ("stroke_styled", "cursor")
]


async def settle(r: Running) -> None:
    """Until the worker has handled every queued command and every display client's pipe is empty."""
    await asyncio.to_thread(r.server.wait_idle)
    deadline = time.monotonic() + 30.0  # only a pipe that never drains hits it
    while any(c["pipe"] for c in r.server.display_stats()["clients"]):
        assert time.monotonic() < deadline, r.server.display_stats()
        await asyncio.sleep(0.02)


@dataclass
class Live:
    shown: np.ndarray  # the client's picture
    want: np.ndarray  # the server's picture
    stats: dict[str, Any]  # the display client's counters once the scene was sent
    client: GiClient
    r: Running
    guest: SyntheticGuest


async def run_live(
    tmp_path: Path,
    scene: Callable[[SyntheticGuest], None],
    size: tuple[int, int] = (320, 240),
    *,
    batch: bool = True,
    until: Callable[[np.ndarray, np.ndarray], bool] | None = None,
    event: Callable[[Event], bool] | None = None,
) -> Live:
    """Client connected first, then ``scene``; the client's picture is taken until ``until(shown,
    want)`` holds (default: equal to the server's), and ``event`` (if given) has been seen. The
    caller closes the server (``live.r.server.close()``)."""
    r = await start_server()
    guest = SyntheticGuest(r.server.add_qxl_device(), *size)
    await asyncio.to_thread(guest.setup)
    try:
        async with controlled_client("--port", str(r.server.port_of()), "--wait-display", timeout=60) as client:

            def draw() -> None:
                if batch:
                    with guest.driver.batch():
                        scene(guest)
                else:
                    scene(guest)

            await asyncio.to_thread(draw)
            await settle(r)
            want = r.server.display_snapshot()
            clients = r.server.display_stats()["clients"]
            assert len(clients) == 1, clients
            done = until or (lambda shown, want: same_picture(want)(shown))
            shown = await client.wait_picture(lambda p: done(p, want), timeout=30)
            assert shown is not None, format_events(client.events, client.stderr)
            if event is not None:
                await client.expect(event)
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        assert not guest.error_seen
        return Live(shown, want, clients[0], client, r, guest)
    except BaseException:
        await r.server.close()
        raise


@pytest.mark.parametrize("name", PIXEL_EXACT)
async def test_scene_pixel_for_pixel(tmp_path: Path, name: str) -> None:
    live = await run_live(tmp_path, SCENES[name], SIZES.get(name, (320, 240)))
    try:
        assert_same(live.shown, live.want)
        assert live.stats["drawables"] > 0, live.stats  # the operations themselves went on the wire
        if name == "cache_hits":
            assert live.stats["images"]["from_cache"] >= 8, live.stats
    finally:
        await live.r.server.close()


async def test_styled_strokes_within_tolerance(tmp_path: Path) -> None:
    """Dashed lines: the dashes may fall differently (see the module docstring), the lines may not."""

    def about_as_much_ink(shown: np.ndarray, want: np.ndarray) -> bool:
        bg = int(want[0, 0]) & 0xFFFFFF
        drawn_c, drawn_s = int((shown != bg).sum()), int(((want & 0xFFFFFF) != bg).sum())
        return shown.shape == want.shape and abs(drawn_c - drawn_s) <= 0.1 * drawn_s

    live = await run_live(tmp_path, SyntheticGuest.scene_stroke_styled, until=about_as_much_ink)
    try:
        shown, want = live.shown, live.want & 0xFFFFFF
        bg = int(want[0, 0])
        assert set(np.unique(shown).tolist()) <= set(np.unique(want).tolist()) | {0x000000, 0xC80000}
        drawn_c, drawn_s = shown != bg, want != bg
        assert drawn_s.sum() > 500
        # about as much ink (same dash lengths), some of it shifted by the dash phase (measured: 16 %)
        assert abs(int(drawn_c.sum()) - int(drawn_s.sum())) <= 0.1 * drawn_s.sum()
        differ = int((shown != want).sum())
        assert differ <= 0.25 * drawn_s.sum(), f"{differ} of {drawn_s.sum()} line pixels differ"
        # every pixel the client drew lies on (or next to) the same lines drawn solid
        solid_guest = SyntheticGuest(live.r.server.add_qxl_device(), 320, 240)
        await asyncio.to_thread(solid_guest.setup)
        await asyncio.to_thread(solid_guest.scene_stroke_styled, dashed=False)
        await asyncio.to_thread(live.r.server.wait_idle, 1)
        solid = (live.r.server.display_snapshot(1) & 0xFFFFFF) != bg
        assert solid.sum() > drawn_s.sum()
        near = solid.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                near |= np.roll(np.roll(solid, dy, axis=0), dx, axis=1)
        assert not (drawn_c & ~near).any()
        assert not (drawn_s & ~solid).any()  # the server's dashes are pieces of its solid lines
    finally:
        await live.r.server.close()


async def test_static_desktop_late_join(tmp_path: Path) -> None:
    """A client joining after the guest drew gets the finished picture (and the cursor)."""
    r = await start_server()
    try:
        guest = SyntheticGuest(r.server.add_qxl_device(), 640, 480)
        await asyncio.to_thread(guest.setup)
        await asyncio.to_thread(guest.draw_static)
        await asyncio.to_thread(r.server.wait_idle)
        want = r.server.display_snapshot()
        async with controlled_client("--port", str(r.server.port_of()), "--expect-channels", "4", "--wait-display") as client:
            shown = await client.wait_picture(same_picture(want))
            await client.expect("cursor-set", width=16, height=24)
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        assert shown is not None
        assert_same(shown, want)
        assert not guest.error_seen
    finally:
        await r.server.close()


async def test_animated_desktop_live(tmp_path: Path) -> None:
    """The whole desktop drawn and animated while the client watches, not batched (a live stream)."""

    def animate(guest: SyntheticGuest) -> None:
        guest.draw_static()
        for i in range(1, 25):
            guest.step(i * 0.21)

    live = await run_live(tmp_path, animate, (640, 480), batch=False)
    try:
        assert_same(live.shown, live.want)
        images = live.stats["images"]
        assert images["from_cache"] > 0 and images["surface"] > 0, live.stats
    finally:
        await live.r.server.close()


async def test_scrolling_is_a_live_copy_bits_stream(tmp_path: Path) -> None:
    """The client is connected before the pane scrolls: it replays every COPY_BITS itself."""

    def scroll(guest: SyntheticGuest) -> None:
        guest.scene_copy_bits(scrolls=40)

    live = await run_live(tmp_path, scroll, batch=False)
    try:
        assert_same(live.shown, live.want)
        assert live.stats["drawables"] >= 40 * 3, live.stats  # copy-bits, fill and text per scrolled line
        done = live.client.done
        assert done is not None and done["invalidates"] > 40, done
    finally:
        await live.r.server.close()


async def test_resolution_change(tmp_path: Path) -> None:
    """The guest switches modes while the client is connected: the client follows the new primary."""

    def change(guest: SyntheticGuest) -> None:
        guest.scene_fill()
        guest.resize(400, 300)
        guest.scene_text()

    live = await run_live(tmp_path, change, batch=False)
    try:
        assert live.want.shape == (300, 400)
        assert_same(live.shown, live.want)
        sizes = [(e["width"], e["height"]) for e in find_events(live.client.events, "display-primary-create")]
        assert sizes[0] == (320, 240) and sizes[-1] == (400, 300), sizes
    finally:
        await live.r.server.close()


async def test_two_monitors_config(tmp_path: Path) -> None:
    def two_heads(ev: Event) -> bool:
        return ev.get("event") == "display-monitors" and len(ev.get("monitors", ())) == 2

    live = await run_live(tmp_path, SyntheticGuest.scene_two_monitors, (640, 240), event=two_heads)
    try:
        assert_same(live.shown, live.want)
        events = live.client.events
        configs = [e["monitors"] for e in find_events(events, "display-monitors") if "monitors" in e]
        heads = [(m["x"], m["y"], m["width"], m["height"]) for m in configs[-1]] if configs else None
        assert heads == [(0, 0, 320, 240), (320, 0, 320, 240)], format_events(events)
    finally:
        await live.r.server.close()


async def test_cursor_set_and_move(tmp_path: Path) -> None:
    """Cursor ring: SET with the ALPHA arrow, then MOVEs (server mouse mode, so MOVE is sent)."""
    r = await start_server()
    r.server.remove_tablet()
    try:
        guest = SyntheticGuest(r.server.add_qxl_device(), 320, 240)
        await asyncio.to_thread(guest.setup)
        await asyncio.to_thread(guest.scene_fill)
        await asyncio.to_thread(guest.set_cursor, 40, 30)
        async with controlled_client("--port", str(r.server.port_of()), "--expect-channels", "4", "--wait-display") as client:
            cset = await client.expect("cursor-set")
            for x, y in ((60, 40), (100, 80), (123, 45)):
                await asyncio.to_thread(guest.move_cursor, x, y)
            await client.expect("cursor-move", x=123, y=45)
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        w, h, px = ARROW_CURSOR
        assert (cset["width"], cset["height"], cset["hot_x"], cset["hot_y"]) == (w, h, 0, 0)
        want = b"".join(bytes([(v >> 16) & 255, (v >> 8) & 255, v & 255, v >> 24]) for v in px.reshape(-1).tolist())
        assert bytes.fromhex(cset["rgba"]) == want
        moves = [(e["x"], e["y"]) for e in find_events(client.events, "cursor-move")]
        assert moves and moves[-1] == (123, 45), format_events(client.events)
        assert guest.cursor_position == (123, 45) and not guest.error_seen
    finally:
        await r.server.close()
