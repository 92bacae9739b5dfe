"""Who may talk to a VRA's gRPC port, and how a VRA proves who it is.

Two modes, chosen by what is configured (``vra serve --enroll-url`` or ``--tls-cert/--tls-key/--tls-ca``,
``--pairing-secret-file``):

- **Mutual TLS** (certificates configured, normally by enrollment: vra_appliance/trust/enroll.py): the server
  asks for a client certificate signed by one of the CAs of its trust bundle (its own site's CA and each
  paired site's); a peer's identity is its certificate's common name or a DNS subject alternative name,
  and a replication Hello must carry that identity as ``peer_id``. Clients verify the server's certificate
  against the same bundle with the peer VRA's id as the expected name, so a VRA's certificate names its VRA
  id. The bundle changes without a restart (``update_trust``, the Control service's UpdateTrust after a
  pairing or an unpairing): new handshakes use it at once, and every call checks that the caller's
  certificate was issued by a CA still in it, so a call over a connection made before an unpairing is
  refused too. With the site CA known (enrolled VRAs), the management services (Control, RecoveryOps) take
  only this site's ZVM (certificate name ``zvm:<site id>``, issued by the site CA); the other VRAs of the
  site may call Freeze and Thaw (a VPG's checkpoint coordinator); a peer site's VRAs only Replication and
  the checksum service.
- **Pairing secret** (no certificates): every call carries the secret in the ``zvr-pairing-secret``
  metadata; a call without it, or with another, is not authenticated. The channel is not encrypted: this
  mode is for a lab or a network that is already private, and for tests.

With neither configured every caller is trusted (a warning is logged at start). In every mode the recovery
VRA also checks that the Hello's peer id is one of the VPG's paired protect VRAs.
"""

from __future__ import annotations

import hmac
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from vra_appliance.fileio import write_atomic

log = logging.getLogger(__name__)

SECRET_KEY = "zvr-pairing-secret"


