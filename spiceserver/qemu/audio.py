"""QEMU's sound card through D-Bus: the guest's speakers and microphone on SPICE's sound channels.

QEMU side (``-audiodev dbus,id=snd0`` **and** ``-display dbus,...,audiodev=snd0``; research §5):
``/org/qemu/Display1/Audio`` has ``RegisterOutListener(h)`` and ``RegisterInListener(h)``; each gets
its own peer-to-peer connection on which QEMU calls our ``/org/qemu/Display1/AudioOutListener``
(``Init(t id, y bits, b is_signed, b is_float, u freq, y nchannels, u bytes_per_frame,
u bytes_per_second, b be)``, ``Fini(t)``, ``SetEnabled(t, b)``, ``SetVolume(t, b mute, ay volume)``,
``Write(t, ay)``) and ``/org/qemu/Display1/AudioInListener`` (the same, with ``Read(t id, t size) -> ay``
in place of ``Write``). Signatures: QEMU ``ui/dbus-display1.xml``; behaviour: ``audio/dbusaudio.c``
(each hardware voice is a stream id; on registration QEMU sends ``Init`` and ``SetEnabled`` for the
voices it has; ``Write`` carries ``nsamples`` frames, 480 by default; ``Read`` is a *synchronous*
call from QEMU's audio timer, so it is answered at once from what we hold; volume is 0-255 per
channel). libspice counterpart: QEMU's own ``audio/spiceaudio.c``.

SPICE side: :meth:`ServerDevices.add_playback` (S16LE stereo 48 kHz; start/stop/volume/mute) and
:meth:`ServerDevices.add_record` (the client's microphone, delivered as S16LE stereo 48 kHz).

Formats: QEMU mixes to the audiodev's format, ``out.frequency``/``in.frequency`` (44100 Hz by
default; ask for ``out.frequency=48000,in.frequency=48000`` to spare the conversion). Integer PCM
(8, 16, 32 bits, signed or not, either byte order) and 32-bit float, 1 or 2 channels at any rate
from 8 kHz to 192 kHz are converted (:func:`to_spice_pcm`, linear resampling). Anything else is
refused with an error in the log and that stream's data is dropped.

Hostile input: sizes and counts are checked; a bad message is logged (once per stream) and
dropped, never raised into the server.
"""

# no ``from __future__ import annotations`` here: dbus-fast reads the D-Bus methods' annotations
# at run time and takes a string ``"None"`` return for a signature
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBool, DBusByte, DBusBytes, DBusUInt32, DBusUInt64
from dbus_fast.service import ServiceInterface, dbus_method

from .bus import ROOT, call, p2p_listener

if TYPE_CHECKING:
    from ..channels.playback import PlaybackChannel
    from ..channels.record import RecordChannel
    from ..server_devices import ServerDevices

__all__ = [
    "SPICE_RATE",
    "AudioInListener",
    "AudioOutListener",
    "PcmFormat",
    "QemuAudio",
    "Resampler",
    "UnsupportedFormat",
    "attach_audio",
    "from_spice_pcm",
    "to_spice_pcm",
]

log = logging.getLogger("spiceserver.qemu")

AUDIO_PATH = f"{ROOT}/Audio"
AUDIO_IFACE = "org.qemu.Display1.Audio"
OUT_PATH = f"{ROOT}/AudioOutListener"
IN_PATH = f"{ROOT}/AudioInListener"

#: SPICE's sound format: 48 kHz, S16LE, two channels (spice-protocol ``SPICE_PLAYBACK_FREQ``)
SPICE_RATE = 48000
SPICE_CHANNELS = 2
SPICE_FRAME = 4
#: the largest Write (bytes) taken from QEMU: a second of 192 kHz stereo float; larger is dropped
MAX_WRITE = 192000 * 2 * 4
#: the microphone ring: one second of SPICE PCM
RECORD_RING = SPICE_RATE * SPICE_FRAME


class UnsupportedFormat(ValueError):
    """QEMU asked for a PCM format the bridge does not convert."""


