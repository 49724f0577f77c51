"""spice-gtk 0.42 with libcacard's software smartcard against the smartcard channel.

spice-gtk (``src/channel-smartcard.c`` over libcacard) sends ReaderAdd "Spice Software Smartcard"
when the channel comes up and waits for the Error(SUCCESS) that tells it the reader id, then the
card's ATR (the software card is inserted at start), one message in flight at a time. The host
reader (:class:`~spiceserver.channels.smartcard.SmartcardReader`) hears the reader and the ATR; a
SELECT of the CAC applet sent with ``transmit`` is answered by the card (libcacard answered ``61 0D``);
gi_client's ``card_remove`` / ``card_insert`` (``SpiceSmartcardReader.remove_card`` / ``insert_card``)
reach the host as CardRemove and ATR; the client leaving removes the reader.

The same card through a ccid-card-passthru slot whose char device QEMU 7.2's ``usb-ccid`` +
``ccid-card-passthru`` connects to (Debian ``qemu-system-x86``; skipped without it): QEMU
acknowledges in network byte order and spice-gtk moves on.

The NSS database of the software card (three certificates) is made with ``certutil``
(:mod:`tests.support.nssdb`, Debian ``libnss3-tools``).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from spiceserver.channels.chardev import UnixSocketCharDevice
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


# --- QEMU ccid-card-passthru as the device ------------------------------------------------------

QEMU = shutil.which("qemu-system-x86_64")


async def wait_until(pred: Any, what: str, detail: Any = lambda: "", timeout: float = 20.0) -> None:
    async def loop() -> None:
        while not pred():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(loop(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}\n{detail()}") from None


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 (Debian qemu-system-x86) is not installed")
async def test_spicegtk_card_through_qemu_ccid_card_passthru(tmp_path: Path) -> None:
    """spice-gtk's software card -> the smartcard channel -> a Unix socket char device -> QEMU 7.2's
    ``usb-ccid`` + ``ccid-card-passthru`` (network byte order). QEMU acknowledges ReaderAdd, ATR and
    CardRemove itself; spice-gtk sends its next message only after each acknowledgement reached
    it with the slot's reader id, so the ATR and the CardRemove reaching QEMU prove the round trips.
    """
    assert QEMU is not None
    db = make_nss_db(tmp_path / "nss")
    r = await start_server()
    channel = r.server.register_channel(SmartcardChannel)
    dev = UnixSocketCharDevice(tmp_path / "ccid.sock")
    passthru = channel.add_passthru_reader(dev)
    qemu: asyncio.subprocess.Process | None = None
    qemu_out = bytearray()
    try:
        await dev.listening()
        qemu = await asyncio.create_subprocess_exec(
            QEMU, "-machine", "pc,accel=tcg", "-nodefaults", "-display", "none", "-m", "64",
            "-device", "qemu-xhci", "-device", "usb-ccid",
            "-chardev", f"socket,id=sc0,path={tmp_path / 'ccid.sock'}",
            "-device", "ccid-card-passthru,chardev=sc0,debug=2",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert qemu.stdout is not None
        stdout = qemu.stdout

        async def read_qemu() -> None:
            async for line in stdout:
                qemu_out.extend(line)

        reader_task = asyncio.create_task(read_qemu())
        await wait_until(lambda: dev.opened, "QEMU to connect to the char device")
        async with controlled_client(
            "--port", str(r.server.port_of()), "--smartcard-db", str(db), timeout=60
        ) as client:

            def detail() -> str:
                return f"QEMU:\n{qemu_out.decode(errors='replace')[-2000:]}\nclient:\n{client.stderr[-2000:]}"

            await wait_until(lambda: passthru.atr is not None, "an ATR from spice-gtk", detail)
            assert passthru.name == "Spice Software Smartcard"
            await wait_until(lambda: b"VSC_ATR" in qemu_out, "QEMU to take the ATR", detail)
            ev = await client.action({"op": "card_remove"})
            assert ev.get("ok") is True, ev
            await wait_until(lambda: b"VSC_CardRemove" in qemu_out, "QEMU to see the card removed", detail)
            assert passthru.atr is None
            atrs = qemu_out.count(b"VSC_ATR")
            ev = await client.action({"op": "card_insert"})
            assert ev.get("ok") is True, ev
            await wait_until(
                lambda: qemu_out.count(b"VSC_ATR") > atrs and passthru.atr is not None, "the card again", detail
            )
        assert client.proc.returncode == 0, client.stderr[-3000:]
        reader_task.cancel()
    finally:
        if qemu is not None and qemu.returncode is None:
            qemu.kill()
            await qemu.wait()
        await r.server.close()
        await dev.close()
