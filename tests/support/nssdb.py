"""An NSS database for libcacard's software smartcard (what spice-gtk's ``smartcard-db`` names).

spice-gtk (``src/smartcard-manager.c``) starts libcacard with ``soft=(,Spice Software
Smartcard,CAC,,c1,c2,c3)`` when the session has ``enable-smartcard``, ``smartcard-db`` (a plain
directory path: ``sql:/path`` fails silently) and exactly three ``smartcard-certificates``
nicknames. libcacard's CAC card then answers APDUs from those certificates. This module makes such
a database with NSS ``certutil`` (Debian ``libnss3-tools``): a self-signed CA and three
certificates it signs, each with its own serial (with equal serials certutil silently creates
fewer certificates).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["CERT_NICKNAMES", "certutil_available", "make_nss_db"]

#: the three certificate nicknames to give spice-gtk's ``smartcard-certificates``
CERT_NICKNAMES = ("id-cert", "signing-cert", "encryption-cert")


def certutil_available() -> bool:
    """NSS ``certutil`` is on the PATH."""
    return shutil.which("certutil") is not None


def _certutil(db: Path, *args: str) -> None:
    subprocess.run(["certutil", "-d", f"sql:{db}", *args], check=True, capture_output=True, timeout=120)


def make_nss_db(directory: Path) -> Path:
    """Create the database in ``directory`` (made if missing) and return its path.

    Raises:
        FileNotFoundError: ``certutil`` is not installed.
        subprocess.CalledProcessError: certutil failed.
    """
    if not certutil_available():
        raise FileNotFoundError("certutil (Debian libnss3-tools) is not installed")
    db = directory.resolve()
    db.mkdir(parents=True, exist_ok=True)
    noise = db / "noise"
    noise.write_bytes(os.urandom(64))
    _certutil(db, "-N", "--empty-password")
    ca = "fake-smartcard-ca"
    _certutil(db, "-S", "-x", "-s", "CN=Fake Smart Card CA", "-n", ca, "-t", "TC,TC,TC", "-z", str(noise), "-m", "10")
    subjects = ("CN=John Doe", "CN=John Doe (signing)", "CN=John Doe (encryption)")
    kinds: tuple[tuple[str, ...], ...] = ((), ("--nsCertType", "smime"), ("--nsCertType", "sslClient"))
    for serial, (nick, subject, kind) in enumerate(zip(CERT_NICKNAMES, subjects, kinds, strict=True), start=11):
        _certutil(db, "-S", "-c", ca, "-s", subject, "-n", nick, "-t", ",,", *kind, "-z", str(noise), "-m", str(serial))
    listing = subprocess.run(["certutil", "-d", f"sql:{db}", "-L"], capture_output=True, text=True, timeout=60).stdout
    missing = [nick for nick in CERT_NICKNAMES if nick not in listing]
    if missing:
        raise RuntimeError(f"certutil did not create {missing}: {listing}")
    return db
