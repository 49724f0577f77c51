"""The PLAIN mechanism (RFC 4616), server side: ``[authzid] NUL authcid NUL passwd``.

Counterpart of cyrus ``plugins/plain.c`` behind libspice's ``sasl_server_start``; offered on TLS
links only (the server never offers SASL on a plaintext port). An authzid is accepted when empty
or equal to the authcid: a client may not act as another user.
"""

from __future__ import annotations

from ..errors import ProtocolError
from .mechanism import SaslCredentials, StepResult, refuse

__all__ = ["PlainServer", "MAX_PLAIN_FIELD"]

#: RFC 4616: each field is at most 255 octets
MAX_PLAIN_FIELD = 255


class PlainServer:
    """One PLAIN exchange: an empty challenge if the client sent no initial response, then
    the verdict."""

    def __init__(self, credentials: SaslCredentials) -> None:
        self._credentials = credentials
        self._done = False
        self._challenged = False

    def step(self, data: bytes | None) -> StepResult:
        """Check the client's response.

        Raises:
            ProtocolError: not three NUL-separated UTF-8 fields of at most 255 bytes.
            RuntimeError: called after the exchange completed.
        """
        if self._done:
            raise RuntimeError("PLAIN exchange already complete")
        if data is None and not self._challenged:
            self._challenged = True
            return StepResult(b"", False)
        self._done = True
        fields = (data or b"").split(b"\0")
        if len(fields) != 3 or any(len(f) > MAX_PLAIN_FIELD for f in fields) or not fields[1] or not fields[2]:
            raise ProtocolError("malformed PLAIN response")
        try:
            authzid, user, password = (f.decode() for f in fields)
        except UnicodeDecodeError:
            raise ProtocolError("PLAIN response is not UTF-8") from None
        if authzid and authzid != user:
            return refuse(f"user {user!r} asked to act as {authzid!r}", user=user)
        if not self._credentials.check_password(user, password):
            return refuse(f"wrong password for {user!r} (PLAIN)", user=user, guess=True)
        return StepResult(None, True, True, user)
