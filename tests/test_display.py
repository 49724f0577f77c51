"""The display pipeline end to end with the test client: framebuffer frames -> worker -> drawables ->
display channel -> client canvas, which must equal the server's canvas pixel for pixel."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from spiceserver.proto.enums import ChannelType, CursorFlags, DisplayCap, ImageType, SurfaceFlags
from spiceserver.proto.messages import base as bm
from spiceserver.proto.messages import cursor as cm
from spiceserver.proto.messages import display as d
from spiceserver.worker.cursor_client import CursorShape
from tests.conftest import start_server
from tests.support.client import connect
from tests.support.display import link_display, pump_until

W, H = 320, 200


def scene(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.uint32)
    frame = ((xx * 255 // W) << 16) | ((yy * 255 // H) << 8) | (seed * 40 % 256)
    for _ in range(5):
        x, y = int(rng.integers(0, W - 40)), int(rng.integers(0, H - 40))
        frame[y : y + 40, x : x + 40] = int(rng.integers(0, 1 << 24))
    return frame


def images_in(messages: list[bm.Message]) -> list[d.Image]:
    from spiceserver.worker.drawable import images_of

    out: list[d.Image] = []
    for m in messages:
        if hasattr(m, "data") and not isinstance(m.data, bytes):
            out.extend(images_of(m.data))
    return out


async def test_new_client_gets_current_picture_then_updates() -> None:
    r = await start_server()
    fb = r.server.add_framebuffer_display(W, H)
    try:
        fb.update(scene(1))
        s = await connect(r.ep)
        ch, state = await link_display(s)
        first = await ch.recv()
        assert isinstance(first, bm.SetAck)  # nothing but SET_ACK before our INIT was handled
        state.apply(first)
        await pump_until(ch, state, lambda st: st.marks == 1)
        kinds = [type(m).__name__ for m in state.messages]
        assert kinds[:3] == ["SetAck", "InvalAllPalettes", "SurfaceCreate"]
        assert kinds[-2:] == ["MonitorsConfig", "DisplayMark"]
        create = state.messages[2]
        assert isinstance(create, d.SurfaceCreate) and create.flags == SurfaceFlags.PRIMARY
        assert (create.width, create.height) == (W, H)
        assert state.monitors is not None and state.monitors.heads[0].width == W
        assert np.array_equal(state.surfaces[0].pixels, fb.snapshot())
        for seed in range(2, 6):
            fb.update(scene(seed))
            want = scene(seed)
            await pump_until(ch, state, lambda st, w=want: np.array_equal(st.surfaces[0].pixels, w))
        assert np.array_equal(fb.snapshot(), scene(5))
    finally:
        await r.server.close()


async def test_repeated_content_comes_from_the_pixmap_cache() -> None:
    r = await start_server()
    fb = r.server.add_framebuffer_display(W, H)
    try:
        s = await connect(r.ep)
        ch, state = await link_display(s)
        for seed in (1, 2, 1, 2):
            want = scene(seed)
            fb.update(want)
            await pump_until(ch, state, lambda st, w=want: 0 in st.surfaces and np.array_equal(st.surfaces[0].pixels, w))
        types = [img.descriptor.type for img in images_in(state.messages)]
        assert ImageType.FROM_CACHE in types
        assert {ImageType.GLZ_RGB, ImageType.QUIC} & set(types)  # auto_glz, the default
    finally:
        await r.server.close()


@pytest.mark.parametrize(
    ("compression", "caps", "allowed"),
    [
        ("off", (DisplayCap.MONITORS_CONFIG, DisplayCap.LZ4_COMPRESSION), {ImageType.BITMAP}),
        ("lz4", (DisplayCap.MONITORS_CONFIG, DisplayCap.LZ4_COMPRESSION), {ImageType.LZ4, ImageType.BITMAP}),
        ("lz4", (DisplayCap.MONITORS_CONFIG,), {ImageType.LZ_RGB, ImageType.BITMAP}),  # no cap: LZ
        ("lz", (DisplayCap.MONITORS_CONFIG,), {ImageType.LZ_RGB, ImageType.BITMAP}),
        ("quic", (DisplayCap.MONITORS_CONFIG,), {ImageType.QUIC, ImageType.BITMAP}),
        ("glz", (DisplayCap.MONITORS_CONFIG,), {ImageType.GLZ_RGB, ImageType.BITMAP}),
        ("auto_lz", (DisplayCap.MONITORS_CONFIG,), {ImageType.LZ_RGB, ImageType.QUIC, ImageType.BITMAP}),
    ],
)
async def test_image_compression_modes(compression: str, caps: tuple[int, ...], allowed: set[int]) -> None:
    r = await start_server(image_compression=compression)
    fb = r.server.add_framebuffer_display(W, H)
    try:
        fb.update(scene(3))
        s = await connect(r.ep)
        ch, state = await link_display(s, caps=caps, glz_window=1 << 22)
        await pump_until(ch, state, lambda st: st.marks == 1)
        types = {img.descriptor.type for img in images_in(state.messages)}
        assert types <= allowed, types
        assert types == {ImageType.BITMAP} if compression == "off" else types - {ImageType.BITMAP}, types
        assert np.array_equal(state.surfaces[0].pixels & 0xFFFFFF, scene(3))
        fb.update(scene(4))
        await pump_until(ch, state, lambda st: np.array_equal(st.surfaces[0].pixels & 0xFFFFFF, scene(4)))
    finally:
        await r.server.close()


async def test_resize_recreates_the_primary_surface() -> None:
    r = await start_server()
    fb = r.server.add_framebuffer_display(W, H)
    try:
        fb.update(scene(1))
        s = await connect(r.ep)
        ch, state = await link_display(s)
        await pump_until(ch, state, lambda st: st.marks == 1)
        fb.resize(160, 100)
        small = scene(4)[:100, :160].copy()
        fb.update(small)
        await pump_until(ch, state, lambda st: st.surfaces.get(0) is not None and st.surfaces[0].width == 160 and np.array_equal(st.surfaces[0].pixels, small))
        assert any(isinstance(m, d.SurfaceDestroy) for m in state.messages)
    finally:
        await r.server.close()


async def test_slow_client_is_collapsed_and_catches_up() -> None:
    r = await start_server()
    fb = r.server.add_framebuffer_display(W, H)
    try:
        fb.update(scene(0))
        s = await connect(r.ep)
        ch, state = await link_display(s)
        await pump_until(ch, state, lambda st: st.marks == 1)
        # the client reads nothing (and acks nothing) while 300 frames of small changes arrive
        frame = scene(0)
        for i in range(300):
            frame = frame.copy()
            frame[(i * 7) % (H - 8) : (i * 7) % (H - 8) + 8, (i * 13) % (W - 8) : (i * 13) % (W - 8) + 8] = i * 99991
            fb.update(frame)
        await asyncio.sleep(0.5)
        # (xRGB: the X byte is not part of the picture; Quic does not carry it)
        await pump_until(ch, state, lambda st: np.array_equal(st.surfaces[0].pixels & 0xFFFFFF, frame & 0xFFFFFF), timeout=20)
        stats = r.server.display_stats()["clients"]
        assert stats[0]["pruned"] + stats[0]["collapsed"] > 0  # not every frame was sent
    finally:
        await r.server.close()


async def test_cursor_channel_init_set_move() -> None:
    r = await start_server()
    r.server.remove_tablet()  # server mouse mode: MOVE is sent
    fb = r.server.add_framebuffer_display(W, H)
    try:
        shape = CursorShape(unique=7, type=0, width=2, height=2, hot_x=1, hot_y=1, data=bytes(range(16)))
        fb.set_cursor(shape, 10, 20)
        await asyncio.sleep(0.1)
        s = await connect(r.ep)
        cur = await s.link(ChannelType.CURSOR)
        init = await cur.expect(cm.CursorInit, skip=(bm.SetAck,))
        assert (init.position.x, init.position.y, init.visible) == (10, 20, 1)
        assert init.cursor.flags == CursorFlags.CACHE_ME and init.cursor.header is not None
        assert init.cursor.header.unique == 7 and init.cursor.data == shape.data
        fb.move_cursor(30, 40)
        move = await cur.expect(cm.CursorMove)
        assert (move.position.x, move.position.y) == (30, 40)
        fb.set_cursor(shape, 1, 2)
        again = await cur.expect(cm.CursorSet)
        assert again.cursor.flags == CursorFlags.FROM_CACHE and again.cursor.data == b""
        fb.hide_cursor()
        await cur.expect(cm.CursorHide)
    finally:
        await r.server.close()


async def test_screendump_png(tmp_path: object) -> None:
    import pathlib

    from PIL import Image

    r = await start_server()
    fb = r.server.add_framebuffer_display(W, H)
    try:
        fb.update(scene(2))
        await asyncio.sleep(0.1)
        path = pathlib.Path(str(tmp_path)) / "dump.png"
        fb.screendump(path)
        img = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint32)
        assert np.array_equal((img[..., 0] << 16) | (img[..., 1] << 8) | img[..., 2], scene(2))
    finally:
        await r.server.close()


async def test_record_and_replay_without_a_client(tmp_path: object) -> None:
    """A recorded session replays through a worker with no client to the same picture."""
    import pathlib

    from spiceserver.worker.record import read_records, replay
    from spiceserver.worker.worker import DisplayWorker

    r = await start_server()
    fb = r.server.add_framebuffer_display(W, H)
    path = pathlib.Path(str(tmp_path)) / "session.rec"
    r.server.start_recording(path)  # starts with the present state: the surface and its picture
    try:
        for seed in range(1, 4):
            fb.update(scene(seed))
        fb.set_cursor(CursorShape(unique=3, type=0, width=1, height=1, hot_x=0, hot_y=0, data=b"\xff\0\0\xff"), 5, 6)
        fb.move_cursor(7, 8)
        final = fb.snapshot()
        r.server.stop_recording()
    finally:
        await r.server.close()
    data = path.read_bytes()
    kinds = [type(m).__name__ for _, _, m in read_records(data)]
    assert kinds[0] == "SurfaceCreate" and "DrawCopy" in kinds and kinds[-2:] == ["CursorSet", "CursorMove"]
    fresh = DisplayWorker("replay")
    fresh.start()
    try:
        n = replay(path.read_bytes(), fresh)
        assert n == len(kinds)
        assert np.array_equal(fresh.snapshot(), final)
        assert (fresh.cursor.x, fresh.cursor.y, fresh.cursor.shape and fresh.cursor.shape.unique) == (7, 8, 3)
    finally:
        fresh.stop()


def test_damaged_recordings_raise_protocol_error() -> None:
    import pytest

    from spiceserver.errors import ProtocolError
    from spiceserver.worker.record import MAGIC, read_records

    for bad in (b"nope", MAGIC + b"\x01\x00", MAGIC + bytes([9]) + bytes(14), MAGIC + bytes([1]) + bytes(8) + b"\x2e\x01" + (99).to_bytes(4, "little")):
        with pytest.raises(ProtocolError):
            list(read_records(bad))


async def test_recording_started_mid_session_replays_to_the_same_picture(tmp_path: object) -> None:
    """start_recording / stop_recording: the file begins with the picture of the moment, so its
    replay ends on the server's final picture; a recording in progress is closed by server.close()."""
    import pathlib

    from spiceserver.worker.record import read_records, replay
    from spiceserver.worker.worker import DisplayWorker

    r = await start_server()
    fb = r.server.add_framebuffer_display(W, H)
    path = pathlib.Path(str(tmp_path)) / "mid.rec"
    try:
        fb.update(scene(1))
        fb.set_cursor(CursorShape(unique=9, type=0, width=1, height=1, hot_x=0, hot_y=0, data=b"\xff\0\0\xff"), 3, 4)
        r.server.wait_idle()
        r.server.start_recording(path)
        fb.update(scene(2))
        fb.move_cursor(10, 11)
        r.server.wait_idle()
        final = r.server.display_snapshot()
        count = r.server.stop_recording()
        assert count >= 4 and r.server.stop_recording() == 0
        r.server.start_recording(tmp_path / "left-open.rec")  # type: ignore[operator]
        fb.update(scene(3))
    finally:
        await r.server.close()
    kinds = [type(m).__name__ for _, _, m in read_records(path.read_bytes())]
    assert kinds[:2] == ["SurfaceCreate", "DrawCopy"] and kinds[-1] == "CursorMove" and len(kinds) == count
    fresh = DisplayWorker("replay")
    fresh.start()
    try:
        replay(path.read_bytes(), fresh)
        assert np.array_equal(fresh.snapshot(), final)
        assert (fresh.cursor.x, fresh.cursor.y) == (10, 11)
    finally:
        fresh.stop()
    left_open = (tmp_path / "left-open.rec").read_bytes()  # type: ignore[operator]
    assert [type(m).__name__ for _, _, m in read_records(left_open)][:2] == ["SurfaceCreate", "DrawCopy"]


async def test_gzip_recording_round_trip_and_damage(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``.gz`` path records compressed; replay reads it; damaged or oversized gzip is a ProtocolError."""
    import gzip
    import pathlib

    from spiceserver.errors import ProtocolError
    from spiceserver.worker import record
    from spiceserver.worker.record import read_records

    r = await start_server()
    fb = r.server.add_framebuffer_display(W, H)
    path = pathlib.Path(str(tmp_path)) / "session.rec.gz"
    try:
        r.server.start_recording(path)
        fb.update(scene(5))
        r.server.wait_idle()
        n = r.server.stop_recording()
    finally:
        await r.server.close()
    data = path.read_bytes()
    assert data[:2] == b"\x1f\x8b" and len(list(read_records(data))) == n
    assert len(data) < len(gzip.decompress(data)) / 3
    with pytest.raises(ProtocolError):
        list(read_records(data[: len(data) // 2] + b"\0" * 20))
    monkeypatch.setattr(record, "MAX_RECORDING", 1000)
    with pytest.raises(ProtocolError, match="larger than allowed"):
        list(read_records(data))
