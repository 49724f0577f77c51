"""Declarative binary layouts: a bounds-checked reader, a pointer-aware writer, and wire types.

This is our counterpart of spice-common ``common/marshaller.c`` (writing) and the demarshallers that
``spice_codegen.py`` generates from ``spice.proto`` (reading). Messages and structures are frozen
dataclasses whose fields name their wire type::

    @struct
    class Point:
        x: int = f(I32)
        y: int = f(I32)

Rules of the SPICE wire that this module implements once:

* Everything is little-endian and packed.
* A *pointer* field is a u32 offset from the start of the message body (0 = NULL); the bytes it points
  at are appended after the fixed part, in the order the pointers were created, nested ones after
  their parents' siblings -- exactly the order of ``spice_marshaller_get_ptr_submarshaller``, so
  marshalling reproduces libspice's bytes. A pointer whose target is empty stays 0.
* Array counts are separate wire fields placed earlier in the structure (``count(U32, "items")``).
  They are not dataclass fields: on writing they are derived from the array, on reading they bound it.
* Arrays without a count run to the end of the message.
* Short input raises :class:`~spiceserver.errors.ProtocolError`; trailing bytes are accepted, as
  libspice does. Nothing is allocated from a count before the bytes it claims are known to exist.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import logging
import struct as _struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol, TypeVar, dataclass_transform

from ..errors import ProtocolError

__all__ = [
    "Reader",
    "Writer",
    "WireType",
    "Int",
    "U8",
    "U16",
    "U32",
    "U64",
    "I8",
    "I16",
    "I32",
    "I64",
    "Bytes",
    "Array",
    "Ptr",
    "Switch",
    "StructType",
    "Ctx",
    "f",
    "count",
    "struct",
    "layout_of",
    "marshal",
    "demarshal",
]

_log = logging.getLogger("spiceserver.proto")

Ctx = dict[str, Any]
Cond = Callable[[Ctx], bool]


class Reader:
    """A cursor over one message body; every read is bounds-checked.

    Pointers are offsets from the start of ``buf``, so a reader for a pointer target is a new reader
    over the same buffer (:meth:`at`).
    """

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int = 0) -> None:
        self.buf = bytes(buf) if not isinstance(buf, bytes) else buf
        self.pos = pos
        self.end = len(self.buf)

    @property
    def remaining(self) -> int:
        """Bytes left before the end of the message."""
        return self.end - self.pos

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes; ProtocolError if fewer are left."""
        if n < 0 or n > self.end - self.pos:
            raise ProtocolError(f"message too short: need {n} bytes at offset {self.pos}, have {max(self.end - self.pos, 0)}")
        data = self.buf[self.pos : self.pos + n]
        self.pos += n
        return data

    def unpack(self, st: _struct.Struct) -> tuple[Any, ...]:
        """The values of the next ``st.size`` bytes; ProtocolError if fewer are left."""
        n = st.size
        if n > self.end - self.pos:
            raise ProtocolError(f"message too short: need {n} bytes at offset {self.pos}, have {self.end - self.pos}")
        values = st.unpack_from(self.buf, self.pos)
        self.pos += n
        return values

    def rest(self) -> bytes:
        """Every byte left to the end of the message."""
        data = self.buf[self.pos : self.end]
        self.pos = self.end
        return data

    def at(self, offset: int) -> Reader:
        """A reader at body offset ``offset`` (a pointer target)."""
        if offset < 0 or offset >= self.end:
            raise ProtocolError(f"pointer {offset} outside message of {self.end} bytes")
        return Reader(self.buf, offset)


class _Root:
    __slots__ = ("fixups", "pending", "segments")

    def __init__(self) -> None:
        self.segments: list[Writer] = []
        self.fixups: list[tuple[Writer, int, Writer]] = []
        # pointer targets reserved but not written yet, first in first out (see Writer.defer)
        self.pending: deque[tuple[Writer, WireType, Any, Ctx]] = deque()


