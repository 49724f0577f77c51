"""The WebDAV mux (spice-webdavd's framing) and its minimal HTTP/1.1 client.

Framing both ways (i64 client id LE, u16 size LE, data; size 0 closes), a fuzz of the frame parser
(any bytes, any chopping), the HTTP response parser against real phodav responses captured through
our WebDAV channel (``tests/fixtures/phodav``), against responses of the same shape written here
(chunked, interim 100, read to the end) and against hostile ones, then WebDavMux end to end through
a server's WebDAV channel on the real ``char_device_pair`` with the test playing spice-gtk.
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spiceserver.channels.chardev import char_device_pair
from spiceserver.channels.port import WebDavChannel
from spiceserver.channels.webdav_mux import (
    MAX_MUX_SIZE,
    HttpError,
    HttpResponseParser,
    MuxClosed,
    MuxConnection,
    MuxData,
    MuxFrame,
    MuxParser,
    WebDavMux,
    build_request,
    encode_close,
    encode_frames,
)
from spiceserver.proto.enums import ChannelType
from spiceserver.proto.messages import port as pm
from spiceserver.proto.messages import spicevmc as vm
from tests.conftest import Running
from tests.support.client import ClientChannel, connect
from tests.test_port_channel import wait_until

FAST = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- framing ------------------------------------------------------------------------------------------


def test_frame_layout() -> None:
    assert encode_frames(1, b"hi") == struct.pack("<qH", 1, 2) + b"hi"
    assert encode_close(-5) == struct.pack("<qH", -5, 0)
    assert encode_frames(3, b"") == b""
    big = bytes(range(256)) * 600  # 153600 bytes: 3 frames
    data = encode_frames(7, big)
    frames = MuxParser().feed(data)
    assert [len(f.data) for f in frames] == [MAX_MUX_SIZE, MAX_MUX_SIZE, len(big) - 2 * MAX_MUX_SIZE]
    assert b"".join(f.data for f in frames) == big and {f.client for f in frames} == {7}
    with pytest.raises(ValueError):
        encode_frames(1 << 63, b"x")


frames_st = st.lists(
    st.tuples(st.integers(-(1 << 63), (1 << 63) - 1) | st.integers(0, 5), st.binary(max_size=300)), max_size=10
)


@FAST
@given(frames=frames_st, cuts=st.lists(st.integers(0, 4000), max_size=8))
def test_parser_is_chop_invariant(frames: list[tuple[int, bytes]], cuts: list[int]) -> None:
    wire = b"".join(encode_frames(c, d) if d else encode_close(c) for c, d in frames)
    parser = MuxParser()
    got: list[MuxFrame] = []
    pos = 0
    for cut in sorted(cuts):
        got += parser.feed(wire[pos:cut] if cut > pos else b"")
        pos = max(pos, cut)
    got += parser.feed(wire[pos:])
    assert [(f.client, f.data) for f in got] == frames
    assert parser.buffered == 0


@FAST
@given(blob=st.binary(max_size=2000), chop=st.integers(1, 64))
def test_parser_takes_any_bytes(blob: bytes, chop: int) -> None:
    parser = MuxParser()
    total = 0
    for i in range(0, len(blob), chop):
        for fr in parser.feed(blob[i : i + chop]):
            assert len(fr.data) <= MAX_MUX_SIZE
            total += 10 + len(fr.data)
        assert parser.buffered < 10 + MAX_MUX_SIZE
    assert total + parser.buffered == len(blob)


def test_connection_events_and_unknown_clients() -> None:
    mux = MuxConnection()
    a, b = mux.open_client(), mux.open_client()
    assert a != b and mux.clients == {a, b}
    mux.send(a, b"GET")
    mux.close_client(b)
    mux.close_client(b)  # once
    assert mux.data_to_send() == encode_frames(a, b"GET") + encode_close(b)
    evs = mux.receive_data(encode_frames(a, b"ok") + encode_frames(b, b"late") + encode_frames(99, b"?") + encode_close(a))
    assert evs == [MuxData(a, b"ok"), MuxClosed(a)]
    assert mux.dropped_frames == 2 and mux.clients == frozenset()
    with pytest.raises(ValueError):
        mux.send(a, b"x")


# --- HTTP ---------------------------------------------------------------------------------------------

PROPFIND_XML = (
    b'<?xml version="1.0"?>\n<D:multistatus xmlns:D="DAV:"><D:response><D:href>/</D:href><D:propstat><D:prop>'
    b"<D:resourcetype><D:collection/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>"
    b"</D:response><D:response><D:href>/hello.txt</D:href><D:propstat><D:prop><D:getcontentlength>6</D:getcontentlength>"
    b"</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>\n"
)
PHODAV_207 = (
    b"HTTP/1.1 207 Multi-Status\r\nServer: PhodavServer libsoup/3.2.3\r\nDate: Mon, 07 Dec 2026 11:00:00 GMT\r\n"
    b"Content-Type: text/xml; charset=utf-8\r\nContent-Length: " + str(len(PROPFIND_XML)).encode() + b"\r\n\r\n" + PROPFIND_XML
)
PHODAV_200 = (
    b"HTTP/1.1 200 OK\r\nServer: PhodavServer libsoup/3.2.3\r\nDate: Mon, 07 Dec 2026 11:00:00 GMT\r\n"
    b'Content-Type: text/plain\r\nETag: "5f2-6"\r\nContent-Length: 6\r\n\r\nhello\n'
)
PHODAV_CHUNKED = (
    b"HTTP/1.1 200 OK\r\nServer: PhodavServer libsoup/3.2.3\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"6;ext=1\r\nhello \r\n5\r\nworld\r\n0\r\nX-Trailer: yes\r\n\r\n"
)
PHODAV_404 = b"HTTP/1.1 404 Not Found\r\nServer: PhodavServer libsoup/3.2.3\r\nContent-Length: 0\r\n\r\n"


CAPTURED = Path(__file__).parent / "fixtures" / "phodav"
#: file -> (request method, status, body check)
CAPTURES: dict[str, tuple[str, int, Any]] = {
    "propfind_207.http": ("PROPFIND", 207, lambda b: b.startswith(b"<?xml") and b"http://localhost/hello.txt" in b and b.rstrip().endswith(b"</D:multistatus>")),
    "get_200.http": ("GET", 200, lambda b: b == b"hello from the client\n"),
    "get_404.http": ("GET", 404, lambda b: b == b""),
    "head_200.http": ("HEAD", 200, lambda b: b == b""),
    "options_200.http": ("OPTIONS", 200, lambda b: b == b""),
}


@pytest.mark.parametrize("name", sorted(CAPTURES))
@pytest.mark.parametrize("chop", [1, 2, 7, 100, 1 << 20])
def test_captured_phodav_responses(name: str, chop: int) -> None:
    """Real phodav responses (spice-gtk 0.42 --shared-dir through our WebDAV channel; see the
    fixture README), parsed whole and in pieces; the response ends exactly at the capture's end."""
    method, status, body_ok = CAPTURES[name]
    data = (CAPTURED / name).read_bytes()
    p = HttpResponseParser(method)
    for i in range(0, len(data), chop):
        assert not p.done
        p.feed(data[i : i + chop])
    assert p.done and p.trailing == b"" and p.response is not None
    assert p.response.status == status and body_ok(p.response.body)
    assert p.response.headers["server"] == "PhodavServer libsoup/3.2.3"
    if name == "options_200.http":
        assert p.response.headers["dav"] == "1,2"


