"""The peer service on 9081: what another site's ZVM calls. JSON over HTTPS; client certificates optional
at the TLS layer and required by every call but pairing.

    POST /peer/v1/pair       token + the caller's site and CA  ->  this site and its CA     (no client cert)
    GET  /peer/v1/ping       -> this site                                                    (paired cert)
    GET  /peer/v1/inventory  -> this site's hosts, clusters, datastores, networks, folders   (paired cert)
    POST /peer/v1/unpair     forget the caller                                               (paired cert)
    POST /peer/v1/vpgs/recover   set up a VPG's recover role on this site's VRA -> that VRA  (paired cert)
    POST /peer/v1/vpgs/remove    remove a VPG from this site's VRAs                           (paired cert)
    POST /peer/v1/vpgs/status    a VPG's recover role and journal checkpoints here           (paired cert)
    POST /peer/v1/vpgs/recovery  a recovery operation's step on this, the protected, site    (paired cert)
                                 (zvm.orchestration.protected_side: begin, shutdown, rollback, commit, end)
    POST /peer/v1/vpgs/{id}/discard-journal  discard the VPG's corrupt recovery journal here       (paired cert)
                                 (zvm.orchestration.journal_repair; 409 when the journal is healthy)

TLS asks every client for a certificate and verifies one that is given against the CAs of the paired
sites (the trust store is rebuilt on each handshake, so pairing and unpairing take effect at once); the
handler then finds which paired site issued it. A pairing token is used once, before it expires, and is
checked against its stored hash.

``PeerServer`` is a ``start()`` / ``stop()`` loop of the ZVM; ``port`` is the bound port (0 picks one).
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from zvm import db as zdb
from zvm import models as m
from zvm.errors import AuthenticationError, ConflictError, NotFoundError, ValidationError, ZvmError
from zvm.orchestration import checkpoints, operations, protected_side
from zvm.orchestration.journal_repair import discard_on_this_site
from zvm.orchestration.mirror import upsert_mirror
from zvm.orchestration.tasks import create_task
from zvm.orchestration.vpgs import recover_locally
from zvm.peer.messages import RecoverRequest, checkpoints_to_json, inventory_snapshot, site_info
from zvm.peer.pki import SitePki, issued_by
from zvm.placement import installed_vras, vra_ref

log = logging.getLogger("zvm.peer")
MAX_BODY = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    server_version = "zvm-peer"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # the ZVM's logger, not stderr
        log.debug("%s %s", self.address_string(), fmt % args)

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        raw = self.headers.get("Content-Length") or "0"
        if not raw.isdigit():
            raise ValidationError("Content-Length must be a number of bytes")
        length = int(raw)
        if length > MAX_BODY:
            raise ValidationError("the request is too large")
        try:
            data = json.loads(self.rfile.read(length) or b"{}")
        except (ValueError, RecursionError) as exc:
            raise ValidationError(f"the body is not JSON: {str(exc)[:100]}") from None
        if not isinstance(data, dict):
            raise ValidationError("the body must be a JSON object")
        return data

    def _caller(self) -> m.PeerSite:
        der = self.connection.getpeercert(binary_form=True)
        if not der:
            raise AuthenticationError("this call needs the client certificate of a paired site: pair first")
        for peer in m.PeerSite.select(m.PeerSite, m.Site).join(m.Site):
            if peer.certificate_pem and issued_by(der, peer.certificate_pem):
                return peer
        raise AuthenticationError("the client certificate is not from a paired site")

    def _dispatch(self, method: str) -> None:
        service: PeerService = self.server.peer_service
        try:
            zdb.connect(service.zvm.db)
            route = (method, self.path.split("?", 1)[0])
            if route == ("POST", "/peer/v1/pair"):
                self._reply(200, service.pair(self._body(), self.client_address[0]))
            elif route == ("GET", "/peer/v1/ping"):
                self._reply(200, service.ping(self._caller()))
            elif route == ("GET", "/peer/v1/inventory"):
                self._reply(200, service.inventory(self._caller()))
            elif route == ("POST", "/peer/v1/unpair"):
                self._reply(200, service.unpaired_by(self._caller()))
            elif route == ("POST", "/peer/v1/vpgs/recover"):
                self._reply(200, service.recover_vpg(self._caller(), self._body()))
            elif route == ("POST", "/peer/v1/vpgs/remove"):
                self._reply(200, service.remove_vpg(self._caller(), self._body()))
            elif route == ("POST", "/peer/v1/vpgs/status"):
                self._reply(200, service.vpg_status(self._caller(), self._body()))
            elif route == ("POST", "/peer/v1/vpgs/order"):
                self._reply(200, service.order_operation(self._caller(), self._body()))
            elif route == ("POST", "/peer/v1/task"):
                self._reply(200, service.task(self._caller(), self._body()))
            elif route == ("POST", "/peer/v1/vpgs/checkpoint"):
                self._reply(200, service.note_checkpoint(self._caller(), self._body()))
            elif route == ("POST", "/peer/v1/vpgs/recovery"):
                self._reply(200, service.vpg_recovery(self._caller(), self._body()))
            elif (route[0] == "POST" and route[1].startswith("/peer/v1/vpgs/")
                  and route[1].endswith("/discard-journal")):
                vpg = route[1][len("/peer/v1/vpgs/"):-len("/discard-journal")]
                self._reply(200, service.discard_journal(self._caller(), vpg, self._body()))
            else:
                self._reply(404, {"Code": "NotFound", "Message": f"no {method} {self.path} on the peer service"})
        except ZvmError as exc:
            self._reply(exc.http_status, {"Code": exc.code, "Message": str(exc),
                                          **({"Detail": exc.detail} if exc.detail else {})})
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            # A paired site's body of the wrong shape (the handlers read it as they go): its fault, not ours.
            log.warning("peer service: %s %s: malformed body (%s: %s)", method, self.path, type(exc).__name__, exc)
            self._reply(400, {"Code": "InvalidRequest",
                              "Message": f"the body is malformed ({type(exc).__name__}): check the fields"})
        except Exception:  # noqa: BLE001 - a peer gets an answer, the log gets the details
            log.exception("peer service: %s %s failed", method, self.path)
            self._reply(500, {"Code": "InternalError", "Message": "the peer ZVM failed; see its log"})
        finally:
            service.zvm.db.close()

    def do_GET(self):  # noqa: N802
        self._dispatch("GET")

    def do_POST(self):  # noqa: N802
        self._dispatch("POST")


# what a forwarded operation's task shows on the site that ordered it (zvm/api/recovery.py renders it)
TASK_FIELDS = ("identifier", "kind", "state", "progress", "step", "initiated_by", "created_at", "started_at",
               "completed_at", "vpg", "vra", "site", "result", "error_code", "error_message")


def _vpg_id(body: dict) -> str:
    vpg = body.get("Vpg") or body.get("vpg")
    if not isinstance(vpg, str) or not vpg:
        raise ValidationError("name the VPG (Vpg)")
    return vpg


class PeerVpgs:
    """The recovery side of a paired site's VPGs (its VRAs are this ZVM's)."""

    def recover_vpg(self, caller: m.PeerSite, body: dict) -> dict:
        req = RecoverRequest.from_json(body)
        local = self.zvm.local_site()
        vra, paths = recover_locally(local, req, self.zvm.vra_control)
        now = time.time()
        with zdb.transaction():
            if req.vpg_doc is not None:
                upsert_mirror(req.vpg, req.vpg_doc, caller.site, local, vra.vra_id, paths)
            m.Event.create(kind="ConfigureRecovery", category="Vpg", user="peer:" + caller.site.name,
                           description=f"Recovery of VPG {req.name} from site {caller.site.name} set up on {vra.name}",
                           entity_id=req.vpg, result="Succeeded", started_at=now, completed_at=now)
        return {"VraIdentifier": vra.vra_id, "Address": vra.address, "Name": vra.name, "ReplicaPaths": paths}

    def remove_vpg(self, caller: m.PeerSite, body: dict) -> dict:
        vpg = _vpg_id(body)
        unreached = []
        for vra in installed_vras(self.zvm.local_site()):
            try:
                self.zvm.vra_control.remove_vpg(vra_ref(vra), vpg)
            except ZvmError:
                unreached.append(vra.name)
        with zdb.transaction():  # the mirror of the caller's VPG goes with it
            m.Vpg.delete().where(m.Vpg.identifier == vpg, m.Vpg.protected_site == caller.site).execute()
        return {"Unreached": unreached}

    def vpg_recovery(self, caller: m.PeerSite, body: dict) -> dict:
        return protected_side.handle(self.zvm, caller.site, _vpg_id(body), body)

    def discard_journal(self, caller: m.PeerSite, vpg: str, body: dict) -> dict:
        """The protected site's ForceSyncVpg found the journal here corrupt: discard it (only a paired site's
        VPG that recovers here; a healthy journal is refused)."""
        if not vpg or "/" in vpg:
            raise ValidationError("name the VPG in the path: /peer/v1/vpgs/{id}/discard-journal")
        mirror = m.Vpg.get_or_none(m.Vpg.identifier == vpg)
        if mirror is not None and mirror.protected_site_id != caller.site_id:
            raise NotFoundError(f"site {caller.site.name} protects no VPG {vpg}", code="VpgNotFound")
        user = f"peer:{caller.site.name}:{str(body.get('User') or '')[:64]}"
        return discard_on_this_site(self.zvm, vpg, str(body.get("Reason") or "")[:512], user)

    def _mirror(self, caller: m.PeerSite, vpg: str) -> m.Vpg:
        mirror = m.Vpg.get_or_none(m.Vpg.identifier == vpg, m.Vpg.protected_site == caller.site)
        if mirror is None:
            raise NotFoundError(f"site {caller.site.name} protects no VPG {vpg} that recovers here",
                                code="VpgNotFound")
        return mirror

    def order_operation(self, caller: m.PeerSite, body: dict) -> dict:
        """A recovery operation ordered on the protected site's ZVM, forwarded here where the VPG recovers
        (zvm/api/recovery.py): admitted and queued as if ordered here, by the caller's user."""
        vpg = self._mirror(caller, _vpg_id(body))
        kind, params = body.get("Kind"), body.get("Params") or {}
        if not isinstance(params, dict):
            raise ValidationError("Params must be an object")
        user = f"peer:{caller.site.name}:{str(body.get('User') or '')[:64]}"
        with zdb.transaction():
            if kind in operations.KINDS:
                task = operations.start_operation(vpg, kind, params, self.zvm.local_site(), user=user)
            elif kind in operations.NEXT:
                task = operations.order_next(vpg, kind, params, self.zvm.local_site(), user=user)
            else:
                raise ValidationError(f"Kind {kind!r}: one of {', '.join((*operations.KINDS, *operations.NEXT))}")
        self.zvm.wake_tasks()
        return {"TaskIdentifier": task.identifier}

    def task(self, caller: m.PeerSite, body: dict) -> dict:
        row = m.Task.get_or_none(m.Task.identifier == str(body.get("TaskIdentifier") or ""))
        if row is None or not row.vpg or not m.Vpg.select().where(
                m.Vpg.identifier == row.vpg, m.Vpg.protected_site == caller.site).exists():
            raise NotFoundError("no such task of a VPG your site protects", code="TaskNotFound")
        return {"Task": {f: getattr(row, f) for f in TASK_FIELDS}}

    def note_checkpoint(self, caller: m.PeerSite, body: dict) -> dict:
        """A checkpoint of the caller's VPG that is durable here: its journal entry, stored in the mirror."""
        vpg = _vpg_id(body)
        mirror = self._mirror(caller, vpg)
        entry = checkpoints.journal_entry(self.zvm, vpg, str(body.get("CheckpointIdentifier") or ""))
        checkpoints.store(mirror, entry)
        return checkpoints_to_json([entry])[0]

    def vpg_status(self, caller: m.PeerSite, body: dict) -> dict:
        vpg = _vpg_id(body)
        # what this site's monitoring read from the recovery VRA within the last second or so (it asks every
        # second): the protected site asks every second per VPG, and must not cost a Status call per VRA each
        seen = getattr(getattr(self.zvm, "monitor", None), "recover_report", lambda v: None)(vpg)
        if seen is not None:
            return seen
        for vra in installed_vras(self.zvm.local_site()):
            ref = vra_ref(vra)
            try:
                role = self.zvm.vra_control.status(ref).get(vpg, {}).get("recover")
            except ZvmError:
                continue
            if role is None:
                continue
            try:
                listed = checkpoints_to_json(self.zvm.vra_control.list_checkpoints(ref, vpg))
            except ZvmError:
                listed = None  # a journal that cannot list them (corrupt): the role's state says why
            return {"Recover": role, "Checkpoints": listed, "Vra": vra.identifier}
        return {"Recover": None, "Checkpoints": [], "Vra": None}


