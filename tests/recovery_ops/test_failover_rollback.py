"""Failover before commit, then rollback: the VPG protects again with its journal intact. The commit
policy acts on its own after its timeout. Refused, with a clear error and nothing changed: a failover to an
unknown or an expired checkpoint, a second failover (or a test) while one runs, a move while the protected
site does not answer."""

from __future__ import annotations

import time

import pytest

from tests.recovery_ops.world import freeze, thaw
from tests.replication.lab import run, wait_for
from vra_appliance.proto.v1 import control_pb2 as cpb
from zvm.enums import PairingStatus, VpgStatus, VpgSubStatus
from zvm.errors import ConflictError, ValidationError
from zvm.vcenter import VCenter, VCenterConfig
from zvm.vcenter.recovery import vm_guest_ip

WORLD = "rofo"
PREFIX = 83
HARD_LIMIT_MB = 40  # small, so that a burst of writes makes the journal promote early (checkpoints expire)
WORKLOAD = False  # a steady workload would keep this small journal promoting everything all the time


def _journal(w) -> list[str]:
    with w.control(w.recovery_vra("b")) as ctl:
        return [c.checkpoint_id for c in ctl.ListCheckpoints(cpb.ListCheckpointsRequest(vpg=w.vpg)).checkpoints]


def _state(w) -> tuple:
    """What a refused order must leave as it was: the VPG, the operations, both vCenters."""
    vpg = w.b.vpg(w.vpg)
    return ((vpg["Status"], vpg["SubStatus"]), len(w.b.recovery_reports(vpg=w.vpg)),
            sorted(w.vcenter_vms(w.rec).items()), sorted(w.vcenter_vms(w.prot).items()))


def test_failover_then_rollback_leaves_the_vpg_protecting_with_its_journal_intact(world):
    w = world
    cp, hashes = w.checkpoint("before-failover")
    w.b_knows(cp)
    journal_before = _journal(w)
    sources = {v["VmName"]: v["VmIdentifier"] for v in w.source_vms}
    task = w.b.failover(w.vpg, checkpoint=cp, shutdown_policy="Shutdown", commit_policy="None")
    w.run_b()
    result = w.b.wait_for_task(task)["Result"]

    a_vms, b_vms = w.vcenter_vms(w.prot), w.vcenter_vms(w.rec)
    assert all(a_vms[name] == (moid, "poweredOff") for name, moid in sources.items())  # shut down first
    recovered = {v["Name"]: v["RecoveryVm"] for v in result["Vms"]}
    assert set(recovered) == set(sources) and all(b_vms[n] == (recovered[n], "poweredOn") for n in recovered)
    for vm in result["Vms"]:
        assert all(w.nbdcopy_hash(d["Uri"]) == hashes[d["Volume"]] for d in vm["Disks"])
    first = w.source_vms[0]["VmName"]
    with VCenter(VCenterConfig(w.rec.url, w.rec.username, w.rec.password)) as vc:
        assert vm_guest_ip(vc, recovered[first]) == "10.20.0.11"  # re-IP through the customization spec
    assert w.b.vpg(w.vpg)["Status"] == VpgStatus.FailingOver and w.a.vpg(w.vpg)["Status"] == VpgStatus.FailingOver

    # a second failover, a test or a move while it runs: refused, nothing changed
    before = _state(w)
    for order in (lambda: w.b.failover(w.vpg), lambda: w.b.failover_test(w.vpg), lambda: w.b.move(w.vpg)):
        with pytest.raises(ConflictError, match="in progress"):
            order()
    assert _state(w) == before

    rollback = w.b.failover_rollback(w.vpg)
    w.run_b()
    w.b.wait_for_task(rollback)
    a_vms, b_vms = w.vcenter_vms(w.prot), w.vcenter_vms(w.rec)
    assert not set(recovered.values()) & {moid for moid, _ in b_vms.values()}  # the recovery VMs are gone
    assert all(a_vms[name] == (moid, "poweredOn") for name, moid in sources.items())  # and the sources back on
    assert w.b.vpg(w.vpg)["Status"] == VpgStatus.MeetingSLA and w.a.vpg(w.vpg)["Status"] in (
        VpgStatus.MeetingSLA, VpgStatus.RpoNotMeetingSLA)
    report = w.b.recovery_reports(vpg=w.vpg, limit=1)[0]
    assert (report["Type"], report["State"], report["Result"]) == ("Failover", "RolledBack", "RolledBack")

    # the journal is intact: every checkpoint is still there, an image at the old one still equals the
    # sources then, and replication goes on
    assert set(journal_before) <= set(_journal(w))
    for sock, export in w.nbd_of_volume.values():
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x33 7M 64k", f"nbd+unix:///{export}?socket={sock}"])
    later, after = w.checkpoint("after-rollback")
    assert after != hashes
    w.b_knows(later)
    test = w.b.failover_test(w.vpg, checkpoint=cp)
    w.run_b()
    for vm in w.b.wait_for_task(test)["Result"]["Vms"]:
        assert all(w.nbdcopy_hash(d["Uri"]) == hashes[d["Volume"]] for d in vm["Disks"])
    w.b.failover_test_stop(w.vpg)
    w.run_b()


