"""The protected site's part of a recovery operation, run by its ZVM when the recovery site's ZVM asks
(``POST /peer/v1/vpgs/recovery``, or directly when one ZVM is both sites). Every action is idempotent:
the recovery site repeats it after a restart of either ZVM.

- ``begin``: the VPG shows the operation (substatus Testing, status FailingOver or Moving); the answer
  lists the source VMs and their power state.
- ``shutdown``: the source VMs are shut down by the policy (``None``, ``Shutdown``: graceful, fails when a
  VM is not off in time, ``ForceShutdown``: graceful, then powered off after the timeout); with
  ``FinalCheckpoint`` (a move) a checkpoint is then taken and waited for until the recovery VRA journaled
  it: every write of the stopped VMs is in the journal before it (RPO zero). A checkpoint taken while a
  sync runs is not consistent; the move waits for a consistent one.
- ``rollback``: the source VMs that ran before are powered on again; the VPG is protecting again.
- ``end``: a failover test ended; the VPG's substatus is cleared.
- ``commit``: the VMs run on the recovery site for good: the source VMs stay off, this site's VRAs drop
  the VPG's protect roles. With reverse protection a VRA of this site takes the recover role with the
  source VMs' disks as replicas, this site's row of the VPG becomes the mirror of the recovery site's
  (which now owns the VPG), and only then do the source VMs leave the inventory (their disks stay: they are
  the replica volumes): the database never lists as protected here VMs that vCenter no longer has. Without
  it, the VPG is Recovered and needs configuring (NeedsConfiguration).

One action goes the other way, from the protected site to the recovery site (the peer service's only
channel for it): ``release``, the recovery site's part of deleting the VPG (zvm.orchestration.vpgs
``release_recovery``: refused while a recovery operation of the VPG runs; the replica volumes kept at the
newest checkpoint or deleted with the journal, by ``KeepRecoveryVolumes``).
"""

from __future__ import annotations

import time
from types import SimpleNamespace

from zvm import db as zdb
from zvm import models as m
from zvm.datastore_paths import split_datastore_path
from zvm.errors import ConflictError, NotFoundError, PermanentError, TransientError, ValidationError, ZvmError
from zvm.orchestration.mirror import apply_doc
from zvm.orchestration.operations import BEGIN
from zvm.orchestration.vpgs import coordinator as find_coordinator
from zvm.orchestration.vpgs import recover_locally, release_recovery
from zvm.peer.messages import RecoverRequest
from zvm.placement import installed_vras, vra_ref

ACTIONS = ("begin", "shutdown", "rollback", "end", "commit", "release")
SHUTDOWN_POLICIES = ("None", "Shutdown", "ForceShutdown")


def handle(zvm, caller: m.Site | None, vpg_id: str, body: dict) -> dict:
    """One action for the VPG ``vpg_id``; ``caller`` is the asking site (None: this ZVM itself)."""
    action = body.get("Action")
    if action not in ACTIONS:
        raise ValidationError(f"Action must be one of {', '.join(ACTIONS)}", field="Action")
    local = zvm.local_site()
    vpg = m.Vpg.get_or_none(m.Vpg.identifier == vpg_id)
    if vpg is None:
        raise NotFoundError(f"this site has no VPG {vpg_id}", code="VpgNotFound")
    if action == "release":
        if vpg.recovery_site_id != local.id or (caller is not None and vpg.protected_site_id != caller.id):
            raise ConflictError(f"VPG {vpg.name} is not protected by site {caller.name if caller else local.name} "
                                "to this site: only its protected site deletes it")
        return release_recovery(zvm, vpg, bool(body.get("KeepRecoveryVolumes", False)))
    if caller is not None and vpg.recovery_site_id != caller.id and not (action == "commit" and vpg.protected_site_id == caller.id):
        raise ConflictError(f"VPG {vpg.name} does not recover to site {caller.name}")
    if vpg.protected_site_id != local.id and not (action == "commit" and caller is not None
                                                    and vpg.protected_site_id == caller.id):
        raise ConflictError(f"VPG {vpg.name} is not protected by this site")
    if action == "commit":
        return _commit(zvm, vpg, body, caller)
    return globals()[f"_{action}"](zvm, vpg, body)


