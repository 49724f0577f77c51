"""Every SPICE message, both directions, as declarative dataclasses.

Importing this package registers all channels' messages; use
:func:`~spiceserver.proto.messages.base.parse_body` / :func:`lookup` to find them by number.
"""

from __future__ import annotations

from . import base, cursor, display, inputs, main, playback, port, record, smartcard, spicevmc
from .base import CLIENT, SERVER, Message, encode_body, lookup, messages_of, parse_body

__all__ = [
    "base",
    "main",
    "display",
    "inputs",
    "cursor",
    "playback",
    "record",
    "smartcard",
    "spicevmc",
    "port",
    "CLIENT",
    "SERVER",
    "Message",
    "encode_body",
    "lookup",
    "messages_of",
    "parse_body",
]
