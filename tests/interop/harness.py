"""Helpers for the real-client (interop) test tier: run spice-gtk, make TLS material.

The judge here is spice-gtk, driven through PyGObject by ``gi_client.py``.  PyGObject and
the ``SpiceClientGLib-2.0`` typelib belong to the *system* interpreter (``/usr/bin/python3``),
not to the interpreter running pytest, so the client always runs as a subprocess and talks
back as JSON lines.  Nothing here imports ``gi``.

* :func:`gi_client_available` / :func:`gi_client_skip_reason` / :func:`require_gi_client`
* :class:`GiClient` (streaming: react to events while the client runs) and
  :func:`run_gi_client` (run to completion) -- both asyncio, so a test can serve our
  asyncio server on the same loop while the client runs.
* :func:`tests.support.certs.make_test_ca` -- throwaway CA + server certificate for 127.0.0.1/localhost in
  QEMU's x509 dir layout (``ca-cert.pem``, ``server-cert.pem``, ``server-key.pem``).
* :func:`find_events` / :func:`first_event` / :func:`format_events`.
* :func:`read_ppm` -- a client screenshot as (h, w) uint32 0x00RRGGBB.
* Audio (S16LE interleaved stereo, 48 kHz, the SPICE playback/record format):
  :func:`tone_sequence` (a test signal of 100 ms-aligned tone segments), :func:`write_paced` (feed
  PCM to a sink in real time from a thread), :func:`window_spectra` (dominant frequency and RMS per
  window), :func:`pcm_lag` (delay of a decoded stream against the written one, by correlation).

A test that needs the client to have *shown* something starts it with ``--control`` and waits for
the thing itself -- :meth:`GiClient.wait_picture` (screenshots until a predicate holds), an event
(:meth:`GiClient.wait_for`) -- then ends the session with :meth:`GiClient.finish`; a ``--linger-ms``
guess of how long the server's output takes to arrive is a race on a loaded machine.

pytest-asyncio is not required: write ``asyncio.run(scenario())`` in a plain test.
Fixtures wrapping these live in ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
GI_CLIENT = Path(__file__).resolve().with_name("gi_client.py")
_GI_PROBE = (
    "import gi; gi.require_version('SpiceClientGLib', '2.0'); "
    "from gi.repository import SpiceClientGLib; print(SpiceClientGLib.util_get_version_string())"
)

Event = dict[str, Any]


# --------------------------------------------------------------------------- availability


@functools.cache
def gi_client_skip_reason() -> str | None:
    """Return why gi_client.py cannot run here, or None if it can (probed once)."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found (python3-gi lives in the system interpreter)"
    try:
        proc = subprocess.run(
            [SYSTEM_PYTHON, "-c", _GI_PROBE],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
            env=client_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {SYSTEM_PYTHON}: {exc}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return (
            "spice-gtk GI bindings unavailable "
            f"(need python3-gi + gir1.2-spiceclientglib-2.0 for {SYSTEM_PYTHON}): {last}"
        )
    return None


def gi_client_available() -> bool:
    """True if ``/usr/bin/python3`` can import SpiceClientGLib 2.0 (cached)."""
    return gi_client_skip_reason() is None


def require_gi_client() -> None:
    """``pytest.skip`` with a clear reason when the GI client cannot run."""
    reason = gi_client_skip_reason()
    if reason is not None:
        pytest.skip(reason)


def client_env() -> dict[str, str]:
    """Environment for the system interpreter: drop the pytest interpreter's Python settings."""
    env = dict(os.environ)
    for var in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH"):
        env.pop(var, None)
    env.setdefault("G_MESSAGES_DEBUG", "")
    return env


# --------------------------------------------------------------------------- running it


class GiClient:
    """A running ``gi_client.py``; events are parsed as they arrive.

    Usage::

        client = await GiClient.start("--port", str(port), "--expect-channels", "4")
        await client.wait_for("inputs-open", timeout=5)
        ...                                  # poke the server while the client is linked
        code = await client.wait(timeout=10)
        assert client.events[-1]["event"] == "done"

    With ``--control`` among the arguments the client stays linked until :meth:`finish` and takes
    screenshots on demand (:meth:`screenshot`, :meth:`wait_picture`).
    """

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[Event] = []
        self.stderr_lines: list[str] = []
        self._changed = asyncio.Condition()
        self._shots: Path | None = None
        self._shot_count = 0
        self._readers = [
            asyncio.ensure_future(self._read_stdout()),
            asyncio.ensure_future(self._read_stderr()),
        ]

    @classmethod
    async def start(cls, *args: str, timeout: float | None = None, env: Mapping[str, str] | None = None) -> GiClient:
        """Spawn the client.  If ``timeout`` is given and ``--timeout`` is not in ``args``,
        the client is told to give up 1.5 s before it (so it reports ``timeout`` itself).
        ``env`` adds to (or overrides) the client's environment (e.g. ``GST_PLUGIN_FEATURE_RANK``)."""
        argv = [str(a) for a in args]
        if timeout is not None and "--timeout" not in argv:
            argv += ["--timeout", f"{max(timeout - 1.5, 1.0):.3f}"]
        proc = await asyncio.create_subprocess_exec(
            SYSTEM_PYTHON,
            str(GI_CLIENT),
            *argv,
            stdin=asyncio.subprocess.PIPE if "--control" in argv else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**client_env(), **(env or {})},
        )
        return cls(proc)

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                event = {"event": "_raw", "line": line}
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.stderr_lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    @property
    def done(self) -> Event | None:
        """The final ``done`` event, if printed."""
        return first_event(self.events, "done")

    async def wait_for(
        self,
        event: str | Callable[[Event], bool],
        timeout: float = 10.0,
        **match: Any,
    ) -> Event:
        """Wait for the first event (seen or future) matching ``event`` and ``match``.

        Raises:
            TimeoutError: not seen in time.
            EOFError: the client exited without printing it.
        """

        def pick() -> Event | None:
            for ev in self.events:
                if _matches(ev, event, match):
                    return ev
            return None

        async def waiter() -> Event:
            async with self._changed:
                while True:
                    found = pick()
                    if found is not None:
                        return found
                    if self.events and self.events[-1].get("event") == "done":
                        raise EOFError(f"gi_client finished without {event!r} {match}: {self.done}")
                    await self._changed.wait()

        return await asyncio.wait_for(waiter(), timeout)

    async def wait(self, timeout: float = 20.0) -> int:
        """Wait for exit (killing the client after ``timeout``); return its exit status."""
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.kill()
            await self.proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
        if self._shots is not None:
            shutil.rmtree(self._shots, ignore_errors=True)
        assert self.proc.returncode is not None
        return self.proc.returncode

    # ------------------------------------------------------------- --control

    async def command(self, line: str) -> None:
        """Send one ``--control`` command line (``screenshot PATH``, ``finish``)."""
        if self.proc.stdin is None:
            raise RuntimeError("gi_client was not started with --control")
        if self.proc.returncode is None and not self.proc.stdin.is_closing():
            self.proc.stdin.write(line.encode() + b"\n")
            with contextlib.suppress(ConnectionError):
                await self.proc.stdin.drain()

    async def action(self, act: dict[str, Any], timeout: float = 10.0) -> Event:
        """``--control``: perform one action now (e.g. ``{"op": "preferred_video_codecs", "codecs": [3]}``);
        returns its ``action`` event (with ``error`` if it failed)."""
        seen = len(self.events)
        await self.command("action " + json.dumps(act))

        def mine(ev: Event) -> bool:
            return ev.get("event") == "action" and ev.get("index") == -1 and any(e is ev for e in self.events[seen:])

        return await self.wait_for(mine, timeout=timeout)

    async def finish(self, timeout: float = 20.0) -> int:
        """End a ``--control`` session (``--screenshot`` is written first); return the exit status."""
        await self.command("finish")
        return await self.wait(timeout)

    async def screenshot(self, timeout: float = 10.0, display: int = 0) -> np.ndarray | None:
        """Display ``display``'s primary surface now, as (h, w) uint32 0x00RRGGBB; None while there is none."""
        if self._shots is None:
            self._shots = Path(tempfile.mkdtemp(prefix="gi-client-shots-"))
        self._shot_count += 1
        path = str(self._shots / f"shot-{self._shot_count}.ppm")
        await self.command(f"screenshot {path}" if display == 0 else f"screenshot_display {display} {path}")
        ev = await self.wait_for("screenshot", timeout=timeout, path=path)
        if "error" in ev:
            return None
        shown = read_ppm(Path(path))
        os.unlink(path)
        return shown

    async def wait_picture(
        self, done: Callable[[np.ndarray], bool], timeout: float = 20.0, interval: float = 0.05, display: int = 0
    ) -> np.ndarray | None:
        """Take screenshots until ``done(picture)`` holds; return the last picture (the caller asserts
        on it: the deadline only bounds a picture that never comes)."""
        deadline = time.monotonic() + timeout
        while True:
            shown = await self.screenshot(display=display)
            if shown is not None and done(shown):
                return shown
            if time.monotonic() > deadline or self.proc.returncode is not None:
                return shown
            await asyncio.sleep(interval)

    async def expect(self, event: str | Callable[[Event], bool], timeout: float = 20.0, **match: Any) -> Event:
        """:meth:`wait_for`, failing as an assertion with the client's events and stderr."""
        try:
            return await self.wait_for(event, timeout, **match)
        except (TimeoutError, EOFError) as exc:
            raise AssertionError(f"gi_client: no {event!r} {match} ({exc!r})\n{format_events(self.events, self.stderr)}") from None

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


