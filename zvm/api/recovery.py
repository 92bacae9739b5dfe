"""Recovery operations of a VPG (failover test, failover, move; their stop, commit and rollback) and the
recovery reports. Every action returns a task; the work is in zvm/orchestration/recovery.py. They are
ordered on the ZVM of the site the VPG recovers to."""

from __future__ import annotations

from zvm import models as m
from zvm.api import render, schemas
from zvm.api.context import service
from zvm.api.spec import ApiBlueprint, Param
from zvm.api.vpgs import get_vpg
from zvm.errors import NotFoundError
from zvm.orchestration import recovery

bp = ApiBlueprint("recovery", __name__, tag="RecoveryOperations",
                  description="Failover test, failover and move of a VPG, ordered on the ZVM of the site it "
                              "recovers to; each returns a task.")
reports = ApiBlueprint("reports", __name__, tag="Reports", description="What recovery operations did.")

ERRORS = [409]


def _start(vpgIdentifier: str, kind: str, params: dict) -> dict:
    vpg = get_vpg(vpgIdentifier)
    return render.task_id(recovery.start_operation(vpg, kind, params, service().local_site()))


def _next(vpgIdentifier: str, task_kind: str, params: dict) -> dict:
    vpg = get_vpg(vpgIdentifier)
    return render.task_id(recovery.order_next(vpg, task_kind, params, service().local_site()))


@bp.operation("POST", "/vpgs/{vpgIdentifier}/failoverTest", role="operator", summary="Start a failover test", status=202,
              body=schemas.ref("FailoverTestInput"), body_required=False, response=schemas.ref("TaskId"),
              errors=ERRORS)
def failover_test(vpgIdentifier, body):
    """Test VMs ("<vm> - testing recovery") in the recovery vCenter on the test network, their disks the
    VPG's volumes at the checkpoint with scratch overlays; replication goes on. Stop it with
    failoverTestStop."""
    vpg = get_vpg(vpgIdentifier)
    body = dict(body or {})
    body.setdefault("ScratchLimitInMB", vpg.journal_hard_limit_mb)
    return _start(vpgIdentifier, "FailoverTest", body)


@bp.operation("POST", "/vpgs/{vpgIdentifier}/failoverTestStop", role="operator", summary="Stop a failover test", status=202,
              body=schemas.ref("FailoverTestStopInput"), body_required=False, response=schemas.ref("TaskId"),
              errors=ERRORS)
def failover_test_stop(vpgIdentifier, body):
    """Power the test VMs off, delete them, discard the scratch; the test's result and duration are kept
    (GET /v1/reports/recovery)."""
    return _next(vpgIdentifier, "FailoverTestStop", dict(body or {}))


@bp.operation("POST", "/vpgs/{vpgIdentifier}/Failover", role="operator", summary="Fail over", status=202,
              body=schemas.ref("FailoverInput"), body_required=False, response=schemas.ref("TaskId"),
              errors=ERRORS)
def failover(vpgIdentifier, body):
    """Recover the VMs at the checkpoint on the failover network (re-IP where configured), by boot group;
    the source VMs are shut down by the policy when their site answers. Then the commit policy."""
    return _start(vpgIdentifier, "Failover", dict(body or {}))


@bp.operation("POST", "/vpgs/{vpgIdentifier}/FailoverCommit", role="operator", summary="Commit a failover", status=202,
              body=schemas.ref("FailoverCommitInput"), body_required=False, response=schemas.ref("TaskId"),
              errors=ERRORS)
def failover_commit(vpgIdentifier, body):
    return _next(vpgIdentifier, "FailoverCommit", dict(body or {}))


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
    params = {"CommitPolicy": "Commit", "CommitPolicyTimeoutInSeconds": 0, "ForceShutdown": True,
              "ReverseProtection": True, **(body or {})}
    return _start(vpgIdentifier, "Move", params)


@bp.operation("POST", "/vpgs/{vpgIdentifier}/moveCommit", role="operator", summary="Commit a move", status=202,
              body=schemas.ref("FailoverCommitInput"), body_required=False, response=schemas.ref("TaskId"),
              errors=ERRORS)
def move_commit(vpgIdentifier, body):
    return _next(vpgIdentifier, "MoveCommit", dict(body or {}))


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
