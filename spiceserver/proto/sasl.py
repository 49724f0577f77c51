"""The link's SASL exchange (``SPICE_COMMON_CAP_AUTH_SASL``), server side, sans-IO.

Counterpart of spice ``server/red-stream.cpp`` (``red_sasl_start_auth``, ``red_sasl_handle_auth_mechlen``,
``..._mechname``, ``..._steplen``, ``..._step``) and, for the peer, spice-gtk ``src/spice-channel.c``
(``spice_channel_perform_auth_sasl``). It runs after the LinkReply, once the client selected
``SpiceLinkAuthMechanism`` 2; what the mechanisms compute lives in :mod:`spiceserver.auth`.

Wire format (all integers u32 little-endian unless noted)::

    server: len + mechlist            ",SCRAM-SHA-256,SCRAM-SHA-1,PLAIN,"  (no NUL)
    client: len + mechname            1..100 bytes, no NUL, must be ",name," in the list
    client: len + data                len counts a trailing NUL; 0 = NULL (not the same as "")
    server: len + data, u8 complete   same rule (len+1 with a NUL, 0 = none)
    ... while complete == 0: client len + data, server len + data + u8 complete ...
    server: u32 0 (SPICE_LINK_ERR_OK)                               -- authenticated, or
            u32 1, u32 22, "Authentication failed\\0"                -- refused

Theory of operation::

    MECHLEN --4--> MECHNAME --n--> DATALEN --4--> DATA --n--> [app: SaslStart -> reply()]
        reply(complete=False) --> DATALEN --> DATA --> [app: SaslStep -> reply()] ...
        reply(complete=True)  --> [app: finish(ok)] --> DONE / FAILED

libspice's failures, reproduced: a mechanism name of bad length, or a later step's data over the
limit, closes the connection (``RED_SASL_ERROR_GENERIC``: :class:`ProtocolError`); a name not in
the list (or holding a comma), or the first data over the limit, gets a LinkReply carrying
INVALID_DATA (``reds_send_link_error``: :class:`LinkError`, its bytes already queued). Every length
is checked before anything is buffered, against :data:`SASL_DATA_MAX_LEN` (1 MiB).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Generator, Sequence
from dataclasses import dataclass

from ..errors import LinkError, ProtocolError
from .enums import LinkErr
from .link import LinkReply

__all__ = [
    "SASL_MECHANISMS",
    "SASL_MAX_MECHNAME_LEN",
    "SASL_DATA_MAX_LEN",
    "AUTH_FAILED",
    "SaslStart",
    "SaslStep",
    "SaslEvent",
    "ServerSasl",
    "encode_mechlist",
    "encode_data",
]

#: the mechanisms spiceserver implements (:mod:`spiceserver.auth`), best first
SASL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")
#: libspice ``SASL_MAX_MECHNAME_LEN``
SASL_MAX_MECHNAME_LEN = 100
#: libspice ``SASL_DATA_MAX_LEN``: the most data one step may carry (either way)
SASL_DATA_MAX_LEN = 1 << 20
#: the refusal text libspice sends after a failed exchange (``sizeof`` counts the NUL)
AUTH_FAILED = b"Authentication failed\0"

U32 = struct.Struct("<I")
#: RFC 4422 section 3.1 mechanism names
_MECH_NAME = re.compile(rb"[A-Z0-9_-]{1,20}")
#: bytes a client may send ahead of what the exchange needs (its next message, or the data phase)
_SLACK = 64 << 10


def encode_mechlist(mechanisms: Sequence[str]) -> bytes:
    """The mechanism list as ``sasl_listmech`` writes it with "," as prefix, separator and suffix.

    Raises:
        ValueError: no mechanism, or a name that is not an RFC 4422 mechanism name.
    """
    if not mechanisms:
        raise ValueError("no SASL mechanism")
    for m in mechanisms:
        if not _MECH_NAME.fullmatch(m.encode()):
            raise ValueError(f"bad SASL mechanism name {m!r}")
    return ("," + ",".join(mechanisms) + ",").encode()


def encode_data(data: bytes | None) -> bytes:
    """A data blob on the wire: u32 length counting a trailing NUL, 0 for NULL."""
    if data is None:
        return U32.pack(0)
    return U32.pack(len(data) + 1) + data + b"\0"


@dataclass(frozen=True, slots=True)
class SaslStart:
    """The client chose ``mechanism`` and sent its first data (None: NULL, not the same as b"")."""

    mechanism: str
    data: bytes | None


@dataclass(frozen=True, slots=True)
class SaslStep:
    """The client's next step data (None: NULL)."""

    data: bytes | None


SaslEvent = SaslStart | SaslStep