def _set(vpg: m.Vpg, **fields) -> None:
    with zdb.transaction():
        m.Vpg.update(updated_at=time.time(), **fields).where(m.Vpg.id == vpg.id).execute()


def _event(vpg: m.Vpg, kind: str, text: str) -> None:
    now = time.time()
    with zdb.transaction():
        m.Event.create(kind=kind, category="Vpg", user="peer", description=text, entity_id=vpg.identifier,
                       result="Succeeded", started_at=now, completed_at=now)


def _source_vms(vpg: m.Vpg) -> list[m.VpgVm]:
    return list(m.VpgVm.select().where(m.VpgVm.vpg == vpg).order_by(m.VpgVm.id))


def _vcenter(zvm):
    return zvm.vcenter_factory(zvm.local_site())


def _begin(zvm, vpg: m.Vpg, body: dict) -> dict:
    kind = body.get("Kind")
    if kind not in BEGIN:
        raise ValidationError("Kind must be FailoverTest, Failover or Move", field="Kind")
    if kind == "Move" and vpg.paused:
        raise ConflictError(f"VPG {vpg.name} is paused: a move waits for its VMs' last writes to reach the "
                            "recovery journal, and a paused VPG sends none; resume it first, or fail over")
    vc = _vcenter(zvm)
    try:
        rv = vc.recovery()
        states = {vm.vm_moid: rv.vm_state(vm.vm_moid) for vm in _source_vms(vpg)}
    finally:
        vc.close()
    _set(vpg, **BEGIN[kind])
    return {"PowerStates": {k: v or "missing" for k, v in states.items()}}


def _shutdown(zvm, vpg: m.Vpg, body: dict) -> dict:
    policy = body.get("Policy", "None")
    if policy not in SHUTDOWN_POLICIES:
        raise ValidationError(f"Policy must be one of {', '.join(SHUTDOWN_POLICIES)}", field="Policy")
    timeout = float(body.get("TimeoutSeconds", 300))
    done: dict[str, str] = {}
    before: dict[str, str] = {}
    vc = _vcenter(zvm)
    try:
        rv = vc.recovery()
        for vm in _source_vms(vpg):
            state = rv.vm_state(vm.vm_moid)
            before[vm.vm_moid] = state or "missing"
            if state == "poweredOn" and policy != "None":
                done[vm.vm_moid] = rv.shut_down(vm.vm_moid, timeout, force=policy == "ForceShutdown")
    finally:
        vc.close()
    out: dict = {"PowerStates": before, "Shutdown": done}
    if body.get("FinalCheckpoint"):
        out["Checkpoint"] = _final_checkpoint(zvm, vpg, float(body.get("CheckpointTimeoutSeconds", 60)))
    return out


def _final_checkpoint(zvm, vpg: m.Vpg, timeout: float) -> dict:
    """A checkpoint after the VMs stopped, journaled at the recovery site; consistent (a sync that was
    running has finished), so that nothing written before the shutdown is missing from it."""
    coordinator = find_coordinator(zvm, vpg)
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            cp = zvm.vra_control.checkpoint(coordinator, vpg.identifier, f"Move {time.strftime('%Y-%m-%d %H:%M:%S')}",
                                            wait_durable=True)
            if cp.consistent:
                with zdb.transaction():
                    m.Checkpoint.insert(identifier=cp.checkpoint_id, vpg=vpg, timestamp=cp.timestamp_s, tag=cp.tag,
                                        consistent=True).on_conflict_ignore().execute()
                return {"Identifier": cp.checkpoint_id, "Time": cp.timestamp_s, "Consistent": True}
            last = "the checkpoint was not consistent (a sync is still sending what the VMs wrote)"
        except ZvmError as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise TransientError(f"no consistent final checkpoint of VPG {vpg.name} within {timeout:.0f} s: {last}")
        time.sleep(0.5)


