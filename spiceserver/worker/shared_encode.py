"""Encode once: one display's image codec results, shared by all its clients whose choice agrees.

libspice encodes every image for every client (spice ``server/dcc.cpp`` ``dcc_compress_image`` runs
per ``DisplayChannelClient``, through that client's ``ImageEncoders`` of ``server/image-encoders.cpp``).
With several clients on one display (a viewer beside the owner) that is the same Quic, LZ, LZ4 or
JPEG work done again on the same pixels. Here the display worker keeps one :class:`SharedEncodes`,
and each client's :class:`~spiceserver.worker.image_encoder.ImageEncoder` asks it for a codec's
output: the first client to need (image, codec, parameters) runs the codec, the others take the
bytes. The per-client parts stay per client, because they depend on what that client was sent:

* GLZ and ZLIB_GLZ (their dictionary is the client's window: never shared, only counted);
* the pixmap cache (FROM_CACHE / CACHE_ME) and the palette cache (LZ_PLT's palette flags): the
  encoder takes the shared LZ bytes and wraps them in that client's flags;
* which codec applies: each client's policy picks (caps, preferred compression, JPEG allowed);
  two clients whose choice differs simply ask for different keys.

The key is the bitmap *object* (the one a drawable holds, the same object for every client's pipe),
a codec tag and the codec's parameters (JPEG quality, LZ image type, Quic format). The guest's
image id is not trusted as an identity. The cache holds a reference to each bitmap it keys (so the
id cannot be reused while the entry lives) and is bounded by entries and bytes (source plus
encoded): a client that lags further behind than the cache reaches encodes for itself again.
Worker thread only (no lock).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["SharedEncodes", "SharedFrames", "EncodeStats", "MAX_ENTRIES", "MAX_BYTES", "MAX_FRAMES"]

#: entries the cache keeps (about a few pipes' worth of images)
MAX_ENTRIES = 256
#: bytes (source bitmaps kept alive plus encoded results) the cache may hold
MAX_BYTES = 64 << 20
#: stream frames whose encode (a future) :class:`SharedFrames` keeps
MAX_FRAMES = 8

T = TypeVar("T", bytes, bool)
#: a stream frame's encode: (the data or None, milliseconds it took)
FrameFuture = Future[tuple[bytes | None, float]]


@dataclass
class EncodeStats:
    """Counters of one display's image encodes (all its clients, past and present).

    Attributes:
        encoded: codec runs (each shared result once, every GLZ image).
        shared: results taken from the cache instead of encoding again.
        bytes_encoded: bytes the codec runs produced.
        bytes_shared: bytes taken from the cache (what a per-client encoder would have produced again).
        frames_shared: video stream frames a client took from another client's encode (MJPEG at
            the same quality: :class:`SharedFrames`).
    """

    encoded: int = 0
    shared: int = 0
    bytes_encoded: int = 0
    bytes_shared: int = 0
    frames_shared: int = 0


class SharedEncodes:
    """A bounded LRU of codec results keyed by (bitmap object, codec tag and parameters).

    Args:
        max_entries: entries kept at most.
        max_bytes: source bitmap bytes plus encoded bytes kept at most.
    """

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.stats = EncodeStats()
        # key -> (the source object, kept alive while keyed by its id; the result; bytes charged)
        self._items: OrderedDict[tuple[int, Hashable], tuple[object, bytes | bool, int]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def held_bytes(self) -> int:
        """Bytes charged against ``max_bytes`` now."""
        return self._bytes

    def get(self, source: object, size: int, key: Hashable, encode: Callable[[], T], *, keep: bool = True) -> T:
        """``encode()``'s result for ``source`` under ``key``, run once while the entry lives.

        Args:
            source: the object the result is of (a ``BitmapData``); its identity is the key.
            size: its bytes (charged while the entry keeps it alive).
            key: the codec tag and parameters, e.g. ``("quic", "rgb32")``.
            encode: runs the codec; bytes results are counted as encodes, bool results (an
                analysis such as graduality) are cached but not counted.
            keep: False for a source no other client will send (a canvas picture made for one
                client): encode and count, keep nothing.
        """
        k = (id(source), key)
        hit = self._items.get(k)
        if hit is not None and hit[0] is source:
            self._items.move_to_end(k)
            result = hit[1]
            if isinstance(result, bytes):
                self.stats.shared += 1
                self.stats.bytes_shared += len(result)
            return result  # type: ignore[return-value]
        out = encode()
        charge = (len(out) if isinstance(out, bytes) else 0) + size
        if isinstance(out, bytes):
            self.count(len(out))
        if hit is not None:
            self._drop(k)
        if keep and charge <= self.max_bytes and self.max_entries > 0:
            # a source already kept by another entry is charged again: the bound stays an upper bound
            self._items[k] = (source, out, charge)
            self._bytes += charge
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                self._drop(next(iter(self._items)))
        return out

    def count(self, nbytes: int) -> None:
        """A codec run that is not shared (GLZ: the client's own window) produced ``nbytes``."""
        self.stats.encoded += 1
        self.stats.bytes_encoded += nbytes

    def clear(self) -> None:
        """Forget every entry (the counters stay)."""
        self._items.clear()
        self._bytes = 0

    def _drop(self, k: tuple[int, Hashable]) -> None:
        _, _, charge = self._items.pop(k)
        self._bytes -= charge


class SharedFrames:
    """Video stream frames being encoded, by (frame op, codec and parameters): a client whose rate
    control chose the same stateless encode (MJPEG at the same quality) as another client for the
    same frame takes that client's pending encode (a future) instead of starting its own.

    The stateful codecs (VP8, VP9, H.264) are never shared: each client's encoder predicts from
    the frames that client got. Worker thread only; the last :data:`MAX_FRAMES` frames are kept.
    """

    def __init__(self, stats: EncodeStats, max_frames: int = MAX_FRAMES) -> None:
        self.stats = stats
        self.max_frames = max_frames
        # key -> (the frame's op, kept alive while keyed by its id; the encode's future)
        self._items: OrderedDict[tuple[int, Hashable], tuple[object, FrameFuture]] = OrderedDict()

    def get(self, op: object, key: Hashable) -> FrameFuture | None:
        """The pending or finished encode of ``op`` under ``key``, if a client started one."""
        hit = self._items.get((id(op), key))
        if hit is None or hit[0] is not op:
            return None
        self.stats.frames_shared += 1
        return hit[1]

    def put(self, op: object, key: Hashable, future: FrameFuture) -> None:
        """A client started encoding ``op`` under ``key``: others may take ``future``."""
        self._items[id(op), key] = (op, future)
        self._items.move_to_end((id(op), key))
        while len(self._items) > self.max_frames:
            self._items.popitem(last=False)
