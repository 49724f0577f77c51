"""The QEMU clipboard bridge's pure parts: MIME types <-> VD_AGENT_CLIPBOARD types, and QEMU's
grabs with their serials driven by a fake caller (no D-Bus)."""

from __future__ import annotations

import pytest

pytest.importorskip("dbus_fast")

from dbus_fast.errors import DBusError

from spiceserver.proto.vdagent_messages import ClipboardType
from spiceserver.qemu.clipboard import MIME_TEXT, QemuClipboard, mime_of, mimes_of, type_of, types_of


@pytest.mark.parametrize(
    ("mime", "ctype"),
    [
        ("text/plain;charset=utf-8", ClipboardType.UTF8_TEXT),
        ("text/plain; charset=UTF-8", ClipboardType.UTF8_TEXT),
        ("text/plain", ClipboardType.UTF8_TEXT),
        ("UTF8_STRING", ClipboardType.UTF8_TEXT),
        ("image/png", ClipboardType.IMAGE_PNG),
        ("image/bmp", ClipboardType.IMAGE_BMP),
        ("image/x-bmp", ClipboardType.IMAGE_BMP),
        ("image/tiff", ClipboardType.IMAGE_TIFF),
        ("image/jpeg", ClipboardType.IMAGE_JPG),
        ("application/octet-stream", None),
        ("", None),
    ],
)
def test_mime_to_type(mime: str, ctype: int | None) -> None:
    assert type_of(mime) == ctype


def test_type_to_mime_and_back() -> None:
    assert mime_of(ClipboardType.UTF8_TEXT) == MIME_TEXT == "text/plain;charset=utf-8"
    assert mime_of(ClipboardType.IMAGE_PNG) == "image/png"
    assert mime_of(ClipboardType.NONE) is None and mime_of(ClipboardType.FILE_LIST) is None and mime_of(99) is None
    for t in (ClipboardType.UTF8_TEXT, ClipboardType.IMAGE_PNG, ClipboardType.IMAGE_BMP, ClipboardType.IMAGE_TIFF, ClipboardType.IMAGE_JPG):
        mime = mime_of(t)
        assert mime is not None and type_of(mime) == t


def test_lists_keep_order_and_drop_unknown_and_repeats() -> None:
    assert types_of(["image/png", "x/unknown", MIME_TEXT, "text/plain"]) == (ClipboardType.IMAGE_PNG, ClipboardType.UTF8_TEXT)
    assert mimes_of([ClipboardType.UTF8_TEXT, ClipboardType.FILE_LIST, ClipboardType.UTF8_TEXT]) == [MIME_TEXT]


class FakeHandle:
    """HostClipboard's host side, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, tuple[int, ...]]] = []
        self.client_grabs: dict[int, tuple[int, ...]] = {}

    def grab(self, sel: int, types: tuple[int, ...]) -> None:
        self.calls.append(("grab", sel, tuple(types)))

    def release(self, sel: int) -> None:
        self.calls.append(("release", sel, ()))

    def close(self) -> None:
        pass


def test_qemu_grabs_follow_serials() -> None:
    clip = QemuClipboard(None)  # type: ignore[arg-type]  # no calls to QEMU here
    h = FakeHandle()
    clip.handle = h  # type: ignore[assignment]
    clip.Grab(0, 3, [MIME_TEXT])
    assert h.calls == [("grab", 0, (ClipboardType.UTF8_TEXT,))] and clip.serials[0] == 3
    clip.Grab(0, 2, ["image/png"])  # stale: below the current serial
    assert len(h.calls) == 1
    clip.Grab(0, 3, ["image/png", MIME_TEXT])  # equal serial: taken (QEMU re-announces)
    assert h.calls[-1] == ("grab", 0, (ClipboardType.IMAGE_PNG, ClipboardType.UTF8_TEXT))
    clip.Grab(1, 0, ["application/x-nothing-we-know"])  # nothing to offer: the client hears a release
    assert h.calls[-1] == ("release", 1, ())
    clip.Release(0)
    assert h.calls[-1] == ("release", 0, ())
    clip.Register()  # QEMU reset the serials
    assert clip.serials == {0: 0, 1: 0, 2: 0} and clip.registered == 1
    clip.Grab(0, 0, [MIME_TEXT])
    assert h.calls[-1] == ("grab", 0, (ClipboardType.UTF8_TEXT,))


def test_bad_selections_are_dbus_errors() -> None:
    clip = QemuClipboard(None)  # type: ignore[arg-type]
    clip.handle = FakeHandle()  # type: ignore[assignment]
    with pytest.raises(DBusError, match="Invalid clipboard selection"):
        clip.Grab(3, 1, [MIME_TEXT])
    with pytest.raises(DBusError, match="Invalid clipboard selection"):
        clip.Release(0xFFFFFFFF)
