"""The framebuffer path's own costs and contracts: the tile diff against a naive full-frame diff, the
tile ids (xxh3), and what ``update`` copies or keeps by reference (``copy=True`` / ``copy=False``)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver import ServerConfig, SpiceServer
from spiceserver.framebuffer import (
    TILE,
    FramebufferDisplay,
    as_bgrx,
    dirty_tiles,
    owned_copy,
    tile_bytes,
    tile_id,
    tile_runs,
)
from spiceserver.worker.messages import FramebufferFrame


def naive_changed_tiles(old: np.ndarray, new: np.ndarray, tile: int) -> np.ndarray:
    """The reference: a whole-frame ``!=``, padded to whole tiles, any() per tile."""
    h, w = new.shape
    th, tw = -(-h // tile), -(-w // tile)
    pad = np.zeros((th * tile, tw * tile), dtype=bool)
    pad[:h, :w] = old != new
    return np.asarray(pad.reshape(th, tile, tw, tile).any(axis=(1, 3)))


def tiles_covered(rects: list[tuple[int, int, int, int]], h: int, w: int, tile: int) -> np.ndarray:
    """How many of ``rects`` cover each tile; each rect must be whole tiles (clipped at the frame's edge)."""
    th, tw = -(-h // tile), -(-w // tile)
    count = np.zeros((th, tw), np.int32)
    for left, top, right, bottom in rects:
        assert left % tile == 0 and top % tile == 0 and 0 <= left < right <= w and 0 <= top < bottom <= h
        assert right % tile == 0 or right == w
        assert bottom % tile == 0 or bottom == h
        count[top // tile : -(-bottom // tile), left // tile : -(-right // tile)] += 1
    return count


@st.composite
def frame_pairs(draw: Any) -> tuple[np.ndarray, np.ndarray, int, str]:
    """Two frames of one size with a few changed rectangles and pixels, a tile size and a layout."""
    h, w = draw(st.integers(1, 150)), draw(st.integers(1, 150))
    tile = draw(st.sampled_from([TILE, 1, 2, 3, 8, 16, 33]))
    layout = draw(st.sampled_from(["u32", "bgrx-u8", "strided-rows", "every-other-column"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    old = rng.integers(0, 1 << 24, size=(h, w), dtype=np.uint32)
    new = old.copy()
    for _ in range(draw(st.integers(0, 4))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = int(rng.integers(x0, w)) + 1, int(rng.integers(y0, h)) + 1
        new[y0:y1, x0:x1] ^= int(rng.integers(1, 1 << 32))
    for _ in range(draw(st.integers(0, 3))):  # single pixels, some differing only in the X byte
        new[int(rng.integers(0, h)), int(rng.integers(0, w))] ^= 1 << int(rng.integers(0, 32))
    return old, new, tile, layout


def lay_out(px: np.ndarray, layout: str) -> np.ndarray:
    """The same pixels as the host might hand them: another dtype/shape or non-contiguous memory."""
    if layout == "bgrx-u8":
        return as_bgrx(px.view(np.uint8).reshape(*px.shape, 4))
    if layout == "strided-rows":  # rows of a wider buffer: each row contiguous, the frame not
        wide = np.zeros((px.shape[0], px.shape[1] + 3), np.uint32)
        wide[:, 1 : 1 + px.shape[1]] = px
        return wide[:, 1 : 1 + px.shape[1]]
    if layout == "every-other-column":  # pixels 8 bytes apart: no 64-bit view possible
        wide = np.zeros((px.shape[0], px.shape[1] * 2), np.uint32)
        wide[:, ::2] = px
        return wide[:, ::2]
    return px


@settings(max_examples=400, deadline=None)
@given(frame_pairs())
def test_tile_diff_matches_the_naive_full_frame_diff(case: tuple[np.ndarray, np.ndarray, int, str]) -> None:
    old, new, tile, layout = case
    a, b = lay_out(old, layout), lay_out(new, layout)
    assert np.array_equal(a, old) and np.array_equal(b, new)
    rects = dirty_tiles(a, b, tile)
    want = naive_changed_tiles(old, new, tile)
    count = tiles_covered(rects, new.shape[0], new.shape[1], tile)
    assert np.array_equal(count, want.astype(np.int32))  # exactly the changed tiles, each once
    runs = sum(int(np.count_nonzero(np.diff(r.astype(np.int8), prepend=0) == 1)) for r in want)
    assert len(rects) <= runs  # never more pieces than one per run of a tile row
    assert dirty_tiles(a, a, tile) == []
    assert dirty_tiles(None, b, tile) == [(0, 0, new.shape[1], new.shape[0])]


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**32 - 1), st.floats(0.0, 1.0), st.sampled_from([4, 64]))
def test_tile_runs_cover_each_changed_tile_once(th: int, tw: int, seed: int, density: float, tile: int) -> None:
    changed = np.random.default_rng(seed).random((th, tw)) < density
    h, w = th * tile - tile // 2, tw * tile - 1  # partial last row and column of tiles
    rects = tile_runs(changed, w, h, tile)
    assert np.array_equal(tiles_covered(rects, h, w, tile), changed.astype(np.int32))
    assert rects == sorted(rects, key=lambda r: (r[1], r[0]))
    if changed.all():
        assert rects == [(0, 0, w, h)]


def test_tile_diff_of_a_1080p_region() -> None:
    rng = np.random.default_rng(5)
    old = rng.integers(0, 1 << 24, size=(1080, 1920), dtype=np.uint32)
    new = old.copy()
    new[360:720, 640:1280] += 1
    assert dirty_tiles(old, new) == [(640, 320, 1280, 768)]  # 10 x 7 tiles, one rectangle
    new[0, 0] += 1
    new[1079, 1919] += 1
    new[1079, 64] += 1  # the last tile row is 56 pixels high
    assert dirty_tiles(old, new) == [(0, 0, 64, 64), (640, 320, 1280, 768), (64, 1024, 128, 1080), (1856, 1024, 1920, 1080)]


def test_tile_ids_are_64_bit_stable_and_follow_the_pixels() -> None:
    # xxh3 is a fixed, specified function: pinned, so that a change of function or seed is deliberate
    assert tile_id(bytes(16), 2) == tile_id(np.zeros((2, 2), np.uint32).tobytes(), 2)
    assert tile_id(bytes(16), 2) == 0x892D6AE346D9F759
    rng = np.random.default_rng(11)
    tiles = [rng.integers(0, 1 << 24, size=(64, 64), dtype=np.uint32) for _ in range(2000)]
    ids = [tile_id(t.tobytes(), 64) for t in tiles]
    assert all(0 <= i < 1 << 64 for i in ids)
    assert len(set(ids)) == len(ids)  # different pixels, different ids (on this sample)
    assert [tile_id(t.copy().tobytes(), 64) for t in tiles] == ids  # same pixels, same id
    assert tile_id(tiles[0].data, 64) == ids[0]  # the array in place (a memoryview), no bytes copy
    one_pixel_off = tiles[0].copy()
    one_pixel_off[63, 63] ^= 1
    assert tile_id(one_pixel_off.tobytes(), 64) != ids[0]
    # the same bytes as another shape: another id (a cached 64x64 must not stand in for a 128x32)
    assert tile_id(tiles[0].tobytes(), 128) != ids[0]


@pytest.fixture
async def fb() -> AsyncIterator[FramebufferDisplay]:
    server = SpiceServer(ServerConfig(port=0, disable_ticketing=True, net_test=False))
    display = server.add_framebuffer_display(320, 200)
    try:
        yield display
    finally:
        await server.close()


@pytest.fixture
def posted(fb: FramebufferDisplay, monkeypatch: pytest.MonkeyPatch) -> list[FramebufferFrame]:
    """Every FramebufferFrame ``update`` hands to the worker (still delivered)."""
    ep = fb.worker.dispatcher.loop_side
    real = ep.post
    seen: list[FramebufferFrame] = []

    def spy(msg: Any) -> None:
        if isinstance(msg, FramebufferFrame):
            seen.append(msg)
        real(msg)

    monkeypatch.setattr(ep, "post", spy)
    return seen


def scene(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1 << 24, size=(200, 320), dtype=np.uint32)


def wait_idle(fb: FramebufferDisplay) -> None:
    fb.worker.wait_idle()  # the worker handles messages in order: every frame before is drawn


@dataclass(frozen=True)
class Hold:
    """A test-only worker message: the worker waits for ``gate`` before handling anything else."""

    gate: threading.Event


@pytest.fixture
def held_worker(fb: FramebufferDisplay) -> Iterator[threading.Event]:
    """The worker blocked until the event is set (so a test can act before it reads a frame)."""
    gate = threading.Event()
    fb.worker.ep.register_handler(Hold, lambda msg: msg.gate.wait(30))
    fb.worker.post(Hold(gate))
    try:
        yield gate
    finally:
        gate.set()


async def test_copy_true_lets_the_host_paint_into_its_buffer_at_once(fb: FramebufferDisplay, posted: list[FramebufferFrame], held_worker: threading.Event) -> None:
    buf = scene(1)
    first = buf.copy()
    assert fb.update(buf) == 1  # the first frame: the whole frame, one contiguous area
    buf[20:60, 10:50] = 0xABCDEF
    want = buf.copy()
    assert fb.update(buf, dirty=[(10, 20, 50, 60)]) == 1
    for msg in posted:
        for _, _, pixels in msg.tiles:
            assert not np.shares_memory(pixels, buf) and pixels.flags.c_contiguous and pixels.dtype == np.uint32
    assert np.array_equal(posted[0].tiles[0][2], first)  # the kept frame shares it but never writes into it
    buf[:] = 0  # the host paints the next frame before the worker has read this one
    held_worker.set()
    wait_idle(fb)
    assert np.array_equal(fb.snapshot(), want)
    assert fb.update(buf) == 1  # the diff is against what was shown: every tile, one rectangle
    wait_idle(fb)
    assert np.array_equal(fb.snapshot(), buf)


def test_tile_bytes_of_an_owned_copy_are_not_copied_again() -> None:
    px = scene(3)
    for area in (px, px[10:70, 5:100], px[:, :64]):
        tile = owned_copy(area)
        assert np.array_equal(tile, area) and tile.flags.c_contiguous and not tile.flags.writeable
        assert tile_bytes(tile) is tile.base and tile_bytes(tile) == area.tobytes()  # type: ignore[comparison-overlap]
        assert tile_bytes(area) == area.tobytes()  # a view (copy=False): its bytes, row after row
    assert tile_bytes(owned_copy(px)[:, :10]) == px[:, :10].tobytes()  # a view of a copy: not its base


async def test_copy_false_keeps_references_and_copies_nothing(fb: FramebufferDisplay, posted: list[FramebufferFrame]) -> None:
    first = scene(1)
    assert fb.update(first, copy=False) == 1
    assert np.shares_memory(posted[-1].tiles[0][2], first)
    assert fb._last is first
    assert fb.update(first, copy=False) == 0  # the same frame again: nothing to diff, nothing sent
    second = first.copy()
    second[100:110, 200:300] = 0xFF0000
    second[0, 0] = 7
    assert fb.update(second, copy=False) == 2  # one tile, and a run of two tiles
    assert [(left, top, p.shape) for left, top, p in posted[-1].tiles] == [(0, 0, (64, 64)), (192, 64, (64, 128))]
    assert all(np.shares_memory(p, second) for _, _, p in posted[-1].tiles)  # views of the host's frame
    assert fb._last is second
    wait_idle(fb)
    assert np.array_equal(fb.snapshot(), second)
    # BGRX bytes work the same way without a copy
    third = second.copy()
    third[199, 319] = 0x123456
    as_u8 = third.view(np.uint8).reshape(200, 320, 4)
    assert fb.update(as_u8, dirty=[(300, 190, 320, 200)], copy=False) == 1
    assert np.shares_memory(posted[-1].tiles[0][2], as_u8)
    wait_idle(fb)
    assert np.array_equal(fb.snapshot(), third)


async def test_a_kept_frame_follows_what_was_sent(fb: FramebufferDisplay) -> None:
    """With ``dirty`` given, only those areas reach the kept frame, so a later diff still finds the rest."""
    a = scene(1)
    fb.update(a)
    b = a.copy()
    b[0:10, 0:10] = 1
    b[150:160, 250:260] = 2
    assert fb.update(b, dirty=[(0, 0, 10, 10)]) == 1
    wait_idle(fb)
    shown = a.copy()
    shown[0:10, 0:10] = 1
    assert np.array_equal(fb.snapshot(), shown)
    assert fb.update(b) == 1  # the area left out before
    wait_idle(fb)
    assert np.array_equal(fb.snapshot(), b)
    # copy=True after copy=False must not write into the host's (promised-immutable) frame
    c = b.copy()
    fb.update(c, copy=False)
    d = b.copy()
    d[5, 5] = 3
    fb.update(d, dirty=[(0, 0, 64, 64)])
    assert np.array_equal(c, b) and fb._last is not c
    wait_idle(fb)
    assert np.array_equal(fb.snapshot(), d)
