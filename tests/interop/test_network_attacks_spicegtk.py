"""spice-gtk links and draws while the network side of the server is attacked (issue 9).

One test per attack, each against a fresh server with a 320x240 framebuffer display: the attack
starts first, then spice-gtk links, shows the display's frame pixel for pixel, and shows a second
frame the host paints while the attack goes on. Attackers connect from other loopback addresses
(127.0.0.x, x >= 2) than spice-gtk (127.0.0.1), so that no per-address bound is what lets the
client in. The attacks:

1. 600 idle plain TCP connections that never send a byte (300 before the client, 300 while it is
   linked), from 20 addresses: the global link-phase bound evicts the oldest silent ones;
2. a flood of links presenting all-zero 128-byte tickets against a password: each attacking
   address is locked out after ``ticket_max_failures`` tickets, spice-gtk (right password) is not;
3. rounds of a dozen concurrent ``GET /metrics`` while a second display's worker is blocked;
4. HTTP requests naming another host (DNS rebinding), request heads over ``MAX_HTTP_HEAD``, and
   WebSocket upgrades that send a message over ``PRE_LINK_MESSAGE`` before any link.

Bounds are counts (connections evicted or refused, RSA decryptions, metrics requests queued,
answers and closed connections, the server's own counters), never durations.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from spiceserver.desktop import SyntheticDesktop
from spiceserver.framebuffer import FramebufferDisplay
from spiceserver.proto.enums import LinkErr
from spiceserver.ticket import MAX_TICKET_SHIFT, LinkKey
from spiceserver.web import MAX_HTTP_HEAD, PRE_LINK_MESSAGE
from spiceserver.worker.messages import CollectMetrics
from tests.conftest import Running, start_server
from tests.interop.harness import controlled_client, format_events, same_picture
from tests.interop.test_display_spicegtk import assert_same
from tests.test_framebuffer import Hold
from tests.test_link_admission import close_all, open_idle, raw_link, until
from tests.test_web_hardening import frame as ws_frame
from tests.test_web_hardening import get, status, upgrade

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]

WIDTH, HEIGHT = 320, 240
#: the attackers' addresses (spice-gtk connects from 127.0.0.1)
ATTACKERS = [f"127.0.0.{i}" for i in range(2, 22)]


def framebuffer(r: Running) -> tuple[FramebufferDisplay, SyntheticDesktop]:
    desktop = SyntheticDesktop(WIDTH, HEIGHT)
    fb = r.server.add_framebuffer_display(WIDTH, HEIGHT)
    fb.update(desktop.frame(0.0))
    return fb, desktop


async def links_and_draws(
    r: Running,
    fb: FramebufferDisplay,
    desktop: SyntheticDesktop,
    *args: str,
    meanwhile: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """spice-gtk links (``args`` added), shows the display's frame, then -- after ``meanwhile``, the
    attack still running -- a second frame the host paints; both pixel for pixel; it exits cleanly."""
    first, later = desktop.frame(0.0), desktop.frame(1.0)
    assert not np.array_equal(first, later)
    async with controlled_client("--port", str(r.server.port_of()), *args, "--wait-display", timeout=60) as gtk:
        shown = await gtk.wait_picture(same_picture(first))
        assert shown is not None, format_events(gtk.events, gtk.stderr)
        assert_same(shown, first)
        if meanwhile is not None:
            await meanwhile()
        fb.update(later)
        shown = await gtk.wait_picture(same_picture(later))
        assert shown is not None, format_events(gtk.events, gtk.stderr)
        assert_same(shown, later)
    assert gtk.proc.returncode == 0, format_events(gtk.events, gtk.stderr)


async def stop_all(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for the attacker loops (they stop by themselves); a failure in one fails the test."""
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- 1. idle connections -----------------------------------------------------------------------


