"""`zvm lab` as a user runs it, in a separate process: the light checks (refusals, a failed step, help).
The whole lab, end to end, is tests/lab/test_end_to_end.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.helpers import pid_alive, processes_mentioning, zvm_lab


@pytest.fixture
def lab_dir(tmp_path):
    d = tmp_path / "lab"
    yield d
    zvm_lab(d, "down")


def test_lab_failed_step_says_which_and_leaves_nothing(lab_dir, tmp_path):
    # A cache folder that cannot be created makes the vcsim build, and so step 2, fail.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    up = zvm_lab(lab_dir, "up", ZVR_CACHE_DIR=str(blocker / "cache"))
    assert up.returncode == 1
    assert "[1/11] check this machine" in up.stdout
    assert "failed at step 2 (start the protected site's vCenter (vcsim))" in up.stdout
    assert "Not a directory" in up.stdout
    assert not (lab_dir / "lab.json").exists()
    assert processes_mentioning(str(lab_dir)) == []


def test_a_step_failing_late_stops_everything_started_before_it(lab_dir):
    # fio refuses the rate only when the workload starts (step 10): by then the vCenters, the WAN, both ZVMs,
    # six VRAs and the filters run, and all of them must be stopped.
    seen: list[dict] = []
    proc = subprocess.Popen([sys.executable, "-m", "zvm.cli", "lab", "--lab-dir", str(lab_dir), "up",
                             "--disk-mb", "16", "--rate", "not-a-rate"], stdout=subprocess.PIPE, text=True)
    out = []
    for line in proc.stdout:
        out.append(line)
        if line.startswith("[10/11]"):  # everything before the workload is up: note what runs
            seen = json.loads((lab_dir / "lab.json").read_text())["processes"]
    proc.wait(300)
    proc.stdout.close()
    text = "".join(out)
    assert proc.returncode == 1, text
    assert "lab up failed at step 10 (start the workload): workload ended before" in text
    assert "failed parsing rate=not-a-rate" in text  # why: the end of fio's log
    kinds = sorted({p["kind"] for p in seen})
    assert kinds == ["iofilter", "vcsim", "vra", "wan", "zvm"], kinds
    assert [p["name"] for p in seen if pid_alive(p["pid"])] == []
    assert processes_mentioning(str(lab_dir)) == []
    assert not (lab_dir / "lab.json").exists()
    assert (lab_dir / "logs" / "workload.log").exists()  # the logs stay for a look at what happened


@pytest.mark.parametrize("args,why", [
    (["--disk-mb", "-1"], "not a positive number"),
    (["--vms", "2"], "protects 3 VMs"),
])
def test_lab_refuses_bad_options(lab_dir, args, why):
    up = zvm_lab(lab_dir, "up", *args)
    assert up.returncode == 2 and why in up.stderr
    assert not (lab_dir / "lab.json").exists()


def test_lab_commands_without_a_lab(lab_dir):
    assert zvm_lab(lab_dir, "status").returncode == 3
    down = zvm_lab(lab_dir, "down")
    assert down.returncode == 0 and "nothing to stop" in down.stdout
    for args in (["wan", "cut"], ["workload", "pause"], ["env"]):
        res = zvm_lab(lab_dir, *args)
        assert res.returncode == 1 and "no lab in" in res.stderr and "zvm lab up" in res.stderr


@pytest.mark.parametrize("cmd,words", [
    (["zvm", "--help"], ["lab", "VPG", "9081"]),
    (["zvm", "lab", "--help"], ["up", "status", "down", "wan", "workload", "image", "env"]),
    (["vra", "--help"], ["4005", "journal"]),
    (["zvm-install", "--help"], ["--answers", "--upgrade", "--uninstall", "9080"]),
])
def test_console_scripts_print_help(cmd, words):
    exe = Path(sys.executable).parent / cmd[0]
    out = subprocess.run([str(exe), *cmd[1:]], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for w in words:
        assert w in out.stdout