@contextlib.asynccontextmanager
async def controlled_client(
    *args: str, timeout: float = 30.0, ready_timeout: float = 20.0, env: Mapping[str, str] | None = None
) -> AsyncIterator[GiClient]:
    """``gi_client.py --control`` with ``args``: yields the client once it is ``ready``, ends the
    session with :meth:`GiClient.finish` when the body is done (kills it if the body fails).
    ``timeout`` bounds the whole client run; after the block ``client.proc.returncode`` is its exit
    status (0: ok) and ``client.done`` its final event. ``env``: as in :meth:`GiClient.start`."""
    client = await GiClient.start(*args, "--control", timeout=timeout, env=env)
    try:
        await client.expect("ready", timeout=ready_timeout)
        yield client
    except BaseException:
        client.kill()
        await client.wait(timeout=10)
        raise
    await client.finish(timeout=timeout)


async def run_gi_client(*args: str, timeout: float = 20.0) -> tuple[int, list[Event], str]:
    """Run ``gi_client.py`` with ``args`` to completion.

    Returns ``(returncode, events, stderr)``; returncode is negative if the client had to be
    killed after ``timeout`` seconds (it is told to stop by itself 1.5 s earlier unless
    ``--timeout`` is among ``args``).
    """
    client = await GiClient.start(*args, timeout=timeout)
    code = await client.wait(timeout=timeout)
    return code, client.events, client.stderr


