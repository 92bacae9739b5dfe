"""Scheduled recoverability checks (zvm/orchestration/verify_schedule.py): a ZVM whose guest runner is this
machine, with ``verify_every_minutes = 0.2``, its task runner and schedule loops running, checks the newest
consistent checkpoint of a VPG it recovers on its own (a real `vra serve`, QEMU, the guest's checks) and tags
it "Tested at ...: passed", the task ordered by "system"; so does the lab's recovery `zvm serve` (`zvm lab up
--guests 1 --verify-every 0.2`). The choice itself (``due_check``): nothing while a check waits or runs (of
any VPG), while a recovery operation or another task runs on the VPG, before the interval has passed, or when
no checkpoint is newer than the one last checked; checks share one key of the task runner; the setting is
validated."""

from __future__ import annotations

import time

import pytest

from tests.lab.helpers import wait_for, zvm_lab
from tests.replication.lab import SECRET
from tests.zvm.fakes import ApiClient
from zvm import db as zdb
from zvm import models as m
from zvm.client import ZvmClient
from zvm.config import load_config
from zvm.enums import TaskState, TaskType
from zvm.errors import ConfigError
from zvm.lab.state import LabState
from zvm.orchestration.recoverability import KIND
from zvm.orchestration.tasks import create_task, task_keys
from zvm.orchestration.verify_schedule import VerifySchedule, due_check

from .rows import VM, register_vpg, store_checkpoints
from .site import VPG, GuestSite


def _wait(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}"
        time.sleep(0.5)


def test_a_zvm_checks_the_newest_checkpoint_on_its_own(short_tmp, guest_image, make_app) -> None:
    site = GuestSite(short_tmp, guest_image)
    zvm = None
    try:
        site.protect()
        site.wait_streaming()
        guest = site.start_guest(VM)
        guest.ready()
        guest.wait_commits(20)
        site.checkpoint(guest, "")
        guest.kill()
        app = make_app(guest_runner="local", guest_image_dir=str(guest_image.dir), guest_reports_dir=str(short_tmp),
                       verify_every_minutes=0.2, vra_pairing_secret=SECRET)
        zvm = app.extensions["zvm"]
        vpg = register_vpg(site)
        store_checkpoints(vpg, site)
        api = ApiClient.login(app)
        zvm.tasks.start()
        zvm.verify_schedule.start()  # what `zvm serve` starts when the setting is on

        def checks() -> list[dict]:
            return [t for t in api.get(f"/tasks?vpgIdentifier={VPG}").json if t["Type"] == TaskType.VerifyCheckpoint]

        _wait(lambda: checks(), "a scheduled check to be queued", 60)
        (task,) = checks()
        assert task["InitiatedBy"] == "system", task
        def state() -> TaskState:
            return TaskState(api.get(f"/tasks/{task['TaskIdentifier']}").json["Status"]["State"])

        _wait(lambda: state() in (TaskState.Completed, TaskState.Failed), "the check", 300)
        done = api.get(f"/tasks/{task['TaskIdentifier']}").json
        assert state() == TaskState.Completed, done
        checked = done["Result"]["CheckpointIdentifier"]
        newest = api.get(f"/vpgs/{VPG}/checkpoints?consistentOnly=true&limit=1").json[0]
        assert newest["CheckpointIdentifier"] == checked
        assert newest["Tag"].startswith("Tested at ") and newest["Tag"].endswith(": passed"), newest
        (vm,) = done["Result"]["Vms"]
        assert vm["Passed"] and vm["ExpectedTransactions"] > 0, vm
        # nothing newer was stored since: the next passes queue no other check
        zvm.verify_schedule.run_once()
        assert len(checks()) == 1
    finally:
        if zvm is not None:
            zvm.verify_schedule.stop()
            zvm.tasks.stop()
        site.close()


# --- the choice, without guests --------------------------------------------------------------------------


