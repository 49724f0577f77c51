"""The real guest agent behind spiceserver: spice-vdagentd + spice-vdagent on Xvfb connect to the
server's agent char device (a listening Unix socket, :class:`~spiceserver.channels.chardev.UnixSocketCharDevice`,
as Xspice's), and spice-gtk talks to them through the server's main channel.

The same checks as the reference run against Xspice (:mod:`tests.interop.test_agent_xspice`), with
the restart held to one attempt (Xspice needs up to three).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from spiceserver import ServerConfig, SpiceServer
from spiceserver.channels.chardev import UnixSocketCharDevice
from tests.interop.harness import GiClient, controlled_client, format_events
from tests.interop.test_agent_xspice import (
    check_agent_announced,
    check_agent_mouse,
    check_agent_restart,
    check_clipboard_client_to_guest,
    check_clipboard_guest_to_client,
    check_file_copy,
    check_monitors_config,
)
from tests.support.vdagent import AgentEnv, agent_env, agent_env_skip_reason

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]


@contextlib.asynccontextmanager
async def agent_client(tmp_path: Path, **config: object) -> AsyncIterator[tuple[SpiceServer, GiClient, AgentEnv]]:
    """spiceserver with a framebuffer display and the agent's socket, the real agent on Xvfb, and a
    ``--control`` spice-gtk client that has seen the agent announce itself."""
    reason = agent_env_skip_reason()
    if reason:
        pytest.skip(reason)
    sock = tmp_path / "virtio.sock"
    (tmp_path / "agent").mkdir(exist_ok=True)
    server = SpiceServer(ServerConfig(port=0, disable_ticketing=True, net_test=False, **config))  # type: ignore[arg-type]
    fb = server.add_framebuffer_display(1024, 768)
    fb.update(np.full((768, 1024), 0x336699, np.uint32))
    device = UnixSocketCharDevice(str(sock))
    server.add_agent(device)
    await server.start()
    try:
        await device.listening()
        async with (
            agent_env(str(sock), work=tmp_path / "agent") as agent,
            controlled_client("--port", str(server.port_of()), "--expect-channels", "4", timeout=120) as client,
        ):
            try:
                await check_agent_announced(client, agent)
                yield server, client, agent
            except BaseException:
                print(agent.diagnostics())
                raise
    finally:
        await server.close()


async def test_clipboard_file_copy_and_agent_mouse(tmp_path: Path) -> None:
    src = tmp_path / "hello-agent.txt"
    src.write_bytes(b"hello from the client\n" * 100)
    async with agent_client(tmp_path) as (_server, client, agent):
        await check_clipboard_guest_to_client(client, agent, "hello-from-guest")
        await check_clipboard_client_to_guest(client, agent, "text-from-client")
        await check_file_copy(client, agent, src)
        await check_agent_mouse(client, agent, 100, 200)
    assert client.proc.returncode == 0, format_events(client.events, client.stderr)


async def test_monitors_config_reaches_the_agent(tmp_path: Path) -> None:
    async with agent_client(tmp_path) as (_server, client, agent):
        outcome = await check_monitors_config(client, agent, (800, 600))
    # spice-gtk 0.42 appends the physical sizes, which spice-vdagentd 0.22.1 refuses (it does behind Xspice:
    # test_agent_xspice); spiceserver forwards the config without them, so the X screen resizes
    assert outcome == "resized", outcome
    print("monitors config:", outcome)


async def test_agent_restart_in_one_attempt(tmp_path: Path) -> None:
    async with agent_client(tmp_path) as (_server, client, agent):
        assert await check_agent_restart(client, agent, attempts=1) == 1
        await check_clipboard_guest_to_client(client, agent, "after-restart")
        await check_clipboard_client_to_guest(client, agent, "to-the-new-agent")
    assert client.proc.returncode == 0, format_events(client.events, client.stderr)


async def test_the_demo_serves_the_agent_socket(tmp_path: Path) -> None:
    """``python -m spiceserver demo --agent SOCKET``: the real agent connects to the socket and
    spice-gtk gets the X session's clipboard through the demo."""
    from tests.interop.test_demo import read_until, start_demo, stop

    reason = agent_env_skip_reason()
    if reason:
        pytest.skip(reason)
    sock = tmp_path / "demo-agent.sock"
    (tmp_path / "agent").mkdir()
    proc, port = await start_demo("--agent", str(sock), "--no-audio", "--scene", "static")
    lines: list[str] = []
    try:
        await read_until(proc, lines, lambda seen: any(s.startswith("guest agent: listening on") for s in seen))
        async with (
            agent_env(str(sock), work=tmp_path / "agent") as agent,
            controlled_client("--port", str(port), "--expect-channels", "4", timeout=120) as client,
        ):
            await check_agent_announced(client, agent)
            await check_clipboard_guest_to_client(client, agent, "from-the-demo-guest")
    finally:
        await stop(proc)


async def test_copy_paste_and_file_transfer_switched_off(tmp_path: Path) -> None:
    """``agent_copypaste=False, agent_file_xfer=False`` (QEMU ``disable-copy-paste``,
    ``disable-agent-file-xfer``): spice-gtk sees the real agent without its clipboard capabilities and
    with FILE_XFER_DISABLED, so it refuses a file copy at once."""
    reason = agent_env_skip_reason()
    if reason:
        pytest.skip(reason)
    sock = tmp_path / "virtio.sock"
    (tmp_path / "agent").mkdir()
    server = SpiceServer(ServerConfig(port=0, disable_ticketing=True, net_test=False, agent_copypaste=False, agent_file_xfer=False))
    server.add_framebuffer_display(640, 480)
    device = UnixSocketCharDevice(str(sock))
    server.add_agent(device)
    await server.start()
    src = tmp_path / "refused.txt"
    src.write_bytes(b"x")
    try:
        await device.listening()
        async with (
            agent_env(str(sock), work=tmp_path / "agent") as agent,
            controlled_client("--port", str(server.port_of()), "--expect-channels", "4", timeout=120) as client,
        ):
            ev = await client.expect(lambda e: e.get("event") == "agent" and e["connected"] and e["caps"], 20)
            caps = set(ev["caps"])
            assert {5, 6}.isdisjoint(caps) and 13 in caps and 0 in caps, (caps, agent.diagnostics())  # BY_DEMAND, SELECTION gone; FILE_XFER_DISABLED
            start = len(client.events)
            await client.action({"op": "file_copy", "path": str(src)})
            done = await client.expect(lambda e: e.get("event") == "file-copy-done" and client.events.index(e) >= start, 20)
            assert not done["ok"], done
            assert not (agent.save_dir / src.name).exists()
    finally:
        await server.close()
