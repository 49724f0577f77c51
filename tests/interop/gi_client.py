#!/usr/bin/python3
"""Scriptable spice-gtk client (SpiceClientGLib via PyGObject) for interop tests.

Run with the *system* interpreter that owns python3-gi::

    /usr/bin/python3 tests/interop/gi_client.py --host 127.0.0.1 --port 5900 \
        --expect-channels 3 --actions '[{"op":"key_press","scancode":30}]'

It imports nothing from the project.  It drives a real ``SpiceSession`` (GLib only:
no Gtk, no X display needed) and prints one JSON object per line on stdout for each
thing it observes.  The last line is always ``{"event": "done", "reason": ..., ...}``.

Events (all objects have an ``"event"`` key; ``t`` is seconds since start)
---------------------------------------------------------------------------
``start``            options summary, spice-gtk version
``channel-new``      ``type``/``id``/``name`` of a channel spice-gtk created
                     (main first, the rest from the server's CHANNELS_LIST)
``channel-event``    ``name`` = OPENED, CLOSED, SWITCHING, ERROR_CONNECT, ERROR_TLS,
                     ERROR_LINK, ERROR_AUTH, ERROR_IO; with ``type``/``id``/``channel``.
                     OPENED adds ``common_caps``/``caps`` (the *server's* caps as
                     spice-gtk stored them, list of set bit numbers), ``remote_port``
                     and ``tls`` (true if the socket went to ``--tls-port``).
                     Errors add ``error`` {domain, code, message} when spice-gtk has one.
``channel-skipped``  a channel created but not connected (``--skip-channels``)
``channel-destroy``  spice-gtk dropped the channel object
``mouse-mode``       main channel ``mouse-mode`` property: ``mode`` 1 server / 2 client
``agent``            main channel agent state: ``connected`` (bool), ``caps0``, ``caps`` (set bits)
``clipboard-grab``   the guest grabbed: ``selection``, ``types`` (VD_AGENT_CLIPBOARD_* ints); accepted
``clipboard-request`` the guest asks for our clipboard: ``selection``, ``type``, ``answered`` (true
                     when a ``clipboard_grab`` offer with data answered it; else send ``clipboard_notify``)
``clipboard-data``   guest clipboard data (after ``clipboard_request``): ``selection``, ``type``,
                     ``size``, ``b64`` and ``text`` (when it is UTF-8)
``clipboard-release`` the guest released ``selection``
``file-transfer`` / ``file-transfer-finished``  spice-gtk's task per file: ``id``, ``path``, bytes, ``error``
``file-copy-done``   a ``file_copy`` finished: ``paths``, ``ok``, ``error`` (spice-gtk's message)
``port-opened``      port channel ``port-opened`` changed: ``id``, ``name``, ``opened``
``port-data``        port channel data: ``id``, ``name``, ``size``, ``b64``, ``text``
``port-event``       port channel event: ``id``, ``name``, ``port_event`` (0 OPENED, 1 CLOSED, 2 BREAK)
``port-written``     a ``port_write`` completed: ``name``, ``written`` (-1: failed)
``audio-backend``    ``--audio-backend``: ``type`` of the SpiceAudio that ``spice_audio_get`` made
                     (SpiceGstaudio; its playback volume is read from the element named
                     ``audiosink`` of the pipeline, which ``SPICE_GST_AUDIOSINK`` may replace)
``session-name``     session ``name`` property (server's MAIN NAME message)
``session-uuid``     session ``uuid`` (MAIN UUID message) as a canonical string
``inputs-open``      the inputs channel is OPENED (actions may start)
``inputs-modifiers`` inputs channel ``key-modifiers`` (INPUTS INIT / KEY_MODIFIERS)
``display-primary-create``  ``id``, ``format``, ``width``, ``height``, ``stride``
``display-primary-destroy`` ``id``
``display-invalidate`` ``id``, ``x``, ``y``, ``w``, ``h`` (first ``--max-invalidates`` only;
                     the total count is in ``done.invalidates``)
``display-mark``     ``id``, ``mark``
``display-monitors`` ``id``, ``monitors`` list of {id, surface_id, x, y, width, height}
``cursor-set``/``cursor-move``/``cursor-hide``/``cursor-reset``
``pixel``            ``--watch-pixel X,Y``: ``x``, ``y``, ``rgb`` (0xRRGGBB int) of display 0's
                     primary at X,Y, emitted at primary-create and whenever an invalidate
                     covering X,Y changed it (read as the screenshot reads the primary)
``playback-start``   ``format`` (1 = S16), ``channels``, ``rate`` (PLAYBACK START)
``playback-data``    one per DATA packet as spice-gtk decoded it: ``n`` PCM bytes (1920 per
                     10 ms packet, raw or Opus), ``total`` bytes so far, ``packets``, ``peak``
                     (max |sample| of the packet, S16); ``t`` is the arrival time
``playback-stop``    ``bytes``, ``packets``, ``sha256`` (of all PCM so far).  NB: spice-gtk
                     also emits it when the channel is reset (our disconnect), so a session
                     with one STOP message may show two
``playback-get-delay`` spice-gtk asked the audio sink for its delay (every 100 packets from
                     the first): ``delay`` = ``--audio-delay-ms`` answered, or null
``playback-volume`` / ``record-volume``  ``volume`` list of u16, ``nchannels`` (VOLUME message)
``playback-mute`` / ``record-mute``      ``mute`` bool (MUTE message)
``playback-min-latency`` ``min_latency`` ms (PLAYBACK LATENCY; spice-gtk resets it to 200 at START
                     without notifying)
``record-start``     ``format``, ``channels``, ``rate`` (RECORD START); ``--record-in`` sending begins
``record-stop``      RECORD STOP
``record-sent``      ``--record-in`` fully handed to spice-gtk: ``bytes``; ``stopped`` true if a
                     RECORD STOP cut it short
``ready``            all wait conditions met (see below)
``action``           one entry of ``--actions`` performed (``index``, ``op`` ...)
``actions-done``     every action performed and the inputs channel flushed
``screenshot``       ``--screenshot`` (or a ``screenshot PATH`` command) written (PPM) with
                     ``path``/``width``/``height``, or ``error`` when there is no picture yet
``done``             ``reason``, ``exit_code``, ``open_channels``, ``invalidates``; with
                     ``--enable-audio`` also ``playback`` {bytes, packets, sha256}, ``record_sent``

Exit codes / done reasons
-------------------------
0  ``ok``            everything done, disconnected by us
10 ``error-auth``    ERROR_AUTH on any channel.  NB: spice-gtk maps *every* non-OK
                     link result after the ticket (PERMISSION_DENIED, BAD_CONNECTION_ID,
                     ...) to ERROR_AUTH "Authentication failed: wrong password?"; a failed
                     SASL login (``--username``/``--password`` over TLS) is ERROR_AUTH
                     "Authentication failed", code 5 (AUTH_NEEDS_PASSWORD_AND_USERNAME)
11 ``error-link``    ERROR_LINK (bad reply, link error code in SpiceLinkReply except
                     NEED_SECURED, which spice-gtk handles by retrying over TLS)
12 ``error-connect`` ERROR_CONNECT (TCP connect failed, or no port to use)
13 ``error-tls``     ERROR_TLS (handshake/verification failure, no CA loaded)
14 ``error-io``      ERROR_IO (socket error after the link)
15 ``closed``        the server closed a channel before we disconnected
16 ``timeout``       ``--timeout`` elapsed before the run completed
17 ``action-failed`` an action could not be performed (bad op, no channel)
18 ``signal``        SIGINT/SIGTERM
Channel errors on channels other than main are fatal too unless
``--tolerate-channel-errors`` is given (then they are only reported; ERROR_AUTH stays fatal
unless ``--tolerate-channel-auth-errors`` is given too: a server refusing one channel's link,
e.g. a viewer's record channel, while spice-gtk keeps the session).

Run sequence
------------
1. ``spice_session_connect`` (main channel).  Every other channel spice-gtk creates
   from CHANNELS_LIST is connected by this script (``spice_channel_connect``) unless
   its type name is in ``--skip-channels``.  spice-gtk itself never connects
   non-main channels: the application must (spicy-screenshot only connects display).
2. *ready* when: main is OPENED, at least ``--expect-channels`` channels (main
   included) are OPENED, the inputs channel is OPENED if there are actions,
   ``--wait-display`` (display 0 has a primary surface and got an invalidate),
   ``--wait-mouse-mode`` (main channel reached that mode).
3. Actions run in order; then the inputs channel is flushed (``flush_async``),
   ``actions-done`` is printed, we linger ``--linger-ms`` and call
   ``spice_session_disconnect``; ``done`` follows once spice-gtk reports the session
   disconnected (or after 2 s).
4. With ``--control`` the client reads commands on stdin, one a line, and does not
   linger on a timer: it stays connected until ``finish`` (or stdin closes), so a test
   ends the session when what it waits for has happened, not after a guessed delay:
   ``screenshot PATH`` writes display 0's primary surface now (a ``screenshot`` event
   follows; ``screenshot_display N PATH`` writes display channel N's); ``finish`` writes ``--screenshot`` if given and disconnects (reason ``ok``);
   ``action JSON`` performs one ``--actions`` entry now (an ``action`` event with
   ``index`` -1 follows, with ``error`` if it failed; ``wait*`` ops are refused).

Agent and ports (spice-gtk 0.42 src/channel-main.c, channel-port.c)
--------------------------------------------------------------------
Actions (in ``--actions`` or ``action JSON``; data is ``text`` (UTF-8) or ``b64``; ``selection`` 0 is
the CLIPBOARD, 1 PRIMARY; clipboard type 1 is UTF8_TEXT):
``{"op":"clipboard_grab","selection":0,"types":[1],"text":...}`` grabs (with data: later guest requests
are answered by the client itself); ``clipboard_notify`` {selection, type, text|b64} answers a
``clipboard-request``; ``clipboard_request`` {selection, type} asks the guest for its clipboard
(``clipboard-data`` follows); ``clipboard_release`` {selection};
``update_display`` {id, x, y, width, height, enabled?, send?} sets one monitor and (unless ``send`` is
false) ``send_monitor_config`` (spice-gtk holds it back until the agent announced itself);
``send_monitor_config``; ``file_copy`` {path | paths} (``file-copy-done`` follows);
``port_write`` {name, text|b64} and ``port_event`` {name, port_event} on the port channel of that name.
Control lines ``file_copy PATH`` and ``port_write NAME TEXT`` are shorthands.
``--shared-dir DIR`` (``--shared-dir-ro``) sets the folder spice-gtk serves over the WebDAV channel.
``port_write`` calls ``spice_port_channel_write_async`` through ctypes with a buffer that stays alive
until GIO is done: PyGObject's ``write_async`` frees its copy before GIO writes it.

USB redirection (``--usbredir``, ``--usb-cd ISO``; spice-gtk 0.42 src/usb-device-manager.c) -- BEGIN usb
---------------------------------------------------------------------------------------------------------
``--usbredir`` sets the session's ``enable-usbredir`` (spice-gtk then creates the usbredir channels of
CHANNELS_LIST); ``--usb-cd ISO`` implies it and makes spice-gtk's emulated shared CD of that image
(``UsbDeviceManager.create_shared_cd_device``: "SPICE CD" 2b23:cdcd, no USB needed), not connected yet.
Events: ``usb-cd`` {path, ok, error?} (the CD was made); ``usb-device-added`` / ``usb-device-removed``
{description, shared_cd}; ``usb-device-error`` {description, message} (spice-gtk's ``device-error``);
``usb-connected`` / ``usb-disconnected`` {description, ok, error?} when ``connect_device_async`` /
``disconnect_device_async`` finished.
Ops: ``usb_cd_connect`` redirects the shared CD to the server (to a free usbredir channel);
``usb_disconnect`` un-redirects it (or, with ``all``: true, every connected device).  Control-line
shorthands: ``usb_cd_connect``, ``usb_disconnect``.
-- END usb

Migration (spice-gtk 0.42 src/channel-main.c ``main_migrate_connect``, spice-session.c)
--------------------------------------------------------------------------------------
Events: ``migration-started`` (main ``migration-started``: spice-gtk opened its migration session to
the destination); ``migration-state`` {state, name} (session ``migration-state``: 0 none, 1 switching,
2 migrating, 3 connecting). Control line ``sockets``: a ``sockets`` event {channels: [{channel, type,
id, remote_port}]} with the peer port of every channel's socket now (after a seamless migration
spice-gtk swaps the sockets of the same channel objects: no channel event is emitted).

Smartcard (``--smartcard-db``; spice-gtk 0.42 src/smartcard-manager.c, channel-smartcard.c)
----------------------------------------------------------------------------------------------
``--smartcard-db PATH`` sets the session's ``enable-smartcard``, ``smartcard-db`` (a plain path) and
``smartcard-certificates`` (``--smartcard-certificates``, three nicknames): libcacard's software card
"Spice Software Smartcard" is created when the smartcard channel comes up, card inserted. Ops
``{"op":"card_insert"}`` / ``{"op":"card_remove"}`` call ``SmartcardManager.insert_card`` /
``remove_card`` (the software card); their ``action`` event has ``ok`` (false: the card was in / out
already).

Audio (``--enable-audio``; spice-gtk 0.42 src/channel-playback.c, channel-record.c)
-----------------------------------------------------------------------------------
* With the session's ``enable-audio`` set spice-gtk creates the playback and record channels
  from CHANNELS_LIST (this script connects them like any other channel).  No ``SpiceAudio``
  backend is created (``spice_audio_get`` is never called, and no agent announces
  AUDIO_VOLUME_SYNC here), so nothing plays: the channels' signals are consumed directly, which
  is deterministic and needs no GStreamer sink.  Verified against Xspice (libspice-server):
  raw playback arrives bit-exact, Opus (``XSPICE_PLAYBACK_COMPRESSION=1``) as 1920-byte PCM per
  packet with the tone's frequency and RMS.
* ``--playback-out FILE`` appends every ``playback-data`` PCM buffer (S16LE stereo) to FILE.
* ``--audio-delay-ms D`` answers ``playback-get-delay`` with ``PlaybackChannel.set_delay(D)``:
  a model audio sink with a fixed delay of D ms.  spice-gtk's GStreamer backend answers the
  same signal with its pipeline's min latency (``spice-gstaudio.c``), and ``set_delay`` sets the
  session mm-time to ``last packet time - D``, the clock the display channel schedules video
  frames by (A/V sync).  Without the option the signal is not answered (as with no backend).
* ``--record-in FILE``: on ``record-start``, FILE (raw S16LE stereo 48 kHz; a multiple of 1920
  bytes, spice-gtk keeps a partial frame until it is completed) goes to
  ``RecordChannel.send_data`` (time 0, as the gst backend) in 1920-byte (10 ms) chunks paced by
  the clock from a 10 ms GLib timeout; then ``record-sent``.  spice-gtk frames it into
  480-sample MODE/START_MARK/DATA messages and picks raw or Opus itself: Opus when the server has
  RECORD_CAP_OPUS, unless ``SPICE_DISABLE_OPUS=1`` is in its environment (which also drops the
  client's PLAYBACK_CAP_OPUS, so the server must send raw playback).
* ``--watch-pixel X,Y``: ``pixel`` events time a picture change by the same clock (``t``) as
  ``playback-data``, so a click in the audio (``peak``) and a flash on screen can be compared.

spice-gtk facts this harness relies on (spice-gtk 0.42, src/channel-inputs.c)
-----------------------------------------------------------------------------
* GI methods on ``SpiceClientGLib.InputsChannel`` (the non-deprecated 0.35+ API):
  ``key_press(scancode)``, ``key_release(scancode)``, ``key_press_and_release(scancode)``,
  ``motion(dx, dy, button_state)``, ``position(x, y, display, button_state)``,
  ``button_press(button, button_state)``, ``button_release(button, button_state)``,
  ``set_key_locks(locks)``; main: ``MainChannel.request_mouse_mode(mode)``.
  (Module functions ``inputs_key_press`` etc. are the deprecated aliases.)
  PyGObject quirk: ``Session.connect``/``Channel.connect`` are the *spice* connect
  methods, so signals are hooked with ``GObject.Object.connect(obj, ...)``.
* Scancodes are PC/XT set 1 "spice scancodes": ``spice_make_scancode`` masks with
  0x37f, ORs 0x80 for release, and for codes >= 0x100 sends
  ``bswap16(0xe000 | (code - 0x100))``.  So 0x100|c means "E0 prefix": the KEY_DOWN
  ``code`` u32 is bytes ``E0 c 00 00`` (e.g. 0x148 Up -> 0x000048e0 down,
  0x0000c8e0 up) and 0x200|c gives an E1 prefix.  Plain codes (< 0x100) go out as
  ``c`` / ``c|0x80`` (e.g. 30 'A' -> KEY_DOWN 0x1e, KEY_UP 0x9e).
  ``key_press_and_release`` sends one KEY_SCANCODE (104) message with the make+break
  bytes if the server advertised INPUTS_CAP_KEY_SCANCODE, else KEY_DOWN + KEY_UP.
* The library does NOT filter mouse calls by mouse mode (only the Gtk widget picks
  motion vs position).  Both ``motion`` and ``position`` are always sent; it is the
  *server* that honours MOTION only in server mode and POSITION only in client
  mode.  Library-side drops: ``motion`` with dx == dy == 0 sends nothing;
  when 8 (2 x SPICE_INPUT_MOTION_ACK_BUNCH) motion/position messages are unacked,
  further motion deltas are accumulated (sent after the next MOUSE_MOTION_ACK) and
  further ``position`` calls are silently dropped.  ``button_press``/``release``
  first flush pending motion/position, then send MOUSE_PRESS/RELEASE with
  ``buttons_state`` = given state with the button's own mask bit set (press) or
  cleared (release) for left/middle/right (mask 1/2/4).
* All inputs calls are no-ops unless the channel state is READY, and with the
  session ``read-only`` property set.  When the inputs channel comes up, spice-gtk
  sends KEY_MODIFIERS(locks, 0 by default) unprompted.
* Main channel: spice-gtk asks for CLIENT mouse mode (MOUSE_MODE_REQUEST 2) whenever
  the server says it is supported but not current (after INIT and after each
  MOUSE_MODE message).
"""

