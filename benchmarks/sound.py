"""The playback channel's cost: server CPU per 10 ms frame and per client, raw and Opus.

Run: ``python benchmarks/sound.py [--seconds 5] [--realtime]``.

A server with one playback channel and one protocol client (the test client, reading in the same
process on the event loop; a session has one client until several clients per VM arrive). The
codec kernels are compiled first (their background compile would otherwise be counted). A host
thread writes a 440 Hz tone:

* flat out (default): as fast as the channel takes it, frame by frame through ``write``; the
  figure is the process's CPU microseconds per frame (framing, stamping, the loop
  hand-over, the command bitmask, marshalling, the socket write, and for Opus the encode), which
  is also the CPU share one client costs in real time: ``us / 10 ms``.
* ``--realtime``: 10 ms a write (``--frames-per-write N``: N x 10 ms) for ``--seconds``, and the whole process's CPU share (the host
  thread's sleeps and every loop wake-up included).

Every frame a client is sent is counted from its DATA messages (frames + drops = frames written).
The client side's CPU (reading, parsing) is included in the process figure; the flat-out figure
subtracts nothing, so it is an upper bound for the server.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spiceserver import ServerConfig, SpiceServer
from spiceserver.codecs import warmup
from spiceserver.codecs.opus import opus_available
from spiceserver.proto.enums import ChannelType, PlaybackCap
from spiceserver.proto.messages import playback as pm

FRAME = 1920


def tone(seconds: float) -> bytes:
    t = np.arange(int(48000 * seconds)) / 48000
    mono = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    return np.repeat(mono, 2).tobytes()


async def run(mode: str, seconds: float, realtime: bool, per_write: int = 1) -> dict[str, float]:
    from tests.support.client import Endpoint, connect

    server = SpiceServer(
        ServerConfig(
            port=0, addr="127.0.0.1", disable_ticketing=True, net_test=False, playback_compression=mode == "opus"
        )
    )
    await server.start()
    await asyncio.to_thread(warmup.wait, 600)
    try:
        speaker = server.add_playback()
        caps = (PlaybackCap.VOLUME, PlaybackCap.LATENCY) + ((PlaybackCap.OPUS,) if mode == "opus" else ())
        s = await connect(Endpoint(port=server.port_of()))
        ch = await s.link(ChannelType.PLAYBACK, channel_caps=caps)
        await ch.expect(pm.PlaybackMode)
        pcm = tone(seconds)
        nframes = len(pcm) // FRAME

        async def reader() -> None:
            while not isinstance(await ch.recv(10.0), pm.PlaybackStop):
                pass

        reading = asyncio.create_task(reader())

        def host() -> None:
            speaker.start()
            t0 = time.monotonic()
            for k in range(0, nframes, per_write):
                if realtime:
                    delay = t0 + k * 0.01 - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                speaker.write(pcm[k * FRAME : (k + per_write) * FRAME])
            speaker.stop()

        cpu0, wall0 = time.process_time(), time.perf_counter()
        writer = threading.Thread(target=host)
        writer.start()
        await asyncio.to_thread(writer.join)
        await asyncio.wait_for(reading, 30)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        m = speaker.sound_metrics()
        return {
            "frames": nframes,
            "sent": m.frames,
            "dropped": m.dropped,
            "bytes_per_frame": m.bytes / max(1, m.frames),
            "us_per_frame": cpu / max(1, m.frames) * 1e6,
            "cpu_share": cpu / wall,
            "wall": wall,
        }
    finally:
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--realtime", action="store_true")
    parser.add_argument("--frames-per-write", type=int, default=1, help="10 ms frames the host hands over per write")
    args = parser.parse_args()
    modes = ["raw"] + (["opus"] if opus_available() else [])
    print(
        f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    print(f"{'mode':<5} {'frames':>7} {'sent':>7} {'drop':>5} {'B/frame':>8} {'us/frame':>9} {'cpu':>6}")
    for mode in modes:
        r = asyncio.run(run(mode, args.seconds, args.realtime, args.frames_per_write))
        print(
            f"{mode:<5} {r['frames']:>7.0f} {r['sent']:>7.0f} {r['dropped']:>5.0f} {r['bytes_per_frame']:>8.0f} "
            f"{r['us_per_frame']:>9.1f} {r['cpu_share'] * 100:>5.1f}%"
        )
    if not opus_available():
        print("(Opus rows missing: PyAV with libopus is not installed)")


if __name__ == "__main__":
    main()
