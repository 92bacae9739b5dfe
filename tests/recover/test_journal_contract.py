"""The Journal contract (docs/CONTRACTS.md section 4), run against every implementation."""

from __future__ import annotations

import pytest

from vra_appliance.errors import PermanentError
from vra_appliance.recover import (
    CheckpointInfo,
    IndexedJournal,
    Journal,
    JournalFullError,
    JournalGapError,
    TransientError,
    WriteRecord,
)

from .conftest import checkpoint, digest, writes

VPG = "vpg-a"


def fingerprint(records) -> list[tuple]:
    out = []
    for r in records:
        if isinstance(r, WriteRecord):
            out.append(("w", r.vpg, r.seq, r.timestamp_ns, r.volume, r.offset, digest(r.data)))
        else:
            out.append(("c", r.vpg, r.seq, r.timestamp_ns, r.checkpoint_id, r.tag, r.consistent))
    return out


def test_implements_protocols(make_journal):
    journal = make_journal()
    assert isinstance(journal, Journal)
    assert isinstance(journal, IndexedJournal)


def test_unknown_vpg_is_empty(make_journal):
    journal = make_journal()
    assert journal.last_seq("nope") == 0
    assert journal.checkpoints("nope") == []
    assert list(journal.read("nope", 1)) == []
    journal.trim("nope", 10)
    assert journal.last_seq("nope") == 0


def test_append_returns_highest_seq_and_reads_back(make_journal):
    journal = make_journal()
    batch = writes(VPG, 1, 5) + [checkpoint(VPG, 6, tag="before-upgrade")] + writes(VPG, 7, 3)
    assert journal.append(batch) == 9
    assert journal.last_seq(VPG) == 9
    assert fingerprint(journal.read(VPG, 1)) == fingerprint(batch)
    assert fingerprint(journal.read(VPG, 3, 6)) == fingerprint(batch[2:6])
    assert fingerprint(journal.read(VPG, 9, 100)) == fingerprint(batch[8:])
    assert list(journal.read(VPG, 10)) == []


def test_append_survives_reopen(kit):
    journal = kit.make()
    batch = writes(VPG, 1, 20) + [checkpoint(VPG, 21)]
    journal.append(batch[:7])
    journal.append(batch[7:])
    journal = kit.reopen(journal)
    assert journal.last_seq(VPG) == 21
    assert fingerprint(journal.read(VPG, 1)) == fingerprint(batch)
    assert [c.checkpoint_id for c in journal.checkpoints(VPG)] == ["cp-21"]
    assert journal.append(writes(VPG, 22, 1)) == 22


def test_resend_is_idempotent(make_journal):
    journal = make_journal()
    batch = writes(VPG, 1, 6)
    journal.append(batch)
    assert journal.append(batch) == 6
    assert journal.append(batch[2:4]) == 6
    # a resend that overlaps what is stored and goes beyond it stores only the new records
    more = writes(VPG, 5, 5)
    assert journal.append(more) == 9
    assert fingerprint(journal.read(VPG, 1)) == fingerprint(batch + more[2:])


def test_gap_raises_and_stores_nothing(make_journal):
    journal = make_journal()
    journal.append(writes(VPG, 1, 3))
    with pytest.raises(JournalGapError) as info:
        journal.append(writes(VPG, 5, 2))
    assert (info.value.expected, info.value.got) == (4, 5)
    assert isinstance(info.value, PermanentError)
    # a gap inside the batch refuses the whole batch, including the records before the gap
    with pytest.raises(JournalGapError):
        journal.append(writes(VPG, 4, 2) + writes(VPG, 7, 1))
    assert journal.last_seq(VPG) == 3
    assert [r.seq for r in journal.read(VPG, 1)] == [1, 2, 3]


def test_first_record_must_be_seq_1(make_journal):
    journal = make_journal()
    with pytest.raises(JournalGapError):
        journal.append(writes(VPG, 2, 1))
    assert journal.last_seq(VPG) == 0


def test_bad_batches_are_value_errors(make_journal):
    journal = make_journal()
    with pytest.raises(ValueError):
        journal.append([])
    with pytest.raises(ValueError):
        journal.append(writes(VPG, 1, 1) + writes("other", 2, 1))
    with pytest.raises(ValueError):
        journal.append([WriteRecord(VPG, 1, 1, "", 0, b"x")])
    assert journal.last_seq(VPG) == 0


def test_full_journal_stores_nothing_of_the_batch(kit):
    journal = kit.make(hard_limit_bytes=200 << 10)
    seq = 1
    while True:
        batch = writes(VPG, seq, 8, size=4096) + [checkpoint(VPG, seq + 8)]
        try:
            journal.append(batch)
        except JournalFullError as exc:
            assert isinstance(exc, TransientError)
            assert exc.vpg == VPG
            break
        seq += 9
        assert seq < 1000, "hard limit never reached"
    stored = fingerprint(journal.read(VPG, 1))
    assert journal.last_seq(VPG) == seq - 1
    assert len(stored) == seq - 1
    assert journal.size_bytes(VPG) <= 200 << 10
    # a restart shows the same: nothing of the refused batch
    journal = kit.reopen(journal, hard_limit_bytes=200 << 10)
    assert fingerprint(journal.read(VPG, 1)) == stored
    # after a trim of everything stored, the same batch fits
    journal.trim(VPG, seq - 1)
    assert journal.append(batch) == seq + 8
    assert fingerprint(journal.read(VPG, 1)) == fingerprint(batch)


