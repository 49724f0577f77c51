"""The synthetic QXL guest against a server with no client.

Every scene goes through the device's rings and I/O ports only; afterwards every command must have
come back through the release ring, no ``QXL_INTERRUPT_ERROR`` may have been raised, and the
picture the worker rendered into guest memory for ``UPDATE_AREA`` must be the server's canvas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from spiceserver.proto.enums import StringFlags
from spiceserver.proto.messages import display as d
from spiceserver.qxl import QXLDeviceConfig
from spiceserver.synthetic_guest import SCENES, GlyphFont, SyntheticGuest, rgb, xywh
from tests.conftest import Running, start_server

#: scenes that need another primary size than the default 320x240
SIZES = {"two_monitors": (640, 240)}


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    r = await start_server()
    try:
        yield r
    finally:
        await r.server.close()


def new_guest(
    r: Running, width: int = 320, height: int = 240, *, config: QXLDeviceConfig | None = None, bottom_up: bool = False
) -> SyntheticGuest:
    guest = SyntheticGuest(r.server.add_qxl_device(config), width, height, bottom_up=bottom_up)
    guest.setup()
    return guest


def check_clean(r: Running, guest: SyntheticGuest) -> np.ndarray:
    """Flush, compare guest memory with the server's canvas, release everything; return the canvas."""
    r.server.wait_idle()
    guest.flush()
    snap = r.server.display_snapshot()
    assert snap.shape == (guest.height, guest.width)
    mem = guest.primary_pixels()
    bad = np.argwhere(mem != snap & 0xFFFFFF)
    assert bad.size == 0, f"{len(bad)} pixels of guest memory differ from the canvas, first at {tuple(bad[0])}"
    guest.destroy_surfaces()
    assert guest.driver.wait_released(5.0), f"not released: {guest.driver.unreleased()}"
    assert guest.driver.released == guest.driver.submitted
    assert not guest.error_seen
    return snap


@pytest.mark.parametrize("name", list(SCENES))
async def test_scene_releases_everything(running: Running, name: str) -> None:
    guest = new_guest(running, *SIZES.get(name, (320, 240)))
    SCENES[name](guest)
    snap = check_clean(running, guest)
    if name != "cursor":
        assert len(np.unique(snap)) >= 3, "the scene drew (almost) nothing"


async def test_scenes_back_to_back_on_one_device(running: Running) -> None:
    guest = new_guest(running)
    for name, scene in SCENES.items():
        if name != "two_monitors":
            scene(guest)
    check_clean(running, guest)


async def test_desktop_animation_recycles_guest_memory(running: Running) -> None:
    # 2 MiB of RAM pages: not every wallpaper band stays resident, and the frame arenas wrap around
    small = QXLDeviceConfig(ram_size=4 << 20, vgamem_size=2 << 20, vram_size=1 << 20)
    guest = new_guest(running, 640, 480, config=small)
    guest.draw_static()
    for i in range(1, 80):
        guest.step(i * 0.13)
    assert guest.driver.arena_switches > guest.driver.FRAME_ARENAS, "the frame arenas never wrapped around"
    snap = check_clean(running, guest)
    assert len(np.unique(snap)) > 1000
    assert guest.cursor_position is not None


async def test_static_desktop_is_deterministic(running: Running) -> None:
    pictures = []
    for _ in range(2):
        guest = new_guest(running, 640, 480)
        guest.draw_static()
        running.server.wait_idle(display_id=len(pictures))
        pictures.append(running.server.display_snapshot(display_id=len(pictures)))
    assert np.array_equal(pictures[0], pictures[1])


async def test_resize_to_another_mode(running: Running) -> None:
    guest = new_guest(running, 640, 480)
    assert (800, 600) in guest.modes
    guest.draw_static()
    guest.step(0.5)
    guest.resize(800, 600)
    guest.draw_static()
    guest.step(0.7)
    snap = check_clean(running, guest)
    assert snap.shape == (600, 800)


