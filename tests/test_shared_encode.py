"""Encode once (:mod:`spiceserver.worker.shared_encode`): two display clients of one display whose
codec choice agrees get the same bytes from one encode; a different choice, or GLZ (the client's own
window), encodes per client. Driven on the caller's thread (the worker is never started)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from spiceserver.canvas.surface import PixFmt
from spiceserver.config import ServerConfig
from spiceserver.errors import ConfigError
from spiceserver.metrics import DisplayMetrics, Metrics
from spiceserver.proto.channel import ChannelConnection
from spiceserver.proto.enums import ChannelType, DisplayCap, ImageCompression, ImageType
from spiceserver.proto.link import caps_to_words
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import CLIENT, Rect
from spiceserver.worker.display_client import DisplayChannelClient
from spiceserver.worker.drawable import make_drawable
from spiceserver.worker.messages import ClientConnected, CollectMetrics
from spiceserver.worker.ops import CreateSurface, Draw
from spiceserver.worker.picture import picture_image
from spiceserver.worker.shared_encode import SharedEncodes
from spiceserver.worker.worker import DisplayWorker
from tests.conftest import start_server
from tests.support.client import connect
from tests.support.display import DisplayState, link_display, pump_until
from tests.test_display import images_in
from tests.test_video_streams import H as VH
from tests.test_video_streams import W as VW
from tests.test_video_streams import play

W, H = 96, 64


@pytest.fixture(autouse=True)
def _kernels() -> None:
    from spiceserver.codecs import warmup

    assert warmup.wait(300)  # the codec choice is LZ4/raw until the kernels are compiled


class Viewer:
    """One display client of ``worker``: its server-side DisplayChannelClient and a client end that
    ACKs, keeps every byte received and renders the messages."""

    def __init__(self, worker: DisplayWorker, cc_id: int, *, session: int, glz_window: int = 0, caps: frozenset[int] = frozenset()) -> None:
        info = ClientConnected(cc_id, ChannelType.DISPLAY, 0, True, (), caps_to_words(set(caps)), session, f"viewer{cc_id}")
        self.dcc = DisplayChannelClient(info, worker.surfaces, worker.monitors_config, worker.settings, None, worker.caches, worker.shared)
        worker.dccs[cc_id] = self.dcc
        self.client = ChannelConnection(ChannelType.DISPLAY, CLIENT, mini_header=True, max_message_size=1 << 28)
        self.client.send(d.DisplayInit(pixmap_cache_id=1, pixmap_cache_size=1 << 20, glz_dictionary_id=1, glz_dictionary_window_size=glz_window))
        self.dcc.on_data(self.client.data_to_send())
        self.state = DisplayState()
        self.wire = bytearray()

    def prefer(self, compression: ImageCompression) -> None:
        self.client.send(d.PreferredCompression(image_compression=compression))
        self.dcc.on_data(self.client.data_to_send())

    def drain(self) -> bytes:
        """Everything the client's pipe holds, as it went on the wire."""
        out = bytearray()
        while self.dcc.pipe:
            chunk = self.dcc.produce()
            out += chunk
            self.dcc.written(len(chunk))
            for msg in self.client.receive_data(chunk):
                self.state.apply(msg)  # type: ignore[arg-type]
            self.dcc.on_data(self.client.data_to_send())  # ACKs keep the window open
        self.wire += out
        return bytes(out)


def copy_draw(pixels: np.ndarray) -> Draw:
    """A full-surface DRAW_COPY of ``pixels`` (one BIT32 bitmap)."""
    h, w = pixels.shape
    box = Rect(top=0, left=0, bottom=h, right=w)
    op = d.Copy(src_bitmap=picture_image(pixels, PixFmt.X8R8G8B8), src_area=box, rop_descriptor=8, scale_mode=1, mask=d.QMask())
    return Draw(make_drawable(0, d.DisplayBase(surface_id=0, box=box, clip=d.Clip()), op))


