"""Playback channel: the guest's speakers, to every connected client (raw or Opus).

Counterpart of the playback half of spice ``server/sound.cpp`` (``PlaybackChannel``,
``PlaybackChannelClient``, ``spice_server_playback_start`` / ``_stop`` / ``_put_samples`` /
``_set_volume`` / ``_set_mute``, ``snd_set_playback_latency``, ``snd_set_playback_compression``)
and of the mm-time hand-over in ``reds.cpp`` (``reds_disable_mm_time`` / ``reds_enable_mm_time``).

What the host sees is :class:`PlaybackChannel` (``speaker = server.add_playback()``): start, write
S16LE stereo 48 kHz PCM of any length, stop, volume and mute, from any thread. The wire rules live
in sans-IO helpers: :class:`~spiceserver.channels.audio_frames.PcmFramer` cuts the host's PCM into
10 ms frames stamped with the server's mm-time at ``write``, and one
:class:`~spiceserver.channels.playback_state.PlaybackClientState` per client holds libspice's
command bitmask (MODE, DATA, START/STOP, VOLUME, MUTE, LATENCY in that order) and the real-time
rule (at most three frames held per client; a late frame is dropped, never queued).

Theory of operation
-------------------

*Threads.* Host calls take one lock, update the host-side state the next client will be built
from (playing, volume, mute), frame and stamp PCM, and post the change to the event loop through
the server's :class:`~spiceserver.transport.LoopGate` while still holding the lock, so changes
reach the loop in the order the host made them, whatever thread made them.

*Pumping.* On the loop each change is applied to every client's state, then the client is
pumped: every pending message is marshalled and written at once. Frames are pumped one at a
time, as libspice pushes each ``put_samples``: a burst goes out as fast as the socket takes it.
What counts as in flight is what the socket has not sent yet (the asyncio transport's write
buffer); while three frames are stuck there, new ones are dropped as late. Opus packets are
encoded when a frame goes out, by a per-client encoder, so a dropped frame costs nothing.

*Mode.* Opus when ``ServerConfig.playback_compression`` is on, the client has the OPUS cap and
Opus is available (PyAV with libopus, :func:`~spiceserver.codecs.opus.opus_available`); the channel
advertises the OPUS cap only then. Without PyAV the server plays raw and says so once in the log.

*The clock.* While the stream plays and a client is connected the channel owns the server's
:class:`~spiceserver.mmtime.MediaClock` (libspice disables its MAIN_MULTI_MEDIA_TIME then: the audio
timestamps drive the client's clock, and video frames stamped from the same clock stay in sync).
A video stream's latency request then reaches the clients with the LATENCY cap as
PLAYBACK_LATENCY. Stopping, or the last client leaving, hands the clock back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..codecs.opus import OpusEncoder, opus_available
from ..metrics import SoundMetrics
from ..mmtime import ClockBusyError
from ..proto.channel import ChannelConnection
from ..proto.enums import AudioDataMode, ChannelType, PlaybackCap
from ..proto.link import words_to_caps
from ..proto.messages.playback import PlaybackData
from .audio_frames import FRAME_BYTES, PcmFramer, volume_levels
from .base import ChannelClient, Link, LoopChannel, ServerContext
from .host_agent import ClientVolumeHandler, add_client_volume_handler
from .playback_state import Encoder, PlaybackClientState

if TYPE_CHECKING:
    from .session import Session

__all__ = ["PlaybackChannel", "PlaybackChannelClient"]

log = logging.getLogger("spiceserver")

_MODE_NAMES = {AudioDataMode.RAW: "raw", AudioDataMode.OPUS: "opus"}
_warned_no_opus = False


def _warn_no_opus_once() -> None:
    global _warned_no_opus
    if not _warned_no_opus:
        _warned_no_opus = True
        log.warning(
            "playback compression is on but Opus is unavailable (install spiceserver[video] for PyAV): playing raw audio"
        )


class PlaybackChannel(LoopChannel):
    """The guest's speakers: one PLAYBACK channel and its clients. Every method is safe from any thread.

    Args:
        ctx: the server services.
        channel_id: the channel id (QEMU has one playback channel, id 0).
    """

    TYPE = ChannelType.PLAYBACK
    #: the client sends nothing of its own on this channel (libspice's receive buffer is 4 KiB)
    MAX_MESSAGE_SIZE = 4096

    def __init__(self, ctx: ServerContext, channel_id: int = 0) -> None:
        self.opus = opus_available()
        caps = (PlaybackCap.VOLUME, PlaybackCap.OPUS) if self.opus else (PlaybackCap.VOLUME,)
        super().__init__(ctx, channel_id, caps)
        self._lock = threading.Lock()
        self._framer = PcmFramer()
        self._compression = ctx.config.playback_compression
        self._playing = False
        self._volume: tuple[int, ...] = ()
        self._mute: bool | None = None
        self._owns_clock = False
        self._latency_ms: int | None = None  # the last request passed on while owning the clock
        # counters over all clients, past and present (loop-side but for the two framer ones)
        self._frames = 0
        self._bytes = 0
        self._dropped = 0
        self._ignored = 0  # host frames written while stopped
        if self._compression and not self.opus:
            _warn_no_opus_once()

    # --- host API (any thread) -------------------------------------------------------------------

    @property
    def playing(self) -> bool:
        """Whether the host's stream plays (between :meth:`start` and :meth:`stop`)."""
        return self._playing

    @property
    def volume(self) -> tuple[int, ...]:
        """The volume last set per channel (u16 each); empty if never set."""
        return self._volume

    @property
    def mute(self) -> bool:
        """Whether the host muted the speakers."""
        return bool(self._mute)

    def start(self) -> None:
        """The guest's stream starts (libspice ``spice_server_playback_start``): clients get START."""
        with self._lock:
            if self._playing:
                return
            self._playing = True
            self.ctx.gate.run(self._apply_start)

    def stop(self) -> None:
        """The stream stops: what is left of a partial frame goes out padded with silence, then STOP."""
        with self._lock:
            if not self._playing:
                return
            frames = self._framer.flush()
            self._playing = False
            self.ctx.gate.run(lambda: self._apply_stop(frames))

    def write(self, pcm: bytes | bytearray | memoryview) -> None:
        """Play S16LE interleaved stereo 48 kHz PCM of any length (ignored while stopped).

        Whole 10 ms frames go out as soon as they are complete, each stamped with the server's
        mm-time of this call; the rest waits for the next write. Pace writes in real time: at most
        three frames are held per client, and older ones are dropped as late.
        """
        with self._lock:
            if not self._playing:
                self._ignored += len(pcm) // FRAME_BYTES
                return
            frames = self._framer.write(pcm, self.ctx.clock.now())
            if frames:
                self.ctx.gate.run(lambda: self._apply_frames(frames))

    def set_volume(self, volume: Sequence[int]) -> None:
        """The guest's volume per channel, u16 each (libspice ``spice_server_playback_set_volume``).

        Raises:
            ValueError: no channel, more than 255, or a value outside 0..65535.
        """
        vol = volume_levels(volume)
        with self._lock:
            self._volume = vol
            self.ctx.gate.run(lambda: self._each(lambda st: st.set_volume(vol)))

    def set_mute(self, mute: bool) -> None:
        """Mute or unmute the guest's speakers on the clients (libspice ``..._set_mute``)."""
        with self._lock:
            self._mute = bool(mute)
            self.ctx.gate.run(lambda: self._each(lambda st: st.set_mute(bool(mute))))

    def on_client_volume(self, callback: ClientVolumeHandler) -> Callable[[], None]:
        """Call ``callback(ClientVolume)`` when a client tells its own playback volume and mute
        (VD_AGENT_AUDIO_VOLUME_SYNC, answered by the host agent while no guest agent is attached;
        sync or async, on the event loop). Returns a function that removes the callback."""
        return add_client_volume_handler(self.ctx.host_agent, True, callback)

    def set_compression(self, on: bool) -> None:
        """Change ``playback_compression`` at run time; clients whose mode changes get MODE again."""
        with self._lock:
            self._compression = bool(on)
            if on and not self.opus:
                _warn_no_opus_once()
            self.ctx.gate.run(lambda: self._each(lambda st: st.set_compression(bool(on))))

    def sound_metrics(self) -> SoundMetrics:
        """The channel's counters and its clients' modes."""
        clients = [cc for cc in self.clients if isinstance(cc, PlaybackChannelClient)]
        return SoundMetrics(
            channel="playback",
            id=self.id,
            frames=self._frames,
            dropped=self._dropped + self._framer.dropped + sum(cc.audio.dropped for cc in clients),
            bytes=self._bytes,
            clients=tuple(_MODE_NAMES.get(cc.audio.mode, "raw") for cc in clients),
        )

    # --- loop side -------------------------------------------------------------------------------

    def create_client(self, conn: ChannelConnection, link: Link, session: Session) -> PlaybackChannelClient:
        """A client's playback channel, starting from the host's present state (a late client joins
        a playing stream); it gets its own Opus encoder when it will play Opus."""
        encoder: Encoder | None = None
        if self.opus and PlaybackCap.OPUS in words_to_caps(link.mess.channel_caps):
            encoder = OpusEncoder().encode
        with self._lock:  # the host state this client starts from
            state = PlaybackClientState(
                words_to_caps(link.mess.channel_caps),
                compression=self._compression,
                encode=encoder,
                active=self._playing,
                volume=self._volume,
                mute=self._mute,
            )
        if self._latency_ms is not None:
            state.set_latency(self._latency_ms)
        return PlaybackChannelClient(self, conn, link, session, state)

    def _clients(self) -> list[PlaybackChannelClient]:
        return [cc for cc in self.clients if isinstance(cc, PlaybackChannelClient) and not cc.closed]

    def _each(self, change: Callable[[PlaybackClientState], object]) -> None:
        for cc in self._clients():
            change(cc.audio)
            cc.pump()

    def _apply_start(self) -> None:
        self._each(lambda st: st.start())
        self.update_clock()

    def _apply_stop(self, frames: list[tuple[bytes, int]]) -> None:
        self._apply_frames(frames)
        self._each(lambda st: st.stop())
        self.update_clock()

    def _apply_frames(self, frames: list[tuple[bytes, int]]) -> None:
        clients = self._clients()
        for pcm, mm in frames:
            for cc in clients:
                cc.audio.frame(pcm, mm)
                cc.pump()

    def count_data(self, nbytes: int) -> None:
        """A client was sent one DATA of ``nbytes`` of audio (loop)."""
        self._frames += 1
        self._bytes += nbytes

    def client_gone(self, cc: ChannelClient) -> None:
        """Keep the client's drop count; hand the clock back if it was the last one playing."""
        if isinstance(cc, PlaybackChannelClient):
            self._dropped += cc.audio.dropped
        self.update_clock()

    def update_clock(self) -> None:
        """Own the multimedia clock while the stream plays to a client, hand it back otherwise (loop)."""
        want = any(cc.audio.client_active for cc in self._clients())
        clock = self.ctx.clock
        if want and not self._owns_clock:
            try:
                clock.take(self)
            except ClockBusyError:
                log.info("playback %d plays while another channel owns the multimedia clock", self.id)
                return
            self._owns_clock = True
        elif not want and self._owns_clock:
            self._owns_clock = False
            self._latency_ms = None
            clock.release(self, "playback stopped")

    def on_latency_request(self, ms: int, reason: str) -> None:
        """A video stream asks for ``ms`` of latency while sound plays (libspice
        ``snd_set_playback_latency``): PLAYBACK_LATENCY to clients with the LATENCY cap. Called with
        the clock's lock held, from any thread: the work is posted to the loop."""

        def apply() -> None:
            if self._owns_clock and ms != self._latency_ms:  # encoders repeat themselves; clients only store it
                self._latency_ms = ms
                self._each(lambda st: st.set_latency(ms))

        self.ctx.gate.run(apply)

    async def close(self) -> None:
        """The server closes: hand the clock back."""
        if self._owns_clock:
            self._owns_clock = False
            self.ctx.clock.release(self, "server closing")


