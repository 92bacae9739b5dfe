"""The ZVM's copy of a real (simulated) vCenter inventory: the API lists it, and vCenter's PropertyCollector
updates keep it current without re-reading it."""

from __future__ import annotations

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from tests.zvm.fakes import ApiClient
from zvm.lab.vcsim import VcsimSpec
from zvm.vcenter import VCenter, VCenterConfig


@pytest.fixture(scope="module")
def sim(start_vcsim):
    return start_vcsim("zvm-inventory", VcsimSpec(hosts_per_cluster=2, vms_per_pool=3, datastores=2, portgroups=2))


@pytest.fixture
def vc(sim):
    with VCenter(VCenterConfig(sim.url, sim.username, sim.password)) as conn:
        yield conn


@pytest.fixture
def zvm_app(make_app, sim):
    app = make_app(vcenter_url=sim.url, vcenter_username=sim.username, vcenter_password=sim.password,
                   vcenter_verify="false")
    yield app
    app.extensions["zvm"].inventory.reset()


def wait_until(sync, condition, rounds: int = 20):
    """Apply vCenter's updates (each round blocks until vCenter reports one) until ``condition()``."""
    for _ in range(rounds):
        if condition():
            return
        sync.sync_once(max_wait=10)
    assert condition()


def test_virtualization_sites_list_the_vcsim_inventory(zvm_app, vc):
    zvm = zvm_app.extensions["zvm"]
    zvm.inventory.sync_once()
    api = ApiClient.login(zvm_app)
    site = api.get("/localsite").json
    assert site["VCenterUuid"] == vc.about.instanceUuid and site["VCenterUrl"].endswith("/sdk")
    sid = site["SiteIdentifier"]
    truth = vc.inventory()
    hosts = api.get(f"/virtualizationsites/{sid}/hosts").json
    assert sorted(h["VirtualizationHostName"] for h in hosts) == sorted(h.name for h in truth.hosts.values())
    assert all(h["ClusterIdentifier"] in truth.clusters for h in hosts)
    assert {d["DatastoreName"] for d in api.get(f"/virtualizationsites/{sid}/datastores").json} == {
        d.name for d in truth.datastores.values()}
    assert {n["NetworkIdentifier"] for n in api.get(f"/virtualizationsites/{sid}/networks").json} == set(truth.networks)
    vms = api.get(f"/virtualizationsites/{sid}/vms").json
    assert sorted(v["VmName"] for v in vms) == sorted(v.name for v in truth.vms.values())
    one = next(v for v in vms if v["VmIdentifier"] == next(iter(truth.vms)))
    disk = truth.vms[one["VmIdentifier"]].disks[0]
    assert one["Disks"][0]["FileName"] == disk.file_name and one["Disks"][0]["CapacityInBytes"] == 64 << 20
    assert one["Disks"][0]["DatastoreIdentifier"] == disk.datastore
    folders = api.get(f"/virtualizationsites/{sid}/folders").json
    assert "/DC0/vm" in {f["Path"] for f in folders}


def test_changes_arrive_as_property_collector_updates(zvm_app, vc):
    zvm = zvm_app.extensions["zvm"]
    sync = zvm.inventory
    sync.sync_once()
    api = ApiClient.login(zvm_app)
    sid = api.get("/localsite").json["SiteIdentifier"]

    def vm_names():
        return {v["VmName"]: v for v in api.get(f"/virtualizationsites/{sid}/vms").json}

    content = vc.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    first, second = sorted(view.view, key=lambda v: v.name)[:2]
    view.Destroy()
    WaitForTask(first.Rename_Task("renamed-by-admin"))
    WaitForTask(second.PowerOffVM_Task())
    wait_until(sync, lambda: "renamed-by-admin" in vm_names()
               and vm_names()[second.name]["PowerState"] == "poweredOff")

    folder = first.parent
    pool = first.resourcePool
    spec = vim.vm.ConfigSpec(name="created-later", numCPUs=1, memoryMB=128,
                             files=vim.vm.FileInfo(vmPathName="[LocalDS_0]"))
    WaitForTask(folder.CreateVM_Task(config=spec, pool=pool))
    wait_until(sync, lambda: "created-later" in vm_names())
    created = vm_names()["created-later"]
    assert created["FolderIdentifier"] == folder._moId

    WaitForTask(second.Destroy_Task())
    gone = second._moId
    wait_until(sync, lambda: gone not in {v["VmIdentifier"] for v in vm_names().values()})
    assert sync.full_loads == 1 and sync.updates >= 3  # never re-read: only updates after the first load


def test_an_update_whose_database_write_failed_is_applied_on_the_next_round(zvm_app, vc, monkeypatch):
    # The watch consumes vCenter's update before the rows are written; if that write fails, the next round
    # must apply the watch's view again rather than wait for vCenter's next change (which may never come).
    import zvm.inventory as inventory

    zvm = zvm_app.extensions["zvm"]
    sync = zvm.inventory
    sync.sync_once()
    api = ApiClient.login(zvm_app)
    sid = api.get("/localsite").json["SiteIdentifier"]
    content = vc.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    vm = sorted(view.view, key=lambda v: v.name)[0]
    view.Destroy()

    real = inventory.apply_changes
    calls = []

    def failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(inventory, "apply_changes", failing_once)
    WaitForTask(vm.Rename_Task("renamed-while-db-failed"))
    with pytest.raises(RuntimeError, match="database is locked"):
        for _ in range(20):
            sync.sync_once(max_wait=10)
    # vCenter reports nothing new now: the next round still brings the rename in
    assert sync.sync_once(max_wait=1) is True
    names = {v["VmName"] for v in api.get(f"/virtualizationsites/{sid}/vms").json}
    assert "renamed-while-db-failed" in names


def test_a_half_created_vm_without_a_name_does_not_break_the_inventory():
    from zvm.inventory import vm_row

    row = vm_row({"moid": "vm-99", "name": None, "disks": []})
    assert row["name"] == "" and row["moid"] == "vm-99"
