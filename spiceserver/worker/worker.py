"""The display worker thread: surfaces, drawables, and the display/cursor clients of one device.

Counterpart of spice ``server/red-worker.cpp`` (the thread, its loop, ``handle_dev_*``),
``display-channel.cpp`` (``display_channel_add_drawable``, surfaces) and ``red-qxl.cpp`` (how device
calls reach the worker). The loop::

    wait for the dispatcher (or the next timer)
    handle every message (client data, device calls, host frames)
    pull commands from the device rings in bounded batches (QXL devices)
    let each client produce what its flow control allows; hand the bytes to reds

Everything that reaches the thread is a typed message (:mod:`spiceserver.worker.messages`) with a
registered handler; the device glue (a :class:`CommandSource`: the QXL rings, a host framebuffer) is
attached once and contributes the handlers of its own device's messages. Whatever the source, the
display changes only through :meth:`DisplayWorker.apply` of a display operation
(:mod:`spiceserver.worker.ops`), and that is where the one observer (a recording) is told.

Every draw is rendered into its surface's canvas as it arrives, entered into the surface's tree
(hiding what it covers), and queued on every client's pipe. Nothing here blocks on a client.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from ..canvas.draw import render_op
from ..canvas.images import NullResolver
from ..canvas.surface import Canvas
from ..codecs import warmup
from ..errors import ProtocolError
from ..metrics import DisplayMetrics
from ..mmtime import MediaClock
from ..proto.enums import ChannelType
from ..proto.messages import display as d
from ..proto.messages.base import Message, Rect
from ..qxl.commands import CopyBits
from .compression import DisplaySettings
from .cursor_client import CursorChannelClient, CursorState
from .dispatcher import Dispatcher, Request
from .display_client import DisplayChannelClient
from .drawable import Drawable, make_drawable
from .messages import (
    ApplyOps,
    AttachSource,
    BeginRecording,
    ClientClose,
    ClientConnected,
    ClientConsumed,
    ClientData,
    ClientDisconnected,
    ClientMigrate,
    ClientOutput,
    ClientWritten,
    CollectMetrics,
    CollectStats,
    DisplayInfo,
    EncodeDone,
    EndRecording,
    FramebufferSurface,
    Screendump,
    SetClientMouseMode,
    Snapshot,
    Stop,
    WaitIdle,
)
from .ops import (
    CreateSurface,
    DestroySurface,
    DisplayObserver,
    DisplayOp,
    Draw,
    HideCursor,
    MoveCursor,
    ResetCursor,
    SetCursor,
    SetCursorTrail,
    SetMonitors,
)
from .picture import picture_image
from .retain import RetainedBytes
from .ring_gate import RingGate
from .session_caches import SessionCaches
from .shared_encode import SharedEncodes, SharedFrames
from .stream_items import StreamDataItem, frame_pixels
from .surface import Surface
from .video_streams import VideoStreams

if TYPE_CHECKING:
    from .stream_encoder import EncodeJob

__all__ = ["DisplayWorker", "CommandSource"]

log = logging.getLogger("spiceserver.worker")


class CommandSource:
    """The device glue a worker serves (QXL rings, a host framebuffer); it runs on the worker thread.

    It changes the display only through ``worker.apply(op)``, and may handle its own device's typed
    messages (:meth:`handlers`, registered on the worker's endpoint when it is attached).
    """

    def handlers(self) -> Mapping[type, Callable[[Any], object]]:
        """This device's messages and their handlers (a :class:`Request`'s reply gets the result)."""
        return {}

    def process(self, worker: DisplayWorker, budget: int, cursor_budget: int | None = None) -> bool:
        """Handle up to ``budget`` display commands and ``cursor_budget`` cursor commands (None: as
        ``budget``); return True if more are pending right now. A budget of 0 leaves that ring alone
        (the clients' pipes are full: :mod:`.ring_gate`)."""
        return False

    def next_timeout(self) -> float | None:
        """Longest the worker loop may wait for a message before calling :meth:`process` again; None: no limit."""
        return None

    def client_attached(self, worker: DisplayWorker) -> None:
        """A display client linked (QXL: tell the guest a client is present)."""


class _Resolver(NullResolver):
    """Images the server's canvases need: other surfaces. Guest images are never cached by id
    here (the QXL cache flag is a permission, and the server renders each image as it comes)."""

    def __init__(self, worker: DisplayWorker) -> None:
        self.worker = worker

    def surface(self, surface_id: int) -> Canvas:
        return self.worker.resolver_surface(surface_id)


class DisplayWorker:
    """One worker thread for one display device.

    The methods under "loop-facing API" may be called from any thread but the worker's own; those
    that return something block until the worker answered. A worker that was never started runs
    them on the caller's thread (tools and tests drive it that way).

    Args:
        name: for the thread and logs.
        display_id: the display channel id this worker serves.
        settings: the server's image options (:meth:`DisplaySettings.from_config`).
        clock: the multimedia clock stream frames are stamped with (the server's; a fresh one if None).
        caches: the server's table of session GLZ window owners, shared by all its display workers
            (:mod:`.session_caches`); a fresh one if None (a lone worker).
    """

    BATCH = 50  # commands per loop iteration (libspice MAX_PIPE_SIZE-style bound)

    #: encoder threads per worker (simplejpeg and the PyAV codecs release the GIL while they work)
    ENCODE_THREADS = 2

    def __init__(
        self, name: str, display_id: int = 0, settings: DisplaySettings | None = None, clock: MediaClock | None = None, caches: SessionCaches | None = None
    ) -> None:
        self.name = name
        self.display_id = display_id
        self.dispatcher = Dispatcher(name)
        self.ep = self.dispatcher.worker_side
        self.surfaces: dict[int, Surface] = {}
        self.dccs: dict[int, DisplayChannelClient] = {}
        self.settings = settings or DisplaySettings()
        self.caches = caches if caches is not None else SessionCaches()
        self.cursor_clients: dict[int, CursorChannelClient] = {}
        #: ClientData bytes handled per client since the last ClientConsumed report
        self._consumed: Counter[int] = Counter()
        self.source: CommandSource | None = None
        self.heads: d.MonitorsConfig | None = None
        self.cursor = CursorState()
        self.client_mouse_mode = False  # reds tells us; MOVE is not sent in client mode
        self._thread = threading.Thread(target=self._run, name=f"spice-worker-{name}", daemon=True)
        self._stopping = False
        self.stats = {"drawables": 0, "hidden": 0, "pruned": 0, "shed": 0}
        #: back-pressure: the rings are pulled only while the clients' pipes have room
        self.display_gate = RingGate("display")
        self.cursor_gate = RingGate("cursor")
        #: the bytes this worker's drawables keep (trees and pipes), against the settings' budget
        self.retained = RetainedBytes(self.settings.max_retained_bytes)
        #: images sent by display clients that have left (their encoder stats), for the metrics
        self.retired_images: Counter[str] = Counter()
        #: codec results shared by this display's clients, and the encode counters (:mod:`.shared_encode`)
        self.shared = SharedEncodes()
        self.shared_frames = SharedFrames(self.shared.stats)
        #: video sent to display clients that have left (per codec), for the metrics
        self.retired_video: list[dict[str, dict[str, float]]] = []
        self.resolver = _Resolver(self)
        #: video streams: detection, and what each client is told (:mod:`.video_streams`)
        self.video = VideoStreams(self.settings.streaming_video, clock or MediaClock())
        self._encode_pool: ThreadPoolExecutor | None = None
        #: counts loop iterations (a frame replaced by one of the same batch is no server drop)
        self.generation = 0
        #: tools and benchmarks: called on the worker thread with (client id, stream id, codec,
        #: mm-time, encoded frame, source pixels view) for every stream frame sent; None: nobody
        self.frame_tap: Callable[[int, int, int, int, bytes, np.ndarray], None] | None = None
        #: told of every display operation applied (a recording); None: nobody watches
        self.observer: DisplayObserver | None = None
        self._ops: dict[type, Callable[[Any], bool | None]] = {
            CreateSurface: self._create_surface,
            DestroySurface: self._destroy_surface,
            SetMonitors: self._set_monitors,
            Draw: self._draw,
            SetCursor: self._set_cursor,
            MoveCursor: self._move_cursor,
            HideCursor: self._hide_cursor,
            SetCursorTrail: self._set_cursor_trail,
            ResetCursor: self._reset_cursor,
        }
        handlers: dict[type, Callable[[Any], object]] = {
            ClientConnected: self._on_client_connected,
            ClientData: self._on_client_data,
            ClientWritten: self._on_client_written,
            ClientDisconnected: self._on_client_disconnected,
            ClientMigrate: self._on_client_migrate,
            Stop: self._on_stop,
            SetClientMouseMode: self._on_client_mouse_mode,
            Snapshot: self._on_snapshot,
            Screendump: self._on_screendump,
            BeginRecording: self._on_begin_recording,
            EndRecording: self._on_end_recording,
            WaitIdle: self._on_wait_idle,
            CollectStats: self._on_collect_stats,
            CollectMetrics: self._on_collect_metrics,
            AttachSource: self._on_attach_source,
            ApplyOps: self._on_apply_ops,
            FramebufferSurface: self._on_framebuffer_surface,
            EncodeDone: self._on_encode_done,
            **dict.fromkeys(self._ops, self.apply),  # cursor calls of a host arrive as they are
        }
        for msg_type, handler in handlers.items():
            self.ep.register_handler(msg_type, handler)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread (and the codec warm-up in the background)."""
        warmup.start()  # compile the codec kernels in the background (LZ4/raw until then)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop, wait up to ``timeout`` seconds for it, and close the dispatcher."""
        if self._thread.is_alive():
            self.dispatcher.loop_side.post(Stop())
            self._thread.join(timeout)
        self.dispatcher.close()
        if self._encode_pool is not None:
            self._encode_pool.shutdown(wait=False, cancel_futures=True)

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        return self._thread.is_alive()

    def _direct(self) -> bool:
        """Whether a message is handled on the calling thread: the worker's own (re-entrancy), or
        any thread while the worker was never started."""
        return self._thread.ident is None or threading.current_thread() is self._thread

    def post(self, msg: object) -> None:
        """Send a message to the worker (any thread; never blocks)."""
        if self._direct():
            self.ep.handle(msg)
        else:
            self.dispatcher.loop_side.post(msg)

    def request(self, msg: Request, timeout: float | None = 30.0) -> Any:
        """Send a request and wait for its reply (any thread); raises what its handler raised.

        Raises:
            TimeoutError: no answer within ``timeout`` seconds.
            RuntimeError: the worker thread has ended.
        """
        if self._direct():
            self.ep.handle(msg)
            return msg.reply.wait(0)
        if not self._thread.is_alive():
            raise RuntimeError(f"worker {self.name} is not running")
        self.dispatcher.loop_side.post(msg)
        try:
            return msg.reply.wait(timeout)
        except TimeoutError:
            if msg.reply.done:
                raise
            raise TimeoutError(f"worker {self.name} did not answer within {timeout} s") from None

    def _on_stop(self, msg: Stop) -> None:
        self._stopping = True

    def _run(self) -> None:
        more = False
        while not self._stopping:
            # With commands still pending (a full batch was taken) do not sleep: the ring will not
            # notify again, because its notification was not re-armed. While the clients' pipes
            # are full the ring is left alone; an ACK (ClientData) or written bytes wake the loop.
            self.ep.wait(0.0 if more else self._next_timeout())
            try:
                self.ep.drain()
                self.generation += 1
                self.video.tick(self.surfaces, self.dccs.values())
                more = False
                if self.source is not None:
                    self.flush_clients()  # make room in the pipes before deciding how much to pull
                    now = time.monotonic()
                    budget = self.display_gate.budget(self.dccs.values(), self.BATCH, now)
                    cursor_budget = self.cursor_gate.budget(self.cursor_clients.values(), self.BATCH, now)
                    more = self.source.process(self, budget, cursor_budget)
                self.flush_clients()
            except Exception:
                more = False
                log.exception("%s: worker loop error", self.name)
            self._report_consumed()
        try:
            self._on_end_recording(EndRecording())  # a recording in progress ends complete
        except OSError:
            log.exception("%s: closing the recording", self.name)

    def _next_timeout(self) -> float | None:
        """How long the loop may sleep: the source's own timer, or until a held-back client would
        become lagging (:class:`RingGate`)."""
        timeout = self.source.next_timeout() if self.source else None
        for deadline in (self.display_gate.next_deadline(), self.cursor_gate.next_deadline(), self.video.next_timeout()):
            if deadline is not None:
                wait = max(0.0, deadline - time.monotonic())
                timeout = wait if timeout is None else min(timeout, wait)
        return timeout

    # --- loop-facing API (any thread but the worker's) -------------------------------------------

    def attach_source(self, source: CommandSource) -> None:
        """Serve ``source``'s device: pull its commands, handle its messages."""
        self.request(AttachSource(source))

    def snapshot(self, surface_id: int = 0) -> np.ndarray:
        """A copy of the surface's canvas pixels ((h, w) uint32)."""
        out: np.ndarray = self.request(Snapshot(surface_id))
        return out

    def screendump(self, path: str | os.PathLike[str] | IO[bytes], surface_id: int = 0) -> None:
        """Write the surface's current picture as PNG (QEMU ``screendump``)."""
        self.request(Screendump(path, surface_id))

    def begin_recording(self, recorder: DisplayObserver) -> None:
        """Record from now on, starting with the present state (ending any recording in progress).

        ``recorder`` is a :class:`~spiceserver.worker.record.Recorder` (or any observer of the
        display operations)."""
        self.request(BeginRecording(recorder))

    def end_recording(self) -> int:
        """Stop recording (the file is complete); returns how many records it holds, 0 if none."""
        count: int = self.request(EndRecording())
        return count

    def set_client_mouse_mode(self, client: bool) -> None:
        """Client mouse mode on or off (fire and forget)."""
        self.post(SetClientMouseMode(client))

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Return once the worker has handled every command queued on the device so far."""
        self.request(WaitIdle(), timeout)

    def display_stats(self) -> dict[str, Any]:
        """Live counters: drawables, hidden, pruned, surfaces, and per client what was sent how."""
        out: dict[str, Any] = self.request(CollectStats())
        return out

    def collect_metrics(self, display_id: int) -> DisplayMetrics:
        """This display's counters for ``SpiceServer.metrics``."""
        out: DisplayMetrics = self.request(CollectMetrics(display_id))
        return out

    # --- requests (worker thread) ----------------------------------------------------------------

    def _on_client_mouse_mode(self, msg: SetClientMouseMode) -> None:
        self.client_mouse_mode = msg.client

    def _on_snapshot(self, msg: Snapshot) -> np.ndarray:
        return self.surfaces[msg.surface_id].canvas.pixels.copy()

    def _on_screendump(self, msg: Screendump) -> None:
        path = msg.path
        self.surfaces[msg.surface_id].canvas.to_png(Path(path) if isinstance(path, os.PathLike) else path)

    def _on_wait_idle(self, msg: WaitIdle) -> None:
        if self.source is not None:
            while self.source.process(self, 10_000):
                pass

    def _on_collect_stats(self, msg: CollectStats) -> dict[str, Any]:
        return {
            **self.stats,
            "surfaces": sorted(self.surfaces),
            "monitors": self.heads,
            "ring_held": self.display_gate.stats["held"],
            "clients_lagging": self.display_gate.stats["lagging"],
            "clients": [
                {
                    "cc_id": c.cc_id, "session": c.info.session_id,
                    "images": dict(c.encoder.stats), **c.stats, "pipe": c.live, "lagging": c.cc_id in self.display_gate.lagging,
                    "video": c.streams.describe(),
                }
                for c in self.dccs.values()
            ],
            "streams": {sid: {"dest": s.dest, "size": (s.src_width, s.src_height), "input_fps": s.input_fps} for sid, s in self.video.streams.items()},
            "stream_stats": dict(self.video.stats),
        }

    def _on_collect_metrics(self, msg: CollectMetrics) -> DisplayMetrics:
        """Images are counted over every display client so far, gone ones included."""
        images = Counter(self.retired_images)
        for dcc in self.dccs.values():
            images.update(dcc.encoder.stats)
        video: dict[str, dict[str, float]] = {}
        for per_codec in [*self.retired_video, *(dcc.streams.codec_stats() for dcc in self.dccs.values())]:
            for codec, counts in per_codec.items():
                total = video.setdefault(codec, dict.fromkeys(counts, 0.0))
                for k, v in counts.items():
                    total[k] = total.get(k, 0.0) + v
        enc = self.shared.stats
        return DisplayMetrics(
            msg.display_id, self.stats["drawables"], self.stats["hidden"], self.stats["pruned"], len(self.dccs),
            sum(c.live for c in self.dccs.values()), {k: v for k, v in images.items() if v},
            len(self.video.streams), self.video.stats["streams"], video,
            enc.encoded, enc.shared, enc.bytes_encoded, {cc_id: c.stats["bytes_sent"] for cc_id, c in self.dccs.items()}, enc.frames_shared,
        )  # fmt: skip

    def _on_attach_source(self, msg: AttachSource) -> None:
        self.source = msg.source
        for msg_type, handler in msg.source.handlers().items():
            self.ep.register_handler(msg_type, handler)

    def _on_apply_ops(self, msg: ApplyOps) -> int:
        for op in msg.ops:
            self.apply(op)
        return len(msg.ops)

    def _on_framebuffer_surface(self, msg: FramebufferSurface) -> None:
        self.apply(DestroySurface(0))
        self.apply(CreateSurface(0, msg.width, msg.height, primary=True))

    def _on_begin_recording(self, msg: BeginRecording) -> None:
        """The recording starts with the present state: each surface and its picture (as a raw
        DRAW_COPY), the monitors layout and the cursor -- so a replay starts from this picture."""
        self._on_end_recording(EndRecording())
        recorder = msg.recorder
        for surface in self.surfaces.values():
            recorder.observe(CreateSurface(surface.id, surface.width, surface.height, surface.format, surface.primary))
            image = picture_image(surface.canvas.pixels, surface.canvas.pixfmt)
            box = Rect(top=0, left=0, bottom=surface.height, right=surface.width)
            op = d.Copy(src_bitmap=image, src_area=box, rop_descriptor=8, scale_mode=1, mask=d.QMask())
            recorder.observe(Draw(make_drawable(surface.id, d.DisplayBase(surface_id=surface.id, box=box, clip=d.Clip()), op)))
        if self.heads is not None:
            recorder.observe(SetMonitors(self.heads))
        self.observer = recorder
        c = self.cursor
        if c.shape is not None or c.visible:
            self.apply(SetCursor(c.shape, c.x, c.y, c.visible))  # recorded (clients get the same state again)

    def _on_end_recording(self, msg: EndRecording) -> int:
        recorder, self.observer = self.observer, None
        if recorder is None:
            return 0
        recorder.close()
        return recorder.count

    # --- clients -------------------------------------------------------------------------------

    def _on_client_connected(self, info: ClientConnected) -> None:
        if info.channel_type == ChannelType.DISPLAY:
            self.dccs[info.cc_id] = DisplayChannelClient(info, self.surfaces, self.monitors_config, self.settings, self, self.caches, self.shared)
            if self.source is not None:
                self.source.client_attached(self)
        elif info.channel_type == ChannelType.CURSOR:
            self.cursor_clients[info.cc_id] = CursorChannelClient(info, self.cursor)
        self.flush_clients()

    def _client(self, cc_id: int) -> DisplayChannelClient | CursorChannelClient | None:
        return self.dccs.get(cc_id) or self.cursor_clients.get(cc_id)

    def _on_client_data(self, msg: ClientData) -> None:
        self._consumed[msg.cc_id] += len(msg.data)
        cc = self._client(msg.cc_id)
        if cc is None:
            return
        try:
            cc.on_data(msg.data)
        except ProtocolError as exc:
            log.warning("[%s] protocol error, closing the channel: %s", cc.info.label, exc.reason)
            self._drop(msg.cc_id, exc.reason)

    def _report_consumed(self) -> None:
        """Tell reds how much of each client's input was handled (ClientConsumed): it reads a client
        only while little of its input waits here, so a flood of input cannot fill this queue."""
        for cc_id, nbytes in self._consumed.items():
            self.ep.post(ClientConsumed(cc_id, nbytes))
        self._consumed.clear()

    def _on_client_written(self, msg: ClientWritten) -> None:
        cc = self._client(msg.cc_id)
        if cc is not None:
            cc.written(msg.nbytes)

    def _on_client_migrate(self, msg: ClientMigrate) -> None:
        cc = self._client(msg.cc_id)
        if cc is not None:
            cc.migrate()
            self.flush_clients()

    def _on_client_disconnected(self, msg: ClientDisconnected) -> None:
        self._forget(msg.cc_id)

    def _drop(self, cc_id: int, reason: str) -> None:
        self._forget(cc_id)
        self.ep.post(ClientClose(cc_id, reason))

    def _forget(self, cc_id: int) -> None:
        self.display_gate.forget(cc_id)
        self.cursor_gate.forget(cc_id)
        dcc = self.dccs.pop(cc_id, None)
        if dcc is not None:
            self.caches.leave(dcc)
            self.retired_images.update(dcc.encoder.stats)
            self.retired_video.append(dcc.streams.codec_stats())
            for agent in dcc.streams.agents.values():
                agent.retire_encoder()
        self.cursor_clients.pop(cc_id, None)

    def flush_clients(self) -> None:
        """Marshal what each client may send now and post it to the loop side (ClientOutput)."""
        clients: list[DisplayChannelClient | CursorChannelClient] = [*self.dccs.values(), *self.cursor_clients.values()]
        for cc in clients:
            data = cc.produce()
            if data:
                self.ep.post(ClientOutput(cc.cc_id, data))

    # --- video streams: the display clients' host (worker thread) ---------------------------------

    def submit_encode(self, item: StreamDataItem, job: EncodeJob) -> None:
        """Encode ``item``'s frame on an encoder thread (on the caller's, for a worker never started);
        the worker is woken when it is done. A stateless encode another client already started on
        the same frame (:class:`SharedFrames`) is taken instead."""
        op = item.drawable.op
        key = job.share_key()
        if key is not None and (taken := self.shared_frames.get(op, key)) is not None:
            item.future, item.shared_encode = taken, True
            return

        def run() -> tuple[bytes | None, float]:
            t0 = time.perf_counter()
            data = job.run(frame_pixels(op))
            return data, (time.perf_counter() - t0) * 1000.0

        if self._thread.ident is None:
            future: Future[tuple[bytes | None, float]] = Future()
            try:
                future.set_result(run())
            except Exception as exc:
                future.set_exception(exc)
        else:
            if self._encode_pool is None:
                self._encode_pool = ThreadPoolExecutor(self.ENCODE_THREADS, thread_name_prefix=f"spice-encode-{self.name}")
            future = self._encode_pool.submit(run)
            future.add_done_callback(lambda _f: self.dispatcher.loop_side.post(EncodeDone()))
        item.future = future
        if key is not None:
            self.shared_frames.put(op, key, future)

    def _on_encode_done(self, msg: EncodeDone) -> None:
        """Nothing to do: the loop flushes the clients after every batch of messages."""

    def raise_latency(self, ms: int) -> None:
        """A stream's encoder asks for more latency (MAIN_MULTI_MEDIA_TIME goes out if it rises)."""
        try:
            self.video.clock.raise_latency(min(ms, 0xFFFFFFFF), "video stream")
        except ValueError:
            log.debug("latency request %r ignored", ms)

    def client_ready(self, dcc: DisplayChannelClient) -> None:
        """A display client finished its init: it gets the live streams."""
        self.video.client_ready(dcc)

    def restart_streams(self, reason: str) -> None:
        """End every stream; the next frames start new ones."""
        self.video.stop_all(self.surfaces, self.dccs.values(), reason)

    def frame_sent(self, dcc: DisplayChannelClient, item: StreamDataItem, data: bytes) -> None:
        """A stream frame goes to a client: the frame tap sees it."""
        tap = self.frame_tap
        if tap is not None and item.agent.encoder is not None:
            tap(dcc.cc_id, item.agent.stream_id, int(item.agent.encoder.codec), item.mm_time, data, frame_pixels(item.drawable.op))

    # --- the display sink (worker thread) --------------------------------------------------------

    def apply(self, op: DisplayOp) -> None:
        """Apply one display operation (worker thread), then tell the observer if it took effect."""
        if self._ops[type(op)](op) is not False and self.observer is not None:
            self.observer.observe(op)

    def _create_surface(self, op: CreateSurface) -> None:
        if op.surface_id in self.surfaces:
            self.apply(DestroySurface(op.surface_id))
        surface = Surface(
            op.surface_id, op.width, op.height, op.format, op.primary,
            guest_view=op.guest_view, guest_stride=op.guest_stride, create_cmd=op.create_cmd,
        )  # fmt: skip
        if op.initial is not None:
            surface.canvas.pixels[:] = op.initial
        self.surfaces[op.surface_id] = surface
        for dcc in self.dccs.values():
            dcc.push_surface_create(surface, with_picture=op.initial is not None)
        if op.primary:
            self.ep.post(DisplayInfo(op.width, op.height))
            self._set_default_monitors(op.width, op.height)

    def _destroy_surface(self, op: DestroySurface) -> bool:
        surface = self.surfaces.pop(op.surface_id, None)
        if surface is None:
            return False
        self.video.surface_destroyed(op.surface_id, self.dccs.values())
        surface.tree.clear()
        for dcc in self.dccs.values():
            dcc.push_surface_destroy(op.surface_id)
        return True

    def _set_default_monitors(self, width: int, height: int) -> None:
        self.heads = d.MonitorsConfig(
            max_allowed=1, heads=(d.Head(monitor_id=0, surface_id=0, width=width, height=height, x=0, y=0, flags=0),)
        )
        for dcc in self.dccs.values():
            dcc.push_monitors_config()

    def _set_monitors(self, op: SetMonitors) -> None:
        self.heads = op.heads
        for dcc in self.dccs.values():
            dcc.push_monitors_config()

    def monitors_config(self) -> d.MonitorsConfig | None:
        """The current monitors layout, None before any."""
        return self.heads

    def broadcast(self, msg: Message) -> None:
        """Queue ``msg`` on every display client."""
        for dcc in self.dccs.values():
            dcc.push_message(msg)

    def resolver_surface(self, surface_id: int) -> Canvas:
        """Surface ``surface_id``'s canvas, for image resolution; KeyError if there is none."""
        surface = self.surfaces.get(surface_id)
        if surface is None:
            raise KeyError(surface_id)
        return surface.canvas

    def _draw(self, op: Draw) -> None:
        """Render, enter into the tree (pruning hidden draws from pipes) and queue for clients."""
        drawable = op.drawable
        surface = self.surfaces.get(drawable.surface_id)
        if surface is None:
            raise ValueError(f"draw on missing surface {drawable.surface_id}")
        taken = self.video.take(surface, drawable, self.dccs.values())
        self.render(surface, drawable)
        drawable.charge(self.retained)
        hidden = surface.tree.add(drawable)
        self.stats["drawables"] += 1
        if taken is not None:
            self.video.push(drawable, taken, self.dccs.values(), self.generation)
        else:
            for dcc in self.dccs.values():
                dcc.push_drawable(drawable)
        for h in hidden:
            self.stats["hidden"] += 1
            for dcc in self.dccs.values():
                if dcc.prune(h):
                    self.stats["pruned"] += 1
        if self.retained.exceeded:
            self.shed()

    def shed(self) -> None:
        """Let go of every drawable kept: each client's pipe collapses into pictures of the canvases
        (which hold every draw already), and the trees forget their items (only pruning chances go)."""
        for dcc in self.dccs.values():
            dcc.collapse()
        for s in self.surfaces.values():
            s.tree.clear()
        self.stats["shed"] += 1
        log.info("%s: drawables kept more than %d bytes: pipes collapsed, trees cleared", self.name, self.retained.budget)

    def render(self, surface: Surface, drawable: Drawable) -> None:
        """Render ``drawable`` into the surface's canvas."""
        if isinstance(drawable.op, CopyBits):
            render_op(surface.canvas, drawable.base, d.CopyBits(base=drawable.base, src_pos=drawable.op.src_pos), self.resolver)
        else:
            render_op(surface.canvas, drawable.base, drawable.op, self.resolver)

    def _set_cursor(self, op: SetCursor) -> None:
        self.cursor.shape, self.cursor.x, self.cursor.y, self.cursor.visible = op.shape, op.x, op.y, op.visible
        for cc in self.cursor_clients.values():
            cc.push_set(self.cursor)

    def _reset_cursor(self, op: ResetCursor) -> None:
        self.cursor = CursorState()
        for cc in self.cursor_clients.values():
            cc.push_reset()

    def _move_cursor(self, op: MoveCursor) -> None:
        self.cursor.x, self.cursor.y = op.x, op.y
        self.cursor.visible = True
        if not self.client_mouse_mode:
            for cc in self.cursor_clients.values():
                cc.push_move(self.cursor)

    def _hide_cursor(self, op: HideCursor) -> None:
        self.cursor.visible = False
        for cc in self.cursor_clients.values():
            cc.push_hide()

    def _set_cursor_trail(self, op: SetCursorTrail) -> None:
        self.cursor.trail_length, self.cursor.trail_frequency = op.length, op.frequency
        for cc in self.cursor_clients.values():
            cc.push_trail(self.cursor)
