"""The host-answered monitors config: the client's wished-for monitor layout reaches the host.

libspice passes ``VD_AGENT_MONITORS_CONFIG`` to the guest agent, or to a QXL device with
``client_monitors_config`` (spice ``server/reds.cpp``: ``reds_on_main_agent_monitors_config``); the
agent applies it and answers ``VD_AGENT_REPLY(MONITORS_CONFIG, SUCCESS)`` (spice-vdagent, seen in
/work/shared/research/devices.md C). spice-gtk (``src/channel-main.c``: ``timer_set_display``,
``spice_main_channel_send_monitor_config``) sends it once the agent announced
``VD_AGENT_CAP_MONITORS_CONFIG`` (just after the agent's ANNOUNCE, then on every window resize or
``update_display``), only logs the reply, and with ``SPARSE_MONITORS_CONFIG`` sends one entry per
possible display (16), disabled ones 0 x 0, so an entry's index is its display id.

:class:`MonitorsConfigDuty` announces ``MONITORS_CONFIG``, ``SPARSE_MONITORS_CONFIG`` and
``MONITORS_CONFIG_POSITION``, hands the host every config as a tuple of
:class:`~spiceserver.proto.vdagent_messages.MonitorConfig` (``width``, ``height``, ``depth``, ``x``,
``y``, physical ``mm_width``/``mm_height``; ``enabled`` False for a sparse hole; positions are
meaningful when the client set ``USE_POS``, which spice-gtk does unless told not to) and answers
the REPLY: SUCCESS, or ERROR when a handler raised. A framebuffer-display host can resize on it.
Register with :func:`add_monitors_config_handler` (any thread; handlers sync or async, awaited in
order on the event loop).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable

from ..proto.vdagent import AgentCap, AgentMessage, AgentMessageType
from ..proto.vdagent_messages import MONITORS_CONFIG_MAX_SIZE, MonitorConfig, MonitorsConfig, Reply, ReplyError
from .host_agent import AgentDuty, HostAgent, HostAgentClient

__all__ = ["MonitorsConfigDuty", "MonitorsConfigHandler", "add_monitors_config_handler"]

MonitorsConfigHandler = Callable[[tuple[MonitorConfig, ...]], "Awaitable[None] | None"]


class MonitorsConfigDuty(AgentDuty):
    """``MONITORS_CONFIG`` to the host's handlers, answered with a REPLY. Active while a handler is
    registered."""

    CAPS = (AgentCap.MONITORS_CONFIG, AgentCap.SPARSE_MONITORS_CONFIG, AgentCap.MONITORS_CONFIG_POSITION)
    TYPES = (AgentMessageType.MONITORS_CONFIG,)
    MAX_MESSAGE_SIZE = MONITORS_CONFIG_MAX_SIZE

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._handlers: list[MonitorsConfigHandler] = []

    @property
    def active(self) -> bool:
        """A handler is registered."""
        with self._lock:
            return bool(self._handlers)

    def add_handler(self, handler: MonitorsConfigHandler) -> Callable[[], None]:
        """Call ``handler(monitors)`` for each config (any thread). Returns a function that removes it."""
        with self._lock:
            self._handlers.append(handler)
        self.changed()

        def remove() -> None:
            with self._lock:
                if handler in self._handlers:
                    self._handlers.remove(handler)
            self.changed()

        return remove

    async def on_message(self, msg: AgentMessage, client: HostAgentClient) -> None:
        """Deliver the config, then reply.

        Raises:
            ProtocolError: the config is malformed (the session is closed).
        """
        config = MonitorsConfig.parse(msg.data)
        client.log.info(
            "client monitors config: %s",
            ", ".join(f"#{i} {m.width}x{m.height}+{m.x}+{m.y}" for i, m in enumerate(config.monitors) if m.enabled)
            or "none",
        )
        with self._lock:
            handlers = list(self._handlers)
        error = ReplyError.SUCCESS
        for handler in handlers:
            try:
                result = handler(config.monitors)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                client.log.exception("monitors config handler %r failed", handler)
                error = ReplyError.ERROR
        client.send(Reply(AgentMessageType.MONITORS_CONFIG, error).message())


def add_monitors_config_handler(agent: HostAgent, handler: MonitorsConfigHandler) -> Callable[[], None]:
    """Call ``handler(monitors)`` with each monitors config a client sends through ``agent`` (any
    thread); the host agent becomes active with ``MONITORS_CONFIG``. Returns a function that removes
    the handler."""
    return agent.duty(MonitorsConfigDuty).add_handler(handler)
