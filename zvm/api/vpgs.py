"""VPGs: list and filter, one VPG, delete, checkpoints, and the pause / resume / forcesync actions."""

from __future__ import annotations

import peewee

from zvm import enums
from zvm import models as m
from zvm.api import render, schemas
from zvm.api.context import note_entity, service
from zvm.api.queue import queue_task
from zvm.api.spec import ApiBlueprint, Param
from zvm.api.validate import timestamp_of
from zvm.errors import ConflictError, NotFoundError
from zvm.orchestration.operations import active_operation

bp = ApiBlueprint("vpgs", __name__, tag="Vpgs", description="Virtual Protection Groups.")


def get_vpg(identifier: str) -> m.Vpg:
    vpg = m.Vpg.get_or_none(m.Vpg.identifier == identifier)
    if vpg is None:
        raise NotFoundError(f"no VPG {identifier!r}: list them with GET /v1/vpgs", code="VpgNotFound")
    return vpg


def vpg_query() -> peewee.ModelSelect:
    """VPGs with both sites and their VM count and provisioned size, in one query."""
    protected = m.Site.alias("protected")
    recovery = m.Site.alias("recovery")
    sizes = (m.VpgVm.select(m.VpgVm.vpg, peewee.fn.COUNT(peewee.fn.DISTINCT(m.VpgVm.id)).alias("vms"),
                            peewee.fn.COALESCE(peewee.fn.SUM(m.VpgVolume.capacity), 0).alias("bytes"))
             .join(m.VpgVolume, peewee.JOIN.LEFT_OUTER).group_by(m.VpgVm.vpg).alias("sizes"))
    return (m.Vpg.select(m.Vpg, protected.identifier.alias("p_id"), protected.name.alias("p_name"),
                         recovery.identifier.alias("r_id"), recovery.name.alias("r_name"),
                         peewee.fn.COALESCE(sizes.c.vms, 0).alias("vms_count"),
                         peewee.fn.COALESCE(sizes.c.bytes, 0).alias("vms_bytes"))
            .join(protected, on=(m.Vpg.protected_site == protected.id))
            .switch(m.Vpg).join(recovery, on=(m.Vpg.recovery_site == recovery.id))
            .switch(m.Vpg).join(sizes, peewee.JOIN.LEFT_OUTER, on=(sizes.c.vpg_id == m.Vpg.id)))


def vpg_json(r: dict) -> dict:
    return {
        "VpgIdentifier": r["identifier"], "VpgName": r["name"], "Status": enums.VpgStatus.of(r["status"]),
        "SubStatus": enums.VpgSubStatus.of(r["substatus"]), "Priority": enums.VpgPriority.of(r["priority"]),
        "ProtectedSite": {"SiteIdentifier": r["p_id"], "SiteName": r["p_name"]},
        "RecoverySite": {"SiteIdentifier": r["r_id"], "SiteName": r["r_name"]},
        "VmsCount": int(r["vms_count"]), "ConfiguredRpoSeconds": r["rpo_threshold_seconds"],
        "ActualRPO": r["actual_rpo_seconds"], "ThroughputInMB": float(r["throughput_mb"]), "IOPs": r["iops"],
        "ProvisionedStorageInMB": int(r["vms_bytes"]) // (1 << 20),
        "JournalUsedStorageMb": float(r["journal_used_mb"]),
        "HistoryStatusApi": {"ActualHistoryInMinutes": int(r["history_seconds"]) // 60,
                             "ConfiguredHistoryInMinutes": int(r["journal_history_hours"]) * 60},
        "JournalHardLimitInMB": r["journal_hard_limit_mb"],
        "JournalWarningThresholdInMB": r["journal_warning_mb"],
        "UseWanCompression": bool(r["wan_compression"]), "IsPaused": bool(r["paused"]),
        "LastCheckpointAt": render.iso(r["last_checkpoint_at"]), "CreatedAt": render.iso(r["created_at"]),
    }


