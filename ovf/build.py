#!/usr/bin/env python3
"""Build the VRA appliance: ``zvr-vra-<version>.ova``, a Debian VM that runs `vra serve`.

    python -m ovf.build [--out DIR]     (or ./run build-vra)  prints the path of the OVA

The OVA is a tar of ``vra.ovf`` (first), ``vra.mf`` (SHA256 of the others, second) and ``vra-disk1.vmdk``
(streamOptimized, what vCenter's OVF import takes). The disk (ovf/debian_image.py) holds Debian bookworm
from this machine's Debian mirror (Debian's cloud kernel, systemd, nftables, OpenSSH, open-vm-tools), and in
``/opt/zvr`` a virtual environment with this project's wheel and the dependencies locked in
requirements/product.txt, installed with ``--require-hashes`` from a wheelhouse fetched with
``pip download --require-hashes``: nothing else is downloaded. The appliance's units and settings are in
ovf/appliance/ (files/ and customize.sh); what runs in it is vra_appliance/appliance/.

The result is cached in ``.cache/appliance/<key>/`` (``ZVR_APPLIANCE_CACHE`` overrides), ``key`` a hash of
every input: this build's scripts, the descriptor, the lock, the project's sources and the apt sources; a
build with the same inputs is not made again. ``build(out)`` (what the ZVM's VRA install calls through
zvm/vra_package.py) links the cached descriptor and disk into ``out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # loaded by file path (zvm/vra_package.py) or run as a script
    sys.path.insert(0, str(ROOT))

from ovf.debian_image import (  # noqa: E402
    ImageError,
    ImageSpec,
    assemble_disk,
    build_rootfs,
    cached,
    debian_sources,
    input_hash,
    to_stream_vmdk,
)

DESCRIPTOR = HERE / "vra.ovf"
APPLIANCE = HERE / "appliance"
LOCK = ROOT / "requirements" / "product.txt"
DISK = "vra-disk1.vmdk"
MANIFEST = "vra.mf"
DISK_MIB = 8192  # virtual size; the recovery journals and scratch live on it (sparse: the OVA holds the data)
PACKAGES = ("python3", "python3-venv", "nftables", "openssh-server", "open-vm-tools", "systemd-resolved",
            "ca-certificates")
PROJECT_SOURCES = ("pyproject.toml", "vra_appliance", "zvm", "vsphere_plugin", "installer", "bench")
# pip download: wheels for Debian bookworm's Python 3.11 on x86-64 (glibc 2.36)
WHEEL_PLATFORMS = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64",
                   *(f"manylinux_2_{n}_x86_64" for n in range(5, 37))]


def version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def cache_root() -> Path:
    return Path(os.environ.get("ZVR_APPLIANCE_CACHE") or ROOT / ".cache" / "appliance")


def cache_key() -> str:
    return input_hash(Path(__file__), HERE / "debian_image.py", DESCRIPTOR, APPLIANCE, LOCK, debian_sources(),
                      *(ROOT / p for p in PROJECT_SOURCES))


def spec() -> ImageSpec:
    return ImageSpec(name=f"zvr-vra-{version()}", packages=PACKAGES, disk_mib=DISK_MIB)


def _log(msg: str) -> None:
    print(f"[ovf.build] {msg}", file=sys.stderr, flush=True)


def _run(argv: list[str], **kw) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise ImageError(f"{' '.join(argv[:4])} ... failed:\n{(proc.stdout + proc.stderr)[-3000:]}")


def wheelhouse(epoch: int) -> Path:
    """The locked dependencies' wheels (cached by the lock's hash) plus this project's wheel."""
    deps = cached(cache_root() / "wheelhouse", input_hash(LOCK, " ".join(WHEEL_PLATFORMS)), lambda d: _run(
        [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--require-hashes",
         "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
         *(a for p in WHEEL_PLATFORMS for a in ("--platform", p)), "-r", str(LOCK), "-d", str(d)]))

    def project(d: Path) -> None:
        for f in deps.iterdir():
            os.link(f, d / f.name)
        shutil.copy(LOCK, d / "product.txt")
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
              "--no-build-isolation", "-w", str(d), str(ROOT)],
             env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch)})
        shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools' scratch in the source tree

    return cached(cache_root() / "wheelhouse", input_hash(deps.name, *(ROOT / p for p in PROJECT_SOURCES)), project)


