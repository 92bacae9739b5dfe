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
guests are powered off. Guests are processes of kind "workload": ``zvm lab down`` stops them first.

Not done: after a commit the recovered guests are powered off rather than rebooted on the committed
replica volumes; protected guests do not follow a move (``zvm lab attach`` restarts fio only).
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
from zvm.lab.processes import LabError, spawn
from zvm.lab.state import LabState

RUNNING = ("Running", "BeforeCommit")


def guests_dir(state: LabState) -> Path:
    return state.lab_dir / "guests"


def zvm_settings(state: LabState) -> dict:
    """What the lab's ZVMs need to check checkpoints of the lab's guests (zvm/orchestration/recoverability.py)."""
    return {"guest_runner": "local", "guest_image_dir": str(build().dir), "guest_reports_dir": str(guests_dir(state))}


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


def _watch(lab_dir: Path, interval: float, booted: dict[str, list[Guest]]) -> None:
    image = build()
    while True:
        state = LabState.load(lab_dir)
        guest_names = json.loads((guests_dir(state) / "guests.json").read_text())
        seen: set[str] = set()
        for site in ("protected", "recovery"):
            try:
                with _client(state, site) as c:
                    reports = c.request("GET", "/reports/recovery", params={"limit": 20}) or []
            except Exception as exc:  # noqa: BLE001 - a ZVM restarting: ask again next round
                print(f"guest-watch: {site}: {exc}", flush=True)
                continue
            for op in reports:
                key = op["OperationIdentifier"]
                if op["State"] not in RUNNING:
                    continue
                seen.add(key)
                running = booted.setdefault(key, [])
                names = {g.name for g in running}
                for vm in op["Vms"]:
                    source = _source_guest(guest_names, vm["VmName"])
                    name = f"recovered-{source}"
                    if source and vm["PoweredOn"] and vm["Disks"] and name not in names:
                        g = Guest(image, vm["Disks"][0]["Uri"], guests_dir(state), name).start()
                        running.append(g)
                        print(f"guest-watch: {op['Type']} of {op['VpgName']}: booting {vm['VmName']} "
                              f"(boot group {vm['BootGroupName'] or '-'})", flush=True)
        for key in [k for k in booted if k not in seen]:
            for g in booted.pop(key):
                g.kill()
                print(f"guest-watch: operation {key} ended: {g.name} powered off", flush=True)
        for guests in booted.values():
            for g in guests:
                g.app.poll()
        time.sleep(interval)


if __name__ == "__main__":  # python -m zvm.lab.guests watch LAB_DIR
    if len(sys.argv) != 3 or sys.argv[1] != "watch":
        sys.exit("usage: python -m zvm.lab.guests watch LAB_DIR")
    watch(Path(sys.argv[2]))
