"""The WebDAV channel's multiplexed protocol, from the guest's side: browse the client's shared folder.

Counterpart of phodav ``spice/spice-webdavd.c`` (the guest daemon that multiplexes its local HTTP
clients over the ``org.spice-space.webdav.0`` port) and of spice-gtk ``src/channel-webdav.c`` (the
client side, which hands each multiplexed client to its phodav server). The host plays the guest
daemon here: it opens mux clients over the device end of a :class:`~spiceserver.channels.port.WebDavChannel`
and speaks HTTP/1.1 (WebDAV, RFC 4918) to the client's shared folder.

Framing, both ways: ``i64 client id (LE)``, ``u16 size (LE)``, then ``size`` bytes; a frame of size
0 closes that client; frames carry at most :data:`MAX_MUX_SIZE` (65535) bytes. spice-gtk starts a
new phodav connection for the first non-empty frame of an unknown id, demultiplexes only while the
port is open (PORT_EVENT OPENED), and sends a 0-size frame when phodav closes a connection.

Layers:

* :class:`MuxParser` and :func:`encode_frames` (sans-IO): frames in, frames out. Every byte sequence
  is valid framing, so the parser never fails; it buffers at most one partial frame.
* :class:`MuxConnection` (sans-IO): the guest daemon's clients: :meth:`~MuxConnection.open_client`,
  ``send``, ``close_client``, and :class:`MuxData` / :class:`MuxClosed` events for the clients it
  opened (frames for other ids are dropped and counted).
* :func:`build_request` and :class:`HttpResponseParser` (sans-IO): a minimal, careful HTTP/1.1
  client (h11 is not a dependency): a Content-Length body, a chunked body, or a body up to the end
  of the connection; interim 1xx responses skipped; header and body sizes bounded.
* :class:`WebDavMux` (asyncio): ``async with WebDavMux(device_end) as mux`` then
  ``status, headers, body = await mux.request("PROPFIND", "/", headers={"Depth": "1"})`` or
  ``await mux.get("/hello.txt")``; :meth:`WebDavMux.open` gives a raw :class:`MuxStream`
  (``write`` / ``read`` / ``close``) for other HTTP code. ``WebDavMux.over_stream(reader, writer)``
  runs it over an asyncio stream instead (a Unix-socket char device's peer end).

The device end is the in-process char device pair's device side
(``spiceserver.channels.chardev.char_device_pair``): ``write(data)`` (any thread),
``on_data(callback)`` (the callback may run on any thread: it is brought onto the mux's loop) and
``set_open(bool)`` (the mux opens the port on enter, closes it on exit).
"""

from __future__ import annotations

import asyncio
import re
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "MAX_MUX_SIZE", "MuxFrame", "MuxParser", "encode_frames", "encode_close", "MuxData", "MuxClosed", "MuxConnection",
    "HttpError", "HttpResponse", "HttpResponseParser", "build_request", "DeviceEnd", "MuxStream", "WebDavMux",
]  # fmt: skip

#: the largest payload of one frame (spice-gtk ``MAX_MUX_SIZE``)
MAX_MUX_SIZE = 0xFFFF
_HEAD = struct.Struct("<qH")

# --- framing -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MuxFrame:
    """One frame: ``client`` id and its ``data`` (empty: the client is closed)."""

    client: int
    data: bytes


def encode_frames(client: int, data: bytes) -> bytes:
    """``data`` for ``client`` as frames of at most :data:`MAX_MUX_SIZE` bytes (none for empty data).

    Raises:
        ValueError: ``client`` is not a signed 64-bit integer.
    """
    if not -(1 << 63) <= client < (1 << 63):
        raise ValueError(f"client id {client} is not an i64")
    out = bytearray()
    for start in range(0, len(data), MAX_MUX_SIZE):
        piece = data[start : start + MAX_MUX_SIZE]
        out += _HEAD.pack(client, len(piece))
        out += piece
    return bytes(out)


def encode_close(client: int) -> bytes:
    """The 0-size frame that closes ``client``."""
    return _HEAD.pack(client, 0)


