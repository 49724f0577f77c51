"""Live metrics of a running server: one snapshot object, and its Prometheus text form.

libspice-server has no metrics beyond debug logs and a few ``spice_server_get_*`` calls; an
operator running many VMs wants to see connections, link failures, protocol errors, traffic per
channel and what the displays send, without attaching a debugger. :meth:`SpiceServer.metrics
<spiceserver.SpiceServer.metrics>` returns a :class:`Metrics` snapshot; with
``ServerConfig(metrics_path="/metrics")`` the same figures are served on the SPICE ports in the
Prometheus text exposition format (version 0.0.4), which every metrics collector reads.

No I/O here: the server gathers the numbers, this module only shapes and renders them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Metrics", "DisplayMetrics", "SoundMetrics", "DeviceMetrics", "CONTENT_TYPE"]

#: The Content-Type of the Prometheus text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class DisplayMetrics:
    """One display (one worker thread) since the server started."""

    display_id: int
    drawables: int
    hidden: int
    pruned: int
    clients: int
    pipe_items: int
    #: images sent, by how (glz, quic, lz, from_cache, ...), over all its clients past and present
    images: dict[str, int] = field(default_factory=dict)
    #: video streams live now, and started since the server started
    streams: int = 0
    streams_started: int = 0
    #: stream frames by codec (mjpeg, h264, ...), over all clients past and present: ``frames``
    #: encoded and sent, ``bytes`` sent, ``encode_ms`` spent encoding them, ``dropped`` (by the rate
    #: control, or replaced unsent by a newer frame)
    video: dict[str, dict[str, float]] = field(default_factory=dict)
    #: encode once (:mod:`spiceserver.worker.shared_encode`), over all clients past and present:
    #: image codec runs, results one client took from another's run instead of encoding again,
    #: and the bytes the codec runs produced
    images_encoded: int = 0
    images_shared: int = 0
    bytes_encoded: int = 0
    #: bytes sent to each connected display client (by its worker client id; stream frames included)
    client_bytes: dict[int, int] = field(default_factory=dict)
    #: video stream frames a client took from another client's encode (MJPEG at the same quality)
    stream_frames_shared: int = 0

    @property
    def encode_ms(self) -> float | None:
        """Mean milliseconds to encode one stream frame (all codecs), None before any."""
        frames = sum(v["frames"] for v in self.video.values())
        return sum(v["encode_ms"] for v in self.video.values()) / frames if frames else None


@dataclass(frozen=True)
class SoundMetrics:
    """One sound channel (playback or record) since the server started.

    Attributes:
        channel: ``"playback"`` or ``"record"``.
        id: the channel id.
        frames: 10 ms frames sent (playback) or received (record), over all clients.
        dropped: frames dropped as late (playback), or 10 ms frames' worth of samples lost to the
            full ring (record).
        bytes: audio payload bytes sent or received (Opus packets or raw PCM).
        clients: the data mode of each connected client (``"raw"`` or ``"opus"``).
    """

    channel: str
    id: int
    frames: int = 0
    dropped: int = 0
    bytes: int = 0
    clients: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceMetrics:
    """One char-device channel (port, WebDAV, ...) or the guest agent, since the server started.

    Attributes:
        channel: the channel's name (``"port"``, ``"webdav"``, ...), or ``"agent"``.
        id: the channel id.
        name: the port's name (``org.qemu.monitor.qmp.0`` ...), ``""`` when it has none.
        bytes_to_device: bytes from clients written to the device.
        bytes_to_client: bytes from the device sent to clients.
        dropped_bytes: bytes dropped: device data with no client to take it past the bound, or
            agent messages the filter discarded (copy-paste or file transfer off).
        refused_links: links refused because a client was connected already.
        device_open: the device end is open (the guest opened its port, the agent is there).
        client: a client is connected.
    """

    channel: str
    id: int
    name: str = ""
    bytes_to_device: int = 0
    bytes_to_client: int = 0
    dropped_bytes: int = 0
    refused_links: int = 0
    device_open: bool = False
    client: bool = False


@dataclass(frozen=True)
class Metrics:
    """A snapshot of the server's counters and gauges."""

    uptime_seconds: float
    connections: int
    links_ok: int
    links_failed: int
    protocol_errors: int
    websocket_links: int
    http_requests: int
    sessions: int
    codec_kernels_ready: bool
    #: connected sessions by role ("owner", "viewer")
    sessions_by_role: dict[str, int] = field(default_factory=dict)
    #: open channel connections by channel name
    channels: dict[str, int] = field(default_factory=dict)
    #: bytes by (channel name, "in" | "out") since start
    channel_bytes: dict[tuple[str, str], int] = field(default_factory=dict)
    displays: tuple[DisplayMetrics, ...] = ()
    sound: tuple[SoundMetrics, ...] = ()
    devices: tuple[DeviceMetrics, ...] = ()
    #: SASL logins (``ServerConfig.sasl``) accepted / refused since start
    sasl_ok: int = 0
    sasl_failed: int = 0

    def prometheus(self) -> str:
        """The snapshot in the Prometheus text exposition format."""
        out: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP spiceserver_{name} {help_text}")
            out.append(f"# TYPE spiceserver_{name} {kind}")
            for labels, value in samples:
                out.append(f"spiceserver_{name}{labels} {_number(value)}")

        family("uptime_seconds", "gauge", "Seconds since the server object was created.", [("", self.uptime_seconds)])
        family("connections_total", "counter", "Connections accepted on every listener.", [("", self.connections)])
        family(
            "links_total",
            "counter",
            "Link handshakes by outcome.",
            [('{result="ok"}', self.links_ok), ('{result="failed"}', self.links_failed)],
        )
        family("sasl_logins_total", "counter", "SASL logins by outcome.", [('{result="ok"}', self.sasl_ok), ('{result="failed"}', self.sasl_failed)])
        family("protocol_errors_total", "counter", "Channel connections closed for a protocol error.", [("", self.protocol_errors)])
        family("websocket_links_total", "counter", "Connections that came in as WebSocket tunnels.", [("", self.websocket_links)])
        family("http_requests_total", "counter", "Plain HTTP requests answered (files, metrics, refusals).", [("", self.http_requests)])
        family("sessions", "gauge", "Connected clients (main channels).", [("", self.sessions)])
        family("sessions_by_role", "gauge", "Connected clients by role.", [(_labels(role=k), v) for k, v in sorted(self.sessions_by_role.items())])
        family("codec_kernels_ready", "gauge", "1 once the compiled image codecs are ready.", [("", int(self.codec_kernels_ready))])
        family(
            "channels",
            "gauge",
            "Open channel connections by channel.",
            [(_labels(channel=k), v) for k, v in sorted(self.channels.items())],
        )
        family(
            "channel_bytes_total",
            "counter",
            "Bytes received from and sent to clients, by channel.",
            [(_labels(channel=c, direction=d), v) for (c, d), v in sorted(self.channel_bytes.items())],
        )
        for name, attr, kind, help_text in (
            ("display_drawables_total", "drawables", "counter", "Drawables the display received."),
            ("display_hidden_total", "hidden", "counter", "Drawables hidden completely by later opaque ones."),
            ("display_pruned_total", "pruned", "counter", "Drawables dropped from client pipes before sending."),
            ("display_clients", "clients", "gauge", "Display channel clients connected."),
            ("display_pipe_items", "pipe_items", "gauge", "Items waiting in the display clients' pipes."),
        ):
            family(name, kind, help_text, [(_labels(display=str(d.display_id)), getattr(d, attr)) for d in self.displays])
        family(
            "display_images_total",
            "counter",
            "Images sent to display clients, by encoding.",
            [
                (_labels(display=str(d.display_id), encoding=k), v)
                for d in self.displays
                for k, v in sorted(d.images.items())
            ],
        )
        for name, attr, help_text in (
            ("display_image_encodes_total", "images_encoded", "Image codec runs (a result shared by several clients counts once)."),
            ("display_image_encodes_shared_total", "images_shared", "Image encodes saved: a client took the result another client's encode produced."),
            ("display_encoded_bytes_total", "bytes_encoded", "Bytes the image codec runs produced."),
            ("display_stream_frames_shared_total", "stream_frames_shared", "Video stream frames a client took from another client's encode."),
        ):
            family(name, "counter", help_text, [(_labels(display=str(d.display_id)), getattr(d, attr)) for d in self.displays])
        family(
            "display_client_bytes_total", "counter", "Bytes sent to each connected display client.",
            [(_labels(display=str(d.display_id), client=str(c)), v) for d in self.displays for c, v in sorted(d.client_bytes.items())],
        )  # fmt: skip
        family("display_streams", "gauge", "Video streams live.", [(_labels(display=str(d.display_id)), d.streams) for d in self.displays])
        family(
            "display_streams_total", "counter", "Video streams started.",
            [(_labels(display=str(d.display_id)), d.streams_started) for d in self.displays],
        )  # fmt: skip
        for name, key, help_text, scale in (
            ("video_frames_total", "frames", "Video stream frames encoded and sent, by codec.", 1.0),
            ("video_frames_dropped_total", "dropped", "Video stream frames dropped before encoding (rate control, or a newer frame won), by codec.", 1.0),
            ("video_bytes_total", "bytes", "Video stream bytes sent, by codec (its rate is the bit rate).", 1.0),
            ("video_encode_seconds_total", "encode_ms", "Seconds spent encoding video stream frames, by codec.", 0.001),
        ):
            family(
                name, "counter", help_text,
                [
                    (_labels(display=str(d.display_id), codec=c), v[key] * scale)
                    for d in self.displays
                    for c, v in sorted(d.video.items())
                ],
            )  # fmt: skip
        for name, attr, help_text in (
            ("sound_frames_total", "frames", "10 ms sound frames sent (playback) or received (record)."),
            ("sound_frames_dropped_total", "dropped", "Sound frames dropped as late (playback) or lost to a full ring (record)."),
            ("sound_bytes_total", "bytes", "Sound payload bytes (Opus packets or raw PCM) sent or received."),
        ):
            family(name, "counter", help_text, [(_labels(channel=m.channel, id=str(m.id)), getattr(m, attr)) for m in self.sound])
        family(
            "sound_clients", "gauge", "Sound channel clients by data mode.",
            [
                (_labels(channel=m.channel, id=str(m.id), mode=mode), m.clients.count(mode))
                for m in self.sound
                for mode in sorted(set(m.clients))
            ],
        )  # fmt: skip

        def device(m: DeviceMetrics, **extra: str) -> str:
            return _labels(channel=m.channel, id=str(m.id), name=m.name, **extra)

        family(
            "device_bytes_total", "counter", "Char-device bytes written to the device or sent to clients.",
            [
                (device(m, direction=d), v)
                for m in self.devices
                for d, v in (("to_device", m.bytes_to_device), ("to_client", m.bytes_to_client))
            ],
        )  # fmt: skip
        for name, attr, kind, help_text in (
            ("device_dropped_bytes_total", "dropped_bytes", "counter", "Char-device bytes dropped (no client past the bound, or filtered)."),
            ("device_refused_links_total", "refused_links", "counter", "Links refused: the char-device channel had a client already."),
            ("device_open", "device_open", "gauge", "1 while the device end is open (guest port open, agent present)."),
            ("device_client", "client", "gauge", "1 while a client is connected to the char-device channel."),
        ):
            family(name, kind, help_text, [(device(m), int(getattr(m, attr))) for m in self.devices])
        return "\n".join(out) + "\n"


def _labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in kv.items()) + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))
