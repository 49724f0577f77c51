"""Sessions: one client's channels, and the table of connected clients.

Counterpart of spice ``server/red-client.cpp`` (a client and its channel clients) and the client
list of ``reds.cpp`` (``reds_handle_main_link`` replaces the previous client). The main channel opens
a session; the other channels join it by the connection id their link presents, which
:mod:`spiceserver.reds` checks against this table.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..events import ChannelInfo

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
    """

    id: int
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
    """The connected clients by session id (event loop only).

    As libspice (``reds_handle_main_link``), a new main link replaces the current client: every
    channel of the previous sessions is closed.
    """

    def __init__(self, log: logging.Logger) -> None:
        self._by_id: dict[int, Session] = {}
        self._log = log

    def open(self, max_clients: int = 1, migration: tuple[int, TargetState] | None = None) -> Session:
        """Start a session with a fresh random non-zero id (or, for a migrating client, the (id,
        state) its source gave it), first ending the oldest sessions so that at most
        ``max_clients`` remain (1, as libspice: the current one is replaced)."""
        for old in list(self._by_id.values())[: max(0, len(self._by_id) - max_clients + 1)]:
            self._log.info("new client: disconnecting session %#x", old.id)
            self.close(old)
        sid, state = migration if migration is not None else (0, None)
        while not sid or sid in self._by_id:
            sid = secrets.randbits(32)
        session = Session(sid, migration=state)
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
