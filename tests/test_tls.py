"""TLS listener and the per-channel security policy (NEED_SECURED / NEED_UNSECURED)."""

from __future__ import annotations

import asyncio
import itertools
import pathlib
import socket
import ssl
import struct
from typing import Any

import numpy as np
import pytest

from spiceserver.proto.channel import ChannelConnection
from spiceserver.proto.enums import ChannelType, LinkErr
from spiceserver.proto.link import ClientLink, LinkMess, LinkReplyReceived, LinkResult, caps_to_words
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages import inputs as im
from spiceserver.proto.messages.base import CLIENT, Message
from spiceserver.ticket import encrypt_ticket
from spiceserver.transport import LoopGate, MessageCuts, Transport
from tests.conftest import start_server
from tests.support.certs import make_test_ca
from tests.support.client import DEFAULT_COMMON_CAPS, Endpoint, LinkFailed, connect, link_channel
from tests.support.display import DEFAULT_DISPLAY_CAPS


def client_ctx(x509: pathlib.Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(x509 / "ca-cert.pem"))
    return ctx


async def test_tls_link_with_password(tmp_path: pathlib.Path) -> None:
    x509 = make_test_ca(tmp_path / "x509").dir
    r = await start_server(port=None, tls_port=0, x509_dir=str(x509), password="pw")
    try:
        ep = Endpoint(port=r.server.port_of(secure=True), ssl=client_ctx(x509))
        s = await connect(ep, password="pw")
        inp = await s.link(ChannelType.INPUTS)
        await inp.expect(im.InputsInit)
        await inp.send(im.KeyDown(code=0x1C))
        await r.devices.wait_for(lambda e: ("key", 0x1C, True) in e)
        with pytest.raises(LinkFailed) as e:
            await connect(ep, password="nope")
        assert e.value.code == LinkErr.PERMISSION_DENIED
    finally:
        await r.server.close()


async def test_secure_channel_policy(tmp_path: pathlib.Path) -> None:
    x509 = make_test_ca(tmp_path / "x509").dir
    r = await start_server(port=0, tls_port=0, x509_dir=str(x509), tls_channels=("inputs",), plaintext_channels=("main",))
    try:
        plain = Endpoint(port=r.server.port_of())
        tls = Endpoint(port=r.server.port_of(secure=True), ssl=client_ctx(x509))
        s = await connect(plain)
        with pytest.raises(LinkFailed) as e:
            await link_channel(plain, ChannelType.INPUTS, connection_id=s.session_id)
        assert e.value.code == LinkErr.NEED_SECURED and e.value.stage == "reply"
        inp = await link_channel(tls, ChannelType.INPUTS, connection_id=s.session_id)
        await inp.expect(im.InputsInit)
        with pytest.raises(LinkFailed) as e:
            await connect(tls)
        assert e.value.code == LinkErr.NEED_UNSECURED
    finally:
        await r.server.close()


async def test_all_channels_secure_by_default_option(tmp_path: pathlib.Path) -> None:
    x509 = make_test_ca(tmp_path / "x509").dir
    r = await start_server(port=0, tls_port=0, x509_dir=str(x509), tls_channels=("default",))
    try:
        with pytest.raises(LinkFailed) as e:
            await connect(Endpoint(port=r.server.port_of()))
        assert e.value.code == LinkErr.NEED_SECURED
    finally:
        await r.server.close()


# --- TLS records end at message ends (spice-gtk reads on only while the socket is readable) ---------


def _mini(kind: int, body: bytes) -> bytes:
    return struct.pack("<HI", kind, len(body)) + body


def _full(serial: int, kind: int, body: bytes) -> bytes:
    return struct.pack("<QHII", serial, kind, len(body), 0) + body


@pytest.mark.parametrize("mini", [True, False], ids=["mini-header", "full-header"])
def test_message_cuts_end_every_piece_at_a_message_end(mini: bool) -> None:
    msgs = [
        _mini(1, b"a" * 5) if mini else _full(1, 1, b"a" * 5),
        _mini(2, b"") if mini else _full(2, 2, b""),
        _mini(3, b"b" * 70000) if mini else _full(3, 3, b"b" * 70000),
        _mini(4, b"c") if mini else _full(4, 4, b"c"),
    ]
    stream = b"".join(msgs)
    ends = set(itertools.accumulate(len(m) for m in msgs))
    for chunk in (len(stream), 1, 3, 7, 4096, 65536):  # the output as writes of this size
        cuts = MessageCuts(mini)
        pieces: list[bytes] = []
        for at in range(0, len(stream), chunk):
            pieces += [bytes(p) for p in cuts.pieces(stream[at : at + chunk])]
        assert b"".join(pieces) == stream
        offsets = list(itertools.accumulate(len(p) for p in pieces))
        # a piece ends at a message end, or where a write ended (inside a message)
        writes = set(range(chunk, len(stream) + 1, chunk)) | {len(stream)}
        assert all(o in ends or o in writes for o in offsets), (chunk, offsets)
        # and no piece runs past a message end
        for start, end in zip([0, *offsets], offsets, strict=False):
            assert not any(start < e < end for e in ends), (chunk, start, end)


