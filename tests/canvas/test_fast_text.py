"""The DRAW_TEXT fast path (spiceserver.canvas.fast_text) writes the same pixels as the general path
(spiceserver.canvas.text), with its kernel compiled and as plain Python."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spiceserver._jit import HAVE_NUMBA, pure_deep
from spiceserver.canvas import Canvas, fast, fast_text, render_op
from spiceserver.canvas.rop import Ropd
from spiceserver.errors import ProtocolError
from spiceserver.proto.enums import BrushType, StringFlags, SurfaceFmt
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Point

from .helpers import NO_BRUSH, Resolver, base, rect, solid

W, H = 24, 18
FORMATS = [SurfaceFmt.FMT_32_XRGB, SurfaceFmt.FMT_32_ARGB]
DEPTHS = {1: StringFlags.RASTER_A1, 4: StringFlags.RASTER_A4, 8: StringFlags.RASTER_A8}
GLYPH = {1: d.RasterGlyphA1, 4: d.RasterGlyphA4, 8: d.RasterGlyphA8}


@pytest.fixture(params=["compiled", "pure"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the fast path with the compiled kernel (after its warm-up), or its plain Python code."""
    if request.param == "compiled":
        if not HAVE_NUMBA:
            pytest.skip("numba is not installed")
        fast_text._warm_up()
    else:
        monkeypatch.setattr(fast_text, "_draw_glyphs", pure_deep(fast_text._draw_glyphs))
        ready = threading.Event()
        ready.set()
        monkeypatch.setattr(fast_text, "_kernel_ready", ready)
    yield request.param


def _canvas(fmt: int, seed: int, content: str) -> Canvas:
    c = Canvas(W, H, fmt)
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 1 << 32, c.pixels.shape, dtype=np.uint64).astype(np.uint32)
    if content == "opaque":  # X bytes 0xff: clear_dest_alpha clears the glyph box
        px |= np.uint32(0xFF000000)
    elif content == "clear":
        px &= np.uint32(0x00FFFFFF)
    c.pixels[...] = px
    return c


