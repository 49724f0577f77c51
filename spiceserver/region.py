"""Rectangle-set regions in the canonical y-x banded form.

Counterpart of spice-common ``common/region.c`` (``QRegion``), which wraps pixman's
``pixman_region32_t``; the representation and its invariants are pixman's (``pixman-region.c``):

* the region is a sequence of *bands*: maximal horizontal strips ``[y1, y2)`` in which every
  row has the same set of covered x-intervals;
* bands are sorted by y and do not overlap; two bands that touch vertically (``y2 == next y1``)
  never have identical x-intervals (pixman "coalesces" them);
* inside a band the x-intervals are sorted, disjoint and do not touch (``x2 < next x1``);
* :attr:`Region.rects` lists each band's intervals as ``(left, top, right, bottom)`` rectangles,
  band by band, left to right -- exactly the rectangles ``pixman_region32_rectangles`` returns.

Given the set of covered pixels this form is unique, so equality and hashing compare it
directly. All coordinates are half-open: ``(left, top, right, bottom)`` covers the pixels with
``left <= x < right`` and ``top <= y < bottom``. Rectangles with ``left >= right`` or
``top >= bottom`` are empty and ignored (as ``pixman_region32_init_rects`` drops them).

The boolean operations sweep the two band lists once (O(bands + spans)), never per pixel.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .proto.messages.base import Rect

__all__ = ["Region", "RectTuple"]

#: ``(left, top, right, bottom)``, half-open.
RectTuple = tuple[int, int, int, int]

# A band: (y1, y2, xs) with xs = (x1, x2, x1', x2', ...), sorted, disjoint, non-touching.
_Band = tuple[int, int, tuple[int, ...]]
_Op = Callable[[bool, bool], bool]


def _op_union(a: bool, b: bool) -> bool:
    return a or b


def _op_intersect(a: bool, b: bool) -> bool:
    return a and b


def _op_subtract(a: bool, b: bool) -> bool:
    return a and not b


def _op_xor(a: bool, b: bool) -> bool:
    return a != b


def _spans_op(a: tuple[int, ...], b: tuple[int, ...], op: _Op) -> tuple[int, ...]:
    """Combine two canonical interval lists (flat x1, x2 pairs) with a boolean ``op``."""
    if not b:
        return a if op(True, False) else ()
    if not a:
        return b if op(False, True) else ()
    out: list[int] = []
    i = j = 0
    in_a = in_b = False
    inside = False
    na, nb = len(a), len(b)
    while i < na or j < nb:
        xa = a[i] if i < na else None
        xb = b[j] if j < nb else None
        x = xa if xb is None or (xa is not None and xa <= xb) else xb
        assert x is not None
        if i < na and a[i] == x:
            in_a = not in_a
            i += 1
        if j < nb and b[j] == x:
            in_b = not in_b
            j += 1
        now = op(in_a, in_b)
        if now != inside:  # both inputs toggle at the same x in one step, so touching spans merge
            out.append(x)
            inside = now
    return tuple(out)


def _append_band(bands: list[_Band], y1: int, y2: int, xs: tuple[int, ...]) -> None:
    """Append a band, coalescing it with the previous one when they touch with equal spans."""
    if not xs or y1 >= y2:
        return
    if bands:
        py1, py2, pxs = bands[-1]
        if py2 == y1 and pxs == xs:
            bands[-1] = (py1, y2, xs)
            return
    bands.append((y1, y2, xs))


def _spans_minus(xs: tuple[int, ...], left: int, right: int) -> tuple[int, ...]:
    """Canonical intervals ``xs`` minus ``[left, right)``."""
    out: list[int] = []
    for i in range(0, len(xs), 2):
        x1, x2 = xs[i], xs[i + 1]
        if x2 <= left or x1 >= right:
            out += (x1, x2)
            continue
        if x1 < left:
            out += (x1, left)
        if x2 > right:
            out += (right, x2)
    return tuple(out)


def _minus_rect(a: tuple[_Band, ...], left: int, top: int, right: int, bottom: int) -> tuple[_Band, ...]:
    """Bands ``a`` minus one rectangle: only the bands it crosses change (the common case of an
    opaque draw covering part of what is visible), so no sweep over a merged y list."""
    out: list[_Band] = []
    for y1, y2, xs in a:
        if y2 <= top or y1 >= bottom or xs[-1] <= left or xs[0] >= right:
            _append_band(out, y1, y2, xs)
            continue
        _append_band(out, y1, top, xs)  # no-ops when empty
        _append_band(out, max(y1, top), min(y2, bottom), _spans_minus(xs, left, right))
        _append_band(out, bottom, y2, xs)
    return tuple(out)


def _spans_meet(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Whether two canonical interval lists share a point."""
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i + 1] <= b[j]:
            i += 2
        elif b[j + 1] <= a[i]:
            j += 2
        else:
            return True
    return False


