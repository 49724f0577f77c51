"""The display worker thread: surfaces, drawables, and the display/cursor clients of one device.

Counterpart of spice ``server/red-worker.cpp`` (the thread, its loop, ``handle_dev_*``),
``display-channel.cpp`` (``display_channel_add_drawable``, surfaces) and ``red-qxl.cpp`` (how device
calls reach the worker). The loop::

    wait for the dispatcher (or the next timer)
    handle every message (client data, device calls, host frames)
    pull commands from the device rings in bounded batches (QXL devices)
    let each client produce what its flow control allows; hand the bytes to reds

Every draw is rendered into its surface's canvas as it arrives, entered into the surface's tree
(hiding what it covers), and queued on every client's pipe. Nothing here blocks on a client.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..canvas.draw import render_op
from ..canvas.images import NullResolver
from ..canvas.surface import Canvas
from ..codecs import warmup
from ..errors import ProtocolError
from ..metrics import DisplayMetrics
from ..proto.enums import ChannelType, CursorFlags, SurfaceFmt
from ..proto.messages import cursor as cm
from ..proto.messages import display as d
from ..proto.messages.base import Message, Point16, Rect
from .cursor_client import CursorChannelClient, CursorShape, CursorState
from .dispatcher import Dispatcher
from .display_client import DisplayChannelClient, ImageSettings
from .drawable import CopyBitsOp, Drawable
from .messages import (
    Call,
    ClientClose,
    ClientConnected,
    ClientData,
    ClientDisconnected,
    ClientOutput,
    ClientWritten,
    DisplayInfo,
    Stop,
)
from .picture import picture_image
from .record import Recorder
from .surface import Surface

__all__ = ["DisplayWorker", "CommandSource"]

log = logging.getLogger("spiceserver.worker")


class CommandSource:
    """Something the worker pulls drawing commands from (the QXL device glue implements it)."""

    def process(self, worker: DisplayWorker, budget: int) -> bool:
        """Handle up to ``budget`` commands; return True if more are pending right now."""
        return False

    def next_timeout(self) -> float | None:
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

    Args:
        name: for the thread and logs.
        display_id: the display channel id this worker serves.
    """

    BATCH = 50  # commands per loop iteration (libspice MAX_PIPE_SIZE-style bound)

    def __init__(self, name: str, display_id: int = 0, image_settings: ImageSettings | None = None) -> None:
        self.name = name
        self.display_id = display_id
        self.dispatcher = Dispatcher(name)
        self.ep = self.dispatcher.worker_side
        self.surfaces: dict[int, Surface] = {}
        self.dccs: dict[int, DisplayChannelClient] = {}
        self.image_settings = image_settings or ImageSettings()
        self.cursor_clients: dict[int, Any] = {}
        self.source: CommandSource | None = None
        self.heads: d.MonitorsConfig | None = None
        self.cursor = CursorState()
        self.client_mouse_mode = False  # reds tells us; MOVE is not sent in client mode
        self._thread = threading.Thread(target=self._run, name=f"spice-worker-{name}", daemon=True)
        self._stopping = False
        self.on_surface_change: list[Callable[[Surface], None]] = []
        self.stats = {"drawables": 0, "hidden": 0, "pruned": 0}
        #: images sent by display clients that have left (their encoder stats), for the metrics
        self.retired_images: Counter[str] = Counter()
        self.resolver = _Resolver(self)
        self.recorder: Recorder | None = None
        ep = self.ep
        ep.register_handler(ClientConnected, self._on_client_connected)
        ep.register_handler(ClientData, self._on_client_data)
        ep.register_handler(ClientWritten, self._on_client_written)
        ep.register_handler(ClientDisconnected, self._on_client_disconnected)
        ep.register_handler(Call, self._on_call)
        ep.register_handler(Stop, self._on_stop)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        warmup.start()  # compile the codec kernels in the background (LZ4/raw until then)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self.dispatcher.loop_side.post(Stop())
            self._thread.join(timeout)
        self.dispatcher.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def call(self, fn: Callable[[DisplayWorker], Any], *, wait: bool = True, timeout: float = 30.0) -> Any:
        """Run ``fn(worker)`` on the worker thread (from any thread); return its result if ``wait``."""
        if threading.current_thread() is self._thread:
            return fn(self)
        msg = Call(fn)
        self.dispatcher.loop_side.post(msg)
        if not wait:
            return None
        if not msg.done.wait(timeout):
            raise TimeoutError(f"worker {self.name} did not answer within {timeout} s")
        if msg.error is not None:
            raise msg.error
        return msg.result

    def _on_call(self, msg: Call) -> None:
        try:
            msg.result = msg.fn(self)
        except BaseException as exc:
            msg.error = exc
        finally:
            msg.done.set()

    def _on_stop(self, msg: Stop) -> None:
        self._stopping = True

    def _run(self) -> None:
        more = False
        while not self._stopping:
            # With commands still pending (a full batch was taken) do not sleep: the ring will not
            # notify again, because its notification was not re-armed.
            timeout = 0.0 if more else (self.source.next_timeout() if self.source else None)
            self.ep.wait(timeout)
            try:
                self.ep.drain()
                more = False
                if self.source is not None:
                    more = self.source.process(self, self.BATCH)
                self.flush_clients()
            except Exception:
                more = False
                log.exception("%s: worker loop error", self.name)
        try:
            self.stop_recording()  # a recording in progress ends complete
        except OSError:
            log.exception("%s: closing the recording", self.name)

    # --- clients -------------------------------------------------------------------------------

    def _on_client_connected(self, info: ClientConnected) -> None:
        if info.channel_type == ChannelType.DISPLAY:
            self.dccs[info.cc_id] = DisplayChannelClient(info, self.surfaces, self.monitors_config, self.image_settings)
            if self.source is not None:
                self.source.client_attached(self)
        elif info.channel_type == ChannelType.CURSOR:
            self.cursor_clients[info.cc_id] = CursorChannelClient(info, self)
        self.flush_clients()

    def _client(self, cc_id: int) -> Any:
        return self.dccs.get(cc_id) or self.cursor_clients.get(cc_id)

    def _on_client_data(self, msg: ClientData) -> None:
        cc = self._client(msg.cc_id)
        if cc is None:
            return
        try:
            cc.on_data(msg.data)
        except ProtocolError as exc:
            log.warning("[%s] protocol error, closing the channel: %s", cc.info.label, exc.reason)
            self._drop(msg.cc_id, exc.reason)

    def _on_client_written(self, msg: ClientWritten) -> None:
        cc = self._client(msg.cc_id)
        if cc is not None:
            cc.written(msg.nbytes)

    def _on_client_disconnected(self, msg: ClientDisconnected) -> None:
        self._forget(msg.cc_id)

    def _drop(self, cc_id: int, reason: str) -> None:
        self._forget(cc_id)
        self.ep.post(ClientClose(cc_id, reason))

    def _forget(self, cc_id: int) -> None:
        dcc = self.dccs.pop(cc_id, None)
        if dcc is not None:
            self.retired_images.update(dcc.encoder.stats)
        self.cursor_clients.pop(cc_id, None)

    def metrics(self, display_id: int) -> DisplayMetrics:
        """This display's counters for :meth:`SpiceServer.metrics` (worker thread); images are
        counted over every display client so far, gone ones included."""
        images = Counter(self.retired_images)
        for dcc in self.dccs.values():
            images.update(dcc.encoder.stats)
        return DisplayMetrics(
            display_id, self.stats["drawables"], self.stats["hidden"], self.stats["pruned"], len(self.dccs),
            sum(c.live for c in self.dccs.values()), {k: v for k, v in images.items() if v},
        )  # fmt: skip

    def flush_clients(self) -> None:
        for table in (self.dccs, self.cursor_clients):
            for cc_id, cc in list(table.items()):
                data = cc.produce()
                if data:
                    self.ep.post(ClientOutput(cc_id, data))

    # --- surfaces ------------------------------------------------------------------------------

    def create_surface(
        self,
        surface_id: int,
        width: int,
        height: int,
        fmt: int = SurfaceFmt.FMT_32_XRGB,
        *,
        primary: bool = False,
        initial: Any = None,
        **kw: Any,
    ) -> Surface:
        """Create a surface (``initial`` pixels, if given, are its first picture)."""
        if surface_id in self.surfaces:
            self.destroy_surface(surface_id)
        surface = Surface(surface_id, width, height, fmt, primary, **kw)
        if initial is not None:
            surface.canvas.pixels[:] = initial
        self.surfaces[surface_id] = surface
        if self.recorder is not None:
            self.recorder.display(d.SurfaceCreate(surface_id=surface_id, width=width, height=height, format=fmt, flags=int(primary)))
        for dcc in self.dccs.values():
            dcc.push_surface_create(surface, with_picture=initial is not None)
        if primary:
            self.ep.post(DisplayInfo(width, height))
            self.set_default_monitors(width, height)
        for cb in self.on_surface_change:
            cb(surface)
        return surface

    def destroy_surface(self, surface_id: int) -> None:
        surface = self.surfaces.pop(surface_id, None)
        if surface is None:
            return
        if self.recorder is not None:
            self.recorder.display(d.SurfaceDestroy(surface_id=surface_id))
        surface.tree.clear()
        for dcc in self.dccs.values():
            dcc.push_surface_destroy(surface_id)

    def destroy_all_surfaces(self) -> None:
        for sid in sorted(self.surfaces, reverse=True):
            self.destroy_surface(sid)

    def set_default_monitors(self, width: int, height: int) -> None:
        self.heads = d.MonitorsConfig(
            max_allowed=1, heads=(d.Head(monitor_id=0, surface_id=0, width=width, height=height, x=0, y=0, flags=0),)
        )
        for dcc in self.dccs.values():
            dcc.push_monitors_config()

    def set_monitors(self, heads: d.MonitorsConfig) -> None:
        self.heads = heads
        if self.recorder is not None:
            self.recorder.display(heads)
        for dcc in self.dccs.values():
            dcc.push_monitors_config()

    def monitors_config(self) -> d.MonitorsConfig | None:
        return self.heads

    def broadcast(self, msg: Message) -> None:
        for dcc in self.dccs.values():
            dcc.push_message(msg)

    # --- drawing -------------------------------------------------------------------------------

    def resolver_surface(self, surface_id: int) -> Canvas:
        surface = self.surfaces.get(surface_id)
        if surface is None:
            raise KeyError(surface_id)
        return surface.canvas

    def add_drawable(self, drawable: Drawable) -> None:
        """Render, enter into the tree (pruning hidden draws from pipes) and queue for clients."""
        surface = self.surfaces.get(drawable.surface_id)
        if surface is None:
            raise ValueError(f"draw on missing surface {drawable.surface_id}")
        self.render(surface, drawable)
        if self.recorder is not None:
            self.recorder.display(drawable.message())
        hidden = surface.tree.add(drawable)
        self.stats["drawables"] += 1
        for dcc in self.dccs.values():
            dcc.push_drawable(drawable)
        for h in hidden:
            self.stats["hidden"] += 1
            for dcc in self.dccs.values():
                if dcc.prune(h):
                    self.stats["pruned"] += 1

    def render(self, surface: Surface, drawable: Drawable) -> None:
        if isinstance(drawable.op, CopyBitsOp):
            render_op(surface.canvas, drawable.base, d.CopyBits(base=drawable.base, src_pos=drawable.op.src_pos), self.resolver)
        else:
            render_op(surface.canvas, drawable.base, drawable.op, self.resolver)

    # --- cursor --------------------------------------------------------------------------------

    def start_recording(self, recorder: Recorder) -> None:
        """Record from now on, starting with the present state: each surface and its picture (as a
        raw DRAW_COPY), the monitors layout and the cursor -- so a replay starts from this picture."""
        self.stop_recording()
        for surface in self.surfaces.values():
            recorder.display(d.SurfaceCreate(surface_id=surface.id, width=surface.width, height=surface.height, format=surface.format, flags=int(surface.primary)))
            image = picture_image(surface.canvas.pixels, surface.canvas.pixfmt)
            box = Rect(top=0, left=0, bottom=surface.height, right=surface.width)
            op = d.Copy(src_bitmap=image, src_area=box, rop_descriptor=8, scale_mode=1, mask=d.QMask())
            recorder.display(d.DrawCopy(base=d.DisplayBase(surface_id=surface.id, box=box, clip=d.Clip()), data=op))
        if self.heads is not None:
            recorder.display(self.heads)
        self.recorder = recorder
        c = self.cursor
        if c.shape is not None or c.visible:
            self.cursor_set(c.shape, c.x, c.y, c.visible)  # records it (clients get the same state again)

    def stop_recording(self) -> int:
        """Stop recording (the file is flushed and closed); returns how many records it holds."""
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return 0
        recorder.close()
        return recorder.count

    def _record_cursor(self, msg: Message) -> None:
        if self.recorder is not None:
            self.recorder.cursor(msg)

    def cursor_set(self, shape: CursorShape | None, x: int, y: int, visible: bool) -> None:
        self.cursor.shape, self.cursor.x, self.cursor.y, self.cursor.visible = shape, x, y, visible
        if self.recorder is not None:
            if shape is None:
                cur = cm.Cursor(flags=CursorFlags.NONE)
            else:
                header = cm.CursorHeader(unique=shape.unique, type=shape.type, width=shape.width, height=shape.height, hot_spot_x=shape.hot_x, hot_spot_y=shape.hot_y)
                cur = cm.Cursor(flags=0, header=header, data=shape.data)
            self._record_cursor(cm.CursorSet(position=Point16(x=x, y=y), visible=int(visible), cursor=cur))
        for cc in self.cursor_clients.values():
            cc.push_set(self.cursor)

    def cursor_reset(self) -> None:
        self.cursor = CursorState()
        for cc in self.cursor_clients.values():
            cc.push_reset()

    def cursor_move(self, x: int, y: int) -> None:
        self._record_cursor(cm.CursorMove(position=Point16(x=x, y=y)))
        self.cursor.x, self.cursor.y = x, y
        self.cursor.visible = True
        if not self.client_mouse_mode:
            for cc in self.cursor_clients.values():
                cc.push_move(self.cursor)

    def cursor_hide(self) -> None:
        self._record_cursor(cm.CursorHide())
        self.cursor.visible = False
        for cc in self.cursor_clients.values():
            cc.push_hide()

    def cursor_trail(self, length: int, frequency: int) -> None:
        self._record_cursor(cm.CursorTrail(length=length, frequency=frequency))
        self.cursor.trail_length, self.cursor.trail_frequency = length, frequency
        for cc in self.cursor_clients.values():
            cc.push_trail(self.cursor)

    # --- loop-facing API (TEMPORARY shims over call; replaced by typed messages) ---------------

    def snapshot(self, surface_id: int = 0) -> Any:
        return self.call(lambda w: w.surfaces[surface_id].canvas.pixels.copy())

    def screendump(self, path: Any, surface_id: int = 0) -> None:
        self.call(lambda w: w.surfaces[surface_id].canvas.to_png(path))

    def begin_recording(self, recorder: Recorder) -> None:
        self.call(lambda w: w.start_recording(recorder))

    def end_recording(self) -> int:
        n: int = self.call(lambda w: w.stop_recording())
        return n

    def set_client_mouse_mode(self, client: bool) -> None:
        self.call(lambda w: setattr(w, "client_mouse_mode", client), wait=False)

    def wait_idle(self, timeout: float = 5.0) -> None:
        def drain(w: DisplayWorker) -> None:
            if w.source is not None:
                while w.source.process(w, 10_000):
                    pass

        self.call(drain, timeout=timeout)

    def display_stats(self) -> dict[str, Any]:
        def collect(w: DisplayWorker) -> dict[str, Any]:
            return {
                **w.stats,
                "surfaces": sorted(w.surfaces),
                "monitors": w.heads,
                "clients": [{"images": dict(c.encoder.stats), **c.stats, "pipe": c.live} for c in w.dccs.values()],
            }

        out: dict[str, Any] = self.call(collect)
        return out

    def collect_metrics(self, display_id: int) -> DisplayMetrics:
        out: DisplayMetrics = self.call(lambda w: w.metrics(display_id))
        return out
