"""SASL logins on a link: which mechanisms are offered, and the exchange over a connection.

Counterpart of spice ``server/red-stream.cpp`` (``red_sasl_start_auth`` and its handlers, which
drive cyrus) and the SASL branch of ``server/reds.cpp`` (``reds_handle_auth_mechanism``,
``reds_handle_sasl_result``). The wire format is :class:`spiceserver.proto.sasl.ServerSasl`; the
mechanisms are :mod:`.scram` and :mod:`.plain`; their steps run on the link crypto threads
(:mod:`spiceserver.linkcrypto`: PBKDF2 and the host's password callback stay off the event loop).

A wrong password counts in the ticket's failure throttle (:class:`spiceserver.ticket.TicketThrottle`),
so a locked-out address cannot guess by SASL either: its exchange is closed at once (libspice's
reaction to any failed step), before a mechanism is offered.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import LinkError, ProtocolError
from ..linkcrypto import run_link_crypto
from ..proto.sasl import SASL_MECHANISMS, SaslStart, ServerSasl
from ..ticket import TicketThrottle, peer_address
from ..transport import Reader, Writer
from .mechanism import Mechanism, PasswordCheck, SaslCredentials, StepResult
from .plain import PlainServer
from .scram import ScramServer
from .verifiers import SCRAM_HASHES, SaslVerifiers

__all__ = ["SaslAuthenticator", "SaslOutcome", "SASL_MECHANISMS", "DEFAULT_SASL_MECHANISMS"]

DEFAULT_SASL_MECHANISMS = SASL_MECHANISMS
#: SCRAM takes two steps, PLAIN at most two; more from a client is an attack
MAX_STEPS = 4


@dataclass(frozen=True, slots=True)
class SaslOutcome:
    """How one exchange ended: ``ok`` and the user, or the reason (for the log)."""

    ok: bool
    user: str | None = None
    reason: str | None = None
    leftover: bytes = b""


class SaslAuthenticator:
    """The mechanisms offered and the credentials they check.

    Args:
        mechanisms: names from :data:`SASL_MECHANISMS`, best first (the client picks).

    Raises:
        ValueError: an unknown or repeated mechanism, or none.
    """

    def __init__(self, mechanisms: Sequence[str] = DEFAULT_SASL_MECHANISMS) -> None:
        if not mechanisms or len(set(mechanisms)) != len(mechanisms) or not set(mechanisms) <= set(SASL_MECHANISMS):
            raise ValueError(f"SASL mechanisms must be distinct names from {', '.join(SASL_MECHANISMS)}")
        self.mechanisms = tuple(mechanisms)
        self.credentials = SaslCredentials()

    def set_credentials(self, *, verifiers: SaslVerifiers | None = None, check: PasswordCheck | None = None) -> None:
        """Replace where logins are checked (links in progress keep the old ones)."""
        self.credentials = SaslCredentials(verifiers, check)

    def mechanism(self, name: str) -> Mechanism:
        """A fresh server side of ``name``."""
        if name in SCRAM_HASHES:
            return ScramServer(name, self.credentials.verifiers)
        if name == "PLAIN":
            return PlainServer(self.credentials)
        raise ValueError(f"unknown SASL mechanism {name!r}")

    async def login(
        self,
        reader: Reader,
        writer: Writer,
        leftover: bytes,
        peer: object,
        throttle: TicketThrottle | None,
        log: logging.LoggerAdapter,  # type: ignore[type-arg]
    ) -> SaslOutcome:
        """:meth:`run`, with a protocol violation as a failed outcome, and the outcome logged."""
        try:
            outcome = await self.run(reader, writer, leftover, peer=peer, throttle=throttle, log=log)
        except (LinkError, ProtocolError) as exc:
            outcome = SaslOutcome(False, reason=f"bad SASL data: {exc.reason}")
        if outcome.ok:
            log.info("SASL user %r authenticated", outcome.user)
        else:
            log.warning("SASL authentication failed: %s", outcome.reason)
        return outcome

    async def run(
        self,
        reader: Reader,
        writer: Writer,
        leftover: bytes,
        *,
        peer: object,
        throttle: TicketThrottle | None,
        log: logging.LoggerAdapter,  # type: ignore[type-arg]
    ) -> SaslOutcome:
        """The exchange after the client selected SASL: returns the outcome (with the bytes that
        followed it on success). LinkError / ProtocolError / OSError propagate (the link fails;
        a LinkError's reply has been written)."""
        address = peer_address(peer)
        if throttle is not None and (wait := throttle.locked_for(address, time.monotonic())) > 0:
            return SaslOutcome(False, reason=f"too many failed logins from {address}: locked out for {wait:.0f} more seconds")
        sasl = ServerSasl(self.mechanisms)
        mech: Mechanism | None = None
        result: StepResult | None = None
        steps = 0
        data = leftover
        while True:
            out = sasl.data_to_send()
            if out:
                writer.write(out)
                await writer.drain()
            if sasl.done or sasl.failed:
                break
            if data:
                try:
                    sasl.receive_data(data)
                except LinkError:
                    writer.write(sasl.data_to_send())
                    await writer.drain()
                    raise
                data = b""
            events = sasl.events()
            if not events:
                data = await reader.read(65536)
                if not data:
                    raise ProtocolError("peer closed the connection during SASL")
                continue
            for ev in events:
                steps += 1
                if steps > MAX_STEPS:
                    raise ProtocolError(f"more than {MAX_STEPS} SASL steps")
                if isinstance(ev, SaslStart):
                    mech = self.mechanism(ev.mechanism)
                    log.debug("SASL mechanism %s", ev.mechanism)
                assert mech is not None
                result = await run_link_crypto(functools.partial(mech.step, ev.data))
                sasl.reply(result.out, result.complete)
                if result.complete:
                    sasl.finish(result.ok)
        assert result is not None
        if not result.ok and result.guess and throttle is not None and throttle.failed(address, time.monotonic()):
            return SaslOutcome(False, result.user, f"{result.reason} ({throttle.max_failures} failed logins from {address}: locked out for {throttle.lockout:.0f} s)")
        return SaslOutcome(result.ok, result.user, result.reason, sasl.leftover() if result.ok else b"")
