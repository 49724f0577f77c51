"""Image codecs: pure functions over bytes and numpy arrays (no I/O, no threads of their own).

One module per codec (``lz4``; later ``quic``, ``lz``, ``glz``, ``mjpeg``), each the counterpart
of a spice-common / spice-server encoder and of the client's decoder.
"""

from __future__ import annotations
