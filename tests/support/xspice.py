"""The Xorg configuration that makes Xspice (Debian ``xserver-xspice``: Xorg + the spiceqxl driver
linked with libspice-server) run here as a reference SPICE server (REFERENCES section 15): one head,
small buffers, listening on 127.0.0.1 only. Shared by the interop harness test and
``tools/capture_fixtures.py``.
"""

from __future__ import annotations

__all__ = ["XORG_CONF"]

XORG_CONF = """\
Section "Device"
    Identifier "XSPICE"
    Driver "spiceqxl"
    Option "SpiceAddr" "127.0.0.1"
    Option "NumHeads" "1"
    Option "SurfaceBufferSize" "128"
    Option "CommandBufferSize" "128"
    Option "FrameBufferSize" "16"
EndSection
Section "InputDevice"
    Identifier "XSPICE POINTER"
    Driver     "xspice pointer"
EndSection
Section "InputDevice"
    Identifier "XSPICE KEYBOARD"
    Driver     "xspice keyboard"
EndSection
Section "Monitor"
    Identifier "Configured Monitor"
EndSection
Section "Screen"
    Identifier "XSPICE Screen"
    Monitor    "Configured Monitor"
    Device     "XSPICE"
EndSection
Section "ServerLayout"
    Identifier  "XSPICE Example"
    Screen      "XSPICE Screen"
    InputDevice "XSPICE KEYBOARD"
    InputDevice "XSPICE POINTER"
EndSection
Section "ServerFlags"
    Option "AutoAddDevices" "False"
EndSection
"""
