"""D-Bus and QMP plumbing for the QEMU display bridge (no libspice counterpart).

QEMU's ``-display dbus`` (ui/dbus.c, ui/dbus-display1.xml) exports its objects
under ``/org/qemu/Display1`` either on a bus daemon (``addr=``) or on a
peer-to-peer connection handed over QMP (``p2p=yes`` plus ``add_client``
with protocol ``@dbus-display``). Every callback object (a console
``Listener``, the audio listeners, a chardev backend) is reached the same
way: the client makes a ``socketpair()``, passes one end to a ``Register*``
method and serves a *peer-to-peer* D-Bus connection on the other end; QEMU
is the authentication server there (ui/dbus-listener.c
``dbus_display_listener_new``, audio/dbusaudio.c ``dbus_audio_register_listener``,
ui/dbus-chardev.c ``dbus_chr_register``).

Two facts shape this module (verified against QEMU 7.2):

* QEMU blocks its main loop while it authenticates the p2p connection and
  builds a proxy of our object, which sends a ``GetAll`` first. The socket
  must therefore be serviced by a loop that is not blocked (never wait on
  QMP in the same task before the connection is up), and the object must be
  exported in the same loop tick as the connection comes up.
* dbus-fast has no client-side p2p mode (no ``Hello``): :class:`P2PBus`
  authenticates on an already connected socket and skips ``Hello``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from dbus_fast import DBusError, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.aio.message_bus import _MessageWriter
from dbus_fast.aio.message_reader import build_message_reader
from dbus_fast.service import ServiceInterface
from dbus_fast.signature import Variant

__all__ = [
    "DEST",
    "MAX_QMP_EVENTS",
    "MAX_QMP_LINE",
    "ROOT",
    "P2PBus",
    "QmpClient",
    "QmpError",
    "call",
    "connect_bus",
    "connect_p2p",
    "get_property",
    "p2p_listener",
    "daemon_call",
    "wait_for_qemu",
]

log = logging.getLogger(__name__)

DEST = "org.qemu"
"""The well-known name QEMU owns on a bus daemon (ignored on p2p connections)."""
ROOT = "/org/qemu/Display1"
"""The root of QEMU's D-Bus display objects."""

MAX_QMP_LINE = 16 << 20
"""Longest QMP line accepted (bytes)."""
MAX_QMP_EVENTS = 1000
"""Unread QMP events kept."""

_P2P_ADDRESS = "unix:path=/nonexistent-p2p"  # parsed by MessageBus.__init__, never dialled


class P2PBus(MessageBus):
    """A dbus-fast bus on an already connected socket, client role, no ``Hello``.

    Args:
        sock: one end of a connected stream socket; the bus owns it from now on.
        negotiate_unix_fd: ask for fd passing during authentication.
    """

    def __init__(self, sock: socket.socket, negotiate_unix_fd: bool = False) -> None:
        super().__init__(_P2P_ADDRESS, negotiate_unix_fd=negotiate_unix_fd)
        self._p2p_sock = sock

    async def connect(self) -> MessageBus:
        """Authenticate (SASL EXTERNAL) as the client and start reading; no ``Hello``."""
        sock = self._p2p_sock
        sock.setblocking(False)
        self._sock = sock
        self._stream = sock.makefile("rwb")
        self._fd = sock.fileno()
        self._writer = _MessageWriter(self)
        try:
            await self._authenticate()
        except BaseException:
            self._stream.close()
            sock.close()
            self._sock = None
            self._stream = None
            self._fd = None
            self._writer = None
            raise
        self._loop.add_reader(
            self._fd,
            build_message_reader(self._sock, self._process_message, self._finalize, self._negotiate_unix_fd),
        )
        self.unique_name = ":p2p"  # marks the bus connected; a p2p peer has no bus names
        _quiet_disconnect(self)
        self._writer.schedule_write()
        return self


async def connect_bus(address: str) -> MessageBus:
    """Connect to a bus daemon at ``address`` with fd passing negotiated.

    Args:
        address: a D-Bus address, e.g. ``unix:path=/tmp/x/bus``.

    Returns:
        The connected bus (``Hello`` done).
    """
    bus = MessageBus(bus_address=address, negotiate_unix_fd=True)
    await bus.connect()
    _quiet_disconnect(bus)
    return bus


def _quiet_disconnect(bus: MessageBus) -> None:
    # The peer closing the socket (QEMU exiting) ends the bus with EOFError;
    # wait_for_disconnect() reports it to whoever waits, nobody else needs to.
    def retrieve(fut: asyncio.Future[None]) -> None:
        if not fut.cancelled():
            fut.exception()

    bus._disconnect_future.add_done_callback(retrieve)


