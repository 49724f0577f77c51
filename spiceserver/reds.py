"""The server core: listeners, the link handshake and ticket auth, sessions, channel registry.

Counterpart of spice ``server/reds.cpp`` (listeners, ``reds_handle_*link*``, ``reds_handle_ticket``,
sessions, mouse mode) and ``red-stream.cpp`` (plain / TLS / Unix transports). This is the only module
that does socket I/O: everything below it is sans-IO (:mod:`spiceserver.proto`) or a channel object
(:mod:`spiceserver.channels`) that this module drives.

One asyncio task serves each connection: it reads the link with a deadline and a size limit (the
sans-IO :class:`~spiceserver.proto.link.ServerLink` checks every field before anything is buffered),
then feeds the channel's :class:`~spiceserver.proto.channel.ChannelConnection` and hands the messages
to the channel client, awaiting device callbacks in order. A protocol error closes only that
connection, with the reason logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .channels.base import ChannelClient
from .channels.inputs import InputsChannelClient
from .channels.main import MainChannelClient
from .codecs import warmup
from .config import ChannelSecurity, ServerConfig
from .errors import ConfigError, LinkError, ProtocolError
from .framebuffer import FramebufferDisplay
from .interfaces import Keyboard, Mouse, Tablet
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import DisplayMetrics, Metrics
from .proto.channel import ChannelConnection
from .proto.enums import CHANNEL_NAMES, ChannelType, CommonCap, InputsCap, LinkErr, MainCap, MouseMode
from .proto.link import LinkMess, LinkRequest, ServerLink, TicketReceived, caps_to_words, has_cap
from .proto.messages.base import SERVER
from .qxl import QXLDevice, QXLDeviceConfig
from .sessions import (
    DISPLAY_CAPS,
    ChannelDef,
    ChannelEvent,
    ChannelFactory,
    ChannelListeners,
    ClientInfo,
    ConnLog,
    Session,
    channel_label,
)
from .ticket import LinkKey, Ticket
from .web import HTTP_PREFIX, Closed, HttpGet, Payload, StaticFiles, Upgraded, WebConnection, WebOptions
from .worker.compression import DisplaySettings
from .worker.messages import (
    ClientClose,
    ClientConnected,
    ClientData,
    ClientDisconnected,
    ClientOutput,
    ClientWritten,
    DisplayInfo,
)
from .worker.qxl_source import QXLWorkerBackend
from .worker.record import Recorder
from .worker.worker import DisplayWorker

__all__ = ["SpiceServer", "Session"]

log = logging.getLogger("spiceserver")

_READ_CHUNK = 65536


class _Reader(Protocol):
    """What reds reads with: an ``asyncio.StreamReader`` or a :class:`_WebSocketStream`."""

    async def read(self, n: int = -1) -> bytes: ...


class _Writer(Protocol):
    """What reds writes with: an ``asyncio.StreamWriter`` or a :class:`_WebSocketStream`."""

    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def close(self) -> None: ...
    def is_closing(self) -> bool: ...
    async def wait_closed(self) -> None: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


class _WebSocketStream:
    """A connection that became a WebSocket: SPICE bytes in and out of binary messages.

    Offers the reader and writer methods reds uses, so the link and the channels run over it
    unchanged (the framing is :class:`~spiceserver.web.WebConnection`'s, sans-IO).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, web: WebConnection, clog: ConnLog) -> None:
        self._reader = reader
        self._writer = writer
        self._web = web
        self._clog = clog
        self._buf = bytearray()
        self._eof = False

    def feed(self, events: list[Any]) -> None:
        for ev in events:
            if isinstance(ev, Payload):
                self._buf += ev.data
            elif isinstance(ev, Closed):
                self._clog.info("WebSocket: %s", ev.reason)
                self._eof = True
        self._flush()

    async def read(self, n: int = -1) -> bytes:
        while not self._buf and not self._eof:
            data = await self._reader.read(_READ_CHUNK)
            self.feed(self._web.receive_data(data) if data else self._web.receive_eof())
        if n < 0 or n >= len(self._buf):
            out = bytes(self._buf)
            self._buf.clear()
        else:
            out = bytes(self._buf[:n])
            del self._buf[:n]
        return out

    def write(self, data: bytes) -> None:
        self._web.send(data)
        self._flush()

    def _flush(self) -> None:
        out = self._web.data_to_send()
        if out and not self._writer.is_closing():
            self._writer.write(out)
        if self._web.close_transport:
            self._writer.close()

    async def drain(self) -> None:
        await self._writer.drain()

    def close(self) -> None:
        self._web.close()
        self._flush()
        self._writer.close()

    def is_closing(self) -> bool:
        return self._writer.is_closing()

    async def wait_closed(self) -> None:
        await self._writer.wait_closed()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._writer.get_extra_info(name, default)


@dataclass(eq=False)
class _WorkerConn:
    """reds' side of a channel client that lives on a worker: the transport and write accounting."""

    writer: _Writer
    worker: DisplayWorker
    channel: str = ""
    pending: int = 0
    draining: bool = False



class SpiceServer:
    """A SPICE server: register devices, then :meth:`start` (or :meth:`serve_forever`).

    Args:
        config: the frozen configuration.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.keyboard: Keyboard | None = None
        self.kbd_modifiers = 0
        self.mouse: Mouse | None = None
        self.tablet: Tablet | None = None
        self._ticket = Ticket()
        if config.password is not None:
            self._ticket.set(config.password, config.password_lifetime)
        self._channels: dict[tuple[int, int], ChannelDef] = {}
        self._sessions: dict[int, Session] = {}
        self._servers: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._conn_ids = itertools.count(1)
        self._pending_links = 0
        self._mouse_mode = MouseMode.SERVER
        self._agent_attached = False
        self._start_time = time.monotonic()
        self._ssl: ssl.SSLContext | None = None
        self.stats = {
            "connections": 0,
            "links_ok": 0,
            "links_failed": 0,
            "protocol_errors": 0,
            "websocket_links": 0,
            "http_requests": 0,
        }
        self._web_options = WebOptions(
            files=StaticFiles(config.web_root) if config.web_root else None,
            origins=config.websocket_origins,
            max_message_size=config.max_message_size,
            dynamic_paths=frozenset({config.metrics_path} if config.metrics_path else ()),
        )
        self._listeners = ChannelListeners(log)
        self._bytes: Counter[tuple[str, str]] = Counter()  # (channel name, "in" | "out")
        self._open_channels: Counter[str] = Counter()
        if config.tls_port is not None:
            self._ssl = self._make_ssl_context()
        self._workers: list[DisplayWorker] = []
        self._worker_conns: dict[int, _WorkerConn] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.register_channel(ChannelType.INPUTS, 0, InputsChannelClient, caps=(InputsCap.KEY_SCANCODE,))

    # --- devices and channels ----------------------------------------------------------------------

    def add_keyboard(self, keyboard: Keyboard) -> None:
        self.keyboard = keyboard
        self.kbd_modifiers = keyboard.get_leds()

    def add_mouse(self, mouse: Mouse) -> None:
        self.mouse = mouse

    def add_tablet(self, tablet: Tablet) -> None:
        self.tablet = tablet
        self._update_mouse_mode()

    def remove_tablet(self) -> None:
        self.tablet = None
        self._update_mouse_mode()

    def register_channel(
        self,
        channel_type: int,
        channel_id: int,
        factory: ChannelFactory | None,
        *,
        caps: tuple[int, ...] = (),
        worker: DisplayWorker | None = None,
    ) -> None:
        """Offer a channel to clients; connected sessions get a one-entry CHANNELS_LIST."""
        key = (int(channel_type), channel_id)
        if key in self._channels or channel_type == ChannelType.MAIN:
            raise ConfigError(f"channel {key} already registered")
        self._channels[key] = ChannelDef(key[0], channel_id, factory, tuple(caps), worker)
        for s in self._sessions.values():
            if s.main is not None and s.main.attached:
                s.main.send_channels_list([key])
                self._kick(s.main)

    # --- displays ---------------------------------------------------------------------------------

    def add_framebuffer_display(self, width: int, height: int) -> FramebufferDisplay:
        """A display fed with host frames (no QXL guest driver needed); see :class:`FramebufferDisplay`."""
        worker = self._add_worker()
        fb = FramebufferDisplay(worker, width, height)
        self._register_worker_channels(worker)
        return fb

    def add_qxl_device(
        self,
        config: QXLDeviceConfig | None = None,
        *,
        irq: Callable[[bool], None] | None = None,
        ram: Any = None,
        vram: Any = None,
        rom: Any = None,
    ) -> QXLDevice:
        """An emulated QXL device over host memory (allocated if not given); returns the device.

        The host forwards the guest's I/O port writes with ``device.io_write(port, value)`` and
        raises the guest interrupt when ``irq(level)`` is called. A worker thread pulls the rings.
        """
        worker = self._add_worker()
        backend = QXLWorkerBackend(worker)
        device = QXLDevice(backend, config, ram=ram, vram=vram, rom=rom, irq=irq)
        backend.attach(device)
        self._register_worker_channels(worker)
        return device

    def _worker(self, display_id: int) -> DisplayWorker:
        try:
            return self._workers[display_id]
        except IndexError:
            raise ConfigError(f"no display {display_id}") from None

    def display_snapshot(self, display_id: int = 0) -> Any:
        """A copy of the server's picture of a display's primary surface ((h, w) uint32 0x00RRGGBB)."""
        return self._worker(display_id).snapshot()

    def screendump(self, path: Any, display_id: int = 0) -> None:
        """Write a display's current picture as PNG (QEMU ``screendump``)."""
        self._worker(display_id).screendump(path)

    def start_recording(self, path: str | os.PathLike[str], display_id: int = 0) -> None:
        """Record a display to ``path`` from now on (replacing any recording of it in progress).

        The file starts with the display's present state (surfaces and their pictures, monitors,
        cursor), then holds every draw and cursor command as it arrives, validated; replay it with
        ``python -m spiceserver replay FILE --screendump out.png`` (see :mod:`spiceserver.worker.record`).

        Raises:
            OSError: the file cannot be created.
        """
        recorder = Recorder(Path(path))
        try:
            self._worker(display_id).begin_recording(recorder)
        except BaseException:
            recorder.close()
            raise

    def stop_recording(self, display_id: int = 0) -> int:
        """Stop recording a display (the file is complete); returns the number of records, 0 if none."""
        return self._worker(display_id).end_recording()

    def wait_idle(self, display_id: int = 0, timeout: float = 5.0) -> None:
        """Return once the display's worker has handled every command queued so far."""
        self._worker(display_id).wait_idle(timeout)

    def display_stats(self, display_id: int = 0) -> dict[str, Any]:
        """Live counters of a display: drawables, hidden, pruned, and per client what was sent how."""
        return self._worker(display_id).display_stats()

    def add_channel_listener(self, callback: Callable[[ChannelEvent], object]) -> None:
        """Call ``callback(event)`` on the event loop whenever a channel links or goes away.

        A coroutine function works too (it is run as a task). Exceptions are logged, never
        raised into the server.
        """
        self._listeners.add(callback)

    def remove_channel_listener(self, callback: Callable[[ChannelEvent], object]) -> None:
        self._listeners.remove(callback)

    def clients(self) -> list[ClientInfo]:
        """The connected clients and their channels, oldest first."""
        return [ClientInfo(s.id, tuple(s.infos)) for s in self._sessions.values() if s.infos]

    async def metrics(self) -> Metrics:
        """A snapshot of the live counters (see :mod:`spiceserver.metrics`); also served in the
        Prometheus format at ``ServerConfig.metrics_path``."""

        displays: list[DisplayMetrics] = []
        for i, worker in enumerate(self._workers):
            try:
                displays.append(await asyncio.to_thread(worker.collect_metrics, i))
            except Exception:  # a stopped worker: skip it rather than fail the page
                continue
        return Metrics(
            uptime_seconds=round(time.monotonic() - self._start_time, 3),
            **self.stats,
            sessions=len(self._sessions),
            codec_kernels_ready=warmup.ready(),
            channels={k: v for k, v in self._open_channels.items() if v},
            channel_bytes=dict(self._bytes),
            displays=tuple(displays),
        )

    def _add_worker(self) -> DisplayWorker:
        display_id = len(self._workers)
        worker = DisplayWorker(f"display{display_id}", display_id, DisplaySettings.from_config(self.config))
        ep = worker.dispatcher.loop_side
        ep.register_handler(ClientOutput, self._on_worker_output)
        ep.register_handler(ClientClose, self._on_worker_close)
        ep.register_handler(DisplayInfo, self._on_display_info)
        worker.set_client_mouse_mode(self._mouse_mode == MouseMode.CLIENT)
        worker.start()
        self._workers.append(worker)
        if self._loop is not None:
            self._loop.add_reader(ep.sock, ep.drain)
        return worker

    def _register_worker_channels(self, worker: DisplayWorker) -> None:
        self.register_channel(ChannelType.DISPLAY, worker.display_id, None, caps=DISPLAY_CAPS, worker=worker)
        self.register_channel(ChannelType.CURSOR, worker.display_id, None, worker=worker)
        self._update_mouse_mode()

    def _on_worker_output(self, msg: ClientOutput) -> None:
        wc = self._worker_conns.get(msg.cc_id)
        if wc is None or wc.writer.is_closing():
            return
        wc.writer.write(msg.data)
        wc.pending += len(msg.data)
        self._bytes[wc.channel, "out"] += len(msg.data)
        if not wc.draining:
            wc.draining = True
            task = asyncio.get_running_loop().create_task(self._drain_worker_conn(msg.cc_id, wc))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drain_worker_conn(self, cc_id: int, wc: _WorkerConn) -> None:
        """Report written bytes to the worker as the transport takes them (its flow control)."""
        try:
            while wc.pending and not wc.writer.is_closing():
                n = wc.pending
                await wc.writer.drain()
                wc.pending -= n
                wc.worker.dispatcher.loop_side.post(ClientWritten(cc_id, n))
        except (ConnectionError, OSError):
            pass
        finally:
            wc.draining = False

    def _on_worker_close(self, msg: ClientClose) -> None:
        wc = self._worker_conns.get(msg.cc_id)
        if wc is not None:
            self.stats["protocol_errors"] += 1
            wc.writer.close()

    def _on_display_info(self, msg: DisplayInfo) -> None:
        if self.tablet is not None:
            result = self.tablet.set_logical_size(msg.width, msg.height)
            if asyncio.iscoroutine(result):
                task = asyncio.get_running_loop().create_task(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def channel_ids(self) -> list[tuple[int, int]]:
        return list(self._channels)

    def display_count(self) -> int:
        return sum(1 for t, _ in self._channels if t == ChannelType.DISPLAY)

    # --- tickets, leds, mouse mode -------------------------------------------------------------

    def set_ticket(self, password: str | None, lifetime: float = 0.0) -> None:
        """Set the password (``spice_server_set_ticket``); lifetime seconds, 0 = never expires."""
        if password is not None and len(password.encode()) > 60:
            raise ConfigError("password longer than 60 bytes")
        self._ticket.set(password, lifetime)

    def kbd_leds(self, leds: int) -> None:
        """The guest changed its keyboard LEDs: tell every client (SPICE_MSG_INPUTS_KEY_MODIFIERS)."""
        self.kbd_modifiers = leds
        for s in self._sessions.values():
            for cc in s.channels:
                if isinstance(cc, InputsChannelClient):
                    cc.send_leds(leds)
                    self._kick(cc)

    @property
    def mouse_mode(self) -> int:
        return int(self._mouse_mode)

    @property
    def client_mouse_allowed(self) -> bool:
        # libspice reds_update_mouse_mode: agent mouse, or a tablet with a single display.
        if self.config.agent_mouse and self._agent_attached:
            return True
        return self.tablet is not None and self.display_count() <= 1

    @property
    def agent_attached(self) -> bool:
        return self._agent_attached

    def set_agent_attached(self, attached: bool) -> None:
        """A guest agent (vdagent) appeared on or left its char device.

        Connected clients get AGENT_CONNECTED_TOKENS (or AGENT_CONNECTED for clients without that
        cap) / AGENT_DISCONNECTED, and the mouse modes are re-evaluated (agent mouse). The agent's
        data path itself is the char-device layer's job.
        """
        if attached == self._agent_attached:
            return
        self._agent_attached = attached
        for s in self._sessions.values():
            if s.main is not None:
                s.main.send_agent_state(attached)
                self._kick(s.main)
        self._update_mouse_mode()

    def disconnect_clients(self) -> None:
        """Close every client session (libspice ``reds_disconnect``)."""
        for s in list(self._sessions.values()):
            self._close_session(s)

    @property
    def supported_mouse_modes(self) -> int:
        return int(MouseMode.SERVER | (MouseMode.CLIENT if self.client_mouse_allowed else 0))

    def request_mouse_mode(self, mode: int) -> None:
        if mode == MouseMode.CLIENT and not self.client_mouse_allowed:
            log.info("client mouse mode requested but not available (no tablet)")
            return
        self._set_mouse_mode(MouseMode(mode))

    def _set_mouse_mode(self, mode: MouseMode) -> None:
        if mode == self._mouse_mode:
            return
        self._mouse_mode = mode
        client = mode == MouseMode.CLIENT
        for worker in self._workers:
            worker.set_client_mouse_mode(client)
        self._broadcast_mouse_mode()

    def _update_mouse_mode(self) -> None:
        if self._mouse_mode == MouseMode.CLIENT and not self.client_mouse_allowed:
            self._set_mouse_mode(MouseMode.SERVER)
        else:
            self._broadcast_mouse_mode()

    def _broadcast_mouse_mode(self) -> None:
        for s in self._sessions.values():
            if s.main is not None:
                s.main.send_mouse_mode()
                self._kick(s.main)

    def mm_time(self) -> int:
        """The multimedia clock in ms (libspice ``reds_get_mm_time``)."""
        return int((time.monotonic() - self._start_time) * 1000) & 0xFFFFFFFF

    @property
    def num_clients(self) -> int:
        return len(self._sessions)

    # --- listening ------------------------------------------------------------------------------

    def _make_ssl_context(self) -> ssl.SSLContext:
        cert, key, _ca = self.config.tls_files()
        for path in (cert, key):
            if not os.path.exists(path):
                raise ConfigError(f"TLS file {path} not found")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
        ctx.load_cert_chain(cert, key, password=self.config.x509_key_password)
        if self.config.tls_ciphers:
            ctx.set_ciphers(self.config.tls_ciphers)
        return ctx

    async def start(self) -> None:
        """Open the listeners (plain, TLS, Unix) configured."""
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        for worker in self._workers:
            self._loop.add_reader(worker.dispatcher.loop_side.sock, worker.dispatcher.loop_side.drain)
        if cfg.port is not None:
            self._servers.append(
                await asyncio.start_server(lambda r, w: self._accept(r, w, secure=False), cfg.addr, cfg.port)
            )
        if cfg.tls_port is not None:
            self._servers.append(
                await asyncio.start_server(
                    lambda r, w: self._accept(r, w, secure=True),
                    cfg.addr,
                    cfg.tls_port,
                    ssl=self._ssl,
                    ssl_handshake_timeout=cfg.link_timeout,
                )
            )
        if cfg.unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(cfg.unix_path)
            self._servers.append(
                await asyncio.start_unix_server(lambda r, w: self._accept(r, w, secure=False, unix=True), cfg.unix_path)
            )
        for addr in self.addresses:
            log.info("listening on %s", addr)

    @property
    def addresses(self) -> list[str]:
        out = []
        for srv in self._servers:
            for sock in srv.sockets:
                name = sock.getsockname()
                out.append(name if isinstance(name, str) else f"{name[0]}:{name[1]}")
        return out

    def port_of(self, secure: bool = False) -> int:
        """The bound TCP port (useful with port 0)."""
        cfg = self.config
        wanted = cfg.tls_port if secure else cfg.port
        idx = 0 if (not secure or cfg.port is None) else 1
        if wanted is None:
            raise ConfigError("that listener is not configured")
        return int(self._servers[idx].sockets[0].getsockname()[1])

    async def serve_forever(self) -> None:
        """Start if needed and serve until cancelled."""
        if not self._servers:
            await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop listening and disconnect every client."""
        for srv in self._servers:
            srv.close()
        for s in list(self._sessions.values()):
            self._close_session(s)
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await srv.wait_closed()
        self._servers.clear()
        for worker in self._workers:
            if self._loop is not None:
                self._loop.remove_reader(worker.dispatcher.loop_side.sock)
            await asyncio.to_thread(worker.stop)
        self._workers.clear()

    async def __aenter__(self) -> SpiceServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- connections ----------------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, secure: bool, unix: bool = False) -> None:
        task = asyncio.get_running_loop().create_task(self._serve_connection(reader, writer, secure, unix))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secure: bool, unix: bool) -> None:
        conn_id = next(self._conn_ids)
        peer = writer.get_extra_info("peername")
        peer_s = "unix" if unix else (f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer))
        clog = ConnLog(log, {"conn": conn_id, "peer": peer_s + ("/tls" if secure else "")})
        self.stats["connections"] += 1
        if self._pending_links >= self.config.max_pending_links:
            clog.warning("too many connections in the link phase (%d); closing", self._pending_links)
            writer.close()
            return
        self._pending_links += 1
        stream: tuple[_Reader, _Writer] = (reader, writer)
        linked: tuple[LinkMess, bytes] | bool | None = None
        try:
            try:
                stream, linked = await asyncio.wait_for(self._handshake(reader, writer, secure, clog), self.config.link_timeout)
            except TimeoutError:
                clog.warning("link not completed within %.0f s; closing", self.config.link_timeout)
            except (ConnectionError, ssl.SSLError, OSError) as exc:
                clog.info("connection lost during link: %s", exc)
            except ProtocolError as exc:
                clog.warning("link refused: %s", exc.reason)
            except Exception:  # a bug must cost this connection only
                clog.exception("internal error during the link; closing the connection")
        finally:
            self._pending_links -= 1
        if not isinstance(linked, tuple):
            if linked is None:  # (True: an HTTP request was answered, not a link)
                self.stats["links_failed"] += 1
            await self._close_writer(stream[1])
            return
        self.stats["links_ok"] += 1
        link_mess, leftover = linked
        try:
            websocket = isinstance(stream[0], _WebSocketStream)
            transport = ("wss" if secure else "ws") if websocket else ("unix" if unix else ("tls" if secure else "tcp"))
            await self._run_channel(stream[0], stream[1], link_mess, leftover, secure, unix, clog, (transport, peer_s))
        finally:
            await self._close_writer(stream[1])

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secure: bool, clog: ConnLog
    ) -> tuple[tuple[_Reader, _Writer], tuple[LinkMess, bytes] | bool | None]:
        """The first bytes decide: an HTTP request (WebSocket or a file) or a SPICE link.

        Returns the stream and the link (message, leftover), None when the link failed, or True
        when the connection was a plain HTTP request that has been answered.
        """
        try:
            prefix = await reader.readexactly(len(HTTP_PREFIX))
        except asyncio.IncompleteReadError as exc:
            clog.info("peer closed the connection during the link (%d bytes buffered)", len(exc.partial))
            return (reader, writer), None
        if prefix == HTTP_PREFIX and self.config.websocket:
            ws = await self._web_handshake(reader, writer, prefix, clog)
            if not isinstance(ws, _WebSocketStream):
                return (reader, writer), ws
            self.stats["websocket_links"] += 1
            return (ws, ws), await self._link(ws, ws, secure, clog)
        return (reader, writer), await self._link(reader, writer, secure, clog, prefix)

    async def _web_handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, clog: ConnLog
    ) -> _WebSocketStream | bool | None:
        """Answer an HTTP request: a WebSocket upgrade gives a stream to link over; a file or the
        metrics page is served (True); None when the request never completed."""
        web = WebConnection(self._web_options)
        while True:
            # a plain GET may read a file of the web root: off the event loop
            events = await asyncio.to_thread(web.receive_data, data)
            out = web.data_to_send()
            if out:
                writer.write(out)
                await writer.drain()
            for i, ev in enumerate(events):
                if isinstance(ev, Upgraded):
                    clog.info("WebSocket upgrade (path %r, origin %r)", ev.path[:200], ev.origin)
                    ws = _WebSocketStream(reader, writer, web, clog)
                    ws.feed(events[i + 1 :])
                    return ws
                if isinstance(ev, HttpGet):
                    body = (await self.metrics()).prometheus().encode()
                    ev = web.respond(200, "OK", body, METRICS_CONTENT_TYPE)
                    writer.write(web.data_to_send())
                    await writer.drain()
                if isinstance(ev, Closed):
                    self.stats["http_requests"] += 1
                    clog.info("%s", ev.reason)
                    return True
            if web.close_transport:
                return None
            data = await reader.read(4096)
            if not data:
                clog.info("peer closed the connection during the HTTP request")
                return None

    @staticmethod
    async def _close_writer(writer: _Writer) -> None:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2.0)

    def _common_caps(self) -> tuple[int, ...]:
        return caps_to_words({CommonCap.PROTOCOL_AUTH_SELECTION, CommonCap.AUTH_SPICE, CommonCap.MINI_HEADER})

    def _channel_caps(self, channel_type: int, channel_id: int) -> tuple[int, ...]:
        if channel_type == ChannelType.MAIN:
            # Migration is not offered, so neither migration cap is set.
            return caps_to_words({MainCap.NAME_AND_UUID, MainCap.AGENT_CONNECTED_TOKENS})
        d = self._channels.get((channel_type, channel_id))
        return caps_to_words(set(d.caps)) if d else ()

    async def _link(
        self, reader: _Reader, writer: _Writer, secure: bool, clog: ConnLog, prefix: bytes = b""
    ) -> tuple[LinkMess, bytes] | None:
        """Run the handshake; returns the link message and leftover bytes, or None if refused."""
        link = ServerLink()
        key: LinkKey | None = None
        while True:
            data = prefix or await reader.read(4096)
            prefix = b""
            if not data:
                clog.info("peer closed the connection during the link (%d bytes buffered)", link.buffered)
                return None
            try:
                link.receive_data(data)
            except LinkError as exc:
                clog.warning("link refused: %s", exc.reason)
                writer.write(link.data_to_send())
                await writer.drain()
                return None
            for ev in link.events():
                if isinstance(ev, LinkRequest):
                    mess = ev.mess
                    clog.extra["channel"] = channel_label(mess.channel_type, mess.channel_id)  # type: ignore[index]
                    err = self._check_link_request(mess, secure, clog)
                    if err is not None:
                        link.reject(err)
                        writer.write(link.data_to_send())
                        await writer.drain()
                        return None
                    key = await asyncio.to_thread(LinkKey)
                    link.accept(key.public_der, self._common_caps(), self._channel_caps(mess.channel_type, mess.channel_id))
                elif isinstance(ev, TicketReceived):
                    assert key is not None and link.request is not None
                    code = self._check_ticket(key, ev.encrypted_ticket, link.request.mess, clog)
                    link.finish(code)
                    writer.write(link.data_to_send())
                    await writer.drain()
                    if code != LinkErr.OK:
                        return None
                    return link.request.mess, link.leftover()
            out = link.data_to_send()
            if out:
                writer.write(out)
                await writer.drain()

    def _check_link_request(self, mess: LinkMess, secure: bool, clog: ConnLog) -> int | None:
        ctype = mess.channel_type
        if (ctype != ChannelType.MAIN and (ctype, mess.channel_id) not in self._channels) or ctype not in ChannelType._value2member_map_:
            clog.warning("channel %d:%d is not available", ctype, mess.channel_id)
            return LinkErr.CHANNEL_NOT_AVAILABLE
        name = CHANNEL_NAMES[ChannelType(ctype)]
        allowed = self.config.channel_security(name)
        if secure and not allowed & ChannelSecurity.SSL:
            clog.warning("channel %s must not be encrypted", name)
            return LinkErr.NEED_UNSECURED
        if not secure and not allowed & ChannelSecurity.NONE:
            clog.warning("channel %s must be encrypted", name)
            return LinkErr.NEED_SECURED
        return None

    def _check_ticket(self, key: LinkKey, ciphertext: bytes, mess: LinkMess, clog: ConnLog) -> int:
        password = key.decrypt(ciphertext)
        if password is None:
            clog.warning("failed to decrypt the ticket")
            return LinkErr.PERMISSION_DENIED
        if not self.config.disable_ticketing:
            reason = self._ticket.check(password)
            if reason is not None:
                clog.warning("authentication failed: %s", reason)
                return LinkErr.PERMISSION_DENIED
        if mess.channel_type != ChannelType.MAIN:
            if mess.connection_id not in self._sessions:
                clog.warning("unknown connection id %#x", mess.connection_id)
                return LinkErr.BAD_CONNECTION_ID
            if (mess.channel_type, mess.channel_id) not in self._channels:
                return LinkErr.CHANNEL_NOT_AVAILABLE
        return LinkErr.OK

    # --- sessions and the data phase ------------------------------------------------------------

    def _new_session(self) -> Session:
        # A new main link replaces the current client (libspice reds_handle_main_link).
        for s in list(self._sessions.values()):
            log.info("new client: disconnecting session %#x", s.id)
            self._close_session(s)
        while True:
            sid = secrets.randbits(32)
            if sid and sid not in self._sessions:
                break
        session = Session(sid)
        self._sessions[sid] = session
        return session

    def _close_session(self, session: Session) -> None:
        self._sessions.pop(session.id, None)
        for close in list(session.closers):
            close()

    async def _run_worker_channel(
        self,
        reader: _Reader,
        writer: _Writer,
        mess: LinkMess,
        leftover: bytes,
        mini: bool,
        session: Session,
        worker: DisplayWorker,
        clog: ConnLog,
        name: str,
    ) -> None:
        """A display/cursor channel: its protocol state lives on the worker; we move bytes."""
        cc_id = next(self._conn_ids)
        wc = _WorkerConn(writer, worker, name)
        self._worker_conns[cc_id] = wc
        self._open_channels[name] += 1
        post = worker.dispatcher.loop_side.post
        label = f"{clog.extra.get('conn') if clog.extra else ''} {clog.extra.get('peer') if clog.extra else ''} {clog.extra.get('channel') if clog.extra else ''}"
        low = session.main is not None and session.main.net_test.low_bandwidth
        post(ClientConnected(cc_id, mess.channel_type, mess.channel_id, mini, mess.common_caps, mess.channel_caps, session.id, label.strip(), low))

        def close() -> None:
            if not writer.is_closing():
                writer.close()

        session.closers.append(close)
        clog.info("channel linked to session %#x (worker %s)", session.id, worker.name)
        try:
            if leftover:
                self._bytes[name, "in"] += len(leftover)
                post(ClientData(cc_id, leftover))
            while not writer.is_closing():
                data = await reader.read(_READ_CHUNK)
                if not data:
                    clog.info("client closed the channel")
                    break
                self._bytes[name, "in"] += len(data)
                post(ClientData(cc_id, data))
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            clog.info("connection lost: %s", exc)
        finally:
            post(ClientDisconnected(cc_id))
            self._worker_conns.pop(cc_id, None)
            self._open_channels[name] -= 1
            with contextlib.suppress(ValueError):
                session.closers.remove(close)

    def _kick(self, cc: ChannelClient) -> None:
        """Write whatever ``cc`` queued outside its own connection task."""
        write = getattr(cc, "_transport_write", None)
        if write is not None:
            write()

    async def _run_channel(
        self,
        reader: _Reader,
        writer: _Writer,
        mess: LinkMess,
        leftover: bytes,
        secure: bool,
        unix: bool,
        clog: ConnLog,
        where: tuple[str, str] = ("tcp", ""),
    ) -> None:
        mini = has_cap(mess.common_caps, CommonCap.MINI_HEADER)
        conn = ChannelConnection(mess.channel_type, SERVER, mini_header=mini, max_message_size=self.config.max_message_size)
        cc: ChannelClient
        if mess.channel_type == ChannelType.MAIN:
            session = self._new_session()
            cc = MainChannelClient(self, conn, mess, secure=secure, log=clog, session_id=session.id, unix=unix)
            session.main = cc
            clog.info("session %#x started (mini header: %s)", session.id, mini)
        else:
            found = self._sessions.get(mess.connection_id)
            d = self._channels.get((mess.channel_type, mess.channel_id))
            if found is None or d is None:
                clog.info("session or channel went away during the link")
                return
            session = found
            if d.worker is not None:
                info = self._listeners.connected(session, mess.channel_type, mess.channel_id, *where)
                try:
                    await self._run_worker_channel(reader, writer, mess, leftover, mini, session, d.worker, clog, info.channel)
                finally:
                    self._listeners.gone(session, info)
                return
            assert d.factory is not None
            cc = d.factory(self, conn, mess, secure=secure, log=clog)
            clog.info("channel linked to session %#x", session.id)
            if mess.channel_type == ChannelType.INPUTS and not secure and session.main is not None:
                session.main.notify("keyboard channel is insecure")
                self._kick(session.main)
        session.channels.append(cc)
        info = self._listeners.connected(session, mess.channel_type, mess.channel_id, *where)
        name = info.channel
        self._open_channels[name] += 1

        def flush() -> None:
            data = conn.data_to_send()
            if data and not writer.is_closing():
                writer.write(data)
                self._bytes[name, "out"] += len(data)

        def close() -> None:
            cc.closed = True
            if not writer.is_closing():
                writer.close()

        cc._transport_write = flush  # type: ignore[attr-defined]
        session.closers.append(close)
        loop = asyncio.get_running_loop()
        try:
            await cc.start(loop.time())
            if leftover:
                self._bytes[name, "in"] += len(leftover)
                for ev in conn.receive_data(leftover, loop.time()):
                    await cc.handle(ev, loop.time())
            flush()
            await writer.drain()
            while not cc.closed:
                deadline = cc.next_timer()
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    data = await asyncio.wait_for(reader.read(_READ_CHUNK), timeout)
                except TimeoutError:
                    await cc.on_timer(loop.time())
                    flush()
                    await writer.drain()
                    continue
                if not data:
                    clog.info("client closed the channel")
                    break
                self._bytes[name, "in"] += len(data)
                now = loop.time()
                for ev in conn.receive_data(data, now):
                    try:
                        await cc.handle(ev, now)
                    except ProtocolError:
                        raise
                    except Exception:
                        clog.exception("error handling %s; message dropped", type(ev).__name__)
                flush()
                await writer.drain()
        except ProtocolError as exc:
            self.stats["protocol_errors"] += 1
            clog.warning("protocol error, closing the channel: %s", exc.reason)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            clog.info("connection lost: %s", exc)
        finally:
            cc.closed = True
            self._open_channels[name] -= 1
            self._listeners.gone(session, info)
            with contextlib.suppress(ValueError):
                session.channels.remove(cc)
            with contextlib.suppress(ValueError):
                session.closers.remove(close)
            try:
                await cc.on_close()
            except Exception:
                clog.exception("error closing the channel")
            if session.main is cc:
                clog.info("main channel closed: ending session %#x", session.id)
                self._close_session(session)
