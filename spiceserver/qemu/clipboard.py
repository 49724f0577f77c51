"""QEMU's D-Bus clipboard bridged to the host-answered SPICE clipboard.

QEMU side (QEMU ``ui/dbus-display1.xml`` ``org.qemu.Display1.Clipboard``, ``ui/dbus-clipboard.c``):
both peers serve ``/org/qemu/Display1/Clipboard`` with ``Register()``, ``Unregister()``,
``Grab(u selection, u serial, as mimes)``, ``Release(u selection)`` and
``Request(u selection, as mimes) -> (s reply_mime, ay data)``. The client calls QEMU's ``Register``
(one clipboard peer per VM: a second gets "Clipboard peer already registered!"); QEMU then builds a
proxy of **our** object on the caller's bus name and calls our ``Register`` whenever the grab
serials are reset (research gotcha 9: serve the object before registering). Serials: each side
counts its grabs per selection from 0 at registration; QEMU drops a grab whose serial is below the
current one (``qemu_clipboard_check_serial``); we take QEMU's serial as ours and stamp our next
grab one higher. When the guest pastes, QEMU calls our ``Request`` synchronously (its main loop
waits for the client's answer, bounded by ``request_timeout``). QEMU 7.2 knows only
``text/plain;charset=utf-8``; it answers a request with
``org.qemu.Display1.Error.Failed`` "Empty clipboard" when nobody but us owns the selection.

SPICE side: :func:`~spiceserver.channels.host_clipboard.add_clipboard_handler` on
``server.host_agent`` (the clipboard answered by the host while no guest agent is attached):

========================================= ===============================================
the client grabs (``on_grab``)             ``Grab`` on QEMU (the MIME types we can name)
the client releases (``on_release``)       ``Release`` on QEMU
QEMU requests (our ``Request``)            ``HostClipboard.request`` -> the client's data
QEMU grabs (our ``Grab``)                  ``HostClipboard.grab`` toward the client
QEMU releases (our ``Release``)            ``HostClipboard.release``
the client requests (``on_request``)       ``Request`` on QEMU -> its data
========================================= ===============================================

Selections have the same numbers on both sides (0 CLIPBOARD, 1 PRIMARY, 2 SECONDARY). MIME types
<-> ``VD_AGENT_CLIPBOARD_*``: :data:`MIME_TYPES`. Bad calls from QEMU (unknown selection, too
much data) get a D-Bus error and are logged; nothing is raised into the server.
"""

# no ``from __future__ import annotations``: dbus-fast reads the D-Bus methods' annotations at run
# time (see audio.py)
import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any

from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature, DBusUInt32
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method

from ..channels.host_clipboard import ClipboardUnavailable, HostClipboard, add_clipboard_handler
from ..proto.vdagent_messages import ClipboardSelection, ClipboardType
from .bus import ROOT, call

if TYPE_CHECKING:
    from ..server_devices import ServerDevices

__all__ = [
    "CLIPBOARD_IFACE",
    "CLIPBOARD_PATH",
    "MIME_TYPES",
    "QemuClipboard",
    "attach_clipboard",
    "mime_of",
    "mimes_of",
    "type_of",
    "types_of",
]

log = logging.getLogger("spiceserver.qemu")

CLIPBOARD_PATH = f"{ROOT}/Clipboard"
CLIPBOARD_IFACE = "org.qemu.Display1.Clipboard"
ERROR_FAILED = "org.qemu.Display1.Error.Failed"
#: QEMU's text type (``MIME_TEXT_PLAIN_UTF8`` in ``ui/dbus-clipboard.c``)
MIME_TEXT = "text/plain;charset=utf-8"

#: VD_AGENT_CLIPBOARD_* type -> the MIME type we name it by (spice-gtk ``src/spice-gtk-session.c``
#: ``atom2agent``, QEMU's text type); FILE_LIST has no MIME counterpart and is not bridged
MIME_TYPES: dict[int, str] = {
    ClipboardType.UTF8_TEXT: MIME_TEXT,
    ClipboardType.IMAGE_PNG: "image/png",
    ClipboardType.IMAGE_BMP: "image/bmp",
    ClipboardType.IMAGE_TIFF: "image/tiff",
    ClipboardType.IMAGE_JPG: "image/jpeg",
}
#: other spellings taken from a peer
_ALIASES: dict[str, int] = {
    "text/plain;charset=utf8": ClipboardType.UTF8_TEXT,
    "text/plain": ClipboardType.UTF8_TEXT,
    "utf8_string": ClipboardType.UTF8_TEXT,
    "string": ClipboardType.UTF8_TEXT,
    "text": ClipboardType.UTF8_TEXT,
    "image/x-bmp": ClipboardType.IMAGE_BMP,
    "image/x-MS-bmp".lower(): ClipboardType.IMAGE_BMP,
    "image/jpg": ClipboardType.IMAGE_JPG,
}
_BY_MIME: dict[str, int] = {**{m.lower(): t for t, m in MIME_TYPES.items()}, **_ALIASES}
#: the most MIME types taken from one Grab or Request (QEMU sends one)
MAX_MIMES = 64
#: the largest clipboard answered to or taken from QEMU (QEMU's own bound is the D-Bus message's)
MAX_DATA = 64 << 20