async def test_spicegtk_links_and_draws_through_idle_connections() -> None:
    # silent connections are never timed out here (first_bytes_timeout 60 s): eviction must do it
    r = await start_server(first_bytes_timeout=60.0)
    fb, desktop = framebuffer(r)
    admission = r.server._admission
    cap = r.server.config.max_pending_links
    idle: list[asyncio.StreamWriter] = []
    try:
        port = r.server.port_of()
        idle = await open_idle(port, 300, ATTACKERS)  # 15 an address: under the per-peer bound
        await until(lambda: r.server.stats["connections"] == 300)
        assert len(admission) == cap and admission.evicted == 300 - cap

        async def more_idle() -> None:
            idle.extend(await open_idle(port, 300, ATTACKERS))
            # silent attackers leave the link phase only when evicted: 600 - cap of them, and
            # nothing else was (none of spice-gtk's connections)
            await until(lambda: len(admission) == cap and admission.evicted == 600 - cap)

        await links_and_draws(r, fb, desktop, meanwhile=more_idle)
        assert admission.refused == 0
        assert max(admission.count(a) for a in ATTACKERS) <= r.server.config.max_pending_links_per_peer
    finally:
        close_all(idle)
        await r.server.close()


# -- 2. all-zero tickets against a password ------------------------------------------------------


async def test_spicegtk_links_and_draws_through_a_zero_ticket_flood(monkeypatch: pytest.MonkeyPatch) -> None:
    decryptions: list[int] = []
    real = LinkKey._try_decrypt

    def counted(self: LinkKey, candidate: bytes) -> bytes | None:
        decryptions.append(1)  # (list.append is atomic: the link crypto threads call this)
        return real(self, candidate)

    monkeypatch.setattr(LinkKey, "_try_decrypt", counted)
    r = await start_server(password="s3cret")  # default throttle: 5 wrong tickets, then 60 s locked out
    fb, desktop = framebuffer(r)
    max_failures = r.server.config.ticket_max_failures
    sources = ATTACKERS[:12]
    refused = dict.fromkeys(sources, 0)
    drawn = asyncio.Event()

    async def flood(source: str) -> None:
        # one link at a time per address (concurrent ones could each pass the lock-out check)
        while not (drawn.is_set() and refused[source] > max_failures):
            assert await raw_link(r.server.port_of(), bytes(128), source) == LinkErr.PERMISSION_DENIED
            refused[source] += 1

    loop = asyncio.get_running_loop()
    attackers = [loop.create_task(flood(s)) for s in sources]
    try:
        await links_and_draws(r, fb, desktop, "--password", "s3cret")
        drawn.set()
        await stop_all(attackers)
        throttle = r.server._ticket.throttle
        assert throttle is not None
        now = time.monotonic()
        assert all(throttle.locked_for(s, now) > 0 for s in sources)
        assert throttle.locked_for("127.0.0.1", now) == 0
        assert r.server.stats["links_failed"] == sum(refused.values())
        # an all-zero ticket costs MAX_TICKET_SHIFT + 1 decryptions until its address is locked out,
        # none after; each of spice-gtk's channel links costs one
        assert len(decryptions) == len(sources) * max_failures * (MAX_TICKET_SHIFT + 1) + r.server.stats["links_ok"]
    finally:
        drawn.set()
        for t in attackers:
            t.cancel()
        await asyncio.gather(*attackers, return_exceptions=True)
        await r.server.close()


# -- 3. metrics requests with a blocked worker ---------------------------------------------------


