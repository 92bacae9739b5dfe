"""Journal index math: which journal record holds each byte of a volume at a point in time. Pure, no I/O.

An ``ExtentMap`` is a sorted list of non-overlapping byte ranges of one volume, each pointing at the
write whose data covers it. Writes are added in seq order; a later write overrides what it overlaps,
splitting earlier ranges as needed. A range keeps the volume offset where its write began (``origin``),
so byte ``x`` of a range is byte ``x - origin`` of that write's data.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from typing import NamedTuple

from .journal import Entry


class Piece(NamedTuple):
    """[start, end) of a volume: from the write at ``loc`` (``skip`` bytes into its data), or from the
    replica when ``loc`` is None."""

    start: int
    end: int
    skip: int
    loc: object


class ExtentMap:
    """Volume byte ranges -> write locations; later ``add``s override earlier ones."""

    __slots__ = ("_starts", "_ends", "_origins", "_locs")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._origins: list[int] = []
        self._locs: list[object] = []

    def __len__(self) -> int:
        return len(self._starts)

    def covered_bytes(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def ranges(self) -> list[tuple[int, int, int, object]]:
        """(start, end, origin, loc) of every range, in volume order."""
        return list(zip(self._starts, self._ends, self._origins, self._locs, strict=True))

    def _insert(self, i: int, start: int, end: int, origin: int, loc: object) -> None:
        self._starts.insert(i, start)
        self._ends.insert(i, end)
        self._origins.insert(i, origin)
        self._locs.insert(i, loc)

    def add(self, offset: int, length: int, loc: object) -> None:
        """Record that a write of ``length`` bytes at ``offset`` (data at ``loc``) is now the newest there."""
        if length <= 0:
            return
        s, e = offset, offset + length
        starts, ends = self._starts, self._ends
        i = bisect_right(starts, s) - 1
        if i >= 0 and starts[i] < s < ends[i]:
            if ends[i] > e:  # the new write lies inside one range: split it in three
                self._insert(i + 1, e, ends[i], self._origins[i], self._locs[i])
                ends[i] = s
                self._insert(i + 1, s, e, s, loc)
                return
            ends[i] = s  # keep the left part of a range the write starts in
            i += 1
        elif i < 0 or starts[i] < s:
            i += 1
        # ranges i.. start at or after s; those starting before e are overridden, the last maybe in part
        k = bisect_left(starts, e, lo=i)
        if k > i and ends[k - 1] > e:
            starts[k - 1] = e
            k -= 1
        del starts[i:k], ends[i:k], self._origins[i:k], self._locs[i:k]
        self._insert(i, s, e, s, loc)

    def lookup(self, offset: int, length: int) -> list[Piece]:
        """The pieces that make up [offset, offset + length), in order, gaps (replica) included."""
        s, e = offset, offset + length
        starts, ends = self._starts, self._ends
        i = bisect_right(starts, s) - 1
        if i < 0 or ends[i] <= s:
            i += 1
        out: list[Piece] = []
        pos = s
        n = len(starts)
        while pos < e and i < n and starts[i] < e:
            if starts[i] > pos:
                out.append(Piece(pos, starts[i], 0, None))
                pos = starts[i]
            end = min(ends[i], e)
            out.append(Piece(pos, end, pos - self._origins[i], self._locs[i]))
            pos = end
            i += 1
        if pos < e:
            out.append(Piece(pos, e, 0, None))
        return out


def build_extent_map(entries: Iterable[Entry], volume: str) -> ExtentMap:
    """The extent map of one volume from journal entries in seq order (the caller bounds the seqs)."""
    extents = ExtentMap()
    for entry in entries:
        if entry.volume == volume:
            extents.add(entry.offset, entry.length, entry.loc)
    return extents