def parse(data: bytes, method: str = "GET", chop: int = 1 << 20, eof: bool = False, **kw: Any) -> Any:
    p = HttpResponseParser(method, **kw)
    for i in range(0, len(data), chop):
        p.feed(data[i : i + chop])
    if eof:
        p.feed_eof()
    assert p.done
    return p.response


@pytest.mark.parametrize("chop", [1, 3, 17, 1 << 20])
def test_phodav_responses(chop: int) -> None:
    status, headers, body = parse(PHODAV_207, "PROPFIND", chop)
    assert status == 207 and headers["server"].startswith("PhodavServer") and body == PROPFIND_XML
    r = parse(PHODAV_200, chop=chop)
    assert (r.status, r.reason, r.body) == (200, "OK", b"hello\n")
    assert parse(PHODAV_CHUNKED, chop=chop).body == b"hello world"
    assert parse(PHODAV_404, chop=chop).status == 404


def test_response_framing_cases() -> None:
    cont = b"HTTP/1.1 100 Continue\r\n\r\n" + PHODAV_200
    assert parse(cont).body == b"hello\n"
    assert parse(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n", "HEAD").body == b""
    assert parse(b"HTTP/1.1 204 No Content\r\n\r\n").status == 204
    assert parse(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", eof=True).body == b"until the end"
    assert parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc").body == b"abc"
    r = parse(b"HTTP/1.1 200 OK\r\nA: 1\r\na: 2\r\nContent-Length: 0\r\n\r\n")
    assert r.headers["a"] == "1, 2"
    p = HttpResponseParser()
    p.feed(PHODAV_404 + b"HTTP/1.1")
    assert p.done and p.trailing == b"HTTP/1.1"


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n",  # over max_body below
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n",  # 2048 > max_body
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * 1100 + b"\r\n\r\n",  # head over max_head
    ],
)
def test_bad_responses_are_http_errors(data: bytes) -> None:
    p = HttpResponseParser(max_body=1000, max_head=1024)
    with pytest.raises(HttpError):
        p.feed(data)
        p.feed_eof()


