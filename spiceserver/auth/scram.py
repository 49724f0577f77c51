"""SCRAM-SHA-256 (RFC 7677) and SCRAM-SHA-1 (RFC 5802), server side, with hashlib and hmac.

Counterpart of cyrus ``plugins/scram.c`` behind libspice's ``sasl_server_start`` / ``_step``
(``server/red-stream.cpp``). Two steps::

    client-first  gs2-header client-first-bare    "n,a=alice,n=alice,r=<cnonce>"
    server-first                                   "r=<cnonce><snonce>,s=<salt>,i=<iterations>"
    client-final  "c=<b64 gs2-header>,r=<nonce>,p=<proof>"
    server-final  "v=<server signature>"  or "e=<error>"

What cyrus in spice-gtk sends decides two rules: it puts the authzid in the gs2 header
(``a=alice``), which is accepted when equal to the user name (and refused otherwise: no acting as
somebody else); channel binding ``n`` or ``y`` is accepted (no binding to TLS is offered), ``p=``
refused. An unknown user gets a salt derived from a per-process secret, so the server-first
message does not tell who exists; the proof then fails. Proofs are compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

from ..errors import ProtocolError
from .mechanism import StepResult, refuse
from .verifiers import DEFAULT_ITERATIONS, SCRAM_HASHES, SaslVerifiers, ScramVerifier

__all__ = ["ScramServer", "decode_saslname", "MAX_SCRAM_MESSAGE"]

#: no SCRAM message of ours is longer; a longer one is malformed
MAX_SCRAM_MESSAGE = 4096
_SECRET = os.urandom(32)


def decode_saslname(value: str) -> str:
    """RFC 5802 ``saslname``: ``=2C`` is a comma, ``=3D`` an equals sign, nothing else may follow '='.

    Raises:
        ProtocolError: a bare '=' or an empty name.
    """
    out, i = [], 0
    while i < len(value):
        ch = value[i]
        if ch == "=":
            esc = value[i : i + 3]
            if esc not in ("=2C", "=3D"):
                raise ProtocolError("bad '=' escape in a SCRAM name")
            out.append("," if esc == "=2C" else "=")
            i += 3
        else:
            out.append(ch)
            i += 1
    if not out:
        raise ProtocolError("empty SCRAM name")
    return "".join(out)


def _printable_nonce(nonce: str) -> bool:
    return bool(nonce) and all(0x21 <= ord(c) <= 0x7E and c != "," for c in nonce)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class ScramServer:
    """One SCRAM exchange.

    Args:
        mechanism: ``"SCRAM-SHA-256"`` or ``"SCRAM-SHA-1"``.
        verifiers: the store the user's keys come from (None: nobody can log in).
        server_nonce: our nonce part (tests with the RFC vectors); random by default.
    """

    def __init__(self, mechanism: str, verifiers: SaslVerifiers | None, *, server_nonce: str | None = None) -> None:
        self.hash_name = SCRAM_HASHES[mechanism]
        self._verifiers = verifiers
        self._snonce = server_nonce or _b64(os.urandom(18))
        self._state = "first"
        self._verifier: ScramVerifier | None = None
        self._gs2_header = self._bare = self._nonce = self._server_first = ""
        self.user: str | None = None

    def step(self, data: bytes | None) -> StepResult:
        """Answer client-first, then client-final.

        Raises:
            ProtocolError: a malformed message.
            RuntimeError: called after the exchange completed.
        """
        if data is None or len(data) > MAX_SCRAM_MESSAGE:
            raise ProtocolError("SCRAM message missing or too long")
        try:
            msg = data.decode()
        except UnicodeDecodeError:
            raise ProtocolError("SCRAM message is not UTF-8") from None
        if self._state == "first":
            self._state = "final"
            return self._client_first(msg)
        if self._state == "final":
            self._state = "done"
            return self._client_final(msg)
        raise RuntimeError("SCRAM exchange already complete")

    def _client_first(self, msg: str) -> StepResult:
        parts = msg.split(",", 2)
        if len(parts) != 3:
            raise ProtocolError("SCRAM client-first without a gs2 header")
        cbind, authz, bare = parts
        if cbind.startswith("p="):
            return refuse("SCRAM channel binding requested (not offered)", b"e=channel-binding-not-supported")
        if cbind not in ("n", "y"):
            raise ProtocolError(f"bad SCRAM gs2 flag {cbind[:10]!r}")
        if authz and not authz.startswith("a="):
            raise ProtocolError("bad SCRAM authzid")
        self._gs2_header = f"{cbind},{authz},"
        attrs = bare.split(",")
        if attrs[0].startswith("m="):
            return refuse("SCRAM mandatory extension", b"e=extensions-not-supported")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            raise ProtocolError("SCRAM client-first without n= and r=")
        if any(len(x) < 2 or x[1] != "=" or not x[0].isalpha() for x in attrs[2:]):
            raise ProtocolError("bad SCRAM extension attribute")
        user = self.user = decode_saslname(attrs[0][2:])
        cnonce = attrs[1][2:]
        if not _printable_nonce(cnonce):
            raise ProtocolError("bad SCRAM client nonce")
        if authz and decode_saslname(authz[2:]) != user:
            return refuse(f"user {user!r} asked to act as {authz[2:]!r}", b"e=invalid-username-encoding", user=user)
        verifier = self._verifiers.get(user, self.hash_name) if self._verifiers is not None else None
        self._verifier = verifier
        if verifier is None:  # the same answer as for a real user, then a failed proof
            salt = hmac.digest(_SECRET, f"{self.hash_name}:{user}".encode(), "sha256")[:16]
            iterations = DEFAULT_ITERATIONS
        else:
            salt, iterations = verifier.salt, verifier.iterations
        self._bare = bare
        self._nonce = cnonce + self._snonce
        self._server_first = f"r={self._nonce},s={_b64(salt)},i={iterations}"
        return StepResult(self._server_first.encode(), False, user=user)

    def _client_final(self, msg: str) -> StepResult:
        without_proof, sep, proof_b64 = msg.rpartition(",p=")
        attrs = without_proof.split(",")
        if not sep or len(attrs) < 2 or not attrs[0].startswith("c=") or not attrs[1].startswith("r="):
            raise ProtocolError("SCRAM client-final without c=, r= and p=")
        try:
            proof = base64.b64decode(proof_b64, validate=True)
        except binascii.Error:
            raise ProtocolError("SCRAM proof is not base64") from None
        size = hashlib.new(self.hash_name).digest_size
        if len(proof) != size:
            raise ProtocolError(f"SCRAM proof of {len(proof)} bytes")
        user = self.user
        if not hmac.compare_digest(attrs[0][2:].encode(), _b64(self._gs2_header.encode()).encode()):
            return refuse("SCRAM channel binding data differs from the gs2 header", b"e=channel-bindings-dont-match", user=user)
        if not hmac.compare_digest(attrs[1][2:].encode(), self._nonce.encode()):
            return refuse("SCRAM nonce differs from the server's", b"e=other-error", user=user)
        verifier = self._verifier
        auth_message = f"{self._bare},{self._server_first},{without_proof}".encode()
        if verifier is None:
            return refuse(f"unknown SASL user {user!r}", b"e=invalid-proof", user=user, guess=True)
        signature = hmac.digest(verifier.stored_key, auth_message, self.hash_name)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.new(self.hash_name, client_key).digest(), verifier.stored_key):
            return refuse(f"wrong password for {user!r} (SCRAM)", b"e=invalid-proof", user=user, guess=True)
        server_sig = hmac.digest(verifier.server_key, auth_message, self.hash_name)
        return StepResult(f"v={_b64(server_sig)}".encode(), True, True, user)