def descriptor(disk: Path, capacity_mib: int) -> str:
    """vra.ovf with the disk's size and capacity filled in."""
    text = DESCRIPTOR.read_text()
    text = text.replace('ovf:href="vra-disk1.vmdk"', f'ovf:href="{DISK}" ovf:size="{disk.stat().st_size}"', 1)
    text = re.sub(r'ovf:capacity="\d+" ovf:capacityAllocationUnits="byte \* 2\^30"',
                  f'ovf:capacity="{capacity_mib}" ovf:capacityAllocationUnits="byte * 2^20"', text, count=1)
    return re.sub(r"<Version>[^<]*</Version>", f"<Version>{version()}</Version>", text, count=1)


def _make(out: Path) -> None:
    from vra_appliance.appliance.system import ruleset

    started = time.monotonic()
    s = spec()
    wheels = wheelhouse(s.epoch)
    _log(f"wheelhouse ready ({time.monotonic() - started:.0f} s)")
    files = out / "files"
    shutil.copytree(APPLIANCE / "files", files)
    (files / "etc" / "nftables.conf").write_text(ruleset(None))
    (files / "etc" / "fstab").write_text(f"UUID={s.fs_uuid} / ext4 errors=remount-ro 0 1\n")
    s = dataclasses.replace(s, customize=(f'sh {APPLIANCE / "customize.sh"} "$1" {wheels} {files}',))
    root = out / "rootfs"
    build_rootfs(s, root, _log, cache_dir=cache_root() / "debian-base")
    rootfs_s = time.monotonic() - started
    raw = out / "disk.raw"
    assemble_disk(root, raw, s, _log)
    disk = to_stream_vmdk(raw, out / DISK, _log)
    for scratch in (raw, root, files):
        if scratch.is_dir():
            _run(["rm", "-rf", "--one-file-system", str(scratch)])
        else:
            scratch.unlink()
    ovf = out / DESCRIPTOR.name
    ovf.write_text(descriptor(disk, s.disk_mib))
    (out / MANIFEST).write_text("".join(f"SHA256({p.name})= {_sha256(p)}\n" for p in (ovf, disk)))
    ova = out / f"zvr-vra-{version()}.ova"
    with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as tar:
        for p in (ovf, out / MANIFEST, disk):  # the order OVF import expects: descriptor, manifest, disk
            info = tar.gettarinfo(str(p), arcname=p.name)
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = s.epoch, 0, 0, "", "", 0o644
            with open(p, "rb") as f:
                tar.addfile(info, f)
    (out / "build.json").write_text(json.dumps({
        "version": version(), "build_s": round(time.monotonic() - started, 1), "rootfs_s": round(rootfs_s, 1),
        "ova_bytes": ova.stat().st_size, "disk_bytes": disk.stat().st_size, "disk_virtual_mib": s.disk_mib,
    }, indent=1) + "\n")
    _log(f"built {ova.name} in {time.monotonic() - started:.0f} s")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_ova() -> Path:
    """The cached build's directory (OVA, descriptor, manifest, disk, build.json); built if missing.
    Builds of other inputs are removed but the newest one (a build is about 400 MB; packages linked
    from one elsewhere keep their files)."""
    built = cached(cache_root(), cache_key(), _make)
    older = sorted((d for d in cache_root().iterdir() if re.fullmatch(r"[0-9a-f]{16}", d.name) and d != built),
                   key=lambda d: d.stat().st_mtime, reverse=True)
    for d in older[1:]:
        shutil.rmtree(d, ignore_errors=True)
    return built


def build(out: Path) -> Path:
    """``out`` holding vra.ovf and its disk (linked from the cached build); returns ``out``.

    Safe from several processes or threads at once: one links while the others wait on a lock in ``out``,
    and each file appears whole (made beside it, then renamed over it).
    """
    built = build_ova()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            stamp = out / ".built-from"
            if stamp.exists() and stamp.read_text() == built.name and (out / DISK).exists() \
                    and (out / DESCRIPTOR.name).exists():
                return out
            for name in (DISK, MANIFEST, DESCRIPTOR.name):  # the descriptor last: it names the disk
                if (out / name).exists() and os.path.samefile(out / name, built / name):
                    continue  # linked already (and rename() of two links to one file does nothing)
                partial = out / f".{name}.{os.getpid()}"
                partial.unlink(missing_ok=True)
                try:
                    os.link(built / name, partial)
                except OSError:  # another file system
                    shutil.copyfile(built / name, partial)
                os.replace(partial, out / name)
            stamp.write_text(built.name)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="also link the OVA into this directory")
    args = p.parse_args(argv)
    built = build_ova()
    ova = built / f"zvr-vra-{version()}.ova"
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        target = args.out / ova.name
        target.unlink(missing_ok=True)
        try:
            os.link(ova, target)
        except OSError:
            shutil.copyfile(ova, target)
        ova = target
    print(ova)
    return 0


if __name__ == "__main__":
    sys.exit(main())
