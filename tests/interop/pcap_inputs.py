"""Decode the client->server messages of SPICE main/inputs channels in a plain-TCP pcap.

A developer tool used to prove on the wire what gi_client.py actions turn into (tshark's
SPICE dissector labels frames by port heuristics and skips coalesced messages; this walks
each TCP stream itself).  Needs ``tshark`` for TCP reassembly of the payload bytes.

    tshark -i lo -f "tcp port 5977" -w /tmp/in.pcap &   # then run gi_client.py, stop tshark
    python3 tests/interop/pcap_inputs.py /tmp/in.pcap 5977

Prints one line per message: ``<channel> <NAME> <decoded fields>``.
"""

from __future__ import annotations

import argparse
import struct
import subprocess
from collections import defaultdict

CHANNEL_NAMES = {1: "main", 2: "display", 3: "inputs", 4: "cursor", 5: "playback", 6: "record"}
COMMON_C2S = {1: "ACK_SYNC", 2: "ACK", 3: "PONG", 4: "MIGRATE_FLUSH_MARK", 5: "MIGRATE_DATA", 6: "DISCONNECTING"}
INPUTS_C2S = {
    101: "KEY_DOWN",
    102: "KEY_UP",
    103: "KEY_MODIFIERS",
    104: "KEY_SCANCODE",
    111: "MOUSE_MOTION",
    112: "MOUSE_POSITION",
    113: "MOUSE_PRESS",
    114: "MOUSE_RELEASE",
}
MAIN_C2S = {
    101: "CLIENT_INFO",
    104: "ATTACH_CHANNELS",
    105: "MOUSE_MODE_REQUEST",
    106: "AGENT_START",
    107: "AGENT_DATA",
    108: "AGENT_TOKEN",
}


def decode_body(channel: int, mtype: int, body: bytes) -> str:
    if channel == 3:
        if mtype in (101, 102):
            return f"code=0x{struct.unpack_from('<I', body)[0]:x}"
        if mtype == 103:
            return f"modifiers=0x{struct.unpack_from('<H', body)[0]:x}"
        if mtype == 104:
            return f"bytes={body.hex()}"
        if mtype == 111:
            dx, dy, buttons = struct.unpack_from("<iiH", body)
            return f"dx={dx} dy={dy} buttons=0x{buttons:x}"
        if mtype == 112:
            x, y, buttons, display = struct.unpack_from("<IIHB", body)
            return f"x={x} y={y} buttons=0x{buttons:x} display={display}"
        if mtype in (113, 114):
            button, buttons = struct.unpack_from("<BH", body)
            return f"button={button} buttons=0x{buttons:x}"
    if channel == 1 and mtype in (105, 106, 108):
        return f"value={struct.unpack_from('<I' if mtype != 105 else '<H', body)[0]}"
    return f"len={len(body)}"


def read_streams(pcap: str, port: int) -> dict[tuple[int, str], bytes]:
    out = subprocess.run(
        ["tshark", "-r", pcap, "-T", "fields", "-e", "tcp.stream", "-e", "tcp.dstport", "-e", "tcp.payload"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    streams: dict[tuple[int, str], bytes] = defaultdict(bytes)
    for line in out.splitlines():
        fields = line.split("\t")
        if len(fields) < 3 or not fields[2]:
            continue
        direction = "c2s" if int(fields[1]) == port else "s2c"
        streams[(int(fields[0]), direction)] += bytes.fromhex(fields[2].replace(":", ""))
    return streams


def link_caps(data: bytes, offset_field: int, base: int) -> tuple[list[int], list[int]]:
    """Return (common, channel) cap words from a LinkMess/LinkReply starting at ``base``."""
    n_common, n_chan, caps_offset = struct.unpack_from("<III", data, base + offset_field)
    start = base + caps_offset
    words = list(struct.unpack_from(f"<{n_common + n_chan}I", data, start))
    return words[:n_common], words[n_common:]


def decode(pcap: str, port: int) -> list[str]:
    streams = read_streams(pcap, port)
    lines: list[str] = []
    for (sid, direction), c2s in sorted(streams.items()):
        if direction != "c2s" or c2s[:4] != b"REDQ":
            continue
        s2c = streams.get((sid, "s2c"), b"")
        size = struct.unpack_from("<I", c2s, 12)[0]
        channel = c2s[16 + 4]
        client_common, _ = link_caps(c2s, 6, 16)
        if len(s2c) < 16 + 178 or len(s2c) < 16 + struct.unpack_from("<I", s2c, 12)[0]:
            lines.append(f"stream {sid} {CHANNEL_NAMES.get(channel, channel)}: no link reply")
            continue
        error = struct.unpack_from("<I", s2c, 16)[0]
        if error:
            lines.append(f"stream {sid} {CHANNEL_NAMES.get(channel, channel)}: link error {error}")
            continue
        server_common, _ = link_caps(s2c, 4 + 162, 16)
        server_bits = server_common[0] if server_common else 0
        client_bits = client_common[0] if client_common else 0
        mini = bool(server_bits & client_bits & 8)
        pos = 16 + size + (4 if server_bits & 1 else 0) + 128  # [auth mechanism] + ticket
        name = CHANNEL_NAMES.get(channel, str(channel))
        table = {**COMMON_C2S, **(INPUTS_C2S if channel == 3 else MAIN_C2S if channel == 1 else {})}
        hdr = 6 if mini else 18
        while pos + hdr <= len(c2s):
            if mini:
                mtype, msize = struct.unpack_from("<HI", c2s, pos)
            else:
                _serial, mtype, msize, _sub = struct.unpack_from("<QHII", c2s, pos)
            body = c2s[pos + hdr : pos + hdr + msize]
            pos += hdr + msize
            if channel not in (1, 3):
                continue
            lines.append(f"{name}:{sid} {table.get(mtype, str(mtype))} {decode_body(channel, mtype, body)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("pcap")
    parser.add_argument("port", type=int, help="server port (plain TCP)")
    args = parser.parse_args()
    for line in decode(args.pcap, args.port):
        print(line)


if __name__ == "__main__":
    main()
