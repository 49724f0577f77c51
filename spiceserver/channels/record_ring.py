"""The record channel's ring of captured samples (sans-IO, no clock needed).

Counterpart of spice ``server/sound.cpp``: ``RecordChannelClient::samples`` with ``write_pos`` /
``read_pos`` (``RECORD_SAMPLES_SIZE`` = ``SND_RECEIVE_BUF_SIZE >> 2`` = 8192 stereo S16 frames,
32 KiB, about 170 ms at 48 kHz), filled by ``snd_record_handle_write`` and drained by
``spice_server_record_get_samples``.

Rules (libspice's, but for the clipping below):

* :meth:`RecordRing.put` appends decoded PCM. A put larger than the ring keeps its newest
  ``size`` samples (libspice clips a raw packet to the ring size too, but keeps its first samples;
  the newest are the ones a later put would keep anyway).
* When more than the ring holds is unread, the oldest samples are lost (libspice advances
  ``read_pos``). :meth:`RecordRing.put` returns how many samples were lost, and
  :attr:`RecordRing.overflowed` turns true once and stays so until the caller
  :meth:`acknowledges <RecordRing.take_overflow>` it: the caller logs once, not per packet.
* :meth:`RecordRing.read` returns nothing until half the ring was filled since the last
  :meth:`~RecordRing.reset` (``write_pos < RECORD_SAMPLES_SIZE / 2``: 4096 samples, 85 ms), then
  whatever is unread, up to ``max_frames``. Counting from the reset, as libspice, means that once
  primed the ring hands out even short bursts. ``RecordRing(prime=False)`` skips that wait: the
  record channel pushes PCM to a host callback, which wants it at once (see
  :mod:`spiceserver.channels.record`); libspice's cushion is for a host that polls.
* Memory is bounded at 32 KiB whatever the input rate. A trailing partial stereo sample (a length
  not a multiple of 4) is kept until completed, so no byte is misaligned.
"""

from __future__ import annotations

__all__ = ["RecordRing", "RECORD_SAMPLES_SIZE", "SAMPLE_BYTES"]

#: stereo frames in the ring (libspice ``RECORD_SAMPLES_SIZE``)
RECORD_SAMPLES_SIZE = 8192
#: bytes of one stereo S16 sample
SAMPLE_BYTES = 4


class RecordRing:
    """A bounded ring of S16LE stereo samples between the record client and the host.

    Args:
        size: samples the ring holds (libspice: 8192).
        prime: ``read`` waits until half of the ring was filled since the reset (libspice); false:
            it hands out whatever is unread at once.

    Raises:
        ValueError: ``size`` is below 2.
    """

    def __init__(self, size: int = RECORD_SAMPLES_SIZE, *, prime: bool = True) -> None:
        if size < 2:
            raise ValueError("the ring holds at least 2 samples")
        self.size = size
        self._prime_at = size // 2 if prime else 0
        self._buf = bytearray(size * SAMPLE_BYTES)
        self._partial = bytearray()  # < SAMPLE_BYTES bytes of an incomplete sample
        #: samples ever put since the reset (libspice ``write_pos``)
        self.write_pos = 0
        #: samples ever read or lost since the reset (libspice ``read_pos``)
        self.read_pos = 0
        #: samples lost to overflow since the reset
        self.lost = 0
        self._overflow_reported = False
        #: true after an overflow until :meth:`take_overflow`
        self.overflowed = False

    @property
    def available(self) -> int:
        """Samples unread (at most ``size``)."""
        return self.write_pos - self.read_pos

    def put(self, pcm: bytes | bytearray | memoryview) -> int:
        """Append S16LE stereo PCM; return how many unread samples this put lost to overflow."""
        data = memoryview(pcm).cast("B")
        if self._partial:
            need = SAMPLE_BYTES - len(self._partial)
            self._partial += data[:need]
            data = data[need:]
            if len(self._partial) < SAMPLE_BYTES:
                return 0
            joined = bytes(self._partial)
            self._partial.clear()
            lost = self._put_samples(memoryview(joined))
        else:
            lost = 0
        whole = len(data) // SAMPLE_BYTES * SAMPLE_BYTES
        self._partial += data[whole:]
        return lost + self._put_samples(data[:whole])

    def _put_samples(self, data: memoryview) -> int:
        n = len(data) // SAMPLE_BYTES
        if n == 0:
            return 0
        if n > self.size:  # only the newest ring-full can survive
            clipped = n - self.size
            self.write_pos += clipped
            data = data[clipped * SAMPLE_BYTES :]
            n = self.size
        pos = self.write_pos % self.size
        first = min(n, self.size - pos)
        self._buf[pos * SAMPLE_BYTES : (pos + first) * SAMPLE_BYTES] = data[: first * SAMPLE_BYTES]
        if n > first:
            self._buf[: (n - first) * SAMPLE_BYTES] = data[first * SAMPLE_BYTES :]
        self.write_pos += n
        lost = 0
        if self.write_pos - self.read_pos > self.size:
            lost = self.write_pos - self.size - self.read_pos
            self.read_pos = self.write_pos - self.size
            self.lost += lost
            if not self._overflow_reported:
                self._overflow_reported = True
                self.overflowed = True
        return lost

    def take_overflow(self) -> bool:
        """True once after an overflow (log it then); false until the next :meth:`reset`."""
        was = self.overflowed
        self.overflowed = False
        return was

    def read(self, max_frames: int) -> bytes:
        """Up to ``max_frames`` unread samples as bytes, oldest first; empty until the ring was half
        filled (unless built with ``prime=False``)."""
        if max_frames <= 0 or self.write_pos < self._prime_at:
            return b""
        n = min(self.available, max_frames)
        pos = self.read_pos % self.size
        first = min(n, self.size - pos)
        out = bytes(self._buf[pos * SAMPLE_BYTES : (pos + first) * SAMPLE_BYTES])
        if n > first:
            out += self._buf[: (n - first) * SAMPLE_BYTES]
        self.read_pos += n
        return out

    def reset(self) -> None:
        """Empty the ring (libspice on record start: ``read_pos = write_pos = 0``)."""
        self.write_pos = self.read_pos = self.lost = 0
        self._partial.clear()
        self._overflow_reported = False
        self.overflowed = False
