"""docs/protect_folder.py, the example automation script, against `zvm serve` and a vcsim."""

from __future__ import annotations

import os
import subprocess
import sys

from pyVim.task import WaitForTask
from pyVmomi import vim

from tests.zvm.conftest import ADMIN_PASSWORD
from tests.zvm.procs import REPO, start_serve
from zvm.client import ZvmClient
from zvm.lab.vcsim import VcsimSpec
from zvm.vcenter import VCenter, VCenterConfig


def test_protect_every_vm_of_a_folder(start_vcsim, tmp_path):
    sim = start_vcsim("zvm-example", VcsimSpec(hosts_per_cluster=2, vms_per_pool=4))
    with VCenter(VCenterConfig(sim.url, sim.username, sim.password)) as vc:
        content = vc.content
        dc = content.rootFolder.childEntity[0]
        finance = dc.vmFolder.CreateFolder("Finance")
        vms = sorted(dc.vmFolder.childEntity, key=lambda e: e.name)
        vms = [v for v in vms if isinstance(v, vim.VirtualMachine)]
        WaitForTask(finance.MoveIntoFolder_Task(vms[:2]))
        moved = sorted(v._moId for v in vms[:2])
        host_name = vms[0].runtime.host.name
        ds_name = vms[0].datastore[0].name

    server = start_serve(tmp_path / "zvm", "--admin-password", ADMIN_PASSWORD, "--vcenter-url", sim.url,
                         "--vcenter-username", sim.username, "--vcenter-verify", "false",
                         env={"ZVM_VCENTER_PASSWORD": sim.password})
    try:
        server.wait_for(r"inventory of \S+ loaded")
        env = {**os.environ, "ZVM_PASSWORD": ADMIN_PASSWORD, "VCENTER_PASSWORD": sim.password,
               "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, str(REPO / "docs" / "protect_folder.py"), "--zvm-url", server.url,
               "--vcenter-url", sim.url, "--vcenter-user", sim.username, "--folder", "DC0/vm/Finance",
               "--vpg-name", "finance", "--recovery-host", host_name, "--recovery-datastore", ds_name,
               "--no-wait"]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "VPG finance: 2 VM(s) from DC0/vm/Finance" in out.stdout
        with ZvmClient(server.url).login("admin", ADMIN_PASSWORD) as zvm:
            vpg = zvm.vpg_by_name("finance")
            assert sorted(v["VmIdentifier"] for v in zvm.protected_vms(vpg=vpg["VpgIdentifier"])) == moved
        cmd[cmd.index("--vpg-name") + 1] = "finance-2"
        again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert again.returncode == 0 and again.stdout.count("skipping") == 2
        assert "nothing to protect" in again.stdout
    finally:
        assert server.stop() == 0
