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

Web pages that try to drive the VM, two defences on every request:

* DNS rebinding: a page at ``http://attacker.example:PORT`` whose name the attacker then points at
  127.0.0.1 is, for the browser, the same origin as this server, so Origin checks alone cannot
  see it; its requests still say ``Host: attacker.example:PORT``. Every request (WebSocket upgrade,
  static file, metrics page) must therefore name the server in ``Host`` by one of its own names:
  the address the connection arrived at, any loopback address when it arrived on loopback (or on
  a Unix socket), ``localhost``, ``ServerConfig.addr`` and ``ServerConfig.server_names``
  (:attr:`WebOptions.server_names`); others get 421.
* Cross-site WebSocket hijacking: any web page a user visits may open a WebSocket to a server on
  their machine or network, and the browser lets it. A WebSocket upgrade is therefore accepted
  only without an ``Origin`` header (a non-browser client), from the same origin as the request's
  ``Host`` (our own pages), or from an origin listed in ``ServerConfig.websocket_origins``; others
  get 403.

Memory before the link is bounded as on a plain SPICE connection: the request head may take
:data:`MAX_HTTP_HEAD` bytes (431 beyond), and until :meth:`WebConnection.linked` a WebSocket message
may carry at most :data:`PRE_LINK_MESSAGE` bytes (a link message and its ticket), so a peer that
has not authenticated cannot make the server hold a ``max_message_size`` frame. Static files are
cached by resolved file, within :data:`STATIC_CACHE_BYTES`.
"""

from __future__ import annotations

import ipaddress
import mimetypes
import posixpath
import threading
import urllib.parse
from collections import OrderedDict
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
from .proto.enums import TICKET_CIPHER_BYTES
from .proto.link import HEADER, MAX_LINK_SIZE

__all__ = [
    "HTTP_PREFIX", "WebConnection", "WebOptions", "StaticFiles", "Upgraded", "Payload", "HttpGet", "Closed",
    "MAX_HTTP_HEAD", "PRE_LINK_MESSAGE", "STATIC_CACHE_BYTES",
]  # fmt: skip

#: The first bytes of an HTTP request on a SPICE port (a SPICE link starts with ``REDQ``).
HTTP_PREFIX = b"GET "
#: The WebSocket subprotocol spice-html5 asks for (websockify's name for raw binary frames).
SUBPROTOCOL = Subprotocol("binary")
_MAX_FILE = 8 << 20
#: Bytes an HTTP request head may take before it is complete (Node.js's default; a browser's
#: request, cookies included, is far smaller); beyond it: 431 and the connection closes.
MAX_HTTP_HEAD = 16 << 10
#: The largest WebSocket message accepted before the link completes: a whole link message (header
#: and at most ``MAX_LINK_SIZE`` bytes), the auth mechanism and the encrypted ticket -- what a plain
#: SPICE connection may make the server buffer before the link.
PRE_LINK_MESSAGE = HEADER.size + MAX_LINK_SIZE + 4 + TICKET_CIPHER_BYTES
#: Bytes of file content :class:`StaticFiles` keeps in memory (least recently used go first).
STATIC_CACHE_BYTES = 16 << 20


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
    inside it; anything else is 404. ``/`` serves ``spice_auto.html`` when there is one. The cache
    is keyed by the resolved file (a query string or another spelling of the path is the same
    entry) and holds at most ``cache_bytes`` of content, least recently used evicted first.
    Thread-safe (requests are answered on worker threads).
    """

    def __init__(self, root: str | Path, cache_bytes: int = STATIC_CACHE_BYTES) -> None:
        self.root = Path(root).resolve()
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[Path, tuple[bytes, str]] = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()

    @property
    def cached(self) -> tuple[int, int]:
        """``(files, bytes)`` held in the cache now."""
        with self._lock:
            return len(self._cache), self._cached

    def get(self, url_path: str) -> tuple[bytes, str] | None:
        """``(content, content type)`` for a request path, or None."""
        target = self._resolve(url_path)
        if target is None:
            return None
        with self._lock:
            hit = self._cache.get(target)
            if hit is not None:
                self._cache.move_to_end(target)
                return hit
        found = self._load(target)
        if found is not None and len(found[0]) <= self.cache_bytes:
            with self._lock:
                if target not in self._cache:
                    self._cache[target] = found
                    self._cached += len(found[0])
                    while self._cached > self.cache_bytes:
                        self._cached -= len(self._cache.popitem(last=False)[1][0])
        return found

    def _resolve(self, url_path: str) -> Path | None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(url_path).path)
        if "\x00" in path:
            return None
        rel = posixpath.normpath("/" + path).lstrip("/")
        if rel in ("", "."):
            rel = "spice_auto.html"
        target = (self.root / rel).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        return target

    @staticmethod
    def _load(target: Path) -> tuple[bytes, str] | None:
        if target.stat().st_size > _MAX_FILE:
            return None
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix in (".js", ".mjs"):
            ctype = "text/javascript"  # ES modules need a JavaScript type, whatever the host's mime.types says
        if ctype.startswith("text/"):
            ctype += "; charset=utf-8"
        data = target.read_bytes()
        return (data, ctype) if len(data) <= _MAX_FILE else None


