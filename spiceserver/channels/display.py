"""Display channels: one per display device, served by the device's worker thread; the host's display API.

Counterpart of spice ``server/display-channel.cpp`` as seen from ``reds.cpp`` and ``red-qxl.cpp``:
a display device (an emulated QXL device, or a framebuffer the host paints) gets a worker thread
and a display and a cursor channel with its id; the host reads the picture back (screendump),
records the display, and waits for it to settle. The clients' protocol state lives on the worker
(:mod:`spiceserver.worker`); :mod:`spiceserver.channels.worker_link` moves their bytes.

Every method here may be called from any thread: the work is done by the worker, through typed
messages, and a method that returns a result waits for it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..framebuffer import FramebufferDisplay
from ..metrics import DisplayMetrics
from ..proto.enums import ChannelType, DisplayCap, MouseMode
from ..qxl import QXLDevice, QXLDeviceConfig
from ..worker import codec_kernels_ready
from ..worker.compression import DisplaySettings
from ..worker.messages import CollectMetrics
from ..worker.qxl_source import QXLWorkerBackend
from ..worker.record import Recorder
from ..worker.session_caches import SessionCaches
from ..worker.worker import DisplayWorker
from .base import ServerContext
from .cursor import CursorChannel
from .inputs import InputsChannel
from .worker_link import WorkerBridge, WorkerChannel

__all__ = ["METRICS_WAIT", "DISPLAY_CAPS", "Display", "Displays", "DisplayChannel", "FramebufferDisplay", "QXLDevice", "QXLDeviceConfig"]

#: display channel caps we advertise (libspice's: MONITORS_CONFIG, STREAM_REPORT, PREF_COMPRESSION,
#: PREF_VIDEO_CODEC_TYPE)
DISPLAY_CAPS = (DisplayCap.MONITORS_CONFIG, DisplayCap.STREAM_REPORT, DisplayCap.PREF_COMPRESSION, DisplayCap.PREF_VIDEO_CODEC_TYPE)


class DisplayChannel(WorkerChannel):
    """The display channel of one display device."""

    TYPE = ChannelType.DISPLAY

    def __init__(self, ctx: ServerContext, display: Display) -> None:
        super().__init__(ctx, display.bridge, display.id, DISPLAY_CAPS)
        self.display = display

    def on_loop_start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Handle the worker's messages on the loop."""
        self.bridge.start(loop)

    async def close(self) -> None:
        """Stop the worker."""
        await self.bridge.close()

    def on_mouse_mode(self, mode: MouseMode) -> None:
        """In client mouse mode the cursor channel stops sending MOVE."""
        self.display.worker.set_client_mouse_mode(mode == MouseMode.CLIENT)


