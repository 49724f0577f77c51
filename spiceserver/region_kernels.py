"""Banded-region arithmetic and the drawable tree's occlusion pass as numba kernels over arrays.

Counterpart of pixman's ``pixman-region.c`` (``pixman_op``, ``pixman_region_subtract_o``,
``pixman_coalesce``) as spice-common ``common/region.c`` uses it, and of spice
``server/display-channel.cpp`` ``exclude_region`` for the tree. :mod:`spiceserver.region` is the
reference: every kernel here gives exactly its rectangles.

A region is an ``int32`` array of rows ``(left, top, right, bottom)`` -- exactly
:attr:`Region.rects <spiceserver.region.Region.rects>`, band by band, left to right -- and a count
(the rows past it are spare room). A band is a run of rows with the same ``top`` (and ``bottom``).
Kernels write their result into an output array the caller owns, at a given position, and return
the end position, or -1 when the output would not fit (nothing else is changed then): no kernel
allocates.

Kernels are compiled by :func:`~spiceserver._jit.njit` when numba is present;
``pure_deep(kernel)`` runs the same code uncompiled on the same arrays. The small helpers are
inlined (``njit(inline=True)``), the two sweeps are shared helpers (``njit(helper=True)``: compiled
once, not into every caller); indices are made unsigned (``uindex``) before use.

:func:`tree_exclude` is :class:`~spiceserver.worker.tree.DrawableTree`'s whole ``add``: one call
finds the items whose bounding box meets the new opaque region's (a vectorised pass over the boxes,
stored as four rows), subtracts the region from them (one rectangle: :func:`_minus_rect`; else the
general sweep), turns the items left empty into holes (nothing moves; holes are squeezed out now and
then, keeping the order), appends the new item and forgets the oldest over the item limit. An
item's visible rectangles live in a pool, bump-allocated and compacted when full (through a spare
pool of the same size), which grows when compaction frees too little. Until the warm-up has compiled
it, the tree runs the same kernel uncompiled, with a numpy version of the scan.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ._jit import HAVE_NUMBA, kernel_input, njit, on_warmup, pure_deep, uindex, widen

__all__ = [
    "OP_UNION", "OP_INTERSECT", "OP_SUBTRACT", "OP_XOR", "COORD", "INDEX",
    "region_op", "region_minus_rect", "region_intersects_rect", "region_contains_rect",
    "as_rects", "combine", "minus_rect", "intersects_rect", "contains_rect",
    "tree_exclude", "TreeArrays", "NEED_ROOM", "NEED_ITEMS", "IT_OFF", "IT_CNT", "IT_ID", "IT_COLS",
    "ST_LO", "ST_HI", "ST_TOP", "ST_RESUME", "ST_HIDDEN", "ST_LIVE", "ST_CAND",
    "ready", "warm_up",
]  # fmt: skip

OP_UNION = 0
OP_INTERSECT = 1
OP_SUBTRACT = 2
OP_XOR = 3

# tree_exclude's state array (int64): items live at positions [lo, hi) of the item arrays; the
# pool holds live rectangles below top; resume / hidden / cand: where an interrupted call stands
ST_LO = 0
ST_HI = 1
ST_TOP = 2
ST_RESUME = 3  # -1: no call interrupted; else the next item position to examine
ST_HIDDEN = 4  # hidden ids written so far
ST_LIVE = 5  # rows live after the last compaction (the caller grows the pool when over half)
ST_CAND = 6  # candidates (positions whose box meets the region's) of an interrupted call
# columns of tree_exclude's item rows (meta)
IT_OFF = 0  # first rectangle in the pool
IT_CNT = 1  # number of rectangles
IT_ID = 2  # the caller's id (>= 0; -1: a hole)
IT_COLS = 4
#: a hole's box (left, right): no region's box overlaps it
HOLE_MIN_X = 2**31 - 1
HOLE_MAX_X = -(2**31)
#: tree_exclude's returns when the pool needs to grow, or the item arrays need room (call again after)
NEED_ROOM = -1
NEED_ITEMS = -2

#: coordinates (the wire's rectangles are int32) and indices
COORD = np.int32
INDEX = np.int64

_u = uindex
_w = widen
_w32: Callable[[Any], int] = np.int32 if HAVE_NUMBA else int  # type: ignore[assignment]


# --- helpers (inlined) ----------------------------------------------------------------------------


@njit(inline=True)
def _band_end(r: np.ndarray, s: int, e: int) -> int:
    """The row after the band that starts at row ``s`` (rows up to ``e``)."""
    t = r[_u(s), 1]
    i = s + 1
    while i < e and r[_u(i), 1] == t:
        i += 1
    return i


@njit(inline=True)
def _x_at(r: np.ndarray, s: int, k: int) -> int:
    """The ``k``-th x boundary of the band starting at row ``s``: left (k even) or right of row k//2."""
    return _w(r[_u(s + (k >> 1)), (k & 1) << 1])


