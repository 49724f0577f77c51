"""Protocol constants: channel types, link errors, capabilities and small enums.

Values from spice-protocol ``spice/protocol.h`` and ``spice/enums.h`` (generated from spice-common
``spice.proto``). Message type numbers live next to each message definition in
:mod:`spiceserver.proto.messages`.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

MAGIC = b"REDQ"
VERSION_MAJOR = 2
VERSION_MINOR = 2
TICKET_PUBKEY_BYTES = 162  # DER SubjectPublicKeyInfo of a 1024-bit RSA key
TICKET_CIPHER_BYTES = 128
MAX_PASSWORD_LENGTH = 60


class ChannelType(IntEnum):
    """``SPICE_CHANNEL_*``: channel types."""

    MAIN = 1
    DISPLAY = 2
    INPUTS = 3
    CURSOR = 4
    PLAYBACK = 5
    RECORD = 6
    TUNNEL = 7
    SMARTCARD = 8
    USBREDIR = 9
    PORT = 10
    WEBDAV = 11


#: Channel names as ``spice_server_set_channel_security`` and QEMU's ``tls-channel`` spell them.
CHANNEL_NAMES: dict[ChannelType, str] = {t: t.name.lower() for t in ChannelType}


class LinkErr(IntEnum):
    """``SPICE_LINK_ERR_*``: the error codes of a link reply."""

    OK = 0
    ERROR = 1
    INVALID_MAGIC = 2
    INVALID_DATA = 3
    VERSION_MISMATCH = 4
    NEED_SECURED = 5
    NEED_UNSECURED = 6
    PERMISSION_DENIED = 7
    BAD_CONNECTION_ID = 8
    CHANNEL_NOT_AVAILABLE = 9


class CommonCap(IntEnum):
    """``SPICE_COMMON_CAP_*``: capabilities every channel may announce."""

    PROTOCOL_AUTH_SELECTION = 0
    AUTH_SPICE = 1
    AUTH_SASL = 2
    MINI_HEADER = 3


class MainCap(IntEnum):
    """``SPICE_MAIN_CAP_*``: main channel capabilities."""

    SEMI_SEAMLESS_MIGRATE = 0
    NAME_AND_UUID = 1
    AGENT_CONNECTED_TOKENS = 2
    SEAMLESS_MIGRATE = 3


class DisplayCap(IntEnum):
    """``SPICE_DISPLAY_CAP_*``: display channel capabilities."""

    SIZED_STREAM = 0
    MONITORS_CONFIG = 1
    COMPOSITE = 2
    A8_SURFACE = 3
    STREAM_REPORT = 4
    LZ4_COMPRESSION = 5
    PREF_COMPRESSION = 6
    GL_SCANOUT = 7
    MULTI_CODEC = 8
    CODEC_MJPEG = 9
    CODEC_VP8 = 10
    CODEC_H264 = 11
    PREF_VIDEO_CODEC_TYPE = 12
    CODEC_VP9 = 13
    CODEC_H265 = 14


class InputsCap(IntEnum):
    """``SPICE_INPUTS_CAP_*``: inputs channel capabilities."""

    KEY_SCANCODE = 0


class PlaybackCap(IntEnum):
    """``SPICE_PLAYBACK_CAP_*``: playback channel capabilities."""

    CELT_0_5_1 = 0
    VOLUME = 1
    LATENCY = 2
    OPUS = 3


class RecordCap(IntEnum):
    """``SPICE_RECORD_CAP_*``: record channel capabilities."""

    CELT_0_5_1 = 0
    VOLUME = 1
    OPUS = 2


class SpicevmcCap(IntEnum):
    """``SPICE_SPICEVMC_CAP_*``: spicevmc (usbredir, port, webdav) channel capabilities."""

    DATA_COMPRESS_LZ4 = 0


class AuthMechanism(IntEnum):
    """The authentication mechanism a client selects (numbered as ``SPICE_COMMON_CAP_AUTH_*``)."""

    SPICE = 1
    SASL = 2


class MouseMode(IntFlag):
    """``SPICE_MOUSE_MODE_*``: server (relative) or client (absolute) mouse."""

    SERVER = 1
    CLIENT = 2


class NotifySeverity(IntEnum):
    """``SPICE_NOTIFY_SEVERITY_*``: severity of a NOTIFY message."""

    INFO = 0
    WARN = 1
    ERROR = 2


class NotifyVisibility(IntEnum):
    """``SPICE_NOTIFY_VISIBILITY_*``: visibility of a NOTIFY message."""

    LOW = 0
    MEDIUM = 1
    HIGH = 2


class MigrateFlags(IntFlag):
    """``SPICE_MIGRATE_*``: flags of a MIGRATE message."""

    NEED_FLUSH = 1
    NEED_DATA_TRANSFER = 2


class KeyboardModifiers(IntFlag):
    """``SPICE_KEYBOARD_MODIFIER_FLAGS_*``: keyboard LEDs."""

    SCROLL_LOCK = 1
    NUM_LOCK = 2
    CAPS_LOCK = 4


class MouseButton(IntEnum):
    """``SPICE_MOUSE_BUTTON_*``: a button number."""

    INVALID = 0
    LEFT = 1
    MIDDLE = 2
    RIGHT = 3
    UP = 4
    DOWN = 5
    SIDE = 6
    EXTRA = 7


class MouseButtonMask(IntFlag):
    """``SPICE_MOUSE_BUTTON_MASK_*``: the buttons held down, one bit each."""

    LEFT = 1
    MIDDLE = 2
    RIGHT = 4
    UP = 8
    DOWN = 16
    SIDE = 32
    EXTRA = 64


class DataCompressionType(IntEnum):
    """``SPICE_DATA_COMPRESSION_TYPE_*``: compression of spicevmc data."""

    NONE = 0
    LZ4 = 1


class ClipType(IntEnum):
    """``SPICE_CLIP_TYPE_*``: how a draw is clipped."""

    NONE = 0
    RECTS = 1


class BrushType(IntEnum):
    """``SPICE_BRUSH_TYPE_*``: none, a solid colour or a pattern image."""

    NONE = 0
    SOLID = 1
    PATTERN = 2


class ImageType(IntEnum):
    """``SPICE_IMAGE_TYPE_*``: how an image is encoded (or where it comes from)."""

    BITMAP = 0
    QUIC = 1
    RESERVED = 2
    LZ_PLT = 100
    LZ_RGB = 101
    GLZ_RGB = 102
    FROM_CACHE = 103
    SURFACE = 104
    JPEG = 105
    FROM_CACHE_LOSSLESS = 106
    ZLIB_GLZ_RGB = 107
    JPEG_ALPHA = 108
    LZ4 = 109


class ImageFlags(IntFlag):
    """``SPICE_IMAGE_FLAGS_*``: caching flags of an image descriptor."""

    CACHE_ME = 1
    HIGH_BITS_SET = 2
    CACHE_REPLACE_ME = 4


class ImageCompression(IntEnum):
    """``SPICE_IMAGE_COMPRESSION_*``: the server's image compression setting (and a client's preference)."""

    INVALID = 0
    OFF = 1
    AUTO_GLZ = 2
    AUTO_LZ = 3
    QUIC = 4
    GLZ = 5
    LZ = 6
    LZ4 = 7


class BitmapFmt(IntEnum):
    """``SPICE_BITMAP_FMT_*``: pixel formats of a bitmap image."""

    INVALID = 0
    BIT1_LE = 1
    BIT1_BE = 2
    BIT4_LE = 3
    BIT4_BE = 4
    BIT8 = 5
    BIT16 = 6
    BIT24 = 7
    BIT32 = 8
    RGBA = 9
    BIT8_A = 10


#: bytes per pixel of the byte-aligned bitmap formats (spice-common ``spice_bitmap_fmt_bpp`` / 8)
BITMAP_FMT_BYTES: dict[int, int] = {BitmapFmt.BIT8_A: 1, BitmapFmt.BIT16: 2, BitmapFmt.BIT24: 3, BitmapFmt.BIT32: 4, BitmapFmt.RGBA: 4}


class BitmapFlags(IntFlag):
    """``SPICE_BITMAP_FLAGS_*``: palette caching and row order of a bitmap."""

    PAL_CACHE_ME = 1
    PAL_FROM_CACHE = 2
    TOP_DOWN = 4


class SurfaceFmt(IntEnum):
    """``SPICE_SURFACE_FMT_*``: pixel formats of a surface."""

    INVALID = 0
    FMT_1_A = 1
    FMT_8_A = 8
    FMT_16_555 = 16
    FMT_16_565 = 80
    FMT_32_XRGB = 32
    FMT_32_ARGB = 96


def surface_fmt_bits(fmt: int) -> int:
    """Bits per pixel of a known SPICE_SURFACE_FMT_* (its low six bits, spice-protocol
    ``SPICE_SURFACE_FMT_DEPTH``), 0 for an unknown value (libspice ``surface_format_to_bpp``)."""
    return fmt & 0x3F if fmt in _SURFACE_FMTS else 0


_SURFACE_FMTS = frozenset(int(f) for f in SurfaceFmt if f != SurfaceFmt.INVALID)


class SurfaceFlags(IntFlag):
    """``SPICE_SURFACE_FLAGS_*``: flags of a SURFACE_CREATE."""

    PRIMARY = 1
    STREAMING_MODE = 2


class StringFlags(IntFlag):
    """``SPICE_STRING_FLAGS_*``: glyph depth and row order of a text string."""

    RASTER_A1 = 1
    RASTER_A4 = 2
    RASTER_A8 = 4
    RASTER_TOP_DOWN = 8


class LineFlags(IntFlag):
    """``SPICE_LINE_FLAGS_*``: flags of a stroke's line attributes."""

    START_WITH_GAP = 4
    STYLED = 8


