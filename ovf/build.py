#!/usr/bin/env python3
"""Build the VRA appliance's disk image named by ovf/vra.ovf.

Until the Debian appliance image exists (a later issue), the disk is a small placeholder: a 1 GiB
(virtual size) streamOptimized VMDK, as OVF import expects, whose first sector says what it is. It is made
with qemu-img (Debian's qemu-utils) and is about 200 KB.

    python ovf/build.py [--out DIR]      # default: ovf/build/ ; prints the directory holding vra.ovf + disk
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DESCRIPTOR = HERE / "vra.ovf"
DISK = "vra-disk1.vmdk"
VIRTUAL_SIZE = 1 << 30
MARKER = b"ZVR VRA placeholder image: replace with the appliance build\n"


def build(out: Path) -> Path:
    """Write vra.ovf and its disk into ``out`` (if the disk is missing or older than this script).

    Safe to run from several processes or threads at once: one builds while the others wait on a lock in
    ``out``, and each file appears whole (written beside it, then renamed over it), so a deploy reading the
    package never sees half a disk or descriptor.
    """
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _build_locked(out)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out


def _build_locked(out: Path) -> None:
    disk = out / DISK
    if not disk.exists() or disk.stat().st_mtime < Path(__file__).stat().st_mtime:
        if shutil.which("qemu-img") is None:
            raise SystemExit("building the VRA disk needs qemu-img: apt-get install qemu-utils")
        with tempfile.TemporaryDirectory(dir=out, prefix=".build-") as tmp:
            raw = Path(tmp) / "disk.raw"
            with open(raw, "wb") as f:
                f.write(MARKER.ljust(512, b"\0"))
                f.truncate(VIRTUAL_SIZE)
            tmp_disk = Path(tmp) / DISK
            subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o",
                            "subformat=streamOptimized", str(raw), str(tmp_disk)], check=True)
            os.replace(tmp_disk, disk)  # same directory tree, same filesystem: atomic
    descriptor = out / DESCRIPTOR.name
    data = DESCRIPTOR.read_bytes()
    if not descriptor.exists() or descriptor.read_bytes() != data:
        partial = out / f".{DESCRIPTOR.name}.{os.getpid()}"
        partial.write_bytes(data)
        os.replace(partial, descriptor)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=HERE / "build")
    args = p.parse_args(argv)
    print(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