@njit(inline=True)
def _op_value(op: int, a: bool, b: bool) -> bool:
    if op == 0:
        return a or b
    if op == 1:
        return a and b
    if op == 2:
        return a and not b
    return a != b


@njit(inline=True)
def _coalesce(out: np.ndarray, prev: int, bs: int, o: int, y2: int) -> tuple[int, int]:
    """Close the band just written at rows ``[bs, o)``: merge it into the previous band (rows
    ``[prev, bs)``) when they touch and have equal spans (pixman_coalesce), else make it the
    previous band. Returns ``(prev, o)``."""
    if o == bs:
        return prev, o
    if prev >= 0 and o - bs == bs - prev and out[_u(prev), 3] == out[_u(bs), 1]:
        same = True
        for k in range(o - bs):
            p = _u(prev + k)
            q = _u(bs + k)
            if out[p, 0] != out[q, 0] or out[p, 2] != out[q, 2]:
                same = False
                break
        if same:
            for k in range(bs - prev):
                out[_u(prev + k), 3] = y2
            return prev, bs
    return bs, o


@njit(inline=True)
def _put(out: np.ndarray, o: int, left: int, top: int, right: int, bottom: int) -> None:
    p = _u(o)
    out[p, 0] = left
    out[p, 1] = top
    out[p, 2] = right
    out[p, 3] = bottom


@njit(inline=True)
def _copy_band(
    a: np.ndarray, s: int, e: int, y1: int, y2: int, out: np.ndarray, o: int, cap: int
) -> int:
    """Rows ``[s, e)``'s spans as a band ``[y1, y2)`` at ``out[o:]``; the end, or -1 if full."""
    if o + (e - s) > cap:
        return -1
    for i in range(s, e):
        _put(out, o, a[_u(i), 0], y1, a[_u(i), 2], y2)
        o += 1
    return o


@njit(inline=True)
def _band_op(
    op: int,
    a: np.ndarray,
    sa: int,
    na: int,
    b: np.ndarray,
    sb: int,
    nb: int,
    y1: int,
    y2: int,
    out: np.ndarray,
    o: int,
    cap: int,
) -> int:
    """The spans of ``na`` rows of ``a`` from ``sa`` combined by ``op`` with ``nb`` rows of ``b``
    from ``sb``, written as a band ``[y1, y2)`` at ``out[o:]``; the end, or -1 if full."""
    ea = 2 * na
    eb = 2 * nb
    i = 0
    j = 0
    in_a = False
    in_b = False
    inside = False
    start = 0
    xa = 0
    xb = 0
    while i < ea or j < eb:
        if op != 0 and op != 3 and i >= ea:
            break  # intersect, subtract: nothing left once a is done
        if i < ea:
            xa = _x_at(a, sa, i)
        if j < eb:
            xb = _x_at(b, sb, j)
        x = xa if j >= eb or (i < ea and xa <= xb) else xb
        if i < ea and xa == x:
            in_a = not in_a
            i += 1
        if j < eb and xb == x:
            in_b = not in_b
            j += 1
        now = _op_value(op, in_a, in_b)
        if now != inside:  # both toggle at the same x in one step, so touching spans merge
            if now:
                start = x
            else:
                if o >= cap:
                    return -1
                _put(out, o, start, y1, x, y2)
                o += 1
            inside = now
    return o


# --- region kernels -------------------------------------------------------------------------------


