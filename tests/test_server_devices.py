"""The host-facing registrations of ServerDevices: smartcard slots share one channel, usbredir ids."""

from __future__ import annotations

import pytest

from spiceserver.channels.chardev import char_device_pair
from spiceserver.channels.smartcard import SmartcardChannel
from spiceserver.channels.usb_pyusb import UsbRedirBackend
from spiceserver.channels.usbredir import UsbRedirChannel, UsbRedirPassthroughChannel
from spiceserver.config import ServerConfig
from spiceserver.errors import ConfigError
from spiceserver.proto.enums import ChannelType
from spiceserver.reds import SpiceServer


def test_smartcard_readers_share_one_channel_up_to_ten() -> None:
    server = SpiceServer(ServerConfig(port=0))
    readers = [server.add_smartcard_reader() for _ in range(9)]
    dev, _end = char_device_pair()
    passthru = server.add_smartcard_passthru(dev)
    assert [r.id for r in readers] + [passthru.id] == list(range(10))
    assert server.channel_ids().count((ChannelType.SMARTCARD, 0)) == 1
    assert isinstance(server._ctx.registry.get(ChannelType.SMARTCARD, 0), SmartcardChannel)
    with pytest.raises(ConfigError):
        server.add_smartcard_reader()


def test_usbredir_channels_take_the_next_ids_and_share_the_hub() -> None:
    server = SpiceServer(ServerConfig(port=0))
    hub = server.add_usbredir(2, filter="0x08,-1,-1,-1,1|-1,-1,-1,-1,0")
    assert hub is server.usb and hub.filter_string is not None
    dev, _end = char_device_pair()
    passthrough = server.add_usbredir_passthrough(dev)
    server.add_usbredir(1)
    ids = [cid for t, cid in server.channel_ids() if t == ChannelType.USBREDIR]
    assert ids == [0, 1, 2, 3]
    assert isinstance(server._ctx.registry.get(ChannelType.USBREDIR, 2), UsbRedirPassthroughChannel)
    assert passthrough.id == 2
    assert all(isinstance(server._ctx.registry.get(ChannelType.USBREDIR, i), UsbRedirChannel) for i in (0, 1, 3))
    backend = server.usb_backend()
    assert isinstance(backend, UsbRedirBackend) and server.usb_backend() is backend
    with pytest.raises(ValueError):
        server.add_usbredir(1, filter="not a filter")
