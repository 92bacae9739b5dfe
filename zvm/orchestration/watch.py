"""The recovery watch: what running recovery operations need between their tasks.

Each pass (``run_once``; ``start``/``stop`` repeat it every ``interval`` seconds):

- a failover test whose scratch reached its limit is stopped (a FailoverTestStop task, result
  ScratchLimit) and alerted on (``VpgFailoverTestScratchFull``); one whose images the recovery VRA lost
  (it restarted) is stopped too. A failover or move before commit whose scratch is full is alerted on
  (``VpgRecoveryScratchFull``): its VMs see a full disk until it is committed or rolled back;
- a failover or move before commit whose commit policy's time has come is committed or rolled back
  (the task is queued here, once: the operation's state changes in the same transaction);
- a protected site's part that could not be done (``peer_pending``: it did not answer) is asked again;
- a deleted VPG's recovery files that were not deleted (``RecoveryVolumesLeftOver`` events) are alerted
  on (``VpgRecoveryFilesLeftOver``, naming them) until the alert is dismissed;
- the alerts above are reconciled (``recovery_alerts`` are also part of monitoring's pass).
"""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace

from zvm import db as zdb
from zvm import models as m
from zvm.errors import ZvmError
from zvm.monitoring.rules import AlertSpec

log = logging.getLogger("zvm.recovery")

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


def refresh_alerts(now: float | None = None) -> None:
    """Raise and clear the recovery alerts now (a task that changed an operation calls it)."""
    from zvm.monitoring.monitor import reconcile_alerts

    with zdb.transaction():
        reconcile_alerts(recovery_alerts(), now or time.time(), scope=ALERT_CODES)


class _Context:
    """What a Recovery needs of a task context, for the watch's own work (no task)."""

    def __init__(self, zvm):
        self.zvm = zvm
        self.task = SimpleNamespace(progress=0, identifier=None)
        self.resumed = True

    def progress(self, percent: int, step: str) -> None:
        log.info("recovery watch: %s", step)

    def param(self, key: str, default=None):
        return default


class RecoveryWatch:
    def __init__(self, zvm, interval: float = 5.0):
        self.zvm = zvm
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, now: float | None = None) -> dict[str, int]:
        zdb.connect(self.zvm.db)
        now = now or time.time()
        done = {"stopped": 0, "committed": 0, "rolled_back": 0, "peer": 0}
        local = self.zvm.local_site()
        for op in m.RecoveryOperation.select().where(m.RecoveryOperation.state.in_(["Running", "BeforeCommit"])):
            self._check_session(op, local, done)
        for op in m.RecoveryOperation.select().where(m.RecoveryOperation.state == "BeforeCommit",
                                                     m.RecoveryOperation.commit_deadline <= now):
            self._commit_policy(op, local, done)
        for op in m.RecoveryOperation.select().where(m.RecoveryOperation.peer_pending != ""):
            self._retry_peer(op, done)
        refresh_alerts(now)
        return done

    def _order(self, op: m.RecoveryOperation, local: m.Site, kind: str, params: dict, by: str) -> bool:
        from zvm.orchestration.recovery import order_next

        vpg = m.Vpg.get_or_none(m.Vpg.identifier == op.vpg)
        if vpg is None:
            return False
        try:
            with zdb.transaction():
                order_next(vpg, kind, params, local, by=by)
        except ZvmError as exc:  # its state changed meanwhile
            log.info("recovery watch: %s of %s not ordered: %s", kind, op.vpg_name, exc)
            return False
        self.zvm.wake_tasks()
        return True

    def _check_session(self, op: m.RecoveryOperation, local: m.Site, done: dict) -> None:
        from zvm.orchestration.vpgs import vra_ref

        vra = m.Vra.get_or_none(m.Vra.identifier == op.recovery_vra) if op.recovery_vra else None
        if vra is None:
            return
        try:
            info = self.zvm.vra_control.get_session(vra_ref(vra), op.vpg, op.session)
        except ZvmError:
            return  # the VRA does not answer now: monitoring alerts on that
        lost = not info.ok or info.state != "open"
        if op.kind == "FailoverTest":
            if info.scratch_exceeded or lost:
                reason = "ScratchLimit" if info.scratch_exceeded else "SessionLost"
                done["stopped"] += self._order(op, local, "FailoverTestStop", {"Reason": reason}, by=f"watch: {reason}")
        elif info.scratch_exceeded and not (op.params or {}).get("ScratchFull"):
            with zdb.transaction():
                m.RecoveryOperation.update(params={**op.params, "ScratchFull": True}).where(
                    m.RecoveryOperation.id == op.id).execute()

    def _commit_policy(self, op: m.RecoveryOperation, local: m.Site, done: dict) -> None:
        policy = (op.params or {}).get("CommitPolicy")
        prefix = "Move" if op.kind == "Move" else "Failover"
        if policy == "Commit":
            done["committed"] += self._order(op, local, f"{prefix}Commit", {}, by="commit policy")
        elif policy == "Rollback":
            done["rolled_back"] += self._order(op, local, f"{prefix}Rollback", {}, by="commit policy")

    def _retry_peer(self, op: m.RecoveryOperation, done: dict) -> None:
        from zvm.orchestration.recovery import Recovery
        from zvm.orchestration.reverse import retry_peer

        rec = Recovery(_Context(self.zvm), op)
        try:
            done["peer"] += retry_peer(rec)
        finally:
            rec.close()

    # --- the loop -------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="zvm-recovery-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the watch outlives a failed pass
                log.exception("recovery watch pass failed")
            finally:
                self.zvm.db.close()
