"""Inputs channel: keys, mouse motion, absolute positions, buttons, keyboard LEDs.

Counterpart of spice ``server/inputs-channel.cpp`` and ``inputs-channel-client.cpp``: scancodes
pushed byte for byte, lock-key sync from the client's KEY_MODIFIERS, MOUSE_MOTION honoured in server
mouse mode and MOUSE_POSITION in client mode, wheel as PRESS UP/DOWN, MOTION_ACK every
``MOTION_ACK_BUNCH`` motion/position messages, and every key still down released when the client goes.
A viewer session's inputs channel links, but its keys and mouse are dropped (:mod:`spiceserver.roles`).

The channel object owns the devices (keyboard, mouse, tablet) and the lock state, shared by its
clients. Lock state follows libspice: the server keeps the guest's lock modifiers
(:attr:`InputsChannel.kbd_modifiers`, set by the host through ``kbd_leds`` and flipped whenever a lock key goes down or a lock is injected),
compares a client's KEY_MODIFIERS with it, and two seconds after any lock change sends the state back
(KEY_MODIFIERS), so client and guest converge even if the guest never reports its LEDs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..interfaces import Keyboard, Mouse, Tablet
from ..proto.channel import ChannelConnection, Event
from ..proto.channel_client import StateTable
from ..proto.enums import ChannelType, InputsCap, KeyboardModifiers, MouseButton, MouseMode
from ..proto.messages import inputs as im
from ..proto.scancode import RELEASE, code_to_bytes, split_transitions
from ..proto.vdagent_messages import (
    MouseState,
    mouse_position_state,
    mouse_press_state,
    mouse_release_state,
    wheel_states,
)
from .base import ChannelClient, Link, LoopChannel, ServerContext, maybe_await
from .role_enforce import drop_viewer_input
from .session import Session

__all__ = ["InputsChannel", "InputsChannelClient", "LOCK_SCANCODES"]

log = logging.getLogger("spiceserver")

KEY_MODIFIERS_TTL = 2.0  # libspice KEY_MODIFIERS_TTL

LOCK_SCANCODES = {
    KeyboardModifiers.SCROLL_LOCK: 0x46,
    KeyboardModifiers.NUM_LOCK: 0x45,
    KeyboardModifiers.CAPS_LOCK: 0x3A,
}
_LOCK_FLAG_OF = {code: flag for flag, code in LOCK_SCANCODES.items()}
_LOCK_BYTES = frozenset(code | bit for code in LOCK_SCANCODES.values() for bit in (0, RELEASE))


class InputsChannel(LoopChannel):
    """The inputs channel: the host's keyboard, mouse and tablet, and the guest's lock state."""

    TYPE = ChannelType.INPUTS
    #: libspice ``InputsChannelClient::RECEIVE_BUF_SIZE``: the largest client message (a KEY_SCANCODE
    #: of up to about 2000 scancode bytes); a larger one closes the channel
    MAX_MESSAGE_SIZE = 2048

    def __init__(self, ctx: ServerContext) -> None:
        super().__init__(ctx, 0, (InputsCap.KEY_SCANCODE,))
        self.keyboard: Keyboard | None = None
        self.mouse: Mouse | None = None
        self.tablet: Tablet | None = None
        #: the guest's lock state as the server tracks it (libspice ``modifiers``)
        self.kbd_modifiers = 0
        self.mouse_mode = MouseMode.SERVER
        #: called when the tablet comes or goes (the main channel re-evaluates the mouse modes)
        self.on_pointer_change: list[Callable[[], None]] = []
        #: agent mouse (set by the main channel while a guest agent is attached and ``agent_mouse``
        #: is on): client-mode positions and buttons go to the agent as VD_AGENT_MOUSE_STATE, which
        #: wins over the tablet (libspice ``inputs_channel_handle_message``)
        self.agent_mouse: Callable[[MouseState], None] | None = None
        self._agent_last = MouseState(0, 0, 0, 0)
        self._tasks: set[asyncio.Task[Any]] = set()

    def create_client(self, conn: ChannelConnection, link: Link, session: Session) -> InputsChannelClient:
        """A client's inputs channel; a plaintext one is reported to the client as insecure."""
        link.log.info("channel linked to session %#x", session.id)
        if not link.secure and session.main is not None:
            session.main.notify("keyboard channel is insecure")
        return InputsChannelClient(self, conn, link, session)

    # --- devices (host side) -------------------------------------------------------------------

    def set_keyboard(self, keyboard: Keyboard | None) -> None:
        """The keyboard key events go to; its LEDs are the initial lock state."""
        self.keyboard = keyboard
        if keyboard is not None:
            self.kbd_modifiers = keyboard.get_leds()

    def set_tablet(self, tablet: Tablet | None) -> None:
        """The absolute pointer (client mouse mode needs one)."""
        self.tablet = tablet
        for callback in self.on_pointer_change:
            callback()

    def set_leds(self, leds: int) -> None:
        """The guest changed its keyboard LEDs: remember them and tell every client (event loop)."""
        self.kbd_modifiers = leds
        self.broadcast(lambda cc: cc.send_leds(leds))

    def on_mouse_mode(self, mode: MouseMode) -> None:
        """Follow the main channel's mouse mode (motion goes to the mouse or the tablet)."""
        self.mouse_mode = mode

    def set_logical_size(self, width: int, height: int) -> None:
        """The primary surface is now ``width`` x ``height``: the tablet scales to it (event loop)."""
        if self.tablet is None:
            return
        result = self.tablet.set_logical_size(width, height)
        if asyncio.iscoroutine(result):
            task = asyncio.get_running_loop().create_task(result)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


