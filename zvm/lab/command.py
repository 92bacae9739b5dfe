"""`zvm lab up | status | down`: the two-site lab on one machine.

The lab runs every process detached from the command that started it and records them in
``<lab dir>/lab.json``, so ``status`` and ``down`` work from any later shell. ``up`` is a list of steps with
progress; a failed step says which and why, and stops everything started before it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from zvm.errors import ZvmError
from zvm.lab.vcsim import REPO_ROOT, Vcsim, VcsimSpec

SITES = ("protected", "recovery")


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def default_lab_dir() -> Path:
    return Path(os.environ.get("ZVR_LAB_DIR") or REPO_ROOT / "lab-data")


@dataclass
class LabState:
    """What the lab started, persisted as JSON."""

    lab_dir: Path
    vcenters: dict[str, Vcsim] = field(default_factory=dict)
    started_at: float = 0.0

    @property
    def path(self) -> Path:
        return self.lab_dir / "lab.json"

    def save(self) -> None:
        self.lab_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({
            "started_at": self.started_at,
            "vcenters": {k: v.to_dict() for k, v in self.vcenters.items()},
        }, indent=2))
        os.chmod(tmp, 0o600)  # it holds the lab's passwords
        tmp.replace(self.path)

    @classmethod
    def load(cls, lab_dir: Path) -> LabState | None:
        path = lab_dir / "lab.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(lab_dir=lab_dir, started_at=data.get("started_at", 0.0),
                   vcenters={k: Vcsim.from_dict(v) for k, v in data.get("vcenters", {}).items()})

    def running(self) -> list[str]:
        return [name for name, sim in self.vcenters.items() if sim.alive()]


def _say(msg: str) -> None:
    print(msg, flush=True)


def _stop_all(state: LabState) -> None:
    for sim in state.vcenters.values():
        sim.stop()


def lab_up(lab_dir: Path, hosts: int, vms: int, disk_mb: int) -> int:
    existing = LabState.load(lab_dir)
    if existing and existing.running():
        _say(f"The lab is already up (started {time.ctime(existing.started_at)}); "
             "'zvm lab status' shows it, 'zvm lab down' stops it.")
        return 0
    if existing:
        _stop_all(existing)  # leftovers of a lab that died: clear them before starting anew
    state = LabState(lab_dir=lab_dir, started_at=time.time())
    spec = VcsimSpec(hosts_per_cluster=hosts, vms_per_pool=vms, disk_mb=disk_mb, datastores=2, portgroups=2,
                     password=secrets.token_urlsafe(12))
    steps = [(f"start the {site} site's vCenter (vcsim)", site) for site in SITES]
    t0 = time.monotonic()
    for i, (title, site) in enumerate(steps, 1):
        _say(f"[{i}/{len(steps) + 1}] {title} ...")
        try:
            site_dir = lab_dir / site
            if site_dir.exists():
                shutil.rmtree(site_dir)
            state.vcenters[site] = Vcsim.start(site, site_dir, spec, detach=True)
            state.save()
        except (ZvmError, OSError) as exc:
            _say(f"lab up failed at step {i} ({title}): {exc}")
            _stop_all(state)
            state.path.unlink(missing_ok=True)
            return 1
    _say(f"[{len(steps) + 1}/{len(steps) + 1}] check that both vCenters answer ...")
    try:
        summaries = {site: _summary(sim) for site, sim in state.vcenters.items()}
    except ZvmError as exc:
        _say(f"lab up failed at the check: {exc}")
        _stop_all(state)
        state.path.unlink(missing_ok=True)
        return 1
    _say(f"\nThe lab is up ({time.monotonic() - t0:.1f} s).\n")
    _print_sites(state, summaries)
    sim = state.vcenters["protected"]
    host, port = sim.host_port.rsplit(":", 1)
    _say("\nTry next:\n"
         "  zvm lab status      what is running\n"
         "  zvm lab down        stop everything the lab started\n"
         "  list the protected site's hosts with pyVmomi:\n"
         f"    .venv/bin/python -c \"from pyVim.connect import SmartConnect; "
         f"si = SmartConnect(host='{host}', port={port}, user='{sim.username}', pwd='{sim.password}', "
         "protocol='http'); print([h.name for h in si.content.rootFolder.childEntity[0].hostFolder"
         ".childEntity[0].host])\"")
    return 0


def _summary(sim: Vcsim) -> dict:
    from zvm.vcenter import VCenter, VCenterConfig

    with VCenter(VCenterConfig(sim.url, sim.username, sim.password)) as vc:
        inv = vc.inventory()
    return {"hosts": len(inv.hosts), "vms": len(inv.vms), "datastores": len(inv.datastores),
            "clusters": len(inv.clusters), "networks": len(inv.networks)}


def _print_sites(state: LabState, summaries: dict[str, dict] | None) -> None:
    for site, sim in state.vcenters.items():
        alive = sim.alive()
        _say(f"{site} site vCenter: {sim.url}   ({'running' if alive else 'NOT RUNNING'}, pid {sim.pid})")
        _say(f"  user {sim.username}   password {sim.password}")
        if summaries and site in summaries:
            s = summaries[site]
            _say(f"  {s['clusters']} cluster(s), {s['hosts']} hosts, {s['vms']} VMs, "
                 f"{s['datastores']} datastores, {s['networks']} networks")
        for name, path in sorted(sim.datastores.items()):
            _say(f"  datastore {name}: {path}")


def lab_status(lab_dir: Path) -> int:
    state = LabState.load(lab_dir)
    if state is None:
        _say("The lab is not up; start it with 'zvm lab up'.")
        return 3
    running = state.running()
    summaries = {}
    for site in running:
        try:
            summaries[site] = _summary(state.vcenters[site])
        except ZvmError as exc:
            _say(f"{site}: vCenter does not answer: {exc}")
    _print_sites(state, summaries)
    if len(running) != len(state.vcenters):
        _say("\nSome of the lab's processes have stopped: 'zvm lab down' then 'zvm lab up' restarts it.")
        return 1
    return 0


def lab_down(lab_dir: Path) -> int:
    state = LabState.load(lab_dir)
    if state is None:
        _say("The lab is not up; nothing to stop.")
        return 0
    for site, sim in state.vcenters.items():
        _say(f"stopping the {site} site's vCenter (pid {sim.pid}) ...")
        sim.stop()
    state.path.unlink(missing_ok=True)
    for site in SITES:
        shutil.rmtree(lab_dir / site, ignore_errors=True)
    _say("The lab is down.")
    return 0


def register(sub) -> None:
    lab = sub.add_parser("lab", help="run the two-site lab on this machine",
                         description="The two-site lab: a protected and a recovery site on this machine, "
                                     "against simulated vCenters (vcsim).")
    lab.add_argument("--lab-dir", type=Path, default=None,
                     help="where the lab keeps its state and datastores (default: ./lab-data, or $ZVR_LAB_DIR)")
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="ACTION")
    up = lab_sub.add_parser("up", help="start both sites and print what to connect to")
    up.add_argument("--hosts", type=positive, default=3, help="ESXi hosts in each site's cluster (default 3)")
    up.add_argument("--vms", type=positive, default=4, help="VMs in each site's cluster (default 4)")
    up.add_argument("--disk-mb", type=positive, default=256, help="size of every VM disk in MiB (default 256)")
    lab_sub.add_parser("status", help="show the lab's sites and what runs")
    lab_sub.add_parser("down", help="stop everything the lab started")

    def dispatch(args) -> int:
        lab_dir = args.lab_dir or default_lab_dir()
        if args.lab_command == "up":
            return lab_up(lab_dir, args.hosts, args.vms, args.disk_mb)
        if args.lab_command == "status":
            return lab_status(lab_dir)
        if args.lab_command == "down":
            return lab_down(lab_dir)
        lab.print_help()
        return 2

    lab.set_defaults(func=dispatch)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(lab_status(default_lab_dir()))
