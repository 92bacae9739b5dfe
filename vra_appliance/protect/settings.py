"""The protect engine's settings and counters, shared by the intake (``vpg``) and the sender (``sender``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ProtectSettings:
    compression: bool = True
    buffer_bytes: int = 256 << 20
    batch_bytes: int = 1 << 20
    batch_delay: float = 0.005
    max_inflight_bytes: int = 32 << 20
    backoff_min: float = 0.05
    backoff_max: float = 2.0
    permanent_backoff: float = 5.0
    local_align_timeout: float = 10.0
    # Extents of writes let go (buffer full, stream reset) kept per volume; past it neighbours merge.
    dropped_max_extents: int = 4096
    # A sync's pushes may fill the buffer only up to this share of it: the rest is for the VMs' writes, so
    # a sync does not push them into the dirty map.
    sync_buffer_share: float = 0.5


@dataclass
class ProtectCounters:
    """One VPG's figures. The intake counts writes, drops and resync pushes; the sender the rest."""

    writes: int = 0
    bytes: int = 0
    batches: int = 0
    resent_batches: int = 0
    raw_bytes_sent: int = 0
    wire_bytes_sent: int = 0
    dropped_writes: int = 0
    dropped_bytes: int = 0
    resync_writes: int = 0
    resync_bytes: int = 0
    reconnects: int = 0
    recovery_journal_lost: int = 0  # Welcomes that said the recovery side lost acknowledged records
    refusals: dict = field(default_factory=dict)
    compress_s: float = 0.0
    send_wait_s: float = 0.0
