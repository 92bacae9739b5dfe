"""The dirty map: which byte ranges of which volumes changed without reaching the VRA. Pure: no I/O, no locks.

Extents are kept per volume as two sorted arrays of 64-bit starts and ends (half-open, disjoint, never
touching: touching or overlapping extents are coalesced on insert), so one extent costs 16 bytes and the
memory budget is a number of extents: ``budget_bytes // 16``.

Past the budget, the closest neighbours merge: the map finds the smallest gaps between consecutive extents
of a volume (across all volumes) and closes them, down to three quarters of the budget, so a burst of
scattered writes costs one merge pass per quarter budget. Extents 2, 5, 9 and 23, 27, 30 (one block each)
become 2..9 and 23..30 when two extents must go, then 2..30. Bytes covered only because a gap was closed
are counted in ``over_coverage`` (an upper bound: a later write into a closed gap is not subtracted), so the
cost of the bitmap sync that follows is known.

Closing gap *i* does not change any other gap, so merging the *k* smallest gaps in one pass is exactly
repeated "merge the closest pair", *k* times.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right

EXTENT_BYTES = 16  # two unsigned 64-bit integers
_LOW_WATER = 0.75


class DirtyMap:
    """Dirty extents of several volumes within ``budget_bytes`` of extent storage."""

    def __init__(self, budget_bytes: int = 1024 * 1024):
        if budget_bytes < EXTENT_BYTES:
            raise ValueError(f"dirty map budget {budget_bytes} B holds no extent; give at least {EXTENT_BYTES} B")
        self.budget_bytes = budget_bytes
        self.max_extents = budget_bytes // EXTENT_BYTES
        self._vols: dict[str, tuple[array, array]] = {}
        self._count = 0
        self._over: dict[str, int] = {}  # per volume: bytes covered only because a gap was closed
        self.merge_passes = 0

    # -- queries --------------------------------------------------------------------------------------
    def __bool__(self) -> bool:
        return self._count > 0

    @property
    def extent_count(self) -> int:
        return self._count

    @property
    def memory_bytes(self) -> int:
        """Bytes of extent storage in use; never more than the budget once ``add`` returns."""
        return self._count * EXTENT_BYTES

    @property
    def over_coverage(self) -> int:
        return sum(self._over.values())

    def volume_over_coverage(self, volume: str) -> int:
        return self._over.get(volume, 0)

    def volumes(self) -> list[str]:
        return [v for v, (starts, _) in self._vols.items() if starts]

    def extents(self, volume: str) -> list[tuple[int, int]]:
        """``[(offset, length), ...]`` in offset order."""
        starts, ends = self._vols.get(volume, ((), ()))
        return [(s, e - s) for s, e in zip(starts, ends, strict=True)]

    def covered_bytes(self, volume: str | None = None) -> int:
        vols = [self._vols[volume]] if volume in self._vols else [] if volume else self._vols.values()
        return sum(sum(ends) - sum(starts) for starts, ends in vols)

    def covers(self, volume: str, offset: int, length: int) -> bool:
        """True if every byte of ``[offset, offset + length)`` is inside one extent."""
        starts, ends = self._vols.get(volume, ((), ()))
        i = bisect_right(starts, offset) - 1
        return i >= 0 and ends[i] >= offset + length

    # -- updates --------------------------------------------------------------------------------------
    def add(self, volume: str, offset: int, length: int) -> None:
        """Record that ``[offset, offset + length)`` of ``volume`` changed."""
        if length <= 0:
            return
        vol = self._vols.get(volume)
        if vol is None:
            vol = self._vols[volume] = (array("Q"), array("Q"))
        starts, ends = vol
        s, e = offset, offset + length
        i = bisect_left(ends, s)  # first extent that ends at or after s
        j = bisect_right(starts, e)  # first extent that starts after e
        if i < j:  # extents i..j-1 overlap or touch: coalesce them with the new range
            if starts[i] < s:
                s = starts[i]
            if ends[j - 1] > e:
                e = ends[j - 1]
            starts[i] = s
            ends[i] = e
            if j - i > 1:
                del starts[i + 1:j]
                del ends[i + 1:j]
                self._count -= j - i - 1
            return
        starts.insert(i, s)
        ends.insert(i, e)
        self._count += 1
        if self._count > self.max_extents:
            self._merge_closest()

    def clear(self, volume: str | None = None) -> None:
        for name in [volume] if volume is not None else list(self._vols):
            vol = self._vols.pop(name, None)
            if vol is not None:
                self._count -= len(vol[0])
            self._over.pop(name, None)

    def take(self, volume: str) -> list[tuple[int, int]]:
        """The extents of ``volume``, removed from the map (bitmap sync: read them, send them)."""
        out = self.extents(volume)
        self.clear(volume)
        return out

    def _merge_closest(self) -> None:
        self.merge_to(int(self.max_extents * _LOW_WATER))

    def merge_to(self, max_extents: int) -> None:
        """Close the smallest gaps until at most ``max_extents`` extents remain (at least one per volume)."""
        nonempty = sum(1 for starts, _ in self._vols.values() if starts)
        k = self._count - max(max_extents, nonempty)
        if k <= 0:
            return
        gaps = []
        for starts, ends in self._vols.values():
            gaps.extend([b - a for a, b in zip(ends, starts[1:], strict=False)])
        if k > len(gaps):  # cannot happen while the budget holds one extent per volume
            k = len(gaps)
        threshold = sorted(gaps)[k - 1]
        below = sum(1 for g in gaps if g < threshold)
        ties = k - below  # gaps equal to the threshold that still close, leftmost first
        for name, (starts, ends) in list(self._vols.items()):
            if len(starts) < 2:
                continue
            new_starts, new_ends = array("Q", [starts[0]]), array("Q")
            for idx in range(1, len(starts)):
                gap = starts[idx] - ends[idx - 1]
                if gap < threshold or (gap == threshold and ties > 0):
                    if gap == threshold:
                        ties -= 1
                    self._over[name] = self._over.get(name, 0) + gap
                    continue
                new_ends.append(ends[idx - 1])
                new_starts.append(starts[idx])
            new_ends.append(ends[-1])
            self._count -= len(starts) - len(new_starts)
            self._vols[name] = (new_starts, new_ends)
        self.merge_passes += 1

    # -- persistence (the bytes; dirty_store.py does the file) -----------------------------------------
    def volume_state(self, volume: str) -> dict:
        """What to save for ``volume``: ``{"extents": [[offset, length], ...], "over_coverage": int}``."""
        return {"extents": [list(x) for x in self.extents(volume)], "over_coverage": self.volume_over_coverage(volume)}

    def load_volume(self, volume: str, state: dict) -> None:
        """Add a saved `volume_state` back (merging under the budget as usual)."""
        for offset, length in state.get("extents", []):
            self.add(volume, int(offset), int(length))
        if state.get("over_coverage"):
            self._over[volume] = self._over.get(volume, 0) + int(state["over_coverage"])
