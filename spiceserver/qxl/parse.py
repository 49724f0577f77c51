"""Parse and validate QXL commands from hostile guest memory.

Counterpart of spice-server ``server/red-parse-qxl.cpp`` (``red_drawable_new``,
``red_get_native_drawable``, ``red_get_compat_drawable``, ``red_get_update_cmd``,
``red_get_surface_cmd``, ``red_validate_surface``, ``red_get_message``, ``red_get_cursor_cmd``) and
of the surface-id checks of ``display-channel.cpp``; the structures inside commands are read by
:class:`~spiceserver.qxl.reader.GuestReader` under the rules documented there.

Anything wrong raises :class:`~spiceserver.errors.GuestError` naming the field; anything else
escaping is a bug (the fuzz tests look for them).
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import GuestError
from ..proto.enums import ClipType, surface_fmt_bits
from ..proto.messages import display as d
from ..proto.messages.base import Point16, Rect
from ..proto.messages.cursor import Cursor, CursorHeader
from . import layout as L
from .commands import (
    NO_SURFACE,
    CopyBits,
    QXLCommandExt,
    RedCommand,
    RedCursorCmd,
    RedDrawable,
    RedMessage,
    RedSurfaceCmd,
    RedUpdate,
    ReleaseInfo,
)
from .layout import CmdFlags, CmdType, CursorCmdType, DrawType, SurfaceCmdType
from .memory import MemSlots
from .reader import DEFAULT_LIMITS, MAX_DATA_CHUNK, GuestReader, ParseLimits, color_16_to_32, rect_of

__all__ = [
    "ParseLimits",
    "DEFAULT_LIMITS",
    "parse_command",
    "parse_drawable",
    "parse_update",
    "parse_surface_cmd",
    "parse_message",
    "parse_cursor_cmd",
    "parse_monitors_config",
    "validate_surface",
    "surface_format_bpp",
    "color_16_to_32",
]

_INT32_MIN = -(1 << 31)
_ZERO_RECT = Rect(top=0, left=0, bottom=0, right=0)
_NO_RECTS = (_ZERO_RECT, _ZERO_RECT, _ZERO_RECT)
_NO_CLIP = d.Clip()
_CLIP_NONE = int(ClipType.NONE)
_COMPAT = int(CmdFlags.COMPAT)
#: libspice forces ``self_bitmap`` off for these draw types
_NO_SELF_BITMAP = frozenset((int(DrawType.COPY), int(DrawType.BLEND)))


def surface_format_bpp(fmt: int) -> int:
    """Bits per pixel of a ``SPICE_SURFACE_FMT_*``, 0 if unknown (libspice ``surface_format_to_bpp``)."""
    return surface_fmt_bits(fmt)


# --- commands ------------------------------------------------------------------------------------


def parse_drawable(
    mem: MemSlots, phys: int, group_id: int, flags: int = 0, limits: ParseLimits = DEFAULT_LIMITS
) -> RedDrawable:
    """``red_get_native_drawable`` / ``red_get_compat_drawable`` (chosen by ``CmdFlags.COMPAT``)."""
    p = GuestReader(mem, group_id, flags, limits)
    release = ReleaseInfo(addr=phys, group_id=group_id)
    if flags & _COMPAT:
        raw = p.read(phys, L.COMPAT_DRAWABLE_SIZE, "compat drawable")
        v = L.COMPAT_DRAWABLE_HEAD.unpack_from(raw)
        _rel, effect, type_, bitmap_offset = v[:4]
        bbox = rect_of(v, 8)
        clip = p.clip(v[12], v[13], "drawable clip")
        what = _what(type_)
        body = p.body(type_, raw, L.COMPAT_DRAWABLE_HEAD.size, True, what)
        deps: tuple[int, int, int] = (NO_SURFACE, NO_SURFACE, NO_SURFACE)
        rects = (_ZERO_RECT, _ZERO_RECT, _ZERO_RECT)
        if isinstance(body, CopyBits):
            sx, sy = body.src_pos.x, body.src_pos.y
            src = Rect(top=sy, left=sx, bottom=sy + bbox.bottom - bbox.top, right=sx + bbox.right - bbox.left)
            deps, rects = (0, NO_SURFACE, NO_SURFACE), (src, _ZERO_RECT, _ZERO_RECT)
        return RedDrawable(
            release_info=release, surface_id=0, effect=effect, type=type_, bbox=bbox, clip=clip, mm_time=v[14],
            self_bitmap=bitmap_offset != 0 and type_ not in _NO_SELF_BITMAP,
            self_bitmap_area=_rect_at(v, 4), surface_deps=deps, surfaces_rects=rects, body=body,
        )  # fmt: skip
    raw = p.read(phys, L.DRAWABLE_SIZE, "drawable")
    (
        _rel, surface_id, effect, type_, self_bitmap, sb_t, sb_l, sb_b, sb_r, top, left, bottom, right,
        clip_type, clip_data, mm_time, dep0, dep1, dep2, *surfaces_rects,
    ) = L.DRAWABLE_HEAD.unpack_from(raw)  # fmt: skip
    if not 0 <= surface_id < limits.n_surfaces:
        p.surface_id(surface_id, "drawable")
    what = _what(type_)
    deps = (dep0, dep1, dep2)
    for i, dep in enumerate(deps):
        if dep != NO_SURFACE:
            p.surface_id(dep, f"drawable surfaces_dest[{i}]")
    clip = _NO_CLIP if clip_type == _CLIP_NONE else p.clip(clip_type, clip_data, "drawable clip")
    body = p.body(type_, raw, L.DRAWABLE_HEAD.size, False, what)
    return RedDrawable(
        release_info=release, surface_id=surface_id, effect=effect, type=type_,
        bbox=Rect(top=top, left=left, bottom=bottom, right=right), clip=clip, mm_time=mm_time,
        self_bitmap=bool(self_bitmap) and type_ not in _NO_SELF_BITMAP,
        self_bitmap_area=_ZERO_RECT if sb_t == sb_l == sb_b == sb_r == 0 else Rect(top=sb_t, left=sb_l, bottom=sb_b, right=sb_r),
        surface_deps=deps,
        surfaces_rects=_NO_RECTS if not any(surfaces_rects) else (
            _rect_at(surfaces_rects, 0), _rect_at(surfaces_rects, 4), _rect_at(surfaces_rects, 8)
        ),
        body=body,
    )  # fmt: skip


def _rect_at(vals: tuple[int, ...] | list[int], i: int) -> Rect:
    """:func:`rect_of`, sharing one Rect for the (frequent) all-zero rectangle."""
    t, le, b, r = vals[i : i + 4]
    if t == le == b == r == 0:
        return _ZERO_RECT
    return Rect(top=t, left=le, bottom=b, right=r)


def _type_name(type_: int) -> str:
    try:
        return DrawType(type_).name.lower()
    except ValueError:
        return f"type {type_}"


#: "drawable fill", "drawable copy" ...: the field path errors of each draw type start with
_WHAT = {int(t): f"drawable {_type_name(t)}" for t in DrawType}


def _what(type_: int) -> str:
    return _WHAT.get(type_) or f"drawable {_type_name(type_)}"


def parse_update(
    mem: MemSlots, phys: int, group_id: int, flags: int = 0, limits: ParseLimits = DEFAULT_LIMITS
) -> RedUpdate:
    """``red_get_update_cmd``; the qxl-1 layout (no surface id) under ``CmdFlags.COMPAT``."""
    p = GuestReader(mem, group_id, flags, limits)
    if flags & _COMPAT:
        v = L.COMPAT_UPDATE_CMD.unpack(p.read(phys, L.COMPAT_UPDATE_CMD.size, "update"))
        surface_id = 0
    else:
        v = L.UPDATE_CMD.unpack(p.read(phys, L.UPDATE_CMD.size, "update"))
        surface_id = p.surface_id(v[6], "update")
    return RedUpdate(
        release_info=ReleaseInfo(addr=phys, group_id=group_id),
        area=rect_of(v, 1),
        update_id=v[5],
        surface_id=surface_id,
    )


def parse_surface_cmd(
    mem: MemSlots, phys: int, group_id: int, flags: int = 0, limits: ParseLimits = DEFAULT_LIMITS
) -> RedSurfaceCmd:
    """``red_get_surface_cmd`` + ``red_validate_surface`` (+ QEMU's ``stride % 4`` check)."""
    p = GuestReader(mem, group_id, flags, limits)
    _rel, sid, type_, sflags, fmt, width, height, stride, data = L.SURFACE_CMD.unpack(
        p.read(phys, L.SURFACE_CMD.size, "surface cmd")
    )
    release = ReleaseInfo(addr=phys, group_id=group_id)
    p.surface_id(sid, "surface cmd")
    if type_ == SurfaceCmdType.DESTROY:
        return RedSurfaceCmd(release_info=release, surface_id=sid, type=type_, flags=sflags)
    if type_ != SurfaceCmdType.CREATE:
        raise GuestError(f"surface cmd: bad type {type_}")
    size = validate_surface(width, height, stride, fmt, limits, "surface cmd")
    try:
        view = mem.view(data, size, group_id)
    except GuestError as exc:
        raise GuestError(f"surface cmd data: {exc}") from None
    return RedSurfaceCmd(
        release_info=release, surface_id=sid, type=type_, flags=sflags, format=fmt, width=width, height=height,
        stride=stride, data_phys=data, data=view,
    )  # fmt: skip


def validate_surface(width: int, height: int, stride: int, fmt: int, limits: ParseLimits, what: str) -> int:
    """Check a surface's geometry (``red_validate_surface``); returns its size in bytes."""
    bpp = surface_format_bpp(fmt)
    if not bpp:
        raise GuestError(f"{what}: bad surface format {fmt}")
    if width == 0 or height == 0:
        raise GuestError(f"{what}: zero-area surface {width}x{height}")
    if width > limits.max_image_dim or height > limits.max_image_dim:
        raise GuestError(f"{what}: surface {width}x{height} exceeds {limits.max_image_dim}")
    if width * height > limits.max_surface_pixels:
        raise GuestError(f"{what}: surface {width}x{height} exceeds {limits.max_surface_pixels} pixels")
    if stride == _INT32_MIN or (width * bpp + 7) // 8 > abs(stride):
        raise GuestError(f"{what}: stride {stride} too small for {width} px at {bpp} bpp")
    if stride & 3:
        raise GuestError(f"{what}: stride {stride} is not a multiple of 4")
    size = height * abs(stride)
    if size > min(limits.max_image_bytes, MAX_DATA_CHUNK):
        raise GuestError(f"{what}: surface of {size} bytes exceeds {limits.max_image_bytes}")
    return size


def parse_message(
    mem: MemSlots, phys: int, group_id: int, flags: int = 0, limits: ParseLimits = DEFAULT_LIMITS
) -> RedMessage:
    """``red_get_message``: the text up to its NUL, searched within the slot and the length limit."""
    p = GuestReader(mem, group_id, flags, limits)
    p.read(phys, L.MESSAGE.size, "message")
    try:
        room = mem.max_size(phys + L.MESSAGE.size, group_id)
    except GuestError as exc:
        raise GuestError(f"message text: {exc}") from None
    n = min(room, limits.max_message_len)
    text = p.read(phys + L.MESSAGE.size, n, "message text") if n else b""
    end = text.find(b"\0")
    if end < 0:
        raise GuestError(f"message: no NUL within {n} bytes")
    return RedMessage(release_info=ReleaseInfo(addr=phys, group_id=group_id), text=text[:end])


def parse_cursor_cmd(
    mem: MemSlots, phys: int, group_id: int, flags: int = 0, limits: ParseLimits = DEFAULT_LIMITS
) -> RedCursorCmd:
    """``red_get_cursor_cmd`` / ``red_get_cursor``."""
    p = GuestReader(mem, group_id, flags, limits)
    raw = p.read(phys, L.CURSOR_CMD_SIZE, "cursor cmd")
    _rel, type_ = L.CURSOR_CMD_HEAD.unpack_from(raw)
    release = ReleaseInfo(addr=phys, group_id=group_id)
    o = L.CURSOR_CMD_UNION_OFF
    if type_ == CursorCmdType.SET:
        x, y, visible, shape = L.CURSOR_SET.unpack_from(raw, o)
        return RedCursorCmd(
            release_info=release, type=type_, position=Point16(x=x, y=y), visible=bool(visible),
            shape=_cursor(p, shape, limits),
        )  # fmt: skip
    if type_ == CursorCmdType.MOVE:
        x, y = L.CURSOR_MOVE.unpack_from(raw, o)
        return RedCursorCmd(release_info=release, type=type_, position=Point16(x=x, y=y))
    if type_ == CursorCmdType.HIDE:
        return RedCursorCmd(release_info=release, type=type_)
    if type_ == CursorCmdType.TRAIL:
        length, frequency = L.CURSOR_TRAIL.unpack_from(raw, o)
        return RedCursorCmd(release_info=release, type=type_, trail_length=length, trail_frequency=frequency)
    raise GuestError(f"cursor cmd: bad type {type_}")


_MAX_CURSOR_TYPE = 6  # SPICE_CURSOR_TYPE_COLOR32


def _cursor(p: GuestReader, phys: int, limits: ParseLimits) -> Cursor:
    raw = p.read(phys, L.CURSOR_SIZE, "cursor shape")
    unique, type_, width, height, hot_x, hot_y, data_size = L.CURSOR.unpack_from(raw)
    if type_ > _MAX_CURSOR_TYPE:
        raise GuestError(f"cursor shape: bad type {type_}")
    off = L.CURSOR_CHUNK_OFF
    data = p.chunks(raw[off : off + L.DATA_CHUNK.size], phys + off, limits.max_data_bytes, "cursor shape")
    header = CursorHeader(unique=unique, type=type_, width=width, height=height, hot_spot_x=hot_x, hot_spot_y=hot_y)
    return Cursor(flags=0, header=header, data=data[: min(data_size, len(data))])


#: the largest coordinate a monitor head may reach (x + width, y + height)
MAX_HEAD_COORD = 1 << 16


def parse_monitors_config(
    mem: MemSlots, phys: int, group_id: int, limits: ParseLimits = DEFAULT_LIMITS, max_heads: int = 16
) -> d.MonitorsConfig:
    """A QXLMonitorsConfig (``QXL_IO_MONITORS_CONFIG_ASYNC``), as red-worker's handler checks it.

    ``count`` and ``max_allowed`` are clamped to ``max_heads`` (libspice clamps them to the device's
    ``max_monitors``); only those heads are read, and each must name a valid surface and stay
    within :data:`MAX_HEAD_COORD` (``width``/``height`` 0: a disabled head).
    """
    p = GuestReader(mem, group_id, 0, limits)
    count, max_allowed = L.MONITORS_CONFIG.unpack(p.read(phys, L.MONITORS_CONFIG.size, "monitors config"))
    if count == 0:
        raise GuestError("monitors config: no heads")
    if count > max_allowed:
        raise GuestError(f"monitors config: count {count} > max_allowed {max_allowed}")
    count, max_allowed = min(count, max_heads), min(max_allowed, max_heads)
    raw = p.read(phys + L.MONITORS_CONFIG.size, count * L.HEAD.size, "monitors config heads")
    heads = tuple(
        d.Head(monitor_id=i, surface_id=s, width=w, height=h, x=x, y=y, flags=f)
        for i, s, w, h, x, y, f in L.HEAD.iter_unpack(raw)
    )
    for n, head in enumerate(heads):
        p.surface_id(head.surface_id, f"monitors config head {n}")
        if head.x + head.width > MAX_HEAD_COORD or head.y + head.height > MAX_HEAD_COORD:
            raise GuestError(
                f"monitors config head {n}: {head.width}x{head.height}+{head.x}+{head.y} exceeds {MAX_HEAD_COORD}"
            )
    return d.MonitorsConfig(max_allowed=max_allowed, heads=heads)


_PARSERS: dict[int, Callable[[MemSlots, int, int, int, ParseLimits], RedCommand]] = {
    CmdType.DRAW: parse_drawable,
    CmdType.UPDATE: parse_update,
    CmdType.SURFACE: parse_surface_cmd,
    CmdType.MESSAGE: parse_message,
    CmdType.CURSOR: parse_cursor_cmd,
}


def parse_command(mem: MemSlots, cmd: QXLCommandExt, limits: ParseLimits = DEFAULT_LIMITS) -> RedCommand:
    """Parse the command a ring element points at.

    Args:
        mem: the device's memslots (``QXLDevice.memslots``).
        cmd: the ring element with the group and flags the device attached.
        limits: allocation bounds (``QXLDevice.parse_limits`` matches the ROM).

    Raises:
        GuestError: the command is malformed; the reason names the field. The worker reports it
            with ``QXLDevice.guest_error(reason)`` and still releases the command.
    """
    parser = _PARSERS.get(cmd.cmd.type)
    if parser is None:
        raise GuestError(f"unknown command type {cmd.cmd.type}")
    result: RedCommand = parser(mem, cmd.cmd.data, cmd.group_id, cmd.flags, limits)
    return result
