"""Recovery operations of a VPG (failover test, failover, move; their stop, commit and rollback) and the
recovery reports. Every action returns a task; the work is in zvm/orchestration/recovery.py. They run on
the ZVM of the site the VPG recovers to; ordered on the protected site's ZVM, they are forwarded there over
the peer link, as Zerto takes them on either site."""

from __future__ import annotations

import json

from zvm import enums
from zvm import models as m
from zvm.api import render, schemas
from zvm.api.context import current_user, note_entity, service
from zvm.api.queue import queued
from zvm.api.spec import ApiBlueprint, Param
from zvm.api.vpgs import get_vpg
from zvm.errors import NotFoundError, ValidationError, ZvmError
from zvm.orchestration import operations
from zvm.placement import peer_client

bp = ApiBlueprint("recovery", __name__, tag="RecoveryOperations",
                  description="Failover test, failover and move of a VPG, ordered on the ZVM of the site it "
                              "recovers to; each returns a task.")
reports = ApiBlueprint("reports", __name__, tag="Reports", description="What recovery operations did.")

ERRORS = [409]


def _forwarded(vpg: m.Vpg, kind: str, params: dict) -> str | None:
    """An operation ordered on the protected site's ZVM goes over the peer link to the ZVM of the site the
    VPG recovers to, which admits and runs it (zvm/peer/service.py ``order_operation``); the task id is
    that site's, and GET /v1/tasks/{id} here answers it from there."""
    if vpg.recovery_site_id == service().local_site_id():
        return None
    note_entity(vpg.identifier)
    return peer_client(service(), vpg.recovery_site).order_operation(vpg.identifier, kind, params, current_user())


def peer_task(task_identifier: str) -> dict | None:
    """A task a paired site runs for a VPG this site protects (a forwarded operation's), or None."""
    for peer in m.PeerSite.select():
        try:
            fields = peer_client(service(), peer.site, timeout=5.0).task(task_identifier)["Task"]
        except (ZvmError, KeyError, TypeError):
            continue
        return render.task(m.Task(**fields))
    return None


def _start(vpgIdentifier: str, kind: str, params: dict) -> str:
    vpg = get_vpg(vpgIdentifier)
    forwarded = _forwarded(vpg, kind, params)
    if forwarded is not None:
        return forwarded
    return render.task_id(queued(operations.start_operation(vpg, kind, params, service().local_site(),
                                                          user=current_user())))


def _next(vpgIdentifier: str, task_kind: str, params: dict) -> str:
    vpg = get_vpg(vpgIdentifier)
    forwarded = _forwarded(vpg, task_kind, params)
    if forwarded is not None:
        return forwarded
    return render.task_id(queued(operations.order_next(vpg, task_kind, params, service().local_site(),
                                                     user=current_user())))


def _unsupported(body: dict, **neutral) -> None:
    """Zerto fields this product takes only with their neutral value: any other is refused, never ignored."""
    for name, value in neutral.items():
        if name in body and body[name] not in (None, value):
            raise ValidationError(f"{name}: not supported by this ZVM (only {json.dumps(value)}); leave it out",
                                  field=name)


def _one_of(body: dict, names: tuple[str, ...], into: str) -> None:
    """Fields that say the same thing under Zerto's name and this API's older one: at most one value."""
    given = {n: body.pop(n) for n in names if body.get(n) is not None}
    if len(set(map(json.dumps, given.values()))) > 1:
        raise ValidationError(f"{' and '.join(given)} say the same thing with different values: give one",
                              field=next(iter(given)))
    if given:
        body[into] = next(iter(given.values()))


def _vms_of(vpg: m.Vpg, body: dict, *, all_only: str | None = None) -> None:
    """``VmIdentifiers``: VMs of the VPG, each once; ``all_only`` refuses a subset (naming the operation)."""
    wanted = body.pop("VmIdentifiers", None)
    if wanted is None:
        return
    protected = [vm for (vm,) in m.VpgVm.select(m.VpgVm.vm_moid).where(m.VpgVm.vpg == vpg).tuples()]
    for i, vm in enumerate(wanted):
        if vm not in protected:
            raise ValidationError(f"VmIdentifiers[{i}]: {vm!r} is not a VM of VPG {vpg.name}: list them with "
                                  f"GET /v1/vms?vpgIdentifier={vpg.identifier}", field=f"VmIdentifiers[{i}]")
        if wanted.index(vm) != i:
            raise ValidationError(f"VmIdentifiers[{i}]: {vm!r} is given twice", field=f"VmIdentifiers[{i}]")
    if set(wanted) == set(protected):
        return
    if all_only:
        raise ValidationError(f"VmIdentifiers: a {all_only} of some VMs of a VPG is not supported: leave it out "
                              "to recover every VM of the VPG (or split the VPG)", field="VmIdentifiers")
    body["VmIdentifiers"] = list(wanted)


