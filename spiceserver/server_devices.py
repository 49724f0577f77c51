"""What the host plugs into the server: input devices, char devices, sound, displays, mouse mode.

The device half of spice's public ``spice_server_add_interface`` and ``spice_server_*`` calls
(``server/reds.cpp``): :class:`ServerDevices` is the base of
:class:`~spiceserver.reds.SpiceServer`, which adds the listeners, the link and the clients. Each
method is a one-line delegation to the channel object that owns that state (inputs: the devices
and lock keys; main: mouse mode and agent; displays: their workers). Which methods may be called
from which thread is listed in ``docs/embedding.md``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import IO, Any, TypeVar

import numpy as np

from .channels.base import Channel, ServerContext
from .channels.chardev import CharDevice
from .channels.display import Display, Displays, FramebufferDisplay, QXLDevice, QXLDeviceConfig
from .channels.guest_agent import GuestAgent
from .channels.host_agent import HostAgent
from .channels.inputs import InputsChannel
from .channels.main import MainChannel
from .channels.playback import PlaybackChannel
from .channels.port import PortChannel, WebDavChannel
from .channels.record import RecordChannel, RecordEvent
from .channels.smartcard import CcidPassthruReader, SmartcardChannel, SmartcardReader
from .channels.usb_pyusb import UsbRedirBackend
from .channels.usbredir import UsbRedirChannel, UsbRedirection, UsbRedirPassthroughChannel
from .errors import ConfigError
from .interfaces import Keyboard, Mouse, Tablet
from .proto.enums import ChannelType

__all__ = ["ServerDevices"]

ChannelT = TypeVar("ChannelT", bound=Channel)


class ServerDevices:
    """The devices and channels of a server (the base of :class:`~spiceserver.reds.SpiceServer`).

    Args:
        ctx: the server services.
    """

    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx
        self._inputs = InputsChannel(ctx)
        self._main = MainChannel(ctx, self._inputs)
        self._displays = Displays(ctx)
        self._smartcard: SmartcardChannel | None = None
        self._lock = threading.Lock()  # the channels made on first use (smartcard), usbredir ids
        self._usb = UsbRedirection()
        self._usb_backend: UsbRedirBackend | None = None
        ctx.registry.subscribe(self._channel_added)
        ctx.registry.add(self._main)
        ctx.registry.add(self._inputs)

    # --- devices and channels (any thread unless noted) -----------------------------------------

    def add_keyboard(self, keyboard: Keyboard) -> None:
        """Send key events to ``keyboard``; its ``get_leds()`` is the initial lock state."""
        self._ctx.gate.run(lambda: self._inputs.set_keyboard(keyboard))

    def add_mouse(self, mouse: Mouse) -> None:
        """Send relative motion (server mouse mode) to ``mouse``."""
        self._inputs.mouse = mouse

    def add_tablet(self, tablet: Tablet) -> None:
        """Send absolute positions to ``tablet``; client mouse mode becomes possible."""
        self._ctx.gate.run(lambda: self._inputs.set_tablet(tablet))

    def remove_tablet(self) -> None:
        """Drop the tablet; clients in client mouse mode are switched to server mode."""
        self._ctx.gate.run(lambda: self._inputs.set_tablet(None))

    @property
    def kbd_modifiers(self) -> int:
        """The guest's lock state as the server tracks it (KeyboardModifiers flags)."""
        return self._inputs.kbd_modifiers

    def kbd_leds(self, leds: int) -> None:
        """The guest changed its keyboard LEDs: tell every client (SPICE_MSG_INPUTS_KEY_MODIFIERS)."""
        self._ctx.gate.run(lambda: self._inputs.set_leds(leds))

    def register_channel(self, channel_class: Callable[..., ChannelT], *args: Any, **kwargs: Any) -> ChannelT:
        """Build ``channel_class(context, *args, **kwargs)`` (a :class:`~spiceserver.channels.base.Channel`)
        and offer it to clients (any thread; sessions get a CHANNELS_LIST). ConfigError if offered already."""
        channel = channel_class(self._ctx, *args, **kwargs)
        self._ctx.registry.add(channel)
        return channel

    def channel_ids(self) -> list[tuple[int, int]]:
        """Every channel offered but main, as (type, id)."""
        return self._ctx.registry.ids()

    def display_count(self) -> int:
        """How many display channels are offered."""
        return self._ctx.registry.count(ChannelType.DISPLAY)

    def _channel_added(self, channel: Channel) -> None:
        if self._ctx.gate.loop is not None:
            channel.on_loop_start(self._ctx.gate.loop)

    @property
    def host_agent(self) -> HostAgent:
        """The agent the server answers itself without a guest agent (``channels.host_clipboard``, ``host_monitors``)."""
        return self._ctx.host_agent

    def add_agent(self, device: CharDevice) -> GuestAgent:
        """The guest agent (vdagent) on a char device, attached while it is open (:class:`GuestAgent`)."""
        return self._main.add_guest_agent(device)

    def add_port(self, name: str, device: CharDevice, channel_id: int | None = None) -> PortChannel:
        """A named port channel (``org.spice-space.*`` or any name) on a char device (:class:`PortChannel`)."""
        return self.register_channel(PortChannel, name, device, self._ctx.registry.count(ChannelType.PORT) if channel_id is None else channel_id)

    def add_webdav(self, device: CharDevice) -> WebDavChannel:
        """The WebDAV channel (the client's shared folder; :mod:`~spiceserver.channels.webdav_mux` reads it)."""
        return self.register_channel(WebDavChannel, device)

    # --- smartcard (any thread) -------------------------------------------------------------------

    def add_smartcard_reader(self) -> SmartcardReader:
        """A card reader slot the host answers through an API: the client's reader, its card's ATR,
        APDUs (:class:`~spiceserver.channels.smartcard_reader.SmartcardReader`); up to ten slots."""
        return self._smartcard_channel().add_reader()

    def add_smartcard_passthru(self, device: CharDevice) -> CcidPassthruReader:
        """A card reader slot on a char device speaking QEMU ccid-card-passthru's framing."""
        return self._smartcard_channel().add_passthru_reader(device)

    def _smartcard_channel(self) -> SmartcardChannel:
        with self._lock:
            if self._smartcard is None:
                self._smartcard = self.register_channel(SmartcardChannel)
            return self._smartcard

    # --- USB redirection (any thread) ------------------------------------------------------------

    @property
    def usb(self) -> UsbRedirection:
        """The redirected USB devices of every parsed usbredir channel: ``on_attach`` / ``on_detach``,
        ``devices``, ``set_filter`` (:class:`~spiceserver.channels.usbredir.UsbRedirection`)."""
        return self._usb

    def add_usbredir(self, count: int = 1, filter: str | None = None, lz4: bool = True) -> UsbRedirection:
        """Offer ``count`` more usbredir channels where the server itself is the usb-guest (each
        carries one client device; QEMU offers 2 to 4), optionally setting the usbredirfilter rules
        (ValueError if malformed); ``lz4=False`` offers no LZ4 compression. Returns :attr:`usb`."""
        if filter is not None:
            self._usb.set_filter(filter)
        with self._lock:
            for _ in range(count):
                self.register_channel(UsbRedirChannel, self._usb, self._ctx.registry.count(ChannelType.USBREDIR), lz4=lz4)
        return self._usb

    def add_usbredir_passthrough(self, device: CharDevice, channel_id: int | None = None) -> UsbRedirPassthroughChannel:
        """A usbredir channel passed through unparsed to a char device (QEMU's usb-redir parses it)."""
        with self._lock:
            cid = self._ctx.registry.count(ChannelType.USBREDIR) if channel_id is None else channel_id
            return self.register_channel(UsbRedirPassthroughChannel, device, cid)

    def usb_backend(self) -> UsbRedirBackend:
        """A pyusb backend over the redirected devices: ``usb.core.find(backend=server.usb_backend())``
        from a thread other than the event loop's (pyusb blocks; on the loop it raises RuntimeError)."""
        with self._lock:
            if self._usb_backend is None:
                self._usb_backend = self._usb.pyusb_backend()
            return self._usb_backend

    # --- sound (any thread) ---------------------------------------------------------------------

    def add_playback(self, channel_id: int = 0) -> PlaybackChannel:
        """The guest's speakers: a PLAYBACK channel to start, write PCM to, stop (:class:`PlaybackChannel`)."""
        return self.register_channel(PlaybackChannel, channel_id)

    def add_record(self, on_data: Callable[[bytes], object], on_event: Callable[[RecordEvent], object] | None = None, channel_id: int = 0) -> RecordChannel:
        """The client's microphone: a RECORD channel whose decoded PCM goes to ``on_data`` (:class:`RecordChannel`)."""
        return self.register_channel(RecordChannel, on_data, on_event, channel_id)

    # --- displays (any thread) ------------------------------------------------------------------

    def add_framebuffer_display(self, width: int, height: int) -> FramebufferDisplay:
        """A display fed with host frames (no QXL guest driver needed); see :class:`FramebufferDisplay`."""
        return self._displays.add_framebuffer(width, height)

    def add_qxl_device(self, config: QXLDeviceConfig | None = None, *, irq: Callable[[bool], None] | None = None, ram: Any = None, vram: Any = None, rom: Any = None) -> QXLDevice:  # fmt: skip
        """An emulated QXL device over host memory (allocated if not given): the host forwards the guest's
        port writes to ``device.io_write(port, value)``; ``irq(level)`` raises the guest interrupt."""
        return self._displays.add_qxl(config, irq, ram, vram, rom)

    def _display(self, display_id: int) -> Display:
        if not 0 <= display_id < len(self._displays):
            raise ConfigError(f"no display {display_id}")
        return self._displays[display_id]

    def display_snapshot(self, display_id: int = 0) -> np.ndarray:
        """A copy of the server's picture of a display's primary surface ((h, w) uint32 0x00RRGGBB)."""
        return self._display(display_id).snapshot()

    def screendump(self, path: str | os.PathLike[str] | IO[bytes], display_id: int = 0) -> None:
        """Write a display's current picture as PNG (QEMU ``screendump``)."""
        self._display(display_id).screendump(path)

    def start_recording(self, path: str | os.PathLike[str], display_id: int = 0) -> None:
        """Record a display to ``path`` (``.gz``: compressed) for ``python -m spiceserver replay``; OSError if it can't."""
        self._display(display_id).start_recording(path)

    def stop_recording(self, display_id: int = 0) -> int:
        """Stop recording a display (the file is complete); returns the number of records, 0 if none."""
        return self._display(display_id).stop_recording()

    def wait_idle(self, display_id: int = 0, timeout: float = 5.0) -> None:
        """Return once the display's worker has handled every command queued so far."""
        self._display(display_id).wait_idle(timeout)

    def display_stats(self, display_id: int = 0) -> dict[str, Any]:
        """Live counters of a display: drawables, hidden, pruned, and per client what was sent how."""
        return self._display(display_id).stats()

    # --- mouse mode and agent (any thread) ------------------------------------------------------

    @property
    def mouse_mode(self) -> int:
        """The current mouse mode (MouseMode.SERVER or CLIENT)."""
        return int(self._main.mouse_mode)

    @property
    def client_mouse_allowed(self) -> bool:
        """Client mouse mode is possible: agent mouse, or a tablet with a single display."""
        return self._main.client_mouse_allowed

    @property
    def supported_mouse_modes(self) -> int:
        """The mouse modes clients may choose (a MouseMode mask)."""
        return self._main.supported_mouse_modes

    def request_mouse_mode(self, mode: int) -> None:
        """Switch the mouse mode (as a client's MOUSE_MODE_REQUEST does); ignored when not possible."""
        self._ctx.gate.run(lambda: self._main.request_mouse_mode(mode))

    @property
    def agent_attached(self) -> bool:
        """A guest agent is present (as told by :meth:`set_agent_attached`)."""
        return self._main.agent_attached

    def set_agent_attached(self, attached: bool) -> None:
        """A guest agent appeared on or left its char device: clients are told (AGENT_CONNECTED[_TOKENS]
        / AGENT_DISCONNECTED) and the mouse modes re-evaluated (agent mouse)."""
        self._ctx.gate.run(lambda: self._main.set_agent_attached(attached))