def test_early_eof_is_an_error() -> None:
    for cut in (5, len(PHODAV_200) - 2):
        p = HttpResponseParser()
        p.feed(PHODAV_200[:cut])
        with pytest.raises(HttpError):
            p.feed_eof()


def test_many_headers_and_long_lines_are_bounded() -> None:
    p = HttpResponseParser(max_headers=10)
    with pytest.raises(HttpError):
        p.feed(b"HTTP/1.1 200 OK\r\n" + b"A: b\r\n" * 11 + b"\r\n")
    p = HttpResponseParser()
    with pytest.raises(HttpError):
        p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 5000)
    p = HttpResponseParser(max_head=100)
    with pytest.raises(HttpError):
        p.feed(b"HTTP/1.1 200 OK\r\n" + b"A: b\r\n" * 30)  # no end of head yet, already too long


@FAST
@given(blob=st.binary(max_size=600), chop=st.integers(1, 50), eof=st.booleans())
def test_any_bytes_give_a_response_or_an_http_error(blob: bytes, chop: int, eof: bool) -> None:
    p = HttpResponseParser(max_body=300, max_head=300)
    try:
        for i in range(0, len(blob), chop):
            p.feed(blob[i : i + chop])
        if eof:
            p.feed_eof()
    except HttpError:
        return
    if p.done:
        assert p.response is not None and len(p.response.body) <= 300


@FAST
@given(prefix=st.sampled_from([PHODAV_207, PHODAV_200, PHODAV_CHUNKED, PHODAV_404]), cut=st.integers(0, 3000), junk=st.binary(max_size=40))
def test_damaged_phodav_responses(prefix: bytes, cut: int, junk: bytes) -> None:
    data = prefix[:cut] + junk + prefix[cut:]
    p = HttpResponseParser("PROPFIND")
    try:
        p.feed(data)
        p.feed_eof()
    except HttpError:
        pass


def test_requests() -> None:
    req = build_request("PROPFIND", "/", {"Depth": "1"})
    assert req == b"PROPFIND / HTTP/1.1\r\nHost: localhost\r\nDepth: 1\r\nContent-Length: 0\r\n\r\n"
    assert build_request("GET", "/a%20b.txt", host="h") == b"GET /a%20b.txt HTTP/1.1\r\nHost: h\r\n\r\n"
    assert build_request("PUT", "/f", body=b"xyz").endswith(b"Content-Length: 3\r\n\r\nxyz")
    for bad in [("GE T", "/", {}), ("GET", "/a b", {}), ("GET", "/\r\n", {}), ("GET", "/", {"X": "a\r\nB: c"}), ("GET", "/", {"X Y": "1"})]:
        with pytest.raises(HttpError):
            build_request(bad[0], bad[1], bad[2])


# --- WebDavMux through a WebDAV channel ------------------------------------------------------------------


FILES = {"/hello.txt": b"hello\n", "/big.bin": bytes(range(256)) * 1000}


