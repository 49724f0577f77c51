"""Device interfaces a host implements: keyboard, mouse, tablet.

Counterpart of spice ``server/spice-input.h`` (SpiceKbdInterface, SpiceMouseInterface,
SpiceTabletInterface). Each is a base class whose methods do nothing; override what you need.
A method may be a plain function or a coroutine function: the server awaits coroutines before it
handles the next message of that channel, so events reach the device in order (asyncssh
``SSHServer`` pattern).

Buttons are SPICE button masks (:class:`~spiceserver.proto.enums.MouseButtonMask`: 1 left,
2 middle, 4 right, 8 wheel up, 16 wheel down, 32 side, 64 extra). Note QEMU's own convention swaps
middle and right (libspice ``RED_MOUSE_STATE_TO_LOCAL``); a QEMU-style host converts with
:func:`spice_to_local_buttons`.
"""

from __future__ import annotations

from collections.abc import Awaitable

from .proto.scancode import KeyEvent, decode_key, split_transitions

__all__ = ["Keyboard", "Mouse", "Tablet", "MaybeAwaitable", "spice_to_local_buttons", "KeyEvent"]

MaybeAwaitable = Awaitable[None] | None


def spice_to_local_buttons(buttons: int) -> int:
    """SPICE mask -> QEMU/libspice local mask (left 1, right 2, middle 4; wheel bits kept)."""
    return (buttons & ~0x06) | ((buttons & 0x02) << 1) | ((buttons & 0x04) >> 1)


class Keyboard:
    """A PS/2-style keyboard fed PC/XT scan code set 1."""

    def on_scancodes(self, data: bytes) -> MaybeAwaitable:
        """Raw scan code bytes as the client sent them (libspice ``push_scan_freg``, byte by byte).

        The default splits them into key transitions and calls :meth:`on_key` for each; a
        host that emulates an i8042 overrides this instead and queues the bytes.
        """
        pending: list[Awaitable[None]] = []
        for seq in split_transitions(data):
            r = self.on_key(decode_key(seq))
            if r is not None:
                pending.append(r)
        if not pending:
            return None
        return _await_all(pending)

    def on_key(self, event: KeyEvent) -> MaybeAwaitable:
        """One key went down or up."""
        return None

    def get_leds(self) -> int:
        """Current LED state (KeyboardModifiers: 1 scroll, 2 num, 4 caps) sent to new clients."""
        return 0


async def _await_all(items: list[Awaitable[None]]) -> None:
    for a in items:
        await a


class Mouse:
    """A relative pointer, used in server mouse mode."""

    def on_motion(self, dx: int, dy: int, dz: int, buttons: int) -> MaybeAwaitable:
        """Relative motion; ``dz`` is the wheel (-1 up, +1 down)."""
        return None

    def on_buttons(self, buttons: int) -> MaybeAwaitable:
        """Buttons changed without motion."""
        return None


class Tablet:
    """An absolute pointer, used in client mouse mode."""

    def set_logical_size(self, width: int, height: int) -> MaybeAwaitable:
        """The display size positions refer to (called when it is known or changes)."""
        return None

    def on_position(self, x: int, y: int, buttons: int, display_id: int) -> MaybeAwaitable:
        """Absolute position in display pixels."""
        return None

    def on_wheel(self, dz: int, buttons: int) -> MaybeAwaitable:
        """Wheel turned: -1 up, +1 down."""
        return None

    def on_buttons(self, buttons: int) -> MaybeAwaitable:
        """Buttons changed."""
        return None
