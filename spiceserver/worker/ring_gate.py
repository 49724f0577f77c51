"""Back-pressure from the clients' pipes to the device: how many commands the worker may pull now.

Counterpart of the loop condition of spice ``server/red-worker.cpp`` (``red_process_display`` and
``red_process_cursor``: ``while (channel->max_pipe_size() <= MAX_PIPE_SIZE)``): libspice pulls the
command ring only while every client's pipe holds at most 50 items, so a guest that draws faster
than its clients take the draws waits on its full ring, and every draw still reaches every client
as itself. spiceserver does the same, with one difference on purpose: a client whose pipe has stayed
over the limit for :data:`SLOW_CLIENT_GRACE` seconds without once dropping under it (no ACK, a
stalled socket) is *lagging*; it stops holding the ring back (libspice would stall the guest until
its 30 s flush timeout disconnects the client), its pipe is collapsed into pictures when it passes
``MAX_PIPE`` (:mod:`.display_client`), and it holds the ring back again once its pipe has emptied.

Several clients of one display (``ServerConfig.max_clients`` > 1): the *least* loaded client paces
the guest, never the most loaded one as in libspice (which holds the ring for its slowest client).
A slow viewer therefore never slows the owner: the ring waits only while every client's pipe is
over the limit, and a slower client's pipe is pruned (a newer draw hides an unsent one) or
collapsed into pictures instead. With one client the two rules are the same.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

__all__ = ["RingGate", "PipeClient", "PIPE_LIMIT", "SLOW_CLIENT_GRACE"]

log = logging.getLogger("spiceserver.worker")

#: libspice ``MAX_PIPE_SIZE``: the ring is pulled while every client's pipe holds at most this many items
PIPE_LIMIT = 50
#: seconds a client may keep its pipe over the limit, without progress, before it stops holding the ring
SLOW_CLIENT_GRACE = 0.5


class PipeClient(Protocol):
    """A worker-side channel client as the gate sees it."""

    @property
    def cc_id(self) -> int:
        """The client's id on the worker."""
        ...

    @property
    def pipe_size(self) -> int:
        """Items queued and not yet marshalled."""
        ...


class RingGate:
    """The pipe limit of one ring (display or cursor) over that ring's clients.

    Args:
        name: for logs ("display", "cursor").
        limit: the pipe size above which a client holds the ring back.
        grace: seconds over the limit without progress before a client is lagging (default
            :data:`SLOW_CLIENT_GRACE`, read when the gate is made).
    """

    def __init__(self, name: str, limit: int = PIPE_LIMIT, grace: float | None = None) -> None:
        self.name = name
        self.limit = limit
        self.grace = SLOW_CLIENT_GRACE if grace is None else grace
        self._over_since: dict[int, float] = {}
        #: clients that no longer hold the ring back (until their pipe empties)
        self.lagging: set[int] = set()
        #: loop rounds in which the ring was held back; clients declared lagging so far
        self.stats = {"held": 0, "lagging": 0}

    def budget(self, clients: Iterable[PipeClient], batch: int, now: float) -> int:
        """How many commands may be pulled now (0: the ring waits), at most ``batch``: the room in
        the emptiest pipe among the clients that are not lagging."""
        sizes = []
        for c in clients:
            size = c.pipe_size
            cc_id = c.cc_id
            if cc_id in self.lagging:
                if size:
                    continue
                self.lagging.discard(cc_id)
                log.info("%s client %d caught up; it holds the ring back again", self.name, cc_id)
            if size > self.limit:
                since = self._over_since.setdefault(cc_id, now)
                if now - since >= self.grace:
                    del self._over_since[cc_id]
                    self.lagging.add(cc_id)
                    self.stats["lagging"] += 1
                    log.info("%s client %d made no progress for %.1f s: lagging (its pipe collapses instead of holding the guest)", self.name, cc_id, now - since)
                    continue
            else:
                self._over_since.pop(cc_id, None)
            sizes.append(size)
        room = min(batch, self.limit + 1 - min(sizes, default=0))
        if room <= 0:
            self.stats["held"] += 1
            return 0
        return room

    def next_deadline(self) -> float | None:
        """When the earliest held-back client would become lagging (the loop must wake then)."""
        if not self._over_since:
            return None
        return min(self._over_since.values()) + self.grace

    def forget(self, cc_id: int) -> None:
        """The client left."""
        self._over_since.pop(cc_id, None)
        self.lagging.discard(cc_id)