@njit(helper=True)
def _combine(
    op: int, a: np.ndarray, sa: int, ea: int, b: np.ndarray, sb: int, eb: int, out: np.ndarray, o: int, cap: int
) -> int:
    """Rows ``a[sa:ea]`` combined by ``op`` with rows ``b[sb:eb]`` (both canonical), written at
    ``out[o:cap]``: one sweep over the band boundaries of both (pixman_op). Returns the end row, or
    -1 if the output does not fit. ``out`` may be ``a`` or ``b`` if ``o`` lies past their rows."""
    prev = -1
    ia = sa
    ib = sb
    ja = _band_end(a, ia, ea) if ia < ea else ia
    jb = _band_end(b, ib, eb) if ib < eb else ib
    y = -(1 << 62)
    while ia < ea or ib < eb:
        has_a = ia < ea
        has_b = ib < eb
        ta = _w(a[_u(ia), 1]) if has_a else 0
        ba = _w(a[_u(ia), 3]) if has_a else 0
        tb = int(b[_u(ib), 1]) if has_b else 0
        bb = int(b[_u(ib), 3]) if has_b else 0
        if has_a and has_b:
            lowest = ta if ta < tb else tb
        elif has_a:
            lowest = ta
        else:
            lowest = tb
        y1 = y if y > lowest else lowest
        in_a = has_a and ta <= y1
        in_b = has_b and tb <= y1
        y2 = 1 << 62
        if has_a:
            v = ba if in_a else ta
            y2 = v if v < y2 else y2
        if has_b:
            v = bb if in_b else tb
            y2 = v if v < y2 else y2
        if (in_a or in_b) and not (op == 1 and not (in_a and in_b)) and not (op == 2 and not in_a):
            bs = o
            o = _band_op(op, a, ia, ja - ia if in_a else 0, b, ib, jb - ib if in_b else 0, y1, y2, out, o, cap)
            if o < 0:
                return -1
            prev, o = _coalesce(out, prev, bs, o, y2)
        y = y2
        if in_a and ba == y2:
            ia = ja
            if ia < ea:
                ja = _band_end(a, ia, ea)
        if in_b and bb == y2:
            ib = jb
            if ib < eb:
                jb = _band_end(b, ib, eb)
    return o


@njit(helper=True)
def _minus_rect(
    a: np.ndarray, sa: int, ea: int, left: int, top: int, right: int, bottom: int, out: np.ndarray, o: int, cap: int
) -> int:
    """Rows ``a[sa:ea]`` minus one rectangle, written at ``out[o:cap]``: only the bands it crosses
    change. Returns the end row, or -1 if the output does not fit."""
    prev = -1
    s = sa
    while s < ea:
        e = _band_end(a, s, ea)
        y1 = _w(a[_u(s), 1])
        y2 = _w(a[_u(s), 3])
        if y2 <= top or y1 >= bottom or a[_u(e - 1), 2] <= left or a[_u(s), 0] >= right:
            bs = o
            o = _copy_band(a, s, e, y1, y2, out, o, cap)
            if o < 0:
                return -1
            prev, o = _coalesce(out, prev, bs, o, y2)
        else:
            if y1 < top:
                bs = o
                o = _copy_band(a, s, e, y1, top, out, o, cap)
                if o < 0:
                    return -1
                prev, o = _coalesce(out, prev, bs, o, top)
            m1 = y1 if y1 > top else top
            m2 = y2 if y2 < bottom else bottom
            bs = o
            for i in range(s, e):
                x1 = _w(a[_u(i), 0])
                x2 = _w(a[_u(i), 2])
                if x2 <= left or x1 >= right:
                    if o >= cap:
                        return -1
                    _put(out, o, x1, m1, x2, m2)
                    o += 1
                    continue
                if x1 < left:
                    if o >= cap:
                        return -1
                    _put(out, o, x1, m1, left, m2)
                    o += 1
                if x2 > right:
                    if o >= cap:
                        return -1
                    _put(out, o, right, m1, x2, m2)
                    o += 1
            prev, o = _coalesce(out, prev, bs, o, m2)
            if bottom < y2:
                bs = o
                o = _copy_band(a, s, e, bottom, y2, out, o, cap)
                if o < 0:
                    return -1
                prev, o = _coalesce(out, prev, bs, o, y2)
        s = e
    return o


