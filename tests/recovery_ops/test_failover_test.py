"""Failover test of a VPG of three VMs while the workload runs: the test VMs' disks (read over NBD with
nbdcopy) equal the sources at the chosen checkpoint; writes into them (qemu-io over NBD) reach neither the
replica volumes nor the journal; replication and checkpoints go on; stop leaves nothing of the test in the
recovery vCenter and records the result and duration. A test past its scratch limit is stopped with an
alert. A ZVM restarted in the middle of a test resumes it (and rolls it back when it cannot)."""

from __future__ import annotations

from pathlib import Path

from tests.recovery_ops.world import sha256
from tests.replication.lab import run
from zvm import models as m
from zvm.enums import TaskState, VpgSubStatus
from zvm.vcenter.inventory import split_datastore_path

WORLD = "rotest"
PREFIX = 81
PATTERN = b"\xab" * (64 << 10)


class Crash(BaseException):
    """A ZVM dying at a chosen step (not an error its task runner catches)."""


def _local(w, datastore_path: str) -> Path:
    name, rel = split_datastore_path(datastore_path)
    return Path(w.rec.datastores[name]) / rel


def _test_vms(w) -> dict:
    return {n: s for n, s in w.vcenter_vms(w.rec).items() if n.endswith(" - testing recovery")}


def _scratch_files(w) -> list[Path]:
    return [p for d in w.vras.values() for p in (d.dir / "state" / "recovery" / "scratch").rglob("*") if p.is_file()]


def test_failover_test_at_a_checkpoint_while_the_workload_runs(world):
    w = world
    cp, hashes = w.checkpoint("before-test")
    w.b_knows(cp)
    report_before = w.b.checkpoints(w.vpg)
    task = w.b.failover_test(w.vpg, checkpoint=cp)
    w.run_b()
    result = w.b.wait_for_task(task)["Result"]
    assert result["CheckpointIdentifier"] == cp

    # test VMs in the recovery vCenter, powered on, named "<vm> - testing recovery", on the test network
    vms = _test_vms(w)
    assert sorted(vms) == sorted(f"{v['VmName']} - testing recovery" for v in w.source_vms)
    assert all(state == "poweredOn" for _, state in vms.values())
    first = next(v for v in result["Vms"] if v["SourceVm"] == w.source_vms[0]["VmIdentifier"])
    extra = w.extra_config(w.rec, first["RecoveryVm"])
    assert extra["zvr.disk0.nbd"] == first["Disks"][0]["Uri"] and extra["zvr.operation"] == result["OperationIdentifier"]
    test_network = m.Vpg.get(m.Vpg.identifier == w.vpg).test_network
    details = {v["SourceVm"]: w.vm_details(w.rec, v["RecoveryVm"]) for v in result["Vms"]}
    assert all(d["networks"] == [test_network] for d in details.values())
    boot = [details[v["VmIdentifier"]]["boot"] for v in w.source_vms]  # in groups db, app, none
    assert boot[2] <= boot[0] and (boot[1] - boot[0]).total_seconds() >= 1  # db's delay before app

    # their disks are the sources at the checkpoint, although the workload kept writing
    for vm in result["Vms"]:
        for disk in vm["Disks"]:
            assert w.nbdcopy_hash(disk["Uri"]) == hashes[disk["Volume"]]
    assert w.workload.errors == [] and any(sha256(p) != hashes[v] for v, p in w.volumes.items())

    # writes into the test VMs land in their scratch only
    report = w.b.recovery_report(result["OperationIdentifier"])
    replicas = {d["VolumeIdentifier"]: _local(w, d["File"]) for v in report["Vms"] for d in v["Disks"]}
    replica_hashes = {v: sha256(p) for v, p in replicas.items()}
    for vm in result["Vms"]:
        uri = vm["Disks"][0]["Uri"]
        run(["qemu-io", "-f", "raw", "-c", "write -P 0xab 1M 256k", uri])
        out = run(["qemu-io", "-f", "raw", "-c", "read -P 0xab 1M 256k", uri])
        assert "read 262144/262144" in out
    journal = next(iter(replicas.values())).parent / "journal"
    assert {v: sha256(p) for v, p in replicas.items()} == replica_hashes
    assert not any(PATTERN in p.read_bytes() for p in journal.rglob("*") if p.is_file())

    # replication and checkpoints go on during the test
    later, _ = w.checkpoint("during-test")
    w.b_knows(later)
    assert len(w.b.checkpoints(w.vpg)) > len(report_before)

    # stop: the test VMs and the scratch are gone, the result and duration kept
    stop = w.b.failover_test_stop(w.vpg, summary="application came up")
    w.run_b()
    stopped = w.b.wait_for_task(stop)["Result"]
    assert stopped["Result"] == "Succeeded" and stopped["DurationInSeconds"] > 0
    assert _test_vms(w) == {} and _scratch_files(w) == []
    assert not list(Path(w.rec.datastores["LocalDS_0"]).glob("*testing recovery*"))
    final = w.b.recovery_report(result["OperationIdentifier"])
    assert (final["State"], final["Result"], final["Summary"]) == ("Stopped", "Succeeded", "application came up")
    assert final["DurationInSeconds"] >= stopped["DurationInSeconds"] - 1 and final["RtoInSeconds"] > 0
    assert w.b.vpg(w.vpg)["SubStatus"] == VpgSubStatus.NONE


