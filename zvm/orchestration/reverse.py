"""Committing a failover or move, and reverse protection.

The commit (on the recovery site's ZVM): the recovery VRA commits the session (the replica volumes at the
checkpoint, with what the VMs wrote since, are their disks from now on; its journal for the VPG is gone);
the recovery VMs' disks are no longer served from the session; the protected site is told (its source VMs
stay off, its protect roles go). With reverse protection the VPG then turns around: the protected site's
VRA takes the recover role with the former VMs' disks as the replica volumes, this site's VRAs of the
recovered VMs' hosts take the protect role, their first sync a delta sync (only what differs is sent),
and this ZVM owns the VPG (the other keeps its mirror). The IO filters of this site's hosts must serve the
recovered VMs' disks (the hypervisor attaches them to protected disks, as for any protected VM).

The hand-over is ordered so that, seen from outside at any moment, some ZVM lists the VMs as protected
from its site and that site's vCenter has them: this ZVM claims the VPG (its row: protected here, the
recovered VMs) before it tells the protected site, which updates its own row before its source VMs leave its
vCenter; the protect roles and the placement the protected site answers come after, here.

When the protected site does not answer, the commit is done here and its part waits
(``peer_pending``): the recovery watch (zvm.orchestration.watch) asks again until it answers, powering
the source VMs off first if they run (never two running copies of a VM).
"""

from __future__ import annotations

import time

from zvm import db as zdb
from zvm import models as m
from zvm.errors import PermanentError, TransientError, ZvmError
from zvm.orchestration.mirror import apply_doc, vpg_doc
from zvm.orchestration.operations import SUBSTATUS
from zvm.placement import usable_vras, vra_ref, waiting_for_vras
from zvm.vra_control import ProtectPlan, VraRef


def _reverse(rec) -> bool:
    """Reverse protection: as the commit order says, else as the operation was ordered (a move: yes)."""
    params = rec.op.params
    key = "MoveCommit" if rec.op.kind == "Move" else "FailoverCommit"
    return bool(params.get(f"{key}.ReverseProtection", params.get("ReverseProtection", rec.op.kind == "Move")))


def _layout(rec) -> dict[str, list[str]]:
    """Host moid -> volumes of the recovery VMs that run there."""
    vra = m.Vra.get_or_none(m.Vra.identifier == rec.op.recovery_vra)
    out: dict[str, list[str]] = {}
    for vm in rec.op.vms:
        host = vm["Host"] or rec.vpg.recovery_host or (vra.host_moid if vra else None)
        out.setdefault(host, []).extend(d["Volume"] for d in vm["Disks"])
    return out


def _protect_vras(rec) -> dict[str, m.Vra]:
    local = rec.zvm.local_site()
    vras = usable_vras(local)
    layout = _layout(rec)
    missing = set(layout) - set(vras)
    if missing:
        raise waiting_for_vras(local, missing)
    return {h: vras[h] for h in layout}


def _doc(rec) -> dict:
    doc = vpg_doc(rec.vpg)
    doc["Vms"] = [{"VmIdentifier": vm["RecoveryVm"], "Name": vm["Name"], "BootGroup": vm["BootGroup"],
                   "Nics": vm["Nics"], "RecoveryHost": None, "RecoveryDatastore": None,
                   "Volumes": [{"VolumeIdentifier": d["Volume"], "DiskKey": n, "FileName": d["File"] or "",
                                "Capacity": d["Capacity"], "RecoveryDatastore": None, "RecoveryPath": None}
                               for n, d in enumerate(vm["Disks"])]} for vm in rec.op.vms]
    return doc


