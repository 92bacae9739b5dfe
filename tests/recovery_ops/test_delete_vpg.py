"""Deleting a VPG (site A protects, site B recovers; two vcsims, real VRAs): refused while a failover test
runs; without KeepRecoveryVolumes its replica volumes and journal go from B's datastore (vCenter's
FileManager), with it the replicas stay, brought to the newest checkpoint (equal by hash to the source then);
a recovery site that does not answer stops a delete, and with Force the files it still holds are named in
the task's result, an event and an alert, and left alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.recovery_ops.world import build, sha256
from vra_appliance.proto.v1 import control_pb2 as cpb
from zvm import db as zdb
from zvm import models as m
from zvm.client import TaskFailedError
from zvm.enums import VpgStatus, VpgSubStatus
from zvm.placement import local_path

WORLD = "rodel"
PREFIX = 89


def replicas_at_b(w) -> tuple[dict[str, Path], Path, dict[str, str]]:
    """The VPG's replica volume files at B (volume -> local file), their directory, and their datastore paths
    (volume -> "[ds] zvr/<vpg>/<volume>.img"), as B's ZVM placed them."""
    zdb.connect(w.zvm_b.db)
    site = w.zvm_b.local_site()
    vpg = m.Vpg.get(m.Vpg.identifier == w.vpg)
    paths = {v.volume_id: v.recovery_path for v in m.VpgVolume.select().join(m.VpgVm).where(m.VpgVm.vpg == vpg)}
    files = {v: Path(local_path(site, p)) for v, p in paths.items()}
    assert set(files) == set(w.volumes) and all(p.is_file() for p in files.values()), files
    assert all(p == f"[{p.split(']')[0][1:]}] zvr/{w.vpg}/{v}.img" for v, p in paths.items()), paths
    top = {p.parent for p in files.values()}
    assert len(top) == 1 and (next(iter(top)) / "journal").is_dir()
    return files, next(iter(top)), paths


def recover_roles(w) -> list[str]:
    roles = []
    for vra_id, site in w.vra_site.items():
        if site == "b":
            with w.control(vra_id) as ctl:
                roles += [s.role for s in ctl.Status(cpb.StatusRequest(vpg=w.vpg)).vpgs]
    return roles


def test_delete_is_refused_during_a_failover_test_then_removes_the_replicas_and_the_journal(world):
    w = world
    files, top, _ = replicas_at_b(w)
    cp, _ = w.checkpoint("before-test")
    w.b_knows(cp)
    test = w.b.failover_test(w.vpg, checkpoint=cp)
    w.run_b()
    w.b.wait_for_task(test, timeout=120)

    task = w.a.delete_vpg(w.vpg)
    with pytest.raises(TaskFailedError) as failed:
        w.a.wait_for_task(task, timeout=120)
    error = failed.value.task["Error"]
    assert error["Code"] == "RecoveryOperationInProgress" and "FailoverTest" in error["Message"], error
    shown = w.a.vpg(w.vpg)
    assert shown["Status"] != VpgStatus.Deleting and shown["SubStatus"] == VpgSubStatus.Testing, shown  # as the test's start showed it
    assert all(p.is_file() for p in files.values()) and "recover" in recover_roles(w)

    stop = w.b.failover_test_stop(w.vpg)
    w.run_b()
    w.b.wait_for_task(stop, timeout=120)
    w.workload.stop()
    done = w.a.wait_for_task(w.a.delete_vpg(w.vpg), timeout=300)
    assert not any(p.exists() for p in files.values()), files
    assert not (top / "journal").exists() and not top.exists()
    assert recover_roles(w) == []
    result = done["Result"]
    assert result["LeftOverFiles"] == [] and result["KeptRecoveryVolumes"] == []
    assert [p.endswith(f"zvr/{w.vpg}") for p in result["DeletedFiles"]] == [True], result
    assert w.a.vpgs() == [] and w.b.vpgs() == []


def test_delete_keeping_the_recovery_volumes_leaves_them_at_the_last_checkpoint(start_vcsim, tmp_path_factory):
    w = build(start_vcsim, "rokeep", 91, tmp_path_factory.mktemp("rokeep"))
    try:
        files, top, paths = replicas_at_b(w)
        w.workload.stop()  # no write after the checkpoint: a later automatic checkpoint holds the same image
        cp, hashes = w.checkpoint("last")
        w.b_knows(cp)
        done = w.a.wait_for_task(w.a.delete_vpg(w.vpg, keep_recovery_volumes=True), timeout=300)
        result = done["Result"]
        assert result["Checkpoint"] and result["LeftOverFiles"] == [], result
        assert sorted(result["KeptRecoveryVolumes"]) == sorted(paths.values()), result
        assert {v: sha256(p) for v, p in files.items()} == hashes
        assert not (top / "journal").exists()
        assert recover_roles(w) == [] and w.a.vpgs() == []
    finally:
        w.close()


def test_delete_with_the_recovery_site_away_needs_force_and_reports_what_is_left(start_vcsim, tmp_path_factory):
    w = build(start_vcsim, "roaway", 93, tmp_path_factory.mktemp("roaway"), workload=False)
    try:
        files, top, paths = replicas_at_b(w)
        datastore = next(iter(paths.values())).split("]")[0][1:]
        w.zvm_b.peer_server.stop()
        with pytest.raises(TaskFailedError) as failed:
            w.a.wait_for_task(w.a.delete_vpg(w.vpg), timeout=120)
        assert "delete with Force" in failed.value.task["Error"]["Message"]
        assert w.a.vpg(w.vpg)["Status"] != VpgStatus.Deleting

        done = w.a.wait_for_task(w.a.delete_vpg(w.vpg, force=True), timeout=120)
        left = done["Result"]["LeftOverFiles"]
        assert sorted(left) == sorted([*paths.values(), f"[{datastore}] zvr/{w.vpg}/journal"]), left
        assert all(p.is_file() for p in files.values()) and (top / "journal").is_dir()  # nothing lost
        alerts = [a for a in w.a.alerts() if a["Code"] == "VpgRecoveryFilesLeftOver"]
        assert len(alerts) == 1 and all(f in alerts[0]["Description"] for f in left), alerts
        events = w.a.events(event_type="RecoveryVolumesLeftOver")
        assert len(events) == 1 and all(f in events[0]["Description"] for f in left), events
    finally:
        w.zvm_b.peer_server.start()
        w.close()

