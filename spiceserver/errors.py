"""The one exception family of spiceserver.

Every error the library raises on purpose derives from :class:`SpiceError`. Parsers of hostile
input (network bytes, guest memory) raise only :class:`ProtocolError` (network) or
:class:`GuestError` (QXL memory); any other exception escaping a parser is a bug, and the server
maps it to an internal error without putting details on the wire (compare websockets
``protocol.py`` ``parse()``).
"""

from __future__ import annotations

__all__ = [
    "SpiceError",
    "ProtocolError",
    "LinkError",
    "GuestError",
    "ConfigError",
    "NotSupportedError",
    "VideoCodecUnavailable",
    "VideoEncodeError",
    "OpusUnavailable",
    "OpusEncodeError",
    "OpusDecodeError",
]


class SpiceError(Exception):
    """Base class of every error raised by spiceserver."""


class ProtocolError(SpiceError):
    """A peer sent bytes that violate the SPICE protocol.

    Args:
        reason: a short human-readable reason, logged by the server; never sent to the peer.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LinkError(SpiceError):
    """The link handshake failed with a ``SpiceLinkErr`` code that is sent to the peer.

    Args:
        code: the ``SPICE_LINK_ERR_*`` value (see :class:`spiceserver.proto.enums.LinkErr`).
        reason: why, for the log.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} (link error {code})")
        self.code = code
        self.reason = reason


class GuestError(SpiceError):
    """The guest put something invalid in QXL device memory (bad pointer, size, ring index)."""


class ConfigError(SpiceError, ValueError):
    """A :class:`~spiceserver.config.ServerConfig` value is invalid."""


class NotSupportedError(ConfigError, NotImplementedError):
    """A configured feature is not implemented (yet); raised at configuration time."""


class VideoCodecUnavailable(SpiceError):
    """A video codec cannot be used here: PyAV (the ``spiceserver[video]`` extra) is not installed,
    its FFmpeg lacks the encoder, or the codec is one spiceserver does not encode.

    Args:
        codec: the ``SPICE_VIDEO_CODEC_TYPE_*`` value.
        reason: why, for the log.
    """

    def __init__(self, codec: int, reason: str) -> None:
        super().__init__(f"video codec {getattr(codec, 'name', codec)} unavailable: {reason}")
        self.codec = codec
        self.reason = reason


class VideoEncodeError(SpiceError):
    """A video encoder failed on a frame (or could not be opened at its size)."""


class OpusUnavailable(SpiceError):
    """Opus cannot be used here: PyAV (the ``spiceserver[video]`` extra) does not import, or its
    FFmpeg has no ``libopus``. The sound channels then stay in RAW mode."""


class OpusEncodeError(SpiceError):
    """libopus failed on a playback frame (libspice: ``"encode failed"``, and the client is
    disconnected)."""


class OpusDecodeError(ProtocolError):
    """A record client sent an Opus packet that does not decode (libspice ``snd_codec_decode``
    fails and ``handle_message`` returns false: that client is disconnected)."""
