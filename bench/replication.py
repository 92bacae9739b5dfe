"""`python -m bench replication`: end-to-end replication on this machine.

fio (64 KiB writes, ioengine=nbd, half-compressible data) -> `vra iofilter` -> protect `vra serve` ->
gRPC on loopback -> recovery `vra serve` -> file journal with fdatasync. Real processes, as deployed.

Figures:
- sustained throughput: fio unthrottled for ``--seconds``; bytes that became durable in the journal during
  that window / window (and what fio wrote; what went to dirty maps instead);
- RPO at offered loads (fio --rate) of 20, 50, 100 MB/s: the protect VRA's RPO (age of the oldest write it
  received that the recovery journal has not yet made durable; 0 when all are) sampled every 100 ms,
  p50 / p99 / max, and the compression ratio reached;
- baselines in the same run: the disk's sequential 1 MiB writes with fdatasync (fio), and zstd level 1
  compression speed (one thread) on data from the same fio generator.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zstandard

from bench.report import emit
from tests.replication.lab import Lab
from vra_appliance.proto.v1 import control_pb2 as cpb

VPG = "bench"
VOLUME_SIZE = 1 << 30


def _fio(args: list[str], timeout: float) -> dict:
    out = subprocess.run(["fio", "--output-format=json", *args], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"fio failed: {out.stderr.strip()}")
    return json.loads(out.stdout[out.stdout.index("{"):])


def disk_baseline(directory: Path, seconds: float) -> float:
    """MB/s of sequential 1 MiB writes, each followed by fdatasync, in the journal's file system."""
    path = directory / "disk-baseline.dat"
    doc = _fio([f"--filename={path}", "--name=disk", "--rw=write", "--bs=1M", "--size=4G", "--fdatasync=1",
                "--time_based", f"--runtime={max(1, int(seconds))}", "--ioengine=psync"], timeout=seconds + 60)
    path.unlink(missing_ok=True)
    return doc["jobs"][0]["write"]["bw_bytes"] / 1e6


