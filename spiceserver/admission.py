"""Admission to the link phase: how many connections may be linking at once, and who makes room.

Counterpart of the accept side of spice ``server/reds.cpp`` (``reds_accept``,
``reds_init_client_connection``, ``reds_handle_new_link``), which keeps a list of links in
progress; this module adds the bounds that keep one peer from locking the others out:

* every accepted socket is counted at once -- on the TLS port too, before its handshake -- up to
  ``ServerConfig.max_pending_links`` in all and ``max_pending_links_per_peer`` per peer address;
* when a bound is reached, the oldest counted connection (of that peer, or of anyone for the global
  bound) that has not yet sent its first bytes is evicted to make room; the new one is refused only
  when every counted connection has already spoken;
* :func:`open_link_phase` gives the TLS handshake and the first bytes one short deadline
  (``first_bytes_timeout``), so a silent connection is gone long before ``link_timeout``;
* refusals and evictions are logged as one summary line per :data:`ADMISSION_LOG_INTERVAL`, never a
  line per connection (a flood must not become a flood of log lines).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable

from .errors import ProtocolError
from .transport import start_tls

__all__ = ["ADMISSION_LOG_INTERVAL", "Admission", "PendingLink", "open_link_phase"]

log = logging.getLogger("spiceserver")

#: seconds between two summary lines about refused or evicted connections
ADMISSION_LOG_INTERVAL = 10.0


class PendingLink:
    """One connection counted in the link phase.

    ``quiet`` while it has sent none of its first bytes (only those can be evicted);
    ``evicted`` once it was closed to make room for a newer one.
    """

    __slots__ = ("_close", "evicted", "peer", "quiet")

    def __init__(self, peer: str | None, close: Callable[[], None]) -> None:
        self.peer = peer
        self._close = close
        self.quiet = True
        self.evicted = False

    def evict(self) -> None:
        """Close the connection now (its task then ends with the read that fails)."""
        self.evicted = True
        self._close()


class Admission:
    """Counts the connections in the link phase and decides who gets in (event loop only).

    Args:
        max_total: connections allowed in the link phase at once.
        max_per_peer: of those, from one peer address (a ``peer`` of None is not limited per peer:
            the Unix socket, whose peers the file permissions already chose).
        clock: monotonic seconds (tests may pass their own).
    """

    def __init__(self, max_total: int, max_per_peer: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_total = max_total
        self.max_per_peer = max_per_peer
        self._clock = clock
        self._pending: dict[PendingLink, None] = {}  # insertion order = oldest first
        self._per_peer: dict[str, int] = {}
        self.refused = 0  # since the server started
        self.evicted = 0
        self._unlogged_refused = 0
        self._unlogged_evicted = 0
        self._next_log = 0.0

    def __len__(self) -> int:
        return len(self._pending)

    def count(self, peer: str) -> int:
        """How many connections of ``peer`` are in the link phase."""
        return self._per_peer.get(peer, 0)

    def admit(self, peer: str | None, close: Callable[[], None]) -> PendingLink | None:
        """Count a new connection (``close`` aborts it); None when it must be refused.

        Room is made by evicting the oldest quiet connection of the same peer (per-peer bound) or
        of anyone (global bound).
        """
        full = peer is not None and self._per_peer.get(peer, 0) >= self.max_per_peer and not self._evict_oldest(peer)
        if full or (len(self._pending) >= self.max_total and not self._evict_oldest(None)):
            self._refuse()
            return None
        entry = PendingLink(peer, close)
        self._pending[entry] = None
        if peer is not None:
            self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        return entry

    def spoke(self, entry: PendingLink) -> None:
        """The connection sent its first bytes: it can no longer be evicted."""
        entry.quiet = False

    def release(self, entry: PendingLink) -> None:
        """The connection left the link phase (linked, refused, closed or evicted)."""
        if entry not in self._pending:
            return
        del self._pending[entry]
        if entry.peer is not None:
            left = self._per_peer[entry.peer] - 1
            if left:
                self._per_peer[entry.peer] = left
            else:
                del self._per_peer[entry.peer]

    def _evict_oldest(self, peer: str | None) -> bool:
        for entry in self._pending:
            if entry.quiet and (peer is None or entry.peer == peer):
                self.release(entry)
                entry.evict()
                self.evicted += 1
                self._unlogged_evicted += 1
                self._log_summary()
                return True
        return False

    def _refuse(self) -> None:
        self.refused += 1
        self._unlogged_refused += 1
        self._log_summary()

    def _log_summary(self) -> None:
        now = self._clock()
        if now < self._next_log:
            return
        self._next_log = now + ADMISSION_LOG_INTERVAL
        log.warning(
            "link phase full (%d connections, at most %d per peer): %d refused, %d silent ones evicted since the last such line",
            len(self._pending), self.max_per_peer, self._unlogged_refused, self._unlogged_evicted,
        )  # fmt: skip
        self._unlogged_refused = self._unlogged_evicted = 0


async def open_link_phase(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    tls: ssl.SSLContext | None,
    prefix_len: int,
    timeout: float,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """The TLS handshake (when ``tls`` is given) and the first ``prefix_len`` bytes, within ``timeout`` s.

    Must be awaited before anything else reads the connection (the handshake takes over the
    socket's bytes from the first one). Returns the (upgraded) streams and the bytes read; a prefix
    shorter than ``prefix_len`` means the peer closed the connection.

    Raises:
        ProtocolError: the deadline passed first.
        OSError: the handshake failed (``ssl.SSLError``) or the connection was lost.
    """
    try:
        async with asyncio.timeout(timeout):
            if tls is not None:
                reader, writer = await start_tls(reader, writer, tls)
            try:
                return reader, writer, await reader.readexactly(prefix_len)
            except asyncio.IncompleteReadError as exc:
                return reader, writer, exc.partial
    except TimeoutError:
        what = "TLS handshake and first bytes" if tls is not None else "first bytes"
        raise ProtocolError(f"{what} not received within {timeout:g} s") from None
