"""The simplest embedding: a host with no QXL guest driver shows numpy frames.

Run ``python examples/framebuffer.py`` and connect with ``remote-viewer spice://127.0.0.1:5930``.
A bouncing square on a gradient is painted with numpy at 20 fps; only the tiles that changed go to
the client (the library diffs frames by itself when no dirty rectangles are given).
"""

from __future__ import annotations

import asyncio

import numpy as np

from spiceserver import ServerConfig, SpiceServer

W, H = 800, 600


def paint(t: float, base: np.ndarray) -> np.ndarray:
    frame = base.copy()
    x = int((W - 100) * (0.5 + 0.5 * np.sin(t * 1.7)))
    y = int((H - 100) * (0.5 + 0.5 * np.sin(t * 1.1)))
    frame[y : y + 100, x : x + 100] = 0x00E0A020
    return frame


async def main() -> None:
    server = SpiceServer(ServerConfig(port=5930, disable_ticketing=True))
    fb = server.add_framebuffer_display(W, H)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.uint32)
    base = ((xx * 255 // W) << 16) | ((yy * 255 // H) << 8) | 0x60
    await server.start()
    print("serving on", server.addresses)
    t = 0.0
    while True:
        fb.update(paint(t, base))  # or fb.update(frame, dirty=[(l, t, r, b), ...])
        await asyncio.sleep(0.05)
        t += 0.05


if __name__ == "__main__":
    asyncio.run(main())
