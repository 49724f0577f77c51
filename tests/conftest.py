"""Shared fixtures: a running server on free loopback ports, recording devices, the test client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from spiceserver import Keyboard, KeyEvent, Mouse, ServerConfig, SpiceServer, Tablet
from tests.support.client import Endpoint


@dataclass
class Recorder(Keyboard, Mouse, Tablet):
    """A keyboard + mouse + tablet that records every call, and lets tests wait for them."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    leds: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _rec(self, *ev: Any) -> None:
        self.events.append(ev)
        self.changed.set()

    def on_scancodes(self, data: bytes) -> None:  # type: ignore[override]
        self._rec("scancodes", data)
        super().on_scancodes(data)

    def on_key(self, event: KeyEvent) -> None:
        self._rec("key", event.keycode, event.down)

    def get_leds(self) -> int:
        return self.leds

    def on_motion(self, dx: int, dy: int, dz: int, buttons: int) -> None:
        self._rec("motion", dx, dy, dz, buttons)

    def on_buttons(self, buttons: int) -> None:
        self._rec("buttons", buttons)

    def on_position(self, x: int, y: int, buttons: int, display_id: int) -> None:
        self._rec("position", x, y, buttons, display_id)

    def on_wheel(self, dz: int, buttons: int) -> None:
        self._rec("wheel", dz, buttons)

    async def wait_for(self, pred: Any, timeout: float = 5.0) -> list[tuple[Any, ...]]:
        async def loop() -> list[tuple[Any, ...]]:
            while True:
                if pred(self.events):
                    return self.events
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(loop(), timeout)


@dataclass
class Running:
    server: SpiceServer
    devices: Recorder

    @property
    def ep(self) -> Endpoint:
        return Endpoint(port=self.server.port_of())


async def start_server(**kw: Any) -> Running:
    kw.setdefault("port", 0)
    kw.setdefault("disable_ticketing", "password" not in kw)
    kw.setdefault("net_test", False)
    from spiceserver.codecs import warmup

    assert warmup.wait(300), "codec kernels failed to compile"  # deterministic codec choice in tests
    server = SpiceServer(ServerConfig(**kw))
    rec = Recorder()
    server.add_keyboard(rec)
    server.add_mouse(rec)
    server.add_tablet(rec)
    await server.start()
    return Running(server, rec)


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    r = await start_server()
    try:
        yield r
    finally:
        await r.server.close()