@dataclass(frozen=True)
class PcmFormat:
    """One stream's PCM format, as QEMU's ``Init`` gives it."""

    bits: int
    signed: bool
    is_float: bool
    freq: int
    nchannels: int
    bytes_per_frame: int
    big_endian: bool = False

    def check(self) -> None:
        """Raise :class:`UnsupportedFormat` unless :func:`to_spice_pcm` converts this format."""
        if self.is_float and self.bits != 32:
            raise UnsupportedFormat(f"{self.bits}-bit float PCM")
        if self.bits not in (8, 16, 32):
            raise UnsupportedFormat(f"{self.bits}-bit PCM")
        if self.nchannels not in (1, 2):
            raise UnsupportedFormat(f"{self.nchannels} channels (1 or 2 are converted)")
        if not 8000 <= self.freq <= 192000:
            raise UnsupportedFormat(f"{self.freq} Hz")
        if self.bytes_per_frame != self.bits // 8 * self.nchannels:
            raise UnsupportedFormat(f"{self.bytes_per_frame} bytes per frame for {self.bits} bits x {self.nchannels}")

    @property
    def dtype(self) -> np.dtype[np.generic]:
        """The numpy sample type."""
        order = ">" if self.big_endian else "<"
        if self.is_float:
            return np.dtype(f"{order}f4")
        return np.dtype(f"{order}{'i' if self.signed else 'u'}{self.bits // 8}")

    def describe(self) -> str:
        """``S16LE 2ch 44100 Hz``."""
        kind = "F" if self.is_float else ("S" if self.signed else "U")
        return f"{kind}{self.bits}{'BE' if self.big_endian else 'LE'} {self.nchannels}ch {self.freq} Hz"


class Resampler:
    """Linear interpolation from ``src`` to ``dst`` Hz across calls (float frames, any channels)."""

    def __init__(self, src: int, dst: int, channels: int) -> None:
        self.step = src / dst
        self.pos = 1.0  # the next output's place in [previous frame, this call's frames...]
        self.prev = np.zeros(channels, dtype=np.float64)

    def process(self, x: np.ndarray) -> np.ndarray:
        """Resample ``x`` (frames x channels); the last frame is kept for the next call."""
        n = len(x)
        if n == 0:
            return x.astype(np.float64)
        buf = np.concatenate([self.prev[None, :], x.astype(np.float64)])
        count = max(0, int(np.floor((n - self.pos) / self.step)) + 1) if self.pos <= n else 0
        t = self.pos + self.step * np.arange(count)
        i = np.minimum(np.floor(t).astype(np.int64), n)
        frac = (t - i)[:, None]
        out: np.ndarray = buf[i] * (1.0 - frac) + buf[np.minimum(i + 1, n)] * frac
        self.pos = (self.pos + self.step * count) - n
        self.prev = buf[n]
        return out


def _to_float(fmt: PcmFormat, data: bytes) -> np.ndarray:
    """Whole frames of ``data`` as float samples in [-1, 1), frames x channels."""
    n = len(data) // fmt.bytes_per_frame
    a = np.frombuffer(data, dtype=fmt.dtype, count=n * fmt.nchannels).reshape(n, fmt.nchannels)
    if fmt.is_float:
        return np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
    full = float(1 << (fmt.bits - 1))
    f = a.astype(np.float64)
    if not fmt.signed:
        f -= full
    return f / full


def _from_float(fmt: PcmFormat, f: np.ndarray) -> bytes:
    """Float frames (x channels of ``fmt``) in ``fmt``'s sample type."""
    f = np.clip(f, -1.0, 1.0)
    if fmt.is_float:
        return f.astype(fmt.dtype).tobytes()
    full = float(1 << (fmt.bits - 1))
    v = np.clip(np.round(f * full), -full, full - 1)
    if not fmt.signed:
        v += full
    return v.astype(fmt.dtype).tobytes()


def _is_spice(fmt: PcmFormat) -> bool:
    return (fmt.bits, fmt.signed, fmt.is_float, fmt.freq, fmt.nchannels, fmt.big_endian) == (
        16, True, False, SPICE_RATE, SPICE_CHANNELS, False,
    )  # fmt: skip


