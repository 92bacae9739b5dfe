"""A corrupt recovery journal through the two ZVMs (the setup of tests/zvm/test_two_sites.py: two vcsims,
site B as `zvm serve`, site A in this process, real `vra serve` and IO filter processes).

The VPG meets its SLA; B's recovery VRA is stopped, a write record in the middle of the VPG's journal segment
is corrupted, the VRA is started again: the journal is corrupt. A's monitoring raises RecoveryJournalCorrupt
(Error, saying to Force Sync) and shows the VPG in Error; the VMs' writes through the filters still complete.
Force Sync on A discards the journal at B (through B's peer service; events on both sites name who asked),
the protect VRAs run a delta sync, the VPG meets its SLA again with the alert cleared, and the image of each
volume at the newest consistent checkpoint equals its source disk by SHA-256.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import grpc

from tests.replication.lab import SECRET, Control, Lab, run, sha256_file
from tests.zvm.conftest import ADMIN_PASSWORD
from tests.zvm.fakes import wsgi_client
from tests.zvm.pg import free_port
from tests.zvm.procs import start_serve
from tests.zvm.test_two_sites import install_everywhere
from vra_appliance.proto.v1 import control_pb2 as cpb
from vra_appliance.recover.format import T_WRITE, scan_segment
from vra_appliance.recover.segments import vpg_dirname
from zvm.client import ZvmClient
from zvm.enums import AlertLevel, VpgStatus, VpgSubStatus
from zvm.vcenter import VCenter, VCenterConfig


class ControlAt(Control):
    """The lab's Control client, at a VRA's own address (these listen on 127.77.x.y:4005)."""

    def __init__(self, address: str) -> None:
        super().__init__(0)
        self.channel.close()
        self.channel = grpc.insecure_channel(address)
        from vra_appliance.proto.v1 import control_pb2_grpc as cpb_grpc

        self.stub = cpb_grpc.ControlStub(self.channel)


def corrupt_middle_write(roots: list[Path], vpg: str) -> Path:
    """Flip bytes in the data of a write record in the middle of the VPG's last journal segment."""
    segments = sorted(p for root in roots for p in root.rglob(f"{vpg_dirname(vpg)}/*.seg"))
    assert segments, f"no journal segment of VPG {vpg} under {roots}"
    segment = segments[-1]
    buf = segment.read_bytes()
    scan = scan_segment(buf, int(segment.name.split(".")[0]))
    writes = [r for r in scan.records if r.rtype == T_WRITE and r.data_len]
    assert len(writes) >= 3, f"too few write records in {segment}"
    victim = writes[len(writes) // 2]
    at = victim.data_pos + victim.data_len // 2
    with open(segment, "r+b") as f:
        f.seek(at)
        f.write(bytes(b ^ 0x5A for b in buf[at:at + 8]))
    return segment


def test_corrupt_recovery_journal_alert_and_force_sync(fresh_two_sites, make_app, tmp_path):
    short = Path(tempfile.mkdtemp(prefix="zj-", dir="/tmp"))
    lab = Lab(short)
    server = None
    try:
        two_sites = fresh_two_sites  # installs VRAs: its own vCenters
        rec = two_sites.recovery
        server = start_serve(tmp_path / "site-b", "--admin-password", ADMIN_PASSWORD, "--site-name", "Site B",
                             "--public-address", "127.0.0.1", "--peer-port", str(free_port()),
                             "--vcenter-url", rec.url, "--vcenter-username", rec.username,
                             "--vcenter-verify", "false",
                             env={"ZVM_VCENTER_PASSWORD": rec.password, "ZVM_VRA_PAIRING_SECRET": SECRET})
        server.wait_for(r"inventory of \S+ loaded")
        peer_port = int(server.wait_for(r"peer service listening on \S+:(\d+)").group(1))
        prot = two_sites.protected
        app = make_app(name="site-a", site_name="Site A", peer_port=free_port(), vcenter_url=prot.url,
                       vcenter_username=prot.username, vcenter_password=prot.password, vcenter_verify="false",
                       vra_pairing_secret=SECRET, filter_control_template=str(short / "{vra_id}-filter" / "control.sock"))
        zvm_a = app.extensions["zvm"]
        zvm_a.inventory.sync_once()
        zvm_a.peer_server.start()
        with wsgi_client(app).login("admin", ADMIN_PASSWORD) as a, \
                ZvmClient(server.url).login("admin", ADMIN_PASSWORD) as b:
            task = a.pair("127.0.0.1", b.generate_pairing_token()["Token"], port=peer_port)
            zvm_a.tasks.run_once()
            a.wait_for_task(task)
            site_b = b.local_site()["SiteIdentifier"]
            install_everywhere(a, "127.77.3", run_tasks=zvm_a.tasks.run_once)
            install_everywhere(b, "127.77.4")
            daemons = {v["VraIdentifier"]: lab.vra(v["VraIdentifier"], extra=["--listen", v["ControlAddress"]])
                       for v in a.vras()}
            controls = {v["VraIdentifier"]: ControlAt(v["ControlAddress"]) for v in a.vras() + b.vras()}
            daemons_b = {v["VraIdentifier"]: lab.vra(v["VraIdentifier"], split=False, nbd=True,
                                                     extra=["--listen", v["ControlAddress"]])
                         for v in b.vras()}

            site_a = a.local_site()["SiteIdentifier"]
            by_host: dict[str, dict] = {}
            for vm in a.vms(site_a):
                if not vm["VmName"].startswith("Z-VRA-"):
                    by_host.setdefault(vm["HostIdentifier"], vm)
            two = list(by_host.values())[:2]
            b_host = b.hosts(site_b)[0]
            task = a.create_vpg("jc", [vm["VmIdentifier"] for vm in two], recovery_site=site_b,
                                recovery_host=b_host["HostIdentifier"],
                                recovery_datastore=b_host["DatastoreIdentifiers"][0], rpo_seconds=60)
            vid = a.vpg_by_name("jc")["VpgIdentifier"]
            with VCenter(VCenterConfig(prot.url, prot.username, prot.password)) as vc:
                truth = vc.inventory()
            uris, sources = [], {}
            for vm in two:
                vra = next(v for v in a.vras() if v["HostIdentifier"] == vm["HostIdentifier"])
                volumes = {v["VolumeIdentifier"]: truth.vms[vm["VmIdentifier"]].disks[i].flat_path
                           for i, v in enumerate(a.protected_vm(vm["VmIdentifier"])["Volumes"])}
                sources.update(volumes)
                nbd = lab.filter(f"{vra['VraIdentifier']}-filter", volumes, daemons[vra["VraIdentifier"]])
                uris += [nbd.uri(v) for v in volumes]
            zvm_a.tasks.run_once()
            recovery_id = a.wait_for_task(task)["Result"]["RecoveryVra"]
            recovery_vra, recovery_control = daemons_b[recovery_id], controls[recovery_id]

            def write_all(pattern: int) -> None:
                for i, uri in enumerate(uris):
                    run(["qemu-io", "-f", "raw", "-c", f"write -P {pattern + i} 0 1M",
                         "-c", f"write -P {pattern + 0x10 + i} 8M 256k", "-c", f"write -P {pattern + 0x20 + i} 20M 64k",
                         uri], timeout=60)

            def until_meeting_sla(what: str) -> None:
                for round_ in range(30):
                    zvm_a.monitor.run_once()
                    if a.vpg(vid)["Status"] == VpgStatus.MeetingSLA:
                        return
                    checkpoint = a.take_checkpoint(vid, f"{what}-{round_}")
                    zvm_a.tasks.run_once()
                    a.wait_for_task(checkpoint)
                raise AssertionError(f"VPG not MeetingSLA {what}: {a.vpg(vid)}")

            write_all(0x30)
            until_meeting_sla("before")

            # the journal at B is corrupted while its VRA is down
            recovery_vra.stop()
            corrupt_middle_write([Path(p) for p in rec.datastores.values()], vid)
            recovery_vra.restart()
            st = recovery_control.vpg_status(vid, "recover")
            assert st.state == "journal-corrupt", st

            zvm_a.monitor.run_once()
            vpg = a.vpg(vid)
            assert (vpg["Status"], vpg["SubStatus"]) == (VpgStatus.Error, VpgSubStatus.Error), vpg
            alerts = a.alerts(code="RecoveryJournalCorrupt", active=True)
            assert [(x["Level"], x["EntityIdentifier"]) for x in alerts] == [(AlertLevel.Error, vid)]
            assert "Force Sync the VPG" in alerts[0]["Description"]
            write_all(0x50)  # the VMs' writes still complete (the protect VRAs are refused, not blocked)

            # Force Sync: the journal at B is discarded, then a delta sync
            task = a.force_sync_vpg(vid)
            zvm_a.tasks.run_once()
            result = a.wait_for_task(task)["Result"]
            assert result["JournalDiscarded"]["StateBefore"] == "journal-corrupt", result
            events_a = a.events(event_type="DiscardJournal")
            assert [(e["Result"], e["User"]) for e in events_a] == [("Succeeded", "admin")]
            events_b = b.events(event_type="DiscardJournal")
            assert [e["Result"] for e in events_b] == ["Succeeded"]
            assert events_b[0]["User"].startswith("peer:Site A")
            assert recovery_control.vpg_status(vid, "recover").state == "ok"

            until_meeting_sla("after")
            assert a.alerts(code="RecoveryJournalCorrupt", active=True) == []
            protects = [s for v in daemons for s in controls[v].Status(cpb.StatusRequest(vpg=vid)).vpgs
                        if s.role == "protect"]
            assert protects and all(any(r.kind == "DeltaSync" and r.completed for r in p.last_syncs)
                                    for p in protects)

            # the image of every volume at the newest consistent checkpoint equals its source disk
            listed = recovery_control.ListCheckpoints(cpb.ListCheckpointsRequest(vpg=vid)).checkpoints
            newest = [c.checkpoint_id for c in listed if c.consistent][-1]
            for volume, source in sources.items():
                export = recovery_control.OpenImage(cpb.OpenImageRequest(
                    vpg=vid, volume=volume, checkpoint_id=newest)).export_name
                try:
                    out = short / "image.img"
                    run(["nbdcopy", f"nbd+unix:///{export}?socket={recovery_vra.nbd}", str(out)])
                    assert sha256_file(out) == sha256_file(source), f"volume {volume} differs at {newest}"
                    out.unlink()
                finally:
                    recovery_control.CloseImage(cpb.CloseImageRequest(export_name=export))
    finally:
        for c in locals().get("controls", {}).values():
            c.close()
        lab.close()
        shutil.rmtree(short, ignore_errors=True)
        if server is not None:
            assert server.stop() == 0
