"""Opus for the sound channels: 10 ms frames of 48 kHz stereo S16LE <-> one raw Opus packet each.

Counterpart of spice-common ``common/snd_codec.c`` (``snd_codec_create``, ``snd_codec_encode``,
``snd_codec_decode``) as spice-server ``server/sound.cpp`` uses it: the playback channel encodes
each frame of ``SND_CODEC_OPUS_FRAME_SIZE`` = 480 samples per channel into one packet of at most
``SND_CODEC_MAX_COMPRESSED_BYTES`` = 480 bytes (one DATA message, no Ogg page, no length prefix),
and the record channel decodes each DATA payload back to PCM. The clients' side is spice-gtk
``channel-playback.c`` / ``channel-record.c`` over the same spice-common file.

The codec is libopus through PyAV (``pip install spiceserver[video]``), which is optional: nothing
here imports :mod:`av` until :func:`opus_available` or a constructor is called, and without it
both raise :class:`~spiceserver.errors.OpusUnavailable` (the channels then stay in RAW mode).

Settings, as libspice's ``opus_encoder_create(48000, 2, OPUS_APPLICATION_AUDIO)``:

* application ``audio``; complexity 10, no FEC, no DTX (libopus' and FFmpeg's defaults alike);
  constrained VBR, libopus' default, which FFmpeg's wrapper turns into unconstrained VBR unless told
  (``vbr=constrained``): unconstrained, a tone costs ~45 % more bytes than libspice's packets.
* Bit rate: libspice never sets one, so libopus uses ``OPUS_AUTO``, which for 10 ms frames of
  48 kHz stereo is ``60 * 48000 / 480 + 48000 * 2`` = 102 000 bit/s (opus ``opus_encoder.c``
  ``user_bitrate_to_bitrate``). FFmpeg's wrapper always sets a rate (96 000 when none is given), so
  :data:`DEFAULT_BIT_RATE` passes libopus' own default explicitly. Packets average 128 bytes (for a
  tone, a chord or white noise alike; Xspice's were ~128 too) and stay below ~205 bytes, the same
  sizes as the system libopus called as ``snd_codec.c`` calls it (the bytes differ: PyAV bundles
  its own libopus build). CELT caps a VBR frame at twice its base target, so packets stay far below
  480; one over 480 bytes would raise :class:`~spiceserver.errors.OpusEncodeError` rather than go out.
* One packet per frame, with no added latency: FFmpeg's ``libopus`` encoder encodes each frame as
  it is sent (``frame_duration`` 10 makes its frame size 480) and only its flush adds a packet (it
  pads the stream's end by the encoder's look-ahead, the Ogg pre-skip). :meth:`OpusEncoder.encode`
  pulls the packet of each frame at once and the stream is never flushed, so N frames give N
  packets. The decoded signal lags the input by the look-ahead (312 samples, 6.5 ms), as it does
  with libspice: its first frame is mostly silence.

Decoding: a 10 ms packet gives 1920 bytes (480 stereo samples); a packet of another legal duration
(2.5 to 120 ms) gives its own length (libspice decodes into a 1920-byte buffer, so there a longer
packet fails and disconnects the client; spice-gtk only sends 10 ms ones). A mono packet is
upmixed to stereo, as ``opus_decode`` does for a stereo decoder. A packet that does not decode
raises :class:`~spiceserver.errors.OpusDecodeError`, a
:class:`~spiceserver.errors.ProtocolError`, and the decoder stays usable. An empty packet is a lost
frame to ``opus_decode`` (packet-loss concealment of the buffer's 480 samples); FFmpeg would read
it as the end of the stream, so here it gives 10 ms of silence.

Cost (``benchmarks/opus.py``, PyAV 18.1, one core of a 2-vCPU VM): encoding a 10 ms frame takes
~110 us (median; 60 us for silence), decoding ~30 us, so one client costs about 1 % of a core.
libopus runs with the GIL released (PyAV calls ``avcodec_send_frame`` / ``avcodec_send_packet`` in
``nogil`` blocks). An encoder or decoder holds one stream's state: one per client, as libspice
makes one ``SndCodec`` per channel client, used from one thread at a time.
"""

