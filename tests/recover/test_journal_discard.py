"""RecoverySide.discard_journal in process (the DiscardJournal RPC's core), over real file journals and replica
files: what it deletes and resets, what it refuses, and a discard a crash interrupted, finished when the role
is taken up again. The end-to-end path (real daemons, a corrupted segment, the delta sync after it) is in
tests/faults/test_journal_discard.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from vra_appliance.config import RecoverRole, ReplicaVolume
from vra_appliance.errors import UnknownVpgError
from vra_appliance.recover import CheckpointRecord, WriteRecord
from vra_appliance.recover.segments import vpg_dirname
from vra_appliance.recover.service.side import DISCARD_MARKER, DiscardRefused, RecoverySide

SIZE = 1 << 20


def _role(tmp: Path, vpg: str) -> RecoverRole:
    # vpg-f keeps no history: its records are promoted into the replica at once (promoted_seq moves)
    return RecoverRole(vpg, str(tmp / "journal"), (ReplicaVolume("vol-1", str(tmp / f"{vpg}.img"), SIZE),),
                       ("host-a",), history_s=0.0 if vpg == "vpg-f" else 3600.0)


def _fill(side: RecoverySide, vpg: str, n: int = 8) -> None:
    rvpg = side.get(vpg).rvpg
    now = time.time_ns()
    seq = rvpg.last_seq()
    records = [WriteRecord(vpg, seq + i + 1, now, "vol-1", i * 4096, bytes([i + 1]) * 4096) for i in range(n)]
    records.append(CheckpointRecord(vpg, seq + n + 1, now, f"cp-{seq + n + 1}", None, True))
    rvpg.append(records)


def _promotion(tmp: Path, vpg: str) -> dict:
    return json.loads((tmp / "state" / "recover" / vpg_dirname(vpg) / "promotion").read_text())


@pytest.fixture
def side(tmp_path):
    s = RecoverySide("recover-r", tmp_path / "state")
    for vpg in ("vpg-f", "vpg-g"):
        s.configure(_role(tmp_path, vpg))
        _fill(s, vpg)
    s.get("vpg-f").rvpg.promote_once()
    assert _promotion(tmp_path, "vpg-f")["promoted_seq"] == 9
    yield s
    s.stop()


def test_healthy_journal_is_refused_without_force_and_nothing_changes(side, tmp_path) -> None:
    before = side.get("vpg-f").rvpg.checkpoints()
    with pytest.raises(DiscardRefused, match="healthy.*force"):
        side.discard_journal("vpg-f", "test")
    assert side.get("vpg-f").rvpg.checkpoints() == before
    assert side.get("vpg-f").rvpg.last_seq() == 9
    assert not (tmp_path / "state" / "recover" / vpg_dirname("vpg-f") / DISCARD_MARKER).exists()


def test_unknown_vpg(side) -> None:
    with pytest.raises(UnknownVpgError):
        side.discard_journal("vpg-x", "test", force=True)


def test_forced_discard_empties_the_vpg_and_leaves_the_other_alone(side, tmp_path) -> None:
    g_before = side.get("vpg-g").rvpg.checkpoints()
    positions = tmp_path / "journal" / "streams" / f"{vpg_dirname('vpg-f')}.positions"
    assert positions.exists()
    result = side.discard_journal("vpg-f", "test", force=True)
    assert (result.state_before, result.records, result.checkpoints) == ("ok", 9, 1)
    rec = side.get("vpg-f")
    assert rec.rvpg.last_seq() == 0 and rec.rvpg.checkpoints() == []
    assert rec.receiver.positions.positions == {}
    assert _promotion(tmp_path, "vpg-f")["promoted_seq"] == 0 and _promotion(tmp_path, "vpg-f")["checkpoint"] is None
    _fill(side, "vpg-f", 2)  # takes records again from seq 1
    assert [c.seq for c in rec.rvpg.checkpoints()] == [3]
    assert side.get("vpg-g").rvpg.checkpoints() == g_before
    assert side.get("vpg-g").rvpg.last_seq() == 9


def test_a_discard_interrupted_after_the_journal_is_deleted_is_finished_on_restart(side, tmp_path) -> None:
    """A crash after step 3 (journal deleted) but before the positions log and the promotion state were reset
    and the marker removed: taking the role up again finishes the discard."""

    class Crash(Exception):
        pass

    def crash_after_journal(role, journal):
        journal.discard(role.vpg)
        raise Crash

    side._discard_files = crash_after_journal  # the crash point, injected through the seam
    with pytest.raises(Crash):
        side.discard_journal("vpg-f", "test", force=True)
    side.stop()
    marker = tmp_path / "state" / "recover" / vpg_dirname("vpg-f") / DISCARD_MARKER
    assert marker.exists()
    assert (tmp_path / "journal" / "streams" / f"{vpg_dirname('vpg-f')}.positions").exists()

    again = RecoverySide("recover-r", tmp_path / "state")
    try:
        for vpg in ("vpg-f", "vpg-g"):
            again.configure(_role(tmp_path, vpg))
        assert not marker.exists()
        rec = again.get("vpg-f")
        assert rec.rvpg.last_seq() == 0 and rec.receiver.positions.positions == {}
        assert _promotion(tmp_path, "vpg-f")["promoted_seq"] == 0
        assert again.get("vpg-g").rvpg.last_seq() == 9
        assert [c.checkpoint_id for c in again.get("vpg-g").rvpg.checkpoints()] == ["cp-9"]
    finally:
        again.stop()


def test_refused_while_a_recovery_session_holds_images(side) -> None:
    rvpg = side.get("vpg-g").rvpg
    image = rvpg.image("vol-1", "cp-9")  # what a failover test's session holds (vra_appliance/rpc/recovery_ops.py)
    try:
        with pytest.raises(DiscardRefused, match="recovery session"):
            side.discard_journal("vpg-g", "test", force=True)
        assert side.get("vpg-g").rvpg is rvpg and rvpg.last_seq() == 9
    finally:
        image.close()
    assert side.discard_journal("vpg-g", "test", force=True).records == 9
