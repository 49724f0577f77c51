"""Serve a QEMU VM through its D-Bus display (``-display dbus``): the bridge (issue 15).

Modules: :mod:`.bus` (D-Bus/QMP plumbing), :mod:`.display`, :mod:`.input`, :mod:`.bridge`
(consoles: display and input), :mod:`.audio`, :mod:`.clipboard`, :mod:`.chardev` and
:mod:`.devices` (the rest of the VM: sound, clipboard, char devices), :mod:`.cli`
(``python -m spiceserver qemu``). Needs the ``qemu`` extra (dbus-fast).
"""