def test_a_test_past_its_scratch_limit_is_stopped_with_an_alert(world):
    w = world
    task = w.b.failover_test(w.vpg, scratch_limit_mb=1)
    w.run_b()
    result = w.b.wait_for_task(task)["Result"]
    uri = result["Vms"][0]["Disks"][0]["Uri"]
    run(["qemu-io", "-f", "raw", "-c", "write -P 0x11 0 512k", uri])  # within the limit
    refused = __import__("subprocess").run(["qemu-io", "-f", "raw", "-c", "write -P 0x12 2M 2M", uri],
                                           capture_output=True, text=True)
    assert "No space left on device" in refused.stdout + refused.stderr
    assert w.zvm_b.recovery_watch.run_once()["stopped"] == 1
    w.run_b()
    report = w.b.recovery_report(result["OperationIdentifier"])
    assert (report["State"], report["Result"]) == ("Stopped", "ScratchLimit")
    alerts = [a for a in w.b.alerts(active=True) if a["Code"] == "VpgFailoverTestScratchFull"]
    assert len(alerts) == 1 and alerts[0]["EntityIdentifier"] == w.vpg
    assert _test_vms(w) == {} and _scratch_files(w) == []
    w.zvm_b.monitor.run_once()  # monitoring keeps it (it follows from the last test's result)
    assert any(a["Code"] == "VpgFailoverTestScratchFull" for a in w.b.alerts(active=True))


def test_a_zvm_restarted_in_the_middle_of_a_test_resumes_it(world):
    w = world
    calls = []

    def crash(task, percent, step):
        calls.append(step)
        if task.kind == "FailoverTest" and step.startswith("Powering on") and "boot group app" in step:
            raise Crash(step)  # the VMs of the first groups are on, the last group's not yet

    w.zvm_b.tasks.on_progress = crash
    task = w.b.failover_test(w.vpg)
    try:
        w.run_b()
        raise AssertionError("the crash was not injected: " + "; ".join(calls))
    except Crash:
        pass
    assert w.b.task(task)["Status"]["State"] == TaskState.InProgress
    half = _test_vms(w)
    assert len(half) == 3 and sorted(s for _, s in half.values()) == ["poweredOff", "poweredOn", "poweredOn"]
    w.restart_b()
    assert w.b.task(task)["Status"]["State"] == TaskState.Pending
    w.run_b()
    done = w.b.wait_for_task(task)
    vms = _test_vms(w)
    assert len(vms) == 3 and all(s == "poweredOn" for _, s in vms.values())  # none twice, all on
    assert {v["RecoveryVm"] for v in done["Result"]["Vms"]} == {moid for moid, _ in vms.values()}
    stop = w.b.failover_test_stop(w.vpg)
    w.run_b()
    w.b.wait_for_task(stop)
    assert _test_vms(w) == {}


def test_a_restarted_zvm_rolls_a_test_back_when_its_images_are_gone(world):
    w = world

    def crash(task, percent, step):
        if task.kind == "FailoverTest" and step.startswith("Creating VM"):
            raise Crash(step)

    w.zvm_b.tasks.on_progress = crash
    task = w.b.failover_test(w.vpg)
    try:
        w.run_b()
    except Crash:
        pass
    daemon = w.vras[w.recovery_vra("b")]
    daemon.stop()  # the recovery VRA restarts meanwhile: the test's images and scratch are gone
    daemon.restart()
    w.restart_b()
    w.run_b()
    failed = w.b.task(task)
    assert failed["Status"]["State"] == TaskState.Failed and "no longer serves" in failed["Error"]["Message"]
    report = w.b.recovery_reports(vpg=w.vpg, limit=1)[0]
    assert (report["State"], report["Result"]) == ("Failed", "Failed")
    assert _test_vms(w) == {} and _scratch_files(w) == []
    assert w.b.vpg(w.vpg)["SubStatus"] == VpgSubStatus.NONE
