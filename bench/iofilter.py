"""`python -m bench iofilter`: the IO filter's write throughput against Debian's nbdkit `file` plugin.

fio (``ioengine=nbd``) over a unix socket, on one preallocated file, for each server in the same run
(interleaved: every round runs each load on each server back to back; figures are medians over rounds):

- ``nbdkit``: ``nbdkit file`` (the baseline),
- ``filter``: ``vra iofilter`` with no VRA attached (every write also goes to the dirty map),
- ``filter+split``: ``vra iofilter`` splitting to a VRA process that drains its stream (a `SplitListener`
  whose handler drops the data), through the shared-memory ring (the default over a unix socket),
- ``filter+split-socket``: the same with ``--no-ring``: the split stream over the unix socket, as before the
  ring (leave it out with ``--servers``),

and three loads: 4 KiB random writes at iodepth 16, 64 KiB sequential writes at iodepth 8, and the 4 KiB
load on four connections at once. The volume is written whole before the first run, so no server pays
for block allocation and the order of the servers does not matter. Each row has IOPS, MiB/s, the ratio to
nbdkit (the median of per-round ratios, and their spread: how noisy the machine was), the server's CPU
milliseconds per 1000 IOs (steadier than IOPS on a shared machine), and for the split runs how many
writes reached the VRA rather than the dirty map and the draining VRA's CPU per 1000 IOs; the 4-connection
rows also have ``vs_1conn`` (4-connection IOPS over 1-connection IOPS, per round); the report has the
1-minute load average after each run (min, median, max). Targets (issue 19): filter+split >= 0.9 of nbdkit
on every load; splitting costs <= 5 % against the filter alone; more IOPS on 4 connections than on 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import emit

SERVERS = ("nbdkit", "filter", "filter+split", "filter+split-socket")
LOADS = {
    "4k-randwrite-qd16": ["--rw=randwrite", "--bs=4k", "--iodepth=16"],
    "64k-seqwrite-qd8": ["--rw=write", "--bs=64k", "--iodepth=8"],
    # four fio jobs, each its own NBD connection (multi-conn), figures summed: does the server scale past
    # one connection?
    "4k-randwrite-qd16-4conn": ["--rw=randwrite", "--bs=4k", "--iodepth=16", "--numjobs=4", "--group_reporting"],
}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for(predicate, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_fio(uri: str, load: list[str], runtime: int, size_mib: int) -> dict:
    cmd = ["fio", "--name=bench", "--ioengine=nbd", f"--uri={uri}", *load, f"--size={size_mib}M",
           "--time_based", f"--runtime={runtime}", "--output-format=json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=runtime + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"fio failed: {proc.stderr.strip()[-500:]}")
    job = json.loads(proc.stdout[proc.stdout.index("{"):])["jobs"][0]
    if job["error"]:
        raise RuntimeError(f"fio reported error {job['error']}")
    w = job["write"]
    return {"iops": w["iops"], "mib_s": w["bw"] / 1024.0, "ios": w["total_ios"],
            "clat_p99_us": w["clat_ns"]["percentile"].get("99.000000", 0) / 1000.0}


class Nbdkit:
    name = "nbdkit"

    def __init__(self, work: Path, volume: Path):
        self.sock, self.pidfile = work / "nbdkit.sock", work / "nbdkit.pid"
        self.proc = subprocess.Popen(["nbdkit", "-f", "-U", str(self.sock), "-P", str(self.pidfile), "file",
                                      str(volume)], stderr=subprocess.DEVNULL)
        _wait_for(self.pidfile.exists, "nbdkit to start")
        self.uri = f"nbd+unix:///?socket={self.sock}"

    def pid(self) -> int:
        return self.proc.pid

    def extra(self) -> dict:
        return {}

    def stop(self) -> None:
        _stop(self.proc)


class Filter:
    def __init__(self, work: Path, volume: Path, vra: str | None, ring: bool = True, tree: Path | None = None):
        """``tree``: run the filter of another source tree (a checkout of the code before a change)."""
        self.name = ("filter+split" if ring else "filter+split-socket") if vra else "filter"
        if tree is not None:
            self.name += "@baseline"
        self.sock, self.ctl = work / "filter.sock", work / "filter.ctl"
        cmd = [sys.executable, "-m", "vra_appliance.cli", "iofilter", "--volume", f"bench={volume}",
               "--unix", str(self.sock), "--control", str(self.ctl)]
        if vra:
            cmd += ["--vra", vra]
        if not ring:
            cmd.append("--no-ring")
        env = None if tree is None else {**os.environ, "PYTHONPATH": str(tree)}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=tree, env=env)
        self.proc.stdout.readline()
        from vra_appliance.iofilter.control import FilterControl

        self.control = FilterControl(self.ctl)
        if vra:
            _wait_for(lambda: self.control.counters()["vra"] == "connected", "the filter to reach the VRA")
        self._last = self.control.counters()
        self.uri = f"nbd+unix:///bench?socket={self.sock}"

    def pid(self) -> int:
        return self.proc.pid

    def extra(self) -> dict:
        now, last = self.control.counters(), self._last
        self._last = now
        writes = now["writes"] - last["writes"]
        out = {}
        if self.name.startswith("filter+split"):
            out["split_fraction"] = round((now["frames_sent"] - last["frames_sent"]) / writes, 4) if writes else 0.0
        return out

    def stop(self) -> None:
        self.control.close()
        _stop(self.proc)
        self.proc.stdout.close()


DRAIN_VRA = """
import signal, sys, threading
from vra_appliance.protect.split_listener import SplitListener
class Drain:
    accepts_views = True
    def on_hello(self, *a): pass
    def on_write(self, *a): pass
    def on_zero(self, *a): pass
    def on_mark(self, *a): pass
    def on_disconnect(self, *a): pass
