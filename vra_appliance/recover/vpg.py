"""A recovery VPG: what ``vra serve`` calls on the recovery site for one VPG.

It ties the journal (shared by the VPGs of a VRA, or one per VPG), the replica volumes, the retention
policy, the promoter and the open point-in-time images together, and reports the status the ZVM shows
and alerts on.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from vra_appliance.errors import (
    CheckpointNotFoundError,
    JournalCorruptError,
    JournalFullError,
    UnknownVolumeError,
)

from .extents import build_extent_map
from .image import PointInTimeImage
from .journal import IndexedJournal
from .promoter import Pins, Promoter, PromotionResult, RetentionPolicy
from .records import CheckpointInfo, CheckpointRecord, WriteRecord
from .replica import Replica, ReplicaIO, ReplicaVolume


class JournalState(StrEnum):
    """The VPG's journal state, worst first when several apply."""

    CORRUPT = "corrupt"  # the journal failed verification: resync the VPG
    FULL = "full"  # the last append was refused (hard limit or disk): the protect side is pushed back
    PROMOTION_FAILED = "promotion_failed"  # the promoter's last round failed (see promoter_error)
    HISTORY_SHRUNK = "history_shrunk"  # the hard limit forced early promotion: less history than configured
    WARNING = "warning"  # the journal is past the warning threshold
    OK = "ok"


@dataclass(frozen=True)
class VPGStatus:
    vpg: str
    state: JournalState
    journal_bytes: int
    hard_limit_bytes: int | None
    warning_bytes: int | None
    last_seq: int
    promoted_seq: int
    history_configured_s: float
    history_covered_s: float  # now minus the oldest checkpoint still available (0 without checkpoints)
    oldest_checkpoint: CheckpointInfo | None
    newest_checkpoint: CheckpointInfo | None
    warning: bool
    history_shrunk: bool
    full: bool
    pinned: bool  # open images hold promotion back
    open_images: int
    promoter_error: str | None


