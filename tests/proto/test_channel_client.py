"""proto/channel_client.py: ack window set-up, bytes in flight, and dispatch by a table per state."""

from __future__ import annotations

import pytest

from spiceserver.errors import ProtocolError
from spiceserver.proto.channel import ChannelConnection, PongReceived
from spiceserver.proto.channel_client import ChannelClientBase, StateTable
from spiceserver.proto.enums import ChannelType
from spiceserver.proto.messages import base as bm
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import CLIENT, SERVER


class Client(ChannelClientBase):
    def __init__(self, high_water: int | None = 100) -> None:
        super().__init__(ChannelConnection(ChannelType.DISPLAY, SERVER, mini_header=True), ack_window=2, high_water=high_water)
        self.seen: list[object] = []
        self.state = "wait"
        self.tables = {
            "wait": StateTable({d.DisplayInit: self._on_init}, unexpected="error"),
            "ready": StateTable({d.PreferredCompression: self._on_pref}),
        }

    def _on_init(self, msg: d.DisplayInit) -> str:
        self.state = "ready"
        self.seen.append(msg)
        return "init"

    def _on_pref(self, msg: d.PreferredCompression, extra: int) -> int:
        self.seen.append(msg)
        return extra


def peer_bytes(*msgs: bm.Message) -> bytes:
    peer = ChannelConnection(ChannelType.DISPLAY, CLIENT, mini_header=True)
    for m in msgs:
        peer.send(m)
    return peer.data_to_send()


def test_set_ack_goes_first_and_bytes_in_flight_are_counted() -> None:
    c = Client()
    first = c.take_output()
    peer = ChannelConnection(ChannelType.DISPLAY, CLIENT, mini_header=True)
    assert isinstance(peer.receive_data(first)[0], bm.SetAck)
    assert c.inflight == len(first)
    c.written(5)
    assert c.inflight == len(first) - 5
    c.written(10_000)
    assert c.inflight == 0


def test_may_send_stops_at_high_water_and_at_the_ack_window() -> None:
    c = Client(high_water=100)
    c.take_output()
    c.written(10_000)
    c.conn.send(d.DisplayMark())
    assert c.may_send()
    c.inflight = 100
    assert not c.may_send()  # bytes in flight at the high-water mark
    c.inflight = 0
    for _ in range(5):  # 2 * window unacknowledged
        c.conn.send(d.DisplayMark())
    assert not c.may_send()
    unlimited = Client(high_water=None)
    unlimited.inflight = 1 << 40
    assert unlimited.may_send()


def test_dispatch_by_state_with_bound_handlers() -> None:
    c = Client()
    init = d.DisplayInit(pixmap_cache_id=1, pixmap_cache_size=1, glz_dictionary_id=0, glz_dictionary_window_size=0)
    # common messages are never unexpected, even before INIT
    for ev in c.conn.receive_data(peer_bytes(bm.AckSync(generation=1), bm.ClientDisconnecting(time_stamp=0, reason=0))):
        assert c.dispatch(ev) is None
    assert c.dispatch(PongReceived(1, 0.0, 0)) is None
    with pytest.raises(ProtocolError):
        c.dispatch(d.PreferredCompression(image_compression=1))  # not before INIT
    assert c.dispatch(init) == "init" and c.state == "ready"
    assert c.dispatch(d.PreferredCompression(image_compression=1), 7) == 7  # extra args reach the handler
    assert c.dispatch(init) is None  # ready: anything unlisted is ignored
    assert c.seen == [init, d.PreferredCompression(image_compression=1)]
