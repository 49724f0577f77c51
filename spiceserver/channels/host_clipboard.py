"""The host-answered clipboard: the host shares clipboards with the client with no guest agent.

No SPICE server offers this; the real agent's side is spice-vdagent (``src/vdagent/clipboard.c``,
``vdagentd.c``), the client's spice-gtk ``src/channel-main.c`` (``agent_clipboard_grab``,
``agent_clipboard_notify``, ``main_agent_handle_msg``: ``clipboard_serial``, ``agent_max_clipboard``)
and the wire spice-protocol ``spice/vd_agent.h`` (:mod:`spiceserver.proto.vdagent_messages`).

Theory of operation
-------------------

The clipboard is *by demand*: whoever owns a selection (``CLIPBOARD``, ``PRIMARY``, ``SECONDARY``;
:class:`~spiceserver.proto.vdagent_messages.ClipboardSelection`) *grabs* it with the data types it can
give (``UTF8_TEXT``, ``IMAGE_PNG``...: :class:`~spiceserver.proto.vdagent_messages.ClipboardType`);
the other side *requests* one type when it pastes and gets a ``CLIPBOARD`` message with the data;
the owner *releases* the selection when it has nothing any more. A grab by one side ends the other's
ownership.

:class:`ClipboardDuty` answers for the agent and announces ``CLIPBOARD_BY_DEMAND``,
``CLIPBOARD_SELECTION``, ``CLIPBOARD_GRAB_SERIAL``, ``CLIPBOARD_NO_RELEASE_ON_REGRAB`` and
``MAX_CLIPBOARD``:

- the selection prefix is on every clipboard message both ways when the client announced
  ``CLIPBOARD_SELECTION`` (we always do); a client without it has only ``CLIPBOARD``;
- with ``GRAB_SERIAL`` (client announced it) each side counts grabs per selection from 0 at every
  agent start. spice-gtk stamps its grab with its counter and bumps it; it takes an agent's grab only
  when the serial equals its counter (then bumps it) and drops it otherwise (a grab that crossed its
  own). The host agent takes every client grab and sets its counter past the client's serial: when
  grabs cross the client's wins on both sides;
- ``NO_RELEASE_ON_REGRAB``: a new grab replaces the old one with no RELEASE in between (both ways);
- ``MAX_CLIPBOARD``: the client says the largest clipboard it takes (spice-gtk's ``max-clipboard``,
  100 MiB by default, -1 none); larger host data is answered with an empty ``NONE`` clipboard, as
  is a request the host cannot answer. The host agent's own bound is :attr:`ClipboardDuty.max_size`
  (default :data:`DEFAULT_MAX_CLIPBOARD`, spice-gtk's default): a larger client message is a broken
  stream and ends the session (set it to at least the client's ``max-clipboard``).

Host API (:func:`add_clipboard_handler`, any thread): a :class:`HostClipboard` handle with callbacks
for what the client does (sync or async, on the event loop; exceptions are logged):

- ``on_grab(selection, types)``: the client owns ``selection`` now, with those types;
- ``on_release(selection)``: it owns it no more (also when it disconnects);
- ``on_request(selection, type) -> bytes | None``: the client pastes what the host grabbed (with this
  handle); None (or an exception) answers "nothing". An async one runs as its own task, so a slow
  answer does not hold up the session;
- ``on_data(selection, type, data)``: every clipboard the client sent (also the answers to
  :meth:`HostClipboard.request`).

and the host's own actions: :meth:`HostClipboard.grab`, :meth:`HostClipboard.release`,
:meth:`HostClipboard.request` (await the client's data, from any event loop) or
:meth:`HostClipboard.request_future` (a :class:`concurrent.futures.Future`, for threads). The
host's grab stays while no client is there and is offered again to each client when it announces
its capabilities. Several handles may be registered: each hears the client; a request goes to the
handle whose grab is current.

The host agent is the server's ``ServerContext.host_agent``: ``server.host_agent`` (the server's
accessor), or ``ctx.host_agent`` of any channel the host holds (``playback.ctx.host_agent``).

Held messages: a push goes out within the client's agent tokens (spice-gtk gives unlimited ones);
while a client gives none the main channel holds up to ``MAX_PENDING_AGENT_PIECES`` pieces of 2 KiB
and drops (logs) a message beyond that.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..proto.vdagent import AgentCap, AgentMessage, AgentMessageType
from ..proto.vdagent_messages import (
    Clipboard,
    ClipboardGrab,
    ClipboardRelease,
    ClipboardRequest,
    ClipboardSelection,
    ClipboardType,
    MaxClipboard,
)
from .host_agent import AgentDuty, HostAgent, HostAgentClient

__all__ = [
    "DEFAULT_MAX_CLIPBOARD",
    "ClipboardDuty",
    "ClipboardUnavailable",
    "GrabHandler",
    "DataHandler",
    "HostClipboard",
    "ReleaseHandler",
    "RequestHandler",
    "add_clipboard_handler",
]

#: the largest clipboard the host agent takes from a client (spice-gtk's default ``max-clipboard``)
DEFAULT_MAX_CLIPBOARD = 100 << 20
#: selection prefix + serial + type word: what a clipboard message holds besides the data
_OVERHEAD = 12

GrabHandler = Callable[[int, tuple[int, ...]], "Awaitable[None] | None"]
ReleaseHandler = Callable[[int], "Awaitable[None] | None"]
RequestHandler = Callable[[int, int], "Awaitable[bytes | None] | bytes | None"]
DataHandler = Callable[[int, int, bytes], "Awaitable[None] | None"]


class ClipboardUnavailable(LookupError):
    """The client cannot give that clipboard: it does not own the selection (or not that type), it
    released it, answered "nothing", or went away."""


@dataclass
class _ClientState:
    """One client's clipboard state (event loop)."""

    selection: bool  # messages carry the selection prefix
    serial: bool  # grabs carry a serial
    serials: dict[int, int] = field(default_factory=dict)  # the next grab serial per selection
    owned: dict[int, tuple[int, ...]] = field(default_factory=dict)  # selections it grabbed, its types
    max_clipboard: int = -1  # the largest clipboard it takes (-1: no bound)
    pending: list[tuple[int, concurrent.futures.Future[bytes]]] = field(default_factory=list)


