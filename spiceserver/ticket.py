"""Ticket authentication: per-link RSA keys, OAEP decryption, password with expiry.

Counterpart of spice ``server/reds.cpp`` (``reds_send_link_ack`` key generation,
``reds_handle_ticket``, ``spice_server_set_ticket``). The client encrypts the password plus a NUL
with RSA-OAEP (SHA-1, MGF1-SHA-1, empty label) under a fresh 1024-bit key the server sent as a DER
SubjectPublicKeyInfo in the LinkReply.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .proto.enums import TICKET_PUBKEY_BYTES

__all__ = ["LinkKey", "Ticket", "encrypt_ticket", "OAEP", "MAX_TICKET_SHIFT"]

#: leading zero bytes of a spice-html5 ciphertext that :meth:`LinkKey.decrypt` puts back (at most)
MAX_TICKET_SHIFT = 2

OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


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


@dataclass
class Ticket:
    """The current password and when it expires (monotonic seconds; None = never)."""

    password: str | None = None
    expires: float | None = None

    def set(self, password: str | None, lifetime: float = 0.0, *, now: float | None = None) -> None:
        """``spice_server_set_ticket``: lifetime 0 = never expires; None password = nobody."""
        now = time.monotonic() if now is None else now
        self.password = password
        self.expires = now + lifetime if lifetime > 0 else None

    def authenticate(self, key: LinkKey, ciphertext: bytes, *, required: bool = True, now: float | None = None) -> str | None:
        """Check a link's encrypted ticket; returns why it is refused, or None.

        The ticket is decrypted even when no password is ``required`` (libspice refuses a client
        that sends garbage then too).
        """
        password = key.decrypt(ciphertext)
        if password is None:
            return "failed to decrypt the ticket"
        return self.check(password, now=now) if required else None

    def check(self, given: bytes, *, now: float | None = None) -> str | None:
        """None if ``given`` is accepted, else the reason it is not (for the log)."""
        if not self.password:
            return "ticketing is enabled but no password is set"
        now = time.monotonic() if now is None else now
        if self.expires is not None and now >= self.expires:
            return "the ticket has expired"
        if not hmac.compare_digest(given, self.password.encode()):
            return "invalid password"
        return None
