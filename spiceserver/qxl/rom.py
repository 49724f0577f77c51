"""Device configuration, BAR 0 layout and the ROM (BAR 2) contents.

Counterpart of QEMU ``hw/display/qxl.c`` ``qxl_init_ramsize``, ``qxl_rom_size``, ``init_qxl_rom``
and the ``qxl_modes`` table, and of the memslot geometry QEMU hands spice-server through
``interface_get_init_info`` (``MEMSLOT_GROUP_*``, ``NUM_MEMSLOTS``, ``MEMSLOT_*_BITS``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import layout as L
from .reader import ParseLimits

__all__ = [
    "QXLDeviceConfig",
    "RomLayout",
    "build_rom",
    "DEFAULT_MODES",
    "MEMSLOT_GROUP_HOST",
    "MEMSLOT_GROUP_GUEST",
    "NUM_MEMSLOTS_GROUPS",
    "NUM_MEMSLOTS",
    "MEMSLOT_GENERATION_BITS",
    "MEMSLOT_SLOT_BITS",
]

MEMSLOT_GROUP_HOST = 0  # QEMU's own pointers (VGA mode updates); unused here
MEMSLOT_GROUP_GUEST = 1  # every command from the rings
NUM_MEMSLOTS_GROUPS = 2
NUM_MEMSLOTS = 8
MEMSLOT_GENERATION_BITS = 8
MEMSLOT_SLOT_BITS = 8
_PIXEL_MM = 0.2936875  # QEMU PIXEL_SIZE: 1280x1024 is 14.8" x 11.9"

#: resolutions offered in the ROM (32 bpp), 640x480 up to 1920x1200
DEFAULT_MODES: tuple[tuple[int, int], ...] = (
    (640, 480), (800, 480), (800, 600), (832, 624), (960, 640), (1024, 600), (1024, 768), (1152, 864),
    (1152, 870), (1280, 720), (1280, 760), (1280, 768), (1280, 800), (1280, 960), (1280, 1024), (1360, 768),
    (1366, 768), (1400, 1050), (1440, 900), (1600, 900), (1600, 1200), (1680, 1050), (1920, 1080), (1920, 1200),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class QXLDeviceConfig:
    """Sizes and placement of the device (QEMU ``-device qxl`` properties).

    Buffers passed to :class:`~spiceserver.qxl.device.QXLDevice` override the sizes here. Bases are
    guest-physical BAR addresses; a host whose firmware assigns BARs later calls
    :meth:`~spiceserver.qxl.device.QXLDevice.set_bar_base`.
    """

    ram_size: int = 32 << 20
    vram_size: int = 16 << 20
    rom_size: int = 8 << 10
    vgamem_size: int = 16 << 20  # the surface0 area at the start of RAM (primary framebuffer)
    ram_base: int = 0xC000_0000
    vram_base: int = 0xC400_0000
    rom_base: int = 0xC500_0000
    n_surfaces: int = 1024
    revision: int = L.REVISION_V12
    modes: tuple[tuple[int, int], ...] = DEFAULT_MODES
    device_id: int = 0
    guest_debug: int = 0  # rom.log_level
    #: heads of the guest's monitors config passed on (QEMU ``max_outputs``; libspice clamps to it)
    max_monitors: int = 16
    limits: ParseLimits = field(default_factory=ParseLimits)


@dataclass(frozen=True, slots=True)
class RomLayout:
    """Where things are in BAR 0, and the modes that fit (``init_qxl_rom``)."""

    surface0_area_size: int
    ram_header_offset: int
    num_pages: int
    #: (id, x_res, y_res, stride) of every 32 bpp mode whose framebuffer fits the surface0 area
    modes: list[tuple[int, int, int, int]]

    @classmethod
    def of(cls, cfg: QXLDeviceConfig, ram_size: int) -> RomLayout:
        """The layout for ``cfg`` with a RAM BAR of ``ram_size`` bytes; ValueError if it is too small."""
        surface0 = (cfg.vgamem_size + L.QXL_PAGE_SIZE - 1) & ~(L.QXL_PAGE_SIZE - 1)
        header = ram_size - L.RAM_HEADER_BYTES
        if header < surface0:
            raise ValueError("RAM BAR too small for the surface0 area and the RAM header")
        modes = [(i, x, y, x * 4) for i, (x, y) in enumerate(cfg.modes) if y * x * 4 <= cfg.vgamem_size]
        return cls(surface0, header, (header - surface0) // L.QXL_PAGE_SIZE, modes)


def build_rom(cfg: QXLDeviceConfig, lay: RomLayout) -> bytes:
    """The ROM image: QXLRom, then QXLModes at ``modes_offset`` = ``sizeof(QXLRom)``."""
    modes = L.MODES_HEAD.pack(len(lay.modes)) + b"".join(
        L.MODE.pack(i, x, y, 32, stride, int(_PIXEL_MM * x), int(_PIXEL_MM * y), 0) for i, x, y, stride in lay.modes
    )
    head = L.ROM_HEAD.pack(
        L.QXL_ROM_MAGIC, cfg.device_id, 0, 0, cfg.guest_debug, 0, L.ROM_SIZE, lay.num_pages,
        lay.surface0_area_size, 0, lay.surface0_area_size, lay.ram_header_offset, 0, cfg.n_surfaces, 0,
        1, NUM_MEMSLOTS - 1, MEMSLOT_GENERATION_BITS, MEMSLOT_SLOT_BITS, 0, 0, bytes(L.CAPABILITIES_SIZE),
        0, 0, 0,
    )  # fmt: skip
    return head + bytes(L.ROM_SIZE - len(head)) + modes
