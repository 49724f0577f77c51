"""SASL logins (``SPICE_COMMON_CAP_AUTH_SASL``) on TLS links: SCRAM-SHA-256, SCRAM-SHA-1, PLAIN.

Counterpart of the cyrus side of spice ``server/red-stream.cpp`` (``red_sasl_*``). Wire format in
:mod:`spiceserver.proto.sasl`; one module per job: :mod:`.verifiers` (salted keys, never passwords),
:mod:`.mechanism` (step results, credentials), :mod:`.scram`, :mod:`.plain`, :mod:`.sasl` (the
exchange on a connection).
"""

from __future__ import annotations

from .mechanism import PasswordCheck, SaslCredentials, StepResult
from .sasl import DEFAULT_SASL_MECHANISMS, SaslAuthenticator, SaslOutcome
from .verifiers import SaslVerifiers, ScramVerifier

__all__ = [
    "DEFAULT_SASL_MECHANISMS",
    "PasswordCheck",
    "SaslAuthenticator",
    "SaslCredentials",
    "SaslOutcome",
    "SaslVerifiers",
    "ScramVerifier",
    "StepResult",
]
