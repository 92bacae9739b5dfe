"""The public Zerto REST API's shapes on one ZVM, as Zerto's clients send and read them: case-insensitive
paths and field names, enumerations as numbers with their lookup lists, bare task and settings ids, the
vpgSettings document read and put back, Zerto's action bodies and date formats, VRAs never protectable."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.zvm.fakes import ApiClient
from zvm import enums
from zvm import models as m
from zvm.enums import TaskState, TaskType, VpgPriority, VpgStatus, VpgSubStatus

REPO = Path(__file__).resolve().parents[2]


def _site(api) -> str:
    return api.get("/LocalSite").json["SiteIdentifier"]


def _new_vpg(api, name="web", vms=("vm-0", "vm-1")) -> str:
    """A VPG made the way Zerto's documentation shows: draft, read, fill in, put back, commit."""
    sid = api.post("/vpgSettings").json
    assert isinstance(sid, str)
    doc = api.get(f"/vpgsettings/{sid}").json
    doc["Basic"].update(Name=name, RecoverySiteIdentifier=_site(api), Priority=2)
    doc["Journal"]["Limitation"].update(HardLimitInMB=2048, WarningThresholdInMB=1024)
    doc["Recovery"].update(DefaultHostIdentifier="host-1", DefaultDatastoreIdentifier="datastore-2")
    doc["Networks"]["Failover"]["Hypervisor"]["DefaultNetworkIdentifier"] = "network-1"
    doc["Vms"] = [{"VmIdentifier": v} for v in vms]
    resp = api.put(f"/VPGSETTINGS/{sid}", doc)
    assert resp.status == 200, resp.json
    task = api.post(f"/vpgSettings/{sid}/Commit").json
    assert isinstance(task, str)
    api.run_tasks()
    return api.get("/vpgs", query_string={"name": name}).json[0]["VpgIdentifier"]


def test_the_plugin_decodes_with_the_same_tables():
    assert (REPO / "vsphere_plugin/src/enums.js").read_text() == enums.render_js()


def test_enumerations_parse_numbers_and_names_in_any_case():
    assert VpgStatus.parse(1) is VpgStatus.parse("meetingsla") is VpgStatus.parse("1") is VpgStatus.MeetingSLA
    assert VpgSubStatus.of("None") is VpgSubStatus.NONE and VpgSubStatus.NONE.internal == "None"
    assert TaskType.parse("CreateVpg") is TaskType.CreateProtectionGroup  # the product's word too
    assert TaskType.CreateProtectionGroup.internal == "CreateVpg"
    with pytest.raises(ValueError, match=r"0 \(Low\), 1 \(Medium\), 2 \(High\)"):
        VpgPriority.parse("urgent")
    # every word the product stores has a number (a missing one would fail the answer, not the caller)
    for word in ("Initializing", "MeetingSLA", "RpoNotMeetingSLA", "Paused", "Error", "Recovered"):
        VpgStatus.of(word)
    for word in ("Pending", "InProgress", "Completed", "Failed"):
        TaskState.of(word)
    from zvm.orchestration.tasks import HANDLERS

    for kind in HANDLERS:
        TaskType.of(kind)


def test_lookup_lists_are_the_names_in_number_order(api):
    assert api.get("/vpgs/statuses").json[:5] == ["Initializing", "MeetingSLA", "NotMeetingSLA",
                                                  "HistoryNotMeetingSLA", "RpoNotMeetingSLA"]
    assert api.get("/VPGs/Priorities").json == ["Low", "Medium", "High"]
    assert api.get("/tasks/types").json[TaskType.InsertTaggedCP] == "InsertTaggedCP"
    assert api.get("/tasks/states").json[6] == "Completed"
    assert api.get("/localsite/pairingstatuses").json[:3] == ["Paired", "Pairing", "Unpaired"]
    assert api.get("/vpgs/failovercommitpolicies").json == ["Rollback", "Commit", "NONE"]
    assert api.get("/vpgs/failovershutdownpolicies").json == ["NONE", "Shutdown", "ForceShutdown"]
    for path in enums.LOOKUPS:
        assert api.get(path).status == 200, path


