"""Migration state machines (spiceserver.channels.migration) driven by the sans-IO test client.

spice-gtk judges the whole sequence in tests/interop/test_migration_spicegtk.py; here each branch
of the source's and the destination's tables, with the exact messages, and hostile input.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from spiceserver.proto import migration_data as md
from spiceserver.proto.enums import ChannelType, LinkErr, MainCap, MigrateFlags
from spiceserver.proto.messages import inputs as im
from spiceserver.proto.messages import main as mm
from spiceserver.proto.messages.base import ClientMigrateData, Migrate, MigrateData, MigrateFlushMark
from tests.conftest import Running, start_server
from tests.support.client import LinkFailed, connect, link_channel

SEMI = (MainCap.SEMI_SEAMLESS_MIGRATE, MainCap.NAME_AND_UUID, MainCap.AGENT_CONNECTED_TOKENS)
SEAMLESS = (*SEMI, MainCap.SEAMLESS_MIGRATE)


async def _closed(*rs: Running) -> None:
    for r in rs:
        await r.server.close()


async def test_semi_seamless_source_end_and_cancel() -> None:
    src = await start_server()
    try:
        s = await connect(src.ep, main_caps=SEMI)
        task = asyncio.create_task(src.server.migrate_info("dst.example", 5999, 5998, "CN=dst"))
        begin = await s.main.expect(mm.MigrateBegin, skip=(mm.ChannelsList, mm.MouseMode))
        assert (begin.dst_info.port, begin.dst_info.sport, begin.dst_info.host_data) == (5999, 5998, b"dst.example\0")
        assert begin.dst_info.cert_subject_data == b"CN=dst\0"
        await s.main.send(mm.MigrateConnected())
        assert await task is True
        end = asyncio.create_task(src.server.migrate_end(True))
        await s.main.expect(mm.MigrateEnd)
        await s.main.close()
        assert await end == {s.session_id: "semi-seamless"}

        s = await connect(src.ep, main_caps=SEMI)
        task = asyncio.create_task(src.server.migrate_info("dst", 5999))
        await s.main.expect(mm.MigrateBegin, skip=(mm.ChannelsList, mm.MouseMode))
        await s.main.send(mm.MigrateConnected())
        assert await task
        assert await src.server.migrate_end(False) == {s.session_id: "cancel"}
        await s.main.expect(mm.MigrateCancel)
    finally:
        await _closed(src)


async def test_connect_error_then_switch_host() -> None:
    src = await start_server(seamless_migration=True)
    try:
        s = await connect(src.ep, main_caps=SEAMLESS)
        task = asyncio.create_task(src.server.migrate_info("dst", 6000))
        begin = await s.main.expect(mm.MigrateBeginSeamless, skip=(mm.ChannelsList, mm.MouseMode))
        assert begin.src_mig_version == md.MIGRATION_VERSION
        await s.main.send(mm.MigrateConnectError())
        assert await task is False
        end = asyncio.create_task(src.server.migrate_end(True))
        sw = await s.main.expect(mm.MigrateSwitchHost)
        assert (sw.port, sw.sport, sw.host_data, sw.cert_subject_data) == (6000, 0, b"dst\0", None)
        await s.main.close()
        assert await end == {s.session_id: "switch-host"}
    finally:
        await _closed(src)


async def test_late_connect_is_cancelled() -> None:
    src = await start_server()
    try:
        s = await connect(src.ep, main_caps=SEMI)
        assert await src.server.migrate_info("dst", 6000, timeout=0.01) is False  # nobody answers in time
        await s.main.expect(mm.MigrateBegin, skip=(mm.ChannelsList, mm.MouseMode))
        await s.main.send(mm.MigrateConnected())
        await s.main.expect(mm.MigrateCancel)
    finally:
        await _closed(src)


async def test_client_without_migration_caps_switches_host() -> None:
    src = await start_server()
    try:
        s = await connect(src.ep)  # no SEMI_SEAMLESS cap: no BEGIN at all
        assert await src.server.migrate_info("dst", 6000) is False
        end = asyncio.create_task(src.server.migrate_end(True))
        await s.main.expect(mm.MigrateSwitchHost, skip=(mm.ChannelsList, mm.MouseMode))
        await s.main.close()
        assert await end == {s.session_id: "switch-host"}
    finally:
        await _closed(src)


async def test_seamless_source_flushes_then_sends_data() -> None:
    src = await start_server(seamless_migration=True)
    try:
        s = await connect(src.ep, main_caps=SEAMLESS)
        inputs = await s.link(ChannelType.INPUTS)
        await inputs.expect(im.InputsInit)
        for _ in range(3):
            await inputs.send(im.MouseMotion(dx=1, dy=0, buttons_state=0))
        task = asyncio.create_task(src.server.migrate_info("dst", 6000))
        await s.main.expect(mm.MigrateBeginSeamless, skip=(mm.ChannelsList, mm.MouseMode))
        await s.main.send(mm.MigrateConnectedSeamless())
        assert await task
        end = asyncio.create_task(src.server.migrate_end(True))
        mig = await s.main.expect(Migrate, skip=(mm.ChannelsList, mm.MouseMode))
        assert mig.flags == MigrateFlags.NEED_FLUSH | MigrateFlags.NEED_DATA_TRANSFER
        assert (await inputs.expect(Migrate)).flags == mig.flags
        await s.main.send(MigrateFlushMark())
        await inputs.send(MigrateFlushMark())
        main_data = md.parse(md.MainMigrationData, (await s.main.expect(MigrateData)).data)
        assert main_data.agent_connected is False and main_data.client_tokens == 10
        in_data = md.parse(md.InputsMigrationData, (await inputs.expect(MigrateData)).data)
        assert in_data.motion_count == 3
        await inputs.close()
        await s.main.close()
        assert await end == {s.session_id: "seamless"}
    finally:
        await _closed(src)


async def test_destination_keeps_the_source_id_only_when_accepting() -> None:
    dst = await start_server()
    try:
        with pytest.raises(LinkFailed) as err:  # not accepting a migration: a main link with an id is refused
            await link_channel(dst.ep, ChannelType.MAIN, connection_id=0x1234, channel_caps=SEAMLESS)
        assert err.value.code == LinkErr.BAD_CONNECTION_ID
        dst.server.accept_migration()
        main = await link_channel(dst.ep, ChannelType.MAIN, connection_id=0x1234, channel_caps=SEMI)
        assert await _eventually(lambda: [c.session_id for c in dst.server.clients()] == [0x1234])
        with pytest.raises(LinkFailed) as err:
            await link_channel(dst.ep, ChannelType.INPUTS, connection_id=0x9999)
        assert err.value.code == LinkErr.BAD_CONNECTION_ID
        # a pre-linked channel is held (sends nothing) until the client's MIGRATE_END
        inputs = await link_channel(dst.ep, ChannelType.INPUTS, connection_id=0x1234)
        with pytest.raises(TimeoutError):
            await inputs.recv(timeout=0.2)
        await main.send(mm.ClientMigrateEnd())
        init = await main.expect(mm.Init)
        assert init.session_id == 0x1234
        await inputs.expect(im.InputsInit)
        await main.send(mm.ClientMigrateEnd())  # a second one is a protocol error
        assert await main.closed()
    finally:
        await _closed(dst)


async def _eventually(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Whether ``pred`` holds within ``timeout`` (a server-side state reached after the link)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if pred():
            return True
        await asyncio.sleep(0.01)
    return False


async def test_destination_seamless_handshake_and_data() -> None:
    dst = await start_server(incoming_migration=True, seamless_migration=True)
    try:
        main = await link_channel(dst.ep, ChannelType.MAIN, connection_id=0x4321, channel_caps=SEAMLESS)
        await main.send(mm.MigrateDstDoSeamless(src_version=md.MIGRATION_VERSION + 1))
        await main.expect(mm.MigrateDstSeamlessNack)
        await main.send(mm.MigrateDstDoSeamless(src_version=md.MIGRATION_VERSION))
        await main.expect(mm.MigrateDstSeamlessAck)
        inputs = await link_channel(dst.ep, ChannelType.INPUTS, connection_id=0x4321)
        await inputs.expect(im.InputsInit)
        await inputs.send(ClientMigrateData(data=md.pack(md.InputsMigrationData(motion_count=2))))
        for _ in range(2):  # with the source's 2 motions, the 4th one is acknowledged
            await inputs.send(im.MouseMotion(dx=1, dy=0, buttons_state=0))
        await inputs.expect(im.MouseMotionAck)
        await main.send(ClientMigrateData(data=md.pack(md.MainMigrationData(mouse_mode=2))))
        await main.expect(mm.MouseMode)  # the destination's mode differs: the client is told
        # hostile data closes that channel only
        await inputs.send(ClientMigrateData(data=b"ICMD\x01\0\0\0\0"))
        await main.send(mm.MigrateDstDoSeamless(src_version=1))  # after the start: protocol error
        assert await main.closed()
    finally:
        await _closed(dst)


async def test_destination_bad_main_data_closes_the_channel() -> None:
    dst = await start_server(incoming_migration=True, seamless_migration=True)
    try:
        main = await link_channel(dst.ep, ChannelType.MAIN, connection_id=0x55, channel_caps=SEAMLESS)
        await main.send(mm.MigrateDstDoSeamless(src_version=1))
        await main.expect(mm.MigrateDstSeamlessAck)
        await main.send(ClientMigrateData(data=md.pack(md.InputsMigrationData())))  # another channel's blob
        assert await main.closed()
        assert await _eventually(lambda: dst.server.num_clients == 0)
    finally:
        await _closed(dst)


async def test_a_client_leaving_ends_the_wait() -> None:
    src = await start_server()
    try:
        s = await connect(src.ep, main_caps=SEMI)
        task = asyncio.create_task(src.server.migrate_info("dst", 6000))
        await s.main.expect(mm.MigrateBegin, skip=(mm.ChannelsList, mm.MouseMode))
        await s.main.close()
        assert await asyncio.wait_for(task, 5) is False  # not the 10 s timeout
        assert await src.server.migrate_end(True) == {}
    finally:
        await _closed(src)