def zstd_baseline(directory: Path) -> tuple[float, float]:
    """(MB/s, ratio) of zstd level 1, one thread, on 64 MiB of fio's buffer_compress_percentage=50 data."""
    path = directory / "zstd-sample.dat"
    _fio([f"--filename={path}", "--name=sample", "--rw=write", "--bs=64k", "--size=64M",
          "--buffer_compress_percentage=50", "--refill_buffers", "--ioengine=psync"], timeout=120)
    data = path.read_bytes()
    path.unlink()
    cctx = zstandard.ZstdCompressor(level=1)
    chunks = [data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    out = 0
    t0 = time.perf_counter()
    for c in chunks:
        out += len(cctx.compress(c))
    elapsed = time.perf_counter() - t0
    return len(data) / elapsed / 1e6, len(data) / out


class Setup:
    """One host: a filter with one volume, its protect VRA, and a recovery VRA (journal on disk)."""

    def __init__(self, tmp: Path, buffer_mib: int, compression: bool = True) -> None:
        self.lab = Lab(tmp)
        self.tmp = tmp
        self.r = self.lab.vra("recover", split=False)
        self.p = self.lab.vra("protect")
        volume = self.lab.volume("vol-1", VOLUME_SIZE)
        reply = self.r.control.ConfigureRecover(cpb.RecoverConfig(
            vpg=VPG, journal_dir=str(tmp / "journal"), protect_peers=["protect"], history_seconds=3600,
            volumes=[cpb.ReplicaVolume(volume="vol-1", path=str(tmp / "replica.img"), size=VOLUME_SIZE)]))
        assert reply.ok, reply.message
        self.f = self.lab.filter("filter", {"vol-1": volume}, self.p)
        reply = self.p.control.ConfigureProtect(cpb.ProtectConfig(
            vpg=VPG, volumes=["vol-1"], filter_controls=[self.f.control_path], compression=compression, coordinator=True,
            recover_peer=cpb.PeerVra(vra_id="recover", address=self.r.address),
            protect_peers=[cpb.PeerVra(vra_id="protect", address=self.p.address)],
            buffer_bytes=buffer_mib << 20))
        assert reply.ok, reply.message
        self.p.control.wait_streaming(VPG)  # the initial sync of the (empty) volume is over before measuring

    def protect_counters(self) -> dict:
        return dict(self.p.control.vpg_status(VPG, "protect").counters)

    def recover_counters(self) -> dict:
        return dict(self.r.control.vpg_status(VPG, "recover").counters)

    def fio(self, seconds: float, rate_mbps: float | None) -> dict:
        args = ["--name=vm", "--ioengine=nbd", f"--uri={self.f.uri('vol-1')}", "--rw=randwrite", "--bs=64k",
                "--iodepth=8", f"--size={VOLUME_SIZE}", "--time_based", f"--runtime={int(seconds)}",
                "--buffer_compress_percentage=50", "--refill_buffers", "--randrepeat=0"]
        if rate_mbps:
            args.append(f"--rate={int(rate_mbps * 1e6)}")
        return _fio(args, timeout=seconds + 120)

    def run(self, seconds: float, rate_mbps: float | None) -> dict:
        rpo: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.1):
                try:
                    rpo.append(self.protect_counters().get("rpo_ms", 0.0))
                except Exception:  # a sample lost to a busy moment is not a figure
                    pass

        r0, p0, f0 = self.recover_counters(), self.protect_counters(), self.f.counters()
        sampler = threading.Thread(target=sample)
        t0 = time.monotonic()
        sampler.start()
        fio = self.fio(seconds, rate_mbps)
        elapsed = time.monotonic() - t0
        r1 = self.recover_counters()
        # drain: how long until everything received is durable
        t_drain = time.monotonic()
        while self.protect_counters().get("buffered_bytes", 0) > 0 and time.monotonic() - t_drain < 120:
            time.sleep(0.05)
        drain_s = time.monotonic() - t_drain
        stop.set()
        sampler.join()
        p1, f1 = self.protect_counters(), self.f.counters()
        written = fio["jobs"][0]["write"]["io_bytes"]
        raw = p1["raw_bytes_sent"] - p0.get("raw_bytes_sent", 0)
        wire = p1["wire_bytes_sent"] - p0.get("wire_bytes_sent", 0)
        rpo_sorted = sorted(rpo) or [0.0]
        return {
            "offered_MBps": rate_mbps or "max",
            "fio_MBps": written / elapsed / 1e6,
            "journaled_MBps": (r1["bytes"] - r0.get("bytes", 0)) / elapsed / 1e6,
            "drain_s": drain_s,
            "rpo_p50_ms": statistics.median(rpo_sorted),
            "rpo_p99_ms": rpo_sorted[min(len(rpo_sorted) - 1, int(0.99 * len(rpo_sorted)))],
            "rpo_max_ms": rpo_sorted[-1],
            "compression_ratio": raw / wire if wire else 1.0,
            "zstd_level_end": p1.get("zstd_level", 0),
            "dirty_MB": (f1.get("dirty_bytes", 0) - f0.get("dirty_bytes", 0)) / 1e6
            + (p1.get("dropped_bytes", 0) - p0.get("dropped_bytes", 0)) / 1e6,
        }

    def close(self) -> None:
        self.lab.close()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench replication", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60, help="duration of each measured run (default 60)")
    ap.add_argument("--loads", default="20,50,100", help="offered loads in MB/s for the RPO runs")
    ap.add_argument("--buffer-mib", type=int, default=256, help="protect VRA buffer of unacked data")
    ap.add_argument("--no-compression", action="store_true", help="the VPG's 'no compression' setting")
    ap.add_argument("--dir", type=Path, default=None, help="where journals and volumes go (default: a temp dir)")
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="bench-replication-", dir=args.dir))
    rows = []
    print(f"bench replication: working in {base}", file=sys.stderr)
    disk = disk_baseline(base, min(10.0, args.seconds))
    zstd_mbps, zstd_ratio = zstd_baseline(base)
    rows.append({"run": "baseline: disk seq write 1 MiB + fdatasync", "MBps": disk})
    rows.append({"run": "baseline: zstd level 1, one thread", "MBps": zstd_mbps, "compression_ratio": zstd_ratio})
    phases = [("sustained, unthrottled", None)] + [(f"offered {x} MB/s", float(x)) for x in args.loads.split(",")]
    for i, (name, rate) in enumerate(phases):
        tmp = base / f"run-{i}"
        tmp.mkdir()
        setup = Setup(tmp, args.buffer_mib, compression=not args.no_compression)
        try:
            print(f"bench replication: {name} for {args.seconds:.0f} s", file=sys.stderr)
            result = setup.run(args.seconds, rate)
        finally:
            setup.close()
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
        rows.append({"run": name, "MBps": result["journaled_MBps"], **result})
    subprocess.run(["rm", "-rf", str(base)], check=False)
    emit("replication", rows, {
        "seconds": args.seconds,
        "compression": not args.no_compression,
        "rpo": "age of the oldest write the protect VRA received that is not yet durable in the recovery journal",
        "MBps": "bytes durable in the recovery journal per second of the run (baselines: their own rate)",
        "targets": {"sustained_MBps": 100, "rpo_p99_ms_at_50MBps": 1000},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
