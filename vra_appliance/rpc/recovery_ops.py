"""The RecoveryOps service of a recovery VRA (vra_appliance/proto/v1/recovery.proto): recovery sessions.

A session is what one failover test, failover or move needs of this VRA: every volume of the VPG as of
one checkpoint, each a ``SessionVolume`` (a read-only point-in-time image under a scratch overlay,
vra_appliance/recover/service/exports.py), served by the VRA's NBD server as ``<session>.<volume>``. While a
session is open, replication and checkpoints go on; the images pin promotion at the checkpoint.

- ``CloseSession`` (test stop, rollback) closes the exports and deletes the scratch: the journal and the
  replica volumes are as they were.
- ``CommitSession`` makes the replica volume files the recovered VMs' disks: replication for the VPG stops,
  the promoter applies the journal up to the checkpoint (its crash-safe intent/apply/commit), the VPG's
  recover role is dropped from the VRA's saved roles (so a restart can never promote past the checkpoint
  into what are now disks), the scratch is applied onto the replica files (only the blocks the VMs
  wrote), then the journal, its positions log and the promotion state are deleted. A commit interrupted by
  a restart of the VRA is finished when it starts again (``resume``): applying a scratch file again writes
  the same bytes.

Sessions are recorded in ``<state dir>/recovery/sessions.json`` (the last state of each), so the ZVM can
ask again after its own restart and get the same answer. An open session does not survive a restart of
the VRA (its exports are gone): it is recorded as closed, with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc

from vra_appliance.errors import ApplianceError, SessionError
from vra_appliance.proto.v1 import recovery_pb2 as rpb
from vra_appliance.proto.v1 import recovery_pb2_grpc as rpb_grpc
from vra_appliance.recover.segments import vpg_dirname
from vra_appliance.recover.service.exports import ScratchBudget, SessionVolume, apply_scratch

log = logging.getLogger(__name__)

KEEP_RECORDS = 200


@dataclass
class _Session:
    vpg: str
    session: str
    checkpoint_id: str
    checkpoint_ts: int
    consistent: bool
    checkpoint_seq: int
    budget: ScratchBudget
    volumes: dict[str, SessionVolume] = field(default_factory=dict)
    replica_paths: dict[str, str] = field(default_factory=dict)


class RecoveryOpsServicer(rpb_grpc.RecoveryOpsServicer):
    """``control``: the VRA's ControlServicer (its saved roles, and the NBD addresses it reports);
    ``recover``: its RecoverySide; ``nbd``: its NbdServer (None: no sessions can be served)."""

    def __init__(self, control, recover, nbd, state_dir: str | os.PathLike, security) -> None:
        self.control = control
        self.recover = recover
        self.nbd = nbd
        self.security = security
        self.dir = Path(state_dir) / "recovery"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.records_path = self.dir / "sessions.json"
        self._records: dict[str, dict] = self._load()
        self._open: dict[str, _Session] = {}
        self._lock = threading.RLock()

    # -- persistence -------------------------------------------------------------------------------------
    def _load(self) -> dict[str, dict]:
        try:
            return json.loads(self.records_path.read_text())
        except FileNotFoundError:
            return {}

    def _save(self) -> None:
        if len(self._records) > KEEP_RECORDS:
            done = [k for k, r in self._records.items() if r["state"] in ("closed", "committed")]
            for key in done[: len(self._records) - KEEP_RECORDS]:
                del self._records[key]
        tmp = self.records_path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(self._records, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.records_path)

    def _record(self, s: _Session, state: str, **extra) -> dict:
        record = {
            "vpg": s.vpg, "state": state, "checkpoint_id": s.checkpoint_id, "checkpoint_ts": s.checkpoint_ts,
            "consistent": s.consistent, "checkpoint_seq": s.checkpoint_seq, "scratch_limit": s.budget.limit,
            "scratch_exceeded": s.budget.exceeded, "scratch_bytes": s.budget.used,
            "volumes": [{"volume": v, "export": sv.name, "size": sv.size, "scratch": str(sv.scratch_path),
                         "replica": s.replica_paths.get(v, "")} for v, sv in s.volumes.items()],
            **extra,
        }
        self._records[s.session] = record
        self._save()
        return record

    def resume(self) -> None:
        """At start: finish interrupted commits; sessions that were open are lost with the restart."""
        with self._lock:
            for session, record in list(self._records.items()):
                if record["state"] == "committing":
                    log.info("VPG %s: finishing the commit of session %s", record["vpg"], session)
                    self._finish_commit(session, record)
                elif record["state"] == "open":
                    for vol in record["volumes"]:
                        Path(vol["scratch"]).unlink(missing_ok=True)
                    shutil.rmtree(self.dir / "scratch" / session, ignore_errors=True)
                    record.update(state="closed", reason="the VRA restarted while the session was open: its "
                                                         "exports and scratch are gone")
            self._save()

    # -- helpers -----------------------------------------------------------------------------------------
    def _auth(self, context) -> None:
        if not self.security.authenticated(context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "not paired with this VRA: wrong or missing credentials")

    def _reply(self, session: str, *, ok: bool = True, code: str = "", message: str = "") -> rpb.SessionReply:
        unix, tcp = getattr(self.control, "nbd_addresses", ("", ""))
        reply = rpb.SessionReply(ok=ok, code=code, message=message, session=session, nbd_unix=unix, nbd_tcp=tcp)
        live = self._open.get(session)
        if live is not None:
            reply.vpg, reply.state = live.vpg, "open"
            reply.checkpoint_id, reply.checkpoint_timestamp_ns = live.checkpoint_id, live.checkpoint_ts
            reply.checkpoint_consistent = live.consistent
            reply.scratch_bytes, reply.scratch_limit_bytes = live.budget.used, live.budget.limit
            reply.scratch_exceeded = live.budget.exceeded
            for volume, sv in live.volumes.items():
                reply.exports.add(volume=volume, export_name=sv.name, size=sv.size, scratch_bytes=sv.scratch_bytes,
                                  replica_path=live.replica_paths.get(volume, ""))
            return reply
        record = self._records.get(session)
        if record is not None:
            reply.vpg, reply.state = record["vpg"], record["state"]
            reply.checkpoint_id, reply.checkpoint_timestamp_ns = record["checkpoint_id"], record["checkpoint_ts"]
            reply.checkpoint_consistent = record["consistent"]
            reply.scratch_bytes, reply.scratch_limit_bytes = record["scratch_bytes"], record["scratch_limit"]
            reply.scratch_exceeded = record["scratch_exceeded"]
            for vol in record["volumes"]:
                reply.exports.add(volume=vol["volume"], export_name=vol["export"], size=vol["size"],
                                  replica_path=vol["replica"])
            if not reply.message and record.get("reason"):
                reply.message = record["reason"]
        return reply

    def _failed(self, session: str, exc: SessionError) -> rpb.SessionReply:
        return self._reply(session, ok=False, code=exc.code, message=str(exc))

    # -- RPCs --------------------------------------------------------------------------------------------
    def OpenSession(self, request, context):  # noqa: N802
        self._auth(context)
        with self._lock:
            if request.session in self._open:
                return self._reply(request.session)
            try:
                self._open_session(request)
            except SessionError as exc:
                return self._failed(request.session, exc)
            return self._reply(request.session, message="session open")

    def GetSession(self, request, context):  # noqa: N802
        self._auth(context)
        with self._lock:
            if request.session not in self._open and request.session not in self._records:
                return self._failed(request.session, SessionError(
                    "UNKNOWN_SESSION", f"this VRA has no recovery session {request.session}"))
            return self._reply(request.session)

    def CloseSession(self, request, context):  # noqa: N802
        self._auth(context)
        with self._lock:
            live = self._open.pop(request.session, None)
            if live is not None:
                for sv in live.volumes.values():
                    self._unexport(sv)
                    sv.close(discard=True)
                shutil.rmtree(self.dir / "scratch" / live.session, ignore_errors=True)
                self._record(live, "closed")
                log.info("VPG %s: session %s closed, scratch discarded", live.vpg, live.session)
                return self._reply(request.session, message="session closed; scratch discarded")
            if request.session in self._records:
                return self._reply(request.session, message=f"session already {self._records[request.session]['state']}")
            return self._reply(request.session, code="UNKNOWN_SESSION",
                               message=f"this VRA has no recovery session {request.session}: nothing to close")

    def CommitSession(self, request, context):  # noqa: N802
        self._auth(context)
        with self._lock:
            live = self._open.get(request.session)
            try:
                if live is not None:
                    self._commit(live)
                    return self._reply(request.session, message="committed: the replica volumes are the disks")
                record = self._records.get(request.session)
                if record is None:
                    raise SessionError("UNKNOWN_SESSION", f"this VRA has no recovery session {request.session}")
                if record["state"] == "committing":
                    self._finish_commit(request.session, record)
                if record["state"] != "committed":
                    raise SessionError("ERROR", f"session {request.session} is {record['state']}: it cannot be "
                                                "committed")
                return self._reply(request.session, message="committed")
            except SessionError as exc:
                return self._failed(request.session, exc)
            except (ApplianceError, OSError) as exc:
                log.exception("VPG %s: commit of session %s failed", request.vpg, request.session)
                return self._failed(request.session, SessionError("ERROR", f"the commit failed: {exc}"))

    # -- open --------------------------------------------------------------------------------------------
    def _open_session(self, request) -> None:
        if self.nbd is None:
            raise SessionError("NO_NBD", "this VRA serves no NBD: start vra serve with --nbd-unix or --nbd-tcp")
        if request.session in self._records:
            raise SessionError("ERROR", f"session {request.session} is {self._records[request.session]['state']}: "
                                        "open a new one")
        rec = self.recover.get(request.vpg)
        if rec is None or rec.rvpg is None or rec.receiver is None:
            why = f" ({rec.error})" if rec is not None and rec.error else ""
            raise SessionError("UNKNOWN_VPG", f"this VRA has no working recover role for VPG {request.vpg}{why}")
        busy = [s.session for s in self._open.values() if s.vpg == request.vpg]
        if busy:
            raise SessionError("BUSY", f"VPG {request.vpg} has recovery session {busy[0]} open already: close it first")
        rvpg = rec.rvpg
        listed = rvpg.checkpoints()
        if request.checkpoint_id:
            info = next((c for c in listed if c.checkpoint_id == request.checkpoint_id), None)
            if info is None:
                raise SessionError("UNKNOWN_CHECKPOINT", f"checkpoint {request.checkpoint_id} is not in the journal "
                                   f"of VPG {request.vpg}: it is unknown, or expired (promoted into the replica "
                                   "past the journal's history); choose one from the checkpoint list")
        else:
            usable = [c for c in listed if c.consistent] if request.consistent_only else listed
            if not usable:
                raise SessionError("UNKNOWN_CHECKPOINT", f"the journal of VPG {request.vpg} holds no "
                                   f"{'consistent ' if request.consistent_only else ''}checkpoint yet")
            info = usable[-1]
        s = _Session(request.vpg, request.session, info.checkpoint_id, info.timestamp_ns, info.consistent, info.seq,
                     ScratchBudget(request.scratch_limit_bytes))
        scratch = self.dir / "scratch" / request.session
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            for vol in rec.role.volumes:
                base = rvpg.image(vol.volume, info.checkpoint_id)
                try:
                    sv = SessionVolume(f"{request.session}.{vol.volume}", vol.volume, base,
                                       scratch / f"{vol.volume}.scratch", s.budget)
                except OSError:
                    base.close()
                    raise
                s.volumes[vol.volume] = sv
                s.replica_paths[vol.volume] = vol.path
                self.nbd.add_export(sv, sv.name)
        except (ApplianceError, OSError, ValueError) as exc:
            for sv in s.volumes.values():
                self._unexport(sv)
                sv.close(discard=True)
            shutil.rmtree(scratch, ignore_errors=True)
            raise SessionError("ERROR", f"opening the images of VPG {request.vpg} at checkpoint "
                                        f"{info.checkpoint_id} failed: {exc}") from exc
        self._open[request.session] = s
        self._record(s, "open")
        log.info("VPG %s: session %s open at checkpoint %s (%d volumes)", s.vpg, s.session, s.checkpoint_id,
                 len(s.volumes))

    def _unexport(self, sv: SessionVolume) -> None:
        try:
            self.nbd.remove_export(sv.name, close=False)
        except KeyError:
            pass

    # -- commit ------------------------------------------------------------------------------------------
    def _commit(self, s: _Session) -> None:
        rec = self.recover.get(s.vpg)
        if rec is None or rec.rvpg is None:
            raise SessionError("UNKNOWN_VPG", f"the recover role of VPG {s.vpg} is gone: the session cannot be "
                                              "committed")
        rvpg = rec.rvpg
        # 1. no more replication for the VPG: nothing may land after the checkpoint from now on
        self.recover.endpoint.remove(s.vpg)
        if rec.receiver is not None:
            rec.receiver.stop()
            rec.receiver = None
        # 2. the replica volumes at the checkpoint (the session's images keep the promoter from going past it)
        rvpg.stop()
        eager = replace(rvpg.policy, history_s=0.0)
        rvpg.policy = rvpg.promoter.policy = eager
        for _ in range(100):
            if rvpg.replica.promoted_seq >= s.checkpoint_seq:
                break
            rvpg.promote_once()
        if rvpg.replica.promoted_seq != s.checkpoint_seq:
            raise SessionError("ERROR", f"the replica of VPG {s.vpg} is at seq {rvpg.replica.promoted_seq}, not at "
                                        f"checkpoint {s.checkpoint_id} (seq {s.checkpoint_seq})")
        # 3. durably: committing, and no recover role to take up again after a restart
        record = self._record(s, "committing", journal_dir=rec.role.journal_dir)
        roles = self.control.roles
        roles.recover.pop(s.vpg, None)
        self.control.save_roles(roles)
        # 4. exports closed; the images release the journal
        del self._open[s.session]
        for sv in s.volumes.values():
            self._unexport(sv)
            sv.close(discard=False)
        self._finish_commit(s.session, record, journal=rvpg.journal)

    def _finish_commit(self, session: str, record: dict, journal=None) -> None:
        vpg = record["vpg"]
        copied = 0
        for vol in record["volumes"]:
            scratch = Path(vol["scratch"])
            if scratch.exists():
                copied += apply_scratch(scratch, vol["replica"], vol["size"])
                scratch.unlink()
        shutil.rmtree(self.dir / "scratch" / session, ignore_errors=True)
        if self.recover.get(vpg) is not None:
            self.recover.remove(vpg)
        journal_dir = Path(record.get("journal_dir") or "")
        if journal is not None:
            journal.discard(vpg)
        elif record.get("journal_dir"):
            shutil.rmtree(journal_dir / vpg_dirname(vpg), ignore_errors=True)
        if record.get("journal_dir"):
            (journal_dir / "streams" / f"{vpg_dirname(vpg)}.positions").unlink(missing_ok=True)
        shutil.rmtree(self.recover.state_dir / "recover" / vpg_dirname(vpg), ignore_errors=True)
        record.update(state="committed", scratch_applied_bytes=copied)
        self._save()
        log.info("VPG %s: session %s committed (%d scratch bytes applied)", vpg, session, copied)

    def stop(self) -> None:
        with self._lock:
            for s in list(self._open.values()):
                for sv in s.volumes.values():
                    self._unexport(sv)
                    sv.close(discard=True)
                self._record(s, "closed", reason="the VRA stopped while the session was open")
            self._open.clear()
