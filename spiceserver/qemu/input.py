"""SPICE input -> QEMU's ``org.qemu.Display1.Keyboard`` / ``Mouse`` (libspice counterpart: QEMU's
ui/spice-input.c, which does the same mapping inside QEMU).

The interfaces live on each console object (ui/dbus-display1.xml, ui/dbus-console.c in QEMU 7.2):

* ``Keyboard.Press(u keycode)`` / ``Release(u keycode)``: QEMU "qnum" codes, i.e. the PC scan code
  set 1 make code with 0x80 added for E0-prefixed keys (ui/input-keymap: qcode <-> qnum);
  property ``Modifiers`` (1 scroll, 2 num, 4 caps lock: the same bits as SPICE's
  KeyboardModifiers).
* ``Mouse.Press(u button)`` / ``Release(u button)``: QEMU's InputButton (0 left, 1 middle, 2 right,
  3 wheel up, 4 wheel down, 5 side, 6 extra): button *i* is bit *i* of a SPICE button mask;
  ``RelMotion(i dx, i dy)``; ``SetAbsPosition(u x, u y)`` (only while ``IsAbsolute``, in the
  console's pixels).

Events are sent without waiting for QEMU's reply (``NO_REPLY_EXPECTED``), in order, so a burst of
motion does not queue behind round trips.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dbus_fast import Message, MessageFlag
from dbus_fast.aio import MessageBus

from ..interfaces import Keyboard, KeyEvent, MaybeAwaitable, Mouse, Tablet
from .bus import DEST, P2PBus

__all__ = [
    "KEYBOARD_INTERFACE",
    "MOUSE_INTERFACE",
    "WHEEL_DOWN",
    "WHEEL_UP",
    "ButtonState",
    "QemuKeyboard",
    "QemuMouse",
    "QemuTablet",
    "qnum",
]

log = logging.getLogger(__name__)

KEYBOARD_INTERFACE = "org.qemu.Display1.Keyboard"
MOUSE_INTERFACE = "org.qemu.Display1.Mouse"
WHEEL_UP = 3
WHEEL_DOWN = 4
BUTTONS = 7  # QEMU 7.2 InputButton: left middle right wheel-up wheel-down side extra

PAUSE_QNUM = 0xC6
_FAKE_SHIFTS = frozenset({0xE02A, 0xE036})  # E0 2A / E0 36: the fake shifts around some keys


def qnum(keycode: int) -> int | None:
    """QEMU's qnum for a SPICE :class:`~spiceserver.interfaces.KeyEvent` ``keycode``.

    ``keycode`` is the set-1 make code with any prefix in the high bytes (0x1E = A, 0xE048 = Up).
    E0 xx becomes 0x80 | xx (Up = 0xC8), E1 1D 45 (Pause) becomes 0xC6; the E0 fake shifts and
    anything else unknown give None.
    """
    if 0 < keycode <= 0x7F:
        return keycode
    if keycode >> 8 == 0xE0:
        if keycode in _FAKE_SHIFTS or not keycode & 0x7F:
            return None
        return 0x80 | (keycode & 0x7F)
    if keycode >> 8 in (0xE1, 0xE11D):  # E1 1D 45 (and its two-byte form)
        return PAUSE_QNUM
    return None


class _Sender:
    """Fire-and-forget method calls on QEMU's console objects."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self._dest = None if isinstance(bus, P2PBus) else DEST

    def send(self, path: str, interface: str, member: str, signature: str = "", body: list[object] | None = None) -> None:
        if not self.bus.connected:
            return
        msg = Message(
            destination=self._dest,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=body or [],
            flags=MessageFlag.NO_REPLY_EXPECTED,
        )
        try:
            fut = self.bus.send(msg)
        except Exception as exc:  # the bus went away under us
            log.debug("send %s.%s failed: %r", interface, member, exc)
            return
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())


class ButtonState:
    """The buttons QEMU believes are down; turns SPICE masks into Press/Release calls."""

    def __init__(self, sender: _Sender) -> None:
        self.sender = sender
        self.mask = 0

    def set(self, path: str, buttons: int) -> None:
        """Press or release what differs between the last mask and ``buttons`` (SPICE mask)."""
        buttons &= (1 << BUTTONS) - 1
        changed = self.mask ^ buttons
        for button in range(BUTTONS):
            if changed & (1 << button):
                member = "Press" if buttons & (1 << button) else "Release"
                self.sender.send(path, MOUSE_INTERFACE, member, "u", [button])
        self.mask = buttons

    def wheel(self, path: str, dz: int) -> None:
        """A wheel turn: ``dz`` clicks, negative up, as a press/release of button 3 or 4 each."""
        button = WHEEL_UP if dz < 0 else WHEEL_DOWN
        for _ in range(min(abs(dz), 16)):
            self.sender.send(path, MOUSE_INTERFACE, "Press", "u", [button])
            self.sender.send(path, MOUSE_INTERFACE, "Release", "u", [button])


