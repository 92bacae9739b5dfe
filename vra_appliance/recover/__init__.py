"""Recovery side of replication: the journal, the promoter, checkpoints and point-in-time images.

A pure, testable core: no grpc, flask, peewee or pyVmomi. See docs/FORMAT.md for the on-disk format and
docs/CONTRACTS.md section 4 for the Journal contract.
"""

from .errors import (
    CheckpointNotFoundError,
    CorruptionError,
    ImagePinnedError,
    JournalClosedError,
    JournalCorruptError,
    JournalFullError,
    JournalGapError,
    PermanentError,
    RecoverError,
    TransientError,
    UnknownVolumeError,
)
from .journal import Entry, IndexedJournal, Journal
from .memory import MemoryJournal
from .records import CheckpointInfo, CheckpointRecord, Record, WriteRecord

__all__ = [
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "CheckpointRecord",
    "CorruptionError",
    "Entry",
    "ImagePinnedError",
    "IndexedJournal",
    "Journal",
    "JournalClosedError",
    "JournalCorruptError",
    "JournalFullError",
    "JournalGapError",
    "MemoryJournal",
    "PermanentError",
    "Record",
    "RecoverError",
    "TransientError",
    "UnknownVolumeError",
    "WriteRecord",
]
