"""Inputs channel messages (spice-common ``spice.proto`` ``channel InputsChannel``)."""

from __future__ import annotations

from ..enums import ChannelType
from ..marshal import I32, U8, U16, U32, Bytes, f, struct
from .base import CLIENT, SERVER, Message, message

INPUTS = ChannelType.INPUTS

#: the server sends MOUSE_MOTION_ACK after this many motion/position messages
#: (spice-protocol ``SPICE_INPUT_MOTION_ACK_BUNCH``).
MOTION_ACK_BUNCH = 4


@message(INPUTS, CLIENT, 101)
@struct
class KeyDown(Message):
    """A PC/XT scancode sequence packed little-endian in a u32 (low byte first, ends at a 0 byte)."""

    code: int = f(U32)


@message(INPUTS, CLIENT, 102)
@struct
class KeyUp(Message):
    code: int = f(U32)


@message(INPUTS, CLIENT, 103)
@struct
class ClientKeyModifiers(Message):
    modifiers: int = f(U16)


@message(INPUTS, CLIENT, 104)
@struct
class KeyScancode(Message):
    """Raw scancode bytes (make and break codes), sent when the server has INPUTS_CAP_KEY_SCANCODE."""

    data: bytes = f(Bytes())


@message(INPUTS, CLIENT, 111)
@struct
class MouseMotion(Message):
    dx: int = f(I32)
    dy: int = f(I32)
    buttons_state: int = f(U16)


@message(INPUTS, CLIENT, 112)
@struct
class MousePosition(Message):
    x: int = f(U32)
    y: int = f(U32)
    buttons_state: int = f(U16)
    display_id: int = f(U8)


@message(INPUTS, CLIENT, 113)
@struct
class MousePress(Message):
    button: int = f(U8)
    buttons_state: int = f(U16)


@message(INPUTS, CLIENT, 114)
@struct
class MouseRelease(Message):
    button: int = f(U8)
    buttons_state: int = f(U16)


@message(INPUTS, SERVER, 101)
@struct
class InputsInit(Message):
    keyboard_modifiers: int = f(U16)


@message(INPUTS, SERVER, 102)
@struct
class KeyModifiers(Message):
    modifiers: int = f(U16)


@message(INPUTS, SERVER, 111)
@struct
class MouseMotionAck(Message):
    pass
