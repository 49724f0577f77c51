"""Command line: ``python -m spiceserver demo [options]``, ``python -m spiceserver replay FILE`` and
``python -m spiceserver qemu [options] -- QEMU ARGS...``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .demo import main as demo_main

USAGE = """usage: python -m spiceserver COMMAND [--help] [options]

commands:
  demo      serve a demo SPICE session on 127.0.0.1 (see `demo --help`)
  replay    replay a recorded display session with no client and write its picture (see `replay --help`)
  qemu      run QEMU (-display dbus) and serve its VM over SPICE (see `qemu --help`; needs the qemu extra)"""


def replay_main(argv: Sequence[str]) -> int:
    """``replay FILE``: run a recording through a fresh display worker; returns the exit status."""
    from pathlib import Path

    from .errors import SpiceError
    from .worker.record import MAX_RECORDING, MAX_REPLAY_GAP, replay
    from .worker.worker import DisplayWorker

    p = argparse.ArgumentParser(prog="python -m spiceserver replay", description="Replay a recording made with a worker's Recorder.")
    p.add_argument("file", help="the recording")
    p.add_argument("--screendump", metavar="PNG", help="write the primary surface at the end as PNG")
    p.add_argument("--realtime", action="store_true", help=f"keep the recorded timing (pauses capped at {MAX_REPLAY_GAP:g} s)")
    p.add_argument(
        "--max-size", type=int, default=MAX_RECORDING >> 20, metavar="MIB",
        help=f"refuse a recording larger than this once decompressed (default {MAX_RECORDING >> 20} MiB)",
    )  # fmt: skip
    args = p.parse_args(argv)
    worker = DisplayWorker("replay")
    worker.start()
    try:
        with Path(args.file).open("rb") as fh:
            n = replay(fh, worker, realtime=args.realtime, max_bytes=args.max_size << 20)
        print(f"replayed {n} records")
        if args.screendump:
            worker.screendump(args.screendump)
            print(f"wrote {args.screendump}")
    except (SpiceError, OSError, KeyError) as exc:
        print(f"error: {exc!r}", file=sys.stderr)
        return 1
    finally:
        worker.stop()
    return 0


def main() -> int:
    """Dispatch ``sys.argv`` to ``demo``, ``replay`` or ``qemu``; returns the exit status."""
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "demo":
        return demo_main(argv[1:])
    if argv[0] == "replay":
        return replay_main(argv[1:])
    if argv[0] == "qemu":
        try:
            from .qemu.cli import main as qemu_main
        except ImportError as exc:
            print(f"error: the qemu command needs the qemu extra (dbus-fast): {exc}", file=sys.stderr)
            return 1
        from .reds import SpiceServer

        return qemu_main(argv[1:], SpiceServer)
    print(f"unknown command {argv[0]!r}; try `python -m spiceserver --help`", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
