"""Errors raised by the syncs (initial, delta, bitmap).

Every error the ``sync`` package raises on purpose derives from :class:`SyncError`, in one of the three
branches that tell the caller what to do::

    SyncError
    ├── TransientError            the source, the replica or the peer went away mid-sync: run the sync again
    │                             (it is idempotent; an interrupted initial sync resumes as a delta sync)
    ├── PermanentError            this input can never succeed as is: stop and report, fix what the message says
    │   ├── UnknownVpgError           the VPG has no recovery role on the peer
    │   ├── UnknownVolumeError        the volume is not part of the VPG on this side
    │   ├── BlockSizeMismatchError    the peer's checksums are for another block size than this sync's
    │   ├── ChecksumListError         a checksum list of the wrong length, digest size, algorithm or group
    │   ├── VolumeSizeError           the replica volume is smaller than the source (or the sizes disagree)
    │   └── SyncParamsError           block size, fanout or algorithm out of the supported range
    └── CorruptionError           what a sync relied on cannot be trusted: run a delta sync
        └── DirtyMapLostError         the IO filter stopped uncleanly: its dirty map is gone

``OSError`` from reading a volume is translated where it happens (``raise TransientError(...) from exc``).
Every message says what to do, without a stack trace.
"""

from __future__ import annotations


class SyncError(Exception):
    """Base of every error raised on purpose by ``vra_appliance.sync``."""


class TransientError(SyncError):
    """Run the sync again later; nothing is wrong with its input."""


class PermanentError(SyncError):
    """The same input fails the same way again: fix the configuration or the peer, then restart the sync."""


class CorruptionError(SyncError):
    """The replica does not match the source after a sync: run a delta sync of the volume."""


class UnknownVolumeError(PermanentError):
    def __init__(self, volume: str, known: list[str] | tuple[str, ...] = (), side: str = "recovery") -> None:
        self.volume = volume
        self.known = list(known)
        listed = ", ".join(repr(v) for v in sorted(self.known)) or "none"
        super().__init__(
            f"volume {volume!r} is not part of this VPG on the {side} side (its volumes: {listed}); "
            "add the volume to the VPG on both sites, or fix the volume id the peer sends"
        )


class BlockSizeMismatchError(PermanentError):
    def __init__(self, volume: str, expected: int, got: int) -> None:
        self.volume = volume
        self.expected = expected
        self.got = got
        super().__init__(
            f"checksums for volume {volume!r} are for {got}-byte blocks, but this delta sync uses "
            f"{expected}-byte blocks; restart the delta sync so that both sides use block size {expected}"
        )


class ChecksumListError(PermanentError):
    def __init__(self, volume: str, detail: str) -> None:
        self.volume = volume
        self.detail = detail
        super().__init__(
            f"checksum list for volume {volume!r} is malformed: {detail}; the peer's VRA is broken or of "
            "another version - upgrade it, then restart the delta sync"
        )


class VolumeSizeError(PermanentError):
    def __init__(self, volume: str, source_size: int, replica_size: int) -> None:
        self.volume = volume
        self.source_size = source_size
        self.replica_size = replica_size
        super().__init__(
            f"volume {volume!r} is {source_size} bytes on the protected site but its replica is "
            f"{replica_size} bytes; resize the replica volume to {source_size} bytes, then restart the sync"
        )


class SyncParamsError(PermanentError):
    """A block size, fanout or algorithm this version does not support."""


class DirtyMapLostError(CorruptionError):
    """A dirty map cannot be trusted (the IO filter stopped uncleanly): the volume needs a delta sync."""

    def __init__(self, volume: str, where: str = "the IO filter") -> None:
        self.volume = volume
        super().__init__(
            f"the dirty map of volume {volume!r} in {where} was lost (unclean stop); "
            "a bitmap sync cannot know what changed - the volume gets a delta sync")


class UnknownVpgError(PermanentError):
    def __init__(self, vpg: str) -> None:
        self.vpg = vpg
        super().__init__(
            f"VPG {vpg!r} has no recovery role on this VRA; configure the VPG's recovery side (or fix the "
            "VPG id the protect side sends), then restart the sync")
