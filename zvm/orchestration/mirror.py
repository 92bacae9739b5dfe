"""What the recovery site's ZVM keeps of a VPG it recovers: a copy of the VPG (its "mirror").

A VPG is owned by the ZVM of its protected site (its settings are edited there, its protect roles are
configured from there). Its recovery site's ZVM must still be able to fail it over when the protected site
is gone, so it keeps a row of the VPG with the same identifier (``protected_site`` the peer,
``recovery_site`` itself): name, recovery settings, boot groups, VMs with their re-IP settings, volumes
with where each replica lives. The protected site sends it (``vpg_doc``) with every recover request; the
row is replaced each time. After a failover with reverse protection the two rows swap roles (the VMs now
run on the former recovery site, which owns the VPG; the other site keeps the mirror).
"""

from __future__ import annotations

import copy
import time

from zvm import models as m
from zvm.errors import ConflictError


def vpg_doc(vpg: m.Vpg) -> dict:
    """The VPG as its recovery site needs it (built by the owner, from its rows)."""
    vms = []
    for vm in m.VpgVm.select().where(m.VpgVm.vpg == vpg).order_by(m.VpgVm.id):
        vms.append({
            "VmIdentifier": vm.vm_moid, "Name": vm.name, "BootGroup": vm.boot_group, "Nics": vm.nics or [],
            "RecoveryHost": vm.recovery_host, "RecoveryDatastore": vm.recovery_datastore,
            "Volumes": [{"VolumeIdentifier": v.volume_id, "DiskKey": v.disk_key, "FileName": v.file_name,
                         "Capacity": int(v.capacity), "RecoveryDatastore": v.recovery_datastore,
                         "RecoveryPath": v.recovery_path}
                        for v in vm.volumes.order_by(m.VpgVolume.disk_key)],
        })
    return {
        "Name": vpg.name, "Priority": vpg.priority, "RpoInSeconds": vpg.rpo_threshold_seconds,
        "JournalHistoryInHours": vpg.journal_history_hours, "JournalHardLimitInMB": vpg.journal_hard_limit_mb,
        "JournalWarningThresholdInMB": vpg.journal_warning_mb, "JournalDatastore": vpg.journal_datastore,
        "UseWanCompression": bool(vpg.wan_compression), "RecoveryHost": vpg.recovery_host,
        "RecoveryCluster": vpg.recovery_cluster, "RecoveryDatastore": vpg.recovery_datastore,
        "RecoveryFolder": vpg.recovery_folder, "FailoverNetwork": vpg.failover_network,
        "TestNetwork": vpg.test_network, "BootGroups": copy.deepcopy(vpg.boot_groups or []), "Vms": vms,
    }


def _unique_name(name: str, identifier: str, site: m.Site) -> str:
    clash = m.Vpg.select().where(m.Vpg.name == name, m.Vpg.identifier != identifier).exists()
    return f"{name} (from {site.name})"[:255] if clash else name


def apply_doc(vpg: m.Vpg, doc: dict, *, replica_paths: dict[str, str] | None = None) -> None:
    """Set the VPG's settings, VMs and volumes from a document (call in a transaction)."""
    vpg.priority = doc.get("Priority", vpg.priority)
    vpg.rpo_threshold_seconds = int(doc.get("RpoInSeconds", vpg.rpo_threshold_seconds))
    vpg.journal_history_hours = int(doc.get("JournalHistoryInHours", vpg.journal_history_hours))
    vpg.journal_hard_limit_mb = int(doc.get("JournalHardLimitInMB", 0))
    vpg.journal_warning_mb = int(doc.get("JournalWarningThresholdInMB", 0))
    vpg.journal_datastore = doc.get("JournalDatastore")
    vpg.wan_compression = bool(doc.get("UseWanCompression", True))
    vpg.recovery_host = doc.get("RecoveryHost")
    vpg.recovery_cluster = doc.get("RecoveryCluster")
    vpg.recovery_datastore = doc.get("RecoveryDatastore")
    vpg.recovery_folder = doc.get("RecoveryFolder")
    vpg.failover_network = doc.get("FailoverNetwork")
    vpg.test_network = doc.get("TestNetwork")
    vpg.boot_groups = copy.deepcopy(doc.get("BootGroups") or [])
    vpg.updated_at = time.time()
    if vpg.id is None:
        vpg.save()
    else:  # what this call and its caller set: the status and figures the monitor wrote meanwhile stay
        vpg.save(only=vpg.dirty_fields)
    paths = replica_paths or {}
    wanted = {vm["VmIdentifier"]: vm for vm in doc.get("Vms") or []}
    m.VpgVm.delete().where(m.VpgVm.vpg == vpg, m.VpgVm.vm_moid.not_in(list(wanted) or [""])).execute()
    current = {v.vm_moid: v for v in m.VpgVm.select().where(m.VpgVm.vpg == vpg)}
    for moid, spec in wanted.items():
        row = current.get(moid) or m.VpgVm(vpg=vpg, vm_moid=moid)
        row.name = spec.get("Name", moid)
        row.boot_group = spec.get("BootGroup") or ""
        row.nics = spec.get("Nics") or []
        row.recovery_host = spec.get("RecoveryHost")
        row.recovery_datastore = spec.get("RecoveryDatastore")
        row.save()
        ids = [v["VolumeIdentifier"] for v in spec.get("Volumes") or []]
        m.VpgVolume.delete().where(m.VpgVolume.vm == row, m.VpgVolume.volume_id.not_in(ids or [""])).execute()
        for vol in spec.get("Volumes") or []:
            fields = {"vm": row, "disk_key": int(vol.get("DiskKey", 0)), "file_name": vol.get("FileName", ""),
                      "capacity": int(vol.get("Capacity", 0)), "recovery_datastore": vol.get("RecoveryDatastore"),
                      "recovery_path": paths.get(vol["VolumeIdentifier"], vol.get("RecoveryPath"))}
            existing = m.VpgVolume.get_or_none(m.VpgVolume.volume_id == vol["VolumeIdentifier"])
            if existing is None:
                m.VpgVolume.create(volume_id=vol["VolumeIdentifier"], **fields)
            else:
                m.VpgVolume.update(**fields).where(m.VpgVolume.id == existing.id).execute()


def upsert_mirror(vpg_id: str, doc: dict, protected: m.Site, local: m.Site, recovery_vra: str,
                  replica_paths: dict[str, str]) -> m.Vpg:
    """Create or replace the mirror of a peer's VPG (call in a transaction)."""
    vpg = m.Vpg.get_or_none(m.Vpg.identifier == vpg_id)
    if vpg is not None and vpg.protected_site_id == local.id:
        raise ConflictError(f"VPG {vpg.name} is protected by this site: site {protected.name} cannot replace it")
    if vpg is None:
        vpg = m.Vpg(identifier=vpg_id, protected_site=protected, recovery_site=local, status="Initializing",
                    substatus="InitialSync", name=_unique_name(doc.get("Name", vpg_id), vpg_id, protected))
    else:
        vpg.protected_site, vpg.recovery_site = protected, local
        vpg.name = _unique_name(doc.get("Name", vpg.name), vpg_id, protected)
    vpg.recovery_vra = recovery_vra
    apply_doc(vpg, doc, replica_paths=replica_paths)
    return vpg
