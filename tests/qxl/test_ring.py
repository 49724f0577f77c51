"""Rings: pop/push, the notify_on_prod / notify_on_cons protocol, corrupt headers (ipc_ring.h)."""

from __future__ import annotations

import pytest

from spiceserver.errors import GuestError
from spiceserver.qxl import layout as L
from spiceserver.qxl.commands import QXLCommand
from spiceserver.qxl.ring import CommandRing, ReleaseRing, RingHeader


@pytest.fixture
def ring() -> CommandRing:
    r = CommandRing(memoryview(bytearray(L.COMMAND_RING_BYTES + 8)), 8, 32, "cmd")
    r.init()
    return r


def cmd(i: int) -> QXLCommand:
    return QXLCommand(data=0x1000 + i, type=1)


def test_init_matches_spice_ring_init(ring: CommandRing) -> None:
    assert ring.header() == RingHeader(num_items=32, prod=0, notify_on_prod=1, cons=0, notify_on_cons=0)


def test_fifo_and_first_push_notifies(ring: CommandRing) -> None:
    assert ring.pop() is None
    assert ring.push(cmd(0)) is True  # notify_on_prod was 1
    assert ring.push(cmd(1)) is False
    assert ring.pop() == (cmd(0), False)
    assert ring.pop() == (cmd(1), False)
    assert ring.pop() is None


def test_consumer_sleep_protocol(ring: CommandRing) -> None:
    ring.push(cmd(0))
    ring.pop()
    # empty: arming succeeds, the consumer may sleep; the next push must notify
    assert ring.request_notification() is True
    assert ring.header().notify_on_prod == 2
    assert ring.push(cmd(1)) is True
    # not empty: the consumer is told to keep going and nothing is armed
    assert ring.request_notification() is False
    assert ring.header().notify_on_prod == 2


def test_full_ring_producer_waits_and_consumer_notifies(ring: CommandRing) -> None:
    for i in range(32):
        assert ring.push(cmd(i)) is not None
    assert ring.push(cmd(99)) is None  # full: notify_on_cons armed
    assert ring.header().notify_on_cons == 1
    assert ring.pop() == (cmd(0), True)  # room again: tell the producer
    assert ring.push(cmd(32)) is not None
    assert [ring.pop()[0].data - 0x1000 for _ in range(32)] == list(range(1, 33))  # type: ignore[index]


def test_counters_wrap_at_32_bits(ring: CommandRing) -> None:
    L.RING_HEAD.pack_into(ring.buf, ring.offset, 32, 0xFFFFFFFF, 0, 0xFFFFFFFF, 0)
    assert ring.push(cmd(7)) is True  # prod wraps to 0 == notify_on_prod
    assert ring.header().prod == 0
    assert ring.pop() == (cmd(7), True)  # cons wraps to 0 == notify_on_cons


@pytest.mark.parametrize(
    ("prod", "cons", "num_items", "reason"),
    [
        (100, 0, 32, "corrupt: prod 100 - cons 0 = 100 > 32"),
        (0, 1, 32, "corrupt"),  # cons ahead of prod
        (1, 0, 64, "num_items 64 != 32"),
    ],
)
def test_corrupt_header(ring: CommandRing, prod: int, cons: int, num_items: int, reason: str) -> None:
    L.RING_HEAD.pack_into(ring.buf, ring.offset, num_items, prod, 0, cons, 0)
    with pytest.raises(GuestError, match=reason):
        ring.pop()
    with pytest.raises(GuestError):
        ring.push(cmd(0))
    with pytest.raises(GuestError):
        ring.request_notification()


def test_exactly_full_is_not_corrupt(ring: CommandRing) -> None:
    L.RING_HEAD.pack_into(ring.buf, ring.offset, 32, 40, 0, 8, 0)
    assert ring.pop() is not None


def test_release_ring_build_in_place_then_publish() -> None:
    r = ReleaseRing(memoryview(bytearray(L.RELEASE_RING_BYTES)), 0, 8, "release")
    r.init()
    r.set_prod_item(0xAB)
    assert r.prod_item() == 0xAB
    assert r.pop() is None  # not published yet
    assert r.publish() is True
    assert r.pop() == (0xAB, False)


def test_bad_geometry() -> None:
    with pytest.raises(ValueError):
        CommandRing(memoryview(bytearray(1000)), 0, 24, "x")
    with pytest.raises(ValueError):
        CommandRing(memoryview(bytearray(100)), 0, 32, "x")
