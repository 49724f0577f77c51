"""The smartcard channel's reader slots: the host's API reader and the ccid-card-passthru device.

Counterpart of the per-reader half of spice ``server/smartcard.cpp`` (``RedCharDeviceSmartcard``:
one char device per reader, the reader id is its index, ``smartcard_char_device_notify_reader_add``
/ ``_remove``, the device's replies forwarded with their reader id patched and its VSC_Init
swallowed) and of ``smartcard-channel-client.cpp``. The channel (:mod:`.smartcard`) owns up to ten
slots and routes a client's VSC messages to the slot its reader id names.

Two kinds of slot:

* :class:`SmartcardReader`: the host plays the device. The library acknowledges the client's
  ReaderAdd, ATR, CardRemove and ReaderRemove with Error(SUCCESS) on the device's behalf
  (spice-gtk ``channel-smartcard.c`` keeps one of them in flight and sends the next only after
  that acknowledgement), reports them to the host's callbacks, and :meth:`SmartcardReader.transmit`
  sends APDUs to the client's card.
* :class:`CcidPassthruReader`: a char device that speaks QEMU ``hw/usb/ccid-card-passthru.c``'s
  framing (VSC in network byte order). The device acknowledges; its messages go to the client
  with the slot's reader id, and the client's go to the device.

Threads: the callbacks are registered from any thread and run on the server's event loop; a
callback that returns an awaitable (an ``async def``) runs as a task, so it may await
:meth:`SmartcardReader.transmit` (awaiting it inline would hold up the very message loop that
brings the answer). :meth:`SmartcardReader.transmit` is awaited on the server's event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import ProtocolError, SpiceError
from ..proto.vsc import (
    MAX_PAYLOAD,
    NETWORK,
    VscApdu,
    VscAtr,
    VscCardRemove,
    VscError,
    VscErrorCode,
    VscInit,
    VscMessage,
    VscReader,
    VscReaderAdd,
    VscReaderRemove,
    pack,
)
from .chardev import CharDevice

__all__ = ["CcidPassthruReader", "ReaderSlot", "SmartcardError", "SmartcardReader", "VscSink"]

log = logging.getLogger("spiceserver")

Remove = Callable[[], None]


class SmartcardError(SpiceError):
    """A :meth:`SmartcardReader.transmit` failed: no card, the card, reader or client went away,
    or the client's reader answered with a VSC Error.

    Attributes:
        code: the client's error code (a libcacard ``VReaderStatus``), or None.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class VscSink(Protocol):
    """Where a slot sends VSC messages toward its client (the smartcard channel client)."""

    @property
    def closed(self) -> bool:
        """The client's connection is gone."""
        ...

    def send_vsc(self, msg: VscMessage) -> None:
        """Send ``msg`` to the client as SMARTCARD_DATA (event loop)."""
        ...


class ReaderSlot:
    """One of the channel's reader slots (id = index), taken by a client's reader.

    Attributes:
        id: the reader id (the slot's index in the channel).
        client: the channel client whose reader holds the slot, or None (the slot is free).
    """

    def __init__(self, reader_id: int) -> None:
        self.id = reader_id
        self.client: VscSink | None = None
        self._name: str | None = None
        self._atr: bytes | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def name(self) -> str | None:
        """The client reader's name (``"Spice Software Smartcard"`` ...), None while the slot is free."""
        return self._name

    @property
    def atr(self) -> bytes | None:
        """The card's answer to reset, None without a card."""
        return self._atr

    @property
    def present(self) -> bool:
        """A card is in the client's reader."""
        return self._atr is not None

    @property
    def attached(self) -> bool:
        """A client reader holds the slot."""
        return self.client is not None

    # --- the channel's side (event loop) -------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """The server runs on ``loop`` (a device slot attaches to its device)."""

    def stop(self) -> None:
        """The server is closing."""

    async def reader_added(self, client: VscSink, msg: VscReaderAdd) -> None:
        """The client's ReaderAdd took this slot."""
        raise NotImplementedError

    async def client_message(self, client: VscSink, msg: VscMessage) -> None:
        """ATR, CardRemove, APDU, Error or ReaderRemove from the client that holds the slot."""
        raise NotImplementedError

    def reader_resumed(self, client: VscSink) -> bool:
        """A client speaks for this free slot's id without a ReaderAdd on this link: spice-gtk
        keeps its reader ids when it reconnects (a migration's switch host), and sends the ATR
        straight away. Take the slot silently if this kind of slot can (returns whether it did)."""
        return False

    def client_gone(self) -> None:
        """The client that holds the slot left."""
        raise NotImplementedError

    # --- callbacks ---------------------------------------------------------------------------

    def _fire(self, callbacks: list[Callable[..., Any]], *args: Any) -> None:
        for callback in list(callbacks):
            try:
                result = callback(*args)
            except Exception:
                log.exception("smartcard reader %d: error in the host's callback %r", self.id, callback)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("smartcard reader %d: error in the host's callback", self.id, exc_info=task.exception())


