"""The multimedia clock (mm-time): one object that the main channel and, while sound plays, the
playback channel share.

Counterpart of the mm-time parts of spice ``server/reds.cpp`` (``reds_get_mm_time``,
``reds_enable_mm_time`` / ``reds_disable_mm_time``, ``reds_send_mm_time``,
``reds_set_client_mm_time_latency``; ``MM_TIME_DELTA`` is in ``reds-private.h``), of
``main-channel.cpp`` (``push_multi_media_time``: SPICE_MSG_MAIN_MULTI_MEDIA_TIME) and of the uses in
``sound.cpp`` (``playback_channel_client_start`` / ``spice_server_playback_stop``,
``snd_set_playback_latency``, the stamp in ``spice_server_playback_put_samples``).

Theory of operation
-------------------

*The time.* :meth:`MediaClock.now` is a monotonic millisecond count, truncated to 32 bits, so it
wraps after about 49.7 days; peers compare two mm-times with a signed 32-bit difference
(:func:`mm_diff`, spice-gtk ``spice_mmtime_diff``). It counts from the clock's creation (the
server's start); libspice counts from the host's monotonic origin. Only differences matter to
clients, which take their offset from the server's messages.

*What clients are told.* A client runs its own copy of the clock, set to "server time minus the
latency". Video frames are stamped with the server time at which the worker took them in
(:meth:`MediaClock.stamp`), so a client shows each frame one latency after it was produced: the
latency is a jitter buffer. MAIN_INIT carries ``now - 400`` (:data:`MM_TIME_DELTA_MS`; libspice
uses the constant there, not the current latency). After that, MAIN_MULTI_MEDIA_TIME carries
``now - latency`` each time the latency changes; :class:`ClockUpdate` is that message's content
and the clock's listeners (the main channel) send it to every connected client.

*Only raises.* The latency starts at 400 ms. A video encoder that needs more (its client reports
late frames) calls :meth:`MediaClock.raise_latency`; a value at or below the current latency is
ignored (libspice ``reds_set_client_mm_time_latency`` logs "new latency is smaller than
existing"). Nothing lowers it, except the hand-back below.

*Ownership.* While a playback channel plays sound, the audio timestamps drive the client's clock
instead (spice-gtk sets its session time to the last audio packet's time minus its audio delay), so
libspice "disables" its mm-time: ``reds_disable_mm_time`` runs whenever a playback client becomes
active, that is when playback starts with a client connected or when a client links to a channel
already playing; nothing happens while no playback client is connected. Here the playback channel
:meth:`takes <MediaClock.take>` the clock at those same moments and :meth:`hands it back
<MediaClock.release>`. While the clock is owned, exactly this changes:

* :meth:`now` and :meth:`stamp` are unchanged: audio frames and video frames carry the same time
  base (libspice stamps both with ``reds_get_mm_time``), which is what keeps them in sync;
* no MAIN_MULTI_MEDIA_TIME is sent: listeners are not called;
* :meth:`raise_latency` does not touch :attr:`latency`; the request is handed, whatever its value
  (libspice does not apply "only raises" on this path), to the owner's
  :meth:`ClockOwner.on_latency_request` (libspice ``snd_set_playback_latency``: PLAYBACK_LATENCY
  to playback clients that have the LATENCY cap);
* MAIN_INIT for a client that links meanwhile still carries ``now - 400``.

When the owner hands the clock back (libspice ``reds_enable_mm_time`` on playback stop, or when an
active playback client goes away) the latency is reset to 400 ms, even if streams had raised it
before, and listeners are told at once (clients get MAIN_MULTI_MEDIA_TIME ``now - 400``); streams
raise it again with their next request.

*Threads.* Every method is safe from any thread. :meth:`now` and :meth:`stamp` take no lock. The
latency, the owner and the listeners sit behind one re-entrant lock, and listeners and the owner's
callback run on the calling thread with that lock held, so they see changes in the order they
happened. They must therefore be quick and must not wait for another thread that may use the clock:
post the work to a loop instead (the main channel does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .errors import SpiceError

__all__ = [
    "MediaClock",
    "ClockOwner",
    "ClockUpdate",
    "ClockBusyError",
    "MM_TIME_DELTA_MS",
    "MM_TIME_MASK",
    "mm_diff",
]

log = logging.getLogger("spiceserver")

#: the latency a client is first told, ms (libspice ``MM_TIME_DELTA``)
MM_TIME_DELTA_MS = 400
#: mm-times are unsigned 32-bit millisecond counts
MM_TIME_MASK = 0xFFFFFFFF


def mm_diff(a: int, b: int) -> int:
    """``a - b`` for two mm-times, across the 32-bit wrap (spice-gtk ``spice_mmtime_diff``).

    Args:
        a, b: mm-times (u32).

    Returns:
        The signed difference in ms, in ``[-2**31, 2**31)``.
    """
    d = (a - b) & MM_TIME_MASK
    return d - (1 << 32) if d & 0x80000000 else d


@dataclass(frozen=True)
class ClockUpdate:
    """What clients must be told after the latency changed (a MAIN_MULTI_MEDIA_TIME).

    Attributes:
        time: ``now - latency`` at the change (u32): the message's ``time`` field.
        latency: the new latency, ms.
        reason: why it changed (for the log).
    """

    time: int
    latency: int
    reason: str


class ClockOwner(Protocol):
    """Who holds the clock while it is taken (the playback channel while sound plays)."""

    def on_latency_request(self, ms: int, reason: str) -> None:
        """A stream asked for ``ms`` of latency while this owner holds the clock (libspice
        ``snd_set_playback_latency``). Called with the clock's lock held: be quick."""


