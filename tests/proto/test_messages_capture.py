"""Every message body in the libspice captures parses and re-encodes to the captured bytes.

The fixtures under ``tests/fixtures/libspice_*`` are real libspice-server 0.15.1 <-> spice-gtk 0.42
connections (see their ``index.json``). Byte-identical re-encoding checks our layouts *and* our
pointer placement against libspice's marshaller. Skipped when no fixture is present.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from spiceserver.proto.messages import CLIENT, SERVER, parse_body

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

#: bytes libspice sends after the last field that we parse past and do not send (none today:
#: the NUL libspice appends to NOTIFY is modelled as ``Notify.terminator``).
TRAILING_OK: dict[tuple[int, str, int], bytes] = {}


def _load_splitter() -> ModuleType | None:
    path = FIXTURES / "split.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("_fixture_split", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _streams() -> list[tuple[str, int, str, bytes, bool]]:
    out = []
    for index in sorted(FIXTURES.glob("*/index.json")):
        meta = json.loads(index.read_text())
        for conn in meta.get("connections", []):
            if "channel_type" not in conn:
                continue
            for direction, key in ((CLIENT, "c2s_file"), (SERVER, "s2c_file")):
                path = index.parent / conn[key]
                if path.exists():
                    label = f"{index.parent.name}/{conn[key]}"
                    out.append(
                        (label, conn["channel_type"], direction, path.read_bytes(), conn.get("mini_header", True))
                    )
    return out


SPLIT = _load_splitter()
STREAMS = _streams() if SPLIT is not None else []


@pytest.mark.skipif(not STREAMS, reason="no libspice capture fixtures")
@pytest.mark.parametrize(("label", "channel", "direction", "data", "mini"), STREAMS, ids=[s[0] for s in STREAMS])
def test_capture_messages_reencode(label: str, channel: int, direction: str, data: bytes, mini: bool) -> None:
    assert SPLIT is not None
    role = "client" if direction == CLIENT else "server"
    records: list[dict[str, Any]] = SPLIT.split_stream(data, mini, link_role=role, strict=False)
    for rec in records:
        if rec["kind"] != "message":
            continue
        body: bytes = rec["body"]
        msg = parse_body(channel, direction, rec["type"], body)  # type: ignore[arg-type]
        encoded = msg.encode()
        if encoded != body:
            trailing = TRAILING_OK.get((msg.CHANNEL, msg.DIRECTION, msg.TYPE))
            assert trailing is not None and body == encoded + trailing, (label, rec["offset"], type(msg).__name__)
        assert parse_body(channel, direction, rec["type"], encoded) == msg  # type: ignore[arg-type]
