"""VPG tasks: configure the VRAs after a commit, remove the VPG from them, take a tagged checkpoint.

A committed VPG is planned onto VRAs (``plan_vpg``): each protected VM's disks go to the VRA of the host
the VM runs on (protect role; the first of them coordinates checkpoints), the journal and replica volumes to
the VRA of the recovery host (recover role), under ``zvr/<vpg>/`` on the recovery datastore. The recovery
role is configured first, so the protect VRAs find their peer ready. The VPG then stays Initializing
(substatus InitialSync) until monitoring sees every role healthy and a consistent checkpoint in the
journal; then it is MeetingSLA.

Not done here yet, and said so by the tasks: a recovery site that is a paired site (its VRAs are managed by
its own ZVM: the peer service has no call for it yet); pause, resume and forced sync (the VRA Control
service has no calls for them yet).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from zvm import db as zdb
from zvm import models as m
from zvm.errors import ConflictError, NotFoundError, PermanentError, ZvmError
from zvm.orchestration.tasks import TaskContext, handler
from zvm.vra_control import ProtectPlan, RecoverPlan, VraRef


@dataclass
class VpgPlan:
    recover_vra: VraRef
    recover: RecoverPlan
    protect: list[tuple[VraRef, ProtectPlan]]


def _vpg(ctx: TaskContext) -> m.Vpg:
    vpg = m.Vpg.get_or_none(m.Vpg.identifier == ctx.task.vpg)
    if vpg is None:
        raise NotFoundError(f"VPG {ctx.task.vpg} no longer exists", code="VpgNotFound")
    return vpg


def datastore_dir(site: m.Site, moid: str | None) -> str:
    """Where the recovery VRA finds a datastore: its URL's path (ds:///vmfs/volumes/x/ -> /vmfs/volumes/x)."""
    ds = m.InvDatastore.get_or_none(m.InvDatastore.site == site, m.InvDatastore.moid == moid)
    if ds is None:
        raise NotFoundError(f"datastore {moid!r} is not in the inventory of site {site.name}")
    path = urlsplit(ds.url).path if "://" in ds.url else ds.url
    if not path.startswith("/"):
        raise PermanentError(f"datastore {ds.name} has no path a VRA can use (URL {ds.url!r})")
    return path.rstrip("/")


def vra_ref(vra: m.Vra) -> VraRef:
    return VraRef(vra_id=vra.identifier, address=vra.control_address, name=vra.name)


def plan_vpg(vpg: m.Vpg, filter_control_template: str = "/run/zvr/filter.ctl") -> VpgPlan:
    """The roles of every VRA for this VPG; ConflictError naming the hosts that lack a usable VRA."""
    local = vpg.protected_site
    if vpg.recovery_site_id != local.id:
        raise PermanentError(f"VPG {vpg.name} recovers to paired site {vpg.recovery_site.name}: configuring "
                             "that site's VRAs through its ZVM is not implemented yet; replicate to this site",
                             code="NotImplemented")
    vras = {v.host_moid: v for v in m.Vra.select().where(m.Vra.site == local, m.Vra.state == "Installed")}
    host_names = {h.moid: h.name for h in m.InvHost.select().where(m.InvHost.site == local)}
    vms = list(m.VpgVm.select().where(m.VpgVm.vpg == vpg).order_by(m.VpgVm.id))
    placed = {v.moid: v.host for v in m.InvVm.select().where(m.InvVm.site == local,
                                                            m.InvVm.moid.in_([x.vm_moid for x in vms]))}
    recovery_host = vpg.recovery_host
    if recovery_host is None and vpg.recovery_cluster:
        in_cluster = sorted(h for h, v in vras.items() if m.InvHost.select().where(
            m.InvHost.site == local, m.InvHost.moid == h, m.InvHost.cluster == vpg.recovery_cluster).exists())
        recovery_host = in_cluster[0] if in_cluster else None
    needed = {recovery_host} | {placed.get(vm.vm_moid) for vm in vms}
    missing = sorted(host_names.get(h, h or "(unknown host)") for h in needed
                     if h is None or h not in vras or not vras[h].control_address)
    if missing:
        raise ConflictError(f"no installed VRA with a known address on host(s) {', '.join(missing)}: install "
                            "them (POST /v1/vras), then commit the VPG's settings again; the VPG stays "
                            "Initializing", code="WaitingForVras")
    recover_vra = vras[recovery_host]
    base = f"zvr/{vpg.identifier}"
    volumes_by_host: dict[str, list[str]] = {}
    replicas = []
    for vm in vms:
        for vol in vm.volumes.order_by(m.VpgVolume.disk_key):
            volumes_by_host.setdefault(placed[vm.vm_moid], []).append(vol.volume_id)
            ds_dir = datastore_dir(vpg.recovery_site, vol.recovery_datastore or vpg.recovery_datastore)
            replicas.append((vol.volume_id, f"{ds_dir}/{base}/{vol.volume_id}.img", int(vol.capacity)))
    if not replicas:
        raise PermanentError(f"VPG {vpg.name} has no disks to replicate")
    journal_dir = f"{datastore_dir(vpg.recovery_site, vpg.journal_datastore or vpg.recovery_datastore)}/{base}/journal"
    protect_refs = [vra_ref(vras[h]) for h in sorted(volumes_by_host, key=lambda h: vras[h].identifier)]
    priority = {"Low": 1, "Medium": 2, "High": 3}.get(vpg.priority, 2)
    protect = []
    for i, ref in enumerate(protect_refs):
        host = next(h for h in volumes_by_host if vras[h].identifier == ref.vra_id)
        control = filter_control_template.format(vra_id=ref.vra_id, host=host, host_name=host_names.get(host, host))
        protect.append((ref, ProtectPlan(vpg=vpg.identifier, volumes=volumes_by_host[host],
                                         recover_peer=vra_ref(recover_vra), protect_peers=protect_refs,
                                         coordinator=i == 0, priority=priority,
                                         compression=bool(vpg.wan_compression), filter_controls=[control])))
    recover = RecoverPlan(vpg=vpg.identifier, journal_dir=journal_dir, volumes=replicas,
                          protect_peers=[r.vra_id for r in protect_refs],
                          history_s=vpg.journal_history_hours * 3600,
                          hard_limit_bytes=vpg.journal_hard_limit_mb << 20,
                          warning_bytes=vpg.journal_warning_mb << 20)
    return VpgPlan(recover_vra=vra_ref(recover_vra), recover=recover, protect=protect)


