"""The fill fast path of the parser (issue 10 point 3: a QXLFill read in one unpack) reads what
the general brush / mask readers read, including the bytes a solid brush leaves in its union."""

from __future__ import annotations

import struct

from spiceserver.proto.enums import BrushType
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Point
from spiceserver.qxl import layout as L
from spiceserver.qxl.commands import QXLCommandExt, RedDrawable
from spiceserver.qxl.device import QXLDevice
from spiceserver.qxl.guest import GuestDriver
from spiceserver.qxl.layout import CmdFlags, CmdType
from spiceserver.qxl.parse import color_16_to_32, parse_command
from tests.qxl.conftest import mask_image, rect


def parse_fill(guest: GuestDriver, device: QXLDevice, union: bytes, flags: int = 0, compat: bool = False) -> RedDrawable:
    """A FILL drawable whose union holds ``union`` (written over the guest driver's own)."""
    body = d.Fill(brush=d.Brush(type=BrushType.SOLID, color=1), rop_descriptor=8)
    phys = guest.drawable(body, bbox=rect(0, 0, 8, 8), compat=compat)
    head = L.COMPAT_DRAWABLE_HEAD.size if compat else L.DRAWABLE_HEAD.size
    guest.write(phys + head, union)
    assert guest.submit(phys, CmdType.DRAW)
    ext = device.get_command()
    assert ext is not None
    cmd = parse_command(device.memslots, QXLCommandExt(ext.cmd, ext.group_id, flags), device.parse_limits)
    assert isinstance(cmd, RedDrawable)
    return cmd


def test_solid_colour_ignores_the_pattern_arm_and_an_empty_mask(guest: GuestDriver, device: QXLDevice) -> None:
    # brush: SOLID, colour, then the rest of the pattern arm (garbage); rop; mask without a bitmap
    union = struct.pack("<II4s8sHB2iQ", BrushType.SOLID, 0x00123456, b"\xff" * 4, b"\xee" * 8, 0x10, 1, 5, 6, 0)
    cmd = parse_fill(guest, device, union)
    assert cmd.body == d.Fill(brush=d.Brush(type=BrushType.SOLID, color=0x00123456), rop_descriptor=0x10, mask=d.QMask())


def test_none_brush(guest: GuestDriver, device: QXLDevice) -> None:
    union = struct.pack("<IQ2iHB2iQ", BrushType.NONE, 0xDEAD, 1, 2, 8, 0, 0, 0, 0)
    cmd = parse_fill(guest, device, union)
    assert cmd.body == d.Fill(brush=d.Brush(type=BrushType.NONE), rop_descriptor=8)


def test_compat_16bpp_widens_a_fill_colour(guest: GuestDriver, device: QXLDevice) -> None:
    union = struct.pack("<IQ2iHB2iQ", BrushType.SOLID, 0x7C00, 0, 0, 8, 0, 0, 0, 0)
    cmd = parse_fill(guest, device, union, CmdFlags.COMPAT | CmdFlags.COMPAT_16BPP, compat=True)
    assert cmd.body == d.Fill(brush=d.Brush(type=BrushType.SOLID, color=color_16_to_32(0x7C00)), rop_descriptor=8)
    assert color_16_to_32(0x7C00) == 0xFF0000


def test_mask_position_is_kept_with_a_bitmap(guest: GuestDriver, device: QXLDevice) -> None:
    img = guest.image(mask_image())
    union = struct.pack("<IQ2iHB2iQ", BrushType.SOLID, 0xFF, 0, 0, 8, 1, 3, 4, img)
    cmd = parse_fill(guest, device, union)
    assert isinstance(cmd.body, d.Fill)
    assert cmd.body.mask == d.QMask(flags=1, pos=Point(x=3, y=4), bitmap=mask_image())