def _internal(body: dict) -> dict:
    """Enumeration members as the words the orchestration keeps."""
    return {k: v.internal if isinstance(v, enums.ZertoEnum) else v for k, v in body.items()}


@bp.operation("POST", "/vpgs/{vpgIdentifier}/failoverTest", role="operator", summary="Start a failover test", status=202,
              body=schemas.ref("FailoverTestInput"), body_required=False, response=schemas.ref("TaskId"),
              errors=ERRORS)
def failover_test(vpgIdentifier, body):
    """Test VMs ("<vm> - testing recovery") in the recovery vCenter on the test network, their disks the
    VPG's volumes at the checkpoint with scratch overlays; replication goes on. ``VmIdentifiers`` tests some
    VMs of the VPG. Stop it with failoverTestStop."""
    vpg = get_vpg(vpgIdentifier)
    body = dict(body or {})
    _vms_of(vpg, body)
    if body.get("ScratchLimitInMB") is None:
        body["ScratchLimitInMB"] = vpg.journal_hard_limit_mb
    return _start(vpgIdentifier, "FailoverTest", _internal(body))


@bp.operation("POST", "/vpgs/{vpgIdentifier}/failoverTestStop", role="operator", summary="Stop a failover test", status=202,
              body=schemas.ref("FailoverTestStopInput"), body_required=False, response=schemas.ref("TaskId"),
              errors=ERRORS)
def failover_test_stop(vpgIdentifier, body):
    """Power the test VMs off, delete them, discard the scratch; the test's result and duration are kept
    (GET /v1/reports/recovery)."""
    body = {k: v for k, v in (body or {}).items() if v is not None}
    return _next(vpgIdentifier, "FailoverTestStop", body)


@bp.operation("POST", "/vpgs/{vpgIdentifier}/Failover", role="operator", summary="Fail over", status=202,
              body=schemas.ref("FailoverInput"), body_required=False, response=schemas.ref("TaskId"),
              errors=ERRORS)
def failover(vpgIdentifier, body):
    """Recover the VMs at the checkpoint on the failover network (re-IP where configured), by boot group;
    the source VMs are shut down by the policy when their site answers. Then the commit policy."""
    body = dict(body or {})
    _vms_of(get_vpg(vpgIdentifier), body, all_only="failover")
    _one_of(body, ("TimeToWaitBeforeShutdownInSec", "CommitPolicyTimeoutInSeconds"), "CommitPolicyTimeoutInSeconds")
    return _start(vpgIdentifier, "Failover", _internal(body))


def _commit_body(body: dict | None) -> dict:
    body = dict(body or {})
    _unsupported(body, KeepSourceVms=False)
    body.pop("KeepSourceVms", None)
    _one_of(body, ("IsReverseProtection", "ReverseProtection"), "ReverseProtection")
    return body


@bp.operation("POST", "/vpgs/{vpgIdentifier}/FailoverCommit", role="operator", summary="Commit a failover", status=202,
              body=schemas.ref("FailoverCommitInput"), body_required=False, response=schemas.ref("TaskId"),
              errors=ERRORS)
def failover_commit(vpgIdentifier, body):
    return _next(vpgIdentifier, "FailoverCommit", _commit_body(body))


@bp.operation("POST", "/vpgs/{vpgIdentifier}/FailoverRollback", role="operator", summary="Roll a failover back", status=202,
              response=schemas.ref("TaskId"), errors=ERRORS)
def failover_rollback(vpgIdentifier):
    return _next(vpgIdentifier, "FailoverRollback", {})


@bp.operation("POST", "/vpgs/{vpgIdentifier}/move", role="operator", summary="Move (planned migration)", status=202,
              body=schemas.ref("MoveInput"), body_required=False, response=schemas.ref("TaskId"),
              errors=ERRORS)
