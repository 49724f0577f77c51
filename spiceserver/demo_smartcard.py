"""The demo's smartcard reader: print what a client's card does, and ask it one question.

A host-side reader slot (:class:`~spiceserver.channels.smartcard.SmartcardReader`) plays the part
that QEMU's ``usb-ccid`` + ``ccid-card-passthru`` and a guest's PC/SC stack play for libspice
(spice ``server/smartcard.cpp``): when a client (spice-gtk with ``--spice-smartcard``, libcacard's
software card or a real reader) inserts a card, the demo prints the ATR, sends the card a SELECT of
the CAC PKI applet (``00 A4 04 00 07 A0 00 00 00 79 01 00``) and prints the answer and what its
status word means. The card leaving and the reader leaving are printed too.
"""

from __future__ import annotations

from collections.abc import Callable

from .channels.smartcard import SmartcardError, SmartcardReader

__all__ = ["SELECT_CAC_PKI", "attach_demo_reader", "describe_status"]

#: SELECT by AID of the CAC PKI applet (libcacard's software card answers ``61 0D``)
SELECT_CAC_PKI = bytes.fromhex("00A4040007A0000000790100")


def describe_status(answer: bytes) -> str:
    """A short reading of an APDU response's status word (ISO 7816-4)."""
    if len(answer) < 2:
        return "no status word"
    sw1, sw2 = answer[-2], answer[-1]
    if (sw1, sw2) == (0x90, 0x00):
        return "success"
    if sw1 == 0x61:
        return f"success, {sw2} bytes to fetch with GET RESPONSE"
    if (sw1, sw2) == (0x6A, 0x82):
        return "applet not found"
    if (sw1, sw2) == (0x6D, 0x00):
        return "instruction not supported"
    return f"status {sw1:02X} {sw2:02X}"


def attach_demo_reader(
    reader: SmartcardReader, out: Callable[[str], None] = print, timeout: float = 10.0
) -> Callable[[], None]:
    """Print the reader's events through ``out``; on each card inserted, SELECT the CAC applet and
    print the answer. Returns a function that detaches the demo.

    Args:
        reader: a reader slot (``server.add_smartcard_reader()`` or ``channel.add_reader()``).
        out: where the lines go (one string per call).
        timeout: seconds to wait for the card's answer.
    """

    def added(name: str) -> None:
        out(f"smartcard {reader.id}: reader {name!r} added")

    async def inserted(atr: bytes) -> None:
        out(f"smartcard {reader.id}: card inserted, ATR {atr.hex(' ')}")
        try:
            answer = await reader.transmit(SELECT_CAC_PKI, timeout=timeout)
        except (SmartcardError, TimeoutError) as exc:
            out(f"smartcard {reader.id}: SELECT CAC applet failed: {exc or 'no answer'}")
            return
        out(f"smartcard {reader.id}: SELECT CAC applet -> {answer.hex(' ')} ({describe_status(answer)})")

    def removed() -> None:
        out(f"smartcard {reader.id}: card removed")

    def reader_removed() -> None:
        out(f"smartcard {reader.id}: reader removed")

    removers = [
        reader.on_reader_added(added),
        reader.on_card_inserted(inserted),
        reader.on_card_removed(removed),
        reader.on_reader_removed(reader_removed),
    ]

    def detach() -> None:
        for remove in removers:
            remove()

    return detach
