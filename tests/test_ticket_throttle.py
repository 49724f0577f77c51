"""Password guessing is slow: failed tickets per peer address lock that address out (issue 9, point 2).

libspice checks every ticket it gets; with a password set, a peer (or a web page, before the Host
check) could guess as fast as it could link. Now ``ticket_max_failures`` wrong tickets from one
address within ``ticket_lockout`` seconds refuse every further link from it for ``ticket_lockout``
seconds, even with the right password; other addresses are not affected, and the table of
addresses is bounded (counted entries and traced bytes).
"""

from __future__ import annotations

import asyncio
import functools
import tracemalloc
from typing import Any

import pytest

from spiceserver.config import ServerConfig
from spiceserver.errors import ConfigError
from spiceserver.proto.enums import LinkErr
from spiceserver.ticket import MAX_THROTTLED_PEERS, LinkKey, Ticket, TicketThrottle, encrypt_ticket, peer_address
from tests.conftest import start_server
from tests.support.client import Endpoint, LinkFailed, connect

KEY = LinkKey()


def ticket(password: str) -> bytes:
    return encrypt_ticket(KEY.public_der, password)


def test_n_failures_lock_an_address_out_even_with_the_right_password() -> None:
    t = Ticket(throttle=TicketThrottle(max_failures=3, lockout=60.0))
    t.set("pw", now=0.0)
    for i in range(3):  # other ports of the same address count together
        assert t.authenticate(KEY, ticket("guess"), now=1.0 + i, peer=("192.0.2.1", 40000 + i)) is not None
    reason = t.authenticate(KEY, ticket("pw"), now=5.0, peer=("192.0.2.1", 1))
    assert reason is not None and "too many wrong tickets" in reason
    assert t.authenticate(KEY, ticket("pw"), now=5.0, peer=("192.0.2.2", 1)) is None  # another address
    assert t.authenticate(KEY, ticket("pw"), now=3.0 + 60.0, peer=("192.0.2.1", 1)) is None  # after the cool-down


def test_failures_spread_over_more_than_the_window_do_not_lock() -> None:
    t = Ticket(throttle=TicketThrottle(max_failures=3, lockout=10.0))
    t.set("pw", now=0.0)
    for i in range(10):
        t.authenticate(KEY, ticket("typo"), now=i * 6.0, peer=("192.0.2.1", 1))
    assert t.authenticate(KEY, ticket("pw"), now=60.0, peer=("192.0.2.1", 1)) is None


def test_what_counts() -> None:
    t = Ticket(throttle=TicketThrottle(max_failures=1, lockout=60.0))
    peer = ("192.0.2.1", 1)
    # no password set yet, or an expired one: no guess was tested, nothing counted
    assert t.authenticate(KEY, ticket("x"), now=0.0, peer=peer) is not None
    t.set("pw", lifetime=1.0, now=0.0)
    assert t.authenticate(KEY, ticket("x"), now=2.0, peer=peer) == "the ticket has expired"
    t.set("pw", now=2.0)
    # ticketing disabled: never throttled
    assert t.authenticate(KEY, b"\x00" * 128, required=False, now=2.0, peer=peer) is not None
    assert t.authenticate(KEY, ticket("x"), required=False, now=2.0, peer=peer) is None
    assert t.authenticate(KEY, ticket("pw"), now=2.0, peer=peer) is None
    # a ticket that does not decrypt counts like a wrong password
    reason = t.authenticate(KEY, b"\x01" * 128, now=3.0, peer=peer)
    assert reason is not None and "locked out for 60 s" in reason
    assert t.authenticate(KEY, ticket("pw"), now=4.0, peer=peer) is not None


def test_peer_addresses() -> None:
    assert peer_address(("192.0.2.1", 5)) == peer_address(("::ffff:192.0.2.1", 6, 0, 0)) == "192.0.2.1"
    assert peer_address(("2001:db8::1", 5, 0, 0)) == peer_address(("2001:db8::ffff:1", 7, 0, 0)) == "2001:db8::/64"
    assert peer_address(("2001:db8:0:1::1", 5, 0, 0)) != peer_address(("2001:db8::1", 5, 0, 0))
    assert peer_address("") == peer_address(None) == "local"  # Unix-socket peers


def test_the_table_stays_bounded_under_many_addresses() -> None:
    throttle = TicketThrottle(max_failures=5, lockout=60.0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(50_000):
            throttle.failed(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", now=float(i))
            assert len(throttle) <= MAX_THROTTLED_PEERS
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(throttle) == MAX_THROTTLED_PEERS
    assert held < 2 << 20, held  # about 4096 entries of a few hundred bytes
    # the newest addresses are the ones kept
    assert throttle.failed("10.0.195.79", now=50_000.0) is False  # (49999: still counted, 2 of 5)


def test_config() -> None:
    cfg = ServerConfig(port=0)
    assert (cfg.ticket_max_failures, cfg.ticket_lockout) == (5, 60.0)
    ServerConfig(port=0, ticket_max_failures=0)  # no limit
    for bad in ({"ticket_max_failures": -1}, {"ticket_lockout": 0.0}):
        with pytest.raises(ConfigError):
            ServerConfig(port=0, **bad)
    unlimited = TicketThrottle(max_failures=0)
    assert not any(unlimited.failed("192.0.2.1", now=0.0) for _ in range(100))
    assert unlimited.locked_for("192.0.2.1", now=0.0) == 0.0


def from_address(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    """The test client's connections start from ``address`` (any 127/8 address reaches 127.0.0.1)."""
    original = asyncio.open_connection

    @functools.wraps(original)
    async def open_connection(*args: Any, **kw: Any) -> Any:
        return await original(*args, local_addr=(address, 0), **kw)

    monkeypatch.setattr(asyncio, "open_connection", open_connection)  # as the test client calls it


async def test_through_the_server_plain_and_websocket(monkeypatch: pytest.MonkeyPatch) -> None:
    r = await start_server(password="pw", ticket_max_failures=3)
    try:
        port = r.server.port_of()
        from_address(monkeypatch, "127.0.0.2")
        for ep in (Endpoint(port=port), Endpoint(port=port, websocket=True), Endpoint(port=port)):
            with pytest.raises(LinkFailed) as e:
                await connect(ep, password="guess")
            assert e.value.code == LinkErr.PERMISSION_DENIED
        for ep in (Endpoint(port=port), Endpoint(port=port, websocket=True)):
            with pytest.raises(LinkFailed) as e:
                await connect(ep, password="pw")  # the 4th: refused although right
            assert e.value.code == LinkErr.PERMISSION_DENIED
        monkeypatch.undo()
        s = await connect(Endpoint(port=port), password="pw")  # from 127.0.0.1: unaffected
        assert s.session_id
    finally:
        await r.server.close()