class HostClipboard:
    """The host's clipboard handle (made by :func:`add_clipboard_handler`). Methods are safe from any
    thread."""

    def __init__(
        self,
        duty: ClipboardDuty,
        on_grab: GrabHandler | None,
        on_data: DataHandler | None,
        on_request: RequestHandler | None,
        on_release: ReleaseHandler | None,
    ) -> None:
        self.duty = duty
        self.on_grab = on_grab
        self.on_data = on_data
        self.on_request = on_request
        self.on_release = on_release

    def grab(self, selection: int, types: Iterable[int]) -> None:
        """The host owns ``selection`` with data of ``types`` (:class:`ClipboardType`): the clients
        hear it and may request one type (``on_request``).

        Raises:
            ValueError: an unknown selection, or no types.
        """
        sel = _selection(selection)
        tys = tuple(int(t) for t in types)
        if not tys:
            raise ValueError("a clipboard grab needs at least one type")
        self.duty.agent_run(lambda: self.duty.host_grab(self, sel, tys))

    def release(self, selection: int) -> None:
        """The host no longer owns ``selection`` (nothing happens if this handle's grab is not current)."""
        sel = _selection(selection)
        self.duty.agent_run(lambda: self.duty.host_release(self, sel))

    def request_future(self, selection: int, type: int) -> concurrent.futures.Future[bytes]:
        """Ask the client owning ``selection`` for its data of ``type``.

        Returns:
            A future with the data, failing with :class:`ClipboardUnavailable`; cancel it to give up.
        """
        sel = _selection(selection)
        fut: concurrent.futures.Future[bytes] = concurrent.futures.Future()
        self.duty.agent_run(lambda: self.duty.host_request(sel, int(type), fut))
        return fut

    async def request(self, selection: int, type: int, timeout: float | None = 10.0) -> bytes:
        """:meth:`request_future`, awaited (from any event loop).

        Raises:
            ClipboardUnavailable: the client cannot give it.
            TimeoutError: no answer within ``timeout`` seconds.
        """
        fut = self.request_future(selection, type)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)
        finally:
            fut.cancel()

    @property
    def client_grabs(self) -> dict[int, tuple[int, ...]]:
        """What the client owns now: selection -> types."""
        return self.duty.client_grabs

    def close(self) -> None:
        """Stop hearing the client; the handle's grabs are released."""
        self.duty.remove(self)


