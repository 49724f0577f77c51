"""Fixtures for the QXL tests: a small device, a guest driver on it, a recording backend, and
builders for the proto structures a guest sends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from spiceserver.proto.enums import BitmapFlags, BitmapFmt, ImageType
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Rect
from spiceserver.qxl.backend import PrimarySurface
from spiceserver.qxl.device import QXLDevice, QXLDeviceConfig
from spiceserver.qxl.guest import GuestDriver

#: small BARs keep each test fast (4 MiB RAM with a 2 MiB surface0 area, 1 MiB VRAM)
SMALL = QXLDeviceConfig(ram_size=4 << 20, vram_size=1 << 20, vgamem_size=2 << 20, n_surfaces=64)


@dataclass
class RecordingBackend:
    """Records every backend call; completes async calls at once unless ``auto_complete`` is off."""

    device: QXLDevice | None = None
    auto_complete: bool = True
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def _done(self, cookie: int | None) -> None:
        if cookie is not None and self.auto_complete and self.device is not None:
            self.device.async_complete(cookie)

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def wakeup(self) -> None:
        self.calls.append(("wakeup",))

    def oom(self) -> None:
        self.calls.append(("oom",))

    def update_area(self, surface_id: int, area: Rect, clear_dirty_region: bool, cookie: int | None) -> None:
        self.calls.append(("update_area", surface_id, area, clear_dirty_region, cookie))
        self._done(cookie)

    def memslots_changed(self, cookie: int | None) -> None:
        self.calls.append(("memslots_changed", cookie))
        self._done(cookie)

    def create_primary(self, surface: PrimarySurface, cookie: int | None) -> None:
        self.calls.append(("create_primary", surface, cookie))
        self._done(cookie)

    def destroy_primary(self, cookie: int | None) -> None:
        self.calls.append(("destroy_primary", cookie))
        self._done(cookie)

    def destroy_surface(self, surface_id: int, cookie: int | None) -> None:
        self.calls.append(("destroy_surface", surface_id, cookie))
        self._done(cookie)

    def destroy_all_surfaces(self, cookie: int | None) -> None:
        self.calls.append(("destroy_all_surfaces", cookie))
        self._done(cookie)

    def flush_surfaces(self, cookie: int) -> None:
        self.calls.append(("flush_surfaces", cookie))
        self._done(cookie)

    def monitors_config(self, config: d.MonitorsConfig, cookie: int) -> None:
        self.calls.append(("monitors_config", config, cookie))
        self._done(cookie)

    def reset(self) -> None:
        self.calls.append(("reset",))


@dataclass
class Irq:
    levels: list[bool] = field(default_factory=list)

    def __call__(self, level: bool) -> None:
        self.levels.append(level)

    @property
    def level(self) -> bool:
        return self.levels[-1] if self.levels else False


@pytest.fixture
def backend() -> RecordingBackend:
    return RecordingBackend()


@pytest.fixture
def irq() -> Irq:
    return Irq()


@pytest.fixture
def device(backend: RecordingBackend, irq: Irq) -> QXLDevice:
    dev = QXLDevice(backend, SMALL, irq=irq)
    backend.device = dev
    return dev


@pytest.fixture
def guest(device: QXLDevice, backend: RecordingBackend) -> GuestDriver:
    g = GuestDriver(device)
    backend.calls.clear()
    return g


# --- builders --------------------------------------------------------------------------------------


def rect(left: int, top: int, right: int, bottom: int) -> Rect:
    return Rect(top=top, left=left, bottom=bottom, right=right)


def bitmap(
    w: int = 4,
    h: int = 3,
    fmt: int = BitmapFmt.BIT32,
    *,
    stride: int | None = None,
    palette: d.Palette | None = None,
    top_down: bool = True,
    image_id: int = 0x1234_0000_0001,
    flags: int = 0,
    seed: int = 1,
) -> d.Image:
    bpp = (0, 1, 1, 4, 4, 8, 16, 24, 32, 32, 8)[fmt]
    stride = stride if stride is not None else (w * bpp + 7) // 8
    data = bytes((seed * 31 + i * 7) & 0xFF for i in range(stride * h))
    return d.Image(
        descriptor=d.ImageDescriptor(id=image_id, type=ImageType.BITMAP, flags=flags, width=w, height=h),
        bitmap=d.BitmapData(
            format=fmt,
            flags=BitmapFlags.TOP_DOWN if top_down else 0,
            x=w,
            y=h,
            stride=stride,
            palette=palette,
            data=data,
        ),
    )


def quic(data: bytes = b"QUIC" + bytes(range(60)), w: int = 8, h: int = 8) -> d.Image:
    return d.Image(
        descriptor=d.ImageDescriptor(id=77, type=ImageType.QUIC, flags=0, width=w, height=h),
        quic=d.BinaryData(data=data),
    )


def surface_image(sid: int, w: int = 16, h: int = 16) -> d.Image:
    return d.Image(
        descriptor=d.ImageDescriptor(id=0, type=ImageType.SURFACE, flags=0, width=w, height=h),
        surface=d.Surface(surface_id=sid),
    )


def mask_image() -> d.Image:
    return bitmap(9, 2, BitmapFmt.BIT1_BE, image_id=99)


PALETTE = d.Palette(unique=0xABCDEF, ents=(0x000000, 0xFF0000, 0x00FF00, 0x0000FF))
