"""The sync state machine of a VPG's volumes: which sync runs, and whether a checkpoint now is consistent."""

from __future__ import annotations

import pytest

from vra_appliance.sync.state import Phase, Reason, SyncKind, SyncStateError, VolumeSyncState, VpgSyncState


def test_new_volume_initial_sync_then_streaming_then_consistent():
    s = VolumeSyncState("v")
    assert s.phase is Phase.NONE and not s.checkpoint_consistent
    s.need(Reason.NEW_VOLUME)
    assert s.begin() is SyncKind.INITIAL
    assert not s.checkpoint_consistent  # during the sync
    assert s.complete() is Phase.STREAMING
    assert s.checkpoint_consistent  # the first checkpoint after it


def test_preseeded_volume_starts_with_a_delta_sync():
    s = VolumeSyncState("v")
    s.need("pre-seeded")
    assert s.begin() is SyncKind.DELTA


@pytest.mark.parametrize("reason,kind", [
    (Reason.LINK_RESTORED, SyncKind.BITMAP), (Reason.BUFFER_OVERFLOW, SyncKind.BITMAP),
    (Reason.FILTER_RESTARTED, SyncKind.DELTA), (Reason.NEW_VRA, SyncKind.DELTA),
    (Reason.REVERSE_PROTECTION, SyncKind.DELTA), (Reason.FORCED, SyncKind.DELTA),
    (Reason.JOURNAL_CORRUPT, SyncKind.DELTA)])
def test_each_reason_leads_to_its_sync(reason, kind):
    s = VolumeSyncState("v", Phase.STREAMING)
    s.need(reason)
    assert not s.checkpoint_consistent
    assert s.begin() is kind


def test_a_filter_crash_during_a_bitmap_sync_escalates_to_delta():
    s = VolumeSyncState("v", Phase.STREAMING)
    s.need(Reason.LINK_RESTORED)
    s.begin()
    assert s.need(Reason.FILTER_RESTARTED) is True  # restart as the more thorough sync
    assert s.interrupt() is Phase.DELTA_SYNC
    assert s.begin() is SyncKind.DELTA
    assert s.complete() is Phase.STREAMING


def test_new_dirty_extents_during_a_bitmap_sync_need_another_one():
    s = VolumeSyncState("v", Phase.STREAMING)
    s.need(Reason.BUFFER_OVERFLOW)
    s.begin()
    assert s.need(Reason.BUFFER_OVERFLOW) is False
    assert s.complete() is Phase.BITMAP_SYNC
    assert not s.checkpoint_consistent
    s.begin()
    assert s.complete() is Phase.STREAMING and s.checkpoint_consistent


def test_an_interrupted_initial_sync_resumes_as_a_delta_sync():
    s = VolumeSyncState("v")
    s.need(Reason.NEW_VOLUME)
    s.begin()
    assert s.need(Reason.LINK_RESTORED) is False  # a bitmap need is less than the running full copy
    assert s.interrupt() is Phase.DELTA_SYNC
    assert s.begin() is SyncKind.DELTA


def test_calls_out_of_order_are_bugs():
    s = VolumeSyncState("v", Phase.STREAMING)
    with pytest.raises(SyncStateError):
        s.begin()
    with pytest.raises(SyncStateError):
        s.complete()
    with pytest.raises(SyncStateError):
        s.interrupt()


def test_vpg_is_consistent_only_when_every_volume_streams():
    vpg = VpgSyncState(["a", "b"])
    assert vpg.substatus == "InitialSync" and not vpg.checkpoint_consistent
    for v in ("a", "b"):
        vpg[v].need(Reason.NEW_VOLUME)
        vpg[v].begin()
    vpg["a"].complete()
    assert not vpg.checkpoint_consistent and vpg.substatus == "InitialSync"
    vpg["b"].complete()
    assert vpg.checkpoint_consistent and vpg.substatus is None
    vpg["b"].need(Reason.LINK_RESTORED)
    assert vpg.substatus == "BitmapSync" and not vpg.checkpoint_consistent
    vpg["a"].need(Reason.FORCED)
    assert vpg.substatus == "DeltaSync"
