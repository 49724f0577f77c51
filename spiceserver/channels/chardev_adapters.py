"""Char-device adapters over the host's I/O: a listening Unix socket, a connected socket, a pty.

:class:`UnixSocketCharDevice` is the Xspice model (``spiceqxl_vdagent.c`` listens on
``XSPICE_VDAGENT_VIRTIO_PATH``): the device side is whoever connects, as ``spice-vdagentd -s PATH``
does when PATH is a socket (spice-vdagent ``src/vdagentd/virtio-port.c``). :class:`PtyCharDevice`
is a pseudo-terminal whose slave a device program opens. :class:`SocketCharDevice` is one end of an
already connected stream socket (QEMU's D-Bus chardevs: ``Chardev.Register(h)`` takes the other
end, QEMU ``ui/dbus-chardev.c``). They sit on
:class:`~spiceserver.channels.chardev_base.CharDevice` (libspice ``server/char-device.cpp``); use
them through :mod:`spiceserver.channels.chardev`. Event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import tty
from collections.abc import Callable
from typing import Any

from .chardev_base import READ_CHUNK, WRITE_LIMIT, CharDevice, log

__all__ = ["PtyCharDevice", "SocketCharDevice", "UnixSocketCharDevice"]


class _Peer(asyncio.Protocol):
    """One connection to a :class:`UnixSocketCharDevice`."""

    def __init__(self, device: _PeerCharDevice) -> None:
        self.device = device
        self.transport: asyncio.Transport | None = None
        self.write_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        dev = self.device
        if dev._peer is not None or dev.closed:
            log.warning("char device %s: a second peer connected; refused (one at a time)", dev.path)
            transport.abort()
            return
        self.transport = transport
        transport.set_write_buffer_limits(high=READ_CHUNK)
        dev._peer = self
        if not dev._reading:
            transport.pause_reading()
        log.info("char device %s: peer connected", dev.path)
        dev._set_opened(True)
        dev._kick_write()

    def data_received(self, data: bytes) -> None:
        if self.device._peer is self:
            self.device._feed(data)

    def eof_received(self) -> bool:
        return False  # close our side too: the peer is gone

    def connection_lost(self, exc: Exception | None) -> None:
        dev = self.device
        if dev._peer is self:
            dev._peer = None
            log.info("char device %s: peer went away%s", dev.path, f" ({exc})" if exc else "")
            dev._set_opened(False)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.device._peer is self:
            self.device._kick_write()


class _PeerCharDevice(CharDevice):
    """A char device whose device end is one stream connection at a time (:class:`_Peer`)."""

    path: str
    _peer: _Peer | None

    def _set_reading(self, reading: bool) -> None:
        peer = self._peer
        if peer is None or peer.transport is None or peer.transport.is_closing():
            return
        if reading:
            peer.transport.resume_reading()
        else:
            peer.transport.pause_reading()

    def _kick_write(self) -> None:
        peer = self._peer
        if peer is None or peer.transport is None:
            return
        while not peer.write_paused and not peer.transport.is_closing():
            data = self._peek()
            if data is None:
                break
            self._consume(len(data))
            peer.transport.write(data)


class UnixSocketCharDevice(_PeerCharDevice):
    """A char device whose device end connects to a Unix socket the server listens on.

    One peer at a time: :attr:`opened` is True while a peer is connected; a second peer is
    refused (closed at once) while the first stays; when the peer goes away (EOF or error) the
    device is closed (``device_opened(False)``, what was queued toward it dropped) and the next
    peer opens it again. The socket starts listening at :meth:`attach`; await :meth:`listening`
    to know it is there. A socket file left at ``path`` by a previous run (nobody accepts on it) is
    replaced; a socket another process listens on (found by connecting to it once) and any other
    file are errors, never removed. :meth:`close` removes the socket file if it is still ours.

    Args:
        path: the socket path (what ``spice-vdagentd -s`` or ``XSPICE_VDAGENT_VIRTIO_PATH`` names).
        mode: permission bits for the socket file (default: as the umask leaves them).
        write_limit: the bound of what is queued toward the device.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, mode: int | None = None, write_limit: int = WRITE_LIMIT
    ) -> None:
        super().__init__(write_limit=write_limit)
        self.path = os.fspath(path)
        self.mode = mode
        self._peer: _Peer | None = None
        self._server: asyncio.AbstractServer | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._inode: tuple[int, int] | None = None

    async def listening(self) -> None:
        """Wait until the socket listens (after :meth:`attach`).

        Raises:
            RuntimeError: not attached yet.
            OSError: the socket could not be created (FileExistsError: a non-socket file is there).
        """
        if self._listen_task is None:
            raise RuntimeError("attach the char device first")
        await asyncio.shield(self._listen_task)

    def _start_io(self) -> None:
        assert self.loop is not None
        self._listen_task = self.loop.create_task(self._listen())
        self._listen_task.add_done_callback(self._listen_done)

    def _listen_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("char device %s: cannot listen: %s", self.path, task.exception())

    async def _listen(self) -> None:
        assert self.loop is not None
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise FileExistsError(f"{self.path} exists and is not a socket")
            if await _someone_listens(self.path):
                raise OSError(errno.EADDRINUSE, f"{self.path}: another process listens there")
            os.unlink(self.path)  # a socket left by an earlier run
        server = await self.loop.create_unix_server(lambda: _Peer(self), self.path)
        if self.closed:
            server.close()
            return
        self._server = server
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        if self.mode is not None:
            os.chmod(self.path, self.mode)
        log.info("char device listening on %s", self.path)

    async def _close_io(self) -> None:
        if self._listen_task is not None and not self._listen_task.done():
            self._listen_task.cancel()
            with contextlib.suppress(BaseException):
                await self._listen_task
        peer, self._peer = self._peer, None
        if peer is not None and peer.transport is not None:
            peer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._inode is not None:
            try:
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self._inode:
                    os.unlink(self.path)
            except FileNotFoundError:
                pass


