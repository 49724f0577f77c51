"""The rest of the VM in one call: QEMU's audio, clipboard and char devices on the SPICE server.

:func:`attach_devices` looks at what QEMU exports under ``/org/qemu/Display1`` (its
``ObjectManager``) and attaches what is there: :func:`~spiceserver.qemu.audio.attach_audio` when
``Audio`` exists (``-audiodev dbus`` with ``audiodev=`` on ``-display dbus``),
:func:`~spiceserver.qemu.clipboard.attach_clipboard` (``Clipboard`` is always exported; QEMU takes
one clipboard peer) and :func:`~spiceserver.qemu.chardev.attach_chardevs` (every ``Chardev_*``).
A part QEMU refuses is logged and left out; the display and input bridge is
:func:`spiceserver.qemu.bridge.attach`.

The clipboard bridge answers the client through the host agent, which stands aside while a guest
agent is attached: a VM with both a ``org.spice-space.vdagent.0`` chardev (the guest's own
spice-vdagent, which then owns the clipboard) and the clipboard bridge uses the guest's agent when
it runs and the bridge otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from .audio import AUDIO_PATH, QemuAudio, attach_audio
from .bus import ROOT, call, wait_for_qemu
from .chardev import QemuChardevs, attach_chardevs
from .clipboard import CLIPBOARD_PATH, QemuClipboard, attach_clipboard

if TYPE_CHECKING:
    from ..server_devices import ServerDevices

__all__ = ["QemuDevices", "attach_devices", "wait_for_qemu"]

log = logging.getLogger("spiceserver.qemu")


@dataclass
class QemuDevices:
    """What :func:`attach_devices` attached (None: absent, refused or not asked for)."""

    audio: QemuAudio | None = None
    clipboard: QemuClipboard | None = None
    chardevs: QemuChardevs | None = None

    async def close(self) -> None:
        """Detach everything (QEMU drops our listeners and chardev clients)."""
        if self.audio is not None:
            self.audio.close()
            self.audio = None
        if self.clipboard is not None:
            await self.clipboard.close()
            self.clipboard = None
        if self.chardevs is not None:
            await self.chardevs.close()
            self.chardevs = None


async def attach_devices(
    server: ServerDevices,
    bus: MessageBus,
    *,
    audio: bool = True,
    record: bool = True,
    clipboard: bool = True,
    chardevs: bool = True,
    chardev_names: Iterable[str] | None = None,
) -> QemuDevices:
    """Attach QEMU's audio, clipboard and chardevs that exist on ``bus`` (see the module).

    Args:
        server: the SPICE server (call on its event loop).
        bus: a connection to QEMU opened with ``negotiate_unix_fd=True`` (bus daemon or p2p).
        audio: bridge the sound card (playback) when QEMU exports ``Audio``.
        record: with ``audio``, also the client's microphone.
        clipboard: bridge the clipboard.
        chardevs: bridge the D-Bus chardevs.
        chardev_names: only these chardev names (None: all).

    Returns:
        The handle; :meth:`QemuDevices.close` detaches.

    Raises:
        TimeoutError: QEMU never appeared on the bus (:func:`wait_for_qemu`, 30 s).
    """
    await wait_for_qemu(bus)
    (objects,) = await call(bus, ROOT, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
    paths = set(objects) if isinstance(objects, dict) else set()
    out = QemuDevices()
    try:
        if audio:
            if AUDIO_PATH in paths:
                try:
                    out.audio = await attach_audio(server, bus, record=record)
                except DBusError as exc:
                    log.warning("qemu audio not bridged: %s", exc)
            else:
                log.info("qemu audio: QEMU exports no %s (add audiodev= to -display dbus)", AUDIO_PATH)
        if clipboard and CLIPBOARD_PATH in paths:
            try:
                out.clipboard = await attach_clipboard(server, bus)
            except DBusError as exc:
                log.warning("qemu clipboard not bridged: %s", exc)
        if chardevs:
            out.chardevs = await attach_chardevs(server, bus, names=chardev_names)
    except BaseException:
        await out.close()
        raise
    return out
