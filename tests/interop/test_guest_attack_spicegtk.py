"""Issue 9 points 1 and 5 with a real client: while a hostile guest sends an overlapping chunk chain,
one-pixel copies of a huge bitmap, surfaces past the device's canvas budget and wild monitors
configs, spice-gtk stays linked and shows the guest's picture, pixel for pixel."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from spiceserver.proto.enums import BrushType, SurfaceFmt
from spiceserver.proto.messages import display as d
from spiceserver.qxl import layout as L
from spiceserver.qxl.device import QXLDeviceConfig
from spiceserver.qxl.guest import GuestDriver
from spiceserver.qxl.layout import CmdType, Interrupt
from tests.conftest import start_server
from tests.interop.harness import controlled_client, format_events, same_picture
from tests.interop.test_display_spicegtk import assert_same
from tests.test_guest_memory import copy_from, huge_bitmap, rect

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]

MiB = 1 << 20


def fill(guest: GuestDriver, color: int, box: d.Rect) -> None:
    body = d.Fill(brush=d.Brush(type=BrushType.SOLID, color=color), rop_descriptor=8, mask=d.QMask())
    assert guest.submit(guest.drawable(body, bbox=box), CmdType.DRAW)


def attack(guest: GuestDriver, wait: Callable[[], None]) -> None:
    """Every guest-memory attack of the issue, each refused or bounded; ``wait`` lets the worker
    drain the ring when it is full."""

    def submit(phys: int, type_: int) -> None:
        while not guest.submit(phys, type_):
            wait()

    # a chunk chain whose data overlaps the next headers
    chain, n = guest.alloc(64 * L.DATA_CHUNK.size + 4096), 64
    for i in range(n):
        here = chain + i * L.DATA_CHUNK.size
        guest.write(here, L.DATA_CHUNK.pack(4096, 0, here + L.DATA_CHUNK.size if i + 1 < n else 0))
    img = huge_bitmap(guest, 8, 8)
    guest.write(img + L.IMAGE_UNION_OFF, struct.pack("<BBIII", 8, 4, 1024, n, 4096))  # BIT32, TOP_DOWN, chunked
    guest.write(img + L.IMAGE_UNION_OFF + 22, struct.pack("<Q", chain))
    guest.write(img + 10, struct.pack("<II", 1024, n))
    submit(copy_from(guest, img, rect(0, 0, 1, 1), rect(0, 0, 1, 1)), CmdType.DRAW)
    # eight one-pixel copies of one 2048x2048 bitmap
    big = huge_bitmap(guest, 2048, 2048)
    for i in range(8):
        submit(copy_from(guest, big, rect(200 * i, 9, 200 * i + 1, 10), rect(20 + 10 * i, 20, 21 + 10 * i, 21)), CmdType.DRAW)
    # 24 surfaces of 1024x1024 on the same 4 MiB of VRAM: the budget takes 2 x 36 MiB, 18 of them
    data = guest.alloc(4 * MiB, vram=True, align=4096)
    for sid in range(1, 25):
        phys = guest.alloc(L.SURFACE_CMD.size)
        guest.write(phys, L.SURFACE_CMD.pack(phys, sid, 0, 0, SurfaceFmt.FMT_32_XRGB, 1024, 1024, 4096, data))
        submit(phys, CmdType.SURFACE)
    # 1000 heads of 0xFFFFFFFF x 0xFFFFFFFF
    guest.monitors_config([d.Head(monitor_id=i, surface_id=0, width=0xFFFFFFFF, height=0xFFFFFFFF, x=0, y=0, flags=0) for i in range(1000)], 1000)


async def test_spicegtk_keeps_drawing_through_a_guest_memory_attack(tmp_path: Path) -> None:
    r = await start_server()
    device = r.server.add_qxl_device(QXLDeviceConfig(ram_size=32 * MiB, vram_size=4 * MiB, vgamem_size=2 * MiB))
    guest = GuestDriver(device)
    guest.set_int_mask(0xFFFFFFFF)
    try:
        guest.create_primary(320, 240)
        fill(guest, 0x204060, rect(0, 0, 320, 240))
        async with controlled_client("--port", str(r.server.port_of()), "--wait-display", timeout=60) as client:
            await asyncio.to_thread(r.server.wait_idle)
            shown = await client.wait_picture(same_picture(r.server.display_snapshot()))
            assert shown is not None, format_events(client.events, client.stderr)
            await asyncio.to_thread(attack, guest, r.server.wait_idle)
            await asyncio.to_thread(r.server.wait_idle)  # the ring has room again
            fill(guest, 0xC08020, rect(100, 100, 200, 180))  # the guest goes on drawing
            await asyncio.to_thread(r.server.wait_idle)
            want = r.server.display_snapshot()
            assert want[150, 150] & 0xFFFFFF == 0xC08020
            shown = await client.wait_picture(same_picture(want))
            assert shown is not None, format_events(client.events, client.stderr)
            assert_same(shown, want)
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        assert device.errors == 1 + 6 + 1  # the chunk chain, 6 surfaces past the budget, the monitors config
        assert guest.interrupts() & Interrupt.ERROR
        stats = r.server.display_stats()
        assert len(stats["surfaces"]) == 1 + 18
    finally:
        await r.server.close()
