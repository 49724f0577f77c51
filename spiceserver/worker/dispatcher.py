"""Typed messages between the asyncio loop (reds) and a worker thread, over a socketpair.

Counterpart of spice ``server/dispatcher.cpp`` / ``dispatcher.h``: there a message is a header plus
a payload copied through the socket. Here payloads travel by reference through a thread-safe queue
and the socketpair only carries wake-up bytes, so a 8 MB frame is never copied; the socket is what
lets the worker ``select()`` with a timeout and the asyncio loop ``add_reader()`` on its end.

Each direction has a handler table (``register_handler(MessageType, fn)``) and an optional
universal hook that sees every message (used to record sessions), as libspice's
``register_universal_handler``.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Dispatcher", "Endpoint"]

log = logging.getLogger("spiceserver.worker")


class Endpoint:
    """One side of a dispatcher: ``post`` sends to the peer, ``drain`` handles what arrived."""

    def __init__(self, inbox: queue.SimpleQueue[Any], wake_out: socket.socket, sock_in: socket.socket, name: str) -> None:
        self._inbox = inbox
        self._peer_inbox: queue.SimpleQueue[Any] | None = None
        self._wake_out = wake_out
        self.sock = sock_in  # readable when our inbox has something
        self.name = name
        self._handlers: dict[type, Callable[[Any], None]] = {}
        self._universal: Callable[[Any], None] | None = None
        self._signalled = threading.Event()

    def register_handler(self, msg_type: type, handler: Callable[[Any], None]) -> None:
        self._handlers[msg_type] = handler

    def register_universal_handler(self, handler: Callable[[Any], None] | None) -> None:
        self._universal = handler

    def post(self, msg: Any) -> None:
        """Send ``msg`` to the other side (thread-safe, never blocks)."""
        assert self._peer_inbox is not None
        self._peer_inbox.put(msg)
        try:
            self._wake_out.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the socket buffer is full of wake-ups already: the peer will drain the queue
        except OSError:
            pass  # closed

    def drain(self) -> int:
        """Handle every queued message; returns how many."""
        try:
            while self.sock.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass
        n = 0
        while True:
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                return n
            n += 1
            if self._universal is not None:
                self._universal(msg)
            handler = self._handlers.get(type(msg))
            if handler is None:
                log.error("%s: no handler for %s", self.name, type(msg).__name__)
                continue
            handler(msg)

    def wait(self, timeout: float | None) -> bool:
        """Block until something is posted to us or ``timeout`` passes (worker side)."""
        if not self._inbox.empty():
            return True
        r, _, _ = select.select([self.sock], [], [], timeout)
        return bool(r)


class Dispatcher:
    """A pair of endpoints: ``loop_side`` for reds, ``worker_side`` for the thread."""

    def __init__(self, name: str) -> None:
        a, b = socket.socketpair()
        for s in (a, b):
            s.setblocking(False)
        self._socks = (a, b)
        to_worker: queue.SimpleQueue[Any] = queue.SimpleQueue()
        to_loop: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # a writes wake-ups that b reads, and the other way round
        self.loop_side = Endpoint(to_loop, wake_out=a, sock_in=a, name=f"{name}/loop")
        self.worker_side = Endpoint(to_worker, wake_out=b, sock_in=b, name=f"{name}/worker")
        self.loop_side._peer_inbox = to_worker
        self.worker_side._peer_inbox = to_loop

    def close(self) -> None:
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass
