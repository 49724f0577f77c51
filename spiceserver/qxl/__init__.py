"""The emulated QXL device and the hostile-input-safe parser of its commands (sans-IO, no threads).

Counterpart of QEMU ``hw/display/qxl.c`` (the device) and spice-server ``server/memslot.c``,
``red-parse-qxl.cpp`` and the ``QXLInterface`` of ``spice-qxl.h`` (what the worker asks of it).

* :mod:`.layout` -- constants and byte layouts of ``spice/qxl_dev.h``;
* :mod:`.memory` -- BARs at guest-physical addresses and memslots (``QXLPHYSICAL`` decoding);
* :mod:`.ring` -- command, cursor and release rings (``spice/ipc_ring.h``);
* :mod:`.commands` / :mod:`.parse` -- validated commands built from the proto display structures;
* :mod:`.backend` / :mod:`.device` -- the device, its I/O ports and interrupts, and what it needs
  from the display worker;
* :mod:`.guest` -- a guest-side driver for tests and examples.
"""

from __future__ import annotations

from .backend import DevInitInfo, NullBackend, PrimarySurface, QXLBackend
from .commands import (
    CopyBits,
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
from .device import MEMSLOT_GROUP_GUEST, Mode, QXLDevice, QXLDeviceConfig
from .layout import CmdFlags, CmdType, CursorCmdType, DrawType, Effect, Interrupt, IOPort, SurfaceCmdType
from .memory import MemSlots, PhysicalMemory
from .parse import DEFAULT_LIMITS, ParseLimits, parse_command

__all__ = [
    "QXLDevice",
    "QXLDeviceConfig",
    "QXLBackend",
    "NullBackend",
    "PrimarySurface",
    "DevInitInfo",
    "Mode",
    "MEMSLOT_GROUP_GUEST",
    "MemSlots",
    "PhysicalMemory",
    "ParseLimits",
    "DEFAULT_LIMITS",
    "parse_command",
    "QXLCommand",
    "QXLCommandExt",
    "ReleaseInfo",
    "CopyBits",
    "RedCommand",
    "RedDrawable",
    "RedUpdate",
    "RedSurfaceCmd",
    "RedMessage",
    "RedCursorCmd",
    "CmdType",
    "CmdFlags",
    "DrawType",
    "Effect",
    "Interrupt",
    "IOPort",
    "SurfaceCmdType",
    "CursorCmdType",
]
