"""spice-gtk links and draws while peers misbehave (issue 9, point 4): a WebSocket peer flooding
PINGs and never reading, duplicate links of the client's own display and inputs channels, and an
oversized KEY_SCANCODE on a duplicate inputs link. Bounds are checked as bytes and counts."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from spiceserver.desktop import SyntheticDesktop
from spiceserver.proto.enums import ChannelType
from spiceserver.proto.messages import inputs as im
from spiceserver.proto.wire import frame
from spiceserver.transport import READ_CHUNK, WRITE_PAUSE_BYTES, unsent_bytes
from tests.conftest import start_server
from tests.interop.harness import controlled_client, format_events, same_picture
from tests.interop.test_display_spicegtk import assert_same
from tests.support.client import Endpoint, link_channel, open_stream
from tests.test_backpressure import ping_frames, spy_websocket_streams, until

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]


async def test_spicegtk_draws_through_ping_flood_and_duplicate_links(monkeypatch: pytest.MonkeyPatch) -> None:
    streams = spy_websocket_streams(monkeypatch)
    r = await start_server()
    desktop = SyntheticDesktop(320, 240)
    fb = r.server.add_framebuffer_display(320, 240)
    fb.update(desktop.frame(0.0))
    flooder: asyncio.StreamWriter | None = None
    try:
        # a WebSocket peer that sends PINGs and never reads: the server stops reading it
        client, _ = await open_stream(Endpoint(port=r.server.port_of(), websocket=True))
        flooder = client.writer  # type: ignore[attr-defined]
        await until(lambda: len(streams) == 1, "the flooder's WebSocket")
        chunk = ping_frames(READ_CHUNK // 131)
        while unsent_bytes(streams[0]) <= WRITE_PAUSE_BYTES:
            flooder.write(chunk)
            await asyncio.sleep(0)
        async with controlled_client("--port", str(r.server.port_of()), "--wait-display") as gtk:
            first = desktop.frame(0.0)
            shown = await gtk.wait_picture(same_picture(first))
            assert shown is not None, format_events(gtk.events, gtk.stderr)
            assert_same(shown, first)
            # spice-gtk's own session: duplicate links of its display and inputs are refused
            (session,) = list(r.server._ctx.sessions)
            ep = Endpoint(port=r.server.port_of())
            for channel_type in (ChannelType.DISPLAY, ChannelType.INPUTS):
                dup = await link_channel(ep, channel_type, connection_id=session.id)
                if channel_type == ChannelType.INPUTS:
                    dup.writer.write(frame(im.KeyScancode.TYPE, bytes(1 << 20), mini=True))
                assert await dup.closed()
            assert r.server._ctx.open_channels["display"] == 1
            # the PING flooder is still paused within its bound
            assert unsent_bytes(streams[0]) <= WRITE_PAUSE_BYTES + READ_CHUNK
            # and spice-gtk still draws
            later = desktop.frame(1.0)
            fb.update(later)
            shown = await gtk.wait_picture(same_picture(later))
            assert shown is not None, format_events(gtk.events, gtk.stderr)
            assert_same(shown, np.asarray(later))
        assert gtk.proc.returncode == 0, format_events(gtk.events, gtk.stderr)
    finally:
        if flooder is not None:
            flooder.transport.abort()
        await r.server.close()
