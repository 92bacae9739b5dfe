"""Calling a paired site's peer service (zvm/peer/service.py).

``pair`` runs before any trust exists: the pairing token ends with the first 16 hex digits of the peer's
certificate fingerprint, checked on the connection the token is then sent over, so the token only ever
reaches the ZVM that made it; the CA the peer sends back must have issued that certificate. Every later
call is mutual TLS: this site's certificate as the client's, the peer's CA as the only trusted one.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl

from zvm.errors import AuthenticationError, ConflictError, PermanentError, TransientError, ValidationError
from zvm.peer.pki import SitePki, issued_by

_BY_STATUS = {400: ValidationError, 401: AuthenticationError, 409: ConflictError}


class PeerClient:
    def __init__(self, host: str, port: int, pki: SitePki, peer_ca_pem: str | None = None, timeout: float = 10.0):
        self.host, self.port, self.pki, self.peer_ca_pem, self.timeout = host, port, pki, peer_ca_pem, timeout

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def _exchange(self, conn: http.client.HTTPSConnection, method: str, path: str, body: dict | None) -> dict:
        data = json.dumps(body or {}).encode() if method == "POST" else None
        try:
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        except ssl.SSLError as exc:
            raise AuthenticationError(f"the ZVM at {self.where} and this one do not trust each other's "
                                      f"certificates ({exc.reason or exc}): unpair and pair the sites again") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise TransientError(f"the ZVM at {self.where} did not answer ({exc}): check the address and that "
                                 "its peer service (port 9081) is reachable") from exc
        finally:
            conn.close()
        try:
            payload = json.loads(raw or b"{}")
        except ValueError:
            payload = {"Message": raw[:200].decode(errors="replace")}
        if resp.status >= 400:
            cls = _BY_STATUS.get(resp.status, TransientError if resp.status >= 500 else PermanentError)
            detail = payload.get("Detail")
            raise cls(f"the ZVM at {self.where} refused: {payload.get('Message', resp.status)}",
                      code=payload.get("Code"), detail=detail if isinstance(detail, dict) else None)
        return payload

    def pair(self, token: str, site: dict, ca_pem: str) -> dict:
        """Send the token, this site and its CA; returns the peer's site and CA (checked)."""
        if "." not in token:
            raise ValidationError("this is not a pairing token: copy the whole token the other site generated",
                                  field="Token")
        pin = token.rsplit(".", 1)[1].lower()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # no trust yet: the token's fingerprint decides
        conn = http.client.HTTPSConnection(self.host, self.port, context=ctx, timeout=self.timeout)
        try:
            conn.connect()
        except OSError as exc:
            raise TransientError(f"the ZVM at {self.where} cannot be reached ({exc}): check the address and "
                                 "that port 9081 is open") from exc
        der = conn.sock.getpeercert(binary_form=True)
        if not hashlib.sha256(der).hexdigest().startswith(pin):
            conn.close()
            raise AuthenticationError(f"the ZVM at {self.where} is not the one that generated this token (its "
                                      "certificate differs): check the address")
        reply = self._exchange(conn, "POST", "/peer/v1/pair", {"Token": token, "Site": site, "CaPem": ca_pem})
        if not issued_by(der, reply.get("CaPem", "")):
            raise AuthenticationError(f"the ZVM at {self.where} sent a CA that did not issue its certificate")
        return reply

    def _mutual(self) -> http.client.HTTPSConnection:
        if not self.peer_ca_pem:
            raise AuthenticationError(f"no CA is known for {self.where}: pair first")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False  # the pinned CA is the trust: addresses change (NAT, renames)
        ctx.load_verify_locations(cadata=self.peer_ca_pem)
        ctx.load_cert_chain(self.pki.cert, self.pki.key)
        return http.client.HTTPSConnection(self.host, self.port, context=ctx, timeout=self.timeout)

    def ping(self) -> dict:
        return self._exchange(self._mutual(), "GET", "/peer/v1/ping", None)

    def inventory(self) -> dict:
        return self._exchange(self._mutual(), "GET", "/peer/v1/inventory", None)

    def unpair(self) -> dict:
        return self._exchange(self._mutual(), "POST", "/peer/v1/unpair", {})

    def recover_vpg(self, request: dict) -> dict:
        """Ask the peer to set up a VPG's recover role; returns its VRA (VraIdentifier, Address, Name)."""
        return self._exchange(self._mutual(), "POST", "/peer/v1/vpgs/recover", request)

    def remove_vpg(self, vpg: str) -> dict:
        return self._exchange(self._mutual(), "POST", "/peer/v1/vpgs/remove", {"Vpg": vpg})

    def vpg_status(self, vpg: str) -> dict:
        return self._exchange(self._mutual(), "POST", "/peer/v1/vpgs/status", {"Vpg": vpg})

    def order_operation(self, vpg: str, kind: str, params: dict, user: str) -> str:
        """Order a recovery operation (FailoverTest, Failover, Move) or its next step (FailoverTestStop,
        FailoverCommit...) on the site the VPG recovers to; returns its task's identifier there."""
        return self._exchange(self._mutual(), "POST", "/peer/v1/vpgs/order",
                              {"Vpg": vpg, "Kind": kind, "Params": params, "User": user})["TaskIdentifier"]

    def task(self, task_identifier: str) -> dict:
        """A task of the peer that concerns a VPG this site protects (a forwarded operation's): its row's
        fields ({"Task": {...}})."""
        return self._exchange(self._mutual(), "POST", "/peer/v1/task", {"TaskIdentifier": task_identifier})

    def note_checkpoint(self, vpg: str, checkpoint_id: str) -> dict:
        """Ask the recovery site for a durable checkpoint as its journal holds it; it stores the row too
        (zvm/orchestration/checkpoints.py). Returns the entry (checkpoints_to_json's form)."""
        return self._exchange(self._mutual(), "POST", "/peer/v1/vpgs/checkpoint",
                              {"Vpg": vpg, "CheckpointIdentifier": checkpoint_id})

    def discard_journal(self, vpg: str, reason: str, user: str) -> dict:
        """Ask the recovery site to discard the VPG's corrupt recovery journal (zvm.orchestration.journal_repair);
        refused (409) when the journal there is healthy."""
        return self._exchange(self._mutual(), "POST", f"/peer/v1/vpgs/{vpg}/discard-journal",
                              {"Vpg": vpg, "Reason": reason, "User": user})

    def vpg_recovery(self, vpg: str, action: str, body: dict | None = None) -> dict:
        """A recovery operation's step on the peer, the VPG's protected site (zvm.orchestration.protected_side)."""
        return self._exchange(self._mutual(), "POST", "/peer/v1/vpgs/recovery",
                              {**(body or {}), "Vpg": vpg, "Action": action})
