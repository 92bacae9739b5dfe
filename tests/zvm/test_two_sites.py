"""Issue 6 end to end: two ZVMs on two vcsims. Pair with a token; install VRAs on every host of both sites
through the client (the Z-VRA-<host> VMs appear in each vcsim, and each VRA's daemon is started as the lab
starts appliances); create a VPG of two VMs through the client, recovering to the other site; write to the
VMs' disks through the IO filters; take checkpoints; watch the VPG reach MeetingSLA. Site B runs as
`zvm serve`, site A in this process (its task runner and monitoring driven by the test)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from pyVmomi import vim

from tests.replication.lab import SECRET, Lab, run
from tests.zvm.conftest import ADMIN_PASSWORD
from tests.zvm.fakes import wsgi_client
from tests.zvm.pg import free_port
from tests.zvm.procs import start_serve
from zvm.client import ZvmClient
from zvm.enums import VpgStatus
from zvm.vcenter import VCenter, VCenterConfig


def vcsim_vms(sim) -> dict[str, tuple[str, str]]:
    with VCenter(VCenterConfig(sim.url, sim.username, sim.password)) as vc:
        view = vc.content.viewManager.CreateContainerView(vc.content.rootFolder, [vim.VirtualMachine], True)
        try:
            return {vm.name: (vm.runtime.host.name, vm.runtime.powerState) for vm in view.view}
        finally:
            view.Destroy()


def install_everywhere(client, prefix: str, run_tasks=None) -> dict[str, str]:
    """A VRA with a static loopback address on every host of the client's site; returns host -> address."""
    site = client.local_site()["SiteIdentifier"]
    addresses, tasks = {}, []
    for i, host in enumerate(client.hosts(site), start=1):
        ip = f"{prefix}.{i}"
        tasks.append(client.install_vra(host["HostIdentifier"], host["DatastoreIdentifiers"][0],
                                        host["NetworkIdentifiers"][0], ip_address=ip, subnet_mask="255.0.0.0"))
        addresses[host["VirtualizationHostName"]] = f"{ip}:4005"
    if run_tasks:
        run_tasks()
    for task in tasks:
        client.wait_for_task(task, timeout=120)
    return addresses


def test_two_sites_pair_install_protect_and_meet_the_sla(fresh_two_sites, make_app, tmp_path):
    short = Path(tempfile.mkdtemp(prefix="z2-", dir="/tmp"))  # unix socket paths must stay short
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
            # pairing: a wrong token is refused, the right one pairs
            token = b.generate_pairing_token()["Token"]
            bad = a.pair("127.0.0.1", "0" * (len(token) - 17) + token[-17:], port=peer_port)
            zvm_a.tasks.run_once()
            assert a.task(bad)["Error"]["Code"] == "AuthenticationFailed"
            task = a.pair("127.0.0.1", token, port=peer_port)
            zvm_a.tasks.run_once()
            a.wait_for_task(task)
            site_b = b.local_site()["SiteIdentifier"]
            assert [p["PeerSiteName"] for p in a.peer_sites()] == ["Site B"]

            # a VRA on every host of both sites: Z-VRA-<host> VMs in each vcsim; the lab runs their daemons
            vras_a = install_everywhere(a, "127.77.1", run_tasks=zvm_a.tasks.run_once)
            vras_b = install_everywhere(b, "127.77.2")
            for sim, vras in ((prot, vras_a), (rec, vras_b)):
                in_vcenter = vcsim_vms(sim)
                assert all(in_vcenter[f"Z-VRA-{h}"] == (h, "poweredOn") for h in vras)
            daemons = {}
            for vra in a.vras():
                daemons[vra["VraIdentifier"]] = lab.vra(vra["VraIdentifier"],
                                                        extra=["--listen", vra["ControlAddress"]])
            for vra in b.vras():
                lab.vra(vra["VraIdentifier"], split=False, extra=["--listen", vra["ControlAddress"]])

            # a VPG of two VMs on different hosts of A, recovering to B
            site_a = a.local_site()["SiteIdentifier"]
            by_host: dict[str, dict] = {}
            for vm in a.vms(site_a):
                if not vm["VmName"].startswith("Z-VRA-"):
                    by_host.setdefault(vm["HostIdentifier"], vm)
            two = list(by_host.values())[:2]
            assert len(two) == 2
            b_host = b.hosts(site_b)[0]
            task = a.create_vpg("e2e", [vm["VmIdentifier"] for vm in two], recovery_site=site_b,
                                recovery_host=b_host["HostIdentifier"],
                                recovery_datastore=b_host["DatastoreIdentifiers"][0], rpo_seconds=60)
            vid = a.vpg_by_name("e2e")["VpgIdentifier"]

            # the IO filters of the VMs' hosts serve the VMs' real disk files (the vcsim datastores)
            with VCenter(VCenterConfig(prot.url, prot.username, prot.password)) as vc:
                truth = vc.inventory()
            uris = []
            for vm in two:
                vra = next(v for v in a.vras() if v["HostIdentifier"] == vm["HostIdentifier"])
                volumes = {v["VolumeIdentifier"]: truth.vms[vm["VmIdentifier"]].disks[i].flat_path
                           for i, v in enumerate(a.protected_vm(vm["VmIdentifier"])["Volumes"])}
                nbd = lab.filter(f"{vra['VraIdentifier']}-filter", volumes, daemons[vra["VraIdentifier"]])
                uris += [nbd.uri(v) for v in volumes]
            zvm_a.tasks.run_once()
            done = a.wait_for_task(task)
            assert done["Result"]["RecoveryVra"] in {v["VraIdentifier"] for v in b.vras()}

            for i, uri in enumerate(uris):
                run(["qemu-io", "-f", "raw", "-c", f"write -P {0x30 + i} 0 2M", "-c", f"write -P {0x60 + i} 32M 64k",
                     uri])
            for round_ in range(10):  # a checkpoint made durable at B, then a monitoring pass at A
                zvm_a.monitor.run_once()
                if a.vpg(vid)["Status"] == VpgStatus.MeetingSLA:
                    break
                checkpoint = a.take_checkpoint(vid, f"round-{round_}")
                zvm_a.tasks.run_once()
                a.wait_for_task(checkpoint)
            vpg = a.vpg(vid)
            assert (vpg["Status"], vpg["VmsCount"]) == (VpgStatus.MeetingSLA, 2), vpg
            assert vpg["RecoverySite"]["SiteName"] == "Site B" and vpg["JournalUsedStorageMb"] > 4
            assert [c["Tag"] for c in a.checkpoints(vid, tagged_only=True)][-1] == "round-0"

            # removing the VPG clears the roles on both sites
            a.delete_vpg(vid)
            zvm_a.tasks.run_once()
            assert a.vpgs() == []
            assert a.events(event_type="DeleteVpg")[0]["Result"] == "Succeeded"
    finally:
        lab.close()
        shutil.rmtree(short, ignore_errors=True)
        if server is not None:
            assert server.stop() == 0
