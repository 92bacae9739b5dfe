"""`python -m bench deltasync`: our delta sync against `rsync --inplace --no-whole-file`, side by side.

One volume of random data (written once; 4 GiB by default, ``--size`` for less where disk or time is
short), copied twice as the stale replica, then ``--change-pct`` of it rewritten in scattered
``--write-size`` writes at random 4 KiB-aligned offsets. rsync updates one copy between two directories of
this machine; our delta sync (``vra_appliance.sync.delta``, both sides in this process, the recovery side's
hashing in its own thread) updates the other. Reported: bytes on the wire (rsync's --stats "Total bytes
sent" + "Total bytes received"; ours counted by the engine: checksums, requests, data and range headers)
and wall time; both replicas are checked equal to the source by hash.

``--sweep`` instead measures our engine alone over block sizes and fanouts (the table in docs/SYNC.md).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from bench.report import emit
from vra_appliance.sync.checksums import DEFAULT_BLOCK_SIZE, DEFAULT_FANOUT, DeltaParams
from vra_appliance.sync.delta import delta_sync
from vra_appliance.sync.volume import FileVolume

MiB = 1024 * 1024


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?", text.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 4G, 512M")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def make_volumes(paths: list[str], size: int, seed: int) -> None:
    """Write the same random data to every path (the source and its stale copies)."""
    rng = random.Random(seed)
    files = [open(p, "wb") for p in paths]
    try:
        left = size
        while left:
            chunk = rng.randbytes(min(16 * MiB, left))
            for f in files:
                f.write(chunk)
            left -= len(chunk)
    finally:
        for f in files:
            f.close()


def scatter_writes(path: str, size: int, pct: float, write_size: int, seed: int) -> int:
    """Rewrite ``pct`` % of the file in ``write_size`` writes at random 4 KiB-aligned offsets."""
    rng = random.Random(seed + 1)
    count = max(1, int(size * pct / 100 / write_size))
    with open(path, "r+b") as f:
        for _ in range(count):
            off = rng.randrange(0, (size - write_size) // 4096 + 1) * 4096
            f.seek(off)
            f.write(rng.randbytes(write_size))
    return count


def file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def run_rsync(src: str, dst_dir: str) -> dict:
    t = time.perf_counter()
    out = subprocess.run(["rsync", "--inplace", "--no-whole-file", "--ignore-times", "--stats", src, dst_dir + "/"],
                         capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t

    def stat(name: str) -> int:
        m = re.search(rf"^{name}: ([\d,.]+)", out, re.M)
        return int(m.group(1).replace(",", "").replace(".", "")) if m else 0

    sent, received = stat("Total bytes sent"), stat("Total bytes received")
    return {"tool": "rsync --inplace --no-whole-file", "wire_bytes": sent + received, "sent": sent,
            "received": received, "literal_data": stat("Literal data"), "wall_s": wall}


def run_ours(src: str, dst: str, params: DeltaParams) -> tuple[dict, object]:
    t = time.perf_counter()
    with FileVolume(src) as s, FileVolume(dst, writable=True) as d:
        stats = delta_sync(s, "vol", d, params)
    wall = time.perf_counter() - t
    return {"tool": f"zvr delta sync ({params.block_size // 1024} KiB blocks, fanout {params.fanout})",
            "wire_bytes": stats.wire_bytes, "sent": stats.data_bytes + stats.request_bytes
            + stats.ranges * 16, "received": stats.checksum_bytes, "literal_data": stats.data_bytes,
            "wall_s": wall}, stats


def check_space(where: str, need: int) -> None:
    free = shutil.disk_usage(where).free
    if free < need + 1024 * MiB:
        raise SystemExit(f"deltasync: {where} has {free // MiB} MiB free, the run needs {need // MiB} MiB; "
                         "use --size to make the volume smaller, or --dir elsewhere")


def compare(args) -> int:
    size = args.size
    check_space(args.dir, 3 * size)
    work = tempfile.mkdtemp(prefix="bench-deltasync-", dir=args.dir)
    try:
        src = os.path.join(work, "src", "vol.img")
        dst_rsync = os.path.join(work, "rsync", "vol.img")
        dst_ours = os.path.join(work, "ours", "vol.img")
        for p in (src, dst_rsync, dst_ours):
            os.makedirs(os.path.dirname(p))
        t = time.perf_counter()
        make_volumes([src, dst_rsync, dst_ours], size, args.seed)
        writes = scatter_writes(src, size, args.change_pct, args.write_size, args.seed)
        os.sync()
        setup_s = time.perf_counter() - t
        want = file_hash(src)
        params = DeltaParams(args.block_size, args.fanout, salt=os.urandom(16))
        rows = []
        order = ["rsync", "ours"] if args.seed % 2 == 0 else ["ours", "rsync"]
        stats = None
        for which in order:
            if which == "rsync":
                rows.append(run_rsync(src, os.path.dirname(dst_rsync)))
            else:
                row, stats = run_ours(src, dst_ours, params)
                rows.append(row)
        with ThreadPoolExecutor(2) as pool:
            equal = [h == want for h in pool.map(file_hash, [dst_rsync, dst_ours])]
        base = next(r for r in rows if r["tool"].startswith("rsync"))
        for r, ok in zip(sorted(rows, key=lambda r: not r["tool"].startswith("rsync")), equal, strict=True):
            r["replica_equal"] = ok
            r["wire_MiB"] = round(r["wire_bytes"] / MiB, 2)
            r["wire_vs_rsync"] = round(r["wire_bytes"] / base["wire_bytes"], 4)
            r["time_vs_rsync"] = round(r["wall_s"] / base["wall_s"], 3)
        emit("deltasync", rows, {
            "volume_bytes": size, "changed_pct": args.change_pct, "write_size": args.write_size,
            "scattered_writes": writes, "setup_s": round(setup_s, 1), "cpus": os.cpu_count(),
            "ours": {"differing_blocks": stats.differing_blocks, "differing_groups": stats.differing_groups,
                     "checksum_bytes": stats.checksum_bytes, "request_bytes": stats.request_bytes,
                     "data_bytes": stats.data_bytes, "ranges": stats.ranges},
        })
        return 0 if all(equal) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sweep(args) -> int:
    """Our engine alone over block sizes and fanouts, on a volume with the same kind of changes."""
    size = args.size
    check_space(args.dir, 2 * size)
    work = tempfile.mkdtemp(prefix="bench-deltasync-sweep-", dir=args.dir)
    rows = []
    try:
        src, stale = os.path.join(work, "src.img"), os.path.join(work, "stale.img")
        make_volumes([src, stale], size, args.seed)
        writes = scatter_writes(src, size, args.change_pct, args.write_size, args.seed)
        for bs in args.block_sizes:
            for fanout in args.fanouts:
                dst = os.path.join(work, "dst.img")
                shutil.copyfile(stale, dst)
                row, stats = run_ours(src, dst, DeltaParams(bs, fanout, salt=os.urandom(16)))
                rows.append({"block_KiB": bs // 1024, "fanout": fanout, "wire_MiB": round(stats.wire_bytes / MiB, 2),
                             "checksum_MiB": round(stats.checksum_bytes / MiB, 2),
                             "data_MiB": round(stats.data_bytes / MiB, 2), "wall_s": round(row["wall_s"], 2)})
                os.unlink(dst)
        emit("deltasync-sweep", rows, {"volume_bytes": size, "changed_pct": args.change_pct,
                                       "write_size": args.write_size, "scattered_writes": writes})
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench deltasync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=4 * 1024 * MiB, help="volume size (default 4G)")
    parser.add_argument("--change-pct", type=float, default=1.0, help="percent of the volume rewritten")
    parser.add_argument("--write-size", type=parse_size, default=4096, help="size of each scattered write")
    parser.add_argument("--block-size", type=parse_size, default=DEFAULT_BLOCK_SIZE)
    parser.add_argument("--fanout", type=int, default=DEFAULT_FANOUT)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the volumes are written")
    parser.add_argument("--sweep", action="store_true", help="measure block sizes and fanouts instead")
    parser.add_argument("--block-sizes", type=lambda s: [parse_size(x) for x in s.split(",")],
                        default=[4096, 8192, 16384, 32768, 65536, 131072])
    parser.add_argument("--fanouts", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64])
    args = parser.parse_args(argv)
    return sweep(args) if args.sweep else compare(args)