import argparse
import array
import base64
import ctypes
import hashlib
import importlib
import json
import os
import signal
import sys
import time

import gi

gi.require_version("SpiceClientGLib", "2.0")
# import_module rather than "from gi.repository import ..." so the version pin above
# comes first without tripping import-order lints
GLib = importlib.import_module("gi.repository.GLib")
GObject = importlib.import_module("gi.repository.GObject")
Gio = importlib.import_module("gi.repository.Gio")
Spice = importlib.import_module("gi.repository.SpiceClientGLib")

EXIT_CODES = {
    "ok": 0,
    "error-auth": 10,
    "error-link": 11,
    "error-connect": 12,
    "error-tls": 13,
    "error-io": 14,
    "closed": 15,
    "timeout": 16,
    "action-failed": 17,
    "signal": 18,
}

EVENT_NAMES = {
    int(v): v.value_name.replace("SPICE_CHANNEL_", "", 1) for v in Spice.ChannelEvent.__enum_values__.values()
}

CHANNEL_MAIN = 1
CHANNEL_DISPLAY = 2
CHANNEL_INPUTS = 3
CHANNEL_CURSOR = 4
CHANNEL_PLAYBACK = 5
CHANNEL_RECORD = 6
CHANNEL_PORT = 10
CHANNEL_WEBDAV = 11

