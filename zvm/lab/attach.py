"""IO filters and the workload follow the VMs: what a hypervisor and the VMs' guests do by themselves.

On ESXi the IO filter is attached to every disk of a VM on the host it runs on, and the VM writes wherever
it was powered on. In the lab a host's filter is a process exporting a list of files, and the workload is
fio writing to exports; so after anything that changes where the VMs run or under which volume ids they
are protected (the VPG's creation, a failover, a move and its reverse protection), :func:`attach` brings
them in line:

- each host's filter exports the disks of the VMs on that host (never the appliances' own, never the
  test VMs of a failover test, whose disks are served from the recovery VRA's scratch), a protected disk
  under the volume id its ZVM protects it with, any other under a lab name; a filter whose list changed
  is restarted (a clean stop: it keeps its dirty map);
- the lab's VPG is followed by the names of its VMs: where they are protected now (``state.vpg["vms"]``:
  VM, host, site, volumes and their files), and fio writes into those disks through their filters.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from pathlib import Path

from vra_appliance.iofilter.control import FilterControl
from zvm.client import ZvmClient
from zvm.lab import processes, workload
from zvm.lab.processes import LabError, spawn, wait_ready
from zvm.lab.state import SITES, LabState
from zvm.vcenter import VCenter, VCenterConfig

APPLIANCE_PREFIX = "Z-VRA-"
TEST_SUFFIX = " - testing recovery"


def _client(state: LabState, site: str) -> ZvmClient:
    z = state.zvms[site]
    return ZvmClient(z["url"], timeout=60).login(z["username"], z["password"])


def protected_here(state: LabState, site: str) -> list[dict]:
    """The VMs that ``site``'s ZVM protects from this site (GET /v1/vms), with their volumes."""
    with _client(state, site) as client:
        me = state.zvms[site]["site_identifier"]
        return [vm for vm in client.protected_vms() if vm["ProtectedSite"]["SiteIdentifier"] == me]


def site_disks(state: LabState, site: str) -> list[tuple[object, object]]:
    """(VM, disk) of every VM a filter may serve on ``site``, from its vCenter (the disks' flat files)."""
    sim = state.vcenters[site]
    with VCenter(VCenterConfig(sim.url, sim.username, sim.password)) as vc:
        inventory = vc.inventory()
    return [(vm, disk) for vm in sorted(inventory.vms.values(), key=lambda v: v.name)
            if not vm.name.startswith(APPLIANCE_PREFIX) and not vm.name.endswith(TEST_SUFFIX) and vm.host
            for disk in vm.disks if disk.flat_path]