class RecoveryVPG:
    """The recovery side of one VPG.

    ``volumes``: replica volume path and size per volume id. ``state_dir``: where the promotion state
    lives. ``clock``: ns since the epoch (inject one in tests). Construction finishes a promotion a crash
    interrupted, so images are exact from the start.
    """

    def __init__(
        self,
        vpg: str,
        journal: IndexedJournal,
        volumes: Mapping[str, ReplicaVolume],
        state_dir: str | os.PathLike[str],
        policy: RetentionPolicy | None = None,
        *,
        clock: Callable[[], int] = time.time_ns,
        replica_io: ReplicaIO | None = None,
        promote_interval_s: float = 1.0,
    ) -> None:
        self.vpg = vpg
        self.journal = journal
        self.policy = policy or RetentionPolicy()
        self._clock = clock
        self._lock = threading.RLock()
        self._images: list[PointInTimeImage] = []
        self._full = False
        journal.set_hard_limit(vpg, self.policy.hard_limit_bytes)
        self.replica = Replica(vpg, volumes, Path(state_dir), io=replica_io)
        self.promoter = Promoter(vpg, journal, self.replica, self.policy, lock=self._lock, pins=self._pins,
                                 clock=clock, interval_s=promote_interval_s)
        self.promoter.redo()

    # -- the write path --------------------------------------------------------------------------------

    def append(self, records: Sequence[WriteRecord | CheckpointRecord]) -> int:
        """Journal.append for this VPG; a full journal is recorded in the status and wakes the promoter."""
        if any(r.vpg != self.vpg for r in records):
            raise ValueError(f"records for another VPG handed to recovery VPG {self.vpg!r}")
        try:
            last = self.journal.append(records)
        except JournalFullError as exc:
            self._full = True
            self.promoter.request_room(exc.needed)
            raise
        self._full = False
        self.promoter.room_wanted = 0
        return last

    def last_seq(self) -> int:
        return self.journal.last_seq(self.vpg)

    # -- checkpoints and images ------------------------------------------------------------------------

    def checkpoints(self) -> list[CheckpointInfo]:
        """The checkpoints an image can be opened at, oldest first: the one the replica is at (if it is at
        one) and those in the journal after it."""
        at = self.replica.checkpoint
        promoted = self.replica.promoted_seq
        later = [c for c in self.journal.checkpoints(self.vpg) if c.seq > promoted]
        return ([at] if at is not None else []) + later

    def checkpoint(self, checkpoint_id: str) -> CheckpointInfo:
        for info in self.checkpoints():
            if info.checkpoint_id == checkpoint_id:
                return info
        raise CheckpointNotFoundError(
            f"checkpoint {checkpoint_id!r} of VPG {self.vpg!r} is not in the journal (unknown, or already "
            "promoted into the replica): pick one from the checkpoint list"
        )

    def image(
        self, volume: str, checkpoint_id: str, *, scratch_path: str | os.PathLike[str] | None = None
    ) -> PointInTimeImage:
        """``volume`` as of the checkpoint: read-only, or writable into ``scratch_path`` (copy-on-write).

        While it is open, the promoter goes no further than the checkpoint and the journal keeps the
        records the image reads. Close it to release them.
        """
        if volume not in self.replica.volumes:
            raise UnknownVolumeError(f"volume {volume!r} is not part of recovery VPG {self.vpg!r}")
        with self._lock:  # no promotion step runs while the image's view is fixed
            info = self.checkpoint(checkpoint_id)
            base = self.replica.promoted_seq
            extents = build_extent_map(self.journal.entries(self.vpg, base, info.seq), volume)
            image = PointInTimeImage(
                name=f"{volume}@{checkpoint_id}", vpg=self.vpg, volume=volume,
                size=self.replica.volumes[volume].size, checkpoint_seq=info.seq, base_seq=base,
                extents=extents, journal=self.journal, replica=self.replica, scratch_path=scratch_path,
                on_close=self._image_closed,
            )
            self._images.append(image)
            return image

    def tip_image(self, volume: str) -> PointInTimeImage:
        """``volume`` as of the last journaled record (not necessarily a checkpoint), read-only: what the
        recovery side holds once the journal is applied, which a delta sync compares the source with. It
        pins the journal like any image (close it)."""
        if volume not in self.replica.volumes:
            raise UnknownVolumeError(f"volume {volume!r} is not part of recovery VPG {self.vpg!r}")
        with self._lock:
            base = self.replica.promoted_seq
            last = max(base, self.journal.last_seq(self.vpg))
            extents = build_extent_map(self.journal.entries(self.vpg, base, last), volume)
            image = PointInTimeImage(
                name=f"{volume}@tip-{last}", vpg=self.vpg, volume=volume, size=self.replica.volumes[volume].size,
                checkpoint_seq=last, base_seq=base, extents=extents, journal=self.journal, replica=self.replica,
                on_close=self._image_closed,
            )
            self._images.append(image)
            return image

    def advance_tip(self, image: PointInTimeImage) -> int:
        """Move an image opened by ``tip_image`` to the journal's current last record; returns its seq."""
        with self._lock:
            last = self.journal.last_seq(self.vpg)
            if last > image.checkpoint_seq:
                image.extend(self.journal.entries(self.vpg, image.checkpoint_seq, last), last)
            return image.checkpoint_seq

    def _image_closed(self, image: PointInTimeImage) -> None:
        with self._lock:
            self._images.remove(image)

    def _pins(self) -> Pins:
        with self._lock:
            if not self._images:
                return Pins()
            return Pins(promote_max=min(i.checkpoint_seq for i in self._images),
                        trim_max=min(i.base_seq for i in self._images))

    # -- promotion and status --------------------------------------------------------------------------

    def set_policy(self, policy: RetentionPolicy) -> None:
        """Change history and limits in place (open images stay open); the promoter runs a round soon."""
        with self._lock:
            self.policy = policy
            self.promoter.policy = policy
            self.journal.set_hard_limit(self.vpg, policy.hard_limit_bytes)
        self.promoter.wake()

    def promote_once(self) -> PromotionResult:
        return self.promoter.promote_once()

    def start(self) -> None:
        self.promoter.start()

    def stop(self) -> None:
        self.promoter.stop()

    def status(self) -> VPGStatus:
        policy, journal = self.policy, self.journal
        promoter = self.promoter
        try:
            checkpoints = self.checkpoints()
            corrupt = False
        except JournalCorruptError:
            checkpoints, corrupt = [], True
        size = journal.size_bytes(self.vpg)
        warning = policy.warning_bytes is not None and size >= policy.warning_bytes
        oldest = checkpoints[0] if checkpoints else None
        covered = max(0.0, (self._clock() - oldest.timestamp_ns) / 1e9) if oldest else 0.0
        error = promoter.last_error
        if corrupt or isinstance(error, JournalCorruptError):
            state = JournalState.CORRUPT
        elif self._full:
            state = JournalState.FULL
        elif error is not None:
            state = JournalState.PROMOTION_FAILED
        elif promoter.history_shrunk:
            state = JournalState.HISTORY_SHRUNK
        elif warning:
            state = JournalState.WARNING
        else:
            state = JournalState.OK
        with self._lock:
            open_images = len(self._images)
        return VPGStatus(
            vpg=self.vpg, state=state, journal_bytes=size, hard_limit_bytes=policy.hard_limit_bytes,
            warning_bytes=policy.warning_bytes, last_seq=0 if corrupt else journal.last_seq(self.vpg),
            promoted_seq=self.replica.promoted_seq, history_configured_s=policy.history_s,
            history_covered_s=covered, oldest_checkpoint=oldest,
            newest_checkpoint=checkpoints[-1] if checkpoints else None, warning=warning,
            history_shrunk=promoter.history_shrunk, full=self._full, pinned=promoter.pinned,
            open_images=open_images, promoter_error=None if error is None else str(error),
        )

    def close(self) -> None:
        """Stop the promoter, close open images and the replica files (the journal is the caller's)."""
        self.stop()
        for image in list(self._images):
            image.close()
        self.replica.close()
