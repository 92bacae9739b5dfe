"""`zvm lab up | status | down` and the lab's controls: the two-site lab on one machine.

``up`` runs the steps of :mod:`zvm.lab.steps` (vCenters, WAN, ZVMs, pairing, VRAs, a VPG, IO filters, a
workload) with numbered progress; every process it starts is detached and recorded in
``<lab dir>/lab.json``, so ``status``, ``down`` and the controls (``wan``, ``workload``, ``image``, ``env``,
and the fault controls ``ps``, ``kill``, ``restart`` of :mod:`zvm.lab.faults`) work from any later shell. A failed step says which and why, and stops everything started before it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from zvm.client import ZvmClient
from zvm.enums import PairingStatus, VpgStatus, VpgSubStatus, VraStatus
from zvm.errors import ZvmError
from zvm.lab import attach, faults, guests, images, processes, workload
from zvm.lab.links import LinksControl
from zvm.lab.processes import LabError
from zvm.lab.state import SITES, LabState, default_lab_dir
from zvm.lab.steps import STEPS, VPG_VMS, Lab, UpOptions, run_steps

# Stopped in this order: nothing is left writing to what the next tier stops (filters flush to their VRA).
STOP_TIERS = (("workload",), ("iofilter",), ("vra",), ("zvm", "wan"), ("vcsim",))


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def vm_count(text: str) -> int:
    value = positive(text)
    if value < VPG_VMS:
        raise argparse.ArgumentTypeError(f"the lab's VPG protects {VPG_VMS} VMs: give at least {VPG_VMS}")
    return value


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def stop_lab(state: LabState, say=_say) -> list[str]:
    """Stop every process of the lab, tier by tier; remove lab.json and the lab's data (keep the logs).
    Returns the names of the processes that had to be killed."""
    killed = []
    for kinds in STOP_TIERS:
        tier = [p for p in state.processes if p.kind in kinds]
        if any(p.group_alive() for p in tier):
            say(f"stopping {', '.join(sorted({p.name for p in tier}))} ...")
        killed += [p.name for p in processes.stop(tier)]
    unknown = [p for p in state.processes if p.kind not in {k for t in STOP_TIERS for k in t}]
    killed += [p.name for p in processes.stop(unknown)]
    state.path.unlink(missing_ok=True)
    for site, sim in state.vcenters.items():  # its log sits among its datastores: keep it with the others
        if sim.log and Path(sim.log).exists() and state.logs.is_dir():
            shutil.copyfile(sim.log, state.logs / f"vcsim-{site}.log")
    for name in (*SITES, "workload", "wan", "vra-pairing-secret"):
        target = state.lab_dir / name
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    if state.run_dir:
        shutil.rmtree(state.run_dir, ignore_errors=True)
    return killed


def lab_up(lab_dir: Path, opts: UpOptions) -> int:
    existing = LabState.load(lab_dir)
    if existing is not None and existing.running():
        when = time.ctime(existing.started_at)
        if len(existing.running()) < len(existing.processes) or not existing.complete:
            _say(f"The lab in {lab_dir} is already up (started {when}) but not all of it runs: "
                 "'zvm lab status' shows what; 'zvm lab down' then 'zvm lab up' starts it afresh.")
            return 1
        _say(f"The lab is already up (started {when}); 'zvm lab status' shows it, 'zvm lab down' stops it.")
        return 0
    if existing is not None:
        stop_lab(existing, say=lambda _m: None)  # what is left of a lab that died: clear it first
    state = LabState(lab_dir=lab_dir, started_at=time.time(),
                     options={"hosts": opts.hosts, "vms": opts.vms, "disk_mb": opts.disk_mb, "rate": opts.rate})
    state.save()
    lab = Lab(state=state, opts=opts, say=_say)
    t0 = time.monotonic()
    try:
        ok = run_steps(lab, STEPS, on_failure=lambda: (lab.close(), stop_lab(state)))
    except KeyboardInterrupt:
        return 130
    if not ok:
        _say("The lab is down; the logs of what ran are in " + str(state.logs))
        return 1
    try:
        state.complete = True
        state.save()
        _say(f"\nThe lab is up ({time.monotonic() - t0:.0f} s).\n")
        _print_summary(lab)
    finally:
        lab.close()
    return 0


def _print_summary(lab: Lab) -> None:
    st = lab.state
    for site in SITES:
        z, sim = st.zvms[site], st.vcenters[site]
        _say(f"{site} site")
        _say(f"  ZVM (REST API)  {z['url']}/v1    user {z['username']}   password {z['password']}")
        _say(f"  ZVM (web UI)    {z['url']}/plugin/")
        _say(f"  vCenter         {sim.url}    user {sim.username}   password {sim.password}")
        if z.get("metrics"):
            _say(f"  metrics         {z['metrics']}   (Prometheus, no login; the VRAs' on port 9465)")
        _say(f"  VRAs            {', '.join(v['name'] + ' ' + v['address'] for v in st.vras[site])}")
    vms = ", ".join(vm["name"] for vm in st.vpg["vms"])
    _say(f"\nVPG {st.vpg['name']} ({st.vpg['identifier']}): {vms}, replicating to the recovery site")
    _say(f"workload: fio at {st.workload['rate']}/s per VM (zvm lab workload pause|resume)")
    _say(f"WAN: the ZVMs' peer traffic and the recovery VRAs, through {st.wan['control']} (zvm lab wan ...)")
    _say(f"logs: {st.logs}")
    a = st.zvms["protected"]
    _say("\nTry next (./run zvm ... is .venv/bin/zvm ...; docs/TOUR.md goes further):")
    for line in (
        "./run zvm lab status                          sites, VRAs, the VPG's RPO and journal history",
        'eval "$(./run zvm lab env protected)"         ZVM_URL, ZVM_USER, ZVM_PASSWORD for the zvm CLI',
        f"./run zvm vpgs; ./run zvm checkpoints {st.vpg['name']} --tagged",
        f"curl -si -X POST -u admin:{a['password']} {a['url']}/v1/session/add   (token in x-zerto-session)",
        "./run zvm lab wan cut; sleep 20; ./run zvm lab wan restore",
        "./run zvm lab ps; ./run zvm lab kill NAME; ./run zvm lab restart NAME   faults, one command each",
        f"./run zvm lab image {st.vpg['vms'][0]['name']}                 its disk at the latest checkpoint, over NBD",
        "./run zvm lab down                            stop everything the lab started",
    ):
        _say("  " + line)


def _load(lab_dir: Path) -> LabState:
    state = LabState.load(lab_dir)
    if state is None:
        raise LabError(f"no lab in {lab_dir}: start it with 'zvm lab up'")
    return state


def lab_status(lab_dir: Path) -> int:
    state = LabState.load(lab_dir)
    if state is None:
        _say(f"The lab is not up ({lab_dir}); start it with 'zvm lab up'.")
        return 3
    running = state.running()
    _say(f"lab in {lab_dir}, started {time.ctime(state.started_at)}"
         + ("" if state.complete else " (its 'up' did not finish)"))
    _say(f"processes: {len(running)} of {len(state.processes)} running")
    for p in state.processes:
        if p not in running:
            _say(f"  NOT RUNNING: {p.name} (pid {p.pid}), log {p.log}")
    for site in SITES:
        if site in state.zvms:
            _site_status(state, site)
    if state.vpg.get("vms"):
        _say(f"\nthe lab's VPG {state.vpg['name']}: its VMs and their disks where they run (zvm lab attach "
             "follows them after a failover or a move)")
        for vm in state.vpg["vms"]:
            for v in vm["volumes"]:
                _say(f"  {vm['name']:<16} {vm.get('site', 'protected'):<10} {v['id']}  {v['path']}")
    for image in state.images:
        _say(f"  open image of {image['vm']} at checkpoint {image['checkpoint']}: {image['uri']} "
             "(it holds the journal: zvm lab image --close-all)")
    if state.wan:
        _wan_status(state)
    if state.workload:
        _say(f"\nworkload: fio at {state.workload['rate']}/s per VM, "
             + ("PAUSED" if state.workload.get("paused") else "running"))
    if len(running) != len(state.processes):
        _say("\nSome of the lab's processes have stopped: 'zvm lab restart NAME' starts one again ('zvm lab ps' "
             "lists them); 'zvm lab down' then 'zvm lab up' makes a new lab.")
        return 1
    return 0


def _site_status(state: LabState, site: str) -> None:
    z = state.zvms[site]
    _say(f"\n{site} site: ZVM {z['url']}/v1, vCenter {state.vcenters[site].url}")
    try:
        with ZvmClient(z["url"], timeout=15).login(z["username"], z["password"]) as c:
            local = c.local_site()
            peers = c.peer_sites()
            vras = c.vras()
            vpgs = c.vpgs(protected_site=local["SiteIdentifier"])
    except ZvmError as exc:
        _say(f"  the ZVM does not answer: {exc}")
        return
    _say(f"  site {local['SiteName']} ({local['SiteIdentifier']}); paired with: "
         + (", ".join(f"{p['PeerSiteName']} ({PairingStatus.parse(p['PairingStatus']).internal})" for p in peers) or "nobody"))
    for v in vras:
        _say(f"  VRA {v['VraName']:<22} {VraStatus.parse(v['State']).internal:<10} {'reachable' if v['Reachable'] else 'NOT reachable':<14}"
             f" {v['ControlAddress']}")
    for g in vpgs:
        h = g["HistoryStatusApi"]
        rpo = "-" if g["ActualRPO"] is None else f"{g['ActualRPO']} s"
        _say(f"  VPG {g['VpgName']}: {VpgStatus.parse(g['Status']).internal} "
             f"({VpgSubStatus.parse(g['SubStatus']).internal}), {g['VmsCount']} VMs -> "
             f"{g['RecoverySite']['SiteName']}; RPO {rpo} (alert above {g['ConfiguredRpoSeconds']} s); "
             f"journal history {h['ActualHistoryInMinutes']} of {h['ConfiguredHistoryInMinutes']} min, "
             f"{g['JournalUsedStorageMb']:.1f} MB; last checkpoint {g['LastCheckpointAt'] or '-'}")


def _wan_status(state: LabState) -> None:
    try:
        links = LinksControl(state.wan["control"], timeout=5).status()
    except (OSError, ValueError) as exc:
        _say(f"\nWAN: the emulator does not answer ({exc})")
        return
    first = next(iter(links.values()))
    up = first["directions"]["up"]
    _say(f"\nWAN: {first['state']}, {up['latency_ms']:g} ms one way, "
         f"{up['bandwidth_mbps']:g} Mbit/s" + (" (unlimited)" if not up["bandwidth_mbps"] else ""))
    for name, s in links.items():
        _say(f"  {name:<22} {s['listen'][0]}:{s['listen'][1]} -> {s['target'][0]}:{s['target'][1]}  "
             f"{s['directions']['up']['bytes'] + s['directions']['down']['bytes']} bytes, "
             f"{s['counters']['active']} connections")


def lab_down(lab_dir: Path) -> int:
    state = LabState.load(lab_dir)
    if state is None:
        _say("The lab is not up; nothing to stop.")
        return 0
    killed = stop_lab(state)
    if killed:
        _say(f"(had to kill {', '.join(killed)}: they did not stop on SIGTERM)")
    _say(f"The lab is down (logs kept in {state.logs}).")
    return 0


def lab_wan(lab_dir: Path, args) -> int:
    state = _load(lab_dir)
    ctl = LinksControl(state.wan["control"])
    try:
        if args.wan_command == "cut":
            ctl.cut(args.mode)
            _say(f"WAN cut ({args.mode}: " + ("connections reset, new ones refused" if args.mode == "reset"
                                              else "every byte held") + "); 'zvm lab wan restore' brings it back")
        elif args.wan_command == "restore":
            ctl.restore()
            _say("WAN restored")
        elif args.wan_command == "set":
            ctl.set(args.latency_ms, args.bandwidth_mbps)
        if getattr(args, "json", False):
            print(json.dumps(ctl.status(), indent=1))
        elif args.wan_command in ("status", "set"):
            _wan_status(state)
    except (OSError, ValueError) as exc:
        raise LabError(f"the lab's WAN emulator does not answer ({exc}): 'zvm lab status' shows the lab") from exc
    return 0


def lab_workload(lab_dir: Path, args) -> int:
    state = _load(lab_dir)
    if args.workload_command == "pause":
        off = guests.power_off(state, guests.names(state))
        if off:
            _say(f"guests powered off: {', '.join(off)} ('zvm lab workload resume' or 'zvm lab attach' boots them)")
        writes = workload.pause(state)
        _say(f"workload paused: fio stopped, every write it sent is on the disks ({sum(writes.values())} writes "
             "so far); 'zvm lab workload resume' goes on")
    elif args.workload_command == "resume":
        workload.resume(state)
        for line in guests.follow_vms(state, attach.workload_jobs(state)) if guests.names(state) else []:
            _say(line)
        _say("workload resumed")
    else:
        names = {v["id"]: vm["name"] for vm in state.vpg.get("vms", []) for v in vm["volumes"]}
        filters = workload.filter_states(state)
        writes = ", ".join(f"{names.get(vid, vid)} {n}" for f in filters.values() for vid, n in f["writes"].items())
        proc = state.process("workload")
        running = proc is not None and proc.alive()
        how = "paused" if state.workload.get("paused") else "running" if running else "NOT RUNNING"
        _say(f"workload {how} at {state.workload['rate']}/s per VM; writes so far: {writes or 'none'}")
        down = {name: f for name, f in filters.items() if not f["up"]}
        for name, f in down.items():
            _say(f"  IO filter {name} is DOWN ({f['error']}): the workload waits for it and writes again when it "
                 f"is back ('zvm lab restart {name}')")
        return 1 if down or how == "NOT RUNNING" else 0
    return 0


def lab_ps(lab_dir: Path) -> int:
    state = _load(lab_dir)
    rows = faults.listing(state)
    width = max(len(r["name"]) for r in rows) if rows else 4
    _say(f"{'NAME':<{width}}  {'KIND':<9} {'PID':>8}  STATE")
    for r in rows:
        _say(f"{r['name']:<{width}}  {r['kind']:<9} {r['pid']:>8}  {r['state']}")
    return 0


def lab_kill(lab_dir: Path, name: str, sig: str) -> int:
    state = _load(lab_dir)
    signum = faults.parse_signal(sig)
    proc = faults.kill(state, name, signum)
    _say(f"{name} (pid {proc.pid}) sent {signum.name}; 'zvm lab restart {name}' brings it back")
    return 0


def lab_restart(lab_dir: Path, name: str) -> int:
    state = _load(lab_dir)
    _say(faults.restart(state, name))
    return 0


def lab_image(lab_dir: Path, args) -> int:
    state = _load(lab_dir)
    if args.close_all:
        closed = images.close_all(state)
        _say(f"closed {len(closed)} image(s)" + (f": {', '.join(closed)}" if closed else ""))
        return 0
    if args.vm is None:
        raise LabError("name a VM of the lab's VPG (or --close EXPORT, --close-all)")
    if args.close:
        images.close_image(state, args.vm)
        _say(f"image {args.vm} closed")
        return 0
    z = state.zvms["protected"]
    with ZvmClient(z["url"], timeout=30).login(z["username"], z["password"]) as c:
        checkpoints = c.checkpoints(state.vpg["identifier"], tagged_only=bool(args.tag) or None)
    if args.checkpoint:
        chosen = next((cp for cp in checkpoints if cp["CheckpointIdentifier"] == args.checkpoint), None)
    elif args.tag:
        chosen = next((cp for cp in checkpoints if cp["Tag"] == args.tag), None)
    else:
        chosen = max((cp for cp in checkpoints if cp["IsConsistent"]), key=lambda cp: cp["TimeStamp"], default=None)
    if chosen is None:
        raise LabError("no such checkpoint of the lab's VPG: list them with 'zvm checkpoints "
                       f"{state.vpg['name']}'")
    opened = images.open_vm(state, args.vm, chosen["CheckpointIdentifier"])
    if args.json:
        print(json.dumps([img.__dict__ for img in opened], indent=1))
        return 0
    _say(f"checkpoint {chosen['CheckpointIdentifier']} ({chosen['TimeStamp']}"
         + (f", tag {chosen['Tag']}" if chosen["Tag"] else "") + "), served read-only by the recovery VRA:")
    for img in opened:
        _say(f"  {img.vm} volume {img.volume}: {img.uri}")
        _say(f"    qemu-img compare -f raw -F raw {img.source} '{img.uri}'")
        _say(f"    close it with: zvm lab image --close {img.export}")
    _say("An open image holds the journal at its checkpoint (a failover or move cannot commit past it): close "
         "it when done ('zvm lab image --close-all' closes every image the lab opened).")
    return 0


def lab_attach(lab_dir: Path) -> int:
    state = _load(lab_dir)
    said = attach.attach(state, guests.names(state))
    if guests.names(state):
        said += guests.follow_vms(state, attach.workload_jobs(state)) or [
            f"guests: {', '.join(guests.names(state))} run on their VMs' disks already"]
    for line in said or ["nothing to change: the filters and the workload follow the VMs already"]:
        _say(line)
    where = ", ".join(f"{vm['name']} ({vm['site']})" for vm in state.vpg["vms"])
    _say(f"VPG {state.vpg['name']}: {where}")
    return 0


def lab_env(lab_dir: Path, site: str) -> int:
    z = _load(lab_dir).zvms[site]
    print(f"export ZVM_URL={z['url']} ZVM_USER={z['username']} ZVM_PASSWORD={z['password']}")
    return 0


def register(sub) -> None:
    lab = sub.add_parser("lab", help="run the two-site lab on this machine",
                         description="The two-site lab: a protected and a recovery site on this machine — "
                                     "simulated vCenters (vcsim), a ZVM per site, a VRA and an IO filter per "
                                     "host, a WAN emulator between the sites — with a VPG replicating a workload.")
    lab.add_argument("--lab-dir", type=Path, default=None,
                     help="where the lab keeps its state, data and logs (default: ./lab-data, or $ZVR_LAB_DIR)")
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="ACTION")
    up = lab_sub.add_parser("up", help="start both sites, pair them, protect three VMs, and print what to use")
    up.add_argument("--hosts", type=positive, default=3, help="ESXi hosts in each site's cluster (default 3)")
    up.add_argument("--vms", type=vm_count, default=4, help="VMs in each site's cluster, 3 or more (default 4)")
    up.add_argument("--disk-mb", type=positive, default=128, help="size of every VM disk in MiB (default 128)")
    up.add_argument("--rate", default="256k", help="the workload's write rate per VM, fio syntax (default 256k)")
    up.add_argument("--latency-ms", type=float, default=5.0, help="WAN one-way latency (default 5)")
    up.add_argument("--bandwidth-mbps", type=float, default=100.0, help="WAN bandwidth, Mbit/s (default 100)")
    up.add_argument("--guests", type=int, default=0, help="VMs that run a real Debian guest with a database "
                    "(QEMU, 256 MiB each) instead of fio; recovered VMs then boot as guests too (docs/GUESTS.md)")
    up.add_argument("--verify-every", type=float, default=0.0, metavar="MINUTES",
                    help="with --guests: the recovery ZVM checks the VPG's newest checkpoint this often by itself "
                         "(verify_every_minutes; default 0: only when asked)")
    lab_sub.add_parser("status", help="sites, VRAs, VPGs with RPO and journal history, WAN, workload")
    lab_sub.add_parser("down", help="stop everything the lab started")
    wan = lab_sub.add_parser("wan", help="cut, restore or shape the WAN between the sites")
    wan_sub = wan.add_subparsers(dest="wan_command", metavar="OP", required=True)
    cut = wan_sub.add_parser("cut", help="cut the link (reset: connections reset; freeze: bytes held)")
    cut.add_argument("--mode", choices=("reset", "freeze"), default="reset")
    wan_sub.add_parser("restore", help="bring the link back")
    wan_set = wan_sub.add_parser("set", help="change latency and bandwidth")
    wan_set.add_argument("--latency-ms", type=float)
    wan_set.add_argument("--bandwidth-mbps", type=float)
    wan_status = wan_sub.add_parser("status", help="the links and their counters")
    wan_status.add_argument("--json", action="store_true", help="print the emulator's status as JSON")
    wl = lab_sub.add_parser("workload", help="pause or resume the workload")
    wl.add_argument("workload_command", choices=("pause", "resume", "status"))
    image = lab_sub.add_parser("image", help="serve a protected VM's disk as of a checkpoint over NBD")
    image.add_argument("vm", nargs="?", help="a VM of the lab's VPG (name or identifier); with --close, an export name")
    image.add_argument("--checkpoint", help="checkpoint identifier (default: the latest consistent one)")
    image.add_argument("--tag", help="the checkpoint with this tag")
    image.add_argument("--close", action="store_true", help="stop serving the export named instead of a VM")
    image.add_argument("--close-all", action="store_true", help="stop serving every image the lab opened")
    image.add_argument("--json", action="store_true")
    lab_sub.add_parser("attach", help="after a failover or a move: filters and workload follow the VMs",
                       description="Give each host's IO filter the disks of the VMs that run there now (under "
                                   "the volume ids their ZVM protects them with) and point the workload at the "
                                   "VPG's VMs where they run: what a hypervisor and the VMs do by themselves.")
    lab_sub.add_parser("ps", help="the lab's processes: name, kind, pid, state (the names kill and restart take)")
    kill = lab_sub.add_parser("kill", help="a fault: kill one of the lab's processes (SIGKILL to its group)",
                              description="Send a signal to one of the lab's processes and its children (names: "
                                          "'zvm lab ps'). SIGKILL by default: a crash. --signal STOP freezes it "
                                          "(a part that does not answer); 'zvm lab restart' continues it.")
    kill.add_argument("name", help="a process of the lab ('zvm lab ps'): vra-..., iofilter-..., zvm-protected, "
                                   "zvm-recovery, vcsim-..., wan, workload")
    kill.add_argument("--signal", default="KILL", help="signal name or number (default KILL)")
    restart = lab_sub.add_parser("restart", help="start one of the lab's processes again, as the lab started it",
                                 description="Stop the process if it runs, then start it again with the same "
                                             "command line, state and address, and wait until it is ready; a "
                                             "stopped one (kill --signal STOP) is continued.")
    restart.add_argument("name", help="a process of the lab ('zvm lab ps')")
    env = lab_sub.add_parser("env", help="print ZVM_URL, ZVM_USER, ZVM_PASSWORD for the zvm CLI")
    env.add_argument("site", choices=SITES, nargs="?", default="protected")

    def dispatch(args) -> int:
        lab_dir = args.lab_dir or default_lab_dir()
        command = args.lab_command
        if command == "up":
            return lab_up(lab_dir, UpOptions(hosts=args.hosts, vms=args.vms, disk_mb=args.disk_mb, rate=args.rate,
                                             latency_ms=args.latency_ms, bandwidth_mbps=args.bandwidth_mbps,
                                             guests=args.guests, verify_every_minutes=args.verify_every))
        if command == "status":
            return lab_status(lab_dir)
        if command == "down":
            return lab_down(lab_dir)
        if command == "wan":
            return lab_wan(lab_dir, args)
        if command == "workload":
            return lab_workload(lab_dir, args)
        if command == "image":
            return lab_image(lab_dir, args)
        if command == "attach":
            return lab_attach(lab_dir)
        if command == "ps":
            return lab_ps(lab_dir)
        if command == "kill":
            return lab_kill(lab_dir, args.name, args.signal)
        if command == "restart":
            return lab_restart(lab_dir, args.name)
        if command == "env":
            return lab_env(lab_dir, args.site)
        lab.print_help()
        return 2

    lab.set_defaults(func=dispatch)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(lab_status(default_lab_dir()))
