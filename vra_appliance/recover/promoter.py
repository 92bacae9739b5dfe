"""The promoter: moves journal records older than the VPG's history into the replica, and trims.

Past the warning threshold only the status changes. Past ``promote_above`` of the hard limit it
promotes early, whole segments at a time, down to ``promote_down_to`` of the limit: history shrinks
and the status says so. Open point-in-time images hold promotion at their checkpoint and trimming at
the seq they were opened at (docs/FORMAT.md section 6).

``start()``/``stop()`` run ``promote_once()`` in a thread every ``interval_s`` (and at once after
``wake()``); tests call ``promote_once()`` directly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from zvr_common.loop import Loop

from .journal import IndexedJournal
from .replica import Replica

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionPolicy:
    """How much journal a VPG keeps.

    ``history_s``: journal history (records older than this are promoted). ``hard_limit_bytes``: the
    journal refuses appends past it (None: only the disk limits it). ``warning_bytes``: a warning state
    past it. Early promotion starts past ``promote_above`` x the hard limit and goes down to
    ``promote_down_to`` x the limit. ``step_bytes`` bounds the data applied per promotion step (images
    wait for a step to finish before they open).
    """

    history_s: float = 3600.0
    hard_limit_bytes: int | None = None
    warning_bytes: int | None = None
    promote_above: float = 0.9
    promote_down_to: float = 0.75
    step_bytes: int = 256 << 20

    def __post_init__(self) -> None:
        if not 0 < self.promote_down_to < self.promote_above <= 1:
            raise ValueError("need 0 < promote_down_to < promote_above <= 1")
        if self.history_s < 0:
            raise ValueError("history_s must be >= 0")


@dataclass(frozen=True)
class Pins:
    """What open images allow: promote no further than ``promote_max``, trim no further than ``trim_max``."""

    promote_max: int | None = None
    trim_max: int | None = None


@dataclass(frozen=True)
class PromotionResult:
    promoted_from: int
    promoted_to: int
    bytes_applied: int
    early: bool  # went past the history cutoff because of the hard limit
    pinned: bool  # wanted to go further, but an open image held it back


def time_target(journal: IndexedJournal, vpg: str, after_seq: int, cutoff_ns: int) -> int:
    """How far the history lets promotion go from ``after_seq``.

    T is the highest seq such that every record in (after_seq, T] is older than ``cutoff_ns``. While a
    checkpoint newer than T exists, promotion stops at the newest checkpoint <= T (or does not move), so
    the replica stays at a checkpoint; that holds records back by at most one checkpoint interval. Without
    a newer checkpoint (checkpoints stopped, e.g. during a sync) it goes to T: the journal never keeps
    more than its history waiting for a checkpoint that may not come.
    """
    newest = checkpoint = after_seq
    for entry in journal.entries(vpg, after_seq, journal.last_seq(vpg)):
        if entry.timestamp_ns > cutoff_ns:
            break
        newest = entry.seq
        if entry.volume is None:
            checkpoint = entry.seq
    checkpoints = journal.checkpoints(vpg)
    if checkpoints and checkpoints[-1].seq > newest:
        return checkpoint
    return newest


def step_end(journal: IndexedJournal, vpg: str, after_seq: int, target: int, step_bytes: int) -> int:
    """Where a bounded promotion step from after_seq towards target ends."""
    total = 0
    for entry in journal.entries(vpg, after_seq, target):
        total += entry.length
        if total >= step_bytes:
            return entry.seq
    return target


class Promoter:
    def __init__(
        self,
        vpg: str,
        journal: IndexedJournal,
        replica: Replica,
        policy: RetentionPolicy,
        *,
        lock: threading.RLock,
        pins: Callable[[], Pins] = Pins,
        clock: Callable[[], int] = time.time_ns,
        interval_s: float = 1.0,
    ) -> None:
        self.vpg = vpg
        self.journal = journal
        self.replica = replica
        self.policy = policy
        self._lock = lock  # shared with image open: no image opens in the middle of a step
        self._round = threading.Lock()
        self._pins = pins
        self._clock = clock
        self.interval_s = interval_s
        self.history_shrunk = False
        self.room_wanted = 0  # bytes the last refused append needed; 0 once an append succeeds
        self._early_ts: int | None = None
        self.pinned = False
        self.last_error: Exception | None = None
        self._loop = Loop(f"promoter-{vpg}", interval_s, target=self.promote_once, logger=log)

    def redo(self) -> None:
        """Finish a promotion a crash interrupted: apply its range again, then commit and trim."""
        with self._lock:
            target = self.replica.promoting_to
            if target is not None:
                log.info("VPG %s: redoing promotion %d..%d", self.vpg, self.replica.promoted_seq, target)
                self._step(target)

    def promote_once(self) -> PromotionResult:
        """Promote what the history and the hard limit ask for (as far as open images allow), then trim.

        An error is kept in ``last_error`` (the VPG status shows it) and raised; the next round retries.
        """
        try:
            with self._round:  # one round at a time (the loop thread and a direct call may overlap)
                result = self._promote()
        except Exception as exc:
            self.last_error = exc
            raise
        self.last_error = None
        return result

    def _promote(self) -> PromotionResult:
        vpg, journal, policy = self.vpg, self.journal, self.policy
        with self._lock:
            start = self.replica.promoted_seq
            last = journal.last_seq(vpg)
            cutoff = self._clock() - int(policy.history_s * 1e9)
            by_time = time_target(journal, vpg, start, cutoff)
            by_size = start
            limit = policy.hard_limit_bytes
            size = journal.size_bytes(vpg)
            need = self.room_wanted
            if limit is not None and (size > policy.promote_above * limit or size + need > limit):
                # down to promote_down_to of the limit, and further if a refused batch needs more room
                keep = min(int(policy.promote_down_to * limit), max(0, limit - need))
                by_size = journal.trim_point(vpg, size - keep)
            wanted = min(max(by_time, by_size), last)
            pins = self._pins()
            target = wanted if pins.promote_max is None else min(wanted, pins.promote_max)
            self.pinned = target < wanted
            early = target > by_time
            if early:
                # remember the newest record promoted ahead of its time: until the history cutoff passes
                # it, the journal holds less than the configured history
                for entry in journal.entries(vpg, target - 1, target):
                    self._early_ts = max(self._early_ts or 0, entry.timestamp_ns)
            self.history_shrunk = self._early_ts is not None and cutoff < self._early_ts
        applied = 0
        pos = start
        while pos < target:
            with self._lock:
                end = step_end(journal, vpg, pos, target, policy.step_bytes)
                applied += self._step(end)
                pos = end
        self._trim()
        return PromotionResult(start, max(pos, start), applied, early, self.pinned)

    def _step(self, end: int) -> int:
        replica = self.replica
        replica.begin(end)
        applied, checkpoint = replica.apply(self.journal.read(self.vpg, replica.promoted_seq + 1, end), end)
        replica.sync()
        replica.commit(end, checkpoint)
        return applied

    def _trim(self) -> None:
        with self._lock:
            upto = self.replica.promoted_seq
            pins = self._pins()
            if pins.trim_max is not None:
                upto = min(upto, pins.trim_max)
            self.journal.trim(self.vpg, upto)

    # -- loop ------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop.start()

    @property
    def running(self) -> bool:
        return self._loop.running

    def wake(self) -> None:
        self._loop.wake()

    def request_room(self, needed: int) -> None:
        """A batch of ``needed`` bytes was refused: make room for it in the next round, then wake."""
        self.room_wanted = needed
        self._loop.wake()

    def stop(self) -> None:
        # a failed round is kept in last_error for the VPG status; the loop logs it and retries
        self._loop.stop(timeout=None)
