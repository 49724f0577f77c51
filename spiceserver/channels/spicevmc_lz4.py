"""LZ4 on the spicevmc channels (usbredir, port, WebDAV), sans-IO: when to compress, how to undo it.

Counterpart of spice ``server/spicevmc.cpp`` ``try_compress_lz4`` (server -> client) and
``handle_compressed_msg`` (client -> server); spice-gtk does the mirror image in
``src/channel-usbredir.c`` (``try_write_compress_LZ4``). The message is
``SPICEVMC_COMPRESSED_DATA`` (102 both ways, spice-common ``spice.proto`` ``CompressedData``):
``u8 type`` (``DataCompressionType``), ``u32 uncompressed_size`` for every type but NONE, then the
raw LZ4 block (``LZ4_compress_default``: no frame, no stored size).

libspice compresses a device read only when the client announced ``SPICEVMC_CAP_DATA_COMPRESS_LZ4``,
the read is over :data:`COMPRESS_THRESHOLD` (1000) bytes, the client's socket is not a Unix socket
(compressing for a local peer costs CPU for nothing) and the result is smaller; otherwise it sends
plain ``SPICEVMC_DATA``. It takes only LZ4 from the client (any other type disconnects it) and
decompresses into a buffer of the announced size. Here that size is checked against a bound and
against what the compressed bytes can possibly expand to (LZ4 expands at most about 255 times)
before anything is allocated, and the result must be exactly that size.

It sits in :mod:`spiceserver.channels`, not in the sans-IO :mod:`spiceserver.proto`, because it needs
the ``lz4`` package (a dependency of spiceserver; ``lz4.block`` is liblz4's block format) and proto
imports only the standard library.
"""

from __future__ import annotations

import lz4.block  # type: ignore[import-untyped]

from ..errors import ProtocolError
from ..proto.enums import DataCompressionType
from ..proto.messages.spicevmc import ClientSpicevmcCompressedData, SpicevmcCompressedData, SpicevmcData

__all__ = ["COMPRESS_THRESHOLD", "MAX_UNCOMPRESSED", "compress_vmc", "decompress_vmc"]

#: libspice ``COMPRESS_THRESHOLD``: reads of at most this many bytes are never compressed
COMPRESS_THRESHOLD = 1000
#: the default bound of a decompressed message (libspice's device write queue bound, 1 MiB)
MAX_UNCOMPRESSED = 1024 * 1024
#: LZ4's best case: a 255-byte run of match-length bytes per byte of input, plus the last literals
_MAX_RATIO = 255
_SLACK = 16


def compress_vmc(data: bytes, client_has_lz4: bool, unix_socket: bool) -> SpicevmcData | SpicevmcCompressedData:
    """The message that carries ``data`` (one device read) to the client, as libspice chooses it.

    Args:
        data: the bytes read from the device.
        client_has_lz4: the client announced ``SpicevmcCap.DATA_COMPRESS_LZ4``.
        unix_socket: the client is connected over a Unix socket (never compressed).
    """
    if unix_socket or not client_has_lz4 or len(data) <= COMPRESS_THRESHOLD:
        return SpicevmcData(data=bytes(data))
    packed: bytes = lz4.block.compress(bytes(data), store_size=False)
    if 0 < len(packed) < len(data):
        return SpicevmcCompressedData(type=DataCompressionType.LZ4, uncompressed_size=len(data), compressed_data=packed)
    return SpicevmcData(data=bytes(data))


def decompress_vmc(
    msg: ClientSpicevmcCompressedData | SpicevmcCompressedData, max_size: int = MAX_UNCOMPRESSED
) -> bytes:
    """The bytes a ``SPICEVMC_COMPRESSED_DATA`` message carries.

    Args:
        msg: the client's message (or, for a test client, the server's).
        max_size: the largest decompressed size accepted.

    Raises:
        ProtocolError: not LZ4, an announced size of 0, over ``max_size`` or beyond what the
            compressed bytes can expand to, corrupt LZ4 data, or a result of another size.
    """
    if msg.type != DataCompressionType.LZ4:
        raise ProtocolError(f"spicevmc compressed data of unknown type {msg.type}")
    size = msg.uncompressed_size
    packed = msg.compressed_data
    if size is None or size <= 0:
        raise ProtocolError("spicevmc compressed data announces no size")
    if size > max_size:
        raise ProtocolError(f"spicevmc compressed data announces {size} bytes (bound {max_size})")
    if size > len(packed) * _MAX_RATIO + _SLACK:
        raise ProtocolError(f"spicevmc compressed data: {len(packed)} bytes cannot expand to {size}")
    try:
        data: bytes = lz4.block.decompress(packed, uncompressed_size=size)
    except lz4.block.LZ4BlockError as exc:
        raise ProtocolError("spicevmc compressed data: corrupt LZ4 block") from exc
    if len(data) != size:
        raise ProtocolError(f"spicevmc compressed data: {len(data)} bytes, {size} announced")
    return data
