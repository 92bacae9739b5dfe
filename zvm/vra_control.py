"""The ZVM's client of a VRA's Control service (zvr.vra.v1.Control, vra_appliance/proto/v1/control.proto):
the one seam between the manager and the appliances.

``VraControl`` is what orchestration and monitoring use; ``GrpcVraControl`` implements it over gRPC. A VRA
that enrolled (zvm/peer/enrollment.py) is called with mutual TLS: the ZVM presents its Control certificate
(``zvm:<site id>``, from the site CA) and expects the VRA's certificate, from the same CA, to name the VRA
id. A VRA that did not enroll is called as ``vra serve`` is then configured: the site's pairing secret in
the call metadata (``vra_pairing_secret``), or nothing in an open lab. A VRA that does not answer is a ``TransientError``; a
role it refuses is a ``PermanentError`` carrying its message.

Channels are kept, one per VRA (its address and the credentials it is called with), since monitoring calls
every VRA on each pass: a channel is made anew when the VRA's address or trust changes (it enrolled, the
site's CA or the ZVM's certificate changed), dropped when a call finds the VRA unreachable (the next call
connects at once instead of waiting out gRPC's reconnect back-off), and closed by ``close()``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from vra_appliance.proto.v1 import control_pb2 as cpb
from vra_appliance.proto.v1 import control_pb2_grpc as cpb_grpc
from vra_appliance.proto.v1 import recovery_pb2 as rpb
from vra_appliance.proto.v1 import recovery_pb2_grpc as rpb_grpc
from zvm.errors import PermanentError, TransientError

SECRET_KEY = "zvr-pairing-secret"  # the metadata key vra serve checks (vra_appliance/auth.py)


@dataclass(frozen=True)
class ControlTls:
    """What the Control client presents and trusts when the VRA enrolled (zvm/peer/enrollment.py makes it)."""

    roots: bytes  # this site's CA: every VRA of the site has a certificate from it
    key: bytes
    cert: bytes


@dataclass(frozen=True)
class VraRef:
    vra_id: str
    address: str  # host:port of its gRPC service (4005)
    name: str = ""


@dataclass
class ProtectPlan:
    vpg: str
    volumes: list[str]
    recover_peer: VraRef
    protect_peers: list[VraRef]
    coordinator: bool
    priority: int = 2
    compression: bool = True
    filter_controls: list[str] = field(default_factory=list)
    preseeded_volumes: list[str] = field(default_factory=list)  # first sync: a delta sync, not a full copy


@dataclass
class RecoverPlan:
    vpg: str
    journal_dir: str
    volumes: list[tuple[str, str, int]]  # (volume id, replica path, size in bytes)
    protect_peers: list[str]  # VRA ids
    history_s: int
    hard_limit_bytes: int = 0
    warning_bytes: int = 0


@dataclass
class JournalDiscard:
    """What a recovery VRA answered DiscardJournal: ``ok`` False with its message when it refused (a healthy
    journal without ``force``, a recovery session holding its images)."""

    ok: bool
    message: str
    state_before: str = ""
    records: int = 0
    checkpoints: int = 0


@dataclass
class CheckpointEntry:
    checkpoint_id: str
    timestamp_s: float
    tag: str | None
    consistent: bool


@dataclass
class SessionExport:
    volume: str
    export_name: str
    size: int
    scratch_bytes: int
    replica_path: str


@dataclass
class SessionInfo:
    """A recovery session on a recovery VRA (vra_appliance/recovery_ops.py); ``ok`` False with ``code`` and
    ``message`` when the VRA refused."""

    ok: bool
    code: str
    message: str
    session: str
    state: str  # open, committing, committed, closed
    checkpoint_id: str
    checkpoint_time: float
    checkpoint_consistent: bool
    exports: list[SessionExport]
    nbd_unix: str
    nbd_tcp: str
    scratch_bytes: int
    scratch_limit_bytes: int
    scratch_exceeded: bool

    def uri(self, export_name: str) -> str:
        """The NBD URI a recovery VM's disk uses."""
        if self.nbd_unix:
            return f"nbd+unix:///{export_name}?socket={self.nbd_unix}"
        return f"nbd://{self.nbd_tcp}/{export_name}"


