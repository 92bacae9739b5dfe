"""`python -m bench resync`: how much a bitmap sync resends after an outage, by dirty-map budget.

During an "outage", ``--dirty-mib`` MiB of scattered 4 KiB writes (random 4 KiB-aligned offsets in a
``--size`` volume of random data) land in the IO filter's dirty map (``vra_appliance.iofilter.dirty_map``)
instead of the stream. For each memory budget, from generous (every extent kept) to tight (neighbours
merged), the bitmap sync (``vra_appliance.sync.bitmap``) then reads the map's extents from the volume file.

Reported per budget: extents kept, the map's own memory figure and the memory tracemalloc saw it take
(peak, Python objects included), bytes resent / bytes dirtied (the baseline: a perfect map resends exactly
what was dirtied, ratio 1.0), over-coverage, the bitmap sync's read time, and that every dirtied byte is
covered. The full-volume resend (what a delta sync without checksums, or an initial sync, would read) is the
other bound.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
import tracemalloc

from bench.deltasync import make_volumes, parse_size
from bench.report import emit
from vra_appliance.iofilter.dirty_map import DirtyMap
from vra_appliance.sync.bitmap import BitmapSync
from vra_appliance.sync.volume import FileVolume

MiB = 1024 * 1024
KiB = 1024
DEFAULT_BUDGETS = "4M,1M,256K,224K,192K,160K,128K,64K,16K,4K,1K"


def outage_writes(size: int, dirty_mib: float, seed: int) -> list[int]:
    rng = random.Random(seed)
    count = int(dirty_mib * MiB / 4096)
    return [rng.randrange(0, size // 4096) * 4096 for _ in range(count)]


def fill_map(budget: int, offsets: list[int]) -> tuple[DirtyMap, int]:
    tracemalloc.start()
    try:
        dm = DirtyMap(budget)
        for off in offsets:
            dm.add("vol", off, 4096)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return dm, peak


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench resync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=2048 * MiB, help="volume size (default 2G)")
    parser.add_argument("--dirty-mib", type=float, default=64, help="MiB of scattered 4 KiB writes in the outage")
    parser.add_argument("--budgets", default=DEFAULT_BUDGETS, help="dirty-map budgets, generous to tight")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args(argv)
    budgets = [parse_size(b) for b in args.budgets.split(",")]
    if shutil.disk_usage(args.dir).free < args.size + 1024 * MiB:
        raise SystemExit(f"resync: not enough free space in {args.dir}; use --size")
    work = tempfile.mkdtemp(prefix="bench-resync-", dir=args.dir)
    try:
        src = os.path.join(work, "vol.img")
        make_volumes([src], args.size, args.seed)
        offsets = outage_writes(args.size, args.dirty_mib, args.seed)
        dirtied = len(set(offsets)) * 4096
        rows = []
        with FileVolume(src) as vol:
            for budget in budgets:
                dm, traced_peak = fill_map(budget, offsets)
                covered = all(dm.covers("vol", off, 4096) for off in offsets)
                extents = dm.extents("vol")
                sync = BitmapSync(vol, "vol", extents, over_coverage=dm.over_coverage)
                t = time.perf_counter()
                for _ in sync.extents():
                    pass
                read_s = time.perf_counter() - t
                s = sync.stats
                rows.append({
                    "budget_KiB": round(budget / KiB, 1),
                    "extents": dm.extent_count,
                    "map_memory_KiB": round(dm.memory_bytes / KiB, 1),
                    "traced_peak_KiB": round(traced_peak / KiB, 1),
                    "merge_passes": dm.merge_passes,
                    "dirtied_MiB": round(dirtied / MiB, 2),
                    "resent_MiB": round(s.resent_bytes / MiB, 2),
                    "resent_per_dirtied": round(s.resent_bytes / dirtied, 3),
                    "over_coverage_MiB": round(dm.over_coverage / MiB, 2),
                    "read_s": round(read_s, 3),
                    "every_dirty_byte_covered": covered,
                })
        rows.append({"budget_KiB": "none (full resync)", "resent_MiB": round(args.size / MiB, 2),
                     "resent_per_dirtied": round(args.size / dirtied, 3), "dirtied_MiB": round(dirtied / MiB, 2)})
        emit("resync", rows, {"volume_bytes": args.size, "writes": len(offsets), "write_size": 4096,
                              "dirtied_bytes": dirtied, "extent_bytes": 16})
        return 0 if all(r.get("every_dirty_byte_covered", True) for r in rows) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
