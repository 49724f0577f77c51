"""Byte layouts match spice-protocol's qxl_dev.h.

The numbers were taken from gcc (``sizeof`` / ``offsetof`` over ``/usr/include/spice-1/spice/qxl_dev.h``,
spice-protocol 0.14.3, x86-64); the C program itself is not kept in the tree.
"""

from __future__ import annotations

import pytest

from spiceserver.qxl import layout as L
from spiceserver.qxl.device import QXLDevice
from tests.qxl.conftest import SMALL

GCC_SIZES = {
    "QXLRom": (L.ROM_SIZE, 1160),
    "QXLMode": (L.MODE.size, 32),
    "QXLModes": (L.MODES_HEAD.size, 4),
    "QXLCommand": (L.COMMAND.size, 16),
    "QXLCommandExt": (L.COMMAND_EXT.size, 24),
    "QXLMemSlot": (L.MEM_SLOT.size, 16),
    "QXLSurfaceCreate": (L.SURFACE_CREATE.size, 40),
    "QXLCommandRing": (L.COMMAND_RING_BYTES, 532),
    "QXLReleaseRing": (L.RELEASE_RING_BYTES, 84),
    "QXLRam": (L.RAM_SIZE, 5348),
    "QXLReleaseInfo": (L.RELEASE_INFO.size, 8),
    "QXLDataChunk": (L.DATA_CHUNK.size, 20),
    "QXLMessage": (L.MESSAGE.size, 8),
    "QXLCompatUpdateCmd": (L.COMPAT_UPDATE_CMD.size, 28),
    "QXLUpdateCmd": (L.UPDATE_CMD.size, 32),
    "QXLCursorHeader": (L.CURSOR_HEADER.size, 18),
    "QXLCursor": (L.CURSOR_SIZE, 42),
    "QXLCursorCmd": (L.CURSOR_CMD_SIZE, 150),
    "QXLRasterGlyph": (L.RASTER_GLYPH.size, 20),
    "QXLString": (L.STRING_SIZE, 28),
    "QXLBrush": (L.BRUSH.size, 20),
    "QXLQMask": (L.QMASK.size, 17),
    "QXLFill": (L.FILL_SIZE, 39),
    "QXLOpaque": (L.OPAQUE_SIZE, 64),
    "QXLCopy": (L.COPY_SIZE, 44),
    "QXLTransparent": (L.TRANSPARENT.size, 32),
    "QXLAlphaBlend": (L.ALPHA_BLEND.size, 27),
    "QXLCompatAlphaBlend": (L.COMPAT_ALPHA_BLEND.size, 25),
    "QXLRop3": (L.ROP3_SIZE, 63),
    "QXLLineAttr": (L.LINE_ATTR.size, 20),
    "QXLStroke": (L.STROKE_SIZE, 52),
    "QXLText": (L.TEXT_SIZE, 68),
    "QXLBlackness": (L.QMASK.size, 17),
    "QXLClip": (L.CLIP.size, 12),
    "QXLTransform": (L.TRANSFORM.size, 24),
    "QXLComposite": (L.COMPOSITE.size, 44),
    "QXLCompatDrawable": (L.COMPAT_DRAWABLE_SIZE, 128),
    "QXLDrawable": (L.DRAWABLE_SIZE, 191),
    "QXLSurfaceCmd": (L.SURFACE_CMD.size, 41),
    "QXLClipRects": (L.CLIP_RECTS_SIZE, 24),
    "QXLPathSeg": (L.PATH_SEG.size, 8),
    "QXLPath": (L.PATH_SIZE, 24),
    "QXLImageDescriptor": (L.IMAGE_DESCRIPTOR.size, 18),
    "QXLPalette": (L.PALETTE.size, 10),
    "QXLBitmap": (L.BITMAP.size, 30),
    "QXLImage": (L.IMAGE_SIZE, 48),
    "QXLHead": (L.HEAD.size, 28),
    "QXLMonitorsConfig": (L.MONITORS_CONFIG.size, 4),
}