def _register(callbacks: list[Callable[..., Any]], callback: Callable[..., Any]) -> Remove:
    callbacks.append(callback)

    def remove() -> None:
        if callback in callbacks:
            callbacks.remove(callback)

    return remove


class SmartcardReader(ReaderSlot):
    """A reader slot the host serves: the client's card, seen through APDUs.

    Made by :meth:`SmartcardChannel.add_reader <spiceserver.channels.smartcard.SmartcardChannel.add_reader>`.
    The ``on_*`` methods register a callback (from any thread; it runs on the event loop, see the
    module docstring) and return a function that removes it.
    """

    def __init__(self, reader_id: int) -> None:
        super().__init__(reader_id)
        self._added: list[Callable[..., Any]] = []
        self._inserted: list[Callable[..., Any]] = []
        self._removed: list[Callable[..., Any]] = []
        self._reader_removed: list[Callable[..., Any]] = []
        self._lock: asyncio.Lock | None = None
        self._waiter: asyncio.Future[bytes] | None = None
        self._late = 0  # answers still due to transmits that timed out: dropped when they come

    def on_reader_added(self, callback: Callable[[str], Any]) -> Remove:
        """``callback(name)``: a client reader took this slot."""
        return _register(self._added, callback)

    def on_card_inserted(self, callback: Callable[[bytes], Any]) -> Remove:
        """``callback(atr)``: a card was inserted in the client's reader (also a card already in
        when the reader appears)."""
        return _register(self._inserted, callback)

    def on_card_removed(self, callback: Callable[[], Any]) -> Remove:
        """``callback()``: the card was removed (also when its reader or the client goes away)."""
        return _register(self._removed, callback)

    def on_reader_removed(self, callback: Callable[[], Any]) -> Remove:
        """``callback()``: the client's reader went away (removed, or the client left)."""
        return _register(self._reader_removed, callback)

    async def transmit(self, apdu: bytes, timeout: float | None = 10.0) -> bytes:
        """Send ``apdu`` to the client's card and return its response (with the status word).

        One APDU is in flight per reader: concurrent calls wait their turn, in order. Event loop
        only.

        Args:
            apdu: the command APDU (1 to 65536 bytes).
            timeout: seconds to wait for the response (None: no limit).

        Raises:
            ValueError: an empty or oversized APDU.
            SmartcardError: no card or no client reader; the card, reader or client went away
                meanwhile; or the client's reader answered with an error (``code``).
            TimeoutError: no answer in time (a late answer is dropped when it comes).
        """
        if not apdu or len(apdu) > MAX_PAYLOAD:
            raise ValueError(f"an APDU is 1 to {MAX_PAYLOAD} bytes, not {len(apdu)}")
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            client = self.client
            if client is None or client.closed:
                raise SmartcardError(f"smartcard reader {self.id}: no client reader")
            if self._atr is None:
                raise SmartcardError(f"smartcard reader {self.id}: no card")
            waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                client.send_vsc(VscApdu(self.id, bytes(apdu)))
                try:
                    return await asyncio.wait_for(waiter, timeout)
                except TimeoutError:
                    if self.client is client:
                        self._late += 1
                    raise
            finally:
                self._waiter = None

    # --- the channel's side (event loop) -------------------------------------------------------

    def _ack(self, client: VscSink) -> None:
        client.send_vsc(VscError(self.id, VscErrorCode.SUCCESS))

    def _fail(self, reason: str) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(SmartcardError(f"smartcard reader {self.id}: {reason}"))
        self._late = 0

    def _take(self, client: VscSink, name: str) -> None:
        """The slot is ``client``'s reader ``name`` now, with no card yet."""
        self.client = client
        self._name = name
        self._atr = None
        self._late = 0

    async def reader_added(self, client: VscSink, msg: VscReaderAdd) -> None:
        """Take the slot, acknowledge with Error(SUCCESS) carrying the id, tell the host."""
        self._take(client, msg.text)
        self._ack(client)
        self._fire(self._added, self._name)

    def reader_resumed(self, client: VscSink) -> bool:
        """Take the slot for a reader the client added on an earlier connection (no acknowledgement:
        the client sent no ReaderAdd); the host hears it added."""
        self._take(client, f"reader {self.id} (reconnected)")
        self._fire(self._added, self._name)
        return True

    async def client_message(self, client: VscSink, msg: VscMessage) -> None:
        """Acknowledge ATR / CardRemove / ReaderRemove; hand APDU / Error to the waiting transmit."""
        if isinstance(msg, VscAtr):
            self._ack(client)
            if msg.atr != self._atr:  # spice-gtk may send the same ATR twice
                if self._atr is not None:
                    self._card_out("card replaced")
                self._atr = msg.atr
                self._fire(self._inserted, msg.atr)
        elif isinstance(msg, VscCardRemove):
            self._ack(client)
            if self._atr is not None:
                self._card_out("card removed")
        elif isinstance(msg, VscReaderRemove):
            self._ack(client)
            self._reader_out("reader removed")
        elif isinstance(msg, (VscApdu, VscError)):
            self._answer(msg)

    def _answer(self, msg: VscApdu | VscError) -> None:
        if self._late:
            self._late -= 1
            log.debug("smartcard reader %d: late answer to a timed-out transmit dropped", self.id)
            return
        waiter = self._waiter
        if waiter is None or waiter.done():
            log.debug("smartcard reader %d: %s with no transmit waiting; dropped", self.id, type(msg).__name__)
            return
        if isinstance(msg, VscApdu):
            waiter.set_result(msg.data)
        else:
            waiter.set_exception(
                SmartcardError(f"smartcard reader {self.id}: the client's reader answered error {msg.code}", msg.code)
            )

    def _card_out(self, reason: str) -> None:
        self._atr = None
        self._fail(reason)
        self._fire(self._removed)

    def _reader_out(self, reason: str) -> None:
        if self._atr is not None:
            self._card_out(reason)
        self._fail(reason)
        self.client = None
        self._name = None
        self._fire(self._reader_removed)

    def client_gone(self) -> None:
        """The client left: its card and reader are gone."""
        self._reader_out("the client left")