def to_spice_pcm(fmt: PcmFormat, data: bytes, resampler: "Resampler | None" = None) -> bytes:
    """Convert whole frames of ``data`` in ``fmt`` to SPICE's S16LE stereo 48 kHz.

    A trailing partial frame is ignored (the caller keeps it). Mono is doubled to both channels.

    Args:
        fmt: the stream's format (checked with :meth:`PcmFormat.check`).
        data: the PCM.
        resampler: the stream's :class:`Resampler` when ``fmt.freq`` is not 48000 (needed then).

    Raises:
        UnsupportedFormat: a format this does not convert, or a rate change with no resampler.
    """
    fmt.check()
    if _is_spice(fmt):
        return bytes(data[: len(data) // SPICE_FRAME * SPICE_FRAME])
    f = _to_float(fmt, data)
    if fmt.nchannels == 1:
        f = np.repeat(f, 2, axis=1)
    if fmt.freq != SPICE_RATE:
        if resampler is None:
            raise UnsupportedFormat(f"{fmt.freq} Hz needs a resampler")
        f = resampler.process(f)
    return _from_float(PcmFormat(16, True, False, SPICE_RATE, 2, 4), f)


def from_spice_pcm(fmt: PcmFormat, data: bytes, resampler: "Resampler | None" = None) -> bytes:
    """Convert SPICE's S16LE stereo 48 kHz to ``fmt`` (the reverse of :func:`to_spice_pcm`; stereo
    to mono averages the channels).

    Raises:
        UnsupportedFormat: as :func:`to_spice_pcm`.
    """
    fmt.check()
    if _is_spice(fmt):
        return bytes(data[: len(data) // SPICE_FRAME * SPICE_FRAME])
    f = _to_float(PcmFormat(16, True, False, SPICE_RATE, 2, 4), data)
    if fmt.freq != SPICE_RATE:
        if resampler is None:
            raise UnsupportedFormat(f"{fmt.freq} Hz needs a resampler")
        f = resampler.process(f)
    if fmt.nchannels == 1:
        f = f.mean(axis=1, keepdims=True)
    return _from_float(fmt, f)


def _volume(levels: bytes) -> list[int]:
    """QEMU's 0-255 per channel as SPICE's u16 (255 -> 65535); at most 255 channels."""
    return [b * 257 for b in levels[:255]]


@dataclass
class _Stream:
    fmt: PcmFormat | None  # None: refused
    resampler: Resampler | None
    enabled: bool = False
    rest: bytes = b""  # a partial frame left by the last Write
    warned: bool = False


def _new_stream(
    direction: str, id: int, bits: int, is_signed: bool, is_float: bool, freq: int, nch: int, bpf: int, be: bool
) -> _Stream:
    fmt = PcmFormat(bits, is_signed, is_float, freq, nch, bpf, be)
    try:
        fmt.check()
    except UnsupportedFormat as exc:
        log.error(
            "qemu audio %s stream %#x: unsupported format %s (%s); its data is dropped. "
            "Ask QEMU for S16 stereo 48 kHz: -audiodev dbus,id=ID,%s.frequency=48000",
            direction, id, fmt.describe() if bits else "?", exc, direction,
        )  # fmt: skip
        return _Stream(None, None)
    log.info("qemu audio %s stream %#x: %s", direction, id, fmt.describe())
    rs = Resampler(freq, SPICE_RATE, 2) if direction == "out" and freq != SPICE_RATE else None
    if direction == "in" and freq != SPICE_RATE:
        rs = Resampler(SPICE_RATE, freq, 2)
    return _Stream(fmt, rs)


class AudioOutListener(ServiceInterface):
    """``org.qemu.Display1.AudioOutListener``: the guest's speakers -> a SPICE playback channel.

    The playback plays while at least one of QEMU's streams is enabled. Runs on the event loop.
    """

    def __init__(self, playback: "PlaybackChannel") -> None:
        super().__init__("org.qemu.Display1.AudioOutListener")
        self.playback = playback
        self.streams: dict[int, _Stream] = {}
        #: PCM bytes (SPICE format) handed to the playback channel
        self.written = 0
        #: Writes for streams QEMU never announced (logged the first ten times)
        self.unknown_writes = 0

    def _update_playing(self) -> None:
        if any(s.enabled and s.fmt is not None for s in self.streams.values()):
            self.playback.start()
        else:
            self.playback.stop()

    @dbus_method()
    def Init(
        self,
        id: DBusUInt64,
        bits: DBusByte,
        is_signed: DBusBool,
        is_float: DBusBool,
        freq: DBusUInt32,
        nchannels: DBusByte,
        bytes_per_frame: DBusUInt32,
        bytes_per_second: DBusUInt32,
        be: DBusBool,
    ) -> None:
        """A stream starts: its format."""
        self.streams[id] = _new_stream("out", id, bits, is_signed, is_float, freq, nchannels, bytes_per_frame, be)
        self._update_playing()

    @dbus_method()
    def Fini(self, id: DBusUInt64) -> None:
        """A stream ends."""
        self.streams.pop(id, None)
        self._update_playing()

    @dbus_method()
    def SetEnabled(self, id: DBusUInt64, enabled: DBusBool) -> None:
        """The guest starts or stops playing on the stream."""
        st = self.streams.get(id)
        if st is None:
            log.warning("qemu audio out: SetEnabled for unknown stream %#x dropped", id)
            return
        st.enabled = bool(enabled)
        if not enabled:
            st.rest = b""
        self._update_playing()

    @dbus_method()
    def SetVolume(self, id: DBusUInt64, mute: DBusBool, volume: DBusBytes) -> None:
        """The guest's mixer: mute and 0-255 per channel."""
        levels = _volume(bytes(volume))
        try:
            if levels:
                self.playback.set_volume(levels)
            self.playback.set_mute(bool(mute))
        except ValueError as exc:
            log.warning("qemu audio out: bad volume %r dropped: %s", bytes(volume)[:16], exc)

    @dbus_method()
    def Write(self, id: DBusUInt64, data: DBusBytes) -> None:
        """PCM to play, in the stream's format."""
        st = self.streams.get(id)
        if st is None or st.fmt is None:
            if st is not None and not st.warned:
                st.warned = True
                log.warning("qemu audio out: Write for refused stream %#x dropped (logged once)", id)
            elif st is None and self.unknown_writes < 10:
                log.warning("qemu audio out: Write for unknown stream %#x dropped", id)
            if st is None:
                self.unknown_writes += 1
            return
        if len(data) > MAX_WRITE:
            log.warning("qemu audio out: a Write of %d bytes (over %d) dropped", len(data), MAX_WRITE)
            return
        buf = st.rest + bytes(data)
        whole = len(buf) // st.fmt.bytes_per_frame * st.fmt.bytes_per_frame
        st.rest = buf[whole:]
        if not whole:
            return
        try:
            pcm = to_spice_pcm(st.fmt, buf[:whole], st.resampler)
        except (UnsupportedFormat, ValueError) as exc:  # pragma: no cover (checked at Init)
            log.warning("qemu audio out: conversion failed: %s", exc)
            return
        self.written += len(pcm)
        self.playback.write(pcm)


class AudioInListener(ServiceInterface):
    """``org.qemu.Display1.AudioInListener``: the client's microphone -> the guest's.

    What :meth:`feed` gets (SPICE PCM, from the record channel's ``on_data``) waits in a bounded
    ring (:data:`RECORD_RING` bytes; the oldest bytes go when it is full); QEMU's synchronous
    ``Read(id, size)`` takes from it, converted to the stream's format, padded with silence to
    ``size`` when the ring holds less (the guest's recording keeps its pace). Event loop.
    """

    def __init__(self, record: "RecordChannel | None" = None, ring_size: int = RECORD_RING) -> None:
        super().__init__("org.qemu.Display1.AudioInListener")
        self.record = record
        self.streams: dict[int, _Stream] = {}
        self.ring = bytearray()
        self.ring_size = ring_size - ring_size % SPICE_FRAME
        #: bytes of SPICE PCM dropped because the ring was full
        self.overflow = 0

    def feed(self, pcm: bytes) -> None:
        """SPICE PCM (S16LE stereo 48 kHz) from the client's microphone."""
        self.ring += pcm
        extra = len(self.ring) - self.ring_size
        if extra > 0:
            extra += (-extra) % SPICE_FRAME
            del self.ring[:extra]
            self.overflow += extra

    def _update_recording(self) -> None:
        if self.record is None:
            return
        if any(s.enabled and s.fmt is not None for s in self.streams.values()):
            self.record.start()
        else:
            self.record.stop()

    @dbus_method()
    def Init(
        self,
        id: DBusUInt64,
        bits: DBusByte,
        is_signed: DBusBool,
        is_float: DBusBool,
        freq: DBusUInt32,
        nchannels: DBusByte,
        bytes_per_frame: DBusUInt32,
        bytes_per_second: DBusUInt32,
        be: DBusBool,
    ) -> None:
        """A record stream starts: the format QEMU wants."""
        self.streams[id] = _new_stream("in", id, bits, is_signed, is_float, freq, nchannels, bytes_per_frame, be)

    @dbus_method()
    def Fini(self, id: DBusUInt64) -> None:
        """A record stream ends."""
        self.streams.pop(id, None)
        self._update_recording()

    @dbus_method()
    def SetEnabled(self, id: DBusUInt64, enabled: DBusBool) -> None:
        """The guest opens or closes its microphone."""
        st = self.streams.get(id)
        if st is None:
            log.warning("qemu audio in: SetEnabled for unknown stream %#x dropped", id)
            return
        st.enabled = bool(enabled)
        if enabled:
            self.ring.clear()
        self._update_recording()

    @dbus_method()
    def SetVolume(self, id: DBusUInt64, mute: DBusBool, volume: DBusBytes) -> None:
        """The guest's capture mixer."""
        if self.record is None:
            return
        levels = _volume(bytes(volume))
        try:
            if levels:
                self.record.set_volume(levels)
            self.record.set_mute(bool(mute))
        except ValueError as exc:
            log.warning("qemu audio in: bad volume %r dropped: %s", bytes(volume)[:16], exc)

    @dbus_method()
    def Read(self, id: DBusUInt64, size: DBusUInt64) -> DBusBytes:
        """Up to ``size`` bytes of the stream's format (never more than a second's worth)."""
        return self.read(id, size)

    def read(self, id: int, size: int) -> bytes:
        """What ``Read`` answers (see the class)."""
        st = self.streams.get(id)
        if st is None or st.fmt is None:
            return b""
        fmt = st.fmt
        frames = min(size // fmt.bytes_per_frame, fmt.freq)
        if frames <= 0:
            return b""
        want = -(-frames * SPICE_RATE // fmt.freq) * SPICE_FRAME  # SPICE bytes for that many frames
        take = min(want, len(self.ring) // SPICE_FRAME * SPICE_FRAME)
        spice = bytes(self.ring[:take])
        del self.ring[:take]
        spice += bytes(want - take)  # silence for what the client did not give
        out = from_spice_pcm(fmt, spice, st.resampler)
        n = frames * fmt.bytes_per_frame
        return out[:n] + bytes(max(0, n - len(out)))


@dataclass
class QemuAudio:
    """What :func:`attach_audio` set up; :meth:`close` ends it."""

    out: AudioOutListener
    inp: AudioInListener | None
    buses: list[MessageBus]
    playback: "PlaybackChannel"
    record: "RecordChannel | None"

    def close(self) -> None:
        """Disconnect the listeners (QEMU drops them) and stop the sound channels' streams."""
        for b in self.buses:
            b.disconnect()
        self.playback.stop()
        if self.record is not None:
            self.record.stop()


async def attach_audio(
    server: "ServerDevices", bus: MessageBus, *, record: bool = True, channel_id: int = 0
) -> QemuAudio:
    """Serve QEMU's D-Bus audio backend as SPICE playback (and record) channels.

    Args:
        server: the SPICE server.
        bus: a bus connection to QEMU (bus daemon or peer to peer), opened with
            ``negotiate_unix_fd=True``.
        record: also bridge the client's microphone to the guest.
        channel_id: the sound channels' id.

    Raises:
        DBusError: QEMU has no ``/org/qemu/Display1/Audio`` (no ``audiodev=`` on ``-display dbus``)
            or refused the listener.
    """
    playback = server.add_playback(channel_id)
    out = AudioOutListener(playback)
    buses = [await p2p_listener(bus, _register(bus, "RegisterOutListener"), OUT_PATH, out)]
    inp: AudioInListener | None = None
    rec: RecordChannel | None = None
    if record:
        inp = AudioInListener()
        feed: Callable[[bytes], None] = inp.feed
        rec = server.add_record(feed, channel_id=channel_id)
        inp.record = rec
        buses.append(await p2p_listener(bus, _register(bus, "RegisterInListener"), IN_PATH, inp))
    return QemuAudio(out, inp, buses, playback, rec)


def _register(bus: MessageBus, member: str) -> Callable[[int], Awaitable[list[Any]]]:
    async def register(fd: int) -> list[Any]:
        return await call(bus, AUDIO_PATH, AUDIO_IFACE, member, "h", [0], [fd])

    return register
