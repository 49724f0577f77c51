"""The HTTP side of the SPICE ports: WebSocket tunnels for browser clients, and static files.

libspice-server speaks only SPICE on its ports, so a browser client (spice-html5) needs a separate
WebSocket proxy (websockify) in front of it. spiceserver looks at the first bytes of each
connection instead: ``REDQ`` is a SPICE link, ``GET `` is an HTTP request. An HTTP request is
either a WebSocket upgrade -- from then on the connection carries SPICE in binary WebSocket
messages, exactly the bytes a plain TCP connection would carry -- or, when a web root is
configured, a plain GET for a file of the web client (e.g. Debian's ``/usr/share/spice-html5``),
so that ``http://host:port/spice_auto.html`` is all a user types: that page connects back to the
host and port it came from.

Sans-IO, like :mod:`spiceserver.proto`: feed received bytes to :meth:`WebConnection.receive_data`,
send what :meth:`WebConnection.data_to_send` returns, close the transport when
:attr:`WebConnection.close_transport` says so. The HTTP/1.1 handshake and the WebSocket framing
(RFC 6455: masking, fragmentation, control frames, close handshake) are websockets' sans-IO core
(:class:`websockets.server.ServerProtocol`) -- a well-kept implementation, not ours to rewrite.

Cross-site WebSocket hijacking: any web page a user visits may open a WebSocket to a server on
their machine or network, and the browser lets it. A WebSocket upgrade is therefore accepted only
without an ``Origin`` header (a non-browser client), from the same origin as the request's ``Host``
(our own pages), or from an origin listed in ``ServerConfig.websocket_origins``; others get 403.
"""

from __future__ import annotations

import mimetypes
import posixpath
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from websockets.datastructures import Headers
from websockets.exceptions import InvalidState, NegotiationError
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from .config import ServerConfig

__all__ = ["HTTP_PREFIX", "WebConnection", "WebOptions", "StaticFiles", "Upgraded", "Payload", "HttpGet", "Closed"]

#: The first bytes of an HTTP request on a SPICE port (a SPICE link starts with ``REDQ``).
HTTP_PREFIX = b"GET "
#: The WebSocket subprotocol spice-html5 asks for (websockify's name for raw binary frames).
SUBPROTOCOL = Subprotocol("binary")
_MAX_FILE = 8 << 20


@dataclass(frozen=True)
class Upgraded:
    """The WebSocket handshake completed; SPICE bytes follow as :class:`Payload` events."""

    path: str
    origin: str | None


@dataclass(frozen=True)
class Payload:
    """Bytes of the SPICE stream, from one binary WebSocket message."""

    data: bytes


@dataclass(frozen=True)
class HttpGet:
    """A GET for one of :attr:`WebOptions.dynamic_paths`: answer with :meth:`WebConnection.respond`."""

    path: str


@dataclass(frozen=True)
class Closed:
    """The exchange is over (a file was served or refused, or the WebSocket closed)."""

    reason: str


Event = Upgraded | Payload | HttpGet | Closed


