"""PC/XT scan code set 1 helpers: split byte streams into key transitions, name keys.

Counterpart of spice ``server/inputs-channel.cpp`` (``kbd_push_scan``: E0/E1/E2 prefixes, bit 7 =
release) and spice-gtk ``src/spice-util.c`` ``spice_make_scancode`` (how clients pack codes).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KeyEvent", "split_transitions", "code_to_bytes", "decode_key", "RELEASE"]

RELEASE = 0x80


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """One key transition: ``keycode`` is the make code with any E0/E1 prefix in the high byte
    (0x1E = A, 0xE048 = Up arrow); ``scancode`` the raw bytes (release bytes have bit 7 set)."""

    keycode: int
    down: bool
    scancode: bytes


def code_to_bytes(code: int) -> bytes:
    """The bytes packed in a KEY_DOWN/KEY_UP ``code`` u32: low byte first, up to the first 0."""
    out = bytearray()
    for i in range(4):
        b = (code >> (8 * i)) & 0xFF
        if b == 0:
            break
        out.append(b)
    return bytes(out)


def split_transitions(data: bytes) -> list[bytes]:
    """Split raw set-1 bytes into one sequence per key transition (E0 xx, E1 xx yy, E2 xx, xx)."""
    out: list[bytes] = []
    i = 0
    while i < len(data):
        b = data[i]
        n = 3 if b == 0xE1 else 2 if b in (0xE0, 0xE2) else 1
        out.append(bytes(data[i : i + n]))
        i += n
    return out


def decode_key(seq: bytes) -> KeyEvent:
    """Decode one transition from :func:`split_transitions`."""
    if not seq:
        return KeyEvent(0, False, seq)
    last = seq[-1]
    down = not last & RELEASE
    code = 0
    for b in seq[:-1]:
        code = (code << 8) | b
    code = (code << 8) | (last & ~RELEASE & 0xFF)
    return KeyEvent(code, down, seq)