from __future__ import annotations

import functools
from typing import Any

from ..errors import OpusDecodeError, OpusEncodeError, OpusUnavailable
from .pyav import load_av as _load_av

__all__ = [
    "opus_available",
    "OpusEncoder",
    "OpusDecoder",
    "SAMPLE_RATE",
    "CHANNELS",
    "FRAME_SAMPLES",
    "FRAME_BYTES",
    "MAX_PACKET_BYTES",
    "DEFAULT_BIT_RATE",
]

#: The only rate the sound channels use with Opus (``SND_CODEC_OPUS_PLAYBACK_FREQ``).
SAMPLE_RATE = 48000
#: Stereo (``SND_CODEC_PLAYBACK_CHAN`` / ``SND_CODEC_RECORD_CHAN``).
CHANNELS = 2
#: Samples per channel in one frame: 10 ms (``SND_CODEC_OPUS_FRAME_SIZE``).
FRAME_SAMPLES = 480
#: Bytes of S16LE stereo PCM in one frame (``SND_CODEC_MAX_FRAME_BYTES``).
FRAME_BYTES = FRAME_SAMPLES * CHANNELS * 2
#: The largest packet the encoder may hand out (``SND_CODEC_MAX_COMPRESSED_BYTES``).
MAX_PACKET_BYTES = 480
#: libopus' ``OPUS_AUTO`` rate for 10 ms frames of 48 kHz stereo, in bit/s.
DEFAULT_BIT_RATE = 60 * SAMPLE_RATE // FRAME_SAMPLES + SAMPLE_RATE * CHANNELS

_ENCODER = "libopus"
_BYTES_PER_SAMPLE = CHANNELS * 2
_SILENCE = bytes(FRAME_BYTES)


@functools.cache
def opus_available() -> bool:
    """Whether this process can encode and decode Opus: PyAV imports and its FFmpeg has
    ``libopus`` (the PyPI wheels do). Cached."""
    av = _load_av()
    return av is not None and _ENCODER in av.codecs_available


def _require_av() -> Any:
    av = _load_av()
    if av is None:
        raise OpusUnavailable("Opus needs PyAV (pip install spiceserver[video]), which does not import")
    if _ENCODER not in av.codecs_available:
        raise OpusUnavailable("PyAV's FFmpeg has no libopus")
    return av


