"""Which image codec an image gets: libspice's choice, per client.

Counterpart of spice ``server/dcc.cpp`` (``get_compression_for_bitmap``, ``dcc_compress_image``,
``can_quic_compress``, ``can_lz_compress``) and the wan options of ``reds.cpp``. The rules:

* fewer than 54 bytes of pixels, or compression off: raw;
* QUIC: Quic if the bitmap is not a palette image and at least 3x3, else raw;
* AUTO_GLZ / AUTO_LZ: Quic for photo-like images (high graduality) or when LZ cannot take the
  bitmap (padded rows); otherwise GLZ / LZ;
* GLZ: only inside a drawable, only for RGB formats, and only if the client announced a GLZ window
  (spice-html5 announces 0): else LZ;
* LZ4: only for RGB formats and clients with the LZ4 cap: else LZ;
* LZ / LZ4 / GLZ need rows without padding: else raw.

When the choice is Quic and lossy images are allowed (``jpeg-wan-compression`` always, or auto on a
low-bandwidth client) the image goes as JPEG instead (JPEG_ALPHA with an RGBA image).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..proto.enums import BITMAP_FMT_BYTES, BitmapFmt, ImageCompression, VideoCodecType

if TYPE_CHECKING:
    from ..config import ServerConfig

__all__ = ["ClientCompression", "DisplaySettings", "WanPolicy", "choose", "needs_graduality", "MIN_SIZE_TO_COMPRESS", "MIN_DIMENSION_TO_QUIC"]

MIN_SIZE_TO_COMPRESS = 54
MIN_DIMENSION_TO_QUIC = 3

_RGB = {BitmapFmt.BIT16, BitmapFmt.BIT24, BitmapFmt.BIT32, BitmapFmt.RGBA}
_PLT = {BitmapFmt.BIT1_LE, BitmapFmt.BIT1_BE, BitmapFmt.BIT4_LE, BitmapFmt.BIT4_BE, BitmapFmt.BIT8}
_PLT_BITS = {BitmapFmt.BIT1_LE: 1, BitmapFmt.BIT1_BE: 1, BitmapFmt.BIT4_LE: 4, BitmapFmt.BIT4_BE: 4, BitmapFmt.BIT8: 8}


class WanPolicy(enum.Enum):
    """When a WAN-only image option applies (QEMU ``jpeg-wan-compression``, ``zlib-glz-wan-compression``)."""

    AUTO = "auto"  # on clients the main channel's network test found slow
    NEVER = "never"
    ALWAYS = "always"

    def applies(self, low_bandwidth: bool) -> bool:
        """Whether the option applies to a client whose bandwidth is ``low_bandwidth``."""
        return self is WanPolicy.ALWAYS or (self is WanPolicy.AUTO and low_bandwidth)


@dataclass(frozen=True, slots=True)
class DisplaySettings:
    """The server's image options, typed, shared by a worker and its display clients.

    Built once from the configuration with :meth:`from_config`; nothing below compares strings.
    """

    image_compression: ImageCompression = ImageCompression.AUTO_GLZ
    jpeg_wan: WanPolicy = WanPolicy.AUTO
    zlib_glz_wan: WanPolicy = WanPolicy.AUTO
    #: bytes the drawables of one display may keep (``ServerConfig.max_retained_draw_bytes``)
    max_retained_bytes: int = 256 << 20
    #: ``ServerConfig.streaming_video``: "off", "all" or "filter"
    streaming_video: str = "filter"
    #: the codecs streams may use, most preferred first (``ServerConfig.video_codecs``)
    video_codecs: tuple[VideoCodecType, ...] = (VideoCodecType.MJPEG,)

    @classmethod
    def from_config(cls, cfg: ServerConfig) -> DisplaySettings:
        """QEMU's option spellings (``image_compression="auto_glz"``...) -> the typed settings."""
        return cls(
            ImageCompression[cfg.image_compression.upper()],
            WanPolicy(cfg.jpeg_wan_compression),
            WanPolicy(cfg.zlib_glz_wan_compression),
            cfg.max_retained_draw_bytes,
            cfg.streaming_video,
            tuple(VideoCodecType[name.upper()] for name in cfg.video_codecs or ()),
        )

    def client_policy(self, *, lz4_cap: bool, glz_window: int, low_bandwidth: bool, preferred: ImageCompression | None = None) -> ClientCompression:
        """What one client's images may use (``preferred``: its PREFERRED_COMPRESSION, if any)."""
        return ClientCompression(
            preferred=self.image_compression if preferred is None else preferred,
            lz4_cap=lz4_cap,
            glz_window=glz_window,
            jpeg=self.jpeg_wan.applies(low_bandwidth),
            zlib_glz=self.zlib_glz_wan.applies(low_bandwidth),
        )


