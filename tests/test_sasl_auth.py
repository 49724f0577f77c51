"""SASL mechanisms (RFC 5802 / 7677 SCRAM, RFC 4616 PLAIN), the verifier store, and SASL links
on our server over TLS (the wire part of spice ``server/red-stream.cpp`` + ``reds.cpp``)."""

from __future__ import annotations

import base64
import pathlib
import ssl
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver import ServerConfig
from spiceserver.auth import SaslAuthenticator, SaslCredentials, SaslVerifiers
from spiceserver.auth.plain import PlainServer
from spiceserver.auth.scram import ScramServer, decode_saslname
from spiceserver.auth.verifiers import ScramVerifier, scram_keys
from spiceserver.errors import ConfigError, ProtocolError
from spiceserver.proto.channel import ChannelConnection
from spiceserver.proto.enums import ChannelType, CommonCap, LinkErr
from spiceserver.proto.link import LinkReply, caps_to_words, has_cap
from spiceserver.proto.messages import main as mm
from spiceserver.proto.messages.base import CLIENT, Message
from tests.conftest import Running, start_server
from tests.support.certs import make_test_ca
from tests.support.client import Endpoint, LinkFailed, connect
from tests.support.sasl_client import ScramClient, sasl_link

# --- SCRAM with the RFC vectors ------------------------------------------------------------------

RFC5802 = dict(
    mech="SCRAM-SHA-1", salt="QSXCR+Q6sek8bf92", cnonce="fyko+d2lbbFgONRv9qkxdawL", snonce="3rfcNHYJY1ZVvWVs7j",
    proof="v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", v="rmF9pqV8S7suAoZWja4dJRkFsKQ=",
)
RFC7677 = dict(
    mech="SCRAM-SHA-256", salt="W22ZaJ0SNY7soEsUEjb6gQ==", cnonce="rOprNGfwEbeRWgbNEkqO", snonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    proof="dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", v="6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
)
HASH = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}


def rfc_store(vec: dict[str, str]) -> SaslVerifiers:
    store = SaslVerifiers()
    h = HASH[vec["mech"]]
    salt = base64.b64decode(vec["salt"])
    store.add_verifier("user", ScramVerifier(h, salt, 4096, *scram_keys(h, b"pencil", salt, 4096)))
    return store


@pytest.mark.parametrize("vec", [RFC5802, RFC7677], ids=["rfc5802", "rfc7677"])
def test_rfc_vectors(vec: dict[str, str]) -> None:
    srv = ScramServer(vec["mech"], rfc_store(vec), server_nonce=vec["snonce"])
    first = srv.step(f"n,,n=user,r={vec['cnonce']}".encode())
    nonce = vec["cnonce"] + vec["snonce"]
    assert first.out == f"r={nonce},s={vec['salt']},i=4096".encode() and not first.complete
    final = srv.step(f"c=biws,r={nonce},p={vec['proof']}".encode())
    assert final.complete and final.ok and final.user == "user"
    assert final.out == f"v={vec['v']}".encode()
    with pytest.raises(RuntimeError):
        srv.step(b"c=biws")


def exchange(mech: str, store: SaslVerifiers, client: ScramClient, **final_kw: str) -> tuple[bool, bytes | None, ScramServer]:
    srv = ScramServer(mech, store)
    first = srv.step(client.first())
    if first.complete:
        return first.ok, first.out, srv
    assert first.out is not None
    res = srv.step(client.final(first.out, **final_kw))
    assert res.complete
    return res.ok, res.out, srv


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_cyrus_authzid_equal_to_the_user_is_accepted(mech: str) -> None:
    store = SaslVerifiers()
    store.add("alice", "secret")
    client = ScramClient(HASH[mech], "alice", "secret", authzid="alice")
    ok, out, _ = exchange(mech, store, client)
    assert ok and out == client.server_signature()
    ok, _, _ = exchange(mech, store, ScramClient(HASH[mech], "alice", "secret"))  # no authzid
    assert ok


def test_refusals() -> None:
    store = SaslVerifiers()
    store.add("alice", "secret")
    store.add("bob", "other")
    mech = "SCRAM-SHA-256"
    ok, out, _ = exchange(mech, store, ScramClient("sha256", "alice", "wrong"))
    assert not ok and out == b"e=invalid-proof"
    ok, out, _ = exchange(mech, store, ScramClient("sha256", "alice", "secret", authzid="bob"))
    assert not ok and out is not None and out.startswith(b"e=")
    ok, out, _ = exchange(mech, store, ScramClient("sha256", "alice", "secret"), nonce="fyko+d2lbbFgONRv9qkxdawLforged")
    assert not ok and out == b"e=other-error"
    ok, out, _ = exchange(mech, store, ScramClient("sha256", "alice", "secret"), cbind="eSws")  # y,, in c= after n,,
    assert not ok and out == b"e=channel-bindings-dont-match"
    ok, out, _ = exchange(mech, store, ScramClient("sha256", "nobody", "secret"))
    assert not ok and out == b"e=invalid-proof"
    srv = ScramServer(mech, store)
    res = srv.step(b"p=tls-unique,,n=alice,r=abc")
    assert res.complete and not res.ok and res.out == b"e=channel-binding-not-supported"
    res = ScramServer(mech, store).step(b"n,,m=ext,n=alice,r=abc")
    assert res.complete and not res.ok
    assert ScramServer(mech, None).step(b"n,,n=alice,r=abc").out is not None  # no store: nobody logs in


