"""Extents a protect VRA could not replicate (pure core).

When a VPG's buffer of unacknowledged data is full, new writes are not queued: their extents are recorded
here and the VPG needs a bitmap sync (read those extents from the source volumes and send them). The IO
filter has its own dirty map for what never reached the VRA; this one is for what the VRA had to let go,
so that between the two nothing written is forgotten.

Memory is bounded like the filter's: past ``max_extents`` per volume, the neighbouring extents with the
smallest gaps merge (2..3 and 5..6 become 2..6) until three quarters of the budget are left (one pass per
quarter budget of new extents, not one per write), so the map covers more than was written, never less.
``over_coverage`` adds up the gaps closed that way (an upper bound of the bytes a bitmap sync resends that
were never written).
"""

from __future__ import annotations

import bisect


class ExtentMap:
    def __init__(self, max_extents: int = 4096) -> None:
        self.max_extents = max_extents
        self._starts: dict[str, list[int]] = {}
        self._ends: dict[str, list[int]] = {}
        self.over_coverage = 0

    def add(self, volume: str, offset: int, length: int) -> None:
        if length <= 0:
            return
        starts = self._starts.setdefault(volume, [])
        ends = self._ends.setdefault(volume, [])
        start, end = offset, offset + length
        # Every extent that touches or overlaps [start, end) merges into it.
        i = bisect.bisect_left(ends, start)
        j = bisect.bisect_right(starts, end)
        if i < j:
            start = min(start, starts[i])
            end = max(end, ends[j - 1])
        starts[i:j] = [start]
        ends[i:j] = [end]
        if len(starts) > self.max_extents:
            self._merge_down(volume, max(1, self.max_extents * 3 // 4))

    def _merge_down(self, volume: str, target: int) -> None:
        """Close the smallest gaps of ``volume`` until ``target`` extents are left."""
        starts, ends = self._starts[volume], self._ends[volume]
        close = len(starts) - target
        if close <= 0:
            return
        by_gap = sorted(range(len(starts) - 1), key=lambda k: starts[k + 1] - ends[k])[:close]
        closed = bytearray(len(starts))  # closed[k]: the gap after extent k goes
        for k in by_gap:
            closed[k] = 1
            self.over_coverage += starts[k + 1] - ends[k]
        new_starts, new_ends = [starts[0]], []
        for k in range(len(starts) - 1):
            if not closed[k]:
                new_ends.append(ends[k])
                new_starts.append(starts[k + 1])
        new_ends.append(ends[-1])
        self._starts[volume], self._ends[volume] = new_starts, new_ends

    def extents(self, volume: str) -> list[tuple[int, int]]:
        """``[(offset, length), ...]`` of one volume, sorted, not overlapping."""
        return [(s, e - s) for s, e in zip(self._starts.get(volume, []), self._ends.get(volume, []), strict=True)]

    def volumes(self) -> list[str]:
        return sorted(v for v, s in self._starts.items() if s)

    def extent_count(self) -> int:
        return sum(len(s) for s in self._starts.values())

    def total_bytes(self) -> int:
        return sum(e - s for v in self._starts for s, e in zip(self._starts[v], self._ends[v], strict=True))

    def clear(self, volume: str | None = None) -> None:
        for d in (self._starts, self._ends):
            if volume is None:
                d.clear()
            else:
                d.pop(volume, None)

    def __bool__(self) -> bool:
        return any(self._starts.values())
