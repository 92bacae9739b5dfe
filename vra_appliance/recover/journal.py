"""The Journal contract (docs/CONTRACTS.md section 4) and what the recovery machinery needs beyond it.

``Journal`` is the seam the transport (``vra serve``) writes through. ``IndexedJournal`` adds the few
methods the promoter and point-in-time images use: record metadata without data, reads of a write's data
by location, and the size figures the hard limit works with. Both the file journal and the in-memory
journal implement both, and one contract test suite (tests/recover/test_journal_contract.py) runs
against each.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from vra_appliance.errors import JournalGapError

from .records import CheckpointInfo, CheckpointRecord, Record, WriteRecord, validate


@runtime_checkable
class Journal(Protocol):
    """The ordered, durable log of a VPG's replicated writes and checkpoints.

    - ``append`` is durable (fsynced) when it returns and returns the highest seq now stored for the VPG.
      All records of one batch belong to one VPG (ValueError otherwise; an empty batch is a ValueError).
      Records with seq <= the VPG's highest stored seq are ignored (idempotent resend, also after a trim).
      A gap (a seq > highest + 1, also inside the batch) raises JournalGapError and stores nothing.
      A full journal (hard limit, or the disk) raises JournalFullError and stores nothing of the batch.
    - ``last_seq`` is 0 when nothing was ever stored; trimming never lowers it.
    - ``checkpoints`` lists the checkpoints still stored (not trimmed), in seq order.
    - ``read`` yields the stored records with from_seq <= seq <= to_seq (to_seq None: up to last_seq), in
      seq order; trimmed records are not yielded (callers compare the first seq they get). A record that
      fails verification raises JournalCorruptError.
    - ``trim`` lets the journal discard records with seq <= upto_seq (the promoter calls it once they are
      in the replica). It is idempotent; upto_seq past last_seq is clamped to last_seq.
    An unknown VPG is an empty one: last_seq 0, no checkpoints, nothing to read, trim is a no-op.
    """

    def append(self, records: Sequence[WriteRecord | CheckpointRecord]) -> int: ...

    def last_seq(self, vpg: str) -> int: ...

    def checkpoints(self, vpg: str) -> list[CheckpointInfo]: ...

    def read(
        self, vpg: str, from_seq: int, to_seq: int | None = None
    ) -> Iterator[WriteRecord | CheckpointRecord]: ...

    def trim(self, vpg: str, upto_seq: int) -> None: ...


class Entry(NamedTuple):
    """Metadata of one stored record, without its data. ``volume`` is None for a checkpoint.

    ``loc`` is an opaque location that ``IndexedJournal.read_data`` understands.
    """

    seq: int
    timestamp_ns: int
    volume: str | None
    offset: int
    length: int
    loc: object


@runtime_checkable
class IndexedJournal(Journal, Protocol):
    """A Journal that the promoter and point-in-time images can work with.

    - ``entries(vpg, after_seq, upto_seq)``: metadata of the stored records with after_seq < seq <= upto_seq,
      in seq order, from memory (no I/O).
    - ``read_data(vpg, loc, skip, length)``: ``length`` bytes of a write's data starting ``skip`` bytes into
      it. The caller guarantees the record is not trimmed meanwhile (images pin what they use).
    - ``first_seq``: the lowest seq still stored (last_seq + 1 when none is).
    - ``size_bytes``: bytes the VPG's journal occupies (what the hard limit is checked against).
    - ``trim_point(vpg, free_bytes)``: the smallest seq S such that trim(vpg, S) frees at least free_bytes
      (last_seq if even trimming everything frees less).
    - ``set_hard_limit`` / ``hard_limit``: the VPG's hard limit in bytes (None: only the disk limits it).
    """

    def entries(self, vpg: str, after_seq: int, upto_seq: int) -> Iterator[Entry]: ...

    def read_data(self, vpg: str, loc: object, skip: int, length: int) -> bytes: ...

    def first_seq(self, vpg: str) -> int: ...

    def size_bytes(self, vpg: str) -> int: ...

    def trim_point(self, vpg: str, free_bytes: int) -> int: ...

    def set_hard_limit(self, vpg: str, limit_bytes: int | None) -> None: ...

    def hard_limit(self, vpg: str) -> int | None: ...


def batch_vpg(records: Sequence[Record]) -> str:
    """The VPG of a batch, checking that there is exactly one and that every record is well formed."""
    if not records:
        raise ValueError("empty batch: nothing to append")
    vpg = records[0].vpg
    for record in records:
        validate(record)
        if record.vpg != vpg:
            raise ValueError(f"batch mixes VPGs {vpg!r} and {record.vpg!r}; append one VPG per batch")
    return vpg


def new_records(vpg: str, last_seq: int, records: Sequence[Record]) -> list[Record]:
    """The records of a batch to store after ``last_seq``: already-stored seqs dropped, gaps refused.

    Raises JournalGapError (nothing stored) unless the remaining records are exactly last_seq+1, +2, ...
    """
    fresh = [r for r in records if r.seq > last_seq]
    expected = last_seq + 1
    for record in fresh:
        if record.seq != expected:
            raise JournalGapError(vpg, expected, record.seq)
        expected += 1
    return fresh
