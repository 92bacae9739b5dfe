"""`vra serve`: the appliance daemon, one per host.

It listens for gRPC on port 4005 (zvr.vra.v1 Replication from peer VRAs, Control from the ZVM and from a
VPG's checkpoint coordinator), accepts the split streams of the host's IO filters, and runs whatever roles
the ZVM gave it: protect (sequence, batch, compress, throttle and stream the VPG's writes; coordinate its
checkpoints; run its syncs) and recover (journal, promoter, point-in-time images over NBD; answer the
delta syncs' checksum requests, ``zvr.vra.sync.v1.Checksums``). Roles are kept in the state directory and
taken up again on restart; a protect role taken up again needs a delta sync (docs/SYNC.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc

from vra_appliance.config import ProtectRole, Roles
from vra_appliance.iofilter.nbd import NbdServer
from vra_appliance.metrics import DEFAULT_LISTEN as DEFAULT_METRICS_LISTEN
from vra_appliance.metrics import MetricsServer, VraCollector
from vra_appliance.protect.side import ProtectSide
from vra_appliance.protect.split_listener import SplitListener
from vra_appliance.protect.syncs import VpgSyncs
from vra_appliance.protect.throttle import SiteThrottle, ThrottledTransport
from vra_appliance.protect.vpg import ProtectedVpg, ProtectSettings
from vra_appliance.proto.v1 import control_pb2_grpc as cpb_grpc
from vra_appliance.proto.v1 import recovery_pb2_grpc as rpb_grpc
from vra_appliance.proto.v1 import replication_pb2_grpc as pb_grpc
from vra_appliance.recover.service.side import RecoverySide
from vra_appliance.rpc.checksums import checksum_handler
from vra_appliance.rpc.control import ControlServicer
from vra_appliance.rpc.recovery_ops import RecoveryOpsServicer
from vra_appliance.stream.transport_grpc import SERVER_OPTIONS, GrpcTransport, ReplicationServicer
from vra_appliance.trust.auth import Security
from vra_appliance.trust.enroll import EnrollmentError, TlsFiles, enroll

log = logging.getLogger("vra.serve")

DEFAULT_PORT = 4005
DEFAULT_STATE_DIR = "/var/lib/zvr/vra"
DEFAULT_SPLIT = "/run/zvr/split.sock"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the VRA daemon: gRPC on port 4005, split streams from the IO filters, protect/recover roles",
        description=(
            "The VRA daemon of one host. It serves gRPC (zvr.vra.v1: Replication between VRAs, Control for "
            "the ZVM) on --listen, takes the split streams of this host's IO filters on --split, and runs the "
            "protect and recover roles the ZVM configures through the Control service (kept in --state-dir "
            "and resumed on restart). Peer VRAs authenticate with mutual TLS when --tls-cert/--tls-key/"
            "--tls-ca are given, or with the certificate it got by enrolling with its ZVM (--enroll-url, "
            "--enroll-token-file, --zvm-ca-fingerprint; kept in --state-dir/tls and reused at restart), "
            "otherwise with a shared pairing secret (--pairing-secret-file or ZVR_PAIRING_SECRET). Stop it "
            "with SIGTERM or Ctrl-C."
        ),
        epilog=(
            "example: vra serve --vra-id esx-01 --split /run/zvr/split.sock --state-dir /var/lib/zvr/vra "
            "--enroll-url https://zvm.example:9080 --enroll-token-file /run/zvr/enroll-token "
            "--zvm-ca-fingerprint 3f0a... --nbd-unix /run/zvr/images.sock"
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--vra-id", default=socket.gethostname(),
                   help="this VRA's id: what peers and the ZVM call it (with TLS, its certificate's name)")
    p.add_argument("--listen", default=f"0.0.0.0:{DEFAULT_PORT}", metavar="HOST:PORT",
                   help="gRPC address; port 0 picks a free one (see --port-file)")
    p.add_argument("--port-file", metavar="PATH", help="write the bound gRPC port here once serving")
    p.add_argument("--split", default=DEFAULT_SPLIT, metavar="ADDRESS",
                   help="where this host's IO filters connect: a unix socket path or HOST:PORT")
    p.add_argument("--no-split", action="store_true", help="take no split streams (a recovery-only VRA)")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR",
                   help="roles, promotion state and scratch files of this VRA")
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="this VRA's certificate (enables mutual TLS)")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="the certificate's private key")
    p.add_argument("--tls-ca", type=Path, metavar="PEM", help="the CA that signs every paired VRA's certificate")
    p.add_argument("--enroll-url", metavar="URL",
                   help="enroll with the ZVM at this URL (https://ZVM:9080): at first start get a certificate "
                        "for a key made here (kept in --state-dir/tls; a restart reuses it), then serve with "
                        "mutual TLS")
    p.add_argument("--enroll-token-file", type=Path, metavar="PATH",
                   help="file holding the one-time enrollment token (vApp property enroll_token); needed "
                        "only until the VRA has its certificate")
    p.add_argument("--zvm-ca-fingerprint", metavar="HEX",
                   help="SHA-256 of the ZVM's site CA certificate (vApp property zvm_ca_fingerprint): the "
                        "enrollment answer must name this CA")
    p.add_argument("--pairing-secret-file", type=Path, metavar="PATH",
                   help="file holding the secret shared by paired VRAs when TLS is not configured "
                        "(or set ZVR_PAIRING_SECRET)")
    p.add_argument("--bandwidth-limit-mbps", type=float, default=0.0, metavar="MB/S",
                   help="the site's bandwidth limit for replication in MB/s, shared by VPG priority; 0: none")
    p.add_argument("--nbd-unix", metavar="PATH", help="serve point-in-time images over NBD on this unix socket")
    p.add_argument("--nbd-tcp", metavar="HOST:PORT", help="serve point-in-time images over NBD on TCP")
    p.add_argument("--align-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="recovery side: abandon a checkpoint a protect VRA has not reached after this long")
    p.add_argument("--dirty-budget-kib", type=int, default=64, metavar="KIB",
                   help="protect side: memory per volume for the extents of writes this VRA had to let go "
                        "(16 bytes each; past it neighbours merge and the bitmap sync resends more)")
    p.add_argument("--metrics-listen", default=DEFAULT_METRICS_LISTEN, metavar="HOST:PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics, without authentication (keep it on "
                        "loopback or a monitoring network); 'off': none")
    p.add_argument("-v", "--verbose", action="store_true", help="log role changes, connections and checkpoints")
    p.set_defaults(func=run)


class Daemon:
    """Everything ``vra serve`` runs, with ``start()`` / ``stop()`` (tests may run it in process)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.vra_id = args.vra_id
        self.state_dir = Path(args.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        secret = None
        enrolled = None
        if getattr(args, "enroll_url", None):
            enrolled = self._enroll(args)
        if enrolled is not None:
            args.tls_cert, args.tls_key, args.tls_ca = enrolled.cert, enrolled.key, enrolled.trust
        if args.pairing_secret_file is not None:
            secret = args.pairing_secret_file.read_text().strip()
        elif os.environ.get("ZVR_PAIRING_SECRET"):
            secret = os.environ["ZVR_PAIRING_SECRET"]
        self.security = Security(args.tls_cert, args.tls_key, args.tls_ca, None if args.tls_cert else secret,
                                 site_ca=enrolled.site_ca if enrolled else None,
                                 zvm_identity=enrolled.zvm_identity() if enrolled else None)
        self.security.validate()
        if not self.security.tls and self.security.pairing_secret is None:
            log.warning("no TLS certificates and no pairing secret: any caller may use this VRA's gRPC port")
        self.throttle = SiteThrottle(args.bandwidth_limit_mbps * 1e6)
        self.nbd = None
        if args.nbd_unix or args.nbd_tcp:
            self.nbd = NbdServer(unix_path=args.nbd_unix, tcp=args.nbd_tcp)
        self.protect = ProtectSide(self.vra_id, self._make_engine, make_syncs=self._make_syncs)
        self.recover = RecoverySide(self.vra_id, self.state_dir, self.nbd, align_timeout=args.align_timeout)
        self.roles_path = self.state_dir / "roles.json"
        self.control = ControlServicer(
            self.vra_id, self.protect, self.recover, self.security,
            save_roles=lambda roles: roles.save(self.roles_path),
        )
        self.recovery_ops = RecoveryOpsServicer(self.control, self.recover, self.nbd, self.state_dir, self.security)
        self.split: SplitListener | None = None
        self.server: grpc.Server | None = None
        self.port = 0
        listen = getattr(args, "metrics_listen", "off") or "off"
        self.metrics = None if listen == "off" else MetricsServer(listen, VraCollector(
            self.vra_id, self.protect, self.recover, lambda: dict(self.control.coordinators),
            lambda: [c for role in list(self.control.roles.protect.values()) for c in role.filter_controls]))

    def _enroll(self, args: argparse.Namespace) -> TlsFiles:
        if not args.zvm_ca_fingerprint:
            raise ValueError("--enroll-url needs --zvm-ca-fingerprint (the vApp property zvm_ca_fingerprint)")
        token = args.enroll_token_file.read_text().strip() if args.enroll_token_file else ""
        try:
            files = enroll(self.state_dir, self.vra_id, args.enroll_url, token, args.zvm_ca_fingerprint)
        except EnrollmentError as exc:
            raise ValueError(str(exc)) from None
        log.info("VRA %s enrolled: certificate from the site CA in %s", self.vra_id, files.dir)
        return files

    def _make_engine(self, role: ProtectRole) -> ProtectedVpg:
        inner = GrpcTransport(role.recover_peer.address, peer_id=role.recover_peer.vra_id, security=self.security)
        self.throttle.register(role.vpg, role.priority)
        transport = ThrottledTransport(inner, self.throttle, role.vpg)
        settings = ProtectSettings(compression=role.compression, buffer_bytes=role.buffer_bytes,
                                   dropped_max_extents=max(1, self.args.dirty_budget_kib * 1024 // 16))
        return ProtectedVpg(role.vpg, self.vra_id, transport, volumes=set(role.volumes), settings=settings)

    def _make_syncs(self, role: ProtectRole, engine: ProtectedVpg, controls, previous) -> VpgSyncs:
        return VpgSyncs(role, engine, controls, self.security, previous=previous)

    def _authorize_sync(self, context: grpc.ServicerContext, vpg: str) -> bool:
        """The checksum service's pairing check: the caller's credentials, and (with TLS) one of the VPG's
        paired protect VRAs, as for its replication stream."""
        names = self.security.caller_names(context)
        if names is None:
            return True
        peers = self.recover.protect_peers(vpg)
        return bool(names) if peers is None else bool(names & peers)

    def start(self) -> None:
        if self.nbd is not None:
            self.nbd.start()
            tcp = f"{self.nbd.tcp_address[0]}:{self.nbd.tcp_address[1]}" if self.nbd.tcp_address else ""
            self.control.nbd_addresses = (self.args.nbd_unix or "", tcp)
        if not self.args.no_split:
            split_path = self.args.split
            if "/" in split_path:
                Path(split_path).parent.mkdir(parents=True, exist_ok=True)
            self.split = SplitListener(split_path, self.protect)
            self.split.start()
        roles = Roles.load(self.roles_path)
        for role in roles.recover.values():
            self.control.apply_recover(role)
        for role in roles.protect.values():
            self.control.apply_protect(role, restarted=True)
        self.recovery_ops.resume()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="grpc"),
                                  options=SERVER_OPTIONS)
        pb_grpc.add_ReplicationServicer_to_server(ReplicationServicer(self.recover.endpoint, self.security), self.server)
        cpb_grpc.add_ControlServicer_to_server(self.control, self.server)
        rpb_grpc.add_RecoveryOpsServicer_to_server(self.recovery_ops, self.server)
        self.server.add_generic_rpc_handlers((checksum_handler(self.recover.checksums, self._authorize_sync),))
        creds = self.security.server_credentials()
        if creds is not None:
            self.port = self.server.add_secure_port(self.args.listen, creds)
        else:
            self.port = self.server.add_insecure_port(self.args.listen)
        if self.port == 0:
            raise OSError(f"cannot listen for gRPC on {self.args.listen}")
        self.server.start()
        if self.args.port_file:
            tmp = Path(self.args.port_file + ".tmp")
            tmp.write_text(f"{self.port}\n")
            os.replace(tmp, self.args.port_file)
        if self.metrics is not None:
            self.metrics.start()
        log.info("VRA %s serving gRPC on port %d (%s)", self.vra_id, self.port,
                 "mutual TLS" if self.security.tls else "pairing secret" if self.security.pairing_secret else "open")

    def stop(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
        if self.server is not None:
            self.server.stop(grace=1.0).wait()
        self.control.stop()
        self.recovery_ops.stop()
        if self.split is not None:
            self.split.stop()
        self.protect.stop()
        self.recover.stop()
        if self.nbd is not None:
            self.nbd.stop()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s vra[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    try:
        daemon = Daemon(args)
        daemon.start()
    except (OSError, ValueError) as exc:
        print(f"vra serve: {exc}", file=sys.stderr)
        return 1
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(f"vra serve: {daemon.vra_id} listening on port {daemon.port}", file=sys.stderr, flush=True)
    done.wait()
    daemon.stop()
    return 0
