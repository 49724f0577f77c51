"""Constants and byte layouts of the QXL device, as guest memory holds them.

Counterpart of spice-protocol ``spice/qxl_dev.h`` and ``spice/ipc_ring.h``. Every structure there is
packed and little-endian; each :class:`struct.Struct` below spells one out with an explicit ``<``
format, and its size is asserted against the C ``sizeof`` (numbers taken from gcc with
``offsetof``/``sizeof`` over the installed header, spice-protocol 0.14.3). Field offsets that the
device reads or writes one at a time are named ``*_OFF``.

Structures with a union are split into their fixed head and one Struct per arm, read at the arm's
offset from the same snapshot of guest bytes (see :mod:`spiceserver.qxl.parse`).
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag
from typing import Final

# Image types and bitmap formats are SPICE's own numbers (``spice/enums.h``), shared with the wire:
# a guest may send ImageType BITMAP, QUIC or SURFACE; bitmap formats are BitmapFmt 1..10.
from ..proto.enums import BitmapFmt as BitmapFmt
from ..proto.enums import ImageType as ImageType

REDHAT_PCI_VENDOR_ID: Final = 0x1B36
QXL_DEVICE_ID_STABLE: Final = 0x0100
QXL_ROM_MAGIC: Final = int.from_bytes(b"QXRO", "little")  # 0x4f525851
QXL_RAM_MAGIC: Final = int.from_bytes(b"QXRA", "little")  # 0x41525851
QXL_PAGE_SIZE: Final = 4096
#: PCI revisions (QXL_REVISION_STABLE_V04 .. V12): qxl-1 .. qxl-4.
REVISION_V04, REVISION_V06, REVISION_V10, REVISION_V12 = 1, 2, 3, 4


class BarIndex(IntEnum):
    """``QXL_*_RANGE_INDEX``: the PCI BARs of the device."""

    RAM = 0
    VRAM = 1
    ROM = 2
    IO = 3


class IOPort(IntEnum):
    """``QXL_IO_*``: offsets in the I/O BAR. Append-only across revisions."""

    NOTIFY_CMD = 0
    NOTIFY_CURSOR = 1
    UPDATE_AREA = 2
    UPDATE_IRQ = 3
    NOTIFY_OOM = 4
    RESET = 5
    SET_MODE = 6  # qxl-1
    LOG = 7
    MEMSLOT_ADD = 8  # qxl-2
    MEMSLOT_DEL = 9
    DETACH_PRIMARY = 10
    ATTACH_PRIMARY = 11
    CREATE_PRIMARY = 12
    DESTROY_PRIMARY = 13
    DESTROY_SURFACE_WAIT = 14
    DESTROY_ALL_SURFACES = 15
    UPDATE_AREA_ASYNC = 16  # qxl-3
    MEMSLOT_ADD_ASYNC = 17
    CREATE_PRIMARY_ASYNC = 18
    DESTROY_PRIMARY_ASYNC = 19
    DESTROY_SURFACE_ASYNC = 20
    DESTROY_ALL_SURFACES_ASYNC = 21
    FLUSH_SURFACES_ASYNC = 22
    FLUSH_RELEASE = 23
    MONITORS_CONFIG_ASYNC = 24  # qxl-4


QXL_IO_RANGE_SIZE: Final = 25

#: async port -> the synchronous port whose work it does (QEMU qxl.c ``ioport_write``).
ASYNC_PORTS: Final[dict[int, int]] = {
    IOPort.UPDATE_AREA_ASYNC: IOPort.UPDATE_AREA,
    IOPort.MEMSLOT_ADD_ASYNC: IOPort.MEMSLOT_ADD,
    IOPort.CREATE_PRIMARY_ASYNC: IOPort.CREATE_PRIMARY,
    IOPort.DESTROY_PRIMARY_ASYNC: IOPort.DESTROY_PRIMARY,
    IOPort.DESTROY_SURFACE_ASYNC: IOPort.DESTROY_SURFACE_WAIT,
    IOPort.DESTROY_ALL_SURFACES_ASYNC: IOPort.DESTROY_ALL_SURFACES,
    IOPort.FLUSH_SURFACES_ASYNC: IOPort.FLUSH_SURFACES_ASYNC,
    IOPort.MONITORS_CONFIG_ASYNC: IOPort.MONITORS_CONFIG_ASYNC,
}


class CmdType(IntEnum):
    """``QXL_CMD_*``: the type of a QXLCommand."""

    NOP = 0
    DRAW = 1
    UPDATE = 2
    CURSOR = 3
    MESSAGE = 4
    SURFACE = 5


class CmdFlags(IntFlag):
    """``QXLCommandExt.flags``: set by the device, not the guest (qxl-1 compat mode)."""

    COMPAT = 1
    COMPAT_16BPP = 2


class Interrupt(IntFlag):
    """``QXL_INTERRUPT_*``: the device's interrupt bits."""

    DISPLAY = 1 << 0
    CURSOR = 1 << 1
    IO_CMD = 1 << 2
    ERROR = 1 << 3
    CLIENT = 1 << 4
    CLIENT_MONITORS_CONFIG = 1 << 5