def _matches(ev: Event, event: str | Callable[[Event], bool], match: dict[str, Any]) -> bool:
    if callable(event):
        if not event(ev):
            return False
    elif ev.get("event") != event:
        return False
    return all(ev.get(k) == v for k, v in match.items())


def find_events(events: Sequence[Event], event: str, **match: Any) -> list[Event]:
    """All events named ``event`` whose fields equal ``match``."""
    return [ev for ev in events if _matches(ev, event, match)]


def first_event(events: Sequence[Event], event: str, **match: Any) -> Event | None:
    found = find_events(events, event, **match)
    return found[0] if found else None


def read_ppm(path: Path) -> np.ndarray:
    """A binary PPM (P6, 8 bits) as written by gi_client.py, as (h, w) uint32 0x00RRGGBB."""
    data = path.read_bytes()
    parts = data.split(b"\n", 3)
    assert parts[0] == b"P6", parts[0]
    w, h = (int(v) for v in parts[1].split())
    assert parts[2] == b"255"
    rgb = np.frombuffer(parts[3][: w * h * 3], dtype=np.uint8).reshape(h, w, 3).astype(np.uint32)
    out: np.ndarray = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return out


def same_picture(want: np.ndarray) -> Callable[[np.ndarray], bool]:
    """A :meth:`GiClient.wait_picture` predicate: the picture equals ``want`` (masked to 0xFFFFFF)."""
    target = want & 0xFFFFFF
    return lambda shown: shown.shape == target.shape and bool(np.array_equal(shown, target))


