"""The splitter's dirty map (one of ``Splitter``'s bases): the fold of what the VRA did not get, and access.

When a connection breaks, every frame the VRA had not acknowledged (socket) or consumed (ring) is folded into
the dirty map by ``_fold``, a chunk at a time so a VM write never waits behind a long fold; while a fold runs
(``_folding``) the filter counts as dirty. ``mark_dirty`` records a write that failed part way; the control
socket reads (``dirty_extents``, ``dirty_summary``) and clears the map through this class.

The sync barrier (``take_dirty``): a bitmap sync clears the map, then reads the source. A write still in the
ring (or the socket's queue) when the map is cleared is older than what the sync reads, yet the VRA would
sequence it after the sync's data, and the replica would keep the old bytes (a newer write of the same range
went to the dirty map because the ring was full). So the clear waits until the VRA has consumed everything
published before it; if it cannot within the timeout, the extents stay in the map and the caller gets none
(``passed`` False): the filter then still reports dirty, and the next sync takes them.

State and locking are the ``Splitter``'s (vra_appliance/iofilter/splitter.py): this class is one of its
bases, holds no state of its own and takes no lock of its own; every method runs under, or takes, the
splitter's one lock (``_lock`` / ``_cond``) exactly where the splitter did before the split.
"""

from __future__ import annotations

import time

from vra_appliance.errors import RingCorrupt

_FOLD_CHUNK = 256
BARRIER_TIMEOUT_S = 2.0  # well inside the VRA control client's 5 s: a late answer would lose the extents


class DirtyFold:
    """The dirty-map half of ``Splitter`` (see the module docstring)."""

    def mark_dirty(self, volume: str, offset: int, length: int) -> None:
        """A write failed part way: the range may have changed, so it must be resent by a bitmap sync."""
        with self._lock:
            self.dirty.add(volume, offset, length)

    def is_dirty(self, volumes: list[str] | None = None) -> bool:
        with self._lock:
            if self._folding:
                return True
            names = self.dirty.volumes()
            return bool(names) if volumes is None else any(v in names for v in volumes)

    def dirty_extents(self, volume: str, clear: bool = False) -> tuple[list[tuple[int, int]], int]:
        """(extents, over-coverage) of ``volume``; ``clear`` removes them in the same step."""
        with self._lock:
            over = self.dirty.volume_over_coverage(volume)
            return (self.dirty.take(volume) if clear else self.dirty.extents(volume)), over

    def take_dirty(self, volume: str, timeout_s: float = BARRIER_TIMEOUT_S) -> tuple[list[tuple[int, int]], int, bool]:
        """(extents, over-coverage, passed): remove ``volume``'s extents once the VRA has consumed every frame
        published before (see the module docstring). Not passed in time: no extents, the map keeps them."""
        with self._lock:
            over = self.dirty.volume_over_coverage(volume)
            extents = self.dirty.take(volume)
            gen, ring = self._gen, self._ring if self._connected else None
            if ring is not None:
                with ring.locked():
                    target = ring.z.head
            elif self._connected and (self._queue or self._inflight):
                target = max(self._queue[-1][1] if self._queue else 0, self._inflight[-1][0] if self._inflight else 0)
            else:
                target = None  # nothing on its way to the VRA
        if target is None or self._passed(gen, ring, target, time.monotonic() + timeout_s):
            return extents, over, True
        with self._lock:
            for offset, length in extents:
                self.dirty.add(volume, offset, length)
        return [], over, False

    def _passed(self, gen: int, ring, target: int, deadline: float) -> bool:
        """Wait until the VRA consumed the ring up to byte ``target`` (or acknowledged seq ``target`` on the
        socket), or the connection is gone (what it had not consumed was folded into the map since)."""
        rang = False
        while True:
            with self._lock:
                if self._gen != gen or not self._connected:
                    return True
                try:
                    if ring.consumed() >= target if ring is not None else self.stats["acked_seq"] >= target:
                        return True
                except RingCorrupt:
                    return True  # the connection is dropped: the unconsumed frames go to the map
            if not rang and ring is not None:
                self._ring_bell(ring, True)  # a napping VRA: consume now
                rang = True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)

    def dirty_summary(self, volume: str) -> tuple[int, int]:
        """(dirty bytes, over-coverage) of ``volume``."""
        with self._lock:
            return self.dirty.covered_bytes(volume), self.dirty.volume_over_coverage(volume)

    def _fold(self, frames: list) -> None:
        """Record WRITE and ZERO frames ``(kind, seq, volume, offset, length, ...)`` in the dirty map, a chunk
        at a time so a VM write never waits behind a long fold."""
        for i in range(0, len(frames), _FOLD_CHUNK):
            with self._lock:
                for frame in frames[i:i + _FOLD_CHUNK]:
                    self.dirty.add(frame[2], frame[3], frame[4])
