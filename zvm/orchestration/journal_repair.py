"""Repairing a VPG whose recovery journal is corrupt: the first half of the ForceSyncVpg task.

A recovery journal that fails verification (state ``journal-corrupt`` on the recovery VRA), or whose writes
failed (``journal-error``), refuses the VPG's streams; only a resync repairs it (docs/OPERATIONS.md,
"Recovery journal corrupt"). ``before_force_sync`` runs at the start of ForceSyncVpg on the protected site:

1. asks the recovery VRA's state (this site's VRA, or the paired recovery site's ZVM: POST
   /peer/v1/vpgs/status); a healthy journal is left alone (the plain delta sync follows);
2. asks every protect VRA for a delta sync (reason journal-corrupt) *before* the journal goes: from then on no
   checkpoint is marked consistent until the delta sync completed, and it cannot run before the discard (the
   recovery VRA refuses the stream and the checksums of a corrupt journal);
3. discards the journal on the recovery VRA (``discard_on_this_site``, called here or by the recovery
   site's peer service: POST /peer/v1/vpgs/discard-journal), with an event naming who asked;
4. the VPG starts over: status Initializing, substatus DeltaSync (history restarts), until the monitor sees
   a consistent checkpoint again.

ForceSyncVpg then asks the protect VRAs for the delta sync again (reason forced), so one surely runs after
the discard.
"""

from __future__ import annotations

import logging
import time

from zvm import db as zdb
from zvm import models as m
from zvm.errors import ConflictError, NotFoundError, PermanentError, ZvmError
from zvm.placement import installed_vras, peer_client, vra_ref

log = logging.getLogger("zvm.orchestration.journal_repair")

BROKEN_STATES = ("journal-corrupt", "journal-error")


def _recover_role(zvm, site: m.Site, vpg_identifier: str) -> tuple[m.Vra | None, dict | None]:
    """This site's VRA holding the VPG's recover role, and that role's status."""
    for vra in installed_vras(site):
        try:
            role = zvm.vra_control.status(vra_ref(vra)).get(vpg_identifier, {}).get("recover")
        except ZvmError:
            continue
        if role is not None:
            return vra, role
    return None, None


def recovery_state(zvm, vpg: m.Vpg) -> dict | None:
    """The recover role's status ({"state", "error", ...}) wherever the VPG recovers; None if unknown."""
    if vpg.recovery_site_id == vpg.protected_site_id:
        return _recover_role(zvm, vpg.recovery_site, vpg.identifier)[1]
    return peer_client(zvm, vpg.recovery_site).vpg_status(vpg.identifier).get("Recover")


def discard_on_this_site(zvm, vpg_identifier: str, reason: str, user: str, task: str | None = None) -> dict:
    """Discard the VPG's recovery journal on this site's VRA (it must be corrupt or failed). Records an event;
    the VPG row here (the VPG, or the mirror of a paired site's VPG) starts over (Initializing, DeltaSync)."""
    site = zvm.local_site()
    vra, role = _recover_role(zvm, site, vpg_identifier)
    if vra is None:
        raise NotFoundError(f"no VRA of site {site.name} holds the recovery journal of VPG {vpg_identifier}",
                            code="VpgNotFound")
    started = time.time()
    result = zvm.vra_control.discard_journal(vra_ref(vra), vpg_identifier, reason)
    vpg = m.Vpg.get_or_none(m.Vpg.identifier == vpg_identifier)
    name = vpg.name if vpg is not None else vpg_identifier
    with zdb.transaction():
        m.Event.create(kind="DiscardJournal", category="Vpg", user=user, task=task, entity_id=vpg_identifier,
                       description=(f"Recovery journal of VPG {name} on VRA {vra.name} discarded "
                                    f"({result.state_before}: {result.records} records, {result.checkpoints} "
                                    "checkpoints lost); history restarts, a delta sync follows"
                                    if result.ok else f"Discarding the recovery journal of VPG {name} on VRA "
                                    f"{vra.name} refused: {result.message}"),
                       result="Succeeded" if result.ok else "Refused", detail=reason, started_at=started,
                       completed_at=time.time())
        if result.ok and vpg is not None:
            m.Vpg.update(status="Initializing", substatus="DeltaSync", updated_at=time.time()).where(
                m.Vpg.id == vpg.id).execute()
    if not result.ok:
        raise ConflictError(f"the recovery VRA {vra.name} refused to discard the journal of VPG {name}: "
                            f"{result.message}")
    log.warning("VPG %s: recovery journal on %s discarded by %s: %s", name, vra.name, user, result.message)
    return {"Vra": vra.identifier, "StateBefore": result.state_before, "RecordsDiscarded": result.records,
            "CheckpointsDiscarded": result.checkpoints, "Message": result.message}


def before_force_sync(ctx, vpg: m.Vpg, protects) -> dict | None:
    """Steps 1-4 of the module docstring; None when the journal is healthy (or its state unknown: the delta
    sync is still asked for, and a corrupt journal then shows in the VPG's alert)."""
    try:
        role = recovery_state(ctx.zvm, vpg)
    except ZvmError as exc:
        log.warning("VPG %s: the recovery journal's state is unknown (%s); forcing the sync anyway", vpg.name, exc)
        return None
    if role is None or role.get("state") not in BROKEN_STATES:
        return None
    control = ctx.zvm.vra_control
    for vra, _, _ in protects:
        control.force_sync(vra, vpg.identifier, reason="journal-corrupt")
    where = "" if vpg.recovery_site_id == vpg.protected_site_id else f" at site {vpg.recovery_site.name}"
    ctx.progress(5, f"Discarding the corrupt recovery journal of VPG {vpg.name}{where}")
    user = ctx.task.initiated_by or "system"
    reason = f"ForceSyncVpg task {ctx.task.identifier} by {user}: journal {role['state']}: {role.get('error', '')}"
    if vpg.recovery_site_id == vpg.protected_site_id:
        return discard_on_this_site(ctx.zvm, vpg.identifier, reason, user, task=ctx.task.identifier)
    reply = peer_client(ctx.zvm, vpg.recovery_site, timeout=180).discard_journal(vpg.identifier, reason, user)
    started = time.time()
    with zdb.transaction():
        m.Event.create(kind="DiscardJournal", category="Vpg", user=user, task=ctx.task.identifier,
                       entity_id=vpg.identifier, result="Succeeded", detail=reason, started_at=started,
                       completed_at=started,
                       description=f"Recovery journal of VPG {vpg.name} discarded at site {vpg.recovery_site.name} "
                                   f"({reply.get('StateBefore')}: {reply.get('CheckpointsDiscarded', 0)} checkpoints "
                                   "lost); history restarts, a delta sync follows")
        m.Vpg.update(status="Initializing", substatus="DeltaSync", updated_at=started).where(
            m.Vpg.id == vpg.id).execute()
    if not reply.get("Vra"):
        raise PermanentError(f"site {vpg.recovery_site.name} did not discard the journal of VPG {vpg.name}")
    return reply
