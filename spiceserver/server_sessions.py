"""The host's view of the client sessions: list them, change a role, disconnect one (not in libspice).

libspice offers only ``spice_server_get_num_clients`` and ``reds_disconnect`` (every client,
``reds.cpp``). :class:`SessionControl` is a part of :class:`~spiceserver.reds.SpiceServer`; roles
are described in :mod:`spiceserver.roles`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .channels.role_enforce import apply_role
from .channels.session import Session
from .errors import ConfigError
from .events import ChannelInfo
from .roles import Role, RolePolicy

if TYPE_CHECKING:
    from .channels.base import ServerContext

__all__ = ["SessionControl", "SessionInfo"]


@dataclass(frozen=True)
class SessionInfo:
    """One client session, as :meth:`SessionControl.sessions` lists it.

    Attributes:
        id: the session (connection) id.
        role: ``Role.OWNER`` or ``Role.VIEWER``.
        peer: the main channel's peer address.
        channels: its connected channels.
        since: when it started (``time.time()``).
        inputs_dropped: input messages dropped while it was a viewer.
    """

    id: int
    role: Role
    peer: str
    channels: tuple[ChannelInfo, ...]
    since: float
    inputs_dropped: int = 0


def _info(s: Session) -> SessionInfo:
    return SessionInfo(s.id, s.role, s.peer, tuple(s.infos), s.since, s.inputs_dropped)


class SessionControl:
    """Session and role calls of :class:`~spiceserver.reds.SpiceServer` (event loop unless noted)."""

    _ctx: ServerContext

    def sessions(self) -> list[SessionInfo]:
        """The connected sessions, oldest first."""
        return [_info(s) for s in self._ctx.sessions]

    def _session(self, session_id: int) -> Session:
        session = self._ctx.sessions.get(session_id)
        if session is None:
            raise KeyError(f"no session {session_id:#x}")
        return session

    def set_role(self, session_id: int, role: Role | str) -> None:
        """Change a session's role now: a demoted owner loses its input at once (keys it holds are
        released), its record / usbredir / smartcard / port / webdav channels are closed and it no
        longer sees the agent; a promoted viewer is offered them.

        Raises:
            KeyError: no such session.
            ValueError: not a role.
        """
        apply_role(self._ctx, self._session(session_id), Role(role))

    def disconnect(self, session_id: int) -> None:
        """Close every channel of one session.

        Raises:
            KeyError: no such session.
        """
        self._ctx.sessions.close(self._session(session_id))

    def set_role_policy(self, policy: RolePolicy | None) -> None:
        """Decide each new session's role with ``policy(RoleQuery) -> Role | None`` (None refuses
        the client with PERMISSION_DENIED); it runs on the event loop during the link and must not
        block. None: back to the ticket's role (:func:`~spiceserver.roles.default_role`). Any thread."""
        if policy is not None and not callable(policy):
            raise ConfigError("the role policy must be callable")
        self._ctx.role_policy = policy
