"""The promoter: history, hard limit and warning, pins, crash safety, and the recovery VPG's status."""

from __future__ import annotations

import random

import pytest

from vra_appliance.recover import JournalFullError, MemoryJournal, WriteRecord
from vra_appliance.recover.filejournal import FileJournal
from vra_appliance.recover.promoter import RetentionPolicy, time_target
from vra_appliance.recover.replica import ReplicaIO
from vra_appliance.recover.segments import vpg_dirname
from vra_appliance.recover.vpg import JournalState

from .conftest import checkpoint, writes
from .helpers import VPG, Site, sha

SIZES = {"disk-a": 256 << 10, "disk-b": 64 << 10}


def round_of_writes(site: Site, rng: random.Random, count: int = 6, size: int = 8192) -> str:
    for _ in range(count):
        volume = rng.choice(sorted(SIZES))
        offset = rng.randrange(SIZES[volume] - size)
        site.write(volume, offset, rng.randbytes(size))
    cid = site.checkpoint()
    site.flush()
    return cid


def replica_hashes(site: Site) -> dict[str, str]:
    return {v: sha(site.vpg.replica.pread(v, 0, n)) for v, n in SIZES.items()}


def test_time_target_keeps_the_replica_at_a_checkpoint():
    journal = MemoryJournal()
    # seqs 1-3 writes at t=1..3, 4 checkpoint t=4, 5-6 writes t=5..6, 7 checkpoint t=7, 8 write t=8
    journal.append(writes(VPG, 1, 3, ts=0) + [checkpoint(VPG, 4, ts=4)] + writes(VPG, 5, 2, ts=0)
                   + [checkpoint(VPG, 7, ts=7)] + writes(VPG, 8, 1, ts=0))
    assert time_target(journal, VPG, 0, 3) == 0  # a checkpoint will come: wait for it
    assert time_target(journal, VPG, 0, 4) == 4
    assert time_target(journal, VPG, 0, 6) == 4
    assert time_target(journal, VPG, 4, 6) == 4
    assert time_target(journal, VPG, 0, 7) == 7
    assert time_target(journal, VPG, 7, 100) == 8  # no newer checkpoint: everything past the history goes


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_history_promotes_old_records_and_trims_segments(tmp_path, kind):
    site = Site(tmp_path, kind, SIZES, policy=RetentionPolicy(history_s=60), segment_bytes=32 << 10)
    rng = random.Random(1)
    cids = []
    for _ in range(8):
        cids.append(round_of_writes(site, rng))
        site.clock.advance(20)
    snapshot_of = dict(site.snapshots)
    size_before = site.journal.size_bytes(VPG)
    # now: rounds were written at t = 0, 20, ..., 140; the cutoff is 160 - 60 = 100 -> rounds 0..5 go
    result = site.vpg.promote_once()
    assert not result.early and not result.pinned
    offered = [c.checkpoint_id for c in site.vpg.checkpoints()]
    assert offered == cids[5:]
    assert site.vpg.replica.checkpoint.checkpoint_id == cids[5]
    assert replica_hashes(site) == snapshot_of[cids[5]]
    assert site.journal.size_bytes(VPG) < size_before
    if kind == "file":
        segments = list((tmp_path / "journal" / vpg_dirname(VPG)).glob("*.seg"))
        assert sum(p.stat().st_size for p in segments) == site.journal.size_bytes(VPG)
    assert site.check_all_checkpoints() == 3
    status = site.vpg.status()
    assert status.state is JournalState.OK
    assert status.oldest_checkpoint.checkpoint_id == cids[5]
    assert status.newest_checkpoint.checkpoint_id == cids[7]
    assert status.history_covered_s == pytest.approx(60)
    assert status.promoted_seq == site.vpg.replica.promoted_seq
    assert site.vpg.promote_once().promoted_to == status.promoted_seq  # nothing more is due
    site.close()


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_hard_limit_promotes_early_and_history_shrinks(tmp_path, kind):
    limit = 400 << 10
    policy = RetentionPolicy(history_s=3600, hard_limit_bytes=limit, warning_bytes=250 << 10)
    site = Site(tmp_path, kind, SIZES, policy=policy, segment_bytes=16 << 10)
    rng = random.Random(2)
    states = []
    full_seen = False
    for _ in range(60):
        try:
            round_of_writes(site, rng, count=3)
        except JournalFullError:
            full_seen = True
            assert site.vpg.status().state is JournalState.FULL
            site.drop_pending()
            break
        states.append(site.vpg.status().state)
        site.clock.advance(1)
    assert full_seen
    assert JournalState.WARNING in states
    assert site.journal.size_bytes(VPG) <= limit
    result = site.vpg.promote_once()
    assert result.early
    status = site.vpg.status()
    assert status.history_shrunk and status.state is JournalState.FULL  # until an append succeeds
    assert site.journal.size_bytes(VPG) <= 0.75 * limit
    round_of_writes(site, rng, count=3)  # the pushed-back protect side carries on
    status = site.vpg.status()
    assert status.state is JournalState.HISTORY_SHRUNK and status.history_covered_s < 3600
    assert site.check_all_checkpoints() >= 1
    # once the history cutoff passes what was promoted early, the history is whole again
    site.clock.advance(3600 + 120)
    site.vpg.promote_once()
    assert not site.vpg.status().history_shrunk
    site.close()


