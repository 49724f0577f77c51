"""Helpers for the spice-html5 interop tier: the browser client judges the server.

spice-html5 (Debian ``spice-html5``, 0.3.0) is a SPICE client in JavaScript. It speaks SPICE over
WebSocket (subprotocol ``binary``), so between the browser and a plain-TCP SPICE port sits
``websockify`` (Debian ``websockify``), or nothing: spiceserver speaks WebSocket on its own ports
(give :func:`html5_client` a ``websocket_port``) and can serve the page too (``own_page``).

Headless Chromium (Debian ``chromium``) is driven with the Chrome DevTools Protocol over
``--remote-debugging-pipe`` (NUL-terminated JSON on fds 3/4): stdlib only, no chromedriver, no
Selenium, no debugging port. Everything listens on 127.0.0.1 only, the browser is told to resolve no
other host, and every process is stopped by its PID (its own process group) in ``finally`` blocks.

* :func:`html5_skip_reason` / :func:`require_html5` -- what is missing, if anything.
* :func:`html5_client` -- async context manager: static HTTP server for ``/usr/share/spice-html5``,
  websockify, Chromium on ``spice_auto.html?host=..&port=..&password=..``; yields an :class:`Html5Page`.
* :class:`Html5Page` -- read the display canvas as (h, w) uint32 0x00RRGGBB (:meth:`~Html5Page.read_canvas`),
  poll for a picture (:meth:`~Html5Page.wait_picture`), the browser console (:attr:`~Html5Page.console`),
  JavaScript dialogs (spice_auto.html ``prompt()``s for a password after "Permission denied").
* Sound: :data:`AUDIO_FLAGS` (autoplay) and :data:`AUDIO_PROBE_JS` (``html5_client(init_scripts=...)``)
  route spice-html5's ``<audio>`` through a WebAudio analyser; :meth:`Html5Page.audio_samples`,
  :meth:`~Html5Page.wait_audio`, :meth:`~Html5Page.audio_data` (DATA counts),
  :meth:`~Html5Page.audio_errors` read what it played.

Never imports ``gi``; needs numpy only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import numpy as np
import pytest

HTML5_DIR = Path("/usr/share/spice-html5")
HTML5_PAGE = "spice_auto.html"
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser")

#: Chromium flags: headless, no sandbox (root), no GPU, and nothing that talks to the network.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--disable-breakpad",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--metrics-recording-only",
    "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--force-color-profile=srgb",
    "--window-size=1280,1024",
    "--remote-debugging-pipe",
)

# The display canvas (spice-html5 appends the primary surface's canvas, id spice_surface_<id>, to
# #spice-screen) read back as RGBA, base64 in chunks (String.fromCharCode has an argument limit).
_READ_CANVAS_JS = """(() => {
  const c = document.querySelector('#spice-screen canvas');
  if (!c || !c.width || !c.height) return null;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let s = '';
  for (let i = 0; i < d.length; i += 0x8000) s += String.fromCharCode.apply(null, d.subarray(i, i + 0x8000));
  return {w: c.width, h: c.height, id: c.id, data: btoa(s)};
})()"""

_CANVAS_INFO_JS = """(() => {
  const c = document.querySelector('#spice-screen canvas');
  return c ? {w: c.width, h: c.height, id: c.id} : null;
})()"""


#: Chromium switch for spice-html5's sound: its playback channel makes an ``<audio autoplay>`` fed
#: through MediaSource and never calls ``play()`` after a user gesture: without this switch the
#: element stays paused with its media buffered (readyState 4) and an AudioContext stays
#: "suspended" (seen with Chromium 156 against Xspice). Headless Chromium needs no audio device: it finds no ALSA device
#: ("PcmOpen: default, No such file or directory" in its log) and renders to a fake output that runs
#: in real time (the AudioContext is "running", its clock advances, elements play).
AUDIO_FLAGS = ("--autoplay-policy=no-user-gesture-required",)

#: Page init script (``html5_client(init_scripts=...)``, runs before spice-html5): every ``<audio>``
#: spice-html5 adds (one per PLAYBACK START; it removes it on STOP) is routed through one
#: AudioContext (48 kHz) -> AnalyserNode -> speakers, and every 40 ms the newest element is sampled
#: into ``window.__spiceAudio.samples``: ``t`` (s, page clock), ``el`` (element index), ``ct``
#: (currentTime), ``err`` (MediaError code or null), ``paused``, ``rs`` (readyState), ``attached``
#: (still in the page), ``nbuf`` / ``buf`` (buffered ranges: count, [first start, last end]),
#: ``ms`` (MediaSource readyState), ``ctx`` (AudioContext state), ``rms`` (of the decoded signal the
#: analyser sees, full scale 1.0) and ``peak`` (dominant frequency in Hz of the last 8192 samples,
#: 170 ms, interpolated between FFT bins). MediaError events go to ``window.__spiceAudio.errors``.
#: ``window.__spiceAudio.data[el]`` counts the PLAYBACK DATA messages spice-html5 got while element
#: ``el`` was its player (``data``) and those it dropped because its SourceBuffer did not exist yet
#: (``dropped``: it makes one only when the MediaSource fires ``sourceopen``, 50 to 300 ms after
#: START, and ignores DATA until then); its ``process_channel_message`` is wrapped when the first
#: ``<audio>`` is made (``createElement`` is wrapped to see it at once), so DATA before the first
#: START is not counted (key -1 after a STOP).
AUDIO_PROBE_JS = r"""(() => {
  if (window.__spiceAudio) return;
  const st = window.__spiceAudio = {elements: [], samples: [], errors: [], data: {}, ctx: null};
  function count_data(conn) {  // DATA per element, and those spice-html5 drops (no SourceBuffer yet)
    const proto = conn && Object.getPrototypeOf(conn);
    if (!proto || proto.__spiceProbe) return;
    proto.__spiceProbe = true;
    const orig = proto.process_channel_message;
    proto.process_channel_message = function (msg) {
      if (msg.type === 101) {  // SPICE_MSG_PLAYBACK_DATA
        const i = st.elements.indexOf(this.audio);
        const c = st.data[i] = st.data[i] || {data: 0, dropped: 0};
        c.data++;
        if (!this.source_buffer) c.dropped++;
      }
      return orig.call(this, msg);
    };
  }
  function attach(a) {
    if (st.elements.includes(a)) return;
    const index = st.elements.length;
    st.elements.push(a);
    count_data(a.spiceconn);
    a.addEventListener('error', () => st.errors.push(
      {el: index, code: a.error ? a.error.code : null, message: a.error ? a.error.message : ''}));
    try {
      if (!st.ctx) st.ctx = new AudioContext({sampleRate: 48000});
      const an = st.ctx.createAnalyser();
      an.fftSize = 8192;
      an.smoothingTimeConstant = 0;
      st.ctx.createMediaElementSource(a).connect(an);
      an.connect(st.ctx.destination);
      a.__spiceAnalyser = an;
    } catch (e) {
      st.errors.push({el: index, code: null, message: 'analyser: ' + e});
    }
  }
  function sample() {
    const i = st.elements.length - 1;
    if (i < 0) return;
    const a = st.elements[i], b = a.buffered, p = a.spiceconn;
    const s = {t: performance.now() / 1000, el: i, ct: a.currentTime, err: a.error ? a.error.code : null,
               paused: a.paused, rs: a.readyState, attached: a.isConnected, nbuf: b.length,
               buf: b.length ? [b.start(0), b.end(b.length - 1)] : null,
               ms: p && p.media_source ? p.media_source.readyState : null,
               ctx: st.ctx ? st.ctx.state : null, rms: null, peak: null};
    const an = a.__spiceAnalyser;
    if (an) {
      const d = new Float32Array(an.fftSize);
      an.getFloatTimeDomainData(d);
      let e = 0;
      for (const v of d) e += v * v;
      s.rms = Math.sqrt(e / d.length);
      const f = new Float32Array(an.frequencyBinCount);
      an.getFloatFrequencyData(f);
      let k = 1;
      for (let j = 2; j < f.length - 1; j++) if (f[j] > f[k]) k = j;
      const den = f[k - 1] - 2 * f[k] + f[k + 1];
      const frac = den < 0 ? 0.5 * (f[k - 1] - f[k + 1]) / den : 0;
      s.peak = isFinite(f[k]) && s.rms > 1e-4 ? (k + frac) * st.ctx.sampleRate / an.fftSize : null;
    }
    st.samples.push(s);
  }
  // attach at once when spice-html5 ties a new <audio> to its connection (START), before it handles
  // the DATA that came in the same WebSocket message (a MutationObserver would run after those)
  const create = Document.prototype.createElement;
  Document.prototype.createElement = function (name, ...rest) {
    const el = create.call(this, name, ...rest);
    if (String(name).toLowerCase() === 'audio') {
      Object.defineProperty(el, 'spiceconn', {configurable: true, enumerable: true,
        get() { return this.__spiceConn; },
        set(v) { this.__spiceConn = v; attach(this); }});
    }
    return el;
  };
  function start() {
    new MutationObserver(() => document.querySelectorAll('audio').forEach(attach))
      .observe(document.documentElement, {childList: true, subtree: true});
    document.querySelectorAll('audio').forEach(attach);
    setInterval(sample, 40);
  }
  if (document.documentElement) start(); else document.addEventListener('DOMContentLoaded', start);
})()"""


#: how long Chromium may take to answer its first DevTools command, and websockify to listen (a
#: first start builds caches; four other test runs share the CPU): only a hung process hits it
START_DEADLINE = 60.0

# Chromium log lines that say nothing about the test (no D-Bus in a container)
_NOISE = re.compile(r"dbus/|Failed to connect to the bus|UPower")


class Html5Error(AssertionError):
    """The browser side failed; the message carries the console log."""


# --------------------------------------------------------------------------- availability


def find_chromium() -> str | None:
    """Path of the Chromium binary (the real one behind Debian's wrapper script when present)."""
    for cand in CHROMIUM_CANDIDATES:
        path = cand if os.path.isabs(cand) else shutil.which(cand)
        if path and os.access(path, os.X_OK):
            return path
    return None


@functools.cache
def html5_skip_reason(proxy: bool = True) -> str | None:
    """Why the html5 tier cannot run here (None if it can); ``proxy``: websockify is needed."""
    missing = []
    if find_chromium() is None:
        missing.append("chromium (Debian chromium)")
    if not (HTML5_DIR / HTML5_PAGE).is_file():
        missing.append(f"{HTML5_DIR / HTML5_PAGE} (Debian spice-html5)")
    if proxy and shutil.which("websockify") is None:
        missing.append("websockify (Debian websockify)")
    return f"spice-html5 tier needs {', '.join(missing)}" if missing else None


def require_html5(proxy: bool = True) -> None:
    """``pytest.skip`` with a clear reason when the html5 tier cannot run."""
    reason = html5_skip_reason(proxy)
    if reason is not None:
        pytest.skip(reason)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (bind to 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rgba_to_xrgb(rgba: np.ndarray) -> np.ndarray:
    """(h, w, 4) uint8 R,G,B,A -> (h, w) uint32 0x00RRGGBB."""
    px = rgba.astype(np.uint32)
    out: np.ndarray = (px[..., 0] << 16) | (px[..., 1] << 8) | px[..., 2]
    return out


def decode_html5_png(png: bytes) -> np.ndarray:
    """Decode the RGBA PNG spice-html5's ``png.js`` writes for a cursor; returns (h, w, 4) uint8 R,G,B,A.

    Its zlib stream is malformed (stored block with BFINAL unset and LEN/NLEN big-endian, so zlib and
    browsers see a 13 056-byte block cut short; Chromium shows it partly or not at all, at random), so
    the single stored block is read by hand: rows of filter byte 0 + 4 bytes per pixel."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    chunks: dict[bytes, bytes] = {}
    at = 8
    while at + 8 <= len(png):
        (n,) = struct.unpack(">I", png[at : at + 4])
        chunks.setdefault(png[at + 4 : at + 8], png[at + 8 : at + 8 + n])
        at += 12 + n
    w, h, depth, ctype = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    if (depth, ctype) != (8, 6):
        raise ValueError(f"PNG depth {depth} colour type {ctype}, expected 8-bit RGBA")
    idat = chunks[b"IDAT"]
    try:
        raw = zlib.decompress(idat)
    except zlib.error:
        raw = idat[2 + 5 :]  # zlib header, stored-block header (1 + LEN 2 + NLEN 2)
    stride = 1 + 4 * w
    rows = [raw[y * stride + 1 : (y + 1) * stride] for y in range(h)]
    if any(raw[y * stride] != 0 for y in range(h)) or any(len(r) != 4 * w for r in rows):
        raise ValueError("unexpected PNG row layout")
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(h, w, 4)


def describe_diff(shown: np.ndarray | None, want: np.ndarray) -> str:
    """One line on how ``shown`` differs from ``want`` (both 0x00RRGGBB after masking)."""
    if shown is None:
        return "no canvas"
    want = want & 0xFFFFFF
    if shown.shape != want.shape:
        return f"canvas is {shown.shape[1]}x{shown.shape[0]}, expected {want.shape[1]}x{want.shape[0]}"
    bad = np.argwhere((shown & 0xFFFFFF) != want)
    if bad.size == 0:
        return "identical"
    y, x = (int(v) for v in bad[0])
    y1, x1 = (int(v) for v in bad.max(axis=0))
    y0, x0 = (int(v) for v in bad.min(axis=0))
    return (
        f"{len(bad)} pixels differ within x {x0}..{x1}, y {y0}..{y1}; "
        f"first at (x={x}, y={y}): {int(shown[y, x]) & 0xFFFFFF:#08x} != {int(want[y, x]):#08x}"
    )


# --------------------------------------------------------------------------- processes


async def _stop_process(proc: asyncio.subprocess.Process, grace: float = 3.0) -> None:
    """SIGTERM the process group we started (pgid == its PID), then SIGKILL what is left."""
    pid = proc.pid
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            pass
    # children (websockify's per-connection forks, Chromium's renderers) share the group
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if proc.returncode is None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), grace)


async def _wait_port(port: int, proc: asyncio.subprocess.Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.returncode is not None:
            raise Html5Error(f"process {proc.pid} exited with {proc.returncode} before listening on {port}")
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise Html5Error(f"nothing listens on 127.0.0.1:{port} after {timeout} s") from None
            await asyncio.sleep(0.05)
            continue
        w.close()
        with contextlib.suppress(Exception):
            await w.wait_closed()
        return


# spice-html5 0.3.0 ticket.js turns the RSA ciphertext into bytes with BigInteger.toString(16), which
# drops leading zero bytes: about 1 link in 150 sends a ticket shifted left and zero-padded, which
# neither libspice-server nor we can decrypt (PERMISSION_DENIED, spice_auto.html prompts for a
# password). html5_client serves ticket.js with the ciphertext padded to the key size unless told not
# to, so the pixel tests are not flaky; test_html5.py checks the server side of it on its own.
TICKET_JS_BUG = """    var h = enc.toString(16);
    if ((h.length & 1) != 0)
        h = "0" + h;"""
TICKET_JS_FIX = """    var h = enc.toString(16);
    while (h.length < 2 * ((rsa.n.bitLength() + 7) >> 3))  /* patched by spiceserver's tests */
        h = "0" + h;"""


def patched_ticket_js(root: Path = HTML5_DIR) -> bytes | None:
    """ticket.js with the leading-zero fix, or None if this spice-html5 does not have the bug's code."""
    try:
        text = (root / "ticket.js").read_text()
    except OSError:
        return None
    return text.replace(TICKET_JS_BUG, TICKET_JS_FIX).encode() if TICKET_JS_BUG in text else None


class _Html5Handler(http.server.SimpleHTTPRequestHandler):
    overrides: dict[str, bytes] = {}

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def do_GET(self) -> None:
        body = self.overrides.get(self.path.split("?", 1)[0])
        if body is None:
            super().do_GET()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/javascript")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def static_http_server(root: Path = HTML5_DIR, overrides: dict[str, bytes] | None = None) -> Iterator[int]:
    """Serve ``root`` on 127.0.0.1:<free port> from a thread, ``overrides`` (URL path -> body) in place
    of files; yields the port."""
    handler_cls = type("Handler", (_Html5Handler,), {"overrides": dict(overrides or {})})
    handler = functools.partial(handler_cls, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="html5-http", daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@contextlib.asynccontextmanager
async def websockify(target_port: int, log_path: Path) -> AsyncIterator[int]:
    """websockify from 127.0.0.1:<free port> to 127.0.0.1:``target_port``; yields the WebSocket port."""
    exe = shutil.which("websockify")
    if exe is None:
        raise Html5Error("websockify not installed (Debian websockify)")
    for attempt in range(3):
        port = free_port()
        with open(log_path, "ab") as log:
            proc = await asyncio.create_subprocess_exec(
                exe,
                f"127.0.0.1:{port}",
                f"127.0.0.1:{target_port}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        try:
            try:
                await _wait_port(port, proc, START_DEADLINE)
            except Html5Error:
                if proc.returncode is not None and attempt < 2:
                    continue  # lost the race for the port
                raise
            yield port
            return
        finally:
            await _stop_process(proc)
    raise Html5Error("websockify did not start")  # pragma: no cover


# --------------------------------------------------------------------------- CDP over a pipe


class _CdpReader(asyncio.Protocol):
    def __init__(self, cdp: Cdp) -> None:
        self.cdp = cdp
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            i = self.buf.find(b"\0")
            if i < 0:
                break
            raw, self.buf = self.buf[:i], self.buf[i + 1 :]
            self.cdp._dispatch(json.loads(raw))

    def connection_lost(self, exc: Exception | None) -> None:
        self.cdp._lost(exc)


class Cdp:
    """A Chromium started with ``--remote-debugging-pipe``, driven over its fds 3 (in) and 4 (out)."""

    def __init__(self, proc: asyncio.subprocess.Process, cmd_fd: int) -> None:
        self.proc = proc
        self._cmd_fd = cmd_fd
        self._transport: asyncio.BaseTransport | None = None
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self.closed = False

    @classmethod
    async def launch(cls, user_data_dir: Path, log_path: Path, extra_flags: tuple[str, ...] = ()) -> Cdp:
        exe = find_chromium()
        if exe is None:
            raise Html5Error("chromium not installed (Debian chromium)")
        cmd_r, cmd_w = os.pipe()  # we write commands, Chromium reads them on fd 3
        out_r, out_w = os.pipe()  # Chromium writes replies/events on fd 4
        # keep the child's ends away from 3/4 so the dup2s below cannot clobber each other
        child_in = fcntl_dupfd(cmd_r, 10)
        child_out = fcntl_dupfd(out_w, 10)
        for fd in (cmd_r, out_w):
            os.close(fd)

        def to_fds_3_4() -> None:  # runs in the child between fork and exec
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        try:
            with open(log_path, "ab") as log:
                proc = await asyncio.create_subprocess_exec(
                    exe,
                    *CHROMIUM_FLAGS,
                    *extra_flags,
                    f"--user-data-dir={user_data_dir}",
                    "about:blank",
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    close_fds=False,
                    preexec_fn=to_fds_3_4,
                )
        except BaseException:
            for fd in (cmd_w, out_r):
                os.close(fd)
            raise
        finally:
            os.close(child_in)
            os.close(child_out)
        cdp = cls(proc, cmd_w)
        cdp._transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: _CdpReader(cdp), os.fdopen(out_r, "rb", buffering=0)
        )
        return cdp

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "id" in msg:
            fut = self._pending.pop(msg["id"], None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        for cb in list(self._listeners):
            cb(msg)

    def _lost(self, exc: Exception | None) -> None:
        self.closed = True
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(Html5Error(f"Chromium closed its DevTools pipe ({exc or 'EOF'})"))
        self._pending.clear()

    def listen(self, cb: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.append(cb)

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        if self.closed:
            raise Html5Error(f"{method}: Chromium's DevTools pipe is closed")
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = fut
        data = json.dumps(msg).encode() + b"\0"
        while data:  # commands are small; a blocking write is fine
            data = data[os.write(self._cmd_fd, data) :]
        try:
            reply = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self._pending.pop(self._next_id, None)
            raise Html5Error(f"{method}: no DevTools reply in {timeout} s") from None
        if "error" in reply:
            raise Html5Error(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def close(self) -> None:
        try:
            if not self.closed and self.proc.returncode is None:
                with contextlib.suppress(Html5Error, OSError):
                    await self.send("Browser.close", timeout=3.0)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.proc.wait(), 5.0)
        finally:
            await _stop_process(self.proc)
            if self._transport is not None:
                self._transport.close()
            with contextlib.suppress(OSError):
                os.close(self._cmd_fd)


def fcntl_dupfd(fd: int, lowest: int) -> int:
    """``fcntl(F_DUPFD_CLOEXEC)``: a close-on-exec copy of ``fd`` numbered ``lowest`` or above."""
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)


# --------------------------------------------------------------------------- the page


def _remote_value(obj: dict[str, Any]) -> str:
    if "value" in obj:
        v = obj["value"]
        return v if isinstance(v, str) else json.dumps(v)
    return str(obj.get("description", obj.get("type", "?")))


class Html5Page:
    """One spice-html5 page in a Chromium tab: console log, dialogs, the display canvas."""

    def __init__(self, cdp: Cdp, session: str, url: str) -> None:
        self.cdp = cdp
        self.session = session
        self.url = url
        self.console: list[str] = []
        self.dialogs: list[dict[str, Any]] = []
        self.crashed = False
        self._changed = asyncio.Event()
        self.side_logs: list[Path] = []
        self.audio: list[dict[str, Any]] = []  # samples of AUDIO_PROBE_JS fetched so far
        cdp.listen(self._on_event)

    def _on_event(self, msg: dict[str, Any]) -> None:
        method, p = msg.get("method", ""), msg.get("params", {})
        if method == "Runtime.consoleAPICalled":
            self.console.append(f"[{p.get('type')}] " + " ".join(_remote_value(a) for a in p.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            det = p.get("exceptionDetails", {})
            exc = det.get("exception", {})
            self.console.append(f"[exception] {det.get('text', '')} {exc.get('description', '')}".rstrip())
        elif method == "Log.entryAdded":
            e = p.get("entry", {})
            self.console.append(f"[{e.get('source')}/{e.get('level')}] {e.get('text')} {e.get('url', '')}".rstrip())
        elif method == "Page.javascriptDialogOpening":
            # left open on purpose: dismissing spice_auto.html's password prompt() makes it reconnect forever
            self.dialogs.append(p)
            self.console.append(f"[dialog {p.get('type')}] {p.get('message')}")
        elif method in ("Inspector.targetCrashed", "Target.targetCrashed"):
            self.crashed = True
            self.console.append(f"[crash] {method}")
        else:
            return
        self._changed.set()

    def log_text(self, tail: int = 60) -> str:
        """The console log (last ``tail`` lines) and the side logs (Chromium, websockify) for failure messages."""
        lines = [f"page {self.url}", "--- browser console:"]
        lines += self.console[-tail:] or ["(empty)"]
        for path in self.side_logs:
            with contextlib.suppress(OSError):
                text = [ln for ln in path.read_text(errors="replace").strip().splitlines() if not _NOISE.search(ln)]
                if text:
                    lines += [f"--- {path.name}:", *text[-15:]]
        return "\n".join(lines)

    def errors(self) -> list[str]:
        """Console lines spice-html5 writes for failures (its log_err / exceptions / crashes)."""
        return [line for line in self.console if line.startswith(("[log] ERROR", "[exception]", "[crash]", "[dialog"))]

    def warnings(self) -> list[str]:
        """spice-html5 log_warn lines (unknown messages, unimplemented features, FIXMEs)."""
        return [line for line in self.console if line.startswith("[log] WARNING")]

    async def evaluate(self, expression: str, timeout: float = 10.0) -> Any:
        """Evaluate JS in the page and return its value (by value); fails fast while a dialog blocks the page."""
        if self.dialogs:
            raise Html5Error(f"a JavaScript dialog is open: {self.dialogs[-1].get('message')!r}\n{self.log_text()}")
        res = await self.cdp.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=self.session,
            timeout=timeout,
        )
        if "exceptionDetails" in res:
            raise Html5Error(f"JS failed: {res['exceptionDetails']}\n{self.log_text()}")
        return res.get("result", {}).get("value")

    async def canvas_info(self) -> dict[str, Any] | None:
        """``{'w', 'h', 'id'}`` of the display canvas, or None before the primary surface exists."""
        info: dict[str, Any] | None = await self.evaluate(_CANVAS_INFO_JS)
        return info

    async def read_canvas(self) -> np.ndarray | None:
        """The display canvas as (h, w) uint32 0x00RRGGBB, or None when there is none yet."""
        res = await self.evaluate(_READ_CANVAS_JS)
        if res is None:
            return None
        w, h = int(res["w"]), int(res["h"])
        rgba = np.frombuffer(base64.b64decode(res["data"]), dtype=np.uint8).reshape(h, w, 4)
        return rgba_to_xrgb(rgba)

    async def read_cursor(self) -> dict[str, Any] | None:
        """The image cursor spice-html5 set as CSS on #spice-screen, or None when there is none.

        Returns ``{'w', 'h', 'hot_x', 'hot_y', 'css', 'argb'}``; ``argb`` is (h, w) uint32 0xAARRGGBB of
        the PNG spice-html5 made (see :func:`decode_html5_png`: decoded here, not by the browser)."""
        css = str(await self.evaluate("document.getElementById('spice-screen').style.cursor") or "")
        m = re.search(r'url\("?data:image/png,([^")]*)"?\)\s*(\d+)\s+(\d+)', css)
        if m is None:
            return None
        try:
            rgba = decode_html5_png(unquote_to_bytes(m.group(1)))
        except (ValueError, KeyError, IndexError, struct.error) as exc:
            # e.g. a FROM_CACHE cursor: spice-html5 has no cursor cache and makes a PNG of no pixels
            raise Html5Error(f"cannot decode spice-html5's cursor PNG ({exc!r}): {css[:200]}") from None
        h, w = rgba.shape[:2]
        argb = (rgba[..., 3].astype(np.uint32) << 24) | rgba_to_xrgb(rgba)
        return {"w": w, "h": h, "hot_x": int(m.group(2)), "hot_y": int(m.group(3)), "css": css, "argb": argb}

    async def canvas_origin(self) -> tuple[float, float]:
        """Viewport coordinates of the display canvas's pixel (0, 0) (inside its border)."""
        xy = await self.evaluate(
            "(() => { const c = document.querySelector('#spice-screen canvas'); const r = c.getBoundingClientRect();"
            " return [r.left + c.clientLeft, r.top + c.clientTop]; })()"
        )
        return float(xy[0]), float(xy[1])

    async def key(self, key: str, code: str, key_code: int, *, down: bool = True, up: bool = True) -> None:
        """Type a key into the focused canvas (CDP Input.dispatchKeyEvent; ``key_code`` is the DOM keyCode)."""
        ev = {"key": key, "code": code, "windowsVirtualKeyCode": key_code, "nativeVirtualKeyCode": key_code}
        if down:
            await self.cdp.send("Input.dispatchKeyEvent", {"type": "keyDown", **ev}, session=self.session)
        if up:
            await self.cdp.send("Input.dispatchKeyEvent", {"type": "keyUp", **ev}, session=self.session)

    async def mouse(self, kind: str, x: int, y: int, *, button: str = "none", buttons: int = 0) -> None:
        """A mouse event at canvas pixel (x, y): ``kind`` mouseMoved / mousePressed / mouseReleased."""
        ox, oy = await self.canvas_origin()
        params: dict[str, Any] = {"type": kind, "x": ox + x, "y": oy + y, "button": button, "buttons": buttons}
        if kind != "mouseMoved":
            params["clickCount"] = 1
        await self.cdp.send("Input.dispatchMouseEvent", params, session=self.session)

    async def wait_event(self, pred: Callable[[Html5Page], Any], timeout: float, what: str) -> Any:
        """Wait until ``pred(self)`` is truthy (re-checked on every console/dialog event)."""
        deadline = time.monotonic() + timeout
        while True:
            got = pred(self)
            if got:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                raise Html5Error(f"timed out after {timeout} s waiting for {what}\n{self.log_text()}")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    async def wait_canvas(self, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until the display canvas exists; returns :meth:`canvas_info`."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            info = await self.canvas_info()
            if info is not None:
                return info
            if time.monotonic() > deadline:
                raise Html5Error(f"no display canvas after {timeout} s\n{self.log_text()}")
            await asyncio.sleep(0.05)

    async def wait_picture(
        self, want: np.ndarray | Callable[[], np.ndarray], timeout: float = 10.0, interval: float = 0.1
    ) -> np.ndarray | None:
        """Poll the canvas until it equals ``want`` (masked to 0xFFFFFF; a callable is re-evaluated each
        time, e.g. ``server.display_snapshot``); return the last canvas read (the caller asserts)."""
        deadline = time.monotonic() + timeout
        shown: np.ndarray | None = None
        while True:
            self._check_alive()
            target = want() if callable(want) else want
            shown = await self.read_canvas()
            if shown is not None and shown.shape == target.shape and np.array_equal(shown, target & 0xFFFFFF):
                return shown
            if time.monotonic() > deadline:
                return shown
            await asyncio.sleep(interval)

    async def audio_samples(self) -> list[dict[str, Any]]:
        """Every sample :data:`AUDIO_PROBE_JS` took so far (fetches the new ones; the page needs the
        probe in ``init_scripts``), oldest first; see there for the fields."""
        new = await self.evaluate(f"window.__spiceAudio ? window.__spiceAudio.samples.slice({len(self.audio)}) : null")
        if new is None:
            raise Html5Error(f"no audio probe in the page (init_scripts=(AUDIO_PROBE_JS,))\n{self.log_text()}")
        self.audio.extend(new)
        return self.audio

    async def audio_errors(self) -> list[dict[str, Any]]:
        """MediaError events of spice-html5's ``<audio>`` elements (``el``, ``code``, ``message``)."""
        errs: list[dict[str, Any]] = await self.evaluate("window.__spiceAudio ? window.__spiceAudio.errors : []")
        return errs

    async def audio_data(self) -> dict[int, dict[str, int]]:
        """PLAYBACK DATA counts per ``<audio>`` element (see :data:`AUDIO_PROBE_JS`): ``data``, ``dropped``."""
        got = await self.evaluate("window.__spiceAudio ? window.__spiceAudio.data : {}")
        return {int(k): {"data": int(v["data"]), "dropped": int(v["dropped"])} for k, v in (got or {}).items()}

    async def wait_audio(self, pred: Callable[[list[dict[str, Any]]], Any], timeout: float, what: str) -> Any:
        """Poll the audio samples until ``pred(samples)`` is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            got = pred(await self.audio_samples())
            if got:
                return got
            if time.monotonic() > deadline:
                last = self.audio[-1] if self.audio else None
                raise Html5Error(
                    f"timed out after {timeout} s waiting for {what}; last audio sample {last}\n{self.log_text()}"
                )
            await asyncio.sleep(0.1)

    def _check_alive(self) -> None:
        if self.crashed or self.cdp.closed or self.cdp.proc.returncode is not None:
            raise Html5Error(f"Chromium is gone (exit {self.cdp.proc.returncode})\n{self.log_text()}")
        if self.dialogs:
            raise Html5Error(f"a JavaScript dialog is open: {self.dialogs[-1].get('message')!r}\n{self.log_text()}")


def html5_url(
    http_port: int, ws_port: int, password: str | None = None, path: str = "websockify", page: str = HTML5_PAGE
) -> str:
    """spice_auto.html's URL: it reads ``host``, ``port``, ``password`` and ``path`` from the query string
    (WebSocket URI ``ws://host:port/path``; an empty ``path`` means none)."""
    q = f"host=127.0.0.1&port={ws_port}&path={quote(path, safe='')}"
    if password is not None:
        q += f"&password={quote(password, safe='')}"  # spice_auto turns '+' into ' ': quote, not quote_plus
    return f"http://127.0.0.1:{http_port}/{page}?{q}"


@contextlib.asynccontextmanager
async def html5_client(
    spice_port: int | None = None,
    *,
    password: str | None = None,
    websocket_port: int | None = None,
    path: str = "websockify",
    workdir: Path | None = None,
    timeout: float = 10.0,
    fix_ticket: bool = True,
    own_page: bool = False,
    https: bool = False,
    chromium_flags: tuple[str, ...] = (),
    init_scripts: tuple[str, ...] = (),
) -> AsyncIterator[Html5Page]:
    """spice-html5 in headless Chromium connected to a SPICE server on 127.0.0.1.

    ``spice_port``: plain-TCP SPICE port; websockify bridges WebSocket to it. ``websocket_port``
    instead: a port that speaks WebSocket itself (no proxy). Yields the :class:`Html5Page` once the
    page has loaded (the SPICE link goes on in the background: use :meth:`Html5Page.wait_canvas`).
    ``fix_ticket``: serve ticket.js with its leading-zero bug fixed (see :data:`TICKET_JS_BUG`).
    ``own_page``: load ``spice_auto.html`` from ``websocket_port`` itself (a server with a web root),
    with no host or port in the URL -- the page connects back to where it came from, as a user's
    browser would; ``fix_ticket`` does not apply (the server's files are served as they are). ``https`` (with
    ``own_page``): ``websocket_port`` is a TLS port, the page is loaded over https and connects
    with ``wss://``; Chromium is told to accept the test certificate. ``chromium_flags``: more
    command-line switches for Chromium (e.g. ``--autoplay-policy=no-user-gesture-required``).
    ``init_scripts``: JavaScript run in the page before its own scripts (CDP
    ``Page.addScriptToEvaluateOnNewDocument``), e.g. :data:`AUDIO_PROBE_JS`.
    """
    if (spice_port is None) == (websocket_port is None):
        raise ValueError("give exactly one of spice_port (via websockify) and websocket_port")
    if own_page and websocket_port is None:
        raise ValueError("own_page needs websocket_port")
    require_html5(proxy=websocket_port is None)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="spice-html5-", ignore_cleanup_errors=True))
            )
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        chrome_log, ws_log = workdir / "chromium.log", workdir / "websockify.log"
        overrides = {}
        if fix_ticket and (fixed := patched_ticket_js()) is not None:
            overrides["/ticket.js"] = fixed
        http_port = None if own_page else stack.enter_context(static_http_server(overrides=overrides))
        async with contextlib.AsyncExitStack() as astack:
            if websocket_port is None:
                assert spice_port is not None
                websocket_port = await astack.enter_async_context(websockify(spice_port, ws_log))
            if http_port is None:
                url = f"{'https' if https else 'http'}://127.0.0.1:{websocket_port}/{HTML5_PAGE}"
                if password is not None:
                    url += f"?password={quote(password, safe='')}"
            else:
                url = html5_url(http_port, websocket_port, password, path)
            flags = (*chromium_flags, "--ignore-certificate-errors") if https else chromium_flags
            cdp = await Cdp.launch(profile, chrome_log, flags)
            astack.push_async_callback(cdp.close)
            # the first reply: Chromium is up (it reads the pipe once started)
            target = await cdp.send("Target.createTarget", {"url": "about:blank"}, timeout=max(timeout, START_DEADLINE))
            att = await cdp.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
            page = Html5Page(cdp, att["sessionId"], url)
            page.side_logs = [chrome_log, ws_log]
            for domain in ("Runtime", "Log", "Page", "Inspector"):
                with contextlib.suppress(Html5Error):  # Inspector is not there on every version
                    await cdp.send(f"{domain}.enable", session=page.session)
            for script in init_scripts:
                await cdp.send("Page.addScriptToEvaluateOnNewDocument", {"source": script}, session=page.session)
            nav = await cdp.send("Page.navigate", {"url": url}, session=page.session, timeout=timeout)
            if nav.get("errorText"):
                raise Html5Error(f"navigating to {url}: {nav['errorText']}\n{page.log_text()}")
            yield page