def _rollback(zvm, vpg: m.Vpg, body: dict) -> dict:
    powered = []
    wanted = [moid for moid in body.get("PowerOn") or [] if isinstance(moid, str)]
    if wanted:
        vc = _vcenter(zvm)
        try:
            rv = vc.recovery()
            for moid in wanted:
                if rv.vm_state(moid) == "poweredOff":
                    rv.power_on(moid)
                    powered.append(moid)
        finally:
            vc.close()
    _set(vpg, status="MeetingSLA", substatus=_protecting(vpg))
    _event(vpg, "RecoveryRolledBack", f"VPG {vpg.name}: the recovery was rolled back; source VMs powered on again: "
           f"{len(powered)}")
    return {"PoweredOn": powered}


def _end(zvm, vpg: m.Vpg, body: dict) -> dict:
    if vpg.substatus == "Testing":
        _set(vpg, substatus=_protecting(vpg))
    return {}


def _protecting(vpg: m.Vpg) -> str:
    """The substatus of a VPG that protects again after an operation: a pause outlives the operation."""
    return "ReplicationPausedUserInitiated" if vpg.paused else "None"


def _commit(zvm, vpg: m.Vpg, body: dict, caller: m.Site | None) -> dict:
    local = zvm.local_site()
    reverse = bool(body.get("ReverseProtection"))
    if vpg.protected_site_id != local.id:  # done before (asked again after a restart): the same answer
        return _reverse_answer(vpg) if reverse else {}
    doc, recovered = body.get("Doc"), body.get("Recovered") or []
    protect_vras = [str(p) for p in body.get("ProtectVras") or []]
    if reverse and (not isinstance(doc, dict) or not doc.get("Vms") or not protect_vras):
        raise ValidationError("reverse protection needs the recovered VPG (Doc, Recovered) and the recovery "
                              "site's protect VRAs (ProtectVras)", field="Doc")
    sources = {vm.vm_moid: vm for vm in _source_vms(vpg)}
    vc = _vcenter(zvm)
    try:
        rv = vc.recovery()
        placed = {moid: rv.vm_placement(moid) for moid in sources}  # read before they leave the inventory
        for moid in sources:  # never two running copies of a VM
            rv.power_off(moid)
        for vra in installed_vras(local):
            zvm.vra_control.remove_vpg(vra_ref(vra), vpg.identifier)
        if not reverse:
            _set(vpg, status="Recovered", substatus="NeedsConfiguration")
            _event(vpg, "RecoveryCommitted", f"VPG {vpg.name}: its VMs run on the recovery site; the protect "
                   "roles here are removed (no reverse protection)")
            return {}
        answer = _protect_back_here(zvm, vpg, doc, recovered, protect_vras, sources, placed, caller)
        # Only now, with this site's database saying the VMs are protected from the recovery site, do the
        # source VMs leave vCenter: never a moment where vCenter lacks them and the database still lists them
        # as protected here. Their disks are the replicas now: nothing may start them again.
        for moid in sources:
            rv.unregister_vm(moid)
    finally:
        vc.close()
    return answer


