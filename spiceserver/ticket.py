"""Ticket authentication: per-link RSA keys, OAEP decryption, password with expiry, failure throttle.

Counterpart of spice ``server/reds.cpp`` (``reds_send_link_ack`` key generation,
``reds_handle_ticket``, ``spice_server_set_ticket``). The client encrypts the password plus a NUL
with RSA-OAEP (SHA-1, MGF1-SHA-1, empty label) under a fresh 1024-bit key the server sent as a DER
SubjectPublicKeyInfo in the LinkReply.

libspice lets a peer guess passwords as fast as it can link; :class:`TicketThrottle` (not in
libspice) makes guessing slow: a few wrong tickets from one address lock that address out for a
while, in a table of bounded size.
"""

from __future__ import annotations

import hmac
import ipaddress
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .proto.enums import TICKET_PUBKEY_BYTES

__all__ = ["LinkKey", "Ticket", "TicketThrottle", "encrypt_ticket", "peer_address", "OAEP", "MAX_THROTTLED_PEERS", "MAX_TICKET_SHIFT"]

#: leading zero bytes of a spice-html5 ciphertext that :meth:`LinkKey.decrypt` puts back (at most)
MAX_TICKET_SHIFT = 2

OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
#: Peer addresses :class:`TicketThrottle` remembers at most (the least recently failing go first).
MAX_THROTTLED_PEERS = 4096
_INVALID = "invalid password"
_UNDECRYPTABLE = "failed to decrypt the ticket"


class LinkKey:
    """A fresh 1024-bit RSA key for one link."""

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if len(der) != TICKET_PUBKEY_BYTES:  # pragma: no cover - fixed by the key size
            raise RuntimeError(f"unexpected public key size {len(der)}")
        self.public_der = der

    def decrypt(self, ciphertext: bytes) -> bytes | None:
        """The plaintext up to its first NUL, or None when decryption fails.

        spice-html5 (``ticket.js``, ``rsa_encrypt``) turns the RSA result into bytes through its
        hex string, so the ciphertext loses its leading zero bytes; ``SpiceLinkAuthTicket`` then
        fills the 128-byte field up with zeros at the end. That happens when the result's top byte
        is zero (about 1 ticket in 150 with a 1024-bit modulus, whose top byte is at least 0x80),
        two zero bytes about 1 in 38 000, three about 1 in 10 million. libspice refuses those
        links; we retry with the ciphertext shifted back by up to :data:`MAX_TICKET_SHIFT` bytes
        (never more than its trailing zeros), so a ticket costs at most ``MAX_TICKET_SHIFT + 1``
        decryptions whatever a peer sends. OAEP's integrity check rejects every wrong shift, so
        this accepts nothing a correct ticket would not.
        """
        zeros = len(ciphertext) - len(ciphertext.rstrip(b"\0"))
        for shift in range(min(zeros, MAX_TICKET_SHIFT) + 1):
            candidate = bytes(shift) + ciphertext[: len(ciphertext) - shift] if shift else ciphertext
            plain = self._try_decrypt(candidate)
            if plain is not None:
                return plain.split(b"\0", 1)[0]
        return None

    def _try_decrypt(self, candidate: bytes) -> bytes | None:
        """One RSA-OAEP decryption; None when it fails."""
        try:
            return self._key.decrypt(candidate, OAEP)
        except ValueError:
            return None


def encrypt_ticket(public_der: bytes, password: str) -> bytes:
    """What a client sends: OAEP(password + NUL) under the server's key (used by the test client)."""
    key = serialization.load_der_public_key(public_der)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA key")
    return key.encrypt(password.encode() + b"\0", OAEP)


def peer_address(peername: object) -> str:
    """The address a throttle counts a peer under: its IPv4 address (IPv4-mapped IPv6 too), its
    IPv6 /64 (one host usually holds a whole /64), or ``"local"`` for a Unix-socket peer."""
    if isinstance(peername, tuple) and peername and isinstance(peername[0], str):
        try:
            ip = ipaddress.ip_address(peername[0].split("%", 1)[0])
        except ValueError:
            return peername[0]
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.IPv6Network((ip, 64), strict=False))
        return str(ip)
    return "local"


