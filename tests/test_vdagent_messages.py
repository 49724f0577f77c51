"""The vdagent message layer: the VDIChunkHeader framing of the agent's port, every message body
against bytes built by hand from the packed C structs of spice-protocol ``vd_agent.h``, spice-common
``agent_check_message``'s size rules, libspice's agent message filter (``agent-msg-filter.c``) on
piece sequences, the capability rewrite (``reds_adjust_agent_capabilities``), the agent mouse
(``inputs-channel.cpp``), and fuzzing: any input parses or raises ProtocolError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.errors import ProtocolError
from spiceserver.proto.enums import MouseButton, MouseButtonMask
from spiceserver.proto.vdagent import (
    CHUNK_HEADER,
    AgentCap,
    AgentMessage,
    AgentMessageType,
    AgentMsgFilter,
    AgentStreamReader,
    AnnounceCapabilities,
    AudioVolumeSync,
    ChunkPiece,
    ChunkPort,
    ChunkReader,
    FileXferStatus,
    FileXferStatusMessage,
    FilterResult,
    adjust_agent_caps,
    adjust_announce_payload,
    chunk_message,
    pack_chunk,
    split_message,
)
from spiceserver.proto.vdagent_messages import (
    MONITORS_CONFIG_MAX_SIZE,
    AgentBody,
    AgentButton,
    ClientDisconnected,
    Clipboard,
    ClipboardGrab,
    ClipboardRelease,
    ClipboardRequest,
    ClipboardSelection,
    ClipboardType,
    DeviceDisplayInfo,
    DisplayConfig,
    DisplayConfigFlag,
    FileXferData,
    FileXferStart,
    FileXferStatusError,
    GraphicsDeviceInfo,
    MaxClipboard,
    MonitorConfig,
    MonitorsConfig,
    MonitorsFlag,
    MouseState,
    Reply,
    ReplyError,
    agent_buttons,
    check_size,
    mouse_position_state,
    mouse_press_state,
    mouse_release_state,
    parse_body,
    prepare_file_xfer_status,
    size_rule,
    wheel_states,
)

T = AgentMessageType
SEL = {AgentCap.CLIPBOARD_SELECTION}
SERIAL = {AgentCap.CLIPBOARD_GRAB_SERIAL}


def u32(v: int) -> bytes:
    return v.to_bytes(4, "little")


def header(mtype: int, size: int, protocol: int = 1, opaque: int = 0) -> bytes:
    """A VDAgentMessage header, built field by field."""
    return u32(protocol) + u32(mtype) + opaque.to_bytes(8, "little") + u32(size)


# -- VDIChunkHeader ---------------------------------------------------------------------------------


def test_chunk_header_layout() -> None:
    assert CHUNK_HEADER.size == 8 and (ChunkPort.CLIENT, ChunkPort.SERVER) == (1, 2)
    assert pack_chunk(2, b"abc") == b"\x02\x00\x00\x00\x03\x00\x00\x00abc"
    ms = MouseState(100, 200).message()
    # libspice's server message: port 2, size 20 + 13, then the message (vdagent_new_write_buffer)
    assert chunk_message(2, ms) == [u32(2) + u32(33) + header(1, 13) + u32(100) + u32(200) + u32(0) + b"\x00"]
    with pytest.raises(ValueError):
        pack_chunk(3, b"")
    with pytest.raises(ValueError):
        pack_chunk(1, b"x" * 2049)  # spice-vdagentd refuses chunks above 2048
    assert len(pack_chunk(1, b"x" * 4000, max_chunk_size=4000)) == 4008


def test_chunk_reader_cuts_pieces_as_libspice() -> None:
    # spice-vdagentd writes a message as one chunk; libspice reads it in 2048-byte buffers
    msg = Clipboard(ClipboardType.UTF8_TEXT, b"x" * 5000, selection=0).message()
    raw = u32(1) + u32(20 + len(msg.data)) + msg.pack()
    for step in (1, 7, 2048, len(raw)):
        r = ChunkReader()
        pieces: list[ChunkPiece] = []
        for i in range(0, len(raw), step):
            pieces += r.feed(raw[i : i + step])
        assert [len(p.data) for p in pieces] == [2048, 2048, 20 + 5008 - 4096]
        assert [p.last for p in pieces] == [False, False, True] and {p.port for p in pieces} == {ChunkPort.CLIENT}
        assert b"".join(p.data for p in pieces) == msg.pack() and not r.in_chunk
        f = AgentMsgFilter()  # the pieces satisfy the filter's alignment rules
        assert [f.process(p.data) for p in pieces] == [FilterResult.OK] * 3


def test_chunk_reader_ports_empty_chunks_and_reassembly() -> None:
    msgs = [MouseState(1, 2, 3, 4).message(), ClientDisconnected().message(), Reply(T.MONITORS_CONFIG).message()]
    raw = pack_chunk(2, b"") + b"".join(b"".join(chunk_message(2, m, max_chunk_size=5)) for m in msgs)
    pieces = ChunkReader().feed(raw)
    assert all(p.port == ChunkPort.SERVER and len(p.data) <= 5 for p in pieces)
    reader = AgentStreamReader(100, aligned=False)  # spice-vdagentd's per-port reassembly
    out = [m for p in pieces for m in reader.feed(p.data)]
    assert out == msgs


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (u32(0) + u32(4), "port 0"),
        (u32(3) + u32(4), "port 3"),
        (u32(1) + u32(1001), "1001 bytes"),  # refused on the header, before any data
    ],
)
def test_chunk_reader_garbage(raw: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        ChunkReader(max_chunk_size=1000).feed(raw)


# -- size rules (agent_check_message) ----------------------------------------------------------------

#: sizeof() of the packed structs, and whether the size must be exact
RULES = {
    T.MOUSE_STATE: (13, True),
    T.MONITORS_CONFIG: (8, False),
    T.REPLY: (8, True),
    T.CLIPBOARD: (4, False),
    T.DISPLAY_CONFIG: (8, True),
    T.ANNOUNCE_CAPABILITIES: (4, False),
    T.CLIPBOARD_GRAB: (0, False),
    T.CLIPBOARD_REQUEST: (4, True),
    T.CLIPBOARD_RELEASE: (0, True),
    T.FILE_XFER_START: (4, False),
    T.FILE_XFER_STATUS: (8, False),
    T.FILE_XFER_DATA: (12, False),
    T.CLIENT_DISCONNECTED: (0, True),
    T.MAX_CLIPBOARD: (4, True),
    T.AUDIO_VOLUME_SYNC: (3, False),
    T.GRAPHICS_DEVICE_INFO: (4, False),
}


@pytest.mark.parametrize("mtype", list(T))
def test_size_rules(mtype: T) -> None:
    size, exact = RULES[mtype]
    assert size_rule(mtype) == (size, exact)
    check_size(mtype, size)
    if size:
        with pytest.raises(ProtocolError, match="at least" if not exact else "exactly"):
            check_size(mtype, size - 1)
    if exact:
        with pytest.raises(ProtocolError, match="exactly"):
            check_size(mtype, size + 1)
    else:
        check_size(mtype, size + 1000)
    clip = mtype in (T.CLIPBOARD, T.CLIPBOARD_GRAB, T.CLIPBOARD_REQUEST, T.CLIPBOARD_RELEASE)
    assert size_rule(mtype, SEL) == (size + 4 * clip, exact)
    assert size_rule(mtype, SEL | SERIAL) == (size + 4 * clip + 4 * (mtype == T.CLIPBOARD_GRAB), exact)


def test_unknown_types() -> None:
    for mtype in (0, 17, 1 << 31):
        assert size_rule(mtype) is None
        with pytest.raises(ProtocolError, match="unknown"):
            check_size(mtype, 0)
        with pytest.raises(ProtocolError, match="unknown"):
            parse_body(AgentMessage(mtype))


# -- bodies against hand-built bytes -------------------------------------------------------------------


def test_mouse_state() -> None:
    raw = u32(100) + u32(200) + u32(0b1010) + b"\x01"
    ms = MouseState(100, 200, AgentButton.LEFT | AgentButton.RIGHT, 1)
    assert ms.pack() == raw and MouseState.parse(raw) == ms
    assert ms.message() == AgentMessage(T.MOUSE_STATE, raw)
    for bad in (raw[:-1], raw + b"\x00"):
        with pytest.raises(ProtocolError):
            MouseState.parse(bad)
    with pytest.raises(ValueError):
        MouseState(0, 0, 0, 256).pack()


def test_monitors_config() -> None:
    # two monitors, USE_POS: VDAgentMonConfig is height, width, depth, x, y
    raw = u32(2) + u32(1) + u32(600) + u32(800) + u32(32) + u32(0) + u32(0)
    raw += u32(768) + u32(1024) + u32(32) + u32(800) + (-10).to_bytes(4, "little", signed=True)
    mc = MonitorsConfig((MonitorConfig(800, 600), MonitorConfig(1024, 768, 32, 800, -10)), MonitorsFlag.USE_POS)
    assert mc.pack() == raw and MonitorsConfig.parse(raw) == mc
    assert MonitorsConfig.parse(raw + b"\xff" * 3) == mc  # trailing bytes ignored
    # unknown flag bits are dropped (agent.c masks USE_POS | PHYSICAL_SIZE)
    assert MonitorsConfig.parse(raw[:4] + u32(0xF1) + raw[8:]).flags == MonitorsFlag.USE_POS
    with pytest.raises(ProtocolError, match="2 monitors"):
        MonitorsConfig.parse(raw[:-1])
    with pytest.raises(ProtocolError):
        MonitorsConfig.parse(raw[:7])
    # PHYSICAL_SIZE: the u16 height, width (mm) of every monitor after all monitors
    phys = u32(1) + u32(2) + u32(600) + u32(800) + u32(32) + u32(0) + u32(0) + b"\xc8\x00\x2c\x01"
    pm = MonitorsConfig((MonitorConfig(800, 600, mm_width=300, mm_height=200),), MonitorsFlag.PHYSICAL_SIZE)
    assert pm.pack() == phys and MonitorsConfig.parse(phys) == pm
    with pytest.raises(ProtocolError):
        MonitorsConfig.parse(phys[:-1])  # the mm entry is part of the element size
    # sparse: a disabled monitor is 0 x 0
    sparse = MonitorsConfig.parse(u32(2) + u32(0) + bytes(20) + u32(600) + u32(800) + bytes(12))
    assert [m.enabled for m in sparse.monitors] == [False, True]
    assert MonitorsConfig.parse(u32(0) + u32(0)) == MonitorsConfig(())
    assert MONITORS_CONFIG_MAX_SIZE == 6152


def test_reply_display_config_max_clipboard() -> None:
    assert Reply.parse(u32(2) + u32(1)) == Reply(T.MONITORS_CONFIG, ReplyError.SUCCESS)
    assert Reply(5, ReplyError.ERROR).pack() == u32(5) + u32(2)
    flags = DisplayConfigFlag.DISABLE_WALLPAPER | DisplayConfigFlag.SET_COLOR_DEPTH
    assert DisplayConfig.parse(u32(9) + u32(16)) == DisplayConfig(flags, 16)
    assert DisplayConfig(flags, 16).pack() == u32(9) + u32(16)
    assert MaxClipboard.parse(b"\xff\xff\xff\xff") == MaxClipboard(-1)
    assert MaxClipboard(104857600).pack() == u32(104857600)
    for parse, good in ((Reply.parse, 8), (DisplayConfig.parse, 8), (MaxClipboard.parse, 4)):
        for n in (good - 1, good + 1):
            with pytest.raises(ProtocolError):
                parse(bytes(n))
    assert ClientDisconnected.parse(b"") == ClientDisconnected() and ClientDisconnected().message().data == b""
    with pytest.raises(ProtocolError):
        ClientDisconnected.parse(b"\x00")


def test_clipboard_messages_with_and_without_selection() -> None:
    # VDAgentClipboard: [u8 selection, 3 reserved] u32 type, data
    assert Clipboard(1, b"hi").pack() == u32(1) + b"hi"
    assert Clipboard.parse(u32(1) + b"hi") == Clipboard(ClipboardType.UTF8_TEXT, b"hi")
    raw = b"\x01\x00\x00\x00" + u32(1) + b"hi"
    assert Clipboard.parse(raw, selection=True) == Clipboard(1, b"hi", ClipboardSelection.PRIMARY)
    assert Clipboard(1, b"hi", 1).pack() == raw
    assert Clipboard.parse(b"\x02\xaa\xbb\xcc" + u32(2), selection=True) == Clipboard(2, b"", 2)  # reserved ignored
    with pytest.raises(ProtocolError):
        Clipboard.parse(u32(1) + b"hi"[:0] + b"\x00" * 3, selection=True)
    # GRAB: [selection] [u32 serial] u32 types[]
    assert ClipboardGrab((1, 2)).pack() == u32(1) + u32(2)
    assert ClipboardGrab.parse(b"") == ClipboardGrab(())
    g = ClipboardGrab((ClipboardType.UTF8_TEXT,), selection=0, serial=7)
    assert g.pack() == bytes(4) + u32(7) + u32(1)
    assert ClipboardGrab.parse(g.pack(), selection=True, serial=True) == g
    assert ClipboardGrab.parse(bytes(4) + u32(1) + b"\x02", selection=True) == ClipboardGrab((1,), 0)  # partial word
    with pytest.raises(ProtocolError):
        ClipboardGrab.parse(bytes(7), selection=True, serial=True)
    # REQUEST: exact
    assert ClipboardRequest.parse(u32(2)) == ClipboardRequest(ClipboardType.IMAGE_PNG)
    assert ClipboardRequest(1, 0).pack() == bytes(4) + u32(1)
    assert ClipboardRequest.parse(bytes(4) + u32(1), selection=True) == ClipboardRequest(1, 0)
    for bad, sel in ((u32(1) + b"\x00", False), (u32(1), True), (bytes(9), True)):
        with pytest.raises(ProtocolError):
            ClipboardRequest.parse(bad, selection=sel)
    # RELEASE: exact, empty or the selection
    assert ClipboardRelease.parse(b"") == ClipboardRelease() and ClipboardRelease().pack() == b""
    assert ClipboardRelease.parse(b"\x01\x00\x00\x00", selection=True) == ClipboardRelease(1)
    assert ClipboardRelease(2).pack() == b"\x02\x00\x00\x00"
    for bad, sel in ((b"\x00", False), (b"", True), (bytes(5), True)):
        with pytest.raises(ProtocolError):
            ClipboardRelease.parse(bad, selection=sel)


def test_parse_body_uses_the_receivers_caps() -> None:
    raw = bytes(4) + u32(7) + u32(1)
    assert parse_body(AgentMessage(T.CLIPBOARD_GRAB, raw)) == ClipboardGrab((0, 7, 1))
    assert parse_body(AgentMessage(T.CLIPBOARD_GRAB, raw), SEL) == ClipboardGrab((7, 1), 0)
    assert parse_body(AgentMessage(T.CLIPBOARD_GRAB, raw), SEL | SERIAL) == ClipboardGrab((1,), 0, 7)
    with pytest.raises(ProtocolError):
        parse_body(AgentMessage(T.CLIPBOARD_REQUEST, u32(1)), SEL)
    bodies: list[AgentBody] = [
        MouseState(1, 2),
        MonitorsConfig((MonitorConfig(640, 480),)),
        Reply(2),
        DisplayConfig(0, 0),
        AnnounceCapabilities(True, frozenset({AgentCap.REPLY})),
        FileXferStart(1, b"[vdagent-file-xfer]\n"),
        FileXferStatusMessage(1, FileXferStatus.SUCCESS),
        FileXferData(1, b"abc"),
        ClientDisconnected(),
        MaxClipboard(-1),
        AudioVolumeSync(True, False, (1, 2)),
        GraphicsDeviceInfo((DeviceDisplayInfo(0, 0, 1, "pci/0000/02.0"),)),
        Clipboard(1, b"x", 0),
        ClipboardRelease(0),
    ]
    for body in bodies:
        assert parse_body(body.message(), SEL | SERIAL) == body


def test_file_xfer() -> None:
    start = u32(3) + b"[vdagent-file-xfer]\nname=a.txt\nsize=3\n"
    assert FileXferStart.parse(start) == FileXferStart(3, start[4:]) and FileXferStart(3, start[4:]).pack() == start
    data = u32(3) + (3).to_bytes(8, "little") + b"abc"
    assert FileXferData.parse(data) == FileXferData(3, b"abc") and FileXferData(3, b"abc").pack() == data
    assert FileXferData.parse(data + b"zz") == FileXferData(3, b"abc")
    with pytest.raises(ProtocolError, match="3 bytes in 2"):
        FileXferData.parse(data[:-1])
    with pytest.raises(ProtocolError):
        FileXferData.parse(data[:11])
    with pytest.raises(ProtocolError):
        FileXferStart.parse(b"\x00")
    # VDAgentFileXferStatusError: u8 error_type, u32 error_code (packed, 5 bytes)
    err = FileXferStatusError(0, 24)
    assert err.pack() == b"\x00\x18\x00\x00\x00" and FileXferStatusError.parse(err.pack() + b"x") == err
    assert FileXferStatusError.parse(b"\x00\x18") is None
    assert FileXferStatusMessage(4, 2, err.pack()).pack() == u32(4) + u32(2) + err.pack()
    # agent_prepare_filexfer_status: no detailed-errors cap, no detail, the newer results become ERROR
    space = FileXferStatusMessage(4, FileXferStatus.NOT_ENOUGH_SPACE, (10).to_bytes(8, "little"))
    assert prepare_file_xfer_status(space, ()) == FileXferStatusMessage(4, FileXferStatus.ERROR)
    assert prepare_file_xfer_status(space, {AgentCap.FILE_XFER_DETAILED_ERRORS}) == space
    cancelled = FileXferStatusMessage(4, FileXferStatus.CANCELLED, b"junk")
    assert prepare_file_xfer_status(cancelled, ()) == FileXferStatusMessage(4, FileXferStatus.CANCELLED)


def test_graphics_device_info() -> None:
    addr = b"pci/0000/02.0\x00"
    raw = u32(1) + u32(0) + u32(1) + u32(2) + u32(len(addr)) + addr
    info = GraphicsDeviceInfo((DeviceDisplayInfo(0, 1, 2, "pci/0000/02.0"),))
    assert info.pack() == raw and GraphicsDeviceInfo.parse(raw) == info
    # the last byte is forced to NUL (agent.c), the address ends at its first NUL
    assert GraphicsDeviceInfo.parse(raw[:-1] + b"X").displays[0].device_address == "pci/0000/02.0"
    assert GraphicsDeviceInfo.parse(u32(0)) == GraphicsDeviceInfo()
    for bad in (raw[:-1], u32(2) + raw[4:], u32(1) + bytes(16), u32(1) + bytes(15), b"\x00" * 3):
        with pytest.raises(ProtocolError):
            GraphicsDeviceInfo.parse(bad)
    with pytest.raises(ProtocolError, match="UTF-8"):
        GraphicsDeviceInfo.parse(u32(1) + bytes(12) + u32(2) + b"\xff\x00")
    with pytest.raises(ValueError):
        GraphicsDeviceInfo((DeviceDisplayInfo(0, 0, 0, "a\0b"),)).pack()


# -- the agent message filter ---------------------------------------------------------------------------


def pieces_of(mtype: int, size: int, piece: int = 2048) -> list[bytes]:
    return split_message(AgentMessage(mtype, bytes(size)), piece)


def run(f: AgentMsgFilter, pieces: list[bytes]) -> list[FilterResult]:
    return [f.process(p) for p in pieces]


OK, DISCARD, ERR, MON = FilterResult.OK, FilterResult.DISCARD, FilterResult.PROTO_ERROR, FilterResult.MONITORS_CONFIG


def test_filter_decides_on_the_header_and_pieces_inherit() -> None:
    f = AgentMsgFilter(copy_paste=False)
    seq = pieces_of(T.CLIPBOARD, 5000) + pieces_of(T.REPLY, 8) + pieces_of(T.CLIPBOARD_GRAB, 8)
    assert run(f, seq) == [DISCARD] * 3 + [OK, DISCARD]
    assert not f.in_message
    f = AgentMsgFilter(file_xfer=False)
    xfer = [T.FILE_XFER_START, T.FILE_XFER_DATA, T.FILE_XFER_STATUS, T.CLIPBOARD, T.MOUSE_STATE, 99]
    assert run(f, [p for t in xfer for p in pieces_of(t, 13)]) == [DISCARD] * 3 + [OK] * 3
    f = AgentMsgFilter(use_client_monitors_config=True)
    assert run(f, pieces_of(T.MONITORS_CONFIG, 3000) + pieces_of(T.ANNOUNCE_CAPABILITIES, 8)) == [MON, MON, OK]
    assert run(AgentMsgFilter(), pieces_of(T.MONITORS_CONFIG, 28)) == [OK]


def test_filter_discard_all_and_switches_mid_message() -> None:
    # libspice's reds_reset_vdp: result = DISCARD and discard_all; AGENT_START: configure, discard_all off
    f = AgentMsgFilter()
    p = pieces_of(T.CLIPBOARD, 3000)
    assert f.process(p[0]) == OK and f.in_message
    f.discard_current()
    f.discard_all = True
    assert f.process(p[1]) == DISCARD
    assert run(f, pieces_of(T.REPLY, 8)) == [DISCARD]
    q = pieces_of(T.CLIPBOARD, 3000)
    assert f.process(q[0]) == DISCARD
    f.configure(copy_paste=True, file_xfer=True, use_client_monitors_config=False)
    f.discard_all = False
    assert f.process(q[1]) == DISCARD  # the message under way keeps its decision
    assert run(f, pieces_of(T.CLIPBOARD, 8)) == [OK]
    f.configure(copy_paste=False, file_xfer=True, use_client_monitors_config=False)
    assert run(f, pieces_of(T.CLIPBOARD, 8)) == [DISCARD]
    f.reset()
    assert f.discard_all and run(f, pieces_of(T.REPLY, 8)) == [DISCARD]


@pytest.mark.parametrize(
    ("pieces", "reason"),
    [
        ([bytes(2049)], "2049 bytes"),
        ([header(6, 4)[:19]], "no whole header"),
        ([b""], "no whole header"),
        ([header(6, 0, protocol=2)], "protocol 2"),
        ([header(6, 4) + bytes(5)], "past the end"),
        ([header(6, 8) + bytes(4), bytes(5)], "past the end"),
        ([header(6, 3000) + bytes(2028), bytes(2049)], "2049 bytes"),
        # libspice forwards the bytes after a zero-size message unfiltered; here it is an error
        ([header(13, 0) + header(4, 0)], "past the end"),
    ],
)
def test_filter_protocol_errors(pieces: list[bytes], reason: str) -> None:
    f = AgentMsgFilter()
    results = run(f, pieces)
    assert results[-1] == ERR and ERR not in results[:-1]
    assert f.error is not None and reason in f.error
    assert f.process(header(3, 0)) == ERR  # stays broken
    f.reset(discard_all=False)
    assert f.process(header(3, 0)) == OK and f.error is None


def test_filter_short_pieces_and_empty_continuations() -> None:
    f = AgentMsgFilter(copy_paste=False)
    assert run(f, [header(4, 10), b"", bytes(3), bytes(7), header(3, 0)]) == [DISCARD] * 4 + [OK]
    # any cut works as long as each message starts a piece with its whole header
    assert run(AgentMsgFilter(), pieces_of(T.CLIPBOARD, 100, piece=20)) == [OK] * 6


# -- the capability rewrite ------------------------------------------------------------------------------


def test_adjust_agent_caps() -> None:
    real = 0x38DE7  # spice-vdagent 0.22.1 (devices.md B)
    payload = u32(1) + u32(real)
    assert adjust_announce_payload(payload, copy_paste=True, file_xfer=True) == payload
    # copy/paste off clears CLIPBOARD (3), CLIPBOARD_BY_DEMAND (5), CLIPBOARD_SELECTION (6) = 0x68
    assert adjust_announce_payload(payload, copy_paste=False, file_xfer=True) == u32(1) + u32(0x38D87)
    # file transfer off sets FILE_XFER_DISABLED (13) = 0x2000
    assert adjust_announce_payload(payload, copy_paste=False, file_xfer=False) == u32(1) + u32(0x3AD87)
    assert adjust_announce_payload(u32(1), copy_paste=False, file_xfer=False) == u32(1)  # no word to touch
    two = u32(0) + u32(0x68) + u32(0xFF)
    assert adjust_announce_payload(two, copy_paste=False, file_xfer=True) == u32(0) + u32(0) + u32(0xFF)
    caps = AnnounceCapabilities.parse(payload).caps
    adj = adjust_agent_caps(caps, copy_paste=False, file_xfer=False)
    assert AnnounceCapabilities.parse(u32(1) + u32(0x3AD87)).caps == adj
    assert AgentCap.FILE_XFER_DISABLED in adj and AgentCap.CLIPBOARD_SELECTION not in adj


def test_filter_rewrites_announce_pieces_wherever_cut() -> None:
    msg = AnnounceCapabilities(False, frozenset({AgentCap.CLIPBOARD_SELECTION, AgentCap.REPLY, 40})).message()
    want = AnnounceCapabilities(False, frozenset({AgentCap.REPLY, AgentCap.FILE_XFER_DISABLED, 40})).message()
    for piece in (20, 21, 23, 25, 27, 2048):
        f = AgentMsgFilter(copy_paste=False, file_xfer=False)
        out = []
        for p in split_message(msg, piece):
            assert f.process(p) == OK
            out.append(f.adjust_capabilities(p))
        assert b"".join(out) == want.pack()
    f = AgentMsgFilter(copy_paste=False, file_xfer=False)
    other = Reply(6, 0x68).message().pack()  # not an announce: untouched
    assert f.process(other) == OK and f.adjust_capabilities(other) == other


# -- the agent mouse -------------------------------------------------------------------------------------


def test_agent_mouse() -> None:
    assert agent_buttons(MouseButtonMask.LEFT | MouseButtonMask.RIGHT) == AgentButton.LEFT | AgentButton.RIGHT
    assert [int(b) for b in AgentButton] == [1 << i for i in range(1, 8)]
    pos = mouse_position_state(10, 20, MouseButtonMask.LEFT, 1)
    assert pos == MouseState(10, 20, 0b10, 1)
    up = mouse_press_state(pos, MouseButton.UP, MouseButtonMask.LEFT)
    assert up == MouseState(10, 20, 0b10 | 0x10, 1)
    assert mouse_press_state(pos, MouseButton.DOWN, 0).buttons == 0x20
    assert mouse_press_state(pos, MouseButton.RIGHT, MouseButtonMask.RIGHT).buttons == 0b1000
    assert mouse_press_state(pos, 200, 0).buttons == 0  # an unknown button adds nothing
    assert mouse_release_state(up, MouseButtonMask.LEFT) == pos
    assert wheel_states(pos, -1) == (MouseState(10, 20, 0x12, 1), pos)
    assert wheel_states(pos, 3) == (MouseState(10, 20, 0x22, 1), pos)
    assert wheel_states(pos, 0) == ()


# -- fuzzing -----------------------------------------------------------------------------------------------

PARSERS = [
    MouseState.parse,
    MonitorsConfig.parse,
    Reply.parse,
    DisplayConfig.parse,
    FileXferStart.parse,
    FileXferData.parse,
    ClientDisconnected.parse,
    MaxClipboard.parse,
    GraphicsDeviceInfo.parse,
]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.booleans(), st.booleans())
def test_fuzz_every_parser(data: bytes, sel: bool, serial: bool) -> None:
    calls = [lambda d, p=p: p(d) for p in PARSERS] + [
        lambda d: Clipboard.parse(d, selection=sel),
        lambda d: ClipboardGrab.parse(d, selection=sel, serial=serial),
        lambda d: ClipboardRequest.parse(d, selection=sel),
        lambda d: ClipboardRelease.parse(d, selection=sel),
        FileXferStatusError.parse,
    ]
    for call in calls:
        try:
            call(data)
        except ProtocolError:
            pass
    caps = (SEL if sel else set()) | (SERIAL if serial else set())
    for mtype in range(18):
        try:
            body = parse_body(AgentMessage(mtype, data), caps)
        except ProtocolError:
            continue
        assert parse_body(body.message(), caps) == body  # what parses packs back the same


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 0xFFFFFFFF),
    st.lists(
        st.builds(
            MonitorConfig,
            *[st.integers(0, 0xFFFFFFFF)] * 3,
            *[st.integers(-(1 << 31), (1 << 31) - 1)] * 2,
            st.integers(0, 0xFFFF),
            st.integers(0, 0xFFFF),
        ),
        max_size=4,
    ),
)
def test_monitors_config_roundtrip(flags: int, mons: list[MonitorConfig]) -> None:
    flags &= 3
    if not flags & MonitorsFlag.PHYSICAL_SIZE:
        mons = [MonitorConfig(m.width, m.height, m.depth, m.x, m.y) for m in mons]
    mc = MonitorsConfig(tuple(mons), flags)
    assert MonitorsConfig.parse(mc.pack()) == mc


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(1, 700), min_size=1, max_size=8))
def test_fuzz_chunk_reader(data: bytes, cuts: list[int]) -> None:
    r = ChunkReader(max_chunk_size=2500)
    pos, i = 0, 0
    try:
        while pos < len(data):
            step = cuts[i % len(cuts)]
            for p in r.feed(data[pos : pos + step]):
                assert 0 < len(p.data) <= 2048 and p.port in (1, 2)
            pos, i = pos + step, i + 1
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=2100), max_size=8), st.booleans(), st.booleans(), st.booleans())
def test_fuzz_filter_answers_a_result(pieces: list[bytes], cp: bool, fx: bool, mon: bool) -> None:
    f = AgentMsgFilter(copy_paste=cp, file_xfer=fx, use_client_monitors_config=mon)
    for p in pieces:
        res = f.process(p)
        assert isinstance(res, FilterResult)
        assert len(f.adjust_capabilities(p)) == len(p)


@st.composite
def piece_streams(draw: st.DrawFn) -> list[bytes]:
    """Messages cut into pieces, mostly by the rules, sometimes not (pieces glued or cut badly)."""
    raw = b"".join(
        header(draw(st.integers(0, 17)), size, protocol=draw(st.sampled_from([1, 1, 1, 2]))) + bytes(size)
        for size in draw(st.lists(st.integers(0, 3000), max_size=4))
    )
    cuts = sorted(set(draw(st.lists(st.integers(0, len(raw)), max_size=8))))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]


@settings(max_examples=300, deadline=None)
@given(piece_streams())
def test_filter_and_stream_reader_agree_on_errors(pieces: list[bytes]) -> None:
    f, r = AgentMsgFilter(), AgentStreamReader(1 << 32)
    for p in pieces:
        res = f.process(p)
        try:
            r.feed(p)
        except ProtocolError:
            assert res == ERR
            return
        assert res == OK


def test_intercepted_monitors_config_reassembles_within_libspices_bound() -> None:
    # reds_on_main_agent_monitors_config: the pieces answered MONITORS_CONFIG are gathered (at most
    # 20 + 6152 bytes) and parsed with agent_check_message; a stream reader with that bound does it
    mc = MonitorsConfig(tuple(MonitorConfig(640 + i, 480) for i in range(200)), MonitorsFlag.USE_POS)
    f, r = AgentMsgFilter(use_client_monitors_config=True), AgentStreamReader(MONITORS_CONFIG_MAX_SIZE)
    got = [m for p in split_message(mc.message()) if f.process(p) == MON for m in r.feed(p)]
    assert [MonitorsConfig.parse(m.data) for m in got] == [mc]
    too_big = MonitorsConfig(tuple(MonitorConfig(1, 1) for _ in range(308)))
    with pytest.raises(ProtocolError):
        AgentStreamReader(MONITORS_CONFIG_MAX_SIZE).feed(split_message(too_big.message())[0])
