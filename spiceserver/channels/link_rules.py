"""Which session and role a link that passed its ticket gets, or the link error refusing it.

Counterpart of the connection-id checks of spice ``server/reds.cpp`` (``reds_handle_main_link``
starts a client; ``reds_handle_other_links`` looks the client up by ``connection_id`` and answers
``BAD_CONNECTION_ID``), extended with roles (:mod:`spiceserver.roles`, not in libspice):

=========================  ==================================================================
link                       outcome
=========================  ==================================================================
main                       role = host policy (None: ``PERMISSION_DENIED``) or the ticket's
                           role (no ticketing: owner while no owner is connected, else viewer);
                           no room (``max_clients`` reached, a viewer): ``ERROR``
other, unknown id          ``BAD_CONNECTION_ID``
other, ticket below the    ``BAD_CONNECTION_ID`` (a viewer's password never joins an owner's
session's role (1)         session; the same answer as an unknown id, so ids are not confirmed)
owner-only channel,        ``CHANNEL_NOT_AVAILABLE`` (record, usbredir, smartcard, port,
viewer session             webdav: never in a viewer's channel list anyway)
=========================  ==================================================================

(1) the lower of the session's role and the role of its main link's ticket: a session the host
promoted (``set_role``, or a policy giving a viewer's ticket ``owner``) keeps linking channels with
the password its client has.

spice-gtk reports any error after the ticket as an authentication failure of that channel
(``spice_channel_recv_auth``); only a refused main channel ends its session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..proto.enums import ChannelType, LinkErr
from ..roles import OWNER_ONLY_CHANNELS, Role, RolePolicy, RoleQuery, default_role
from .session import SessionTable

__all__ = ["LinkGrant", "grant_link"]


@dataclass(frozen=True)
class LinkGrant:
    """The outcome: ``code`` (``LinkErr.OK`` or the refusal), the session's ``role`` and the role
    of the ticket (None without ticketing)."""

    code: int
    role: Role | None = None
    ticket_role: Role | None = None


def grant_link(
    sessions: SessionTable,
    channel_type: int,
    connection_id: int,
    ticket_role: Role | None,
    *,
    peer: str = "",
    secure: bool = False,
    policy: RolePolicy | None = None,
    log: logging.Logger | logging.LoggerAdapter | None = None,  # type: ignore[type-arg]
    user: str | None = None,
) -> LinkGrant:
    """Decide a link whose ticket was accepted (``ticket_role``: the role of the password it
    matched, None without ticketing; ``user``: the SASL login's); see the module doc for the rules."""
    warn = log.warning if log is not None else (lambda *a: None)
    if channel_type == ChannelType.MAIN:
        query = RoleQuery(peer, ticket_role, secure, sessions.count(Role.OWNER), sessions.count(Role.VIEWER), sessions.max_clients, user)
        role = default_role(query) if policy is None else policy(query)
        if role is None:
            warn("the host's role policy refused the client")
            return LinkGrant(LinkErr.PERMISSION_DENIED)
        if not isinstance(role, Role):
            warn("the host's role policy returned %r, not a Role: refusing", role)
            return LinkGrant(LinkErr.PERMISSION_DENIED)
        if sessions.victims_for(role) is None:
            warn("%d sessions connected (max_clients): refusing a new %s session", len(sessions), role)
            return LinkGrant(LinkErr.ERROR)
        return LinkGrant(LinkErr.OK, role, ticket_role)
    session = sessions.get(connection_id)
    if session is None:
        warn("unknown connection id %#x", connection_id)
        return LinkGrant(LinkErr.BAD_CONNECTION_ID)
    needed = session.role if session.ticket_role is None or session.ticket_role.covers(session.role) else session.ticket_role
    if ticket_role is not None and not ticket_role.covers(needed):
        warn("a %s ticket may not join %s session %#x", ticket_role, session.role, connection_id)
        return LinkGrant(LinkErr.BAD_CONNECTION_ID)
    if session.role is not Role.OWNER and channel_type in OWNER_ONLY_CHANNELS:
        warn("channel not available to a %s session", session.role)
        return LinkGrant(LinkErr.CHANNEL_NOT_AVAILABLE)
    return LinkGrant(LinkErr.OK, session.role, ticket_role)
