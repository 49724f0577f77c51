"""``python -m spiceserver demo``: a server with a keyboard, a mouse and a tablet that print events.

Every input event the devices receive is printed on its own line, flushed at once, e.g.::

    key down 0x1e (scancode 1e)
    mouse motion dx=3 dy=-1 dz=0 buttons=0x0
    tablet position x=120 y=48 buttons=0x1 display=0
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from .config import ServerConfig
from .errors import ConfigError
from .interfaces import Keyboard, KeyEvent, Mouse, Tablet
from .reds import SpiceServer

__all__ = ["main", "build_parser", "PrintingKeyboard", "PrintingMouse", "PrintingTablet"]


def _out(line: str) -> None:
    print(line, flush=True)


class PrintingKeyboard(Keyboard):
    def on_key(self, event: KeyEvent) -> None:
        _out(f"key {'down' if event.down else 'up'} {event.keycode:#04x} (scancode {event.scancode.hex(' ')})")


class PrintingMouse(Mouse):
    def on_motion(self, dx: int, dy: int, dz: int, buttons: int) -> None:
        _out(f"mouse motion dx={dx} dy={dy} dz={dz} buttons={buttons:#x}")

    def on_buttons(self, buttons: int) -> None:
        _out(f"mouse buttons={buttons:#x}")


class PrintingTablet(Tablet):
    def on_position(self, x: int, y: int, buttons: int, display_id: int) -> None:
        _out(f"tablet position x={x} y={y} buttons={buttons:#x} display={display_id}")

    def on_wheel(self, dz: int, buttons: int) -> None:
        _out(f"tablet wheel dz={dz} buttons={buttons:#x}")

    def on_buttons(self, buttons: int) -> None:
        _out(f"tablet buttons={buttons:#x}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m spiceserver demo",
        description="Serve a demo SPICE session on this machine. Connect with "
        "`remote-viewer spice://127.0.0.1:5900`; typed keys and mouse actions are printed here.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5900, help="plain TCP port (default 5900; 0 = no plain listener)")
    p.add_argument("--tls-port", type=int, default=None, help="TLS port; needs --x509-dir")
    p.add_argument("--x509-dir", default=None, help="directory with ca-cert.pem, server-cert.pem, server-key.pem")
    p.add_argument("--unix", default=None, metavar="PATH", help="also listen on this Unix socket")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--password", default=None, help="require this password (ticket)")
    auth.add_argument("--disable-ticketing", action="store_true", help="no password (the default when --password is absent)")
    p.add_argument("--tls-channel", action="append", default=[], metavar="NAME",
                   help="channel that must use TLS (main, inputs, ...; 'default' = all); repeatable")
    p.add_argument("--name", default="spiceserver demo", help="VM name shown by clients")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    return p


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        addr=args.host,
        port=args.port or None,
        tls_port=args.tls_port,
        x509_dir=args.x509_dir,
        unix_path=args.unix,
        password=args.password,
        disable_ticketing=args.password is None,
        tls_channels=tuple(args.tls_channel),
        name=args.name,
    )


async def run(config: ServerConfig) -> None:
    server = SpiceServer(config)
    server.add_keyboard(PrintingKeyboard())
    server.add_mouse(PrintingMouse())
    server.add_tablet(PrintingTablet())
    await server.start()
    for addr in server.addresses:
        _out(f"spiceserver demo listening on {addr}")
    await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run(config))
    except KeyboardInterrupt:
        pass
    return 0