def _combine(a: tuple[_Band, ...], b: tuple[_Band, ...], op: _Op) -> tuple[_Band, ...]:
    """Sweep both band lists over the union of their y boundaries."""
    ys = sorted({y for band in a for y in band[:2]} | {y for band in b for y in band[:2]})
    out: list[_Band] = []
    ia = ib = 0
    na, nb = len(a), len(b)
    for k in range(len(ys) - 1):
        y, y_next = ys[k], ys[k + 1]
        while ia < na and a[ia][1] <= y:
            ia += 1
        while ib < nb and b[ib][1] <= y:
            ib += 1
        sa = a[ia][2] if ia < na and a[ia][0] <= y else ()
        sb = b[ib][2] if ib < nb and b[ib][0] <= y else ()
        if not sa and not sb:
            continue
        _append_band(out, y, y_next, _spans_op(sa, sb, op))
    return tuple(out)


class Region:
    """An immutable set of pixels stored as canonical y-x bands (see the module docstring).

    Args:
        rects: ``(left, top, right, bottom)`` rectangles, in any order, possibly overlapping.
    """

    __slots__ = ("_bands", "_bbox", "_hash")

    def __init__(self, rects: Iterable[RectTuple] = ()) -> None:
        parts: list[tuple[_Band, ...]] = [
            ((t, b, (left, right)),)
            for left, t, right, b in (tuple(int(v) for v in r) for r in rects)
            if left < right and t < b
        ]
        # Balanced pairwise unions keep the work at O(n log n) band merges.
        while len(parts) > 1:
            merged = [_combine(parts[i], parts[i + 1], _op_union) for i in range(0, len(parts) - 1, 2)]
            if len(parts) % 2:
                merged.append(parts[-1])
            parts = merged
        self._bands: tuple[_Band, ...] = parts[0] if parts else ()
        self._hash: int | None = None
        self._bbox: RectTuple | bool | None = False  # False = not computed yet

    @classmethod
    def _from_bands(cls, bands: tuple[_Band, ...]) -> Region:
        region = cls.__new__(cls)
        region._bands = bands
        region._hash = None
        region._bbox = False
        return region

    @classmethod
    def from_rect(cls, left: int, top: int, right: int, bottom: int) -> Region:
        """The region of one rectangle (empty if it is empty)."""
        if left >= right or top >= bottom:
            return cls._from_bands(())
        left, top, right, bottom = int(left), int(top), int(right), int(bottom)
        region = cls.__new__(cls)
        region._bands = ((top, bottom, (left, right)),)
        region._hash = None
        region._bbox = (left, top, right, bottom)
        return region

    @classmethod
    def from_proto_rect(cls, rect: Rect) -> Region:
        """The region of a wire :class:`~spiceserver.proto.messages.base.Rect` (top, left, bottom, right)."""
        return cls.from_rect(rect.left, rect.top, rect.right, rect.bottom)

    # --- views -----------------------------------------------------------------------------

    @property
    def rects(self) -> tuple[RectTuple, ...]:
        """The canonical rectangles, band by band, left to right."""
        return tuple((xs[i], y1, xs[i + 1], y2) for y1, y2, xs in self._bands for i in range(0, len(xs), 2))

    @property
    def bands(self) -> tuple[tuple[int, int, tuple[tuple[int, int], ...]], ...]:
        """``(y1, y2, ((x1, x2), ...))`` per band."""
        return tuple((y1, y2, tuple((xs[i], xs[i + 1]) for i in range(0, len(xs), 2))) for y1, y2, xs in self._bands)

    def to_proto_rects(self) -> tuple[Rect, ...]:
        """The canonical rectangles as wire :class:`Rect` values (e.g. for a ``ClipRects``)."""
        from .proto.messages.base import Rect

        return tuple(Rect(top=t, left=left, bottom=b, right=r) for left, t, r, b in self.rects)

    def is_empty(self) -> bool:
        """True when the region holds no pixel."""
        return not self._bands

    def __bool__(self) -> bool:
        return bool(self._bands)

    def is_rect(self) -> bool:
        """True when the region is one rectangle (then :meth:`bbox` is that rectangle)."""
        return len(self._bands) == 1 and len(self._bands[0][2]) == 2

    def __len__(self) -> int:
        """The number of rectangles."""
        return sum(len(xs) // 2 for _, _, xs in self._bands)

    def bbox(self) -> RectTuple | None:
        """The extents ``(left, top, right, bottom)``, or None when empty (computed once)."""
        if self._bbox is not False:
            return self._bbox  # type: ignore[return-value]
        if not self._bands:
            self._bbox = None
            return None
        left = min(xs[0] for _, _, xs in self._bands)
        right = max(xs[-1] for _, _, xs in self._bands)
        box = (left, self._bands[0][0], right, self._bands[-1][1])
        self._bbox = box
        return box

    def area(self) -> int:
        """The number of pixels covered."""
        return sum((y2 - y1) * sum(xs[i + 1] - xs[i] for i in range(0, len(xs), 2)) for y1, y2, xs in self._bands)

    # --- operations ------------------------------------------------------------------------

    def union(self, other: Region) -> Region:
        """The pixels in either region."""
        if not other._bands:
            return self
        if not self._bands:
            return other
        return Region._from_bands(_combine(self._bands, other._bands, _op_union))

    def intersect(self, other: Region) -> Region:
        """The pixels in both regions."""
        if not self._bands or not other._bands:
            return Region._from_bands(())
        return Region._from_bands(_combine(self._bands, other._bands, _op_intersect))

    def subtract(self, other: Region) -> Region:
        """The pixels of this region that are not in ``other``."""
        if not self._bands or not other._bands:
            return self
        ob = other._bands
        if len(ob) == 1 and len(ob[0][2]) == 2:  # one rectangle
            top, bottom, (left, right) = ob[0]
            box = self.bbox()
            assert box is not None
            if left <= box[0] and top <= box[1] and right >= box[2] and bottom >= box[3]:
                return Region._from_bands(())
            if right <= box[0] or bottom <= box[1] or left >= box[2] or top >= box[3]:
                return self
            return Region._from_bands(_minus_rect(self._bands, left, top, right, bottom))
        return Region._from_bands(_combine(self._bands, other._bands, _op_subtract))

    def xor(self, other: Region) -> Region:
        """The pixels in exactly one of the two regions."""
        if not other._bands:
            return self
        if not self._bands:
            return other
        return Region._from_bands(_combine(self._bands, other._bands, _op_xor))

    __or__ = union
    __and__ = intersect
    __sub__ = subtract
    __xor__ = xor

    def translate(self, dx: int, dy: int) -> Region:
        """The region moved by ``(dx, dy)``."""
        if not dx and not dy:
            return self
        return Region._from_bands(tuple((y1 + dy, y2 + dy, tuple(x + dx for x in xs)) for y1, y2, xs in self._bands))

    def contains_point(self, x: int, y: int) -> bool:
        """True when pixel ``(x, y)`` is in the region."""
        k = bisect_right(self._bands, y, key=lambda band: band[0]) - 1
        if k < 0:
            return False
        _, y2, xs = self._bands[k]
        if y >= y2:
            return False
        i = bisect_right(xs, x)
        return i % 2 == 1

    def contains_rect(self, rect: RectTuple) -> bool:
        """Whether every pixel of ``rect`` (left, top, right, bottom) is in the region.

        An empty rectangle is contained in every region.
        """
        left, top, right, bottom = rect
        if left >= right or top >= bottom:
            return True
        return Region.from_rect(left, top, right, bottom).subtract(self).is_empty()

    def intersects(self, other: Region) -> bool:
        """Whether the two regions share at least one pixel."""
        a, b = self.bbox(), other.bbox()
        if a is None or b is None:
            return False
        if a[0] >= b[2] or b[0] >= a[2] or a[1] >= b[3] or b[1] >= a[3]:
            return False
        # walk both band lists; stop at the first band pair whose spans meet
        x, y = self._bands, other._bands
        i = j = 0
        while i < len(x) and j < len(y):
            if x[i][1] <= y[j][0]:
                i += 1
            elif y[j][1] <= x[i][0]:
                j += 1
            else:
                if _spans_meet(x[i][2], y[j][2]):
                    return True
                if x[i][1] <= y[j][1]:
                    i += 1
                else:
                    j += 1
        return False

    # --- identity --------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Region):
            return NotImplemented
        return self._bands == other._bands

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(self._bands)
        return self._hash

    def __repr__(self) -> str:
        return f"Region({list(self.rects)!r})"