class SocketCharDevice(_PeerCharDevice):
    """A char device over one end of a connected stream socket (``socket.socketpair()``).

    The device is open while the socket is connected **and** the device end says it is open
    (:meth:`set_open`, True at the start unless ``opened=False``): QEMU's D-Bus chardev reports
    its front end (the guest's port) through the ``FEOpened`` property. When the peer closes the
    socket the device closes for good (a new socket is a new device). Port events toward the
    device (:meth:`CharDevice.send_event`) go to ``on_event`` (QEMU: ``Chardev.SendBreak``).

    Args:
        sock: a connected ``socket.socket`` (stream); the device owns it from now on. Typed
            ``Any``: this package does no socket I/O of its own (asyncio's transport does).
        opened: the device end starts open.
        on_event: ``on_event(event)`` on the loop for each port event toward the device, or None
            (the event is logged and dropped).
        label: a name for the log.
        write_limit: the bound of what is queued toward the device.
    """

    def __init__(
        self,
        sock: Any,
        *,
        opened: bool = True,
        on_event: Callable[[int], None] | None = None,
        label: str | None = None,
        write_limit: int = WRITE_LIMIT,
    ) -> None:
        super().__init__(write_limit=write_limit)
        self._sock = sock
        self.path = label or f"socket fd {sock.fileno()}"
        self._peer = None
        self._front_open = opened
        self._connected = False
        self._on_event = on_event
        self._connect_task: asyncio.Task[Any] | None = None

    def set_open(self, opened: bool) -> None:
        """The device end opened or closed (event loop)."""
        self._front_open = opened
        self._apply_open()

    def _set_opened(self, opened: bool) -> None:
        # _Peer reports the socket's state here; the device is open when both are
        self._connected = opened
        self._apply_open()

    def _apply_open(self) -> None:
        super()._set_opened(self._connected and self._front_open)
        if self.opened:
            self._kick_write()

    def _start_io(self) -> None:
        assert self.loop is not None
        self._connect_task = self.loop.create_task(
            self.loop.create_unix_connection(lambda: _Peer(self), sock=self._sock)
        )
        self._connect_task.add_done_callback(self._connected_done)

    def _connected_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("char device %s: cannot use the socket: %s", self.path, task.exception())

    def _device_event(self, event: int) -> None:
        if self._on_event is None:
            super()._device_event(event)
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("char device %s: on_event callback failed", self.path)

    async def _close_io(self) -> None:
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
            with contextlib.suppress(BaseException):
                await self._connect_task
        peer, self._peer = self._peer, None
        if peer is not None and peer.transport is not None:
            peer.transport.abort()
        else:
            self._sock.close()


async def _someone_listens(path: str) -> bool:
    """A connection to ``path`` succeeds (that server sees a peer come and go at once)."""
    try:
        _, writer = await asyncio.open_unix_connection(path)
    except OSError:  # refused: a stale socket file
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class PtyCharDevice(CharDevice):
    """A char device over a pseudo-terminal: the device program opens :attr:`path` (the slave).

    The slave is put in raw mode (no echo, no line editing, no CR/LF translation), so bytes pass
    unchanged. A pty has no open signal a server can wait for (the master reads nothing when no
    one has the slave open), so the device is **always open**: :attr:`opened` is True from the
    start and never changes; what the server writes while no program has the slave open waits in
    the terminal's buffer (then in the write queue) for the next one. The server keeps a
    descriptor of the slave itself, so the master never reads EIO between programs.

    Args:
        write_limit: the bound of what is queued toward the device.

    Attributes:
        path: the slave's name (``/dev/pts/N``).
    """

    def __init__(self, *, write_limit: int = WRITE_LIMIT) -> None:
        super().__init__(write_limit=write_limit)
        self._master, self._slave = os.openpty()
        try:
            tty.setraw(self._slave)
            os.set_blocking(self._master, False)
            self.path = os.ttyname(self._slave)
        except BaseException:
            os.close(self._master)
            os.close(self._slave)
            raise
        self.opened = True
        self._writer = False

    def _set_reading(self, reading: bool) -> None:
        assert self.loop is not None
        if reading:
            self.loop.add_reader(self._master, self._on_readable)
        else:
            self.loop.remove_reader(self._master)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("pty char device %s: read failed: %s; reading stops", self.path, exc)
            if self.loop is not None:
                self.loop.remove_reader(self._master)
            return
        self._feed(data)

    def _kick_write(self) -> None:
        if not self._writer:
            self._on_writable()

    def _on_writable(self) -> None:
        while (data := self._peek()) is not None:
            try:
                n = os.write(self._master, data[:READ_CHUNK])
            except BlockingIOError:
                break
            except OSError as exc:
                log.warning("pty char device %s: write failed: %s; queued bytes dropped", self.path, exc)
                self._discard_output()
                break
            self._consume(n)
        want = self._peek() is not None and not self.closed
        if want != self._writer and self.loop is not None:
            self._writer = want
            if want:
                self.loop.add_writer(self._master, self._on_writable)
            else:
                self.loop.remove_writer(self._master)

    async def _close_io(self) -> None:
        if self.loop is not None and self._started:
            self.loop.remove_reader(self._master)
            self.loop.remove_writer(self._master)
        os.close(self._master)
        os.close(self._slave)
