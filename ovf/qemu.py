"""Booting a disk image under QEMU for tests: KVM when it really runs guest code, else TCG; user-mode
networking with port forwards; an optional CD-ROM; the serial console captured to a file per boot.

The API (the VRA appliance's tests use it, and so may any other guest's):

- ``accelerator()``: "kvm" if a KVM guest executes within a few seconds here (SeaBIOS writes to its debug
  port), else "tcg"; ``ZVR_QEMU_ACCEL`` forces one. /dev/kvm may exist and still not work (nested
  virtualisation off): the probe runs a guest rather than trusting the device node. Probed once per process.
  A guest can still fail under KVM later (here firmware and GRUB ran, the kernel hung at once): ``Vm.start``
  waits for the kernel's first console line (``KERNEL_STARTED``) for ``kvm_grace`` seconds, and if it does not
  come, kills the VM, marks KVM unusable for the process and boots again under TCG. Guests must therefore
  log the kernel's messages to the serial console (no ``quiet``).
- ``Vm(disk, workdir, ...)``: ``start()``, ``wait_for_serial(pattern, timeout)`` (a regex over the current
  boot's console, returns the match), ``serial()`` (the text so far), ``stop()`` (ACPI power button, then
  kill), ``restart(cdrom=...)`` (power cycle, e.g. with a new OVF environment). ``forwards`` maps host ports
  (on 127.0.0.1) to guest ports. The disk is never written: the VM writes to a qcow2 overlay in ``workdir``
  (kept across restarts, as a real disk is).
- ``iso(files, path, label)``: an ISO 9660 image (xorriso) holding the given files, e.g. an OVF environment.
- ``free_port()``: a free TCP port on 127.0.0.1.

Devices default to what the VRA's OVF declares for vSphere (pvscsi disk, vmxnet3 NIC) so the guest's
drivers for them are exercised; ``disk_bus="virtio"``/``nic_model="virtio-net-pci"`` for other guests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

QEMU = "qemu-system-x86_64"
KERNEL_STARTED = re.compile(r"Linux version \d")
_ACCEL: str | None = None


class QemuError(Exception):
    """QEMU could not start, or the guest did not show what was waited for (the message has its console)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        raise QemuError(f"{tool} is missing: apt-get install {package}")


def accelerator(timeout: float = 8.0) -> str:
    """"kvm" if a KVM guest runs here (see the module docstring), else "tcg"."""
    global _ACCEL
    if _ACCEL is None:
        forced = os.environ.get("ZVR_QEMU_ACCEL", "")
        if forced not in ("", "kvm", "tcg"):
            raise QemuError(f"ZVR_QEMU_ACCEL={forced!r}: use kvm or tcg (or leave it unset to probe)")
        _ACCEL = forced or ("kvm" if _kvm_runs_guest(timeout) else "tcg")
    return _ACCEL


def _kvm_is_broken() -> None:
    global _ACCEL
    _ACCEL = "tcg"