def _glyph_bytes(depth: int, w: int, h: int) -> int:
    return {1: (w + 7) // 8, 4: (w + 1) // 2, 8: w}[depth] * h


def _glyphs(depth: int, specs: list[tuple[int, int, int, int, int, int, int]], seed: int) -> tuple[Any, ...]:
    """Glyphs with bytes mostly 0 or 0xff (transparent / opaque mask pixels), the rest random."""
    rng = np.random.default_rng(seed)
    out = []
    for x, y, ox, oy, w, h, extra in specs:
        n = _glyph_bytes(depth, w, h) + extra
        data = np.where(rng.random(n) < 0.3, 0, np.where(rng.random(n) < 0.5, 0xFF, rng.integers(0, 256, n)))
        out.append(
            GLYPH[depth](
                render_pos=Point(x=x, y=y),
                glyph_origin=Point(x=ox, y=oy),
                width=w,
                height=h,
                data=data.astype(np.uint8).tobytes(),
            )
        )
    return tuple(out)


def _text(
    glyphs: tuple[Any, ...], flags: int, color: int, back: d.Brush, back_area: tuple[int, int, int, int], fore_mode: int
) -> d.Text:
    return d.Text(
        str=d.String(flags=flags, glyphs=glyphs),
        back_area=rect(*back_area),
        fore_brush=solid(color),
        back_brush=back,
        fore_mode=fore_mode,
        back_mode=Ropd.OP_PUT,
    )


def _render(c: Canvas, b: d.DisplayBase, op: d.Text, enabled: bool) -> str | None:
    saved = fast.ENABLED
    fast.ENABLED = enabled
    try:
        render_op(c, b, op, Resolver({0: c}))
    except ProtocolError as e:
        return str(e)
    finally:
        fast.ENABLED = saved
    return None


def _both_ways(fmt: int, seed: int, content: str, b: d.DisplayBase, op: d.Text) -> bool:
    """Render with and without the fast paths; the same pixels (and errors). True when it was taken."""
    fast_c, general_c, probe = (_canvas(fmt, seed, content) for _ in range(3))
    errors = [_render(fast_c, b, op, True), _render(general_c, b, op, False)]
    assert errors[0] == errors[1]
    assert np.array_equal(fast_c.pixels, general_c.pixels)
    try:
        return fast_text.draw_text(probe, b, op)
    except ProtocolError:  # pragma: no cover - the fast path declines instead of raising
        raise AssertionError("the fast path raised") from None


coords = st.integers(-6, 30)
rects = st.tuples(coords, coords, coords, coords)
glyph_specs = st.lists(
    st.tuples(
        st.integers(-10, 30), st.integers(-10, 24), st.integers(-5, 5), st.integers(-8, 3),
        st.integers(0, 20), st.integers(0, 20), st.integers(0, 3),
    ),
    min_size=1,
    max_size=6,
)  # fmt: skip


# the mode fixture is fixed for the whole test: sharing it between examples is intended
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fmt=st.sampled_from(FORMATS),
    seed=st.integers(0, 1000),
    content=st.sampled_from(["random", "opaque", "clear"]),
    depth=st.sampled_from([1, 4, 8]),
    specs=glyph_specs,
    box=rects,
    clip=st.none() | st.lists(rects, max_size=5),
    color=st.integers(0, 0xFFFFFFFF),
    back=st.sampled_from(["none", "solid", "no-brush"]),
    back_area=rects,
)
def test_glyph_runs_fast_equal_general(
    mode: str,
    fmt: int,
    seed: int,
    content: str,
    depth: int,
    specs: list[tuple[int, int, int, int, int, int, int]],
    box: tuple[int, int, int, int],
    clip: list[tuple[int, int, int, int]] | None,
    color: int,
    back: str,
    back_area: tuple[int, int, int, int],
) -> None:
    glyphs = _glyphs(depth, specs, seed)
    back_brush = solid(color ^ 0x5A5A5A5A) if back == "solid" else NO_BRUSH
    area = back_area if back != "none" else (0, 0, 0, 0)
    op = _text(glyphs, DEPTHS[depth], color, back_brush, area, Ropd.OP_PUT)
    _both_ways(fmt, seed, content, base(*box, clip=clip), op)


def test_typical_runs_take_the_fast_path(mode: str) -> None:
    specs = [(2 + 6 * i, 12, 0, -9, 5, 9, 0) for i in range(3)]
    for fmt in FORMATS:
        for depth in (1, 4, 8):
            op = _text(_glyphs(depth, specs, depth), DEPTHS[depth], 0x123456, NO_BRUSH, (0, 0, 0, 0), Ropd.OP_PUT)
            assert _both_ways(fmt, 1, "opaque", base(0, 0, W, H), op)
            assert _both_ways(fmt, 2, "random", base(1, 2, 20, 15, clip=[(0, 0, 8, 9), (5, 4, 30, 30)]), op)
            with_back = _text(op.str.glyphs or (), DEPTHS[depth], 0xABCDEF, solid(0x55), (1, 1, 9, 16), Ropd.OP_PUT)
            assert _both_ways(fmt, 3, "random", base(0, 0, W, H), with_back)


