"""spice-gtk 0.42 with libcacard's software smartcard against the smartcard channel.

spice-gtk (``src/channel-smartcard.c`` over libcacard) sends ReaderAdd "Spice Software Smartcard"
when the channel comes up and waits for the Error(SUCCESS) that tells it the reader id, then the
card's ATR (the software card is inserted at start), one message in flight at a time. The host
reader (:class:`~spiceserver.channels.smartcard.SmartcardReader`) hears the reader and the ATR; a
SELECT of the CAC applet sent with ``transmit`` is answered by the card (libcacard answered ``61 0D``);
gi_client's ``card_remove`` / ``card_insert`` (``SpiceSmartcardReader.remove_card`` / ``insert_card``)
reach the host as CardRemove and ATR; the client leaving removes the reader.

The NSS database of the software card (three certificates) is made with ``certutil``
(:mod:`tests.support.nssdb`, Debian ``libnss3-tools``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from spiceserver.channels.smartcard import SmartcardChannel, SmartcardError
from tests.conftest import start_server
from tests.interop.harness import controlled_client
from tests.support.nssdb import certutil_available, make_nss_db

pytestmark = [
    pytest.mark.interop,
    pytest.mark.usefixtures("gi_client"),
    pytest.mark.skipif(not certutil_available(), reason="certutil (libnss3-tools) is not installed"),
]

#: SELECT the CAC PKI applet (what QEMU's guest side and libspice's tests send first)
SELECT_CAC = bytes.fromhex("00A4040007A0000000790100")


def status_ok(answer: bytes) -> bool:
    """The status word is 90 00 (done) or 61 xx (done, xx bytes to GET RESPONSE)."""
    return len(answer) >= 2 and (answer[-2:] == b"\x90\x00" or answer[-2] == 0x61)


async def test_spicegtk_software_card_reaches_the_host(tmp_path: Path) -> None:
    db = make_nss_db(tmp_path / "nss")
    r = await start_server()
    channel = r.server.register_channel(SmartcardChannel)
    reader = channel.add_reader()
    seen: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    reader.on_reader_added(lambda name: seen.put_nowait(("added", name)))
    reader.on_card_inserted(lambda atr: seen.put_nowait(("inserted", atr)))
    reader.on_card_removed(lambda: seen.put_nowait(("removed",)))
    reader.on_reader_removed(lambda: seen.put_nowait(("reader-removed",)))

    async def next_event(client: Any) -> tuple[Any, ...]:
        try:
            return await asyncio.wait_for(seen.get(), 15)
        except TimeoutError:
            raise AssertionError(f"the host heard nothing more; client stderr:\n{client.stderr[-3000:]}") from None

    try:
        async with controlled_client(
            "--port", str(r.server.port_of()), "--smartcard-db", str(db), timeout=60
        ) as client:
            assert await next_event(client) == ("added", "Spice Software Smartcard")
            kind, atr = await next_event(client)
            assert kind == "inserted" and atr[:1] in (b"\x3b", b"\x3f"), atr.hex()
            assert reader.present and reader.atr == atr

            answer = await reader.transmit(SELECT_CAC, timeout=10)
            assert status_ok(answer), answer.hex()

            ev = await client.action({"op": "card_remove"})
            assert ev.get("ok") is True, ev
            assert await next_event(client) == ("removed",)
            assert not reader.present
            with pytest.raises(SmartcardError):
                await reader.transmit(SELECT_CAC)

            ev = await client.action({"op": "card_insert"})
            assert ev.get("ok") is True, ev
            assert await next_event(client) == ("inserted", atr)
            answer = await reader.transmit(SELECT_CAC, timeout=10)
            assert status_ok(answer), answer.hex()
        assert client.proc.returncode == 0, client.stderr[-3000:]
        assert [await next_event(client), await next_event(client)] == [("removed",), ("reader-removed",)]
        assert not reader.attached
    finally:
        await r.server.close()
