"""Fits the sync runner's protocols onto the protect side as it is today.

``ProtectedVpgLink`` is the runner's VpgLink, StreamSink and (for the VRA's own map of what it let go)
DirtySource over ``vra_appliance.protect.vpg.ProtectedVpg``; ``FilterDirtySource`` is a DirtySource over an
IO filter's control socket (docs/CONTRACTS.md section 3, ``dirty`` with ``clear``).

ProtectedVpg has no public hook for a sync yet, so the link uses its lock (``_cv``, reentrant), its
``_held_bytes()`` and its ``dropped`` map. The hooks it needs, to replace those (docs/SYNC.md, "Hooks"):
``ProtectedVpg.resync_write(volume, offset, length, read) -> bool`` (read and enqueue under the sequencer
lock, in the input of the filter that serves the volume), ``wait_room(nbytes, timeout) -> bool``,
``take_dropped(volume)`` / ``add_dropped(volume, extents)``, and ``set_syncing(bool)`` that
``commit_checkpoint`` honours next to ``needs_bitmap_sync``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from vra_appliance.iofilter.control import ControlError
from vra_appliance.sync.errors import DirtyMapLostError, PermanentError, SyncError, TransientError


class ProtectedVpgLink:
    """``engine`` is a ProtectedVpg; ``filter_of(volume)`` names the filter input that carries the volume's
    writes, so a sync's write is ordered with that filter's writes (one input of the engine's aligner)."""

    def __init__(self, engine, filter_of: Callable[[str], str]) -> None:
        self.engine = engine
        self.filter_of = filter_of

    # -- VpgLink ------------------------------------------------------------------------------------------------
    @property
    def needs_bitmap_sync(self) -> bool:
        return bool(self.engine.needs_bitmap_sync)

    @property
    def connected(self) -> bool:
        return bool(self.engine.connected)

    def set_syncing(self, syncing: bool) -> None:
        e = self.engine
        with e._cv:
            if syncing:
                e.needs_bitmap_sync = True  # commit_checkpoint marks checkpoints not consistent meanwhile
            elif not e.dropped:
                e.needs_bitmap_sync = False

    # -- StreamSink -----------------------------------------------------------------------------------------------
    def max_push(self) -> int:
        return max(4096, self.engine.settings.buffer_bytes // 4)

    def wait_room(self, nbytes: int, timeout: float) -> bool:
        e = self.engine
        limit = e.settings.buffer_bytes
        if nbytes > limit:
            return False
        deadline = time.monotonic() + timeout
        with e._cv:
            while e._held_bytes() + nbytes > limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                e._cv.wait(min(left, 0.1))
        return True

    def push(self, volume: str, offset: int, length: int, read: Callable[[int, int], bytes]) -> bool:
        e = self.engine
        with e._cv:  # the split listener's on_write waits: no filter write is sequenced in between
            try:
                data = read(offset, length)
            except OSError as exc:
                raise TransientError(f"reading volume {volume} at {offset} failed: {exc}") from exc
            dropped = e.counters.dropped_writes
            e.on_write(self.filter_of(volume), volume, offset, data)
            return e.counters.dropped_writes == dropped

    # -- DirtySource (the VRA's own map) ------------------------------------------------------------------------
    def take(self, volume: str) -> list[tuple[int, int]]:
        e = self.engine
        with e._cv:
            extents = e.dropped.extents(volume)
            e.dropped.clear(volume)
            return extents

    def give_back(self, volume: str, extents: list[tuple[int, int]]) -> None:
        e = self.engine
        with e._cv:
            for off, length in extents:
                e.dropped.add(volume, off, length)
            e.needs_bitmap_sync = True


class FilterDirtySource:
    """The dirty map of an IO filter, through its control socket (``request(op, **fields) -> dict``)."""

    def __init__(self, request: Callable[..., dict], volumes: set[str] | frozenset[str]) -> None:
        self.request = request
        self.volumes = frozenset(volumes)

    def take(self, volume: str) -> list[tuple[int, int]]:
        if volume not in self.volumes:
            return []
        try:
            reply = self.request("dirty", volume=volume, clear=True)
        except ControlError as exc:
            raise PermanentError(f"the IO filter refused the dirty extents of {volume}: {exc}; "
                                 "check that the filter serves this volume") from exc
        except (OSError, ValueError) as exc:
            raise TransientError(f"the IO filter's control socket did not answer for {volume}: {exc}") from exc
        if reply.get("unclean"):
            raise DirtyMapLostError(volume)
        return [(int(o), int(n)) for o, n in reply.get("extents", [])]

    def give_back(self, volume: str, extents: list[tuple[int, int]]) -> None:
        raise SyncError("the IO filter's control socket cannot take extents back; keep them in the VRA's map")
