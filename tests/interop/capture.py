"""A loopback packet capture (tshark/dumpcap) that is known to be recording, and known to be complete.

tshark prints "Capturing on 'Loopback: lo'" before dumpcap records anything, and writes its file in
chunks, so neither that line nor the file's size says which packets it holds. Here a *marker* port
sits in the capture filter next to the ports under test: a socket bound to it but not listening, so a
connection attempt is refused at once (a SYN and a RST on the wire) and nothing under test sees it.
:func:`loopback_capture` repeats such attempts until one of them is in the file -- from then on every
packet is recorded -- and on exit does it again, so that everything sent before is in the file, then
stops tshark and checks that the file holds as many packets as tshark says it captured.

The file is written in the classic pcap format (``-F pcap``: libpcap's savefile layout, as described
in pcap-savefile(5) and wiretap's ``libpcap.c`` in Wireshark), so it is read here without tshark.

    async with loopback_capture(tmp_path / "s.pcap", server_port) as cap:
        ...  # the session under test
    cap.report()  # "N packets captured, 0 dropped" for assertion messages
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

TSHARK = shutil.which("tshark")

#: how long tshark may take to start recording, or to record the end marker (a fresh machine, a cold
#: page cache, four other test runs on two cores: generous, only a hung capture hits it)
CAPTURE_DEADLINE = 60.0

# pcap-savefile(5): magic (microsecond or nanosecond timestamps, either byte order), link types
_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\xa1\xb2\x3c\x4d": ">"}
LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2 = 0, 1, 101, 113, 276


class CaptureError(AssertionError):
    """The capture did not start, or did not end, as it must; the message carries tshark's output."""


def tcp_ports(linktype: int, frame: bytes) -> tuple[int, int] | None:
    """(source, destination) TCP ports of one captured frame, or None if it is not TCP over IP."""
    ethertype, at = 0, 0  # 0: tell IPv4 from IPv6 by the version nibble
    if linktype == LINKTYPE_ETHERNET and len(frame) >= 14:
        ethertype, at = struct.unpack_from(">H", frame, 12)[0], 14
        if ethertype == 0x8100 and len(frame) >= 18:  # one VLAN tag
            ethertype, at = struct.unpack_from(">H", frame, 16)[0], 18
    elif linktype == LINKTYPE_LINUX_SLL and len(frame) >= 16:
        ethertype, at = struct.unpack_from(">H", frame, 14)[0], 16
    elif linktype == LINKTYPE_LINUX_SLL2 and len(frame) >= 20:
        ethertype, at = struct.unpack_from(">H", frame, 0)[0], 20
    elif linktype == LINKTYPE_NULL:
        at = 4  # the address family, in the capturing host's byte order
    elif linktype not in (LINKTYPE_RAW, 12, 14):
        return None
    if at >= len(frame):
        return None
    version = frame[at] >> 4
    if ethertype == 0x0800 or (ethertype == 0 and version == 4):
        if len(frame) < at + 20 or frame[at + 9] != 6:
            return None
        at += (frame[at] & 0x0F) * 4
    elif ethertype == 0x86DD or (ethertype == 0 and version == 6):
        if len(frame) < at + 40 or frame[at + 6] != 6:  # no extension headers on loopback TCP
            return None
        at += 40
    else:
        return None
    if len(frame) < at + 4:
        return None
    src, dst = struct.unpack_from(">HH", frame, at)
    return int(src), int(dst)


@dataclass
class PcapReader:
    """Reads a pcap file that is still being written: each :meth:`poll` parses the records completed
    since the last one (a record cut short at the end of the file is read next time)."""

    path: Path
    linktype: int | None = None
    packets: int = 0
    port_counts: dict[int, int] = field(default_factory=dict)
    _order: str = "<"
    _offset: int = 0

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        at = 0
        if self.linktype is None:
            if len(data) < 24:
                return
            if data[:4] not in _MAGICS:
                raise CaptureError(f"{self.path} is not a pcap file (magic {data[:4].hex()}): was -F pcap ignored?")
            self._order = _MAGICS[data[:4]]
            self.linktype = struct.unpack_from(self._order + "I", data, 20)[0] & 0x0FFFFFFF
            at = 24
        while len(data) - at >= 16:
            incl = struct.unpack_from(self._order + "I", data, at + 8)[0]
            if len(data) - at - 16 < incl:
                break
            self.packets += 1
            ports = tcp_ports(self.linktype, data[at + 16 : at + 16 + incl])
            for port in set(ports or ()):
                self.port_counts[port] = self.port_counts.get(port, 0) + 1
            at += 16 + incl
        self._offset += at

    def count(self, port: int) -> int:
        """Packets so far with ``port`` as their TCP source or destination port."""
        return self.port_counts.get(port, 0)


