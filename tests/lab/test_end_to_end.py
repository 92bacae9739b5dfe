"""Issue 8's end-to-end test: `zvm lab up` as a user runs it, the workload replicating through the WAN, a
cut of the WAN and its restore, a tagged checkpoint taken through the REST API, the point-in-time images of
all three VMs at that checkpoint read over NBD (nbdcopy) from the recovery VRA and compared with the
sources as they were then, byte for byte; then `zvm lab down` leaves no process behind. On the way: `up`
again says the lab is up, and `status` shows the sites, VRAs and the VPG with its RPO and journal history.

"The sources as they were then": the lab's workload is paused (fio stopped, every write it sent completed
by the filters), the VPG is streaming again (no sync pending, so the checkpoint is consistent), the tagged
checkpoint is taken, the source disks are hashed, and the workload resumes; the images are read while it
writes again, so they must come from the journal as of the checkpoint, not from the disks.

Not here yet: a failover test through the REST API (`failoverTest` / `failoverTestStop`), which does not
exist before issue 7's recovery operations.
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
from zvm.lab.state import LabState


def protect_counters(state: LabState, vpg: str) -> dict[str, dict]:
    out = {}
    for vra in state.vras["protected"]:
        for st in vra_status(vra["listen"], state.secret):
            if st.vpg == vpg and st.role == "protect":
                out[vra["name"]] = {"state": st.state, "substatus": st.substatus, **dict(st.counters)}
    return out


def journal_seq(state: LabState, vpg: str) -> int:
    recovery = next(v for v in state.vras["recovery"] if v["host"] == state.vpg["recovery_host"])
    return next(int(st.counters["last_seq"]) for st in vra_status(recovery["listen"], state.secret)
                if st.vpg == vpg and st.role == "recover")


def test_lab_up_cut_restore_checkpoint_images_equal_sources_then_down(tmp_path):
    lab_dir = tmp_path / "lab"
    up = zvm_lab(lab_dir, "up", "--disk-mb", "64", "--rate", "1m", timeout=300)
    state = LabState.load(lab_dir)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "The lab is up" in up.stdout and "[11/11]" in up.stdout
        again = zvm_lab(lab_dir, "up")
        assert again.returncode == 0 and "already up" in again.stdout, again.stdout + again.stderr
        assert [p.pid for p in LabState.load(lab_dir).processes] == [p.pid for p in state.processes]
        status = zvm_lab(lab_dir, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        count = len(state.processes)
        assert f"processes: {count} of {count} running" in status.stdout
        assert status.stdout.count("(Paired)") == 2 and status.stdout.count("VRA Z-VRA-") == 6
        assert "VPG lab-vpg: MeetingSLA" in status.stdout and "journal history" in status.stdout
        assert "RPO " in status.stdout and "WAN: up" in status.stdout
        vpg = state.vpg["identifier"]
        volumes = [v for vm in state.vpg["vms"] for v in vm["volumes"]]
        assert len(state.vpg["vms"]) == 3 and len(volumes) == 3
        zvm_a = state.zvms["protected"]
        api = ZvmClient(zvm_a["url"]).login(zvm_a["username"], zvm_a["password"])

        # The workload replicates: the journal grows.
        start = journal_seq(state, vpg)
        wait_for(lambda: journal_seq(state, vpg) > start + 200, 60, "the workload's writes in the journal")

        # Cut the WAN: the VMs go on writing (their filters complete writes), nothing reaches the journal.
        cut = zvm_lab(lab_dir, "wan", "cut", "--mode", "reset")
        assert cut.returncode == 0, cut.stdout + cut.stderr
        before = {n: c["writes"] for n, c in protect_counters(state, vpg).items()}
        wait_for(lambda: all(c["writes"] > before[n] + 50 for n, c in protect_counters(state, vpg).items()), 60,
                 "the VMs to write during the cut")
        seq_during_cut = journal_seq(state, vpg)
        wait_for(lambda: all(c["writes"] > before[n] + 100 for n, c in protect_counters(state, vpg).items()), 60,
                 "more writes during the cut")
        assert journal_seq(state, vpg) == seq_during_cut
        status = json.loads(zvm_lab(lab_dir, "wan", "status", "--json").stdout)
        assert status["vra-recovery-0"]["state"] == "cut:reset" and status["vra-recovery-0"]["counters"]["reset"] >= 1

        restore = zvm_lab(lab_dir, "wan", "restore")
        assert restore.returncode == 0, restore.stdout + restore.stderr
        wait_for(lambda: journal_seq(state, vpg) > seq_during_cut, 60, "replication to resume after the restore")

        # The sources as they are at a tagged checkpoint.
        pause = zvm_lab(lab_dir, "workload", "pause")
        assert pause.returncode == 0, pause.stdout + pause.stderr
        wait_for(lambda: all(c["state"] == "ok" and c["substatus"] == ""
                             for c in protect_counters(state, vpg).values()), 120,
                 "every protect VRA of the VPG to be streaming (no sync pending)")
        task = api.wait_for_task(api.take_checkpoint(vpg, "after-the-cut"), timeout=120)
        checkpoint = task["Result"]["CheckpointIdentifier"]
        assert task["Result"]["IsConsistent"] is True, task
        sources = {v["id"]: sha256_file(v["path"]) for v in volumes}
        resume = zvm_lab(lab_dir, "workload", "resume")
        assert resume.returncode == 0, resume.stdout + resume.stderr
        tagged = api.checkpoints(vpg, tagged_only=True)
        assert [c["CheckpointIdentifier"] for c in tagged if c["Tag"] == "after-the-cut"] == [checkpoint]

        # The point-in-time images at that checkpoint, over NBD from the recovery VRA, while writes go on.
        for vm in state.vpg["vms"]:
            opened = zvm_lab(lab_dir, "image", vm["name"], "--checkpoint", checkpoint, "--json")
            assert opened.returncode == 0, opened.stdout + opened.stderr
            for image in json.loads(opened.stdout):
                copy = tmp_path / f"{image['volume']}.img"
                subprocess.run(["nbdcopy", image["uri"], str(copy)], check=True, timeout=120)
                assert sha256_file(copy) == sources[image["volume"]], f"{vm['name']}: image differs from source"
                copy.unlink()
                assert zvm_lab(lab_dir, "image", "--close", image["export"]).returncode == 0
        # and the disks have moved on since (the images did not just read the current disks)
        assert any(sha256_file(v["path"]) != sources[v["id"]] for v in volumes)
        api.logout()
    finally:
        down = zvm_lab(lab_dir, "down", timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    recorded = [p.pid for p in state.processes]
    assert len(recorded) >= 2 + 1 + 2 + 6 + 3 + 1  # vcsims, WAN, ZVMs, VRAs, filters, workload
    assert [pid for pid in recorded if pid_alive(pid)] == []
    assert processes_mentioning(str(lab_dir)) == []
    assert processes_mentioning(state.run_dir) == []
    assert not (lab_dir / "lab.json").exists()
