"""Live migration of the connected clients to another server: source and destination sides.

Counterpart of spice ``server/reds.cpp`` (``spice_server_migrate_info`` / ``_connect`` / ``_end``,
``reds_mig_finished``, ``reds_handle_main_link`` for a link with a foreign connection id,
``reds_link_mig_target_channels``, ``reds_on_client_(semi_)seamless_migrate_complete``) and of
``main-channel-client.cpp`` (``migrate_src_complete``, ``handle_migrate_connected``). What the client
does is spice-gtk's ``channel-main.c`` (``main_migrate_connect``, ``main_handle_migrate_*``) and
``spice-session.c`` (``spice_session_migrate_end``, ``spice_session_channel_migrate``).

Theory of operation (one :class:`Migration` per server, owned by the main channel):

* **Source.** ``migrate_info(target)`` sends each client MIGRATE_BEGIN_SEAMLESS (the server allows
  seamless, ``ServerConfig.seamless_migration``, and the client has SEAMLESS_MIGRATE) or MIGRATE_BEGIN
  (SEMI_SEAMLESS_MIGRATE) and waits until every client answered MIGRATE_CONNECTED[_SEAMLESS]
  (connected), MIGRATE_CONNECT_ERROR, or :data:`MIGRATE_TIMEOUT` passed (libspice's 10 s).
  ``migrate_end(completed)`` then, per client:

  ======================  =====================================================================
  completed, connected    seamless: every channel gets SPICE_MSG_MIGRATE; main and inputs with
                          NEED_FLUSH | NEED_DATA_TRANSFER (their MIGRATE_DATA follows the client's
                          FLUSH_MARK, so every message it sent before is handled; so do the
                          spicevmc channels, with their device write queue), display with
                          NEED_DATA_TRANSFER (its MIGRATE_DATA follows at once, built when the
                          worker marshals it), the others 0. Semi-seamless: MIGRATE_END.
  completed, not          MIGRATE_SWITCH_HOST: the client reconnects everything to the target.
  not completed           MIGRATE_CANCEL to a client that connected (or was told to begin).
  ======================  =====================================================================

  A client whose session has a channel whose state does not travel -- a smartcard reader (its
  readers and the APDU in flight live in this server) or a USB device redirected to this server's
  own usbredir parser (:class:`~spiceserver.channels.usbredir.UsbRedirChannel`; the pass-through
  channel's bytes do travel) -- is not asked to connect, and at the end is told
  MIGRATE_SWITCH_HOST: it reconnects everything to the target, where spice-gtk adds its readers
  and redirects its devices again. A session that links such a channel after ``migrate_info`` is
  told SWITCH_HOST then MIGRATE_CANCEL at the end (libspice's order when the client had not
  finished connecting).

  A client that connects after the migration ended is told MIGRATE_CANCEL. After a completed
  migration the source waits (at most :data:`MIGRATE_TIMEOUT`) for the clients to leave, then closes
  whatever is left.
* **Destination.** While it accepts a migration (``ServerConfig.incoming_migration`` or
  ``accept_migration()``) a main link with a non-zero connection id starts a session with that id
  marked as migrating (:class:`TargetState`): the main channel sends nothing; the client's other
  links with the id are held (``wait_linkable``). MIGRATE_DST_DO_SEAMLESS {version} is answered ACK
  (our :data:`~spiceserver.proto.migration_data.MIGRATION_VERSION`) or NACK, and ACK releases the
  held links: each channel then expects MIGRATE_DATA (:mod:`spiceserver.proto.migration_data`) and
  continues from it (the display client instead of a DISPLAY_INIT). The client's MIGRATE_END
  (semi-seamless) releases them as fresh channels and the main channel sends INIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, ProtocolError
from ..proto import migration_data as md
from ..proto.channel_client import StateTable
from ..proto.enums import MainCap, MigrateFlags
from ..proto.messages import main as m
from ..proto.messages.base import ClientMigrateData, Migrate, MigrateData, MigrateFlushMark
from .base import ChannelClient, LoopChannel, ServerContext
from .session import Session

if TYPE_CHECKING:
    from .main import MainChannel, MainChannelClient

__all__ = ["Migration", "MigrationTarget", "TargetState", "MIGRATE_TIMEOUT"]

log = logging.getLogger("spiceserver")

#: libspice ``MIGRATE_TIMEOUT``: how long the source waits for clients to connect to the target,
#: and after a completed migration for them to leave
MIGRATE_TIMEOUT = 10.0


@dataclass(frozen=True)
class MigrationTarget:
    """Where the clients go: the destination server's address as the clients reach it.

    Attributes:
        host: the destination's host name or address.
        port: its plain port, or None.
        tls_port: its TLS port, or None.
        cert_subject: the subject its certificate must have (spice-gtk then checks that instead of
            the host name), or None.
    """

    host: str
    port: int | None = None
    tls_port: int | None = None
    cert_subject: str | None = None

    def __post_init__(self) -> None:
        if self.port is None and self.tls_port is None:
            raise ConfigError("a migration target needs a port or a tls_port")
        for p in (self.port, self.tls_port):
            if p is not None and not 0 < p <= 0xFFFF:
                raise ConfigError(f"migration target port {p} out of range")
        if not self.host or "\0" in self.host or (self.cert_subject is not None and "\0" in self.cert_subject):
            raise ConfigError("bad migration target host or certificate subject")

    def dst_info(self) -> m.DstInfo:
        """SpiceMigrationDstInfo (strings NUL-terminated, as libspice sends them; 0: no such port)."""
        subject = None if self.cert_subject is None else self.cert_subject.encode() + b"\0"
        return m.DstInfo(port=self.port or 0, sport=self.tls_port or 0, host_data=self.host.encode() + b"\0", cert_subject_data=subject)

    def switch_host(self) -> m.MigrateSwitchHost:
        """SPICE_MSG_MAIN_MIGRATE_SWITCH_HOST to this target."""
        info = self.dst_info()
        return m.MigrateSwitchHost(port=info.port, sport=info.sport, host_data=info.host_data, cert_subject_data=info.cert_subject_data)


class TargetState:
    """A migrating client's session on the destination (``Session.migration``)."""

    def __init__(self) -> None:
        #: the client and this server agreed on a seamless migration (DST_SEAMLESS_ACK sent)
        self.seamless = False
        #: the main channel applied the source's main data (seamless) or sent INIT (semi)
        self.main_done = False
        self.cancelled = False
        self._linkable = asyncio.Event()

    @property
    def activated(self) -> bool:
        """The held channel links were released (seamless ACK or the client's MIGRATE_END)."""
        return self._linkable.is_set() and not self.cancelled

    async def wait_linkable(self) -> bool:
        """Hold a channel link until the migration mode is known; False if the session ended."""
        await self._linkable.wait()
        return not self.cancelled

    def activate(self, seamless: bool) -> None:
        """Release the held links (libspice ``reds_link_mig_target_channels``)."""
        self.seamless = seamless
        self._linkable.set()

    def cancel(self) -> None:
        """The session ended: held links give up."""
        self.cancelled = True
        self._linkable.set()

    def adopt(self, cc: ChannelClient) -> None:
        """A released loop channel client of this session: in a seamless migration the inputs
        channel takes the source's state from its MIGRATE_DATA (main has its own handlers)."""
        from .inputs import InputsChannelClient  # (neither imports migration)
        from .spicevmc import SpiceVmcClient

        if self.seamless and isinstance(cc, InputsChannelClient):
            _add_handlers(cc, {ClientMigrateData: lambda msg, now: _apply_inputs(cc, msg)})
        elif self.seamless and isinstance(cc, SpiceVmcClient):
            _add_handlers(cc, {ClientMigrateData: lambda msg, now: _apply_vmc(cc, msg)})


