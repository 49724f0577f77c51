"""Which display channel of a session may use the client's session-wide GLZ window.

spice-gtk keeps ONE GLZ decoder window per session (``src/spice-session.c``
``spice_session_get_caches``; ``src/channel-display.c`` hands it to every display channel's
decoder), whatever ``glz_dictionary_id`` its display channels send in DISPLAY_INIT, and finds the
images a GLZ image refers to by *id* (``src/decode-glz.c`` ``glz_decoder_window_add`` /
``glz_decoder_window_bits``). libspice therefore shares one GLZ dictionary, and so one sequence of
image ids, among a client's display channels (``server/image-encoders.cpp``
``image_encoders_get_glz_dictionary``, with its lock and the cross-channel ``glz_drawable`` release
lists). A dictionary per display channel, as we had, numbers each display's images from 0: display
1's image *n* overwrites display 0's image *n* in the client's window, and display 0's next image
that refers to it decodes with display 1's pixels -- stale or wrong pixels on display 0 while the
server's canvas is right.

We keep the simpler rule: the first display channel of a session to send DISPLAY_INIT with a GLZ
window *owns* the session's window (one GLZ dictionary, so one id sequence); the session's other
display channels code LZ instead (libspice's choice when a client has no GLZ window). The cost is
GLZ's cross-image matches on secondary displays.

The pixmap cache needs no such rule: spice-gtk's session-wide image cache is reference counted
(``src/spice-channel-cache.h`` ``cache_add_lossy`` / ``cache_remove``, spice-gtk c9d4773 "This adds
reference counting to cached images", for multi-monitor guests), so an id one display channel
invalidates stays while another channel's CACHE_ME of it is not invalidated; each channel's mirror
(:class:`~spiceserver.worker.image_encoder.PixmapCache`) then tells the truth about what that
channel may name FROM_CACHE. spice-html5 keeps a cache per channel (``src/display.js``).

Ownership does not move while the session has a display channel with a GLZ window (a later owner's
fresh dictionary would number its images from 0 again in a window that holds the old owner's); the
entry goes with the session's last display channel.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

__all__ = ["SessionCaches"]


@dataclass(eq=False)
class _Entry:
    owner: object
    members: set[int] = field(default_factory=set)  # id() of the joined channels (alive until they leave)


class SessionCaches:
    """The server-wide table of GLZ window owners, shared by every display worker (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[int, int], _Entry] = {}

    def join_glz(self, session_id: int, dictionary_id: int, member: object) -> bool:
        """``member`` (a display channel client) has the session's GLZ window; True if it owns it
        (may code GLZ). Call :meth:`leave` with the same member when it goes."""
        with self._lock:
            entry = self._entries.get((session_id, dictionary_id))
            if entry is None:
                entry = self._entries[session_id, dictionary_id] = _Entry(member)
            entry.members.add(id(member))
            return entry.owner is member

    def leave(self, member: object) -> None:
        """``member`` is gone: forget it (an entry whose members are all gone is dropped)."""
        with self._lock:
            for key, entry in list(self._entries.items()):
                entry.members.discard(id(member))
                if not entry.members:
                    del self._entries[key]

    def __len__(self) -> int:
        """How many (session, dictionary id) windows have an owner."""
        with self._lock:
            return len(self._entries)
