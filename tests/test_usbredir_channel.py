"""The usbredir channels against a scripted usb-host (tests/support/usbredir_host.py) over the SPICE
test client: hello and filter, attach with the descriptor fetch, transfers of every kind, timeouts
that cancel, detach (device_disconnect, reject, the client leaving), LZ4 both ways, bad bytes that
close only their client, and the passthrough channel over the char device pair."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.channels.chardev import char_device_pair
from spiceserver.channels.usb_device import RedirectedUsbDevice, UsbDeviceGone, UsbTransferError
from spiceserver.channels.usbredir import UsbRedirChannel, UsbRedirection, UsbRedirPassthroughChannel
from spiceserver.proto import usbredir_messages as m
from spiceserver.proto.enums import ChannelType, SpicevmcCap
from spiceserver.proto.messages import spicevmc as vm
from spiceserver.proto.usbredir import HOST_CAPS
from tests.conftest import Running
from tests.support.client import connect
from tests.support.usbredir_host import BULK_IN, BULK_OUT, INTR_IN, FakeUsbHost, config_descriptor, device_descriptor


class Events:
    """The hub's attach / detach callbacks, recorded, with a future per expected event."""

    def __init__(self, hub: UsbRedirection) -> None:
        self.attached: list[RedirectedUsbDevice] = []
        self.detached: list[RedirectedUsbDevice] = []
        self.changed = asyncio.Event()
        hub.on_attach(self._on_attach)
        hub.on_detach(self._on_detach)

    async def _on_attach(self, dev: RedirectedUsbDevice) -> None:
        self.attached.append(dev)
        self.changed.set()

    def _on_detach(self, dev: RedirectedUsbDevice) -> None:
        self.detached.append(dev)
        self.changed.set()

    async def wait_for(self, pred: Any, timeout: float = 10.0) -> None:
        async def loop() -> None:
            while not pred():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)


async def setup(
    running: Running,
    filter: str | None = None,
    channel_id: int = 0,
    lz4: bool = False,
    caps: int = HOST_CAPS,
    server_lz4: bool = True,
    host_lz4: bool | None = None,
    **kw: Any,
) -> tuple[UsbRedirection, UsbRedirChannel, FakeUsbHost, Events]:
    hub = UsbRedirection(filter)
    channel = running.server.register_channel(UsbRedirChannel, hub, channel_id, lz4=server_lz4)
    events = Events(hub)
    s = await connect(running.ep)
    ch = await s.link(ChannelType.USBREDIR, channel_id, channel_caps=(SpicevmcCap.DATA_COMPRESS_LZ4,) if lz4 else ())
    host = FakeUsbHost(ch, lz4=lz4 if host_lz4 is None else host_lz4, caps=caps, **kw)
    host._session = s  # type: ignore[attr-defined]  # keep the main channel alive
    await host.start()
    return hub, channel, host, events


async def attached(
    running: Running, **kw: Any
) -> tuple[UsbRedirection, UsbRedirChannel, FakeUsbHost, Events, RedirectedUsbDevice]:
    hub, channel, host, events = await setup(running, **kw)
    await host.wait_for(lambda: host.conn.have_peer_caps)
    await host.connect_device()
    await events.wait_for(lambda: events.attached)
    return hub, channel, host, events, events.attached[0]


async def test_hello_then_attach_with_descriptors(running: Running) -> None:
    hub, channel, host, _events, dev = await attached(running)
    assert host.conn.peer_version == "spiceserver usbredir"
    assert host.conn.ids_64bit
    assert (dev.vendor_id, dev.product_id, dev.speed, dev.device_version_bcd) == (0x1234, 0x5678, 2, 0x0100)
    assert dev.device_descriptor == device_descriptor(0x1234, 0x5678)
    assert dev.config_descriptors == (config_descriptor(),)
    assert dev.configuration == 1
    assert dev.attached and dev.loop is asyncio.get_running_loop() and dev.channel_id == 0
    assert [i.interface_class for i in dev.interfaces] == [0xFF]
    assert sorted(dev.endpoints) == [0x00, BULK_OUT, 0x80, BULK_IN, INTR_IN]
    assert dev.endpoints[BULK_IN].type == m.EpType.BULK and dev.endpoints[BULK_IN].max_packet_size == 512
    assert dev.endpoints[INTR_IN].interval == 10
    assert hub.devices == [dev] and channel.usb_device is dev
    # the fetch: device descriptor, config header (9 bytes), whole config, then get_configuration
    controls = [p.msg for p in host.of(m.ControlPacket)]
    assert [(c.value, c.length) for c in controls] == [(0x0100, 18), (0x0200, 9), (0x0200, len(config_descriptor()))]
    assert host.of(m.GetConfiguration)
    assert not host.of(m.FilterFilter)  # no filter set


