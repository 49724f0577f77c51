"""Byte streams under the channels: plain/TLS/Unix sockets, WebSocket tunnels, and a channel client's handle.

Counterpart of spice ``server/red-stream.cpp`` (one stream type over plain, TLS and WebSocket
connections) and of the part of ``red-channel-client.cpp`` that writes a client's output. The
sockets themselves are asyncio's; this module gives them one shape:

* :class:`Reader` / :class:`Writer`: what the link and the channels read and write with (an
  ``asyncio.StreamReader`` / ``StreamWriter``, or a :class:`WebSocketStream` that carries the same
  SPICE bytes in WebSocket binary messages).
* :func:`http_exchange`: an HTTP request on a SPICE port, answered (a file of the web root, the
  metrics page) or upgraded to a :class:`WebSocketStream`.
* :func:`tls_context`: the TLS listener's context from the configuration; :func:`start_tls` upgrades
  an accepted plain connection with it.
* :class:`Transport`: one channel client's write side. ``write`` and ``close`` run on the event
  loop; :meth:`Transport.post` may be called from any thread (a host's emulation thread): it runs a
  function on the loop and then writes whatever the channel client queued.
* :class:`MessageCuts`: on a TLS connection, every write ends its TLS record at a SPICE message's
  end (see there: spice-gtk stalls otherwise).

Back-pressure: a peer must take what it is sent. A loop channel's pump drains after each read; the
display worker's output is bounded by its own window; a WebSocket, which answers each PING with a
PONG itself, reads no more while over :data:`WRITE_PAUSE_BYTES` are unsent; and a write onto more
than :data:`MAX_WRITE_BUFFER` unsent bytes drops the connection, with the reason logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import struct
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from .config import ServerConfig
from .errors import ConfigError
from .events import ConnLog
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .web import Closed, HttpGet, Payload, Upgraded, WebConnection, WebOptions

__all__ = [
    "READ_CHUNK", "LINK_CHUNK", "WRITE_PAUSE_BYTES", "MAX_WRITE_BUFFER", "Reader", "Writer", "WebSocketStream", "Transport",
    "LoopGate", "MessageCuts", "close_writer", "http_exchange", "start_tls", "tls_context", "unsent_bytes",
]  # fmt: skip

log = logging.getLogger("spiceserver")

READ_CHUNK = 65536
#: What one read takes from a connection before its link completes (HTTP request, WebSocket link
#: phase), as the plain link reads: together with the protocols' own limits it bounds what an
#: unauthenticated peer makes the server buffer.
LINK_CHUNK = 4096

#: unsent bytes on a connection above which its reader waits for the peer to take them before
#: reading more (asyncio's own high-water mark is below it, so the wait is until its low-water mark)
WRITE_PAUSE_BYTES = 256 << 10
#: unsent bytes onto which nothing more is written: the connection is dropped (the peer is not
#: reading). Above the display worker's window (``HIGH_WATER``, 2 MiB), the most a display client
#: has unsent when its next message is written.
MAX_WRITE_BUFFER = 16 << 20

T = TypeVar("T")


class Reader(Protocol):
    """What the server reads with: an ``asyncio.StreamReader`` or a :class:`WebSocketStream`."""

    async def read(self, n: int = -1) -> bytes:
        """At most ``n`` bytes (``n`` > 0), waiting for at least one; ``b""`` at the end of the stream."""
        ...


class Writer(Protocol):
    """What the server writes with: an ``asyncio.StreamWriter`` or a :class:`WebSocketStream`."""

    def write(self, data: bytes) -> None:
        """Queue ``data`` for sending (never blocks)."""
        ...

    async def drain(self) -> None:
        """Wait until the queued data may be written (flow control)."""
        ...

    def close(self) -> None:
        """Start closing the stream."""
        ...

    def is_closing(self) -> bool:
        """True once the stream is closed or closing."""
        ...

    async def wait_closed(self) -> None:
        """Wait until the stream is closed."""
        ...

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Transport information such as ``"peername"`` or ``"ssl_object"``; ``default`` when absent."""
        ...

    @property
    def transport(self) -> asyncio.WriteTransport:
        """The socket's asyncio transport (its unsent bytes, ``abort``)."""
        ...


def unsent_bytes(writer: Writer) -> int:
    """Bytes written to ``writer`` that the socket has not sent yet."""
    return writer.transport.get_write_buffer_size()


