"""Cursor channel messages (spice-common ``spice.proto`` ``channel CursorChannel``).

The server side is spice-server's ``server/cursor-channel.cpp`` (``cursor_fill``,
``red_marshall_cursor_init``); spice-gtk decodes them in ``src/channel-cursor.c``.
"""

from __future__ import annotations

from ..enums import ChannelType, CursorFlags
from ..marshal import U8, U16, U64, Bytes, f, layout_of, struct
from .base import SERVER, Message, Point16, message

CURSOR = ChannelType.CURSOR


@struct
class CursorHeader:
    """17 bytes describing a cursor image; ``unique`` is its cache key."""

    unique: int = f(U64)
    type: int = f(U8)  # CursorType
    width: int = f(U16)
    height: int = f(U16)
    hot_spot_x: int = f(U16)
    hot_spot_y: int = f(U16)


@struct
class Cursor:
    """``flags`` (CursorFlags); the header is present unless NONE; the pixels run to the end of the
    message (none for FROM_CACHE)."""

    flags: int = f(U16)
    header: CursorHeader | None = f(
        layout_of(CursorHeader), when=lambda c: not c["flags"] & CursorFlags.NONE, default=None
    )
    data: bytes = f(Bytes(), default=b"")


_CURSOR = layout_of(Cursor)
_POINT16 = layout_of(Point16)


@message(CURSOR, SERVER, 101)
@struct
class CursorInit(Message):
    position: Point16 = f(_POINT16)
    trail_length: int = f(U16)
    trail_frequency: int = f(U16)
    visible: int = f(U8)
    cursor: Cursor = f(_CURSOR)


@message(CURSOR, SERVER, 102)
@struct
class CursorReset(Message):
    pass


@message(CURSOR, SERVER, 103)
@struct
class CursorSet(Message):
    position: Point16 = f(_POINT16)
    visible: int = f(U8)
    cursor: Cursor = f(_CURSOR)


@message(CURSOR, SERVER, 104)
@struct
class CursorMove(Message):
    position: Point16 = f(_POINT16)


@message(CURSOR, SERVER, 105)
@struct
class CursorHide(Message):
    pass


@message(CURSOR, SERVER, 106)
@struct
class CursorTrail(Message):
    length: int = f(U16)
    frequency: int = f(U16)


@message(CURSOR, SERVER, 107)
@struct
class CursorInvalOne(Message):
    id: int = f(U64)


@message(CURSOR, SERVER, 108)
@struct
class CursorInvalAll(Message):
    pass
