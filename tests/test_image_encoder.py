"""The per-client image encoder end to end: what it produces decodes (as a client would) to the
image it was given -- exactly for lossless codecs, within a bound for JPEG / JPEG_ALPHA."""

from __future__ import annotations

import numpy as np
import pytest

from spiceserver.canvas.images import NullResolver, decode_image
from spiceserver.canvas.surface import PixFmt
from spiceserver.codecs import warmup
from spiceserver.codecs.glz import GlzDecoderWindow, GlzDictionary
from spiceserver.desktop import SyntheticDesktop
from spiceserver.proto.enums import BitmapFlags, BitmapFmt, ImageCompression, ImageType
from spiceserver.proto.messages import display as d
from spiceserver.worker.compression import ClientCompression
from spiceserver.worker.image_encoder import ImageEncoder, PixmapCache


class Client(NullResolver):
    def __init__(self) -> None:
        self.window = GlzDecoderWindow()

    def glz_window(self) -> GlzDecoderWindow:
        return self.window


def image(px: np.ndarray, fmt: int = BitmapFmt.BIT32, top_down: bool = True) -> d.Image:
    h, w = px.shape
    rows = px if top_down else px[::-1]
    return d.Image(
        descriptor=d.ImageDescriptor(id=7, type=ImageType.BITMAP, flags=0, width=w, height=h),
        bitmap=d.BitmapData(format=fmt, flags=BitmapFlags.TOP_DOWN if top_down else 0, x=w, y=h, stride=w * 4, palette=None, data=np.ascontiguousarray(rows).astype("<u4").tobytes()),
    )


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    assert warmup.wait(300)


@pytest.mark.parametrize("pref", [ImageCompression.AUTO_GLZ, ImageCompression.AUTO_LZ, ImageCompression.QUIC, ImageCompression.LZ, ImageCompression.GLZ, ImageCompression.LZ4, ImageCompression.OFF])
@pytest.mark.parametrize("top_down", [True, False])
def test_lossless_modes_decode_exactly(pref: ImageCompression, top_down: bool) -> None:
    desk = SyntheticDesktop(200, 120).frame(0.5)
    enc = ImageEncoder(policy=ClientCompression(preferred=pref, lz4_cap=True, glz_window=1 << 20), cache=PixmapCache(1 << 20), glz=GlzDictionary(1 << 20))
    client = Client()
    for px in (desk, SyntheticDesktop._photo(120, 90)):
        out, _ = enc.encode(image(px, top_down=top_down))
        got = decode_image(out, PixFmt.X8R8G8B8, client)
        assert (got.pixels & 0xFFFFFF == px).all(), (pref, out.descriptor.type)


def test_jpeg_and_jpeg_alpha_within_bound() -> None:
    enc = ImageEncoder(policy=ClientCompression(jpeg=True, lz4_cap=True, glz_window=1 << 20), cache=None, glz=GlzDictionary(1 << 20))
    photo = SyntheticDesktop._photo(160, 100)
    out, _ = enc.encode(image(photo), lossy_ok=True)
    assert out.descriptor.type == ImageType.JPEG
    alpha = (np.arange(160 * 100, dtype=np.uint32).reshape(100, 160) % 256) << 24
    out2, _ = enc.encode(image(photo | alpha, BitmapFmt.RGBA), lossy_ok=True)
    assert out2.descriptor.type == ImageType.JPEG_ALPHA
    got = decode_image(out2, PixFmt.A8R8G8B8, Client(), want_original=True)
    assert (got.pixels >> 24 == alpha >> 24).all()  # the alpha plane is lossless
    chans = lambda a: np.stack([(a >> s) & 255 for s in (16, 8, 0)], -1).astype(int)  # noqa: E731
    assert np.abs(chans(got.pixels) - chans(photo)).mean() < 3
    # lossless where lossy is not allowed, and never cached when lossy
    out3, _ = enc.encode(image(photo), lossy_ok=False)
    assert out3.descriptor.type == ImageType.QUIC
