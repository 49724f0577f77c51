"""Back-pressure from the display clients' pipes to the guest's command ring (issue 10, point 4).

As libspice's worker, the ring is pulled only while every client's pipe holds at most
``PIPE_LIMIT`` items: a client that does not acknowledge leaves the guest with a full ring, and
once it reads, every fill reaches it as a fill. A client that makes no progress for the grace time
is lagging: the ring is pulled again and its pipe collapses into a picture.

No test waits on time: "the worker had its chance" is two stats round trips after the ring filled
(each is handled by a full loop iteration of the worker).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from spiceserver.proto.enums import BrushType
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Rect
from spiceserver.qxl.guest import GuestDriver
from spiceserver.qxl.layout import CmdType
from spiceserver.worker import ring_gate
from spiceserver.worker.ring_gate import PIPE_LIMIT, RingGate
from tests.conftest import start_server
from tests.support.client import connect
from tests.support.display import link_display, pump_until

W, H = 320, 200
CELL = 8


def fill(guest: GuestDriver, i: int) -> int:
    """Fill ``i``: an 8x8 cell of its own (no fill hides another), colour from ``i``."""
    cols = W // CELL
    x, y = (i % cols) * CELL, (i // cols) * CELL
    body = d.Fill(brush=d.Brush(type=BrushType.SOLID, color=(i * 2654435761) & 0xFFFFFF), rop_descriptor=8, mask=d.QMask())
    return guest.drawable(body, bbox=Rect(top=y, left=x, bottom=y + CELL, right=x + CELL))


def expected(n: int) -> np.ndarray:
    px = np.zeros((H, W), dtype=np.uint32)
    cols = W // CELL
    for i in range(n):
        x, y = (i % cols) * CELL, (i // cols) * CELL
        px[y : y + CELL, x : x + CELL] = (i * 2654435761) & 0xFFFFFF
    return px


async def test_a_client_that_does_not_ack_holds_the_ring_then_gets_every_fill(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ring_gate, "SLOW_CLIENT_GRACE", 1e9)  # never lagging in this test
    r = await start_server()
    device = r.server.add_qxl_device()
    guest = GuestDriver(device)
    try:
        guest.create_primary(W, H)
        guest.submit(guest.drawable(d.Fill(brush=d.Brush(type=BrushType.SOLID, color=0), rop_descriptor=8, mask=d.QMask()), bbox=Rect(top=0, left=0, bottom=H, right=W)), CmdType.DRAW)
        r.server.wait_idle()
        s = await connect(r.ep)
        ch, state = await link_display(s)
        await pump_until(ch, state, lambda st: st.marks == 1)
        # the client now reads (and acks) nothing; the guest pushes fills until its ring is full
        n = 0
        for _ in range(50):
            while guest.submit(fill(guest, n), CmdType.DRAW):
                n += 1
            r.server.display_stats()  # two worker loop rounds: it pulled what it was allowed to
            r.server.display_stats()
            if not guest.submit(fill(guest, n), CmdType.DRAW):
                break
            n += 1
        stats = r.server.display_stats()
        client = stats["clients"][0]
        assert client["pipe"] <= PIPE_LIMIT + 1  # the ring waits instead of the pipe growing
        assert client["collapsed"] == 0
        assert stats["ring_held"] > 0
        assert n < 200  # the guest was held back: ring + pipe + ack window, not an unbounded pull
        # the client reads again: every fill arrives as a fill
        guest.collect_releases()
        target = expected(n)
        await pump_until(ch, state, lambda st: np.array_equal(st.surfaces[0].pixels & 0xFFFFFF, target))
        r.server.wait_idle()
        client = r.server.display_stats()["clients"][0]
        assert client["collapsed"] == 0 and client["pruned"] == 0
        assert client["drawables"] >= n
    finally:
        await r.server.close()


async def test_a_client_that_makes_no_progress_becomes_lagging_and_is_collapsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ring_gate, "SLOW_CLIENT_GRACE", 0.0)  # lagging as soon as it is over the limit
    r = await start_server()
    device = r.server.add_qxl_device()
    guest = GuestDriver(device)
    try:
        guest.create_primary(W, H)
        r.server.wait_idle()
        s = await connect(r.ep)
        ch, state = await link_display(s)
        await pump_until(ch, state, lambda st: st.marks == 1)
        total = (W // CELL) * (H // CELL)  # 1000 fills: the pipe passes MAX_PIPE
        n = 0
        while n < total:
            if guest.submit(fill(guest, n), CmdType.DRAW):
                n += 1
            else:
                r.server.display_stats()  # let the worker pull
                guest.collect_releases()
        r.server.wait_idle()
        stats = r.server.display_stats()
        assert stats["clients_lagging"] >= 1
        assert stats["clients"][0]["collapsed"] >= 1
        target = expected(total)
        await pump_until(ch, state, lambda st: np.array_equal(st.surfaces[0].pixels & 0xFFFFFF, target), timeout=20)
    finally:
        await r.server.close()


class _Client:
    def __init__(self, cc_id: int, size: int) -> None:
        self.cc_id = cc_id
        self.pipe_size = size


def test_gate_budget_lagging_and_recovery() -> None:
    gate = RingGate("display", limit=50, grace=1.0)
    a = _Client(1, 10)
    assert gate.budget([a], 50, now=0.0) == 41
    assert gate.budget([], 50, now=0.0) == 50
    a.pipe_size = 51
    assert gate.budget([a], 50, now=0.0) == 0
    assert gate.next_deadline() == 1.0
    a.pipe_size = 49  # progress: the clock restarts
    assert gate.budget([a], 50, now=0.9) == 2
    a.pipe_size = 60
    assert gate.budget([a], 50, now=1.0) == 0
    assert gate.budget([a], 50, now=1.5) == 0
    assert gate.budget([a], 50, now=2.0) == 50  # a is lagging: it no longer holds the ring
    assert gate.lagging == {1} and gate.stats["lagging"] == 1
    a.pipe_size = 0
    assert gate.budget([a], 50, now=2.1) == 50
    assert gate.lagging == set()  # caught up: it holds the ring back again
    a.pipe_size = 70
    assert gate.budget([a], 50, now=2.2) == 0
    gate.forget(1)
    assert gate.next_deadline() is None


def test_gate_with_several_clients_follows_the_emptiest_pipe() -> None:
    """Two clients of one display (max_clients > 1): a viewer whose pipe is full never holds the
    ring while the owner's has room; the ring waits only when every pipe is full."""
    gate = RingGate("display", limit=50, grace=1.0)
    owner, viewer = _Client(1, 10), _Client(2, 0)
    assert gate.budget([owner, viewer], 50, now=0.0) == 50
    viewer.pipe_size = 300  # stopped reading
    assert gate.budget([owner, viewer], 50, now=0.0) == 41  # the owner's room, at once
    owner.pipe_size = 60
    assert gate.budget([owner, viewer], 50, now=0.1) == 0  # both full: the guest waits
    assert gate.budget([owner, viewer], 50, now=1.2) == 50  # both lagging after the grace


async def test_released_ring_lets_the_guest_continue_without_a_client() -> None:
    """No client: nothing holds the ring back."""
    r = await start_server()
    device = r.server.add_qxl_device()
    guest = GuestDriver(device)
    try:
        guest.create_primary(W, H)
        for i in range(300):
            while not guest.submit(fill(guest, i), CmdType.DRAW):
                await asyncio.sleep(0)
                guest.collect_releases()
        r.server.wait_idle()
        assert np.array_equal(r.server.display_snapshot() & 0xFFFFFF, expected(300))
    finally:
        await r.server.close()
