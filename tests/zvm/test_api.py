"""Contract tests of the REST API: sessions, errors, the vpgSettings workflow, VPG actions, VRAs, sites,
tasks, alerts and events; and that a refused request changes nothing."""

from __future__ import annotations

import time

import pytest

from tests.zvm.fakes import ApiClient, basic, db_snapshot
from zvm import models as m
from zvm.enums import TaskState, TaskType, VpgPriority, VpgStatus, VpgSubStatus, VraStatus


@pytest.fixture
def app(app_on_both_engines):
    """Every test of this module runs on SQLite and on PostgreSQL."""
    return app_on_both_engines

def local_site_id(api) -> str:
    return api.get("/localsite").json["SiteIdentifier"]


def draft_for(api, name: str, vms: list[str], **sections) -> str:
    sid = api.post("/vpgSettings").json
    site = local_site_id(api)
    basic_ = {"Name": name, "RecoverySiteIdentifier": site, "RpoInSeconds": 300, "JournalHistoryInHours": 12,
              "Priority": "High", "UseWanCompression": True}
    assert api.put(f"/vpgSettings/{sid}/basic", basic_).status == 200
    recovery = {"DefaultHostIdentifier": "host-1", "DefaultHostClusterIdentifier": None,
                "DefaultDatastoreIdentifier": "datastore-2", "DefaultFolderIdentifier": "group-v3"}
    assert api.put(f"/vpgSettings/{sid}/recovery", sections.get("recovery", recovery)).status == 200
    for vm in vms:
        assert api.post(f"/vpgSettings/{sid}/vms", {"VmIdentifier": vm}).status == 200
    return sid


def create_vpg(api, name: str, vms: list[str]) -> str:
    sid = draft_for(api, name, vms)
    resp = api.post(f"/vpgSettings/{sid}/commit")
    assert resp.status == 202, resp
    return api.get("/vpgs", query_string={"name": name}).json[0]["VpgIdentifier"]


# --- sessions ---------------------------------------------------------------------------------------------

def test_login_returns_a_session_token_in_the_header(app):
    client = app.test_client()
    resp = client.post("/v1/session/add", headers=basic("admin", "Adm1n-pass"))
    assert resp.status_code == 200
    token = resp.headers["x-zerto-session"]
    assert resp.json["User"] == "admin" and resp.json["IdleTimeoutInSeconds"] == 1800
    assert client.get("/v1/vpgs", headers={"x-zerto-session": token}).status_code == 200
    # the token is not stored in clear
    assert not m.Session.select().where(m.Session.token_hash == token).exists()


@pytest.mark.parametrize("headers", [{}, basic("admin", "wrong"), basic("nobody", "Adm1n-pass"),
                                     {"Authorization": "Bearer x"}])
def test_login_with_wrong_credentials_is_refused_and_audited(app, headers):
    resp = app.test_client().post("/v1/session/add", headers=headers)
    assert resp.status_code == 401
    assert resp.json["Code"] == "AuthenticationFailed" and "log in" in resp.json["Message"]
    assert m.Session.select().count() == 0
    event = m.Event.select().order_by(m.Event.id.desc()).first()
    assert (event.kind, event.result) == ("Login", "Refused")


def test_every_call_but_login_needs_a_session(app):
    doc = ApiClient.login(app).get("/openapi.json").json
    client = app.test_client()
    checked = 0
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            concrete = path.replace("{", "").replace("}", "")
            for token in (None, "not-a-session"):
                headers = {"x-zerto-session": token} if token else {}
                resp = client.open(concrete, method=method.upper(), headers=headers, json={})
                if op["operationId"] == "login":
                    assert resp.status_code == 401  # no Basic credentials
                    continue
                assert resp.status_code == 401, (method, path, resp.json)
                assert resp.json["Code"] == "SessionRequired"
                checked += 1
    assert checked > 80


def test_an_idle_session_expires_and_logout_ends_it(api):
    assert api.get("/session").status == 200
    m.Session.update(last_used=time.time() - 1801).execute()
    resp = api.get("/vpgs")
    assert resp.status == 401 and "expired" in resp.json["Message"]
    fresh = ApiClient.login(api.app)
    assert fresh.delete("/session").status == 204
    assert fresh.get("/vpgs").status == 401


