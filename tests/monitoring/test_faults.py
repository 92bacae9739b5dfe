"""Monitoring tells the truth about faults, with real VRAs: a protect `vra serve` (with its `vra iofilter`) and
a recovery `vra serve` behind the WAN emulator (zvm.lab.wan), driven by a ZVM whose monitoring loop runs as in
production (one pass a second) while the test reads the API.

Each fault (kill -9 of the protect VRA, kill -9 of the recovery VRA, a WAN cut, a recovery journal that loses
acknowledged records) must show within 2 s + the checkpoint interval: the RPO equal to the age of the newest
consistent checkpoint in the recovery journal (read from the recovery VRA itself), RpoNotMeetingSLA past the
(small) threshold with the reason in the substatus and the alert; the catch-up syncs as events even when they
last under a second; the loss as an event. All waits poll with a deadline.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.monitoring.shapes import active_alerts, events, vpg_view
from tests.replication.lab import SECRET, Lab, free_port, run, wait_for
from tests.zvm.fakes import ApiClient, FakeVCenter, fake_inventory
from tests.zvm.test_api import create_vpg
from vra_appliance.proto.v1 import control_pb2 as cpb
from zvm import models as m
from zvm.lab.wan import WanEmulator

VOLUME_SIZE = 8 << 20
CHECKPOINT_S = 5.0  # the VRA's default checkpoint interval (the ZVM does not set one)
THRESHOLD_S = 8  # the VPG's RPO threshold: above one checkpoint interval, so a healthy VPG meets it
FRESH_S = 2.0 + CHECKPOINT_S  # the bound: 2 s + the checkpoint interval
DEADLINE_S = THRESHOLD_S + FRESH_S + 10  # margin for a loaded machine; the values are checked, not the time


class World:
    def __init__(self, make_app, tmp_path: Path) -> None:
        self.short = Path(tempfile.mkdtemp(prefix="zm-", dir="/tmp"))  # unix socket paths must stay short
        self.lab = Lab(self.short)
        self.wan = None
        datastore = tmp_path / "recovery-ds"
        datastore.mkdir()
        inv = fake_inventory(hosts=2, vms=2)
        inv.vms["vm-0"].disks[0].capacity = VOLUME_SIZE
        inv.datastores["datastore-2"].url = f"ds://{datastore}/"
        self.app = make_app(vcenter=FakeVCenter(inv), vcenter_url="http://fake/sdk", vcenter_username="u",
                            vra_pairing_secret=SECRET,
                            filter_control_template=str(self.lab.tmp / "{vra_id}-filter" / "control.sock"))
        self.zvm = self.app.extensions["zvm"]
        self.zvm.inventory.sync_once()
        self.api = ApiClient.login(self.app)

    def build(self) -> None:
        api = self.api
        vras = {}
        for host in ("host-0", "host-1"):
            api.post("/vras", {"HostIdentifier": host, "DatastoreIdentifier": "datastore-1",
                               "NetworkIdentifier": "network-1"})
            vras[host] = m.Vra.get(m.Vra.host_moid == host)
        # fixed ports: a killed VRA comes back where the ZVM and the WAN emulator expect it
        self.p = self.lab.vra(vras["host-0"].identifier, split=True, port=free_port())
        self.r = self.lab.vra(vras["host-1"].identifier, split=False, nbd=True, port=free_port())
        self.wan = WanEmulator(("127.0.0.1", 0), ("127.0.0.1", self.r.port), latency_ms=1).start()
        # the recovery VRA is reached through the WAN (its stream from the protect VRA, and the ZVM's questions)
        for vra, address in ((vras["host-0"], self.p.address), (vras["host-1"], f"127.0.0.1:{self.wan.address[1]}")):
            vra.state, vra.control_address = "Installed", address
            vra.save()
        m.Task.delete().where(m.Task.kind == "InstallVra").execute()
        self.vid = create_vpg(api, "web", ["vm-0"])
        m.Vpg.update(rpo_threshold_seconds=THRESHOLD_S).where(m.Vpg.identifier == self.vid).execute()
        self.volume = m.VpgVolume.get().volume_id
        source = self.lab.volume(self.volume, VOLUME_SIZE)
        self.filter = self.lab.filter(f"{vras['host-0'].identifier}-filter", {self.volume: source}, self.p)
        assert api.run_tasks() == 1
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 1M", self.filter.uri(self.volume)])
        self.zvm.monitor.start()  # one pass a second, in its own thread, as `zvm serve` runs it

    def view(self) -> dict:
        return vpg_view(self.api, self.vid)

    def newest_consistent(self) -> float:
        """The truth, from the recovery VRA: when the newest consistent checkpoint in its journal was taken."""
        listed = self.r.control.ListCheckpoints(cpb.ListCheckpointsRequest(vpg=self.vid)).checkpoints
        return max(c.timestamp_ns for c in listed if c.consistent) / 1e9

    def wait_meeting_sla(self, what: str) -> None:
        wait_for(lambda: (v := self.view())["status"] == "MeetingSLA" and v["substatus"] == "None", 90, what)

    def wait_over_threshold(self, what: str) -> dict:
        wait_for(lambda: self.view()["status"] == "RpoNotMeetingSLA", DEADLINE_S, what)
        return self.view()

    def close(self) -> None:
        self.zvm.monitor.stop()
        self.lab.close()
        if self.wan is not None:
            self.wan.stop()
        shutil.rmtree(self.short, ignore_errors=True)


@pytest.fixture
def world(make_app, tmp_path):
    w = World(make_app, tmp_path)
    try:
        w.build()
        yield w
    finally:
        w.close()


def assert_true_rpo(world: World, durable: float) -> None:
    """The API's RPO is the age of ``durable`` (the newest consistent checkpoint), to the second a pass takes."""
    before = time.time()
    rpo = world.view()["rpo"]
    after = time.time()
    assert before - durable - 2.5 <= rpo <= after - durable + 0.5, (rpo, before - durable)


