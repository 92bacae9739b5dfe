"""Two sites for the recovery operation tests, built as a user would: two vcsims; site A's ZVM as
`zvm serve` (its loops run on their own), site B's ZVM in this process (its task runner, monitoring and
recovery watch driven by the test, so a crash can be injected at a chosen step and the ZVM "restarted" on
the same data directory); paired with a token; a VRA installed through the API on every host of both
sites and its `vra serve` started as the lab starts appliances (split streams and NBD on every one, since
each site protects in one direction and recovers in the other); IO filters on A's hosts serving the VMs'
real disk files; a VPG of three VMs from A to B with boot groups, a test and a failover network, and a
static IP for one VM; replication until the journal holds a consistent checkpoint.

A ``Workload`` writes random 64 KiB blocks to the protected volumes through the filters (a real NBD
client) until paused; ``checkpoint()`` pauses it, takes a tagged checkpoint through the API, hashes the
source volumes (what an image at that checkpoint must equal) and resumes it.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyVmomi import vim

from tests.replication.lab import SECRET, Lab, NbdClient, run, sha256_file, wait_for
from tests.zvm.conftest import ADMIN_PASSWORD
from tests.zvm.fakes import wsgi_client
from tests.zvm.pg import free_port
from tests.zvm.procs import start_serve
from tests.zvm.test_two_sites import install_everywhere
from vra_appliance.proto.v1 import control_pb2 as cpb
from zvm.client import ZvmClient
from zvm.enums import VpgStatus
from zvm.lab.vcsim import VcsimSpec
from zvm.vcenter import VCenter, VCenterConfig

SPEC = VcsimSpec(hosts_per_cluster=2, vms_per_pool=3, datastores=1, portgroups=2, disk_mb=16)
VOLUME = 16 << 20
BLOCK = 64 << 10


def sha256(path) -> str:
    return sha256_file(path)


class VraControl:
    """A VRA's Control service (with the pairing secret), as a context manager."""

    def __init__(self, address: str) -> None:
        import grpc

        from vra_appliance.proto.v1 import control_pb2_grpc as cpb_grpc
        from vra_appliance.trust.auth import SECRET_KEY

        self.channel = grpc.insecure_channel(address)
        self.stub = cpb_grpc.ControlStub(self.channel)
        self.md = ((SECRET_KEY, SECRET),)

    def __getattr__(self, name: str):
        method = getattr(self.stub, name)
        return lambda request, timeout=30.0: method(request, metadata=self.md, timeout=timeout)

    def __enter__(self) -> VraControl:
        return self

    def __exit__(self, *exc) -> None:
        self.channel.close()


