"""A pyusb backend over the USB devices SPICE clients redirect: host code drives them with pyusb.

pyusb (``usb/backend/__init__.py``: ``IBackend``; ``usb/core.py``: ``Device``, ``Configuration``,
``Interface``, ``Endpoint``) reads descriptors through a backend and sends every transfer through
it. :class:`UsbRedirBackend` is such a backend whose devices are the
:class:`~spiceserver.channels.usb_device.RedirectedUsbDevice` objects of a
:class:`~spiceserver.channels.usbredir.UsbRedirection` hub. It plays the role libusb plays for
QEMU's ``hw/usb/redirect.c`` guest (libspice has no such layer: the guest OS drives the device)::

    backend = hub.pyusb_backend()                      # or UsbRedirBackend(hub)
    def talk() -> bytes:                               # in a worker thread, never on the loop
        dev = usb.core.find(idVendor=0x2B23, backend=backend)
        dev.set_configuration()
        dev.write(0x02, cbw)
        return bytes(dev.read(0x81, 2048))
    data = await asyncio.to_thread(talk)

* **Enumeration**: a snapshot of the hub's attached devices (``hub.devices``, read from the calling
  thread). ``bus`` is the usbredir channel id, ``address`` 1 (one device per channel), ``speed``
  libusb's code (usbredir's speed + 1; 0 unknown), no ports. :meth:`UsbRedirBackend.pyusb_device`
  gives the ``usb.core.Device`` of a device an ``on_attach`` callback got, without a search.
* **Descriptors** are parsed from the raw bytes the channel fetched before it announced the device
  (the device descriptor and every full config descriptor), as libusb's ``descriptor.c`` splits
  them: class-specific and other unknown descriptors go to ``extra_descriptors`` of the config,
  interface or endpoint they follow. Malformed bytes (the client sent them) give ``USBError`` EIO.
* **Open, close, claim, release, kernel driver** are no-ops: the client's usbredirhost owns the
  device and its interfaces.
* **Transfers** block the calling thread: the device's coroutine runs on the server's loop through
  :func:`asyncio.run_coroutine_threadsafe` and the thread waits for its result. Called on the loop's
  own thread that would deadlock, so it raises :class:`RuntimeError` at once. pyusb's timeouts are
  milliseconds, 0 meaning none (as libusb); the device cancels a transfer that times out.
* **Errors**: usbredir statuses become ``usb.core.USBError`` with libusb's error code and an errno:
  stall EPIPE, timeout ``USBTimeoutError`` ETIMEDOUT, cancelled EINTR, inval EINVAL, ioerror EIO,
  babble EOVERFLOW, device gone ENODEV.
* **Bulk reads** (``bulk_read``, pyusb's ``read`` on a bulk IN endpoint) are plain bulk_packet
  requests, one per call, unless the host started bulk receiving on that endpoint
  (:meth:`~spiceserver.channels.usb_device.RedirectedUsbDevice.start_bulk_receiving`, on the loop):
  then they are served from the data the client streams (see
  :mod:`~spiceserver.channels.usb_device`), until it is stopped. The backend never starts it itself:
  a streaming endpoint drops data nobody reads, which request-and-answer protocols (mass storage)
  cannot afford. Interrupt reads always use interrupt receiving.
* ``clear_halt`` sends CLEAR_FEATURE(ENDPOINT_HALT) (usbredirhost turns it into libusb_clear_halt);
  ``reset_device`` sends usbredir reset; iso transfers are best effort (see the device).
"""

from __future__ import annotations

import array
import asyncio
import concurrent.futures
import errno
import struct
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import usb.backend  # type: ignore[import-untyped]
import usb.core  # type: ignore[import-untyped]

from ..errors import ProtocolError
from .usb_device import RedirectedUsbDevice, UsbDeviceGone, UsbTransferError

__all__ = [
    "UsbRedirBackend",
    "UsbRedirDeviceId",
    "DeviceSource",
    "DeviceDescriptor",
    "ConfigDescriptor",
    "InterfaceDescriptor",
    "EndpointDescriptor",
    "parse_device_descriptor",
    "parse_config_descriptor",
    "usb_error",
    "MARGIN",
    "REQUEST_TIMEOUT",
]

