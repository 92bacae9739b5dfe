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
from .filejournal import FileJournal
from .image import PointInTimeImage
from .journal import Entry, IndexedJournal, Journal
from .memory import MemoryJournal
from .promoter import PromotionResult, RetentionPolicy
from .records import CheckpointInfo, CheckpointRecord, Record, WriteRecord
from .replica import ReplicaVolume
from .site import RecoverySite, UnknownVPGError
from .vpg import JournalState, RecoveryVPG, VPGStatus

__all__ = [
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "CheckpointRecord",
    "CorruptionError",
    "Entry",
    "FileJournal",
    "ImagePinnedError",
    "IndexedJournal",
    "Journal",
    "JournalClosedError",
    "JournalCorruptError",
    "JournalFullError",
    "JournalGapError",
    "JournalState",
    "MemoryJournal",
    "PermanentError",
    "PointInTimeImage",
    "PromotionResult",
    "Record",
    "RecoverError",
    "RecoverySite",
    "RecoveryVPG",
    "ReplicaVolume",
    "RetentionPolicy",
    "TransientError",
    "UnknownVPGError",
    "UnknownVolumeError",
    "VPGStatus",
    "WriteRecord",
]
