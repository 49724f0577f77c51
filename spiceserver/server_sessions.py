"""The host's view of the client sessions: list them, change a role, disconnect one (not in libspice).

libspice offers only ``spice_server_get_num_clients`` and ``reds_disconnect`` (every client,
``reds.cpp``). :class:`SessionControl` is a part of :class:`~spiceserver.reds.SpiceServer`; roles
are described in :mod:`spiceserver.roles`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
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

log = logging.getLogger("spiceserver")


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
    """Session and role calls of :class:`~spiceserver.reds.SpiceServer`.

    :meth:`sessions` runs on the event loop. :meth:`set_role` and :meth:`disconnect` may be called
    from any thread: on the loop they act at once and raise ``KeyError`` for an unknown session;
    from another thread they are scheduled on the loop and an unknown session is only logged.
    """

    _ctx: ServerContext

    def sessions(self) -> list[SessionInfo]:
        """The connected sessions, oldest first."""
        return [_info(s) for s in self._ctx.sessions]

    def _on_session(self, session_id: int, act: Callable[[Session], None]) -> None:
        """Run ``act(session)`` on the loop (see the class doc for unknown ids)."""
        gate = self._ctx.gate
        if gate.on_loop:
            session = self._ctx.sessions.get(session_id)
            if session is None:
                raise KeyError(f"no session {session_id:#x}")
            act(session)
            return

        def later() -> None:
            session = self._ctx.sessions.get(session_id)
            if session is None:
                log.warning("no session %#x (it went away)", session_id)
            else:
                act(session)

        gate.run(later)

    def set_role(self, session_id: int, role: Role | str) -> None:
        """Change a session's role now: a demoted owner loses its input at once (keys it holds are
        released), its record / usbredir / smartcard / port / webdav channels are closed and it no
        longer sees the agent; a promoted viewer is offered them.

        Raises:
            KeyError: no such session.
            ValueError: not a role.
        """
        new = Role(role)
        self._on_session(session_id, lambda s: apply_role(self._ctx, s, new))

    def disconnect(self, session_id: int) -> None:
        """Close every channel of one session.

        Raises:
            KeyError: no such session.
        """
        self._on_session(session_id, self._ctx.sessions.close)

    def set_role_policy(self, policy: RolePolicy | None) -> None:
        """Decide each new session's role with ``policy(RoleQuery) -> Role | None`` (None refuses
        the client with PERMISSION_DENIED); it runs on the event loop during the link and must not
        block. None: back to the ticket's role (:func:`~spiceserver.roles.default_role`). Any thread."""
        if policy is not None and not callable(policy):
            raise ConfigError("the role policy must be callable")
        self._ctx.role_policy = policy
