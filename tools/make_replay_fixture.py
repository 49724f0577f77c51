"""Record the synthetic guest's static desktop (QXL path) as a replay fixture.

Run ``python tools/make_replay_fixture.py``; writes tests/fixtures/replay/static_desktop.rec.gz and
static_desktop.json (record count, the final picture's hash and size). The recording holds what the
worker received after the QXL layer validated each command (see spiceserver/worker/record.py).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spiceserver import ServerConfig, SpiceServer  # noqa: E402
from spiceserver.synthetic_guest import SyntheticGuest  # noqa: E402
from spiceserver.worker.record import read_records  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "replay"
W, H = 640, 480


async def main() -> None:
    server = SpiceServer(ServerConfig(port=0, disable_ticketing=True))
    device = server.add_qxl_device()
    tmp = Path(tempfile.mkdtemp()) / "session.rec"
    server.start_recording(tmp)  # no surface yet: the file starts empty
    guest = SyntheticGuest(device, W, H)
    guest.setup()
    guest.draw_static()
    for t in (0.5, 1.0):
        guest.step(t)
    server.wait_idle()
    picture = server.display_snapshot()
    server.stop_recording()
    await server.close()
    data = tmp.read_bytes()
    records = list(read_records(data))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "static_desktop.rec.gz").write_bytes(gzip.compress(data, 9, mtime=0))
    meta = {
        "records": len(records),
        "width": W,
        "height": H,
        "picture_blake2b": hashlib.blake2b(picture.astype("<u4").tobytes(), digest_size=16).hexdigest(),
        "kinds": sorted({type(m).__name__ for _, _, m in records}),
    }
    (OUT / "static_desktop.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(meta, len(data), "bytes")


if __name__ == "__main__":
    asyncio.run(main())
