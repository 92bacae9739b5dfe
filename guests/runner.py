"""Running a guest (guests/image.py) under QEMU and reading what it reports.

- ``Guest(image, drive, workdir, name, mode=..., expect=...)``: ``start()`` boots it directly (``-kernel``,
  ``-initrd``) with one virtio disk, ``drive`` being a local file (the "plain boot" baseline) or an NBD URI:
  ``nbd+unix:///EXPORT?socket=PATH`` (the IO filter's export of a protected volume, or a recovery VRA's
  point-in-time image) or ``nbd://host:port/EXPORT``. QEMU's block layer is then the hypervisor's IO path,
  where the product sits: the guest's fsync is an NBD flush.
  Modes: ``run`` (the application: READY, then transactions), ``check`` (fsck, the database's integrity
  check, every id up to ``expect`` present and none torn; one ZVR-CHECK line, then power off).
- The first serial port is the console (``<name>-console.log``); the second carries the guest's reports
  (``<name>-app.log``). ``AppLog`` reads the reports: ``acknowledged()`` is the highest id the guest reported
  committed so far (its COMMIT returned), so ids up to it were acknowledged before the call returned;
  every report is also written with the host's time to ``<name>-reports.log``.
- ``ready(timeout)``: the application answered (its READY line); ``check_result(timeout)``: the parsed
  ZVR-CHECK line (``CheckResult``).

Accelerator: TCG unless ``ZVR_QEMU_ACCEL=kvm`` (on this project's machines /dev/kvm exists but Debian's
kernel hangs under it: ovf/qemu.py). A guest takes 256 MiB and one vCPU.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"
COMMIT = re.compile(r"^ZVR-COMMIT (\d+) (\S+)", re.M)
READY = re.compile(r"^ZVR-APP READY rows=(\d+) max=(\d+)", re.M)
CHECK = re.compile(r"^ZVR-CHECK (.*)$", re.M)


@dataclass(frozen=True)
class GuestImage:
    """A built guest (guests/image.py): boot ``kernel`` with ``initrd``; ``disk`` is the root disk to copy
    (never boot it itself)."""

    dir: Path

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.gz"

    @property
    def disk(self) -> Path:
        return self.dir / "disk.raw"

    @property
    def disk_bytes(self) -> int:
        return self.disk.stat().st_size


class GuestError(Exception):
    """The guest could not run or did not report in time; the message has the end of its console."""


@dataclass(frozen=True)
class CheckResult:
    """The guest's verdict on a recovered image (one ZVR-CHECK line)."""

    passed: bool
    fields: dict[str, str]

    @property
    def summary(self) -> str:
        f = self.fields
        if "reason" in f:
            return f"{'PASS' if self.passed else 'FAIL'}: {f['reason']} (fsck exit {f.get('fsck', '?')})"
        return (f"{'PASS' if self.passed else 'FAIL'}: fsck exit {f.get('fsck')}, integrity_check "
                f"{f.get('integrity')!r}, {f.get('present')}/{f.get('expect')} acknowledged transactions present, "
                f"{f.get('torn')} torn, newest id {f.get('max')}")


def parse_check(line: str) -> CheckResult:
    fields: dict[str, str] = {}
    head, _, integrity = line.partition(" integrity=")
    for part in head.split():
        k, _, v = part.partition("=")
        fields[k] = v
    if integrity:
        fields["integrity"] = integrity.strip()
    return CheckResult(fields.get("result") == "PASS", fields)


def available() -> str | None:
    """None if this machine can run guests, else what is missing (a sentence naming the package)."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed here (apt-get install qemu-system-x86)"
    return None


class AppLog:
    """The guest's reports (its second serial port, a file QEMU writes), read incrementally."""

    def __init__(self, path: Path, record: Path) -> None:
        self.path = path
        self.record = record
        self._pos = 0
        self.text = ""
        self.highest = 0

    def poll(self) -> str:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                new = f.read()
        except FileNotFoundError:
            return self.text
        end = new.rfind(b"\n") + 1  # complete lines only
        if end:
            chunk = new[:end].decode(errors="replace").replace("\r", "")
            self._pos += end
            self.text += chunk
            now = time.time()
            with open(self.record, "a") as rec:
                rec.writelines(f"{now:.3f} {ln}\n" for ln in chunk.splitlines() if ln.strip())
            for m in COMMIT.finditer(chunk):
                self.highest = max(self.highest, int(m.group(1)))
        return self.text

    def acknowledged(self) -> int:
        """The highest transaction id reported committed by now (ids are consecutive)."""
        self.poll()
        return self.highest


