"""WebSocket and HTTP on the SPICE ports: the same channels through a WebSocket tunnel, files of a
web root by plain GET, origin checks, and hostile HTTP / WebSocket input."""

from __future__ import annotations

import ssl
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.config import ServerConfig
from spiceserver.errors import ConfigError
from spiceserver.proto.enums import ChannelType, LinkErr
from spiceserver.proto.messages import inputs as im
from spiceserver.web import Closed, Payload, StaticFiles, Upgraded, WebConnection, WebOptions
from tests.conftest import Running, start_server
from tests.support.certs import make_test_ca
from tests.support.client import Endpoint, LinkFailed, connect, http_exchange
from tests.support.display import link_display, pump_until


def ws_ep(r: Running, **kw: object) -> Endpoint:
    return Endpoint(port=r.server.port_of(), websocket=True, **kw)  # type: ignore[arg-type]


# -- through the server ----------------------------------------------------------------------


async def test_channels_run_over_a_websocket(running: Running) -> None:
    s = await connect(ws_ep(running))
    inp = await s.link(ChannelType.INPUTS)
    assert await inp.expect(im.InputsInit) == im.InputsInit(keyboard_modifiers=0)
    await inp.send(im.KeyDown(code=0x1E))
    await inp.send(im.KeyUp(code=0x9E))
    ev = await running.devices.wait_for(lambda e: len([x for x in e if x[0] == "key"]) >= 2)
    assert [x[1:] for x in ev if x[0] == "key"] == [(0x1E, True), (0x1E, False)]
    assert running.server.stats["websocket_links"] == 2


async def test_disconnect_clients_closes_websocket_sessions(running: Running) -> None:
    s = await connect(ws_ep(running))
    inp = await s.link(ChannelType.INPUTS)
    running.server.disconnect_clients()
    assert await s.main.closed() and await inp.closed()
    assert running.server.num_clients == 0
    assert (await connect(ws_ep(running))).session_id  # and the port still takes new ones


async def test_display_over_a_websocket_matches_the_server_canvas() -> None:
    r = await start_server()
    try:
        fb = r.server.add_framebuffer_display(96, 64)
        frame = np.random.default_rng(3).integers(0, 1 << 24, (64, 96), dtype=np.uint32)
        fb.update(frame)
        s = await connect(ws_ep(r))
        ch, state = await link_display(s)
        await pump_until(ch, state, lambda st: st.marks > 0 and 0 in st.surfaces)
        r.server.wait_idle()
        await pump_until(ch, state, lambda st: np.array_equal(st.surfaces[0].pixels & 0xFFFFFF, frame), 20)
    finally:
        await r.server.close()


async def test_password_over_a_websocket() -> None:
    r = await start_server(password="pw")
    try:
        assert (await connect(ws_ep(r), password="pw")).session_id
        with pytest.raises(LinkFailed) as e:
            await connect(ws_ep(r), password="nope")
        assert e.value.code == LinkErr.PERMISSION_DENIED
    finally:
        await r.server.close()


async def test_wss_on_the_tls_port(tmp_path: Path) -> None:
    ca = make_test_ca(tmp_path)
    r = await start_server(tls_port=0, x509_dir=str(tmp_path))
    try:
        ep = Endpoint(port=r.server.port_of(secure=True), ssl=ssl.create_default_context(cafile=str(ca.ca_cert)), websocket=True)
        assert (await connect(ep)).session_id
    finally:
        await r.server.close()


async def test_foreign_origin_is_refused_unless_allowed() -> None:
    r = await start_server(websocket_origins=("https://portal.example",))
    try:
        port = r.server.port_of()
        with pytest.raises(LinkFailed, match="403"):
            await connect(ws_ep(r, origin="http://evil.example"))
        await connect(ws_ep(r, origin=f"http://127.0.0.1:{port}"))  # a page we served
        await connect(ws_ep(r, origin="https://portal.example"))
        await connect(ws_ep(r))  # no Origin: not a browser
    finally:
        await r.server.close()


