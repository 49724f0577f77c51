"""What a SASL mechanism's server side answers each step, and the credentials it checks.

No single libspice counterpart: libspice hands the steps to cyrus ``sasl_server_start`` /
``sasl_server_step`` (``server/red-stream.cpp``), whose results this mirrors: continue with data,
or complete, accepted or not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .verifiers import SaslVerifiers

__all__ = ["StepResult", "Mechanism", "SaslCredentials", "PasswordCheck"]

#: the host's ``check(username, password) -> bool``; called on the link crypto threads
PasswordCheck = Callable[[str, str], bool]


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step's answer.

    Attributes:
        out: data for the client (None: NULL).
        complete: the exchange is over; ``ok`` says how.
        ok: the client authenticated as ``user``.
        user: the authenticated (or claimed) user name, for the log.
        reason: why it was refused, for the log (never sent).
        guess: a password was tested and was wrong (counts in the failure throttle).
    """

    out: bytes | None
    complete: bool
    ok: bool = False
    user: str | None = None
    reason: str | None = None
    guess: bool = False


def refuse(reason: str, out: bytes | None = None, *, user: str | None = None, guess: bool = False) -> StepResult:
    """A complete, refused step."""
    return StepResult(out, True, False, user, reason, guess)


class Mechanism(Protocol):
    """One exchange's server side; ``step`` raises ProtocolError on malformed data."""

    def step(self, data: bytes | None) -> StepResult:
        """Answer the client's data (None: NULL)."""
        ...


@dataclass(frozen=True, slots=True)
class SaslCredentials:
    """Where logins are checked: a verifier store (SCRAM and PLAIN) and/or a host callback
    (PLAIN only: SCRAM never sees the password)."""

    verifiers: SaslVerifiers | None = None
    check: PasswordCheck | None = None

    def check_password(self, user: str, password: str) -> bool:
        """PLAIN: the store accepts it, or the callback does (a callback that raises refuses)."""
        if self.verifiers is not None and user in self.verifiers and self.verifiers.check_password(user, password.encode()):
            return True
        if self.check is not None:
            try:
                return self.check(user, password) is True
            except Exception:  # the host's bug refuses this login only
                return False
        return False