async def test_transfers(running: Running) -> None:
    _, _, host, _, dev = await attached(running)
    assert await dev.bulk_out(BULK_OUT, b"ping" * 100) == 400
    assert await dev.bulk_in(BULK_IN, 1000) == b"ping" * 100
    assert await dev.bulk_in(BULK_IN, 10) == b""
    assert await dev.control(0x40, 1, 0, 0, b"hello") == 5
    assert host.control_out == [b"hello"]
    assert await dev.control(0xC0, 2, 0, 0, 64) == b"vendor"
    with pytest.raises(UsbTransferError) as err:
        await dev.control(0xC0, 99, 0, 0, 8)
    assert err.value.status == m.Status.STALL and not isinstance(err.value, UsbDeviceGone)
    # standard requests mapped onto usbredir messages, as QEMU does
    assert await dev.control(0x80, 8, 0, 0, 1) == b"\x01"
    await dev.set_configuration(2)
    assert host.configuration == 2 and dev.configuration == 2 and await dev.get_configuration() == 2
    await dev.set_alt_setting(0, 1)
    assert host.alt[0] == 1 and await dev.get_alt_setting(0) == 1
    with pytest.raises(UsbTransferError):
        await dev.set_alt_setting(5, 1)
    assert await dev.interrupt_out(0x04, b"led") == 3
    # interrupt IN: receiving starts at first use, packets come unasked and wait in a buffer
    reader = asyncio.ensure_future(dev.interrupt_in(INTR_IN, 8))
    await host.wait_for(lambda: INTR_IN in host.interrupt_started)
    await host.interrupt(b"\x01\x02")
    assert await reader == b"\x01\x02"
    await host.interrupt(b"abc")
    await host.interrupt(b"defghijklm")
    assert len(host.of(m.StartInterruptReceiving)) == 1
    assert await dev.interrupt_in(INTR_IN, 8, timeout=5) == b"abc"
    assert await dev.interrupt_in(INTR_IN, 8, timeout=5) == b"defghijk"  # at most length bytes
    await host.interrupt(b"", status=m.Status.STALL)
    with pytest.raises(UsbTransferError):
        await dev.interrupt_in(INTR_IN, 8, timeout=5)
    await dev.reset()
    await host.wait_for(lambda: host.of(m.Reset))
    # every request got its own id
    ids = [p.id for p in host.packets if isinstance(p.msg, (m.ControlPacket, m.BulkPacket, m.GetConfiguration))]
    assert len(ids) == len(set(ids))
    with pytest.raises(ValueError):
        await dev.control(0x80, 6, 0x100, 0, b"wrong kind")
    with pytest.raises(ValueError):
        await dev.bulk_out(BULK_IN, b"x")


async def test_iso_streams_reject_and_the_loop_check(running: Running) -> None:
    hub, _, host, events, dev = await attached(running)
    assert await dev.iso_out(0x06, b"frame") == 5
    await host.wait_for(lambda: bytes(host.iso_out) == b"frame")
    assert [p.msg for p in host.of(m.StartIsoStream)] == [m.StartIsoStream(0x06, 8, 3)]
    reader = asyncio.ensure_future(dev.iso_in(0x85, 64))
    await host.wait_for(lambda: 0x85 in host.iso_started)
    await host.iso(b"audio")
    assert await reader == b"audio"
    with pytest.raises(UsbTransferError) as err:
        await dev.interrupt_in(INTR_IN, 8, timeout=0.05)  # nothing comes
    assert err.value.status == m.Status.TIMEOUT
    # transfers belong to the server's loop
    with pytest.raises(RuntimeError):
        await asyncio.to_thread(asyncio.run, dev.bulk_in(BULK_IN, 8))
    # the host refuses the device: filter_reject, detached at once
    dev.reject()
    await host.wait_for(lambda: host.of(m.FilterReject))
    await events.wait_for(lambda: events.detached == [dev])
    assert dev.gone and hub.devices == []
    dev.reject()  # nothing more
    await host.disconnect_device()
    await host.wait_for(lambda: host.of(m.DeviceDisconnectAck))
    assert len(host.of(m.FilterReject)) == 1


