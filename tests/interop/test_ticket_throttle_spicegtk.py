"""spice-gtk links and draws while another address guesses passwords (issue 9, point 2).

The guesser (the test client, connecting from 127.0.0.2) keeps sending wrong tickets until spice-gtk
(from 127.0.0.1, with the right password) has shown the server's picture: the guesser is locked out
after ``ticket_max_failures`` tries, the real client is not affected.
"""

from __future__ import annotations

import asyncio

import pytest

from spiceserver.desktop import SyntheticDesktop
from spiceserver.proto.enums import LinkErr
from tests.conftest import start_server
from tests.interop.harness import controlled_client, format_events, same_picture
from tests.support.client import Endpoint, LinkFailed, connect
from tests.test_ticket_throttle import from_address

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]


async def test_spicegtk_links_and_draws_while_another_address_guesses(monkeypatch: pytest.MonkeyPatch) -> None:
    r = await start_server(password="pw", ticket_max_failures=3)
    frame = SyntheticDesktop(320, 240).frame(0.0)
    r.server.add_framebuffer_display(320, 240).update(frame)
    port = r.server.port_of()
    refused: list[str] = []
    drawn = asyncio.Event()

    async def guess() -> None:
        while not drawn.is_set():
            try:
                await connect(Endpoint(port=port), password=f"guess{len(refused)}")
            except LinkFailed as exc:
                assert exc.code == LinkErr.PERMISSION_DENIED
                refused.append(exc.stage)
            else:
                raise AssertionError("a wrong password was accepted")

    from_address(monkeypatch, "127.0.0.2")  # the guesser's connections; spice-gtk is another process
    guesser = asyncio.get_running_loop().create_task(guess())
    try:
        async with controlled_client("--port", str(port), "--password", "pw", "--wait-display") as client:
            shown = await client.wait_picture(same_picture(frame))
            drawn.set()
            await guesser
        assert client.proc.returncode == 0, format_events(client.events, client.stderr)
        assert shown is not None, format_events(client.events, client.stderr)
        assert len(refused) > 3  # still trying after the lockout while spice-gtk linked
        with pytest.raises(LinkFailed) as e:
            await connect(Endpoint(port=port), password="pw")  # the guesser's address is locked out
        assert e.value.code == LinkErr.PERMISSION_DENIED
    finally:
        guesser.cancel()
        await asyncio.gather(guesser, return_exceptions=True)
        await r.server.close()
