"""A pure-Python asyncio SPICE client built only on :mod:`spiceserver.proto` (plus the ticket helper).

It links any channel, authenticates, sends any message and receives every message, answering
SET_ACK and PING itself through :class:`~spiceserver.proto.channel.ChannelConnection` in the client
role. Used by the unit and integration tests.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TypeVar

from spiceserver.proto.channel import ChannelConnection
from spiceserver.proto.enums import ChannelType, CommonCap, LinkErr
from spiceserver.proto.link import (
    ClientLink,
    LinkMess,
    LinkReply,
    LinkReplyReceived,
    LinkResult,
    caps_to_words,
    has_cap,
)
from spiceserver.proto.messages import main as mm
from spiceserver.proto.messages.base import CLIENT, Message
from spiceserver.ticket import encrypt_ticket

M = TypeVar("M", bound=Message)

DEFAULT_COMMON_CAPS = (CommonCap.PROTOCOL_AUTH_SELECTION, CommonCap.AUTH_SPICE, CommonCap.MINI_HEADER)


class LinkFailed(Exception):
    def __init__(self, code: int, stage: str) -> None:
        super().__init__(f"link failed at {stage}: {LinkErr(code).name if code in LinkErr._value2member_map_ else code}")
        self.code = code
        self.stage = stage


@dataclass
class Endpoint:
    host: str = "127.0.0.1"
    port: int | None = None
    ssl: ssl.SSLContext | None = None
    unix: str | None = None
    #: tunnel the channels through a WebSocket (the server's same-port WebSocket support)
    websocket: bool = False
    origin: str | None = None


class WebSocketStream:
    """Client side of a WebSocket tunnel with the StreamReader/StreamWriter calls this client uses
    (websockets' sans-IO ClientProtocol over an asyncio stream)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proto: Any) -> None:
        self.reader, self.writer, self.proto = reader, writer, proto
        self.buf = bytearray()
        self.eof = False

    @classmethod
    async def open(cls, ep: Endpoint, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> WebSocketStream:
        from websockets.client import ClientProtocol
        from websockets.http11 import Response
        from websockets.uri import parse_uri

        scheme = "wss" if ep.ssl else "ws"
        proto = ClientProtocol(parse_uri(f"{scheme}://{ep.host}:{ep.port or 80}/"), subprotocols=["binary"], origin=ep.origin, max_size=None)  # type: ignore[list-item,arg-type]
        proto.send_request(proto.connect())
        stream = cls(reader, writer, proto)
        stream._flush()
        while True:
            data = await reader.read(65536)
            if not data:
                raise LinkFailed(LinkErr.ERROR, "websocket eof")
            proto.receive_data(data)
            for ev in proto.events_received():
                if isinstance(ev, Response):
                    if ev.status_code != 101:
                        raise LinkFailed(LinkErr.ERROR, f"websocket {ev.status_code}")
                    stream._take(proto.events_received())
                    return stream

    def _take(self, events: list[Any]) -> None:
        from websockets.frames import Opcode

        for ev in events:
            if getattr(ev, "opcode", None) is Opcode.BINARY:
                self.buf += ev.data
            elif getattr(ev, "opcode", None) is Opcode.CLOSE:
                self.eof = True

    def _flush(self) -> None:
        for chunk in self.proto.data_to_send():
            if chunk:
                self.writer.write(chunk)

    async def read(self, n: int = -1) -> bytes:
        while not self.buf and not self.eof:
            data = await self.reader.read(65536)
            if not data:
                self.eof = True
                break
            self.proto.receive_data(data)
            self._take(self.proto.events_received())
            self._flush()
        out = bytes(self.buf[:n] if n >= 0 else self.buf)
        del self.buf[: len(out)]
        return out

    def write(self, data: bytes) -> None:
        self.proto.send_binary(data)
        self._flush()

    async def drain(self) -> None:
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()

    async def wait_closed(self) -> None:
        await self.writer.wait_closed()


@dataclass
class ClientChannel:
    """One linked channel."""

    channel_type: int
    channel_id: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    conn: ChannelConnection
    reply: LinkReply
    received: deque[Message] = field(default_factory=deque)

    async def send(self, msg: Message) -> None:
        self.conn.send(msg)
        await self.flush()

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def recv(self, timeout: float = 5.0) -> Message:
        """The next message from the server (SET_ACK / PING are answered automatically)."""
        while not self.received:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise EOFError("server closed the channel")
            for ev in self.conn.receive_data(data):
                if isinstance(ev, Message):
                    self.received.append(ev)
            await self.flush()
        return self.received.popleft()

    async def expect(self, cls: type[M], timeout: float = 5.0, *, skip: tuple[type[Message], ...] = ()) -> M:
        """Receive until a ``cls`` arrives, allowing only ``skip`` types (and pings, notifies) before it."""
        from spiceserver.proto.messages.base import Notify, Ping

        while True:
            msg = await self.recv(timeout)
            if isinstance(msg, cls):
                return msg
            if isinstance(msg, (Ping, Notify, *skip)) and not issubclass(cls, Notify):
                continue
            raise AssertionError(f"expected {cls.__name__}, got {msg!r}")

    async def closed(self, timeout: float = 5.0) -> bool:
        """True once the server closes the connection (messages before that are kept)."""
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    return True
                for ev in self.conn.receive_data(data):
                    if isinstance(ev, Message):
                        self.received.append(ev)
        except (ConnectionError, OSError):
            return True

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def open_stream(ep: Endpoint) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if ep.unix is not None:
        reader, writer = await asyncio.open_unix_connection(ep.unix)
    else:
        assert ep.port is not None
        reader, writer = await asyncio.open_connection(ep.host, ep.port, ssl=ep.ssl, server_hostname=ep.host if ep.ssl else None)
    if ep.websocket:
        ws = await WebSocketStream.open(ep, reader, writer)
        return ws, ws  # type: ignore[return-value]
    return reader, writer


async def link_channel(
    ep: Endpoint,
    channel_type: int,
    channel_id: int = 0,
    *,
    connection_id: int = 0,
    password: str = "",
    common_caps: tuple[int, ...] = DEFAULT_COMMON_CAPS,
    channel_caps: tuple[int, ...] = (),
    timeout: float = 10.0,
) -> ClientChannel:
    """Link one channel; raises LinkFailed with the server's error code."""
    reader, writer = await open_stream(ep)
    link = ClientLink(LinkMess(connection_id, channel_type, channel_id, caps_to_words(set(common_caps)), caps_to_words(set(channel_caps))))
    writer.write(link.data_to_send())
    reply: LinkReply | None = None
    try:
        while True:
            data = await asyncio.wait_for(reader.read(4096), timeout)
            if not data:
                raise LinkFailed(LinkErr.ERROR, "eof")
            link.receive_data(data)
            for ev in link.events():
                if isinstance(ev, LinkReplyReceived):
                    reply = ev.reply
                    if reply.error != LinkErr.OK:
                        raise LinkFailed(reply.error, "reply")
                    link.send_ticket(
                        encrypt_ticket(reply.pub_key, password),
                        auth_selection=CommonCap.PROTOCOL_AUTH_SELECTION in common_caps,
                    )
                elif isinstance(ev, LinkResult):
                    if ev.error != LinkErr.OK:
                        raise LinkFailed(ev.error, "result")
                    assert reply is not None
                    mini = CommonCap.MINI_HEADER in common_caps and has_cap(reply.common_caps, CommonCap.MINI_HEADER)
                    conn = ChannelConnection(channel_type, CLIENT, mini_header=mini, max_message_size=256 << 20)
                    ch = ClientChannel(channel_type, channel_id, reader, writer, conn, reply)
                    leftover = link.leftover()
                    if leftover:
                        ch.received.extend(e for e in conn.receive_data(leftover) if isinstance(e, Message))
                    return ch
            out = link.data_to_send()
            if out:
                writer.write(out)
                await writer.drain()
    except BaseException:
        writer.close()
        raise


@dataclass
class Session:
    main: ClientChannel
    init: mm.Init
    ep: Endpoint
    password: str

    @property
    def session_id(self) -> int:
        return self.init.session_id

    async def link(self, channel_type: int, channel_id: int = 0, **kw: object) -> ClientChannel:
        return await link_channel(self.ep, channel_type, channel_id, connection_id=self.session_id, password=self.password, **kw)  # type: ignore[arg-type]


async def connect(ep: Endpoint, *, password: str = "", main_caps: tuple[int, ...] = (1, 2)) -> Session:
    """Link the main channel and read INIT."""
    main = await link_channel(ep, ChannelType.MAIN, 0, password=password, channel_caps=main_caps)
    init = await main.expect(mm.Init)
    return Session(main, init, ep, password)


async def http_exchange(port: int, request: bytes, host: str = "127.0.0.1") -> bytes:
    """Send one raw HTTP request (then EOF) and return everything the server answers."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data
