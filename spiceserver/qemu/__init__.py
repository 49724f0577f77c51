"""Serve a QEMU VM through its D-Bus display (``-display dbus``): the bridge (issue 15).

Modules: :mod:`.bus` (D-Bus/QMP plumbing), :mod:`.display`, :mod:`.input`, :mod:`.bridge`,
:mod:`.cli` (``python -m spiceserver qemu``). Needs the ``qemu`` extra (dbus-fast).
"""