class ClipboardDuty(AgentDuty):
    """The clipboard by demand, answered by the host (see the module). Active while a
    :class:`HostClipboard` is registered."""

    CAPS = (
        AgentCap.CLIPBOARD_BY_DEMAND,
        AgentCap.CLIPBOARD_SELECTION,
        AgentCap.CLIPBOARD_GRAB_SERIAL,
        AgentCap.CLIPBOARD_NO_RELEASE_ON_REGRAB,
        AgentCap.MAX_CLIPBOARD,
    )
    TYPES = (
        AgentMessageType.CLIPBOARD,
        AgentMessageType.CLIPBOARD_GRAB,
        AgentMessageType.CLIPBOARD_REQUEST,
        AgentMessageType.CLIPBOARD_RELEASE,
        AgentMessageType.MAX_CLIPBOARD,
    )

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._handles: list[HostClipboard] = []
        #: the largest clipboard taken from a client (bytes of data)
        self.max_size = DEFAULT_MAX_CLIPBOARD
        self._host: dict[int, tuple[HostClipboard, tuple[int, ...]]] = {}  # the host's grabs
        self._clients: dict[HostAgentClient, _ClientState] = {}
        self._owner: dict[int, HostAgentClient] = {}  # which client owns a selection
        self._grabs: dict[int, tuple[int, ...]] = {}  # snapshot for client_grabs (under the lock)
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers = {
            AgentMessageType.CLIPBOARD: self._on_clipboard,
            AgentMessageType.CLIPBOARD_GRAB: self._on_grab,
            AgentMessageType.CLIPBOARD_REQUEST: self._on_request,
            AgentMessageType.CLIPBOARD_RELEASE: self._on_release,
            AgentMessageType.MAX_CLIPBOARD: self._on_max_clipboard,
        }

    # -- the host's side (registration any thread; the rest on the loop) ---------------------------

    @property
    def active(self) -> bool:
        """A handle is registered."""
        with self._lock:
            return bool(self._handles)

    @property
    def max_message_size(self) -> int:
        """:attr:`max_size` and the clipboard message's own fields."""
        return self.max_size + _OVERHEAD

    @property
    def client_grabs(self) -> dict[int, tuple[int, ...]]:
        """What the client owns now: selection -> types (any thread)."""
        with self._lock:
            return dict(self._grabs)

    def agent_run(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the event loop (through the host agent; now when not added to one)."""
        if self.agent is not None:
            self.agent.run(fn)
        else:
            fn()

    def add(self, handle: HostClipboard) -> None:
        """Register ``handle`` (any thread)."""
        with self._lock:
            self._handles.append(handle)
        self.changed()

    def remove(self, handle: HostClipboard) -> None:
        """Unregister ``handle`` and release its grabs (any thread)."""
        with self._lock:
            if handle in self._handles:
                self._handles.remove(handle)

        def drop() -> None:
            for sel, (h, _) in list(self._host.items()):
                if h is handle:
                    self.host_release(handle, sel)

        self.agent_run(drop)
        self.changed()

    def _each_handle(self) -> list[HostClipboard]:
        with self._lock:
            return list(self._handles)

    def host_grab(self, handle: HostClipboard, sel: int, types: tuple[int, ...]) -> None:
        """The host grabs ``sel`` (event loop)."""
        self._host[sel] = (handle, types)
        owner = self._owner.pop(sel, None)
        if owner is not None:
            self._clients[owner].owned.pop(sel, None)
            self._snapshot()
        for client, st in self._clients.items():
            msg = self._grab_message(st, sel, types)
            if msg is not None:
                client.push(msg)

    def host_release(self, handle: HostClipboard, sel: int) -> None:
        """The host releases ``sel`` if ``handle``'s grab is current (event loop)."""
        cur = self._host.get(sel)
        if cur is None or cur[0] is not handle:
            return
        del self._host[sel]
        for client, st in self._clients.items():
            if _reaches(st, sel):
                client.push(ClipboardRelease(_prefix(st, sel)).message())

    def host_request(self, sel: int, type: int, fut: concurrent.futures.Future[bytes]) -> None:
        """Ask the owner of ``sel`` for ``type`` (event loop)."""
        if fut.done():
            return
        client = self._owner.get(sel)
        if client is None:
            fut.set_exception(ClipboardUnavailable(f"the client owns no {_sel_name(sel)} selection"))
            return
        st = self._clients[client]
        if type not in st.owned.get(sel, ()):
            fut.set_exception(ClipboardUnavailable(f"the client offers no type {_type_name(type)} in {_sel_name(sel)}"))
            return
        st.pending.append((sel, fut))
        client.push(ClipboardRequest(type, _prefix(st, sel)).message())

    def _grab_message(self, st: _ClientState, sel: int, types: tuple[int, ...]) -> AgentMessage | None:
        if not _reaches(st, sel):
            return None
        serial = None
        if st.serial:
            serial = st.serials.get(sel, 0)
            st.serials[sel] = (serial + 1) & 0xFFFFFFFF
        return ClipboardGrab(types, _prefix(st, sel), serial).message()

    def _snapshot(self) -> None:
        grabs = {sel: self._clients[c].owned[sel] for sel, c in self._owner.items() if sel in self._clients[c].owned}
        with self._lock:
            self._grabs = grabs

    # -- the client's side (event loop) ------------------------------------------------------------

    def _state(self, client: HostAgentClient) -> _ClientState:
        st = self._clients.get(client)
        caps = client.client_caps
        if st is None:
            st = _ClientState(AgentCap.CLIPBOARD_SELECTION in caps, AgentCap.CLIPBOARD_GRAB_SERIAL in caps)
            self._clients[client] = st
        else:  # the caps may have been announced again
            st.selection = AgentCap.CLIPBOARD_SELECTION in caps
            st.serial = AgentCap.CLIPBOARD_GRAB_SERIAL in caps
        return st

    def client_announced(self, client: HostAgentClient) -> None:
        """Offer the host's current grabs to the client."""
        st = self._state(client)
        for sel, (_, types) in self._host.items():
            msg = self._grab_message(st, sel, types)
            if msg is not None:
                client.send(msg)

    def client_gone(self, client: HostAgentClient) -> None:
        """Fail its pending requests; the host hears its selections released."""
        st = self._clients.pop(client, None)
        if st is None:
            return
        for _, fut in st.pending:
            _fail(fut, "the client went away")
        gone = [sel for sel, c in self._owner.items() if c is client]
        for sel in gone:
            del self._owner[sel]
        self._snapshot()
        for sel in gone:
            self._spawn(client, self._tell_release(client, sel))

    async def on_message(self, msg: AgentMessage, client: HostAgentClient) -> None:
        """One clipboard message from ``client``.

        Raises:
            ProtocolError: the body is malformed (the session is closed).
        """
        await self._handlers[AgentMessageType(msg.type)](msg, self._state(client), client)

    async def _on_grab(self, msg: AgentMessage, st: _ClientState, client: HostAgentClient) -> None:
        grab = ClipboardGrab.parse(msg.data, selection=st.selection, serial=st.serial)
        sel = grab.selection or 0
        if not _known(sel, client):
            return
        if grab.serial is not None:
            st.serials[sel] = (grab.serial + 1) & 0xFFFFFFFF
        types = tuple(grab.types)
        client.log.debug("client grabs the %s clipboard: %s", _sel_name(sel), [_type_name(t) for t in types])
        self._host.pop(sel, None)
        prev = self._owner.get(sel)
        if prev is not None and prev is not client:
            self._clients[prev].owned.pop(sel, None)
        self._owner[sel] = client
        st.owned[sel] = types
        self._snapshot()
        for h in self._each_handle():
            if h.on_grab is not None:
                await _call(client, "on_grab", h.on_grab, sel, types)

    async def _on_release(self, msg: AgentMessage, st: _ClientState, client: HostAgentClient) -> None:
        sel = ClipboardRelease.parse(msg.data, selection=st.selection).selection or 0
        if not _known(sel, client):
            return
        client.log.debug("client releases the %s clipboard", _sel_name(sel))
        if st.owned.pop(sel, None) is None:
            return
        if self._owner.get(sel) is client:
            del self._owner[sel]
        self._snapshot()
        keep = []
        for psel, fut in st.pending:
            if psel == sel:
                _fail(fut, f"the client released the {_sel_name(sel)} selection")
            else:
                keep.append((psel, fut))
        st.pending = keep
        await self._tell_release(client, sel)

    async def _tell_release(self, client: HostAgentClient, sel: int) -> None:
        for h in self._each_handle():
            if h.on_release is not None:
                await _call(client, "on_release", h.on_release, sel)

    async def _on_clipboard(self, msg: AgentMessage, st: _ClientState, client: HostAgentClient) -> None:
        clip = Clipboard.parse(msg.data, selection=st.selection)
        sel = clip.selection or 0
        if not _known(sel, client):
            return
        for i, (psel, fut) in enumerate(st.pending):
            if psel == sel:
                del st.pending[i]
                if clip.type == ClipboardType.NONE:
                    _fail(fut, f"the client has no data in its {_sel_name(sel)} selection")
                elif not fut.done():
                    fut.set_result(clip.data)
                break
        else:
            client.log.debug("unrequested %s clipboard from the client", _sel_name(sel))
        if clip.type == ClipboardType.NONE:
            return
        for h in self._each_handle():
            if h.on_data is not None:
                await _call(client, "on_data", h.on_data, sel, clip.type, clip.data)

    async def _on_request(self, msg: AgentMessage, st: _ClientState, client: HostAgentClient) -> None:
        req = ClipboardRequest.parse(msg.data, selection=st.selection)
        sel = req.selection or 0
        if not _known(sel, client):
            return
        grab = self._host.get(sel)
        if grab is None or req.type not in grab[1] or grab[0].on_request is None:
            client.log.debug(
                "client requests %s from the %s clipboard: not the host's", _type_name(req.type), _sel_name(sel)
            )
            client.send(Clipboard(ClipboardType.NONE, b"", _prefix(st, sel)).message())
            return
        handler = grab[0].on_request
        try:
            result = handler(sel, req.type)
        except Exception:
            client.log.exception("clipboard request handler %r failed", handler)
            result = None
        if inspect.isawaitable(result):
            self._spawn(client, self._answer_later(client, st, sel, req.type, result))
        else:
            client.send(self._answer(client, st, sel, req.type, result))

    async def _answer_later(
        self, client: HostAgentClient, st: _ClientState, sel: int, type: int, result: Awaitable[Any]
    ) -> None:
        try:
            data = await result
        except Exception:
            client.log.exception("clipboard request handler failed")
            data = None
        client.push(self._answer(client, st, sel, type, data))

    def _answer(self, client: HostAgentClient, st: _ClientState, sel: int, ctype: int, data: object) -> AgentMessage:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            if data is not None:
                client.log.error("clipboard request handler returned %s, not bytes", type(data).__name__)
            return Clipboard(ClipboardType.NONE, b"", _prefix(st, sel)).message()
        data = bytes(data)
        if st.max_clipboard >= 0 and len(data) > st.max_clipboard:
            client.log.warning(
                "host clipboard of %d bytes not sent: the client takes at most %d", len(data), st.max_clipboard
            )
            return Clipboard(ClipboardType.NONE, b"", _prefix(st, sel)).message()
        return Clipboard(ctype, data, _prefix(st, sel)).message()

    async def _on_max_clipboard(self, msg: AgentMessage, st: _ClientState, client: HostAgentClient) -> None:
        st.max_clipboard = MaxClipboard.parse(msg.data).max
        client.log.debug("client max clipboard %d", st.max_clipboard)

    def _spawn(self, client: HostAgentClient, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _selection(selection: int) -> int:
    try:
        return int(ClipboardSelection(selection))
    except ValueError:
        raise ValueError(f"unknown clipboard selection {selection}") from None


def _known(sel: int, client: HostAgentClient) -> bool:
    if sel <= ClipboardSelection.SECONDARY:
        return True
    client.log.warning("clipboard message for unknown selection %d ignored", sel)
    return False


def _reaches(st: _ClientState, sel: int) -> bool:
    """The client hears about ``sel`` (without the selection prefix only ``CLIPBOARD``)."""
    return st.selection or sel == ClipboardSelection.CLIPBOARD


def _prefix(st: _ClientState, sel: int) -> int | None:
    return sel if st.selection else None


def _fail(fut: concurrent.futures.Future[bytes], why: str) -> None:
    if not fut.done():
        fut.set_exception(ClipboardUnavailable(why))


async def _call(client: HostAgentClient, what: str, fn: Callable[..., Any], *args: Any) -> None:
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        client.log.exception("clipboard %s handler %r failed", what, fn)


def _sel_name(sel: int) -> str:
    try:
        return ClipboardSelection(sel).name
    except ValueError:
        return str(sel)


def _type_name(t: int) -> str:
    try:
        return ClipboardType(t).name
    except ValueError:
        return str(t)


def add_clipboard_handler(
    agent: HostAgent,
    on_grab: GrabHandler | None = None,
    on_data: DataHandler | None = None,
    on_request: RequestHandler | None = None,
    on_release: ReleaseHandler | None = None,
) -> HostClipboard:
    """Share clipboards with the client through ``agent`` (any thread); the host agent becomes active
    with the clipboard capabilities. See the module for the callbacks.

    Returns:
        The handle: :meth:`HostClipboard.grab`, :meth:`~HostClipboard.release`,
        :meth:`~HostClipboard.request`, :meth:`~HostClipboard.close`.
    """
    duty = agent.duty(ClipboardDuty)
    handle = HostClipboard(duty, on_grab, on_data, on_request, on_release)
    duty.add(handle)
    return handle
