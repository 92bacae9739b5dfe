"""The guest image: Debian's kernel, a small initramfs and an ext4 root disk, from Debian packages only.

    python -m guests.image          prints the directory holding vmlinuz, initrd.gz, disk.raw

``mmdebstrap --variant=extract`` fetches ``PACKAGES`` (and what they depend on) from this machine's Debian
mirror (``ovf.debian_image.debian_sources``) and unpacks them without configuring anything (about 20 s);
from that tree this module takes only what the guest runs:

- ``vmlinuz``: ``linux-image-cloud-amd64`` (ext4 and the serial ports are built in), booted directly by QEMU
  (``-kernel``), so the disk needs no boot loader.
- ``initrd.gz``: a newc cpio written here (no cpio tool needed) with busybox-static, the virtio modules the
  kernel lacks (``MODULES`` and their ``depends=``, in load order), e2fsck and its libraries, and
  ``files/initramfs-init``.
- ``disk.raw``: ``DISK_MIB`` of ext4 (no partition table: root=/dev/vda) made with ``mkfs.ext4 -d``, holding
  busybox, sqlite3 (the shell, with its sha3() function) and its libraries, and ``files/app-init`` as
  ``/sbin/init``. The database is made at the first boot. This disk is what the tests protect.

Everything is cached in ``.cache/guests/<key>/`` (``ZVR_GUEST_CACHE`` overrides the parent), ``key`` a hash of
this module, ``files/`` and the apt sources. Needs mmdebstrap and e2fsprogs (``mkfs.ext4``); as non-root
mmdebstrap runs in unshare mode.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from guests.runner import GuestImage  # noqa: E402
from ovf.debian_image import ImageError, cached, debian_sources, input_hash, require_tools  # noqa: E402

PACKAGES = ("linux-image-cloud-amd64", "busybox-static", "sqlite3", "e2fsprogs")
# the cloud kernel builds ext4 and the 8250 serial ports in; the virtio disk needs these modules
MODULES = ("virtio_pci", "virtio_blk")
DISK_MIB = 64  # room for busybox, sqlite3 (8 MiB) and a database of some thousand transactions
EPOCH = 1747699200  # SOURCE_DATE_EPOCH, as the appliance's (ovf/debian_image.py)
FILES = HERE / "files"
LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")
LOADER = "lib64/ld-linux-x86-64.so.2"
FS_UUID = "5a7e0000-0000-4000-8000-00000000c0de"
FS_BLOCK = 4096  # as sqlite's page (mkfs would take 1 KiB for so small a disk)


def cache_root() -> Path:
    return Path(os.environ.get("ZVR_GUEST_CACHE") or ROOT / ".cache" / "guests")


def cache_key() -> str:
    return input_hash(Path(__file__), FILES, " ".join(PACKAGES), " ".join(MODULES), str(DISK_MIB),
                      debian_sources())


def _log(msg: str) -> None:
    print(f"[guests.image] {msg}", file=sys.stderr, flush=True)


def _run(step: str, argv: list[str], **kw) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ImageError(f"guest image: {step} failed ({argv[0]} exited {proc.returncode}):\n{tail}")
    return proc.stdout


def _extract(tree: Path) -> None:
    require_tools("mmdebstrap")
    with tempfile.TemporaryDirectory(prefix="zvr-guest-") as tmp:
        sources = Path(tmp) / "debian.sources"
        sources.write_text(debian_sources())
        _run("mmdebstrap", ["mmdebstrap", "--variant=extract", "--mode=" + ("root" if os.geteuid() == 0 else "unshare"),
                            "--format=directory", "--include=" + ",".join(PACKAGES),
                            "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
                            "--dpkgopt=path-exclude=/usr/share/locale/*", "bookworm", str(tree), str(sources)],
             env={**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH), "LC_ALL": "C.UTF-8"})


def libraries(tree: Path, binary: str) -> list[str]:
    """The shared libraries ``binary`` (a path inside ``tree``) loads, as paths inside ``tree``, loader
    included: asked of the tree's own dynamic loader, pointed at the tree's library directories."""
    out = _run(f"libraries of {binary}", [str(tree / LOADER), "--library-path",
                                          ":".join(str(tree / d) for d in LIB_DIRS), "--list", str(tree / binary)])
    found = [LOADER]
    for line in out.splitlines():
        m = re.search(r"=>\s+(\S+)", line)
        if m:
            path = Path(m.group(1))
            for d in LIB_DIRS:
                if (tree / d / path.name).exists():
                    found.append(f"{d}/{path.name}")
                    break
            else:
                raise ImageError(f"guest image: {binary} needs {path.name}, which no package in {PACKAGES} has")
    return found


def module_order(modules_dir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """The ``.ko`` files of ``wanted`` and of what they depend on (their ``depends=`` modinfo), dependencies
    first."""
    files = {p.name[:-3].replace("-", "_"): p for p in modules_dir.rglob("*.ko")}
    order: list[Path] = []

    def visit(name: str) -> None:
        if name not in files:
            raise ImageError(f"guest image: kernel module {name} not found under {modules_dir}")
        if files[name] in order:
            return
        m = re.search(rb"\0depends=([^\0]*)\0", b"\0" + files[name].read_bytes())
        for dep in filter(None, (m.group(1).decode().split(",") if m else [])):
            visit(dep.replace("-", "_"))
        order.append(files[name])

    for name in wanted:
        visit(name)
    return order


def _cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (name, mode, data) entries (directories: mode with S_IFDIR and no data)."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        nb = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, EPOCH, len(data), 0, 0, 0, 0, len(nb), 0)
        out.write(b"070701" + b"".join(f"{v:08x}".encode() for v in fields) + nb)
        out.write(b"\0" * (-(110 + len(nb)) % 4) + data + b"\0" * (-len(data) % 4))
    return out.getvalue()


def _initramfs(tree: Path, out: Path) -> None:
    kernel_modules = next((tree / "lib" / "modules").iterdir())
    mods = module_order(kernel_modules, MODULES)
    entries: list[tuple[str, int, bytes]] = []
    dirs: set[str] = set()

    def add(name: str, data: bytes, mode: int = 0o100755) -> None:
        parts = name.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.add(d)
                entries.append((d, 0o040755, b""))
        entries.append((name, mode, data))

    add("init", (FILES / "initramfs-init").read_bytes())
    add("bin/busybox", (tree / "bin" / "busybox").read_bytes())
    add("modules.order", "".join(p.name[:-3] + "\n" for p in mods).encode(), 0o100644)
    for p in mods:
        add(f"lib/modules/{p.name}", p.read_bytes(), 0o100644)
    for path in {"sbin/e2fsck", *libraries(tree, "sbin/e2fsck")}:
        add(path, (tree / path).resolve().read_bytes())
    out.write_bytes(gzip.compress(_cpio(sorted(entries, key=lambda e: e[0])), 6, mtime=EPOCH))


def _disk(tree: Path, out: Path) -> None:
    require_tools("mkfs.ext4")
    with tempfile.TemporaryDirectory(prefix="zvr-guest-root-") as tmp:
        root = Path(tmp)
        for d in ("bin", "sbin", "usr/bin", "dev", "proc", "sys", "tmp", "data", "etc", "mnt"):
            (root / d).mkdir(parents=True, exist_ok=True)
        shutil.copy(tree / "bin" / "busybox", root / "bin" / "busybox")
        for applet in _run("busybox applets", [str(tree / "bin" / "busybox"), "--list"]).split():
            if applet not in ("busybox", "init"):
                (root / "bin" / applet).symlink_to("busybox")
        for path in {"usr/bin/sqlite3", *libraries(tree, "usr/bin/sqlite3")}:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile((tree / path).resolve(), root / path)
            (root / path).chmod(0o755)
        shutil.copyfile(FILES / "app-init", root / "sbin" / "init")
        (root / "sbin" / "init").chmod(0o755)
        (root / "etc" / "hostname").write_text("zvr-guest\n")
        size = DISK_MIB << 20
        with open(out, "wb") as f:
            f.truncate(size)
        _run("mkfs.ext4", ["mkfs.ext4", "-q", "-F", "-b", str(FS_BLOCK), "-L", "zvr-guest", "-U", FS_UUID, "-d", str(root),
                           "-E", f"hash_seed={FS_UUID},root_owner=0:0", str(out)],
             env={**os.environ, "E2FSPROGS_FAKE_TIME": str(EPOCH)})


def _make(out: Path) -> None:
    started = time.monotonic()
    tree = out / "tree"
    _log("mmdebstrap --variant=extract " + " ".join(PACKAGES))
    _extract(tree)
    extracted = time.monotonic() - started
    shutil.copyfile(next((tree / "boot").glob("vmlinuz-*")), out / "vmlinuz")
    _initramfs(tree, out / "initrd.gz")
    _disk(tree, out / "disk.raw")
    kernel = next((tree / "lib" / "modules").iterdir()).name
    _run("removing the package tree", ["rm", "-rf", "--one-file-system", str(tree)])
    (out / "build.json").write_text(json.dumps({
        "kernel": kernel, "build_s": round(time.monotonic() - started, 1), "extract_s": round(extracted, 1),
        "initrd_bytes": (out / "initrd.gz").stat().st_size, "disk_mib": DISK_MIB,
    }, indent=1) + "\n")
    _log(f"built in {time.monotonic() - started:.0f} s")


def build() -> GuestImage:
    """The cached guest image, built if missing (see the module docstring); builds of other inputs are
    removed."""
    built = cached(cache_root(), cache_key(), _make)
    for old in cache_root().iterdir():
        if old != built and re.fullmatch(r"[0-9a-f]{16}", old.name):
            shutil.rmtree(old, ignore_errors=True)
    return GuestImage(built)


def main() -> int:
    print(build().dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
