"""The smartcard channel: a client's card readers, routed to up to ten reader slots.

Counterpart of spice ``server/smartcard.cpp`` (``RedSmartcardChannel``, the reader table
``g_smartcard_readers``, ``SMARTCARD_MAX_READERS``) and ``server/smartcard-channel-client.cpp``
(``SmartCardChannelClient::handle_message``); the client side is spice-gtk
``src/channel-smartcard.c`` over libcacard. Messages are libcacard VSC messages
(:mod:`spiceserver.proto.vsc`) carried in SMARTCARD_DATA, little-endian.

* **One client at a time** (libspice has a single channel client per reader device): a second link
  while one client is connected is closed with no message. No ack window is used (libspice
  ``ack_zero_messages_window``).
* **Reader slots.** The host adds up to :data:`MAX_READERS` slots (reader id = index):
  :meth:`SmartcardChannel.add_reader` (the host answers through an API,
  :class:`~spiceserver.channels.smartcard_reader.SmartcardReader`) or
  :meth:`SmartcardChannel.add_passthru_reader` (a char device in QEMU ccid-card-passthru's
  framing, :class:`~spiceserver.channels.smartcard_reader.CcidPassthruReader`).
* **Client to server.** ReaderAdd (reader id ``0xffffffff``, the name not NUL-terminated) takes
  the first free slot; the slot acknowledges with Error(SUCCESS) carrying the slot's id, from
  which spice-gtk learns it. No free slot: Error(CANNOT_ADD_MORE_READERS) with the undefined id.
  ATR, CardRemove, APDU, Error and ReaderRemove go to the slot their reader id names; an id that is
  not a slot this client's reader holds closes the client (libspice: "received message for non
  existing reader"). Init is ignored, as are Flush, FlushComplete and unknown types (logged).
* **Client leaving.** Its readers are removed: the host's callbacks hear of it, a passthru device
  gets ReaderRemove (libspice ``smartcard_char_device_notify_reader_remove`` on disconnect).

Host API (``channel = server.register_channel(SmartcardChannel)``)::

    reader = channel.add_reader()          # any thread; ConfigError past ten slots
    reader.on_card_inserted(lambda atr: ...)
    answer = await reader.transmit(bytes.fromhex("00A4040007A0000000790100"))  # on the loop
    channel.add_passthru_reader(device)    # a CharDevice toward QEMU ccid-card-passthru
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from ..errors import ConfigError, ProtocolError
from ..proto.channel import ChannelConnection
from ..proto.channel_client import StateTable
from ..proto.enums import ChannelType
from ..proto.messages import smartcard as scm
from ..proto.vsc import (
    HEADER_SIZE,
    LITTLE,
    MAX_PAYLOAD,
    UNDEFINED_READER_ID,
    VscApdu,
    VscAtr,
    VscCardRemove,
    VscError,
    VscErrorCode,
    VscInit,
    VscMessage,
    VscReaderAdd,
    VscReaderRemove,
    decode,
    type_of,
)
from .base import ChannelClient, Link, ServerContext, SingleClientChannel
from .chardev import CharDevice
from .session import Session
from .smartcard_reader import CcidPassthruReader, ReaderSlot, SmartcardError, SmartcardReader

__all__ = [
    "MAX_READERS",
    "CcidPassthruReader",
    "SmartcardChannel",
    "SmartcardChannelClient",
    "SmartcardError",
    "SmartcardReader",
]

log = logging.getLogger("spiceserver")

S = TypeVar("S", bound=ReaderSlot)

#: the most reader slots (libspice ``SMARTCARD_MAX_READERS``)
MAX_READERS = 10

#: the message types a client sends about one of its readers
_PER_READER = (VscAtr, VscCardRemove, VscApdu, VscError, VscReaderRemove)


class SmartcardChannel(SingleClientChannel):
    """The smartcard channel (type SMARTCARD): up to ten reader slots for one client.

    Args:
        ctx: the server services.
        channel_id: the channel id (libspice offers channel 0 only).
    """

    TYPE = ChannelType.SMARTCARD
    #: a SMARTCARD_DATA body: its VSC header and at most 64 KiB of payload
    MAX_MESSAGE_SIZE = HEADER_SIZE + MAX_PAYLOAD

    def __init__(self, ctx: ServerContext, channel_id: int = 0) -> None:
        super().__init__(ctx, channel_id)
        self._slots: list[ReaderSlot] = []
        self._slots_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: the connected client, if any
        self.client: SmartcardChannelClient | None = None

    # --- the host's API (any thread) --------------------------------------------------------------

    @property
    def readers(self) -> list[ReaderSlot]:
        """The slots, by reader id."""
        with self._slots_lock:
            return list(self._slots)

    def add_reader(self) -> SmartcardReader:
        """A reader slot the host serves (:class:`SmartcardReader`); any thread.

        Raises:
            ConfigError: the channel has :data:`MAX_READERS` slots already.
        """
        return self._add(SmartcardReader)

    def add_passthru_reader(self, device: CharDevice) -> CcidPassthruReader:
        """A reader slot backed by ``device``, a char device speaking QEMU ccid-card-passthru's
        framing (:class:`CcidPassthruReader`); any thread. The slot listens to the device from
        the server's start (or now, if it runs) to its close; the host closes the device.

        Raises:
            ConfigError: the channel has :data:`MAX_READERS` slots already.
        """
        return self._add(lambda reader_id: CcidPassthruReader(reader_id, device))

    def _add(self, make: Callable[[int], S]) -> S:
        with self._slots_lock:
            if len(self._slots) >= MAX_READERS:
                raise ConfigError(f"the smartcard channel has {MAX_READERS} readers already")
            slot = make(len(self._slots))
            self._slots.append(slot)
        loop = self._loop
        if loop is not None:
            self.ctx.gate.run(lambda: slot.start(loop))
        return slot

    # --- server hooks ---------------------------------------------------------------------------

    def on_loop_start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the slots (passthru devices get their listener)."""
        self._loop = loop
        for slot in self.readers:
            slot.start(loop)

    async def close(self) -> None:
        """The server is closing: the slots stop listening to their devices."""
        for slot in self.readers:
            slot.stop()

    def create_client(self, conn: ChannelConnection, link: Link, session: Session) -> SmartcardChannelClient:
        """The channel's client."""
        return SmartcardChannelClient(self, conn, link, session)

    def client_gone(self, cc: ChannelClient) -> None:
        """The client left: its readers are removed."""
        if not isinstance(cc, SmartcardChannelClient):
            return
        for slot in self.readers:
            if slot.client is cc:
                try:
                    slot.client_gone()
                except Exception:
                    log.exception("smartcard reader %d: error removing the client's reader", slot.id)
        if cc is self.client:
            self.client = None

    # --- routing (event loop) ---------------------------------------------------------------------

    def free_slot(self) -> ReaderSlot | None:
        """The first slot no client reader holds (libspice ``smartcard_readers_get_unattached``)."""
        for slot in self.readers:
            if slot.client is None:
                return slot
        return None

    def resumable_slot(self, reader_id: int) -> ReaderSlot | None:
        """The free slot ``reader_id`` names, if any (see :meth:`ReaderSlot.reader_resumed`)."""
        slots = self.readers
        if 0 <= reader_id < len(slots) and slots[reader_id].client is None:
            return slots[reader_id]
        return None

    def slot_of(self, cc: SmartcardChannelClient, reader_id: int) -> ReaderSlot | None:
        """The slot ``reader_id`` names if ``cc``'s reader holds it."""
        slots = self.readers
        if 0 <= reader_id < len(slots) and slots[reader_id].client is cc:
            return slots[reader_id]
        return None


