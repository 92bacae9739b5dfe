"""The appliance's one exception tree: every error a VRA or its IO filter raises on purpose.

Three branches tell the caller what to do (the house style's transient / permanent / corruption)::

    ApplianceError
    ├── TransientError                retry later with the same input; the condition is expected to clear
    │   ├── JournalFullError              hard limit or disk full: push back to the protect side; the promoter
    │   │                                 frees space (early promotion), then the resend succeeds
    │   └── PayloadError                  a stream batch failed its CRC32C or did not decode: resend it
    ├── PermanentError                this input can never succeed as is: stop and report (or change the input)
    │   ├── ConfigError                   a role configuration that cannot work (also a ValueError)
    │   ├── UnknownVpgError               the VPG has no such role on this VRA
    │   ├── UnknownVolumeError            the volume is not part of the VPG on this side
    │   ├── JournalGapError               seq jumps past last_seq + 1: resend from ``expected`` (or resync)
    │   ├── JournalClosedError            the journal is closed, or an fsync failed and it stopped taking writes
    │   ├── JournalUnusableError          the VPG's recovery journal could not be opened (corrupt, unreadable)
    │   ├── CheckpointNotFoundError       no such checkpoint, or it was already promoted into the replica
    │   ├── ImagePinnedError              refused because a point-in-time image is open
    │   ├── ImageError                    an image cannot be opened or closed as asked (busy, not open, no NBD)
    │   ├── DiscardRefused                DiscardJournal refused (healthy journal, a session holds images)
    │   ├── SessionError                  a recovery session request refused; ``code`` is the reply's code
    │   ├── BlockSizeMismatchError        the peer's checksums are for another block size than this sync's
    │   ├── ChecksumListError             a checksum list of the wrong length, digest size, algorithm or group
    │   ├── VolumeSizeError               the replica volume is smaller than the source
    │   ├── SyncParamsError               block size, fanout or algorithm out of the supported range
    │   ├── ControlError                  the IO filter refused a control request (its reason)
    │   ├── FreezeError                   a freeze or thaw the filter cannot carry out
    │   ├── DirtyStoreError               the filter cannot write a dirty-map sidecar
    │   ├── EnrollmentError               enrollment with the ZVM failed: the message says what to do
    │   └── PeerProtocolError             a peer broke a protocol: its connection is dropped
    │       ├── SplitProtocolError            not a split stream frame (IO filter <-> VRA)
    │       └── NbdProtocolError              not an NBD handshake or request (NBD client <-> filter)
    ├── CorruptionError               stored data failed verification: resync (delta sync)
    │   ├── JournalCorruptError           a journal record with a bad checksum or structure not at the torn tail
    │   ├── RecordFormatError             one record failed its check (the journal decides: torn tail or corrupt)
    │   ├── DirtyMapLostError             the IO filter stopped uncleanly: its dirty map is gone
    │   └── RingCorrupt                   the shared split ring is not what its layout allows: drop the ring
    └── Refused (vra_appliance.stream.transport)  the recovery VRA said no to a stream; ``kind`` names the
                                      branch: resend, backoff (transient), permanent, corruption

Not in the tree: programming errors (KeyError, TypeError, ``sync.state.SyncStateError``...). They surface as
they are, and a gRPC servicer answers them INTERNAL (``vra_appliance.rpc.status``), never as a domain code.

Third-party errors are translated where they enter, with ``raise ... from``: ``OSError`` by the module that
knows what the file is (ENOSPC in the journal becomes JournalFullError, a volume read in a sync a
TransientError), ``grpc.RpcError`` in the gRPC clients (stream.transport_grpc, sync.grpc_peer). Point-in-time
images and session volumes are NBD export backends and raise plain ``OSError`` with an errno, as the NBD
server contract asks (docs/CONTRACTS.md section 1). Every message says what to do, without a stack trace.

This module imports nothing, so the pure cores (recover/, sync/) and the IO filter use it freely.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of every error the appliance raises on purpose."""


class TransientError(ApplianceError):
    """Retry later with the same input; the condition is expected to clear."""