class MuxParser:
    """Incremental frame parser: bytes in, :class:`MuxFrame` out (never fails; holds at most one
    partial frame, ``10 + 65535`` bytes)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[MuxFrame]:
        """The frames ``data`` completes, in order."""
        self._buf += data
        frames: list[MuxFrame] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= _HEAD.size:
            client, size = _HEAD.unpack_from(buf, pos)
            end = pos + _HEAD.size + size
            if end > len(buf):
                break
            frames.append(MuxFrame(client, bytes(buf[pos + _HEAD.size : end])))
            pos = end
        del buf[:pos]
        return frames


@dataclass(frozen=True)
class MuxData:
    """Bytes for one of our clients."""

    client: int
    data: bytes


@dataclass(frozen=True)
class MuxClosed:
    """The other side closed one of our clients."""

    client: int


class MuxConnection:
    """The guest daemon's side of the mux, sans-IO: the clients it opened and their frames."""

    def __init__(self, first_id: int = 1) -> None:
        self._parser = MuxParser()
        self._out = bytearray()
        self._next = first_id
        self._open: set[int] = set()
        #: frames received for clients we did not open or already closed
        self.dropped_frames = 0

    @property
    def clients(self) -> frozenset[int]:
        """The open clients."""
        return frozenset(self._open)

    def open_client(self) -> int:
        """A new client id (the other side sees the client at its first data)."""
        client = self._next
        self._next += 1
        self._open.add(client)
        return client

    def send(self, client: int, data: bytes) -> None:
        """Queue ``data`` for ``client``.

        Raises:
            ValueError: the client is not open.
        """
        if client not in self._open:
            raise ValueError(f"mux client {client} is not open")
        self._out += encode_frames(client, data)

    def close_client(self, client: int) -> None:
        """Close ``client`` (a 0-size frame), if it is open."""
        if client in self._open:
            self._open.discard(client)
            self._out += encode_close(client)

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[MuxData | MuxClosed]:
        """The events ``data`` completes: data for, or the close of, our open clients."""
        events: list[MuxData | MuxClosed] = []
        for fr in self._parser.feed(data):
            if fr.client not in self._open:
                self.dropped_frames += 1
            elif fr.data:
                events.append(MuxData(fr.client, fr.data))
            else:
                self._open.discard(fr.client)
                events.append(MuxClosed(fr.client))
        return events

    def data_to_send(self) -> bytes:
        """The frames queued since the last call."""
        out = bytes(self._out)
        self._out.clear()
        return out


# --- a minimal HTTP/1.1 client ---------------------------------------------------------------------------

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_STATUS = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: ([^\r\n]*))?")


class HttpError(Exception):
    """A malformed or oversized HTTP response (or a request that cannot be written)."""


def build_request(method: str, target: str, headers: Mapping[str, str] | None = None, body: bytes = b"", host: str = "localhost") -> bytes:
    """An HTTP/1.1 request: ``Host`` and ``Content-Length`` are added unless given.

    Raises:
        HttpError: a method or header name that is not a token, or CR / LF / NUL / a space in the
            target, or CR / LF / NUL in a header value.
    """
    if not _TOKEN.fullmatch(method.encode("ascii", "replace")):
        raise HttpError(f"bad method {method!r}")
    tgt = target.encode("utf-8")
    if not tgt or any(c in tgt for c in b" \r\n\0\t"):
        raise HttpError(f"bad request target {target!r}")
    fields = dict(headers or {})
    lower = {k.lower() for k in fields}
    if "host" not in lower:
        fields = {"Host": host, **fields}
    if (body or method.upper() in ("POST", "PUT", "PROPFIND", "PROPPATCH", "LOCK")) and "content-length" not in lower:
        fields["Content-Length"] = str(len(body))
    lines = [method.encode("ascii") + b" " + tgt + b" HTTP/1.1"]
    for name, value in fields.items():
        n, v = name.encode("ascii", "replace"), str(value).encode("utf-8")
        if not _TOKEN.fullmatch(n) or any(c in v for c in b"\r\n\0"):
            raise HttpError(f"bad header {name!r}: {value!r}")
        lines.append(n + b": " + v)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass(frozen=True)