class VraControl(Protocol):
    def configure_protect(self, vra: VraRef, plan: ProtectPlan) -> str: ...
    def configure_recover(self, vra: VraRef, plan: RecoverPlan) -> str: ...
    def remove_vpg(self, vra: VraRef, vpg: str) -> str: ...
    def checkpoint(self, vra: VraRef, vpg: str, tag: str, wait_durable: bool = True) -> CheckpointEntry: ...
    def list_checkpoints(self, vra: VraRef, vpg: str) -> list[CheckpointEntry]: ...
    def status(self, vra: VraRef, timeout: float | None = None) -> dict: ...
    def force_sync(self, vra: VraRef, vpg: str, volumes: list[str] | None = None,
                   reason: str = "forced") -> str: ...
    def discard_journal(self, vra: VraRef, vpg: str, reason: str, force: bool = False) -> JournalDiscard: ...
    def pause(self, vra: VraRef, vpg: str, paused: bool) -> str: ...
    def update_trust(self, vra: VraRef, bundle_pem: str) -> str: ...
    def open_session(self, vra: VraRef, vpg: str, session: str, checkpoint_id: str = "", scratch_limit: int = 0,
                     consistent_only: bool = False) -> SessionInfo: ...
    def get_session(self, vra: VraRef, vpg: str, session: str) -> SessionInfo: ...
    def close_session(self, vra: VraRef, vpg: str, session: str) -> SessionInfo: ...
    def commit_session(self, vra: VraRef, vpg: str, session: str) -> SessionInfo: ...