@njit(inline=True)
def _intersects_rect(a: np.ndarray, sa: int, ea: int, left: int, top: int, right: int, bottom: int) -> bool:
    for i in range(sa, ea):
        p = _u(i)
        if a[p, 1] >= bottom:
            return False
        if a[p, 3] > top and a[p, 0] < right and a[p, 2] > left:
            return True
    return False


@njit(inline=True)
def _bbox_into(a: np.ndarray, s: int, e: int, boxes: np.ndarray, k: int) -> None:
    """The bounding box of rows ``a[s:e]`` (e > s) into column ``k`` of ``boxes`` (4 rows:
    lefts, tops, rights, bottoms)."""
    left = a[_u(s), 0]
    right = a[_u(s), 2]
    for i in range(s + 1, e):
        p = _u(i)
        if a[p, 0] < left:
            left = a[p, 0]
        if a[p, 2] > right:
            right = a[p, 2]
    q = _u(k)
    boxes[0, q] = left
    boxes[1, q] = a[_u(s), 1]
    boxes[2, q] = right
    boxes[3, q] = a[_u(e - 1), 3]


@njit
def region_op(op: int, a: np.ndarray, na: int, b: np.ndarray, nb: int, out: np.ndarray) -> int:
    """``a[:na]`` combined with ``b[:nb]`` by ``op`` (``OP_UNION``, ``OP_INTERSECT``,
    ``OP_SUBTRACT``, ``OP_XOR``) into ``out``; the number of rows, or -1 if ``out`` is too small."""
    return _combine(op, a, 0, na, b, 0, nb, out, 0, out.shape[0])


@njit
def region_minus_rect(a: np.ndarray, na: int, left: int, top: int, right: int, bottom: int, out: np.ndarray) -> int:
    """``a[:na]`` minus the rectangle into ``out`` (the rectangle fast path); the number of rows,
    or -1 if ``out`` is too small."""
    if left >= right or top >= bottom:
        if na > out.shape[0]:
            return -1
        out[:na] = a[:na]
        return na
    return _minus_rect(a, 0, na, left, top, right, bottom, out, 0, out.shape[0])


@njit
def region_intersects_rect(a: np.ndarray, na: int, left: int, top: int, right: int, bottom: int) -> bool:
    """Whether ``a[:na]`` shares a pixel with the rectangle (never when it is empty)."""
    if left >= right or top >= bottom:
        return False
    return _intersects_rect(a, 0, na, left, top, right, bottom)


@njit
def region_contains_rect(a: np.ndarray, na: int, left: int, top: int, right: int, bottom: int) -> bool:
    """Whether every pixel of the rectangle is in ``a[:na]`` (an empty rectangle always is): the
    bands must cover ``[top, bottom)`` without a gap, each with one span over ``[left, right)``."""
    if left >= right or top >= bottom:
        return True
    y = top
    s = 0
    while s < na and y < bottom:
        e = _band_end(a, s, na)
        y1 = a[_u(s), 1]
        y2 = a[_u(s), 3]
        if y2 <= y:
            s = e
            continue
        if y1 > y:
            return False
        found = False
        for i in range(s, e):
            if a[_u(i), 0] <= left and a[_u(i), 2] >= right:
                found = True
                break
        if not found:
            return False
        y = y2
        s = e
    return y >= bottom


# --- the drawable tree ----------------------------------------------------------------------------


@njit(inline=True)
def _compact(st: np.ndarray, meta: np.ndarray, pool: np.ndarray, spare: np.ndarray) -> int:
    """Move the rectangles of the items at positions ``[lo, hi)`` to the bottom of ``pool``, in
    position order, through ``spare``; returns the new top (and records it as ``ST_LIVE``)."""
    top = 0
    for k in range(st[ST_LO], st[ST_HI]):
        q = _u(k)
        s = _w(meta[q, IT_OFF])
        n = _w(meta[q, IT_CNT])
        for r in range(n):
            p = _u(s + r)
            d = _u(top + r)
            spare[d, 0] = pool[p, 0]
            spare[d, 1] = pool[p, 1]
            spare[d, 2] = pool[p, 2]
            spare[d, 3] = pool[p, 3]
        meta[q, IT_OFF] = top
        top += n
    st[ST_LIVE] = top
    for r in range(top):
        p = _u(r)
        pool[p, 0] = spare[p, 0]
        pool[p, 1] = spare[p, 1]
        pool[p, 2] = spare[p, 2]
        pool[p, 3] = spare[p, 3]
    return top


