"""The task runner on a pool of workers (SQLite and PostgreSQL): a long task of one VPG does not hold a task
of another; tasks of the same VPG (or VRA) never overlap and run in the order they were queued; the pool is
bounded; a task resumed after a restart keeps its place before the later tasks of its VPG. The handlers
are the test's (a long one waits on what the other task does, never on a sleep); the runner, its threads
and the database are the product's."""

from __future__ import annotations

import threading

import pytest

from zvm import models as m
from zvm.orchestration.tasks import RESUMABLE, TaskRunner, create_task


@pytest.fixture
def app(app_on_both_engines):
    return app_on_both_engines


@pytest.fixture
def zvm(app):
    return app.extensions["zvm"]


class Journal:
    """What the handlers did, in order, and how many ran at once (per key and in all)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[tuple[str, str]] = []  # ("start" | "end", task identifier)
        self.active: dict[str, int] = {}  # key -> tasks running now
        self.overlaps: list[str] = []
        self.now = 0
        self.peak = 0

    def enter(self, ctx, keys: list[str]) -> None:
        with self.lock:
            self.log.append(("start", ctx.task.identifier))
            for key in keys:
                self.active[key] = self.active.get(key, 0) + 1
                if self.active[key] > 1:
                    self.overlaps.append(key)
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self, ctx, keys: list[str]) -> None:
        with self.lock:
            self.log.append(("end", ctx.task.identifier))
            for key in keys:
                self.active[key] -= 1
            self.now -= 1

    def started(self) -> list[str]:
        return [t for what, t in self.log if what == "start"]


def keys_of(ctx) -> list[str]:
    return [k for k in (ctx.task.vpg, ctx.task.vra) if k]


def test_a_long_task_of_one_vpg_does_not_hold_a_task_of_another(zvm):
    other_done = threading.Event()
    seen = {}

    def boot_delay(ctx):
        # the failover test of VPG A in its boot delay: it ends when the delay is over (30 s at most) or, in
        # this test, as soon as the other VPG's task is done; a runner of one task at a time never gets there
        seen["other done during the delay"] = other_done.wait(30)
        return {}

    def quick(ctx):
        other_done.set()
        return {}

    runner = TaskRunner(zvm, handlers={"FailoverTest": boot_delay, "CheckpointVpg": quick}, workers=4)
    slow = create_task("FailoverTest", vpg="vpg-a")
    fast = create_task("CheckpointVpg", vpg="vpg-b")
    assert runner.run_once() == 2
    assert seen == {"other done during the delay": True}
    slow, fast = m.Task.get_by_id(slow.id), m.Task.get_by_id(fast.id)
    assert (slow.state, fast.state) == ("Completed", "Completed")
    assert fast.completed_at <= slow.completed_at and fast.started_at >= slow.started_at


def test_tasks_of_the_same_vpg_or_vra_never_overlap_and_keep_their_order(zvm):
    journal = Journal()
    b_started = threading.Event()

    def work(ctx):
        journal.enter(ctx, keys_of(ctx))
        try:
            if ctx.task.vpg == "vpg-a":
                # while an A task runs, a B task can start: wait for one (the runner is concurrent), briefly
                # (a later A task must not start meanwhile however long this one takes)
                b_started.wait(5)
            else:
                b_started.set()
            for i in range(3):
                ctx.progress(30 * i, f"step {i}")  # database writes from every worker at once
        finally:
            journal.leave(ctx, keys_of(ctx))
        return {"Order": ctx.task.id}

    runner = TaskRunner(zvm, handlers={"Work": work}, workers=4)
    queued = [create_task("Work", vpg=vpg, vra=vra) for vpg, vra in
              [("vpg-a", None), ("vpg-a", None), ("vpg-b", None), ("vpg-a", "vra-1"), ("vpg-b", None),
               (None, "vra-1"), ("vpg-c", None)]]
    assert runner.run_once() == len(queued)
    assert journal.overlaps == []
    tasks = {t.identifier: m.Task.get_by_id(t.id) for t in queued}
    assert all(t.state == "Completed" for t in tasks.values()), [(t.state, t.error_message) for t in tasks.values()]
    order = journal.started()
    for key in ("vpg-a", "vpg-b", "vra-1"):
        mine = [t.identifier for t in queued if key in (t.vpg, t.vra)]
        assert [t for t in order if t in mine] == mine, key
    assert journal.peak > 1  # they did run side by side


def holding_until(journal: Journal, running: int):
    """A handler whose tasks hold their workers until ``running`` of them run at once (or 5 s pass)."""
    release = threading.Event()

    def work(ctx):
        journal.enter(ctx, [])
        try:
            with journal.lock:
                full = journal.now >= running
            if full:
                release.set()
            release.wait(5)
        finally:
            journal.leave(ctx, [])
        return {}

    return work


def test_the_pool_is_bounded(zvm):
    journal = Journal()
    runner = TaskRunner(zvm, handlers={"Work": holding_until(journal, 2)}, workers=2)
    for i in range(5):
        create_task("Work", vpg=f"vpg-{i}")
    assert runner.run_once() == 5
    assert journal.peak == 2


def test_a_task_resumed_after_a_restart_runs_before_the_later_tasks_of_its_vpg(zvm):
    journal = Journal()

    def work(ctx):
        journal.enter(ctx, keys_of(ctx))
        journal.leave(ctx, keys_of(ctx))
        return {"Resumed": ctx.resumed}

    RESUMABLE.add("Resumable")
    try:
        resumed = create_task("Resumable", vpg="vpg-a")
        lost = create_task("Work", vpg="vpg-b")
        m.Task.update(state="InProgress").where(m.Task.id.in_([resumed.id, lost.id])).execute()  # a runner died
        later = create_task("Work", vpg="vpg-a")
        waiting = create_task("Work", vpg="vpg-b")
        runner = TaskRunner(zvm, handlers={"Work": work, "Resumable": work}, workers=4)
        assert runner.fail_interrupted() == 1
        assert runner.run_once() == 3
    finally:
        RESUMABLE.discard("Resumable")
    got = {t.identifier: m.Task.get_by_id(t.id) for t in (resumed, lost, later, waiting)}
    assert got[resumed.identifier].result == {"Resumed": True}
    assert got[lost.identifier].state == "Failed" and got[waiting.identifier].state == "Completed"
    order = journal.started()
    assert order.index(resumed.identifier) < order.index(later.identifier)


def test_a_task_in_progress_elsewhere_holds_the_tasks_of_its_vpg_here(zvm):
    def work(ctx):
        return {}

    other_runner = create_task("Work", vpg="vpg-a")
    m.Task.update(state="InProgress").where(m.Task.id == other_runner.id).execute()  # another process runs it
    held = create_task("Work", vpg="vpg-a")
    free = create_task("Work", vpg="vpg-b")
    runner = TaskRunner(zvm, handlers={"Work": work}, workers=4)
    assert runner.run_once() == 1
    assert m.Task.get_by_id(held.id).state == "Pending" and m.Task.get_by_id(free.id).state == "Completed"
    m.Task.update(state="Completed").where(m.Task.id == other_runner.id).execute()
    assert runner.run_once() == 1
    assert m.Task.get_by_id(held.id).state == "Completed"


def test_installs_of_different_vras_run_one_at_a_time_as_they_share_the_vra_package(zvm):
    journal = Journal()

    together = threading.Event()

    def install(ctx):
        journal.enter(ctx, ["vra-package"])
        try:
            with journal.lock:
                if journal.active["vra-package"] > 1:
                    together.set()
            together.wait(0.5)  # time for another install to start, were they run side by side
            for i in range(3):
                ctx.progress(30 * i, f"step {i}")
        finally:
            journal.leave(ctx, ["vra-package"])
        return {}

    def other(ctx):
        journal.enter(ctx, [])
        journal.leave(ctx, [])
        return {}

    queued = [create_task("InstallVra", vra=f"vra-{i}") for i in range(3)] + [create_task("CheckpointVpg", vpg="v")]
    runner = TaskRunner(zvm, handlers={"InstallVra": install, "CheckpointVpg": other}, workers=4)
    assert runner.run_once() == 4
    assert journal.overlaps == []
    installs = [t.identifier for t in queued[:3]]
    assert [t for t in journal.started() if t in installs] == installs


def test_the_pool_size_comes_from_the_configuration(zvm, tmp_path):
    from zvm.config import load_config
    from zvm.errors import ConfigError

    conf = tmp_path / "zvm.toml"
    conf.write_text(f'data_dir = "{tmp_path}"\ntask_workers = 3\n')
    assert load_config(conf, env={}).task_workers == 3
    assert load_config(conf, env={"ZVM_TASK_WORKERS": "1"}).task_workers == 1
    with pytest.raises(ConfigError, match="task_workers = 0: give 1..32"):
        load_config(conf, env={"ZVM_TASK_WORKERS": "0"})

    journal = Journal()
    zvm.config.task_workers = 3
    runner = TaskRunner(zvm, handlers={"Work": holding_until(journal, 3)})
    assert runner.workers == 3
    for i in range(6):
        create_task("Work", vpg=f"vpg-{i}")
    assert runner.run_once() == 6
    assert journal.peak == 3
