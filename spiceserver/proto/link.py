"""The link handshake, sans-IO, in both roles.

Counterpart of spice ``server/reds.cpp`` (``reds_handle_read_magic_done`` ... ``reds_handle_ticket``)
and spice-gtk ``src/spice-channel.c`` (``spice_channel_send_link`` ... ``spice_channel_recv_auth``).
Structures from spice-protocol ``spice/protocol.h``.

Theory of operation (server role)::

    HEADER --16 bytes--> MESS --size bytes--> [app: accept()/reject()] --> AUTH (4 bytes, only if
    both sides have PROTOCOL_AUTH_SELECTION) --> TICKET (128 bytes) --> [app: finish(code)] --> DONE
                                                  +--> SASL (accept(sasl=True), mechanism 2):
                                                       SaslSelected; the app runs proto.sasl on leftover()

Every check libspice makes happens in the same order with the same error, and errors go out in the
same form: before the LinkReply was sent, a full header + LinkReply carrying the error
(:meth:`ServerLink.reject`); after it, a bare u32 (:meth:`ServerLink.finish`). Sizes are checked
before anything is buffered: the header says how much follows, and at most 4096 bytes are accepted.
"""

from __future__ import annotations

import struct
from collections.abc import Generator, Sequence
from dataclasses import dataclass

from ..errors import LinkError
from .enums import (
    MAGIC,
    TICKET_CIPHER_BYTES,
    TICKET_PUBKEY_BYTES,
    VERSION_MAJOR,
    VERSION_MINOR,
    AuthMechanism,
    CommonCap,
    LinkErr,
)

__all__ = [
    "LinkHeader",
    "LinkMess",
    "LinkReply",
    "caps_to_words",
    "words_to_caps",
    "has_cap",
    "ServerLink",
    "ClientLink",
    "LinkRequest",
    "TicketReceived",
    "LinkReplyReceived",
    "LinkResult",
    "SaslSelected",
    "MAX_LINK_SIZE",
    "MAX_CAPS_WORDS",
]

HEADER = struct.Struct("<4sIII")
MESS = struct.Struct("<IBBIII")
REPLY = struct.Struct(f"<I{TICKET_PUBKEY_BYTES}sIII")
U32 = struct.Struct("<I")
MAX_LINK_SIZE = 4096
MAX_CAPS_WORDS = 1024


