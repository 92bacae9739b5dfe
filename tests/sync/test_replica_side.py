"""The recovery side of delta syncs in `vra serve`: checksums over a volume at the journal's tip (a recovery
VPG's replica overlaid with every journaled write), moved forward per window, pinning the journal only while
a sync is open; and the protect side's sync state machine for volumes a restarted VRA knows nothing of."""

from __future__ import annotations

import hashlib
import random
import time
from types import SimpleNamespace

import pytest

from vra_appliance.errors import UnknownVolumeError
from vra_appliance.recover import MemoryJournal, RecoveryVPG, ReplicaVolume, WriteRecord
from vra_appliance.sync.checksums import DeltaParams
from vra_appliance.sync.delta import DeltaSync, apply
from vra_appliance.sync.messages import DeltaOpen
from vra_appliance.sync.replica_side import JournalTipChecksums
from vra_appliance.sync.state import Phase, Reason, SyncKind, VolumeSyncState

from .conftest import MemVolume

VPG, VOL = "vpg-1", "vol-1"
SIZE = 1 << 20


class Site:
    def __init__(self, tmp_path) -> None:
        self.journal = MemoryJournal()
        self.replica_path = tmp_path / "replica.img"
        self.rvpg = RecoveryVPG(VPG, self.journal, {VOL: ReplicaVolume(self.replica_path, SIZE)}, tmp_path / "state")
        self.seq = 0
        self.now = [0.0]
        self.side = JournalTipChecksums({VOL: SIZE}, self.rvpg.tip_image, advance_tip=self.rvpg.advance_tip,
                                        idle_s=60, clock=lambda: self.now[0])

    def write(self, offset: int, data: bytes) -> None:
        self.seq += 1
        self.journal.append([WriteRecord(VPG, self.seq, time.time_ns(), VOL, offset, data)])

    def state(self) -> bytes:
        """The volume once the journal is applied to the replica (what the tip image must read)."""
        buf = bytearray(self.replica_path.read_bytes())
        for rec in self.journal.read(VPG, 1):
            buf[rec.offset:rec.offset + len(rec.data)] = rec.data
        return bytes(buf)

    def close(self) -> None:
        self.side.close_all()
        self.rvpg.close()


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.close()


def test_a_delta_sync_against_the_journal_tip_sends_what_is_not_journaled(site: Site) -> None:
    rng = random.Random(3)
    source = MemVolume(rng.randbytes(SIZE))
    for i in range(0, SIZE, 64 * 1024):  # the journal holds the source, except ten blocks
        site.write(i, bytes(source.buf[i:i + 64 * 1024]))
    stale = sorted(rng.sample(range(SIZE // 4096), 10))
    for b in stale:
        source.buf[b * 4096:(b + 1) * 4096] = rng.randbytes(4096)
    sync = DeltaSync(source, VOL, site.side, DeltaParams(salt=b"x"), vpg=VPG, window_bytes=256 * 1024)
    got = list(sync.ranges())
    assert sum(n for _, n in got) == len(stale) * 4096
    assert sorted(b for o, n in got for b in range(o // 4096, (o + n) // 4096)) == stale
    assert site.side.open_volumes() == []  # closed at the end: the journal is not pinned any more
    assert site.rvpg.status().open_images == 0


def test_the_tip_moves_forward_per_window_and_pins_the_journal_meanwhile(site: Site) -> None:
    site.write(0, b"a" * 4096)
    site.side.open(DeltaOpen(VPG, VOL, SIZE, DeltaParams(salt=b"x")))
    assert site.rvpg.status().open_images == 1  # the promoter goes no further than the tip meanwhile
    (tip,) = [site.side.volumes[VOL]]
    assert tip.pread(0, 4096) == b"a" * 4096
    site.write(4096, b"b" * 4096)  # journaled after the open
    assert tip.pread(4096, 4096) == bytes(4096)
    site.side.group_digests(VOL, 0, 1)  # the next window: the tip moves to the newest record first
    assert tip.pread(0, 8192) == b"a" * 4096 + b"b" * 4096 == site.state()[:8192]
    assert tip.checkpoint_seq == site.seq
    site.side.close(VOL)
    assert site.rvpg.status().open_images == 0


def test_an_idle_sync_is_closed_and_an_unknown_volume_refused(site: Site) -> None:
    params = DeltaParams(salt=b"x")
    with pytest.raises(UnknownVolumeError, match="'vol-2' is not part of this VPG on the recovery side"):
        site.side.open(DeltaOpen(VPG, "vol-2", SIZE, params))
    site.side.open(DeltaOpen(VPG, VOL, SIZE, params))
    site.side.open(DeltaOpen(VPG, VOL, SIZE, params))  # a new sync replaces one its protect side gave up
    assert site.rvpg.status().open_images == 1
    site.now[0] += 61
    assert site.side.expire() == [VOL]
    assert site.rvpg.status().open_images == 0


def test_an_in_process_delta_sync_onto_the_replica_through_the_journal(site: Site) -> None:
    """The whole loop: checksums from the tip, the differing blocks written as journal records."""
    rng = random.Random(4)
    source = MemVolume(rng.randbytes(SIZE))
    sync = DeltaSync(source, VOL, site.side, DeltaParams(salt=b"y"), vpg=VPG, window_bytes=256 * 1024)

    class Journaled:
        def pwrite(self, offset, data):
            site.write(offset, data)

    apply(Journaled(), sync.extents())
    assert hashlib.sha256(site.state()).digest() == source.digest()


@pytest.mark.parametrize("reason", [Reason.NEW_VRA, Reason.FILTER_RESTARTED, Reason.FORCED,
                                    Reason.REVERSE_PROTECTION, Reason.PRESEEDED])
def test_a_volume_the_vra_knows_nothing_of_gets_a_delta_sync_for_every_delta_reason(reason) -> None:
    s = VolumeSyncState("v")  # a restarted VRA: no memory of the volume's phase
    s.need(reason)
    assert s.phase is Phase.DELTA_SYNC and s.begin() is SyncKind.DELTA


@pytest.mark.parametrize("reason", [Reason.NEW_VOLUME, Reason.BUFFER_OVERFLOW, Reason.LINK_RESTORED])
def test_a_new_volume_or_a_bitmap_need_before_any_sync_is_an_initial_sync(reason) -> None:
    s = VolumeSyncState("v")
    s.need(reason)
    assert s.begin() is SyncKind.INITIAL


def test_a_replaced_role_keeps_the_sync_state_of_its_volumes() -> None:
    from vra_appliance.config import PeerVra, ProtectRole
    from vra_appliance.protect.syncs import VpgSyncs
    from vra_appliance.trust.auth import Security

    engine = SimpleNamespace(set_syncing=lambda syncing: None)  # all the runner calls here
    old = VpgSyncs(ProtectRole(VPG, ("v1", "v2"), (), PeerVra("r", "127.0.0.1:1")), engine, [], Security())
    old.runner.state.volumes["v1"] = VolumeSyncState("v1", Phase.STREAMING)
    old.need(Reason.NEW_VOLUME, ["v2"])
    new = VpgSyncs(ProtectRole(VPG, ("v1", "v2", "v3"), (), PeerVra("r", "127.0.0.1:1")), engine, [], Security(),
                   previous=old)
    try:
        phases = {v: s.phase for v, s in new.runner.state.volumes.items()}
        assert phases == {"v1": Phase.STREAMING, "v2": Phase.INITIAL_SYNC, "v3": Phase.NONE}
    finally:
        old.stop()
        new.stop()