class Display:
    """One display device: its worker thread, its display and cursor channels, and the host API.

    Args:
        ctx: the server's shared services.
        worker: the device's worker (started here).
    """

    def __init__(self, ctx: ServerContext, worker: DisplayWorker) -> None:
        self.ctx = ctx
        self.id = worker.display_id
        self.worker = worker
        #: what paints it: an emulated QXL device or a host framebuffer (set once it is made)
        self.device: QXLDevice | FramebufferDisplay | None = None
        self.bridge = WorkerBridge(ctx, worker, self._primary_resized)
        self.display_channel = DisplayChannel(ctx, self)
        self.cursor_channel = CursorChannel(ctx, self.bridge, self.id)

    def _primary_resized(self, width: int, height: int) -> None:
        inputs = self.ctx.registry.get(ChannelType.INPUTS, 0)
        if isinstance(inputs, InputsChannel):
            inputs.set_logical_size(width, height)

    def client_monitors_config(self, heads: Sequence[tuple[int, int, int, int]] | None) -> bool:
        """Offer a client's monitor layout ``(x, y, width, height)`` to the device (libspice
        ``red_qxl_client_monitors_config``); with ``heads`` None only asks whether it would take one.
        Only a QXL device whose driver asks for them does; a framebuffer display never."""
        device = self.device
        return isinstance(device, QXLDevice) and device.client_monitors_config(heads)

    def snapshot(self) -> np.ndarray:
        """A copy of the server's picture of the primary surface ((h, w) uint32 0x00RRGGBB)."""
        pixels: np.ndarray = self.worker.snapshot()
        return pixels

    def screendump(self, path: str | os.PathLike[str] | IO[bytes]) -> None:
        """Write the current picture as PNG (QEMU ``screendump``)."""
        self.worker.screendump(path)

    def start_recording(self, path: str | os.PathLike[str]) -> None:
        """Record the display to ``path`` from now on (see ``SpiceServer.start_recording``)."""
        recorder = Recorder(Path(path))
        try:
            self.worker.begin_recording(recorder)
        except BaseException:
            recorder.close()
            raise

    def stop_recording(self) -> int:
        """Stop recording; returns the number of records, 0 if none."""
        return self.worker.end_recording()

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Return once the worker has handled every command queued so far."""
        self.worker.wait_idle(timeout)

    def stats(self) -> dict[str, Any]:
        """Live counters: drawables, hidden, pruned, and per client what was sent how."""
        return self.worker.display_stats()


#: seconds ``SpiceServer.metrics()`` waits for a busy display worker before reporting its last counters
METRICS_WAIT = 1.0
#: threads that wait for the workers' metrics answers (not asyncio's default pool, which links share)
METRICS_THREADS = 2
_metrics_pool: ThreadPoolExecutor | None = None


class _MetricsWaits:
    """Per display: at most one CollectMetrics request queued, one bounded wait for it, its last answer (event loop)."""

    def __init__(self) -> None:
        self._requests: dict[int, CollectMetrics] = {}
        self._waits: dict[int, asyncio.Future[DisplayMetrics]] = {}
        self.last: dict[int, DisplayMetrics] = {}

    async def collect(self, display_id: int, worker: DisplayWorker) -> DisplayMetrics | None:
        global _metrics_pool
        if not worker.running:
            return None
        wait = self._waits.get(display_id)
        if wait is None:
            msg = self._requests.get(display_id)
            if msg is None or msg.reply.done:
                msg = self._requests[display_id] = CollectMetrics(display_id)
                worker.post(msg)
            if _metrics_pool is None:
                _metrics_pool = ThreadPoolExecutor(METRICS_THREADS, thread_name_prefix="spice-metrics")
            wait = self._waits[display_id] = asyncio.get_running_loop().run_in_executor(_metrics_pool, msg.reply.wait, METRICS_WAIT)
            wait.add_done_callback(lambda _f: self._waits.pop(display_id, None))
        try:
            self.last[display_id] = await asyncio.shield(wait)
        except TimeoutError:
            pass  # busy: its last counters, stale
        except Exception:
            return None
        return self.last.get(display_id)


class Displays:
    """The server's display devices, in display-id order."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._displays: list[Display] = []
        self._metrics = _MetricsWaits()
        #: spice-gtk's GLZ window is per session: one owner table for all the displays
        self.caches = SessionCaches()
        ctx.client_monitors_config = self.client_monitors_config

    def _add(self, attach: Callable[[DisplayWorker], Any]) -> Any:
        settings = DisplaySettings.from_config(self.ctx.config)
        worker = DisplayWorker(f"display{len(self._displays)}", len(self._displays), settings, self.ctx.clock, self.caches)
        display = Display(self.ctx, worker)
        worker.start()
        device = attach(worker)
        display.device = device
        self._displays.append(display)
        self.ctx.registry.add(display.display_channel)
        self.ctx.registry.add(display.cursor_channel)
        return device

    def add_framebuffer(self, width: int, height: int) -> FramebufferDisplay:
        """A display fed with host frames (see :class:`~spiceserver.framebuffer.FramebufferDisplay`)."""
        fb: FramebufferDisplay = self._add(lambda worker: FramebufferDisplay(worker, width, height))
        return fb

    def add_qxl(
        self,
        config: QXLDeviceConfig | None,
        irq: Callable[[bool], None] | None,
        ram: Any,
        vram: Any,
        rom: Any,
    ) -> QXLDevice:
        """An emulated QXL device whose rings the worker pulls (see ``SpiceServer.add_qxl_device``)."""

        def attach(worker: DisplayWorker) -> QXLDevice:
            backend = QXLWorkerBackend(worker)
            device = QXLDevice(backend, config, ram=ram, vram=vram, rom=rom, irq=irq)
            backend.attach(device)
            return device

        device: QXLDevice = self._add(attach)
        return device

    def client_monitors_config(self, heads: Sequence[tuple[int, int, int, int]] | None) -> bool:
        """A client's monitor layout for the display devices (any thread).

        With ``heads`` None: whether the devices take client monitors configs, so that the guest
        agent's MONITORS_CONFIG goes to them instead of to the agent (libspice
        ``reds_use_client_monitors_config``: there is a display and every one takes it). With heads:
        every device gets all of them (``reds_client_monitors_config``); True if one took them.
        """
        displays = list(self._displays)
        if heads is None:
            return bool(displays) and all(d.client_monitors_config(None) for d in displays)
        took = [d.client_monitors_config(heads) for d in displays]
        return any(took)

    def __getitem__(self, display_id: int) -> Display:
        return self._displays[display_id]

    def __len__(self) -> int:
        return len(self._displays)

    async def metrics(self) -> tuple[DisplayMetrics, ...]:
        """Each running display's counters, asked of all workers at once (a stopped worker is skipped).

        A worker that does not answer within :data:`METRICS_WAIT` is reported with the last
        counters it gave (left out if it never answered); its request stays queued, and later calls
        wait for that one instead of queueing more.
        """
        found = await asyncio.gather(*(self._metrics.collect(d.id, d.worker) for d in self._displays))
        return tuple(m for m in found if m is not None)

    @staticmethod
    def codec_kernels_ready() -> bool:
        """The compiled image codecs are ready (until then images go LZ4 or raw)."""
        return codec_kernels_ready()
