"""`zvm lab up | status | down` as a user runs them, in a separate process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zvm.vcenter import VCenter, VCenterConfig

ZVM = [sys.executable, "-m", "zvm.cli"]


def zvm(lab_dir: Path, *args: str, timeout: float = 180, **env_extra) -> subprocess.CompletedProcess:
    env = dict(os.environ, ZVR_LAB_DIR=str(lab_dir), **env_extra)
    return subprocess.run([*ZVM, "lab", *args], env=env, capture_output=True, text=True, timeout=timeout)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not running; the lab's processes are not our children, but be exact anyway
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"


@pytest.fixture
def lab_dir(tmp_path):
    d = tmp_path / "lab"
    yield d
    zvm(d, "down")


def test_lab_up_status_down(lab_dir):
    up = zvm(lab_dir, "up", "--hosts", "2", "--vms", "2", "--disk-mb", "16")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "The lab is up" in up.stdout
    state = json.loads((lab_dir / "lab.json").read_text())
    assert oct((lab_dir / "lab.json").stat().st_mode & 0o777) == "0o600"
    pids = [v["pid"] for v in state["vcenters"].values()]
    assert set(state["vcenters"]) == {"protected", "recovery"}
    for site, v in state["vcenters"].items():
        assert v["url"] in up.stdout and v["password"] in up.stdout
        with VCenter(VCenterConfig(v["url"], v["username"], v["password"])) as vc:
            inv = vc.inventory()
        assert len(inv.hosts) == 2, site
        assert len(inv.vms) == 2, site
        assert {d.name for d in inv.datastores.values()} == {"LocalDS_0", "LocalDS_1"}

    again = zvm(lab_dir, "up")
    assert again.returncode == 0 and "already up" in again.stdout
    assert json.loads((lab_dir / "lab.json").read_text())["vcenters"]["protected"]["pid"] == pids[0]

    status = zvm(lab_dir, "status")
    assert status.returncode == 0, status.stdout
    assert status.stdout.count("running") == 2 and "2 hosts" in status.stdout

    down = zvm(lab_dir, "down")
    assert down.returncode == 0 and "The lab is down" in down.stdout
    assert not any(pid_alive(p) for p in pids)
    assert not (lab_dir / "lab.json").exists()
    assert zvm(lab_dir, "status").returncode == 3


def test_lab_failed_step_says_which_and_leaves_nothing(lab_dir, tmp_path):
    # A cache folder that cannot be created makes the vcsim build, and so step 1, fail.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    up = zvm(lab_dir, "up", ZVR_CACHE_DIR=str(blocker / "cache"))
    assert up.returncode == 1
    assert "failed at step 1 (start the protected site's vCenter (vcsim))" in up.stdout
    assert "Not a directory" in up.stdout
    assert not (lab_dir / "lab.json").exists()


def test_lab_refuses_bad_sizes(lab_dir):
    up = zvm(lab_dir, "up", "--disk-mb", "-1")
    assert up.returncode == 2 and "not a positive number" in up.stderr
    assert not (lab_dir / "lab.json").exists()


@pytest.mark.parametrize("cmd,words", [
    (["zvm", "--help"], ["lab", "VPG", "9081"]),
    (["zvm", "lab", "--help"], ["up", "status", "down"]),
    (["vra", "--help"], ["4005", "journal"]),
    (["zvm-install", "--help"], ["--silent", "9080"]),
])
def test_console_scripts_print_help(cmd, words):
    exe = Path(sys.executable).parent / cmd[0]
    out = subprocess.run([str(exe), *cmd[1:]], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for w in words:
        assert w in out.stdout