async def play_spicegtk(ch: ClientChannel, closes: list[int]) -> None:
    """The client side of spice-gtk's WebDAV channel: demux after OPENED, answer each request as a
    phodav server would (GET a file, PROPFIND), then close that client."""
    parser = MuxParser()
    requests: dict[int, bytearray] = {}
    opened = False
    while True:
        msg = await ch.recv(timeout=10)
        if isinstance(msg, pm.PortInit):
            opened = bool(msg.opened)
            continue
        if isinstance(msg, pm.PortEvent):
            opened = msg.event == 0
            if not opened:
                return  # the guest closed the port (the mux left)
            continue
        assert isinstance(msg, vm.SpicevmcData) and opened
        for fr in parser.feed(msg.data):
            if not fr.data:
                closes.append(fr.client)
                requests.pop(fr.client, None)
                continue
            buf = requests.setdefault(fr.client, bytearray())
            buf += fr.data
            if b"\r\n\r\n" not in buf:
                continue
            line = bytes(buf).split(b"\r\n", 1)[0].split(b" ")
            method, path = line[0], line[1].decode()
            if method == b"PROPFIND":
                resp = PHODAV_207
            elif path in FILES:
                body = FILES[path]
                resp = b"HTTP/1.1 200 OK\r\nServer: PhodavServer libsoup/3.2.3\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            else:
                resp = PHODAV_404
            out = encode_frames(fr.client, resp) + encode_close(fr.client)
            for i in range(0, len(out), 30000):  # spice-gtk sends what phodav gives, in pieces
                await ch.send(vm.ClientSpicevmcData(data=out[i : i + 30000]))
            del requests[fr.client]


async def test_mux_browses_the_clients_shared_folder(running: Running) -> None:
    dev, end = char_device_pair(opened=False)
    webdav = running.server.register_channel(WebDavChannel, dev)
    s = await connect(running.ep)
    ch = await s.link(ChannelType.WEBDAV, 0)
    closes: list[int] = []
    player = asyncio.create_task(play_spicegtk(ch, closes))
    try:
        async with WebDavMux(end) as mux:
            await wait_until(lambda: webdav.opened)
            status, headers, body = await mux.request("PROPFIND", "/", headers={"Depth": "1"})
            assert status == 207 and b"/hello.txt" in body and headers["content-type"].startswith("text/xml")
            r = await mux.get("/hello.txt")
            assert (r.status, r.body) == (200, b"hello\n")
            results = await asyncio.gather(*(mux.get("/big.bin") for _ in range(3)), mux.get("/nope"))
            assert [x.status for x in results] == [200, 200, 200, 404]
            assert all(x.body == FILES["/big.bin"] for x in results[:3])
            assert (await mux.propfind("/")).status == 207
            assert mux.clients == frozenset()  # every client closed (by spice-gtk's 0-size frames here)
            one = mux.open()
            one.write(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await one.read()).startswith(b"HTTP/1.1 200 OK")
            one.close()
        await wait_until(lambda: not webdav.opened)
        await asyncio.wait_for(player, 5)  # it saw PORT_EVENT CLOSED
        await dev.close()
    finally:
        player.cancel()
        await asyncio.gather(player, return_exceptions=True)


async def test_mux_over_a_stream_and_a_closing_client() -> None:
    """``WebDavMux.over_stream``: the peer closes a client mid-response: an HttpError, the mux goes on."""
    server_side: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server_side.put((r, w))

    srv = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    peer_r, peer_w = await server_side.get()

    async def peer() -> None:
        parser = MuxParser()
        while data := await peer_r.read(65536):
            for fr in parser.feed(data):
                if fr.data.startswith(b"GET /cut"):
                    peer_w.write(encode_frames(fr.client, PHODAV_200[:40]) + encode_close(fr.client))
                elif fr.data.startswith(b"GET"):
                    peer_w.write(encode_frames(fr.client, PHODAV_200) + encode_frames(12345, b"stray"))

    task = asyncio.create_task(peer())
    try:
        async with WebDavMux.over_stream(reader, writer) as mux:
            with pytest.raises(HttpError):
                await mux.get("/cut")
            assert (await mux.get("/hello.txt")).body == b"hello\n"
            with pytest.raises(TimeoutError):
                await mux.request("PUT", "/x", body=b"data", timeout=0.2)  # the peer never answers
            assert mux.dropped_frames >= 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        peer_w.close()
        srv.close()
        await srv.wait_closed()
