"""The real guest agent behind the real server: Xspice (libspice-server) + spice-vdagentd/spice-vdagent +
spice-gtk. This is the reference the vdagent support of spiceserver is held to.

Xspice (Xorg + spiceqxl, ``xf86-video-qxl`` ``spiceqxl_vdagent.c``) listens on the Unix socket named by
``XSPICE_VDAGENT_VIRTIO_PATH`` and libspice-server (``server/reds.cpp``) treats what connects there as the
agent's char device. :func:`tests.support.vdagent.agent_env` runs the agent against it on Xspice's own
display, so the clipboard and RandR seen with xclip and xrandr are Xspice's.

Each check is a coroutine taking the client (:class:`~tests.interop.harness.GiClient` started with
``--control``) and the :class:`~tests.support.vdagent.AgentEnv`, so the same checks run against spiceserver
with the agent on Xvfb:

* :func:`check_agent_announced` -- the agent's ANNOUNCE_CAPABILITIES reaches the client;
* :func:`check_clipboard_guest_to_client` / :func:`check_clipboard_client_to_guest` -- xclip both ways;
* :func:`check_monitors_config` -- MONITORS_CONFIG reaches the agent (resize, or vdagentd 0.22.1's
  rejection of spice-gtk 0.42's message, see :data:`~tests.support.vdagent.MONITORS_CONFIG_REJECTED`);
* :func:`check_file_copy` -- a file lands in the agent's SAVE_DIR;
* :func:`check_agent_mouse` -- client-mode positions become input_event records (VD_AGENT_MOUSE_STATE);
* :func:`check_agent_restart` -- vdagentd killed: the client sees the agent go, restarted: come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.interop.harness import Event, GiClient, controlled_client, format_events
from tests.interop.test_harness_xspice import (
    SPICEQXL,
    XORG,
    XSPICE_DEADLINE,
    XspiceExited,
    _free_display,
    _free_port,
    _wait_port,
)
from tests.support.vdagent import MONITORS_CONFIG_REJECTED, AgentEnv, agent_env, agent_env_skip_reason
from tests.support.xspice import XORG_CONF, stop_xorg

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]

#: VD_AGENT_CAP_* bits the real agent (spice-vdagent 0.22.1) announces: 0x38de7
AGENT_CAPS = [0, 1, 2, 5, 6, 7, 8, 10, 11, 15, 16, 17]
#: VD_AGENT_CLIPBOARD_UTF8_TEXT
UTF8_TEXT = 1
#: VD_AGENT_CLIPBOARD_SELECTION_CLIPBOARD
SELECTION_CLIPBOARD = 0


# --------------------------------------------------------------------------- reusable checks


def _since(client: GiClient, name: str, start: int, test: Callable[[Event], bool] = lambda ev: True) -> Any:
    """A ``wait_for`` predicate: event ``name`` printed after ``client.events[start]`` and passing ``test``."""

    def pick(ev: Event) -> bool:
        return ev.get("event") == name and any(e is ev for e in client.events[start:]) and test(ev)

    return pick


async def _action(client: GiClient, act: dict[str, Any]) -> Event:
    ev = await client.action(act)
    assert "error" not in ev, f"{ev}\n{format_events(client.events, client.stderr)}"
    return ev


#: vdagentd's log line for the VD_AGENT_MAX_CLIPBOARD that spice-gtk sends once it has the agent's
#: ANNOUNCE_CAPABILITIES (``channel-main.c``): proof that the announce made the whole round trip
CLIENT_GOT_ANNOUNCE = r"Set max clipboard: \d+"


async def check_agent_announced(client: GiClient, agent: AgentEnv, timeout: float = 20.0) -> list[int]:
    """The agent is connected and its capabilities reached the client (which answered with
    MAX_CLIPBOARD); returns the cap bits."""
    ev = await client.expect(lambda e: e.get("event") == "agent" and e["connected"] and e["caps"], timeout)
    assert set(AGENT_CAPS) <= set(ev["caps"]), (ev, agent.diagnostics())
    await agent.wait_log(CLIENT_GOT_ANNOUNCE, timeout=timeout)
    caps: list[int] = ev["caps"]
    return caps


async def check_clipboard_guest_to_client(client: GiClient, agent: AgentEnv, text: str) -> None:
    """xclip takes the guest's CLIPBOARD: the client sees the GRAB, requests the text and gets it."""
    start = len(client.events)
    agent.set_clipboard(text.encode())
    grab = await client.expect(_since(client, "clipboard-grab", start), 20.0)
    assert grab["selection"] == SELECTION_CLIPBOARD and UTF8_TEXT in grab["types"], grab
    start = len(client.events)
    await _action(client, {"op": "clipboard_request", "selection": SELECTION_CLIPBOARD, "type": UTF8_TEXT})
    data = await client.expect(_since(client, "clipboard-data", start), 20.0)
    assert data["selection"] == SELECTION_CLIPBOARD and data["type"] == UTF8_TEXT, data
    assert data.get("text") == text, data


