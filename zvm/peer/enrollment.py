"""VRA enrollment: how a VRA gets its certificate from this site's CA without its key ever leaving it, and
what the ZVM gives the VRAs to trust.

At install the ZVM makes a one-time **enrollment token** for the VRA (``EnrollmentTokens.create``): random,
bound to the VRA id, valid 24 h, single use, and kept only as its SHA-256 (``DATA_DIR/pki/enrollment.json``,
0600). The token and the site CA's fingerprint go to the VRA as vApp properties. The VRA makes its key,
sends a certificate request with the token (``POST /v1/vras/{id}/enroll``), checks the CA it receives
against the fingerprint, and from then on serves 4005 with mutual TLS.

``enroll`` signs the request (CN and DNS name = the VRA id, its static IP as an IP name) and answers with
the certificate, this site's CA, the **trust bundle** (this site's CA and every paired site's CA) and the
name this site's ZVM has when it calls the VRA's Control service (``zvm:<site id>``, ``control_identity``).
The ZVM's client certificate for those calls is ``DATA_DIR/pki/vra-control.pem``, from the same CA.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from zvm import models as m
from zvm.errors import AuthenticationError, ValidationError, ZvmError
from zvm.tls import SiteCA, ca_fingerprint
from zvm.vra_control import ControlTls, VraRef

TOKEN_TTL_S = 24 * 3600
_lock = threading.Lock()  # one ZVM process; its API threads and task runner share the file


def control_identity(site_identifier: str) -> str:
    """The certificate name of this site's ZVM when it calls its VRAs' Control service."""
    return f"zvm:{site_identifier}"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class EnrollmentTokens:
    """The enrollment tokens of this site's VRAs (hashed) and which VRAs enrolled (their certificate's
    fingerprint), in one JSON file."""

    def __init__(self, pki_dir: Path):
        self.path = Path(pki_dir) / "enrollment.json"

    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            data = {}
        data.setdefault("tokens", {})
        data.setdefault("enrolled", {})
        return data

    def _save(self, data: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, self.path)

    def create(self, vra_id: str, ttl_s: float = TOKEN_TTL_S) -> str:
        """A new token for the VRA (any earlier one of it is void); the clear token is only returned."""
        token = secrets.token_urlsafe(32)
        with _lock:
            data = self._load()
            data["tokens"][vra_id] = {"sha256": _hash(token), "expires": time.time() + ttl_s, "used": False}
            self._save(data)
        return token

    def check(self, vra_id: str, token: str) -> None:
        """Raises ``AuthenticationError`` (401) unless ``token`` is the VRA's unused, unexpired token."""
        with _lock:
            self._check(self._load(), vra_id, token)

    @staticmethod
    def _check(data: dict, vra_id: str, token: str) -> None:
        entry = data["tokens"].get(vra_id)
        if entry is None or not hmac.compare_digest(entry["sha256"], _hash(token)):
            raise AuthenticationError(f"the enrollment token is not VRA {vra_id}'s: use the token the ZVM "
                                      "gave it at install (vApp property enroll_token)",
                                      code="EnrollmentTokenInvalid")
        if entry["used"]:
            raise AuthenticationError(f"VRA {vra_id}'s enrollment token was used already: a token enrolls "
                                      "once; reinstall the VRA for a new one", code="EnrollmentTokenUsed")
        if entry["expires"] < time.time():
            raise AuthenticationError(f"VRA {vra_id}'s enrollment token expired (tokens last 24 h): "
                                      "reinstall the VRA for a new one", code="EnrollmentTokenExpired")

    def consume(self, vra_id: str, token: str, cert_fingerprint: str) -> None:
        """Check the token and, in the same step, mark it used and the VRA enrolled."""
        with _lock:
            data = self._load()
            self._check(data, vra_id, token)
            data["tokens"][vra_id]["used"] = True
            data["enrolled"][vra_id] = cert_fingerprint
            self._save(data)

    def enrolled(self, vra_id: str) -> bool:
        return vra_id in self._load()["enrolled"]

    def forget(self, vra_id: str) -> None:
        """At uninstall: the VRA's token and enrollment are gone."""
        with _lock:
            data = self._load()
            data["tokens"].pop(vra_id, None)
            data["enrolled"].pop(vra_id, None)
            self._save(data)