class QemuKeyboard(Keyboard):
    """Keys to a console's ``Keyboard`` (QEMU routes them to the guest's focused keyboard).

    Args:
        bus: the connection to QEMU.
        path: a console object, e.g. ``/org/qemu/Display1/Console_0``.
    """

    def __init__(self, bus: MessageBus, path: str) -> None:
        self._sender = _Sender(bus)
        self.path = path
        self.leds = 0
        """The last ``Modifiers`` seen (set by the bridge), sent to new clients."""

    def on_key(self, event: KeyEvent) -> MaybeAwaitable:
        """Press or release the key's qnum (unknown codes are dropped)."""
        code = qnum(event.keycode)
        if code is not None:
            self._sender.send(self.path, KEYBOARD_INTERFACE, "Press" if event.down else "Release", "u", [code])
        return None

    def get_leds(self) -> int:
        """The guest's lock state (Modifiers has SPICE's bit layout)."""
        return self.leds


class QemuMouse(Mouse):
    """Relative motion (SPICE server mouse mode) to a console's ``Mouse.RelMotion``."""

    def __init__(self, bus: MessageBus, path: str, buttons: ButtonState | None = None) -> None:
        self._sender = _Sender(bus)
        self.path = path
        self.buttons = buttons or ButtonState(self._sender)

    def on_motion(self, dx: int, dy: int, dz: int, buttons: int) -> MaybeAwaitable:
        """Move by (dx, dy), turn the wheel by dz, then apply the button mask."""
        if dx or dy:
            self._sender.send(self.path, MOUSE_INTERFACE, "RelMotion", "ii", [int(dx), int(dy)])
        if dz:
            self.buttons.wheel(self.path, dz)
        self.buttons.set(self.path, buttons)
        return None

    def on_buttons(self, buttons: int) -> MaybeAwaitable:
        """Apply the button mask."""
        self.buttons.set(self.path, buttons)
        return None


class QemuTablet(Tablet):
    """Absolute positions (SPICE client mouse mode) to ``Mouse.SetAbsPosition`` of the console
    shown as the event's display.

    Args:
        bus: the connection to QEMU.
        console_path: display id -> console object path (None: not a console of ours).
        buttons: shared with the :class:`QemuMouse` so a mode switch keeps the mask straight.
        console_size: display id -> the console's (width, height); positions are clamped inside it
            (QEMU refuses a position outside the surface: ui/dbus-console.c ``dbus_mouse_set_pos``).
    """

    def __init__(
        self,
        bus: MessageBus,
        console_path: Callable[[int], str | None],
        buttons: ButtonState | None = None,
        console_size: Callable[[int], tuple[int, int] | None] | None = None,
    ) -> None:
        self._sender = _Sender(bus)
        self.console_path = console_path
        self.console_size = console_size
        self.buttons = buttons or ButtonState(self._sender)
        self._path = console_path(0)

    def on_position(self, x: int, y: int, buttons: int, display_id: int) -> MaybeAwaitable:
        """Move to (x, y) on the display's console, then apply the button mask."""
        path = self.console_path(display_id)
        if path is None:
            return None
        self._path = path
        x, y = max(0, int(x)), max(0, int(y))
        size = self.console_size(display_id) if self.console_size is not None else None
        if size is not None:
            x, y = min(x, max(size[0] - 1, 0)), min(y, max(size[1] - 1, 0))
        self._sender.send(path, MOUSE_INTERFACE, "SetAbsPosition", "uu", [x, y])
        self.buttons.set(path, buttons)
        return None

    def on_wheel(self, dz: int, buttons: int) -> MaybeAwaitable:
        """Turn the wheel on the console last pointed at."""
        if self._path is not None:
            self.buttons.wheel(self._path, dz)
            self.buttons.set(self._path, buttons)
        return None

    def on_buttons(self, buttons: int) -> MaybeAwaitable:
        """Apply the button mask on the console last pointed at."""
        if self._path is not None:
            self.buttons.set(self._path, buttons)
        return None
