"""libspice's codec choice per image and client (dcc.cpp get_compression_for_bitmap), table-driven."""

from __future__ import annotations

import pytest

from spiceserver.proto.enums import BitmapFmt as F
from spiceserver.proto.enums import ImageCompression as C
from spiceserver.worker.compression import ClientCompression, choose

GTK = dict(lz4_cap=True, glz_window=4 << 20)  # spice-gtk: LZ4 cap, a GLZ window
HTML5 = dict(lz4_cap=False, glz_window=0)  # spice-html5: neither


@pytest.mark.parametrize(
    ("pref", "client", "fmt", "w", "h", "stride", "photo", "want"),
    [
        (C.AUTO_GLZ, GTK, F.BIT32, 64, 64, 256, False, C.GLZ),
        (C.AUTO_GLZ, GTK, F.BIT32, 64, 64, 256, True, C.QUIC),
        (C.AUTO_GLZ, HTML5, F.BIT32, 64, 64, 256, False, C.LZ),  # no GLZ window: LZ
        (C.AUTO_LZ, GTK, F.BIT32, 64, 64, 256, False, C.LZ),
        (C.AUTO_GLZ, GTK, F.BIT32, 64, 64, 260, False, C.QUIC),  # padded rows: LZ cannot, Quic can
        (C.AUTO_GLZ, GTK, F.BIT8, 64, 64, 64, False, C.LZ),  # palette: no Quic, no GLZ
        (C.QUIC, GTK, F.BIT8, 64, 64, 64, False, C.OFF),
        (C.QUIC, GTK, F.BIT32, 2, 64, 8, False, C.OFF),  # under 3x3
        (C.LZ4, GTK, F.BIT32, 64, 64, 256, False, C.LZ4),
        (C.LZ4, HTML5, F.BIT32, 64, 64, 256, False, C.LZ),
        (C.LZ4, GTK, F.BIT8, 64, 64, 64, False, C.LZ),
        (C.GLZ, HTML5, F.BIT32, 64, 64, 256, False, C.LZ),
        (C.LZ, GTK, F.BIT32, 64, 64, 300, False, C.OFF),
        (C.OFF, GTK, F.BIT32, 64, 64, 256, True, C.OFF),
        (C.AUTO_GLZ, GTK, F.BIT32, 3, 4, 12, False, C.OFF),  # 48 bytes < 54
    ],
)
def test_choice(pref: C, client: dict[str, int], fmt: F, w: int, h: int, stride: int, photo: bool, want: C) -> None:
    cc = ClientCompression(preferred=pref, **client)  # type: ignore[arg-type]
    assert choose(fmt, w, h, stride, cc, high_graduality=photo) == want


def test_glz_only_inside_drawables() -> None:
    cc = ClientCompression(preferred=C.GLZ, **GTK)  # type: ignore[arg-type]
    assert choose(F.BIT32, 64, 64, 256, cc, in_drawable=False) == C.LZ


@pytest.mark.parametrize("low", [False, True])
def test_settings_from_config_are_typed(low: bool) -> None:
    """ServerConfig's option strings become enums once; a client's policy follows the wan rules."""
    from spiceserver.codecs.video import available_codecs
    from spiceserver.config import ServerConfig
    from spiceserver.proto.enums import VideoCodecType
    from spiceserver.worker.compression import DisplaySettings, WanPolicy

    s = DisplaySettings.from_config(ServerConfig(port=0, image_compression="lz4", jpeg_wan_compression="always", zlib_glz_wan_compression="auto"))
    assert s == DisplaySettings(C.LZ4, WanPolicy.ALWAYS, WanPolicy.AUTO, video_codecs=s.video_codecs)
    assert s.video_codecs[0] == VideoCodecType.MJPEG and set(s.video_codecs) == available_codecs()  # libspice's order
    policy = s.client_policy(lz4_cap=True, glz_window=0, low_bandwidth=low)
    assert (policy.preferred, policy.jpeg, policy.zlib_glz) == (C.LZ4, True, low)
    assert s.client_policy(lz4_cap=False, glz_window=0, low_bandwidth=low, preferred=C.QUIC).preferred == C.QUIC
    assert DisplaySettings.from_config(ServerConfig(port=0, video_codecs="spice:mjpeg")) == DisplaySettings()


def test_wrong_option_strings_still_raise_config_error() -> None:
    from spiceserver.config import ServerConfig
    from spiceserver.errors import ConfigError

    for kw in ({"image_compression": "zip"}, {"jpeg_wan_compression": "sometimes"}, {"zlib_glz_wan_compression": "AUTO"}):
        with pytest.raises(ConfigError):
            ServerConfig(port=0, **kw)  # type: ignore[arg-type]