def test_other_runs_take_the_general_path(mode: str) -> None:
    glyphs = _glyphs(4, [(2, 12, 0, -9, 5, 9, 0)], 0)
    b = base(0, 0, W, H)
    a4 = StringFlags.RASTER_A4
    declined = [
        (SurfaceFmt.FMT_16_565, _text(glyphs, a4, 0x123456, NO_BRUSH, (0, 0, 0, 0), Ropd.OP_PUT)),
        (SurfaceFmt.FMT_32_XRGB, _text((), a4, 0x123456, NO_BRUSH, (0, 0, 0, 0), Ropd.OP_PUT)),  # no glyphs
        (SurfaceFmt.FMT_32_XRGB, _text(glyphs, 0, 0x123456, NO_BRUSH, (0, 0, 0, 0), Ropd.OP_PUT)),  # vector glyphs
        (SurfaceFmt.FMT_32_XRGB, _text(glyphs, a4, 0x123456, solid(1), (0, 0, 5, 5), Ropd.OP_OR)),  # raises
    ]
    for fmt, op in declined:
        assert not _both_ways(fmt, 1, "random", b, op)
    pattern_fore = d.Text(
        str=d.String(flags=a4, glyphs=glyphs), back_area=rect(0, 0, 0, 0),
        fore_brush=d.Brush(type=BrushType.PATTERN, pattern=None), back_brush=NO_BRUSH, fore_mode=Ropd.OP_PUT, back_mode=0,
    )  # fmt: skip
    assert not fast_text.draw_text(_canvas(SurfaceFmt.FMT_32_XRGB, 1, "random"), b, pattern_fore)
    short = d.RasterGlyphA4(render_pos=Point(x=1, y=1), glyph_origin=Point(x=0, y=0), width=4, height=2, data=b"\x12")
    op = _text((short,), a4, 0x123456, NO_BRUSH, (0, 0, 0, 0), Ropd.OP_PUT)
    assert not fast_text.draw_text(_canvas(SurfaceFmt.FMT_32_XRGB, 1, "random"), b, op)


def test_disabled_fast_paths_switch_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(fast_text, "draw_text", lambda *args: calls.append(args) or True)
    monkeypatch.setattr(fast, "ENABLED", False)
    glyphs = _glyphs(1, [(2, 12, 0, -9, 5, 9, 0)], 0)
    c = _canvas(SurfaceFmt.FMT_32_XRGB, 1, "random")
    render_op(
        c,
        base(0, 0, W, H),
        _text(glyphs, StringFlags.RASTER_A1, 1, NO_BRUSH, (0, 0, 0, 0), Ropd.OP_PUT),
        Resolver({0: c}),
    )
    assert calls == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_alpha_over_every_channel_value(mode: str, fmt: int) -> None:
    """An A8 glyph of every alpha (column) over every channel value (row), in one glyph run."""
    alphas = np.tile(np.arange(256, dtype=np.uint8), (256, 1))[::-1]  # stored bottom-up
    glyph = d.RasterGlyphA8(
        render_pos=Point(x=0, y=0), glyph_origin=Point(x=0, y=0), width=256, height=256, data=alphas.tobytes()
    )
    for color in (0x00FF80, 0x7F017E, 0xFFFFFFFF):
        op = _text((glyph,), StringFlags.RASTER_A8, color, NO_BRUSH, (0, 0, 0, 0), Ropd.OP_PUT)
        outs = []
        for enabled in (True, False):
            c = Canvas(256, 256, fmt)
            c.pixels[...] = np.arange(256, dtype=np.uint32)[:, None] * np.uint32(0x01010101) ^ np.uint32(0x00FF0000)
            c.pixels[0, 0] = 0x00FFFFFF  # keep the X bytes (clear_dest_alpha looks at the first pixel)
            _render(c, base(0, 0, 256, 256), op, enabled)
            outs.append(c.pixels)
        assert np.array_equal(outs[0], outs[1])


def test_the_kernel_keeps_its_warmed_up_specialization() -> None:
    """Every run :func:`draw_text` hands the kernel uses the argument types the warm-up compiled."""
    if not HAVE_NUMBA:
        pytest.skip("numba is not installed")
    fast_text._warm_up()
    before = list(fast_text._draw_glyphs.signatures)  # type: ignore[attr-defined]
    test_typical_runs_take_the_fast_path("compiled")
    empty = _glyphs(8, [(1, 1, 0, 0, 0, 4, 0), (1, 1, 0, 0, 5, 0, 0)], 0)  # a 5x4 mask, no glyph of positive size
    op = _text(empty, StringFlags.RASTER_A8, 7, NO_BRUSH, (0, 0, 0, 0), Ropd.OP_PUT)
    assert _both_ways(SurfaceFmt.FMT_32_XRGB, 1, "opaque", base(0, 0, W, H), op)
    assert list(fast_text._draw_glyphs.signatures) == before  # type: ignore[attr-defined]
