"""The QEMU D-Bus bridge's pure parts: qnum mapping, pixel/size checks, dirty coalescing, the
console display against a recording framebuffer, button diffs, QMP framing (no QEMU needed)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("dbus_fast")

from spiceserver.interfaces import KeyEvent
from spiceserver.qemu.bus import QmpClient, QmpError
from spiceserver.qemu.display import (
    MAX_RECTS,
    PIXMAN_X8R8G8B8,
    ConsoleDisplay,
    DirtyRegion,
    Listener,
    check_pixels,
)
from spiceserver.qemu.input import ButtonState, QemuKeyboard, qnum

X8 = PIXMAN_X8R8G8B8


class FakeFb:
    """Records what a ConsoleDisplay does to its FramebufferDisplay."""

    def __init__(self, width: int = 64, height: int = 48) -> None:
        self.width, self.height = width, height
        self.calls: list[tuple[Any, ...]] = []
        self.frames: list[np.ndarray] = []

    def update(self, frame: np.ndarray, dirty: Any = None, *, copy: bool = True) -> int:
        assert frame.shape == (self.height, self.width)
        self.calls.append(("update", list(dirty)))
        self.frames.append(frame.copy())
        return len(dirty)

    def resize(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.calls.append(("resize", width, height))

    def set_cursor(self, shape: Any, x: int, y: int, visible: bool = True) -> None:
        self.calls.append(("set_cursor", shape, x, y, visible))

    def move_cursor(self, x: int, y: int) -> None:
        self.calls.append(("move_cursor", x, y))

    def hide_cursor(self) -> None:
        self.calls.append(("hide_cursor",))


def pixels(w: int, h: int, value: int, stride: int | None = None) -> bytes:
    stride = stride or w * 4
    row = np.full(stride // 4, value, "<u4").tobytes()
    return row * h


def display(w: int = 64, h: int = 48, interval: float = 0.01) -> tuple[ConsoleDisplay, FakeFb]:
    fb = FakeFb(w, h)
    return ConsoleDisplay(fb, 0, flush_interval=interval), fb  # type: ignore[arg-type]


# --- qnum -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keycode", "want"),
    [
        (0x01, 0x01),  # Esc
        (0x1E, 0x1E),  # A
        (0x1C, 0x1C),  # Enter
        (0xE01C, 0x9C),  # keypad Enter
        (0xE048, 0xC8),  # Up
        (0xE050, 0xD0),  # Down
        (0xE05B, 0xDB),  # left Windows
        (0xE11D45, 0xC6),  # Pause
        (0xE02A, None),  # fake left shift
        (0xE036, None),  # fake right shift
        (0, None),
        (0xE2_01, None),
    ],
)
def test_qnum(keycode: int, want: int | None) -> None:
    assert qnum(keycode) == want


class FakeSender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, list[object]]] = []

    def send(self, path: str, interface: str, member: str, signature: str = "", body: list[object] | None = None) -> None:
        self.sent.append((path, member, body or []))


def test_keyboard_sends_press_and_release_qnums() -> None:
    kb = QemuKeyboard.__new__(QemuKeyboard)
    sender = FakeSender()
    kb._sender = sender  # type: ignore[assignment]
    kb.path = "/c0"
    kb.leds = 0
    kb.on_scancodes(bytes([0xE0, 0x48, 0xE0, 0xC8, 0x01, 0x81]))
    kb.on_key(KeyEvent(0xE02A, True, b"\xe0\x2a"))
    assert sender.sent == [("/c0", "Press", [0xC8]), ("/c0", "Release", [0xC8]), ("/c0", "Press", [1]), ("/c0", "Release", [1])]


def test_buttons_diff_and_wheel() -> None:
    sender = FakeSender()
    b = ButtonState(sender)  # type: ignore[arg-type]
    b.set("/c0", 0b101)  # left + right
    b.set("/c0", 0b100)
    b.wheel("/c0", -2)
    b.set("/c0", 1 << 12)  # unknown bits are ignored
    assert sender.sent == [
        ("/c0", "Press", [0]),
        ("/c0", "Press", [2]),
        ("/c0", "Release", [0]),
        ("/c0", "Press", [3]),
        ("/c0", "Release", [3]),
        ("/c0", "Press", [3]),
        ("/c0", "Release", [3]),
        ("/c0", "Release", [2]),
    ]


# --- pixel checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "ok"),
    [
        ((640, 480, 2560, X8, 640 * 480 * 4), True),
        ((640, 480, 2560, 0x20028888, 640 * 480 * 4), True),  # a8r8g8b8
        ((640, 480, 2560, X8, 640 * 480 * 4 - 1), False),  # short data
        ((640, 480, 2560, 0x10020565, 640 * 480 * 4), False),  # r5g6b5
        ((640, 480, 2556, X8, 640 * 480 * 4), False),  # stride < width * 4
        ((640, 480, 2562, X8, 2562 * 480), False),  # stride not a multiple of 4
        ((0, 480, 0, X8, 0), False),
        ((1 << 20, 1, 4 << 20, X8, 4 << 20), False),  # too wide
        ((4, 2, 32, X8, 32 + 16), True),  # last row need not be padded
    ],
)
def test_check_pixels(args: tuple[int, int, int, int, int], ok: bool) -> None:
    assert (check_pixels(*args) is None) == ok


def test_dirty_region_coalesces() -> None:
    d = DirtyRegion()
    d.add((0, 0, 10, 10))
    d.add((10, 0, 20, 10))  # touching: merged
    d.add((5, 5, 8, 8))  # inside: merged
    d.add((40, 40, 50, 50))  # apart
    d.add((3, 3, 3, 9))  # empty: ignored
    assert sorted(d.take()) == [(0, 0, 20, 10), (40, 40, 50, 50)]
    assert not d
    for i in range(MAX_RECTS + 1):
        d.add((i * 4, 0, i * 4 + 2, 2))
    assert d.take() == [(0, 0, MAX_RECTS * 4 + 2, 2)]


# --- ConsoleDisplay -----------------------------------------------------------------------------


async def test_scanout_resizes_and_shows_at_once() -> None:
    disp, fb = display()
    assert disp.scanout(32, 16, 32 * 4, X8, pixels(32, 16, 0xFF123456))
    assert fb.calls == [("resize", 32, 16), ("update", [(0, 0, 32, 16)])]
    assert (fb.frames[-1] == 0x123456).all()  # the X byte is dropped
    await asyncio.wait_for(disp.first_picture(), 1)


async def test_updates_are_written_in_place_and_coalesced() -> None:
    disp, fb = display(interval=0.01)
    disp.scanout(64, 48, 256, X8, pixels(64, 48, 0))
    fb.calls.clear()
    frame = disp.frame
    for i in range(5):
        assert disp.update(i * 4, 0, 4, 2, 16, X8, pixels(4, 2, 0x010203 * (i + 1)))
    assert disp.update(0, 40, 8, 8, 40, X8, pixels(8, 8, 0xABCDEF, stride=40))  # padded rows
    assert fb.calls == []  # not yet: coalesced until the flush
    await asyncio.sleep(0.05)
    assert fb.calls == [("update", [(0, 0, 20, 2), (0, 40, 8, 48)])]
    assert disp.frame is frame  # no new frame per update
    shown = fb.frames[-1]
    assert shown[0, 4] == 0x020406 and shown[45, 7] == 0xABCDEF and shown[10, 10] == 0


async def test_an_update_after_a_quiet_spell_is_flushed_at_once() -> None:
    """No interval's wait for a key's answer: the burst the loop is handling goes out as one flush."""
    disp, fb = display(interval=10.0)
    disp.scanout(64, 48, 256, X8, pixels(64, 48, 0))
    disp._last_flush -= 10.0  # (the scanout's flush was long ago)
    fb.calls.clear()
    assert disp.update(0, 0, 4, 2, 16, X8, pixels(4, 2, 1))
    assert disp.update(8, 0, 4, 2, 16, X8, pixels(4, 2, 2))
    assert fb.calls == []  # the loop's current read first
    await asyncio.sleep(0)
    assert fb.calls == [("update", [(0, 0, 4, 2), (8, 0, 12, 2)])]
    assert disp.update(0, 8, 4, 2, 16, X8, pixels(4, 2, 3))
    await asyncio.sleep(0.01)
    assert len(fb.calls) == 1  # the next waits for the interval
    disp.close()


async def test_bad_updates_are_dropped() -> None:
    disp, fb = display()
    disp.scanout(64, 48, 256, X8, pixels(64, 48, 0))
    fb.calls.clear()
    assert not disp.update(0, 0, 4, 4, 16, X8, b"\0" * 20)  # short
    assert not disp.update(-1, 0, 4, 4, 16, X8, pixels(4, 4, 1))  # negative
    assert not disp.update(0, 0, 4, 4, 16, 0x10020565, pixels(4, 4, 1))  # format
    assert not disp.scanout(1 << 15, 1, 1 << 17, X8, b"")
    assert disp.dropped == 4
    await asyncio.sleep(0.03)
    assert fb.calls == []


async def test_update_outside_waits_for_the_new_size() -> None:
    """QEMU switches surfaces without a Scanout when no update covers all of it (VGA text mode)."""
    disp, fb = display()
    disp.scanout(64, 48, 256, X8, pixels(64, 48, 0))
    probes: list[int] = []
    disp.size_probe = lambda: probes.append(1)
    assert disp.update(0, 0, 72, 16, 288, X8, pixels(72, 16, 0x111111)) is False
    assert disp.update(0, 16, 72, 16, 288, X8, pixels(72, 16, 0x222222)) is False
    assert disp.update(0, 0, 4, 4, 16, X8, pixels(4, 4, 0x333333)) is False  # fits, but waits: after the others
    assert probes == [1] and disp.has_pending
    disp.resize(72, 40)
    assert ("resize", 72, 40) in fb.calls and not disp.has_pending
    await asyncio.sleep(0.03)
    assert fb.frames[-1][0, 71] == 0x111111 and fb.frames[-1][31, 0] == 0x222222 and fb.frames[-1][0, 0] == 0x333333
    # still outside after the answer: dropped
    assert disp.update(0, 32, 72, 16, 288, X8, pixels(72, 16, 1)) is False
    disp.resize(72, 40)
    assert disp.dropped == 1 and not disp.has_pending


async def test_resize_keeps_the_overlap() -> None:
    disp, _ = display()
    disp.scanout(64, 48, 256, X8, pixels(64, 48, 0x0000FF))
    disp.resize(32, 64)
    assert disp.frame.shape == (64, 32)
    assert disp.frame[47, 31] == 0xFF and disp.frame[48, 0] == 0


async def test_cursor() -> None:
    disp, fb = display()
    assert disp.cursor_define(2, 2, 5, 0, b"\x01" * 16)
    shape = fb.calls[-1][1]
    assert (shape.width, shape.height, shape.hot_x, shape.hot_y, shape.type) == (2, 2, 1, 0, 0)
    disp.mouse_set(10, 20, 1)
    disp.mouse_set(11, 21, 1)
    disp.mouse_set(11, 21, 0)
    assert [c[0] for c in fb.calls[1:]] == ["set_cursor", "move_cursor", "hide_cursor"]
    assert not disp.cursor_define(2, 2, 0, 0, b"\x01" * 15)
    assert not disp.cursor_define(0, 2, 0, 0, b"")
    assert not disp.cursor_define(4096, 4096, 0, 0, b"")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    x=st.integers(-(1 << 31), (1 << 31) - 1),
    y=st.integers(-(1 << 31), (1 << 31) - 1),
    w=st.integers(-(1 << 31), (1 << 31) - 1),
    h=st.integers(-(1 << 31), (1 << 31) - 1),
    stride=st.integers(0, (1 << 32) - 1),
    fmt=st.sampled_from([X8, 0x20028888, 0, 0xFFFFFFFF]),
    data=st.binary(max_size=512),
)
def test_listener_never_raises(x: int, y: int, w: int, h: int, stride: int, fmt: int, data: bytes) -> None:
    async def go() -> None:
        disp, _ = display(8, 8)
        listener = Listener(disp)
        listener.Update(x, y, w, h, stride, fmt, data)
        listener.Scanout(w & 0xFFFFFFFF, h & 0xFFFFFFFF, stride, fmt, data)
        listener.CursorDefine(w, h, x, y, data)
        listener.MouseSet(x, y, w)
        disp.resize(w, h)
        disp.close()

    asyncio.run(go())


# --- QMP ------------------------------------------------------------------------------------


async def test_qmp_execute_events_errors_and_fds(tmp_path: Path) -> None:
    path = str(tmp_path / "qmp.sock")
    seen: list[dict[str, Any]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'{"QMP": {"version": {}, "capabilities": []}}\r\n')
        while True:
            line = await reader.readline()
            if not line:
                break
            req = json.loads(line)
            seen.append(req)
            if req["execute"] == "bad":
                writer.write(json.dumps({"error": {"class": "GenericError", "desc": "no"}, "id": req["id"]}).encode() + b"\r\n")
            else:
                writer.write(b'{"event": "STOP", "data": {}}\r\n')
                writer.write(json.dumps({"return": {"ok": req["execute"]}, "id": req["id"]}).encode() + b"\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(serve, path)
    try:
        qmp = await QmpClient.connect(path)
        assert await qmp.execute("query-status") == {"ok": "query-status"}
        with pytest.raises(QmpError, match="GenericError: no"):
            await qmp.execute("bad")
        a, b = socket.socketpair()
        try:
            await qmp.send_fd("x", a.fileno())
        finally:
            a.close()
            b.close()
        assert (await asyncio.wait_for(qmp.events.get(), 1))["event"] == "STOP"
        assert [r["execute"] for r in seen] == ["qmp_capabilities", "query-status", "bad", "getfd"]
        assert seen[-1]["arguments"] == {"fdname": "x"}  # (the fd itself travels as SCM_RIGHTS)
        qmp.close()
        await asyncio.wait_for(qmp.wait_closed(), 1)
        with pytest.raises(ConnectionResetError):
            await qmp.execute("query-status")
    finally:
        server.close()
        await server.wait_closed()


# --- the bridge's reaction to QEMU's properties --------------------------------------------------


class FakeServer:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def add_tablet(self, tablet: Any) -> None:
        self.calls.append(("add_tablet",))

    def remove_tablet(self) -> None:
        self.calls.append(("remove_tablet",))

    def kbd_leds(self, leds: int) -> None:
        self.calls.append(("kbd_leds", leds))


async def test_bridge_follows_is_absolute_modifiers_and_console_size() -> None:
    from dbus_fast import Message, MessageType
    from dbus_fast.signature import Variant

    from spiceserver.qemu.bridge import Console, QemuBridge

    server = FakeServer()
    bridge = QemuBridge(server, object())  # type: ignore[arg-type]
    disp, fb = display()
    bridge.consoles.append(Console(0, disp))

    def changed(path: str, interface: str, props: dict[str, Variant]) -> None:
        msg = Message(
            message_type=MessageType.SIGNAL,
            path=path,
            interface="org.freedesktop.DBus.Properties",
            member="PropertiesChanged",
            signature="sa{sv}as",
            body=[interface, props, []],
        )
        assert bridge._on_message(msg) is False

    c0 = "/org/qemu/Display1/Console_0"
    changed(c0, "org.qemu.Display1.Mouse", {"IsAbsolute": Variant("b", True)})
    changed(c0, "org.qemu.Display1.Mouse", {"IsAbsolute": Variant("b", True)})  # no change
    changed(c0, "org.qemu.Display1.Keyboard", {"Modifiers": Variant("u", 4)})
    changed(c0, "org.qemu.Display1.Mouse", {"IsAbsolute": Variant("b", False)})
    changed(c0, "org.qemu.Display1.Keyboard", {"Modifiers": Variant("s", "junk")})  # logged, dropped
    changed("/org/qemu/Display1/Console_7", "org.qemu.Display1.Mouse", {"IsAbsolute": Variant("b", True)})  # not ours
    changed(c0, "org.qemu.Display1.Console", {"Width": Variant("u", 72), "Height": Variant("u", 40)})
    assert disp.frame.shape == (48, 64)  # one read is not enough: it may race with a Scanout
    changed(c0, "org.qemu.Display1.Console", {"Width": Variant("u", 72), "Height": Variant("u", 40)})
    assert server.calls == [("add_tablet",), ("kbd_leds", 4), ("remove_tablet",)]
    assert bridge.keyboard.get_leds() == 4
    assert disp.frame.shape == (40, 72) and ("resize", 72, 40) in fb.calls
    assert bridge._console_path_of_display(0) == c0 and bridge._console_path_of_display(1) is None
    await bridge.close()
    await bridge.closed()


async def test_bridge_size_read_racing_a_scanout_is_not_applied() -> None:
    from spiceserver.qemu.bridge import Console, QemuBridge

    bridge = QemuBridge(FakeServer(), object())  # type: ignore[arg-type]
    disp, _ = display()
    console = Console(0, disp)
    bridge.consoles.append(console)
    old = {"Width": 72, "Height": 40}
    bridge._set_size(console, old)  # read before the switch ...
    disp.scanout(80, 60, 320, X8, pixels(80, 60, 5))  # ... and a Scanout of a newer surface
    bridge._set_size(console, old)  # a stale read again: not two agreeing reads with no Scanout between
    assert disp.frame.shape == (60, 80)
    bridge._set_size(console, {"Width": 80, "Height": 60})
    assert disp.frame.shape == (60, 80)
    await bridge.close()


async def test_monitors_config_becomes_set_ui_info(monkeypatch: pytest.MonkeyPatch) -> None:
    from dbus_fast.errors import DBusError

    from spiceserver.proto.vdagent_messages import MonitorConfig
    from spiceserver.qemu import bridge as bridge_mod

    calls: list[tuple[str, str, list[Any]]] = []

    async def fake_call(bus: Any, path: str, interface: str, member: str, signature: str = "", body: Any = None, **kw: Any) -> list[Any]:
        calls.append((path, member, body))
        if path.endswith("_1"):
            raise DBusError("org.qemu.Display1.Error.Unsupported", "SetUIInfo is not supported")
        return []

    monkeypatch.setattr(bridge_mod, "call", fake_call)
    b = bridge_mod.QemuBridge(FakeServer(), object())  # type: ignore[arg-type]
    for i in range(2):
        b.consoles.append(bridge_mod.Console(i, display()[0]))
    mons = (MonitorConfig(1024, 768, 32, 0, 0, 300, 200), MonitorConfig(800, 600, 32, 1024, 0))
    await b._on_monitors(mons)
    await b._on_monitors((MonitorConfig(0, 0), *mons[1:]))  # a disabled head is skipped; a refusing console is not asked again
    assert calls == [
        ("/org/qemu/Display1/Console_0", "SetUIInfo", [300, 200, 0, 0, 1024, 768]),
        ("/org/qemu/Display1/Console_1", "SetUIInfo", [0, 0, 1024, 0, 800, 600]),
    ]
    await b.close()


def test_tablet_positions_go_to_the_display_console_clamped() -> None:
    from spiceserver.qemu.input import QemuTablet

    sender = FakeSender()
    paths = {0: "/c0", 1: "/c1"}
    sizes = {0: (640, 480), 1: (800, 600)}
    t = QemuTablet(object(), paths.get, console_size=sizes.get)  # type: ignore[arg-type]
    t._sender = sender  # type: ignore[assignment]
    t.buttons.sender = sender  # type: ignore[assignment]
    t.on_position(10, 20, 0, 0)
    t.on_position(900, -5, 1, 1)  # clamped into console 1's 800x600; left button down there
    t.on_position(1, 1, 1, 5)  # no such display: dropped
    t.on_wheel(1, 1)  # down, on the console last pointed at
    assert sender.sent == [
        ("/c0", "SetAbsPosition", [10, 20]),
        ("/c1", "SetAbsPosition", [799, 0]),
        ("/c1", "Press", [0]),
        ("/c1", "Press", [4]),
        ("/c1", "Release", [4]),
    ]


def test_the_qemu_command_line_gets_the_display_qmp_and_sound() -> None:
    from spiceserver.qemu.cli import AUDIODEV_ID, qemu_argv

    argv, paused = qemu_argv(["qemu-system-x86_64", "-m", "64"], "/t/qmp.sock", "unix:path=/t/bus")
    assert paused and argv[-1] == "-S"
    assert argv[1:3] == ["-audiodev", f"dbus,id={AUDIODEV_ID},out.frequency=48000,in.frequency=48000"]
    assert f"dbus,addr=unix:path=/t/bus,audiodev={AUDIODEV_ID}" in argv
    assert "unix:/t/qmp.sock,server=on,wait=off" in argv
    own, _ = qemu_argv(["q", "-audiodev", "dbus,id=snd0", "-S"], "/q", "unix:path=/b")
    assert own.count("-audiodev") == 1 and "dbus,addr=unix:path=/b,audiodev=snd0" in own and own.count("-S") == 1
    other, _ = qemu_argv(["q", "-audiodev", "pa,id=x"], "/q", "unix:path=/b")
    assert "dbus,addr=unix:path=/b" in other  # the guest's sound stays with its own backend
    p2p, _ = qemu_argv(["q"], "/q")
    assert "dbus,p2p=yes" in p2p and "-audiodev" not in p2p  # QEMU 7.2 drops p2p audio listeners