async def call(
    bus: MessageBus,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
    unix_fds: list[int] | None = None,
    destination: str = DEST,
) -> list[Any]:
    """Call a method of QEMU's (or, with ``destination``, the bus daemon's) and return the reply body.

    Args:
        bus: a bus daemon connection (messages go to ``org.qemu``) or a p2p one.
        path: the object path.
        interface: the interface name.
        member: the method name.
        signature: the D-Bus signature of ``body``.
        body: the arguments.
        unix_fds: fds referenced by ``h`` arguments (as indices into this list).
        destination: the bus name on a bus daemon (ignored on a p2p connection).

    Returns:
        The reply body.

    Raises:
        dbus_fast.DBusError: QEMU answered with an error.
    """
    msg = Message(
        destination=None if isinstance(bus, P2PBus) else destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=body or [],
        unix_fds=unix_fds or [],
    )
    reply = await bus.call(msg)
    assert reply is not None
    if reply.message_type == MessageType.ERROR:
        raise DBusError(reply.error_name or "org.freedesktop.DBus.Error.Failed", str(reply.body[0] if reply.body else ""))
    return list(reply.body)


async def daemon_call(bus: MessageBus, member: str, signature: str = "", body: list[Any] | None = None) -> list[Any]:
    """Call a method of the bus daemon itself (``org.freedesktop.DBus``: ``AddMatch``, ``NameHasOwner``)."""
    daemon = "org.freedesktop.DBus"
    return await call(bus, "/org/freedesktop/DBus", daemon, member, signature, body, destination=daemon)


async def wait_for_qemu(bus: MessageBus, timeout: float = 30.0) -> None:
    """Wait until QEMU owns ``org.qemu`` on a bus daemon (nothing to wait for peer to peer).

    QEMU asks for its name asynchronously once the display is up, after its QMP socket already
    answers, so a client started with QEMU can find the name missing ("not provided by any
    .service files") for a moment. This polls ``NameHasOwner`` every 20 ms.

    Raises:
        TimeoutError: QEMU did not take the name within ``timeout`` seconds.
    """
    if isinstance(bus, P2PBus):
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (await daemon_call(bus, "NameHasOwner", "s", [DEST]))[0]:
        if loop.time() > deadline:
            raise TimeoutError(f"nobody took {DEST} on the bus")
        await asyncio.sleep(0.02)


async def get_property(bus: MessageBus, path: str, interface: str, name: str) -> Any:
    """Read one property with ``org.freedesktop.DBus.Properties.Get``.

    Returns:
        The unwrapped value.
    """
    body = await call(bus, path, "org.freedesktop.DBus.Properties", "Get", "ss", [interface, name])
    value = body[0]
    return value.value if isinstance(value, Variant) else value


