"""The char-device side of the QEMU chardev bridge: :class:`SocketCharDevice` over a socketpair
(what ``Chardev.Register(h)`` hands QEMU the other end of), the routing by name, and ``FEOpened``
/ ``SendBreak`` with a fake bus (no D-Bus)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from spiceserver.channels.chardev import SocketCharDevice

pytest.importorskip("dbus_fast")


class Listener:
    def __init__(self) -> None:
        self.data = bytearray()
        self.opened: list[bool] = []
        self.events: list[int] = []

    def device_data(self, data: bytes) -> None:
        self.data += data

    def device_opened(self, opened: bool) -> None:
        self.opened.append(opened)

    def device_event(self, event: int) -> None:
        self.events.append(event)

    def device_writable(self) -> None:
        pass


async def until(pred: Any, timeout: float = 5.0) -> None:
    async def loop() -> None:
        while not pred():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(loop(), timeout)


async def test_socket_char_device_both_ways_and_peer_close() -> None:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()
    events: list[int] = []
    dev = SocketCharDevice(ours, on_event=events.append, label="test")
    lst = Listener()
    try:
        dev.attach(lst, loop)
        await until(lambda: dev.opened)
        assert lst.opened == [True]
        assert dev.write(b"to qemu")
        assert await asyncio.wait_for(loop.sock_recv(theirs, 100), 5) == b"to qemu"
        await loop.sock_sendall(theirs, b"from qemu")
        await until(lambda: bytes(lst.data) == b"from qemu")
        dev.send_event(2)
        assert events == [2]
        theirs.close()
        await until(lambda: not dev.opened)
        assert lst.opened == [True, False]
    finally:
        await dev.close()
        theirs.close()


async def test_socket_char_device_front_end_state() -> None:
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    dev = SocketCharDevice(ours, opened=False)
    lst = Listener()
    try:
        dev.attach(lst, loop)
        await asyncio.sleep(0.05)  # connected, but the front end is closed: stays closed
        assert not dev.opened and lst.opened == []
        assert dev.write(b"dropped")  # writes to a closed device are dropped
        dev.set_open(True)
        await until(lambda: lst.opened == [True])
        dev.write(b"kept")
        theirs.setblocking(False)
        assert await asyncio.wait_for(loop.sock_recv(theirs, 100), 5) == b"kept"
        dev.set_open(False)
        await until(lambda: lst.opened == [True, False])
    finally:
        await dev.close()
        theirs.close()


async def test_closing_an_unattached_device_closes_its_socket() -> None:
    ours, theirs = socket.socketpair()
    dev = SocketCharDevice(ours)
    await dev.close()
    assert ours.fileno() == -1
    theirs.close()


def test_route_by_name() -> None:
    from spiceserver.qemu.chardev import route

    assert route("org.spice-space.vdagent.0") == "agent"
    assert route("org.qemu.usbredir") == "usbredir"
    assert route("org.qemu.monitor.hmp.0") == "port"
    assert route("org.qemu.console.serial.0") == "port"
    assert route("anything") == "port"


async def test_fe_opened_changes_and_breaks() -> None:
    from dbus_fast import Message, MessageType
    from dbus_fast.signature import Variant

    from spiceserver.qemu import chardev as qc

    calls: list[Message] = []

    class FakeBus:
        async def call(self, msg: Message) -> Message:
            calls.append(msg)
            return Message(message_type=MessageType.METHOD_RETURN, reply_serial=1)

    ours, theirs = socket.socketpair()
    dev = SocketCharDevice(ours, opened=False)
    bridged = qc.QemuChardevs(FakeBus())  # type: ignore[arg-type]
    bridged.chardevs.append(qc.QemuChardev("/org/qemu/Display1/Chardev_vda", qc.AGENT_NAME, "agent", dev))
    try:

        def changed(path: str, props: dict[str, Any]) -> Message:
            return Message(
                message_type=MessageType.SIGNAL,
                path=path,
                interface="org.freedesktop.DBus.Properties",
                member="PropertiesChanged",
                signature="sa{sv}as",
                body=[qc.CHARDEV_IFACE, props, []],
            )

        dev.attach(Listener(), asyncio.get_running_loop())
        bridged._on_message(changed("/org/qemu/Display1/Chardev_other", {"FEOpened": Variant("b", True)}))
        bridged._on_message(changed("/org/qemu/Display1/Chardev_vda", {"Echo": Variant("b", True)}))
        await asyncio.sleep(0.05)
        assert not dev.opened
        bridged._on_message(changed("/org/qemu/Display1/Chardev_vda", {"FEOpened": Variant("b", True)}))
        await until(lambda: dev.opened)
        bridged._send_break("/org/qemu/Display1/Chardev_vda", 2)
        bridged._send_break("/org/qemu/Display1/Chardev_vda", 0)  # OPENED: nothing to send
        await until(lambda: len(calls) == 1)
        assert (calls[0].member, calls[0].path) == ("SendBreak", "/org/qemu/Display1/Chardev_vda")
    finally:
        await bridged.close()
        theirs.close()


async def test_malformed_signals_are_dropped() -> None:
    from dbus_fast import Message, MessageType
    from dbus_fast.signature import Variant

    from spiceserver.qemu import chardev as qc

    bridged = qc.QemuChardevs(object(), server=None)  # type: ignore[arg-type]
    props = "org.freedesktop.DBus.Properties"
    objects = "org.freedesktop.DBus.ObjectManager"
    for iface, member, body in [
        (props, "PropertiesChanged", []),
        (props, "PropertiesChanged", [qc.CHARDEV_IFACE, "not a dict", []]),
        (props, "PropertiesChanged", [qc.CHARDEV_IFACE, {"FEOpened": object()}, []]),
        (objects, "InterfacesAdded", []),
        (objects, "InterfacesAdded", ["/org/qemu/Display1/Chardev_x", None]),
        (objects, "InterfacesAdded", ["/org/qemu/Display1/Chardev_x", {qc.CHARDEV_IFACE: {"Name": Variant("s", "n")}}]),
        (objects, "InterfacesRemoved", ["/org/qemu/Display1/Chardev_x", 5]),
    ]:
        msg = Message(message_type=MessageType.SIGNAL, path="/org/qemu/Display1", interface=iface, member=member)
        msg.body = body
        bridged._on_message(msg)  # logged and dropped (server None: nothing attached)
    assert bridged.chardevs == []
    await bridged.close()