@njit(inline=True)
def _subtract_item(
    pool: np.ndarray, s: int, n: int, rects: np.ndarray, nrects: int,
    left: int, top: int, right: int, bottom: int, o: int, cap: int,
) -> int:  # fmt: skip
    if nrects == 1:
        return _minus_rect(pool, s, s + n, left, top, right, bottom, pool, o, cap)
    return _combine(2, pool, s, s + n, rects, 0, nrects, pool, o, cap)


@njit(inline=True)
def _bury(boxes: np.ndarray, meta: np.ndarray, q: int) -> None:
    """Make position ``q`` a hole: no id, no rectangles, a box no region overlaps."""
    meta[q, IT_ID] = -1
    meta[q, IT_CNT] = 0
    boxes[0, q] = HOLE_MIN_X
    boxes[1, q] = 0
    boxes[2, q] = HOLE_MAX_X
    boxes[3, q] = 0


@njit(inline=True)
def _scan(
    boxes: np.ndarray, mask: np.ndarray, lo: int, hi: int, left: int, top: int, right: int, bottom: int,
    out: np.ndarray,
) -> int:  # fmt: skip
    """The positions in ``[lo, hi)`` whose box meets ``(left, top, right, bottom)``, into ``out``;
    their number. A branch-free pass (the compiler vectorises it) into the byte ``mask``, then a
    look at the 8-position words with a hit."""
    x0 = _w32(left)
    y0 = _w32(top)
    x1 = _w32(right)
    y1 = _w32(bottom)
    for k in range(lo, hi):
        q = _u(k)
        mask[q] = (boxes[0, q] < x1) & (boxes[2, q] > x0) & (boxes[1, q] < y1) & (boxes[3, q] > y0)
    words = mask.view(np.uint64)
    nc = 0
    for wd in range(lo >> 3, (hi + 7) >> 3):
        if words[_u(wd)] != 0:
            k0 = wd << 3
            for k in range(k0 if k0 > lo else lo, k0 + 8 if k0 + 8 < hi else hi):
                if mask[_u(k)]:
                    out[_u(nc)] = k
                    nc += 1
    return nc


def _scan_numpy(
    boxes: np.ndarray, mask: np.ndarray, lo: int, hi: int, left: int, top: int, right: int, bottom: int,
    out: np.ndarray,
) -> int:  # fmt: skip
    """:func:`_scan` for the uncompiled kernel: the same positions, by numpy."""
    b = boxes[:, lo:hi]
    hits = lo + np.flatnonzero((b[0] < right) & (b[2] > left) & (b[1] < bottom) & (b[3] > top))
    out[: len(hits)] = hits
    return len(hits)