class DrawType(IntEnum):
    """``QXL_DRAW_*``: the type of a QXLDrawable."""

    NOP = 0
    FILL = 1
    OPAQUE = 2
    COPY = 3
    COPY_BITS = 4
    BLEND = 5
    BLACKNESS = 6
    WHITENESS = 7
    INVERS = 8
    ROP3 = 9
    STROKE = 10
    TEXT = 11
    TRANSPARENT = 12
    ALPHA_BLEND = 13
    COMPOSITE = 14


class Effect(IntEnum):
    """``QXL_EFFECT_*``: a QXLDrawable's effect."""

    BLEND = 0
    OPAQUE = 1
    REVERT_ON_DUP = 2
    BLACKNESS_ON_DUP = 3
    WHITENESS_ON_DUP = 4
    NOP_ON_DUP = 5
    NOP = 6
    OPAQUE_BRUSH = 7


class SurfaceCmdType(IntEnum):
    """``QXL_SURFACE_CMD_*``: create or destroy."""

    CREATE = 0
    DESTROY = 1


class CursorCmdType(IntEnum):
    """``QXL_CURSOR_*``: the type of a QXLCursorCmd."""

    SET = 0
    MOVE = 1
    HIDE = 2
    TRAIL = 3


class ImageGroup(IntEnum):
    """Low 32 bits of a guest image id (``QXL_SET_IMAGE_ID``)."""

    DRIVER = 0
    DEVICE = 1
    RED = 2
    DRIVER_DONT_CACHE = 3


class QXLImageFlags(IntFlag):
    """``QXL_IMAGE_*``: flags of a QXLImageDescriptor."""

    CACHE = 1 << 0
    HIGH_BITS_SET = 1 << 1


class QXLBitmapFlags(IntFlag):
    """``QXL_BITMAP_*``: flags of a QXLBitmap."""

    DIRECT = 1 << 0  # data points at the pixels, not at a QXLDataChunk chain
    UNSTABLE = 1 << 1
    TOP_DOWN = 1 << 2  # == SPICE_BITMAP_FLAGS_TOP_DOWN


class PathFlags(IntFlag):
    """``QXL_PATH_*``: flags of a QXLPathSeg."""

    BEGIN = 1 << 0
    END = 1 << 1
    CLOSE = 1 << 3
    BEZIER = 1 << 4


SURF_TYPE_PRIMARY: Final = 0
SURF_FLAG_KEEP_DATA: Final = 1 << 0

COMMAND_RING_SIZE: Final = 32
CURSOR_RING_SIZE: Final = 32
RELEASE_RING_SIZE: Final = 8
LOG_BUF_SIZE: Final = 4096
CURSOR_DEVICE_DATA_SIZE: Final = 128
CAPABILITIES_SIZE: Final = 58
MAX_CLIENT_MONITORS: Final = 64
CLIENT_MONITORS_CONFIG_CRC32_POLY: Final = 0xEDB88320


def _s(fmt: str, size: int) -> struct.Struct:
    st = struct.Struct("<" + fmt)
    assert st.size == size, (fmt, st.size, size)
    return st


# --- small shared pieces ---------------------------------------------------------------------------

RECT: Final = _s("4i", 16)  # top, left, bottom, right
URECT: Final = _s("4I", 16)
POINT: Final = _s("2i", 8)
POINT16: Final = _s("2h", 4)
U8: Final = _s("B", 1)
U16: Final = _s("H", 2)
U32: Final = _s("I", 4)
I32: Final = _s("i", 4)
U64: Final = _s("Q", 8)

