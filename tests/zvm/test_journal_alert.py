"""Monitoring of a corrupt recovery journal: the RecoveryJournalCorrupt alert and the VPG's Error status,
cleared (the VPG starting over) once the journal is usable again, also by a monitor that started meanwhile.
The whole path through real VRAs and two ZVMs is tests/zvm/test_journal_corrupt.py."""

from __future__ import annotations

import time

from tests.zvm.fakes import FakeVraControl
from tests.zvm.test_api import create_vpg
from zvm import models as m
from zvm.enums import AlertLevel, VpgStatus, VpgSubStatus
from zvm.monitoring.monitor import Monitor
from zvm.monitoring.rules import journal_alert
from zvm.vra_control import CheckpointEntry


def test_journal_alert_rule():
    assert journal_alert("v1", "web", "ok", "") is None
    assert journal_alert("v1", "web", "journal-full", "") is None
    alert = journal_alert("v1", "web", "journal-corrupt", "checksum mismatch at seg:42")
    assert (alert.code, alert.level, alert.entity, alert.entity_id) == ("RecoveryJournalCorrupt", "Error", "Vpg", "v1")
    assert "checksum mismatch" in alert.description and "Force Sync the VPG" in alert.description
    assert "stopped taking writes" in journal_alert("v1", "web", "journal-error", "fsync failed").description


def test_corrupt_journal_raises_the_alert_and_error_status_until_usable_again(api):
    vid = create_vpg(api, "web", ["vm-0"])
    m.Vpg.update(status="MeetingSLA", substatus="None").where(m.Vpg.identifier == vid).execute()
    api.post("/vras", {"HostIdentifier": "host-0", "DatastoreIdentifier": "datastore-1",
                       "NetworkIdentifier": "network-1"})
    m.Vra.update(state="Installed", control_address="10.0.0.5:4005").execute()
    vra = m.Vra.get().identifier
    control = FakeVraControl()
    protect = {"state": "error", "counters": {"rpo_ms": 900.0}}
    recover = {"state": "journal-corrupt", "error": "journal of VPG is corrupt: resync", "counters": {}}
    control.statuses[vra] = {vid: {"protect": protect, "recover": recover}}
    monitor = Monitor(api.zvm, control=control)
    monitor.run_once()
    got = api.get(f"/vpgs/{vid}").json
    assert (got["Status"], got["SubStatus"]) == (VpgStatus.Error, VpgSubStatus.Error)
    alerts = api.get("/alerts", query_string={"isActive": "true"}).json
    assert [(a["Code"], a["Level"], a["EntityIdentifier"]) for a in alerts] == [("RecoveryJournalCorrupt", AlertLevel.Error, vid)]
    monitor.run_once()  # still corrupt: the same alert, not a second one
    assert len(api.get("/alerts", query_string={"code": "RecoveryJournalCorrupt"}).json) == 1

    # the journal was discarded elsewhere (not by this ZVM's Force Sync); a monitor started since sees it usable
    recover.update(state="ok", error="")
    protect["state"] = "ok"
    restarted = Monitor(api.zvm, control=control)
    restarted.run_once()
    got = api.get(f"/vpgs/{vid}").json
    assert (got["Status"], got["SubStatus"]) == (VpgStatus.Initializing, VpgSubStatus.DeltaSync)
    assert api.get("/alerts", query_string={"isActive": "true"}).json == []
    control.checkpoints[vid] = [CheckpointEntry("c1", time.time() - 1, None, True)]  # RPO: its age
    restarted.run_once()
    assert api.get(f"/vpgs/{vid}").json["Status"] == VpgStatus.MeetingSLA
