"""The monitor's logic with VRAs that answer what the test says (tests/zvm/fakes.py FakeVraControl): the RPO
grows from the last checkpoint known durable whoever falls silent, and never goes back to 0; the reason is
in the substatus, the alert and the status-change event; syncs the VRA reports become events once each (also
those no pass saw running, and across a monitor restart); a recovery journal loss is an event; a locked
database delays a pass, never freezes the figures; the peer service answers from the last pass."""

from __future__ import annotations

import sqlite3
import threading
import time

from tests.monitoring.shapes import active_alerts, events, vpg_view
from tests.zvm.fakes import FakeVraControl
from tests.zvm.test_api import create_vpg
from zvm import models as m
from zvm.monitoring.monitor import Monitor
from zvm.vra_control import CheckpointEntry

THRESHOLD = 10


def setup(api) -> tuple[str, str, FakeVraControl, dict, dict]:
    vid = create_vpg(api, "web", ["vm-0"])
    m.Vpg.update(status="MeetingSLA", substatus="None", rpo_threshold_seconds=THRESHOLD).where(
        m.Vpg.identifier == vid).execute()
    api.post("/vras", {"HostIdentifier": "host-0", "DatastoreIdentifier": "datastore-1",
                       "NetworkIdentifier": "network-1"})
    m.Vra.update(state="Installed", control_address="10.0.0.5:4005").execute()
    vra = m.Vra.get().identifier
    control = FakeVraControl()
    protect = {"state": "ok", "substatus": "", "counters": {"bytes": 0.0, "writes": 0.0, "wire_bytes_sent": 0.0},
               "syncs": []}
    recover = {"state": "ok", "error": "", "counters": {"newest_consistent_checkpoint_s": 0.0, "journal_bytes": 0.0}}
    control.statuses[vra] = {vid: {"protect": protect, "recover": recover}}
    return vid, vra, control, protect, recover


def test_the_rpo_grows_from_the_last_durable_checkpoint_while_the_vra_is_silent(api):
    vid, vra, control, protect, recover = setup(api)
    monitor = Monitor(api.zvm, control=control)
    t0 = time.time()
    recover["counters"]["newest_consistent_checkpoint_s"] = t0 - 2
    monitor.run_once(now=t0)
    assert vpg_view(api, vid)["rpo"] == 2 and vpg_view(api, vid)["status"] == "MeetingSLA"

    answers = control.statuses.pop(vra)  # the VRA (protect and recovery here) stops answering
    monitor.run_once(now=t0 + 5)
    got = vpg_view(api, vid)
    assert (got["status"], got["substatus"], got["rpo"]) == ("MeetingSLA", "DisconnectedFromPeer", 7)
    monitor.run_once(now=t0 + 20)
    got = vpg_view(api, vid)
    assert (got["status"], got["rpo"]) == ("RpoNotMeetingSLA", 22)  # never back to 0 for lack of news
    alert = active_alerts(api, vid)["VpgRpoOverThreshold"]
    assert "does not answer" in alert and "22 s" in alert
    # a monitor restarted meanwhile starts from what the database knows; with no checkpoint there, from none
    control.statuses[vra] = answers
    recover["counters"]["newest_consistent_checkpoint_s"] = t0 + 19
    monitor.run_once(now=t0 + 21)
    got = vpg_view(api, vid)
    assert (got["status"], got["substatus"], got["rpo"]) == ("MeetingSLA", "None", 2)
    changes = [e["detail"] for e in events(api, vid, "VpgStatusChanged")]
    assert changes == ["MeetingSLA/DisconnectedFromPeer", "RpoNotMeetingSLA/DisconnectedFromPeer",
                       "MeetingSLA/None"], changes
    why = events(api, vid, "VpgStatusChanged")[0]["description"]
    assert "does not answer" in why


def test_a_stalled_stream_and_a_paused_vpg_grow_the_rpo_too(api):
    vid, vra, control, protect, recover = setup(api)
    monitor = Monitor(api.zvm, control=control)
    t0 = time.time()
    recover["counters"]["newest_consistent_checkpoint_s"] = t0
    monitor.run_once(now=t0)
    monitor.run_once(now=t0 + 16)  # everything answers, nothing new is durable
    got = vpg_view(api, vid)
    assert (got["status"], got["substatus"], got["rpo"]) == ("RpoNotMeetingSLA", "DisconnectedFromPeer", 16)
    assert "no new consistent checkpoint" in active_alerts(api, vid)["VpgRpoOverThreshold"]
    m.Vpg.update(paused=True, substatus="ReplicationPausedUserInitiated").where(m.Vpg.identifier == vid).execute()
    monitor.run_once(now=t0 + 30)
    got = vpg_view(api, vid)
    assert (got["status"], got["substatus"], got["rpo"]) == ("RpoNotMeetingSLA", "ReplicationPausedUserInitiated", 30)
    assert "paused" in active_alerts(api, vid)["VpgRpoOverThreshold"]


