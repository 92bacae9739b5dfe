"""The vCenter side of recovery operations: recovery VMs created, re-IPed, powered on and off, deleted; the
source VMs shut down (gracefully, or forced after a timeout), powered on again, or removed from the
inventory with their disks kept (they become the replica of reverse protection); a deleted VPG's replica
volumes and journal removed from the datastore (``delete_datastore_file``).

A recovery VM is created on the VPG's recovery host, in its folder (or the datacenter's VM folder), with
its configuration files in a directory of its own on the recovery datastore (vCenter picks the name), one
NIC per NIC setting on the chosen network, and its disks: either existing files (the replica volumes,
``"[ds] zvr/<vpg>/<volume>.img"``) or new placeholders in its directory (a failover test's VM, whose disks
are the recovery VRA's point-in-time images: the export each disk uses is in the VM's ``extraConfig``,
``zvr.disk<N>.nbd``). ``zvr.operation`` in the extraConfig names the operation that made the VM, so that
an operation resumed after a restart finds the VMs it created before it could record them.

Waiting for tasks uses pyVim's WaitForTask (PropertyCollector updates, not polling). vmodl faults become
the product's errors here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from zvm.datastore_paths import split_datastore_path
from zvm.errors import ConflictError, NotFoundError, PermanentError, TransientError
from zvm.vcenter.inventory import collect_properties
from zvm.vcenter.refs import datacenter_of, managed_object

OPERATION_KEY = "zvr.operation"


@dataclass
class IpSettings:
    """A static IP for one NIC (re-IP through a guest customization spec)."""

    ip_address: str
    subnet_mask: str
    gateway: str = ""
    dns_servers: list[str] = field(default_factory=list)


@dataclass
class RecoveryDisk:
    capacity: int  # bytes
    file_name: str | None = None  # an existing disk ("[ds] path"); None: a new placeholder in the VM's folder


@dataclass
class RecoveryVmSpec:
    name: str
    host: str  # moid
    datastore: str  # moid
    folder: str | None  # moid; None: the datacenter's VM folder
    networks: list[str]  # one NIC per network moid (none: an isolated VM)
    disks: list[RecoveryDisk]
    extra_config: dict[str, str] = field(default_factory=dict)
    annotation: str = ""
    memory_mb: int = 256
    cpus: int = 1


def _wait(task, what: str) -> None:
    try:
        WaitForTask(task)
    except vim.fault.DuplicateName as exc:
        raise ConflictError(f"{what}: a VM of that name exists already") from exc
    except vim.fault.InvalidPowerState as exc:
        raise ConflictError(f"{what}: the VM is not in the power state this needs ({exc.msg})") from exc
    except vmodl.MethodFault as exc:
        raise PermanentError(f"{what} failed in vCenter: {exc.msg}") from exc


def _nic(network, key: int):
    if isinstance(network, vim.dvs.DistributedVirtualPortgroup):
        backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
            port=vim.dvs.PortConnection(switchUuid=network.config.distributedVirtualSwitch.uuid,
                                        portgroupKey=network.key))
        connect = vim.vm.device.VirtualDevice.ConnectInfo(startConnected=True, connected=True)
    else:
        backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=network.name, network=network)
        connect = vim.vm.device.VirtualDevice.ConnectInfo(startConnected=True, connected=True)
    card = vim.vm.device.VirtualVmxnet3(key=key, backing=backing, connectable=connect)
    return vim.vm.device.VirtualDeviceSpec(operation="add", device=card)


def create_vm(vc, spec: RecoveryVmSpec) -> str:
    """Create a recovery VM (powered off); returns its moid."""
    host = managed_object(vc, vim.HostSystem, spec.host, "host")
    datastore = next((d for d in host.datastore if d._moId == spec.datastore), None)
    if datastore is None:
        raise NotFoundError(f"host {host.name} has no datastore {spec.datastore!r}: choose one it is connected to")
    networks = {n._moId: n for n in host.network}
    folder = (managed_object(vc, vim.Folder, spec.folder, "folder") if spec.folder else datacenter_of(host).vmFolder)
    pool = host.parent.resourcePool
    devices = [vim.vm.device.VirtualDeviceSpec(
        operation="add", device=vim.vm.device.ParaVirtualSCSIController(key=-100, busNumber=0,
                                                                         sharedBus="noSharing"))]
    for i, disk in enumerate(spec.disks):
        backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(diskMode="persistent", thinProvisioned=True,
                                                                fileName=disk.file_name or "")
        device = vim.vm.device.VirtualDisk(key=-200 - i, controllerKey=-100, unitNumber=i if i < 7 else i + 1,
                                           capacityInKB=max(1, disk.capacity // 1024), backing=backing)
        devices.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=device,
                                                       fileOperation=None if disk.file_name else "create"))
    for i, moid in enumerate(spec.networks):
        if moid not in networks:
            raise NotFoundError(f"host {host.name} is not on network {moid!r}: choose one of its networks")
        devices.append(_nic(networks[moid], -300 - i))
    config = vim.vm.ConfigSpec(
        name=spec.name, guestId="otherLinux64Guest", numCPUs=spec.cpus, memoryMB=spec.memory_mb,
        annotation=spec.annotation, files=vim.vm.FileInfo(vmPathName=f"[{datastore.name}]"),
        deviceChange=devices,
        extraConfig=[vim.option.OptionValue(key=k, value=v) for k, v in spec.extra_config.items()])
    try:
        task = folder.CreateVM_Task(config=config, pool=pool, host=host)
    except vmodl.MethodFault as exc:
        raise PermanentError(f"vCenter refused to create VM {spec.name}: {exc.msg}") from exc
    _wait(task, f"creating VM {spec.name}")
    return task.info.result._moId


def find_vms(vc, key: str, value: str) -> dict[str, str]:
    """{name: moid} of the VMs whose extraConfig has ``key`` = ``value`` (one PropertyCollector read)."""
    out = {}
    for moid, _obj, props in collect_properties(vc, vim.VirtualMachine, ["name", "config.extraConfig"]):
        extra = {o.key: o.value for o in props.get("config.extraConfig") or []}
        if extra.get(key) == value:
            out[props["name"]] = moid
    return out


def vm_state(vc, moid: str) -> str | None:
    """The VM's power state, None when it does not exist."""
    vm = vim.VirtualMachine(moid, vc.si._stub)
    try:
        return str(vm.runtime.powerState)
    except vmodl.fault.ManagedObjectNotFound:
        return None


