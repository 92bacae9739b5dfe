"""VPG tasks: configure the VRAs after a commit, remove the VPG from them, take a tagged checkpoint.

A committed VPG is planned onto VRAs (``plan_vpg``): each protected VM's disks go to the VRA of the host
the VM runs on (protect role; the first of them coordinates checkpoints), the journal and replica volumes to
the VRA of the recovery host (recover role), under ``zvr/<vpg>/`` on the recovery datastore. The recovery
role is configured first, so the protect VRAs find their peer ready. The VPG then stays Initializing
(substatus InitialSync) until monitoring sees every role healthy and a consistent checkpoint in the
journal; then it is MeetingSLA.

A paired recovery site's VRAs belong to its own ZVM: the protect side sends it a ``RecoverRequest`` over
the peer service, which sets the role up there (``recover_locally``) and answers with the VRA to stream to.

A forced sync (``ForceSyncVpg``) asks every protect VRA of the VPG for a delta sync (ForceSync, reason
forced); the VPG shows substatus DeltaSync until monitoring sees every protect VRA streaming again. Pause and resume (``PauseVpg``, ``ResumeVpg``) call PauseVpg / ResumeVpg
on every protect VRA: a paused VRA sends nothing and keeps the VMs' writes as during a link cut; the VPG
shows substatus ReplicationPausedUserInitiated (its status is left as it was); resume sends what was kept
(bitmap sync) and monitoring clears the substatus once the VRAs stream again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from zvm import db as zdb
from zvm import models as m
from zvm.datastore_paths import split_datastore_path
from zvm.errors import NotFoundError, PermanentError, ZvmError
from zvm.monitoring.alerts import refresh_alerts
from zvm.orchestration import checkpoints
from zvm.orchestration.journal_repair import before_force_sync
from zvm.orchestration.mirror import vpg_doc
from zvm.orchestration.operations import active_operation, operation_in_progress, shown_while_running
from zvm.orchestration.tasks import TaskContext, handler
from zvm.peer.messages import RecoverRequest, checkpoints_from_json
from zvm.placement import (
    datastore_dir,
    datastore_name,
    installed_vras,
    local_path,
    peer_client,
    usable_vras,
    vra_ref,
    waiting_for_vras,
)
from zvm.vra_control import ProtectPlan, RecoverPlan, VraRef

log = logging.getLogger("zvm.vpgs")


@dataclass
class VpgPlan:
    protect: list[tuple[VraRef, list[str], str]]  # (VRA, its volumes, its host's filter control); [0] coordinates
    recover: RecoverRequest
    priority: int
    compression: bool

    def protect_plans(self, recover_vra: VraRef) -> list[tuple[VraRef, ProtectPlan]]:
        refs = [vra for vra, _, _ in self.protect]
        return [(vra, ProtectPlan(vpg=self.recover.vpg, volumes=volumes, recover_peer=recover_vra,
                                  protect_peers=refs, coordinator=i == 0, priority=self.priority,
                                  compression=self.compression, filter_controls=[control]))
                for i, (vra, volumes, control) in enumerate(self.protect)]


def _vpg(ctx: TaskContext) -> m.Vpg:
    vpg = m.Vpg.get_or_none(m.Vpg.identifier == ctx.task.vpg)
    if vpg is None:
        raise NotFoundError(f"VPG {ctx.task.vpg} no longer exists", code="VpgNotFound")
    return vpg


def plan_vpg(vpg: m.Vpg, filter_control_template: str = "/run/zvr/filter.ctl") -> VpgPlan:
    """The protect side's roles (this site's VRAs) and the recover request for the recovery site."""
    local = vpg.protected_site
    vras = usable_vras(local)
    host_names = {h.moid: h.name for h in m.InvHost.select().where(m.InvHost.site == local)}
    vms = list(m.VpgVm.select().where(m.VpgVm.vpg == vpg).order_by(m.VpgVm.id))
    placed = {v.moid: v.host for v in m.InvVm.select().where(m.InvVm.site == local,
                                                            m.InvVm.moid.in_([x.vm_moid for x in vms]))}
    missing = {placed.get(vm.vm_moid) for vm in vms} - set(vras)
    if missing:
        raise waiting_for_vras(local, missing)
    volumes_by_host: dict[str, list[str]] = {}
    replicas = []
    for vm in vms:
        for vol in vm.volumes.order_by(m.VpgVolume.disk_key):
            volumes_by_host.setdefault(placed[vm.vm_moid], []).append(vol.volume_id)
            replicas.append((vol.volume_id, vol.recovery_datastore, int(vol.capacity)))
    if not replicas:
        raise PermanentError(f"VPG {vpg.name} has no disks to replicate")
    hosts = sorted(volumes_by_host, key=lambda h: vras[h].identifier)
    protect = [(vra_ref(vras[h]), volumes_by_host[h],
                filter_control_template.format(vra_id=vras[h].identifier, host=h, host_name=host_names.get(h, h)))
               for h in hosts]
    recover = RecoverRequest(
        vpg=vpg.identifier, name=vpg.name, recovery_host=vpg.recovery_host, recovery_cluster=vpg.recovery_cluster,
        datastore=vpg.recovery_datastore, journal_datastore=vpg.journal_datastore, volumes=replicas,
        protect_peers=[vra.vra_id for vra, _, _ in protect], history_s=vpg.journal_history_hours * 3600,
        hard_limit_bytes=vpg.journal_hard_limit_mb << 20, warning_bytes=vpg.journal_warning_mb << 20,
        replica_paths={v.volume_id: v.recovery_path for vm in vms for v in vm.volumes if v.recovery_path},
        vpg_doc=vpg_doc(vpg))
    return VpgPlan(protect=protect, recover=recover,
                   priority={"Low": 1, "Medium": 2, "High": 3}.get(vpg.priority, 2),
                   compression=bool(vpg.wan_compression))


def recover_locally(site: m.Site, req: RecoverRequest, control) -> tuple[VraRef, dict[str, str]]:
    """Set up the recover role on this site's VRA of the recovery host (or of a host of the recovery
    cluster): journal and replica volumes under zvr/<vpg>/ on the datastores (or the files the request
    names). Used for a VPG to this site, and by the peer service for a paired site's VPG. Returns the VRA
    and each replica volume as a datastore path (the recovered VM's disk after a commit)."""
    vras = usable_vras(site)
    host = req.recovery_host
    if host is None and req.recovery_cluster:
        in_cluster = {h.moid for h in m.InvHost.select().where(m.InvHost.site == site,
                                                               m.InvHost.cluster == req.recovery_cluster)}
        host = min((h for h in vras if h in in_cluster), default=None)
    if host not in vras:
        raise waiting_for_vras(site, {host})
    base = f"zvr/{req.vpg}"
    replicas, paths = [], {}
    for volume, ds, size in req.volumes:
        given = req.replica_paths.get(volume)
        if given:
            replicas.append((volume, local_path(site, given), size))
            paths[volume] = given
        else:
            replicas.append((volume, f"{datastore_dir(site, ds or req.datastore)}/{base}/{volume}.img", size))
            paths[volume] = f"[{datastore_name(site, ds or req.datastore)}] {base}/{volume}.img"
    journal_dir = f"{datastore_dir(site, req.journal_datastore or req.datastore)}/{base}/journal"
    vra = vra_ref(vras[host])
    control.configure_recover(vra, RecoverPlan(
        vpg=req.vpg, journal_dir=journal_dir, volumes=replicas, protect_peers=req.protect_peers,
        history_s=req.history_s, hard_limit_bytes=req.hard_limit_bytes, warning_bytes=req.warning_bytes))
    return vra, paths


def _set(vpg: m.Vpg, **fields) -> None:
    with zdb.transaction():
        m.Vpg.update(updated_at=time.time(), **fields).where(m.Vpg.id == vpg.id).execute()


@handler("CreateVpg")
@handler("UpdateVpg")
def configure_vpg(ctx: TaskContext) -> dict:
    vpg = _vpg(ctx)
    control = ctx.zvm.vra_control
    local = vpg.recovery_site_id == vpg.protected_site_id
    ctx.progress(10, f"Planning VPG {vpg.name} onto the VRAs of its hosts")
    try:
        plan = plan_vpg(vpg, ctx.zvm.config.filter_control_template)
        if local:
            ctx.progress(30, "Configuring the recovery VRA: journal and replica volumes")
            recover_vra, paths = recover_locally(vpg.recovery_site, plan.recover, control)
        else:
            ctx.progress(30, f"Asking site {vpg.recovery_site.name} to configure its recovery VRA")
            reply = peer_client(ctx.zvm, vpg.recovery_site).recover_vpg(plan.recover.to_json())
            recover_vra = VraRef(reply["VraIdentifier"], reply["Address"], reply.get("Name", ""))
            paths = reply.get("ReplicaPaths") or {}
        with zdb.transaction():
            m.Vpg.update(recovery_vra=recover_vra.vra_id).where(m.Vpg.id == vpg.id).execute()
            for volume, path in paths.items():
                m.VpgVolume.update(recovery_path=path).where(m.VpgVolume.volume_id == volume).execute()
        protects = plan.protect_plans(recover_vra)
        for i, (vra, protect) in enumerate(protects):
            ctx.progress(50 + 40 * i // len(protects), f"Configuring the protect role on {vra.name}")
            control.configure_protect(vra, protect)
        used = {recover_vra.vra_id, *(v.vra_id for v, _ in protects)}
        for vra in installed_vras(vpg.protected_site):  # VRAs that no longer serve it (VMs removed)
            if vra.identifier not in used:
                control.remove_vpg(vra_ref(vra), vpg.identifier)
    except ZvmError as exc:
        _set(vpg, substatus="WaitingForVras" if exc.code == "WaitingForVras" else "Error")
        raise
    if vpg.status in ("Initializing", "Error"):
        _set(vpg, status="Initializing", substatus="InitialSync")
    where = "" if local else f" at site {vpg.recovery_site.name}"
    ctx.progress(100, f"VRAs configured: {len(protects)} protect, 1 recover{where}; replication starts, the VPG "
                 "meets its SLA once the journal holds a consistent checkpoint")
    return {"VpgIdentifier": vpg.identifier, "ProtectVras": [v.vra_id for v, _ in protects],
            "RecoveryVra": recover_vra.vra_id}


def recovery_files(vpg: m.Vpg) -> tuple[list[str], list[str], str | None]:
    """What the VPG holds on its recovery site, as datastore paths: the replica volumes made for it
    (``"[ds] zvr/<vpg>/<volume>.img"``), the other replica files (reverse protection: the original VMs' disks,
    which are not the VPG's to delete), and its journal directory (None when no datastore is known)."""
    own, others = [], []
    for vol in m.VpgVolume.select().join(m.VpgVm).where(m.VpgVm.vpg == vpg).order_by(m.VpgVolume.id):
        if not vol.recovery_path:
            continue
        _, rel = split_datastore_path(vol.recovery_path)
        (own if rel.startswith(f"zvr/{vpg.identifier}/") else others).append(vol.recovery_path)
    ds = m.InvDatastore.get_or_none(m.InvDatastore.site == vpg.recovery_site,
                                    m.InvDatastore.moid == (vpg.journal_datastore or vpg.recovery_datastore))
    name = ds.name if ds is not None else (split_datastore_path(own[0])[0] if own else None)
    return own, others, f"[{name}] zvr/{vpg.identifier}/journal" if name else None


def _keep_at_checkpoint(zvm, vra: VraRef, vpg: m.Vpg) -> dict:
    """The recovery VRA brings the replica volumes to the journal's newest consistent checkpoint (or its
    newest one, when none is consistent): a recovery session opened there with nothing written to it, then
    committed (the promoter applies the journal up to the checkpoint, then the VRA drops the VPG's recover
    role and discards its journal). Returns the checkpoint, or Checkpoint None when the journal holds none
    (the replicas stay as they are: not an image of any point in time)."""
    control = zvm.vra_control
    session = m.new_id()
    info = control.open_session(vra, vpg.identifier, session, consistent_only=True)
    if not info.ok and info.code == "UNKNOWN_CHECKPOINT":
        info = control.open_session(vra, vpg.identifier, session)
    if not info.ok and info.code in ("UNKNOWN_CHECKPOINT", "UNKNOWN_VPG"):
        # no checkpoint yet, or no role any more (a delete done here already, then failed further on)
        return {"Checkpoint": None, "CheckpointConsistent": False}
    if not info.ok:
        raise PermanentError(f"the recovery VRA {vra.name} cannot open the replica volumes of VPG {vpg.name} at a "
                             f"checkpoint: {info.message}")
    done = control.commit_session(vra, vpg.identifier, session)
    if not done.ok:
        control.close_session(vra, vpg.identifier, session)
        raise PermanentError(f"the recovery VRA {vra.name} did not bring the replica volumes of VPG {vpg.name} to "
                             f"checkpoint {info.checkpoint_id}: {done.message}")
    return {"Checkpoint": info.checkpoint_id, "CheckpointTime": info.checkpoint_time,
            "CheckpointConsistent": info.checkpoint_consistent}


def release_recovery(zvm, vpg: m.Vpg, keep: bool) -> dict:
    """The recovery site's part of deleting a VPG, done by the ZVM that owns the recovery VRA and vCenter
    (this one: the VPG recovers to this site). Refused while a failover test, failover or move of the VPG
    runs. With ``keep`` the replica volumes stay, brought to the newest checkpoint (``_keep_at_checkpoint``);
    without, they go with the VPG's ``zvr/<vpg>`` directories. The journal directory goes either way. The
    recovery VRA drops the VPG first (it must not write into files being deleted); a VRA that does not answer
    raises (the delete fails, or with Force leaves the files, reported). A file vCenter does not delete is
    returned in ``LeftOver``, never dropped silently."""
    running = active_operation(vpg.identifier)
    if running is not None:
        raise operation_in_progress(vpg.name, running, ", then delete the VPG", code="RecoveryOperationInProgress")
    own, others, journal = recovery_files(vpg)
    out: dict = {"Deleted": [], "Kept": [], "LeftOver": [], "Checkpoint": None}
    vra = m.Vra.get_or_none(m.Vra.identifier == vpg.recovery_vra) if vpg.recovery_vra else None
    if vra is not None and vra.control_address:
        if keep:
            out.update(_keep_at_checkpoint(zvm, vra_ref(vra), vpg))
        zvm.vra_control.remove_vpg(vra_ref(vra), vpg.identifier)
    if keep:
        out["Kept"] = own + others
        doomed = [journal] if journal else []
    else:
        out["Kept"] = others  # the original VMs' disks (reverse protection): not the VPG's files
        doomed = sorted({f"[{split_datastore_path(p)[0]}] zvr/{vpg.identifier}" for p in own + ([journal] if journal else [])})
    if doomed:
        vc = None
        try:
            vc = zvm.vcenter_factory(zvm.local_site())
            rv = vc.recovery()
            for path in doomed:
                rv.delete_datastore_file(path)
                out["Deleted"].append(path)
        except Exception as exc:  # noqa: BLE001 - whatever stopped it, the files left are reported, not lost
            log.warning("VPG %s: deleting its recovery files failed: %s", vpg.name, exc)
            out["LeftOver"] = [p for p in doomed if p not in out["Deleted"]]
            out["LeftOverReason"] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ZvmError) else str(exc)
        finally:
            if vc is not None:
                vc.close()
    return out


def _unreleased(vpg: m.Vpg, keep: bool, why: str) -> dict:
    """What the recovery site still holds when its part of the delete was not done (as this site knows it):
    nothing when no recover role was ever set up for the VPG."""
    if not vpg.recovery_vra:
        return {"Deleted": [], "Kept": [], "LeftOver": [], "LeftOverReason": why}
    own, others, journal = recovery_files(vpg)
    return {"Deleted": [], "Kept": others + (own if keep else []),
            "LeftOver": ([] if keep else own) + ([journal] if journal else []), "LeftOverReason": why}


def _restore_status(vpg: m.Vpg, refusal: ZvmError | None = None) -> None:
    """A delete that failed leaves the VPG deletable again (monitoring sets its real status on its pass);
    one refused for a running recovery operation shows that operation again, as its start showed it (the
    refusal carries the operation's kind: zvm.orchestration.operations)."""
    fields = {"status": "NotMeetingSLA" if vpg.status == "Deleting" else vpg.status, "substatus": "Error"}
    fields.update(shown_while_running(refusal))
    _set(vpg, **fields)


def _recorded_leftover(vpg: m.Vpg, site: m.Site, files: list[str], why: str) -> None:
    now = time.time()
    with zdb.transaction():
        m.Event.create(kind="RecoveryVolumesLeftOver", category="Vpg", user="system", entity_id=vpg.identifier,
                       description=f"VPG {vpg.name} deleted; on site {site.name} these files are left to delete by "
                                   f"hand: {', '.join(files)}", result="Failed", detail=why[:4000],
                       started_at=now, completed_at=now)


@handler("DeleteVpg")
def delete_vpg(ctx: TaskContext) -> dict:
    """Delete a VPG: the recovery site's part first (``release_recovery``: refused while a recovery operation
    of the VPG runs, which changes nothing), then the protect roles of this site's VRAs, then the rows. With
    Force, a recovery site or VRA that does not answer does not stop it: what it holds is reported as left
    over (the task's result, an event, and alert VpgRecoveryFilesLeftOver naming the files)."""
    vpg = _vpg(ctx)
    control = ctx.zvm.vra_control
    force = bool(ctx.param("Force", False))
    keep = bool(ctx.param("KeepRecoveryVolumes", False))
    unreached: list[str] = []
    released: dict = {}
    remote = vpg.recovery_site_id != vpg.protected_site_id
    site = vpg.recovery_site
    verb = "keeping its replica volumes at the newest checkpoint" if keep else "deleting its replica volumes and journal"
    ctx.progress(5, f"Removing VPG {vpg.name} from its recovery site {site.name}, {verb}")
    try:
        if remote:
            peer = peer_client(ctx.zvm, site, timeout=600)
            try:
                released = peer.vpg_recovery(vpg.identifier, "release", {"KeepRecoveryVolumes": keep})
            except ZvmError as exc:
                if exc.code != "VpgNotFound":
                    raise
                released = _unreleased(vpg, keep, str(exc))  # no copy there: its VRAs are still told below
            unreached += peer.remove_vpg(vpg.identifier).get("Unreached", [])
        else:
            released = release_recovery(ctx.zvm, vpg, keep)
    except ZvmError as exc:
        if exc.code == "RecoveryOperationInProgress" or not force:
            _restore_status(vpg, exc if exc.code == "RecoveryOperationInProgress" else None)
            hint = "" if exc.code == "RecoveryOperationInProgress" else "; delete with Force to remove the VPG anyway"
            raise type(exc)(f"{exc}{hint}", code=exc.code, detail=exc.detail) from exc
        unreached.append(f"site {site.name}" if remote else f"the recovery VRA of VPG {vpg.name}")
        released = _unreleased(vpg, keep, str(exc))
    vras = [v for v in installed_vras(vpg.protected_site) if remote or v.identifier != vpg.recovery_vra]
    for i, vra in enumerate(vras):
        ctx.progress(40 + 50 * i // max(1, len(vras)), f"Removing VPG {vpg.name} from {vra.name}")
        try:
            control.remove_vpg(vra_ref(vra), vpg.identifier)
        except ZvmError as exc:
            if not force:
                _restore_status(vpg)
                raise ZvmError(f"{exc}; delete with Force to remove the VPG anyway", code=exc.code) from exc
            unreached.append(vra.name)
    leftover = list(released.get("LeftOver") or [])
    if leftover:
        _recorded_leftover(vpg, site, leftover, released.get("LeftOverReason", ""))
    with zdb.transaction():
        vpg.delete_instance()
    note = f" ({', '.join(unreached)} not reached: remove it there by hand)" if unreached else ""
    kept = f"; replica volumes kept: {', '.join(released.get('Kept') or [])}" if keep else ""
    left = f"; left to delete by hand on site {site.name}: {', '.join(leftover)}" if leftover else ""
    ctx.progress(100, f"VPG {vpg.name} deleted{kept}{note}{left}"[:512])
    refresh_alerts()
    return {"VpgIdentifier": vpg.identifier, "RecoverySite": site.identifier,
            "KeptRecoveryVolumes": released.get("Kept") or [], "DeletedFiles": released.get("Deleted") or [],
            "LeftOverFiles": leftover, "Checkpoint": released.get("Checkpoint"), "Unreached": unreached}


def coordinator(zvm, vpg: m.Vpg) -> VraRef:
    """The protect VRA that coordinates the VPG's checkpoints: of the VRAs of its VMs' hosts, the first by
    identifier (as plan_vpg orders them). The hosts come from the inventory, or from vCenter for VMs the
    inventory has not seen yet (just recovered here)."""
    try:
        return plan_vpg(vpg, zvm.config.filter_control_template).protect[0][0]
    except ZvmError as exc:
        if exc.code != "WaitingForVras":
            raise
    local = vpg.protected_site
    vras = usable_vras(local)
    vc = zvm.vcenter_factory(local)
    try:
        rv = vc.recovery()
        hosts = {(rv.vm_placement(vm.vm_moid) or {}).get("host") for vm in m.VpgVm.select().where(m.VpgVm.vpg == vpg)}
    finally:
        vc.close()
    if not hosts or hosts - set(vras):
        raise waiting_for_vras(local, hosts - set(vras) or {None})
    return vra_ref(min((vras[h] for h in hosts), key=lambda v: v.identifier))


@handler("CheckpointVpg")
def checkpoint_vpg(ctx: TaskContext) -> dict:
    vpg = _vpg(ctx)
    coordinator_vra = coordinator(ctx.zvm, vpg)
    ctx.progress(30, f"Taking checkpoint {ctx.param('Tag')!r} through {coordinator_vra.name}")
    cp = ctx.zvm.vra_control.checkpoint(coordinator_vra, vpg.identifier, ctx.param("Tag") or "", wait_durable=True)
    ctx.progress(80, f"Checkpoint {cp.tag!r} journaled; noting it on both sites")
    # The journal's entry, stored on both sites before the task completes (zvm/orchestration/checkpoints.py)
    try:
        if vpg.recovery_site.is_local:
            cp = checkpoints.journal_entry(ctx.zvm, vpg.identifier, cp.checkpoint_id)
        else:
            noted = peer_client(ctx.zvm, vpg.recovery_site).note_checkpoint(vpg.identifier, cp.checkpoint_id)
            cp = checkpoints_from_json([noted])[0]
    except ZvmError as exc:
        # durable all the same: the monitoring passes copy it from the journal later
        log.warning("checkpoint %s of VPG %s: the journal's entry could not be read (%s)", cp.checkpoint_id,
                    vpg.name, exc)
    checkpoints.store(vpg, cp)
    ctx.progress(100, f"Checkpoint {cp.tag!r} journaled" + ("" if cp.consistent else " (not consistent)"))
    return {"CheckpointIdentifier": cp.checkpoint_id, "IsConsistent": cp.consistent}


def _pause_all(ctx: TaskContext, paused: bool) -> dict:
    vpg = _vpg(ctx)
    control = ctx.zvm.vra_control
    verb = "Pausing" if paused else "Resuming"
    done = []
    try:
        protects = plan_vpg(vpg, ctx.zvm.config.filter_control_template).protect
        for i, (vra, _, _) in enumerate(protects):
            ctx.progress(10 + 80 * i // len(protects), f"{verb} replication on {vra.name or vra.vra_id}")
            control.pause(vra, vpg.identifier, paused)
            done.append(vra)
    except ZvmError:
        for vra in done:  # put back the VRAs already changed, best effort
            try:
                control.pause(vra, vpg.identifier, not paused)
            except ZvmError:
                pass
        _set(vpg, paused=not paused, substatus="ReplicationPausedUserInitiated" if not paused else "None")
        raise
    _set(vpg, paused=paused, substatus="ReplicationPausedUserInitiated" if paused else "BitmapSync")
    ctx.progress(100, f"Replication {'paused' if paused else 'resumed'} on {len(protects)} protect VRA(s)"
                 + ("; writes are kept and sent on resume" if paused else "; what was kept is sent now"))
    return {"VpgIdentifier": vpg.identifier, "ProtectVras": [v.vra_id for v, _, _ in protects]}


@handler("PauseVpg")
def pause_vpg(ctx: TaskContext) -> dict:
    return _pause_all(ctx, True)


@handler("ResumeVpg")
def resume_vpg(ctx: TaskContext) -> dict:
    return _pause_all(ctx, False)


@handler("ForceSyncVpg")
def force_sync_vpg(ctx: TaskContext) -> dict:
    """A delta sync of every volume of the VPG, on each of its protect VRAs: each compares its volumes with
    the recovery side by checksums and sends what differs. Monitoring keeps the VPG in DeltaSync until the
    VRAs report streaming again."""
    vpg = _vpg(ctx)
    control = ctx.zvm.vra_control
    try:
        protects = plan_vpg(vpg, ctx.zvm.config.filter_control_template).protect
        repaired = before_force_sync(ctx, vpg, protects)  # a corrupt recovery journal is discarded first
        for i, (vra, volumes, _) in enumerate(protects):
            ctx.progress(10 + 80 * i // len(protects), f"Starting a delta sync of {len(volumes)} volume(s) on "
                         f"{vra.name or vra.vra_id}")
            control.force_sync(vra, vpg.identifier)
    except ZvmError:
        _set(vpg, substatus="None")
        raise
    _set(vpg, substatus="DeltaSync")
    ctx.progress(100, f"Delta sync started on {len(protects)} protect VRA(s); the VPG shows DeltaSync until "
                 "it ends")
    return {"VpgIdentifier": vpg.identifier, "ProtectVras": [v.vra_id for v, _, _ in protects],
            "JournalDiscarded": repaired}
