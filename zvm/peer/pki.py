"""This site's certificates for the peer service (9081): a site CA and a leaf it signs, in DATA_DIR/pki.

The leaf serves 9081 and is this ZVM's client certificate when it calls a paired ZVM. Pairing gives each
site the other's CA certificate; from then on each side accepts, on 9081, only client certificates issued
by a paired site's CA (mutual TLS). Pairing tokens name the leaf's SHA-256 fingerprint, so the site that
pairs knows it talks to the right ZVM before it trusts the CA it receives.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from zvm.tls import SiteCA


@dataclass(frozen=True)
class SitePki:
    ca_cert: Path
    cert: Path
    key: Path

    @property
    def ca_pem(self) -> str:
        return self.ca_cert.read_text()

    def fingerprint(self) -> str:
        """SHA-256 of the leaf certificate (DER), hex."""
        return leaf_fingerprint(ssl.PEM_cert_to_DER_cert(self.cert.read_text()))


def leaf_fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def ensure_pki(data_dir: Path, site_name: str, site_identifier: str, names: list[str]) -> SitePki:
    pki = Path(data_dir) / "pki"
    ca = SiteCA(pki, site_name)
    cert, key = pki / "peer.pem", pki / "peer.key"
    wanted = sorted({*names, socket.gethostname(), "localhost", "127.0.0.1"} - {""})
    if not cert.exists() or _names(cert) != wanted:
        ca.issue(site_identifier, wanted, cert, key)
    return SitePki(ca_cert=ca.cert_path, cert=cert, key=key)


def _names(cert_path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return sorted([str(v) for v in san.get_values_for_type(x509.IPAddress)]
                  + san.get_values_for_type(x509.DNSName))


def issued_by(leaf_der: bytes, ca_pem: str) -> bool:
    """Whether ``ca_pem`` signed this certificate (after TLS verified the chain against the trusted CAs)."""
    try:
        leaf = x509.load_der_x509_certificate(leaf_der)
        ca = x509.load_pem_x509_certificate(ca_pem.encode())
        leaf.verify_directly_issued_by(ca)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False