class SmartcardChannelClient(ChannelClient):
    """The smartcard channel's client: SMARTCARD_DATA both ways, VSC inside."""

    def __init__(self, channel: SmartcardChannel, conn: ChannelConnection, link: Link, session: Session) -> None:
        super().__init__(conn, link, session)  # no ack window (ack_zero_messages_window)
        self.channel = channel
        self.tables = {None: StateTable({scm.ClientSmartcardData: self._on_data})}
        channel.client = self

    def send_vsc(self, msg: VscMessage) -> None:
        """Send ``msg`` as SMARTCARD_DATA (little-endian; event loop)."""
        self.push(scm.SmartcardData(type=type_of(msg), reader_id=msg.reader_id, data=msg.payload(LITTLE)))

    async def _on_data(self, data: scm.ClientSmartcardData, now: float) -> None:
        msg = decode(data.type, data.reader_id, data.data, LITTLE)
        channel = self.channel
        if isinstance(msg, VscReaderAdd):
            slot = channel.free_slot()
            if slot is None:
                self.log.warning("smartcard reader %r refused: all %d slots are taken", msg.text, len(channel.readers))
                self.send_vsc(VscError(UNDEFINED_READER_ID, VscErrorCode.CANNOT_ADD_MORE_READERS))
                return
            self.log.info("smartcard reader %r added as reader %d", msg.text, slot.id)
            await slot.reader_added(self, msg)
        elif isinstance(msg, _PER_READER):
            slot = channel.slot_of(self, msg.reader_id)
            if slot is None and (free := channel.resumable_slot(msg.reader_id)) is not None and free.reader_resumed(self):
                self.log.info("smartcard reader %d resumed: the client added it on an earlier connection", free.id)
                slot = free
            if slot is None:
                raise ProtocolError(
                    f"VSC {type(msg).__name__[3:]} for reader {msg.reader_id:#x}, which this client did not add"
                )
            if isinstance(msg, VscReaderRemove):
                self.log.info("smartcard reader %d removed", slot.id)
            await slot.client_message(self, msg)
        elif isinstance(msg, VscInit):
            self.log.debug("VSC Init from the client ignored")
        else:
            self.log.warning("unexpected VSC message type %d on the smartcard channel; ignored", type_of(msg))
