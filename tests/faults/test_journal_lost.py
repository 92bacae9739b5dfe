"""The protect VRA finds out by itself that the recovery VRA lost records it had acknowledged, through real
processes (the harness of ``test_journal_discard``).

A discarded journal (DiscardJournal with force on a healthy VPG, and no ForceSync before it) comes back with
a new journal epoch in the Welcome: the protect VRA must start a delta sync of the VPG on its own (a bitmap
sync would leave out the acknowledged records that were never promoted), and no checkpoint may be consistent
until it ends. A recovery VRA killed and restarted with its journal intact keeps its epoch: no delta sync.
"""

from __future__ import annotations

import pytest

from tests.faults.test_journal_discard import VOL_F, VPG_F, TwoVpgSite, _resynced
from tests.replication.lab import sha256_file, wait_for
from vra_appliance.proto.v1 import control_pb2 as cpb


@pytest.fixture
def site(short_tmp):
    s = TwoVpgSite(short_tmp)
    yield s
    s.close()


def _lost(site: TwoVpgSite) -> float:
    return site.protect_status(VPG_F).counters.get("recovery_journal_lost", 0)


def _deltas(site: TwoVpgSite, since: int) -> list:
    return [r for r in list(site.protect_status(VPG_F).last_syncs)[since:] if r.kind == "DeltaSync"]


def test_forced_discard_of_a_healthy_journal_starts_a_delta_sync_by_itself(site: TwoVpgSite) -> None:
    site.write(VOL_F, 300)
    site.consistent_checkpoint(VPG_F)
    site.write(VOL_F, 200)
    site.consistent_checkpoint(VPG_F)
    assert _lost(site) == 0
    reports = len(site.protect_status(VPG_F).last_syncs)

    reply = site.r.control.DiscardJournal(cpb.DiscardJournalRequest(vpg=VPG_F, reason="test: admin", force=True))
    assert reply.ok, reply.message
    assert reply.state_before == "ok"
    site.write(VOL_F, 50)

    wait_for(lambda: _lost(site) >= 1, 120, "the protect VRA to see that the recovery journal was lost")
    wait_for(lambda: site.protect_status(VPG_F).substatus == "DeltaSync"
             or [r for r in _deltas(site, reports) if r.volume == VOL_F], 60,
             "the protect VRA to start a delta sync by itself")
    # what the discard took away comes back only through a delta sync; _resynced also checks that no
    # checkpoint before its end is consistent and that the image at the next consistent one is the source's
    _resynced(site, reports)
    assert _lost(site) == 1


def test_recovery_vra_killed_with_its_journal_intact_needs_no_delta_sync(site: TwoVpgSite) -> None:
    site.write(VOL_F, 300)
    site.consistent_checkpoint(VPG_F)
    reports = len(site.protect_status(VPG_F).last_syncs)
    reconnects = site.protect_status(VPG_F).counters.get("reconnects", 0)

    site.r.kill()
    site.write(VOL_F, 100)  # buffered while the recovery VRA is down
    site.r.restart()
    assert site.recover_status(VPG_F).state == "ok"
    wait_for(lambda: site.protect_status(VPG_F).counters.get("reconnects", 0) > reconnects, 120,
             "the protect VRA to reconnect to the restarted recovery VRA")
    site.write(VOL_F, 50)
    cp = site.consistent_checkpoint(VPG_F)

    assert _lost(site) == 0
    assert _deltas(site, reports) == [], "a restart with an intact journal started a delta sync"
    assert site.protect_status(VPG_F).substatus in ("", "BitmapSync")
    assert site.image_sha256(VPG_F, VOL_F, cp) == sha256_file(site.source[VOL_F])