@pytest.fixture
def scheduled(make_app):
    """A ZVM with a guest runner and checks every 10 minutes, recovering two VPGs (no VRA behind them: the
    choice only reads the database), each with a consistent checkpoint."""
    app = make_app(guest_runner="local", verify_every_minutes=10)
    zvm = app.extensions["zvm"]
    zdb.connect(zvm.db)
    with zdb.transaction():
        local = m.Site.get(m.Site.is_local == True)  # noqa: E712
        peer = m.Site.create(name="A")
        for name in ("one", "two"):
            vpg = m.Vpg.create(identifier=f"vpg-{name}", name=name, protected_site=peer, recovery_site=local,
                               recovery_vra="r", status="MeetingSLA")
            m.Checkpoint.create(identifier=f"cp-{name}-1", vpg=vpg, timestamp=1000.0, consistent=True)
            m.Checkpoint.create(identifier=f"cp-{name}-x", vpg=vpg, timestamp=1001.0, consistent=False)
    return zvm


def _due(zvm, now: float = 10_000.0) -> tuple[str, str] | None:
    picked = due_check(zvm.config, zvm.local_site(), now)
    return (picked[0].name, picked[1].identifier) if picked else None


def test_the_schedule_picks_the_newest_consistent_checkpoint_of_the_least_recently_checked_vpg(scheduled):
    assert _due(scheduled) == ("one", "cp-one-1")  # never checked, by name; not the inconsistent one
    with zdb.transaction():
        done = create_task(KIND, params={"Vpg": "vpg-one", "Checkpoint": "cp-one-1"}, vpg="vpg-one")
        m.Task.update(state="Completed", created_at=9_000.0).where(m.Task.id == done.id).execute()
    assert _due(scheduled) == ("two", "cp-two-1")
    with zdb.transaction():
        m.Vpg.update(status="Recovered").where(m.Vpg.name == "two").execute()
    # one was checked 1000 s ago (more than 10 min), but its newest consistent checkpoint is the one checked
    assert _due(scheduled) is None
    with zdb.transaction():
        m.Checkpoint.create(identifier="cp-one-2", vpg=m.Vpg.get(m.Vpg.name == "one"), timestamp=1002.0, consistent=True)
    assert _due(scheduled) == ("one", "cp-one-2")
    assert _due(scheduled, now=9_500.0) is None  # checked 500 s ago: less than 10 minutes


def test_the_schedule_picks_nothing_while_a_check_or_a_recovery_operation_runs(scheduled):
    assert _due(scheduled) == ("one", "cp-one-1")
    with zdb.transaction():  # a check of VPG two, ordered by a user, waiting: one check at a time per ZVM
        check = create_task(KIND, params={"Vpg": "vpg-two", "Checkpoint": "cp-two-1"}, vpg="vpg-two", user="admin")
    assert _due(scheduled) is None
    with zdb.transaction():
        m.Task.update(state="InProgress").where(m.Task.id == check.id).execute()
    assert _due(scheduled) is None
    with zdb.transaction():
        m.Task.update(state="Failed").where(m.Task.id == check.id).execute()
        op = m.RecoveryOperation.create(vpg="vpg-one", vpg_name="one", kind="FailoverTest", state="Running")
    assert _due(scheduled) is None  # one is under test, two was checked just now
    with zdb.transaction():
        m.RecoveryOperation.update(state="Stopped").where(m.RecoveryOperation.id == op.id).execute()
        m.Vpg.update(substatus="FailingOverBeforeCommit").where(m.Vpg.name == "one").execute()
    assert _due(scheduled) is None
    with zdb.transaction():
        m.Vpg.update(substatus="None").where(m.Vpg.name == "one").execute()
        other = create_task("ForceSyncVpg", vpg="vpg-one")
    assert _due(scheduled) is None  # a check would wait behind the VPG's other task
    with zdb.transaction():
        m.Task.update(state="Completed").where(m.Task.id == other.id).execute()
    assert _due(scheduled) == ("one", "cp-one-1")


