"""Messages shared by the spicevmc channels: USB redirection, port and WebDAV.

spice-common ``spice.proto`` ``channel SpicevmcChannel`` (``UsbredirChannel``, ``PortChannel`` and
``WebDAVChannel`` derive from it; see ``base._PARENT``). The server side is spice-server's
``server/spicevmc.cpp``. Payloads are opaque here.
"""

from __future__ import annotations

from ..enums import DataCompressionType
from ..marshal import U8, U32, Bytes, Ctx, f, struct
from .base import CLIENT, SERVER, SPICEVMC, Message, message


def _compressed(c: Ctx) -> bool:
    return bool(c["type"] != DataCompressionType.NONE)


@message(SPICEVMC, SERVER, 101)
@struct
class SpicevmcData(Message):
    data: bytes = f(Bytes())


@message(SPICEVMC, SERVER, 102)
@struct
class SpicevmcCompressedData(Message):
    """``type`` (DataCompressionType); every type but NONE carries ``uncompressed_size``; the
    (LZ4 block) bytes run to the end of the message."""

    type: int = f(U8)
    uncompressed_size: int | None = f(U32, when=_compressed, default=None)
    compressed_data: bytes = f(Bytes())


@message(SPICEVMC, CLIENT, 101)
@struct
class ClientSpicevmcData(Message):
    data: bytes = f(Bytes())


@message(SPICEVMC, CLIENT, 102)
@struct
class ClientSpicevmcCompressedData(Message):
    type: int = f(U8)
    uncompressed_size: int | None = f(U32, when=_compressed, default=None)
    compressed_data: bytes = f(Bytes())