T = TypeVar("T")

#: seconds a blocked thread waits beyond the transfer's own timeout before it gives up on the loop
MARGIN = 5.0
#: seconds for the requests pyusb gives no timeout (set/get configuration, set interface, clear halt)
REQUEST_TIMEOUT = 10.0

# usbredir status -> (libusb error code, errno, text)
_STATUS: dict[int, tuple[int, int, str]] = {
    1: (-10, errno.EINTR, "cancelled"),
    2: (-2, errno.EINVAL, "invalid request"),
    3: (-1, errno.EIO, "I/O error"),
    4: (-9, errno.EPIPE, "pipe error (stall)"),
    5: (-7, errno.ETIMEDOUT, "operation timed out"),
    6: (-8, errno.EOVERFLOW, "overflow (babble)"),
}
_GONE = (-4, errno.ENODEV, "no such device (it may have been disconnected)")


class DeviceSource(Protocol):
    """What the backend enumerates: the hub (:class:`~spiceserver.channels.usbredir.UsbRedirection`)."""

    @property
    def devices(self) -> list[RedirectedUsbDevice]:
        """The attached devices."""
        ...


def usb_error(exc: UsbTransferError) -> usb.core.USBError:
    """The pyusb error for a failed transfer (see the module docstring)."""
    code, err, text = _GONE if isinstance(exc, UsbDeviceGone) or exc.status < 0 else _STATUS.get(exc.status, _STATUS[3])
    cls = usb.core.USBTimeoutError if err == errno.ETIMEDOUT else usb.core.USBError
    return cls(f"{text} ({exc})", code, err)


# --- descriptors (USB 2.0 chapter 9.6; libusb descriptor.c) -----------------------------------------


@dataclass
class DeviceDescriptor:
    """The standard device descriptor with the attributes ``usb.core.Device`` reads besides."""

    bLength: int
    bDescriptorType: int
    bcdUSB: int
    bDeviceClass: int
    bDeviceSubClass: int
    bDeviceProtocol: int
    bMaxPacketSize0: int
    idVendor: int
    idProduct: int
    bcdDevice: int
    iManufacturer: int
    iProduct: int
    iSerialNumber: int
    bNumConfigurations: int
    bus: int | None = None
    address: int | None = None
    port_number: int | None = None
    port_numbers: tuple[int, ...] | None = None
    speed: int | None = None


@dataclass
class EndpointDescriptor:
    """A standard endpoint descriptor (7 bytes; 9 for audio endpoints with bRefresh, bSynchAddress)."""

    bLength: int
    bDescriptorType: int
    bEndpointAddress: int
    bmAttributes: int
    wMaxPacketSize: int
    bInterval: int
    bRefresh: int = 0
    bSynchAddress: int = 0
    extra_descriptors: bytes = b""


@dataclass
class InterfaceDescriptor:
    """A standard interface descriptor and its endpoints."""

    bLength: int
    bDescriptorType: int
    bInterfaceNumber: int
    bAlternateSetting: int
    bNumEndpoints: int
    bInterfaceClass: int
    bInterfaceSubClass: int
    bInterfaceProtocol: int
    iInterface: int
    extra_descriptors: bytes = b""
    endpoints: list[EndpointDescriptor] = field(default_factory=list)


@dataclass
class ConfigDescriptor:
    """A configuration descriptor; ``interfaces[i][a]``: interface ``i`` (logical index, in order of
    appearance), alternate setting ``a`` (logical index), as libusb groups them."""

    bLength: int
    bDescriptorType: int
    wTotalLength: int
    bNumInterfaces: int
    bConfigurationValue: int
    iConfiguration: int
    bmAttributes: int
    bMaxPower: int
    extra_descriptors: bytes = b""
    interfaces: list[list[InterfaceDescriptor]] = field(default_factory=list)


