"""Fits the sync runner's protocols onto the protect side.

``ProtectedVpgLink`` is the runner's VpgLink, StreamSink and (for the VRA's own map of what it let go)
DirtySource over ``vra_appliance.protect.vpg.ProtectedVpg``, through the hooks it has for the syncs:
``resync_write`` (wait for room, read and enqueue under the sequencer lock, in the input of the filter that
serves the volume, as ``attach_filter`` or the filter's hello told it), ``take_bitmap_need``,
``take_dropped`` / ``add_dropped`` and ``set_syncing`` (honoured by ``commit_checkpoint`` and ``status``).
``FilterDirtySource`` is a DirtySource over an IO filter's control socket (docs/CONTRACTS.md section 3,
``dirty`` with ``clear``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from vra_appliance.errors import DirtyMapLostError, PermanentError, TransientError
from vra_appliance.iofilter.control import ControlError


class ProtectedVpgLink:
    """``engine`` is a ProtectedVpg."""

    def __init__(self, engine) -> None:
        self.engine = engine

    # -- VpgLink ------------------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return bool(self.engine.connected)

    def take_bitmap_need(self) -> bool:
        return self.engine.take_bitmap_need()

    def take_delta_need(self) -> bool:
        return self.engine.take_delta_need()

    def set_syncing(self, syncing: bool) -> None:
        self.engine.set_syncing(syncing)

    # -- StreamSink -----------------------------------------------------------------------------------------------
    def max_push(self) -> int:
        return max(4096, self.engine.settings.buffer_bytes // 4)

    def push(self, volume: str, offset: int, length: int, read: Callable[[int, int], bytes],
             timeout: float) -> bool:
        try:
            return self.engine.resync_write(volume, offset, length, read, timeout)
        except OSError as exc:
            raise TransientError(f"reading volume {volume} at {offset} (+{length}) failed: {exc}; "
                                 "the sync runs again") from exc

    # -- DirtySource (the VRA's own map) ------------------------------------------------------------------------
    def take(self, volume: str) -> list[tuple[int, int]]:
        return self.engine.take_dropped(volume)

    def give_back(self, volume: str, extents: list[tuple[int, int]]) -> None:
        self.engine.add_dropped(volume, extents)


class FilterDirtySource:
    """The dirty map of an IO filter, through its control socket (``request(op, **fields) -> dict``).
    ``volumes``: the volumes the filter serves, or a callable returning them (learnt from its ``status``;
    it may raise OSError while the filter is not reachable)."""

    def __init__(self, request: Callable[..., dict],
                 volumes: Collection[str] | Callable[[], Collection[str]]) -> None:
        self.request = request
        self._volumes = volumes if callable(volumes) else frozenset(volumes)

    @property
    def volumes(self) -> frozenset[str]:
        v = self._volumes
        return frozenset(v() if callable(v) else v)

    def take(self, volume: str) -> list[tuple[int, int]]:
        try:
            serves = volume in self.volumes
        except (OSError, ValueError) as exc:
            raise TransientError(f"the IO filter's control socket did not answer: {exc}") from exc
        if not serves:
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
        raise PermanentError("the IO filter's control socket cannot take extents back; keep them in the VRA's map")