class HttpResponse:
    """A response: ``status``, ``reason``, ``headers`` (lower-case names; repeated fields joined
    with ``", "``), ``body``. Unpacks as ``status, headers, body``."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    def __iter__(self) -> Iterator[Any]:
        return iter((self.status, self.headers, self.body))


@dataclass
class _Limits:
    head: int
    headers: int
    body: int
    line: int = 4096


class HttpResponseParser:
    """Incremental HTTP/1.1 response parser, sans-IO.

    Feed bytes with :meth:`feed` and the end of the connection with :meth:`feed_eof`; once
    :attr:`done`, :attr:`response` holds the result and :attr:`trailing` what followed it.

    Args:
        method: the request's method (a HEAD response has no body).
        max_head: the largest status line plus headers, in bytes.
        max_headers: the most header fields.
        max_body: the largest body (decoded), in bytes.

    Raises (from :meth:`feed` / :meth:`feed_eof`):
        HttpError: malformed framing, a limit exceeded, or the connection ended early.
    """

    def __init__(self, method: str = "GET", *, max_head: int = 64 << 10, max_headers: int = 100, max_body: int = 64 << 20) -> None:
        self._method = method.upper()
        self._limits = _Limits(max_head, max_headers, max_body)
        self._buf = bytearray()
        self._state = "head"  # head, length, chunk_size, chunk_data, chunk_crlf, trailers, eof_body, done
        self._status = 0
        self._reason = ""
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._left = 0
        self._trailer_bytes = 0
        self.response: HttpResponse | None = None

    @property
    def done(self) -> bool:
        """The whole response was parsed."""
        return self._state == "done"

    @property
    def trailing(self) -> bytes:
        """Bytes received after the response (a pipelined peer's next one; unused here)."""
        return bytes(self._buf) if self.done else b""

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """More bytes of the response."""
        if self.done:
            self._buf += data
            return
        self._buf += data
        self._run()

    def feed_eof(self) -> None:
        """The connection ended: a body read up to the end is complete; anything else unfinished is an error."""
        if self.done:
            return
        if self._state == "eof_body":
            self._finish()
            return
        raise HttpError(f"connection closed in the middle of the response ({self._state})")

    # --- the state machine ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self.done:
            before = (self._state, len(self._buf))
            getattr(self, "_st_" + self._state)()
            if (self._state, len(self._buf)) == before:
                return  # needs more bytes

    def _line(self, limit: int) -> bytes | None:
        end = self._buf.find(b"\n")
        if end < 0:
            if len(self._buf) > limit:
                raise HttpError("line too long")
            return None
        if end > limit:
            raise HttpError("line too long")
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        return line[:-1] if line.endswith(b"\r") else line

    def _st_head(self) -> None:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > self._limits.head:
                raise HttpError(f"response head over {self._limits.head} bytes")
            return
        if end + 4 > self._limits.head:
            raise HttpError(f"response head over {self._limits.head} bytes")
        head = bytes(self._buf[:end])
        del self._buf[: end + 4]
        lines = head.split(b"\r\n")
        m = _STATUS.fullmatch(lines[0])
        if m is None:
            raise HttpError(f"bad status line {lines[0][:80]!r}")
        status = int(m.group(1))
        if len(lines) - 1 > self._limits.headers:
            raise HttpError(f"more than {self._limits.headers} header fields")
        headers: dict[str, str] = {}
        for raw in lines[1:]:
            name, sep, value = raw.partition(b":")
            if not sep or not _TOKEN.fullmatch(name):
                raise HttpError(f"bad header line {raw[:80]!r}")  # also an obsolete folded line
            key = name.decode("ascii").lower()
            val = value.strip(b" \t").decode("latin-1")
            if any(c in val for c in "\0\r\n"):
                raise HttpError("bad character in a header value")
            headers[key] = f"{headers[key]}, {val}" if key in headers else val
        if 100 <= status < 200:
            if status == 101:
                raise HttpError("unexpected protocol switch")
            return  # an interim response (100 Continue, 102 Processing): the real one follows
        self._status, self._reason, self._headers = status, (m.group(2) or b"").decode("latin-1"), headers
        self._start_body()

    def _start_body(self) -> None:
        h = self._headers
        if self._method == "HEAD" or self._status in (204, 304):
            self._finish()
            return
        te = h.get("transfer-encoding")
        if te is not None:
            codings = [c.strip().lower() for c in te.split(",")]
            if codings != ["chunked"]:
                raise HttpError(f"unsupported transfer-encoding {te!r}")
            self._state = "chunk_size"
            return
        cl = h.get("content-length")
        if cl is not None:
            values = {v.strip() for v in cl.split(",")}
            if len(values) != 1 or not all(v.isdigit() and v.isascii() for v in values) or len(next(iter(values))) > 18:
                raise HttpError(f"bad content-length {cl!r}")
            n = int(values.pop())
            if n > self._limits.body:
                raise HttpError(f"body of {n} bytes over the limit of {self._limits.body}")
            self._left = n
            self._state = "length"
            if n == 0:
                self._finish()
            return
        self._state = "eof_body"

    def _take_body(self, n: int) -> None:
        if len(self._body) + n > self._limits.body:
            raise HttpError(f"body over the limit of {self._limits.body} bytes")
        self._body += self._buf[:n]
        del self._buf[:n]

    def _st_length(self) -> None:
        n = min(self._left, len(self._buf))
        if n:
            self._take_body(n)
            self._left -= n
        if not self._left:
            self._finish()

    def _st_eof_body(self) -> None:
        if self._buf:
            self._take_body(len(self._buf))

    def _st_chunk_size(self) -> None:
        line = self._line(self._limits.line)
        if line is None:
            return
        size = line.split(b";", 1)[0].strip(b" \t")
        if not size or len(size) > 15 or not all(c in b"0123456789abcdefABCDEF" for c in size):
            raise HttpError(f"bad chunk size {line[:40]!r}")
        n = int(size, 16)
        if len(self._body) + n > self._limits.body:
            raise HttpError(f"body over the limit of {self._limits.body} bytes")
        if n == 0:
            self._state = "trailers"
        else:
            self._left = n
            self._state = "chunk_data"

    def _st_chunk_data(self) -> None:
        n = min(self._left, len(self._buf))
        if n:
            self._take_body(n)
            self._left -= n
        if not self._left:
            self._state = "chunk_crlf"

    def _st_chunk_crlf(self) -> None:
        if len(self._buf) < 2:
            if bytes(self._buf[:1]) not in (b"", b"\r"):
                raise HttpError("chunk not followed by CRLF")
            return
        if self._buf[:2] != b"\r\n":
            raise HttpError("chunk not followed by CRLF")
        del self._buf[:2]
        self._state = "chunk_size"

    def _st_trailers(self) -> None:
        before = len(self._buf)
        line = self._line(self._limits.line)
        if line is None:
            return
        self._trailer_bytes += before - len(self._buf)
        if self._trailer_bytes > self._limits.head:
            raise HttpError("trailers too long")
        if not line:
            self._finish()

    def _finish(self) -> None:
        self._state = "done"
        self.response = HttpResponse(self._status, self._reason, self._headers, bytes(self._body))


# --- asyncio ----------------------------------------------------------------------------------------


class DeviceEnd(Protocol):
    """The device side of a char device (``char_device_pair()``'s second end)."""

    def write(self, data: bytes) -> Any:
        """Bytes toward the server (any thread)."""
        ...

    def on_data(self, callback: Callable[[bytes], None]) -> Any:
        """Call ``callback(data)`` with the server's bytes."""
        ...

    def set_open(self, opened: bool) -> Any:
        """Open or close the guest's end of the port."""
        ...


@dataclass(eq=False)
class MuxStream:
    """One mux client: a byte stream to the client's phodav server."""

    mux: WebDavMux
    client: int
    _chunks: deque[bytes] = field(default_factory=deque)
    _closed: bool = False
    _event: asyncio.Event = field(default_factory=asyncio.Event)

    def write(self, data: bytes) -> None:
        """Send ``data`` (split into frames).

        Raises:
            ConnectionResetError: the other side closed this client.
        """
        if self._closed:
            raise ConnectionResetError(f"mux client {self.client} is closed")
        self.mux.send(self.client, data)

    async def read(self) -> bytes:
        """The next bytes; ``b""`` once the other side closed this client."""
        while not self._chunks:
            if self._closed:
                return b""
            self._event.clear()
            await self._event.wait()
        return self._chunks.popleft()

    def close(self) -> None:
        """Close this client (a 0-size frame unless the other side closed it already)."""
        self._closed = True
        self._event.set()
        self.mux.close_client(self.client)

    def _data(self, data: bytes) -> None:
        self._chunks.append(data)
        self._event.set()

    def _gone(self) -> None:
        self._closed = True
        self._event.set()


class WebDavMux:
    """The guest daemon's mux over a WebDAV channel's device end (see the module docstring).

    Args:
        end: the device end (``write``, ``on_data``, ``set_open``); None with :meth:`over_stream`.
        host: the ``Host`` header of the requests.
        max_body: the largest response body accepted.
    """

    def __init__(self, end: DeviceEnd | None, *, host: str = "localhost", max_body: int = 64 << 20) -> None:
        self._end = end
        self._host = host
        self._max_body = max_body
        self._conn = MuxConnection()
        self._streams: dict[int, MuxStream] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._write: Callable[[bytes], Any] = end.write if end is not None else (lambda data: None)
        self._reader_task: asyncio.Task[None] | None = None
        self._stream_writer: asyncio.StreamWriter | None = None
        self._stream_reader: asyncio.StreamReader | None = None

    @classmethod
    def over_stream(cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, **kw: Any) -> WebDavMux:
        """A mux over an asyncio stream (e.g. connected to a Unix-socket char device's path)."""
        mux = cls(None, **kw)
        mux._stream_reader, mux._stream_writer = reader, writer
        mux._write = writer.write
        return mux

    async def __aenter__(self) -> WebDavMux:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        if self._end is not None:
            self._end.on_data(self._on_bytes)
            self._end.set_open(True)
        elif self._stream_reader is not None:
            self._reader_task = self._loop.create_task(self._read_stream(self._stream_reader))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every client; close the port (a device end) or the stream."""
        for stream in list(self._streams.values()):
            stream.close()
        if self._end is not None:
            self._end.set_open(False)
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._stream_writer is not None:
            self._stream_writer.close()

    # --- bytes in and out --------------------------------------------------------------------

    def _on_bytes(self, data: bytes) -> None:
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._thread:
            self.receive(data)
        else:
            loop.call_soon_threadsafe(self.receive, bytes(data))

    async def _read_stream(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(1 << 16):
            self.receive(data)
        for stream in list(self._streams.values()):
            stream._gone()

    def receive(self, data: bytes) -> None:
        """Bytes from the channel (event loop): hand them to their clients."""
        for ev in self._conn.receive_data(data):
            stream = self._streams.get(ev.client)
            if stream is None:
                continue
            if isinstance(ev, MuxData):
                stream._data(ev.data)
            else:
                del self._streams[ev.client]
                stream._gone()

    def _flush(self) -> None:
        out = self._conn.data_to_send()
        if out:
            self._write(out)

    def send(self, client: int, data: bytes) -> None:
        """Frames of ``data`` for ``client``."""
        self._conn.send(client, data)
        self._flush()

    def close_client(self, client: int) -> None:
        """Close ``client``."""
        self._conn.close_client(client)
        self._streams.pop(client, None)
        self._flush()

    @property
    def dropped_frames(self) -> int:
        """Frames received for clients not open."""
        return self._conn.dropped_frames

    @property
    def clients(self) -> frozenset[int]:
        """The open mux clients."""
        return self._conn.clients

    # --- clients -----------------------------------------------------------------------------

    def open(self) -> MuxStream:
        """A new mux client (the other side connects it to its HTTP server at the first write)."""
        client = self._conn.open_client()
        stream = MuxStream(self, client)
        self._streams[client] = stream
        return stream

    async def request(
        self, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes = b"", *, timeout: float = 30.0
    ) -> HttpResponse:
        """One HTTP request on its own mux client; the response (``status, headers, body``).

        Raises:
            HttpError: a malformed or oversized response, or the client closed early.
            TimeoutError: no complete response within ``timeout`` seconds.
        """
        data = build_request(method, path, headers, body, self._host)
        parser = HttpResponseParser(method, max_body=self._max_body)
        stream = self.open()
        try:
            stream.write(data)

            async def receive() -> None:
                while not parser.done:
                    chunk = await stream.read()
                    if not chunk:
                        parser.feed_eof()
                        return
                    parser.feed(chunk)

            await asyncio.wait_for(receive(), timeout)
        finally:
            stream.close()
        assert parser.response is not None
        return parser.response

    async def get(self, path: str, headers: Mapping[str, str] | None = None, *, timeout: float = 30.0) -> HttpResponse:
        """``request("GET", path)``."""
        return await self.request("GET", path, headers, timeout=timeout)

    async def propfind(self, path: str, depth: str = "1", *, timeout: float = 30.0) -> HttpResponse:
        """``request("PROPFIND", path, {"Depth": depth})`` (all properties)."""
        return await self.request("PROPFIND", path, {"Depth": depth}, timeout=timeout)