@njit(keep_gil=True)  # a few us per command: handing the GIL over costs more
def tree_exclude(
    st: np.ndarray,
    boxes: np.ndarray,
    meta: np.ndarray,
    mask: np.ndarray,
    pool: np.ndarray,
    spare: np.ndarray,
    rects: np.ndarray,
    nrects: int,
    left: int,
    rtop: int,
    right: int,
    rbottom: int,
    opaque: bool,
    new_id: int,
    live: int,
    limit: int,
    hidden: np.ndarray,
) -> int:
    """Add a drawable on top of a tree of ``live`` items: its region (canonical, not empty) has the
    bounding box ``(left, rtop, right, rbottom)`` and is that rectangle when ``nrects == 1``, else
    ``rects[:nrects]``.

    Per item position: ``boxes[:, k]`` is the visible region's bounding box (four rows: lefts,
    tops, rights, bottoms, so that the overlap test is a vectorised pass into the byte array
    ``mask``), ``meta[k]`` where its rectangles are in ``pool`` (``IT_OFF``, ``IT_CNT``) and the
    item's id (``IT_ID``, >= 0). ``mask`` has room for every position and 8 more.

    When ``opaque``, the region is subtracted from every item whose bounding box meets the region's
    (the rectangle fast path when ``nrects == 1``); the ids of items left empty go to ``hidden``,
    oldest first, and their positions become holes (id -1, no rectangles, a box nothing overlaps:
    nothing moves; :meth:`TreeArrays.room_for` squeezes holes out now and then). Then the new item
    (id ``new_id``) is appended, and if that makes more than ``limit`` items the oldest are
    forgotten: their ids follow the hidden ones in ``hidden`` (the caller knows how many).
    ``hidden`` doubles as the list of candidates, so it must be as long as ``meta``.

    Returns the number of hidden ids; or ``NEED_ROOM`` when the pool is too small even after
    compaction, or is over half full after the last one: the state in ``st`` then says where the
    call stopped; give a larger pool (the rows below ``st[ST_TOP]`` copied, ``st[ST_LIVE]`` reset)
    and the same arguments again, and it goes on from there; or ``NEED_ITEMS`` before anything is
    done, when the item arrays are full or hold too many holes (:meth:`TreeArrays.room_for`).
    """
    hi = st[ST_HI]
    top = st[ST_TOP]
    cap = pool.shape[0]
    if st[ST_RESUME] < 0:
        if hi >= meta.shape[0] or hi - st[ST_LO] > live + (live >> 2) + 64:
            return NEED_ITEMS
        if 2 * st[ST_LIVE] > cap:
            return NEED_ROOM
    if st[ST_RESUME] >= 0:
        j = st[ST_RESUME]
        nh = st[ST_HIDDEN]
        nc = st[ST_CAND]
    else:
        # the positions whose box meets the region's, into hidden[] (a tight loop; hidden ids are
        # written behind the one being read below, so the same array serves both)
        j = 0
        nh = 0
        nc = 0
        if opaque:
            nc = _scan(boxes, mask, st[ST_LO], hi, left, rtop, right, rbottom, hidden)
    while j < nc:
        q = _u(hidden[_u(j)])
        j += 1
        if nrects == 1 and left <= boxes[0, q] and rtop <= boxes[1, q] and right >= boxes[2, q] and rbottom >= boxes[3, q]:
            hidden[_u(nh)] = meta[q, IT_ID]
            nh += 1
            _bury(boxes, meta, q)
            continue
        s = _w(meta[q, IT_OFF])
        n = _w(meta[q, IT_CNT])
        o = _subtract_item(pool, s, n, rects, nrects, left, rtop, right, rbottom, top, cap)
        if o < 0:
            top = _compact(st, meta, pool, spare)
            s = _w(meta[q, IT_OFF])
            o = _subtract_item(pool, s, n, rects, nrects, left, rtop, right, rbottom, top, cap)
            if o < 0:
                st[ST_TOP] = top
                st[ST_RESUME] = j - 1
                st[ST_HIDDEN] = nh
                st[ST_CAND] = nc
                return NEED_ROOM
        m = o - top
        if m == 0:
            hidden[_u(nh)] = meta[q, IT_ID]
            nh += 1
            _bury(boxes, meta, q)
            continue
        same = m == n
        if same:
            for r in range(m):
                p = _u(s + r)
                d = _u(top + r)
                if (
                    pool[p, 0] != pool[d, 0]
                    or pool[p, 1] != pool[d, 1]
                    or pool[p, 2] != pool[d, 2]
                    or pool[p, 3] != pool[d, 3]
                ):
                    same = False
                    break
        if not same:  # keep the new rows; the old ones become garbage until a compaction
            meta[q, IT_OFF] = top
            meta[q, IT_CNT] = m
            _bbox_into(pool, top, o, boxes, q)
            top = o
    # the new item, on top
    if top + nrects > cap:
        top = _compact(st, meta, pool, spare)
        if top + nrects > cap:
            st[ST_TOP] = top
            st[ST_RESUME] = nc
            st[ST_HIDDEN] = nh
            st[ST_CAND] = nc
            return NEED_ROOM
    if nrects == 1:
        _put(pool, top, left, rtop, right, rbottom)
    else:
        for r in range(nrects):
            p = _u(r)
            d = _u(top + r)
            pool[d, 0] = rects[p, 0]
            pool[d, 1] = rects[p, 1]
            pool[d, 2] = rects[p, 2]
            pool[d, 3] = rects[p, 3]
    d = _u(hi)
    boxes[0, d] = left
    boxes[1, d] = rtop
    boxes[2, d] = right
    boxes[3, d] = rbottom
    meta[d, IT_OFF] = top
    meta[d, IT_CNT] = nrects
    meta[d, IT_ID] = new_id
    st[ST_HI] = hi + 1
    st[ST_TOP] = top + nrects
    st[ST_RESUME] = -1
    # over the limit: forget the oldest (already rendered: only pruning chances go)
    excess = live - nh + 1 - limit
    if excess > 0:
        k = st[ST_LO]
        nd = nh
        while excess > 0 and k <= hi:  # (k <= hi always, with a true ``live``)
            q = _u(k)
            k += 1
            if meta[q, IT_ID] >= 0:
                hidden[_u(nd)] = meta[q, IT_ID]
                nd += 1
                excess -= 1
        st[ST_LO] = k
    return int(nh)


