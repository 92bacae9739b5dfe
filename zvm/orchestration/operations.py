"""Recovery operations' kinds and admission: the one place that says which operations exist, which of their
states count as running, what the VPG shows while one runs, and the refusal when one is running.

    kind           VPG while starting / once up (substatus)     VPG status     protected site shows (``BEGIN``)
    FailoverTest   Testing / Testing                            unchanged      substatus Testing
    Failover       FailingOver / FailingOverBeforeCommit        FailingOver    status and substatus FailingOver
    Move           Moving / MovingBeforeCommit                  Moving         status and substatus Moving

``active_operation`` is the VPG's running operation (a state in ``ACTIVE``); ``operation_in_progress`` the
refusal that names it, carrying its kind as data (``detail["OperationKind"]``) so that a caller (a delete
refused here or by the paired site) can show the operation again without reading the message.

Admission: ``start_operation`` checks that an operation may start now, records it (a ``RecoveryOperation``
row with its VMs planned) and queues its task; ``order_next`` stops, commits or rolls back the running one
(``NEXT``: which task may follow which state). Both run inside the caller's transaction (the API's, or the
recovery watch's for a commit policy) and change nothing when they refuse; the user who ordered is an
argument. Running the tasks is zvm.orchestration.recovery's.
"""

from __future__ import annotations

import time

from zvm import models as m
from zvm.errors import ConflictError, ValidationError
from zvm.orchestration.tasks import create_task

KINDS = ("FailoverTest", "Failover", "Move")
ACTIVE = ("Starting", "Running", "BeforeCommit", "Stopping", "Committing", "RollingBack")
SUBSTATUS = {  # (starting, up) per kind
    "FailoverTest": ("Testing", "Testing"),
    "Failover": ("FailingOver", "FailingOverBeforeCommit"),
    "Move": ("Moving", "MovingBeforeCommit"),
}
STATUS = {"FailoverTest": None, "Failover": "FailingOver", "Move": "Moving"}
COMMIT_POLICIES = ("Commit", "Rollback", "None")
SHUTDOWN_POLICIES = ("None", "Shutdown", "ForceShutdown")
TEST_SUFFIX = " - testing recovery"
# what the protected site's VPG shows while the operation runs (zvm.orchestration.protected_side "begin")
BEGIN = {"FailoverTest": {"substatus": "Testing"},
         "Failover": {"status": "FailingOver", "substatus": "FailingOver"},
         "Move": {"status": "Moving", "substatus": "Moving"}}


def active_operation(vpg_identifier: str) -> m.RecoveryOperation | None:
    return (m.RecoveryOperation.select().where(m.RecoveryOperation.vpg == vpg_identifier,
                                               m.RecoveryOperation.state.in_(ACTIVE))
            .order_by(m.RecoveryOperation.id.desc()).first())


def operation_in_progress(vpg_name: str, running: m.RecoveryOperation, then: str,
                          code: str | None = None) -> ConflictError:
    """The refusal (raise it) while ``running`` runs; ``then`` ends the message (what to do after it)."""
    return ConflictError(f"VPG {vpg_name} has a {running.kind} in progress ({running.state}, operation "
                         f"{running.identifier}): stop, commit or roll it back{then}", code=code,
                         detail={"OperationKind": running.kind})


def shown_while_running(error: BaseException | None) -> dict:
    """The VPG fields (``BEGIN``) of the operation an ``operation_in_progress`` refusal names; {} for another
    error."""
    kind = getattr(error, "detail", {}).get("OperationKind") if error is not None else None
    return dict(BEGIN.get(kind, {}))


def _check_recovers_here(vpg: m.Vpg, local: m.Site, what: str) -> None:
    if vpg.recovery_site_id != local.id:
        site = vpg.recovery_site
        raise ConflictError(f"VPG {vpg.name} recovers to site {site.name}: order the {what} on that site's ZVM "
                            f"({site.zvm_address}:{site.api_port})")


def _peer_unreachable(vpg: m.Vpg) -> str | None:
    if vpg.protected_site.is_local:
        return None
    peer = m.PeerSite.get_or_none(m.PeerSite.site == vpg.protected_site)
    if peer is None:
        return f"site {vpg.protected_site.name} is no longer paired"
    if peer.state == "Unreachable":
        seen = f" (last answer {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(peer.last_seen))})" \
            if peer.last_seen else ""
        return f"the ZVM of site {vpg.protected_site.name} does not answer{seen}"
    return None


