"""Protected VMs: one entry per VM in a VPG, with its VPG's state."""

from __future__ import annotations

import functools
import operator

from zvm import models as m
from zvm.api import schemas
from zvm.api.spec import ApiBlueprint, Param
from zvm.errors import NotFoundError

bp = ApiBlueprint("vms", __name__, tag="Vms", description="VMs protected by a VPG.")


def _rows(where=None) -> list[dict]:
    protected = m.Site.alias("protected")
    recovery = m.Site.alias("recovery")
    q = (m.VpgVm.select(m.VpgVm.id, m.VpgVm.vm_moid, m.VpgVm.name, m.VpgVm.boot_group,
                        m.Vpg.identifier, m.Vpg.name.alias("vpg_name"), m.Vpg.status, m.Vpg.substatus,
                        m.Vpg.priority, m.Vpg.actual_rpo_seconds,
                        protected.identifier.alias("p_id"), protected.name.alias("p_name"),
                        recovery.identifier.alias("r_id"), recovery.name.alias("r_name"))
         .join(m.Vpg).join(protected, on=(m.Vpg.protected_site == protected.id))
         .switch(m.Vpg).join(recovery, on=(m.Vpg.recovery_site == recovery.id)))
    if where is not None:
        q = q.where(where)
    rows = list(q.order_by(m.VpgVm.name, m.VpgVm.id).dicts())
    volumes: dict[int, list] = {}
    if rows:
        vq = m.VpgVolume.select().order_by(m.VpgVolume.vm, m.VpgVolume.disk_key)
        if where is not None:
            vq = vq.where(m.VpgVolume.vm.in_([r["id"] for r in rows]))
        for v in vq.dicts():
            volumes.setdefault(v["vm"], []).append({
                "VolumeIdentifier": v["volume_id"], "DiskKey": v["disk_key"], "FileName": v["file_name"],
                "ProvisionedSizeInBytes": int(v["capacity"]), "RecoveryDatastoreIdentifier": v["recovery_datastore"]})
    out = []
    for r in rows:
        vols = volumes.get(r["id"], [])
        out.append({
            "VmIdentifier": r["vm_moid"], "VmName": r["name"], "VpgIdentifier": r["identifier"],
            "VpgName": r["vpg_name"], "Status": r["status"], "SubStatus": r["substatus"],
            "Priority": r["priority"], "ActualRPO": r["actual_rpo_seconds"],
            "ProtectedSite": {"SiteIdentifier": r["p_id"], "SiteName": r["p_name"]},
            "RecoverySite": {"SiteIdentifier": r["r_id"], "SiteName": r["r_name"]},
            "BootGroupName": r["boot_group"],
            "ProvisionedStorageInMB": sum(v["ProvisionedSizeInBytes"] for v in vols) // (1 << 20),
            "Volumes": vols,
        })
    return out


@bp.operation("GET", "/vms", summary="Protected VMs", response=schemas.array_of("ProtectedVm"),
              query=[Param("vpgIdentifier", schemas.string(maxLength=255)),
                     Param("vmName", schemas.string(maxLength=255)),
                     Param("status", schemas.string(enum=schemas.VPG_STATUSES))])
def list_protected_vms(query):
    where = None
    clauses = []
    if "vpgIdentifier" in query:
        clauses.append(m.Vpg.identifier == query["vpgIdentifier"])
    if "vmName" in query:
        clauses.append(m.VpgVm.name == query["vmName"])
    if "status" in query:
        clauses.append(m.Vpg.status == query["status"])
    if clauses:
        where = functools.reduce(operator.and_, clauses)
    return _rows(where)


@bp.operation("GET", "/vms/{vmIdentifier}", summary="One protected VM", response=schemas.ref("ProtectedVm"))
def get_protected_vm(vmIdentifier):
    rows = _rows(m.VpgVm.vm_moid == vmIdentifier)
    if not rows:
        raise NotFoundError(f"VM {vmIdentifier!r} is not protected: list protected VMs with GET /v1/vms",
                            code="VmNotFound")
    return rows[0]
