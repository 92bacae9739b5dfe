"""The journal's record types: what the protect side sends and the journal stores.

Sequence numbers are per VPG, start at 1 and have no gaps; every record (write or checkpoint) takes one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class WriteRecord:
    """One replicated write: ``data`` at byte ``offset`` of ``volume``."""

    vpg: str
    seq: int
    timestamp_ns: int
    volume: str
    offset: int
    data: bytes


@dataclass(frozen=True)
class CheckpointRecord:
    """A crash-consistent point of a VPG (``consistent`` is False when taken during a sync)."""

    vpg: str
    seq: int
    timestamp_ns: int
    checkpoint_id: str
    tag: str | None
    consistent: bool


Record = WriteRecord | CheckpointRecord


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint as listed to the ZVM: id, time, tag, whether consistent, and its seq."""

    vpg: str
    checkpoint_id: str
    timestamp_ns: int
    tag: str | None
    consistent: bool
    seq: int

    @property
    def id(self) -> str:
        return self.checkpoint_id

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ns / 1e9, tz=UTC)

    @classmethod
    def from_record(cls, record: CheckpointRecord) -> CheckpointInfo:
        return cls(
            vpg=record.vpg,
            checkpoint_id=record.checkpoint_id,
            timestamp_ns=record.timestamp_ns,
            tag=record.tag,
            consistent=record.consistent,
            seq=record.seq,
        )


def validate(record: Record) -> None:
    """Raise ValueError for a record the journal cannot represent (a programming error, not a fault)."""
    if not isinstance(record, WriteRecord | CheckpointRecord):
        raise ValueError(f"not a journal record: {type(record).__name__}")
    if not record.vpg:
        raise ValueError("record without a VPG id")
    if not isinstance(record.seq, int) or record.seq < 1 or record.seq >= 1 << 63:
        raise ValueError(f"seq must be an int in [1, 2**63): {record.seq!r}")
    if not 0 <= record.timestamp_ns < 1 << 64:
        raise ValueError(f"timestamp_ns out of range: {record.timestamp_ns!r}")
    if isinstance(record, WriteRecord):
        if not record.volume or len(record.volume.encode()) > 0xFFFF:
            raise ValueError(f"volume id must be 1..65535 bytes: {record.volume!r}")
        if not 0 <= record.offset < 1 << 63:
            raise ValueError(f"offset out of range: {record.offset!r}")
        if len(record.data) > MAX_WRITE_BYTES:
            raise ValueError(f"write of {len(record.data)} bytes exceeds {MAX_WRITE_BYTES}")
    else:
        if not record.checkpoint_id or len(record.checkpoint_id.encode()) > 0xFFFF:
            raise ValueError(f"checkpoint id must be 1..65535 bytes: {record.checkpoint_id!r}")
        if record.tag is not None and len(record.tag.encode()) > 0xFFFF:
            raise ValueError("checkpoint tag longer than 65535 bytes")


MAX_WRITE_BYTES = 64 << 20
"""Largest single write record; the protect side splits larger writes (NBD requests are far smaller)."""
