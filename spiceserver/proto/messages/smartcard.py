"""Smartcard channel messages (spice-common ``spice.proto`` ``channel SmartcardChannel``).

Both directions carry one libcacard ``VSCMsgHeader`` plus its payload. spice-server's side is
``server/smartcard.cpp`` / ``smartcard-channel-client.cpp``; on the SPICE wire the header is
little-endian (the server converts it to network order for the ccid-card-passthru device).
"""

from __future__ import annotations

from ..enums import ChannelType
from ..marshal import U32, Bytes, count, f, struct
from .base import CLIENT, SERVER, Message, message

SMARTCARD = ChannelType.SMARTCARD


@message(SMARTCARD, SERVER, 101)
@struct
class SmartcardData(Message):
    type: int = f(U32)  # VscMessageType
    reader_id: int = f(U32)
    _length = count(U32, "data")
    data: bytes = f(Bytes("_length"))


@message(SMARTCARD, CLIENT, 101)
@struct
class ClientSmartcardData(Message):
    type: int = f(U32)  # VscMessageType
    reader_id: int = f(U32)
    _length = count(U32, "data")
    data: bytes = f(Bytes("_length"))
