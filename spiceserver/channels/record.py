"""Record channel: the client's microphone, raw or Opus, decoded to PCM for a host callback.

Counterpart of the record half of spice ``server/sound.cpp`` (``RecordChannel``,
``RecordChannelClient::init`` / ``handle_message``, ``snd_record_handle_write``,
``spice_server_record_start`` / ``_stop`` / ``_set_volume`` / ``_set_mute``) and of spice-common
``common/snd_codec.c`` for the decoding (:mod:`spiceserver.codecs.opus`). The client's side is
spice-gtk ``src/channel-record.c``.

Server to client: RECORD_START (2 channels, S16, 48000 Hz) and RECORD_STOP when the host opens or
closes its microphone (:meth:`RecordChannel.start` / :meth:`~RecordChannel.stop`), RECORD_VOLUME
and RECORD_MUTE (to clients with ``RECORD_CAP_VOLUME``). A client connecting gets, as
``RecordChannelClient::init``: VOLUME and MUTE if the host ever set a volume, then START if the
host's record is active.

Client to server: MODE (RAW always; OPUS only when the server offered ``RECORD_CAP_OPUS``, which it
does when :func:`~spiceserver.codecs.opus.opus_available`; anything else closes that client, as
libspice's ``"unsupported mode"``), START_MARK (its time is kept, nothing else), DATA (the
payload in the client's mode; before any MODE the mode is RAW, libspice's default). A raw DATA may
have any length up to the ring's size: a trailing partial stereo sample waits for the client's next
DATA, so the PCM stays aligned. An Opus DATA is one packet, decoded by the client's own
:class:`~spiceserver.codecs.opus.OpusDecoder`; one that does not decode closes that client
(libspice: ``snd_codec_decode`` fails, ``handle_message`` returns false). DATA received while the
host's record is stopped is dropped, as libspice resets its ring at start.

Delivery (libspice's pull API ``spice_server_record_get_samples`` becomes a push): decoded PCM goes
into the channel's :class:`~spiceserver.channels.record_ring.RecordRing` (8192 samples, 170 ms),
and the channel hands what the ring holds to ``on_data(pcm)`` in order:

* a sync callback is called on the event loop, inside the client's message handling: each DATA's
  PCM at once;
* a callback that returns an awaitable is awaited by one delivery task per channel, which then
  takes everything the ring gathered meanwhile (whole samples, one call). The read loop only
  writes into the ring: a slow callback never blocks it, and when the callback falls more than
  the ring behind the oldest samples are lost (libspice's overflow rule), counted
  (:attr:`RecordChannel.lost_samples`, and in :meth:`RecordChannel.stats`) and logged once per overflow episode (until delivery catches up).

Memory is bounded by the ring whatever the client's rate (a flood faster than real time only loses
samples). **No priming**: libspice's ring gives nothing until half full (85 ms), a cushion for a
host that polls on a timer; a push consumer wants the samples with the least latency and can keep
its own cushion, so the ring here is ``RecordRing(prime=False)``.

Events (``on_event(RecordEvent)``, sync or async, delivered in order with the data): ``"start"``
when a client begins a stream while the host records (its MODE, or its first DATA without one),
``"stop"`` after its last samples, when the host stops or the client leaves.

libspice serves one client per sound channel (``SndChannel::set_peer_common`` drops the previous
one); here a session is one client already, so the channel serves whichever clients are linked
and delivers each one's PCM.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..codecs.opus import FRAME_BYTES, FRAME_SAMPLES, OpusDecoder, opus_available
from ..errors import OpusUnavailable, ProtocolError
from ..metrics import SoundMetrics
from ..proto.channel import ChannelConnection
from ..proto.channel_client import StateTable
from ..proto.enums import AudioDataMode, AudioFmt, ChannelType, RecordCap
from ..proto.messages import record as rm
from .audio_frames import volume_levels
from .base import ChannelClient, Link, LoopChannel, ServerContext
from .host_agent import ClientVolumeHandler, add_client_volume_handler
from .record_ring import RECORD_SAMPLES_SIZE, SAMPLE_BYTES, RecordRing
from .session import Session

__all__ = ["RecordChannel", "RecordChannelClient", "RecordEvent", "RECORD_FREQ", "RECORD_CHANNELS"]

log = logging.getLogger("spiceserver")

#: the record rate (``SND_CODEC_OPUS_PLAYBACK_FREQ``, ``spice_server_get_best_record_rate``)
RECORD_FREQ = 48000
#: stereo (``SND_CODEC_RECORD_CHAN``)
RECORD_CHANNELS = 2

_MODE_NAMES = {AudioDataMode.RAW: "raw", AudioDataMode.OPUS: "opus"}
_said_no_opus = False


def _say_no_opus_once() -> None:
    global _said_no_opus
    if not _said_no_opus:
        _said_no_opus = True
        log.info("record: Opus is unavailable (install spiceserver[video] for PyAV): clients send raw audio")

DataCallback = Callable[[bytes], "Awaitable[None] | None"]
EventCallback = Callable[["RecordEvent"], "Awaitable[None] | None"]


@dataclass(frozen=True)
class RecordEvent:
    """A client's record stream began or ended.

    Attributes:
        kind: ``"start"`` (its MODE, or first DATA, while the host records) or ``"stop"`` (the
            host stopped, or the client left; delivered after its last PCM).
        mode: the stream's mode, ``"raw"`` or ``"opus"``.
        session: the client's session id.
    """

    kind: Literal["start", "stop"]
    mode: Literal["raw", "opus"]
    session: int


class RecordChannel(LoopChannel):
    """The record channel: the clients' microphones, delivered to ``on_data`` as 48 kHz S16LE stereo.

    Args:
        ctx: the server services.
        on_data: ``on_data(pcm: bytes)``, sync or async (see the module docstring).
        on_event: ``on_event(RecordEvent)``, sync or async, or None.
        channel_id: the channel id.
    """

    TYPE = ChannelType.RECORD
    #: a DATA larger than the ring (4-byte time + 8192 samples) closes the client: libspice clips
    #: such a packet to the ring anyway, and spice-gtk sends 10 ms (1920 bytes) at a time
    MAX_MESSAGE_SIZE = 4 + RECORD_SAMPLES_SIZE * SAMPLE_BYTES

    def __init__(
        self,
        ctx: ServerContext,
        on_data: DataCallback,
        on_event: EventCallback | None = None,
        channel_id: int = 0,
    ) -> None:
        self.opus = opus_available()
        if not self.opus:
            _say_no_opus_once()
        caps = (RecordCap.VOLUME, RecordCap.OPUS) if self.opus else (RecordCap.VOLUME,)
        super().__init__(ctx, channel_id, caps)
        self.on_data = on_data
        self.on_event = on_event
        self._lock = threading.RLock()  # a sync callback may call stop() from inside start()
        self._recording = False  # as the host last asked (any thread)
        self.active = False  # as the clients were told (event loop)
        self._volume: tuple[int, ...] = ()
        self._mute = False
        self._ring = RecordRing(prime=False)
        #: events waiting for the ring to be delivered up to their position (``write_pos``)
        self._events: deque[tuple[int, RecordEvent]] = deque()
        self._busy = False  # delivering (inline, or the delivery task)
        self._task: asyncio.Task[None] | None = None
        self._overflowing = False
        self._lost_at_overflow = 0
        #: decoded PCM bytes received (while recording or not), for the frame count
        self.pcm_bytes = 0
        #: DATA payload bytes received
        self.data_bytes = 0
        #: decoded PCM bytes of clients other than the :attr:`speaker`, not delivered
        self.unheard_bytes = 0

    @property
    def speaker(self) -> RecordChannelClient | None:
        """The client whose microphone the host hears: the first connected (several owners on one
        VM, ``max_clients`` > 1: one microphone, as libspice records one client); when it leaves,
        the next. The others' PCM is decoded (their Opus state stays right) and dropped."""
        return next((cc for cc in self.clients if isinstance(cc, RecordChannelClient)), None)

    def create_client(self, conn: ChannelConnection, link: Link, session: Session) -> RecordChannelClient:
        """A client's record channel."""
        link.log.info("channel linked to session %#x", session.id)
        return RecordChannelClient(self, conn, link, session)

    # --- host API (any thread) ---------------------------------------------------------------

    @property
    def recording(self) -> bool:
        """The host's microphone is open (:meth:`start` called last, not :meth:`stop`)."""
        return self._recording

    @property
    def volume(self) -> tuple[int, ...]:
        """The volume the host set last, one u16 per channel; empty if never set."""
        return self._volume

    @property
    def mute(self) -> bool:
        """The mute state the host set last."""
        return self._mute

    def start(self) -> None:
        """The guest opened its microphone: RECORD_START to every client (libspice
        ``spice_server_record_start``). Idempotent."""
        with self._lock:
            self._recording = True
            self.ctx.gate.run(lambda: self._set_active(True))

    def stop(self) -> None:
        """The guest closed its microphone: RECORD_STOP to every client; each stream gets its
        ``"stop"`` event after its last PCM (libspice ``spice_server_record_stop``). Idempotent."""
        with self._lock:
            self._recording = False
            self.ctx.gate.run(lambda: self._set_active(False))

    def set_volume(self, volume: tuple[int, ...] | list[int]) -> None:
        """RECORD_VOLUME to clients with the VOLUME cap; remembered for clients that come later.

        Args:
            volume: one u16 per channel (usually ``(left, right)``), 1 to 255 channels.

        Raises:
            ValueError: no channel, too many, or a value outside 0..65535.
        """
        vol = volume_levels(volume)
        with self._lock:
            self._volume = vol
            self.broadcast(lambda cc: cc.send_volume(vol))

    def set_mute(self, mute: bool) -> None:
        """RECORD_MUTE to clients with the VOLUME cap; remembered for clients that come later (sent
        on connect only once a volume was set, as libspice)."""
        with self._lock:
            self._mute = bool(mute)
            self.broadcast(lambda cc: cc.send_mute(bool(mute)))

    @property
    def lost_samples(self) -> int:
        """Stereo samples lost to the full ring since the channel was created."""
        return self._ring.lost

    def on_client_volume(self, callback: ClientVolumeHandler) -> Callable[[], None]:
        """Call ``callback(ClientVolume)`` when a client tells its own capture volume and mute
        (VD_AGENT_AUDIO_VOLUME_SYNC through the host agent; see ``PlaybackChannel.on_client_volume``).
        Returns a function that removes the callback."""
        return add_client_volume_handler(self.ctx.host_agent, False, callback)

    def sound_metrics(self) -> SoundMetrics:
        """The channel's counters: 10 ms frames received (1920 bytes of decoded PCM each), DATA
        payload bytes, 10 ms frames' worth of samples lost to the full ring, each client's mode."""
        clients = tuple(cc.mode_name for cc in list(self.clients) if isinstance(cc, RecordChannelClient))
        return SoundMetrics(
            "record", self.id, self.pcm_bytes // FRAME_BYTES, self._ring.lost // FRAME_SAMPLES, self.data_bytes, clients
        )

    # --- event loop ------------------------------------------------------------------------------

    def _set_active(self, active: bool) -> None:
        if active == self.active:
            return
        self.active = active
        for cc in list(self.clients):
            if isinstance(cc, RecordChannelClient) and not cc.closed and cc.transport is not None:
                if active:
                    cc.send_start()
                else:
                    cc.send_stop()
                    cc.end_stream()
                cc.transport.flush()
        self.pump()

    def put(self, pcm: bytes) -> None:
        """Decoded whole-sample PCM from a client, for the host (event loop)."""
        lost = self._ring.put(pcm)
        if lost and not self._overflowing:
            self._overflowing = True
            self._lost_at_overflow = self._ring.lost - lost
            log.warning(
                "record: the host's on_data is slower than real time; the oldest samples are lost (ring of %d samples)",
                self._ring.size,
            )
        self.pump()

    def queue_event(self, kind: Literal["start", "stop"], mode: Literal["raw", "opus"], session: int) -> None:
        """Deliver ``RecordEvent(kind, mode, session)`` after the PCM received so far (event loop)."""
        if self.on_event is not None:
            self._events.append((self._ring.write_pos, RecordEvent(kind, mode, session)))
            self.pump()

    def _next(self) -> bytes | RecordEvent | None:
        """The next thing to deliver, in order: PCM up to the next event, then that event."""
        ring = self._ring
        if self._events:
            at, ev = self._events[0]
            if ring.read_pos >= at:
                self._events.popleft()
                return ev
            return ring.read(at - ring.read_pos)
        if ring.available:
            return ring.read(ring.available)
        if self._overflowing:
            self._overflowing = False
            log.info("record: delivery caught up; %d samples were lost", ring.lost - self._lost_at_overflow)
        return None

    def _call(self, item: bytes | RecordEvent) -> Any:
        try:
            if isinstance(item, RecordEvent):
                return self.on_event(item) if self.on_event is not None else None
            return self.on_data(item)
        except Exception:
            log.exception("record: error in the host's %s callback", "on_event" if isinstance(item, RecordEvent) else "on_data")
            return None

    def pump(self) -> None:
        """Hand what is waiting to the host callbacks: sync ones now, an awaitable result to the
        delivery task, which goes on from there (event loop)."""
        if self._busy:
            return  # the running delivery takes it
        self._busy = True
        while (item := self._next()) is not None:
            result = self._call(item)
            if inspect.isawaitable(result):
                self._task = asyncio.get_running_loop().create_task(self._deliver(result))
                return
        self._busy = False

    async def _deliver(self, pending: Awaitable[Any] | None) -> None:
        try:
            while True:
                if pending is not None:
                    try:
                        await pending
                    except Exception:
                        log.exception("record: error in a host callback")
                item = self._next()
                if item is None:
                    return
                result = self._call(item)
                pending = result if inspect.isawaitable(result) else None
        finally:
            self._busy = False
            self._task = None

    async def close(self) -> None:
        """The server is closing: stop the delivery task."""
        task = self._task
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass


