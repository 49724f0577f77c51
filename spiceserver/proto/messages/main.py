"""Main channel messages (spice-common ``spice.proto`` ``channel MainChannel``)."""

from __future__ import annotations

from ..enums import ChannelType
from ..marshal import U8, U16, U32, U64, Bytes, Ptr, count, f, layout_of, struct
from .base import CLIENT, SERVER, Message, _struct_array, message

MAIN = ChannelType.MAIN


@struct
class ChannelId:
    type: int = f(U8)
    id: int = f(U8)


@struct
class DstInfo:
    """Migration destination; host and cert subject are NUL-terminated bytes behind pointers."""

    port: int = f(U16)
    sport: int = f(U16)
    _host_size = count(U32, "host_data")
    host_data: bytes = f(Ptr(Bytes("_host_size"), nonnull=True))
    _cert_size = count(U32, "cert_subject_data")
    cert_subject_data: bytes | None = f(Ptr(Bytes("_cert_size")), default=None)


# server -> client


@message(MAIN, SERVER, 101)
@struct
class MigrateBegin(Message):
    dst_info: DstInfo = f(layout_of(DstInfo))


@message(MAIN, SERVER, 102)
@struct
class MigrateCancel(Message):
    pass


@message(MAIN, SERVER, 103)
@struct
class Init(Message):
    session_id: int = f(U32)
    display_channels_hint: int = f(U32)
    supported_mouse_modes: int = f(U32)
    current_mouse_mode: int = f(U32)
    agent_connected: int = f(U32)
    agent_tokens: int = f(U32)
    multi_media_time: int = f(U32)
    ram_hint: int = f(U32)


@message(MAIN, SERVER, 104)
@struct
class ChannelsList(Message):
    _n = count(U32, "channels")
    channels: tuple[ChannelId, ...] = f(_struct_array(ChannelId, "_n"))


@message(MAIN, SERVER, 105)
@struct
class MouseMode(Message):
    supported_modes: int = f(U16)
    current_mode: int = f(U16)


@message(MAIN, SERVER, 106)
@struct
class MultiMediaTime(Message):
    time: int = f(U32)


@message(MAIN, SERVER, 107)
@struct
class AgentConnected(Message):
    pass


@message(MAIN, SERVER, 108)
@struct
class AgentDisconnected(Message):
    error_code: int = f(U32)


@message(MAIN, SERVER, 109)
@struct
class AgentData(Message):
    data: bytes = f(Bytes())


@message(MAIN, SERVER, 110)
@struct
class AgentToken(Message):
    num_tokens: int = f(U32)


@message(MAIN, SERVER, 111)
@struct
class MigrateSwitchHost(Message):
    port: int = f(U16)
    sport: int = f(U16)
    _host_size = count(U32, "host_data")
    host_data: bytes | None = f(Ptr(Bytes("_host_size")), default=None)
    _cert_size = count(U32, "cert_subject_data")
    cert_subject_data: bytes | None = f(Ptr(Bytes("_cert_size")), default=None)


@message(MAIN, SERVER, 112)
@struct
class MigrateEnd(Message):
    pass


@message(MAIN, SERVER, 113)
@struct
class Name(Message):
    """The VM name; ``name`` includes the terminating NUL, as libspice sends it."""

    _len = count(U32, "name")
    name: bytes = f(Bytes("_len"))


@message(MAIN, SERVER, 114)
@struct
class Uuid(Message):
    uuid: bytes = f(Bytes(16))


@message(MAIN, SERVER, 115)
@struct
class AgentConnectedTokens(Message):
    num_tokens: int = f(U32)


@message(MAIN, SERVER, 116)
@struct
class MigrateBeginSeamless(Message):
    dst_info: DstInfo = f(layout_of(DstInfo))
    src_mig_version: int = f(U32)


@message(MAIN, SERVER, 117)
@struct
class MigrateDstSeamlessAck(Message):
    pass


@message(MAIN, SERVER, 118)
@struct
class MigrateDstSeamlessNack(Message):
    pass


# client -> server


@message(MAIN, CLIENT, 101)
@struct
class ClientInfo(Message):
    cache_size: int = f(U64)


@message(MAIN, CLIENT, 102)
@struct
class MigrateConnected(Message):
    pass


@message(MAIN, CLIENT, 103)
@struct
class MigrateConnectError(Message):
    pass


@message(MAIN, CLIENT, 104)
@struct
class AttachChannels(Message):
    pass


@message(MAIN, CLIENT, 105)
@struct
class MouseModeRequest(Message):
    mode: int = f(U16)


@message(MAIN, CLIENT, 106)
@struct
class AgentStart(Message):
    num_tokens: int = f(U32)


@message(MAIN, CLIENT, 107)
@struct
class ClientAgentData(Message):
    data: bytes = f(Bytes())


@message(MAIN, CLIENT, 108)
@struct
class ClientAgentToken(Message):
    num_tokens: int = f(U32)


@message(MAIN, CLIENT, 109)
@struct
class ClientMigrateEnd(Message):
    pass


@message(MAIN, CLIENT, 110)
@struct
class MigrateDstDoSeamless(Message):
    src_version: int = f(U32)


@message(MAIN, CLIENT, 111)
@struct
class MigrateConnectedSeamless(Message):
    pass


@message(MAIN, CLIENT, 112)
@struct
class QualityIndicator(Message):
    data: bytes = f(Bytes())
