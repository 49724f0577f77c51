"""What a session's role lets through, and a live role change (not in libspice).

The rules are :mod:`spiceserver.roles`'; this module applies them where the channels need them:
the main channel's channel list and agent (:mod:`spiceserver.channels.main`), the inputs channel's
messages (:mod:`spiceserver.channels.inputs`), and :func:`apply_role`, which makes a role change
take effect at once on a connected session. libspice has no roles: its nearest pieces are
``reds.cpp``'s ``reds_on_main_agent_start`` (the agent's one client) and ``inputs-channel.cpp``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..proto.channel import Event
from ..proto.messages import inputs as im
from ..roles import OWNER_ONLY_CHANNELS, Role
from .session import Session

if TYPE_CHECKING:
    from .base import ChannelClient, ServerContext

__all__ = ["agent_allowed", "visible_channels", "drop_viewer_input", "apply_role", "INPUT_MESSAGES"]

log = logging.getLogger("spiceserver")
#: key-release tasks of demoted sessions, held until done
_TASKS: set[asyncio.Task[None]] = set()

#: the inputs channel messages that act on the host's devices (all a viewer sends is dropped)
INPUT_MESSAGES = (
    im.KeyDown,
    im.KeyUp,
    im.KeyScancode,
    im.ClientKeyModifiers,
    im.MouseMotion,
    im.MousePosition,
    im.MousePress,
    im.MouseRelease,
)


def agent_allowed(role: Role) -> bool:
    """The session sees the agent and may ask for a mouse mode (owners only)."""
    return role is Role.OWNER


def visible_channels(role: Role, ids: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The (type, id) pairs of ``ids`` a session of ``role`` is told about (its channel list)."""
    return [key for key in ids if role is Role.OWNER or key[0] not in OWNER_ONLY_CHANNELS]


def drop_viewer_input(session: Session, event: Event, cc_log: logging.Logger | logging.LoggerAdapter) -> bool:  # type: ignore[type-arg]
    """True when ``event`` is an input message from a session that may not drive the host: it is
    then counted in ``session.inputs_dropped`` (the first one logged) and must be dropped."""
    if session.role is Role.OWNER or not isinstance(event, INPUT_MESSAGES):
        return False
    if not session.inputs_dropped:
        cc_log.info("%s session %#x: dropping its keyboard and mouse input", session.role, session.id)
    session.inputs_dropped += 1
    return True


def _session_clients(ctx: ServerContext, session: Session) -> list[tuple[int, ChannelClient]]:
    """(channel type, client) for every loop channel client of ``session``."""
    out: list[tuple[int, ChannelClient]] = []
    for channel in ctx.registry:
        for cc in list(getattr(channel, "clients", ())):
            if getattr(cc, "session", None) is session and not cc.closed:
                out.append((channel.type, cc))
    return out


def apply_role(ctx: ServerContext, session: Session, role: Role) -> None:
    """Change ``session``'s role now (event loop). A demoted owner's input stops at once (keys it
    holds are released), its owner-only channels (record, usbredir, smartcard, port, webdav) are
    closed and its agent goes away (the guest agent hears the client went); a promoted viewer is
    told of the agent and of the channels it may now link."""
    old, session.role = session.role, role
    if old is role:
        return
    log.info("session %#x: %s -> %s", session.id, old, role)
    ctx.listeners.role_changed(session.infos, str(role))
    main = session.main
    for ctype, cc in _session_clients(ctx, session):
        if role is not Role.OWNER and ctype in OWNER_ONLY_CHANNELS and cc.transport is not None:
            cc.transport.close()
        elif role is not Role.OWNER and hasattr(cc, "keys_down"):
            _TASKS.add(task := asyncio.get_running_loop().create_task(cc.on_close()))  # releases held keys
            task.add_done_callback(_TASKS.discard)
    if main is None or main.closed:
        return
    mc = main.main
    if mc.agent_present and agent_allowed(old) != agent_allowed(role):
        if not agent_allowed(role):
            main.send_agent_state(False)
            if mc.guest_agent is not None:
                mc.guest_agent.client_gone(main)
        else:
            main.send_agent_state(True)
    if role is Role.OWNER and main.attached:
        main.send_channels_list([k for k in ctx.registry.ids() if k[0] in OWNER_ONLY_CHANNELS])
    if main.transport is not None:
        main.transport.flush()