# --- ROM (BAR 2) -----------------------------------------------------------------------------------

#: QXLRom up to (not including) client_monitors_config.heads:
#: magic, id, update_id, compression_level, log_level, mode, modes_offset, num_pages, pages_offset,
#: draw_area_offset, surface0_area_size, ram_header_offset, mm_clock, n_surfaces, flags,
#: slots_start, slots_end, slot_gen_bits, slot_id_bits, slot_generation, client_present,
#: client_capabilities[58], client_monitors_config_crc, client_monitors_config.count, .padding
ROM_HEAD: Final = _s("14IQ6B58sIHH", 136)
ROM_SIZE: Final = 1160  # + heads[64] of QXLURect
ROM_UPDATE_ID_OFF: Final = 8
ROM_COMPRESSION_LEVEL_OFF: Final = 12
ROM_MODE_OFF: Final = 20
ROM_MODES_OFFSET_OFF: Final = 24
ROM_NUM_PAGES_OFF: Final = 28
ROM_RAM_HEADER_OFFSET_OFF: Final = 44
ROM_MM_CLOCK_OFF: Final = 48
ROM_N_SURFACES_OFF: Final = 52
ROM_SLOTS_START_OFF: Final = 64
ROM_SLOT_GENERATION_OFF: Final = 68
ROM_CLIENT_PRESENT_OFF: Final = 69
ROM_CLIENT_CAPABILITIES_OFF: Final = 70
ROM_CLIENT_MONITORS_CONFIG_CRC_OFF: Final = 128
ROM_CLIENT_MONITORS_CONFIG_OFF: Final = 132
ROM_CLIENT_MONITORS_CONFIG_SIZE: Final = 4 + MAX_CLIENT_MONITORS * 16
assert ROM_CLIENT_MONITORS_CONFIG_OFF + ROM_CLIENT_MONITORS_CONFIG_SIZE == ROM_SIZE

#: QXLMode: id, x_res, y_res, bits, stride, x_mili, y_mili, orientation
MODE: Final = _s("8I", 32)
#: QXLModes: n_modes, then QXLMode[n_modes]
MODES_HEAD: Final = _s("I", 4)

# --- RAM header (at rom.ram_header_offset in BAR 0) ------------------------------------------------

#: SPICE ring header: num_items, prod, notify_on_prod, cons, notify_on_cons; items follow.
RING_HEAD: Final = _s("5I", 20)
RING_NUM_ITEMS_OFF: Final = 0
RING_PROD_OFF: Final = 4
RING_NOTIFY_ON_PROD_OFF: Final = 8
RING_CONS_OFF: Final = 12
RING_NOTIFY_ON_CONS_OFF: Final = 16
RING_ITEMS_OFF: Final = 20
#: QXLCommand: data (QXLPHYSICAL), type, padding. Ring elements are padded to a power of two (16).
COMMAND: Final = _s("QII", 16)
COMMAND_RING_BYTES: Final = 20 + COMMAND_RING_SIZE * 16  # 532
RELEASE_RING_BYTES: Final = 20 + RELEASE_RING_SIZE * 8  # 84
#: QXLCommandExt: cmd, group_id, flags (host-side only, never in guest memory)
COMMAND_EXT: Final = _s("QIIII", 24)

RAM_MAGIC_OFF: Final = 0
RAM_INT_PENDING_OFF: Final = 4
RAM_INT_MASK_OFF: Final = 8
RAM_LOG_BUF_OFF: Final = 12
RAM_CMD_RING_OFF: Final = 4108
RAM_CURSOR_RING_OFF: Final = 4640
RAM_RELEASE_RING_OFF: Final = 5172
RAM_UPDATE_AREA_OFF: Final = 5256
RAM_UPDATE_SURFACE_OFF: Final = 5272
RAM_MEM_SLOT_OFF: Final = 5276
RAM_CREATE_SURFACE_OFF: Final = 5292
RAM_FLAGS_OFF: Final = 5332
RAM_MONITORS_CONFIG_OFF: Final = 5340
RAM_SIZE: Final = 5348
assert RAM_LOG_BUF_OFF + LOG_BUF_SIZE == RAM_CMD_RING_OFF
assert RAM_CMD_RING_OFF + COMMAND_RING_BYTES == RAM_CURSOR_RING_OFF
assert RAM_CURSOR_RING_OFF + COMMAND_RING_BYTES == RAM_RELEASE_RING_OFF
assert RAM_RELEASE_RING_OFF + RELEASE_RING_BYTES == RAM_UPDATE_AREA_OFF
#: page-aligned room QEMU reserves for QXLRam at the end of BAR 0 (``ALIGN(sizeof(QXLRam), 4096)``)
RAM_HEADER_BYTES: Final = 8192

