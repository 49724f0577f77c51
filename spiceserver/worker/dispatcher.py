"""Typed messages between the asyncio loop (reds) and a worker thread, over a socketpair.

Counterpart of spice ``server/dispatcher.cpp`` / ``dispatcher.h``: there a message is a header plus
a payload copied through the socket. Here payloads travel by reference through a thread-safe queue
and the socketpair only carries wake-up bytes, so a 8 MB frame is never copied; the socket is what
lets the worker ``select()`` with a timeout and the asyncio loop ``add_reader()`` on its end.

Each direction has a handler table (``register_handler(MessageType, fn)``) and an optional
universal hook that sees every message, as libspice's ``register_universal_handler``.

A message that needs an answer is a :class:`Request`: it carries a :class:`Reply` that the receiving
side fills with what the handler returned (or raised); the sender may wait on it (libspice's
``dispatcher_send_message`` with ``ack``). A request nobody waits for (an async QXL I/O: it completes
with its cookie instead) is posted all the same.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Dispatcher", "Endpoint", "Reply", "Request"]

log = logging.getLogger("spiceserver.worker")


class Reply:
    """The answer slot of a :class:`Request`: filled once by the handling side, waited on by the sender."""

    __slots__ = ("_done", "error", "result")

    def __init__(self) -> None:
        self._done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def set(self, result: Any) -> None:
        """Answer with ``result`` and wake the waiter."""
        self.result = result
        self._done.set()

    def fail(self, error: BaseException) -> None:
        """Answer with ``error`` (raised by :meth:`wait`) and wake the waiter."""
        self.error = error
        self._done.set()

    @property
    def done(self) -> bool:
        """Whether an answer has been given."""
        return self._done.is_set()

    def wait(self, timeout: float | None) -> Any:
        """The handler's result; raises what it raised, or TimeoutError after ``timeout`` seconds."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"no answer within {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result


@dataclass(frozen=True, slots=True)
class Request:
    """Base of the messages that are answered: the handler's return value goes to ``reply``."""

    reply: Reply = field(default_factory=Reply, kw_only=True, compare=False, repr=False)


class Endpoint:
    """One side of a dispatcher: ``post`` sends to the peer, ``drain`` handles what arrived."""

    def __init__(self, inbox: queue.SimpleQueue[Any], wake_out: socket.socket, sock_in: socket.socket, name: str) -> None:
        self._inbox = inbox
        self._peer_inbox: queue.SimpleQueue[Any] | None = None
        self._wake_out = wake_out
        self.sock = sock_in  # readable when our inbox has something
        self.name = name
        self._handlers: dict[type, Callable[[Any], object]] = {}
        self._universal: Callable[[Any], None] | None = None
        self._signalled = threading.Event()

    def register_handler(self, msg_type: type, handler: Callable[[Any], object]) -> None:
        """Handle ``msg_type`` messages with ``handler`` (its return value answers a Request)."""
        self._handlers[msg_type] = handler

    def register_universal_handler(self, handler: Callable[[Any], None] | None) -> None:
        """Call ``handler`` with every message before its own handler (None removes it)."""
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
            self.handle(msg)

    def handle(self, msg: Any) -> None:
        """Handle one message now, on this thread (``drain`` does it for each queued message; a
        caller already on the receiving thread may do it directly instead of posting)."""
        if self._universal is not None:
            self._universal(msg)
        handler = self._handlers.get(type(msg))
        if handler is None:
            log.error("%s: no handler for %s", self.name, type(msg).__name__)
            if isinstance(msg, Request):
                msg.reply.fail(LookupError(f"{self.name}: no handler for {type(msg).__name__}"))
            return
        if not isinstance(msg, Request):
            handler(msg)
            return
        try:
            result = handler(msg)
        except BaseException as exc:  # the sender gets it when it waits
            msg.reply.fail(exc)
        else:
            msg.reply.set(result)

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
        """Close both wake-up sockets."""
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass
