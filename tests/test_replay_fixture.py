"""A recorded QXL session (tests/fixtures/replay, made by tools/make_replay_fixture.py) replayed
through a worker with no client: the picture, the tree and a client's byte stream are deterministic."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from spiceserver.proto.channel import ChannelConnection
from spiceserver.proto.enums import ChannelType, DisplayCap
from spiceserver.proto.link import caps_to_words
from spiceserver.proto.messages import display as d
from spiceserver.proto.messages.base import CLIENT
from spiceserver.worker.display_client import DisplayChannelClient
from spiceserver.worker.messages import ClientConnected
from spiceserver.worker.record import replay
from spiceserver.worker.worker import DisplayWorker
from tests.support.display import DisplayState

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "replay"


def load() -> tuple[bytes, dict[str, object]]:
    return gzip.decompress((FIXTURE / "static_desktop.rec.gz").read_bytes()), json.loads((FIXTURE / "static_desktop.json").read_text())


def digest(px: object) -> str:
    import numpy as np

    assert isinstance(px, np.ndarray)
    return hashlib.blake2b(px.astype("<u4").tobytes(), digest_size=16).hexdigest()


def test_replay_reproduces_the_recorded_picture() -> None:
    data, meta = load()
    worker = DisplayWorker("replay-test")
    worker.start()
    try:
        assert replay(data, worker) == meta["records"]
        assert digest(worker.snapshot()) == meta["picture_blake2b"]
        hidden = worker.display_stats()["hidden"]
        assert hidden > 0  # the static desktop paints over its own wallpaper pieces
    finally:
        worker.stop()


def test_replay_through_a_display_client_is_deterministic() -> None:
    """Two replays give the same bytes to a client, and those bytes draw the recorded picture."""
    from spiceserver.codecs import warmup

    warmup.wait(600)  # the codec choice changes once the kernels are compiled: not during the two replays
    data, meta = load()
    streams = []
    for _ in range(2):
        worker = DisplayWorker("replay-dcc")
        info = ClientConnected(1, ChannelType.DISPLAY, 0, True, (), caps_to_words({DisplayCap.LZ4_COMPRESSION, DisplayCap.MONITORS_CONFIG}), 1, "replay")
        dcc = DisplayChannelClient(info, worker.surfaces, worker.monitors_config)
        client = ChannelConnection(ChannelType.DISPLAY, CLIENT, mini_header=True, max_message_size=1 << 28)
        client.send(d.DisplayInit(pixmap_cache_id=1, pixmap_cache_size=1 << 20, glz_dictionary_id=1, glz_dictionary_window_size=0))
        worker.dccs[1] = dcc
        dcc.on_data(client.data_to_send())
        out = bytearray()
        # replay on this thread (the worker thread is not started): a worker with one client
        replay(data, worker)
        while dcc.pipe:
            chunk = dcc.produce()
            out += chunk
            dcc.written(len(chunk))
            client.receive_data(chunk)
            dcc.on_data(client.data_to_send())  # the client's ACKs keep the window open
        streams.append(bytes(out))
        state = DisplayState()
        check = ChannelConnection(ChannelType.DISPLAY, CLIENT, mini_header=True, max_message_size=1 << 28)
        for msg in check.receive_data(bytes(out)):
            state.apply(msg)  # type: ignore[arg-type]
        assert digest(state.surfaces[0].pixels) == meta["picture_blake2b"]
        worker.dispatcher.close()
    assert streams[0] == streams[1]
