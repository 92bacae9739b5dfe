"""zvm/vcenter against simulated vCenters: connection, inventory, and plugin-extension registration."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pyVmomi import vim, vmodl

from zvm.errors import AuthenticationError, ConfigError, TransientError
from zvm.vcenter import VCenter, VCenterConfig


def test_both_sites_inventory(two_sites, vcenter_config):
    seen_uuids = set()
    for sim in (two_sites.protected, two_sites.recovery):
        with VCenter(vcenter_config(sim)) as vc:
            inv = vc.inventory()
        seen_uuids.add(inv.vcenter_uuid)
        assert len(inv.datacenters) == 1
        (cluster,) = inv.clusters.values()
        assert len(cluster.hosts) == 3
        assert {h.cluster for h in inv.hosts.values()} == {cluster.moid}
        assert all(h.connection_state == "connected" for h in inv.hosts.values())
        assert sorted(d.name for d in inv.datastores.values()) == ["LocalDS_0", "LocalDS_1"]
        assert {"VM Network", "DC0_DVPG0", "DC0_DVPG1"} <= {n.name for n in inv.networks.values()}
        assert len(inv.vms) == 4
        for vm in inv.vms.values():
            assert vm.host in inv.hosts
            assert vm.power_state == "poweredOn"
            assert vm.disks and vm.disks[0].capacity == 64 * 1024 * 1024
            assert vm.networks and set(vm.networks) <= set(inv.networks)
    assert len(seen_uuids) == 2, "the two sites must be distinct vCenters"


def test_vm_disk_is_a_real_file_under_its_datastore(two_sites, vcenter_config):
    sim = two_sites.protected
    with VCenter(vcenter_config(sim)) as vc:
        inv = vc.inventory()
    vm = inv.vm_by_name("DC0_C0_RP0_VM0")
    disk = vm.disks[0]
    ds = inv.datastores[disk.datastore]
    assert ds.local_path == sim.datastores[ds.name]
    assert disk.flat_path and disk.flat_path.startswith(ds.local_path + os.sep)
    assert os.path.getsize(disk.flat_path) == disk.capacity
    # The descriptor is a text VMDK naming the flat extent, so qemu-img and friends can open it.
    descriptor = Path(disk.local_path).read_text()
    assert os.path.basename(disk.flat_path) in descriptor
    # Writes to the flat file are real: what is written is read back.
    with open(disk.flat_path, "r+b") as f:
        f.seek(4096)
        f.write(b"zvr" * 100)
    with open(disk.flat_path, "rb") as f:
        f.seek(4096)
        assert f.read(300) == b"zvr" * 100


def test_wrong_password_is_refused(two_sites):
    sim = two_sites.protected
    with pytest.raises(AuthenticationError, match="check the user name and password"):
        VCenter(VCenterConfig(sim.url, sim.username, sim.password + "x"))


def test_unreachable_and_malformed_urls():
    with pytest.raises(ConfigError, match="http:// or https://"):
        VCenter(VCenterConfig("ftp://vc.example/sdk", "u", "p"))
    with pytest.raises(TransientError, match="cannot be reached"):
        VCenter(VCenterConfig("http://127.0.0.1:9/sdk", "u", "p", timeout=2))


def test_config_repr_hides_password():
    assert "s3cret" not in repr(VCenterConfig("http://h/sdk", "u", "s3cret"))


def test_extension_register_find_update_unregister(vcsim_site, vcenter_config):
    key = "com.zvr.vsphere.plugin"
    with VCenter(vcenter_config(vcsim_site)) as vc:
        em = vc.content.extensionManager
        assert em.FindExtension(key) is None
        ext = vim.Extension(
            key=key, version="1.0.0", company="ZVR",
            description=vim.Description(label="ZVR DR", summary="Disaster recovery plugin"),
            lastHeartbeatTime=datetime.now(UTC),
            client=[vim.ExtensionClientInfo(version="1.0.0", company="ZVR", type="vsphere-client-remote",
                                            url="https://127.0.0.1:9080/plugin/plugin.json",
                                            description=vim.Description(label="ZVR", summary="plugin"))],
        )
        em.RegisterExtension(ext)
        found = em.FindExtension(key)
        assert found is not None and found.version == "1.0.0"
        assert found.client[0].url == "https://127.0.0.1:9080/plugin/plugin.json"
        assert key in [e.key for e in em.extensionList]
        with pytest.raises(vmodl.fault.InvalidArgument):
            em.RegisterExtension(ext)  # registering the same key twice is refused

        ext.version = "1.1.0"
        em.UpdateExtension(ext)
        assert em.FindExtension(key).version == "1.1.0"

        em.UnregisterExtension(key)
        assert em.FindExtension(key) is None
        assert key not in [e.key for e in em.extensionList]
        with pytest.raises(vim.fault.NotFound):
            em.UnregisterExtension(key)
