"""`python -m bench rto`: recovery time (RTO) of failover test and live failover, against vcsim.

For VPGs of 1, 10 and 50 VMs (``--sizes``), a two-site world as the recovery tests build it
(tests/recovery_ops/world.py: two vcsims, site A's ZVM as `zvm serve`, site B's in this process, VRAs
installed through the API and run as `vra serve`, IO filters on A, a replicating VPG with a consistent
checkpoint in B's journal). Then, on B (the recovery site):

- failover test: from ``POST /v1/vpgs/{id}/failoverTest`` to its task completed (every test VM created
  and powered on, every disk's NBD export served by the recovery VRA), then every export reached by an
  NBD client here (``reach``); then the test is stopped (``stop``, not part of the RTO);
- live failover: from ``POST /v1/vpgs/{id}/Failover`` (ForceShutdown of the source VMs on A, commit policy
  None) to its task completed, exports reached; then rolled back (not part of the RTO).

Each RTO is split by phase (the operation's own figures: Prepare, OpenImages, CreateVms, PowerOn, Verify;
``queue_s`` is the rest: the API call, the task's start, the operation's bookkeeping). No boot delays.

With real guests (``--guests 1,3``, the default; ``--guests ""`` for none): the same world with the VMs'
disks holding the guest of guests/image.py (written through the IO filters, replicated, a checkpoint
taken), then a failover test, and every recovered VM booted under QEMU from its disk's NBD export (as the
recovery host powers it on; all at once) until its application answers (the guest's READY report: the
database opened and queried). RTO: from the failover test's order to the last application answering.
Baseline: booting the same image from a local file, the same number at once, to the same READY (the boot
alone), before and after the failover test (the faster of the two); ``ratio`` is what the product adds
around the boot.

Baseline of the vcsim rows, in the same run, against the same recovery vcsim: the bare vCenter calls, i.e. creating the same
number of VMs (one disk, one NIC) and powering them on directly through pyVmomi, one after the other as the
orchestration does; ``ratio`` is RTO / baseline: what the orchestration costs on top of vCenter.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.report import emit

TARGETS = {10: 10.0, 50: 60.0}


def _reach(uris: list[str]) -> float:
    """Open every export with an NBD client (handshake, a 4 KiB read); seconds taken."""
    from tests.replication.lab import NbdClient

    started = time.perf_counter()
    for uri in uris:
        path, sock = uri.split("?socket=")
        client = NbdClient(sock, path[len("nbd+unix:///"):])
        try:
            client.read(0, 4096)
        finally:
            client.close()
    return time.perf_counter() - started


def _baseline(world, n: int) -> float:
    """Create and power on ``n`` VMs like the recovery VMs, through pyVmomi directly; then delete them."""
    from zvm import models as m
    from zvm.vcenter import VCenter, VCenterConfig
    from zvm.vcenter.recovery import RecoveryDisk, RecoveryVmSpec, create_vm, delete_vm, power_on

    row = m.Vpg.get(m.Vpg.identifier == world.vpg)  # site B's copy of the VPG (its ZVM runs in this process)
    made = []
    with VCenter(VCenterConfig(world.rec.url, world.rec.username, world.rec.password)) as vc:
        started = time.perf_counter()
        for i in range(n):
            moid = create_vm(vc, RecoveryVmSpec(
                name=f"baseline-{i}", host=row.recovery_host, datastore=row.recovery_datastore, folder=None,
                networks=[row.test_network], disks=[RecoveryDisk(8 << 20)]))
            power_on(vc, moid)
            made.append(moid)
        elapsed = time.perf_counter() - started
        for moid in made:
            delete_vm(vc, moid, keep_disks=False)
    return elapsed


def _phases(report: dict) -> dict:
    return {f"{k.lower()}_s": round(v, 3) for k, v in report["PhasesInSeconds"].items()}


def measure(world, n: int) -> list[dict]:
    rows = []
    b = world.b
    baseline = min(_baseline(world, n) for _ in range(2))
    for kind in ("failover test", "failover"):
        started = time.perf_counter()
        if kind == "failover test":
            task = b.failover_test(world.vpg)
        else:
            task = b.failover(world.vpg, shutdown_policy="ForceShutdown", shutdown_timeout=30, commit_policy="None")
        world.run_b()
        result = b.wait_for_task(task)["Result"]
        ordered_to_up = time.perf_counter() - started
        uris = [d["Uri"] for vm in result["Vms"] for d in vm["Disks"]]
        reach = _reach(uris)
        report = b.recovery_report(result["OperationIdentifier"])
        phases = _phases(report)
        up = sum(phases.values())
        t0 = time.perf_counter()
        end = b.failover_test_stop(world.vpg) if kind == "failover test" else b.failover_rollback(world.vpg)
        world.run_b()
        b.wait_for_task(end)
        ending = time.perf_counter() - t0
        rto = ordered_to_up + reach
        rows.append({"vms": n, "operation": kind, "rto_s": round(rto, 3), "ordered_to_up_s": round(ordered_to_up, 3),
                     "reach_s": round(reach, 3), **phases, "queue_s": round(max(0.0, ordered_to_up - up), 3),
                     "baseline_s": round(baseline, 3), "ratio": round(rto / baseline, 2) if baseline else None,
                     "target_s": TARGETS.get(n), "meets_target": rto < TARGETS[n] if n in TARGETS else None,
                     "end_s": round(ending, 3)})
    return rows


def _boot_all(image, drives: list[str], work: Path, tag: str) -> float:
    """Boot one guest per drive at once (run mode); seconds until the last application answered."""
    from guests.runner import Guest

    started = time.perf_counter()
    guests = [Guest(image, d, work, f"{tag}-{i}").start() for i, d in enumerate(drives)]
    try:
        for g in guests:
            g.ready(600)
        return time.perf_counter() - started
    finally:
        for g in guests:
            g.kill()


def _local_boot(image, n: int, work: Path) -> float:
    """The baseline: the same image booted from local files (copies), ``n`` at once."""
    import subprocess

    drives = []
    for i in range(n):
        disk = work / f"local-{i}.raw"
        subprocess.run(["cp", "--sparse=always", str(image.disk), str(disk)], check=True)
        drives.append(str(disk))
    return _boot_all(image, drives, work, "local")


def measure_guests(world, n: int, image, work: Path) -> dict:
    """Put the guest on every protected disk, replicate it, then failover test to the applications up."""
    from tests.replication.lab import run

    for sock, export in world.nbd_of_volume.values():
        run(["nbdcopy", str(image.disk), f"nbd+unix:///{export}?socket={sock}"], timeout=600)
    cp, _ = world.checkpoint("guests")
    world.b_knows(cp)
    before = _local_boot(image, n, work)
    b = world.b
    started = time.perf_counter()
    task = b.failover_test(world.vpg, checkpoint=cp)
    world.run_b()
    result = b.wait_for_task(task)["Result"]
    ordered_to_up = time.perf_counter() - started
    uris = [vm["Disks"][0]["Uri"] for vm in result["Vms"]]
    boot = _boot_all(image, uris, work, "recovered")
    rto = ordered_to_up + boot
    end = b.failover_test_stop(world.vpg)
    world.run_b()
    b.wait_for_task(end)
    baseline = min(before, _local_boot(image, n, work))  # before and after: the machine's load moves
    return {"vms": n, "operation": "failover test, real guests", "rto_s": round(rto, 3),
            "ordered_to_up_s": round(ordered_to_up, 3), "boot_to_app_s": round(boot, 3),
            "baseline_s": round(baseline, 3), "ratio": round(rto / baseline, 2) if baseline else None,
            "baseline": "boot from a local file to the application answering"}


def _world(n: int, spec, label: str, prefix: int, body) -> list[dict]:
    """Build the two-site world of ``n`` VMs, run ``body(world, work)``, tear everything down."""
    from tests.recovery_ops.world import build
    from zvm.lab.vcsim import Vcsim

    work = Path(tempfile.mkdtemp(prefix=f"bench-rto-{label}-"))
    sims: list = []

    def start(name: str, spec, work=work, sims=sims) -> Vcsim:
        sim = Vcsim.start(name, work / name, spec)
        sims.append(sim)
        return sim

    world = None
    try:
        t0 = time.perf_counter()
        world = build(start, f"rto{label}", prefix, work, spec=spec, vm_count=n, boot_delay=0, workload=False)
        print(f"rto: {n} VMs ({label}): the two sites are up and replicating ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr, flush=True)
        return body(world, work)
    finally:
        if world is not None:
            world.close()
        for sim in sims:
            sim.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench rto", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10,50", help="VMs per VPG, comma-separated")
    parser.add_argument("--disk-mb", type=int, default=8, help="size of every VM disk")
    parser.add_argument("--guests", default="1,3", help="VMs per VPG for the real-guest rows (\"\": none)")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x]

    from zvm.lab.vcsim import VcsimSpec

    rows: list[dict] = []
    for n in sizes:
        spec = VcsimSpec(hosts_per_cluster=2, vms_per_pool=max(3, n), datastores=1, portgroups=2,
                         disk_mb=args.disk_mb)
        rows += _world(n, spec, str(n), 90 + sizes.index(n), lambda world, work, n=n: measure(world, n))
    guest_counts = [int(x) for x in args.guests.split(",") if x]
    if guest_counts:
        from guests.image import DISK_MIB, build

        image = build()
        for n in guest_counts:
            spec = VcsimSpec(hosts_per_cluster=2, vms_per_pool=max(3, n), datastores=1, portgroups=2,
                             disk_mb=DISK_MIB)
            rows.append(_world(n, spec, f"g{n}", 76 + guest_counts.index(n),
                               lambda world, work, n=n: measure_guests(world, n, image, work)))
    emit("rto", rows, {"baseline": "pyVmomi CreateVM_Task + PowerOnVM_Task of the same number of VMs (one disk, "
                                   "one NIC), one after the other, against the same recovery vcsim; real-guest "
                                   "rows: the guest image booted from local files, as many at once",
                       "targets_s": TARGETS})
    return 0
