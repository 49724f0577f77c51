"""Server configuration: one frozen object, option names after QEMU's ``-spice`` options.

QEMU spells options with dashes (``tls-port``, ``x509-dir``, ``disable-ticketing``); here they are
the same words with underscores. There are no environment variables: everything is configured here.
Counterpart of the ``spice_server_set_*`` calls in spice ``server/spice-server.h`` / ``reds.cpp``.
"""

from __future__ import annotations

import os
import re
import uuid as _uuid
from dataclasses import dataclass
from typing import Literal, get_args

from .errors import ConfigError
from .proto.enums import CHANNEL_NAMES
from .proto.sasl import SASL_MECHANISMS

__all__ = [
    "ServerConfig", "ChannelSecurity", "ImageCompressionName", "WanCompressionName", "IMAGE_COMPRESSIONS",
    "WAN_COMPRESSIONS", "StreamingVideoName", "STREAMING_VIDEO_MODES", "VIDEO_CODEC_NAMES", "parse_video_codecs",
    "DEFAULT_WEB_ROOT", "installed_web_root",
]  # fmt: skip

#: Debian's spice-html5 (package ``spice-html5``): the commands serve it on their ports when installed
DEFAULT_WEB_ROOT = "/usr/share/spice-html5"


def installed_web_root() -> str | None:
    """:data:`DEFAULT_WEB_ROOT` if that directory exists, else None (the commands' ``--web-root`` default)."""
    return DEFAULT_WEB_ROOT if os.path.isdir(DEFAULT_WEB_ROOT) else None


_CHANNEL_NAMES = frozenset(CHANNEL_NAMES.values())
#: a DNS name, an IPv4 address, or an IPv6 address (brackets removed): no scheme, port or path
_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")

#: QEMU ``image-compression`` values (libspice SpiceImageCompression)
ImageCompressionName = Literal["off", "auto_glz", "auto_lz", "quic", "glz", "lz", "lz4"]
#: QEMU ``jpeg-wan-compression`` / ``zlib-glz-wan-compression`` values
WanCompressionName = Literal["auto", "never", "always"]
IMAGE_COMPRESSIONS: tuple[ImageCompressionName, ...] = get_args(ImageCompressionName)
WAN_COMPRESSIONS: tuple[WanCompressionName, ...] = get_args(WanCompressionName)
#: QEMU ``streaming-video`` values (libspice SPICE_STREAM_VIDEO_OFF / ALL / FILTER)
StreamingVideoName = Literal["off", "all", "filter"]
STREAMING_VIDEO_MODES: tuple[StreamingVideoName, ...] = get_args(StreamingVideoName)
#: the video codecs a stream may use, as QEMU's ``video-codec`` option names them, in libspice's
#: default order (``reds.cpp`` ``default_video_codecs``)
VIDEO_CODEC_NAMES = ("mjpeg", "h264", "vp8", "vp9")