#: record chunk: 10 ms of S16LE stereo 48 kHz (480 frames x 4 bytes)
RECORD_CHUNK = 1920
RECORD_CHUNK_MS = 10

MOUSE_MODES = {"server": 1, "client": 2}

VERIFY_FLAGS = {
    "pubkey": Spice.SessionVerify.PUBKEY,
    "hostname": Spice.SessionVerify.HOSTNAME,
    "subject": Spice.SessionVerify.SUBJECT,
}


# PyGObject cannot marshal the display "monitors" property (a GArray of
# SpiceDisplayMonitorConfig structs: "Stack overflow protection" criticals), so read
# it with g_object_get through ctypes.
_libs = {}


def _lib(name):
    if name not in _libs:
        _libs[name] = ctypes.CDLL(name)
    return _libs[name]


class _GArray(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("len", ctypes.c_uint)]


class _MonitorConfig(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint) for n in ("id", "surface_id", "x", "y", "width", "height")]


def gobject_pointer(obj):
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return get(obj.__gpointer__, None)


def read_monitors(channel):
    gobj = _lib("libgobject-2.0.so.0")
    glib = _lib("libglib-2.0.so.0")
    out = ctypes.c_void_p()
    gobj.g_object_get(ctypes.c_void_p(gobject_pointer(channel)), b"monitors", ctypes.byref(out), ctypes.c_void_p(None))
    if not out.value:
        return []
    arr = _GArray.from_address(out.value)
    mons = []
    for i in range(arr.len):
        m = _MonitorConfig.from_address(arr.data + i * ctypes.sizeof(_MonitorConfig))
        mons.append({n: getattr(m, n) for n, _ in _MonitorConfig._fields_})
    glib.g_array_unref(out)
    return mons


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="plain TCP port")
    p.add_argument("--tls-port", type=int, help="TLS port")
    p.add_argument("--unix-path", help="connect to a Unix socket instead of TCP")
    p.add_argument("--ca-file", help="CA certificate (PEM) to verify the server cert")
    p.add_argument(
        "--verify",
        default="hostname",
        help="comma list of pubkey,hostname,subject (session 'verify' flags), or 'none' "
        "(no certificate check at all); default hostname (SAN DNS/IP must match --host)",
    )
    p.add_argument("--cert-subject", help="expected subject, e.g. 'CN=localhost' (adds subject)")
    p.add_argument("--password")
    p.add_argument("--username", help="session username (SASL: cyrus sends it as authcid and authzid)")
    p.add_argument(
        "--secure-channels",
        default="",
        help="comma list of channel names that must use TLS (spice-gtk names: "
        "main,display,inputs,cursor,playback,record,smartcard,usbredir,port,webdav; 'all')",
    )
    p.add_argument("--tls-only", action="store_true", help="same as --secure-channels all")
    p.add_argument("--skip-channels", default="", help="comma list of channel names not to connect")
    p.add_argument(
        "--extra-channels",
        default="",
        help="comma list of NAME:ID channels to create and link although the server did not "
        "list them (e.g. display:1), once CHANNELS_LIST arrived; tests CHANNEL_NOT_AVAILABLE",
    )
    p.add_argument("--enable-audio", action="store_true", help="let spice-gtk create playback/record")
    p.add_argument("--playback-out", help="append every decoded playback-data PCM (raw S16LE) to this file")
    p.add_argument(
        "--record-in",
        help="on record-start, send this raw S16LE stereo 48 kHz file with RecordChannel.send_data, "
        "paced in real time (10 ms chunks)",
    )
    p.add_argument(
        "--audio-delay-ms",
        type=int,
        help="answer playback-get-delay with PlaybackChannel.set_delay(D) (a sink of fixed delay D ms)",
    )
    p.add_argument("--watch-pixel", help="X,Y: emit 'pixel' each time display 0's pixel at X,Y changes")
    p.add_argument("--read-only", action="store_true", help="session read-only (no inputs sent)")
    p.add_argument("--timeout", type=float, default=10.0, help="overall deadline in seconds")
    p.add_argument("--expect-channels", type=int, default=1, help="wait until N channels are OPENED")
    p.add_argument("--wait-display", action="store_true", help="wait for display 0 primary + a draw")
    p.add_argument("--wait-mouse-mode", choices=sorted(MOUSE_MODES), help="wait for this mouse mode")
    p.add_argument("--actions", default="[]", help="JSON list of actions (see module doc)")
    p.add_argument("--linger-ms", type=int, default=300, help="stay connected this long after actions")
    p.add_argument("--tolerate-channel-errors", action="store_true")
    p.add_argument("--tolerate-channel-auth-errors", action="store_true", help="with --tolerate-channel-errors: ERROR_AUTH on a non-main channel too")
    p.add_argument("--max-invalidates", type=int, default=50)
    p.add_argument("--screenshot", help="write display 0 primary surface as PPM before disconnecting")
    p.add_argument(
        "--control",
        action="store_true",
        help="read commands on stdin ('screenshot PATH', 'action JSON', 'finish'); stay connected until 'finish' "
        "instead of lingering --linger-ms",
    )
    p.add_argument(
        "--audio-backend",
        action="store_true",
        help="create spice-gtk's audio backend (SpiceClientGLib.Audio.get) as an application would",
    )
    p.add_argument("--shared-dir", help="session shared-dir: the folder spice-gtk serves over the WebDAV channel")
    p.add_argument("--shared-dir-ro", action="store_true", help="session share-dir-ro (with --shared-dir)")
    # --- BEGIN usb (USB redirection: class Usb below) ---
    p.add_argument("--cache-size", type=int, default=0, help="session cache-size in bytes (the session-wide pixmap cache; 0: spice-gtk's 80 MiB)")
    p.add_argument("--usbredir", action="store_true", help="session enable-usbredir (connect usbredir channels)")
    p.add_argument("--usb-cd", metavar="ISO", help="make spice-gtk's emulated shared CD of ISO (implies --usbredir)")
    # --- END usb ---
    p.add_argument("--debug", action="store_true", help="spice-gtk debug log on stderr")
    # --- smartcard (libcacard software card) -------------------------------------------------
    p.add_argument("--smartcard-db", help="session enable-smartcard with this NSS db (a plain path; see Smartcard)")
    p.add_argument(
        "--smartcard-certificates",
        default="id-cert,signing-cert,encryption-cert",
        help="the three certificate nicknames of --smartcard-db",
    )
    # --- end smartcard options -------------------------------------------------------------------
    args = p.parse_args(argv)
    try:
        args.action_list = json.loads(args.actions)
    except ValueError as exc:
        p.error(f"--actions is not JSON: {exc}")
    if not isinstance(args.action_list, list) or not all(isinstance(a, dict) for a in args.action_list):
        p.error("--actions must be a JSON list of objects")
    if args.port is None and args.tls_port is None and args.unix_path is None:
        p.error("need --port, --tls-port or --unix-path")
    args.watch_xy = None
    if args.watch_pixel:
        try:
            x, y = (int(v) for v in args.watch_pixel.split(","))
        except ValueError:
            p.error("--watch-pixel wants X,Y")
        args.watch_xy = (x, y)
    if (args.playback_out or args.record_in or args.audio_delay_ms is not None) and not args.enable_audio:
        p.error("--playback-out/--record-in/--audio-delay-ms need --enable-audio")
    return args


def csv(value):
    return [x.strip() for x in value.split(",") if x.strip()]