class OpusEncoder:
    """The playback side: 10 ms frames of 48 kHz stereo S16LE in, one raw Opus packet per frame out.

    Args:
        bit_rate: bits per second; the default is the rate libspice gets from libopus.

    Raises:
        OpusUnavailable: PyAV or its libopus is missing.
    """

    def __init__(self, bit_rate: int = DEFAULT_BIT_RATE) -> None:
        av = _require_av()
        self._av = av
        ctx = av.CodecContext.create(_ENCODER, "w")
        ctx.sample_rate = SAMPLE_RATE
        ctx.layout = "stereo"
        ctx.format = "s16"
        ctx.bit_rate = bit_rate
        ctx.options = {"frame_duration": "10", "application": "audio", "vbr": "constrained"}
        try:
            ctx.open()
        except (av.FFmpegError, ValueError) as exc:
            raise OpusUnavailable(f"libopus does not open: {exc}") from exc
        if ctx.frame_size != FRAME_SAMPLES:  # pragma: no cover - FFmpeg honours frame_duration
            raise OpusUnavailable(f"libopus frame size {ctx.frame_size}, not {FRAME_SAMPLES}")
        self._ctx: Any = ctx
        self._pts = 0

    def encode(self, frame: bytes | bytearray | memoryview) -> bytes:
        """Encode one 10 ms frame (libspice ``snd_codec_encode``).

        Args:
            frame: exactly :data:`FRAME_BYTES` (1920) bytes: 480 samples, left and right
                interleaved, signed 16-bit little-endian.

        Returns:
            One raw Opus packet of at most :data:`MAX_PACKET_BYTES` bytes.

        Raises:
            ValueError: ``frame`` is not 1920 bytes (``SND_CODEC_INVALID_ENCODE_SIZE``), or the
                encoder is closed.
            OpusEncodeError: libopus failed or made something else than one packet of <= 480 bytes.
        """
        frame = memoryview(frame).cast("B")
        if frame.nbytes != FRAME_BYTES:
            raise ValueError(f"an Opus frame is {FRAME_BYTES} bytes of S16LE stereo, not {frame.nbytes}")
        ctx = self._ctx
        if ctx is None:
            raise ValueError("the Opus encoder is closed")
        av = self._av
        src = av.AudioFrame(format="s16", layout="stereo", samples=FRAME_SAMPLES)
        src.sample_rate = SAMPLE_RATE
        src.pts = self._pts
        src.planes[0].update(frame)
        self._pts += FRAME_SAMPLES
        try:
            packets = ctx.encode(src)
        except (av.FFmpegError, ValueError) as exc:
            raise OpusEncodeError(f"libopus failed: {exc}") from exc
        if len(packets) != 1:
            raise OpusEncodeError(f"libopus made {len(packets)} packets for one frame")
        data = bytes(packets[0])
        if not 0 < len(data) <= MAX_PACKET_BYTES:
            raise OpusEncodeError(f"libopus made a {len(data)}-byte packet (limit {MAX_PACKET_BYTES})")
        return data

    def close(self) -> None:
        """Release the encoder (idempotent). The stream is not flushed: every frame already has its packet."""
        self._ctx = None


class OpusDecoder:
    """The record side: one raw Opus packet in, 48 kHz stereo S16LE out.

    Raises:
        OpusUnavailable: PyAV or its libopus is missing.
    """

    def __init__(self) -> None:
        av = _require_av()
        self._av = av
        ctx = av.CodecContext.create(_ENCODER, "r")
        ctx.sample_rate = SAMPLE_RATE
        ctx.layout = "stereo"
        ctx.format = "s16"
        try:
            ctx.open()
        except (av.FFmpegError, ValueError) as exc:
            raise OpusUnavailable(f"libopus does not open: {exc}") from exc
        self._ctx: Any = ctx

    def decode(self, packet: bytes | bytearray | memoryview) -> bytes:
        """Decode one packet (libspice ``snd_codec_decode``).

        Args:
            packet: one raw Opus packet, as a record DATA message carries it.

        Returns:
            S16LE stereo PCM: 1920 bytes for a 10 ms packet, the packet's own duration otherwise;
            1920 bytes of silence for an empty packet (a lost frame).

        Raises:
            OpusDecodeError: the packet does not decode (the record channel closes that client).
            ValueError: the decoder is closed.
        """
        ctx = self._ctx
        if ctx is None:
            raise ValueError("the Opus decoder is closed")
        packet = bytes(packet)
        if not packet:
            return _SILENCE
        av = self._av
        try:
            frames = ctx.decode(av.Packet(packet))
        except (av.FFmpegError, ValueError) as exc:
            raise OpusDecodeError(f"invalid Opus packet ({len(packet)} bytes): {exc}") from exc
        out = []
        for frame in frames:
            if frame.format.name != "s16" or frame.layout.nb_channels != CHANNELS:  # pragma: no cover
                raise OpusDecodeError(f"libopus decoded {frame.format.name} {frame.layout.name}")
            out.append(bytes(frame.planes[0])[: frame.samples * _BYTES_PER_SAMPLE])
        if not out:
            raise OpusDecodeError(f"an Opus packet of {len(packet)} bytes decoded to nothing")
        return b"".join(out)

    def close(self) -> None:
        """Release the decoder (idempotent)."""
        self._ctx = None
