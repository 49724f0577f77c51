"""A throwaway test CA and server certificate in QEMU's x509-dir layout (made with cryptography).

Used by the TLS tests and the interop tier (spice-gtk verifies the chain and the SAN).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Subject of the server certificate made by make_test_ca(), in the syntax of spice-gtk's
# SpiceSession:cert-subject (comma separated, same order as in the certificate).
TEST_CERT_SUBJECT = "O=spiceserver test,CN=localhost"


@dataclass(frozen=True)
class TestCA:
    """Paths of a throwaway PKI in QEMU's x509 dir layout."""

    dir: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    subject: str = TEST_CERT_SUBJECT

    __test__ = False  # not a pytest test class


def make_test_ca(directory: Path, hosts: Sequence[str] = ("localhost", "127.0.0.1")) -> TestCA:
    """Write ``ca-cert.pem``, ``server-cert.pem`` and ``server-key.pem`` into ``directory``.

    The server certificate has subject ``O=spiceserver test,CN=localhost`` and a SAN with
    every entry of ``hosts`` (DNS names first, then IP addresses: spice-gtk checks SAN
    entries in order and warns when an IP entry is compared with a DNS host name), so
    spice-gtk's default ``verify=hostname`` accepts ``--host 127.0.0.1`` and
    ``--host localhost``.  Keys are RSA 2048, unencrypted; valid from 1 day ago for 30 days.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(days=1)
    not_after = now + datetime.timedelta(days=30)

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spiceserver test"),
            x509.NameAttribute(NameOID.COMMON_NAME, "spiceserver test CA"),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names: list[x509.GeneralName] = []
    ips: list[x509.GeneralName] = []
    for host in hosts:
        try:
            ips.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spiceserver test"),
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names + ips), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    paths = TestCA(
        dir=directory,
        ca_cert=directory / "ca-cert.pem",
        server_cert=directory / "server-cert.pem",
        server_key=directory / "server-key.pem",
    )
    paths.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.server_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    paths.server_key.chmod(0o600)
    return paths
