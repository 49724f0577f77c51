"""Which display channel of a session may use the client's session-wide pixmap cache and GLZ window.

spice-gtk keeps ONE pixmap cache and ONE GLZ decoder window per session (``spice-session.c``
``spice_session_get_caches``), whatever ``pixmap_cache_id`` / ``glz_dictionary_id`` its display
channels send in DISPLAY_INIT; every display channel adds to, reads from and invalidates the same
cache. libspice mirrors that with one ``PixmapCache`` and one GLZ dictionary per (client, id) shared
by the display channel clients (``server/pixmap-cache.cpp`` ``pixmap_cache_get``,
``image-encoders.cpp`` ``image_encoders_get_glz_dictionary``), under a lock, and orders the channels
on the client with per-channel ``sync`` serials and WAIT_FOR_CHANNELS messages (``dcc-send.cpp``
``fill_bits`` / ``send_free_list``, ``dcc.cpp`` ``dcc_pixmap_cache_unlocked_add``).

Our display workers are independent threads whose channels the client reads concurrently, so one
mirror shared between them would still let display B send FROM_CACHE for an id that display A's
INVAL_LIST removes first on the client (spice-gtk then blocks that channel until some channel adds
the id again). We keep the simpler rule instead: the first display channel of a session to send
DISPLAY_INIT for a cache id *owns* it -- its mirror is the only one that adds, hits or evicts ids, so
the mirror equals the client's cache -- and the session's other display channels send no CACHE_ME
and no FROM_CACHE (and LZ instead of GLZ, whose image ids would collide in the shared window). The
cost is cache efficiency on secondary displays; a FROM_CACHE is never sent for an id the client no
longer holds.

Ownership does not move while the session has a display channel on that id (a later owner's fresh
mirror or GLZ dictionary would not match what the client's cache or window already holds); the
entry goes away with the session's last display channel.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field

__all__ = ["CacheKind", "SessionCaches"]


class CacheKind(enum.Enum):
    """The client caches that are per session in spice-gtk."""

    PIXMAP = "pixmap"
    GLZ = "glz"


@dataclass(eq=False)
class _Entry:
    owner: object
    members: set[int] = field(default_factory=set)  # id() of the joined channels (kept alive by the caller)


class SessionCaches:
    """The server-wide table of cache owners, shared by every display worker (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[CacheKind, int, int], _Entry] = {}

    def join(self, kind: CacheKind, session_id: int, cache_id: int, member: object) -> bool:
        """``member`` (a display channel client) uses the session's cache ``cache_id``; True if it owns it.

        Call :meth:`leave` with the same member when it goes."""
        key = (kind, session_id, cache_id)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(member)
            entry.members.add(id(member))
            return entry.owner is member

    def leave(self, member: object) -> None:
        """``member`` is gone: forget it everywhere (an entry whose members are all gone is dropped)."""
        with self._lock:
            for key, entry in list(self._entries.items()):
                entry.members.discard(id(member))
                if not entry.members:
                    del self._entries[key]

    def owner_count(self) -> int:
        """How many (kind, session, id) entries exist (for tests and metrics)."""
        with self._lock:
            return len(self._entries)
