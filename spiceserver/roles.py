"""Client roles: an ``owner`` drives the VM, a ``viewer`` only watches (not in libspice).

libspice serves one client (``reds_handle_main_link`` replaces the previous one; several only behind
its debug switch, without roles). With ``ServerConfig.max_clients`` above 1, spiceserver keeps
several sessions, each with a role fixed at its main link (the host may change it later,
``SpiceServer.set_role``):

* ``owner``: everything (inputs, agent: clipboard, file transfer, monitors config, agent mouse;
  record, usbredir, smartcard, port and webdav channels; mouse mode requests).
* ``viewer``: display, cursor and playback. Its inputs channel links, but every key and mouse
  message is dropped (counted, logged once); its main channel shows no agent and ignores agent
  messages and mouse mode requests; the channels in :data:`OWNER_ONLY_CHANNELS` are left out of its
  channel list and a link to one is refused with ``CHANNEL_NOT_AVAILABLE`` (spice-gtk then closes
  that channel only, the session goes on).

The role comes from the password the main link's ticket matched (one password per role,
``SpiceServer.set_ticket(password, role=...)``), then from the host's :data:`RolePolicy` if one is
set; a SASL login (``ServerConfig.sasl``) is an owner's unless the policy says otherwise
(:attr:`RoleQuery.user`). With ``disable_ticketing`` (no password to tell roles apart) a main link is ``owner`` while no
owner session is connected (or with ``max_clients`` 1, where it replaces every session), else ``viewer``. Each other channel of a session must present the
session's connection id and a ticket good for that session's role or a higher one: a viewer's
password never joins an owner's session (unless the host made a viewer's session an owner: then
the client's own password still links, :mod:`spiceserver.channels.link_rules`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from .proto.enums import ChannelType

__all__ = ["Role", "RoleQuery", "RolePolicy", "OWNER_ONLY_CHANNELS", "default_role"]


class Role(enum.Enum):
    """A session's role; ``Role("owner")`` works, and ``str(role)`` is its value."""

    VIEWER = "viewer"
    OWNER = "owner"

    @property
    def rank(self) -> int:
        """Higher ranks may do more: viewer 0, owner 1."""
        return 1 if self is Role.OWNER else 0

    def covers(self, other: Role) -> bool:
        """A ticket for this role is good for a session of role ``other`` (same role or lower)."""
        return self.rank >= other.rank

    def __str__(self) -> str:
        return self.value


#: channels a viewer may not link (left out of its channel list; a link is refused)
OWNER_ONLY_CHANNELS = frozenset(
    {ChannelType.RECORD, ChannelType.USBREDIR, ChannelType.SMARTCARD, ChannelType.PORT, ChannelType.WEBDAV}
)


@dataclass(frozen=True)
class RoleQuery:
    """What a :data:`RolePolicy` decides a new session's role from.

    Attributes:
        peer: the client's address (``"host:port"``, ``"unix"``).
        ticket_role: the role whose password the ticket matched; None with ``disable_ticketing``.
        secure: the link came over TLS.
        owners: owner sessions connected now.
        viewers: viewer sessions connected now.
        max_clients: ``ServerConfig.max_clients`` (1: the new session replaces every other).
        user: the SASL user name of a SASL login (whose ``ticket_role`` is owner), else None.
    """

    peer: str
    ticket_role: Role | None
    secure: bool
    owners: int
    viewers: int
    max_clients: int = 1
    user: str | None = None


#: the host's say on a new session's role: a Role, or None to refuse the link (PERMISSION_DENIED)
RolePolicy = Callable[[RoleQuery], "Role | None"]


def default_role(query: RoleQuery) -> Role:
    """The role without a host policy: the ticket's, or (no ticketing) owner while no owner is
    connected or when the new session replaces every other (``max_clients`` 1, as libspice)."""
    if query.ticket_role is not None:
        return query.ticket_role
    return Role.OWNER if query.owners == 0 or query.max_clients <= 1 else Role.VIEWER
