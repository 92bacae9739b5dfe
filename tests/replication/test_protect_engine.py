"""The protect engine of one VPG, driven step by step (``sync_once`` on both sides, a fake clock), in
process against the recovery receiver over an in-memory journal."""

from __future__ import annotations

import dataclasses
import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vra_appliance.protect.side import ProtectSide
from vra_appliance.protect.vpg import ProtectedVpg, ProtectSettings
from vra_appliance.recover import CheckpointRecord, WriteRecord
from vra_appliance.stream.transport import InProcessTransport, Refused, TransientError
from vra_appliance.stream.wire import CODEC_NONE, CODEC_ZSTD

from .conftest import Recovery

VPG = "vpg-1"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def data(i: int, size: int = 16384, compressible: bool = False) -> bytes:
    if compressible:
        return (b"%08d" % i) * (size // 8)
    return hashlib.shake_256(b"%d" % i).digest(size)


class Rig:
    """An engine (peer "protect-a") and a receiver, both stepped by hand."""

    def __init__(self, tmp_path, transport_wrapper=None, **settings) -> None:
        self.recovery = Recovery(tmp_path, start=False)
        self.rx = self.recovery.add_vpg(VPG)
        self.clock = Clock()
        t = InProcessTransport(self.recovery.endpoint, "protect-a")
        self.transport = transport_wrapper(t) if transport_wrapper else t
        self.engine = ProtectedVpg(VPG, "protect-a", self.transport, volumes={"vol-1", "vol-2"},
                                   settings=ProtectSettings(**{"backoff_min": 0.0, "backoff_max": 0.0, **settings}),
                                   clock=self.clock)

    def step(self, rounds: int = 200) -> None:
        """Run both sides until everything is acknowledged, or nothing moved for 10 rounds (writes held at
        a checkpoint mark). The fake clock passes the batch delay every round."""
        idle = 0
        for _ in range(rounds):
            self.clock.t += 0.01
            sent = self.engine.sync_once()
            took = 0
            while self.rx.sync_once():
                took += 1
            self.engine.sync_once()
            idle = 0 if (sent or took) else idle + 1
            if idle and self.engine.status()["counters"]["buffered_bytes"] == 0 or idle >= 10:
                return
        raise AssertionError(f"did not settle: {self.engine.status()}")

    def journal(self) -> list:
        return list(self.recovery.journal.read(VPG, 1))

    def close(self) -> None:
        self.engine.stop()
        self.recovery.close()


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path, batch_bytes=256 << 10)
    yield r
    r.close()


def test_writes_are_sequenced_batched_and_journaled_once_in_order(rig: Rig) -> None:
    sent = [(("vol-1", "vol-2")[i % 2], i * 16384, data(i)) for i in range(100)]
    for vol, off, d in sent:
        rig.engine.on_write("filter-1", vol, off, d)
    rig.step()
    got = rig.journal()
    assert [(r.volume, r.offset, r.data) for r in got] == sent
    assert [r.seq for r in got] == list(range(1, 101))
    st = rig.engine.status()["counters"]
    assert st["acked_seq"] == 100 and st["buffered_bytes"] == 0 and st["unacked_batches"] == 0
    assert 7 <= st["batches"] <= 10  # 1.6 MB in batches of at most 256 KiB
    assert st["rpo_ms"] == 0


def test_compression_and_no_compression(tmp_path) -> None:
    for compression, codec in ((True, CODEC_ZSTD), (False, CODEC_NONE)):
        seen = []

        def spy(inner, seen=seen):
            class Spy:
                def open(self, hello):
                    return inner.open(hello)

                def send(self, batch):
                    seen.append(batch)
                    return inner.send(batch)

                def close(self):
                    inner.close()
            return Spy()

        r = Rig(tmp_path / str(compression), spy, compression=compression)
        try:
            for i in range(20):
                r.engine.on_write("f", "vol-1", i * 16384, data(i, compressible=True))
            r.step()
            assert {b.codec for b in seen} == {codec}
            ratio = r.engine.status()["counters"]["compression_ratio"]
            assert (ratio > 20) if compression else (ratio == 1.0)
            assert [x.data for x in r.journal()] == [data(i, compressible=True) for i in range(20)]
        finally:
            r.close()


