"""The lab's workload survives a restart of the IO filter it writes through (zvm/lab/fio_runner.py): real
fio through a real `vra iofilter` (NBD) to a `vra serve`. While the filter is down the runner waits (its
log stays small: fio alone logged 2.7 GB in 100 s); once the filter is back fio writes through it again."""

from __future__ import annotations

import subprocess
import sys

from tests.replication.lab import Lab, wait_for
from zvm.lab.workload import job_text


def test_fio_waits_for_a_killed_filter_and_writes_again_once_it_is_back(tmp_path):
    lab = Lab(tmp_path)
    runner = None
    try:
        vra = lab.vra("wl-vra")
        f = lab.filter("wl-filter", {"vol-1": lab.volume("vol-1", 16 << 20)}, vra)
        job = tmp_path / "fio.job"
        job.write_text(job_text([{"name": "vm-1", "uri": f.uri("vol-1")}], "512k"))
        log_path = tmp_path / "workload.log"
        with open(log_path, "wb") as log:
            runner = subprocess.Popen([sys.executable, "-m", "zvm.lab.fio_runner", f"--socket={f.nbd}", "--", "fio",
                                       f"--output={tmp_path / 'fio.out'}", str(job)], stdout=log,
                                      stderr=subprocess.STDOUT)
        wait_for(lambda: f.counters()["writes"] > 10, 60, "fio to write through the filter")
        f.kill()
        wait_for(lambda: "waiting for the IO filter" in log_path.read_text(), 60, "the runner to notice")
        size = log_path.stat().st_size
        assert runner.poll() is None
        f.start()  # the same exports on the same socket, as `zvm lab restart` does
        wait_for(lambda: f.counters()["writes"] > 10, 60, "fio to write through the restarted filter")
        log = log_path.read_text()
        assert "every filter answers again: starting fio" in log
        assert size < 8192 and len(log) < 16384, log[-2000:]
    finally:
        if runner is not None:
            runner.terminate()
            assert runner.wait(30) == 0
        lab.close()