class RecordChannelClient(ChannelClient):
    """One client's record channel: its mode, its Opus decoder, its stream state."""

    def __init__(self, channel: RecordChannel, conn: ChannelConnection, link: Link, session: Session) -> None:
        super().__init__(conn, link, session)
        self.channel = channel
        self.tables = {
            None: StateTable(
                {
                    rm.RecordMode: self._on_mode,
                    rm.RecordStartMark: self._on_start_mark,
                    rm.RecordData: self._on_data,
                }
            )
        }
        self.mode = AudioDataMode.RAW  # libspice's default before any MODE
        self.decoder: OpusDecoder | None = None
        self.streaming = False  # a "start" event went out, its "stop" not yet
        self.mode_time = 0
        self.start_time = 0
        self._partial = b""  # a raw partial stereo sample (< 4 bytes)

    @property
    def mode_name(self) -> Literal["raw", "opus"]:
        """``"raw"`` or ``"opus"``."""
        return "opus" if self.mode == AudioDataMode.OPUS else "raw"

    # --- to the client -------------------------------------------------------------------------

    async def start(self, now: float) -> None:
        """As ``RecordChannelClient::init``: VOLUME and MUTE if a volume was set, START if active."""
        ch = self.channel
        if ch.volume:
            self.send_volume(ch.volume)
            self.send_mute(ch.mute)
        if ch.active:
            self.send_start()

    def send_start(self) -> None:
        """RECORD_START: stereo S16 at 48 kHz."""
        self._partial = b""
        self.conn.send(rm.RecordStart(channels=RECORD_CHANNELS, format=AudioFmt.S16, frequency=RECORD_FREQ))

    def send_stop(self) -> None:
        """RECORD_STOP."""
        self.conn.send(rm.RecordStop())

    def send_volume(self, volume: tuple[int, ...]) -> None:
        """RECORD_VOLUME, if the client has the VOLUME cap (libspice ``snd_send_volume``)."""
        if self.has_channel_cap(RecordCap.VOLUME):
            self.conn.send(rm.RecordVolume(volume=volume))

    def send_mute(self, mute: bool) -> None:
        """RECORD_MUTE, if the client has the VOLUME cap (libspice ``snd_send_mute``)."""
        if self.has_channel_cap(RecordCap.VOLUME):
            self.conn.send(rm.RecordMute(mute=int(mute)))

    # --- from the client -----------------------------------------------------------------------

    def _begin_stream(self) -> None:
        if not self.streaming and self.channel.active and self.channel.speaker is self:
            self.streaming = True
            self.log.info("record stream starts (%s)", self.mode_name)
            self.channel.queue_event("start", self.mode_name, self.session.id)

    def end_stream(self) -> None:
        """The stream ended (host stop, or the client left): its ``"stop"`` event, after its PCM."""
        self._partial = b""
        if self.streaming:
            self.streaming = False
            self.channel.queue_event("stop", self.mode_name, self.session.id)

    def _on_mode(self, msg: rm.RecordMode, now: float) -> None:
        """libspice ``handle_message`` RECORD_MODE: RAW always, OPUS if offered and decodable."""
        try:
            mode = AudioDataMode(msg.mode)
        except ValueError:
            raise ProtocolError(f"unsupported record mode {msg.mode}") from None
        if mode == AudioDataMode.OPUS:
            if not self.channel.opus:
                raise ProtocolError("the client chose Opus, which the server does not offer")
            try:
                decoder = OpusDecoder()
            except OpusUnavailable as exc:
                raise ProtocolError(f"cannot create an Opus decoder: {exc}") from exc
        elif mode == AudioDataMode.RAW:
            decoder = None
        else:
            raise ProtocolError(f"unsupported record mode {int(mode)} ({mode.name})")
        if self.decoder is not None:
            self.decoder.close()
        if self.streaming and mode != self.mode:
            self.log.info("record stream switches to %s", _MODE_NAMES[mode])
        self.decoder = decoder
        self.mode = mode
        self.mode_time = msg.time
        self._partial = b""
        self._begin_stream()

    def _on_start_mark(self, msg: rm.RecordStartMark, now: float) -> None:
        self.start_time = msg.time

    def _on_data(self, msg: rm.RecordData, now: float) -> None:
        """libspice ``snd_record_handle_write``: decode, then into the ring (while recording)."""
        ch = self.channel
        payload = msg.data
        ch.data_bytes += len(payload)
        if self.decoder is not None:
            pcm = self.decoder.decode(payload)  # OpusDecodeError is a ProtocolError
        else:
            if self._partial:
                payload = self._partial + payload
            whole = len(payload) - len(payload) % SAMPLE_BYTES
            self._partial = payload[whole:]
            pcm = payload[:whole]
        ch.pcm_bytes += len(pcm)
        if not ch.active:
            self._partial = b""
            return
        if ch.speaker is not self:
            ch.unheard_bytes += len(pcm)
            return
        self._begin_stream()
        if pcm:
            ch.put(pcm)

    async def on_close(self) -> None:
        """The client left: its stream ends, its decoder goes."""
        self.end_stream()
        if self.decoder is not None:
            self.decoder.close()
            self.decoder = None
