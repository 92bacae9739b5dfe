"""A script written the way Zerto's public clients use the API (tests/compat/zerto.py: plain requests,
Zerto's paths in their various spellings, its field casing and numbers) run against two ZVMs on vcsims with
real VRAs, one world shared by the whole module (tests/recovery_ops/world.py; site B's ZVM served over HTTP
with its loops running, as a service would).

The flow: log in; list; create a VPG through vpgSettings; pause, resume; tag a checkpoint and at once a
failover test of some VMs at it on the recovery site, the checkpoint the same on both sites; stop; force
sync; a failover ordered on the protected site's ZVM (forwarded), commit with reverse protection; a move
back; delete; log out.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from werkzeug.serving import make_server

from tests.compat.zerto import (
    COMMIT_COMMIT,
    COMMIT_NONE,
    PAIRED,
    SHUTDOWN_FORCE,
    VPG_MEETING_SLA,
    ZertoScript,
)
from tests.recovery_ops.world import build
from tests.zvm.conftest import ADMIN_PASSWORD

WORLD = "compat"
PREFIX = 91


@pytest.fixture(scope="module")
def world(start_vcsim, tmp_path_factory):
    w = build(start_vcsim, WORLD, PREFIX, tmp_path_factory.mktemp(WORLD), vm_count=2, workload=False)
    http = make_server("127.0.0.1", 0, w.b_app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    w.zvm_b.start()  # B runs its tasks, monitoring and recovery watch on its own from here
    w.b_url = f"http://127.0.0.1:{http.server_port}"
    w.state = {}
    try:
        yield w
    finally:
        http.shutdown()
        w.close()


@pytest.fixture(scope="module")
def a(world):
    return ZertoScript(world.server.url).login("admin", ADMIN_PASSWORD)


@pytest.fixture(scope="module")
def b(world):
    return ZertoScript(world.b_url).login("admin", ADMIN_PASSWORD)


def test_log_in_and_list(world, a, b):
    for zvm in (a, b):
        # the protected site's status follows its next monitoring pass: a script waits for it as for a task
        vpg = zvm.until(lambda z: next((v for v in z.ok("GET", "vpgs") if v["Status"] == VPG_MEETING_SLA), None))
        assert vpg["VpgName"] == WORLD
        statuses = zvm.ok("GET", "vpgs/statuses")
        assert statuses[vpg["Status"]] == "MeetingSLA" and statuses[vpg["SubStatus"]] is not None
        assert zvm.ok("GET", "peersites")[0]["PairingStatus"] == PAIRED
        assert zvm.ok("GET", "localsite/pairingstatuses")[PAIRED] == "Paired"
        assert {s["SiteIdentifier"] for s in zvm.ok("GET", "virtualizationsites")} == {world.site_a, world.site_b}
    assert [v["VpgName"] for v in a.ok("GET", "vpgs", status=VPG_MEETING_SLA)] == [WORLD]
    assert a.ok("GET", "VPGS", status="meetingsla") == a.ok("GET", "vpgs", status=1)


def test_create_a_vpg_through_vpgsettings(world, a, b):
    free = [v for v in a.ok("GET", f"virtualizationsites/{world.site_a}/vms") if not v["VpgIdentifier"]]
    assert free and not any(v["VmName"].startswith("Z-VRA-") for v in free)  # VRAs are not protectable
    host = b.ok("GET", f"virtualizationsites/{world.site_b}/hosts")[0]
    network = b.ok("GET", f"virtualizationsites/{world.site_b}/networks")[0]["NetworkIdentifier"]
    settings_id = a.ok("POST", "vpgSettings")
    assert isinstance(settings_id, str)
    doc = a.ok("GET", f"vpgSettings/{settings_id}")
    doc["Basic"].update(Name="compat-new", RecoverySiteIdentifier=world.site_b, RpoInSeconds=300, Priority=1)
    doc["Journal"]["Limitation"]["HardLimitInMB"] = 1024
    doc["Recovery"]["DefaultHostIdentifier"] = host["HostIdentifier"]
    doc["Recovery"]["DefaultDatastoreIdentifier"] = host["DatastoreIdentifiers"][0]
    doc["Networks"]["Failover"]["Hypervisor"]["DefaultNetworkIdentifier"] = network
    doc["Networks"]["FailoverTest"]["Hypervisor"]["DefaultNetworkIdentifier"] = network
    doc["Vms"] = [{"VmIdentifier": free[0]["VmIdentifier"]}]
    a.ok("PUT", f"vpgsettings/{settings_id}", doc)
    task = a.ok("POST", f"vpgSettings/{settings_id}/commit")
    assert a.wait(task)["Type"] == 0  # CreateProtectionGroup
    created = a.ok("GET", "vpgs", name="compat-new")[0]
    assert created["Priority"] == 1 and created["VmsCount"] == 1
    world.state["new"] = created["VpgIdentifier"]


def test_pause_and_resume(world, a):
    vpg = world.state["new"]
    a.wait(a.ok("POST", f"vpgs/{vpg}/Pause"))
    assert a.ok("GET", f"vpgs/{vpg}")["SubStatus"] == 25  # ReplicationPausedUserInitiated
    a.wait(a.ok("POST", f"vpgs/{vpg}/resume"))
    assert a.ok("GET", f"vpgs/{vpg}")["SubStatus"] != 25


def test_tag_a_checkpoint_and_test_some_vms_at_it_at_once(world, a, b):
    vpg = world.vpg
    task = a.ok("POST", f"vpgs/{vpg}/Checkpoints", {"checkpointName": "compat-tag"})
    a.wait(task)
    # a script finds the checkpoint by its tag, on the recovery site, with a date filter as people write it
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    found = [c for c in b.ok("GET", f"vpgs/{vpg}/checkpoints", startDate=today) if c["Tag"] == "compat-tag"]
    assert len(found) == 1, "the recovery site lists the checkpoint once its tag task completed"
    cp = found[0]
    on_a = [c for c in a.ok("GET", f"vpgs/{vpg}/checkpoints", startDate=f"{today}T00:00Z")
            if c["CheckpointIdentifier"] == cp["CheckpointIdentifier"]]
    assert on_a[0]["TimeStamp"] == cp["TimeStamp"]  # one checkpoint, one time, on both sites
    one_vm = world.source_vms[0]["VmIdentifier"]
    test = b.ok("POST", f"vpgs/{vpg}/FailoverTest", {"CheckpointIdentifier": cp["CheckpointIdentifier"],
                                                     "VmIdentifiers": [one_vm]})
    done = b.wait(test)
    assert done["Type"] == 3  # FailOverTest
    report = b.ok("GET", "reports/recovery", vpgIdentifier=vpg, limit=1)[0]
    assert [v["SourceVmIdentifier"] for v in report["Vms"]] == [one_vm]
    assert report["CheckpointIdentifier"] == cp["CheckpointIdentifier"]


def test_stop_the_test_and_force_sync(world, a, b):
    vpg = world.vpg
    b.wait(b.ok("POST", f"vpgs/{vpg}/FailoverTestStop", {"FailoverTestSuccess": True,
                                                          "FailoverTestSummary": "compat"}))
    report = b.ok("GET", "reports/recovery", vpgIdentifier=vpg, limit=1)[0]
    assert (report["Type"], report["State"], report["Result"]) == ("FailoverTest", "Stopped", "Succeeded")
    task = a.ok("POST", f"vpgs/{vpg}/FORCESYNC")
    assert a.wait(task)["Type"] == 27  # InitFullSync


def test_failover_ordered_on_the_protected_site_then_commit(world, a, b):
    vpg = world.vpg
    body = {"CheckpointIdentifier": None, "CommitPolicy": COMMIT_NONE, "ShutdownPolicy": SHUTDOWN_FORCE,
            "TimeToWaitBeforeShutdownInSec": 300, "ReverseProtection": True}
    task = a.ok("POST", f"vpgs/{vpg}/Failover", body)  # A protects it: forwarded to B over the peer link
    assert a.wait(task)["Type"] == 2  # FailOver, answered by A from B
    assert b.ok("GET", f"vpgs/{vpg}")["SubStatus"] == 15  # FailingOverBeforeCommit
    commit = b.ok("POST", f"vpgs/{vpg}/FailoverCommit", {"IsReverseProtection": True})
    assert b.wait(commit)["Type"] == 44  # FailoverCommit
    for zvm in (a, b):
        got = zvm.ok("GET", f"vpgs/{vpg}")
        assert got["ProtectedSite"]["SiteIdentifier"] == world.site_b, got


def test_move_back(world, a, b):
    w = world
    vpg = w.vpg
    report = b.ok("GET", "reports/recovery", vpgIdentifier=vpg, limit=1)[0]
    replicas = {d["VolumeIdentifier"]: _local(w.rec, d["File"]) for v in report["Vms"] for d in v["Disks"]}
    protect_vra = next(v for v, h in w.vra_host.items() if w.vra_site[v] == "b" and h == w.b_recovery_host)
    w.lab.filter(f"{protect_vra}-filter", {v: str(p) for v, p in replicas.items()}, w.vras[protect_vra])
    w.wait_streaming(protect_vra)
    w.checkpoint("before-move", on="b", hash_paths=replicas)
    move = a.ok("POST", f"vpgs/{vpg}/Move", {"CommitPolicy": COMMIT_COMMIT, "CommitPolicyTimeout": 0,
                                             "ForceShutdown": True, "ReverseProtection": True,
                                             "KeepSourceVms": False, "ContinueOnPreScriptFailure": False})
    assert a.wait(move)["Type"] == 5  # Move
    final = a.ok("GET", "reports/recovery", vpgIdentifier=vpg, limit=1)[0]
    a.wait(final["TaskIdentifier"])
    assert a.ok("GET", "reports/recovery", vpgIdentifier=vpg, limit=1)[0]["State"] == "Committed"
    assert a.ok("GET", f"vpgs/{vpg}")["ProtectedSite"]["SiteIdentifier"] == w.site_a


def test_delete_and_log_out(world, a, b):
    vpg = world.state["new"]
    a.wait(a.ok("DELETE", f"vpgs/{vpg}", {"KeepRecoveryVolumes": False}))
    assert a.call("GET", f"vpgs/{vpg}").status_code == 404
    assert a.logout() == 204 and b.logout() == 204
    assert a.call("GET", "vpgs").status_code == 401


def _local(sim, datastore_path: str):
    from pathlib import Path

    from zvm.vcenter.inventory import split_datastore_path

    name, rel = split_datastore_path(datastore_path)
    return Path(sim.datastores[name]) / rel
