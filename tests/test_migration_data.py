"""Migration data blobs (spiceserver.proto.migration_data): round trips, header checks, fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.errors import ProtocolError
from spiceserver.proto import migration_data as md

KINDS = (md.MainMigrationData, md.InputsMigrationData, md.DisplayMigrationData, md.VmcMigrationData)


def test_magic_is_libspice_magic_const() -> None:
    # SPICE_MAGIC_CONST("MNMD") = 'M' | 'N' << 8 | 'M' << 16 | 'D' << 24
    assert md.magic_const(b"MNMD") == ord("M") | ord("N") << 8 | ord("M") << 16 | ord("D") << 24
    assert md.pack(md.InputsMigrationData(3, 2))[:8] == b"ICMD" + struct.pack("<I", 1)


@pytest.mark.parametrize(
    "data",
    [
        md.MainMigrationData(True, True, 7, 3, 2, (b"x" * 2048, b"", b"abc"), frozenset({0, 5, 17})),
        md.MainMigrationData(),
        md.InputsMigrationData(motion_count=65535, modifiers=7),
        md.DisplayMigrationData(1, 20 << 20, 1, 3 << 20, 12345, True),
        md.VmcMigrationData(b"queued for the device"),
        md.VmcMigrationData(),
    ],
)
def test_round_trip(data: md.MigrationData) -> None:
    blob = md.pack(data)
    assert md.parse(type(data), blob) == data
    assert md.parse(type(data), blob + b"trailing") == data  # trailing bytes accepted, as messages


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"MNMD", "shorter than its header"),
        (b"ICMD" + struct.pack("<I", 1) + b"\0\0\0", "need"),
        (b"DCMD" + struct.pack("<I", 1) + bytes(22), "magic"),  # a display blob on the inputs channel
        (b"ICMD" + struct.pack("<I", 2) + bytes(6), "version 2"),
        (md.pack(md.MainMigrationData())[:-8] + struct.pack("<I", 257), "agent pieces"),
        (md.pack(md.MainMigrationData())[:-8] + struct.pack("<II", 1, 4096), "agent piece of 4096"),
        (md.pack(md.MainMigrationData())[:-8] + struct.pack("<II", 2, 1) + b"x", "need"),
        (md.pack(md.MainMigrationData())[:-4] + struct.pack("<I", 257), "capabilities"),
        (md.pack(md.MainMigrationData())[:-4] + struct.pack("<II", 1, 4096), "capability out of range"),
        (md.pack(md.MainMigrationData())[:-4] + struct.pack("<II", 2, 1), "need"),
        (b"SVMD" + struct.pack("<II", 1, 5) + b"abc", "need"),
        (b"SVMD" + struct.pack("<II", 1, 1 << 20), "queue of"),
    ],
)
def test_bad_blobs(blob: bytes, reason: str) -> None:
    kind = {b"MNMD": md.MainMigrationData, b"SVMD": md.VmcMigrationData}.get(blob[:4], md.InputsMigrationData)
    with pytest.raises(ProtocolError, match=reason):
        md.parse(kind, blob)


def test_bad_flags() -> None:
    blob = bytearray(md.pack(md.MainMigrationData()))
    blob[8] = 2
    with pytest.raises(ProtocolError, match="flags"):
        md.parse(md.MainMigrationData, bytes(blob))
    blob = bytearray(md.pack(md.DisplayMigrationData()))
    blob[-1] = 9
    with pytest.raises(ProtocolError, match="flags"):
        md.parse(md.DisplayMigrationData, bytes(blob))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(KINDS), st.binary(max_size=96), st.booleans())
def test_fuzz_parse_or_protocol_error(kind: type[md.MigrationData], body: bytes, good_header: bool) -> None:
    blob = (md.magic_const(kind.MAGIC).to_bytes(4, "little") + (1).to_bytes(4, "little") + body) if good_header else body
    try:
        md.parse(kind, blob)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=2048), max_size=8), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF))
def test_fuzz_main_round_trip(pieces: list[bytes], a: int, b: int) -> None:
    data = md.MainMigrationData(True, False, a, b, 1, tuple(pieces))
    assert md.parse(md.MainMigrationData, md.pack(data)) == data
