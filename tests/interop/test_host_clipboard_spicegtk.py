"""spice-gtk with no guest agent: the host answers the clipboard and the monitors config itself
(:mod:`spiceserver.channels.host_clipboard`, :mod:`spiceserver.channels.host_monitors`).

spice-gtk 0.42 (``src/channel-main.c``) sees an agent announcing ``CLIPBOARD_BY_DEMAND``,
``CLIPBOARD_SELECTION``, ``CLIPBOARD_GRAB_SERIAL``, ``NO_RELEASE_ON_REGRAB``, ``MAX_CLIPBOARD`` and
``MONITORS_CONFIG`` (+ sparse, position): it stamps its grabs with serials and checks ours, sends
``MAX_CLIPBOARD`` (its ``max-clipboard``, 100 MiB), and sends a monitors config once the agent
announced itself and a display has dimensions (set by the application: ``update_display``, then
``send_monitor_config``); it only logs our REPLY.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from spiceserver import ServerConfig, SpiceServer
from spiceserver.channels.host_agent import HostAgent
from spiceserver.channels.host_clipboard import HostClipboard, add_clipboard_handler
from spiceserver.channels.host_monitors import add_monitors_config_handler
from spiceserver.proto.vdagent import AgentCap
from spiceserver.proto.vdagent_messages import MonitorConfig
from tests.interop.harness import GiClient, controlled_client, format_events

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]

CB, PRIMARY, TEXT = 0, 1, 1


class Host:
    """The host's side: what spice-gtk did, and the text the host offers."""

    def __init__(self, agent: HostAgent) -> None:
        self.grabs: asyncio.Queue[tuple[int, tuple[int, ...]]] = asyncio.Queue()
        self.requests: list[tuple[int, int]] = []
        self.configs: asyncio.Queue[tuple[MonitorConfig, ...]] = asyncio.Queue()
        self.offer: dict[int, bytes] = {}
        self.clip: HostClipboard = add_clipboard_handler(agent, on_grab=self.on_grab, on_request=self.on_request)
        add_monitors_config_handler(agent, self.configs.put_nowait)

    def on_grab(self, sel: int, types: tuple[int, ...]) -> None:
        self.grabs.put_nowait((sel, types))

    async def on_request(self, sel: int, ctype: int) -> bytes | None:
        self.requests.append((sel, ctype))
        await asyncio.sleep(0.05)  # an async answer, pushed after the request was handled
        return self.offer.get(sel)


@contextlib.asynccontextmanager
async def host_client() -> AsyncIterator[tuple[Host, GiClient]]:
    server = SpiceServer(ServerConfig(port=0, disable_ticketing=True, net_test=False))
    fb = server.add_framebuffer_display(1024, 768)
    fb.update(np.full((768, 1024), 0x336699, np.uint32))
    host = Host(server.host_agent)
    await server.start()
    try:
        async with controlled_client("--port", str(server.port_of()), "--expect-channels", "4", timeout=60) as client:
            agent = await client.expect(lambda ev: ev["event"] == "agent" and ev["connected"] and ev["caps0"], timeout=15)
            caps = set(agent["caps"])
            assert {AgentCap.CLIPBOARD_BY_DEMAND, AgentCap.CLIPBOARD_SELECTION, AgentCap.MONITORS_CONFIG} <= caps, agent
            try:
                yield host, client
            except BaseException:
                print(format_events(client.events, client.stderr))
                raise
            assert await client.finish() == 0
            assert "unhandled agent message" not in client.stderr  # spice-gtk took every message
    finally:
        await server.close()


def since(client: GiClient, name: str, start: int) -> Any:
    def pick(ev: dict[str, Any]) -> bool:
        return ev.get("event") == name and any(e is ev for e in client.events[start:])

    return pick


async def action(client: GiClient, act: dict[str, Any]) -> None:
    ev = await client.action(act)
    assert "error" not in ev, ev


async def test_client_clipboard_reaches_the_host() -> None:
    async with host_client() as (host, client):
        for sel, text in ((CB, "from spice-gtk ✓"), (PRIMARY, "primary text")):
            await action(client, {"op": "clipboard_grab", "selection": sel, "types": [TEXT], "text": text})
            assert await asyncio.wait_for(host.grabs.get(), 10) == (sel, (TEXT,))
            data = await host.clip.request(sel, TEXT)
            assert data.decode() == text
        ev = [e for e in client.events if e["event"] == "clipboard-request"]
        assert [(e["selection"], e["answered"]) for e in ev] == [(CB, True), (PRIMARY, True)]


async def test_host_clipboard_reaches_the_client() -> None:
    async with host_client() as (host, client):
        for n, (sel, text) in enumerate(((CB, "from the host ✓"), (PRIMARY, "host primary"), (CB, "again"))):
            host.offer[sel] = text.encode()
            start = len(client.events)
            host.clip.grab(sel, [TEXT])  # the third one: a re-grab, serial 1 for CLIPBOARD
            grab = await client.expect(since(client, "clipboard-grab", start), 10)
            assert grab["selection"] == sel and grab["types"] == [TEXT], grab
            start = len(client.events)
            await action(client, {"op": "clipboard_request", "selection": sel, "type": TEXT})
            data = await client.expect(since(client, "clipboard-data", start), 10)
            assert data["selection"] == sel and data["type"] == TEXT and data.get("text") == text, data
            assert len(host.requests) == n + 1
        start = len(client.events)
        host.clip.release(CB)
        rel = await client.expect(since(client, "clipboard-release", start), 10)
        assert rel["selection"] == CB


async def test_spicegtk_monitors_config_reaches_the_host() -> None:
    async with host_client() as (host, client):
        # headless, no widget set the display's size: spice-gtk sends nothing until update_display
        # enabled: without it the display stays "undefined" and, sparse, goes out as a 0x0 hole
        act = {"op": "update_display", "id": 0, "enabled": True, "x": 0, "y": 0, "width": 800, "height": 600}
        await action(client, act)
        while True:
            mons = await asyncio.wait_for(host.configs.get(), 15)
            if (mons[0].width, mons[0].height) == (800, 600):
                break
        assert mons[0].depth == 32 and [m for m in mons[1:] if m.enabled] == [], mons


async def test_a_large_clipboard_both_ways() -> None:
    """Multi-piece clipboards: 24 KiB to spice-gtk (the harness reads its events as lines of at most
    64 KiB, and a clipboard-data event holds the text twice), 3 MiB from it (1500 AGENT_DATA pieces)."""
    big = ("0123456789abcdef" * (3 << 16)).encode()
    async with host_client() as (host, client):
        host.offer[CB] = small = big[: 24 << 10]
        start = len(client.events)
        host.clip.grab(CB, [TEXT])
        await client.expect(since(client, "clipboard-grab", start), 10)
        start = len(client.events)
        await action(client, {"op": "clipboard_request", "selection": CB, "type": TEXT})
        data = await client.expect(since(client, "clipboard-data", start), 30)
        assert data["size"] == len(small) and data.get("text") == small.decode()
        await action(client, {"op": "clipboard_grab", "selection": CB, "types": [TEXT], "text": big.decode()[::-1]})
        assert await asyncio.wait_for(host.grabs.get(), 10) == (CB, (TEXT,))
        assert await host.clip.request(CB, TEXT, timeout=30) == big[::-1]
