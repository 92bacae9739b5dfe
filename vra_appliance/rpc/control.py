"""The zvr.vra.v1.Control service of a VRA (the ZVM configures roles and asks for checkpoints and status;
a VPG's checkpoint coordinator calls Freeze and Thaw on the other protect VRAs), and the coordinator's
``RemoteParticipant`` that calls it.

Syncs (docs/SYNC.md): a protect role's volumes that are new to it need an initial sync (a delta sync when
listed as pre-seeded); a role taken up again when ``vra serve`` restarts needs a delta sync of every volume
(what this VRA held in memory died with it); ``ForceSync`` asks for a delta sync (forcesync, reverse
protection, a replaced VRA); ``Status`` reports each protect role's sync substatus, the running sync's
progress and the last sync reports. ``DiscardJournal`` (recovery VRA) deletes a corrupt journal so the VPG
can be resynced (vra_appliance/recover/service/side.py).

Who may call (vra_appliance/trust/auth.py): with enrolled certificates, this site's ZVM everything (including
``UpdateTrust``, the trust bundle after a pairing or an unpairing), the other VRAs of this site only Freeze
and Thaw, a peer site's VRAs nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace

import grpc

from vra_appliance.config import PeerVra, ProtectRole, RecoverRole, Roles
from vra_appliance.errors import ApplianceError, ConfigError, DiscardRefused, UnknownVpgError
from vra_appliance.protect.checkpoints import CheckpointCoordinator, Decision, FreezeResult, ThawResult
from vra_appliance.protect.side import LocalParticipant, ProtectSide
from vra_appliance.proto.v1 import control_pb2 as cpb
from vra_appliance.proto.v1 import control_pb2_grpc as cpb_grpc
from vra_appliance.recover.service.side import RecoverySide
from vra_appliance.rpc.status import abort
from vra_appliance.stream.transport_grpc import CHANNEL_OPTIONS
from vra_appliance.sync.state import Reason
from vra_appliance.trust.auth import Security

log = logging.getLogger(__name__)

PAUSED_SUBSTATUS = "ReplicationPausedUserInitiated"  # Status of a protect role the user paused (Zerto's name)

_FORCE_REASONS = {
    cpb.SYNC_REASON_FORCED: Reason.FORCED,
    cpb.SYNC_REASON_REVERSE_PROTECTION: Reason.REVERSE_PROTECTION,
    cpb.SYNC_REASON_NEW_VRA: Reason.NEW_VRA,
    cpb.SYNC_REASON_JOURNAL_CORRUPT: Reason.JOURNAL_CORRUPT,
}


class RemoteParticipant:
    """A peer protect VRA of the VPG, reached through its Control service."""

    def __init__(self, peer: PeerVra, security: Security, timeout_s: float = 5.0) -> None:
        self.vra_id = peer.vra_id
        self.peer = peer
        self.security = security
        self.timeout_s = timeout_s
        self._channel = security.channel(peer.address, peer.vra_id, CHANNEL_OPTIONS)
        self._stub = cpb_grpc.ControlStub(self._channel)

    def freeze(self, vpg: str, checkpoint_id: str, timeout_ms: int) -> FreezeResult:
        try:
            r = self._stub.Freeze(
                cpb.FreezeRequest(vpg=vpg, checkpoint_id=checkpoint_id, timeout_ms=timeout_ms),
                timeout=self.timeout_s, metadata=self.security.metadata(),
            )
        except grpc.RpcError as exc:
            return FreezeResult(False, False, False, f"VRA {self.vra_id} unreachable: {exc.code().name}")
        return FreezeResult(r.ok, r.marked, r.dirty, r.message)

    def thaw(self, vpg: str, checkpoint_id: str, decision: Decision | None) -> ThawResult:
        req = cpb.ThawRequest(vpg=vpg, checkpoint_id=checkpoint_id, commit=decision is not None)
        if decision is not None:
            req.tag, req.consistent = decision.tag, decision.consistent
            req.participants.extend(decision.participants)
        try:
            r = self._stub.Thaw(req, timeout=self.timeout_s, metadata=self.security.metadata())
        except grpc.RpcError as exc:
            return ThawResult(False, True, f"VRA {self.vra_id} unreachable: {exc.code().name}")
        return ThawResult(r.ok, r.expired, r.message)

    def close(self) -> None:
        self._channel.close()


class ControlServicer(cpb_grpc.ControlServicer):
    def __init__(
        self,
        vra_id: str,
        protect: ProtectSide,
        recover: RecoverySide,
        security: Security,
        *,
        save_roles: Callable[[Roles], None] = lambda roles: None,
        nbd_addresses: tuple[str, str] = ("", ""),
    ) -> None:
        self.vra_id = vra_id
        self.protect = protect
        self.recover = recover
        self.security = security
        self.save_roles = save_roles
        self.nbd_addresses = nbd_addresses
        self.roles = Roles()
        self.coordinators: dict[str, CheckpointCoordinator] = {}
        self._remotes: dict[str, list[RemoteParticipant]] = {}
        self._lock = threading.RLock()

    def _auth(self, context) -> None:
        """Management calls: this site's ZVM only (with enrolled certificates; vra_appliance/trust/auth.py)."""
        if self.security.caller_names(context) == set():
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "not paired with this VRA: wrong or missing credentials")
        if not self.security.authenticated(context):
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          "only this site's ZVM may manage this VRA (another VRA may call Freeze and Thaw)")

    def _auth_site(self, context) -> None:
        """Freeze and Thaw: the VPG's checkpoint coordinator, another VRA of this site."""
        if not self.security.same_site(context):
            context.abort(grpc.StatusCode.PERMISSION_DENIED if self.security.caller_names(context)
                          else grpc.StatusCode.UNAUTHENTICATED,
                          "only this site's ZVM and VRAs may call Freeze and Thaw")

    # -- roles (also used at start, from the saved roles) -------------------------------------------------------
    def apply_protect(self, role: ProtectRole, *, restarted: bool = False) -> None:
        """Take up a protect role. ``restarted``: a role saved before this VRA restarted, whose volumes all
        need a delta sync; otherwise only the volumes new to the role need their initial sync."""
        with self._lock:
            previous = self.roles.protect.get(role.vpg)
            if previous is not None and not restarted and previous.paused != role.paused:
                role = replace(role, paused=previous.paused)  # a new configuration keeps the user's pause
            self._stop_coordinator(role.vpg)
            engine = self.protect.configure(role)
            if role.paused:
                engine.set_paused(True)
            if restarted:
                self.protect.need(role.vpg, Reason.NEW_VRA)
            else:
                new = [v for v in role.volumes if previous is None or v not in previous.volumes]
                preseeded = [v for v in new if v in role.preseeded_volumes]
                fresh = [v for v in new if v not in role.preseeded_volumes]
                if preseeded:
                    self.protect.need(role.vpg, Reason.PRESEEDED, preseeded)
                if fresh:
                    self.protect.need(role.vpg, Reason.NEW_VOLUME, fresh)
            if role.coordinator:
                parts, remotes = [], []
                for peer in role.protect_peers:
                    if peer.vra_id == self.vra_id:
                        parts.append(LocalParticipant(self.protect))
                    else:
                        remote = RemoteParticipant(peer, self.security)
                        remotes.append(remote)
                        parts.append(remote)
                coord = CheckpointCoordinator(
                    role.vpg, parts, interval_s=role.checkpoint_interval_s, freeze_timeout_ms=role.freeze_timeout_ms
                )
                self.coordinators[role.vpg] = coord
                self._remotes[role.vpg] = remotes
                coord.start()
            self.roles.protect[role.vpg] = role

    def apply_recover(self, role: RecoverRole) -> None:
        with self._lock:
            self.recover.configure(role)
            self.roles.recover[role.vpg] = role

    def _stop_coordinator(self, vpg: str) -> None:
        coord = self.coordinators.pop(vpg, None)
        if coord is not None:
            coord.stop()
        for r in self._remotes.pop(vpg, []):
            r.close()

    def stop(self) -> None:
        with self._lock:
            for vpg in list(self.coordinators):
                self._stop_coordinator(vpg)

    # -- RPCs -------------------------------------------------------------------------------------------------
    def ConfigureProtect(self, request, context):  # noqa: N802
        self._auth(context)
        try:
            role = ProtectRole.from_pb(request)
            self.apply_protect(role)
            self.save_roles(self.roles)
        except (ConfigError, ValueError) as exc:
            return cpb.ConfigureReply(ok=False, message=str(exc))
        return cpb.ConfigureReply(ok=True, message=f"protecting VPG {role.vpg}: {len(role.volumes)} volumes")

    def ConfigureRecover(self, request, context):  # noqa: N802
        self._auth(context)
        try:
            role = RecoverRole.from_pb(request)
            self.apply_recover(role)
            self.save_roles(self.roles)
        except (ConfigError, ValueError, OSError) as exc:
            return cpb.ConfigureReply(ok=False, message=str(exc))
        rec = self.recover.get(role.vpg)
        if rec is not None and rec.error:
            return cpb.ConfigureReply(ok=False, message=rec.error)
        return cpb.ConfigureReply(ok=True, message=f"recovering VPG {role.vpg} into {role.journal_dir}")

    def RemoveVpg(self, request, context):  # noqa: N802
        self._auth(context)
        with self._lock:
            self._stop_coordinator(request.vpg)
            self.protect.remove(request.vpg)
            self.recover.remove(request.vpg)
            self.roles.protect.pop(request.vpg, None)
            self.roles.recover.pop(request.vpg, None)
            self.save_roles(self.roles)
        return cpb.ConfigureReply(ok=True, message=f"VPG {request.vpg} removed from this VRA")

    def Checkpoint(self, request, context):  # noqa: N802
        self._auth(context)
        coord = self.coordinators.get(request.vpg)
        if coord is None:
            return cpb.CheckpointReply(
                ok=False, message=f"this VRA does not coordinate VPG {request.vpg}; ask its coordinator VRA"
            )
        result = coord.take(request.tag)
        reply = cpb.CheckpointReply(
            ok=result.ok, checkpoint_id=result.checkpoint_id, consistent=result.consistent, message=result.message
        )
        if result.ok and request.wait_durable:
            engine = self.protect.engines.get(request.vpg)
            timeout = (request.timeout_ms or 30_000) / 1000.0
            if engine is None or self.vra_id not in result.participants:
                reply.message = (reply.message + "; " if reply.message else "") + "cannot wait: not a participant"
            elif not engine.wait_marker_durable(result.checkpoint_id, timeout):
                reply.ok = False
                reply.message = (reply.message + "; " if reply.message else "") + (
                    f"the recovery VRA did not acknowledge the checkpoint within {timeout} s"
                )
        return reply

    def ListCheckpoints(self, request, context):  # noqa: N802
        self._auth(context)
        try:
            infos = self.recover.checkpoints(request.vpg)
        except Exception as exc:  # noqa: BLE001 - a domain error by its branch, a bug as INTERNAL
            abort(context, exc)
        return cpb.ListCheckpointsReply(
            checkpoints=[
                cpb.CheckpointEntry(
                    checkpoint_id=c.checkpoint_id, seq=c.seq, timestamp_ns=c.timestamp_ns, tag=c.tag or "",
                    consistent=c.consistent,
                )
                for c in infos
            ]
        )

    def Status(self, request, context):  # noqa: N802
        self._auth(context)
        reply = cpb.StatusReply(vra_id=self.vra_id)
        statuses = self.protect.status() + self.recover.status()
        for st in statuses:
            if request.vpg and st["vpg"] != request.vpg:
                continue
            counters = {k: float(v) for k, v in st.get("counters", {}).items() if isinstance(v, int | float)}
            coord = self.coordinators.get(st["vpg"]) if st["role"] == "protect" else None
            if coord is not None:
                counters["checkpoints_taken"] = coord.taken
                counters["checkpoints_failed"] = coord.failed
            entry = reply.vpgs.add(
                vpg=st["vpg"], role=st["role"], state=st["state"], error=st.get("error", ""),
                needs_bitmap_sync=bool(st.get("needs_bitmap_sync")), counters=counters,
            )
            sync = st.get("sync")
            if sync is not None:
                entry.substatus = sync["substatus"]
                entry.streaming_since_ns = sync["streaming_since_ns"]
                if sync["current"] is not None:
                    entry.current_sync.CopyFrom(_sync_report(sync["current"]))
                entry.last_syncs.extend(_sync_report(r) for r in sync["reports"])
            if st.get("paused"):
                entry.paused = True
                entry.substatus = PAUSED_SUBSTATUS
        return reply

    def ForceSync(self, request, context):  # noqa: N802
        self._auth(context)
        role = self.protect.roles.get(request.vpg)
        if role is None:
            return cpb.ConfigureReply(ok=False, message=f"this VRA has no protect role for VPG {request.vpg}")
        unknown = sorted(set(request.volumes) - set(role.volumes))
        if unknown:
            return cpb.ConfigureReply(
                ok=False, message=f"volumes {unknown} are not protected by this VRA for VPG {request.vpg} "
                                  f"(its volumes here: {sorted(role.volumes)})")
        reason = _FORCE_REASONS.get(request.reason, Reason.FORCED)
        volumes = list(request.volumes) or list(role.volumes)
        if not self.protect.need(request.vpg, reason, volumes):
            return cpb.ConfigureReply(ok=False, message=f"VPG {request.vpg} has no syncs on this VRA")
        log.info("VPG %s: delta sync of %s (%s)", request.vpg, ", ".join(volumes), reason.value)
        return cpb.ConfigureReply(ok=True, message=f"VPG {request.vpg}: delta sync of {len(volumes)} volumes "
                                                   f"({reason.value})")

    def DiscardJournal(self, request, context):  # noqa: N802
        self._auth(context)
        with self._lock:
            try:
                r = self.recover.discard_journal(request.vpg, request.reason or "no reason given", request.force)
            except UnknownVpgError as exc:
                abort(context, exc)
            except DiscardRefused as exc:
                return cpb.DiscardJournalReply(ok=False, message=str(exc))
            except (ApplianceError, OSError) as exc:
                log.exception("VPG %s: discarding the recovery journal failed", request.vpg)
                return cpb.DiscardJournalReply(
                    ok=False, message=f"discarding the recovery journal of VPG {request.vpg} failed: {exc}; it is "
                                      "finished when the role is taken up again (ConfigureRecover or a VRA restart)")
            except Exception as exc:  # noqa: BLE001 - a bug: INTERNAL, never NOT_FOUND
                abort(context, exc)
        return cpb.DiscardJournalReply(ok=True, message=r.message, state_before=r.state_before,
                                       records_discarded=r.records, checkpoints_discarded=r.checkpoints)

    def _set_paused(self, vpg: str, paused: bool):
        with self._lock:
            role = self.roles.protect.get(vpg)
            engine = self.protect.engines.get(vpg)
            if role is None or engine is None:
                return cpb.ConfigureReply(ok=False, message=f"this VRA has no protect role for VPG {vpg}")
            engine.set_paused(paused)
            self.roles.protect[vpg] = replace(role, paused=paused)
            if vpg in self.protect.roles:
                self.protect.roles[vpg] = self.roles.protect[vpg]
            self.save_roles(self.roles)
        what = "paused" if paused else "resumed"
        log.info("VPG %s: replication %s by the user", vpg, what)
        return cpb.ConfigureReply(ok=True, message=f"VPG {vpg}: replication {what}")

    def PauseVpg(self, request, context):  # noqa: N802
        self._auth(context)
        return self._set_paused(request.vpg, True)

    def ResumeVpg(self, request, context):  # noqa: N802
        self._auth(context)
        return self._set_paused(request.vpg, False)

    def UpdateTrust(self, request, context):  # noqa: N802
        self._auth(context)
        try:
            count = self.security.update_trust(request.trust_bundle_pem.encode())
        except ValueError as exc:
            return cpb.ConfigureReply(ok=False, message=f"trust bundle refused: {exc}")
        log.info("VRA %s: trust bundle updated (%d CAs)", self.vra_id, count)
        return cpb.ConfigureReply(ok=True, message=f"trusting {count} site CAs")

    def Freeze(self, request, context):  # noqa: N802
        self._auth_site(context)
        r = self.protect.freeze(request.vpg, request.checkpoint_id, request.timeout_ms or 100)
        return cpb.FreezeReply(ok=r.ok, marked=r.marked, dirty=r.dirty, message=r.message)

    def Thaw(self, request, context):  # noqa: N802
        self._auth_site(context)
        decision = (
            Decision(request.tag, request.consistent, tuple(request.participants)) if request.commit else None
        )
        r = self.protect.thaw(request.vpg, request.checkpoint_id, decision)
        return cpb.ThawReply(ok=r.ok, expired=r.expired, message=r.message)

    def OpenImage(self, request, context):  # noqa: N802
        self._auth(context)
        try:
            name, image = self.recover.open_image(request.vpg, request.volume, request.checkpoint_id, request.writable)
        except Exception as exc:  # noqa: BLE001 - a domain error by its branch (its message says what to do), a bug INTERNAL
            abort(context, exc)
        unix, tcp = self.nbd_addresses
        return cpb.OpenImageReply(export_name=name, nbd_unix=unix, nbd_tcp=tcp, size=image.size)

    def CloseImage(self, request, context):  # noqa: N802
        self._auth(context)
        try:
            self.recover.close_image(request.export_name)
        except Exception as exc:  # noqa: BLE001 - a domain error by its branch, a bug as INTERNAL
            abort(context, exc)
        return cpb.ConfigureReply(ok=True)


def _sync_report(r: dict) -> cpb.SyncReport:
    return cpb.SyncReport(
        volume=r["volume"], kind=r["kind"], completed=r["completed"], error=r["error"], percent=r["percent"],
        bytes=r["bytes"], dirty_bytes=r["dirty_bytes"], wire_bytes=r["wire_bytes"], ranges=r["ranges"],
        started_ns=r["started_ns"], finished_ns=r["finished_ns"],
    )
