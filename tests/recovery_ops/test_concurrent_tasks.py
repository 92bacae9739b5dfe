"""Site B's ZVM runs its tasks side by side (its task runner's own loop, real VRAs and vcsim): while the
failover test of one VPG waits out a boot group's delay, a VPG of another (created and configured on its
VRAs) is done; the failover test then ends as it would alone."""

from __future__ import annotations

import time

from tests.recovery_ops.world import build
from zvm.enums import TaskState

BOOT_DELAY = 90  # s; the other VPG's task takes a few (serial, it would wait for the whole delay)


def _wait_step(client, task: str, text: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        got = client.task(task)
        if text in got["Step"] or got["Status"]["State"] in (TaskState.Completed, TaskState.Failed):
            return got
        assert time.monotonic() < deadline, got
        time.sleep(0.1)


def test_a_failover_test_in_its_boot_delay_does_not_hold_a_task_of_another_vpg(start_vcsim, tmp_path_factory):
    w = build(start_vcsim, "roconc", 95, tmp_path_factory.mktemp("roconc"), boot_delay=BOOT_DELAY, workload=False)
    runner = w.zvm_b.tasks
    try:
        runner.start()  # B's runner as `zvm serve` runs it
        test = w.b.failover_test(w.vpg)
        runner.wake()
        waiting = _wait_step(w.b, test, "boot delay", 120)
        assert waiting["Status"]["State"] == TaskState.InProgress, waiting

        # another VPG of site B (its own VMs, recovering on B): its commit's task runs now
        vms = [v for v in w.b.vms(w.site_b) if not v["VmName"].startswith("Z-VRA-")][:1]
        sid = w.b.create_vpg_settings()
        doc = w.b.vpg_settings(sid)
        doc["Basic"].update(Name="local", RecoverySiteIdentifier=w.site_b)
        doc["Recovery"].update(DefaultHostIdentifier=w.b_recovery_host,
                               DefaultDatastoreIdentifier=w.b.datastores(w.site_b)[0]["DatastoreIdentifier"])
        doc["Vms"] = [{"VmIdentifier": vms[0]["VmIdentifier"]}]
        w.b.put_vpg_settings(sid, doc)
        create = w.b.commit_vpg_settings(sid)
        runner.wake()
        done = w.b.wait_for_task(create, timeout=BOOT_DELAY)
        still = w.b.task(test)
        assert still["Status"]["State"] == TaskState.InProgress and "boot delay" in still["Step"], still
        assert done["Status"]["State"] == TaskState.Completed and done["Result"]["RecoveryVra"]

        ran = w.b.wait_for_task(test, timeout=BOOT_DELAY + 120)
        assert len(ran["Result"]["Vms"]) == 3
        stop = w.b.failover_test_stop(w.vpg)
        runner.wake()
        w.b.wait_for_task(stop, timeout=120)
    finally:
        runner.stop()
        w.close()
