"""Our SASL link against libspice's: QEMU (``-spice tls-port=...,sasl=on``, cyrus with a sasldb) as
the reference for the bytes (spice ``server/red-stream.cpp`` ``red_sasl_*``, ``reds.cpp``).

The same raw client (:mod:`tests.support.sasl_client`, framed as spice-gtk frames it) logs in to
both with SCRAM-SHA-256; what each server sent must agree: the LinkReply's common caps (auth
selection, AUTH_SASL, mini header; no AUTH_SPICE) and its zeroed RSA key, the mechanism list, the
step framing (length with the NUL, the ``complete`` byte), the server signature, the SASL verdict
and then the link result. One known difference, by design: on a wrong password libspice closes
the connection (cyrus fails the step, ``RED_SASL_ERROR_GENERIC``) where we answer
``e=invalid-proof`` + complete and the "Authentication failed" refusal; spice-gtk reports both as
ERROR_AUTH "Authentication failed" (``test_sasl_spicegtk.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from spiceserver.auth import SaslVerifiers
from spiceserver.proto.enums import ChannelType, LinkErr
from tests.conftest import start_server
from tests.support.certs import TestCA
from tests.support.client import Endpoint
from tests.support.sasl_client import SaslConversation, ScramClient, sasl_link

pytestmark = [pytest.mark.interop]

QEMU = "qemu-system-x86_64"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def qemu_sasl(tmp_path: Path, test_ca: TestCA) -> AsyncIterator[int]:
    for exe in (QEMU, "saslpasswd2"):
        if shutil.which(exe) is None:
            pytest.skip(f"{exe} not installed (qemu-system-x86 / sasl2-bin)")
    db = tmp_path / "sasldb"
    subprocess.run(["saslpasswd2", "-p", "-f", str(db), "-a", "qemu", "-c", "alice"], input=b"secret", check=True)
    (tmp_path / "qemu.conf").write_text(f"mech_list: scram-sha-256 scram-sha-1 plain\nsasldb_path: {db}\n")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        QEMU, "-machine", "pc,accel=tcg", "-nodefaults", "-display", "none", "-m", "64",
        "-spice", f"tls-port={port},addr=127.0.0.1,x509-dir={test_ca.dir},sasl=on", "-device", "qxl-vga",
        env=dict(os.environ, SASL_CONF_PATH=str(tmp_path)), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield port
    finally:
        proc.terminate()
        await proc.wait()


async def link_when_listening(ep: Endpoint, deadline: float = 60.0) -> SaslConversation:
    """Link once the server listens (QEMU opens its port a moment after starting)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        try:
            return await sasl_link(ep, ChannelType.MAIN)
        except ConnectionRefusedError:
            if loop.time() > end:
                raise
            await asyncio.sleep(0.05)


async def transcript(ep: Endpoint) -> dict[str, object]:
    conv = await link_when_listening(ep)
    out: dict[str, object] = {"caps": conv.reply.common_caps, "zero_key": conv.reply.pub_key == bytes(len(conv.reply.pub_key))}
    out["mechlist"] = await conv.select()
    client = ScramClient("sha256", "alice", "secret", authzid="alice")
    first, complete = await conv.start("SCRAM-SHA-256", client.first())
    assert first is not None
    attrs = [a[:2] for a in first.split(b",")]
    out["first"] = (attrs, first.startswith(b"r=" + client.cnonce.encode()), first.endswith(b",i=4096"), complete)
    final, complete = await conv.step(client.final(first))
    out["final"] = (final == client.server_signature(), complete)
    out["verdict"] = await conv.result()
    out["link"] = await conv.u32()
    out["data_follows"] = len(await conv.reader.read(64)) > 0
    conv.writer.close()
    return out


async def test_sasl_bytes_match_qemu(tmp_path: Path, test_ca: TestCA) -> None:
    ctx = ssl.create_default_context(cafile=str(test_ca.ca_cert))
    async with qemu_sasl(tmp_path, test_ca) as qport:
        want = await transcript(Endpoint(port=qport, ssl=ctx))
    r = await start_server(port=None, tls_port=0, x509_dir=str(test_ca.dir), sasl=True)
    store = SaslVerifiers()
    store.add("alice", "secret")
    r.server.set_sasl_credentials(verifiers=store)
    try:
        got = await transcript(Endpoint(port=r.server.port_of(secure=True), ssl=ctx))
    finally:
        await r.server.close()
    assert want["mechlist"] == b",SCRAM-SHA-256,SCRAM-SHA-1,PLAIN,"
    assert want["verdict"] == (0, b"") and want["link"] == LinkErr.OK and want["final"] == (True, True)
    assert got == want