async def test_timeout_cancels_the_transfer(running: Running) -> None:
    _, _, host, _, dev = await attached(running)
    host.hold_bulk_in = True
    with pytest.raises(UsbTransferError) as err:
        await dev.bulk_in(BULK_IN, 64, timeout=0.2)
    assert err.value.status == m.Status.TIMEOUT
    await host.wait_for(lambda: host.of(m.CancelDataPacket))
    cancel = host.of(m.CancelDataPacket)[0]
    assert cancel.id in [p.id for p in host.of(m.BulkPacket)]
    # the late "cancelled" reply is dropped; the device goes on
    host.hold_bulk_in = False
    await dev.bulk_out(BULK_OUT, b"after")
    assert await dev.bulk_in(BULK_IN, 64, timeout=5) == b"after"


async def test_device_disconnect_detaches(running: Running) -> None:
    hub, _, host, events, dev = await attached(running)
    host.hold_bulk_in = True
    pending = asyncio.ensure_future(dev.bulk_in(BULK_IN, 64))
    await host.wait_for(lambda: host.held)
    await host.disconnect_device()
    with pytest.raises(UsbDeviceGone) as err:
        await pending
    assert err.value.status == -1
    await events.wait_for(lambda: events.detached == [dev])
    await host.wait_for(lambda: host.of(m.DeviceDisconnectAck))
    assert hub.devices == [] and not dev.attached
    with pytest.raises(UsbDeviceGone):
        await dev.bulk_out(BULK_OUT, b"x")
    # the device comes back: a new device object, attached again
    host.hold_bulk_in = False
    await host.connect_device()
    await events.wait_for(lambda: len(events.attached) == 2)
    assert events.attached[1] is not dev and hub.devices == [events.attached[1]]


async def test_client_leaving_detaches(running: Running) -> None:
    hub, _channel, host, events, dev = await attached(running)
    await host.ch.close()
    await events.wait_for(lambda: events.detached == [dev])
    assert hub.devices == [] and dev.gone
    # a new client gets a new usbredir session (a new hello)
    s = await connect(running.ep)
    ch = await s.link(ChannelType.USBREDIR, 0)
    host2 = FakeUsbHost(ch, vid=0xAAAA, pid=0xBBBB)
    await host2.start()
    await host2.wait_for(lambda: host2.conn.have_peer_caps)
    await host2.connect_device()
    await events.wait_for(lambda: len(events.attached) == 2)
    assert events.attached[1].vendor_id == 0xAAAA


async def test_filter_sent_and_enforced(running: Running) -> None:
    # vendor class devices only
    hub, _, host, events = await setup(running, filter="0xff,-1,-1,-1,1|-1,-1,-1,-1,0")
    await host.wait_for(lambda: host.of(m.FilterFilter))
    assert host.of(m.FilterFilter)[0].msg.rules == "0xff,-1,-1,-1,1|-1,-1,-1,-1,0"
    await host.connect_device()
    await events.wait_for(lambda: events.attached)
    # a host filter change reaches the client; a device it refuses gets filter_reject
    hub.set_filter("0x08,-1,-1,-1,1|-1,-1,-1,-1,0")
    await host.wait_for(lambda: len(host.of(m.FilterFilter)) == 2)
    dev = events.attached[0]
    await host.send(m.InterfaceInfo((0,), (0xFF,), (0,), (0,)))  # re-checked: no longer allowed
    await host.wait_for(lambda: host.of(m.FilterReject))
    await events.wait_for(lambda: events.detached == [dev])
    await host.disconnect_device()
    await host.wait_for(lambda: host.of(m.DeviceDisconnectAck))


async def test_filter_rejects_a_device_at_once(running: Running) -> None:
    hub, _, host, events = await setup(running, filter="0x08,-1,-1,-1,1", interface_class=0x03)
    await host.wait_for(lambda: host.of(m.FilterFilter))
    await host.connect_device()
    await host.wait_for(lambda: host.of(m.FilterReject))
    assert not host.of(m.ControlPacket)  # never touched
    assert events.attached == [] and hub.devices == []
    with pytest.raises(ValueError):
        hub.set_filter("1,2,3")


async def test_lz4_both_ways(running: Running) -> None:
    _, channel, host, _, dev = await attached(running, lz4=True)
    assert SpicevmcCap.DATA_COMPRESS_LZ4 in channel.caps
    text = b"a compressible bulk block\n" * 200
    assert await dev.bulk_out(BULK_OUT, text) == len(text)  # server -> client: compressed
    assert host.compressed_received == 1
    assert await dev.bulk_in(BULK_IN, len(text)) == text  # client -> server: compressed by the host
    stats = channel.stats()
    assert (stats["compressed_to_client"], stats["compressed_from_client"]) == (1, 1)


