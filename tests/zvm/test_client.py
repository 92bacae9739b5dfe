"""zvm.client against the API (in-process through its HTTP seam), and the admin CLI against `zvm serve`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.zvm.conftest import ADMIN_PASSWORD
from tests.zvm.fakes import wsgi_client
from tests.zvm.procs import start_serve
from zvm import cli
from zvm import models as m
from zvm.client import TaskFailedError
from zvm.enums import TaskState, TaskType, VpgPriority
from zvm.errors import AuthenticationError, ConflictError, NotFoundError, SessionError, ValidationError


@pytest.fixture
def client(app):
    c = wsgi_client(app).login("admin", ADMIN_PASSWORD)
    yield c
    c.close()


def make_vpg(client, name="web", vms=("vm-0", "vm-1")) -> str:
    site = client.local_site()["SiteIdentifier"]
    return client.create_vpg(name, list(vms), recovery_site=site, recovery_host="host-1",
                             recovery_datastore="datastore-2", rpo_seconds=120, priority="High")


def test_login_errors_and_logout(app):
    c = wsgi_client(app)
    with pytest.raises(AuthenticationError) as err:
        c.login("admin", "nope")
    assert err.value.code == "AuthenticationFailed"
    with pytest.raises(SessionError):
        c.vpgs()
    c.login("admin", ADMIN_PASSWORD)
    assert c.session()["User"] == "admin"
    c.logout()
    with pytest.raises(SessionError):
        c.vpgs()


def test_protect_vms_of_a_folder_and_follow_the_task(client, app):
    site = client.local_site()["SiteIdentifier"]
    folder = next(f for f in client.folders(site) if f["Path"] == "/DC0/vm/Finance")
    vms = [v["VmIdentifier"] for v in client.vms(site, folder=folder["FolderIdentifier"])]
    assert vms == ["vm-0", "vm-1"]
    task = make_vpg(client, "finance", vms)
    vpg = client.vpg_by_name("finance")
    assert vpg["VmsCount"] == 2 and vpg["ConfiguredRpoSeconds"] == 120 and vpg["Priority"] == VpgPriority.High
    assert [v["VmName"] for v in client.protected_vms(vpg=vpg["VpgIdentifier"])] == ["vm0", "vm1"]
    assert client.task(task)["Type"] == TaskType.CreateProtectionGroup
    # delete it and wait for the task (run by the runner first: no sleeping in tests)
    delete = client.delete_vpg(vpg["VpgIdentifier"], keep_recovery_volumes=True)
    app.extensions["zvm"].tasks.run_once()
    seen = []
    done = client.wait_for_task(delete, on_progress=seen.append)
    assert done["Status"]["State"] == TaskState.Completed and seen[-1] == done
    with pytest.raises(NotFoundError) as err:
        client.vpg(vpg["VpgIdentifier"])
    assert err.value.code == "VpgNotFound"


def test_refusals_carry_code_and_field_and_a_refused_create_leaves_no_draft(client):
    site = client.local_site()["SiteIdentifier"]
    with pytest.raises(ValidationError) as err:
        client.create_vpg("web", ["vm-0"], recovery_site=site, recovery_host="host-404",
                          recovery_datastore="datastore-2")
    assert err.value.field == "Recovery.DefaultHostIdentifier" and "host-404" in str(err.value)
    assert m.VpgSettings.select().count() == 0
    vpg = client.vpg_by_name("web") if client.vpgs(name="web") else None
    assert vpg is None
    make_vpg(client)
    vid = client.vpg_by_name("web")["VpgIdentifier"]
    client.pause_vpg(vid)
    with pytest.raises(ConflictError):
        client.pause_vpg(vid)
    client.resume_vpg(vid)
    client.force_sync_vpg(vid)
    client.take_checkpoint(vid, "before patch")
    assert client.checkpoints(vid, start=datetime(2020, 1, 1, tzinfo=UTC), tagged_only=True) == []


def test_a_failed_task_raises_with_its_error(client, app):
    task = client.pair("zvm-b.lab", "token")
    app.extensions["zvm"].tasks.handlers = {}
    app.extensions["zvm"].tasks.run_once()
    with pytest.raises(TaskFailedError) as err:
        client.wait_for_task(task)
    assert err.value.code == "NotImplemented" and err.value.task["Type"] == TaskType.Pair


def test_every_resource_of_the_client(client):
    site = client.local_site()["SiteIdentifier"]
    assert [s["SiteIdentifier"] for s in client.virtualization_sites()] == [site]
    assert len(client.hosts(site)) == 3 and len(client.host_clusters(site)) == 1
    assert len(client.datastores(site)) == 2 and len(client.networks(site)) == 2
    assert client.vms(site, name="vm3")[0]["VmIdentifier"] == "vm-3"
    assert client.vms(site, host="host-0")[0]["HostIdentifier"] == "host-0"
    client.install_vra("host-2", "datastore-1", "network-1", ip_address="10.0.0.5", subnet_mask="255.255.255.0")
    vra = client.vras(host="host-2")[0]
    assert client.vra(vra["VraIdentifier"])["VraNetworkDataApi"]["VraIPAddress"] == "10.0.0.5"
    token = client.generate_pairing_token(10)
    assert token["Token"] and client.peer_sites() == []
    sid = client.create_vpg_settings()
    client.update_vpg_settings(sid, "basic", Name="db", RecoverySiteIdentifier=site)
    client.update_vpg_settings(sid, "recovery", DefaultHostIdentifier="host-0",
                               DefaultDatastoreIdentifier="datastore-1")
    client.set_boot_groups(sid, [{"Name": "first", "BootDelayInSeconds": 10}])
    client.add_vm_to_settings(sid, "vm-4", boot_group="first")
    client.add_vm_to_settings(sid, "vm-5")
    assert [v["VmIdentifier"] for v in client.remove_vm_from_settings(sid, "vm-5")] == ["vm-4"]
    client.commit_vpg_settings(sid)
    vpg = client.vpg_by_name("db")
    assert client.protected_vm("vm-4")["BootGroupName"] == "first"
    assert client.tasks(vpg=vpg["VpgIdentifier"])[0]["Type"] == TaskType.CreateProtectionGroup
    assert client.events(event_type="CreateVpg", limit=1)[0]["Result"] == "InProgress"
    a = m.Alert.create(code="VraUnreachable", level="Error", entity="Vra", entity_id="x", description="d")
    assert client.alerts(active=True)[0]["Code"] == "VraUnreachable"
    assert client.dismiss_alert(a.identifier)["IsDismissed"] and not client.undismiss_alert(a.identifier)["IsDismissed"]
    assert client.alert(a.identifier)["Code"] == "VraUnreachable"
    assert client.event(client.events(limit=1)[0]["EventIdentifier"])
    assert "/vpgs" in client.openapi()["paths"] or "/v1/vpgs" in client.openapi()["paths"]


def test_admin_cli_against_a_running_zvm(make_app, fake_vcenter, tmp_path, monkeypatch, capsys):
    # Build some state in a data dir, then serve that data dir as an administrator would.
    app = make_app(vcenter=fake_vcenter, name="cli", vcenter_url="http://fake/sdk", vcenter_username="u")
    app.extensions["zvm"].inventory.sync_once()
    with wsgi_client(app).login("admin", ADMIN_PASSWORD) as c:
        make_vpg(c, "web")
        vid = c.vpg_by_name("web")["VpgIdentifier"]
    vpg = m.Vpg.get(m.Vpg.identifier == vid)
    m.Checkpoint.create(vpg=vpg, tag="nightly")
    m.Alert.create(code="VpgRpoOverThreshold", level="Warning", entity="Vpg", entity_id=vid, description="RPO 400 s")
    app.extensions["zvm"].stop()

    server = start_serve(tmp_path / "cli")
    try:
        server.wait_for("Booting worker")
        monkeypatch.setenv("ZVM_PASSWORD", ADMIN_PASSWORD)
        monkeypatch.setenv("ZVM_URL", server.url)

        def run(*argv) -> str:
            assert cli.main(list(argv)) == 0
            return capsys.readouterr().out

        status = run("status")
        assert "Site cli" in status and "1 Initializing" in status and "active alerts  1" in status
        assert "local" in run("sites")
        assert run("vras").strip() == "(none)"
        vpgs = run("vpgs")
        assert vpgs.splitlines()[0].split()[:3] == ["Name", "Status", "SubStatus"] and "web" in vpgs
        assert "nightly" in run("checkpoints", "web")
        assert "CreateVpg" in run("tasks")
        assert "VpgRpoOverThreshold" in run("alerts")
        assert json.loads(run("vpgs", "--json"))[0]["VpgName"] == "web"
        monkeypatch.setenv("ZVM_PASSWORD", "wrong")
        assert cli.main(["vpgs"]) == 3  # refused credentials: zvm/admin/session.py EXIT_CODES
        assert "user name or password is wrong" in capsys.readouterr().err
    finally:
        assert server.stop() == 0
