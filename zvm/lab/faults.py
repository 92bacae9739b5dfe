"""The lab's fault controls: ``zvm lab ps | kill | restart``, one command per fault.

``kill NAME`` sends a signal (SIGKILL unless told otherwise) to the process group of one of the lab's
processes (``ps`` lists their names): a crash of that part, children included (gunicorn's workers, fio).
``restart NAME`` brings it back as the lab started it: the same command line, log, state directory and
address (a VRA takes up its roles from its state directory, a filter its dirty maps, a ZVM its database);
a running process is stopped first (SIGTERM, then SIGKILL), a stopped one (``kill --signal STOP``) is
continued. It returns once the process is ready again (a ZVM answers its API, a VRA serves gRPC, a filter
reached its VRA, the workload wrote through every filter).

A vcsim keeps its inventory in memory only: a killed one would come back without the VMs and VRAs the lab
made, so ``restart`` refuses that; a vCenter outage is ``kill --signal STOP`` then ``restart`` (its clients
wait on a vCenter that does not answer, and it comes back whole).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from vra_appliance.iofilter.control import FilterControl
from zvm.client import ZvmClient
from zvm.lab import processes, workload
from zvm.lab.links import LinksControl
from zvm.lab.processes import LabError, LabProcess, spawn, wait_ready
from zvm.lab.state import LabState
from zvm.lab.steps import zvm_env


def process_state(proc: LabProcess) -> str:
    """running, stopped (SIGSTOP), or dead."""
    if not proc.alive():
        return "dead"
    fields = processes.stat_fields(proc.pid)
    return "stopped" if fields and fields[0] in ("T", "t") else "running"


def listing(state: LabState) -> list[dict]:
    """The lab's processes, in the order they were started: name, kind, pid, state."""
    return [{"name": p.name, "kind": p.kind, "pid": p.pid, "state": process_state(p), "log": p.log}
            for p in state.processes]


def find(state: LabState, name: str) -> LabProcess:
    proc = state.process(name)
    if proc is None:
        names = ", ".join(p.name for p in state.processes)
        raise LabError(f"the lab has no process {name!r}: its processes are {names} ('zvm lab ps')")
    return proc


def parse_signal(text: str) -> signal.Signals:
    """KILL, SIGKILL, 9, TERM, STOP ... -> the signal; a clear error otherwise."""
    name = text.upper()
    try:
        return signal.Signals(int(name)) if name.isdigit() else signal.Signals[name if name.startswith("SIG")
                                                                                 else f"SIG{name}"]
    except (KeyError, ValueError):
        raise LabError(f"{text!r} is not a signal: give a name (KILL, TERM, STOP) or a number") from None


def kill(state: LabState, name: str, sig: signal.Signals = signal.SIGKILL, timeout: float = 15.0) -> LabProcess:
    """Signal the process group of ``name``; for a signal that ends it, wait until the whole group is gone."""
    proc = find(state, name)
    if not proc.group_alive():
        raise LabError(f"{name} is not running: 'zvm lab restart {name}' starts it")
    proc.signal(sig)
    # return once it took effect: the next `ps` shows it (a signal is delivered asynchronously)
    if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        _wait(lambda: not proc.group_alive(), timeout, f"{name} still runs {timeout:.0f} s after {sig.name}")
    elif sig == signal.SIGSTOP:
        _wait(lambda: process_state(proc) != "running", timeout, f"{name} still runs {timeout:.0f} s after SIGSTOP")
    return proc


def _wait(done, timeout: float, failure: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise LabError(failure)
        time.sleep(0.02)


def restart(state: LabState, name: str) -> str:
    """Bring ``name`` back as the lab started it; returns what was done."""
    proc = find(state, name)
    if proc.kind == "workload" and state.workload.get("paused"):
        workload.resume(state)  # stopped by 'zvm lab workload pause': resumed as that would
        return f"{name} resumed (it was paused)"
    if process_state(proc) == "stopped":
        proc.signal(signal.SIGCONT)
        _wait(lambda: process_state(proc) != "stopped", 15, f"{name} did not continue after SIGCONT")
        return f"{name} continued (it was stopped)"
    if proc.kind == "vcsim" and not proc.alive():
        raise LabError(f"{name} is dead, and a vcsim keeps its inventory in memory only: started again it would "
                       "lack the lab's VMs and VRAs. 'zvm lab down' then 'zvm lab up' makes a new lab; for a "
                       f"vCenter outage use 'zvm lab kill {name} --signal STOP' then 'zvm lab restart {name}'")
    if proc.kind == "vcsim":
        raise LabError(f"{name} runs: a vcsim cannot be restarted with its inventory (see 'zvm lab kill "
                       f"{name} --signal STOP' for a vCenter outage)")
    if proc.group_alive():
        processes.stop([proc])
    if proc.kind == "workload":
        state.workload["paused"] = False
        state.save()
        return f"{name} started again (pid {workload.spawn_fio(state).pid})"
    new = _respawn(state, proc)
    _wait_ready(state, new)
    return f"{name} started again (pid {new.pid})"


def _respawn(state: LabState, proc: LabProcess) -> LabProcess:
    env = None
    if proc.kind == "zvm":
        env = zvm_env(state, proc.info.get("site") or proc.name.removeprefix("zvm-"))
    elif proc.kind == "vra":
        Path(_vra_entry(state, proc.name)["port_file"]).unlink(missing_ok=True)  # its appearance says: serving
    elif proc.kind == "iofilter":
        Path(_filter_entry(state, proc.name)["control"]).unlink(missing_ok=True)
    new = spawn(proc.name, proc.kind, proc.argv, Path(proc.log), env=env, **proc.info)
    return state.add(new)


def _vra_entry(state: LabState, name: str) -> dict:
    return next(v for vras in state.vras.values() for v in vras if v["process"] == name)


def _filter_entry(state: LabState, name: str) -> dict:
    return next(f for f in state.filters if f["name"] == name)


def _wait_ready(state: LabState, proc: LabProcess) -> None:
    if proc.kind == "zvm":
        z = state.zvms[proc.info.get("site") or proc.name.removeprefix("zvm-")]

        def ready():
            with ZvmClient(z["url"], timeout=10).login(z["username"], z["password"]) as c:
                return c.local_site()

        wait_ready(proc, ready, "answer on its REST API", timeout=120)
    elif proc.kind == "vra":
        port_file = Path(_vra_entry(state, proc.name)["port_file"])
        wait_ready(proc, port_file.exists, "serve gRPC", timeout=90)
    elif proc.kind == "iofilter":
        control = _filter_entry(state, proc.name)["control"]

        def connected():
            with FilterControl(control) as ctl:
                return ctl.counters()["vra"] == "connected"

        wait_ready(proc, connected, "reach its VRA", timeout=60)
    elif proc.kind == "wan":
        wait_ready(proc, lambda: LinksControl(state.wan["control"]).status(), "listen", timeout=30)