async def test_lz4_off(running: Running) -> None:
    # the channel does not offer the cap: plain DATA both ways, even to a client that has it
    _, channel, host, _, dev = await attached(running, lz4=True, server_lz4=False, host_lz4=False)
    assert SpicevmcCap.DATA_COMPRESS_LZ4 not in channel.caps
    text = b"a compressible bulk block\n" * 200
    assert await dev.bulk_out(BULK_OUT, text) == len(text)
    assert await dev.bulk_in(BULK_IN, len(text)) == text
    assert host.compressed_received == 0
    stats = channel.stats()
    assert (stats["compressed_to_client"], stats["compressed_from_client"]) == (0, 0)
    assert stats["bytes_to_client"] > len(text) and stats["bytes_to_device"] > len(text)
    # a client compressing anyway is closed
    await host.ch.send(vm.ClientSpicevmcCompressedData(type=1, uncompressed_size=4, compressed_data=b"\x40abcd"))
    await host.wait_for(lambda: host.closed)


async def test_bad_bytes_close_only_that_client(running: Running) -> None:
    hub = UsbRedirection()
    running.server.register_channel(UsbRedirChannel, hub, 0)
    running.server.register_channel(UsbRedirChannel, hub, 1)
    events = Events(hub)
    s = await connect(running.ep)
    good = FakeUsbHost(await s.link(ChannelType.USBREDIR, 0))
    bad = FakeUsbHost(await s.link(ChannelType.USBREDIR, 1))
    await good.start()
    await bad.start()
    await bad.wait_for(lambda: bad.conn.have_peer_caps)
    await bad.send_raw(b"\x63\x00\x00\x00" + b"\x00" * 12)  # unknown packet type 99
    await bad.wait_for(lambda: bad.closed)
    await good.wait_for(lambda: good.conn.have_peer_caps)
    await good.connect_device()
    await events.wait_for(lambda: events.attached)
    assert events.attached[0].channel_id == 0
    assert await events.attached[0].bulk_out(BULK_OUT, b"still fine") == 10


@pytest.mark.parametrize(
    "raw",
    [
        b"\x01\x00\x00\x00" + b"\x00" * 8,  # device_connect before hello (our hello is answered by nothing)
        b"\x00\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00" + b"x" * 16,  # hello shorter than 64 bytes
        b"\x00\x00\x00\x00\xff\xff\xff\x7f\x00\x00\x00\x00",  # 2 GiB hello: refused before buffering
    ],
)
async def test_malformed_first_packets_close_the_client(running: Running, raw: bytes) -> None:
    hub = UsbRedirection()
    running.server.register_channel(UsbRedirChannel, hub, 0)
    s = await connect(running.ep)
    ch = await s.link(ChannelType.USBREDIR, 0)
    await ch.send(vm.ClientSpicevmcData(data=raw))
    assert await ch.closed()


async def test_passthrough_moves_bytes_both_ways(running: Running) -> None:
    dev, end = char_device_pair()
    got = bytearray()
    seen = asyncio.Event()

    def on_data(data: bytes) -> None:
        got.extend(data)
        seen.set()

    end.on_data(on_data)
    channel = running.server.register_channel(UsbRedirPassthroughChannel, dev, 3)
    assert channel.type == ChannelType.USBREDIR
    s = await connect(running.ep)
    ch = await s.link(ChannelType.USBREDIR, 3)
    await ch.send(vm.ClientSpicevmcData(data=b"usbredir bytes, unparsed"))
    await asyncio.wait_for(seen.wait(), 10)
    assert bytes(got) == b"usbredir bytes, unparsed"
    end.write(b"from qemu's usb-redir")
    assert (await ch.expect(vm.SpicevmcData)).data == b"from qemu's usb-redir"


# --- the endpoint alone, fuzzed: client bytes parse and act, or raise ProtocolError ----------------


class Listener:
    def __init__(self) -> None:
        self.out = bytearray()

    def device_data(self, data: bytes) -> None:
        self.out += data


