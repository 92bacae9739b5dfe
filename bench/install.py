"""`python -m bench install`: how long a silent `zvm-install` takes, against starting `zvm serve` by hand.

Against an https vcsim, ``--runs`` times each, alternating (this machine is shared and noisy):

- install: `zvm-install --answers FILE --root STAGE` (every step: checks, vCenter login, user, directories,
  certificate, configuration, database as the zvm user, unit, start of the unit's command line, wait for
  the API and the admin's login, plugin registration), wall clock of the command; then uninstalled with
  --purge (not measured);
- baseline: what an administrator does by hand for a running ZVM: `zvm serve` on an empty data directory
  with a ready certificate, from the command to the API answering over HTTPS.

``ratio`` = install / baseline: what the installer adds to the service's own first start. Needs root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import emit


def _serve_by_hand(python: Path) -> float:
    import requests

    from tests.zvm.pg import free_port
    from zvm.tls import self_signed

    work = Path(tempfile.mkdtemp(prefix="zvm-bench-serve-"))
    cert, key = work / "zvm.pem", work / "zvm.key"
    self_signed("127.0.0.1", ["127.0.0.1"], cert, key)
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen([str(python), "-m", "zvm.cli", "serve", "--data-dir", str(work / "data"), "--host",
                             "127.0.0.1", "--port", str(port), "--peer-port", str(free_port()),
                             "--tls-certificate", str(cert), "--tls-key", str(key), "--admin-password",
                             "Adm1n-pass-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                            start_new_session=True)
    try:
        while True:
            try:
                resp = requests.get(f"https://127.0.0.1:{port}/v1/session", verify=str(cert), timeout=5)
                if resp.status_code in (200, 401):
                    return time.perf_counter() - started
            except requests.RequestException:
                pass
            if proc.poll() is not None:
                raise RuntimeError("zvm serve ended before answering")
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)


def _install(python: Path, sim) -> tuple[float, float]:
    from tests.installer.conftest import answers_toml

    root = Path(tempfile.mkdtemp(prefix="zvm-bench-stage-"))
    root.chmod(0o755)
    answers = root.parent / f"{root.name}.toml"
    answers.write_text(answers_toml(sim))
    try:
        started = time.perf_counter()
        out = subprocess.run([str(python), "-m", "installer.wizard", "--answers", str(answers), "--root",
                              str(root)], capture_output=True, text=True, cwd="/")
        elapsed = time.perf_counter() - started
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        reported = float(out.stdout.split("installed and running (", 1)[1].split(" s)", 1)[0])
        subprocess.run([str(python), "-m", "installer.wizard", "--root", str(root), "--uninstall", "--purge"],
                       check=True, capture_output=True, cwd="/")
        return elapsed, reported
    finally:
        shutil.rmtree(root, ignore_errors=True)
        answers.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench install", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench install: run as root (the installer creates a user and owns files for it)", file=sys.stderr)
        return 2
    from tests.installer.conftest import service_environment
    from zvm.lab.vcsim import Vcsim, VcsimSpec

    python, made = service_environment()
    sim_dir = Path(tempfile.mkdtemp(prefix="zvm-bench-vcsim-"))
    sim = Vcsim.start("bench-install", sim_dir, VcsimSpec(tls=True, hosts_per_cluster=1, vms_per_pool=1))
    installs, reported, baselines = [], [], []
    try:
        for _ in range(args.runs):
            baselines.append(_serve_by_hand(python))
            elapsed, own = _install(python, sim)
            installs.append(elapsed)
            reported.append(own)
    finally:
        sim.stop()
        shutil.rmtree(sim_dir, ignore_errors=True)
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
    rows = [{"what": "zvm-install (silent, whole command)", "best_s": round(min(installs), 2),
             "median_s": round(sorted(installs)[len(installs) // 2], 2),
             "ratio": round(min(installs) / min(baselines), 2)},
            {"what": "  of which its steps (as it reports)", "best_s": round(min(reported), 2),
             "median_s": round(sorted(reported)[len(reported) // 2], 2),
             "ratio": round(min(reported) / min(baselines), 2)},
            {"what": "baseline: zvm serve by hand, to the API answering", "best_s": round(min(baselines), 2),
             "median_s": round(sorted(baselines)[len(baselines) // 2], 2), "ratio": 1.0}]
    emit("install", rows, {"runs": args.runs})
    return 0
