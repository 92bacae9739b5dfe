"""Fits the sync runner's protocols onto the protect side.

``ProtectedVpgLink`` is the runner's VpgLink, StreamSink and (for the VRA's own map of what it let go)
DirtySource over ``vra_appliance.protect.vpg.ProtectedVpg``, through the hooks it has for the syncs:
``resync_write`` (read and enqueue under the sequencer lock, in the input of the filter that serves the
volume, as ``attach_filter`` or the filter's hello told it), ``wait_room``, ``take_dropped`` /
``add_dropped`` and ``set_syncing`` (honoured by ``commit_checkpoint`` and ``status``).
``FilterDirtySource`` is a DirtySource over an IO filter's control socket (docs/CONTRACTS.md section 3,
``dirty`` with ``clear``).
"""

from __future__ import annotations

from collections.abc import Callable

from vra_appliance.iofilter.control import ControlError
from vra_appliance.sync.errors import DirtyMapLostError, PermanentError, SyncError, TransientError


class ProtectedVpgLink:
    """``engine`` is a ProtectedVpg."""

    def __init__(self, engine) -> None:
        self.engine = engine

    # -- VpgLink ------------------------------------------------------------------------------------------------
    @property
    def needs_bitmap_sync(self) -> bool:
        return bool(self.engine.needs_bitmap_sync)

    @property
    def connected(self) -> bool:
        return bool(self.engine.connected)

    def set_syncing(self, syncing: bool) -> None:
        self.engine.set_syncing(syncing)

    # -- StreamSink -----------------------------------------------------------------------------------------------
    def max_push(self) -> int:
        return max(4096, self.engine.settings.buffer_bytes // 4)

    def wait_room(self, nbytes: int, timeout: float) -> bool:
        return self.engine.wait_room(nbytes, timeout)

    def push(self, volume: str, offset: int, length: int, read: Callable[[int, int], bytes]) -> bool:
        try:
            return self.engine.resync_write(volume, offset, length, read)
        except OSError as exc:
            raise TransientError(f"reading volume {volume} at {offset} (+{length}) failed: {exc}; "
                                 "the sync runs again") from exc

    # -- DirtySource (the VRA's own map) ------------------------------------------------------------------------
    def take(self, volume: str) -> list[tuple[int, int]]:
        return self.engine.take_dropped(volume)

    def give_back(self, volume: str, extents: list[tuple[int, int]]) -> None:
        self.engine.add_dropped(volume, extents)


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