async def check_clipboard_client_to_guest(client: GiClient, agent: AgentEnv, text: str, timeout: float = 20.0) -> None:
    """The client grabs with an offer: ``xclip -o`` in the guest makes the agent request it and prints it."""
    start = len(client.events)
    await _action(
        client, {"op": "clipboard_grab", "selection": SELECTION_CLIPBOARD, "types": [UTF8_TEXT], "text": text}
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got = b""
    while loop.time() < deadline:  # until the agent owns the X selection, xclip reads the old owner
        with contextlib.suppress(subprocess.CalledProcessError):
            got = await agent.get_clipboard(timeout=max(deadline - loop.time(), 1.0))
        if got == text.encode():
            break
        await asyncio.sleep(0.05)
    assert got == text.encode(), (got, agent.diagnostics())
    req = await client.expect(_since(client, "clipboard-request", start), 5.0)
    assert req["answered"] and req["type"] == UTF8_TEXT, req


async def check_monitors_config(client: GiClient, agent: AgentEnv, size: tuple[int, int]) -> str:
    """``update_display`` + ``send_monitor_config`` for display 0. Returns ``"resized"`` when the X
    screen took ``size``, ``"rejected"`` when vdagentd dropped the message for its size (spice-gtk 0.42 ->
    vdagentd 0.22.1): either way the message went through the server to the agent."""
    before = await agent.screen_size()
    assert before != size, before
    await _action(client, {"op": "update_display", "id": 0, "enabled": True, "x": 0, "y": 0, "width": size[0], "height": size[1]})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20.0
    while loop.time() < deadline:
        if await agent.screen_size() == size:
            return "resized"
        if MONITORS_CONFIG_REJECTED in agent.log_text():
            return "rejected"
        await asyncio.sleep(0.05)
    raise AssertionError(f"MONITORS_CONFIG did not reach the agent\n{agent.diagnostics()}")


async def check_file_copy(client: GiClient, agent: AgentEnv, path: Path) -> Path:
    """``file_copy`` of ``path``: the agent saves it (same name, same bytes) in its SAVE_DIR."""
    start = len(client.events)
    await _action(client, {"op": "file_copy", "path": str(path)})
    done = await client.expect(_since(client, "file-copy-done", start), 30.0)
    assert done["ok"] and done["error"] is None, done
    return await agent.wait_file(path.name, path.read_bytes())


async def check_agent_mouse(client: GiClient, agent: AgentEnv, x: int, y: int) -> None:
    """In client mouse mode a position goes to the agent (VD_AGENT_MOUSE_STATE on the server port), which
    writes EV_ABS X, EV_ABS Y, EV_SYN to its uinput file."""
    await client.expect(lambda e: e.get("event") == "mouse-mode" and e["mode"] == 2, 20.0)
    await _action(client, {"op": "position", "x": x, "y": y, "display": 0, "buttons": 0})
    events = await agent.wait_input_events(lambda evs: (x, y) in agent.positions(evs), timeout=20.0)
    assert (x, y) in agent.positions(events), events


async def check_agent_restart(
    client: GiClient, agent: AgentEnv, attempts: int = 1, announce_timeout: float = 10.0
) -> int:
    """Kill vdagentd: the client sees the agent disconnected (AGENT_DISCONNECTED); restart it: the client
    sees it connected again (AGENT_CONNECTED_TOKENS) and gets the new agent's ANNOUNCE (it answers with
    MAX_CLIPBOARD). spice-gtk keeps ``agent-caps-0`` of the old agent, so the caps in the ``agent`` event
    prove nothing; the daemon's log does.

    ``attempts`` > 1 tolerates a server that loses the new agent's first messages now and then (Xspice,
    see :func:`test_xspice_agent_restart`); returns the attempts used."""
    for attempt in range(1, attempts + 1):
        start = len(client.events)
        await agent.kill_daemon()
        await client.expect(_since(client, "agent", start, lambda e: not e["connected"]), 20.0)
        start = len(client.events)
        await agent.restart_daemon()
        await client.expect(_since(client, "agent", start, lambda e: e["connected"]), 20.0)
        try:
            await agent.wait_log(CLIENT_GOT_ANNOUNCE, timeout=announce_timeout)
            return attempt
        except TimeoutError:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- Xspice with the agent


@dataclass(frozen=True)
class XspiceAgentServer:
    port: int
    display: int
    socket_path: Path
    work: Path


@contextlib.asynccontextmanager
async def xspice_with_agent(work: Path) -> AsyncIterator[XspiceAgentServer]:
    """Xorg + spiceqxl on 127.0.0.1:<free>, no ticketing, agent mouse on, a vdagent char device listening
    at ``work/virtio.sock`` (``XSPICE_VDAGENT_UINPUT_PATH`` is a FIFO the driver makes and reads: kept
    apart from the agent's own uinput file, which the test reads)."""
    for path, what in ((XORG, "Xorg"), (SPICEQXL, "spiceqxl driver")):
        if not Path(path).exists():
            pytest.skip(f"{what} not installed ({path}; Debian package xserver-xspice)")
    reason = agent_env_skip_reason(need_xvfb=False)
    if reason is not None:
        pytest.skip(reason)
    conf = work / "xorg.conf"
    conf.write_text(XORG_CONF)
    sock = work / "virtio.sock"
    log = work / "xorg.log"
    for attempt in range(3):
        port, display = _free_port(), _free_display()
        env = dict(
            os.environ,
            XSPICE_PORT=str(port),
            XSPICE_DISABLE_TICKETING="1",
            XSPICE_AGENT_MOUSE="1",
            XSPICE_VDAGENT_ENABLED="1",
            XSPICE_VDAGENT_VIRTIO_PATH=str(sock),
            XSPICE_VDAGENT_UINPUT_PATH=str(work / "xspice-uinput"),
        )
        argv = [XORG, "-config", str(conf), "-noreset", "-logfile", str(log), f":{display}"]
        with open(work / "xorg.out", "ab") as out:
            proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            await asyncio.to_thread(_wait_port, proc, port, XSPICE_DEADLINE, log)
            break
        except XspiceExited:
            await asyncio.to_thread(stop_xorg, proc, display)
            if attempt == 2:
                raise
        except BaseException:
            await asyncio.to_thread(stop_xorg, proc, display)
            raise
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + XSPICE_DEADLINE
        while not sock.exists():  # the driver makes it after the TCP port listens
            assert proc.poll() is None and loop.time() < deadline, (work / "xorg.out").read_text(errors="replace")
            await asyncio.sleep(0.02)
        yield XspiceAgentServer(port=port, display=display, socket_path=sock, work=work)
    finally:
        await asyncio.to_thread(stop_xorg, proc, display)


@contextlib.asynccontextmanager
async def xspice_agent_client(tmp_path: Path) -> AsyncIterator[tuple[GiClient, AgentEnv]]:
    """Xspice + the real agent on its display + a ``--control`` spice-gtk client, the agent announced."""
    async with (
        xspice_with_agent(tmp_path) as server,
        agent_env(server.socket_path, display=server.display, work=tmp_path / "agent") as agent,
        controlled_client("--port", str(server.port), "--expect-channels", "4", timeout=120) as client,
    ):
        try:
            await check_agent_announced(client, agent)
            yield client, agent
        except BaseException:
            print(agent.diagnostics())
            raise


# --------------------------------------------------------------------------- tests


async def test_xspice_agent_clipboard_file_copy_and_mouse(tmp_path: Path) -> None:
    (tmp_path / "agent").mkdir()
    src = tmp_path / "hello-agent.txt"
    src.write_bytes(b"hello from the client\n" * 100)
    async with xspice_agent_client(tmp_path) as (client, agent):
        await check_clipboard_guest_to_client(client, agent, "hello-from-guest")
        await check_clipboard_client_to_guest(client, agent, "text-from-client")
        await check_file_copy(client, agent, src)
        await check_agent_mouse(client, agent, 100, 200)
    assert client.proc.returncode == 0, format_events(client.events, client.stderr)


async def test_xspice_agent_monitors_config(tmp_path: Path) -> None:
    (tmp_path / "agent").mkdir()
    async with xspice_agent_client(tmp_path) as (client, agent):
        outcome = await check_monitors_config(client, agent, (800, 600))
    # spice-gtk 0.42 appends VDAgentMonitorMM, which vdagentd 0.22.1 refuses by size: libspice-server
    # (no client_monitors_config in Xspice's QXL) forwards the message to the agent unchanged (spiceserver
    # drops the sizes and the screen resizes: test_agent_spicegtk)
    assert outcome in ("resized", "rejected"), outcome
    print("monitors config:", outcome)


async def test_xspice_agent_restart(tmp_path: Path) -> None:
    """Xspice (spiceqxl_vdagent.c) drops the agent from inside libspice's read callback on EOF
    (``spice_server_remove_interface``) and adds it back on the next accept. Now and then (3 of about
    13 immediate restarts here, December 2026) nothing the new agent writes reaches the client: its
    ANNOUNCE reply and later clipboard grabs are lost while the client's messages still reach it. The
    reference therefore gets three attempts; spiceserver is held to one. Xspice also notices the EOF late
    at times (up to 9 s here): :meth:`AgentEnv.kill_daemon` waits for it."""
    (tmp_path / "agent").mkdir()
    async with xspice_agent_client(tmp_path) as (client, agent):
        attempts = await check_agent_restart(client, agent, attempts=3)
        # the new agent works both ways
        await check_clipboard_guest_to_client(client, agent, "after-restart")
        await check_clipboard_client_to_guest(client, agent, "to-the-new-agent")
    print("agent restart attempts:", attempts)
    assert client.proc.returncode == 0, format_events(client.events, client.stderr)


# --------------------------------------------------------------------------- the environment alone

_CHUNK = struct.Struct("<II")  # VDIChunkHeader: port, size
_MSG = struct.Struct("<IIQI")  # VDAgentMessage: protocol, type, opaque, size
VDP_CLIENT_PORT, VDP_SERVER_PORT = 1, 2
MSG_MOUSE_STATE, MSG_MONITORS_CONFIG, MSG_REPLY, MSG_ANNOUNCE = 1, 2, 3, 6


class FakeCharDev:
    """The server side of the char device with no SPICE code: whole messages in single chunks."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[tuple[int, int, bytes]] = asyncio.Queue()
        self.writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.connected.set()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                port, size = _CHUNK.unpack(await reader.readexactly(_CHUNK.size))
                chunk = await reader.readexactly(size)
                _proto, mtype, _opaque, msize = _MSG.unpack_from(chunk)
                await self.messages.put((port, mtype, chunk[_MSG.size : _MSG.size + msize]))
        writer.close()  # EOF: the agent is gone (a server closes its side, as libspice does)

    def send(self, port: int, mtype: int, data: bytes) -> None:
        assert self.writer is not None
        msg = _MSG.pack(1, mtype, 0, len(data)) + data
        self.writer.write(_CHUNK.pack(port, len(msg)) + msg)

    async def expect(self, mtype: int, timeout: float = 20.0) -> tuple[int, bytes]:
        while True:
            port, got, data = await asyncio.wait_for(self.messages.get(), timeout)
            if got == mtype:
                return port, data


async def test_agent_env_on_xvfb_with_a_fake_chardev(tmp_path: Path) -> None:
    """:func:`agent_env` on its own Xvfb against a bare listening socket (research section B, VERIFIED run 1):
    the agent announces itself, a MOUSE_STATE on the server port becomes input_event records, and a
    MONITORS_CONFIG without spice-gtk's physical sizes resizes the screen and is acknowledged."""
    reason = agent_env_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    dev = FakeCharDev()
    sock = tmp_path / "virtio.sock"
    server = await asyncio.start_unix_server(dev.handle, str(sock))
    (tmp_path / "agent").mkdir()
    try:
        async with agent_env(sock, work=tmp_path / "agent") as agent:
            port, data = await dev.expect(MSG_ANNOUNCE)
            request, caps0 = struct.unpack_from("<II", data)
            assert port == VDP_CLIENT_PORT and request == 1, data
            assert {b for b in range(32) if caps0 >> b & 1} >= set(AGENT_CAPS), hex(caps0)

            dev.send(VDP_SERVER_PORT, MSG_MOUSE_STATE, struct.pack("<IIIB", 100, 200, 0, 0))
            await agent.wait_input_events(lambda evs: (100, 200) in agent.positions(evs))

            assert await agent.screen_size() == (1024, 768)
            mon = struct.pack("<II", 1, 0) + struct.pack("<IIIii", 600, 800, 32, 0, 0)  # height, width, depth, x, y
            dev.send(VDP_CLIENT_PORT, MSG_MONITORS_CONFIG, mon)
            port, reply = await dev.expect(MSG_REPLY)
            assert struct.unpack("<II", reply) == (MSG_MONITORS_CONFIG, 1), reply  # VD_AGENT_SUCCESS
            assert await agent.wait_screen_size((800, 600)) == (800, 600), agent.diagnostics()

            await agent.restart_daemon()  # a new connection and a fresh ANNOUNCE
            port, data = await dev.expect(MSG_ANNOUNCE)
            assert struct.unpack_from("<I", data)[0] == 1
    finally:
        server.close()
        await server.wait_closed()
