"""The lab's workload: fio writing to the protected VMs' disks through their hosts' IO filters (NBD).

One fio process, one job per VM of the lab's VPG (``ioengine=nbd`` against the filter's export of the
VM's disk), random writes of 4 to 64 KiB at a modest rate per VM, half-compressible data, running until the
lab stops it, under :mod:`zvm.lab.fio_runner` (which stops fio when a filter goes away and starts it again
when the filter is back, its log bounded). ``pause`` stops fio (SIGSTOP) and waits until the filters have
completed every write it had sent, so from then on the VMs' disks do not change; ``resume`` lets it go on.
A filter that does not answer is reported as down (``filter_states``), never as a crash of the command.

(The run is 7 days: fio 3.33 spins a CPU with ``runtime=30d``, an overflow in its time arithmetic.)
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from vra_appliance.iofilter.control import FilterControl
from zvm.lab.processes import LabError, LabProcess, spawn, wait_ready
from zvm.lab.state import LabState

JOB_HEADER = """\
# The lab's workload (written by zvm lab up): one job per protected VM, through the VM's IO filter.
[global]
ioengine=nbd
rw=randwrite
bsrange=4k-64k
rate={rate}
iodepth=4
buffer_compress_percentage=50
refill_buffers=1
time_based=1
runtime=7d
thread=1
"""


def job_text(vms: list[dict], rate: str) -> str:
    """``vms``: [{"name", "uri"}] -> an fio job file."""
    jobs = [f"\n[{vm['name']}]\nuri={vm['uri']}\n" for vm in vms]
    return JOB_HEADER.format(rate=rate) + "".join(jobs)


def start(state: LabState, jobs: list[dict], rate: str, paused: bool = False) -> LabProcess | None:
    """Write the job file for ``jobs`` ([{"name", "volume", "uri"}]) and start fio, unless ``paused``
    (then ``resume`` starts it)."""
    job = state.lab_dir / "workload" / "fio.job"
    job.parent.mkdir(parents=True, exist_ok=True)
    job.write_text(job_text(jobs, rate))
    state.workload = {"job": str(job), "rate": rate, "jobs": jobs, "paused": paused,
                      "volumes": [j["volume"] for j in jobs]}
    state.save()
    return None if paused else spawn_fio(state)


def spawn_fio(state: LabState) -> LabProcess:
    old = state.process("workload")
    if old is not None:
        state.processes.remove(old)
    sockets = sorted({j["uri"].split("socket=", 1)[1] for j in state.workload["jobs"]})
    argv = [sys.executable, "-m", "zvm.lab.fio_runner", *(f"--socket={s}" for s in sockets), "--",
            "fio", f"--output={state.logs / 'fio.out'}", state.workload["job"]]
    proc = state.add(spawn("workload", "workload", argv, state.logs / "workload.log"))
    wait_ready(proc, lambda: _all_written(state),
               "write through every VM's IO filter", timeout=60)
    return proc


def filter_states(state: LabState) -> dict[str, dict]:
    """Per filter serving the workload: {"up": bool, "writes": {volume: writes completed}, "error": why down}."""
    wanted = set(state.workload.get("volumes", []))
    out = {}
    for f in state.filters:
        if not wanted & set(f["volumes"]):
            continue
        try:
            with FilterControl(f["control"], timeout_s=5) as ctl:
                counters = ctl.counters()["volumes"]
        except (OSError, ValueError) as exc:  # no socket, refused, closed: the filter is down
            out[f["name"]] = {"up": False, "writes": {}, "error": str(exc) or type(exc).__name__}
            continue
        out[f["name"]] = {"up": True, "error": "", "writes": {vid: int(c.get("writes", 0))
                                                             for vid, c in counters.items() if vid in wanted}}
    return out


def volume_writes(state: LabState) -> dict[str, int]:
    """Writes each filter completed, per volume of the workload (volumes of a filter that is down: absent)."""
    return {vid: n for f in filter_states(state).values() for vid, n in f["writes"].items()}


def _all_written(state: LabState) -> bool:
    writes = volume_writes(state)
    return set(writes) == set(state.workload["volumes"]) and all(n > 0 for n in writes.values())


def _process(state: LabState) -> LabProcess | None:
    proc = state.process("workload")
    if proc is not None and proc.alive():
        return proc
    if state.workload.get("paused"):
        return None  # stopped while paused (the VMs moved): resume starts it again
    raise LabError("the lab's workload (fio) is not running: 'zvm lab status' shows the lab; its log is "
                   f"{state.logs / 'workload.log'}")


def pause(state: LabState, settle_s: float = 0.5, timeout: float = 30.0) -> dict[str, int]:
    """Stop fio and wait until no filter completes a write for ``settle_s``; returns the writes per volume."""
    proc = _process(state)
    if proc is not None:
        proc.signal(signal.SIGSTOP)
    state.workload["paused"] = True
    state.save()
    deadline = time.monotonic() + timeout
    last = volume_writes(state)
    while True:
        time.sleep(settle_s)
        now = volume_writes(state)
        if now == last:
            return now
        if time.monotonic() > deadline:
            raise LabError(f"the filters still completed writes {timeout:.0f} s after fio was stopped")
        last = now


def resume(state: LabState) -> None:
    proc = _process(state)
    state.workload["paused"] = False
    state.save()
    if proc is None:
        spawn_fio(state)
    else:
        proc.signal(signal.SIGCONT)


def job_path(state: LabState) -> Path:
    return Path(state.workload["job"])