def parse_device_descriptor(raw: bytes) -> DeviceDescriptor:
    """The 18-byte device descriptor.

    Raises:
        ProtocolError: too short, or not a device descriptor.
    """
    if len(raw) < 18 or raw[0] < 18 or raw[1] != 0x01:
        raise ProtocolError(f"bad device descriptor ({len(raw)} bytes)")
    return DeviceDescriptor(*struct.unpack_from("<BBHBBBBHHHBBBB", raw, 0))


def parse_config_descriptor(raw: bytes) -> ConfigDescriptor:
    """A full configuration descriptor (``wTotalLength`` bytes: config, interfaces, endpoints, extras).

    Bytes past ``wTotalLength`` are ignored; so is a descriptor of fewer than 2 bytes at the very end.

    Raises:
        ProtocolError: a short header, a descriptor running past the data or shorter than its kind
            needs, an endpoint before any interface.
    """
    if len(raw) < 9 or raw[0] < 9 or raw[1] != 0x02:
        raise ProtocolError(f"bad config descriptor header ({len(raw)} bytes)")
    cfg = ConfigDescriptor(*struct.unpack_from("<BBHBBBBB", raw, 0))
    end = min(len(raw), cfg.wTotalLength)
    if end < cfg.bLength:
        raise ProtocolError(f"config descriptor: wTotalLength {cfg.wTotalLength} < bLength {cfg.bLength}")
    extra = bytearray()
    iface: InterfaceDescriptor | None = None
    ep: EndpointDescriptor | None = None
    pos = cfg.bLength
    while pos + 2 <= end:
        length, kind = raw[pos], raw[pos + 1]
        if length < 2 or pos + length > end:
            raise ProtocolError(f"config descriptor: descriptor of {length} bytes at offset {pos} of {end}")
        if kind == 0x04:  # interface
            if length < 9:
                raise ProtocolError(f"config descriptor: interface descriptor of {length} bytes")
            _flush(cfg, iface, ep, extra)
            ep = None
            iface = InterfaceDescriptor(*struct.unpack_from("<BBBBBBBBB", raw, pos))
            group = cfg.interfaces[-1] if cfg.interfaces else None
            if group is not None and group[0].bInterfaceNumber == iface.bInterfaceNumber:
                group.append(iface)
            else:
                cfg.interfaces.append([iface])
        elif kind == 0x05:  # endpoint
            if length < 7 or iface is None:
                raise ProtocolError(f"config descriptor: endpoint descriptor of {length} bytes at offset {pos}")
            _flush(cfg, iface, ep, extra)
            ep = EndpointDescriptor(*struct.unpack_from("<BBBBHB", raw, pos))
            if length >= 9:
                ep.bRefresh, ep.bSynchAddress = raw[pos + 7], raw[pos + 8]
            iface.endpoints.append(ep)
        elif kind in (0x01, 0x02):  # a device or config descriptor inside a configuration
            raise ProtocolError(f"config descriptor: descriptor type {kind} at offset {pos}")
        else:
            extra += raw[pos : pos + length]
        pos += length
    _flush(cfg, iface, ep, extra)
    return cfg


def _flush(
    cfg: ConfigDescriptor, iface: InterfaceDescriptor | None, ep: EndpointDescriptor | None, extra: bytearray
) -> None:
    """Hand the extra descriptors gathered so far to whatever they followed."""
    if not extra:
        return
    if ep is not None:
        ep.extra_descriptors += bytes(extra)
    elif iface is not None:
        iface.extra_descriptors += bytes(extra)
    else:
        cfg.extra_descriptors += bytes(extra)
    extra.clear()


# --- the backend -----------------------------------------------------------------------------------