def move(vpgIdentifier, body):
    """Shut the source VMs down, wait for their last writes, take a final checkpoint, recover to it, then
    commit (by default) with reverse protection: no data is lost. Needs both sites."""
    body = {k: v for k, v in (body or {}).items() if v is not None}
    _unsupported(body, KeepSourceVms=False, ContinueOnPreScriptFailure=False)
    body.pop("KeepSourceVms", None)
    body.pop("ContinueOnPreScriptFailure", None)
    _one_of(body, ("CommitPolicyTimeout", "CommitPolicyTimeoutInSeconds"), "CommitPolicyTimeoutInSeconds")
    params = {"CommitPolicy": "Commit", "CommitPolicyTimeoutInSeconds": 0, "ForceShutdown": True,
              "ReverseProtection": True, **_internal(body)}
    return _start(vpgIdentifier, "Move", params)


@bp.operation("POST", "/vpgs/{vpgIdentifier}/moveCommit", role="operator", summary="Commit a move", status=202,
              body=schemas.ref("FailoverCommitInput"), body_required=False, response=schemas.ref("TaskId"),
              errors=ERRORS)
def move_commit(vpgIdentifier, body):
    return _next(vpgIdentifier, "MoveCommit", _commit_body(body))


@bp.operation("POST", "/vpgs/{vpgIdentifier}/moveRollback", role="operator", summary="Roll a move back", status=202,
              response=schemas.ref("TaskId"), errors=ERRORS)
def move_rollback(vpgIdentifier):
    return _next(vpgIdentifier, "MoveRollback", {})


# --- reports ----------------------------------------------------------------------------------------------

def report_json(op: m.RecoveryOperation) -> dict:
    ended = op.ended_at
    return {
        "OperationIdentifier": op.identifier, "VpgIdentifier": op.vpg, "VpgName": op.vpg_name, "Type": op.kind,
        "State": op.state, "Result": op.result, "Summary": op.summary, "CheckpointIdentifier": op.checkpoint,
        "CheckpointTime": render.iso(op.checkpoint_time), "InitiatedBy": op.initiated_by,
        "StartedAt": render.iso(op.started_at), "ReadyAt": render.iso(op.ready_at), "EndedAt": render.iso(ended),
        "RtoInSeconds": round(op.ready_at - op.started_at, 3) if op.ready_at else None,
        "DurationInSeconds": round(ended - op.started_at, 3) if ended else None,
        "PhasesInSeconds": {k: float(v) for k, v in (op.phases or {}).items() if isinstance(v, int | float)},
        "CommitDeadline": render.iso(op.commit_deadline), "WaitingForPeer": op.peer_pending,
        "ProtectedSiteIdentifier": op.protected_site, "RecoverySiteIdentifier": op.recovery_site,
        "TaskIdentifier": op.task,
        "Vms": [{"SourceVmIdentifier": v["Source"], "VmName": v["RecoveryName"], "RecoveryVmIdentifier": v["RecoveryVm"],
                 "BootGroupName": v["BootGroup"], "PoweredOn": bool(v["PoweredOn"]),
                 "Disks": [{"VolumeIdentifier": d["Volume"], "Export": d["Export"], "Uri": d["Uri"], "File": d["File"]}
                           for d in v["Disks"]]} for v in op.vms or []],
    }


@reports.operation("GET", "/reports/recovery", summary="Recovery operations, newest first",
                   response=schemas.array_of("RecoveryReport"),
                   query=[Param("vpgIdentifier", schemas.string(maxLength=255)),
                          Param("type", schemas.string(enum=schemas.RECOVERY_TYPES)),
                          Param("state", schemas.string(enum=schemas.RECOVERY_STATES)),
                          Param("limit", schemas.integer(minimum=1, maximum=10000))])
def list_recovery_reports(query):
    q = m.RecoveryOperation.select()
    if "vpgIdentifier" in query:
        q = q.where(m.RecoveryOperation.vpg == query["vpgIdentifier"])
    if "type" in query:
        q = q.where(m.RecoveryOperation.kind == query["type"])
    if "state" in query:
        q = q.where(m.RecoveryOperation.state == query["state"])
    return [report_json(op) for op in q.order_by(m.RecoveryOperation.id.desc()).limit(query.get("limit", 500))]


@reports.operation("GET", "/reports/recovery/{operationIdentifier}", summary="One recovery operation",
                   response=schemas.ref("RecoveryReport"))
def get_recovery_report(operationIdentifier):
    op = m.RecoveryOperation.get_or_none(m.RecoveryOperation.identifier == operationIdentifier)
    if op is None:
        raise NotFoundError(f"no recovery operation {operationIdentifier!r}: list them with GET "
                            "/v1/reports/recovery", code="OperationNotFound")
    return report_json(op)