def commit_operation(rec, ctx) -> dict:
    op = rec.op
    reverse = _reverse(rec)
    if op.state == "Committed" and not op.peer_pending:
        return rec.result(Result="Committed", Summary=op.summary)
    started = time.time()
    rec.progress(10, f"Committing the {op.kind.lower()} of VPG {op.vpg_name}: the replica volumes at checkpoint "
                     f"{op.checkpoint}, with what the VMs wrote since, become their disks")
    info = rec.zvm.vra_control.commit_session(rec.vra(), op.vpg, op.session)
    if not info.ok:
        # nothing is committed yet: the operation goes back to waiting for a commit or a rollback
        rec.save(state="BeforeCommit")
        rec.set_vpg(substatus=SUBSTATUS[op.kind][1])
        raise PermanentError(f"the recovery VRA did not commit: {info.message}; the {op.kind.lower()} is "
                             "still before commit: commit again once that is resolved, or roll back")
    rec.timed("Commit", started)
    rec.progress(50, "The recovery VMs' disks are their replica volumes now")
    for vm in op.vms:
        if vm["RecoveryVm"]:
            rec.rv.set_extra_config(vm["RecoveryVm"], {f"zvr.disk{n}.nbd": "" for n in range(len(vm["Disks"]))})
    if reverse:
        _protect_vras(rec)  # refuse before the protected site changes anything when a host has no VRA
    rec.progress(60, "Telling the protected site" + (" and turning the VPG around (reverse protection)"
                                                    if reverse else ""))
    note = finish_with_protected_site(rec, reverse)
    summary = "committed" + (f"; {note}" if note else "")
    rec.save(state="Committed", result="Committed", summary=summary, ended_at=time.time(), commit_deadline=None)
    rec.progress(100, f"{op.kind} of VPG {op.vpg_name} committed; {note or 'done'}")
    return rec.result(Result="Committed", Summary=summary, ReverseProtection=reverse)


def finish_with_protected_site(rec, reverse: bool) -> str:
    """The protected site's part of the commit, then reverse protection here; or, when it does not answer,
    ``peer_pending`` for the watch to do it later. Returns a note on what happened."""
    op = rec.op
    body: dict = {"ReverseProtection": reverse}
    if reverse:
        vras = _protect_vras(rec)
        body.update(Doc=_doc(rec), ProtectVras=sorted({v.identifier for v in vras.values()}),
                    Recovered=[{"SourceVm": vm["Source"], "RecoveryVm": vm["RecoveryVm"]} for vm in op.vms])
        claim(rec)
    try:
        answer = rec.protected("commit", body, timeout=300)
    except TransientError as exc:
        rec.save(peer_pending="commit")
        rec.set_vpg(status="Recovered", substatus="WaitingForPeer")
        return (f"the protected site did not answer ({exc}): its source VMs are kept off and "
                + ("reverse protection starts " if reverse else "it is told ") + "once it answers")
    rec.save(peer_pending="")
    if not reverse:
        rec.set_vpg(status="Recovered", substatus="NeedsConfiguration")
        return "no reverse protection: the VPG needs configuring to protect the VMs again"
    protect_back(rec, answer)
    return "reverse protection: the VMs are protected back to the original site (delta sync first)"


def claim(rec) -> None:
    """This ZVM's row of the VPG says, from now on, that the recovered VMs (which run here) are protected from
    this site, before the protected site lets go of them (its row, then its vCenter's source VMs). The
    substatus stays the operation's (the monitor leaves the status alone) until ``protect_back``. Repeated
    (a retry after the protected site did not answer) it changes nothing."""
    vpg, local = rec.vpg, rec.zvm.local_site()
    peer = m.Site.get(m.Site.identifier == rec.op.protected_site)
    doc = _doc(rec)
    with zdb.transaction():
        row = m.Vpg.get_by_id(vpg.id)
        if row.protected_site_id == local.id:
            return
        keep = {v.volume_id: (v.recovery_path, v.recovery_datastore)
                for v in m.VpgVolume.select().join(m.VpgVm).where(m.VpgVm.vpg == row)}
        for spec in doc["Vms"]:
            for vol in spec["Volumes"]:
                vol["RecoveryPath"], vol["RecoveryDatastore"] = keep.get(vol["VolumeIdentifier"], (None, None))
        row.protected_site, row.recovery_site = local, peer
        apply_doc(row, {**vpg_doc(row), "Vms": doc["Vms"]})


