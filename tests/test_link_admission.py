"""No peer can lock the others out of the link phase (issue 9, point 3).

Each attack is measured by counts: connections the server holds, file descriptors, RSA decryptions
per ticket, metrics requests queued on a worker -- never by how long something took. The deadlines
passed to ``wait_for`` only keep a broken server from hanging the suite.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import ssl
import threading
from collections.abc import Awaitable, Callable

import pytest

from spiceserver.admission import ADMISSION_LOG_INTERVAL, Admission
from spiceserver.proto.enums import ChannelType, CommonCap, LinkErr
from spiceserver.proto.link import ClientLink, LinkMess, LinkReplyReceived, LinkResult, caps_to_words
from spiceserver.ticket import MAX_TICKET_SHIFT, OAEP, LinkKey
from spiceserver.worker.messages import CollectMetrics
from tests.conftest import Running, start_server
from tests.support.certs import make_test_ca
from tests.support.client import Endpoint, connect, http_exchange

#: a TLS record header announcing a 512-byte ClientHello, then only part of it
PARTIAL_CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(16)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def pending(r: Running) -> int:
    return len(r.server._admission)


async def until(pred: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for ``pred`` to hold (the deadline only keeps a broken server from hanging the test)."""

    async def poll() -> None:
        while not pred():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def open_idle(port: int, count: int, sources: list[str], payload: bytes = b"") -> list[asyncio.StreamWriter]:
    """``count`` connections spread over the source addresses, each sending ``payload`` (maybe nothing)."""
    writers = []
    for i in range(count):
        _reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(sources[i % len(sources)], 0))
        if payload:
            writer.write(payload)
        writers.append(writer)
    return writers


def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for w in writers:
        w.transport.abort()


# --- the admission rules, without sockets ------------------------------------------------------------


class Conn:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_admission_evicts_the_oldest_silent_connection_of_the_peer_then_of_anyone() -> None:
    adm = Admission(max_total=4, max_per_peer=2)
    a1, a2, b1, c1, new = Conn(), Conn(), Conn(), Conn(), Conn()
    e_a1 = adm.admit("a", a1.close)
    e_a2 = adm.admit("a", a2.close)
    assert e_a1 and e_a2
    adm.spoke(e_a1)
    # per-peer bound: a's oldest *silent* one (a2, not a1 which spoke) makes room
    e_a3 = adm.admit("a", Conn().close)
    assert e_a3 is not None and a2.closed and not a1.closed and e_a2.evicted and adm.count("a") == 2
    assert adm.admit("b", b1.close) and adm.admit("c", c1.close) and len(adm) == 4
    # global bound: the oldest silent one of anyone (a3), not the new peer's
    assert adm.admit("d", new.close) is not None and e_a3.evicted and len(adm) == 4
    assert adm.evicted == 2 and adm.refused == 0


def test_admission_refuses_only_when_everyone_has_spoken() -> None:
    adm = Admission(max_total=3, max_per_peer=3)
    entries = [adm.admit(f"p{i}", Conn().close) for i in range(3)]
    for e in entries:
        assert e is not None
        adm.spoke(e)
    assert adm.admit("q", Conn().close) is None and adm.refused == 1 and len(adm) == 3
    assert entries[0] is not None
    adm.release(entries[0])
    adm.release(entries[0])  # twice is harmless
    assert adm.admit("q", Conn().close) is not None and len(adm) == 3


def test_admission_logs_one_summary_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "spiceserver")
    now = [100.0]
    adm = Admission(max_total=1, max_per_peer=1, clock=lambda: now[0])
    first = adm.admit("a", Conn().close)
    assert first is not None
    adm.spoke(first)
    for _ in range(10_000):
        adm.admit("b", Conn().close)  # refused
    lines = [r for r in caplog.records if "link phase full" in r.getMessage()]
    assert len(lines) == 1 and adm.refused == 10_000
    now[0] += ADMISSION_LOG_INTERVAL
    adm.admit("b", Conn().close)
    lines = [r.getMessage() for r in caplog.records if "link phase full" in r.getMessage()]
    assert len(lines) == 2 and "10000 refused" in lines[1]  # 9999 since the first line, and this one


def test_unix_peers_are_not_limited_per_peer() -> None:
    adm = Admission(max_total=10, max_per_peer=1)
    assert all(adm.admit(None, Conn().close) for _ in range(10))
    assert adm.evicted == 0


# --- over sockets ---------------------------------------------------------------------------------


