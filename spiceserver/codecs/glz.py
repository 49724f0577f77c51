"""GLZ: LZ with a dictionary window shared across all the images sent to one client.

Counterpart of spice-server ``server/glz-encoder.c`` (``glz_encode``), ``glz-encoder-dict.c``
(``glz_dictionary_pre_encode`` / ``post_encode``, the window of images) and the templates in
:mod:`.glz_kernels`; the client side is spice-gtk ``src/decode-glz.c`` (``decode_header``,
``glz_decoder_window_*``), mirrored here by :class:`GlzDecoderWindow` and :func:`decode_glz` (our
tests' "client").

Stream layout (**big-endian**, 33 bytes of header)::

    u32 magic 0x20205A4C   u32 version 0x00010001   u8 type | top_down << 4
    u32 width   u32 height   u32 stride   u64 image id   u32 win_head_dist
    data: one pass (RGBA: an RGB32 pass then an alpha pass)

The codes are LZ's with a different match: length field ``c >> 5`` (7 = continuation bytes as in
LZ), bit 4 = long pixel offset, low 4 bits = offset bits 0-3, next byte = offset bits 4-11, next
byte = 2 bits of "extra image-distance bytes" then either 6 bits of image distance (short) or a
very-long flag and offset bits 12-16 (long), then the extra bytes, then (very long) offset bits
17-24. Length = field + continuation + 2 (alpha) / +1 (RGB16) / +0 (RGB24/32). Image distance 0:
the offset (+1) counts back from the current pixel; otherwise it is the index of the first pixel
in image ``id - distance``.

Ownership and lifetime (what the caller must do):

- One :class:`GlzDictionary` per client (shared by that client's display channels, as the
  DISPLAY INIT ``glz_dictionary_id`` says), sized by the INIT's ``glz_dictionary_window_size``
  (pixels). **A client that reconnects gets a new GlzDictionary**: image ids restart at 0, and the
  client's window starts empty too.
- Image ids are the dictionary's own counter (0, 1, 2, ... as libspice), not SpiceImage ids.
  :func:`encode_glz` enters the image into the window *before* coding it, so **every GLZ stream it
  returns must reach the client** (wrapped in ZLIB_GLZ_RGB or not), in id order per channel:
  a dropped image is an id the client waits for forever once a later image refers to it.
- Only images with ``width * height < window size`` may be coded (:meth:`GlzDictionary.fits`);
  libspice falls back to LZ otherwise.
- The dictionary keeps its own copy of the pixels of the images in the window (libspice keeps the
  drawables alive instead), so callers may reuse their buffers at once. Memory: an 8 MiB hash table
  plus a pixel ring that grows on demand up to 4 bytes x the window rounded up to a power of two
  (64 MiB for spice-gtk's largest window of 16 Mpx).
- A client that announces a window of 0 (spice-html5) has no GLZ decoder: do not create one.
"""

from __future__ import annotations

import struct
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from .._jit import kernel_input
from ..errors import ProtocolError
from . import glz_kernels as G
from . import lz_kernels as K
from .lz import LZ_MAGIC, LZ_VERSION, LzImageType, bytes_per_pixel, input_pixels, scratch

__all__ = [
    "GLZ_TYPES",
    "GLZ_HEADER_SIZE",
    "LZ_MAX_WINDOW_SIZE",
    "GlzDictionary",
    "encode_glz",
    "GlzDecoderWindow",
    "GlzImage",
    "decode_glz",
    "decode_glz_header",
]

#: The types spice-server codes with GLZ (``bitmap_fmt_has_graduality`` formats).
GLZ_TYPES = frozenset({LzImageType.RGB16, LzImageType.RGB24, LzImageType.RGB32, LzImageType.RGBA})
GLZ_HEADER_SIZE = 33
#: ``LZ_MAX_WINDOW_SIZE``: the largest window libspice accepts (pixels).
LZ_MAX_WINDOW_SIZE = 1 << 25
#: Default bound on the pixels :func:`decode_glz` decodes per image.
MAX_DECODE_PIXELS = 1 << 26

_HDR = struct.Struct(">IIBIIIQI")


def _next_pow2(v: int) -> int:
    return 1 << max(0, (v - 1).bit_length())


_INIT_SEGS = 1000  # INIT_IMAGE_SEGS_NUM


@dataclass(frozen=True)
class _WinImage:
    id: int
    seg: int
    pos: int
    n: int


