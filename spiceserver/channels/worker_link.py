"""Channels whose clients live on a display worker thread: the loop side moves their bytes.

Counterpart of the part of spice ``server/red-channel.cpp`` / ``red-qxl.cpp`` that hands a display
or cursor channel client to the worker thread (``red_qxl_*_connect``), and of the write side of
``red-channel-client.cpp`` for those clients.

The worker owns the client's protocol state (its sans-IO connection, pipe and caches). The event
loop keeps the socket, because an asyncio TLS transport cannot move to another thread: it posts
what the client sends (``ClientData``), writes what the worker produces (``ClientOutput``), and
after each write has drained tells the worker how many bytes left (``ClientWritten``), which is the
worker's flow control together with the ack window.

Input has back-pressure too: the worker reports the client bytes it has handled
(``ClientConsumed``), and the loop stops reading a connection while more than
:data:`MAX_UNPROCESSED_INPUT` of its bytes wait in the worker's queue (libspice reads these sockets on
the worker thread itself, one message at a time), so a client flooding ACKs cannot fill memory.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from ..transport import READ_CHUNK, Transport
from ..worker.messages import (
    ClientClose,
    ClientConnected,
    ClientConsumed,
    ClientData,
    ClientDisconnected,
    ClientMigrate,
    ClientOutput,
    ClientWritten,
    DisplayInfo,
)
from ..worker.worker import DisplayWorker
from .base import Channel, Link, ServerContext
from .session import Session

__all__ = ["WorkerBridge", "WorkerChannel", "MAX_UNPROCESSED_INPUT"]

#: client bytes posted to the worker and not yet handled there above which reds stops reading that
#: connection (so at most this plus one read, ``READ_CHUNK``, wait in the worker's queue)
MAX_UNPROCESSED_INPUT = 256 << 10


@dataclass(eq=False)
class _Client:
    """The loop's side of one channel client on the worker: its transport, write and read accounting.

    Attributes:
        unprocessed: bytes posted to the worker (ClientData) and not yet reported handled.
        peak_unprocessed: the most ``unprocessed`` has been (for tests and metrics).
        room: set when reading may go on (``unprocessed`` fell back under the limit, or closing).
    """

    transport: Transport
    pending: int = 0
    draining: bool = False
    unprocessed: int = 0
    peak_unprocessed: int = 0
    room: asyncio.Event = field(default_factory=asyncio.Event)
    session_id: int = 0

    def close(self) -> None:
        """Close the connection and wake its reader."""
        self.transport.close()
        self.room.set()


class WorkerBridge:
    """The event loop's end of one display worker: its clients' transports and the worker's messages.

    Args:
        ctx: the server's shared services.
        worker: the display worker (started by the caller).
        on_display_info: called on the loop when the primary surface changes size.
    """

    def __init__(self, ctx: ServerContext, worker: DisplayWorker, on_display_info: Callable[[int, int], None]) -> None:
        self.ctx = ctx
        self.worker = worker
        self._on_display_info = on_display_info
        self._clients: dict[int, _Client] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        ep = worker.dispatcher.loop_side
        ep.register_handler(ClientOutput, self._on_output)
        ep.register_handler(ClientConsumed, self._on_consumed)
        ep.register_handler(ClientClose, self._on_close)
        ep.register_handler(DisplayInfo, self._on_info)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Handle the worker's messages on ``loop`` (once)."""
        if self._loop is None:
            self._loop = loop
            ep = self.worker.dispatcher.loop_side
            loop.add_reader(ep.sock, ep.drain)

    async def close(self) -> None:
        """Stop the worker thread (the clients are gone already)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._loop is not None:
            self._loop.remove_reader(self.worker.dispatcher.loop_side.sock)
            self._loop = None
        await asyncio.to_thread(self.worker.stop)

    async def serve(self, channel: Channel, link: Link, session: Session) -> None:
        """Hand one linked connection to the worker and move its bytes until it ends."""
        ctx = self.ctx
        info = ctx.listeners.connected(session.infos, session.id, channel.type, channel.id, link.kind, link.peer, str(session.role))
        name = info.channel
        cc_id = next(self._ids)

        def count_out(n: int) -> None:
            ctx.traffic[name, "out"] += n

        transport = Transport(link.writer, ctx.gate, None, count_out, link.log, link.message_cuts())
        client = self._clients[cc_id] = _Client(transport, session_id=session.id)
        ctx.open_channels[name] += 1
        post = self.worker.dispatcher.loop_side.post
        extra = link.log.extra or {}
        label = f"{extra.get('conn', '')} {extra.get('peer', '')} {extra.get('channel', '')}".strip()
        mess = link.mess
        post(
            ClientConnected(
                cc_id, mess.channel_type, mess.channel_id, link.mini_header, mess.common_caps, mess.channel_caps,
                session.id, label, session.low_bandwidth, channel.max_message_size,
                migrated=session.migration is not None and session.migration.seamless,
            )
        )  # fmt: skip
        session.closers.append(client.close)
        link.log.info("channel linked to session %#x (worker %s)", session.id, self.worker.name)

        def to_worker(data: bytes) -> None:
            ctx.traffic[name, "in"] += len(data)
            client.unprocessed += len(data)
            client.peak_unprocessed = max(client.peak_unprocessed, client.unprocessed)
            post(ClientData(cc_id, data))

        try:
            if link.leftover:
                to_worker(link.leftover)
            while not transport.is_closing:
                if client.unprocessed > MAX_UNPROCESSED_INPUT:
                    client.room.clear()
                    await client.room.wait()
                    continue
                data = await link.reader.read(READ_CHUNK)
                if not data:
                    link.log.info("client closed the channel")
                    break
                to_worker(data)
        except OSError as exc:  # ConnectionError, ssl.SSLError
            link.log.info("connection lost: %s", exc)
        finally:
            post(ClientDisconnected(cc_id))
            self._clients.pop(cc_id, None)
            ctx.open_channels[name] -= 1
            ctx.listeners.gone(session.infos, info)
            if client.close in session.closers:
                session.closers.remove(client.close)

    # --- from the worker (event loop) ----------------------------------------------------------

    def _on_output(self, msg: ClientOutput) -> None:
        client = self._clients.get(msg.cc_id)
        if client is None or client.transport.is_closing:
            return
        client.transport.write(msg.data)
        client.pending += len(msg.data)
        if not client.draining:
            client.draining = True
            task = asyncio.get_running_loop().create_task(self._drain(msg.cc_id, client))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drain(self, cc_id: int, client: _Client) -> None:
        """Report written bytes to the worker as the transport takes them (its flow control)."""
        try:
            while client.pending and not client.transport.is_closing:
                n = client.pending
                await client.transport.drain()
                client.pending -= n
                self.worker.dispatcher.loop_side.post(ClientWritten(cc_id, n))
        except OSError:
            pass
        finally:
            client.draining = False

    def _on_consumed(self, msg: ClientConsumed) -> None:
        client = self._clients.get(msg.cc_id)
        if client is not None:
            client.unprocessed = max(0, client.unprocessed - msg.nbytes)
            if client.unprocessed <= MAX_UNPROCESSED_INPUT:
                client.room.set()

    def migrate(self, session_id: int) -> None:
        """SPICE_MSG_MIGRATE (and the display's MIGRATE_DATA) to the session's clients of this worker."""
        for cc_id, client in self._clients.items():
            if client.session_id == session_id:
                self.worker.dispatcher.loop_side.post(ClientMigrate(cc_id))

    def unprocessed_input(self) -> dict[int, tuple[int, int]]:
        """Per client id: (bytes of its input waiting in the worker now, the most there ever were)."""
        return {cc_id: (c.unprocessed, c.peak_unprocessed) for cc_id, c in self._clients.items()}

    def _on_close(self, msg: ClientClose) -> None:
        client = self._clients.get(msg.cc_id)
        if client is not None:
            self.ctx.stats["protocol_errors"] += 1
            client.close()

    def _on_info(self, msg: DisplayInfo) -> None:
        self._on_display_info(msg.width, msg.height)


class WorkerChannel(Channel):
    """A channel (display or cursor) whose clients are served by a display worker."""

    #: libspice ``CommonGraphicsChannelClient`` ``CHANNEL_RECEIVE_BUF_SIZE``: display and cursor
    #: clients send only small messages (our display migration data is under 40 bytes)
    MAX_MESSAGE_SIZE = 1024

    def __init__(self, ctx: ServerContext, bridge: WorkerBridge, channel_id: int, caps: tuple[int, ...] = ()) -> None:
        super().__init__(ctx, channel_id, caps)
        self.bridge = bridge

    async def serve(self, link: Link) -> None:
        """Hand the connection to the worker (see :class:`WorkerBridge`)."""
        session = self.join(link)
        if session is None:
            return
        try:
            if session.migration is not None and not await session.migration.wait_linkable():
                return
            await self.bridge.serve(self, link, session)
        finally:
            self.leave(session)