async def test_half_open_tls_handshakes_do_not_lock_out_a_new_client(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    """1100 half-open handshakes exhausted 1024 fds: now they are counted from the accept, and evicted."""
    caplog.set_level(logging.WARNING, "spiceserver")
    x509 = make_test_ca(tmp_path / "x509").dir
    cap = 64
    r = await start_server(port=None, tls_port=0, x509_dir=str(x509), max_pending_links=cap, max_pending_links_per_peer=cap)
    attackers: list[asyncio.StreamWriter] = []
    try:
        port = r.server.port_of(secure=True)
        base = open_fds()
        n = 400
        attackers = await open_idle(port, n, ["127.0.0.1"], PARTIAL_CLIENT_HELLO)
        await until(lambda: r.server.stats["connections"] == n)
        # the server holds at most `cap` of them: our n client sockets plus at most cap server sockets
        await until(lambda: open_fds() - base <= n + cap + 8)
        assert pending(r) <= cap
        assert r.server._admission.evicted >= n - cap
        ctx = ssl.create_default_context(cafile=str(x509 / "ca-cert.pem"))
        s = await connect(Endpoint(port=port, ssl=ctx))
        assert s.session_id
        # hundreds of evictions, a handful of log lines
        lines = [rec for rec in caplog.records if "link phase full" in rec.getMessage()]
        assert 1 <= len(lines) <= 3
        assert not [rec for rec in caplog.records if "too many connections" in rec.getMessage()]
    finally:
        close_all(attackers)
        await r.server.close()


async def test_idle_connections_do_not_lock_out_a_new_client() -> None:
    """256 silent connections used to fill the link phase for link_timeout (30 s)."""
    r = await start_server()  # defaults: 256 pending links, 32 per peer
    one_peer: list[asyncio.StreamWriter] = []
    many_peers: list[asyncio.StreamWriter] = []
    try:
        port = r.server.port_of()
        cfg = r.server.config
        # one address: the per-peer bound holds, and a new client from that address still links
        one_peer = await open_idle(port, 300, ["127.0.0.1"])
        await until(lambda: r.server.stats["connections"] == 300)
        assert pending(r) == cfg.max_pending_links_per_peer
        s = await connect(r.ep)
        assert s.session_id
        # twenty addresses, 15 each: the global bound evicts the oldest silent ones
        sources = [f"127.0.0.{i}" for i in range(2, 22)]
        before = r.server.stats["connections"]
        many_peers = await open_idle(port, 300, sources)
        await until(lambda: r.server.stats["connections"] == before + 300)
        assert pending(r) <= cfg.max_pending_links
        s2 = await connect(r.ep)
        assert s2.session_id
        assert r.server._admission.refused == 0
    finally:
        close_all(one_peer + many_peers)
        await r.server.close()


async def test_silent_connection_closed_after_first_bytes_timeout(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "spiceserver")
    r = await start_server(first_bytes_timeout=0.2, link_timeout=30)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", r.server.port_of())
        writer.write(b"RE")  # not even the four first bytes
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        await until(lambda: pending(r) == 0)
        assert "first bytes not received within 0.2 s" in caplog.text
    finally:
        await r.server.close()


async def raw_link(port: int, ticket: bytes, source: str | None = None) -> int:
    """Link main with ``ticket`` as the encrypted password (from the local address ``source``, if
    given); returns the link result code."""
    local = (source, 0) if source is not None else None
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local)
    caps = caps_to_words({CommonCap.PROTOCOL_AUTH_SELECTION, CommonCap.MINI_HEADER})
    link = ClientLink(LinkMess(0, ChannelType.MAIN, 0, caps, ()))
    writer.write(link.data_to_send())
    try:
        while True:
            data = await asyncio.wait_for(reader.read(4096), 30)
            assert data, "closed before the link result"
            link.receive_data(data)
            for ev in link.events():
                if isinstance(ev, LinkReplyReceived):
                    assert ev.reply.error == LinkErr.OK
                    link.send_ticket(ticket, auth_selection=True)
                elif isinstance(ev, LinkResult):
                    return int(ev.error)
            writer.write(link.data_to_send())
    finally:
        writer.close()


