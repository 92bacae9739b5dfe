"""VPG settings drafts (vpgSettings create-edit-commit) and their commit into a VPG.

A draft is a JSON document shaped like ``VpgSettingsInput`` (zvm/api/schemas.py). Editing checks only its
shape; ``commit`` checks everything against the current state (the VMs exist and are not protected
elsewhere, the recovery site is this one or a paired one, the recovery host, datastore, folder and networks
exist in that site's inventory, the journal warning is under the hard limit, boot groups are known) and then
creates or updates the VPG, its VMs and their volumes, in the caller's transaction. Each refusal names the
field to fix.
"""

from __future__ import annotations

import copy
import time

from zvm import models as m
from zvm.errors import ConflictError, ValidationError

VRA_PREFIX = "Z-VRA-"  # zvm/api/vras.py names each VRA appliance Z-VRA-<host>


def vra_appliance(site: m.Site):
    """A query clause true for the inventory VMs of ``site`` that are VRA appliances (the VRA rows' VMs, or
    named like one): they are never protectable, listed or protected."""
    moids = m.Vra.select(m.Vra.vm_moid).where(m.Vra.site == site, m.Vra.vm_moid.is_null(False))
    return m.InvVm.moid.in_(moids) | m.InvVm.name.startswith(VRA_PREFIX)


def default_settings(local_site: m.Site) -> dict:
    return {
        "Basic": {"Name": "New VPG", "RecoverySiteIdentifier": None, "RpoInSeconds": 300,
                  "JournalHistoryInHours": 24, "Priority": "Medium", "UseWanCompression": True},
        "Journal": {"HardLimitInMB": 0, "WarningThresholdInMB": 0, "DatastoreIdentifier": None},
        "Recovery": {"DefaultHostIdentifier": None, "DefaultHostClusterIdentifier": None,
                     "DefaultDatastoreIdentifier": None, "DefaultFolderIdentifier": None},
        "Networks": {"FailoverNetworkIdentifier": None, "FailoverTestNetworkIdentifier": None},
        "BootGroups": [],
        "Vms": [],
    }


def settings_of(vpg: m.Vpg) -> dict:
    """The settings document of an existing VPG (to edit it)."""
    return {
        "Basic": {"Name": vpg.name, "RecoverySiteIdentifier": vpg.recovery_site.identifier,
                  "RpoInSeconds": vpg.rpo_threshold_seconds, "JournalHistoryInHours": vpg.journal_history_hours,
                  "Priority": vpg.priority, "UseWanCompression": bool(vpg.wan_compression)},
        "Journal": {"HardLimitInMB": vpg.journal_hard_limit_mb, "WarningThresholdInMB": vpg.journal_warning_mb,
                    "DatastoreIdentifier": vpg.journal_datastore},
        "Recovery": {"DefaultHostIdentifier": vpg.recovery_host, "DefaultHostClusterIdentifier": vpg.recovery_cluster,
                     "DefaultDatastoreIdentifier": vpg.recovery_datastore,
                     "DefaultFolderIdentifier": vpg.recovery_folder},
        "Networks": {"FailoverNetworkIdentifier": vpg.failover_network,
                     "FailoverTestNetworkIdentifier": vpg.test_network},
        "BootGroups": copy.deepcopy(vpg.boot_groups or []),
        "Vms": [{"VmIdentifier": v.vm_moid, "BootGroupName": v.boot_group or None, "Nics": v.nics or []}
                for v in vpg.vms.order_by(m.VpgVm.id)],
    }


def _refuse(field: str, message: str):
    raise ValidationError(f"{field}: {message}", field=field)


def _exists(model, site: m.Site, moid: str | None) -> bool:
    return moid is None or model.select().where(model.site == site, model.moid == moid).exists()


