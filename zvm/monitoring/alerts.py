"""Alerts: making the active alerts equal what the state calls for (``reconcile_alerts``), and the alerts that
follow from recovery operations (``recovery_alerts``), which monitoring's pass and the recovery tasks and
watch (``refresh_alerts``) both raise and clear.

The recovery alerts, from the recovery operations and events in the database:

- ``VpgFailoverTestScratchFull``: the VPG's latest failover test was stopped because its scratch was full;
- ``VpgRecoveryScratchFull``: a failover or move before commit whose scratch is full (its VMs cannot write);
- ``VpgRecoveryWaitingForPeer``: the protected site has not been told of a commit or rollback yet;
- ``VpgRecoveryFilesLeftOver``: a deleted VPG's recovery files that were not deleted, until dismissed.

And the recoverability checks' alert (``verdict_alerts``, from the ``CheckpointVerified`` events that
zvm.orchestration.recoverability records): ``VpgCheckpointVerifyFailed`` while a VPG's latest check failed.
Monitoring's pass wants every alert of these kinds too, or it would clear them.
"""

from __future__ import annotations

import time

from zvm import db as zdb
from zvm import models as m
from zvm.monitoring.rules import AlertSpec


def reconcile_alerts(wanted: list[AlertSpec], now: float, scope: set[str] | None = None) -> dict[str, int]:
    """Make the active alerts equal ``wanted``: raise new ones, update changed ones, clear the rest
    (of the codes in ``scope``, if given). Call inside a transaction."""
    by_key = {a.key: a for a in wanted}
    active = m.Alert.select().where(m.Alert.cleared_at.is_null())
    if scope is not None:
        active = active.where(m.Alert.code.in_(sorted(scope)))
    raised = updated = cleared = 0
    seen = set()
    for alert in active:
        key = (alert.code, alert.entity, alert.entity_id)
        spec = by_key.get(key)
        if spec is None or key in seen:
            alert.cleared_at = now
            alert.updated_at = now
            alert.save()
            m.Event.create(kind="AlertCleared", category="Alert", user="system",
                           description=f"cleared: {alert.description}", entity_id=alert.entity_id,
                           result="Succeeded", detail=alert.code, started_at=now, completed_at=now)
            cleared += 1
            continue
        seen.add(key)
        if (alert.level, alert.description) != (spec.level, spec.description):
            alert.level, alert.description, alert.updated_at = spec.level, spec.description, now
            alert.save()
            updated += 1
    for key, spec in by_key.items():
        if key not in seen:
            m.Alert.create(code=spec.code, level=spec.level, entity=spec.entity, entity_id=spec.entity_id,
                           description=spec.description, raised_at=now, updated_at=now)
            m.Event.create(kind="AlertRaised", category="Alert", user="system", description=spec.description,
                           entity_id=spec.entity_id, result="Succeeded", detail=spec.code, started_at=now,
                           completed_at=now)
            raised += 1
    return {"raised": raised, "updated": updated, "cleared": cleared}


ALERT_CODES = {"VpgFailoverTestScratchFull", "VpgRecoveryScratchFull", "VpgRecoveryWaitingForPeer",
               "VpgRecoveryFilesLeftOver"}


def recovery_alerts() -> list[AlertSpec]:
    """Alerts that follow from the recovery operations in the database (call inside a transaction)."""
    out = []
    latest_tests: dict[str, m.RecoveryOperation] = {}
    for op in m.RecoveryOperation.select().where(m.RecoveryOperation.kind == "FailoverTest").order_by(
            m.RecoveryOperation.id):
        latest_tests[op.vpg] = op
    for vpg, op in latest_tests.items():
        if op.result == "ScratchLimit":
            out.append(AlertSpec("VpgFailoverTestScratchFull", "Error", "Vpg", vpg,
                                 f"VPG {op.vpg_name}: the failover test started "
                                 f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(op.started_at))} was stopped: "
                                 "its scratch reached the limit; test with a larger ScratchLimitInMB, or write less"))
    for op in m.RecoveryOperation.select().where(m.RecoveryOperation.state == "BeforeCommit"):
        if (op.params or {}).get("ScratchFull"):
            out.append(AlertSpec("VpgRecoveryScratchFull", "Error", "Vpg", op.vpg,
                                 f"VPG {op.vpg_name}: the scratch of the {op.kind.lower()} is full: its VMs cannot "
                                 "write; commit or roll it back"))
    for op in m.RecoveryOperation.select().where(m.RecoveryOperation.peer_pending != ""):
        out.append(AlertSpec("VpgRecoveryWaitingForPeer", "Warning", "Vpg", op.vpg,
                             f"VPG {op.vpg_name}: the protected site has not been told of the {op.kind.lower()}'s "
                             f"{op.peer_pending} yet (it does not answer); it is asked again until it does"))
    # a deleted VPG whose recovery files could not be deleted (its recovery site or VRA did not answer, or
    # vCenter refused): alerted until dismissed, naming the files (zvm.orchestration.vpgs.delete_vpg)
    for ev in m.Event.select().where(m.Event.kind == "RecoveryVolumesLeftOver"):
        out.append(AlertSpec("VpgRecoveryFilesLeftOver", "Warning", "Vpg", ev.entity_id, ev.description))
    return out


VERIFIED_EVENT = "CheckpointVerified"
VERIFY_FAILED = "VpgCheckpointVerifyFailed"


def verdict_alerts() -> list[AlertSpec]:
    """An alert per VPG whose latest recoverability check failed (call inside a transaction)."""
    latest: dict[str, m.Event] = {}
    for ev in m.Event.select().where(m.Event.kind == VERIFIED_EVENT).order_by(m.Event.started_at, m.Event.id):
        latest[ev.entity_id] = ev
    return [AlertSpec(VERIFY_FAILED, "Error", "Vpg", vpg, ev.description)
            for vpg, ev in latest.items() if ev.result == "Failed"]


def refresh_alerts(now: float | None = None) -> None:
    """Raise and clear the recovery alerts now (a task that changed an operation calls it)."""
    with zdb.transaction():
        reconcile_alerts(recovery_alerts(), now or time.time(), scope=ALERT_CODES)
