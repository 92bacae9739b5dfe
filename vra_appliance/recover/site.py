"""The recovery site of one VRA: its journal and its recovery VPGs, as ``vra serve`` holds them."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import PermanentError
from .image import PointInTimeImage
from .journal import IndexedJournal
from .promoter import RetentionPolicy
from .records import CheckpointInfo, CheckpointRecord, WriteRecord
from .replica import ReplicaVolume
from .vpg import RecoveryVPG, VPGStatus


class UnknownVPGError(PermanentError):
    """The VPG is not configured for recovery on this VRA: refuse its stream."""


class RecoverySite:
    """One journal shared by the recovery VPGs of a VRA; each VPG keeps its state under ``state_root``.

    Segment size: keep the journal's ``segment_bytes`` at most an eighth of the smallest hard limit, so
    early promotion (whole segments) can free space without emptying the journal.
    """

    def __init__(self, journal: IndexedJournal, state_root: str | os.PathLike[str], **vpg_kwargs) -> None:
        self.journal = journal
        self.state_root = Path(state_root)
        self._vpg_kwargs = vpg_kwargs  # e.g. clock=..., promote_interval_s=...
        self._vpgs: dict[str, RecoveryVPG] = {}
        self._lock = threading.Lock()

    def add_vpg(self, vpg: str, volumes: Mapping[str, ReplicaVolume], policy: RetentionPolicy) -> RecoveryVPG:
        """Configure the recover role of a VPG (idempotent for the same VPG: returns the existing one)."""
        with self._lock:
            if vpg in self._vpgs:
                return self._vpgs[vpg]
            state_dir = self.state_root / f"vpg-{vpg.encode().hex()}"
            rvpg = RecoveryVPG(vpg, self.journal, volumes, state_dir, policy, **self._vpg_kwargs)
            self._vpgs[vpg] = rvpg
            return rvpg

    def vpg(self, vpg: str) -> RecoveryVPG:
        try:
            return self._vpgs[vpg]
        except KeyError:
            raise UnknownVPGError(f"VPG {vpg!r} is not configured for recovery on this VRA") from None

    def vpgs(self) -> list[str]:
        return sorted(self._vpgs)

    def remove_vpg(self, vpg: str) -> None:
        """Stop recovering a VPG (its journal and replica files stay; the caller deletes them if wanted)."""
        with self._lock:
            rvpg = self._vpgs.pop(vpg, None)
        if rvpg is not None:
            rvpg.close()

    def append(self, records: Sequence[WriteRecord | CheckpointRecord]) -> int:
        """Journal.append routed to the batch's recovery VPG (an unknown VPG raises UnknownVPGError)."""
        if not records:
            raise ValueError("empty batch: nothing to append")
        return self.vpg(records[0].vpg).append(records)

    def checkpoints(self, vpg: str) -> list[CheckpointInfo]:
        return self.vpg(vpg).checkpoints()

    def image(self, vpg: str, volume: str, checkpoint_id: str, *,
              scratch_path: str | os.PathLike[str] | None = None) -> PointInTimeImage:
        return self.vpg(vpg).image(volume, checkpoint_id, scratch_path=scratch_path)

    def status(self) -> list[VPGStatus]:
        return [self._vpgs[v].status() for v in self.vpgs()]

    def start(self) -> None:
        for vpg in self.vpgs():
            self._vpgs[vpg].start()

    def stop(self) -> None:
        for vpg in self.vpgs():
            self._vpgs[vpg].stop()

    def close(self) -> None:
        """Stop every promoter, close images and replica files (the journal is closed by its owner)."""
        for vpg in self.vpgs():
            self.remove_vpg(vpg)