def caps_to_words(caps: Sequence[int] | set[int] | frozenset[int]) -> tuple[int, ...]:
    """Capability bit numbers -> u32 words."""
    if not caps:
        return ()
    words = [0] * (max(caps) // 32 + 1)
    for c in caps:
        words[c // 32] |= 1 << (c % 32)
    return tuple(words)


def words_to_caps(words: Sequence[int]) -> frozenset[int]:
    """u32 words -> capability bit numbers."""
    return frozenset(i * 32 + b for i, w in enumerate(words) for b in range(32) if w >> b & 1)


def has_cap(words: Sequence[int], cap: int) -> bool:
    """True when capability bit ``cap`` is set in ``words``."""
    i = cap // 32
    return i < len(words) and bool(words[i] >> (cap % 32) & 1)


@dataclass(frozen=True, slots=True)
class LinkHeader:
    """``SpiceLinkHeader``: magic, protocol version and the size of what follows."""

    magic: bytes
    major_version: int
    minor_version: int
    size: int

    def encode(self) -> bytes:
        """The 16-byte SpiceLinkHeader."""
        return HEADER.pack(self.magic, self.major_version, self.minor_version, self.size)


@dataclass(frozen=True, slots=True)
class LinkMess:
    """The client's SpiceLinkMess."""

    connection_id: int
    channel_type: int
    channel_id: int
    common_caps: tuple[int, ...] = ()
    channel_caps: tuple[int, ...] = ()

    def encode(self) -> bytes:
        """The SpiceLinkMess body with its capability words (no header)."""
        body = MESS.pack(
            self.connection_id,
            self.channel_type,
            self.channel_id,
            len(self.common_caps),
            len(self.channel_caps),
            MESS.size,
        )
        words = self.common_caps + self.channel_caps
        return body + struct.pack(f"<{len(words)}I", *words)

    @classmethod
    def parse(cls, data: bytes) -> LinkMess:
        """Parse and validate; raises LinkError(INVALID_DATA) as libspice would."""
        if len(data) < MESS.size:
            raise LinkError(LinkErr.INVALID_DATA, f"link message of {len(data)} bytes is too short")
        conn, ctype, cid, n_common, n_chan, caps_offset = MESS.unpack_from(data)
        if n_common > MAX_CAPS_WORDS or n_chan > MAX_CAPS_WORDS:
            raise LinkError(LinkErr.INVALID_DATA, f"too many capability words ({n_common}+{n_chan})")
        n = n_common + n_chan
        if n and (caps_offset < MESS.size or caps_offset + 4 * n > len(data)):
            raise LinkError(LinkErr.INVALID_DATA, f"capabilities at {caps_offset} ({n} words) outside the link message")
        words = struct.unpack_from(f"<{n}I", data, caps_offset) if n else ()
        return cls(conn, ctype, cid, tuple(words[:n_common]), tuple(words[n_common:]))


@dataclass(frozen=True, slots=True)
class LinkReply:
    """The server's SpiceLinkReply."""

    error: int
    pub_key: bytes = bytes(TICKET_PUBKEY_BYTES)
    common_caps: tuple[int, ...] = ()
    channel_caps: tuple[int, ...] = ()

    def encode(self) -> bytes:
        """The header and SpiceLinkReply body with its capability words."""
        if len(self.pub_key) != TICKET_PUBKEY_BYTES:
            raise ValueError(f"public key must be {TICKET_PUBKEY_BYTES} bytes")
        words = self.common_caps + self.channel_caps
        body = REPLY.pack(self.error, self.pub_key, len(self.common_caps), len(self.channel_caps), REPLY.size)
        body += struct.pack(f"<{len(words)}I", *words)
        return LinkHeader(MAGIC, VERSION_MAJOR, VERSION_MINOR, len(body)).encode() + body

    @staticmethod
    def encode_error(code: int) -> bytes:
        """A refusal as libspice's ``reds_send_link_error`` writes it: the reply zeroed but for
        ``error`` (so caps_offset is 0 too)."""
        body = struct.pack("<I", code) + bytes(REPLY.size - 4)
        return LinkHeader(MAGIC, VERSION_MAJOR, VERSION_MINOR, len(body)).encode() + body

    @classmethod
    def parse(cls, data: bytes) -> LinkReply:
        """Parse a SpiceLinkReply body (no header).

        Raises:
            LinkError: the body is too short or its capability words are out of bounds.
        """
        if len(data) < REPLY.size:
            raise LinkError(LinkErr.INVALID_DATA, f"link reply of {len(data)} bytes is too short")
        error, key, n_common, n_chan, off = REPLY.unpack_from(data)
        n = n_common + n_chan
        if n_common > MAX_CAPS_WORDS or n_chan > MAX_CAPS_WORDS or (n and (off < REPLY.size or off + 4 * n > len(data))):
            raise LinkError(LinkErr.INVALID_DATA, "bad capabilities in link reply")
        words = struct.unpack_from(f"<{n}I", data, off) if n else ()
        return cls(error, key, tuple(words[:n_common]), tuple(words[n_common:]))


# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkRequest:
    """Server role: the client's link message arrived; call accept() or reject()."""

    header: LinkHeader
    mess: LinkMess


@dataclass(frozen=True, slots=True)
class TicketReceived:
    """Server role: the encrypted ticket arrived; decrypt, check, then call finish()."""

    auth_mechanism: int
    encrypted_ticket: bytes


@dataclass(frozen=True, slots=True)
class SaslSelected:
    """Server role: the client selected SASL (offered by ``accept(sasl=True)``); the exchange
    (:mod:`spiceserver.proto.sasl`) continues on :meth:`ServerLink.leftover` and the connection."""


@dataclass(frozen=True, slots=True)
class LinkReplyReceived:
    """Client role: the server's reply arrived; if OK, call send_ticket()."""

    reply: LinkReply


@dataclass(frozen=True, slots=True)
class LinkResult:
    """Client role: the final link result (LinkErr)."""

    error: int


LinkEvent = LinkRequest | TicketReceived | SaslSelected | LinkReplyReceived | LinkResult


class _Stream:
    """A byte buffer read with ``yield from read_exact(n)`` (websockets ``streams.py`` pattern)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def read_exact(self, n: int) -> Generator[None, None, bytes]:
        while len(self.buf) < n:
            yield
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data


class _LinkBase:
    def __init__(self) -> None:
        self._stream = _Stream()
        self._out = bytearray()
        self._events: list[LinkEvent] = []
        self.done = False
        self.failed = False
        self._parser: Generator[None, None, None] | None = None

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def events(self) -> list[LinkEvent]:
        ev = self._events
        self._events = []
        return ev

    def leftover(self) -> bytes:
        """Bytes received after the link completed (the start of the data phase)."""
        data = bytes(self._stream.buf)
        self._stream.buf.clear()
        return data

    def _start(self, gen: Generator[None, None, None]) -> None:
        self._parser = gen
        self._step()

    def _step(self) -> None:
        if self._parser is None:
            return
        try:
            next(self._parser)
        except StopIteration:
            self._parser = None
        except LinkError:
            self._parser = None
            self.failed = True
            raise

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes; raises LinkError when the peer violated the link protocol."""
        if self.done or self.failed:
            self._stream.buf += data
            return
        self._stream.buf += data
        self._step()


class ServerLink(_LinkBase):
    """The server side of one link handshake."""

    def __init__(self) -> None:
        super().__init__()
        self.request: LinkRequest | None = None
        self.auth_selection = False
        self.sasl = False
        self._start(self._read_link())

    @property
    def buffered(self) -> int:
        """Number of bytes received and not parsed yet."""
        return len(self._stream.buf)

    def _read_link(self) -> Generator[None, None, None]:
        magic = yield from self._stream.read_exact(4)
        if magic != MAGIC:
            raise self._fail_early(LinkErr.INVALID_MAGIC, f"bad magic {magic!r}")
        rest = yield from self._stream.read_exact(12)
        major, minor, size = struct.unpack("<III", rest)
        if major != VERSION_MAJOR:
            if major == 0:
                self.failed = True
                raise LinkError(LinkErr.VERSION_MISMATCH, "protocol major version 0")
            raise self._fail_early(LinkErr.VERSION_MISMATCH, f"protocol major version {major}")
        if size < MESS.size or size > MAX_LINK_SIZE:
            raise self._fail_early(LinkErr.INVALID_DATA, f"link message size {size} outside {MESS.size}..{MAX_LINK_SIZE}")
        data = yield from self._stream.read_exact(size)
        try:
            mess = LinkMess.parse(data)
        except LinkError as exc:
            raise self._fail_early(exc.code, exc.reason) from None
        self.auth_selection = has_cap(mess.common_caps, CommonCap.PROTOCOL_AUTH_SELECTION)
        self.request = LinkRequest(LinkHeader(magic, major, minor, size), mess)
        self._events.append(self.request)

    def _fail_early(self, code: int, reason: str) -> LinkError:
        self.reject(code)
        return LinkError(code, reason)

    def reject(self, code: int) -> None:
        """Refuse before the reply: a full header + LinkReply carrying ``code``, then close."""
        self._out += LinkReply.encode_error(int(code))
        self.failed = True
        self._parser = None

    def accept(self, pub_key: bytes, common_caps: Sequence[int], channel_caps: Sequence[int], *, sasl: bool = False) -> None:
        """Send the LinkReply (OK) with our key and caps, then read the auth mechanism and ticket.

        With ``sasl`` (the caps offer AUTH_SASL), SASL is the only mechanism, as in libspice
        ``reds_handle_auth_mechanism``: the client's choice of it ends this parser with
        :class:`SaslSelected`; the RSA ticket is refused (INVALID_DATA), and a client without
        auth selection gets a second LinkReply with VERSION_MISMATCH at once (``failed`` is set).
        """
        if self.request is None or self.done or self.failed:
            raise RuntimeError("accept() before the link message or after the end")
        self.sasl = sasl
        self._out += LinkReply(LinkErr.OK, pub_key, tuple(common_caps), tuple(channel_caps)).encode()
        if sasl and not self.auth_selection:  # then ``failed`` is set and the refusal queued
            self.reject(LinkErr.VERSION_MISMATCH)
            return
        self._start(self._read_ticket())

    def _read_ticket(self) -> Generator[None, None, None]:
        mechanism = int(AuthMechanism.SPICE)
        if self.auth_selection:
            raw = yield from self._stream.read_exact(4)
            (mechanism,) = U32.unpack(raw)
            if mechanism == AuthMechanism.SASL and self.sasl:
                self._events.append(SaslSelected())
                return
            if mechanism != AuthMechanism.SPICE or self.sasl:
                raise self._fail_early(LinkErr.INVALID_DATA, f"unsupported auth mechanism {mechanism}")
        ticket = yield from self._stream.read_exact(TICKET_CIPHER_BYTES)
        self._events.append(TicketReceived(mechanism, ticket))

    def finish(self, code: int) -> None:
        """Send the bare u32 link result; OK completes the link, anything else fails it."""
        self._out += U32.pack(int(code))
        if code == LinkErr.OK:
            self.done = True
        else:
            self.failed = True


class ClientLink(_LinkBase):
    """The client side of one link handshake (used by the test client)."""

    def __init__(self, mess: LinkMess) -> None:
        super().__init__()
        self.mess = mess
        body = mess.encode()
        self._out += LinkHeader(MAGIC, VERSION_MAJOR, VERSION_MINOR, len(body)).encode() + body
        self.reply: LinkReply | None = None
        self._start(self._read_reply())

    def _read_reply(self) -> Generator[None, None, None]:
        raw = yield from self._stream.read_exact(HEADER.size)
        magic, major, _minor, size = HEADER.unpack(raw)
        if magic != MAGIC or major != VERSION_MAJOR or size > MAX_LINK_SIZE:
            self.failed = True
            raise LinkError(LinkErr.INVALID_DATA, "bad link reply header")
        data = yield from self._stream.read_exact(size)
        self.reply = LinkReply.parse(data)
        self._events.append(LinkReplyReceived(self.reply))
        if self.reply.error != LinkErr.OK:
            self.failed = True

    def send_ticket(self, encrypted_ticket: bytes, *, auth_selection: bool = True) -> None:
        """Send the auth mechanism (if both sides select) and the 128-byte encrypted ticket."""
        if self.reply is None:
            raise RuntimeError("send_ticket() before the reply")
        if auth_selection and has_cap(self.reply.common_caps, CommonCap.PROTOCOL_AUTH_SELECTION):
            self._out += U32.pack(AuthMechanism.SPICE)
        self._out += encrypted_ticket
        self._start(self._read_result())

    def _read_result(self) -> Generator[None, None, None]:
        raw = yield from self._stream.read_exact(4)
        (code,) = U32.unpack(raw)
        self._events.append(LinkResult(code))
        if code == LinkErr.OK:
            self.done = True
        else:
            self.failed = True
