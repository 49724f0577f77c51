"""One ticket password per role, checked with one decryption (not in libspice).

libspice keeps one password (``spice_server_set_ticket``, ``reds_handle_ticket`` in ``reds.cpp``);
here the owner's password is that one (``ServerConfig.password``) and a viewer's password may be set
beside it (``ServerConfig.viewer_password``, ``SpiceServer.set_ticket(..., role=Role.VIEWER)``),
each with its own lifetime. A ticket matching the owner's password gives ``owner``, else one
matching the viewer's gives ``viewer``. The failed-ticket throttle is shared: a wrong ticket counts
once, whichever passwords are set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .roles import Role
from .ticket import LinkKey, Ticket, TicketThrottle, peer_address

__all__ = ["RoleTickets", "AuthResult"]

_UNDECRYPTABLE = "failed to decrypt the ticket"
_INVALID = "invalid password"


@dataclass(frozen=True)
class AuthResult:
    """A ticket's outcome: ``reason`` it is refused (None: accepted) and the ``role`` it matched
    (None when accepted without ticketing)."""

    reason: str | None
    role: Role | None = None


@dataclass
class RoleTickets:
    """The owner's and the viewer's passwords (thread-safe reads: tickets are checked on the link
    crypto threads, :mod:`spiceserver.linkcrypto`)."""

    throttle: TicketThrottle | None = None
    tickets: dict[Role, Ticket] = field(default_factory=lambda: {Role.OWNER: Ticket(), Role.VIEWER: Ticket()})

    def set(self, password: str | None, lifetime: float = 0.0, role: Role = Role.OWNER, *, now: float | None = None) -> None:
        """Set ``role``'s password (None: that role cannot log in); lifetime 0 = never expires."""
        self.tickets[role].set(password, lifetime, now=now)

    def any_password(self) -> bool:
        """Some role has a password set."""
        return any(t.password for t in self.tickets.values())

    def authenticate(
        self, key: LinkKey, ciphertext: bytes, *, required: bool = True, now: float | None = None, peer: object = None
    ) -> AuthResult:
        """Check a link's encrypted ticket from ``peer``, as :meth:`Ticket.authenticate` does for
        one password, against the owner's password first, then the viewer's.

        Without ``required`` (``disable_ticketing``) the ticket must still decrypt and no role is
        given (:func:`~spiceserver.roles.default_role` decides).
        """
        now = time.monotonic() if now is None else now
        throttle = self.throttle if required and self.any_password() else None
        address = peer_address(peer)
        if throttle is not None and (wait := throttle.locked_for(address, now)) > 0:
            return AuthResult(f"too many wrong tickets from {address}: locked out for {wait:.0f} more seconds")
        password = key.decrypt(ciphertext)
        if password is None:
            reason: str = _UNDECRYPTABLE
        elif not required:
            return AuthResult(None)
        else:
            reasons = []
            for role in (Role.OWNER, Role.VIEWER):
                why = self.tickets[role].check(password, now=now)
                if why is None:
                    return AuthResult(None, role)
                reasons.append(why)
            # the owner's reason unless only the viewer has a password
            reason = _INVALID if _INVALID in reasons else reasons[0] if self.tickets[Role.OWNER].password else reasons[-1]
        if throttle is not None and reason in (_UNDECRYPTABLE, _INVALID) and throttle.failed(address, now):
            reason += f" ({throttle.max_failures} wrong tickets from {address}: locked out for {throttle.lockout:.0f} s)"
        return AuthResult(reason)
