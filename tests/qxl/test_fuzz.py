"""The parser never crashes: any guest memory parses to a command or raises GuestError.

Same invariant as the proto message fuzzing (h11 ``fuzz/afl-server.py``): hostile input may be
rejected, but only with the one exception the worker turns into ``QXL_INTERRUPT_ERROR``. Inputs:
random bytes at a command's address, and random edits (bytes, integers, pointers into the guest's
own structures, so chains loop and overlap) of valid commands of every kind. The device's I/O ports
get the same treatment: random RAM-header contents and port writes never raise.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spiceserver.errors import GuestError
from spiceserver.proto.enums import BitmapFmt, BrushType, ClipType, LineFlags, StringFlags
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Point, Point16, PointFix
from spiceserver.proto.messages.cursor import Cursor, CursorHeader
from spiceserver.qxl import layout as L
from spiceserver.qxl.commands import (
    DrawBody,
    QXLCommand,
    QXLCommandExt,
    RedCommand,
    RedCursorCmd,
    RedDrawable,
    RedMessage,
    RedSurfaceCmd,
    RedUpdate,
    ReleaseInfo,
)
from spiceserver.qxl.device import MEMSLOT_GROUP_GUEST, QXLDevice
from spiceserver.qxl.guest import GuestDriver
from spiceserver.qxl.layout import CmdFlags, CmdType
from spiceserver.qxl.parse import ParseLimits, parse_command
from tests.qxl.conftest import PALETTE, SMALL, RecordingBackend, bitmap, mask_image, quic, rect, surface_image

FAST = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
LIMITS = ParseLimits(n_surfaces=SMALL.n_surfaces, max_chunks=4096)


class World:
    """One device with a guest that wrote one command of every kind; edits are undone after each example."""

    def __init__(self) -> None:
        self.device = QXLDevice(config=SMALL)
        g = self.guest = GuestDriver(self.device)
        assert g.main is not None
        self.start = g.main.next
        brush = d.Brush(type=BrushType.PATTERN, pattern=d.Pattern(pat=bitmap(4, 4, seed=2), pos=Point(x=1, y=1)))
        mask = d.QMask(flags=1, pos=Point(x=0, y=0), bitmap=mask_image())
        clip = d.Clip(type=ClipType.RECTS, rects=d.ClipRects(rects=(rect(0, 0, 5, 5), rect(6, 6, 9, 9))))
        glyph = d.RasterGlyphA4(render_pos=Point(x=0, y=0), glyph_origin=Point(x=0, y=0), width=3, height=2,
                                data=bytes(4))  # fmt: skip
        path = d.Path(segments=(d.PathSegment(flags=1, points=(PointFix(x=0, y=0), PointFix(x=9, y=9))),))
        bodies: list[DrawBody] = [
            d.Copy(src_bitmap=bitmap(4, 3, BitmapFmt.BIT8, palette=PALETTE), src_area=rect(0, 0, 4, 3),
                   rop_descriptor=8, scale_mode=0, mask=mask),
            d.Opaque(src_bitmap=quic(), src_area=rect(0, 0, 8, 8), brush=brush, rop_descriptor=8, scale_mode=0),
            d.Rop3(src_bitmap=surface_image(1), src_area=rect(0, 0, 1, 1), brush=brush, rop3=1, scale_mode=0),
            d.Stroke(path=path, attr=d.LineAttr(flags=LineFlags.STYLED, style=(1, 2)), brush=brush, fore_mode=1,
                     back_mode=1),
            d.Text(str=d.String(flags=StringFlags.RASTER_A4, glyphs=(glyph, glyph)), back_area=rect(0, 0, 1, 1),
                   fore_brush=brush, back_brush=d.Brush(type=BrushType.SOLID, color=5), fore_mode=1, back_mode=1),
            d.Composite(flags=0, src_bitmap=bitmap(2, 2), mask_bitmap=None, src_origin=Point16(x=0, y=0),
                        mask_origin=Point16(x=0, y=0)),
        ]  # fmt: skip
        shape = Cursor(flags=0, header=CursorHeader(unique=1, type=0, width=2, height=2, hot_spot_x=0, hot_spot_y=0),
                       data=bytes(16))  # fmt: skip
        self.commands: list[tuple[int, int, int]] = []  # (phys, type, flags)
        for i, body in enumerate(bodies):
            self.commands.append(
                (g.drawable(body, bbox=rect(0, 0, 9, 9), clip=clip, chunk_size=3 + i), CmdType.DRAW, 0)
            )
        self.commands.append((g.drawable(bodies[0], bbox=rect(0, 0, 9, 9), compat=True), CmdType.DRAW, CmdFlags.COMPAT))
        self.commands.append((g.cursor_set(Point16(x=1, y=1), True, shape, 5), CmdType.CURSOR, 0))
        self.commands.append((g.surface_create(3, 8, 8)[0], CmdType.SURFACE, 0))
        self.commands.append((g.message(b"hello"), CmdType.MESSAGE, 0))
        self.commands.append((g.update(rect(0, 0, 1, 1), 1, 2), CmdType.UPDATE, 0))
        self.end = g.main.next
        self.snapshot = bytes(self.device.ram[self.start : self.end])
        for phys, type_, flags in self.commands:  # everything written parses
            assert parse(self.device, phys, type_, flags) is not None

    def restore(self) -> None:
        self.device.ram[self.start : self.end] = self.snapshot

    def phys(self, off: int) -> int:
        assert self.guest.main is not None
        return self.guest.main.phys(self.start + off)


def parse(device: QXLDevice, phys: int, type_: int, flags: int) -> RedCommand | None:
    """Parse; None if rejected with GuestError. Anything else fails the test."""
    ext = QXLCommandExt(cmd=QXLCommand(data=phys, type=type_), group_id=MEMSLOT_GROUP_GUEST, flags=flags)
    try:
        cmd = parse_command(device.memslots, ext, LIMITS)
    except GuestError:
        return None
    assert isinstance(cmd, (RedDrawable, RedUpdate, RedSurfaceCmd, RedMessage, RedCursorCmd))
    if isinstance(cmd, RedDrawable):
        cmd.to_message()  # builds without error
    if isinstance(cmd, RedCursorCmd) and cmd.shape is not None:
        assert cmd.shape.header is not None
    return cmd


_WORLD = World()


@settings(FAST, max_examples=300)
@given(
    data=st.binary(min_size=0, max_size=L.DRAWABLE_SIZE + 64),
    type_=st.integers(0, 6),
    flags=st.integers(0, 3),
)
def test_random_bytes_at_a_command(data: bytes, type_: int, flags: int) -> None:
    world = _WORLD
    phys = world.phys(len(world.snapshot) - L.DRAWABLE_SIZE - 64)
    try:
        world.guest.write(phys, data)
        parse(world.device, phys, type_, flags)
    finally:
        world.restore()


def _edit(world: World) -> st.SearchStrategy[tuple[int, int, int]]:
    size = len(world.snapshot)
    values = st.one_of(
        st.integers(0, (1 << 64) - 1),
        st.sampled_from([0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, (1 << 64) - 1]),
        st.integers(0, size - 1).map(world.phys),  # pointers back into the guest's own structures
    )
    return st.tuples(st.integers(0, size - 1), st.sampled_from([1, 2, 4, 8]), values)


@settings(FAST, max_examples=400)
@given(edits=st.lists(_edit(_WORLD), min_size=1, max_size=6), which=st.integers(0, len(_WORLD.commands) - 1))
def test_mutated_commands(edits: list[tuple[int, int, int]], which: int) -> None:
    w = _WORLD
    try:
        for off, width, value in edits:
            raw = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
            w.guest.write(w.phys(off), raw[: len(w.snapshot) - off])
        phys, type_, flags = w.commands[which]
        parse(w.device, phys, type_, flags)
        parse(w.device, phys, type_, flags ^ CmdFlags.COMPAT)
    finally:
        w.restore()


RAM_FIELDS = [
    (L.RAM_INT_PENDING_OFF, 8),
    (L.RAM_CMD_RING_OFF, 20),
    (L.RAM_CURSOR_RING_OFF, 20),
    (L.RAM_RELEASE_RING_OFF, 20),
    (L.RAM_UPDATE_AREA_OFF, 20),
    (L.RAM_MEM_SLOT_OFF, 16),
    (L.RAM_CREATE_SURFACE_OFF, 40),
    (L.RAM_MONITORS_CONFIG_OFF, 8),
]


@settings(FAST, max_examples=200)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("io"), st.integers(0, 30), st.integers(0, 300)),
            st.tuples(st.just("ram"), st.sampled_from(range(len(RAM_FIELDS))), st.binary(min_size=40, max_size=40)),
            st.tuples(st.just("worker"), st.integers(0, 3), st.integers(0, 0)),
        ),
        max_size=25,
    )
)
def test_device_never_raises(steps: list[tuple[str, int, object]]) -> None:
    backend = RecordingBackend()
    dev = QXLDevice(backend, SMALL)
    backend.device = dev
    guest = GuestDriver(dev)
    guest.submit(guest.message(b"m"), CmdType.MESSAGE)
    for kind, a, b in steps:
        if kind == "io":
            dev.io_write(a, b)  # type: ignore[arg-type]
        elif kind == "ram":
            off, size = RAM_FIELDS[a]
            guest.set_ram(off, b[:size])  # type: ignore[index]
        else:
            ext = [dev.get_command, dev.get_cursor_command][a % 2]()
            if ext is not None:
                parse(dev, ext.cmd.data, ext.cmd.type, ext.flags)
                dev.release_resource(ReleaseInfo(addr=ext.cmd.data, group_id=MEMSLOT_GROUP_GUEST))
            dev.req_cmd_notification()
            dev.req_cursor_notification()
            dev.flush_resources()
