"""The lab's real guests (``zvm lab up --guests N``): the first N VMs of the VPG run the guest of
guests/image.py instead of fio, and recovered VMs boot as guests on the recovery side.

Protected side (``start``): the guest image is written onto each chosen VM's disk through its host's IO
filter (nbdcopy to the filter's NBD export: replicated like any write), then QEMU runs the guest on that
export (the hypervisor's IO path) with a follower that copies its reports (committed transaction ids) with
the host's time to ``<lab>/guests/<VM>-reports.log``. The lab's ZVMs get ``guest_runner = "local"`` and
that directory (``zvm_settings``), so ``zvm verify-checkpoint`` knows what each guest acknowledged.

Recovery side (``watch``, a lab process): polls both ZVMs' recovery reports every second; a recovered VM
that the operation has powered on (so its boot group and delay have passed: the ZVM's schedule) is booted
as a guest from its disk's URI in the report (the recovery VRA's point-in-time image with scratch, for a
failover test, a failover or a move before commit); when the operation leaves Running / BeforeCommit its
guests are powered off. After a failover or move is committed: without reverse protection its guests boot
again, in the report's (power-on) order, straight from the committed volume files (the report's ``File``,
on the recovery site's datastore); with reverse protection their disks are protected volumes now, and
``zvm lab attach`` boots them through the new protected side's filters (``follow_vms``), as protected
guests. A move of the lab's VPG that has started powers the protected guests off (a backstop: the move's
final checkpoint may come before the next poll; ``zvm lab workload pause`` before a move powers them off
in time, and its ``resume`` boots them again where they are protected). Guests are processes of kind
"workload": ``zvm lab down`` stops them first.

Protected guests follow a move (``follow_vms``, from ``zvm lab attach``): a guest runs on the filter export
of its VM's first disk where the VM is protected now; one that runs elsewhere (the old side) or not at all
is powered off there and booted on it, so replication back carries its writes; fio leaves its disks alone.
Not done: with reverse protection a committed operation's guests are booted only by ``zvm lab attach``
(not by the watcher when the filters appear), in the VPG's order of VMs rather than its boot groups.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from guests.image import build
from guests.runner import Guest
from zvm.client import ZvmClient
from zvm.lab import processes
from zvm.lab.processes import LabError, spawn
from zvm.lab.state import LabState
from zvm.vcenter.inventory import split_datastore_path

RUNNING = ("Running", "BeforeCommit")
MOVING = ("Starting", "Running", "BeforeCommit", "Committing")  # a move that has not ended
COMMITTED_KINDS = ("Failover", "Move")


def guests_dir(state: LabState) -> Path:
    return state.lab_dir / "guests"


def zvm_settings(state: LabState) -> dict:
    """What the lab's ZVMs need to check checkpoints of the lab's guests (zvm/orchestration/recoverability.py)."""
    return {"guest_runner": "local", "guest_image_dir": str(build().dir), "guest_reports_dir": str(guests_dir(state))}


def names(state: LabState) -> list[str]:
    """The VMs that run a guest (``zvm lab up --guests N``: the first N of the VPG); none without guests."""
    path = guests_dir(state) / "guests.json"
    return json.loads(path.read_text()) if path.exists() else []


def power_off(state: LabState, vms: list[str]) -> list[str]:
    """Power the protected guests of ``vms`` off (QEMU stopped; its follower after the last reports);
    returns those that were running."""
    was = [n for n in vms if (p := state.process(f"guest-{n}")) is not None and p.alive()]
    for kind in ("", "-reports"):
        procs = [p for n in vms if (p := state.process(f"guest-{n}{kind}")) is not None]
        processes.stop(procs)
        for p in procs:
            state.processes.remove(p)
        if not kind and procs:
            time.sleep(0.5)  # the follower copies the guest's last reports
    state.save()
    return was


def follow_vms(state: LabState, jobs: list[dict]) -> list[str]:
    """Protected guests run where their VMs are protected now (``jobs`` of zvm.lab.attach.workload_jobs: the
    filters' exports of their disks): a guest that is off, or runs on another export (after a move), is
    powered off there and booted on its VM's first disk's export. Returns what was done, for the user."""
    said = []
    for name in names(state):
        job = next((j for j in jobs if j["name"] == name), None)
        if job is None:
            continue
        proc = state.process(f"guest-{name}")
        if proc is not None and proc.alive() and any(a.startswith(f"file={job['uri']},") for a in proc.argv):
            continue
        moved = proc is not None and proc.alive()
        power_off(state, [name])
        _boot(state, name, job["uri"], "protected")
        site = next((vm["site"] for vm in state.vpg.get("vms", []) if vm["name"] == name), "?")
        said.append(f"guest {name} {'moved: powered off on its old disk, ' if moved else ''}booted on the {site} "
                    f"site through its filter ({job['uri']})")
    state.save()
    return said


def _boot(state: LabState, name: str, drive: str, kind: str) -> None:
    image = build()
    work = guests_dir(state)
    guest = Guest(image, drive, work, name)
    for p in (guest.console_path, guest.app_path):
        p.unlink(missing_ok=True)
    state.add(spawn(f"guest-{name}", "workload", guest.argv(), work / f"{name}-qemu.log", role=kind))
    state.add(spawn(f"guest-{name}-reports", "workload",
                    [sys.executable, "-m", "guests.runner", "follow", str(guest.app_path),
                     str(work / f"{name}-reports.log")], work / f"{name}-follow.log", role=kind))


def start(state: LabState, jobs: list[dict], count: int) -> list[dict]:
    """Run the first ``count`` VMs' disks (``jobs`` of zvm.lab.attach.workload_jobs) as guests; returns
    the jobs left for fio. Starts the recovery-side watcher."""
    names = list(dict.fromkeys(j["name"] for j in jobs))
    if count > len(names):
        raise LabError(f"--guests {count}: the VPG has {len(names)} VMs")
    image = build()
    guests_dir(state).mkdir(parents=True, exist_ok=True)
    for name in names[:count]:
        first = next(j for j in jobs if j["name"] == name)  # a guest boots from its VM's first disk
        proc = subprocess.run(["nbdcopy", str(image.disk), first["uri"]], capture_output=True, text=True)
        if proc.returncode != 0:
            raise LabError(f"writing the guest image onto {name}'s disk failed: {proc.stderr.strip()} "
                           "(the disk must be at least 64 MiB: zvm lab up --disk-mb)")
        _boot(state, name, first["uri"], "protected")
    (guests_dir(state) / "guests.json").write_text(json.dumps(names[:count]) + "\n")
    state.add(spawn("guest-watch", "workload", [sys.executable, "-m", "zvm.lab.guests", "watch", str(state.lab_dir)],
                    state.logs / "guest-watch.log"))
    state.save()
    return [j for j in jobs if j["name"] not in names[:count]]


def _client(state: LabState, site: str) -> ZvmClient:
    z = state.zvms[site]
    return ZvmClient(z["url"], timeout=30).login(z["username"], z["password"])


def watch(lab_dir: Path, interval: float = 1.0) -> None:
    """Boot recovered VMs as guests as the ZVMs power them on, power them off when their operation ends."""
    booted: dict[str, list[Guest]] = {}  # operation -> its guests
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # zvm lab down: power the guests off first
    try:
        _watch(lab_dir, interval, booted)
    finally:
        for guests in booted.values():
            for g in guests:
                g.kill()


def _source_guest(names: list[str], recovered_name: str) -> str | None:
    """The guest a recovered VM comes from (a failover test's VM is "<name> - testing recovery")."""
    return next((n for n in names if recovered_name == n or recovered_name.startswith(n + " - ")), None)


def _local_file(state: LabState, site_identifier: str, datastore_path: str) -> str:
    """A committed disk's file (a datastore path of the recovery site's vCenter) on this machine."""
    site = next(s for s, z in state.zvms.items() if z["site_identifier"] == site_identifier)
    name, rel = split_datastore_path(datastore_path)
    return str(Path(state.vcenters[site].datastores[name]) / rel)


def _reverse_protected(state: LabState, op: dict) -> bool:
    """Whether the committed operation's VMs are protected back (its recovery site protects them now)."""
    site = next(s for s, z in state.zvms.items() if z["site_identifier"] == op["RecoverySiteIdentifier"])
    with _client(state, site) as c:
        return any(vm["ProtectedSite"]["SiteIdentifier"] == op["RecoverySiteIdentifier"]
                   for vm in c.protected_vms(vpg=op["VpgIdentifier"]))


def _committed(state: LabState, op: dict, guest_names: list[str], image) -> list[Guest]:
    """After a commit: the recovered guests again on the committed volumes, in the operation's power-on
    order; with reverse protection their disks are protected volumes: ``zvm lab attach`` boots them on the
    new protected side's filter (follow_vms), as protected guests."""
    if _reverse_protected(state, op):
        print(f"guest-watch: {op['Type']} of {op['VpgName']} committed with reverse protection: its guests boot "
              "through the new protected side's filters on 'zvm lab attach'", flush=True)
        return []
    out = []
    for vm in op["Vms"]:
        source = _source_guest(guest_names, vm["VmName"])
        if source and vm["PoweredOn"] and vm["Disks"] and vm["Disks"][0]["File"]:
            drive = _local_file(state, op["RecoverySiteIdentifier"], vm["Disks"][0]["File"])
            out.append(Guest(image, drive, guests_dir(state), f"recovered-{source}").start())
            print(f"guest-watch: {op['Type']} of {op['VpgName']} committed: booting {vm['VmName']} on its "
                  f"committed volume {drive} (boot group {vm['BootGroupName'] or '-'})", flush=True)
    return out


def _move_started(state: LabState, guest_names: list[str]) -> None:
    """A move shuts its source VMs down: their guests are powered off (a backstop: the move's final
    checkpoint may come first; 'zvm lab workload pause' before a move powers them off in time)."""
    on = [n for n in guest_names if (p := state.process(f"guest-{n}")) is not None and p.alive()]
    for n in on:
        state.process(f"guest-{n}").signal(signal.SIGTERM)
        print(f"guest-watch: a move of the VPG started: protected guest {n} powered off", flush=True)


def _watch(lab_dir: Path, interval: float, booted: dict[str, list[Guest]]) -> None:
    image = build()
    handled: set[str] | None = None  # committed operations done with (those of the first round are old)
    while True:
        state = LabState.load(lab_dir)
        guest_names = names(state)
        seen: set[str] = set()
        committed: dict[str, dict] = {}
        moving = False
        for site in ("protected", "recovery"):
            try:
                with _client(state, site) as c:
                    reports = c.request("GET", "/reports/recovery", params={"limit": 20}) or []
            except Exception as exc:  # noqa: BLE001 - a ZVM restarting: ask again next round
                print(f"guest-watch: {site}: {exc}", flush=True)
                continue
            for op in reports:
                key = op["OperationIdentifier"]
                if op["VpgIdentifier"] == state.vpg.get("identifier"):
                    moving |= op["Type"] == "Move" and op["State"] in MOVING
                if op["State"] == "Committed" and op["Type"] in COMMITTED_KINDS:
                    committed[key] = op
                if op["State"] not in RUNNING:
                    continue
                seen.add(key)
                running = booted.setdefault(key, [])
                on = {g.name for g in running}
                for vm in op["Vms"]:
                    source = _source_guest(guest_names, vm["VmName"])
                    name = f"recovered-{source}"
                    if source and vm["PoweredOn"] and vm["Disks"] and name not in on:
                        g = Guest(image, vm["Disks"][0]["Uri"], guests_dir(state), name).start()
                        running.append(g)
                        print(f"guest-watch: {op['Type']} of {op['VpgName']}: booting {vm['VmName']} "
                              f"(boot group {vm['BootGroupName'] or '-'})", flush=True)
        for key in [k for k in booted if k not in seen and not k.endswith("-committed")]:
            for g in booted.pop(key):
                g.kill()
                print(f"guest-watch: operation {key} ended: {g.name} powered off", flush=True)
        if moving:
            _move_started(state, guest_names)
        if handled is None:
            handled = set(committed)
        for key, op in committed.items():
            # while the protected site has not taken its part (WaitingForPeer), reverse protection is not
            # known yet: decide when it has, never booting a disk that a protected guest will boot too
            if key not in handled and not op["WaitingForPeer"]:
                try:
                    booted[f"{key}-committed"] = _committed(state, op, guest_names, image)
                except Exception as exc:  # noqa: BLE001 - a ZVM restarting: ask again next round
                    print(f"guest-watch: after the commit of {key}: {exc}", flush=True)
                    continue
                handled.add(key)
        for guests in booted.values():
            for g in guests:
                g.app.poll()
        time.sleep(interval)


if __name__ == "__main__":  # python -m zvm.lab.guests watch LAB_DIR
    if len(sys.argv) != 3 or sys.argv[1] != "watch":
        sys.exit("usage: python -m zvm.lab.guests watch LAB_DIR")
    watch(Path(sys.argv[2]))
