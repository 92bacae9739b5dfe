"""A VRA's enrollment with its ZVM, and the TLS material it keeps in ``STATE_DIR/tls``.

At first start (``vra serve --enroll-url URL --enroll-token-file F --zvm-ca-fingerprint HEX``) the VRA
makes its key (``key.pem``, 0600, never sent), sends a certificate request with its one-time token to
``POST URL/v1/vras/{id}/enroll``, and accepts the answer only if the site CA in it has the fingerprint it
was given at install and the certificate is that CA's, for this VRA id and this key. It keeps
``cert.pem``, ``site-ca.pem``, ``trust.pem`` (the bundle: its site CA and each paired site's, replaced by
UpdateTrust) and ``zvm.json`` (the name of its ZVM's certificate). A restart reuses them: no token needed.
To re-enroll (a new key and certificate), remove ``STATE_DIR/tls`` and give a new token.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vra_appliance.errors import EnrollmentError
from vra_appliance.fileio import write_atomic
from vra_appliance.trust.auth import parse_bundle

TOKEN_HEADER = "x-zvr-enrollment-token"


@dataclass(frozen=True)
class TlsFiles:
    dir: Path

    @property
    def key(self) -> Path:
        return self.dir / "key.pem"

    @property
    def cert(self) -> Path:
        return self.dir / "cert.pem"

    @property
    def site_ca(self) -> Path:
        return self.dir / "site-ca.pem"

    @property
    def trust(self) -> Path:
        return self.dir / "trust.pem"

    @property
    def zvm(self) -> Path:
        return self.dir / "zvm.json"

    def complete(self) -> bool:
        return all(p.exists() for p in (self.key, self.cert, self.site_ca, self.trust, self.zvm))

    def zvm_identity(self) -> str:
        return json.loads(self.zvm.read_text())["identity"]


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _key(files: TlsFiles) -> ec.EllipticCurvePrivateKey:
    """This VRA's key: made once, kept 0600 (a failed enrollment retried later uses the same key)."""
    if files.key.exists():
        return serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    files.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    write_atomic(files.key, data, mode=0o600)
    return key


def _post(url: str, token: str, body: dict, timeout: float) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", TOKEN_HEADER: token})
    # The ZVM's HTTPS certificate is not what this trusts: the answer is checked against the CA
    # fingerprint given at install (a forged answer names another CA and is refused).
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            err = json.loads(exc.read())
            detail = f"{err.get('Code')}: {err.get('Message')}"
        except ValueError:
            detail = exc.reason
        raise EnrollmentError(f"the ZVM refused the enrollment ({exc.code} {detail})") from None
    except (urllib.error.URLError, OSError) as exc:
        raise EnrollmentError(f"cannot reach the ZVM at {url} ({exc}): check --enroll-url") from None


def enroll(state_dir: Path, vra_id: str, url: str, token: str, ca_fingerprint: str,
           timeout: float = 30.0) -> TlsFiles:
    """Enroll unless already enrolled; returns where the material is."""
    files = TlsFiles(Path(state_dir) / "tls")
    if files.complete():
        return files
    if not token:
        raise EnrollmentError("this VRA has no certificate yet and no enrollment token: give "
                              "--enroll-token-file (the vApp property enroll_token)")
    key = _key(files)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, vra_id[:64])]))
           .sign(key, hashes.SHA256()))
    answer = _post(f"{url.rstrip('/')}/v1/vras/{vra_id}/enroll", token,
                   {"CertificateRequestPem": csr.public_bytes(serialization.Encoding.PEM).decode()}, timeout)
    try:
        site_ca = x509.load_pem_x509_certificate(answer["SiteCaPem"].encode())
        cert = x509.load_pem_x509_certificate(answer["CertificatePem"].encode())
        bundle = answer["TrustBundlePem"].encode()
        cas = parse_bundle(bundle)
        identity = answer["ZvmIdentity"]
    except (KeyError, TypeError, ValueError) as exc:
        raise EnrollmentError(f"the ZVM's enrollment answer is not usable ({exc})") from None
    if fingerprint(site_ca) != ca_fingerprint.lower().replace(":", ""):
        raise EnrollmentError("the CA the ZVM sent is not the one this VRA was installed with "
                              "(--zvm-ca-fingerprint): not enrolling")
    try:
        cert.verify_directly_issued_by(site_ca)
    except Exception:
        raise EnrollmentError("the certificate the ZVM sent is not signed by its site CA") from None
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if vra_id not in san.get_values_for_type(x509.DNSName) or cert.public_key() != key.public_key():
        raise EnrollmentError("the certificate the ZVM sent is not for this VRA's id and key")
    if site_ca not in cas:
        raise EnrollmentError("the trust bundle the ZVM sent lacks its own site CA")
    for path, data in ((files.cert, answer["CertificatePem"].encode()), (files.site_ca, answer["SiteCaPem"].encode()),
                       (files.trust, bundle), (files.zvm, json.dumps({"identity": identity}).encode())):
        write_atomic(path, data)
    return files