def _overflows(writer: Writer, clog: logging.Logger | logging.LoggerAdapter[Any]) -> bool:
    """True (and the connection dropped, the reason logged) if ``writer`` has more than
    :data:`MAX_WRITE_BUFFER` unsent bytes: its peer is not reading what it is sent."""
    unsent = unsent_bytes(writer)
    if unsent <= MAX_WRITE_BUFFER:
        return False
    clog.warning("peer is not reading: %d bytes unsent (limit %d); dropping the connection", unsent, MAX_WRITE_BUFFER)
    writer.transport.abort()
    return True


async def close_writer(writer: Writer) -> None:
    """Close ``writer`` and wait (briefly) until it is closed."""
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 2.0)


class WebSocketStream:
    """A connection that became a WebSocket: SPICE bytes in and out of binary messages.

    Offers the :class:`Reader` and :class:`Writer` calls, so the link and the channels run over it
    unchanged (the framing is :class:`~spiceserver.web.WebConnection`'s, sans-IO). Until
    :meth:`linked` it reads :data:`LINK_CHUNK` bytes at a time and accepts only link-sized
    messages, so before authentication it buffers what a plain connection would. Control frames
    are answered here (a PING queues a PONG), so reading waits while more than
    :data:`WRITE_PAUSE_BYTES` are unsent, and the connection is dropped rather than written onto
    more than :data:`MAX_WRITE_BUFFER`.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, web: WebConnection, clog: ConnLog) -> None:
        self._reader = reader
        self._writer = writer
        self._web = web
        self._clog = clog
        self._buf = bytearray()
        self._eof = False
        self._chunk = LINK_CHUNK

    def linked(self, result: T) -> T:
        """Pass the link's ``result`` through; unless it is None (refused) the link phase is over,
        and messages up to ``max_message_size`` are read in :data:`READ_CHUNK` reads."""
        if result is not None:
            self._web.linked()
            self._chunk = READ_CHUNK
        return result

    @property
    def buffered(self) -> int:
        """Received bytes held and not yet read: SPICE bytes, and what the WebSocket parser holds."""
        return len(self._buf) + self._web.buffered

    def feed(self, events: list[Any]) -> None:
        """Take the events the WebSocket protocol produced (payloads, close)."""
        for ev in events:
            if isinstance(ev, Payload):
                self._buf += ev.data
            elif isinstance(ev, Closed):
                self._clog.info("WebSocket: %s", ev.reason)
                self._eof = True
        self._flush()

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes of SPICE data (all buffered if ``n`` < 0); ``b""`` at the end."""
        while not self._buf and not self._eof:
            if unsent_bytes(self._writer) > WRITE_PAUSE_BYTES:
                await self._writer.drain()  # the peer takes what it is owed (PONGs) before we read on
            data = await self._reader.read(self._chunk)
            self.feed(self._web.receive_data(data) if data else self._web.receive_eof())
        if n < 0 or n >= len(self._buf):
            out = bytes(self._buf)
            self._buf.clear()
        else:
            out = bytes(self._buf[:n])
            del self._buf[:n]
        return out

    def write(self, data: bytes) -> None:
        """Send ``data`` in one binary message."""
        self._web.send(data)
        self._flush()

    def _flush(self) -> None:
        out = self._web.data_to_send()
        if out and not self._writer.is_closing():
            if _overflows(self._writer, self._clog):
                self._eof = True
                return
            self._writer.write(out)
        if self._web.close_transport:
            self._writer.close()

    async def drain(self) -> None:
        """Wait until the socket's write buffer is below its high-water mark."""
        await self._writer.drain()

    def close(self) -> None:
        """Send a WebSocket close and close the socket."""
        self._web.close()
        self._flush()
        self._writer.close()

    def is_closing(self) -> bool:
        """True once the socket is closing or closed."""
        return self._writer.is_closing()

    async def wait_closed(self) -> None:
        """Wait until the socket is closed."""
        await self._writer.wait_closed()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The socket's transport information (``peername``, ...)."""
        return self._writer.get_extra_info(name, default)

    @property
    def transport(self) -> asyncio.WriteTransport:
        """The socket's asyncio transport."""
        return self._writer.transport