@bp.operation("GET", "/vpgs", summary="VPGs, optionally filtered", response=schemas.array_of("Vpg"),
              query=[Param("name", schemas.string(maxLength=255), "Exact VPG name."),
                     Param("status", schemas.enum(enums.VpgStatus)),
                     Param("subStatus", schemas.enum(enums.VpgSubStatus)),
                     Param("priority", schemas.enum(enums.VpgPriority)),
                     Param("protectedSiteIdentifier", schemas.string(maxLength=255)),
                     Param("recoverySiteIdentifier", schemas.string(maxLength=255))])
def list_vpgs(query):
    q = vpg_query()
    if "name" in query:
        q = q.where(m.Vpg.name == query["name"])
    if "status" in query:
        q = q.where(m.Vpg.status == query["status"].internal)
    if "subStatus" in query:
        q = q.where(m.Vpg.substatus == query["subStatus"].internal)
    if "priority" in query:
        q = q.where(m.Vpg.priority == query["priority"].internal)
    for param, column in (("protectedSiteIdentifier", m.Vpg.protected_site),
                          ("recoverySiteIdentifier", m.Vpg.recovery_site)):
        if param in query:
            site = m.Site.get_or_none(m.Site.identifier == query[param])
            q = q.where(column == (site.id if site else -1))
    return [vpg_json(r) for r in q.order_by(m.Vpg.name).dicts()]


@bp.operation("GET", "/vpgs/{vpgIdentifier}", summary="One VPG", response=schemas.ref("Vpg"))
def get_vpg_by_id(vpgIdentifier):
    row = vpg_query().where(m.Vpg.identifier == vpgIdentifier).dicts().first()
    if row is None:
        get_vpg(vpgIdentifier)  # raises the NotFound
    return vpg_json(row)


@bp.operation("DELETE", "/vpgs/{vpgIdentifier}", summary="Delete a VPG", status=202,
              body=schemas.ref("VpgDelete"), body_required=False, response=schemas.ref("TaskId"), errors=[409])
def delete_vpg(vpgIdentifier, body):
    """Stop protecting the VPG's VMs and remove the VPG. With ``KeepRecoveryVolumes`` the replica disks stay
    on the recovery datastore (to pre-seed a new VPG). Returns the task that removes it."""
    vpg = get_vpg(vpgIdentifier)
    if vpg.status == "Deleting":
        raise ConflictError(f"VPG {vpg.name} is being deleted already: follow its task")
    if vpg.protected_site_id != service().local_site_id():
        raise ConflictError(f"VPG {vpg.name} is protected by site {vpg.protected_site.name}: delete it there")
    running = active_operation(vpg.identifier)
    if running is not None:
        raise ConflictError(f"VPG {vpg.name} has a {running.kind} in progress: end it before deleting the VPG")
    vpg.status, vpg.substatus = "Deleting", "Deleting"
    vpg.save(only=[m.Vpg.status, m.Vpg.substatus])  # the fields this call owns: not the monitor's figures
    body = body or {}
    task = queue_task("DeleteVpg", vpg=vpg.identifier, params={
        "KeepRecoveryVolumes": bool(body.get("KeepRecoveryVolumes", False)), "Force": bool(body.get("Force", False))})
    return render.task_id(task)


def _actionable(vpg: m.Vpg, action: str) -> None:
    if vpg.status in ("Deleting", "FailingOver", "Moving", "Recovered"):
        raise ConflictError(f"VPG {vpg.name} is {vpg.status}: it cannot {action} now")
    if vpg.protected_site_id != service().local_site_id():
        raise ConflictError(f"VPG {vpg.name} is protected by site {vpg.protected_site.name}: it cannot {action} "
                            "from here; use that site's ZVM")


@bp.operation("POST", "/vpgs/{vpgIdentifier}/pause", role="operator", summary="Pause replication", status=202,
              response=schemas.ref("TaskId"), errors=[409])
def pause_vpg(vpgIdentifier):
    """Writes are tracked in the IO filters' dirty maps while paused; resume sends them (bitmap sync)."""
    vpg = get_vpg(vpgIdentifier)
    _actionable(vpg, "pause")
    if vpg.paused:
        raise ConflictError(f"VPG {vpg.name} is paused already: resume it with POST .../resume")
    vpg.paused, vpg.substatus = True, "ReplicationPausedUserInitiated"
    vpg.save(only=[m.Vpg.paused, m.Vpg.substatus])
    return render.task_id(queue_task("PauseVpg", vpg=vpg.identifier))


