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

Baseline, in the same run, against the same recovery vcsim: the bare vCenter calls, i.e. creating the same
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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench rto", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10,50", help="VMs per VPG, comma-separated")
    parser.add_argument("--disk-mb", type=int, default=8, help="size of every VM disk")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x]

    from tests.recovery_ops.world import build
    from zvm.lab.vcsim import Vcsim, VcsimSpec

    rows: list[dict] = []
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"bench-rto-{n}-"))
        sims: list = []

        def start(name: str, spec, work=work, sims=sims) -> Vcsim:
            sim = Vcsim.start(name, work / name, spec)
            sims.append(sim)
            return sim

        spec = VcsimSpec(hosts_per_cluster=2, vms_per_pool=max(3, n), datastores=1, portgroups=2,
                         disk_mb=args.disk_mb)
        world = None
        try:
            t0 = time.perf_counter()
            world = build(start, f"rto{n}", 90 + sizes.index(n), work, spec=spec, vm_count=n, boot_delay=0,
                          workload=False)
            print(f"rto: {n} VMs: the two sites are up and replicating ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
            rows += measure(world, n)
        finally:
            if world is not None:
                world.close()
            for sim in sims:
                sim.stop()
            shutil.rmtree(work, ignore_errors=True)
    emit("rto", rows, {"baseline": "pyVmomi CreateVM_Task + PowerOnVM_Task of the same number of VMs (one disk, "
                                   "one NIC), one after the other, against the same recovery vcsim",
                       "targets_s": TARGETS})
    return 0
