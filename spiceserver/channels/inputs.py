"""Inputs channel: keys, mouse motion, absolute positions, buttons, keyboard LEDs.

Counterpart of spice ``server/inputs-channel.cpp`` and ``inputs-channel-client.cpp``: scancodes
pushed byte for byte, lock-key sync from the client's KEY_MODIFIERS, MOUSE_MOTION honoured in server
mouse mode and MOUSE_POSITION in client mode, wheel as PRESS UP/DOWN, MOTION_ACK every
``MOTION_ACK_BUNCH`` motion/position messages, and every key still down released when the client goes.

Lock state follows libspice: the server keeps the guest's lock modifiers (``core.kbd_modifiers``,
set by the host through ``kbd_leds`` and flipped whenever a lock key goes down or a lock is injected),
compares a client's KEY_MODIFIERS with it, and two seconds after any lock change sends the state back
(KEY_MODIFIERS), so client and guest converge even if the guest never reports its LEDs.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from ..proto.channel import ChannelConnection
from ..proto.enums import KeyboardModifiers, MouseButton, MouseMode
from ..proto.link import LinkMess
from ..proto.messages import inputs as im
from ..proto.scancode import RELEASE, code_to_bytes, split_transitions
from .base import ChannelClient, ServerCore, maybe_await

__all__ = ["InputsChannelClient", "LOCK_SCANCODES"]

KEY_MODIFIERS_TTL = 2.0  # libspice KEY_MODIFIERS_TTL

LOCK_SCANCODES = {
    KeyboardModifiers.SCROLL_LOCK: 0x46,
    KeyboardModifiers.NUM_LOCK: 0x45,
    KeyboardModifiers.CAPS_LOCK: 0x3A,
}


class InputsChannelClient(ChannelClient):
    """One client's inputs channel."""

    HANDLERS: ClassVar[dict[type, str]] = {
        im.KeyDown: "_on_key",
        im.KeyUp: "_on_key",
        im.KeyScancode: "_on_scancode",
        im.ClientKeyModifiers: "_on_modifiers",
        im.MouseMotion: "_on_motion",
        im.MousePosition: "_on_position",
        im.MousePress: "_on_press",
        im.MouseRelease: "_on_release",
    }

    def __init__(self, core: ServerCore, conn: ChannelConnection, link: LinkMess, *, secure: bool, log: logging.LoggerAdapter[logging.Logger]) -> None:
        super().__init__(core, conn, link, secure=secure, log=log)
        self.motion_count = 0
        self.keys_down: set[bytes] = set()  # transitions (without release bit) still pressed
        self.modifiers_pressed = 0
        self._modifiers_deadline: float | None = None

    async def start(self, now: float) -> None:
        kbd = self.core.keyboard
        self.conn.send(im.InputsInit(keyboard_modifiers=kbd.get_leds() if kbd else 0))

    # --- keyboard --------------------------------------------------------------------------------

    def _sync_locks(self, data: bytes, now: float) -> None:
        """libspice ``sync_locks``: a lock key going down flips the lock state."""
        for b in data:
            flag = next((f for f, code in LOCK_SCANCODES.items() if code == b & ~RELEASE), 0)
            if not flag:
                continue
            if b & RELEASE:
                self.modifiers_pressed &= ~flag
            elif not self.modifiers_pressed & flag:
                self.core.kbd_modifiers ^= flag
                self.modifiers_pressed |= flag
                self._activate_modifiers_watch(now)

    def _activate_modifiers_watch(self, now: float) -> None:
        self._modifiers_deadline = now + KEY_MODIFIERS_TTL

    def next_timer(self) -> float | None:
        return self._modifiers_deadline

    async def on_timer(self, now: float) -> None:
        if self._modifiers_deadline is not None and now >= self._modifiers_deadline:
            self._modifiers_deadline = None
            self.send_leds(self.core.kbd_modifiers)

    async def _push(self, data: bytes, now: float) -> None:
        kbd = self.core.keyboard
        if not data or kbd is None:
            return
        self._sync_locks(data, now)
        for seq in split_transitions(data):
            press = seq[:-1] + bytes([seq[-1] & ~RELEASE & 0xFF])
            if seq[-1] & RELEASE:
                self.keys_down.discard(press)
            else:
                self.keys_down.add(press)
        await maybe_await(kbd.on_scancodes(data))

    async def _on_key(self, msg: im.KeyDown | im.KeyUp, now: float) -> None:
        await self._push(code_to_bytes(msg.code), now)

    async def _on_scancode(self, msg: im.KeyScancode, now: float) -> None:
        await self._push(msg.data, now)

    async def _on_modifiers(self, msg: im.ClientKeyModifiers, now: float) -> None:
        kbd = self.core.keyboard
        if kbd is None:
            return
        for flag, code in LOCK_SCANCODES.items():
            if not self.modifiers_pressed & flag and (msg.modifiers & flag) != (self.core.kbd_modifiers & flag):
                await maybe_await(kbd.on_scancodes(bytes([code, code | RELEASE])))
                self.core.kbd_modifiers ^= flag
        self._activate_modifiers_watch(now)

    def send_leds(self, leds: int) -> None:
        self.conn.send(im.KeyModifiers(modifiers=leds))

    # --- pointer ---------------------------------------------------------------------------------

    def _count_motion(self) -> None:
        self.motion_count += 1
        if self.motion_count % im.MOTION_ACK_BUNCH == 0:
            self.conn.send(im.MouseMotionAck())

    async def _on_motion(self, msg: im.MouseMotion, now: float) -> None:
        self._count_motion()
        mouse = self.core.mouse
        if mouse is not None and self.core.mouse_mode == MouseMode.SERVER:
            await maybe_await(mouse.on_motion(msg.dx, msg.dy, 0, msg.buttons_state))

    async def _on_position(self, msg: im.MousePosition, now: float) -> None:
        self._count_motion()
        tablet = self.core.tablet
        if tablet is not None and self.core.mouse_mode == MouseMode.CLIENT:
            await maybe_await(tablet.on_position(msg.x, msg.y, msg.buttons_state, msg.display_id))

    async def _on_press(self, msg: im.MousePress, now: float) -> None:
        dz = -1 if msg.button == MouseButton.UP else 1 if msg.button == MouseButton.DOWN else 0
        if self.core.mouse_mode == MouseMode.CLIENT:
            if self.core.tablet is not None:
                if dz:
                    await maybe_await(self.core.tablet.on_wheel(dz, msg.buttons_state))
                else:
                    await maybe_await(self.core.tablet.on_buttons(msg.buttons_state))
        elif self.core.mouse is not None:
            await maybe_await(self.core.mouse.on_motion(0, 0, dz, msg.buttons_state))

    async def _on_release(self, msg: im.MouseRelease, now: float) -> None:
        if self.core.mouse_mode == MouseMode.CLIENT:
            if self.core.tablet is not None:
                await maybe_await(self.core.tablet.on_buttons(msg.buttons_state))
        elif self.core.mouse is not None:
            await maybe_await(self.core.mouse.on_buttons(msg.buttons_state))

    async def on_close(self) -> None:
        """Release every key the client left pressed (libspice ``release_keys``)."""
        kbd = self.core.keyboard
        if kbd is None:
            return
        for press in sorted(self.keys_down):
            await maybe_await(kbd.on_scancodes(press[:-1] + bytes([press[-1] | RELEASE])))
        self.keys_down.clear()