#: the uncompiled tree kernel, with a vectorised scan: it stands in until the warm-up is done
_tree_exclude_py = pure_deep(tree_exclude, {"_scan": _scan_numpy})


# --- warm-up --------------------------------------------------------------------------------------

_ready = threading.Event()


def ready() -> bool:
    """True once the kernels are compiled (the tree uses the uncompiled ones until then)."""
    return _ready.is_set()


def as_rects(rects: object) -> np.ndarray:
    """``rects`` (rows of ``(left, top, right, bottom)``, e.g. :attr:`Region.rects`) as the array
    type the region kernels take: ``(n, 4)`` int32, C-contiguous, read-only."""
    arr = np.asarray(rects, dtype=COORD).reshape(-1, 4)
    return kernel_input(arr)


def combine(op: int, a: object, b: object, *, jit: bool = True) -> np.ndarray:
    """Rows of ``a`` combined with rows of ``b`` by ``op`` (both canonical); a new array.

    ``jit=False`` runs the uncompiled kernel (tests compare both).
    """
    ra, rb = as_rects(a), as_rects(b)
    kernel = region_op if jit else pure_deep(region_op)
    size = 2 * (len(ra) + len(rb)) + 4
    while True:
        out = np.empty((size, 4), dtype=COORD)
        n = kernel(op, ra, len(ra), rb, len(rb), out)
        if n >= 0:
            return out[:n]
        size *= 4


def minus_rect(a: object, rect: tuple[int, int, int, int], *, jit: bool = True) -> np.ndarray:
    """Rows of ``a`` (canonical) minus one rectangle ``(left, top, right, bottom)``; a new array."""
    ra = as_rects(a)
    kernel = region_minus_rect if jit else pure_deep(region_minus_rect)
    out = np.empty((3 * len(ra) + 4, 4), dtype=COORD)  # each band: above, middle (+1 span), below
    n = kernel(ra, len(ra), *rect, out)
    assert n >= 0
    return out[:n]


def intersects_rect(a: object, rect: tuple[int, int, int, int], *, jit: bool = True) -> bool:
    """Whether rows of ``a`` share a pixel with ``rect``."""
    ra = as_rects(a)
    kernel = region_intersects_rect if jit else pure_deep(region_intersects_rect)
    return bool(kernel(ra, len(ra), *rect))


def contains_rect(a: object, rect: tuple[int, int, int, int], *, jit: bool = True) -> bool:
    """Whether rows of ``a`` cover every pixel of ``rect``."""
    ra = as_rects(a)
    kernel = region_contains_rect if jit else pure_deep(region_contains_rect)
    return bool(kernel(ra, len(ra), *rect))


@on_warmup
def warm_up() -> None:
    """Call every kernel once with the argument types its callers use (run by the warm-up thread):
    the wrappers above, and :class:`~spiceserver.worker.tree.DrawableTree`'s kernel through
    :class:`TreeArrays`."""
    a = [(0, 0, 4, 2), (0, 2, 2, 4), (3, 2, 4, 4)]
    b = [(1, 1, 3, 3), (0, 3, 1, 5)]
    for op in (OP_UNION, OP_INTERSECT, OP_SUBTRACT, OP_XOR):
        combine(op, a, b)
    minus_rect(a, (1, 1, 2, 2))
    intersects_rect(a, (1, 1, 2, 2))
    contains_rect(a, (1, 1, 2, 2))
    t = TreeArrays(4, 8)
    live = 0
    for key, region in enumerate((b, [(0, 0, 2, 2)], [(5, 5, 6, 6)], [(0, 0, 9, 9)])):
        rects = np.asarray(region, dtype=COORD)
        t.rects[: len(rects)] = rects
        box = (int(rects[:, 0].min()), int(rects[0, 1]), int(rects[:, 2].max()), int(rects[-1, 3]))
        nh = t.add(len(rects), box, True, key, live, 2, jit=True)
        live = min(live - nh + 1, 2)
    _ready.set()