async def p2p_listener(
    bus: MessageBus,
    call: Callable[[int], Awaitable[Any]],
    path: str,
    obj: ServiceInterface,
) -> MessageBus:
    """Run the ``Register*(h)`` handshake and serve ``obj`` on the new p2p connection.

    A socketpair is made; ``call(fd)`` must pass ``fd`` to the registering
    method (RegisterListener, RegisterOutListener, RegisterInListener,
    Chardev.Register). Our end is authenticated *while* that call is in
    flight (QEMU may authenticate before it replies) and ``obj`` is exported
    at ``path`` in the same tick as the connection comes up, so QEMU's first
    ``GetAll`` finds it.

    Args:
        bus: the connection to QEMU the registering call travels on (unused here
            except as the owner of ``call``; kept for a uniform signature).
        call: ``async (fd) -> Any``; the fd stays ours and is closed afterwards.
        path: where QEMU looks for the object, e.g. ``/org/qemu/Display1/Listener``.
        obj: the interface to export.

    Returns:
        The p2p bus; ``await bus.wait_for_disconnect()`` ends with the registration,
        ``bus.disconnect()`` ends it.

    Raises:
        Exception: the registering call failed (the socket is closed then).
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    p2p = P2PBus(ours)

    async def up() -> MessageBus:
        await p2p.connect()
        p2p.export(path, obj)  # same tick as connect() returning: before any read
        return p2p

    try:
        return await _connect_during(up(), call(theirs.fileno()), ours)
    finally:
        theirs.close()


class QmpError(Exception):
    """QMP answered ``error``: ``klass`` and ``desc`` from the reply."""

    def __init__(self, klass: str, desc: str) -> None:
        super().__init__(f"{klass}: {desc}")
        self.klass = klass
        self.desc = desc


class QmpClient:
    """A small asyncio QMP client on a unix socket (qapi/qmp-spec).

    Use ``await QmpClient.connect(path)``; then :meth:`execute`, :meth:`send_fd`
    and the :attr:`events` queue. Capabilities are negotiated on connect.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._next_id = 0
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._greeting: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._send_lock = asyncio.Lock()
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(MAX_QMP_EVENTS)
        """QMP events as received (``{"event": ..., "data": ..., "timestamp": ...}``); the oldest
        are dropped past :data:`MAX_QMP_EVENTS` unread ones."""
        self._reader = self._loop.create_task(self._read())

    @classmethod
    async def connect(cls, path: str) -> QmpClient:
        """Connect to QEMU's ``-qmp unix:PATH,server=on,wait=off`` and leave capability negotiation.

        Raises:
            OSError: the socket could not be connected.
            QmpError: QEMU refused ``qmp_capabilities``.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, path)
        except BaseException:
            sock.close()
            raise
        client = cls(sock)
        try:
            await client._greeting
            await client.execute("qmp_capabilities")
        except BaseException:
            client.close()
            raise
        return client

    async def _read(self) -> None:
        buf = b""
        try:
            while True:
                chunk = await self._loop.sock_recv(self._sock, 65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > MAX_QMP_LINE and b"\n" not in buf:
                    log.warning("qmp: line longer than %d bytes; closing", MAX_QMP_LINE)
                    break
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        self._dispatch(line)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            err = ConnectionResetError("QMP connection closed")
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(err)
            self._pending.clear()
            if not self._greeting.done():
                self._greeting.set_exception(err)
            if not self._closed.done():
                self._closed.set_result(None)

    def _dispatch(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            log.warning("qmp: unparsable line %r", line[:200])
            return
        if not isinstance(msg, dict):
            return
        if "QMP" in msg:
            if not self._greeting.done():
                self._greeting.set_result(msg)
        elif "event" in msg:
            if self.events.full():
                self.events.get_nowait()
            self.events.put_nowait(msg)
        elif "id" in msg:
            fut = self._pending.pop(str(msg["id"]), None)
            if fut is None or fut.done():
                return
            if "error" in msg:
                err = msg["error"] if isinstance(msg["error"], dict) else {}
                fut.set_exception(QmpError(str(err.get("class", "")), str(err.get("desc", ""))))
            else:
                fut.set_result(msg.get("return"))

    async def _send(self, cmd: str, args: dict[str, Any] | None, fds: list[int]) -> Any:
        self._next_id += 1
        ident = str(self._next_id)
        req: dict[str, Any] = {"execute": cmd, "id": ident}
        if args:
            req["arguments"] = args
        data = json.dumps(req).encode() + b"\n"
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._pending[ident] = fut
        async with self._send_lock:
            if self._closed.done():
                raise ConnectionResetError("QMP connection closed")
            if fds:
                # One short message with SCM_RIGHTS; QEMU takes the fd from the
                # message that carries the command (monitor/qmp.c).
                socket.send_fds(self._sock, [data], fds)
            else:
                await self._loop.sock_sendall(self._sock, data)
        return await fut

    async def execute(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        """Run a QMP command and return its ``return`` value.

        Raises:
            QmpError: QEMU answered ``error``.
            ConnectionResetError: the connection closed first.
        """
        return await self._send(cmd, args, [])

    async def send_fd(self, name: str, fd: int) -> None:
        """Hand ``fd`` to QEMU as ``name`` (``getfd``); the fd stays ours to close."""
        await self._send("getfd", {"fdname": name}, [fd])

    async def wait_closed(self) -> None:
        """Wait until QEMU closes the QMP connection (e.g. it exited)."""
        await asyncio.shield(self._closed)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._reader.cancel()
        self._sock.close()


async def connect_p2p(qmp: QmpClient, fdname: str = "dbus-display-p2p") -> MessageBus:
    """Open a p2p D-Bus connection to QEMU's ``-display dbus,p2p=yes`` through QMP.

    QMP ``getfd`` passes one end of a socketpair and ``add_client`` with
    protocol ``@dbus-display`` hands it to the display (qapi/misc.json,
    ui/dbus.c ``dbus_display_add_client``); we authenticate on the other end
    concurrently, with fd passing negotiated.

    Returns:
        The p2p bus with the same objects under ``/org/qemu/Display1``.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    p2p = P2PBus(ours, negotiate_unix_fd=True)
    try:
        await qmp.send_fd(fdname, theirs.fileno())
    finally:
        theirs.close()
    return await _connect_during(p2p.connect(), qmp.execute("add_client", {"protocol": "@dbus-display", "fdname": fdname}), ours)


async def _connect_during(connect: Awaitable[MessageBus], handshake: Awaitable[Any], sock: socket.socket) -> MessageBus:
    """Authenticate a p2p connection (``connect``) while QEMU is being told of its other end
    (``handshake``: QEMU authenticates before it answers); if the handshake fails, stop connecting
    and close ``sock``."""
    connecting = asyncio.ensure_future(connect)
    try:
        await handshake
    except BaseException:
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        sock.close()
        raise
    return await connecting
