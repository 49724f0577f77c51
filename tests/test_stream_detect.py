"""Stream detection on scripted frame sequences, as libspice's video-stream.cpp decides.

Time is an argument (milliseconds): every scenario is a script of frames with their times, so the
results are exact and nothing depends on the machine's speed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.proto.enums import BitmapFlags, BitmapFmt, ClipType, ImageType
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Point, Rect
from spiceserver.worker.drawable import make_drawable
from spiceserver.worker.stream_detect import (
    FRAMES_RESET_CONDITION,
    FRAMES_START_CONDITION,
    MIN_SIZE,
    NUM_STREAMS,
    NUM_TRACE_ITEMS,
    STREAM_TIMEOUT_MS,
    Box,
    BoxNormaliser,
    Frame,
    FrameForStream,
    StreamDetector,
    StreamStart,
    StreamStop,
    StreamTimeout,
    bitmap_is_gradual,
    can_stream,
    frame_of,
    union_box,
)

FPS25 = 40  # ms between frames at 25 fps
VIDEO: Box = (100, 100, 740, 460)  # 640x360
#: draws that make a stream: the first draw starts a chain, each later one continues it
START_DRAWS = FRAMES_START_CONDITION + 1


def frame(box: Box = VIDEO, t: float = 0, **kw: object) -> Frame:
    w, h = box[2] - box[0], box[3] - box[1]
    args: dict[str, object] = {"surface_id": 0, "box": box, "src_width": w, "src_height": h, "time_ms": t}
    args.update(kw)
    return Frame(**args)  # type: ignore[arg-type]


def feed(det: StreamDetector, n: int, box: Box = VIDEO, t0: float = 0, dt: float = FPS25, **kw: object) -> list[object]:
    return [det.frame(frame(box, t0 + i * dt, **kw)) for i in range(n)]


def starts(events: Sequence[object]) -> list[StreamStart]:
    return [e for e in events if isinstance(e, StreamStart)]


# --- the start rule ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["all", "filter"])
def test_twenty_continuations_at_25fps_start_a_stream(mode: str) -> None:
    det = StreamDetector(mode)
    events = feed(det, START_DRAWS)
    assert events[:-1] == [None] * (START_DRAWS - 1)
    start = events[-1]
    assert isinstance(start, StreamStart)
    assert (start.stream_id, start.surface_id, start.dest) == (0, 0, VIDEO)
    assert (start.src_width, start.src_height, start.top_down) == (640, 360, True)
    assert start.input_fps == 25
    assert start.frame.time_ms == (START_DRAWS - 1) * FPS25
    assert list(det.streams) == [0]
    assert det.trace(0) == []  # the chain's frame belongs to the stream now


def test_one_frame_fewer_does_not_start() -> None:
    det = StreamDetector("all")
    assert feed(det, START_DRAWS - 1) == [None] * (START_DRAWS - 1)
    assert det.streams == {}
    assert det.trace(0) == [(VIDEO, FRAMES_START_CONDITION - 1, (START_DRAWS - 2) * FPS25)]


def test_frames_slower_than_200ms_never_start() -> None:
    det = StreamDetector("all")
    assert starts(feed(det, 100, dt=201)) == []
    assert det.trace(0)[0][1] == 0  # every frame starts a new chain
    # at exactly 200 ms they do (the rule is "more than 200 ms apart breaks the chain")
    assert len(starts(feed(det, START_DRAWS, t0=100_000, dt=200))) == 1


def test_a_gap_restarts_the_count() -> None:
    det = StreamDetector("all")
    feed(det, START_DRAWS - 1)
    t = (START_DRAWS - 2) * FPS25 + 250
    assert det.frame(frame(t=t)) is None
    assert det.trace(0)[0][1] == 0
    assert starts(feed(det, START_DRAWS - 2, t0=t + FPS25)) == []
    assert isinstance(det.frame(frame(t=t + (START_DRAWS - 1) * FPS25)), StreamStart)


def test_time_going_backwards_matches_nothing() -> None:
    det = StreamDetector("all")
    feed(det, 5, t0=1000)
    assert det.frame(frame(t=900)) is None
    assert det.trace(0)[0][1] == 0  # a new chain
    feed(det, START_DRAWS, t0=2000)
    assert list(det.streams) == [0]
    assert det.frame(frame(t=1900)) is None
    assert det.tick(1900) == []


def test_a_different_box_or_source_size_is_a_different_chain() -> None:
    det = StreamDetector("all")
    other: Box = (100, 100, 741, 460)
    events = []
    for i in range(2 * START_DRAWS):
        box = VIDEO if i % 2 else other
        events.append(det.frame(frame(box, i * 20)))
    # both chains continue (20 ms apart from their neighbours, 40 ms from their own last frame)
    assert [e.dest for e in starts(events)] == [other, VIDEO]
    det2 = StreamDetector("all")
    # alternating source sizes 150 ms apart: each size's previous frame is 300 ms old
    evs = [det2.frame(frame(t=i * 150, src_width=640 + i % 2)) for i in range(3 * START_DRAWS)]
    assert starts(evs) == []


def test_off_mode_never_streams_and_unknown_modes_are_refused() -> None:
    det = StreamDetector("off")
    assert feed(det, 200) == [None] * 200
    assert det.trace(0) == []
    with pytest.raises(ValueError):
        StreamDetector("video")
    with pytest.raises(ValueError):
        det.mode = "ON"
    det.mode = "all"
    assert len(starts(feed(det, START_DRAWS, t0=10_000))) == 1


def test_unstreamable_frames_are_ignored() -> None:
    det = StreamDetector("all")
    assert feed(det, 3 * START_DRAWS, streamable=False) == [None] * (3 * START_DRAWS)
    assert det.trace(0) == []


# --- filter mode -------------------------------------------------------------------------------


def test_filter_mode_refuses_text_like_frames() -> None:
    det = StreamDetector("filter")
    assert starts(feed(det, 5 * START_DRAWS, gradual=False)) == []
    assert det.trace(0)[0][1] == 5 * START_DRAWS - 1
    # the same frames are a stream in "all" mode: graduality is not looked at
    assert len(starts(feed(StreamDetector("all"), START_DRAWS, gradual=False))) == 1


def test_filter_mode_needs_a_fifth_gradual() -> None:
    # every 5th frame gradual: 4 gradual frames among 20 continuations is exactly 0.2
    det = StreamDetector("filter")
    evs = [det.frame(frame(t=i * FPS25, gradual=(i % 5 == 0 and i > 0))) for i in range(START_DRAWS)]
    assert isinstance(evs[-1], StreamStart)
    # every 6th: the share stays under 0.2 however long the chain runs
    det = StreamDetector("filter")
    evs = [det.frame(frame(t=i * FPS25, gradual=(i % 6 == 0 and i > 0))) for i in range(90)]
    assert starts(evs) == []
    assert det.trace(0)[0][1] == 89


def test_gradual_after_a_long_run_of_text_resets_the_count() -> None:
    det = StreamDetector("filter")
    n = FRAMES_RESET_CONDITION + 2
    evs = [det.frame(frame(t=i * FPS25, gradual=(i == 1 or i == n))) for i in range(n + 1)]
    assert starts(evs) == []
    assert det.trace(0)[0][1] == 1  # reset: the late gradual frame counts as the chain's first


def test_graduality_is_computed_only_for_chained_frames_and_once() -> None:
    calls: list[int] = []

    def lazy(i: int) -> Callable[[], bool]:
        def f() -> bool:
            calls.append(i)
            return True

        return f

    det = StreamDetector("filter")
    for i in range(3):
        det.frame(frame(t=i * FPS25, gradual=lazy(i)))
    assert calls == [1, 2]  # the first frame of a chain is never asked
    det = StreamDetector("all")
    det.frame(frame(t=0, gradual=lazy(9)))
    det.frame(frame(t=FPS25, gradual=lazy(9)))
    assert calls == [1, 2]


def test_filter_mode_refuses_boxes_under_96x96() -> None:
    small: Box = (0, 0, 96, 95)
    assert small[2] * small[3] < MIN_SIZE
    assert starts(feed(StreamDetector("filter"), 3 * START_DRAWS, small)) == []
    assert len(starts(feed(StreamDetector("all"), START_DRAWS, small))) == 1
    assert len(starts(feed(StreamDetector("filter"), START_DRAWS, (0, 0, 96, 96)))) == 1


def test_graduality_helper_on_a_photo_and_on_text() -> None:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:120, 0:160]
    photo = ((xx * 255 // 160) << 16 | (yy * 255 // 120) << 8 | 0x40).astype(np.uint32)
    photo = photo + rng.integers(0, 3, photo.shape, dtype=np.uint32)
    assert bitmap_is_gradual(photo)
    text = np.full((120, 160), 0xFFFFFF, dtype=np.uint32)
    text[::3, ::2] = 0  # sharp black strokes on white
    assert not bitmap_is_gradual(text)


# --- the stream pool ---------------------------------------------------------------------------


def grid_box(i: int) -> Box:
    x, y = (i % 10) * 100, (i // 10) * 100
    return (x, y, x + 96, y + 96)


def test_a_51st_stream_is_refused_until_an_id_is_free() -> None:
    det = StreamDetector("all")
    ids = []
    for i in range(NUM_STREAMS + 1):
        evs = feed(det, START_DRAWS, grid_box(i), t0=i * 10)
        ids += [e.stream_id for e in starts(evs)]
    assert ids == list(range(NUM_STREAMS))
    # the 51st chain keeps counting and starts as soon as an id is free
    t = NUM_STREAMS * 10 + START_DRAWS * FPS25
    assert det.frame(frame(grid_box(NUM_STREAMS), t)) is None
    stops = det.stop_all()
    assert sorted(s.stream_id for s in stops) == list(range(NUM_STREAMS))
    assert all(isinstance(s, StreamStop) and s.reason == "stopped" for s in stops)
    ev = det.frame(frame(grid_box(NUM_STREAMS), t + FPS25))
    assert isinstance(ev, StreamStart) and ev.stream_id == 0


def test_stream_timeout_on_tick_and_id_reuse() -> None:
    det = StreamDetector("all")
    feed(det, START_DRAWS)
    last = (START_DRAWS - 1) * FPS25
    other: Box = (0, 0, 200, 200)
    feed(det, START_DRAWS, other, t0=last + 500)
    assert sorted(det.streams) == [0, 1]
    assert det.next_timeout() == last + STREAM_TIMEOUT_MS
    assert det.tick(last + STREAM_TIMEOUT_MS - 1) == []
    assert det.tick(last + STREAM_TIMEOUT_MS) == [StreamTimeout(0, 0)]
    assert sorted(det.streams) == [1]
    # the freed id is the next one given out
    evs = feed(det, START_DRAWS, (300, 0, 500, 200), t0=last + 1100)
    assert [e.stream_id for e in starts(evs)] == [0]
    assert StreamDetector().next_timeout() is None


def test_a_frame_keeps_the_stream_alive() -> None:
    det = StreamDetector("all")
    feed(det, START_DRAWS)
    t = (START_DRAWS - 1) * FPS25
    for k in range(1, 30):
        ev = det.frame(frame(t=t + k * 900))
        assert isinstance(ev, FrameForStream) and ev.stream_id == 0 and not ev.sized
        assert det.tick(t + k * 900 + 999) == []
    # more than 1 s after the last frame a frame no longer attaches: it starts a chain
    assert det.frame(frame(t=t + 29 * 900 + 1001)) is None


def test_surface_destroyed_stops_its_streams_and_forgets_the_trace() -> None:
    det = StreamDetector("all")
    feed(det, START_DRAWS)
    feed(det, 5, (0, 0, 50, 50), t0=1000)
    assert det.trace(0)
    assert det.surface_destroyed(0) == [StreamStop(0, 0, "surface destroyed")]
    assert det.streams == {} and det.trace(0) == []


# --- frames of a live stream -------------------------------------------------------------------


def test_frames_of_a_live_stream() -> None:
    det = StreamDetector("all")
    feed(det, START_DRAWS)
    t = START_DRAWS * FPS25
    same = det.frame(frame(t=t))
    assert same == FrameForStream(0, frame(t=t), False)
    # a bigger box containing the stream's, within twice its area: sized
    bigger: Box = (90, 90, 760, 480)
    ev = det.frame(frame(bigger, t + FPS25))
    assert isinstance(ev, FrameForStream) and ev.sized
    # the same box with another source size (scaled copy): sized
    ev = det.frame(frame(t=t + 2 * FPS25, src_width=320, src_height=180))
    assert isinstance(ev, FrameForStream) and ev.sized
    # over twice the area: not the stream's
    huge: Box = (0, 0, 1000, 700)
    assert det.frame(frame(huge, t + 3 * FPS25)) is None
    # overlapping but not containing the stream's box (libspice needs containment): not the stream's
    shifted: Box = (110, 100, 750, 460)
    assert det.frame(frame(shifted, t + 4 * FPS25)) is None
    # another row order: not the stream's
    assert det.frame(frame(t=t + 5 * FPS25, top_down=False)) is None
    # a stream frame never enters the trace
    assert {b for b, _, _ in det.trace(0)} == {huge, shifted, VIDEO}


def test_stream_frames_do_not_need_graduality() -> None:
    det = StreamDetector("filter")
    feed(det, START_DRAWS)
    evs = feed(det, 10, t0=START_DRAWS * FPS25, gradual=False)
    assert all(isinstance(e, FrameForStream) for e in evs)


def test_other_surfaces_are_separate() -> None:
    det = StreamDetector("all")
    evs = [det.frame(frame(t=i * FPS25, surface_id=i % 2)) for i in range(2 * START_DRAWS)]
    # each surface's chain only counts its own frames, 80 ms apart
    assert [(e.surface_id, e.stream_id) for e in starts(evs)] == [(0, 0), (1, 1)]


def test_trace_is_bounded_and_keeps_the_busiest_chain() -> None:
    det = StreamDetector("all")
    t = 0
    for i in range(START_DRAWS):
        det.frame(frame(t=t))
        # between two video frames, a handful of one-off draws (fewer than the trace holds)
        for k in range(NUM_TRACE_ITEMS - 1):
            det.frame(frame((k * 10, i, k * 10 + 5, i + 5), t + 1 + k))
        assert len(det.trace(0)) <= NUM_TRACE_ITEMS
        t += FPS25
    assert list(det.streams) == [0]
    # with more one-off geometries per frame than the trace holds, the chain is pushed out
    det = StreamDetector("all")
    for i in range(START_DRAWS):
        det.frame(frame(t=i * FPS25))
        for k in range(NUM_TRACE_ITEMS):
            det.frame(frame((k * 10, i, k * 10 + 5, i + 5), i * FPS25 + 1 + k))
    assert det.streams == {}
    assert len(StreamDetector("all", trace_size=64).trace(0)) == 0
    with pytest.raises(ValueError):
        StreamDetector("all", trace_size=0)


# --- from worker drawables ---------------------------------------------------------------------


def copy_op(w: int, h: int, *, image_type: int = ImageType.BITMAP, rop: int = 8, mask: bool = False) -> d.Copy:
    bitmap = None
    if image_type == ImageType.BITMAP:
        bitmap = d.BitmapData(
            format=BitmapFmt.BIT32,
            flags=BitmapFlags.TOP_DOWN,
            x=w,
            y=h,
            stride=w * 4,
            palette=None,
            data=bytes(w * h * 4),
        )
    image = d.Image(descriptor=d.ImageDescriptor(id=1, type=image_type, flags=0, width=w, height=h), bitmap=bitmap)
    qmask = d.QMask()
    if mask:
        qmask = d.QMask(flags=0, pos=Point(x=0, y=0), bitmap=image)
    return d.Copy(
        src_bitmap=image, src_area=Rect(top=0, left=0, bottom=h, right=w), rop_descriptor=rop, scale_mode=1, mask=qmask
    )


def test_can_stream_follows_drawable_can_stream() -> None:
    op = copy_op(128, 128)
    assert can_stream(op, primary=True, mode="filter")
    assert can_stream(op, primary=True, mode="all")
    assert not can_stream(op, primary=True, mode="off")
    assert not can_stream(op, primary=False, mode="all")
    assert not can_stream(copy_op(128, 128, rop=1), primary=True, mode="all")
    assert not can_stream(copy_op(128, 128, mask=True), primary=True, mode="all")
    assert not can_stream(copy_op(128, 128, image_type=ImageType.QUIC), primary=True, mode="all")
    assert not can_stream(copy_op(128, 128, image_type=ImageType.FROM_CACHE), primary=True, mode="all")
    assert not can_stream(copy_op(64, 64), primary=True, mode="filter")
    assert can_stream(copy_op(64, 64), primary=True, mode="all")
    fill = d.Fill(brush=d.Brush(type=1, color=0), rop_descriptor=8, mask=d.QMask())
    assert not can_stream(fill, primary=True, mode="all")


def test_frame_of_a_drawable() -> None:
    base = d.DisplayBase(
        surface_id=0, box=Rect(top=10, left=20, bottom=138, right=148), clip=d.Clip(type=ClipType.NONE)
    )
    drawable = make_drawable(0, base, copy_op(128, 128))
    f = frame_of(drawable, time_ms=5, primary=True, mode="filter")
    assert (f.surface_id, f.box, f.src_width, f.src_height, f.time_ms) == (0, (20, 10, 148, 138), 128, 128, 5)
    assert f.streamable and f.top_down and f.payload is drawable
    det = StreamDetector("filter")
    evs = [det.frame(frame_of(drawable, time_ms=i * FPS25, primary=True, mode="filter")) for i in range(START_DRAWS)]
    assert isinstance(evs[-1], StreamStart) and evs[-1].frame.payload is drawable


# --- the framebuffer path ----------------------------------------------------------------------


def test_jittering_framebuffer_boxes_start_a_stream() -> None:
    rng = np.random.default_rng(7)
    norm = BoxNormaliser(tolerance=8)
    det = StreamDetector("filter")
    raw_det = StreamDetector("filter")
    started = []
    for i in range(60):
        j = [int(v) for v in rng.integers(0, 5, 4)]  # each edge wanders over 5 px
        box: Box = (100 + j[0], 100 + j[1], 740 - j[2], 460 - j[3])
        t = i * FPS25
        nbox = norm.normalise(box, t)
        assert nbox[0] <= box[0] and nbox[1] <= box[1] and nbox[2] >= box[2] and nbox[3] >= box[3]
        assert raw_det.frame(frame(box, t)) is None  # exact matching alone never forms a chain
        ev = det.frame(frame(nbox, t))
        if isinstance(ev, StreamStart):
            started.append((i, ev.dest))
    assert len(started) == 1
    i, dest = started[0]
    assert i < 40  # the family stops growing after a few frames, then 20 continuations
    assert dest[0] >= 100 and dest[1] >= 100 and dest[2] <= 740 and dest[3] <= 460


def test_normaliser_rule() -> None:
    norm = BoxNormaliser(tolerance=4)
    assert norm.normalise((10, 10, 100, 100), 0) == (10, 10, 100, 100)
    assert norm.normalise((12, 9, 103, 100), 40) == (10, 9, 103, 100)  # joins: union
    assert norm.normalise((10, 10, 100, 100), 80) == (10, 9, 103, 100)  # covered: stable
    # an edge 5 px off the family's: a new family, returned as is
    assert norm.normalise((15, 10, 100, 100), 120) == (15, 10, 100, 100)
    # a family not seen for more than 200 ms is not joined
    assert norm.normalise((10, 10, 100, 100), 400) == (10, 10, 100, 100)
    # a box moving steadily does not grow a family without end
    norm = BoxNormaliser(tolerance=4)
    widths = []
    for k in range(40):
        b = norm.normalise((10 + 3 * k, 10, 110 + 3 * k, 110), 40 * k)
        widths.append(b[2] - b[0])
    assert max(widths) <= 100 + 2 * 4
    # small boxes and empty ones are left alone; the family list is bounded
    norm = BoxNormaliser(min_area=100, size=2)
    assert norm.normalise((0, 0, 5, 5), 0) == (0, 0, 5, 5)
    assert norm.normalise((0, 0, 0, 5), 0) == (0, 0, 0, 5)
    for k in range(5):
        norm.normalise((k * 100, 0, k * 100 + 50, 50), k)
    assert list(norm) == [(300, 0, 350, 50), (400, 0, 450, 50)]
    with pytest.raises(ValueError):
        BoxNormaliser(tolerance=-1)


def test_union_box() -> None:
    assert union_box([]) is None
    assert union_box([(0, 0, 0, 10)]) is None
    assert union_box([(0, 0, 10, 10), (5, 20, 30, 25), (1, 1, 1, 1)]) == (0, 0, 30, 25)


# --- fuzz --------------------------------------------------------------------------------------

_coord = st.integers(-20, 400)
_frames = st.lists(
    st.tuples(
        st.integers(0, 2),  # surface
        st.sampled_from([(0, 0, 100, 100), (50, 50, 150, 150), (0, 0, 150, 100), (10, 10, 20, 20)])
        | st.tuples(_coord, _coord, _coord, _coord),
        st.integers(0, 300),  # dt
        st.booleans(),  # streamable
        st.sampled_from([True, False, None]),  # gradual
        st.booleans(),  # top_down
        st.integers(0, 3),  # 0: frame, 1: tick, 2: surface destroyed, 3: same box as last
    ),
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["off", "all", "filter"]), _frames)
def test_fuzz_never_raises_and_keeps_ids_unique(
    mode: str, steps: list[tuple[int, Box, int, bool, bool | None, bool, int]]
) -> None:
    det = StreamDetector(mode, trace_size=4)
    now = 0.0
    live: set[int] = set()
    last_box: Box = (0, 0, 100, 100)
    for surface, box, dt, streamable, gradual, top_down, action in steps:
        now += dt
        if action == 1:
            for ev in det.tick(now):
                assert ev.stream_id in live
                live.discard(ev.stream_id)
        elif action == 2:
            for sev in det.surface_destroyed(surface):
                assert sev.stream_id in live
                live.discard(sev.stream_id)
        else:
            b = last_box if action == 3 else box
            last_box = b
            f = Frame(surface, b, b[2] - b[0], b[3] - b[1], now, streamable, gradual, top_down)
            ev2 = det.frame(f)
            if isinstance(ev2, StreamStart):
                assert ev2.stream_id not in live and 0 <= ev2.stream_id < NUM_STREAMS
                live.add(ev2.stream_id)
            elif isinstance(ev2, FrameForStream):
                assert ev2.stream_id in live
        assert set(det.streams) == live
        assert len(live) <= NUM_STREAMS
        for s in range(3):
            assert len(det.trace(s)) <= 4


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 10), st.integers(0, 10), st.integers(0, 10), st.integers(0, 10), st.integers(0, 300)),
        max_size=100,
    )
)
def test_fuzz_many_streams_stay_within_the_pool(steps: list[tuple[int, int, int, int, int]]) -> None:
    # many small geometries at a fast rate: the pool fills; ids stay unique and below 50
    det = StreamDetector("all", trace_size=64)
    now = 0.0
    for a, b, c, e, dt in steps:
        now += dt % 50
        for k in range(60):
            box: Box = (k * 10, a, k * 10 + 5 + b, a + 5 + c)
            for _ in range(START_DRAWS if e == 0 else 1):
                det.frame(frame(box, now))
                now += 1
        if dt > 250:
            det.tick(now + dt)
        ids = list(det.streams)
        assert len(ids) == len(set(ids)) <= NUM_STREAMS
        assert all(0 <= i < NUM_STREAMS for i in ids)
