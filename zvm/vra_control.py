"""The ZVM's client of a VRA's Control service (zvr.vra.v1.Control, vra_appliance/proto/v1/control.proto):
the one seam between the manager and the appliances.

``VraControl`` is what orchestration and monitoring use; ``GrpcVraControl`` implements it over gRPC,
authenticated the way ``vra serve`` is configured: the site's pairing secret in the call metadata
(``vra_pairing_secret``), or nothing in an open lab. A VRA that does not answer is a ``TransientError``; a
role it refuses is a ``PermanentError`` carrying its message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import grpc

from zvm.errors import PermanentError, TransientError

SECRET_KEY = "zvr-pairing-secret"  # the metadata key vra serve checks (vra_appliance/auth.py)


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
class CheckpointEntry:
    checkpoint_id: str
    timestamp_s: float
    tag: str | None
    consistent: bool


class VraControl(Protocol):
    def configure_protect(self, vra: VraRef, plan: ProtectPlan) -> str: ...
    def configure_recover(self, vra: VraRef, plan: RecoverPlan) -> str: ...
    def remove_vpg(self, vra: VraRef, vpg: str) -> str: ...
    def checkpoint(self, vra: VraRef, vpg: str, tag: str, wait_durable: bool = True) -> CheckpointEntry: ...
    def list_checkpoints(self, vra: VraRef, vpg: str) -> list[CheckpointEntry]: ...
    def status(self, vra: VraRef) -> dict: ...


class GrpcVraControl:
    def __init__(self, pairing_secret: str | None = None, timeout: float = 15.0):
        self.metadata = ((SECRET_KEY, pairing_secret),) if pairing_secret else ()
        self.timeout = timeout

    def _call(self, vra: VraRef, method: str, request, timeout: float | None = None):
        from vra_appliance.proto.v1 import control_pb2_grpc as cpb_grpc

        if not vra.address:
            raise TransientError(f"the address of VRA {vra.name or vra.vra_id} is not known yet")
        with grpc.insecure_channel(vra.address) as channel:
            try:
                return getattr(cpb_grpc.ControlStub(channel), method)(
                    request, metadata=self.metadata, timeout=timeout or self.timeout)
            except grpc.RpcError as exc:
                code = exc.code()
                text = f"VRA {vra.name or vra.vra_id} at {vra.address}: {method} failed ({code.name}: {exc.details()})"
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise TransientError(text + ": check that it runs and is reachable") from exc
                raise PermanentError(text) from exc

    @staticmethod
    def _ok(vra: VraRef, what: str, reply) -> str:
        if not reply.ok:
            raise PermanentError(f"VRA {vra.name or vra.vra_id} refused {what}: {reply.message}")
        return reply.message

    def configure_protect(self, vra: VraRef, plan: ProtectPlan) -> str:
        from vra_appliance.proto.v1 import control_pb2 as cpb

        request = cpb.ProtectConfig(
            vpg=plan.vpg, volumes=plan.volumes, filter_controls=plan.filter_controls,
            recover_peer=cpb.PeerVra(vra_id=plan.recover_peer.vra_id, address=plan.recover_peer.address),
            priority=plan.priority, compression=plan.compression, coordinator=plan.coordinator,
            protect_peers=[cpb.PeerVra(vra_id=p.vra_id, address=p.address) for p in plan.protect_peers])
        return self._ok(vra, "the protect role", self._call(vra, "ConfigureProtect", request))

    def configure_recover(self, vra: VraRef, plan: RecoverPlan) -> str:
        from vra_appliance.proto.v1 import control_pb2 as cpb

        request = cpb.RecoverConfig(
            vpg=plan.vpg, journal_dir=plan.journal_dir,
            volumes=[cpb.ReplicaVolume(volume=v, path=p, size=s) for v, p, s in plan.volumes],
            history_seconds=plan.history_s, journal_hard_limit_bytes=plan.hard_limit_bytes,
            journal_warning_bytes=plan.warning_bytes, protect_peers=plan.protect_peers)
        return self._ok(vra, "the recover role", self._call(vra, "ConfigureRecover", request))

    def remove_vpg(self, vra: VraRef, vpg: str) -> str:
        from vra_appliance.proto.v1 import control_pb2 as cpb

        return self._ok(vra, "removing the VPG", self._call(vra, "RemoveVpg", cpb.RemoveVpgRequest(vpg=vpg)))

    def checkpoint(self, vra: VraRef, vpg: str, tag: str, wait_durable: bool = True) -> CheckpointEntry:
        import time

        from vra_appliance.proto.v1 import control_pb2 as cpb

        reply = self._call(vra, "Checkpoint", cpb.CheckpointRequest(vpg=vpg, tag=tag, wait_durable=wait_durable,
                                                                    timeout_ms=30_000), timeout=60)
        self._ok(vra, "the checkpoint", reply)
        return CheckpointEntry(reply.checkpoint_id, time.time(), tag or None, reply.consistent)

    def list_checkpoints(self, vra: VraRef, vpg: str) -> list[CheckpointEntry]:
        from vra_appliance.proto.v1 import control_pb2 as cpb

        reply = self._call(vra, "ListCheckpoints", cpb.ListCheckpointsRequest(vpg=vpg))
        return [CheckpointEntry(c.checkpoint_id, c.timestamp_ns / 1e9, c.tag or None, c.consistent)
                for c in reply.checkpoints]

    def status(self, vra: VraRef) -> dict:
        """{vpg: {role: {"state", "error", "needs_bitmap_sync", "counters"}}}"""
        from vra_appliance.proto.v1 import control_pb2 as cpb

        reply = self._call(vra, "Status", cpb.StatusRequest())
        out: dict = {}
        for st in reply.vpgs:
            out.setdefault(st.vpg, {})[st.role] = {"state": st.state, "error": st.error,
                                                    "needs_bitmap_sync": st.needs_bitmap_sync,
                                                    "counters": dict(st.counters)}
        return out
