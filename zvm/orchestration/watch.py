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
- the alerts above are reconciled (zvm.monitoring.alerts ``recovery_alerts``, also part of monitoring's
  pass).
"""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

from zvm import db as zdb
from zvm import models as m
from zvm.errors import ZvmError
from zvm.monitoring.alerts import refresh_alerts
from zvm.orchestration.operations import order_next
from zvm.orchestration.recovery import Recovery
from zvm.orchestration.reverse import retry_peer
from zvm.placement import vra_ref
from zvr_common.loop import Loop

log = logging.getLogger("zvm.recovery")

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


class RecoveryWatch(Loop):
    """A zvr_common.loop.Loop: its first pass comes one interval after start."""

    def __init__(self, zvm, interval: float = 5.0):
        super().__init__("zvm-recovery-watch", interval, start_delay=interval, logger=log)
        self.zvm = zvm

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
        rec = Recovery(_Context(self.zvm), op)
        try:
            done["peer"] += retry_peer(rec)
        finally:
            rec.close()

    def after_pass(self) -> None:
        self.zvm.db.close()