class ChannelSecurity:
    """What ``reds_security_check`` allows for a channel: plain TCP, TLS, or either."""

    NONE = 1  # plaintext allowed (SPICE_CHANNEL_SECURITY_NONE)
    SSL = 2  # TLS allowed (SPICE_CHANNEL_SECURITY_SSL)
    ANY = NONE | SSL


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Everything a :class:`~spiceserver.SpiceServer` needs to know, fixed for its lifetime.

    Attributes:
        addr: address to listen on (QEMU ``addr``); default loopback only.
        port: plain TCP port (QEMU ``port``); None for no plain listener, 0 for any free port.
        tls_port: TLS port (QEMU ``tls-port``); needs ``x509_dir`` or the three x509 files.
        unix_path: listen on this Unix socket path instead of / besides TCP (QEMU ``unix=on,addr=``).
        x509_dir: directory with ca-cert.pem, server-cert.pem, server-key.pem (QEMU ``x509-dir``).
        x509_key_file, x509_cert_file, x509_cacert_file: explicit paths, override ``x509_dir``.
        x509_key_password: password of an encrypted key file.
        tls_ciphers: OpenSSL cipher list (QEMU ``tls-ciphers``).
        tls_channels: channel names that must use TLS, or ``("default",)`` for all (QEMU
            ``tls-channel``); a plaintext link to one gets NEED_SECURED.
        plaintext_channels: channel names that must not use TLS (QEMU ``plaintext-channel``);
            a TLS link to one gets NEED_UNSECURED.
        password: the ticket password (QEMU ``password``), the owner's (:mod:`spiceserver.roles`); None means none set yet.
        password_lifetime: seconds the initial password stays valid, 0 = forever.
        disable_ticketing: let anyone in (QEMU ``disable-ticketing``). Without it and without a
            password nobody can connect until :meth:`SpiceServer.set_ticket` is called.
        ticket_max_failures: wrong tickets (bad password, or a ticket that does not decrypt) one
            peer address may send within ``ticket_lockout`` seconds; then every link from that
            address is refused (PERMISSION_DENIED, even with the right password) for
            ``ticket_lockout`` seconds. Counted per IPv4 address / IPv6 /64, Unix-socket peers as
            one address; 0 = no limit. Not in libspice.
        ticket_lockout: the window and cool-down of ``ticket_max_failures``, in seconds.
        viewer_password: a second password: a client using it is a ``viewer`` (display, cursor and
            playback only; :mod:`spiceserver.roles`); ``password`` is the owner's.
        max_clients: client sessions connected at once. 1 (libspice): a new client replaces the
            one connected. Above 1: a new owner replaces the oldest viewer (else the oldest
            owner) when full, a new viewer is then refused (:mod:`spiceserver.channels.session`).
        sasl: SASL logins on the TLS port (QEMU ``sasl``; :mod:`spiceserver.auth`): every link
            there (each channel) offers AUTH_SASL only, and the RSA ticket is refused, as in
            libspice. Needs ``tls_port``; the plain port and the Unix socket never offer SASL and
            keep the ticket. Credentials: :meth:`SpiceServer.set_sasl_credentials`. A wrong
            password counts in ``ticket_max_failures``.
        sasl_mechanisms: the mechanisms offered, best first: names from ``"SCRAM-SHA-256"``,
            ``"SCRAM-SHA-1"``, ``"PLAIN"`` (default all three).
        name: VM name sent to clients that ask (SPICE_MSG_MAIN_NAME).
        uuid: VM UUID sent with the name.
        agent_mouse: use the guest agent for client mouse mode when one is present (QEMU
            ``agent-mouse``).
        agent_copypaste: clipboard messages pass between clients and the guest agent (QEMU
            ``disable-copy-paste`` is its opposite); off drops them and hides the agent's clipboard
            capabilities from the client.
        agent_file_xfer: file transfer messages pass (QEMU ``disable-agent-file-xfer``); off drops
            them and tells the client file transfer is disabled.
        agent_max_message_size: the largest agent message (its announced payload size) relayed
            between a client and the guest agent. A client announcing more is cut off (its main
            channel closes), an agent announcing more is detached: spice-vdagentd and spice-gtk
            allocate a whole message as announced. Not in libspice, which relays any size. The
            default (256 MiB) is above spice-gtk's clipboard limit (100 MiB) and its 64 KiB file
            transfer pieces.
        link_timeout: seconds a connection may take to complete the link handshake.
        max_pending_links: connections allowed to be in the link phase at once (counted from the
            accept, before any TLS handshake). When full, the oldest one that has not yet sent its
            first bytes is closed to make room; a new one is refused only if none is silent.
        max_pending_links_per_peer: of those, from one peer IP address (the same eviction makes
            room); the Unix socket is not limited per peer.
        first_bytes_timeout: seconds from the accept until a connection has sent its first bytes
            (on the TLS port: completed its TLS handshake and sent them); silent ones are closed.
        ping_interval: seconds between liveness pings on the main channel (0 = none).
        net_test: measure latency and bandwidth with pings when a main channel connects.
        max_message_size: largest message body accepted from a client.
        image_compression: how images go to clients (QEMU ``image-compression``): off (raw),
            auto_glz / auto_lz (Quic for photo-like images, else GLZ / LZ), quic, glz, lz, lz4.
            A client's PREFERRED_COMPRESSION message overrides it for that client.
        jpeg_wan_compression: JPEG instead of Quic for photo-like images: auto (on low-bandwidth
            clients, as measured by the main channel's network test), never, always.
        zlib_glz_wan_compression: GLZ images also deflated (ZLIB_GLZ_RGB): auto, never, always.
        streaming_video: which draws may become a video stream (QEMU ``streaming-video``): ``off``;
            ``all`` (any 20 fast same-place copies of fresh bitmaps); ``filter`` (the default, as
            libspice's own; QEMU passes ``off`` unless told): also at least 96x96 and photo-like.
            Stream frames go lossy (a video codec); the area is sent lossless when the stream ends.
        video_codecs: the codecs streams may use, most preferred first (QEMU ``video-codec``,
            also accepted in its ``"spice:mjpeg;gstreamer:h264"`` spelling: the encoder part is
            ignored). Each client gets the first one it can decode (a client's
            PREFERRED_VIDEO_CODEC_TYPE re-orders the list for it). MJPEG is built in; vp8, h264 and
            vp9 need the ``spiceserver[video]`` extra (PyAV): a listed codec that is not installed
            raises ConfigError. None (the default) is libspice's list, mjpeg, h264, vp8, vp9,
            without those not installed.
        playback_compression: send sound as Opus to clients that can decode it (QEMU
            ``playback-compression``, on by default as there); raw 48 kHz PCM (1.5 Mbit/s) otherwise.
            Opus needs the ``spiceserver[video]`` extra (PyAV, whose wheel carries libopus): without
            it the server plays raw and logs it once.
        websocket: accept WebSocket connections on the same ports (``ws://`` on ``port`` and
            ``unix_path``, ``wss://`` on ``tls_port``): browser clients such as spice-html5
            connect directly, with no websockify. Not in QEMU; on by default.
        websocket_origins: web origins (``"https://portal.example:443"``) whose pages may open
            a WebSocket to the server besides pages it served itself; ``("*",)`` allows any.
            Requests without an ``Origin`` header (non-browser clients) are always allowed.
        server_names: host names (or addresses) browsers reach the server by, besides
            ``localhost``, ``addr`` and the address a connection arrives at: every HTTP request
            (WebSocket upgrade, web-root file, metrics page) must name one of them in its ``Host``
            header, else 421 (this stops DNS-rebinding pages). ``("*",)`` accepts any ``Host``
            (behind a reverse proxy that checks it).
        web_root: a directory of web-client files served by plain HTTP GET on the same ports,
            e.g. ``/usr/share/spice-html5`` (then ``http://host:port/`` opens its
            ``spice_auto.html``, which connects back to the same port). None serves nothing.
        metrics_path: serve live metrics in the Prometheus text format at this HTTP path on the
            same ports (e.g. ``"/metrics"``); None (default) serves none. Anyone who can reach
            the port can read them (counts only: no names, addresses or content).
        max_retained_draw_bytes: bytes the queued and visible drawables of one display may keep
            (their images, text and paths, in the surfaces' trees and every client's pipe). Past
            it the worker collapses every client's pipe into pictures of the canvas and forgets
            the trees, which costs bandwidth, never correctness. A guest's draws are bounded by it.
        seamless_migration: offer seamless migration to clients that can (QEMU
            ``seamless-migration``; :mod:`spiceserver.channels.migration`); off: semi-seamless.
        incoming_migration: this server is a migration destination from the start: a main link
            with a source's connection id joins as the migrating client (also
            ``SpiceServer.accept_migration()``).
    """

    addr: str = "127.0.0.1"
    port: int | None = None
    tls_port: int | None = None
    unix_path: str | None = None
    x509_dir: str | None = None
    x509_key_file: str | None = None
    x509_cert_file: str | None = None
    x509_cacert_file: str | None = None
    x509_key_password: str | None = None
    tls_ciphers: str | None = None
    tls_channels: tuple[str, ...] = ()
    plaintext_channels: tuple[str, ...] = ()
    password: str | None = None
    password_lifetime: float = 0.0
    disable_ticketing: bool = False
    ticket_max_failures: int = 5
    ticket_lockout: float = 60.0
    viewer_password: str | None = None
    max_clients: int = 1
    sasl: bool = False
    sasl_mechanisms: tuple[str, ...] = SASL_MECHANISMS
    name: str | None = None
    uuid: _uuid.UUID | None = None
    agent_mouse: bool = True
    agent_copypaste: bool = True
    agent_file_xfer: bool = True
    agent_max_message_size: int = 256 << 20
    link_timeout: float = 30.0
    max_pending_links: int = 256
    max_pending_links_per_peer: int = 32
    first_bytes_timeout: float = 5.0
    ping_interval: float = 30.0
    net_test: bool = True
    max_message_size: int = 1 << 20
    image_compression: ImageCompressionName = "auto_glz"
    jpeg_wan_compression: WanCompressionName = "auto"
    zlib_glz_wan_compression: WanCompressionName = "auto"
    streaming_video: StreamingVideoName = "filter"
    video_codecs: tuple[str, ...] | str | None = None
    playback_compression: bool = True
    websocket: bool = True
    websocket_origins: tuple[str, ...] = ()
    server_names: tuple[str, ...] = ()
    web_root: str | None = None
    metrics_path: str | None = None
    max_retained_draw_bytes: int = 256 << 20
    seamless_migration: bool = False
    incoming_migration: bool = False

    def __post_init__(self) -> None:
        if self.sasl and self.tls_port is None:
            raise ConfigError("sasl=True needs tls_port: SASL is offered on TLS links only")
        mechs = self.sasl_mechanisms
        if not mechs or len(set(mechs)) != len(mechs) or not set(mechs) <= set(SASL_MECHANISMS):
            raise ConfigError(f"sasl_mechanisms {mechs!r}: distinct names from {', '.join(SASL_MECHANISMS)}")
        if self.port is None and self.tls_port is None and self.unix_path is None:
            raise ConfigError("nothing to listen on: set port, tls_port or unix_path")
        for p in (self.port, self.tls_port):
            if p is not None and not 0 <= p <= 65535:
                raise ConfigError(f"port {p} out of range")
        if self.tls_port is not None and self.x509_dir is None and not (self.x509_cert_file and self.x509_key_file):
            raise ConfigError("tls_port needs x509_dir (or x509_cert_file and x509_key_file)")
        for names, what in ((self.tls_channels, "tls_channels"), (self.plaintext_channels, "plaintext_channels")):
            for n in names:
                if n != "default" and n not in _CHANNEL_NAMES:
                    raise ConfigError(f"{what}: unknown channel {n!r} (known: {', '.join(sorted(_CHANNEL_NAMES))}, default)")
        for pw in (self.password, self.viewer_password):
            if pw is not None and len(pw.encode()) > 60:
                raise ConfigError("password longer than 60 bytes (SPICE_MAX_PASSWORD_LENGTH)")
        if self.max_clients < 1:
            raise ConfigError("max_clients must be at least 1")
        if self.viewer_password is not None and self.disable_ticketing:
            raise ConfigError("viewer_password with disable_ticketing: nobody needs a password, so it would give no role (set password too)")
        if self.image_compression not in IMAGE_COMPRESSIONS:
            raise ConfigError(f"image_compression {self.image_compression!r}: expected one of {', '.join(IMAGE_COMPRESSIONS)}")
        for name in ("jpeg_wan_compression", "zlib_glz_wan_compression"):
            if getattr(self, name) not in WAN_COMPRESSIONS:
                raise ConfigError(f"{name} {getattr(self, name)!r}: expected one of {', '.join(WAN_COMPRESSIONS)}")
        if self.streaming_video not in STREAMING_VIDEO_MODES:
            raise ConfigError(f"streaming_video {self.streaming_video!r}: expected one of {', '.join(STREAMING_VIDEO_MODES)}")
        object.__setattr__(self, "video_codecs", _installed_video_codecs(self.video_codecs))
        if self.link_timeout <= 0 or self.first_bytes_timeout <= 0 or self.max_pending_links < 1 or self.max_pending_links_per_peer < 1:
            raise ConfigError("link_timeout, first_bytes_timeout, max_pending_links and max_pending_links_per_peer must be positive")
        if self.web_root is not None:
            if not self.websocket:
                raise ConfigError("web_root needs websocket=True (the pages it serves connect over WebSocket)")
            if not os.path.isdir(self.web_root):
                raise ConfigError(f"web_root {self.web_root!r} is not a directory")
        if self.metrics_path is not None:
            if not self.websocket:
                raise ConfigError("metrics_path needs websocket=True (the HTTP side of the ports)")
            if not self.metrics_path.startswith("/") or "?" in self.metrics_path or "#" in self.metrics_path:
                raise ConfigError(f"metrics_path {self.metrics_path!r} must be a path starting with '/'")
        if self.max_retained_draw_bytes < 1 << 20:
            raise ConfigError("max_retained_draw_bytes must be at least 1 MiB")
        for origin in self.websocket_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ConfigError(f"websocket_origins: {origin!r} is not an http(s) origin or '*'")
        for host in self.server_names:
            if host != "*" and not _HOST_NAME.fullmatch(host.removeprefix("[").removesuffix("]")):
                raise ConfigError(f"server_names: {host!r} is not a host name or address (no scheme or port) or '*'")
        if self.agent_max_message_size < 1 << 16:
            raise ConfigError("agent_max_message_size must be at least 64 KiB (a file transfer piece)")
        if self.ticket_max_failures < 0 or self.ticket_lockout <= 0:
            raise ConfigError("ticket_max_failures must be >= 0 and ticket_lockout positive")

    # --- derived -----------------------------------------------------------------------------

    def tls_files(self) -> tuple[str, str, str | None]:
        """(cert, key, ca) paths, QEMU's x509-dir layout unless given explicitly."""
        d = self.x509_dir or ""
        cert = self.x509_cert_file or os.path.join(d, "server-cert.pem")
        key = self.x509_key_file or os.path.join(d, "server-key.pem")
        ca = self.x509_cacert_file or (os.path.join(d, "ca-cert.pem") if d else None)
        return cert, key, ca

    def channel_security(self, channel_name: str) -> int:
        """The allowed transports of a channel (a ChannelSecurity mask)."""
        default = ChannelSecurity.SSL if "default" in self.tls_channels else ChannelSecurity.ANY
        if "default" in self.plaintext_channels:
            default = ChannelSecurity.NONE
        if channel_name in self.tls_channels:
            return ChannelSecurity.SSL
        if channel_name in self.plaintext_channels:
            return ChannelSecurity.NONE
        return default


def parse_video_codecs(value: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    """``video_codecs`` as a tuple of :data:`VIDEO_CODEC_NAMES`, QEMU's string spelling accepted.

    ``"spice:mjpeg;gstreamer:h264"`` (QEMU / libspice ``spice_server_set_video_codecs``) and
    ``("mjpeg", "h264")`` both give ``("mjpeg", "h264")``; duplicates are dropped.

    Raises:
        ConfigError: an unknown codec name, or an empty list.
    """
    items = value.split(";") if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        name = item.strip().rpartition(":")[2].strip().lower()
        if not name:
            continue
        if name not in VIDEO_CODEC_NAMES:
            raise ConfigError(f"video_codecs: unknown codec {item!r} (known: {', '.join(VIDEO_CODEC_NAMES)})")
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError("video_codecs: no codec given")
    return tuple(out)


def _installed_video_codecs(value: tuple[str, ...] | list[str] | str | None) -> tuple[str, ...]:
    """The configured codecs (None: every installed one in libspice's order), each checked installed."""
    from .codecs.video import available_codecs  # PyAV, if present, is imported only here

    installed = {c.name.lower() for c in available_codecs()}
    if value is None:
        return tuple(n for n in VIDEO_CODEC_NAMES if n in installed)
    names = parse_video_codecs(value)
    missing = [n for n in names if n not in installed]
    if missing:
        raise ConfigError(
            f"video_codecs: {', '.join(missing)} not available: install the spiceserver[video] extra (PyAV)"
        )
    return names
