"""The protect engine tells a recovery VRA that lost what it had acknowledged (new journal epoch, or a durable
position below the acknowledged one) from one that restarted with its journal intact; and the receiver keeps
its epoch across restarts and makes a new one when the positions log is gone (DiscardJournal)."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from vra_appliance.protect.vpg import ProtectedVpg
from vra_appliance.recover.service.receiver import load_journal_epoch
from vra_appliance.stream.transport import Ack, Welcome


class Scripted:
    """A transport whose Welcomes are given by the test; every batch is acknowledged at once."""

    def __init__(self) -> None:
        self.welcome = Welcome(0, "r", journal_epoch="e1")

    def open(self, hello):
        return self.welcome

    def send(self, batch):
        fut: Future = Future()
        fut.set_result(Ack(batch.last_seq))
        return fut

    def close(self) -> None:
        pass


def _engine() -> tuple[ProtectedVpg, Scripted]:
    t = Scripted()
    e = ProtectedVpg("vpg-1", "protect-a", t, volumes={"vol-1"})
    e.sender._connect()
    e.sender.acked_seq = 40  # as if records up to 40 had been acknowledged
    e.sender._next_seq = 41
    return e, t


@pytest.mark.parametrize("welcome, lost", [
    (Welcome(40, "r", journal_epoch="e1"), False),  # restart, journal intact
    (Welcome(43, "r", journal_epoch="e1"), False),  # restart: stored but not yet acknowledged records kept
    (Welcome(40, "r", journal_epoch=""), False),  # an older recovery VRA: unknown epoch
    (Welcome(0, "r", journal_epoch="e2"), True),  # journal discarded
    (Welcome(40, "r", journal_epoch="e2"), True),  # new epoch, even at the same position
    (Welcome(7, "r", journal_epoch=""), True),  # an older recovery VRA below what it acknowledged
])
def test_welcome_after_reconnect(welcome: Welcome, lost: bool) -> None:
    e, t = _engine()
    t.welcome = welcome
    e.sender._connect()
    assert e.needs_delta_sync is lost
    assert e.not_consistent is lost
    assert e.status()["counters"]["recovery_journal_lost"] == int(lost)
    assert e.take_delta_need() is lost
    assert e.needs_delta_sync is False
    # taken: the VPG stays marked syncing until the runner's delta sync completes
    assert e.not_consistent is lost
    if lost:
        assert e.acked_seq == welcome.durable_seq


def test_receiver_epoch_kept_until_the_positions_are_deleted(tmp_path) -> None:
    positions = tmp_path / "vpg-1.positions"
    first = load_journal_epoch(positions)
    assert first and load_journal_epoch(positions) == first
    for p in tmp_path.glob("vpg-1.positions*"):  # what DiscardJournal deletes
        p.unlink()
    assert load_journal_epoch(positions) not in ("", first)