class StaticFiles:
    """Files served over plain HTTP GET from one directory (read once, then kept in memory).

    Only regular files below ``root`` are served: the path is decoded, normalised and must stay
    inside it; anything else is 404. ``/`` serves ``spice_auto.html`` when there is one.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self._cache: dict[str, tuple[bytes, str] | None] = {}

    def get(self, url_path: str) -> tuple[bytes, str] | None:
        """``(content, content type)`` for a request path, or None."""
        if url_path in self._cache:
            return self._cache[url_path]
        found = self._load(url_path)
        if len(self._cache) < 1024:
            self._cache[url_path] = found
        return found

    def _load(self, url_path: str) -> tuple[bytes, str] | None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(url_path).path)
        if "\x00" in path:
            return None
        rel = posixpath.normpath("/" + path).lstrip("/")
        if rel in ("", "."):
            rel = "spice_auto.html"
        target = (self.root / rel).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        if target.stat().st_size > _MAX_FILE:
            return None
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix in (".js", ".mjs"):
            ctype = "text/javascript"  # ES modules need a JavaScript type, whatever the host's mime.types says
        if ctype.startswith("text/"):
            ctype += "; charset=utf-8"
        return target.read_bytes(), ctype


@dataclass(frozen=True)
class WebOptions:
    """What the HTTP side allows (from :class:`~spiceserver.config.ServerConfig`)."""

    files: StaticFiles | None = None
    origins: tuple[str, ...] = ()
    max_message_size: int = 1 << 20
    #: paths answered by the caller (an :class:`HttpGet` event), e.g. the metrics page
    dynamic_paths: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, config: ServerConfig) -> WebOptions:
        """The options a server configuration sets (web root, origins, message size, metrics page)."""
        return cls(
            files=StaticFiles(config.web_root) if config.web_root else None,
            origins=config.websocket_origins,
            max_message_size=config.max_message_size,
            dynamic_paths=frozenset({config.metrics_path} if config.metrics_path else ()),
        )


@dataclass
class WebConnection:
    """One connection that started with ``GET ``: handshake, then WebSocket frames both ways."""

    options: WebOptions
    close_transport: bool = False
    upgraded: bool = False
    _ws: ServerProtocol = field(init=False)
    _out: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ws = ServerProtocol(
            subprotocols=[SUBPROTOCOL],
            select_subprotocol=_select_subprotocol,
            max_size=self.options.max_message_size + 4096,
        )

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the peer; returns what they meant."""
        self._ws.receive_data(data)
        return self._process()

    def receive_eof(self) -> list[Event]:
        """The peer closed its side."""
        self._ws.receive_eof()
        events = self._process()
        if not any(isinstance(e, Closed) for e in events):
            events.append(Closed("peer closed the connection"))
        self.close_transport = True
        return events

    def send(self, data: bytes) -> None:
        """Queue SPICE bytes as one binary WebSocket message."""
        if not self.upgraded or self.close_transport:
            return
        try:
            self._ws.send_binary(data)
        except InvalidState:
            self.close_transport = True

    def close(self, reason: str = "") -> None:
        """Start the WebSocket close handshake (1000, normal closure)."""
        if self.upgraded and not self.close_transport:
            try:
                self._ws.send_close(1000, reason[:120])
            except InvalidState:
                pass

    def data_to_send(self) -> bytes:
        """Bytes to write now; afterwards check :attr:`close_transport`."""
        for chunk in self._ws.data_to_send():
            if chunk:
                self._out.append(chunk)
            else:  # websockets' end-of-stream marker
                self.close_transport = True
        data = b"".join(self._out)
        self._out.clear()
        return data

    # --- internals -----------------------------------------------------------------------

    def _process(self) -> list[Event]:
        events: list[Event] = []
        for ev in self._ws.events_received():
            if isinstance(ev, Request):
                events.append(self._on_request(ev))
            elif isinstance(ev, Frame):
                if ev.opcode is Opcode.BINARY or ev.opcode is Opcode.CONT:
                    # SPICE is a byte stream: each fragment's bytes go on at once (a text
                    # message never gets here -- its first frame fails the connection)
                    if ev.data:
                        events.append(Payload(bytes(ev.data)))
                elif ev.opcode is Opcode.TEXT:
                    self._ws.fail(1003, "SPICE travels in binary messages")
                    events.append(Closed("text WebSocket message"))
                elif ev.opcode is Opcode.CLOSE:
                    events.append(Closed("WebSocket closed by the peer"))
                # PING: websockets queued the PONG; a PONG needs nothing from us
        if not any(isinstance(e, Closed) for e in events):
            if self._ws.handshake_exc is not None and not self.upgraded:
                events.append(Closed(f"bad HTTP request: {self._ws.handshake_exc}"))
            elif self.upgraded and self._ws.parser_exc is not None:
                events.append(Closed(f"bad WebSocket data: {self._ws.parser_exc}"))
        return events

    def _on_request(self, request: Request) -> Event:
        if self._ws.eof_sent:  # websockets already refused what followed the request
            return Closed(f"bad HTTP request: {self._ws.handshake_exc or 'data after the request'}")
        try:
            return self._answer(request)
        except Exception as exc:  # whatever the request held: a 400, never an exception out of here
            if self._ws.state is State.CONNECTING and not self._ws.eof_sent:
                self._respond(400, "Bad Request", b"bad request\n", "text/plain")
            return Closed(f"bad HTTP request: {exc}")

    def _answer(self, request: Request) -> Event:
        headers = request.headers
        connection = ",".join(headers.get_all("Connection")).lower()
        if "upgrade" in connection or "Upgrade" in headers:
            origins, hosts = headers.get_all("Origin"), headers.get_all("Host")
            if len(origins) > 1 or len(hosts) > 1:
                self._respond(400, "Bad Request", b"repeated Origin or Host header\n", "text/plain")
                return Closed("WebSocket request with repeated Origin or Host headers")
            origin = origins[0] if origins else None
            if not _origin_allowed(origin, hosts[0] if hosts else None, self.options.origins):
                self._respond(403, "Forbidden", b"WebSocket origin not allowed\n", "text/plain")
                return Closed(f"WebSocket from origin {origin!r} refused")
            response = self._ws.accept(request)
            self._ws.send_response(response)
            if response.status_code != 101:
                return Closed(f"WebSocket handshake refused ({response.status_code})")
            self.upgraded = True
            return Upgraded(request.path, origin)
        if urllib.parse.urlsplit(request.path).path in self.options.dynamic_paths:
            return HttpGet(request.path)
        files = self.options.files
        found = files.get(request.path) if files is not None else None
        if found is None:
            self._respond(404, "Not Found", b"not found\n", "text/plain")
            return Closed(f"HTTP GET {request.path[:200]!r}: 404")
        body, ctype = found
        self._respond(200, "OK", body, ctype)
        return Closed(f"HTTP GET {request.path[:200]!r}: 200")

    def respond(self, status: int, reason: str, body: bytes, ctype: str) -> Closed:
        """Answer an :class:`HttpGet` (the connection closes after it)."""
        self._respond(status, reason, body, ctype)
        return Closed(f"HTTP GET: {status}")

    def _respond(self, status: int, reason: str, body: bytes, ctype: str) -> None:
        headers = Headers(
            [
                ("Content-Type", ctype),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-cache"),
                ("X-Content-Type-Options", "nosniff"),
                ("Connection", "close"),
            ]
        )
        self._ws.send_response(Response(status, reason, headers, body))


def _select_subprotocol(protocol: ServerProtocol, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """``binary`` when offered, none when none is offered; anything else is refused (400)."""
    if not offered:
        return None
    if SUBPROTOCOL in offered:
        return SUBPROTOCOL
    raise NegotiationError(f"unsupported WebSocket subprotocols {list(offered)!r} (only 'binary')")


def _origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    if origin is None or "*" in allowed or origin in allowed:
        return True
    parts = urllib.parse.urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or host is None:
        return False
    default = "443" if parts.scheme == "https" else "80"
    return _host_port(parts.netloc, default) == _host_port(host, default)


def _host_port(netloc: str, default_port: str) -> tuple[str, str]:
    netloc = netloc.lower()
    if netloc.startswith("["):  # [v6]:port
        host, _, rest = netloc[1:].partition("]")
        return host, rest.lstrip(":") or default_port
    host, _, port = netloc.partition(":")
    return host, port or default_port
