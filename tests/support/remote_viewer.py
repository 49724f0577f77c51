"""Test support: virt-viewer's ``remote-viewer`` on its own Xvfb, and what its window shows.

remote-viewer is the desktop SPICE client most users run (spice-gtk inside a GTK window with menus
and a toolbar). Here it runs on a private Xvfb (no window manager), and :meth:`RemoteViewer.capture`
reads the whole X screen with ``xwd -root`` (x11-apps). At 100 % zoom the guest's picture appears
unscaled somewhere in the window, so :meth:`RemoteViewer.find` looks for an exact copy of a picture
(QEMU's ``screendump``, a server snapshot) in the screen: pixel for pixel, or not at all.

Usage::

    async with remote_viewer(f"spice://127.0.0.1:{port}", tmp_path) as rv:
        where = await rv.wait_for(picture, timeout=60)   # (y, x) of the picture on the X screen

Everything started here (Xvfb, remote-viewer) is stopped by PID when the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from tests.interop.harness import client_env
from tests.support.vdagent import ChildProcess, start_xvfb

__all__ = ["RemoteViewer", "find_picture", "read_xwd", "remote_viewer", "remote_viewer_skip_reason"]

#: the X screen: room for a 1280x800 guest plus remote-viewer's menu bar and toolbar
SCREEN = "1600x1000"

#: binaries and their Debian packages
NEEDS = {"remote-viewer": "virt-viewer", "xwd": "x11-apps", "Xvfb": "xvfb"}


def remote_viewer_skip_reason() -> str | None:
    """Why remote-viewer tests cannot run here, or None."""
    for exe, package in NEEDS.items():
        if shutil.which(exe) is None:
            return f"{exe} not installed (Debian {package})"
    return None


def read_xwd(data: bytes) -> np.ndarray:
    """An ``xwd`` dump of a depth-24 TrueColor screen (24 or 32 bits a pixel) as (h, w) uint32 0x00RRGGBB.

    The XWD header is 25 big-endian CARD32s (``X11/XWDFile.h``), then the window name up to
    ``header_size``, ``ncolors`` 12-byte colour entries, then the rows (``bytes_per_line`` each).
    """
    fields = struct.unpack_from(">25I", data)
    header_size, version, pixmap_format, depth, width, height = fields[:6]
    byte_order, bits_per_pixel, bytes_per_line = fields[7], fields[11], fields[12]
    red, green, blue = fields[14:17]
    ncolors = fields[19]
    if version != 7 or pixmap_format != 2 or bits_per_pixel not in (24, 32) or (red, green, blue) != (0xFF0000, 0xFF00, 0xFF):
        raise ValueError(f"unsupported xwd: version {version} format {pixmap_format} depth {depth} bpp {bits_per_pixel}")
    start = header_size + 12 * ncolors
    size = bits_per_pixel // 8
    rows = np.frombuffer(data, np.uint8, bytes_per_line * height, start).reshape(height, bytes_per_line)
    px = rows[:, : width * size].reshape(height, width, size).astype(np.uint32)
    if byte_order != 0:  # MSBFirst: the bytes of each pixel the other way round
        px = px[..., ::-1]
    out: np.ndarray = (px[..., 2] << 16) | (px[..., 1] << 8) | px[..., 0]
    return out


def find_picture(screen: np.ndarray, picture: np.ndarray) -> tuple[int, int] | None:
    """Where ``picture`` appears unchanged in ``screen``, as (y, x), or None.

    Each screen row is searched for the picture's first row as bytes (4-byte aligned); every hit is
    then compared whole.
    """
    h, w = picture.shape
    if h > screen.shape[0] or w > screen.shape[1]:
        return None
    first = np.ascontiguousarray(picture[0]).tobytes()
    for y in range(screen.shape[0] - h + 1):
        row = np.ascontiguousarray(screen[y]).tobytes()
        at = row.find(first)
        while at != -1:
            if at % 4 == 0:
                x = at // 4
                if x + w <= screen.shape[1] and np.array_equal(screen[y : y + h, x : x + w], picture):
                    return y, x
            at = row.find(first, at + 1)
    return None


class RemoteViewer:
    """remote-viewer on an Xvfb display: :attr:`proc`, :attr:`display`."""

    def __init__(self, proc: ChildProcess, display: int, work: Path) -> None:
        self.proc = proc
        self.display = display
        self.work = work

    async def capture(self) -> np.ndarray:
        """The whole X screen now, as (h, w) uint32 0x00RRGGBB."""
        out = await asyncio.create_subprocess_exec(
            "xwd", "-root", "-silent", "-display", f":{self.display}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        data, _ = await out.communicate()
        assert out.returncode == 0, f"xwd failed with {out.returncode}"
        return await asyncio.to_thread(read_xwd, data)

    async def wait_for(self, picture: np.ndarray, timeout: float = 60.0) -> tuple[int, int] | None:
        """Capture until ``picture`` is on the screen; its (y, x), or None at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.running, f"remote-viewer exited:\n{self.log()}"
            screen = await self.capture()
            if (where := await asyncio.to_thread(find_picture, screen, picture)) is not None:
                return where
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.2)

    def log(self) -> str:
        """The tail of remote-viewer's output."""
        return (self.work / "remote-viewer.log").read_text(errors="replace")[-3000:]


@contextlib.asynccontextmanager
async def remote_viewer(uri: str, work: Path, *args: str) -> AsyncIterator[RemoteViewer]:
    """Run ``remote-viewer uri args`` on a fresh Xvfb; stop both at the end."""
    reason = remote_viewer_skip_reason()
    if reason:
        pytest.skip(reason)
    work.mkdir(parents=True, exist_ok=True)
    env = client_env()
    env.update(GSETTINGS_BACKEND="memory", NO_AT_BRIDGE="1", GDK_BACKEND="x11")
    xvfb, display = await start_xvfb(work, env, SCREEN)
    env["DISPLAY"] = f":{display}"
    viewer: ChildProcess | None = None
    try:
        viewer = ChildProcess(["remote-viewer", "--zoom=100", *args, uri], work / "remote-viewer.log", env)
        yield RemoteViewer(viewer, display, work)
    finally:
        if viewer is not None:
            await viewer.stop()
        await xvfb.stop()