class UsbRedirDeviceId:
    """pyusb's device identification (and handle) for one redirected device; its descriptors parsed once.

    Args:
        device: the redirected device.

    Raises:
        ProtocolError: a malformed device descriptor.
    """

    def __init__(self, device: RedirectedUsbDevice) -> None:
        self.device = device
        self.descriptor = parse_device_descriptor(device.device_descriptor)
        self.descriptor.bus = device.channel_id
        self.descriptor.address = 1
        self.descriptor.speed = device.speed + 1 if 0 <= device.speed <= 3 else 0
        self._configs: dict[int, ConfigDescriptor] = {}  # parsed: the same bytes give the same result

    def __repr__(self) -> str:
        return f"<UsbRedirDeviceId {self.device!r}>"

    def config(self, index: int) -> ConfigDescriptor:
        """Configuration ``index`` (logical), parsed on first use.

        Raises:
            usb.core.USBError: no such configuration (ENOENT) or malformed bytes (EIO).
        """
        cfg = self._configs.get(index)
        if cfg is None:
            raws = self.device.config_descriptors
            if not 0 <= index < len(raws):
                raise usb.core.USBError(f"no configuration {index}", -5, errno.ENOENT)
            try:
                cfg = parse_config_descriptor(raws[index])
            except ProtocolError as exc:
                raise usb.core.USBError(f"malformed configuration descriptor {index}: {exc}", -1, errno.EIO) from None
            self._configs[index] = cfg
        return cfg