#: QXLMemSlot: mem_start, mem_end (guest physical, end exclusive)
MEM_SLOT: Final = _s("QQ", 16)
#: QXLSurfaceCreate: width, height, stride (signed), format, position, mouse_mode, flags, type, mem
SURFACE_CREATE: Final = _s("IIiIIIIIQ", 40)

# --- commands ---------------------------------------------------------------------------------------

RELEASE_INFO: Final = U64  # union { id (in); next (out) }
#: QXLDataChunk: data_size, prev_chunk, next_chunk; data follows
DATA_CHUNK: Final = _s("IQQ", 20)
MESSAGE: Final = _s("Q", 8)  # release_info; NUL-terminated text follows
#: QXLUpdateCmd: release_info, area, update_id, surface_id
UPDATE_CMD: Final = _s("Q4iII", 32)
#: QXLCompatUpdateCmd: release_info, area, update_id
COMPAT_UPDATE_CMD: Final = _s("Q4iI", 28)

#: QXLCursorHeader: unique, type, width, height, hot_spot_x, hot_spot_y
CURSOR_HEADER: Final = _s("QHHHHH", 18)
#: QXLCursor: header, data_size, then an inline QXLDataChunk
CURSOR: Final = _s("QHHHHHI", 22)
CURSOR_SIZE: Final = 42
CURSOR_CHUNK_OFF: Final = 22
#: QXLCursorCmd: release_info, type, then the union at 9, device_data[128] at 22
CURSOR_CMD_HEAD: Final = _s("QB", 9)
CURSOR_CMD_SIZE: Final = 150
CURSOR_CMD_UNION_OFF: Final = 9
CURSOR_SET: Final = _s("hhBQ", 13)  # position, visible, shape
CURSOR_TRAIL: Final = _s("HH", 4)  # length, frequency
CURSOR_MOVE: Final = POINT16

#: QXLRasterGlyph: render_pos, glyph_origin, width, height; data follows
RASTER_GLYPH: Final = _s("4iHH", 20)
#: QXLString: data_size, length, flags, then an inline QXLDataChunk
STRING: Final = _s("IHH", 8)
STRING_SIZE: Final = 28

#: QXLBrush: type u32, union { color u32 | QXLPattern { pat, pos } }
BRUSH: Final = _s("IQ2i", 20)
BRUSH_SIZE: Final = 20
#: QXLQMask: flags, pos, bitmap
QMASK: Final = _s("B2iQ", 17)
QMASK_SIZE: Final = 17

# Draw bodies: the fixed fields in order; brush / mask / rect sub-structures are decoded at the
# offsets named here from the same bytes.
FILL_SIZE: Final = 39  # brush @0, rop_descriptor u16 @20, mask @22
#: QXLFill whole: brush (type, pat -- its low half is a solid colour --, pos), rop_descriptor, mask
FILL: Final = _s("IQ2iHB2iQ", FILL_SIZE)
FILL_ROP_OFF: Final = 20
FILL_MASK_OFF: Final = 22
#: QXLOpaque: src_bitmap, src_area, brush @24, rop u16 @44, scale u8 @46, mask @47
OPAQUE_SIZE: Final = 64
#: QXLCopy (= QXLBlend): src_bitmap, src_area, rop u16 @24, scale u8 @26, mask @27
COPY: Final = _s("Q4iHB", 27)
COPY_SIZE: Final = 44
COPY_MASK_OFF: Final = 27
#: QXLTransparent: src_bitmap, src_area, src_color, true_color
TRANSPARENT: Final = _s("Q4iII", 32)
#: QXLAlphaBlend: alpha_flags u16, alpha u8, src_bitmap, src_area
ALPHA_BLEND: Final = _s("HBQ4i", 27)
#: QXLCompatAlphaBlend: alpha u8, src_bitmap, src_area
COMPAT_ALPHA_BLEND: Final = _s("BQ4i", 25)
#: QXLRop3: src_bitmap, src_area, brush @24, rop3 u8 @44, scale u8 @45, mask @46
ROP3_SIZE: Final = 63
SRC_AND_AREA: Final = _s("Q4i", 24)
#: QXLLineAttr: flags, join_style, end_style, style_nseg, width, miter_limit, style
LINE_ATTR: Final = _s("BBBBiiQ", 20)
#: QXLStroke: path @0, attr @8, brush @28, fore_mode u16 @48, back_mode u16 @50
STROKE_SIZE: Final = 52
#: QXLText: str @0, back_area @8, fore_brush @24, back_brush @44, fore_mode @64, back_mode @66
TEXT_SIZE: Final = 68
TEXT_HEAD: Final = _s("Q4i", 24)  # str, back_area
MODES: Final = _s("HH", 4)  # fore_mode, back_mode
#: QXLClip: type, data
CLIP: Final = _s("IQ", 12)
#: QXLTransform: t00 t01 t02 t10 t11 t12
TRANSFORM: Final = _s("6I", 24)
#: QXLComposite: flags, src, src_transform, mask, mask_transform, src_origin, mask_origin
COMPOSITE: Final = _s("IQQQQhhhh", 44)
#: union of QXLDrawable / QXLCompatDrawable: the largest arm is QXLText
DRAW_UNION_SIZE: Final = 68

