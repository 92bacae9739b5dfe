"""Scheduled recoverability checks: the recovery site's ZVM orders a ``VerifyCheckpoint`` task by itself
(user "system") every ``verify_every_minutes`` (zvm/config.py; 0: never) for each VPG it recovers.

``due_check(config, local_site, now)`` picks the one VPG to check now, or None; ``schedule_once(zvm)`` queues
its task; ``VerifySchedule`` is the loop that calls it. A VPG is due when all of these hold:

- this ZVM has a guest runner (zvm.orchestration.recoverability.runner_problem says nothing);
- no check runs or waits on this ZVM (scheduled or ordered by a user): guests boot under TCG here, one at a
  time (the task runner also runs ``VerifyCheckpoint`` tasks one at a time: ``SHARED`` in tasks.py);
- it recovers here, to a known recovery VRA, and no recovery operation (test, failover, move) runs on it,
  nor any other task of it waits or runs (a check would hold its images, or wait behind it);
- its newest consistent checkpoint is newer than the checkpoint its last check took, and that check (any
  outcome, scheduled or not) was ordered at least ``verify_every_minutes`` ago.

Of the VPGs due, the one whose last check is the oldest (never checked first) goes first; one per pass.
"""

from __future__ import annotations

import logging
import time

from zvm import db as zdb
from zvm import models as m
from zvm.monitoring.monitor import OPERATION_SUBSTATUSES
from zvm.orchestration.recoverability import KIND, runner_problem
from zvm.orchestration.tasks import create_task
from zvr_common.loop import Loop

log = logging.getLogger("zvm.recoverability")

ACTIVE_TASK = ("Pending", "InProgress")
ENDED_OPERATION = ("Stopped", "Committed", "RolledBack", "Failed")
NOT_CHECKED_STATUSES = ("Deleting", "FailingOver", "Moving", "Recovered")
PASS_S = 5.0


def due_check(config, local: m.Site, now: float) -> tuple[m.Vpg, m.Checkpoint] | None:
    """The VPG to check now and its newest consistent checkpoint, or None (call with a connection open)."""
    every_s = config.verify_every_minutes * 60
    if every_s <= 0 or runner_problem(config):
        return None
    if m.Task.select().where(m.Task.kind == KIND, m.Task.state.in_(ACTIVE_TASK)).exists():
        return None
    busy = {t.vpg for t in m.Task.select(m.Task.vpg).where(m.Task.state.in_(ACTIVE_TASK), m.Task.vpg.is_null(False))}
    busy |= {op.vpg for op in m.RecoveryOperation.select(m.RecoveryOperation.vpg).where(
        m.RecoveryOperation.state.not_in(ENDED_OPERATION))}
    due: list[tuple[float, str, m.Vpg, m.Checkpoint]] = []
    for vpg in m.Vpg.select().where(m.Vpg.recovery_site == local, m.Vpg.recovery_vra.is_null(False)):
        if vpg.identifier in busy or vpg.substatus in OPERATION_SUBSTATUSES or vpg.status in NOT_CHECKED_STATUSES:
            continue
        newest = (m.Checkpoint.select().where(m.Checkpoint.vpg == vpg, m.Checkpoint.consistent == True)  # noqa: E712
                  .order_by(m.Checkpoint.timestamp.desc()).first())
        if newest is None:
            continue
        last = m.Task.select().where(m.Task.kind == KIND, m.Task.vpg == vpg.identifier).order_by(m.Task.id.desc()).first()
        if last is not None:
            if now - last.created_at < every_s:
                continue
            checked = m.Checkpoint.get_or_none(m.Checkpoint.vpg == vpg,
                                               m.Checkpoint.identifier == (last.params or {}).get("Checkpoint"))
            if checked is not None and newest.timestamp <= checked.timestamp:
                continue  # nothing new since: checking it again would find what it found
        due.append((last.created_at if last is not None else 0.0, vpg.name, vpg, newest))
    if not due:
        return None
    _, _, vpg, newest = min(due, key=lambda d: d[:2])
    return vpg, newest


def schedule_once(zvm, now: float | None = None) -> m.Task | None:
    """Queue the check due now, if one is (``due_check``); returns its task. The task runner is woken."""
    zdb.connect(zvm.db)
    now = time.time() if now is None else now
    with zdb.transaction():
        picked = due_check(zvm.config, zvm.local_site(), now)
        if picked is None:
            return None
        vpg, cp = picked
        task = create_task(KIND, params={"Vpg": vpg.identifier, "Checkpoint": cp.identifier}, vpg=vpg.identifier,
                           step=f"Scheduled check of checkpoint {cp.identifier} (every "
                                f"{zvm.config.verify_every_minutes:g} min)", user="system")
    log.info("VPG %s: scheduled recoverability check of checkpoint %s (task %s)", vpg.name, cp.identifier,
             task.identifier)
    zvm.wake_tasks()
    return task


class VerifySchedule(Loop):
    """The loop around ``schedule_once``: a pass every few seconds (cheap: a few queries)."""

    def __init__(self, zvm, interval: float = PASS_S):
        super().__init__("zvm-verify-schedule", interval, start_delay=interval, logger=log)
        self.zvm = zvm
        self._said: str | None = None

    def run_once(self) -> m.Task | None:
        problem = runner_problem(self.zvm.config)
        if problem != self._said and problem:  # said once, not every pass
            log.warning("verify_every_minutes = %g, but no check can run: %s", self.zvm.config.verify_every_minutes,
                        problem)
        self._said = problem
        return None if problem else schedule_once(self.zvm)

    def after_pass(self) -> None:
        self.zvm.db.close()
