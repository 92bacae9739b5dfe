"""Monitoring: alert rules (pure), and the loop that probes VRAs and peers, raises and clears alerts and sets
VPG status."""

from __future__ import annotations

import time

import pytest

from tests.zvm.fakes import FakeVraControl
from tests.zvm.test_api import create_vpg
from zvm import models as m
from zvm.enums import VpgStatus, VpgSubStatus
from zvm.monitoring.monitor import Monitor
from zvm.monitoring.rules import VpgFigures, unreachable_alert, vpg_alerts, vpg_status

DAY = 24 * 3600


def figs(**kw) -> VpgFigures:
    base = dict(identifier="v1", name="web", status="MeetingSLA", paused=False, rpo_threshold_s=300,
                actual_rpo_s=10, history_configured_s=DAY, history_actual_s=DAY, journal_used_mb=100.0,
                journal_warning_mb=0, journal_hard_limit_mb=0, age_s=2 * DAY)
    return VpgFigures(**{**base, **kw})


@pytest.mark.parametrize("kw,codes,status", [
    ({}, [], "MeetingSLA"),
    ({"actual_rpo_s": 301}, [("VpgRpoOverThreshold", "Warning")], "RpoNotMeetingSLA"),
    ({"actual_rpo_s": 601}, [("VpgRpoOverThreshold", "Error")], "RpoNotMeetingSLA"),
    ({"history_actual_s": int(0.84 * DAY)}, [("VpgHistoryBelow85", "Warning")], "HistoryNotMeetingSLA"),
    ({"history_actual_s": int(0.74 * DAY)}, [("VpgHistoryBelow75", "Error")], "HistoryNotMeetingSLA"),
    ({"history_actual_s": int(0.5 * DAY), "age_s": DAY / 2}, [], "MeetingSLA"),  # too young to judge
    ({"history_actual_s": 0, "actual_rpo_s": 900}, [("VpgRpoOverThreshold", "Error"),
                                                    ("VpgHistoryBelow75", "Error")], "NotMeetingSLA"),
    ({"journal_warning_mb": 80}, [("VpgJournalNearLimit", "Warning")], "MeetingSLA"),
    ({"journal_hard_limit_mb": 110}, [("VpgJournalNearLimit", "Warning")], "MeetingSLA"),
    ({"journal_hard_limit_mb": 100}, [("VpgJournalAtLimit", "Error")], "MeetingSLA"),
    ({"status": "Initializing", "actual_rpo_s": 9999}, [], "Initializing"),
    # paused: the RPO grows, and is judged (the alert says it is paused)
    ({"paused": True, "actual_rpo_s": 9999}, [("VpgRpoOverThreshold", "Error")], "RpoNotMeetingSLA"),
])
def test_vpg_alert_rules(kw, codes, status):
    f = figs(**kw)
    assert [(a.code, a.level) for a in vpg_alerts(f)] == codes
    assert vpg_status(f) == status


def test_unreachable_rule_has_a_grace_time():
    now = 1000.0
    assert unreachable_alert("Vra", "r", "Z-VRA-h", last_seen=now - 30, since=0, now=now) is None
    alert = unreachable_alert("Vra", "r", "Z-VRA-h", last_seen=now - 90, since=0, now=now)
    assert alert.code == "VraUnreachable" and "90 s" in alert.description
    assert unreachable_alert("Site", "s", "B", last_seen=None, since=now - 61, now=now).code == "PeerSiteUnreachable"


def test_monitor_raises_updates_and_clears_alerts_and_sets_status(api):
    vid = create_vpg(api, "web", ["vm-0"])
    vpg = m.Vpg.get(m.Vpg.identifier == vid)
    old = time.time() - 2 * DAY
    # configured history: 12 h (create_vpg); covered: 6 h
    m.Vpg.update(status="MeetingSLA", created_at=old, history_seconds=6 * 3600).where(m.Vpg.id == vpg.id).execute()
    api.post("/vras", {"HostIdentifier": "host-0", "DatastoreIdentifier": "datastore-1",
                       "NetworkIdentifier": "network-1"})
    m.Vra.update(state="Installed", created_at=old, control_address="10.0.0.5:4005").execute()
    vra = m.Vra.get().identifier
    control = FakeVraControl()
    monitor = Monitor(api.zvm, control=control)
    t0 = time.time()
    assert monitor.run_once(now=t0) == {"raised": 2, "updated": 0, "cleared": 0}  # history 50 %, VRA silent
    assert {a["Code"] for a in api.get("/alerts", query_string={"isActive": "true"}).json} == {
        "VpgHistoryBelow75", "VraUnreachable"}
    assert api.get(f"/vpgs/{vid}").json["Status"] == VpgStatus.HistoryNotMeetingSLA

    # RPO: the age of the newest consistent checkpoint durable in the recovery journal (420 s at t0 + 20)
    protect = {"state": "ok", "counters": {"rpo_ms": 0.0, "bytes": 0.0, "writes": 0.0}}
    recover = {"state": "ok", "counters": {"journal_bytes": float(5 << 20), "history_covered_s": 6 * 3600.0,
                                           "newest_consistent_checkpoint_s": t0 - 400}}
    control.statuses[vra] = {vid: {"protect": protect, "recover": recover}}
    assert monitor.run_once(now=t0 + 10) == {"raised": 1, "updated": 0, "cleared": 1}
    protect["counters"].update(bytes=float(20 << 20), writes=1500.0)
    monitor.run_once(now=t0 + 20)
    got = api.get(f"/vpgs/{vid}").json
    assert (got["Status"], got["ActualRPO"], got["IOPs"], got["ThroughputInMB"]) == (VpgStatus.NotMeetingSLA, 420, 150, 2.0)
    assert got["JournalUsedStorageMb"] == 5.0 and api.get("/vras").json[0]["Reachable"] is True

    recover["counters"]["newest_consistent_checkpoint_s"] = t0 + 25
    recover["counters"]["history_covered_s"] = 11 * 3600.0
    monitor.run_once(now=t0 + 30)
    assert api.get(f"/vpgs/{vid}").json["Status"] == VpgStatus.MeetingSLA
    assert api.get("/alerts", query_string={"isActive": "true"}).json == []
    history = api.get("/alerts").json
    assert all(not a["IsActive"] and a["ClearedAt"] for a in history) and len(history) == 3
    kinds = [e["EventKind"] for e in api.get("/events", query_string={"category": "Alert"}).json]
    assert kinds.count("AlertRaised") == 3 and kinds.count("AlertCleared") == 3


