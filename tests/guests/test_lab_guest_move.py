"""A lab guest follows a move, as a user runs it: `zvm lab up --guests 1`; after some commits `zvm lab workload
pause` powers the guest off (a VM that is shut down does not write); `zvm move --wait` (reverse protection:
the default) on the recovery site's ZVM; `zvm lab attach` boots the guest on the recovery site's filter export
of its committed disk (the old one stays off), where it answers with every transaction it acknowledged on the
protected site and commits more; those writes reach the original site: a checkpoint taken there (the VPG's
recovery site now) passes `zvm verify-checkpoint` with every transaction acknowledged before it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from guests.runner import READY
from tests.lab.helpers import wait_for, zvm_lab
from zvm.client import ZvmClient
from zvm.lab.state import LabState


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _highest(reports) -> int:
    """The highest transaction id in a lab guest's reports log ("<host time> ZVR-COMMIT <id> ..." lines)."""
    if not reports.exists():
        return 0
    return max((int(ln.split("ZVR-COMMIT ")[1].split()[0]) for ln in reports.read_text().splitlines()
                if "ZVR-COMMIT " in ln), default=0)


def _zvm(state: LabState, site: str, *args: str, timeout: float) -> str:
    z = state.zvms[site]
    env = dict(os.environ, ZVM_URL=z["url"], ZVM_USER=z["username"], ZVM_PASSWORD=z["password"])
    return _ok(subprocess.run([sys.executable, "-m", "zvm.cli", *args], env=env, capture_output=True, text=True,
                              timeout=timeout))


def test_a_lab_guest_follows_a_move_and_replicates_back(tmp_path):
    lab_dir = tmp_path / "lab"
    up = zvm_lab(lab_dir, "up", "--disk-mb", "64", "--guests", "1", timeout=300)
    try:
        _ok(up)
        state = LabState.load(lab_dir)
        guests = lab_dir / "guests"
        (name,) = json.loads((guests / "guests.json").read_text())
        reports, app = guests / f"{name}-reports.log", guests / f"{name}-app.log"
        wait_for(lambda: _highest(reports) >= 20, 180, "the protected guest's commits")
        old = state.process(f"guest-{name}")

        paused = _ok(zvm_lab(lab_dir, "workload", "pause"))
        assert f"guests powered off: {name}" in paused, paused
        acknowledged_a = _highest(reports)
        _zvm(state, "recovery", "move", state.vpg["name"], "--wait", timeout=300)
        committed = time.monotonic()

        attached = _ok(zvm_lab(lab_dir, "attach"))
        assert f"guest {name} booted on the recovery site" in attached, attached
        state = LabState.load(lab_dir)
        new = state.process(f"guest-{name}")
        assert new.pid != old.pid and new.alive()
        assert [p.name for p in state.processes].count(f"guest-{name}") == 1  # the old one stays off
        (vm,) = [vm for vm in state.vpg["vms"] if vm["name"] == name]
        assert vm["site"] == "recovery"
        filter_sock = next(f["nbd"] for f in state.filters if f["site"] == "recovery" and vm["volumes"][0]["id"]
                           in f["volumes"])
        assert any(a.startswith("file=nbd+unix:///") and f"socket={filter_sock}," in a for a in new.argv), new.argv

        ready = wait_for(lambda: app.exists() and READY.search(app.read_text()), 180, "the guest on the recovery site")
        answered = time.monotonic() - committed
        assert int(ready.group(2)) >= acknowledged_a  # nothing acknowledged on the protected site was lost
        wait_for(lambda: _highest(reports) >= acknowledged_a + 20, 120, "commits on the recovery site")
        watch = (lab_dir / "logs" / "guest-watch.log").read_text()
        assert "committed with reverse protection" in watch, watch
        print(f"from the move's commit to the guest answering on the recovery site: {answered:.1f} s")

        # its writes reach the original site: a checkpoint on the VPG's protected site (the recovery site now),
        # checked by the original site's ZVM (the VPG's recovery site now) with the guest's reports
        z = state.zvms["recovery"]
        vpg = state.vpg["identifier"]
        acknowledged_b = _highest(reports)
        with ZvmClient(z["url"]).login(z["username"], z["password"]) as b:
            cp = b.wait_for_task(b.take_checkpoint(vpg, "after-move"), timeout=120)["Result"]["CheckpointIdentifier"]
        z = state.zvms["protected"]
        with ZvmClient(z["url"]).login(z["username"], z["password"]) as a:
            wait_for(lambda: any(c["CheckpointIdentifier"] == cp for c in a.request("GET", f"/vpgs/{vpg}/checkpoints")),
                     60, "the original site to list the checkpoint")
        out = _zvm(state, "protected", "verify-checkpoint", state.vpg["name"], cp, timeout=600)
        assert f"{name}: PASS" in out, out
        assert acknowledged_b > acknowledged_a
    finally:
        zvm_lab(lab_dir, "down")