def power_on(vc, moid: str) -> bool:
    """Power the VM on; False if it was on already."""
    vm = managed_object(vc, vim.VirtualMachine, moid, "VM")
    if vm.runtime.powerState == "poweredOn":
        return False
    _wait(vm.PowerOnVM_Task(), f"powering on {vm.name}")
    return True


def power_off(vc, moid: str) -> bool:
    """Power the VM off at once; False if it was off already (or is gone)."""
    vm = vim.VirtualMachine(moid, vc.si._stub)
    try:
        if vm.runtime.powerState == "poweredOff":
            return False
        name = vm.name
    except vmodl.fault.ManagedObjectNotFound:
        return False
    _wait(vm.PowerOffVM_Task(), f"powering off {name}")
    return True


def shut_down(vc, moid: str, timeout: float, force: bool) -> str:
    """Shut the guest down and wait up to ``timeout`` s for the VM to be off; then power it off when
    ``force``. Returns how it ended: "off" (was off), "shutdown", "forced"; raises ConflictError when a
    graceful shutdown did not finish in time."""
    vm = managed_object(vc, vim.VirtualMachine, moid, "VM")
    if vm.runtime.powerState == "poweredOff":
        return "off"
    try:
        vm.ShutdownGuest()
    except (vim.fault.ToolsUnavailable, vim.fault.InvalidState, vmodl.fault.NotSupported):
        pass  # no guest tools: only a power off can do it
    except vmodl.MethodFault as exc:
        raise PermanentError(f"shutting down {vm.name} failed in vCenter: {exc.msg}") from exc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if vm.runtime.powerState == "poweredOff":
            return "shutdown"
        time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
    if vm.runtime.powerState == "poweredOff":
        return "shutdown"
    if not force:
        raise ConflictError(f"VM {vm.name} did not shut down within {timeout:.0f} s: shut it down by hand, or "
                            "use the forced shutdown policy")
    _wait(vm.PowerOffVM_Task(), f"powering off {vm.name}")
    return "forced"


def customize_ip(vc, moid: str, nics: list[IpSettings | None], hostname: str) -> None:
    """Re-IP through a guest customization spec (applied by vCenter at the next power on): a static IP for
    the NICs that have one, DHCP for the others."""
    vm = managed_object(vc, vim.VirtualMachine, moid, "VM")
    adapters = []
    for nic in nics:
        if nic is None:
            adapter = vim.vm.customization.IPSettings(ip=vim.vm.customization.DhcpIpGenerator())
        else:
            adapter = vim.vm.customization.IPSettings(
                ip=vim.vm.customization.FixedIp(ipAddress=nic.ip_address), subnetMask=nic.subnet_mask,
                gateway=[nic.gateway] if nic.gateway else [], dnsServerList=list(nic.dns_servers))
        adapters.append(vim.vm.customization.AdapterMapping(adapter=adapter))
    spec = vim.vm.customization.Specification(
        identity=vim.vm.customization.LinuxPrep(hostName=vim.vm.customization.FixedName(name=hostname[:63] or "vm"),
                                                domain="local"),
        globalIPSettings=vim.vm.customization.GlobalIPSettings(), nicSettingMap=adapters)
    _wait(vm.CustomizeVM_Task(spec=spec), f"customizing the IP settings of {vm.name}")