@bp.operation("POST", "/vpgs/{vpgIdentifier}/resume", role="operator", summary="Resume replication", status=202,
              response=schemas.ref("TaskId"), errors=[409])
def resume_vpg(vpgIdentifier):
    vpg = get_vpg(vpgIdentifier)
    _actionable(vpg, "resume")
    if not vpg.paused:
        raise ConflictError(f"VPG {vpg.name} is not paused")
    vpg.paused, vpg.substatus = False, "BitmapSync"
    vpg.save(only=[m.Vpg.paused, m.Vpg.substatus])
    return render.task_id(queue_task("ResumeVpg", vpg=vpg.identifier))


@bp.operation("POST", "/vpgs/{vpgIdentifier}/forcesync", summary="Force a delta sync", status=202,
              response=schemas.ref("TaskId"), errors=[409])
def force_sync_vpg(vpgIdentifier):
    """Compare every block of every volume with the recovery side and send what differs."""
    vpg = get_vpg(vpgIdentifier)
    _actionable(vpg, "sync")
    if vpg.paused:
        raise ConflictError(f"VPG {vpg.name} is paused: resume it first")
    vpg.substatus = "DeltaSync"
    vpg.save(only=[m.Vpg.substatus])
    return render.task_id(queue_task("ForceSyncVpg", vpg=vpg.identifier))


# --- checkpoints ------------------------------------------------------------------------------------------

def checkpoint_json(c: m.Checkpoint, vpg_identifier: str) -> dict:
    return {"CheckpointIdentifier": c.identifier, "VpgIdentifier": vpg_identifier,
            "TimeStamp": render.iso(c.timestamp), "Tag": c.tag, "IsConsistent": bool(c.consistent)}


@bp.operation("GET", "/vpgs/{vpgIdentifier}/checkpoints", summary="Checkpoints of a VPG",
              response=schemas.array_of("Checkpoint"),
              query=[Param("startDate", schemas.date_time(), "Only checkpoints at or after this time."),
                     Param("endDate", schemas.date_time(), "Only checkpoints at or before this time."),
                     Param("taggedOnly", schemas.boolean()),
                     Param("consistentOnly", schemas.boolean()),
                     Param("limit", schemas.integer(minimum=1, maximum=100000))])
def list_checkpoints(vpgIdentifier, query):
    """Newest first."""
    vpg = get_vpg(vpgIdentifier)
    q = m.Checkpoint.select().where(m.Checkpoint.vpg == vpg)
    if "startDate" in query:
        q = q.where(m.Checkpoint.timestamp >= timestamp_of(query["startDate"]))
    if "endDate" in query:
        q = q.where(m.Checkpoint.timestamp <= timestamp_of(query["endDate"], end=True))
    if query.get("taggedOnly"):
        q = q.where(m.Checkpoint.tag.is_null(False))
    if query.get("consistentOnly"):
        q = q.where(m.Checkpoint.consistent == True)  # noqa: E712
    q = q.order_by(m.Checkpoint.timestamp.desc()).limit(query.get("limit", 10000))
    return [checkpoint_json(c, vpg.identifier) for c in q]


@bp.operation("POST", "/vpgs/{vpgIdentifier}/checkpoints", role="operator", summary="Take a tagged checkpoint", status=202,
              body=schemas.ref("CheckpointCreate"), response=schemas.ref("TaskId"), errors=[409])
def insert_tagged_checkpoint(vpgIdentifier, body):
    vpg = get_vpg(vpgIdentifier)
    _actionable(vpg, "take a checkpoint")
    if vpg.paused:
        raise ConflictError(f"VPG {vpg.name} is paused: resume it first")
    note_entity(vpg.identifier)
    return render.task_id(queue_task("CheckpointVpg", vpg=vpg.identifier, params={"Tag": body["CheckpointName"]}))
