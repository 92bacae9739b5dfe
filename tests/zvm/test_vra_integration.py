"""The ZVM driving real appliances: `vra serve` processes (protect and recovery) and a `vra iofilter`
started as the lab would, a VPG committed through the API, writes through NBD (qemu-io), checkpoints taken
through the API, and monitoring that reads the VRAs: the VPG reaches MeetingSLA; deleting it clears the
VRAs' roles. On SQLite and on PostgreSQL."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.replication.lab import SECRET, Lab, run, sha256_file, wait_for
from tests.zvm.fakes import ApiClient, FakeVCenter, fake_inventory
from tests.zvm.test_api import create_vpg
from vra_appliance.proto.v1 import control_pb2 as cpb
from zvm import models as m
from zvm.enums import TaskState, VpgStatus, VpgSubStatus
from zvm.vra_control import VraRef

VOLUME_SIZE = 8 << 20


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_a_vpg_reaches_meeting_sla_with_real_vras_and_replication_traffic(make_app, tmp_path, request, engine):
    database = {} if engine == "sqlite" else {"database_url": request.getfixturevalue("pg_server").new_database()}
    short = Path(tempfile.mkdtemp(prefix="zl-", dir="/tmp"))  # unix socket paths must stay short
    lab = Lab(short)
    datastore = tmp_path / "recovery-ds"
    datastore.mkdir()
    inv = fake_inventory(hosts=2, vms=2)
    inv.vms["vm-0"].disks[0].capacity = VOLUME_SIZE
    inv.datastores["datastore-2"].url = f"ds://{datastore}/"
    app = make_app(vcenter=FakeVCenter(inv), vcenter_url="http://fake/sdk", vcenter_username="u",
                   vra_pairing_secret=SECRET,
                   filter_control_template=str(lab.tmp / "{vra_id}-filter" / "control.sock"), **database)
    zvm = app.extensions["zvm"]
    zvm.inventory.sync_once()
    api = ApiClient.login(app)
    try:
        appliances = {}
        for host, split in (("host-0", True), ("host-1", False)):
            api.post("/vras", {"HostIdentifier": host, "DatastoreIdentifier": "datastore-1",
                               "NetworkIdentifier": "network-1"})
            vra = m.Vra.get(m.Vra.host_moid == host)
            appliances[host] = lab.vra(vra.identifier, split=split)  # the lab runs the appliance's daemon
            vra.state, vra.control_address = "Installed", appliances[host].address
            vra.save()
        m.Task.delete().where(m.Task.kind == "InstallVra").execute()  # no OVF import in this test

        vid = create_vpg(api, "web", ["vm-0"])  # vm-0 runs on host-0; recovery on host-1, datastore-2
        volume = m.VpgVolume.get().volume_id
        protect_vra = m.Vra.get(m.Vra.host_moid == "host-0").identifier
        source = lab.volume(volume, VOLUME_SIZE)
        nbd = lab.filter(f"{protect_vra}-filter", {volume: source}, appliances["host-0"])
        assert api.run_tasks() == 1
        task = api.get("/tasks", query_string={"type": "CreateVpg"}).json[0]
        assert task["Status"]["State"] == TaskState.Completed, task
        assert (datastore / "zvr" / vid).is_dir()

        run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 1M", "-c", "write -P 0xa5 4M 64k", nbd.uri(volume)])
        monitor = zvm.monitor
        for round_ in range(10):  # each round: a checkpoint the VRAs make durable, then a monitoring pass
            api.post(f"/vpgs/{vid}/checkpoints", {"CheckpointName": f"round-{round_}"})
            api.run_tasks()
            monitor.run_once()
            if api.get(f"/vpgs/{vid}").json["Status"] == VpgStatus.MeetingSLA:
                break
        got = api.get(f"/vpgs/{vid}").json
        assert got["Status"] == VpgStatus.MeetingSLA, (got, api.get("/tasks", query_string={"limit": 3}).json)
        assert got["ActualRPO"] is not None and got["ActualRPO"] < 60 and got["JournalUsedStorageMb"] > 0
        tags = [c["Tag"] for c in api.get(f"/vpgs/{vid}/checkpoints", query_string={"taggedOnly": "true"}).json]
        assert "round-0" in tags and got["LastCheckpointAt"] is not None
        assert all(v["Reachable"] for v in api.get("/vras").json)

        # forcesync: a delta sync on the protect VRA, DeltaSync while it runs, (almost) nothing sent for an
        # equal volume, then MeetingSLA again
        protect_ref = VraRef(protect_vra, appliances["host-0"].address)
        api.post(f"/vpgs/{vid}/forcesync")
        assert api.run_tasks() == 1
        task = api.get("/tasks", query_string={"type": "ForceSyncVpg"}).json[0]
        assert task["Status"]["State"] == TaskState.Completed, task
        assert api.get(f"/vpgs/{vid}").json["SubStatus"] == VpgSubStatus.DeltaSync
        deadline = time.monotonic() + 20
        while True:
            st = zvm.vra_control.status(protect_ref)[vid]["protect"]
            done = [s for s in st["syncs"] if s["kind"] == "DeltaSync" and s["completed"] and not s["running"]]
            if done and not st["substatus"]:
                break
            assert time.monotonic() < deadline, st
            time.sleep(0.2)
        assert done[-1]["bytes"] < 64 << 10, done  # the volumes were equal: nothing (or next to nothing) resent
        monitor.run_once()
        got = api.get(f"/vpgs/{vid}").json
        assert (got["Status"], got["SubStatus"]) == (VpgStatus.MeetingSLA, VpgSubStatus.NONE), got
        events = api.get("/events", query_string={"limit": 20}).json
        assert any(e["EventKind"] == "ForceSyncVpg" for e in events), events

        api.delete(f"/vpgs/{vid}")
        api.run_tasks()
        assert api.get(f"/vpgs/{vid}").status == 404
        for host, vra in appliances.items():
            ref = VraRef(m.Vra.get(m.Vra.host_moid == host).identifier, vra.address)
            assert vid not in zvm.vra_control.status(ref)
    finally:
        lab.close()
        shutil.rmtree(short, ignore_errors=True)


def test_pause_keeps_writes_back_and_resume_sends_them_with_real_vras(make_app, tmp_path):
    """Pause: writes through the filter do not reach the recovery journal, the VPG shows
    ReplicationPausedUserInitiated; resume: they arrive, and a consistent checkpoint taken after it holds the
    source's image."""
    short = Path(tempfile.mkdtemp(prefix="zl-", dir="/tmp"))
    lab = Lab(short)
    datastore = tmp_path / "recovery-ds"
    datastore.mkdir()
    inv = fake_inventory(hosts=2, vms=2)
    inv.vms["vm-0"].disks[0].capacity = VOLUME_SIZE
    inv.datastores["datastore-2"].url = f"ds://{datastore}/"
    app = make_app(vcenter=FakeVCenter(inv), vcenter_url="http://fake/sdk", vcenter_username="u",
                   vra_pairing_secret=SECRET,
                   filter_control_template=str(lab.tmp / "{vra_id}-filter" / "control.sock"))
    zvm = app.extensions["zvm"]
    zvm.inventory.sync_once()
    api = ApiClient.login(app)
    try:
        appliances = {}
        for host, split in (("host-0", True), ("host-1", False)):
            api.post("/vras", {"HostIdentifier": host, "DatastoreIdentifier": "datastore-1",
                               "NetworkIdentifier": "network-1"})
            vra = m.Vra.get(m.Vra.host_moid == host)
            appliances[host] = lab.vra(vra.identifier, split=split, nbd=not split)
            vra.state, vra.control_address = "Installed", appliances[host].address
            vra.save()
        m.Task.delete().where(m.Task.kind == "InstallVra").execute()

        vid = create_vpg(api, "web", ["vm-0"])
        volume = m.VpgVolume.get().volume_id
        protect_ref = VraRef(m.Vra.get(m.Vra.host_moid == "host-0").identifier, appliances["host-0"].address)
        recover_ref = VraRef(m.Vra.get(m.Vra.host_moid == "host-1").identifier, appliances["host-1"].address)
        source = lab.volume(volume, VOLUME_SIZE)
        nbd = lab.filter(f"{protect_ref.vra_id}-filter", {volume: source}, appliances["host-0"])
        assert api.run_tasks() == 1
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 1M", nbd.uri(volume)])
        for round_ in range(10):
            api.post(f"/vpgs/{vid}/checkpoints", {"CheckpointName": f"round-{round_}"})
            api.run_tasks()
            zvm.monitor.run_once()
            if api.get(f"/vpgs/{vid}").json["Status"] == VpgStatus.MeetingSLA:
                break
        assert api.get(f"/vpgs/{vid}").json["Status"] == VpgStatus.MeetingSLA

        def protect_status() -> dict:
            return zvm.vra_control.status(protect_ref)[vid]["protect"]

        def last_seq() -> float:
            return zvm.vra_control.status(recover_ref)[vid]["recover"]["counters"]["last_seq"]

        # pause: nothing more reaches the journal
        api.post(f"/vpgs/{vid}/pause")
        assert api.run_tasks() == 1
        task = api.get("/tasks", query_string={"type": "PauseVpg"}).json[0]
        assert task["Status"]["State"] == TaskState.Completed, task
        wait_for(lambda: protect_status()["state"] == "paused", 10, "the protect role to pause")
        st = protect_status()
        assert st["paused"] and st["substatus"] == "ReplicationPausedUserInitiated", st
        paused_at = last_seq()
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x33 2M 512k", "-c", "write -P 0x44 6M 64k", nbd.uri(volume)])
        time.sleep(1.5)  # streaming, the writes would be journaled within a few ms
        assert last_seq() == paused_at
        appliances["host-0"].kill()  # the pause is kept with the role across a restart of the VRA
        appliances["host-0"].restart()
        protect_ref = VraRef(protect_ref.vra_id, appliances["host-0"].address)  # a new port
        m.Vra.update(control_address=protect_ref.address).where(m.Vra.identifier == protect_ref.vra_id).execute()
        wait_for(lambda: protect_status()["paused"], 20, "the restarted VRA to report its role")
        assert protect_status()["substatus"] == "ReplicationPausedUserInitiated"
        time.sleep(1.0)
        assert last_seq() == paused_at
        zvm.monitor.run_once()
        got = api.get(f"/vpgs/{vid}").json
        assert (got["IsPaused"], got["SubStatus"]) == (True, VpgSubStatus.ReplicationPausedUserInitiated), got

        # resume: the kept writes arrive, then a consistent checkpoint holds the source's image
        api.post(f"/vpgs/{vid}/resume")
        assert api.run_tasks() == 1
        task = api.get("/tasks", query_string={"type": "ResumeVpg"}).json[0]
        assert task["Status"]["State"] == TaskState.Completed, task
        wait_for(lambda: last_seq() > paused_at, 20, "the kept writes to reach the journal")
        wait_for(lambda: protect_status()["state"] == "ok" and not protect_status()["substatus"], 20,
                 "the protect role to stream again")
        cp = zvm.vra_control.checkpoint(protect_ref, vid, "after-resume", wait_durable=True)
        assert cp.consistent
        export = appliances["host-1"].control.OpenImage(
            cpb.OpenImageRequest(vpg=vid, volume=volume, checkpoint_id=cp.checkpoint_id)).export_name
        try:
            out = tmp_path / "image.img"
            run(["nbdcopy", f"nbd+unix:///{export}?socket={appliances['host-1'].nbd}", str(out)])
            assert sha256_file(out) == sha256_file(source)
        finally:
            appliances["host-1"].control.CloseImage(cpb.CloseImageRequest(export_name=export))
        zvm.monitor.run_once()
        got = api.get(f"/vpgs/{vid}").json
        assert (got["IsPaused"], got["Status"], got["SubStatus"]) == (False, VpgStatus.MeetingSLA, VpgSubStatus.NONE), got
    finally:
        lab.close()
        shutil.rmtree(short, ignore_errors=True)
