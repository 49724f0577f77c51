"""Sessions: one client's channels, and the table of connected clients.

Counterpart of spice ``server/red-client.cpp`` (a client and its channel clients) and the client
list of ``reds.cpp`` (``reds_handle_main_link`` replaces the previous client). The main channel opens
a session; the other channels join it by the connection id their link presents, which
:mod:`spiceserver.reds` checks against this table (:mod:`spiceserver.channels.link_rules`).

Each session has a :class:`~spiceserver.roles.Role`. With ``ServerConfig.max_clients`` 1 (the
default) a new main link replaces every session, as libspice (but a viewer is refused while an
owner is connected). Above 1, up to that many sessions
live at once; when the table is full, a new owner session replaces the oldest viewer session (the
oldest owner session when there is no viewer), and a new viewer session is refused
(:meth:`SessionTable.victims_for`): whoever holds the owner's password can always get in, a viewer
never pushes anyone out.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..events import ChannelInfo
from ..roles import Role

if TYPE_CHECKING:
    from .main import MainChannelClient
    from .migration import TargetState

__all__ = ["Session", "SessionTable"]


@dataclass(eq=False)
class Session:
    """One client: its main channel and every other channel it linked with the same id.

    Attributes:
        id: the session (connection) id the other channels link with.
        main: the main channel client, once it is set up.
        closers: close each of the session's connections.
        infos: the application's view of each connected channel.
        linked: the (type, id) of every channel connected in this session: one connection each,
            as libspice's ``RedClient::add_channel`` refuses a duplicate.
        migration: on a migration destination, the migrating client's state
            (:mod:`spiceserver.channels.migration`); None for a client that linked here.
        role: owner or viewer (:mod:`spiceserver.roles`); changed only by the host.
        peer: the main channel's peer address.
        since: when the session started (``time.time()``).
        inputs_dropped: input messages dropped because the session is a viewer.
        ticket_role: the role of the password its main link used (None without ticketing).
    """

    id: int
    role: Role = Role.OWNER
    peer: str = ""
    since: float = field(default_factory=time.time)
    inputs_dropped: int = 0
    ticket_role: Role | None = None
    main: MainChannelClient | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)
    infos: list[ChannelInfo] = field(default_factory=list)
    linked: set[tuple[int, int]] = field(default_factory=set)
    migration: TargetState | None = None

    @property
    def low_bandwidth(self) -> bool:
        """The main channel's network test found this client below 10 Mbps."""
        return self.main is not None and self.main.net_test.low_bandwidth


class SessionTable:
    """The connected clients by session id, oldest first (event loop only).

    With ``max_clients`` 1, as libspice (``reds_handle_main_link``), a new main link replaces the
    current client: every channel of the previous sessions is closed. Above 1, see the module doc.
    """

    def __init__(self, log: logging.Logger, max_clients: int = 1) -> None:
        self._by_id: dict[int, Session] = {}
        self._log = log
        self.max_clients = max_clients

    def count(self, role: Role) -> int:
        """Sessions of ``role``."""
        return sum(1 for s in self._by_id.values() if s.role is role)

    def victims_for(self, role: Role) -> list[Session] | None:
        """The sessions a new ``role`` session replaces (often none); None when it is refused."""
        live = list(self._by_id.values())
        if self.max_clients <= 1:  # libspice: the new client replaces the old, unless a viewer would replace an owner
            return None if role is Role.VIEWER and any(s.role is Role.OWNER for s in live) else live
        if len(live) < self.max_clients:
            return []
        if role is not Role.OWNER:
            return None
        viewers = [s for s in live if s.role is Role.VIEWER]
        return [(viewers or live)[0]]

    def open(
        self, role: Role = Role.OWNER, peer: str = "", ticket_role: Role | None = None, migration: tuple[int, TargetState] | None = None
    ) -> Session | None:
        """Start a session of ``role`` with a fresh random non-zero id (for a migrating client, the
        (id, state) its source gave it), after closing the sessions it replaces (:meth:`victims_for`);
        None when the table has no room for it."""
        victims = self.victims_for(role)
        if victims is None:
            self._log.warning("%d sessions connected (max_clients): refusing a new %s session", len(self), role)
            return None
        for old in victims:
            self._log.info("new %s client: disconnecting %s session %#x", role, old.role, old.id)
            self.close(old)
        sid, state = migration if migration is not None else (0, None)
        while not sid or sid in self._by_id:
            sid = secrets.randbits(32)
        session = Session(sid, role, peer, ticket_role=ticket_role, migration=state)
        self._by_id[sid] = session
        return session

    def get(self, session_id: int) -> Session | None:
        """The live session with that id, if any."""
        return self._by_id.get(session_id)

    def close(self, session: Session) -> None:
        """Forget ``session`` and close every channel it has."""
        self._by_id.pop(session.id, None)
        if session.migration is not None:
            session.migration.cancel()
        for close in list(session.closers):
            close()

    def close_all(self) -> None:
        """Close every session (libspice ``reds_disconnect``)."""
        for s in list(self._by_id.values()):
            self.close(s)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._by_id

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)