class PeerService(PeerVpgs):
    """The operations behind the peer endpoints, on this ZVM's database."""

    def __init__(self, zvm):
        self.zvm = zvm

    def pair(self, body: dict, client: str = "") -> dict:
        """Pair with the calling site. Every attempt is an event with the claimed site and the address."""
        try:
            return self._pair(body, client)
        except ZvmError as exc:
            site = body.get("Site") if isinstance(body.get("Site"), dict) else {}
            name = site.get("SiteName") if isinstance(site.get("SiteName"), str) else ""
            now = time.time()
            with zdb.transaction():
                m.Event.create(kind="PairedBySite", category="Site", user=f"peer:{name}"[:128], client=client[:255],
                               description=f"Pairing attempt by site {name[:64]!r} refused", result="Refused",
                               detail=f"{exc.code}: {exc}"[:1000], started_at=now, completed_at=now)
            raise

    def _pair(self, body: dict, client: str) -> dict:
        token, site, ca_pem = body.get("Token"), body.get("Site"), body.get("CaPem")
        if not isinstance(token, str) or not token or not isinstance(ca_pem, str) or "BEGIN CERTIFICATE" not in ca_pem:
            raise ValidationError("pairing needs Token, Site and CaPem")
        if not isinstance(site, dict):
            raise ValidationError("Site must be an object: the caller's SiteIdentifier, SiteName, Address ...")
        for key in ("SiteIdentifier", "SiteName"):
            if not isinstance(site.get(key), str) or not site[key] or len(site[key]) > 255:
                raise ValidationError(f"pairing needs the caller's {key}: a string of 1..255 characters")
        for key in ("Location", "Address", "Version"):
            if not isinstance(site.get(key, ""), str):
                raise ValidationError(f"Site.{key} must be a string")
        for key in ("ApiPort", "PeerPort"):
            port = site.get(key)
            if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536):
                raise ValidationError(f"Site.{key} must be a TCP port (1..65535)")
        secret = token.split(".", 1)[0]
        now = time.time()
        local = self.zvm.local_site()
        with zdb.transaction():
            row = m.PairingToken.get_or_none(m.PairingToken.token_hash == m.token_hash(secret))
            if row is None or row.used_at is not None or row.expires_at < now:
                raise AuthenticationError("the pairing token is wrong, used or expired: generate a new one on "
                                          "this site (POST /v1/peersites/generatetoken) and pair with it")
            if site["SiteIdentifier"] == local.identifier:
                raise ConflictError("a site cannot pair with itself")
            if m.Site.select().where(m.Site.identifier == site["SiteIdentifier"]).exists():
                raise ConflictError(f"site {site['SiteName']} is paired already: unpair it first")
            row.used_at = now
            row.save()
            peer_site = m.Site.create(identifier=site["SiteIdentifier"], name=str(site["SiteName"])[:255],
                                      location=str(site.get("Location", ""))[:255],
                                      zvm_address=str(site.get("Address", ""))[:255],
                                      api_port=int(site.get("ApiPort") or 9080),
                                      peer_port=int(site.get("PeerPort") or 9081),
                                      version=str(site.get("Version", ""))[:32])
            m.PeerSite.create(site=peer_site, host_name=peer_site.zvm_address, port=peer_site.peer_port,
                              certificate_pem=ca_pem, state="Paired", paired_at=now, last_seen=now)
            m.Event.create(kind="PairedBySite", category="Site", user="peer:" + peer_site.name, client=client[:255],
                           description=f"Site {peer_site.name} paired with this site", entity_id=peer_site.identifier,
                           result="Succeeded", started_at=now, completed_at=now)
            create_task("UpdateVraTrust", site=peer_site.identifier)  # this site's VRAs trust its CA
        log.info("paired with site %s (%s)", peer_site.name, peer_site.identifier)
        return {"Site": site_info(local), "CaPem": self.zvm.peer_pki().ca_pem}

    def ping(self, caller: m.PeerSite) -> dict:
        with zdb.transaction():
            m.PeerSite.update(last_seen=time.time(), state="Paired").where(
                m.PeerSite.id == caller.id, m.PeerSite.state != "Unpairing").execute()
        return {"Site": site_info(self.zvm.local_site()), "Time": time.time()}

    def inventory(self, caller: m.PeerSite) -> dict:
        return {"Site": site_info(self.zvm.local_site()), "Inventory": inventory_snapshot(self.zvm.local_site())}

    def unpaired_by(self, caller: m.PeerSite) -> dict:
        used = m.Vpg.select().where((m.Vpg.recovery_site == caller.site) | (m.Vpg.protected_site == caller.site))
        if used.exists():
            raise ConflictError("VPGs replicate between the sites: delete them before unpairing")
        now = time.time()
        with zdb.transaction():
            name, identifier = caller.site.name, caller.site.identifier
            caller.site.delete_instance()  # cascades to the peer row and its inventory
            m.Event.create(kind="UnpairedBySite", category="Site", user="peer:" + name,
                           description=f"Site {name} unpaired from this site", entity_id=identifier,
                           result="Succeeded", started_at=now, completed_at=now)
            create_task("UpdateVraTrust", site=identifier)  # this site's VRAs no longer trust its CA
        return {"Unpaired": True}


