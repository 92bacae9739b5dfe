"""File journal recovery on start: torn tails cut, corruption reported, full disks refused cleanly."""

from __future__ import annotations

import errno
import shutil
import struct
from pathlib import Path

import pytest

from vra_appliance.recover import (
    CorruptionError,
    JournalClosedError,
    JournalCorruptError,
    JournalFullError,
    WriteRecord,
)
from vra_appliance.recover.filejournal import FileJournal, SegmentIO
from vra_appliance.recover.segments import vpg_dirname

from .conftest import checkpoint, digest, writes
from .test_journal_contract import fingerprint

VPG = "vpg/recovery test"  # a VPG id that needs escaping in the directory name


def build(root: Path, batches: list[list], **kwargs) -> list:
    journal = FileJournal(root, **kwargs)
    for batch in batches:
        journal.append(batch)
    journal.close()
    return [r for b in batches for r in b]


def mixed_batches(vpg: str = VPG, batches: int = 6, per: int = 4) -> list[list]:
    out, seq = [], 1
    for b in range(batches):
        batch = [WriteRecord(vpg, seq + i, 10 + seq + i, f"vol-{i % 2}", 512 * (seq + i), bytes([b]) * (100 + 37 * i))
                 for i in range(per)]
        seq += per
        batch.append(checkpoint(vpg, seq, tag=f"t{b}" if b % 2 else None))
        seq += 1
        out.append(batch)
    return out


def segment_files(root: Path, vpg: str = VPG) -> list[Path]:
    return sorted((root / vpg_dirname(vpg)).glob("*.seg"))


def record_spans(path: Path) -> list[tuple[int, int]]:
    """(start, end without padding) of every write/checkpoint record in a segment file, by walking it."""
    buf = path.read_bytes()
    spans, pos = [], 8
    while pos + 32 <= len(buf):
        body_len, rtype = struct.unpack_from("<IB", buf, pos + 4)
        end = pos + 32 + body_len
        if rtype != 1:
            spans.append((pos, end))
        pos = (end + 7) & ~7
    return spans


def test_torn_tail_at_every_position_keeps_exactly_the_complete_records(tmp_path):
    original = tmp_path / "original"
    records = build(original, mixed_batches())
    (seg,) = segment_files(original)
    spans = record_spans(seg)
    assert len(spans) == len(records)
    size = seg.stat().st_size
    header_end = spans[0][0]
    data = seg.read_bytes()
    # every byte of the last record and of the header, every record boundary +-2, a stride elsewhere
    positions = set(range(spans[-1][0], size + 1)) | set(range(0, header_end + 1)) | set(range(0, size, 29))
    positions |= {p + d for start, end in spans for p in (start, end) for d in (-2, -1, 0, 1, 2)}
    positions = sorted(p for p in positions if 0 <= p <= size)
    assert len(positions) > 300
    for n, cut in enumerate(positions):
        root = tmp_path / f"cut{cut}"
        (root / seg.parent.name).mkdir(parents=True)
        (root / seg.parent.name / seg.name).write_bytes(data[:cut])
        complete = sum(1 for _, end in spans if end <= cut)
        journal = FileJournal(root)
        try:
            assert journal.last_seq(VPG) == complete, cut
            assert fingerprint(journal.read(VPG, 1)) == fingerprint(records[:complete]), cut
            assert [c.seq for c in journal.checkpoints(VPG)] == [
                r.seq for r in records[:complete] if not isinstance(r, WriteRecord)]
            entries = list(journal.entries(VPG, 0, complete))
            assert [e.seq for e in entries] == list(range(1, complete + 1))
            for entry, record in zip(entries, records, strict=False):
                if isinstance(record, WriteRecord):
                    assert digest(journal.read_data(VPG, entry.loc, 0, entry.length)) == digest(record.data)
            if cut < header_end:
                assert segment_files(root) == []
            if n % 10 == 0 or cut >= spans[-1][0]:
                # the sender resends everything unacknowledged: the journal ends up whole again
                assert journal.append(records) == len(records)
                journal.close()
                journal = FileJournal(root)
                assert fingerprint(journal.read(VPG, 1)) == fingerprint(records)
        finally:
            journal.close()
            shutil.rmtree(root)


def test_torn_tail_only_in_the_last_segment(tmp_path):
    root = tmp_path / "j"
    records = build(root, mixed_batches(batches=10), segment_bytes=1024)
    segs = segment_files(root)
    assert len(segs) >= 3
    with open(segs[-1], "r+b") as f:
        f.truncate(segs[-1].stat().st_size - 5)
    journal = FileJournal(root, segment_bytes=1024)
    assert journal.last_seq(VPG) == len(records) - 1
    assert journal.truncated and journal.truncated[0][0] == segs[-1]
    journal.close()
    # a short segment that is not the last one is corruption, not a torn tail
    with open(segs[1], "r+b") as f:
        f.truncate(segs[1].stat().st_size - 5)
    journal = FileJournal(root, segment_bytes=1024)
    with pytest.raises(JournalCorruptError) as info:
        journal.last_seq(VPG)
    assert segs[1].name in str(info.value)
    journal.close()


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x5A]))


