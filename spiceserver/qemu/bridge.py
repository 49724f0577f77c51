"""Serve every console of a QEMU VM (``-display dbus``) through a SPICE server (libspice
counterpart: QEMU's own ui/spice-core.c + ui/spice-display.c, the other way round).

:func:`attach` reads ``org.qemu.Display1.VM.ConsoleIDs`` and, per console, adds a framebuffer
display (display *i* is the *i*-th console), registers a listener on it (see :mod:`.display`) and
forwards input (see :mod:`.input`). QEMU's ``Mouse.IsAbsolute`` decides the SPICE mouse mode: while
it is true the server has a tablet (client mouse mode possible), otherwise not. The keyboard's
``Modifiers`` become the server's keyboard LEDs. Monitor layouts a client asks for (its agent's
``MONITORS_CONFIG``, answered by the host agent) become ``Console.SetUIInfo`` calls, which
virtio-vga heads honour and std VGA refuses (logged once).

Property changes arrive as ``PropertiesChanged`` signals (both properties emit them in QEMU 7.2,
ui/dbus-console.c) and are also polled every :data:`POLL_INTERVAL` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.signature import Variant

from ..channels.host_monitors import add_monitors_config_handler
from ..proto.vdagent_messages import MonitorConfig
from ..server_devices import ServerDevices
from .bus import DEST, ROOT, P2PBus, call, get_property, p2p_listener
from .display import LISTENER_PATH, ConsoleDisplay, Listener
from .input import KEYBOARD_INTERFACE, MOUSE_INTERFACE, ButtonState, QemuKeyboard, QemuMouse, QemuTablet, _Sender

__all__ = ["CONSOLE_INTERFACE", "POLL_INTERVAL", "VM_INTERFACE", "Console", "QemuBridge", "attach", "console_path"]

log = logging.getLogger(__name__)

VM_INTERFACE = "org.qemu.Display1.VM"
CONSOLE_INTERFACE = "org.qemu.Display1.Console"
POLL_INTERVAL = 0.5
DEFAULT_SIZE = (640, 480)
MAX_CONSOLES = 16


def console_path(console_id: int) -> str:
    """The object path of a console (ui/dbus-console.c: ``/org/qemu/Display1/Console_%d``)."""
    return f"{ROOT}/Console_{console_id}"


class Console:
    """One served console: its id, path, :class:`ConsoleDisplay` and listener connection."""

    def __init__(self, console_id: int, display: ConsoleDisplay) -> None:
        self.id = console_id
        self.path = console_path(console_id)
        self.display = display
        self.listener_bus: MessageBus | None = None
        self.seen: tuple[tuple[int, int], int] | None = None
        """The last Width/Height read and the display's Scanout count then."""