class PermanentError(ApplianceError):
    """Retrying the same call fails the same way: stop and report, or change what is sent."""


class CorruptionError(ApplianceError):
    """Stored data failed verification: the VPG (or volume) needs a resync."""


# -- transient ------------------------------------------------------------------------------------------------


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


class PayloadError(TransientError, ValueError):
    """A stream payload that does not decompress, fails its CRC32C, or does not parse: send it again."""


# -- permanent ------------------------------------------------------------------------------------------------


class ConfigError(PermanentError, ValueError):
    """A role configuration that cannot work; the message says what to change."""


class UnknownVpgError(PermanentError):
    """The VPG has no role of this kind on this VRA."""

    def __init__(self, vpg: str, role: str = "recovery",
                 action: str = "configure the VPG's recovery side (or fix the VPG id the protect side sends), "
                               "then restart the sync") -> None:
        self.vpg = vpg
        self.role = role
        super().__init__(f"VPG {vpg!r} has no {role} role on this VRA; {action}")


class UnknownVolumeError(PermanentError):
    """The volume id is not part of the VPG on this side."""

    def __init__(self, volume: str, known: list[str] | tuple[str, ...] = (), side: str = "recovery",
                 vpg: str | None = None) -> None:
        self.volume = volume
        self.known = list(known)
        self.vpg = vpg
        listed = ", ".join(repr(v) for v in sorted(self.known)) or "none"
        which = f"VPG {vpg!r}" if vpg is not None else "this VPG"
        super().__init__(
            f"volume {volume!r} is not part of {which} on the {side} side (its volumes: {listed}); "
            "add the volume to the VPG on both sites, or fix the volume id the peer sends"
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


class JournalUnusableError(PermanentError):
    """The VPG's recovery journal could not be opened; the message is why (discard it to start again)."""


class CheckpointNotFoundError(PermanentError):
    """The checkpoint is unknown, trimmed, or already promoted into the replica."""


class ImagePinnedError(PermanentError):
    """Refused because a point-in-time image of the VPG is open."""


class ImageError(PermanentError):
    """An image cannot be opened or closed as asked (already open, not open, no NBD server)."""


class ImageNotOpenError(ImageError):
    """No open image of that export name."""


class DiscardRefused(PermanentError):
    """DiscardJournal refused: the message says why and what to do. Nothing was changed."""


class SessionError(PermanentError):
    """A recovery session request refused; ``code`` is the code the RecoveryOps reply carries."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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


class ControlError(PermanentError):
    """The filter refused a control request; the message is the filter's reason."""


class FreezeError(PermanentError):
    """A freeze or thaw request that cannot be carried out; the message says why."""


class DirtyStoreError(PermanentError):
    """A dirty-map sidecar that cannot be written; the message says which file and why."""


class EnrollmentError(PermanentError):
    """Enrollment failed; the message says what to do."""


class PeerProtocolError(PermanentError):
    """A peer sent something its protocol does not allow; the connection is dropped."""


class SplitProtocolError(PeerProtocolError):
    """The peer sent something that is not a split stream frame; the connection is dropped."""


class NbdProtocolError(PeerProtocolError):
    """An NBD client broke the handshake or sent something that is not an NBD request."""


# -- corruption -----------------------------------------------------------------------------------------------


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


class RecordFormatError(CorruptionError):
    """A record failed its checksum or structure check (the journal turns this into JournalCorruptError,
    or cuts it as a torn tail)."""

    def __init__(self, offset: int, detail: str) -> None:
        super().__init__(f"offset {offset}: {detail}")
        self.offset = offset
        self.detail = detail


class DirtyMapLostError(CorruptionError):
    """A dirty map cannot be trusted (the IO filter stopped uncleanly): the volume needs a delta sync."""

    def __init__(self, volume: str, where: str = "the IO filter") -> None:
        self.volume = volume
        super().__init__(
            f"the dirty map of volume {volume!r} in {where} was lost (unclean stop); "
            "a bitmap sync cannot know what changed - the volume gets a delta sync")


class RingCorrupt(CorruptionError):
    """The split ring's consumer fields or frames are not what the layout allows (a broken peer)."""
