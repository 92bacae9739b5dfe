"""The vCenter inventory kept current by PropertyCollector updates (WaitForUpdatesEx), not by polling.

``InventoryWatcher`` creates its own PropertyCollector with one filter over a container view of the
inventory types it needs. The first ``poll`` returns every object (the full load); each later one blocks
in vCenter until something changes (or ``max_wait`` passes) and returns only what changed. The watcher
keeps a mirror of the properties and builds the same plain ``Inventory`` as zvm.vcenter.inventory from it.

Contract: ``poll(max_wait) -> bool`` is True when the mirror changed; it raises ``TransientError`` when
vCenter stops answering (the caller opens a new watcher, which starts with a full load again).
"""

from __future__ import annotations

import threading

from pyVmomi import vim, vmodl
from pyVmomi.VmomiSupport import ManagedObject

from zvm.datastore_paths import split_datastore_path
from zvm.errors import TransientError
from zvm.vcenter.inventory import (
    Cluster,
    Datacenter,
    Datastore,
    Disk,
    Folder,
    Host,
    Inventory,
    Network,
    VirtualMachine,
)

PC = vmodl.query.PropertyCollector

WATCHED: dict[type, list[str]] = {
    vim.Datacenter: ["name", "parent"],
    vim.Folder: ["name", "parent", "childType"],
    vim.ComputeResource: ["name", "parent", "host"],  # clusters too (a subtype)
    vim.HostSystem: ["name", "parent", "runtime.connectionState", "runtime.powerState", "datastore", "network"],
    vim.Datastore: ["name", "summary"],
    vim.Network: ["name"],  # port groups too
    vim.VirtualMachine: ["name", "config.uuid", "config.instanceUuid", "config.hardware.device", "runtime.host",
                         "runtime.powerState", "parent", "network"],
}


def _plain(value):
    """Managed object references -> moids; everything else as is."""
    if isinstance(value, ManagedObject):
        return value._moId
    if isinstance(value, list) and value and isinstance(value[0], ManagedObject):
        return [v._moId for v in value]
    return value


class InventoryWatcher:
    def __init__(self, vc, max_objects: int = 5000):
        self.vc = vc
        self.version = ""
        self.max_objects = max_objects
        self.objects: dict[str, tuple[str, dict]] = {}  # moid -> (type name, properties)
        self._lock = threading.Lock()
        content = vc.content
        try:
            self._view = content.viewManager.CreateContainerView(content.rootFolder, list(WATCHED), True)
            self._pc = content.propertyCollector.CreatePropertyCollector()
            traversal = PC.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
            spec = PC.FilterSpec(
                objectSet=[PC.ObjectSpec(obj=self._view, skip=True, selectSet=[traversal])],
                propSet=[PC.PropertySpec(type=t, pathSet=props) for t, props in WATCHED.items()])
            self._pc.CreateFilter(spec, partialUpdates=False)
        except vmodl.MethodFault as exc:
            raise TransientError(f"watching the inventory of {vc.config.url} failed: {exc.msg}") from exc

    def poll(self, max_wait: float = 0) -> bool:
        """Apply the next updates (waiting up to ``max_wait`` s for one); True if anything changed."""
        changed = False
        options = PC.WaitOptions(maxWaitSeconds=max(0, int(max_wait)), maxObjectUpdates=self.max_objects)
        while True:
            try:
                update = self._pc.WaitForUpdatesEx(self.version, options)
            except vmodl.MethodFault as exc:
                raise TransientError(f"inventory updates from {self.vc.config.url} stopped: {exc.msg}") from exc
            except OSError as exc:
                raise TransientError(f"vCenter {self.vc.config.url} stopped answering: {exc}") from exc
            if update is None:
                return changed
            with self._lock:
                for filter_update in update.filterSet or []:
                    for obj in filter_update.objectSet or []:
                        self._apply(obj)
                        changed = True
                self.version = update.version
            if not update.truncated:
                return changed
            options = PC.WaitOptions(maxWaitSeconds=0, maxObjectUpdates=self.max_objects)

    def _apply(self, obj) -> None:
        moid = obj.obj._moId
        if obj.kind == "leave":
            self.objects.pop(moid, None)
            return
        kind = type(obj.obj).__name__.rsplit(".", 1)[-1]
        props = {} if obj.kind == "enter" else dict(self.objects.get(moid, (kind, {}))[1])
        for change in obj.changeSet or []:
            if change.op in ("remove", "indirectRemove"):
                props.pop(change.name, None)
            else:
                props[change.name] = _plain(change.val)
        self.objects[moid] = (kind, props)

    def cancel(self) -> None:
        """Make a ``poll`` blocked in another thread return (used to stop the watcher promptly)."""
        try:
            self._pc.CancelWaitForUpdates()
        except (vmodl.MethodFault, OSError):
            pass

    def close(self) -> None:
        for fn in (lambda: self._pc.DestroyPropertyCollector(), lambda: self._view.Destroy()):
            try:
                fn()
            except (vmodl.MethodFault, OSError):
                pass

    # --- the mirror as plain data -----------------------------------------------------------------------

    def inventory(self, vcenter_uuid: str = "") -> Inventory:
        with self._lock:
            return build_inventory(self.objects, vcenter_uuid or (self.vc.about.instanceUuid or ""))