listener = SplitListener(sys.argv[1], Drain()); listener.start(); print("ready", flush=True)
done = threading.Event(); signal.signal(signal.SIGTERM, lambda *_: done.set()); done.wait(); listener.stop()
"""


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench iofilter", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", type=int, default=10, help="seconds per fio run (default 10)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds; each runs every load on every server back to back (default 3). The "
                             "figures are medians over rounds: this machine is shared and noisy")
    parser.add_argument("--size-mib", type=int, default=512, help="volume file size (default 512 MiB)")
    parser.add_argument("--loads", default=",".join(LOADS), help=f"comma-separated subset of {','.join(LOADS)}")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma-separated subset of {','.join(SERVERS)} (nbdkit and filter are always run: "
                             "the ratios need them)")
    parser.add_argument("--baseline-tree", type=Path,
                        help="also run filter+split from this source tree (e.g. `git archive` of the commit "
                             "before a change), side by side in the same rounds")
    args = parser.parse_args(argv)
    for tool in ("fio", "nbdkit"):
        if shutil.which(tool) is None:
            print(f"bench iofilter: {tool} is missing; install it with ./run (APT_PACKAGES)", file=sys.stderr)
            return 2
    loads = args.loads.split(",")
    work = Path(tempfile.mkdtemp(prefix="zbench-", dir="/tmp"))
    volume = work / "volume.img"
    with open(volume, "wb") as fh:  # allocated, so no run pays for block allocation the others do not
        chunk = os.urandom(1 << 20)
        for _ in range(args.size_mib):
            fh.write(chunk)
    # the same file (same inode) under several names: each filter keeps its own dirty map sidecar
    for name in ("filter-a.img", "filter-b.img", "filter-c.img", "filter-d.img"):
        os.link(volume, work / name)
    vra_addr = str(work / "vra.sock")
    vra = subprocess.Popen([sys.executable, "-c", DRAIN_VRA, vra_addr], stdout=subprocess.PIPE, text=True)
    servers = []
    runs: dict[tuple[str, str], list[dict]] = {}
    try:
        assert vra.stdout.readline().strip() == "ready"
        wanted = set(args.servers.split(",")) | {"nbdkit", "filter"}
        for sub in ("a", "b", "c", "d"):
            (work / sub).mkdir()
        servers = [Nbdkit(work, volume), Filter(work / "a", work / "filter-a.img", None)]
        if "filter+split" in wanted:
            servers.append(Filter(work / "b", work / "filter-b.img", vra_addr))
        if "filter+split-socket" in wanted:
            servers.append(Filter(work / "c", work / "filter-c.img", vra_addr, ring=False))
        if args.baseline_tree is not None:
            servers.append(Filter(work / "d", work / "filter-d.img", vra_addr, tree=args.baseline_tree.resolve()))
        for _round in range(args.rounds):
            for load in loads:
                for server in servers:
                    cpu0, vra0 = _cpu_seconds(server.pid()), _cpu_seconds(vra.pid)
                    res = run_fio(server.uri, LOADS[load], args.runtime, args.size_mib)
                    res["cpu_ms_per_1k_io"] = (_cpu_seconds(server.pid()) - cpu0) / res["ios"] * 1e6
                    res["vra_cpu_ms_per_1k_io"] = (_cpu_seconds(vra.pid) - vra0) / res["ios"] * 1e6
                    res.update(server.extra())
                    res["load1"] = os.getloadavg()[0]  # the machine is shared: how busy it was meanwhile
                    runs.setdefault((server.name, load), []).append(res)
    finally:
        for server in servers:
            server.stop()
        _stop(vra)
        vra.stdout.close()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for (name, load), results in runs.items():
        base = runs[("nbdkit", load)]
        alone = runs[("filter", load)]
        row = {"load": load, "server": name, "iops": round(_median([r["iops"] for r in results])),
               "mib_s": round(_median([r["mib_s"] for r in results]), 1),
               "vs_nbdkit": round(_median(ratios := [r["iops"] / b["iops"] for r, b in zip(results, base, strict=True)]), 3),
               "vs_nbdkit_spread": [round(min(ratios), 3), round(max(ratios), 3)],
               "clat_p99_us": round(_median([r["clat_p99_us"] for r in results]), 1),
               "cpu_ms_per_1k_io": round(_median([r["cpu_ms_per_1k_io"] for r in results]), 1)}
        if name.startswith("filter+split"):
            row["split_cost"] = round(_median([1 - r["iops"] / a["iops"] for r, a in zip(results, alone, strict=True)]), 3)
            row["split_fraction"] = min(r["split_fraction"] for r in results)
            row["vra_cpu_ms_per_1k_io"] = round(_median([r["vra_cpu_ms_per_1k_io"] for r in results]), 1)
        rows.append(row)
    one, four = "4k-randwrite-qd16", "4k-randwrite-qd16-4conn"
    for row in rows:  # does the server scale past one connection? (median of per-round 4-conn / 1-conn IOPS)
        if row["load"] == four and (row["server"], one) in runs:
            pairs = zip(runs[(row["server"], four)], runs[(row["server"], one)], strict=True)
            row["vs_1conn"] = round(_median([f["iops"] / o["iops"] for f, o in pairs]), 3)
    loads1 = sorted(r["load1"] for rs in runs.values() for r in rs)
    split_rows = [r for r in rows if r["server"] == "filter+split"]
    emit("iofilter", rows, {
        "runtime_s": args.runtime, "rounds": args.rounds, "volume_mib": args.size_mib, "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "load1_during_runs": [round(loads1[0], 2), round(_median(loads1), 2), round(loads1[-1], 2)],
        "per_round_iops": {f"{n} {ld}": [round(r["iops"]) for r in rs] for (n, ld), rs in runs.items()},
        "targets": {"filter+split vs nbdkit": ">= 0.9", "split_cost": "<= 0.05", "4 connections vs 1": "> 1"},
        "met": {r["load"]: {"vs_nbdkit": r["vs_nbdkit"] >= 0.9, "split_cost": r["split_cost"] <= 0.05}
                for r in split_rows},
    })
    return 0
