"""The server's public face: listeners, first-bytes dispatch, the link handshake and ticket auth.

Counterpart of spice ``server/reds.cpp`` (listeners, ``reds_handle_*link*``, ``reds_handle_ticket``,
the public ``spice_server_*`` calls) and ``red-stream.cpp`` (plain / TLS / Unix transports). One
asyncio task serves each connection: counted at once (:mod:`spiceserver.admission`), then TLS on the
TLS port, it reads the first bytes -- a SPICE link, or an HTTP request that becomes a WebSocket
tunnel or is answered with a file or the metrics page -- then the link (RSA on :mod:`~spiceserver.linkcrypto`),
with a deadline and a size limit (the sans-IO :class:`~spiceserver.proto.link.ServerLink` checks
every field before anything is buffered), and hands the linked connection to the channel registered
for it (:mod:`spiceserver.channels`), which serves it until it ends.

:class:`SpiceServer`'s device, sound and display methods come from its base
:class:`~spiceserver.server_devices.ServerDevices`. Which methods may be called from which thread
is listed in ``docs/embedding.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import time
from collections.abc import Callable

from .admission import Admission, PendingLink, open_link_phase
from .auth import PasswordCheck, SaslAuthenticator, SaslVerifiers
from .channels.base import Link, ServerContext
from .channels.link_rules import LinkGrant, grant_link
from .channels.migration import MIGRATE_TIMEOUT, MigrationTarget
from .config import ServerConfig
from .errors import ConfigError, LinkError, ProtocolError
from .events import ChannelEvent, ClientInfo, ConnLog, channel_label
from .linkcrypto import new_link_key, run_link_crypto
from .metrics import Metrics
from .proto.enums import TICKET_PUBKEY_BYTES, ChannelType, CommonCap, LinkErr
from .proto.link import LinkMess, LinkRequest, SaslSelected, ServerLink, TicketReceived, caps_to_words, has_cap
from .role_tickets import RoleTickets
from .roles import Role
from .server_devices import ServerDevices
from .server_sessions import SessionControl
from .ticket import LinkKey, TicketThrottle
from .transport import Reader, WebSocketStream, Writer, close_writer, http_exchange, tls_context
from .web import HTTP_PREFIX, WebOptions

__all__ = ["SpiceServer"]

log = logging.getLogger("spiceserver")

_COMMON_CAPS = caps_to_words({CommonCap.PROTOCOL_AUTH_SELECTION, CommonCap.AUTH_SPICE, CommonCap.MINI_HEADER})
#: a TLS link with ``ServerConfig.sasl``: SASL only (libspice ``reds_channel_init_auth_caps``)
_SASL_COMMON_CAPS = caps_to_words({CommonCap.PROTOCOL_AUTH_SELECTION, CommonCap.AUTH_SASL, CommonCap.MINI_HEADER})


def _peer_label(peer: object, other: str) -> str:
    """``"host:port"`` of a TCP peer (``getpeername``), else ``other``."""
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else other


class SpiceServer(ServerDevices, SessionControl):
    """A SPICE server: register devices (:class:`~spiceserver.server_devices.ServerDevices`), then
    :meth:`start` (or :meth:`serve_forever`). Sessions and roles: :class:`~spiceserver.server_sessions.SessionControl`.

    Args:
        config: the frozen configuration.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._ctx = ctx = ServerContext(config)
        self.stats = ctx.stats
        self._ticket = RoleTickets(throttle=TicketThrottle(config.ticket_max_failures, config.ticket_lockout))
        if config.password is not None:
            self._ticket.set(config.password, config.password_lifetime)
        if config.viewer_password is not None:
            self._ticket.set(config.viewer_password, role=Role.VIEWER)
        self._servers: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._conn_ids = itertools.count(1)
        self._admission = Admission(config.max_pending_links, config.max_pending_links_per_peer)
        self._ssl = tls_context(config) if config.tls_port is not None else None
        self._web_options = WebOptions.from_config(config)
        self._sasl = SaslAuthenticator(config.sasl_mechanisms) if config.sasl else None
        super().__init__(ctx)

    # --- clients, events, metrics (event loop unless noted) -------------------------------------

    def add_channel_listener(self, callback: Callable[[ChannelEvent], object]) -> None:
        """Call ``callback(event)`` (or run the coroutine) on the loop whenever a channel links or goes
        away; exceptions are logged, never raised into the server."""
        self._ctx.listeners.add(callback)

    def remove_channel_listener(self, callback: Callable[[ChannelEvent], object]) -> None:
        """Stop calling ``callback``."""
        self._ctx.listeners.remove(callback)

    def clients(self) -> list[ClientInfo]:
        """The connected clients and their channels, oldest first."""
        return [ClientInfo(s.id, tuple(s.infos), str(s.role)) for s in self._ctx.sessions if s.infos]

    @property
    def num_clients(self) -> int:
        """How many client sessions are connected."""
        return len(self._ctx.sessions)

    def disconnect_clients(self) -> None:
        """Close every client session (libspice ``reds_disconnect``); any thread."""
        self._ctx.gate.run(self._ctx.sessions.close_all)

    async def metrics(self) -> Metrics:
        """A snapshot of the live counters (see :mod:`spiceserver.metrics`); also served in the
        Prometheus format at ``ServerConfig.metrics_path``."""
        ctx = self._ctx
        return Metrics(
            uptime_seconds=round(time.monotonic() - ctx.start_time, 3),
            **ctx.stats,
            sessions=len(ctx.sessions),
            sessions_by_role={str(r): ctx.sessions.count(r) for r in Role},
            codec_kernels_ready=self._displays.codec_kernels_ready(),
            channels={k: v for k, v in ctx.open_channels.items() if v},
            channel_bytes=dict(ctx.traffic),
            displays=await self._displays.metrics(),
            sound=tuple(m for ch in ctx.registry if (m := ch.sound_metrics()) is not None),
            devices=tuple(d for ch in ctx.registry if (d := ch.device_metrics()) is not None),
        )

    async def _metrics_page(self) -> str:
        return (await self.metrics()).prometheus()

    # --- tickets, clock (any thread) -----------------------------------------------------------

    def set_ticket(self, password: str | None, lifetime: float = 0.0, role: Role | str = Role.OWNER) -> None:
        """Set ``role``'s password (``spice_server_set_ticket`` sets the owner's); lifetime seconds,
        0 = never expires; None: nobody logs in with that role (:mod:`spiceserver.roles`)."""
        if password is not None and len(password.encode()) > 60:
            raise ConfigError("password longer than 60 bytes")
        self._ticket.set(password, lifetime, Role(role))

    def set_sasl_credentials(self, *, verifiers: SaslVerifiers | None = None, check: PasswordCheck | None = None) -> None:
        """Where SASL logins (``ServerConfig.sasl``) are checked: a verifier store (SCRAM and PLAIN;
        :meth:`SaslVerifiers.add`) and/or ``check(username, password) -> bool`` (PLAIN only; run
        on a link thread). Until called nobody logs in. Links in progress keep the old ones.

        Raises:
            ConfigError: the server was configured without ``sasl``.
        """
        if self._sasl is None:
            raise ConfigError("set_sasl_credentials needs ServerConfig(sasl=True)")
        self._sasl.set_credentials(verifiers=verifiers, check=check)

    def mm_time(self) -> int:
        """The multimedia clock in ms (libspice ``reds_get_mm_time``)."""
        return self._ctx.mm_time()

    # --- migration (event loop; :mod:`spiceserver.channels.migration`) ------------------------------

    async def migrate_info(
        self, host: str, port: int | None, tls_port: int | None = None, cert_subject: str | None = None,
        *, connect: bool = True, timeout: float = MIGRATE_TIMEOUT,
    ) -> bool:  # fmt: skip
        """The VM is about to migrate to the server at ``host``: tell the clients (libspice
        ``spice_server_migrate_connect``; with ``connect=False`` only note it, as
        ``spice_server_migrate_info``: the clients then switch host at the end). Returns True once
        every client connected to the destination, False if one could not or ``timeout`` passed."""
        target = MigrationTarget(host, port, tls_port, cert_subject)
        return await self._main.migration.migrate_info(target, connect=connect, timeout=timeout)

    async def migrate_end(self, completed: bool = True) -> dict[int, str]:
        """The migration completed (the VM runs on the destination) or failed (libspice
        ``spice_server_migrate_end``): the clients move (seamless, semi-seamless, or switch host
        for those that had not connected) or are told it is cancelled. Returns what each session
        (by id) did; after a completed migration, returns once the clients left (at most 10 s)."""
        return await self._main.migration.migrate_end(completed)

    def accept_migration(self, enabled: bool = True) -> None:
        """Accept a migrating client's links with its source's connection id (as
        ``ServerConfig.incoming_migration``)."""
        self._main.migration.accept(enabled)

    # --- listening ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the configured listeners (plain, TLS, Unix); on OSError ``close()`` releases the rest."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        self._ctx.gate.bind(loop)
        for channel in self._ctx.registry:
            channel.on_loop_start(loop)
        if cfg.port is not None:
            self._servers.append(await asyncio.start_server(functools.partial(self._accept, secure=False), cfg.addr, cfg.port))
        if cfg.tls_port is not None:
            self._servers.append(await asyncio.start_server(functools.partial(self._accept, secure=True), cfg.addr, cfg.tls_port))  # TLS: see _handshake
        if cfg.unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(cfg.unix_path)
            self._servers.append(await asyncio.start_unix_server(functools.partial(self._accept, secure=False, unix=True), cfg.unix_path))
        for addr in self.addresses:
            log.info("listening on %s", addr)

    @property
    def addresses(self) -> list[str]:
        """The bound listener addresses (``"host:port"``, or a Unix socket path)."""
        out = []
        for srv in self._servers:
            for sock in srv.sockets:
                name = sock.getsockname()
                out.append(name if isinstance(name, str) else f"{name[0]}:{name[1]}")
        return out

    def port_of(self, secure: bool = False) -> int:
        """The bound TCP port (useful with port 0)."""
        cfg = self.config
        wanted = cfg.tls_port if secure else cfg.port
        idx = 0 if (not secure or cfg.port is None) else 1
        if wanted is None:
            raise ConfigError("that listener is not configured")
        return int(self._servers[idx].sockets[0].getsockname()[1])

    async def serve_forever(self) -> None:
        """Start if needed and serve until cancelled."""
        if not self._servers:
            await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop listening, disconnect every client and stop the display workers."""
        for srv in self._servers:
            srv.close()
        self._ctx.sessions.close_all()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await srv.wait_closed()
        self._servers.clear()
        for channel in self._ctx.registry:
            await channel.close()

    async def __aenter__(self) -> SpiceServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- connections ----------------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, secure: bool, unix: bool = False) -> None:
        task = asyncio.get_running_loop().create_task(self._serve_connection(reader, writer, secure, unix))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secure: bool, unix: bool) -> None:
        conn_id = next(self._conn_ids)
        peer = writer.get_extra_info("peername")
        peer_s = "unix" if unix else _peer_label(peer, str(peer))
        clog = ConnLog(log, {"conn": conn_id, "peer": peer_s + ("/tls" if secure else "")})
        self.stats["connections"] += 1
        if (pending := self._admission.admit(None if unix else peer_s.rpartition(":")[0], writer.transport.abort)) is None:
            return writer.transport.abort()  # (logged by the admission, rate-limited)
        stream: tuple[Reader, Writer] = (reader, writer)
        linked: tuple[LinkMess, bytes, LinkGrant] | bool | None = None
        try:
            try:
                async with asyncio.timeout(self.config.link_timeout):
                    stream, linked = await self._handshake(reader, writer, secure, clog, pending)
            except TimeoutError:
                clog.warning("link not completed within %.0f s; closing", self.config.link_timeout)
            except OSError as exc:  # ConnectionError, ssl.SSLError (an eviction is logged by the admission)
                (clog.debug if pending.evicted else clog.info)("connection lost during link: %s", exc)
            except ProtocolError as exc:
                clog.warning("link refused: %s", exc.reason)
            except Exception:  # a bug must cost this connection only
                clog.exception("internal error during the link; closing the connection")
        finally:
            self._admission.release(pending)
        if not isinstance(linked, tuple):
            if linked is None:  # (True: an HTTP request was answered, not a link)
                self.stats["links_failed"] += 1
            await close_writer(stream[1])
            return
        self.stats["links_ok"] += 1
        link_mess, leftover, grant = linked
        websocket = isinstance(stream[0], WebSocketStream)
        kind = ("wss" if secure else "ws") if websocket else ("unix" if unix else ("tls" if secure else "tcp"))
        channel = self._ctx.registry.get(link_mess.channel_type, link_mess.channel_id)
        try:
            if channel is None:
                clog.info("channel went away during the link")
            else:
                await channel.serve(Link(stream[0], stream[1], link_mess, leftover, secure, unix, clog, kind, peer_s, grant.role, grant.ticket_role))
        finally:
            await close_writer(stream[1])

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secure: bool, clog: ConnLog, pending: PendingLink
    ) -> tuple[tuple[Reader, Writer], tuple[LinkMess, bytes, LinkGrant] | bool | None]:
        """TLS if ``secure``, then the first bytes decide: an HTTP request (WebSocket or a file) or a SPICE link.

        Returns the stream and the link (message, leftover), None when the link failed, or True
        when the connection was a plain HTTP request that has been answered.
        """
        tls = self._ssl if secure else None
        reader, writer, prefix = await open_link_phase(reader, writer, tls, len(HTTP_PREFIX), self.config.first_bytes_timeout)
        if len(prefix) < len(HTTP_PREFIX):
            (clog.debug if pending.evicted else clog.info)("peer closed the connection during the link (%d bytes buffered)", len(prefix))
            return (reader, writer), None
        self._admission.spoke(pending)
        if prefix == HTTP_PREFIX and self.config.websocket:
            ws = await http_exchange(reader, writer, prefix, self._web_options, self._metrics_page, clog)
            if not isinstance(ws, WebSocketStream):
                if ws:
                    self.stats["http_requests"] += 1
                return (reader, writer), ws
            self.stats["websocket_links"] += 1
            return (ws, ws), ws.linked(await self._link(ws, ws, secure, clog))
        return (reader, writer), await self._link(reader, writer, secure, clog, prefix)

    async def _link(
        self, reader: Reader, writer: Writer, secure: bool, clog: ConnLog, prefix: bytes = b""
    ) -> tuple[LinkMess, bytes, LinkGrant] | None:
        """Run the handshake; returns the link message and leftover bytes, or None if refused."""
        link = ServerLink()
        key: LinkKey | None = None
        while True:
            data = prefix or await reader.read(4096)
            prefix = b""
            if not data:
                clog.info("peer closed the connection during the link (%d bytes buffered)", link.buffered)
                return None
            try:
                link.receive_data(data)
            except LinkError as exc:
                clog.warning("link refused: %s", exc.reason)
                writer.write(link.data_to_send())
                await writer.drain()
                return None
            for ev in link.events():
                if isinstance(ev, LinkRequest):
                    mess = ev.mess
                    clog.extra["channel"] = channel_label(mess.channel_type, mess.channel_id)  # type: ignore[index]
                    err = self._check_link_request(mess, secure, clog)
                    if err is not None:
                        link.reject(err)
                        writer.write(link.data_to_send())
                        await writer.drain()
                        return None
                    sasl = secure and self._sasl is not None
                    # a client that can do SASL gets no RSA key (libspice reds_send_link_ack)
                    key = None if sasl and has_cap(mess.common_caps, CommonCap.AUTH_SASL) else await new_link_key()
                    channel = self._ctx.registry.get(mess.channel_type, mess.channel_id)
                    assert channel is not None  # checked above
                    pub_key = bytes(TICKET_PUBKEY_BYTES) if key is None else key.public_der
                    link.accept(pub_key, _SASL_COMMON_CAPS if sasl else _COMMON_CAPS, channel.caps_words(), sasl=sasl)
                    if link.failed:
                        clog.warning("link refused: SASL required but the client has no auth selection")
                        writer.write(link.data_to_send())
                        await writer.drain()
                        return None
                elif isinstance(ev, SaslSelected):
                    assert self._sasl is not None and link.request is not None
                    outcome = await self._sasl.login(reader, writer, link.leftover(), writer.get_extra_info("peername"), self._ticket.throttle, clog)
                    self.stats["sasl_ok" if outcome.ok else "sasl_failed"] += 1
                    if not outcome.ok:
                        return None
                    # a SASL login is an owner's (a role policy may decide from RoleQuery.user)
                    grant = self._check_connection(link.request.mess, clog, Role.OWNER, writer.get_extra_info("peername"), secure, outcome.user)
                    link.finish(grant.code)
                    writer.write(link.data_to_send())
                    await writer.drain()
                    return (link.request.mess, outcome.leftover, grant) if grant.code == LinkErr.OK else None
                elif isinstance(ev, TicketReceived):
                    assert key is not None and link.request is not None
                    grant = await self._check_ticket(key, ev.encrypted_ticket, link.request.mess, clog, writer, secure)
                    link.finish(grant.code)
                    writer.write(link.data_to_send())
                    await writer.drain()
                    if grant.code != LinkErr.OK:
                        return None
                    return link.request.mess, link.leftover(), grant
            out = link.data_to_send()
            if out:
                writer.write(out)
                await writer.drain()

    def _check_link_request(self, mess: LinkMess, secure: bool, clog: ConnLog) -> int | None:
        channel = self._ctx.registry.get(mess.channel_type, mess.channel_id)
        if channel is None:
            clog.warning("channel %d:%d is not available", mess.channel_type, mess.channel_id)
            return LinkErr.CHANNEL_NOT_AVAILABLE
        refusal = channel.security_refusal(secure)
        if refusal is not None:
            clog.warning("channel %s %s", channel.name, "must be encrypted" if refusal == LinkErr.NEED_SECURED else "must not be encrypted")
        return refusal

    async def _check_ticket(
        self, key: LinkKey, ciphertext: bytes, mess: LinkMess, clog: ConnLog, writer: Writer, secure: bool
    ) -> LinkGrant:
        """The ticket, then the session and role rules (:mod:`spiceserver.channels.link_rules`)."""
        peer = writer.get_extra_info("peername")
        auth = await run_link_crypto(lambda: self._ticket.authenticate(key, ciphertext, required=not self.config.disable_ticketing, peer=peer))
        if auth.reason is not None:
            clog.warning("authentication failed: %s", auth.reason)
            return LinkGrant(LinkErr.PERMISSION_DENIED)
        return self._check_connection(mess, clog, auth.role, peer, secure)

    def _check_connection(self, mess: LinkMess, clog: ConnLog, role: Role | None, peer: object, secure: bool, user: str | None = None) -> LinkGrant:
        """After authentication (as ``role``; a SASL ``user``): a main link presents no connection
        id unless a migration is expected; then the session and role rules
        (:mod:`spiceserver.channels.link_rules`)."""
        if mess.channel_type == ChannelType.MAIN and mess.connection_id and not self._main.migration.accepting:
            # only a migrating client presents an id on its main link (spice-gtk resets it to 0 on
            # disconnect); refused, it tells its source MIGRATE_CONNECT_ERROR (libspice takes it as one)
            clog.warning("main link with connection id %#x, and no migration is expected", mess.connection_id)
            return LinkGrant(LinkErr.BAD_CONNECTION_ID)
        peer_s = _peer_label(peer, "unix")
        ctx = self._ctx
        grant = grant_link(ctx.sessions, mess.channel_type, mess.connection_id, role, peer=peer_s, secure=secure, policy=ctx.role_policy, log=clog, user=user)
        if grant.code == LinkErr.OK and ctx.registry.get(mess.channel_type, mess.channel_id) is None:
            return LinkGrant(LinkErr.CHANNEL_NOT_AVAILABLE)
        return grant
