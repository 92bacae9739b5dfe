"""Which sync a VPG's volume needs, which one runs, and whether a checkpoint taken now is consistent.

Pure: no I/O, no clock, no locks (the owner serialises calls). A volume's phase::

    None ──need(new volume | link restored | buffer overflow)──> InitialSync ──complete──> Streaming
      └──need(pre-seeded | any other delta reason)──────────> DeltaSync   ──complete──> Streaming
    Streaming ──need(link restored | buffer overflow)──> BitmapSync ──complete──> Streaming
    Streaming ──need(filter restarted | new VRA | reverse protection | forced | journal corrupt | recovery journal lost)──> DeltaSync

A volume in None whose replica already holds data (pre-seeded; or a VRA that restarted without knowing how
far it got, or a filter that lost its map: the replica was streamed to before) gets a delta sync, not a
full copy. A need that arrives while a sync runs is remembered: when the sync completes, the volume goes to the phase
needed meanwhile instead of Streaming (new dirty extents after a bitmap sync fetched the map; a filter crash
during any sync), and a need for a more thorough sync (``RANK``) asks the caller to restart the running one.
An interrupted initial sync leaves a partial copy, which is a pre-seed: it resumes as a delta sync.

Checkpoints: the replica is only crash consistent when every volume of the VPG is Streaming; a checkpoint
taken during any sync (or while one is pending) is marked not consistent, and the first one after the last
sync completes is consistent, because every record of the sync was put in the stream before its marker.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class SyncKind(StrEnum):
    INITIAL = "InitialSync"
    DELTA = "DeltaSync"
    BITMAP = "BitmapSync"


class Phase(StrEnum):
    NONE = "None"
    INITIAL_SYNC = "InitialSync"
    DELTA_SYNC = "DeltaSync"
    BITMAP_SYNC = "BitmapSync"
    STREAMING = "Streaming"


class Reason(StrEnum):
    NEW_VOLUME = "new-volume"
    PRESEEDED = "pre-seeded"  # the recovery volume holds an older copy (restored from a backup)
    LINK_RESTORED = "link-restored"  # writes went to the dirty map while the link was down
    BUFFER_OVERFLOW = "buffer-overflow"  # unacked batches past the buffer fell back to the dirty map
    FILTER_RESTARTED = "filter-restarted"  # the filter stopped uncleanly: its dirty map is lost
    NEW_VRA = "new-vra"
    REVERSE_PROTECTION = "reverse-protection"
    FORCED = "forced-sync"
    JOURNAL_CORRUPT = "journal-corrupt"
    # The recovery VRA answered with a new journal epoch (or a durable position below what it had acknowledged):
    # records it had acknowledged were never promoted and are gone; found by the protect VRA on its own.
    RECOVERY_JOURNAL_LOST = "recovery-journal-lost"


REASON_KIND = {
    Reason.NEW_VOLUME: SyncKind.INITIAL,
    Reason.PRESEEDED: SyncKind.DELTA,
    Reason.LINK_RESTORED: SyncKind.BITMAP,
    Reason.BUFFER_OVERFLOW: SyncKind.BITMAP,
    Reason.FILTER_RESTARTED: SyncKind.DELTA,
    Reason.NEW_VRA: SyncKind.DELTA,
    Reason.REVERSE_PROTECTION: SyncKind.DELTA,
    Reason.FORCED: SyncKind.DELTA,
    Reason.JOURNAL_CORRUPT: SyncKind.DELTA,
    Reason.RECOVERY_JOURNAL_LOST: SyncKind.DELTA,
}

_PHASE = {SyncKind.INITIAL: Phase.INITIAL_SYNC, SyncKind.DELTA: Phase.DELTA_SYNC, SyncKind.BITMAP: Phase.BITMAP_SYNC}
_KIND = {v: k for k, v in _PHASE.items()}
# How thorough a phase is: a more thorough sync also covers what a lesser one would send.
RANK = {Phase.STREAMING: 0, Phase.BITMAP_SYNC: 1, Phase.DELTA_SYNC: 2, Phase.INITIAL_SYNC: 3, Phase.NONE: 4}


class SyncStateError(RuntimeError):
    """A call out of order (begin without a needed sync, complete without a running one): a bug."""


class VolumeSyncState:
    def __init__(self, volume: str, phase: Phase = Phase.NONE) -> None:
        self.volume = volume
        self.phase = phase
        self.running = False
        self._after: Phase | None = None  # needed while the running sync ran
        self.history: list[tuple[str, str]] = []  # (event, phase after), for status and tests

    @property
    def kind(self) -> SyncKind | None:
        """The sync this volume needs or runs; None when Streaming (or never configured)."""
        return _KIND.get(self.phase)

    @property
    def checkpoint_consistent(self) -> bool:
        return self.phase is Phase.STREAMING and self._after is None

    def need(self, reason: Reason | str) -> bool:
        """Record that a sync is needed. Returns True if a running sync should be stopped and restarted
        (``interrupt`` then ``begin``) because the need is for a more thorough sync."""
        reason = Reason(reason)
        kind = REASON_KIND[reason]
        wanted = _PHASE[kind]
        restart = False
        if self.phase is Phase.NONE:
            wanted = Phase.DELTA_SYNC if kind is SyncKind.DELTA else Phase.INITIAL_SYNC
            self.phase = wanted
        elif self.running:
            if self._after is None or RANK[wanted] > RANK[self._after]:
                self._after = wanted
            restart = RANK[wanted] > RANK[self.phase]
        elif RANK[wanted] > RANK[self.phase]:
            self.phase = wanted
        self.history.append((f"need:{reason.value}", self.phase.value))
        return restart

    def begin(self) -> SyncKind:
        if self.running or self.kind is None:
            raise SyncStateError(f"volume {self.volume}: no sync to begin in phase {self.phase.value}")
        self.running = True
        self.history.append(("begin", self.phase.value))
        return self.kind

    def complete(self) -> Phase:
        """The running sync finished: every record of it is in the stream. Returns the new phase."""
        if not self.running:
            raise SyncStateError(f"volume {self.volume}: no sync is running")
        self.running = False
        self.phase, self._after = (self._after or Phase.STREAMING), None
        self.history.append(("complete", self.phase.value))
        return self.phase

    def interrupt(self) -> Phase:
        """The running sync stopped early (link lost, VRA stopping); it must run again."""
        if not self.running:
            raise SyncStateError(f"volume {self.volume}: no sync is running")
        self.running = False
        phase = Phase.DELTA_SYNC if self.phase is Phase.INITIAL_SYNC else self.phase
        if self._after is not None and RANK[self._after] > RANK[phase]:
            phase = self._after
        self.phase, self._after = phase, None
        self.history.append(("interrupt", self.phase.value))
        return self.phase


class VpgSyncState:
    """The sync states of a VPG's volumes, and what the VPG reports."""

    def __init__(self, volumes: Iterable[str]) -> None:
        self.volumes = {v: VolumeSyncState(v) for v in volumes}

    def __getitem__(self, volume: str) -> VolumeSyncState:
        return self.volumes[volume]

    @property
    def checkpoint_consistent(self) -> bool:
        """Whether a checkpoint taken now is consistent: every volume is Streaming, none has a sync pending."""
        return bool(self.volumes) and all(v.checkpoint_consistent for v in self.volumes.values())

    @property
    def substatus(self) -> str | None:
        """The VPG's sync substatus as users know it (InitialSync, DeltaSync, BitmapSync), or None."""
        phases = [v.phase for v in self.volumes.values() if v.phase not in (Phase.STREAMING, Phase.NONE)]
        if any(v.phase is Phase.NONE for v in self.volumes.values()):
            phases.append(Phase.INITIAL_SYNC)
        return max(phases, key=RANK.__getitem__).value if phases else None
