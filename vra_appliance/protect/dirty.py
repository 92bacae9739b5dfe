"""Extents a protect VRA could not replicate (pure core).

When a VPG's buffer of unacknowledged data is full, new writes are not queued: their extents are recorded
here and the VPG needs a bitmap sync (read those extents from the source volumes and send them). The IO
filter has its own dirty map for what never reached the VRA; this one is for what the VRA had to let go,
so that between the two nothing written is forgotten.

Memory is bounded like the filter's: past ``max_extents`` per volume, the two neighbouring extents with the
smallest gap merge (2..3 and 5..6 become 2..6), so the map covers more than was written, never less.
"""

from __future__ import annotations

import bisect


class ExtentMap:
    def __init__(self, max_extents: int = 4096) -> None:
        self.max_extents = max_extents
        self._starts: dict[str, list[int]] = {}
        self._ends: dict[str, list[int]] = {}

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
        while len(starts) > self.max_extents:
            gaps = [starts[k + 1] - ends[k] for k in range(len(starts) - 1)]
            k = gaps.index(min(gaps))
            ends[k] = ends[k + 1]
            del starts[k + 1], ends[k + 1]

    def extents(self, volume: str) -> list[tuple[int, int]]:
        """``[(offset, length), ...]`` of one volume, sorted, not overlapping."""
        return [(s, e - s) for s, e in zip(self._starts.get(volume, []), self._ends.get(volume, []), strict=True)]

    def volumes(self) -> list[str]:
        return sorted(v for v, s in self._starts.items() if s)

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
