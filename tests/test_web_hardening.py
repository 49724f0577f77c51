"""A web page cannot drive the VM, and the HTTP side bounds what it holds (issue 9, points 2 and 6).

DNS rebinding: a page at ``http://attacker.example:PORT`` whose name then resolves to 127.0.0.1 is
same-origin with the server for the browser; its requests still carry ``Host: attacker.example``, so
every request (WebSocket upgrade, web-root file, metrics page) is refused unless ``Host`` names the
server. Bounds are measured as counts and bytes held: static-file cache entries and bytes, bytes a
WebSocket connection buffers before its link.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from spiceserver.config import ServerConfig
from spiceserver.errors import ConfigError
from spiceserver.events import ConnLog
from spiceserver.proto.enums import ChannelType
from spiceserver.proto.messages import inputs as im
from spiceserver.transport import LINK_CHUNK, READ_CHUNK, WebSocketStream
from spiceserver.web import (
    MAX_HTTP_HEAD,
    PRE_LINK_MESSAGE,
    Closed,
    Event,
    Payload,
    StaticFiles,
    Upgraded,
    WebConnection,
    WebOptions,
)
from tests.conftest import start_server
from tests.support.client import Endpoint, connect, http_exchange

KEY_HEADERS = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n"


def upgrade(host: str, origin: str | None = None, path: str = "/") -> bytes:
    o = f"Origin: {origin}\r\n" if origin else ""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{o}Upgrade: websocket\r\nConnection: Upgrade\r\n{KEY_HEADERS}\r\n".encode()


def get(host: str, path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def frame(payload: bytes, opcode: int = 2, length: int | None = None) -> bytes:
    """A masked client frame; ``length`` may claim more than ``payload`` holds."""
    n = len(payload) if length is None else length
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    key = b"\x01\x02\x03\x04"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


# -- DNS rebinding: Host must name the server -------------------------------------------------


async def test_dns_rebinding_page_is_refused_for_upgrade_files_and_metrics(tmp_path: Path) -> None:
    (tmp_path / "spice_auto.html").write_text("<html>auto</html>")
    r = await start_server(web_root=str(tmp_path), metrics_path="/metrics")
    try:
        port = r.server.port_of()
        evil = f"attacker.example:{port}"
        for request in (upgrade(evil, f"http://{evil}"), upgrade(evil), get(evil), get(evil, "/metrics"), get(evil, "/x?y")):
            answer = await http_exchange(port, request)
            assert status(answer) == 421, answer[:80]
        assert r.server.stats["websocket_links"] == 0
        # the server's own names still work: files, metrics, and a WebSocket from our own page
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "127.0.0.1", "LocalHost"):
            assert status(await http_exchange(port, get(host))) == 200, host
            assert status(await http_exchange(port, get(host, "/metrics"))) == 200, host
            assert status(await http_exchange(port, upgrade(host, f"http://{host}"))) == 101, host
        # and through the test client (Host 127.0.0.1:PORT), a whole session
        s = await connect(Endpoint(port=port, websocket=True, origin=f"http://127.0.0.1:{port}"))
        await s.link(ChannelType.INPUTS)
    finally:
        await r.server.close()


async def test_server_names_admit_configured_names_or_any(tmp_path: Path) -> None:
    r = await start_server(web_root=str(tmp_path), server_names=("VM.example",))
    try:
        port = r.server.port_of()
        assert status(await http_exchange(port, get(f"vm.example:{port}", "/nothere"))) == 404  # past the Host check
        assert status(await http_exchange(port, get(f"attacker.example:{port}"))) == 421
    finally:
        await r.server.close()
    r = await start_server(server_names=("*",))  # behind a proxy that rewrites Host
    try:
        port = r.server.port_of()
        assert status(await http_exchange(port, upgrade(f"attacker.example:{port}"))) == 101
    finally:
        await r.server.close()


@pytest.mark.parametrize(
    ("host", "local", "names", "ok"),
    [
        ("localhost:5900", "127.0.0.1", (), True),
        ("attacker.example:5900", "127.0.0.1", (), False),
        ("attacker.example", None, (), False),  # a Unix socket behind a local proxy: names still checked
        ("127.0.0.1:5900", None, (), True),
        ("[::1]:5900", "127.0.0.1", (), True),  # loopback reaches loopback
        ("127.0.0.2", "::ffff:127.0.0.1", (), True),  # dual-stack socket, IPv4-mapped local address
        ("192.0.2.7:5900", "192.0.2.7", (), True),  # the address the connection arrived at
        ("192.0.2.8:5900", "192.0.2.7", (), False),
        ("127.0.0.2:5900", "192.0.2.7", (), False),  # loopback addresses only for loopback connections
        ("127.0.0.1:5900", "192.0.2.7", (), True),  # ... but addr (127.0.0.1 here) is always a name
        ("[2001:db8::1]:5900", "2001:db8:0::1", (), True),
        ("2001:db8::1", "2001:db8::1", (), False),  # an IPv6 Host needs brackets
        ("vm.example", "192.0.2.7", ("vm.example",), True),
        ("192.0.2.9", "10.0.0.2", ("192.0.2.9",), True),  # a NAT's public address, configured
        ("anything.example:1", "192.0.2.7", ("*",), True),
        ("localhost:x", "127.0.0.1", (), False),
        ("", "127.0.0.1", (), False),
    ],
)
def test_host_rule(host: str, local: str | None, names: tuple[str, ...], ok: bool) -> None:
    options = WebOptions.from_config(ServerConfig(port=0, server_names=names))
    w = WebConnection(options, local)
    events = w.receive_data(upgrade(host))
    assert isinstance(events[0], Upgraded) == ok, events
    if not ok:
        assert w.data_to_send().startswith(b"HTTP/1.1 421 ")


def test_missing_or_repeated_host_is_a_bad_request() -> None:
    for request in (b"GET / HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\n\r\n"):
        w = WebConnection(WebOptions())
        assert isinstance(w.receive_data(request)[0], Closed)
        assert w.data_to_send().startswith(b"HTTP/1.1 400 ")


def test_server_names_are_checked() -> None:
    for bad in (("vm.example:5900",), ("http://vm.example",), ("vm example",), ("",), ("vm.example/x",)):
        with pytest.raises(ConfigError):
            ServerConfig(port=0, server_names=bad)
    ServerConfig(port=0, server_names=("vm.example", "192.0.2.1", "[2001:db8::1]", "2001:db8::2", "*"))


# -- the static-file cache: keyed by file, bounded in bytes -----------------------------------


def test_static_cache_is_keyed_by_file_and_bounded(tmp_path: Path) -> None:
    (tmp_path / "big.js").write_bytes(b"x" * 27000)
    (tmp_path / "sub").mkdir()
    files = StaticFiles(tmp_path, cache_bytes=100_000)
    for i in range(2000):  # the finding: 2000 query variants were 2000 entries (54 MB)
        assert files.get(f"/big.js?{i}") is not None
        assert files.get(f"/sub/../big.js?v={i}") is not None
        assert files.get(f"/missing{i}.js") is None  # refusals are not remembered
    assert files.cached == (1, 27000)
    for i in range(10):
        (tmp_path / f"f{i}.css").write_bytes(bytes(30000))
        assert files.get(f"/f{i}.css") is not None
    count, held = files.cached
    assert held <= 100_000 and count == 3  # least recently used evicted
    (tmp_path / "huge.bin").write_bytes(bytes(200_000))
    assert files.get("/huge.bin") is not None  # served, not cached (larger than the whole cache)
    assert files.cached[1] <= 100_000


# -- before the link, a WebSocket connection holds what a plain one would ---------------------


def test_http_request_head_is_bounded() -> None:
    w = WebConnection(WebOptions())
    events: list[Event] = []
    fed = 0
    head = b"GET / HTTP/1.1\r\nHost: localhost\r\n"
    while not events and fed < 1 << 20:  # 128 headers of 8 KiB each once made 1 MiB of request head
        chunk = head if not fed else b"X-Pad: " + b"a" * 4000 + b"\r\n"
        events = w.receive_data(chunk)
        fed += len(chunk)
        assert w.buffered <= MAX_HTTP_HEAD + LINK_CHUNK
    assert fed <= MAX_HTTP_HEAD + LINK_CHUNK
    assert isinstance(events[-1], Closed) and "larger than" in events[-1].reason
    assert w.data_to_send().startswith(b"HTTP/1.1 431 ")
    assert w.close_transport


def test_a_big_message_before_the_link_is_refused_at_its_header() -> None:
    w = WebConnection(WebOptions())
    assert isinstance(w.receive_data(upgrade("localhost"))[0], Upgraded)
    w.data_to_send()
    # a message of exactly the pre-link size is fine (a link message and its ticket) ...
    assert w.receive_data(frame(b"R" * PRE_LINK_MESSAGE)) == [Payload(b"R" * PRE_LINK_MESSAGE)]
    # ... one claiming 1 MiB is refused as soon as its header arrives, nothing of it buffered
    events = w.receive_data(frame(b"", length=1 << 20))
    assert len(events) == 1 and isinstance(events[0], Closed)
    assert w.buffered == 0
    out = w.data_to_send()
    assert out[0] == 0x88 and out[2:4] == b"\x03\xf1"  # close 1009: message too big


def test_after_the_link_messages_up_to_max_message_size() -> None:
    w = WebConnection(WebOptions(max_message_size=1 << 20))
    w.receive_data(upgrade("localhost"))
    w.data_to_send()
    w.linked()
    big = bytes(200_000)
    assert w.receive_data(frame(big)) == [Payload(big)]


class _Sink:
    """The writer side of a stream that nobody reads (and that has nothing unsent)."""

    class transport:
        @staticmethod
        def get_write_buffer_size() -> int:
            return 0

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


async def test_websocket_stream_reads_link_sized_chunks_until_linked() -> None:
    """64 KiB of small frames arrive at once: before the link one read takes LINK_CHUNK of them."""
    w = WebConnection(WebOptions())
    w.receive_data(upgrade("localhost"))
    w.data_to_send()
    reader = asyncio.StreamReader()
    reader.feed_data(frame(b"a") * (1 << 16))
    ws = WebSocketStream(reader, _Sink(), w, ConnLog(logging.getLogger("test"), {}))  # type: ignore[arg-type]
    assert await ws.read(1) == b"a"
    assert ws.buffered <= LINK_CHUNK  # (was READ_CHUNK: 64 KiB raw per read)
    assert ws.linked(None) is None  # a refused link changes nothing
    assert len(await ws.read(1 << 20)) <= LINK_CHUNK
    marker = (object(), b"")
    assert ws.linked(marker) is marker
    total = len(await ws.read(1 << 20))
    assert LINK_CHUNK < total <= READ_CHUNK


async def test_server_closes_a_websocket_sending_a_big_message_before_the_link() -> None:
    r = await start_server()
    try:
        port = r.server.port_of()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(upgrade(f"127.0.0.1:{port}"))
        assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
        writer.write(frame(b"REDQ" + bytes(60000)))  # a 60 KB first message (the limit was 1 MiB)
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer[0] == 0x88 and answer[2:4] == b"\x03\xf1", answer[:16]  # close 1009, then EOF
        writer.close()
        assert r.server.stats["links_failed"] == 1
        assert (await connect(Endpoint(port=port, websocket=True))).session_id  # others link as before
    finally:
        await r.server.close()


async def test_after_a_websocket_link_a_big_message_is_taken() -> None:
    """The link lifts the pre-link limit: 12 KB of key events in one WebSocket message all arrive."""
    r = await start_server()
    try:
        s = await connect(Endpoint(port=r.server.port_of(), websocket=True))
        inp = await s.link(ChannelType.INPUTS)
        await inp.expect(im.InputsInit)
        for _ in range(600):
            inp.conn.send(im.KeyDown(code=0x1E))
            inp.conn.send(im.KeyUp(code=0x9E))
        data = inp.conn.data_to_send()
        assert len(data) > 2 * PRE_LINK_MESSAGE
        inp.writer.write(data)  # one binary message
        await r.devices.wait_for(lambda e: len([x for x in e if x[0] == "key"]) >= 1200)
    finally:
        await r.server.close()
