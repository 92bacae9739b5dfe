"""A lab guest follows a move, as a user runs it: `zvm lab up --guests 1`; after some commits `zvm lab workload
pause` powers the guest off (a VM that is shut down does not write); `zvm move --wait` (reverse protection:
the default) on the recovery site's ZVM; `zvm lab attach` boots the guest on the recovery site's filter export
of its committed disk (the old one stays off), where it answers with every transaction it acknowledged on the
protected site and commits more; those writes reach the original site: a checkpoint taken there (the VPG's
recovery site now) passes `zvm verify-checkpoint` with every transaction acknowledged before it; a move back
returns the guest to the protected site with everything it acknowledged on the recovery site.

A failover committed without reverse protection: the watcher boots the recovered guest again on its
committed volume file (after the one it ran on the point-in-time image before the commit), with every
transaction acknowledged before the checkpoint."""

from __future__ import annotations

import json
import math
import time

from guests.runner import COMMIT, READY, acknowledged_before
from tests.guests.lab import ok, tagged_checkpoint, zvm_cli
from tests.lab.helpers import wait_for, zvm_lab
from zvm.lab.state import LabState


def _highest(reports) -> int:
    """The highest transaction id in a lab guest's reports log so far (0 before the log exists)."""
    return acknowledged_before(reports, math.inf)


def test_a_lab_guest_follows_a_move_and_replicates_back(tmp_path):
    lab_dir = tmp_path / "lab"
    up = zvm_lab(lab_dir, "up", "--disk-mb", "64", "--guests", "1", timeout=300)
    try:
        ok(up)
        state = LabState.load(lab_dir)
        guests = lab_dir / "guests"
        (name,) = json.loads((guests / "guests.json").read_text())
        reports, app = guests / f"{name}-reports.log", guests / f"{name}-app.log"
        wait_for(lambda: _highest(reports) >= 20, 180, "the protected guest's commits")
        old = state.process(f"guest-{name}")

        paused = ok(zvm_lab(lab_dir, "workload", "pause"))
        assert f"guests powered off: {name}" in paused, paused
        acknowledged_a = _highest(reports)
        zvm_cli(state, "recovery", "move", state.vpg["name"], "--wait", timeout=300)
        committed = time.monotonic()

        attached = ok(zvm_lab(lab_dir, "attach"))
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
        vpg = state.vpg["identifier"]
        acknowledged_b = _highest(reports)
        cp = tagged_checkpoint(state, vpg, "after-move", on="recovery", listed_on="protected")
        out = zvm_cli(state, "protected", "verify-checkpoint", state.vpg["name"], cp, timeout=600)
        assert f"{name}: PASS" in out, out
        assert acknowledged_b > acknowledged_a

        # and back: the guest runs on the protected site again, with everything it acknowledged on the other
        ok(zvm_lab(lab_dir, "workload", "pause"))
        acknowledged_b = _highest(reports)
        zvm_cli(state, "protected", "move", state.vpg["name"], "--wait", timeout=300)
        attached = ok(zvm_lab(lab_dir, "attach"))
        assert f"guest {name} booted on the protected site" in attached, attached
        ready = wait_for(lambda: app.exists() and READY.search(app.read_text()), 180, "the guest back home")
        assert int(ready.group(2)) >= acknowledged_b
        wait_for(lambda: _highest(reports) >= acknowledged_b + 5, 120, "commits on the protected site again")
    finally:
        zvm_lab(lab_dir, "down")


def test_a_committed_failover_boots_the_guest_on_its_volume(tmp_path):
    lab_dir = tmp_path / "lab"
    up = zvm_lab(lab_dir, "up", "--disk-mb", "64", "--guests", "1", timeout=300)
    try:
        ok(up)
        state = LabState.load(lab_dir)
        guests = lab_dir / "guests"
        (name,) = json.loads((guests / "guests.json").read_text())
        reports = guests / f"{name}-reports.log"
        wait_for(lambda: _highest(reports) >= 20, 180, "the protected guest's commits")
        ok(zvm_lab(lab_dir, "workload", "pause"))  # the disaster: every acknowledged transaction is the test
        acknowledged = _highest(reports)
        vpg = state.vpg["identifier"]
        cp = tagged_checkpoint(state, vpg, "before-failover", on="protected", listed_on="recovery")
        zvm_cli(state, "recovery", "failover", state.vpg["name"], "--checkpoint", cp, "--commit-policy", "Commit",
                "--commit-timeout", "0", "--no-reverse-protection", "--wait", timeout=300)
        committed = time.monotonic()
        watch = lab_dir / "logs" / "guest-watch.log"
        wait_for(lambda: "committed: booting" in watch.read_text(), 60, "the watcher to boot the committed guest")
        assert "on its committed volume /" in watch.read_text()
        app = guests / f"recovered-{name}-app.log"
        ready = wait_for(lambda: app.exists() and READY.search(app.read_text()), 180, "the guest on its volume")
        print(f"from the failover's commit to the guest answering on its committed volume: "
              f"{time.monotonic() - committed:.1f} s")
        assert int(ready.group(2)) >= acknowledged
        booted_at = int(ready.group(2))  # the app log is this boot's (the guest before the commit had its own)
        wait_for(lambda: max((int(m.group(1)) for m in COMMIT.finditer(app.read_text().replace("\r", ""))),
                             default=0) >= booted_at + 5, 120, "commits on the committed volume")
    finally:
        zvm_lab(lab_dir, "down")
