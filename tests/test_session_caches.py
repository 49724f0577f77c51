"""spice-gtk keeps one pixmap cache and one GLZ window per session, shared by its display channels
(``spice-session.c`` ``spice_session_get_caches``): only the session's first display channel may
use them, or one display's INVAL_LIST removes an id another display then names FROM_CACHE."""

from __future__ import annotations

import threading

import numpy as np

from spiceserver.proto.enums import ImageFlags, ImageType
from spiceserver.worker.session_caches import CacheKind, SessionCaches
from tests.conftest import start_server
from tests.support.client import connect
from tests.support.display import link_display, pump_until
from tests.test_display import H, W, images_in, scene


def test_first_display_channel_of_a_session_owns_its_caches() -> None:
    caches = SessionCaches()
    a, b, c = object(), object(), object()
    assert caches.join(CacheKind.PIXMAP, 7, 1, a)
    assert not caches.join(CacheKind.PIXMAP, 7, 1, b)  # same session, same id
    assert caches.join(CacheKind.GLZ, 7, 1, b)  # another cache
    assert caches.join(CacheKind.PIXMAP, 8, 1, c)  # another session
    caches.leave(a)
    # the owner left but b still uses the session's cache: nobody owns it (b's mirror is empty)
    assert not caches.join(CacheKind.PIXMAP, 7, 1, object())
    caches.leave(b)
    caches.leave(c)
    assert caches.owner_count() == 1  # the anonymous member above never left
    assert caches.join(CacheKind.PIXMAP, 9, 1, a)


def test_owners_are_claimed_once_across_threads() -> None:
    caches = SessionCaches()
    wins: list[bool] = []
    members = [object() for _ in range(16)]
    threads = [threading.Thread(target=lambda m=m: wins.append(caches.join(CacheKind.PIXMAP, 1, 1, m))) for m in members]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1


async def test_two_displays_share_the_clients_session_cache() -> None:
    """Content repeated across two displays, a cache that holds two frames, one client cache as
    spice-gtk has. Before the fix display 1's mirror evicted scene 1 (INVAL_LIST on its channel)
    while display 0's mirror still held it, and display 0 then sent FROM_CACHE for it: the shared
    cache no longer had it (spice-gtk waits for ever; here a KeyError)."""
    r = await start_server()
    fb0 = r.server.add_framebuffer_display(W, H)
    fb1 = r.server.add_framebuffer_display(W, H)
    try:
        s = await connect(r.ep)
        ch0, st0 = await link_display(s, 0, cache_size=2 * W * H)
        await pump_until(ch0, st0, lambda st: st.marks == 1)
        ch1, st1 = await link_display(s, 1, cache_size=2 * W * H)
        st1.images, st1.glz = st0.images, st0.glz  # one session-wide cache and GLZ window
        await pump_until(ch1, st1, lambda st: st.marks == 1)

        async def draw(n: int, seed: int) -> None:
            fb, ch, st = (fb0, ch0, st0) if n == 0 else (fb1, ch1, st1)
            want = scene(seed)
            fb.update(want)
            await pump_until(ch, st, lambda st, w=want: np.array_equal(st.surfaces[0].pixels & 0xFFFFFF, w))

        await draw(0, 1)
        await draw(1, 1)  # display 1 caches scene 1 too
        await draw(1, 2)
        await draw(1, 3)  # display 1 evicts scene 1 from the client's cache
        await draw(0, 2)
        await draw(0, 1)  # display 0 must not name scene 1 FROM_CACHE unless the client holds it
        await draw(0, 2)
        for st, fb in ((st0, fb0), (st1, fb1)):
            assert np.array_equal(st.surfaces[0].pixels & 0xFFFFFF, fb.snapshot() & 0xFFFFFF)
        t0 = [img.descriptor for img in images_in(st0.messages)]
        t1 = [img.descriptor for img in images_in(st1.messages)]
        assert any(desc.type == ImageType.FROM_CACHE for desc in t0)  # the owner still caches
        assert not any(desc.type == ImageType.FROM_CACHE or desc.flags & ImageFlags.CACHE_ME for desc in t1)
        assert not any(desc.type in (ImageType.GLZ_RGB, ImageType.ZLIB_GLZ_RGB) for desc in t1)  # the GLZ window is display 0's
    finally:
        await r.server.close()
