"""A link cut between the protect and the recovery `vra serve` (through the WAN emulator) under a steady
fio workload, long enough that the VPG's buffer overflows and its dirty extents outgrow their budget; then
the link comes back: a bitmap sync catches up, checkpoints taken meanwhile are not consistent, the first one
after the sync is, and the image at the latest consistent checkpoint equals the source."""

from __future__ import annotations

import signal
import time

import pytest

from tests.replication.lab import wait_for

from .site import DATA, SIZE, FaultSite

BUFFER = 1 << 20  # the VPG's resend buffer: overflows after ~250 writes
VRA_BUDGET_KIB = 4  # the VRA's own dirty extents: 256 per volume (16 bytes each)
FILTER_BUDGET_KIB = 16


@pytest.mark.parametrize("mode", ["reset", "freeze"])
def test_link_cut_then_bitmap_sync_catches_up(short_tmp, mode) -> None:
    site = FaultSite(short_tmp, buffer_bytes=BUFFER, protect_extra=["--dirty-budget-kib", str(VRA_BUDGET_KIB)],
                     filter_extra=["--dirty-budget-kib", str(FILTER_BUDGET_KIB)])
    try:
        site.protect()
        site.wait_streaming()
        (initial,) = site.syncs("InitialSync", completed=True)
        assert initial.bytes == DATA  # the random data; the rest of the volume is a hole, never read

        site.start_workload(rate_iops=300)
        site.wait_writes(100)
        site.wan.cut(mode=mode)
        # Writes go on; the buffer fills, then the VRA records what it lets go, merging past its budget.
        samples = []
        dropping_since = []  # when a write was first seen let go: from then on no checkpoint is consistent

        def overflowed() -> bool:
            st = site.status()
            if st.counters["dropped_writes"] and not dropping_since:
                dropping_since.append(time.time_ns())
            samples.append((st.counters["dirty_extents"], st.counters["dirty_budget_extents"],
                            site.filter.counters()))
            return st.counters["dropped_writes"] >= 600 and st.counters["dirty_over_coverage"] > 0

        wait_for(overflowed, 60, "the buffer to overflow and the dirty extents to reach their budget")
        st = site.status()
        # reset: the stream is down; freeze: the VRA does not know yet and its bitmap sync waits for room
        assert st.state in ("connecting", "bitmap-sync-needed", "syncing") and st.substatus == "BitmapSync"
        for extents, budget, filter_counters in samples:
            assert extents <= budget == VRA_BUDGET_KIB * 1024 // 16
            # The filter never waits for the VRA and the VRA takes its writes, so the filter's own dirty
            # map stays within its budget too (here: empty, the VRA absorbs the outage).
            assert filter_counters["dirty_memory_bytes"] <= FILTER_BUDGET_KIB * 1024
            assert filter_counters["vra"] == "connected"
        restore_ns = time.time_ns()
        site.wan.restore()

        st = site.wait_streaming()  # under the same workload
        bitmaps = site.syncs("BitmapSync", completed=True)
        assert bitmaps, list(site.status().last_syncs)
        resent = sum(r.bytes for r in bitmaps)
        assert 0 < resent < SIZE
        streaming_since = st.streaming_since_ns
        assert streaming_since > restore_ns

        last = site.final_equality()
        cps = site.checkpoints()
        during = [c for c in cps if dropping_since[0] < c.timestamp_ns < streaming_since]
        assert during and not any(c.consistent for c in during), [(c.timestamp_ns, c.consistent) for c in during]
        after = [c for c in cps if c.timestamp_ns > streaming_since]
        assert after and after[0].consistent, "the first checkpoint after the sync must be consistent"
        assert last.checkpoint_id in {c.checkpoint_id for c in after}
    finally:
        site.close()


def test_a_stalled_vra_leads_to_a_bitmap_sync_from_the_filters_dirty_map(short_tmp) -> None:
    """The protect VRA stops reading (SIGSTOP) under fio: the filter never waits, its 1 MiB queue fills and
    its writes go to its dirty map, whose 1 KiB budget (64 extents) makes neighbours merge. When the VRA
    reads again, the gap in the filter's sequence makes the VPG need a bitmap sync, which takes the filter's
    extents over its control socket (``dirty`` with ``clear``) and sends them."""
    site = FaultSite(short_tmp, filter_extra=["--queue-mib", "1", "--dirty-budget-kib", "1"])
    try:
        site.protect()
        site.wait_streaming()
        fio = site.start_workload(rate_iops=600)
        site.wait_writes(100)
        site.p.proc.popen.send_signal(signal.SIGSTOP)
        try:
            samples = []

            def merged() -> bool:
                c = site.filter.counters()
                samples.append(c)
                return c["over_coverage"] > 0 and c["dirty_extents"] > 32

            wait_for(merged, 60, "the filter's dirty map to reach its budget")
        finally:
            site.p.proc.popen.send_signal(signal.SIGCONT)
        assert all(c["dirty_memory_bytes"] <= 1024 and c["dirty_extents"] <= 64 for c in samples)
        assert fio.alive()  # the VM never waited
        dirty_seen = samples[-1]["dirty_bytes"]
        wait_for(lambda: site.syncs("BitmapSync", completed=True), 60, "the bitmap sync")
        site.wait_streaming()
        assert site.filter.counters()["volumes"]["vol-1"]["dirty_bytes"] < dirty_seen  # taken by the sync
        bitmaps = site.syncs("BitmapSync", completed=True)
        assert sum(r.dirty_bytes for r in bitmaps) >= dirty_seen  # at least what the map held when looked at
        assert not site.syncs("DeltaSync") and len(site.syncs("InitialSync")) == 1
        site.final_equality()
    finally:
        site.close()