@dataclass(frozen=True)
class WebOptions:
    """What the HTTP side allows (from :class:`~spiceserver.config.ServerConfig`)."""

    files: StaticFiles | None = None
    origins: tuple[str, ...] = ()
    max_message_size: int = 1 << 20
    #: paths answered by the caller (an :class:`HttpGet` event), e.g. the metrics page
    dynamic_paths: frozenset[str] = frozenset()
    #: names (lower case; IP addresses in canonical form) a request's ``Host`` may give besides
    #: the address the connection arrived at and loopback addresses on loopback; ``"*"`` = any
    server_names: frozenset[str] = frozenset({"localhost"})

    @classmethod
    def from_config(cls, config: ServerConfig) -> WebOptions:
        """The options a server configuration sets (web root, origins, message size, metrics page, names)."""
        return cls(
            files=StaticFiles(config.web_root) if config.web_root else None,
            origins=config.websocket_origins,
            max_message_size=config.max_message_size,
            dynamic_paths=frozenset({config.metrics_path} if config.metrics_path else ()),
            server_names=frozenset(_canonical_name(n) for n in ("localhost", config.addr, *config.server_names)),
        )


@dataclass
class WebConnection:
    """One connection that started with ``GET ``: handshake, then WebSocket frames both ways.

    ``local_addr`` is the address the connection arrived at (the socket's own address; None on a
    Unix socket): a request may name it in ``Host``.
    """

    options: WebOptions
    local_addr: str | None = None
    close_transport: bool = False
    upgraded: bool = False
    _ws: ServerProtocol = field(init=False)
    _out: list[bytes] = field(default_factory=list)
    _head_bytes: int = 0
    _requested: bool = False

    def __post_init__(self) -> None:
        self._ws = ServerProtocol(
            subprotocols=[SUBPROTOCOL],
            select_subprotocol=_select_subprotocol,
            max_size=min(PRE_LINK_MESSAGE, self.options.max_message_size + 4096),
        )

    def linked(self) -> None:
        """The SPICE link over this WebSocket completed: messages up to ``max_message_size`` from now on."""
        limit = self.options.max_message_size + 4096
        # websockets >= 14 calls it max_message_size, older versions max_size
        setattr(self._ws, "max_message_size" if hasattr(self._ws, "max_message_size") else "max_size", limit)

    @property
    def buffered(self) -> int:
        """Received bytes the WebSocket parser holds (an incomplete request head or frame)."""
        return len(self._ws.reader.buffer)

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the peer; returns what they meant."""
        if not self._requested:
            self._head_bytes += len(data)
        self._ws.receive_data(data)
        events = self._process()
        if not self._requested and self._head_bytes > MAX_HTTP_HEAD and not self._ws.eof_sent:
            self._respond(431, "Request Header Fields Too Large", b"request head too large\n", "text/plain")
            events.append(Closed(f"HTTP request head larger than {MAX_HTTP_HEAD} bytes"))
        return events

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
        self._requested = True
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
        hosts = headers.get_all("Host")
        if len(hosts) != 1:
            self._respond(400, "Bad Request", b"exactly one Host header needed\n", "text/plain")
            return Closed(f"HTTP request with {len(hosts)} Host headers")
        host = hosts[0]
        if not _host_allowed(host, self.local_addr, self.options.server_names):
            self._respond(421, "Misdirected Request", b"not a name of this server\n", "text/plain")
            return Closed(f"HTTP request for Host {host[:200]!r} refused: not a name of this server (see server_names)")
        connection = ",".join(headers.get_all("Connection")).lower()
        if "upgrade" in connection or "Upgrade" in headers:
            origins = headers.get_all("Origin")
            if len(origins) > 1:
                self._respond(400, "Bad Request", b"repeated Origin header\n", "text/plain")
                return Closed("WebSocket request with repeated Origin headers")
            origin = origins[0] if origins else None
            if not _origin_allowed(origin, host, self.options.origins):
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


def _origin_allowed(origin: str | None, host: str, allowed: tuple[str, ...]) -> bool:
    if origin is None or "*" in allowed or origin in allowed:
        return True
    parts = urllib.parse.urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
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


def _host_allowed(host: str, local_addr: str | None, names: frozenset[str]) -> bool:
    """Is ``host`` (a ``Host`` header) one of the names this server is reached by?

    A DNS name must be listed (``localhost``, the listen address, ``server_names``): a name not
    listed may be an attacker's that resolves to us. An address must be the one the connection
    arrived at, listed, or any loopback address when the connection is local (loopback or Unix).
    """
    if "*" in names:
        return True
    name = _host_port(host, "")[0] if _valid_host(host) else None
    if not name:
        return False
    name = _canonical_name(name)
    if name in names:
        return True
    ip, local = _ip(name), _ip(local_addr) if local_addr else None
    if ip is None:
        return False
    return ip == local or (ip.is_loopback and (local_addr is None or (local is not None and local.is_loopback)))


def _valid_host(host: str) -> bool:
    """``name``, ``name:port``, ``[v6]`` or ``[v6]:port`` (a bare IPv6 address is not a Host)."""
    if host.startswith("["):
        _, sep, rest = host.partition("]")
        return bool(sep) and (not rest or (rest[0] == ":" and rest[1:].isdigit()))
    name, sep, port = host.partition(":")
    return bool(name) and (not sep or port.isdigit())


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``text`` spells (zone dropped, IPv4-mapped IPv6 as IPv4), or None for a name."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    return (ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else ip


def _canonical_name(name: str) -> str:
    """Lower case, brackets dropped; an IP address in its canonical spelling."""
    name = name.strip().lower().removeprefix("[").removesuffix("]")
    ip = _ip(name)
    return name if ip is None else str(ip)