def set_extra_config(vc, moid: str, values: dict[str, str]) -> None:
    vm = managed_object(vc, vim.VirtualMachine, moid, "VM")
    spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=k, value=v) for k, v in values.items()])
    _wait(vm.ReconfigVM_Task(spec=spec), f"reconfiguring {vm.name}")


def extra_config(vc, moid: str) -> dict[str, str]:
    """The VM's extraConfig (a key set twice: its last value)."""
    vm = managed_object(vc, vim.VirtualMachine, moid, "VM")
    return {o.key: o.value for o in vm.config.extraConfig or []}


def delete_vm(vc, moid: str, keep_disks: bool = True) -> bool:
    """Power the VM off and delete it. With ``keep_disks``, the disks that live outside the VM's own folder
    (the replica volumes) are detached first, so deleting the VM does not delete them; its placeholders
    go with it. False if the VM is gone already."""
    vm = vim.VirtualMachine(moid, vc.si._stub)
    try:
        name = vm.name
        folder = vm.config.files.vmPathName.rsplit("/", 1)[0] + "/"
        if vm.runtime.powerState != "poweredOff":
            _wait(vm.PowerOffVM_Task(), f"powering off {name}")
        if keep_disks:
            detach = [vim.vm.device.VirtualDeviceSpec(operation="remove", device=d)
                      for d in vm.config.hardware.device
                      if isinstance(d, vim.vm.device.VirtualDisk)
                      and not getattr(d.backing, "fileName", "").startswith(folder)]
            if detach:
                _wait(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=detach)), f"detaching the disks of {name}")
    except vmodl.fault.ManagedObjectNotFound:
        return False
    _wait(vm.Destroy_Task(), f"deleting {name}")
    return True


def delete_datastore_file(vc, path: str) -> bool:
    """Delete a file, or a directory with everything in it, given as "[datastore] dir/file" (vCenter's
    FileManager, so the datastore's own locking applies); False when it is not there."""
    name, rel = split_datastore_path(path)
    if not name or not rel.strip("/"):
        raise PermanentError(f"{path!r} is not a file of a datastore: refusing to delete it")
    datacenter = next((dc for dc in vc.content.rootFolder.childEntity if isinstance(dc, vim.Datacenter)
                       and any(ds.name == name for ds in dc.datastore)), None)
    if datacenter is None:
        raise NotFoundError(f"vCenter has no datastore {name!r} (deleting {path})")
    try:
        task = vc.content.fileManager.DeleteDatastoreFile_Task(name=path, datacenter=datacenter)
        # polled for info.state and info.error only: the whole TaskInfo names the file manager as its entity,
        # which pyVmomi refuses to read (not a ManagedEntity), and so does WaitForTask
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=task)],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vim.Task, pathSet=["info.state", "info.error"])])
        delay = 0.05
        while True:
            (content,) = vc.content.propertyCollector.RetrieveContents([spec])
            props = {p.name: p.val for p in content.propSet}
            if props.get("info.state") not in (vim.TaskInfo.State.queued, vim.TaskInfo.State.running):
                break
            time.sleep(delay)
            delay = min(1.0, delay * 2)
        if props.get("info.state") == vim.TaskInfo.State.error:
            raise props["info.error"]
    except vim.fault.FileNotFound:
        return False
    except vmodl.MethodFault as exc:
        raise PermanentError(f"deleting {path} failed in vCenter: {exc.msg}") from exc
    return True


def unregister_vm(vc, moid: str) -> bool:
    """Remove the VM from the inventory, its files kept; False if it is gone already."""
    vm = vim.VirtualMachine(moid, vc.si._stub)
    try:
        name = vm.name
        if vm.runtime.powerState != "poweredOff":
            _wait(vm.PowerOffVM_Task(), f"powering off {name}")
        vm.UnregisterVM()
    except vmodl.fault.ManagedObjectNotFound:
        return False
    except vmodl.MethodFault as exc:
        raise PermanentError(f"removing {name} from the inventory failed in vCenter: {exc.msg}") from exc
    return True


def vm_placement(vc, moid: str) -> dict | None:
    """Where a VM is: {"host", "folder", "networks", "power"} (moids), None when it does not exist."""
    vm = vim.VirtualMachine(moid, vc.si._stub)
    try:
        return {"host": vm.runtime.host._moId if vm.runtime.host else None,
                "folder": vm.parent._moId if vm.parent else None,
                "networks": [n._moId for n in vm.network or []], "power": str(vm.runtime.powerState)}
    except vmodl.fault.ManagedObjectNotFound:
        return None


def vm_guest_ip(vc, moid: str) -> str | None:
    vm = managed_object(vc, vim.VirtualMachine, moid, "VM")
    return vm.guest.ipAddress if vm.guest else None


def check_reachable(vc) -> None:
    """A cheap round trip: raises TransientError when vCenter does not answer."""
    try:
        vc.content.about.instanceUuid  # noqa: B018
    except (OSError, vmodl.MethodFault) as exc:
        raise TransientError(f"vCenter {vc.config.url} does not answer: {exc}") from exc