def _kvm_runs_guest(timeout: float) -> bool:
    _require(QEMU, "qemu-system-x86")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with tempfile.TemporaryDirectory(prefix="zvr-kvm-probe-") as tmp:
        debug = Path(tmp) / "bios.log"
        proc = subprocess.Popen([QEMU, "-accel", "kvm", "-machine", "pc", "-m", "32", "-nodefaults",
                                 "-display", "none", "-monitor", "none", "-serial", "none",
                                 "-chardev", f"file,id=dbg,path={debug}", "-device", "isa-debugcon,iobase=0x402,chardev=dbg"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                if debug.exists() and b"SeaBIOS" in debug.read_bytes():
                    return True
                time.sleep(0.2)
            return False
        finally:
            proc.kill()
            proc.wait()


def iso(files: dict[str, bytes | str], path: Path, label: str) -> Path:
    """An ISO 9660 image at ``path`` holding ``files`` (name -> content) under volume label ``label``."""
    _require("xorriso", "xorriso")
    with tempfile.TemporaryDirectory(prefix="zvr-iso-") as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data.encode() if isinstance(data, str) else data)
        proc = subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-V", label, "-J", "-r", "-o", str(path), tmp],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise QemuError(f"xorriso failed: {proc.stderr.strip()}")
    return path


class Vm:
    def __init__(self, disk: Path, workdir: Path, *, name: str = "vm", memory_mib: int = 1024, cpus: int = 2,
                 cdrom: Path | None = None, forwards: dict[int, int] | None = None, disk_format: str | None = None,
                 disk_bus: str = "pvscsi", nic_model: str = "vmxnet3", kvm_grace: float = 20.0) -> None:
        _require(QEMU, "qemu-system-x86")
        _require("qemu-img", "qemu-utils")
        self.name, self.memory_mib, self.cpus = name, memory_mib, cpus
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cdrom = cdrom
        self.forwards = dict(forwards or {})
        self.disk_bus, self.nic_model = disk_bus, nic_model
        self.overlay = self.workdir / f"{name}-overlay.qcow2"
        fmt = disk_format or ("vmdk" if disk.suffix == ".vmdk" else "qcow2" if disk.suffix == ".qcow2" else "raw")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(Path(disk).resolve()),
                        str(self.overlay)], check=True)
        self.proc: subprocess.Popen | None = None
        self.boots = 0
        self.kvm_grace = kvm_grace
        self.accel = accelerator()

    @property
    def serial_path(self) -> Path:
        return self.workdir / f"{self.name}-serial-{self.boots}.log"

    @property
    def qmp_path(self) -> Path:
        return self.workdir / f"{self.name}.qmp"

    def argv(self) -> list[str]:
        fwd = "".join(f",hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in self.forwards.items())
        argv = [QEMU, "-accel", self.accel, "-machine", "pc", "-m", str(self.memory_mib), "-smp", str(self.cpus),
                "-display", "none", "-monitor", "none", "-nodefaults", "-vga", "std",
                "-chardev", f"file,id=ser0,path={self.serial_path}", "-serial", "chardev:ser0",
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                "-netdev", f"user,id=net0{fwd}", "-device", f"{self.nic_model},netdev=net0"]
        drive = f"file={self.overlay},format=qcow2,if=none,id=disk0"
        if self.disk_bus == "virtio":
            argv += ["-drive", drive, "-device", "virtio-blk-pci,drive=disk0,bootindex=0"]
        else:
            argv += ["-device", f"{self.disk_bus},id=scsi0", "-drive", drive,
                     "-device", "scsi-hd,bus=scsi0.0,drive=disk0,bootindex=0"]
        if self.cdrom is not None:
            argv += ["-drive", f"file={self.cdrom},format=raw,media=cdrom,if=ide,index=2,readonly=on"]
        return argv

    def start(self) -> Vm:
        """Power on (under TCG again if the kernel does not start under KVM, see the module docstring)."""
        self._start()
        if self.accel == "kvm":
            deadline = time.monotonic() + self.kvm_grace
            while self.alive() and time.monotonic() < deadline and not KERNEL_STARTED.search(self.serial()):
                time.sleep(0.5)
            if not KERNEL_STARTED.search(self.serial()):
                self.kill()
                _kvm_is_broken()
                self.accel = accelerator()
                self._start()
        return self

    def _start(self) -> None:
        if self.alive():
            raise QemuError(f"{self.name} is running already")
        self.boots += 1
        self.qmp_path.unlink(missing_ok=True)
        self._log = open(self.workdir / f"{self.name}-qemu.log", "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def serial(self) -> str:
        try:
            return self.serial_path.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_serial(self, pattern: str, timeout: float) -> re.Match:
        """The first match of ``pattern`` on this boot's console; QemuError (with the console) if none comes."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.serial())
            if m:
                return m
            if not self.alive():
                raise QemuError(f"{self.name} exited ({self.proc.returncode if self.proc else '?'}) before "
                                f"{pattern!r} appeared; console:\n{self.serial()[-4000:]}")
            if time.monotonic() >= deadline:
                raise QemuError(f"{pattern!r} did not appear on {self.name}'s console within {timeout:.0f} s "
                                f"({self.accel}); console:\n{self.serial()[-4000:]}")
            time.sleep(0.5)

    def _qmp(self, *commands: str) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.qmp_path))
            f = s.makefile("rwb")
            f.readline()  # greeting
            for cmd in ("qmp_capabilities", *commands):
                f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                f.flush()
                f.readline()

    def stop(self, timeout: float = 60.0) -> None:
        """Press the power button and wait for the guest to shut down; kill it if it does not in time."""
        try:
            if self.alive():
                self._qmp("system_powerdown")
                self.proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            self._close_log()

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()

    def restart(self, cdrom: Path | None = None, timeout: float = 60.0) -> Vm:
        """Power cycle (as vCenter does when vApp options change), optionally with another CD-ROM."""
        self.stop(timeout)
        if cdrom is not None:
            self.cdrom = cdrom
        return self.start()