class PathFlags(IntFlag):
    """``SPICE_PATH_*``: flags of a path segment."""

    BEGIN = 1
    END = 2
    CLOSE = 8
    BEZIER = 16


class CompositeFlags(IntFlag):
    """The ``SPICE_COMPOSITE_HAS_*`` bits of a COMPOSITE's flags."""

    HAS_MASK = 1 << 19
    HAS_SRC_TRANSFORM = 1 << 20
    HAS_MASK_TRANSFORM = 1 << 21


class CursorType(IntEnum):
    """``SPICE_CURSOR_TYPE_*``: pixel formats of a cursor shape."""

    ALPHA = 0
    MONO = 1
    COLOR4 = 2
    COLOR8 = 3
    COLOR16 = 4
    COLOR24 = 5
    COLOR32 = 6


class CursorFlags(IntFlag):
    """``SPICE_CURSOR_FLAGS_*``: no shape, cache it, or take it from the cache."""

    NONE = 1
    CACHE_ME = 2
    FROM_CACHE = 4


class VideoCodecType(IntEnum):
    """``SPICE_VIDEO_CODEC_TYPE_*``: video stream codecs."""

    MJPEG = 1
    VP8 = 2
    H264 = 3
    VP9 = 4
    H265 = 5


class AudioDataMode(IntEnum):
    """``SPICE_AUDIO_DATA_MODE_*``: how audio samples are encoded."""

    INVALID = 0
    RAW = 1
    CELT_0_5_1 = 2
    OPUS = 3


class AudioFmt(IntEnum):
    """``SPICE_AUDIO_FMT_*``: audio sample formats."""

    INVALID = 0
    S16 = 1


class VscMessageType(IntEnum):
    """spice.proto ``vsc_message_type``: smartcard (VSCard) message types."""

    INIT = 1
    ERROR = 2
    READER_ADD = 3
    READER_REMOVE = 4
    ATR = 5
    CARD_REMOVE = 6
    APDU = 7
    FLUSH = 8
    FLUSH_COMPLETE = 9


class PortEvent(IntEnum):
    """``SPICE_PORT_EVENT_*``: events of a port channel."""

    OPENED = 0
    CLOSED = 1
    BREAK = 2
