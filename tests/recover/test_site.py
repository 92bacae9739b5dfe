"""RecoverySide: the daemon's one recovery aggregate, routing streams and batches to recovery VPGs over the
journals of their roles (it replaced recover/site.py's RecoverySite, which only this test used)."""

from __future__ import annotations

import pytest

from vra_appliance.config import RecoverRole, ReplicaVolume
from vra_appliance.recover.service.side import RecoverySide
from vra_appliance.stream.transport import UNKNOWN_VPG, Hello, Refused

from .conftest import checkpoint, digest, writes

SIZE = 128 << 10


def _role(tmp_path, name: str) -> RecoverRole:
    volume = ReplicaVolume("vol-1", str(tmp_path / f"{name}.img"), SIZE)
    return RecoverRole(name, str(tmp_path / "journal"), (volume,), ("host-a",), history_s=60, warning_bytes=1)


def test_side_routes_batches_and_opens_images(tmp_path):
    side = RecoverySide("recover-r", tmp_path / "state")
    for name in ("vpg-a", "vpg-b"):
        side.configure(_role(tmp_path, name))
    rvpg_a = side.get("vpg-a").rvpg
    side.configure(_role(tmp_path, "vpg-a"))  # the same role again: the same recovery VPG, retuned in place
    assert side.get("vpg-a").rvpg is rvpg_a
    assert side.get("vpg-a").rvpg.journal is side.get("vpg-b").rvpg.journal  # one journal per directory
    batch_a = writes("vpg-a", 1, 3) + [checkpoint("vpg-a", 4)]
    assert side.get("vpg-a").rvpg.append(batch_a) == 4
    assert side.get("vpg-b").rvpg.append(writes("vpg-b", 1, 1)) == 1
    assert side.endpoint.get("vpg-a") is side.get("vpg-a").receiver
    with pytest.raises(Refused) as info:
        side.endpoint.open_session(Hello("vpg-x", "host-a"), "host-a", lambda ack: None, lambda exc: None)
    assert info.value.reason == UNKNOWN_VPG and info.value.kind == "permanent"
    assert [c.checkpoint_id for c in side.checkpoints("vpg-a")] == ["cp-4"]
    image = side.get("vpg-a").rvpg.image("vol-1", "cp-4")
    expected = bytearray(SIZE)
    for record in batch_a[:3]:
        expected[record.offset : record.offset + len(record.data)] = record.data
    assert digest(image.pread(0, image.size)) == digest(bytes(expected))
    image.close()
    statuses = {s["vpg"]: s for s in side.status()}
    assert statuses["vpg-a"]["state"] == "journal-warning" and statuses["vpg-a"]["counters"]["last_seq"] == 4
    assert statuses["vpg-b"]["counters"]["checkpoints_listed"] == 0
    side.remove("vpg-b")
    assert side.get("vpg-b") is None and side.endpoint.get("vpg-b") is None
    assert [s["vpg"] for s in side.status()] == ["vpg-a"]
    side.stop()
