"""The syncs of one protect role in ``vra serve``: a ``VpgSyncRunner`` wired to the role's engine, the host's
IO filters and the recovery VRA's checksum service.

- The stream: ``ProtectedVpgLink(engine)`` is the runner's link, sink and first dirty source (what the VRA
  let go when its buffer was full or its stream was reset).
- The filters: each filter control socket of the role is a dirty source (``dirty`` with ``clear``), and
  tells where each volume's file is (``status``): the runner reads the source volumes from those files
  (:class:`FilterVolumes`, opened when a sync first needs them).
- The recovery VRA: a ``GrpcChecksumPeer`` on a channel to the role's recover peer, with this VRA's
  credentials (TLS or the pairing secret), for delta syncs.
- No throttle of its own: what a sync pushes goes through the VPG's stream, whose transport already takes
  every batch from the VPG's share of the site's bandwidth limit (one token bucket for both).

``VpgSyncs(..., previous=...)`` carries the sync state of a replaced role's volumes over (a volume that was
streaming stays streaming; one that needed a sync still needs it).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping

from vra_appliance.config import ProtectRole
from vra_appliance.errors import TransientError
from vra_appliance.stream.transport_grpc import CHANNEL_OPTIONS
from vra_appliance.sync.grpc_peer import GrpcChecksumPeer
from vra_appliance.sync.protect_adapter import FilterDirtySource, ProtectedVpgLink
from vra_appliance.sync.runner import VpgSyncRunner
from vra_appliance.sync.state import VpgSyncState
from vra_appliance.sync.volume import FileVolume, VolumeReader
from vra_appliance.trust.auth import Security


class FilterVolumes(Mapping[str, VolumeReader]):
    """The role's source volumes, opened from the paths the host's filters report. A volume no reachable
    filter serves yet raises TransientError (the sync runs later)."""

    def __init__(self, volumes, controls) -> None:
        self._volumes = tuple(volumes)
        self._controls = list(controls)
        self._open: dict[str, FileVolume] = {}
        self._lock = threading.Lock()

    def __getitem__(self, volume: str) -> VolumeReader:
        if volume not in self._volumes:
            raise KeyError(volume)
        with self._lock:
            opened = self._open.get(volume)
            if opened is not None:
                return opened
        problems = []
        for ctl in self._controls:
            try:
                path = ctl.path_of(volume)
            except (OSError, ValueError) as exc:
                problems.append(f"{ctl.path}: {exc}")
                continue
            if path:
                try:
                    reader = FileVolume(path)
                except OSError as exc:
                    raise TransientError(f"cannot open volume {volume} at {path}: {exc}; the sync runs later") from exc
                with self._lock:
                    self._open.setdefault(volume, reader)
                    if self._open[volume] is not reader:
                        reader.close()
                    return self._open[volume]
        raise TransientError(f"no IO filter of this host serves volume {volume} yet"
                             + (f" ({'; '.join(problems)})" if problems else "") + "; the sync runs when one does")

    def __iter__(self) -> Iterator[str]:
        return iter(self._volumes)

    def __len__(self) -> int:
        return len(self._volumes)

    def close(self) -> None:
        with self._lock:
            for reader in self._open.values():
                reader.close()
            self._open.clear()


class VpgSyncs:
    """One protect role's runner and what it holds open (see the module docstring)."""

    def __init__(self, role: ProtectRole, engine, controls, security: Security, *, previous: VpgSyncs | None = None,
                 interval: float = 0.2) -> None:
        self.vpg = role.vpg
        self.volumes = FilterVolumes(role.volumes, controls)
        self.channel = security.channel(role.recover_peer.address, role.recover_peer.vra_id, CHANNEL_OPTIONS)
        link = ProtectedVpgLink(engine)
        sources = [link] + [FilterDirtySource(ctl.request, ctl.served) for ctl in controls]
        state = VpgSyncState(role.volumes)
        if previous is not None:
            for v, st in previous.runner.state.volumes.items():
                if v in state.volumes and not st.running:
                    state.volumes[v] = st
        self.runner = VpgSyncRunner(
            role.vpg, link, link, self.volumes, dirty_sources=sources,
            peer=GrpcChecksumPeer(self.channel, role.vpg, metadata=security.metadata()),
            state=state, interval=interval,
        )

    def need(self, reason, volumes=None) -> None:
        self.runner.need(reason, volumes)

    def status(self) -> dict:
        return self.runner.status()

    def start(self) -> None:
        self.runner.start()

    def stop(self) -> None:
        # The channel first: a checksum call waiting on a dead link ends at once (the sync is interrupted,
        # and resumes wherever the role is taken up again).
        self.channel.close()
        self.runner.stop()
        self.volumes.close()

