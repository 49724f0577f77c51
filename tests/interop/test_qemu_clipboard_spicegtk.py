"""The QEMU clipboard bridge (:mod:`spiceserver.qemu.clipboard`) with spice-gtk and QEMU 7.2.

Against real QEMU (paused, no guest, private bus): our ``Register`` makes QEMU build a proxy of our
``/org/qemu/Display1/Clipboard`` and call our ``Register`` back; spice-gtk's grab reaches QEMU as a
``Grab`` QEMU accepts (its ``dbus_clipboard_grab*`` trace events, ``-D`` log), and asking QEMU for
the selection we own is answered "Empty clipboard". The guest's side of QEMU's clipboard needs
spice-vdagent in a guest (``-chardev qemu-vdagent,clipboard=on``); that end-to-end test is for
later.

Both directions with spice-gtk run against a scripted QEMU: a dbus-fast service that owns
``org.qemu`` on a private bus and plays ``ui/dbus-clipboard.c``'s part (it calls our object back).
"""

# no ``from __future__ import annotations``: dbus-fast reads FakeQemuClipboard's annotations
import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytest
from dbus_fast import DBusError
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method

from spiceserver import ServerConfig, SpiceServer
from spiceserver.qemu.bus import call, connect_bus
from spiceserver.qemu.clipboard import CLIPBOARD_IFACE, CLIPBOARD_PATH, MIME_TEXT, QemuClipboard, attach_clipboard
from spiceserver.qemu.devices import wait_for_qemu
from tests.interop.harness import GiClient, controlled_client, format_events
from tests.support.qemu import require_qemu, start_dbus_daemon, start_qemu

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("gi_client")]

CB, TEXT = 0, 1


@contextlib.asynccontextmanager
async def spice_client(bus: MessageBus) -> AsyncIterator[tuple[QemuClipboard, GiClient]]:
    """A server with the clipboard bridged on ``bus`` (before the client comes: the host agent
    announces its clipboard caps at the client's connection), and spice-gtk connected to it."""
    server = SpiceServer(ServerConfig(port=0, disable_ticketing=True, net_test=False))
    fb = server.add_framebuffer_display(320, 200)
    fb.update(np.full((200, 320), 0x336699, np.uint32))
    await server.start()
    clip: QemuClipboard | None = None
    try:
        clip = await attach_clipboard(server, bus)
        async with controlled_client("--port", str(server.port_of()), "--expect-channels", "4", timeout=60) as client:
            await client.expect(lambda ev: ev["event"] == "agent" and ev["connected"] and ev["caps0"], timeout=15)
            try:
                yield clip, client
            except BaseException:
                print(format_events(client.events, client.stderr))
                raise
    finally:
        if clip is not None:
            await clip.close()
        await server.close()


def since(client: GiClient, name: str, start: int) -> Any:
    def pick(ev: dict[str, Any]) -> bool:
        return ev.get("event") == name and any(e is ev for e in client.events[start:])

    return pick