class Flaky:
    """Loses the stream now and then: after a send (the batch may or may not have arrived) or instead of it."""

    def __init__(self, inner, seed: int) -> None:
        self.inner = inner
        self.rng = random.Random(seed)
        self.failures = 0

    def open(self, hello):
        if self.rng.random() < 0.2:
            self.failures += 1
            raise TransientError("connection refused")
        return self.inner.open(hello)

    def send(self, batch):
        roll = self.rng.random()
        if roll < 0.15:
            self.failures += 1
            self.inner.close()  # before it arrives
        fut = self.inner.send(batch)
        if 0.15 <= roll < 0.3:
            self.failures += 1
            self.inner.close()  # after it arrived, before the ack
        return fut

    def close(self):
        self.inner.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lost_streams_are_resent_with_no_gap_and_nothing_twice(tmp_path, seed: int) -> None:
    flaky = []
    r = Rig(tmp_path, lambda t: flaky.append(Flaky(t, seed)) or flaky[0], batch_bytes=64 << 10)
    try:
        sent = []
        for i in range(300):
            w = ("vol-1", (i * 7919 % 97) * 4096, data(i, 4096))
            sent.append(w)
            r.engine.on_write("f", *w)
            if i % 25 == 0:
                r.step()
        r.step(2000)
        got = r.journal()
        assert [(x.volume, x.offset, x.data) for x in got] == sent
        assert [x.seq for x in got] == list(range(1, 301))
        assert flaky[0].failures > 5
        assert r.engine.status()["counters"]["resent_batches"] > 0
    finally:
        r.close()


def test_a_refused_checksum_is_resent(tmp_path) -> None:
    corrupted = []

    def corrupt_first(inner):
        class Once:
            def open(self, hello):
                return inner.open(hello)

            def send(self, batch):
                if not corrupted:
                    corrupted.append(batch.first_seq)
                    batch = dataclasses.replace(batch, crc32c=batch.crc32c ^ 1)
                return inner.send(batch)

            def close(self):
                inner.close()
        return Once()

    r = Rig(tmp_path, corrupt_first)
    try:
        for i in range(10):
            r.engine.on_write("f", "vol-1", i * 16384, data(i))
        r.step()
        assert [x.data for x in r.journal()] == [data(i) for i in range(10)]
        c = r.engine.status()["counters"]
        assert c["refused_bad_checksum"] == 1 and c["resent_batches"] >= 1
        assert r.rx.counters["bad_checksum"] == 1
    finally:
        r.close()


def test_buffer_overflow_falls_back_to_the_dirty_map(tmp_path) -> None:
    down = [True]

    def link(inner):
        class Link:
            def open(self, hello):
                if down[0]:
                    raise TransientError("peer unreachable")
                return inner.open(hello)

            def send(self, batch):
                return inner.send(batch)

            def close(self):
                inner.close()
        return Link()

    r = Rig(tmp_path, link, buffer_bytes=1 << 20)
    try:
        writes = [("vol-1", i * 65536, data(i, 65536)) for i in range(32)]  # 2 MiB into a 1 MiB buffer
        for w in writes:
            r.engine.on_write("f", *w)
        r.engine.sync_once()
        st = r.engine.status()
        assert st["needs_bitmap_sync"] and st["state"] == "connecting"
        assert st["counters"]["dropped_writes"] == 16 and st["counters"]["dropped_bytes"] == 1 << 20
        # The dirty map covers exactly the writes that were let go.
        assert r.engine.dropped.extents("vol-1") == [(16 * 65536, 16 * 65536)]
        down[0] = False
        r.engine.commit_checkpoint("cp-1", set(), tag="while-dirty")
        r.step()
        got = r.journal()
        assert [(x.volume, x.offset, x.data) for x in got if isinstance(x, WriteRecord)] == writes[:16]
        cps = [x for x in got if isinstance(x, CheckpointRecord)]
        assert [(c.checkpoint_id, c.consistent) for c in cps] == [("cp-1", False)]
        assert r.engine.status()["state"] == "bitmap-sync-needed"
    finally:
        r.close()


def test_permanent_refusal_is_reported(tmp_path) -> None:
    r = Rig(tmp_path)
    try:
        r.rx.paired = frozenset({"someone-else"})
        r.engine.on_write("f", "vol-1", 0, data(0))
        r.engine.sync_once()
        st = r.engine.status()
        assert st["state"] == "error" and "UNPAIRED_PEER" in st["error"]
        assert st["counters"]["buffered_bytes"] == len(data(0))  # kept, not dropped
    finally:
        r.close()


def test_local_filters_are_aligned_at_their_marks(rig: Rig) -> None:
    e = rig.engine
    e.on_write("f1", "vol-1", 0, b"a" * 512)  # before f1's mark
    e.on_mark("f1", "cp-1")
    e.on_write("f1", "vol-1", 512, b"b" * 512)  # after f1's mark (released by the thaw)
    e.on_write("f2", "vol-2", 0, b"c" * 512)  # before f2's mark, arriving late
    rig.step()
    assert [x.data[:1] for x in rig.journal()] == [b"a", b"c"]  # f1 held at its mark, f2 not
    e.commit_checkpoint("cp-1", {"f1", "f2"}, tag="t", participants=("protect-a",))
    rig.step()
    assert [x.data[:1] for x in rig.journal()] == [b"a", b"c"]  # cp-1 waits for f2's mark
    e.on_mark("f2", "cp-1")
    rig.step()
    got = rig.journal()
    kinds = [x.data[:1] if isinstance(x, WriteRecord) else x.checkpoint_id for x in got]
    assert kinds == [b"a", b"c", "cp-1", b"b"]
    assert got[2].tag == "t" and got[2].consistent