def test_checkpoints_listed_in_order_with_id_time_tag_consistency(make_journal):
    journal = make_journal()
    journal.append(writes(VPG, 1, 2) + [checkpoint(VPG, 3, "c-a", consistent=False, ts=5_000_000_000)])
    journal.append([checkpoint(VPG, 4, "c-b", tag="pre-patch", ts=6_000_000_000)] + writes(VPG, 5, 1))
    cps = journal.checkpoints(VPG)
    assert cps == [
        CheckpointInfo(VPG, "c-a", 5_000_000_000, None, False, 3),
        CheckpointInfo(VPG, "c-b", 6_000_000_000, "pre-patch", True, 4),
    ]
    assert cps[1].id == "c-b"
    assert cps[1].time.timestamp() == 6.0


def test_trim_hides_records_keeps_last_seq(kit):
    journal = kit.make()
    batch = []
    for i in range(10):
        chunk = writes(VPG, i * 10 + 1, 9, size=8192) + [checkpoint(VPG, i * 10 + 10)]
        journal.append(chunk)
        batch += chunk
    journal.trim(VPG, 45)
    got = list(journal.read(VPG, 1))
    assert got[0].seq == 46
    assert fingerprint(got) == fingerprint(batch[45:])
    assert [c.seq for c in journal.checkpoints(VPG)] == [50, 60, 70, 80, 90, 100]
    assert journal.first_seq(VPG) == 46
    journal.trim(VPG, 45)  # idempotent
    journal.trim(VPG, 10)  # never goes back
    assert journal.first_seq(VPG) == 46
    # resending trimmed seqs is still idempotent, also after a restart
    journal = kit.reopen(journal)
    assert journal.first_seq(VPG) == 46
    assert journal.append(batch[:50]) == 100
    journal.trim(VPG, 10_000)  # clamps to last_seq
    assert list(journal.read(VPG, 1)) == []
    assert journal.checkpoints(VPG) == []
    assert journal.last_seq(VPG) == 100
    journal = kit.reopen(journal)
    assert journal.last_seq(VPG) == 100
    assert journal.first_seq(VPG) == 101
    assert journal.append(writes(VPG, 101, 1)) == 101
    with pytest.raises(JournalGapError):
        journal.append(writes(VPG, 103, 1))


def test_vpgs_are_independent(make_journal):
    journal = make_journal()
    journal.append(writes("a", 1, 3))
    journal.append(writes("b", 1, 5) + [checkpoint("b", 6)])
    journal.trim("b", 6)
    assert journal.last_seq("a") == 3
    assert [r.seq for r in journal.read("a", 1)] == [1, 2, 3]
    assert journal.checkpoints("a") == []
    assert journal.last_seq("b") == 6


def test_entries_and_read_data(make_journal):
    journal = make_journal()
    batch = writes(VPG, 1, 4, size=1000) + [checkpoint(VPG, 5)]
    journal.append(batch)
    entries = list(journal.entries(VPG, 1, 5))
    assert [e.seq for e in entries] == [2, 3, 4, 5]
    assert entries[-1].volume is None
    for entry, record in zip(entries, batch[1:4], strict=False):
        assert (entry.volume, entry.offset, entry.length, entry.timestamp_ns) == (
            record.volume, record.offset, len(record.data), record.timestamp_ns)
        assert digest(journal.read_data(VPG, entry.loc, 0, entry.length)) == digest(record.data)
        assert journal.read_data(VPG, entry.loc, 100, 50) == record.data[100:150]


def test_size_and_trim_point(kit):
    journal = kit.make()
    assert journal.size_bytes(VPG) == 0
    for i in range(20):
        journal.append(writes(VPG, i * 4 + 1, 4, size=8192))
    size = journal.size_bytes(VPG)
    assert size > 20 * 4 * 8192
    point = journal.trim_point(VPG, size // 2)
    assert 1 <= point <= 80
    journal.trim(VPG, point)
    assert journal.size_bytes(VPG) <= size - size // 2
    assert journal.trim_point(VPG, 10 * size) == 80


def test_appends_continue_in_the_same_segment_after_reopen(kit):
    journal = kit.make()
    first = writes(VPG, 1, 2, size=512)
    journal.append(first)
    journal = kit.reopen(journal)
    more = writes(VPG, 3, 2, size=512) + [checkpoint(VPG, 5)]
    assert journal.append(more) == 5
    journal = kit.reopen(journal)
    assert fingerprint(journal.read(VPG, 1)) == fingerprint(first + more)