class Writer:
    """Builds one message body; :meth:`pointer` opens an out-of-line segment."""

    __slots__ = ("_root", "buf")

    def __init__(self, _root: _Root | None = None) -> None:
        self.buf = bytearray()
        # the segments and pointers of the whole message: made when the first pointer is written
        self._root = _root
        if _root is not None:
            _root.segments.append(self)

    def _the_root(self) -> _Root:
        root = self._root
        if root is None:
            root = self._root = _Root()
            root.segments.append(self)
        return root

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``."""
        self.buf += data

    def pack(self, st: _struct.Struct, *values: Any) -> None:
        """Append ``values`` packed by ``st``; ValueError if they do not fit."""
        try:
            self.buf += st.pack(*values)
        except _struct.error as exc:
            raise ValueError(f"cannot marshal {values!r} as {st.format!r}: {exc}") from None

    def pointer(self) -> Writer:
        """Reserve a u32 pointer here and return the writer for the bytes it points at."""
        pos = len(self.buf)
        self.buf += b"\0\0\0\0"
        root = self._the_root()
        target = Writer(root)
        root.fixups.append((self, pos, target))
        return target

    def defer(self, wtype: WireType, value: Any, ctx: Ctx) -> None:
        """Reserve a u32 pointer here; ``value`` is written into its target segment later.

        Targets are filled breadth first: every pointer of a structure gets its segment before any
        pointer inside those targets does. That is the order in which libspice's generated
        marshallers hand out ``*_out`` submarshallers (``spice_marshall_Copy`` returns the source
        and mask image submarshallers; ``fill_bits`` then adds the palette's), so a DRAW_COPY with a
        palettized source and a mask lays out as body, source image, mask image, palette.
        """
        target = self.pointer()
        self._the_root().pending.append((target, wtype, value, ctx))

    def getvalue(self) -> bytes:
        """The whole body: this segment then every pointer target, with pointers resolved."""
        root = self._root
        if root is None:  # no pointer was written: the body is this segment
            return bytes(self.buf)
        pending = root.pending
        while pending:
            target, wtype, value, ctx = pending.popleft()
            wtype.write(target, value, ctx)
        offsets: dict[int, int] = {}
        total = 0
        for seg in root.segments:
            offsets[id(seg)] = total
            total += len(seg.buf)
        for seg, pos, target in root.fixups:
            if target.buf:
                _struct.pack_into("<I", seg.buf, pos, offsets[id(target)])
        return b"".join(bytes(seg.buf) for seg in root.segments)


class WireType(Protocol):
    """How one field is laid out on the wire."""

    #: smallest number of bytes one value takes (bounds array counts before allocating).
    min_size: int

    def read(self, r: Reader, ctx: Ctx) -> Any:
        """Read one value; ``ctx`` holds the enclosing structure's fields read so far."""
        ...

    def write(self, w: Writer, value: Any, ctx: Ctx) -> None:
        """Write ``value``; ``ctx`` holds the enclosing structure's fields written so far."""
        ...


class Int:
    """A fixed-size little-endian integer."""

    __slots__ = ("min_size", "name", "st")

    def __init__(self, fmt: str, name: str) -> None:
        self.st = _struct.Struct("<" + fmt)
        self.min_size = self.st.size
        self.name = name

    def read(self, r: Reader, ctx: Ctx) -> int:
        """Read the integer."""
        return r.unpack(self.st)[0]  # type: ignore[no-any-return]

    def write(self, w: Writer, value: Any, ctx: Ctx) -> None:
        """Write ``value`` as this integer type; ValueError if out of range."""
        w.pack(self.st, int(value))

    def __repr__(self) -> str:
        return self.name


U8 = Int("B", "U8")
U16 = Int("H", "U16")
U32 = Int("I", "U32")
U64 = Int("Q", "U64")
I8 = Int("b", "I8")
I16 = Int("h", "I16")
I32 = Int("i", "I32")
I64 = Int("q", "I64")

CountSpec = str | int | Callable[[Ctx], int] | None


def _resolve_count(spec: CountSpec, ctx: Ctx) -> int | None:
    if spec is None:
        return None
    if isinstance(spec, int):
        return spec
    if isinstance(spec, str):
        n = ctx[spec]
        return int(n) if n is not None else 0
    return int(spec(ctx))


class Bytes:
    """Raw bytes: ``count`` of them (a count field name, a constant or a function of the
    fields read so far), or everything to the end of the message when ``count`` is None."""

    __slots__ = ("count",)
    min_size = 0

    def __init__(self, count: CountSpec = None) -> None:
        self.count = count

    def read(self, r: Reader, ctx: Ctx) -> bytes:
        """Read the counted bytes, or the rest of the message."""
        n = _resolve_count(self.count, ctx)
        return r.rest() if n is None else r.take(n)

    def write(self, w: Writer, value: Any, ctx: Ctx) -> None:
        """Write ``value``; ValueError if a fixed count does not match its length."""
        n = _resolve_count(self.count, ctx) if not isinstance(self.count, str) else None
        if n is not None and len(value) != n:
            raise ValueError(f"expected {n} bytes, got {len(value)}")
        w.write(value)


class Array:
    """A sequence of ``elem``: counted as in :class:`Bytes`, or to the end of the message."""

    __slots__ = ("count", "elem")
    min_size = 0

    def __init__(self, elem: WireType, count: CountSpec = None) -> None:
        self.elem = elem
        self.count = count

    def read(self, r: Reader, ctx: Ctx) -> tuple[Any, ...]:
        """Read the elements; ProtocolError if the count cannot fit in the bytes left."""
        n = _resolve_count(self.count, ctx)
        elem = self.elem
        if n is None:
            out = []
            while r.pos < r.end:
                out.append(elem.read(r, ctx))
            return tuple(out)
        # Bound the count by the bytes present before building anything (a hostile u32 count).
        if n * max(elem.min_size, 1) > r.remaining:
            raise ProtocolError(f"array of {n} elements does not fit in {r.remaining} bytes")
        if isinstance(elem, Int):
            st = _struct.Struct(f"<{n}{elem.st.format[1:]}")
            return r.unpack(st)
        return tuple(elem.read(r, ctx) for _ in range(n))

    def write(self, w: Writer, value: Any, ctx: Ctx) -> None:
        """Write every element; ValueError if a fixed count does not match."""
        n = _resolve_count(self.count, ctx) if not isinstance(self.count, str) else None
        if n is not None and len(value) != n:
            raise ValueError(f"expected {n} elements, got {len(value)}")
        elem = self.elem
        if isinstance(elem, Int):
            w.pack(_struct.Struct(f"<{len(value)}{elem.st.format[1:]}"), *value)
            return
        for item in value:
            elem.write(w, item, ctx)


class Ptr:
    """A u32 offset from the message body start to a value of type ``target`` (0 = None)."""

    __slots__ = ("nonnull", "target")
    min_size = 4

    def __init__(self, target: WireType, *, nonnull: bool = False) -> None:
        self.target = target
        self.nonnull = nonnull

    def read(self, r: Reader, ctx: Ctx) -> Any:
        """Follow the offset and read the target; 0 reads as None (a ProtocolError if non-null)."""
        (offset,) = r.unpack(U32.st)
        if offset == 0:
            if self.nonnull:
                raise ProtocolError("NULL pointer where a value is required")
            return None
        return self.target.read(r.at(offset), ctx)

    def write(self, w: Writer, value: Any, ctx: Ctx) -> None:
        """Write 0 for None, else a pointer whose target segment is filled later."""
        if value is None:
            if self.nonnull:
                raise ValueError("this pointer may not be None")
            w.write(b"\0\0\0\0")
            return
        w.defer(self.target, value, ctx)


class Switch:
    """A union whose arm is picked from the fields before it (spice.proto ``switch``).

    ``choose`` maps the fields read so far to the wire type of this value, or None when no arm
    applies (then nothing is on the wire and the value is None). Use it when the arms share one
    field name in spice.proto (``String.glyphs``); arms with their own names are clearer as
    separate fields with ``when`` conditions.
    """

    __slots__ = ("choose",)
    min_size = 0

    def __init__(self, choose: Callable[[Ctx], WireType | None]) -> None:
        self.choose = choose

    def read(self, r: Reader, ctx: Ctx) -> Any:
        """Read the chosen arm (None when no arm applies)."""
        wtype = self.choose(ctx)
        return None if wtype is None else wtype.read(r, ctx)

    def write(self, w: Writer, value: Any, ctx: Ctx) -> None:
        """Write the chosen arm; ValueError if none applies and ``value`` is not None."""
        wtype = self.choose(ctx)
        if wtype is None:
            if value is not None:
                raise ValueError("no union arm applies, so the value must be None")
            return
        wtype.write(w, value, ctx)


@dataclasses.dataclass(frozen=True)
class Item:
    """One wire item of a layout: a dataclass field, or a hidden count of another field."""

    name: str
    wtype: WireType
    when: Cond | None = None
    count_of: str | None = None  # hidden item: the number of elements of that field

    @property
    def hidden(self) -> bool:
        return self.count_of is not None


class _Hidden:
    __slots__ = ("count_of", "when", "wtype")

    def __init__(self, wtype: WireType, count_of: str, when: Cond | None) -> None:
        self.wtype = wtype
        self.count_of = count_of
        self.when = when


def f(wtype: WireType, *, default: Any = dataclasses.MISSING, when: Cond | None = None) -> Any:
    """Declare a dataclass field with its wire type.

    Args:
        wtype: how the field is laid out.
        default: default value; fields with a ``when`` condition default to None.
        when: the field is on the wire only if this returns true for the fields before it.
    """
    if when is not None and default is dataclasses.MISSING:
        default = None
    return dataclasses.field(default=default, metadata={"wire": (wtype, when)})


def count(wtype: Int, of: str, *, when: Cond | None = None) -> Any:
    """Declare a hidden count field holding the length of field ``of`` (not a dataclass field)."""
    return _Hidden(wtype, of, when)


class StructType:
    """The wire type of a structure class made with :func:`struct`."""

    __slots__ = ("_write", "cls", "items", "min_size")

    def __init__(self, cls: type, items: Sequence[Item]) -> None:
        self.cls = cls
        self.items = tuple(items)
        self.min_size = sum(i.wtype.min_size for i in items if i.when is None)
        self._write: Callable[[Writer, Any, Ctx], None] | None = None

    def read(self, r: Reader, ctx: Ctx) -> Any:
        """Read the fields in order and build the class; ProtocolError if it rejects them."""
        own: Ctx = {}
        values: dict[str, Any] = {}
        for item in self.items:
            if item.when is not None and not item.when(own):
                own[item.name] = None
                if not item.hidden:
                    values[item.name] = None
                continue
            v = item.wtype.read(r, own)
            own[item.name] = v
            if not item.hidden:
                values[item.name] = v
        try:
            return self.cls(**values)
        except (ValueError, TypeError) as exc:  # __post_init__ validation
            raise ProtocolError(f"invalid {self.cls.__name__}: {exc}") from None

    def write(self, w: Writer, value: Any, ctx: Ctx) -> None:
        """Write the fields in order, counts taken from what they count (compiled on first use:
        :func:`_compile_write`; :meth:`write_generic` is the reference it must match)."""
        fn = self._write
        if fn is None:
            fn = self._write = _compile_write(self)
        fn(w, value, ctx)

    def write_generic(self, w: Writer, value: Any, ctx: Ctx) -> None:
        """Write the fields in order, item by item (the interpreted reference of :meth:`write`)."""
        own: Ctx = {}
        for item in self.items:
            if item.count_of is not None:
                target = getattr(value, item.count_of)
                v: Any = 0 if target is None else len(target)
            else:
                v = getattr(value, item.name)
            own[item.name] = v
            if item.when is not None and not item.when(own):
                if v is not None and not item.hidden:
                    raise ValueError(f"{self.cls.__name__}.{item.name} must be None: its condition is false")
                continue
            item.wtype.write(w, v, own)


def _pack_error(st: _struct.Struct, exc: Exception) -> ValueError:
    return ValueError(f"cannot marshal a value as {st.format!r}: {exc}")


def _compile_write(st: StructType) -> Callable[[Writer, Any, Ctx], None]:
    """Straight-line Python for :meth:`StructType.write_generic` of one structure: nested
    structures written in place (each with its own context of fields, as the generic writer gives
    them), consecutive unconditional integers packed by one precompiled ``struct.Struct``, and
    everything else (pointers, arrays, unions, conditional fields) delegated to its wire type as the
    generic loop does. The bytes, the ``ctx`` seen by conditions and nested types, and the errors are
    the same."""
    env: dict[str, Any] = {"_struct_error": _struct.error, "_pack_error": _pack_error, "ValueError": ValueError}
    lines = ["def write(w, value, ctx):"]
    fmt: list[str] = []
    args: list[str] = []
    names = itertools.count()

    def flush() -> None:
        if not args:
            return
        name = f"S{next(names)}"
        env[name] = _struct.Struct("<" + "".join(fmt))
        lines.append(f"    try: w.buf += {name}.pack({', '.join(f'int({a})' for a in args)})")
        lines.append(f"    except _struct_error as exc: raise _pack_error({name}, exc) from None")
        fmt.clear()
        args.clear()

    def emit(layout: StructType, value: str) -> None:
        own = f"own{next(names)}"
        lines.append(f"    {own} = {{}}")
        for item in layout.items:
            v = f"v{next(names)}"
            if item.count_of is not None:
                lines.append(f"    {v} = {value}.{item.count_of}")
                lines.append(f"    {v} = 0 if {v} is None else len({v})")
            else:
                lines.append(f"    {v} = {value}.{item.name}")
            lines.append(f"    {own}[{item.name!r}] = {v}")
            wtype = item.wtype
            if item.when is None and isinstance(wtype, Int):
                fmt.append(wtype.st.format[1:])
                args.append(v)
                continue
            if item.when is None and isinstance(wtype, StructType):
                emit(wtype, v)  # its integers join the current run
                continue
            flush()
            t = f"t{next(names)}"
            env[t] = wtype
            if item.when is None:
                lines.append(f"    {t}.write(w, {v}, {own})")
                continue
            when = f"when{next(names)}"
            env[when] = item.when
            lines.append(f"    if {when}({own}): {t}.write(w, {v}, {own})")
            if not item.hidden:
                message = f"{layout.cls.__name__}.{item.name} must be None: its condition is false"
                lines.append(f"    elif {v} is not None: raise ValueError({message!r})")

    emit(st, "value")
    flush()
    exec(compile("\n".join(lines), f"<marshal {st.cls.__name__}>", "exec"), env)  # generated from our own layouts only
    return env["write"]  # type: ignore[no-any-return]


T = TypeVar("T")


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(f, dataclasses.field))
def struct(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen, keyword-only dataclass with a wire layout (``cls.WIRE``)."""
    items: list[Item] = []
    for name, value in list(cls.__dict__.items()):
        if isinstance(value, _Hidden):
            items.append(Item(name, value.wtype, value.when, value.count_of))
            delattr(cls, name)
        elif isinstance(value, dataclasses.Field) and "wire" in value.metadata:
            wtype, when = value.metadata["wire"]
            items.append(Item(name, wtype, when))
    annotations = inspect.get_annotations(cls)
    for name in annotations:
        if name not in {i.name for i in items} and not _is_classvar(annotations[name]):
            raise TypeError(f"{cls.__name__}.{name} has no wire type")
    new = dataclasses.dataclass(frozen=True, kw_only=True, slots=True)(cls)
    new.WIRE = StructType(new, items)  # type: ignore[attr-defined]
    return new


def _is_classvar(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return "ClassVar" in text


class HasWire(Protocol):
    WIRE: ClassVar[StructType]


def layout_of(cls: type) -> StructType:
    """The :class:`StructType` of a class made with :func:`struct`."""
    return cls.WIRE  # type: ignore[attr-defined, no-any-return]


def marshal(value: Any) -> bytes:
    """Marshal a structure or message instance to bytes (pointers resolved)."""
    w = Writer()
    type(value).WIRE.write(w, value, {})
    return w.getvalue()


def demarshal(cls: type[T], data: bytes | bytearray | memoryview) -> T:
    """Parse ``data`` as ``cls``; raises ProtocolError on short or inconsistent input."""
    try:
        return layout_of(cls).read(Reader(data), {})  # type: ignore[no-any-return]
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError("structure nested too deeply") from None
    except Exception as exc:  # pragma: no cover - a bug; never leak it as another type
        _log.exception("internal error parsing %s", cls.__name__)
        raise ProtocolError(f"internal error parsing {cls.__name__}") from exc