def _add_handlers(cc: ChannelClient, extra: dict[type, Callable[..., object]]) -> None:
    """Add handlers to every state table of ``cc``."""
    cc.tables = {state: StateTable({**table.handlers, **extra}, table.unexpected) for state, table in cc.tables.items()}


def _apply_inputs(cc: Any, msg: ClientMigrateData) -> None:
    data = md.parse(md.InputsMigrationData, msg.data)
    cc.motion_count = data.motion_count
    cc.log.info("migration: inputs state taken over (motion count %d)", data.motion_count)


def _apply_vmc(cc: Any, msg: ClientMigrateData) -> None:
    data = md.parse(md.VmcMigrationData, msg.data)
    if data.queued and not cc.channel.device.write(data.queued):
        cc.log.warning("migration: %d bytes for the device dropped (its queue is full)", len(data.queued))
    cc.log.info("migration: %d bytes queued for the device taken over", len(data.queued))


def _vmc_data(cc: Any) -> bytes:
    take = getattr(cc.channel.device, "take_queued", None)  # a CharDevice; in-process models have none
    queued = take() if take is not None else b""
    if len(queued) > md.MAX_VMC_QUEUE:
        cc.log.warning("migration: %d bytes for the device dropped (too many to migrate)", len(queued) - md.MAX_VMC_QUEUE)
        queued = queued[: md.MAX_VMC_QUEUE]
    return md.pack(md.VmcMigrationData(queued))