def test_split_side_routes_by_volume_and_notices_filter_gaps(tmp_path) -> None:
    engines = {}

    class FakeEngine:
        def __init__(self, role):
            self.writes, self.gaps, self.marks = [], 0, []
            self.needs_bitmap_sync = False
            engines[role.vpg] = self

        def on_write(self, f, v, o, d):
            self.writes.append((v, o))

        def on_mark(self, f, c):
            self.marks.append(c)

        def on_filter_gap(self, f):
            self.gaps += 1

        def attach_filter(self, f, volumes):
            self.attached = (f, sorted(volumes))

        def start(self):
            pass

        def stop(self):
            pass

    from vra_appliance.config import PeerVra, ProtectRole

    side = ProtectSide("vra-1", FakeEngine)
    for vpg, vols in (("g1", ("v1",)), ("g2", ("v2",))):
        side.configure(ProtectRole(vpg, vols, (), PeerVra("r", "127.0.0.1:1")))
    side.on_hello("f", ["v1", "v2"])
    assert engines["g1"].attached == ("f", ["v1", "v2"]) and side.filter_of("v2") == "f"
    side.on_write("f", "v1", 0, b"x", 1)
    side.on_write("f", "v2", 0, b"x", 2)
    side.on_mark("f", "cp", ["v1"])  # the MARK takes filter seq 3
    side.on_write("f", "v1", 8, b"x", 4)
    side.on_write("f", "v9", 0, b"x", 5)  # a volume of no VPG here
    assert engines["g1"].writes == [("v1", 0), ("v1", 8)] and engines["g2"].writes == [("v2", 0)]
    assert engines["g1"].marks == ["cp"] and engines["g2"].marks == []
    assert engines["g1"].gaps == engines["g2"].gaps == 0
    side.on_write("f", "v1", 16, b"x", 9)  # 6..8 went to the filter's dirty map
    assert engines["g1"].gaps == 1 and engines["g2"].gaps == 1
    side.stop()


def test_refused_is_typed() -> None:
    exc = Refused(4, "full")
    assert exc.reason_name == "JOURNAL_FULL" and exc.kind == "backoff"


def test_sync_hooks_resync_writes_dropped_extents_and_syncing_state(tmp_path) -> None:
    r = Rig(tmp_path, buffer_bytes=64 << 10)
    try:
        e = r.engine
        e.attach_filter("f1", ["vol-1"])
        source = {0: b"s" * 4096}
        assert e.resync_write("vol-1", 0, 4096, lambda off, n: source[off][:n])
        e.on_write("f1", "vol-1", 0, b"n" * 4096)  # a newer VM write of the same block lands after it
        assert not e.wait_room(64 << 10, timeout=0)  # more than a sync's share of the buffer can ever hold
        e.set_syncing(True)
        e.commit_checkpoint("during-sync", set())
        r.step()
        got = r.journal()
        assert [x.data[:1] for x in got if isinstance(x, WriteRecord)] == [b"s", b"n"]
        assert [(c.checkpoint_id, c.consistent) for c in got if isinstance(c, CheckpointRecord)] == [("during-sync", False)]
        assert e.status()["state"] == "syncing"
        assert e.wait_room(4096, timeout=0)
        # A piece the sync's share of the buffer cannot take is neither read nor queued nor dropped: the
        # sync still owns it.
        read: list = []
        assert not e.resync_write("vol-1", 8192, 64 << 10, lambda off, n: read.append(off) or bytes(n))
        assert read == [] and not e.dropped and not e.needs_bitmap_sync
        # Extents given back (an interrupted bitmap sync) make the VPG need a bitmap sync; taking the need
        # marks it syncing in the same step, so no checkpoint in between is consistent.
        e.add_dropped("vol-1", [(0, 512)])
        e.set_syncing(False)
        assert e.needs_bitmap_sync and e.status()["state"] == "bitmap-sync-needed"
        assert e.take_bitmap_need() and not e.needs_bitmap_sync and e.status()["state"] == "syncing"
        assert e.take_bitmap_need()  # extents still in the map: still needed until a sync takes them
        assert e.take_dropped("vol-1") == [(0, 512)]
        e.set_syncing(False)
        assert not e.take_bitmap_need() and e.status()["state"] == "ok"
        e.commit_checkpoint("after-sync", set())
        r.step()
        assert r.journal()[-1].consistent
    finally:
        r.close()


