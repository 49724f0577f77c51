"""One client's cursor channel, inside the worker: INIT with the current cursor, then SET/MOVE/HIDE/TRAIL.

Counterpart of spice ``server/cursor-channel.cpp`` (``cursor_fill``, ``red_marshall_cursor_init``,
``process_cmd``) and ``cursor-channel-client.cpp`` (the 256-entry cursor cache). A shape the client
already holds goes as FROM_CACHE; a new one with CACHE_ME, evicting the oldest entry with INVAL_ONE.
In client mouse mode MOVE is not sent (the client draws the cursor where its pointer is).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from ..proto.channel import ChannelConnection
from ..proto.channel_client import ACK_WINDOW, ChannelClientBase
from ..proto.enums import ChannelType, CursorFlags
from ..proto.messages import cursor as cm
from ..proto.messages.base import SERVER, Message, Migrate, Point16
from .messages import ClientConnected

__all__ = ["CursorChannelClient", "CursorState", "CursorShape", "CURSOR_CACHE_SIZE"]

CURSOR_CACHE_SIZE = 256


@dataclass(frozen=True)
class CursorShape:
    """A cursor image as the wire carries it: header (unique id, type, size, hot spot) + data."""

    unique: int
    type: int
    width: int
    height: int
    hot_x: int
    hot_y: int
    data: bytes
    cacheable: bool = True


@dataclass
class CursorState:
    """The device's cursor (shared by every cursor client of a worker)."""

    shape: CursorShape | None = None
    x: int = 0
    y: int = 0
    visible: bool = False
    trail_length: int = 0
    trail_frequency: int = 0


class CursorChannelClient(ChannelClientBase):
    """The worker-side state of one cursor channel connection: its pipe of messages and cache.

    The client sends nothing but common messages on this channel (ACK, ACK_SYNC, PONG...): the
    one state's table is empty and ignores anything else. The bytes in flight are counted but do
    not stop production (cursor messages are small).
    """

    def __init__(self, info: ClientConnected, state: CursorState) -> None:
        super().__init__(ChannelConnection(ChannelType.CURSOR, SERVER, mini_header=info.mini_header, max_message_size=info.max_message_size), ack_window=ACK_WINDOW, high_water=None)
        self.info = info
        self.cc_id = info.cc_id
        self.cache: OrderedDict[int, None] = OrderedDict()
        self.pipe: deque[Message] = deque()
        self.pipe.append(
            cm.CursorInit(
                position=Point16(x=state.x, y=state.y),
                trail_length=state.trail_length,
                trail_frequency=state.trail_frequency,
                visible=int(state.visible),
                cursor=self._cursor(state.shape),
            )
        )

    def _cursor(self, shape: CursorShape | None) -> cm.Cursor:
        if shape is None:
            return cm.Cursor(flags=CursorFlags.NONE, header=None, data=b"")
        header = cm.CursorHeader(unique=shape.unique, type=shape.type, width=shape.width, height=shape.height, hot_spot_x=shape.hot_x, hot_spot_y=shape.hot_y)
        if shape.cacheable and shape.unique in self.cache:
            self.cache.move_to_end(shape.unique)
            return cm.Cursor(flags=CursorFlags.FROM_CACHE, header=header, data=b"")
        flags = 0
        if shape.cacheable:
            if len(self.cache) >= CURSOR_CACHE_SIZE:
                old, _ = self.cache.popitem(last=False)
                self.pipe.append(cm.CursorInvalOne(id=old))  # before the SET that needs the room
            self.cache[shape.unique] = None
            flags = CursorFlags.CACHE_ME
        return cm.Cursor(flags=flags, header=header, data=shape.data)

    def push_set(self, state: CursorState) -> None:
        """Queue a CURSOR_SET for ``state`` (the shape from the client's cache when it holds it)."""
        self.pipe.append(cm.CursorSet(position=Point16(x=state.x, y=state.y), visible=int(state.visible), cursor=self._cursor(state.shape)))

    def push_move(self, state: CursorState) -> None:
        """Queue a CURSOR_MOVE to ``state``'s position."""
        self.pipe.append(cm.CursorMove(position=Point16(x=state.x, y=state.y)))

    def push_hide(self) -> None:
        """Queue a CURSOR_HIDE."""
        self.pipe.append(cm.CursorHide())

    def push_trail(self, state: CursorState) -> None:
        """Queue a CURSOR_TRAIL with ``state``'s trail."""
        self.pipe.append(cm.CursorTrail(length=state.trail_length, frequency=state.trail_frequency))

    def push_reset(self) -> None:
        """Empty the cache mirror and queue a CURSOR_RESET (the client drops its cache)."""
        self.cache.clear()
        self.pipe.append(cm.CursorReset())

    @property
    def pipe_size(self) -> int:
        """Messages queued and not yet marshalled (what holds the cursor ring back: :mod:`.ring_gate`)."""
        return len(self.pipe)

    def on_data(self, data: bytes) -> None:
        """Bytes from the client; raises ProtocolError if they are bad."""
        for ev in self.conn.receive_data(data):
            self.dispatch(ev)

    def migrate(self) -> None:
        """The session migrates: SPICE_MSG_MIGRATE with no flags (the cursor carries no data)."""
        self.pipe.append(Migrate(flags=0))

    def produce(self) -> bytes:
        """Marshal queued messages while the ack window allows; returns the bytes for reds."""
        while self.pipe and self.may_send():
            self.conn.send(self.pipe.popleft())
        return self.take_output()
