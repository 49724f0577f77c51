"""One module per channel: proto events in, device calls and outgoing messages out.

No socket I/O here: :mod:`spiceserver.reds` owns the transports and drives these objects.
"""
