"""Certificates the ZVM makes for itself: a site CA per ZVM, and leaf certificates it signs.

Each ZVM has its own CA (``ca.pem`` / ``ca.key`` in the data directory; the key 0600). Its peer-service
and VRA certificates are signed by it; pairing exchanges the two sites' CA certificates, so each side
trusts exactly the other site's CA for mutual TLS on 9081 (and VRA to VRA). VRAs enroll: they send a
certificate request and get back a certificate signed by this CA (``sign_csr``; their keys never leave
them). ``self_signed`` makes a certificate for the HTTPS API in labs and tests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str, org: str = "ZVR") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def _sans(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def _write_key(path: Path, key) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ca_fingerprint(pem: str) -> str:
    """SHA-256 of a PEM certificate's DER form, hex."""
    return hashlib.sha256(x509.load_pem_x509_certificate(pem.encode()).public_bytes(
        serialization.Encoding.DER)).hexdigest()


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days)))


def self_signed(common_name: str, names: list[str], cert_path: Path, key_path: Path, days: int = 825) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(_name(common_name), _name(common_name), key.public_key(), days)
            .add_extension(x509.SubjectAlternativeName(_sans(names)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    _write_key(Path(key_path), key)
    Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class SiteCA:
    """This site's certificate authority, kept in ``DIR/ca.pem`` and ``DIR/ca.key``."""

    def __init__(self, directory: str | os.PathLike, site_name: str = "ZVM site"):
        self.dir = Path(directory)
        self.cert_path = self.dir / "ca.pem"
        self.key_path = self.dir / "ca.key"
        if not self.cert_path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            key = ec.generate_private_key(ec.SECP256R1())
            name = _name(f"{site_name} CA")
            cert = (_builder(name, name, key.public_key(), 3650)
                    .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                    .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                 content_commitment=False, key_encipherment=False,
                                                 data_encipherment=False, key_agreement=False,
                                                 encipher_only=False, decipher_only=False), critical=True)
                    .sign(key, hashes.SHA256()))
            _write_key(self.key_path, key)
            self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    @property
    def pem(self) -> str:
        return self.cert_path.read_text()

    def fingerprint(self) -> str:
        """SHA-256 of the CA certificate (DER), hex: what a VRA is given at install to recognise this CA."""
        return ca_fingerprint(self.pem)

    def sign_csr(self, csr_pem: bytes, common_name: str, names: list[str], days: int = 825) -> str:
        """A leaf certificate (PEM) for the key of ``csr_pem``, named by us (``common_name``, ``names`` as
        subject alternative names), not by the request: the request only proves the key is held."""
        csr = x509.load_pem_x509_csr(csr_pem)
        if not csr.is_signature_valid:
            raise ValueError("the certificate request's signature does not match its key")
        ca_key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        cert = (_builder(_name(common_name), ca_cert.subject, csr.public_key(), days)
                .add_extension(x509.SubjectAlternativeName(_sans(names)), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, common_name: str, names: list[str], cert_path: Path, key_path: Path,
              days: int = 825) -> None:
        """A leaf certificate for both TLS server and client use, signed by this CA."""
        ca_key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (_builder(_name(common_name), ca_cert.subject, key.public_key(), days)
                .add_extension(x509.SubjectAlternativeName(_sans(names)), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        _write_key(Path(key_path), key)
        Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