@dataclass(frozen=True)
class ClientCompression:
    """What one client's images may use."""

    preferred: ImageCompression = ImageCompression.AUTO_GLZ
    lz4_cap: bool = False
    glz_window: int = 0  # pixels, from DISPLAY_INIT; 0 = no GLZ (spice-html5)
    jpeg: bool = False  # lossy allowed for photo-like images
    zlib_glz: bool = False

    def effective(self) -> ImageCompression:
        """libspice ``dcc_handle_init``: no GLZ window means LZ instead of GLZ."""
        if self.glz_window <= 0:
            if self.preferred == ImageCompression.AUTO_GLZ:
                return ImageCompression.AUTO_LZ
            if self.preferred == ImageCompression.GLZ:
                return ImageCompression.LZ
        return self.preferred


def has_extra_stride(fmt: int, width: int, stride: int) -> bool:
    if fmt in BITMAP_FMT_BYTES:
        return width * BITMAP_FMT_BYTES[fmt] < stride
    if fmt in _PLT_BITS:
        return (width * _PLT_BITS[BitmapFmt(fmt)] + 7) // 8 < stride
    return False


def choose(
    fmt: int,
    width: int,
    height: int,
    stride: int,
    client: ClientCompression,
    *,
    in_drawable: bool = True,
    high_graduality: bool | None = None,
) -> ImageCompression:
    """The codec for a bitmap; ``high_graduality`` is computed lazily by the caller when needed.

    Args:
        high_graduality: whether the image is photo-like (None: not computed; treated as no).
    """
    if height * stride < MIN_SIZE_TO_COMPRESS:
        return ImageCompression.OFF
    pref = client.effective()
    if pref == ImageCompression.OFF:
        return ImageCompression.OFF
    can_quic = fmt not in _PLT and width >= MIN_DIMENSION_TO_QUIC and height >= MIN_DIMENSION_TO_QUIC
    can_lz = not has_extra_stride(fmt, width, stride)
    if pref == ImageCompression.QUIC:
        return ImageCompression.QUIC if can_quic else ImageCompression.OFF
    if pref in (ImageCompression.AUTO_GLZ, ImageCompression.AUTO_LZ):
        if can_quic:
            if fmt in _RGB and high_graduality:
                return ImageCompression.QUIC
            if not can_lz:
                return ImageCompression.QUIC
        pref = ImageCompression.LZ if pref == ImageCompression.AUTO_LZ else ImageCompression.GLZ
    if pref == ImageCompression.GLZ and (not in_drawable or fmt not in _RGB or client.glz_window <= 0):
        pref = ImageCompression.LZ
    if pref == ImageCompression.LZ4 and (fmt not in _RGB or not client.lz4_cap):
        pref = ImageCompression.LZ
    if pref in (ImageCompression.LZ, ImageCompression.LZ4, ImageCompression.GLZ):
        return pref if can_lz else ImageCompression.OFF
    return ImageCompression.OFF


def needs_graduality(fmt: int, width: int, height: int, stride: int, client: ClientCompression) -> bool:
    """Whether :func:`choose` would look at the image's graduality (compute it only then)."""
    return (
        client.effective() in (ImageCompression.AUTO_GLZ, ImageCompression.AUTO_LZ)
        and height * stride >= MIN_SIZE_TO_COMPRESS
        and fmt in _RGB
        and width >= MIN_DIMENSION_TO_QUIC
        and height >= MIN_DIMENSION_TO_QUIC
    )
