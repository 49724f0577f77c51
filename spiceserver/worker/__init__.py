"""The display worker: one thread per display device (QXL or host framebuffer).

It owns the surfaces and their software canvases, the drawable tree, and the Display and Cursor
channel clients (their pipes, caches and sans-IO connections). It never touches a socket: marshalled
bytes go to :mod:`spiceserver.reds` through the :class:`~spiceserver.worker.dispatcher.Dispatcher`.
"""

from __future__ import annotations

from ..codecs.warmup import ready as codec_kernels_ready

__all__ = ["codec_kernels_ready"]