class ClockBusyError(SpiceError):
    """The clock is already held by another owner."""


class MediaClock:
    """The server's multimedia clock, its latency and its owner. Safe from any thread.

    Args:
        source: a monotonic time in seconds (``time.monotonic``; tests pass a fake).
        epoch: the ``source`` value at which the clock reads 0 (default: now).
    """

    def __init__(self, source: Callable[[], float] = time.monotonic, epoch: float | None = None) -> None:
        self._source = source
        self._epoch = source() if epoch is None else epoch
        self._lock = threading.RLock()
        self._latency = MM_TIME_DELTA_MS
        self._owner: ClockOwner | None = None
        self._listeners: list[Callable[[ClockUpdate], None]] = []

    # --- time ----------------------------------------------------------------------------------

    def now(self) -> int:
        """The clock in ms, u32, wrapping (libspice ``reds_get_mm_time``)."""
        return int((self._source() - self._epoch) * 1000) & MM_TIME_MASK

    def stamp(self) -> int:
        """The mm-time of a frame taken in now: :meth:`now`, except that it is never 0 (a zero
        mm-time means "not stamped" to libspice's stream marshaller and "invalid" to spice-gtk),
        so the first millisecond and each wrap give 1 instead."""
        return self.now() or 1

    def init_time(self) -> int:
        """MAIN_INIT's ``multi_media_time``: now minus :data:`MM_TIME_DELTA_MS` (libspice uses the
        constant there, whatever the current latency)."""
        return (self.now() - MM_TIME_DELTA_MS) & MM_TIME_MASK

    def client_time(self) -> int:
        """``now - latency`` (u32): the time MAIN_MULTI_MEDIA_TIME would carry now."""
        with self._lock:
            return (self.now() - self._latency) & MM_TIME_MASK

    # --- latency -------------------------------------------------------------------------------

    @property
    def latency(self) -> int:
        """The latency clients were last told, ms (400 until a stream raises it)."""
        with self._lock:
            return self._latency

    def raise_latency(self, ms: int, reason: str = "") -> bool:
        """Ask for at least ``ms`` of latency (a video stream whose client shows frames late).

        Unowned, the latency rises to ``ms`` if that is more than now, and listeners get the
        :class:`ClockUpdate`; a lower or equal value is ignored. Owned, the request goes to the
        owner unchanged and the latency stays (see the module docstring).

        Args:
            ms: the latency wanted, in ms (u32).
            reason: who asks and why, for the log.

        Returns:
            True if the latency rose or the owner was asked; False if the request was ignored.

        Raises:
            ValueError: ``ms`` is not a u32.
        """
        if not 0 <= ms <= MM_TIME_MASK:
            raise ValueError(f"latency {ms} ms is not a u32")
        with self._lock:
            owner = self._owner
            if owner is not None:
                log.debug("mm-time owned: latency %d ms (%s) passed to the owner", ms, reason)
                owner.on_latency_request(ms, reason)
                return True
            if ms <= self._latency:
                log.debug("mm-time latency %d ms (%s) not above the current %d ms: ignored", ms, reason, self._latency)
                return False
            self._latency = ms
            self._notify(reason)
            return True

    # --- listeners -----------------------------------------------------------------------------

    def add_listener(self, listener: Callable[[ClockUpdate], None]) -> Callable[[], None]:
        """Call ``listener`` with each :class:`ClockUpdate` (on the changing thread, lock held).

        Returns:
            A function that removes the listener.
        """
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def _notify(self, reason: str) -> None:
        update = ClockUpdate(time=(self.now() - self._latency) & MM_TIME_MASK, latency=self._latency, reason=reason)
        for listener in list(self._listeners):
            try:
                listener(update)
            except Exception:
                log.exception("mm-time listener failed")

    # --- ownership -----------------------------------------------------------------------------

    @property
    def owner(self) -> ClockOwner | None:
        """Who holds the clock (None: the main channel keeps clients' time)."""
        with self._lock:
            return self._owner

    def take(self, owner: ClockOwner) -> None:
        """``owner`` drives the clients' clock from now on (libspice ``reds_disable_mm_time``).

        Taking it again by the same owner does nothing.

        Raises:
            ClockBusyError: another owner holds it.
        """
        with self._lock:
            if self._owner is not None and self._owner is not owner:
                raise ClockBusyError("the multimedia clock is already owned")
            self._owner = owner

    def release(self, owner: ClockOwner, reason: str = "released") -> bool:
        """``owner`` hands the clock back (libspice ``reds_enable_mm_time``): the latency goes back
        to :data:`MM_TIME_DELTA_MS` and listeners are told.

        Returns:
            False (and nothing changes) if ``owner`` did not hold the clock.
        """
        with self._lock:
            if self._owner is not owner:
                return False
            self._owner = None
            self._latency = MM_TIME_DELTA_MS
            self._notify(reason)
            return True
