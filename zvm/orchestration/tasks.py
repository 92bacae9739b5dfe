"""Long operations as tasks: created by the API inside its transaction, run by the task runner.

A task is a row (zvm.models.Task) that starts ``Pending``. The runner claims it with a conditional update
(``Pending -> InProgress``), so several processes can run runners without running a task twice, then calls
the handler registered for its kind. The handler reports progress (percent and a step that says what it is
doing) through ``TaskContext.progress``; its return value becomes the task's result. A ``ZvmError`` fails
the task with the error's code and message; any other exception fails it as ``InternalError`` and is logged.
The event that recorded the request (zvm.models.Event with this task) is closed with the outcome.

The runner is a ``start()`` / ``stop()`` loop around the public ``dispatch()``; tests call ``run_once()``.
Tasks run concurrently on a bounded pool of workers, except that tasks of the same VPG or VRA run one at
a time in the order they were queued (``TaskRunner``).
Secret parameters (a pairing token) are stored encrypted, never in clear.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from zvm import db as zdb
from zvm import models as m
from zvm.errors import ZvmError
from zvr_common.loop import Loop

log = logging.getLogger("zvm.tasks")

HANDLERS: dict[str, Callable[[TaskContext], dict | None]] = {}
# Kinds whose handler picks up where it was (its steps are recorded as they are done, and each can be done
# again): a task of these kinds that a restart interrupted is run again rather than failed.
RESUMABLE: set[str] = set()


def handler(kind: str, *, resumable: bool = False):
    """Register the function that runs tasks of ``kind``; ``resumable``: see RESUMABLE."""

    def register(fn):
        HANDLERS[kind] = fn
        if resumable:
            RESUMABLE.add(kind)
        return fn

    return register


def create_task(kind: str, *, params: dict | None = None, secret_params: Iterable[str] = (), secrets=None,
                vpg: str | None = None, vra: str | None = None, site: str | None = None,
                step: str = "Waiting to start", user: str = "system") -> m.Task:
    """Queue a task that ``user`` ordered; call inside the transaction of what orders it, so that it exists
    only if that commits. The ``secret_params`` are stored encrypted with ``secrets`` (the ZVM's box)."""
    params = dict(params or {})
    secret = set(secret_params) & set(params)
    if secret and secrets is None:
        raise ValueError(f"task {kind}: secret parameters {sorted(secret)} need the ZVM's secrets box")
    for key in secret:
        params[key] = {"encrypted": secrets.encrypt(str(params[key]))}
    return m.Task.create(kind=kind, params=params, vpg=vpg, vra=vra, site=site, step=step,
                         initiated_by=user or "system")


@dataclass
class TaskContext:
    task: m.Task
    zvm: object  # zvm.service.Zvm

    def param(self, key: str, default=None):
        value = (self.task.params or {}).get(key, default)
        if isinstance(value, dict) and set(value) == {"encrypted"}:
            return self.zvm.secrets.decrypt(value["encrypted"])
        return value

    def progress(self, percent: int, step: str) -> None:
        percent = max(0, min(100, int(percent)))
        self.task.progress, self.task.step = percent, step[:512]
        with zdb.transaction():
            m.Task.update(progress=percent, step=step[:512]).where(m.Task.id == self.task.id).execute()
        hook = getattr(getattr(self.zvm, "tasks", None), "on_progress", None)
        if hook is not None:
            hook(self.task, percent, step)

    @property
    def resumed(self) -> bool:
        """The task runs again after a restart of the ZVM interrupted it."""
        return bool((self.task.params or {}).get("_resumed"))


DEFAULT_WORKERS = 4
# Kinds that share something site-wide besides a VPG or a VRA, so that two of them must not run at once:
# an install builds the VRA package into the data directory on first use (zvm.vra_package, which two
# builds at once would corrupt); pairing, unpairing and the VRAs' trust updates change the site's trust;
# recoverability checks boot their guests on this machine, under TCG (one at a time, whoever ordered them).
SHARED: dict[str, str] = {"InstallVra": "vra-package", "PairSite": "trust", "UnpairSite": "trust",
                          "UpdateVraTrust": "trust", "VerifyCheckpoint": "guest-runner"}


def task_keys(task: m.Task) -> frozenset[str]:
    """What a task works on: its VPG, its VRA, and what its kind shares (``SHARED``). Tasks that share one
    run one at a time, in the order they were queued; the others run side by side."""
    keys = ([f"vpg:{task.vpg}"] if task.vpg else []) + ([f"vra:{task.vra}"] if task.vra else [])
    return frozenset(keys + ([f"shared:{SHARED[task.kind]}"] if task.kind in SHARED else []))


class TaskRunner:
    """Runs pending tasks on a bounded pool of worker threads (``workers``: the ZVM's ``task_workers``,
    default 4), oldest first: a long task (a failover's boot delays) holds only the tasks of its own VPG
    (or VRA, ``task_keys``), which wait for it in the order they were queued. A task waits while an older
    one sharing a key is pending or in progress anywhere (another process's runner too), so the order
    holds across runners and across a restart (resumed tasks are pending again with their old place).
    A VPG's task does not take the keys of the VRAs it calls: most VPGs of a site recover to a few hosts'
    VRAs, whose calls are per VPG; the VRA's own tasks (install, uninstall) take its key.

    Each worker thread has its own database connection (peewee's are per thread), opened for a task and
    closed (given back to the pool on PostgreSQL) after it; on SQLite concurrent writers queue on the
    write lock (WAL, immediate transactions, busy timeout: zvm.db), so a task never keeps a transaction
    open across a call to a VRA, vCenter or a peer."""

    def __init__(self, zvm, handlers: dict | None = None, poll_interval: float = 2.0, workers: int | None = None):
        self.zvm = zvm
        self.handlers = HANDLERS if handlers is None else handlers
        self.poll_interval = poll_interval  # other processes' tasks are noticed within this time
        configured = getattr(getattr(zvm, "config", None), "task_workers", None)
        self.workers = max(1, int(workers or configured or DEFAULT_WORKERS))
        self._loop = _RunnerLoop(self)
        self._dispatching = threading.Lock()
        self._changed = threading.Condition()
        self._running: dict[int, frozenset[str]] = {}  # task id -> its keys, on this runner's workers
        self._escaped: list[BaseException] = []  # what a handler raised past the runner (a test's crash)
        # Called after every progress report with (task, percent, step): tests inject faults here (a crash
        # at a chosen step).
        self.on_progress: Callable | None = None

    def wake(self) -> None:
        self._loop.wake()

    def run_once(self) -> int:
        """Run every task pending now (and those they queue), concurrently as the loop would, and return
        when none is left that can run here and none runs; returns how many ran. Something a handler raised
        that is not an Exception (a test's simulated crash) is raised here once the others ended."""
        ran = 0
        while True:
            with self._changed:
                crashed = bool(self._escaped)
            started = 0 if crashed else self.dispatch()  # as a dead ZVM would: start nothing more
            ran += started
            with self._changed:
                if not self._running and not started:
                    break
                if self._running:
                    self._changed.wait(self.poll_interval)
        with self._changed:
            escaped, self._escaped = self._escaped, []
        if escaped:
            raise escaped[0]
        return ran

    def dispatch(self) -> int:
        """Start the pending tasks that may run now: a worker is free and no older task shares a key with
        it (pending, or in progress here or in another runner). Returns how many were started."""
        with self._dispatching:
            zdb.connect(self.zvm.db)
            with self._changed:
                free = self.workers - len(self._running)
            if free <= 0:
                return 0
            rows = list(m.Task.select(m.Task.id, m.Task.kind, m.Task.state, m.Task.vpg, m.Task.vra)
                        .where(m.Task.state.in_(["Pending", "InProgress"])).order_by(m.Task.id))
            blocked: set[str] = set()
            for row in rows:
                if row.state == "InProgress":
                    blocked |= task_keys(row)
            started = 0
            for row in rows:
                if row.state != "Pending":
                    continue
                keys = task_keys(row)
                if keys & blocked:
                    blocked |= keys  # a later task of the same VPG or VRA waits behind this one
                    continue
                if started >= free:
                    break
                blocked |= keys
                if self._claim(row.id):
                    self._submit(row.id, keys)
                    started += 1
            return started

    def _submit(self, task_id: int, keys: frozenset[str]) -> None:
        # a daemon thread per task (at most ``workers`` at once): a task still running when the ZVM stops
        # does not hold its exit; it is resumed or failed on the next start, as after a crash
        with self._changed:
            self._running[task_id] = keys
        threading.Thread(target=self._work, args=(task_id,), name=f"zvm-task-{task_id}", daemon=True).start()

    def _work(self, task_id: int) -> None:
        try:
            zdb.connect(self.zvm.db)
            self._run(m.Task.get_by_id(task_id))
        except BaseException as exc:  # noqa: BLE001 - the task stays InProgress, as after a crash
            if isinstance(exc, Exception):
                log.exception("task %s could not be run", task_id)
            with self._changed:
                self._escaped.append(exc)
        finally:
            try:
                if not self.zvm.db.in_transaction():
                    self.zvm.db.close()
            except Exception:  # noqa: BLE001 - a connection that cannot close is dropped with the thread
                log.exception("closing the task worker's database connection failed")
            with self._changed:
                self._running.pop(task_id, None)
                self._changed.notify_all()
            self._loop.wake()

    def running(self) -> list[int]:
        """Ids of the tasks this runner's workers run now."""
        with self._changed:
            return sorted(self._running)

    def fail_interrupted(self) -> int:
        """Deal with the tasks a previous runner left in progress (it died); call when taking over: resumable
        kinds are queued again (their handler picks up where they were), the others fail."""
        zdb.connect(self.zvm.db)
        with zdb.transaction():
            stale = [t for t in m.Task.select().where(m.Task.state == "InProgress")]
            for task in [t for t in stale if t.kind in RESUMABLE]:
                params = {**(task.params or {}), "_resumed": int((task.params or {}).get("_resumed", 0)) + 1}
                m.Task.update(state="Pending", params=params, step="Resuming after a restart of the ZVM").where(
                    m.Task.id == task.id).execute()
        stale = [t for t in stale if t.kind not in RESUMABLE]
        for task in stale:
            self._finish(task, "Failed", step="Interrupted by a ZVM restart: run the operation again",
                         code="Interrupted", message="the ZVM restarted while the task ran")
        vras = [t.vra for t in stale if t.vra]
        if vras:  # a VRA half installed or removed: Error, so it can be uninstalled and installed again
            with zdb.transaction():
                m.Vra.update(state="Error").where(m.Vra.identifier.in_(vras),
                                                  m.Vra.state.in_(["Installing", "Uninstalling"])).execute()
        return len(stale)

    def _claim(self, task_id: int) -> bool:
        with zdb.transaction():
            claimed = (m.Task.update(state="InProgress", started_at=time.time(), step="Starting")
                       .where(m.Task.id == task_id, m.Task.state == "Pending").execute())
        return claimed == 1

    def _run(self, task: m.Task) -> None:
        ctx = TaskContext(task=task, zvm=self.zvm)
        fn = self.handlers.get(task.kind)
        try:
            if fn is None:
                raise ZvmError(f"this ZVM cannot run {task.kind} tasks: upgrade it", code="NotImplemented")
            result = fn(ctx) or {}
        except ZvmError as exc:
            self._finish(task, "Failed", step=f"Failed: {exc}", code=exc.code, message=str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a task must end, whatever its handler did
            log.exception("task %s (%s) failed", task.identifier, task.kind)
            self._finish(task, "Failed", step="Failed: internal error, see the ZVM log", code="InternalError",
                         message=f"{type(exc).__name__}: {exc}")
            return
        self._finish(task, "Completed", step=ctx.task.step if ctx.task.progress == 100 else "Done",
                     result=result)

    def _finish(self, task: m.Task, state: str, *, step: str, result: dict | None = None, code: str = "",
                message: str = "") -> None:
        now = time.time()
        with zdb.transaction():
            m.Task.update(state=state, step=step[:512], completed_at=now, result=result or {},
                          progress=100 if state == "Completed" else m.Task.progress,
                          error_code=code, error_message=message).where(m.Task.id == task.id).execute()
            m.Event.update(result="Succeeded" if state == "Completed" else "Failed", completed_at=now,
                           detail=f"{code}: {message}" if code else "").where(
                m.Event.task == task.identifier).execute()

    # --- the loop (zvr_common.loop) ------------------------------------------------------------------

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        """Stop starting tasks and wait (up to 30 s) for the running ones to end."""
        self._loop.stop()
        deadline = time.monotonic() + 30
        with self._changed:
            while self._running and time.monotonic() < deadline:
                self._changed.wait(1.0)

    def loop_pass(self) -> None:
        """One pass of the thread: start what may run, log what a task raised past the runner."""
        self.dispatch()
        with self._changed:
            escaped, self._escaped = self._escaped, []
        for exc in escaped:  # the task stays InProgress: a takeover fails or resumes it
            log.error("task runner: a task ended by %r", exc)


class _RunnerLoop(Loop):
    """The runner's thread: a dispatch pass every poll interval, or at once when woken (a task queued or
    ended); the database connection is given back after each pass."""

    def __init__(self, runner: TaskRunner):
        super().__init__("zvm-tasks", runner.poll_interval, logger=log)
        self.runner = runner

    def run_once(self) -> None:
        self.runner.loop_pass()

    def after_pass(self) -> None:
        self.runner.zvm.db.close()