class _Trust:
    """The trust bundle as last loaded, and a generation that changes with every update (channels made
    before it are rebuilt)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.generation = 0
        self.served = -1  # the generation the gRPC server's credentials were last given
        self.cas: list[x509.Certificate] | None = None


def parse_bundle(pem: bytes) -> list[x509.Certificate]:
    """The CA certificates of a PEM bundle; ``ValueError`` if it holds none or one is not a CA."""
    cas = x509.load_pem_x509_certificates(pem)
    for ca in cas:
        try:
            if not ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                raise ValueError(f"{ca.subject.rfc4514_string()} is not a CA certificate")
        except x509.ExtensionNotFound:
            raise ValueError(f"{ca.subject.rfc4514_string()} is not a CA certificate") from None
    return cas


def _issued_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(ca)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


@dataclass(frozen=True)
class Security:
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None  # the trust bundle (rewritten by update_trust)
    pairing_secret: str | None = None
    site_ca: Path | None = None  # this VRA's own site CA (enrolled): who may manage it
    zvm_identity: str | None = None  # the certificate name of this site's ZVM
    _trust: _Trust = field(default_factory=_Trust, compare=False, repr=False)

    @property
    def tls(self) -> bool:
        return self.cert is not None

    @property
    def generation(self) -> int:
        return self._trust.generation

    def validate(self) -> None:
        given = [p is not None for p in (self.cert, self.key, self.ca)]
        if any(given) and not all(given):
            raise ValueError("TLS needs all three of --tls-cert, --tls-key and --tls-ca")

    # -- trust -----------------------------------------------------------------------------------------------
    def _cas(self) -> list[x509.Certificate]:
        with self._trust.lock:
            if self._trust.cas is None:
                self._trust.cas = parse_bundle(Path(self.ca).read_bytes())
            return self._trust.cas

    def update_trust(self, bundle_pem: bytes) -> int:
        """Trust exactly the CAs of ``bundle_pem`` from now on (new handshakes and every new call); returns
        how many. The bundle must hold this VRA's own site CA (else its ZVM could not reach it again)."""
        if not self.tls:
            raise ValueError("this VRA runs without certificates: there is no trust bundle to update")
        cas = parse_bundle(bundle_pem)
        if self.site_ca is not None:
            own = x509.load_pem_x509_certificate(Path(self.site_ca).read_bytes())
            if own not in cas:
                raise ValueError("the bundle lacks this VRA's own site CA")
        with self._trust.lock:
            write_atomic(Path(self.ca), bundle_pem)
            self._trust.cas = cas
            self._trust.generation += 1
        return len(cas)

    # -- server --------------------------------------------------------------------------------------------
    def _server_config(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(Path(self.key).read_bytes(), Path(self.cert).read_bytes())],
            root_certificates=Path(self.ca).read_bytes())

    def server_credentials(self) -> grpc.ServerCredentials | None:
        if not self.tls:
            return None
        self._trust.served = self._trust.generation

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # gRPC asks before every handshake: a changed bundle is used from the next connection on
            generation = self._trust.generation
            if generation == self._trust.served:
                return None
            self._trust.served = generation
            return self._server_config()

        return grpc.dynamic_ssl_server_credentials(self._server_config(), fetch,
                                                   require_client_authentication=True)

    def _caller_cert(self, context: grpc.ServicerContext) -> x509.Certificate | None:
        pem = (context.auth_context() or {}).get("x509_pem_cert", [])
        return x509.load_pem_x509_certificate(pem[0]) if pem else None

    def caller_names(self, context: grpc.ServicerContext) -> set[str] | None:
        """Names the caller is authenticated as: its certificate's names (TLS), if a CA still trusted
        issued it; ``None`` meaning any name (secret matched, or no security configured); the empty set
        when the caller is not authenticated."""
        if self.tls:
            cert = self._caller_cert(context)
            if cert is None or not any(_issued_by(cert, ca) for ca in self._cas()):
                return set()
            auth = context.auth_context() or {}
            names = {v.decode() for v in auth.get("x509_common_name", [])}
            names |= {v.decode() for v in auth.get("x509_subject_alternative_name", [])}
            return names
        if self.pairing_secret is not None:
            given = dict(context.invocation_metadata() or ()).get(SECRET_KEY, "")
            if hmac.compare_digest(str(given).encode(), self.pairing_secret.encode()):
                return None
            return set()
        return None

    def identify(self, context: grpc.ServicerContext, claimed: str) -> str | None:
        """The caller's identity if it may use ``claimed`` (the Hello's peer id), else None."""
        names = self.caller_names(context)
        if names is None:
            return claimed
        return claimed if claimed in names else None

    def same_site(self, context: grpc.ServicerContext) -> bool:
        """The caller is of this VRA's own site (its ZVM or another of its VRAs): may call Freeze / Thaw."""
        names = self.caller_names(context)
        if names is None or (self.tls and self.site_ca is None):
            return names is None or bool(names)
        if not names:
            return False
        own = x509.load_pem_x509_certificate(Path(self.site_ca).read_bytes())
        return _issued_by(self._caller_cert(context), own)

    def authenticated(self, context: grpc.ServicerContext) -> bool:
        """The caller may manage this VRA (Control, RecoveryOps): with enrolled certificates only this
        site's ZVM; otherwise any authenticated caller."""
        if not self.same_site(context):
            return False
        if self.tls and self.site_ca is not None and self.zvm_identity:
            auth = context.auth_context() or {}
            return self.zvm_identity in {v.decode() for v in auth.get("x509_common_name", [])}
        return True

    # -- client --------------------------------------------------------------------------------------------
    def channel(self, address: str, peer_id: str = "", options: list | None = None) -> grpc.Channel:
        opts = list(options or [])
        if not self.tls:
            return grpc.insecure_channel(address, options=opts)
        creds = grpc.ssl_channel_credentials(
            root_certificates=Path(self.ca).read_bytes(),
            private_key=Path(self.key).read_bytes(),
            certificate_chain=Path(self.cert).read_bytes(),
        )
        if peer_id:
            opts.append(("grpc.ssl_target_name_override", peer_id))
        return grpc.secure_channel(address, creds, options=opts)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((SECRET_KEY, self.pairing_secret),) if self.pairing_secret is not None else ()