def check(doc: dict, local_site: m.Site, editing: m.Vpg | None) -> tuple[m.Site, list[m.InvVm]]:
    """Everything a commit needs to be true; returns the recovery site and the VMs' inventory rows."""
    basic, journal, recovery, networks = doc["Basic"], doc["Journal"], doc["Recovery"], doc["Networks"]
    name = basic["Name"].strip()
    clash = m.Vpg.select().where(m.Vpg.name == name)
    if editing is not None:
        clash = clash.where(m.Vpg.id != editing.id)
    if clash.exists():
        _refuse("Basic.Name", f"a VPG named {name!r} exists already: choose another name")

    rsid = basic["RecoverySiteIdentifier"]
    if not rsid:
        _refuse("Basic.RecoverySiteIdentifier", "choose the recovery site: this site or a paired one "
                "(GET /v1/virtualizationsites)")
    rsite = m.Site.get_or_none(m.Site.identifier == rsid)
    if rsite is None or (not rsite.is_local and not m.PeerSite.select().where(m.PeerSite.site == rsite).exists()):
        _refuse("Basic.RecoverySiteIdentifier", f"{rsid!r} is neither this site nor a paired site: pair it "
                "first (POST /v1/peersites)")
    if editing is not None and rsite.id != editing.recovery_site_id:
        _refuse("Basic.RecoverySiteIdentifier", "the recovery site of an existing VPG cannot change: create "
                "a new VPG instead")

    if journal["HardLimitInMB"] and journal["WarningThresholdInMB"] > journal["HardLimitInMB"]:
        _refuse("Journal.WarningThresholdInMB", f"the warning ({journal['WarningThresholdInMB']} MB) must not "
                f"exceed the hard limit ({journal['HardLimitInMB']} MB)")
    if not _exists(m.InvDatastore, rsite, journal["DatastoreIdentifier"]):
        _refuse("Journal.DatastoreIdentifier", "not a datastore of the recovery site")

    if not recovery["DefaultHostIdentifier"] and not recovery["DefaultHostClusterIdentifier"]:
        _refuse("Recovery.DefaultHostIdentifier", "choose a recovery host (or host cluster) of the recovery site")
    if not _exists(m.InvHost, rsite, recovery["DefaultHostIdentifier"]):
        _refuse("Recovery.DefaultHostIdentifier", f"{recovery['DefaultHostIdentifier']!r} is not a host of "
                "the recovery site (GET /v1/virtualizationsites/{siteIdentifier}/hosts)")
    if not _exists(m.InvCluster, rsite, recovery["DefaultHostClusterIdentifier"]):
        _refuse("Recovery.DefaultHostClusterIdentifier", "not a host cluster of the recovery site")
    if not recovery["DefaultDatastoreIdentifier"]:
        _refuse("Recovery.DefaultDatastoreIdentifier", "choose the datastore of the recovery site that "
                "holds the replica disks")
    if not _exists(m.InvDatastore, rsite, recovery["DefaultDatastoreIdentifier"]):
        _refuse("Recovery.DefaultDatastoreIdentifier", f"{recovery['DefaultDatastoreIdentifier']!r} is not a "
                "datastore of the recovery site")
    if not _exists(m.InvFolder, rsite, recovery["DefaultFolderIdentifier"]):
        _refuse("Recovery.DefaultFolderIdentifier", "not a VM folder of the recovery site")
    for key in ("FailoverNetworkIdentifier", "FailoverTestNetworkIdentifier"):
        if not _exists(m.InvNetwork, rsite, networks[key]):
            _refuse(f"Networks.{key}", f"{networks[key]!r} is not a network of the recovery site")

    groups = [g["Name"] for g in doc["BootGroups"]]
    if len(set(groups)) != len(groups):
        _refuse("BootGroups", "boot group names must be unique")

    if not doc["Vms"]:
        _refuse("Vms", "a VPG needs at least one VM: add them with POST /v1/vpgSettings/{id}/vms")
    seen: set[str] = set()
    rows = []
    for i, vm in enumerate(doc["Vms"]):
        moid = vm["VmIdentifier"]
        if moid in seen:
            _refuse(f"Vms[{i}].VmIdentifier", f"{moid!r} is listed twice")
        seen.add(moid)
        row = m.InvVm.get_or_none(m.InvVm.site == local_site, m.InvVm.moid == moid)
        if row is None:
            _refuse(f"Vms[{i}].VmIdentifier", f"{moid!r} is not a VM of this site "
                    "(GET /v1/virtualizationsites/{siteIdentifier}/vms)")
        if m.InvVm.select().where(m.InvVm.id == row.id, vra_appliance(local_site)).exists():
            _refuse(f"Vms[{i}].VmIdentifier", f"VM {row.name} ({moid}) is a VRA appliance: VRAs replicate the "
                    "protected VMs and are never protected themselves; remove it from the VPG")
        other = (m.VpgVm.select(m.VpgVm, m.Vpg).join(m.Vpg)
                 .where(m.VpgVm.vm_moid == moid, m.Vpg.protected_site == local_site).first())
        if other is not None and (editing is None or other.vpg_id != editing.id):
            _refuse(f"Vms[{i}].VmIdentifier", f"VM {row.name} is protected by VPG {other.vpg.name} already: "
                    "remove it there first")
        if vm.get("BootGroupName") and vm["BootGroupName"] not in groups:
            _refuse(f"Vms[{i}].BootGroupName", f"no boot group {vm['BootGroupName']!r}: add it to BootGroups")
        names = [n["NicIdentifier"] for n in vm.get("Nics") or []]
        if len(set(names)) != len(names):
            _refuse(f"Vms[{i}].Nics", "NicIdentifier must be unique per VM")
        rows.append(row)
    return rsite, rows


