"""Demo helper: describe the USB devices SPICE clients redirect, read through the pyusb backend.

What a host does with a redirected device, in the demo's words: every attached device's
descriptors (and its manufacturer / product / serial strings, when it has them) read with pyusb
over :class:`~spiceserver.channels.usb_pyusb.UsbRedirBackend`, in a worker thread because pyusb
blocks (its transfers run on the server's loop; see :mod:`spiceserver.channels.usb_pyusb`). It is
``lsusb -v`` in a few lines; QEMU's counterpart is the guest OS enumerating the device behind
``hw/usb/redirect.c``::

    hub = UsbRedirection()                              # the demo's usbredir channels share it
    stop = watch_usb(hub)                               # prints each device as it comes and goes
    texts = await print_attached(hub)                   # or: the devices attached now
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import usb.core  # type: ignore[import-untyped]
import usb.util  # type: ignore[import-untyped]

from .channels.usb_device import RedirectedUsbDevice
from .channels.usb_pyusb import DeviceSource, UsbRedirBackend

__all__ = ["describe_device", "describe_redirected", "print_attached", "watch_usb", "CLASS_NAMES", "TIMEOUT_MS"]

log = logging.getLogger("spiceserver")

#: USB class codes (usb.org "Defined Class Codes") the demo names
CLASS_NAMES = {
    0x00: "per interface",
    0x01: "Audio",
    0x02: "Communications",
    0x03: "HID",
    0x05: "Physical",
    0x06: "Image",
    0x07: "Printer",
    0x08: "Mass Storage",
    0x09: "Hub",
    0x0A: "CDC Data",
    0x0B: "Smart Card",
    0x0E: "Video",
    0x10: "Audio/Video",
    0xE0: "Wireless",
    0xEF: "Miscellaneous",
    0xFE: "Application Specific",
    0xFF: "Vendor Specific",
}
#: milliseconds for each string descriptor request (the device answers across the network)
TIMEOUT_MS = 5000
_SPEEDS = {1: "low", 2: "full", 3: "high", 4: "super"}
_TYPES = {0: "control", 1: "isochronous", 2: "bulk", 3: "interrupt"}


def _string(dev: usb.core.Device, index: int) -> str | None:
    """String descriptor ``index`` in the device's first language, or None (none, or it failed)."""
    if not index:
        return None
    try:
        text = usb.util.get_string(dev, index)
    except (usb.core.USBError, ValueError) as exc:  # no language ids, a stall ...
        log.debug("usb demo: string %d: %s", index, exc)
        return None
    return str(text) if text else None


def describe_device(dev: usb.core.Device) -> str:
    """A few lines about ``dev``: ids, strings, speed, then each configuration, interface and endpoint.

    Blocking (string descriptors are control transfers): call it in a worker thread when ``dev``
    is on :class:`~spiceserver.channels.usb_pyusb.UsbRedirBackend`.
    """
    names = [s for s in (_string(dev, dev.iManufacturer), _string(dev, dev.iProduct)) if s]
    serial = _string(dev, dev.iSerialNumber)
    speed = _SPEEDS.get(dev.speed or 0, "unknown")
    head = f"Bus {dev.bus or 0:03d} Device {dev.address or 0:03d}: ID {dev.idVendor:04x}:{dev.idProduct:04x}"
    lines = [f"{head} {' '.join(names) or '(no name)'}".rstrip()]
    lines.append(
        f"  USB {dev.bcdUSB >> 8}.{dev.bcdUSB >> 4 & 0xF}{dev.bcdUSB & 0xF}, {speed} speed, "
        f"device {dev.bcdDevice >> 8}.{dev.bcdDevice & 0xFF:02x}, "
        f"class {dev.bDeviceClass:02x} ({CLASS_NAMES.get(dev.bDeviceClass, '?')})"
        + (f", serial {serial}" if serial else "")
    )
    for cfg in dev:
        name = _string(dev, cfg.iConfiguration)
        lines.append(
            f"  Configuration {cfg.bConfigurationValue}: {cfg.bNumInterfaces} interface(s), "
            f"{cfg.bMaxPower * 2} mA" + (f" ({name})" if name else "")
        )
        for intf in cfg:
            cls = intf.bInterfaceClass
            lines.append(
                f"    Interface {intf.bInterfaceNumber} alt {intf.bAlternateSetting}: class "
                f"{cls:02x}/{intf.bInterfaceSubClass:02x}/{intf.bInterfaceProtocol:02x} ({CLASS_NAMES.get(cls, '?')})"
            )
            for ep in intf:
                addr = ep.bEndpointAddress
                kind = _TYPES[usb.util.endpoint_type(ep.bmAttributes)]
                lines.append(
                    f"      Endpoint {addr:#04x} {'IN' if addr & 0x80 else 'OUT'} {kind}, {ep.wMaxPacketSize} bytes"
                    + (f", interval {ep.bInterval}" if kind in ("interrupt", "isochronous") else "")
                )
    return "\n".join(lines)


def describe_redirected(backend: UsbRedirBackend, device: RedirectedUsbDevice) -> str:
    """:func:`describe_device` of a redirected device (blocking: a worker thread); a failure is described."""
    try:
        dev = backend.pyusb_device(device)
        dev.default_timeout = TIMEOUT_MS
        return describe_device(dev)
    except (usb.core.USBError, ValueError) as exc:
        return f"USB {device.vendor_id:04x}:{device.product_id:04x} on usbredir channel {device.channel_id}: {exc}"


async def print_attached(
    hub: DeviceSource, write: Callable[[str], object] = print, backend: UsbRedirBackend | None = None
) -> list[str]:
    """Describe every device attached now (in a worker thread), ``write`` each text, return them."""
    backend = backend or UsbRedirBackend(hub)
    texts = []
    for device in list(hub.devices):
        text = await asyncio.to_thread(describe_redirected, backend, device)
        write(text)
        texts.append(text)
    return texts


def watch_usb(hub: Any, write: Callable[[str], object] = print) -> Callable[[], None]:
    """On the hub (:class:`~spiceserver.channels.usbredir.UsbRedirection`): ``write`` a description of
    each device as it attaches (read in a worker thread, not holding the hub's callbacks) and a line
    when it leaves. Returns a function that stops watching."""
    backend = UsbRedirBackend(hub)
    tasks: set[asyncio.Task[None]] = set()

    async def describe(device: RedirectedUsbDevice) -> None:
        write(await asyncio.to_thread(describe_redirected, backend, device))

    def attached(device: RedirectedUsbDevice) -> None:
        task = asyncio.get_running_loop().create_task(describe(device))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def detached(device: RedirectedUsbDevice) -> None:
        write(f"USB {device.vendor_id:04x}:{device.product_id:04x} left usbredir channel {device.channel_id}")

    removers = [hub.on_attach(attached), hub.on_detach(detached)]

    def stop() -> None:
        for remove in removers:
            remove()
        for task in list(tasks):
            task.cancel()

    return stop
