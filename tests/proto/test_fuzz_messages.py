"""The message parser never crashes: any body parses to a Message or raises ProtocolError.

Same invariant as h11's ``fuzz/afl-server.py``: hostile bytes may be rejected, but only with the
one exception the channel layer turns into a disconnect. Three sources of input per message type:
random bytes, every truncation of a valid encoding, and random edits of a valid encoding.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spiceserver.errors import ProtocolError
from spiceserver.proto.marshal import layout_of
from spiceserver.proto.messages import Message, parse_body
from tests.proto.test_messages_roundtrip import MESSAGE_IDS, MESSAGES, message_strategy

FAST = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def parse_or_reject(channel: int, direction: str, type_: int, body: bytes) -> Message | None:
    """Parse ``body``; None if it was rejected with ProtocolError. Anything else fails the test."""
    try:
        msg = parse_body(channel, direction, type_, body)  # type: ignore[arg-type]
    except ProtocolError:
        return None
    assert isinstance(msg, Message)
    return msg


@pytest.mark.parametrize(("channel", "direction", "type_", "cls"), MESSAGES, ids=MESSAGE_IDS)
@settings(FAST, max_examples=50)
@given(body=st.binary(max_size=96))
def test_random_bodies(channel: int, direction: str, type_: int, cls: type[Message], body: bytes) -> None:
    msg = parse_or_reject(channel, direction, type_, body)
    if msg is not None:
        assert type(msg) is cls
        check_reencoding(channel, direction, type_, msg)


def check_reencoding(channel: int, direction: str, type_: int, msg: Message) -> None:
    """Whatever parsed can be encoded, and encoding a parse of that is a fixed point.

    Not ``parse(encode(msg)) == msg``: trailing bytes are dropped, and a pointer to an empty value
    (``b""``, ``()``) is marshalled as NULL, so the first re-encoding may normalise the message.
    """
    encoded = msg.encode()
    again = parse_or_reject(channel, direction, type_, encoded)
    if again is not None:
        assert again.encode() == encoded


@pytest.mark.parametrize(("channel", "direction", "type_", "cls"), MESSAGES, ids=MESSAGE_IDS)
@settings(FAST, max_examples=5)
@given(data=st.data())
def test_truncated_encodings(channel: int, direction: str, type_: int, cls: type[Message], data: Any) -> None:
    """A strict prefix either fails or is itself a complete, shorter message (data to the end)."""
    body = data.draw(message_strategy(cls)).encode()
    fixed = layout_of(cls).min_size
    for n in range(len(body)):
        prefix = body[:n]
        msg = parse_or_reject(channel, direction, type_, prefix)
        if msg is not None:
            assert n >= fixed, f"parsed {n} bytes of a {fixed}-byte fixed part"
            assert msg.encode() == prefix


@pytest.mark.parametrize(("channel", "direction", "type_", "cls"), MESSAGES, ids=MESSAGE_IDS)
@settings(FAST, max_examples=15)
@given(data=st.data())
def test_mutated_encodings(channel: int, direction: str, type_: int, cls: type[Message], data: Any) -> None:
    body = bytearray(data.draw(message_strategy(cls)).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["set", "insert", "delete", "u32"]))
        pos = data.draw(st.integers(0, len(body)))
        if op == "set" and pos < len(body):
            body[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            body[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del body[pos : pos + data.draw(st.integers(1, 4))]
        elif op == "u32" and pos + 4 <= len(body):  # plant a big count, size or pointer
            body[pos : pos + 4] = data.draw(st.sampled_from([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF])).to_bytes(
                4, "little"
            )
    parse_or_reject(channel, direction, type_, bytes(body))


_STROKE_HEAD = bytes(21)  # DisplayBase: surface 0, empty box, no clip
DEGENERATE = {
    # PORT_INIT: name_size 0 behind a valid pointer, so an empty name
    "port-init-empty-name": (10, "server", 201, struct.pack("<IIBB", 0, 9, 1, 0)),
    # DRAW_STROKE (path at 36): STYLED with a style pointer but no segments ...
    "stroke-style-empty": (2, "server", 310, _STROKE_HEAD + struct.pack("<IBBIBHHI", 36, 8, 0, 36, 0, 0, 0, 0)),
    # ... and STYLED with 3 segments but a NULL style pointer
    "stroke-style-null": (2, "server", 310, _STROKE_HEAD + struct.pack("<IBBIBHHI", 36, 8, 3, 0, 0, 0, 0, 0)),
    # DRAW_TEXT (string at 47): 5 glyphs announced but no RASTER flag, so no glyphs
    "text-no-raster": (2, "server", 311, _STROKE_HEAD + struct.pack("<I4iBBHHHB", 47, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0)),
    # MIGRATE_SWITCH_HOST: empty host behind a valid pointer
    "switch-host-empty": (1, "server", 111, struct.pack("<HHIIII", 0, 0, 0, 16, 0, 0)),
}


@pytest.mark.parametrize(("channel", "direction", "type_", "body"), DEGENERATE.values(), ids=DEGENERATE.keys())
def test_degenerate_bodies(channel: int, direction: str, type_: int, body: bytes) -> None:
    """Bodies libspice accepts that our encoder would write differently still parse and settle."""
    msg = parse_or_reject(channel, direction, type_, body)
    assert msg is not None
    check_reencoding(channel, direction, type_, msg)
