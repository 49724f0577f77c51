"""Adding a channel is one module plus one registration line: a toy port channel, end to end.

The module below is what a new channel looks like (docs/architecture.md, "Adding a channel"): a
``LoopChannel`` with its shared state and host-facing method, a ``ChannelClient`` with a dispatch
table of bound handlers. ``server.register_channel(EchoPort, ...)`` is the one line; the test client links to it.
"""

from __future__ import annotations

import asyncio

from spiceserver.channels.base import ChannelClient, Link, LoopChannel, ServerContext
from spiceserver.channels.session import Session
from spiceserver.proto.channel import ChannelConnection
from spiceserver.proto.channel_client import StateTable
from spiceserver.proto.enums import ChannelType
from spiceserver.proto.messages import main as mm
from spiceserver.proto.messages import port as pm
from spiceserver.proto.messages import spicevmc as vm
from tests.conftest import Running
from tests.support.client import connect

# --- the channel module ---------------------------------------------------------------------------


class EchoPort(LoopChannel):
    """A named port that echoes what a client sends and lets the host send events to every client."""

    TYPE = ChannelType.PORT

    def __init__(self, ctx: ServerContext, channel_id: int, name: bytes) -> None:
        super().__init__(ctx, channel_id)
        self.port_name = name
        self.received: list[bytes] = []

    def create_client(self, conn: ChannelConnection, link: Link, session: Session) -> EchoPortClient:
        return EchoPortClient(self, conn, link, session)

    def send_event(self, event: int) -> None:
        """Host side, any thread."""
        self.broadcast(lambda cc: cc.conn.send(pm.PortEvent(event=event)))


class EchoPortClient(ChannelClient):
    def __init__(self, port: EchoPort, conn: ChannelConnection, link: Link, session: Session) -> None:
        super().__init__(conn, link, session)
        self.port = port
        self.tables = {None: StateTable({vm.ClientSpicevmcData: self._on_data})}

    async def start(self, now: float) -> None:
        self.conn.send(pm.PortInit(name=self.port.port_name + b"\0", opened=1))

    def _on_data(self, msg: vm.ClientSpicevmcData, now: float) -> None:
        self.port.received.append(msg.data)
        self.conn.send(vm.SpicevmcData(data=msg.data[::-1]))


# --- the test -------------------------------------------------------------------------------------


async def test_a_channel_is_one_module_and_one_registration_line(running: Running) -> None:
    s = await connect(running.ep)
    await s.main.send(mm.AttachChannels())
    await s.main.expect(mm.ChannelsList, skip=(mm.MouseMode,))
    port = running.server.register_channel(EchoPort, 3, b"org.example.echo")  # <- the registration line
    late = await s.main.expect(mm.ChannelsList, skip=(mm.MouseMode,))  # announced to the attached client
    assert [(c.type, c.id) for c in late.channels] == [(ChannelType.PORT, 3)]
    ch = await s.link(ChannelType.PORT, 3)
    assert await ch.expect(pm.PortInit) == pm.PortInit(name=b"org.example.echo\0", opened=1)
    await ch.send(vm.ClientSpicevmcData(data=b"hello"))
    assert (await ch.expect(vm.SpicevmcData)).data == b"olleh"
    assert port.received == [b"hello"]
    await asyncio.to_thread(port.send_event, 1)  # from a host thread
    assert (await ch.expect(pm.PortEvent)).event == 1
    assert running.server.channel_ids()[-1] == (ChannelType.PORT, 3)


async def test_a_client_transport_post_runs_on_the_loop_and_writes(running: Running) -> None:
    """``Transport.post(fn)`` from a host thread: ``fn`` runs on the event loop, then the client's
    queued messages are written (what a channel's per-client host API builds on)."""
    import threading

    s = await connect(running.ep)
    port = running.server.register_channel(EchoPort, 4, b"org.example.post")
    ch = await s.link(ChannelType.PORT, 4)
    await ch.expect(pm.PortInit)
    loop_thread = threading.get_ident()
    ran_on: list[int] = []
    (cc,) = port.clients
    assert cc.transport is not None

    def queue_event() -> None:
        ran_on.append(threading.get_ident())
        cc.conn.send(pm.PortEvent(event=2))

    await asyncio.to_thread(cc.transport.post, queue_event)
    assert (await ch.expect(pm.PortEvent)).event == 2
    assert ran_on == [loop_thread]
