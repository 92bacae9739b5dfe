"""Deploying an OVF to a host through vCenter (OvfManager.CreateImportSpec, ResourcePool.ImportVApp, the
HttpNfcLease upload), and removing the VM again. Used for the VRA appliance (Z-VRA-<host>).

``deploy_ovf`` places the VM on the given host, in the host's root resource pool and its datacenter's VM
folder, with its disks on the given datastore and every OVF network mapped to the given network; vApp
properties are passed as the import's property mapping. Waiting (lease ready, tasks) is done with
PropertyCollector updates, not by polling. vmodl faults become the product's errors here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import requests
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from zvm.errors import ConflictError, NotFoundError, PermanentError, TransientError
from zvm.vcenter.refs import datacenter_of, managed_object

PC = vmodl.query.PropertyCollector


def _wait_for_state(vc, obj, prop: str, done: set, timeout: float) -> object:
    """Block until ``obj.prop`` is one of ``done`` (PropertyCollector updates); returns the value."""
    pc = vc.content.propertyCollector.CreatePropertyCollector()
    try:
        spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=obj, skip=False)],
                             propSet=[PC.PropertySpec(type=type(obj), pathSet=[prop])])
        pc.CreateFilter(spec, partialUpdates=False)
        version = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            wait = max(1, min(30, int(deadline - time.monotonic())))
            update = pc.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=wait))
            if update is None:
                continue
            version = update.version
            for fs in update.filterSet or []:
                for o in fs.objectSet or []:
                    for change in o.changeSet or []:
                        if change.name == prop and change.val in done:
                            return change.val
        raise TransientError(f"{obj} did not reach {prop} in {sorted(map(str, done))} within {timeout} s")
    finally:
        pc.DestroyPropertyCollector()


def _task(task, what: str) -> None:
    try:
        WaitForTask(task)
    except vim.fault.DuplicateName as exc:
        raise ConflictError(f"{what}: a VM of that name exists already: remove it first") from exc
    except vmodl.MethodFault as exc:
        raise PermanentError(f"{what} failed in vCenter: {exc.msg}") from exc


def deploy_ovf(vc, ovf_path: str | os.PathLike, *, name: str, host: str, datastore: str, network: str,
               properties: dict[str, str] | None = None, power_on: bool = True,
               progress: Callable[[int, str], None] | None = None, timeout: float = 600) -> str:
    """Import the OVF as VM ``name`` on host ``host`` (moids throughout); returns the new VM's moid."""
    report = progress or (lambda pct, step: None)
    ovf_path = Path(ovf_path)
    descriptor = ovf_path.read_text()
    content = vc.content
    host_obj = managed_object(vc, vim.HostSystem, host, "host")
    # From the host's own lists: they carry the right managed object types (a port group is no Network).
    ds_obj = next((d for d in host_obj.datastore if d._moId == datastore), None)
    net_obj = next((n for n in host_obj.network if n._moId == network), None)
    if ds_obj is None or net_obj is None:
        raise NotFoundError(f"host {host_obj.name} has no {'datastore' if ds_obj is None else 'network'} "
                            f"{datastore if ds_obj is None else network!r}: choose one the host is connected to")
    pool = host_obj.parent.resourcePool
    folder = datacenter_of(host_obj).vmFolder
    try:
        parsed = content.ovfManager.ParseDescriptor(descriptor, vim.OvfManager.ParseDescriptorParams())
        ovf_networks = [n.name for n in (parsed.network or [])]
    except vmodl.MethodFault:
        ovf_networks = ["VRA Network"]  # simulators without ParseDescriptor: the name ovf/vra.ovf uses
    params = vim.OvfManager.CreateImportSpecParams(
        entityName=name, diskProvisioning="thin",
        networkMapping=[vim.OvfManager.NetworkMapping(name=n, network=net_obj) for n in ovf_networks],
        propertyMapping=[vim.KeyValue(key=k, value=str(v)) for k, v in (properties or {}).items()])
    report(5, f"Checking {ovf_path.name} for host {host_obj.name}")
    try:
        result = content.ovfManager.CreateImportSpec(descriptor, pool, ds_obj, params)
    except vmodl.MethodFault as exc:
        raise PermanentError(f"vCenter refused the OVF {ovf_path}: {exc.msg}") from exc
    if result.error:
        raise PermanentError(f"vCenter refused the OVF {ovf_path}: "
                             f"{'; '.join(e.localizedMessage or str(e.fault) for e in result.error)}")
    report(15, f"Creating VM {name}")
    try:
        lease = pool.ImportVApp(result.importSpec, folder, host_obj)
    except vim.fault.DuplicateName as exc:
        raise ConflictError(f"a VM named {name} exists already: remove it first") from exc
    except vmodl.MethodFault as exc:
        raise PermanentError(f"vCenter could not create {name}: {exc.msg}") from exc
    state = _wait_for_state(vc, lease, "state", {"ready", "error"}, timeout)
    if state == "error":
        raise PermanentError(f"vCenter's import lease for {name} failed: {lease.error.msg if lease.error else ''}")
    info = lease.info  # read now: a completed lease is gone
    vm = info.entity
    try:
        files = {item.deviceId: ovf_path.parent / item.path for item in result.fileItem or []}
        urls = info.deviceUrl or []
        total = sum(f.stat().st_size for f in files.values() if f.exists()) or 1
        sent = 0
        for device in urls:
            path = files.get(device.importKey)
            if path is None:
                continue
            if not path.exists():
                raise NotFoundError(f"the OVF names {path.name}, which is missing: run ovf/build.py")
            _upload(vc, device, path)
            sent += path.stat().st_size
            pct = int(100 * sent / total)
            lease.HttpNfcLeaseProgress(pct)
            report(20 + 60 * sent // total, f"Uploaded {path.name} ({pct} %)")
        lease.HttpNfcLeaseComplete()
    except Exception:
        try:
            lease.HttpNfcLeaseAbort()
        except vmodl.MethodFault:
            pass
        raise
    if power_on:
        report(85, f"Powering on {name}")
        _task(vm.PowerOnVM_Task(), f"powering on {name}")
    return vm._moId


def _upload(vc, device, path: Path) -> None:
    scheme, host, port, _ = vc.config.endpoint()
    url = device.url.replace("*", f"{host}:{port}" if port not in (80, 443) else host, 1)
    parts = urlsplit(url)
    url = parts._replace(scheme=scheme).geturl()  # the lease says https; a simulator may speak http
    verify: bool | str = vc.config.verify if not vc.config.thumbprint else False
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            resp = requests.put(url, data=f, verify=verify, timeout=vc.config.timeout, headers={
                "Content-Type": "application/x-vnd.vmware-streamVmdk", "Content-Length": str(size)})
    except requests.RequestException as exc:
        raise TransientError(f"uploading {path.name} to {host} failed: {exc}") from exc
    if resp.status_code >= 300:
        raise TransientError(f"uploading {path.name} to {host} failed: HTTP {resp.status_code}")


def destroy_vm(vc, vm_moid: str, progress: Callable[[int, str], None] | None = None) -> bool:
    """Power off (if on) and delete the VM; False if it no longer exists."""
    report = progress or (lambda pct, step: None)
    vm = vim.VirtualMachine(vm_moid, vc.si._stub)
    try:
        name = vm.name
        powered_on = vm.runtime.powerState == "poweredOn"
    except vmodl.fault.ManagedObjectNotFound:
        return False
    if powered_on:
        report(30, f"Powering off {name}")
        _task(vm.PowerOffVM_Task(), f"powering off {name}")
    report(60, f"Deleting {name}")
    _task(vm.Destroy_Task(), f"deleting {name}")
    return True


def find_vm(vc, name: str) -> str | None:
    """The moid of the VM named ``name``, if there is one."""
    content = vc.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        for vm in view.view:
            if vm.name == name:
                return vm._moId
        return None
    finally:
        view.Destroy()


def vapp_properties(vc, vm_moid: str) -> dict[str, str]:
    """The vApp properties a VM was deployed with (vCenter keeps them in ``config.vAppConfig``; the
    simulator in ``config.extraConfig``)."""
    vm = managed_object(vc, vim.VirtualMachine, vm_moid, "VM")
    config = vm.config
    props = {p.id: p.value or "" for p in (config.vAppConfig.property if config and config.vAppConfig else [])}
    if not props and config is not None:
        props = {o.key: str(o.value) for o in config.extraConfig or []}
    return props