def test_held_extents_of_a_stopped_engine_are_everything_not_acknowledged(tmp_path) -> None:
    r = Rig(tmp_path, buffer_bytes=64 << 10)
    try:
        e = r.engine
        e.on_write("f1", "vol-1", 0, b"a" * 4096)
        r.step()  # sent and acknowledged: not held
        e.on_write("f1", "vol-1", 8192, b"b" * 4096)  # queued, not sent
        e.on_write("f1", "vol-1", 0, b"c" * (80 << 10))  # past the buffer: dropped
        assert sorted(e.held_extents()) == [("vol-1", 0, 80 << 10), ("vol-1", 8192, 4096)]
    finally:
        r.close()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4095), st.integers(1, 3)), min_size=1, max_size=400),
       st.integers(1, 64))
def test_dropped_extents_cover_every_write_within_their_budget(writes, budget) -> None:
    from vra_appliance.protect.dirty import ExtentMap

    m = ExtentMap(budget)
    for block, n in writes:
        m.add("v", block * 4096, n * 4096)
        assert m.extent_count() <= budget
    extents = m.extents("v")
    assert extents == sorted(extents) and all(a + n < b for (a, n), (b, _) in zip(extents, extents[1:], strict=False))
    covered = {b for o, n in extents for b in range(o // 4096, (o + n) // 4096)}
    written = {b for block, n in writes for b in range(block, block + n)}
    assert written <= covered
    assert (len(covered) - len(written)) * 4096 <= m.over_coverage  # an upper bound of what was not written


def test_a_replaced_role_hands_what_was_not_acknowledged_to_the_new_engine_and_keeps_its_syncs(tmp_path) -> None:
    from vra_appliance.config import PeerVra, ProtectRole

    recovery = Recovery(tmp_path, start=False)  # the receiver's committer does not run: nothing is acknowledged
    recovery.add_vpg(VPG)
    engines: list[ProtectedVpg] = []

    def make_engine(role):
        engines.append(ProtectedVpg(role.vpg, "protect-a", InProcessTransport(recovery.endpoint, "protect-a"),
                                    volumes=set(role.volumes)))
        return engines[-1]

    made: list = []

    class Syncs:
        def __init__(self, role, engine, controls, previous) -> None:
            self.previous, self.needs = previous, []
            made.append(self)

        def need(self, reason, volumes=None) -> None:
            self.needs.append((reason, volumes))

        def start(self) -> None:
            pass

        def stop(self) -> None:
            pass

        def status(self) -> dict:
            return {"substatus": ""}

    side = ProtectSide("protect-a", make_engine, make_syncs=Syncs)
    try:
        role = ProtectRole(VPG, ("vol-1",), (), PeerVra("r", "127.0.0.1:1"))
        side.configure(role)
        side.on_hello("f1", ["vol-1"])
        side.on_write("f1", "vol-1", 4096, b"x" * 4096, 1)
        side.configure(role)  # e.g. a new checkpoint interval: the engine is replaced
        assert engines[1].dropped.extents("vol-1") == [(4096, 4096)] and engines[1].needs_bitmap_sync
        assert made[1].previous is made[0]  # the syncs' state carries over
        assert side.need(VPG, "forced-sync", ["vol-1"]) and made[1].needs == [("forced-sync", ["vol-1"])]
        assert side.status()[0]["sync"] == {"substatus": ""}
    finally:
        side.stop()
        recovery.close()


def test_a_paused_engine_sends_nothing_keeps_writes_and_resumes(tmp_path) -> None:
    r = Rig(tmp_path, buffer_bytes=1 << 20)
    try:
        r.engine.on_write("f", "vol-1", 0, data(0, 65536))
        r.step()
        assert len(r.journal()) == 1
        r.engine.set_paused(True)
        r.step()
        st = r.engine.status()
        assert st["paused"] and st["state"] == "paused" and r.engine.not_consistent
        for i in range(1, 33):  # 2 MiB into a 1 MiB buffer: half of it goes to the dirty map, as in a link cut
            r.engine.on_write("f", "vol-1", i * 65536, data(i, 65536))
        r.step()
        assert len(r.journal()) == 1  # nothing sent while paused
        st = r.engine.status()
        assert st["needs_bitmap_sync"] and st["counters"]["dropped_bytes"] == 1 << 20
        r.engine.set_paused(False)
        r.step()
        got = r.journal()
        assert [x.data for x in got[1:]] == [data(i, 65536) for i in range(1, 17)]  # the buffered half
        st = r.engine.status()
        assert st["state"] == "bitmap-sync-needed" and not st["paused"]  # streaming again, the bitmap sync due
        assert r.engine.take_dropped("vol-1") == [(17 * 65536, 16 * 65536)]  # the rest: for the bitmap sync
    finally:
        r.close()