def test_the_commit_policy_rolls_back_when_its_time_has_come(world):
    w = world
    task = w.b.failover(w.vpg, commit_policy="Rollback", commit_timeout=60)
    w.run_b()
    op = w.b.wait_for_task(task)["Result"]["OperationIdentifier"]
    assert w.b.recovery_report(op)["State"] == "BeforeCommit"
    assert w.zvm_b.recovery_watch.run_once()["rolled_back"] == 0  # not yet
    assert w.zvm_b.recovery_watch.run_once(now=time.time() + 61)["rolled_back"] == 1
    w.run_b()
    report = w.b.recovery_report(op)
    assert (report["State"], report["Result"]) == ("RolledBack", "RolledBack")
    assert all(state == "poweredOn" for name, (_, state) in w.vcenter_vms(w.prot).items()
               if name in {v["VmName"] for v in w.source_vms})


def test_failover_to_an_unknown_or_expired_checkpoint_is_refused_and_changes_nothing(world):
    w = world
    before = _state(w)
    with pytest.raises(ValidationError, match="unknown, or expired") as refused:
        w.b.failover(w.vpg, checkpoint="no-such-checkpoint")
    assert refused.value.field == "CheckpointIdentifier" and _state(w) == before

    old, _ = w.checkpoint("soon-expired")
    w.b_knows(old)
    for sock, export in w.nbd_of_volume.values():  # more than the journal's hard limit: it promotes early
        run(["qemu-io", "-f", "raw", "-c", f"write -P 0x5c 0 {16 << 20}", f"nbd+unix:///{export}?socket={sock}"])

    def expired() -> bool:
        w.checkpoint("pushing")
        w.zvm_b.monitor.run_once()
        return old not in _journal(w) and old not in {c["CheckpointIdentifier"] for c in w.b.checkpoints(w.vpg)}

    wait_for(expired, 90, f"checkpoint {old} to be promoted past (the journal's hard limit)")
    before = _state(w)
    with pytest.raises(ValidationError, match="unknown, or expired"):
        w.b.failover(w.vpg, checkpoint=old)
    with pytest.raises(ValidationError, match="unknown, or expired"):
        w.b.failover_test(w.vpg, checkpoint=old)
    assert _state(w) == before


def test_a_move_while_the_protected_site_does_not_answer_is_refused_and_changes_nothing(world):
    w = world
    pids = freeze(w.server)
    try:
        def unreachable() -> bool:
            w.zvm_b.monitor.run_once()  # its probe of site A times out (the peer is probed every 5 s)
            return w.b.peer_sites()[0]["PairingStatus"] == PairingStatus.Unreachable

        wait_for(unreachable, 30, "site B to find site A unreachable")
        before = _state(w)
        with pytest.raises(ConflictError, match="a move needs both sites") as refused:
            w.b.move(w.vpg)
        assert refused.value.code == "PeerUnreachable"
        assert _state(w) == before
    finally:
        thaw(pids)
    w.zvm_b.monitor.run_once()
    assert w.b.peer_sites()[0]["PairingStatus"] == PairingStatus.Paired


def test_a_move_of_a_paused_vpg_is_refused_at_once_and_changes_nothing(world):
    # It used to shut the VMs down and wait 60 s for a final checkpoint that a paused VPG cannot send ("a dirty
    # map is not empty"), with the VMs left to roll back.
    from zvm.client import TaskFailedError

    w = world
    w.a.wait_for_task(w.a.pause_vpg(w.vpg))
    try:
        before = _state(w)
        started = time.monotonic()
        task = w.b.move(w.vpg)
        w.run_b()
        with pytest.raises(TaskFailedError, match="is paused: a move waits for its VMs' last writes"):
            w.b.wait_for_task(task)
        assert time.monotonic() - started < 30
        after = _state(w)
        assert (after[0], after[2], after[3]) == (before[0], before[2], before[3])  # one more report: Failed
        assert w.a.vpg(w.vpg)["SubStatus"] == VpgSubStatus.ReplicationPausedUserInitiated
    finally:
        w.a.wait_for_task(w.a.resume_vpg(w.vpg))
    wait_for(lambda: w.a.vpg(w.vpg)["SubStatus"] == VpgSubStatus.NONE, 60, "the resumed VPG's bitmap sync to end")


def test_a_commit_the_vra_refuses_leaves_the_failover_ready_to_commit_again_or_roll_back(world, monkeypatch):
    # A refused commit used to leave the operation "Committing" for good: neither commit nor rollback
    # could be ordered again.
    from types import SimpleNamespace

    from zvm.client import TaskFailedError

    w = world
    task = w.b.failover(w.vpg, commit_policy="None")
    w.run_b()
    op = w.b.wait_for_task(task)["Result"]["OperationIdentifier"]
    control = w.zvm_b.vra_control
    monkeypatch.setattr(control, "commit_session", lambda *a, **k: SimpleNamespace(
        ok=False, message="replica at seq 7, not at checkpoint cp-1 (an image is open at an older one)"))
    commit = w.b.failover_commit(w.vpg)
    w.run_b()
    with pytest.raises(TaskFailedError, match="not at checkpoint"):
        w.b.wait_for_task(commit)
    assert w.b.recovery_report(op)["State"] == "BeforeCommit"
    assert w.b.vpg(w.vpg)["SubStatus"] == VpgSubStatus.FailingOverBeforeCommit

    monkeypatch.undo()
    rollback = w.b.failover_rollback(w.vpg)
    w.run_b()
    w.b.wait_for_task(rollback)
    report = w.b.recovery_report(op)
    assert (report["State"], report["Result"]) == ("RolledBack", "RolledBack")