class PlaybackChannelClient(ChannelClient):
    """One client of the playback channel: its :class:`PlaybackClientState`, pumped at once."""

    def __init__(
        self,
        channel: PlaybackChannel,
        conn: ChannelConnection,
        link: Link,
        session: Session,
        state: PlaybackClientState,
    ) -> None:
        super().__init__(conn, link, session)
        self.channel = channel
        self.audio = state
        self._taken = 0  # bytes handed to the transport
        self._sent = 0  # bytes the socket took (taken minus what its buffer holds)

    async def start(self, now: float) -> None:
        """MODE, then VOLUME / MUTE / START as the host's state says (libspice ``PlaybackChannelClient::init``)."""
        mode = _MODE_NAMES.get(self.audio.mode, "raw")
        self.log.info("playback client: %s audio%s", mode, ", stream active" if self.audio.active else "")
        self.pump(flush=False)
        self.channel.update_clock()

    def take_output(self) -> bytes:
        """The marshalled bytes for the transport, counted so frames know when they leave."""
        data = self.conn.data_to_send()
        self._taken += len(data)
        self.audio.taken(len(data))
        return data

    def pump(self, flush: bool = True) -> None:
        """Marshal every pending message (event loop), then write it unless ``flush`` is False (the
        channel's serve loop writes after :meth:`start`)."""
        if self.closed:
            return
        self._note_sent()
        clock = self.channel.ctx.clock
        while (msg := self.audio.next_message(clock.now())) is not None:
            self.conn.send(msg)
            if isinstance(msg, PlaybackData):
                self.channel.count_data(len(msg.data))
            if flush and self.transport is not None:
                self.transport.flush()
        if flush and self.transport is not None:
            self.transport.flush()
        self._note_sent()

    def _note_sent(self) -> None:
        unsent = self.transport.unsent if self.transport is not None else 0
        sent = max(self._sent, self._taken - unsent)
        if sent > self._sent:
            self.audio.written(sent - self._sent)
            self._sent = sent

    async def on_close(self) -> None:
        """Nothing is in flight any more."""
        self.audio.disconnect()
