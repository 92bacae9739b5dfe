"""Initial sync (holes and zero blocks skipped, source reproduced, progress) and bitmap sync (every dirty
byte covered, adjacent extents coalesced, resent vs dirtied, the rest handed back when interrupted)."""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sync.conftest import MemVolume, file_digest
from vra_appliance.sync.bitmap import BitmapSync, coalesce
from vra_appliance.sync.initial import InitialSync, nonzero_runs
from vra_appliance.sync.throttle import VpgShare, throttled
from vra_appliance.sync.volume import Extent, FileVolume

pieces = st.lists(
    st.tuples(st.integers(0, 3 << 20), st.sampled_from(["random", "zero"]), st.integers(1, 300_000)), max_size=8)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(size=st.integers(1, 4 << 20), layout=pieces, chunk_blocks=st.sampled_from([1, 16, 256]))
def test_initial_sync_reproduces_the_source_and_skips_holes_and_zero_blocks(tmp_path, size, layout, chunk_blocks):
    src_path, dst_path = tmp_path / "src", tmp_path / "dst"
    dst_path.unlink(missing_ok=True)  # hypothesis reuses tmp_path: the replica starts empty every time
    with open(src_path, "wb") as f:
        f.truncate(size)
        for off, kind, n in layout:
            if off >= size:
                continue
            f.seek(off)
            f.write(os.urandom(min(n, size - off)) if kind == "random" else bytes(min(n, size - off)))
    with FileVolume(src_path) as src, FileVolume(dst_path, writable=True, size=size) as dst:
        reads: list[tuple[int, int]] = []
        real = src.pread
        src.pread = lambda off, n: reads.append((off, n)) or real(off, n)
        data = src.data_ranges(0, size)
        sync = InitialSync(src, "v", chunk=4096 * chunk_blocks)
        sent = 0
        for ext in sync.extents():
            assert nonzero_runs(ext.data) == [(0, len(ext.data))]  # no zero block is ever sent
            dst.pwrite(ext.offset, ext.data)
            sent += len(ext.data)
        content = real(0, size)
    assert file_digest(src_path) == file_digest(dst_path)
    # Holes are never read: every read lies inside an allocated range.
    for off, n in reads:
        assert any(d <= off and off + n <= d + dn for d, dn in data), (off, n, data)
    nonzero = sum(b - a for a, b in nonzero_runs(content))
    assert sent <= nonzero + 4096  # blocks are aligned to the data ranges, not to the volume
    p = sync.progress
    assert p.percent == 100.0 and p.sent_bytes == sent
    assert p.sent_bytes + p.skipped_zero_bytes + p.skipped_hole_bytes == size


def test_initial_sync_progress_moves_in_percent_and_bytes():
    vol = MemVolume(os.urandom(10 << 20))
    sync = InitialSync(vol, "v", chunk=1 << 20)
    seen = []
    for _ in sync.extents():
        seen.append(sync.progress.percent)
    assert seen == sorted(seen) and seen[-1] == 100.0 and seen[0] < 20
    assert sync.progress.as_dict()["sent_bytes"] == 10 << 20


def test_nonzero_runs():
    z, d = bytes(4096), b"\x01" + bytes(4095)
    assert nonzero_runs(z * 3) == []
    assert nonzero_runs(z + d + d + z + d[:100]) == [(4096, 12288), (16384, 16484)]
    assert nonzero_runs(bytes(4095) + b"\x01") == [(0, 4096)]


# -- bitmap sync -------------------------------------------------------------------------------------------

dirty_lists = st.lists(st.tuples(st.integers(0, 70_000), st.integers(0, 9000)), max_size=40)


@settings(max_examples=80, deadline=None)
@given(dirty=dirty_lists, size=st.integers(1, 65536), max_io=st.sampled_from([512, 4096, 1 << 20]))
def test_bitmap_sync_covers_every_dirty_byte_once(dirty, size, max_io):
    source = MemVolume(random.Random(size).randbytes(size))
    replica = MemVolume(bytes(size))
    sync = BitmapSync(source, "v", dirty, max_io=max_io)
    for ext in sync.extents():
        assert len(ext.data) <= max_io
        replica.pwrite(ext.offset, ext.data)
    dirty_bytes = {b for off, n in dirty for b in range(off, min(off + n, size))}
    assert all(replica.buf[b] == source.buf[b] for b in dirty_bytes)
    assert sync.stats.resent_bytes == len(dirty_bytes) == sync.stats.dirty_bytes
    assert sync.pending() == []
    merged = coalesce(dirty, size)
    assert all(a + n < b for (a, n), (b, _) in zip(merged, merged[1:], strict=False))  # disjoint, not touching


def test_adjacent_and_overlapping_extents_are_coalesced():
    assert coalesce([(8192, 4096), (0, 4096), (4096, 4096), (20000, 10), (20005, 10), (30000, 0)]) == [
        (0, 12288), (20000, 15)]
    assert coalesce([(0, 10), (20, 10)], max_gap=10) == [(0, 30)]
    assert coalesce([(100, 50), (-10, 20)], size=120) == [(0, 10), (100, 20)]


def test_interrupted_bitmap_sync_hands_back_what_is_left():
    source = MemVolume(os.urandom(1 << 20))
    sync = BitmapSync(source, "v", [(0, 300_000), (500_000, 1000)], max_io=65536)
    it = sync.extents()
    first = next(it)
    assert first.offset == 0 and len(first.data) == 65536
    assert sync.pending() == [(0, 300_000), (500_000, 1000)]  # the piece in hand may not have been sent
    next(it)
    assert sync.pending() == [(65536, 300_000 - 65536), (500_000, 1000)]
    assert sync.stats.resent_bytes == 131072 and sync.percent < 50


def test_bitmap_stats_report_resent_against_dirtied():
    sync = BitmapSync(MemVolume(bytes(1 << 20)), "v", [(0, 4096), (4096, 4096), (100_000, 4096)],
                      over_coverage=123)
    list(sync.extents())
    s = sync.stats
    assert (s.extents_in, s.extents, s.dirty_bytes, s.resent_bytes, s.over_coverage) == (3, 2, 12288, 12288, 123)
    assert s.resent_per_dirty == 1.0


# -- throttling by wrapping ----------------------------------------------------------------------------------

class RecordingSite:
    def __init__(self):
        self.calls = []

    def acquire(self, vpg, nbytes):
        self.calls.append((vpg, nbytes))
        return 0.0


def test_a_sync_draws_its_bytes_from_the_vpg_share_of_the_site_throttle():
    site = RecordingSite()
    extents = [Extent(0, b"a" * 100), Extent(4096, b"b" * 50)]
    out = list(throttled(iter(extents), VpgShare(site, "vpg-1"), overhead=16))
    assert out == extents
    assert site.calls == [("vpg-1", 116), ("vpg-1", 66)]
    assert list(throttled(iter(extents), None)) == extents