def set_bits(test, limit=32):
    return [i for i in range(limit) if test(i)]


class Audio:
    """Playback/record consumers of ``--enable-audio`` (no SpiceAudio backend: the signals directly)."""

    def __init__(self, client, args):
        self.client = client
        self.args = args
        self.playback_bytes = 0
        self.playback_packets = 0
        self.playback_hash = hashlib.sha256()
        self.playback_out = open(args.playback_out, "wb") if args.playback_out else None  # noqa: SIM115
        self.record_data = b""
        if args.record_in:
            with open(args.record_in, "rb") as fh:
                self.record_data = fh.read()
        # spice-gtk copies what send_data gets synchronously; the buffer stays alive anyway
        self.record_buf = ctypes.create_string_buffer(self.record_data, max(len(self.record_data), 1))
        self.record_sent = 0
        self.record_timer = 0
        self.record_t0 = 0.0
        self.record_channel = None

    def emit(self, event, **fields):
        self.client.emit(event, **fields)

    @staticmethod
    def read_volume(channel):
        """The channel's ``volume`` property (a guint16 array of ``nchannels``; GI hands the pointer as int)."""
        ptr, n = channel.props.volume, channel.props.nchannels
        if not ptr or n <= 0:
            return []
        vol = array.array("H", ctypes.string_at(ptr, 2 * n))
        return list(vol)

    def hook_common(self, channel, prefix):
        def volume(ch, _pspec):
            self.emit(prefix + "-volume", volume=self.read_volume(ch), nchannels=ch.props.nchannels)

        def mute(ch, _pspec):
            self.emit(prefix + "-mute", mute=bool(ch.props.mute))

        GObject.Object.connect(channel, "notify::volume", volume)
        GObject.Object.connect(channel, "notify::mute", mute)

    # --------------------------------------------------------------- playback
    def hook_playback(self, channel):
        self.hook_common(channel, "playback")

        def start(_ch, fmt, channels, rate):
            self.emit("playback-start", format=fmt, channels=channels, rate=rate)

        def data(_ch, ptr, size):
            pcm = ctypes.string_at(ptr, size) if ptr and size > 0 else b""
            self.playback_bytes += len(pcm)
            self.playback_packets += 1
            self.playback_hash.update(pcm)
            if self.playback_out is not None:
                self.playback_out.write(pcm)
            samples = array.array("h", pcm[: len(pcm) // 2 * 2])
            if sys.byteorder != "little":
                samples.byteswap()
            peak = max(max(samples, default=0), -min(samples, default=0))
            self.emit("playback-data", n=len(pcm), total=self.playback_bytes, packets=self.playback_packets, peak=peak)

        def stop(_ch):
            if self.playback_out is not None:
                self.playback_out.flush()
            self.emit("playback-stop", **self.playback_summary())

        def get_delay(ch):
            delay = self.args.audio_delay_ms
            if delay is not None:
                ch.set_delay(delay)  # spice_playback_channel_set_delay: session mm-time = last_time - delay
            self.emit("playback-get-delay", delay=delay)

        def min_latency(ch, _pspec):
            self.emit("playback-min-latency", min_latency=ch.props.min_latency)

        GObject.Object.connect(channel, "playback-start", start)
        GObject.Object.connect(channel, "playback-data", data)
        GObject.Object.connect(channel, "playback-stop", stop)
        GObject.Object.connect(channel, "playback-get-delay", get_delay)
        GObject.Object.connect(channel, "notify::min-latency", min_latency)

    def playback_summary(self):
        return {
            "bytes": self.playback_bytes,
            "packets": self.playback_packets,
            "sha256": self.playback_hash.hexdigest(),
        }

    # ----------------------------------------------------------------- record
    def hook_record(self, channel):
        self.hook_common(channel, "record")
        self.record_channel = channel

        def start(ch, fmt, channels, rate):
            self.emit("record-start", format=fmt, channels=channels, rate=rate)
            if self.record_data:
                self.start_sending()

        def stop(_ch):
            self.emit("record-stop")
            if self.record_timer:
                GLib.source_remove(self.record_timer)
                self.record_timer = 0
                self.emit("record-sent", bytes=self.record_sent, stopped=True)

        GObject.Object.connect(channel, "record-start", start)
        GObject.Object.connect(channel, "record-stop", stop)

    def start_sending(self):
        """Send ``--record-in`` from the start in 10 ms chunks, paced by the clock (not by timer ticks:
        a late tick sends every chunk that is due)."""
        if self.record_timer:
            GLib.source_remove(self.record_timer)
        self.record_sent = 0
        self.record_t0 = time.monotonic()
        self.send_due()
        if self.record_sent < len(self.record_data):
            self.record_timer = GLib.timeout_add(RECORD_CHUNK_MS, self.send_due)

    def send_due(self):
        total = len(self.record_data)
        chunks = int((time.monotonic() - self.record_t0) * 1000 / RECORD_CHUNK_MS) + 1
        due = min(total, chunks * RECORD_CHUNK)
        base = ctypes.addressof(self.record_buf)
        while self.record_sent < due and not self.client.finished:
            n = min(RECORD_CHUNK, due - self.record_sent)
            # spice_record_channel_send_data(data, bytes, time): time 0 as spice-gtk's gst backend
            self.record_channel.send_data(base + self.record_sent, n, 0)
            self.record_sent += n
        if self.record_sent >= total:
            self.record_timer = 0
            self.emit("record-sent", bytes=self.record_sent, stopped=False)
            return False
        return not self.client.finished

    def summary(self):
        if not self.args.enable_audio:
            return {}
        if self.playback_out is not None:
            self.playback_out.close()
            self.playback_out = None
        return {"playback": self.playback_summary(), "record_sent": self.record_sent}


class Agent:
    """The guest agent as the client sees it (main channel AGENT_* and the clipboard, monitors config and
    file copy calls), and the port channels (``port-*`` events, ``port_write``)."""

    def __init__(self, client):
        self.client = client
        self.offers = {}  # selection -> (type, bytes): answer the guest's requests for it ourselves
        self.ports = {}  # port name -> SpicePortChannel
        self.pending = []  # (buffer, callback) of port writes in flight: kept alive until GIO is done

    def emit(self, event, **fields):
        self.client.emit(event, **fields)

    @staticmethod
    def payload(data):
        """Bytes as ``text`` (when UTF-8) and ``b64``."""
        out = {"size": len(data), "b64": base64.b64encode(data).decode()}
        try:
            out["text"] = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        return out

    @staticmethod
    def data_of(act):
        """An action's ``text`` (UTF-8) or ``b64`` field as bytes."""
        if "b64" in act:
            return base64.b64decode(act["b64"])
        return str(act.get("text", "")).encode("utf-8")

    # ------------------------------------------------------------------ main
    def hook_main(self, channel):
        GObject.Object.connect(channel, "main-clipboard-selection-grab", self.on_grab)
        GObject.Object.connect(channel, "main-clipboard-selection", self.on_data)
        GObject.Object.connect(channel, "main-clipboard-selection-request", self.on_request)
        GObject.Object.connect(channel, "main-clipboard-selection-release", self.on_release)
        GObject.Object.connect(channel, "new-file-transfer", self.on_new_transfer)

    def on_grab(self, _ch, selection, types, ntypes):
        # GI marshals the guint32 array with its length; an int is the raw pointer
        if isinstance(types, int):
            types = list(array.array("I", ctypes.string_at(types, 4 * ntypes))) if types else []
        self.emit("clipboard-grab", selection=selection, types=[int(t) for t in types])
        return True

    def on_data(self, _ch, selection, ctype, data, size):
        if isinstance(data, int):
            data = ctypes.string_at(data, size) if data and size > 0 else b""
        self.emit("clipboard-data", selection=selection, type=ctype, **self.payload(bytes(data)))

    def on_request(self, ch, selection, ctype):
        offer = self.offers.get(selection)
        answered = offer is not None and offer[0] == ctype
        self.emit("clipboard-request", selection=selection, type=ctype, answered=answered)
        if answered:
            ch.clipboard_selection_notify(selection, ctype, offer[1])
        return True

    def on_release(self, _ch, selection):
        self.emit("clipboard-release", selection=selection)

    def on_new_transfer(self, _ch, task):
        path = task.props.file.get_path() if task.props.file is not None else None
        self.emit("file-transfer", id=task.props.id, path=path, total_bytes=task.props.total_bytes)

        def finished(t, error):
            self.emit(
                "file-transfer-finished",
                id=t.props.id,
                path=path,
                transferred_bytes=t.props.transferred_bytes,
                error=error.message if error is not None else None,
            )

        GObject.Object.connect(task, "finished", finished)

    def perform(self, main, index, op, act):
        """The agent ops of ``perform``; returns False when ``op`` is not one of them."""
        sel = int(act.get("selection", 0))
        if op == "clipboard_grab":
            types = [int(t) for t in act.get("types", [1])]  # 1 = VD_AGENT_CLIPBOARD_UTF8_TEXT
            if "text" in act or "b64" in act:
                self.offers[sel] = (types[0], self.data_of(act))
            main.clipboard_selection_grab(sel, types)
            self.emit("action", index=index, op=op, selection=sel, types=types, offer=sel in self.offers)
        elif op == "clipboard_notify":
            ctype, data = int(act.get("type", 1)), self.data_of(act)
            main.clipboard_selection_notify(sel, ctype, data)
            self.emit("action", index=index, op=op, selection=sel, type=ctype, size=len(data))
        elif op == "clipboard_request":
            ctype = int(act.get("type", 1))
            main.clipboard_selection_request(sel, ctype)
            self.emit("action", index=index, op=op, selection=sel, type=ctype)
        elif op == "clipboard_release":
            self.offers.pop(sel, None)
            main.clipboard_selection_release(sel)
            self.emit("action", index=index, op=op, selection=sel)
        elif op == "update_display":
            did = int(act.get("id", 0))
            if "enabled" in act:
                main.update_display_enabled(did, bool(act["enabled"]), False)
            if act.get("enabled", True):
                x, y = int(act.get("x", 0)), int(act.get("y", 0))
                w, h = int(act["width"]), int(act["height"])
                main.update_display(did, x, y, w, h, False)
            sent = main.send_monitor_config() if act.get("send", True) else None
            fields = {k: act[k] for k in ("x", "y", "width", "height", "enabled") if k in act}
            self.emit("action", index=index, op=op, id=did, sent=sent, **fields)
        elif op == "send_monitor_config":
            self.emit("action", index=index, op=op, sent=bool(main.send_monitor_config()))
        elif op == "file_copy":
            paths = [str(p) for p in (act["paths"] if "paths" in act else [act["path"]])]
            self.file_copy(main, paths)
            self.emit("action", index=index, op=op, paths=paths)
        else:
            return False
        return True

    def file_copy(self, main, paths):
        files = [Gio.File.new_for_path(p) for p in paths]

        def done(ch, result, _data):
            try:
                ok, error = bool(ch.file_copy_finish(result)), None
            except GLib.Error as exc:
                ok, error = False, exc.message
            self.emit("file-copy-done", paths=paths, ok=ok, error=error)

        main.file_copy_async(files, Gio.FileCopyFlags.NONE, None, None, None, done, None)

    # ----------------------------------------------------------------- ports
    def hook_port(self, channel):
        cid = channel.props.channel_id

        def name():
            return channel.props.port_name

        def opened(ch, _pspec):
            self.ports[ch.props.port_name] = ch
            self.emit("port-opened", id=cid, name=ch.props.port_name, opened=bool(ch.props.port_opened))

        def data(_ch, ptr, size):
            raw = ctypes.string_at(ptr, size) if ptr and size > 0 else b""
            self.emit("port-data", id=cid, name=name(), **self.payload(raw))

        def event(_ch, ev):
            self.emit("port-event", id=cid, name=name(), port_event=int(ev))

        def port_name(ch, _pspec):
            self.ports[ch.props.port_name] = ch

        GObject.Object.connect(channel, "notify::port-name", port_name)
        GObject.Object.connect(channel, "notify::port-opened", opened)
        GObject.Object.connect(channel, "port-data", data)
        GObject.Object.connect(channel, "port-event", event)

    def port(self, portname):
        ch = self.ports.get(portname)
        if ch is None:
            raise RuntimeError(f"no port channel named {portname!r} (known: {sorted(self.ports)})")
        return ch

    def port_write(self, index, portname, data):
        """``spice_port_channel_write_async`` through ctypes with a buffer kept alive until GIO finished:
        PyGObject's own ``write_async`` frees its temporary copy before GIO writes it."""
        ch = self.port(portname)
        lib = _lib("libspice-client-glib-2.0.so.8")
        lib.spice_port_channel_write_async.restype = None
        lib.spice_port_channel_write_async.argtypes = [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.spice_port_channel_write_finish.restype = ctypes.c_ssize_t
        lib.spice_port_channel_write_finish.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        buf = ctypes.create_string_buffer(data, max(len(data), 1))
        entry = []

        def finished(source, result, _user):
            n = lib.spice_port_channel_write_finish(source, result, None)
            self.emit("port-written", index=index, name=portname, written=int(n))
            self.pending.remove(entry)  # after the callback returns nothing of ours is used any more

        cb = _ASYNC_READY(finished)
        entry.extend((buf, cb))
        self.pending.append(entry)
        lib.spice_port_channel_write_async(gobject_pointer(ch), buf, len(data), None, cb, None)

    def perform_port(self, index, op, act):
        if op == "port_write":
            data = self.data_of(act)
            self.port_write(index, act["name"], data)
            self.emit("action", index=index, op=op, name=act["name"], size=len(data))
        elif op == "port_event":
            ev = int(act["port_event"])
            self.port(act["name"]).event(ev)
            self.emit("action", index=index, op=op, name=act["name"], port_event=ev)
        else:
            return False
        return True


# --- BEGIN usb: USB redirection (spice-gtk src/usb-device-manager.c) ---------------------------------
class Usb:
    """``--usbredir`` / ``--usb-cd``: spice-gtk's UsbDeviceManager, its emulated CD, the ``usb_*`` ops."""

    OPS = frozenset({"usb_cd_connect", "usb_disconnect"})

    def __init__(self, client):
        self.client = client
        self.manager = None
        self.devices = []  # from device-added (see on_added)

    def emit(self, event, **fields):
        self.client.emit(event, **fields)

    def configure(self, session, args):
        if not (args.usbredir or args.usb_cd):
            return
        session.props.enable_usbredir = True
        self.manager = m = Spice.UsbDeviceManager.get(session)
        m.props.auto_connect = False  # the test says when (usb_cd_connect)
        GObject.Object.connect(m, "device-added", self.on_added)
        GObject.Object.connect(m, "device-removed", self.on_removed)
        GObject.Object.connect(
            m, "device-error", lambda _m, d, err: self.emit("usb-device-error", message=err.message, **self.info(d))
        )
        if args.usb_cd:
            try:
                ok = bool(m.create_shared_cd_device(args.usb_cd))
                self.emit("usb-cd", path=args.usb_cd, ok=ok)
            except GLib.Error as exc:
                self.emit("usb-cd", path=args.usb_cd, ok=False, error=exc.message)

    # NB: never call UsbDeviceManager.get_devices() from Python: PyGObject (3.42) drops one reference
    # of every SpiceUsbDevice in the (transfer full) GPtrArray it returns, so a few calls free the
    # devices under spice-gtk.  The devices are taken from the device-added signal instead.
    def on_added(self, _m, device):
        self.devices.append(device)
        self.emit("usb-device-added", **self.info(device))

    def on_removed(self, _m, device):
        info = self.info(device)
        self.devices = [d for d in self.devices if self.info(d) != info]
        self.emit("usb-device-removed", **info)

    def info(self, device):
        shared = bool(self.manager.is_device_shared_cd(device)) if self.manager is not None else False
        return {"description": device.get_description(None).strip(), "shared_cd": shared}

    def shared_cd(self):
        if self.manager is None:
            raise RuntimeError("no USB device manager (--usbredir / --usb-cd)")
        for dev in self.devices:
            if self.manager.is_device_shared_cd(dev):
                return dev
        raise RuntimeError("no shared CD device (--usb-cd)")

    def perform(self, index, op, act):
        if op not in self.OPS:
            return False
        m = self.manager
        if op == "usb_cd_connect":
            devices = [self.shared_cd()]
        else:
            devices = [d for d in self.devices if m.is_device_connected(d)]
            if not act.get("all"):
                devices = [self.shared_cd()]
        for dev in devices:
            info = self.info(dev)

            def finished(_m, result, _user, info=info, op=op):
                event = "usb-connected" if op == "usb_cd_connect" else "usb-disconnected"
                try:
                    if op == "usb_cd_connect":
                        ok = bool(m.connect_device_finish(result))
                    else:
                        ok = bool(m.disconnect_device_finish(result))
                    self.emit(event, ok=ok, **info)
                except GLib.Error as exc:
                    self.emit(event, ok=False, error=exc.message, **info)

            if op == "usb_cd_connect":
                m.connect_device_async(dev, None, finished, None)
            else:
                m.disconnect_device_async(dev, None, finished, None)
        self.emit("action", index=index, op=op, devices=[self.info(d)["description"] for d in devices])
        return True


# --- END usb -----------------------------------------------------------------------------------------


# --- smartcard (libcacard software card) ---------------------------------------------------------
class Smartcard:
    """``--smartcard-db``: spice-gtk's software smartcard and the ``card_insert`` / ``card_remove`` ops."""

    OPS = frozenset({"card_insert", "card_remove"})

    def __init__(self, client, args):
        self.client = client
        self.args = args
        self.manager = None

    def emit(self, event, **fields):
        self.client.emit(event, **fields)

    def configure(self, session):
        if not self.args.smartcard_db:
            return
        session.props.enable_smartcard = True
        session.props.smartcard_db = self.args.smartcard_db
        session.props.smartcard_certificates = csv(self.args.smartcard_certificates)
        # its reader-added / card-* signals never reached a Python handler here (spice-gtk 0.42,
        # PyGObject): the host side sees the card; the ops report what spice-gtk returned
        self.manager = Spice.SmartcardManager.get()

    def perform(self, index, op, act):
        if op not in self.OPS:
            return False
        if self.manager is None:
            raise RuntimeError("no --smartcard-db")
        # the manager's own calls act on the software card; a reader taken from get_readers() and
        # freed by PyGObject ended in a double free in libcacard at the next insert_card
        ok = self.manager.insert_card() if op == "card_insert" else self.manager.remove_card()
        self.emit("action", index=index, op=op, ok=bool(ok))
        return True


# --- end smartcard -------------------------------------------------------------------------------


AGENT_OPS = frozenset(
    {
        "clipboard_grab",
        "clipboard_notify",
        "clipboard_request",
        "clipboard_release",
        "update_display",
        "send_monitor_config",
        "file_copy",
    }
)
_ASYNC_READY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


class Client:
    def __init__(self, args):
        self.args = args
        self.t0 = time.monotonic()
        self.loop = GLib.MainLoop()
        self.session = Spice.Session()
        self.channels = {}  # (type, id) -> channel
        self.open = set()  # (type, id) currently OPENED
        self.main = None
        self.inputs = None
        self.finished = False
        self.done_payload = None
        self.exit_code = 1
        self.ready_fired = False
        self.actions_started = False
        self.primary = {}  # display id -> (format, width, height, stride, ptr)
        self.invalidates = 0
        self.drawn = set()
        self.skip = set(csv(args.skip_channels))
        self.deadline_id = 0
        self.final_id = 0
        self.extras_started = False
        self.control_buf = b""
        self.audio = Audio(self, args)
        self.agent = Agent(self)
        self.usb = Usb(self)  # usb
        self.smartcard = Smartcard(self, args)
        self.pixel = None  # last --watch-pixel value seen

    # ------------------------------------------------------------------ output
    def emit(self, event, **fields):
        obj = {"event": event, "t": round(time.monotonic() - self.t0, 4)}
        obj.update(fields)
        sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")
        sys.stdout.flush()

    @staticmethod
    def ident(channel):
        ctype = channel.props.channel_type
        return {
            "type": ctype,
            "id": channel.props.channel_id,
            "channel": Spice.Channel.type_to_string(ctype),
        }

    # ----------------------------------------------------------------- session
    def configure(self):
        a = self.args
        s = self.session
        s.props.host = a.host
        if a.cache_size:
            s.props.cache_size = a.cache_size  # bytes; the display channels' DISPLAY_INIT says /4 pixels
        if a.port is not None:
            s.props.port = str(a.port)
        if a.tls_port is not None:
            s.props.tls_port = str(a.tls_port)
        if a.unix_path:
            s.props.unix_path = a.unix_path
        if a.password is not None:
            s.props.password = a.password
        if a.username is not None:
            s.props.username = a.username
        if a.ca_file:
            s.props.ca_file = a.ca_file
        verify = 0
        for name in csv(a.verify):
            if name == "none":
                continue
            if name not in VERIFY_FLAGS:
                raise SystemExit(f"unknown --verify flag {name!r}")
            verify |= VERIFY_FLAGS[name]
        if a.cert_subject:
            s.props.cert_subject = a.cert_subject  # also sets the SUBJECT flag
            verify |= Spice.SessionVerify.SUBJECT
        s.props.verify = Spice.SessionVerify(verify)
        secure = ["all"] if a.tls_only else csv(a.secure_channels)
        if secure:
            s.props.secure_channels = secure
        s.props.enable_audio = bool(a.enable_audio)
        s.props.read_only = bool(a.read_only)
        if a.shared_dir:
            s.props.shared_dir = a.shared_dir  # served over the WebDAV channel by phodav
            s.props.share_dir_ro = bool(a.shared_dir_ro)
        self.smartcard.configure(s)
        if a.audio_backend:
            self.audio_backend = Spice.Audio.get(s, None)
            self.emit("audio-backend", type=type(self.audio_backend).__name__ if self.audio_backend else None)
        self.usb.configure(s, a)  # usb
        GObject.Object.connect(s, "channel-new", self.on_channel_new)
        GObject.Object.connect(s, "channel-destroy", self.on_channel_destroy)
        GObject.Object.connect(s, "disconnected", self.on_session_disconnected)
        GObject.Object.connect(s, "notify::name", self.on_session_name)

    def run(self):
        self.configure()
        self.emit(
            "start",
            version=Spice.util_get_version_string(),
            host=self.args.host,
            port=self.args.port,
            tls_port=self.args.tls_port,
            actions=len(self.args.action_list),
        )
        self.deadline_id = GLib.timeout_add(int(self.args.timeout * 1000), self.on_deadline)
        for signum in (signal.SIGINT, signal.SIGTERM):
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, self.on_signal)
        if self.args.control:
            GLib.unix_fd_add_full(GLib.PRIORITY_DEFAULT, 0, GLib.IOCondition.IN | GLib.IOCondition.HUP, self.on_control)
        if not self.session.connect():
            self.finish("error-connect", detail="spice_session_connect failed")
        self.loop.run()
        if self.done_payload is None:  # pragma: no cover - defensive
            self.done_payload = {"reason": "internal", "exit_code": 1}
        self.emit("done", **self.done_payload)
        return self.done_payload["exit_code"]

    # ---------------------------------------------------------------- channels
    def on_channel_new(self, session, channel):
        info = self.ident(channel)
        key = (info["type"], info["id"])
        self.channels[key] = channel
        self.emit("channel-new", **info)
        GObject.Object.connect(channel, "channel-event", self.on_channel_event)
        ctype = info["type"]
        if ctype == CHANNEL_MAIN:
            self.main = channel
            GObject.Object.connect(channel, "notify::mouse-mode", self.on_mouse_mode)
            GObject.Object.connect(channel, "main-agent-update", self.on_agent_update)
            self.agent.hook_main(channel)
            GObject.Object.connect(channel, "migration-started", lambda _ch, _s: self.emit("migration-started"))
            if not getattr(self, "_migration_hooked", False):  # main is kept across a switch-host
                self._migration_hooked = True
                GObject.Object.connect(session, "notify::migration-state", self.on_migration_state)
            # uuid is notified just before CHANNELS_LIST is processed
            GObject.Object.connect(session, "notify::uuid", self.on_session_uuid)
            return  # spice_session_connect() connects main itself
        if ctype == CHANNEL_INPUTS:
            self.inputs = channel
            GObject.Object.connect(channel, "inputs-modifiers", self.on_inputs_modifiers)
        elif ctype == CHANNEL_DISPLAY:
            self.hook_display(channel)
        elif ctype == CHANNEL_CURSOR:
            self.hook_cursor(channel)
        elif ctype == CHANNEL_PLAYBACK:
            self.audio.hook_playback(channel)
        elif ctype == CHANNEL_RECORD:
            self.audio.hook_record(channel)
        elif ctype == CHANNEL_PORT:
            self.agent.hook_port(channel)
        if info["channel"] in self.skip:
            self.emit("channel-skipped", **info)
            return
        channel.connect()  # spice_channel_connect

    def on_channel_destroy(self, session, channel):
        info = self.ident(channel)
        key = (info["type"], info["id"])
        self.emit("channel-destroy", **info)
        # drop our references so spice-gtk can finalize and emit "disconnected"
        self.channels.pop(key, None)
        self.open.discard(key)
        if channel is self.main:
            self.main = None
        if channel is self.inputs:
            self.inputs = None
        if key[0] == CHANNEL_DISPLAY:  # its primary's memory goes with it (a switch-host destroys it)
            self.primary.pop(key[1], None)

    def on_channel_event(self, channel, event):
        info = self.ident(channel)
        key = (info["type"], info["id"])
        name = EVENT_NAMES.get(int(event), str(int(event)))
        fields = dict(info)
        fields["name"] = name
        if name == "OPENED":
            self.open.add(key)
            fields["common_caps"] = set_bits(channel.test_common_capability)
            fields["caps"] = set_bits(channel.test_capability)
            fields.update(self.socket_info(channel))
        elif name.startswith("ERROR_"):
            err = channel.get_error()
            if err is not None:
                fields["error"] = {"domain": err.domain, "code": err.code, "message": err.message}
            self.open.discard(key)
        elif name == "CLOSED":
            self.open.discard(key)
        self.emit("channel-event", **fields)

        if self.finished:
            return
        if name.startswith("ERROR_"):
            reason = "error-" + name[len("ERROR_") :].lower()
            auth_fatal = name == "ERROR_AUTH" and not self.args.tolerate_channel_auth_errors
            if key[0] == CHANNEL_MAIN or auth_fatal or not self.args.tolerate_channel_errors:
                extra = {"channel": info["channel"], "channel_id": info["id"]}
                if "error" in fields:
                    extra["message"] = fields["error"]["message"]
                self.finish(reason, **extra)
            return
        if name == "CLOSED":
            if key[0] == CHANNEL_MAIN or not self.args.tolerate_channel_errors:
                self.finish("closed", channel=info["channel"], channel_id=info["id"])
            return
        if name == "OPENED":
            if key[0] == CHANNEL_INPUTS:
                self.emit("inputs-open", id=info["id"])
            self.check_ready()

    def socket_info(self, channel):
        out = {}
        try:
            sock = channel.props.socket
            if sock is None:
                return out
            remote = sock.get_remote_address()
            port = getattr(remote, "get_port", lambda: None)()
            if port is not None:
                out["remote_port"] = port
                out["tls"] = self.args.tls_port is not None and port == self.args.tls_port
            else:
                out["tls"] = False
        except Exception as exc:  # diagnostics only
            out["socket_error"] = str(exc)
        return out

    def on_migration_state(self, session, _pspec):
        state = int(session.props.migration_state)
        self.emit("migration-state", state=state, name={0: "none", 1: "switching", 2: "migrating", 3: "connecting"}.get(state, "?"))

    def emit_sockets(self):
        chans = [dict(self.ident(ch), **self.socket_info(ch)) for ch in list(self.channels.values())]
        self.emit("sockets", channels=chans)

    # -------------------------------------------------------------- main/misc
    def on_mouse_mode(self, channel, _pspec):
        mode = channel.props.mouse_mode
        self.emit("mouse-mode", mode=mode, name={1: "server", 2: "client"}.get(mode, "?"))
        self.check_ready()

    def on_agent_update(self, channel):
        caps0 = channel.props.agent_caps_0
        self.emit(
            "agent",
            connected=bool(channel.props.agent_connected),
            caps0=caps0,
            caps=set_bits(lambda i: caps0 >> i & 1),
        )

    def on_session_name(self, session, _pspec):
        self.emit("session-name", name=session.props.name)

    def on_session_uuid(self, session, _pspec):
        # spice-gtk notifies "uuid" when MAIN_UUID arrives and again right before it
        # handles CHANNELS_LIST: in both cases MAIN_INIT (session id) is already known.
        if self.args.extra_channels and not self.extras_started:
            self.extras_started = True
            GLib.idle_add(self.create_extra_channels)
        ptr = session.props.uuid
        if not ptr:
            return
        raw = ctypes.string_at(ptr, 16)
        if raw == bytes(16):
            return  # server sent no UUID (spice-gtk notifies anyway)
        h = raw.hex()
        self.emit("session-uuid", uuid=f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")

    def create_extra_channels(self):
        for item in csv(self.args.extra_channels):
            name, _, cid = item.partition(":")
            ctype = Spice.Channel.string_to_type(name)
            if ctype <= 0:
                self.emit("extra-channel", channel=name, error="unknown channel name")
                continue
            channel = Spice.Channel.new(self.session, ctype, int(cid or 0))
            if channel is None:
                self.emit("extra-channel", channel=name, id=int(cid or 0), error="spice-gtk refused to create it")
                continue
            # spice-gtk's own creator (_channel_new) leaves the construction reference to
            # the session, which unrefs it on destroy; PyGObject owns the one Channel.new
            # returned, so hand the session a reference of its own.
            _lib("libgobject-2.0.so.0").g_object_ref(ctypes.c_void_p(gobject_pointer(channel)))
            # the constructor emitted session "channel-new": on_channel_new connects it
            self.emit("extra-channel", **self.ident(channel))
        return False

    def on_inputs_modifiers(self, channel):
        self.emit("inputs-modifiers", modifiers=channel.props.key_modifiers)

    # ---------------------------------------------------------------- display
    def hook_display(self, channel):
        did = channel.props.channel_id

        def primary_create(_ch, fmt, width, height, stride, _shmid, imgdata):
            self.primary[did] = (fmt, width, height, stride, imgdata)
            self.emit("display-primary-create", id=did, format=fmt, width=width, height=height, stride=stride)
            if did == 0:
                self.check_pixel()
            self.check_ready()

        def primary_destroy(_ch):
            self.primary.pop(did, None)
            self.emit("display-primary-destroy", id=did)

        def invalidate(_ch, x, y, w, h):
            self.invalidates += 1
            if self.invalidates <= self.args.max_invalidates:
                self.emit("display-invalidate", id=did, x=x, y=y, w=w, h=h)
            if did == 0 and self.args.watch_xy is not None:
                px, py = self.args.watch_xy
                if x <= px < x + w and y <= py < y + h:
                    self.check_pixel()
            if did not in self.drawn:
                self.drawn.add(did)
                self.check_ready()

        def mark(_ch, value):
            self.emit("display-mark", id=did, mark=value)

        def monitors(ch, _pspec):
            try:
                mons = read_monitors(ch)
            except Exception as exc:  # diagnostics only
                self.emit("display-monitors", id=did, error=str(exc))
                return
            self.emit("display-monitors", id=did, monitors=mons)

        GObject.Object.connect(channel, "display-primary-create", primary_create)
        GObject.Object.connect(channel, "display-primary-destroy", primary_destroy)
        GObject.Object.connect(channel, "display-invalidate", invalidate)
        GObject.Object.connect(channel, "display-mark", mark)
        GObject.Object.connect(channel, "notify::monitors", monitors)

    def hook_cursor(self, channel):
        def cursor_set(_ch, width, height, hot_x, hot_y, rgba):
            extra = {}
            # the shape as spice-gtk decoded it: width*height*4 bytes, R,G,B,A per pixel
            if rgba and 0 < width * height <= 128 * 128:
                try:
                    extra["rgba"] = ctypes.string_at(int(rgba), width * height * 4).hex()
                except Exception as exc:  # diagnostics only
                    extra["rgba_error"] = str(exc)
            self.emit("cursor-set", width=width, height=height, hot_x=hot_x, hot_y=hot_y, **extra)

        def cursor_move(_ch, x, y):
            self.emit("cursor-move", x=x, y=y)

        GObject.Object.connect(channel, "cursor-set", cursor_set)
        GObject.Object.connect(channel, "cursor-move", cursor_move)
        GObject.Object.connect(channel, "cursor-hide", lambda _ch: self.emit("cursor-hide"))
        GObject.Object.connect(channel, "cursor-reset", lambda _ch: self.emit("cursor-reset"))

    def check_pixel(self):
        """``--watch-pixel``: read display 0's primary at (x, y) as the screenshot does; emit on change."""
        if self.args.watch_xy is None or 0 not in self.primary:
            return
        x, y = self.args.watch_xy
        _fmt, width, height, stride, ptr = self.primary[0]
        if not ptr or not (0 <= x < width and 0 <= y < height):
            return
        b, g, r = ctypes.string_at(ptr + y * stride + x * 4, 3)  # B, G, R, X in memory
        rgb = (r << 16) | (g << 8) | b
        if rgb != self.pixel:
            self.pixel = rgb
            self.emit("pixel", x=x, y=y, rgb=rgb)

    def write_screenshot(self, path, display=0):
        prim = self.primary.get(display)
        if prim is None:
            self.emit("screenshot", path=path, error=f"no primary surface on display {display}")
            return
        fmt, width, height, stride, ptr = prim
        if not ptr or width <= 0 or height <= 0:
            self.emit("screenshot", path=path, error="primary has no data")
            return
        raw = ctypes.string_at(ptr, stride * height)
        rows = []
        for y in range(height):
            row = raw[y * stride : y * stride + width * 4]
            # 32-bit formats are B, G, R, X/A in memory (little-endian xRGB)
            px = bytearray(width * 3)
            px[0::3] = row[2::4]
            px[1::3] = row[1::4]
            px[2::3] = row[0::4]
            rows.append(bytes(px))
        with open(path, "wb") as fh:
            fh.write(b"P6\n%d %d\n255\n" % (width, height))
            fh.write(b"".join(rows))
        self.emit("screenshot", path=path, width=width, height=height, format=fmt)

    # ------------------------------------------------------------- readiness
    def check_ready(self):
        if self.ready_fired or self.finished:
            return
        a = self.args
        if (CHANNEL_MAIN, 0) not in self.open:
            return
        if len(self.open) < a.expect_channels:
            return
        if a.action_list and not self.inputs_open():
            return
        if a.wait_display and not (0 in self.primary and 0 in self.drawn):
            return
        if a.wait_mouse_mode and (self.main is None or self.main.props.mouse_mode != MOUSE_MODES[a.wait_mouse_mode]):
            return
        self.ready_fired = True
        self.emit(
            "ready",
            open_channels=sorted([list(k) for k in self.open]),
        )
        GLib.idle_add(self.start_actions)

    def inputs_open(self):
        return any(k[0] == CHANNEL_INPUTS for k in self.open) and self.inputs is not None

    # ---------------------------------------------------------------- actions
    def start_actions(self):
        self.actions_started = True
        self.run_action(0)
        return False

    def run_action(self, index):
        if self.finished:
            return False
        actions = self.args.action_list
        if index >= len(actions):
            self.flush_then_done()
            return False
        act = actions[index]
        op = act.get("op")
        try:
            delay = self.perform(index, op, act)
        except Exception as exc:  # report any failure as data
            self.emit("action", index=index, op=op, error=str(exc))
            self.finish("action-failed", index=index, op=op, message=str(exc))
            return False
        if delay is None:
            return False  # the action reschedules itself (wait_mouse_mode)
        if delay > 0:
            GLib.timeout_add(delay, self.run_action, index + 1)
        else:
            GLib.idle_add(self.run_action, index + 1)
        return False

    def need_main(self):
        if self.main is None:
            raise RuntimeError("no main channel")
        return self.main

    def need_inputs(self):
        if self.inputs is None or not self.inputs_open():
            raise RuntimeError("inputs channel is not open")
        return self.inputs

    def perform(self, index, op, act):
        """Perform one action; return the delay (ms) before the next one, or None."""
        if op in ("key_press", "key_release", "key_press_and_release", "key"):
            code = int(act["scancode"])
            ch = self.need_inputs()
            if op == "key_press":
                ch.key_press(code)
            elif op == "key_release":
                ch.key_release(code)
            else:
                ch.key_press_and_release(code)
            self.emit("action", index=index, op=op, scancode=code)
            return 0
        if op == "motion":
            dx, dy, buttons = int(act.get("dx", 0)), int(act.get("dy", 0)), int(act.get("buttons", 0))
            self.need_inputs().motion(dx, dy, buttons)
            self.emit("action", index=index, op=op, dx=dx, dy=dy, buttons=buttons)
            return 0
        if op == "position":
            x, y = int(act["x"]), int(act["y"])
            display, buttons = int(act.get("display", 0)), int(act.get("buttons", 0))
            self.need_inputs().position(x, y, display, buttons)
            self.emit("action", index=index, op=op, x=x, y=y, display=display, buttons=buttons)
            return 0
        if op in ("button_press", "button_release"):
            button, buttons = int(act["button"]), int(act.get("buttons", 0))
            ch = self.need_inputs()
            if op == "button_press":
                ch.button_press(button, buttons)
            else:
                ch.button_release(button, buttons)
            self.emit("action", index=index, op=op, button=button, buttons=buttons)
            return 0
        if op == "key_locks":
            locks = int(act["locks"])
            self.need_inputs().set_key_locks(locks)
            self.emit("action", index=index, op=op, locks=locks)
            return 0
        if op == "mouse_mode":
            mode = act["mode"]
            mode = MOUSE_MODES.get(mode, mode) if isinstance(mode, str) else int(mode)
            if self.main is None:
                raise RuntimeError("no main channel")
            self.main.request_mouse_mode(int(mode))
            self.emit("action", index=index, op=op, mode=int(mode))
            return 0
        if op == "preferred_video_codecs":
            # DISPLAY PREFERRED_VIDEO_CODEC_TYPE (spice_display_channel_change_preferred_video_codec_types);
            # codecs: SPICE_VIDEO_CODEC_TYPE values, most preferred first (1 MJPEG, 2 VP8, 3 H264, 4 VP9)
            codecs = [int(c) for c in act["codecs"]]
            display = int(act.get("display", 0))
            ch = self.channels.get((CHANNEL_DISPLAY, display))
            if ch is None or (CHANNEL_DISPLAY, display) not in self.open:
                raise RuntimeError(f"display channel {display} is not open")
            ch.display_channel_change_preferred_video_codec_types(codecs)  # GLib.Error if the server lacks the cap
            self.emit("action", index=index, op=op, codecs=codecs, display=display)
            return 0
        if op in AGENT_OPS and self.agent.perform(self.need_main(), index, op, act):
            return 0
        if self.agent.perform_port(index, op, act):
            return 0
        if self.usb.perform(index, op, act):  # usb
            return 0
        if self.smartcard.perform(index, op, act):
            return 0
        if op == "wait":
            ms = int(act.get("ms", 0))
            self.emit("action", index=index, op=op, ms=ms)
            return max(ms, 0)
        if op == "wait_mouse_mode":
            mode = act["mode"]
            mode = MOUSE_MODES.get(mode, mode) if isinstance(mode, str) else int(mode)
            limit = time.monotonic() + int(act.get("timeout_ms", 2000)) / 1000.0

            def poll():
                if self.finished:
                    return False
                current = self.main.props.mouse_mode if self.main is not None else None
                if current == mode:
                    self.emit("action", index=index, op=op, mode=mode)
                    GLib.idle_add(self.run_action, index + 1)
                    return False
                if time.monotonic() > limit:
                    self.emit("action", index=index, op=op, mode=mode, error="timeout", current=current)
                    self.finish("action-failed", index=index, op=op, message="mouse mode not reached")
                    return False
                return True

            GLib.timeout_add(20, poll)
            return None
        raise ValueError(f"unknown op {op!r}")

    def flush_then_done(self):
        ch = self.inputs if self.inputs_open() else None
        if ch is None:
            self.after_actions()
            return

        def flushed(channel, result):
            try:
                channel.flush_finish(result)
            except GLib.Error as exc:
                self.emit("flush-error", message=exc.message)
            self.after_actions()

        ch.flush_async(None, flushed)

    def after_actions(self):
        if self.finished:
            return
        self.emit("actions-done", count=len(self.args.action_list))
        if not self.args.control:  # with --control, "finish" ends the session
            GLib.timeout_add(max(self.args.linger_ms, 0), self.on_linger_done)

    # ---------------------------------------------------------------- control
    def on_control(self, fd, condition):
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        self.control_buf += data
        while b"\n" in self.control_buf:
            line, self.control_buf = self.control_buf.split(b"\n", 1)
            self.control(line.decode("utf-8", "replace").strip())
        if not data:  # stdin closed: as "finish"
            self.control("finish")
            return False
        return True

    def control(self, line):
        cmd, _, arg = line.partition(" ")
        if not cmd or self.finished:
            return
        if cmd == "screenshot" and arg:
            self.write_screenshot(arg)
        elif cmd == "screenshot_display" and " " in arg:
            display, _, path = arg.partition(" ")
            self.write_screenshot(path, int(display))
        elif cmd == "finish":
            self.on_linger_done()
        elif cmd == "sockets":
            self.emit_sockets()
        elif cmd == "action" and arg:
            self.control_action(arg)
        elif cmd == "file_copy" and arg:
            self.control_action(json.dumps({"op": "file_copy", "path": arg}))
        elif cmd == "port_write" and " " in arg:
            portname, _, data = arg.partition(" ")
            self.control_action(json.dumps({"op": "port_write", "name": portname, "text": data}))
        elif cmd in Usb.OPS and not arg:  # usb
            self.control_action(json.dumps({"op": cmd}))
        else:
            self.emit("control-error", line=line, error="unknown command")

    def control_action(self, arg):
        """``action JSON``: perform one action object now (``index`` -1 in its ``action`` event);
        a failure is reported as an ``action`` event with ``error`` and does not end the session."""
        act = None
        try:
            act = json.loads(arg)
            op = act.get("op")
            if op in ("wait", "wait_mouse_mode"):
                raise ValueError(f"{op} is not a control action")
            self.perform(-1, op, act)
        except Exception as exc:  # report, keep the session
            self.emit("action", index=-1, op=act.get("op") if isinstance(act, dict) else None, error=str(exc))

    def on_linger_done(self):
        if self.args.screenshot:
            self.write_screenshot(self.args.screenshot)
        self.finish("ok")
        return False

    # ------------------------------------------------------------ termination
    def on_deadline(self):
        self.deadline_id = 0
        missing = []
        if (CHANNEL_MAIN, 0) not in self.open:
            missing.append("main")
        if len(self.open) < self.args.expect_channels:
            missing.append(f"channels {len(self.open)}/{self.args.expect_channels}")
        if self.args.action_list and not self.inputs_open():
            missing.append("inputs")
        self.finish("timeout", missing=missing)
        return False

    def on_signal(self):
        self.finish("signal")
        return False

    def finish(self, reason, **extra):
        if self.finished:
            return
        self.finished = True
        code = EXIT_CODES.get(reason, 1)
        self.exit_code = code
        self.done_payload = {
            "reason": reason,
            "exit_code": code,
            "open_channels": sorted([list(k) for k in self.open]),
            "invalidates": self.invalidates,
        }
        self.done_payload.update(self.audio.summary())
        self.done_payload.update(extra)
        if self.deadline_id:
            GLib.source_remove(self.deadline_id)
            self.deadline_id = 0
        self.session.disconnect()  # spice_session_disconnect (idle)
        self.final_id = GLib.timeout_add(2000, self.quit)

    def on_session_disconnected(self, _session):
        if self.finished:
            # let queued channel events drain first
            GLib.idle_add(self.quit)

    def quit(self):
        if self.loop.is_running():
            self.loop.quit()
        return False


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.debug:
        Spice.util_set_debug(True)
    client = Client(args)
    code = client.run()
    sys.stdout.flush()
    # spice-gtk may keep coroutines/threads around; exit without running finalizers
    os._exit(code)


if __name__ == "__main__":
    main()