class TreeArrays:
    """The arrays of one drawable tree (see :func:`tree_exclude`), with room for ``items`` item
    positions and ``pool`` rectangles; :meth:`add` grows them as needed.

    Attributes:
        st: the state (``ST_*``); boxes, meta, mask: per item position; pool, spare: the rectangle
        pool and its compaction buffer; rects: where the caller puts the new region's rows;
        hidden: where the kernel writes hidden (then dropped) ids.
    """

    __slots__ = ("boxes", "hidden", "mask", "meta", "pool", "rects", "spare", "st")

    def __init__(self, items: int, pool: int) -> None:
        self.st = np.zeros(7, dtype=INDEX)
        self.st[ST_RESUME] = -1
        self._items(items)
        self.pool = np.zeros((pool, 4), dtype=COORD)
        self.spare = np.zeros((pool, 4), dtype=COORD)
        self.rects = np.zeros((16, 4), dtype=COORD)

    def _items(self, size: int) -> None:
        self.boxes = np.zeros((4, size), dtype=COORD)
        self.meta = np.zeros((size, IT_COLS), dtype=COORD)
        self.mask = np.zeros((size + 15) & ~7, dtype=np.uint8)  # read as uint64 words
        self.hidden = np.zeros(size, dtype=INDEX)

    def clear(self) -> None:
        """Forget every item."""
        self.st[:] = 0
        self.st[ST_RESUME] = -1

    def live_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """``(boxes, meta)`` of the live items, oldest first (copies)."""
        lo, hi = int(self.st[ST_LO]), int(self.st[ST_HI])
        keep = lo + np.flatnonzero(self.meta[lo:hi, IT_ID] >= 0)
        return self.boxes[:, keep], self.meta[keep]

    def room_for(self, live: int) -> None:
        """Make room in the item arrays for one more item, given that ``live`` items are in the
        tree: holes are squeezed out (the items keep their order) and the arrays grow when over
        half full."""
        boxes, meta = self.live_rows()
        n = len(meta)
        size = self.meta.shape[0]
        if n + 1 > size // 2:
            self._items(2 * size)
        self.boxes[:, :n] = boxes
        self.meta[:n] = meta
        self.st[ST_LO] = 0
        self.st[ST_HI] = n

    def add(
        self, nrects: int, box: tuple[int, int, int, int], opaque: bool, new_id: int, live: int, limit: int,
        *, jit: bool,
    ) -> int:  # fmt: skip
        """Run :func:`tree_exclude` for a region with bounding box ``box``, one rectangle if
        ``nrects == 1`` else ``rects[:nrects]`` (making room when it asks); the number of hidden
        ids, followed in ``hidden`` by ``max(0, live - hidden + 1 - limit)`` dropped ones."""
        kernel = tree_exclude if jit else _tree_exclude_py
        left, top, right, bottom = box
        while True:
            nh: int = kernel(
                self.st, self.boxes, self.meta, self.mask, self.pool, self.spare, self.rects,
                nrects, left, top, right, bottom, opaque, new_id, live, limit, self.hidden,
            )  # fmt: skip
            if nh >= 0:
                return nh
            if nh == NEED_ROOM:
                self._grow(nrects)
            else:
                self.room_for(live)

    def _grow(self, extra: int) -> None:
        """Double the pool (plus ``extra`` rows), keeping the rows below the top."""
        self.st[ST_LIVE] = 0
        top = int(self.st[ST_TOP])
        size = 2 * self.pool.shape[0] + extra
        pool = np.zeros((size, 4), dtype=COORD)
        pool[:top] = self.pool[:top]
        self.pool = pool
        self.spare = np.zeros((size, 4), dtype=COORD)
