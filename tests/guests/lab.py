"""What the two lab guest test files share: a lab command's output, the ZVM CLI of one of the lab's sites,
and a tagged checkpoint taken on one site and listed by the other."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.lab.helpers import wait_for
from zvm.client import ZvmClient
from zvm.lab.state import LabState


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def zvm_cli(state: LabState, site: str, *args: str, timeout: float) -> str:
    """``zvm ARGS`` against the ZVM of the lab's ``site`` ("protected" or "recovery"); its output."""
    z = state.zvms[site]
    env = dict(os.environ, ZVM_URL=z["url"], ZVM_USER=z["username"], ZVM_PASSWORD=z["password"])
    return ok(subprocess.run([sys.executable, "-m", "zvm.cli", *args], env=env, capture_output=True, text=True,
                             timeout=timeout))


def client(state: LabState, site: str) -> ZvmClient:
    z = state.zvms[site]
    return ZvmClient(z["url"]).login(z["username"], z["password"])


def tagged_checkpoint(state: LabState, vpg: str, tag: str, *, on: str, listed_on: str) -> str:
    """A checkpoint tagged ``tag`` through the ZVM of site ``on``, once the ZVM of ``listed_on`` lists it too."""
    with client(state, on) as c:
        cp = c.wait_for_task(c.take_checkpoint(vpg, tag), timeout=120)["Result"]["CheckpointIdentifier"]
    with client(state, listed_on) as c:
        wait_for(lambda: any(x["CheckpointIdentifier"] == cp for x in c.request("GET", f"/vpgs/{vpg}/checkpoints")),
                 60, f"the {listed_on} site to list checkpoint {tag}")
    return cp
