"""Command line: ``python -m spiceserver demo [options]`` (see ``--help``)."""

from __future__ import annotations

import sys

from .demo import main as demo_main


def main() -> int:
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m spiceserver demo [--help] [options]\n\n"
              "commands:\n  demo    serve a demo SPICE session on 127.0.0.1 (see `demo --help`)")
        return 0 if argv else 2
    if argv[0] != "demo":
        print(f"unknown command {argv[0]!r}; try `python -m spiceserver demo --help`", file=sys.stderr)
        return 2
    return demo_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