GCC_OFFSETS = {
    "QXLRom.modes_offset": (L.ROM_MODES_OFFSET_OFF, 24),
    "QXLRom.num_pages": (L.ROM_NUM_PAGES_OFF, 28),
    "QXLRom.ram_header_offset": (L.ROM_RAM_HEADER_OFFSET_OFF, 44),
    "QXLRom.mm_clock": (L.ROM_MM_CLOCK_OFF, 48),
    "QXLRom.n_surfaces": (L.ROM_N_SURFACES_OFF, 52),
    "QXLRom.slots_start": (L.ROM_SLOTS_START_OFF, 64),
    "QXLRom.slot_generation": (L.ROM_SLOT_GENERATION_OFF, 68),
    "QXLRom.client_present": (L.ROM_CLIENT_PRESENT_OFF, 69),
    "QXLRom.client_capabilities": (L.ROM_CLIENT_CAPABILITIES_OFF, 70),
    "QXLRom.client_monitors_config_crc": (L.ROM_CLIENT_MONITORS_CONFIG_CRC_OFF, 128),
    "QXLRom.client_monitors_config": (L.ROM_CLIENT_MONITORS_CONFIG_OFF, 132),
    "QXLRam.int_pending": (L.RAM_INT_PENDING_OFF, 4),
    "QXLRam.int_mask": (L.RAM_INT_MASK_OFF, 8),
    "QXLRam.log_buf": (L.RAM_LOG_BUF_OFF, 12),
    "QXLRam.cmd_ring": (L.RAM_CMD_RING_OFF, 4108),
    "QXLRam.cursor_ring": (L.RAM_CURSOR_RING_OFF, 4640),
    "QXLRam.release_ring": (L.RAM_RELEASE_RING_OFF, 5172),
    "QXLRam.update_area": (L.RAM_UPDATE_AREA_OFF, 5256),
    "QXLRam.update_surface": (L.RAM_UPDATE_SURFACE_OFF, 5272),
    "QXLRam.mem_slot": (L.RAM_MEM_SLOT_OFF, 5276),
    "QXLRam.create_surface": (L.RAM_CREATE_SURFACE_OFF, 5292),
    "QXLRam.flags": (L.RAM_FLAGS_OFF, 5332),
    "QXLRam.monitors_config": (L.RAM_MONITORS_CONFIG_OFF, 5340),
    "QXLCommandRing.items": (L.RING_ITEMS_OFF, 20),
    "QXLCursor.chunk": (L.CURSOR_CHUNK_OFF, 22),
    "QXLCursorCmd.u": (L.CURSOR_CMD_UNION_OFF, 9),
    "QXLCursorCmd.device_data": (L.CURSOR_CMD_UNION_OFF + L.CURSOR_SET.size, 22),
    "QXLString.chunk": (L.STRING.size, 8),
    "QXLOpaque.mask": (L.OPAQUE_SIZE - L.QMASK.size, 47),
    "QXLCopy.mask": (L.COPY_MASK_OFF, 27),
    "QXLRop3.mask": (L.ROP3_SIZE - L.QMASK.size, 46),
    "QXLCompatDrawable.u": (L.COMPAT_DRAWABLE_HEAD.size, 60),
    "QXLDrawable.u": (L.DRAWABLE_HEAD.size, 123),
    "QXLSurfaceCmd.u": (L.SURFACE_CMD.size - 24, 17),
    "QXLImage.bitmap": (L.IMAGE_UNION_OFF, 18),
}


@pytest.mark.parametrize(("name", "pair"), GCC_SIZES.items(), ids=list(GCC_SIZES))
def test_sizes_match_gcc(name: str, pair: tuple[int, int]) -> None:
    assert pair[0] == pair[1]


@pytest.mark.parametrize(("name", "pair"), GCC_OFFSETS.items(), ids=list(GCC_OFFSETS))
def test_offsets_match_gcc(name: str, pair: tuple[int, int]) -> None:
    assert pair[0] == pair[1]


def test_drawable_head_fields_at_gcc_offsets() -> None:
    # pack recognisable values and find each at its C offset
    head = L.DRAWABLE_HEAD.pack(1, 2, 3, 4, 5, *range(6, 10), *range(10, 14), 14, 15, 16, 17, 18, 19, *range(20, 32))

    def u32(off: int) -> int:
        return int.from_bytes(head[off : off + 4], "little", signed=True)

    assert u32(8) == 2  # surface_id
    assert head[12:15] == bytes([3, 4, 5])  # effect, type, self_bitmap
    assert u32(15) == 6  # self_bitmap_area.top
    assert u32(31) == 10  # bbox.top
    assert u32(47) == 14  # clip.type
    assert u32(59) == 16  # mm_time
    assert u32(63) == 17  # surfaces_dest[0]
    assert u32(75) == 20  # surfaces_rects[0].top


def test_magics() -> None:
    assert L.QXL_ROM_MAGIC == 0x4F525851
    assert L.QXL_RAM_MAGIC == 0x41525851


def test_io_ports_in_order() -> None:
    assert [p.value for p in L.IOPort] == list(range(25))
    assert int(L.IOPort.MONITORS_CONFIG_ASYNC) == 24 and L.QXL_IO_RANGE_SIZE == 25


def test_rom_and_ram_header_as_qemu_lays_them_out() -> None:
    dev = QXLDevice(config=SMALL)
    rom = L.ROM_HEAD.unpack_from(dev.rom)
    assert rom[0] == L.QXL_ROM_MAGIC
    assert rom[6] == L.ROM_SIZE  # modes_offset: QXLModes right after QXLRom
    ram_size = len(dev.ram)
    assert rom[11] == ram_size - 8192  # ram_header_offset: last ALIGN(sizeof(QXLRam), 4096) bytes
    assert rom[10] == SMALL.vgamem_size  # surface0_area_size
    assert rom[8] == SMALL.vgamem_size  # pages_offset
    assert rom[7] == (ram_size - 8192 - SMALL.vgamem_size) // 4096  # num_pages
    assert rom[13] == SMALL.n_surfaces
    assert rom[15:20] == (1, 7, 8, 8, 0)  # slots_start, slots_end, gen bits, id bits, generation
    (n_modes,) = L.MODES_HEAD.unpack_from(dev.rom, L.ROM_SIZE)
    modes = [L.MODE.unpack_from(dev.rom, L.ROM_SIZE + 4 + 32 * i) for i in range(n_modes)]
    assert all(m[3] == 32 and m[4] == m[1] * 4 and m[2] * m[4] <= SMALL.vgamem_size for m in modes)
    assert (640, 480) in [(m[1], m[2]) for m in modes]
    hdr = dev.ram_header_offset
    assert L.U32.unpack_from(dev.ram, hdr)[0] == L.QXL_RAM_MAGIC
    for off, n in ((L.RAM_CMD_RING_OFF, 32), (L.RAM_CURSOR_RING_OFF, 32), (L.RAM_RELEASE_RING_OFF, 8)):
        assert L.RING_HEAD.unpack_from(dev.ram, hdr + off) == (n, 0, 1, 0, 0)


def test_default_modes_reach_1920x1200() -> None:
    dev = QXLDevice()
    sizes = [(x, y) for _i, x, y, _s in dev.modes]
    assert sizes[0] == (640, 480) and sizes[-1] == (1920, 1200)
