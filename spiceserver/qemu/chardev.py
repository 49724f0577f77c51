"""QEMU's D-Bus char devices as SPICE port, usbredir and agent channels.

QEMU side (``-chardev dbus,id=ID,name=NAME``; research §5): each D-Bus chardev is the object
``/org/qemu/Display1/Chardev_ID`` with ``org.qemu.Display1.Chardev``: ``Register(h stream)`` makes
the fd the chardev's backend (a socket chardev in server mode with that one client: QEMU
``ui/dbus-chardev.c`` ``dbus_chr_register`` -> ``qemu_chr_add_client``; a new Register replaces
the old handler), ``SendBreak()`` raises a BREAK toward the guest's device, and the read-only
properties ``Name`` (the kind of stream, see the reserved names in ``ui/dbus-display1.xml``),
``FEOpened`` (the guest-facing device is open; changes are announced with ``PropertiesChanged``),
``Echo`` and ``Owner``. The default serial port of a ``-display dbus`` VM is such a chardev
(``org.qemu.console.serial.0``).

Routing by ``Name`` (:func:`route`):

=================================== ============================================================
``org.spice-space.vdagent.0``       the guest agent: :meth:`ServerDevices.add_agent`
``org.qemu.usbredir``               a usbredir channel passed through to QEMU's ``usb-redir``:
                                    :meth:`ServerDevices.add_usbredir_passthrough`
anything else (serial consoles,     a named port: :meth:`ServerDevices.add_port` with that name
``org.qemu.monitor.hmp.0``, ...)
=================================== ============================================================

Our end of each socketpair is a :class:`~spiceserver.channels.chardev.SocketCharDevice`, open
while the socket is connected and ``FEOpened`` is true; a client's ``PORT_EVENT`` BREAK becomes
``SendBreak``. QEMU has no way to send a BREAK back over D-Bus. libspice counterpart: QEMU's
``chardev/spice.c`` (the spicevmc/spiceport chardevs), here on the other side of the fd.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.signature import Variant

from ..channels.chardev import SocketCharDevice
from ..proto.enums import PortEvent
from .bus import DEST, ROOT, P2PBus, call, daemon_call

if TYPE_CHECKING:
    from ..server_devices import ServerDevices

__all__ = ["AGENT_NAME", "CHARDEV_IFACE", "USBREDIR_NAME", "QemuChardev", "QemuChardevs", "attach_chardevs", "list_chardevs", "route"]

log = logging.getLogger("spiceserver.qemu")

CHARDEV_IFACE = "org.qemu.Display1.Chardev"
#: the chardev name routed to the guest agent (spice-vdagent's virtio port)
AGENT_NAME = "org.spice-space.vdagent.0"
#: the chardev name routed to a usbredir channel (QEMU ``-device usb-redir,chardev=...``)
USBREDIR_NAME = "org.qemu.usbredir"
_PROPS = "org.freedesktop.DBus.Properties"
_OBJECTS = "org.freedesktop.DBus.ObjectManager"

Route = Literal["agent", "usbredir", "port"]


def route(name: str) -> Route:
    """Where a chardev of this ``Name`` goes (see the module table)."""
    if name == AGENT_NAME:
        return "agent"
    if name == USBREDIR_NAME:
        return "usbredir"
    return "port"


@dataclass
class QemuChardev:
    """One bridged chardev.

    Attributes:
        path: QEMU's object path (``/org/qemu/Display1/Chardev_ID``).
        name: its ``Name``.
        kind: :func:`route`'s answer.
        device: our end, as the server's char device.
        channel: what the server made of it (GuestAgent, UsbRedirPassthroughChannel, PortChannel).
    """

    path: str
    name: str
    kind: Route
    device: SocketCharDevice
    channel: Any = None


@dataclass
class QemuChardevs:
    """What :func:`attach_chardevs` set up; :meth:`close` ends it.

    Chardevs QEMU adds later (QMP ``chardev-add`` with a ``dbus`` backend: ``InterfacesAdded`` on
    its ``ObjectManager``) are attached as they come; one QEMU removes (``InterfacesRemoved``) is
    closed and dropped from :attr:`chardevs` (its channel stays, with a closed device).
    """

    bus: MessageBus
    chardevs: list[QemuChardev] = field(default_factory=list)
    server: Any = None
    wanted: set[str] | None = None
    _handler: Any = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def by_name(self, name: str) -> QemuChardev:
        """The first bridged chardev called ``name``.

        Raises:
            KeyError: none is.
        """
        for c in self.chardevs:
            if c.name == name:
                return c
        raise KeyError(name)

    def _on_message(self, msg: Message) -> None:
        """``PropertiesChanged`` of a chardev (follow ``FEOpened``), chardevs added or removed."""
        if msg.message_type != MessageType.SIGNAL:
            return
        if msg.interface == _OBJECTS and msg.member in ("InterfacesAdded", "InterfacesRemoved"):
            self._on_objects(msg)
            return
        if msg.member != "PropertiesChanged" or msg.interface != _PROPS:
            return
        try:
            iface, changed = msg.body[0], msg.body[1]
            if iface != CHARDEV_IFACE or not isinstance(changed, dict) or "FEOpened" not in changed:
                return
            value = changed["FEOpened"]
            opened = bool(value.value if isinstance(value, Variant) else value)
        except (IndexError, TypeError, AttributeError):
            log.warning("qemu chardev: malformed PropertiesChanged from %s dropped", msg.path)
            return
        for c in self.chardevs:
            if c.path == msg.path:
                log.info("qemu chardev %s: front end %s", c.name, "opened" if opened else "closed")
                c.device.set_open(opened)

    def _on_objects(self, msg: Message) -> None:
        try:
            path = str(msg.body[0])
            if msg.member == "InterfacesAdded":
                ifaces = msg.body[1]
                if not isinstance(ifaces, dict) or not isinstance(ifaces.get(CHARDEV_IFACE), dict):
                    return
                props = {k: _unwrap(v) for k, v in ifaces[CHARDEV_IFACE].items()}
            elif CHARDEV_IFACE not in msg.body[1]:
                return
        except (IndexError, TypeError, AttributeError):
            log.warning("qemu chardev: malformed %s dropped", msg.member)
            return
        if msg.member == "InterfacesRemoved":
            for c in [c for c in self.chardevs if c.path == path]:
                log.info("qemu chardev %s (%s) removed by QEMU", c.name, path)
                self.chardevs.remove(c)
                self._spawn(c.device.close())
            return
        name = str(props.get("Name", ""))
        if self.server is None or (self.wanted is not None and name not in self.wanted):
            return
        if any(c.path == path for c in self.chardevs):
            return
        self._spawn(self._attach_later(path, name, bool(props.get("FEOpened", False))))

    async def _attach_later(self, path: str, name: str, fe_opened: bool) -> None:
        try:
            await _attach_one(self.server, self.bus, self, path, name, fe_opened)
        except Exception as exc:
            log.warning("qemu chardev %s (%s): not attached: %s", name, path, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send_break(self, path: str, event: int) -> None:
        if event != PortEvent.BREAK:
            return  # OPENED/CLOSED from the client have no D-Bus counterpart

        async def send() -> None:
            try:
                await call(self.bus, path, CHARDEV_IFACE, "SendBreak")
            except Exception as exc:
                log.warning("qemu chardev %s: SendBreak failed: %s", path, exc)

        self._spawn(send())

    async def close(self) -> None:
        """Stop following QEMU and close our ends (QEMU sees its backend's client go)."""
        if self._handler is not None:
            with contextlib.suppress(Exception):
                self.bus.remove_message_handler(self._handler)
            self._handler = None
        self.server = None  # no more attaching
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in self.chardevs:
            await c.device.close()


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, Variant) else value


