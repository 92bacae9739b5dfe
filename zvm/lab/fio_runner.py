"""The lab's workload process: fio, kept writing across restarts of the IO filters it writes through.

fio's nbd engine does not reconnect: when a filter goes away its writes fail at once, and fio left to itself
goes on failing and logging as fast as it can (its log grew to 2.7 GB in 100 s). This runner starts fio with
its output through a pipe and watches it:

- an error line from fio while a filter's NBD socket does not answer, or fio ending, means an export went
  away: fio is stopped (its whole run: one failed job would leave the other VMs idle behind it), then
  started again once every filter's socket accepts a connection, probed with a growing delay (0.2 s
  doubling to 5 s: a filter down for minutes is not hammered);
- fio's first run ending by itself while every filter answers is not an outage but fio refusing its job
  (a bad rate, say): the runner ends with fio's exit status, and the lab shows the end of the log;
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
ERRORS_BEFORE_RESTART = 20  # error lines while every filter answers: fio's handle died with a filter that came back


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


def run_once(fio: list[str], sockets: list[str], stop: threading.Event) -> tuple[int | None, str]:
    """Run fio until a filter goes away, fio ends or ``stop`` is set. Returns fio's exit status when it
    ended by itself (None when stopped here) and why it ended."""
    proc = subprocess.Popen(fio, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, errors="replace")
    logged = skipped = errors = 0
    why = ""
    assert proc.stdout is not None
    threading.Thread(target=_terminate_on, args=(stop, proc), daemon=True).start()
    for line in proc.stdout:
        if logged < LINES_PER_RUN:
            print(line.rstrip(), flush=True)
            logged += 1
        else:
            skipped += 1
        if any(mark in line.lower() for mark in ERROR_MARKS):
            errors += 1
            down = [s for s in sockets if not socket_answers(s)]
            if down or errors > ERRORS_BEFORE_RESTART:  # gone, or back already while fio spins on its old handle
                why = (f"fio reported an error ({line.strip()[:200]}): "
                       + (f"the IO filter at {', '.join(down)} went away" if down else "an IO filter restarted"))
                proc.kill()
                break
    proc.stdout.close()
    code = proc.wait()
    if skipped:
        say(f"({skipped} more lines of fio's output not logged)")
    return (None, why) if why else (code, f"fio ended (exit status {code})")


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
    first = True
    while not stop.is_set():
        wait_for_sockets(args.socket, stop)
        if stop.is_set():
            break
        started = time.monotonic()
        code, why = run_once(fio, args.socket, stop)
        if stop.is_set():
            break
        say(why)
        if first and code is not None and all(socket_answers(s) for s in args.socket):
            say("fio refused its job (every filter answers): not starting it again")
            return code or 1
        first = False
        # fio failing at once again and again (a filter that answers but refuses the export) is not a loop
        stop.wait(FIRST_PROBE_S if time.monotonic() - started > MAX_PROBE_S else MAX_PROBE_S)
    say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
