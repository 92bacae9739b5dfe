"""Errors raised by the recovery side (journal, promoter, point-in-time images).

Every error the ``recover`` package raises on purpose derives from :class:`RecoverError`, in one of three
branches that tell the caller what to do::

    RecoverError
    ├── TransientError            retry later, with the same input
    │   └── JournalFullError          hard limit or disk full: push back to the protect side; the
    │                                 promoter frees space (early promotion), then the resend succeeds
    ├── PermanentError            this input can never succeed as is: stop and report (or change the input)
    │   ├── JournalGapError           seq jumps past last_seq + 1: resend from ``expected`` (or resync)
    │   ├── JournalClosedError        the journal is closed, or an fsync failed and it stopped taking writes
    │   ├── CheckpointNotFoundError   no such checkpoint, or it was already promoted into the replica
    │   ├── UnknownVolumeError        the volume is not part of this recovery VPG
    │   └── ImagePinnedError          an operation is refused because a point-in-time image is open
    └── CorruptionError           stored data failed verification: resync the VPG (delta sync)
        └── JournalCorruptError       a record with a bad checksum or structure not at the torn tail

Operating-system errors (``OSError``) are translated at the boundary with ``raise ... from``: ENOSPC and
EDQUOT become :class:`JournalFullError`; the rest of an append's I/O errors close the journal for writes
(:class:`JournalClosedError`), because after a failed fsync the page cache cannot be trusted.
Point-in-time images are NBD export backends and raise plain ``OSError`` with an errno, as the NBD
server contract asks (docs/CONTRACTS.md section 1).
"""

from __future__ import annotations


class RecoverError(Exception):
    """Base of every error raised on purpose by ``vra_appliance.recover``."""


class TransientError(RecoverError):
    """Retry later with the same input; the condition is expected to clear."""


class PermanentError(RecoverError):
    """Retrying the same call fails the same way: stop and report, or change what is sent."""


class CorruptionError(RecoverError):
    """Stored data failed verification: the VPG needs a resync."""


class JournalFullError(TransientError):
    """The journal cannot take the batch: nothing of it was stored."""

    def __init__(self, vpg: str, needed: int, available: int | None, reason: str = "hard limit") -> None:
        self.vpg = vpg
        self.needed = needed
        self.available = available
        self.reason = reason
        room = "unknown" if available is None else f"{available} bytes"
        super().__init__(
            f"journal of VPG {vpg!r} is full ({reason}): batch needs {needed} bytes, room {room}; "
            "nothing of the batch was stored - resend it after the promoter frees space"
        )


class JournalGapError(PermanentError):
    """A record's seq is past last_seq + 1: the batch was refused as a whole."""

    def __init__(self, vpg: str, expected: int, got: int) -> None:
        self.vpg = vpg
        self.expected = expected
        self.got = got
        super().__init__(
            f"journal of VPG {vpg!r} expected seq {expected}, got {got}; nothing of the batch was stored - "
            f"resend from seq {expected}, or resync the VPG if those writes are gone"
        )


class JournalClosedError(PermanentError):
    """The journal takes no more writes (closed, or stopped after an I/O error)."""


class CheckpointNotFoundError(PermanentError):
    """The checkpoint is unknown, trimmed, or already promoted into the replica."""


class UnknownVolumeError(PermanentError):
    """The volume id is not configured for the recovery VPG."""


class ImagePinnedError(PermanentError):
    """Refused because a point-in-time image of the VPG is open."""


class JournalCorruptError(CorruptionError):
    """A stored record failed its checksum or structure check (not a torn tail)."""

    def __init__(self, vpg: str, where: str, detail: str) -> None:
        self.vpg = vpg
        self.where = where
        self.detail = detail
        super().__init__(
            f"journal of VPG {vpg!r} is corrupt at {where}: {detail}; "
            "the VPG needs a resync (delta sync) - its journal cannot be trusted"
        )
