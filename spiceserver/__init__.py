"""spiceserver: a SPICE server library for Python hypervisors and emulators (asyncio).

Import :class:`SpiceServer` and :class:`ServerConfig`, register devices, and run it on your loop::

    server = SpiceServer(ServerConfig(port=5900, password="s3cret"))
    server.add_keyboard(my_keyboard)
    await server.serve_forever()
"""

from __future__ import annotations

from .auth import SaslVerifiers
from .channels.base import Channel
from .channels.host_agent import ClientVolume
from .channels.playback import PlaybackChannel
from .channels.record import RecordChannel, RecordEvent
from .channels.session import Session
from .config import ChannelSecurity, ServerConfig
from .errors import ConfigError, GuestError, LinkError, NotSupportedError, ProtocolError, SpiceError
from .events import ChannelEvent, ChannelInfo, ClientInfo
from .framebuffer import FramebufferDisplay
from .interfaces import Keyboard, KeyEvent, Mouse, Tablet, spice_to_local_buttons
from .metrics import DisplayMetrics, Metrics, SoundMetrics
from .proto.enums import KeyboardModifiers, MouseButtonMask, MouseMode
from .qxl import QXLDevice, QXLDeviceConfig
from .reds import SpiceServer
from .roles import Role, RolePolicy, RoleQuery
from .server_sessions import SessionInfo
from .worker.cursor_client import CursorShape

__all__ = [
    "SpiceServer",
    "Session",
    "SessionInfo",
    "Role",
    "RoleQuery",
    "RolePolicy",
    "Channel",
    "FramebufferDisplay",
    "CursorShape",
    "QXLDevice",
    "QXLDeviceConfig",
    "DisplayMetrics",
    "SoundMetrics",
    "PlaybackChannel",
    "RecordChannel",
    "RecordEvent",
    "ClientVolume",
    "KeyboardModifiers",
    "MouseButtonMask",
    "MouseMode",
    "ChannelEvent",
    "ChannelInfo",
    "ClientInfo",
    "Metrics",
    "ServerConfig",
    "ChannelSecurity",
    "SaslVerifiers",
    "Keyboard",
    "Mouse",
    "Tablet",
    "KeyEvent",
    "spice_to_local_buttons",
    "SpiceError",
    "ProtocolError",
    "LinkError",
    "GuestError",
    "ConfigError",
    "NotSupportedError",
]

__version__ = "0.1.0"
