"""Char devices: the byte pipes between the server and the guest's devices (issue 13).

A char device is the guest's end of a virtio-serial port (vdagent, named ports, smartcard,
usbredir), reached here through a listening Unix socket (Xspice's model, what
``spice-vdagentd -s PATH`` connects to), a pty, or a Python device model in the same process.
libspice counterparts: ``SpiceCharDeviceInterface`` in spice ``server/spice.h`` and
``RedCharDevice`` in ``server/char-device.cpp``; the bounds come from ``server/spicevmc.cpp``
(``BUF_SIZE``, ``QUEUED_DATA_LIMIT``).

This module is the face: :class:`CharDevice` and :class:`CharDeviceListener` (the base, in
:mod:`.chardev_base`, whose docstring explains the queues and the order of deliveries), the
adapters :class:`UnixSocketCharDevice`, :class:`SocketCharDevice` (a connected socket) and
:class:`PtyCharDevice` (:mod:`.chardev_adapters`) and
the in-process pair :func:`char_device_pair`.

The pair
--------

``a, b = char_device_pair()``: ``a`` (:class:`PairCharDevice`) is the server-side
:class:`CharDevice`; ``b`` (:class:`DeviceEnd`) is the device model's end, safe from any thread.
``b.write(data)``, ``b.set_open(...)`` and ``b.send_event(n)`` post to ``a``'s event loop, in the
order they were called (calls made before ``a`` is attached wait for the attach). The callbacks
given to ``b.on_data`` and ``b.on_event`` run **on the event loop**: server -> device bytes, in
order, one call per :meth:`CharDevice.write` of the server; a device model that wants them on its
own thread hands them over itself. ``b.on_client(callback)`` hears, on the loop, when a client
connects to the device's channel or leaves (``callback(True)`` / ``callback(False)``). While no ``on_data`` callback is set, the server's writes stay
queued in ``a`` (bounded: the server sees back-pressure). The device model's writes are not
bounded: it is trusted host code; while the server pauses reading they wait in ``a``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from .chardev_adapters import PtyCharDevice, SocketCharDevice, UnixSocketCharDevice
from .chardev_base import READ_CHUNK, WRITE_LIMIT, CharDevice, CharDeviceListener, log

__all__ = [
    "READ_CHUNK",
    "WRITE_LIMIT",
    "CharDevice",
    "CharDeviceListener",
    "DeviceEnd",
    "PairCharDevice",
    "PtyCharDevice",
    "SocketCharDevice",
    "UnixSocketCharDevice",
    "char_device_pair",
]

DataCallback = Callable[[bytes], None]
EventCallback = Callable[[int], None]
ClientCallback = Callable[[bool], None]


class PairCharDevice(CharDevice):
    """The server-side end of :func:`char_device_pair` (event loop, like every CharDevice)."""

    def __init__(self, *, opened: bool = True, write_limit: int = WRITE_LIMIT) -> None:
        super().__init__(write_limit=write_limit)
        self.opened = opened
        self._lock = threading.Lock()
        self._early: list[Callable[[], None]] = []
        self._post_loop: asyncio.AbstractEventLoop | None = None
        self._on_data: DataCallback | None = None
        self._on_event: EventCallback | None = None
        self._on_client: ClientCallback | None = None
        self._sending = False

    def _post(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop (any thread), after everything posted before it."""
        with self._lock:
            loop = self._post_loop
            if loop is None:
                self._early.append(fn)
                return
            try:
                loop.call_soon_threadsafe(fn)
            except RuntimeError:  # the loop is closed: the device is gone
                log.debug("char device pair: loop closed, call dropped")

    def _start_io(self) -> None:
        assert self.loop is not None
        with self._lock:
            self._post_loop = self.loop
            early, self._early = self._early, []
            for fn in early:
                self.loop.call_soon(fn)

    def _kick_write(self) -> None:
        if not self._sending and self._on_data is not None and self.loop is not None:
            self._sending = True
            self.loop.call_soon(self._send)

    def _send(self) -> None:
        self._sending = False
        while not self.closed and self._on_data is not None:
            data = self._peek()
            if data is None:
                break
            self._consume(len(data))
            try:
                self._on_data(data)
            except Exception:
                log.exception("char device pair: on_data callback %r failed", self._on_data)

    def _device_event(self, event: int) -> None:
        callback = self._on_event
        if callback is not None and self.loop is not None:
            self.loop.call_soon(self._run_event, callback, event)
        else:
            log.debug("char device pair: no on_event callback; port event %d dropped", event)

    def _run_event(self, callback: EventCallback, event: int) -> None:
        try:
            callback(event)
        except Exception:
            log.exception("char device pair: on_event callback %r failed", callback)

    def _client_state(self, connected: bool) -> None:
        callback = self._on_client
        if callback is not None and self.loop is not None:
            self.loop.call_soon(self._run_client, callback, connected)

    def _run_client(self, callback: ClientCallback, connected: bool) -> None:
        try:
            callback(connected)
        except Exception:
            log.exception("char device pair: on_client callback %r failed", callback)

    def _set_on_client(self, callback: ClientCallback | None) -> None:
        self._on_client = callback
        if callback is not None and self.client_connected and self.loop is not None:
            self.loop.call_soon(self._run_client, callback, True)

    def _set_on_data(self, callback: DataCallback | None) -> None:
        self._on_data = callback
        if callback is not None and self._out:
            self._kick_write()

    def _set_on_event(self, callback: EventCallback | None) -> None:
        self._on_event = callback

    async def _close_io(self) -> None:
        self._on_data = None
        self._on_event = None
        self._on_client = None


