"""A snapshot of a vCenter's inventory: datacenters, clusters, hosts, datastores, networks, VMs and disks.

Read with one PropertyCollector call per object type over a container view, so a large vCenter costs a few
round trips, not one per object. The result is plain data (dataclasses keyed by managed object id), which the
rest of the ZVM uses without importing pyVmomi.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from pyVmomi import vim, vmodl

from zvm.datastore_paths import split_datastore_path
from zvm.errors import TransientError


@dataclass
class Datacenter:
    moid: str
    name: str


@dataclass
class Cluster:
    moid: str
    name: str
    datacenter: str
    hosts: list[str] = field(default_factory=list)


@dataclass
class Host:
    moid: str
    name: str
    cluster: str | None
    datacenter: str
    connection_state: str
    power_state: str
    datastores: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)


@dataclass
class Datastore:
    moid: str
    name: str
    type: str
    capacity: int
    free_space: int
    url: str
    local_path: str | None
    """The directory behind the datastore when it is reachable as a file system from here (vcsim)."""


@dataclass
class Network:
    moid: str
    name: str
    kind: str  # Network, DistributedVirtualPortgroup, OpaqueNetwork


@dataclass
class Folder:
    moid: str
    name: str
    parent: str | None  # the parent folder's moid (None under a datacenter)
    path: str  # "/DC0/vm/Finance"


@dataclass
class Disk:
    key: int
    label: str
    file_name: str  # datastore path: "[ds] dir/disk.vmdk"
    datastore: str | None
    capacity: int  # bytes
    uuid: str | None
    local_path: str | None  # the descriptor file, when reachable
    flat_path: str | None  # the flat extent holding the bytes, when reachable


@dataclass
class VirtualMachine:
    moid: str
    name: str
    uuid: str
    instance_uuid: str
    host: str | None
    power_state: str
    folder: str | None
    networks: list[str] = field(default_factory=list)
    disks: list[Disk] = field(default_factory=list)


@dataclass
class Inventory:
    vcenter_uuid: str
    datacenters: dict[str, Datacenter] = field(default_factory=dict)
    clusters: dict[str, Cluster] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)
    datastores: dict[str, Datastore] = field(default_factory=dict)
    networks: dict[str, Network] = field(default_factory=dict)
    folders: dict[str, Folder] = field(default_factory=dict)
    vms: dict[str, VirtualMachine] = field(default_factory=dict)

    def vm_by_name(self, name: str) -> VirtualMachine:
        for vm in self.vms.values():
            if vm.name == name:
                return vm
        raise KeyError(name)

    def to_dict(self) -> dict:
        return asdict(self)


def collect_properties(vc, vimtype, props: list[str]) -> list[tuple[str, object, dict]]:
    content = vc.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [vimtype], True)
    try:
        traversal = vmodl.query.PropertyCollector.TraversalSpec(
            name="view", path="view", skip=False, type=vim.view.ContainerView)
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=view, skip=True, selectSet=[traversal])],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vimtype, pathSet=props)],
        )
        pc = content.propertyCollector
        out = []
        result = pc.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions())
        while result:
            for obj in result.objects:
                values = {p.name: p.val for p in (obj.propSet or [])}
                out.append((obj.obj._moId, obj.obj, values))
            if not result.token:
                break
            result = pc.ContinueRetrievePropertiesEx(result.token)
        return out
    finally:
        view.Destroy()


def _datacenter_of(obj) -> str | None:
    node = obj
    while node is not None:
        if isinstance(node, vim.Datacenter):
            return node._moId
        node = getattr(node, "parent", None)
    return None


def _local_path(info, url: str) -> str | None:
    path = getattr(info, "path", None) if isinstance(info, vim.host.LocalDatastoreInfo) else None
    if not path and url.startswith("ds://"):
        path = url[len("ds://"):]
    if path and os.path.isdir(path):
        return path
    return None


def _vm_folders(vc, inv: Inventory) -> dict[str, Folder]:
    """Folders that can hold VMs, with their path from the datacenter ("/DC0/vm/Finance")."""
    raw = {moid: (p["name"], p.get("parent"), list(p.get("childType") or []))
           for moid, _obj, p in collect_properties(vc, vim.Folder, ["name", "parent", "childType"])}
    dc_names = {moid: dc.name for moid, dc in inv.datacenters.items()}

    def path(moid: str) -> str:
        parts = []
        node: str | None = moid
        while node is not None and node in raw:
            name, parent, _ = raw[node]
            parts.append(name)
            pid = parent._moId if parent is not None else None
            if pid in dc_names:
                parts.append(dc_names[pid])
                break
            node = pid
        return "/" + "/".join(reversed(parts))

    out = {}
    for moid, (name, parent, child_types) in raw.items():
        if "VirtualMachine" not in child_types:
            continue
        pid = parent._moId if parent is not None else None
        out[moid] = Folder(moid=moid, name=name, parent=pid if pid in raw else None, path=path(moid))
    return out


def read_inventory(vc) -> Inventory:
    try:
        return _read(vc)
    except vmodl.MethodFault as exc:
        raise TransientError(f"reading the inventory of {vc.config.url} failed: {exc.msg}") from exc


def _read(vc) -> Inventory:
    inv = Inventory(vcenter_uuid=vc.about.instanceUuid or "")
    for moid, _obj, p in collect_properties(vc, vim.Datacenter, ["name"]):
        inv.datacenters[moid] = Datacenter(moid=moid, name=p["name"])

    host_cluster: dict[str, str] = {}
    for moid, obj, p in collect_properties(vc, vim.ClusterComputeResource, ["name", "host"]):
        hosts = [h._moId for h in p.get("host", [])]
        inv.clusters[moid] = Cluster(moid=moid, name=p["name"], datacenter=_datacenter_of(obj) or "",
                                     hosts=hosts)
        for h in hosts:
            host_cluster[h] = moid

    for moid, obj, p in collect_properties(vc, vim.HostSystem, ["name", "runtime.connectionState", "runtime.powerState",
                                                     "datastore", "network"]):
        inv.hosts[moid] = Host(
            moid=moid, name=p["name"], cluster=host_cluster.get(moid), datacenter=_datacenter_of(obj) or "",
            connection_state=str(p.get("runtime.connectionState", "")),
            power_state=str(p.get("runtime.powerState", "")),
            datastores=[d._moId for d in p.get("datastore", [])],
            networks=[n._moId for n in p.get("network", [])],
        )

    ds_by_name: dict[str, Datastore] = {}
    for moid, _obj, p in collect_properties(vc, vim.Datastore, ["name", "summary", "info"]):
        summary = p["summary"]
        url = summary.url or ""
        ds = Datastore(moid=moid, name=p["name"], type=summary.type or "", capacity=int(summary.capacity or 0),
                       free_space=int(summary.freeSpace or 0), url=url,
                       local_path=_local_path(p.get("info"), url))
        inv.datastores[moid] = ds
        ds_by_name[ds.name] = ds

    for moid, obj, p in collect_properties(vc, vim.Network, ["name"]):
        inv.networks[moid] = Network(moid=moid, name=p["name"], kind=type(obj).__name__.rsplit(".", 1)[-1])

    inv.folders = _vm_folders(vc, inv)

    vm_props = ["name", "config.uuid", "config.instanceUuid", "config.hardware.device", "runtime.host",
                "runtime.powerState", "parent", "network"]
    for moid, _obj, p in collect_properties(vc, vim.VirtualMachine, vm_props):
        disks = []
        for dev in p.get("config.hardware.device", []) or []:
            if not isinstance(dev, vim.vm.device.VirtualDisk):
                continue
            file_name = getattr(dev.backing, "fileName", "") or ""
            ds_name, rel = split_datastore_path(file_name)
            ds = ds_by_name.get(ds_name or "")
            local = flat = None
            if ds and ds.local_path:
                local = os.path.join(ds.local_path, rel)
                candidate = local[: -len(".vmdk")] + "-flat.vmdk" if local.endswith(".vmdk") else local
                flat = candidate if os.path.exists(candidate) else (local if os.path.exists(local) else None)
            capacity = int(getattr(dev, "capacityInBytes", 0) or (dev.capacityInKB or 0) * 1024)
            disks.append(Disk(key=dev.key, label=dev.deviceInfo.label if dev.deviceInfo else "",
                              file_name=file_name, datastore=ds.moid if ds else None, capacity=capacity,
                              uuid=getattr(dev.backing, "uuid", None), local_path=local, flat_path=flat))
        host = p.get("runtime.host")
        parent = p.get("parent")
        inv.vms[moid] = VirtualMachine(
            moid=moid, name=p["name"], uuid=p.get("config.uuid", ""),
            instance_uuid=p.get("config.instanceUuid", ""),
            host=host._moId if host is not None else None,
            power_state=str(p.get("runtime.powerState", "")),
            folder=parent._moId if parent is not None else None,
            networks=[n._moId for n in p.get("network", [])], disks=disks,
        )
    return inv