async def list_chardevs(bus: MessageBus) -> dict[str, dict[str, Any]]:
    """QEMU's chardev objects: path -> their ``org.qemu.Display1.Chardev`` properties (unwrapped),
    from the ``ObjectManager`` on ``/org/qemu/Display1``."""
    (objects,) = await call(bus, ROOT, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
    out: dict[str, dict[str, Any]] = {}
    if not isinstance(objects, dict):
        return out
    for path, ifaces in objects.items():
        if isinstance(ifaces, dict) and CHARDEV_IFACE in ifaces and isinstance(ifaces[CHARDEV_IFACE], dict):
            out[str(path)] = {k: _unwrap(v) for k, v in ifaces[CHARDEV_IFACE].items()}
    return out


async def attach_chardevs(
    server: ServerDevices, bus: MessageBus, *, names: Iterable[str] | None = None
) -> QemuChardevs:
    """Register on every QEMU D-Bus chardev (or those called one of ``names``) and hand each to
    the server by its name (:func:`route`). Call it on the server's event loop.

    Args:
        server: the SPICE server.
        bus: a bus connection to QEMU opened with ``negotiate_unix_fd=True``.
        names: only these chardev names (None: all).

    Returns:
        The handle: :attr:`QemuChardevs.chardevs`, :meth:`QemuChardevs.close`.

    Raises:
        dbus_fast.DBusError: QEMU refused a call.
    """
    wanted = None if names is None else set(names)
    result = QemuChardevs(bus, server=server, wanted=wanted)
    if not isinstance(bus, P2PBus):
        for rule in (
            f"type='signal',sender='{DEST}',interface='{_PROPS}',member='PropertiesChanged',path_namespace='{ROOT}'",
            f"type='signal',sender='{DEST}',interface='{_OBJECTS}',path='{ROOT}'",
        ):
            await daemon_call(bus, "AddMatch", "s", [rule])
    result._handler = result._on_message
    bus.add_message_handler(result._on_message)
    try:
        for path, props in sorted((await list_chardevs(bus)).items()):
            name = str(props.get("Name", ""))
            if wanted is not None and name not in wanted:
                continue
            await _attach_one(server, bus, result, path, name, bool(props.get("FEOpened", False)))
    except BaseException:
        await result.close()
        raise
    return result


async def _attach_one(
    server: ServerDevices, bus: MessageBus, result: QemuChardevs, path: str, name: str, fe_opened: bool
) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    device = SocketCharDevice(
        ours, opened=fe_opened, on_event=lambda ev: result._send_break(path, ev), label=f"{name} ({path})"
    )
    try:
        await call(bus, path, CHARDEV_IFACE, "Register", "h", [0], [theirs.fileno()])
    except BaseException:
        await device.close()
        raise
    finally:
        theirs.close()
    kind = route(name)
    entry = QemuChardev(path, name, kind, device)
    result.chardevs.append(entry)
    if kind == "agent":
        entry.channel = server.add_agent(device)
    elif kind == "usbredir":
        entry.channel = server.add_usbredir_passthrough(device)
    else:
        entry.channel = server.add_port(name, device)
    log.info("qemu chardev %s (%s) -> %s%s", name, path, kind, "" if fe_opened else " (front end closed)")