def wanted_exports(state: LabState) -> dict[tuple[str, str], dict[str, str]]:
    """(site, host) -> {volume id: file} for every host of both sites with VMs."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for site in SITES:
        ids = {(vm["VmIdentifier"], v["FileName"]): v["VolumeIdentifier"]
               for vm in protected_here(state, site) for v in vm["Volumes"]}
        for vm, disk in site_disks(state, site):
            vid = ids.get((vm.moid, disk.file_name), f"{vm.moid}-disk{disk.key}")
            out.setdefault((site, vm.host), {})[vid] = disk.flat_path
    return out


def attach_filters(state: LabState) -> list[str]:
    """Start or restart the filters whose exports changed; returns the names of those (re)started."""
    wanted = wanted_exports(state)
    changed = []
    for site in SITES:
        for vra in state.vras.get(site, []):
            volumes = wanted.get((site, vra["host"]), {})
            current = next((f for f in state.filters if f["site"] == site and f["host"] == vra["host"]), None)
            if current is not None and current["volumes"] == volumes:
                continue
            if current is not None:
                proc = state.process(current["name"])
                if proc is not None:
                    processes.stop([proc])
                state.filters.remove(current)
                state.processes.remove(proc) if proc is not None else None
                state.save()
            if volumes:
                changed.append(_start_filter(state, site, vra, volumes))
    for name in changed:
        entry = next(f for f in state.filters if f["name"] == name)
        wait_ready(state.process(name), lambda c=entry["control"]: _filter_connected(c), "reach its VRA", timeout=60)
    return changed


def _filter_connected(control: str) -> bool:
    with FilterControl(control) as ctl:
        return ctl.counters()["vra"] == "connected"


def _start_filter(state: LabState, site: str, vra: dict, volumes: dict[str, str]) -> str:
    name = f"iofilter-{site}-{vra['host_name']}"
    Path(vra["filter_control"]).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "vra_appliance.cli", "iofilter", "--unix", vra["nbd"], "--vra", vra["split"],
            "--control", vra["filter_control"], "--filter-id", f"{site}-{vra['host_name']}", "-v"]
    for vid, path in volumes.items():
        argv += ["--volume", f"{vid}={path}"]
    state.add(spawn(name, "iofilter", argv, state.logs / f"{name}.log", site=site))
    state.filters.append({"name": name, "site": site, "host": vra["host"], "host_name": vra["host_name"],
                          "control": vra["filter_control"], "nbd": vra["nbd"], "volumes": volumes})
    state.save()
    return name


def locate_vpg_vms(state: LabState) -> None:
    """Where the lab VPG's VMs are protected now: ``state.vpg["vms"]`` (kept in the order of their names),
    each with its site, host and volumes (id, the disk's flat file, size)."""
    vpg = state.vpg["identifier"]
    found = {}
    for site in SITES:
        mine = [vm for vm in protected_here(state, site) if vm["VpgIdentifier"] == vpg]
        if not mine:
            continue
        disks = {(vm.moid, disk.file_name): (vm.host, disk.flat_path) for vm, disk in site_disks(state, site)}
        for vm in mine:
            volumes, host = [], None
            for v in vm["Volumes"]:
                host, path = disks.get((vm["VmIdentifier"], v["FileName"]), (None, None))
                if path is None:
                    raise LabError(f"the disk {v['FileName']} of {vm['VmName']} is not in the {site} vCenter")
                volumes.append({"id": v["VolumeIdentifier"], "path": path, "size": v["ProvisionedSizeInBytes"]})
            found[vm["VmName"]] = {"identifier": vm["VmIdentifier"], "name": vm["VmName"], "site": site,
                                   "host": host, "volumes": volumes}
    if not found:
        raise LabError(f"no site protects the VMs of VPG {state.vpg['name']} now")
    names = [vm["name"] for vm in state.vpg.get("vms", [])] or sorted(found)
    state.vpg["vms"] = [found[n] for n in names if n in found] + [found[n] for n in sorted(found) if n not in names]
    state.save()


def workload_jobs(state: LabState) -> list[dict]:
    nbd_of = {vid: f["nbd"] for f in state.filters for vid in f["volumes"]}
    jobs = []
    for vm in state.vpg["vms"]:
        for v in vm["volumes"]:
            if v["id"] not in nbd_of:
                raise LabError(f"no IO filter serves volume {v['id']} of {vm['name']}: 'zvm lab attach' again")
            jobs.append({"name": vm["name"], "volume": v["id"],
                         "uri": f"nbd+unix:///{v['id']}?socket={nbd_of[v['id']]}"})
    return jobs


def attach(state: LabState, guests: Collection[str] = ()) -> list[str]:
    """Filters and workload after the VMs; returns what changed, for the user. fio leaves the disks of the
    VMs in ``guests`` alone (they run a real guest: zvm.lab.guests.follow_vms)."""
    said = []
    locate_vpg_vms(state)
    restarted = attach_filters(state)
    if restarted:
        said.append(f"IO filters (re)started: {', '.join(restarted)}")
    jobs = [j for j in workload_jobs(state) if j["name"] not in guests]
    if [j["uri"] for j in jobs] != [j["uri"] for j in state.workload.get("jobs", [])]:
        was_paused = state.workload.get("paused", False)
        old = state.process("workload")
        if old is not None:
            processes.stop([old])
            state.processes.remove(old)
        workload.start(state, jobs, state.workload.get("rate", "256k"), paused=was_paused)
        sites = sorted({vm["site"] for vm in state.vpg["vms"]})
        fio_vms = [vm["name"] for vm in state.vpg["vms"] if vm["name"] not in guests]
        said.append(f"workload now writes into {', '.join(fio_vms)} on the "
                    f"{' and '.join(sites)} site" + (" (paused: 'zvm lab workload resume')" if was_paused else ""))
    return said
