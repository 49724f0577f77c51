"""spice-gtk 0.42 against the port and WebDAV channels, over the in-process char device pair.

Port (spice-gtk ``src/channel-port.c``): PORT_INIT opens the port on spice-gtk's side (``port-opened``);
bytes written with ``spice_port_channel_write_async`` (gi_client ``port_write``, through ctypes) reach
the device model; the model's bytes arrive as ``port-data``; events go both ways (``port_event``
action -> the device and the host callback; the guest's BREAK and CLOSED -> ``port-event``).

WebDAV (spice-gtk ``src/channel-webdav.c`` + phodav): with ``--shared-dir`` spice-gtk serves that
folder; :class:`~spiceserver.channels.webdav_mux.WebDavMux` over the channel's device end plays
the guest's spice-webdavd and asks PROPFIND (207 Multi-Status) and GET (200 and the file).
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from spiceserver.channels.chardev import char_device_pair
from spiceserver.channels.port import PortChannel, WebDavChannel
from spiceserver.channels.webdav_mux import WebDavMux
from tests.conftest import start_server
from tests.interop.harness import controlled_client

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]

NAME = "org.test.port.0"


async def wait_until(pred: object, timeout: float = 10.0) -> None:
    async def loop() -> None:
        while not pred():  # type: ignore[operator]
            await asyncio.sleep(0.01)

    await asyncio.wait_for(loop(), timeout)


async def test_spicegtk_port_bytes_and_events_both_ways() -> None:
    r = await start_server()
    dev, end = char_device_pair(opened=True)
    got = bytearray()
    device_events: list[int] = []
    host_events: list[int] = []
    end.on_data(got.extend)
    end.on_event(device_events.append)
    port = r.server.register_channel(PortChannel, NAME, dev, 0)
    port.on_client_event(host_events.append)
    try:
        async with controlled_client("--port", str(r.server.port_of()), timeout=40) as client:
            await client.expect("port-opened", name=NAME, opened=True, timeout=10)
            await client.action({"op": "port_write", "name": NAME, "text": "hello server"})
            await client.expect("port-written", name=NAME, timeout=10)
            await wait_until(lambda: bytes(got) == b"hello server")
            end.write(b"hello client")
            ev = await client.expect("port-data", name=NAME, timeout=10)
            assert ev["text"] == "hello client"
            big = bytes(range(256)) * 800  # 204800 bytes: several DATA messages (LZ4 on TCP)
            await client.action({"op": "port_write", "name": NAME, "b64": base64.b64encode(big).decode()})
            await wait_until(lambda: len(got) == 12 + len(big))
            assert bytes(got[12:]) == big
            # device -> client: one DATA message per device read (spice-gtk announces no LZ4 on ports:
            # plain DATA); written in 8 KiB pieces so that gi_client's JSON lines stay under the
            # harness's 64 KiB line limit
            for i in range(0, len(big), 8192):
                end.write(big[i : i + 8192])

            def received() -> bytes:
                evs = [e for e in client.events if e.get("event") == "port-data" and e.get("name") == NAME][1:]
                return b"".join(base64.b64decode(e["b64"]) if "b64" in e else e["text"].encode() for e in evs)

            try:
                await wait_until(lambda: len(received()) >= len(big), timeout=20)
            except TimeoutError:
                raise AssertionError([(e.get("size"), e.get("t")) for e in client.events if e.get("event") == "port-data"], client.stderr[-2000:]) from None
            assert received() == big
            await client.action({"op": "port_event", "name": NAME, "port_event": 2})
            await wait_until(lambda: device_events == [2] and host_events == [2])
            end.send_event(2)
            await client.expect("port-event", name=NAME, port_event=2, timeout=10)
            end.set_open(False)
            await client.expect("port-event", name=NAME, port_event=1, timeout=10)
            await client.expect("port-opened", name=NAME, opened=False, timeout=10)
    finally:
        await r.server.close()
        await dev.close()


async def test_spicegtk_shared_folder_through_the_webdav_mux(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    (share / "hello.txt").write_bytes(b"hello from the client\n")
    (share / "big.bin").write_bytes(bytes(range(256)) * 2000)
    r = await start_server()
    dev, end = char_device_pair(opened=False)
    r.server.register_channel(WebDavChannel, dev)
    try:
        async with controlled_client("--port", str(r.server.port_of()), "--shared-dir", str(share), timeout=40) as client:
            await client.expect("channel-event", channel="webdav", name="OPENED", timeout=10)
            async with WebDavMux(end) as mux:
                status, headers, body = await mux.request("PROPFIND", "/", headers={"Depth": "1"}, timeout=15)
                assert status == 207, (status, headers, body[:300])
                assert b"hello.txt" in body and b"big.bin" in body
                assert headers.get("server", "").startswith("PhodavServer")
                r1 = await mux.get("/hello.txt", timeout=15)
                assert (r1.status, r1.body) == (200, b"hello from the client\n")
                r2, r3 = await asyncio.gather(mux.get("/big.bin", timeout=15), mux.get("/missing.txt", timeout=15))
                assert r2.status == 200 and r2.body == bytes(range(256)) * 2000
                assert r3.status == 404
    finally:
        await r.server.close()
        await dev.close()