async def http_exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    data: bytes,
    options: WebOptions,
    metrics_page: Callable[[], Awaitable[str]],
    clog: ConnLog,
) -> WebSocketStream | bool | None:
    """Serve an HTTP request whose first bytes are ``data``.

    Returns a stream to link over for a WebSocket upgrade, True when a file or the metrics page
    was served, None when the request never completed.
    """
    sockname = writer.get_extra_info("sockname")
    web = WebConnection(options, sockname[0] if isinstance(sockname, tuple) else None)
    while True:
        # a plain GET may read a file of the web root: off the event loop
        events = await asyncio.to_thread(web.receive_data, data)
        out = web.data_to_send()
        if out:
            writer.write(out)
            await writer.drain()
        for i, ev in enumerate(events):
            if isinstance(ev, Upgraded):
                clog.info("WebSocket upgrade (path %r, origin %r)", ev.path[:200], ev.origin)
                ws = WebSocketStream(reader, writer, web, clog)
                ws.feed(events[i + 1 :])
                return ws
            if isinstance(ev, HttpGet):
                body = (await metrics_page()).encode()
                ev = web.respond(200, "OK", body, METRICS_CONTENT_TYPE)
                writer.write(web.data_to_send())
                await writer.drain()
            if isinstance(ev, Closed):
                clog.info("%s", ev.reason)
                return True
        if web.close_transport:
            return None
        data = await reader.read(LINK_CHUNK)
        if not data:
            clog.info("peer closed the connection during the HTTP request")
            return None