def test_a_new_vpg_meets_its_sla_once_roles_are_ok_and_the_journal_has_a_consistent_checkpoint(api):
    from zvm.vra_control import CheckpointEntry

    vid = create_vpg(api, "web", ["vm-0"])
    m.Vpg.update(substatus="InitialSync").where(m.Vpg.identifier == vid).execute()
    api.post("/vras", {"HostIdentifier": "host-0", "DatastoreIdentifier": "datastore-1",
                       "NetworkIdentifier": "network-1"})
    m.Vra.update(state="Installed", control_address="10.0.0.5:4005").execute()
    vra = m.Vra.get().identifier
    control = FakeVraControl()
    ok = {"state": "ok", "counters": {"rpo_ms": 900.0}}
    control.statuses[vra] = {vid: {"protect": ok, "recover": {"state": "ok", "counters": {}}}}
    monitor = Monitor(api.zvm, control=control)
    monitor.run_once()
    assert api.get(f"/vpgs/{vid}").json["Status"] == VpgStatus.Initializing  # no checkpoint yet
    t = time.time()
    control.checkpoints[vid] = [CheckpointEntry("c1", t - 6, None, False),
                                CheckpointEntry("c2", t - 1, "nightly", True)]
    monitor.run_once()
    got = api.get(f"/vpgs/{vid}").json
    assert (got["Status"], got["SubStatus"], got["ActualRPO"]) == (VpgStatus.MeetingSLA, VpgSubStatus.NONE, 1)
    cps = api.get(f"/vpgs/{vid}/checkpoints").json
    assert [(c["CheckpointIdentifier"], c["Tag"], c["IsConsistent"]) for c in cps] == [
        ("c2", "nightly", True), ("c1", None, False)]
    control.checkpoints[vid] = control.checkpoints[vid][1:]  # promoted out of the journal
    monitor.run_once()
    assert [c["CheckpointIdentifier"] for c in api.get(f"/vpgs/{vid}/checkpoints").json] == ["c2"]
    # the tag task stores its checkpoint while a pass holds a list read before it: the pass keeps it...
    m.Checkpoint.create(identifier="c3", vpg=m.Vpg.get(m.Vpg.identifier == vid), timestamp=t + 1, tag="mine")
    monitor.run_once()
    assert [c["CheckpointIdentifier"] for c in api.get(f"/vpgs/{vid}/checkpoints").json] == ["c3", "c2"]
    # ...and a list newer than it that leaves it out means it left the journal
    control.checkpoints[vid] = [control.checkpoints[vid][0], CheckpointEntry("c4", t + 2, None, True)]
    monitor.run_once()
    assert [c["CheckpointIdentifier"] for c in api.get(f"/vpgs/{vid}/checkpoints").json] == ["c4", "c2"]
    ok["needs_bitmap_sync"] = True
    monitor.run_once()
    assert api.get(f"/vpgs/{vid}").json["SubStatus"] == VpgSubStatus.BitmapSync


def test_monitor_marks_a_silent_peer_site(api):
    site = m.Site.create(name="Site B")
    peer = m.PeerSite.create(site=site, host_name="zvm-b", paired_at=time.time() - 600)
    monitor = Monitor(api.zvm, control=FakeVraControl(), peer_probe=lambda p: False)
    monitor.run_once()
    assert m.PeerSite.get_by_id(peer.id).state == "Unreachable"
    alert = api.get("/alerts", query_string={"code": "PeerSiteUnreachable"}).json[0]
    assert alert["EntityIdentifier"] == site.identifier and alert["IsActive"]
    monitor.peer_probe = lambda p: True
    monitor.run_once(now=time.time() + 5)  # the peer is asked every 5 s (the VRAs every second)
    assert m.PeerSite.get_by_id(peer.id).state == "Paired"
    assert api.get("/alerts", query_string={"code": "PeerSiteUnreachable", "isActive": "true"}).json == []
