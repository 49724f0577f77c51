"""A display client's side of a seamless migration (worker/display_client.py): the DCMD blob out on
the source, taken in on the destination instead of a DISPLAY_INIT."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from spiceserver.errors import ProtocolError
from spiceserver.proto import migration_data as md
from spiceserver.proto.channel import ChannelConnection
from spiceserver.proto.enums import ChannelType, DisplayCap, MigrateFlags
from spiceserver.proto.link import caps_to_words
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import CLIENT, ClientMigrateData, Message, Migrate, MigrateData, SetAck
from spiceserver.worker.display_client import DisplayChannelClient, DisplayState
from spiceserver.worker.messages import ClientConnected
from spiceserver.worker.worker import DisplayWorker

WORKERS: list[DisplayWorker] = []


@pytest.fixture(autouse=True)
def _close_workers() -> Iterator[None]:
    yield
    while WORKERS:
        WORKERS.pop().dispatcher.close()


def _client(worker: DisplayWorker, migrated: bool) -> tuple[DisplayChannelClient, ChannelConnection]:
    WORKERS.append(worker)
    info = ClientConnected(1, ChannelType.DISPLAY, 0, True, (), caps_to_words({DisplayCap.LZ4_COMPRESSION}), 7, "mig", migrated=migrated)
    dcc = DisplayChannelClient(info, worker.surfaces, worker.monitors_config)
    return dcc, ChannelConnection(ChannelType.DISPLAY, CLIENT, mini_header=True, max_message_size=1 << 28)


def _drain(dcc: DisplayChannelClient, client: ChannelConnection) -> list[Message]:
    out: list[Message] = []
    while dcc.pipe:
        chunk = dcc.produce()
        dcc.written(len(chunk))
        out += [m for m in client.receive_data(chunk) if isinstance(m, Message)]
        dcc.on_data(client.data_to_send())
    return out


def test_source_blob_then_destination_continues_the_glz_ids() -> None:
    worker = DisplayWorker("mig-src")
    src, client = _client(worker, migrated=False)
    client.send(d.DisplayInit(pixmap_cache_id=1, pixmap_cache_size=1 << 20, glz_dictionary_id=1, glz_dictionary_window_size=1 << 18))
    src.on_data(client.data_to_send())
    _drain(src, client)
    assert src.encoder.glz is not None
    src.encoder.glz.last_image_id = 42  # as if 42 GLZ images had gone out
    src.migrate()
    *_, mig, data = _drain(src, client)
    assert isinstance(mig, Migrate) and mig.flags == MigrateFlags.NEED_DATA_TRANSFER
    assert isinstance(data, MigrateData)
    blob = md.parse(md.DisplayMigrationData, data.data)
    assert (blob.pixmap_cache_id, blob.pixmap_cache_size, blob.glz_dictionary_id, blob.glz_window, blob.glz_next_id) == (1, 1 << 20, 1, 1 << 18, 42)

    dst, client = _client(DisplayWorker("mig-dst"), migrated=True)
    assert dst.state is DisplayState.WAIT_MIGRATE_DATA
    client.send(ClientMigrateData(data=data.data))
    dst.on_data(client.data_to_send())
    assert dst.state is DisplayState.READY
    assert dst.encoder.glz is not None and dst.encoder.glz.last_image_id == 42
    msgs = [m for m in _drain(dst, client) if not isinstance(m, SetAck)]
    assert isinstance(msgs[0], d.InvalAllPixmaps)  # the client's pixmap cache starts empty
    assert isinstance(msgs[-1], d.DisplayMark)


def test_destination_refuses_anything_but_its_migration_data() -> None:
    dst, client = _client(DisplayWorker("mig-dst2"), migrated=True)
    client.send(d.DisplayInit(pixmap_cache_id=1, pixmap_cache_size=1, glz_dictionary_id=1, glz_dictionary_window_size=0))
    with pytest.raises(ProtocolError):
        dst.on_data(client.data_to_send())
    dst, client = _client(DisplayWorker("mig-dst3"), migrated=True)
    client.send(ClientMigrateData(data=md.pack(md.InputsMigrationData())))
    with pytest.raises(ProtocolError, match="magic"):
        dst.on_data(client.data_to_send())


def test_uninitialized_client_migrates_without_data() -> None:
    src, client = _client(DisplayWorker("mig-src2"), migrated=False)
    src.migrate()
    msgs = _drain(src, client)
    assert isinstance(msgs[-1], Migrate) and msgs[-1].flags == 0
