"""Table-driven round trips of every registered message, both directions, every channel.

Values come from hypothesis strategies derived from each class's wire layout
(:func:`message_strategy`), so a new message is covered as soon as it is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spiceserver.proto.enums import BrushType, ChannelType, ClipType, DataCompressionType, ImageType
from spiceserver.proto.marshal import Array, Bytes, Int, Ptr, StructType, Switch, WireType, layout_of
from spiceserver.proto.messages import CLIENT, SERVER, Message, display, lookup, messages_of, parse_body, spicevmc

# --- strategies derived from layouts ----------------------------------------------------------

MAX_ITEMS = 3  # elements per array: keeps nested images, glyphs and paths small
MAX_BYTES = 24


def _u8_or(*values: int) -> st.SearchStrategy[int]:
    """Mostly meaningful discriminator values, sometimes any u8."""
    return st.sampled_from([int(v) for v in values]) | st.integers(0, 255)


#: fields whose values must be bounded (they size other fields) or steered (discriminators).
OVERRIDES: dict[tuple[type, str], st.SearchStrategy[Any]] = {
    (display.BitmapData, "stride"): st.integers(0, 8),
    (display.BitmapData, "y"): st.integers(0, 3),
    (display.ImageDescriptor, "type"): _u8_or(*ImageType),
    (display.Clip, "type"): _u8_or(*ClipType),
    (display.Brush, "type"): _u8_or(*BrushType),
    (spicevmc.SpicevmcCompressedData, "type"): _u8_or(*DataCompressionType),
    (spicevmc.ClientSpicevmcCompressedData, "type"): _u8_or(*DataCompressionType),
}
for _glyph in (display.RasterGlyphA1, display.RasterGlyphA4, display.RasterGlyphA8):
    OVERRIDES[(_glyph, "width")] = st.integers(0, 12)
    OVERRIDES[(_glyph, "height")] = st.integers(0, 3)


def int_strategy(wtype: Int) -> st.SearchStrategy[int]:
    bits = wtype.st.size * 8
    if wtype.st.format[-1].islower():
        return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return st.integers(0, (1 << bits) - 1)


def _exact_count(spec: Any, own: dict[str, Any]) -> int | None:
    """The length a counted value must have, or None if it is free (a hidden count, or to the end)."""
    if spec is None:
        return None
    if isinstance(spec, int):
        return spec
    if isinstance(spec, str):
        value = own.get(spec)
        return None if value is None else int(value)  # hidden counts are derived when writing
    return int(spec(own))


def value_strategy(wtype: WireType, own: dict[str, Any], *, nonempty: bool = False) -> st.SearchStrategy[Any]:
    """Values of ``wtype`` given the fields drawn so far in the enclosing structure.

    ``nonempty`` is set for pointer targets: an empty target is marshalled as a NULL pointer and
    would come back as None.
    """
    if isinstance(wtype, Int):
        return int_strategy(wtype)
    if isinstance(wtype, Bytes):
        n = _exact_count(wtype.count, own)
        if n is not None:
            return st.binary(min_size=n, max_size=n)
        return st.binary(min_size=1 if nonempty else 0, max_size=MAX_BYTES)
    if isinstance(wtype, Array):
        elem = value_strategy(wtype.elem, {})
        n = _exact_count(wtype.count, own)
        if n is not None:
            return st.lists(elem, min_size=n, max_size=n).map(tuple)
        return st.lists(elem, min_size=1 if nonempty else 0, max_size=MAX_ITEMS).map(tuple)
    if isinstance(wtype, Ptr):
        target = value_strategy(wtype.target, own, nonempty=True)
        return target if wtype.nonnull else st.none() | target
    if isinstance(wtype, Switch):
        arm = wtype.choose(own)
        return st.none() if arm is None else value_strategy(arm, own, nonempty=nonempty)
    if isinstance(wtype, StructType):
        return struct_strategy(wtype.cls)
    raise TypeError(f"no strategy for wire type {wtype!r}")


@cache
def struct_strategy(cls: type) -> st.SearchStrategy[Any]:
    """Instances of a ``@struct`` class whose conditional fields agree with their discriminators."""
    layout = layout_of(cls)

    @st.composite
    def build(draw: Callable[[st.SearchStrategy[Any]], Any]) -> Any:
        own: dict[str, Any] = {}
        values: dict[str, Any] = {}
        for item in layout.items:
            if item.hidden:
                own[item.name] = None
                continue
            if item.when is not None and not item.when(own):
                value = None
            else:
                strategy = OVERRIDES.get((cls, item.name))
                if strategy is None:
                    strategy = value_strategy(item.wtype, own)
                value = draw(strategy)
            own[item.name] = values[item.name] = value
        return cls(**values)

    return build()


def message_strategy(cls: type[Message]) -> st.SearchStrategy[Message]:
    return struct_strategy(cls)


def registered_messages() -> list[tuple[int, str, int, type[Message]]]:
    """(channel, direction, type, class) for every message class, each class once."""
    seen: set[type[Message]] = set()
    out = []
    for channel in ChannelType:
        for direction in (SERVER, CLIENT):
            for type_, cls in sorted(messages_of(channel, direction).items()):
                if cls not in seen:
                    seen.add(cls)
                    out.append((int(channel), direction, type_, cls))
    return out


MESSAGES = registered_messages()
MESSAGE_IDS = [f"{ChannelType(c).name.lower()}-{d}-{t}-{cls.__name__}" for c, d, t, cls in MESSAGES]

# --- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("channel", "direction", "type_", "cls"), MESSAGES, ids=MESSAGE_IDS)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_round_trip(channel: int, direction: str, type_: int, cls: type[Message], data: st.DataObject) -> None:
    msg = data.draw(message_strategy(cls), label="message")
    body = msg.encode()
    parsed = parse_body(channel, direction, type_, body)  # type: ignore[arg-type]
    assert type(parsed) is cls
    assert parsed == msg
    assert parsed.encode() == body
    assert generic_encode(msg) == body  # the compiled writers match the interpreted reference


def generic_encode(msg: Message) -> bytes:
    """``msg`` marshalled by the interpreted item-by-item writer (the compiled ones' reference)."""
    compiled = StructType.write
    StructType.write = StructType.write_generic  # type: ignore[method-assign]
    try:
        return msg.encode()
    finally:
        StructType.write = compiled  # type: ignore[method-assign]


def test_compiled_writers_raise_as_the_generic_one() -> None:
    from spiceserver.proto.messages.base import Rect

    bad_int = display.DrawFill(
        base=display.DisplayBase(surface_id=1 << 32, box=Rect(top=0, left=0, bottom=1, right=1), clip=display.Clip(type=ClipType.NONE)),
        data=display.Fill(brush=display.Brush(type=BrushType.SOLID, color=1), rop_descriptor=8, mask=display.QMask()),
    )
    with pytest.raises(ValueError, match="cannot marshal"):
        bad_int.encode()
    with pytest.raises(ValueError, match="cannot marshal"):
        generic_encode(bad_int)
    # a conditional field that must be absent
    bad_when = display.Brush(type=BrushType.NONE, color=5)
    from spiceserver.proto.marshal import marshal

    with pytest.raises(ValueError, match="must be None"):
        marshal(bad_when)


def test_every_channel_has_its_messages() -> None:
    """Each channel type resolves its own, inherited and base messages through lookup()."""
    for channel in ChannelType:
        for direction in (SERVER, CLIENT):
            table = messages_of(channel, direction)
            assert table[3 if direction == SERVER else 1] is not None  # base messages are inherited
            for type_, cls in table.items():
                assert lookup(channel, direction, type_) is cls
                assert direction == cls.DIRECTION
    display_server = messages_of(ChannelType.DISPLAY, SERVER)
    assert set(display_server) >= {101, 102, 103, 104, 105, 106, 107, 108, *range(122, 127), *range(302, 323)}
    assert set(messages_of(ChannelType.DISPLAY, CLIENT)) >= {101, 102, 103, 104, 105}
    assert set(messages_of(ChannelType.CURSOR, SERVER)) >= set(range(101, 109))


@pytest.mark.parametrize("channel", [ChannelType.USBREDIR, ChannelType.PORT, ChannelType.WEBDAV])
def test_spicevmc_channels_inherit(channel: ChannelType) -> None:
    for direction in (SERVER, CLIENT):
        data = lookup(channel, direction, 101)
        compressed = lookup(channel, direction, 102)
        assert data is not None and compressed is not None
        assert data.CHANNEL == compressed.CHANNEL == spicevmc.SPICEVMC
    port_types = {ChannelType.PORT, ChannelType.WEBDAV}
    assert (lookup(channel, SERVER, 201) is not None) == (channel in port_types)
    assert (lookup(channel, SERVER, 202) is not None) == (channel in port_types)
    assert (lookup(channel, CLIENT, 201) is not None) == (channel in port_types)
    assert lookup(channel, SERVER, 203) is None