def start_operation(vpg: m.Vpg, kind: str, params: dict, local: m.Site, *, user: str = "system") -> m.Task:
    """Check that the operation can start now, record it and queue its task (``user`` ordered it).
    Refusals change nothing."""
    what = {"FailoverTest": "failover test", "Failover": "failover", "Move": "move"}[kind]
    _check_recovers_here(vpg, local, what)
    if vpg.status in ("Deleting",):
        raise ConflictError(f"VPG {vpg.name} is being deleted: it cannot {what}")
    running = active_operation(vpg.identifier)
    if running is not None:
        raise operation_in_progress(vpg.name, running, " first")
    if vpg.status == "Recovered":
        raise ConflictError(f"VPG {vpg.name} was recovered already ({vpg.substatus}): configure it again first")
    if not m.VpgVm.select().where(m.VpgVm.vpg == vpg).exists():
        raise ConflictError(f"VPG {vpg.name} has no VMs to recover")
    checkpoint = params.get("CheckpointIdentifier")
    if checkpoint and not m.Checkpoint.select().where(m.Checkpoint.vpg == vpg,
                                                      m.Checkpoint.identifier == checkpoint).exists():
        raise ValidationError(f"CheckpointIdentifier: {checkpoint!r} is not a checkpoint of VPG {vpg.name} in its "
                              "journal: it is unknown, or expired (older than the journal's history); choose one "
                              f"from GET /v1/vpgs/{vpg.identifier}/checkpoints", field="CheckpointIdentifier")
    if kind == "Move":
        down = _peer_unreachable(vpg)
        if down:
            raise ConflictError(f"VPG {vpg.name} cannot move now: {down}, and a move needs both sites (it shuts "
                                "the VMs down there and waits for their last writes): bring the site back, or "
                                "fail over instead", code="PeerUnreachable")
    if params.get("ReverseProtection") and vpg.protected_site_id == vpg.recovery_site_id:
        raise ValidationError("ReverseProtection: the VPG recovers to its own site; there is nothing to protect "
                              "back to", field="ReverseProtection")
    op = m.RecoveryOperation.create(
        vpg=vpg.identifier, vpg_name=vpg.name, kind=kind, params=params, checkpoint=checkpoint or None,
        protected_site=vpg.protected_site.identifier, recovery_site=vpg.recovery_site.identifier,
        recovery_vra=vpg.recovery_vra, vms=_plan_vms(vpg, kind, params.get("VmIdentifiers")),
        initiated_by=user or "system")
    fields = {"substatus": SUBSTATUS[kind][0], "updated_at": time.time()}
    if STATUS[kind]:
        fields["status"] = STATUS[kind]
    m.Vpg.update(**fields).where(m.Vpg.id == vpg.id).execute()
    task = create_task(kind, vpg=vpg.identifier, params={"Operation": op.identifier}, user=user)
    m.RecoveryOperation.update(task=task.identifier).where(m.RecoveryOperation.id == op.id).execute()
    return task


NEXT = {  # task kind -> (operation kinds, state it needs, state it sets, what)
    "FailoverTestStop": (("FailoverTest",), "Running", "Stopping", "stop the failover test"),
    "FailoverCommit": (("Failover",), "BeforeCommit", "Committing", "commit the failover"),
    "FailoverRollback": (("Failover",), "BeforeCommit", "RollingBack", "roll the failover back"),
    "MoveCommit": (("Move",), "BeforeCommit", "Committing", "commit the move"),
    "MoveRollback": (("Move",), "BeforeCommit", "RollingBack", "roll the move back"),
}


def order_next(vpg: m.Vpg, task_kind: str, params: dict, local: m.Site, *, by: str = "",
               user: str = "system") -> m.Task:
    """Stop, commit or roll back the VPG's running operation (the API for ``user``, or the commit policy's
    timer)."""
    kinds, needs, sets, what = NEXT[task_kind]
    _check_recovers_here(vpg, local, what.split(" ", 1)[0])
    op = active_operation(vpg.identifier)
    if op is None or op.kind not in kinds:
        raise ConflictError(f"VPG {vpg.name} has no {' or '.join(kinds)} in progress: nothing to {what.split()[0]}")
    if op.state != needs:
        hint = f"wait for task {op.task}" if op.state == "Starting" else "follow its task"
        raise ConflictError(f"the {op.kind} of VPG {vpg.name} is {op.state}: it cannot {what} now ({hint})")
    task = create_task(task_kind, vpg=vpg.identifier, params={"Operation": op.identifier, **params}, user=user)
    m.RecoveryOperation.update(state=sets, task=task.identifier,
                               params={**op.params, **{f"{task_kind}.{k}": v for k, v in params.items()},
                                       **({"OrderedBy": by} if by else {})}).where(
        m.RecoveryOperation.id == op.id).execute()
    if task_kind == "FailoverTestStop":
        m.Vpg.update(substatus="StoppingTest").where(m.Vpg.id == vpg.id).execute()
    else:
        verb = "Committing" if sets == "Committing" else "RollingBack"
        m.Vpg.update(substatus=("FailingOver" if op.kind == "Failover" else "Moving") + verb).where(
            m.Vpg.id == vpg.id).execute()
    return task


def _plan_vms(vpg: m.Vpg, kind: str, only: list[str] | None = None) -> list[dict]:
    """The VMs to recover: every VM of the VPG, or those of ``only`` (a failover test of some VMs)."""
    out = []
    for vm in m.VpgVm.select().where(m.VpgVm.vpg == vpg).order_by(m.VpgVm.id):
        if only and vm.vm_moid not in only:
            continue
        disks = [{"Volume": v.volume_id, "Capacity": int(v.capacity), "File": v.recovery_path, "Export": None,
                  "Uri": None} for v in vm.volumes.order_by(m.VpgVolume.disk_key)]
        out.append({"Source": vm.vm_moid, "Name": vm.name,
                    "RecoveryName": vm.name + TEST_SUFFIX if kind == "FailoverTest" else vm.name,
                    "BootGroup": vm.boot_group or "", "Host": vm.recovery_host, "Datastore": vm.recovery_datastore,
                    "Nics": vm.nics or [], "RecoveryVm": None, "PoweredOn": False, "Customized": False,
                    "Disks": disks})
    return out