async def test_bottom_up_primary(running: Running) -> None:
    guest = new_guest(running, bottom_up=True)
    guest.scene_copy()
    guest.scene_text()
    check_clean(running, guest)


def inked(row: bytes, depth: int) -> int:
    """Pixels of a packed glyph row with at least half coverage."""
    if depth == 1:
        return sum(bin(b).count("1") for b in row)
    return sum(int(b >> 4 > 7) + int(b & 15 > 7) for b in row)


def test_glyph_font_rasterizes_packed_bottom_up_glyphs() -> None:
    for depth, flag in ((1, StringFlags.RASTER_A1), (4, StringFlags.RASTER_A4)):
        font = GlyphFont(13, depth)
        got = font.string("Ag x", 10, 20)
        assert got is not None
        string, box = got
        assert string.flags == flag and string.glyphs is not None and len(string.glyphs) == 3  # the blank has no glyph
        for g in string.glyphs:
            assert len(g.data) == (g.width * depth + 7) // 8 * g.height
            assert box.left <= g.render_pos.x + g.glyph_origin.x and g.render_pos.y + g.glyph_origin.y >= box.top
        assert box.top < 20 < box.bottom  # "g" descends below the baseline
        # "T" is a wide bar on a narrow stem: stored bottom-up, the last row is the widest
        t = font.glyph("T")
        stride = (t.width * depth + 7) // 8
        rows = [t.data[i * stride : (i + 1) * stride] for i in range(t.height)]

        assert inked(rows[-1], depth) > 2 * inked(rows[0], depth)
    assert GlyphFont().string("   ", 0, 0) is None


async def test_monitors_config_goes_through_async_io(running: Running) -> None:
    guest = new_guest(running, 640, 240)
    guest.scene_two_monitors()
    heads = running.server.display_stats()["monitors"]
    assert isinstance(heads, d.MonitorsConfig)
    assert [(h.x, h.y, h.width, h.height) for h in heads.heads] == [(0, 0, 320, 240), (320, 0, 320, 240)]
    check_clean(running, guest)


# --- server behaviour a guest relies on ----------------------------------------------------------------


async def test_guest_that_never_renotifies_is_not_stalled(running: Running) -> None:
    guest = new_guest(running)
    guest.driver.kick_after = None  # rely on the ring protocol alone, as the Linux driver does
    guest.driver.timeout = 3.0
    for i in range(300):
        guest.fill(xywh(i % 300, (i * 7) % 220, 20, 20), rgb(i % 256, (i * 3) % 256, (i * 7) % 256))
    check_clean(running, guest)


async def test_destroy_primary_processes_queued_commands_first(running: Running) -> None:
    guest = new_guest(running)
    with guest.driver.batch():  # commands on the ring, no notification yet
        for i in range(5):
            guest.fill(xywh(i * 10, 0, 10, 10), rgb(255, 0, 0))
        guest.driver.destroy_primary()
    assert guest.driver.wait_released(5.0)
    assert not guest.error_seen


async def test_destroy_all_surfaces_resets_the_cursor(running: Running) -> None:
    """QXL_IO_DESTROY_ALL_SURFACES resets the cursor channel too (libspice handle_dev_destroy_surfaces)."""
    from spiceserver.proto.enums import ChannelType
    from spiceserver.proto.messages import base as bm
    from spiceserver.proto.messages import cursor as cm
    from spiceserver.qxl import IOPort
    from tests.support.client import connect

    guest = new_guest(running)
    guest.set_cursor(10, 20)
    running.server.wait_idle()
    s = await connect(running.ep)
    cur = await s.link(ChannelType.CURSOR)
    init = await cur.expect(cm.CursorInit, skip=(bm.SetAck,))
    assert init.visible == 1 and init.cursor.header is not None
    guest.device.io_write(IOPort.DESTROY_ALL_SURFACES, 0)
    await cur.expect(cm.CursorReset)