class GlzDictionary:
    """A client's GLZ encoder dictionary: the window of recent images and the shared hash table.

    Mirrors libspice's ``SharedDictionary`` for one encoder at a time (calls are serialised by an
    internal lock; libspice lets several display channels encode at once, which only changes when
    old images may leave the window). Segment slots are recycled in libspice's order, so a fresh
    dictionary codes an image sequence exactly as ``glz_encode`` does when every image is one chunk.

    Args:
        window_size_pixels: the client's ``glz_dictionary_window_size`` from DISPLAY INIT
            (1 .. 2**25 pixels).

    Raises:
        ValueError: a window size libspice would refuse.
    """

    def __init__(self, window_size_pixels: int) -> None:
        if not 1 <= window_size_pixels <= LZ_MAX_WINDOW_SIZE:
            raise ValueError(f"GLZ window size {window_size_pixels} out of range")
        self.window_size = int(window_size_pixels)
        self.lock = threading.Lock()
        self.last_image_id = 0  # the next image's id
        self.pixels_so_far = 0
        # slot h = (segment index, pixel index) at [2h], [2h + 1]: one cache line per lookup
        self.htab = np.full(2 * G.GLZ_HASH_SIZE, 0, np.int32)  # written now: no page faults mid-encode
        self._ring = np.zeros(1 << 16, np.uint32)
        self._images: deque[_WinImage] = deque()
        self._quota = 0
        self._free: list[int] = []
        self.seg_alive = np.zeros(0, np.uint8)
        self.seg_type = np.zeros(0, np.int32)
        self.seg_id = np.zeros(0, np.int64)
        self.seg_pos = np.zeros(0, np.int64)
        self.seg_n = np.zeros(0, np.int64)
        self._grow_segs()

    # -- window bookkeeping (glz-encoder-dict.c) -------------------------------------------

    def fits(self, width: int, height: int) -> bool:
        """Whether an image may be GLZ-coded (spice-server: ``x * y < dictionary size``)."""
        return 0 < width * height < self.window_size

    @property
    def images_in_window(self) -> list[int]:
        """Ids of the images currently in the window, oldest first."""
        return [im.id for im in self._images]

    @property
    def window_pixels(self) -> int:
        """Pixels of the images currently in the window (at most ``window_size``)."""
        return self.pixels_so_far - self._images[0].pos if self._images else 0

    def _grow_segs(self) -> None:
        old = self._quota
        new = _INIT_SEGS if old == 0 else old * 2
        for name in ("seg_alive", "seg_type", "seg_id", "seg_pos", "seg_n"):
            arr = getattr(self, name)
            grown = np.zeros(new, arr.dtype)
            grown[:old] = arr
            setattr(self, name, grown)
        # the new slots become the free list, lowest index first (popped from the end)
        self._free = list(range(new - 1, old - 1, -1)) + self._free
        self._quota = new

    def reserve(self, pixels: int) -> None:
        """Allocate and fault in the pixel ring for ``pixels`` (capped at the window) ahead of use.

        Optional: without it the ring grows while images are coded, and the first large images pay
        for mapping fresh memory.
        """
        want = _next_pow2(min(max(pixels, 1), self.window_size))
        with self.lock:
            keep_from = self._images[0].pos if self._images else self.pixels_so_far
            self._ensure_ring(keep_from, want, touch=True)

    def _ensure_ring(self, keep_from: int, span: int, touch: bool = False) -> None:
        """Grow the pixel ring to hold ``span`` pixels, keeping those from ``keep_from`` on."""
        size = self._ring.shape[0]
        if span <= size:
            return
        new = size
        while new < span:
            new *= 2
        new = max(new, min(2 * new, _next_pow2(self.window_size)))  # grow ahead, never past the window
        ring = np.empty(new, np.uint32)  # only the live range is ever read
        if touch:
            ring.fill(0)
        pos = keep_from
        while pos < self.pixels_so_far:  # copy contiguous runs of both rings
            src = pos & (size - 1)
            dst = pos & (new - 1)
            k = min(self.pixels_so_far - pos, size - src, new - dst)
            ring[dst : dst + k] = self._ring[src : src + k]
            pos += k
        self._ring = ring

    def _pre_encode(self, npix: int, lz_type: int) -> tuple[_WinImage, int, int]:
        """Make room and enter the image; returns (image, win_head_dist, head position).

        The image's ring slot is free afterwards; the first coding pass fills it.
        """
        images = self._images
        k = 0
        if images:
            last = images[-1]
            win = last.pos + last.n - images[0].pos
            while k < len(images) and win + npix > self.window_size:
                win -= images[k].n
                k += 1
        for _ in range(k):
            old = images.popleft()
            self.seg_alive[old.seg] = 0
            self._free.append(old.seg)
        new_head = images[0] if images else None

        keep_from = self.pixels_so_far if new_head is None else new_head.pos
        self._ensure_ring(keep_from, self.pixels_so_far + npix - keep_from)
        if not self._free:
            self._grow_segs()
        seg = self._free.pop()
        image = _WinImage(self.last_image_id, seg, self.pixels_so_far, npix)
        self.last_image_id += 1
        self.pixels_so_far += npix
        images.append(image)
        self.seg_alive[seg] = 1
        self.seg_type[seg] = lz_type
        self.seg_id[seg] = image.id
        self.seg_pos[seg] = image.pos
        self.seg_n[seg] = npix

        head_pos = image.pos if new_head is None else new_head.pos
        head_dist = 0 if new_head is None else image.id - new_head.id
        return image, head_dist, head_pos


