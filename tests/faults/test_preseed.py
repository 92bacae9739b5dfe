"""A pre-seeded recovery volume (restored from a backup, older than the source): protecting the VPG runs a
delta sync that sends only the blocks that changed since the backup, not the volume, measured both by the
sync's report and by the bytes that crossed the WAN emulator. Then a forced sync of the equal volume
(``Control.ForceSync``) sends no data."""

from __future__ import annotations

from tests.replication.lab import NbdClient, wait_for
from vra_appliance.iofilter.control import FilterControl
from vra_appliance.proto.v1 import control_pb2 as cpb

from .site import DATA, SIZE, VOL, VPG, FaultSite


def test_a_preseeded_volume_sends_only_the_differences(short_tmp) -> None:
    site = FaultSite(short_tmp, preseed=True)  # the replica is a copy of the source as it is now
    try:
        # The source moves on after the backup: scattered 4 KiB writes of random data through the filter.
        blocks = sorted(site.rng.sample(range(SIZE // 4096), 200))
        client = NbdClient(site.filter.nbd, VOL)
        try:
            for b in blocks:
                client.write(b * 4096, site.rng.randbytes(4096))
        finally:
            client.close()
        changed = len(blocks) * 4096
        # The VRA has no role for the volume yet: let it take every write off the split stream first, so
        # none is still queued when protection starts (it would then be streamed, not delta-synced).
        control = FilterControl(site.filter.control_path)
        try:
            wait_for(lambda: control.counters()["queue_bytes"] == 0, 30, "the split stream to drain")
        finally:
            control.close()
        before = site.wan.status()["directions"]["up"]["bytes"]
        site.protect()  # preseeded_volumes=[vol-1]
        site.wait_streaming()
        site.wait_drained()
        up = site.wan.status()["directions"]["up"]["bytes"] - before

        (delta,) = site.syncs("DeltaSync", completed=True)
        assert not site.syncs("InitialSync")
        assert delta.bytes == changed  # exactly the changed blocks
        # plus the checksums: a 16-byte digest per 64 KiB group, the 16 leaf digests of each changed group
        checksums = SIZE // (64 * 1024) * 16 + len(blocks) * 16 * 16
        assert changed < delta.wire_bytes < changed + checksums + 16 * 1024
        # Everything the protect VRA sent to the recovery VRA (the stream, checkpoints, checksum requests):
        # about the changed bytes (random data does not compress), far from the volume's data.
        assert changed <= up < changed + 256 * 1024, up
        assert up < DATA // 8
        site.final_equality()

        # A forced sync (the ZVM's forcesync, or reverse protection) of a volume already equal: a delta sync
        # that hashes both sides and sends nothing.
        reply = site.p.control.ForceSync(cpb.ForceSyncRequest(vpg=VPG, reason=cpb.SYNC_REASON_REVERSE_PROTECTION))
        assert reply.ok, reply.message
        wait_for(lambda: len(site.syncs("DeltaSync", completed=True)) == 2, 60, "the forced delta sync")
        forced = site.syncs("DeltaSync", completed=True)[-1]
        assert forced.bytes == 0 and 0 < forced.wire_bytes < 64 * 1024
        site.final_equality()
    finally:
        site.close()
