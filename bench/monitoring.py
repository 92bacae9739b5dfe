"""`python -m bench monitoring`: how fresh monitoring is, and what it costs the ZVM per VRA.

Measured for the design in zvm/monitoring (one pass a second, the VRAs asked in parallel with short
timeouts) against the named baseline **"15 s serial poll"**: the same monitor code at today's 15 s interval
with one VRA asked after the other (what main's monitor did: zvm/monitoring/monitor.py before issue 14), run
side by side on the same machine in the same run.

The VRAs are simulated: a separate process serves the real gRPC Control service (Status, ListCheckpoints) on
one port per VRA, each answering for one VPG role (half protect, half recover, one VPG per pair; a
consistent checkpoint every 5 s; a steady write rate). The ZVM is a real ZVM database (SQLite) with those
VRAs and VPGs, and a real ``Monitor`` with the ZVM's gRPC client.

- **freshness**: the time from a change at a VRA to the database the API answers from showing it: a protect
  role's substatus turning DeltaSync, a VRA killed (its server stopped: the VPG's substatus turns
  DisconnectedFromPeer). Each change comes at a random moment of the interval between two passes. Median and
  max over trials.
- **CPU**: the ZVM process's CPU time (user + system) while only monitoring runs, as ms per VRA per minute,
  for 6 and for 60 VRAs.

Ratios are design / baseline (freshness: lower is better; CPU: higher costs more).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

from bench.report import emit

SECRET = "bench-monitoring-secret"


# --- the simulated VRAs (a separate process) -------------------------------------------------------------

def sim_main(count: int) -> int:
    """Serve ``count`` simulated VRAs; print their ports (JSON); obey commands on stdin:
    ``substatus I NAME`` (protect role I's substatus, "" for none), ``kill I``, ``start I``."""
    import grpc

    from vra_appliance.proto.v1 import control_pb2 as cpb
    from vra_appliance.proto.v1 import control_pb2_grpc as cpb_grpc

    t0 = time.time()

    class Sim(cpb_grpc.ControlServicer):
        def __init__(self, index: int) -> None:
            self.index = index
            self.vpg = f"vpg-{index // 2}"
            self.role = "protect" if index % 2 == 0 else "recover"
            self.substatus = ""

        def Status(self, request, context):  # noqa: N802
            now = time.time()
            reply = cpb.StatusReply(vra_id=f"vra-{self.index}")
            if self.role == "protect":
                reply.vpgs.add(vpg=self.vpg, role="protect", state="ok", substatus=self.substatus, counters={
                    "bytes": (now - t0) * 2e6, "wire_bytes_sent": (now - t0) * 1e6, "writes": (now - t0) * 500,
                    "recovery_journal_lost": 0.0})
            else:
                reply.vpgs.add(vpg=self.vpg, role="recover", state="ok", counters={
                    "journal_bytes": 64e6, "history_covered_s": 3600.0, "checkpoints_listed": 10,
                    "newest_consistent_checkpoint_s": now - now % 5})
            return reply

        def ListCheckpoints(self, request, context):  # noqa: N802
            now = time.time()
            newest = int((now - now % 5) * 1e9)
            return cpb.ListCheckpointsReply(checkpoints=[cpb.CheckpointEntry(
                checkpoint_id=f"cp-{request.vpg}-{newest}", seq=1, timestamp_ns=newest, consistent=True)])

    def serve(index: int, port: int = 0):
        server = grpc.server(futures.ThreadPoolExecutor(2))
        cpb_grpc.add_ControlServicer_to_server(sims[index], server)
        port = server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        return server, port

    sims = [Sim(i) for i in range(count)]
    servers = [serve(i) for i in range(count)]
    ports = [p for _, p in servers]
    print(json.dumps(ports), flush=True)
    for line in sys.stdin:
        op, index, *rest = line.split()
        i = int(index)
        if op == "substatus":
            sims[i].substatus = rest[0] if rest else ""
        elif op == "kill":
            servers[i][0].stop(0).wait()
        elif op == "start":
            servers[i] = serve(i, ports[i])
        print("ok", flush=True)
    return 0


class Sims:
    def __init__(self, count: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench", "monitoring", "--sim", str(count)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ports = json.loads(self.proc.stdout.readline())

    def tell(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


# --- the ZVM side ------------------------------------------------------------------------------------------

def make_zvm(data_dir: str, ports: list[int]):
    from zvm import db as zdb
    from zvm import models as m
    from zvm.config import load_config
    from zvm.service import Zvm
    from zvm.vra_control import GrpcVraControl

    zvm = Zvm(load_config(data_dir=data_dir, admin_password="Bench-pass-1", site_name="bench")).open()
    zdb.connect(zvm.db)
    site = zvm.local_site()
    with zdb.transaction():
        for i, port in enumerate(ports):
            m.Vra.create(identifier=f"vra-{i}", site=site, host_moid=f"host-{i}", host_name=f"host-{i}",
                         name=f"Z-VRA-host-{i}", state="Installed", datastore_moid="ds", network_moid="net",
                         control_address=f"127.0.0.1:{port}", reachable=True, last_seen=time.time())
        for v in range(len(ports) // 2):
            m.Vpg.create(identifier=f"vpg-{v}", name=f"vpg-{v}", protected_site=site, recovery_site=site,
                         status="MeetingSLA", substatus="None", rpo_threshold_seconds=300,
                         journal_history_hours=1, created_at=time.time())
    zvm.db.close()
    return zvm, GrpcVraControl(SECRET, timeout=5.0)


def substatus_of(zvm, vpg: str) -> str:
    from zvm import db as zdb
    from zvm import models as m

    zdb.connect(zvm.db)
    try:
        return m.Vpg.get(m.Vpg.identifier == vpg).substatus
    finally:
        zvm.db.close()


def wait_shown(zvm, vpg: str, want: str, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if substatus_of(zvm, vpg) == want:
            return time.monotonic() - start
        time.sleep(0.02)
    raise RuntimeError(f"{vpg} never showed substatus {want} within {timeout} s")


def run_design(name: str, count: int, interval: float, workers: int, cpu_window: float, trials: int) -> dict:
    from zvm.monitoring.monitor import Monitor

    sims = Sims(count)
    data_dir = tempfile.mkdtemp(prefix="bench-mon-")
    try:
        zvm, control = make_zvm(data_dir, sims.ports)
        monitor = Monitor(zvm, control=control, interval=interval, workers=workers)
        monitor.start()
        time.sleep(interval + 1.0)  # the first pass (after one interval) has run: channels open
        cpu0, wall0 = os.times(), time.monotonic()
        time.sleep(cpu_window)
        cpu1, wall1 = os.times(), time.monotonic()
        cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        fresh: dict[str, list[float]] = {"substatus": [], "vra killed": []}
        rng = random.Random(count)
        for t in range(trials):
            vpg = f"vpg-{t % (count // 2)}"
            protect = 2 * (t % (count // 2))
            # a change comes at any moment between two passes, not just after one (the wait ends on a pass)
            time.sleep(rng.uniform(0, interval))
            sims.tell(f"substatus {protect} DeltaSync")
            fresh["substatus"].append(wait_shown(zvm, vpg, "DeltaSync", 4 * interval + 10))
            sims.tell(f"substatus {protect}")
            wait_shown(zvm, vpg, "None", 4 * interval + 10)
            time.sleep(rng.uniform(0, interval))
            sims.tell(f"kill {protect}")
            fresh["vra killed"].append(wait_shown(zvm, vpg, "DisconnectedFromPeer", 4 * interval + 10))
            sims.tell(f"start {protect}")
            wait_shown(zvm, vpg, "None", 4 * interval + 10)
        monitor.stop()
        control.close()
        return {"design": name, "vras": count,
                "cpu_ms_per_vra_min": cpu_s * 1000 / (wall1 - wall0) * 60 / count,
                **{f"fresh_{k.replace(' ', '_')}_median_s": statistics.median(v) for k, v in fresh.items()},
                **{f"fresh_{k.replace(' ', '_')}_max_s": max(v) for k, v in fresh.items()}}
    finally:
        sims.stop()
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench monitoring", description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="6,60", help="VRA counts (even)")
    parser.add_argument("--cpu-window", type=float, default=45.0, help="seconds of CPU measurement per run")
    parser.add_argument("--trials", type=int, default=4, help="changes timed per kind and run")
    parser.add_argument("--sim", type=int, help=argparse.SUPPRESS)  # the simulated VRAs' process
    args = parser.parse_args(argv)
    if args.sim:
        return sim_main(args.sim)
    os.environ.setdefault("ZVM_VRA_PAIRING_SECRET", SECRET)
    rows = []
    for count in (int(c) for c in args.counts.split(",")):
        design = run_design("1 s parallel poll (this design)", count, 1.0, 16, args.cpu_window, args.trials)
        base = run_design("15 s serial poll (baseline)", count, 15.0, 1, max(args.cpu_window, 60.0), args.trials)
        rows += [design, base]
        ratio = {"design": "ratio design/baseline", "vras": count}
        for key in design:
            if key not in ("design", "vras") and base[key]:
                ratio[key] = design[key] / base[key]
        rows.append(ratio)
        threading.Event().wait(1.0)
    emit("monitoring", rows, {"baseline": "15 s serial poll: the same Monitor at interval 15 s, workers=1"})
    return 0
