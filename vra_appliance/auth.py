"""Who may talk to a VRA's gRPC port, and how a VRA proves who it is.

Two modes, chosen by what is configured (``vra serve --tls-cert/--tls-key/--tls-ca``, ``--pairing-secret``):

- **Mutual TLS** (certificates configured): the server asks for a client certificate signed by the CA;
  a peer's identity is its certificate's common name or a DNS subject alternative name, and a replication
  Hello must carry that identity as ``peer_id``. Clients verify the server's certificate against the CA
  with the peer VRA's id as the expected name, so a VRA's certificate names its VRA id.
- **Pairing secret** (no certificates): every call carries the secret in the ``zvr-pairing-secret``
  metadata; a call without it, or with another, is not authenticated. The channel is not encrypted: this
  mode is for a lab or a network that is already private.

With neither configured every caller is trusted (a warning is logged at start). In every mode the recovery
VRA also checks that the Hello's peer id is one of the VPG's paired protect VRAs.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)

SECRET_KEY = "zvr-pairing-secret"


@dataclass(frozen=True)
class Security:
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    pairing_secret: str | None = None

    @property
    def tls(self) -> bool:
        return self.cert is not None

    def validate(self) -> None:
        given = [p is not None for p in (self.cert, self.key, self.ca)]
        if any(given) and not all(given):
            raise ValueError("TLS needs all three of --tls-cert, --tls-key and --tls-ca")

    # -- server --------------------------------------------------------------------------------------------
    def server_credentials(self) -> grpc.ServerCredentials | None:
        if not self.tls:
            return None
        return grpc.ssl_server_credentials(
            [(Path(self.key).read_bytes(), Path(self.cert).read_bytes())],
            root_certificates=Path(self.ca).read_bytes(),
            require_client_auth=True,
        )

    def caller_names(self, context: grpc.ServicerContext) -> set[str] | None:
        """Names the caller is authenticated as: its certificate's names (TLS); ``None`` meaning any name
        (secret matched, or no security configured); the empty set when the caller is not authenticated."""
        if self.tls:
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

    def authenticated(self, context: grpc.ServicerContext) -> bool:
        names = self.caller_names(context)
        return names is None or bool(names)

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