class PeerServer:
    def __init__(self, zvm, host: str, port: int):
        self.zvm = zvm
        self.host = host
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def _context(self, pki: SitePki) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(pki.cert, pki.key)
        ctx.verify_mode = ssl.CERT_OPTIONAL  # pairing comes without one; every other call checks it
        zdb.connect(self.zvm.db)
        try:
            cas = [p.certificate_pem for p in m.PeerSite.select() if p.certificate_pem]
        finally:
            self.zvm.db.close()
        if cas:
            ctx.load_verify_locations(cadata="\n".join(cas))
        return ctx

    def start(self) -> None:
        if self._server is not None:
            return
        self._stopping.clear()
        pki = self.zvm.peer_pki()
        base = self._context(pki)

        def per_handshake(sock, server_name, _ctx):
            # The paired CAs as of now. A handshake racing the service's stop (its database may be closed
            # already) or a database error is refused with an alert: an exception here would only be printed.
            if self._stopping.is_set():
                return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
            try:
                sock.context = self._context(pki)
            except Exception:
                log.warning("peer service: a handshake was refused: the paired sites could not be read",
                            exc_info=True)
                return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
            return None

        base.sni_callback = per_handshake
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

            def get_request(inner):
                conn, addr = inner.socket.accept()
                conn.settimeout(30)
                # The handshake happens in the request's thread, so a slow client cannot stall accept().
                return base.wrap_socket(conn, server_side=True, do_handshake_on_connect=False), addr

            def handle_error(inner, request, client_address):
                log.info("peer service: connection from %s failed", client_address[0], exc_info=True)

        self._server = Server((self.host, self.port), _Handler)
        self._server.peer_service = PeerService(self.zvm)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="zvm-peer", daemon=True)
        self._thread.start()
        log.info("peer service listening on %s:%d", self.host, self.port)

    def stop(self) -> None:
        self._stopping.set()  # before the database it reads may close
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