class DeviceEnd:
    """The device model's end of :func:`char_device_pair`; every method is safe from any thread.

    Callbacks run on the server's event loop (see the module docstring).
    """

    def __init__(self, device: PairCharDevice) -> None:
        self._device = device

    @property
    def device(self) -> PairCharDevice:
        """The server-side end."""
        return self._device

    @property
    def opened(self) -> bool:
        """The device end is open, as the event loop last saw it."""
        return self._device.opened

    def write(self, data: bytes) -> None:
        """Send ``data`` to the server (device -> server); it arrives in order on the loop."""
        if data:
            payload = bytes(data)
            self._device._post(lambda: self._device._feed(payload))

    def on_data(self, callback: DataCallback | None) -> None:
        """Call ``callback(bytes)`` on the loop with the server's writes; None stops (the
        server's writes then stay queued, up to the bound)."""
        self._device._post(lambda: self._device._set_on_data(callback))

    def on_event(self, callback: EventCallback | None) -> None:
        """Call ``callback(event)`` on the loop with the server's port events (client
        ``PORT_EVENT``)."""
        self._device._post(lambda: self._device._set_on_event(callback))

    def on_client(self, callback: ClientCallback | None) -> None:
        """Call ``callback(connected)`` on the loop when a client connects to the device's channel
        (True; at once if one is connected already) or leaves (False)."""
        self._device._post(lambda: self._device._set_on_client(callback))

    @property
    def client_connected(self) -> bool:
        """A client is connected to the device's channel, as the event loop last saw it."""
        return self._device.client_connected

    def set_open(self, opened: bool) -> None:
        """Open or close the device end (the guest opened/closed its port): the listener gets
        ``device_opened``; closing drops what the server queued toward it."""
        self._device._post(lambda: self._device._set_opened(opened))

    def send_event(self, event: int) -> None:
        """A port event toward the server (``device_event``)."""
        self._device._post(lambda: self._device._feed_event(event))


def char_device_pair(*, opened: bool = True, write_limit: int = WRITE_LIMIT) -> tuple[PairCharDevice, DeviceEnd]:
    """An in-process char device: the server-side :class:`CharDevice` and the device model's end.

    Args:
        opened: the device end starts open (a device model is there from the start); False
            makes it wait for ``b.set_open(True)``, as a guest port that is not open yet.
        write_limit: the bound of what the server queues toward the device model.
    """
    a = PairCharDevice(opened=opened, write_limit=write_limit)
    return a, DeviceEnd(a)