class Guest:
    def __init__(self, image, drive: str | Path, workdir: Path, name: str = "guest", *, mode: str = "run",
                 expect: int = 0, interval: float = 0.1, memory_mib: int = 256) -> None:
        self.image = image
        self.drive = str(drive)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.mode = mode
        self.expect = expect
        self.interval = interval
        self.memory_mib = memory_mib
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.console_path = self.workdir / f"{name}-console.log"
        self.app_path = self.workdir / f"{name}-app.log"
        self.app = AppLog(self.app_path, self.workdir / f"{name}-reports.log")

    def argv(self) -> list[str]:
        accel = os.environ.get("ZVR_QEMU_ACCEL", "tcg")
        append = (f"console=ttyS0 quiet panic=-1 zvr.mode={self.mode} zvr.expect={self.expect} "
                  f"zvr.interval={self.interval}")
        return [QEMU, "-accel", accel, "-machine", "pc", "-m", str(self.memory_mib), "-smp", "1",
                "-nodefaults", "-display", "none", "-monitor", "none", "-no-reboot", "-nic", "none",
                "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd), "-append", append,
                "-chardev", f"file,id=con,path={self.console_path}", "-serial", "chardev:con",
                "-chardev", f"file,id=app,path={self.app_path}", "-serial", "chardev:app",
                "-drive", f"file={self.drive},if=virtio,format=raw,cache=writeback"]

    def start(self) -> Guest:
        problem = available()
        if problem:
            raise GuestError(problem)
        for p in (self.console_path, self.app_path):
            p.unlink(missing_ok=True)
        self.app = AppLog(self.app_path, self.workdir / f"{self.name}-reports.log")
        self.started = time.monotonic()
        with open(self.workdir / f"{self.name}-qemu.log", "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def console(self) -> str:
        try:
            return self.console_path.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_report(self, rx: re.Pattern, timeout: float, what: str) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.app.poll())
            if m:
                return m
            if self.proc is None:
                raise GuestError(f"guest {self.name}: not started (call start())")
            if not self.alive() or time.monotonic() >= deadline:
                why = (f"QEMU exited ({self.proc.returncode})" if not self.alive()
                       else f"not within {timeout:.0f} s")
                qemu_log = (self.workdir / f"{self.name}-qemu.log").read_text(errors="replace")[-1500:]
                raise GuestError(f"guest {self.name}: {what}: {why}; reports:\n{self.app.text[-1500:]}\n"
                                 f"console:\n{self.console()[-3000:]}\nqemu:\n{qemu_log}")
            time.sleep(0.05)

    def ready(self, timeout: float = 120.0) -> float:
        """Wait until the application answers (READY); returns the seconds since ``start``."""
        self.wait_report(READY, timeout, "the application did not answer")
        return time.monotonic() - self.started

    def wait_commits(self, n: int, timeout: float = 120.0) -> int:
        """Wait until the guest has acknowledged ``n`` more transactions; returns the highest id."""
        target = self.app.acknowledged() + n
        deadline = time.monotonic() + timeout
        while self.app.acknowledged() < target:
            if not self.alive() or time.monotonic() > deadline:
                raise GuestError(f"guest {self.name}: {n} transactions not acknowledged (highest "
                                 f"{self.app.highest}); console:\n{self.console()[-2000:]}")
            time.sleep(0.1)
        return self.app.highest

    def check_result(self, timeout: float = 180.0) -> CheckResult:
        m = self.wait_report(CHECK, timeout, "no check result")
        return parse_check(m.group(0))

    def kill(self) -> None:
        """Power off at once (the recovery point of a crash); the reports read so far stay."""
        if self.alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        self.app.poll()

    def wait_exit(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


def acknowledged_before(reports_log: Path, when: float) -> int:
    """The highest transaction id a guest's reports log (``AppLog``'s record: "<host time> <report>" lines)
    shows acknowledged before the time ``when`` (seconds since the epoch); 0 if none or no log."""
    highest = 0
    try:
        lines = Path(reports_log).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return 0
    for line in lines:
        stamp, _, report = line.partition(" ")
        m = COMMIT.match(report)
        if m and float(stamp) < when:
            highest = max(highest, int(m.group(1)))
    return highest


def follow(app_log: Path, reports_log: Path, interval: float = 0.2) -> None:
    """Copy a guest's reports into ``reports_log`` with the host's time, until killed (for guests that
    outlive the process that started them: the lab's)."""
    app = AppLog(Path(app_log), Path(reports_log))
    while True:
        app.poll()
        time.sleep(interval)


if __name__ == "__main__":  # python -m guests.runner follow APP_LOG REPORTS_LOG
    import sys

    if len(sys.argv) != 4 or sys.argv[1] != "follow":
        sys.exit("usage: python -m guests.runner follow APP_LOG REPORTS_LOG")
    follow(Path(sys.argv[2]), Path(sys.argv[3]))