def test_faults_show_the_true_rpo_the_reason_and_the_events(world: World) -> None:
    api, vid = world.api, world.vid
    world.wait_meeting_sla("the new VPG to meet its SLA")
    assert world.view()["rpo"] <= CHECKPOINT_S + 2

    # --- kill -9 of the protect VRA: no new checkpoint; the RPO grows from the last durable one
    started = time.time()
    world.p.kill()
    got = world.wait_over_threshold("RpoNotMeetingSLA after the protect VRA was killed")
    assert got["substatus"] == "DisconnectedFromPeer", got
    assert_true_rpo(world, world.newest_consistent())  # the recovery VRA still answers: the truth is there
    alert = active_alerts(api, vid)["VpgRpoOverThreshold"]
    assert f"{world.p.vra_id}" in alert or "protect VRA" in alert, alert
    assert "does not answer" in alert
    world.p.restart()
    world.wait_meeting_sla("the VPG to meet its SLA again after the protect VRA came back")
    # the restarted VRA delta-synced every volume (it lost what it held in memory): an event, however short
    wait_for(lambda: [e for e in events(api, vid, "VpgSync") if e["detail"].startswith("DeltaSync")
                      and "running" not in e["detail"]], 20, "the delta sync's event")
    changes = [e["detail"] for e in events(api, vid, "VpgStatusChanged")]
    assert "RpoNotMeetingSLA/DisconnectedFromPeer" in changes and changes[-1] == "MeetingSLA/None", changes
    assert time.time() - started < 300

    # --- kill -9 of the recovery VRA: the ZVM cannot ask it; the RPO grows from what it said last
    durable = world.newest_consistent()
    world.r.kill()
    got = world.wait_over_threshold("RpoNotMeetingSLA after the recovery VRA was killed")
    assert got["substatus"] == "DisconnectedFromPeer"
    assert_true_rpo(world, durable)
    assert "recovery VRA" in active_alerts(api, vid)["VpgRpoOverThreshold"]
    world.r.restart()
    world.wait_meeting_sla("the VPG to meet its SLA again after the recovery VRA came back")

    # --- a WAN cut: nothing crosses; the RPO grows from the newest checkpoint that did
    durable = world.newest_consistent()
    world.wan.cut(mode="reset")
    try:
        got = world.wait_over_threshold("RpoNotMeetingSLA while the WAN is cut")
        assert got["substatus"] == "DisconnectedFromPeer"
        assert_true_rpo(world, durable)
    finally:
        world.wan.restore()
    world.wait_meeting_sla("the VPG to meet its SLA again after the WAN came back")
    assert_true_rpo(world, world.newest_consistent())

    # --- the recovery journal loses acknowledged records: the protect VRA finds out, delta-syncs; an event
    reply = world.r.control.DiscardJournal(cpb.DiscardJournalRequest(vpg=vid, reason="test: lost", force=True))
    assert reply.ok, reply.message
    run(["qemu-io", "-f", "raw", "-c", "write -P 0x77 2M 64k", world.filter.uri(world.volume)])
    wait_for(lambda: events(api, vid, "RecoveryJournalLost"), FRESH_S + 20, "the loss to be an event")
    loss = events(api, vid, "RecoveryJournalLost")
    assert len(loss) == 1 and "lost records it had acknowledged" in loss[0]["description"], loss
    wait_for(lambda: len([e for e in events(api, vid, "VpgSync") if e["detail"].startswith("DeltaSync")
                          and "running" not in e["detail"]]) >= 2, 60, "the delta sync after the loss")