def test_wrong_password_counts_as_a_guess_but_a_bad_nonce_does_not() -> None:
    store = SaslVerifiers()
    store.add("alice", "secret")
    srv = ScramServer("SCRAM-SHA-256", store)
    client = ScramClient("sha256", "alice", "wrong")
    first = srv.step(client.first())
    assert first.out is not None
    assert srv.step(client.final(first.out)).guess
    srv = ScramServer("SCRAM-SHA-256", store)
    first = srv.step(client.first())
    assert first.out is not None
    assert not srv.step(client.final(first.out, nonce="x")).guess


def test_replayed_client_final_fails() -> None:
    store = SaslVerifiers()
    store.add("alice", "secret")
    client = ScramClient("sha256", "alice", "secret")
    srv = ScramServer("SCRAM-SHA-256", store)
    first = srv.step(client.first())
    assert first.out is not None
    final = client.final(first.out)
    assert srv.step(final).ok
    srv2 = ScramServer("SCRAM-SHA-256", store)
    srv2.step(client.first())  # the same client-first, a new server nonce
    res = srv2.step(final)
    assert not res.ok and res.complete


def test_unknown_user_looks_like_a_known_one() -> None:
    store = SaslVerifiers()
    store.add("alice", "secret")
    a = ScramServer("SCRAM-SHA-256", store).step(b"n,,n=alice,r=abc").out
    b1 = ScramServer("SCRAM-SHA-256", store).step(b"n,,n=bob,r=abc").out
    b2 = ScramServer("SCRAM-SHA-256", store).step(b"n,,n=bob,r=abc").out
    assert a is not None and b1 is not None and b2 is not None
    salt = lambda m: m.split(b",")[1]  # noqa: E731
    assert len(salt(a)) == len(salt(b1)) and salt(b1) == salt(b2) and a.endswith(b",i=4096") and b1.endswith(b",i=4096")


@pytest.mark.parametrize(
    "msg", [b"", b"x", b"n", b"q,,n=a,r=b", b"n,b=x,n=a,r=b", b"n,,r=b,n=a", b"n,,n=,r=b", b"n,,n=a=,r=b", b"n,,n=a,r=", b"n,,n=a,r=a,b", b"\xff,,"]
)
def test_malformed_client_first(msg: bytes) -> None:
    with pytest.raises(ProtocolError):
        ScramServer("SCRAM-SHA-256", SaslVerifiers()).step(msg)