@pytest.mark.parametrize("where", ["data", "length", "seq", "header"])
def test_corrupt_record_mid_segment_is_reported_not_truncated(tmp_path, where):
    root = tmp_path / "j"
    build(root, mixed_batches())
    build(root, [writes("other-vpg", 1, 3)])
    (seg,) = segment_files(root)
    spans = record_spans(seg)
    start, end = spans[7]  # in the second batch; four more batches follow
    offset = {"data": end - 3, "length": start + 4, "seq": start + 16, "header": 8 + 20}[where]
    flip(seg, offset)
    size = seg.stat().st_size
    journal = FileJournal(root)
    for call in (lambda: journal.last_seq(VPG), lambda: journal.checkpoints(VPG),
                 lambda: list(journal.read(VPG, 1)), lambda: journal.append(writes(VPG, 31, 1))):
        with pytest.raises(JournalCorruptError) as info:
            call()
        assert isinstance(info.value, CorruptionError)
        assert seg.name in str(info.value)
    assert seg.stat().st_size == size  # nothing cut off
    assert journal.last_seq("other-vpg") == 3  # other VPGs carry on
    journal.discard(VPG)  # the resync path: start the VPG's journal afresh
    assert journal.last_seq(VPG) == 0
    assert journal.append(writes(VPG, 1, 2)) == 2
    journal.close()


def test_damage_inside_the_last_batch_is_a_torn_tail(tmp_path):
    root = tmp_path / "j"
    batches = mixed_batches()
    records = build(root, batches)
    (seg,) = segment_files(root)
    spans = record_spans(seg)
    # damage the second record of the last batch (5 records): writeback can persist pages out of order
    last_batch_start = len(records) - len(batches[-1])
    start, end = spans[last_batch_start + 1]
    flip(seg, end - 1)
    journal = FileJournal(root)
    assert journal.last_seq(VPG) == last_batch_start + 1
    assert seg.stat().st_size == start
    journal.close()


def test_corruption_found_by_read_after_open(tmp_path):
    root = tmp_path / "j"
    build(root, mixed_batches())
    journal = FileJournal(root)
    (seg,) = segment_files(root)
    flip(seg, record_spans(seg)[3][1] - 1)
    with pytest.raises(JournalCorruptError):
        list(journal.read(VPG, 1))
    with pytest.raises(JournalCorruptError):
        journal.last_seq(VPG)
    journal.close()


def test_missing_segment_is_corruption(tmp_path):
    root = tmp_path / "j"
    build(root, mixed_batches(batches=10), segment_bytes=1024)
    segs = segment_files(root)
    segs[1].unlink()
    journal = FileJournal(root, segment_bytes=1024)
    with pytest.raises(JournalCorruptError, match="expected"):
        journal.last_seq(VPG)
    journal.close()


def test_corrupt_trim_watermark_is_corruption(tmp_path):
    root = tmp_path / "j"
    journal = FileJournal(root)
    journal.append(writes(VPG, 1, 3))
    journal.trim(VPG, 2)
    journal.close()
    trim = root / vpg_dirname(VPG) / "trim"
    flip(trim, 9)
    journal = FileJournal(root)
    with pytest.raises(JournalCorruptError):
        journal.last_seq(VPG)
    journal.close()


class FaultyIO(SegmentIO):
    """Writes part of a batch, then fails with ``error`` (the disk fills up mid-write)."""

    def __init__(self) -> None:
        self.write_error: int | None = None
        self.sync_error: int | None = None

    def pwritev(self, fd, buffers, offset):
        if self.write_error is None:
            return super().pwritev(fd, buffers, offset)
        data = b"".join(buffers)
        super().pwritev(fd, [data[: len(data) // 2]], offset)
        raise OSError(self.write_error, "injected")

    def fdatasync(self, fd):
        if self.sync_error is not None:
            raise OSError(self.sync_error, "injected")
        super().fdatasync(fd)


@pytest.mark.parametrize("new_segment", [False, True])
def test_enospc_mid_write_stores_nothing_of_the_batch(tmp_path, new_segment):
    root = tmp_path / "j"
    io = FaultyIO()
    journal = FileJournal(root, io=io, segment_bytes=4096 if new_segment else 1 << 20)
    first = writes(VPG, 1, 3, size=2048)
    journal.append(first)
    files = {p.name: digest(p.read_bytes()) for p in segment_files(root)}
    io.write_error = errno.ENOSPC
    batch = writes(VPG, 4, 5, size=2048) + [checkpoint(VPG, 9)]
    with pytest.raises(JournalFullError) as info:
        journal.append(batch)
    assert "No space" in info.value.reason
    assert journal.last_seq(VPG) == 3
    assert {p.name: digest(p.read_bytes()) for p in segment_files(root)} == files
    assert fingerprint(journal.read(VPG, 1)) == fingerprint(first)
    io.write_error = None
    assert journal.append(batch) == 9  # space came back: the resend succeeds
    journal.close()
    journal = FileJournal(root)
    assert fingerprint(journal.read(VPG, 1)) == fingerprint(first + batch)
    journal.close()


def test_failed_fsync_stops_writes_until_reopen(tmp_path):
    root = tmp_path / "j"
    io = FaultyIO()
    journal = FileJournal(root, io=io)
    first = writes(VPG, 1, 3)
    journal.append(first)
    io.sync_error = errno.EIO
    with pytest.raises(JournalClosedError):
        journal.append(writes(VPG, 4, 2))
    io.sync_error = None
    with pytest.raises(JournalClosedError):
        journal.append(writes(VPG, 4, 2))
    journal.close()
    journal = FileJournal(root)
    assert fingerprint(journal.read(VPG, 1)) == fingerprint(first)
    assert journal.append(writes(VPG, 4, 2)) == 5
    journal.close()


def test_hard_limit_counts_what_is_on_disk(tmp_path):
    root = tmp_path / "j"
    journal = FileJournal(root, segment_bytes=8192, hard_limit_bytes=64 << 10)
    seq = 1
    with pytest.raises(JournalFullError):
        while True:
            journal.append(writes(VPG, seq, 2, size=3000))
            seq += 2
    on_disk = sum(p.stat().st_size for p in segment_files(root))
    assert journal.size_bytes(VPG) == on_disk <= 64 << 10
    journal.close()
