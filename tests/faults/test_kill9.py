"""kill -9 of each process of the write path, mid-workload (fio through the filter), then restarted:

- the protect `vra serve`: what it held in memory dies with it; restarted with its saved role, it runs a
  delta sync of the volume (not a full copy) while the workload goes on;
- the recovery `vra serve` (with a torn record at the end of its journal, as a crash during an append
  leaves it): the tail is cut when it restarts, nothing it had acknowledged is lost, the protect VRA
  resends and catches up;
- the `vra iofilter`: its dirty map is lost; restarted, it reports the volume unclean and the VPG gets a
  delta sync that sends far less than the volume.

Each ends with final equality (tests/faults/site.py): the image at the latest consistent checkpoint after
the last write equals the source volume by SHA-256, so no write the VM had acknowledged is missing.
"""

from __future__ import annotations

import os
import signal
import time

from tests.replication.lab import wait_for
from vra_appliance.recover import WriteRecord
from vra_appliance.recover.format import encode_record, scan_segment

from .site import SIZE, VOL, VPG, FaultSite


def test_kill_9_of_the_protect_vra(short_tmp) -> None:
    site = FaultSite(short_tmp)
    try:
        site.protect()
        site.wait_streaming()
        fio = site.start_workload()
        site.wait_writes(200)
        before = site.filter_writes()
        site.p.kill()
        site.wait_writes(100)  # the VM notices nothing: the filter keeps going, into its dirty map
        assert fio.alive() and site.filter.counters()["vra"] == "disconnected"
        site.p.restart()
        site.wait_writes(100)
        site.wait_streaming()
        written = site.filter_writes() - before  # from the kill until the VPG streams again
        deltas = site.syncs("DeltaSync", completed=True)
        assert deltas, list(site.status().last_syncs)
        assert not site.syncs("InitialSync")  # the restarted VRA knew the replica exists
        # What the delta sync sent: the writes the dead VRA held and those made while it was away or during
        # the sync (some of those twice), never the volume's data.
        assert 0 < deltas[-1].bytes <= (written + 512) * 4096, (deltas[-1], written)
        assert deltas[-1].bytes < allocated(site) // 3
        site.final_equality()
        assert fio.stop()["error"] == 0
    finally:
        site.close()


def allocated(site: FaultSite) -> int:
    """Bytes of the source volume that hold data: what a full (initial) sync would read and send."""
    return os.stat(site.source).st_blocks * 512


def tear_the_journal_tail(journal_dir) -> None:
    """Append half of the next write record to the last segment: what a crash in the middle of an append
    (after the positions entry, before the fdatasync returned) leaves."""
    segs = sorted(journal_dir.glob("v_*/*.seg"))
    last = segs[-1]
    buf = last.read_bytes()
    scan = scan_segment(buf, int(last.stem))
    seq = scan.records[-1].seq + 1 if scan.records else scan.first_seq
    record = b"".join(encode_record(WriteRecord(VPG, seq, time.time_ns(), VOL, 0, b"t" * 65536), 0))
    with open(last, "r+b") as f:
        f.seek(scan.valid_end)
        f.write(record[: len(record) // 2])


def test_kill_9_of_the_recovery_vra_with_a_torn_journal_tail(short_tmp) -> None:
    site = FaultSite(short_tmp)
    try:
        site.protect()
        site.wait_streaming()
        fio = site.start_workload()
        site.wait_writes(200)
        acked = site.status().counters["acked_seq"]  # durable on the recovery side, as it told the protect VRA
        assert acked > 0
        site.r.kill()
        tear_the_journal_tail(short_tmp / "journal")
        site.wait_writes(100)  # buffered (and past the buffer, dirty extents) on the protect side
        site.r.restart()
        st = site.recover_status()
        assert "torn journal tail cut" in st.error, st
        wait_for(lambda: site.recover_status().counters.get("peer_host-a_durable_seq", 0) >= acked, 30,
                 "the recovery VRA to report every acknowledged record as durable")
        site.wait_writes(100)
        site.wait_streaming()
        assert fio.alive()  # the VM noticed nothing
        site.final_equality()
        assert fio.stop()["error"] == 0
    finally:
        site.close()


def test_kill_9_of_the_filter_leads_to_a_delta_sync(short_tmp) -> None:
    site = FaultSite(short_tmp, filter_extra=["--queue-mib", "1"])
    try:
        site.protect()
        site.wait_streaming()
        site.start_workload(rate_iops=600)
        site.wait_writes(200)
        # Hold the VRA (SIGSTOP) so that the filter's writes pile up in its queue, then in its dirty map:
        # writes the VM completed that exist nowhere but in the volume file once the filter dies.
        site.p.proc.popen.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: site.filter.counters()["dirty_bytes"] > 0, 60, "writes in the filter's dirty map")
            lost = site.filter.counters()["dirty_bytes"]
            site.filter.kill()  # its queue and dirty map die with it; fio loses its disk
        finally:
            site.p.proc.popen.send_signal(signal.SIGCONT)
        site.fios[-1].stop()
        site.filter.start()  # the sidecar says it did not stop cleanly: the volume is unclean
        wait_for(lambda: site.syncs("DeltaSync", completed=True), 60, "the delta sync after the filter restart")
        (delta,) = site.syncs("DeltaSync", completed=True)
        assert delta.bytes >= lost  # every lost write was found by comparing checksums, and sent
        assert delta.wire_bytes < SIZE // 16 and delta.bytes < allocated(site) // 3, delta  # not a full sync
        assert len(site.syncs("InitialSync")) == 1  # only the first one, when the VPG was created
        assert not site.filter.counters()["volumes"][VOL]["unclean"]  # the delta sync took over its map
        site.start_workload()
        site.wait_writes(100)
        site.final_equality()
    finally:
        site.close()