class InputsChannelClient(ChannelClient):
    """One client's inputs channel."""

    def __init__(self, inputs: InputsChannel, conn: ChannelConnection, link: Link, session: Session) -> None:
        super().__init__(conn, link, session)
        self.inputs = inputs
        self.tables = {
            None: StateTable(
                {
                    im.KeyDown: self._on_key,
                    im.KeyUp: self._on_key,
                    im.KeyScancode: self._on_scancode,
                    im.ClientKeyModifiers: self._on_modifiers,
                    im.MouseMotion: self._on_motion,
                    im.MousePosition: self._on_position,
                    im.MousePress: self._on_press,
                    im.MouseRelease: self._on_release,
                }
            )
        }
        self.motion_count = 0
        self.keys_down: set[bytes] = set()  # transitions (without release bit) still pressed
        self.modifiers_pressed = 0
        self._modifiers_deadline: float | None = None

    async def handle(self, event: Event, now: float) -> None:
        """A viewer session's keys and mouse are dropped (:mod:`spiceserver.channels.role_enforce`);
        its motion is still acknowledged, so the client keeps its usual pace."""
        if drop_viewer_input(self.session, event, self.log):
            if isinstance(event, (im.MouseMotion, im.MousePosition)):
                self._count_motion()
            return
        await super().handle(event, now)

    async def start(self, now: float) -> None:
        """INPUTS_INIT with the keyboard's LEDs."""
        kbd = self.inputs.keyboard
        self.conn.send(im.InputsInit(keyboard_modifiers=kbd.get_leds() if kbd else 0))

    # --- keyboard --------------------------------------------------------------------------------

    def _sync_locks(self, data: bytes, now: float) -> None:
        """libspice ``sync_locks``: a lock key going down flips the lock state."""
        if _LOCK_BYTES.isdisjoint(data):
            return
        for b in data:
            flag = _LOCK_FLAG_OF.get(b & ~RELEASE, 0)
            if not flag:
                continue
            if b & RELEASE:
                self.modifiers_pressed &= ~flag
            elif not self.modifiers_pressed & flag:
                self.inputs.kbd_modifiers ^= flag
                self.modifiers_pressed |= flag
                self._activate_modifiers_watch(now)

    def _activate_modifiers_watch(self, now: float) -> None:
        self._modifiers_deadline = now + KEY_MODIFIERS_TTL

    def next_timer(self) -> float | None:
        """When the lock state is to be stated back to the client."""
        return self._modifiers_deadline

    async def on_timer(self, now: float) -> None:
        """State the lock state back (KEY_MODIFIERS) once it has settled."""
        if self._modifiers_deadline is not None and now >= self._modifiers_deadline:
            self._modifiers_deadline = None
            self.send_leds(self.inputs.kbd_modifiers)

    async def _push(self, data: bytes, now: float) -> None:
        kbd = self.inputs.keyboard
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
        kbd = self.inputs.keyboard
        if kbd is None:
            return
        for flag, code in LOCK_SCANCODES.items():
            if not self.modifiers_pressed & flag and (msg.modifiers & flag) != (self.inputs.kbd_modifiers & flag):
                await maybe_await(kbd.on_scancodes(bytes([code, code | RELEASE])))
                self.inputs.kbd_modifiers ^= flag
        self._activate_modifiers_watch(now)

    def send_leds(self, leds: int) -> None:
        """SPICE_MSG_INPUTS_KEY_MODIFIERS with the guest's lock state."""
        self.conn.send(im.KeyModifiers(modifiers=leds))

    # --- pointer ---------------------------------------------------------------------------------

    def _count_motion(self) -> None:
        self.motion_count += 1
        if self.motion_count % im.MOTION_ACK_BUNCH == 0:
            self.conn.send(im.MouseMotionAck())

    async def _on_motion(self, msg: im.MouseMotion, now: float) -> None:
        self._count_motion()
        mouse = self.inputs.mouse
        if mouse is not None and self.inputs.mouse_mode == MouseMode.SERVER:
            await maybe_await(mouse.on_motion(msg.dx, msg.dy, 0, msg.buttons_state))

    def _to_agent(self, *states: MouseState) -> bool:
        """Client mode with agent mouse: the states go to the agent. False if there is none."""
        sink = self.inputs.agent_mouse
        if sink is None or self.inputs.mouse_mode != MouseMode.CLIENT:
            return False
        for st in states:
            self.inputs._agent_last = st
            sink(st)
        return True

    async def _on_position(self, msg: im.MousePosition, now: float) -> None:
        self._count_motion()
        if self._to_agent(mouse_position_state(msg.x, msg.y, msg.buttons_state, msg.display_id)):
            return
        tablet = self.inputs.tablet
        if tablet is not None and self.inputs.mouse_mode == MouseMode.CLIENT:
            await maybe_await(tablet.on_position(msg.x, msg.y, msg.buttons_state, msg.display_id))

    async def _on_press(self, msg: im.MousePress, now: float) -> None:
        dz = -1 if msg.button == MouseButton.UP else 1 if msg.button == MouseButton.DOWN else 0
        last = self.inputs._agent_last
        if self._to_agent(*(wheel_states(last, dz) if dz else (mouse_press_state(last, msg.button, msg.buttons_state),))):
            return
        if self.inputs.mouse_mode == MouseMode.CLIENT:
            if self.inputs.tablet is not None:
                if dz:
                    await maybe_await(self.inputs.tablet.on_wheel(dz, msg.buttons_state))
                else:
                    await maybe_await(self.inputs.tablet.on_buttons(msg.buttons_state))
        elif self.inputs.mouse is not None:
            await maybe_await(self.inputs.mouse.on_motion(0, 0, dz, msg.buttons_state))

    async def _on_release(self, msg: im.MouseRelease, now: float) -> None:
        if msg.button not in (MouseButton.UP, MouseButton.DOWN) and self._to_agent(mouse_release_state(self.inputs._agent_last, msg.buttons_state)):
            return
        if self.inputs.mouse_mode == MouseMode.CLIENT:
            if self.inputs.tablet is not None:
                await maybe_await(self.inputs.tablet.on_buttons(msg.buttons_state))
        elif self.inputs.mouse is not None:
            await maybe_await(self.inputs.mouse.on_buttons(msg.buttons_state))

    async def on_close(self) -> None:
        """Release every key the client left pressed (libspice ``release_keys``)."""
        kbd = self.inputs.keyboard
        if kbd is None:
            return
        for press in sorted(self.keys_down):
            await maybe_await(kbd.on_scancodes(press[:-1] + bytes([press[-1] | RELEASE])))
        self.keys_down.clear()
