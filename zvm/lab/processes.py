"""The lab's processes: started detached, recorded, found again, stopped.

Every process the lab starts is the leader of its own session (so it outlives ``zvm lab up`` and a signal
to its process group reaches its children too: gunicorn's workers, fio's threads), writes its output to a
log file in the lab directory, and is recorded in lab.json as a :class:`LabProcess`: its pid, and the start
time the kernel gives it (``/proc/<pid>/stat``), so that a pid the system reused later is never taken for
the lab's process and never signalled.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from zvm.errors import PermanentError, TransientError
from zvm.lab.vcsim import PACKAGE_ROOT


class LabError(PermanentError):
    """A lab step cannot go on; the message says why and what to do."""


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0], start time is [19])."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int:
    fields = stat_fields(pid)
    return int(fields[19]) if fields else 0


def _reap(pid: int) -> None:
    """Collect the exit status of a process this one started (else it stays a zombie while we run)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


@dataclass
class LabProcess:
    """One detached process of the lab."""

    name: str
    kind: str
    pid: int
    argv: list[str]
    log: str
    started: int = 0  # the kernel's start time of the process (clock ticks since boot)
    info: dict = field(default_factory=dict)

    def alive(self) -> bool:
        _reap(self.pid)
        fields = stat_fields(self.pid)
        if fields is None or fields[0] in ("Z", "X"):
            return False
        return not self.started or int(fields[19]) == self.started

    def group_alive(self, groups: dict[int, list[int]] | None = None) -> bool:
        """Whether the process or another of its group (a child it left behind) still runs."""
        return self.alive() or bool((groups if groups is not None else process_groups()).get(self.pid))

    def signal(self, sig: int, groups: dict[int, list[int]] | None = None) -> None:
        """Send ``sig`` to the process group, if the process is still the lab's or its group still exists
        (a process group keeps its id while any member lives, so the id cannot have been reused)."""
        if self.alive() or (groups if groups is not None else process_groups()).get(self.pid):
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = Path(self.log).read_text(errors="replace")
        except OSError:
            return "(no log)"
        tail = [line for line in text.strip().splitlines() if line.strip()][-lines:]
        return "\n".join("    " + line for line in tail) or "    (empty log)"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LabProcess:
        return cls(**data)


def process_groups() -> dict[int, list[int]]:
    """Running (not zombie) pids by process group id."""
    groups: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = stat_fields(int(entry.name))
        if fields and fields[0] not in ("Z", "X"):
            groups.setdefault(int(fields[2]), []).append(int(entry.name))
    return groups


def spawn(name: str, kind: str, argv: list[str], log: Path, *, env: dict | None = None, **info) -> LabProcess:
    """Start ``argv`` detached (a new session), output appended to ``log``; returns at once."""
    exe = shutil.which(argv[0]) if os.sep not in argv[0] else argv[0]
    if exe is None:
        raise LabError(f"{argv[0]} is not installed: run ./run once (it installs the Debian packages the lab uses)")
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    try:
        # Not subprocess.Popen: the process is not this one's to wait for (it outlives `zvm lab up`).
        pid = os.posix_spawn(exe, argv, env, setsid=True,
                             file_actions=[(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, fd, 1),
                                           (os.POSIX_SPAWN_DUP2, fd, 2)])
    finally:
        os.close(fd)
        os.close(null)
    return LabProcess(name=name, kind=kind, pid=pid, argv=list(argv), log=str(log), started=start_time(pid),
                      info=info)


def wait_ready(proc: LabProcess, ready: Callable[[], object], what: str, timeout: float = 60.0):
    """Wait until ``ready()`` returns something truthy (exceptions count as not yet); fail when the process
    ends or ``timeout`` passes, with the end of its log."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    last_error = ""
    while True:
        try:
            value = ready()
            if value:
                return value
        except Exception as exc:  # not ready yet: connection refused, file missing, ...
            last_error = f" (last: {exc})"
        if not proc.alive():
            raise LabError(f"{proc.name} ended before {what}; its log {proc.log} ends with:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            raise TransientError(f"{proc.name} did not {what} within {timeout:.0f} s{last_error}; "
                                 f"its log {proc.log} ends with:\n{proc.log_tail()}")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def stop(procs: Iterable[LabProcess], timeout: float = 30.0) -> list[LabProcess]:
    """SIGTERM every process group at once, wait up to ``timeout``, then SIGKILL what is left.
    Returns the processes that had to be killed."""
    groups = process_groups()
    procs = [p for p in procs if p.group_alive(groups)]
    for p in procs:
        p.signal(signal.SIGTERM, groups)
        p.signal(signal.SIGCONT, groups)  # a paused workload must run to act on the SIGTERM
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        groups = process_groups()
        if not any(p.group_alive(groups) for p in procs):
            return []
        time.sleep(0.1)
    killed = [p for p in procs if p.group_alive(groups)]
    for p in killed:
        p.signal(signal.SIGKILL, groups)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(p.group_alive() for p in killed):
        time.sleep(0.1)
    return killed
