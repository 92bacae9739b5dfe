"""VRA install and uninstall through the API against vcsim: OVF import to each host, Z-VRA-<host> VMs."""

from __future__ import annotations

import pytest
from pyVmomi import vim

from tests.zvm.fakes import ApiClient
from zvm import models as m
from zvm.enums import TaskState, VraStatus
from zvm.lab.vcsim import VcsimSpec
from zvm.vcenter import VCenter, VCenterConfig


@pytest.fixture(scope="module")
def sim(start_vcsim):
    return start_vcsim("zvm-vras", VcsimSpec(hosts_per_cluster=3, vms_per_pool=2, portgroups=1))


def vcenter_vms(sim) -> dict[str, vim.VirtualMachine]:
    with VCenter(VCenterConfig(sim.url, sim.username, sim.password)) as vc:
        content = vc.content
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        try:
            return {vm.name: (vm.runtime.host.name, vm.runtime.powerState, [n.name for n in vm.network],
                              {o.key: o.value for o in vm.config.extraConfig or []}) for vm in view.view}
        finally:
            view.Destroy()


def test_install_a_vra_on_every_host_then_uninstall(make_app, sim):
    app = make_app(vcenter_url=sim.url, vcenter_username=sim.username, vcenter_password=sim.password,
                   vcenter_verify="false", public_address="10.1.1.1")
    zvm = app.extensions["zvm"]
    zvm.inventory.sync_once()
    api = ApiClient.login(app)
    site = api.get("/localsite").json["SiteIdentifier"]
    hosts = api.get(f"/virtualizationsites/{site}/hosts").json
    tasks = {}
    for i, host in enumerate(hosts):
        body = {"HostIdentifier": host["HostIdentifier"], "DatastoreIdentifier": host["DatastoreIdentifiers"][0],
                "NetworkIdentifier": host["NetworkIdentifiers"][-1]}
        if i == 0:
            body["VraNetworkDataApi"] = {"VraIPConfigurationTypeApi": "Static", "VraIPAddress": "10.1.1.50",
                                         "SubnetMask": "255.255.255.0", "DefaultGateway": "10.1.1.254"}
        tasks[host["VirtualizationHostName"]] = api.post("/vras", body).json
    assert zvm.tasks.run_once() == len(hosts)
    for name, task in tasks.items():
        t = api.get(f"/tasks/{task}").json
        assert t["Status"] == {"State": TaskState.Completed, "Progress": 100}, t
        assert f"Z-VRA-{name} installed on {name}" in t["Step"]

    in_vcenter = vcenter_vms(sim)
    for host in hosts:
        name = f"Z-VRA-{host['VirtualizationHostName']}"
        placed_on, power, networks, props = in_vcenter[name]
        assert placed_on == host["VirtualizationHostName"] and power == "poweredOn"
        assert props["zvm_address"] == "10.1.1.1" and props["host_id"] == host["HostIdentifier"]
    first = f"Z-VRA-{hosts[0]['VirtualizationHostName']}"
    assert in_vcenter[first][3]["ip_mode"] == "static" and in_vcenter[first][3]["ip_address"] == "10.1.1.50"

    vras = api.get("/vras").json
    assert {v["State"] for v in vras} == {VraStatus.Installed} and len(vras) == len(hosts)
    static = next(v for v in vras if v["VraName"] == first)
    assert static["ControlAddress"] == "10.1.1.50:4005" and static["VmIdentifier"]
    # vCenter's updates bring the new VMs into the ZVM's inventory, where they are never protectable
    for _ in range(10):
        names = {v.name for v in m.InvVm.select()}
        if all(f"Z-VRA-{h['VirtualizationHostName']}" in names for h in hosts):
            break
        zvm.inventory.sync_once(max_wait=10)
    assert all(f"Z-VRA-{h['VirtualizationHostName']}" in names for h in hosts)
    listed = {v["VmName"] for v in api.get(f"/virtualizationsites/{site}/vms").json}
    assert listed and not any(name.startswith("Z-VRA-") for name in listed)

    # a second VRA on a host is refused; installing over a leftover VM of that name fails cleanly
    assert api.post("/vras", {"HostIdentifier": hosts[0]["HostIdentifier"],
                              "DatastoreIdentifier": hosts[0]["DatastoreIdentifiers"][0],
                              "NetworkIdentifier": hosts[0]["NetworkIdentifiers"][0]}).status == 409

    task = api.delete(f"/vras/{static['VraIdentifier']}").json
    zvm.tasks.run_once()
    assert api.get(f"/tasks/{task}").json["Status"]["State"] == TaskState.Completed
    assert first not in vcenter_vms(sim)
    assert api.get(f"/vras/{static['VraIdentifier']}").status == 404
    assert len(api.get("/vras").json) == len(hosts) - 1


def test_a_leftover_vm_of_the_same_name_fails_the_install_and_the_vra_can_be_removed(make_app, sim):
    app = make_app(name="second", vcenter_url=sim.url, vcenter_username=sim.username,
                   vcenter_password=sim.password, vcenter_verify="false")
    zvm = app.extensions["zvm"]
    zvm.inventory.sync_once()
    api = ApiClient.login(app)
    site = api.get("/localsite").json["SiteIdentifier"]
    host = api.get(f"/virtualizationsites/{site}/hosts").json[1]  # its Z-VRA is left from the test above
    task = api.post("/vras", {"HostIdentifier": host["HostIdentifier"],
                              "DatastoreIdentifier": host["DatastoreIdentifiers"][0],
                              "NetworkIdentifier": host["NetworkIdentifiers"][0]}).json
    zvm.tasks.run_once()
    t = api.get(f"/tasks/{task}").json
    assert t["Status"]["State"] == TaskState.Failed and t["Error"]["Code"] == "Conflict"
    assert f"a VM named Z-VRA-{host['VirtualizationHostName']} already" in t["Error"]["Message"]
    vra = api.get("/vras").json[0]
    assert vra["State"] == VraStatus.InstallationError
    api.delete(f"/vras/{vra['VraIdentifier']}")
    zvm.tasks.run_once()  # removes the VM of that name, whoever made it
    assert f"Z-VRA-{host['VirtualizationHostName']}" not in vcenter_vms(sim)
    assert m.Vra.select().count() == 0