async def test_spicegtk_links_and_draws_while_metrics_wait_for_a_blocked_worker() -> None:
    r = await start_server(metrics_path="/metrics")
    fb, desktop = framebuffer(r)
    r.server.add_framebuffer_display(64, 48)  # display 1, whose worker the test blocks
    assert len((await r.server.metrics()).displays) == 2  # both answered once (later: last counters)
    blocked = r.server._displays[1].worker
    posted: list[object] = []
    real_post = blocked.post

    def post(msg: object) -> None:
        posted.append(msg)
        real_post(msg)

    blocked.post = post  # type: ignore[method-assign]
    gate = threading.Event()
    blocked.ep.register_handler(Hold, lambda msg: msg.gate.wait(120))
    real_post(Hold(gate))
    drawn = asyncio.Event()
    pages: list[bytes] = []
    port = r.server.port_of()
    request = get(f"127.0.0.1:{port}", "/metrics")

    async def one_get(source: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        writer.write(request)
        writer.write_eof()
        try:
            return await asyncio.wait_for(reader.read(), 30)
        finally:
            writer.close()

    async def rounds() -> None:
        while not drawn.is_set():
            pages.extend(await asyncio.gather(*(one_get(ATTACKERS[i]) for i in range(12))))

    poller = asyncio.get_running_loop().create_task(rounds())
    try:
        await links_and_draws(r, fb, desktop)
        drawn.set()
        await stop_all([poller])
        assert not gate.is_set()  # display 1's worker was blocked throughout
        assert len(pages) >= 12 and len(pages) % 12 == 0
        for page in pages:
            assert status(page) == 200, page[:80]
            assert b'spiceserver_display_clients{display="0"}' in page
            assert b'spiceserver_display_clients{display="1"}' in page  # its last counters
        # however many pages asked, one request waits in the blocked worker's queue
        assert sum(isinstance(m, CollectMetrics) for m in posted) == 1
        assert r.server.stats["http_requests"] == len(pages)
    finally:
        drawn.set()
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        gate.set()
        await r.server.close()


# -- 4. web-side floods: rebinding hosts, huge request heads, big pre-link messages --------------


async def test_spicegtk_links_and_draws_through_an_http_and_websocket_flood() -> None:
    r = await start_server()
    fb, desktop = framebuffer(r)
    port = r.server.port_of()
    evil = f"attacker.example:{port}"
    rebinding = [upgrade(evil, f"http://{evil}"), upgrade(evil), get(evil), get(evil, "/metrics")]
    # a head one byte over the bound, never finished: the server has read all of it when it answers
    head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    while len(head) <= MAX_HTTP_HEAD:
        head += b"X-Pad: " + b"a" * 4000 + b"\r\n"
    head = head[: MAX_HTTP_HEAD + 1]
    big = ws_frame(b"REDQ" + bytes(2 * PRE_LINK_MESSAGE))  # an 8 KiB first message
    count = {"421": 0, "431": 0, "ws": 0}
    drawn = asyncio.Event()

    async def exchange(source: str, data: bytes, eof: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        writer.write(data)
        if eof:
            writer.write_eof()
        return reader, writer

    async def rebind(source: str) -> None:
        while not drawn.is_set():
            for request in rebinding:
                reader, writer = await exchange(source, request, eof=True)
                answer = await asyncio.wait_for(reader.read(), 30)
                writer.close()
                assert status(answer) == 421, answer[:80]
                count["421"] += 1

    async def huge_head(source: str) -> None:
        while not drawn.is_set():
            reader, writer = await exchange(source, head, eof=False)
            answer = await asyncio.wait_for(reader.read(), 30)
            writer.close()
            assert status(answer) == 431, answer[:80]
            count["431"] += 1

    async def big_message(source: str) -> None:
        while not drawn.is_set():
            reader, writer = await exchange(source, upgrade(f"127.0.0.1:{port}"), eof=False)
            assert b" 101 " in await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            writer.write(big)
            try:  # close 1009 (message too big) and EOF; or a reset: the server did not read it all
                answer = await asyncio.wait_for(reader.read(), 30)
                assert answer[0] == 0x88 and answer[2:4] == b"\x03\xf1", answer[:16]
            except ConnectionResetError:
                pass
            writer.close()
            count["ws"] += 1

    loop = asyncio.get_running_loop()
    attackers = [
        loop.create_task(rebind(ATTACKERS[0])),
        loop.create_task(rebind(ATTACKERS[1])),
        loop.create_task(huge_head(ATTACKERS[2])),
        loop.create_task(huge_head(ATTACKERS[3])),
        loop.create_task(big_message(ATTACKERS[4])),
        loop.create_task(big_message(ATTACKERS[5])),
    ]

    async def under_attack() -> None:
        await until(lambda: min(count.values()) >= 1 or any(t.done() for t in attackers))
        for t in attackers:
            if t.done():
                t.result()  # an attacker's failed assertion

    try:
        await links_and_draws(r, fb, desktop, meanwhile=under_attack)
        drawn.set()
        await stop_all(attackers)
        stats = r.server.stats
        # every attacking connection was answered or closed, and nothing of it linked
        await until(lambda: stats["http_requests"] + stats["links_failed"] == count["421"] + count["431"] + count["ws"])
        assert stats["http_requests"] == count["421"] + count["431"]
        assert stats["websocket_links"] == stats["links_failed"] == count["ws"]
        await until(lambda: len(r.server._admission) == 0)
    finally:
        drawn.set()
        for t in attackers:
            t.cancel()
        await asyncio.gather(*attackers, return_exceptions=True)
        await r.server.close()
