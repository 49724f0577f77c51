"""The link's RSA work off the event loop, on a small thread pool of its own.

Counterpart of the key generation in spice ``server/reds.cpp`` (``reds_send_link_ack``) and the
decryption in ``reds_handle_ticket``, which libspice runs on its main loop. Here a key takes
milliseconds to make and a hostile ticket several decryptions, so both run on
:data:`LINK_CRYPTO_THREADS` threads that nothing else uses: the event loop keeps serving linked
clients, and other users of asyncio's default pool (a slow ``metrics()`` call, a host's
``to_thread``) cannot hold up new links. Jobs wait in the pool's queue; there is at most one per
connection in the link phase, which :mod:`spiceserver.admission` bounds.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .ticket import LinkKey

__all__ = ["LINK_CRYPTO_THREADS", "run_link_crypto", "new_link_key"]

#: threads for link key generation and ticket decryption (shared by every server of the process)
LINK_CRYPTO_THREADS = 2

T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(LINK_CRYPTO_THREADS, thread_name_prefix="spice-link-crypto")
        return _executor


async def run_link_crypto(fn: Callable[[], T]) -> T:
    """``fn()`` on the link crypto pool; its result (or what it raised)."""
    return await asyncio.get_running_loop().run_in_executor(_pool(), fn)


async def new_link_key() -> LinkKey:
    """A fresh per-link RSA key, made off the event loop."""
    return await run_link_crypto(LinkKey)