async def wait_for(pred: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_real_qemu_register_and_a_client_grab(tmp_path: Path) -> None:
    require_qemu()
    log = tmp_path / "qemu-trace.log"
    async with start_qemu(tmp_path, "-D", str(log), "-trace", "dbus_clipboard*") as vm:
        bus = await vm.bus()
        await wait_for_qemu(bus)  # QEMU takes org.qemu after QMP is up
        async with spice_client(bus) as (clip, client):
            await clip.wait_registered(10)  # QEMU reset the serials: it called our Register back
            await wait_for(lambda: "dbus_clipboard_register" in log.read_text(), 10, "QEMU's register trace")
            await client.action({"op": "clipboard_grab", "selection": CB, "types": [TEXT], "text": "from spice-gtk"})
            await wait_for(lambda: clip.serials[CB] == 1, 10, "our Grab on QEMU")
            # QEMU took the grab (no dbus_clipboard_grab_failed) and now says we own it: a
            # request from us for our own selection is "Empty clipboard"
            with pytest.raises(DBusError, match="Empty clipboard"):
                await call(bus, CLIPBOARD_PATH, CLIPBOARD_IFACE, "Request", "uas", [CB, [MIME_TEXT]])
            assert "grab_failed" not in log.read_text()
            # one clipboard peer per VM: a second connection is refused
            other = await vm.bus()
            with pytest.raises(DBusError, match="already registered"):
                await call(other, CLIPBOARD_PATH, CLIPBOARD_IFACE, "Register")


class FakeQemuClipboard(ServiceInterface):
    """QEMU's ``org.qemu.Display1.Clipboard`` as ``ui/dbus-clipboard.c`` plays it, scripted."""

    def __init__(self) -> None:
        super().__init__(CLIPBOARD_IFACE)
        self.registered = 0
        self.grabs: asyncio.Queue[tuple[int, int, list[str]]] = asyncio.Queue()
        self.releases: asyncio.Queue[int] = asyncio.Queue()
        self.text: dict[int, bytes] = {}

    @dbus_method()
    def Register(self) -> None:
        self.registered += 1

    @dbus_method()
    def Unregister(self) -> None:
        self.registered = 0

    @dbus_method()
    def Grab(self, selection: DBusUInt32, serial: DBusUInt32, mimes: Annotated[list[str], DBusSignature("as")]) -> None:
        self.grabs.put_nowait((selection, serial, list(mimes)))

    @dbus_method()
    def Release(self, selection: DBusUInt32) -> None:
        self.releases.put_nowait(selection)

    @dbus_method()
    def Request(
        self, selection: DBusUInt32, mimes: Annotated[list[str], DBusSignature("as")]
    ) -> Annotated[list[Any], DBusSignature("say")]:
        if selection not in self.text or MIME_TEXT not in mimes:
            raise DBusError("org.qemu.Display1.Error.Failed", "Empty clipboard")
        return [MIME_TEXT, self.text[selection]]


async def test_both_ways_through_a_scripted_qemu(tmp_path: Path) -> None:
    require_qemu()
    async with start_dbus_daemon(tmp_path) as address:
        qemu_bus = await connect_bus(address)
        fake = FakeQemuClipboard()
        qemu_bus.export(CLIPBOARD_PATH, fake)
        await qemu_bus.request_name("org.qemu")
        bus = await connect_bus(address)
        try:
            async with spice_client(bus) as (clip, client):
                assert fake.registered == 1
                peer = bus.unique_name

                async def qemu_calls(member: str, signature: str, body: list[Any]) -> list[Any]:
                    from dbus_fast import Message, MessageType

                    msg = Message(destination=peer, path=CLIPBOARD_PATH, interface=CLIPBOARD_IFACE,
                                  member=member, signature=signature, body=body)  # fmt: skip
                    reply = await qemu_bus.call(msg)
                    assert reply is not None
                    if reply.message_type == MessageType.ERROR:
                        raise DBusError(reply.error_name or "", str(reply.body))
                    return list(reply.body)

                # QEMU resets the serials (it does after a Register), then the guest grabs: the
                # client hears a grab, pastes, and gets the guest's text through QEMU's Request
                await qemu_calls("Register", "", [])
                fake.text[CB] = "from the guest ✓".encode()
                start = len(client.events)
                await qemu_calls("Grab", "uuas", [CB, 1, [MIME_TEXT, "application/x-unknown"]])
                grab = await client.expect(since(client, "clipboard-grab", start), 10)
                assert grab["selection"] == CB and grab["types"] == [TEXT], grab
                start = len(client.events)
                await client.action({"op": "clipboard_request", "selection": CB, "type": TEXT})
                data = await client.expect(since(client, "clipboard-data", start), 10)
                assert data.get("text") == "from the guest ✓", data
                # a stale grab (serial below QEMU's last) changes nothing
                await qemu_calls("Grab", "uuas", [CB, 0, ["image/png"]])
                assert clip.serials[CB] == 1
                # the guest releases
                start = len(client.events)
                await qemu_calls("Release", "u", [CB])
                rel = await client.expect(since(client, "clipboard-release", start), 10)
                assert rel["selection"] == CB

                # the client grabs: QEMU hears Grab with the next serial and QEMU's MIME type,
                # then the guest pastes through our Request and gets the client's text
                await client.action({"op": "clipboard_grab", "selection": CB, "types": [TEXT], "text": "from spice-gtk ✓"})
                sel, serial, mimes = await asyncio.wait_for(fake.grabs.get(), 10)
                assert (sel, serial, mimes) == (CB, 2, [MIME_TEXT])
                reply_mime, payload = await qemu_calls("Request", "uas", [CB, ["image/png", MIME_TEXT]])
                assert reply_mime == MIME_TEXT and bytes(payload).decode() == "from spice-gtk ✓"
                with pytest.raises(DBusError, match="Unhandled MIME"):
                    await qemu_calls("Request", "uas", [CB, ["image/png"]])
                with pytest.raises(DBusError, match="Empty clipboard"):
                    await qemu_calls("Request", "uas", [1, [MIME_TEXT]])
                with pytest.raises(DBusError, match="Invalid clipboard selection"):
                    await qemu_calls("Request", "uas", [7, [MIME_TEXT]])
                # the client releases: QEMU hears Release
                await client.action({"op": "clipboard_release", "selection": CB})
                assert await asyncio.wait_for(fake.releases.get(), 10) == CB
        finally:
            bus.disconnect()
            qemu_bus.disconnect()
