"""The host -> worker boundary: typed requests with replies, re-entrancy, the display sink's observer."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import Rect
from spiceserver.worker.dispatcher import Request
from spiceserver.worker.drawable import make_drawable
from spiceserver.worker.messages import ApplyOps
from spiceserver.worker.ops import CreateSurface, DestroySurface, DisplayOp, Draw, MoveCursor
from spiceserver.worker.worker import CommandSource, DisplayWorker


@dataclass(frozen=True, slots=True)
class Probe(Request):
    """A device message whose handler, on the worker thread, uses the loop-facing API itself."""

    surface_id: int


class ProbeSource(CommandSource):
    def __init__(self, worker: DisplayWorker) -> None:
        self.worker = worker
        self.threads: list[threading.Thread] = []

    def handlers(self) -> Mapping[type, Callable[[Any], object]]:
        return {Probe: self._on_probe}

    def _on_probe(self, msg: Probe) -> np.ndarray:
        self.threads.append(threading.current_thread())
        return self.worker.snapshot(msg.surface_id)  # re-entrant: runs directly, no deadlock


def fill(color: int, right: int = 4, bottom: int = 4) -> Draw:
    base = d.DisplayBase(surface_id=0, box=Rect(top=0, left=0, bottom=bottom, right=right), clip=d.Clip())
    op = d.Fill(brush=d.Brush(type=1, color=color), rop_descriptor=8, mask=d.QMask())
    return Draw(make_drawable(0, base, op))


def test_requests_are_answered_on_the_worker_thread_and_errors_come_back() -> None:
    w = DisplayWorker("t")
    w.start()
    try:
        source = ProbeSource(w)
        w.attach_source(source)
        assert w.request(ApplyOps((CreateSurface(0, 8, 8, primary=True), fill(0x123456)))) == 2
        px = w.request(Probe(0))
        assert source.threads == [w._thread] and px[0, 0] == 0x123456 and px[7, 7] == 0
        with pytest.raises(KeyError):
            w.snapshot(5)  # raised on the worker, re-raised here
        with pytest.raises(ValueError, match="missing surface"):
            w.request(ApplyOps((DestroySurface(0), fill(1))))
        assert w.display_stats()["surfaces"] == []
    finally:
        w.stop()
    with pytest.raises(RuntimeError, match="not running"):
        w.snapshot()


def test_a_worker_never_started_runs_requests_on_the_callers_thread() -> None:
    w = DisplayWorker("direct")
    try:
        w.request(ApplyOps((CreateSurface(0, 4, 4, primary=True), fill(7))))
        assert w.snapshot()[3, 3] == 7
        w.set_client_mouse_mode(True)
        assert w.client_mouse_mode
    finally:
        w.dispatcher.close()


class Watcher:
    def __init__(self) -> None:
        self.ops: list[DisplayOp] = []
        self.count = 0
        self.closed = False

    def observe(self, op: DisplayOp) -> None:
        self.ops.append(op)
        self.count += 1

    def close(self) -> None:
        self.closed = True


def test_the_observer_sees_applied_operations_only() -> None:
    w = DisplayWorker("observed")
    try:
        w.request(ApplyOps((CreateSurface(0, 4, 4, primary=True),)))
        watcher = Watcher()
        w.begin_recording(watcher)
        kinds = [type(op).__name__ for op in watcher.ops]
        assert kinds == ["CreateSurface", "Draw", "SetMonitors"]  # the present state first
        draw = fill(3)
        w.request(ApplyOps((draw, MoveCursor(1, 2), DestroySurface(9))))  # surface 9 does not exist
        with pytest.raises(ValueError):
            w.request(ApplyOps((DestroySurface(0), fill(4))))
        assert watcher.ops[3:] == [draw, MoveCursor(1, 2), DestroySurface(0)]  # no-op and failed ones unseen
        assert w.end_recording() == 6 and watcher.closed and w.end_recording() == 0
    finally:
        w.dispatcher.close()
