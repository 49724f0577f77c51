"""Cutting the host's PCM into the playback channel's 10 ms frames (sans-IO: times are arguments).

Counterpart of the frame handling in spice ``server/sound.cpp`` (``spice_server_playback_get_buffer``
hands the host a frame of ``snd_codec_frame_size()`` samples, ``spice_server_playback_put_samples``
stamps it with ``reds_get_mm_time()``) and of spice-common ``common/snd_codec.h``
(``SND_CODEC_OPUS_FRAME_SIZE`` = 480 samples per channel, also the raw frame size). QEMU fills those
frames itself; here the host writes S16LE stereo PCM of any length and :class:`PcmFramer` does it.

Rules:

* A frame is :data:`FRAME_BYTES` = 1920 bytes: 480 stereo samples of two little-endian s16, 10 ms
  at 48 kHz. Bytes that do not complete a frame (including a trailing partial sample, a length that
  is not a multiple of 4) are kept for the next :meth:`PcmFramer.write`.
* A frame's mm-time is the ``now_mm`` of the write that delivered its last byte, as libspice
  stamps a frame when the host puts it.
* :meth:`PcmFramer.flush` pads what is left with silence (zero bytes) to one last frame, stamped
  with the time of the write that brought its last real byte.
* Bounded: the framer keeps less than one frame between calls. One write returns at most
  ``max_frames`` frames: of a longer write only the newest ``max_frames`` are kept (drop-oldest,
  counted in :attr:`PcmFramer.dropped`), as sound is real time and the playback channel would
  drop the rest as late anyway. Below that bound the frames do not depend on how the PCM was
  chunked.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["PcmFramer", "FRAME_SAMPLES", "FRAME_BYTES", "SAMPLE_BYTES", "PLAYBACK_FREQ", "MAX_WRITE_FRAMES", "volume_levels"]

#: samples per channel in one frame (``SND_CODEC_OPUS_FRAME_SIZE``)
FRAME_SAMPLES = 480
#: bytes of one stereo S16 sample
SAMPLE_BYTES = 4
#: bytes of one frame: 480 x 2 channels x 2 bytes
FRAME_BYTES = FRAME_SAMPLES * SAMPLE_BYTES
#: the playback rate (``SND_CODEC_OPUS_PLAYBACK_FREQ``, ``spice_server_get_best_playback_rate``)
PLAYBACK_FREQ = 48000
#: default bound on the frames one write returns (1 s of sound)
MAX_WRITE_FRAMES = 100


class PcmFramer:
    """S16LE stereo PCM of any length in, 1920-byte frames stamped with an mm-time out.

    Args:
        max_frames: the most frames one :meth:`write` returns; older ones of a longer write are
            dropped and counted in :attr:`dropped`.

    Raises:
        ValueError: ``max_frames`` is below 1.
    """

    def __init__(self, max_frames: int = MAX_WRITE_FRAMES) -> None:
        if max_frames < 1:
            raise ValueError("max_frames must be at least 1")
        self.max_frames = max_frames
        self._tail = bytearray()  # always shorter than FRAME_BYTES
        self._tail_mm = 0
        #: frames dropped because a single write carried more than ``max_frames``
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Bytes kept for the next frame (0 to 1919)."""
        return len(self._tail)

    def write(self, pcm: bytes | bytearray | memoryview, now_mm: int) -> list[tuple[bytes, int]]:
        """Add ``pcm`` that arrived at mm-time ``now_mm``; return the frames it completed, oldest first.

        Args:
            pcm: S16LE interleaved stereo bytes, any length.
            now_mm: the multimedia time in ms, given to every frame this write completes.
        """
        data = memoryview(pcm).cast("B")
        if not data:
            return []
        self._tail_mm = now_mm
        total = len(self._tail) + len(data)
        nframes = total // FRAME_BYTES
        if nframes == 0:
            self._tail += data
            return []
        skip = max(0, nframes - self.max_frames)
        self.dropped += skip
        frames: list[tuple[bytes, int]] = []
        # offsets into data of the frames' ends: frame k ends at (k + 1) * FRAME_BYTES - len(tail)
        head = len(self._tail)
        for k in range(skip, nframes):
            end = (k + 1) * FRAME_BYTES - head
            start = end - FRAME_BYTES
            frame = bytes(self._tail) + data[:end].tobytes() if start < 0 else data[start:end].tobytes()
            frames.append((frame, now_mm))
        self._tail = bytearray(data[nframes * FRAME_BYTES - head :])
        return frames

    def flush(self) -> list[tuple[bytes, int]]:
        """The kept bytes padded with silence to one frame (none if nothing is kept), then empty.

        The frame carries the mm-time of the write that brought its last byte.
        """
        if not self._tail:
            return []
        frame = bytes(self._tail) + bytes(FRAME_BYTES - len(self._tail))
        self._tail.clear()
        return [(frame, self._tail_mm)]

    def reset(self) -> None:
        """Forget the kept bytes (a stream stops without its tail)."""
        self._tail.clear()


def volume_levels(volume: Iterable[int]) -> tuple[int, ...]:
    """A host's volume for PLAYBACK_ / RECORD_VOLUME (spice.proto ``AudioVolume``: a u8 count of u16).

    Raises:
        ValueError: no channel, more than 255, or a value outside 0..65535.
    """
    vol = tuple(int(v) for v in volume)
    if not 0 < len(vol) < 256 or not all(0 <= v <= 0xFFFF for v in vol):
        raise ValueError(f"a volume is 1 to 255 values of 0..65535, not {vol!r}")
    return vol