def trust_bundle(own_ca_pem: str, peer_ca_pems: list[str]) -> str:
    """This site's CA, then each paired site's (deduplicated, in order)."""
    out: list[str] = []
    for pem in [own_ca_pem, *peer_ca_pems]:
        pem = pem.strip() + "\n"
        if pem.strip() and pem not in out:
            out.append(pem)
    return "".join(out)


class SiteEnrollment:
    """This site's side of VRA certificates: tokens, signing, the Control client certificate."""

    def __init__(self, pki_dir: Path, site_name: str, site_identifier: str):
        self.dir = Path(pki_dir)
        self.ca = SiteCA(self.dir, site_name)
        self.site_identifier = site_identifier
        self.tokens = EnrollmentTokens(self.dir)

    def ca_fingerprint(self) -> str:
        return ca_fingerprint(self.ca.pem)

    def enroll(self, vra_id: str, token: str, csr_pem: str, ip_address: str, peer_ca_pems: list[str]) -> dict:
        self.tokens.check(vra_id, token)  # a refused token changes nothing, and costs no signature
        names = [vra_id] + ([ip_address] if ip_address else [])
        try:
            cert = self.ca.sign_csr(csr_pem.encode(), vra_id, names)
        except ValueError as exc:
            raise ValidationError(f"CertificateRequestPem is not a valid PEM certificate request ({exc}): "
                                  "send the request the VRA made", field="CertificateRequestPem") from None
        self.tokens.consume(vra_id, token, ca_fingerprint(cert))
        self.control_tls()  # the ZVM's certificate for this VRA's Control service, made before it is needed
        return {"VraIdentifier": vra_id, "CertificatePem": cert, "SiteCaPem": self.ca.pem,
                "TrustBundlePem": trust_bundle(self.ca.pem, peer_ca_pems),
                "ZvmIdentity": control_identity(self.site_identifier)}

    def control_tls(self) -> ControlTls:
        """The ZVM's client certificate for its VRAs' Control service, made on first use."""
        cert, key = self.dir / "vra-control.pem", self.dir / "vra-control.key"
        if not cert.exists() or not key.exists():
            ident = control_identity(self.site_identifier)
            self.ca.issue(ident, [ident.replace(":", "-")], cert, key)
        return ControlTls(roots=self.ca.cert_path.read_bytes(), key=key.read_bytes(), cert=cert.read_bytes())


def site_enrollment(zvm) -> SiteEnrollment:
    """The ZVM's ``SiteEnrollment`` (the same CA as its peer service, DATA_DIR/pki)."""
    site = zvm.local_site()
    zvm.peer_pki()  # the CA is made there first, with the site's name
    return SiteEnrollment(Path(zvm.config.data_dir) / "pki", site.name, site.identifier)


def peer_ca_pems() -> list[str]:
    return [p.certificate_pem for p in m.PeerSite.select().order_by(m.PeerSite.id) if p.certificate_pem]


def control_tls_for(zvm) -> Callable[[str], ControlTls | None]:
    """For GrpcVraControl: the Control client certificate for an enrolled VRA, None for another."""

    def tls(vra_id: str) -> ControlTls | None:
        enrollment = site_enrollment(zvm)
        return enrollment.control_tls() if enrollment.tokens.enrolled(vra_id) else None

    return tls


def push_trust(zvm) -> list[str]:
    """Give every enrolled VRA of this site the current trust bundle (after a pairing or an unpairing);
    returns what failed, one line per VRA (a VRA that is down gets the bundle when it enrolls again or
    the next push)."""
    enrollment = site_enrollment(zvm)
    bundle = trust_bundle(enrollment.ca.pem, peer_ca_pems())
    failed = []
    for vra in m.Vra.select().where(m.Vra.site == zvm.local_site()):
        if not enrollment.tokens.enrolled(vra.identifier):
            continue
        try:
            zvm.vra_control.update_trust(VraRef(vra.identifier, vra.control_address, vra.name), bundle)
        except ZvmError as exc:
            failed.append(f"{vra.name}: {exc}")
    return failed
