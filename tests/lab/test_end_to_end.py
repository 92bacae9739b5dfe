"""Issue 8's end-to-end test: the whole product as `zvm lab up` runs it on this machine.

1. `zvm lab up` as a user runs it; `up` again says the lab is up; `status` shows both sites, their VRAs and
   the VPG with its RPO and journal history.
2. The workload replicates through the WAN; the WAN is cut (the VMs go on writing, nothing reaches the
   journal) and restored (replication resumes).
3. A tagged checkpoint through the REST API, and the point-in-time images of all three VMs at it, read
   over NBD (nbdcopy) from the recovery VRA while the workload writes again, equal the sources as they were
   at the checkpoint, byte for byte. "As they were": the workload is paused (fio stopped, every write it
   sent completed by the filters) and the VPG streaming (no sync pending) when the checkpoint is taken and
   the sources hashed; then it resumes.
4. A failover test at that checkpoint through the recovery site's REST API: the test VMs appear in the
   recovery vCenter, their disks (NBD) equal the same hashes; stopping it removes them.
5. `zvm lab down` leaves no process behind: every recorded pid is gone, and no process has the lab's
   directory (or its socket directory) on its command line.

A second lab moves the VPG to the recovery site and back (the tour's section 7).
"""

from __future__ import annotations

import json
import subprocess

from tests.lab.helpers import (
    pid_alive,
    processes_mentioning,
    sha256_file,
    vra_status,
    wait_for,
    zvm_lab,
)
from zvm.client import ZvmClient
from zvm.lab.images import recovery_vra
from zvm.lab.state import LabState
from zvm.vcenter import VCenter, VCenterConfig

TEST_SUFFIX = " - testing recovery"