def protect_back(rec, answer: dict) -> None:
    """This site's VRAs take the protect role (pre-seeded: a delta sync first), and this ZVM the VPG."""
    op, vpg, zvm = rec.op, rec.vpg, rec.zvm
    peer = m.Site.get(m.Site.identifier == op.protected_site)
    target = answer["RecoveryVra"]
    recover_vra = VraRef(target["VraIdentifier"], target["Address"], target.get("Name", ""))
    vras = _protect_vras(rec)
    layout = _layout(rec)
    hosts = sorted(layout, key=lambda h: vras[h].identifier)
    refs = [vra_ref(vras[h]) for h in hosts]
    names = {h.moid: h.name for h in m.InvHost.select().where(m.InvHost.site == zvm.local_site())}
    for i, host in enumerate(hosts):
        control = zvm.config.filter_control_template.format(vra_id=vras[host].identifier, host=host,
                                                            host_name=names.get(host, host))
        zvm.vra_control.configure_protect(refs[i], ProtectPlan(
            vpg=op.vpg, volumes=layout[host], recover_peer=recover_vra, protect_peers=refs, coordinator=i == 0,
            priority={"Low": 1, "Medium": 2, "High": 3}.get(vpg.priority, 2), compression=bool(vpg.wan_compression),
            filter_controls=[control], preseeded_volumes=layout[host]))
    recovery = answer.get("Recovery") or {}
    doc = _doc(rec)
    per_vm = recovery.get("Vms") or {}
    for spec in doc["Vms"]:
        there = per_vm.get(spec["VmIdentifier"]) or {}
        spec["RecoveryHost"], spec["RecoveryDatastore"] = there.get("Host"), there.get("Datastore")
        for vol in spec["Volumes"]:
            vol["RecoveryPath"] = (there.get("Paths") or {}).get(vol["VolumeIdentifier"])
            vol["RecoveryDatastore"] = there.get("Datastore")
    doc.update(RecoveryHost=recovery.get("Host"), RecoveryCluster=None, RecoveryDatastore=recovery.get("Datastore"),
               RecoveryFolder=recovery.get("Folder"), FailoverNetwork=recovery.get("FailoverNetwork"),
               TestNetwork=recovery.get("TestNetwork"), JournalDatastore=recovery.get("Datastore"))
    local = zvm.local_site()
    with zdb.transaction():
        row = m.Vpg.get_by_id(vpg.id)
        row.protected_site, row.recovery_site = local, peer
        row.recovery_vra = recover_vra.vra_id
        row.status, row.substatus = "Initializing", "DeltaSync"
        apply_doc(row, doc)
        m.Checkpoint.delete().where(m.Checkpoint.vpg == row).execute()
        now = time.time()
        m.Event.create(kind="ReverseProtection", category="Vpg", user="system",
                       description=f"VPG {vpg.name}: the recovered VMs are protected back to site {peer.name} "
                                   f"({recover_vra.name or recover_vra.vra_id} holds the journal)",
                       entity_id=vpg.identifier, task=rec.ctx.task.identifier if rec.ctx else None,
                       result="Succeeded", started_at=now, completed_at=now)


def retry_peer(rec) -> bool:
    """The protected site's pending part (the watch calls it): True when done."""
    op = rec.op
    try:
        if op.peer_pending == "commit":
            note = finish_with_protected_site(rec, _reverse(rec))
            if rec.op.peer_pending:
                return False
            rec.save(summary=f"committed; {note}")
            return True
        if op.peer_pending == "rollback":
            rec.protected("rollback", {"PowerOn": rec.sources_to_power_on()}, timeout=120)
            rec.save(peer_pending="")
            return True
    except TransientError:
        return False
    except ZvmError as exc:
        rec.save(summary=f"{op.summary}; the protected site's part failed: {exc}"[:4000])
        return False
    return True
