"""The lab's workload process: fio, kept writing across restarts of the IO filters it writes through.

fio's nbd engine does not reconnect: when a filter goes away its writes fail at once, and fio left to itself
goes on failing and logging as fast as it can (its log grew to 2.7 GB in 100 s). This runner starts fio with
its output through a pipe and watches it:

- an error line from fio, or fio ending, means an export went away: fio is stopped (its whole run: one
  failed job would leave the other VMs idle behind it), then started again once every filter's NBD socket
  accepts a connection, probed with a growing delay (0.2 s doubling to 5 s: a filter down for minutes is
  not hammered);
- fio's output reaches the log bounded: at most ``LINES_PER_RUN`` lines of each run, then one line saying
  how many were left out.

Run as ``python -m zvm.lab.fio_runner --socket PATH ... -- fio ARGS``; it ends on SIGTERM (and fio with it:
both are in the lab's process group for the workload). Pausing the workload stops the group (SIGSTOP), so
the runner never takes a paused fio for a dead one.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import threading
import time

LINES_PER_RUN = 40
FIRST_PROBE_S = 0.2
MAX_PROBE_S = 5.0
ERROR_MARKS = ("error", "fail", "nbd_")


def say(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} fio-runner: {msg}", flush=True)


def socket_answers(path: str) -> bool:
    """Whether the NBD server at ``path`` accepts a connection (then closed at once, before its handshake)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_for_sockets(paths: list[str], stop: threading.Event) -> None:
    """Return once every socket answers (or ``stop`` is set), probing with a growing delay."""
    delay = FIRST_PROBE_S
    said = False
    while not stop.is_set():
        down = [p for p in paths if not socket_answers(p)]
        if not down:
            if said:
                say("every filter answers again: starting fio")
            return
        if not said:
            say(f"waiting for the IO filter(s) at {', '.join(down)} (fio starts when they answer)")
            said = True
        stop.wait(delay)
        delay = min(delay * 2, MAX_PROBE_S)


def _terminate_on(stop: threading.Event, proc: subprocess.Popen) -> None:
    while proc.poll() is None:
        if stop.wait(0.2):
            proc.terminate()
            return


def run_once(fio: list[str], stop: threading.Event) -> str:
    """Run fio until it fails, ends or ``stop`` is set; returns why it ended."""
    proc = subprocess.Popen(fio, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, errors="replace")
    logged = skipped = 0
    why = "fio ended"
    assert proc.stdout is not None
    threading.Thread(target=_terminate_on, args=(stop, proc), daemon=True).start()
    for line in proc.stdout:
        if logged < LINES_PER_RUN:
            print(line.rstrip(), flush=True)
            logged += 1
        else:
            skipped += 1
        if any(mark in line.lower() for mark in ERROR_MARKS):
            why = f"fio reported an error ({line.strip()[:200]}): an IO filter went away"
            proc.kill()
            break
    proc.stdout.close()
    code = proc.wait()
    if skipped:
        say(f"({skipped} more lines of fio's output not logged)")
    return why if why != "fio ended" else f"fio ended (exit status {code})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zvm.lab.fio_runner", description=__doc__.split("\n\n")[0])
    p.add_argument("--socket", action="append", default=[], help="an IO filter's NBD socket fio writes through")
    p.add_argument("fio", nargs=argparse.REMAINDER, help="-- then fio's command line")
    args = p.parse_args(argv)
    fio = args.fio[1:] if args.fio[:1] == ["--"] else args.fio
    if not fio:
        p.error("give fio's command line after --")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        wait_for_sockets(args.socket, stop)
        if stop.is_set():
            break
        started = time.monotonic()
        why = run_once(fio, stop)
        if stop.is_set():
            break
        say(why)
        # fio failing at once again and again (a filter that answers but refuses the export) is not a loop
        stop.wait(FIRST_PROBE_S if time.monotonic() - started > MAX_PROBE_S else MAX_PROBE_S)
    say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