class ServerSasl:
    """The server side of one link's SASL exchange.

    Args:
        mechanisms: the mechanism names to offer, best first (sent at once; see
            :meth:`data_to_send`).
    """

    def __init__(self, mechanisms: Sequence[str]) -> None:
        self.mechlist = encode_mechlist(mechanisms)
        self.mechanisms = tuple(mechanisms)
        self._buf = bytearray()
        self._out = bytearray(U32.pack(len(self.mechlist)) + self.mechlist)
        self._events: list[SaslEvent] = []
        self._need = 4  # bytes the parser waits for, for the buffering limit
        self._awaiting_reply = False
        self._complete = False
        self.done = False
        self.failed = False
        self._parser: Generator[None, None, None] | None = self._read_start()
        self._step()

    # --- sans-IO face ---------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes from the peer.

        Raises:
            ProtocolError: close the connection (nothing to send).
            LinkError: send :meth:`data_to_send` (a LinkReply with the error), then close.
        """
        self._buf += data
        if self._parser is None:
            if not (self.done or self.failed) and len(self._buf) > _SLACK:
                self.failed = True
                raise ProtocolError(f"{len(self._buf)} bytes of SASL data sent ahead of the server's reply")
            return
        if len(self._buf) > self._need + _SLACK:
            self.failed = True
            raise ProtocolError(f"{len(self._buf)} bytes of SASL data buffered, {self._need} expected")
        self._step()

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer now."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def events(self) -> list[SaslEvent]:
        """What arrived since the last call."""
        ev, self._events = self._events, []
        return ev

    def leftover(self) -> bytes:
        """Bytes received after the exchange (the start of the data phase)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def reply(self, data: bytes | None, complete: bool) -> None:
        """Answer the last :class:`SaslStart` / :class:`SaslStep` with ``data`` (None: NULL);
        unless ``complete``, the next step is read.

        Raises:
            RuntimeError: no step is waiting for a reply.
            ValueError: ``data`` is over :data:`SASL_DATA_MAX_LEN`.
        """
        if not self._awaiting_reply:
            raise RuntimeError("reply() with no SASL step waiting")
        if data is not None and len(data) > SASL_DATA_MAX_LEN:
            raise ValueError(f"SASL reply of {len(data)} bytes")
        self._awaiting_reply = False
        self._out += encode_data(data) + bytes([1 if complete else 0])
        if complete:
            self._complete = True
        else:
            self._parser = self._read_step()
            self._step()

    def finish(self, ok: bool) -> None:
        """After a complete reply: accept (u32 OK) or refuse ("Authentication failed")."""
        if not self._complete or self.done or self.failed:
            raise RuntimeError("finish() before the complete reply or twice")
        if ok:
            self._out += U32.pack(LinkErr.OK)
            self.done = True
        else:
            self._out += U32.pack(1) + U32.pack(len(AUTH_FAILED)) + AUTH_FAILED
            self.failed = True

    # --- parser -----------------------------------------------------------------------------------

    def _step(self) -> None:
        if self._parser is None:
            return
        try:
            next(self._parser)
        except StopIteration:
            self._parser = None
        except (LinkError, ProtocolError):
            self._parser = None
            self.failed = True
            raise

    def _read_exact(self, n: int) -> Generator[None, None, bytes]:
        self._need = n
        while len(self._buf) < n:
            yield
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _read_start(self) -> Generator[None, None, None]:
        (n,) = U32.unpack((yield from self._read_exact(4)))
        if not 1 <= n <= SASL_MAX_MECHNAME_LEN:
            raise ProtocolError(f"SASL mechanism name of {n} bytes")
        raw = yield from self._read_exact(n)
        name = raw.decode("latin-1")
        if b"," in raw or f",{name},".encode("latin-1") not in self.mechlist:
            raise self._link_error(f"SASL mechanism {raw[:40]!r} was not offered")
        data = yield from self._read_data(first=True)
        self._awaiting_reply = True
        self._events.append(SaslStart(name, data))

    def _read_step(self) -> Generator[None, None, None]:
        data = yield from self._read_data(first=False)
        self._awaiting_reply = True
        self._events.append(SaslStep(data))

    def _read_data(self, *, first: bool) -> Generator[None, None, bytes | None]:
        (n,) = U32.unpack((yield from self._read_exact(4)))
        if n > SASL_DATA_MAX_LEN:
            if first:
                raise self._link_error(f"SASL start data of {n} bytes")
            raise ProtocolError(f"SASL step data of {n} bytes")
        if n == 0:
            return None
        raw = yield from self._read_exact(n)
        return raw[:-1]  # the wire counts a NUL; libspice drops the last byte whatever it is

    def _link_error(self, reason: str) -> LinkError:
        self._out += LinkReply.encode_error(LinkErr.INVALID_DATA)
        return LinkError(LinkErr.INVALID_DATA, reason)
