"""VPG tasks against the VRA control seam (a recording fake): the plan each VRA gets on commit, edits,
delete, tagged checkpoints, and the refusals that say what is missing."""

from __future__ import annotations

import pytest

from tests.zvm.fakes import FakeVraControl
from tests.zvm.test_api import create_vpg, draft_for
from zvm import models as m
from zvm.enums import TaskState, VpgStatus, VpgSubStatus


@pytest.fixture
def control(api):
    fake = FakeVraControl()
    api.zvm.vra_control = fake  # the service's seam, injected
    return fake



@pytest.fixture
def app(app_on_both_engines):
    """Every test of this module runs on SQLite and on PostgreSQL."""
    return app_on_both_engines

def install(api, *hosts: str) -> dict[str, str]:
    ids = {}
    for host in hosts:
        api.post("/vras", {"HostIdentifier": host, "DatastoreIdentifier": "datastore-1",
                           "NetworkIdentifier": "network-1"})
        vra = m.Vra.get(m.Vra.host_moid == host)
        vra.state, vra.control_address = "Installed", f"10.0.0.{host[-1]}:4005"
        vra.save()
        ids[host] = vra.identifier
    m.Task.delete().where(m.Task.kind == "InstallVra").execute()  # the fake vCenter imports no OVF
    return ids


def task_of(api, kind: str) -> dict:
    return api.get("/tasks", query_string={"type": kind, "limit": 1}).json[0]


def test_commit_without_vras_waits_for_them_and_says_which(api, control):
    vid = create_vpg(api, "web", ["vm-0", "vm-1"])  # vm-0 on host-0, vm-1 on host-1; recovery host-1
    install(api, "host-1")
    api.run_tasks()
    t = task_of(api, "CreateVpg")
    assert t["Status"]["State"] == TaskState.Failed and t["Error"]["Code"] == "WaitingForVras"
    assert "esx0.lab" in t["Error"]["Message"] and "esx1.lab" not in t["Error"]["Message"]
    got = api.get(f"/vpgs/{vid}").json
    assert (got["Status"], got["SubStatus"]) == (VpgStatus.Initializing, VpgSubStatus.WaitingForVras)
    assert control.calls == []


def test_commit_configures_the_recovery_vra_first_then_each_protect_vra(api, control):
    vras = install(api, "host-0", "host-1", "host-2")
    vid = create_vpg(api, "web", ["vm-0", "vm-1", "vm-3"])  # hosts 0, 1, 0; recovery host-1 on datastore-2
    api.run_tasks()
    t = task_of(api, "CreateVpg")
    assert t["Status"]["State"] == TaskState.Completed, t
    assert t["Result"]["RecoveryVra"] == vras["host-1"]
    kinds = [c[0] for c in control.calls]
    assert kinds[0] == "recover" and sorted(kinds[1:3]) == ["protect", "protect"]
    _, recover_vra, recover = control.calls[0]
    volumes = {v.volume_id: v for v in m.VpgVolume.select()}
    assert recover_vra == vras["host-1"] and {v for v, _, _ in recover.volumes} == set(volumes)
    for vol, path, size in recover.volumes:
        assert path == f"/datastore-2/zvr/{vid}/{vol}.img" and size == volumes[vol].capacity
    assert recover.journal_dir == f"/datastore-2/zvr/{vid}/journal" and recover.history_s == 12 * 3600
    protects = {c[1]: c[2] for c in control.calls if c[0] == "protect"}
    assert set(protects) == {vras["host-0"], vras["host-1"]} and set(recover.protect_peers) == set(protects)
    assert sum(p.coordinator for p in protects.values()) == 1
    on_host0 = {v.volume_id for v in m.VpgVolume.select().join(m.VpgVm).where(m.VpgVm.vm_moid.in_(["vm-0", "vm-3"]))}
    assert set(protects[vras["host-0"]].volumes) == on_host0
    assert all(p.recover_peer.address == "10.0.0.1:4005" and p.priority == 3 for p in protects.values())
    got = api.get(f"/vpgs/{vid}").json
    assert (got["Status"], got["SubStatus"]) == (VpgStatus.Initializing, VpgSubStatus.InitialSync)
    # control calls come with the address of each VRA and the VPG's id
    assert all(p.vpg == vid for p in protects.values())

    # edit: drop the VMs of host-0 -> its VRA is told to forget the VPG
    control.calls.clear()
    sid = api.post("/vpgSettings", {"VpgIdentifier": vid}).json
    api.delete(f"/vpgSettings/{sid}/vms/vm-0")
    api.delete(f"/vpgSettings/{sid}/vms/vm-3")
    api.post(f"/vpgSettings/{sid}/commit")
    api.run_tasks()
    assert task_of(api, "UpdateVpg")["Status"]["State"] == TaskState.Completed
    assert ("remove", vras["host-0"], vid) in control.calls
    assert {c[1] for c in control.calls if c[0] == "protect"} == {vras["host-1"]}

    # tagged checkpoint through the coordinator, then delete
    api.post(f"/vpgs/{vid}/checkpoints", {"CheckpointName": "before patch"})
    api.run_tasks()
    assert task_of(api, "CheckpointVpg")["Result"]["IsConsistent"] is True
    assert api.get(f"/vpgs/{vid}/checkpoints").json[0]["Tag"] == "before patch"
    control.calls.clear()
    api.delete(f"/vpgs/{vid}")
    api.run_tasks()
    assert sorted(c[1] for c in control.calls if c[0] == "remove") == sorted(vras.values())
    assert api.get(f"/vpgs/{vid}").status == 404


