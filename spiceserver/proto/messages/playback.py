"""Playback channel messages (spice-common ``spice.proto`` ``channel PlaybackChannel``).

The server side is spice-server's ``server/sound.cpp``; spice-gtk's is ``src/channel-playback.c``.
``PlaybackVolume`` and ``PlaybackMute`` have spice.proto's shared ``AudioVolume`` / ``AudioMute``
layouts (the record channel has its own classes with the same layouts).
"""

from __future__ import annotations

from ..enums import ChannelType
from ..marshal import U8, U16, U32, Array, Bytes, count, f, struct
from .base import SERVER, Message, message

PLAYBACK = ChannelType.PLAYBACK


@message(PLAYBACK, SERVER, 101)
@struct
class PlaybackData(Message):
    """Audio frames in the current mode; ``time`` is the server's multimedia time in ms."""

    time: int = f(U32)
    data: bytes = f(Bytes())


@message(PLAYBACK, SERVER, 102)
@struct
class PlaybackMode(Message):
    time: int = f(U32)
    mode: int = f(U16)  # AudioDataMode
    data: bytes = f(Bytes(), default=b"")


@message(PLAYBACK, SERVER, 103)
@struct
class PlaybackStart(Message):
    channels: int = f(U32)
    format: int = f(U16)  # AudioFmt
    frequency: int = f(U32)
    time: int = f(U32)


@message(PLAYBACK, SERVER, 104)
@struct
class PlaybackStop(Message):
    pass


@message(PLAYBACK, SERVER, 105)
@struct
class PlaybackVolume(Message):
    """spice.proto ``AudioVolume``: one u16 volume per channel."""

    _nchannels = count(U8, "volume")
    volume: tuple[int, ...] = f(Array(U16, "_nchannels"))


@message(PLAYBACK, SERVER, 106)
@struct
class PlaybackMute(Message):
    """spice.proto ``AudioMute``."""

    mute: int = f(U8)


@message(PLAYBACK, SERVER, 107)
@struct
class PlaybackLatency(Message):
    latency_ms: int = f(U32)
