"""Live metrics: the snapshot API and the Prometheus page on the SPICE port."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest

from spiceserver.config import ServerConfig
from spiceserver.errors import ConfigError
from spiceserver.metrics import DisplayMetrics, Metrics
from spiceserver.proto.enums import ChannelType
from tests.conftest import start_server
from tests.support.client import LinkFailed, connect, http_exchange
from tests.support.display import link_display, pump_until


async def http_get(port: int, path: str) -> tuple[str, dict[str, str], str]:
    data = (await http_exchange(port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())).decode()
    head, _, body = data.partition("\r\n\r\n")
    status, *lines = head.split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}
    return status, headers, body


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, from a Prometheus text page."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


async def test_snapshot_counts_sessions_channels_bytes_and_images() -> None:
    r = await start_server(metrics_path="/metrics")
    try:
        fb = r.server.add_framebuffer_display(64, 48)
        fb.update(np.random.default_rng(1).integers(0, 1 << 24, (48, 64), dtype=np.uint32))
        s = await connect(r.ep)
        inp = await s.link(ChannelType.INPUTS)
        ch, state = await link_display(s)
        await pump_until(ch, state, lambda st: st.marks > 0)
        with pytest.raises(LinkFailed):
            await s.link(99)  # no such channel: a failed link
        m = await r.server.metrics()
        assert m.sessions == 1
        assert m.channels == {"main": 1, "inputs": 1, "display": 1}
        assert sorted(c.channel for c in r.server.clients()[0].channels) == ["display", "inputs", "main"]
        assert m.links_ok == 3 and m.links_failed == 1 and m.connections == 4
        assert m.channel_bytes["main", "out"] > 0  # INIT, channels list, ...
        assert m.channel_bytes["display", "in"] > 0 and m.channel_bytes["display", "out"] > 0
        (disp,) = m.displays
        assert disp.clients == 1 and disp.drawables >= 1 and sum(disp.images.values()) >= 1
        sent = dict(disp.images)

        # the same figures on the SPICE port, as Prometheus text
        status, headers, body = await http_get(r.server.port_of(), "/metrics")
        assert status == "HTTP/1.1 200 OK" and headers["content-type"].startswith("text/plain; version=0.0.4")
        got = samples(body)
        assert got["spiceserver_sessions"] == 1
        assert got['spiceserver_channels{channel="display"}'] == 1
        assert got['spiceserver_links_total{result="failed"}'] == 1
        assert got['spiceserver_channel_bytes_total{channel="main",direction="out"}'] > 0
        for enc, n in sent.items():
            assert got[f'spiceserver_display_images_total{{display="0",encoding="{enc}"}}'] >= n
        assert re.search(r"^# TYPE spiceserver_display_images_total counter$", body, re.M)

        # counters never go down when clients leave; gauges do
        await ch.close()
        await inp.close()
        await s.main.close()
        for _ in range(100):
            m = await r.server.metrics()
            if m.sessions == 0 and not m.channels:
                break
            await asyncio.sleep(0.05)
        assert m.sessions == 0 and m.channels == {} and r.server.clients() == []
        assert m.displays[0].clients == 0
        assert all(m.displays[0].images.get(k, 0) >= v for k, v in sent.items())
        assert (await http_get(r.server.port_of(), "/metrics?x=1"))[0] == "HTTP/1.1 200 OK"
        m = await r.server.metrics()
        assert m.http_requests == 2 and m.links_failed == 1  # a page is not a failed link
    finally:
        await r.server.close()


async def test_no_metrics_page_unless_configured() -> None:
    r = await start_server()
    try:
        assert (await http_get(r.server.port_of(), "/metrics"))[0] == "HTTP/1.1 404 Not Found"
    finally:
        await r.server.close()


def test_config_checks() -> None:
    for bad in ("metrics", "/m?x", ""):
        with pytest.raises(ConfigError):
            ServerConfig(port=0, metrics_path=bad)
    with pytest.raises(ConfigError):
        ServerConfig(port=0, metrics_path="/metrics", websocket=False)


def test_prometheus_text_escapes_labels() -> None:
    m = Metrics(
        uptime_seconds=1.5, connections=1, links_ok=1, links_failed=0, protocol_errors=0, websocket_links=0,
        http_requests=0, sessions=1, codec_kernels_ready=True, channels={'we"ird\\': 1},
        displays=(DisplayMetrics(0, 1, 0, 0, 1, 0, {"glz": 2}),),
    )  # fmt: skip
    text = m.prometheus()
    assert 'spiceserver_channels{channel="we\\"ird\\\\"} 1' in text
    assert "spiceserver_uptime_seconds 1.5" in text
    assert 'spiceserver_display_images_total{display="0",encoding="glz"} 2' in text
    assert text.endswith("\n")


async def test_char_device_channels_and_the_agent_are_counted() -> None:
    """A port channel's bytes both ways and its states, and the guest agent's, on the page."""
    from spiceserver.channels.chardev import char_device_pair
    from spiceserver.proto.messages import port as pm
    from spiceserver.proto.messages import spicevmc as vm

    r = await start_server(metrics_path="/metrics")
    try:
        dev, end = char_device_pair()
        got = bytearray()
        end.on_data(got.extend)
        r.server.add_port("org.test.metrics", dev)
        agent_dev, _agent_end = char_device_pair(opened=False)
        r.server.add_agent(agent_dev)
        s = await connect(r.ep)
        ch = await s.link(ChannelType.PORT, 0)
        await ch.expect(pm.PortInit)
        await ch.send(vm.ClientSpicevmcData(data=b"12345"))
        end.write(b"abc")
        assert (await ch.expect(vm.SpicevmcData)).data == b"abc"
        async def written() -> None:
            while len(got) < 5:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(written(), 10)
        (port,) = [d for d in (await r.server.metrics()).devices if d.channel == "port"]
        assert (port.name, port.bytes_to_device, port.bytes_to_client, port.device_open, port.client) == ("org.test.metrics", 5, 3, True, True)
        _, _, body = await http_get(r.server.port_of(), "/metrics")
        page = samples(body)
        labels = 'channel="port",id="0",name="org.test.metrics"'
        assert page[f'spiceserver_device_bytes_total{{{labels},direction="to_device"}}'] == 5
        assert page[f'spiceserver_device_bytes_total{{{labels},direction="to_client"}}'] == 3
        assert page[f"spiceserver_device_client{{{labels}}}"] == 1
        assert page['spiceserver_device_open{channel="agent",id="0",name=""}'] == 0
    finally:
        await r.server.close()