class GrpcVraControl:
    """``tls(vra_id)`` gives the Control client certificate when that VRA enrolled (``ControlTls``), else
    None (the pairing secret, if any, is sent instead)."""

    def __init__(self, pairing_secret: str | None = None, timeout: float = 15.0,
                 tls: Callable[[str], ControlTls | None] = lambda vra_id: None):
        self.metadata = ((SECRET_KEY, pairing_secret),) if pairing_secret else ()
        self.timeout = timeout
        self.tls = tls
        self._channels: dict[str, tuple[tuple, grpc.Channel]] = {}  # vra id -> (address and trust, channel)
        self._lock = threading.Lock()
        self.opened = 0  # channels made so far (each a TCP connection and, enrolled, a TLS handshake)

    def _channel(self, vra: VraRef) -> tuple[grpc.Channel, tuple]:
        tls = self.tls(vra.vra_id)
        key = (vra.address, tls)
        with self._lock:
            known = self._channels.get(vra.vra_id)
            if known is not None and known[0] == key:
                return known[1], (() if tls else self.metadata)
            if tls is None:
                channel = grpc.insecure_channel(vra.address)
            else:
                creds = grpc.ssl_channel_credentials(root_certificates=tls.roots, private_key=tls.key,
                                                     certificate_chain=tls.cert)
                channel = grpc.secure_channel(vra.address, creds,
                                              options=[("grpc.ssl_target_name_override", vra.vra_id)])
            self._channels[vra.vra_id] = (key, channel)
            self.opened += 1
        if known is not None:
            known[1].close()  # the VRA's address or trust changed
        return channel, (() if tls else self.metadata)

    def _drop(self, vra: VraRef, channel: grpc.Channel) -> None:
        with self._lock:
            known = self._channels.get(vra.vra_id)
            if known is None or known[1] is not channel:
                return
            del self._channels[vra.vra_id]
        channel.close()

    def channels(self) -> int:
        """How many channels are kept open now."""
        with self._lock:
            return len(self._channels)

    def close(self) -> None:
        """Close every kept channel (the ZVM stops); a later call opens its VRA's again."""
        with self._lock:
            channels, self._channels = [c for _, c in self._channels.values()], {}
        for channel in channels:
            channel.close()

    def _call(self, vra: VraRef, method: str, request, timeout: float | None = None, stub=None):
        if not vra.address:
            raise TransientError(f"the address of VRA {vra.name or vra.vra_id} is not known yet")
        channel, metadata = self._channel(vra)
        try:
            return getattr((stub or cpb_grpc.ControlStub)(channel), method)(
                request, metadata=metadata, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            text = f"VRA {vra.name or vra.vra_id} at {vra.address}: {method} failed ({code.name}: {exc.details()})"
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self._drop(vra, channel)
                raise TransientError(text + ": check that it runs and is reachable") from exc
            if code == grpc.StatusCode.UNAUTHENTICATED:
                self._drop(vra, channel)  # its TLS session was made with credentials it no longer takes
            raise PermanentError(text) from exc

    @staticmethod
    def _ok(vra: VraRef, what: str, reply) -> str:
        if not reply.ok:
            raise PermanentError(f"VRA {vra.name or vra.vra_id} refused {what}: {reply.message}")
        return reply.message

    def configure_protect(self, vra: VraRef, plan: ProtectPlan) -> str:
        request = cpb.ProtectConfig(
            vpg=plan.vpg, volumes=plan.volumes, filter_controls=plan.filter_controls,
            recover_peer=cpb.PeerVra(vra_id=plan.recover_peer.vra_id, address=plan.recover_peer.address),
            priority=plan.priority, compression=plan.compression, coordinator=plan.coordinator,
            protect_peers=[cpb.PeerVra(vra_id=p.vra_id, address=p.address) for p in plan.protect_peers],
            preseeded_volumes=plan.preseeded_volumes)
        return self._ok(vra, "the protect role", self._call(vra, "ConfigureProtect", request))

    def configure_recover(self, vra: VraRef, plan: RecoverPlan) -> str:
        request = cpb.RecoverConfig(
            vpg=plan.vpg, journal_dir=plan.journal_dir,
            volumes=[cpb.ReplicaVolume(volume=v, path=p, size=s) for v, p, s in plan.volumes],
            history_seconds=plan.history_s, journal_hard_limit_bytes=plan.hard_limit_bytes,
            journal_warning_bytes=plan.warning_bytes, protect_peers=plan.protect_peers)
        return self._ok(vra, "the recover role", self._call(vra, "ConfigureRecover", request))

    def remove_vpg(self, vra: VraRef, vpg: str) -> str:
        return self._ok(vra, "removing the VPG", self._call(vra, "RemoveVpg", cpb.RemoveVpgRequest(vpg=vpg)))

    def checkpoint(self, vra: VraRef, vpg: str, tag: str, wait_durable: bool = True) -> CheckpointEntry:
        reply = self._call(vra, "Checkpoint", cpb.CheckpointRequest(vpg=vpg, tag=tag, wait_durable=wait_durable,
                                                                    timeout_ms=30_000), timeout=60)
        self._ok(vra, "the checkpoint", reply)
        return CheckpointEntry(reply.checkpoint_id, time.time(), tag or None, reply.consistent)

    def list_checkpoints(self, vra: VraRef, vpg: str) -> list[CheckpointEntry]:
        reply = self._call(vra, "ListCheckpoints", cpb.ListCheckpointsRequest(vpg=vpg))
        return [CheckpointEntry(c.checkpoint_id, c.timestamp_ns / 1e9, c.tag or None, c.consistent)
                for c in reply.checkpoints]

    def status(self, vra: VraRef, timeout: float | None = None) -> dict:
        """{vpg: {role: {"state", "error", "needs_bitmap_sync", "counters", "substatus", "syncs"}}}: the protect
        role's ``substatus`` is "InitialSync", "DeltaSync" or "BitmapSync" while a volume needs or runs one, ""
        when streaming; ``syncs`` the last syncs that ended and the running one (``{"volume", "kind",
        "completed", "running", "bytes", "wire_bytes", "started_s", "finished_s"}``)."""
        reply = self._call(vra, "Status", cpb.StatusRequest(), timeout=timeout)
        out: dict = {}
        for st in reply.vpgs:
            out.setdefault(st.vpg, {})[st.role] = {"state": st.state, "error": st.error,
                                                    "needs_bitmap_sync": st.needs_bitmap_sync,
                                                    "counters": dict(st.counters), "substatus": st.substatus,
                                                    "paused": st.paused,
                                                    "syncs": [_sync(r, False) for r in st.last_syncs]
                                                    + ([_sync(st.current_sync, True)]
                                                       if st.HasField("current_sync") else [])}
        return out

    def force_sync(self, vra: VraRef, vpg: str, volumes: list[str] | None = None, reason: str = "forced") -> str:
        """The ZVM's forcesync on a protect VRA: a delta sync of the VPG's volumes there (all of them by
        default). Returns once the VRA has recorded the need; its Status shows the sync (DeltaSync).
        ``reason``: "forced", or "journal-corrupt" (the recovery journal is being discarded)."""
        code = cpb.SYNC_REASON_JOURNAL_CORRUPT if reason == "journal-corrupt" else cpb.SYNC_REASON_FORCED
        request = cpb.ForceSyncRequest(vpg=vpg, volumes=volumes or [], reason=code)
        return self._ok(vra, "the forced sync", self._call(vra, "ForceSync", request))

    def discard_journal(self, vra: VraRef, vpg: str, reason: str, force: bool = False) -> JournalDiscard:
        """The recovery VRA deletes the VPG's journal (corrupt or failed; a healthy one only with ``force``) and
        takes streams again from seq 1. A refusal comes back as ``ok`` False, not as an error."""
        r = self._call(vra, "DiscardJournal", cpb.DiscardJournalRequest(vpg=vpg, reason=reason, force=force),
                       timeout=120)
        return JournalDiscard(r.ok, r.message, r.state_before, r.records_discarded, r.checkpoints_discarded)

    def update_trust(self, vra: VraRef, bundle_pem: str) -> str:
        """An enrolled VRA trusts exactly these CAs from now on (after a pairing or an unpairing)."""
        return self._ok(vra, "the trust bundle",
                        self._call(vra, "UpdateTrust", cpb.UpdateTrustRequest(trust_bundle_pem=bundle_pem)))

    def pause(self, vra: VraRef, vpg: str, paused: bool) -> str:
        """Pause (or resume) the VPG's replication on a protect VRA; persisted there with the role."""
        method = "PauseVpg" if paused else "ResumeVpg"
        return self._ok(vra, "pausing" if paused else "resuming", self._call(vra, method, cpb.PauseVpgRequest(vpg=vpg)))

    # --- recovery sessions (RecoveryOps service) ---------------------------------------------------------

    def _session(self, vra: VraRef, method: str, request, timeout: float | None = None) -> SessionInfo:
        r = self._call(vra, method, request, timeout=timeout, stub=rpb_grpc.RecoveryOpsStub)
        return SessionInfo(
            ok=r.ok, code=r.code, message=r.message, session=r.session, state=r.state,
            checkpoint_id=r.checkpoint_id, checkpoint_time=r.checkpoint_timestamp_ns / 1e9,
            checkpoint_consistent=r.checkpoint_consistent,
            exports=[SessionExport(e.volume, e.export_name, e.size, e.scratch_bytes, e.replica_path) for e in r.exports],
            nbd_unix=r.nbd_unix, nbd_tcp=r.nbd_tcp, scratch_bytes=r.scratch_bytes,
            scratch_limit_bytes=r.scratch_limit_bytes, scratch_exceeded=r.scratch_exceeded)

    def open_session(self, vra: VraRef, vpg: str, session: str, checkpoint_id: str = "", scratch_limit: int = 0,
                     consistent_only: bool = False) -> SessionInfo:
        return self._session(vra, "OpenSession", rpb.OpenSessionRequest(
            vpg=vpg, session=session, checkpoint_id=checkpoint_id, scratch_limit_bytes=scratch_limit,
            consistent_only=consistent_only), timeout=120)

    def get_session(self, vra: VraRef, vpg: str, session: str) -> SessionInfo:
        return self._session(vra, "GetSession", rpb.SessionRequest(vpg=vpg, session=session))

    def close_session(self, vra: VraRef, vpg: str, session: str) -> SessionInfo:
        return self._session(vra, "CloseSession", rpb.SessionRequest(vpg=vpg, session=session), timeout=60)

    def commit_session(self, vra: VraRef, vpg: str, session: str) -> SessionInfo:
        return self._session(vra, "CommitSession", rpb.SessionRequest(vpg=vpg, session=session), timeout=600)


def _sync(r, running: bool) -> dict:
    return {"volume": r.volume, "kind": r.kind, "completed": r.completed, "running": running, "bytes": r.bytes,
            "wire_bytes": r.wire_bytes, "error": r.error, "started_s": r.started_ns / 1e9,
            "finished_s": r.finished_ns / 1e9 if r.finished_ns else None}