def test_delete_with_an_unreachable_vra_needs_force(api, control):
    install(api, "host-0", "host-1")
    vid = create_vpg(api, "web", ["vm-0"])
    api.run_tasks()

    def unreachable(vra, vpg):
        from zvm.errors import TransientError

        raise TransientError(f"VRA {vra.name} does not answer")

    control.remove_vpg = unreachable
    api.delete(f"/vpgs/{vid}")
    api.run_tasks()
    t = task_of(api, "DeleteVpg")
    assert t["Status"]["State"] == TaskState.Failed and "delete with Force" in t["Error"]["Message"]
    m.Vpg.update(status="MeetingSLA").where(m.Vpg.identifier == vid).execute()
    api.delete(f"/vpgs/{vid}", {"Force": True})
    api.run_tasks()
    t = task_of(api, "DeleteVpg")
    assert t["Status"]["State"] == TaskState.Completed and "not reached" in t["Step"]


def test_pause_and_resume_reach_every_protect_vra_and_show_in_the_substatus(api, control):
    install(api, "host-0", "host-1", "host-2")
    vid = create_vpg(api, "web", ["vm-0", "vm-1"])
    api.run_tasks()
    protect_vras = {c[1] for c in control.calls if c[0] == "protect"}
    m.Vpg.update(status="MeetingSLA", substatus="None").where(m.Vpg.identifier == vid).execute()
    api.post(f"/vpgs/{vid}/pause")
    api.run_tasks()
    t = task_of(api, "PauseVpg")
    assert t["Status"]["State"] == TaskState.Completed, t
    assert {c[1] for c in control.calls if c[0] == "pause"} == protect_vras and protect_vras
    got = api.get(f"/vpgs/{vid}").json
    assert (got["IsPaused"], got["Status"], got["SubStatus"]) == (
        True, VpgStatus.MeetingSLA, VpgSubStatus.ReplicationPausedUserInitiated)
    api.post(f"/vpgs/{vid}/resume")
    api.run_tasks()
    t = task_of(api, "ResumeVpg")
    assert t["Status"]["State"] == TaskState.Completed, t
    assert {c[1] for c in control.calls if c[0] == "resume"} == protect_vras
    got = api.get(f"/vpgs/{vid}").json
    assert (got["IsPaused"], got["SubStatus"]) == (False, VpgSubStatus.BitmapSync)


def test_a_pause_a_vra_refuses_is_undone(api, control):
    from zvm.errors import PermanentError

    install(api, "host-0", "host-1")
    vid = create_vpg(api, "web", ["vm-0"])
    api.run_tasks()

    def refuse(vra, vpg, paused):
        raise PermanentError(f"VRA {vra.vra_id} refused pausing: no role")

    control.pause = refuse
    api.post(f"/vpgs/{vid}/pause")
    api.run_tasks()
    t = task_of(api, "PauseVpg")
    assert t["Status"]["State"] == TaskState.Failed and "refused pausing" in t["Error"]["Message"], t
    assert api.get(f"/vpgs/{vid}").json["IsPaused"] is False


def test_forcesync_asks_every_protect_vra_for_a_delta_sync_and_monitoring_ends_it(api, control):
    install(api, "host-0", "host-1", "host-2")
    vid = create_vpg(api, "web", ["vm-0", "vm-1"])
    api.run_tasks()
    protect_vras = {c[1] for c in control.calls if c[0] == "protect"}
    m.Vpg.update(status="MeetingSLA", substatus="None").where(m.Vpg.identifier == vid).execute()
    api.post(f"/vpgs/{vid}/forcesync")
    api.run_tasks()
    t = task_of(api, "ForceSyncVpg")
    assert t["Status"]["State"] == TaskState.Completed, t
    assert {c[1] for c in control.calls if c[0] == "forcesync"} == protect_vras and protect_vras
    assert api.get(f"/vpgs/{vid}").json["SubStatus"] == VpgSubStatus.DeltaSync


def test_a_paired_recovery_site_that_cannot_be_reached_fails_the_task_clearly(api, control):
    install(api, "host-0", "host-1")
    peer = m.Site.create(name="Site B")
    m.PeerSite.create(site=peer, host_name="zvm-b")
    m.InvHost.create(site=peer, moid="host-b1", name="esx-b1.lab")
    m.InvDatastore.create(site=peer, moid="ds-b1", name="DS-B1", url="ds:///b1/")
    sid = draft_for(api, "to-b", ["vm-0"], recovery={
        "DefaultHostIdentifier": "host-b1", "DefaultHostClusterIdentifier": None,
        "DefaultDatastoreIdentifier": "ds-b1", "DefaultFolderIdentifier": None})
    basic = api.get(f"/vpgSettings/{sid}/basic").json
    api.put(f"/vpgSettings/{sid}/basic", {**basic, "RecoverySiteIdentifier": peer.identifier})
    assert api.post(f"/vpgSettings/{sid}/commit").status == 202
    api.run_tasks()
    t = task_of(api, "CreateVpg")  # the peer row has no CA: as if pairing had been undone on the way
    assert t["Status"]["State"] == TaskState.Failed and t["Error"]["Code"] == "AuthenticationFailed"
    assert "pair first" in t["Error"]["Message"] and control.calls == []
    assert api.get("/vpgs").json[0]["SubStatus"] == VpgSubStatus.Error