async def test_websocket_off_keeps_libspice_behaviour() -> None:
    r = await start_server(websocket=False)
    try:
        with pytest.raises(LinkFailed):
            await connect(ws_ep(r))
        data = await http_exchange(r.server.port_of(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert data[:4] == b"REDQ"  # a SPICE link reply: INVALID_MAGIC
        assert (await connect(Endpoint(port=r.server.port_of()))).session_id
    finally:
        await r.server.close()


async def test_web_root_files_and_404(tmp_path: Path) -> None:
    (tmp_path / "spice_auto.html").write_text("<html>auto</html>")
    (tmp_path / "main.js").write_text("export {};")
    (tmp_path.parent / "secret.txt").write_text("no")
    r = await start_server(web_root=str(tmp_path))
    try:
        port = r.server.port_of()
        page = await http_exchange(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert page.startswith(b"HTTP/1.1 200 OK") and page.endswith(b"<html>auto</html>")
        js = await http_exchange(port, b"GET /main.js?v=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert b"Content-Type: text/javascript" in js
        for path in (b"/../secret.txt", b"/%2e%2e/secret.txt", b"/nothere", b"/..%2fsecret.txt"):
            assert (await http_exchange(port, b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")).startswith(b"HTTP/1.1 404"), path
        assert (await connect(Endpoint(port=port))).session_id  # plain SPICE still on the same port
        assert r.server.stats["http_requests"] == 6
    finally:
        await r.server.close()


async def test_garbage_http_closes_only_that_connection(running: Running) -> None:
    port = running.server.port_of()
    for junk in (b"GET \x00\x01\x02\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 20000 + b"\r\n\r\n", b"GET "):
        await http_exchange(port, junk)
    assert (await connect(ws_ep(running))).session_id
    assert (await connect(running.ep)).session_id


def test_config_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        ServerConfig(port=0, web_root=str(tmp_path / "missing"))
    with pytest.raises(ConfigError):
        ServerConfig(port=0, web_root=str(tmp_path), websocket=False)
    with pytest.raises(ConfigError):
        ServerConfig(port=0, websocket_origins=("portal.example",))


# -- the sans-IO side ------------------------------------------------------------------------

UPGRADE = (
    b"GET /x HTTP/1.1\r\nHost: localhost:1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\r\n"
)


def masked(payload: bytes, opcode: int = 2) -> bytes:
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    key = b"\x01\x02\x03\x04"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_upgrade_then_binary_both_ways_and_fragments() -> None:
    w = WebConnection(WebOptions())
    assert w.receive_data(UPGRADE) == [Upgraded("/x", None)]
    assert w.data_to_send().startswith(b"HTTP/1.1 101 Switching Protocols")
    assert w.receive_data(masked(b"REDQ") + masked(b"more")) == [Payload(b"REDQ"), Payload(b"more")]
    # a fragmented message: each fragment's bytes go on as they come (SPICE is a byte stream)
    first = masked(b"ab", 2)
    first = bytes([first[0] & 0x7F]) + first[1:]  # FIN off
    assert w.receive_data(first) == [Payload(b"ab")]
    assert w.receive_data(masked(b"cd", 0)) == [Payload(b"cd")]
    w.send(b"\x01\x02")
    assert w.data_to_send() == b"\x82\x02\x01\x02"  # server frames are not masked
    assert w.receive_data(masked(b"", 9)) == []  # ping: answered with a pong
    assert w.data_to_send() == b"\x8a\x00"
    assert w.receive_data(masked(b"\x03\xe8", 8)) == [Closed("WebSocket closed by the peer")]
    w.data_to_send()
    assert w.close_transport


def test_unmasked_client_frame_is_a_protocol_error() -> None:
    w = WebConnection(WebOptions())
    w.receive_data(UPGRADE)
    w.data_to_send()
    events = w.receive_data(b"\x82\x02ab")
    assert len(events) == 1 and isinstance(events[0], Closed)
    assert w.data_to_send().startswith(b"\x88")  # close frame 1002
    assert w.close_transport or w.receive_eof()


def test_oversized_message_is_refused() -> None:
    w = WebConnection(WebOptions(max_message_size=10))
    w.receive_data(UPGRADE)
    w.data_to_send()
    events = w.receive_data(masked(b"x" * 5000))
    assert len(events) == 1 and isinstance(events[0], Closed)


def test_static_files_stay_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "a.css").write_text("x")
    (tmp_path / "outside").write_text("secret")
    (root / "link").symlink_to(tmp_path / "outside")
    files = StaticFiles(root)
    assert files.get("/a.css") == (b"x", "text/css; charset=utf-8")
    for p in ("/../outside", "/link", "/%00", "/", "//etc/passwd", "/a.css/../../outside"):
        assert files.get(p) is None, p


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_random_bytes_never_raise(data: bytes, after_upgrade: bool) -> None:
    """Whatever arrives, the web side answers with events and bytes, never an exception."""
    w = WebConnection(WebOptions(max_message_size=64))
    if after_upgrade:
        w.receive_data(UPGRADE)
        w.data_to_send()
    else:
        data = b"GET " + data
    events = w.receive_data(data)
    assert all(isinstance(e, Upgraded | Payload | Closed) for e in events)
    w.data_to_send()
    w.receive_eof()
    w.data_to_send()
    assert w.close_transport


HEADER_NAMES = ["Host", "Connection", "Upgrade", "Origin", "Sec-WebSocket-Key", "Sec-WebSocket-Version",
                "Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions", "Content-Length", "X"]  # fmt: skip
HEADER_VALUES = ["websocket", "Upgrade", "upgrade, keep-alive", "13", "8", "dGhlIHNhbXBsZSBub25jZQ==", "binary",
                 "base64, binary", "http://h:1", "https://h", "null", "h:1", "", "permessage-deflate", "-1", "\x7f"]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(HEADER_NAMES), st.sampled_from(HEADER_VALUES)), max_size=12),
    st.sampled_from(["/", "/x?y", "http://h/", "/%00", "/../..", "*"]),
    st.binary(max_size=40),
)
def test_http_requests_with_odd_headers_get_an_answer(headers: list[tuple[str, str]], path: str, tail: bytes) -> None:
    """Well-formed HTTP with any mix of repeated, missing or contradictory headers: an event and
    a response, never an exception (repeated Host / Origin / Connection once raised)."""
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    w = WebConnection(WebOptions(origins=("https://h",)))
    events = w.receive_data(request.encode() + tail)
    assert events and all(isinstance(e, Upgraded | Payload | Closed) for e in events)
    out = w.data_to_send()
    assert out.startswith(b"HTTP/1.1 ") or out == b""
    if not isinstance(events[0], Upgraded):
        assert w.close_transport
