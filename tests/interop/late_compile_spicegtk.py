"""Serve spice-gtk a framebuffer after the codec warm-up and report the kernel specializations that
appeared meanwhile (run by ``test_codec_warmup.py`` in a fresh interpreter, where no earlier test has
added specializations of its own).

Prints one JSON object: ``{"new": {kernel: [signature, ...]}, "images": {codec: count}}``.

The frames: a desktop-like first picture, then a photo-like full frame (Quic, the path that used to
compile a second ``encode_image`` on the worker thread), then a photo region given as ``(h, w, 4)``
bytes with a dirty rectangle. After each, the client must have invalidated the whole area drawn.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np

from spiceserver import _jit
from spiceserver.codecs import warmup
from tests.codecs.late_compile_paths import photo_frame
from tests.conftest import start_server
from tests.interop.harness import Event, GiClient

W, H = 640, 360


async def drawn(client: GiClient, area: int) -> None:
    """Wait until invalidates that arrive from now on cover ``area`` pixels."""
    old = {id(ev) for ev in client.events}
    total = 0

    def pred(ev: Event) -> bool:
        nonlocal total
        if ev.get("event") == "display-invalidate" and id(ev) not in old:
            old.add(id(ev))
            total += int(ev["w"]) * int(ev["h"])
        return total >= area

    await client.wait_for(pred, timeout=60)


async def scenario() -> dict[str, Any]:
    kernels = _jit.kernels()
    before = {name: len(k.signatures) for name, k in kernels.items()}
    r = await start_server()
    client: GiClient | None = None
    try:
        fb = r.server.add_framebuffer_display(W, H)
        desktop = np.full((H, W), 0x204060, np.uint32)
        desktop[40:120, 60:300] = 0xE0E0E0
        fb.update(desktop)
        client = await GiClient.start(
            "--port", str(r.server.port_of()), "--wait-display", "--max-invalidates", "1000000",
            "--linger-ms", "600000", timeout=120,
        )  # fmt: skip
        await drawn(client, W * H)
        fb.update(photo_frame(W, H))
        await drawn(client, W * H)
        frame = np.ascontiguousarray(photo_frame(W, H)[::-1])
        bgrx = frame.view(np.uint8).reshape(H, W, 4)
        fb.update(bgrx, dirty=[(100, 50, 420, 290)])
        await drawn(client, 320 * 240)
        images = r.server.display_stats()["clients"][0]["images"]
    finally:
        if client is not None:
            client.kill()
            await client.wait(10)
        await r.server.close()
    new = {
        name: [str(sig) for sig in k.signatures[before[name] :]]
        for name, k in kernels.items()
        if len(k.signatures) != before[name]
    }
    return {"new": new, "images": {k: v for k, v in images.items() if v}}


def main() -> int:
    if not _jit.HAVE_NUMBA:
        print(json.dumps({"skip": "numba is not installed"}))
        return 0
    assert warmup.wait(600), "codec warm-up failed"
    print(json.dumps(asyncio.run(scenario())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