@dataclass
class LoopbackCapture:
    """A running (then finished) capture: see :func:`loopback_capture`."""

    pcap: Path
    ports: tuple[int, ...]
    marker_port: int
    log: Path
    reader: PcapReader
    #: what tshark reported when it stopped (None while it runs)
    captured: int | None = None
    dropped: int | None = None

    def report(self) -> str:
        """One line for assertion messages: what tshark captured and dropped, what the file holds."""
        return (
            f"capture {self.pcap} of tcp ports {self.ports}: tshark captured {self.captured}, "
            f"dropped {self.dropped}; the file holds {self.reader.packets} packets"
        )

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return "(no tshark output)"

    async def wait_for_marker(self, proc: asyncio.subprocess.Process, timeout: float = CAPTURE_DEADLINE) -> None:
        """Make refused connections to the marker port until one more of its packets is in the file."""
        self.reader.poll()
        before = self.reader.count(self.marker_port)
        deadline = time.monotonic() + timeout
        while True:
            if proc.returncode is not None:
                raise CaptureError(f"tshark exited ({proc.returncode}) before recording:\n{self.log_text()}")
            with contextlib.suppress(OSError):
                _r, w = await asyncio.open_connection("127.0.0.1", self.marker_port)
                w.close()  # pragma: no cover - nothing listens there
            await asyncio.sleep(0.05)
            self.reader.poll()
            if self.reader.count(self.marker_port) > before:
                return
            if time.monotonic() > deadline:
                raise CaptureError(
                    f"no marker packet (tcp port {self.marker_port}) in {self.pcap} after {timeout} s; "
                    f"{self.reader.packets} packets there\n{self.log_text()}"
                )


async def _stop(proc: asyncio.subprocess.Process, timeout: float = CAPTURE_DEADLINE) -> None:
    """Stop tshark as Ctrl-C does (it closes the file and prints its counts), by PID; kill if stuck."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def loopback_capture(pcap: Path, ports: int | Iterable[int], *, buffer_mib: int = 64) -> AsyncIterator[LoopbackCapture]:
    """Capture TCP ``ports`` on ``lo`` into ``pcap`` (classic pcap) while the body runs.

    Yields once the capture is recording (a marker packet is in the file). On a normal exit a second
    marker is waited for (everything sent before it is in the file), tshark is stopped and the file
    is checked to hold every packet tshark says it captured; :attr:`LoopbackCapture.dropped` is what
    the kernel dropped (for assertion messages). Raises :class:`CaptureError` when any step fails.
    """
    if TSHARK is None:
        raise CaptureError("tshark is not installed (Debian package tshark)")
    ports = (ports,) if isinstance(ports, int) else tuple(ports)
    log = pcap.with_name(pcap.name + ".tshark.log")
    # bound, never listening: a connection attempt to it is refused (SYN + RST) and the port cannot be
    # taken by anything else while the capture runs
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as marker:
        marker.bind(("127.0.0.1", 0))
        marker_port = int(marker.getsockname()[1])
        cap = LoopbackCapture(pcap, ports, marker_port, log, PcapReader(pcap))
        bpf = " or ".join(f"tcp port {p}" for p in (*ports, marker_port))
        with open(log, "wb") as out:
            proc = await asyncio.create_subprocess_exec(
                TSHARK, "-i", "lo", "-B", str(buffer_mib), "-f", bpf, "-F", "pcap", "-w", str(pcap),
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
            )  # fmt: skip
        ok = False
        try:
            await cap.wait_for_marker(proc)
            yield cap
            await cap.wait_for_marker(proc)
            ok = True
        finally:
            await _stop(proc)
        text = cap.log_text()
        if ok and proc.returncode != 0:
            raise CaptureError(f"tshark exited with {proc.returncode}:\n{text}")
        found = re.findall(r"(\d+) packets? captured", text)
        cap.captured = int(found[-1]) if found else None
        # "N packets dropped" or "N packets dropped from lo" (once per interface: one here)
        cap.dropped = max((int(d) for d in re.findall(r"(\d+) packets? dropped", text)), default=0)
        cap.reader.poll()
        if cap.captured is None or cap.reader.packets != cap.captured:
            raise CaptureError(f"the file is incomplete: {cap.report()}\n{text}")