#: QXLCompatDrawable head: release_info, effect, type, bitmap_offset, bitmap_area, bbox, clip, mm_time
COMPAT_DRAWABLE_HEAD: Final = _s("QBBH4i4iIQI", 60)
COMPAT_DRAWABLE_SIZE: Final = 128
#: QXLDrawable head: release_info, surface_id, effect, type, self_bitmap, self_bitmap_area, bbox,
#: clip, mm_time, surfaces_dest[3], surfaces_rects[3]
DRAWABLE_HEAD: Final = _s("QIBBB4i4iIQI3i12i", 123)
DRAWABLE_SIZE: Final = 191
assert DRAWABLE_HEAD.size + DRAW_UNION_SIZE == DRAWABLE_SIZE
assert COMPAT_DRAWABLE_HEAD.size + DRAW_UNION_SIZE == COMPAT_DRAWABLE_SIZE

#: QXLSurfaceCmd: release_info, surface_id, type, flags, QXLSurface { format, width, height, stride, data }
SURFACE_CMD: Final = _s("QIBIIIIiQ", 41)

#: QXLClipRects: num_rects, then an inline QXLDataChunk of QXLRect
CLIP_RECTS: Final = _s("I", 4)
CLIP_RECTS_SIZE: Final = 24
#: QXLPathSeg: flags, count; QXLPointFix[count] follow
PATH_SEG: Final = _s("II", 8)
POINT_FIX: Final = POINT
#: QXLPath: data_size, then an inline QXLDataChunk
PATH: Final = _s("I", 4)
PATH_SIZE: Final = 24

#: QXLImageDescriptor: id, type, flags, width, height
IMAGE_DESCRIPTOR: Final = _s("QBBII", 18)
#: QXLBitmap: format, flags, x, y, stride, palette, data
BITMAP: Final = _s("BBIIIQQ", 30)
IMAGE_SIZE: Final = 48  # descriptor + the largest arm (QXLBitmap)
IMAGE_UNION_OFF: Final = 18
#: QXLQUICData: data_size, then an inline QXLDataChunk
QUIC_DATA: Final = _s("I", 4)
QUIC_CHUNK_OFF: Final = 22
#: QXLPalette: unique, num_ents; u32 ents follow
PALETTE: Final = _s("QH", 10)
SURFACE_ID: Final = U32

#: QXLHead: id, surface_id, width, height, x, y, flags
HEAD: Final = _s("7I", 28)
#: QXLMonitorsConfig: count, max_allowed; QXLHead[count] follow
MONITORS_CONFIG: Final = _s("HH", 4)

#: bits per pixel of each SPICE_BITMAP_FMT_* (red-parse-qxl.cpp ``MAP_BITMAP_FMT_TO_BITS_PER_PIXEL``)
BITMAP_FMT_BPP: Final = (0, 1, 1, 4, 4, 8, 16, 24, 32, 32, 8)
#: formats whose pixels are colours, not palette indexes (spice-bitmap-utils ``bitmap_fmt_is_rgb``)
BITMAP_FMT_IS_RGB: Final = (False, False, False, False, False, False, True, True, True, True, True)
