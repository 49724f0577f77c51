"""TLS listener and the per-channel security policy (NEED_SECURED / NEED_UNSECURED)."""

from __future__ import annotations

import pathlib
import ssl

import pytest

from spiceserver.proto.enums import ChannelType, LinkErr
from spiceserver.proto.messages import inputs as im
from tests.conftest import start_server
from tests.support.certs import make_test_ca
from tests.support.client import Endpoint, LinkFailed, connect, link_channel


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
