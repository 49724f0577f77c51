"""Record channel messages (spice-common ``spice.proto`` ``channel RecordChannel``).

The server side is spice-server's ``server/sound.cpp``; spice-gtk's is ``src/channel-record.c``.
``RecordVolume`` and ``RecordMute`` have spice.proto's shared ``AudioVolume`` / ``AudioMute``
layouts (see also :mod:`.playback`).
"""

from __future__ import annotations

from ..enums import ChannelType
from ..marshal import U8, U16, U32, Array, Bytes, count, f, struct
from .base import CLIENT, SERVER, Message, message

RECORD = ChannelType.RECORD


@message(RECORD, SERVER, 101)
@struct
class RecordStart(Message):
    channels: int = f(U32)
    format: int = f(U16)  # AudioFmt
    frequency: int = f(U32)


@message(RECORD, SERVER, 102)
@struct
class RecordStop(Message):
    pass


@message(RECORD, SERVER, 103)
@struct
class RecordVolume(Message):
    """spice.proto ``AudioVolume``: one u16 volume per channel."""

    _nchannels = count(U8, "volume")
    volume: tuple[int, ...] = f(Array(U16, "_nchannels"))


@message(RECORD, SERVER, 104)
@struct
class RecordMute(Message):
    """spice.proto ``AudioMute``."""

    mute: int = f(U8)


@message(RECORD, CLIENT, 101)
@struct
class RecordData(Message):
    """Captured audio in the mode the client announced; ``time`` is the client's mm time."""

    time: int = f(U32)
    data: bytes = f(Bytes())


@message(RECORD, CLIENT, 102)
@struct
class RecordMode(Message):
    time: int = f(U32)
    mode: int = f(U16)  # AudioDataMode
    data: bytes = f(Bytes(), default=b"")


@message(RECORD, CLIENT, 103)
@struct
class RecordStartMark(Message):
    time: int = f(U32)
