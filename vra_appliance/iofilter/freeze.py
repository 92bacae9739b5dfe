"""Freeze and thaw for checkpoints: per-volume write gates and the coordinator that holds them.

A `WriteGate` counts the writes of one volume in flight (local write plus hand-off to the splitter) and
holds new ones while a `Hold` is on it. A hold is bounded: a write waits at most until the hold's deadline,
then goes on by itself, so a lost thaw costs the checkpoint, never the IO. Expiry needs no timer thread:
each held writer waits with the deadline as its timeout.

`FreezeCoordinator.freeze` puts one hold on the gates of the listed volumes, waits for the writes already
in flight to leave (bounded by the same deadline), then has the splitter queue the MARK: every write
completed before the freeze is ahead of it in the stream and every held write behind it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vra_appliance.errors import FreezeError

MAX_TIMEOUT_MS = 1000.0


@dataclass
class Hold:
    checkpoint_id: str
    volumes: list[str]
    started: float
    deadline: float
    thawed: bool = False
    gates: list = field(default_factory=list)

    def holding(self, now: float) -> bool:
        return not self.thawed and now < self.deadline


class WriteGate:
    """One volume's writes: ``with gate:`` around each write."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._inflight = 0
        self._hold: Hold | None = None
        self.held_writes = 0
        self._set_native_held: Callable[[bool], None] | None = None
        self._native_inflight: Callable[[], int] | None = None

    def attach_native(self, set_held: Callable[[bool], None], inflight: Callable[[], int]) -> None:
        """The compiled write path of this volume (native/zwrite.c) counts its writes in flight itself and
        reads a flag set while a hold is on: ``set_held(bool)`` sets it, ``inflight()`` reads its count."""
        self._set_native_held, self._native_inflight = set_held, inflight

    def pass_held(self) -> None:
        """For a compiled-path write that found the flag set: wait here until the hold ends (thaw or
        deadline); an expired hold also clears the flag, so the compiled path goes on by itself."""
        self.__enter__()
        with self._cond:
            self._inflight -= 1
            if self._inflight == 0 and self._hold is not None:
                self._cond.notify_all()
            if self._set_native_held is not None and not (self._hold and self._hold.holding(time.monotonic())):
                self._set_native_held(False)

    def enter(self, before_wait: Callable[[], None] | None = None) -> None:
        """Enter for one write; ``before_wait`` runs first if the gate is holding (e.g. hand off writes the
        caller completed but has not yet released, so the freeze waiting for them need not time out)."""
        if before_wait is not None:
            with self._cond:
                hold = self._hold
                if hold is None:  # the common case: one lock round trip
                    self._inflight += 1
                    return
            if hold.holding(time.monotonic()):
                before_wait()
        self.__enter__()

    def leave(self, count: int = 1) -> None:
        with self._cond:
            self._inflight -= count
            if self._inflight == 0 and self._hold is not None:
                self._cond.notify_all()

    def __enter__(self) -> None:
        with self._cond:
            hold = self._hold
            if hold is not None:
                counted = False
                while hold is not None and hold.holding(now := time.monotonic()):
                    if not counted:
                        self.held_writes += 1
                        counted = True
                    self._cond.wait(hold.deadline - now)
                    hold = self._hold
            self._inflight += 1

    def __exit__(self, *exc) -> None:
        self.leave()

    @property
    def holding(self) -> bool:
        """True while a freeze holds new writes here."""
        with self._cond:
            return self._hold is not None and self._hold.holding(time.monotonic())

    def hold(self, hold: Hold) -> None:
        with self._cond:
            self._hold = hold
            if self._set_native_held is not None:
                self._set_native_held(True)

    def release(self, hold: Hold) -> None:
        with self._cond:
            if self._hold is hold:
                self._hold = None
                if self._set_native_held is not None:
                    self._set_native_held(False)
            self._cond.notify_all()

    def wait_idle(self, deadline: float) -> bool:
        """Wait until no write is in flight (the compiled path's included); False if the deadline came first."""
        with self._cond:
            while self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        # the compiled path's writes in flight take a pwrite and a publish (or a batch's hand-off): poll
        while self._native_inflight is not None and self._native_inflight():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.0001)
        return True


class FreezeCoordinator:
    """Freeze/thaw over the gates of a filter's volumes. ``mark(checkpoint_id, volumes) -> bool`` queues
    the MARK; ``dirty(volumes) -> bool`` says whether those volumes have dirty extents."""

    def __init__(self, gates: dict[str, WriteGate], mark: Callable[[str, list[str]], bool],
                 dirty: Callable[[list[str]], bool]):
        self.gates = gates
        self._mark = mark
        self._dirty = dirty
        self._lock = threading.Lock()
        self._hold: Hold | None = None
        self.stats = {"freezes": 0, "marked": 0, "expired": 0, "thawed": 0}

    def freeze(self, checkpoint_id: str, volumes: list[str] | None = None, timeout_ms: float = 50.0) -> dict:
        if not checkpoint_id:
            raise FreezeError("freeze needs a checkpoint_id")
        volumes = list(self.gates) if not volumes else list(volumes)
        unknown = [v for v in volumes if v not in self.gates]
        if unknown:
            raise FreezeError(f"unknown volumes {unknown}; this filter serves {sorted(self.gates)}")
        if not 0 < float(timeout_ms) <= MAX_TIMEOUT_MS:
            raise FreezeError(f"timeout_ms must be in (0, {MAX_TIMEOUT_MS:g}]; a freeze holds VM writes")
        with self._lock:
            now = time.monotonic()
            old = self._hold
            if old is not None and old.holding(now):
                raise FreezeError(f"checkpoint {old.checkpoint_id} is still frozen; thaw it first")
            if old is not None:  # expired and never thawed: that checkpoint failed
                self.stats["expired"] += 1
                for gate in old.gates:
                    gate.release(old)
            hold = Hold(checkpoint_id, volumes, now, now + float(timeout_ms) / 1000.0)
            hold.gates = [self.gates[v] for v in volumes]
            self._hold = hold
            self.stats["freezes"] += 1
        for gate in hold.gates:
            gate.hold(hold)
        drained = all(gate.wait_idle(hold.deadline) for gate in hold.gates)
        marked = drained and hold.holding(time.monotonic()) and self._mark(checkpoint_id, volumes)
        if marked:
            self.stats["marked"] += 1
        return {"ok": True, "marked": bool(marked), "dirty": bool(self._dirty(volumes))}

    def thaw(self, checkpoint_id: str) -> dict:
        with self._lock:
            hold = self._hold
            if hold is None or hold.checkpoint_id != checkpoint_id or hold.thawed:
                raise FreezeError(f"no freeze of checkpoint {checkpoint_id!r} to thaw")
            now = time.monotonic()
            expired = now >= hold.deadline
            hold.thawed = True
            self._hold = None
            self.stats["expired" if expired else "thawed"] += 1
        for gate in hold.gates:
            gate.release(hold)
        held_ms = (min(now, hold.deadline) - hold.started) * 1000.0
        return {"ok": True, "held_ms": round(held_ms, 3), "expired": expired}

    def snapshot(self) -> dict:
        with self._lock:
            hold = self._hold
            frozen = hold.checkpoint_id if hold is not None and hold.holding(time.monotonic()) else None
            return {**self.stats, "frozen": frozen}