def type_of(mime: str) -> int | None:
    """The ``VD_AGENT_CLIPBOARD_*`` type of a MIME type (case and ``charset`` spelling forgiven), or None."""
    key = mime.strip().lower().replace(" ", "").replace('"', "")
    return _BY_MIME.get(key)


def mime_of(type: int) -> str | None:
    """The MIME type of a ``VD_AGENT_CLIPBOARD_*`` type, or None (``NONE``, ``FILE_LIST``, unknown)."""
    return MIME_TYPES.get(int(type))


def types_of(mimes: Iterable[str]) -> tuple[int, ...]:
    """The clipboard types of ``mimes``, in their order, without repeats or unknown ones."""
    out: list[int] = []
    for m in mimes:
        t = type_of(m)
        if t is not None and t not in out:
            out.append(t)
    return tuple(out)


def mimes_of(types: Iterable[int]) -> list[str]:
    """The MIME types of ``types``, in their order, without unknown ones."""
    out: list[str] = []
    for t in types:
        m = mime_of(t)
        if m is not None and m not in out:
            out.append(m)
    return out


def _selection(selection: int) -> int:
    if selection not in tuple(ClipboardSelection):
        raise DBusError(ERROR_FAILED, f"Invalid clipboard selection: {selection}")
    return int(selection)


