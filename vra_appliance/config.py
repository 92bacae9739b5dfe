"""Role configurations of a VRA (what the ZVM sends through the Control service), and their persistence.

A VRA keeps its roles in ``<state dir>/roles.json`` so that a restarted ``vra serve`` takes them up again
(and, on the recovery side, reopens and checks its journals) before the ZVM calls again.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vra_appliance.errors import ConfigError
from vra_appliance.proto.v1 import control_pb2 as cpb

DEFAULT_BUFFER_BYTES = 256 << 20
# Checkpoint cadence of a protect role (protect.checkpoints uses the same defaults).
DEFAULT_INTERVAL_S = 5.0
MIN_INTERVAL_S = 1.0
DEFAULT_FREEZE_TIMEOUT_MS = 100


@dataclass(frozen=True)
class PeerVra:
    vra_id: str
    address: str


@dataclass(frozen=True)
class ProtectRole:
    vpg: str
    volumes: tuple[str, ...]
    filter_controls: tuple[str, ...]
    recover_peer: PeerVra
    priority: int = 1
    compression: bool = True
    coordinator: bool = False
    protect_peers: tuple[PeerVra, ...] = ()
    checkpoint_interval_s: float = DEFAULT_INTERVAL_S
    buffer_bytes: int = DEFAULT_BUFFER_BYTES
    freeze_timeout_ms: int = DEFAULT_FREEZE_TIMEOUT_MS
    preseeded_volumes: tuple[str, ...] = ()
    # Replication paused by the user (PauseVpg): kept here so that it survives a restart of the VRA.
    paused: bool = False

    def validate(self) -> None:
        if not self.vpg:
            raise ConfigError("a protect role needs a VPG id")
        unknown = sorted(set(self.preseeded_volumes) - set(self.volumes))
        if unknown:
            raise ConfigError(f"VPG {self.vpg}: pre-seeded volumes {unknown} are not volumes of the role")
        if not self.volumes:
            raise ConfigError(f"VPG {self.vpg}: a protect role needs at least one volume")
        if not self.recover_peer.address or not self.recover_peer.vra_id:
            raise ConfigError(f"VPG {self.vpg}: give the recovery VRA's id and address")
        if self.checkpoint_interval_s < MIN_INTERVAL_S:
            raise ConfigError(f"VPG {self.vpg}: checkpoint interval must be at least {MIN_INTERVAL_S} s")
        if self.coordinator and not self.protect_peers:
            raise ConfigError(f"VPG {self.vpg}: the coordinator needs the list of protect VRAs (itself included)")

    @classmethod
    def from_pb(cls, m: cpb.ProtectConfig) -> ProtectRole:
        role = cls(
            vpg=m.vpg,
            volumes=tuple(m.volumes),
            filter_controls=tuple(m.filter_controls),
            recover_peer=PeerVra(m.recover_peer.vra_id, m.recover_peer.address),
            priority=m.priority or 1,
            compression=m.compression,
            coordinator=m.coordinator,
            protect_peers=tuple(PeerVra(p.vra_id, p.address) for p in m.protect_peers),
            checkpoint_interval_s=(m.checkpoint_interval_ms / 1000.0) if m.checkpoint_interval_ms else DEFAULT_INTERVAL_S,
            buffer_bytes=m.buffer_bytes or DEFAULT_BUFFER_BYTES,
            freeze_timeout_ms=m.freeze_timeout_ms or DEFAULT_FREEZE_TIMEOUT_MS,
            preseeded_volumes=tuple(m.preseeded_volumes),
        )
        role.validate()
        return role

    def to_pb(self) -> cpb.ProtectConfig:
        return cpb.ProtectConfig(
            vpg=self.vpg,
            volumes=list(self.volumes),
            filter_controls=list(self.filter_controls),
            recover_peer=cpb.PeerVra(vra_id=self.recover_peer.vra_id, address=self.recover_peer.address),
            priority=self.priority,
            compression=self.compression,
            coordinator=self.coordinator,
            protect_peers=[cpb.PeerVra(vra_id=p.vra_id, address=p.address) for p in self.protect_peers],
            checkpoint_interval_ms=int(self.checkpoint_interval_s * 1000),
            buffer_bytes=self.buffer_bytes,
            freeze_timeout_ms=self.freeze_timeout_ms,
            preseeded_volumes=list(self.preseeded_volumes),
        )


@dataclass(frozen=True)
class ReplicaVolume:
    volume: str
    path: str
    size: int


@dataclass(frozen=True)
class RecoverRole:
    vpg: str
    journal_dir: str
    volumes: tuple[ReplicaVolume, ...]
    protect_peers: tuple[str, ...]
    history_s: float = 3600.0
    hard_limit_bytes: int = 0
    warning_bytes: int = 0

    def validate(self) -> None:
        if not self.vpg:
            raise ConfigError("a recover role needs a VPG id")
        if not self.journal_dir:
            raise ConfigError(f"VPG {self.vpg}: a recover role needs a journal directory")
        if not self.volumes:
            raise ConfigError(f"VPG {self.vpg}: a recover role needs its replica volumes (id, path, size)")
        if not self.protect_peers:
            raise ConfigError(f"VPG {self.vpg}: name the protect VRAs paired for this VPG")

    @classmethod
    def from_pb(cls, m: cpb.RecoverConfig) -> RecoverRole:
        role = cls(
            vpg=m.vpg,
            journal_dir=m.journal_dir,
            volumes=tuple(ReplicaVolume(v.volume, v.path, v.size) for v in m.volumes),
            protect_peers=tuple(m.protect_peers),
            history_s=float(m.history_seconds or 3600),
            hard_limit_bytes=m.journal_hard_limit_bytes,
            warning_bytes=m.journal_warning_bytes,
        )
        role.validate()
        return role

    def to_pb(self) -> cpb.RecoverConfig:
        return cpb.RecoverConfig(
            vpg=self.vpg,
            journal_dir=self.journal_dir,
            volumes=[cpb.ReplicaVolume(volume=v.volume, path=v.path, size=v.size) for v in self.volumes],
            history_seconds=int(self.history_s),
            journal_hard_limit_bytes=self.hard_limit_bytes,
            journal_warning_bytes=self.warning_bytes,
            protect_peers=list(self.protect_peers),
        )


@dataclass
class Roles:
    protect: dict[str, ProtectRole] = field(default_factory=dict)
    recover: dict[str, RecoverRole] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        doc = {
            "format": 1,
            "protect": [asdict(r) for r in self.protect.values()],
            "recover": [asdict(r) for r in self.recover.values()],
        }
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Roles:
        if not path.exists():
            return cls()
        doc = json.loads(path.read_text())
        roles = cls()
        for r in doc.get("protect", []):
            role = ProtectRole(
                **{
                    **r,
                    "volumes": tuple(r["volumes"]),
                    "filter_controls": tuple(r["filter_controls"]),
                    "recover_peer": PeerVra(**r["recover_peer"]),
                    "protect_peers": tuple(PeerVra(**p) for p in r["protect_peers"]),
                    "preseeded_volumes": tuple(r.get("preseeded_volumes", ())),
                }
            )
            roles.protect[role.vpg] = role
        for r in doc.get("recover", []):
            role = RecoverRole(
                **{**r, "volumes": tuple(ReplicaVolume(**v) for v in r["volumes"]), "protect_peers": tuple(r["protect_peers"])}
            )
            roles.recover[role.vpg] = role
        return roles