HOST_PACKETS = [
    m.InterfaceInfo((0,), (0xFF,), (0,), (0,)),
    m.EpInfo(tuple([0, 2, 255, 3] + [255] * 12 + [0, 2] + [255] * 14), (0,) * 32, (0,) * 32, (64,) * 32, (0,) * 32),
    m.DeviceConnect(2, 0, 0, 0, 1, 2, 3),
    m.DeviceDisconnect(),
    m.ConfigurationStatus(0, 1),
    m.ControlPacket(0x80, 6, 0x80, 0, 0x100, 0, 18, device_descriptor(1, 2)),
    m.ControlPacket(0x80, 6, 0x80, 0, 0x200, 0, 9, config_descriptor()[:9]),
    m.BulkPacket(0x81, 0, 2, 0, b"ok"),
    m.InterruptPacket(0x83, 0, 1, b"i"),
    m.InterruptReceivingStatus(4, 0x83),
    m.BufferedBulkPacket(0, 2, 0x81, 0, b"bb"),
    m.BulkReceivingStatus(0, 0x81, 3),
    m.FilterFilter("-1,-1,-1,-1,1"),
]


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.one_of(st.tuples(st.sampled_from(HOST_PACKETS), st.integers(0, 40)), st.binary(min_size=1, max_size=40)),
        max_size=12,
    )
)
def test_fuzz_endpoint_parse_or_protocol_error(steps: list[Any]) -> None:
    async def run() -> None:
        from spiceserver.channels.usbredir import UsbRedirEndpoint
        from spiceserver.errors import ProtocolError
        from spiceserver.proto.usbredir import HOST, UsbRedirConnection

        hub = UsbRedirection("-1,-1,-1,-1,1")
        attached: list[RedirectedUsbDevice] = []
        hub.on_attach(attached.append)
        ep = UsbRedirEndpoint(hub, 0)
        listener = Listener()
        ep.attach(listener, asyncio.get_running_loop())
        ep.start_session()
        ep.resume_reading()
        host = UsbRedirConnection(HOST, "fuzz")
        host.receive_data(bytes(listener.out))
        try:
            ep.write(host.data_to_send())
            for step in steps:
                if isinstance(step, tuple):
                    host.send(step[0], step[1])
                    ep.write(host.data_to_send())
                else:
                    ep.write(step)
                await asyncio.sleep(0)
        except ProtocolError:
            pass
        ep.end_session()
        await asyncio.sleep(0)
        assert ep.device is None and ep.conn is None

    asyncio.run(run())


# --- bulk receiving (cap bulk_receiving): buffered bulk IN data served to bulk_in -------------------


async def test_bulk_receiving_serves_bulk_in(running: Running) -> None:
    _, _, host, _, dev = await attached(running)
    assert dev.can_bulk_receive and not dev.bulk_receiving(BULK_IN)
    await dev.start_bulk_receiving(BULK_IN)
    # QEMU's parameters: 512 rounded up to the max packet size, 5 transfers, stream 0
    assert host.bulk_receiving == {BULK_IN: m.StartBulkReceiving(0, 512, BULK_IN, 5)}
    assert dev.bulk_receiving(BULK_IN)
    reader = asyncio.ensure_future(dev.bulk_in(BULK_IN, 1000, timeout=5))
    await host.buffered_bulk(b"abc")
    assert await reader == b"abc"
    # a read joins buffered packets up to its length; a packet read in part keeps its rest
    await host.send_many([m.BufferedBulkPacket(0, len(d), BULK_IN, 0, d) for d in (b"0123456789", b"xyz")])
    assert await dev.bulk_in(BULK_IN, 4, timeout=5) == b"0123"
    assert await dev.bulk_in(BULK_IN, 100, timeout=5) == b"456789xyz"
    # a zero-length packet ends a read (alone: an empty read); a failed packet fails the read that
    # reaches it first
    await host.send_many(
        [
            m.BufferedBulkPacket(0, 0, BULK_IN, 0, b""),
            m.BufferedBulkPacket(0, 2, BULK_IN, 0, b"ab"),
            m.BufferedBulkPacket(0, 0, BULK_IN, 0, b""),
            m.BufferedBulkPacket(0, 2, BULK_IN, 0, b"cd"),
            m.BufferedBulkPacket(0, 0, BULK_IN, m.Status.STALL, b""),
            m.BufferedBulkPacket(0, 4, BULK_IN, 0, b"more"),
        ]
    )
    assert await dev.bulk_in(BULK_IN, 100, timeout=5) == b""
    assert await dev.bulk_in(BULK_IN, 100, timeout=5) == b"ab"
    assert await dev.bulk_in(BULK_IN, 100, timeout=5) == b"cd"
    with pytest.raises(UsbTransferError) as err:
        await dev.bulk_in(BULK_IN, 100, timeout=5)
    assert err.value.status == m.Status.STALL
    assert await dev.bulk_in(BULK_IN, 100, timeout=5) == b"more"
    # readers wait in turn
    first = asyncio.ensure_future(dev.bulk_in(BULK_IN, 3, timeout=5))
    second = asyncio.ensure_future(dev.bulk_in(BULK_IN, 3, timeout=5))
    await asyncio.sleep(0)
    await host.buffered_bulk(b"111222")
    assert (await first, await second) == (b"111", b"222")
    with pytest.raises(UsbTransferError) as err:
        await dev.bulk_in(BULK_IN, 8, timeout=0.05)
    assert err.value.status == m.Status.TIMEOUT
    assert not host.of(m.BulkPacket)  # no plain bulk request while receiving
    # stop: the waiting reader fails (cancelled), then bulk_in sends plain bulk packets again
    waiting = asyncio.ensure_future(dev.bulk_in(BULK_IN, 8))
    await asyncio.sleep(0)
    await dev.stop_bulk_receiving(BULK_IN)
    with pytest.raises(UsbTransferError) as err:
        await waiting
    assert err.value.status == m.Status.CANCELLED
    await host.wait_for(lambda: not host.bulk_receiving)
    assert [p.msg for p in host.of(m.StopBulkReceiving)] == [m.StopBulkReceiving(0, BULK_IN)]
    assert not dev.bulk_receiving(BULK_IN)
    await dev.bulk_out(BULK_OUT, b"plain")
    assert await dev.bulk_in(BULK_IN, 64, timeout=5) == b"plain"
    await dev.stop_bulk_receiving(BULK_IN)  # not running: nothing sent
    assert len(host.of(m.StopBulkReceiving)) == 1
    assert dev.dropped_in_packets == 0