def blocks(seed: int) -> np.ndarray:
    """Desktop-like content: LZ / GLZ, never Quic."""
    rng = np.random.default_rng(seed)
    small = rng.choice(np.array([0x202020, 0xE0E0E0, 0x3060C0, 0xC04020], np.uint32), size=(H // 8, W // 8))
    return np.repeat(np.repeat(small, 8, 0), 8, 1)


def photo(seed: int) -> np.ndarray:
    """A smooth gradient with noise: high graduality, Quic."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W]
    base = ((x * 255 // W) << 16 | (y * 255 // H) << 8 | ((x + y) * 127 // (W + H))).astype(np.int64)
    return (base + rng.integers(0, 3, size=(H, W))).astype(np.uint32) & 0xFFFFFF


@pytest.fixture
def worker() -> Iterator[DisplayWorker]:
    w = DisplayWorker("shared-encode")
    w.apply(CreateSurface(0, W, H, primary=True))
    yield w
    w.dispatcher.close()


def _types(v: Viewer) -> list[int]:
    return [img.descriptor.type for img in images_in(v.state.messages)]


def _draw_and_drain(worker: DisplayWorker, pixels: np.ndarray, *viewers: Viewer) -> tuple[list[bytes], int, int]:
    """Draw ``pixels``, drain every viewer; returns their bytes and the encodes / shares it took."""
    before = (worker.shared.stats.encoded, worker.shared.stats.shared)
    worker.apply(copy_draw(pixels))
    wires = [v.drain() for v in viewers]
    for v in viewers:
        assert np.array_equal(v.state.surfaces[0].pixels & 0xFFFFFF, pixels), "the client's canvas must show the draw"
    return wires, worker.shared.stats.encoded - before[0], worker.shared.stats.shared - before[1]


def test_same_caps_same_bytes_one_encode(worker: DisplayWorker) -> None:
    a, b = Viewer(worker, 1, session=1), Viewer(worker, 2, session=2)
    assert a.drain() == b.drain()  # SET_ACK, init, the surface's picture: identical for identical clients
    for seed, want in ((1, ImageType.LZ_RGB), (2, ImageType.QUIC)):
        pixels = blocks(seed) if want == ImageType.LZ_RGB else photo(seed)
        (wa, wb), encoded, shared = _draw_and_drain(worker, pixels, a, b)
        assert wa == wb  # the same bytes on the wire
        assert (encoded, shared) == (1, 1), (want, encoded, shared)
        assert _types(a)[-1] == _types(b)[-1] == want


def test_glz_clients_share_quic_but_code_glz_each(worker: DisplayWorker) -> None:
    a, b = Viewer(worker, 1, session=1, glz_window=1 << 20), Viewer(worker, 2, session=2, glz_window=1 << 20)
    a.drain(), b.drain()
    _, encoded, shared = _draw_and_drain(worker, blocks(3), a, b)
    assert (encoded, shared) == (2, 0)  # GLZ: each client's own window
    assert _types(a)[-1] == _types(b)[-1] == ImageType.GLZ_RGB
    _, encoded, shared = _draw_and_drain(worker, photo(4), a, b)
    assert (encoded, shared) == (1, 1)  # Quic does not depend on the window
    assert _types(a)[-1] == _types(b)[-1] == ImageType.QUIC


def test_different_preference_encodes_twice(worker: DisplayWorker) -> None:
    a = Viewer(worker, 1, session=1)
    b = Viewer(worker, 2, session=2, caps=frozenset({DisplayCap.LZ4_COMPRESSION, DisplayCap.PREF_COMPRESSION}))
    b.prefer(ImageCompression.LZ4)
    a.drain(), b.drain()
    (wa, wb), encoded, shared = _draw_and_drain(worker, blocks(5), a, b)
    assert (encoded, shared) == (2, 0)
    assert wa != wb
    assert (_types(a)[-1], _types(b)[-1]) == (ImageType.LZ_RGB, ImageType.LZ4)
    # a third client that agrees with b takes b's LZ4 result
    c = Viewer(worker, 3, session=3, caps=frozenset({DisplayCap.LZ4_COMPRESSION, DisplayCap.PREF_COMPRESSION}))
    c.prefer(ImageCompression.LZ4)
    c.drain()
    (_, wb, wc), encoded, shared = _draw_and_drain(worker, blocks(6), a, b, c)
    assert (encoded, shared) == (2, 1) and wb == wc


def test_canvas_pictures_are_not_kept(worker: DisplayWorker) -> None:
    """A new client's first picture is its own copy of the canvas: encoded, counted, never kept."""
    worker.apply(copy_draw(photo(7)))
    a = Viewer(worker, 1, session=1)
    a.drain()
    assert worker.shared.stats.encoded >= 1 and len(worker.shared) == 0


def test_metrics_count_encodes_shares_and_bytes_per_client(worker: DisplayWorker) -> None:
    a, b = Viewer(worker, 1, session=1), Viewer(worker, 2, session=2)
    a.drain(), b.drain()
    _draw_and_drain(worker, photo(8), a, b)
    m: DisplayMetrics = worker.request(CollectMetrics(0))
    assert m.images_shared == 1 and m.images_encoded >= 1 and m.bytes_encoded > 0
    assert m.client_bytes == {1: len(a.wire), 2: len(b.wire)}
    text = Metrics(0, 0, 0, 0, 0, 0, 0, 0, True, displays=(m,)).prometheus()
    assert 'spiceserver_display_image_encodes_shared_total{display="0"} 1' in text
    assert f'spiceserver_display_client_bytes_total{{display="0",client="2"}} {len(b.wire)}' in text
    assert "spiceserver_display_image_encodes_total" in text and "spiceserver_display_encoded_bytes_total" in text


def test_shared_encodes_is_bounded_and_keyed_by_identity() -> None:
    cache = SharedEncodes(max_entries=2, max_bytes=100)
    runs: list[int] = []

    def enc(n: int) -> bytes:
        runs.append(n)
        return bytes(n)

    x, y, z = object(), object(), object()
    assert cache.get(x, 10, ("lz",), lambda: enc(5)) == bytes(5)
    assert cache.get(x, 10, ("lz",), lambda: enc(6)) == bytes(5)  # shared
    assert cache.get(x, 10, ("quic",), lambda: enc(7)) == bytes(7)  # another codec: its own run
    cache.get(y, 10, ("lz",), lambda: enc(8))  # three entries > 2: x's lz goes (least recently used)
    assert len(cache) == 2
    assert cache.get(x, 10, ("lz",), lambda: enc(9)) == bytes(9)
    assert cache.get(z, 200, ("lz",), lambda: enc(1)) == bytes(1)  # larger than the budget: not kept
    assert cache.held_bytes <= 100
    assert cache.get(z, 0, ("lz",), lambda: enc(2), keep=False) == bytes(2)
    assert runs == [5, 7, 8, 9, 1, 2]
    assert (cache.stats.encoded, cache.stats.shared, cache.stats.bytes_encoded, cache.stats.bytes_shared) == (6, 1, 32, 5)
    cache.count(4)  # a GLZ run
    assert cache.stats.encoded == 7


def test_max_clients_must_be_positive() -> None:
    """(Which sessions stay when a new one comes: tests/test_roles.py.)"""
    with pytest.raises(ConfigError):
        ServerConfig(port=0, max_clients=0)


async def test_two_clients_share_mjpeg_stream_frames_at_the_same_quality() -> None:
    """A region repainted at video rate streams (MJPEG) to two clients of one display: a frame both
    rate controls encode at the same quality is encoded once; both clients end pixel-exact."""
    r = await start_server(streaming_video="filter", max_clients=2)
    fb = r.server.add_framebuffer_display(VW, VH)
    try:
        fb.update(np.full((VH, VW), 0x203040, np.uint32))
        viewers = []
        for _ in range(2):
            s = await connect(r.ep)
            ch, state = await link_display(s)
            await pump_until(ch, state, lambda st: st.marks == 1)
            viewers.append((s, ch, state))

        async def follow(ch: object, state: DisplayState) -> None:
            while True:
                state.apply(await ch.recv(30))  # type: ignore[attr-defined]

        readers = [asyncio.ensure_future(follow(ch, state)) for _, ch, state in viewers]
        await play(fb, range(60))
        want = fb.snapshot() & 0xFFFFFF
        for _s, _ch, state in viewers:
            deadline = asyncio.get_running_loop().time() + 30
            while not (any(isinstance(m, d.StreamDestroy) for m in state.messages) and np.array_equal(state.surfaces[0].pixels & 0xFFFFFF, want)):
                assert asyncio.get_running_loop().time() < deadline, [type(m).__name__ for m in state.messages[-5:]]
                await asyncio.sleep(0.05)
        for t in readers:
            t.cancel()
        m = (await r.server.metrics()).displays[0]
        frames = [state.stream_frames for _, _, state in viewers]
        print(f"\nstream frames per client {frames}, shared {m.stream_frames_shared}, video {m.video}")
        assert all(f > 0 for f in frames) and m.stream_frames_shared > 0
        assert 'spiceserver_display_stream_frames_shared_total{display="0"}' in Metrics(0, 0, 0, 0, 0, 0, 0, 0, True, displays=(m,)).prometheus()
    finally:
        await r.server.close()
