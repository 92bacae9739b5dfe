"""The REST API's HTTPS certificate when none is configured: made at first start, signed by the site CA.

``ensure_api_certificate`` keeps ``DATA_DIR/pki/api.pem`` and ``api.key`` (0600), a server certificate for
every name and address this ZVM is known by (its host name, fully qualified name, addresses, the listen
and public addresses, localhost), signed by the site CA of zvm/tls.py (``DATA_DIR/pki/ca.pem``, the CA that
also signs the peer-service and VRA certificates). It is made again when a name is missing from it or
when it expires within 30 days. Clients verify it with that CA file (``zvm --ca-file``,
``ZvmClient(verify=...)``) or by pinning its SHA-256 fingerprint, which ``zvm serve`` prints at start.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from zvm.db import private_dir
from zvm.tls import SiteCA

RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class ApiCertificate:
    cert: Path
    key: Path
    ca: Path

    def fingerprint(self) -> str:
        """SHA-256 of the certificate (DER), as colon-separated hex pairs (what browsers show)."""
        der = x509.load_pem_x509_certificate(self.cert.read_bytes()).public_bytes(serialization.Encoding.DER)
        return format_fingerprint(hashlib.sha256(der).hexdigest())


def format_fingerprint(hex_digest: str) -> str:
    return ":".join(hex_digest[i:i + 2] for i in range(0, len(hex_digest), 2)).upper()


def host_names(listen: str, public_address: str) -> list[str]:
    """The names and addresses a client may use to reach this ZVM."""
    names = {"localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn(), public_address}
    try:
        if not ipaddress.ip_address(listen).is_unspecified:
            names.add(listen)
    except ValueError:
        names.add(listen)  # a host name to listen on
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            names.add(str(info[4][0]).split("%")[0])
    except OSError:
        pass  # a host name that does not resolve: the names above still hold
    return sorted(n for n in names if n)


def _sans(cert_path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))


def _current(cert_path: Path, ca: SiteCA, names: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_path.read_bytes()))
        fresh = cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > RENEW_BEFORE
        names_ok = {str(ipaddress.ip_address(n)) if _is_ip(n) else n for n in names} <= _sans(cert_path)
        return fresh and names_ok
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False  # unreadable, not ours, or without names: made again


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def ensure_api_certificate(data_dir: Path, site_name: str, names: list[str]) -> ApiCertificate:
    pki = private_dir(Path(data_dir) / "pki")
    ca = SiteCA(pki, site_name)
    cert, key = pki / "api.pem", pki / "api.key"
    if not (cert.exists() and key.exists() and _current(cert, ca, names)):
        ca.issue(f"{site_name} ZVM API"[:64], names, cert, key)
    return ApiCertificate(cert=cert, key=key, ca=ca.cert_path)
