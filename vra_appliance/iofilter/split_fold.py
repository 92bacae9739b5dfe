"""The splitter's dirty map (one of ``Splitter``'s bases): the fold of what the VRA did not get, and access.

When a connection breaks, every frame the VRA had not acknowledged (socket) or consumed (ring) is folded into
the dirty map by ``_fold``, a chunk at a time so a VM write never waits behind a long fold; while a fold runs
(``_folding``) the filter counts as dirty. ``mark_dirty`` records a write that failed part way; the control
socket reads (``dirty_extents``, ``dirty_summary``) and clears the map through this class.

State and locking are the ``Splitter``'s (vra_appliance/iofilter/splitter.py): this class is one of its
bases, holds no state of its own and takes no lock of its own; every method runs under, or takes, the
splitter's one lock (``_lock`` / ``_cond``) exactly where the splitter did before the split.
"""

from __future__ import annotations

_FOLD_CHUNK = 256


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