async def test_bulk_receiving_failures(running: Running) -> None:
    _, _, host, _, dev = await attached(running)
    with pytest.raises(ValueError):
        await dev.start_bulk_receiving(INTR_IN)  # not a bulk endpoint
    with pytest.raises(ValueError):
        await dev.start_bulk_receiving(BULK_IN, bytes_per_transfer=100)  # not a multiple of 512
    with pytest.raises(ValueError):
        await dev.start_bulk_receiving(BULK_IN, transfers=17)
    # the client refuses the start
    host.bulk_receiving_answer = m.Status.STALL
    with pytest.raises(UsbTransferError) as err:
        await dev.start_bulk_receiving(BULK_IN, 1024, 2)
    assert err.value.status == m.Status.STALL and not dev.bulk_receiving(BULK_IN)
    assert host.of(m.StartBulkReceiving)[-1].msg == m.StartBulkReceiving(0, 1024, BULK_IN, 2)
    # the client does not answer: a timeout, and receiving is stopped in case it started
    host.bulk_receiving_answer = None
    with pytest.raises(UsbTransferError) as err:
        await dev.start_bulk_receiving(BULK_IN, timeout=0.05)
    assert err.value.status == m.Status.TIMEOUT and not dev.bulk_receiving(BULK_IN)
    await host.wait_for(lambda: host.of(m.StopBulkReceiving))
    # data for an endpoint that is not receiving is dropped (counted), never buffered
    await host.buffered_bulk(b"unasked")
    await dev.bulk_out(BULK_OUT, b"sync")  # a round trip: the packet above was handled
    assert dev.dropped_in_packets == 1
    assert await dev.bulk_in(BULK_IN, 64, timeout=5) == b"sync"  # a plain bulk request
    # a failed bulk_receiving_status ends receiving and fails the readers; buffered data stays readable
    host.bulk_receiving_answer = 0
    await dev.start_bulk_receiving(BULK_IN)
    await host.buffered_bulk(b"kept")
    await dev.bulk_out(BULK_OUT, b"sync")
    await host.send(m.BulkReceivingStatus(0, BULK_IN, m.Status.IOERROR))
    assert await dev.control(0xC0, 2, 0, 0, 64) == b"vendor"  # a round trip: the status was handled
    assert await dev.bulk_in(BULK_IN, 64, timeout=5) == b"kept"
    assert not dev.bulk_receiving(BULK_IN)
    assert await dev.bulk_in(BULK_IN, 64, timeout=5) == b"sync"  # plain again
    await dev.start_bulk_receiving(BULK_IN)
    reader = asyncio.ensure_future(dev.bulk_in(BULK_IN, 64))
    await asyncio.sleep(0)
    await host.send(m.BulkReceivingStatus(0, BULK_IN, m.Status.STALL))
    with pytest.raises(UsbTransferError) as err:
        await reader
    assert err.value.status == m.Status.STALL


async def test_bulk_receiving_needs_the_cap(running: Running) -> None:
    _, _, host, _, dev = await attached(running, caps=HOST_CAPS & ~(1 << m.Cap.BULK_RECEIVING))
    assert not dev.can_bulk_receive
    with pytest.raises(UsbTransferError) as err:
        await dev.start_bulk_receiving(BULK_IN)
    assert err.value.status == m.Status.INVAL and "bulk_receiving" in str(err.value)
    await dev.bulk_out(BULK_OUT, b"plain")
    assert await dev.bulk_in(BULK_IN, 64) == b"plain"
    assert not host.of(m.StartBulkReceiving)