def test_syncs_become_events_once_even_when_no_pass_saw_them(api):
    vid, vra, control, protect, recover = setup(api)
    monitor = Monitor(api.zvm, control=control)
    t0 = time.time()
    recover["counters"]["newest_consistent_checkpoint_s"] = t0
    monitor.run_once(now=t0)
    # between two passes: a bitmap sync of 40 ms ran and ended; a delta sync started
    protect["syncs"] = [{"volume": "v1", "kind": "BitmapSync", "completed": True, "running": False, "bytes": 4096,
                         "error": "", "started_s": t0 + 0.2, "finished_s": t0 + 0.24},
                        {"volume": "v1", "kind": "DeltaSync", "completed": False, "running": True, "bytes": 0,
                         "error": "", "started_s": t0 + 0.5, "finished_s": None}]
    monitor.run_once(now=t0 + 1)
    got = events(api, vid, "VpgSync")
    assert [(e["detail"].split()[0], e["completed"] is not None) for e in got] == [
        ("BitmapSync", True), ("DeltaSync", False)]
    assert "0.04 s" in got[0]["description"]
    monitor.run_once(now=t0 + 2)
    Monitor(api.zvm, control=control).run_once(now=t0 + 3)  # a restarted ZVM reads the same reports
    assert len(events(api, vid, "VpgSync")) == 2


def test_a_recovery_journal_loss_is_one_event(api):
    vid, vra, control, protect, recover = setup(api)
    monitor = Monitor(api.zvm, control=control)
    t0 = time.time()
    monitor.run_once(now=t0)
    protect["counters"]["recovery_journal_lost"] = 1.0
    monitor.run_once(now=t0 + 1)
    monitor.run_once(now=t0 + 2)
    Monitor(api.zvm, control=control).run_once(now=t0 + 3)
    lost = events(api, vid, "RecoveryJournalLost")
    assert len(lost) == 1 and "lost records it had acknowledged" in lost[0]["description"]
    protect["counters"]["recovery_journal_lost"] = 2.0
    monitor.run_once(now=t0 + 4)
    assert len(events(api, vid, "RecoveryJournalLost")) == 2