def ok(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def protect_counters(state: LabState, vpg: str) -> dict[str, dict]:
    out = {}
    for site in ("protected", "recovery"):
        for vra in state.vras[site]:
            for st in vra_status(state, vra):
                if st.vpg == vpg and st.role == "protect":
                    out[vra["name"] + site] = {"state": st.state, "substatus": st.substatus, **dict(st.counters)}
    return out


def journal_seq(state: LabState, vpg: str) -> int:
    vra = recovery_vra(state)
    return next(int(st.counters["last_seq"]) for st in vra_status(state, vra)
                if st.vpg == vpg and st.role == "recover")


def streaming(state: LabState, vpg: str) -> bool:
    counters = protect_counters(state, vpg)
    return bool(counters) and all(c["state"] == "ok" and c["substatus"] == "" for c in counters.values())


def nbd_hash(uri: str, tmp_path) -> str:
    copy = tmp_path / "copy.img"
    subprocess.run(["nbdcopy", uri, str(copy)], check=True, timeout=120)
    digest = sha256_file(copy)
    copy.unlink()
    return digest


def vpg_disks(lab_dir) -> dict[str, str]:
    """Volume -> the file of the VPG's VM disk where the VM runs now (as `zvm lab attach` located it)."""
    return {v["id"]: v["path"] for vm in LabState.load(lab_dir).vpg["vms"] for v in vm["volumes"]}


def vcenter_vms(state: LabState, site: str) -> set[str]:
    """Names of the VMs in a site's vCenter (asked of vCenter itself, not of the ZVM's copy)."""
    sim = state.vcenters[site]
    with VCenter(VCenterConfig(sim.url, sim.username, sim.password)) as vc:
        return {vm.name for vm in vc.inventory().vms.values()}


def client(state: LabState, site: str) -> ZvmClient:
    z = state.zvms[site]
    return ZvmClient(z["url"]).login(z["username"], z["password"])


def move(lab_dir, api: ZvmClient, vpg: str, to: str, pids: set[int]) -> None:
    """Move the VPG with the workload paused; after it the disks where the VMs run equal the sources before."""
    ok(zvm_lab(lab_dir, "workload", "pause"))
    before = {vid: sha256_file(path) for vid, path in vpg_disks(lab_dir).items()}
    result = api.wait_for_task(api.move(vpg), timeout=180)["Result"]
    commit = api.wait_for_task(result["NextTaskIdentifier"], timeout=180)
    assert "committed" in commit["Step"], commit
    attached = ok(zvm_lab(lab_dir, "attach"))
    assert f"on the {to} site" in attached, attached
    state = LabState.load(lab_dir)
    assert {vm["site"] for vm in state.vpg["vms"]} == {to}
    assert {vid: sha256_file(path) for vid, path in vpg_disks(lab_dir).items()} == before
    ok(zvm_lab(lab_dir, "workload", "resume"))
    pids.update(p.pid for p in LabState.load(lab_dir).processes)


def test_the_lab_end_to_end(tmp_path):
    """Up, status, WAN cut and restore, tagged checkpoint and its images, failover test, down."""
    lab_dir = tmp_path / "lab"
    up = zvm_lab(lab_dir, "up", "--disk-mb", "64", "--rate", "1m", timeout=300)
    state = LabState.load(lab_dir)
    pids = {p.pid for p in state.processes} if state else set()  # every process the lab ever recorded
    try:
        # 1. up, up again, status
        assert "The lab is up" in ok(up) and "[11/11]" in up.stdout
        for site in ("protected", "recovery"):  # what to connect to, and the appliances the ZVMs deployed
            zvm = state.zvms[site]
            assert f"{zvm['url']}/v1" in up.stdout and f"user admin   password {zvm['password']}" in up.stdout
            assert {v["name"] for v in state.vras[site]} <= vcenter_vms(state, site)
            assert len(state.vras[site]) == 3
        assert "already up" in ok(zvm_lab(lab_dir, "up"))
        assert [p.pid for p in LabState.load(lab_dir).processes] == [p.pid for p in state.processes]
        status = ok(zvm_lab(lab_dir, "status"))
        count = len(state.processes)
        assert f"processes: {count} of {count} running" in status
        assert status.count("(Paired)") == 2 and status.count("VRA Z-VRA-") == 6
        assert "VPG lab-vpg: MeetingSLA" in status and "journal history" in status
        assert "RPO " in status and "WAN: up" in status
        vpg = state.vpg["identifier"]
        volumes = [v for vm in state.vpg["vms"] for v in vm["volumes"]]
        assert len(state.vpg["vms"]) == 3 and len(volumes) == 3
        a, b = client(state, "protected"), client(state, "recovery")

        # 2. the workload replicates; the WAN is cut, then restored
        start = journal_seq(state, vpg)
        wait_for(lambda: journal_seq(state, vpg) > start + 200, 60, "the workload's writes in the journal")
        ok(zvm_lab(lab_dir, "wan", "cut", "--mode", "reset"))
        before = {n: c["writes"] for n, c in protect_counters(state, vpg).items()}
        wait_for(lambda: all(c["writes"] > before[n] + 50 for n, c in protect_counters(state, vpg).items()), 60,
                 "the VMs to write during the cut")
        seq_during_cut = journal_seq(state, vpg)
        wait_for(lambda: all(c["writes"] > before[n] + 100 for n, c in protect_counters(state, vpg).items()), 60,
                 "more writes during the cut")
        assert journal_seq(state, vpg) == seq_during_cut
        wan = json.loads(ok(zvm_lab(lab_dir, "wan", "status", "--json")))
        assert wan["vra-recovery-0"]["state"] == "cut:reset" and wan["vra-recovery-0"]["counters"]["reset"] >= 1
        ok(zvm_lab(lab_dir, "wan", "restore"))
        wait_for(lambda: journal_seq(state, vpg) > seq_during_cut, 120, "replication to resume after the restore")

        # 3. a tagged checkpoint; the sources as they are at it; its images over NBD equal them
        ok(zvm_lab(lab_dir, "workload", "pause"))
        wait_for(lambda: streaming(state, vpg), 120, "every protect VRA of the VPG to be streaming")
        task = a.wait_for_task(a.take_checkpoint(vpg, "after-the-cut"), timeout=120)
        checkpoint = task["Result"]["CheckpointIdentifier"]
        assert task["Result"]["IsConsistent"] is True, task
        sources = {v["id"]: sha256_file(v["path"]) for v in volumes}
        ok(zvm_lab(lab_dir, "workload", "resume"))
        tagged = a.checkpoints(vpg, tagged_only=True)
        assert [c["CheckpointIdentifier"] for c in tagged if c["Tag"] == "after-the-cut"] == [checkpoint]
        for vm in state.vpg["vms"]:
            for image in json.loads(ok(zvm_lab(lab_dir, "image", vm["name"], "--checkpoint", checkpoint, "--json"))):
                assert nbd_hash(image["uri"], tmp_path) == sources[image["volume"]], f"{vm['name']}: image differs"
                ok(zvm_lab(lab_dir, "image", "--close", image["export"]))
        assert any(sha256_file(v["path"]) != sources[v["id"]] for v in volumes)  # the disks moved on since

        # 4. a failover test at the checkpoint, on the recovery site's ZVM; then its stop
        wait_for(lambda: any(c["CheckpointIdentifier"] == checkpoint for c in b.checkpoints(vpg)), 60,
                 "the recovery site to list the checkpoint")
        test = b.wait_for_task(b.failover_test(vpg, checkpoint=checkpoint), timeout=180)["Result"]
        assert test["CheckpointIdentifier"] == checkpoint and len(test["Vms"]) == 3
        for vm in test["Vms"]:
            for disk in vm["Disks"]:
                assert nbd_hash(disk["Uri"], tmp_path) == sources[disk["Volume"]], f"{vm['Name']}: test disk differs"
        names = {f"{vm['name']}{TEST_SUFFIX}" for vm in state.vpg["vms"]}
        assert names <= vcenter_vms(state, "recovery")
        stop = b.wait_for_task(b.failover_test_stop(vpg, success=True, summary="lab e2e"), timeout=180)
        assert "stopped" in stop["Step"], stop
        assert not names & vcenter_vms(state, "recovery")
        report = b.recovery_reports(vpg=vpg, type="FailoverTest")[0]
        assert (report["State"], report["Result"]) == ("Stopped", "Succeeded")

        a.logout()
        b.logout()
    finally:
        down = zvm_lab(lab_dir, "down", timeout=120)

    # 5. nothing left
    assert down.returncode == 0, down.stdout + down.stderr
    assert len(pids) >= 2 + 1 + 2 + 6 + 3 + 1  # vcsims, WAN, ZVMs, VRAs, filters, workload
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert processes_mentioning(str(lab_dir)) == []
    assert processes_mentioning(state.run_dir) == []
    assert not (lab_dir / "lab.json").exists()


def test_a_move_to_the_recovery_site_and_back(tmp_path):
    """A move to the recovery site and back (reverse protection both ways, `zvm lab attach` after each, as a
    hypervisor would attach the filters and the VMs would write where they run): after each move the VMs'
    disks where they run now equal the sources before it (a move loses nothing), the workload's writes on
    the recovery site are replicated back; then down leaves nothing."""
    lab_dir = tmp_path / "lab"
    up = zvm_lab(lab_dir, "up", "--disk-mb", "64", "--rate", "1m", timeout=300)
    state = LabState.load(lab_dir)
    pids = {p.pid for p in state.processes} if state else set()
    try:
        ok(up)
        vpg = state.vpg["identifier"]
        a, b = client(state, "protected"), client(state, "recovery")
        wait_for(lambda: streaming(state, vpg), 120, "the VPG to be streaming")
        # an image opened twice holds the journal until closed twice: --close-all does (else no commit)
        vm = state.vpg["vms"][0]["name"]
        ok(zvm_lab(lab_dir, "image", vm))
        ok(zvm_lab(lab_dir, "image", vm))
        assert "closed 1 image(s)" in ok(zvm_lab(lab_dir, "image", "--close-all"))
        move(lab_dir, b, vpg, to="recovery", pids=pids)
        state = LabState.load(lab_dir)
        assert recovery_vra(state) in state.vras["protected"]  # the journal is on the original site now
        wait_for(lambda: streaming(state, vpg), 120, "the reversed VPG to be streaming")
        start = journal_seq(state, vpg)
        wait_for(lambda: journal_seq(state, vpg) > start + 100, 60, "writes on the recovery site replicated back")
        move(lab_dir, a, vpg, to="protected", pids=pids)
        state = LabState.load(lab_dir)
        assert recovery_vra(state) in state.vras["recovery"]
        assert a.vpg(vpg)["ProtectedSite"]["SiteName"] == "Protected site"
        a.logout()
        b.logout()
    finally:
        down = zvm_lab(lab_dir, "down", timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert processes_mentioning(str(lab_dir)) == []
