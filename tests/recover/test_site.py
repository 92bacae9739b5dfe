"""RecoverySite: the daemon's entry point, routing batches to recovery VPGs over one shared journal."""

from __future__ import annotations

import pytest

from vra_appliance.recover import (
    FileJournal,
    JournalState,
    PermanentError,
    RecoverySite,
    ReplicaVolume,
    RetentionPolicy,
    UnknownVPGError,
)

from .conftest import checkpoint, digest, writes
from .helpers import Clock


def test_site_routes_batches_and_opens_images(tmp_path):
    journal = FileJournal(tmp_path / "journal")
    clock = Clock()
    site = RecoverySite(journal, tmp_path / "state", clock=clock)
    for name in ("vpg-a", "vpg-b"):
        volume = ReplicaVolume(tmp_path / f"{name}.img", 128 << 10)
        site.add_vpg(name, {"vol-1": volume}, RetentionPolicy(history_s=60, warning_bytes=1))
    assert site.add_vpg("vpg-a", {}, RetentionPolicy()) is site.vpg("vpg-a")
    batch_a = writes("vpg-a", 1, 3) + [checkpoint("vpg-a", 4)]
    assert site.append(batch_a) == 4
    assert site.append(writes("vpg-b", 1, 1)) == 1
    with pytest.raises(UnknownVPGError) as info:
        site.append(writes("vpg-x", 1, 1))
    assert isinstance(info.value, PermanentError)
    assert [c.checkpoint_id for c in site.checkpoints("vpg-a")] == ["cp-4"]
    image = site.image("vpg-a", "vol-1", "cp-4")
    expected = bytearray(128 << 10)
    for record in batch_a[:3]:
        expected[record.offset : record.offset + len(record.data)] = record.data
    assert digest(image.pread(0, image.size)) == digest(bytes(expected))
    image.close()
    statuses = {s.vpg: s for s in site.status()}
    assert statuses["vpg-a"].state is JournalState.WARNING and statuses["vpg-a"].last_seq == 4
    assert statuses["vpg-b"].newest_checkpoint is None
    site.start()
    site.stop()
    site.remove_vpg("vpg-b")
    assert site.vpgs() == ["vpg-a"]
    site.close()
    journal.close()