def _inputs_data(cc: Any) -> bytes:
    kbd = cc.inputs.keyboard
    leds = kbd.get_leds() if kbd is not None else 0
    return md.pack(md.InputsMigrationData(motion_count=cc.motion_count & 0xFFFF, modifiers=int(leds)))


def _uncarried(session: Session, ctx: ServerContext) -> list[str]:
    """The channels of ``session`` whose state a migration cannot carry (see the module doc)."""
    from .smartcard import SmartcardChannelClient
    from .usbredir import UsbRedirClient

    names = []
    for channel in ctx.registry:
        if isinstance(channel, LoopChannel):
            for cc in channel.clients:
                if cc.session is session and not cc.closed and isinstance(cc, SmartcardChannelClient | UsbRedirClient):
                    names.append(channel.name)
    return sorted(set(names))


@dataclass(eq=False)
class _SourceClient:
    """One client of the source during a migration."""

    mcc: MainChannelClient
    seamless: bool
    begun: bool
    connected: bool = False
    answered: asyncio.Event = field(default_factory=asyncio.Event)


class Migration:
    """Both sides of a migration for one server (see the module docstring).

    Args:
        main: the server's main channel.
    """

    def __init__(self, main: MainChannel) -> None:
        self.main = main
        self.ctx = main.ctx
        self.accepting = main.ctx.config.incoming_migration
        self.target: MigrationTarget | None = None
        self._clients: dict[int, _SourceClient] = {}  # session id -> state while migrating
        #: what the last ``migrate_end`` did per session id: "seamless", "semi-seamless",
        #: "switch-host", "cancel" or "none" (for hosts and tests)
        self.outcome: dict[int, str] = {}

    # --- source ----------------------------------------------------------------------------------

    async def migrate_info(self, target: MigrationTarget, *, connect: bool = True, timeout: float = MIGRATE_TIMEOUT) -> bool:
        """Announce ``target`` to the clients; with ``connect``, tell those that can to connect to it
        now and wait until every one answered (or ``timeout``). Returns True when all connected."""
        self.target = target
        self._clients.clear()
        seamless_ok = self.ctx.config.seamless_migration
        for session in self.ctx.sessions:
            mcc = session.main
            if mcc is None or mcc.closed:
                continue
            seamless = seamless_ok and mcc.has_channel_cap(MainCap.SEAMLESS_MIGRATE) and mcc.has_channel_cap(MainCap.AGENT_CONNECTED_TOKENS)
            begin = connect and (seamless or mcc.has_channel_cap(MainCap.SEMI_SEAMLESS_MIGRATE))
            if begin and (stuck := _uncarried(session, self.ctx)):
                mcc.log.info("migration: the %s state cannot travel: switch host at the end", " and ".join(stuck))
                begin = False
            state = _SourceClient(mcc, seamless, begin)
            self._clients[session.id] = state
            session.closers.append(state.answered.set)  # a client that leaves answers nothing
            if not begin:
                state.answered.set()
                continue
            if seamless:
                mcc.push(m.MigrateBeginSeamless(dst_info=target.dst_info(), src_mig_version=md.MIGRATION_VERSION))
            else:
                mcc.push(m.MigrateBegin(dst_info=target.dst_info()))
            mcc.log.info("migration: %s begins to %s", "seamless" if seamless else "semi-seamless", target.host)
        waiting = [c.answered.wait() for c in self._clients.values()]
        if waiting:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*waiting)
            except TimeoutError:
                log.warning("migration: a client did not connect to the target within %.0f s", timeout)
        # libspice migrate_cancel_wait: a late MIGRATE_CONNECTED is answered MIGRATE_CANCEL
        for c in self._clients.values():
            c.answered.set()
        return bool(self._clients) and all(c.connected for c in self._clients.values())

    async def migrate_end(self, completed: bool, *, timeout: float = MIGRATE_TIMEOUT) -> dict[int, str]:
        """Complete (the VM runs on the target now) or cancel the migration; returns the outcome
        per session id. After a completed migration, waits for the clients to leave."""
        target, clients = self.target, dict(self._clients)
        self._clients.clear()
        self.outcome = {}
        if target is None:
            raise ConfigError("migrate_end without migrate_info")
        leaving: list[Session] = []
        for sid, c in clients.items():
            mcc = c.mcc
            if mcc.closed:
                continue
            if not completed:
                if c.begun:
                    mcc.push(m.MigrateCancel())
                self.outcome[sid] = "cancel" if c.begun else "none"
                continue
            leaving.append(mcc.session)
            if c.connected and (stuck := _uncarried(mcc.session, self.ctx)):
                self.outcome[sid] = "switch-host"
                mcc.log.info("migration: the %s state cannot travel: switch host", " and ".join(stuck))
                mcc.push(target.switch_host())
                mcc.push(m.MigrateCancel())  # its links to the target go (libspice's order)
            elif c.connected and c.seamless:
                self.outcome[sid] = "seamless"
                self._migrate_channels(mcc.session)
            elif c.connected:
                self.outcome[sid] = "semi-seamless"
                mcc.push(m.MigrateEnd())
            else:
                self.outcome[sid] = "switch-host"
                mcc.push(target.switch_host())
            mcc.log.info("migration: %s to %s", self.outcome[sid], target.host)
        if not completed:
            self.target = None
        else:
            await self._wait_gone(leaving, timeout)
        return dict(self.outcome)

    async def _wait_gone(self, sessions: list[Session], timeout: float) -> None:
        """Wait until the sessions ended (libspice ``mig_wait_disconnect``), at most ``timeout``."""
        gone = []
        for s in sessions:
            if s.id in self.ctx.sessions:
                ev = asyncio.Event()
                s.closers.append(ev.set)  # run when the session is closed
                gone.append(ev.wait())
        if gone:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*gone)
        for s in sessions:
            if s.id in self.ctx.sessions:
                log.warning("migration: session %#x did not leave within %.0f s; closing it", s.id, timeout)
                self.ctx.sessions.close(s)

    def _migrate_channels(self, session: Session) -> None:
        """SPICE_MSG_MIGRATE on every channel of ``session`` (libspice ``RedClient::migrate``)."""
        from .inputs import InputsChannelClient
        from .spicevmc import SpiceVmcClient
        from .worker_link import WorkerChannel

        bridges = []
        for channel in self.ctx.registry:
            if isinstance(channel, WorkerChannel):
                if channel.bridge not in bridges:
                    bridges.append(channel.bridge)
                continue
            if not isinstance(channel, LoopChannel):
                continue
            for cc in list(channel.clients):
                if cc.session is not session or cc.closed:
                    continue
                if session.main is not None and cc is session.main:
                    self._flush_then(cc, functools.partial(self._main_data, session.main))
                elif isinstance(cc, InputsChannelClient):
                    self._flush_then(cc, functools.partial(_inputs_data, cc))
                elif isinstance(cc, SpiceVmcClient):
                    self._flush_then(cc, functools.partial(_vmc_data, cc))
                else:
                    cc.push(Migrate(flags=0))
        for bridge in bridges:
            bridge.migrate(session.id)

    @staticmethod
    def _flush_then(cc: ChannelClient, data: Callable[[], bytes]) -> None:
        """MIGRATE {NEED_FLUSH | NEED_DATA_TRANSFER}; the data goes when the client's FLUSH_MARK comes."""

        def on_mark(msg: MigrateFlushMark, now: float) -> None:
            cc.conn.send(MigrateData(data=data()))

        _add_handlers(cc, {MigrateFlushMark: on_mark})
        cc.push(Migrate(flags=MigrateFlags.NEED_FLUSH | MigrateFlags.NEED_DATA_TRANSFER))

    def _main_data(self, mcc: MainChannelClient) -> bytes:
        return md.pack(
            md.MainMigrationData(
                agent_connected=self.main.agent_present,
                agent_started=mcc.agent_started,
                client_tokens=mcc.client_tokens,
                server_tokens=mcc.agent_tokens,
                mouse_mode=int(self.main.mouse_mode),
                agent_pieces=tuple(mcc.pending_agent_pieces()[: md.MAX_AGENT_PIECES]),
                agent_caps=mcc.host_agent.client_caps if mcc.host_agent is not None else frozenset(),
            )
        )

    # --- main channel messages (source and destination) ----------------------------------------

    def handlers(self, mcc: MainChannelClient) -> dict[type, Callable[..., object]]:
        """The main channel client's handlers for the migration messages."""
        return {
            m.MigrateConnected: lambda msg, now: self._on_connected(mcc, True),
            m.MigrateConnectedSeamless: lambda msg, now: self._on_connected(mcc, True),
            m.MigrateConnectError: lambda msg, now: self._on_connected(mcc, False),
            m.MigrateDstDoSeamless: lambda msg, now: self._on_do_seamless(mcc, msg),
            m.ClientMigrateEnd: lambda msg, now: self._on_client_end(mcc, now),
            ClientMigrateData: lambda msg, now: self._on_main_data(mcc, msg, now),
        }

    def _on_connected(self, mcc: MainChannelClient, ok: bool) -> None:
        state = self._clients.get(mcc.session.id)
        if state is None or state.mcc is not mcc or state.answered.is_set():
            if ok:  # too late (timed out, or the migration ended): libspice sends MIGRATE_CANCEL
                mcc.log.info("migration: the client connected to the target too late; cancelling")
                mcc.conn.send(m.MigrateCancel())
            return
        state.connected = ok
        state.answered.set()
        mcc.log.info("migration: the client %s the target", "connected to" if ok else "could not connect to")

    def _target(self, mcc: MainChannelClient) -> TargetState:
        target = mcc.session.migration
        if target is None:
            raise ProtocolError("migration message from a client that is not migrating here")
        return target

    def _on_do_seamless(self, mcc: MainChannelClient, msg: m.MigrateDstDoSeamless) -> None:
        target = self._target(mcc)
        if target.activated:
            raise ProtocolError("MIGRATE_DST_DO_SEAMLESS after the migration started")
        if msg.src_version == md.MIGRATION_VERSION:
            mcc.conn.send(m.MigrateDstSeamlessAck())
            target.activate(seamless=True)
            mcc.log.info("migration: seamless (source version %d) accepted", msg.src_version)
        else:  # reds_on_migrate_dst_set_seamless; the client then goes on semi-seamless
            mcc.conn.send(m.MigrateDstSeamlessNack())
            mcc.log.info("migration: seamless refused (source version %d)", msg.src_version)

    async def _on_client_end(self, mcc: MainChannelClient, now: float) -> None:
        """MSGC_MAIN_MIGRATE_END (semi-seamless): INIT now, then the held channels start afresh."""
        target = self._target(mcc)
        if target.main_done or target.seamless:
            raise ProtocolError("unexpected MIGRATE_END")
        target.main_done = True
        target.activate(seamless=False)
        mcc.attached = True  # spice-gtk sends no ATTACH_CHANNELS after a migration's INIT
        await mcc.welcome(now, net_test=False)
        mcc.log.info("migration: semi-seamless migration complete")

    async def _on_main_data(self, mcc: MainChannelClient, msg: ClientMigrateData, now: float) -> None:
        target = self._target(mcc)
        if not target.seamless or target.main_done:
            raise ProtocolError("unexpected MIGRATE_DATA on the main channel")
        data = md.parse(md.MainMigrationData, msg.data)
        target.main_done = True
        mcc.attached = True
        mcc.client_tokens = min(data.client_tokens, 0xFFFFFFFF)
        if data.agent_connected != self.main.agent_present:  # the target's agent differs: say so
            mcc.send_agent_state(self.main.agent_present)
        elif data.agent_started:
            await mcc.handle(m.AgentStart(num_tokens=data.server_tokens), now)
            if mcc.host_agent is not None:  # what the client's agent announced to the source's
                mcc.host_agent.adopt_caps(data.agent_caps)
                mcc.send_agent_messages(mcc.host_agent.take_messages())
            mcc.send_agent_pieces(list(data.agent_pieces))
        if data.mouse_mode != self.main.mouse_mode:
            mcc.send_mouse_mode()
        mcc.start_pings(now)
        mcc.log.info("migration: seamless migration complete (agent %s, %d pieces)", "started" if data.agent_started else "idle", len(data.agent_pieces))

    # --- destination ---------------------------------------------------------------------------

    def accept(self, enabled: bool = True) -> None:
        """Accept (or stop accepting) a migrating client's links."""
        self.accepting = enabled

    def target_state_for(self, connection_id: int) -> TargetState | None:
        """A new main link presenting ``connection_id``: a TargetState if it is a migrating
        client this server accepts (then the session takes that id), else None."""
        if not self.accepting or connection_id == 0 or connection_id in self.ctx.sessions:
            return None
        return TargetState()