@dataclass
class _Failures:
    count: int
    since: float
    locked_until: float = 0.0


@dataclass
class TicketThrottle:
    """Failed tickets per peer address: ``max_failures`` within ``lockout`` seconds lock the address
    out for ``lockout`` seconds (0 failures = no limit). At most ``max_peers`` addresses are kept.
    Thread-safe: tickets are checked on the link crypto threads (:mod:`spiceserver.linkcrypto`)."""

    max_failures: int = 5
    lockout: float = 60.0
    max_peers: int = MAX_THROTTLED_PEERS
    _peers: OrderedDict[str, _Failures] = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __len__(self) -> int:
        return len(self._peers)

    def locked_for(self, address: str, now: float) -> float:
        """Seconds ``address`` stays locked out (0: it may try)."""
        with self._lock:
            entry = self._peers.get(address)
            return max(0.0, entry.locked_until - now) if entry is not None else 0.0

    def failed(self, address: str, now: float) -> bool:
        """Count a wrong ticket from ``address``; True when this one locked it out."""
        if self.max_failures <= 0:
            return False
        with self._lock:
            return self._count(address, now)

    def _count(self, address: str, now: float) -> bool:
        entry = self._peers.get(address)
        if entry is None or now - entry.since >= self.lockout:
            entry = self._peers[address] = _Failures(0, now)
        self._peers.move_to_end(address)
        entry.count += 1
        if entry.count >= self.max_failures:
            entry.count, entry.since, entry.locked_until = 0, now + self.lockout, now + self.lockout
        while len(self._peers) > self.max_peers:
            self._peers.popitem(last=False)
        return entry.locked_until == now + self.lockout


@dataclass
class Ticket:
    """The current password and when it expires (monotonic seconds; None = never), and the
    failed-ticket throttle (None = none)."""

    password: str | None = None
    expires: float | None = None
    throttle: TicketThrottle | None = None

    def set(self, password: str | None, lifetime: float = 0.0, *, now: float | None = None) -> None:
        """``spice_server_set_ticket``: lifetime 0 = never expires; None password = nobody."""
        now = time.monotonic() if now is None else now
        self.password = password
        self.expires = now + lifetime if lifetime > 0 else None

    def authenticate(
        self, key: LinkKey, ciphertext: bytes, *, required: bool = True, now: float | None = None, peer: object = None
    ) -> str | None:
        """Check a link's encrypted ticket from ``peer`` (a socket's peername); returns why it is
        refused, or None.

        The ticket is decrypted even when no password is ``required`` (libspice refuses a client
        that sends garbage then too). With a password required and set, a peer address the
        throttle locked out is refused before decrypting, and a wrong or undecryptable ticket
        counts against its address (an expired one does not: no guess was tested).
        """
        now = time.monotonic() if now is None else now
        throttle = self.throttle if required and self.password else None
        address = peer_address(peer)
        if throttle is not None and (wait := throttle.locked_for(address, now)) > 0:
            return f"too many wrong tickets from {address}: locked out for {wait:.0f} more seconds"
        password = key.decrypt(ciphertext)
        reason = _UNDECRYPTABLE if password is None else self.check(password, now=now) if required else None
        if throttle is not None and reason in (_UNDECRYPTABLE, _INVALID) and throttle.failed(address, now):
            reason += f" ({throttle.max_failures} wrong tickets from {address}: locked out for {throttle.lockout:.0f} s)"
        return reason

    def check(self, given: bytes, *, now: float | None = None) -> str | None:
        """None if ``given`` is accepted, else the reason it is not (for the log)."""
        if not self.password:
            return "ticketing is enabled but no password is set"
        now = time.monotonic() if now is None else now
        if self.expires is not None and now >= self.expires:
            return "the ticket has expired"
        if not hmac.compare_digest(given, self.password.encode()):
            return _INVALID
        return None