def encode_glz(
    dictionary: GlzDictionary,
    pixels: bytes | bytearray | memoryview | np.ndarray,
    glz_type: int,
    width: int,
    height: int,
    stride: int,
    top_down: bool = True,
) -> bytes:
    """Code one image with the client's dictionary and enter it into the window.

    Rows are taken in memory order; ``top_down`` is only the header flag (as in :func:`encode_lz`).
    The image gets the next id of ``dictionary`` (see the module notes: the result must be sent).

    Args:
        dictionary: the client's :class:`GlzDictionary`.
        pixels: raw rows (RGB32 B,G,R,X; RGBA B,G,R,A; RGB24 B,G,R; RGB16 LE x555).
        glz_type: one of :data:`GLZ_TYPES`.
        width: pixels per row.
        height: rows.
        stride: bytes from one row to the next (>= ``width * bpp``; the header says ``width * bpp``).
        top_down: the header's orientation flag.

    Raises:
        ValueError: unsupported type, bad sizes, or an image that does not fit the window
            (check :meth:`GlzDictionary.fits` first). Nothing is entered into the window then.
    """
    if int(glz_type) not in GLZ_TYPES:
        raise ValueError(f"GLZ does not code LZ image type {glz_type}")
    px, hstride = input_pixels(pixels, glz_type, width, height, stride)
    n = int(px.shape[0])
    if not dictionary.fits(width, height):
        raise ValueError(f"{width}x{height} does not fit a GLZ window of {dictionary.window_size} pixels")
    t = int(glz_type)
    kinds = (
        (K.KIND_RGB, K.KIND_ALPHA)
        if t == LzImageType.RGBA
        else ((K.KIND_RGB16,) if t == LzImageType.RGB16 else (K.KIND_RGB,))
    )
    lit = 2 if t == LzImageType.RGB16 else 3
    cap = GLZ_HEADER_SIZE + n * (lit + 1) + 64 + (n * 2 + 64 if t == LzImageType.RGBA else 0)
    out = scratch(cap)
    with dictionary.lock:
        image, head_dist, head_pos = dictionary._pre_encode(n, t)
        hdr = _HDR.pack(
            LZ_MAGIC, LZ_VERSION, (t & 0x0F) | (0x10 if top_down else 0), width, height, hstride, image.id, head_dist
        )
        out[:GLZ_HEADER_SIZE] = np.frombuffer(hdr, np.uint8)
        op = GLZ_HEADER_SIZE
        d = dictionary
        ring = d._ring
        mask = ring.shape[0] - 1
        for i, kind in enumerate(kinds):
            fill = i == 0  # the first pass copies the image into the window ring
            if kind == K.KIND_RGB:
                op = int(G.glz_compress_rgb(
                    px, n, image.seg, t, head_pos, ring, mask, d.htab,
                    d.seg_alive, d.seg_type, d.seg_id, d.seg_pos, d.seg_n, out, op, fill,
                ))  # fmt: skip
            else:
                op = int(G.glz_compress(
                    kind, px, n, image.seg, t, head_pos, ring, mask, d.htab,
                    d.seg_alive, d.seg_type, d.seg_id, d.seg_pos, d.seg_n, out, op, fill,
                ))  # fmt: skip
    return out[:op].tobytes()


# -- the client side (spice-gtk decode-glz.c) ----------------------------------------------


@dataclass(frozen=True)
class GlzImage:
    """One decoded GLZ image: ``pixels`` is ``(height, width)`` uint32 0x00RRGGBB (0xAARRGGBB for
    RGBA; RGB16 expanded as the client does), rows in stream order."""

    lz_type: LzImageType
    width: int
    height: int
    top_down: bool
    image_id: int
    win_head_dist: int
    pixels: np.ndarray