def test_a_locked_database_delays_a_pass_and_the_next_figures_are_current(api):
    vid, vra, control, protect, recover = setup(api)
    monitor = Monitor(api.zvm, control=control)
    t0 = time.time()
    recover["counters"]["newest_consistent_checkpoint_s"] = t0 - 1
    monitor.run_once(now=t0)
    # "database is locked" after 0.2 s instead of 10 (this thread's connection, which the pass uses), and
    # another writer holding the lock for a second: the pass's transaction fails, is retried, and commits
    api.zvm.db.execute_sql("PRAGMA busy_timeout = 200")
    holder = sqlite3.connect(api.zvm.db.database, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(1.0, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        monitor.run_once(now=t0 + 3)
    finally:
        release.join()
        holder.close()
    assert vpg_view(api, vid)["rpo"] == 4


def test_the_peer_service_answers_from_the_last_pass(api):
    vid, vra, control, protect, recover = setup(api)
    monitor = Monitor(api.zvm, control=control)
    t0 = time.time()
    control.checkpoints[vid] = [CheckpointEntry("c1", t0 - 1, None, True)]
    recover["counters"]["newest_consistent_checkpoint_s"] = t0 - 1
    monitor.run_once()
    monitor.run_once()  # the journal's list did not change: not asked again, the answer keeps it
    seen = monitor.recover_report(vid)
    assert seen["Recover"] is recover and seen["Vra"] == vra
    assert [c["checkpoint_id"] for c in seen["Checkpoints"]] == ["c1"]
    assert monitor.recover_report(vid, max_age=0.0) is None  # too old: the peer service asks the VRA
    assert monitor.recover_report("other") is None


def test_the_recovery_site_shows_the_throughput_its_vra_receives(api):
    """A peer's VPG that this site recovers: no protect role here, its throughput and IOPS are what the
    recovery VRA received (not 0, as they were before)."""
    vid, vra, control, protect, recover = setup(api)
    m.Vpg.update(protected_site=m.Site.create(name="Site A")).where(m.Vpg.identifier == vid).execute()
    control.statuses[vra][vid].pop("protect")
    monitor = Monitor(api.zvm, control=control)
    t0 = time.time()
    recover["counters"].update(newest_consistent_checkpoint_s=t0 - 1, bytes=0.0, wire_bytes=0.0, records=0.0,
                               checkpoints=0.0)
    monitor.run_once(now=t0)
    recover["counters"].update(bytes=10.0 * (1 << 20), wire_bytes=4.0 * (1 << 20), records=2002.0, checkpoints=2.0)
    monitor.run_once(now=t0 + 2)
    got = vpg_view(api, vid)
    assert (got["throughput"], got["iops"]) == (5.0, 1000)
    control.statuses.pop(vra)  # the recovery VRA falls silent: nothing is known to move
    monitor.run_once(now=t0 + 3)
    assert (vpg_view(api, vid)["throughput"], vpg_view(api, vid)["iops"]) == (0.0, 0)


def test_a_status_written_while_a_pass_runs_is_not_overwritten_by_it(api):
    """A pause (or the peer's part of a recovery operation) writes the VPG's substatus after the pass read the
    row and before it writes its verdict: the pass's verdict was about the row as it was, so it must not replace
    the substatus (it did: the VPG showed "None" while paused, for good, since a paused VPG is left alone)."""
    vid, vra, control, protect, recover = setup(api)
    t0 = time.time()
    recover["counters"]["newest_consistent_checkpoint_s"] = t0
    db = api.zvm.db.database

    class PausedMeanwhile(FakeVraControl):
        def status(self, vra_id, timeout=None):
            answer = super().status(vra_id, timeout)
            with sqlite3.connect(db, isolation_level=None) as conn:  # another writer, as the pause task is
                conn.execute("UPDATE vpg SET paused = 1, substatus = 'ReplicationPausedUserInitiated' "
                             "WHERE identifier = ?", (vid,))
            return answer

    staged = PausedMeanwhile()
    staged.statuses = control.statuses
    m.Vpg.update(substatus="DisconnectedFromPeer").where(m.Vpg.identifier == vid).execute()  # the pass says None
    Monitor(api.zvm, control=staged).run_once(now=t0 + 1)
    got = vpg_view(api, vid)
    assert (got["status"], got["substatus"], got["rpo"]) == ("MeetingSLA", "ReplicationPausedUserInitiated", 1)
    Monitor(api.zvm, control=control).run_once(now=t0 + 2)  # the next pass judges the row as it is now
    assert vpg_view(api, vid)["substatus"] == "ReplicationPausedUserInitiated"


def test_a_sync_ends_while_the_journal_warns_of_its_size_or_history(api):
    """A journal past its warning threshold or with less history than configured still takes the stream (the
    journal and history alerts tell of it): a bitmap sync that ended shows as ended. A full journal does not."""
    vid, vra, control, protect, recover = setup(api)
    t0 = time.time()
    recover["counters"]["newest_consistent_checkpoint_s"] = t0
    monitor = Monitor(api.zvm, control=control)
    for i, (state, after) in enumerate([("journal-history_shrunk", "None"), ("journal-warning", "None"),
                                        ("journal-full", "BitmapSync")]):
        m.Vpg.update(substatus="BitmapSync").where(m.Vpg.identifier == vid).execute()
        recover["state"] = state
        monitor.run_once(now=t0 + i)
        assert vpg_view(api, vid)["substatus"] == after, state


def test_settings_applied_to_a_vpg_keep_the_status_written_since_it_was_read(api):
    """The peer's settings (zvm.orchestration.mirror.apply_doc) land on a row read before the monitor wrote the
    VPG's status and figures: they write what they set, not the whole row as it was read."""
    from zvm import db as zdb
    from zvm.orchestration.mirror import apply_doc, vpg_doc

    vid, *_ = setup(api)
    row = m.Vpg.get(m.Vpg.identifier == vid)
    m.Vpg.update(status="RpoNotMeetingSLA", substatus="DisconnectedFromPeer", actual_rpo_seconds=42).where(
        m.Vpg.identifier == vid).execute()  # the monitor, meanwhile
    with zdb.transaction():
        apply_doc(row, {**vpg_doc(row), "RpoInSeconds": 120})
    got = m.Vpg.get(m.Vpg.identifier == vid)
    assert (got.status, got.substatus, got.actual_rpo_seconds, got.rpo_threshold_seconds) == (
        "RpoNotMeetingSLA", "DisconnectedFromPeer", 42, 120)


def test_a_failed_recoverability_check_stays_alerted_across_passes(api):
    """The check raises VpgCheckpointVerifyFailed (zvm.orchestration.recoverability); the monitor's pass, which
    makes the active alerts equal what it wants, cleared it within a second because it did not want it."""
    from zvm import db as zdb
    from zvm.monitoring.alerts import VERIFIED_EVENT, VERIFY_FAILED, reconcile_alerts, verdict_alerts

    vid, vra, control, protect, recover = setup(api)
    t0 = time.time()
    recover["counters"]["newest_consistent_checkpoint_s"] = t0
    with zdb.transaction():
        m.Event.create(kind=VERIFIED_EVENT, category="Vpg", user="system", description="VPG web: FAILED",
                       entity_id=vid, result="Failed", started_at=t0, completed_at=t0)
        reconcile_alerts(verdict_alerts(), t0, scope={VERIFY_FAILED})
    monitor = Monitor(api.zvm, control=control)
    monitor.run_once(now=t0 + 1)
    monitor.run_once(now=t0 + 2)
    assert "FAILED" in active_alerts(api, vid)[VERIFY_FAILED]
    with zdb.transaction():  # a later check passes: the next pass clears it
        m.Event.create(kind=VERIFIED_EVENT, category="Vpg", user="system", description="VPG web: passed",
                       entity_id=vid, result="Succeeded", started_at=t0 + 3, completed_at=t0 + 3)
    monitor.run_once(now=t0 + 4)
    assert VERIFY_FAILED not in active_alerts(api, vid)