def build_inventory(objects: dict[str, tuple[str, dict]], vcenter_uuid: str) -> Inventory:
    inv = Inventory(vcenter_uuid=vcenter_uuid)

    def datacenter_of(moid: str | None) -> str:
        seen = 0
        while moid is not None and moid in objects and seen < 64:
            kind, props = objects[moid]
            if kind == "Datacenter":
                return moid
            moid, seen = props.get("parent"), seen + 1
        return ""

    for moid, (kind, p) in objects.items():
        if kind == "Datacenter":
            inv.datacenters[moid] = Datacenter(moid=moid, name=p.get("name", ""))
        elif kind == "ClusterComputeResource":
            inv.clusters[moid] = Cluster(moid=moid, name=p.get("name", ""), datacenter=datacenter_of(moid),
                                         hosts=list(p.get("host") or []))
        elif kind == "Network" or kind.endswith("Portgroup") or kind == "OpaqueNetwork":
            inv.networks[moid] = Network(moid=moid, name=p.get("name", ""), kind=kind)
        elif kind == "Datastore":
            s = p.get("summary")
            inv.datastores[moid] = Datastore(
                moid=moid, name=p.get("name", ""), type=getattr(s, "type", "") or "",
                capacity=int(getattr(s, "capacity", 0) or 0), free_space=int(getattr(s, "freeSpace", 0) or 0),
                url=getattr(s, "url", "") or "", local_path=None)

    for moid, (kind, p) in objects.items():
        if kind == "HostSystem":
            parent = p.get("parent")
            cluster = parent if parent in inv.clusters else None
            inv.hosts[moid] = Host(
                moid=moid, name=p.get("name", ""), cluster=cluster, datacenter=datacenter_of(moid),
                connection_state=str(p.get("runtime.connectionState", "")),
                power_state=str(p.get("runtime.powerState", "")),
                datastores=list(p.get("datastore") or []), networks=list(p.get("network") or []))
        elif kind == "Folder" and "VirtualMachine" in (p.get("childType") or []):
            inv.folders[moid] = Folder(moid=moid, name=p.get("name", ""), parent=None, path="")

    dc_names = {moid: dc.name for moid, dc in inv.datacenters.items()}
    for moid, folder in inv.folders.items():
        parent = objects[moid][1].get("parent")
        folder.parent = parent if parent in inv.folders else None
        parts, node, depth = [], moid, 0
        while node is not None and node in objects and depth < 64:
            kind, props = objects[node]
            if kind == "Datacenter":
                parts.append(dc_names.get(node, ""))
                break
            parts.append(props.get("name", ""))
            node, depth = props.get("parent"), depth + 1
        folder.path = "/" + "/".join(reversed(parts))

    ds_by_name = {d.name: d.moid for d in inv.datastores.values()}
    for moid, (kind, p) in objects.items():
        if kind != "VirtualMachine":
            continue
        disks = []
        for dev in p.get("config.hardware.device") or []:
            if not isinstance(dev, vim.vm.device.VirtualDisk):
                continue
            file_name = getattr(dev.backing, "fileName", "") or ""
            ds_name, _rel = split_datastore_path(file_name)
            capacity = int(getattr(dev, "capacityInBytes", 0) or (dev.capacityInKB or 0) * 1024)
            disks.append(Disk(key=dev.key, label=dev.deviceInfo.label if dev.deviceInfo else "",
                              file_name=file_name, datastore=ds_by_name.get(ds_name or ""), capacity=capacity,
                              uuid=getattr(dev.backing, "uuid", None), local_path=None, flat_path=None))
        inv.vms[moid] = VirtualMachine(
            moid=moid, name=p.get("name", ""), uuid=p.get("config.uuid") or "",
            instance_uuid=p.get("config.instanceUuid") or "", host=p.get("runtime.host"),
            power_state=str(p.get("runtime.powerState", "")), folder=p.get("parent"),
            networks=list(p.get("network") or []), disks=disks)
    return inv