class QemuClipboard(ServiceInterface):
    """Our ``org.qemu.Display1.Clipboard`` (QEMU calls it) and the calls we make to QEMU's.

    Made by :func:`attach_clipboard`; :meth:`close` ends it. Event loop.

    Attributes:
        serials: the current grab serial per selection (QEMU's or ours, whichever grabbed last).
        registered: how many times QEMU called our ``Register`` (its serial resets).
    """

    def __init__(self, bus: MessageBus, request_timeout: float = 5.0) -> None:
        super().__init__(CLIPBOARD_IFACE)
        self.bus = bus
        self.request_timeout = request_timeout
        self.serials: dict[int, int] = dict.fromkeys(ClipboardSelection, 0)
        self.registered = 0
        self.handle: HostClipboard | None = None
        self._qemu_grabs: dict[int, tuple[int, ...]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._register_event = asyncio.Event()

    # --- QEMU -> us (our object) -----------------------------------------------------------------

    @dbus_method()
    def Register(self) -> None:
        """QEMU reset the grab serials."""
        self.registered += 1
        self.serials = dict.fromkeys(ClipboardSelection, 0)
        self._register_event.set()

    @dbus_method()
    def Unregister(self) -> None:
        """QEMU ends the session (7.2 never calls it)."""
        log.info("qemu clipboard: QEMU unregistered")

    @dbus_method()
    def Grab(self, selection: DBusUInt32, serial: DBusUInt32, mimes: Annotated[list[str], DBusSignature("as")]) -> None:
        """The guest owns ``selection`` with data of ``mimes``."""
        sel = _selection(selection)
        if serial < self.serials[sel]:
            log.debug("qemu clipboard: a stale grab (serial %d < %d) dropped", serial, self.serials[sel])
            return
        self.serials[sel] = serial
        types = types_of(mimes[:MAX_MIMES])
        if self.handle is None:
            return
        if types:
            self._qemu_grabs[sel] = types
            self.handle.grab(sel, types)
        else:
            log.info("qemu clipboard: the guest grabbed with no type we know (%s)", ", ".join(mimes[:8]))
            self._qemu_grabs.pop(sel, None)
            self.handle.release(sel)

    @dbus_method()
    def Release(self, selection: DBusUInt32) -> None:
        """The guest no longer owns ``selection``."""
        sel = _selection(selection)
        self._qemu_grabs.pop(sel, None)
        if self.handle is not None:
            self.handle.release(sel)

    @dbus_method()
    async def Request(
        self, selection: DBusUInt32, mimes: Annotated[list[str], DBusSignature("as")]
    ) -> Annotated[list[Any], DBusSignature("say")]:
        """The guest pastes: the client's data of the first of ``mimes`` it has."""
        sel = _selection(selection)
        if self.handle is None:
            raise DBusError(ERROR_FAILED, "Empty clipboard")
        owned = self.handle.client_grabs.get(sel)
        if not owned:
            raise DBusError(ERROR_FAILED, "Empty clipboard")
        for mime in mimes[:MAX_MIMES]:
            t = type_of(mime)
            if t is not None and t in owned:
                break
        else:
            raise DBusError(ERROR_FAILED, "Unhandled MIME types requested")
        try:
            data = await self.handle.request(sel, t, timeout=self.request_timeout)
        except ClipboardUnavailable as exc:
            raise DBusError(ERROR_FAILED, f"Empty clipboard ({exc})") from None
        except TimeoutError:
            raise DBusError(ERROR_FAILED, "Cancelled clipboard request (the client did not answer)") from None
        if len(data) > MAX_DATA:
            raise DBusError(ERROR_FAILED, f"clipboard too large ({len(data)} bytes)")
        return [mime_of(t) or mime, bytes(data)]

    # --- the client -> QEMU (host clipboard callbacks) -------------------------------------------

    async def on_client_grab(self, selection: int, types: tuple[int, ...]) -> None:
        """The client owns ``selection``: ``Grab`` on QEMU with the next serial."""
        mimes = mimes_of(types)
        if not mimes:
            log.info("qemu clipboard: the client grabbed with no type QEMU can name (%s)", types)
            return
        self._qemu_grabs.pop(selection, None)
        self.serials[selection] = self.serials.get(selection, 0) + 1
        try:
            await call(
                self.bus, CLIPBOARD_PATH, CLIPBOARD_IFACE, "Grab", "uuas", [selection, self.serials[selection], mimes]
            )
        except Exception as exc:
            log.warning("qemu clipboard: Grab on QEMU failed: %s", exc)

    async def on_client_release(self, selection: int) -> None:
        """The client no longer owns ``selection``: ``Release`` on QEMU."""
        try:
            await call(self.bus, CLIPBOARD_PATH, CLIPBOARD_IFACE, "Release", "u", [selection])
        except Exception as exc:
            log.warning("qemu clipboard: Release on QEMU failed: %s", exc)

    async def on_client_request(self, selection: int, type: int) -> bytes | None:
        """The client pastes what the guest grabbed: ``Request`` on QEMU; None when it has nothing."""
        mime = mime_of(type)
        if mime is None:
            return None
        try:
            reply_mime, data = await asyncio.wait_for(
                call(self.bus, CLIPBOARD_PATH, CLIPBOARD_IFACE, "Request", "uas", [selection, [mime]]),
                self.request_timeout,
            )
        except Exception as exc:
            log.info("qemu clipboard: QEMU has no %s for selection %d: %s", mime, selection, exc)
            return None
        if type_of(str(reply_mime)) != type:
            log.warning("qemu clipboard: asked for %s, QEMU answered %r; dropped", mime, reply_mime)
            return None
        if not isinstance(data, bytes | bytearray) or len(data) > MAX_DATA:
            log.warning("qemu clipboard: a malformed or oversized answer dropped")
            return None
        return bytes(data)

    # --- life -------------------------------------------------------------------------------------

    async def wait_registered(self, timeout: float = 10.0) -> None:
        """Wait until QEMU called our ``Register`` (it does after ours)."""
        await asyncio.wait_for(self._register_event.wait(), timeout)

    async def close(self) -> None:
        """``Unregister`` on QEMU, stop hearing the client, unexport the object."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        try:
            await call(self.bus, CLIPBOARD_PATH, CLIPBOARD_IFACE, "Unregister")
        except Exception as exc:
            log.debug("qemu clipboard: Unregister: %s", exc)
        self.bus.unexport(CLIPBOARD_PATH, self)


async def attach_clipboard(server: "ServerDevices", bus: MessageBus, *, request_timeout: float = 5.0) -> QemuClipboard:
    """Serve the clipboard object on ``bus``, register it with QEMU and bridge it to the host
    clipboard of ``server.host_agent`` (see the module). Call it on the server's event loop.

    Args:
        server: the SPICE server.
        bus: the bus connection to QEMU (QEMU calls back the caller's unique name on it).
        request_timeout: how long a paste waits for the other side, in seconds. QEMU asks us
            with a *synchronous* call (``dbus_clipboard_qemu_request``: its main loop, and so the
            VM, waits for our answer, up to D-Bus' 25 s), so this stays short; QEMU itself gives
            the guest's side 5 s.

    Raises:
        dbus_fast.DBusError: QEMU refused (another clipboard peer is registered).
    """
    clip = QemuClipboard(bus, request_timeout)
    bus.export(CLIPBOARD_PATH, clip)
    try:
        await call(bus, CLIPBOARD_PATH, CLIPBOARD_IFACE, "Register")
    except BaseException:
        bus.unexport(CLIPBOARD_PATH, clip)
        raise
    clip.handle = add_clipboard_handler(
        server.host_agent,
        on_grab=clip.on_client_grab,
        on_request=clip.on_client_request,
        on_release=clip.on_client_release,
    )
    return clip