def test_the_schedule_is_off_at_zero_and_without_a_guest_runner(make_app):
    assert due_check(make_app(name="off", guest_runner="local").extensions["zvm"].config, None, 0.0) is None
    assert due_check(make_app(name="norunner", verify_every_minutes=1).extensions["zvm"].config, None, 0.0) is None


@pytest.mark.parametrize("value", ["-1", "abc", "nan", "true"])
def test_a_bad_interval_is_refused_naming_the_setting(value, tmp_path):
    with pytest.raises(ConfigError, match="verify_every_minutes"):
        load_config(env={"ZVM_VERIFY_EVERY_MINUTES": value}, data_dir=str(tmp_path))
    assert load_config(env={"ZVM_VERIFY_EVERY_MINUTES": "0.2"}, data_dir=str(tmp_path)).verify_every_minutes == 0.2


def test_checks_run_one_at_a_time_whoever_ordered_them(scheduled):
    with zdb.transaction():
        first = create_task(KIND, params={"Vpg": "vpg-one", "Checkpoint": "cp-one-1"}, vpg="vpg-one", user="admin")
        second = create_task(KIND, params={"Vpg": "vpg-two", "Checkpoint": "cp-two-1"}, vpg="vpg-two")
    # tasks of two VPGs, yet one key shared: the runner starts the second once the first ended
    assert task_keys(first) & task_keys(second) == {"shared:guest-runner"}


def test_zvm_serve_runs_the_schedule_only_when_it_is_on(make_app):
    loops = make_app(name="on", guest_runner="local", verify_every_minutes=0.5).extensions["zvm"]._loops
    assert any(isinstance(loop, VerifySchedule) for loop in loops)
    loops = make_app(name="off", guest_runner="local").extensions["zvm"]._loops
    assert not any(isinstance(loop, VerifySchedule) for loop in loops)


def test_the_labs_recovery_zvm_checks_its_guest_on_its_own(tmp_path) -> None:
    """`zvm serve` as the lab runs it (`zvm lab up --guests 1 --verify-every 0.2`): its schedule loop, its
    monitoring storing the journal's checkpoints, its task runner; no one orders a check."""
    lab_dir = tmp_path / "lab"
    up = zvm_lab(lab_dir, "up", "--disk-mb", "64", "--guests", "1", "--rate", "64k", "--verify-every", "0.2",
                 timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = LabState.load(lab_dir)
        vpg = state.vpg["identifier"]
        z = state.zvms["recovery"]
        with ZvmClient(z["url"]).login(z["username"], z["password"]) as b:
            def passed() -> dict | None:
                for t in b.request("GET", f"/tasks?vpgIdentifier={vpg}&limit=100"):
                    if (t["Type"] == TaskType.VerifyCheckpoint and t["InitiatedBy"] == "system"
                            and TaskState(t["Status"]["State"]) == TaskState.Completed):
                        return t
                return None

            # a check at a checkpoint from before the guest's image was written fails (nothing boots): the
            # schedule checks the next one 0.2 min later
            task = wait_for(passed, 240, "a scheduled check that passed", poll=1)
            checked = task["Result"]["CheckpointIdentifier"]
            (cp,) = [c for c in b.request("GET", f"/vpgs/{vpg}/checkpoints") if c["CheckpointIdentifier"] == checked]
            assert cp["Tag"].startswith("Tested at ") and cp["Tag"].endswith(": passed"), cp
            checks = [t for t in b.request("GET", f"/tasks?vpgIdentifier={vpg}&limit=100")
                      if t["Type"] == TaskType.VerifyCheckpoint]
            assert all(t["InitiatedBy"] == "system" for t in checks), checks
            assert sum(TaskState(t["Status"]["State"]) == TaskState.InProgress for t in checks) <= 1
    finally:
        zvm_lab(lab_dir, "down")
