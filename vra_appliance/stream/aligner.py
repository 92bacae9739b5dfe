"""Checkpoint alignment of several ordered inputs into one ordered output (pure core: no I/O, no threads).

Used twice: in a protect VRA, the inputs are its filters' split streams of one VPG and the output is the
VRA's stream; in the recovery VRA, the inputs are the streams of the VPG's protect VRAs and the output is
the VPG's journal order.

Every input is ordered (a filter's completion order, a VRA's stream order). Between inputs there is no order
except what checkpoints give: a checkpoint C is placed in each participating input by a marker, and the
output must contain every item that was before the marker on any participant, then C, then the items after.
So an input whose head is the marker of C is *blocked* (its later items wait) until every participant has
reached its own marker of C and C is decided; then C is emitted once and all those inputs go on. Items of
different inputs between two checkpoints may come out in any order: a write that depends on a write of
another input was issued after that one completed, and the freeze keeps such a pair on the same side of
every marker.

A checkpoint can be abandoned (``abort``): its markers are then dropped wherever they are or will arrive,
and the blocked inputs go on. ``expire`` abandons checkpoints that have blocked an input for too long (a
participant that never delivers its marker must not stop replication).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Mark:
    """A checkpoint marker in one input. ``payload`` is whatever the input carried (kept for the output)."""

    checkpoint_id: str
    payload: Any = None


@dataclass(frozen=True)
class Item:
    """An ordinary item (a write) of one input, in output order."""

    input_id: Hashable
    value: Any


@dataclass(frozen=True)
class Checkpoint:
    """Checkpoint ``checkpoint_id`` reached by ``marks`` (input -> its Mark); ``info`` from ``decide``."""

    checkpoint_id: str
    info: Any
    marks: dict


@dataclass(frozen=True)
class Dropped:
    """A marker of an abandoned checkpoint, consumed without output (its input still advances)."""

    input_id: Hashable
    mark: Mark


@dataclass
class _Decision:
    participants: frozenset
    info: Any


@dataclass
class _Input:
    queue: deque = field(default_factory=deque)
    blocked_since: float | None = None


class Aligner:
    """Merge ordered inputs, placing each decided checkpoint after all of its participants' earlier items."""

    def __init__(self, *, remember_finished: int = 4096) -> None:
        self._inputs: dict[Hashable, _Input] = {}
        self._decisions: dict[str, _Decision] = {}
        # Checkpoints emitted or abandoned: a marker of one of them is dropped wherever it shows up.
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._remember_finished = remember_finished

    # -- feeding ---------------------------------------------------------------------------------------
    def push(self, input_id: Hashable, value: Any, now: float = 0.0) -> None:
        """Append an item (a ``Mark`` for a marker, anything else for a write) to an input."""
        inp = self._inputs.setdefault(input_id, _Input())
        inp.queue.append(value)
        if len(inp.queue) == 1 and isinstance(value, Mark):
            inp.blocked_since = now

    def decide(self, checkpoint_id: str, participants: Iterable[Hashable], info: Any = None) -> None:
        """Checkpoint ``checkpoint_id`` is taken by ``participants``; emit it once all of them reach it.
        A second decision for the same checkpoint is ignored (every participant may carry it)."""
        if checkpoint_id in self._finished or checkpoint_id in self._decisions:
            return
        parts = frozenset(participants)
        if not parts:
            self.abort(checkpoint_id)
            return
        self._decisions[checkpoint_id] = _Decision(parts, info)

    def abort(self, checkpoint_id: str) -> None:
        """Abandon a checkpoint: its markers are dropped now and whenever they arrive later."""
        self._decisions.pop(checkpoint_id, None)
        self._finish(checkpoint_id)

    def _finish(self, checkpoint_id: str) -> None:
        self._finished[checkpoint_id] = None
        while len(self._finished) > self._remember_finished:
            self._finished.popitem(last=False)

    def reset_input(self, input_id: Hashable) -> list[Any]:
        """Forget an input's queued items (its peer will resend them); returns what was dropped."""
        inp = self._inputs.pop(input_id, None)
        return list(inp.queue) if inp else []

    def expire(self, now: float, max_blocked: float) -> list[str]:
        """Abort every checkpoint that has blocked some input since before ``now - max_blocked``."""
        stale = set()
        for inp in self._inputs.values():
            if inp.blocked_since is not None and now - inp.blocked_since >= max_blocked and inp.queue:
                head = inp.queue[0]
                if isinstance(head, Mark):
                    stale.add(head.checkpoint_id)
        for cid in stale:
            self.abort(cid)
        return sorted(stale)

    # -- draining --------------------------------------------------------------------------------------
    def pop(
        self,
        now: float = 0.0,
        limit: int | None = None,
        cost: Callable[[Any], int] | None = None,
        max_cost: int | None = None,
    ) -> list[Item | Checkpoint | Dropped]:
        """Everything that can go out now, in output order: at most ``limit`` outputs, and writes up to a
        total ``cost`` of ``max_cost`` (the first write always goes, whatever its cost)."""
        out: list[Item | Checkpoint | Dropped] = []
        spent = 0

        def room(value) -> bool:
            if limit is not None and len(out) >= limit:
                return False
            if max_cost is None or cost is None or not out:
                return True
            return spent + cost(value) <= max_cost

        progress = True
        while progress and (limit is None or len(out) < limit):
            progress = False
            for input_id in list(self._inputs):
                inp = self._inputs[input_id]
                while inp.queue and (limit is None or len(out) < limit):
                    head = inp.queue[0]
                    if not isinstance(head, Mark):
                        if not room(head):
                            return out
                        if cost is not None:
                            spent += cost(head)
                        out.append(Item(input_id, inp.queue.popleft()))
                        progress = True
                        continue
                    if head.checkpoint_id in self._finished:
                        inp.queue.popleft()
                        out.append(Dropped(input_id, head))
                        progress = True
                        continue
                    break
                if inp.queue and isinstance(inp.queue[0], Mark):
                    if inp.blocked_since is None:
                        inp.blocked_since = now
                else:
                    inp.blocked_since = None
            if limit is not None and len(out) >= limit:
                break
            ready = self._ready_checkpoint()
            if ready is not None:
                out.append(ready)
                progress = True
        return out

    def _ready_checkpoint(self) -> Checkpoint | None:
        heads: dict[str, dict] = {}
        for input_id, inp in self._inputs.items():
            if inp.queue and isinstance(inp.queue[0], Mark):
                heads.setdefault(inp.queue[0].checkpoint_id, {})[input_id] = inp.queue[0]
        for cid, marks in heads.items():
            decision = self._decisions.get(cid)
            if decision is None or not decision.participants <= marks.keys():
                continue
            for input_id in decision.participants:
                inp = self._inputs[input_id]
                inp.queue.popleft()
                inp.blocked_since = None
            del self._decisions[cid]
            # Remembered so that a late duplicate decision or marker cannot emit it twice.
            self._finish(cid)
            return Checkpoint(cid, decision.info, {i: marks[i] for i in decision.participants})
        return None

    # -- inspection ------------------------------------------------------------------------------------
    def pending(self, input_id: Hashable | None = None) -> int:
        """Items (writes and markers) waiting, in one input or in all."""
        if input_id is not None:
            inp = self._inputs.get(input_id)
            return len(inp.queue) if inp else 0
        return sum(len(i.queue) for i in self._inputs.values())

    def blocked_on(self) -> dict[Hashable, str]:
        """Inputs currently held at a marker, with the checkpoint they wait for."""
        return {
            i: inp.queue[0].checkpoint_id
            for i, inp in self._inputs.items()
            if inp.queue and isinstance(inp.queue[0], Mark)
        }