class CcidPassthruReader(ReaderSlot):
    """A reader slot backed by a char device speaking QEMU's ccid-card-passthru framing.

    Made by :meth:`SmartcardChannel.add_passthru_reader
    <spiceserver.channels.smartcard.SmartcardChannel.add_passthru_reader>`. Toward the device:
    ReaderAdd (with this slot's id, no name, as libspice) when a client reader takes the slot and
    ReaderRemove when it goes, and the client's ATR, CardRemove, APDU and Error as they come, all
    in network byte order. From the device: its Init is swallowed; everything else goes to the
    client with this slot's reader id (the device knows only itself). The device acknowledges
    the client's messages itself (QEMU answers ReaderAdd, ATR, CardRemove and ReaderRemove with
    Error(SUCCESS)); while the device is not open the slot acknowledges ReaderAdd and
    ReaderRemove itself, so that the client does not stall, and replays ReaderAdd and the ATR
    when the device opens.

    A device stream that breaks the framing (an announced length over 64 KiB) is logged and its
    bytes ignored until the device is opened again.

    Args:
        reader_id: the slot's id.
        device: the char device (:mod:`spiceserver.channels.chardev`); this slot is its listener.
    """

    def __init__(self, reader_id: int, device: CharDevice) -> None:
        super().__init__(reader_id)
        self.device = device
        self._stream = VscReader(NETWORK)
        self._broken = False
        self._reader_added = False  # the device was sent ReaderAdd and no ReaderRemove since
        self._ack_routes: deque[VscSink | None] = deque()  # who gets the device's next Errors
        self._attached = False

    # --- server hooks ----------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Become the device's listener."""
        if not self._attached:
            self._attached = True
            self.device.attach(self, loop)

    def stop(self) -> None:
        """Stop listening (the device stays the host's to close)."""
        if self._attached:
            self._attached = False
            self.device.detach()

    # --- toward the device -----------------------------------------------------------------------

    def _to_device(self, msg: VscMessage) -> None:
        if not self.device.write(pack(msg, NETWORK)):
            log.warning(
                "smartcard reader %d: the passthru device's queue is full; %s dropped", self.id, type(msg).__name__
            )

    def _add_to_device(self, route: VscSink | None) -> None:
        self._reader_added = True
        self._ack_routes.append(route)
        self._to_device(VscReaderAdd(self.id))

    def _remove_from_device(self, route: VscSink | None) -> bool:
        """ReaderRemove to the device; False if it was never told of the reader (or is closed)."""
        if not self._reader_added or not self.device.opened:
            self._reader_added = False
            return False
        self._reader_added = False
        self._ack_routes.append(route)
        self._to_device(VscReaderRemove(self.id))
        return True

    async def reader_added(self, client: VscSink, msg: VscReaderAdd) -> None:
        """Take the slot; ReaderAdd to the device, which acknowledges (or acknowledge it here)."""
        self.client = client
        self._name = msg.text
        self._atr = None
        if self.device.opened:
            self._add_to_device(client)
        else:
            client.send_vsc(VscError(self.id, VscErrorCode.SUCCESS))

    async def client_message(self, client: VscSink, msg: VscMessage) -> None:
        """The client's message for this reader, to the device."""
        if isinstance(msg, VscReaderRemove):
            self.client = None
            self._name = None
            self._atr = None
            if not self._remove_from_device(client):
                client.send_vsc(VscError(self.id, VscErrorCode.SUCCESS))
            return
        if isinstance(msg, VscAtr):
            self._atr = msg.atr
        elif isinstance(msg, VscCardRemove):
            self._atr = None
        if not self.device.opened and isinstance(msg, (VscAtr, VscCardRemove)):
            client.send_vsc(VscError(self.id, VscErrorCode.SUCCESS))  # nobody else will
            return
        self._to_device(msg)

    def client_gone(self) -> None:
        """The client left: ReaderRemove to the device (its acknowledgement goes nowhere)."""
        self.client = None
        self._name = None
        self._atr = None
        self._remove_from_device(None)

    # --- the device's listener (event loop) ------------------------------------------------------

    def device_data(self, data: bytes) -> None:
        """Device bytes: whole VSC messages to the client."""
        if self._broken:
            return
        try:
            messages = self._stream.feed(data)
        except ProtocolError as exc:
            self._broken = True
            log.warning(
                "smartcard reader %d: bad data from the passthru device, ignored until it reopens: %s",
                self.id,
                exc.reason,
            )
            return
        for msg in messages:
            self._from_device(msg)

    def _from_device(self, msg: VscMessage) -> None:
        if isinstance(msg, VscInit):
            log.debug("smartcard reader %d: passthru device Init (version %#x)", self.id, msg.version)
            return
        patched = dataclasses.replace(msg, reader_id=self.id)
        if isinstance(msg, VscError) and self._ack_routes:
            route = self._ack_routes.popleft()
            if route is not None and not route.closed:
                route.send_vsc(patched)
            return
        client = self.client
        if client is None or client.closed:
            log.debug("smartcard reader %d: %s from the device with no client; dropped", self.id, type(msg).__name__)
            return
        client.send_vsc(patched)

    def device_opened(self, opened: bool) -> None:
        """A new peer (or none): restart the framing; tell a new peer of the client's reader and card."""
        self._stream.reset()
        self._broken = False
        self._ack_routes.clear()
        self._reader_added = False
        if opened and self.client is not None and not self.client.closed:
            self._add_to_device(None)
            if self._atr is not None:
                self._ack_routes.append(None)
                self._to_device(VscAtr(self.id, self._atr))

    def device_event(self, event: int) -> None:
        """Port events mean nothing here."""

    def device_writable(self) -> None:
        """Nothing waits for room (a refused message was dropped and logged)."""