def test_the_vra_package_is_an_ovf_with_a_stream_optimized_disk(tmp_path):
    import json
    import subprocess
    import xml.etree.ElementTree as ET

    from zvm.vra_package import ensure_package

    ovf = ensure_package(tmp_path)
    ns = {"ovf": "http://schemas.dmtf.org/ovf/envelope/1"}
    root = ET.parse(ovf).getroot()
    keys = {p.get(f"{{{ns['ovf']}}}key") for p in root.iterfind(".//ovf:ProductSection/ovf:Property", ns)}
    assert {"zvm_address", "ip_mode", "ip_address", "netmask", "gateway", "vra_id"} <= keys
    ref = root.find(".//ovf:References/ovf:File", ns)
    href = ref.get(f"{{{ns['ovf']}}}href")
    assert int(ref.get(f"{{{ns['ovf']}}}size")) == (ovf.parent / href).stat().st_size
    capacity = int(root.find(".//ovf:DiskSection/ovf:Disk", ns).get(f"{{{ns['ovf']}}}capacity"))  # MiB
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(ovf.parent / href)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "vmdk" and info["virtual-size"] == capacity << 20
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
    assert ensure_package(tmp_path) == ovf  # built once


def test_vra_package_built_by_several_installs_at_once_is_whole_for_each(tmp_path):
    """Installs that run at the same time (threads of one ZVM, or two ZVMs sharing a data directory) each
    get a whole package: one builds, the others wait, and no reader sees half a disk or descriptor."""
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from ovf.build import build_ova
    from zvm.vra_package import ensure_package

    others = [subprocess.Popen([sys.executable, "-c", "import sys; from pathlib import Path; "
                                "from zvm.vra_package import ensure_package; print(ensure_package(Path(sys.argv[1])))",
                                str(tmp_path)], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    whole = (build_ova() / "vra.ovf").read_bytes()  # the cached appliance build's descriptor
    torn: list[int] = []
    building = True

    def read_while_building() -> None:  # what a deploy reads meanwhile is absent or whole, never half
        descriptor = tmp_path / "vra-ovf" / "vra.ovf"
        while building:
            try:
                data = descriptor.read_bytes()
            except FileNotFoundError:
                continue
            if data != whole:
                torn.append(len(data))

    def rebuild(_) -> object:
        for _ in range(5):
            # as if built from other inputs: the next call links the package again
            (tmp_path / "vra-ovf" / ".built-from").unlink(missing_ok=True)
            path = ensure_package(tmp_path)
        return path

    with ThreadPoolExecutor(7) as pool:
        reader = pool.submit(read_while_building)
        try:
            paths = list(pool.map(rebuild, range(6)))
        finally:
            building = False
        reader.result()
    assert torn == []
    for proc in others:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        paths.append(type(paths[0])(out.strip()))
    assert len(set(paths)) == 1
    ovf = paths[0]
    assert ovf.read_bytes() == whole
    disks = [p for p in ovf.parent.iterdir() if p.suffix == ".vmdk"]
    assert len(disks) == 1
    # whole: qemu-img reads it through, and its content equals a disk built alone from scratch
    alone = ensure_package(tmp_path / "alone").parent / disks[0].name
    subprocess.run(["qemu-img", "check", "-q", str(disks[0])], check=True)
    same = subprocess.run(["qemu-img", "compare", "-q", str(disks[0]), str(alone)])
    assert same.returncode == 0
    assert [p.name for p in ovf.parent.iterdir() if p.name.startswith(".") and p.name not in (".build.lock", ".built-from")] == []


def test_protected_vm_counts_take_only_vpgs_protected_by_this_site(api):
    """Moids are per vCenter: the VMs of a VPG this site recovers carry the other vCenter's moids, which can
    equal local ones; they must not count as protected VMs on a local host (an uninstall was refused)."""
    local = m.Site.get(m.Site.is_local == True)  # noqa: E712 - peewee expression
    peer = m.Site.create(name="peer")
    vra = m.Vra.create(site=local, host_moid="host-0", host_name="esx0.lab", name="Z-VRA-esx0.lab",
                       state="Installed", datastore_moid="datastore-1", network_moid="network-1")
    recovered_here = m.Vpg.create(name="from peer", protected_site=peer, recovery_site=local)
    m.VpgVm.create(vpg=recovered_here, vm_moid="vm-0", name="peer's vm")  # vm-0 is also a local VM on host-0
    assert api.get(f"/vras/{vra.identifier}").json["ProtectedVmsCount"] == 0

    protected_here = m.Vpg.create(name="local", protected_site=local, recovery_site=peer)
    m.VpgVm.create(vpg=protected_here, vm_moid="vm-3", name="vm3")  # on host-0 (vm-i on host-(i % 3))
    assert api.get(f"/vras/{vra.identifier}").json["ProtectedVmsCount"] == 1
    assert [v["ProtectedVmsCount"] for v in api.get("/vras").json] == [1]
