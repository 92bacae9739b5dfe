"""Protected VMs: one entry per VM in a VPG, with its VPG's state."""

from __future__ import annotations

import functools
import operator

from zvm import enums
from zvm import models as m
from zvm.api import schemas
from zvm.api.spec import ApiBlueprint, Param
from zvm.errors import NotFoundError

bp = ApiBlueprint("vms", __name__, tag="Vms", description="VMs protected by a VPG.")


def _rows(where=None) -> list[dict]:
    # Rows as the driver returns them (every column is text or an integer: nothing for peewee to convert);
    # its per-row conversion was most of the time of building GET /v1/vms on a large site.
    protected = m.Site.alias("protected")
    recovery = m.Site.alias("recovery")
    q = (m.VpgVm.select(m.VpgVm.id, m.VpgVm.vm_moid, m.VpgVm.name, m.VpgVm.boot_group,
                        m.Vpg.identifier, m.Vpg.name, m.Vpg.status, m.Vpg.substatus,
                        m.Vpg.priority, m.Vpg.actual_rpo_seconds,
                        protected.identifier, protected.name, recovery.identifier, recovery.name)
         .join(m.Vpg).join(protected, on=(m.Vpg.protected_site == protected.id))
         .switch(m.Vpg).join(recovery, on=(m.Vpg.recovery_site == recovery.id)))
    if where is not None:
        q = q.where(where)
    db = m.VpgVm._meta.database
    rows = db.execute(q.order_by(m.VpgVm.name, m.VpgVm.id)).fetchall()
    volumes: dict[int, list] = {}
    if rows:
        vq = m.VpgVolume.select(m.VpgVolume.vm, m.VpgVolume.volume_id, m.VpgVolume.disk_key,
                                m.VpgVolume.file_name, m.VpgVolume.capacity,
                                m.VpgVolume.recovery_datastore).order_by(m.VpgVolume.vm, m.VpgVolume.disk_key)
        if where is not None:
            vq = vq.where(m.VpgVolume.vm.in_([r[0] for r in rows]))
        for vm, volume_id, disk_key, file_name, capacity, datastore in db.execute(vq):
            volumes.setdefault(vm, []).append({
                "VolumeIdentifier": volume_id, "DiskKey": disk_key, "FileName": file_name,
                "ProvisionedSizeInBytes": int(capacity), "RecoveryDatastoreIdentifier": datastore})
    out = []
    for (vm_id, vm_moid, name, boot_group, vpg_id, vpg_name, status, substatus, priority, rpo,
         p_id, p_name, r_id, r_name) in rows:
        vols = volumes.get(vm_id, [])
        out.append({
            "VmIdentifier": vm_moid, "VmName": name, "VpgIdentifier": vpg_id,
            "VpgName": vpg_name, "Status": enums.VpgStatus.of(status),
            "SubStatus": enums.VpgSubStatus.of(substatus),
            "Priority": enums.VpgPriority.of(priority), "ActualRPO": rpo,
            "ProtectedSite": {"SiteIdentifier": p_id, "SiteName": p_name},
            "RecoverySite": {"SiteIdentifier": r_id, "SiteName": r_name},
            "BootGroupName": boot_group,
            "ProvisionedStorageInMB": sum(v["ProvisionedSizeInBytes"] for v in vols) // (1 << 20),
            "Volumes": vols,
        })
    return out


@bp.operation("GET", "/vms", summary="Protected VMs", response=schemas.array_of("ProtectedVm"),
              query=[Param("vpgIdentifier", schemas.string(maxLength=255)),
                     Param("vmName", schemas.string(maxLength=255)),
                     Param("status", schemas.enum(enums.VpgStatus))])
def list_protected_vms(query):
    where = None
    clauses = []
    if "vpgIdentifier" in query:
        clauses.append(m.Vpg.identifier == query["vpgIdentifier"])
    if "vmName" in query:
        clauses.append(m.VpgVm.name == query["vmName"])
    if "status" in query:
        clauses.append(m.Vpg.status == query["status"].internal)
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
