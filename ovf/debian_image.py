"""Debian disk images from Debian packages alone: a root file system made by mmdebstrap, assembled into a
disk that boots by itself with BIOS GRUB, without loop mounts or root-only tricks on the build machine.

The API (the VRA appliance uses it, and so may any other guest image, e.g. a protected VM's):

- ``debian_sources()``: the Debian entries of this machine's apt configuration (deb822 text), so an image is
  made from the mirror (and snapshot) the machine itself uses.
- ``build_rootfs(spec, root, log, cache_dir)``: ``mmdebstrap`` of ``spec.suite`` with ``spec.packages`` into
  the directory ``root``, then ``spec.customize`` (shell commands run with ``$1`` = the root, as mmdebstrap's
  customize hooks). The kernel is Debian's (``linux-image-cloud-amd64`` unless the spec names another).
  With ``cache_dir`` the Debian part is cached as a tarball keyed by ``base_key(spec)``.
- ``assemble_disk(root, raw, spec)``: a raw disk image: an MBR partition table with one ext4 partition at
  1 MiB made with ``mkfs.ext4 -d root`` at that offset inside the file, GRUB's ``boot.img`` in the MBR and a
  ``core.img`` (``grub-mkimage``, every module it needs built in) in the gap before the partition, and a
  ``/boot/grub/grub.cfg`` that boots ``/vmlinuz`` with ``/initrd.img`` on both the screen and the serial
  console.
- ``to_stream_vmdk(raw, vmdk)``: the streamOptimized VMDK vCenter's OVF import takes.
- ``cached(cache_dir, key, make)``: a build output kept under ``cache_dir/key`` (``key`` a hash of every
  input), made at most once even by several processes at once.

Reproducible inputs: ``SOURCE_DATE_EPOCH`` (``spec.epoch``) is given to mmdebstrap, and the file system's
UUID and hash seed derive from ``spec.name``. The packages themselves come from whatever the mirror serves
for the suite (a snapshot mirror, as on the CI machines, pins them).

Failures raise ``ImageError`` with the step and the tool's last output lines.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_KERNEL = "linux-image-cloud-amd64"
BASE_PACKAGES = ("systemd-sysv", "udev", "kmod", "iproute2", "initramfs-tools", "zstd")
# grub-mkimage builds these into core.img, so the disk needs no /boot/grub/i386-pc
GRUB_MODULES = ("biosdisk", "part_msdos", "ext2", "normal", "linux", "serial", "terminal", "echo", "test",
                "search", "configfile")
GRUB_DIR = Path("/usr/lib/grub/i386-pc")
SECTOR = 512
PARTITION_START = 2048  # sectors: 1 MiB, the usual alignment; core.img lives in the gap before it
TOOLS = {"mmdebstrap": "mmdebstrap", "mkfs.ext4": "e2fsprogs", "sfdisk": "fdisk", "grub-mkimage": "grub-pc-bin",
         "qemu-img": "qemu-utils"}


class ImageError(Exception):
    """A step of the image build failed; the message names the step and what the tool said."""


@dataclass(frozen=True)
class ImageSpec:
    """What goes into a guest image. ``customize`` runs after the packages are installed."""

    name: str
    packages: tuple[str, ...] = ()
    suite: str = "bookworm"
    kernel: str = DEFAULT_KERNEL
    customize: tuple[str, ...] = ()
    disk_mib: int = 4096
    cmdline: str = "ro"
    epoch: int = 1747699200  # 2025-05-20, the CI machines' snapshot date
    exclude_paths: tuple[str, ...] = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
                                      "/usr/share/locale/*", "/usr/share/lintian/*")
    extra: dict = field(default_factory=dict)

    @property
    def fs_uuid(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"zvr-image:{self.name}"))

    def all_packages(self) -> list[str]:
        return sorted({*BASE_PACKAGES, self.kernel, *self.packages})


def require_tools(*names: str) -> None:
    missing = [n for n in (names or TOOLS) if shutil.which(n) is None]
    if missing:
        raise ImageError("building a disk image needs " + ", ".join(missing) + ": apt-get install "
                         + " ".join(sorted({TOOLS.get(n, n) for n in missing})))


def debian_sources(paths: tuple[Path, ...] = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))) -> str:
    """This machine's Debian apt sources as deb822 stanzas (other vendors' repositories left out)."""
    stanzas: list[str] = []
    for base in paths:
        files = sorted(base.glob("*.sources")) + sorted(base.glob("*.list")) if base.is_dir() else [base]
        for f in files:
            if not f.is_file():
                continue
            text = f.read_text()
            if f.suffix == ".sources":
                for stanza in text.split("\n\n"):
                    lines = [ln for ln in stanza.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
                    fields = {ln.split(":", 1)[0].strip().lower(): ln.split(":", 1)[1].strip()
                              for ln in lines if ":" in ln}
                    if "deb" in fields.get("types", "").split() and _is_debian(fields.get("uris", "")):
                        stanzas.append("\n".join(ln for ln in lines if not ln.lower().startswith("types:")))
            else:
                for ln in text.splitlines():
                    parts = ln.split("#", 1)[0].split()
                    if len(parts) >= 4 and parts[0] == "deb" and not parts[1].startswith("[") \
                            and _is_debian(parts[1]):
                        stanzas.append(f"URIs: {parts[1]}\nSuites: {parts[2]}\nComponents: {' '.join(parts[3:])}")
    if not stanzas:
        raise ImageError("no Debian repository in this machine's apt sources (/etc/apt): add deb.debian.org")
    return "\n\n".join("Types: deb\n" + s for s in stanzas) + "\n"


def _is_debian(uris: str) -> bool:
    return any(u.rstrip("/").endswith(("/debian", "/debian-security")) for u in uris.split())


def _run(step: str, argv: list[str], log: Callable[[str], None] | None = None, **kw) -> str:
    if log:
        log(f"{step}: {' '.join(argv[:3])} ...")
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ImageError(f"{step} failed ({argv[0]} exited {proc.returncode}):\n{tail}")
    return proc.stdout


def _mmdebstrap(spec: ImageSpec, target: Path, fmt: str, hooks: tuple[str, ...],
                log: Callable[[str], None] | None) -> None:
    require_tools("mmdebstrap")
    with tempfile.TemporaryDirectory(prefix="zvr-image-") as tmp:
        sources = Path(tmp) / "debian.sources"
        sources.write_text(debian_sources())
        argv = ["mmdebstrap", "--variant=apt", "--mode=" + ("root" if os.geteuid() == 0 else "unshare"),
                f"--format={fmt}", "--include=" + ",".join(spec.all_packages()),
                "--aptopt=APT::Install-Recommends \"false\"",
                # the initramfs is made for any disk (every storage driver), not for the build machine's
                "--essential-hook=mkdir -p \"$1/etc/initramfs-tools/conf.d\" && "
                "echo MODULES=most > \"$1/etc/initramfs-tools/conf.d/zvr\""]
        argv += [f"--dpkgopt=path-exclude={p}" for p in spec.exclude_paths]
        argv += ["--dpkgopt=path-include=/usr/share/doc/*/copyright"]
        argv += [f"--customize-hook={c}" for c in hooks]
        argv += ["--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*.bin"]
        argv += [spec.suite, str(target), str(sources)]
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(spec.epoch), "LC_ALL": "C.UTF-8"}
        _run("mmdebstrap", argv, log, env=env)


def base_key(spec: ImageSpec) -> str:
    """What the Debian base of ``spec`` depends on: its packages and suite, the apt sources, how mmdebstrap
    is run."""
    return input_hash(inspect.getsource(_mmdebstrap), spec.suite, spec.kernel, " ".join(spec.all_packages()),
                      " ".join(spec.exclude_paths), str(spec.epoch), debian_sources())


def build_rootfs(spec: ImageSpec, root: Path, log: Callable[[str], None] | None = None,
                 cache_dir: Path | None = None) -> Path:
    """The root file system of ``spec`` in the (new or empty) directory ``root``; returns it.

    With ``cache_dir`` (needs root, to keep file owners): the Debian base (mmdebstrap, minutes) is kept as a
    tarball in ``cache_dir/<base_key>/`` and unpacked here, then ``spec.customize`` runs on it, so a change
    to what the customize hooks add costs seconds. Without it: one mmdebstrap run with the hooks.
    """
    root.mkdir(parents=True, exist_ok=True)
    if cache_dir is None or os.geteuid() != 0:
        _mmdebstrap(spec, root, "directory", spec.customize, log)
        return root
    base = cached(cache_dir, base_key(spec), lambda d: _mmdebstrap(spec, d / "base.tar", "tar", (), log))
    _run("unpacking the Debian base", ["tar", "-xpf", str(base / "base.tar"), "--numeric-owner", "--xattrs",
                                       "--xattrs-include=*", "-C", str(root)], log)
    for hook in spec.customize:
        _run("customize hook", ["sh", "-c", hook, "sh", str(root)], log,
             env={**os.environ, "SOURCE_DATE_EPOCH": str(spec.epoch), "LC_ALL": "C.UTF-8"})
    return root


def _grub_cfg(spec: ImageSpec) -> str:
    return f"""# made by ovf/debian_image.py for this disk
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
menuentry '{spec.name}' {{
  linux /vmlinuz root=UUID={spec.fs_uuid} {spec.cmdline} console=tty0 console=ttyS0,115200n8
  initrd /initrd.img
}}
"""


def assemble_disk(root: Path, raw: Path, spec: ImageSpec, log: Callable[[str], None] | None = None) -> Path:
    """Write the bootable raw disk ``raw`` holding ``root`` (see the module docstring); returns it."""
    require_tools("mkfs.ext4", "sfdisk", "grub-mkimage")
    for name in ("vmlinuz", "initrd.img"):
        if not (root / name).exists():
            raise ImageError(f"{root} has no /{name}: the image needs a Debian kernel package (spec.kernel)")
    (root / "boot" / "grub").mkdir(parents=True, exist_ok=True)
    (root / "boot" / "grub" / "grub.cfg").write_text(_grub_cfg(spec))
    size = spec.disk_mib << 20
    raw.unlink(missing_ok=True)
    with open(raw, "wb") as f:
        f.truncate(size)
    _run("partition table", ["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(raw)], log,
         input=f"label: dos\nlabel-id: 0x{int(spec.fs_uuid[:8], 16):08x}\n"
               f"start={PARTITION_START}, type=83, bootable\n")
    part_bytes = size - PARTITION_START * SECTOR
    seed = str(uuid.uuid5(uuid.NAMESPACE_URL, f"zvr-image-seed:{spec.name}"))
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": str(spec.epoch)}
    _run("root file system", ["mkfs.ext4", "-q", "-F", "-L", "root", "-U", spec.fs_uuid, "-d", str(root),
                              "-E", f"offset={PARTITION_START * SECTOR},hash_seed={seed},root_owner=0:0",
                              str(raw), f"{part_bytes // 1024}k"], log, env=env)
    with tempfile.TemporaryDirectory(prefix="zvr-grub-") as tmp:
        core = Path(tmp) / "core.img"
        _run("GRUB core image", ["grub-mkimage", "-O", "i386-pc", "-o", str(core),
                                 "-p", "(hd0,msdos1)/boot/grub", *GRUB_MODULES], log)
        core_bytes = core.read_bytes()
    if len(core_bytes) > (PARTITION_START - 1) * SECTOR:
        raise ImageError(f"GRUB's core.img ({len(core_bytes)} bytes) does not fit before the partition")
    boot = (GRUB_DIR / "boot.img").read_bytes()
    with open(raw, "r+b") as f:
        f.write(boot[:440])  # the boot code only: the disk signature and partition table stay
        f.seek(SECTOR)  # boot.img loads sector 1, core.img's first sector (diskboot) loads the rest
        f.write(core_bytes)
    return raw


def to_stream_vmdk(raw: Path, vmdk: Path, log: Callable[[str], None] | None = None) -> Path:
    require_tools("qemu-img")
    _run("streamOptimized VMDK", ["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o",
                                  "subformat=streamOptimized", str(raw), str(vmdk)], log)
    return vmdk


def input_hash(*parts: bytes | str | Path) -> str:
    """A short hash of build inputs: bytes, strings, or files / directory trees (names and contents)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            files = sorted(p for p in part.rglob("*") if p.is_file()) if part.is_dir() else [part]
            for p in files:
                if "__pycache__" in p.parts:
                    continue
                h.update(str(p.relative_to(part) if part.is_dir() else p.name).encode() + b"\0")
                h.update(p.read_bytes())
        else:
            h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\1")
    return h.hexdigest()[:16]


def cached(cache_dir: Path, key: str, make: Callable[[Path], None]) -> Path:
    """The directory ``cache_dir/key``, made by ``make(tmpdir)`` unless it exists; one maker at a time."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / key
    with open(cache_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if final.is_dir():
                return final
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
            try:
                make(tmp)
                tmp.chmod(0o755)  # mkdtemp made it private; the build is for whoever runs the tests
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final