class GlzDecoderWindow:
    """The client's window of decoded images (spice-gtk ``SpiceGlzDecoderWindow``).

    Keeps every decoded image by id; after each image it releases the ids below
    ``newest contiguous id - that image's win_head_dist``, exactly when spice-gtk frees them.
    """

    def __init__(self) -> None:
        self.images: dict[int, np.ndarray] = {}
        self.head_dists: dict[int, int] = {}
        self.tail_gap = 0
        self.oldest = 0

    def clear(self) -> None:
        """``glz_decoder_window_clear`` (note: like spice-gtk, the release mark is kept)."""
        self.images.clear()
        self.head_dists.clear()
        self.tail_gap = 0

    def add(self, image_id: int, flat: np.ndarray, win_head_dist: int) -> None:
        """Keep a decoded image (flat uint32 pixels) and release what the client would release."""
        self.images[image_id] = flat
        self.head_dists[image_id] = win_head_dist
        while self.tail_gap <= image_id and self.tail_gap in self.images:
            self.tail_gap += 1
        newest = self.tail_gap - 1
        if newest not in self.images:
            return
        target = newest - self.head_dists[newest]
        if target > self.oldest:
            for k in [k for k in self.images if self.oldest <= k < target]:
                del self.images[k]
                del self.head_dists[k]
            self.oldest = target


def decode_glz_header(data: bytes | bytearray | memoryview) -> tuple[LzImageType, int, int, int, bool, int, int]:
    """Parse a GLZ header: ``(type, width, height, stride, top_down, image_id, win_head_dist)``.

    Raises:
        ProtocolError: short header, bad magic/version, a type spice-server never sends, or
            sizes that do not match.
    """
    if len(data) < GLZ_HEADER_SIZE:
        raise ProtocolError("GLZ header truncated")
    magic, version, tb, width, height, stride, image_id, head_dist = _HDR.unpack_from(data, 0)
    if magic != LZ_MAGIC:
        raise ProtocolError("bad GLZ magic")
    if version != LZ_VERSION:
        raise ProtocolError("bad GLZ version")
    t = tb & 0x0F
    if t not in GLZ_TYPES:
        raise ProtocolError(f"unsupported GLZ image type {t}")
    if width == 0 or height == 0:
        raise ProtocolError("empty GLZ image")
    if stride != width * bytes_per_pixel(t):
        raise ProtocolError("GLZ stride != width * bytes per pixel")
    if image_id >= 1 << 62:
        raise ProtocolError("GLZ image id out of range")
    return LzImageType(t), width, height, stride, bool(tb >> 4), image_id, head_dist


def decode_glz(
    window: GlzDecoderWindow,
    data: bytes | bytearray | memoryview,
    *,
    max_pixels: int = MAX_DECODE_PIXELS,
) -> GlzImage:
    """Decode one GLZ stream against ``window`` and enter the result into it, as spice-gtk does.

    Raises:
        ProtocolError: malformed data, trailing bytes, or a reference to an image that is not in
            the window (spice-gtk would block waiting for it).
    """
    t, width, height, _stride, top_down, image_id, head_dist = decode_glz_header(data)
    n = width * height
    if n > max_pixels:
        raise ProtocolError("GLZ image larger than allowed")
    if n > (len(data) - GLZ_HEADER_SIZE) * 256:
        raise ProtocolError("GLZ data too short for its image size")
    buf = kernel_input(np.frombuffer(memoryview(data).cast("B"), np.uint8))
    ids = sorted(window.images)
    parts = [window.images[i] for i in ids]
    win = np.concatenate(parts) if parts else np.zeros(0, np.uint32)
    win_n = np.array([p.shape[0] for p in parts], np.int64)
    win_off = (np.cumsum(win_n) - win_n).astype(np.int64)
    win_ids = np.array(ids, np.int64)
    out = np.zeros(n, np.uint32)
    kinds = (
        (K.KIND_RGB, K.KIND_ALPHA)
        if t == LzImageType.RGBA
        else ((K.KIND_RGB16,) if t == LzImageType.RGB16 else (K.KIND_RGB,))
    )
    pos = GLZ_HEADER_SIZE
    for kind in kinds:
        pos = int(G.glz_decompress(kind, buf, pos, out, n, image_id, win, win_ids, win_off, win_n))
        if pos < 0:
            raise ProtocolError(_ERRORS.get(pos, "bad GLZ data"))
    if pos != len(buf):
        raise ProtocolError("trailing bytes after the GLZ data")
    window.add(image_id, out, head_dist)
    return GlzImage(t, width, height, top_down, image_id, head_dist, out.reshape(height, width))


_ERRORS = {
    K.ERR_TRUNCATED: "GLZ data truncated",
    K.ERR_OVERRUN: "GLZ code runs past the end of the image",
    K.ERR_BAD_REF: "GLZ reference outside its image",
    G.ERR_MISSING_IMAGE: "GLZ reference to an image not in the client's window",
}