class _RecordingWriter:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    @property
    def transport(self) -> Any:
        class _T:
            def get_write_buffer_size(self) -> int:
                return 0

        return _T()


def test_tls_transport_writes_each_message_on_its_own() -> None:
    msgs = [_mini(1, b"x" * 10), _mini(2, b"y" * 3), _mini(3, b"z" * 20)]
    for cuts, want in ((MessageCuts(True), msgs), (None, [b"".join(msgs)])):
        w = _RecordingWriter()
        t = Transport(w, LoopGate(), cuts=cuts)  # type: ignore[arg-type]
        t.write(b"".join(msgs))
        assert w.writes == want


def _link_display_and_read_like_spice_gtk(port: int, x509: pathlib.Path, session_id: int) -> list[str]:
    """Link display 0 over TLS on a blocking socket and read as spice-gtk does: a header, then its
    body, one message at a time. After each message no decrypted byte may be left in the TLS
    buffer (``pending()``): spice-gtk would not read it until more bytes reach the socket."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = client_ctx(x509).wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        link = ClientLink(LinkMess(session_id, ChannelType.DISPLAY, 0, caps_to_words(set(DEFAULT_COMMON_CAPS)), caps_to_words(set(DEFAULT_DISPLAY_CAPS))))
        tls.sendall(link.data_to_send())
        done = False
        while not done:
            data = tls.recv(4096)
            assert data, "closed during the link"
            link.receive_data(data)
            for ev in link.events():
                if isinstance(ev, LinkReplyReceived):
                    link.send_ticket(encrypt_ticket(ev.reply.pub_key, ""), auth_selection=True)
                elif isinstance(ev, LinkResult):
                    assert ev.error == LinkErr.OK
                    assert not link.leftover()
                    done = True
            tls.sendall(link.data_to_send())
        conn = ChannelConnection(ChannelType.DISPLAY, CLIENT, mini_header=True, max_message_size=1 << 24)
        conn.send(d.DisplayInit(pixmap_cache_id=1, pixmap_cache_size=1 << 20, glz_dictionary_id=1, glz_dictionary_window_size=1 << 20))
        tls.sendall(conn.data_to_send())

        def exact(n: int) -> bytes:
            out = b""
            while len(out) < n:
                chunk = tls.recv(n - len(out))
                assert chunk, "closed"
                out += chunk
            return out

        names: list[str] = []
        while "DisplayMark" not in names:
            header = exact(6)
            body = exact(struct.unpack_from("<I", header, 2)[0])
            names += [type(m).__name__ for m in conn.receive_data(header + body) if isinstance(m, Message)]
            assert tls.pending() == 0, f"a TLS record runs past {names[-1]}: {tls.pending()} bytes wait in the TLS buffer"
            tls.sendall(conn.data_to_send())  # ACK_SYNC, ACKs
        return names
    finally:
        tls.close()


async def test_tls_records_end_at_message_ends(tmp_path: pathlib.Path) -> None:
    """The display worker writes its first messages (SET_ACK aside) in one piece; over TLS each goes
    in its own record(s), so spice-gtk's reading gets them all (it showed no picture over TLS)."""
    x509 = make_test_ca(tmp_path / "x509").dir
    r = await start_server(port=None, tls_port=0, x509_dir=str(x509))
    fb = r.server.add_framebuffer_display(64, 48)
    fb.update(np.full((48, 64), 0x102030, np.uint32))
    try:
        s = await connect(Endpoint(port=r.server.port_of(secure=True), ssl=client_ctx(x509)))
        names = await asyncio.to_thread(_link_display_and_read_like_spice_gtk, r.server.port_of(secure=True), x509, s.session_id)
        assert names[0] == "SetAck" and "SurfaceCreate" in names and "DrawCopy" in names, names
    finally:
        await r.server.close()
