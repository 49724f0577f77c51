"""Port channel messages (spice-common ``spice.proto`` ``channel PortChannel``).

A port channel also carries the spicevmc DATA / COMPRESSED_DATA messages (:mod:`.spicevmc`), and
the WebDAV channel inherits everything here. spice-server's side is ``server/spicevmc.cpp``.
"""

from __future__ import annotations

from ..enums import ChannelType
from ..marshal import U8, U32, Bytes, Ptr, count, f, struct
from .base import CLIENT, SERVER, Message, message

PORT = ChannelType.PORT


@message(PORT, SERVER, 201)
@struct
class PortInit(Message):
    """The port's name behind a pointer; ``name`` includes the terminating NUL, as spice-server
    sends it, and may not be empty."""

    _name_size = count(U32, "name")
    name: bytes = f(Ptr(Bytes("_name_size"), nonnull=True))
    opened: int = f(U8)


@message(PORT, SERVER, 202)
@struct
class PortEvent(Message):
    event: int = f(U8)  # PortEvent


@message(PORT, CLIENT, 201)
@struct
class ClientPortEvent(Message):
    event: int = f(U8)  # PortEvent