# --- bad input (issue 14 point 6) ----------------------------------------------------------------------


async def test_floods_of_in_data_stay_bounded(running: Running) -> None:
    from spiceserver.channels.usb_device import (
        BULK_IN_BUFFER_BYTES,
        BULK_IN_BUFFER_PACKETS,
        IN_BUFFER_BYTES,
        IN_BUFFER_PACKETS,
    )

    _, channel, host, _, dev = await attached(running)
    # interrupt IN: nobody reads; the buffer keeps the newest IN_BUFFER_PACKETS
    with pytest.raises(UsbTransferError):
        await dev.interrupt_in(INTR_IN, 8, timeout=0.05)  # receiving starts
    await host.wait_for(lambda: INTR_IN in host.interrupt_started)
    flood = 1000
    await host.send_many([m.InterruptPacket(INTR_IN, 0, 4, i.to_bytes(4, "big")) for i in range(flood)])
    await dev.bulk_out(BULK_OUT, b"sync")  # a round trip: the flood was handled
    assert dev.dropped_in_packets == flood - IN_BUFFER_PACKETS
    assert await dev.interrupt_in(INTR_IN, 8, timeout=5) == (flood - IN_BUFFER_PACKETS).to_bytes(4, "big")
    # big interrupt packets: capped in bytes as well
    dropped = dev.dropped_in_packets
    big = 60000
    await host.send_many([m.InterruptPacket(INTR_IN, 0, big, bytes(big)) for i in range(IN_BUFFER_BYTES // big + 5)])
    await dev.bulk_out(BULK_OUT, b"sync")
    assert dev.dropped_in_packets > dropped
    # an endpoint where nothing was started: every packet dropped, nothing kept
    dropped = dev.dropped_in_packets
    await host.send_many([m.InterruptPacket(0x85, 0, 4, b"junk") for _ in range(500)])
    await dev.bulk_out(BULK_OUT, b"sync")
    assert dev.dropped_in_packets == dropped + 500
    # buffered bulk: capped in packets and in bytes
    await dev.start_bulk_receiving(BULK_IN)
    dropped = dev.dropped_in_packets
    n = BULK_IN_BUFFER_PACKETS + 100
    await host.send_many([m.BufferedBulkPacket(0, 1, BULK_IN, 0, b"b") for _ in range(n)])
    await dev.bulk_out(BULK_OUT, b"sync")
    assert dev.dropped_in_packets == dropped + 100
    dropped = dev.dropped_in_packets
    chunk = 1 << 20
    await host.send_many([m.BufferedBulkPacket(0, chunk, BULK_IN, 0, bytes(chunk)) for _ in range(6)])
    await dev.bulk_out(BULK_OUT, b"sync")
    kept = BULK_IN_BUFFER_BYTES // chunk
    assert dev.dropped_in_packets == dropped + BULK_IN_BUFFER_PACKETS + 6 - kept
    got = await dev.bulk_in(BULK_IN, 10 * chunk, timeout=5)
    assert len(got) == kept * chunk
    # the channel goes on
    assert channel.client is not None and not host.closed
    await dev.bulk_out(BULK_OUT, b"still fine")
    await dev.stop_bulk_receiving(BULK_IN)
    assert await dev.bulk_in(BULK_IN, 64, timeout=5) == b"syncsyncsyncsyncsyncstill fine"


async def test_replies_nobody_waits_for_are_dropped(running: Running) -> None:
    _, channel, host, _, dev = await attached(running)
    bogus: list[tuple[m.UsbRedirMessage, int]] = [
        (m.ControlPacket(0x80, 6, 0x80, 0, 0x100, 0, 4, b"\x12\x01\x00\x02"), 10_000),
        (m.BulkPacket(BULK_IN, 0, 5, 0, b"stray"), 10_001),
        (m.BulkPacket(BULK_OUT, 0, 5), 10_002),
        (m.InterruptPacket(0x04, 0, 2), 10_003),
        (m.ConfigurationStatus(0, 1), 10_004),
        (m.AltSettingStatus(0, 0, 0), 2**63),
    ]
    for _ in range(50):
        for msg, id in bogus:
            host.conn.send(msg, id)
    await host.send_many([])
    assert await dev.control(0xC0, 2, 0, 0, 64) == b"vendor"  # a round trip: the replies were handled
    assert channel.endpoint.ignored_replies == 50 * len(bogus)
    assert not host.closed and channel.client is not None


async def test_a_4gib_packet_closes_only_that_client(running: Running) -> None:
    hub = UsbRedirection()
    running.server.register_channel(UsbRedirChannel, hub, 0)
    bad_channel = running.server.register_channel(UsbRedirChannel, hub, 1)
    events = Events(hub)
    s = await connect(running.ep)
    good = FakeUsbHost(await s.link(ChannelType.USBREDIR, 0))
    bad = FakeUsbHost(await s.link(ChannelType.USBREDIR, 1))
    await good.start()
    await bad.start()
    await bad.wait_for(lambda: bad.conn.have_peer_caps and bad.conn.ids_64bit)
    # a bulk_packet header announcing 0xFFFFFFFF bytes, and nothing after it: refused from the
    # header alone (were it buffering, the channel would wait for 4 GiB instead of closing)
    await bad.send_raw(struct.pack("<IIQ", m.MsgType.BULK_PACKET, 0xFFFFFFFF, 1))
    await bad.wait_for(lambda: bad.closed)
    assert bad_channel.client is None
    await good.wait_for(lambda: good.conn.have_peer_caps)
    await good.connect_device()
    await events.wait_for(lambda: events.attached)
    assert await events.attached[0].bulk_out(BULK_OUT, b"still fine") == 10


async def _all_calls(dev: RedirectedUsbDevice, timeout: float | None) -> list[Any]:
    return [
        dev.control(0xC0, 2, 0, 0, 8, timeout),
        dev.control(0x40, 1, 0, 0, b"out", timeout),
        dev.bulk_in(BULK_IN, 64, timeout),
        dev.bulk_out(BULK_OUT, b"x", timeout),
        dev.interrupt_out(0x04, b"x", timeout),
        dev.interrupt_in(INTR_IN, 8, timeout),
        dev.iso_in(0x85, 8, timeout),
        dev.set_configuration(1, timeout),
        dev.get_configuration(timeout),
        dev.set_alt_setting(0, 0, timeout),
        dev.get_alt_setting(0, timeout),
        dev.start_bulk_receiving(0x86, timeout=timeout),
    ]


async def test_a_device_that_never_answers_times_out(running: Running) -> None:
    _, _, host, _, dev = await attached(running, extra_bulk_in=(0x86, 0x87))
    await dev.start_bulk_receiving(0x87)  # receiving on a second bulk IN endpoint, before the silence
    host.mute = True
    calls = await _all_calls(dev, 0.05)
    calls.append(dev.bulk_in(0x87, 64, 0.05))
    for call in calls:
        with pytest.raises(UsbTransferError) as err:
            await call
        assert err.value.status == m.Status.TIMEOUT, call
    await host.wait_for(lambda: len(host.of(m.CancelDataPacket)) >= 5)  # data transfers cancelled


@pytest.mark.parametrize("how", ["device_disconnect", "client_leaves"])
async def test_without_timeout_the_device_leaving_ends_every_call(running: Running, how: str) -> None:
    _, _, host, events, dev = await attached(running, extra_bulk_in=(0x86, 0x87))
    await dev.start_bulk_receiving(0x87)
    host.mute = True
    tasks = [asyncio.ensure_future(c) for c in await _all_calls(dev, None)]
    tasks.append(asyncio.ensure_future(dev.bulk_in(0x87, 64)))
    await host.wait_for(lambda: host.of(m.GetAltSetting) and host.of(m.StartBulkReceiving)[-1].msg.endpoint == 0x86)
    assert not any(t.done() for t in tasks)
    if how == "device_disconnect":
        await host.disconnect_device()
    else:
        await host.ch.close()
    for task in tasks:
        with pytest.raises(UsbDeviceGone):
            await task
    await events.wait_for(lambda: events.detached == [dev])


async def test_pyusb_bulk_reads_use_bulk_receiving_once_started(running: Running) -> None:
    import usb.core  # type: ignore[import-untyped]

    hub, _, host, _, dev = await attached(running)
    backend = hub.pyusb_backend()

    def read(n: int) -> bytes:
        found = usb.core.find(idVendor=0x1234, idProduct=0x5678, backend=backend)
        return bytes(found.read(BULK_IN, n, timeout=5000))

    await dev.bulk_out(BULK_OUT, b"plain")
    assert await asyncio.to_thread(read, 64) == b"plain"  # a bulk_packet request
    await dev.start_bulk_receiving(BULK_IN)
    await host.buffered_bulk(b"streamed")
    assert await asyncio.to_thread(read, 64) == b"streamed"  # from the buffer
    assert len(host.of(m.BulkPacket)) == 2  # the bulk_out and the first read only
