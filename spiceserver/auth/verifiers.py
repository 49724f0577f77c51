"""Salted SCRAM verifiers per user: what a server keeps instead of passwords.

No libspice counterpart (cyrus keeps them in its ``sasldb``, written by ``saslpasswd2``); the keys
are those of RFC 5802 section 3 (SaltedPassword, ClientKey, StoredKey, ServerKey), with the hash
of RFC 5802 (SHA-1) or RFC 7677 (SHA-256). One verifier per hash, so that SCRAM-SHA-1, SCRAM-SHA-256
and PLAIN (which derives StoredKey from the password it receives) all check against the store.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from dataclasses import dataclass

__all__ = ["ScramVerifier", "SaslVerifiers", "SCRAM_HASHES", "DEFAULT_ITERATIONS", "scram_keys"]

#: mechanism name -> hashlib name
SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}
#: RFC 7677 section 4: "at least 4096"; cyrus's default too
DEFAULT_ITERATIONS = 4096


def scram_keys(hash_name: str, password: bytes, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey) of ``password`` (RFC 5802 section 3)."""
    salted = hashlib.pbkdf2_hmac(hash_name, password, salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    server_key = hmac.digest(salted, b"Server Key", hash_name)
    return hashlib.new(hash_name, client_key).digest(), server_key


@dataclass(frozen=True, slots=True)
class ScramVerifier:
    """One user's keys for one hash: never the password."""

    hash_name: str
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def check_password(self, password: bytes) -> bool:
        """Whether ``password`` derives this verifier's StoredKey (constant-time compare)."""
        stored, _ = scram_keys(self.hash_name, password, self.salt, self.iterations)
        return hmac.compare_digest(stored, self.stored_key)


class SaslVerifiers:
    """A thread-safe store of SCRAM verifiers by user name (the name as the client sends it,
    ``n=`` in SCRAM, authcid in PLAIN; compared exactly)."""

    def __init__(self) -> None:
        self._users: dict[str, dict[str, ScramVerifier]] = {}
        self._lock = threading.Lock()

    def add(self, user: str, password: str, iterations: int = DEFAULT_ITERATIONS) -> None:
        """Store (or replace) ``user``'s verifiers for every SCRAM hash, each with a fresh 16-byte
        salt. Costs one PBKDF2 per hash.

        Raises:
            ValueError: empty user name, or fewer than 4096 iterations (RFC 7677).
        """
        if not user:
            raise ValueError("empty user name")
        if iterations < DEFAULT_ITERATIONS:
            raise ValueError(f"SCRAM needs at least {DEFAULT_ITERATIONS} iterations")
        entry = {}
        for h in SCRAM_HASHES.values():
            salt = os.urandom(16)
            entry[h] = ScramVerifier(h, salt, iterations, *scram_keys(h, password.encode(), salt, iterations))
        with self._lock:
            self._users[user] = entry

    def add_verifier(self, user: str, verifier: ScramVerifier) -> None:
        """Store a verifier made elsewhere (e.g. loaded from a file)."""
        with self._lock:
            self._users.setdefault(user, {})[verifier.hash_name] = verifier

    def remove(self, user: str) -> None:
        """Forget ``user`` (no error if unknown)."""
        with self._lock:
            self._users.pop(user, None)

    def get(self, user: str, hash_name: str) -> ScramVerifier | None:
        """``user``'s verifier for ``hash_name`` (``"sha256"``, ``"sha1"``), or None."""
        with self._lock:
            return self._users.get(user, {}).get(hash_name)

    def check_password(self, user: str, password: bytes) -> bool:
        """PLAIN against the store: the password derives ``user``'s StoredKey (SHA-256 preferred)."""
        with self._lock:
            entry = dict(self._users.get(user, {}))
        for h in ("sha256", "sha1"):
            if h in entry:
                return entry[h].check_password(password)
        return False

    def __contains__(self, user: object) -> bool:
        with self._lock:
            return user in self._users

    def __len__(self) -> int:
        with self._lock:
            return len(self._users)