def _set(vpg: m.Vpg, **fields) -> None:
    with zdb.transaction():
        m.Vpg.update(updated_at=time.time(), **fields).where(m.Vpg.id == vpg.id).execute()


def _installed_vras(site: m.Site) -> list[m.Vra]:
    return list(m.Vra.select().where(m.Vra.site == site, m.Vra.state == "Installed", m.Vra.control_address != ""))


@handler("CreateVpg")
@handler("UpdateVpg")
def configure_vpg(ctx: TaskContext) -> dict:
    vpg = _vpg(ctx)
    control = ctx.zvm.vra_control
    ctx.progress(10, f"Planning VPG {vpg.name} onto the VRAs of its hosts")
    try:
        plan = plan_vpg(vpg, ctx.zvm.config.filter_control_template)
        ctx.progress(30, f"Configuring the recovery VRA {plan.recover_vra.name}: journal and replica volumes")
        control.configure_recover(plan.recover_vra, plan.recover)
        for i, (vra, protect) in enumerate(plan.protect):
            ctx.progress(50 + 40 * i // len(plan.protect), f"Configuring the protect role on {vra.name}")
            control.configure_protect(vra, protect)
        used = {plan.recover_vra.vra_id, *(v.vra_id for v, _ in plan.protect)}
        for vra in _installed_vras(vpg.protected_site):  # VRAs that no longer serve it (VMs removed)
            if vra.identifier not in used:
                control.remove_vpg(vra_ref(vra), vpg.identifier)
    except ZvmError as exc:
        _set(vpg, substatus="WaitingForVras" if exc.code == "WaitingForVras" else "Error")
        raise
    if vpg.status in ("Initializing", "Error"):
        _set(vpg, status="Initializing", substatus="InitialSync")
    ctx.progress(100, f"VRAs configured: {len(plan.protect)} protect, 1 recover; replication starts, the VPG "
                 "meets its SLA once the journal holds a consistent checkpoint")
    return {"VpgIdentifier": vpg.identifier, "ProtectVras": [v.vra_id for v, _ in plan.protect],
            "RecoveryVra": plan.recover_vra.vra_id}


@handler("DeleteVpg")
def delete_vpg(ctx: TaskContext) -> dict:
    vpg = _vpg(ctx)
    control = ctx.zvm.vra_control
    force = bool(ctx.param("Force", False))
    unreached = []
    vras = _installed_vras(vpg.protected_site)
    for i, vra in enumerate(vras):
        ctx.progress(10 + 70 * i // max(1, len(vras)), f"Removing VPG {vpg.name} from {vra.name}")
        try:
            control.remove_vpg(vra_ref(vra), vpg.identifier)
        except ZvmError as exc:
            if not force:
                _set(vpg, substatus="Error")
                raise ZvmError(f"{exc}; delete with Force to remove the VPG anyway", code=exc.code) from exc
            unreached.append(vra.name)
    with zdb.transaction():
        vpg.delete_instance()
    note = f" ({', '.join(unreached)} not reached: remove it there by hand)" if unreached else ""
    kept = "; replica volumes kept" if ctx.param("KeepRecoveryVolumes", False) else ""
    ctx.progress(100, f"VPG {vpg.name} deleted{kept}{note}")
    return {"VpgIdentifier": vpg.identifier}


@handler("CheckpointVpg")
def checkpoint_vpg(ctx: TaskContext) -> dict:
    vpg = _vpg(ctx)
    plan = plan_vpg(vpg, ctx.zvm.config.filter_control_template)
    coordinator = next(v for v, p in plan.protect if p.coordinator)
    ctx.progress(30, f"Taking checkpoint {ctx.param('Tag')!r} through {coordinator.name}")
    cp = ctx.zvm.vra_control.checkpoint(coordinator, vpg.identifier, ctx.param("Tag") or "", wait_durable=True)
    with zdb.transaction():
        m.Checkpoint.insert(identifier=cp.checkpoint_id, vpg=vpg, timestamp=cp.timestamp_s, tag=cp.tag,
                            consistent=cp.consistent).on_conflict_ignore().execute()
    ctx.progress(100, f"Checkpoint {cp.tag!r} journaled" + ("" if cp.consistent else " (not consistent)"))
    return {"CheckpointIdentifier": cp.checkpoint_id, "IsConsistent": cp.consistent}


def _not_yet(what: str, revert: dict):
    def run(ctx: TaskContext) -> dict:
        vpg = _vpg(ctx)
        _set(vpg, **revert(vpg))
        raise ZvmError(f"{what} is not available yet: the VRA Control service has no call for it; the VPG is "
                       "left as it was", code="NotImplemented")

    return run


handler("PauseVpg")(_not_yet("pausing replication", lambda v: {"paused": False, "substatus": "None"}))
handler("ResumeVpg")(_not_yet("resuming replication", lambda v: {"paused": True,
                                                                 "substatus": "ReplicationPausedUserInitiated"}))
handler("ForceSyncVpg")(_not_yet("a forced sync", lambda v: {"substatus": "None"}))