def _protect_back_here(zvm, vpg: m.Vpg, doc: dict, recovered: list, protect_vras: list[str],
                       sources: dict[str, m.VpgVm], placed: dict, caller: m.Site | None) -> dict:
    """Reverse protection's part here: a VRA of this site takes the recover role with the source VMs' disks
    as the replicas, and this site's row of the VPG becomes the recovery side's (the VMs, protected from
    the caller's site). Returns the answer for the recovery site."""
    local = zvm.local_site()
    # the recovered VMs come back here: their source VMs' disks are the replicas; host, folder, network theirs
    inventory = {moid: SimpleNamespace(host=p["host"], folder=p["folder"], networks=p["networks"])
                 for moid, p in placed.items() if p}
    datastores = {d.name: d.moid for d in m.InvDatastore.select().where(m.InvDatastore.site == local)}
    source_path = {v.volume_id: v.file_name for vm in sources.values() for v in vm.volumes}

    def datastore_of(vm: m.VpgVm | None) -> str | None:
        first = next(iter(vm.volumes.order_by(m.VpgVolume.disk_key)), None) if vm else None
        return datastores.get(split_datastore_path(first.file_name)[0] or "") if first else None

    source_of = {r["RecoveryVm"]: r["SourceVm"] for r in recovered}
    first_src = next(iter(sources.values()), None)
    first_inv = inventory.get(first_src.vm_moid) if first_src else None
    datastore = datastore_of(first_src) or vpg.recovery_datastore
    volumes = [(v["VolumeIdentifier"], None, int(v.get("Capacity", 0))) for vm in doc["Vms"] for v in vm["Volumes"]]
    req = RecoverRequest(
        vpg=vpg.identifier, name=vpg.name, recovery_host=first_inv.host if first_inv else None, recovery_cluster=None,
        datastore=datastore, journal_datastore=datastore, volumes=volumes, protect_peers=protect_vras,
        history_s=vpg.journal_history_hours * 3600, hard_limit_bytes=vpg.journal_hard_limit_mb << 20,
        warning_bytes=vpg.journal_warning_mb << 20,
        replica_paths={vid: source_path[vid] for vid, _, _ in volumes if vid in source_path})
    vra, paths = recover_locally(local, req, zvm.vra_control)
    vms = []
    for spec in doc["Vms"]:
        src = sources.get(source_of.get(spec["VmIdentifier"], ""))
        inv = inventory.get(src.vm_moid) if src else None
        vms.append({**spec, "RecoveryHost": inv.host if inv else req.recovery_host,
                    "RecoveryDatastore": datastore_of(src) or datastore,
                    "Volumes": [{**vol, "RecoveryPath": paths.get(vol["VolumeIdentifier"]),
                                 "RecoveryDatastore": datastore_of(src) or datastore} for vol in spec["Volumes"]]})
    new_doc = {**doc, "Vms": vms, "RecoveryHost": req.recovery_host, "RecoveryCluster": None,
               "RecoveryDatastore": datastore, "RecoveryFolder": first_inv.folder if first_inv else None,
               "FailoverNetwork": (first_inv.networks or [None])[0] if first_inv else None, "TestNetwork": None,
               "JournalDatastore": datastore}
    with zdb.transaction():
        row = m.Vpg.get_by_id(vpg.id)
        row.protected_site, row.recovery_site = caller or local, local
        row.recovery_vra = vra.vra_id
        row.status, row.substatus = "Initializing", "DeltaSync"
        apply_doc(row, new_doc, replica_paths=paths)
        m.Checkpoint.delete().where(m.Checkpoint.vpg == row).execute()
    _event(vpg, "ReverseProtection", f"VPG {vpg.name}: its VMs run on the recovery site; this site protects them "
           f"back ({vra.name} holds the journal; the former VMs' disks are the replica volumes)")
    return _reverse_answer(m.Vpg.get_by_id(vpg.id))


def _reverse_answer(vpg: m.Vpg) -> dict:
    vra = m.Vra.get_or_none(m.Vra.identifier == vpg.recovery_vra)
    if vra is None:
        raise PermanentError(f"VPG {vpg.name}: its recover role's VRA {vpg.recovery_vra} is gone")
    return {"RecoveryVra": {"VraIdentifier": vra.identifier, "Address": vra.control_address, "Name": vra.name},
            "Recovery": {"Host": vpg.recovery_host, "Datastore": vpg.recovery_datastore,
                         "Folder": vpg.recovery_folder, "FailoverNetwork": vpg.failover_network,
                         "TestNetwork": vpg.test_network,
                         "Vms": {vm.vm_moid: {"Host": vm.recovery_host, "Datastore": vm.recovery_datastore,
                                              "Paths": {v.volume_id: v.recovery_path for v in vm.volumes}}
                                 for vm in _source_vms(vpg)}}}


def reachable_error(exc: ZvmError) -> bool:
    """The protected site did not answer (as opposed to refusing)."""
    return isinstance(exc, TransientError)
