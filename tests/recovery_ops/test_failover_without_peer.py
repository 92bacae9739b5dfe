"""A failover while the protected site's ZVM does not answer (the disaster it is for): it goes on without
shutting the source VMs down; the commit is done on the recovery site, and the protected site's part waits
(alerted) until it answers, then powers its VMs off first: never two running copies of a VM for longer than
the protected site is unreachable."""

from __future__ import annotations

from tests.recovery_ops.world import freeze, thaw
from vra_appliance.proto.v1 import control_pb2 as cpb
from zvm.enums import VpgStatus, VpgSubStatus

WORLD = "ronp"
PREFIX = 87


def test_failover_without_the_protected_site_and_its_part_once_it_answers(world):
    w = world
    cp, hashes = w.checkpoint("last-seen")
    w.b_knows(cp)
    sources = {v["VmName"]: v["VmIdentifier"] for v in w.source_vms}
    pids = freeze(w.server)
    try:
        task = w.b.failover(w.vpg, checkpoint=cp, shutdown_policy="Shutdown", commit_policy="None")
        w.run_b()
        result = w.b.wait_for_task(task)["Result"]
        for vm in result["Vms"]:
            assert all(w.nbdcopy_hash(d["Uri"]) == hashes[d["Volume"]] for d in vm["Disks"])
        assert all(w.vcenter_vms(w.prot)[n] == (moid, "poweredOn") for n, moid in sources.items())  # unreachable
        w.workload.stop()

        commit = w.b.failover_commit(w.vpg)
        w.run_b()
        assert "once it answers" in w.b.wait_for_task(commit)["Step"]
        report = w.b.recovery_report(result["OperationIdentifier"])
        assert (report["State"], report["WaitingForPeer"]) == ("Committed", "commit")
        assert (w.b.vpg(w.vpg)["Status"], w.b.vpg(w.vpg)["SubStatus"]) == (
            VpgStatus.Recovered, VpgSubStatus.WaitingForPeer)
        assert w.zvm_b.recovery_watch.run_once()["peer"] == 0  # still down
        assert [a["Code"] for a in w.b.alerts(active=True) if a["EntityIdentifier"] == w.vpg] == [
            "VpgRecoveryWaitingForPeer"]
    finally:
        thaw(pids)

    assert w.zvm_b.recovery_watch.run_once()["peer"] == 1
    assert all(w.vcenter_vms(w.prot)[n] == (moid, "poweredOff") for n, moid in sources.items())
    assert w.b.recovery_report(result["OperationIdentifier"])["WaitingForPeer"] == ""
    assert not [a for a in w.b.alerts(active=True) if a["Code"] == "VpgRecoveryWaitingForPeer"]
    for client in (w.a, w.b):
        vpg = client.vpg(w.vpg)
        assert (vpg["Status"], vpg["SubStatus"]) == (VpgStatus.Recovered, VpgSubStatus.NeedsConfiguration)
    for vra_id, site in w.vra_site.items():  # the protect roles are gone from A's VRAs
        if site == "a":
            with w.control(vra_id) as ctl:
                assert not [s for s in ctl.Status(cpb.StatusRequest(vpg=w.vpg)).vpgs if s.role == "protect"]