def test_vpgs_answer_numbers_and_filter_by_number_or_name(api):
    vid = _new_vpg(api)
    vpg = api.get(f"/VPGS/{vid}").json
    assert (vpg["Status"], vpg["Priority"]) == (VpgStatus.Initializing, VpgPriority.High)
    assert type(vpg["Status"]) is int
    for status in ("0", "Initializing", "initializing"):
        assert [v["VpgIdentifier"] for v in api.get("/vpgs", query_string={"status": status}).json] == [vid]
    assert api.get("/vpgs", query_string={"status": 1}).json == []
    refused = api.get("/vpgs", query_string={"status": "Happy"})
    assert refused.status == 400 and "0 (Initializing), 1 (MeetingSLA)" in refused.json["Message"]
    task = api.get("/tasks", query_string={"type": TaskType.CreateProtectionGroup}).json[0]
    assert task["Type"] == TaskType.CreateProtectionGroup and task["Status"]["State"] in set(TaskState)


def test_field_names_are_case_insensitive_and_ids_bare(api):
    vid = _new_vpg(api)
    m.Vpg.update(status="MeetingSLA", substatus="None").execute()
    task = api.post(f"/vpgs/{vid}/Checkpoints", {"checkpointName": "nightly"})
    assert task.status == 202 and isinstance(task.json, str)
    assert api.get(f"/tasks/{task.json}").json["Type"] == TaskType.InsertTaggedCP
    twice = api.post(f"/vpgs/{vid}/checkpoints", {"checkpointName": "a", "CheckpointName": "b"})
    assert twice.status == 400 and twice.json["Field"] == "CheckpointName"


def test_a_settings_document_read_with_get_is_put_back_and_read_only_fields_hold(api):
    vid = _new_vpg(api)
    sid = api.post("/vpgSettings", {"vpgIdentifier": vid}).json
    doc = api.get(f"/vpgSettings/{sid}").json
    assert doc["Basic"]["ProtectedSiteIdentifier"] == _site(api) and doc["Basic"]["Priority"] == VpgPriority.High
    assert doc["Journal"]["Limitation"]["HardLimitInMB"] == 2048
    assert doc["Networks"]["Failover"]["Hypervisor"]["DefaultNetworkIdentifier"] == "network-1"
    assert doc["BootGroups"] == {"BootGroups": []}
    assert api.put(f"/vpgSettings/{sid}", doc).json == doc  # unchanged, read-only fields and all
    changed = api.put(f"/vpgSettings/{sid}", {**doc, "CreatedAt": "2020-01-01T00:00:00Z"})
    assert changed.status == 400 and changed.json["Field"] == "CreatedAt"
    other_site = api.put(f"/vpgSettings/{sid}", {**doc, "Basic": {**doc["Basic"], "ProtectedSiteIdentifier": "x"}})
    assert other_site.status == 400 and other_site.json["Field"] == "Basic.ProtectedSiteIdentifier"
    # a Zerto field this ZVM does not support is refused by name, never ignored
    scripted = {**doc, "Scripting": {"PreRecovery": {"Command": "/bin/true", "Parameters": None,
                                                     "TimeoutInSeconds": 300}}}
    refused = api.put(f"/vpgSettings/{sid}", scripted)
    assert refused.status == 400 and refused.json["Field"] == "Scripting.PreRecovery.Command"
    percent = api.put(f"/vpgSettings/{sid}/journal", {"Limitation": {"HardLimitInPercent": 10}})
    assert percent.status == 400 and percent.json["Field"] == "Journal.Limitation.HardLimitInPercent"
    # a change made in Zerto's form takes effect
    doc["Journal"]["Limitation"]["HardLimitInMB"] = 4096
    doc["Basic"]["priority"] = "low"
    del doc["Basic"]["Priority"]
    assert api.put(f"/vpgSettings/{sid}", doc).status == 200
    assert api.post(f"/vpgSettings/{sid}/commit").status == 202
    api.run_tasks()
    vpg = api.get(f"/vpgs/{vid}").json
    assert (vpg["JournalHardLimitInMB"], vpg["Priority"]) == (4096, VpgPriority.Low)


