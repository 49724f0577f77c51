"""One playback client's pending messages, drained in libspice's order (sans-IO: times are arguments).

Counterpart of spice ``server/sound.cpp``: the ``PersistentPipeItem`` and ``command`` bitmask of
``SndChannelClient``, ``PlaybackChannelClient::send_item`` and ``::init``,
``spice_server_playback_start`` / ``_stop`` / ``_set_volume`` / ``_set_mute`` / ``_put_samples``,
``snd_set_playback_latency``, ``snd_set_playback_compression`` and ``snd_desired_audio_mode``; the
Opus framing is spice-common ``common/snd_codec.c``. It builds the proto message objects of
:mod:`spiceserver.proto.messages.playback` and needs no codec: the caller passes an encode callback.

Theory of operation
-------------------

*One pipe item, a bitmask.* libspice never queues sound messages: a client has one pending
"command" bitmask, and each push sends the first pending command in a fixed order -- MODE, PCM
(a DATA), CTRL (START or STOP, whichever the stream is in when it goes out), VOLUME, MUTE, MIGRATE,
LATENCY. :meth:`PlaybackClientState.next_message` is that push: one message per call, None when
nothing is pending. Setting a command twice before it goes out sends it once, with the latest value.

*On connect* (the constructor, ``PlaybackChannelClient::init``): MODE; VOLUME if the host ever set a
volume; MUTE if it ever set a volume (libspice) or a mute (here too: a muted host stays muted for a
late client); then START if the stream is active, so a late client joins a playing stream.
VOLUME and MUTE need the client's VOLUME capability (spice-gtk has it); without it they are skipped.

*Start and stop.* START is pending while the client has not been told the stream plays. A stop
before that START went out cancels it and drops the unsent frames (nothing reaches the client); a
stop after it sends STOP after the frames already queued. DATA never goes out before the START of
its stream: libspice relies on the push running at once, a sans-IO state cannot, so PCM waits for
the START (this is the one place the order is not the bare bitmask order).

*Frames are real time.* At most :data:`NUM_AUDIO_FRAMES` = 3 frames are held per client, counting
those queued and those handed out as DATA whose bytes the transport has not written yet.
:meth:`~PlaybackClientState.frame` while full drops the oldest queued frame, or the new one when all
three are on their way: a late frame is dropped, never queued (:attr:`~PlaybackClientState.dropped`).
Frames while the stream is stopped are ignored (libspice asserts it cannot happen).

*When is a frame gone.* As the display client counts bytes in flight, a frame stays in flight until
the transport wrote the last byte of its DATA. The caller reports the bytes it takes from the
connection with :meth:`~PlaybackClientState.taken` (after marshalling what ``next_message`` gave)
and the bytes the transport wrote with :meth:`~PlaybackClientState.written`: a DATA handed out
before a ``taken(n)`` ends at most at that take's end offset, and is gone once ``written`` reaches
it. Other bytes on the connection (pings, acks) are counted too, so the offsets stay exact.

*Mode.* Opus when the server's ``playback_compression`` is on, the client has the OPUS capability
and an encoder is available (``encode`` given); raw otherwise (libspice falls back to raw when the
encoder cannot be created). :meth:`~PlaybackClientState.set_compression` at run time sends MODE
again if the mode changes; during a stream it sends STOP, MODE, START (a departure from libspice,
which sends MODE alone: spice-gtk makes its decoder at START, so it could not play the new mode). DATA carries the 1920-byte frame (raw) or ``encode(frame)``, one Opus
packet (opus): frames are encoded when they go out, so a dropped frame costs no encoding; the
callback must therefore keep the encoder's state across calls and skip nothing itself. An
exception from it propagates: libspice closes the client when encoding fails.

Example (a loop-side client; ``conn`` is the proto ChannelConnection)::

    st = PlaybackClientState(caps, compression=config.playback_compression, encode=opus_encode_or_none,
                             active=speaker.playing, volume=speaker.volume, mute=speaker.mute)
    for pcm, mm in framer.write(host_pcm, clock.now()):
        st.frame(pcm, mm)
    while cc.may_send() and (msg := st.next_message(clock.now())) is not None:
        conn.send(msg)
    data = cc.take_output(); st.taken(len(data)); transport.write(data)
    ...  # when the transport reports n bytes written: cc.written(n); st.written(n)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Sequence
from enum import IntFlag

from ..proto.enums import AudioDataMode, AudioFmt, PlaybackCap
from ..proto.messages.base import Message, Migrate
from ..proto.messages.playback import (
    PlaybackData,
    PlaybackLatency,
    PlaybackMode,
    PlaybackMute,
    PlaybackStart,
    PlaybackStop,
    PlaybackVolume,
)
from .audio_frames import FRAME_BYTES, PLAYBACK_FREQ

__all__ = ["PlaybackClientState", "Command", "Encoder", "NUM_AUDIO_FRAMES", "desired_mode"]

#: frames held per client, queued or in flight (libspice ``NUM_AUDIO_FRAMES``)
NUM_AUDIO_FRAMES = 3
#: stereo (``SPICE_INTERFACE_PLAYBACK_CHAN``)
PLAYBACK_CHANNELS = 2
#: rates Opus can use (``snd_codec_is_capable``)
OPUS_RATES = frozenset({48000, 24000, 16000, 12000, 8000})

#: one 1920-byte S16 stereo frame -> one Opus packet
Encoder = Callable[[bytes], bytes]

_U32 = 0xFFFFFFFF


class Command(IntFlag):
    """Pending commands; :data:`ORDER` is the order they drain in (``send_item``)."""

    MODE = 1
    PCM = 2
    CTRL = 4
    VOLUME = 8
    MUTE = 16
    MIGRATE = 32
    LATENCY = 64


ORDER = (Command.MODE, Command.PCM, Command.CTRL, Command.VOLUME, Command.MUTE, Command.MIGRATE, Command.LATENCY)


def desired_mode(compression: bool, client_can_opus: bool, encoder_available: bool, frequency: int = PLAYBACK_FREQ) -> AudioDataMode:
    """The playback mode libspice picks (``snd_desired_audio_mode``), given whether an encoder exists."""
    if compression and client_can_opus and encoder_available and frequency in OPUS_RATES:
        return AudioDataMode.OPUS
    return AudioDataMode.RAW


class PlaybackClientState:
    """The pending messages of one playback client (see the module doc).

    Args:
        caps: the client's playback capability bit numbers (:class:`~spiceserver.proto.enums.PlaybackCap`).
        compression: the server's ``playback_compression``.
        encode: the Opus encoder for this client, or None when none is available.
        active: whether the host's stream is playing when the client connects.
        volume: the host's volume per channel, empty if never set.
        mute: the host's mute, None if never set.
        frequency: the stream's rate (START carries it).
    """

    def __init__(
        self,
        caps: Collection[int],
        *,
        compression: bool = True,
        encode: Encoder | None = None,
        active: bool = False,
        volume: Sequence[int] = (),
        mute: bool | None = None,
        frequency: int = PLAYBACK_FREQ,
    ) -> None:
        self.caps = frozenset(caps)
        self.frequency = frequency
        self._encode = encode
        self.mode = desired_mode(compression, PlaybackCap.OPUS in self.caps, encode is not None, frequency)
        self.volume: tuple[int, ...] = tuple(volume)
        self.mute = bool(mute)
        self.latency_ms = 0
        #: the stream plays (host side)
        self.active = False
        #: the client was last told START (libspice ``client_active``)
        self.client_active = False
        self.command = Command.MODE
        if self.volume:
            self.command |= Command.VOLUME | Command.MUTE
        elif mute is not None:
            self.command |= Command.MUTE
        self._restart = False  # STOP before the next MODE: the stream restarts in the new mode
        self._queue: deque[tuple[bytes, int]] = deque()  # frames not yet handed out
        self._out: deque[int | None] = deque()  # end offsets of DATA handed out (None: not taken yet)
        self._unmarked = 0  # DATA handed out since the last taken()
        self._taken = 0
        self._written = 0
        #: frames dropped as late (a full pipe)
        self.dropped = 0
        #: frames handed out as DATA
        self.sent = 0
        if active:
            self.start()

    # --- host side -------------------------------------------------------------------------------

    def start(self) -> None:
        """The host's stream starts (``spice_server_playback_start``); no-op if it plays."""
        if self.active:
            return
        self.active = True
        self._set_ctrl()

    def stop(self) -> None:
        """The host's stream stops (``spice_server_playback_stop``); no-op if it is stopped."""
        if not self.active:
            return
        self.active = False
        if not self.client_active:  # START never went out: nothing to undo, nothing to play
            self._queue.clear()
        self._set_ctrl()

    def _set_ctrl(self) -> None:
        if self.active != self.client_active:
            self.command |= Command.CTRL
        else:
            self.command &= ~Command.CTRL

    def frame(self, pcm: bytes, mm_time: int) -> None:
        """Queue one 1920-byte frame stamped ``mm_time``; a full pipe drops the oldest (see module doc).

        Raises:
            ValueError: ``pcm`` is not one frame.
        """
        if len(pcm) != FRAME_BYTES:
            raise ValueError(f"a playback frame is {FRAME_BYTES} bytes, not {len(pcm)}")
        if not self.active:
            return
        if len(self._queue) + len(self._out) >= NUM_AUDIO_FRAMES:
            self.dropped += 1
            if not self._queue:  # all on their way: this one is late
                return
            self._queue.popleft()
        self._queue.append((bytes(pcm), mm_time & _U32))

    def set_volume(self, volume: Sequence[int]) -> None:
        """The host's volume per channel (u16 each); an empty one is remembered and sends nothing."""
        self.volume = tuple(volume)
        if self.volume:
            self.command |= Command.VOLUME

    def set_mute(self, mute: bool) -> None:
        """The host's mute."""
        self.mute = bool(mute)
        self.command |= Command.MUTE

    def set_latency(self, latency_ms: int) -> bool:
        """The client's minimum latency (``snd_set_playback_latency``); False when the client lacks LATENCY."""
        if PlaybackCap.LATENCY not in self.caps:
            return False
        self.latency_ms = latency_ms & _U32
        self.command |= Command.LATENCY
        return True

    def set_compression(self, on: bool) -> None:
        """The server's ``playback_compression`` changed; MODE goes out again if the mode changes.

        In the middle of a stream the client is told STOP, MODE, START (libspice sends MODE alone,
        and spice-gtk, which creates its decoder at START, then has none for the new mode)."""
        mode = desired_mode(on, PlaybackCap.OPUS in self.caps, self._encode is not None, self.frequency)
        if mode != self.mode:
            self.mode = mode
            self.command |= Command.MODE
            if self.active and self.client_active:
                self._restart = True

    def migrate(self) -> None:
        """Send SPICE_MSG_MIGRATE in its turn (``snd_channel_send_migrate``)."""
        self.command |= Command.MIGRATE

    # --- transport side --------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Frames waiting to go out."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Frames handed out whose DATA the transport has not written entirely."""
        return len(self._out)

    def pending(self) -> bool:
        """Whether :meth:`next_message` has something to give."""
        return self._ready() != 0

    def _ready(self) -> Command:
        if self._restart:
            return Command.CTRL
        cmd = self.command
        if self._queue and self.client_active:  # frames queued before a pending STOP go first
            cmd |= Command.PCM
        if PlaybackCap.VOLUME not in self.caps:
            cmd &= ~(Command.VOLUME | Command.MUTE)
        return cmd

    def next_message(self, now_mm: int) -> Message | None:
        """The next message in libspice's order, or None; ``now_mm`` stamps MODE and START."""
        if self._restart:
            self._restart = False
            self.client_active = False
            if not self.active:  # the host stopped meanwhile: nothing is left to play
                self._queue.clear()
            self._set_ctrl()  # START after the MODE
            return PlaybackStop()
        ready = self._ready()
        if PlaybackCap.VOLUME not in self.caps:  # never sent to this client: forget them
            self.command &= ~(Command.VOLUME | Command.MUTE)
        for cmd in ORDER:
            if ready & cmd:
                self.command &= ~cmd
                return self._build(cmd, now_mm & _U32)
        return None

    def _build(self, cmd: Command, now: int) -> Message:
        if cmd is Command.MODE:
            return PlaybackMode(time=now, mode=int(self.mode))
        if cmd is Command.PCM:
            pcm, stamp = self._queue.popleft()
            data = pcm if self.mode == AudioDataMode.RAW or self._encode is None else self._encode(pcm)
            self._out.append(None)
            self._unmarked += 1
            self.sent += 1
            return PlaybackData(time=stamp, data=data)
        if cmd is Command.CTRL:
            self.client_active = self.active
            if self.active:
                return PlaybackStart(channels=PLAYBACK_CHANNELS, format=int(AudioFmt.S16), frequency=self.frequency, time=now)
            return PlaybackStop()
        if cmd is Command.VOLUME:
            return PlaybackVolume(volume=self.volume)
        if cmd is Command.MUTE:
            return PlaybackMute(mute=int(self.mute))
        if cmd is Command.MIGRATE:
            return Migrate(flags=0)
        return PlaybackLatency(latency_ms=self.latency_ms)

    def taken(self, nbytes: int) -> None:
        """The caller took ``nbytes`` from the connection for the transport (after marshalling)."""
        self._taken += nbytes
        if self._unmarked:
            n = len(self._out)
            for i in range(n - self._unmarked, n):
                self._out[i] = self._taken
            self._unmarked = 0
        self._retire()

    def written(self, nbytes: int) -> None:
        """The transport wrote ``nbytes`` of what was taken; frames written entirely are gone."""
        self._written = min(self._taken, self._written + nbytes)
        self._retire()

    def _retire(self) -> None:
        while self._out and (end := self._out[0]) is not None and end <= self._written:
            self._out.popleft()

    def disconnect(self) -> None:
        """The transport is gone: nothing is in flight any more, and nothing queued will go out."""
        self._out.clear()
        self._queue.clear()
        self._unmarked = 0