def test_open_image_holds_promotion_so_a_full_journal_stays_full(tmp_path):
    limit = 256 << 10
    policy = RetentionPolicy(history_s=3600, hard_limit_bytes=limit)
    site = Site(tmp_path, "file", SIZES, policy=policy, segment_bytes=16 << 10)
    rng = random.Random(5)
    first = round_of_writes(site, rng, count=2)
    image = site.vpg.image("disk-a", first)
    with pytest.raises(JournalFullError):
        for _ in range(100):
            round_of_writes(site, rng, count=3)
    site.drop_pending()
    result = site.vpg.promote_once()
    assert result.pinned and site.vpg.status().pinned and site.vpg.status().full
    assert sha(image.pread(0, image.size)) == site.snapshots[first]["disk-a"]
    with pytest.raises(JournalFullError):
        site.vpg.append(writes(VPG, site.seq + 1, 20, size=8192))
    image.close()
    assert site.vpg.promote_once().early
    assert site.vpg.append(writes(VPG, site.seq + 1, 2, size=8192)) == site.seq + 2
    assert site.vpg.status().state is JournalState.HISTORY_SHRUNK
    site.close()


class SimulatedCrash(Exception):
    """The machine lost power here."""


class CrashingIO(ReplicaIO):
    def __init__(self, writes_before_crash: int | None = None, crash_on_fsync: bool = False) -> None:
        self.left = writes_before_crash
        self.crash_on_fsync = crash_on_fsync

    def pwrite(self, fd, data, offset):
        if self.left is not None:
            if self.left == 0:
                raise SimulatedCrash
            self.left -= 1
            # a torn write: only half of it reaches the file
            return super().pwrite(fd, data[: len(data) // 2], offset)
        return super().pwrite(fd, data, offset)

    def fsync(self, fd):
        if self.crash_on_fsync:
            raise SimulatedCrash
        super().fsync(fd)


class CrashOnTrim(FileJournal):
    def trim(self, vpg, upto_seq):
        raise SimulatedCrash


@pytest.mark.parametrize("crash", ["write-0", "write-1", "write-5", "write-17", "fsync", "trim"])
def test_crash_mid_promotion_leaves_exact_images(tmp_path, crash):
    io = None
    journal = None
    if crash.startswith("write-"):
        io = CrashingIO(writes_before_crash=int(crash.split("-")[1]))
    elif crash == "fsync":
        io = CrashingIO(crash_on_fsync=True)
    else:
        journal = CrashOnTrim(tmp_path / "journal", segment_bytes=16 << 10)
    site = Site(tmp_path, "file", SIZES, policy=RetentionPolicy(history_s=60), replica_io=io, journal=journal)
    rng = random.Random(7)
    cids = []
    for _ in range(8):
        cids.append(round_of_writes(site, rng))
        site.clock.advance(20)
    start = site.vpg.replica.promoted_seq
    with pytest.raises(SimulatedCrash):
        site.vpg.promote_once()
    interrupted = site.vpg.replica.promoting_to
    assert (interrupted is None) == (crash == "trim")  # the trim comes after the commit
    target = interrupted or site.vpg.replica.promoted_seq
    assert target > start
    in_flight = [r for r in site.journal.read(VPG, start + 1, interrupted or 0) if isinstance(r, WriteRecord)]
    # power loss: the page cache kept any subset of the uncommitted replica writes, torn anywhere
    site.vpg.replica.close()
    site.journal.close()
    garbage = random.Random(8)
    for record in in_flight:
        with open(tmp_path / f"{record.volume}.img", "r+b") as f:
            f.seek(record.offset)
            f.write(garbage.randbytes(len(record.data)))
    site.journal = site.new_journal()
    site.vpg = site.open_vpg()  # restart: the interrupted promotion is redone before anything else
    assert site.vpg.replica.promoting_to is None
    assert site.vpg.replica.promoted_seq == target
    at = site.vpg.replica.checkpoint
    assert at is not None and at.seq == target
    assert replica_hashes(site) == site.snapshots[at.checkpoint_id]
    assert site.check_all_checkpoints() >= 3
    site.clock.advance(1000)
    site.vpg.promote_once()
    assert replica_hashes(site) == {v: sha(bytes(m)) for v, m in site.model.items()}
    site.close()


def test_unknown_volume_fails_promotion_and_is_reported(tmp_path):
    site = Site(tmp_path, "memory", SIZES, policy=RetentionPolicy(history_s=0))
    site.vpg.append([WriteRecord(VPG, 1, 1, "disk-unknown", 0, b"x" * 10), checkpoint(VPG, 2)])
    with pytest.raises(Exception, match="disk-unknown"):
        site.vpg.promote_once()
    status = site.vpg.status()
    assert status.state is JournalState.PROMOTION_FAILED and "disk-unknown" in status.promoter_error
    assert site.vpg.replica.promoted_seq == 0
    site.close()


def test_promoter_loop_starts_and_stops(tmp_path):
    site = Site(tmp_path, "memory", SIZES, policy=RetentionPolicy(history_s=0))
    site.vpg.start()
    site.vpg.start()  # idempotent
    site.vpg.promoter.wake()
    site.vpg.stop()
    assert not site.vpg.promoter.running
    site.vpg.stop()
    site.close()


def test_set_policy_changes_history_and_limit_in_place(tmp_path):
    site = Site(tmp_path, "file", SIZES, policy=RetentionPolicy(history_s=3600))
    rng = random.Random(12)
    cid = round_of_writes(site, rng)
    image = site.vpg.image("disk-a", cid)
    site.clock.advance(120)
    round_of_writes(site, rng)
    assert site.vpg.promote_once().promoted_to == 0
    site.vpg.set_policy(RetentionPolicy(history_s=60, hard_limit_bytes=10 << 20))
    assert site.journal.hard_limit(VPG) == 10 << 20
    assert site.vpg.promote_once().promoted_to == image.checkpoint_seq  # the open image still holds it
    assert sha(image.pread(0, image.size)) == site.snapshots[cid]["disk-a"]
    image.close()
    site.close()


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_a_batch_bigger_than_the_room_left_gets_room(tmp_path, kind):
    # Below promote_above of the limit, early promotion did not start, so a batch needing more than the
    # room left was refused for ever: the protect side's resend could never land.
    limit = 400 << 10
    policy = RetentionPolicy(history_s=3600, hard_limit_bytes=limit)
    sizes = {"disk-a": 1 << 20}
    site = Site(tmp_path, kind, sizes, policy=policy, segment_bytes=16 << 10)
    rng = random.Random(3)
    while site.journal.size_bytes(VPG) < 0.8 * limit:
        site.write("disk-a", rng.randrange(0, (1 << 20) - 8192, 4096), rng.randbytes(8192))
        site.checkpoint()
        site.flush()
    assert site.journal.size_bytes(VPG) < policy.promote_above * limit
    for _ in range(15):  # ~120 KiB in one batch: more than the room left
        site.write("disk-a", rng.randrange(0, (1 << 20) - 8192, 4096), rng.randbytes(8192))
    site.checkpoint()
    with pytest.raises(JournalFullError):
        site.flush()
    result = site.vpg.promote_once()
    assert result.early
    site.flush()  # the resend of the same batch now fits
    assert site.journal.size_bytes(VPG) <= limit
    assert site.check_all_checkpoints() >= 1
    site.close()