class UsbRedirBackend(usb.backend.IBackend):  # type: ignore[misc]
    """pyusb's ``IBackend`` over the devices of ``source`` (see the module docstring).

    Args:
        source: the hub (anything with a ``devices`` list of attached redirected devices).
        margin: seconds a blocked thread waits past a transfer's timeout for the loop to answer.
        request_timeout: seconds for the requests pyusb passes no timeout for.
    """

    def __init__(self, source: DeviceSource, margin: float = MARGIN, request_timeout: float = REQUEST_TIMEOUT) -> None:
        super().__init__()
        self.source = source
        self.margin = margin
        self.request_timeout = request_timeout
        # one id per device while it is attached (an id refers to its device, so a weak mapping would
        # never let go: gone devices are dropped instead)
        self._ids: dict[RedirectedUsbDevice, UsbRedirDeviceId] = {}
        self._lock = threading.Lock()  # host threads enumerate concurrently

    def device_id(self, device: RedirectedUsbDevice) -> UsbRedirDeviceId:
        """pyusb's identification of ``device`` (the same object while the device is attached).

        Raises:
            usb.core.USBError: its device descriptor is malformed (EIO).
        """
        with self._lock:
            for old in [d for d in self._ids if d.gone]:
                del self._ids[old]
            dev_id = self._ids.get(device)
            if dev_id is None:
                try:
                    dev_id = UsbRedirDeviceId(device)
                except ProtocolError as exc:
                    raise usb.core.USBError(f"malformed device descriptor: {exc}", -1, errno.EIO) from None
                self._ids[device] = dev_id
            return dev_id

    def pyusb_device(self, device: RedirectedUsbDevice) -> usb.core.Device:
        """A ``usb.core.Device`` of ``device`` on this backend (no need to ``find`` it)."""
        return usb.core.Device(self.device_id(device), self)

    # --- running a device coroutine from the calling thread ------------------------------------------

    def _run(self, handle: UsbRedirDeviceId, make: Any, timeout: float | None) -> Any:
        """Run ``make()`` (a device coroutine) on the device's loop and wait for its result."""
        device = handle.device
        loop = device.loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError(
                "pyusb over usbredir blocks its thread: call it from a worker thread "
                "(asyncio.to_thread, loop.run_in_executor), not on the server's event loop"
            )
        if device.gone or loop.is_closed() or not loop.is_running():
            raise usb_error(UsbDeviceGone("the device is gone, or the server's event loop stopped"))
        coro: Coroutine[Any, Any, Any] = make()
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # the loop closed meanwhile
            coro.close()
            raise usb_error(UsbDeviceGone()) from None
        wait = None if timeout is None else timeout + self.margin
        try:
            return fut.result(wait)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise usb.core.USBTimeoutError(
                "the server's event loop did not answer in time", -7, errno.ETIMEDOUT
            ) from None
        except concurrent.futures.CancelledError:
            raise usb.core.USBError("transfer cancelled", -10, errno.EINTR) from None
        except UsbTransferError as exc:
            raise usb_error(exc) from None

    @staticmethod
    def _seconds(timeout_ms: int | None) -> float | None:
        """pyusb's milliseconds (0: no limit, as libusb) as seconds or None."""
        return None if not timeout_ms else timeout_ms / 1000.0

    @staticmethod
    def _fill(buff: array.array[Any], data: bytes) -> int:
        view = memoryview(buff).cast("B")
        n = min(len(data), len(view))
        view[:n] = data[:n]
        return n

    # --- IBackend: enumeration and descriptors --------------------------------------------------------

    def enumerate_devices(self) -> Iterator[UsbRedirDeviceId]:
        """The hub's attached devices (a snapshot); one with a malformed descriptor is left out."""
        for device in list(self.source.devices):
            try:
                yield self.device_id(device)
            except usb.core.USBError:
                continue

    def get_parent(self, dev: UsbRedirDeviceId) -> None:
        """No hub topology: every device is a root."""
        return None

    def get_device_descriptor(self, dev: UsbRedirDeviceId) -> DeviceDescriptor:
        """The parsed device descriptor with bus, address, speed."""
        return dev.descriptor

    def get_configuration_descriptor(self, dev: UsbRedirDeviceId, config: int) -> ConfigDescriptor:
        """Configuration ``config`` (logical index)."""
        return dev.config(config)

    def get_interface_descriptor(self, dev: UsbRedirDeviceId, intf: int, alt: int, config: int) -> InterfaceDescriptor:
        """Interface ``intf``, alternate setting ``alt`` (logical indexes) of configuration ``config``."""
        cfg = dev.config(config)
        if not 0 <= intf < len(cfg.interfaces):
            raise IndexError(f"Invalid interface index {intf}")
        alts = cfg.interfaces[intf]
        if not 0 <= alt < len(alts):
            raise IndexError(f"Invalid alternate setting index {alt}")
        return alts[alt]

    def get_endpoint_descriptor(
        self, dev: UsbRedirDeviceId, ep: int, intf: int, alt: int, config: int
    ) -> EndpointDescriptor:
        """Endpoint ``ep`` (logical index) of that interface."""
        iface = self.get_interface_descriptor(dev, intf, alt, config)
        if not 0 <= ep < len(iface.endpoints):
            raise IndexError(f"Invalid endpoint index {ep}")
        return iface.endpoints[ep]

    # --- IBackend: handles, interfaces, kernel drivers (the client's usbredirhost owns them) ------------

    def open_device(self, dev: UsbRedirDeviceId) -> UsbRedirDeviceId:
        """The handle is the device id (ENODEV once the device is gone)."""
        if dev.device.gone:
            raise usb_error(UsbDeviceGone())
        return dev

    def close_device(self, dev_handle: UsbRedirDeviceId) -> None:
        """Nothing to close."""
        return None

    def claim_interface(self, dev_handle: UsbRedirDeviceId, intf: int) -> None:
        """No-op: the client's usbredirhost claimed the interfaces."""
        return None

    def release_interface(self, dev_handle: UsbRedirDeviceId, intf: int) -> None:
        """No-op."""
        return None

    def is_kernel_driver_active(self, dev_handle: UsbRedirDeviceId, intf: int) -> bool:
        """No kernel driver on our side."""
        return False

    def detach_kernel_driver(self, dev_handle: UsbRedirDeviceId, intf: int) -> None:
        """No-op."""
        return None

    def attach_kernel_driver(self, dev_handle: UsbRedirDeviceId, intf: int) -> None:
        """No-op."""
        return None

    # --- IBackend: requests and transfers (blocking; never on the loop thread) --------------------------

    def set_configuration(self, dev_handle: UsbRedirDeviceId, config_value: int) -> None:
        """usbredir set_configuration, waiting for configuration_status."""
        t = self.request_timeout
        self._run(dev_handle, lambda: dev_handle.device.set_configuration(config_value, t), t)

    def get_configuration(self, dev_handle: UsbRedirDeviceId) -> int:
        """usbredir get_configuration: the current bConfigurationValue."""
        t = self.request_timeout
        return int(self._run(dev_handle, lambda: dev_handle.device.get_configuration(t), t))

    def set_interface_altsetting(self, dev_handle: UsbRedirDeviceId, intf: int, altsetting: int) -> None:
        """usbredir set_alt_setting, waiting for alt_setting_status."""
        t = self.request_timeout
        self._run(dev_handle, lambda: dev_handle.device.set_alt_setting(intf, altsetting, t), t)

    def ctrl_transfer(
        self,
        dev_handle: UsbRedirDeviceId,
        bmRequestType: int,
        bRequest: int,
        wValue: int,
        wIndex: int,
        data: array.array[Any],
        timeout: int,
    ) -> int:
        """IN: fills ``data`` and returns the bytes read; OUT: sends ``data``, returns the bytes written."""
        seconds = self._seconds(timeout)
        dev = dev_handle.device
        if bmRequestType & 0x80:
            size = len(data) * data.itemsize
            got = self._run(
                dev_handle, lambda: dev.control(bmRequestType, bRequest, wValue, wIndex, size, seconds), seconds
            )
            return self._fill(data, bytes(got))
        payload = data.tobytes()
        return int(
            self._run(
                dev_handle, lambda: dev.control(bmRequestType, bRequest, wValue, wIndex, payload, seconds), seconds
            )
        )

    def bulk_write(self, dev_handle: UsbRedirDeviceId, ep: int, intf: int, data: array.array[Any], timeout: int) -> int:
        """A bulk OUT transfer; returns the bytes written."""
        seconds, payload = self._seconds(timeout), data.tobytes()
        return int(self._run(dev_handle, lambda: dev_handle.device.bulk_out(ep, payload, seconds), seconds))

    def bulk_read(self, dev_handle: UsbRedirDeviceId, ep: int, intf: int, buff: array.array[Any], timeout: int) -> int:
        """A bulk IN transfer into ``buff``; returns the bytes read."""
        seconds, size = self._seconds(timeout), len(buff) * buff.itemsize
        return self._fill(buff, self._run(dev_handle, lambda: dev_handle.device.bulk_in(ep, size, seconds), seconds))

    def intr_write(self, dev_handle: UsbRedirDeviceId, ep: int, intf: int, data: array.array[Any], timeout: int) -> int:
        """An interrupt OUT transfer; returns the bytes written."""
        seconds, payload = self._seconds(timeout), data.tobytes()
        return int(self._run(dev_handle, lambda: dev_handle.device.interrupt_out(ep, payload, seconds), seconds))

    def intr_read(self, dev_handle: UsbRedirDeviceId, ep: int, intf: int, buff: array.array[Any], timeout: int) -> int:
        """The next interrupt IN packet into ``buff``; returns its size."""
        seconds, size = self._seconds(timeout), len(buff) * buff.itemsize
        return self._fill(
            buff, self._run(dev_handle, lambda: dev_handle.device.interrupt_in(ep, size, seconds), seconds)
        )

    def iso_write(self, dev_handle: UsbRedirDeviceId, ep: int, intf: int, data: array.array[Any], timeout: int) -> int:
        """Queue iso OUT data (best effort); returns its size."""
        seconds, payload = self._seconds(timeout), data.tobytes()
        return int(self._run(dev_handle, lambda: dev_handle.device.iso_out(ep, payload, seconds), seconds))

    def iso_read(self, dev_handle: UsbRedirDeviceId, ep: int, intf: int, buff: array.array[Any], timeout: int) -> int:
        """The next iso IN packet into ``buff``; returns its size."""
        seconds, size = self._seconds(timeout), len(buff) * buff.itemsize
        return self._fill(buff, self._run(dev_handle, lambda: dev_handle.device.iso_in(ep, size, seconds), seconds))

    def clear_halt(self, dev_handle: UsbRedirDeviceId, ep: int) -> None:
        """CLEAR_FEATURE(ENDPOINT_HALT) to ``ep`` (usbredirhost performs it as libusb_clear_halt)."""
        t = self.request_timeout
        self._run(dev_handle, lambda: dev_handle.device.control(0x02, 0x01, 0x0000, ep, b"", t), t)

    def reset_device(self, dev_handle: UsbRedirDeviceId) -> None:
        """usbredir reset (no answer comes)."""
        self._run(dev_handle, dev_handle.device.reset, self.request_timeout)
