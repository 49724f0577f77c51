#!/usr/bin/env python3
"""Capture SPICE wire fixtures: real spice-gtk clients against libspice-server (Xspice) and ours.

Two kinds of session:

* ``libspice_*``: the reference server, libspice-server driven by Xspice (steps below);
* ``spiceserver_*``: this project's server, ``python3 -m spiceserver demo --port P
  [--password PW]`` (main + inputs, a keyboard, a mouse and a tablet that print events),
  driven by ``tests/interop/gi_client.py`` under ``/usr/bin/python3`` (spice-gtk via
  PyGObject, no display) with a scripted list of inputs actions.  The demo's stdout (what
  the host saw) is saved as ``demo_stdout.txt`` next to the streams.

What it does, per libspice session:

1. writes an Xorg config for Xspice (Device: NumHeads 1, SurfaceBufferSize 128,
   CommandBufferSize 128, FrameBufferSize 16, SpiceAddr 127.0.0.1) and starts
   ``Xspice --config C --port P [--disable-ticketing | --password PW] :D``;
2. starts ``tshark -i lo -f "tcp port P" -F pcap -w capture.pcap``;
3. runs a real client (spice-gtk 0.42):
   - ``libspice_screenshot``: ``spicy-screenshot -h 127.0.0.1 -p P -o out.ppm`` (no ticketing);
   - ``libspice_password``: same against ``Xspice --password``, client ``-w PASSWORD``;
   - ``libspice_password_wrong``: same with a wrong client password (link fails);
   - ``libspice_inputs``: ``spicy`` inside its own ``Xvfb`` display, driven with
     ``xdotool`` (keys a, Shift+b, Right, Return; mouse moves, clicks, wheel);
   (``spiceserver_*`` sessions start the demo instead of Xspice and run gi_client instead
   of spicy/spicy-screenshot; the capture is the same);
4. stops every process it started, by PID (SIGTERM/SIGINT, then SIGKILL);
5. reassembles each TCP connection from the pcap with its own stdlib pcap/pcapng
   reader (cross-checked against ``tshark -z follow,tcp,raw,K``) and writes, in
   ``tests/fixtures/<session>/``:
   ``connNN.c2s.bin`` / ``connNN.s2c.bin`` (NN = connection start order),
   ``index.json`` (channel type/id decoded from the SpiceLinkMess, caps, header kind,
   byte counts, message type counts, tool versions, capture date, truncation notes),
   ``messages.txt`` (every record found by ``tests/fixtures/split.py``),
   ``dissect.txt`` (tshark SPICE dissector summary + ``-O spice -V`` detail, ~200 KB max),
   ``capture.pcap`` (only if <= 2 MB).  Streams longer than 2 MB are cut after the
   last complete message that fits (noted in index.json).

Usage (as root or a user allowed to capture on lo)::

    python3 tools/capture_fixtures.py                       # all sessions
    python3 tools/capture_fixtures.py libspice_inputs       # just one
    python3 tools/capture_fixtures.py spiceserver_inputs spiceserver_password
    python3 tools/capture_fixtures.py --keep-work           # keep /tmp work dirs

Needs: Xspice (xserver-xspice), spicy + spicy-screenshot (spice-client-gtk),
tshark, Xvfb, xdotool for the libspice sessions; tshark, ``/usr/bin/python3`` with
python3-gi and gir1.2-spiceclientglib-2.0 for the spiceserver sessions (run this
script with the interpreter that can ``import spiceserver``; it runs the demo with
that interpreter from the repository root).  Only 127.0.0.1 is used; X displays
:80-:89 and ports 5980-5984 (libspice) and 5990-5993 (spiceserver).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
sys.path.insert(0, str(REPO))

from tests.support.xspice import XORG_CONF  # noqa: E402  (the same config the interop tests use)

_spec = importlib.util.spec_from_file_location("spice_fixture_split", FIXTURES / "split.py")
split = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(split)

MAX_KEEP = 2 * 1024 * 1024  # pcap / stream size limit
DISSECT_LIMIT = 200 * 1024  # dissect.txt size limit
HOST = "127.0.0.1"

SESSIONS = {
    "libspice_screenshot": {
        "display": 80,
        "port": 5980,
        "password": None,
        "client": "screenshot",
        "description": "spicy-screenshot (spice-gtk 0.42) against Xspice --disable-ticketing: "
        "main + display, first frame saved, then disconnect.",
    },
    "libspice_password": {
        "display": 82,
        "port": 5982,
        "password": "fixture-pw",
        "client": "screenshot",
        "description": "spicy-screenshot -w fixture-pw against Xspice --password fixture-pw: "
        "ticket exchange (RSA-OAEP blob) with a good password.",
    },
    "libspice_password_wrong": {
        "display": 83,
        "port": 5983,
        "password": "fixture-pw",
        "client": "screenshot",
        "client_password": "wrong-pw",
        "description": "spicy-screenshot -w wrong-pw against Xspice --password fixture-pw: "
        "main link rejected with link result PERMISSION_DENIED (7).",
    },
    "libspice_drawing": {
        "display": 84,
        "port": 5984,
        "password": None,
        "client": "spicy",
        "xvfb": 89,
        "script": "drawing_script",
        "description": "spicy (GTK client) in Xvfb :89 watching Xspice :84 while a raw X11 "
        "client draws on the Xspice screen: window map, solid fills, core-font "
        "text, a wide polyline, PutImage, CopyArea, a 60-frame PutImage "
        "animation (video-stream candidate), window moves, unmap.",
    },
    "libspice_inputs": {
        "display": 81,
        "port": 5981,
        "password": None,
        "client": "spicy",
        "xvfb": 88,
        "script": "inputs_script",
        "description": "spicy (GTK client) in Xvfb :88 against Xspice :81; xdotool focuses the "
        "window, taps a, Shift+b, Right, Return, holds c and Left, toggles Caps "
        "Lock twice, moves the mouse, clicks left/right, scrolls up/down, drags, "
        "then spicy is terminated.",
    },
}

# spiceserver sessions: our demo server, driven by gi_client.py (spice-gtk through PyGObject).
GI_PYTHON = "/usr/bin/python3"
GI_CLIENT = "tests/interop/gi_client.py"  # relative to the repository root (the client's cwd)

_KEYS = [
    # KEY_DOWN / KEY_UP with a plain scancode ('a'), a held modifier (Shift+b) and an
    # E0-prefixed key (0x148 = Up: E0 48 / E0 C8 on the wire).
    {"op": "key_press", "scancode": 0x1E},
    {"op": "key_release", "scancode": 0x1E},
    {"op": "key_press", "scancode": 0x2A},
    {"op": "key_press", "scancode": 0x30},
    {"op": "key_release", "scancode": 0x30},
    {"op": "key_release", "scancode": 0x2A},
    {"op": "key_press", "scancode": 0x148},
    {"op": "key_release", "scancode": 0x148},
    # KEY_SCANCODE (the server has inputs cap KEY_SCANCODE): Return, then Right (E0 4D).
    {"op": "key_press_and_release", "scancode": 0x1C},
    {"op": "key_press_and_release", "scancode": 0x14D},
]

INPUTS_ACTIONS = [
    *_KEYS,
    {"op": "wait", "ms": 100},
    # Client mouse mode: MOUSE_POSITION; 5 positions so MOUSE_MOTION_ACK (every 4) shows up.
    *[{"op": "position", "x": 100 + 40 * i, "y": 100 + 30 * i, "display": 0, "buttons": 0} for i in range(5)],
    {"op": "wait", "ms": 100},
    {"op": "button_press", "button": 1, "buttons": 0},
    {"op": "button_release", "button": 1, "buttons": 1},
    {"op": "button_press", "button": 3, "buttons": 0},
    {"op": "button_release", "button": 3, "buttons": 4},
    # wheel up / down (buttons 4/5 add nothing to the mask)
    {"op": "button_press", "button": 4, "buttons": 0},
    {"op": "button_release", "button": 4, "buttons": 0},
    {"op": "button_press", "button": 5, "buttons": 0},
    {"op": "button_release", "button": 5, "buttons": 0},
    # drag: left held while the pointer moves
    {"op": "button_press", "button": 1, "buttons": 0},
    {"op": "position", "x": 300, "y": 250, "display": 0, "buttons": 1},
    {"op": "button_release", "button": 1, "buttons": 1},
    # lock LEDs (client KEY_MODIFIERS): Caps Lock on, then off
    {"op": "key_locks", "locks": 4},
    {"op": "wait", "ms": 100},
    {"op": "key_locks", "locks": 0},
    # stay linked > 2 s: libspice answers a client KEY_MODIFIERS with its own KEY_MODIFIERS 2 s
    # later (KEY_MODIFIERS_TTL) and pings every channel ~100 ms after the link; compare.
    {"op": "wait", "ms": 2500},
]

PASSWORD_ACTIONS = [
    {"op": "key_press", "scancode": 0x1E},
    {"op": "key_release", "scancode": 0x1E},
    {"op": "key_press_and_release", "scancode": 0x30},
    {"op": "wait", "ms": 200},
]

SERVER_MOUSE_ACTIONS = [
    # spice-gtk asked for client mode on its own (INIT says client is supported);
    # ask for server mode back.  spice-gtk then keeps server mode (its requested mode).
    {"op": "mouse_mode", "mode": "server"},
    {"op": "wait_mouse_mode", "mode": "server", "timeout_ms": 3000},
    # Server mouse mode: MOUSE_MOTION deltas; 5 so MOUSE_MOTION_ACK shows up.
    {"op": "motion", "dx": 10, "dy": 5, "buttons": 0},
    {"op": "motion", "dx": -3, "dy": 7, "buttons": 0},
    {"op": "motion", "dx": 20, "dy": 0, "buttons": 0},
    {"op": "motion", "dx": 0, "dy": -15, "buttons": 0},
    {"op": "motion", "dx": 4, "dy": 4, "buttons": 0},
    {"op": "wait", "ms": 100},
    {"op": "button_press", "button": 1, "buttons": 0},
    {"op": "motion", "dx": 6, "dy": 6, "buttons": 1},
    {"op": "button_release", "button": 1, "buttons": 1},
    {"op": "button_press", "button": 2, "buttons": 0},
    {"op": "button_release", "button": 2, "buttons": 2},
    {"op": "button_press", "button": 3, "buttons": 0},
    {"op": "button_release", "button": 3, "buttons": 4},
    {"op": "button_press", "button": 4, "buttons": 0},
    {"op": "button_release", "button": 4, "buttons": 0},
    {"op": "button_press", "button": 5, "buttons": 0},
    {"op": "button_release", "button": 5, "buttons": 0},
    {"op": "wait", "ms": 200},
]

SESSIONS.update(
    {
        "spiceserver_inputs": {
            "server": "spiceserver",
            "port": 5990,
            "password": None,
            "client": "gi",
            "actions": INPUTS_ACTIONS,
            "expect_rc": 0,
            "description": "gi_client.py (spice-gtk 0.42 via PyGObject) against `python3 -m spiceserver demo` "
            "(no password): main + inputs; waits for client mouse mode, then KEY_DOWN/UP (a, Shift+b, "
            "E0 Up), KEY_SCANCODE (Return, E0 Right), 6 positions, left/right clicks, wheel up/down, "
            "a left drag, Caps Lock LED on/off (KEY_MODIFIERS), stays 2.5 s more, then disconnects.",
        },
        "spiceserver_password": {
            "server": "spiceserver",
            "port": 5991,
            "password": "fixture-pw",
            "client": "gi",
            "actions": PASSWORD_ACTIONS,
            "expect_rc": 0,
            "description": "gi_client.py --password fixture-pw against `python3 -m spiceserver demo --password "
            "fixture-pw`: ticket exchange (RSA-OAEP blob) with the right password, then a couple of keys.",
        },
        "spiceserver_password_wrong": {
            "server": "spiceserver",
            "port": 5992,
            "password": "fixture-pw",
            "client_password": "wrong-pw",
            "client": "gi",
            "actions": [],
            "expect_rc": 10,
            "description": "gi_client.py --password wrong-pw against `python3 -m spiceserver demo --password "
            "fixture-pw`: main link rejected with link result PERMISSION_DENIED (7); the client exits 10 "
            "(ERROR_AUTH).",
        },
        "spiceserver_server_mouse": {
            "server": "spiceserver",
            "port": 5993,
            "password": None,
            "client": "gi",
            "actions": SERVER_MOUSE_ACTIONS,
            "expect_rc": 0,
            "description": "gi_client.py against `python3 -m spiceserver demo`: after the automatic switch to "
            "client mouse mode the client sends MOUSE_MODE_REQUEST(server), waits for MOUSE_MODE(server), "
            "then sends MOUSE_MOTION deltas, left/middle/right clicks, a left drag and wheel up/down.",
        },
    }
)



def log(msg: str) -> None:
    print("[capture] " + msg, flush=True)


# --------------------------------------------------------------------------- processes


class Processes:
    """Every process we start, stopped by PID (never by name)."""

    def __init__(self):
        self.procs: list[tuple[str, subprocess.Popen, int, bool]] = []

    def start(
        self,
        name,
        argv,
        *,
        log_path: Path | None = None,
        stderr_path: Path | None = None,
        stop_signal=signal.SIGTERM,
        env=None,
        cwd=None,
        children_first=False,
    ) -> subprocess.Popen:
        """Start ``argv`` in its own session; stdout goes to ``log_path`` (or nowhere), and
        stderr too unless ``stderr_path`` is given."""
        log(f"start {name}: {' '.join(argv)}")
        with open(log_path or os.devnull, "w") as out, open(stderr_path or os.devnull, "w") as err:
            p = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=err if stderr_path else subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append((name, p, stop_signal, children_first))
        return p

    @staticmethod
    def children(pid: int) -> list[int]:
        out = []
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out += [int(x) for x in f.read().split()]
        except OSError:
            pass
        return out

    @staticmethod
    def _wait_pid_gone(pid: int, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            # zombie?
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().split(")")[-1].split()[0] == "Z":
                        return True
            except OSError:
                return True
            time.sleep(0.1)
        return False

    def stop(self, p: subprocess.Popen, timeout: float = 10.0) -> None:
        entry = next((e for e in self.procs if e[1] is p), None)
        if entry is None:
            return
        self.procs.remove(entry)
        name, _, sig, children_first = entry
        if p.poll() is not None:
            return
        kids = self.children(p.pid)
        if children_first:
            # Xspice is a Python wrapper around Xorg: stop Xorg cleanly first.
            self._stop_pids(name, kids, timeout)
        log(f"stop {name} pid {p.pid} ({signal.Signals(sig).name})")
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{name} pid {p.pid} did not exit; SIGKILL")
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
        # Leftover children (e.g. tshark's dumpcap) are stopped by PID too.
        self._stop_pids(name, [k for k in kids if not self._wait_pid_gone(k, 2.0)], timeout)

    def _stop_pids(self, name, kids, timeout):
        for kid in kids:
            log(f"stop {name} child pid {kid} (SIGTERM)")
            try:
                os.kill(kid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for kid in kids:
            if not self._wait_pid_gone(kid, timeout):
                log(f"child pid {kid} did not exit; SIGKILL")
                try:
                    os.kill(kid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def stop_all(self) -> None:
        for _name, p, _sig, _ in list(reversed(self.procs)):
            self.stop(p)


def listening(port: int) -> bool:
    return _tcp_states(port, want_state="0A") > 0


def established(port: int) -> int:
    return _tcp_states(port, want_state="01")


def _tcp_states(port: int, want_state: str) -> int:
    n = 0
    for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(fn) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, state = parts[1], parts[3]
                    if int(local.rsplit(":", 1)[1], 16) == port and state == want_state:
                        n += 1
        except OSError:
            pass
    return n


def wait_for(pred, timeout: float, what: str, step: float = 0.1) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(step)
    raise RuntimeError("timed out waiting for " + what)


def check_display_free(d: int) -> None:
    lock = f"/tmp/.X{d}-lock"
    if os.path.exists(f"/tmp/.X11-unix/X{d}") or os.path.exists(lock):
        try:
            pid = int(Path(lock).read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return  # stale; the X server cleans it up
        raise RuntimeError(f"X display :{d} is in use (pid {pid})")


# --------------------------------------------------------------------------- pcap parsing


def read_frames(path: Path):
    """Yield (linktype, frame bytes) from a pcap or pcapng file."""
    data = path.read_bytes()
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        linktype = struct.unpack_from(e + "I", data, 20)[0] & 0x0FFFFFFF
        pos = 24
        while pos + 16 <= len(data):
            incl = struct.unpack_from(e + "I", data, pos + 8)[0]
            yield linktype, data[pos + 16 : pos + 16 + incl]
            pos += 16 + incl
        return
    if magic == b"\x0a\x0d\x0d\x0a":
        pos = 0
        e = "<"
        linktypes: list[int] = []
        while pos + 12 <= len(data):
            btype = struct.unpack_from(e + "I", data, pos)[0]
            if btype == 0x0A0D0D0A:
                bom = data[pos + 8 : pos + 12]
                e = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
                linktypes = []
            blen = struct.unpack_from(e + "I", data, pos + 4)[0]
            if blen < 12:
                raise ValueError("corrupt pcapng block")
            body = data[pos + 8 : pos + blen - 4]
            if btype == 1:  # IDB
                linktypes.append(struct.unpack_from(e + "H", body, 0)[0])
            elif btype == 6:  # EPB
                iface, _, _, caplen, _ = struct.unpack_from(e + "IIIII", body, 0)
                yield linktypes[iface], body[20 : 20 + caplen]
            elif btype == 3:  # SPB
                yield linktypes[0], body[4:]
            pos += blen
        return
    raise ValueError(f"not a pcap/pcapng file: {path}")


def decode_tcp(linktype: int, frame: bytes):
    """Return (src, sport, dst, dport, seq, flags, payload) for TCP frames, else None."""
    if linktype == 1:  # Ethernet
        if len(frame) < 14:
            return None
        etype = struct.unpack_from(">H", frame, 12)[0]
        ip = frame[14:]
    elif linktype == 113:  # Linux cooked v1
        etype = struct.unpack_from(">H", frame, 14)[0]
        ip = frame[16:]
    elif linktype == 276:  # Linux cooked v2
        etype = struct.unpack_from(">H", frame, 0)[0]
        ip = frame[20:]
    elif linktype == 0:  # BSD loopback
        fam = struct.unpack_from("<I", frame, 0)[0]
        etype = 0x0800 if fam == 2 else 0x86DD
        ip = frame[4:]
    elif linktype in (101, 228):  # raw IPv4
        etype = 0x0800
        ip = frame
    else:
        return None
    if etype == 0x0800:
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from(">H", ip, 2)[0]
        if ip[9] != 6:
            return None
        src, dst = ip[12:16], ip[16:20]
        tcp = ip[ihl:total]
    elif etype == 0x86DD:
        if ip[6] != 6:
            return None
        plen = struct.unpack_from(">H", ip, 4)[0]
        src, dst = ip[8:24], ip[24:40]
        tcp = ip[40 : 40 + plen]
    else:
        return None
    sport, dport, seq = struct.unpack_from(">HHI", tcp, 0)
    off = (tcp[12] >> 4) * 4
    flags = tcp[13]
    return bytes(src), sport, bytes(dst), dport, seq, flags, bytes(tcp[off:])


SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04


class TcpConn:
    def __init__(self, client, server, isn):
        self.client = client  # (ip, port)
        self.server = server
        self.isn = {"c2s": isn, "s2c": None}
        self.segs = {"c2s": [], "s2c": []}
        self.closed = False

    def stream(self, d: str) -> tuple[bytes, list]:
        isn = self.isn[d]
        if isn is None:
            return b"", []
        buf = bytearray()
        gaps = []
        for rel, payload in sorted(self.segs[d], key=lambda s: s[0]):
            end = rel + len(payload)
            if end <= len(buf):
                continue  # retransmission / duplicate
            if rel > len(buf):
                gaps.append((len(buf), rel))
                buf.extend(b"\0" * (rel - len(buf)))
            buf.extend(payload[len(buf) - rel :])
        return bytes(buf), gaps


def tcp_connections(pcap: Path, port: int) -> list[TcpConn]:
    conns: list[TcpConn] = []
    live: dict = {}
    for linktype, frame in read_frames(pcap):
        t = decode_tcp(linktype, frame)
        if t is None:
            continue
        src, sport, dst, dport, seq, flags, payload = t
        if port not in (sport, dport):
            continue
        if flags & SYN and not flags & ACK:
            key = (src, sport, dst, dport)
            if key in live and not live[key].closed and live[key].isn["c2s"] == seq:
                continue  # retransmitted SYN
            c = TcpConn((src, sport), (dst, dport), seq)
            live[key] = c
            conns.append(c)
            continue
        if (src, sport, dst, dport) in live:
            c, d = live[(src, sport, dst, dport)], "c2s"
        elif (dst, dport, src, sport) in live:
            c, d = live[(dst, dport, src, sport)], "s2c"
        else:
            continue  # started before the capture
        if flags & SYN:  # SYN-ACK
            c.isn["s2c"] = seq
            continue
        if payload and c.isn[d] is not None:
            rel = (seq - c.isn[d] - 1) & 0xFFFFFFFF
            c.segs[d].append((rel, payload))
        if flags & (FIN | RST) and d == "c2s":
            pass
    return conns


def tshark_follow(pcap: Path, index: int) -> tuple[int, bytes, bytes]:
    """(client port, c2s, s2c) of tcp.stream ``index`` according to tshark."""
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-q", "-z", f"follow,tcp,raw,{index}"], capture_output=True, text=True, check=True
    ).stdout
    c2s, s2c = bytearray(), bytearray()
    node0_port = None
    started = False
    for line in out.splitlines():
        if line.startswith("Node 0:"):
            node0_port = int(line.rsplit(":", 1)[1])
            started = True
            continue
        if line.startswith("Node 1:") or line.startswith("====") or not started:
            continue
        if line.startswith("\t"):
            s2c += bytes.fromhex(line.strip())
        elif line.strip():
            c2s += bytes.fromhex(line.strip())
    return node0_port, bytes(c2s), bytes(s2c)


# --------------------------------------------------------------------------- tool versions


def _run_text(argv, **kw) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, **kw)
    except (OSError, subprocess.TimeoutExpired):
        return None


def spiceserver_version() -> str | None:
    """``python3 -c "import spiceserver; print(spiceserver.__version__)"`` from the repository root."""
    r = _run_text([sys.executable, "-c", "import spiceserver; print(spiceserver.__version__)"], cwd=REPO)
    return r.stdout.strip() if r is not None and r.returncode == 0 else None


def tool_versions(kinds=("libspice",)) -> dict:
    """Versions of the tools used by the selected kinds of session (``libspice``, ``spiceserver``)."""
    v = {}
    pkgs = ["libspice-client-glib-2.0-8", "tshark"]
    if "libspice" in kinds:
        pkgs += [
            "xserver-xspice",
            "libspice-server1",
            "spice-client-gtk",
            "libspice-client-gtk-3.0-5",
            "xvfb",
            "xdotool",
        ]
    if "spiceserver" in kinds:
        pkgs += ["gir1.2-spiceclientglib-2.0", "python3-gi"]
    r = _run_text(["dpkg-query", "-W", "-f", "${Package}\t${Version}\n", *pkgs])
    for line in (r.stdout if r else "").splitlines():
        name, _, ver = line.partition("\t")
        v[name] = ver
    r = _run_text(["tshark", "--version"])
    v["tshark --version"] = r.stdout.splitlines()[0] if r and r.stdout else None
    if "libspice" in kinds:
        r = _run_text(["spicy-screenshot", "--version"])
        v["spicy-screenshot --version"] = (r.stdout or r.stderr).strip() if r else None
        r = _run_text(["Xorg", "-version"])
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("X.Org X Server")] if r else []
        v["Xorg -version"] = lines[0] if lines else None
    if "spiceserver" in kinds:
        v["spiceserver"] = spiceserver_version()
        r = _run_text([GI_PYTHON, "--version"])
        v[f"{GI_PYTHON} --version"] = (r.stdout or r.stderr).strip() if r else None
        r = _run_text(
            [
                GI_PYTHON,
                "-c",
                "import gi; gi.require_version('SpiceClientGLib', '2.0'); "
                "from gi.repository import SpiceClientGLib as S; print(S.util_get_version_string())",
            ]
        )
        v["spice-gtk (SpiceClientGLib.util_get_version_string)"] = r.stdout.strip() if r and r.returncode == 0 else None
    v["python"] = sys.version.split()[0]
    return v


# --------------------------------------------------------------------------- sessions


def run_screenshot_client(cfg, work: Path, procs: Processes) -> dict:
    argv = ["spicy-screenshot", "-h", HOST, "-p", str(cfg["port"]), "-o", str(work / "out.ppm")]
    pw = cfg.get("client_password", cfg["password"])
    if pw is not None:
        argv[1:1] = ["-w", pw]
    log("run " + " ".join(argv))
    p = procs.start("spicy-screenshot", argv, log_path=work / "client.log")
    try:
        rc = p.wait(60)
    except subprocess.TimeoutExpired:
        rc = None
    procs.stop(p)
    ppm = work / "out.ppm"
    header = None
    if ppm.exists():
        with open(ppm, "rb") as f:
            header = f.read(20).split(b"\n")[:3]
            header = [h.decode("ascii", "replace") for h in header]
    log(f"spicy-screenshot rc={rc} ppm={header}")
    return {"client_argv": argv, "client_rc": rc, "screenshot_ppm_header": header}


def xdo(display: int, *args, check=True) -> str:
    env = dict(os.environ, DISPLAY=f":{display}")
    r = subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"xdotool {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout.strip()


def inputs_script(act, win, cx, cy, cfg, work, procs) -> None:
    """Keys and mouse events over the spice widget (runs with the spicy window focused)."""
    act("mousemove", "--window", win, str(cx), str(cy))
    time.sleep(0.7)
    act("click", "1")  # focus the widget / left button
    time.sleep(0.7)
    act("windowfocus", win, check=False)
    time.sleep(0.3)
    # Quick taps: spice-gtk coalesces press+release within its key delay into KEY_SCANCODE.
    act("key", "--delay", "150", "a")
    time.sleep(0.3)
    act("key", "--delay", "150", "shift+b")
    time.sleep(0.3)
    act("key", "--delay", "150", "Right")
    time.sleep(0.3)
    act("key", "--delay", "150", "Return")
    time.sleep(0.5)
    # Held keys: separate KEY_DOWN / KEY_UP (plain and extended scancodes).
    for key in ("c", "Left"):
        act("keydown", key)
        time.sleep(0.5)
        act("keyup", key)
        time.sleep(0.3)
    # Caps Lock on and off (lock state / KEY_MODIFIERS traffic).
    for _ in range(2):
        act("keydown", "Caps_Lock")
        time.sleep(0.4)
        act("keyup", "Caps_Lock")
        time.sleep(0.6)
    for dx, dy in ((40, 10), (80, 30), (120, 60), (160, 90)):
        act("mousemove", "--window", win, str(cx + dx), str(cy + dy))
        time.sleep(0.15)
    act("click", "3")  # right button
    time.sleep(0.4)
    act("click", "4")  # wheel up
    time.sleep(0.4)
    act("click", "5")  # wheel down
    time.sleep(0.4)
    act("mousedown", "1")  # drag with left held
    act("mousemove", "--window", win, str(cx - 50), str(cy - 50))
    time.sleep(0.2)
    act("mouseup", "1")
    time.sleep(2.0)


class X11:
    """Minimal X11 protocol client (stdlib socket) used to draw on the Xspice screen.

    Only what the drawing session needs: windows, GCs, solid fills, CopyArea,
    PutImage (ZPixmap), core-font text, lines, window moves.
    """

    def __init__(self, display: int):
        import socket

        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(f"/tmp/.X11-unix/X{display}")
        self.sock.sendall(struct.pack("<BxHHHH2x", 0x6C, 11, 0, 0, 0))
        head = self._recv(8)
        if head[0] != 1:
            extra = self._recv(struct.unpack_from("<H", head, 6)[0] * 4)
            raise RuntimeError(f"X11 setup refused: {extra!r}")
        data = self._recv(struct.unpack_from("<H", head, 6)[0] * 4)
        (_, self.id_base, self.id_mask, _, vendor_len, self.max_req, _n_screens, n_formats) = struct.unpack_from(
            "<IIIIHHBB", data, 0
        )
        pos = 32 + ((vendor_len + 3) & ~3)
        self.bpp = {}
        for _ in range(n_formats):
            depth, bpp, _pad = struct.unpack_from("<BBB", data, pos)
            self.bpp[depth] = bpp
            pos += 8
        (self.root, self.colormap, self.white, self.black, _, self.width, self.height) = struct.unpack_from(
            "<IIIIIHH", data, pos
        )
        self.root_visual = struct.unpack_from("<I", data, pos + 32)[0]
        self.depth = data[pos + 38]
        self.next_id = 1

    def _recv(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise RuntimeError("X server closed the connection")
            buf += chunk
        return buf

    def new_id(self) -> int:
        rid = self.id_base | (self.next_id & self.id_mask)
        self.next_id += 1
        return rid

    def req(self, opcode: int, data_byte: int, body: bytes) -> None:
        body += b"\0" * (-len(body) % 4)
        self.sock.sendall(struct.pack("<BBH", opcode, data_byte, 1 + len(body) // 4) + body)

    def sync(self) -> None:
        """GetInputFocus round trip; raises on any X error queued before it."""
        self.req(43, 0, b"")
        while True:
            ev = self._recv(32)
            if ev[0] == 0:
                raise RuntimeError(f"X error code {ev[1]} (major {ev[10]})")
            if ev[0] == 1:
                self._recv(struct.unpack_from("<I", ev, 4)[0] * 4)
                return

    def create_window(self, x, y, w, h, bg) -> int:
        wid = self.new_id()
        self.req(
            1, self.depth, struct.pack("<IIhhHHHHII", wid, self.root, x, y, w, h, 0, 1, 0, 0x2) + struct.pack("<I", bg)
        )
        return wid

    def map(self, wid):
        self.req(8, 0, struct.pack("<I", wid))

    def unmap(self, wid):
        self.req(10, 0, struct.pack("<I", wid))

    def move(self, wid, x, y):
        self.req(12, 0, struct.pack("<IH2xii", wid, 0x3, x, y))

    def create_gc(self, drawable) -> int:
        gc = self.new_id()
        self.req(55, 0, struct.pack("<III", gc, drawable, 0x10000) + struct.pack("<I", 0))
        return gc

    def set_fg(self, gc, rgb):
        self.req(56, 0, struct.pack("<III", gc, 0x4, rgb))

    def set_font(self, gc, font):
        self.req(56, 0, struct.pack("<III", gc, 0x4000, font))

    def set_line_width(self, gc, width):
        self.req(56, 0, struct.pack("<III", gc, 0x10, width))

    def fill_rects(self, drawable, gc, rects):
        self.req(70, 0, struct.pack("<II", drawable, gc) + b"".join(struct.pack("<hhHH", *r) for r in rects))

    def lines(self, drawable, gc, points):
        self.req(65, 0, struct.pack("<II", drawable, gc) + b"".join(struct.pack("<hh", *p) for p in points))

    def copy_area(self, src, dst, gc, sx, sy, dx, dy, w, h):
        self.req(62, 0, struct.pack("<IIIhhhhHH", src, dst, gc, sx, sy, dx, dy, w, h))

    def put_image(self, drawable, gc, w, h, x, y, pixels: bytes):
        """pixels: w*h*4 bytes B,G,R,X (ZPixmap, depth 24, 32 bpp)."""
        self.req(72, 2, struct.pack("<IIHHhhBB2x", drawable, gc, w, h, x, y, 0, self.depth) + pixels)

    def open_font(self, name: bytes) -> int:
        fid = self.new_id()
        self.req(45, 0, struct.pack("<IH2x", fid, len(name)) + name)
        return fid

    def text(self, drawable, gc, x, y, s: bytes):
        self.req(76, len(s), struct.pack("<IIhh", drawable, gc, x, y) + s)

    def close(self):
        self.sock.close()


def _gradient(w, h, t):
    """A smooth, changing 'photographic' image (BGRX)."""
    import math

    rows = []
    for y in range(h):
        row = bytearray(w * 4)
        for x in range(w):
            r = int(127 + 127 * math.sin((x + 3 * t) / 17.0))
            g = int(127 + 127 * math.sin((y + 2 * t) / 23.0))
            b = int(127 + 127 * math.sin((x + y + 5 * t) / 31.0))
            row[4 * x : 4 * x + 4] = bytes((b, g, r, 0))
        rows.append(bytes(row))
    return b"".join(rows)


def drawing_script(act, win, cx, cy, cfg, work, procs) -> None:
    """Draw on the Xspice screen with a raw X11 client while spicy watches."""
    x = X11(cfg["display"])
    actions = []
    wid = x.create_window(40, 40, 640, 480, 0xE0E0E0)
    x.map(wid)
    x.sync()
    actions.append("map 640x480 window at 40,40 (background 0xE0E0E0)")
    time.sleep(1.0)
    gc = x.create_gc(wid)
    for i, rgb in enumerate((0xFF0000, 0x00FF00, 0x0000FF, 0xFFFF00)):
        x.set_fg(gc, rgb)
        x.fill_rects(wid, gc, [(20 + 70 * i, 20, 60, 40)])
    x.sync()
    actions.append("PolyFillRectangle x4 (red, green, blue, yellow)")
    time.sleep(0.7)
    font = x.open_font(b"fixed")
    x.set_font(gc, font)
    x.set_fg(gc, 0x000000)
    x.text(wid, gc, 20, 90, b"SPICE fixture text 0123456789")
    x.sync()
    actions.append("ImageText8 'SPICE fixture text 0123456789' (font fixed)")
    time.sleep(0.7)
    x.set_line_width(gc, 3)
    x.set_fg(gc, 0x800080)
    x.lines(wid, gc, [(20, 110), (300, 110), (300, 200), (20, 130)])
    x.sync()
    actions.append("PolyLine width 3")
    time.sleep(0.7)
    x.put_image(wid, gc, 128, 96, 20, 220, _gradient(128, 96, 0))
    x.sync()
    actions.append("PutImage 128x96 gradient")
    time.sleep(0.7)
    x.copy_area(wid, wid, gc, 20, 20, 340, 20, 280, 80)
    x.sync()
    actions.append("CopyArea (20,20 280x80) -> (340,20)")
    time.sleep(0.7)
    for t in range(60):  # animation: candidate for a video stream
        x.put_image(wid, gc, 192, 144, 300, 220, _gradient(192, 144, 4 * t))
        x.sync()
        time.sleep(0.04)
    actions.append("PutImage 192x144 x60 animation at (300,220)")
    time.sleep(1.5)
    for i in range(5):
        x.move(wid, 40 + 30 * i, 40 + 20 * i)
        x.sync()
        time.sleep(0.3)
    actions.append("move window x5")
    time.sleep(0.7)
    x.unmap(wid)
    x.sync()
    actions.append("unmap window")
    time.sleep(2.0)
    x.close()
    cfg.setdefault("_x11_actions", []).extend(actions)


def run_spicy_client(cfg, work: Path, procs: Processes) -> dict:
    xd = cfg["xvfb"]
    check_display_free(xd)
    xvfb = procs.start(
        "Xvfb", ["Xvfb", f":{xd}", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"], log_path=work / "xvfb.log"
    )
    wait_for(
        lambda: (
            subprocess.run(
                ["xdotool", "getdisplaygeometry"], env=dict(os.environ, DISPLAY=f":{xd}"), capture_output=True
            ).returncode
            == 0
        ),
        20,
        "Xvfb",
    )
    env = dict(os.environ, DISPLAY=f":{xd}", NO_AT_BRIDGE="1", GDK_BACKEND="x11")
    argv = ["spicy", "-h", HOST, "-p", str(cfg["port"]), "--title", "spicy-fixture"]
    spicy = procs.start("spicy", argv, env=env, log_path=work / "client.log")
    actions = []

    def act(*args, check=True):
        actions.append("xdotool " + " ".join(args))
        return xdo(xd, *args, check=check)

    # main + display + cursor + inputs
    wait_for(lambda: established(cfg["port"]) >= 4, 30, "spicy channels")
    time.sleep(2.0)
    wins = [w for w in act("search", "--sync", "--onlyvisible", "--name", "spicy-fixture").split() if w]
    best, best_area, geom = None, -1, None
    for w in wins:
        g = xdo(xd, "getwindowgeometry", "--shell", w)
        kv = dict(line.split("=", 1) for line in g.splitlines() if "=" in line)
        area = int(kv["WIDTH"]) * int(kv["HEIGHT"])
        if area > best_area:
            best, best_area, geom = w, area, kv
    if best is None:
        raise RuntimeError("spicy window not found")
    log(f"spicy window {best} geometry {geom}")
    act("windowmove", best, "0", "0")
    act("windowraise", best)
    act("windowfocus", best, check=False)
    time.sleep(0.5)
    w, h = int(geom["WIDTH"]), int(geom["HEIGHT"])
    cfg["script"](act, best, w // 2, h // 2, cfg, work, procs)
    procs.stop(spicy)
    time.sleep(0.5)
    procs.stop(xvfb)
    return {
        "client_argv": argv,
        "client_env": {"DISPLAY": f":{xd}"},
        "xvfb_argv": ["Xvfb", f":{xd}", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        "xdotool_actions": actions,
        "spicy_window_geometry": geom,
        "x11_actions": cfg.pop("_x11_actions", []),
    }


def start_tshark(port: int, work: Path, procs: Processes) -> tuple[subprocess.Popen, Path, list, Path]:
    pcap = work / "capture.pcap"
    ts_argv = ["tshark", "-i", "lo", "-f", f"tcp port {port}", "-F", "pcap", "-w", str(pcap)]
    ts_err = work / "tshark.err"
    tshark = procs.start("tshark", ts_argv, stop_signal=signal.SIGINT, log_path=ts_err)
    wait_for(lambda: "Capturing on" in ts_err.read_text(errors="replace"), 30, "tshark")
    time.sleep(1.0)
    return tshark, pcap, ts_argv, ts_err


def tshark_info(work: Path, ts_argv: list, ts_err: Path) -> dict:
    return {
        "tshark_argv": [a.replace(str(work), "$WORK") for a in ts_argv],
        "tshark_stderr": [
            ln.strip().replace(str(work), "$WORK")
            for ln in ts_err.read_text(errors="replace").splitlines()
            if "dangerous" not in ln and ln.strip() not in ("", "tshark:")
        ],
    }


def run_session(name: str, cfg: dict, work: Path, procs: Processes) -> tuple[Path, dict]:
    if cfg.get("server") == "spiceserver":
        return run_spiceserver_session(name, cfg, work, procs)
    port, disp = cfg["port"], cfg["display"]
    check_display_free(disp)
    if listening(port):
        raise RuntimeError(f"port {port} already in use")
    conf = work / "xorg.conf"
    conf.write_text(XORG_CONF)
    xs_argv = ["Xspice", "--config", str(conf), "--port", str(port)]
    if cfg["password"] is None:
        xs_argv.append("--disable-ticketing")
    else:
        xs_argv += ["--password", cfg["password"]]
    xs_argv += ["-logfile", str(work / "xorg.log"), f":{disp}"]
    xspice = procs.start("Xspice", xs_argv, log_path=work / "xspice.out", children_first=True)
    wait_for(lambda: listening(port), 30, f"Xspice to listen on {port}")
    time.sleep(1.0)

    tshark, pcap, ts_argv, ts_err = start_tshark(port, work, procs)
    try:
        if cfg["client"] == "screenshot":
            info = run_screenshot_client(cfg, work, procs)
        else:
            info = run_spicy_client(cfg, work, procs)
        time.sleep(1.5)
    finally:
        procs.stop(tshark)
        procs.stop(xspice)
    info = json.loads(json.dumps(info).replace(str(work), "$WORK"))
    info["xspice_argv"] = [a.replace(str(work), "$WORK") for a in xs_argv]
    info.update(tshark_info(work, ts_argv, ts_err))
    return pcap, info


def run_spiceserver_session(name: str, cfg: dict, work: Path, procs: Processes) -> tuple[Path, dict]:
    """Our demo server (``python3 -m spiceserver demo``) driven by gi_client.py, captured with tshark."""
    port = cfg["port"]
    if listening(port):
        raise RuntimeError(f"port {port} already in use")
    demo_argv = [sys.executable, "-m", "spiceserver", "demo", "--port", str(port)]
    if cfg["password"] is not None:
        demo_argv += ["--password", cfg["password"]]
    demo_out, demo_err = work / "demo_stdout.txt", work / "demo_stderr.txt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    # SIGINT: the demo catches KeyboardInterrupt and exits 0 after closing its listeners.
    demo = procs.start(
        "spiceserver demo",
        demo_argv,
        log_path=demo_out,
        stderr_path=demo_err,
        stop_signal=signal.SIGINT,
        env=env,
        cwd=REPO,
    )
    ready = f"spiceserver demo listening on {HOST}:{port}"
    try:
        wait_for(lambda: ready in demo_out.read_text(errors="replace") or demo.poll() is not None, 30, "the demo")
        if demo.poll() is not None:
            raise RuntimeError(f"demo exited with {demo.returncode}: {demo_err.read_text(errors='replace')}")
        wait_for(lambda: listening(port), 10, f"the demo to listen on {port}")

        tshark, pcap, ts_argv, ts_err = start_tshark(port, work, procs)
        try:
            info = run_gi_client(cfg, work, procs)
            time.sleep(1.5)
        finally:
            procs.stop(tshark)
    finally:
        procs.stop(demo)
    info["demo_argv"] = ["python3", *demo_argv[1:]]
    info["demo_python"] = sys.executable
    info["demo_rc"] = demo.returncode
    info["demo_stdout"] = "demo_stdout.txt"
    info["demo_stderr"] = demo_err.read_text(errors="replace").splitlines()
    info = json.loads(json.dumps(info).replace(str(work), "$WORK"))
    info.update(tshark_info(work, ts_argv, ts_err))
    expect = cfg.get("expect_rc", 0)
    if info["client_rc"] != expect:
        raise RuntimeError(f"{name}: gi_client exited {info['client_rc']}, expected {expect}")
    return pcap, info


def run_gi_client(cfg, work: Path, procs: Processes) -> dict:
    argv = [
        GI_PYTHON,
        GI_CLIENT,
        "--port",
        str(cfg["port"]),
        "--expect-channels",
        "2",
        "--wait-mouse-mode",
        "client",
        "--actions",
        json.dumps(cfg["actions"], separators=(",", ":")),
        "--linger-ms",
        "300",
        "--timeout",
        "20",
    ]
    pw = cfg.get("client_password", cfg["password"])
    if pw is not None:
        argv[2:2] = ["--password", pw]
    out, err = work / "client.out", work / "client.err"
    p = procs.start("gi_client", argv, log_path=out, stderr_path=err, cwd=REPO)
    try:
        rc = p.wait(40)
    except subprocess.TimeoutExpired:
        rc = None
    procs.stop(p)
    events = []
    for line in out.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            events.append({"unparsed": line})
    log(f"gi_client rc={rc} done={events[-1] if events else None}")
    return {
        "client_argv": argv,
        "client_cwd": "$REPO",
        "client_rc": rc,
        "client_events": events,
        "client_stderr": err.read_text(errors="replace").splitlines(),
    }


# --------------------------------------------------------------------------- extraction


def type_counts(records, channel_type, direction):
    counts: dict[int, int] = {}
    order = []
    for r in records:
        if r["kind"] != "message":
            continue
        if r["type"] not in counts:
            order.append(r["type"])
            counts[r["type"]] = 0
        counts[r["type"]] += 1
    return [{"type": t, "name": split.message_name(channel_type, direction, t), "count": counts[t]} for t in order]


def describe_record(r, channel_type, direction) -> str:
    if r["kind"] != "message":
        f = r.get("fields", {})
        f = {k: (v.hex() if isinstance(v, bytes) and k != "magic" else v) for k, v in f.items() if k != "pub_key"}
        if "magic" in f:
            f["magic"] = f["magic"].decode("latin-1")
        extra = ""
        if r["kind"] == "link_reply":
            extra = f" pub_key={r['fields']['pub_key'][:8].hex()}..."
        shown = json.dumps(f) if f else ""
        return f"{r['offset']:8d} {r['kind']:<14s} {len(r['bytes']):6d} {shown}{extra}"
    name = split.message_name(channel_type, direction, r["type"])
    serial = f" serial={r['serial']} sub_list={r['sub_list']}" if "serial" in r else ""
    head = r["body"][:24].hex()
    return f"{r['offset']:8d} message {r['type']:4d} {name:<26s} size={r['size']:<8d}{serial} body[:24]={head}"


def extract(name: str, cfg: dict, pcap: Path, info: dict, out: Path, versions: dict, keep_work: Path | None) -> dict:
    port = cfg["port"]
    conns = tcp_connections(pcap, port)
    index = {
        "session": name,
        "description": cfg["description"],
        "capture_date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "server": "Xspice (xserver-xspice) = Xorg + spiceqxl_drv using libspice-server",
        "server_version": versions.get("libspice-server1"),
        "server_port": port,
        "server_password": cfg["password"],
        "client_password": cfg.get("client_password", cfg["password"]),
        "tools": versions,
        "run": info,
        "pcap": None,
        "notes": [],
        "connections": [],
    }
    if cfg.get("server") == "spiceserver":
        index["server"] = "spiceserver"
        index["server_version"] = versions.get("spiceserver")
    msg_lines = []
    for n, c in enumerate(conns):
        c2s, gaps_c = c.stream("c2s")
        s2c, gaps_s = c.stream("s2c")
        # cross-check against tshark's own reassembly
        fport, fc2s, fs2c = tshark_follow(pcap, n)
        follow_ok = fport == c.client[1] and fc2s == c2s and fs2c == s2c
        if not follow_ok:
            index["notes"].append(f"conn {n}: stdlib reassembly differs from tshark follow")
        entry = {
            "conn": n,
            "tcp_stream": n,
            "client_port": c.client[1],
            "c2s_file": f"conn{n:02d}.c2s.bin",
            "s2c_file": f"conn{n:02d}.s2c.bin",
            "c2s_bytes_captured": len(c2s),
            "s2c_bytes_captured": len(s2c),
            "tcp_gaps": {"c2s": gaps_c, "s2c": gaps_s},
            "matches_tshark_follow": follow_ok,
        }
        recs_c = split.split_stream(c2s, False, link_role="client", strict=False)
        mess = next((r for r in recs_c if r["kind"] == "link_mess"), None)
        ch_type = ch_id = None
        if mess:
            mf = mess["fields"]
            ch_type, ch_id = mf["channel_type"], mf["channel_id"]
            entry.update(
                {
                    "magic": recs_c[0]["fields"]["magic"].decode("latin-1"),
                    "major": recs_c[0]["fields"]["major"],
                    "minor": recs_c[0]["fields"]["minor"],
                    "connection_id": mf["connection_id"],
                    "channel_type": ch_type,
                    "channel_name": split.CHANNEL_NAMES.get(ch_type),
                    "channel_id": ch_id,
                    "client_common_caps": mf["common_caps"],
                    "client_channel_caps": mf["channel_caps"],
                }
            )
        recs_s = split.split_stream(s2c, False, link_role="server", strict=False)
        reply = next((r for r in recs_s if r["kind"] == "link_reply"), None)
        mini = False
        auth_sel = None
        if reply:
            rf = reply["fields"]
            entry.update(
                {
                    "link_reply_error": rf["error"],
                    "server_common_caps": rf["common_caps"],
                    "server_channel_caps": rf["channel_caps"],
                    "pub_key_prefix": rf["pub_key"][:19].hex(),
                }
            )
            if mess:
                cc, sc = mess["fields"]["common_caps"], rf["common_caps"]
                mini = split.caps_word(cc, 3) and split.caps_word(sc, 3)
                auth_sel = split.caps_word(cc, 0) and split.caps_word(sc, 0)
        entry["mini_header"] = mini
        entry["header_kind"] = "mini (6 B)" if mini else "full (18 B)"
        entry["auth_selection"] = auth_sel
        recs_c = split.split_stream(c2s, mini, link_role="client", auth_selection=auth_sel, strict=False)
        recs_s = split.split_stream(s2c, mini, link_role="server", strict=False)
        for r in recs_c:
            if r["kind"] == "auth_mechanism":
                entry["auth_mechanism"] = r["fields"]["mechanism"]
        for r in recs_s:
            if r["kind"] == "link_result":
                entry["link_result"] = r["fields"]["result"]
        # Trim oversized streams after the last complete message that fits.
        for d, data, recs in (("c2s", c2s, recs_c), ("s2c", s2c, recs_s)):
            keep = len(data)
            note = None
            if recs and recs[-1]["kind"] == "partial":
                keep = recs[-1]["offset"]
                note = (
                    f"stream ends inside a {recs[-1].get('expected')} record (connection cut); "
                    f"{len(data) - keep} trailing bytes dropped"
                )
            if keep > MAX_KEEP:
                fit = [r for r in recs if r["offset"] + len(r["bytes"]) <= MAX_KEEP and r["kind"] != "partial"]
                keep = fit[-1]["offset"] + len(fit[-1]["bytes"]) if fit else 0
                note = f"trimmed to {keep} bytes (first complete messages within {MAX_KEEP} bytes)"
            if keep != len(data):
                recs[:] = [r for r in recs if r["offset"] + len(r["bytes"]) <= keep and r["kind"] != "partial"]
                index["notes"].append(f"conn {n} {d}: {note}")
            entry[f"{d}_truncated"] = keep != len(data)
            entry[f"{d}_bytes"] = keep
            (out / entry[f"{d}_file"]).write_bytes(data[:keep])
            entry[f"{d}_messages"] = sum(1 for r in recs if r["kind"] == "message")
            entry[f"{d}_types"] = type_counts(recs, ch_type, d)
            entry[f"{d}_sub_messages"] = [
                {"offset": r["offset"], "type": r["type"], "subs": [s["type"] for s in split.sub_messages(r)]}
                for r in recs
                if r["kind"] == "message" and split.sub_messages(r)
            ]
            ch_name = split.CHANNEL_NAMES.get(ch_type, ch_type)
            msg_lines.append(
                f"== conn {n:02d} {ch_name}/{ch_id} {d} ({'mini' if mini else 'full'} header) {keep} bytes"
            )
            msg_lines += [describe_record(r, ch_type, d) for r in recs]
            msg_lines.append("")
        index["connections"].append(entry)

    (out / "messages.txt").write_text("\n".join(msg_lines) + "\n")

    # tshark dissector summaries
    dec = ["-d", f"tcp.port=={port},spice"]
    fields = subprocess.run(
        [
            "tshark",
            "-r",
            str(pcap),
            *dec,
            "-Y",
            "spice",
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "frame.time_relative",
            "-e",
            "tcp.stream",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.dstport",
            "-e",
            "tcp.len",
            "-e",
            "spice.channel_type",
            "-e",
            "spice.message_type",
            "-e",
            "spice.message_size",
            "-E",
            "header=y",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
        ],
        capture_output=True,
        text=True,
    ).stdout
    verbose = subprocess.run(
        ["tshark", "-r", str(pcap), *dec, "-Y", "spice", "-O", "spice", "-V"], capture_output=True, text=True
    ).stdout
    text = (
        (
            f"# tshark {versions.get('tshark')} SPICE dissector, session {name} (port {port})\n"
            "# Part 1: one line per frame with SPICE content (tshark -T fields)\n"
            "# Part 2: tshark -O spice -V (truncated to fit ~200 KB)\n"
            "# Caveat: the 4.0 dissector mislabels some payload fields and loses message framing\n"
            "# on some streams (e.g. the inputs channel after a KEY_SCANCODE); messages.txt,\n"
            "# made by split.py from the reassembled streams, is the authoritative framing.\n\n"
        )
        + fields
        + "\n\n"
    )
    room = DISSECT_LIMIT - len(text.encode())
    if room > 0:
        vb = verbose.encode()
        if len(vb) > room:
            cut = vb[:room].rsplit(b"\n\n", 1)[0].decode(errors="replace")
            text += cut + f"\n\n[... truncated, {len(cut)} of {len(vb)} bytes of -V output shown]\n"
        else:
            text += verbose
    else:
        text = text.encode()[:DISSECT_LIMIT].decode(errors="replace") + "\n[... truncated]\n"
    (out / "dissect.txt").write_text(text)

    size = pcap.stat().st_size
    if size <= MAX_KEEP:
        shutil.copyfile(pcap, out / "capture.pcap")
        index["pcap"] = "capture.pcap"
    else:
        index["notes"].append(f"pcap was {size} bytes (> {MAX_KEEP}) and is not kept")
    index["pcap_bytes"] = size
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return index


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sessions", nargs="*", default=list(SESSIONS), help="sessions to capture")
    ap.add_argument("--keep-work", action="store_true", help="keep the /tmp work directories")
    ap.add_argument("--out", default=str(FIXTURES), help="fixtures directory")
    args = ap.parse_args()
    for cfg in SESSIONS.values():
        if isinstance(cfg.get("script"), str):
            cfg["script"] = globals()[cfg["script"]]
    for s in args.sessions:
        if s not in SESSIONS:
            ap.error(f"unknown session {s} (have {', '.join(SESSIONS)})")
    kinds = {SESSIONS[s].get("server", "libspice") for s in args.sessions}
    needed = ["tshark"]
    if "libspice" in kinds:
        needed += ["Xspice", "spicy", "spicy-screenshot", "Xvfb", "xdotool"]
    if "spiceserver" in kinds:
        needed.append(GI_PYTHON)
    for tool in needed:
        if shutil.which(tool) is None:
            ap.error(f"{tool} not found")
    versions = tool_versions(tuple(sorted(kinds)))
    if "spiceserver" in kinds and versions.get("spiceserver") is None:
        ap.error(f"{sys.executable} cannot import spiceserver from {REPO}")
    procs = Processes()
    rc = 0
    try:
        for name in args.sessions:
            cfg = SESSIONS[name]
            work = Path(tempfile.mkdtemp(prefix=f"spicecap-{name}-"))
            log(f"session {name} (work dir {work})")
            try:
                pcap, info = run_session(name, cfg, work, procs)
            finally:
                procs.stop_all()
            out = Path(args.out) / name
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            index = extract(name, cfg, pcap, info, out, versions, work if args.keep_work else None)
            if (work / "demo_stdout.txt").exists():
                shutil.copyfile(work / "demo_stdout.txt", out / "demo_stdout.txt")
            for c in index["connections"]:
                c2s_t = [t["type"] for t in c["c2s_types"]]
                s2c_t = [t["type"] for t in c["s2c_types"]]
                log(
                    f"  conn {c['conn']} {c.get('channel_name')}/{c.get('channel_id')} "
                    f"mini={c['mini_header']} c2s={c['c2s_bytes']} s2c={c['s2c_bytes']} "
                    f"c2s types={c2s_t} s2c types={s2c_t}"
                )
            for note in index["notes"]:
                log("  note: " + note)
            if not args.keep_work:
                shutil.rmtree(work, ignore_errors=True)
    except Exception:
        rc = 1
        raise
    finally:
        procs.stop_all()
    return rc


if __name__ == "__main__":
    sys.exit(main())