def test_action_bodies_take_zertos_fields(api):
    vid = _new_vpg(api)
    body = {"CheckpointIdentifier": None, "CommitPolicy": 1, "ShutdownPolicy": 2,
            "TimeToWaitBeforeShutdownInSec": 600, "ReverseProtection": False, "VmIdentifiers": ["vm-0"]}
    subset = api.post(f"/vpgs/{vid}/Failover", body)
    assert subset.status == 400 and subset.json["Field"] == "VmIdentifiers"
    unknown_vm = api.post(f"/vpgs/{vid}/FailoverTest", {"VmIdentifiers": ["vm-9"]})
    assert unknown_vm.status == 400 and unknown_vm.json["Field"] == "VmIdentifiers[0]"
    keep = api.post(f"/vpgs/{vid}/Move", {"KeepSourceVms": True})
    assert keep.status == 400 and keep.json["Field"] == "KeepSourceVms"
    bad_policy = api.post(f"/vpgs/{vid}/failover", {"ShutdownPolicy": 7})
    assert bad_policy.status == 400 and "0 (NONE), 1 (Shutdown), 2 (ForceShutdown)" in bad_policy.json["Message"]


@pytest.mark.parametrize("start", ["2020-12-05", "2020-12-05T06:49Z", "2020-12-05T06:49:10.5+01:00",
                                   "2020-12-05T06:49:10"])
def test_checkpoint_date_filters_take_the_forms_zertos_clients_send(api, start):
    vid = _new_vpg(api)
    vpg = m.Vpg.get(m.Vpg.identifier == vid)
    m.Checkpoint.create(vpg=vpg, tag="t", timestamp=1_900_000_000.0)  # 2030
    got = api.get(f"/vpgs/{vid}/checkpoints", query_string={"startDate": start, "endDate": "2030-03-17"})
    assert got.status == 200, got.json
    assert [c["Tag"] for c in got.json] == ["t"]
    assert api.get(f"/vpgs/{vid}/checkpoints", query_string={"endDate": "2030-03-16"}).json == []


def test_vras_are_neither_listed_nor_protectable(api):
    site = _site(api)
    vm = m.InvVm.get(m.InvVm.moid == "vm-2")
    vm.name = "Z-VRA-esx-1.lab"
    vm.save()
    listed = [v["VmIdentifier"] for v in api.get(f"/virtualizationsites/{site}/vms").json]
    assert "vm-2" not in listed and "vm-0" in listed
    sid = api.post("/vpgSettings").json
    doc = api.get(f"/vpgSettings/{sid}").json
    doc["Basic"].update(Name="vra", RecoverySiteIdentifier=site)
    doc["Recovery"].update(DefaultHostIdentifier="host-1", DefaultDatastoreIdentifier="datastore-2")
    doc["Vms"] = [{"VmIdentifier": "vm-0"}, {"VmIdentifier": "vm-2"}]
    assert api.put(f"/vpgSettings/{sid}", doc).status == 200
    refused = api.post(f"/vpgSettings/{sid}/commit")
    assert refused.status == 400 and refused.json["Field"] == "Vms[1].VmIdentifier"
    assert "Z-VRA-esx-1.lab" in refused.json["Message"] and "VRA" in refused.json["Message"]


def test_unknown_paths_stay_404_and_ids_keep_their_case(api):
    assert api.get("/vpgz").status == 404
    vid = _new_vpg(api)
    assert api.get(f"/vpgs/{vid.upper()}").status == (200 if vid == vid.upper() else 404)


def test_a_viewer_is_refused_a_forwarded_action_before_anything_is_sent(app):
    viewer = ApiClient.login(app)
    viewer.post("/users", {"UserName": "v", "Password": "Viewer-pass", "Role": "viewer"})
    v = ApiClient.login(app, "v", "Viewer-pass")
    assert v.post("/vpgs/x/FAILOVERTEST").status == 403
