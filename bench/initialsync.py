"""`python -m bench initialsync`: initial sync throughput against `nbdcopy` copying the same volume.

The volume (``--size``, 2 GiB by default) is a thin disk as VMs have them: ``--data-pct`` random data,
``--zero-pct`` written zeros (allocated but all zero), the rest holes, in 1 MiB pieces scattered at random.
Each contender copies it to an empty sparse file on the same filesystem; every copy is checked equal to the
source by hash. Contenders:

- ``zvr initial sync``: ``vra_appliance.sync.initial.InitialSync`` reading the volume file (holes skipped by
  SEEK_DATA, zero blocks dropped), a writer thread applying the extents as the recovery side would;
- ``nbdcopy <- nbdkit file``: the baseline for moving bytes here (C, several connections and threads);
- ``nbdcopy <- iofilter NBD server``: the same from the project's own NBD server
  (``vra_appliance.iofilter.nbd`` with a ``FileBackend``), what the lab's real IO clients read through.

Throughput is volume bytes per second of wall time (the volume's size over the time to reproduce it).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import queue
import random
import shutil
import subprocess
import tempfile
import threading
import time

from bench.deltasync import parse_size
from bench.report import emit
from vra_appliance.sync.initial import InitialSync
from vra_appliance.sync.volume import FileVolume

MiB = 1024 * 1024


def make_thin_volume(path: str, size: int, data_pct: float, zero_pct: float, seed: int) -> dict:
    rng = random.Random(seed)
    pieces = size // MiB
    order = list(range(pieces))
    rng.shuffle(order)
    n_data = int(pieces * data_pct / 100)
    n_zero = int(pieces * zero_pct / 100)
    with open(path, "wb") as f:
        f.truncate(size)
        for i, piece in enumerate(order[:n_data + n_zero]):
            f.seek(piece * MiB)
            f.write(rng.randbytes(MiB) if i < n_data else bytes(MiB))
    return {"data_bytes": n_data * MiB, "zero_bytes": n_zero * MiB, "hole_bytes": size - (n_data + n_zero) * MiB}


def file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def run_ours(src: str, dst: str) -> tuple[float, dict]:
    """Reader (the sync) in this thread, writer (the recovery side) in another, a bounded queue between."""
    t = time.perf_counter()
    q: queue.Queue = queue.Queue(maxsize=16)
    with FileVolume(src) as s, FileVolume(dst, writable=True, size=os.path.getsize(src)) as d:
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                while (ext := q.get()) is not None:
                    d.pwrite(ext.offset, ext.data)
            except BaseException as exc:  # reported below
                errors.append(exc)

        th = threading.Thread(target=writer)
        th.start()
        sync = InitialSync(s, "vol")
        try:
            for ext in sync.extents():
                q.put(ext)
        finally:
            q.put(None)
            th.join()
        if errors:
            raise errors[0]
    return time.perf_counter() - t, sync.progress.as_dict()


def run_nbdcopy_nbdkit(src: str, dst: str) -> float:
    t = time.perf_counter()
    subprocess.run(["nbdkit", "-U", "-", "--exit-with-parent", "file", src, "--run", f'nbdcopy "$uri" {dst}'],
                   check=True, capture_output=True)
    return time.perf_counter() - t


def run_nbdcopy_iofilter(src: str, dst: str, work: str) -> float:
    from vra_appliance.iofilter.nbd import FileBackend, NbdServer

    sock = os.path.join(work, "nbd.sock")
    server = NbdServer({"vol": FileBackend(src, name="vol", read_only=True)}, unix_path=sock)
    server.start()
    try:
        t = time.perf_counter()
        subprocess.run(["nbdcopy", f"nbd+unix:///vol?socket={sock}", dst], check=True, capture_output=True)
        return time.perf_counter() - t
    finally:
        server.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench initialsync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=2048 * MiB)
    parser.add_argument("--data-pct", type=float, default=60.0)
    parser.add_argument("--zero-pct", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--no-iofilter", action="store_true", help="skip the nbdcopy from the iofilter server")
    args = parser.parse_args(argv)
    free = shutil.disk_usage(args.dir).free
    if free < 2 * args.size + 1024 * MiB:
        raise SystemExit(f"initialsync: {args.dir} has {free // MiB} MiB free; use --size to make the volume smaller")
    work = tempfile.mkdtemp(prefix="bench-initialsync-", dir=args.dir)
    try:
        src = os.path.join(work, "src.img")
        layout = make_thin_volume(src, args.size, args.data_pct, args.zero_pct, args.seed)
        os.sync()
        want = file_hash(src)
        contenders = [("nbdcopy <- nbdkit file", lambda dst: (run_nbdcopy_nbdkit(src, dst), None)),
                      ("zvr initial sync", lambda dst: run_ours(src, dst))]
        if not args.no_iofilter:
            contenders.append(("nbdcopy <- iofilter NBD server",
                               lambda dst: (run_nbdcopy_iofilter(src, dst, work), None)))
        rows, progress = [], None
        for name, run in contenders:
            dst = os.path.join(work, "dst.img")
            wall, prog = run(dst)
            progress = prog or progress
            rows.append({"copier": name, "wall_s": round(wall, 3),
                         "MB_per_s": round(args.size / wall / 1e6, 1),
                         "allocated_MiB": round(os.stat(dst).st_blocks * 512 / MiB, 1),
                         "equal": file_hash(dst) == want})
            os.unlink(dst)
        base = rows[0]["wall_s"]
        for r in rows:
            r["time_vs_nbdcopy"] = round(r["wall_s"] / base, 3)
        emit("initialsync", rows, {"volume_bytes": args.size, "layout": layout, "ours_progress": progress,
                                   "baseline": "nbdcopy from nbdkit file (also from the iofilter's NBD server)"})
        return 0 if all(r["equal"] for r in rows) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
