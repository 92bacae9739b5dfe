"""Failover to an older checkpoint, commit, reverse protection, writes on the recovered side replicated back,
then a move back: the original site's volumes equal the recovered ones, byte for byte (a move loses
nothing: RPO zero)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.recovery_ops.world import sha256
from tests.replication.lab import NbdClient, run, wait_for
from tests.zvm.conftest import ADMIN_PASSWORD
from zvm import cli
from zvm.enums import TaskState, TaskType, VpgStatus
from zvm.vcenter import VCenter, VCenterConfig
from zvm.vcenter.inventory import split_datastore_path

WORLD = "romv"
PREFIX = 85


def _local(sim, datastore_path: str) -> Path:
    name, rel = split_datastore_path(datastore_path)
    return Path(sim.datastores[name]) / rel


class Crash(BaseException):
    """A ZVM dying at a chosen step."""


def test_failover_commit_reverse_protection_and_move_back(world, tmp_path, monkeypatch, capsys):
    w = world
    older, at_older = w.checkpoint("older")
    for sock, export in w.nbd_of_volume.values():  # written after "older": a failover to it loses this
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x42 5M 64k", f"nbd+unix:///{export}?socket={sock}"])
    newer, at_newer = w.checkpoint("newer")
    assert all(at_older[v] != at_newer[v] for v in at_older)
    w.b_knows(newer)
    w.workload.stop()  # the source VMs are shut down by the failover
    sources = {v["VmName"]: v["VmIdentifier"] for v in w.source_vms}

    task = w.b.failover(w.vpg, checkpoint=older, shutdown_policy="ForceShutdown", shutdown_timeout=5,
                        commit_policy="None", reverse_protection=True)
    w.run_b()
    result = w.b.wait_for_task(task)["Result"]
    assert result["CheckpointIdentifier"] == older

    # before commit the VMs run on the image at "older"; they write (into the scratch)
    expected = {}
    for vm in result["Vms"]:
        for d in vm["Disks"]:
            assert w.nbdcopy_hash(d["Uri"]) == at_older[d["Volume"]]
            run(["qemu-io", "-f", "raw", "-c", "write -P 0x7e 3M 192k", d["Uri"]])
            expected[d["Volume"]] = w.nbdcopy(d["Uri"], tmp_path / f"{d['Volume']}.expected")

    # the commit, with site B's ZVM dying after the VRA committed and before site A heard of it
    def crash(task, percent, step):
        if task.kind == "FailoverCommit" and step.startswith("Telling the protected site"):
            raise Crash(step)

    w.zvm_b.tasks.on_progress = crash
    commit = w.b.failover_commit(w.vpg)
    try:
        w.run_b()
        raise AssertionError("the crash was not injected")
    except Crash:
        pass
    assert w.a.vpg(w.vpg)["Status"] == VpgStatus.FailingOver  # A has not been told yet
    w.restart_b()
    w.run_b()
    assert w.b.wait_for_task(commit)["Result"]["ReverseProtection"] is True
    report = w.b.recovery_report(result["OperationIdentifier"])
    assert (report["State"], report["Result"]) == ("Committed", "Committed")

    # the replica volumes are the VMs' disks: the image at "older" with what the VMs wrote, nothing more
    replicas = {d["VolumeIdentifier"]: _local(w.rec, d["File"]) for v in report["Vms"] for d in v["Disks"]}
    assert {v: sha256(p) for v, p in replicas.items()} == expected
    with VCenter(VCenterConfig(w.rec.url, w.rec.username, w.rec.password)) as vc:
        truth = vc.inventory()
    for vm in report["Vms"]:
        disks = truth.vms[vm["RecoveryVmIdentifier"]].disks
        assert [d.file_name for d in disks] == [d["File"] for d in vm["Disks"]]
        assert w.extra_config(w.rec, vm["RecoveryVmIdentifier"])["zvr.disk0.nbd"] == ""
    assert not set(sources) & set(w.vcenter_vms(w.prot))  # the source VMs left A's inventory...
    assert all(Path(p).exists() for p in w.volumes.values())  # ...their disks stayed: the replicas now

    # reverse protection: site B owns the VPG, site A recovers it
    for client in (w.a, w.b):
        vpg = client.vpg(w.vpg)
        assert (vpg["ProtectedSite"]["SiteIdentifier"], vpg["RecoverySite"]["SiteIdentifier"]) == (w.site_b, w.site_a)
    # the hypervisor of B's recovery host attaches the IO filter to the (now protected) disks
    protect_vra = next(v for v, h in w.vra_host.items() if w.vra_site[v] == "b" and h == w.b_recovery_host)
    filt = w.lab.filter(f"{protect_vra}-filter", {v: str(p) for v, p in replicas.items()}, w.vras[protect_vra])
    w.wait_streaming(protect_vra)  # the delta sync (pre-seeded: only what differs) is done

    # writes on the recovered side are replicated back
    rng = random.Random(11)
    for volume in replicas:
        client = NbdClient(filt.nbd, volume)
        try:
            for _ in range(20):
                client.write(rng.randrange(256) * (64 << 10), rng.randbytes(64 << 10))
        finally:
            client.close()
    _, at_b = w.checkpoint("written-on-b", on="b", hash_paths=replicas)
    def meeting_sla() -> bool:
        # B's pass asks A's ZVM (the recovery side), which answers from its own last pass: within ~2 s
        w.zvm_b.monitor.run_once()
        return w.b.vpg(w.vpg)["Status"] == VpgStatus.MeetingSLA

    wait_for(meeting_sla, 20, "the VPG protected from B to meet its SLA")

    # a move back, ordered on the site the VMs move to (A, a `zvm serve`), with the administrator's CLI
    monkeypatch.setenv("ZVM_URL", w.server.url)
    monkeypatch.setenv("ZVM_PASSWORD", ADMIN_PASSWORD)
    capsys.readouterr()
    assert cli.main(["move", WORLD, "--wait", "--json"]) == 0
    moved = json.loads(capsys.readouterr().out)
    # --wait returns once the move is committed: the last task it shows is the MoveCommit, completed
    assert (moved["Type"], moved["Status"]["State"]) == (TaskType.MoveCommit, TaskState.Completed), moved
    assert cli.main(["recovery-reports", "--vpg", WORLD]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["VPG", "Type", "State", "Result"] and table[1].split()[1:4] == [
        "Move", "Committed", "Committed"]
    final = w.a.recovery_reports(vpg=w.vpg, limit=1)[0]
    assert final["TaskIdentifier"] == moved["TaskIdentifier"]
    assert final["CheckpointIdentifier"] and final["RtoInSeconds"] > 0

    # the original site's volumes equal the recovered ones, byte for byte: nothing written on B was lost
    for volume, source in w.volumes.items():
        assert sha256(source) == sha256(replicas[volume]) == at_b[volume]
    a_vms, b_vms = w.vcenter_vms(w.prot), w.vcenter_vms(w.rec)
    assert all(a_vms[name][1] == "poweredOn" for name in sources)  # the VMs run on A again...
    gone = {vm["RecoveryVmIdentifier"] for vm in report["Vms"]}
    assert not gone & {moid for moid, _ in b_vms.values()}  # ...and no longer on B
    for client in (w.a, w.b):
        vpg = client.vpg(w.vpg)
        assert (vpg["ProtectedSite"]["SiteIdentifier"], vpg["RecoverySite"]["SiteIdentifier"]) == (w.site_a, w.site_b)
