"""The ZVM's /metrics, from a real `zvm serve` (two gunicorn workers) over HTTP, parsed with
prometheus_client's own parser.

- On the API port /metrics needs a viewer: no credentials, wrong ones and a disabled user are refused
  (401); a session or HTTP Basic of a viewer is served.
- ``metrics_listen`` serves it without authentication on an address of its own.
- The per-VPG, per-VRA, task and alert figures are the ones the REST API answers at the same moment (the
  rows are written into the service's database by this test: the figures the monitor would set).
- The API latency histogram adds up the requests of both workers, labelled by route template.
"""

from __future__ import annotations

import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.replication.lab import free_port, wait_for
from tests.zvm.conftest import ADMIN_PASSWORD
from tests.zvm.procs import start_serve
from zvm import db as zdb
from zvm import enums
from zvm import models as m

VIEWER = ("watcher", "Watch3r-pass-1")


def parse(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.fixture(scope="module")
def zvm(tmp_path_factory):
    data = tmp_path_factory.mktemp("zvm-metrics")
    listen = f"127.0.0.1:{free_port()}"
    server = start_serve(data, "--workers", "2", "--peer-port", str(free_port()),
                         env={"ZVM_ADMIN_PASSWORD": ADMIN_PASSWORD, "ZVM_METRICS_LISTEN": listen})
    try:
        server.wait_for(r"Booting worker")
        session = requests.Session()
        wait_for(lambda: _login(session, server.url), 60, "the API to answer")
        resp = session.post(f"{server.url}/v1/users", json={"UserName": VIEWER[0], "Password": VIEWER[1],
                                                            "Role": "viewer"}, timeout=30)
        assert resp.status_code in (200, 201), resp.text
        seed(data)
        yield {"url": server.url, "api": session, "listener": f"http://{listen}/metrics", "data": data}
    finally:
        server.stop()


def _login(session: requests.Session, url: str) -> bool:
    try:
        resp = session.post(f"{url}/v1/session/add", auth=("admin", ADMIN_PASSWORD), timeout=10)
    except requests.ConnectionError:
        return False
    if resp.status_code != 200:
        return False
    session.headers["x-zerto-session"] = resp.headers["x-zerto-session"]
    return True


def seed(data) -> None:
    """Two VPGs, two VRAs, tasks and alerts, as the service's loops would have left them."""
    db = zdb.open_database(zdb.default_url(data))
    with db.bind_ctx(m.ALL_MODELS), db.atomic():
        site = m.Site.get(m.Site.is_local == True)  # noqa: E712 - peewee's SQL comparison
        m.Vpg.create(name="vpg-ok", protected_site=site, recovery_site=site, status="MeetingSLA", substatus="None",
                     rpo_threshold_seconds=300, actual_rpo_seconds=7, throughput_mb=1.5, iops=42,
                     journal_used_mb=12.25, history_seconds=1800, journal_history_hours=1)
        m.Vpg.create(name="vpg-syncing", protected_site=site, recovery_site=site, status="Initializing",
                     substatus="DeltaSync", actual_rpo_seconds=None, journal_history_hours=2)
        for i, state in enumerate(("Installing", "Error")):
            m.Vra.create(site=site, host_moid=f"host-{i}", host_name=f"esx-{i}", name=f"Z-VRA-esx-{i}", state=state,
                         datastore_moid="ds-1", network_moid="net-1")
        for kind, state in (("InstallVra", "Completed"), ("InstallVra", "Completed"), ("CreateVpg", "Failed")):
            m.Task.create(kind=kind, state=state)
        now = time.time()
        for code, level, cleared in (("VpgRpoOverThreshold", "Warning", None), ("VpgRpoOverThreshold", "Warning", None),
                                     ("VraUnreachable", "Error", None), ("VraUnreachable", "Error", now)):
            m.Alert.create(code=code, level=level, entity="Vpg", entity_id="x", description="seeded",
                           cleared_at=cleared)
    db.close()


def api_figures(api: requests.Session, url: str) -> dict:
    """What the REST API says, in the metrics' terms (enumerations: the API sends Zerto's numbers, the
    metrics' labels are the product's words). The one place that reads the API's raw shapes."""
    def get(path):
        resp = api.get(f"{url}/v1/{path}", timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()

    out: dict = {}
    for v in get("vpgs"):
        key = v["VpgIdentifier"]
        out[("rpo", key)] = v["ActualRPO"]
        out[("status", key)] = enums.VpgStatus(v["Status"]).internal
        out[("substatus", key)] = enums.VpgSubStatus(v["SubStatus"]).internal
        out[("throughput", key)] = v["ThroughputInMB"] * (1 << 20)
        out[("iops", key)] = v["IOPs"]
        out[("journal", key)] = v["JournalUsedStorageMb"] * (1 << 20)
        out[("history", key)] = v["HistoryStatusApi"]["ActualHistoryInMinutes"]
        out[("rpo_threshold", key)] = v["ConfiguredRpoSeconds"]
    for v in get("vras"):
        out[("vra", v["VraIdentifier"])] = (enums.VraStatus(v["State"]).internal, v["Reachable"])
    tasks: dict = {}
    for t in get("tasks?limit=10000"):
        key = (enums.TaskType(t["Type"]).internal, enums.TaskState(t["Status"]["State"]).internal)
        tasks[key] = tasks.get(key, 0) + 1
    out["tasks"] = tasks
    alerts: dict = {}
    for a in get("alerts?isActive=true&limit=10000"):
        key = (a["Code"], enums.AlertLevel(a["Level"]).internal)
        alerts[key] = alerts.get(key, 0) + 1
    out["alerts"] = alerts
    return out


def metric_figures(samples: dict) -> dict:
    out: dict = {}
    tasks: dict = {}
    alerts: dict = {}
    vras: dict = {}
    for (name, labels), value in samples.items():
        lab = dict(labels)
        vpg = lab.get("vpg")
        if name == "zvm_vpg_rpo_seconds":
            out[("rpo", vpg)] = value
        elif name == "zvm_vpg_status" and value == 1:
            out[("status", vpg)] = lab["zvm_vpg_status"]
        elif name == "zvm_vpg_substatus":
            out[("substatus", vpg)] = lab["substatus"]
        elif name == "zvm_vpg_throughput_bytes_per_second":
            out[("throughput", vpg)] = value
        elif name == "zvm_vpg_iops":
            out[("iops", vpg)] = value
        elif name == "zvm_vpg_journal_used_bytes":
            out[("journal", vpg)] = value
        elif name == "zvm_vpg_journal_history_seconds":
            out[("history", vpg)] = int(value) // 60
        elif name == "zvm_vpg_rpo_threshold_seconds":
            out[("rpo_threshold", vpg)] = value
        elif name == "zvm_vra_state" and value == 1:
            vras.setdefault(lab["vra"], {})["state"] = lab["zvm_vra_state"]
        elif name == "zvm_vra_reachable":
            vras.setdefault(lab["vra"], {})["reachable"] = value == 1
        elif name == "zvm_tasks":
            tasks[(lab["type"], lab["state"])] = value
        elif name == "zvm_alerts_active":
            key = (lab["type"], lab["severity"])
            alerts[key] = alerts.get(key, 0) + value
    for vra, v in vras.items():
        out[("vra", vra)] = (v["state"], v["reachable"])
    for vpg in [k[1] for k in out if k[0] == "status"]:
        out.setdefault(("rpo", vpg), None)  # an unknown RPO is an absent series
    out["tasks"], out["alerts"] = tasks, alerts
    return out


def test_the_figures_are_the_apis(zvm):
    api, url = zvm["api"], zvm["url"]

    def agreeing_snapshot():
        # The service's own loops may change a figure meanwhile: take the scrape between two API reads
        # that agree with each other.
        before = api_figures(api, url)
        resp = api.get(f"{url}/metrics", timeout=30)
        assert resp.status_code == 200, resp.text
        return (before, resp) if api_figures(api, url) == before else None

    before, resp = wait_for(agreeing_snapshot, 30, "two API reads that agree")
    assert resp.headers["Content-Type"].startswith("text/plain")
    got = metric_figures(parse(resp.text))
    assert got == before
    names = {got[k]: k[1] for k in got if isinstance(k, tuple) and k[0] == "status"}
    assert set(names) >= {"MeetingSLA", "Initializing"}
    ok = names["MeetingSLA"]
    assert (got[("rpo", ok)], got[("iops", ok)], got[("throughput", ok)]) == (7, 42, 1.5 * (1 << 20))
    assert got[("rpo", names["Initializing"])] is None
    assert got["tasks"][("InstallVra", "Completed")] >= 2 and got["tasks"][("CreateVpg", "Failed")] >= 1
    assert got["alerts"][("VpgRpoOverThreshold", "Warning")] >= 2


def test_the_api_port_needs_a_viewer(zvm):
    url = f"{zvm['url']}/metrics"
    refused = requests.get(url, timeout=30)
    assert refused.status_code == 401 and "basic_auth" in refused.json()["Message"]
    assert requests.get(url, auth=("admin", "not-the-password"), timeout=30).status_code == 401
    assert requests.get(url, headers={"x-zerto-session": "forged"}, timeout=30).status_code == 401
    viewer = requests.get(url, auth=VIEWER, timeout=30)
    assert viewer.status_code == 200 and "zvm_vpg_status" in viewer.text
    user = f"{zvm['url']}/v1/users/{VIEWER[0]}"
    resp = zvm["api"].put(user, json={"Enabled": False}, timeout=30)
    assert resp.status_code == 200, resp.text
    try:
        assert requests.get(url, auth=VIEWER, timeout=30).status_code == 401
    finally:
        zvm["api"].put(user, json={"Enabled": True}, timeout=30)
    refusals = zvm["api"].get(f"{zvm['url']}/v1/events", params={"eventType": "Login"}, timeout=30).json()
    assert any("metrics scrape" in e.get("Detail", e.get("detail", "")) for e in refusals)


def test_metrics_listen_serves_without_authentication(zvm):
    resp = requests.get(zvm["listener"], timeout=30)
    assert resp.status_code == 200
    assert "zvm_vpg_status" in resp.text and "zvm_api_request_duration_seconds" in resp.text


def test_the_latency_histogram_counts_the_requests_of_every_worker(zvm):
    api, url = zvm["api"], zvm["url"]

    def count() -> float:
        samples = parse(requests.get(zvm["listener"], timeout=30).text)
        return sum(v for (name, labels), v in samples.items() if name == "zvm_api_request_duration_seconds_count"
                   and dict(labels) == {"method": "GET", "route": "/v1/vpgs/<vpgIdentifier>", "status": "404"})

    start = count()
    for _ in range(20):  # new connections: gunicorn hands them to either worker
        assert requests.get(f"{url}/v1/vpgs/no-such-vpg", headers=api.headers, timeout=30).status_code == 404
    assert count() == start + 20
    pids = {p.name for p in (zvm["data"] / "metrics").iterdir()}
    assert len(pids) >= 2, pids  # both workers wrote figures


def test_a_metrics_listen_address_that_is_taken_is_logged_and_the_zvm_serves(zvm, tmp_path):
    taken = zvm["listener"].split("//")[1].split("/")[0]
    server = start_serve(tmp_path / "zvm", "--peer-port", str(free_port()),
                         env={"ZVM_ADMIN_PASSWORD": ADMIN_PASSWORD, "ZVM_METRICS_LISTEN": taken})
    try:
        server.wait_for(r"metrics_listen = .*: cannot listen there")
        session = requests.Session()
        assert wait_for(lambda: _login(session, server.url), 60, "the API to answer")
        assert session.get(f"{server.url}/metrics", timeout=30).status_code == 200
    finally:
        server.stop()