def test_sessions_in_use_are_refreshed_not_rewritten_on_every_call(api):
    m.Session.update(last_used=time.time() - 100).execute()
    assert api.get("/vpgs").status == 200
    assert time.time() - m.Session.get().last_used < 5
    before = m.Session.get().last_used
    assert api.get("/vpgs").status == 200
    assert m.Session.get().last_used == before


# --- errors and the OpenAPI document ---------------------------------------------------------------------

def test_openapi_document_lists_exactly_the_served_routes(api):
    doc = api.get("/openapi.json").json
    assert doc["openapi"].startswith("3.0")
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for rule in api.app.url_map.iter_rules():
        if not rule.rule.startswith("/v1/"):
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        served |= {(method, path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == served
    ops = [op for methods in doc["paths"].values() for op in methods.values()]
    assert len({op["operationId"] for op in ops}) == len(ops)
    for op in ops:
        assert "400" in op["responses"] and op["summary"]


def test_errors_are_json_with_a_stable_code_and_what_to_fix(api):
    resp = api.get("/vpgs/no-such-vpg")
    assert resp.status == 404 and resp.json["Code"] == "VpgNotFound" and "GET /v1/vpgs" in resp.json["Message"]
    resp = api.get("/no/such/path")
    assert resp.status == 404 and resp.json["Code"] == "NotFound"
    resp = api.call("PATCH", "/vpgs")
    assert resp.status == 405 and resp.json["Code"] == "MethodNotAllowed" and "GET" in resp.headers["Allow"]
    resp = api.post("/vpgSettings", data="{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400 and resp.json["Field"] == "body"
    resp = api.post("/vras", data="HostIdentifier=x", headers={"Content-Type": "text/plain"})
    assert resp.status == 415 and resp.json["Code"] == "UnsupportedMediaType"
    resp = api.get("/tasks", query_string={"limit": "many"})
    assert resp.status == 400 and resp.json["Field"] == "limit" and "integer" in resp.json["Message"]
    resp = api.get("/events", query_string={"startDate": "yesterday"})
    assert resp.status == 400 and "2024-05-01T12:00:00Z" in resp.json["Message"]


# --- sites and inventory ----------------------------------------------------------------------------------

def test_local_site_and_its_inventory(api):
    site = api.get("/localsite").json
    assert site["SiteName"] == "Site zvm" and site["VCenterUuid"] == "fake-vc-uuid"
    assert site["InventoryLoadedAt"] is not None
    sites = api.get("/virtualizationsites").json
    assert [s["SiteIdentifier"] for s in sites] == [site["SiteIdentifier"]] and sites[0]["IsLocal"]
    sid = site["SiteIdentifier"]
    hosts = api.get(f"/virtualizationsites/{sid}/hosts").json
    assert [h["VirtualizationHostName"] for h in hosts] == ["esx0.lab", "esx1.lab", "esx2.lab"]
    assert hosts[0]["DatastoreIdentifiers"] == ["datastore-1", "datastore-2"]
    assert len(api.get(f"/virtualizationsites/{sid}/datastores").json) == 2
    assert len(api.get(f"/virtualizationsites/{sid}/networks").json) == 2
    assert api.get(f"/virtualizationsites/{sid}/hostclusters").json == [
        {"ClusterIdentifier": "domain-c7", "VirtualizationClusterName": "Cluster0"}]
    folders = {f["Path"]: f["FolderIdentifier"] for f in api.get(f"/virtualizationsites/{sid}/folders").json}
    finance = api.get(f"/virtualizationsites/{sid}/vms", query_string={"folderIdentifier": folders["/DC0/vm/Finance"]})
    assert [v["VmName"] for v in finance.json] == ["vm0", "vm1"]
    assert finance.json[1]["ProvisionedStorageInBytes"] == 3 << 30 and finance.json[1]["VpgIdentifier"] is None
    assert api.get("/virtualizationsites/nope/hosts").json["Code"] == "SiteNotFound"


def test_inventory_resync_follows_vcenter(api, fake_vcenter):
    sid = local_site_id(api)
    del fake_vcenter.inv.vms["vm-5"]
    fake_vcenter.inv.vms["vm-0"].name = "renamed"
    api.zvm.inventory.sync_once()
    names = [v["VmName"] for v in api.get(f"/virtualizationsites/{sid}/vms").json]
    assert "vm5" not in names and "renamed" in names


# --- vpgSettings and VPGs ---------------------------------------------------------------------------------

def test_vpg_settings_workflow_creates_a_vpg(api):
    sid = draft_for(api, "web", ["vm-0", "vm-1"])
    assert api.put(f"/vpgSettings/{sid}/bootgroups", [{"Name": "db", "BootDelayInSeconds": 30}]).status == 200
    assert api.put(f"/vpgSettings/{sid}/journal", {"HardLimitInMB": 2048, "WarningThresholdInMB": 1024,
                                                   "DatastoreIdentifier": "datastore-2"}).status == 200
    assert api.put(f"/vpgSettings/{sid}/networks", {"FailoverNetworkIdentifier": "network-1",
                                                    "FailoverTestNetworkIdentifier": "dvportgroup-1"}).status == 200
    draft = api.get(f"/vpgSettings/{sid}").json
    assert draft["VpgIdentifier"] is None and draft["CreatedBy"] == "admin"
    assert [v["VmIdentifier"] for v in draft["Vms"]] == ["vm-0", "vm-1"]
    task = api.post(f"/vpgSettings/{sid}/commit").json
    assert api.get(f"/vpgSettings/{sid}").status == 404  # the draft is used up

    vpg = api.get("/vpgs").json[0]
    assert (vpg["VpgName"], vpg["Status"], vpg["Priority"], vpg["VmsCount"]) == ("web", VpgStatus.Initializing, VpgPriority.High, 2)
    assert vpg["ProvisionedStorageInMB"] == 1024 + 3072
    assert vpg["JournalHardLimitInMB"] == 2048 and vpg["HistoryStatusApi"]["ConfiguredHistoryInMinutes"] == 720
    assert api.get(f"/vpgs/{vpg['VpgIdentifier']}").json == vpg
    t = api.get(f"/tasks/{task}").json
    assert t["Type"] == TaskType.CreateProtectionGroup and t["RelatedEntities"]["Vpgs"] == [vpg["VpgIdentifier"]]
    assert t["InitiatedBy"] == "admin" and t["Status"]["State"] == TaskState.Pending

    vms = api.get("/vms").json
    assert [(v["VmName"], v["VpgName"]) for v in vms] == [("vm0", "web"), ("vm1", "web")]
    assert [len(v["Volumes"]) for v in vms] == [1, 2]
    assert api.get("/vms/vm-1").json["ProvisionedStorageInMB"] == 3072
    assert api.get("/vms/vm-5").json["Code"] == "VmNotFound"
    ev = api.get("/events", query_string={"eventType": "CreateVpg"}).json[0]
    assert (ev["User"], ev["Result"], ev["EntityIdentifier"], ev["TaskIdentifier"]) == (
        "admin", "InProgress", vpg["VpgIdentifier"], task)


def test_vpgs_filter(api):
    a = create_vpg(api, "a", ["vm-0"])
    create_vpg(api, "b", ["vm-1"])
    assert [v["VpgName"] for v in api.get("/vpgs").json] == ["a", "b"]
    assert [v["VpgIdentifier"] for v in api.get("/vpgs", query_string={"name": "a"}).json] == [a]
    assert api.get("/vpgs", query_string={"status": "MeetingSLA"}).json == []
    assert len(api.get("/vpgs", query_string={"recoverySiteIdentifier": local_site_id(api)}).json) == 2
    assert api.get("/vpgs", query_string={"recoverySiteIdentifier": "elsewhere"}).json == []
    assert api.get("/vpgs", query_string={"priority": "Urgent"}).status == 400
    assert [v["VmName"] for v in api.get("/vms", query_string={"vpgIdentifier": a}).json] == ["vm0"]


@pytest.mark.parametrize("section,body,field", [
    ("basic", {"Name": "web", "RecoverySiteIdentifier": "elsewhere", "RpoInSeconds": 300,
               "JournalHistoryInHours": 1, "Priority": "Low", "UseWanCompression": False},
     "Basic.RecoverySiteIdentifier"),
    ("recovery", {"DefaultHostIdentifier": "host-99", "DefaultHostClusterIdentifier": None,
                  "DefaultDatastoreIdentifier": "datastore-1", "DefaultFolderIdentifier": None},
     "Recovery.DefaultHostIdentifier"),
    ("recovery", {"DefaultHostIdentifier": "host-0", "DefaultHostClusterIdentifier": None,
                  "DefaultDatastoreIdentifier": None, "DefaultFolderIdentifier": None},
     "Recovery.DefaultDatastoreIdentifier"),
    ("journal", {"HardLimitInMB": 100, "WarningThresholdInMB": 200, "DatastoreIdentifier": None},
     "Journal.WarningThresholdInMB"),
    ("networks", {"FailoverNetworkIdentifier": "nope", "FailoverTestNetworkIdentifier": None},
     "Networks.FailoverNetworkIdentifier"),
])
def test_a_refused_commit_names_the_field_changes_nothing_and_keeps_the_draft(api, section, body, field):
    create_vpg(api, "other", ["vm-3"])
    sid = draft_for(api, "web", ["vm-0"])
    if section == "basic" and body["RecoverySiteIdentifier"] != "elsewhere":
        body["RecoverySiteIdentifier"] = local_site_id(api)
    assert api.put(f"/vpgSettings/{sid}/{section}", body).status == 200
    before = db_snapshot()
    resp = api.post(f"/vpgSettings/{sid}/commit")
    assert resp.status == 400 and resp.json["Field"] == field, resp
    assert db_snapshot() == before
    assert api.get(f"/vpgSettings/{sid}").status == 200
    ev = api.get("/events", query_string={"eventType": "CommitVpgSettings"}).json[0]
    assert ev["Result"] == "Refused" and field in ev["Detail"]


def test_a_vm_cannot_join_two_vpgs_or_an_unknown_vm(api):
    create_vpg(api, "first", ["vm-0"])
    sid = draft_for(api, "second", ["vm-0"])
    resp = api.post(f"/vpgSettings/{sid}/commit")
    assert resp.status == 400 and "protected by VPG first" in resp.json["Message"]
    assert api.post(f"/vpgSettings/{sid}/vms", {"VmIdentifier": "vm-0"}).status == 409
    assert api.delete(f"/vpgSettings/{sid}/vms/vm-0").json == []
    assert api.delete(f"/vpgSettings/{sid}/vms/vm-0").status == 404
    api.post(f"/vpgSettings/{sid}/vms", {"VmIdentifier": "vm-77"})
    resp = api.post(f"/vpgSettings/{sid}/commit")
    assert resp.status == 400 and resp.json["Field"] == "Vms[0].VmIdentifier"
    assert [v["VpgName"] for v in api.get("/vpgs").json] == ["first"]


def test_editing_a_vpg_adds_and_removes_vms(api):
    vpg = create_vpg(api, "web", ["vm-0", "vm-1"])
    sid = api.post("/vpgSettings", {"VpgIdentifier": vpg}).json
    draft = api.get(f"/vpgSettings/{sid}").json
    assert draft["VpgIdentifier"] == vpg and draft["Basic"]["Name"] == "web"
    api.delete(f"/vpgSettings/{sid}/vms/vm-0")
    api.post(f"/vpgSettings/{sid}/vms", {"VmIdentifier": "vm-4"})
    basic_ = {**draft["Basic"], "RpoInSeconds": 120}
    api.put(f"/vpgSettings/{sid}/basic", basic_)
    task = api.post(f"/vpgSettings/{sid}/commit").json
    assert api.get(f"/tasks/{task}").json["Type"] == TaskType.UpdateProtectionGroup
    got = api.get(f"/vpgs/{vpg}").json
    assert got["ConfiguredRpoSeconds"] == 120 and got["VmsCount"] == 2
    assert sorted(v["VmIdentifier"] for v in api.get("/vms").json) == ["vm-1", "vm-4"]
    assert m.VpgVolume.select().count() == 3  # vm-1: 2 disks, vm-4: 1; vm-0's are gone


def test_put_whole_settings_and_discard_a_draft(api):
    sid = draft_for(api, "web", ["vm-0"])
    doc = api.get(f"/vpgSettings/{sid}").json
    body = {k: doc[k] for k in ("Basic", "Journal", "Recovery", "Networks", "BootGroups", "Vms")}
    body["BootGroups"] = [{"Name": "first", "BootDelayInSeconds": 0}]
    body["Vms"][0]["BootGroupName"] = "first"
    assert api.put(f"/vpgSettings/{sid}", body).json["Vms"] == [
        {"VmIdentifier": "vm-0", "BootGroupName": "first", "Nics": [], "BootGroupIdentifier": "first", "Recovery": None,
         "Journal": None, "Volumes": None}]
    assert api.put(f"/vpgSettings/{sid}", {**body, "Extra": 1}).json["Field"] == "Extra"
    assert len(api.get("/vpgSettings").json) == 1
    assert api.delete(f"/vpgSettings/{sid}").status == 204
    assert api.get("/vpgSettings").json == []


def test_pause_resume_forcesync_follow_the_vpg_state(api):
    vpg = create_vpg(api, "web", ["vm-0"])
    assert api.post(f"/vpgs/{vpg}/resume").status == 409
    task = api.post(f"/vpgs/{vpg}/pause").json
    assert api.get(f"/tasks/{task}").json["Type"] == TaskType.PauseProtectionGroup
    got = api.get(f"/vpgs/{vpg}").json
    assert got["IsPaused"] and got["SubStatus"] == VpgSubStatus.ReplicationPausedUserInitiated
    before = db_snapshot()
    assert api.post(f"/vpgs/{vpg}/pause").status == 409
    assert api.post(f"/vpgs/{vpg}/forcesync").status == 409
    assert db_snapshot() == before
    assert api.post(f"/vpgs/{vpg}/resume").status == 202
    assert api.post(f"/vpgs/{vpg}/forcesync").status == 202
    assert api.get(f"/vpgs/{vpg}").json["SubStatus"] == VpgSubStatus.DeltaSync


def test_delete_vpg_is_a_task_that_removes_it(api):
    vpg = create_vpg(api, "web", ["vm-0"])
    resp = api.delete(f"/vpgs/{vpg}", {"KeepRecoveryVolumes": True})
    assert resp.status == 202
    assert api.get(f"/vpgs/{vpg}").json["Status"] == VpgStatus.Deleting
    assert api.delete(f"/vpgs/{vpg}").status == 409
    assert api.post("/vpgSettings", {"VpgIdentifier": vpg}).status == 409
    api.run_tasks()
    task = api.get(f"/tasks/{resp.json}").json
    assert task["Status"] == {"State": TaskState.Completed, "Progress": 100}
    assert api.get(f"/vpgs/{vpg}").status == 404 and api.get("/vms").json == []
    evs = api.get("/events", query_string={"eventType": "DeleteVpg"}).json
    assert [e["Result"] for e in evs] == ["Refused", "Succeeded"]
    assert evs[1]["TaskIdentifier"] == task["TaskIdentifier"] and evs[1]["Completed"] is not None


def test_checkpoints_are_listed_newest_first_and_filtered(api):
    vpg_id = create_vpg(api, "web", ["vm-0"])
    vpg = m.Vpg.get(m.Vpg.identifier == vpg_id)
    base = 1_700_000_000.0
    for i in range(5):
        m.Checkpoint.create(vpg=vpg, timestamp=base + 10 * i, tag="tagged" if i == 2 else None, consistent=i != 4)
    cps = api.get(f"/vpgs/{vpg_id}/checkpoints").json
    assert [c["TimeStamp"] for c in cps][:2] == ["2023-11-14T22:14:00.000Z", "2023-11-14T22:13:50.000Z"]
    assert [c["Tag"] for c in api.get(f"/vpgs/{vpg_id}/checkpoints", query_string={"taggedOnly": "true"}).json] == [
        "tagged"]
    assert len(api.get(f"/vpgs/{vpg_id}/checkpoints", query_string={"consistentOnly": "true"}).json) == 4
    window = api.get(f"/vpgs/{vpg_id}/checkpoints", query_string={
        "startDate": "2023-11-14T22:13:30Z", "endDate": "2023-11-14T23:13:40+01:00"}).json
    assert len(window) == 2
    assert api.post(f"/vpgs/{vpg_id}/checkpoints", {"CheckpointName": "before upgrade"}).status == 202


# --- VRAs -------------------------------------------------------------------------------------------------

def test_vra_install_is_checked_then_queued(api):
    good = {"HostIdentifier": "host-0", "DatastoreIdentifier": "datastore-1", "NetworkIdentifier": "network-1"}
    before = db_snapshot()
    for bad, field in [({**good, "HostIdentifier": "host-9"}, "HostIdentifier"),
                       ({**good, "DatastoreIdentifier": "datastore-9"}, "DatastoreIdentifier"),
                       ({**good, "NetworkIdentifier": "network-9"}, "NetworkIdentifier"),
                       ({**good, "VraNetworkDataApi": {"VraIPConfigurationTypeApi": "Static", "VraIPAddress": "10.0.0.300",
                                                       "SubnetMask": "255.255.255.0"}}, "VraNetworkDataApi.VraIPAddress"),
                       ({**good, "MemoryInGB": 0}, "MemoryInGB")]:
        resp = api.post("/vras", bad)
        assert resp.status == 400 and resp.json["Field"] == field, resp
    assert db_snapshot() == before
    static = {"VraIPConfigurationTypeApi": "Static", "VraIPAddress": "10.0.0.10", "SubnetMask": "255.255.255.0",
              "DefaultGateway": "10.0.0.1"}
    task = api.post("/vras", {**good, "VraNetworkDataApi": static}).json
    vra = api.get("/vras").json[0]
    assert (vra["VraName"], vra["State"], vra["HostName"]) == ("Z-VRA-esx0.lab", VraStatus.Installing, "esx0.lab")
    assert vra["VraNetworkDataApi"] == static
    assert api.get(f"/tasks/{task}").json["RelatedEntities"]["Vras"] == [vra["VraIdentifier"]]
    assert api.post("/vras", good).status == 409
    assert api.delete(f"/vras/{vra['VraIdentifier']}").status == 409  # still installing
    assert api.get("/vras", query_string={"state": "Installed"}).json == []


def test_a_vra_protecting_vms_cannot_be_uninstalled(api):
    api.post("/vras", {"HostIdentifier": "host-0", "DatastoreIdentifier": "datastore-1",
                       "NetworkIdentifier": "network-1"})
    vra = m.Vra.get()
    vra.state = "Installed"
    vra.save()
    create_vpg(api, "web", ["vm-0", "vm-3"])  # both on host-0
    assert api.get(f"/vras/{vra.identifier}").json["ProtectedVmsCount"] == 2
    resp = api.delete(f"/vras/{vra.identifier}")
    assert resp.status == 409 and "2 protected VM(s)" in resp.json["Message"]


# --- peer sites -------------------------------------------------------------------------------------------

def test_pairing_tokens_are_stored_hashed_and_pairing_is_a_task(api):
    resp = api.post("/peersites/generatetoken", {"ExpirationInMinutes": 5})
    token = resp.json["Token"]
    secret, pin = token.rsplit(".", 1)
    assert api.zvm.peer_pki().fingerprint().startswith(pin)  # the pairing site checks it on connect
    assert not m.PairingToken.select().where(m.PairingToken.token_hash == secret).exists()
    assert m.PairingToken.select().where(m.PairingToken.token_hash == m.token_hash(secret)).exists()
    task = api.post("/peersites", {"HostName": "zvm-b.lab", "Token": "their-token"}).json
    row = m.Task.get(m.Task.identifier == task)
    assert "their-token" not in str(row.params)  # the token is kept encrypted until the task uses it
    assert api.get("/peersites").json == []
    assert api.get("/peersites/nope").json["Code"] == "SiteNotFound"
    assert api.post("/peersites", {"HostName": "bad host!", "Token": "x"}).status == 400


# --- alerts and events ------------------------------------------------------------------------------------

def test_alerts_can_be_filtered_dismissed_and_undismissed(api):
    a = m.Alert.create(code="VpgRpoOverThreshold", level="Warning", entity="Vpg", entity_id="v1",
                       description="RPO 400 s is over the 300 s threshold")
    m.Alert.create(code="VraUnreachable", level="Error", entity="Vra", entity_id="r1", description="x",
                   cleared_at=time.time())
    assert [x["Code"] for x in api.get("/alerts", query_string={"isActive": "true"}).json] == ["VpgRpoOverThreshold"]
    assert [x["Code"] for x in api.get("/alerts", query_string={"level": "Error"}).json] == ["VraUnreachable"]
    assert api.post(f"/alerts/{a.identifier}/dismiss").json["IsDismissed"] is True
    assert api.post(f"/alerts/{a.identifier}/dismiss").status == 409
    assert len(api.get("/alerts", query_string={"isDismissed": "true"}).json) == 1
    assert api.post(f"/alerts/{a.identifier}/undismiss").json["IsDismissed"] is False
    assert api.get("/alerts/nope").json["Code"] == "AlertNotFound"


def test_events_record_who_did_what_and_how_it_ended(api):
    api.post("/vpgSettings")
    api.post("/vpgs/nope/pause")
    evs = api.get("/events", query_string={"user": "admin"}).json
    assert [(e["EventKind"], e["Result"]) for e in evs[:3]] == [
        ("PauseVpg", "Refused"), ("CreateVpgSettings", "Succeeded"), ("Login", "Succeeded")]
    assert "VpgNotFound" in evs[0]["Detail"] and evs[0]["EntityIdentifier"] == "nope"
    assert api.get(f"/events/{evs[0]['EventIdentifier']}").json == evs[0]
    assert api.get("/events", query_string={"result": "Refused", "limit": 1}).json == evs[:1]


def test_a_task_without_a_handler_fails_with_a_clear_message(api):
    task = api.post("/peersites", {"HostName": "zvm-b.lab", "Token": "t"}).json
    api.zvm.tasks.handlers = {}
    api.run_tasks()
    t = api.get(f"/tasks/{task}").json
    assert t["Status"]["State"] == TaskState.Failed and t["Error"]["Code"] == "NotImplemented"
    assert api.get("/tasks", query_string={"state": "Failed"}).json == [t]


# --- cached answers ----------------------------------------------------------------------------------------

def test_cached_answers_follow_every_change_even_those_made_outside_the_api(api):
    vpg = create_vpg(api, "web", ["vm-0"])
    assert api.get("/vpgs").json[0]["Status"] == VpgStatus.Initializing
    hits = api.zvm.response_cache.hits
    assert api.get("/vpgs").json[0]["Status"] == VpgStatus.Initializing
    assert api.zvm.response_cache.hits == hits + 1
    # a background loop (not the API) changes the VPG: the next answer shows it
    m.Vpg.update(status="MeetingSLA", actual_rpo_seconds=7).where(m.Vpg.identifier == vpg).execute()
    got = api.get("/vpgs").json[0]
    assert (got["Status"], got["ActualRPO"]) == (VpgStatus.MeetingSLA, 7)
    m.Checkpoint.create(vpg=m.Vpg.get(m.Vpg.identifier == vpg))
    assert len(api.get(f"/vpgs/{vpg}/checkpoints").json) == 1
    # the query string is part of the key
    assert api.get("/vpgs", query_string={"status": "Initializing"}).json == []


def test_large_answers_are_sent_gzipped_to_clients_that_accept_it(api):
    import gzip
    import json

    for i in range(6):
        create_vpg(api, f"vpg-{i}", [f"vm-{i}"])
    plain = api.client.get("/v1/events", headers={"x-zerto-session": api.token})
    packed = api.client.get("/v1/events", headers={"x-zerto-session": api.token, "Accept-Encoding": "gzip, deflate"})
    assert "Content-Encoding" not in plain.headers and len(plain.data) >= 8192
    assert packed.headers["Content-Encoding"] == "gzip" and packed.headers["Vary"] == "Accept-Encoding"
    assert json.loads(gzip.decompress(packed.data)) == plain.json and len(packed.data) < len(plain.data) / 4


def test_docs_api_md_lists_every_operation():
    from pathlib import Path

    from zvm import __version__
    from zvm.api import blueprints
    from zvm.api.spec import openapi_document

    text = (Path(__file__).resolve().parents[2] / "docs" / "API.md").read_text()
    doc = openapi_document(blueprints(), version=__version__)
    missing = [f"{method.upper()} {path}" for path, ops in doc["paths"].items() for method in ops
               if f"| {method.upper()} | `{path}` |" not in text]
    assert missing == [], "add these to docs/API.md"
