"""Recovery side of replication: the journal, the promoter, checkpoints and point-in-time images.

A pure, testable core: no grpc, flask, peewee or pyVmomi, and nothing of the appliance but its two leaf
modules (``vra_appliance.errors``, the exception tree, and ``vra_appliance.fileio``), and of the
product's shared base only ``zvr_common.loop`` (the promoter's loop). The running service
over it (receivers, the recover roles of a VRA, session exports) is the subpackage ``recover.service``,
which the core never imports. See docs/FORMAT.md for the on-disk format and
docs/CONTRACTS.md section 4 for the Journal contract.
"""

from vra_appliance.errors import (
    CheckpointNotFoundError,
    CorruptionError,
    ImagePinnedError,
    JournalClosedError,
    JournalCorruptError,
    JournalFullError,
    JournalGapError,
    PermanentError,
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
    "RecoveryVPG",
    "ReplicaVolume",
    "RetentionPolicy",
    "TransientError",
    "UnknownVolumeError",
    "VPGStatus",
    "WriteRecord",
]
