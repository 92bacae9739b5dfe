"""Bitmap sync: resend what the dirty map recorded while the link (or the buffer) could not carry it.

Input: the volume's dirty extents ``[(offset, length), ...]``, as the IO filter's control socket returns them
(docs/CONTRACTS.md section 3, ``dirty``), in any order, maybe overlapping. :func:`coalesce` sorts, merges
overlapping and adjacent extents and clips them to the volume; :class:`BitmapSync` reads them from the
source volume in pieces of at most ``max_io`` bytes and yields them. ``stats`` compares the bytes resent
with the bytes the map covered; ``pending()`` is what was not yet yielded, to hand back to the dirty map
when the sync is interrupted (the filter's map was cleared when the extents were fetched).

Wired into replication, the read of each piece and its enqueueing into the VPG's stream happen under the
stream's sequencer lock (docs/SYNC.md, "Writes during a sync").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from vra_appliance.sync.volume import Extent, VolumeReader, read

DEFAULT_MAX_IO = 1024 * 1024


def coalesce(extents: Iterable, size: int | None = None, max_gap: int = 0) -> list[tuple[int, int]]:
    """Sorted, merged ``(offset, length)`` extents: overlapping or touching ones (or closer than ``max_gap``)
    become one; empty ones vanish; with ``size``, they are clipped to ``[0, size)``."""
    spans = sorted((int(o), int(o) + int(n)) for o, n in extents if int(n) > 0)
    out: list[list[int]] = []
    for s, e in spans:
        if size is not None:
            s, e = max(0, s), min(e, size)
            if e <= s:
                continue
        if out and s <= out[-1][1] + max_gap:
            if e > out[-1][1]:
                out[-1][1] = e
        else:
            out.append([s, e])
    return [(s, e - s) for s, e in out]


def split(extents: list[tuple[int, int]], max_io: int) -> Iterator[tuple[int, int]]:
    for off, length in extents:
        end = off + length
        while off < end:
            n = min(max_io, end - off)
            yield off, n
            off += n


@dataclass
class BitmapStats:
    volume: str
    extents_in: int = 0
    extents: int = 0  # after coalescing
    dirty_bytes: int = 0  # bytes the coalesced extents cover
    resent_bytes: int = 0
    pieces: int = 0
    over_coverage: int = 0  # from the dirty map, when the caller knows it

    @property
    def resent_per_dirty(self) -> float:
        return self.resent_bytes / self.dirty_bytes if self.dirty_bytes else 0.0


class BitmapSync:
    """The protect side of one volume's bitmap sync."""

    def __init__(self, reader: VolumeReader, volume: str, dirty: Iterable, *, max_io: int = DEFAULT_MAX_IO,
                 over_coverage: int = 0) -> None:
        dirty = list(dirty)
        self.reader = reader
        self.volume = volume
        self.max_io = max_io
        self._extents = coalesce(dirty, reader.size)
        self._done = 0  # bytes of the coalesced extents already yielded, in order
        self.stats = BitmapStats(volume, extents_in=len(dirty), extents=len(self._extents),
                                 dirty_bytes=sum(n for _, n in self._extents), over_coverage=over_coverage)

    @property
    def percent(self) -> float:
        d = self.stats.dirty_bytes
        return 100.0 if not d else round(100.0 * self.stats.resent_bytes / d, 2)

    def ranges(self) -> Iterator[tuple[int, int]]:
        yield from split(self._extents, self.max_io)

    def extents(self) -> Iterator[Extent]:
        for off, n in self.ranges():
            data = read(self.reader, off, n, self.volume)
            self.stats.pieces += 1
            self.stats.resent_bytes += n
            yield Extent(off, data)
            self._done = off + n

    def done(self, upto: int) -> None:
        """Everything before ``upto`` was sent (for callers that send ``ranges()`` themselves)."""
        self._done = max(self._done, upto)

    def pending(self) -> list[tuple[int, int]]:
        """The dirty extents not yet done. A yielded piece counts as done only once the consumer asks for
        the next one (it may fail to send the last one it got), so nothing is lost on interruption."""
        out = []
        for off, n in self._extents:
            end = off + n
            if end <= self._done:
                continue
            s = max(off, self._done)
            out.append((s, end - s))
        return out