class Workload:
    """Random 64 KiB writes to each volume through its filter's NBD export, in a thread per volume."""

    def __init__(self, targets: dict[str, tuple[str, str]], seed: int = 7) -> None:
        self.targets = targets  # volume -> (NBD socket, export)
        self.rng = random.Random(seed)
        self._run = threading.Event()
        self._stop = threading.Event()
        self._idle = {v: threading.Event() for v in targets}
        self.writes = 0
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._loop, args=(v,), daemon=True) for v in targets]
        for t in self._threads:
            t.start()

    def _loop(self, volume: str) -> None:
        sock, export = self.targets[volume]
        client = None
        rng = random.Random(hash(volume) & 0xFFFF)
        try:
            client = NbdClient(sock, export)
            while not self._stop.is_set():
                if not self._run.is_set():
                    self._idle[volume].set()
                    self._run.wait(0.05)
                    continue
                self._idle[volume].clear()
                if not self._run.is_set():
                    continue
                offset = rng.randrange(VOLUME // BLOCK) * BLOCK
                client.write(offset, rng.randbytes(BLOCK))
                self.writes += 1
                time.sleep(0.03)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(f"{volume}: {exc!r}")
        finally:
            self._idle[volume].set()
            if client is not None:
                client.close()

    def resume(self) -> None:
        self._run.set()

    def pause(self) -> None:
        self._run.clear()
        for ev in self._idle.values():
            assert ev.wait(30), "the workload did not pause"

    def stop(self) -> None:
        self._run.clear()
        self._stop.set()
        for t in self._threads:
            t.join(30)


@dataclass
class World:
    root: Path
    lab: Lab
    prot: object  # Vcsim
    rec: object
    server: object  # ServeProcess of site A
    a: ZvmClient
    b_app: object
    b: ZvmClient
    b_config: dict
    vpg: str = ""
    site_a: str = ""
    site_b: str = ""
    vras: dict = field(default_factory=dict)  # vra id -> lab Vra (daemon)
    vra_site: dict = field(default_factory=dict)  # vra id -> "a" or "b"
    vra_host: dict = field(default_factory=dict)  # vra id -> host moid
    vra_address: dict = field(default_factory=dict)  # vra id -> its gRPC address
    filters: dict = field(default_factory=dict)  # filter id -> lab Filter
    volumes: dict = field(default_factory=dict)  # volume id -> source flat file on A
    vm_of_volume: dict = field(default_factory=dict)
    nbd_of_volume: dict = field(default_factory=dict)  # volume -> (socket, export) through A's filter
    source_vms: list = field(default_factory=list)  # [{VmIdentifier, VmName, HostIdentifier}]
    b_recovery_host: str = ""
    workload: Workload | None = None

    # --- the in-process ZVM of site B --------------------------------------------------------------------
    @property
    def zvm_b(self):
        return self.b_app.extensions["zvm"]

    def run_b(self) -> int:
        """B's task runner until nothing is pending (tasks may queue follow-ups)."""
        ran = 0
        while (n := self.zvm_b.tasks.run_once()):
            ran += n
        return ran

    def restart_b(self, *, resume: bool = True) -> None:
        """Stop B's ZVM as a crash would leave it (its tasks in progress stay so), and start it again on
        the same data directory; ``resume``: what the service does when it takes over."""
        from zvm.api import create_app

        old = self.zvm_b
        old.peer_server.stop()
        old.stop()
        self.b_app = create_app(self.b_config)
        self.b = wsgi_client(self.b_app).login("admin", ADMIN_PASSWORD)
        self.zvm_b.peer_server.start()
        if resume:
            self.zvm_b.tasks.fail_interrupted()

    # --- vCenter views ---------------------------------------------------------------------------------
    def vcenter_vms(self, sim) -> dict[str, tuple[str, str]]:
        """name -> (moid, power state)"""
        with VCenter(VCenterConfig(sim.url, sim.username, sim.password)) as vc:
            view = vc.content.viewManager.CreateContainerView(vc.content.rootFolder, [vim.VirtualMachine], True)
            try:
                return {vm.name: (vm._moId, vm.runtime.powerState) for vm in view.view}
            finally:
                view.Destroy()

    def vm_details(self, sim, moid: str) -> dict:
        """A VM's networks (moids), boot time and disk files, as vCenter says."""
        with VCenter(VCenterConfig(sim.url, sim.username, sim.password)) as vc:
            vm = vim.VirtualMachine(moid, vc.si._stub)
            return {"networks": [n._moId for n in vm.network], "boot": vm.summary.runtime.bootTime,
                    "disks": [d.backing.fileName for d in vm.config.hardware.device
                              if isinstance(d, vim.vm.device.VirtualDisk)]}

    def extra_config(self, sim, moid: str) -> dict[str, str]:
        with VCenter(VCenterConfig(sim.url, sim.username, sim.password)) as vc:
            vm = vim.VirtualMachine(moid, vc.si._stub)
            return {o.key: o.value for o in vm.config.extraConfig or []}

    # --- checkpoints -------------------------------------------------------------------------------------
    def checkpoint(self, tag: str, *, on: str = "a", hash_paths: dict | None = None) -> tuple[str, dict[str, str]]:
        """Pause the workload, take a tagged checkpoint on the protecting site (made durable at the other),
        hash the protected volumes (``hash_paths``, default A's sources), resume. Returns (id, hashes)."""
        if self.workload is not None:
            self.workload.pause()
        try:
            client = self.a if on == "a" else self.b
            task = client.take_checkpoint(self.vpg, tag)
            if on == "b":
                self.run_b()
            done = client.wait_for_task(task, timeout=120)
            hashes = {v: sha256(p) for v, p in (hash_paths or self.volumes).items()}
        finally:
            if self.workload is not None:
                self.workload.resume()
        return done["Result"]["CheckpointIdentifier"], hashes

    def b_knows(self, checkpoint: str) -> None:
        """B's monitoring reads the journal's checkpoints (its copy of the VPG lists them)."""
        wait_for(lambda: self.zvm_b.monitor.run_once() is not None
                 and any(c["CheckpointIdentifier"] == checkpoint for c in self.b.checkpoints(self.vpg)),
                 60, f"site B to list checkpoint {checkpoint}")

    def control(self, vra_id: str) -> VraControl:
        """The Control service of a VRA at its installed address (the lab's Control assumes 127.0.0.1)."""
        return VraControl(self.vra_address[vra_id])

    def recovery_vra(self, site: str = "b") -> str:
        """The id of the VRA holding the VPG's recover role on ``site``."""
        for vra_id in self.vras:
            if self.vra_site[vra_id] != site:
                continue
            with self.control(vra_id) as ctl:
                if any(s.role == "recover" for s in ctl.Status(cpb.StatusRequest(vpg=self.vpg)).vpgs):
                    return vra_id
        raise AssertionError(f"no VRA of site {site} recovers VPG {self.vpg}")

    def wait_streaming(self, vra_id: str, timeout: float = 90.0) -> None:
        """The VPG's protect role on the VRA has no sync needed or running, and its stream is up."""
        def streaming():
            with self.control(vra_id) as ctl:
                return any(s.role == "protect" and s.substatus == "" and s.state == "ok"
                           for s in ctl.Status(cpb.StatusRequest(vpg=self.vpg)).vpgs)

        wait_for(streaming, timeout, f"VPG {self.vpg} to stream from {vra_id}")

    def nbdcopy(self, uri: str, out: Path) -> str:
        run(["nbdcopy", uri, str(out)])
        return sha256(out)

    def nbdcopy_hash(self, uri: str) -> str:
        out = self.root / f"copy-{hashlib.sha1(uri.encode()).hexdigest()[:8]}.img"
        run(["nbdcopy", uri, str(out)])
        digest = sha256(out)
        out.unlink()
        return digest

    def close(self) -> None:
        if self.workload is not None:
            self.workload.stop()
        try:
            self.zvm_b.peer_server.stop()
            self.zvm_b.stop()
        finally:
            self.lab.close()
            if self.server is not None:
                self.server.stop()
            shutil.rmtree(self.root, ignore_errors=True)


def _datastore(client, site: str) -> str:
    return client.datastores(site)[0]["DatastoreIdentifier"]


def build(start_vcsim, name: str, prefix: int, tmp: Path, *, hard_limit_mb: int = 0, spec: VcsimSpec = SPEC,
          vm_count: int = 3, boot_delay: int = 1, workload: bool = True) -> World:
    """``start_vcsim(name, spec)`` starts a simulator (the tests' fixture, or the benchmark's own)."""
    from zvm.api import create_app

    root = Path(tempfile.mkdtemp(prefix=f"ro{prefix}-", dir="/tmp"))  # unix socket paths must stay short
    lab = Lab(root)
    prot = start_vcsim(f"{name}-a", spec)
    rec = start_vcsim(f"{name}-b", spec)
    template = str(root / "{vra_id}-filter" / "control.sock")
    server = start_serve(tmp / "site-a", "--admin-password", ADMIN_PASSWORD, "--site-name", f"{name} A",
                         "--public-address", "127.0.0.1", "--peer-port", str(free_port()),
                         "--vcenter-url", prot.url, "--vcenter-username", prot.username, "--vcenter-verify", "false",
                         env={"ZVM_VCENTER_PASSWORD": prot.password, "ZVM_VRA_PAIRING_SECRET": SECRET,
                              "ZVM_FILTER_CONTROL_TEMPLATE": template})
    b_config = {"data_dir": str(tmp / "site-b"), "admin_password": ADMIN_PASSWORD, "site_name": f"{name} B",
                "public_address": "127.0.0.1", "peer_port": free_port(), "vcenter_url": rec.url,
                "vcenter_username": rec.username, "vcenter_password": rec.password, "vcenter_verify": "false",
                "vra_pairing_secret": SECRET, "filter_control_template": template}
    b_app = create_app(b_config)
    world = World(root=root, lab=lab, prot=prot, rec=rec, server=server, a=None, b_app=b_app, b=None,
                  b_config=b_config)
    try:
        server.wait_for(r"inventory of \S+ loaded")
        world.a = ZvmClient(server.url).login("admin", ADMIN_PASSWORD)
        world.b = wsgi_client(b_app).login("admin", ADMIN_PASSWORD)
        zb = world.zvm_b
        zb.inventory.sync_once()
        zb.peer_server.start()
        token = world.b.generate_pairing_token()["Token"]
        world.a.wait_for_task(world.a.pair("127.0.0.1", token, port=zb.peer_server.port), timeout=60)
        world.site_a = world.a.local_site()["SiteIdentifier"]
        world.site_b = world.b.local_site()["SiteIdentifier"]
        install_everywhere(world.a, f"127.{prefix}.1")
        install_everywhere(world.b, f"127.{prefix}.2", run_tasks=world.run_b)
        for site, client in (("a", world.a), ("b", world.b)):
            for vra in client.vras():
                world.vras[vra["VraIdentifier"]] = lab.vra(vra["VraIdentifier"], nbd=True,
                                                           extra=["--listen", vra["ControlAddress"]])
                world.vra_site[vra["VraIdentifier"]] = site
                world.vra_host[vra["VraIdentifier"]] = vra["HostIdentifier"]
                world.vra_address[vra["VraIdentifier"]] = vra["ControlAddress"]

        # the VPG: three VMs of A, boot groups, test and failover networks, a static IP on failover for one
        vms = [v for v in world.a.vms(world.site_a) if not v["VmName"].startswith("Z-VRA-")][:vm_count]
        world.source_vms = vms
        b_host = world.b.hosts(world.site_b)[0]
        world.b_recovery_host = b_host["HostIdentifier"]
        nets = {n["VirtualizationNetworkName"]: n["NetworkIdentifier"] for n in world.b.networks(world.site_b)}
        sid = world.a.create_vpg_settings()
        doc = world.a.vpg_settings(sid)
        doc["Basic"].update(Name=name, RecoverySiteIdentifier=world.site_b, RpoInSeconds=60)
        doc["Journal"].update(HardLimitInMB=hard_limit_mb)
        doc["Recovery"].update(DefaultHostIdentifier=b_host["HostIdentifier"],
                               DefaultDatastoreIdentifier=_datastore(world.b, world.site_b))
        doc["Networks"].update(FailoverNetworkIdentifier=nets["DC0_DVPG0"],
                               FailoverTestNetworkIdentifier=nets["DC0_DVPG1"])
        # VMs without a group boot first, then "db", then "app" once "db"'s delay has passed
        doc["BootGroups"] = [{"Name": "db", "BootDelayInSeconds": boot_delay},
                             {"Name": "app", "BootDelayInSeconds": 0}]
        doc["Vms"] = [{"VmIdentifier": vms[0]["VmIdentifier"], "BootGroupName": "db",
                       "Nics": [{"NicIdentifier": "Network adapter 1",
                                 "FailoverIp": {"IpAddress": "10.20.0.11", "SubnetMask": "255.255.255.0",
                                                "Gateway": "10.20.0.1", "DnsServers": ["10.20.0.2"]},
                                 "FailoverTestIp": {"IpAddress": "10.99.0.11", "SubnetMask": "255.255.255.0"}}]},
                      *({"VmIdentifier": vm["VmIdentifier"], "BootGroupName": "app" if i % 2 == 0 else None}
                        for i, vm in enumerate(vms[1:]))]
        world.a.put_vpg_settings(sid, doc)
        task = world.a.commit_vpg_settings(sid)
        world.vpg = world.a.vpg_by_name(name)["VpgIdentifier"]

        # the IO filters of A's hosts serve the VMs' real disk files
        with VCenter(VCenterConfig(prot.url, prot.username, prot.password)) as vc:
            truth = vc.inventory()
        by_vra: dict[str, dict[str, str]] = {}
        for vm in vms:
            vra = next(v for v in world.a.vras() if v["HostIdentifier"] == vm["HostIdentifier"])
            for i, vol in enumerate(world.a.protected_vm(vm["VmIdentifier"])["Volumes"]):
                path = truth.vms[vm["VmIdentifier"]].disks[i].flat_path
                by_vra.setdefault(vra["VraIdentifier"], {})[vol["VolumeIdentifier"]] = path
                world.volumes[vol["VolumeIdentifier"]] = path
                world.vm_of_volume[vol["VolumeIdentifier"]] = vm["VmIdentifier"]
        for vra_id, volumes in by_vra.items():
            filt = lab.filter(f"{vra_id}-filter", volumes, world.vras[vra_id])
            world.filters[vra_id] = filt
            for v in volumes:
                world.nbd_of_volume[v] = (filt.nbd, v)
        world.a.wait_for_task(task, timeout=300)
        if workload:
            world.workload = Workload(world.nbd_of_volume)
            world.workload.resume()
        for round_ in range(30):  # replication until a consistent checkpoint is journaled at B
            if not workload and round_ == 0:
                for sock, export in world.nbd_of_volume.values():
                    run(["qemu-io", "-f", "raw", "-c", "write -P 0x21 0 1M", f"nbd+unix:///{export}?socket={sock}"])
            cp, _ = world.checkpoint(f"warm-{round_}")
            world.zvm_b.monitor.run_once()
            if any(c["IsConsistent"] for c in world.b.checkpoints(world.vpg)):
                break
        assert world.b.vpg(world.vpg)["Status"] == VpgStatus.MeetingSLA, world.b.vpg(world.vpg)
        return world
    except BaseException:
        world.close()
        raise


def freeze(server) -> list[int]:
    """SIGSTOP a `zvm serve` (its master and workers): it stops answering, as a site that went away."""
    pids = [server.proc.pid] + [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout.split()]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def thaw(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGCONT)
