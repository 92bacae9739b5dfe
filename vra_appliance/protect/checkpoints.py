"""Checkpoints across the VRAs and filters of a VPG: freeze, mark, thaw (the coordinator's side).

One protect VRA per VPG coordinates (``ProtectConfig.coordinator``). For each checkpoint it

1. asks every participant VRA (itself included) in parallel to **freeze**: each freezes its filters of the
   VPG's volumes (they wait for writes in flight, hold new ones, and put a MARK in their split stream) and
   answers ``marked`` (every local filter placed its MARK) and ``dirty`` (a dirty map is not empty, or the
   VRA dropped writes: the VPG needs a sync);
2. decides: the participants are the VRAs that marked; the checkpoint is consistent when every VRA marked
   and none is dirty. When none marked, the checkpoint is abandoned;
3. asks every participant to **thaw** with the decision: each releases its filters, then puts its marker
   (checkpoint id, tag, participants, and ``consistent`` unless one of its filters let the hold expire) in
   its stream at its filters' MARK position.

Writes are held from a filter's freeze to its thaw, and every thaw comes after every freeze, so a write
that completed after some filter's MARK cannot have been issued before another filter's MARK: a dependent
write never precedes its dependency across the checkpoint. The recovery VRA journals the checkpoint once
every participant's stream has reached its marker (``receiver``), consistent when every marker says so.

``Participant`` is the seam: the local VRA in process, or a peer VRA over the Control service.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from vra_appliance.config import DEFAULT_FREEZE_TIMEOUT_MS, DEFAULT_INTERVAL_S, MIN_INTERVAL_S
from zvr_common.loop import Loop

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class FreezeResult:
    ok: bool
    marked: bool
    dirty: bool
    message: str = ""


@dataclass(frozen=True)
class ThawResult:
    ok: bool
    expired: bool
    message: str = ""


@dataclass(frozen=True)
class Decision:
    tag: str
    consistent: bool
    participants: tuple[str, ...]


@dataclass(frozen=True)
class CheckpointResult:
    checkpoint_id: str
    ok: bool
    consistent: bool
    participants: tuple[str, ...]
    tag: str = ""
    message: str = ""


class Participant(Protocol):
    """A protect VRA of the VPG, as the coordinator sees it. Neither call raises: failures are results."""

    vra_id: str

    def freeze(self, vpg: str, checkpoint_id: str, timeout_ms: int) -> FreezeResult: ...

    def thaw(self, vpg: str, checkpoint_id: str, decision: Decision | None) -> ThawResult: ...


def new_checkpoint_id() -> str:
    """Unique, and sorting by creation time: ``<ms since the epoch, hex>-<random>``."""
    return f"{time.time_ns() // 1_000_000:011x}-{secrets.token_hex(3)}"


class CheckpointCoordinator:
    """Takes the VPG's checkpoints: every ``interval_s`` from ``start``, or now with ``take(tag)``."""

    def __init__(
        self,
        vpg: str,
        participants: Sequence[Participant],
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        freeze_timeout_ms: int = DEFAULT_FREEZE_TIMEOUT_MS,
        clock: Callable[[], float] = time.monotonic,
        new_id: Callable[[], str] = new_checkpoint_id,
    ) -> None:
        if interval_s < MIN_INTERVAL_S:
            raise ValueError(f"checkpoint interval {interval_s} s is below the minimum of {MIN_INTERVAL_S} s")
        self.vpg = vpg
        self.participants = list(participants)
        self.interval_s = interval_s
        self.freeze_timeout_ms = freeze_timeout_ms
        self._clock = clock
        self._new_id = new_id
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.participants)), thread_name_prefix=f"cp-{vpg}")
        self._next_due = clock() + interval_s
        # a failed checkpoint is logged by the loop, and the next one is tried when it falls due
        self._loop = Loop(f"checkpoints-{vpg}", MIN_INTERVAL_S, target=self.sync_once, logger=log,
                          delay=lambda: max(0.01, self._next_due - self._clock()), max_backoff=MIN_INTERVAL_S)
        self.last: CheckpointResult | None = None
        self.taken = 0
        self.failed = 0

    def take(self, tag: str = "") -> CheckpointResult:
        """Freeze, decide, thaw. Serialized: one checkpoint of the VPG at a time."""
        with self._lock:
            result = self._take(tag)
            self._next_due = self._clock() + self.interval_s
            self.last = result
            if result.ok:
                self.taken += 1
            else:
                self.failed += 1
            return result

    def _take(self, tag: str) -> CheckpointResult:
        cid = self._new_id()
        parts = self.participants
        freezes = list(self._pool.map(lambda p: self._freeze(p, cid), parts))
        marked = tuple(p.vra_id for p, f in zip(parts, freezes, strict=True) if f.ok and f.marked)
        consistent = bool(marked) and len(marked) == len(parts) and not any(f.dirty for f in freezes)
        decision = Decision(tag, consistent, marked) if marked else None
        thaws = list(
            self._pool.map(lambda p: self._thaw(p, cid, decision if p.vra_id in marked else None), parts)
        )
        problems = [f"{p.vra_id}: {f.message}" for p, f in zip(parts, freezes, strict=True) if f.message]
        problems += [f"{p.vra_id}: {t.message}" for p, t in zip(parts, thaws, strict=True) if t.message]
        if decision is None:
            msg = "no VRA of the VPG could mark the checkpoint" + (f" ({'; '.join(problems)})" if problems else "")
            log.warning("VPG %s: checkpoint %s abandoned: %s", self.vpg, cid, msg)
            return CheckpointResult(cid, False, False, (), tag, msg)
        expired = any(t.expired for p, t in zip(parts, thaws, strict=True) if p.vra_id in marked)
        consistent = consistent and not expired
        if not consistent:
            why = []
            if len(marked) < len(parts):
                why.append("not every VRA marked")
            if any(f.dirty for f in freezes):
                why.append("a dirty map is not empty (sync needed)")
            if expired:
                why.append("a filter's hold expired before the thaw")
            problems = why + problems
        return CheckpointResult(cid, True, consistent, marked, tag, "; ".join(problems))

    def _freeze(self, p: Participant, cid: str) -> FreezeResult:
        try:
            return p.freeze(self.vpg, cid, self.freeze_timeout_ms)
        except Exception as exc:  # a participant must not stop the checkpoint of the others
            log.exception("VPG %s: freeze on %s failed", self.vpg, p.vra_id)
            return FreezeResult(False, False, False, f"freeze failed: {exc}")

    def _thaw(self, p: Participant, cid: str, decision: Decision | None) -> ThawResult:
        try:
            return p.thaw(self.vpg, cid, decision)
        except Exception as exc:
            log.exception("VPG %s: thaw on %s failed", self.vpg, p.vra_id)
            return ThawResult(False, False, f"thaw failed: {exc}")

    def sync_once(self) -> CheckpointResult | None:
        """Take a checkpoint if one is due."""
        if self._clock() < self._next_due:
            return None
        return self.take()

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop(timeout=None)
        self._pool.shutdown(wait=True)