async def test_all_zero_ticket_costs_a_bounded_number_of_decryptions_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[int] = []  # the thread of each RSA decryption
    real = LinkKey._try_decrypt

    def counted(self: LinkKey, candidate: bytes) -> bytes | None:
        attempts.append(threading.get_ident())
        return real(self, candidate)

    monkeypatch.setattr(LinkKey, "_try_decrypt", counted)
    r = await start_server(password="secret", ticket_max_failures=0)  # (no lock-out: this counts decryptions)
    try:
        for _ in range(5):
            assert await raw_link(r.server.port_of(), bytes(128)) == LinkErr.PERMISSION_DENIED
        assert len(attempts) == 5 * (MAX_TICKET_SHIFT + 1)  # was 129 per ticket
        assert threading.get_ident() not in attempts  # never on the event loop's thread
        attempts.clear()
        s = await connect(r.ep, password="secret")
        assert s.session_id and len(attempts) == 1
    finally:
        await r.server.close()


def test_spice_html5_shifted_tickets_still_accepted_within_the_bound() -> None:
    """spice-html5 drops the ciphertext's leading zero bytes and pads at the end."""
    key = LinkKey()
    public = key._key.public_key()
    found = 0
    for _ in range(5000):
        ct = public.encrypt(b"pw\0", OAEP)
        if ct[0] == 0:
            zeros = len(ct) - len(ct.lstrip(b"\0"))
            html5 = ct[zeros:] + bytes(zeros)
            assert key.decrypt(html5) == (b"pw" if zeros <= MAX_TICKET_SHIFT else None)
            found += 1
            if found == 3:
                break
    assert found, "no ciphertext with a leading zero byte in 5000 tries (expected about 1 in 150)"


async def test_metrics_with_a_blocked_worker_do_not_stop_new_links() -> None:
    """A dozen GET /metrics against a busy worker (and a saturated default pool) stalled every new link."""
    r = await start_server(metrics_path="/metrics")
    release = threading.Event()
    release_pool = threading.Event()
    loop = asyncio.get_running_loop()
    default_pool_jobs: list[Awaitable[bool]] = []
    try:
        fb = r.server.add_framebuffer_display(64, 48)
        assert (await r.server.metrics()).displays  # answered once: later reports may be stale ones
        worker = r.server._displays[0].worker
        posted: list[object] = []
        real_post = worker.post

        def post(msg: object) -> None:
            posted.append(msg)
            real_post(msg)

        worker.post = post  # type: ignore[method-assign]

        class Block:
            pass

        worker.ep.register_handler(Block, lambda _msg: release.wait(60))
        real_post(Block())
        get = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        gets = [asyncio.create_task(http_exchange(r.server.port_of(), get)) for _ in range(12)]
        s = await connect(r.ep)
        assert s.session_id and not release.is_set()  # linked while the worker is still blocked
        # asyncio's default pool fully busy too: link crypto must not depend on it
        default_pool_jobs = [loop.run_in_executor(None, release_pool.wait, 60) for _ in range(40)]
        s2 = await connect(r.ep)
        assert s2.session_id
        release_pool.set()  # (the HTTP side reads requests on that pool)
        pages = await asyncio.wait_for(asyncio.gather(*gets), 60)
        assert not release.is_set()
        assert all(p.startswith(b"HTTP/1.1 200") and b'spiceserver_display_clients{display="0"}' in p for p in pages)
        assert sum(isinstance(m, CollectMetrics) for m in posted) == 1  # one request queued, however many asked
        del fb
    finally:
        release.set()
        release_pool.set()
        await asyncio.gather(*default_pool_jobs)
        await r.server.close()


@pytest.mark.parametrize("field", ["first_bytes_timeout", "max_pending_links_per_peer", "max_pending_links"])
def test_link_phase_limits_are_validated(field: str) -> None:
    from spiceserver import ServerConfig
    from spiceserver.errors import ConfigError

    with pytest.raises(ConfigError, match=field):
        ServerConfig(port=0, **{field: 0})


async def test_failed_tls_upgrade_leaves_the_plain_writer_closable(tmp_path: pathlib.Path) -> None:
    """A peer gone mid-handshake: start_tls raises, and closing the plain writer completes (no task lingers)."""
    from spiceserver.config import ServerConfig
    from spiceserver.transport import start_tls, tls_context

    x509 = make_test_ca(tmp_path / "x509").dir
    ctx = tls_context(ServerConfig(tls_port=0, x509_dir=str(x509)))
    outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await start_tls(reader, writer, ctx)
            result: BaseException | None = None
        except OSError as exc:
            result = exc
        writer.close()
        await writer.wait_closed()  # hung forever when the plain protocol was left waiting
        outcome.set_result(result)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        _r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(PARTIAL_CLIENT_HELLO)
        await w.drain()
        w.transport.abort()
        assert isinstance(await asyncio.wait_for(outcome, 20), OSError)
    finally:
        server.close()
        await server.wait_closed()