async def start_tls(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Run the server side of a TLS handshake on an accepted plain connection; returns its streams.

    The TLS port accepts plain TCP and upgrades here (rather than with ``start_server(ssl=...)``,
    where the handshake runs before the server sees the socket), so that a connection is counted
    and bounded from its first moment. Call it before anything reads the connection; the caller
    bounds the time it may take. Closing the plain ``writer`` given closes the TLS stream too.

    Raises:
        OSError: the handshake failed (``ssl.SSLError``) or the connection was lost.
    """
    loop = asyncio.get_running_loop()
    tls_reader = asyncio.StreamReader()
    protocol = asyncio.StreamReaderProtocol(tls_reader)
    plain = writer.transport.get_protocol()
    # (not StreamWriter.start_tls: on CPython 3.11 a peer gone mid-handshake leaves that writer
    # without a transport and raises AttributeError)
    try:
        tls = await loop.start_tls(writer.transport, protocol, context, server_side=True)
    finally:
        # the plain protocol no longer owns the socket: end it, so that the plain writer's
        # wait_closed() returns (closing that writer closes the socket, TLS or not)
        plain.connection_lost(None)
    if tls is None:  # the peer went away during the handshake
        raise ConnectionResetError("connection lost during the TLS handshake")
    protocol.connection_made(tls)
    return tls_reader, asyncio.StreamWriter(tls, protocol, tls_reader, loop)


def tls_context(config: ServerConfig) -> ssl.SSLContext:
    """The TLS server context: QEMU's x509 files, no compression, no renegotiation.

    Raises:
        ConfigError: the certificate or key file is missing.
    """
    cert, key, _ca = config.tls_files()
    for path in (cert, key):
        if not os.path.exists(path):
            raise ConfigError(f"TLS file {path} not found")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.load_cert_chain(cert, key, password=config.x509_key_password)
    if config.tls_ciphers:
        ctx.set_ciphers(config.tls_ciphers)
    return ctx


class LoopGate:
    """Runs functions on the server's event loop from any thread.

    Before the loop is known (nothing started yet, so no client can be affected) and on the
    loop's own thread the function runs at once; from another thread it is scheduled with
    ``call_soon_threadsafe`` and runs soon, in call order.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the server runs on (called by the server when it starts)."""
        self.loop = loop
        self._thread = threading.get_ident()

    @property
    def on_loop(self) -> bool:
        """True when called on the loop's thread, or before the server started."""
        return self.loop is None or threading.get_ident() == self._thread or self.loop.is_closed()

    def run(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the loop (now if already there)."""
        if self.on_loop:
            fn()
        else:
            assert self.loop is not None
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody to tell
                self.loop.call_soon_threadsafe(fn)


class MessageCuts:
    """Cuts a channel client's output at the end of each SPICE message, across writes.

    Why: spice-gtk reads a TLS channel one message at a time (header, then body, with ``SSL_read``)
    and, after each message, reads on only while the *socket* is readable
    (``spice_channel_iterate_read``: ``g_pollable_input_stream_is_readable`` on the TCP stream, not
    ``SSL_pending``). Messages that follow the one it read inside the same TLS record are already
    out of the socket, in OpenSSL's buffer: spice-gtk waits for the socket and never reads them
    (seen: a display channel over TLS that never shows its first picture). libspice writes each
    message with its own ``SSL_write`` calls (``red_stream_writev`` over SSL: one per iovec), so no
    TLS record runs past a message's end; asyncio encrypts each ``write`` separately, so one write
    per message does the same here.

    Args:
        mini_header: the channel uses the mini header (``SpiceMiniDataHeader``: type u16, size u32)
            rather than ``SpiceDataHeader`` (serial u64, type u16, size u32, sub_list u32).
    """

    def __init__(self, mini_header: bool) -> None:
        self._head = 6 if mini_header else 18
        self._size_at = 2 if mini_header else 10
        self._header = bytearray()  # a header split across writes
        self._body = 0  # bytes of the current message's body still to come

    def pieces(self, data: bytes) -> list[memoryview]:
        """``data`` in pieces that each end at a message's end (the last one may end inside one)."""
        out: list[memoryview] = []
        view = memoryview(data)
        start = pos = 0
        n = len(view)
        while pos < n:
            if self._body:
                take = min(self._body, n - pos)
                pos += take
                self._body -= take
                if self._body:
                    break
            else:
                take = min(self._head - len(self._header), n - pos)
                self._header += view[pos : pos + take]
                pos += take
                if len(self._header) < self._head:
                    break
                (self._body,) = struct.unpack_from("<I", self._header, self._size_at)
                self._header.clear()
                if self._body:
                    continue
            out.append(view[start:pos])
            start = pos
        if start < n:
            out.append(view[start:])
        return out


class Transport:
    """One channel client's write side.

    Args:
        writer: the stream to write to.
        gate: the server's loop gate (for :meth:`post`).
        source: what the channel client queued (its connection's ``data_to_send``); None for
            channel clients whose bytes come from elsewhere (a display worker).
        on_output: told the size of every write (byte counters).
        log: where the connection's own troubles are logged.
        cuts: on a TLS connection, a :class:`MessageCuts` for the channel's header: each message is
            written (and so encrypted) on its own.
    """

    def __init__(
        self,
        writer: Writer,
        gate: LoopGate,
        source: Callable[[], bytes] | None = None,
        on_output: Callable[[int], None] | None = None,
        log: logging.Logger | logging.LoggerAdapter[Any] = log,
        cuts: MessageCuts | None = None,
    ) -> None:
        self._writer = writer
        self._gate = gate
        self._source = source
        self._on_output = on_output
        self._log = log
        self._cuts = cuts
        self.closed = False

    def write(self, data: bytes) -> None:
        """Write ``data`` now (event loop only); dropped once closing. Writing onto more than
        :data:`MAX_WRITE_BUFFER` unsent bytes drops the connection instead (the peer is not reading)."""
        if data and not self.closed and not self._writer.is_closing():
            if _overflows(self._writer, self._log):
                self.closed = True
                return
            if self._cuts is None:
                self._writer.write(data)
            else:
                for piece in self._cuts.pieces(data):
                    self._writer.write(piece)  # type: ignore[arg-type]  # a bytes-like view
            if self._on_output is not None:
                self._on_output(len(data))

    def flush(self) -> None:
        """Write whatever the channel client queued (event loop only)."""
        if self._source is not None:
            self.write(self._source())

    async def drain(self) -> None:
        """Wait until the stream's buffer is below its high-water mark."""
        await self._writer.drain()

    @property
    def unsent(self) -> int:
        """Bytes written that the socket has not taken yet (0 once closed)."""
        return 0 if self.is_closing else unsent_bytes(self._writer)

    @property
    def is_closing(self) -> bool:
        """True once :meth:`close` was called or the peer went away."""
        return self.closed or self._writer.is_closing()

    def close(self) -> None:
        """Close the connection (event loop only); the channel's task then ends."""
        self.closed = True
        if not self._writer.is_closing():
            self._writer.close()

    def post(self, fn: Callable[[], None] | None = None) -> None:
        """From any thread: run ``fn()`` on the event loop, then write what the client queued."""

        def run() -> None:
            if self.closed:
                return
            if fn is not None:
                fn()
            self.flush()

        self._gate.run(run)