def test_saslname_escapes() -> None:
    assert decode_saslname("a=2Cb=3Dc") == "a,b=c"
    for bad in ("", "a=2", "a=41"):
        with pytest.raises(ProtocolError):
            decode_saslname(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_fuzz_scram_parses_or_raises_protocol_error(first: bytes, final: bytes) -> None:
    srv = ScramServer("SCRAM-SHA-1", SaslVerifiers())
    try:
        if not srv.step(first).complete:
            srv.step(final)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_plain(data: bytes) -> None:
    try:
        PlainServer(SaslCredentials()).step(data)
    except ProtocolError:
        pass


# --- PLAIN and the store ------------------------------------------------------------------------


def test_plain_with_store_and_callback() -> None:
    store = SaslVerifiers()
    store.add("alice", "secret")
    calls: list[tuple[str, str]] = []

    def check(user: str, password: str) -> bool:
        calls.append((user, password))
        if user == "boom":
            raise RuntimeError("host bug")
        return (user, password) == ("bob", "pw")

    creds = SaslCredentials(store, check)
    assert PlainServer(creds).step(b"\0alice\0secret").ok
    assert PlainServer(creds).step(b"alice\0alice\0secret").ok
    assert not PlainServer(creds).step(b"bob\0alice\0secret").ok  # authzid differs
    assert PlainServer(creds).step(b"\0bob\0pw").ok
    res = PlainServer(creds).step(b"\0bob\0nope")
    assert not res.ok and res.guess
    assert not PlainServer(creds).step(b"\0boom\0x").ok
    p = PlainServer(creds)
    challenge = p.step(None)  # no initial response: an empty challenge
    assert challenge.out == b"" and not challenge.complete
    assert p.step(b"\0alice\0secret").ok
    for bad in (b"", b"\0\0x", b"a\0b", b"\0" + b"u" * 256 + b"\0p", b"\0\xff\0p"):
        with pytest.raises(ProtocolError):
            PlainServer(creds).step(bad)
    assert ("alice", "secret") not in calls  # the store answered first


def test_store_keeps_no_password() -> None:
    store = SaslVerifiers()
    store.add("alice", "correct horse", iterations=5000)
    v = store.get("alice", "sha256")
    assert v is not None and v.iterations == 5000 and len(v.salt) == 16
    assert b"correct horse" not in repr(store.__dict__).encode() and b"correct horse" not in repr(v).encode()
    assert store.check_password("alice", b"correct horse") and not store.check_password("alice", b"x")
    assert not store.check_password("bob", b"x")
    assert "alice" in store and len(store) == 1
    store.remove("alice")
    assert "alice" not in store
    with pytest.raises(ValueError):
        store.add("x", "y", iterations=100)
    with pytest.raises(ValueError):
        store.add("", "y")


def test_authenticator_mechanisms() -> None:
    with pytest.raises(ValueError):
        SaslAuthenticator(("DIGEST-MD5",))
    with pytest.raises(ValueError):
        SaslAuthenticator(())
    assert SaslAuthenticator().mechanisms == ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")


def test_config(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError):
        ServerConfig(port=0, sasl=True)
    x509 = str(make_test_ca(tmp_path / "x509").dir)
    with pytest.raises(ConfigError):
        ServerConfig(tls_port=0, x509_dir=x509, sasl=True, sasl_mechanisms=("CRAM-MD5",))
    with pytest.raises(ConfigError):
        ServerConfig(tls_port=0, x509_dir=x509, sasl=True, sasl_mechanisms=())
    assert ServerConfig(tls_port=0, x509_dir=x509, sasl=True).sasl_mechanisms == ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")


# --- links on our server --------------------------------------------------------------------------


async def sasl_server(tmp_path: pathlib.Path, **kw: object) -> tuple[Running, Endpoint]:
    x509 = make_test_ca(tmp_path / "x509").dir
    kw.setdefault("port", None)
    r = await start_server(tls_port=0, x509_dir=str(x509), sasl=True, **kw)
    store = SaslVerifiers()
    store.add("alice", "secret")
    r.server.set_sasl_credentials(verifiers=store)
    ctx = ssl.create_default_context(cafile=str(x509 / "ca-cert.pem"))
    return r, Endpoint(port=r.server.port_of(secure=True), ssl=ctx)


async def scram_login(ep: Endpoint, channel_type: int, password: str, *, connection_id: int = 0) -> tuple[int, int | None, bytes]:
    """(SASL verdict, link result or None, what followed)."""
    conv = await sasl_link(ep, channel_type, connection_id=connection_id)
    assert has_cap(conv.reply.common_caps, CommonCap.AUTH_SASL) and not has_cap(conv.reply.common_caps, CommonCap.AUTH_SPICE)
    assert conv.reply.pub_key == bytes(162)  # no RSA key is made for a SASL link
    assert await conv.select() == b",SCRAM-SHA-256,SCRAM-SHA-1,PLAIN,"
    client = ScramClient("sha256", "alice", password, authzid="alice")
    out, complete = await conv.start("SCRAM-SHA-256", client.first())
    assert out is not None and not complete
    out, complete = await conv.step(client.final(out))
    assert complete
    verdict, reason = await conv.result()
    if verdict:
        assert reason == b"Authentication failed\0"
        return verdict, None, b""
    assert out == client.server_signature()
    link_result = await conv.u32()
    rest = await conv.reader.read(4096) if link_result == LinkErr.OK else b""
    conv.writer.close()
    return verdict, link_result, rest


async def test_every_channel_logs_in(tmp_path: pathlib.Path) -> None:
    r, ep = await sasl_server(tmp_path)
    try:
        conv = await sasl_link(ep, ChannelType.MAIN)
        await conv.select()
        client = ScramClient("sha256", "alice", "secret", authzid="alice")
        out, _ = await conv.start("SCRAM-SHA-256", client.first())
        assert out is not None
        await conv.step(client.final(out))
        assert await conv.result() == (0, b"")
        assert await conv.u32() == LinkErr.OK
        conn = ChannelConnection(ChannelType.MAIN, CLIENT, mini_header=True)
        init = None
        while init is None:
            data = await conv.reader.read(4096)
            assert data
            init = next((e for e in conn.receive_data(data) if isinstance(e, Message) and isinstance(e, mm.Init)), None)
        verdict, link_result, _ = await scram_login(ep, ChannelType.INPUTS, "secret", connection_id=init.session_id)
        assert (verdict, link_result) == (0, LinkErr.OK)
        verdict, link_result, _ = await scram_login(ep, ChannelType.INPUTS, "secret", connection_id=12345)
        assert (verdict, link_result) == (0, LinkErr.BAD_CONNECTION_ID)
        verdict, link_result, _ = await scram_login(ep, ChannelType.INPUTS, "nope", connection_id=init.session_id)
        assert verdict == 1
        m = await r.server.metrics()
        assert (m.sasl_ok, m.sasl_failed) == (3, 1)
        conv.writer.close()
    finally:
        await r.server.close()


async def test_ticket_refused_on_a_sasl_port(tmp_path: pathlib.Path) -> None:
    r, ep = await sasl_server(tmp_path, password="pw")
    try:
        with pytest.raises(LinkFailed) as e:
            await connect(ep, password="pw")  # AUTH_SPICE selected: refused, as libspice
        # reds_send_link_error after the reply: a whole LinkReply(INVALID_DATA), whose magic the
        # client reads where it expected the u32 result
        assert e.value.code == int.from_bytes(b"REDQ", "little")
    finally:
        await r.server.close()


async def test_plain_port_offers_no_sasl(tmp_path: pathlib.Path) -> None:
    r, _ = await sasl_server(tmp_path, port=0, password="pw")
    try:
        conv = await sasl_link(Endpoint(port=r.server.port_of()), ChannelType.MAIN)
        assert not has_cap(conv.reply.common_caps, CommonCap.AUTH_SASL) and has_cap(conv.reply.common_caps, CommonCap.AUTH_SPICE)
        conv.writer.write(struct.pack("<I", 2))  # SASL anyway: INVALID_DATA
        hdr = await conv.reader.readexactly(16)
        size = struct.unpack_from("<I", hdr, 12)[0]
        assert LinkReply.parse(await conv.reader.readexactly(size)).error == LinkErr.INVALID_DATA
        s = await connect(Endpoint(port=r.server.port_of()), password="pw")  # the ticket works there
        assert s.session_id
    finally:
        await r.server.close()


async def test_bad_mechanism_and_lockout(tmp_path: pathlib.Path) -> None:
    r, ep = await sasl_server(tmp_path, ticket_max_failures=2, ticket_lockout=600)
    try:
        conv = await sasl_link(ep, ChannelType.MAIN)
        await conv.select()
        conv.writer.write(struct.pack("<I", 10) + b"DIGEST-MD5" + struct.pack("<I", 0))
        hdr = await conv.reader.readexactly(16)
        assert LinkReply.parse(await conv.reader.readexactly(struct.unpack_from("<I", hdr, 12)[0])).error == LinkErr.INVALID_DATA
        for _ in range(2):
            assert (await scram_login(ep, ChannelType.MAIN, "bad"))[0] == 1
        conv = await sasl_link(ep, ChannelType.MAIN)  # locked out: closed before the mechanism list
        conv.writer.write(struct.pack("<I", 2))
        assert await conv.reader.read() == b""
        assert (await r.server.metrics()).sasl_ok == 0
    finally:
        await r.server.close()


async def test_pipelined_client_and_no_auth_selection(tmp_path: pathlib.Path) -> None:
    r, ep = await sasl_server(tmp_path)
    try:
        conv = await sasl_link(ep, ChannelType.MAIN)
        client = ScramClient("sha256", "alice", "secret")
        first = client.first()
        # the mechanism choice and the start in one write, before the list arrived
        conv.writer.write(struct.pack("<I", 2) + struct.pack("<I", 13) + b"SCRAM-SHA-256" + struct.pack("<I", len(first) + 1) + first + b"\0")
        n = await conv.u32()
        assert await conv.reader.readexactly(n) == b",SCRAM-SHA-256,SCRAM-SHA-1,PLAIN,"
        out, complete = await conv.answer()
        assert out is not None and not complete
        out, complete = await conv.step(client.final(out))
        assert complete and await conv.result() == (0, b"") and await conv.u32() == LinkErr.OK
        conv.writer.close()
        # a client without auth selection cannot do SASL: VERSION_MISMATCH, as libspice
        conv = await sasl_link(ep, ChannelType.MAIN, common_caps=caps_to_words({CommonCap.AUTH_SPICE, CommonCap.AUTH_SASL}))
        hdr = await conv.reader.readexactly(16)  # at once a second, whole LinkReply
        assert LinkReply.parse(await conv.reader.readexactly(struct.unpack_from("<I", hdr, 12)[0])).error == LinkErr.VERSION_MISMATCH
        assert await conv.reader.read() == b""
    finally:
        await r.server.close()
