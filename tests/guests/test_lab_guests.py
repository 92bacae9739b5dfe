"""`zvm lab up --guests 1` as a user runs it: one VM of the lab's VPG runs the real guest (its commits reach
the reports log), the others fio; a failover test at a checkpoint taken after some commits boots the recovered guest on the recovery side (and only
it: fio disks do not boot) from its point-in-time image, with every transaction acknowledged before the checkpoint; the stop powers it off; then
`zvm verify-checkpoint` passes on the lab's newest consistent checkpoint, skipping the fio VMs, and the
checkpoint is tagged "Tested at ...: passed"."""

from __future__ import annotations

import json
import math

from guests.runner import acknowledged_before
from tests.guests.lab import client, ok, tagged_checkpoint, zvm_cli
from tests.lab.helpers import wait_for, zvm_lab
from zvm.lab.state import LabState


def test_lab_guests_recover_and_check_out(tmp_path):
    lab_dir = tmp_path / "lab"
    up = zvm_lab(lab_dir, "up", "--disk-mb", "64", "--guests", "1", timeout=300)
    try:
        assert "1 VMs run a Debian guest" in ok(up)
        state = LabState.load(lab_dir)
        guests = lab_dir / "guests"
        (name,) = json.loads((guests / "guests.json").read_text())
        reports = guests / f"{name}-reports.log"
        wait_for(lambda: reports.exists() and reports.read_text().count("ZVR-COMMIT") >= 20, 180,
                 "the protected guest's commits")

        vpg = state.vpg["identifier"]
        acknowledged = acknowledged_before(reports, math.inf)
        cp = tagged_checkpoint(state, vpg, "guests", on="protected", listed_on="recovery")
        with client(state, "recovery") as b:
            b.wait_for_task(b.failover_test(vpg, checkpoint=cp), timeout=120)
            app = guests / f"recovered-{name}-app.log"
            wait_for(lambda: app.exists() and "ZVR-APP READY" in app.read_text(), 180, "the recovered guest")
            rows = int(app.read_text().split("ZVR-APP READY rows=")[1].split()[0])
            assert rows >= acknowledged  # every transaction acknowledged before the checkpoint was asked for
            assert [p.name for p in guests.glob("recovered-*-app.log")] == [app.name]  # fio VMs not booted
            b.wait_for_task(b.failover_test_stop(vpg), timeout=120)
            watch = lab_dir / "logs" / "guest-watch.log"
            wait_for(lambda: "powered off" in watch.read_text(), 30, "the recovered guest powered off")

            out = zvm_cli(state, "recovery", "verify-checkpoint", state.vpg["name"], timeout=600)
            assert f"{name}: PASS" in out and out.count("not checked") == 2, out
            tags = [c["Tag"] or "" for c in b.request("GET", f"/vpgs/{vpg}/checkpoints")]
            assert any("Tested at " in t and t.endswith(": passed") for t in tags), tags  # "<tag> | Tested at ..."
    finally:
        zvm_lab(lab_dir, "down")