class QemuBridge:
    """A QEMU VM served by a SPICE server; made by :func:`attach`.

    Attributes:
        consoles: the served consoles, in display order.
        absolute: QEMU's last ``IsAbsolute`` (the tablet is installed while it is true; None before the first read).
    """

    def __init__(self, server: ServerDevices, bus: MessageBus) -> None:
        self.server = server
        self.bus = bus
        self.consoles: list[Console] = []
        self.absolute: bool | None = None
        self.keyboard = QemuKeyboard(bus, console_path(0))
        sender = _Sender(bus)
        self._buttons = ButtonState(sender)
        self.mouse = QemuMouse(bus, console_path(0), self._buttons)
        self.tablet = QemuTablet(bus, self._console_path_of_display, self._buttons, self._console_size_of_display)
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tasks: list[asyncio.Future[Any]] = []
        self._cleanups: list[Callable[[], None]] = []
        self._ui_info_refused: set[int] = set()

    def _console_size_of_display(self, display_id: int) -> tuple[int, int] | None:
        if 0 <= display_id < len(self.consoles):
            h, w = self.consoles[display_id].display.frame.shape
            return w, h
        return None

    def _console_path_of_display(self, display_id: int) -> str | None:
        if 0 <= display_id < len(self.consoles):
            return self.consoles[display_id].path
        return None

    # --- setup -------------------------------------------------------------------------------------

    async def _start(self, monitors_config: bool) -> None:
        ids = await get_property(self.bus, f"{ROOT}/VM", VM_INTERFACE, "ConsoleIDs")
        if not isinstance(ids, list) or not ids:
            raise RuntimeError(f"QEMU has no consoles (ConsoleIDs {ids!r})")
        for console_id in [int(i) for i in ids][:MAX_CONSOLES]:
            kind = await get_property(self.bus, console_path(console_id), CONSOLE_INTERFACE, "Type")
            if kind != "Graphic":  # a text console (vc) has no keyboard/mouse of its own here
                log.info("console %d (%s) skipped", console_id, kind)
                continue
            await self._add_console(console_id)
        if not self.consoles:
            raise RuntimeError("QEMU has no graphic console")
        self.keyboard.path = self.mouse.path = self.consoles[0].path
        self.server.add_keyboard(self.keyboard)
        self.server.add_mouse(self.mouse)
        if not isinstance(self.bus, P2PBus):
            rule = f"type='signal',sender='{DEST}',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged'"
            await call(self.bus, "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s", [rule], destination="org.freedesktop.DBus")
        self.bus.add_message_handler(self._on_message)
        self._cleanups.append(lambda: self.bus.remove_message_handler(self._on_message))
        try:
            await self._poll_once()
        except Exception as exc:
            log.warning("reading QEMU's input state failed: %r", exc)
        self._tasks.append(asyncio.ensure_future(self._poll()))
        self._tasks.append(asyncio.ensure_future(self._watch(self.bus)))
        if monitors_config:
            self._cleanups.append(add_monitors_config_handler(self.server.host_agent, self._on_monitors))

    async def _add_console(self, console_id: int) -> None:
        path = console_path(console_id)
        width, height = DEFAULT_SIZE
        with contextlib.suppress(Exception):
            w = int(await get_property(self.bus, path, CONSOLE_INTERFACE, "Width"))
            h = int(await get_property(self.bus, path, CONSOLE_INTERFACE, "Height"))
            if 16 <= w <= 8192 and 16 <= h <= 8192:
                width, height = w, h  # a guess only: the Scanout size wins (it may differ)
        fb = self.server.add_framebuffer_display(width, height)
        display = ConsoleDisplay(fb, console_id)

        async def register(fd: int) -> None:
            await call(self.bus, path, CONSOLE_INTERFACE, "RegisterListener", "h", [0], [fd])

        console = Console(console_id, display)
        display.size_probe = lambda: self._probe_size(console)
        console.listener_bus = await p2p_listener(self.bus, register, LISTENER_PATH, Listener(display))
        self.consoles.append(console)
        self._tasks.append(asyncio.ensure_future(self._watch(console.listener_bus)))

    # --- QEMU's state ------------------------------------------------------------------------------

    async def _watch(self, bus: MessageBus) -> None:
        with contextlib.suppress(Exception):
            await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
        if not self._closed.done():
            log.info("QEMU closed the D-Bus display connection")
            self._closed.set_result(None)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                await self._poll_once()
            except Exception as exc:  # QEMU going away: the watchers end the bridge
                log.debug("poll failed: %r", exc)
                if not self.bus.connected:
                    return

    async def _poll_once(self) -> None:
        path = self.keyboard.path
        self._set_absolute(bool(await get_property(self.bus, path, MOUSE_INTERFACE, "IsAbsolute")))
        self._set_leds(int(await get_property(self.bus, path, KEYBOARD_INTERFACE, "Modifiers")))
        for console in self.consoles:
            await self._read_size(console)

    async def _read_size(self, console: Console, confirmed: bool = False) -> None:
        props = (await call(self.bus, console.path, "org.freedesktop.DBus.Properties", "GetAll", "s", [CONSOLE_INTERFACE]))[0]
        self._set_size(console, props, confirmed)

    def _set_size(self, console: Console, props: dict[str, Any], confirmed: bool = False) -> None:
        """The console's Width/Height properties were read (or changed).

        QEMU switches surfaces without a Scanout when no update covers a whole new surface, and
        the properties follow every switch, so they are the size then. But a read may race with a
        Scanout of a newer surface on the listener connection, so a size that differs from the
        surface is applied only when updates are waiting for it (``confirmed``: they prove the
        switch), or when two reads with no Scanout in between agree.
        """
        display = console.display
        h, w = display.frame.shape
        size = (
            int(_unwrap(props["Width"])) if "Width" in props else w,
            int(_unwrap(props["Height"])) if "Height" in props else h,
        )
        seen, console.seen = console.seen, (size, display.scanouts)
        if confirmed or display.has_pending or (size != (w, h) and seen == console.seen):
            display.resize(*size)

    def _probe_size(self, console: Console) -> None:
        async def probe() -> None:
            try:
                await self._read_size(console, confirmed=True)
            except Exception as exc:
                log.debug("console %d: size probe failed: %r", console.id, exc)

        task = asyncio.ensure_future(probe())
        self._tasks.append(task)

        def forget(t: asyncio.Future[None]) -> None:
            if t in self._tasks:
                self._tasks.remove(t)

        task.add_done_callback(forget)

    def _on_message(self, msg: Message) -> bool:
        if msg.message_type != MessageType.SIGNAL or msg.member != "PropertiesChanged":
            return False
        try:
            interface, changed = msg.body[0], msg.body[1]
            if interface == CONSOLE_INTERFACE:
                for console in self.consoles:
                    if console.path == msg.path and ("Width" in changed or "Height" in changed):
                        self._set_size(console, changed)
            elif msg.path != self.keyboard.path:
                pass
            elif interface == MOUSE_INTERFACE and "IsAbsolute" in changed:
                self._set_absolute(bool(_unwrap(changed["IsAbsolute"])))
            elif interface == KEYBOARD_INTERFACE and "Modifiers" in changed:
                self._set_leds(int(_unwrap(changed["Modifiers"])))
        except Exception as exc:
            log.warning("bad PropertiesChanged from QEMU dropped: %r", exc)
        return False

    def _set_absolute(self, absolute: bool) -> None:
        if absolute == self.absolute:
            return
        self.absolute = absolute
        log.info("QEMU mouse is %s", "absolute: tablet on" if absolute else "relative: tablet off")
        if absolute:
            self.server.add_tablet(self.tablet)
        else:
            self.server.remove_tablet()

    def _set_leds(self, leds: int) -> None:
        leds &= 0x7
        if leds != self.keyboard.leds:
            self.keyboard.leds = leds
            self.server.kbd_leds(leds)

    async def _on_monitors(self, monitors: tuple[MonitorConfig, ...]) -> None:
        for console, mon in zip(self.consoles, monitors, strict=False):
            if console.id in self._ui_info_refused or not mon.width or not mon.height:
                continue
            args = [mon.mm_width & 0xFFFF, mon.mm_height & 0xFFFF, mon.x, mon.y, mon.width, mon.height]
            try:
                await call(self.bus, console.path, CONSOLE_INTERFACE, "SetUIInfo", "qqiiuu", args)
            except Exception as exc:
                self._ui_info_refused.add(console.id)
                log.info("console %d does not take SetUIInfo: %s", console.id, exc)

    # --- life --------------------------------------------------------------------------------------

    async def closed(self) -> None:
        """Wait until QEMU goes away (a listener connection or the bus closes) or :meth:`close`."""
        await asyncio.shield(self._closed)

    async def close(self) -> None:
        """Stop serving: end the listener connections and the watchers (the bus stays the caller's)."""
        for cleanup in self._cleanups:
            with contextlib.suppress(Exception):
                cleanup()
        self._cleanups.clear()
        for task in self._tasks:
            task.cancel()
        for console in self.consoles:
            console.display.close()
            if console.listener_bus is not None:
                console.listener_bus.disconnect()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if not self._closed.done():
            self._closed.set_result(None)


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, Variant) else value


async def attach(server: ServerDevices, bus: MessageBus, *, monitors_config: bool = True) -> QemuBridge:
    """Serve the QEMU VM on ``bus`` (a bus-daemon or p2p connection to ``-display dbus``).

    Call it before clients connect (displays are added per console), and while QEMU's main loop
    runs: registration blocks QEMU until our side of the listener answers.

    Args:
        server: the SPICE server (its displays, keyboard, mouse, tablet).
        bus: from :func:`~spiceserver.qemu.bus.connect_bus` or :func:`~spiceserver.qemu.bus.connect_p2p`.
        monitors_config: pass clients' monitor layouts to QEMU as ``SetUIInfo``.

    Returns:
        The bridge; ``await bridge.closed()`` returns when QEMU goes away.
    """
    bridge = QemuBridge(server, bus)
    try:
        await bridge._start(monitors_config)
    except BaseException:
        await bridge.close()
        raise
    return bridge