def commit(doc: dict, local_site: m.Site, editing: m.Vpg | None) -> tuple[m.Vpg, bool]:
    """Create or update the VPG from a checked-in-place draft; returns (vpg, created)."""
    if editing is not None and editing.status == "Deleting":
        raise ConflictError(f"VPG {editing.name} is being deleted: its settings cannot change")
    if editing is not None and editing.protected_site_id != local_site.id:
        raise ConflictError(f"VPG {editing.name} is protected by site {editing.protected_site.name}: edit it there")
    if editing is not None and editing.status in ("FailingOver", "Moving", "Recovered"):
        raise ConflictError(f"VPG {editing.name} is {editing.status}: its settings cannot change now")
    rsite, inv_vms = check(doc, local_site, editing)
    basic, journal, recovery, networks = doc["Basic"], doc["Journal"], doc["Recovery"], doc["Networks"]
    vpg = editing or m.Vpg(protected_site=local_site, recovery_site=rsite, status="Initializing",
                           substatus="WaitingForVras")
    vpg.name = basic["Name"].strip()
    vpg.rpo_threshold_seconds = basic["RpoInSeconds"]
    vpg.journal_history_hours = basic["JournalHistoryInHours"]
    vpg.priority = basic["Priority"]
    vpg.wan_compression = basic["UseWanCompression"]
    vpg.journal_hard_limit_mb = journal["HardLimitInMB"]
    vpg.journal_warning_mb = journal["WarningThresholdInMB"]
    vpg.journal_datastore = journal["DatastoreIdentifier"]
    vpg.recovery_host = recovery["DefaultHostIdentifier"]
    vpg.recovery_cluster = recovery["DefaultHostClusterIdentifier"]
    vpg.recovery_datastore = recovery["DefaultDatastoreIdentifier"]
    vpg.recovery_folder = recovery["DefaultFolderIdentifier"]
    vpg.failover_network = networks["FailoverNetworkIdentifier"]
    vpg.test_network = networks["FailoverTestNetworkIdentifier"]
    vpg.boot_groups = copy.deepcopy(doc["BootGroups"])
    vpg.updated_at = time.time()
    vpg.save()

    wanted = {vm["VmIdentifier"]: vm for vm in doc["Vms"]}
    if editing is not None:
        gone = [v.id for v in editing.vms if v.vm_moid not in wanted]
        if gone:
            m.VpgVm.delete().where(m.VpgVm.id.in_(gone)).execute()
    current = {v.vm_moid: v for v in m.VpgVm.select().where(m.VpgVm.vpg == vpg)}
    for row in inv_vms:
        spec = wanted[row.moid]
        vm = current.get(row.moid)
        if vm is None:
            vm = m.VpgVm.create(vpg=vpg, vm_moid=row.moid, name=row.name, boot_group=spec.get("BootGroupName") or "",
                                nics=spec.get("Nics") or [])
            for disk in row.disks or []:
                m.VpgVolume.create(vm=vm, disk_key=int(disk.get("key", 0)), file_name=disk.get("file_name", ""),
                                   capacity=int(disk.get("capacity", 0)),
                                   recovery_datastore=recovery["DefaultDatastoreIdentifier"])
        else:
            vm.name = row.name
            vm.boot_group = spec.get("BootGroupName") or ""
            vm.nics = spec.get("Nics") or []
            vm.save()
    return vpg, editing is None
