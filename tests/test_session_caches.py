"""Two displays, one spice-gtk session: the client keeps ONE GLZ window and ONE (reference-counted)
image cache per session for all its display channels (``spice-session.c``
``spice_session_get_caches``, ``spice-channel-cache.h``, ``decode-glz.c``). The test client below
models exactly that; both displays' pictures must equal the server's canvases."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spiceserver.proto.enums import ImageFlags, ImageType
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Message
from spiceserver.worker.session_caches import SessionCaches
from tests.conftest import start_server
from tests.support.client import connect
from tests.support.display import DisplayState, link_display, pump_until
from tests.test_display import H, W, images_in, scene


@dataclass
class SessionDisplayState(DisplayState):
    """One display channel of a spice-gtk-like session: ``images``, ``refs`` and ``glz`` are shared
    with the session's other display channels; a CACHE_ME adds a reference, an INVAL_LIST entry
    drops one and the image goes with the last (spice-gtk ``cache_add_lossy`` / ``cache_remove``)."""

    refs: dict[int, int] = field(default_factory=dict)

    def cache_image(self, image_id: int, pixmap: Any) -> None:
        self.images[image_id] = pixmap
        self.refs[image_id] = self.refs.get(image_id, 0) + 1

    def apply(self, msg: Message) -> None:
        if not isinstance(msg, d.InvalList):
            super().apply(msg)
            return
        self.messages.append(msg)
        for r in msg.resources:
            n = self.refs.pop(r.id, 0) - 1
            if n > 0:
                self.refs[r.id] = n
            else:
                self.images.pop(r.id, None)


def blocks(seed: int, shift: int = 0) -> np.ndarray:
    """Desktop-like content (8x8 blocks of a few colours: GLZ, not Quic), rolled ``shift`` pixels right."""
    rng = np.random.default_rng(seed)
    small = rng.choice(np.array([0x202020, 0xE0E0E0, 0x3060C0, 0xC04020, 0x20A040], np.uint32), size=(H // 8, W // 8))
    return np.roll(np.repeat(np.repeat(small, 8, 0), 8, 1), shift, axis=1)


def test_the_first_display_channel_of_a_session_owns_its_glz_window() -> None:
    caches = SessionCaches()
    a, b, c = object(), object(), object()
    assert caches.join_glz(7, 1, a)
    assert not caches.join_glz(7, 1, b)  # same session and window
    assert caches.join_glz(7, 2, b)  # another dictionary id
    assert caches.join_glz(8, 1, c)  # another session
    caches.leave(a)
    # the owner left but b still decodes into the session's window: nobody owns it any more
    late = object()
    assert not caches.join_glz(7, 1, late)
    for m in (b, c, late):
        caches.leave(m)
    assert len(caches) == 0
    assert caches.join_glz(7, 1, a)


def test_glz_owner_is_claimed_once_across_threads() -> None:
    caches = SessionCaches()
    wins: list[bool] = []
    members = [object() for _ in range(16)]
    threads = [threading.Thread(target=lambda m=m: wins.append(caches.join_glz(1, 1, m))) for m in members]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1


async def _two_displays() -> tuple[Any, Any, Any]:
    r = await start_server()
    fbs = [r.server.add_framebuffer_display(W, H) for _ in range(2)]
    return r, fbs[0], fbs[1]


async def test_two_displays_share_the_sessions_glz_window() -> None:
    """Before the fix each display channel had its own GLZ dictionary, numbering images from 0 in the
    session's one window: display 1's images replaced display 0's of the same ids, and display 0's
    scrolled picture, coded against its earlier one, decoded with display 1's pixels."""
    r, fb0, fb1 = await _two_displays()
    try:
        s = await connect(r.ep)
        st0, st1 = SessionDisplayState(), SessionDisplayState()
        st1.images, st1.refs, st1.glz = st0.images, st0.refs, st0.glz  # one session-wide cache and window
        ch0, _ = await link_display(s, 0)
        await pump_until(ch0, st0, lambda st: st.marks == 1)  # display 0's DISPLAY_INIT comes first
        ch1, _ = await link_display(s, 1)
        await pump_until(ch1, st1, lambda st: st.marks == 1)
        chans = ((fb0, ch0, st0), (fb1, ch1, st1))

        async def draw(n: int, want: np.ndarray) -> None:
            fb, ch, st = chans[n]
            fb.update(want)
            await pump_until(ch, st, lambda st, w=want: np.array_equal(st.surfaces[0].pixels & 0xFFFFFF, w))

        await draw(0, blocks(1))
        for seed in range(2, 8):
            await draw(1, blocks(seed))
        await draw(0, blocks(1, shift=8))  # GLZ finds its rows in display 0's previous picture
        for n, fb in enumerate((fb0, fb1)):
            assert np.array_equal(chans[n][2].surfaces[0].pixels & 0xFFFFFF, fb.snapshot() & 0xFFFFFF)
        types0 = {img.descriptor.type for img in images_in(st0.messages)}
        types1 = {img.descriptor.type for img in images_in(st1.messages)}
        assert ImageType.GLZ_RGB in types0  # the session's first display owns the window
        assert not types1 & {ImageType.GLZ_RGB, ImageType.ZLIB_GLZ_RGB} and ImageType.LZ_RGB in types1, types1
    finally:
        await r.server.close()


async def test_two_displays_share_the_sessions_pixmap_cache() -> None:
    """Content repeated across two displays, a cache of two frames: display 1 evicts scene 1 (its
    INVAL_LIST) while display 0 still names it FROM_CACHE. spice-gtk counts one reference per
    CACHE_ME, so display 0's reference keeps the image: each display channel mirrors only its own."""
    r, fb0, fb1 = await _two_displays()
    try:
        s = await connect(r.ep)
        ch0, _ = await link_display(s, 0, cache_size=2 * W * H)
        ch1, _ = await link_display(s, 1, cache_size=2 * W * H)
        st0, st1 = SessionDisplayState(), SessionDisplayState()
        st1.images, st1.refs, st1.glz = st0.images, st0.refs, st0.glz
        await pump_until(ch0, st0, lambda st: st.marks == 1)
        await pump_until(ch1, st1, lambda st: st.marks == 1)
        chans = ((fb0, ch0, st0), (fb1, ch1, st1))

        async def draw(n: int, seed: int) -> None:
            fb, ch, st = chans[n]
            want = scene(seed)
            fb.update(want)
            await pump_until(ch, st, lambda st, w=want: np.array_equal(st.surfaces[0].pixels & 0xFFFFFF, w))

        for n, seed in ((0, 1), (1, 1), (1, 2), (1, 3), (1, 2), (0, 2), (0, 1)):
            await draw(n, seed)
        for st in (st0, st1):
            descs = [img.descriptor for img in images_in(st.messages)]
            assert any(desc.type == ImageType.FROM_CACHE for desc in descs)  # both displays use the cache
            assert any(desc.flags & ImageFlags.CACHE_ME for desc in descs)
        assert any(isinstance(m, d.InvalList) for m in st1.messages)
    finally:
        await r.server.close()