# --------------------------------------------------------------------------- audio

AUDIO_RATE = 48000
#: one 10 ms SPICE audio frame: 480 stereo S16 samples
AUDIO_FRAME_BYTES = 1920


def tone_sequence(segments: Sequence[tuple[float, float, float]], rate: int = AUDIO_RATE) -> bytes:
    """S16LE stereo PCM: for each ``(frequency Hz, amplitude 0..1, seconds)`` a sine (phase
    continuous across segments) on the left and the same at half amplitude on the right;
    frequency 0 is silence. Segment lengths are rounded to whole samples."""
    parts = []
    phase = 0.0
    for freq, amp, seconds in segments:
        n = round(seconds * rate)
        ph = phase + 2 * np.pi * freq * np.arange(n) / rate
        phase = float((phase + 2 * np.pi * freq * n / rate) % (2 * np.pi))
        left = amp * 32767 * np.sin(ph)
        parts.append(np.stack([left, left / 2], axis=1))
    pcm = np.concatenate(parts) if parts else np.zeros((0, 2))
    return bytes(np.round(pcm).astype("<i2").tobytes())


def write_paced(
    write: Callable[[bytes], object], pcm: bytes, chunk: int = AUDIO_FRAME_BYTES, rate: int = AUDIO_RATE
) -> None:
    """Call ``write`` with ``chunk``-byte pieces of ``pcm`` in real time (blocking; run it in a
    thread): piece k goes out when the clock reaches its start time, so a late wake-up sends
    every piece that is due at once instead of drifting."""
    t0 = time.monotonic()
    bytes_per_second = rate * 4
    for off in range(0, len(pcm), chunk):
        delay = t0 + off / bytes_per_second - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        write(pcm[off : off + chunk])


def pcm_channels(pcm: bytes) -> np.ndarray:
    """S16LE interleaved stereo as an (n, 2) float array."""
    return np.frombuffer(pcm[: len(pcm) // 4 * 4], dtype="<i2").reshape(-1, 2).astype(np.float64)


def pcm_lag(got: bytes, want: bytes, max_lag: int = 4800, span: int = 9600) -> int:
    """Samples by which ``got`` is delayed against ``want`` (0..max_lag), by cross-correlation of
    the left channel over ``span`` samples of ``want`` (it should start with a non-periodic part,
    e.g. a tone change, for the answer to be unique)."""
    g, w = pcm_channels(got)[:, 0], pcm_channels(want)[:, 0]
    w = w[:span]
    g = g[: span + max_lag]
    if len(w) == 0 or len(g) < len(w):
        return 0
    corr = np.correlate(g, w, mode="valid")
    return int(np.argmax(corr[: max_lag + 1]))


def window_spectra(
    pcm: bytes, window: int = 4800, rate: int = AUDIO_RATE, channel: int = 0
) -> list[tuple[float, float]]:
    """Per ``window``-sample window of one channel: (dominant frequency Hz, RMS dBFS), Hann-windowed
    FFT (bin width rate / window: 10 Hz for 100 ms); a silent window gives (0, -inf)."""
    x = pcm_channels(pcm)[:, channel]
    hann = np.hanning(window)
    out: list[tuple[float, float]] = []
    for start in range(0, len(x) - window + 1, window):
        w = x[start : start + window]
        rms = float(np.sqrt(np.mean(w * w)))
        if rms == 0:
            out.append((0.0, float("-inf")))
            continue
        spec = np.abs(np.fft.rfft(w * hann))
        out.append((float(np.argmax(spec)) * rate / window, 20 * float(np.log10(rms / 32768))))
    return out


def format_events(events: Sequence[Event], stderr: str = "") -> str:
    """Readable dump for assertion messages."""
    text = "\n".join(json.dumps(ev) for ev in events)
    if stderr:
        text += "\n--- stderr ---\n" + stderr[-4000:]
    return text
